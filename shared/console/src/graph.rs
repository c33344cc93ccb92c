//! The pipelines as a graph of nodes and edges, computed from the configuration by one
//! function, [`graph`]: what the console draws. A pipeline is `trigger → [stage] → [load] →
//! jobs`; pipelines that start after others get edges between pipelines.

use conveyor_core::config::{Config, LoadBatch};
use serde::Serialize;

/// What a node stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// What starts a run: an object arrival, a schedule, a manual start, other pipelines.
    Trigger,
    /// Copy the source into the landing bucket.
    Stage,
    /// Load into a table.
    Load,
    /// A job (a batch, a query).
    Job,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// Unique in the graph: `PIPELINE/trigger`, `PIPELINE/stage`, `PIPELINE/load`,
    /// `PIPELINE/job/NAME`.
    pub id: String,
    /// The pipeline it belongs to.
    pub pipeline: String,
    /// What it stands for.
    pub kind: NodeKind,
    /// Its short name: `trigger`, `stage`, `load`, or the job's name.
    pub label: String,
    /// One line about it: the pattern, the source, the table, the engine.
    pub detail: String,
    /// The run-log task it corresponds to (see `runs::Task::node`): colours the node by a
    /// run's status.
    pub task: String,
}

/// An edge: `to` starts when `from` has succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    /// The node before.
    pub from: String,
    /// The node after.
    pub to: String,
}

/// The graph of every pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Graph {
    /// Nodes, each pipeline's in order.
    pub nodes: Vec<Node>,
    /// Edges within and between pipelines.
    pub edges: Vec<Edge>,
}

impl Graph {
    /// The pipelines, in the file's order.
    pub fn pipelines(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for n in &self.nodes {
            if !out.contains(&n.pipeline.as_str()) {
                out.push(&n.pipeline);
            }
        }
        out
    }

    /// The part of the graph about `pipeline` (its nodes and the edges among them).
    pub fn only(&self, pipeline: &str) -> Graph {
        let nodes: Vec<Node> = self
            .nodes
            .iter()
            .filter(|n| n.pipeline == pipeline)
            .cloned()
            .collect();
        let has = |id: &str| nodes.iter().any(|n| n.id == id);
        let edges = self
            .edges
            .iter()
            .filter(|e| has(&e.from) && has(&e.to))
            .cloned()
            .collect();
        Graph { nodes, edges }
    }
}

