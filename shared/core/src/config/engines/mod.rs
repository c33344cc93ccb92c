//! The batch a pipeline runs: which engine, with what parameters, and what the engine's states
//! mean.
//!
//! Every string parameter of a batch may hold `{name}` placeholders (the trigger's captures,
//! `{run_id}`, `{table}`, `{attempt}`, `{job_id}`, `{pipeline}`), rendered when the batch is
//! submitted; the fields that locate a job (`project`, `region`, a Data Fusion `instance_url`,
//! `namespace` and `pipeline`) take none. Only `{identifier}` is a placeholder: `${...}` (a shell variable or a CDAP macro)
//! and any other braces are left as they are.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The batch that follows a load: which engine, with what parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "engine", rename_all = "snake_case", deny_unknown_fields)]
#[expect(
    clippy::large_enum_variant,
    reason = "read once per configuration file; boxing would only add noise to every match"
)]
pub enum BatchSpec {
    /// A local command (embedded mode): `sh -c COMMAND`, its exit status is the result.
    Local(LocalBatch),
    /// A Dataproc Serverless batch (Spark, PySpark or Spark SQL) with a pinned runtime.
    DataprocServerless(DataprocServerless),
    /// A Dataproc job (Pig, Spark, PySpark) on an ephemeral cluster created for it and
    /// deleted when it ends.
    DataprocCluster(DataprocCluster),
    /// A Dataflow job launched from a flex template.
    DataflowFlex(DataflowFlex),
    /// A Cloud Data Fusion (CDAP) batch pipeline run, one per active row of runtime arguments.
    DataFusion(DataFusion),
    /// A SQL query job in the warehouse (BigQuery; SQLite in the embedded mode): a
    /// transformation into a destination table, or a script (DML/DDL) without one.
    Sql(SqlJob),
    /// A command on a remote host over SSH (seed 000's on-prem Run Replicator), detached
    /// under the job id; its exit status is the result.
    Ssh(SshBatch),
}

