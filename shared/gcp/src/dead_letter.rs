//! The dead-letter subscription, read and replayed through Pub/Sub's REST API: synchronous
//! pull (what is waiting now, without a streaming session), acknowledge, and publish.
//!
//! google-cloud-pubsub 1.7 offers only a streaming-pull subscriber, which waits for messages
//! instead of answering "what is in the queue now"; `conveyor replay` needs the latter.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use crate::{GcpAuth, http_client, status_error, transport_error};
use conveyor_core::ports::PortError;

/// One message pulled from a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledMessage {
    /// What acknowledges it.
    pub ack_id: String,
    /// Its message id.
    pub message_id: String,
    /// Its data.
    pub data: Vec<u8>,
    /// Its attributes (Pub/Sub adds `CloudPubSubDeadLetterSource*` when it dead-letters).
    pub attributes: BTreeMap<String, String>,
    /// When it was published.
    pub publish_time: String,
    /// How often this subscription delivered it, when Pub/Sub says.
    pub delivery_attempt: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PullResponse {
    #[serde(default)]
    received_messages: Vec<Received>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Received {
    ack_id: String,
    message: Message,
    #[serde(default)]
    delivery_attempt: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Message {
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    #[serde(default)]
    message_id: String,
    #[serde(default)]
    publish_time: String,
}

/// Pub/Sub's REST API for one project.
#[derive(Clone)]
pub struct PubSubRest {
    endpoint: String,
    project: String,
    auth: GcpAuth,
}

impl PubSubRest {
    /// A client for `project`; `endpoint` overrides `https://pubsub.googleapis.com` (the
    /// emulator's `http://127.0.0.1:PORT`).
    pub fn new(project: &str, endpoint: Option<&str>, auth: GcpAuth) -> Self {
        Self {
            endpoint: endpoint
                .unwrap_or("https://pubsub.googleapis.com")
                .trim_end_matches('/')
                .to_owned(),
            project: project.to_owned(),
            auth,
        }
    }

    /// `projects/P/KIND/NAME` for a short name, or the name as it is.
    pub fn full_name(&self, kind: &str, name: &str) -> String {
        if name.starts_with("projects/") {
            name.to_owned()
        } else {
            format!("projects/{}/{kind}/{name}", self.project)
        }
    }

    async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, PortError> {
        let url = format!("{}/v1/{path}", self.endpoint);
        let req = self
            .auth
            .authorize(http_client().post(&url).json(&body))
            .await?;
        let resp = req.send().await.map_err(|e| transport_error(path, &e))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| transport_error(path, &e))?;
        if !(200..300).contains(&status) {
            return Err(status_error(status, path, &text));
        }
        Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    /// Up to `max` messages waiting in `subscription` now (fewer, or none, when it is empty).
    /// They stay leased for the subscription's ack deadline unless acknowledged or released.
    ///
    /// # Errors
    /// When Pub/Sub cannot be reached or refuses.
    pub async fn pull(
        &self,
        subscription: &str,
        max: usize,
    ) -> Result<Vec<PulledMessage>, PortError> {
        let sub = self.full_name("subscriptions", subscription);
        let value = self
            .post(
                &format!("{sub}:pull"),
                json!({"maxMessages": max.clamp(1, 1000), "returnImmediately": true}),
            )
            .await?;
        let resp: PullResponse = serde_json::from_value(value)
            .map_err(|e| PortError::Permanent(format!("pull answer: {e}")))?;
        resp.received_messages
            .into_iter()
            .map(|r| {
                let data = match r.message.data {
                    Some(d) => base64::engine::general_purpose::STANDARD
                        .decode(d.trim())
                        .map_err(|e| PortError::Permanent(format!("message data: {e}")))?,
                    None => Vec::new(),
                };
                Ok(PulledMessage {
                    ack_id: r.ack_id,
                    message_id: r.message.message_id,
                    data,
                    attributes: r.message.attributes,
                    publish_time: r.message.publish_time,
                    delivery_attempt: r.delivery_attempt,
                })
            })
            .collect()
    }

    /// Acknowledges messages of `subscription`: they are not delivered again.
    ///
    /// # Errors
    /// When Pub/Sub cannot be reached or refuses.
    pub async fn acknowledge(
        &self,
        subscription: &str,
        ack_ids: &[String],
    ) -> Result<(), PortError> {
        if ack_ids.is_empty() {
            return Ok(());
        }
        let sub = self.full_name("subscriptions", subscription);
        self.post(&format!("{sub}:acknowledge"), json!({"ackIds": ack_ids}))
            .await
            .map(|_| ())
    }

    /// Gives messages back at once (ack deadline 0), so the next pull sees them again.
    ///
    /// # Errors
    /// When Pub/Sub cannot be reached or refuses.
    pub async fn release(&self, subscription: &str, ack_ids: &[String]) -> Result<(), PortError> {
        if ack_ids.is_empty() {
            return Ok(());
        }
        let sub = self.full_name("subscriptions", subscription);
        self.post(
            &format!("{sub}:modifyAckDeadline"),
            json!({"ackIds": ack_ids, "ackDeadlineSeconds": 0}),
        )
        .await
        .map(|_| ())
    }

    /// Publishes one message to `topic` and returns its new message id.
    ///
    /// # Errors
    /// When Pub/Sub cannot be reached or refuses.
    pub async fn publish(
        &self,
        topic: &str,
        data: &[u8],
        attributes: &BTreeMap<String, String>,
    ) -> Result<String, PortError> {
        let topic = self.full_name("topics", topic);
        let value = self
            .post(
                &format!("{topic}:publish"),
                json!({"messages": [{
                    "data": base64::engine::general_purpose::STANDARD.encode(data),
                    "attributes": attributes,
                }]}),
            )
            .await?;
        value["messageIds"][0]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| PortError::Permanent(format!("publish to {topic}: no message id")))
    }
}
