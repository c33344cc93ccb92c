//! `max_active_runs` slots: the atomic part of admission. Slot `k` of a pipeline with limit
//! `N` (`0 <= k < N`) is one object in the state bucket ([`StepOptions::state_bucket`]):
//!
//! ```text
//! _conveyor/slots/PIPELINE/K.json   {"run_id": …, "taken_at": …}
//! ```
//!
//! A run starts only once it holds a slot, taken with `create_new`, so two starts decided at
//! the same instant cannot both take the last one, whatever the run log (written
//! asynchronously by the log step) says yet. A run holding a slot already (a redelivered
//! start, a queued run released twice) keeps it. The run's end deletes its slot (by
//! generation). A slot whose holder will never delete it is *stale* and is taken over (deleted
//! by its generation, so a slot just taken by another start is never deleted):
//! - its run has ended in the run log (a run ended by a timeout, an operator, or an end whose
//!   delete failed), or
//! - its run has no job row in the run log [`STALE_AFTER`] after the slot was taken (the
//!   start that took it crashed before its first job; a redelivery of that start takes the
//!   same slot back, as above).
//!
//! [`StepOptions::state_bucket`]: crate::steps::StepOptions::state_bucket

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::Pipeline;
use crate::names::{BucketName, ObjectName, RunId};
use crate::ports::{ByteStream, ObjectStore, PortError};

/// How long a slot whose run has no job row in the run log is held before it is stale.
pub(super) const STALE_AFTER: Duration = Duration::minutes(10);

/// What a slot object holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claim {
    run_id: String,
    taken_at: DateTime<Utc>,
}

/// What the run log says of the runs of a pipeline, for the stale rule.
pub(super) trait Seen: Sync {
    /// Whether `run` has a job row other than QUEUED and no run end.
    fn going(&self, run: &str) -> bool;
    /// Whether `run` has ended.
    fn ended(&self, run: &str) -> bool;
}

/// The slots of one pipeline.
pub(super) struct Slots<'a> {
    store: &'a dyn ObjectStore,
    bucket: &'a BucketName,
    prefix: String,
}

fn port(what: &str, e: PortError) -> super::super::StepError {
    super::super::StepError::from_port(PortError::transient(format!("{what}: {e}")).with_source(e))
}

impl<'a> Slots<'a> {
    /// The slots of `pipeline` in `bucket`.
    pub(super) fn new(
        store: &'a dyn ObjectStore,
        bucket: &'a BucketName,
        pipeline: &Pipeline,
    ) -> Self {
        Self {
            store,
            bucket,
            prefix: format!("{}slots/{}/", crate::INTERNAL_PREFIX, pipeline.name),
        }
    }

    fn name(&self, k: u32) -> Result<ObjectName, super::super::StepError> {
        ObjectName::parse(&format!("{}{k}.json", self.prefix)).map_err(|e| {
            super::super::StepError::Rejected(format!("cannot name a max_active_runs slot: {e}"))
        })
    }

    async fn read(&self, name: &ObjectName) -> Result<Option<(Claim, String)>, PortError> {
        let Some((buf, generation)) =
            crate::ports::read_small(self.store, self.bucket, name, 64 * 1024).await?
        else {
            return Ok(None);
        };
        // An unreadable slot holds nothing anyone can honour: stale at once.
        let claim = serde_json::from_slice(&buf).unwrap_or(Claim {
            run_id: String::new(),
            taken_at: DateTime::<Utc>::MIN_UTC,
        });
        Ok(Some((claim, generation)))
    }

    /// Takes a slot of `limit` for `run_id` (or finds the one it holds). `false`: every slot
    /// is held by a run that is not stale.
    pub(super) async fn claim(
        &self,
        run_id: &RunId,
        limit: u32,
        seen: &dyn Seen,
        now: DateTime<Utc>,
    ) -> Result<bool, super::super::StepError> {
        let mut held = Vec::with_capacity(limit as usize);
        for k in 0..limit {
            let name = self.name(k)?;
            let slot = self
                .read(&name)
                .await
                .map_err(|e| port("read a max_active_runs slot", e))?;
            if slot
                .as_ref()
                .is_some_and(|(c, _)| c.run_id == run_id.as_str())
            {
                return Ok(true);
            }
            held.push((name, slot));
        }
        for (k, (name, mut slot)) in held.into_iter().enumerate() {
            for _ in 0..3 {
                if let Some((claim, generation)) = &slot {
                    if claim.run_id == run_id.as_str() {
                        return Ok(true);
                    }
                    let stale = seen.ended(&claim.run_id)
                        || (!seen.going(&claim.run_id) && now - claim.taken_at > STALE_AFTER);
                    if !stale {
                        break;
                    }
                    warn!(slot = k, holder = %claim.run_id, "taking over a stale max_active_runs slot: its run has ended or never started");
                    self.store
                        .delete(self.bucket, &name, Some(generation))
                        .await
                        .map_err(|e| port("delete a stale max_active_runs slot", e))?;
                }
                let body = serde_json::to_vec(&Claim {
                    run_id: run_id.to_string(),
                    taken_at: now,
                })
                .map_err(|e| super::super::StepError::Rejected(e.to_string()))?;
                let stream: ByteStream = Box::pin(std::io::Cursor::new(body));
                if self
                    .store
                    .create_new(self.bucket, &name, stream)
                    .await
                    .map_err(|e| port("take a max_active_runs slot", e))?
                    .is_some()
                {
                    info!(slot = k, run_id = %run_id, "max_active_runs slot taken");
                    return Ok(true);
                }
                // Taken meanwhile: look at who holds it now.
                slot = self
                    .read(&name)
                    .await
                    .map_err(|e| port("read a max_active_runs slot", e))?;
            }
        }
        Ok(false)
    }

    /// Gives back every slot `run_id` holds (by generation: a slot taken over meanwhile stays).
    pub(super) async fn free(&self, run_id: &RunId) -> Result<(), super::super::StepError> {
        let objects = self
            .store
            .list(self.bucket, &self.prefix)
            .await
            .map_err(|e| port("list the max_active_runs slots", e))?;
        for meta in objects {
            let name = meta.object.name.clone();
            let Some((claim, generation)) = self
                .read(&name)
                .await
                .map_err(|e| port("read a max_active_runs slot", e))?
            else {
                continue;
            };
            if claim.run_id == run_id.as_str() {
                self.store
                    .delete(self.bucket, &name, Some(&generation))
                    .await
                    .map_err(|e| port("free a max_active_runs slot", e))?;
                info!(slot = %name, run_id = %run_id, "max_active_runs slot freed");
            }
        }
        Ok(())
    }
}
