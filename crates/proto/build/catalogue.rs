//! Generates the event catalogue from the `(taskmesh.events.v1.event)` option of the messages
//! of `taskmesh.events.v1` (see `proto/taskmesh/events/v1/options.proto`):
//! - the `Topic` enum (one variant per topic any event names);
//! - an `Event` impl per event message (its CloudEvent type, topic, change-log flag, and its
//!   `context` field);
//! - one enum per topic with a variant per event on it, and its `TopicEvents` impl
//!   (`decode` by CloudEvent type);
//! - `EVENTS`, every event kind as data.
//!
//! The build fails when a message of the package other than the option and context types
//! lacks the option, when an event's field 1 is not `ChangeContext context`, when a type is
//! not `dev.taskmesh.<resource>.<verb>.v1` or is used twice.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use prost_reflect::{DescriptorPool, Kind};

const PACKAGE: &str = "taskmesh.events.v1";
const OPTION: &str = "taskmesh.events.v1.event";
const CONTEXT: &str = "taskmesh.events.v1.ChangeContext";
/// Messages of the package that are not events.
const NOT_EVENTS: [&str; 2] = [CONTEXT, "taskmesh.events.v1.EventOptions"];

struct EventDef {
    /// Message name, e.g. `TaskCreated` (also the Rust type's and the enum variant's name).
    name: String,
    full_name: String,
    event_type: String,
    change_log: bool,
}

type Error = Box<dyn std::error::Error>;

/// The generated Rust source.
pub(crate) fn generate(pool: &DescriptorPool) -> Result<String, Error> {
    let option = pool
        .get_extension_by_name(OPTION)
        .ok_or_else(|| format!("{OPTION} is not defined"))?;
    // Topic base name → its events, both in name order (stable output).
    let mut topics: BTreeMap<String, Vec<EventDef>> = BTreeMap::new();
    let mut types = BTreeMap::new();
    for message in pool.all_messages() {
        if message.package_name() != PACKAGE
            || message.parent_message().is_some()
            || NOT_EVENTS.contains(&message.full_name())
        {
            continue;
        }
        let full_name = message.full_name().to_owned();
        let options = message.options();
        if !options.has_extension(&option) {
            return Err(format!("{full_name} has no (event) option").into());
        }
        let value = options.get_extension(&option);
        let event = value
            .as_message()
            .ok_or_else(|| format!("{full_name}: (event) is not a message"))?;
        let text = |field: &str| -> String {
            event
                .get_field_by_name(field)
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        };
        let event_type = text("type");
        let topic = text("topic");
        let change_log = event
            .get_field_by_name("change_log")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let well_formed = event_type
            .strip_prefix("dev.taskmesh.")
            .and_then(|rest| rest.strip_suffix(".v1"))
            .is_some_and(|middle| {
                let parts: Vec<&str> = middle.split('.').collect();
                parts.len() == 2
                    && parts.iter().all(|p| {
                        !p.is_empty()
                            && p.chars()
                                .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
                    })
            });
        if !well_formed {
            return Err(format!(
                "{full_name}: type {event_type:?} is not dev.taskmesh.<resource>.<verb>.v1"
            )
            .into());
        }
        if !is_topic_name(&topic) {
            return Err(format!("{full_name}: topic {topic:?} is not a topic name").into());
        }
        if let Some(other) = types.insert(event_type.clone(), full_name.clone()) {
            return Err(format!("{event_type} names both {other} and {full_name}").into());
        }
        let context = message.get_field(1);
        let context_ok = context.as_ref().is_some_and(|f| {
            f.name() == "context"
                && !f.is_list()
                && matches!(f.kind(), Kind::Message(m) if m.full_name() == CONTEXT)
        });
        if !context_ok {
            return Err(format!("{full_name}: field 1 must be `ChangeContext context`").into());
        }
        topics.entry(topic).or_default().push(EventDef {
            name: message.name().to_owned(),
            full_name,
            event_type,
            change_log,
        });
    }
    if topics.is_empty() {
        return Err(format!("no message of {PACKAGE} has the (event) option").into());
    }
    for events in topics.values_mut() {
        events.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Ok(render(&topics))
}

/// A Kafka topic base name as the mesh writes them: lowercase words joined by `-`.
fn is_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .split('-')
            .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase()))
}

