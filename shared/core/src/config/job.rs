//! A pipeline as a small graph: its `jobs` (run in order after the load), a job's `for_each`
//! rows, and the load's `batch` (a folder per marker, or a time window).
//!
//! ```yaml
//! jobs:
//!   - name: dedupe
//!     engine: sql
//!     query: "SELECT DISTINCT * FROM staging.orders_{date}"
//!     destination: analytics.orders
//!   - name: per_unit
//!     engine: data_fusion
//!     instance_url: https://cdf-dot-usc1.datafusion.googleusercontent.com/api
//!     pipeline: unit_load
//!     for_each: { table: cdf.configuration, active_column: is_active }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{BatchSpec, PollPolicy};
use crate::names::{JobName, TableRef};

/// One job of a pipeline: a batch on one engine, started when the job before it (or the load)
/// SUCCEEDED.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Unique within the pipeline; part of the job's ids and of its run-log rows.
    pub name: JobName,
    /// What runs: `engine:` and the engine's fields.
    #[serde(flatten)]
    pub spec: BatchSpec,
    /// Run the job once per row (of an inline list or of a table read when the job starts);
    /// each row is retried, timed out and logged on its own, and the job ends when every row
    /// has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<ForEach>,
    /// This job's own poll policy (timeout, attempts, success states); default: the
    /// pipeline's `poll`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll: Option<PollPolicy>,
    /// The jobs this one waits for. When no job of the pipeline declares `needs`, the jobs run
    /// in list order (each needs the one before it); when any does, the jobs form a graph and a
    /// job without `needs` starts with the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<JobName>,
    /// When the job runs, given how the jobs it needs ended; a job whose rule cannot be met
    /// is SKIPPED.
    #[serde(default, skip_serializing_if = "RunIf::is_default")]
    pub run_if: RunIf,
    /// A condition read when the job would start: false → the job is SKIPPED (and what needs
    /// it follows its rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<When>,
    /// Data-quality checks run after the job SUCCEEDED: a failing `error` check fails it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<super::Check>,
    /// Where the job's run-log rows go besides the run-log table (which keeps every row: it is
    /// what the chain follows): `[bigquery]` the table only, `[postgres]` or `[both]` the
    /// pipeline's `run_log.postgres` table too. Default: every destination configured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub run_log: Vec<RunLogDestination>,
    /// The database the job is about, written to its run-log rows' `db_name` (a template of
    /// the run's values, e.g. the replicated Teradata database `{db}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<String>,
    /// The table the job is about, written to its run-log rows' `table_name` (a template of
    /// the run's values, e.g. `{table_name}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
}

/// `jobs[].run_log`: a destination of a job's run-log rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunLogDestination {
    /// The run-log table (BigQuery on Google Cloud, the embedded database embedded) only.
    Bigquery,
    /// The pipeline's `run_log.postgres` table (Cloud SQL) as well.
    Postgres,
    /// Both.
    Both,
}

impl Job {
    /// Whether the job's rows go to the PostgreSQL sink (when one is configured).
    pub fn logs_to_postgres(&self) -> bool {
        self.run_log.is_empty()
            || self
                .run_log
                .iter()
                .any(|d| matches!(d, RunLogDestination::Postgres | RunLogDestination::Both))
    }
}

/// `jobs[].when`: `{ table_exists: "ds.t_{date_nodash}" }` or `{ query: "SELECT …" }` (the
/// first column of the first row, true when it reads `true`, `1`, `yes`; no row is false).
/// Placeholders are the run's, table-safe as in a `sql` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// A table (`dataset.table`) that must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_exists: Option<String>,
    /// A read-only query whose one value says whether the job runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

impl When {
    /// The condition as the run log's SKIPPED row names it.
    pub fn describe(&self) -> String {
        match (&self.table_exists, &self.query) {
            (Some(t), _) => format!("table_exists {t}"),
            (None, Some(q)) => format!("query {q:?}"),
            (None, None) => "an empty condition".to_owned(),
        }
    }
}

/// `jobs[].run_if`: Airflow's trigger rules, decided once every job a job needs has ended
/// (SKIPPED counts as ended, not as failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunIf {
    /// Every job it needs SUCCEEDED (the default).
    #[default]
    AllSucceeded,
    /// Every job it needs ended, however.
    AllDone,
    /// At least one job it needs failed (FAILED or TIMED_OUT): a cleanup or an alert.
    OneFailed,
    /// Every job it needs failed.
    AllFailed,
}