impl BatchSpec {
    /// The engine's name as written in the file.
    pub fn engine(&self) -> &'static str {
        match self {
            Self::Local(_) => "local",
            Self::DataprocServerless(_) => "dataproc_serverless",
            Self::DataprocCluster(_) => "dataproc_cluster",
            Self::DataflowFlex(_) => "dataflow_flex",
            Self::DataFusion(_) => "data_fusion",
            Self::Sql(_) => "sql",
            Self::Ssh(_) => "ssh",
        }
    }

    /// The states that count as success when the pipeline does not say: the engine's terminal
    /// success state only.
    pub fn default_success_states(&self) -> Vec<String> {
        let state = match self {
            Self::Local(_) | Self::Ssh(_) | Self::DataprocServerless(_) => "SUCCEEDED",
            Self::DataprocCluster(_) => "DONE",
            Self::DataflowFlex(_) => "JOB_STATE_DONE",
            Self::DataFusion(_) => "COMPLETED",
            Self::Sql(_) => "DONE",
        };
        vec![state.to_owned()]
    }

    /// Every state the engine reports that is not terminal; none of them may be a success state.
    pub fn non_terminal_states(&self) -> &'static [&'static str] {
        match self {
            Self::Local(_) | Self::Ssh(_) => &["PENDING", "RUNNING"],
            Self::DataprocServerless(_) => {
                &["STATE_UNSPECIFIED", "PENDING", "RUNNING", "CANCELLING"]
            }
            // CLUSTER_CREATING is Conveyor's: the job waits for its ephemeral cluster.
            // ATTEMPT_FAILURE is a failed attempt of a restartable job, which Dataproc restarts.
            Self::DataprocCluster(_) => &[
                "STATE_UNSPECIFIED",
                "CLUSTER_CREATING",
                "PENDING",
                "SETUP_DONE",
                "RUNNING",
                "CANCEL_PENDING",
                "CANCEL_STARTED",
                "ATTEMPT_FAILURE",
            ],
            Self::DataflowFlex(_) => &[
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
            Self::DataFusion(_) => &[
                "PENDING",
                "STARTING",
                "RUNNING",
                "SUSPENDED",
                "RESUMING",
                "STOPPING",
            ],
            Self::Sql(_) => &["PENDING", "RUNNING"],
        }
    }

    /// Every state after which the engine does not change the job any more.
    pub fn terminal_states(&self) -> &'static [&'static str] {
        match self {
            Self::Local(_) | Self::Ssh(_) | Self::DataprocServerless(_) => {
                &["SUCCEEDED", "FAILED", "CANCELLED"]
            }
            // CLUSTER_ERROR is Conveyor's: the ephemeral cluster failed, so the job never ran.
            Self::DataprocCluster(_) => &["DONE", "ERROR", "CANCELLED", "CLUSTER_ERROR"],
            Self::DataflowFlex(_) => &[
                "JOB_STATE_DONE",
                "JOB_STATE_FAILED",
                "JOB_STATE_CANCELLED",
                "JOB_STATE_UPDATED",
                "JOB_STATE_DRAINED",
            ],
            Self::DataFusion(_) => &["COMPLETED", "FAILED", "KILLED", "REJECTED"],
            // A BigQuery job is DONE either way; FAILED is Conveyor's name for DONE with an
            // `errorResult` (only DONE without one is success).
            Self::Sql(_) => &["DONE", "FAILED"],
        }
    }

    /// The states in which the job is doing its work (the run log's RUNNING).
    pub fn running_states(&self) -> &'static [&'static str] {
        match self {
            Self::DataflowFlex(_) => &["JOB_STATE_RUNNING"],
            _ => &["RUNNING"],
        }
    }

    /// Whether `state` (any case) is one the engine never leaves.
    pub fn is_terminal(&self, state: &str) -> bool {
        self.terminal_states()
            .iter()
            .any(|s| s.eq_ignore_ascii_case(state))
    }

    /// Every string parameter with its field path (relative to `batch`), for placeholder
    /// checks.
    pub fn parameters(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut copy = self.clone();
        copy.each_parameter(&mut |path, value| out.push((path.to_owned(), value.clone())));
        out
    }

    /// The spec with every `{placeholder}` of every string parameter replaced by its value.
    ///
    /// # Errors
    /// The field path and name of the first placeholder without a value.
    pub fn rendered(&self, vars: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut copy = self.clone();
        let mut first_error = None;
        copy.each_parameter(&mut |path, value| {
            if first_error.is_some() {
                return;
            }
            match render_parameter(value, vars) {
                Ok(v) => *value = v,
                Err(e) => first_error = Some(format!("batch.{path}: {e}")),
            }
        });
        match first_error {
            Some(e) => Err(e),
            None => Ok(copy),
        }
    }

    /// Problems the types cannot express (one workload of several, bounds), each with its field
    /// path relative to `batch`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let o = &mut out;
        match self {
            Self::Local(l) => required(o, "command", &l.command),
            Self::Ssh(h) => h.problems(o),
            Self::DataprocServerless(s) => {
                fixed(o, "project", &s.project);
                fixed(o, "region", &s.region);
                required(o, "runtime_version", &s.runtime_version);
                let set = [
                    s.spark.is_some(),
                    s.pyspark.is_some(),
                    s.spark_sql.is_some(),
                ];
                if set.iter().filter(|x| **x).count() != 1 {
                    say(
                        o,
                        "spark",
                        "set exactly one workload: `spark`, `pyspark` or `spark_sql`",
                    );
                }
                if let Some(spark) = &s.spark {
                    spark.problems(o, "spark");
                }
            }
            Self::DataprocCluster(c) => {
                fixed(o, "project", &c.project);
                fixed(o, "region", &c.region);
                let set = [c.pig.is_some(), c.spark.is_some(), c.pyspark.is_some()];
                if set.iter().filter(|x| **x).count() != 1 {
                    say(o, "pig", "set exactly one job: `pig`, `spark` or `pyspark`");
                }
                if let Some(pig) = &c.pig
                    && pig.queries.is_empty() == pig.query_file_uri.is_none()
                {
                    say(o, "pig", "set either `queries` or `query_file_uri`");
                }
                if let Some(spark) = &c.spark {
                    spark.problems(o, "spark");
                }
                let idle = c.cluster.max_idle;
                if idle < Duration::from_secs(600) || idle > Duration::from_secs(14 * 86_400) {
                    say(
                        o,
                        "cluster.max_idle",
                        "must be between 10m and 14d (Dataproc's bounds)",
                    );
                }
                if c.cluster.image.is_some() && c.cluster.image_version.is_some() {
                    say(
                        o,
                        "cluster.image",
                        "set either `image` (a custom image) or `image_version`, not both",
                    );
                }
                if c.cluster.single_node && c.cluster.num_workers.is_some() {
                    say(
                        o,
                        "cluster.num_workers",
                        "a single-node cluster has no workers",
                    );
                }
            }
            Self::DataflowFlex(d) => {
                fixed(o, "project", &d.project);
                fixed(o, "region", &d.region);
                if !d.template.starts_with("gs://") && !d.template.starts_with('{') {
                    say(
                        o,
                        "template",
                        format!(
                            "{:?} must be the gs:// path of the template spec",
                            d.template
                        ),
                    );
                }
                if let (Some(n), Some(max)) = (d.num_workers, d.max_workers)
                    && n > max
                {
                    say(
                        o,
                        "num_workers",
                        format!("{n} is more than max_workers ({max})"),
                    );
                }
            }
            Self::DataFusion(f) => {
                fixed(o, "instance_url", &f.instance_url);
                fixed(o, "pipeline", &f.pipeline);
                fixed(o, "namespace", &f.namespace);
                if !(f.instance_url.starts_with("https://")
                    || f.instance_url.starts_with("http://"))
                {
                    say(
                        o,
                        "instance_url",
                        format!(
                            "{:?} must be the instance's http(s) API endpoint (its `apiEndpoint`)",
                            f.instance_url
                        ),
                    );
                }
                let mut seen: BTreeMap<String, usize> = BTreeMap::new();
                for (i, (key, _)) in f.rows().enumerate() {
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
            Self::Sql(q) => {
                required(o, "query", &q.query);
                if let Some(d) = &q.destination {
                    required(o, "destination", d);
                }
                if q.destination.is_none() && q.write_disposition.is_some() {
                    say(
                        o,
                        "write_disposition",
                        "applies to a `destination` table; a query without one runs as a script",
                    );
                }
            }
        }
        out
    }

    fn each_parameter(&mut self, f: &mut dyn FnMut(&str, &mut String)) {
        match self {
            Self::Local(l) => {
                f("command", &mut l.command);
                map(f, "env", &mut l.env);
            }
            Self::Ssh(h) => {
                f("command", &mut h.command);
                map(f, "env", &mut h.env);
            }
            Self::DataprocServerless(s) => {
                f("runtime_version", &mut s.runtime_version);
                if let Some(spark) = &mut s.spark {
                    spark.each_parameter("spark", f);
                }
                if let Some(py) = &mut s.pyspark {
                    py.each_parameter("pyspark", f);
                }
                if let Some(sql) = &mut s.spark_sql {
                    f("spark_sql.query_file_uri", &mut sql.query_file_uri);
                    map(f, "spark_sql.query_variables", &mut sql.query_variables);
                    list(f, "spark_sql.jar_file_uris", &mut sql.jar_file_uris);
                }
                opt(f, "service_account", &mut s.service_account);
                opt(f, "subnet", &mut s.subnet);
                list(f, "network_tags", &mut s.network_tags);
                opt(f, "staging_bucket", &mut s.staging_bucket);
                map(f, "properties", &mut s.properties);
                map(f, "labels", &mut s.labels);
            }
            Self::DataprocCluster(c) => {
                let k = &mut c.cluster;
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
                if let Some(pig) = &mut c.pig {
                    list(f, "pig.queries", &mut pig.queries);
                    opt(f, "pig.query_file_uri", &mut pig.query_file_uri);
                    map(f, "pig.script_variables", &mut pig.script_variables);
                    list(f, "pig.jar_file_uris", &mut pig.jar_file_uris);
                }
                if let Some(spark) = &mut c.spark {
                    spark.each_parameter("spark", f);
                }
                if let Some(py) = &mut c.pyspark {
                    py.each_parameter("pyspark", f);
                }
                map(f, "properties", &mut c.properties);
                map(f, "labels", &mut c.labels);
            }
            Self::DataflowFlex(d) => {
                f("template", &mut d.template);
                map(f, "parameters", &mut d.parameters);
                opt(f, "machine_type", &mut d.machine_type);
                opt(f, "temp_location", &mut d.temp_location);
                opt(f, "staging_location", &mut d.staging_location);
                opt(f, "network", &mut d.network);
                opt(f, "subnetwork", &mut d.subnetwork);
                opt(f, "service_account", &mut d.service_account);
                map(f, "labels", &mut d.labels);
            }
            Self::DataFusion(d) => {
                map(f, "runtime_args", &mut d.runtime_args);
                for (i, row) in d.runs.iter_mut().enumerate() {
                    map(f, &format!("runs[{i}].args"), &mut row.args);
                }
            }
            Self::Sql(q) => {
                f("query", &mut q.query);
                opt(f, "destination", &mut q.destination);
            }
        }
    }
}

