//! `engine: cloud_run_job`: one execution of a Cloud Run job, with its arguments, environment,
//! task count and task timeout overridden for the run.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Engine, Kind, PROCESS_TERMINAL, Problems, RUNNING, fixed, lenient, list, map, say};

/// The environment variable every execution carries with its job id: Cloud Run names an
/// execution itself, so a redelivered submit finds the execution it started by this variable.
pub const CLOUD_RUN_JOB_ID_ENV: &str = "CONVEYOR_JOB_ID";

/// A Cloud Run job execution (`projects.locations.jobs.run` with overrides), followed to its
/// end and cancelled at the poll timeout. The job itself (image, service account, resources)
/// is deployed beforehand; a run only overrides what is below.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloudRunJob {
    /// The Google Cloud project of the job.
    pub project: String,
    /// The job's region (`us-central1`).
    pub region: String,
    /// The Cloud Run job's name (`exporter`), deployed beforehand.
    pub job: String,
    /// The container the overrides apply to, for a job with several (its name in the job).
    #[serde(default)]
    pub container: Option<String>,
    /// Arguments of the container's entrypoint for this execution (they replace the job's;
    /// none: the job's own).
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables for this execution, merged over the job's. `CONVEYOR_JOB_ID` is
    /// set by Conveyor.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How many tasks the execution runs (the job's own count when not set).
    #[serde(default, deserialize_with = "lenient::count")]
    #[schemars(schema_with = "crate::config::schema::count")]
    pub task_count: Option<u32>,
    /// How long each task may run before Cloud Run fails it (`timeout` of the overrides; the
    /// job's own when not set). The poll `timeout` bounds the whole execution.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "crate::config::schema::duration")]
    pub task_timeout: Option<Duration>,
}

/// What this engine is called and what its states mean: Conveyor reads an execution's
/// `Completed` condition and task counts into these (`shared/gcp/src/engines/cloud_run_job.rs`).
const KIND: Kind = Kind {
    name: "cloud_run_job",
    success: "SUCCEEDED",
    non_terminal: &["PENDING", "RUNNING", "CANCELLING"],
    terminal: PROCESS_TERMINAL,
    running: RUNNING,
};

impl Engine for CloudRunJob {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn problems(&self, o: &mut Problems) {
        fixed(o, "project", &self.project);
        fixed(o, "region", &self.region);
        fixed(o, "job", &self.job);
        let name_ok = self
            .job
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && self.job.starts_with(|c: char| c.is_ascii_lowercase())
            && self.job.len() <= 63;
        if !self.job.is_empty() && !name_ok {
            say(
                o,
                "job",
                format!(
                    "{:?} is not a Cloud Run job name (lower-case letters, digits and `-`, \
                     starting with a letter, at most 63 characters)",
                    self.job
                ),
            );
        }
        if let Some(c) = &self.container {
            fixed(o, "container", c);
        }
        if self.env.contains_key(CLOUD_RUN_JOB_ID_ENV) {
            say(
                o,
                &format!("env.{CLOUD_RUN_JOB_ID_ENV}"),
                "is set by Conveyor (the execution is found again by it)",
            );
        }
        if self.task_count == Some(0) {
            say(o, "task_count", "must be at least 1");
        }
        if self
            .task_timeout
            .is_some_and(|t| t < Duration::from_secs(1))
        {
            say(o, "task_timeout", "must be at least 1s");
        }
    }

    fn each_parameter(&mut self, f: &mut dyn FnMut(&str, &mut String)) {
        list(f, "args", &mut self.args);
        map(f, "env", &mut self.env);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: serde_json::Value) -> CloudRunJob {
        let mut base = serde_json::json!({"project": "p", "region": "r", "job": "exporter"});
        if let (Some(b), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
            b.extend(extra.clone());
        }
        serde_json::from_value(base).expect("spec")
    }

    fn problems(s: &CloudRunJob) -> Vec<String> {
        let mut out = Problems::new();
        s.problems(&mut out);
        out.into_iter().map(|(p, _)| p).collect()
    }

    #[test]
    fn a_cloud_run_job_reads_its_overrides() {
        let s = spec(serde_json::json!({
            "args": ["--date={date}"], "env": {"MODE": "full"},
            "task_count": "3", "task_timeout": "30m",
        }));
        assert_eq!(s.task_count, Some(3));
        assert_eq!(s.task_timeout, Some(Duration::from_secs(1800)));
        assert!(problems(&s).is_empty());
    }

    #[test]
    fn a_bad_job_name_a_placeholder_in_it_and_conveyors_own_variable_are_refused() {
        assert_eq!(
            problems(&spec(serde_json::json!({"job": "Exporter_1"}))),
            ["job"]
        );
        assert_eq!(
            problems(&spec(serde_json::json!({"job": "export-{date}"}))),
            ["job", "job"]
        );
        assert_eq!(
            problems(&spec(serde_json::json!({"env": {"CONVEYOR_JOB_ID": "x"}}))),
            ["env.CONVEYOR_JOB_ID"]
        );
        assert_eq!(
            problems(&spec(serde_json::json!({"task_count": 0}))),
            ["task_count"]
        );
    }
}
