//! Property-based tests: the parsers of everything that comes from outside — HTTP bodies in
//! every wire shape (Pub/Sub push envelopes, CloudEvents in binary and structured mode, GCS
//! notifications, Cloud Scheduler bodies), pipeline files, and names — take arbitrary input
//! without panicking, and what they accept is consistent.
//!
//! CI runs a fixed number of cases per property (`PROPTEST_CASES`, default 256);
//! `scripts/fuzz-properties.sh` runs each for ten minutes.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine as _;
use conveyor_core::config::parse_str;
use conveyor_core::inbound::{Inbound, parse_http};
use conveyor_core::names::{BucketName, JobId, JobName, ObjectName, PipelineName, RunId, TableRef};
use proptest::prelude::*;
use serde_json::{Value, json};

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        Just(json!("dev.conveyor.table.loaded")),
        Just(json!("2026-11-20T00:00:00Z")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    ".{0,8}",
                    Just("bucket".to_owned()),
                    Just("name".to_owned()),
                    Just("generation".to_owned()),
                    Just("pipeline".to_owned()),
                    Just("tick".to_owned()),
                    Just("key".to_owned()),
                    Just("time".to_owned()),
                    Just("trigger".to_owned()),
                    Just("message".to_owned()),
                    Just("data".to_owned()),
                    Just("attributes".to_owned()),
                    Just("type".to_owned()),
                    Just("run_id".to_owned()),
                    Just("detail".to_owned()),
                    Just("vars".to_owned()),
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn headers(pairs: &[(&str, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.insert(name, value);
        }
    }
    h
}

/// What is accepted is checked: no control character reaches an event's values.
fn check(parsed: &Result<Inbound, conveyor_core::inbound::InboundError>) {
    if let Ok(Inbound::Event(e)) = parsed {
        for (k, v) in &e.detail.vars {
            assert!(
                !k.contains('\0') && !v.contains('\0'),
                "a NUL byte was accepted"
            );
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_body_with_any_content_type_is_answered_without_panicking(
        body in prop::collection::vec(any::<u8>(), 0..512),
        content_type in prop_oneof![
            Just("application/json".to_owned()),
            Just("application/cloudevents+json".to_owned()),
            Just("text/plain".to_owned()),
            ".{0,30}",
        ],
    ) {
        let (_, parsed) = parse_http(&headers(&[("content-type", content_type)]), &body);
        check(&parsed);
    }

    #[test]
    fn any_json_body_is_answered_without_panicking(value in json_value()) {
        let body = serde_json::to_vec(&value).unwrap_or_default();
        let (_, parsed) = parse_http(&headers(&[("content-type", "application/json".into())]), &body);
        check(&parsed);
    }

    #[test]
    fn pubsub_push_envelopes_with_any_data_and_attributes_are_answered(
        data in prop_oneof![
            json_value().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
            prop::collection::vec(any::<u8>(), 0..256),
        ],
        attributes in prop::collection::btree_map(
            prop_oneof![
                Just("ce-type".to_owned()),
                Just("ce-specversion".to_owned()),
                Just("eventType".to_owned()),
                Just("bucketId".to_owned()),
                Just("objectId".to_owned()),
                Just("objectGeneration".to_owned()),
                ".{0,12}",
            ],
            ".{0,40}",
            0..6,
        ),
        raw_data in ".{0,40}",
        valid_base64 in any::<bool>(),
        snake in any::<bool>(),
    ) {
        let data = if valid_base64 {
            base64::engine::general_purpose::STANDARD.encode(&data)
        } else {
            raw_data
        };
        let id = if snake { "message_id" } else { "messageId" };
        let envelope = json!({
            "subscription": "projects/p/subscriptions/s",
            "message": {"data": data, "attributes": attributes, id: "1"},
        });
        let body = serde_json::to_vec(&envelope).unwrap_or_default();
        let (_, parsed) = parse_http(&headers(&[("content-type", "application/json".into())]), &body);
        check(&parsed);
    }

    #[test]
    fn binary_and_structured_cloudevents_are_answered(
        ty in prop_oneof![
            Just("dev.conveyor.table.loaded".to_owned()),
            Just("dev.conveyor.batch.finished".to_owned()),
            Just("dev.conveyor.run.finished".to_owned()),
            Just("google.cloud.storage.object.v1.finalized".to_owned()),
            Just("google.cloud.pubsub.topic.v1.messagePublished".to_owned()),
            ".{0,30}",
        ],
        spec in prop_oneof![Just("1.0".to_owned()), ".{0,5}"],
        data in json_value(),
        structured in any::<bool>(),
    ) {
        let (h, body) = if structured {
            let event = json!({
                "specversion": spec, "type": ty, "id": "1", "source": "//test",
                "datacontenttype": "application/json", "data": data,
            });
            (
                headers(&[("content-type", "application/cloudevents+json".into())]),
                serde_json::to_vec(&event).unwrap_or_default(),
            )
        } else {
            (
                headers(&[
                    ("content-type", "application/json".into()),
                    ("ce-specversion", spec),
                    ("ce-type", ty),
                    ("ce-id", "1".into()),
                    ("ce-source", "//test".into()),
                ]),
                serde_json::to_vec(&data).unwrap_or_default(),
            )
        };
        let (_, parsed) = parse_http(&h, &body);
        check(&parsed);
    }

    #[test]
    fn gcs_notifications_and_scheduler_bodies_are_answered(
        bucket in ".{0,70}",
        name in ".{0,200}",
        generation in ".{0,20}",
        pipeline in ".{0,70}",
        trigger in prop_oneof![Just("schedule".to_owned()), Just("manual".to_owned()), ".{0,10}"],
        time in ".{0,30}",
        key in ".{0,210}",
        schedule_time in prop::option::of(".{0,30}"),
    ) {
        let object = json!({"bucket": bucket, "name": name, "generation": generation});
        let body = serde_json::to_vec(&object).unwrap_or_default();
        let (_, parsed) = parse_http(&headers(&[("content-type", "application/json".into())]), &body);
        check(&parsed);
        let start = json!({"pipeline": pipeline, "trigger": trigger, "time": time, "key": key});
        let body = serde_json::to_vec(&start).unwrap_or_default();
        let mut h = vec![("content-type", "application/json".to_owned())];
        if let Some(t) = schedule_time {
            h.push(("x-cloudscheduler-scheduletime", t));
        }
        let (_, parsed) = parse_http(&headers(&h), &body);
        check(&parsed);
    }

    #[test]
    fn pipeline_files_of_any_text_are_answered_without_panicking(text in ".{0,400}") {
        let _ = parse_str(&text, "prop.yaml");
    }

    #[test]
    fn mutated_example_files_are_answered_without_panicking(
        cuts in prop::collection::vec((any::<prop::sample::Index>(), 0usize..20, ".{0,12}"), 1..6),
    ) {
        let mut text = include_str!("../../../examples/data-fusion-dag.yaml").to_owned();
        for (at, len, insert) in cuts {
            let mut i = at.index(text.len().max(1));
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            let mut j = (i + len).min(text.len());
            while !text.is_char_boundary(j) {
                j -= 1;
            }
            text.replace_range(i..j, &insert);
        }
        let _ = parse_str(&text, "mutated.yaml");
    }

    #[test]
    fn names_that_parse_print_back_as_themselves(s in ".{0,80}") {
        if let Ok(b) = BucketName::parse(&s) { prop_assert_eq!(b.as_str(), s.as_str()); }
        if let Ok(o) = ObjectName::parse(&s) {
            prop_assert_eq!(o.as_str(), s.as_str());
            prop_assert!(!o.as_str().chars().any(char::is_control));
            prop_assert!(!o.as_str().split('/').any(|seg| seg == ".." || seg.is_empty()));
        }
        if let Ok(p) = PipelineName::parse(&s) { prop_assert_eq!(p.as_str(), s.as_str()); }
        if let Ok(j) = JobName::parse(&s) { prop_assert_eq!(j.as_str(), s.as_str()); }
        if let Ok(j) = JobId::parse(&s) { prop_assert_eq!(j.as_str(), s.as_str()); }
        if let Ok(r) = RunId::parse(&s) { prop_assert_eq!(r.as_str(), s.as_str()); }
        if let Ok(t) = TableRef::parse(&s) {
            prop_assert_eq!(TableRef::parse(&t.to_string()).ok(), Some(t.clone()));
            prop_assert!(t.table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        }
    }

    #[test]
    fn derived_ids_are_valid_ids(pipeline in "[a-z][a-z0-9_-]{0,62}", parts in prop::collection::vec(".{0,30}", 0..4), job in "[a-z][a-z0-9_-]{0,29}", attempt in 0u32..1000) {
        let p = PipelineName::parse(&pipeline).expect("pipeline");
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        let run = RunId::derive(&p, &refs);
        prop_assert!(RunId::parse(run.as_str()).is_ok());
        let id = JobId::derive(&job, &run, attempt);
        prop_assert!(JobId::parse(id.as_str()).is_ok(), "{}", id);
        prop_assert!(id.as_str().len() <= 63, "{}", id);
        prop_assert!(id.as_str().starts_with(|c: char| c.is_ascii_lowercase()));
    }
}
