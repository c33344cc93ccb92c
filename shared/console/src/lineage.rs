//! A table's lineage across pipelines: which jobs write it, what it comes from (upstream) and
//! what is made from it (downstream), followed through every pipeline.
//!
//! The edges come from two places: the pipeline file (a load reads its objects and writes its
//! table; a `sql` job reads the tables after `FROM`/`JOIN` — core's
//! [`conveyor_core::steps::source_tables`] — and writes its destination; checks read their
//! tables), with the names as written (`analytics.sales_{date}`); and the OpenLineage events
//! the runs emitted (the embedded `lineage.jsonl`), with the names as run
//! (`analytics.sales_20261120`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use conveyor_core::config::{BatchSpec, Config};
use serde::Serialize;

/// One step of data: `via` (a pipeline's load or job) reads `from` and writes `to`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Edge {
    /// A table (`dataset.table`) or objects (`gs://bucket/pattern`).
    pub from: String,
    /// A table.
    pub to: String,
    /// `pipeline.load` or `pipeline.job`.
    pub via: String,
}

/// The edges the pipeline file declares.
pub fn from_config(config: &Config) -> Vec<Edge> {
    let mut out = BTreeSet::new();
    for p in &config.pipelines {
        if let Some(l) = &p.load {
            let from = match &p.trigger.object {
                Some(o) => format!("gs://{}/{}", o.bucket, o.pattern.as_str()),
                None => "objects".to_owned(),
            };
            out.insert(Edge {
                from,
                to: l.table.to_string(),
                via: format!("{}.load", p.name),
            });
        }
        let jobs = p
            .jobs
            .iter()
            .map(|j| (j.name.to_string(), &j.spec, Some(j)));
        let batch = p.batch.iter().map(|b| ("batch".to_owned(), b, None));
        for (name, spec, job) in jobs.chain(batch) {
            let via = format!("{}.{name}", p.name);
            let mut reads = BTreeSet::new();
            let mut writes = BTreeSet::new();
            if let BatchSpec::Sql(sql) = spec {
                reads.extend(template_tables(&sql.query));
                writes.extend(sql.destination.clone());
            }
            for check in job.iter().flat_map(|j| j.checks.iter()) {
                for t in check.templates() {
                    if check.sql.as_deref() == Some(t) {
                        reads.extend(template_tables(t));
                    } else {
                        reads.insert(t.to_owned());
                    }
                }
            }
            for to in &writes {
                for from in &reads {
                    out.insert(Edge {
                        from: from.clone(),
                        to: to.clone(),
                        via: via.clone(),
                    });
                }
                if reads.is_empty() {
                    out.insert(Edge {
                        from: String::new(),
                        to: to.clone(),
                        via: via.clone(),
                    });
                }
            }
            // A job that only reads (a check, an export) is downstream of what it reads.
            if writes.is_empty() {
                for from in &reads {
                    out.insert(Edge {
                        from: from.clone(),
                        to: String::new(),
                        via: via.clone(),
                    });
                }
            }
        }
    }
    out.into_iter().collect()
}

/// The tables a query template reads, placeholders kept (`analytics.sales_{date}`): core's
/// scan on the template with each `{…}` standing in as a word, then put back.
fn template_tables(sql: &str) -> BTreeSet<String> {
    let mut holders: Vec<String> = Vec::new();
    let mut plain = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        plain.push_str(&rest[..open]);
        plain.push_str(&format!("zzph{}zz", holders.len()));
        holders.push(rest[open..open + close + 1].to_owned());
        rest = &rest[open + close + 1..];
    }
    plain.push_str(rest);
    conveyor_core::steps::source_tables(&plain)
        .into_iter()
        .map(|mut t| {
            for (i, h) in holders.iter().enumerate() {
                t = t.replace(&format!("zzph{i}zz"), h);
            }
            t
        })
        .collect()
}

/// The edges of the OpenLineage events in a JSON-lines file (each event's inputs to its
/// outputs, via its job); an unreadable file or line adds none.
pub fn from_events_file(path: &std::path::Path) -> Vec<Edge> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| {
                let name = d["name"].as_str()?;
                let ns = d["namespace"].as_str().unwrap_or("");
                Some(if ns.starts_with("gs://") {
                    format!("{}/{name}", ns.trim_end_matches('/'))
                } else {
                    // `project.dataset.table` on BigQuery: the console names `dataset.table`.
                    let parts: Vec<&str> = name.split('.').collect();
                    if parts.len() == 3 {
                        parts[1..].join(".")
                    } else {
                        name.to_owned()
                    }
                })
            })
            .collect()
    };
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let Ok(ev) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let via = ev["job"]["name"].as_str().unwrap_or("").to_owned();
        let (inputs, outputs) = (names(&ev["inputs"]), names(&ev["outputs"]));
        for to in &outputs {
            for from in &inputs {
                out.insert(Edge {
                    from: from.clone(),
                    to: to.clone(),
                    via: via.clone(),
                });
            }
        }
    }
    out.into_iter().collect()
}

/// One table or object set met while following the edges, and how far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hop {
    /// The table (or objects).
    pub name: String,
    /// The job that links it to the one before.
    pub via: String,
    /// Steps from the table looked at (1: direct).
    pub depth: usize,
}

