//! One pipeline: its keys each read on their own, then its shape (a trigger, something to
//! do, `after` rules and cycles, stage and run-log checks, poll bounds).

use std::collections::BTreeMap;

use marked_yaml::Node;

use super::{Lines, Validator, get, line_of};
use crate::config::{BatchSpec, Pipeline, PollPolicy};
use crate::names::reserved_dataset;

impl Validator {
    /// `trigger.after` names known pipelines that end runs, and the edges have no cycle.
    pub(super) fn after_graph(&mut self, root: &Node, pipelines: &[Pipeline]) {
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

    pub(super) fn pipeline(&mut self, path: &str, node: &Node) -> Option<Pipeline> {
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
            "checks",
            "expect",
            "max_active_runs",
            "on_failure",
            "timeout",
            "pause",
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
                    let found = crate::config::stage::inline_credentials(n);
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
                    "trigger" => self.section::<crate::config::Trigger>(&p, n).is_some(),
                    "stage" => self.section::<crate::config::StageSpec>(&p, n).is_some(),
                    "load" => self.section::<crate::config::LoadSpec>(&p, n).is_some(),
                    "batch" => self.section::<BatchSpec>(&p, n).is_some(),
                    "jobs" => self.jobs(&p, n),
                    "poll" => self.section::<crate::config::PollPolicy>(&p, n).is_some(),
                    "checks" => self.section::<Vec<crate::config::Check>>(&p, n).is_some(),
                    "expect" => self.section::<crate::config::Expect>(&p, n).is_some(),
                    "max_active_runs" => match self.section::<u32>(&p, n) {
                        Some(0) => {
                            self.issue(
                                &p,
                                line_of(n),
                                "must be at least 1 (leave it out for no limit)",
                            );
                            false
                        }
                        other => other.is_some(),
                    },
                    "on_failure" => self
                        .section::<Vec<crate::config::OnFailure>>(&p, n)
                        .is_some(),
                    "timeout" => self.section::<RunTimeout>(&p, n).is_some(),
                    "pause" => self
                        .section::<crate::config::PauseSettings>(&p, n)
                        .is_some(),
                    _ => self.section::<crate::config::RunLogTarget>(&p, n).is_some(),
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

    /// The checks that need the whole pipeline, each role in its own function.
    fn semantics(&mut self, path: &str, node: &Node, p: &Pipeline, from_batch: bool) {
        let lines = Lines(node);
        self.shape(path, lines, p);
        // `trigger.schedule`'s cron and time zone are checked as they are read (the messages
        // then point at the value itself).
        let captures = p.captures();
        self.stage_and_run_log(path, lines, p);
        if let Some(load) = &p.load {
            self.load_target(path, lines, p, load, captures);
        }
        self.job_semantics(path, lines, p, from_batch, captures);
        if let Some(load) = &p.load {
            self.load_options(path, lines, p, load);
        }
        self.poll(path, lines, &p.poll);
    }

    /// Something to do, something that starts it, and what `after` allows.
    fn shape(&mut self, path: &str, lines: Lines<'_>, p: &Pipeline) {
        if p.stage.is_none() && p.load.is_none() && p.jobs.is_empty() {
            self.issue(
                path,
                lines.at(&[]),
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
                lines.at(&["trigger"]),
                "no trigger: set `object`, `schedule`, `after`, `topic` or `manual: true`",
            );
        }
        for (field, message) in crate::config::messages::problems(p) {
            let keys: Vec<&str> = field.split('.').collect();
            self.issue(format!("{path}.{field}"), lines.at(&keys), message);
        }
        if !t.after.is_empty() {
            if p.stage.is_some() || p.load.is_some() {
                self.issue(
                    format!("{path}.trigger.after"),
                    lines.at(&["trigger", "after"]),
                    "a pipeline started `after` others runs `jobs` only (no `stage` or `load`)",
                );
            }
            if p.jobs.is_empty() {
                self.issue(
                    format!("{path}.trigger.after"),
                    lines.at(&["trigger", "after"]),
                    "a pipeline started `after` others needs `jobs` to run",
                );
            }
            if t.after.contains(&p.name) {
                self.issue(
                    format!("{path}.trigger.after"),
                    lines.at(&["trigger", "after"]),
                    "a pipeline cannot run after itself",
                );
            }
        }
    }

    /// The stage's own problems, and a run-log table in a reserved dataset.
    fn stage_and_run_log(&mut self, path: &str, lines: Lines<'_>, p: &Pipeline) {
        if let Some(stage) = &p.stage {
            for (field, message) in stage.problems() {
                // `source.s3.endpoint` is reported at the line of the deepest key present.
                let keys: Vec<&str> = std::iter::once("stage")
                    .chain(field.split(['.', '[']))
                    .collect();
                self.issue(format!("{path}.stage.{field}"), lines.at(&keys), message);
            }
        }
        if let Some(target) = &p.run_log
            && let Some(why) = reserved_dataset(&target.table.dataset)
        {
            self.issue(
                format!("{path}.run_log.table"),
                lines.at(&["run_log", "table"]),
                why,
            );
        }
    }

    /// The poll policy's bounds.
    fn poll(&mut self, path: &str, lines: Lines<'_>, poll: &PollPolicy) {
        if poll.max_attempts == 0 {
            self.issue(
                format!("{path}.poll.max_attempts"),
                lines.at(&["poll", "max_attempts"]),
                "must be at least 1",
            );
        }
        if poll.timeout.is_zero() {
            self.issue(
                format!("{path}.poll.timeout"),
                lines.at(&["poll", "timeout"]),
                "must be longer than 0s",
            );
        }
        if poll.interval.is_zero() {
            self.issue(
                format!("{path}.poll.interval"),
                lines.at(&["poll", "interval"]),
                "must be longer than 0s",
            );
        }
        if !(poll.backoff.multiplier.is_finite() && poll.backoff.multiplier >= 1.0) {
            self.issue(
                format!("{path}.poll.backoff.multiplier"),
                lines.at(&["poll", "backoff", "multiplier"]),
                "must be a number >= 1",
            );
        }
    }
}

/// A pipeline's `timeout`, read alone so a bad value is reported where it is.
#[derive(serde::Deserialize)]
#[serde(transparent)]
struct RunTimeout(
    #[expect(dead_code, reason = "read only to check that it parses")]
    #[serde(with = "humantime_serde")]
    std::time::Duration,
);
