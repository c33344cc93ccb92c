//! Parsed names: everything that arrives from an event or a config file is parsed into one of
//! these before use, so a step never builds a path or a query from unchecked text.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A name was rejected by its parser.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct NameError {
    /// What kind of name it was.
    pub kind: &'static str,
    /// The rejected text (truncated to 200 characters).
    pub value: String,
    /// Why it was rejected.
    pub reason: &'static str,
}

impl NameError {
    fn new(kind: &'static str, value: &str, reason: &'static str) -> Self {
        Self {
            kind,
            value: value.chars().take(200).collect(),
            reason,
        }
    }
}

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::parse(s)
            }
        }
    };
    ($(#[$meta:meta])* $name:ident, $kind:literal, $rule:expr) => {
        string_newtype!($(#[$meta])* $name);

        impl $name {
            #[doc = concat!("Parses the ", $kind, " `s`.")]
            ///
            /// # Errors
            /// A [`NameError`] saying what rule the text breaks.
            pub fn parse(s: &str) -> Result<Self, NameError> {
                let rule: fn(&'static str, &str) -> Result<(), NameError> = $rule;
                rule($kind, s)?;
                Ok(Self(s.to_owned()))
            }
        }
    };
}

/// A JSON Schema for a name that is written as a string in the pipeline file: `pattern` is
/// the name's rule (ECMA-262, without look-around, which not every validator's regex engine
/// has), `description` says it in words for editors, and `reserved` (optional) is a name the
/// rule otherwise allows but that is taken.
macro_rules! string_schema {
    ($name:ident, $pattern:expr, $description:expr) => {
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": $pattern,
                    "description": $description,
                })
            }
        }
    };
    ($name:ident, $pattern:expr, $description:expr, reserved: $reserved:expr) => {
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": $pattern,
                    "not": { "const": $reserved },
                    "description": $description,
                })
            }
        }
    };
}

string_schema!(
    BucketName,
    "^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$",
    "A Cloud Storage bucket name: 3-63 characters of a-z, 0-9, '-', '_' and '.', starting and ending with a letter or digit."
);
string_schema!(
    PipelineName,
    "^[a-z][a-z0-9_-]{0,62}$",
    "1-63 characters of a-z, 0-9, '-' and '_', starting with a letter; part of run and job ids."
);
string_schema!(
    JobName,
    "^[a-z][a-z0-9_-]{0,29}$",
    "1-30 characters of a-z, 0-9, '-' and '_', starting with a letter; `load` is reserved for the load step.",
    reserved: "load"
);
string_schema!(
    TableRef,
    "^([a-z0-9-]{6,30}\\.)?[A-Za-z0-9_]{1,1024}\\.[A-Za-z0-9_]{1,1024}$",
    "A BigQuery table: `dataset.table` or `project.dataset.table`."
);

string_newtype!(
    /// A Cloud Storage bucket name (3–63 characters of `a-z 0-9 - _ .`, starting and ending
    /// with a letter or digit). In the embedded mode it is a directory name, so the same rule
    /// keeps `..` and `/` out of paths.
    BucketName,
    "bucket name",
    bucket_name
);