/// How one job a job needs ended, as its rule reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// SUCCEEDED.
    Succeeded,
    /// FAILED or TIMED_OUT, with no retry left.
    Failed,
    /// SKIPPED.
    Skipped,
}

impl RunIf {
    fn is_default(&self) -> bool {
        *self == Self::AllSucceeded
    }

    /// Whether a job with this rule runs, given how each job it needs ended (every one has).
    /// A job that needs nothing runs.
    pub fn allows(self, needs: &[Ended]) -> bool {
        let failed = needs.iter().filter(|e| **e == Ended::Failed).count();
        if needs.is_empty() {
            return true;
        }
        match self {
            Self::AllSucceeded => needs.iter().all(|e| *e == Ended::Succeeded),
            Self::AllDone => true,
            Self::OneFailed => failed > 0,
            Self::AllFailed => failed == needs.len(),
        }
    }

    /// The rule as the file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllSucceeded => "all_succeeded",
            Self::AllDone => "all_done",
            Self::OneFailed => "one_failed",
            Self::AllFailed => "all_failed",
        }
    }
}

/// Where a job's rows come from: inline `rows`, or a `table` read when the job starts.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForEach {
    /// A table (`dataset.table`) whose rows are read when the job starts (seed 004's
    /// configuration table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<TableRef>,
    /// Inline rows: column → value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<BTreeMap<String, serde_json::Value>>,
    /// The column that says whether a row runs (`true`, `1`, `yes`, `y`); rows without it run.
    /// Default `active`.
    #[serde(default = "default_active")]
    pub active_column: String,
    /// The column whose value keys a row (part of its run id; must be unique). Default: the
    /// row's values joined by `-`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_column: Option<String>,
}

/// The key column a Data Fusion `runs` row becomes (its `name`, or its values joined): not
/// one of the row's runtime arguments.
pub(crate) const RUN_KEY: &str = "_row";

/// The active column a Data Fusion `runs` row becomes.
pub(crate) const RUN_ACTIVE: &str = "_active";

fn default_active() -> String {
    "active".to_owned()
}

/// One row of a `for_each`, as the job sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForEachRow {
    /// The row's key (unique within the job).
    pub key: String,
    /// Whether the row runs.
    pub active: bool,
    /// The row's columns as text, without the active column: placeholders of the job, and a
    /// Data Fusion run's runtime arguments.
    pub columns: BTreeMap<String, String>,
}

impl ForEach {
    /// Turns rows read from the inline list or a table into [`ForEachRow`]s, in order.
    pub fn to_rows(&self, raw: &[BTreeMap<String, String>]) -> Vec<ForEachRow> {
        raw.iter()
            .enumerate()
            .map(|(i, row)| {
                let active = row
                    .get(&self.active_column)
                    .is_none_or(|v| truthy(v.trim()));
                let columns: BTreeMap<String, String> = row
                    .iter()
                    .filter(|(k, _)| **k != self.active_column && k.as_str() != RUN_KEY)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let key = match self.key_column.as_ref().and_then(|c| row.get(c)) {
                    Some(k) => k.clone(),
                    None if columns.is_empty() => format!("row{}", i + 1),
                    None => columns.values().cloned().collect::<Vec<_>>().join("-"),
                };
                ForEachRow {
                    key,
                    active,
                    columns,
                }
            })
            .collect()
    }

    /// The inline rows as text.
    pub(crate) fn inline_rows(&self) -> Vec<BTreeMap<String, String>> {
        self.rows
            .iter()
            .map(|row| row.iter().map(|(k, v)| (k.clone(), text(v))).collect())
            .collect()
    }
}

/// A JSON value as the text a placeholder gets: strings as they are, others as JSON.
pub(crate) fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Whether a flag column's value means "yes" (seed 004's `is_active`: `true`, `1`, `Y`).
pub(crate) fn truthy(v: &str) -> bool {
    matches!(
        v.to_ascii_lowercase().as_str(),
        "true" | "1" | "yes" | "y" | "t"
    )
}

