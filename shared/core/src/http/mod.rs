//! The HTTP surface every function serves: `POST /` takes any accepted wire shape (see
//! [`crate::inbound`]), `GET /healthz` answers `ok`.
//!
//! One place maps outcomes to status codes:
//! - done → 200 with a JSON summary;
//! - permanent problem (malformed, unknown pipeline, wrong function) → recorded in the run log
//!   as REJECTED, then 200 when it came through a Pub/Sub push (so it is acknowledged, not
//!   redelivered forever) or 400 with the reason for a direct call;
//! - transient problem (a backend down) → 503, so Pub/Sub redelivers with backoff. If even the
//!   rejection record cannot be published, that is transient too: nothing is lost.
//!
//! Serving it (a header-read timeout, a connection limit, graceful shutdown) is
//! `conveyor-service`'s.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::json;
use tracing::{error, info, warn};

use crate::event::StepName;
use crate::inbound::{Delivery, Inbound, parse_http};
use crate::steps::{self, Context, Outcome, StepError};

/// Largest accepted request body: a Pub/Sub message is at most 10 MB, base64 makes it 13.4.
pub const BODY_LIMIT: usize = 16 * 1024 * 1024;

#[derive(Clone)]
struct App {
    step: StepName,
    /// Shared: each request clones the state, and one count is cheaper than the ports'.
    ctx: Arc<Context>,
}

/// The router of the function running `step`. The load function also takes Pub/Sub
/// messages of message pipelines at `POST /messages/<pipeline>`.
pub fn router(step: StepName, ctx: Context) -> Router {
    router_at(step, ctx, "")
}

/// [`router`] as served under `prefix` (`/load` in `conveyor dev`): its refusals name the
/// paths as the caller must write them.
fn router_at(step: StepName, ctx: Context, prefix: &str) -> Router {
    let mut r = Router::new()
        .route("/", post(handle))
        .route("/healthz", get(|| async { "ok" }));
    if step == StepName::Load {
        r = r.route("/messages/{pipeline}", post(messages));
    }
    if step == StepName::Submit {
        r = r
            .route("/rerun", post(rerun))
            .route("/mark-success", post(mark_success));
    }
    let routes: Arc<str> = function_routes(step, prefix).into();
    let fallback_routes = routes.clone();
    let r = r
        .fallback(move || not_found(fallback_routes.clone()))
        .layer(axum::middleware::from_fn_with_state(routes, refusals))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    // The request span and the request's log line, when INFO is logged (the level is set
    // once, at start-up); otherwise no layer: nothing would be written.
    let r = if tracing::level_enabled!(tracing::Level::INFO) {
        r.layer(crate::trace::layer())
    } else {
        r
    };
    r.with_state(App {
        step,
        ctx: Arc::new(ctx),
    })
}

/// The paths a function serves under `prefix`, for refusals: `POST /load, POST
/// /load/messages/<pipeline> or GET /load/healthz`.
fn function_routes(step: StepName, prefix: &str) -> String {
    let root = if prefix.is_empty() { "/" } else { prefix };
    let messages = match step {
        StepName::Load => format!(", POST {prefix}/messages/<pipeline>"),
        StepName::Submit => format!(", POST {prefix}/rerun, POST {prefix}/mark-success"),
        _ => String::new(),
    };
    format!("POST {root}{messages} or GET {prefix}/healthz")
}

/// Most header bytes a request may carry (well under hyper's own limit, so the refusal is
/// ours and has the JSON shape).
pub const HEADER_LIMIT: usize = 32 * 1024;

/// Refuses requests whose headers are too large, and gives the refusals axum makes itself
/// the JSON shape of the rest (one layer for both: one per request less). `routes` names the
/// paths served, for a 404 or 405.
async fn refusals(
    State(routes): State<Arc<str>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if bytes > HEADER_LIMIT || req.headers().len() > 90 {
        return refusal(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "the request's headers are too large",
        );
    }
    json_refusals(next.run(req).await, &routes)
}

