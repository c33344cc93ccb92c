//! The workloads both Dataproc engines run: Spark, PySpark, Spark SQL and Pig jobs.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Problems, lenient, list, map, opt, say};

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
    pub(super) fn problems(&self, out: &mut Problems, path: &str) {
        if self.main_class.is_some() == self.main_jar_file_uri.is_some() {
            say(out, path, "set either `main_class` or `main_jar_file_uri`");
        }
    }

    pub(super) fn each_parameter(&mut self, path: &str, f: &mut dyn FnMut(&str, &mut String)) {
        opt(f, &format!("{path}.main_class"), &mut self.main_class);
        opt(
            f,
            &format!("{path}.main_jar_file_uri"),
            &mut self.main_jar_file_uri,
        );
        files(
            f,
            path,
            [
                ("jar_file_uris", &mut self.jar_file_uris),
                ("file_uris", &mut self.file_uris),
                ("archive_uris", &mut self.archive_uris),
                ("args", &mut self.args),
            ],
        );
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
    pub(super) fn each_parameter(&mut self, path: &str, f: &mut dyn FnMut(&str, &mut String)) {
        f(
            &format!("{path}.main_python_file_uri"),
            &mut self.main_python_file_uri,
        );
        files(
            f,
            path,
            [
                ("python_file_uris", &mut self.python_file_uris),
                ("jar_file_uris", &mut self.jar_file_uris),
                ("file_uris", &mut self.file_uris),
                ("archive_uris", &mut self.archive_uris),
                ("args", &mut self.args),
            ],
        );
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

impl SparkSqlJob {
    pub(super) fn each_parameter(&mut self, path: &str, f: &mut dyn FnMut(&str, &mut String)) {
        f(&format!("{path}.query_file_uri"), &mut self.query_file_uri);
        map(
            f,
            &format!("{path}.query_variables"),
            &mut self.query_variables,
        );
        list(f, &format!("{path}.jar_file_uris"), &mut self.jar_file_uris);
    }
}

impl PigJob {
    pub(super) fn problems(&self, out: &mut Problems, path: &str) {
        if self.queries.is_empty() == self.query_file_uri.is_none() {
            say(out, path, "set either `queries` or `query_file_uri`");
        }
    }

    pub(super) fn each_parameter(&mut self, path: &str, f: &mut dyn FnMut(&str, &mut String)) {
        list(f, &format!("{path}.queries"), &mut self.queries);
        opt(
            f,
            &format!("{path}.query_file_uri"),
            &mut self.query_file_uri,
        );
        map(
            f,
            &format!("{path}.script_variables"),
            &mut self.script_variables,
        );
        list(f, &format!("{path}.jar_file_uris"), &mut self.jar_file_uris);
    }
}

/// The lists of files and arguments a Spark or PySpark program takes, each under `path`.
fn files<const N: usize>(
    f: &mut dyn FnMut(&str, &mut String),
    path: &str,
    lists: [(&str, &mut Vec<String>); N],
) {
    for (name, items) in lists {
        list(f, &format!("{path}.{name}"), items);
    }
}
