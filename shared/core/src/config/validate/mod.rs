//! Loading a configuration file with every error reported, once each, with its field path,
//! line and column.
//!
//! serde stops at the first error, so the file is first parsed into a marked YAML tree and each
//! section of each pipeline is deserialized on its own. When a section fails, the error is
//! recorded, the offending key is taken out of a copy of the section and the section is read
//! again, until it reads or nothing more can be taken out: every mistake of a section is
//! reported in one pass, and none twice (a required field whose value was refused is not also
//! reported missing). The cross-field checks then run on every pipeline that did read.
//!
//! # Layout
//! One file per role; here, the entry points ([`load_file`], [`parse_str`]), the issue and
//! error types, and the file's top level (`environment`, `run_log`, the list of pipelines).
//! - [`sections`]: reading one section with every mistake in it, in plain words.
//! - [`pipelines`]: one pipeline's keys and shape (a trigger, something to do, `after` and
//!   its cycles, stage and run-log checks, poll bounds).
//! - [`schedules`]: `trigger.schedule`, the cron dialect and time zones Cloud Scheduler takes.
//! - [`loads`]: `load`: the table, the declared schema, and the options BigQuery refuses.
//! - [`jobs`]: `jobs`/`batch`: each engine's fields, placeholders and success states.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use marked_yaml::{LoaderOptions, Node};

use super::Config;
use crate::names::reserved_dataset;

mod jobs;
mod loads;
mod pipelines;
mod schedules;
mod sections;

pub use schedules::{check_cron, parse_time_zone};
pub(crate) use sections::closest;
use sections::load_error_pos;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Field path, such as `pipelines[1].load.format`.
    pub path: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => {
                write!(f, "{line}:{column}: {}: {}", self.path, self.message)
            }
            (Some(line), None) => write!(f, "{line}: {}: {}", self.path, self.message),
            _ => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// A configuration file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file has errors; all of them are listed, one a line, as `file:line:col: path:
    /// message` (what editors and CI problem matchers read).
    #[error("{}\n{source_name}: {} error(s)", issues.iter().map(|i| format!("{source_name}:{i}")).collect::<Vec<_>>().join("\n"), issues.len())]
    Invalid {
        /// The file name, for messages.
        source_name: String,
        /// Every problem found, in file order.
        issues: Vec<ConfigIssue>,
    },
}

/// Reads and validates the configuration file at `path`.
///
/// # Errors
/// [`ConfigError::Read`] when the file cannot be read, [`ConfigError::Invalid`] listing every
/// problem otherwise.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mut config = parse_str(&text, &path.display().to_string())?;
    // A relative local stage source, and a local command's working directory, are relative
    // to the file that names them.
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    let base = parent.unwrap_or(Path::new("."));
    let absolute = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
    for p in &mut config.pipelines {
        if let Some(stage) = &mut p.stage {
            stage.resolve_relative(base);
        }
        for job in &mut p.jobs {
            if let crate::config::BatchSpec::Local(local) = &mut job.spec {
                local.resolve_relative(&absolute);
            }
        }
    }
    Ok(config)
}

/// Parses and validates configuration text; `source_name` names it in messages.
///
/// # Errors
/// [`ConfigError::Invalid`] listing every problem found.
pub fn parse_str(text: &str, source_name: &str) -> Result<Config, ConfigError> {
    let mut v = Validator::default();
    let config = v.config(text);
    v.issues
        .sort_by_key(|i| (i.line.unwrap_or(usize::MAX), i.column.unwrap_or(0)));
    let mut seen = BTreeSet::new();
    v.issues
        .retain(|i| seen.insert((i.path.clone(), i.message.clone())));
    match config {
        Some(c) if v.issues.is_empty() => Ok(c),
        _ => Err(ConfigError::Invalid {
            source_name: source_name.to_owned(),
            issues: v.issues,
        }),
    }
}

#[derive(Default)]
struct Validator {
    issues: Vec<ConfigIssue>,
}

/// A line and column.
type Pos = Option<(usize, usize)>;

fn pos(marker: Option<&marked_yaml::Marker>) -> Pos {
    marker.map(|m| (m.line(), m.column()))
}

fn line_of(node: &Node) -> Pos {
    pos(node.span().start())
}

fn get<'a>(node: &'a Node, key: &str) -> Option<&'a Node> {
    node.as_mapping().and_then(|m| m.get_node(key))
}