fn say(out: &mut Vec<(String, String)>, path: &str, message: impl Into<String>) {
    out.push((path.to_owned(), message.into()));
}

fn required(out: &mut Vec<(String, String)>, path: &str, value: &str) {
    if value.trim().is_empty() {
        say(out, path, "must not be empty");
    }
}

/// A field that locates the job (project, region, instance, pipeline): the poll step finds the
/// job again without the run's values, so it takes no placeholders.
fn fixed(out: &mut Vec<(String, String)>, path: &str, value: &str) {
    required(out, path, value);
    if !parameter_placeholders(value).is_empty() {
        say(
            out,
            path,
            "takes no placeholders: the job is found again by it without the run's values",
        );
    }
}

fn opt(f: &mut dyn FnMut(&str, &mut String), path: &str, v: &mut Option<String>) {
    if let Some(v) = v {
        f(path, v);
    }
}

fn list(f: &mut dyn FnMut(&str, &mut String), path: &str, v: &mut [String]) {
    for (i, item) in v.iter_mut().enumerate() {
        f(&format!("{path}[{i}]"), item);
    }
}

fn map(f: &mut dyn FnMut(&str, &mut String), path: &str, v: &mut BTreeMap<String, String>) {
    for (k, item) in v.iter_mut() {
        f(&format!("{path}.{k}"), item);
    }
}

