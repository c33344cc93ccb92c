//! Conveyor's operations view, read through the run-log port: run summaries (the default
//! view of `conveyor status`), the pipeline graph, and the web console that `conveyor dev`
//! serves at `/` and the `console` Cloud Run service serves behind IAP.
//!
//! Every page reads what it shows with a query ([`conveyor_core::run_page`]): a page of runs
//! by pipeline, state and run dates, after a cursor — never a fixed number of newest rows.
//!
//! # Layout
//! - [`runs`]: runs and their tasks, summarised from run-log rows.
//! - [`graph`]: the pipelines as nodes and edges, from the configuration (one function).
//! - [`lineage`]: a table's upstream and downstream across pipelines.
//! - [`actions`]: re-run and mark-success for operators, with a confirmation.
//! - `svg.rs`: the graph and a run's timeline drawn as inline SVG.
//! - `pages.rs`: the server-rendered HTML pages (maud), with a little JS.
//! - this file: [`Console`] and its [`router`].

pub mod actions;
pub mod graph;
pub mod lineage;
mod pages;
pub mod runs;
mod svg;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Redirect, Response};
use axum::routing::get;
use chrono::{DateTime, NaiveDate, Utc};
use conveyor_core::config::{Config, RunLogTarget};
use conveyor_core::names::TableRef;
use conveyor_core::ports::{PortError, RunLog, RunLogQuery, RunLogRow, RunStart, RunsQuery};
use conveyor_core::run_page::{self, RunsPage};
use serde::Deserialize;

pub use svg::colour;

/// The most runs one page of `/runs` or `/api/runs` shows.
pub const MAX_PAGE: usize = 500;

/// The most runs the grid by run date reads (the newest, when more ran in its dates).
pub const GRID_RUNS: usize = 5_000;

/// The run states of the status filter, as `RunState` names them.
pub const STATES: [&str; 9] = [
    "SUCCEEDED",
    "FAILED",
    "TIMED_OUT",
    "REJECTED",
    "MISSED",
    "RUNNING",
    "SUBMITTED",
    "RETRYING",
    "SKIPPED",
];

/// What the console reads: the run log, its tables, and (when known) the pipeline file that
/// the graph is drawn from.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    config: Option<Arc<Config>>,
    run_log: Arc<dyn RunLog>,
    tables: Vec<TableRef>,
    title: String,
    operators: Option<actions::Operators>,
    lineage_file: Option<std::path::PathBuf>,
    bigquery: Option<conveyor_core::links::BigQueryPlace>,
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
                operators: None,
                lineage_file: None,
                bigquery: None,
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

    /// Offers re-run and mark-success to `operators` (without: the console is read-only).
    pub fn with_operators(self, operators: actions::Operators) -> Self {
        self.map(|i| i.operators = Some(operators))
    }

    /// Links `sql` jobs to their BigQuery job page and audit-log lines: the deployment's
    /// BigQuery jobs run in `place` (the pipeline file does not say where).
    pub fn with_bigquery(self, place: conveyor_core::links::BigQueryPlace) -> Self {
        self.map(|i| i.bigquery = Some(place))
    }

    /// Reads OpenLineage events from this JSON-lines file too (the embedded `lineage.jsonl`)
    /// for the table pages.
    pub fn with_lineage_file(self, path: std::path::PathBuf) -> Self {
        self.map(|i| i.lineage_file = Some(path))
    }

    fn map(self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = (*self.inner).clone();
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

    async fn page(&self, query: &RunsQuery) -> Result<RunsPage, PageError> {
        run_page::page(self.inner.run_log.as_ref(), &self.inner.tables, query)
            .await
            .map_err(PageError::RunLog)
    }
}

/// The console's pages: `/`, `/runs` (filtered, paged), `/grid` (by run date),
/// `/pipelines/{name}`, `/runs/{run_id}`, `/tables/{table}` (lineage), the operators' actions
/// `/runs/{run_id}/rerun` and `/runs/{run_id}/mark-success` (GET: the confirmation, POST: the
/// action), and JSON at `/api/runs` and `/api/graph`.
pub fn router(console: Console) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/runs", get(runs_list))
        .route("/grid", get(grid))
        .route("/pipelines/{name}", get(pipeline))
        .route("/runs/{run_id}", get(run))
        .route("/runs/{run_id}/rerun", get(confirm_rerun).post(do_rerun))
        .route(
            "/runs/{run_id}/mark-success",
            get(confirm_mark_success).post(do_mark_success),
        )
        .route("/tables/{table}", get(table))
        .route("/api/runs", get(api_runs))
        .route("/api/graph", get(api_graph))
        .with_state(console)
}

/// A page that could not be made.
enum PageError {
    RunLog(PortError),
    NotFound(String),
    BadRequest(String),
    Unauthenticated(String),
    Forbidden(String),
    Conflict(String),
    Unavailable(String),
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (code, heading, what) = match self {
            Self::RunLog(e) => (
                if e.is_transient() {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                },
                "The run log cannot be read",
                e.to_string(),
            ),
            Self::NotFound(what) => (StatusCode::NOT_FOUND, "Not found", what),
            Self::BadRequest(what) => (StatusCode::BAD_REQUEST, "Bad request", what),
            Self::Unauthenticated(what) => (StatusCode::UNAUTHORIZED, "Who are you?", what),
            Self::Forbidden(what) => (StatusCode::FORBIDDEN, "Not allowed", what),
            Self::Conflict(what) => (StatusCode::CONFLICT, "Not done", what),
            Self::Unavailable(what) => (StatusCode::SERVICE_UNAVAILABLE, "Not done", what),
        };
        (code, pages::problem(heading, &what)).into_response()
    }
}

