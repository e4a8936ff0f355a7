//! The JWT matrix over both protocols, unary and stream: every token a verifier must refuse
//! is `UNAUTHENTICATED` on native gRPC and grpc-web, on a unary call (forwarded by the
//! gateway) and on the live stream (served by the gateway), and a live stream ends when its
//! token does.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use taskmesh_platform::auth::Verifier;
use taskmesh_proto::{
    gateway::v1::{StreamChangesRequest, live_service_client::LiveServiceClient},
    task::v1::ListTasksRequest,
};
use taskmesh_testkit::{Mesh, MeshOptions, TEST_SECRET, with_token};
use tonic::Code;

use crate::{live_web, tasks_grpc, tasks_web};

const ISSUER: &str = "https://issuer.test";

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn testdata(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/platform/testdata")
        .join(name)
}

/// Claims of a good token for alice, with `changes` applied (`null` removes a claim).
fn claims(changes: Value) -> Value {
    let mut claims = json!({
        "sub": "alice", "aud": "taskmesh", "iss": ISSUER, "exp": now() + 600, "iat": now(),
    });
    for (key, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(key);
        } else {
            claims[key] = value.clone();
        }
    }
    claims
}

fn hs(claims: &Value, secret: &[u8]) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// Every call the matrix makes with `token`: (what, its status code or OK).
async fn calls(mesh: &Mesh, token: &str) -> Vec<(&'static str, Code, Option<String>)> {
    // The code, and the AIP-193 reason of an error.
    let code = |result: Result<(), tonic::Status>| {
        result.map_or_else(
            |s| (s.code(), taskmesh_platform::grpc::reason(&s)),
            |()| (Code::Ok, None),
        )
    };
    let list = || with_token(token, ListTasksRequest::default());
    let stream = || with_token(token, StreamChangesRequest::default());
    let mut native_live = LiveServiceClient::new(mesh.gateway_channel().await.unwrap());
    vec![
        {
            let (code, reason) = code(tasks_grpc(mesh).await.list_tasks(list()).await.map(drop));
            ("unary over gRPC", code, reason)
        },
        {
            let (code, reason) = code(tasks_web(mesh).list_tasks(list()).await.map(drop));
            ("unary over grpc-web", code, reason)
        },
        {
            let (code, reason) = code(native_live.stream_changes(stream()).await.map(drop));
            ("stream over gRPC", code, reason)
        },
        {
            let (code, reason) = code(live_web(mesh).stream_changes(stream()).await.map(drop));
            ("stream over grpc-web", code, reason)
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_is_refused_on_both_protocols_unary_and_stream() {
    let mesh = Mesh::start_configured(MeshOptions::default(), |config| {
        config.verifier = Verifier::hs256(&TEST_SECRET.to_owned().into())
            .with_issuer(Some(ISSUER.into()))
            .with_leeway(Duration::from_secs(30));
    })
    .await
    .unwrap();
    let secret = TEST_SECRET.as_bytes();
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims(json!({})).to_string())
    );
    let rsa = EncodingKey::from_rsa_pem(&std::fs::read(testdata("rsa.key")).unwrap()).unwrap();
    let crit = Header {
        crit: Some(vec!["exp".into()]),
        ..Header::default()
    };
    let refused = [
        ("alg none", none),
        ("another secret", hs(&claims(json!({})), b"not-the-secret")),
        (
            "RS256 where HS256 is configured",
            encode(&Header::new(Algorithm::RS256), &claims(json!({})), &rsa).unwrap(),
        ),
        ("no iss", hs(&claims(json!({"iss": null})), secret)),
        (
            "another iss",
            hs(&claims(json!({"iss": "https://other.test"})), secret),
        ),
        (
            "nbf in the future",
            hs(&claims(json!({"nbf": now() + 300})), secret),
        ),
        (
            "a crit header",
            encode(&crit, &claims(json!({})), &EncodingKey::from_secret(secret)).unwrap(),
        ),
        (
            "expired past the leeway",
            hs(&claims(json!({"exp": now() - 120})), secret),
        ),
        (
            "another audience",
            hs(&claims(json!({"aud": "someone-else"})), secret),
        ),
        ("no sub", hs(&claims(json!({"sub": null})), secret)),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (what, token) in &refused {
        // AIP-193 reasons: an expired token is the one a client renews.
        let expected = if what.starts_with("expired") {
            "TOKEN_EXPIRED"
        } else {
            "TOKEN_INVALID"
        };
        for (call, code, reason) in calls(&mesh, token).await {
            assert_eq!(code, Code::Unauthenticated, "{what}, {call}");
            assert_eq!(reason.as_deref(), Some(expected), "{what}, {call}");
        }
    }
    let accepted = [
        ("a good token", hs(&claims(json!({})), secret)),
        (
            "expired within the leeway",
            hs(&claims(json!({"exp": now() - 10})), secret),
        ),
        (
            "nbf within the leeway",
            hs(&claims(json!({"nbf": now() + 10})), secret),
        ),
    ];
    for (what, token) in &accepted {
        for (call, code, _) in calls(&mesh, token).await {
            assert_eq!(code, Code::Ok, "{what}, {call}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_key_verifier_refuses_hs256_signed_with_its_own_public_key() {
    let mesh = Mesh::start_configured(MeshOptions::default(), |config| {
        config.verifier = Verifier::from_public_keys_file(&testdata("rsa.pub")).unwrap();
    })
    .await
    .unwrap();
    let public_pem = std::fs::read(testdata("rsa.pub")).unwrap();
    let confused = hs(&claims(json!({"iss": null})), &public_pem);
    for (call, code, _) in calls(&mesh, &confused).await {
        assert_eq!(code, Code::Unauthenticated, "{call}");
    }
    let rsa = EncodingKey::from_rsa_pem(&std::fs::read(testdata("rsa.key")).unwrap()).unwrap();
    let good = encode(
        &Header::new(Algorithm::RS256),
        &claims(json!({"iss": null})),
        &rsa,
    )
    .unwrap();
    for (call, code, _) in calls(&mesh, &good).await {
        assert_eq!(code, Code::Ok, "{call}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_ends_unauthenticated_when_its_token_expires() {
    let mesh = Mesh::start_configured(MeshOptions::default(), |config| {
        config.verifier =
            Verifier::hs256(&TEST_SECRET.to_owned().into()).with_leeway(Duration::from_secs(1));
    })
    .await
    .unwrap();
    for native in [true, false] {
        let token = hs(
            &claims(json!({"iss": null, "exp": now() + 3})),
            TEST_SECRET.as_bytes(),
        );
        let request = with_token(&token, StreamChangesRequest::default());
        let mut stream = if native {
            LiveServiceClient::new(mesh.gateway_channel().await.unwrap())
                .stream_changes(request)
                .await
        } else {
            live_web(&mesh).stream_changes(request).await
        }
        .expect("the token is still valid")
        .into_inner();
        let ended = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match stream.message().await {
                    Err(status) => return Some(status),
                    Ok(Some(_)) => {}
                    Ok(None) => return None,
                }
            }
        })
        .await
        .expect("the stream ended after the token expired")
        .expect("with a status");
        assert_eq!(
            ended.code(),
            Code::Unauthenticated,
            "native {native}: {ended:?}"
        );
    }
}
