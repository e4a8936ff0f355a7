//! Idempotent requests (AIP-155): the first response of a `request_id` is kept per user and
//! method; a retry returns it instead of acting again.

use prost::Message;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::grpc::Violations;

/// Longest accepted `request_id`, in bytes.
pub const MAX_REQUEST_ID: usize = 128;

/// Checks a `request_id` (AIP-155): empty, or at most 128 printable ASCII characters (a
/// UUID is recommended). A problem is a `request_id` field violation.
pub fn validate(request_id: &str, v: &mut Violations) {
    if request_id.len() > MAX_REQUEST_ID || request_id.chars().any(|c| !c.is_ascii_graphic()) {
        v.add(
            "request_id",
            "must be at most 128 printable ASCII characters",
        );
    }
}

/// Claims `request_id` for this transaction. `Ok(None)`: first time, go ahead (and call
/// [`finish`], or record the change with [`crate::changelog::record_finishing`]); `Ok(Some(bytes))`: already done, here is its response. A concurrent first call
/// makes this wait until it commits (or rolls back, and then this one goes ahead).
pub async fn claim(
    conn: &mut PgConnection,
    user: &str,
    method: &str,
    request_id: &str,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    if request_id.is_empty() {
        return Ok(None);
    }
    // Claim, or read the first call's response, in one round trip. The read sees the
    // statement's snapshot: a first call that committed while this one waited on its row is
    // not in it, so that case reads again.
    let row = sqlx::query!(
        r#"WITH claim AS (INSERT INTO requests (user_id, request_id, method, resource_id,
         response, create_time) VALUES ($1, $2, $3, $4, '', now()) ON CONFLICT DO NOTHING
         RETURNING 1)
         SELECT EXISTS (SELECT 1 FROM claim) AS "claimed!", (SELECT response FROM requests
         WHERE user_id = $1 AND method = $3 AND request_id = $2) AS response"#,
        user,
        request_id,
        method,
        Uuid::nil()
    )
    .fetch_one(&mut *conn)
    .await?;
    let (claimed, response) = (row.claimed, row.response);
    if claimed {
        return Ok(None);
    }
    if let Some(response) = response {
        return Ok(Some(response));
    }
    // Not claimed and not visible: the first call committed while this statement waited.
    finished(conn, user, method, request_id)
        .await?
        .map(Some)
        .ok_or(sqlx::Error::RowNotFound)
}

/// The stored response of `request_id` when that request finished (committed), without
/// claiming it: a caller that must do something before [`claim`] (e.g. read from another
/// service) answers a retry from here.
///
/// # Errors
/// The database error.
pub async fn finished(
    conn: &mut PgConnection,
    user: &str,
    method: &str,
    request_id: &str,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    if request_id.is_empty() {
        return Ok(None);
    }
    sqlx::query_scalar!(
        "SELECT response FROM requests WHERE user_id = $1 AND method = $2 AND request_id = $3",
        user,
        method,
        request_id
    )
    .fetch_optional(&mut *conn)
    .await
}

/// Stores the response of a claimed request.
pub async fn finish(
    conn: &mut PgConnection,
    user: &str,
    method: &str,
    request_id: &str,
    resource_id: Uuid,
    response: &impl Message,
) -> Result<(), sqlx::Error> {
    if request_id.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "UPDATE requests SET resource_id = $4, response = $5 \
         WHERE user_id = $1 AND method = $2 AND request_id = $3",
        user,
        method,
        request_id,
        resource_id,
        response.encode_to_vec()
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}
