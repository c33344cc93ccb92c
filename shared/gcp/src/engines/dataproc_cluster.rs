//! Dataproc jobs on ephemeral clusters through the Dataproc REST API (`v1`).
//!
//! One cluster per job id, named after it, lives exactly as long as the job:
//! 1. submit creates the cluster (`POST /v1/projects/P/regions/R/clusters`; 409 = it exists,
//!    adopted) and returns at once: a cluster takes minutes, which no request should wait for;
//! 2. each check (`follow`) reads the job (`GET .../jobs/ID`); while there is none it reads the
//!    cluster and, once the cluster is RUNNING, submits the job with the job id as its
//!    `reference.jobId` (`POST .../jobs:submit`; 409 = submitted already);
//! 3. when the job has ended, in any state, or is cancelled after its timeout, the poll step
//!    releases it: the cluster is deleted (`DELETE .../clusters/NAME`; 404 = gone already).
//!
//! The cluster's `max_idle` (Dataproc's idle-delete TTL) is the safety net should Conveyor
//! never get to that delete.

use async_trait::async_trait;
use http::Method;
use serde_json::{Value, json};

use super::api::{Api, final_unless_transient, object, seg, text_at};
use super::dataproc_serverless::{pyspark_body, spark_body};
use conveyor_core::config::{BatchSpec, DataprocCluster};
use conveyor_core::names::{JobId, short_hash};
use conveyor_core::ports::{BatchEngine, BatchRequest, JobState, PortError, Submitted};

/// Dataproc's longest cluster name.
const MAX_CLUSTER_NAME: usize = 51;

/// Dataproc jobs on ephemeral clusters.
#[derive(Clone)]
pub struct DataprocClusterEngine {
    api: Api,
    base: String,
}

fn spec_of(spec: &BatchSpec) -> Result<&DataprocCluster, PortError> {
    match spec {
        BatchSpec::DataprocCluster(s) => Ok(s),
        other => Err(PortError::wrong_engine("dataproc_cluster", other)),
    }
}

/// The cluster of a job: the job id when it makes a valid cluster name (a letter, then at most
/// 50 of `a-z 0-9 -`), else its start and a hash of the whole id.
pub(super) fn cluster_name(job_id: &JobId) -> String {
    let id = job_id.as_str().replace('_', "-");
    let starts_well = id.starts_with(|c: char| c.is_ascii_lowercase());
    if starts_well && id.len() <= MAX_CLUSTER_NAME && !id.ends_with('-') {
        return id;
    }
    let hash = short_hash(&[job_id.as_str()]);
    let lead = if starts_well { "" } else { "cv-" };
    let room = MAX_CLUSTER_NAME - 1 - hash.len() - lead.len();
    let prefix: String = id.chars().take(room).collect();
    format!("{lead}{}-{hash}", prefix.trim_end_matches('-'))
}

fn scope_uri(scope: &str) -> String {
    if scope.contains("://") {
        scope.to_owned()
    } else {
        format!("https://www.googleapis.com/auth/{scope}")
    }
}

/// What a cluster's state (`ClusterStatus.state`) means for the job waiting on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClusterPhase {
    /// The job can be submitted.
    Ready,
    /// Not yet: the cluster is on its way up (or being changed).
    Waiting,
    /// The cluster will not run the job: it failed, or is going away.
    Failed,
}

/// The phase of a cluster in `state`.
pub(crate) fn cluster_phase(state: &str) -> ClusterPhase {
    match state {
        "RUNNING" => ClusterPhase::Ready,
        "ERROR" | "ERROR_DUE_TO_UPDATE" | "DELETING" | "STOPPING" | "STOPPED" => {
            ClusterPhase::Failed
        }
        // CREATING, STARTING, UPDATING, REPAIRING, SCHEDULED, UNKNOWN.
        _ => ClusterPhase::Waiting,
    }
}