fn is_identifier(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A piece of a batch parameter: text, or the name of a placeholder.
enum Piece<'a> {
    Text(&'a str),
    Name(&'a str),
}

/// Splits `template` into text and `{identifier}` placeholders (not `${...}`), in order.
fn pieces(template: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let escaped = rest[..start].ends_with('$');
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) if !escaped && is_identifier(&after[..end]) => {
                out.push(Piece::Text(&rest[..start]));
                out.push(Piece::Name(&after[..end]));
                rest = &after[end + 1..];
            }
            _ => {
                out.push(Piece::Text(&rest[..=start]));
                rest = after;
            }
        }
    }
    out.push(Piece::Text(rest));
    out
}

/// The `{name}` placeholders of a batch parameter, in order. `${...}` and braces around
/// anything but a name are not placeholders.
///
/// # Examples
/// ```
/// use conveyor_core::config::parameter_placeholders;
/// assert_eq!(parameter_placeholders("--table={table} ${HOME} {\"a\": 1}"), vec!["table"]);
/// ```
pub fn parameter_placeholders(template: &str) -> Vec<String> {
    pieces(template)
        .into_iter()
        .filter_map(|p| match p {
            Piece::Name(n) => Some(n.to_owned()),
            Piece::Text(_) => None,
        })
        .collect()
}