/// The filters of `/runs`, `/api/runs` and `/grid`, from the query string.
#[derive(Debug, Default, Deserialize)]
struct Filters {
    /// Only this pipeline's runs.
    #[serde(default)]
    pipeline: Option<String>,
    /// Only runs in this state (comma-separated: several).
    #[serde(default)]
    status: Option<String>,
    /// Only runs for this run date (`YYYY-MM-DD`).
    #[serde(default)]
    date: Option<String>,
    /// Only runs for this run date or later.
    #[serde(default)]
    from: Option<String>,
    /// Only runs for this run date or earlier.
    #[serde(default)]
    to: Option<String>,
    /// The cursor of the page: `<first row's time>~<run id>` of the run before it.
    #[serde(default)]
    before: Option<String>,
    /// How many runs.
    #[serde(default)]
    limit: Option<usize>,
    /// The grid's number of run dates.
    #[serde(default)]
    days: Option<u32>,
}

fn date(field: &str, v: &Option<String>) -> Result<Option<NaiveDate>, PageError> {
    match v.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map(Some)
            .map_err(|_| {
                PageError::BadRequest(format!("{field}={s:?} is not a date (YYYY-MM-DD)"))
            }),
    }
}

/// The cursor text of the page after `start`.
pub fn cursor(start: &RunStart) -> String {
    format!(
        "{}~{}",
        start
            .first
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        start.run_id
    )
}

fn parse_cursor(s: &str) -> Result<RunStart, PageError> {
    let bad = || PageError::BadRequest(format!("before={s:?} is not a page cursor"));
    let (at, run_id) = s.split_once('~').ok_or_else(bad)?;
    let first = DateTime::parse_from_rfc3339(at)
        .map_err(|_| bad())?
        .with_timezone(&Utc);
    Ok(RunStart {
        first,
        run_id: run_id.to_owned(),
    })
}

impl Filters {
    fn query(&self, default_limit: usize) -> Result<RunsQuery, PageError> {
        let statuses: Vec<String> = self
            .status
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(|s| s.trim().to_ascii_uppercase())
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(bad) = statuses.iter().find(|s| !STATES.contains(&s.as_str())) {
            return Err(PageError::BadRequest(format!(
                "status={bad:?} is not one of {}",
                STATES.join(", ")
            )));
        }
        let day = date("date", &self.date)?;
        Ok(RunsQuery {
            pipeline: self.pipeline.clone().filter(|p| !p.trim().is_empty()),
            statuses,
            date_from: day.or(date("from", &self.from)?),
            date_to: day.or(date("to", &self.to)?),
            before: match self.before.as_deref().filter(|s| !s.is_empty()) {
                Some(c) => Some(parse_cursor(c)?),
                None => None,
            },
            limit: self.limit.unwrap_or(default_limit).clamp(1, MAX_PAGE),
        })
    }

    /// The query string of these filters with `before` set to `next`.
    fn next_link(&self, path: &str, next: &RunStart) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("pipeline", &self.pipeline),
            ("status", &self.status),
            ("date", &self.date),
            ("from", &self.from),
            ("to", &self.to),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                q.append_pair(k, v);
            }
        }
        if let Some(l) = self.limit {
            q.append_pair("limit", &l.to_string());
        }
        q.append_pair("before", &cursor(next));
        format!("{path}?{}", q.finish())
    }
}

async fn overview(State(c): State<Console>) -> Result<maud::Markup, PageError> {
    let recent = c
        .page(&RunsQuery {
            limit: 25,
            ..RunsQuery::default()
        })
        .await?;
    let failures = c
        .page(&RunsQuery {
            statuses: ["FAILED", "TIMED_OUT", "REJECTED", "MISSED"]
                .map(str::to_owned)
                .to_vec(),
            limit: 10,
            ..RunsQuery::default()
        })
        .await?;
    let recent = runs::summarize_page(&recent);
    let failures = runs::summarize_page(&failures);
    let graph = c.inner.config.as_deref().map(graph::graph);
    // The file's pipelines, then those only the run log's recent runs name.
    let mut names: Vec<String> = graph
        .as_ref()
        .map(|g| g.pipelines().into_iter().map(str::to_owned).collect())
        .unwrap_or_default();
    for r in recent.iter().chain(&failures) {
        if let Some(p) = &r.pipeline
            && !names.contains(p)
        {
            names.push(p.clone());
        }
    }
    // A query or two per pipeline, all at once: on BigQuery each takes about a second.
    let rows = futures::future::try_join_all(names.iter().map(|name| {
        let c = &c;
        async move {
            let page = c
                .page(&RunsQuery {
                    pipeline: Some(name.clone()),
                    limit: 40,
                    ..RunsQuery::default()
                })
                .await?;
            Ok::<_, PageError>((name.clone(), runs::summarize_page(&page)))
        }
    }))
    .await?;
    let states = pipeline_states(&c, &names).await?;
    Ok(pages::overview(
        &c.inner.title,
        graph.as_ref(),
        &rows,
        &states,
        &recent,
        &failures,
        &c.inner.tables,
    ))
}

