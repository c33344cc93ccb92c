//! `conveyor trigger` and `conveyor backfill`: start runs by hand, on the embedded runtime or
//! through a deployed function (`--remote`).
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use conveyor_core::config::{Config, Pipeline};
use conveyor_core::event::StepName;
use conveyor_core::inbound::{Inbound, Origin, StartRequest};
use conveyor_core::steps::{self, Context, Outcome, StageProgress};
use serde_json::json;

use crate::commands::{RunScope, Session, load_config};
use crate::progress::StageOutput;

/// A step's failure as the command reports it: what failed and why, and for a cause that may
/// pass (a backend busy or down, a lease another run holds) what to do — not the class
/// (`transient:`) a function uses to ask Pub/Sub for a redelivery, which a command line
/// does not do.
pub(crate) fn step_failed(what: &str, e: steps::StepError) -> anyhow::Error {
    match e {
        steps::StepError::Rejected(reason) => anyhow::anyhow!("{what} was refused: {reason}"),
        steps::StepError::Transient(reason) => {
            let reason = reason.strip_prefix("transient: ").unwrap_or(&reason);
            anyhow::anyhow!(
                "{what} did not complete: {reason}\n  This may pass (a backend busy or \
                 unreachable, a lease held by another run): fix or wait for it, then run the \
                 same command again — what already started is adopted, not started twice."
            )
        }
    }
}

/// Where a start goes: a deployed function instead of the embedded runtime.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RemoteArgs {
    /// Call the deployed function at this URL (the pipeline's `stage` service when it stages
    /// data, else `submit`) instead of running on this machine.
    #[arg(long)]
    pub(crate) remote: Option<String>,
    /// The identity token for --remote (default: `gcloud auth print-identity-token`).
    #[arg(long, env = "CONVEYOR_ID_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Run on this machine (the embedded runtime) even when CONVEYOR_PROJECT is set.
    #[arg(long, conflicts_with = "remote")]
    pub(crate) local: bool,
    /// The production project (from CONVEYOR_PROJECT): with it, a start names where it
    /// runs (--remote or --local).
    #[arg(long, env = "CONVEYOR_PROJECT", hide = true)]
    pub(crate) project: Option<String>,
    /// Give up waiting for the embedded runs after this long.
    #[arg(long, default_value = "5m", value_parser = crate::humantime_duration)]
    pub(crate) timeout: Duration,
}

impl RemoteArgs {
    /// A call of the deployed function at `url` with `token` (or gcloud's).
    fn to(url: &str, token: Option<String>, timeout: Duration) -> Self {
        Self {
            remote: Some(url.to_owned()),
            token,
            local: false,
            project: None,
            timeout,
        }
    }
}

/// `conveyor trigger`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TriggerArgs {
    /// The pipeline.
    pub(crate) pipeline: String,
    /// Makes the start idempotent: the same key is the same run (a repeated call adopts it).
    #[arg(long)]
    pub(crate) key: Option<String>,
    /// The run date (`{date}`, YYYY-MM-DD; default: today). Without --key, one run per
    /// pipeline and date: the same run a backfill of that date (or a daily schedule) starts.
    #[arg(long)]
    pub(crate) date: Option<NaiveDate>,
    #[command(flatten)]
    pub(crate) remote: RemoteArgs,
}

/// `conveyor backfill`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BackfillArgs {
    /// The pipeline.
    pub(crate) pipeline: String,
    /// The first date (YYYY-MM-DD).
    #[arg(long)]
    pub(crate) from: NaiveDate,
    /// The last date, included.
    #[arg(long)]
    pub(crate) to: NaiveDate,
    /// Re-run the dates whose run failed (from the failed job, keeping what succeeded)
    /// instead of only reporting them.
    #[arg(long)]
    pub(crate) rerun_failed: bool,
    #[command(flatten)]
    pub(crate) remote: RemoteArgs,
}

/// How a pipeline is started by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Its stage copies the source; arrivals then load.
    Stage,
    /// It starts on object arrivals: the objects of the date are announced again.
    Objects,
    /// Its batch is submitted.
    Submit,
}