/// Replaces the `{name}` placeholders of a batch parameter by their values (verbatim: these
/// go to an API, not a shell).
///
/// # Errors
/// The first placeholder without a value.
pub fn render_parameter(template: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    for piece in pieces(template) {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Name(name) => match vars.get(name) {
                Some(v) => out.push_str(v),
                None => return Err(format!("{{{name}}} has no value")),
            },
        }
    }
    Ok(out)
}

/// Serde helpers that accept a value both as itself and as a string: inside an internally
/// tagged enum the YAML loader hands every scalar over as a string.
mod lenient {
    use serde::{Deserialize, Deserializer, de::Error};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Bool(bool),
        Int(u64),
        Text(String),
    }

    pub(super) fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        match Scalar::deserialize(d)? {
            Scalar::Bool(b) => Ok(b),
            Scalar::Text(s) if s.eq_ignore_ascii_case("true") => Ok(true),
            Scalar::Text(s) if s.eq_ignore_ascii_case("false") => Ok(false),
            _ => Err(D::Error::custom("expected true or false")),
        }
    }

    pub(super) fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
        let n = match Scalar::deserialize(d)? {
            Scalar::Int(n) => n,
            Scalar::Text(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|_| D::Error::custom(format!("expected a port number, not {s:?}")))?,
            Scalar::Bool(_) => return Err(D::Error::custom("expected a port number")),
        };
        u16::try_from(n).map_err(|_| D::Error::custom(format!("{n} is not a port number")))
    }

    pub(super) fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        let n = match Scalar::deserialize(d)? {
            Scalar::Int(n) => n,
            Scalar::Text(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|_| D::Error::custom(format!("expected a whole number, not {s:?}")))?,
            Scalar::Bool(_) => return Err(D::Error::custom("expected a whole number")),
        };
        u32::try_from(n)
            .map(Some)
            .map_err(|_| D::Error::custom(format!("{n} is too large")))
    }
}

fn yes() -> bool {
    true
}

/// A SQL query job (`engine: sql`). Placeholders in `query` and `destination` take the run's
/// values in their table-safe form (`{date}` of `2026-11-20` is `2026_11_20`, as in
/// `load.table`) and `{table}` (the loaded table); a value that is not table-safe is refused,
/// never pasted into SQL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlJob {
    /// The query (GoogleSQL in BigQuery; the embedded mode runs it on SQLite with the
    /// warehouse's datasets attached, so `dataset.table` names work the same).
    pub query: String,
    /// The table the query's result is written to (`dataset.table`). Without it the query
    /// runs as a script (DML/DDL such as `TRUNCATE TABLE`, `MERGE`).
    #[serde(default)]
    pub destination: Option<String>,
    /// What happens to the destination's rows. Default `WRITE_EMPTY` (BigQuery's).
    #[serde(default)]
    pub write_disposition: Option<super::WriteDisposition>,
    /// Whether a missing destination is created. Default `CREATE_IF_NEEDED`.
    #[serde(default)]
    pub create_disposition: super::CreateDisposition,
}

impl SqlJob {
    /// The query and destination with their placeholders filled from `vars`. Every value
    /// must be table-safe (letters, digits, `_`), except `{table}`, which must be a table
    /// reference: nothing else is ever pasted into SQL. (The submit step passes the run's
    /// captures and date in their table-safe form, as `load.table` uses them.)
    ///
    /// # Errors
    /// The placeholder and why its value is refused, or a destination that is not a table.
    pub fn rendered(
        &self,
        vars: &BTreeMap<String, String>,
    ) -> Result<(String, Option<crate::names::TableRef>), String> {
        let mut checked = BTreeMap::new();
        let names = parameter_placeholders(&self.query).into_iter().chain(
            self.destination
                .iter()
                .flat_map(|d| parameter_placeholders(d)),
        );
        for name in names {
            let Some(value) = vars.get(&name) else {
                return Err(format!("{{{name}}} has no value"));
            };
            let safe = if name == "table" {
                crate::names::TableRef::parse(value).is_ok()
            } else {
                !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            };
            if !safe {
                return Err(format!(
                    "{{{name}}} = {value:?} is not table-safe (letters, digits and '_'): it is \
                     not pasted into SQL"
                ));
            }
            checked.insert(name, value.clone());
        }
        let query = render_parameter(&self.query, &checked)?;
        let destination = match &self.destination {
            None => None,
            Some(d) => {
                let d = render_parameter(d, &checked)?;
                Some(crate::names::TableRef::parse(&d).map_err(|e| e.to_string())?)
            }
        };
        Ok((query, destination))
    }
}

