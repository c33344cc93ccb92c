//! stage: copy source data (a local file or directory, or an http(s) URL) into the landing
//! bucket, skipping objects that are already there unchanged, and announce each copied object.

use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tracing::{info, instrument, warn};

use super::{
    Context, Outcome, StepError, active_pipeline,
    load::describe,
    publish,
    submit::{check_origin, start_run_id},
};
use crate::config::{Pipeline, render};
use crate::event::{ConveyorEvent, Detail, EventType, Status, StepName};
use crate::inbound::{Inbound, Origin, StartRequest};
use crate::names::{ObjectName, RunId};
use crate::ports::{ByteStream, PortError};

/// What a stage run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageReport {
    /// Objects copied.
    pub copied: Vec<String>,
    /// Objects already present unchanged.
    pub skipped: Vec<String>,
    /// Objects that failed, with the reason; they are retried on the next run.
    pub failed: Vec<(String, String)>,
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
    outcome.summary = format!(
        "staged {} object(s), {} unchanged, {} failed",
        report.copied.len(),
        report.skipped.len(),
        report.failed.len()
    );
    if report.copied.is_empty() && !report.failed.is_empty() {
        // Nothing got through: worth a redelivery once the source is back.
        return Err(StepError::Transient(outcome.summary));
    }
    Ok(outcome)
}

struct SourceItem {
    /// Path relative to the source root, `/`-separated.
    relative: String,
    location: Location,
}

enum Location {
    File(PathBuf),
    Url(String),
}

fn list_source(source: &str) -> Result<Vec<SourceItem>, StepError> {
    if source.starts_with("http://") || source.starts_with("https://") {
        let name = source
            .split(['?', '#'])
            .next()
            .and_then(|s| s.rsplit('/').next())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                StepError::Rejected(format!("cannot name an object after URL {source:?}"))
            })?;
        return Ok(vec![SourceItem {
            relative: name.to_owned(),
            location: Location::Url(source.to_owned()),
        }]);
    }
    let root = PathBuf::from(source.strip_prefix("file://").unwrap_or(source));
    let meta = std::fs::metadata(&root).map_err(|e| {
        StepError::Transient(format!("cannot read stage source {}: {e}", root.display()))
    })?;
    if meta.is_file() {
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok(vec![SourceItem {
            relative: name,
            location: Location::File(root),
        }]);
    }
    let mut out = Vec::new();
    walk(&root, &root, &mut out)
        .map_err(|e| StepError::Transient(format!("cannot list {}: {e}", root.display())))?;
    out.sort_by(|a, b| a.relative.cmp(&b.relative));
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<SourceItem>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let ty = entry.file_type()?;
        if ty.is_dir() {
            walk(root, &path, out)?;
        } else if ty.is_file() {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let relative = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            if relative.split('/').any(|s| s.starts_with('.')) {
                continue; // hidden and temporary files
            }
            out.push(SourceItem {
                relative,
                location: Location::File(path),
            });
        }
    }
    Ok(())
}

async fn sha256_of_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((hex::encode(h.finalize()), size))
}

async fn open_item(item: &SourceItem) -> Result<ByteStream, PortError> {
    match &item.location {
        Location::File(p) => {
            let f = tokio::fs::File::open(p)
                .await
                .map_err(|e| PortError::Transient(format!("{}: {e}", p.display())))?;
            Ok(Box::pin(f))
        }
        Location::Url(url) => {
            let resp = crate::adapters::gcp::http_client()
                .get(url)
                .send()
                .await
                .map_err(|e| PortError::Transient(format!("GET {url}: {e}")))?;
            let status = resp.status();
            if !status.is_success() {
                let msg = format!("GET {url}: HTTP {status}");
                return Err(if status.is_server_error() || status.as_u16() == 429 {
                    PortError::Transient(msg)
                } else {
                    PortError::Permanent(msg)
                });
            }
            let stream = resp.bytes_stream().map_err(std::io::Error::other);
            Ok(Box::pin(tokio_util::io::StreamReader::new(stream)))
        }
    }
}

/// Copies `pipeline`'s stage source into its landing bucket. Unless `full`, an object already
/// present with the same size and content hash is skipped. `progress` is called with a line
/// per object (the CLI prints them). Each copied object gets a `conveyor.object.staged` event;
/// one failed object does not stop the others.
///
/// # Errors
/// [`StepError::Rejected`] when the pipeline has no stage; [`StepError::Transient`] when the
/// source cannot be listed or an event cannot be published.
#[instrument(skip_all, fields(pipeline = %pipeline.name))]
pub async fn stage_pipeline(
    ctx: &Context,
    pipeline: &Pipeline,
    start: &StartRequest,
    full: bool,
    outcome: &mut Outcome,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<StageReport, StepError> {
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
    let vars = std::collections::BTreeMap::from([
        ("date".to_owned(), start.at.format("%Y-%m-%d").to_string()),
        ("run_id".to_owned(), stage_run.to_string()),
    ]);
    let prefix = render(&spec.prefix, &vars).map_err(StepError::Rejected)?;
    let items = list_source(&spec.source)?;
    let mut report = StageReport::default();
    let total = items.len();
    for (i, item) in items.iter().enumerate() {
        let target = format!("{prefix}{}", item.relative);
        let name = match ObjectName::parse(&target) {
            Ok(n) => n,
            Err(e) => {
                report.failed.push((target, e.to_string()));
                continue;
            }
        };
        if !full && let Location::File(path) = &item.location {
            let existing = ctx
                .ports
                .store
                .head(&spec.bucket, &name)
                .await
                .map_err(StepError::from_port)?;
            if let Some(meta) = existing {
                let (hash, size) = sha256_of_file(path)
                    .await
                    .map_err(|e| StepError::Transient(e.to_string()))?;
                if meta.etag == hash && meta.object.size == Some(size) {
                    progress(&format!("[{}/{total}] unchanged {target}", i + 1));
                    report.skipped.push(target);
                    continue;
                }
            }
        }
        let result = async {
            let body = open_item(item).await?;
            ctx.ports.store.put(&spec.bucket, &name, body).await
        }
        .await;
        match result {
            Ok(meta) => {
                progress(&format!(
                    "[{}/{total}] copied {target} ({} bytes)",
                    i + 1,
                    meta.object.size.unwrap_or(0)
                ));
                info!(object = %meta.object.uri(), "staged");
                let run_id = RunId::derive(
                    &pipeline.name,
                    &[
                        meta.object.bucket.as_str(),
                        meta.object.name.as_str(),
                        &meta.object.generation,
                    ],
                );
                let detail = Detail {
                    object: Some(meta.object.clone()),
                    started_at: Some(chrono::Utc::now()),
                    ..Detail::default()
                };
                let ev = ConveyorEvent::new(
                    EventType::ObjectStaged,
                    run_id,
                    Some(pipeline.name.clone()),
                    StepName::Stage,
                    1,
                    Status::Succeeded,
                    detail,
                );
                publish(ctx, outcome, ev).await?;
                report.copied.push(target);
            }
            Err(e) => {
                progress(&format!("[{}/{total}] FAILED {target}: {e}", i + 1));
                warn!(object = %target, error = %e, "stage of one object failed; the next run retries it");
                report.failed.push((target, e.to_string()));
            }
        }
    }
    Ok(report)
}