fn plan(p: &Pipeline) -> anyhow::Result<Plan> {
    if p.stage.is_some() {
        Ok(Plan::Stage)
    } else if p.trigger.object.is_some() && p.load.is_some() {
        Ok(Plan::Objects)
    } else if !p.jobs.is_empty() {
        Ok(Plan::Submit)
    } else {
        anyhow::bail!(
            "pipeline {} has no stage, no object trigger with a load and no job: nothing to start",
            p.name
        )
    }
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// Starts `pipeline` once for `at`: returns what happened, for people, and how many objects
/// were staged or announced (the loads to wait for).
async fn start_one(
    ctx: &Context,
    pipeline: &Pipeline,
    at: DateTime<Utc>,
    date: Option<NaiveDate>,
    key: Option<String>,
) -> anyhow::Result<(String, usize)> {
    let start = StartRequest {
        pipeline: Some(pipeline.name.clone()),
        origin: Origin::Manual,
        at,
        key,
        date,
    };
    match plan(pipeline)? {
        Plan::Stage => {
            let mut outcome = Outcome::default();
            let mut output = StageOutput::new();
            let mut progress = |p: &StageProgress| output.report(p);
            let report =
                steps::stage_pipeline(ctx, pipeline, &start, false, &mut outcome, &mut progress)
                    .await
                    .map_err(|e| step_failed(&format!("stage {}", pipeline.name), e))?;
            let loads = if crate::commands::loads_from(&ctx.config, pipeline) {
                report.copied.len()
            } else {
                0
            };
            Ok((report.summary(), loads))
        }
        Plan::Submit => {
            let outcome = steps::handle(StepName::Submit, ctx, Inbound::Start(start))
                .await
                .map_err(|e| step_failed(&format!("start {}", pipeline.name), e))?;
            Ok((outcome.summary, 0))
        }
        Plan::Objects => {
            let Some(trigger) = &pipeline.trigger.object else {
                anyhow::bail!("pipeline {} has no object trigger", pipeline.name);
            };
            let Some(date) = date else {
                anyhow::bail!(
                    "pipeline {} starts when objects arrive: give --date to announce that \
                     date's objects again, or drop a file into the bucket {}",
                    pipeline.name,
                    trigger.bucket
                );
            };
            if !trigger.pattern.names().iter().any(|n| n == "date") {
                anyhow::bail!(
                    "the pattern {} of pipeline {} has no {{date}}: its objects cannot be told \
                     apart by date",
                    trigger.pattern.as_str(),
                    pipeline.name
                );
            }
            let wanted = date.format("%Y-%m-%d").to_string();
            let listed = ctx
                .ports
                .store
                .list(&trigger.bucket, trigger.pattern.literal_prefix())
                .await
                .map_err(|e| anyhow::anyhow!("cannot list {}: {e}", trigger.bucket))?;
            let mut n = 0;
            let mut notes = Vec::new();
            for meta in listed {
                let name = meta.object.name.to_string();
                let name = name.as_str();
                if name.starts_with(conveyor_core::INTERNAL_PREFIX) {
                    continue;
                }
                let Some(captures) = trigger.pattern.captures(name) else {
                    continue;
                };
                if captures.get("date") != Some(&wanted) {
                    continue;
                }
                n += 1;
                let outcome = steps::handle(StepName::Load, ctx, Inbound::Object(meta.object))
                    .await
                    .map_err(|e| step_failed(&format!("load {name}"), e))?;
                notes.push(outcome.summary);
            }
            if n == 0 {
                return Ok((format!("no object of {wanted} in {}", trigger.bucket), 0));
            }
            Ok((
                format!("{n} object(s) announced again: {}", notes.join("; ")),
                n,
            ))
        }
    }
}

/// An identity token: `--token`, else `gcloud auth print-identity-token`; none for a
/// loopback URL (`conveyor dev`).
fn identity_token(args: &RemoteArgs, url: &str) -> anyhow::Result<Option<String>> {
    if let Some(t) = &args.token {
        return Ok(Some(t.clone()));
    }
    if url.starts_with("http://127.0.0.1") || url.starts_with("http://localhost") {
        return Ok(None);
    }
    let out = std::process::Command::new("gcloud")
        .args(["auth", "print-identity-token"])
        .output()
        .context("no identity token: pass --token (or CONVEYOR_ID_TOKEN), or install the Google Cloud CLI (`gcloud auth print-identity-token`)")?;
    anyhow::ensure!(
        out.status.success(),
        "gcloud auth print-identity-token failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()))
}

/// POSTs a start request to the deployed function.
async fn start_remote(
    args: &RemoteArgs,
    url: &str,
    pipeline: &str,
    date: Option<NaiveDate>,
    key: Option<&str>,
) -> anyhow::Result<bool> {
    let mut body = json!({"pipeline": pipeline});
    if let Some(d) = date {
        body["time"] = json!(midnight(d).to_rfc3339());
        body["date"] = json!(d.to_string());
    }
    if let Some(k) = key {
        body["key"] = json!(k);
    }
    post_remote(args, url, &body).await
}

/// POSTs `body` to the deployed function at `url` with an identity token; prints its answer.
async fn post_remote(
    args: &RemoteArgs,
    url: &str,
    body: &serde_json::Value,
) -> anyhow::Result<bool> {
    let mut req = conveyor_gcp::http_client()
        .post(url)
        .timeout(Duration::from_secs(600))
        .json(body);
    if let Some(token) = identity_token(args, url)? {
        req = req.bearer_auth(token);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let summary = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            v.get("summary")
                .or_else(|| v.get("reason"))
                .and_then(|s| s.as_str().map(str::to_owned))
        })
        .unwrap_or(text);
    println!("  {status}: {summary}");
    Ok(status.is_success())
}

/// Prints the runs of `scope` (each with its run date) and returns whether every one of them
/// SUCCEEDED: a run that failed — also one adopted from before, which ran nothing now — or is
/// still open makes the command fail.
async fn report_runs(ctx: &Context, pipeline: &Pipeline, scope: &RunScope) -> bool {
    let config: &Config = &ctx.config;
    let table = config.run_log_table(pipeline);
    let query = scope.query();
    let rows = match ctx.ports.run_log.rows(&table, &query).await {
        Ok(r) => r,
        Err(e) => {
            println!("cannot read the run log: {e}");
            return false;
        }
    };
    let ours: std::collections::BTreeSet<&str> = rows
        .iter()
        .filter(|r| scope.holds(r) && scope.since.is_none_or(|s| r.last_modified_at >= s))
        .map(|r| r.run_id.as_str())
        .collect();
    let rows: Vec<_> = rows
        .iter()
        .filter(|r| ours.contains(r.run_id.as_str()))
        .cloned()
        .collect();
    let mut runs = conveyor_console::runs::summarize(&rows);
    runs.reverse();
    if runs.is_empty() {
        println!("no run recorded for it: nothing was started (nothing new to stage or load)");
        return true;
    }
    runs.sort_by(|a, b| a.run_date.cmp(&b.run_date).then(a.started.cmp(&b.started)));
    println!("{}", crate::status::runs_table(&runs));
    let failed: Vec<&conveyor_console::runs::RunSummary> =
        runs.iter().filter(|r| r.failed()).collect();
    let open = runs
        .iter()
        .filter(|r| !conveyor_core::run_state::is_terminal(&r.status))
        .count();
    if !failed.is_empty() {
        let dates: Vec<&str> = failed
            .iter()
            .filter_map(|r| r.run_date.as_deref())
            .collect();
        println!(
            "{} run(s) failed ({}): a run of a date is adopted, not run again; `conveyor rerun \
             RUN` (or `backfill --rerun-failed`) starts its failed job again",
            failed.len(),
            dates.join(", ")
        );
    }
    if open > 0 {
        println!("{open} run(s) not ended yet (see `conveyor status`)");
    }
    failed.is_empty() && open == 0
}

/// The runs of `scope` that ended in failure.
async fn failed_runs(ctx: &Context, pipeline: &Pipeline, scope: &RunScope) -> Vec<String> {
    let table = ctx.config.run_log_table(pipeline);
    let query = scope.query();
    let Ok(rows) = ctx.ports.run_log.rows(&table, &query).await else {
        return Vec::new();
    };
    let rows: Vec<_> = rows.into_iter().filter(|r| scope.holds(r)).collect();
    conveyor_core::run_state::RunState::by_run(&rows)
        .into_iter()
        .filter(|(_, s)| s.failed())
        .map(|(run, _)| run)
        .collect()
}

/// Starts the re-run of `run` (from `from`, else its failed job).
async fn rerun_one(ctx: &Context, run: &str, from: Option<&str>) -> anyhow::Result<String> {
    let run_id = conveyor_core::names::RunId::parse(run)
        .map_err(|e| anyhow::anyhow!("{run:?} is not a run id: {e}"))?;
    let outcome = steps::rerun(ctx, &run_id, from)
        .await
        .map_err(|e| step_failed(&format!("re-run {run}"), e))?;
    Ok(outcome.summary)
}

/// Where `rerun` and `mark-success` go: the deployed submit function instead of this machine.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SubmitRemoteArgs {
    /// In production: ask the deployed submit function at this URL (`POST URL/rerun`, `POST
    /// URL/mark-success`), authenticated as `trigger --remote` is, instead of this machine.
    #[arg(long)]
    pub(crate) remote: Option<String>,
    /// The identity token for --remote (default: `gcloud auth print-identity-token`).
    #[arg(long, env = "CONVEYOR_ID_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Give up waiting for the run after this long.
    #[arg(long, default_value = "5m", value_parser = crate::humantime_duration)]
    pub(crate) timeout: Duration,
}

