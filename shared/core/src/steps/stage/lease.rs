//! One stage run per pipeline at a time: a lease object `_conveyor/lease/stage/<pipeline>.json`
//! in the landing bucket, created with `create_new` (so two runs cannot both take it), renewed
//! while the run goes on, and deleted at its end. A lease whose run died expires: the next run
//! deletes it by its generation (so it never deletes a lease another run has just taken) and
//! takes it over.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::names::{BucketName, ObjectName, PipelineName};
use crate::ports::{ByteStream, ObjectStore, PortError};

/// How long a lease lasts without renewal.
pub(super) const TTL_SECONDS: i64 = 120;

/// How often a run renews its lease.
pub(super) const RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Content {
    holder: String,
    taken_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// A held lease.
#[derive(Debug)]
pub(super) struct Lease {
    bucket: BucketName,
    name: ObjectName,
    holder: String,
    taken_at: DateTime<Utc>,
    generation: String,
}

/// Why a lease could not be taken.
#[derive(Debug)]
pub(super) enum Refused {
    /// Another run holds it.
    Busy(String),
    /// The store failed.
    Store(PortError),
}

fn body(content: &Content) -> Result<ByteStream, PortError> {
    let bytes = serde_json::to_vec(content).map_err(|e| PortError::permanent(e.to_string()))?;
    Ok(Box::pin(std::io::Cursor::new(bytes)))
}

fn lease_name(pipeline: &PipelineName) -> Result<ObjectName, PortError> {
    ObjectName::parse(&format!(
        "{}lease/stage/{pipeline}.json",
        crate::INTERNAL_PREFIX
    ))
    .map_err(|e| PortError::permanent(e.to_string()))
}

async fn read(
    store: &dyn ObjectStore,
    bucket: &BucketName,
    name: &ObjectName,
) -> Result<Option<(Content, String)>, PortError> {
    let Some((buf, generation)) = crate::ports::read_small(store, bucket, name, 64 * 1024).await?
    else {
        return Ok(None);
    };
    // An unreadable lease is treated as expired: it holds nothing anyone can honour.
    let content = serde_json::from_slice(&buf).unwrap_or(Content {
        holder: "?".to_owned(),
        taken_at: DateTime::<Utc>::MIN_UTC,
        expires_at: DateTime::<Utc>::MIN_UTC,
    });
    Ok(Some((content, generation)))
}

impl Lease {
    /// Takes the lease of `pipeline`'s stage runs for `holder`.
    pub(super) async fn acquire(
        store: &dyn ObjectStore,
        bucket: &BucketName,
        pipeline: &PipelineName,
        holder: &str,
    ) -> Result<Self, Refused> {
        let name = lease_name(pipeline).map_err(Refused::Store)?;
        for _ in 0..3 {
            let now = Utc::now();
            let content = Content {
                holder: holder.to_owned(),
                taken_at: now,
                expires_at: now + Duration::seconds(TTL_SECONDS),
            };
            let created = store
                .create_new(bucket, &name, body(&content).map_err(Refused::Store)?)
                .await
                .map_err(Refused::Store)?;
            if let Some(meta) = created {
                return Ok(Self {
                    bucket: bucket.clone(),
                    name,
                    holder: holder.to_owned(),
                    taken_at: now,
                    generation: meta.object.generation,
                });
            }
            let Some((held, generation)) =
                read(store, bucket, &name).await.map_err(Refused::Store)?
            else {
                continue; // released meanwhile: try again
            };
            if held.expires_at > now {
                return Err(Refused::Busy(format!(
                    "another stage run of {pipeline} ({}) holds its lease until {}: it copies what \
                     this run would; run again once it has ended",
                    held.holder,
                    held.expires_at.to_rfc3339()
                )));
            }
            warn!(pipeline = %pipeline, holder = %held.holder, "taking over an expired stage lease");
            store
                .delete(bucket, &name, Some(&generation))
                .await
                .map_err(Refused::Store)?;
        }
        Err(Refused::Busy(format!(
            "the stage lease of {pipeline} changes hands too fast; run again later"
        )))
    }

    /// Extends the lease. An error means it was lost (it expired and another run took it):
    /// the run must stop.
    pub(super) async fn renew(&mut self, store: &dyn ObjectStore) -> Result<(), String> {
        let now = Utc::now();
        let content = Content {
            holder: self.holder.clone(),
            taken_at: self.taken_at,
            expires_at: now + Duration::seconds(TTL_SECONDS),
        };
        let deleted = store
            .delete(&self.bucket, &self.name, Some(&self.generation))
            .await
            .map_err(|e| format!("cannot renew the stage lease: {e}"))?;
        if !deleted {
            return Err("the stage lease expired and another run took it".to_owned());
        }
        let stream = body(&content).map_err(|e| e.to_string())?;
        match store.create_new(&self.bucket, &self.name, stream).await {
            Ok(Some(meta)) => {
                self.generation = meta.object.generation;
                Ok(())
            }
            Ok(None) => Err("another run took the stage lease while it was renewed".to_owned()),
            Err(e) => Err(format!("cannot renew the stage lease: {e}")),
        }
    }

    /// Gives the lease back.
    pub(super) async fn release(self, store: &dyn ObjectStore) {
        match store
            .delete(&self.bucket, &self.name, Some(&self.generation))
            .await
        {
            Ok(_) => info!(lease = %self.name, "stage lease released"),
            Err(e) => {
                warn!(lease = %self.name, error = %e, "cannot release the stage lease; it expires by itself")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemoryStore;

    #[tokio::test]
    async fn a_second_run_is_refused_until_the_first_releases_and_an_expired_lease_is_taken_over() {
        let store = MemoryStore::default();
        let bucket = BucketName::parse("landing").unwrap();
        let p = PipelineName::parse("vendor").unwrap();
        let first = Lease::acquire(&store, &bucket, &p, "run-1").await.unwrap();
        match Lease::acquire(&store, &bucket, &p, "run-2").await {
            Err(Refused::Busy(m)) => assert!(m.contains("run-1"), "{m}"),
            other => panic!("expected busy, got {other:?}"),
        }
        first.release(&store).await;
        let mut second = Lease::acquire(&store, &bucket, &p, "run-2").await.unwrap();
        second.renew(&store).await.unwrap();

        // A lease whose run died: expired, taken over.
        let name = lease_name(&p).unwrap();
        let gen_before = second.generation.clone();
        let stale = Content {
            holder: "dead".into(),
            taken_at: Utc::now() - Duration::hours(1),
            expires_at: Utc::now() - Duration::minutes(1),
        };
        assert!(
            store
                .delete(&bucket, &name, Some(&gen_before))
                .await
                .unwrap()
        );
        store
            .create_new(&bucket, &name, body(&stale).unwrap())
            .await
            .unwrap();
        let third = Lease::acquire(&store, &bucket, &p, "run-3").await.unwrap();
        assert_eq!(third.holder, "run-3");
        assert!(
            second.renew(&store).await.is_err(),
            "the run that lost its lease learns it"
        );
    }
}
