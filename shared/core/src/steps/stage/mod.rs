//! stage: copy a pipeline's source (a local path, an S3 folder, another bucket's folder, or
//! https URLs) into its landing bucket, incrementally, and announce each copied object.
//!
//! # Layout
//! - `mod.rs`: the step: list, decide, copy with bounded concurrency, announce, record.
//! - `plan.rs`: the incremental decision and the staged names (pure functions).
//! - `watermark.rs`: what was copied, kept in `_conveyor/stage/<pipeline>.json`.
//! - `lease.rs`: one run per pipeline at a time (`_conveyor/lease/stage/<pipeline>.json`).
//! - `verify.rs`: the reader that checks sizes and checksums end to end.
//!
//! Memory does not grow with an object's size: bytes stream from the source through the
//! verifying reader into the store (which uploads to Cloud Storage in 8 MiB chunks), and at
//! most `stage.concurrency` objects are in flight.

mod lease;
mod plan;
mod verify;
mod watermark;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use tracing::{info, instrument, warn};

use super::{
    Context, Outcome, StepError, active_pipeline, describe, publish,
    submit::{self, check_origin, start_run_id},
};
use crate::config::{Pipeline, StageSpec};
use crate::event::{ConveyorEvent, Detail, EventType, Status, StepName};
use crate::inbound::{Inbound, Origin, StartRequest};
use crate::names::{ObjectName, RunId};
use crate::ports::{ObjectMeta, PortError, Source, SourceObject};
use crate::run_origin::RunOrigin;
use plan::{Decision, Entry, Planned};
use verify::{Expected, Verifying};
use watermark::Watermark;

/// How often the watermark is written while copies go on.
const FLUSH_EVERY: Duration = Duration::from_secs(30);

/// How often a long run reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What a progress report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProgressKind {
    /// The source was listed and the copies planned (`total` is known from here on).
    Planned,
    /// One object is done: copied, or unchanged after a content comparison.
    Object,
    /// One object failed (its line says why).
    Failed,
    /// A periodic report in a long run.
    Tick,
    /// The run's summary.
    Finished,
}

/// One progress report of a stage run: a line for people, and the counts behind it for a
/// progress bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageProgress {
    /// What it is about.
    pub kind: ProgressKind,
    /// Objects done (copied, unchanged or failed) of `total`.
    pub done: usize,
    /// Objects to copy (0 before the plan).
    pub total: usize,
    /// Bytes copied so far.
    pub bytes: u64,
    /// The line: `[3/10] copied sales/a.csv (120 bytes, new)`.
    pub line: String,
}

/// What a stage run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageReport {
    /// Objects copied (their staged names).
    pub copied: Vec<String>,
    /// Objects unchanged since the watermark recorded them (their source keys).
    pub skipped: Vec<String>,
    /// Objects that failed, with the reason; they are not in the watermark, so the next run
    /// tries them again.
    pub failed: Vec<(String, String)>,
    /// Bytes copied.
    pub bytes: u64,
    /// How long the run took.
    pub elapsed: Duration,
    /// The pipeline is paused: its scheduled tick was recorded `PAUSED` instead (nothing
    /// copied).
    pub paused: bool,
}

impl StageReport {
    /// One line: counts, bytes and throughput.
    pub fn summary(&self) -> String {
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.bytes as f64 / secs / 1e6
        } else {
            0.0
        };
        format!(
            "staged {} object(s) ({} bytes in {secs:.1} s, {rate:.1} MB/s), {} unchanged, {} failed",
            self.copied.len(),
            self.bytes,
            self.skipped.len(),
            self.failed.len()
        )
    }
}

pub(super) async fn handle(ctx: &Context, inbound: Inbound) -> Result<Outcome, StepError> {
    let Inbound::Start(start) = inbound else {
        return Err(StepError::Rejected(format!(
            "the stage function takes start requests, not {}",
            describe(&inbound)
        )));
    };
    let Some(name) = &start.pipeline else {
        return Err(StepError::Rejected(
            "a stage request must name a pipeline".to_owned(),
        ));
    };
    let pipeline = active_pipeline(ctx, name.as_str())?;
    check_origin(pipeline, &start)?;
    let mut outcome = Outcome::default();
    let report = stage_pipeline(ctx, pipeline, &start, false, &mut outcome, &mut |_| {}).await?;
    if report.paused {
        return Ok(outcome);
    }
    outcome.summary = report.summary();
    if report.copied.is_empty() && !report.failed.is_empty() {
        // Nothing got through: worth a redelivery once the source is back.
        return Err(StepError::Transient(outcome.summary));
    }
    Ok(outcome)
}