impl SubmitRemoteArgs {
    /// `POST URL/<route>` to the deployed submit function at `url` with `body`, after saying
    /// `what` it asks for; how to follow the run `run` when it is accepted.
    async fn post(
        &self,
        url: &str,
        route: &str,
        body: &serde_json::Value,
        what: &str,
        run: &str,
    ) -> anyhow::Result<ExitCode> {
        let endpoint = format!("{}/{route}", url.trim_end_matches('/'));
        let remote = RemoteArgs::to(url, self.token.clone(), self.timeout);
        println!("{what} through {endpoint}:");
        let ok = post_remote(&remote, &endpoint, body).await?;
        if ok {
            println!("  follow it with `conveyor status --run {run}`");
        }
        Ok(exit_code(ok))
    }
}

/// `conveyor rerun`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RerunArgs {
    /// The run (`conveyor status` lists them).
    pub(crate) run: String,
    /// Start again from this job (default: the first job whose last attempt did not
    /// succeed); the jobs after it run again too.
    #[arg(long)]
    pub(crate) from: Option<String>,
    #[command(flatten)]
    pub(crate) remote: SubmitRemoteArgs,
}

/// `conveyor mark-success`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct MarkSuccessArgs {
    /// The run.
    pub(crate) run: String,
    /// The job that is to count as succeeded.
    #[arg(long)]
    pub(crate) job: String,
    /// Why (recorded in the run log).
    #[arg(long)]
    pub(crate) reason: String,
    /// Who decides (recorded in the run log; default: $USER).
    #[arg(long, env = "USER", default_value = "operator")]
    pub(crate) by: String,
    #[command(flatten)]
    pub(crate) remote: SubmitRemoteArgs,
}

