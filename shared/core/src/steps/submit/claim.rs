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
//!   (adopted) and the job is followed as usual. A claim older than the engine's hold belongs
//!   to a holder that died between the claim and the answer: it is taken over (deleted by its
//!   generation, so a claim just taken by another delivery stays) and the job submitted, the
//!   engine's own look-up first (a Cloud Run execution the dead holder started is adopted).
//! - Otherwise the loser asks the engine to find the job without starting it
//!   ([`BatchEngine::adopt`]: a Cloud Run execution carrying the job id) or waits for `.done`,
//!   a few times over a few seconds; still nothing: a transient error, so the delivery comes
//!   back later.
//!
//! Without a state bucket, submits are not claimed (the engines' own look-ups only).
//!
//! [`BatchSpec::claims_submit`]: crate::config::BatchSpec::claims_submit
//! [`BatchEngine::adopt`]: crate::ports::BatchEngine::adopt

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
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
        // Another delivery holds the claim.
        let Some((taken_at, generation)) = read(store, bucket, &claim).await? else {
            continue; // given back meanwhile: claim again
        };
        let age = (Utc::now() - taken_at).to_std().unwrap_or_default();
        if age >= hold {
            // Its holder died between the claim and the answer: take it over (by generation:
            // a claim another delivery has just taken stays). The engine's own look-up still
            // adopts a Cloud Run execution the dead holder started.
            warn!(job_id = %req.job_id, claimed = %taken_at.to_rfc3339(), "taking over a submit claim whose holder did not answer");
            store.delete(bucket, &claim, Some(&generation)).await?;
            continue;
        }
        // Find its job, never start one.
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
        return Err(PortError::transient(format!(
            "another delivery of this submit claimed {} at {} and its job is not found \
             yet; retried later (the claim is taken over after {})",
            req.job_id,
            taken_at.to_rfc3339(),
            humantime::format_duration(hold)
        )));
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
    let Some((buf, generation)) = crate::ports::read_small(store, bucket, name, 64 * 1024).await?
    else {
        return Ok(None);
    };
    // An unreadable claim holds nothing anyone can honour: as old as can be.
    let taken_at =
        serde_json::from_slice::<Claim>(&buf).map_or(DateTime::<Utc>::MIN_UTC, |c| c.taken_at);
    Ok(Some((taken_at, generation)))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;

    use super::*;
    use crate::config::BatchSpec;
    use crate::names::{JobId, PipelineName, RunId};
    use crate::ports::{BatchEngine, JobState, ObjectStore, Ports};
    use crate::testing::MemoryStore;

    /// Counts submits; finds a job only once `found` is set (another delivery's execution).
    #[derive(Default)]
    struct Engine {
        submits: Mutex<u32>,
        found: Mutex<bool>,
    }

    #[async_trait]
    impl BatchEngine for Engine {
        async fn submit(&self, req: &BatchRequest) -> Result<Submitted, PortError> {
            *self.submits.lock().expect("lock") += 1;
            Ok(Submitted {
                job_id: req.job_id.clone(),
                adopted: false,
            })
        }
        async fn adopt(&self, req: &BatchRequest) -> Result<Option<Submitted>, PortError> {
            Ok((*self.found.lock().expect("lock")).then(|| Submitted {
                job_id: req.job_id.clone(),
                adopted: true,
            }))
        }
        async fn state(&self, _: &BatchSpec, _: &JobId) -> Result<JobState, PortError> {
            Err(PortError::permanent("not followed here"))
        }
        async fn cancel(&self, _: &BatchSpec, _: &JobId) -> Result<(), PortError> {
            Ok(())
        }
    }

    fn setup() -> (Context, Arc<Engine>, Arc<MemoryStore>, BatchRequest) {
        let engine = Arc::new(Engine::default());
        let store = Arc::new(MemoryStore::default());
        let ports = Ports {
            batch: engine.clone(),
            store: store.clone(),
            ..Ports::unwired()
        };
        let config = crate::config::parse_str("pipelines: []\n", "t.yaml").expect("config");
        let mut ctx = Context::new(Arc::new(config), ports);
        ctx.options.state_bucket = Some(BucketName::parse("state").expect("bucket"));
        let spec: BatchSpec = serde_json::from_value(serde_json::json!({
            "engine": "cloud_run_job", "project": "p", "region": "r", "job": "exporter"
        }))
        .expect("spec");
        let pipeline = PipelineName::parse("nightly").expect("name");
        let run_id = RunId::for_origin(&pipeline, &crate::run_origin::RunOrigin::Key { key: "k1" });
        let req = BatchRequest {
            job_id: JobId::parse("cv-batch-nightly-1-a1").expect("job id"),
            run_id,
            attempt: 1,
            spec,
            vars: Default::default(),
            job: "batch".to_owned(),
            row: Default::default(),
        };
        (ctx, engine, store, req)
    }

    async fn claim_of(store: &MemoryStore, taken_at: DateTime<Utc>, req: &BatchRequest) {
        let body = serde_json::to_vec(&Claim { taken_at }).expect("json");
        store
            .create_new(
                &BucketName::parse("state").expect("bucket"),
                &named(req, "json").expect("name"),
                stream(body),
            )
            .await
            .expect("create")
            .expect("created");
    }

    #[tokio::test]
    async fn the_winner_submits_once_and_a_later_delivery_adopts_by_the_done_mark() {
        let (ctx, engine, _, req) = setup();
        let first = submit(&ctx, &req).await.expect("first");
        assert!(!first.adopted);
        let second = submit(&ctx, &req).await.expect("second");
        assert!(second.adopted, "the job was submitted already");
        assert_eq!(*engine.submits.lock().expect("lock"), 1);
    }

    #[tokio::test]
    async fn a_delivery_that_loses_the_claim_adopts_the_winners_job_and_never_submits() {
        let (ctx, engine, store, req) = setup();
        claim_of(&store, Utc::now(), &req).await;
        *engine.found.lock().expect("lock") = true;
        let s = submit(&ctx, &req).await.expect("adopted");
        assert!(s.adopted);
        assert_eq!(*engine.submits.lock().expect("lock"), 0);
    }

    #[tokio::test]
    async fn a_claim_whose_holder_died_is_taken_over_and_the_job_submitted() {
        let (ctx, engine, store, req) = setup();
        claim_of(&store, Utc::now() - chrono::Duration::hours(1), &req).await;
        let s = submit(&ctx, &req).await.expect("taken over");
        assert!(!s.adopted);
        assert_eq!(*engine.submits.lock().expect("lock"), 1);
    }
}
