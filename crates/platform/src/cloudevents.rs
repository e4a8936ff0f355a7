//! The event envelope: CloudEvents 1.0 in the Kafka protocol binding's binary mode
//! (cloudevents/spec `kafka-protocol-binding.md`, section 3.2). Attributes travel as `ce_`
//! headers, the protobuf payload as the record value, the owning user id as the record key.

use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use uuid::Uuid;

/// `content-type` of every taskmesh event.
pub const CONTENT_TYPE: &str = "application/protobuf";

/// A CloudEvent as taskmesh produces and consumes it.
#[derive(Clone, Debug, PartialEq)]
pub struct CloudEvent {
    /// `ce_id`: a UUIDv7, unique across the mesh.
    pub id: Uuid,
    /// `ce_source`: the producing component, e.g. `/taskmesh/task`.
    pub source: String,
    /// `ce_type`: `dev.taskmesh.<resource>.<verb>.v1`.
    pub event_type: String,
    /// `ce_time`: when the change committed (UTC, microsecond precision).
    pub time: DateTime<Utc>,
    /// `ce_subject`: the resource name, e.g. `tasks/{task}`.
    pub subject: String,
    /// `ce_dataschema`: `urn:taskmesh:proto:<protobuf message full name>` (see
    /// [`data_schema`]).
    pub data_schema: String,
    /// The record key: the owning user id.
    pub key: String,
    /// The record value: the protobuf-encoded payload.
    pub data: Vec<u8>,
    /// W3C `traceparent` of the request that caused the event, if any.
    pub traceparent: Option<String>,
}

/// Why a Kafka record is not a taskmesh CloudEvent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// A required header is absent.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// A header is not valid UTF-8 or not of its type.
    #[error("malformed header {0}")]
    BadHeader(&'static str),
    /// `ce_specversion` is not 1.0.
    #[error("unsupported specversion")]
    SpecVersion,
}

/// The prefix of [`data_schema`]: `ce_dataschema` is a URI (CloudEvents 1.0 section 3.1.1,
/// an absolute URI per RFC 3986 section 4.3) naming the payload's protobuf message.
pub const DATA_SCHEMA_PREFIX: &str = "urn:taskmesh:proto:";

/// The form events carried before [`DATA_SCHEMA_PREFIX`] (no scheme, so not a URI); still
/// read, so events already in a topic, an outbox or a dead-letter topic stay valid.
const LEGACY_DATA_SCHEMA_PREFIX: &str = "type.googleapis.com/";

/// `ce_dataschema` for a protobuf message full name, e.g.
/// `urn:taskmesh:proto:taskmesh.events.v1.TaskCreated`.
pub fn data_schema(message_full_name: &str) -> String {
    format!("{DATA_SCHEMA_PREFIX}{message_full_name}")
}

/// The protobuf message full name a `ce_dataschema` names, in the current form or the
/// earlier `type.googleapis.com/<name>`; `None` for anything else.
pub fn data_schema_message(data_schema: &str) -> Option<&str> {
    data_schema
        .strip_prefix(DATA_SCHEMA_PREFIX)
        .or_else(|| data_schema.strip_prefix(LEGACY_DATA_SCHEMA_PREFIX))
        .filter(|name| !name.is_empty())
}

impl CloudEvent {
    /// The record headers of this event (binary mode).
    pub fn headers(&self) -> OwnedHeaders {
        let id = self.id.to_string();
        let time = self.time.to_rfc3339_opts(SecondsFormat::Micros, true);
        let mut headers = OwnedHeaders::new_with_capacity(9)
            .insert(header("ce_specversion", "1.0"))
            .insert(header("ce_id", &id))
            .insert(header("ce_source", &self.source))
            .insert(header("ce_type", &self.event_type))
            .insert(header("ce_time", &time))
            .insert(header("ce_subject", &self.subject))
            .insert(header("ce_dataschema", &self.data_schema))
            .insert(header("content-type", CONTENT_TYPE));
        if let Some(traceparent) = &self.traceparent {
            headers = headers.insert(header("traceparent", traceparent));
        }
        headers
    }

    /// Reads an event from a consumed record.
    ///
    /// # Errors
    /// [`EnvelopeError`] when a required attribute is missing or malformed.
    pub fn from_message<M: Message>(message: &M) -> Result<Self, EnvelopeError> {
        let headers = message.headers();
        let get = |name: &'static str| -> Result<Option<String>, EnvelopeError> {
            let Some(headers) = headers else {
                return Ok(None);
            };
            for h in headers.iter() {
                if h.key == name {
                    let value = h.value.unwrap_or_default();
                    return std::str::from_utf8(value)
                        .map(|s| Some(s.to_owned()))
                        .map_err(|_| EnvelopeError::BadHeader(name));
                }
            }
            Ok(None)
        };
        let required = |name: &'static str| get(name)?.ok_or(EnvelopeError::MissingHeader(name));
        if required("ce_specversion")? != "1.0" {
            return Err(EnvelopeError::SpecVersion);
        }
        let id = required("ce_id")?
            .parse()
            .map_err(|_| EnvelopeError::BadHeader("ce_id"))?;
        let time = DateTime::parse_from_rfc3339(&required("ce_time")?)
            .map_err(|_| EnvelopeError::BadHeader("ce_time"))?
            .with_timezone(&Utc);
        let key = message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        Ok(Self {
            id,
            source: required("ce_source")?,
            event_type: required("ce_type")?,
            time,
            subject: get("ce_subject")?.unwrap_or_default(),
            data_schema: get("ce_dataschema")?.unwrap_or_default(),
            key,
            data: message.payload().unwrap_or_default().to_vec(),
            traceparent: get("traceparent")?,
        })
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_schema_is_a_uri_and_both_forms_name_the_message() {
        let schema = data_schema("taskmesh.events.v1.TaskCreated");
        assert_eq!(schema, "urn:taskmesh:proto:taskmesh.events.v1.TaskCreated");
        // RFC 3986 absolute-URI: a scheme (`urn`), a colon, a path.
        let (scheme, _) = schema.split_once(':').unwrap();
        assert!(scheme.chars().all(|c| c.is_ascii_alphabetic()), "{schema}");
        for form in [
            schema.as_str(),
            "type.googleapis.com/taskmesh.events.v1.TaskCreated",
        ] {
            assert_eq!(
                data_schema_message(form),
                Some("taskmesh.events.v1.TaskCreated")
            );
        }
        for other in [
            "",
            "urn:taskmesh:proto:",
            "https://example.com/taskmesh.events.v1.TaskCreated",
        ] {
            assert_eq!(data_schema_message(other), None, "{other:?}");
        }
    }
}