/// The rule of [`BucketName`].
fn bucket_name(kind: &'static str, s: &str) -> Result<(), NameError> {
    if !(3..=63).contains(&s.len()) {
        return Err(NameError::new(kind, s, "must be 3 to 63 characters"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
    {
        return Err(NameError::new(
            kind,
            s,
            "only a-z, 0-9, '-', '_' and '.' are allowed",
        ));
    }
    let ends_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !ends_ok(s.bytes().next()) || !ends_ok(s.bytes().last()) || s.contains("..") {
        return Err(NameError::new(
            kind,
            s,
            "must start and end with a letter or digit",
        ));
    }
    Ok(())
}

string_newtype!(
    /// An object name inside a bucket: relative, `/`-separated, no empty, `.` or `..`
    /// segments, no control characters, at most 1024 bytes (the GCS limit).
    ObjectName,
    "object name",
    object_name
);

/// The rule of [`ObjectName`].
fn object_name(kind: &'static str, s: &str) -> Result<(), NameError> {
    if s.is_empty() || s.len() > 1024 {
        return Err(NameError::new(kind, s, "must be 1 to 1024 bytes"));
    }
    if s.chars().any(|c| c.is_control() || c == '\\') {
        return Err(NameError::new(
            kind,
            s,
            "control characters and '\\' are not allowed",
        ));
    }
    if s.split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(NameError::new(
            kind,
            s,
            "segments must be non-empty and not '.' or '..' (no leading or trailing '/')",
        ));
    }
    Ok(())
}

impl ObjectName {
    /// The last path segment.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

/// The rule pipeline and job names share: 1 to `max` characters of `a-z 0-9 - _`, starting with
/// a letter (they become parts of job ids, so they keep to what every engine accepts).
/// `length` says the rule on `max` in words.
fn identifier(
    kind: &'static str,
    s: &str,
    max: usize,
    length: &'static str,
) -> Result<(), NameError> {
    if s.is_empty() || s.len() > max {
        return Err(NameError::new(kind, s, length));
    }
    if !s.bytes().next().is_some_and(|b| b.is_ascii_lowercase()) {
        return Err(NameError::new(
            kind,
            s,
            "must start with a lowercase letter",
        ));
    }
    word_characters(kind, s)?;
    Ok(())
}

string_newtype!(
    /// A pipeline name from the configuration: 1–63 characters of `a-z 0-9 - _`, starting
    /// with a letter. It appears in job ids, so it is kept to what every engine accepts.
    PipelineName,
    "pipeline name",
    |kind, s| identifier(kind, s, 63, "must be 1 to 63 characters")
);

string_newtype!(
    /// The name of a job of a pipeline (`jobs[].name`): 1–30 characters of `a-z 0-9 - _`,
    /// starting with a letter. It is part of job ids. `load` is reserved for the load step.
    JobName,
    "job name",
    |kind, s| {
        identifier(kind, s, 30, "must be 1 to 30 characters")?;
        if s == "load" {
            return Err(NameError::new(
                kind,
                s,
                "`load` names the load step; choose another name",
            ));
        }
        Ok(())
    }
);

impl JobName {
    /// The name a pipeline's single `batch:` gets as a job.
    pub fn batch() -> Self {
        Self("batch".to_owned())
    }
}

/// Dataset names the embedded warehouse cannot hold: it attaches each dataset to SQLite
/// under the dataset's name, and SQLite keeps `main` and `temp` (in any case) for its own
/// databases ("database temp is already in use"). BigQuery accepts them; a pipeline file
/// that runs in both modes does not use them.
pub const SQLITE_RESERVED_DATASETS: [&str; 2] = ["main", "temp"];

/// Why `dataset` cannot be a dataset of the embedded warehouse, or `None` when it can.
pub fn reserved_dataset(dataset: &str) -> Option<String> {
    SQLITE_RESERVED_DATASETS
        .iter()
        .any(|r| dataset.eq_ignore_ascii_case(r))
        .then(|| {
            format!(
                "dataset {dataset:?} is a name SQLite reserves (main, temp, in any case), and \
                 the embedded warehouse keeps each dataset in SQLite under its name: choose \
                 another dataset name"
            )
        })
}

/// A BigQuery table reference `[project.]dataset.table`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct TableRef {
    /// The project, when given; otherwise the service's project.
    pub project: Option<String>,
    /// The dataset.
    pub dataset: String,
    /// The table.
    pub table: String,
}

impl TableRef {
    /// Parses `dataset.table` or `project.dataset.table`. Datasets and tables are 1–1024
    /// characters of `A-Z a-z 0-9 _`; projects 6–30 of `a-z 0-9 -`.
    ///
    /// # Errors
    /// A [`NameError`] saying what rule the text breaks.
    ///
    /// # Examples
    /// ```
    /// let t = conveyor_core::names::TableRef::parse("analytics.sales_2026_11_20").unwrap();
    /// assert_eq!(t.dataset, "analytics");
    /// assert!(conveyor_core::names::TableRef::parse("analytics.sales; DROP TABLE x").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let kind = "table reference";
        let parts: Vec<&str> = s.split('.').collect();
        let (project, dataset, table) = match parts.as_slice() {
            [d, t] => (None, *d, *t),
            [p, d, t] => (Some(*p), *d, *t),
            _ => {
                return Err(NameError::new(
                    kind,
                    s,
                    "must be dataset.table or project.dataset.table",
                ));
            }
        };
        let ident = |x: &str| {
            !x.is_empty()
                && x.len() <= 1024
                && x.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        if !ident(dataset) || !ident(table) {
            return Err(NameError::new(
                kind,
                s,
                "dataset and table allow only A-Z, a-z, 0-9 and '_'",
            ));
        }
        if let Some(p) = project {
            let ok = (6..=30).contains(&p.len())
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(NameError::new(
                    kind,
                    s,
                    "project must be 6-30 characters of a-z, 0-9, '-'",
                ));
            }
        }
        Ok(Self {
            project: project.map(str::to_owned),
            dataset: dataset.to_owned(),
            table: table.to_owned(),
        })
    }
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.project {
            Some(p) => write!(f, "{p}.{}.{}", self.dataset, self.table),
            None => write!(f, "{}.{}", self.dataset, self.table),
        }
    }
}

