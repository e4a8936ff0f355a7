//! The field changes of an update event, read generically through protobuf reflection: any
//! payload with an `update_mask`, the resource after the change (the one other message field
//! besides `context` and `previous`) and `previous` (the old values of the masked fields)
//! gives one `{field, before, after}` per path, the values in the proto3 JSON mapping (`null`
//! when unset or empty). Today these are `TaskUpdated` and `TagUpdated`.

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage, ReflectMessage as _, SerializeOptions, Value};
use serde_json::{Map, Value as Json, json};
use taskmesh_proto::events::v1::ChangeContext;

/// Every message of the mesh, from the descriptor set the contracts crate builds.
static POOL: LazyLock<Option<DescriptorPool>> =
    LazyLock::new(|| DescriptorPool::decode(taskmesh_proto::FILE_DESCRIPTOR_SET).ok());

/// `data` decoded as the message `name` (fully qualified); `None` when it does not decode.
pub(crate) fn decode(name: &str, data: &[u8]) -> Option<DynamicMessage> {
    let descriptor = POOL.as_ref()?.get_message_by_name(name)?;
    DynamicMessage::decode(descriptor, data).ok()
}

/// The payload's `context` (field 1 of every event payload).
pub(crate) fn context(message: &DynamicMessage) -> Option<ChangeContext> {
    let field = message.get_field_by_number(1)?;
    let context = field.as_message()?;
    context.transcode_to::<ChangeContext>().ok()
}

/// The `version` of the resource a payload carries (e.g. `TaskCompleted.task.version`), when
/// it carries a versioned one.
pub(crate) fn resource_version(message: &DynamicMessage) -> Option<i64> {
    message
        .descriptor()
        .fields()
        .filter(|f| !matches!(f.name(), "context" | "previous" | "update_mask"))
        .find_map(|field| {
            let value = message.get_field(&field);
            let resource = value.as_message()?;
            resource.descriptor().get_field_by_name("version")?;
            resource
                .get_field_by_name("version")?
                .as_i64()
                .filter(|v| *v > 0)
        })
}

/// The changes an event carries: `data_schema` names the message (see
/// `cloudevents::data_schema_message`) and `data`
/// its encoding. An empty JSON array for events that are not updates (or do not decode).
pub(crate) fn of(data_schema: &str, data: &[u8]) -> Json {
    changes(data_schema, data).unwrap_or_else(|| Json::Array(Vec::new()))
}

fn changes(data_schema: &str, data: &[u8]) -> Option<Json> {
    let name = taskmesh_platform::cloudevents::data_schema_message(data_schema)?;
    let descriptor = POOL.as_ref()?.get_message_by_name(name)?;
    let message = DynamicMessage::decode(descriptor.clone(), data).ok()?;
    let mask = message.get_field_by_name("update_mask")?;
    let paths: Vec<String> = match mask.as_message()?.get_field_by_name("paths")?.as_ref() {
        Value::List(paths) => paths
            .iter()
            .filter_map(|p| p.as_str().map(str::to_owned))
            .collect(),
        _ => return None,
    };
    let resource_field = descriptor
        .fields()
        .find(|f| !matches!(f.name(), "context" | "update_mask" | "previous"))?;
    let after = json_of(message.get_field(&resource_field).as_message()?)?;
    let before = json_of(message.get_field_by_name("previous")?.as_message()?)?;
    let resource = resource_field.kind();
    let resource = resource.as_message()?;
    let changes = paths
        .iter()
        .map(|path| {
            // The JSON name of the field (`display_name` is `displayName`).
            let key = resource
                .get_field_by_name(path)
                .map_or_else(|| path.clone(), |f| f.json_name().to_owned());
            json!({
                "field": path,
                "before": before.get(&key).cloned().unwrap_or(Json::Null),
                "after": after.get(&key).cloned().unwrap_or(Json::Null),
            })
        })
        .collect();
    Some(Json::Array(changes))
}

/// A message as proto3 JSON (default values left out).
fn json_of(message: &DynamicMessage) -> Option<Map<String, Json>> {
    let options = SerializeOptions::new();
    match message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .ok()?
    {
        Json::Object(map) => Some(map),
        _ => None,
    }
}

/// A JSON value as a `google.protobuf.Value`.
pub(crate) fn to_proto_value(json: &Json) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match json {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(to_proto_value).collect(),
        }),
        Json::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map
                .iter()
                .map(|(k, v)| (k.clone(), to_proto_value(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use taskmesh_proto::{events::v1 as ev, task::v1 as pb};

    #[test]
    fn an_update_names_each_changed_field_with_both_values() {
        let event = ev::TaskUpdated {
            context: None,
            task: Some(pb::Task {
                name: "tasks/1".into(),
                title: "Buy oat milk".into(),
                priority: pb::Priority::High as i32,
                tags: vec!["home".into()],
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["title".into(), "priority".into(), "tags".into()],
            }),
            previous: Some(pb::Task {
                title: "Buy milk".into(),
                priority: pb::Priority::Low as i32,
                ..Default::default()
            }),
        };
        let changes = of(
            "type.googleapis.com/taskmesh.events.v1.TaskUpdated",
            &event.encode_to_vec(),
        );
        assert_eq!(
            changes,
            json!([
                {"field": "title", "before": "Buy milk", "after": "Buy oat milk"},
                {"field": "priority", "before": "PRIORITY_LOW", "after": "PRIORITY_HIGH"},
                {"field": "tags", "before": null, "after": ["home"]},
            ])
        );
    }

    #[test]
    fn tag_fields_use_their_json_names_and_other_events_have_none() {
        let event = ev::TagUpdated {
            context: None,
            tag: Some(pb::Tag {
                display_name: "Errands".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
            previous: Some(pb::Tag {
                display_name: "errands".into(),
                ..Default::default()
            }),
        };
        let changes = of(
            "type.googleapis.com/taskmesh.events.v1.TagUpdated",
            &event.encode_to_vec(),
        );
        assert_eq!(
            changes,
            json!([{"field": "display_name", "before": "errands", "after": "Errands"}])
        );
        let created = ev::TaskCreated::default().encode_to_vec();
        assert_eq!(
            of(
                "type.googleapis.com/taskmesh.events.v1.TaskCreated",
                &created
            ),
            json!([])
        );
        assert_eq!(of("type.googleapis.com/no.Such", b"\xff"), json!([]));
    }
}