/// A path the server does not serve; `routes` says which it does.
async fn not_found(routes: Arc<str>) -> Response {
    refusal(StatusCode::NOT_FOUND, &format!("no such path: {routes}"))
}

/// One JSON shape for every refusal, including the ones the HTTP layer makes itself.
fn refusal(status: StatusCode, reason: &str) -> Response {
    (
        status,
        Json(json!({"status": "rejected", "reason": reason})),
    )
        .into_response()
}

/// Gives the refusals axum makes itself (a body over the limit, a wrong method, headers too
/// large) the same JSON shape as the rest; `routes` names the paths served.
fn json_refusals(resp: Response, routes: &str) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => refusal(
            status,
            &format!("the body is larger than {} MiB", BODY_LIMIT / (1024 * 1024)),
        ),
        StatusCode::METHOD_NOT_ALLOWED => refusal(status, &format!("method not allowed: {routes}")),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            refusal(status, "the request's headers are too large")
        }
        StatusCode::NOT_FOUND => refusal(status, &format!("no such path: {routes}")),
        _ => resp,
    }
}

/// Why a caller was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No credentials, or credentials that do not verify (401).
    Unauthenticated(String),
    /// A verified caller that may not call this function (403).
    Forbidden(String),
    /// The check could not be made now (the key server is unreachable): 503, retried.
    Unavailable(String),
}

/// Who may call a function, checked before a request's body is read (`GET /healthz` is
/// never checked: Cloud Run's probes carry no token).
#[async_trait::async_trait]
pub trait CallerCheck: Send + Sync {
    /// `Ok` when the request's caller may call.
    async fn check(&self, headers: &HeaderMap) -> Result<(), Denied>;
}

/// `router` with every request but `GET /healthz` checked by `check`.
pub fn with_caller_check(router: Router, check: Arc<dyn CallerCheck>) -> Router {
    router.layer(axum::middleware::from_fn_with_state(check, guard))
}

async fn guard(
    State(check): State<Arc<dyn CallerCheck>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if req.uri().path().ends_with("/healthz") {
        return next.run(req).await;
    }
    match check.check(req.headers()).await {
        Ok(()) => next.run(req).await,
        Err(Denied::Unauthenticated(why)) => {
            warn!(reason = %why, "caller refused: unauthenticated");
            refusal(StatusCode::UNAUTHORIZED, "unauthenticated")
        }
        Err(Denied::Forbidden(why)) => {
            warn!(reason = %why, "caller refused: forbidden");
            refusal(
                StatusCode::FORBIDDEN,
                "this caller may not call this function",
            )
        }
        Err(Denied::Unavailable(why)) => {
            error!(reason = %why, "caller check unavailable; asking for redelivery");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "reason": "a backend is unavailable; retry later"})),
            )
                .into_response()
        }
    }
}

/// The five functions' routers under `/stage`, `/load`, `/submit`, `/poll` and `/log`, for
/// the embedded `conveyor dev` server. Its refusals (404, 405) name the paths it serves.
pub fn combined_router(ctx: Context) -> Router {
    let mut r = Router::new().route("/healthz", get(|| async { "ok" }));
    for step in StepName::ALL {
        let prefix = format!("/{step}");
        r = r.nest(&prefix, router_at(step, ctx.clone(), &prefix));
    }
    let routes: Arc<str> = combined_routes().into();
    let fallback_routes = routes.clone();
    r.fallback(move || not_found(fallback_routes.clone()))
        .layer(axum::middleware::map_response(move |resp| {
            let routes = routes.clone();
            async move { json_refusals(resp, &routes) }
        }))
}

/// The paths of [`combined_router`], for its refusals.
fn combined_routes() -> String {
    let steps: Vec<String> = StepName::ALL.iter().map(|s| format!("/{s}")).collect();
    format!(
        "POST {} (each also GET <path>/healthz), POST /load/messages/<pipeline>, POST \
         /submit/rerun, POST /submit/mark-success, or GET /healthz",
        steps.join(", ")
    )
}