/// Where a key path of one pipeline's YAML stands: the line of the deepest key present (the
/// pipeline's own line when none is).
#[derive(Clone, Copy)]
struct Lines<'a>(&'a Node);

impl Lines<'_> {
    /// The line of `keys`, mapping keys only.
    fn at(self, keys: &[&str]) -> Pos {
        let mut n = self.0;
        let mut line = line_of(n);
        for k in keys {
            match get(n, k) {
                Some(next) => {
                    n = next;
                    line = line_of(n).or(line);
                }
                None => break,
            }
        }
        line
    }

    /// The line of `keys`, where a number is a list index.
    fn at_path(self, keys: &[String]) -> Pos {
        let mut n = self.0;
        let mut line = line_of(n);
        for k in keys {
            let next = match k.parse::<usize>() {
                Ok(i) => n.as_sequence().and_then(|s| s.get(i)),
                Err(_) => get(n, k),
            };
            match next {
                Some(next) => {
                    n = next;
                    line = line_of(n).or(line);
                }
                None => break,
            }
        }
        line
    }
}

impl Validator {
    /// Records a problem at `path`, at line and column `at` when known.
    fn issue(&mut self, path: impl Into<String>, at: Pos, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            path: path.into(),
            line: at.map(|(l, _)| l),
            column: at.map(|(_, c)| c),
            message: message.into(),
        });
    }

    /// The whole file: its top-level keys, then each pipeline.
    fn config(&mut self, text: &str) -> Option<Config> {
        let options = LoaderOptions::default().error_on_duplicate_keys(true);
        let root = match marked_yaml::parse_yaml_with_options(0, text, options) {
            Ok(root) => root,
            Err(e) => {
                let at = load_error_pos(&e);
                self.issue("(file)", at, format!("not valid YAML/JSON: {e}"));
                return None;
            }
        };
        if root.as_mapping().is_none() {
            self.issue("(file)", line_of(&root), "the top level must be a mapping");
            return None;
        }
        self.known_keys(
            "",
            &root,
            &["environment", "run_log", "lineage", "pipelines"],
        );
        let environment = match get(&root, "environment") {
            Some(n) => self.section::<String>("environment", n),
            None => Some(super::default_environment()),
        };
        let run_log = match get(&root, "run_log") {
            Some(n) => self.section::<super::RunLogTarget>("run_log", n),
            None => Some(super::RunLogTarget::default()),
        };
        if let (Some(target), Some(node)) = (&run_log, get(&root, "run_log"))
            && let Some(why) = reserved_dataset(&target.table.dataset)
        {
            self.issue("run_log.table", get(node, "table").and_then(line_of), why);
        }
        let lineage = match get(&root, "lineage") {
            Some(n) => match self.section::<super::LineageConfig>("lineage", n) {
                Some(l) => {
                    for (field, why) in l.problems() {
                        let at = get(n, field).and_then(line_of);
                        self.issue(format!("lineage.{field}"), at, why);
                    }
                    Some(Some(l))
                }
                None => None,
            },
            None => Some(None),
        };
        let mut pipelines = Vec::new();
        match get(&root, "pipelines") {
            None => self.issue("pipelines", None, "no pipelines are declared"),
            Some(node) => match node.as_sequence() {
                None => self.issue("pipelines", line_of(node), "must be a list of pipelines"),
                Some(seq) => {
                    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
                    for (i, p) in seq.iter().enumerate() {
                        let path = format!("pipelines[{i}]");
                        if let Some(pipeline) = self.pipeline(&path, p) {
                            let name = pipeline.name.to_string();
                            if let Some(first) = seen.insert(name.clone(), i) {
                                self.issue(
                                    format!("{path}.name"),
                                    get(p, "name").and_then(line_of),
                                    format!("pipeline {name:?} is already declared at pipelines[{first}]"),
                                );
                            }
                            pipelines.push(pipeline);
                        }
                    }
                }
            },
        }
        self.after_graph(&root, &pipelines);
        if let (Some(file_target), Some(seq)) = (
            &run_log,
            get(&root, "pipelines").and_then(Node::as_sequence),
        ) {
            self.job_run_logs(file_target, &pipelines, seq);
        }
        Some(Config {
            environment: environment?,
            run_log: run_log?,
            lineage: lineage?,
            pipelines,
        })
    }
}