/// The pipeline of `run` in the file, and the scope of that one run.
fn run_scope(config: &Config, run: &str) -> anyhow::Result<(Pipeline, RunScope)> {
    let pipeline = conveyor_core::steps::rerun::pipeline_of_run(config, run)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("run {run:?} belongs to no pipeline of the file"))?;
    let scope = RunScope {
        pipeline: pipeline.name.to_string(),
        dates: Default::default(),
        since: None,
        run: Some(run.to_owned()),
    };
    Ok((pipeline, scope))
}

/// On this machine: `act` on the run `run` (it returns what to print), then waits up to
/// `timeout` for what it started and reports the run.
async fn act_on_run<F, Fut>(
    config_path: &Path,
    state_dir: &Path,
    run: &str,
    timeout: Duration,
    act: F,
) -> anyhow::Result<ExitCode>
where
    F: FnOnce(Context) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let config = load_config(config_path)?;
    let (pipeline, scope) = run_scope(&config, run)?;
    let mut session = Session::start(config, state_dir, false)?;
    session.only(scope.clone());
    let acted = act(session.ctx.clone()).await;
    if let Ok(summary) = &acted {
        println!("{summary}");
    }
    let done = match &acted {
        Ok(_) => session.wait(timeout, 0).await.done,
        Err(_) => true,
    };
    let ctx = session.ctx.clone();
    session.stop().await?;
    acted?;
    let ok = report_runs(&ctx, &pipeline, &scope).await;
    Ok(exit_code(ok && done))
}

