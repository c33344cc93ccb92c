//! The console's HTML pages, rendered on the server with maud (values are escaped by it), with
//! a few lines of JS: relative times and an auto-refresh switch.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use conveyor_core::names::TableRef;
use conveyor_core::ports::RunLogRow;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::graph::Graph;
use crate::runs::{RunSummary, Task, human_duration};
use crate::svg;

pub(crate) const CSS: &str = r#"
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1f2933; background: #fff; }
header { background: #1f2933; color: #fff; padding: 10px 24px; display: flex; gap: 24px; align-items: baseline; }
header a { color: #fff; text-decoration: none; font-weight: 600; font-size: 17px; }
header .where { color: #b8c2cc; font-size: 13px; }
header label { margin-left: auto; font-size: 13px; color: #b8c2cc; }
main { padding: 12px 24px 40px; }
h1 { font-size: 20px; margin: 12px 0 4px; } h2 { font-size: 16px; margin: 22px 0 8px; }
a { color: #1f5fbf; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #e4e7eb; vertical-align: top; }
th { font-weight: 600; color: #52606d; font-size: 12px; text-transform: uppercase; letter-spacing: .03em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.status { display: inline-block; padding: 0 7px; border-radius: 9px; color: #fff; font-size: 12px; font-weight: 600; }
.grid { display: flex; gap: 3px; flex-wrap: wrap; }
.grid a { display: block; width: 14px; height: 14px; border-radius: 3px; }
.error { background: #fdecec; border-left: 4px solid #b42323; padding: 8px 12px; white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 13px; margin: 8px 0; }
td.error { background: none; border-left: 0; padding: 4px 8px; margin: 0; white-space: normal; color: #b42323; }
.muted { color: #616e7c; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 8px 0; }
.facts dt { color: #52606d; } .facts dd { margin: 0; }
svg text { font: 12px system-ui, sans-serif; fill: #1f2933; }
svg text.pipeline { font-weight: 600; fill: #1f5fbf; }
svg text.label { font-weight: 600; } svg text.detail { fill: #52606d; font-size: 11px; }
svg .edge { stroke: #7a8591; stroke-width: 1.5; } svg .edge.after { stroke-dasharray: 5 3; }
svg .tick { stroke: #e4e7eb; } svg text.axis { fill: #616e7c; font-size: 11px; }
.scroll { overflow-x: auto; }
.scroll:focus-visible { outline: 2px solid #1f5fbf; outline-offset: 2px; }
@media (max-width: 640px) {
  header { flex-wrap: wrap; gap: 6px 16px; padding: 8px 12px; }
  header label { margin-left: 0; }
  main { padding: 8px 12px 32px; }
  table { display: block; overflow-x: auto; }
  .facts { grid-template-columns: 1fr; } .facts dd { margin: 0 0 6px; }
}
code { font-size: 12px; }
"#;

const JS: &str = r#"
(function () {
  function ago(t) {
    var s = Math.round((Date.now() - t) / 1000);
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.round(s / 60) + ' min ago';
    if (s < 86400) return Math.round(s / 3600) + ' h ago';
    return Math.round(s / 86400) + ' d ago';
  }
  document.querySelectorAll('time[datetime]').forEach(function (el) {
    var t = Date.parse(el.getAttribute('datetime'));
    if (!isNaN(t)) { el.title = el.textContent; el.textContent = ago(t); }
  });
  var box = document.getElementById('refresh');
  if (box) {
    box.checked = localStorage.getItem('conveyor-refresh') === '1';
    box.addEventListener('change', function () { localStorage.setItem('conveyor-refresh', box.checked ? '1' : '0'); });
    setInterval(function () { if (box.checked) location.reload(); }, 10000);
  }
})();
"#;

fn layout(title: &str, heading: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (heading) " — " (title) }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    a href="/" { "Conveyor" }
                    span.where { (title) }
                    label { input #refresh type="checkbox"; " refresh every 10 s" }
                }
                main { (body) }
                script { (PreEscaped(JS)) }
            }
        }
    }
}

fn when(t: DateTime<Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S UTC")) } }
}

fn status(s: &str) -> Markup {
    html! { span.status style={"background:" (svg::colour(s))} { (s) } }
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(n).collect();
        out.push('…');
        out
    }
}

fn runs_table(runs: &[RunSummary], now: DateTime<Utc>, with_pipeline: bool) -> Markup {
    html! {
        table.runs {
            thead { tr {
                @if with_pipeline { th { "pipeline" } }
                th { "run" } th { "status" } th { "started" } th { "duration" } th { "error" }
            } }
            tbody {
                @for r in runs {
                    tr data-run=(r.run_id) data-status=(r.status) {
                        @if with_pipeline {
                            td { @if let Some(p) = &r.pipeline { a href={"/pipelines/" (p)} { (p) } } }
                        }
                        td { a href={"/runs/" (r.run_id)} { code { (r.run_id) } } }
                        td { (status(&r.status)) }
                        td { (when(r.started)) }
                        td.num { (human_duration(r.duration(now))) }
                        td.error { (clip(r.error.as_deref().unwrap_or(""), 160)) }
                    }
                }
            }
        }
    }
}

/// The squares of a pipeline's recent runs, oldest left.
fn grid(runs: &[&RunSummary]) -> Markup {
    html! {
        div.grid {
            @for r in runs.iter().rev() {
                a href={"/runs/" (r.run_id)} style={"background:" (svg::colour(&r.status))}
                    title={(r.status) " · " (r.started.format("%Y-%m-%d %H:%M:%S")) " · " (r.run_id)} {}
            }
        }
    }
}

/// The home page: every pipeline's graph, a grid of each pipeline's recent runs, the recent
/// runs and the recent failures.
pub(crate) fn overview(
    title: &str,
    graph: Option<&Graph>,
    runs: &[RunSummary],
    tables: &[TableRef],
) -> Markup {
    let now = Utc::now();
    let mut by_pipeline: BTreeMap<String, Vec<&RunSummary>> = BTreeMap::new();
    for r in runs {
        let p = r.pipeline.clone().unwrap_or_else(|| "(none)".to_owned());
        by_pipeline.entry(p).or_default().push(r);
    }
    // The file's order first, then pipelines only the run log knows.
    let mut names: Vec<String> = graph
        .map(|g| g.pipelines().into_iter().map(str::to_owned).collect())
        .unwrap_or_default();
    for p in by_pipeline.keys() {
        if !names.contains(p) {
            names.push(p.clone());
        }
    }
    let failures: Vec<RunSummary> = runs
        .iter()
        .filter(|r| r.failed())
        .take(10)
        .cloned()
        .collect();
    let recent: Vec<RunSummary> = runs.iter().take(25).cloned().collect();
    layout(
        title,
        "Pipelines",
        html! {
            h1 { "Pipelines" }
            @if let Some(g) = graph {
                div.scroll tabindex="0" role="region" aria-label="pipeline graphs (scrolls sideways)" { (svg::graph(g, &HashMap::new(), true)) }
            } @else {
                p.muted { "No pipeline file: the graph is not drawn." }
            }
            h2 { "Runs by pipeline" }
            table.grid-table {
                thead { tr { th { "pipeline" } th { "recent runs (newest right)" } th { "last" } } }
                tbody {
                    @for name in &names {
                        @let runs = by_pipeline.get(name).map(Vec::as_slice).unwrap_or(&[]);
                        tr data-pipeline=(name) {
                            td { a href={"/pipelines/" (name)} { (name) } }
                            td { @if runs.is_empty() { span.muted { "no runs yet" } } @else { (grid(&runs[..runs.len().min(40)])) } }
                            td { @if let Some(r) = runs.first() { (status(&r.status)) " " (when(r.started)) } }
                        }
                    }
                }
            }
            @if !failures.is_empty() {
                h2 { "Recent failures" }
                (runs_table(&failures, now, true))
            }
            h2 { "Recent runs" }
            @if recent.is_empty() {
                p.muted { "The run log (" (tables.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")) ") has no runs yet." }
            } @else {
                (runs_table(&recent, now, true))
            }
        },
    )
}

/// One pipeline: its graph and its runs.
pub(crate) fn pipeline(
    title: &str,
    name: &str,
    description: Option<&str>,
    graph: Option<&Graph>,
    runs: &[RunSummary],
) -> Markup {
    let now = Utc::now();
    let recent: Vec<&RunSummary> = runs.iter().take(60).collect();
    layout(
        title,
        name,
        html! {
            h1 { "Pipeline " (name) }
            @if let Some(d) = description { p.muted { (d) } }
            @if let Some(g) = graph { div.scroll tabindex="0" role="region" aria-label="pipeline graph (scrolls sideways)" { (svg::graph(g, &HashMap::new(), false)) } }
            h2 { "Runs" }
            @if runs.is_empty() {
                p.muted { "No runs yet." }
            } @else {
                (grid(&recent))
                (runs_table(&runs[..runs.len().min(100)], now, false))
            }
        },
    )
}

/// One run: what it is, its error, its timeline, its graph coloured by task, what it
/// touched, and every transition.
pub(crate) fn run(
    title: &str,
    summary: &RunSummary,
    tasks: &[Task],
    graph: Option<&Graph>,
    rows: &[RunLogRow],
) -> Markup {
    let now = Utc::now();
    let task_status: HashMap<String, String> = {
        // The newest attempt of each node decides its colour.
        let mut m: HashMap<String, (u32, String)> = HashMap::new();
        for t in tasks {
            let e = m.entry(t.node.clone()).or_insert((0, String::new()));
            if t.attempt >= e.0 {
                *e = (t.attempt, t.status.clone());
            }
        }
        let mut out: HashMap<String, String> = m.into_iter().map(|(k, (_, s))| (k, s)).collect();
        out.insert("trigger".to_owned(), "SUCCEEDED".to_owned());
        out
    };
    let mut events: Vec<&RunLogRow> = rows.iter().collect();
    events.sort_by_key(|r| r.td_timestamp);
    let pipeline = summary.pipeline.clone().unwrap_or_default();
    layout(
        title,
        &format!("run {}", summary.run_id),
        html! {
            h1 { "Run " code { (summary.run_id) } " " (status(&summary.status)) }
            dl.facts {
                dt { "pipeline" } dd { @if summary.pipeline.is_some() { a href={"/pipelines/" (pipeline)} { (pipeline) } } @else { span.muted { "none" } } }
                dt { "run date" } dd { (summary.run_date.as_deref().unwrap_or("—")) }
                dt { "started" } dd { (when(summary.started)) }
                dt { "duration" } dd { (human_duration(summary.duration(now))) @if summary.finished.is_none() { " (still open)" } }
                dt { "rows loaded" } dd { (summary.rows_loaded) }
                dt { "transitions" } dd { (summary.events) }
            }
            @if let Some(e) = &summary.error {
                h2 { "Error" }
                div.error #error { (e) }
            }
            h2 { "Timeline" }
            div.scroll tabindex="0" role="region" aria-label="run timeline (scrolls sideways)" { (svg::timeline(tasks, now)) }
            @if tasks.iter().any(|t| t.log.is_some() || !t.links.is_empty()) {
                h2 { "Task logs" }
                @for t in tasks.iter().filter(|t| t.log.is_some() || !t.links.is_empty()) {
                    details.task-log open[t.error.is_some()] {
                        summary { (t.label) " " (status(&t.status)) @if let Some(e) = &t.error { " " span.error { (e) } } }
                        @for l in &t.links { a href=(l.url) rel="noopener" { (l.label) } " " }
                        @if let Some(log) = &t.log {
                            @if !log.stderr.is_empty() { h3 { "stderr (end)" } pre.log { (log.stderr) } }
                            @if !log.stdout.is_empty() { h3 { "stdout (end)" } pre.log { (log.stdout) } }
                        }
                    }
                }
            }
            @if let Some(g) = graph {
                h2 { "Graph" }
                div.scroll tabindex="0" role="region" aria-label="run graph (scrolls sideways)" { (svg::graph(g, &task_status, false)) }
            }
            h2 { "Objects and tables" }
            table.touched {
                thead { tr { th { "kind" } th { "name" } } }
                tbody {
                    @for o in &summary.objects { tr { td { "object read" } td { code { (o) } } } }
                    @for t in &summary.tables { tr { td { "table written" } td { code { (t) } } } }
                    @for j in &summary.jobs { tr { td { "job" } td { code { (j) } } } }
                    @if summary.objects.is_empty() && summary.tables.is_empty() && summary.jobs.is_empty() {
                        tr { td colspan="2" { span.muted { "none" } } }
                    }
                }
            }
            h2 { "Transitions" }
            table.events {
                thead { tr { th { "time" } th { "step" } th { "attempt" } th { "status" } th { "job" } th.num { "rows" } th { "error" } } }
                tbody {
                    @for r in &events {
                        tr {
                            td { (r.td_timestamp.format("%H:%M:%S%.3f")) }
                            td { (r.step) @if let Some(j) = &r.job { " · " (j) } }
                            td.num { (r.attempt) }
                            td { (status(&r.status)) }
                            td { code { (r.dataproc_job_id.as_deref().or(r.job_id.as_deref()).unwrap_or("")) } }
                            td.num { (r.rows_loaded.map(|n| n.to_string()).unwrap_or_default()) }
                            td.error { (r.error.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        },
    )
}

/// A page that says what went wrong.
pub(crate) fn problem(heading: &str, what: &str) -> Markup {
    layout(
        "Conveyor",
        heading,
        html! {
            h1 { (heading) }
            div.error { (what) }
            p { a href="/" { "Back to the pipelines" } }
        },
    )
}
