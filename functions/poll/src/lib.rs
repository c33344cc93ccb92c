//! The Conveyor **poll** function: a Cloud Run service (or AWS Lambda function) serving the
//! poll step over HTTP.
//!
//! # Layout
//! - `lib.rs`: [`router`], so tests call it without a socket.
//! - `main.rs`: configuration, telemetry, adapters, serve.

use axum::Router;
use conveyor::event::StepName;
use conveyor::steps::Context;

/// The step this function runs.
pub const STEP: StepName = StepName::Poll;

/// The function's router: `POST /` (every accepted wire shape) and `GET /healthz`.
pub fn router(ctx: Context) -> Router {
    conveyor::http::router(STEP, ctx)
}