pub(crate) async fn rerun(
    config_path: &Path,
    state_dir: &Path,
    args: &RerunArgs,
) -> anyhow::Result<ExitCode> {
    if let Some(url) = &args.remote.remote {
        let mut body = json!({"run": args.run});
        if let Some(from) = &args.from {
            body["from"] = json!(from);
        }
        let what = format!("re-run {}", args.run);
        return args
            .remote
            .post(url, "rerun", &body, &what, &args.run)
            .await;
    }
    let from = args.from.as_deref();
    act_on_run(
        config_path,
        state_dir,
        &args.run,
        args.remote.timeout,
        |ctx| async move { rerun_one(&ctx, &args.run, from).await },
    )
    .await
}

pub(crate) async fn mark_success(
    config_path: &Path,
    state_dir: &Path,
    args: &MarkSuccessArgs,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(!args.reason.trim().is_empty(), "--reason must say why");
    if let Some(url) = &args.remote.remote {
        let body = json!({"run": args.run, "job": args.job, "reason": args.reason, "by": args.by});
        let what = format!("mark {} of {} succeeded", args.job, args.run);
        return args
            .remote
            .post(url, "mark-success", &body, &what, &args.run)
            .await;
    }
    let run_id = conveyor_core::names::RunId::parse(&args.run)
        .map_err(|e| anyhow::anyhow!("{:?} is not a run id: {e}", args.run))?;
    act_on_run(
        config_path,
        state_dir,
        &args.run,
        args.remote.timeout,
        |ctx| async move {
            let outcome = steps::mark_success(&ctx, &run_id, &args.job, &args.reason, &args.by)
                .await
                .map_err(|e| step_failed(&format!("mark {} succeeded", args.job), e))?;
            Ok(outcome.summary)
        },
    )
    .await
}

/// `conveyor pause` and `conveyor resume`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PauseArgs {
    /// The pipeline.
    pub(crate) pipeline: String,
    /// Why (recorded in the run log).
    #[arg(long, default_value = "")]
    pub(crate) reason: String,
    /// Who decides (recorded in the run log; default: $USER).
    #[arg(long, env = "USER", default_value = "operator")]
    pub(crate) by: String,
    #[command(flatten)]
    pub(crate) source: crate::runlog::RunLogArgs,
    /// `resume` in production: start the held ticks through the deployed function at this URL
    /// (the pipeline's `stage` service when it stages data, else `submit`), authenticated as
    /// `trigger --remote` is.
    #[arg(long)]
    pub(crate) remote: Option<String>,
    /// `resume` in production: announce the held arrivals to the deployed load function at
    /// this URL (`{"bucket", "name", "generation"}`, as a notification would).
    #[arg(long)]
    pub(crate) load_remote: Option<String>,
    /// The identity token for --remote and --load-remote (default: `gcloud auth
    /// print-identity-token`).
    #[arg(long, env = "CONVEYOR_ID_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// `resume`: give up waiting for the held runs (on this machine) after this long.
    #[arg(long, default_value = "5m", value_parser = crate::humantime_duration)]
    pub(crate) timeout: Duration,
}