impl<'de> Deserialize<'de> for TableRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

string_newtype!(
    /// A run id: deterministic from what started the run, so a redelivered trigger maps to
    /// the same run. 1–128 characters of `a-z 0-9 - _`.
    RunId,
    "run id",
    id_like
);

impl RunId {
    /// The run id for `pipeline` started by the trigger identified by `parts` (for an object:
    /// bucket, name and generation; for a schedule: the scheduled time).
    pub fn derive(pipeline: &PipelineName, parts: &[&str]) -> Self {
        Self(format!("{}-{}", pipeline, short_hash(parts)))
    }
}

string_newtype!(
    /// A load or batch job id: deterministic per run, step and attempt, so a retried request
    /// finds its job instead of starting a second one. 1–128 characters of `a-z 0-9 - _`
    /// (valid for BigQuery, Dataproc, Dataflow and Data Fusion alike).
    JobId,
    "job id",
    id_like
);

impl JobId {
    /// The job id of `step` for `run` at `attempt` (1-based). Dataproc batch ids allow at most
    /// 63 characters and must start with a letter: the id is kept to that.
    pub fn derive(step: &str, run: &RunId, attempt: u32) -> Self {
        let hash = short_hash(&[step, run.as_str(), &attempt.to_string()]);
        let mut prefix: String = format!("cv-{step}-{run}");
        prefix.truncate(40);
        let prefix = prefix.trim_end_matches(['-', '_']).replace('_', "-");
        Self(format!("{prefix}-{hash}-a{attempt}"))
    }
}

/// Names and ids keep to `a-z 0-9 - _`.
fn word_characters(kind: &'static str, s: &str) -> Result<(), NameError> {
    if s.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(NameError::new(
            kind,
            s,
            "only a-z, 0-9, '-' and '_' are allowed",
        ))
    }
}

fn id_like(kind: &'static str, s: &str) -> Result<(), NameError> {
    if s.is_empty() || s.len() > 128 {
        return Err(NameError::new(kind, s, "must be 1 to 128 characters"));
    }
    word_characters(kind, s)
}

/// The first 12 hex digits of the SHA-256 of `parts` joined by NUL: short, stable ids.
pub fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_with_dot_dot_segments_are_rejected() {
        assert!(ObjectName::parse("sales/../../etc/passwd").is_err());
        assert!(ObjectName::parse("/abs").is_err());
        assert!(ObjectName::parse("sales/2026-11-20/orders.csv").is_ok());
    }

    #[test]
    fn bucket_names_follow_gcs_rules() {
        assert!(BucketName::parse("landing").is_ok());
        assert!(BucketName::parse("Landing").is_err());
        assert!(BucketName::parse("a/b").is_err());
        assert!(BucketName::parse("..").is_err());
    }

    #[test]
    fn table_refs_reject_injection() {
        assert!(TableRef::parse("ds.t").is_ok());
        assert!(TableRef::parse("my-project.ds.t").is_ok());
        assert!(TableRef::parse("ds.t`; drop").is_err());
        assert!(TableRef::parse("t").is_err());
    }

    #[test]
    fn job_ids_are_deterministic_and_dataproc_safe() {
        let p = PipelineName::parse("sales_daily").unwrap();
        let run = RunId::derive(&p, &["landing", "sales/a.csv", "1"]);
        let a = JobId::derive("batch", &run, 1);
        assert_eq!(a, JobId::derive("batch", &run, 1));
        assert_ne!(a, JobId::derive("batch", &run, 2));
        assert!(a.as_str().len() <= 63, "{a}");
        assert!(a.as_str().starts_with("cv-"));
        assert!(!a.as_str().contains('_'));
    }
}