/// The `Cluster` resource of a (rendered) spec.
fn cluster_body(spec: &DataprocCluster, name: &str) -> Value {
    let k = &spec.cluster;
    let mut properties = k.properties.clone();
    if k.single_node {
        properties
            .entry("dataproc:dataproc.allow.zero.workers".to_owned())
            .or_insert_with(|| "true".to_owned());
    }
    let scopes: Vec<String> = k.scopes.iter().map(|s| scope_uri(s)).collect();
    let workers = if k.single_node {
        json!({"numInstances": 0})
    } else {
        object([
            ("numInstances", json!(k.num_workers)),
            ("machineTypeUri", json!(k.worker_machine_type)),
            ("imageUri", json!(k.image)),
        ])
    };
    let config = object([
        (
            "gceClusterConfig",
            object([
                ("zoneUri", json!(k.zone)),
                ("subnetworkUri", json!(k.subnet)),
                ("internalIpOnly", json!(k.internal_ip_only)),
                ("serviceAccount", json!(k.service_account)),
                ("serviceAccountScopes", json!(scopes)),
                ("tags", json!(k.tags)),
            ]),
        ),
        (
            "masterConfig",
            object([
                ("numInstances", json!(1)),
                ("machineTypeUri", json!(k.master_machine_type)),
                ("imageUri", json!(k.image)),
            ]),
        ),
        ("workerConfig", workers),
        (
            "softwareConfig",
            object([
                ("imageVersion", json!(k.image_version)),
                ("properties", json!(properties)),
            ]),
        ),
        (
            "lifecycleConfig",
            json!({"idleDeleteTtl": format!("{}s", k.max_idle.as_secs())}),
        ),
        (
            "metastoreConfig",
            match &k.metastore {
                Some(m) => json!({"dataprocMetastoreService": m}),
                None => Value::Null,
            },
        ),
    ]);
    object([
        ("projectId", json!(spec.project)),
        ("clusterName", json!(name)),
        ("config", config),
        ("labels", json!(spec.labels)),
    ])
}

/// The `SubmitJobRequest` of a (rendered) spec: the job, with the job id as its reference,
/// placed on its cluster.
fn job_body(spec: &DataprocCluster, job_id: &JobId, cluster: &str) -> Result<Value, PortError> {
    let with_properties = |mut v: Value| {
        if let Value::Object(map) = &mut v
            && !spec.properties.is_empty()
        {
            map.insert("properties".to_owned(), json!(spec.properties));
        }
        v
    };
    let (key, job) = match (&spec.pig, &spec.spark, &spec.pyspark) {
        (Some(pig), None, None) => (
            "pigJob",
            object([
                ("queryFileUri", json!(pig.query_file_uri)),
                (
                    "queryList",
                    if pig.queries.is_empty() {
                        Value::Null
                    } else {
                        json!({"queries": pig.queries})
                    },
                ),
                ("scriptVariables", json!(pig.script_variables)),
                ("properties", json!(spec.properties)),
                ("jarFileUris", json!(pig.jar_file_uris)),
                ("continueOnFailure", json!(pig.continue_on_failure)),
            ]),
        ),
        (None, Some(spark), None) => ("sparkJob", with_properties(spark_body(spark))),
        (None, None, Some(py)) => ("pysparkJob", with_properties(pyspark_body(py))),
        _ => {
            return Err(PortError::permanent(
                "a dataproc_cluster batch needs exactly one of pig, spark, pyspark".to_owned(),
            ));
        }
    };
    let mut inner = object([
        (
            "reference",
            json!({"projectId": spec.project, "jobId": job_id.as_str()}),
        ),
        ("placement", json!({"clusterName": cluster})),
        ("labels", json!(spec.labels)),
    ]);
    if let Value::Object(map) = &mut inner {
        map.insert(key.to_owned(), job);
    }
    Ok(json!({ "job": inner }))
}

impl DataprocClusterEngine {
    pub(super) fn new(api: Api, base: String) -> Self {
        Self { api, base }
    }

    fn region_url(&self, spec: &DataprocCluster) -> String {
        format!(
            "{}/v1/projects/{}/regions/{}",
            self.base,
            seg(&spec.project),
            seg(&spec.region)
        )
    }

