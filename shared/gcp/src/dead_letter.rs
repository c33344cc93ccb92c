//! The dead-letter subscription, read and replayed through Pub/Sub's REST API: synchronous
//! pull (what is waiting now, without a streaming session), acknowledge, and publish.
//!
//! google-cloud-pubsub 1.7 offers only a streaming-pull subscriber, which waits for messages
//! instead of answering "what is in the queue now"; `conveyor replay` needs the latter.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{GcpAuth, http_client};
use conveyor_core::ports::PortError;

/// How long a pull waits for messages before it counts as "nothing more now", unless
/// [`PubSubRest::with_pull_wait`] says otherwise.
const PULL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

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

/// `topics.publish`'s body: one message.
#[derive(Serialize)]
struct PublishRequest<'a, A: ?Sized> {
    messages: [OutgoingMessage<'a, A>; 1],
}

#[derive(Serialize)]
struct OutgoingMessage<'a, A: ?Sized> {
    /// Base64.
    data: String,
    /// A map of strings.
    attributes: &'a A,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublishResponse {
    #[serde(default)]
    message_ids: Vec<String>,
}

/// Pub/Sub's REST API for one project.
#[derive(Clone)]
pub struct PubSubRest {
    endpoint: String,
    project: String,
    auth: GcpAuth,
    pull_wait: std::time::Duration,
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
            pull_wait: PULL_WAIT,
        }
    }

    /// How long [`PubSubRest::pull`] waits for messages (five seconds by default).
    #[must_use]
    pub fn with_pull_wait(mut self, wait: std::time::Duration) -> Self {
        self.pull_wait = wait;
        self
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
        url: impl Into<crate::rest::Target>,
        what: &str,
        body: &(impl Serialize + ?Sized),
    ) -> Result<bytes::Bytes, PortError> {
        let url = url.into();
        let resp = self
            .auth
            .send(what, || http_client().post(url.clone()).json(body))
            .await?;
        resp.bytes().await.map_err(|e| e.into_port(what))
    }

    /// Up to `max` messages waiting in `subscription` (fewer, or none, when it is empty).
    /// They stay leased for the subscription's ack deadline unless acknowledged or released.
    ///
    /// Pub/Sub may hold a pull open until a message arrives, and the deprecated
    /// `returnImmediately: true` may answer empty while messages wait; so the pull waits, for
    /// at most five seconds (or [`PubSubRest::with_pull_wait`]), and an answer that does not come in that time is "nothing more
    /// now". Callers pull again until a pull brings nothing.
    ///
    /// # Errors
    /// When Pub/Sub cannot be reached or refuses.
    pub async fn pull(
        &self,
        subscription: &str,
        max: usize,
    ) -> Result<Vec<PulledMessage>, PortError> {
        let sub = self.full_name("subscriptions", subscription);
        let path = format!("{sub}:pull");
        let req = http_client()
            .post(self.url(&path))
            .json(&json!({"maxMessages": max.clamp(1, 1000)}))
            .timeout(self.pull_wait);
        let resp = match self.auth.authorize(req).await?.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Ok(Vec::new()),
            Err(e) => return Err(e.into_port(&path)),
        };
        if !resp.status().is_success() {
            return Err(crate::rest::ApiError::read(resp).await.into_port(&path));
        }
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) if e.is_timeout() => return Ok(Vec::new()),
            Err(e) => return Err(e.into_port(&path)),
        };
        let resp: PullResponse = serde_json::from_slice(&body)
            .map_err(|e| PortError::permanent(format!("pull answer: {e}")))?;
        resp.received_messages
            .into_iter()
            .map(|r| {
                let data = match r.message.data {
                    Some(d) => base64::engine::general_purpose::STANDARD
                        .decode(d.trim())
                        .map_err(|e| PortError::permanent(format!("message data: {e}")))?,
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
        let path = format!("{sub}:acknowledge");
        self.post(self.url(&path), &path, &json!({"ackIds": ack_ids}))
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
        let path = format!("{sub}:modifyAckDeadline");
        self.post(
            self.url(&path),
            &path,
            &json!({"ackIds": ack_ids, "ackDeadlineSeconds": 0}),
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
        let url = self.publish_url(topic)?;
        self.publish_to(&url, data, attributes).await
    }

    /// The `topics.publish` URL of `topic`, for [`Self::publish_to`].
    ///
    /// # Errors
    /// When the endpoint and topic do not make a URL.
    pub fn publish_url(&self, topic: &str) -> Result<http::Uri, PortError> {
        let topic = self.full_name("topics", topic);
        self.url(&format!("{topic}:publish")).parse().map_err(|e| {
            PortError::permanent(format!(
                "{topic}: no Pub/Sub publish URL from {}: {e}",
                self.endpoint
            ))
        })
    }

    /// Publishes one message at `url` (see [`Self::publish_url`]) and returns its new message id.
    ///
    /// # Errors
    /// When Pub/Sub cannot be reached or refuses.
    pub async fn publish_to<A: Serialize + ?Sized>(
        &self,
        url: &http::Uri,
        data: &[u8],
        attributes: &A,
    ) -> Result<String, PortError> {
        let what = url.path().trim_start_matches("/v1/");
        let body = PublishRequest {
            messages: [OutgoingMessage {
                data: base64::engine::general_purpose::STANDARD.encode(data),
                attributes,
            }],
        };
        let answer = self.post(url.clone(), what, &body).await?;
        serde_json::from_slice::<PublishResponse>(&answer)
            .ok()
            .and_then(|r| r.message_ids.into_iter().next())
            .ok_or_else(|| PortError::permanent(format!("publish to {what}: no message id")))
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/{path}", self.endpoint)
    }
}
