//! `engine: dataproc_cluster`: a Dataproc job on an ephemeral cluster created for it.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::dataproc::{PigJob, PySparkJob, SparkJob};
use super::{Engine, Kind, Problems, RUNNING, fixed, lenient, list, map, opt, say, yes};

/// A Dataproc job on an ephemeral cluster: the cluster (named after the job id) is created
/// for the job and deleted when the job ends in any state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataprocCluster {
    /// The Google Cloud project of the cluster and the job.
    pub project: String,
    /// The region (`us-central1`).
    pub region: String,
    /// The ephemeral cluster.
    #[serde(default)]
    pub cluster: ClusterSpec,
    /// A Pig job; `sh ...` queries run shell commands (seed 000). One of `pig`, `spark`,
    /// `pyspark`.
    #[serde(default)]
    pub pig: Option<PigJob>,
    /// A Spark job.
    #[serde(default)]
    pub spark: Option<SparkJob>,
    /// A PySpark job.
    #[serde(default)]
    pub pyspark: Option<PySparkJob>,
    /// Properties of the job (Pig or Spark properties).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Labels of the cluster and the job.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The shape of an ephemeral Dataproc cluster (what `gcloud dataproc clusters create` takes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// One master and no workers (`--single-node`).
    #[serde(default, deserialize_with = "lenient::flag")]
    #[schemars(schema_with = "crate::config::schema::flag")]
    pub single_node: bool,
    /// Workers, when not single-node (Dataproc's default: 2).
    #[serde(default, deserialize_with = "lenient::count")]
    #[schemars(schema_with = "crate::config::schema::count")]
    pub num_workers: Option<u32>,
    /// The master's machine type (`n1-standard-4`).
    #[serde(default)]
    pub master_machine_type: Option<String>,
    /// The workers' machine type.
    #[serde(default)]
    pub worker_machine_type: Option<String>,
    /// The Dataproc image version (`2.1-debian11`, `--image-version`).
    #[serde(default)]
    pub image_version: Option<String>,
    /// A custom image URI for every node (`--image`).
    #[serde(default)]
    pub image: Option<String>,
    /// The Dataproc Metastore service to attach
    /// (`projects/P/locations/L/services/S`, `--dataproc-metastore`).
    #[serde(default)]
    pub metastore: Option<String>,
    /// Dataproc deletes the cluster after it has been idle this long (`--max-idle`): a safety
    /// net should Conveyor not get to delete it. Default 1h; 10m to 14d.
    #[serde(default = "default_max_idle", with = "humantime_serde")]
    #[schemars(schema_with = "crate::config::schema::duration")]
    pub max_idle: Duration,
    /// The zone (`us-central1-a`); none lets Dataproc pick one in the region.
    #[serde(default)]
    pub zone: Option<String>,
    /// The subnetwork URI or name (`--subnet`).
    #[serde(default)]
    pub subnet: Option<String>,
    /// Internal IP addresses only (`--no-address`). Default `true`.
    #[serde(default = "yes", deserialize_with = "lenient::flag")]
    #[schemars(schema_with = "crate::config::schema::flag")]
    pub internal_ip_only: bool,
    /// The service account of the cluster's VMs (`--service-account`).
    #[serde(default)]
    pub service_account: Option<String>,
    /// OAuth scopes of the VMs; a bare name means `https://www.googleapis.com/auth/NAME`.
    /// Default `[cloud-platform]`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Network tags of the VMs (`--tags`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Cluster properties (`--properties`, `prefix:name` keys).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_max_idle() -> Duration {
    Duration::from_secs(3600)
}

fn default_scopes() -> Vec<String> {
    vec!["cloud-platform".to_owned()]
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            single_node: false,
            num_workers: None,
            master_machine_type: None,
            worker_machine_type: None,
            image_version: None,
            image: None,
            metastore: None,
            max_idle: default_max_idle(),
            zone: None,
            subnet: None,
            internal_ip_only: true,
            service_account: None,
            scopes: default_scopes(),
            tags: Vec::new(),
            properties: BTreeMap::new(),
        }
    }
}

/// What this engine is called and what its states mean.
const KIND: Kind = Kind {
    name: "dataproc_cluster",
    success: "DONE",
    // CLUSTER_CREATING is Conveyor's: the job waits for its ephemeral cluster.
    // ATTEMPT_FAILURE is a failed attempt of a restartable job, which Dataproc restarts.
    non_terminal: &[
        "STATE_UNSPECIFIED",
        "CLUSTER_CREATING",
        "PENDING",
        "SETUP_DONE",
        "RUNNING",
        "CANCEL_PENDING",
        "CANCEL_STARTED",
        "ATTEMPT_FAILURE",
    ],
    // CLUSTER_ERROR is Conveyor's: the ephemeral cluster failed, so the job never ran.
    terminal: &["DONE", "ERROR", "CANCELLED", "CLUSTER_ERROR"],
    running: RUNNING,
};

impl Engine for DataprocCluster {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn problems(&self, o: &mut Problems) {
        fixed(o, "project", &self.project);
        fixed(o, "region", &self.region);
        let set = [
            self.pig.is_some(),
            self.spark.is_some(),
            self.pyspark.is_some(),
        ];
        if set.iter().filter(|x| **x).count() != 1 {
            say(o, "pig", "set exactly one job: `pig`, `spark` or `pyspark`");
        }
        if let Some(pig) = &self.pig {
            pig.problems(o, "pig");
        }
        if let Some(spark) = &self.spark {
            spark.problems(o, "spark");
        }
        let cluster = &self.cluster;
        let idle = cluster.max_idle;
        if idle < Duration::from_secs(600) || idle > Duration::from_secs(14 * 86_400) {
            say(
                o,
                "cluster.max_idle",
                "must be between 10m and 14d (Dataproc's bounds)",
            );
        }
        if cluster.image.is_some() && cluster.image_version.is_some() {
            say(
                o,
                "cluster.image",
                "set either `image` (a custom image) or `image_version`, not both",
            );
        }
        if cluster.single_node && cluster.num_workers.is_some() {
            say(
                o,
                "cluster.num_workers",
                "a single-node cluster has no workers",
            );
        }
    }

    fn each_parameter(&mut self, f: &mut dyn FnMut(&str, &mut String)) {
        let k = &mut self.cluster;
        opt(f, "cluster.zone", &mut k.zone);
        opt(f, "cluster.master_machine_type", &mut k.master_machine_type);
        opt(f, "cluster.worker_machine_type", &mut k.worker_machine_type);
        opt(f, "cluster.image_version", &mut k.image_version);
        opt(f, "cluster.image", &mut k.image);
        opt(f, "cluster.metastore", &mut k.metastore);
        opt(f, "cluster.subnet", &mut k.subnet);
        opt(f, "cluster.service_account", &mut k.service_account);
        list(f, "cluster.scopes", &mut k.scopes);
        list(f, "cluster.tags", &mut k.tags);
        map(f, "cluster.properties", &mut k.properties);
        if let Some(pig) = &mut self.pig {
            pig.each_parameter("pig", f);
        }
        if let Some(spark) = &mut self.spark {
            spark.each_parameter("spark", f);
        }
        if let Some(py) = &mut self.pyspark {
            py.each_parameter("pyspark", f);
        }
        map(f, "properties", &mut self.properties);
        map(f, "labels", &mut self.labels);
    }
}
