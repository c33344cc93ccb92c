//! `engine: dataproc_serverless`: a Dataproc Serverless batch with a pinned runtime.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::dataproc::{PySparkJob, SparkJob, SparkSqlJob};
use super::{
    Engine, Kind, PROCESS_TERMINAL, Problems, RUNNING, fixed, list, map, opt, required, say,
};

/// A Dataproc Serverless batch: `batches.create` with the job id as `batchId`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataprocServerless {
    /// The Google Cloud project that runs the batch.
    pub project: String,
    /// The region (`us-central1`).
    pub region: String,
    /// The Dataproc Serverless runtime version (`"2.1"`). Required: left to Dataproc's default
    /// a job silently changes Spark, Scala and Java versions when the default moves (seed 002
    /// pins it for that reason).
    pub runtime_version: String,
    /// A Spark workload (a jar and its main class). One of `spark`, `pyspark`, `spark_sql`.
    #[serde(default)]
    pub spark: Option<SparkJob>,
    /// A PySpark workload.
    #[serde(default)]
    pub pyspark: Option<PySparkJob>,
    /// A Spark SQL workload.
    #[serde(default)]
    pub spark_sql: Option<SparkSqlJob>,
    /// The service account the workload runs as (`executionConfig.serviceAccount`).
    #[serde(default)]
    pub service_account: Option<String>,
    /// The subnetwork URI or name the workload runs in (`executionConfig.subnetworkUri`).
    #[serde(default)]
    pub subnet: Option<String>,
    /// Network tags of the workload's VMs.
    #[serde(default)]
    pub network_tags: Vec<String>,
    /// The Cloud Storage bucket for the workload's staging files and logs (a bucket name, no
    /// `gs://`).
    #[serde(default)]
    pub staging_bucket: Option<String>,
    /// Spark properties (`runtimeConfig.properties`), such as `spark.executor.instances`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Labels of the batch.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// What this engine is called and what its states mean.
const KIND: Kind = Kind {
    name: "dataproc_serverless",
    success: "SUCCEEDED",
    non_terminal: &["STATE_UNSPECIFIED", "PENDING", "RUNNING", "CANCELLING"],
    terminal: PROCESS_TERMINAL,
    running: RUNNING,
};

impl Engine for DataprocServerless {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn problems(&self, o: &mut Problems) {
        fixed(o, "project", &self.project);
        fixed(o, "region", &self.region);
        required(o, "runtime_version", &self.runtime_version);
        let set = [
            self.spark.is_some(),
            self.pyspark.is_some(),
            self.spark_sql.is_some(),
        ];
        if set.iter().filter(|x| **x).count() != 1 {
            say(
                o,
                "spark",
                "set exactly one workload: `spark`, `pyspark` or `spark_sql`",
            );
        }
        if let Some(spark) = &self.spark {
            spark.problems(o, "spark");
        }
    }

    fn each_parameter(&mut self, f: &mut dyn FnMut(&str, &mut String)) {
        f("runtime_version", &mut self.runtime_version);
        if let Some(spark) = &mut self.spark {
            spark.each_parameter("spark", f);
        }
        if let Some(py) = &mut self.pyspark {
            py.each_parameter("pyspark", f);
        }
        if let Some(sql) = &mut self.spark_sql {
            sql.each_parameter("spark_sql", f);
        }
        opt(f, "service_account", &mut self.service_account);
        opt(f, "subnet", &mut self.subnet);
        list(f, "network_tags", &mut self.network_tags);
        opt(f, "staging_bucket", &mut self.staging_bucket);
        map(f, "properties", &mut self.properties);
        map(f, "labels", &mut self.labels);
    }
}