/// What `resume` starts again: an arrival or a tick the pipeline held while paused.
enum Held {
    Object(conveyor_core::event::ObjectRef),
    Tick {
        step: StepName,
        at: DateTime<Utc>,
        date: Option<NaiveDate>,
    },
}

impl Held {
    fn of(
        row: &conveyor_core::ports::RunLogRow,
        detail: &conveyor_core::event::Detail,
    ) -> Option<Self> {
        if let Some(object) = &detail.object {
            return Some(Self::Object(object.clone()));
        }
        Some(Self::Tick {
            step: StepName::parse(&row.step)?,
            at: detail.started_at?,
            date: detail
                .vars
                .get("date")
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()),
        })
    }

    fn describe(&self) -> String {
        match self {
            Self::Object(o) => format!("arrival {}", o.uri()),
            Self::Tick { at, date, .. } => format!(
                "tick of {}{}",
                at.to_rfc3339(),
                date.map_or(String::new(), |d| format!(" (run date {d})"))
            ),
        }
    }

    /// Starts it on the embedded runtime of `ctx`: the arrival announced to load again, the
    /// tick started as the schedule would have (the same run id).
    async fn start_here(&self, ctx: &Context, pipeline: &Pipeline) -> anyhow::Result<String> {
        let (step, inbound) = match self {
            Self::Object(o) => (StepName::Load, Inbound::Object(o.clone())),
            Self::Tick { step, at, .. } => (
                *step,
                Inbound::Start(StartRequest {
                    pipeline: Some(pipeline.name.clone()),
                    origin: Origin::Schedule,
                    at: *at,
                    key: None,
                    date: None,
                }),
            ),
        };
        let outcome = steps::handle(step, ctx, inbound)
            .await
            .map_err(|e| step_failed(&self.describe(), e))?;
        Ok(outcome.summary)
    }

    /// Starts it through the deployed functions.
    async fn start_remote(&self, args: &PauseArgs, pipeline: &Pipeline) -> anyhow::Result<bool> {
        let (url, body, flag) = match self {
            Self::Object(o) => (
                args.load_remote.as_deref(),
                json!({"bucket": o.bucket.to_string(), "name": o.name.to_string(), "generation": o.generation}),
                "--load-remote",
            ),
            Self::Tick { at, .. } => (
                args.remote.as_deref(),
                json!({"pipeline": pipeline.name.to_string(), "trigger": "schedule", "time": at.to_rfc3339()}),
                "--remote",
            ),
        };
        let Some(url) = url else {
            println!("  {}: held; pass {flag} URL to start it", self.describe());
            return Ok(false);
        };
        let remote = RemoteArgs::to(url, args.token.clone(), args.timeout);
        print!("  {}:", self.describe());
        post_remote(&remote, url, &body).await
    }
}