/// How arriving objects are grouped into one load job: `{ marker: _SUCCESS }`,
/// `{ window: 5m, max_files: 1000 }` or `{ auto: true }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "RawLoadBatch", into = "RawLoadBatch")]
pub enum LoadBatch {
    /// A folder per marker: when an object whose file name is `marker` arrives, every object
    /// of its folder that matches the pattern is loaded in one job (GEBI's `_SUCCESS`).
    Marker(MarkerBatch),
    /// A time window: arrivals for one table within `window` are loaded by one job (bqtail);
    /// `auto: true` is a window too, sized to BigQuery's daily quota of load jobs per table.
    Window(WindowBatch),
}

/// `load.batch: { marker: _SUCCESS }` or `{ marker: { name: _SUCCESS, covers: subfolders } }`.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkerBatch {
    /// The file name that says a folder is complete.
    pub marker: String,
    /// What the marker completes: its own folder (the default), or every folder below it.
    pub covers: MarkerCovers,
    /// What a bad file does to the batch.
    pub bad_files: BadFiles,
}

/// What a bad file (one its load job names in its error) does to its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BadFiles {
    /// The batch's job fails, and nothing of it is loaded (the default, as BigQuery does).
    #[default]
    Fail,
    /// The files the failed job names are moved under `_quarantine/` (their path kept) and
    /// recorded with the reason in the run log; the other files load in a job of their own.
    Quarantine,
}

/// What a marker completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MarkerCovers {
    /// The files of the marker's own folder (GEBI's `_SUCCESS` beside the parts).
    #[default]
    Folder,
    /// The files of every folder below the marker's (a `_SUCCESS` one folder above the parts,
    /// as Spark writes a partitioned output).
    Subfolders,
}

/// `load.batch.marker` as the file writes it: a file name, or `{ name, covers }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
enum RawMarker {
    /// The marker's file name (`_SUCCESS`), covering its own folder.
    Name(String),
    /// The marker's file name and what it covers.
    Spec {
        /// The marker's file name (`_SUCCESS`).
        name: String,
        /// `folder` (the default) or `subfolders`.
        #[serde(default)]
        covers: MarkerCovers,
    },
}

/// `load.batch: { window: 5m, max_files: 1000 }` or `{ auto: true, max_delay: 62s }`.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowBatch {
    /// How long a window lasts (windows are aligned to multiples of it). With `auto`, the
    /// `max_delay` (default [`super::AUTO_WINDOW`]).
    pub window: Duration,
    /// `auto: true`: an arrival to a table that had no window in the previous period is
    /// loaded at once (alone); the others wait for their window's end. So a table gets at
    /// most one load job per window length (plus full windows), whatever its rate.
    pub auto: bool,
    /// A window with this many files closes at once. Default 10,000 (BigQuery's limit of
    /// source URIs per load job).
    pub max_files: usize,
    /// What a bad file does to the batch.
    pub bad_files: BadFiles,
}

/// `load.batch` as the file writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawLoadBatch {
    /// The file name that says a folder is complete (`_SUCCESS`), or `{ name: _SUCCESS,
    /// covers: subfolders }` for a marker one folder above the parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    marker: Option<RawMarker>,
    /// How long a window of arrivals lasts (`5m`).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "crate::config::schema::duration")]
    window: Option<Duration>,
    /// A window with this many files closes at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_files: Option<usize>,
    /// `true`: windows sized to stay under BigQuery's 1,500 load jobs per table per day
    /// (62 s by default); an arrival to a quiet table loads at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auto: Option<bool>,
    /// With `auto`: the longest an arrival waits for its window to close (`62s`; at least
    /// `58s`, 86,400 s / 1,500).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "crate::config::schema::duration")]
    max_delay: Option<Duration>,
    /// `quarantine`: the files a failed job names are moved under `_quarantine/` and the
    /// others load; `fail` (the default): the batch fails whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bad_files: Option<BadFiles>,
}

impl TryFrom<RawLoadBatch> for LoadBatch {
    type Error = String;

