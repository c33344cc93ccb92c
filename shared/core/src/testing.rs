//! Test doubles for the core's unit tests (the real adapters live in other crates).

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::Utc;
use tokio::io::AsyncReadExt as _;

use crate::event::ObjectRef;
use crate::format::Column;
use crate::names::{BucketName, JobId, ObjectName, TableRef};
use crate::ports::{
    ByteStream, LoadJob, LoadState, LoadStatus, ObjectMeta, ObjectStore, PortError, Warehouse,
};

/// `(bucket, name)` → `(bytes, generation)`.
type Objects = BTreeMap<(String, String), (Vec<u8>, u64)>;

/// Objects in memory; each write gets the next generation.
#[derive(Default)]
pub(crate) struct MemoryStore {
    objects: Mutex<Objects>,
    next: Mutex<u64>,
}

impl MemoryStore {
    fn meta(bucket: &BucketName, name: &ObjectName, body: &[u8], generation: u64) -> ObjectMeta {
        ObjectMeta {
            object: ObjectRef {
                bucket: bucket.clone(),
                name: name.clone(),
                generation: generation.to_string(),
                size: Some(body.len() as u64),
            },
            etag: format!("{generation}"),
            updated: Utc::now(),
        }
    }

    fn key(bucket: &BucketName, name: &ObjectName) -> (String, String) {
        (bucket.to_string(), name.to_string())
    }
}

async fn read_all(mut body: ByteStream) -> Result<Vec<u8>, PortError> {
    let mut buf = Vec::new();
    body.read_to_end(&mut buf)
        .await
        .map_err(|e| PortError::transient(e.to_string()))?;
    Ok(buf)
}

#[async_trait]
impl ObjectStore for MemoryStore {
    async fn put(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
        body: ByteStream,
    ) -> Result<ObjectMeta, PortError> {
        let body = read_all(body).await?;
        let generation = {
            let mut n = self.next.lock().expect("lock");
            *n += 1;
            *n
        };
        let meta = Self::meta(bucket, name, &body, generation);
        self.objects
            .lock()
            .expect("lock")
            .insert(Self::key(bucket, name), (body, generation));
        Ok(meta)
    }

    async fn open(&self, bucket: &BucketName, name: &ObjectName) -> Result<ByteStream, PortError> {
        let objects = self.objects.lock().expect("lock");
        let (body, _) = objects
            .get(&Self::key(bucket, name))
            .ok_or_else(|| PortError::not_found(format!("{bucket}/{name}")))?;
        Ok(Box::pin(std::io::Cursor::new(body.clone())))
    }

    async fn head(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
    ) -> Result<Option<ObjectMeta>, PortError> {
        let objects = self.objects.lock().expect("lock");
        Ok(objects
            .get(&Self::key(bucket, name))
            .map(|(body, g)| Self::meta(bucket, name, body, *g)))
    }

    async fn list(&self, bucket: &BucketName, prefix: &str) -> Result<Vec<ObjectMeta>, PortError> {
        let objects = self.objects.lock().expect("lock");
        Ok(objects
            .iter()
            .filter(|((b, n), _)| b == bucket.as_str() && n.starts_with(prefix))
            .filter_map(|((_, n), (body, g))| {
                let name = ObjectName::parse(n).ok()?;
                Some(Self::meta(bucket, &name, body, *g))
            })
            .collect())
    }

    async fn delete(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
        generation: Option<&str>,
    ) -> Result<bool, PortError> {
        let mut objects = self.objects.lock().expect("lock");
        let key = Self::key(bucket, name);
        match objects.get(&key) {
            Some((_, g)) if generation.is_none_or(|want| want == g.to_string()) => {
                objects.remove(&key);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn create_new(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
        body: ByteStream,
    ) -> Result<Option<ObjectMeta>, PortError> {
        if self.head(bucket, name).await?.is_some() {
            return Ok(None);
        }
        self.put(bucket, name, body).await.map(Some)
    }
}

/// A warehouse whose load jobs are DONE at once (one row): it keeps every job handed to it, in
/// order, and a job id handed to it again is adopted. The table has `columns` (`None`: no such
/// table).
#[derive(Default)]
pub(crate) struct DoneJobs {
    pub(crate) jobs: Mutex<Vec<LoadJob>>,
    pub(crate) columns: Option<Vec<Column>>,
}

#[async_trait]
impl Warehouse for DoneJobs {
    async fn load(&self, job: &LoadJob, _: std::time::Duration) -> Result<LoadStatus, PortError> {
        let mut jobs = self.jobs.lock().expect("lock");
        let adopted = jobs.iter().any(|j| j.job_id == job.job_id);
        jobs.push(job.clone());
        Ok(LoadStatus {
            state: LoadState::Done { rows: 1 },
            adopted,
        })
    }
    async fn load_state(&self, _: &JobId) -> Result<LoadStatus, PortError> {
        Err(PortError::not_found("no such job"))
    }
    async fn table_columns(&self, _: &TableRef) -> Result<Option<Vec<Column>>, PortError> {
        Ok(self.columns.clone())
    }
    async fn row_count(&self, _: &TableRef) -> Result<u64, PortError> {
        Ok(0)
    }
    async fn read_table(
        &self,
        _: &TableRef,
        _: usize,
    ) -> Result<Vec<BTreeMap<String, String>>, PortError> {
        Ok(Vec::new())
    }
}
