//! Tags: explicit CRUD, and resolution of the names a task carries (creating missing tags).

use chrono::{DateTime, Utc};
use prost::Message;
use sqlx::{PgConnection, PgPool};
use taskmesh_proto::{events::v1 as ev, names::TagName, task::v1 as pb};
use uuid::Uuid;

use crate::{
    changes::{self, Change, Writer},
    error::TaskError,
    model::{TagRow, now, query_tag},
};

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("23505"))
}

/// The tag ids for `names` (case-insensitive), creating missing tags with a `tag.created`
/// event each. Call with the user's change-log lock held.
pub(crate) async fn resolve(
    conn: &mut PgConnection,
    writer: &Writer<'_>,
    names: &[String],
    time: DateTime<Utc>,
) -> Result<Vec<Uuid>, TaskError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    // Every name's tag in one round trip; only missing ones cost more.
    let existing: Vec<Option<Uuid>> = sqlx::query_scalar!(
        r#"SELECT g.id AS "id?" FROM unnest($2::text[]) WITH ORDINALITY AS n(name, i)
         LEFT JOIN tags g ON g.user_id = $1 AND lower(g.display_name) = lower(n.name)
         ORDER BY n.i"#,
        writer.user,
        names
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut ids = Vec::with_capacity(names.len());
    for (name, existing) in names.iter().zip(existing) {
        let id = match existing {
            Some(id) => id,
            None => resolve_one(conn, writer, name, time).await?,
        };
        ids.push(id);
    }
    Ok(ids)
}

/// The tag id for `name`, creating the tag if it is still missing: looked up again, since
/// an earlier name of the same task may have created it (names equal to PostgreSQL's
/// `lower()` but not to Rust's lowercase).
async fn resolve_one(
    conn: &mut PgConnection,
    writer: &Writer<'_>,
    name: &str,
    time: DateTime<Utc>,
) -> Result<Uuid, TaskError> {
    let existing: Option<Uuid> = sqlx::query_scalar!(
        "SELECT id FROM tags WHERE user_id = $1 AND lower(display_name) = lower($2)",
        writer.user,
        name
    )
    .fetch_optional(&mut *conn)
    .await?;
    match existing {
        Some(id) => Ok(id),
        None => Ok(insert(conn, writer, name, "", time).await?.id),
    }
}

async fn insert(
    conn: &mut PgConnection,
    writer: &Writer<'_>,
    name: &str,
    color: &str,
    time: DateTime<Utc>,
) -> Result<TagRow, TaskError> {
    let row = query_tag!(
        "INSERT INTO tags (id, user_id, display_name, color, version, create_time, update_time) \
         VALUES ($1, $2, $3, $4, 1, $5, $5) RETURNING ",
        "",
        Uuid::now_v7(),
        writer.user,
        name,
        color,
        time
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            TaskError::TagExists(name.to_owned())
        } else {
            e.into()
        }
    })?;
    let tag = row.to_proto();
    changes::record(
        conn,
        writer,
        time,
        Change::new(
            tag.name.clone(),
            ev::TagCreated {
                context: None,
                tag: Some(tag),
            },
        ),
    )
    .await?;
    Ok(row)
}

/// Creates a tag; idempotent by `request_id`; `ALREADY_EXISTS` for a name in use.
pub(crate) async fn create(
    pool: &PgPool,
    writer: &Writer<'_>,
    name: &str,
    color: &str,
) -> Result<pb::Tag, TaskError> {
    let mut tx = pool.begin().await?;
    changes::lock_user(&mut tx, writer.user).await?;
    if let Some(done) =
        taskmesh_platform::requests::claim(&mut tx, writer.user, "CreateTag", writer.request_id)
            .await?
    {
        tx.rollback().await?;
        return Ok(pb::Tag::decode(done.as_slice())?);
    }
    let row = insert(&mut tx, writer, name, color, now()).await?;
    let tag = row.to_proto();
    taskmesh_platform::requests::finish(
        &mut tx,
        writer.user,
        "CreateTag",
        writer.request_id,
        row.id,
        &tag,
    )
    .await?;
    tx.commit().await?;
    Ok(tag)
}

async fn fetch(
    conn: &mut PgConnection,
    user: &str,
    id: Uuid,
    for_update: bool,
) -> Result<TagRow, TaskError> {
    let row = if for_update {
        query_tag!(
            "SELECT ",
            " FROM tags WHERE id = $1 AND user_id = $2 FOR UPDATE",
            id,
            user
        )
        .fetch_optional(&mut *conn)
        .await?
    } else {
        query_tag!(
            "SELECT ",
            " FROM tags WHERE id = $1 AND user_id = $2",
            id,
            user
        )
        .fetch_optional(&mut *conn)
        .await?
    };
    row.ok_or_else(|| TaskError::NotFound(TagName(id).to_string()))
}

