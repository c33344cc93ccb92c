//! Conveyor's operations view, read through the run-log port: run summaries (the default
//! view of `conveyor status`), the pipeline graph, and the web console that `conveyor dev`
//! serves at `/` and the `console` Cloud Run service serves behind IAP.
//!
//! # Layout
//! - [`runs`]: runs and their tasks, summarised from run-log rows.
//! - [`graph`]: the pipelines as nodes and edges, from the configuration (one function).
//! - `svg.rs`: the graph and a run's timeline drawn as inline SVG.
//! - `pages.rs`: the server-rendered HTML pages (maud), with a little JS.
//! - this file: [`Console`] and its [`router`].

pub mod graph;
pub mod links;
mod pages;
pub mod runs;
mod svg;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use conveyor_core::config::{Config, RunLogTarget};
use conveyor_core::names::TableRef;
use conveyor_core::ports::{PortError, RunLog, RunLogQuery, RunLogRow};
use serde::Deserialize;

pub use svg::colour;

/// How many run-log rows a page reads at most (the newest): enough for weeks of runs of a
/// few pipelines; older runs are reached by `conveyor status --since`.
pub const ROW_LIMIT: usize = 5_000;

/// What the console reads: the run log, its tables, and (when known) the pipeline file that
/// the graph is drawn from.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    config: Option<Arc<Config>>,
    run_log: Arc<dyn RunLog>,
    tables: Vec<TableRef>,
    title: String,
}

impl Console {
    /// A console over `run_log`, reading the tables `config` names (or `conveyor.run_log`
    /// without one).
    pub fn new(run_log: Arc<dyn RunLog>, config: Option<Arc<Config>>) -> Self {
        let tables = match &config {
            Some(c) => runs::run_log_tables(c),
            None => vec![RunLogTarget::default().table],
        };
        Self {
            inner: Arc::new(Inner {
                config,
                run_log,
                tables,
                title: "Conveyor".to_owned(),
            }),
        }
    }

    /// Reads `tables` instead.
    pub fn with_tables(self, tables: Vec<TableRef>) -> Self {
        self.map(|i| i.tables = tables)
    }

    /// Names the deployment in the page titles (`Conveyor — my-project`).
    pub fn with_title(self, title: impl Into<String>) -> Self {
        let title = title.into();
        self.map(|i| i.title = title)
    }

    fn map(self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Inner {
            config: self.inner.config.clone(),
            run_log: self.inner.run_log.clone(),
            tables: self.inner.tables.clone(),
            title: self.inner.title.clone(),
        };
        f(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    async fn rows(&self, query: RunLogQuery) -> Result<Vec<RunLogRow>, PageError> {
        runs::read_rows(self.inner.run_log.as_ref(), &self.inner.tables, &query)
            .await
            .map_err(PageError::RunLog)
    }
}

/// The console's pages: `/`, `/pipelines/{name}`, `/runs/{run_id}`, and JSON at
/// `/api/runs` and `/api/graph`. Read-only: every route is a GET.
pub fn router(console: Console) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/pipelines/{name}", get(pipeline))
        .route("/runs/{run_id}", get(run))
        .route("/api/runs", get(api_runs))
        .route("/api/graph", get(api_graph))
        .with_state(console)
}

/// A page that could not be made.
enum PageError {
    RunLog(PortError),
    NotFound(String),
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            Self::RunLog(e) => (
                if e.is_transient() {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                },
                pages::problem("The run log cannot be read", &e.to_string()),
            )
                .into_response(),
            Self::NotFound(what) => {
                (StatusCode::NOT_FOUND, pages::problem("Not found", &what)).into_response()
            }
        }
    }
}

async fn overview(State(c): State<Console>) -> Result<maud::Markup, PageError> {
    let rows = c
        .rows(RunLogQuery {
            limit: ROW_LIMIT,
            ..RunLogQuery::default()
        })
        .await?;
    let graph = c.inner.config.as_deref().map(graph::graph);
    Ok(pages::overview(
        &c.inner.title,
        graph.as_ref(),
        &runs::summarize(&rows),
        &c.inner.tables,
    ))
}

