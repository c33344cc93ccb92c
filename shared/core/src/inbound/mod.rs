//! Every wire shape a function accepts, parsed into one [`Inbound`].
//!
//! A function's single HTTP endpoint accepts:
//! - a CloudEvent in binary mode (`ce-*` headers) or structured mode
//!   (`application/cloudevents+json`), as Eventarc sends it: Conveyor's own events,
//!   `google.cloud.storage.object.v1.finalized`, and `google.cloud.pubsub.topic.v1.messagePublished`
//!   wrapping any of the Pub/Sub forms below;
//! - a Pub/Sub push envelope (camelCase or snake_case fields) whose message is a Conveyor event
//!   (CloudEvent attributes with a `ce-` prefix), a Cloud Storage notification (`eventType`,
//!   `payloadFormat=JSON_API_V1`) or one of the plain bodies;
//! - a plain JSON body, for Cloud Scheduler and `curl`: `{"bucket": .., "name": ..}` (an object
//!   arrived), `{"pipeline": ..}` (start a pipeline; a scheduler tick adds
//!   `"trigger": "schedule"`), `{"tick": true}` (poll everything in flight) or a Conveyor event's
//!   JSON.

use std::borrow::Cow;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use cloudevents::{AttributesReader, Data, Event};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

use crate::event::{ConveyorEvent, ObjectRef};
use crate::names::{BucketName, NameError, ObjectName, PipelineName};

/// The Eventarc type of a Cloud Storage object arrival.
pub const GCS_FINALIZED: &str = "google.cloud.storage.object.v1.finalized";
/// The Eventarc type of a Pub/Sub message.
pub const PUBSUB_PUBLISHED: &str = "google.cloud.pubsub.topic.v1.messagePublished";

/// What a request asks a step to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// One of Conveyor's own events.
    Event(Box<ConveyorEvent>),
    /// An object arrived (finalized) in a bucket.
    Object(ObjectRef),
    /// Start a pipeline (scheduler tick or by hand), or, without a pipeline, poll everything.
    Start(StartRequest),
    /// A well-formed message that needs no work (an object deleted, say).
    Ignored(String),
}

/// Why a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A Cloud Scheduler (or local) tick.
    Schedule,
    /// By hand.
    Manual,
}

/// A request to start a pipeline, or a tick.
#[derive(Debug, Clone, PartialEq)]
pub struct StartRequest {
    /// The pipeline; `None` for a bare tick.
    pub pipeline: Option<PipelineName>,
    /// Schedule or manual.
    pub origin: Origin,
    /// The tick's time (identifies the run: one run per pipeline per tick).
    pub at: DateTime<Utc>,
    /// A caller-chosen key making a manual start idempotent (`curl` retries).
    pub key: Option<String>,
}

/// How the request arrived; decides whether a permanent error is acknowledged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delivery {
    /// Set when the request was a Pub/Sub push.
    pub pubsub: Option<PubsubDelivery>,
}

/// Pub/Sub delivery facts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PubsubDelivery {
    /// The subscription.
    pub subscription: String,
    /// The message id.
    pub message_id: String,
    /// Real Pub/Sub's delivery attempt, when the subscription has a dead-letter policy.
    pub delivery_attempt: Option<u32>,
    /// The id of the message this one re-publishes (`conveyor replay` sets the
    /// [`REPLAY_OF_ATTRIBUTE`] attribute).
    pub replay_of: Option<String>,
}

/// The attribute `conveyor replay` puts on a re-published dead letter: the original's id.
pub const REPLAY_OF_ATTRIBUTE: &str = "conveyor-replay-of";

/// A request could not be understood. It is permanent: retrying the same bytes cannot help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InboundError(pub String);

impl From<NameError> for InboundError {
    fn from(e: NameError) -> Self {
        Self(e.to_string())
    }
}