/// A local command run as the batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalBatch {
    /// The command, run by `sh -c`. Placeholders: the trigger's captures, `{run_id}`,
    /// `{table}`, `{attempt}`, `{job_id}`.
    pub command: String,
    /// Extra environment variables for the command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The directory the command runs in. A relative path is relative to the pipeline file,
    /// and so is the default (the pipeline file's directory), so a pipeline file runs the
    /// same from any working directory. Configuration text read without a file
    /// (`parse_str`) runs commands in the process's working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<std::path::PathBuf>,
}

impl LocalBatch {
    /// Makes the working directory relative to `base` (the pipeline file's directory):
    /// `base` itself when none is given, `base/DIR` when a relative one is.
    pub fn resolve_relative(&mut self, base: &std::path::Path) {
        self.working_dir = Some(match self.working_dir.take() {
            Some(dir) if dir.is_absolute() => dir,
            Some(dir) => base.join(dir),
            None => base.to_path_buf(),
        });
    }
}

/// A command run over SSH on a remote host (seed 000's on-prem cluster), detached under the
/// job id: the host keeps a directory per job (`work_dir/JOB_ID`) with `command`, `pid`,
/// `stdout.log`, `stderr.log` and, once it ends, `exit_code`, as the local engine does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SshBatch {
    /// The host name or address.
    pub host: String,
    /// The SSH port. Default 22.
    #[serde(default = "default_ssh_port", deserialize_with = "lenient::port")]
    #[schemars(schema_with = "crate::config::schema::port")]
    pub port: u16,
    /// The user to log in as.
    pub user: String,
    /// The Secret Manager secret holding the private key (OpenSSH or PEM format, without a
    /// passphrase): `projects/P/secrets/NAME[/versions/V]`; embedded: the file
    /// `.conveyor/secrets/projects/P/secrets/NAME`.
    pub key_secret: crate::config::SecretRef,
    /// The host's public key, as `known_hosts` lines (`[host]:port ssh-ed25519 AAAA...`, or
    /// just `ssh-ed25519 AAAA...`). Required: the key is pinned, never trusted on first use.
    pub known_hosts: String,
    /// The command, run by `sh -c` in the user's home directory on the host. Placeholders are
    /// shell-quoted, and also exported as `CONVEYOR_<NAME>`.
    pub command: String,
    /// Extra environment variables for the command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Where the job directories live on the host, relative to the user's home directory
    /// unless absolute. Default `.conveyor/batches`.
    #[serde(default = "default_ssh_work_dir")]
    pub work_dir: String,
    /// How long connecting (TCP, key exchange, authentication) may take. Default 30s.
    #[serde(default = "default_ssh_connect_timeout", with = "humantime_serde")]
    #[schemars(schema_with = "crate::config::schema::duration")]
    pub connect_timeout: Duration,
}

fn default_ssh_port() -> u16 {
    22
}

fn default_ssh_work_dir() -> String {
    ".conveyor/batches".to_owned()
}

fn default_ssh_connect_timeout() -> Duration {
    Duration::from_secs(30)
}

/// The key types a `known_hosts` line may pin.
const HOST_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
];