async fn pipeline(
    State(c): State<Console>,
    Path(name): Path<String>,
) -> Result<maud::Markup, PageError> {
    let rows = c
        .rows(RunLogQuery {
            pipeline: Some(name.clone()),
            limit: ROW_LIMIT,
            ..RunLogQuery::default()
        })
        .await?;
    let graph = c
        .inner
        .config
        .as_deref()
        .map(|cfg| graph::graph(cfg).only(&name))
        .filter(|g| !g.nodes.is_empty());
    if rows.is_empty() && graph.is_none() {
        return Err(PageError::NotFound(format!(
            "no pipeline {name:?} in the pipeline file, and no run of it in the run log"
        )));
    }
    let description = c
        .inner
        .config
        .as_deref()
        .and_then(|cfg| cfg.pipeline(&name))
        .and_then(|p| p.description.clone());
    Ok(pages::pipeline(
        &c.inner.title,
        &name,
        description.as_deref(),
        graph.as_ref(),
        &runs::summarize(&rows),
    ))
}

async fn run(
    State(c): State<Console>,
    Path(run_id): Path<String>,
) -> Result<maud::Markup, PageError> {
    let rows = c
        .rows(RunLogQuery {
            run_id: Some(run_id.clone()),
            ..RunLogQuery::default()
        })
        .await?;
    let Some(summary) = runs::summarize(&rows).into_iter().next() else {
        return Err(PageError::NotFound(format!(
            "no run {run_id:?} in the run log ({})",
            c.inner
                .tables
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let graph = match (&c.inner.config, &summary.pipeline) {
        (Some(cfg), Some(p)) => Some(graph::graph(cfg).only(p)).filter(|g| !g.nodes.is_empty()),
        _ => None,
    };
    let tasks = match (&c.inner.config, &summary.pipeline) {
        (Some(cfg), Some(p)) => runs::with_links(runs::tasks(&rows), cfg, p),
        _ => runs::tasks(&rows),
    };
    Ok(pages::run(
        &c.inner.title,
        &summary,
        &tasks,
        graph.as_ref(),
        &rows,
    ))
}

/// Query of `/api/runs`.
#[derive(Debug, Deserialize)]
struct RunsQuery {
    pipeline: Option<String>,
    /// Only runs for this run date (`YYYY-MM-DD`).
    date: Option<chrono::NaiveDate>,
    /// Only runs for this run date or later.
    from: Option<chrono::NaiveDate>,
    /// Only runs for this run date or earlier.
    to: Option<chrono::NaiveDate>,
    #[serde(default)]
    limit: Option<usize>,
}

async fn api_runs(
    State(c): State<Console>,
    Query(q): Query<RunsQuery>,
) -> Result<Json<Vec<runs::RunSummary>>, PageError> {
    let rows = c
        .rows(RunLogQuery {
            pipeline: q.pipeline,
            date_from: q.date.or(q.from),
            date_to: q.date.or(q.to),
            limit: ROW_LIMIT,
            ..RunLogQuery::default()
        })
        .await?;
    let mut runs = runs::summarize(&rows);
    runs.truncate(q.limit.unwrap_or(100));
    Ok(Json(runs))
}

async fn api_graph(State(c): State<Console>) -> Json<graph::Graph> {
    Json(
        c.inner
            .config
            .as_deref()
            .map(graph::graph)
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use chrono::Utc;
    use tower::ServiceExt;

    /// A run log in memory, answering run-id queries as the adapters do.
    struct Rows(Vec<RunLogRow>);

    #[async_trait::async_trait]
    impl RunLog for Rows {
        async fn record(&self, _: &TableRef, _: &RunLogRow) -> Result<(), PortError> {
            Ok(())
        }
        async fn rows(&self, _: &TableRef, q: &RunLogQuery) -> Result<Vec<RunLogRow>, PortError> {
            Ok(self
                .0
                .iter()
                .filter(|r| q.run_id.as_ref().is_none_or(|id| &r.run_id == id))
                .filter(|r| q.pipeline.is_none() || r.pipeline == q.pipeline)
                .filter(|r| {
                    let date = r.run_date.as_deref().unwrap_or("");
                    q.date_from.is_none_or(|f| date >= f.to_string().as_str())
                        && q.date_to.is_none_or(|t| date <= t.to_string().as_str())
                })
                .cloned()
                .collect())
        }
        async fn open_batches(
            &self,
            _: &TableRef,
            _: chrono::DateTime<Utc>,
        ) -> Result<Vec<RunLogRow>, PortError> {
            Ok(Vec::new())
        }
    }

    async fn get(console: &Console, path: &str) -> (StatusCode, String) {
        let resp = router(console.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 22)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_run_page_shows_a_failed_tasks_kept_stderr() {
        let row = RunLogRow {
            event_id: "e1".into(),
            run_id: "r1".into(),
            pipeline: Some("upload".into()),
            step: "poll".into(),
            job: Some("batch".into()),
            attempt: 1,
            status: "FAILED".into(),
            td_timestamp: Utc::now(),
            error: Some("exit status 1: sftp: Permission denied".into()),
            detail: r#"{"log":{"stderr":"sftp: Permission denied <x>\nlost connection","stdout":"uploading"}}"#.into(),
            run_date: Some("2026-11-20".into()),
            ..RunLogRow::default()
        };
        let console = Console::new(Arc::new(Rows(vec![row])), None);
        let (status, page) = get(&console, "/runs/r1").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            page.contains("Task logs") && page.contains("stderr (end)"),
            "{page}"
        );
        assert!(
            page.contains("sftp: Permission denied &lt;x&gt;\nlost connection"),
            "{page}"
        );
        assert!(page.contains("uploading"));
        assert!(
            page.contains("<dt>run date</dt><dd>2026-11-20</dd>"),
            "{page}"
        );
    }

    #[tokio::test]
    async fn api_runs_gives_each_runs_date_and_filters_by_it() {
        let rows: Vec<RunLogRow> = ["2026-11-19", "2026-11-20", "2026-11-21"]
            .iter()
            .enumerate()
            .map(|(i, d)| RunLogRow {
                event_id: format!("e{i}"),
                run_id: format!("r{i}"),
                pipeline: Some("sales".into()),
                step: "submit".into(),
                attempt: 1,
                status: "SUCCEEDED".into(),
                td_timestamp: Utc::now(),
                run_date: Some((*d).to_owned()),
                ..RunLogRow::default()
            })
            .collect();
        let console = Console::new(Arc::new(Rows(rows)), None);
        let dates = |body: &str| -> Vec<String> {
            let mut d: Vec<String> = body
                .split(r#""run_date":""#)
                .skip(1)
                .map(|rest| rest.chars().take(10).collect())
                .collect();
            d.sort();
            d
        };
        let (status, body) = get(&console, "/api/runs").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(dates(&body), ["2026-11-19", "2026-11-20", "2026-11-21"]);
        let (_, body) = get(&console, "/api/runs?date=2026-11-20").await;
        assert_eq!(dates(&body), ["2026-11-20"]);
        let (_, body) = get(&console, "/api/runs?from=2026-11-20").await;
        assert_eq!(dates(&body), ["2026-11-20", "2026-11-21"]);
        let (status, _) = get(&console, "/api/runs?date=20-11").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn a_run_page_escapes_what_the_run_log_holds_and_an_unknown_run_is_404() {
        let row = RunLogRow {
            event_id: "e1".into(),
            run_id: "r1".into(),
            pipeline: Some("sales".into()),
            step: "load".into(),
            attempt: 1,
            status: "FAILED".into(),
            td_timestamp: Utc::now(),
            error: Some("bad row <script>alert(1)</script>".into()),
            ..RunLogRow::default()
        };
        let console = Console::new(Arc::new(Rows(vec![row])), None);
        let (status, page) = get(&console, "/runs/r1").await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("bad row &lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!page.contains("<script>alert(1)"));
        assert!(page.contains(r#"<svg class="timeline""#));
        let (status, page) = get(&console, "/runs/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(page.contains("no run &quot;nope&quot; in the run log (conveyor.run_log)"));
        let (status, page) = get(&console, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            page.contains(r#"data-pipeline="sales""#),
            "a pipeline only the log knows"
        );
    }
}