/// A Pub/Sub push message. The emulator sends every field twice (camelCase and snake_case),
/// real Pub/Sub camelCase only; serde's aliases reject the duplicate, so fields are read by
/// hand from either spelling.
#[derive(Debug, PartialEq)]
struct PushMessage {
    data: Option<String>,
    attributes: std::collections::BTreeMap<String, String>,
}

/// A derived struct also reads a JSON array of its fields; this reads only an object.
struct ObjectOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Object<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Object(std::marker::PhantomData))
            .map(ObjectOnly)
    }
}

/// A push envelope in the shape Pub/Sub sends (its fields, strings where strings belong),
/// read without building a JSON tree: the common case. Any other body (numbers for ids,
/// repeated keys, unknown fields, other shapes) is `None` and is read by
/// [`push_envelope`], which gives the same result wherever this one gives one (a property
/// test checks it).
fn fast_push(body: &[u8]) -> Option<(Delivery, PushMessage)> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Envelope<'a> {
        #[serde(borrow)]
        message: ObjectOnly<Message<'a>>,
        #[serde(default, borrow)]
        subscription: Option<Cow<'a, str>>,
        #[serde(default)]
        delivery_attempt: Option<u32>,
        #[serde(default, rename = "delivery_attempt")]
        delivery_attempt_snake: Option<u32>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Message<'a> {
        #[serde(default, borrow)]
        data: Option<Cow<'a, str>>,
        #[serde(default)]
        attributes: Option<std::collections::BTreeMap<String, String>>,
        #[serde(default, borrow)]
        message_id: Option<Cow<'a, str>>,
        // Pub/Sub sends `message_id` and `publish_time` too (the same values).
        #[serde(default, borrow, rename = "message_id")]
        message_id_snake: Option<Cow<'a, str>>,
        // Known, not read.
        #[serde(default, rename = "publishTime")]
        _publish_time: Option<serde::de::IgnoredAny>,
        #[serde(default, rename = "publish_time")]
        _publish_time_snake: Option<serde::de::IgnoredAny>,
        #[serde(default, rename = "orderingKey")]
        _ordering_key: Option<serde::de::IgnoredAny>,
    }
    let ObjectOnly(envelope) = serde_json::from_slice::<ObjectOnly<Envelope<'_>>>(body).ok()?;
    let ObjectOnly(message) = envelope.message;
    let delivery = Delivery {
        pubsub: Some(PubsubDelivery {
            subscription: envelope
                .subscription
                .map(Cow::into_owned)
                .unwrap_or_default(),
            message_id: message
                .message_id
                .or(message.message_id_snake)
                .map(Cow::into_owned)
                .unwrap_or_default(),
            delivery_attempt: envelope
                .delivery_attempt
                .or(envelope.delivery_attempt_snake),
            replay_of: None,
        }),
    };
    Some((
        delivery,
        PushMessage {
            data: message.data.map(Cow::into_owned),
            attributes: message.attributes.unwrap_or_default(),
        },
    ))
}

/// The `size` of a Cloud Storage object resource (JSON_API_V1 notification data), read
/// without a JSON tree of the whole resource; as [`number_or_string`] reads it.
fn resource_size(data: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Size {
        #[serde(default)]
        size: Option<Value>,
    }
    match serde_json::from_slice::<ObjectOnly<Size>>(data) {
        Ok(ObjectOnly(s)) => number_or_string(s.size.as_ref()),
        // Not an object with one `size` (repeated keys, another shape): read it whole.
        Err(_) => serde_json::from_slice::<Value>(data)
            .ok()
            .and_then(|v| number_or_string(v.get("size"))),
    }
}

fn either<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    // A null camelCase field falls back to the snake_case one, as the fast path reads it.
    let set = |k: &str| v.get(k).filter(|x| !x.is_null());
    set(camel).or_else(|| set(snake))
}