impl SshBatch {
    /// The host keys `known_hosts` pins for this host and port: `(key type, base64 key)`.
    /// A line applies when it names no host, or names `host` (port 22) or `[host]:port`.
    ///
    /// # Errors
    /// A line that is not `[HOSTS] KEYTYPE BASE64 [COMMENT]`, or a marker (`@revoked`,
    /// `@cert-authority`) or hashed host name, which are not supported.
    pub fn host_keys(&self) -> Result<Vec<(String, String)>, String> {
        let wanted = if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        };
        let mut keys = Vec::new();
        for (i, line) in self.known_hosts.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let bad = |why: &str| format!("line {} of known_hosts: {why}", i + 1);
            if fields[0].starts_with('@') {
                return Err(bad("markers (@revoked, @cert-authority) are not supported"));
            }
            let (hosts, ty, key) = if HOST_KEY_TYPES.contains(&fields[0]) {
                (None, fields[0], fields.get(1))
            } else {
                (
                    Some(fields[0]),
                    fields.get(1).copied().unwrap_or(""),
                    fields.get(2),
                )
            };
            if !HOST_KEY_TYPES.contains(&ty) {
                return Err(bad(&format!(
                    "expected `[HOSTS] KEYTYPE BASE64` with KEYTYPE one of {}",
                    HOST_KEY_TYPES.join(", ")
                )));
            }
            let Some(key) = key else {
                return Err(bad("the key is missing after its type"));
            };
            if let Some(hosts) = hosts {
                if hosts.contains("|1|") {
                    return Err(bad(
                        "hashed host names are not supported: write the host name (ssh-keyscan without -H)",
                    ));
                }
                if !hosts.split(',').any(|h| h == wanted) {
                    continue;
                }
            }
            keys.push((ty.to_owned(), (*key).to_owned()));
        }
        Ok(keys)
    }

    fn problems(&self, o: &mut Vec<(String, String)>) {
        fixed(o, "host", &self.host);
        fixed(o, "user", &self.user);
        fixed(o, "work_dir", &self.work_dir);
        required(o, "command", &self.command);
        if self.port == 0 {
            say(o, "port", "must be between 1 and 65535");
        }
        for (field, value) in [("host", &self.host), ("user", &self.user)] {
            if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                say(o, field, "must not contain spaces or control characters");
            }
        }
        if self.work_dir.chars().any(char::is_control) {
            say(o, "work_dir", "must not contain control characters");
        }
        for key in self.env.keys() {
            if !crate::shell::is_env_name(key) {
                say(
                    o,
                    &format!("env.{key}"),
                    "is not a shell variable name (letters, digits, `_`)",
                );
            }
        }
        match self.host_keys() {
            Err(e) => say(o, "known_hosts", e),
            Ok(keys) if keys.is_empty() => say(
                o,
                "known_hosts",
                format!(
                    "pins no key for {}: add the host's key (`ssh-keyscan -p {} {}`, checked against the host's own fingerprint); it is never trusted on first use",
                    self.host, self.port, self.host
                ),
            ),
            Ok(_) => {}
        }
    }
}

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

/// A Spark program: a main class in a jar, or a main jar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SparkJob {
    /// The main class (`com.example.services.Application`); its jar goes in `jar_file_uris`.
    #[serde(default)]
    pub main_class: Option<String>,
    /// The jar whose manifest names the main class (instead of `main_class`).
    #[serde(default)]
    pub main_jar_file_uri: Option<String>,
    /// Jars on the classpath (`gs://...`).
    #[serde(default)]
    pub jar_file_uris: Vec<String>,
    /// Files copied into the working directory of each executor.
    #[serde(default)]
    pub file_uris: Vec<String>,
    /// Archives extracted into the working directory of each executor.
    #[serde(default)]
    pub archive_uris: Vec<String>,
    /// Arguments of the main class (`--table={table}`).
    #[serde(default)]
    pub args: Vec<String>,
}

impl SparkJob {
    fn problems(&self, out: &mut Vec<(String, String)>, path: &str) {
        if self.main_class.is_some() == self.main_jar_file_uri.is_some() {
            say(out, path, "set either `main_class` or `main_jar_file_uri`");
        }
    }

    fn each_parameter(&mut self, path: &str, f: &mut dyn FnMut(&str, &mut String)) {
        opt(f, &format!("{path}.main_class"), &mut self.main_class);
        opt(
            f,
            &format!("{path}.main_jar_file_uri"),
            &mut self.main_jar_file_uri,
        );
        list(f, &format!("{path}.jar_file_uris"), &mut self.jar_file_uris);
        list(f, &format!("{path}.file_uris"), &mut self.file_uris);
        list(f, &format!("{path}.archive_uris"), &mut self.archive_uris);
        list(f, &format!("{path}.args"), &mut self.args);
    }
}