/// One object to copy.
struct Work {
    object: SourceObject,
    target: ObjectName,
    decision: Decision,
    previous: Option<Entry>,
}

/// How one object ended.
enum Done {
    Copied {
        object: SourceObject,
        meta: ObjectMeta,
        read: verify::Read,
        reason: &'static str,
    },
    Unchanged {
        object: SourceObject,
        entry: Entry,
    },
}

/// Whether the watermark should remember `object`'s content SHA-256: when the source gives
/// nothing else to recognise it by next time.
fn wants_sha256(object: &SourceObject) -> bool {
    object.etag.is_none() && object.version.is_none() && object.digests == Default::default()
}

async fn open_verified(
    source: &dyn Source,
    object: &SourceObject,
    sha256: bool,
    progress: &Arc<AtomicU64>,
) -> Result<(Verifying, verify::Outcome), PortError> {
    let opened = source.open(object).await?;
    let expected = Expected::combine(object.size, &object.digests, opened.size, &opened.digests)
        .map_err(PortError::transient)?;
    Ok(Verifying::new(
        opened.body,
        &object.key,
        expected,
        sha256,
        progress.clone(),
    ))
}

async fn copy_one(
    ctx: &Context,
    source: &dyn Source,
    spec: &StageSpec,
    work: Work,
    progress: Arc<AtomicU64>,
) -> Result<Done, (String, String)> {
    let Work {
        object,
        target,
        decision,
        previous,
    } = work;
    let fail = |e: PortError| (object.key.clone(), e.to_string());
    let sha256 = wants_sha256(&object);
    if let (Decision::CompareContent, Some(previous)) = (decision, &previous) {
        // Read it once to compare its content with what was copied last time.
        let (mut reader, outcome) = open_verified(source, &object, true, &Arc::default())
            .await
            .map_err(fail)?;
        tokio::io::copy(&mut reader, &mut tokio::io::sink())
            .await
            .map_err(|e| (object.key.clone(), e.to_string()))?;
        let read = outcome.lock().ok().and_then(|mut o| o.take());
        if let Some(read) = read
            && plan::digests_agree(&previous.digests, &read.digests) == Some(true)
        {
            let entry = Entry {
                staged_at: previous.staged_at,
                ..Entry::of(
                    &object,
                    read.digests,
                    &previous.target,
                    &previous.generation,
                )
            };
            return Ok(Done::Unchanged { object, entry });
        }
    }
    let reason = match decision {
        Decision::Copy(r) => r,
        _ => "changed",
    };
    let (reader, outcome) = open_verified(source, &object, sha256, &progress)
        .await
        .map_err(fail)?;
    let meta = ctx
        .ports
        .store
        .put(&spec.bucket, &target, Box::pin(reader))
        .await
        .map_err(fail)?;
    let read = outcome
        .lock()
        .ok()
        .and_then(|mut o| o.take())
        .ok_or_else(|| {
            (
                object.key.clone(),
                "the store did not read the source to its end".to_owned(),
            )
        })?;
    Ok(Done::Copied {
        object,
        meta,
        read,
        reason,
    })
}

/// Where an object came from, for the staged event: `s3://bucket/key`, the URL, the file.
fn source_address(uri: &str, object: &SourceObject) -> String {
    if object.key.contains("://") {
        object.key.clone()
    } else if uri.ends_with(&object.relative) {
        uri.to_owned() // a single local file
    } else {
        format!("{}/{}", uri.trim_end_matches('/'), object.relative)
    }
}

fn staged_event(pipeline: &Pipeline, meta: &ObjectMeta, source: &str, date: &str) -> ConveyorEvent {
    let run_id = RunId::for_origin(
        &pipeline.name,
        &RunOrigin::Object {
            bucket: meta.object.bucket.as_str(),
            name: meta.object.name.as_str(),
            generation: &meta.object.generation,
        },
    );
    let detail = Detail {
        object: Some(meta.object.clone()),
        started_at: Some(chrono::Utc::now()),
        vars: BTreeMap::from([
            ("source".to_owned(), source.to_owned()),
            ("date".to_owned(), date.to_owned()),
        ]),
        ..Detail::default()
    };
    ConveyorEvent::new(
        EventType::ObjectStaged,
        run_id,
        Some(pipeline.name.clone()),
        StepName::Stage,
        1,
        Status::Succeeded,
        detail,
    )
}