fn push_envelope(value: &Value) -> Result<(Delivery, PushMessage), InboundError> {
    let bad = |what: &str| InboundError(format!("malformed Pub/Sub push envelope: {what}"));
    let message = value.get("message").ok_or_else(|| bad("no `message`"))?;
    let data = match message.get("data") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad("`message.data` must be a base64 string")),
    };
    let attributes = match message.get("attributes") {
        None | Some(Value::Null) => Default::default(),
        Some(a) => serde_json::from_value(a.clone())
            .map_err(|_| bad("`message.attributes` must map strings to strings"))?,
    };
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let delivery = Delivery {
        pubsub: Some(PubsubDelivery {
            subscription: text(value.get("subscription")),
            message_id: text(either(message, "messageId", "message_id")),
            delivery_attempt: either(value, "deliveryAttempt", "delivery_attempt")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok()),
            replay_of: None,
        }),
    };
    Ok((delivery, PushMessage { data, attributes }))
}

/// The header Cloud Scheduler puts on every attempt of a job's tick: the scheduled time, the
/// same on a retry a minute later.
pub const SCHEDULE_TIME_HEADER: &str = "x-cloudscheduler-scheduletime";

/// Parses a request's headers and body. The [`Delivery`] is known even when the body is bad.
///
/// A start request from Cloud Scheduler takes its time from [`SCHEDULE_TIME_HEADER`] (so a
/// retried tick is the same run), and values that would reach a command line or a query are
/// refused when they hold control characters (a NUL byte cannot be passed on at all).
pub fn parse_http(headers: &HeaderMap, body: &[u8]) -> (Delivery, Result<Inbound, InboundError>) {
    let (delivery, parsed) = parse_body(headers, body);
    let parsed = parsed
        .and_then(|inbound| scheduled_at(headers, inbound))
        .map(|inbound| {
            if headers.contains_key(SCHEDULE_TIME_HEADER) {
                inbound
            } else {
                keyed_by_message(&delivery, inbound)
            }
        })
        .and_then(|inbound| {
            refuse_control_characters(&inbound)?;
            Ok(inbound)
        });
    (delivery, parsed)
}

/// A Cloud Scheduler tick's run is its scheduled time, not the time it was received.
fn scheduled_at(headers: &HeaderMap, inbound: Inbound) -> Result<Inbound, InboundError> {
    let Inbound::Start(mut start) = inbound else {
        return Ok(inbound);
    };
    if let Some(v) = headers.get(SCHEDULE_TIME_HEADER) {
        let text = v
            .to_str()
            .map_err(|_| InboundError(format!("{SCHEDULE_TIME_HEADER} is not text")))?;
        start.at = DateTime::parse_from_rfc3339(text)
            .map_err(|e| InboundError(format!("{SCHEDULE_TIME_HEADER} is not RFC 3339: {e}")))?
            .with_timezone(&Utc);
        if start.pipeline.is_some() {
            start.origin = Origin::Schedule;
        }
    }
    Ok(Inbound::Start(start))
}

/// The prefix of the key a start request pushed through Pub/Sub is given from its message
/// id (see [`keyed_by_message`]).
pub const PUBSUB_KEY_PREFIX: &str = "pubsub-message:";

/// A start request pushed through Pub/Sub without a `key` is keyed by its message id: Pub/Sub
/// redelivers a message with the same id (a minute later, an hour later), so every delivery
/// names the same run instead of one run per minute received. A message re-published by
/// `conveyor replay` (attribute `conveyor-replay-of`) keeps the id of the message it replays,
/// so a dead-lettered start that did begin is adopted, not run twice. A caller's own `key`
/// wins; a start named by its scheduled time (Cloud Scheduler's header) keeps that name.
fn keyed_by_message(delivery: &Delivery, inbound: Inbound) -> Inbound {
    let Inbound::Start(mut start) = inbound else {
        return inbound;
    };
    if let Some(pubsub) = &delivery.pubsub {
        let id = pubsub
            .replay_of
            .as_deref()
            .unwrap_or(pubsub.message_id.as_str());
        if start.pipeline.is_some() && start.key.is_none() && !id.is_empty() {
            start.key = Some(format!("{PUBSUB_KEY_PREFIX}{id}"));
        }
    }
    Inbound::Start(start)
}

