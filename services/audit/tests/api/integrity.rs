//! The log is append-only, tampering shows in the chain, and retention keeps what is left
//! verifiable.

use taskmesh_proto::audit::v1::VerifyChainRequest;
use taskmesh_testkit::authed;

use crate::helpers::*;

async fn verify(audit: &mut Audit, user: &str) -> taskmesh_proto::audit::v1::VerifyChainResponse {
    audit
        .verify_chain(authed(user, VerifyChainRequest::default()))
        .await
        .unwrap()
        .into_inner()
}

/// Runs `statement` as a superuser going around the triggers (`session_replication_role`).
async fn behind_the_trigger(pool: &sqlx::PgPool, statement: &str) {
    let mut conn = pool.acquire().await.unwrap();
    for sql in [
        "SET session_replication_role = replica",
        statement,
        "SET session_replication_role = origin",
    ] {
        sqlx::query(sql).execute(&mut *conn).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_cannot_change_and_tampering_is_detected() {
    let (mesh, mut tasks, mut audit) = start().await;
    for i in 0..4 {
        create(&mut tasks, "alice", titled(&format!("task {i}"))).await;
    }
    let entries = activity_of(&audit, "alice", 4).await;

    // The service's own connections cannot rewrite or remove history.
    for statement in [
        "UPDATE entries SET actor = 'mallory'",
        "DELETE FROM entries",
        "TRUNCATE entries",
    ] {
        let error = sqlx::query(statement)
            .execute(&mesh.audit_pool)
            .await
            .expect_err(statement);
        assert!(
            error.to_string().contains("append-only"),
            "{statement}: {error}"
        );
    }
    // Nor move a chain's head or start, or forget it.
    for statement in [
        "DELETE FROM chains",
        "UPDATE chains SET start_position = last_position + 1, start_hash = last_hash",
        "UPDATE chains SET last_position = last_position - 1",
        // Forward, but onto no entry, or onto an entry with another hash.
        "UPDATE chains SET last_position = last_position + 1",
        "UPDATE chains SET last_position = last_position + 3",
        "UPDATE chains SET last_hash = '\\x00'",
    ] {
        let error = sqlx::query(statement)
            .execute(&mesh.audit_pool)
            .await
            .expect_err(statement);
        assert!(
            error.to_string().contains("only move forward"),
            "{statement}: {error}"
        );
    }
    assert_eq!(activity(&mut audit, "alice").await.len(), 4);
    assert!(verify(&mut audit, "alice").await.valid);

    // A superuser goes around the trigger and forges the second entry's resource.
    let second = entries.iter().find(|e| e.chain_position == 2).unwrap();
    behind_the_trigger(&mesh.audit_pool, "UPDATE entries SET resource = 'tasks/forged' WHERE chain_position = 2 AND user_id = 'alice'").await;
    let verified = verify(&mut audit, "alice").await;
    assert!(!verified.valid);
    assert_eq!(verified.first_invalid_entry, second.name);
    assert_eq!(verified.checked_count, 2);

    // Removing the newest entry behind the trigger's back leaves the chain short of its head.
    create(&mut tasks, "bob", titled("bob's")).await;
    activity_of(&audit, "bob", 1).await;
    behind_the_trigger(
        &mesh.audit_pool,
        "DELETE FROM entries WHERE user_id = 'bob'",
    )
    .await;
    let verified = verify(&mut audit, "bob").await;
    assert!(!verified.valid);
    assert_eq!(verified.checked_count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_the_oldest_and_the_rest_still_verifies() {
    let (mesh, mut tasks, mut audit) = start().await;
    for i in 0..5 {
        create(&mut tasks, "alice", titled(&format!("task {i}"))).await;
    }
    activity_of(&audit, "alice", 5).await;
    // The retention cut falls between the second and the third entry.
    let cutoff: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT record_time FROM entries WHERE user_id = 'alice' AND chain_position = 3",
    )
    .fetch_one(&mesh.audit_pool)
    .await
    .unwrap();
    let removed = taskmesh_audit::retention::purge_before(&mesh.audit_pool, cutoff)
        .await
        .unwrap();
    assert_eq!(removed, 2);
    let left: Vec<i64> = activity(&mut audit, "alice")
        .await
        .iter()
        .map(|e| e.chain_position)
        .collect();
    assert_eq!(left, [5, 4, 3]);
    let verified = verify(&mut audit, "alice").await;
    assert!(verified.valid, "{verified:?}");
    assert_eq!(verified.checked_count, 3);
    // New entries go on from the chain's head, and outside retention nothing deletes.
    create(&mut tasks, "alice", titled("after")).await;
    activity_of(&audit, "alice", 4).await;
    assert!(verify(&mut audit, "alice").await.valid);
    assert!(
        sqlx::query("DELETE FROM entries")
            .execute(&mesh.audit_pool)
            .await
            .is_err()
    );
}
