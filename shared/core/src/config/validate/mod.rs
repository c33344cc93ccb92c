//! Loading a configuration file with every error reported, once each, with its field path,
//! line and column.
//!
//! serde stops at the first error, so the file is first parsed into a marked YAML tree and each
//! section of each pipeline is deserialized on its own. When a section fails, the error is
//! recorded, the offending key is taken out of a copy of the section and the section is read
//! again, until it reads or nothing more can be taken out: every mistake of a section is
//! reported in one pass, and none twice (a required field whose value was refused is not also
//! reported missing). The cross-field checks then run on every pipeline that did read.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use marked_yaml::{LoaderOptions, Node};
use serde::de::DeserializeOwned;

use super::{BatchSpec, Config, Pipeline, SchemaSpec, parameter_placeholders, render};
use crate::names::{TableRef, reserved_dataset};

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

impl Validator {
    fn issue(&mut self, path: impl Into<String>, at: Pos, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            path: path.into(),
            line: at.map(|(l, _)| l),
            column: at.map(|(_, c)| c),
            message: message.into(),
        });
    }

    /// Deserializes `node` as `T`, recording every mistake in it under `path`: after each
    /// error the offending key is taken out of a copy of the node and the node is read again.
    /// `None` when there was any mistake.
    fn section<T: DeserializeOwned>(&mut self, path: &str, node: &Node) -> Option<T> {
        let mut node = node.clone();
        // Keys taken out, and keys an unknown key was probably meant to be: a `missing
        // field` error about one of them is a consequence of an error already reported.
        let mut explained: BTreeSet<(Vec<Seg>, String)> = BTreeSet::new();
        let mut failed = false;
        for _ in 0..=MAX_ISSUES_PER_SECTION {
            let e = match marked_yaml::from_node::<T>(&node) {
                Ok(v) => return (!failed).then_some(v),
                Err(e) => e,
            };
            failed = true;
            let segs = e.path().map(parse_path).unwrap_or_default();
            let at = pos(e.start_mark().as_ref());
            let full = |segs: &[Seg]| join_path(path, segs);
            let value_text = node_at(&node, &segs)
                .and_then(Node::as_scalar)
                .map(|s| s.as_str().to_owned());
            match e.into_inner() {
                marked_yaml::Error::UnknownFieldError(field, expected, _) => {
                    let parent = segs
                        .strip_suffix(&[Seg::Key(field.clone())])
                        .unwrap_or(&segs)
                        .to_vec();
                    let message = unknown_field(&field, expected);
                    let mut key_path = parent.clone();
                    key_path.push(Seg::Key(field.clone()));
                    self.issue(full(&key_path), at, message);
                    // A misspelt key is read on under the name it was probably meant to
                    // have, so its value and the mapping's other fields are still checked.
                    let meant = closest(&field, expected.iter().copied());
                    if let Some(meant) = meant {
                        explained.insert((parent.clone(), meant.to_owned()));
                    }
                    if !rename(&mut node, &key_path, meant) {
                        return None;
                    }
                }
                inner => {
                    let message = inner.to_string();
                    if let Some(missing) = missing_field(&message) {
                        let consequence = explained.contains(&(segs.clone(), missing.clone()));
                        if !consequence {
                            let mut key_path = segs.clone();
                            key_path.push(Seg::Key(missing.clone()));
                            self.issue(full(&key_path), at, format!("missing field `{missing}`"));
                        }
                    } else {
                        // `engine: locall` fails the whole job mapping: point at the value.
                        let (tag_segs, tag_at) = tag_value(&node, segs.clone(), at, &message);
                        self.issue(
                            full(&tag_segs),
                            tag_at,
                            plain(&inner, &message, value_text.as_deref()),
                        );
                    }
                    // Take the key out; a refused value inside a list takes its list out.
                    let mut key_path = segs.clone();
                    while matches!(key_path.last(), Some(Seg::Index(_))) {
                        key_path.pop();
                    }
                    if let Some(Seg::Key(k)) = key_path.last() {
                        explained.insert((key_path[..key_path.len() - 1].to_vec(), k.clone()));
                    }
                    if !remove(&mut node, &key_path) {
                        return None;
                    }
                }
            }
        }
        None
    }

    fn known_keys(&mut self, path: &str, node: &Node, allowed: &[&str]) {
        let Some(map) = node.as_mapping() else { return };
        for (key, _) in map.iter() {
            if !allowed.contains(&key.as_str()) {
                let full = if path.is_empty() {
                    key.as_str().to_owned()
                } else {
                    format!("{path}.{}", key.as_str())
                };
                self.issue(
                    full,
                    pos(key.span().start()),
                    unknown_field(key.as_str(), allowed),
                );
            }
        }
    }

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
        self.known_keys("", &root, &["environment", "run_log", "pipelines"]);
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
        Some(Config {
            environment: environment?,
            run_log: run_log?,
            pipelines,
        })
    }

    /// `trigger.after` names known pipelines that end runs, and the edges have no cycle.
    fn after_graph(&mut self, root: &Node, pipelines: &[Pipeline]) {
        let index: BTreeMap<&str, usize> = pipelines
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i))
            .collect();
        let line = |i: usize| {
            get(root, "pipelines")
                .and_then(|n| n.as_sequence())
                .and_then(|s| s.get(i))
                .and_then(|n| get(n, "trigger"))
                .and_then(|n| get(n, "after"))
                .and_then(line_of)
        };
        for (i, p) in pipelines.iter().enumerate() {
            for up in &p.trigger.after {
                match index.get(up.as_str()) {
                    None => self.issue(
                        format!("pipelines[{i}].trigger.after"),
                        line(i),
                        format!("no pipeline is called {:?}", up.as_str()),
                    ),
                    Some(&u) if pipelines[u].load.is_none() && pipelines[u].jobs.is_empty() => {
                        self.issue(
                            format!("pipelines[{i}].trigger.after"),
                            line(i),
                            format!(
                                "pipeline {:?} has neither `load` nor `jobs`, so its runs never end SUCCEEDED",
                                up.as_str()
                            ),
                        )
                    }
                    Some(_) => {}
                }
            }
        }
        // Depth-first search for a cycle; each cycle is reported once, at its first member.
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        fn visit(
            i: usize,
            pipelines: &[Pipeline],
            index: &BTreeMap<&str, usize>,
            marks: &mut [Mark],
            stack: &mut Vec<usize>,
        ) -> Option<Vec<usize>> {
            marks[i] = Mark::Open;
            stack.push(i);
            for up in &pipelines[i].trigger.after {
                let Some(&u) = index.get(up.as_str()) else {
                    continue;
                };
                match marks[u] {
                    Mark::Open => {
                        let start = stack.iter().position(|x| *x == u).unwrap_or(0);
                        return Some(stack[start..].to_vec());
                    }
                    Mark::New => {
                        if let Some(c) = visit(u, pipelines, index, marks, stack) {
                            return Some(c);
                        }
                    }
                    Mark::Done => {}
                }
            }
            stack.pop();
            marks[i] = Mark::Done;
            None
        }
        let mut marks = vec![Mark::New; pipelines.len()];
        for i in 0..pipelines.len() {
            if marks[i] == Mark::New {
                let mut stack = Vec::new();
                if let Some(cycle) = visit(i, pipelines, &index, &mut marks, &mut stack) {
                    let names: Vec<&str> = cycle
                        .iter()
                        .chain(cycle.first())
                        .map(|c| pipelines[*c].name.as_str())
                        .collect();
                    let first = cycle.iter().copied().min().unwrap_or(i);
                    self.issue(
                        format!("pipelines[{first}].trigger.after"),
                        line(first),
                        format!("`after` makes a cycle: {}", names.join(" after ")),
                    );
                    for c in cycle {
                        marks[c] = Mark::Done;
                    }
                }
            }
        }
    }

    fn pipeline(&mut self, path: &str, node: &Node) -> Option<Pipeline> {
        if node.as_mapping().is_none() {
            self.issue(path, line_of(node), "a pipeline must be a mapping");
            return None;
        }
        const KEYS: &[&str] = &[
            "name",
            "active",
            "description",
            "trigger",
            "stage",
            "load",
            "jobs",
            "batch",
            "poll",
            "run_log",
        ];
        self.known_keys(path, node, KEYS);
        self.schedule(path, node);
        let before = self.issues.len();
        if get(node, "name").is_none() {
            self.issue(
                format!("{path}.name"),
                line_of(node),
                "missing field `name`",
            );
        }
        for key in KEYS {
            if let Some(n) = get(node, key) {
                let p = format!("{path}.{key}");
                if *key == "stage" {
                    let found = super::stage::inline_credentials(n);
                    if !found.is_empty() {
                        for (field, at, message) in found {
                            self.issue(format!("{p}.{field}"), at, message);
                        }
                        continue;
                    }
                }
                let ok = match *key {
                    "name" => self.section::<crate::names::PipelineName>(&p, n).is_some(),
                    "active" => self.section::<bool>(&p, n).is_some(),
                    "description" => self.section::<String>(&p, n).is_some(),
                    "trigger" => self.section::<super::Trigger>(&p, n).is_some(),
                    "stage" => self.section::<super::StageSpec>(&p, n).is_some(),
                    "load" => self.section::<super::LoadSpec>(&p, n).is_some(),
                    "batch" => self.section::<BatchSpec>(&p, n).is_some(),
                    "jobs" => self.jobs(&p, n),
                    "poll" => self.section::<super::PollPolicy>(&p, n).is_some(),
                    _ => self.section::<super::RunLogTarget>(&p, n).is_some(),
                };
                let _ = ok;
            }
        }
        if self.issues.len() > before {
            return None;
        }
        let mut pipeline = self.section::<Pipeline>(path, node)?;
        let from_batch = pipeline.batch.is_some();
        if let Err((field, message)) = pipeline.normalize() {
            let line = get(node, field.split(['.', '[']).next().unwrap_or("")).and_then(line_of);
            self.issue(
                format!("{path}.{field}"),
                line.or_else(|| line_of(node)),
                message,
            );
            return None;
        }
        self.semantics(path, node, &pipeline, from_batch);
        Some(pipeline)
    }

    /// `trigger.schedule`: a cron expression Cloud Scheduler accepts and an IANA time zone.
    /// Checked on the YAML itself, so a mistake elsewhere in the pipeline hides neither.
    fn schedule(&mut self, path: &str, node: &Node) {
        let Some(schedule) = get(node, "trigger").and_then(|t| get(t, "schedule")) else {
            return;
        };
        if let Some(cron) = get(schedule, "cron").and_then(Node::as_scalar)
            && let Err(e) = crate::schedules::check_cron(cron.as_str())
        {
            self.issue(
                format!("{path}.trigger.schedule.cron"),
                pos(cron.span().start()),
                format!("invalid cron {:?}: {e}", cron.as_str()),
            );
        }
        if let Some(zone) = get(schedule, "time_zone").and_then(Node::as_scalar)
            && let Err(e) = crate::schedules::parse_time_zone(zone.as_str())
        {
            self.issue(
                format!("{path}.trigger.schedule.time_zone"),
                pos(zone.span().start()),
                e,
            );
        }
    }

    /// Each job of `jobs` on its own, so one bad job does not hide the others' mistakes.
    fn jobs(&mut self, path: &str, node: &Node) -> bool {
        let Some(seq) = node.as_sequence() else {
            self.issue(path, line_of(node), "must be a list of jobs");
            return false;
        };
        let mut ok = true;
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, j) in seq.iter().enumerate() {
            let p = format!("{path}[{i}]");
            match self.section::<super::Job>(&p, j) {
                Some(job) => {
                    if let Some(first) = seen.insert(job.name.to_string(), i) {
                        self.issue(
                            format!("{p}.name"),
                            get(j, "name").and_then(line_of),
                            format!(
                                "job {:?} is already declared at jobs[{first}]",
                                job.name.as_str()
                            ),
                        );
                        ok = false;
                    }
                }
                None => ok = false,
            }
        }
        ok
    }

    fn semantics(&mut self, path: &str, node: &Node, p: &Pipeline, from_batch: bool) {
        let at = |keys: &[&str]| {
            let mut n = node;
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
        };
        let at_path = |keys: &[String]| {
            let mut n = node;
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
        };
        if p.stage.is_none() && p.load.is_none() && p.jobs.is_empty() {
            self.issue(
                path,
                at(&[]),
                "a pipeline needs at least one of `stage`, `load` or `jobs` (or `batch`)",
            );
        }
        let t = &p.trigger;
        if t.object.is_none()
            && t.schedule.is_none()
            && t.topic.is_none()
            && !t.manual
            && t.after.is_empty()
        {
            self.issue(
                format!("{path}.trigger"),
                at(&["trigger"]),
                "no trigger: set `object`, `schedule`, `after`, `topic` or `manual: true`",
            );
        }
        for (field, message) in super::messages::problems(p) {
            let keys: Vec<&str> = field.split('.').collect();
            self.issue(format!("{path}.{field}"), at(&keys), message);
        }
        if !t.after.is_empty() {
            if p.stage.is_some() || p.load.is_some() {
                self.issue(
                    format!("{path}.trigger.after"),
                    at(&["trigger", "after"]),
                    "a pipeline started `after` others runs `jobs` only (no `stage` or `load`)",
                );
            }
            if p.jobs.is_empty() {
                self.issue(
                    format!("{path}.trigger.after"),
                    at(&["trigger", "after"]),
                    "a pipeline started `after` others needs `jobs` to run",
                );
            }
            if t.after.contains(&p.name) {
                self.issue(
                    format!("{path}.trigger.after"),
                    at(&["trigger", "after"]),
                    "a pipeline cannot run after itself",
                );
            }
        }
        // `trigger.schedule`'s cron and time zone are checked as they are read (the messages
        // then point at the value itself).
        let captures: Vec<String> = t
            .object
            .as_ref()
            .map(|o| o.pattern.names().to_vec())
            .unwrap_or_default();
        if let Some(stage) = &p.stage {
            for (field, message) in stage.problems() {
                // `source.s3.endpoint` is reported at the line of the deepest key present.
                let keys: Vec<&str> = std::iter::once("stage")
                    .chain(field.split(['.', '[']))
                    .collect();
                self.issue(format!("{path}.stage.{field}"), at(&keys), message);
            }
        }
        if let Some(target) = &p.run_log
            && let Some(why) = reserved_dataset(&target.table.dataset)
        {
            self.issue(
                format!("{path}.run_log.table"),
                at(&["run_log", "table"]),
                why,
            );
        }
        if let Some(load) = &p.load {
            if t.object.is_none() && t.topic.is_none() {
                self.issue(
                    format!("{path}.load"),
                    at(&["load"]),
                    "a load needs `trigger.object` (it runs when a matching object arrives) or `trigger.topic` (each message becomes rows)",
                );
            }
            let vars: BTreeMap<String, String> = captures
                .iter()
                .map(|c| (c.clone(), "x".to_owned()))
                .collect();
            match render(&load.table, &vars) {
                Err(e) => self.issue(
                    format!("{path}.load.table"),
                    at(&["load", "table"]),
                    format!("{e} (placeholders must be captures of trigger.object.pattern: {captures:?})"),
                ),
                Ok(sample) => match TableRef::parse(&sample) {
                    Err(e) => {
                        self.issue(format!("{path}.load.table"), at(&["load", "table"]), e.to_string());
                    }
                    Ok(t) => {
                        if let Some(why) = reserved_dataset(&t.dataset) {
                            self.issue(format!("{path}.load.table"), at(&["load", "table"]), why);
                        }
                    }
                },
            }
            if let SchemaSpec::Columns(cols) = &load.schema {
                let mut names = BTreeSet::new();
                if cols.is_empty() {
                    self.issue(
                        format!("{path}.load.schema"),
                        at(&["load", "schema"]),
                        "declares no column",
                    );
                }
                for (i, c) in cols.iter().enumerate() {
                    let valid = c
                        .name
                        .chars()
                        .next()
                        .is_some_and(|ch| ch.is_ascii_alphabetic() || ch == '_')
                        && c.name
                            .chars()
                            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                        && c.name.len() <= 300;
                    if !valid {
                        self.issue(
                            format!("{path}.load.schema[{i}].name"),
                            at(&["load", "schema"]),
                            format!("invalid column name {:?}: letters, digits and '_', not starting with a digit", c.name),
                        );
                    }
                    if !names.insert(c.name.to_ascii_lowercase()) {
                        self.issue(
                            format!("{path}.load.schema[{i}].name"),
                            at(&["load", "schema"]),
                            format!("column {:?} is declared twice", c.name),
                        );
                    }
                }
                if let Some(field) = load.partition.as_ref().and_then(|p| p.field.as_ref()) {
                    use crate::format::ColumnType;
                    match cols.iter().find(|c| &c.name == field) {
                        None => self.issue(
                            format!("{path}.load.partition.field"),
                            at(&["load", "partition", "field"]),
                            format!("{field:?} is not a declared column"),
                        ),
                        Some(c) if !matches!(c.ty, ColumnType::Timestamp | ColumnType::Date) => {
                            self.issue(
                                format!("{path}.load.partition.field"),
                                at(&["load", "partition", "field"]),
                                format!(
                                    "{field:?} must be a TIMESTAMP or DATE column to partition on"
                                ),
                            )
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        let mut known: Vec<String> = captures.clone();
        known.extend(
            ["run_id", "table", "attempt", "job_id", "pipeline", "date"].map(str::to_owned),
        );
        for (i, job) in p.jobs.iter().enumerate() {
            let (jpath, keys): (String, Vec<String>) = if from_batch {
                (format!("{path}.batch"), vec!["batch".to_owned()])
            } else {
                (
                    format!("{path}.jobs[{i}]"),
                    vec!["jobs".to_owned(), i.to_string()],
                )
            };
            self.job(path, &jpath, &keys, &at_path, job, p, &known);
        }
        if let Some(load) = &p.load {
            // BigQuery accepts schema update options with WRITE_APPEND, or with WRITE_TRUNCATE
            // on one partition (a `table$20261120` decorator, which table names here cannot
            // carry); with anything else it refuses the load job.
            if !load.schema_update_options.is_empty()
                && load.write_disposition != super::WriteDisposition::WriteAppend
            {
                self.issue(
                    format!("{path}.load.schema_update_options"),
                    at(&["load", "schema_update_options"]),
                    format!(
                        "BigQuery refuses schema update options with {}: only with WRITE_APPEND (a truncate replaces the schema anyway)",
                        match load.write_disposition {
                            super::WriteDisposition::WriteTruncate => "WRITE_TRUNCATE",
                            _ => "WRITE_EMPTY",
                        }
                    ),
                );
            }
            // BigQuery honours maxBadRecords for CSV and JSON only; elsewhere it is silently
            // ignored, and a file with bad rows fails however many are allowed.
            if load.max_bad_records > 0
                && !matches!(
                    load.format,
                    crate::format::Format::Csv | crate::format::Format::Ndjson
                )
            {
                self.issue(
                    format!("{path}.load.max_bad_records"),
                    at(&["load", "max_bad_records"]),
                    format!(
                        "BigQuery honours max_bad_records for CSV and NDJSON only, not {}: leave it out",
                        match load.format {
                            crate::format::Format::Avro => "AVRO",
                            crate::format::Format::Parquet => "PARQUET",
                            _ => "ORC",
                        }
                    ),
                );
            }
            if !(1..=super::MAX_RECORD_BYTES).contains(&load.max_record_bytes) {
                self.issue(
                    format!("{path}.load.max_record_bytes"),
                    at(&["load", "max_record_bytes"]),
                    "must be from 1 to 100000000 (BigQuery's 100 MB row limit)",
                );
            }
            if load.clustering.len() > 4 {
                self.issue(
                    format!("{path}.load.clustering"),
                    at(&["load", "clustering"]),
                    "BigQuery clusters on at most four columns",
                );
            }
            if let Some(super::LoadBatch::Marker(m)) = &load.batch {
                if m.marker.is_empty() || m.marker.contains('/') {
                    self.issue(
                        format!("{path}.load.batch.marker"),
                        at(&["load", "batch", "marker"]),
                        "must be a file name such as _SUCCESS (no '/')",
                    );
                }
                if let Some(o) = &t.object
                    && !o.pattern.has_folder()
                {
                    self.issue(
                        format!("{path}.trigger.object.pattern"),
                        at(&["trigger", "object", "pattern"]),
                        "a marker batch needs a pattern whose file part has no `**` or `/` (the folder is what the marker completes)",
                    );
                }
            }
            if let Some(super::LoadBatch::Window(w)) = &load.batch {
                if w.window.is_zero() {
                    self.issue(
                        format!("{path}.load.batch.window"),
                        at(&["load", "batch", "window"]),
                        "must be longer than 0s",
                    );
                }
                if w.max_files == 0 || w.max_files > crate::ports::MAX_LOAD_URIS {
                    self.issue(
                        format!("{path}.load.batch.max_files"),
                        at(&["load", "batch", "max_files"]),
                        format!("must be between 1 and {}", crate::ports::MAX_LOAD_URIS),
                    );
                }
            }
        }
        let poll = &p.poll;
        if poll.max_attempts == 0 {
            self.issue(
                format!("{path}.poll.max_attempts"),
                at(&["poll", "max_attempts"]),
                "must be at least 1",
            );
        }
        if poll.timeout.is_zero() {
            self.issue(
                format!("{path}.poll.timeout"),
                at(&["poll", "timeout"]),
                "must be longer than 0s",
            );
        }
        if poll.interval.is_zero() {
            self.issue(
                format!("{path}.poll.interval"),
                at(&["poll", "interval"]),
                "must be longer than 0s",
            );
        }
        if !(poll.backoff.multiplier.is_finite() && poll.backoff.multiplier >= 1.0) {
            self.issue(
                format!("{path}.poll.backoff.multiplier"),
                at(&["poll", "backoff", "multiplier"]),
                "must be a number >= 1",
            );
        }
    }
}

impl Validator {
    /// The checks of one job: its engine's fields, placeholders, success states.
    #[expect(
        clippy::too_many_arguments,
        reason = "the checks of one job need its whole context"
    )]
    fn job(
        &mut self,
        path: &str,
        jpath: &str,
        keys: &[String],
        at_path: &dyn Fn(&[String]) -> Pos,
        job: &super::Job,
        p: &Pipeline,
        known: &[String],
    ) {
        let batch = &job.spec;
        // `jobs[0].a.b[0]` is reported at the line of `jobs[0].a`.
        let line_of_param = |param: &str| {
            let first = param.split(['.', '[']).next().unwrap_or(param);
            let mut k = keys.to_vec();
            k.push(first.to_owned());
            at_path(&k)
        };
        for (param, message) in batch.problems() {
            self.issue(format!("{jpath}.{param}"), line_of_param(&param), message);
        }
        let mut known = known.to_vec();
        if let Some(fe) = &job.for_each {
            let mut k = keys.to_vec();
            k.push("for_each".to_owned());
            let line = at_path(&k);
            if fe.table.is_some() != fe.rows.is_empty() {
                self.issue(
                    format!("{jpath}.for_each"),
                    line,
                    "set either `table` (read when the job starts) or `rows`",
                );
            }
            // Inline rows name their columns; a table's are only known when it is read.
            let columns: BTreeSet<String> = fe
                .rows
                .iter()
                .flat_map(|r| r.keys().cloned())
                .filter(|c| *c != fe.active_column)
                .collect();
            if fe.table.is_some() {
                known.push("*".to_owned());
            }
            known.extend(columns);
            known.push("row".to_owned());
        }
        let any = known.iter().any(|k| k == "*");
        for (param, value) in batch.parameters() {
            for name in parameter_placeholders(&value) {
                if !any && !known.contains(&name) {
                    self.issue(
                        format!("{jpath}.{param}"),
                        line_of_param(&param),
                        format!(
                            "unknown placeholder {{{name}}}; known: {}",
                            known.join(", ")
                        ),
                    );
                }
            }
        }
        if let BatchSpec::Sql(q) = batch
            && let Some(dest) = &q.destination
        {
            let sample: BTreeMap<String, String> = parameter_placeholders(dest)
                .into_iter()
                .map(|n| (n, "x".to_owned()))
                .collect();
            if let Ok(d) = super::render_parameter(dest, &sample) {
                let problem = match TableRef::parse(&d) {
                    Err(e) => Some(e.to_string()),
                    Ok(t) => reserved_dataset(&t.dataset),
                };
                if let Some(problem) = problem {
                    self.issue(
                        format!("{jpath}.destination"),
                        line_of_param("destination"),
                        problem,
                    );
                }
            }
        }
        let policy = p.poll_for(job);
        let (poll_path, poll_line) = if job.poll.is_some() {
            let mut k = keys.to_vec();
            k.extend(["poll".to_owned(), "success_states".to_owned()]);
            (format!("{jpath}.poll"), at_path(&k))
        } else {
            (
                format!("{path}.poll"),
                at_path(&["poll".to_owned(), "success_states".to_owned()]),
            )
        };
        let states = policy.success_states(batch);
        if states.is_empty() {
            self.issue(
                format!("{poll_path}.success_states"),
                poll_line,
                "must name at least one state",
            );
        }
        for s in &states {
            if batch
                .non_terminal_states()
                .contains(&s.to_ascii_uppercase().as_str())
            {
                self.issue(
                    format!("{poll_path}.success_states"),
                    poll_line,
                    format!(
                        "{s} is not a terminal state of the {} engine and can never mean success",
                        batch.engine()
                    ),
                );
            } else if !batch.is_terminal(s) {
                self.issue(
                    format!("{poll_path}.success_states"),
                    poll_line,
                    format!(
                        "{s} is not a state of the {} engine; its terminal states are {}",
                        batch.engine(),
                        batch.terminal_states().join(", ")
                    ),
                );
            }
        }
    }
}

/// The candidate closest to `word` (case-insensitive edit distance), when close enough to be
/// what was meant: "did you mean `load`?".
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = word.to_lowercase();
    let limit = (lower.chars().count() / 3).max(1) + usize::from(lower.chars().count() > 8);
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= limit && *c != word)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn load_error_pos(e: &marked_yaml::LoadError) -> Pos {
    use marked_yaml::LoadError as L;
    match e {
        L::TopLevelMustBeMapping(m)
        | L::TopLevelMustBeSequence(m)
        | L::UnexpectedAnchor(m)
        | L::MappingKeyMustBeScalar(m)
        | L::UnexpectedTag(m)
        | L::ScanError(m, _) => pos(Some(m)),
        L::DuplicateKey(d) => pos(d.key.span().start()),
    }
}

/// The most mistakes reported in one section (a guard: each round takes a key out).
const MAX_ISSUES_PER_SECTION: usize = 100;

/// One step of a field path: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Seg {
    Key(String),
    Index(usize),
}