/// Whether `s` holds a control character other than tab and newlines.
fn has_control(s: &str) -> bool {
    s.chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}

/// Refuses values with control characters: they reach command lines (a NUL byte cannot be
/// passed to a process at all) and queries.
fn refuse_control_characters(inbound: &Inbound) -> Result<(), InboundError> {
    let bad = |what: &str, value: &str| {
        InboundError(format!(
            "{what} holds a control character ({:?}): refused",
            value.chars().take(80).collect::<String>()
        ))
    };
    match inbound {
        Inbound::Event(e) => {
            let d = &e.detail;
            for (k, v) in d.vars.iter().chain(d.row.iter()) {
                if has_control(k) || has_control(v) {
                    return Err(bad(&format!("detail value {k:?}"), v));
                }
            }
            for (what, v) in [("detail.table", &d.table), ("detail.job", &d.job)] {
                if let Some(v) = v
                    && has_control(v)
                {
                    return Err(bad(what, v));
                }
            }
            Ok(())
        }
        Inbound::Start(s) => match &s.key {
            Some(k) if has_control(k) => Err(bad("key", k)),
            _ => Ok(()),
        },
        Inbound::Object(_) | Inbound::Ignored(_) => Ok(()),
    }
}

fn parse_body(headers: &HeaderMap, body: &[u8]) -> (Delivery, Result<Inbound, InboundError>) {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if headers.contains_key("ce-specversion") || content_type.starts_with("application/cloudevents")
    {
        return match cloudevents::binding::http::to_event(headers, body.to_vec()) {
            Ok(event) => from_cloudevent(&event),
            Err(e) => (
                Delivery::default(),
                Err(InboundError(format!("malformed CloudEvent: {e}"))),
            ),
        };
    }
    if let Some((delivery, message)) = fast_push(body) {
        return (
            with_replay(delivery, &message),
            from_pubsub_message(message),
        );
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return (
                Delivery::default(),
                Err(InboundError(format!(
                    "body is not JSON ({e}); expected a CloudEvent, a Pub/Sub push envelope or a JSON request"
                ))),
            );
        }
    };
    parse_json(value)
}

fn from_cloudevent(event: &Event) -> (Delivery, Result<Inbound, InboundError>) {
    let data_json = || -> Result<Value, InboundError> {
        match event.data() {
            Some(Data::Json(v)) => Ok(v.clone()),
            Some(Data::Binary(b)) => serde_json::from_slice(b)
                .map_err(|e| InboundError(format!("event data is not JSON: {e}"))),
            Some(Data::String(s)) => serde_json::from_str(s)
                .map_err(|e| InboundError(format!("event data is not JSON: {e}"))),
            None => Err(InboundError(format!("{} event has no data", event.ty()))),
        }
    };
    match event.ty() {
        GCS_FINALIZED => (
            Delivery::default(),
            data_json()
                .and_then(|v| object_from_resource(&v))
                .map(Inbound::Object),
        ),
        PUBSUB_PUBLISHED => match data_json() {
            Ok(v) => parse_json(v),
            Err(e) => (Delivery::default(), Err(e)),
        },
        ty if ty.starts_with(crate::event::TYPE_PREFIX)
            || ty.starts_with(crate::event::LEGACY_TYPE_PREFIX) =>
        {
            (
                Delivery::default(),
                ConveyorEvent::from_cloudevent(event)
                    .map(|e| Inbound::Event(Box::new(e)))
                    .map_err(|e| InboundError(e.to_string())),
            )
        }
        ty if ty.starts_with("google.cloud.storage.object.v1.") => (
            Delivery::default(),
            Ok(Inbound::Ignored(format!("{ty} needs no work"))),
        ),
        ty => (
            Delivery::default(),
            Err(InboundError(format!("unsupported CloudEvent type {ty:?}"))),
        ),
    }
}

