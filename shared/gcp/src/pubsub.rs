//! The event bus on a Pub/Sub topic, through Pub/Sub's REST API on the process's one HTTP
//! client and credentials source (no second HTTP/2 stack, no gRPC channel built at start-up).

use async_trait::async_trait;

use crate::GcpAuth;
use crate::dead_letter::PubSubRest;
use conveyor_core::event::ConveyorEvent;
use conveyor_core::ports::{EventBus, PortError};

/// Publishes each event to one topic: data is the event's JSON, attributes are its CloudEvent
/// attributes with the `ce-` prefix (the Pub/Sub protocol binding's binary mode), so push
/// subscriptions filter on `attributes.ce-type`. Each event is published on its own, at once
/// (`topics.publish`): steps wait for the publish.
#[derive(Clone)]
pub struct PubSubBus {
    rest: PubSubRest,
    topic: String,
    /// The topic's publish URL, parsed once.
    url: http::Uri,
}

impl PubSubBus {
    /// A bus on `topic` (`projects/P/topics/T`); `endpoint` overrides the service address
    /// (the emulator's `http://127.0.0.1:PORT`). Nothing is connected until the first publish.
    ///
    /// # Errors
    /// When `topic` is not a full topic name.
    pub fn new(topic: &str, endpoint: Option<&str>, auth: &GcpAuth) -> Result<Self, PortError> {
        let project = topic
            .strip_prefix("projects/")
            .and_then(|rest| rest.split_once("/topics/"))
            .map(|(project, _)| project)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                PortError::permanent(format!(
                    "{topic:?} is not a Pub/Sub topic name (projects/P/topics/T)"
                ))
            })?;
        let rest = PubSubRest::new(project, endpoint, auth.clone());
        Ok(Self {
            url: rest.publish_url(topic)?,
            rest,
            topic: topic.to_owned(),
        })
    }
}

/// An event's attribute pairs, written as the JSON map Pub/Sub takes.
struct Attributes<'a>(&'a [(&'static str, std::borrow::Cow<'a, str>)]);

impl serde::Serialize for Attributes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

#[async_trait]
impl EventBus for PubSubBus {
    async fn publish(&self, event: &ConveyorEvent) -> Result<(), PortError> {
        let data = serde_json::to_vec(event).map_err(|e| PortError::permanent(e.to_string()))?;
        // Every failure may pass (the step answers 503 and the delivery is retried), as with
        // the gRPC publisher this replaces.
        self.rest
            .publish_to(&self.url, &data, &Attributes(&event.attributes()))
            .await
            .map(|_| ())
            .map_err(|e| {
                PortError::transient(format!("publish {} to {}: {e}", event.kind, self.topic))
            })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Json;
    use axum::extract::{Path, State};
    use axum::routing::post;
    use base64::Engine as _;
    use conveyor_core::event::{Detail, EventType, Status, StepName};
    use conveyor_core::names::{PipelineName, RunId};
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn a_bus_needs_a_full_topic_name() {
        assert!(PubSubBus::new("events", None, &GcpAuth::Anonymous).is_err());
        assert!(PubSubBus::new("projects//topics/t", None, &GcpAuth::Anonymous).is_err());
        assert!(PubSubBus::new("projects/p/topics/events", None, &GcpAuth::Anonymous).is_ok());
    }

    type Seen = Arc<Mutex<Vec<(String, Value)>>>;

    /// A local server that answers `topics.publish` as Pub/Sub's REST API does, and keeps
    /// what it was sent; `status` is what it answers.
    async fn pubsub(status: u16) -> (String, Seen) {
        let seen: Seen = Arc::default();
        let app = axum::Router::new()
            .route(
                "/v1/projects/{project}/topics/{topic}",
                post(
                    move |State(seen): State<Seen>,
                          Path((project, topic)): Path<(String, String)>,
                          Json(body): Json<Value>| async move {
                        seen.lock()
                            .unwrap()
                            .push((format!("{project}/{topic}"), body));
                        (
                            axum::http::StatusCode::from_u16(status).unwrap(),
                            Json(json!({"messageIds": ["42"]})),
                        )
                    },
                ),
            )
            .with_state(seen.clone());
        let recording = conveyor_contract::Recording::new("pubsub fake", &["pubsub"], true);
        let app = conveyor_contract::record::layer(app, &recording);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), seen)
    }

    fn event() -> ConveyorEvent {
        ConveyorEvent::new(
            EventType::TableLoaded,
            RunId::derive(&PipelineName::parse("sales").unwrap(), &["a"]),
            None,
            StepName::Load,
            1,
            Status::Succeeded,
            Detail::default(),
        )
    }

    #[tokio::test]
    async fn an_event_is_published_as_json_data_with_ce_attributes() {
        let (endpoint, seen) = pubsub(200).await;
        let bus = PubSubBus::new(
            "projects/p/topics/events",
            Some(&endpoint),
            &GcpAuth::Anonymous,
        )
        .unwrap();
        let ev = event();
        bus.publish(&ev).await.unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, "p/events:publish");
        let message = &seen[0].1["messages"][0];
        let data = base64::engine::general_purpose::STANDARD
            .decode(message["data"].as_str().unwrap())
            .unwrap();
        let back: ConveyorEvent = serde_json::from_slice(&data).unwrap();
        assert_eq!(back.id(), ev.id());
        assert_eq!(message["attributes"]["ce-type"], ev.kind.as_str());
        assert_eq!(message["attributes"]["ce-id"], ev.id());
    }

    #[tokio::test]
    async fn a_refused_publish_may_pass_and_names_the_topic() {
        let (endpoint, _) = pubsub(503).await;
        let bus = PubSubBus::new(
            "projects/p/topics/events",
            Some(&endpoint),
            &GcpAuth::Anonymous,
        )
        .unwrap();
        match bus.publish(&event()).await {
            Err(PortError::Transient(m)) => assert!(m.contains("projects/p/topics/events"), "{m}"),
            other => panic!("expected a transient error, got {other:?}"),
        }
    }
}