    /// The job's state; while there is no job, the cluster's, and once the cluster runs and
    /// `job` (the submit request) is given, the job is submitted.
    async fn observe(
        &self,
        spec: &BatchSpec,
        job_id: &JobId,
        job: Option<&Value>,
    ) -> Result<JobState, PortError> {
        let s = spec_of(spec)?;
        let region = self.region_url(s);
        let url = format!("{region}/jobs/{}", seg(job_id.as_str()));
        match self
            .api
            .call(
                Method::GET,
                &url,
                None,
                &format!("get Dataproc job {job_id}"),
            )
            .await
        {
            Ok(found) => {
                let state = text_at(&found, &["status", "state"])
                    .unwrap_or("STATE_UNSPECIFIED")
                    .to_owned();
                let terminal = spec.is_terminal(&state);
                let error = (terminal && state != "DONE")
                    .then(|| text_at(&found, &["status", "details"]).map(str::to_owned))
                    .flatten();
                return Ok(JobState::reported(state, terminal, error));
            }
            Err(PortError::NotFound(_)) => {}
            Err(e) => return Err(final_unless_transient(e)),
        }
        let name = cluster_name(job_id);
        let url = format!("{region}/clusters/{}", seg(&name));
        let cluster = self
            .api
            .call(
                Method::GET,
                &url,
                None,
                &format!("get Dataproc cluster {name}"),
            )
            .await
            .map_err(final_unless_transient)?;
        let state = text_at(&cluster, &["status", "state"]).unwrap_or("UNKNOWN");
        let waiting = JobState {
            log: None,
            state: "CLUSTER_CREATING".to_owned(),
            terminal: false,
            error: None,
        };
        match cluster_phase(state) {
            ClusterPhase::Ready => {
                let Some(job) = job else {
                    // Without the request the job cannot be submitted here; `follow` will.
                    return Ok(waiting);
                };
                let url = format!("{region}/jobs:submit");
                let what = format!("submit Dataproc job {job_id} to cluster {name}");
                match self.api.call(Method::POST, &url, Some(job), &what).await {
                    Ok(_) | Err(PortError::Conflict(_)) => Ok(JobState {
                        log: None,
                        state: "PENDING".to_owned(),
                        terminal: false,
                        error: None,
                    }),
                    // The cluster is not ready after all: the next check tries again.
                    Err(PortError::Precondition(c)) => Err(PortError::Transient(c)),
                    Err(e) => Err(e),
                }
            }
            ClusterPhase::Failed => {
                let detail = text_at(&cluster, &["status", "detail"]).unwrap_or("no detail");
                Ok(JobState {
                    log: None,
                    state: "CLUSTER_ERROR".to_owned(),
                    terminal: true,
                    error: Some(format!(
                        "cluster {name} is {state} before its job ran: {detail}"
                    )),
                })
            }
            ClusterPhase::Waiting => Ok(waiting),
        }
    }
}

#[async_trait]
impl BatchEngine for DataprocClusterEngine {
    async fn submit(&self, req: &BatchRequest) -> Result<Submitted, PortError> {
        let rendered = req.spec.rendered(&req.vars).map_err(PortError::permanent)?;
        let spec = spec_of(&rendered)?;
        let name = cluster_name(&req.job_id);
        // Refuse a bad job before a cluster is paid for.
        job_body(spec, &req.job_id, &name)?;
        let url = format!("{}/clusters", self.region_url(spec));
        let body = cluster_body(spec, &name);
        let what = format!("create Dataproc cluster {name}");
        let adopted = self.api.create(&url, &body, &what).await?;
        Ok(Submitted {
            job_id: req.job_id.clone(),
            adopted,
        })
    }

    async fn state(&self, spec: &BatchSpec, job_id: &JobId) -> Result<JobState, PortError> {
        self.observe(spec, job_id, None).await
    }

    async fn follow(&self, req: &BatchRequest) -> Result<JobState, PortError> {
        let rendered = req.spec.rendered(&req.vars).map_err(PortError::permanent)?;
        let job = job_body(spec_of(&rendered)?, &req.job_id, &cluster_name(&req.job_id))?;
        self.observe(&req.spec, &req.job_id, Some(&job)).await
    }