    fn try_from(raw: RawLoadBatch) -> Result<Self, String> {
        let bad_files = raw.bad_files.unwrap_or_default();
        if raw.auto == Some(true) {
            if raw.marker.is_some() || raw.window.is_some() {
                return Err(
                    "`auto: true` sizes the window itself: set `max_delay`, not `window` or `marker`"
                        .to_owned(),
                );
            }
            return Ok(Self::Window(WindowBatch {
                window: raw.max_delay.unwrap_or(super::AUTO_WINDOW),
                auto: true,
                max_files: raw.max_files.unwrap_or(super::MAX_LOAD_URIS),
                bad_files,
            }));
        }
        if raw.max_delay.is_some() {
            return Err("`max_delay` goes with `auto: true`".to_owned());
        }
        match (raw.marker, raw.window) {
            (Some(marker), None) if raw.max_files.is_none() => Ok(Self::Marker(match marker {
                RawMarker::Name(marker) => MarkerBatch {
                    marker,
                    covers: MarkerCovers::Folder,
                    bad_files,
                },
                RawMarker::Spec { name, covers } => MarkerBatch {
                    marker: name,
                    covers,
                    bad_files,
                },
            })),
            (Some(_), None) => Err("`max_files` goes with `window`, not `marker`".to_owned()),
            (None, Some(window)) => Ok(Self::Window(WindowBatch {
                window,
                auto: false,
                max_files: raw.max_files.unwrap_or(super::MAX_LOAD_URIS),
                bad_files,
            })),
            (Some(_), Some(_)) => {
                Err("set either `marker` (a folder per marker) or `window`, not both".to_owned())
            }
            (None, None) => Err(
                "set `marker: _SUCCESS` (a folder per marker), `window: 5m` (a time window) or \
                 `auto: true` (windows sized to BigQuery's quota)"
                    .to_owned(),
            ),
        }
    }
}

impl From<LoadBatch> for RawLoadBatch {
    fn from(b: LoadBatch) -> Self {
        match b {
            LoadBatch::Marker(m) => Self {
                marker: Some(match m.covers {
                    MarkerCovers::Folder => RawMarker::Name(m.marker),
                    covers => RawMarker::Spec {
                        name: m.marker,
                        covers,
                    },
                }),
                window: None,
                max_files: None,
                auto: None,
                max_delay: None,
                bad_files: (m.bad_files != BadFiles::Fail).then_some(m.bad_files),
            },
            LoadBatch::Window(w) if w.auto => Self {
                marker: None,
                window: None,
                max_files: Some(w.max_files),
                auto: Some(true),
                max_delay: Some(w.window),
                bad_files: (w.bad_files != BadFiles::Fail).then_some(w.bad_files),
            },
            LoadBatch::Window(w) => Self {
                marker: None,
                window: Some(w.window),
                max_files: Some(w.max_files),
                auto: None,
                max_delay: None,
                bad_files: (w.bad_files != BadFiles::Fail).then_some(w.bad_files),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn rows_are_keyed_filtered_by_their_active_column_and_lose_it() {
        let fe = ForEach {
            active_column: "is_active".into(),
            ..ForEach::default()
        };
        let rows = fe.to_rows(&[
            row(&[("business_unit", "hr"), ("is_active", "true")]),
            row(&[("business_unit", "fin"), ("is_active", "0")]),
            row(&[("business_unit", "ops")]),
        ]);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].key, "hr");
        assert!(rows[0].active);
        assert!(!rows[1].active);
        assert!(rows[2].active, "a row without the column runs");
        assert!(!rows[0].columns.contains_key("is_active"));
    }

    #[test]
    fn each_trigger_rule_reads_how_the_needs_ended() {
        use Ended::{Failed, Skipped, Succeeded};
        let cases: [(&[Ended], [bool; 4]); 5] = [
            // all_succeeded, all_done, one_failed, all_failed
            (&[Succeeded, Succeeded], [true, true, false, false]),
            (&[Succeeded, Failed], [false, true, true, false]),
            (&[Failed, Failed], [false, true, true, true]),
            (&[Skipped, Succeeded], [false, true, false, false]),
            (&[Skipped, Failed], [false, true, true, false]),
        ];
        for (needs, expected) in cases {
            let got = [
                RunIf::AllSucceeded,
                RunIf::AllDone,
                RunIf::OneFailed,
                RunIf::AllFailed,
            ]
            .map(|r| r.allows(needs));
            assert_eq!(got, expected, "{needs:?}");
        }
    }

    #[test]
    fn a_key_column_keys_the_rows() {
        let fe = ForEach {
            key_column: Some("id".into()),
            ..ForEach::default()
        };
        let rows = fe.to_rows(&[row(&[("id", "7"), ("x", "a")])]);
        assert_eq!(rows[0].key, "7");
    }
}
