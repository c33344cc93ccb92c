//! Pub/Sub push envelopes (camelCase or snake_case fields), read fast when they have
//! Pub/Sub's own shape, and their messages: a Conveyor event, a Cloud Storage notification or
//! a plain body.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use super::plain::plain;
use super::storage::from_notification;
use super::{Delivery, Inbound, InboundError, ObjectOnly, PubsubDelivery, REPLAY_OF_ATTRIBUTE};
use crate::event::ConveyorEvent;

/// A Pub/Sub push message. The emulator sends every field twice (camelCase and snake_case),
/// real Pub/Sub camelCase only; serde's aliases reject the duplicate, so fields are read by
/// hand from either spelling.
#[derive(Debug, PartialEq)]
pub(super) struct PushMessage {
    data: Option<String>,
    attributes: BTreeMap<String, String>,
}

/// A push envelope in the shape Pub/Sub sends (its fields, strings where strings belong),
/// read without building a JSON tree: the common case. Any other body (numbers for ids,
/// repeated keys, unknown fields, other shapes) is `None` and is read by
/// [`push_envelope`], which gives the same result wherever this one gives one (a property
/// test checks it).
pub(super) fn fast_push(body: &[u8]) -> Option<(Delivery, PushMessage)> {
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
        attributes: Option<BTreeMap<String, String>>,
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

fn either<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    // A null camelCase field falls back to the snake_case one, as the fast path reads it.
    let set = |k: &str| v.get(k).filter(|x| !x.is_null());
    set(camel).or_else(|| set(snake))
}

pub(super) fn push_envelope(value: &Value) -> Result<(Delivery, PushMessage), InboundError> {
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

/// `delivery` with the id of the message `message` replays, if it says one.
pub(super) fn with_replay(mut delivery: Delivery, message: &PushMessage) -> Delivery {
    if let Some(pubsub) = &mut delivery.pubsub {
        pubsub.replay_of = message
            .attributes
            .get(REPLAY_OF_ATTRIBUTE)
            .filter(|id| !id.is_empty())
            .cloned();
    }
    delivery
}

pub(super) fn from_pubsub_message(message: PushMessage) -> Result<Inbound, InboundError> {
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
        return from_notification(event_type, &attributes, &data);
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::storage::{number_or_string, resource_size};
    use super::*;

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
}
