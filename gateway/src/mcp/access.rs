//! Which `Host` and `Origin` values the MCP endpoint answers (the MCP transport spec's DNS
//! rebinding protection): checked before anything else, so a foreign page gets 403 whether
//! or not it sent a token, and no 401 or metadata document names a host not on the list.
//!
//! - Hosts: names or `host:port` authorities; a name without a port matches any port; `*`
//!   alone accepts any host. Names compare case-insensitively.
//! - Origins (RFC 6454): `scheme://host[:port]`, `:*` for any port; no port means the
//!   scheme's default (80 for `http`, 443 for `https`). A request without `Origin` (not a
//!   browser page) passes; `Origin: null` does not.

use std::fmt;

/// The `Host` and `Origin` allow-lists of the MCP endpoint (`TASKMESH_MCP_ALLOWED_HOSTS`,
/// `TASKMESH_MCP_ALLOWED_ORIGINS`). Build it with [`McpAccess::new`], which checks every
/// entry; [`Default`] is the loopback names and origins, which fit `taskmesh dev`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McpAccess {
    hosts: Hosts,
    origins: Vec<Origin>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Hosts {
    Any,
    List(Vec<Authority>),
}

/// A host name with an optional port.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Authority {
    host: String,
    port: Option<u16>,
}

/// An allowed origin; `port: None` is any port.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

/// An allow-list entry that is not a host, `host:port`, or `scheme://host[:port|:*]`.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not {1}")]
pub struct BadAccess(String, &'static str);

/// The loopback host names.
pub const DEFAULT_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The loopback origins, any port.
pub const DEFAULT_ORIGINS: [&str; 3] =
    ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"];

impl McpAccess {
    /// The lists from their entries (surrounding white space ignored). An empty list of hosts
    /// or origins is that list's default ([`DEFAULT_HOSTS`], [`DEFAULT_ORIGINS`]), never
    /// "anything": `*` says that for hosts, and origins have no wildcard.
    ///
    /// # Errors
    /// The first entry that does not parse.
    pub fn new<H, O>(hosts: H, origins: O) -> Result<Self, BadAccess>
    where
        H: IntoIterator,
        H::Item: AsRef<str>,
        O: IntoIterator,
        O::Item: AsRef<str>,
    {
        let hosts: Vec<String> = entries(hosts);
        let origins: Vec<String> = entries(origins);
        let hosts = if hosts.iter().any(|h| h == "*") {
            if hosts.len() > 1 {
                return Err(BadAccess(hosts.join(","), "`*` alone or a list of hosts"));
            }
            Hosts::Any
        } else if hosts.is_empty() {
            Hosts::List(DEFAULT_HOSTS.iter().filter_map(|h| authority(h)).collect())
        } else {
            Hosts::List(
                hosts
                    .iter()
                    .map(|h| {
                        authority(h).ok_or_else(|| BadAccess(h.clone(), "a host or host:port"))
                    })
                    .collect::<Result<_, _>>()?,
            )
        };
        let origins = if origins.is_empty() {
            DEFAULT_ORIGINS
                .iter()
                .filter_map(|o| origin(o, true))
                .collect()
        } else {
            origins
                .iter()
                .map(|o| {
                    origin(o, true)
                        .ok_or_else(|| BadAccess(o.clone(), "an origin scheme://host[:port|:*]"))
                })
                .collect::<Result<_, _>>()?
        };
        Ok(Self { hosts, origins })
    }

    /// Whether a request with this `Host` (or `:authority`) may be answered; `None` (no
    /// host at all) only when any host is allowed.
    pub(crate) fn host_allowed(&self, host: Option<&str>) -> bool {
        match &self.hosts {
            Hosts::Any => true,
            Hosts::List(allowed) => host.and_then(authority).is_some_and(|got| {
                allowed
                    .iter()
                    .any(|a| a.host == got.host && (a.port.is_none() || a.port == got.port))
            }),
        }
    }

    /// Whether a request with this `Origin` header (absent: not a browser page) may be
    /// answered.
    pub(crate) fn origin_allowed(&self, value: Option<&str>) -> bool {
        let Some(value) = value else { return true };
        let Some(got) = origin(value, false) else {
            return false;
        };
        self.origins.iter().any(|a| {
            a.scheme == got.scheme && a.host == got.host && (a.port.is_none() || a.port == got.port)
        })
    }
}

impl Default for McpAccess {
    fn default() -> Self {
        Self::new(DEFAULT_HOSTS, DEFAULT_ORIGINS).unwrap_or(Self {
            hosts: Hosts::Any,
            origins: Vec::new(),
        })
    }
}

impl fmt::Display for McpAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.hosts {
            Hosts::Any => f.write_str("hosts any")?,
            Hosts::List(hosts) => write!(f, "hosts {}", hosts.len())?,
        }
        write!(f, ", origins {}", self.origins.len())
    }
}