/// Pauses (`paused`) or resumes a pipeline: writes the state row in its run log (production's
/// with --project or CONVEYOR_PROJECT, else the embedded state's). A resume then starts what
/// the pipeline held while paused (`pause.arrivals: hold`): on this machine, or in production
/// through --remote/--load-remote.
pub(crate) async fn pause(
    config_path: &Path,
    state_dir: &Path,
    args: &PauseArgs,
    paused: bool,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let pipeline = config.pipeline(&args.pipeline).cloned().ok_or_else(|| {
        anyhow::anyhow!(
            "no pipeline {:?} in {}",
            args.pipeline,
            config_path.display()
        )
    })?;
    if args.source.project.is_none() || args.source.local {
        std::fs::create_dir_all(state_dir.join("warehouse"))
            .with_context(|| format!("{}", state_dir.display()))?;
    }
    let log = args.source.open(Some(&config), state_dir).await?;
    let ports = conveyor_core::ports::Ports {
        run_log: log.run_log.clone(),
        ..conveyor_core::ports::Ports::unwired()
    };
    let ctx = Context::new(config, ports);
    let was = steps::pause::is_paused(&ctx, &pipeline)
        .await
        .map_err(|e| step_failed("read the pause", e))?;
    // What it held, read before the resume row ends the pause.
    let held: Vec<Held> = if paused || !was {
        Vec::new()
    } else {
        steps::pause::held(&ctx, &pipeline)
            .await
            .map_err(|e| step_failed("read what the pause held", e))?
            .iter()
            .filter_map(|(row, detail)| Held::of(row, detail))
            .collect()
    };
    steps::pause::set_paused(&ctx, &pipeline, paused, &args.by, &args.reason)
        .await
        .map_err(|e| step_failed("record the pause", e))?;
    let now = if paused { "paused" } else { "resumed" };
    let before = match (was, paused) {
        (true, true) => " (it was paused already)",
        (false, false) => " (it was not paused)",
        _ => "",
    };
    println!("pipeline {} {now}{before}, in {}", pipeline.name, log.place);
    if held.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    println!("starting {} held arrival(s) and tick(s):", held.len());
    let production = args.source.project.is_some() && !args.source.local;
    if production {
        let mut ok = true;
        for h in &held {
            ok &= h.start_remote(args, &pipeline).await?;
        }
        return Ok(exit_code(ok));
    }
    drop(ctx);
    drop(log);
    let config = load_config(config_path)?;
    let mut session = Session::start(config, state_dir, false)?;
    session.only(RunScope {
        pipeline: pipeline.name.to_string(),
        dates: Default::default(),
        since: Some(Utc::now()),
        run: None,
    });
    let mut ok = true;
    let mut loads = 0;
    for h in &held {
        match h.start_here(&session.ctx, &pipeline).await {
            Ok(summary) => println!("  {}: {summary}", h.describe()),
            Err(e) => {
                ok = false;
                println!("  {}: {e:#}", h.describe());
            }
        }
        loads += usize::from(matches!(h, Held::Object(_)));
    }
    let done = session.wait(args.timeout, loads).await.done;
    session.stop().await?;
    Ok(exit_code(ok && done))
}

/// Refuses a start on this machine when `CONVEYOR_PROJECT` names a production project and
/// neither `--remote` nor `--local` says where to start: `status` would read production and
/// the start would silently run here.
fn check_where(args: &RemoteArgs, command: &str) -> anyhow::Result<()> {
    if let (None, false, Some(project)) = (&args.remote, args.local, &args.project) {
        anyhow::bail!(
            "CONVEYOR_PROJECT is set ({project}): `{command}` would run on this machine, not in \
             that project. Pass --remote URL to start the deployed pipeline, or --local to run \
             it here"
        );
    }
    Ok(())
}

fn config_for(config_path: &Path, pipeline: &str) -> anyhow::Result<(Arc<Config>, Pipeline)> {
    let config = load_config(config_path)?;
    let p = config
        .pipeline(pipeline)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no pipeline {pipeline:?} in {}", config_path.display()))?;
    anyhow::ensure!(p.active, "pipeline {pipeline} is inactive");
    Ok((config, p))
}

