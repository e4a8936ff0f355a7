//! Tokens of a real OpenID Connect provider (`oidc-provider`, see
//! [`taskmesh_testkit::idp`]) through the gateway: keys found by discovery, rotation picked
//! up without a restart, retired keys dropped, an outage ridden out on cached keys, a flood
//! of unknown `kid`s costing a bounded number of JWKS fetches, and issuer-scoped users.

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use taskmesh_platform::{
    auth::Verifier,
    oidc::{IssuerConfig, Oidc, REFETCH_INTERVAL, parse_issuers},
};
use taskmesh_proto::{
    audit::v1::{VerifyChainRequest, audit_service_client::AuditServiceClient},
    task::v1::{CreateTaskRequest, GetTaskRequest, ListTasksRequest, Task},
};
use taskmesh_testkit::{Mesh, MeshOptions, idp::IdentityProvider, with_token};
use tonic::Code;

use crate::tasks_grpc;

/// A mesh whose every component verifies the tokens of `issuers`, keys fetched first; keys
/// are kept at most `max_fresh`.
async fn mesh_for(issuers: Vec<IssuerConfig>, max_fresh: Option<Duration>) -> Mesh {
    let mut oidc = Oidc::new(issuers).unwrap();
    if let Some(max_fresh) = max_fresh {
        oidc = oidc.with_max_fresh(max_fresh);
    }
    let oidc = Arc::new(oidc);
    oidc.fetch_all().await.unwrap();
    Mesh::start_configured(MeshOptions::default(), |config| {
        config.verifier = Verifier::from_oidc(oidc);
    })
    .await
    .unwrap()
}

fn issuer(idp: &IdentityProvider) -> Vec<IssuerConfig> {
    parse_issuers(&idp.issuer, "taskmesh", "roles").unwrap()
}