/// `load.schema[0].name` (as serde_path_to_error renders it) as steps. Parts serde could not
/// follow (`?`) end the path.
fn parse_path(p: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    if p.is_empty() || p == "." {
        return out;
    }
    for part in p.split('.') {
        let (key, rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if key == "?" {
            break;
        }
        if !key.is_empty() {
            out.push(Seg::Key(key.to_owned()));
        }
        for index in rest.split('[') {
            if let Ok(i) = index.trim_end_matches(']').parse::<usize>() {
                out.push(Seg::Index(i));
            }
        }
    }
    out
}

fn join_path(base: &str, segs: &[Seg]) -> String {
    let mut out = base.to_owned();
    for s in segs {
        match s {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn node_at<'a>(node: &'a Node, segs: &[Seg]) -> Option<&'a Node> {
    let mut n = node;
    for s in segs {
        n = match s {
            Seg::Key(k) => get(n, k)?,
            Seg::Index(i) => n.as_sequence()?.get(*i)?,
        };
    }
    Some(n)
}

/// Takes the key at `segs` out of its mapping; false when there is none (the section root).
fn remove(node: &mut Node, segs: &[Seg]) -> bool {
    rename(node, segs, None)
}

/// Renames the key at `segs` to `to` when its mapping has no such key yet, else takes it out;
/// false when there is no key at `segs`.
fn rename(node: &mut Node, segs: &[Seg], to: Option<&str>) -> bool {
    let Some((Seg::Key(last), parent)) = segs.split_last() else {
        return false;
    };
    let mut n = node;
    for s in parent {
        let next = match s {
            Seg::Key(k) => n.as_mapping_mut().and_then(|m| {
                let key = m.keys().find(|key| key.as_str() == k)?.clone();
                m.get_mut(&key)
            }),
            Seg::Index(i) => n.as_sequence_mut().and_then(|q| q.get_mut(*i)),
        };
        match next {
            Some(next) => n = next,
            None => return false,
        }
    }
    let Some(map) = n.as_mapping_mut() else {
        return false;
    };
    let Some(key) = map.keys().find(|key| key.as_str() == last).cloned() else {
        return false;
    };
    let Some(value) = map.remove(&key) else {
        return false;
    };
    if let Some(to) = to
        && !map.keys().any(|k| k.as_str() == to)
    {
        map.insert(
            marked_yaml::types::MarkedScalarNode::new(*key.span(), to),
            value,
        );
    }
    true
}

/// For `unknown variant `w`` reported at a mapping (an internally tagged enum such as a job's
/// `engine:`), the path and position of the key whose value is `w`.
fn tag_value(node: &Node, segs: Vec<Seg>, at: Pos, message: &str) -> (Vec<Seg>, Pos) {
    let Some(word) = message
        .strip_prefix("unknown variant `")
        .and_then(|r| r.split('`').next())
    else {
        return (segs, at);
    };
    let Some(map) = node_at(node, &segs).and_then(Node::as_mapping) else {
        return (segs, at);
    };
    for (k, v) in map.iter() {
        if let Some(value) = v.as_scalar()
            && value.as_str() == word
        {
            let mut segs = segs.clone();
            segs.push(Seg::Key(k.as_str().to_owned()));
            return (segs, pos(value.span().start()));
        }
    }
    (segs, at)
}

/// `missing field `name`` → `name`.
fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_owned())
}

