//! The console's HTML pages, rendered on the server with maud (values are escaped by it), with
//! a few lines of JS: relative times and an auto-refresh switch.

use std::collections::HashMap;

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
header nav { display: flex; gap: 14px; } header nav a { font-size: 14px; font-weight: 500; }
form.filters { display: flex; flex-wrap: wrap; gap: 8px 14px; align-items: end; margin: 8px 0 12px; }
form.filters label { display: flex; flex-direction: column; font-size: 12px; color: #52606d; }
form.filters input, form.filters select, form.act input, form.act select, form.act textarea { font: inherit; padding: 3px 6px; }
button { font: inherit; padding: 4px 12px; border: 1px solid #1f5fbf; background: #1f5fbf; color: #fff; border-radius: 4px; cursor: pointer; }
button:focus-visible, a:focus-visible { outline: 2px solid #1f5fbf; outline-offset: 2px; }
table.dates td.cell { padding: 2px; text-align: center; } table.dates th[scope=row] { text-transform: none; letter-spacing: 0; font-size: 13px; white-space: nowrap; } table.dates th.date { font-size: 11px; text-transform: none; letter-spacing: 0; writing-mode: vertical-rl; transform: rotate(180deg); padding: 4px 2px; }
table.dates td.cell a, table.dates td.cell span { display: inline-block; width: 18px; height: 18px; border-radius: 3px; color: #fff; font-size: 10px; line-height: 18px; text-decoration: none; }
table.dates td.cell span.none { background: #f4f6f8; border: 1px dashed #c3cad2; width: 16px; height: 16px; }
.state { display: inline-block; padding: 0 6px; border-radius: 9px; font-size: 12px; border: 1px solid #52606d; color: #1f2933; margin-right: 4px; }
.state.late { border-color: #b42323; color: #b42323; } .state.paused { border-color: #a35200; color: #8a4500; }
.pager { margin: 10px 0; }
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
    var future = s < 0;
    s = Math.abs(s);
    var span = s < 60 ? s + ' s' : s < 3600 ? Math.round(s / 60) + ' min'
      : s < 86400 ? Math.round(s / 3600) + ' h' : Math.round(s / 86400) + ' d';
    return future ? 'in ' + span : span + ' ago';
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
                    nav { a href="/runs" { "Runs" } a href="/grid" { "Grid" } }
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
                        @if r.failed() {
                            td.error { (clip(r.error.as_deref().unwrap_or(""), 160)) }
                        } @else {
                            // A note on a run that did not fail (a skipped job, an attempt
                            // that failed before its retry succeeded) is no error.
                            td.muted { (clip(r.error.as_deref().unwrap_or(""), 160)) }
                        }
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

/// The states of a pipeline as badges: inactive, paused, running now, late; and its next run.
fn state_cell(state: Option<&crate::runs::PipelineState>) -> Markup {
    html! {
        @if let Some(st) = state {
            @if !st.active { span.state title="active: false in the pipeline file" { "inactive" } }
            @if let Some(p) = &st.paused {
                span.state.paused title={"paused by " (p.by) " " (p.at.format("%Y-%m-%d %H:%M UTC")) ": " (p.reason)} { "paused" }
            }
            @if st.running > 0 { span.state { "running now: " (st.running) } }
            @if let Some((d, by)) = &st.late {
                span.state.late title={"the run of " (d) " had not succeeded by " (by.format("%H:%M UTC"))} { "late: " (d) }
            }
            @if let Some(n) = &st.next_run { span.muted { "next " (when(*n)) } }
        }
    }
}

/// The home page: every pipeline's graph, its state and a grid of its recent runs, the recent
/// runs and the recent failures.
pub(crate) fn overview(
    title: &str,
    graph: Option<&Graph>,
    by_pipeline: &[(String, Vec<RunSummary>)],
    states: &[crate::runs::PipelineState],
    recent: &[RunSummary],
    failures: &[RunSummary],
    tables: &[TableRef],
) -> Markup {
    let now = Utc::now();
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
            p { a href="/grid" { "Grid by run date" } " · " a href="/runs" { "All runs, filtered" } }
            table.grid-table {
                thead { tr { th { "pipeline" } th { "state" } th { "recent runs (newest right)" } th { "last" } } }
                tbody {
                    @for (name, runs) in by_pipeline {
                        @let runs: Vec<&RunSummary> = runs.iter().collect();
                        tr data-pipeline=(name) {
                            td { a href={"/pipelines/" (name)} { (name) } }
                            td.states { (state_cell(states.iter().find(|s| &s.pipeline == name))) }
                            td { @if runs.is_empty() { span.muted { "no runs yet" } } @else { (grid(&runs)) } }
                            td { @if let Some(r) = runs.first() { (status(&r.status)) " " (when(r.started)) } }
                        }
                    }
                }
            }
            @if !failures.is_empty() {
                h2 { "Recent failures" }
                (runs_table(failures, now, true))
            }
            h2 { "Recent runs" }
            @if recent.is_empty() {
                p.muted { "The run log (" (tables.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")) ") has no runs yet." }
            } @else {
                (runs_table(recent, now, true))
                p.pager { a href="/runs" { "More runs →" } }
            }
        },
    )
}

/// The filter form of `/runs`, as filled in.
pub(crate) struct FilterForm {
    pub(crate) pipelines: Vec<String>,
    pub(crate) pipeline: String,
    pub(crate) status: String,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) paged: bool,
}

/// `/runs`: a page of runs by the filters, and the link to the next page.
pub(crate) fn runs_list(
    title: &str,
    form: &FilterForm,
    runs: &[RunSummary],
    next: Option<&str>,
) -> Markup {
    let now = Utc::now();
    layout(
        title,
        "Runs",
        html! {
            h1 { "Runs" }
            form.filters method="get" action="/runs" {
                label { "pipeline"
                    select name="pipeline" {
                        option value="" { "any" }
                        @for p in &form.pipelines { option value=(p) selected[*p == form.pipeline] { (p) } }
                        @if !form.pipeline.is_empty() && !form.pipelines.contains(&form.pipeline) {
                            option value=(form.pipeline) selected { (form.pipeline) }
                        }
                    }
                }
                label { "status"
                    select name="status" {
                        option value="" { "any" }
                        @for st in crate::STATES { option value=(st) selected[st == form.status] { (st) } }
                    }
                }
                label { "run date from" input type="date" name="from" value=(form.from); }
                label { "to" input type="date" name="to" value=(form.to); }
                button type="submit" { "Filter" }
                @if form.paged { a href="/runs" { "Newest" } }
            }
            @if runs.is_empty() {
                p.muted { "No run matches." }
            } @else {
                (runs_table(runs, now, true))
            }
            @if let Some(n) = next { p.pager { a rel="next" href=(n) { "Older runs →" } } }
        },
    )
}

fn grid_cells(
    cells: &[Option<crate::runs::GridCell>],
    dates: &[chrono::NaiveDate],
    label: &str,
) -> Markup {
    html! {
        @for (c, d) in cells.iter().zip(dates) {
            td.cell {
                @if let Some(c) = c {
                    a href={"/runs/" (c.run_id)} style={"background:" (svg::colour(&c.status))}
                        title={(label) " · " (d) " · " (c.status) @if c.runs > 1 { " · " (c.runs) " runs (the newest shown)" }}
                        aria-label={(label) " " (d) " " (c.status)} data-date=(d) data-status=(c.status) {
                        @if c.runs > 1 { (c.runs) }
                    }
                } @else {
                    span.none title={(label) " · " (d) " · no run"} {}
                }
            }
        }
    }
}

/// `/grid`: pipelines (or one pipeline's tasks) by run date.
pub(crate) fn date_grid(
    title: &str,
    pipeline: Option<&str>,
    grid: &crate::runs::Grid,
    dates: &[chrono::NaiveDate],
    truncated: bool,
) -> Markup {
    let heading = match pipeline {
        Some(p) => format!("Grid of {p}"),
        None => "Grid".to_owned(),
    };
    layout(
        title,
        &heading,
        html! {
            h1 { (heading) }
            p.muted { "Each column is a run date (the date a run is for), newest right; each cell the newest run of that date." }
            @if truncated { p.muted { "Only the newest " (crate::GRID_RUNS) " runs of these dates are shown." } }
            div.scroll tabindex="0" role="region" aria-label="runs by run date (scrolls sideways)" {
                table.dates {
                    thead { tr {
                        th { @if pipeline.is_some() { "task" } @else { "pipeline" } }
                        @for d in dates { th.date scope="col" { (d) } }
                    } }
                    tbody {
                        @for row in &grid.rows {
                            tr data-row=(row.label) {
                                th scope="row" {
                                    @if pipeline.is_some() { (row.label) }
                                    @else { a href={"/grid?pipeline=" (row.label)} { (row.label) } }
                                }
                                (grid_cells(&row.cells, dates, &row.label))
                            }
                        }
                    }
                }
            }
            @if let Some(p) = pipeline { p { a href={"/pipelines/" (p)} { "Pipeline " (p) } " · " a href="/grid" { "All pipelines" } } }
        },
    )
}

/// A table's name in a path.
fn table_href(name: &str) -> String {
    format!(
        "/tables/{}",
        form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>()
    )
}

/// `/tables/{name}`: who writes and reads it, what it comes from and what comes from it.
pub(crate) fn table(title: &str, name: &str, view: &crate::lineage::View) -> Markup {
    let hops = |hops: &[crate::lineage::Hop]| {
        html! {
            @if hops.is_empty() { p.muted { "none" } } @else {
                table.lineage {
                    thead { tr { th { "table or objects" } th { "via" } th.num { "steps" } } }
                    tbody {
                        @for h in hops {
                            tr data-table=(h.name) {
                                td { @if h.name.starts_with("gs://") { code { (h.name) } } @else { a href=(table_href(&h.name)) { code { (h.name) } } } }
                                td { @let p = h.via.split('.').next().unwrap_or(""); a href={"/pipelines/" (p)} { (h.via) } }
                                td.num { (h.depth) }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(
        title,
        name,
        html! {
            h1 { "Table " code { (name) } }
            dl.facts {
                dt { "written by" } dd { (view.writers.join(", ")) @if view.writers.is_empty() { span.muted { "no pipeline" } } }
                dt { "read by" } dd { (view.readers.join(", ")) @if view.readers.is_empty() { span.muted { "no pipeline" } } }
            }
            h2 { "Upstream" }
            (hops(&view.upstream))
            h2 { "Downstream" }
            (hops(&view.downstream))
        },
    )
}

/// One pipeline: its state, its graph, the tables it touches and its runs.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pipeline(
    title: &str,
    name: &str,
    description: Option<&str>,
    graph: Option<&Graph>,
    runs: &[RunSummary],
    state: Option<&crate::runs::PipelineState>,
    tables: &[(String, bool)],
    more: Option<&str>,
) -> Markup {
    let now = Utc::now();
    let recent: Vec<&RunSummary> = runs.iter().take(60).collect();
    layout(
        title,
        name,
        html! {
            h1 { "Pipeline " (name) }
            @if let Some(d) = description { p.muted { (d) } }
            p.states { (state_cell(state)) " " a href={"/grid?pipeline=" (name)} { "Grid by run date" } }
            @if let Some(g) = graph { div.scroll tabindex="0" role="region" aria-label="pipeline graph (scrolls sideways)" { (svg::graph(g, &HashMap::new(), false)) } }
            @if !tables.is_empty() {
                h2 { "Tables" }
                p { @for (t, writes) in tables {
                    a href=(table_href(t)) { code { (t) } } " " span.muted { @if *writes { "(written)" } @else { "(read)" } } " · "
                } }
            }
            h2 { "Runs" }
            @if runs.is_empty() {
                p.muted { "No runs yet." }
            } @else {
                (grid(&recent))
                (runs_table(runs, now, false))
                @if let Some(m) = more { p.pager { a rel="next" href=(m) { "Older runs →" } } }
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
    jobs: &[String],
) -> Markup {
    let now = Utc::now();
    let operated = operator_actions(rows);
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
            @if !operated.is_empty() {
                h2 { "Operator actions" }
                ul.operated { @for o in &operated { li { (o) } } }
            }
            @if let Some(e) = &summary.error {
                h2 { "Error" }
                div.error #error { (e) }
            }
            @if !jobs.is_empty() {
                p.actions {
                    a href={"/runs/" (summary.run_id) "/rerun"} { "Re-run from the failure…" } " · "
                    a href={"/runs/" (summary.run_id) "/mark-success"} { "Mark a job succeeded…" }
                }
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

/// What operators did to a run, from its rows' values (`rerun_by`, `marked_by`).
fn operator_actions(rows: &[RunLogRow]) -> Vec<String> {
    let mut rows: Vec<&RunLogRow> = rows.iter().collect();
    rows.sort_by_key(|r| r.td_timestamp);
    let mut out: Vec<String> = Vec::new();
    for r in rows {
        let Ok(d) = serde_json::from_str::<serde_json::Value>(&r.detail) else {
            continue;
        };
        let vars = &d["vars"];
        let line = if let Some(by) = vars["marked_by"].as_str() {
            Some(format!(
                "{}: job {} marked SUCCEEDED by {by} ({})",
                r.td_timestamp.format("%Y-%m-%d %H:%M:%S UTC"),
                r.job.as_deref().unwrap_or("?"),
                vars["reason"].as_str().unwrap_or("")
            ))
        } else {
            vars["rerun_by"].as_str().map(|by| {
                format!(
                    "re-run {} started by {by}",
                    vars["rerun"].as_str().unwrap_or("")
                )
            })
        };
        if let Some(l) = line
            && !out.contains(&l)
        {
            out.push(l);
        }
    }
    out
}

/// Which action a confirmation page confirms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Rerun,
    MarkSuccess,
}

/// The confirmation of an action on a run: what it will do, and the form that does it.
pub(crate) fn confirm(
    title: &str,
    summary: &RunSummary,
    jobs: &[String],
    action: Action,
    job: Option<&str>,
    who: &str,
) -> Markup {
    let (heading, path) = match action {
        Action::Rerun => ("Re-run", "rerun"),
        Action::MarkSuccess => ("Mark a job succeeded", "mark-success"),
    };
    layout(
        title,
        heading,
        html! {
            h1 { (heading) ": run " code { (summary.run_id) } " " (status(&summary.status)) }
            dl.facts {
                dt { "pipeline" } dd { (summary.pipeline.as_deref().unwrap_or("")) }
                dt { "run date" } dd { (summary.run_date.as_deref().unwrap_or("—")) }
                dt { "as" } dd { (who) }
            }
            form.act method="post" action={"/runs/" (summary.run_id) "/" (path)} {
                input type="hidden" name="confirm" value="yes";
                @match action {
                    Action::Rerun => {
                        p { "Starts a new attempt of the run's failed job (or the job chosen) and of every job after it, keeping the run date and the jobs that succeeded. Recorded in the run log as started by " (who) "." }
                        label { "from job "
                            select name="from" {
                                option value="" { "the failed job" }
                                @for j in jobs { option value=(j) selected[Some(j.as_str()) == job] { (j) } }
                            }
                        }
                    }
                    Action::MarkSuccess => {
                        p { "Records that the job is to count as succeeded: the jobs after it start, or the run ends SUCCEEDED. Recorded in the run log with who and why." }
                        label { "job "
                            select name="job" required {
                                @for j in jobs { option value=(j) selected[Some(j.as_str()) == job] { (j) } }
                            }
                        }
                        " "
                        label { "reason " input type="text" name="reason" required size="40"; }
                    }
                }
                p { button type="submit" { "Confirm: " (heading) } " " a href={"/runs/" (summary.run_id)} { "Cancel" } }
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
