//! Provisioning on the emulators, in one place: the topics, subscriptions, buckets and
//! datasets the emulator tests create, the queries they read BigQuery with, and the function
//! binaries they run as processes.
//!
//! Every set-up call goes to the emulators directly (not through the recording proxies of
//! [`Emulators::wire`]): only what the adapters under test send is checked against Google's
//! API descriptions.

use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

use serde_json::{Value, json};

use crate::{Emulators, binary, start_listening};

/// The project every emulator test works in.
pub const PROJECT: &str = "test";

/// The JSON body of a set-up call that succeeded or found its resource there already (409).
///
/// # Panics
/// When the call failed otherwise.
pub async fn ok(resp: Result<reqwest::Response, reqwest::Error>, what: &str) -> Value {
    let resp = resp.unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert!(
        status.is_success() || status.as_u16() == 409,
        "{what}: {status} {body}"
    );
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

impl Emulators {
    /// The Pub/Sub emulator's URL of [`PROJECT`].
    pub fn pubsub_project(&self) -> String {
        format!("{}/v1/projects/{PROJECT}", self.pubsub)
    }

    /// Creates the Pub/Sub topic `name`.
    ///
    /// # Panics
    /// When the emulator refuses.
    pub async fn topic(&self, name: &str) {
        let url = format!("{}/topics/{name}", self.pubsub_project());
        ok(self.http.put(url).send().await, &format!("topic {name}")).await;
    }

    /// Creates the subscription `name` to `topic`, with the subscription's other `settings`
    /// (a JSON object: `pushConfig`, `ackDeadlineSeconds`, ...).
    ///
    /// # Panics
    /// When the emulator refuses.
    pub async fn subscription(&self, name: &str, topic: &str, settings: Value) {
        let mut body = json!({"topic": format!("projects/{PROJECT}/topics/{topic}")});
        if let (Some(body), Value::Object(settings)) = (body.as_object_mut(), settings) {
            body.extend(settings);
        }
        let url = format!("{}/subscriptions/{name}", self.pubsub_project());
        ok(
            self.http.put(url).json(&body).send().await,
            &format!("subscription {name}"),
        )
        .await;
    }

    /// Creates the subscription `name` pushing `topic` to `endpoint`, redelivering after 1 to
    /// 2 s (as the tests' deployments are set up).
    ///
    /// # Panics
    /// When the emulator refuses.
    pub async fn push_subscription(&self, name: &str, topic: &str, endpoint: &str) {
        let settings = json!({
            "pushConfig": {"pushEndpoint": endpoint},
            "retryPolicy": {"minimumBackoff": "1s", "maximumBackoff": "2s"},
        });
        self.subscription(name, topic, settings).await;
    }

    /// Creates the bucket `name` on fake-gcs-server.
    ///
    /// # Panics
    /// When fake-gcs-server refuses.
    pub async fn bucket(&self, name: &str) {
        let url = format!("{}/storage/v1/b?project={PROJECT}", self.gcs);
        ok(
            self.http
                .post(url)
                .json(&json!({"name": name}))
                .send()
                .await,
            &format!("bucket {name}"),
        )
        .await;
    }

    /// The BigQuery adapter on bqemulator, through the recording proxy, in [`PROJECT`].
    pub fn bigquery(&self) -> conveyor_gcp::BigQuery {
        conveyor_gcp::BigQuery::new(
            PROJECT,
            None,
            Some(&format!("{}/bigquery/v2", self.wire.bq)),
            &conveyor_gcp::GcpAuth::Anonymous,
        )
        .emulator(true)
    }

    /// Creates the dataset `name` on bqemulator.
    ///
    /// # Panics
    /// When bqemulator refuses.
    pub async fn dataset(&self, name: &str) {
        let url = format!("{}/bigquery/v2/projects/{PROJECT}/datasets", self.bq);
        let body = json!({"datasetReference": {"projectId": PROJECT, "datasetId": name}});
        ok(
            self.http.post(url).json(&body).send().await,
            &format!("dataset {name}"),
        )
        .await;
    }

    /// The rows `sql` (standard SQL) selects on bqemulator, each a list of cell values; none
    /// when the query fails (e.g. the table does not exist yet).
    ///
    /// # Panics
    /// When bqemulator cannot be reached.
    pub async fn query(&self, sql: &str) -> Vec<Vec<Value>> {
        let url = format!("{}/bigquery/v2/projects/{PROJECT}/queries", self.bq);
        let resp = ok(
            self.http
                .post(url)
                .json(&json!({"query": sql, "useLegacySql": false}))
                .send()
                .await,
            "query",
        )
        .await;
        if resp
            .get("errors")
            .is_some_and(|e| e.as_array().is_some_and(|a| !a.is_empty()))
        {
            return Vec::new();
        }
        resp["rows"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        r["f"]
                            .as_array()
                            .map(|f| f.iter().map(|c| c["v"].clone()).collect())
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The rows of `table` (`dataset.table`); `None` while it cannot be read.
    ///
    /// # Panics
    /// When bqemulator cannot be reached.
    pub async fn count(&self, table: &str) -> Option<u64> {
        let rows = self
            .query(&format!("SELECT COUNT(*) FROM `{PROJECT}.{table}`"))
            .await;
        let cell = rows.first()?.first()?;
        cell.as_str()
            .and_then(|s| s.parse().ok())
            .or_else(|| cell.as_u64())
    }

    /// Starts the function binary `conveyor-<step>` on the Google adapters, pointed at the
    /// emulators through the recording proxies, with `config` and the `extra` environment;
    /// its stderr goes to `log`. Returns once it answers `/healthz`.
    ///
    /// # Panics
    /// When it does not come up within 30 s on any of a few ports.
    pub async fn function(
        &self,
        step: &str,
        config: &Path,
        extra: &[(&str, &str)],
        log: &Path,
    ) -> Function {
        let bq = format!("{}/bigquery/v2", self.wire.bq);
        Function::start(step, log, |cmd| {
            cmd.env("CONVEYOR_CONFIG", config)
                .env("CONVEYOR_PROJECT", PROJECT)
                .env("CONVEYOR_EVENTS_TOPIC", "conveyor-events")
                .env("CONVEYOR_PUBSUB_ENDPOINT", &self.wire.pubsub)
                .env("CONVEYOR_GCS_ENDPOINT", &self.wire.gcs)
                .env("CONVEYOR_BIGQUERY_ENDPOINT", &bq)
                .env("CONVEYOR_ANONYMOUS", "true")
                .env("CONVEYOR_BIGQUERY_EMULATOR", "true")
                .env("CONVEYOR_LOG", "info")
                .envs(extra.iter().copied());
        })
        .await
    }
}

/// A function binary running as a process, killed on drop.
pub struct Function {
    _child: tokio::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Function {
    /// Starts `conveyor-<step>` with `PORT` and what `configure` sets, stderr to `log`, and
    /// waits until it answers `/healthz` (on another port when the one chosen was taken: see
    /// [`start_listening`]).
    ///
    /// # Panics
    /// When it does not come up.
    pub async fn start(step: &str, log: &Path, configure: impl Fn(&mut Command)) -> Self {
        let what = format!("conveyor-{step}");
        let (child, port) = start_listening(&what, |port| {
            let mut cmd = Command::new(binary(&what));
            configure(&mut cmd);
            cmd.env("PORT", port.to_string())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(log).expect("log file"))
                .kill_on_drop(true)
                .spawn()
                .expect("start function")
        })
        .await;
        Self {
            _child: child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}