/// A CreateTask request with `token` for a task titled `title`.
fn create_request(token: &str, title: &str) -> tonic::Request<CreateTaskRequest> {
    with_token(
        token,
        CreateTaskRequest {
            task: Some(Task {
                title: title.into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
}

/// CreateTask with `token`: the created task, or the status.
async fn create(mesh: &Mesh, token: &str, title: &str) -> Result<Task, tonic::Status> {
    tasks_grpc(mesh)
        .await
        .create_task(create_request(token, title))
        .await
        .map(|response| response.into_inner().task.unwrap_or_default())
}

/// How many tasks the user of `token` sees.
async fn count_tasks(mesh: &Mesh, token: &str) -> usize {
    tasks_grpc(mesh)
        .await
        .list_tasks(with_token(token, ListTasksRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .tasks
        .len()
}

/// A token that names `kid` and `iss` but is signed by no one.
fn forged(kid: &str, iss: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"RS256","typ":"JWT","kid":"{kid}"}}"#));
    let claims = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"sub":"alice","aud":"taskmesh","iss":"{iss}","exp":4102444800}}"#
    ));
    format!("{header}.{claims}.{}", URL_SAFE_NO_PAD.encode([7u8; 256]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_tokens_work_and_key_rotation_needs_no_restart() {
    let test = "provider_tokens_work_and_key_rotation_needs_no_restart";
    let Some(idp) = IdentityProvider::start(test, &[]).await.unwrap() else {
        return;
    };
    // Keys kept 30 s at most; fetched at most once per 10 s (REFETCH_INTERVAL).
    let fetched_at = std::time::Instant::now();
    let mesh = mesh_for(issuer(&idp), Some(Duration::from_secs(30))).await;
    let first_fetch = idp.jwks_count().await.unwrap();

    // alice and bob sign in; each sees only their own; the role claim makes alice admin.
    let tokens = idp.tokens("alice").await.unwrap();
    let alice = tokens["access_token"].as_str().unwrap().to_owned();
    let bob = idp.access_token("bob").await.unwrap();
    let task = create(&mesh, &alice, "from the provider").await.unwrap();
    // Its ID token is for the web client, not a bearer token here.
    let id_token = tokens["id_token"].as_str().unwrap();
    let status = create(&mesh, id_token, "with an ID token")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(count_tasks(&mesh, &alice).await, 1);
    assert_eq!(count_tasks(&mesh, &bob).await, 0);
    let status = tasks_grpc(&mesh)
        .await
        .get_task(with_token(
            &bob,
            GetTaskRequest {
                name: task.name.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let mut audit = AuditServiceClient::new(mesh.gateway_channel().await.unwrap());
    audit
        .verify_chain(with_token(
            &alice,
            VerifyChainRequest { user: "bob".into() },
        ))
        .await
        .expect("alice holds the admin role");
    let status = audit
        .verify_chain(with_token(
            &bob,
            VerifyChainRequest {
                user: "alice".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // The provider rotates: a token signed with the new key works at once (its unknown kid
    // makes the keys be fetched again, once REFETCH_INTERVAL has passed since the last
    // fetch), and so does one of the old key, still published.
    tokio::time::sleep_until((fetched_at + REFETCH_INTERVAL + Duration::from_millis(500)).into())
        .await;
    let fetched = idp.jwks_count().await.unwrap();
    assert_eq!(
        fetched, first_fetch,
        "no fetch since the first (the keys are fresh 30 s)"
    );
    idp.rotate().await.unwrap();
    let rotated = idp.access_token("alice").await.unwrap();
    create(&mesh, &rotated, "signed with the new key")
        .await
        .expect("a token of the new key is accepted without a restart");
    assert_eq!(idp.jwks_count().await.unwrap(), fetched + 1);
    create(&mesh, &alice, "signed with the old key, still published")
        .await
        .unwrap();

    // The old key leaves the JWKS: once the cached keys go stale (30 s here) its tokens are
    // refused, the new key's still work.
    idp.retire().await.unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Err(status) = create(&mesh, &alice, "old key").await {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await
    .expect("a retired key's tokens are refused within 60 s");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    create(&mesh, &rotated, "new key").await.unwrap();
    idp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_keeps_sessions_and_unknown_kids_cost_bounded_fetches() {
    let test = "an_outage_keeps_sessions_and_unknown_kids_cost_bounded_fetches";
    let Some(idp) = IdentityProvider::start(test, &[]).await.unwrap() else {
        return;
    };
    let mesh = mesh_for(issuer(&idp), None).await;
    let alice = idp.access_token("alice").await.unwrap();
    create(&mesh, &alice, "before").await.unwrap();

    // A flood of tokens naming made-up keys, while the provider is up and then down: each
    // is refused, and the provider's JWKS is asked at most once per 10 s.
    for down in [false, true] {
        idp.set_down(down).await.unwrap();
        let before = idp.jwks_count().await.unwrap();
        let started = std::time::Instant::now();
        // 300 calls, 50 at a time, some giving up after 20 ms (a cancelled call cancels no
        // fetch).
        for chunk in 0..6 {
            let calls = (0..50).map(|i| {
                let token = forged(&format!("made-up-{chunk}-{i}"), &idp.issuer);
                let mesh = &mesh;
                async move {
                    let mut request = create_request(&token, "x");
                    if i % 2 == 0 {
                        request.set_timeout(Duration::from_millis(20));
                    }
                    tasks_grpc(mesh).await.create_task(request).await
                }
            });
            for result in futures::future::join_all(calls).await {
                let status = result.unwrap_err();
                assert!(
                    matches!(
                        status.code(),
                        Code::Unauthenticated | Code::DeadlineExceeded | Code::Cancelled
                    ),
                    "{status:?}"
                );
            }
        }
        let fetches = idp.jwks_count().await.unwrap() - before;
        let windows = started.elapsed().as_secs() / 10 + 1;
        assert!(
            fetches <= windows,
            "300 unknown kids cost {fetches} JWKS fetches in {windows} 10 s windows (down: {down})"
        );
        // The session goes on, on the cached keys.
        create(&mesh, &alice, "during").await.unwrap();
    }
    // After the flood and the outage, a rotation is picked up as soon as the last fetch is
    // REFETCH_INTERVAL old: the flood left nothing stuck.
    idp.set_down(false).await.unwrap();
    tokio::time::sleep(REFETCH_INTERVAL + Duration::from_millis(500)).await;
    idp.rotate().await.unwrap();
    let rotated = idp.access_token("alice").await.unwrap();
    create(&mesh, &rotated, "after").await.unwrap();
    idp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_issuers_with_the_same_sub_are_two_users() {
    let test = "two_issuers_with_the_same_sub_are_two_users";
    let Some(first) = IdentityProvider::start(test, &[]).await.unwrap() else {
        return;
    };
    let Some(second) = IdentityProvider::start(test, &[]).await.unwrap() else {
        return;
    };
    let issuers = parse_issuers(
        &format!("{}, {} user_prefix=second:", first.issuer, second.issuer),
        "taskmesh",
        "roles",
    )
    .unwrap();
    let mesh = mesh_for(issuers, None).await;
    let alice_first = first.access_token("alice").await.unwrap();
    let alice_second = second.access_token("alice").await.unwrap();
    let task = create(&mesh, &alice_first, "first's alice").await.unwrap();
    assert_eq!(count_tasks(&mesh, &alice_first).await, 1);
    assert_eq!(count_tasks(&mesh, &alice_second).await, 0);
    let status = tasks_grpc(&mesh)
        .await
        .get_task(with_token(
            &alice_second,
            GetTaskRequest { name: task.name },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    // A token of an issuer nobody configured is refused.
    let Some(stranger) = IdentityProvider::start(test, &[]).await.unwrap() else {
        return;
    };
    let foreign = stranger.access_token("alice").await.unwrap();
    let status = create(&mesh, &foreign, "x").await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // The MCP endpoint's metadata (RFC 9728) names both issuers as its authorization servers.
    let metadata: serde_json::Value = reqwest::get(format!(
        "http://{}/.well-known/oauth-protected-resource/mcp",
        mesh.gateway_addr
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        metadata["authorization_servers"],
        serde_json::json!([first.issuer, second.issuer]),
        "{metadata}"
    );
    first.stop().await;
    second.stop().await;
    stranger.stop().await;
}
