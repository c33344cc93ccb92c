//! Dataproc Serverless batches through the Dataproc REST API (`v1`).
//!
//! - submit: `POST /v1/projects/P/locations/R/batches?batchId=ID`; a 409 (`ALREADY_EXISTS`)
//!   means the batch exists: it is adopted.
//! - state: `GET /v1/projects/P/locations/R/batches/ID` (`state`, `stateMessage`).
//! - cancel: a batch has no cancel method; its `operation` is cancelled
//!   (`POST /v1/{operation}:cancel`).

use async_trait::async_trait;
use http::Method;
use serde_json::{Value, json};

use super::api::{Api, object, seg, text_at};
use conveyor_core::config::{BatchSpec, DataprocServerless, PySparkJob, SparkJob};
use conveyor_core::names::JobId;
use conveyor_core::ports::{BatchEngine, BatchRequest, JobState, PortError, Submitted};

/// Dataproc Serverless: one batch per job id.
#[derive(Clone)]
pub struct DataprocServerlessEngine {
    api: Api,
    base: String,
}

fn spec_of(spec: &BatchSpec) -> Result<&DataprocServerless, PortError> {
    match spec {
        BatchSpec::DataprocServerless(s) => Ok(s),
        other => Err(PortError::wrong_engine("dataproc_serverless", other)),
    }
}

/// The batch id of a job: Dataproc batch ids are 4 to 63 of `a-z 0-9 -`, which
/// [`JobId::derive`] keeps to.
fn batch_id(job_id: &JobId) -> String {
    job_id.as_str().replace('_', "-")
}

pub(super) fn spark_body(job: &SparkJob) -> Value {
    object([
        ("mainClass", json!(job.main_class)),
        ("mainJarFileUri", json!(job.main_jar_file_uri)),
        ("jarFileUris", json!(job.jar_file_uris)),
        ("fileUris", json!(job.file_uris)),
        ("archiveUris", json!(job.archive_uris)),
        ("args", json!(job.args)),
    ])
}

pub(super) fn pyspark_body(job: &PySparkJob) -> Value {
    object([
        ("mainPythonFileUri", json!(job.main_python_file_uri)),
        ("pythonFileUris", json!(job.python_file_uris)),
        ("jarFileUris", json!(job.jar_file_uris)),
        ("fileUris", json!(job.file_uris)),
        ("archiveUris", json!(job.archive_uris)),
        ("args", json!(job.args)),
    ])
}

/// The `Batch` resource of a (rendered) spec.
fn batch_body(spec: &DataprocServerless) -> Result<Value, PortError> {
    let (key, workload) = match (&spec.spark, &spec.pyspark, &spec.spark_sql) {
        (Some(spark), None, None) => ("sparkBatch", spark_body(spark)),
        (None, Some(py), None) => ("pysparkBatch", pyspark_body(py)),
        (None, None, Some(sql)) => (
            "sparkSqlBatch",
            object([
                ("queryFileUri", json!(sql.query_file_uri)),
                ("queryVariables", json!(sql.query_variables)),
                ("jarFileUris", json!(sql.jar_file_uris)),
            ]),
        ),
        _ => {
            return Err(PortError::permanent(
                "a dataproc_serverless batch needs exactly one of spark, pyspark, spark_sql"
                    .to_owned(),
            ));
        }
    };
    if spec.runtime_version.trim().is_empty() {
        return Err(PortError::permanent(
            "a dataproc_serverless batch needs its runtime_version".to_owned(),
        ));
    }
    let execution = object([
        ("serviceAccount", json!(spec.service_account)),
        ("subnetworkUri", json!(spec.subnet)),
        ("networkTags", json!(spec.network_tags)),
        ("stagingBucket", json!(spec.staging_bucket)),
    ]);
    let mut body = object([
        (
            "runtimeConfig",
            object([
                ("version", json!(spec.runtime_version)),
                ("properties", json!(spec.properties)),
            ]),
        ),
        (
            "environmentConfig",
            object([("executionConfig", execution)]),
        ),
        ("labels", json!(spec.labels)),
    ]);
    if let Value::Object(map) = &mut body {
        map.insert(key.to_owned(), workload);
    }
    Ok(body)
}

impl DataprocServerlessEngine {
    pub(super) fn new(api: Api, base: String) -> Self {
        Self { api, base }
    }

    fn batches(&self, spec: &DataprocServerless) -> String {
        format!(
            "{}/v1/projects/{}/locations/{}/batches",
            self.base,
            seg(&spec.project),
            seg(&spec.region)
        )
    }

    async fn get(&self, spec: &DataprocServerless, job_id: &JobId) -> Result<Value, PortError> {
        let id = batch_id(job_id);
        let url = format!("{}/{}", self.batches(spec), seg(&id));
        self.api
            .call(Method::GET, &url, None, &format!("get Dataproc batch {id}"))
            .await
    }
}