impl Validator {
    /// A job's `run_log` naming `postgres` needs a PostgreSQL table for the pipeline's rows
    /// (its own `run_log.postgres`, else the file's).
    fn job_run_logs(
        &mut self,
        file_target: &super::RunLogTarget,
        pipelines: &[super::Pipeline],
        nodes: &[Node],
    ) {
        for p in pipelines {
            let target = p.run_log.as_ref().unwrap_or(file_target);
            if target.postgres.is_some() {
                continue;
            }
            let Some((i, node)) = nodes.iter().enumerate().find(|(_, n)| {
                get(n, "name").and_then(Node::as_scalar).map(|s| s.as_str())
                    == Some(p.name.as_str())
            }) else {
                continue;
            };
            for (j, job) in p.jobs.iter().enumerate() {
                if job
                    .run_log
                    .iter()
                    .any(|d| !matches!(d, super::RunLogDestination::Bigquery))
                {
                    let at = get(node, "jobs")
                        .and_then(Node::as_sequence)
                        .and_then(|jobs| jobs.get(j))
                        .and_then(|n| get(n, "run_log"))
                        .and_then(line_of);
                    self.issue(
                        format!("pipelines[{i}].jobs[{j}].run_log"),
                        at,
                        "names postgres, but neither the pipeline's nor the file's `run_log` has a `postgres` table",
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    pub(super) const GOOD: &str = r#"
environment: test
run_log: { table: ops.run_log }
pipelines:
  - name: sales
    trigger:
      object: { bucket: landing, pattern: "sales/{date}/*.csv" }
    load:
      table: "analytics.sales_{date}"
      format: CSV
    batch:
      engine: local
      command: "echo {date} {run_id}"
    poll: { timeout: 5m, max_attempts: 2, backoff: { initial: 1s } }
"#;

    pub(super) fn issues(text: &str) -> Vec<ConfigIssue> {
        match parse_str(text, "t.yaml") {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid { issues, .. }) => issues,
            Err(e) => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn datasets_sqlite_reserves_are_refused_wherever_a_table_is_named() {
        let found = issues(
            r#"
run_log: { table: Main.run_log }
pipelines:
  - name: sales
    trigger:
      object: { bucket: landing, pattern: "sales/{date}/*.csv" }
    load: { table: "temp.sales_{date}", format: CSV }
  - name: report
    trigger: { manual: true }
    run_log: { table: TEMP.log }
    batch:
      engine: sql
      query: "SELECT 1 AS x"
      destination: main.report
"#,
        );
        let paths: Vec<&str> = found.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "run_log.table",
                "pipelines[0].load.table",
                "pipelines[1].run_log.table",
                "pipelines[1].batch.destination"
            ],
            "{found:?}"
        );
        assert!(
            found.iter().all(|i| i.message.contains("SQLite reserves")),
            "{found:?}"
        );
        assert!(found[1].message.contains("\"temp\""), "{found:?}");
        // Other names with these letters are fine.
        assert!(issues(&GOOD.replace("analytics.", "temps.")).is_empty());
    }

    #[test]
    fn local_commands_run_in_the_pipeline_files_folder_wherever_it_is_read_from() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("pipelines");
        std::fs::create_dir(&folder).unwrap();
        let text = GOOD.replace(
            "    poll:",
            "  - name: other\n    trigger: { manual: true }\n    batch:\n      engine: local\n      command: \"true\"\n      working_dir: scripts\n    poll:",
        );
        std::fs::write(folder.join("conveyor.yaml"), text).unwrap();
        let config = load_file(&folder.join("conveyor.yaml")).unwrap();
        let dirs: Vec<_> = config
            .pipelines
            .iter()
            .flat_map(|p| &p.jobs)
            .map(|j| match &j.spec {
                crate::config::BatchSpec::Local(l) => l.working_dir.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            dirs,
            vec![Some(folder.clone()), Some(folder.join("scripts"))]
        );
        // Text without a file keeps the process's working directory.
        let config = parse_str(GOOD, "t.yaml").unwrap();
        assert!(matches!(
            &config.pipelines[0].jobs[0].spec,
            crate::config::BatchSpec::Local(l) if l.working_dir.is_none()
        ));
    }

    #[test]
    fn a_valid_file_parses() {
        let c = parse_str(GOOD, "t.yaml").unwrap();
        assert_eq!(c.environment, "test");
        assert_eq!(c.pipelines[0].poll.max_attempts, 2);
        assert_eq!(c.pipelines[0].poll.timeout.as_secs(), 300);
    }

    #[test]
    fn the_same_config_is_accepted_as_json() {
        let json = r#"{"pipelines": [{"name": "j", "trigger": {"object": {"bucket": "landing", "pattern": "j/*.json"}},
            "load": {"table": "ds.j", "format": "NDJSON"}}]}"#;
        let c = parse_str(json, "t.json").unwrap();
        assert_eq!(c.pipelines[0].name.as_str(), "j");
    }

    #[test]
    fn every_error_is_reported_with_its_path_and_line() {
        let text = r#"pipelines:
  - name: one
    trigger:
      object: { bucket: landing, pattern: "a/{date}/*.csv" }
    load:
      table: "ds.t_{region}"
      format: XLS
  - name: two
    trigger:
      schedule: { cron: "not a cron" }
    batch:
      engine: local
      command: "run"
    poll:
      success_states: [RUNNING]
      max_attempts: 0
  - name: Bad Name
    colour: blue
"#;
        let found = issues(text);
        let paths: Vec<&str> = found.iter().map(|i| i.path.as_str()).collect();
        assert!(
            paths.iter().any(|p| p.starts_with("pipelines[0].load")),
            "{found:?}"
        );
        assert!(
            paths.contains(&"pipelines[1].trigger.schedule.cron"),
            "{found:?}"
        );
        assert!(
            paths.contains(&"pipelines[1].poll.success_states"),
            "{found:?}"
        );
        assert!(
            paths.contains(&"pipelines[1].poll.max_attempts"),
            "{found:?}"
        );
        assert!(paths.contains(&"pipelines[2].colour"), "{found:?}");
        assert!(paths.contains(&"pipelines[2].name"), "{found:?}");
        let line = |p: &str| found.iter().find(|i| i.path == p).and_then(|i| i.line);
        assert_eq!(line("pipelines[1].trigger.schedule.cron"), Some(10));
        assert_eq!(line("pipelines[1].poll.max_attempts"), Some(16));
        assert_eq!(line("pipelines[2].colour"), Some(18));
        assert!(found.len() >= 6, "{found:#?}");
    }

    #[test]
    fn yaml_syntax_errors_name_their_line() {
        let found = issues("pipelines:\n  - name: a\n    load: [\n");
        assert_eq!(found.len(), 1);
        assert!(found[0].line.is_some());
    }

    #[test]
    fn duplicate_pipeline_names_are_rejected() {
        let text = format!("{GOOD}{}", GOOD.split("pipelines:\n").nth(1).unwrap());
        let found = issues(&text);
        assert!(
            found.iter().any(|i| i.message.contains("already declared")),
            "{found:?}"
        );
    }

    /// Seven mistakes, four of them in one pipeline, three in one mapping.
    const SEVEN: &str = r#"pipelines:
  - name: sales
    trigger:
      object: { bucket: landing, pattern: "sales/{date}/*.csv" }
    laod:
      table: "analytics.sales_{date}"
    poll:
      timeout: soon
      max_attempts: one
      intreval: 30s
  - name: nightly
    trigger:
      schedule: { cron: "0 5 L * *", time_zone: Europe/Pariss }
    jobs:
      - name: report
        engine: local
        command: "echo {date}"
        poll: { max_attempts: 2 }
    run_log: { table: ops.run_log, postgres: { table: ops.log }, sink: x }
"#;

    #[test]
    fn seven_mistakes_are_reported_in_one_pass_once_each_with_line_and_column() {
        let found = issues(SEVEN);
        let shown: Vec<String> = found.iter().map(ToString::to_string).collect();
        let expected = [
            "5:5: pipelines[0].laod: unknown field `laod`; did you mean `load`?",
            "8:16: pipelines[0].poll.timeout: expected a duration such as 30s or 5m, got \"soon\"",
            "9:21: pipelines[0].poll.max_attempts: expected a whole number, got \"one\"",
            "10:7: pipelines[0].poll.intreval: unknown field `intreval`; did you mean `interval`?",
            "13:25: pipelines[1].trigger.schedule.cron: invalid cron \"0 5 L * *\": `L` in the day of the month field is not supported by Cloud Scheduler's cron (no `L` for last or `W` for nearest weekday)",
            "13:49: pipelines[1].trigger.schedule.time_zone: \"Europe/Pariss\" is not an IANA time zone; did you mean `Europe/Paris`?",
            "19:66: pipelines[1].run_log.sink: unknown field `sink`, expected one of: table, postgres",
        ];
        assert_eq!(shown, expected, "{shown:#?}");
    }

    #[test]
    fn max_active_runs_is_read_and_zero_is_refused() {
        let file = |n: &str| {
            format!(
                "pipelines:\n  - name: p\n    trigger: {{ manual: true }}\n    max_active_runs: {n}\n    jobs: [{{ name: a, engine: local, command: \"true\" }}]\n"
            )
        };
        let config = parse_str(&file("2"), "ok.yaml").expect("valid");
        assert_eq!(config.pipelines[0].max_active_runs, Some(2));
        let shown: Vec<String> = issues(&file("0")).iter().map(ToString::to_string).collect();
        assert!(
            shown
                .iter()
                .any(|s| s.contains("pipelines[0].max_active_runs: must be at least 1")),
            "{shown:#?}"
        );
    }

    #[test]
    fn a_jobs_run_log_naming_postgres_needs_a_postgres_table() {
        let file = |run_log: &str| {
            format!(
                "{run_log}pipelines:\n  - name: p\n    trigger: {{ manual: true }}\n    jobs:\n      - {{ name: a, engine: local, command: \"true\", run_log: [postgres], db: \"{{date}}\", table: t }}\n"
            )
        };
        let shown: Vec<String> = issues(&file("")).iter().map(ToString::to_string).collect();
        assert!(
            shown
                .iter()
                .any(|s| s.contains("pipelines[0].jobs[0].run_log: names postgres")),
            "{shown:#?}"
        );
        let with_sink = "run_log:\n  table: ops.run_log\n  postgres: { url_secret: projects/p/secrets/pg, table: ops.run_log }\n";
        let config = parse_str(&file(with_sink), "ok.yaml").expect("valid");
        let job = &config.pipelines[0].jobs[0];
        assert!(job.logs_to_postgres());
        assert_eq!(job.db.as_deref(), Some("{date}"));
        let bq = parse_str(
            &file(with_sink).replace("[postgres]", "[bigquery]"),
            "ok.yaml",
        )
        .expect("valid");
        assert!(!bq.pipelines[0].jobs[0].logs_to_postgres());
    }

    #[test]
    fn an_expect_deadline_with_a_bad_time_or_zone_is_reported() {
        let found = issues(
            r#"pipelines:
  - name: nightly
    trigger: { manual: true }
    expect: { by: "6am", time_zone: Europe/Pariss }
    batch: { engine: local, command: "true" }
"#,
        );
        let shown: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert!(
            shown
                .iter()
                .any(|s| s.contains("pipelines[0].expect.by: \"6am\" is not a time HH:MM")),
            "{shown:#?}"
        );
        assert!(
            shown.iter().any(|s| s.contains(
                "pipelines[0].expect.time_zone: \"Europe/Pariss\" is not an IANA time zone"
            )),
            "{shown:#?}"
        );
    }

    #[test]
    fn an_expect_without_by_or_within_and_a_bad_run_timeout_are_reported() {
        let found = issues(
            r#"pipelines:
  - name: nightly
    trigger: { manual: true }
    expect: { time_zone: Europe/Paris }
    timeout: soon
    pause: { arrivals: later }
    batch: { engine: local, command: "true" }
"#,
        );
        let shown: Vec<String> = found.iter().map(ToString::to_string).collect();
        for wanted in [
            "pipelines[0].expect: give `by`",
            "pipelines[0].timeout: expected a duration",
            "pipelines[0].pause.arrivals: unknown value `later`; expected `hold` or `skip`",
        ] {
            assert!(
                shown.iter().any(|s| s.contains(wanted)),
                "{wanted}: {shown:#?}"
            );
        }
        let ok = parse_str(
            r#"pipelines:
  - name: nightly
    trigger: { manual: true }
    expect: { within: 26h }
    timeout: 6h
    pause: { arrivals: skip }
    batch: { engine: local, command: "true" }
"#,
            "t.yaml",
        )
        .expect("valid");
        let p = &ok.pipelines[0];
        assert_eq!(p.timeout, Some(std::time::Duration::from_secs(6 * 3600)));
        assert_eq!(
            p.expect.as_ref().and_then(|e| e.within),
            Some(std::time::Duration::from_secs(26 * 3600))
        );
        assert_eq!(p.pause.arrivals, crate::config::PausedArrivals::Skip);
    }

    #[test]
    fn the_error_lists_every_issue_as_file_line_col() {
        let err = parse_str(SEVEN, "seven.yaml").unwrap_err().to_string();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 8, "{err}");
        assert!(
            lines[0].starts_with("seven.yaml:5:5: pipelines[0].laod: "),
            "{err}"
        );
        assert_eq!(lines[7], "seven.yaml: 7 error(s)");
    }
}
