//! `engine: data_fusion`: a Cloud Data Fusion (CDAP) batch pipeline, one run per active row.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Engine, Kind, Problems, RUNNING, fixed, lenient, map, say, yes};

/// A Cloud Data Fusion batch pipeline (its `DataPipelineWorkflow`) on an instance's CDAP API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataFusion {
    /// The instance's API endpoint (`apiEndpoint` of the instance:
    /// `https://INSTANCE-PROJECT-dot-REGION.datafusion.googleusercontent.com/api`).
    pub instance_url: String,
    /// The CDAP namespace (`default` on a Basic instance).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The deployed pipeline's name.
    pub pipeline: String,
    /// Runtime arguments of every run.
    #[serde(default)]
    pub runtime_args: BTreeMap<String, String>,
    /// Rows of runtime arguments (seed 004's configuration table): each active row becomes a
    /// run of its own, with the row's arguments over `runtime_args`. None: one run.
    #[serde(default)]
    pub runs: Vec<DataFusionRun>,
}

fn default_namespace() -> String {
    "default".to_owned()
}

/// One row of runtime arguments of a Data Fusion pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataFusionRun {
    /// The row's key, part of its run id. Default: its argument values joined by `-`
    /// (`hr-engineer`).
    #[serde(default)]
    pub name: Option<String>,
    /// Inactive rows start no run (seed 004's `is_active`). Default `true`.
    #[serde(default = "yes", deserialize_with = "lenient::flag")]
    #[schemars(schema_with = "crate::config::schema::flag")]
    pub active: bool,
    /// The row's runtime arguments (`business_unit: hr`).
    #[serde(default)]
    pub args: BTreeMap<String, String>,
}

impl DataFusion {
    /// Every row with its key, in file order.
    pub fn rows(&self) -> impl Iterator<Item = (String, &DataFusionRun)> {
        self.runs.iter().enumerate().map(|(i, row)| {
            let key = match &row.name {
                Some(n) => n.clone(),
                None if row.args.is_empty() => format!("row{}", i + 1),
                None => row.args.values().cloned().collect::<Vec<_>>().join("-"),
            };
            (key, row)
        })
    }

    /// The row whose key is `key`.
    pub fn row(&self, key: &str) -> Option<&DataFusionRun> {
        self.rows().find(|(k, _)| k == key).map(|(_, row)| row)
    }
}

/// What this engine is called and what its states mean.
const KIND: Kind = Kind {
    name: "data_fusion",
    success: "COMPLETED",
    non_terminal: &[
        "PENDING",
        "STARTING",
        "RUNNING",
        "SUSPENDED",
        "RESUMING",
        "STOPPING",
    ],
    terminal: &["COMPLETED", "FAILED", "KILLED", "REJECTED"],
    running: RUNNING,
};

impl Engine for DataFusion {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn problems(&self, o: &mut Problems) {
        fixed(o, "instance_url", &self.instance_url);
        fixed(o, "pipeline", &self.pipeline);
        fixed(o, "namespace", &self.namespace);
        if !(self.instance_url.starts_with("https://") || self.instance_url.starts_with("http://"))
        {
            say(
                o,
                "instance_url",
                format!(
                    "{:?} must be the instance's http(s) API endpoint (its `apiEndpoint`)",
                    self.instance_url
                ),
            );
        }
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, (key, _)) in self.rows().enumerate() {
            if let Some(first) = seen.insert(key.clone(), i) {
                say(
                    o,
                    &format!("runs[{i}]"),
                    format!(
                        "has the same key {key:?} as runs[{first}]: give the rows distinct `name`s"
                    ),
                );
            }
        }
    }

    fn each_parameter(&mut self, f: &mut dyn FnMut(&str, &mut String)) {
        map(f, "runtime_args", &mut self.runtime_args);
        for (i, row) in self.runs.iter_mut().enumerate() {
            map(f, &format!("runs[{i}].args"), &mut row.args);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_fusion_rows_are_keyed_by_name_or_values() {
        let f = DataFusion {
            instance_url: "https://x".into(),
            namespace: "default".into(),
            pipeline: "p".into(),
            runtime_args: BTreeMap::new(),
            runs: vec![
                DataFusionRun {
                    name: None,
                    active: true,
                    args: BTreeMap::from([
                        ("business_unit".into(), "hr".into()),
                        ("data_source".into(), "engineer".into()),
                    ]),
                },
                DataFusionRun {
                    name: Some("payroll".into()),
                    active: false,
                    args: BTreeMap::new(),
                },
            ],
        };
        let keys: Vec<String> = f.rows().map(|(k, _)| k).collect();
        assert_eq!(keys, vec!["hr-engineer", "payroll"]);
    }
}
