//! The embedded [`Lineage`] adapters: OpenLineage run events appended as JSON lines to
//! `lineage.jsonl` in the state directory, or POSTed to an OpenLineage HTTP endpoint
//! (`lineage: { url: … }`, e.g. Marquez's `/api/v1/lineage`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use conveyor_core::ports::{Lineage, PortError, RunEvent, TableNaming};

/// The file the embedded mode writes events to, in the state directory.
pub const LINEAGE_FILE: &str = "lineage.jsonl";

/// How long a POST to an OpenLineage endpoint may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The embedded warehouse's tables, as OpenLineage datasets: namespace `sqlite`, names
/// `dataset.table`.
fn sqlite_tables() -> TableNaming {
    TableNaming {
        namespace: "sqlite".to_owned(),
        project: None,
    }
}

/// Appends each event as one JSON line to a file.
#[derive(Debug)]
pub struct LineageFile {
    path: PathBuf,
    // Serialises appends, so two events' lines never interleave.
    lock: Mutex<()>,
}

impl LineageFile {
    /// Events appended to `path` (created when missing).
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            lock: Mutex::new(()),
        }
    }
}

#[async_trait]
impl Lineage for LineageFile {
    async fn emit(&self, event: &RunEvent) -> Result<(), PortError> {
        let mut line = serde_json::to_vec(event.json()).map_err(|e| {
            PortError::permanent(format!("cannot encode an OpenLineage event: {e}"))
        })?;
        line.push(b'\n');
        // A std Mutex: held only around one short write, never across an await.
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(&line))
            .map_err(|e| PortError::transient(format!("{}: {e}", self.path.display())))
    }

    fn tables(&self) -> TableNaming {
        sqlite_tables()
    }
}

/// POSTs each event to an OpenLineage HTTP endpoint.
#[derive(Debug, Clone)]
pub struct LineageHttp {
    url: String,
    http: reqwest::Client,
}

impl LineageHttp {
    /// Events POSTed to `url`, each call bounded by a 10-second timeout.
    pub fn new(url: String) -> Self {
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self { url, http }
    }
}

#[async_trait]
impl Lineage for LineageHttp {
    async fn emit(&self, event: &RunEvent) -> Result<(), PortError> {
        let resp = self
            .http
            .post(&self.url)
            .json(event.json())
            .send()
            .await
            .map_err(|e| {
                PortError::transient(format!("cannot POST to {}", self.url)).with_source(e)
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        let body: String = body.chars().take(300).collect();
        let msg = format!("{} answered {status}: {body}", self.url);
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            Err(PortError::transient(msg))
        } else {
            Err(PortError::permanent(msg))
        }
    }

    fn tables(&self) -> TableNaming {
        sqlite_tables()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_are_appended_one_json_line_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = LineageFile::new(dir.path().join(LINEAGE_FILE));
        for kind in ["START", "COMPLETE"] {
            let event = RunEvent::new(serde_json::json!({ "eventType": kind }));
            file.emit(&event).await.expect("emit");
        }
        let text = std::fs::read_to_string(dir.path().join(LINEAGE_FILE)).expect("read");
        let kinds: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("json")["eventType"].to_string()
            })
            .collect();
        assert_eq!(kinds, ["\"START\"", "\"COMPLETE\""]);
    }

    /// An OpenLineage endpoint on port 0 answering `status`, and what it received.
    async fn endpoint(status: u16) -> (String, std::sync::Arc<Mutex<Vec<serde_json::Value>>>) {
        let seen: std::sync::Arc<Mutex<Vec<serde_json::Value>>> = std::sync::Arc::default();
        let keep = seen.clone();
        let app = axum::Router::new().route(
            "/api/v1/lineage",
            axum::routing::post(move |axum::Json(v): axum::Json<serde_json::Value>| {
                let keep = keep.clone();
                async move {
                    keep.lock().expect("lock").push(v);
                    axum::http::StatusCode::from_u16(status).expect("status")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/api/v1/lineage",
            listener.local_addr().expect("addr")
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (url, seen)
    }

    #[tokio::test]
    async fn events_are_posted_to_the_endpoint_as_json() {
        let (url, seen) = endpoint(201).await;
        let event =
            RunEvent::new(serde_json::json!({ "eventType": "START", "run": { "runId": "r" } }));
        LineageHttp::new(url).emit(&event).await.expect("emit");
        assert_eq!(
            seen.lock().expect("lock").as_slice(),
            [event.json().clone()]
        );
    }

    #[tokio::test]
    async fn a_refusal_is_permanent_and_a_server_error_transient() {
        let event = RunEvent::new(serde_json::json!({ "eventType": "START" }));
        let (url, _) = endpoint(400).await;
        let e = LineageHttp::new(url)
            .emit(&event)
            .await
            .expect_err("refused");
        assert!(!e.is_transient(), "{e}");
        let (url, _) = endpoint(503).await;
        let e = LineageHttp::new(url)
            .emit(&event)
            .await
            .expect_err("unavailable");
        assert!(e.is_transient(), "{e}");
        let e = LineageHttp::new("http://127.0.0.1:1/api/v1/lineage".to_owned())
            .emit(&event)
            .await
            .expect_err("nothing listens");
        assert!(e.is_transient(), "{e}");
    }
}
