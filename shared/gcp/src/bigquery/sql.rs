//! `engine: sql` on BigQuery: a query job inserted under the job's deterministic id (409 =
//! adopt), read with `jobs.get`, cancelled with `jobs.cancel`. Success is DONE without an
//! `errorResult` only: a DONE job with one is reported as FAILED, with BigQuery's message.

use async_trait::async_trait;
use serde_json::json;
use tracing::info;

use conveyor_core::config::{BatchSpec, CreateDisposition, WriteDisposition};
use conveyor_core::names::JobId;
use conveyor_core::ports::{BatchEngine, BatchRequest, JobState, PortError, Submitted};

use super::{BigQuery, Inserted};

/// The `sql` engine on BigQuery.
#[derive(Clone)]
pub struct SqlEngine {
    bq: BigQuery,
}

impl SqlEngine {
    /// Runs query jobs with `bq`.
    pub fn new(bq: BigQuery) -> Self {
        Self { bq }
    }
}

#[async_trait]
impl BatchEngine for SqlEngine {
    async fn submit(&self, req: &BatchRequest) -> Result<Submitted, PortError> {
        let BatchSpec::Sql(spec) = &req.spec else {
            return Err(PortError::wrong_engine("sql", &req.spec));
        };
        let (query, destination) = spec.rendered(&req.vars).map_err(PortError::permanent)?;
        let mut q = json!({ "query": query, "useLegacySql": false });
        if let Some(t) = &destination {
            q["destinationTable"] = json!({
                "projectId": t.project.clone().unwrap_or_else(|| self.bq.project.clone()),
                "datasetId": t.dataset,
                "tableId": t.table,
            });
            q["writeDisposition"] = json!(match spec
                .write_disposition
                .unwrap_or(WriteDisposition::WriteEmpty)
            {
                WriteDisposition::WriteAppend => "WRITE_APPEND",
                WriteDisposition::WriteTruncate => "WRITE_TRUNCATE",
                WriteDisposition::WriteEmpty => "WRITE_EMPTY",
            });
            q["createDisposition"] = json!(match spec.create_disposition {
                CreateDisposition::CreateIfNeeded => "CREATE_IF_NEEDED",
                CreateDisposition::CreateNever => "CREATE_NEVER",
            });
        }
        let adopted = matches!(
            self.bq
                .insert_job(req.job_id.as_str(), &json!({ "query": q }))
                .await?,
            Inserted::Exists
        );
        info!(job_id = %req.job_id, adopted, "query job submitted");
        Ok(Submitted {
            job_id: req.job_id.clone(),
            adopted,
        })
    }

    async fn state(&self, _spec: &BatchSpec, job_id: &JobId) -> Result<JobState, PortError> {
        let job = self.bq.get_job(job_id.as_str()).await?;
        Ok(match (&job.state[..], &job.error) {
            ("DONE", None) => JobState {
                log: None,
                state: "DONE".to_owned(),
                terminal: true,
                error: None,
            },
            ("DONE", Some((reason, message))) => JobState {
                log: None,
                state: "FAILED".to_owned(),
                terminal: true,
                error: Some(format!("{reason}: {message}")),
            },
            (other, _) => JobState {
                log: None,
                state: other.to_owned(),
                terminal: false,
                error: None,
            },
        })
    }

    async fn cancel(&self, _spec: &BatchSpec, job_id: &JobId) -> Result<(), PortError> {
        self.bq.cancel_job(job_id.as_str()).await
    }
}