/// What each pipeline of `names` is doing: paused, inactive, running now, late, next run.
async fn pipeline_states(
    c: &Console,
    names: &[String],
) -> Result<Vec<runs::PipelineState>, PageError> {
    let now = Utc::now();
    // Running now: the open jobs of the last two days (what the poll tick follows).
    let mut open = Vec::new();
    for t in &c.inner.tables {
        match c
            .inner
            .run_log
            .open_batches(t, now - chrono::Duration::days(2))
            .await
        {
            Ok(rows) => open.extend(rows),
            Err(PortError::NotFound(_)) => {}
            Err(e) => return Err(PageError::RunLog(e)),
        }
    }
    futures::future::try_join_all(names.iter().map(|name| state_of(c, name, &open, now))).await
}

/// What pipeline `name` is doing, given the open jobs `open`.
async fn state_of(
    c: &Console,
    name: &str,
    open: &[RunLogRow],
    now: DateTime<Utc>,
) -> Result<runs::PipelineState, PageError> {
    let name = &name.to_owned();
    let pipeline = c.inner.config.as_deref().and_then(|cfg| cfg.pipeline(name));
    let mut state = runs::PipelineState {
        pipeline: name.clone(),
        active: pipeline.is_none_or(|p| p.active),
        ..runs::PipelineState::default()
    };
    let mut running: Vec<&str> = open
        .iter()
        .filter(|r| r.pipeline.as_deref() == Some(name))
        .map(|r| r.run_id.as_str())
        .collect();
    running.sort_unstable();
    running.dedup();
    state.running = running.len();
    // The pause rows are one run's (a run id from the pipeline's name): read by it, not
    // by every row of the pipeline.
    let pause_run = conveyor_core::names::PipelineName::parse(name)
        .ok()
        .map(|p| conveyor_core::steps::pause::pause_run_id(&p).to_string());
    let pauses = c
        .rows(RunLogQuery {
            run_id: pause_run,
            pipeline: Some(name.clone()),
            statuses: vec![
                conveyor_core::steps::pause::PAUSED.to_owned(),
                conveyor_core::steps::pause::RESUMED.to_owned(),
            ],
            limit: 1,
            ..RunLogQuery::default()
        })
        .await?;
    if let Some(p) = pauses
        .first()
        .filter(|p| p.status == conveyor_core::steps::pause::PAUSED)
    {
        let detail: serde_json::Value = serde_json::from_str(&p.detail).unwrap_or_default();
        state.paused = Some(runs::Paused {
            at: p.td_timestamp,
            by: detail["by"].as_str().unwrap_or("").to_owned(),
            reason: detail["reason"].as_str().unwrap_or("").to_owned(),
        });
    }
    if let Some(p) = pipeline {
        if let Some(s) = &p.trigger.schedule
            && state.active
            && state.paused.is_none()
        {
            state.next_run = conveyor_core::schedules::next_fire(&s.cron, &s.time_zone, now).ok();
        }
        if let Some(expect) = &p.expect {
            let today = conveyor_core::schedules::fire_date(now, &expect.time_zone);
            if let Some(deadline) = expect.deadline(today).filter(|d| *d <= now) {
                let done = c
                    .page(&RunsQuery {
                        pipeline: Some(name.clone()),
                        statuses: vec!["SUCCEEDED".to_owned()],
                        date_from: Some(today),
                        date_to: Some(today),
                        limit: 1,
                        ..RunsQuery::default()
                    })
                    .await?;
                if done.runs.is_empty() {
                    state.late = Some((today, deadline));
                }
            }
        }
    }
    Ok(state)
}

async fn runs_list(
    State(c): State<Console>,
    Query(f): Query<Filters>,
) -> Result<maud::Markup, PageError> {
    let query = f.query(50)?;
    let page = c.page(&query).await?;
    let next = page.next.as_ref().map(|n| f.next_link("/runs", n));
    let pipelines: Vec<String> = c
        .inner
        .config
        .as_deref()
        .map(|cfg| cfg.pipelines.iter().map(|p| p.name.to_string()).collect())
        .unwrap_or_default();
    Ok(pages::runs_list(
        &c.inner.title,
        &pages::FilterForm {
            pipelines,
            pipeline: query.pipeline.clone().unwrap_or_default(),
            status: f.status.clone().unwrap_or_default(),
            from: query.date_from.map(|d| d.to_string()).unwrap_or_default(),
            to: query.date_to.map(|d| d.to_string()).unwrap_or_default(),
            paged: query.before.is_some(),
        },
        &runs::summarize_page(&page),
        next.as_deref(),
    ))
}