/// Every failure of a request, in one shape.
enum AppError {
    Rejected { reason: String, acknowledge: bool },
    Unavailable,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            Self::Rejected { reason, acknowledge: true } => {
                (StatusCode::OK, Json(json!({"status": "rejected", "reason": reason}))).into_response()
            }
            Self::Rejected { reason, acknowledge: false } => {
                (StatusCode::BAD_REQUEST, Json(json!({"status": "rejected", "reason": reason}))).into_response()
            }
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "reason": "a backend is unavailable; retry later"})),
            )
                .into_response(),
        }
    }
}

async fn handle(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Outcome>, AppError> {
    let (delivery, parsed) = parse_http(&headers, &body);
    let result = match parsed {
        // Subscriptions filter by type in production; the Pub/Sub emulator ignores filters.
        // An event meant for another step is acknowledged and left alone.
        Ok(Inbound::Event(e)) if !steps::subscriptions(app.step).contains(&e.kind) => {
            return Ok(Json(Outcome {
                summary: format!("{} is not for the {} function; ignored", e.kind, app.step),
                events: Vec::new(),
            }));
        }
        Ok(inbound) => {
            let trace_id = crate::trace::context(&headers).map(|c| c.trace_id);
            crate::trace::with_trace_id(trace_id, steps::handle(app.step, &app.ctx, inbound)).await
        }
        Err(e) => Err(StepError::Rejected(e.0)),
    };
    match result {
        Ok(outcome) => {
            info!(step = %app.step, summary = %outcome.summary, "handled");
            Ok(Json(outcome))
        }
        Err(StepError::Transient(reason)) => {
            error!(step = %app.step, error = %reason, "transient failure; asking for redelivery");
            Err(AppError::Unavailable)
        }
        Err(StepError::Rejected(reason)) => reject(&app, &delivery, &body, reason).await,
    }
}

/// A Pub/Sub push for a message pipeline (see [`steps::messages`]): rows written or
/// quarantined → 200; a refused request → recorded, then 200 for a push (acknowledged) or 400;
/// a backend down → 503.
async fn messages(
    State(app): State<App>,
    axum::extract::Path(pipeline): axum::extract::Path<String>,
    body: Bytes,
) -> Result<Json<Outcome>, AppError> {
    match steps::messages::handle(&app.ctx, &pipeline, &body).await {
        Ok(outcome) => {
            info!(step = %app.step, pipeline = %pipeline, summary = %outcome.summary, "handled");
            Ok(Json(outcome))
        }
        Err(StepError::Transient(reason)) => {
            error!(step = %app.step, pipeline = %pipeline, error = %reason, "transient failure; asking for redelivery");
            Err(AppError::Unavailable)
        }
        Err(StepError::Rejected(reason)) => {
            let pushed = serde_json::from_slice::<serde_json::Value>(&body)
                .is_ok_and(|v| v.get("message").is_some_and(serde_json::Value::is_object));
            let delivery = Delivery {
                pubsub: pushed.then(crate::inbound::PubsubDelivery::default),
            };
            reject(&app, &delivery, &body, reason).await
        }
    }
}

/// The body of `POST /rerun` (the submit function): `conveyor rerun RUN --remote`, or the
/// deployed console's re-run.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RerunBody {
    /// The ended run to re-run.
    run: String,
    /// The job to start again from (default: the run's first job that did not succeed).
    #[serde(default)]
    from: Option<String>,
    /// The operator who confirmed it (the console's caller), recorded in the run log
    /// (`vars.rerun_by`, started by `operator`). The function's caller check has admitted the
    /// service that sends it; the name is that service's word.
    #[serde(default)]
    by: Option<String>,
}

/// The body of `POST /mark-success` (the submit function): the deployed console's
/// mark-success.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkSuccessBody {
    /// The ended run.
    run: String,
    /// The job to record as succeeded.
    job: String,
    /// Why (required, not blank).
    reason: String,
    /// The operator who decided (`vars.marked_by`).
    by: String,
}

/// Longest operator name or reason accepted: they go into every row of the run.
const MAX_OPERATOR_TEXT: usize = 1_000;

