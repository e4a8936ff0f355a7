//! UpdateTask's write: the updatable paths (AIP-134), which of them really changed, and the
//! update with its `task.updated` event.

use sqlx::{Acquire, Postgres};
use taskmesh_proto::{names::TaskName, task::v1 as pb};
use uuid::Uuid;

use super::{Lineage, check_etag, fetch, record_updated, rows};
use crate::{
    changes::{self, Writer},
    error::TaskError,
    model::{TaskFields, now},
};

/// Names of the updatable fields (AIP-134 paths).
pub(crate) const UPDATABLE: [&str; 7] = [
    "title",
    "description",
    "priority",
    "tags",
    "due",
    "reminders",
    "recurrence",
];

/// The paths of `mask` whose normalised values differ (so trimming, a priority of 0 for
/// NONE, tag order or case and the like are no change).
fn changed_fields(
    mask: &[&'static str],
    before: &pb::Task,
    after: &TaskFields,
) -> Vec<&'static str> {
    let mut ignored = taskmesh_platform::grpc::Violations::new();
    // The stored rule was checked when it was written: not expanded again here.
    let stored = crate::validate::CheckedRule::stored(before);
    let Some(before) =
        crate::validate::task_fields_checked(before, "", &mut ignored, stored.as_ref())
    else {
        // Stored tasks are valid; should one not be, treat every masked field as changed.
        return mask.to_vec();
    };
    let tag_set = |tags: &[String]| {
        let mut set: Vec<String> = tags.iter().map(|t| t.to_lowercase()).collect();
        set.sort();
        set
    };
    mask.iter()
        .copied()
        .filter(|path| match *path {
            "title" => before.title != after.title,
            "description" => before.description != after.description,
            "priority" => before.priority != after.priority,
            "tags" => tag_set(&before.tags) != tag_set(&after.tags),
            "due" => before.due != after.due,
            "reminders" => before.reminders != after.reminders,
            "recurrence" => before.recurrence != after.recurrence,
            _ => false,
        })
        .collect()
}

/// Copies one top-level field (an [`UPDATABLE`] path) from `from` into `to`.
pub(crate) fn copy_field(path: &str, from: &pb::Task, to: &mut pb::Task) {
    match path {
        "title" => to.title.clone_from(&from.title),
        "description" => to.description.clone_from(&from.description),
        "priority" => to.priority = from.priority,
        "tags" => to.tags.clone_from(&from.tags),
        "due" => to.due.clone_from(&from.due),
        "reminders" => to.reminders.clone_from(&from.reminders),
        "recurrence" => {
            // Output-only parts of the rule (series, previous task) are kept as stored.
            let kept = to.recurrence.take();
            to.recurrence = from.recurrence.clone().map(|mut r| {
                if let Some(kept) = &kept {
                    r.series.clone_from(&kept.series);
                    r.previous_task.clone_from(&kept.previous_task);
                }
                r
            });
        }
        _ => {}
    }
}

/// Applies an update: `merge` builds and validates the new user-settable fields from the
/// current task, and only fields that really changed bump the version and appear in
/// the event's mask.
pub(crate) async fn update<'c>(
    db: impl Acquire<'c, Database = Postgres>,
    writer: &Writer<'_>,
    id: Uuid,
    etag: &str,
    mask: &[&'static str],
    merge: impl FnOnce(&pb::Task) -> Result<TaskFields, TaskError>,
) -> Result<pb::Task, TaskError> {
    let mut tx = db.begin().await?;
    changes::lock_user(&mut tx, writer.user).await?;
    let row = fetch(&mut tx, writer.user, id, true).await?;
    let before = row.to_proto();
    check_etag(etag, &before)?;
    let fields = merge(&before)?;
    let changed = changed_fields(mask, &before, &fields);
    if changed.is_empty() {
        tx.rollback().await?;
        return Ok(before);
    }
    let time = now();
    let tag_ids = crate::tags::resolve(&mut tx, writer, &fields.tags, time).await?;
    let series = fields.recurrence.as_ref().map(|_| Uuid::now_v7());
    let task = rows::update(
        &mut tx,
        id,
        writer.user,
        &fields,
        &tag_ids,
        Lineage {
            series,
            previous_task: None,
        },
        time,
    )
    .await?
    .ok_or_else(|| TaskError::NotFound(TaskName(id).to_string()))?
    .to_proto();
    let mut previous = pb::Task::default();
    for path in &changed {
        copy_field(path, &before, &mut previous);
    }
    let paths = changed.iter().map(|p| (*p).to_owned()).collect();
    record_updated(&mut tx, writer, time, &task, paths, previous).await?;
    tx.commit().await?;
    Ok(task)
}
