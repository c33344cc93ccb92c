//! `engine: dataflow_flex`: a Dataflow job launched from a flex template.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Engine, Kind, Problems, fixed, lenient, map, opt, say};

/// A Dataflow job launched from a flex template (`flexTemplates.launch`); the job id is its
/// `jobName`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataflowFlex {
    /// The Google Cloud project of the job.
    pub project: String,
    /// The regional endpoint (`us-central1`).
    pub region: String,
    /// The template spec file (`gs://dataflow-templates-REGION/latest/flex/SQLServer_to_BigQuery`,
    /// `containerSpecGcsPath`).
    pub template: String,
    /// The template's parameters.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// The workers' machine type (`e2-standard-2`).
    #[serde(default)]
    pub machine_type: Option<String>,
    /// Workers at the start.
    #[serde(default, deserialize_with = "lenient::count")]
    #[schemars(schema_with = "crate::config::schema::count")]
    pub num_workers: Option<u32>,
    /// The most workers autoscaling may use.
    #[serde(default, deserialize_with = "lenient::count")]
    #[schemars(schema_with = "crate::config::schema::count")]
    pub max_workers: Option<u32>,
    /// The job's temporary files (`gs://bucket/tmp`).
    #[serde(default)]
    pub temp_location: Option<String>,
    /// The job's staging files (`gs://bucket/staging`).
    #[serde(default)]
    pub staging_location: Option<String>,
    /// The network of the workers.
    #[serde(default)]
    pub network: Option<String>,
    /// The subnetwork of the workers (`regions/REGION/subnetworks/NAME` or a full URL).
    #[serde(default)]
    pub subnetwork: Option<String>,
    /// Workers get private IP addresses only (`ipConfiguration: WORKER_IP_PRIVATE`).
    #[serde(default, deserialize_with = "lenient::flag")]
    #[schemars(schema_with = "crate::config::schema::flag")]
    pub private_ips: bool,
    /// The service account of the workers (`serviceAccountEmail`).
    #[serde(default)]
    pub service_account: Option<String>,
    /// Labels of the job (`additionalUserLabels`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// What this engine is called and what its states mean.
const KIND: Kind = Kind {
    name: "dataflow_flex",
    success: "JOB_STATE_DONE",
    non_terminal: &[
        "JOB_STATE_UNKNOWN",
        "JOB_STATE_STOPPED",
        "JOB_STATE_QUEUED",
        "JOB_STATE_PENDING",
        "JOB_STATE_RUNNING",
        "JOB_STATE_DRAINING",
        "JOB_STATE_CANCELLING",
        "JOB_STATE_RESOURCE_CLEANING_UP",
        // A paused streaming job resumes; it is not over.
        "JOB_STATE_PAUSING",
        "JOB_STATE_PAUSED",
    ],
    terminal: &[
        "JOB_STATE_DONE",
        "JOB_STATE_FAILED",
        "JOB_STATE_CANCELLED",
        "JOB_STATE_UPDATED",
        "JOB_STATE_DRAINED",
    ],
    running: &["JOB_STATE_RUNNING"],
};

impl Engine for DataflowFlex {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn problems(&self, o: &mut Problems) {
        fixed(o, "project", &self.project);
        fixed(o, "region", &self.region);
        if !self.template.starts_with("gs://") && !self.template.starts_with('{') {
            say(
                o,
                "template",
                format!(
                    "{:?} must be the gs:// path of the template spec",
                    self.template
                ),
            );
        }
        if let (Some(n), Some(max)) = (self.num_workers, self.max_workers)
            && n > max
        {
            say(
                o,
                "num_workers",
                format!("{n} is more than max_workers ({max})"),
            );
        }
    }

    fn each_parameter(&mut self, f: &mut dyn FnMut(&str, &mut String)) {
        f("template", &mut self.template);
        map(f, "parameters", &mut self.parameters);
        opt(f, "machine_type", &mut self.machine_type);
        opt(f, "temp_location", &mut self.temp_location);
        opt(f, "staging_location", &mut self.staging_location);
        opt(f, "network", &mut self.network);
        opt(f, "subnetwork", &mut self.subnetwork);
        opt(f, "service_account", &mut self.service_account);
        map(f, "labels", &mut self.labels);
    }
}