#[async_trait]
impl BatchEngine for DataprocServerlessEngine {
    async fn submit(&self, req: &BatchRequest) -> Result<Submitted, PortError> {
        let rendered = req.spec.rendered(&req.vars).map_err(PortError::permanent)?;
        let spec = spec_of(&rendered)?;
        let body = batch_body(spec)?;
        let id = batch_id(&req.job_id);
        let url = format!("{}?batchId={}", self.batches(spec), seg(&id));
        let what = format!("create Dataproc batch {id}");
        let adopted = self.api.create(&url, &body, &what).await?;
        Ok(Submitted {
            job_id: req.job_id.clone(),
            adopted,
        })
    }

    async fn state(&self, spec: &BatchSpec, job_id: &JobId) -> Result<JobState, PortError> {
        let batch = self.get(spec_of(spec)?, job_id).await?;
        let state = text_at(&batch, &["state"])
            .unwrap_or("STATE_UNSPECIFIED")
            .to_owned();
        let terminal = spec.is_terminal(&state);
        let error = (terminal && state != "SUCCEEDED")
            .then(|| text_at(&batch, &["stateMessage"]).map(str::to_owned))
            .flatten();
        Ok(JobState::reported(state, terminal, error))
    }

    async fn cancel(&self, spec: &BatchSpec, job_id: &JobId) -> Result<(), PortError> {
        let s = spec_of(spec)?;
        let batch = match self.get(s, job_id).await {
            Ok(b) => b,
            Err(PortError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if spec.is_terminal(text_at(&batch, &["state"]).unwrap_or_default()) {
            return Ok(());
        }
        let Some(operation) = text_at(&batch, &["operation"]).filter(|o| is_resource_name(o))
        else {
            return Err(PortError::permanent(format!(
                "Dataproc batch {} names no operation to cancel",
                batch_id(job_id)
            )));
        };
        let url = format!("{}/v1/{operation}:cancel", self.base);
        let what = format!("cancel Dataproc operation {operation}");
        self.api.stop(Method::POST, &url, None, &what).await
    }
}

/// A resource name as the API gives it (`projects/p/regions/r/operations/o`): safe to put in
/// a URL path as it is.
fn is_resource_name(name: &str) -> bool {
    name.starts_with("projects/")
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn seed_002() -> DataprocServerless {
        DataprocServerless {
            project: "my-project".into(),
            region: "us-central1".into(),
            runtime_version: "2.1".into(),
            spark: Some(SparkJob {
                main_class: Some("com.example.services.Application".into()),
                main_jar_file_uri: None,
                jar_file_uris: vec!["gs://encryption-poc/kms-utils-1.1.jar".into()],
                file_uris: vec![],
                archive_uris: vec![],
                args: vec!["--source-table=users".into()],
            }),
            pyspark: None,
            spark_sql: None,
            service_account: Some("sa@my-project.iam.gserviceaccount.com".into()),
            subnet: Some("default".into()),
            network_tags: vec![],
            staging_bucket: Some("encryption-poc".into()),
            properties: BTreeMap::new(),
            labels: BTreeMap::from([("team".into(), "data".into())]),
        }
    }

    #[test]
    fn a_spark_batch_body_pins_the_runtime_and_names_its_account_and_subnet() {
        let body = batch_body(&seed_002()).unwrap();
        assert_eq!(
            body,
            json!({
                "sparkBatch": {
                    "mainClass": "com.example.services.Application",
                    "jarFileUris": ["gs://encryption-poc/kms-utils-1.1.jar"],
                    "args": ["--source-table=users"],
                },
                "runtimeConfig": {"version": "2.1"},
                "environmentConfig": {"executionConfig": {
                    "serviceAccount": "sa@my-project.iam.gserviceaccount.com",
                    "subnetworkUri": "default",
                    "stagingBucket": "encryption-poc",
                }},
                "labels": {"team": "data"},
            })
        );
    }

    #[test]
    fn a_batch_with_two_workloads_is_refused() {
        let mut spec = seed_002();
        spec.pyspark = Some(PySparkJob {
            main_python_file_uri: "gs://b/job.py".into(),
            python_file_uris: vec![],
            jar_file_uris: vec![],
            file_uris: vec![],
            archive_uris: vec![],
            args: vec![],
        });
        assert!(batch_body(&spec).is_err());
        spec.spark = None;
        assert!(batch_body(&spec).unwrap()["pysparkBatch"]["mainPythonFileUri"] == "gs://b/job.py");
    }

    #[test]
    fn only_api_resource_names_are_put_in_cancel_urls() {
        assert!(is_resource_name(
            "projects/p/regions/us-central1/operations/abc-1"
        ));
        assert!(!is_resource_name("projects/../x"));
        assert!(!is_resource_name("https://evil"));
    }
}