async fn grid(
    State(c): State<Console>,
    Query(f): Query<Filters>,
) -> Result<maud::Markup, PageError> {
    let days = f.days.unwrap_or(14).clamp(1, 92);
    let to = date("to", &f.to)?.unwrap_or_else(|| Utc::now().date_naive());
    let from = to - chrono::Duration::days(i64::from(days) - 1);
    let pipeline = f.pipeline.clone().filter(|p| !p.is_empty());
    let page = c
        .page(&RunsQuery {
            pipeline: pipeline.clone(),
            date_from: Some(from),
            date_to: Some(to),
            limit: GRID_RUNS,
            ..RunsQuery::default()
        })
        .await?;
    let dates: Vec<NaiveDate> = from.iter_days().take(days as usize).collect();
    let graph = c.inner.config.as_deref().map(graph::graph);
    let grid = match &pipeline {
        Some(p) => runs::job_grid(&page, graph.as_ref().map(|g| g.only(p)).as_ref(), &dates),
        None => runs::pipeline_grid(&page, graph.as_ref(), &dates),
    };
    Ok(pages::date_grid(
        &c.inner.title,
        pipeline.as_deref(),
        &grid,
        &dates,
        page.next.is_some(),
    ))
}

async fn pipeline(
    State(c): State<Console>,
    Path(name): Path<String>,
) -> Result<maud::Markup, PageError> {
    let page = c
        .page(&RunsQuery {
            pipeline: Some(name.clone()),
            limit: 100,
            ..RunsQuery::default()
        })
        .await?;
    let runs = runs::summarize_page(&page);
    let graph = c
        .inner
        .config
        .as_deref()
        .map(|cfg| graph::graph(cfg).only(&name))
        .filter(|g| !g.nodes.is_empty());
    if runs.is_empty() && graph.is_none() {
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
    let states = pipeline_states(&c, std::slice::from_ref(&name)).await?;
    let tables = c
        .inner
        .config
        .as_deref()
        .map(|cfg| lineage::tables_of(cfg, &name))
        .unwrap_or_default();
    Ok(pages::pipeline(
        &c.inner.title,
        &name,
        description.as_deref(),
        graph.as_ref(),
        &runs,
        states.first(),
        &tables,
        page.next
            .as_ref()
            .map(|n| {
                Filters {
                    pipeline: Some(name.clone()),
                    ..Filters::default()
                }
                .next_link("/runs", n)
            })
            .as_deref(),
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
        (Some(cfg), Some(p)) => {
            runs::with_links(runs::tasks(&rows), cfg, p, c.inner.bigquery.as_ref())
        }
        _ => runs::tasks(&rows),
    };
    let jobs: Vec<String> = match (&c.inner.config, &summary.pipeline) {
        (Some(cfg), Some(p)) => cfg
            .pipeline(p)
            .map(|p| p.jobs.iter().map(|j| j.name.to_string()).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let actions = c.inner.operators.is_some() && !jobs.is_empty() && summary.finished.is_some();
    Ok(pages::run(
        &c.inner.title,
        &summary,
        &tasks,
        graph.as_ref(),
        &rows,
        if actions { &jobs } else { &[] },
    ))
}

/// The operators of the console, or 404 when it offers no actions.
fn operators(c: &Console) -> Result<&actions::Operators, PageError> {
    c.inner.operators.as_ref().ok_or_else(|| {
        PageError::NotFound("this console offers no actions (no operators are configured)".into())
    })
}

async fn operator(c: &Console, headers: &HeaderMap) -> Result<String, PageError> {
    operators(c)?.operator(headers).await.map_err(|r| match r {
        actions::Refusal::Unauthenticated(w) => PageError::Unauthenticated(w),
        actions::Refusal::Forbidden(w) => PageError::Forbidden(w),
        actions::Refusal::Unavailable(w) => PageError::Unavailable(w),
    })
}

/// The jobs of run `run_id`'s pipeline, and the run's summary.
async fn run_and_jobs(
    c: &Console,
    run_id: &str,
) -> Result<(runs::RunSummary, Vec<String>), PageError> {
    let rows = c
        .rows(RunLogQuery {
            run_id: Some(run_id.to_owned()),
            ..RunLogQuery::default()
        })
        .await?;
    let summary = runs::summarize(&rows)
        .into_iter()
        .next()
        .ok_or_else(|| PageError::NotFound(format!("no run {run_id:?} in the run log")))?;
    let jobs = match (&c.inner.config, &summary.pipeline) {
        (Some(cfg), Some(p)) => cfg
            .pipeline(p)
            .map(|p| p.jobs.iter().map(|j| j.name.to_string()).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    Ok((summary, jobs))
}

#[derive(Debug, Default, Deserialize)]
struct ActionForm {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    job: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    /// `yes` once the operator confirmed.
    #[serde(default)]
    confirm: Option<String>,
}

/// The confirmation page of `action` on a run (GET of the action's route).
async fn confirm(
    c: &Console,
    run_id: &str,
    headers: &HeaderMap,
    action: pages::Action,
    job: Option<&str>,
) -> Result<maud::Markup, PageError> {
    let who = operator(c, headers).await?;
    let (summary, jobs) = run_and_jobs(c, run_id).await?;
    Ok(pages::confirm(
        &c.inner.title,
        &summary,
        &jobs,
        action,
        job,
        &who,
    ))
}

async fn confirm_rerun(
    State(c): State<Console>,
    Path(run_id): Path<String>,
    headers: HeaderMap,
    Query(f): Query<ActionForm>,
) -> Result<maud::Markup, PageError> {
    let from = f.from.as_deref().or(f.job.as_deref());
    confirm(&c, &run_id, &headers, pages::Action::Rerun, from).await
}

async fn confirm_mark_success(
    State(c): State<Console>,
    Path(run_id): Path<String>,
    headers: HeaderMap,
    Query(f): Query<ActionForm>,
) -> Result<maud::Markup, PageError> {
    let job = f.job.as_deref();
    confirm(&c, &run_id, &headers, pages::Action::MarkSuccess, job).await
}

fn confirmed(f: &ActionForm) -> Result<(), PageError> {
    if f.confirm.as_deref() == Some("yes") {
        Ok(())
    } else {
        Err(PageError::BadRequest(
            "not confirmed: submit the confirmation form (confirm=yes)".into(),
        ))
    }
}

fn acted(r: Result<String, actions::ActError>, run_id: &str) -> Result<Response, PageError> {
    match r {
        Ok(_) => Ok(Redirect::to(&format!("/runs/{run_id}")).into_response()),
        Err(actions::ActError::Refused(w)) => Err(PageError::Conflict(w)),
        Err(actions::ActError::Failed(w)) => Err(PageError::Unavailable(w)),
    }
}

/// Does the action `f` asks for (`action` reads it), once the caller is known to be an
/// operator and has confirmed; then back to the run's page.
async fn act(
    c: &Console,
    headers: &HeaderMap,
    f: &ActionForm,
    action: impl FnOnce(&ActionForm) -> Result<actions::Action, PageError>,
) -> Result<Response, PageError> {
    let who = operator(c, headers).await?;
    confirmed(f)?;
    let action = action(f)?;
    let r = operators(c)?.act().act(&action, &who).await;
    acted(r, action.run())
}

async fn do_rerun(
    State(c): State<Console>,
    Path(run): Path<String>,
    headers: HeaderMap,
    Form(f): Form<ActionForm>,
) -> Result<Response, PageError> {
    act(&c, &headers, &f, |f| {
        let from = f.from.as_deref().filter(|s| !s.is_empty());
        Ok(actions::Action::Rerun {
            run,
            from: from.map(str::to_owned),
        })
    })
    .await
}

async fn do_mark_success(
    State(c): State<Console>,
    Path(run): Path<String>,
    headers: HeaderMap,
    Form(f): Form<ActionForm>,
) -> Result<Response, PageError> {
    act(&c, &headers, &f, |f| {
        let job = f
            .job
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| PageError::BadRequest("which job? (job=)".into()))?;
        let reason = f
            .reason
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| PageError::BadRequest("say why (reason=)".into()))?;
        Ok(actions::Action::MarkSuccess {
            run,
            job: job.to_owned(),
            reason: reason.to_owned(),
        })
    })
    .await
}

async fn table(
    State(c): State<Console>,
    Path(name): Path<String>,
) -> Result<maud::Markup, PageError> {
    let mut edges = c
        .inner
        .config
        .as_deref()
        .map(lineage::from_config)
        .unwrap_or_default();
    if let Some(file) = &c.inner.lineage_file {
        edges.extend(lineage::from_events_file(file));
    }
    let view = lineage::around(&edges, &name);
    if view.upstream.is_empty() && view.downstream.is_empty() && view.writers.is_empty() {
        return Err(PageError::NotFound(format!(
            "no pipeline reads or writes {name:?}"
        )));
    }
    Ok(pages::table(&c.inner.title, &name, &view))
}

async fn api_runs(
    State(c): State<Console>,
    Query(f): Query<Filters>,
) -> Result<Response, PageError> {
    let query = f.query(100)?;
    let page = c.page(&query).await?;
    let mut resp = Json(runs::summarize_page(&page)).into_response();
    if let Some(next) = &page.next
        && let Ok(v) = HeaderValue::from_str(&format!(
            "<{}>; rel=\"next\"",
            f.next_link("/api/runs", next)
        ))
    {
        resp.headers_mut().insert(header::LINK, v);
    }
    Ok(resp)
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

    /// Identifies the caller by a test header, as IAP's assertion would.
    struct ByHeader;

    #[async_trait::async_trait]
    impl actions::Identify for ByHeader {
        async fn caller(&self, headers: &HeaderMap) -> Result<String, actions::Unidentified> {
            headers
                .get("x-test-user")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| actions::Unidentified::Nobody("no identity".to_owned()))
        }
    }

    /// Records the actions asked for.
    #[derive(Default)]
    struct Recorded(std::sync::Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl actions::Act for Recorded {
        async fn act(
            &self,
            action: &actions::Action,
            by: &str,
        ) -> Result<String, actions::ActError> {
            let done = match action {
                actions::Action::Rerun { run, from } => {
                    format!("rerun {run} {:?} {by}", from.as_deref())
                }
                actions::Action::MarkSuccess { run, job, reason } => {
                    format!("mark {run} {job} {reason} {by}")
                }
            };
            self.0.lock().unwrap().push(done);
            Ok("ok".into())
        }
    }

    async fn send(
        console: &Console,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if method == "POST" {
            req = req.header("content-type", "application/x-www-form-urlencoded");
        }
        let resp = router(console.clone())
            .oneshot(req.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 22)
            .await
            .unwrap();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    fn failed_run() -> RunLogRow {
        RunLogRow {
            event_id: "e1".into(),
            run_id: "r1".into(),
            pipeline: Some("sales".into()),
            step: "poll".into(),
            job: Some("publish".into()),
            attempt: 1,
            status: "FAILED".into(),
            td_timestamp: Utc::now(),
            ..RunLogRow::default()
        }
    }

    #[tokio::test]
    async fn only_an_allowed_operator_reruns_and_marks_success_and_only_after_confirming() {
        let config = conveyor_core::config::parse_str(
            r#"
pipelines:
  - name: sales
    trigger: { manual: true }
    jobs:
      - { name: extract, engine: local, command: "true" }
      - { name: publish, engine: local, command: "true" }
"#,
            "t.yaml",
        )
        .unwrap();
        let recorded = Arc::new(Recorded::default());
        let console = Console::new(Arc::new(Rows(vec![failed_run()])), Some(Arc::new(config)))
            .with_operators(actions::Operators::new(
                Arc::new(ByHeader),
                vec!["Alice@Example.com".into(), "@ops.example.com".into()],
                recorded.clone(),
            ));
        let alice = [("x-test-user", "alice@example.com")];
        let bob = [("x-test-user", "bob@example.com")];
        // The run page offers the actions.
        let (_, _, page) = send(&console, "GET", "/runs/r1", &[], "").await;
        assert!(page.contains(r#"href="/runs/r1/rerun""#), "{page}");
        // Nobody identified: 401; not on the list: 403, and nothing is done.
        let (status, _, _) = send(&console, "GET", "/runs/r1/rerun", &[], "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _, _) = send(&console, "GET", "/runs/r1/rerun", &bob, "").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _, _) = send(&console, "POST", "/runs/r1/rerun", &bob, "confirm=yes").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // The confirmation page, then the action, recorded with who did it.
        let (status, _, page) =
            send(&console, "GET", "/runs/r1/rerun?from=publish", &alice, "").await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains(r#"name="confirm" value="yes""#), "{page}");
        assert!(
            page.contains(r#"<option value="publish" selected>"#),
            "{page}"
        );
        let (status, _, _) = send(&console, "POST", "/runs/r1/rerun", &alice, "from=publish").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "not confirmed");
        let posted_elsewhere = [
            ("x-test-user", "alice@example.com"),
            ("origin", "https://evil.example"),
            ("host", "console.example"),
        ];
        let (status, _, _) = send(
            &console,
            "POST",
            "/runs/r1/rerun",
            &posted_elsewhere,
            "confirm=yes",
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "a form from another site");
        assert!(recorded.0.lock().unwrap().is_empty(), "nothing done yet");
        let (status, headers, _) = send(
            &console,
            "POST",
            "/runs/r1/rerun",
            &alice,
            "confirm=yes&from=publish",
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers["location"], "/runs/r1");
        let carol = [("x-test-user", "carol@ops.example.com")];
        let (status, _, _) = send(
            &console,
            "POST",
            "/runs/r1/mark-success",
            &carol,
            "confirm=yes&job=publish",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "a reason is required");
        let (status, _, _) = send(
            &console,
            "POST",
            "/runs/r1/mark-success",
            &carol,
            "confirm=yes&job=publish&reason=loaded+by+hand",
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(
            *recorded.0.lock().unwrap(),
            [
                "rerun r1 Some(\"publish\") alice@example.com",
                "mark r1 publish loaded by hand carol@ops.example.com"
            ]
        );
        // A console without operators offers nothing.
        let read_only = Console::new(Arc::new(Rows(vec![failed_run()])), None);
        let (status, _, _) =
            send(&read_only, "POST", "/runs/r1/rerun", &alice, "confirm=yes").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_sql_job_links_to_its_bigquery_job_when_the_console_knows_where_jobs_run() {
        let config = Arc::new(
            conveyor_core::config::parse_str(
                r#"
pipelines:
  - name: sales
    trigger: { manual: true }
    jobs:
      - { name: report, engine: sql, query: "SELECT 1" }
"#,
                "t.yaml",
            )
            .unwrap(),
        );
        let row = RunLogRow {
            job: Some("report".into()),
            job_id: Some("cv-sql-sales-1-a1".into()),
            ..failed_run()
        };
        let plain = Console::new(Arc::new(Rows(vec![row.clone()])), Some(config.clone()));
        let (_, _, page) = send(&plain, "GET", "/runs/r1", &[], "").await;
        assert!(!page.contains("BigQuery job"), "no place, no link");
        let placed = plain.with_bigquery(conveyor_core::links::BigQueryPlace {
            project: "acme-prod".into(),
            location: "EU".into(),
        });
        let (_, _, page) = send(&placed, "GET", "/runs/r1", &[], "").await;
        assert!(
            page.contains("https://console.cloud.google.com/bigquery?project=acme-prod&amp;j=bq:EU:cv-sql-sales-1-a1&amp;page=queryresults"),
            "{page}"
        );
    }

    /// Groups with fixed members; `broken@example.com` cannot be checked.
    struct Directory;

    #[async_trait::async_trait]
    impl actions::Groups for Directory {
        async fn is_member(&self, group: &str, email: &str) -> Result<bool, String> {
            match group {
                "ops@example.com" => Ok(email == "dave@example.com"),
                "broken@example.com" => Err("the directory is down".to_owned()),
                _ => Ok(false),
            }
        }
    }

    #[tokio::test]
    async fn a_member_of_an_operator_group_may_act_and_an_unanswered_group_check_is_503() {
        let recorded = Arc::new(Recorded::default());
        let operators = |allowed: &[&str]| {
            actions::Operators::new(
                Arc::new(ByHeader),
                allowed.iter().map(|a| (*a).to_owned()).collect(),
                recorded.clone(),
            )
        };
        let console = |ops: actions::Operators| {
            Console::new(Arc::new(Rows(vec![failed_run()])), None).with_operators(ops)
        };
        let dave = [("x-test-user", "Dave@example.com")];
        let erin = [("x-test-user", "erin@example.com")];
        let grouped =
            console(operators(&["group:Ops@example.com"]).with_groups(Arc::new(Directory)));
        let (status, _, _) = send(&grouped, "POST", "/runs/r1/rerun", &dave, "confirm=yes").await;
        assert_eq!(status, StatusCode::SEE_OTHER, "a member of the group");
        let (status, _, _) = send(&grouped, "POST", "/runs/r1/rerun", &erin, "confirm=yes").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "not a member");
        // A group that cannot be checked now: 503, not a silent 403; an e-mail entry still
        // admits without asking.
        let broken = console(
            operators(&["group:broken@example.com", "erin@example.com"])
                .with_groups(Arc::new(Directory)),
        );
        let (status, _, _) = send(&broken, "POST", "/runs/r1/rerun", &dave, "confirm=yes").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let (status, _, _) = send(&broken, "POST", "/runs/r1/rerun", &erin, "confirm=yes").await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        // A group entry with no group check configured admits nobody and says why.
        let unchecked = console(operators(&["group:ops@example.com"]));
        let (status, _, _) = send(&unchecked, "POST", "/runs/r1/rerun", &dave, "confirm=yes").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            *recorded.0.lock().unwrap(),
            [
                "rerun r1 None Dave@example.com",
                "rerun r1 None erin@example.com"
            ]
        );
    }

    /// 120 runs of two pipelines over 4 run dates, every third failed.
    fn many_runs() -> Vec<RunLogRow> {
        let t0 = Utc::now() - chrono::Duration::hours(5);
        (0..120)
            .flat_map(|i: i64| {
                let run = format!("run{i:03}");
                let pipeline = if i % 2 == 0 { "sales" } else { "orders" };
                let date = format!("2026-11-{:02}", 18 + i % 4);
                let end = if i % 3 == 0 { "FAILED" } else { "SUCCEEDED" };
                [("RUNNING", 0), (end, 1)].map(|(status, k)| RunLogRow {
                    event_id: format!("{run}-{status}"),
                    run_id: run.clone(),
                    pipeline: Some(pipeline.into()),
                    step: "load".into(),
                    attempt: 1,
                    status: status.into(),
                    td_timestamp: t0 + chrono::Duration::seconds(i * 10 + k),
                    run_date: Some(date.clone()),
                    ..RunLogRow::default()
                })
            })
            .collect()
    }

    #[tokio::test]
    async fn runs_are_read_a_page_at_a_time_by_pipeline_status_and_run_date() {
        let console = Console::new(Arc::new(Rows(many_runs())), None);
        let ids = |body: &str| -> Vec<String> {
            body.split(r#""run_id":""#)
                .skip(1)
                .map(|rest| rest.split('"').next().unwrap().to_owned())
                .collect()
        };
        let (status, headers, body) = send(&console, "GET", "/api/runs?limit=50", &[], "").await;
        assert_eq!(status, StatusCode::OK);
        let first = ids(&body);
        assert_eq!(first.len(), 50);
        assert_eq!(first[0], "run119", "newest first");
        let link = headers["link"].to_str().unwrap().to_owned();
        let next = link
            .trim_start_matches('<')
            .split('>')
            .next()
            .unwrap()
            .to_owned();
        let (_, headers, body) = send(&console, "GET", &next, &[], "").await;
        assert_eq!(ids(&body).first().map(String::as_str), Some("run069"));
        let link = headers["link"].to_str().unwrap().to_owned();
        let last = link
            .trim_start_matches('<')
            .split('>')
            .next()
            .unwrap()
            .to_owned();
        let (_, headers, body) = send(&console, "GET", &last, &[], "").await;
        assert_eq!(ids(&body).len(), 20);
        assert!(headers.get("link").is_none(), "the last page");
        // Filters: a pipeline's failed runs of two run dates.
        let (_, _, body) = send(
            &console,
            "GET",
            "/api/runs?pipeline=sales&status=FAILED&from=2026-11-18&to=2026-11-19",
            &[],
            "",
        )
        .await;
        let got = ids(&body);
        let want: Vec<String> = (0..120)
            .rev()
            .filter(|i| i % 2 == 0 && i % 3 == 0 && i % 4 < 2)
            .map(|i| format!("run{i:03}"))
            .collect();
        assert_eq!(got, want);
        let (status, _, _) = send(&console, "GET", "/api/runs?status=BROKEN", &[], "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // The HTML page: the form, the filtered runs, the next page's link.
        let (status, _, page) =
            send(&console, "GET", "/runs?status=FAILED&limit=10", &[], "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            page.matches(r#"data-status="FAILED""#).count(),
            10,
            "{page}"
        );
        assert!(!page.contains(r#"data-status="SUCCEEDED""#));
        assert!(
            page.contains(r#"rel="next" href="/runs?status=FAILED&amp;limit=10&amp;before="#),
            "{page}"
        );
    }

    #[tokio::test]
    async fn the_grid_has_a_row_per_pipeline_and_a_column_per_run_date() {
        let console = Console::new(Arc::new(Rows(many_runs())), None);
        let (status, _, page) = send(&console, "GET", "/grid?to=2026-11-21&days=5", &[], "").await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains(r#"data-row="sales""#) && page.contains(r#"data-row="orders""#));
        // sales runs on the 18th and 20th, orders on the 19th and 21st; the 17th has none.
        for (row, date, has) in [
            ("sales", "2026-11-18", true),
            ("sales", "2026-11-19", false),
            ("orders", "2026-11-21", true),
            ("orders", "2026-11-17", false),
        ] {
            let cells = page.split(&format!(r#"data-row="{row}""#)).nth(1).unwrap();
            let cells = cells.split("</tr>").next().unwrap();
            assert_eq!(
                cells.contains(&format!(r#"data-date="{date}""#)),
                has,
                "{row} {date}: {cells}"
            );
        }
        // 30 runs a cell: the newest shown, the count written.
        assert!(page.contains("30 runs (the newest shown)"), "{page}");
        let (_, _, page) = send(
            &console,
            "GET",
            "/grid?pipeline=sales&to=2026-11-21&days=4",
            &[],
            "",
        )
        .await;
        assert!(
            page.contains(r#"data-row="load""#),
            "a row per task: {page}"
        );
    }

    #[tokio::test]
    async fn the_overview_shows_paused_inactive_late_and_next_run() {
        let config = conveyor_core::config::parse_str(
            r#"
pipelines:
  - name: hourly
    trigger: { schedule: { cron: "0 * * * *" } }
    batch: { engine: local, command: "true" }
  - name: daily
    trigger: { manual: true }
    expect: { by: "00:00", time_zone: Etc/UTC }
    batch: { engine: local, command: "true" }
  - name: paused
    trigger: { schedule: { cron: "0 * * * *" } }
    batch: { engine: local, command: "true" }
  - name: off
    active: false
    trigger: { manual: true }
    batch: { engine: local, command: "true" }
"#,
            "t.yaml",
        )
        .unwrap();
        let pause_run = conveyor_core::names::RunId::derive(
            &conveyor_core::names::PipelineName::parse("paused").unwrap(),
            &[conveyor_core::steps::pause::PAUSE_STEP],
        );
        let pause = RunLogRow {
            event_id: "p1".into(),
            run_id: pause_run.to_string(),
            pipeline: Some("paused".into()),
            step: "pause".into(),
            attempt: 1,
            status: "PAUSED".into(),
            td_timestamp: Utc::now(),
            detail: r#"{"by":"alice","reason":"source down"}"#.into(),
            ..RunLogRow::default()
        };
        // `daily` ran yesterday only: today's run date is past its 00:00 deadline.
        let yesterday = RunLogRow {
            event_id: "d1".into(),
            run_id: "daily-1".into(),
            pipeline: Some("daily".into()),
            step: "submit".into(),
            attempt: 1,
            status: "SUCCEEDED".into(),
            td_timestamp: Utc::now() - chrono::Duration::days(1),
            run_date: Some(
                (Utc::now() - chrono::Duration::days(1))
                    .date_naive()
                    .to_string(),
            ),
            ..RunLogRow::default()
        };
        let console = Console::new(
            Arc::new(Rows(vec![pause, yesterday])),
            Some(Arc::new(config)),
        );
        let (status, page) = get(&console, "/").await;
        assert_eq!(status, StatusCode::OK);
        let row = |p: &str| -> String {
            page.split(&format!(r#"data-pipeline="{p}""#))
                .nth(1)
                .unwrap()
                .split("</tr>")
                .next()
                .unwrap()
                .to_owned()
        };
        assert!(row("hourly").contains("next <time"), "{}", row("hourly"));
        assert!(!row("hourly").contains("paused"));
        assert!(
            row("paused").contains(r#"class="state paused""#),
            "{}",
            row("paused")
        );
        assert!(row("paused").contains("source down"));
        assert!(
            !row("paused").contains("next <time"),
            "a paused schedule fires nothing"
        );
        assert!(row("off").contains("inactive"), "{}", row("off"));
        let today = Utc::now().date_naive().to_string();
        assert!(
            row("daily").contains(&format!("late: {today}")),
            "{}",
            row("daily")
        );
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