fn unknown_field(field: &str, expected: &[&str]) -> String {
    match closest(field, expected.iter().copied()) {
        Some(meant) => format!("unknown field `{field}`; did you mean `{meant}`?"),
        None if expected.is_empty() => {
            format!("unknown field `{field}`: this mapping takes no fields")
        }
        None => format!(
            "unknown field `{field}`, expected one of: {}",
            expected.join(", ")
        ),
    }
}

/// serde's and the parsers' messages in plain words: `expected an integer, got "one"`.
fn plain(error: &marked_yaml::Error, message: &str, value: Option<&str>) -> String {
    use marked_yaml::Error as E;
    let got = value.map_or_else(String::new, |v| format!(", got {v:?}"));
    match error {
        E::IntegerParseFailure(..) => return format!("expected a whole number{got}"),
        E::FloatParseFailure(..) => return format!("expected a number{got}"),
        E::NotBoolean(_) => return format!("expected true or false{got}"),
        _ => {}
    }
    // `unknown variant `APEND`, expected one of `A`, `B``: suggest the closest.
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let (word, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let candidates: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
        return match closest(word, candidates.iter().copied()) {
            Some(meant) => format!("unknown value `{word}`; did you mean `{meant}`?"),
            None => format!(
                "unknown value `{word}`{}",
                tail.replacen(", expected", "; expected", 1)
            ),
        };
    }
    let lower = message.to_ascii_lowercase();
    let duration = [
        "time unit",
        "duration",
        "expected number",
        "number is too large",
    ];
    if duration.iter().any(|w| lower.contains(w)) && !lower.contains("invalid type") {
        return format!("expected a duration such as 30s or 5m{got}");
    }
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((unexpected, expected)) = rest.split_once(", expected ")
    {
        let expected = match expected {
            "u8" | "u16" | "u32" | "u64" | "usize" | "i32" | "i64" => "a whole number",
            "f32" | "f64" => "a number",
            "a boolean" => "true or false",
            "a sequence" => "a list",
            "a string" => "a string",
            e if e.starts_with("struct ") || e == "a map" => "a mapping",
            e => e,
        };
        let unexpected = match unexpected {
            "map" => "a mapping".to_owned(),
            "sequence" => "a list".to_owned(),
            "unit value" => "nothing".to_owned(),
            u => u
                .strip_prefix("string ")
                .map_or_else(|| u.to_owned(), str::to_owned),
        };
        return format!("expected {expected}, got {unexpected}");
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
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

    fn issues(text: &str) -> Vec<ConfigIssue> {
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
    fn schema_update_options_are_refused_unless_the_load_appends() {
        let with = |write: &str| {
            GOOD.replace(
                "      format: CSV\n",
                &format!("      format: CSV\n      write_disposition: {write}\n      schema_update_options: [ALLOW_FIELD_ADDITION]\n"),
            )
        };
        assert!(issues(&with("WRITE_APPEND")).is_empty());
        for write in ["WRITE_TRUNCATE", "WRITE_EMPTY"] {
            let found = issues(&with(write));
            assert_eq!(found.len(), 1, "{write}: {found:?}");
            assert_eq!(found[0].path, "pipelines[0].load.schema_update_options");
            assert!(found[0].message.contains(write), "{}", found[0].message);
        }
    }

    #[test]
    fn max_record_bytes_is_refused_outside_one_byte_to_bigquerys_row_limit() {
        let with = |n: u64| {
            GOOD.replace(
                "      format: CSV\n",
                &format!("      format: CSV\n      max_record_bytes: {n}\n"),
            )
        };
        assert!(issues(&with(1_000)).is_empty());
        for bad in [0, 100_000_001] {
            let found = issues(&with(bad));
            assert_eq!(found.len(), 1, "{bad}: {found:?}");
            assert_eq!(found[0].path, "pipelines[0].load.max_record_bytes");
        }
    }

    #[test]
    fn max_bad_records_is_refused_for_formats_bigquery_ignores_it_for() {
        let with = |format: &str, bad: u32| {
            GOOD.replace(
                "      format: CSV\n",
                &format!("      format: {format}\n      max_bad_records: {bad}\n"),
            )
        };
        for ok in ["CSV", "NDJSON"] {
            assert!(issues(&with(ok, 5)).is_empty(), "{ok}");
        }
        for ignored in ["AVRO", "PARQUET", "ORC"] {
            let found = issues(&with(ignored, 5));
            assert_eq!(found.len(), 1, "{ignored}: {found:?}");
            assert_eq!(found[0].path, "pipelines[0].load.max_bad_records");
            assert!(issues(&with(ignored, 0)).is_empty(), "0 is the default");
        }
    }

    #[test]
    fn a_table_placeholder_without_a_capture_is_an_error() {
        let text = GOOD.replace("analytics.sales_{date}", "analytics.sales_{region}");
        let found = issues(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "pipelines[0].load.table");
        assert!(found[0].message.contains("{region}"));
    }

    #[test]
    fn running_is_never_accepted_as_a_success_state() {
        let text = GOOD.replace(
            "max_attempts: 2",
            "max_attempts: 2, success_states: [SUCCEEDED, RUNNING]",
        );
        let found = issues(&text);
        assert!(
            found.iter().any(|i| i.message.contains("RUNNING")),
            "{found:?}"
        );
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

    const ENGINES: &str = r#"
pipelines:
  - name: serverless
    trigger: { object: { bucket: landing, pattern: "in/{date}/*.csv" } }
    load: { table: "ds.t_{date}", format: CSV }
    batch:
      engine: dataproc_serverless
      project: my-project
      region: us-central1
      runtime_version: "2.1"
      spark:
        main_class: com.example.services.Application
        jar_file_uris: [gs://encryption-poc/kms-utils-1.1.jar]
        args: ["--source-table={table}", "--date={date}"]
      service_account: sa@my-project.iam.gserviceaccount.com
      subnet: default
  - name: cluster
    trigger: { manual: true }
    batch:
      engine: dataproc_cluster
      project: my-project
      region: us-central1
      cluster: { single_node: true, max_idle: 12h, internal_ip_only: false }
      pig: { queries: ["sh echo {run_id} ${HOME}"] }
  - name: dataflow
    trigger: { manual: true }
    batch:
      engine: dataflow_flex
      project: my-project
      region: us-central1
      template: gs://dataflow-templates-us-central1/latest/flex/SQLServer_to_BigQuery
      parameters: { query: "select 1" }
      num_workers: 2
      max_workers: 10
  - name: fusion
    trigger: { manual: true }
    batch:
      engine: data_fusion
      instance_url: https://instance-dot-usw1.datafusion.googleusercontent.com/api
      pipeline: cdf_pipeline
      runs:
        - { args: { business_unit: hr, data_source: engineer } }
        - { active: false, args: { business_unit: hr, data_source: payroll } }
    poll: { success_states: [COMPLETED], timeout: 3600s }
"#;

    #[test]
    fn every_engine_parses_with_numbers_flags_and_durations() {
        let c = parse_str(ENGINES, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        let BatchSpec::DataprocCluster(cluster) = c.pipelines[1].jobs[0].spec.clone() else {
            panic!("not a cluster batch");
        };
        assert!(cluster.cluster.single_node);
        assert!(!cluster.cluster.internal_ip_only);
        assert_eq!(cluster.cluster.max_idle.as_secs(), 12 * 3600);
        let BatchSpec::DataflowFlex(flex) = c.pipelines[2].jobs[0].spec.clone() else {
            panic!("not a dataflow batch");
        };
        assert_eq!((flex.num_workers, flex.max_workers), (Some(2), Some(10)));
        let fusion = &c.pipelines[3].jobs[0];
        assert_eq!(fusion.name.as_str(), "batch");
        let each = fusion.for_each.as_ref().expect("runs become for_each rows");
        let rows = each.to_rows(&each.inline_rows());
        let active: Vec<&str> = rows
            .iter()
            .filter(|r| r.active)
            .map(|r| r.key.as_str())
            .collect();
        assert_eq!(active, ["hr-engineer"]);
        assert_eq!(
            rows[0].columns,
            std::collections::BTreeMap::from([
                ("business_unit".to_owned(), "hr".to_owned()),
                ("data_source".to_owned(), "engineer".to_owned())
            ]),
            "a row's columns are its runtime arguments"
        );
        assert_eq!(c.pipelines[3].poll.timeout.as_secs(), 3600);
    }

    #[test]
    fn engine_mistakes_are_all_reported_with_their_field_paths() {
        let text = ENGINES
            .replace("      runtime_version: \"2.1\"\n", "")
            .replace(
                "pig: { queries",
                "spark: { main_class: X }\n      pig: { queries",
            )
            .replace("select 1", "select {column}")
            .replace(
                "success_states: [COMPLETED]",
                "success_states: [RUNNING, COMPLETE]",
            );
        let found = issues(&text);
        let has = |path: &str, word: &str| {
            found
                .iter()
                .any(|i| i.path == path && i.message.contains(word))
        };
        assert!(
            has("pipelines[0].batch.runtime_version", "missing field"),
            "{found:#?}"
        );
        assert!(has("pipelines[1].batch.pig", "exactly one"), "{found:#?}");
        assert!(
            has("pipelines[2].batch.parameters.query", "{column}"),
            "{found:#?}"
        );
        assert!(
            has("pipelines[3].poll.success_states", "RUNNING"),
            "{found:#?}"
        );
        assert!(
            has(
                "pipelines[3].poll.success_states",
                "COMPLETE is not a state"
            ),
            "{found:#?}"
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
    fn a_refused_required_value_is_not_also_reported_missing() {
        let text = GOOD.replace("format: CSV", "fromat: CSV");
        let found = issues(&text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(
            found[0].message,
            "unknown field `fromat`; did you mean `format`?"
        );
        assert_eq!((found[0].line, found[0].column), (Some(10), Some(7)));
        let text = GOOD.replace("format: CSV", "format: XLSX");
        let found = issues(&text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].message.contains("unknown value `XLSX`"),
            "{found:#?}"
        );
        let text = GOOD.replace("format: CSV", "format: CVS");
        let found = issues(&text);
        assert_eq!(
            found[0].message, "unknown value `CVS`; did you mean `CSV`?",
            "{found:#?}"
        );
    }

    #[test]
    fn an_unknown_pipeline_key_is_reported_once() {
        let text = GOOD.replace("    poll:", "    colour: blue\n    poll:");
        let found = issues(&text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].path, "pipelines[0].colour");
    }

    #[test]
    fn a_bad_zone_and_a_scheduler_invalid_cron_are_refused_with_their_lines() {
        for (cron, zone, what) in [
            ("0 5 L * *", "UTC", "cron"),
            ("0 5 * * 1#2", "UTC", "cron"),
            ("0 0 5 * * *", "UTC", "cron"),
            ("0 5 * * *", "Mars/Olympus", "time_zone"),
            ("0 5 * * *", "Europe/Pariss", "time_zone"),
        ] {
            let text = format!(
                "pipelines:\n  - name: n\n    trigger:\n      schedule:\n        cron: \"{cron}\"\n        time_zone: {zone}\n    jobs: [{{ name: j, engine: local, command: \"true\" }}]\n"
            );
            let found = issues(&text);
            assert_eq!(found.len(), 1, "{cron} {zone}: {found:#?}");
            assert_eq!(
                found[0].path,
                format!("pipelines[0].trigger.schedule.{what}")
            );
            let line = if what == "cron" { 5 } else { 6 };
            assert_eq!(found[0].line, Some(line), "{found:#?}");
        }
        let ok = "pipelines:\n  - name: n\n    trigger: { schedule: { cron: \"11 7 * * MON-FRI\", time_zone: Asia/Tokyo } }\n    jobs: [{ name: j, engine: local, command: \"true\" }]\n";
        assert!(issues(ok).is_empty(), "{:#?}", issues(ok));
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

    #[test]
    fn a_misspelt_key_is_read_on_under_the_meant_name() {
        let text = r#"pipelines:
  - name: a
    trigger: { manual: true }
    jobs:
      - name: x
        engine: locall
        command: "true"
      - name: y
        engine: dataproc_serverless
        project: p
        regoin: 42x
        poll: { timeout: 5m, max_atempts: many }
"#;
        let found = issues(text);
        let shown: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "6:17: pipelines[0].jobs[0].engine: unknown value `locall`; did you mean `local`?",
                // A missing field is reported where its mapping starts.
                "8:13: pipelines[0].jobs[1].runtime_version: missing field `runtime_version`",
                "11:9: pipelines[0].jobs[1].regoin: unknown field `regoin`; did you mean `region`?",
                "12:30: pipelines[0].jobs[1].poll.max_atempts: unknown field `max_atempts`; did you mean `max_attempts`?",
                // The misspelt key's value is still checked, under the meant name.
                "12:43: pipelines[0].jobs[1].poll.max_attempts: expected a whole number, got \"many\"",
            ],
            "{shown:#?}"
        );
    }
}