fn parse_json(value: Value) -> (Delivery, Result<Inbound, InboundError>) {
    if value.get("message").is_some_and(Value::is_object) {
        // Whatever is wrong inside, it came through Pub/Sub: the delivery is known so a
        // permanent error is acknowledged rather than redelivered forever.
        let pubsub = Delivery {
            pubsub: Some(PubsubDelivery::default()),
        };
        return match push_envelope(&value) {
            Ok((delivery, message)) => (
                with_replay(delivery, &message),
                from_pubsub_message(message),
            ),
            Err(e) => (pubsub, Err(e)),
        };
    }
    (Delivery::default(), plain(value))
}

/// `delivery` with the id of the message `message` replays, if it says one.
fn with_replay(mut delivery: Delivery, message: &PushMessage) -> Delivery {
    if let Some(pubsub) = &mut delivery.pubsub {
        pubsub.replay_of = message
            .attributes
            .get(REPLAY_OF_ATTRIBUTE)
            .filter(|id| !id.is_empty())
            .cloned();
    }
    delivery
}

fn from_pubsub_message(message: PushMessage) -> Result<Inbound, InboundError> {
    let attributes = message.attributes;
    let data = match message.data {
        Some(d) if !d.is_empty() => base64::engine::general_purpose::STANDARD
            .decode(d.trim())
            .map_err(|e| InboundError(format!("Pub/Sub message data is not base64: {e}")))?,
        _ => Vec::new(),
    };
    if let Some(kind) = attributes.get("ce-type") {
        let event: ConveyorEvent = serde_json::from_slice(&data).map_err(|e| {
            InboundError(format!("{kind} message data is not a Conveyor event: {e}"))
        })?;
        if crate::event::EventType::parse(kind) != Some(event.kind) {
            return Err(InboundError(format!(
                "attribute ce-type {kind} does not match data type {}",
                event.kind
            )));
        }
        return Ok(Inbound::Event(Box::new(event)));
    }
    if let Some(event_type) = attributes.get("eventType") {
        let format = attributes
            .get("payloadFormat")
            .map_or("NONE", String::as_str);
        return match event_type.as_str() {
            "OBJECT_FINALIZE" => {
                let bucket = attributes
                    .get("bucketId")
                    .ok_or_else(|| InboundError("GCS notification without bucketId".to_owned()))?;
                let name = attributes
                    .get("objectId")
                    .ok_or_else(|| InboundError("GCS notification without objectId".to_owned()))?;
                let size = if format == "JSON_API_V1" {
                    resource_size(&data)
                } else {
                    None
                };
                Ok(Inbound::Object(ObjectRef {
                    bucket: BucketName::parse(bucket)?,
                    name: ObjectName::parse(name)?,
                    generation: attributes
                        .get("objectGeneration")
                        .cloned()
                        .unwrap_or_default(),
                    size,
                }))
            }
            other => Ok(Inbound::Ignored(format!(
                "GCS {other} notification needs no work"
            ))),
        };
    }
    if data.is_empty() {
        return Err(InboundError(
            "Pub/Sub message has no data and no known attributes".to_owned(),
        ));
    }
    let value: Value = serde_json::from_slice(&data)
        .map_err(|e| InboundError(format!("Pub/Sub message data is not JSON: {e}")))?;
    plain(value)
}

