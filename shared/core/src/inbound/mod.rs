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
//!   JSON.//!
//! # Layout
//! One file per wire shape, each reading its own into an [`Inbound`]; here, what they share
//! and what holds for all (a scheduled time, a key from the message id, no control characters).
//! - [`cloudevent`]: CloudEvents (Eventarc); [`pubsub`]: push envelopes and their messages;
//!   [`storage`]: Cloud Storage object resources and notifications; [`plain`]: plain JSON.

use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

use crate::event::{ConveyorEvent, ObjectRef};
use crate::names::{NameError, PipelineName};

mod cloudevent;
mod plain;
mod pubsub;
mod storage;

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
    /// The run date it asks for (`"date": "YYYY-MM-DD"`: `trigger --date`, `backfill`): one
    /// run per pipeline and date. `None`: the day of `at` (a schedule's in its time zone).
    pub date: Option<chrono::NaiveDate>,
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
pub(crate) const PUBSUB_KEY_PREFIX: &str = "pubsub-message:";

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
            Ok(event) => cloudevent::from_cloudevent(&event),
            Err(e) => (
                Delivery::default(),
                Err(InboundError(format!("malformed CloudEvent: {e}"))),
            ),
        };
    }
    if let Some((delivery, message)) = pubsub::fast_push(body) {
        return (
            pubsub::with_replay(delivery, &message),
            pubsub::from_pubsub_message(message),
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

pub(super) fn parse_json(value: Value) -> (Delivery, Result<Inbound, InboundError>) {
    if value.get("message").is_some_and(Value::is_object) {
        // Whatever is wrong inside, it came through Pub/Sub: the delivery is known so a
        // permanent error is acknowledged rather than redelivered forever.
        let pubsub = Delivery {
            pubsub: Some(PubsubDelivery::default()),
        };
        return match pubsub::push_envelope(&value) {
            Ok((delivery, message)) => (
                pubsub::with_replay(delivery, &message),
                pubsub::from_pubsub_message(message),
            ),
            Err(e) => (pubsub, Err(e)),
        };
    }
    (Delivery::default(), plain::plain(value))
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use http::HeaderValue;

    use super::*;

    fn json_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h
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
    fn a_start_names_its_run_date_and_a_conf_object_is_refused() {
        let (_, inbound) = parse_http(
            &json_headers(),
            br#"{"pipeline":"sales","date":"2026-11-20"}"#,
        );
        let Ok(Inbound::Start(s)) = inbound else {
            panic!("not a start: {inbound:?}")
        };
        assert_eq!(s.date, chrono::NaiveDate::from_ymd_opt(2026, 11, 20));
        let (_, inbound) = parse_http(&json_headers(), br#"{"pipeline":"sales","date":"20.11"}"#);
        assert!(inbound.is_err_and(|e| e.0.contains("YYYY-MM-DD")));
        let (_, inbound) = parse_http(
            &json_headers(),
            br#"{"pipeline":"sales","conf":{"region":"eu"}}"#,
        );
        assert!(inbound.is_err_and(|e| e.0.contains("`conf` is not supported")));
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
            ("ce-type", cloudevent::GCS_FINALIZED),
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