/// `text` when it is not blank and not longer than [`MAX_OPERATOR_TEXT`].
fn operator_text(what: &str, text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err(format!("{what} is empty"));
    }
    if text.len() > MAX_OPERATOR_TEXT {
        return Err(format!(
            "{what} is longer than {MAX_OPERATOR_TEXT} bytes ({})",
            text.len()
        ));
    }
    Ok(())
}

fn parse_run(run: &str) -> Result<crate::names::RunId, String> {
    crate::names::RunId::parse(run).map_err(|e| format!("{run:?} is not a run id: {e}"))
}

/// `POST /rerun {"run": RUN, "from": JOB, "by": OPERATOR}`: re-runs an ended run from its
/// failure (or from `from`), as `conveyor rerun` does on this machine; `by`, when given, is
/// recorded as who started it.
async fn rerun(State(app): State<App>, body: Bytes) -> Result<Json<Outcome>, AppError> {
    let parsed = serde_json::from_slice::<RerunBody>(&body)
        .map_err(|e| format!("a re-run is {{\"run\": RUN, \"from\": JOB, \"by\": OPERATOR}}: {e}"))
        .and_then(|b| {
            if let Some(by) = &b.by {
                operator_text("by", by)?;
            }
            Ok((parse_run(&b.run)?, b.from, b.by))
        });
    let (run, from, by) = match parsed {
        Ok(p) => p,
        Err(reason) => return reject(&app, &Delivery::default(), &body, reason).await,
    };
    let result = steps::rerun_by(&app.ctx, &run, from.as_deref(), by.as_deref()).await;
    acted(&app, &body, &run, "re-run started", result).await
}

/// `POST /mark-success {"run", "job", "reason", "by"}`: records job `job` of an ended run as
/// succeeded by the operator `by`, as `conveyor mark-success` does on this machine.
async fn mark_success(State(app): State<App>, body: Bytes) -> Result<Json<Outcome>, AppError> {
    let parsed = serde_json::from_slice::<MarkSuccessBody>(&body)
        .map_err(|e| {
            format!(
                "a mark-success is {{\"run\": RUN, \"job\": JOB, \"reason\": WHY, \"by\": \
                 OPERATOR}}: {e}"
            )
        })
        .and_then(|b| {
            operator_text("reason", &b.reason)?;
            operator_text("by", &b.by)?;
            Ok((parse_run(&b.run)?, b))
        });
    let (run, b) = match parsed {
        Ok(p) => p,
        Err(reason) => return reject(&app, &Delivery::default(), &body, reason).await,
    };
    let result = steps::mark_success(&app.ctx, &run, &b.job, &b.reason, &b.by).await;
    acted(&app, &body, &run, "marked succeeded", result).await
}

/// The answer to an operator's action: the outcome, 503 when it failed for now, or the
/// recorded rejection.
async fn acted(
    app: &App,
    body: &[u8],
    run: &crate::names::RunId,
    done: &str,
    result: Result<Outcome, StepError>,
) -> Result<Json<Outcome>, AppError> {
    match result {
        Ok(outcome) => {
            info!(step = %app.step, run_id = %run, summary = %outcome.summary, "{done}");
            Ok(Json(outcome))
        }
        Err(StepError::Transient(reason)) => {
            error!(step = %app.step, run_id = %run, error = %reason, "operator action failed for now");
            Err(AppError::Unavailable)
        }
        Err(StepError::Rejected(reason)) => reject(app, &Delivery::default(), body, reason).await,
    }
}

async fn reject(
    app: &App,
    delivery: &Delivery,
    body: &[u8],
    reason: String,
) -> Result<Json<Outcome>, AppError> {
    warn!(step = %app.step, reason = %reason, pubsub = delivery.pubsub.is_some(), "request rejected");
    if let Err(e) = steps::record_rejection(&app.ctx, app.step, body, &reason).await {
        error!(step = %app.step, error = %e, "cannot record the rejection; asking for redelivery");
        return Err(AppError::Unavailable);
    }
    Err(AppError::Rejected {
        reason,
        acknowledge: delivery.pubsub.is_some(),
    })
}