fn number_or_string(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn object_from_resource(v: &Value) -> Result<ObjectRef, InboundError> {
    let field = |k: &str| v.get(k).and_then(Value::as_str);
    let bucket =
        field("bucket").ok_or_else(|| InboundError("object has no `bucket`".to_owned()))?;
    let name = field("name").ok_or_else(|| InboundError("object has no `name`".to_owned()))?;
    let generation = match v.get("generation") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    Ok(ObjectRef {
        bucket: BucketName::parse(bucket)?,
        name: ObjectName::parse(name)?,
        generation,
        size: number_or_string(v.get("size")),
    })
}

fn plain(value: Value) -> Result<Inbound, InboundError> {
    if !value.is_object() {
        return Err(InboundError("the JSON body must be an object".to_owned()));
    }
    if value.get("type").is_some() && value.get("run_id").is_some() {
        let event: ConveyorEvent = serde_json::from_value(value)
            .map_err(|e| InboundError(format!("not a Conveyor event: {e}")))?;
        return Ok(Inbound::Event(Box::new(event)));
    }
    if value.get("bucket").is_some() || value.get("name").is_some() {
        return object_from_resource(&value).map(Inbound::Object);
    }
    if value.get("pipeline").is_some() || value.get("tick").is_some() {
        let pipeline = match value.get("pipeline") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(PipelineName::parse(s)?),
            Some(_) => return Err(InboundError("`pipeline` must be a string".to_owned())),
        };
        let origin = match value.get("trigger").and_then(Value::as_str) {
            Some("schedule") => Origin::Schedule,
            None | Some("manual") => {
                if pipeline.is_none() {
                    Origin::Schedule
                } else {
                    Origin::Manual
                }
            }
            Some(other) => {
                return Err(InboundError(format!(
                    "`trigger` must be \"schedule\" or \"manual\", not {other:?}"
                )));
            }
        };
        let at = match value.get("time").and_then(Value::as_str) {
            Some(t) => DateTime::parse_from_rfc3339(t)
                .map_err(|e| InboundError(format!("`time` is not RFC 3339: {e}")))?
                .with_timezone(&Utc),
            None => Utc::now(),
        };
        let key = value.get("key").and_then(Value::as_str).map(str::to_owned);
        if let Some(k) = &key
            && (k.is_empty() || k.len() > 200)
        {
            return Err(InboundError("`key` must be 1 to 200 characters".to_owned()));
        }
        return Ok(Inbound::Start(StartRequest {
            pipeline,
            origin,
            at,
            key,
        }));
    }
    Err(InboundError(
        "unrecognized JSON body: expected {\"bucket\", \"name\"}, {\"pipeline\"}, {\"tick\": true}, a Conveyor event or a Pub/Sub push envelope".to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn json_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h
    }

    /// A JSON object's text from `pairs`, keys repeated as they come.
    fn object_text(pairs: &[(&str, String)]) -> String {
        let fields: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap()))
            .collect();
        format!("{{{}}}", fields.join(","))
    }

    /// Any JSON value's text, small.
    fn leaf() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_owned()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            (0u64..5_000_000_000).prop_map(|n| n.to_string()),
            (-1e3f64..1e3).prop_map(|f| format!("{f:?}")),
            "[a-zA-Z0-9+/= ]{0,8}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            Just(r#""\u00e9\n""#.to_owned()),
            Just("[]".to_owned()),
            Just(r#"["a"]"#.to_owned()),
            prop::collection::vec(("[a-z]{1,2}", "[a-z]{0,2}|null|1"), 0..3).prop_map(|kv| {
                let pairs: Vec<(&str, String)> = kv
                    .iter()
                    .map(|(k, v)| {
                        let v = if v == "null" || v == "1" {
                            v.clone()
                        } else {
                            serde_json::to_string(v).unwrap()
                        };
                        (k.as_str(), v)
                    })
                    .collect();
                object_text(&pairs)
            }),
        ]
    }

    /// Bodies shaped like push envelopes: Pub/Sub's keys and others, repeated or not, with
    /// values of every kind; sometimes not an object at all.
    fn envelope_like() -> impl Strategy<Value = String> {
        const MESSAGE_KEYS: &[&str] = &[
            "data",
            "attributes",
            "messageId",
            "message_id",
            "publishTime",
            "publish_time",
            "orderingKey",
            "other",
        ];
        const ENVELOPE_KEYS: &[&str] = &[
            "subscription",
            "deliveryAttempt",
            "delivery_attempt",
            "other",
        ];
        let message = prop::collection::vec((prop::sample::select(MESSAGE_KEYS), leaf()), 0..7)
            .prop_map(|kv| object_text(&kv));
        let message = prop_oneof![4 => message, 1 => leaf()];
        let rest = prop::collection::vec((prop::sample::select(ENVELOPE_KEYS), leaf()), 0..4);
        (message, rest, any::<bool>(), any::<bool>()).prop_map(|(m, rest, twice, array)| {
            let mut pairs: Vec<(&str, String)> = rest;
            pairs.insert(0, ("message", m.clone()));
            if twice {
                pairs.push(("message", m));
            }
            if array {
                format!(
                    "[{}]",
                    pairs
                        .iter()
                        .map(|(_, v)| v.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            } else {
                object_text(&pairs)
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        /// Wherever the fast path reads an envelope, the general one reads the same.
        #[test]
        fn the_fast_push_path_reads_envelopes_as_the_general_one_does(body in envelope_like()) {
            if let Some((delivery, message)) = fast_push(body.as_bytes()) {
                let value: Value = serde_json::from_str(&body).unwrap();
                prop_assert!(value.get("message").is_some_and(Value::is_object));
                let (d, m) = push_envelope(&value).unwrap();
                prop_assert_eq!(delivery, d);
                prop_assert_eq!(message, m);
            }
        }

        /// The size of an object resource, however it is written, as a JSON tree reads it.
        #[test]
        fn resource_size_reads_as_the_general_path(
            pairs in prop::collection::vec((prop::sample::select(&["size", "name", "x"][..]), leaf()), 0..4)
        ) {
            let text = object_text(&pairs);
            let general = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| number_or_string(v.get("size")));
            prop_assert_eq!(resource_size(text.as_bytes()), general);
        }
    }

    #[test]
    fn pubsubs_own_push_shape_takes_the_fast_path() {
        let body = r#"{"message":{"attributes":{"eventType":"OBJECT_FINALIZE"},"data":"e30=","messageId":"7","message_id":"7","publishTime":"2026-12-01T00:00:00Z","publish_time":"2026-12-01T00:00:00Z"},"subscription":"projects/p/subscriptions/s","deliveryAttempt":2}"#;
        let (delivery, message) = fast_push(body.as_bytes()).expect("the fast path reads it");
        let pubsub = delivery.pubsub.unwrap();
        assert_eq!(pubsub.message_id, "7");
        assert_eq!(pubsub.delivery_attempt, Some(2));
        assert_eq!(pubsub.subscription, "projects/p/subscriptions/s");
        assert_eq!(message.data.as_deref(), Some("e30="));
        assert_eq!(message.attributes["eventType"], "OBJECT_FINALIZE");
        // A repeated key, or one the envelope does not have, goes the general way.
        assert!(fast_push(br#"{"message":{},"message":{}}"#).is_none());
        assert!(fast_push(br#"{"message":{},"extra":1}"#).is_none());
        assert!(fast_push(br#"[{"data":"e30="}]"#).is_none());
    }

    #[test]
    fn a_null_camel_case_field_falls_back_to_the_snake_case_one_on_both_paths() {
        // Found by the property test below: the general path read `deliveryAttempt: null`
        // as no attempt, though `delivery_attempt` said 0.
        let body = r#"{"message":{},"delivery_attempt":0,"deliveryAttempt":null}"#;
        let value: Value = serde_json::from_str(body).unwrap();
        let (general, _) = push_envelope(&value).unwrap();
        assert_eq!(general.pubsub.unwrap().delivery_attempt, Some(0));
        if let Some((fast, _)) = fast_push(body.as_bytes()) {
            assert_eq!(fast.pubsub.unwrap().delivery_attempt, Some(0));
        }
    }

    #[test]
    fn pubsub_emulator_gcs_notification_is_an_object_arrival() {
        let data = base64::engine::general_purpose::STANDARD.encode(
            br#"{"name":"sales/2026-11-20/a.csv","bucket":"landing","size":"42","generation":"7"}"#,
        );
        let body = format!(
            r#"{{"subscription":"projects\/test\/subscriptions\/s","message":{{"data":"{data}","attributes":{{"eventType":"OBJECT_FINALIZE","bucketId":"landing","objectId":"sales/2026-11-20/a.csv","objectGeneration":"7","payloadFormat":"JSON_API_V1"}},"messageId":"2","message_id":"2","publishTime":"2026-11-21T00:00:00Z","publish_time":"2026-11-21T00:00:00Z"}}}}"#
        );
        let (delivery, inbound) = parse_http(&json_headers(), body.as_bytes());
        assert_eq!(delivery.pubsub.unwrap().message_id, "2");
        let Inbound::Object(o) = inbound.unwrap() else {
            panic!("not an object")
        };
        assert_eq!(o.name.as_str(), "sales/2026-11-20/a.csv");
        assert_eq!(o.generation, "7");
        assert_eq!(o.size, Some(42));
    }

    #[test]
    fn snake_case_envelopes_are_accepted() {
        let data = base64::engine::general_purpose::STANDARD.encode(br#"{"pipeline":"sales"}"#);
        let body =
            format!(r#"{{"subscription":"s","message":{{"data":"{data}","message_id":"9"}}}}"#);
        let (delivery, inbound) = parse_http(&json_headers(), body.as_bytes());
        assert_eq!(delivery.pubsub.unwrap().message_id, "9");
        assert!(matches!(inbound.unwrap(), Inbound::Start(s) if s.origin == Origin::Manual));
    }

    #[test]
    fn object_delete_notifications_are_ignored_not_rejected() {
        let body = r#"{"subscription":"s","message":{"attributes":{"eventType":"OBJECT_DELETE","bucketId":"b","objectId":"o"},"messageId":"1"}}"#;
        let (_, inbound) = parse_http(&json_headers(), body.as_bytes());
        assert!(matches!(inbound.unwrap(), Inbound::Ignored(_)));
    }

    #[test]
    fn binary_mode_eventarc_storage_event_is_an_object_arrival() {
        let mut h = json_headers();
        for (k, v) in [
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            (
                "ce-source",
                "//storage.googleapis.com/projects/_/buckets/landing",
            ),
            ("ce-type", GCS_FINALIZED),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
        let (_, inbound) = parse_http(
            &h,
            br#"{"bucket":"landing","name":"a/b.csv","generation":"3"}"#,
        );
        assert!(matches!(inbound.unwrap(), Inbound::Object(o) if o.generation == "3"));
    }

    #[test]
    fn path_traversal_in_an_object_name_is_rejected() {
        let (_, inbound) = parse_http(
            &json_headers(),
            br#"{"bucket":"landing","name":"../etc/passwd"}"#,
        );
        assert!(inbound.unwrap_err().0.contains("object name"));
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        let (d, inbound) = parse_http(&json_headers(), b"{not json");
        assert!(d.pubsub.is_none());
        assert!(inbound.unwrap_err().0.contains("not JSON"));
        let (_, inbound) = parse_http(&json_headers(), br#"{"hello":1}"#);
        assert!(inbound.unwrap_err().0.contains("unrecognized"));
    }

    #[test]
    fn a_bad_message_inside_an_envelope_still_reports_pubsub_delivery() {
        let body = r#"{"subscription":"s","message":{"data":"!!notbase64","messageId":"5"}}"#;
        let (d, inbound) = parse_http(&json_headers(), body.as_bytes());
        assert!(d.pubsub.is_some());
        assert!(inbound.is_err());
    }
}