/// `task-events` → `TaskEvents`.
fn camel(topic: &str) -> String {
    topic
        .split('-')
        .map(|w| {
            let mut chars = w.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

fn render(topics: &BTreeMap<String, Vec<EventDef>>) -> String {
    let mut out =
        String::from("// @generated by crates/proto/build/catalogue.rs; do not edit.\n\n");
    let all: Vec<String> = topics
        .keys()
        .map(|t| format!("Topic::{}", camel(t)))
        .collect();

    // The topics.
    out.push_str(
        "/// The mesh's Kafka topics, as the events' `(event).topic` options name them. Each has \
         a\n/// dead-letter topic `<topic>.dlq`; an installation may prefix every name.\n\
         #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]\npub enum Topic {\n",
    );
    for (topic, events) in topics {
        let _ = writeln!(out, "    /// `{topic}`: carries");
        for e in events {
            let _ = writeln!(
                out,
                "    /// - `{}` ([`{}`](crate::events::v1::{}))",
                e.event_type, e.name, e.name
            );
        }
        let _ = writeln!(out, "    {},", camel(topic));
    }
    out.push_str("}\n\nimpl Topic {\n    /// Every topic, in name order.\n");
    let _ = writeln!(
        out,
        "    pub const ALL: [Topic; {}] = [{}];\n",
        all.len(),
        all.join(", ")
    );
    out.push_str(
        "    /// The topic's base name (without an installation's prefix), e.g. `task-events`.\n    \
         pub const fn base_name(self) -> &'static str {\n        match self {\n",
    );
    for topic in topics.keys() {
        let _ = writeln!(out, "            Topic::{} => {topic:?},", camel(topic));
    }
    out.push_str("        }\n    }\n}\n\n");

    // One impl per event message.
    for (topic, events) in topics {
        for e in events {
            let _ = write!(
                out,
                "impl Event for crate::events::v1::{name} {{\n    \
                 const TYPE: &'static str = {ty:?};\n    \
                 const MESSAGE: &'static str = {full:?};\n    \
                 const TOPIC: Topic = Topic::{topic};\n    \
                 const CHANGE_LOG: bool = {cl};\n\n    \
                 fn context(&self) -> Option<&ChangeContext> {{\n        self.context.as_ref()\n    }}\n\n    \
                 fn set_context(&mut self, context: ChangeContext) {{\n        self.context = Some(context);\n    }}\n}}\n\n",
                name = e.name,
                ty = e.event_type,
                full = e.full_name,
                topic = camel(topic),
                cl = e.change_log,
            );
        }
    }

    // One enum per topic.
    for (topic, events) in topics {
        let enum_name = camel(topic);
        let _ = write!(
            out,
            "/// An event of `{topic}`, decoded by its CloudEvent type ([`TopicEvents::decode`]).\n\
             /// Variants hold the payloads as they decode (a consumer moves them on), unboxed.\n\
             #[derive(Clone, Debug, PartialEq)]\n#[allow(clippy::large_enum_variant)]\npub enum {enum_name} {{\n"
        );
        for e in events {
            let _ = writeln!(
                out,
                "    /// `{}`.\n    {}(crate::events::v1::{}),",
                e.event_type, e.name, e.name
            );
        }
        let _ = write!(
            out,
            "}}\n\nimpl TopicEvents for {enum_name} {{\n    const TOPIC: Topic = Topic::{enum_name};\n    \
             const TYPES: &'static [&'static str] = &[{types}];\n\n    \
             fn decode(event_type: &str, data: &[u8]) -> Result<Option<Self>, prost::DecodeError> {{\n        \
             use prost::Message as _;\n        Ok(Some(match event_type {{\n",
            types = events
                .iter()
                .map(|e| format!("{:?}", e.event_type))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for e in events {
            let _ = writeln!(
                out,
                "            {:?} => Self::{}(crate::events::v1::{}::decode(data)?),",
                e.event_type, e.name, e.name
            );
        }
        out.push_str(
            "            _ => return Ok(None),\n        }))\n    }\n\n    \
             fn event_type(&self) -> &'static str {\n        match self {\n",
        );
        for e in events {
            let _ = writeln!(
                out,
                "            Self::{}(_) => <crate::events::v1::{} as Event>::TYPE,",
                e.name, e.name
            );
        }
        out.push_str(
            "        }\n    }\n\n    fn context(&self) -> Option<&ChangeContext> {\n        match self {\n",
        );
        for e in events {
            let _ = writeln!(
                out,
                "            Self::{}(e) => e.context.as_ref(),",
                e.name
            );
        }
        out.push_str("        }\n    }\n}\n\n");
    }

    // Every kind as data.
    out.push_str("/// Every event type of the mesh, in topic and name order.\npub const EVENTS: &[EventKind] = &[\n");
    for (topic, events) in topics {
        for e in events {
            let _ = writeln!(
                out,
                "    EventKind {{ event_type: {:?}, message: {:?}, topic: Topic::{}, change_log: {} }},",
                e.event_type,
                e.full_name,
                camel(topic),
                e.change_log
            );
        }
    }
    out.push_str("];\n");
    out
}