    async fn cancel(&self, spec: &BatchSpec, job_id: &JobId) -> Result<(), PortError> {
        let s = spec_of(spec)?;
        let url = format!("{}/jobs/{}", self.region_url(s), seg(job_id.as_str()));
        let what = format!("get Dataproc job {job_id}");
        let job = match self.api.call(Method::GET, &url, None, &what).await {
            Ok(job) => job,
            // Never submitted: deleting the cluster (release) is all there is to do.
            Err(PortError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(final_unless_transient(e)),
        };
        if spec.is_terminal(text_at(&job, &["status", "state"]).unwrap_or_default()) {
            return Ok(());
        }
        let what = format!("cancel Dataproc job {job_id}");
        self.api
            .stop(Method::POST, &format!("{url}:cancel"), None, &what)
            .await
    }

    async fn release(&self, spec: &BatchSpec, job_id: &JobId) -> Result<(), PortError> {
        let s = spec_of(spec)?;
        let name = cluster_name(job_id);
        let url = format!("{}/clusters/{}", self.region_url(s), seg(&name));
        let what = format!("delete Dataproc cluster {name}");
        match self.api.call(Method::DELETE, &url, None, &what).await {
            Ok(_) | Err(PortError::NotFound(_)) => Ok(()),
            // Busy (still creating, updating): the next check deletes it.
            Err(PortError::Precondition(c) | PortError::Conflict(c)) => {
                Err(PortError::Transient(c))
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use conveyor_core::config::{ClusterSpec, PigJob};
    use conveyor_core::names::{PipelineName, RunId};

    const SEED_000_QUERY: &str = "sh export HOME=/root && export ODBCINI=/root/.odbc.ini && gsutil cp gs://code/cerebro/run_replicator.sh . && chmod 777 run_replicator.sh && ./run_replicator.sh dev1_groupondw ref_attr_class_dev";

    fn seed_000() -> DataprocCluster {
        DataprocCluster {
            project: "my-project".into(),
            region: "us-central1".into(),
            cluster: ClusterSpec {
                single_node: true,
                image: Some("projects/my-project/global/images/replicator".into()),
                metastore: Some("projects/my-project/locations/us-central1/services/hive".into()),
                max_idle: Duration::from_secs(12 * 3600),
                subnet: Some("dataproc-subnet".into()),
                service_account: Some("replicator@my-project.iam.gserviceaccount.com".into()),
                tags: vec!["allow-iap-ssh".into(), "dataproc-vm".into()],
                ..ClusterSpec::default()
            },
            pig: Some(PigJob {
                queries: vec![SEED_000_QUERY.into()],
                query_file_uri: None,
                script_variables: BTreeMap::new(),
                jar_file_uris: vec![],
                continue_on_failure: false,
            }),
            spark: None,
            pyspark: None,
            properties: BTreeMap::new(),
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn the_seed_000_cluster_is_single_node_without_external_ip_with_its_metastore() {
        let body = cluster_body(&seed_000(), "cv-x");
        assert_eq!(
            body,
            json!({
                "projectId": "my-project",
                "clusterName": "cv-x",
                "config": {
                    "gceClusterConfig": {
                        "subnetworkUri": "dataproc-subnet",
                        "internalIpOnly": true,
                        "serviceAccount": "replicator@my-project.iam.gserviceaccount.com",
                        "serviceAccountScopes": ["https://www.googleapis.com/auth/cloud-platform"],
                        "tags": ["allow-iap-ssh", "dataproc-vm"],
                    },
                    "masterConfig": {
                        "numInstances": 1,
                        "imageUri": "projects/my-project/global/images/replicator",
                    },
                    "workerConfig": {"numInstances": 0},
                    "softwareConfig": {
                        "properties": {"dataproc:dataproc.allow.zero.workers": "true"},
                    },
                    "lifecycleConfig": {"idleDeleteTtl": "43200s"},
                    "metastoreConfig": {
                        "dataprocMetastoreService": "projects/my-project/locations/us-central1/services/hive",
                    },
                },
            })
        );
    }

    #[test]
    fn the_pig_sh_job_is_placed_on_its_cluster_under_the_job_id() {
        let job_id = JobId::parse("cv-batch-x-a1").unwrap();
        let body = job_body(&seed_000(), &job_id, "cv-batch-x-a1").unwrap();
        assert_eq!(
            body,
            json!({"job": {
                "reference": {"projectId": "my-project", "jobId": "cv-batch-x-a1"},
                "placement": {"clusterName": "cv-batch-x-a1"},
                "pigJob": {
                    "queryList": {"queries": [SEED_000_QUERY]},
                    "continueOnFailure": false,
                },
            }})
        );
    }

    #[test]
    fn cluster_names_are_deterministic_valid_and_distinct_per_attempt() {
        let p = PipelineName::parse("cerebro_copy_active_deals").unwrap();
        let run = RunId::derive(&p, &["schedule", "2026-11-20T02:00:00Z"]);
        for attempt in 1..=3 {
            let job = JobId::derive("batch", &run, attempt);
            let name = cluster_name(&job);
            assert_eq!(name, cluster_name(&job));
            assert!(name.len() <= MAX_CLUSTER_NAME, "{name}");
            assert!(name.starts_with(|c: char| c.is_ascii_lowercase()), "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{name}"
            );
            assert_ne!(
                name,
                cluster_name(&JobId::derive("batch", &run, attempt + 1))
            );
        }
    }
}
