//! The web app's sign-in document (`/.well-known/taskmesh-web.json`) and the development
//! sign-in (`POST /dev/sign-in`), over real HTTP against the gateway.

use std::sync::Arc;

use secrecy::SecretString;
use taskmesh_gateway::sign_in::WebSignIn;
use taskmesh_platform::auth::Signer;
use taskmesh_proto::task::v1::ListTasksRequest;
use taskmesh_testkit::{Mesh, MeshOptions, TEST_SECRET, with_token};
use tonic::Code;

use crate::tasks_grpc;

async fn mesh_with(sign_in: WebSignIn) -> Mesh {
    Mesh::start_configured(MeshOptions::default(), move |config| {
        config.web_sign_in = sign_in;
    })
    .await
    .unwrap()
}

async fn document(mesh: &Mesh) -> serde_json::Value {
    let response = reqwest::get(format!(
        "http://{}/.well-known/taskmesh-web.json",
        mesh.gateway_addr
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.json().await.unwrap()
}

async fn dev_sign_in(mesh: &Mesh, body: String) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{}/dev/sign-in", mesh.gateway_addr))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_development_sign_in_gives_a_working_token_for_a_name_and_refuses_bad_ones() {
    let signer = Signer::hs256(&SecretString::from(TEST_SECRET));
    let mesh = mesh_with(WebSignIn::Development(Arc::new(signer))).await;
    assert_eq!(
        document(&mesh).await,
        serde_json::json!({"sign_in": "development"})
    );

    let (status, body) = dev_sign_in(&mesh, r#"{"user": "dora"}"#.into()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    let token = body["access_token"].as_str().unwrap();
    tasks_grpc(&mesh)
        .await
        .list_tasks(with_token(token, ListTasksRequest::default()))
        .await
        .expect("the development token works on the API");

    for (bad, expected) in [
        (r#"{"user": ""}"#.to_owned(), 400),
        ("{\"user\": \"a\\u0000b\"}".to_owned(), 400),
        (format!(r#"{{"user": "{}"}}"#, "x".repeat(257)), 400),
        ("not json".to_owned(), 400),
        (r#"{"name": "dora"}"#.to_owned(), 400),
        (format!(r#"{{"user": "{}"}}"#, "x".repeat(5000)), 413),
    ] {
        let (status, body) = dev_sign_in(&mesh, bad.clone()).await;
        assert_eq!(status, expected, "{bad:.40}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_provider_the_document_names_it_and_there_is_no_development_sign_in() {
    let mesh = mesh_with(WebSignIn::Oidc {
        issuer: "https://idp.example.com/realms/main".into(),
        client_id: "taskmesh-web".into(),
        scopes: "openid offline_access".into(),
    })
    .await;
    assert_eq!(
        document(&mesh).await,
        serde_json::json!({
            "sign_in": "oidc",
            "issuer": "https://idp.example.com/realms/main",
            "client_id": "taskmesh-web",
            "scopes": "openid offline_access",
        })
    );
    let (_, body) = dev_sign_in(&mesh, r#"{"user": "dora"}"#.into()).await;
    assert!(
        body.get("access_token").is_none(),
        "no development sign-in beside a provider: {body}"
    );

    let token_mesh = mesh_with(WebSignIn::Token).await;
    assert_eq!(
        document(&token_mesh).await,
        serde_json::json!({"sign_in": "token"})
    );
    // Without a token nothing is served either way.
    let status = tasks_grpc(&token_mesh)
        .await
        .list_tasks(ListTasksRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}
