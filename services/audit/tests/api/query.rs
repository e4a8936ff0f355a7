//! The admin query: filters, pages, order, and who may call it.

use taskmesh_platform::grpc::{field_violations, reason};
use taskmesh_proto::audit::v1::{ListAuditEntriesRequest, VerifyChainRequest};
use taskmesh_testkit::{authed, authed_admin};
use tonic::Code;

use crate::helpers::*;

fn query(
    filter: &str,
    page_size: i32,
    page_token: &str,
    order_by: &str,
) -> ListAuditEntriesRequest {
    ListAuditEntriesRequest {
        filter: filter.into(),
        page_size,
        page_token: page_token.into(),
        order_by: order_by.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_filter_and_page_across_users() {
    let (_mesh, mut tasks, mut audit) = start().await;
    for i in 0..3 {
        create(&mut tasks, "alice", titled(&format!("alice {i}"))).await;
        create(&mut tasks, "bob", titled(&format!("bob {i}"))).await;
    }
    activity_of(&audit, "alice", 3).await;
    activity_of(&audit, "bob", 3).await;

    // Everything alice created, two per page, oldest first: no gap, no duplicate.
    let filter = r#"user = "alice" AND event_type = "dev.taskmesh.task.created.v1""#;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = audit
            .list_audit_entries(authed_admin("root", query(filter, 2, &token, "")))
            .await
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= 2);
        seen.extend(page.entries);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|e| e.user == "alice"));
    let times: Vec<_> = seen
        .iter()
        .map(|e| e.event_time.as_ref().map(|t| (t.seconds, t.nanos)))
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "oldest first");

    // Newest first, and a time range that leaves out the first one.
    let newest = audit
        .list_audit_entries(authed_admin(
            "root",
            query(filter, 10, "", "event_time desc"),
        ))
        .await
        .unwrap()
        .into_inner()
        .entries;
    let names: Vec<&str> = newest.iter().map(|e| e.name.as_str()).collect();
    let mut reversed: Vec<&str> = seen.iter().map(|e| e.name.as_str()).collect();
    reversed.reverse();
    assert_eq!(names, reversed);
    let second = seen[1].event_time.unwrap();
    let since = chrono::DateTime::from_timestamp(second.seconds, second.nanos.unsigned_abs())
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let ranged = audit
        .list_audit_entries(authed_admin(
            "root",
            query(
                &format!(r#"{filter} AND event_time >= "{since}""#),
                10,
                "",
                "",
            ),
        ))
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(ranged.len(), 2);

    // A token is bound to its filter; bad filters and orders name their field.
    let first_page = audit
        .list_audit_entries(authed_admin("root", query(filter, 1, "", "")))
        .await
        .unwrap()
        .into_inner();
    let status = audit
        .list_audit_entries(authed_admin(
            "root",
            query(r#"user = "bob""#, 1, &first_page.next_page_token, ""),
        ))
        .await
        .unwrap_err();
    assert_eq!(field_violations(&status)[0].0, "page_token");
    for (request, field) in [
        (query(r#"owner = "alice""#, 0, "", ""), "filter"),
        (query("", 5000, "", ""), "page_size"),
        (query("", 0, "", "user"), "order_by"),
    ] {
        let status = audit
            .list_audit_entries(authed_admin("root", request))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(field_violations(&status)[0].0, field);
    }

    // Not for non-admins; another user's chain needs admin too.
    let status = audit
        .list_audit_entries(authed("alice", query("", 0, "", "")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(reason(&status).as_deref(), Some("ADMIN_ROLE_REQUIRED"));
    let status = audit
        .verify_chain(authed("alice", VerifyChainRequest { user: "bob".into() }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let bobs = audit
        .verify_chain(authed_admin(
            "root",
            VerifyChainRequest { user: "bob".into() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(bobs.valid);
    assert_eq!(bobs.checked_count, 3);
}