pub(crate) async fn trigger(
    config_path: &Path,
    state_dir: &Path,
    args: &TriggerArgs,
) -> anyhow::Result<ExitCode> {
    check_where(&args.remote, "trigger")?;
    let at = args.date.map(midnight);
    if let Some(url) = &args.remote.remote {
        println!("trigger {} at {url}:", args.pipeline);
        let ok = start_remote(
            &args.remote,
            url,
            &args.pipeline,
            args.date,
            args.key.as_deref(),
        )
        .await?;
        return Ok(exit_code(ok));
    }
    let (config, pipeline) = config_for(config_path, &args.pipeline)?;
    let began = Utc::now() - chrono::Duration::seconds(1);
    let mut session = Session::start(config, state_dir, false)?;
    let date = args.date.unwrap_or_else(|| Utc::now().date_naive());
    let scope = RunScope {
        pipeline: pipeline.name.to_string(),
        dates: [date.to_string()].into(),
        // Undated, one run per minute or key: the runs of today it wrote to.
        since: (args.date.is_none() || args.key.is_some()).then_some(began),
        run: None,
    };
    session.only(scope.clone());
    println!("trigger {} for {date}:", pipeline.name);
    let result = start_one(
        &session.ctx,
        &pipeline,
        at.unwrap_or_else(Utc::now),
        args.date,
        args.key.clone(),
    )
    .await;
    let loads = match &result {
        Ok((summary, n)) => {
            println!("  {summary}");
            *n
        }
        Err(_) => 0,
    };
    let done = if result.is_ok() {
        session.wait(args.remote.timeout, loads).await.done
    } else {
        true
    };
    let ctx = session.ctx.clone();
    session.stop().await?;
    result?;
    let ok = report_runs(&ctx, &pipeline, &scope).await;
    Ok(exit_code(ok && done))
}

pub(crate) async fn backfill(
    config_path: &Path,
    state_dir: &Path,
    args: &BackfillArgs,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.from <= args.to,
        "--from {} is after --to {}",
        args.from,
        args.to
    );
    check_where(&args.remote, "backfill")?;
    let dates: Vec<NaiveDate> = args
        .from
        .iter_days()
        .take_while(|d| *d <= args.to)
        .collect();
    anyhow::ensure!(
        dates.len() <= 3660,
        "{} dates: backfill at most ten years at once",
        dates.len()
    );
    if let Some(url) = &args.remote.remote {
        if let Ok((_, p)) = config_for(config_path, &args.pipeline) {
            anyhow::ensure!(
                plan(&p)? != Plan::Objects,
                "pipeline {} starts on object arrivals: backfill it where its bucket is listed \
                 (without --remote), or copy the objects again",
                p.name
            );
        }
        println!(
            "backfill {} at {url}, {} date(s):",
            args.pipeline,
            dates.len()
        );
        let mut ok = true;
        for d in &dates {
            print!("{d}:");
            ok &= start_remote(&args.remote, url, &args.pipeline, Some(*d), None).await?;
        }
        return Ok(exit_code(ok));
    }
    let (config, pipeline) = config_for(config_path, &args.pipeline)?;
    plan(&pipeline)?;
    let mut session = Session::start(config, state_dir, false)?;
    let scope = RunScope {
        pipeline: pipeline.name.to_string(),
        dates: dates.iter().map(NaiveDate::to_string).collect(),
        since: None,
        run: None,
    };
    session.only(scope.clone());
    println!("backfill {}, {} date(s):", pipeline.name, dates.len());
    let mut loads = 0;
    let mut failures = BTreeMap::new();
    for d in &dates {
        match start_one(&session.ctx, &pipeline, midnight(*d), Some(*d), None).await {
            Ok((summary, n)) => {
                println!("{d}: {summary}");
                loads += n;
            }
            Err(e) => {
                println!("{d}: FAILED {e:#}");
                failures.insert(*d, e.to_string());
            }
        }
    }
    let mut done = session.wait(args.remote.timeout, loads).await.done;
    if args.rerun_failed {
        let failed = failed_runs(&session.ctx, &pipeline, &scope).await;
        for run in &failed {
            match rerun_one(&session.ctx, run, None).await {
                Ok(summary) => println!("{summary}"),
                Err(e) => println!("{run}: {e:#}"),
            }
        }
        if !failed.is_empty() {
            done = session.wait(args.remote.timeout, 0).await.done;
        }
    }
    let ctx = session.ctx.clone();
    session.stop().await?;
    let ok = report_runs(&ctx, &pipeline, &scope).await;
    if !failures.is_empty() {
        println!("{} date(s) could not be started", failures.len());
    }
    Ok(exit_code(ok && done && failures.is_empty()))
}

/// The process's exit code: success when `ok`.
fn exit_code(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
