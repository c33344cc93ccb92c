//! Submit claims: one delivery at a time starts the job of an engine whose submit is not
//! idempotent ([`BatchSpec::claims_submit`]: `cloud_run_job`, `http`).
//!
//! A Cloud Run job's `:run` starts a new execution each time, and the engine can only find a
//! started one by listing the job's executions; an http call does its work each time. Two
//! deliveries of one submit at once (a redelivery, a second start of the same run) would both
//! look, both find nothing, and both start. So before the engine is called, the delivery takes
//! a create-only claim keyed by the deterministic job id in the state bucket:
//!
//! ```text
//! _conveyor/claims/JOB_ID.json   {"taken_at": …}   the delivery that starts the job
//! _conveyor/claims/JOB_ID.done   {}                the job was started (its submit answered)
//! ```
//!
//! - The winner submits as before, then writes `.done`; if its submit fails it deletes its
//!   claim (by generation) so the retry claims again.
//! - A loser never starts the job. With `.done` there, it reports the job as submitted already
//!   (adopted) and the job is followed as usual. Otherwise it asks the engine to find the
//!   job without starting it ([`BatchEngine::adopt`]: a Cloud Run execution carrying the job
//!   id), a few times over a few seconds.
//! - Not found and the claim is younger than the engine's hold: a transient error, so the
//!   delivery comes back later (by then the winner has written `.done`, or its claim is old).
//! - Not found and the claim is older than the hold: its holder died between the claim and the
//!   answer. The claim is taken over (deleted by its generation, so a claim just taken by
//!   another delivery stays) and the job is submitted, the engine's own look-up first (a Cloud
//!   Run execution started by the dead holder is still adopted).
//!
//! Without a state bucket, submits are not claimed (the engines' own look-ups only).
//!
//! [`BatchSpec::claims_submit`]: crate::config::BatchSpec::claims_submit
//! [`BatchEngine::adopt`]: crate::ports::BatchEngine::adopt

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt as _;
use tracing::{info, warn};

use super::super::Context;
use crate::names::{BucketName, ObjectName};
use crate::ports::{BatchRequest, ByteStream, PortError, Submitted};

/// How many times a delivery that lost the claim looks for the winner's job, and how long it
/// waits between looks.
const ADOPT_LOOKS: u32 = 10;
const ADOPT_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Serialize, Deserialize)]
struct Claim {
    taken_at: DateTime<Utc>,
}

fn stream(bytes: Vec<u8>) -> ByteStream {
    Box::pin(std::io::Cursor::new(bytes))
}

fn named(req: &BatchRequest, ext: &str) -> Result<ObjectName, PortError> {
    ObjectName::parse(&format!(
        "{}claims/{}.{ext}",
        crate::INTERNAL_PREFIX,
        req.job_id
    ))
    .map_err(|e| PortError::permanent(format!("cannot name the submit claim: {e}")))
}

fn adopted(req: &BatchRequest) -> Submitted {
    Submitted {
        job_id: req.job_id.clone(),
        adopted: true,
    }
}

/// Submits `req` through the batch port, claimed first when its engine needs it.
pub(super) async fn submit(ctx: &Context, req: &BatchRequest) -> Result<Submitted, PortError> {
    let (Some(hold), Some(bucket)) = (req.spec.claims_submit(), &ctx.options.state_bucket) else {
        return ctx.ports.batch.submit(req).await;
    };
    let store = ctx.ports.store.as_ref();
    let claim = named(req, "json")?;
    let done = named(req, "done")?;
    for _ in 0..2 {
        if store.head(bucket, &done).await?.is_some() {
            info!(job_id = %req.job_id, "submitted by another delivery already: adopted");
            return Ok(adopted(req));
        }
        let body = serde_json::to_vec(&Claim {
            taken_at: Utc::now(),
        })
        .map_err(|e| PortError::permanent(e.to_string()))?;
        if let Some(meta) = store.create_new(bucket, &claim, stream(body)).await? {
            return won(ctx, bucket, req, &claim, &meta.object.generation, &done).await;
        }
        // Another delivery holds the claim: find its job, never start one.
        for look in 0..ADOPT_LOOKS {
            if let Some(s) = ctx.ports.batch.adopt(req).await? {
                info!(job_id = %req.job_id, "another delivery started this job: adopted");
                return Ok(Submitted { adopted: true, ..s });
            }
            if store.head(bucket, &done).await?.is_some() {
                info!(job_id = %req.job_id, "submitted by another delivery: adopted");
                return Ok(adopted(req));
            }
            if look + 1 < ADOPT_LOOKS {
                tokio::time::sleep(ADOPT_EVERY).await;
            }
        }
        let Some((taken_at, generation)) = read(store, bucket, &claim).await? else {
            continue; // given back meanwhile: claim again
        };
        let age = (Utc::now() - taken_at).to_std().unwrap_or_default();
        if age < hold {
            return Err(PortError::transient(format!(
                "another delivery of this submit claimed {} at {} and its job is not found \
                 yet; retried later (the claim is taken over after {})",
                req.job_id,
                taken_at.to_rfc3339(),
                humantime::format_duration(hold)
            )));
        }
        warn!(job_id = %req.job_id, claimed = %taken_at.to_rfc3339(), "taking over a submit claim whose holder did not answer");
        store.delete(bucket, &claim, Some(&generation)).await?;
    }
    Err(PortError::transient(format!(
        "the submit claim of {} changes hands too fast; retried later",
        req.job_id
    )))
}

/// The claim is this delivery's: submit, then mark the job started (or give the claim back).
async fn won(
    ctx: &Context,
    bucket: &BucketName,
    req: &BatchRequest,
    claim: &ObjectName,
    generation: &str,
    done: &ObjectName,
) -> Result<Submitted, PortError> {
    let store = ctx.ports.store.as_ref();
    match ctx.ports.batch.submit(req).await {
        Ok(s) => {
            if let Err(e) = store.create_new(bucket, done, stream(b"{}".to_vec())).await {
                // The job started; a later delivery finds it by the engine's look-up.
                warn!(job_id = %req.job_id, error = %e, "cannot mark the submit done");
            }
            Ok(s)
        }
        Err(e) => {
            if let Err(d) = store.delete(bucket, claim, Some(generation)).await {
                warn!(job_id = %req.job_id, error = %d, "cannot give the submit claim back; it is taken over when it is old");
            }
            Err(e)
        }
    }
}

async fn read(
    store: &dyn crate::ports::ObjectStore,
    bucket: &BucketName,
    name: &ObjectName,
) -> Result<Option<(DateTime<Utc>, String)>, PortError> {
    let Some(meta) = store.head(bucket, name).await? else {
        return Ok(None);
    };
    let mut reader = match store.open(bucket, name).await {
        Ok(r) => r,
        Err(PortError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut buf = Vec::new();
    reader
        .read_to_end(&mut buf)
        .await
        .map_err(|e| PortError::transient(format!("read a submit claim: {e}")))?;
    // An unreadable claim holds nothing anyone can honour: as old as can be.
    let taken_at =
        serde_json::from_slice::<Claim>(&buf).map_or(DateTime::<Utc>::MIN_UTC, |c| c.taken_at);
    Ok(Some((taken_at, meta.object.generation)))
}