/// The graph of `config`'s pipelines: the one place that knows how a pipeline's sections
/// become nodes and edges.
pub fn graph(config: &Config) -> Graph {
    let mut g = Graph::default();
    // The nodes each pipeline's run ends at, for the `after` edges of its downstreams.
    let mut last: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for p in &config.pipelines {
        let name = p.name.as_str();
        let id = |part: &str| format!("{name}/{part}");
        let node = |part: &str, kind, label: &str, detail: String, task: &str| Node {
            id: id(part),
            pipeline: name.to_owned(),
            kind,
            label: label.to_owned(),
            detail,
            task: task.to_owned(),
        };
        let mut starts = Vec::new();
        if let Some(o) = &p.trigger.object {
            starts.push(format!("object {}/{}", o.bucket, o.pattern.as_str()));
        }
        if let Some(s) = &p.trigger.schedule {
            starts.push(format!("cron {} ({})", s.cron, s.time_zone));
        }
        if !p.trigger.after.is_empty() {
            let names: Vec<&str> = p.trigger.after.iter().map(|a| a.as_str()).collect();
            starts.push(format!("after {}", names.join(", ")));
        }
        if p.trigger.manual {
            starts.push("manual".to_owned());
        }
        let mut chain = vec![node(
            "trigger",
            NodeKind::Trigger,
            "trigger",
            starts.join(", "),
            "trigger",
        )];
        if let Some(s) = &p.stage {
            chain.push(node(
                "stage",
                NodeKind::Stage,
                "stage",
                format!("{} → {}", s.source.describe(), s.bucket),
                "stage",
            ));
        }
        if let Some(l) = &p.load {
            let batch = match &l.batch {
                Some(LoadBatch::Marker(m)) => format!(", on {}", m.marker),
                Some(LoadBatch::Window(w)) => {
                    format!(", {} window", humantime::format_duration(w.window))
                }
                None => String::new(),
            };
            chain.push(node(
                "load",
                NodeKind::Load,
                "load",
                format!(
                    "{} ({}{batch})",
                    l.table,
                    format!("{:?}", l.format).to_uppercase()
                ),
                "load",
            ));
        }
        for pair in chain.windows(2) {
            g.edges.push(Edge {
                from: pair[0].id.clone(),
                to: pair[1].id.clone(),
            });
        }
        // The node the jobs start after: the load, the stage or the trigger.
        let before_jobs = chain.last().map(|n| n.id.clone()).unwrap_or_default();
        // When any job declares `needs`, the jobs form a graph (branches side by side);
        // otherwise they run in list order.
        let graph_of_jobs = p.jobs.iter().any(|j| !j.needs.is_empty());
        let mut ends: Vec<String> = Vec::new();
        for (i, job) in p.jobs.iter().enumerate() {
            let mut detail = job.spec.engine().to_owned();
            if job.for_each.is_some() {
                detail.push_str(", for each row");
            }
            let run_if = format!("{:?}", job.run_if);
            if graph_of_jobs && run_if != "AllSucceeded" {
                detail.push_str(&format!(", if {}", snake(&run_if)));
            }
            let n = node(
                &format!("job/{}", job.name),
                NodeKind::Job,
                job.name.as_str(),
                detail,
                job.name.as_str(),
            );
            let froms: Vec<String> = if !graph_of_jobs {
                vec![if i == 0 {
                    before_jobs.clone()
                } else {
                    id(&format!("job/{}", p.jobs[i - 1].name))
                }]
            } else if job.needs.is_empty() {
                vec![before_jobs.clone()]
            } else {
                job.needs
                    .iter()
                    .map(|need| id(&format!("job/{need}")))
                    .collect()
            };
            for from in froms {
                g.edges.push(Edge {
                    from,
                    to: n.id.clone(),
                });
            }
            let needed = if graph_of_jobs {
                p.jobs
                    .iter()
                    .any(|j| j.needs.iter().any(|x| x == &job.name))
            } else {
                i + 1 < p.jobs.len()
            };
            if !needed {
                ends.push(n.id.clone());
            }
            chain.push(n);
        }
        if ends.is_empty() {
            ends.push(before_jobs);
        }
        last.insert(name, ends);
        g.nodes.extend(chain);
    }
    for p in &config.pipelines {
        for up in &p.trigger.after {
            for from in last.get(up.as_str()).into_iter().flatten() {
                g.edges.push(Edge {
                    from: from.clone(),
                    to: format!("{}/trigger", p.name),
                });
            }
        }
    }
    g
}