/// A PySpark program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PySparkJob {
    /// The main Python file (`gs://.../job.py`).
    pub main_python_file_uri: String,
    /// Extra Python files (`.py`, `.zip`, `.egg`).
    #[serde(default)]
    pub python_file_uris: Vec<String>,
    /// Jars on the classpath.
    #[serde(default)]
    pub jar_file_uris: Vec<String>,
    /// Files copied into the working directory of each executor.
    #[serde(default)]
    pub file_uris: Vec<String>,
    /// Archives extracted into the working directory of each executor.
    #[serde(default)]
    pub archive_uris: Vec<String>,
    /// Arguments of the program.
    #[serde(default)]
    pub args: Vec<String>,
}

impl PySparkJob {
    fn each_parameter(&mut self, path: &str, f: &mut dyn FnMut(&str, &mut String)) {
        f(
            &format!("{path}.main_python_file_uri"),
            &mut self.main_python_file_uri,
        );
        list(
            f,
            &format!("{path}.python_file_uris"),
            &mut self.python_file_uris,
        );
        list(f, &format!("{path}.jar_file_uris"), &mut self.jar_file_uris);
        list(f, &format!("{path}.file_uris"), &mut self.file_uris);
        list(f, &format!("{path}.archive_uris"), &mut self.archive_uris);
        list(f, &format!("{path}.args"), &mut self.args);
    }
}

/// A Spark SQL script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SparkSqlJob {
    /// The script (`gs://.../query.sql`).
    pub query_file_uri: String,
    /// Values of the script's variables (`SET name=value`).
    #[serde(default)]
    pub query_variables: BTreeMap<String, String>,
    /// Jars on the classpath.
    #[serde(default)]
    pub jar_file_uris: Vec<String>,
}

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

/// A Pig job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PigJob {
    /// The Pig queries, run in order; `sh CMD` runs a shell command on the master.
    #[serde(default)]
    pub queries: Vec<String>,
    /// A Pig script instead of `queries` (`gs://.../job.pig`).
    #[serde(default)]
    pub query_file_uri: Option<String>,
    /// Values of the script's variables (`name=value`).
    #[serde(default)]
    pub script_variables: BTreeMap<String, String>,
    /// Jars on the Pig client's classpath (UDFs).
    #[serde(default)]
    pub jar_file_uris: Vec<String>,
    /// Run the remaining queries when one fails.
    #[serde(default, deserialize_with = "lenient::flag")]
    #[schemars(schema_with = "crate::config::schema::flag")]
    pub continue_on_failure: bool,
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_identifiers_in_braces_are_placeholders() {
        let vars = BTreeMap::from([("table".to_owned(), "ds.t".to_owned())]);
        assert_eq!(
            render_parameter(
                "--t={table} ${HOME} ${logicalStartTime(yyyy)} {\"a\": 1} {",
                &vars
            )
            .unwrap(),
            "--t=ds.t ${HOME} ${logicalStartTime(yyyy)} {\"a\": 1} {"
        );
        assert!(
            render_parameter("{nope}", &vars)
                .unwrap_err()
                .contains("{nope}")
        );
        assert_eq!(parameter_placeholders("{a}-{b} ${c}"), vec!["a", "b"]);
    }

    #[test]
    fn rendering_a_spec_names_the_field_of_a_missing_placeholder() {
        let spec = BatchSpec::DataflowFlex(DataflowFlex {
            project: "p".into(),
            region: "r".into(),
            template: "gs://t".into(),
            parameters: BTreeMap::from([("query".into(), "select {column}".into())]),
            machine_type: None,
            num_workers: None,
            max_workers: None,
            temp_location: None,
            staging_location: None,
            network: None,
            subnetwork: None,
            private_ips: false,
            service_account: None,
            labels: BTreeMap::new(),
        });
        let err = spec.rendered(&BTreeMap::new()).unwrap_err();
        assert!(err.contains("batch.parameters.query"), "{err}");
    }

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