/// Copies `pipeline`'s stage source into its landing bucket.
///
/// Incremental: an object is copied only when the watermark
/// (`_conveyor/stage/<pipeline>.json` in the landing bucket) has no record of it as it is now
/// — same size and the same checksum, ETag or version — unless `full`. Copies run
/// `stage.concurrency` at a time; each is checked end to end (size and the source's
/// checksums) and a mismatch leaves no object behind. Each copied object gets a
/// `dev.conveyor.object.staged` event and a watermark entry; a failed one gets neither, and the
/// next run tries it again. `progress` receives a line per object and, in long runs, a line
/// every few seconds (the CLI prints them).
///
/// # Errors
/// [`StepError::Rejected`] when the pipeline has no stage or its source is refused (bad
/// credentials, a bad watermark); [`StepError::Transient`] when the source cannot be listed
/// or the watermark cannot be read or written.
#[instrument(skip_all, fields(pipeline = %pipeline.name))]
pub async fn stage_pipeline(
    ctx: &Context,
    pipeline: &Pipeline,
    start: &StartRequest,
    full: bool,
    outcome: &mut Outcome,
    progress: &mut (dyn FnMut(&StageProgress) + Send),
) -> Result<StageReport, StepError> {
    if super::pause::held_start(ctx, pipeline, start, StepName::Stage, outcome).await? {
        return Ok(StageReport {
            paused: true,
            ..StageReport::default()
        });
    }
    let mut report_line = |kind, done, total, bytes, line: String| {
        progress(&StageProgress {
            kind,
            done,
            total,
            bytes,
            line,
        });
    };
    let began = Instant::now();
    let Some(spec) = &pipeline.stage else {
        return Err(StepError::Rejected(format!(
            "pipeline {} has no stage",
            pipeline.name
        )));
    };
    let stage_run = start_run_id(
        pipeline,
        &StartRequest {
            origin: Origin::Manual,
            ..start.clone()
        },
    );
    let store = ctx.ports.store.as_ref();
    // One run of a pipeline at a time: two would copy every object twice.
    let holder = format!(
        "{stage_run}/{}",
        crate::names::short_hash(&[&Utc::now().to_rfc3339(), &std::process::id().to_string()])
    );
    let mut lease = match lease::Lease::acquire(store, &spec.bucket, &pipeline.name, &holder).await
    {
        Ok(l) => l,
        Err(lease::Refused::Busy(why)) => return Err(StepError::Transient(why)),
        Err(lease::Refused::Store(e)) => return Err(StepError::from_port(e)),
    };
    let mut seen = Seen::default();
    let result = stage_leased(
        ctx,
        pipeline,
        spec,
        start,
        &stage_run,
        full,
        &mut lease,
        outcome,
        &mut report_line,
        began,
        &mut seen,
    )
    .await;
    lease.release(store).await;
    let end = match &result {
        Ok(report) if report.failed.is_empty() => None,
        Ok(report) => Some(format!(
            "{} object(s) failed to copy; first: {}",
            report.failed.len(),
            report
                .failed
                .first()
                .map(|(k, e)| format!("{k}: {e}"))
                .unwrap_or_default()
        )),
        Err(e) => Some(e.to_string()),
    };
    if !seen.started {
        // Stopped before its source was listed: the run's START still comes first.
        let source = spec.source.describe();
        if source.contains("://") || source.starts_with('/') {
            seen.lineage.inputs.push(source);
        }
        lineage(ctx, pipeline, &stage_run, "START", &seen, None).await;
    }
    match end {
        None => lineage(ctx, pipeline, &stage_run, "COMPLETE", &seen, None).await,
        Some(error) => lineage(ctx, pipeline, &stage_run, "FAIL", &seen, Some(&error)).await,
    }
    result
}

/// What a stage run has read and written so far, for its lineage.
#[derive(Default)]
struct Seen {
    started: bool,
    lineage: super::lineage::StageLineage,
}

/// Sends the stage run's OpenLineage event `kind`, when the file has `lineage:` and the
/// lineage port is wired. A failure is logged: the copies are done and stay done.
async fn lineage(
    ctx: &Context,
    pipeline: &Pipeline,
    stage_run: &RunId,
    kind: &str,
    seen: &Seen,
    error: Option<&str>,
) {
    let (Some(_), Some(port)) = (&ctx.config.lineage, &ctx.ports.lineage) else {
        return;
    };
    let event = super::lineage::stage_event(
        &ctx.config,
        pipeline,
        stage_run,
        kind,
        Utc::now(),
        &seen.lineage,
        error,
    );
    if let Err(e) = port.emit(&event).await {
        warn!(run_id = %stage_run, event_type = kind, error = %e, "cannot send the stage run's OpenLineage event");
    }
}