/// A table's lineage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct View {
    /// The jobs that write it.
    pub writers: Vec<String>,
    /// The jobs that read it.
    pub readers: Vec<String>,
    /// What it is made from, nearest first, across pipelines.
    pub upstream: Vec<Hop>,
    /// What is made from it, nearest first, across pipelines.
    pub downstream: Vec<Hop>,
}

/// `table`'s lineage in `edges`.
pub fn around(edges: &[Edge], table: &str) -> View {
    let follow = |up: bool| -> Vec<Hop> {
        let mut seen: BTreeSet<String> = BTreeSet::from([table.to_owned()]);
        let mut queue = VecDeque::from([(table.to_owned(), 0)]);
        let mut out = Vec::new();
        while let Some((at, depth)) = queue.pop_front() {
            for e in edges {
                let (here, next) = if up {
                    (&e.to, &e.from)
                } else {
                    (&e.from, &e.to)
                };
                if here == &at && !next.is_empty() && seen.insert(next.clone()) {
                    out.push(Hop {
                        name: next.clone(),
                        via: e.via.clone(),
                        depth: depth + 1,
                    });
                    queue.push_back((next.clone(), depth + 1));
                }
            }
        }
        out
    };
    let jobs = |f: &dyn Fn(&Edge) -> bool| -> Vec<String> {
        edges
            .iter()
            .filter(|e| f(e))
            .map(|e| e.via.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    View {
        writers: jobs(&|e| e.to == table),
        readers: jobs(&|e| e.from == table),
        upstream: follow(true),
        downstream: follow(false),
    }
}

/// The tables pipeline `name` reads and writes, by the file: `(table, writes)`.
pub fn tables_of(config: &Config, name: &str) -> Vec<(String, bool)> {
    let prefix = format!("{name}.");
    let mut out: BTreeMap<String, bool> = BTreeMap::new();
    for e in from_config(config)
        .into_iter()
        .filter(|e| e.via.starts_with(&prefix))
    {
        if !e.to.is_empty() {
            out.insert(e.to, true);
        }
        if !e.from.is_empty() && !e.from.starts_with("gs://") && e.from != "objects" {
            out.entry(e.from).or_insert(false);
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tables_lineage_is_followed_across_pipelines_both_ways() {
        let config = conveyor_core::config::parse_str(
            r#"
pipelines:
  - name: orders
    trigger: { object: { bucket: landing, pattern: "orders/{date}/*.csv" } }
    load: { table: "staging.orders", format: CSV }
    jobs:
      - name: clean
        engine: sql
        query: "SELECT * FROM staging.orders o JOIN ref.countries c ON o.c = c.id"
        destination: analytics.orders
  - name: report
    trigger: { after: [orders] }
    jobs:
      - name: daily
        engine: sql
        query: "SELECT day, SUM(x) FROM analytics.orders JOIN ref.days_{date_nodash} USING (day) GROUP BY day"
        destination: reports.daily
"#,
            "t.yaml",
        )
        .unwrap();
        let edges = from_config(&config);
        let v = around(&edges, "analytics.orders");
        assert_eq!(v.writers, ["orders.clean"]);
        assert_eq!(v.readers, ["report.daily"]);
        let up: Vec<(&str, usize)> = v
            .upstream
            .iter()
            .map(|h| (h.name.as_str(), h.depth))
            .collect();
        assert!(up.contains(&("staging.orders", 1)), "{up:?}");
        assert!(up.contains(&("ref.countries", 1)), "{up:?}");
        assert!(
            up.contains(&("gs://landing/orders/{date}/*.csv", 2)),
            "{up:?}"
        );
        let down: Vec<(&str, &str)> = v
            .downstream
            .iter()
            .map(|h| (h.name.as_str(), h.via.as_str()))
            .collect();
        assert_eq!(down, [("reports.daily", "report.daily")]);
        let daily = around(&edges, "reports.daily");
        assert!(
            daily
                .upstream
                .iter()
                .any(|h| h.name == "ref.days_{date_nodash}" && h.depth == 1),
            "a placeholder in a table name: {daily:?}"
        );
        assert_eq!(
            tables_of(&config, "orders"),
            [
                ("analytics.orders".to_owned(), true),
                ("ref.countries".to_owned(), false),
                ("staging.orders".to_owned(), true)
            ]
        );
    }

    #[test]
    fn openlineage_events_give_edges_with_the_names_as_run() {
        let dir = tempfile_dir();
        let path = dir.join("lineage.jsonl");
        std::fs::write(
            &path,
            concat!(
                r#"{"eventType":"COMPLETE","job":{"namespace":"dev","name":"orders.clean"},"inputs":[{"namespace":"sqlite","name":"staging.orders_20261120"}],"outputs":[{"namespace":"bigquery","name":"p.analytics.orders_20261120"}]}"#,
                "\nnot json\n"
            ),
        )
        .unwrap();
        let edges = from_events_file(&path);
        assert_eq!(
            edges,
            [Edge {
                from: "staging.orders_20261120".into(),
                to: "analytics.orders_20261120".into(),
                via: "orders.clean".into()
            }]
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("conveyor-console-lineage-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