/// Reads one tag.
pub(crate) async fn get(pool: &PgPool, user: &str, id: Uuid) -> Result<pb::Tag, TaskError> {
    let mut conn = pool.acquire().await?;
    Ok(fetch(&mut conn, user, id, false).await?.to_proto())
}

/// One page of tags in case-insensitive name order; the token is the last name and id.
pub(crate) async fn list(
    pool: &PgPool,
    user: &str,
    page_size: i64,
    after: Option<(String, Uuid)>,
) -> Result<(Vec<pb::Tag>, Option<(String, Uuid)>), TaskError> {
    let (name, id) = after.unwrap_or((String::new(), Uuid::nil()));
    let rows = query_tag!(
        "SELECT ",
        " FROM tags WHERE user_id = $1 \
         AND (lower(display_name), id) > (lower($2), $3) \
         ORDER BY lower(display_name), id LIMIT $4",
        user,
        name,
        id,
        page_size + 1
    )
    .fetch_all(pool)
    .await?;
    let more = rows.len() as i64 > page_size;
    let page: Vec<TagRow> = rows.into_iter().take(page_size as usize).collect();
    let next = if more {
        page.last().map(|r| (r.display_name.clone(), r.id))
    } else {
        None
    };
    Ok((page.iter().map(TagRow::to_proto).collect(), next))
}

/// Renames and/or recolours a tag (`None` = keep).
pub(crate) async fn update(
    pool: &PgPool,
    writer: &Writer<'_>,
    id: Uuid,
    etag: &str,
    display_name: Option<&str>,
    color: Option<&str>,
) -> Result<pb::Tag, TaskError> {
    let mut tx = pool.begin().await?;
    changes::lock_user(&mut tx, writer.user).await?;
    let before = fetch(&mut tx, writer.user, id, true).await?;
    if !etag.is_empty() && etag != before.version.to_string() {
        return Err(TaskError::EtagMismatch);
    }
    let new_name = display_name.unwrap_or(&before.display_name).to_owned();
    let new_color = color.unwrap_or(&before.color).to_owned();
    let mut paths = Vec::new();
    let mut previous = pb::Tag::default();
    if new_name != before.display_name {
        paths.push("display_name".to_owned());
        previous.display_name.clone_from(&before.display_name);
    }
    if new_color != before.color {
        paths.push("color".to_owned());
        previous.color.clone_from(&before.color);
    }
    if paths.is_empty() {
        tx.rollback().await?;
        return Ok(before.to_proto());
    }
    // A rename changes what every task carrying the tag shows; a recolour does not.
    let tagged = if new_name == before.display_name {
        Vec::new()
    } else {
        crate::tasks::with_tag(&mut tx, writer.user, id).await?
    };
    let time = now();
    let row = query_tag!(
        "UPDATE tags SET display_name = $3, color = $4, version = version + 1, update_time = $5 \
         WHERE id = $1 AND user_id = $2 RETURNING ",
        "",
        id,
        writer.user,
        new_name,
        new_color,
        time
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            TaskError::TagExists(new_name.clone())
        } else {
            e.into()
        }
    })?;
    let tag = row.to_proto();
    let payload = tag.clone();
    changes::record(
        &mut tx,
        writer,
        time,
        Change::new(
            tag.name.clone(),
            ev::TagUpdated {
                context: None,
                tag: Some(payload),
                update_mask: Some(prost_types::FieldMask { paths }),
                previous: Some(previous),
            },
        ),
    )
    .await?;
    crate::tasks::record_tags_changed(&mut tx, writer, tagged, time).await?;
    tx.commit().await?;
    Ok(tag)
}

/// Deletes a tag and removes it from the user's tasks.
pub(crate) async fn delete(
    pool: &PgPool,
    writer: &Writer<'_>,
    id: Uuid,
    etag: &str,
) -> Result<(), TaskError> {
    let mut tx = pool.begin().await?;
    changes::lock_user(&mut tx, writer.user).await?;
    let before = fetch(&mut tx, writer.user, id, true).await?;
    if !etag.is_empty() && etag != before.version.to_string() {
        return Err(TaskError::EtagMismatch);
    }
    let tagged = crate::tasks::with_tag(&mut tx, writer.user, id).await?;
    sqlx::query!(
        "UPDATE tasks SET tag_ids = array_remove(tag_ids, $1) \
         WHERE user_id = $2 AND tag_ids @> ARRAY[$1]::uuid[]",
        id,
        writer.user
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "DELETE FROM tags WHERE id = $1 AND user_id = $2",
        id,
        writer.user
    )
    .execute(&mut *tx)
    .await?;
    let tag = before.to_proto();
    let time = now();
    changes::record(
        &mut tx,
        writer,
        time,
        Change::new(
            tag.name.clone(),
            ev::TagDeleted {
                context: None,
                tag: Some(tag),
            },
        ),
    )
    .await?;
    crate::tasks::record_tags_changed(&mut tx, writer, tagged, time).await?;
    tx.commit().await?;
    Ok(())
}
