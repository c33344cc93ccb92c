//! `jobs` (or one `batch`): each job read on its own, then its engine's fields, its
//! placeholders and its success states.

use std::collections::{BTreeMap, BTreeSet};

use marked_yaml::Node;

use super::{Lines, Pos, Validator, get, line_of};
use crate::config::{BatchSpec, Job, Pipeline, parameter_placeholders, render_parameter};
use crate::names::{TableRef, reserved_dataset};

impl Validator {
    /// Each job of `jobs` on its own, so one bad job does not hide the others' mistakes.
    pub(super) fn jobs(&mut self, path: &str, node: &Node) -> bool {
        let Some(seq) = node.as_sequence() else {
            self.issue(path, line_of(node), "must be a list of jobs");
            return false;
        };
        let mut ok = true;
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, j) in seq.iter().enumerate() {
            let p = format!("{path}[{i}]");
            match self.section::<Job>(&p, j) {
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

    /// The checks of every job of `p` (`captures`: the trigger's; `from_batch`: the jobs
    /// were written as one `batch`).
    pub(super) fn job_semantics(
        &mut self,
        path: &str,
        lines: Lines<'_>,
        p: &Pipeline,
        from_batch: bool,
        captures: &[String],
    ) {
        let mut known: Vec<String> = captures.to_vec();
        known.extend(
            ["run_id", "table", "attempt", "job_id", "pipeline", "date"].map(str::to_owned),
        );
        known.extend(crate::config::DATE_PLACEHOLDERS.map(str::to_owned));
        for (i, job) in p.jobs.iter().enumerate() {
            let (jpath, keys): (String, Vec<String>) = if from_batch {
                (format!("{path}.batch"), vec!["batch".to_owned()])
            } else {
                (
                    format!("{path}.jobs[{i}]"),
                    vec!["jobs".to_owned(), i.to_string()],
                )
            };
            self.job(path, &jpath, &keys, lines, job, p, &known);
        }
        if !from_batch {
            self.job_graph(path, lines, p);
        }
        self.check_list(path, &[], lines, &p.checks, &known);
    }

    /// `needs` names jobs of the pipeline, other than the job itself, with no cycle; a job
    /// that needs nothing has no `run_if` (it starts with the run).
    fn job_graph(&mut self, path: &str, lines: Lines<'_>, p: &Pipeline) {
        let graph = p.jobs.iter().any(|j| !j.needs.is_empty());
        let line = |i: usize, key: &str| {
            lines.at_path(&["jobs".to_owned(), i.to_string(), key.to_owned()])
        };
        for (i, job) in p.jobs.iter().enumerate() {
            let mut seen = BTreeSet::new();
            for need in &job.needs {
                let problem = if need == &job.name {
                    Some("a job cannot need itself".to_owned())
                } else if p.job(need.as_str()).is_none() {
                    Some(format!(
                        "no job is called {:?}; jobs: {}",
                        need.as_str(),
                        p.jobs
                            .iter()
                            .map(|j| j.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                } else if !seen.insert(need.as_str()) {
                    Some(format!("{:?} is listed twice", need.as_str()))
                } else {
                    None
                };
                if let Some(problem) = problem {
                    self.issue(format!("{path}.jobs[{i}].needs"), line(i, "needs"), problem);
                }
            }
            let root = if graph { job.needs.is_empty() } else { i == 0 };
            if root && job.run_if != crate::config::RunIf::AllSucceeded {
                self.issue(
                    format!("{path}.jobs[{i}].run_if"),
                    line(i, "run_if"),
                    format!(
                        "job {:?} needs no job, so it starts with the run and `run_if: {}` has nothing to decide on; add `needs`",
                        job.name.as_str(),
                        job.run_if.as_str()
                    ),
                );
            }
        }
        if graph && let Some(cycle) = job_cycle(p) {
            let names: Vec<&str> = cycle.iter().map(|i| p.jobs[*i].name.as_str()).collect();
            self.issue(
                format!("{path}.jobs[{}].needs", cycle[0]),
                line(cycle[0], "needs"),
                format!(
                    "the jobs' needs form a cycle: {} -> {}",
                    names.join(" -> "),
                    names[0]
                ),
            );
        }
    }

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
        lines: Lines<'_>,
        job: &Job,
        p: &Pipeline,
        known: &[String],
    ) {
        let batch = &job.spec;
        // `jobs[0].a.b[0]` is reported at the line of `jobs[0].a`.
        let line_of_param = |param: &str| {
            let first = param.split(['.', '[']).next().unwrap_or(param);
            let mut k = keys.to_vec();
            k.push(first.to_owned());
            lines.at_path(&k)
        };
        for (param, message) in batch.problems() {
            self.issue(format!("{jpath}.{param}"), line_of_param(&param), message);
        }
        let mut known = known.to_vec();
        if let Some(fe) = &job.for_each {
            let mut k = keys.to_vec();
            k.push("for_each".to_owned());
            let line = lines.at_path(&k);
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
                if let Some(secret) = crate::config::secret_name(&name) {
                    if let Err(e) = crate::config::SecretRef::parse(secret) {
                        self.issue(
                            format!("{jpath}.{param}"),
                            line_of_param(&param),
                            format!("{{secret:…}}: {e}"),
                        );
                    }
                    continue;
                }
                if crate::config::date_offset(&name).is_some() {
                    continue;
                }
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
        if let Some(when) = &job.when {
            let mut k = keys.to_vec();
            k.push("when".to_owned());
            let line = lines.at_path(&k);
            if when.table_exists.is_some() == when.query.is_some() {
                self.issue(
                    format!("{jpath}.when"),
                    line,
                    "set either `table_exists` (a table) or `query` (one boolean)",
                );
            }
            for (field, text) in [("table_exists", &when.table_exists), ("query", &when.query)] {
                for name in text.iter().flat_map(|t| parameter_placeholders(t)) {
                    let derived = crate::config::date_offset(&name).is_some();
                    if !any && !derived && !known.contains(&name) {
                        self.issue(
                            format!("{jpath}.when.{field}"),
                            line,
                            format!(
                                "unknown placeholder {{{name}}}; known: {}",
                                known.join(", ")
                            ),
                        );
                    }
                }
            }
        }
        self.check_list(jpath, keys, lines, &job.checks, &known);
        if let BatchSpec::Sql(q) = batch
            && let Some(dest) = &q.destination
        {
            self.sql_destination(jpath, dest, line_of_param("destination"));
        }
        self.success_states(path, jpath, keys, lines, job, p);
    }

    /// The checks of a job or a pipeline (`path`, `keys` locate its `checks`).
    fn check_list(
        &mut self,
        path: &str,
        keys: &[String],
        lines: Lines<'_>,
        checks: &[crate::config::Check],
        known: &[String],
    ) {
        let any = known.iter().any(|k| k == "*");
        for (c, check) in checks.iter().enumerate() {
            let mut k = keys.to_vec();
            k.extend(["checks".to_owned(), c.to_string()]);
            let line = lines.at_path(&k);
            let cpath = format!("{path}.checks[{c}]");
            if check.kinds() != 1 {
                self.issue(
                    &cpath,
                    line,
                    "set exactly one of `sql`, `row_count`, `not_null`, `unique`, `fresh`",
                );
            }
            if [&check.not_null, &check.unique]
                .into_iter()
                .flatten()
                .any(|c| c.columns.is_empty())
            {
                self.issue(&cpath, line, "`columns` must name at least one column");
            }
            for col in check.columns() {
                let ident = col
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && col.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !ident {
                    self.issue(
                        &cpath,
                        line,
                        format!("column {col:?} must be a plain name (letters, digits, `_`)"),
                    );
                }
            }
            for name in check
                .templates()
                .into_iter()
                .flat_map(parameter_placeholders)
            {
                let derived = crate::config::date_offset(&name).is_some();
                if !any && !derived && !known.contains(&name) {
                    self.issue(
                        &cpath,
                        line,
                        format!(
                            "unknown placeholder {{{name}}}; known: {}",
                            known.join(", ")
                        ),
                    );
                }
            }
        }
    }

    /// A SQL job's destination, rendered with sample values: a table, outside the datasets
    /// SQLite reserves.
    fn sql_destination(&mut self, jpath: &str, dest: &str, line: Pos) {
        let sample: BTreeMap<String, String> = parameter_placeholders(dest)
            .into_iter()
            .map(|n| (n, "x".to_owned()))
            .collect();
        if let Ok(d) = render_parameter(dest, &sample) {
            let problem = match TableRef::parse(&d) {
                Err(e) => Some(e.to_string()),
                Ok(t) => reserved_dataset(&t.dataset),
            };
            if let Some(problem) = problem {
                self.issue(format!("{jpath}.destination"), line, problem);
            }
        }
    }

    /// The success states of a job's poll policy: terminal states of its engine.
    fn success_states(
        &mut self,
        path: &str,
        jpath: &str,
        keys: &[String],
        lines: Lines<'_>,
        job: &Job,
        p: &Pipeline,
    ) {
        let batch = &job.spec;
        let policy = p.poll_for(job);
        let (poll_path, poll_line) = if job.poll.is_some() {
            let mut k = keys.to_vec();
            k.extend(["poll".to_owned(), "success_states".to_owned()]);
            (format!("{jpath}.poll"), lines.at_path(&k))
        } else {
            (
                format!("{path}.poll"),
                lines.at_path(&["poll".to_owned(), "success_states".to_owned()]),
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

/// A cycle of `needs` among `p`'s jobs (their indexes, in order), if there is one.
fn job_cycle(p: &Pipeline) -> Option<Vec<usize>> {
    fn visit(
        p: &Pipeline,
        i: usize,
        marks: &mut [u8],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        marks[i] = 1;
        stack.push(i);
        for n in p.needs_of(i) {
            match marks[n] {
                1 => {
                    let start = stack.iter().position(|x| *x == n).unwrap_or(0);
                    return Some(stack[start..].to_vec());
                }
                0 => {
                    if let Some(c) = visit(p, n, marks, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        marks[i] = 2;
        None
    }
    let mut marks = vec![0_u8; p.jobs.len()];
    (0..p.jobs.len()).find_map(|i| {
        if marks[i] == 0 {
            visit(p, i, &mut marks, &mut Vec::new())
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{GOOD, issues};
    use crate::config::{BatchSpec, parse_str};

    const GRAPH: &str = r#"
pipelines:
  - name: g
    trigger: { manual: true }
    jobs:
      - { name: a, engine: local, command: "true" }
      - { name: b, engine: local, command: "true", needs: [a] }
      - { name: c, engine: local, command: "true", needs: [a, b], run_if: one_failed }
"#;

    #[test]
    fn a_graph_of_jobs_parses_and_orders_its_needs() {
        let c = parse_str(GRAPH, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        let p = &c.pipelines[0];
        assert!(p.has_rules());
        assert_eq!(p.first_jobs(), [0]);
        assert_eq!(p.needs_of(2), [0, 1]);
        assert_eq!(p.dependents_of(0), [1, 2]);
    }

    #[test]
    fn needs_that_name_unknown_jobs_themselves_or_a_cycle_are_refused() {
        let text = GRAPH
            .replace("needs: [a] }", "needs: [c] }")
            .replace("needs: [a, b]", "needs: [a, b, zz, c]");
        let found = issues(&text);
        let has = |path: &str, word: &str| {
            found
                .iter()
                .any(|i| i.path == path && i.message.contains(word))
        };
        assert!(
            has("pipelines[0].jobs[2].needs", "no job is called \"zz\""),
            "{found:#?}"
        );
        assert!(
            has("pipelines[0].jobs[2].needs", "cannot need itself"),
            "{found:#?}"
        );
        assert!(
            has("pipelines[0].jobs[1].needs", "cycle: b -> c"),
            "{found:#?}"
        );
    }

    #[test]
    fn a_run_if_on_a_job_that_needs_nothing_is_refused() {
        let found = issues(&GRAPH.replace(
            "{ name: a, engine: local, command: \"true\" }",
            "{ name: a, engine: local, command: \"true\", run_if: all_done }",
        ));
        assert!(
            found
                .iter()
                .any(|i| i.path == "pipelines[0].jobs[0].run_if"
                    && i.message.contains("needs no job")),
            "{found:#?}"
        );
        // A list (no `needs`): the first job is the one that needs nothing.
        let list = "pipelines:\n  - name: l\n    trigger: { manual: true }\n    jobs:\n      - { name: a, engine: local, command: \"true\" }\n      - { name: cleanup, engine: local, command: \"true\", run_if: all_done }\n";
        assert_eq!(issues(list), Vec::new());
        let c = parse_str(list, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.pipelines[0].needs_of(1), [0]);
        let bad = issues(&list.replace("run_if: all_done", "run_if: sometimes"));
        assert!(bad.iter().any(|i| i.path.contains("jobs[1]")), "{bad:#?}");
    }

    #[test]
    fn date_secret_and_interval_placeholders_are_known_and_a_bad_secret_is_refused() {
        let text = GOOD.replace(
            "echo {date} {run_id}",
            "echo {date-1d} {date+7d} {yyyy}/{mm}/{dd} {data_interval_start} {data_interval_end} {secret:projects/p/secrets/token}",
        );
        assert_eq!(issues(&text), Vec::new());
        let found = issues(&GOOD.replace("echo {date} {run_id}", "echo {secret:token} {date-1x}"));
        assert!(
            found.iter().any(|i| i.message.contains("{secret:…}")
                && i.message.contains("projects/PROJECT/secrets/NAME")),
            "{found:#?}"
        );
    }

    #[test]
    fn a_condition_names_one_check_with_known_placeholders() {
        let base = "pipelines:\n  - name: w\n    trigger: { manual: true }\n    jobs:\n      - { name: a, engine: local, command: \"true\", when: WHEN }\n";
        assert_eq!(
            issues(&base.replace("WHEN", "{ table_exists: \"ds.t_{date-1d}\" }")),
            Vec::new()
        );
        assert_eq!(
            issues(&base.replace("WHEN", "{ query: \"SELECT COUNT(*) > 0 FROM ds.t\" }")),
            Vec::new()
        );
        let both = issues(&base.replace("WHEN", "{ query: \"SELECT 1\", table_exists: ds.t }"));
        assert!(
            both.iter()
                .any(|i| i.path.ends_with("when") && i.message.contains("either")),
            "{both:#?}"
        );
        let unknown = issues(&base.replace("WHEN", "{ table_exists: \"ds.t_{nope}\" }"));
        assert!(
            unknown
                .iter()
                .any(|i| i.path.ends_with("when.table_exists") && i.message.contains("{nope}")),
            "{unknown:#?}"
        );
    }

    #[test]
    fn a_check_sets_one_kind_with_plain_columns() {
        let base = "pipelines:\n  - name: c\n    trigger: { manual: true }\n    jobs:\n      - { name: a, engine: local, command: \"true\", checks: [CHECK] }\n";
        for ok in [
            "{ row_count: { table: \"ds.t_{date}\", min: 3 } }",
            "{ not_null: { table: ds.t, columns: [id, name] }, severity: warn }",
            "{ unique: { table: ds.t, columns: [id] } }",
            "{ fresh: { table: ds.t, column: ts, within: 26h } }",
            "{ name: positive, sql: \"SELECT COUNT(*) = 0 AS ok FROM ds.t WHERE v < 0\" }",
        ] {
            assert_eq!(issues(&base.replace("CHECK", ok)), Vec::new(), "{ok}");
        }
        let two = issues(&base.replace(
            "CHECK",
            "{ sql: \"SELECT 1\", unique: { table: ds.t, columns: [id] } }",
        ));
        assert!(
            two.iter().any(|i| i.message.contains("exactly one")),
            "{two:#?}"
        );
        let bad = issues(&base.replace(
            "CHECK",
            "{ unique: { table: ds.t, columns: [\"id; DROP\"] } }",
        ));
        assert!(
            bad.iter().any(|i| i.message.contains("plain name")),
            "{bad:#?}"
        );
        let unknown = issues(&base.replace("CHECK", "{ row_count: { table: \"ds.t_{nope}\" } }"));
        assert!(
            unknown.iter().any(|i| i.message.contains("{nope}")),
            "{unknown:#?}"
        );
    }

    #[test]
    fn a_pipelines_own_checks_are_checked_like_a_jobs() {
        let base = "pipelines:\n  - name: c\n    trigger: { manual: true }\n    jobs: [{ name: a, engine: local, command: \"true\" }]\n    checks: [CHECK]\n";
        assert_eq!(
            issues(&base.replace("CHECK", "{ row_count: { table: \"ds.t_{date}\" } }")),
            Vec::new()
        );
        let found = issues(&base.replace("CHECK", "{ severity: warn }"));
        assert!(
            found
                .iter()
                .any(|i| i.path == "pipelines[0].checks[0]" && i.message.contains("exactly one")),
            "{found:#?}"
        );
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
}