/// `OneFailed` → `one_failed`.
fn snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_is_a_chain_from_its_trigger_through_stage_load_and_batch() {
        let config = conveyor_core::config::parse_str(
            r#"
pipelines:
  - name: sales
    trigger: { object: { bucket: landing, pattern: "sales/{date}/*.csv" } }
    load: { table: "analytics.sales_{date}", format: CSV }
    batch: { engine: local, command: "true" }
  - name: nightly
    trigger: { schedule: { cron: "0 2 * * *" }, manual: false }
    batch: { engine: local, command: "true" }
"#,
            "t.yaml",
        )
        .unwrap();
        let g = graph(&config);
        assert_eq!(g.pipelines(), ["sales", "nightly"]);
        let sales = g.only("sales");
        let ids: Vec<&str> = sales.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(
            ids,
            ["sales/trigger", "sales/load", "sales/job/batch"],
            "no stage section, no stage node"
        );
        assert_eq!(sales.edges.len(), 2);
        assert_eq!(sales.nodes[1].detail, "analytics.sales_{date} (CSV)");
        assert!(sales.nodes[0].detail.contains("landing/sales/{date}/*.csv"));
        let nightly = g.only("nightly");
        assert_eq!(nightly.nodes[0].detail, "cron 0 2 * * * (Etc/UTC)");
        assert_eq!(nightly.edges[0].to, "nightly/job/batch");
    }

    #[test]
    fn jobs_follow_the_load_in_order_and_after_draws_edges_between_pipelines() {
        let config = conveyor_core::config::parse_str(
            r#"
pipelines:
  - name: orders
    trigger: { object: { bucket: landing, pattern: "orders/{date}/*.csv" } }
    load: { table: "staging.orders_{date}", format: CSV, batch: { marker: _SUCCESS } }
    jobs:
      - { name: dedupe, engine: local, command: "true" }
      - { name: publish, engine: local, command: "true" }
  - name: customers
    trigger: { manual: true }
    jobs: [{ name: refresh, engine: local, command: "true" }]
  - name: daily
    trigger: { after: [orders, customers] }
    jobs: [{ name: report, engine: local, command: "true" }]
"#,
            "t.yaml",
        )
        .unwrap();
        let g = graph(&config);
        let only = g.only("orders");
        let orders: Vec<&str> = only.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(
            orders,
            [
                "orders/trigger",
                "orders/load",
                "orders/job/dedupe",
                "orders/job/publish"
            ]
        );
        assert!(g.only("orders").nodes[1].detail.contains("on _SUCCESS"));
        let has = |from: &str, to: &str| g.edges.iter().any(|e| e.from == from && e.to == to);
        assert!(has("orders/job/dedupe", "orders/job/publish"));
        assert!(
            has("orders/job/publish", "daily/trigger"),
            "after: the end of orders"
        );
        assert!(has("customers/job/refresh", "daily/trigger"));
        assert_eq!(
            g.only("daily").nodes[0].detail,
            "after orders, customers, manual"
        );
        assert_eq!(
            g.only("daily").edges.len(),
            1,
            "only() keeps a pipeline's own edges"
        );
    }

    #[test]
    fn jobs_with_needs_are_drawn_as_a_graph_with_branches() {
        let config = conveyor_core::config::parse_str(
            r#"
pipelines:
  - name: dag
    trigger: { manual: true }
    jobs:
      - { name: extract, engine: local, command: "true" }
      - { name: left, engine: local, command: "true", needs: [extract] }
      - { name: right, engine: local, command: "true", needs: [extract] }
      - { name: join, engine: local, command: "true", needs: [left, right] }
      - { name: cleanup, engine: local, command: "true", needs: [join], run_if: one_failed }
  - name: after_dag
    trigger: { after: [dag] }
    jobs: [{ name: report, engine: local, command: "true" }]
"#,
            "t.yaml",
        )
        .unwrap();
        let g = graph(&config);
        let has = |from: &str, to: &str| g.edges.iter().any(|e| e.from == from && e.to == to);
        assert!(has("dag/trigger", "dag/job/extract"));
        assert!(has("dag/job/extract", "dag/job/left"));
        assert!(has("dag/job/extract", "dag/job/right"));
        assert!(has("dag/job/left", "dag/job/join"));
        assert!(has("dag/job/right", "dag/job/join"));
        assert!(
            !has("dag/job/left", "dag/job/right"),
            "branches side by side"
        );
        assert!(
            has("dag/job/cleanup", "after_dag/trigger"),
            "the run ends at its last job"
        );
        assert!(
            g.nodes
                .iter()
                .any(|n| n.id == "dag/job/cleanup" && n.detail.contains("if one_failed"))
        );
        // Drawn: left and right in one column, on two lanes.
        let svg = crate::svg::graph(&g, &Default::default(), false).into_string();
        let at = |id: &str| -> (String, String) {
            let rest = svg.split(&format!(r#"data-node="{id}""#)).nth(1).unwrap();
            let x = rest
                .split(r#"x=""#)
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_owned();
            let y = rest
                .split(r#"y=""#)
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_owned();
            (x, y)
        };
        assert_eq!(at("dag/job/left").0, at("dag/job/right").0, "one column");
        assert_ne!(at("dag/job/left").1, at("dag/job/right").1, "two lanes");
    }

    #[test]
    fn every_example_file_is_drawn_whole() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            files += 1;
            let config = conveyor_core::config::load_file(&path).unwrap();
            let g = graph(&config);
            for p in &config.pipelines {
                let nodes = g.only(p.name.as_str()).nodes;
                assert!(
                    nodes.len() > p.jobs.len(),
                    "{}: {} has a trigger and a node per job",
                    path.display(),
                    p.name
                );
                for up in &p.trigger.after {
                    assert!(
                        g.edges.iter().any(|e| e.from.starts_with(&format!("{up}/"))
                            && e.to == format!("{}/trigger", p.name)),
                        "{}: no edge {up} → {}",
                        path.display(),
                        p.name
                    );
                }
            }
        }
        assert!(files >= 2, "examples found in {}", dir.display());
    }
}