fn entries<I>(items: I) -> Vec<String>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    items
        .into_iter()
        .flat_map(|item| {
            item.as_ref()
                .split(',')
                .map(|e| e.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .filter(|e| !e.is_empty())
        .collect()
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address; names lower-cased.
fn authority(text: &str) -> Option<Authority> {
    let text = text.trim();
    if text.is_empty() || text.len() > 255 || text.contains(['/', '@', ' ', '"', '\\', ',']) {
        return None;
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?.parse().ok()?),
        };
        return Some(Authority {
            host: host.to_ascii_lowercase(),
            port,
        });
    }
    if text.matches(':').count() > 1 {
        // A bare IPv6 address (only in an allow-list; `Host` brackets it).
        return Some(Authority {
            host: text.to_ascii_lowercase(),
            port: None,
        });
    }
    let (host, port) = match text.split_once(':') {
        Some((host, port)) => (host, Some(port.parse().ok()?)),
        None => (text, None),
    };
    (!host.is_empty()).then(|| Authority {
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// `scheme://host[:port]`; with `wildcard`, also `:*` (any port: `port: None`). No port is
/// the scheme's default port.
fn origin(text: &str, wildcard: bool) -> Option<Origin> {
    let (scheme, rest) = text.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if wildcard && let Some(host) = rest.strip_suffix(":*") {
        let host = authority(host).filter(|a| a.port.is_none())?.host;
        return Some(Origin {
            scheme,
            host,
            port: None,
        });
    }
    let authority = authority(rest)?;
    Some(Origin {
        scheme,
        host: authority.host,
        port: Some(authority.port.unwrap_or(default_port)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_by_name_and_port() {
        let access =
            McpAccess::new(["tasks.example.com", "127.0.0.1:8080", "::1"], [""; 0]).unwrap();
        assert!(access.host_allowed(Some("TASKS.example.com:443")));
        assert!(access.host_allowed(Some("127.0.0.1:8080")));
        assert!(!access.host_allowed(Some("127.0.0.1:9090")));
        assert!(access.host_allowed(Some("[::1]:8080")));
        assert!(!access.host_allowed(Some("evil.example")));
        assert!(!access.host_allowed(None));
        assert!(
            McpAccess::new(["*"], [""; 0])
                .unwrap()
                .host_allowed(Some("any.where"))
        );
    }

    #[test]
    fn origins_match_scheme_host_and_port() {
        let access =
            McpAccess::new([""; 0], ["https://app.example", "http://localhost:*"]).unwrap();
        assert!(access.origin_allowed(None));
        assert!(access.origin_allowed(Some("https://app.example")));
        assert!(access.origin_allowed(Some("https://app.example:443")));
        assert!(!access.origin_allowed(Some("https://app.example:8443")));
        assert!(!access.origin_allowed(Some("http://app.example")));
        assert!(access.origin_allowed(Some("http://localhost:5173")));
        assert!(!access.origin_allowed(Some("http://evil.example")));
        assert!(!access.origin_allowed(Some("null")));
    }

    #[test]
    fn empty_lists_are_the_defaults_and_bad_entries_are_refused() {
        let access = McpAccess::new([""], [" "]).unwrap();
        assert_eq!(access, McpAccess::default());
        assert!(access.host_allowed(Some("localhost:8080")));
        assert!(!access.host_allowed(Some("example.com")));
        assert!(access.origin_allowed(Some("http://127.0.0.1:8080")));
        assert!(McpAccess::new(["a.example/path"], [""; 0]).is_err());
        assert!(McpAccess::new(["*", "a.example"], [""; 0]).is_err());
        assert!(McpAccess::new([""; 0], ["localhost:3000"]).is_err());
        assert!(McpAccess::new([""; 0], ["*"]).is_err());
    }
}