/// The stage run itself, with the pipeline's lease held (and renewed).
#[expect(clippy::too_many_arguments, reason = "one run's whole context")]
async fn stage_leased(
    ctx: &Context,
    pipeline: &Pipeline,
    spec: &StageSpec,
    start: &StartRequest,
    stage_run: &RunId,
    full: bool,
    lease: &mut lease::Lease,
    outcome: &mut Outcome,
    report_line: &mut (dyn FnMut(ProgressKind, usize, usize, u64, String) + Send),
    began: Instant,
    seen: &mut Seen,
) -> Result<StageReport, StepError> {
    let store = ctx.ports.store.as_ref();
    let source = ctx
        .ports
        .sources
        .connect(&spec.source)
        .await
        .map_err(StepError::from_port)?;
    let uri = source.uri();
    let listed = source.list().await.map_err(StepError::from_port)?;
    // The source as one dataset when it is one place (a folder, a file); a list of URLs is
    // named by each URL copied.
    if uri.contains("://") || uri.starts_with('/') {
        seen.lineage.inputs.push(uri.clone());
    }
    seen.started = true;
    lineage(ctx, pipeline, stage_run, "START", seen, None).await;
    let keys: BTreeSet<String> = listed.iter().map(|o| o.key.clone()).collect();
    let stored = Watermark::read(store, &spec.bucket, &pipeline.name).await;
    let stored = match stored {
        Ok(w) => w,
        // --full copies everything anyway, and writes a good watermark at the end.
        Err(PortError::Permanent(m)) if full => {
            warn!(error = %m, "the stage watermark is unreadable; --full rewrites it");
            None
        }
        Err(e) => return Err(StepError::from_port(e)),
    };
    let mut mark = match &stored {
        Some(w) if w.source == uri => w.clone(),
        Some(w) => {
            info!(previous = %w.source, source = %uri, "the stage source changed: its watermark starts afresh");
            Watermark::new(&pipeline.name, &uri)
        }
        None => Watermark::new(&pipeline.name, &uri),
    };
    let run_vars = BTreeMap::from([
        ("date".to_owned(), submit::run_date(pipeline, start)),
        ("run_id".to_owned(), stage_run.to_string()),
    ]);
    let mut report = StageReport::default();
    let mut work = Vec::new();
    for Planned { object, target } in plan::plan(spec, listed, &run_vars) {
        let target = match target {
            Ok(t) => t,
            Err(e) => {
                report_line(
                    ProgressKind::Failed,
                    0,
                    0,
                    0,
                    format!("FAILED {}: {e}", object.key),
                );
                warn!(object = %object.key, error = %e, "cannot name the staged object");
                report.failed.push((object.key, e));
                continue;
            }
        };
        let previous = mark.objects.get(&object.key).cloned();
        match plan::decide(previous.as_ref(), &object, full) {
            Decision::Skip => report.skipped.push(object.key),
            decision => work.push(Work {
                object,
                target,
                decision,
                previous,
            }),
        }
    }
    let total = work.len();
    let compare = work
        .iter()
        .filter(|w| w.decision == Decision::CompareContent)
        .count();
    let compare_note = if compare > 0 {
        format!(" ({compare} of them compared by content first)")
    } else {
        String::new()
    };
    report_line(
        ProgressKind::Planned,
        0,
        total,
        0,
        format!(
            "{}: {} object(s) listed, {total} to copy{compare_note}, {} unchanged",
            spec.source.describe(),
            keys.len(),
            report.skipped.len()
        ),
    );
    info!(source = %uri, listed = keys.len(), to_copy = total, unchanged = report.skipped.len(), "stage planned");

    let bytes = Arc::new(AtomicU64::new(0));
    let mut copies = std::pin::pin!(
        futures::stream::iter(work)
            .map(|w| copy_one(ctx, source.as_ref(), spec, w, bytes.clone()))
            .buffer_unordered(spec.concurrency.max(1))
    );
    let mut touched = BTreeSet::new();
    let mut dirty = stored.as_ref() != Some(&mark) || stored.is_none();
    let mut last_flush = Instant::now();
    let mut ticker = tokio::time::interval(PROGRESS_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut done = 0usize;
    let mut renewed = Instant::now();
    loop {
        let next = tokio::select! {
            next = copies.next() => next,
            _ = ticker.tick() => {
                if renewed.elapsed() >= lease::RENEW_EVERY {
                    lease.renew(store).await.map_err(StepError::Transient)?;
                    renewed = Instant::now();
                }
                let copied = bytes.load(Ordering::Relaxed);
                let rate = copied as f64 / began.elapsed().as_secs_f64().max(0.001) / 1e6;
                report_line(ProgressKind::Tick, done, total, copied, format!("... {done}/{total} done, {copied} bytes copied, {rate:.1} MB/s"));
                info!(done, total, bytes = copied, "stage in progress");
                continue;
            }
        };
        let Some(result) = next else { break };
        done += 1;
        match result {
            Ok(Done::Copied {
                object,
                meta,
                read,
                reason,
            }) => {
                let target = meta.object.name.to_string();
                let event = staged_event(
                    pipeline,
                    &meta,
                    &source_address(&uri, &object),
                    run_vars.get("date").map_or("", String::as_str),
                );
                if let Err(e) = publish(ctx, outcome, event).await {
                    report_line(
                        ProgressKind::Failed,
                        done,
                        total,
                        bytes.load(Ordering::Relaxed),
                        format!("[{done}/{total}] FAILED {target}: {e}"),
                    );
                    warn!(object = %meta.object.uri(), error = %e, "copied, but the staged event was not published; the next run copies it again");
                    report.failed.push((object.key, e.to_string()));
                    continue;
                }
                report_line(
                    ProgressKind::Object,
                    done,
                    total,
                    bytes.load(Ordering::Relaxed),
                    format!(
                        "[{done}/{total}] copied {target} ({} bytes, {reason})",
                        read.size
                    ),
                );
                info!(object = %meta.object.uri(), source = %object.key, bytes = read.size, reason, "staged");
                report.bytes += read.size;
                seen.lineage.inputs.push(source_address(&uri, &object));
                seen.lineage.outputs.push(meta.object.clone());
                touched.insert(object.key.clone());
                mark.objects.insert(
                    object.key.clone(),
                    Entry::of(&object, read.digests, &target, &meta.object.generation),
                );
                report.copied.push(target);
                dirty = true;
            }
            Ok(Done::Unchanged { object, entry }) => {
                report_line(
                    ProgressKind::Object,
                    done,
                    total,
                    bytes.load(Ordering::Relaxed),
                    format!("[{done}/{total}] unchanged {} (same content)", object.key),
                );
                touched.insert(object.key.clone());
                mark.objects.insert(object.key.clone(), entry);
                report.skipped.push(object.key);
                dirty = true;
            }
            Err((key, e)) => {
                report_line(
                    ProgressKind::Failed,
                    done,
                    total,
                    bytes.load(Ordering::Relaxed),
                    format!("[{done}/{total}] FAILED {key}: {e}"),
                );
                warn!(object = %key, error = %e, "stage of one object failed; the next run retries it");
                report.failed.push((key, e));
            }
        }
        if dirty && last_flush.elapsed() >= FLUSH_EVERY {
            flush(ctx, spec, pipeline, &mut mark, &touched, &keys).await?;
            dirty = false;
            last_flush = Instant::now();
        }
    }
    // Entries of objects the source no longer lists are dropped too.
    if dirty || mark.objects.keys().any(|k| !keys.contains(k)) {
        flush(ctx, spec, pipeline, &mut mark, &touched, &keys).await?;
    }
    report.elapsed = began.elapsed();
    report_line(
        ProgressKind::Finished,
        done,
        total,
        report.bytes,
        report.summary(),
    );
    info!(
        copied = report.copied.len(),
        unchanged = report.skipped.len(),
        failed = report.failed.len(),
        bytes = report.bytes,
        seconds = report.elapsed.as_secs_f64(),
        "stage finished"
    );
    Ok(report)
}

/// Writes the watermark, merged with what a concurrent run may have written.
async fn flush(
    ctx: &Context,
    spec: &StageSpec,
    pipeline: &Pipeline,
    mark: &mut Watermark,
    touched: &BTreeSet<String>,
    listed: &BTreeSet<String>,
) -> Result<(), StepError> {
    let store = ctx.ports.store.as_ref();
    let stored = Watermark::read(store, &spec.bucket, &pipeline.name)
        .await
        .unwrap_or(None);
    mark.merge(stored, touched, listed);
    mark.write(store, &spec.bucket, &pipeline.name)
        .await
        .map_err(|e| StepError::Transient(format!("cannot write the stage watermark: {e}")))
}
