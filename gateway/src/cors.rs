//! Which browser origins may call the gateway from another site (CORS, the Fetch
//! standard's CORS protocol). The web app the gateway serves is same-origin and needs none.

use std::{fmt, str::FromStr, time::Duration};

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The origins allowed to make cross-origin calls: `TASKMESH_CORS_ALLOWED_ORIGINS`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CorsOrigins {
    /// Only the gateway's own origin (no CORS headers are sent): `serve`'s default.
    #[default]
    SameOrigin,
    /// Any origin (`*`): `taskmesh dev`'s default, for apps served by a dev server.
    Any,
    /// These origins exactly (`scheme://host[:port]`, as browsers send `Origin`).
    List(Vec<HeaderValue>),
}

/// A `TASKMESH_CORS_ALLOWED_ORIGINS` value that is not `*`, empty, or a comma-separated list
/// of `scheme://host[:port]` origins.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an origin (scheme://host[:port], no path), `*` or empty")]
pub struct BadOrigin(String);

impl FromStr for CorsOrigins {
    type Err = BadOrigin;

    /// `""` → [`CorsOrigins::SameOrigin`], `*` → [`CorsOrigins::Any`], else a
    /// comma-separated list of origins.
    fn from_str(text: &str) -> Result<Self, BadOrigin> {
        match text.trim() {
            "" => return Ok(Self::SameOrigin),
            "*" => return Ok(Self::Any),
            _ => {}
        }
        text.split(',')
            .map(str::trim)
            .map(|origin| {
                let bad = || BadOrigin(origin.chars().take(100).collect());
                let uri: http::Uri = origin.parse().map_err(|_| bad())?;
                let web = matches!(uri.scheme_str(), Some("http" | "https"));
                if !web || uri.authority().is_none() || !matches!(uri.path(), "" | "/") {
                    return Err(bad());
                }
                // Browsers send `Origin` without a trailing slash.
                HeaderValue::from_str(origin.trim_end_matches('/')).map_err(|_| bad())
            })
            .collect::<Result<_, _>>()
            .map(Self::List)
    }
}

impl fmt::Display for CorsOrigins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SameOrigin => f.write_str("same origin only"),
            Self::Any => f.write_str("any origin"),
            Self::List(origins) => {
                let names: Vec<_> = origins.iter().filter_map(|o| o.to_str().ok()).collect();
                f.write_str(&names.join(", "))
            }
        }
    }
}

impl CorsOrigins {
    /// The CORS layer: grpc-web's methods and headers, gRPC's status headers exposed,
    /// preflights cached an hour.
    pub(crate) fn layer(&self) -> CorsLayer {
        let allow = match self {
            Self::SameOrigin => AllowOrigin::list([]),
            Self::Any => AllowOrigin::mirror_request(),
            Self::List(origins) => AllowOrigin::list(origins.iter().cloned()),
        };
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers(tower_http::cors::Any)
            .expose_headers([
                HeaderName::from_static("grpc-status"),
                HeaderName::from_static("grpc-message"),
                HeaderName::from_static("grpc-status-details-bin"),
            ])
            .max_age(Duration::from_secs(3600))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse() {
        assert_eq!("".parse::<CorsOrigins>().unwrap(), CorsOrigins::SameOrigin);
        assert_eq!(" * ".parse::<CorsOrigins>().unwrap(), CorsOrigins::Any);
        assert_eq!(
            "https://app.example, http://localhost:5173/"
                .parse::<CorsOrigins>()
                .unwrap(),
            CorsOrigins::List(vec![
                HeaderValue::from_static("https://app.example"),
                HeaderValue::from_static("http://localhost:5173"),
            ])
        );
        for bad in [
            "app.example",
            "https://app.example/path",
            "ftp://x",
            "https://a,*",
        ] {
            assert!(bad.parse::<CorsOrigins>().is_err(), "{bad}");
        }
    }
}
