//! `engine: dataflow_flex`: a Dataflow job launched from a flex template, batch or streaming.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Engine, Kind, Problems, fixed, lenient, list, map, opt, say};

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
    /// The workers' container image, for a template built with a custom SDK container
    /// (`sdkContainerImage`, e.g. `us-docker.pkg.dev/p/r/beam-worker:2.61`).
    #[serde(default)]
    pub worker_image: Option<String>,
    /// Dataflow experiments to turn on (`additionalExperiments`, e.g. `use_runner_v2`).
    #[serde(default)]
    pub additional_experiments: Vec<String>,
    /// A streaming job: it never ends by itself, so it succeeds once it has been
    /// `JOB_STATE_RUNNING` for `settle`, and is left running (`conveyor drain` stops it). The
    /// poll `timeout` then only bounds how long it may take to get there.
    #[serde(default, deserialize_with = "lenient::flag")]
    #[schemars(schema_with = "crate::config::schema::flag")]
    pub streaming: bool,
    /// With `streaming`: how long the job must have been running, by Dataflow's
    /// `currentStateTime`, to count as started well (default `5m`).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "crate::config::schema::duration")]
    pub settle: Option<Duration>,
}

/// How long a streaming job must have been running to succeed, when `settle` is not set.
const DEFAULT_SETTLE: Duration = Duration::from_secs(300);

impl DataflowFlex {
    /// With `streaming`, how long the job must have been running to succeed; `None` for a
    /// batch job.
    pub fn streaming_settle(&self) -> Option<Duration> {
        self.streaming
            .then(|| self.settle.unwrap_or(DEFAULT_SETTLE))
    }
}

/// The states neither kind of job ends in.
const WAITING: [&str; 9] = [
    "JOB_STATE_UNKNOWN",
    "JOB_STATE_STOPPED",
    "JOB_STATE_QUEUED",
    "JOB_STATE_PENDING",
    "JOB_STATE_DRAINING",
    "JOB_STATE_CANCELLING",
    "JOB_STATE_RESOURCE_CLEANING_UP",
    // A paused streaming job resumes; it is not over.
    "JOB_STATE_PAUSING",
    "JOB_STATE_PAUSED",
];

/// The states every kind of job ends in.
const ENDED: [&str; 5] = [
    "JOB_STATE_DONE",
    "JOB_STATE_FAILED",
    "JOB_STATE_CANCELLED",
    "JOB_STATE_UPDATED",
    "JOB_STATE_DRAINED",
];

/// `a` and then `b`, as one list of `T` (`N` + `M`) states.
const fn joined<const N: usize, const M: usize, const T: usize>(
    a: [&'static str; N],
    b: [&'static str; M],
) -> [&'static str; T] {
    assert!(N + M == T, "T must be N + M");
    let mut out = [""; T];
    let mut i = 0;
    while i < N {
        out[i] = a[i];
        i += 1;
    }
    while i < T {
        out[i] = b[i - N];
        i += 1;
    }
    out
}

/// A batch job runs, then ends.
const BATCH_NON_TERMINAL: [&str; 10] = joined(WAITING, ["JOB_STATE_RUNNING"]);

/// A streaming job also "ends" in RUNNING.
const STREAMING_TERMINAL: [&str; 6] = joined(["JOB_STATE_RUNNING"], ENDED);

/// What this engine is called and what its states mean.
const KIND: Kind = Kind {
    name: "dataflow_flex",
    success: "JOB_STATE_DONE",
    non_terminal: &BATCH_NON_TERMINAL,
    terminal: &ENDED,
    running: &["JOB_STATE_RUNNING"],
};

/// A streaming job's states: `JOB_STATE_RUNNING` is where it ends up and counts as success
/// (once settled; the engine reports it terminal then), and DONE is never reached.
const STREAMING_KIND: Kind = Kind {
    name: "dataflow_flex",
    success: "JOB_STATE_RUNNING",
    non_terminal: &WAITING,
    terminal: &STREAMING_TERMINAL,
    running: &["JOB_STATE_RUNNING"],
};

impl Engine for DataflowFlex {
    fn kind(&self) -> &'static Kind {
        if self.streaming {
            &STREAMING_KIND
        } else {
            &KIND
        }
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
        if self.settle.is_some() && !self.streaming {
            say(
                o,
                "settle",
                "only a streaming job settles: set `streaming: true` or remove `settle`",
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
        opt(f, "worker_image", &mut self.worker_image);
        list(
            f,
            "additional_experiments",
            &mut self.additional_experiments,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: serde_json::Value) -> DataflowFlex {
        let mut base = serde_json::json!({
            "project": "p", "region": "r", "template": "gs://t/spec.json",
        });
        if let (Some(b), Some(extra)) = (base.as_object_mut(), yaml.as_object()) {
            b.extend(extra.clone());
        }
        serde_json::from_value(base).expect("spec")
    }

    #[test]
    fn a_streaming_job_succeeds_while_running_and_settles_five_minutes_by_default() {
        let batch = spec(serde_json::json!({}));
        assert_eq!(batch.streaming_settle(), None);
        assert_eq!(batch.kind().success, "JOB_STATE_DONE");
        assert!(!batch.kind().terminal.contains(&"JOB_STATE_RUNNING"));

        let streaming = spec(serde_json::json!({"streaming": true}));
        assert_eq!(streaming.streaming_settle(), Some(DEFAULT_SETTLE));
        assert_eq!(streaming.kind().success, "JOB_STATE_RUNNING");
        assert!(streaming.kind().terminal.contains(&"JOB_STATE_RUNNING"));
        assert!(!streaming.kind().non_terminal.contains(&"JOB_STATE_RUNNING"));
        let settled = spec(serde_json::json!({"streaming": true, "settle": "90s"}));
        assert_eq!(settled.streaming_settle(), Some(Duration::from_secs(90)));
    }

    #[test]
    fn settle_without_streaming_is_refused() {
        let mut problems = Problems::new();
        spec(serde_json::json!({"settle": "1m"})).problems(&mut problems);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "settle");
        let mut none = Problems::new();
        spec(serde_json::json!({"streaming": true, "settle": "1m"})).problems(&mut none);
        assert!(none.is_empty(), "{none:?}");
    }
}
