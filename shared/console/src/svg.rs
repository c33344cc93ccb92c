//! The console's pictures, as inline SVG: the pipeline graph and a run's timeline (Gantt).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use maud::{Markup, html};

use crate::graph::Graph;
use crate::runs::{Task, human_duration};

/// The colour of a status: a status badge's background under white text, so each holds
/// WCAG AA's 4.5:1 contrast against white.
pub fn colour(status: &str) -> &'static str {
    match status {
        "SUCCEEDED" => "#1f7a3d",
        "FAILED" | "TIMED_OUT" => "#b42323",
        "REJECTED" => "#a35200",
        "SUBMITTED" | "RUNNING" | "RETRYING" => "#1f5fbf",
        _ => "#616e7c",
    }
}

const NODE_W: f64 = 168.0;
const NODE_H: f64 = 44.0;
const GAP_X: f64 = 36.0;
const GAP_Y: f64 = 18.0;
const GUTTER: f64 = 150.0;

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// `graph` drawn one pipeline a row, each node in the column of its depth; `status` colours
/// nodes by task (a run's page), else they are drawn neutral.
pub(crate) fn graph(
    graph: &Graph,
    status: &HashMap<String, String>,
    link_pipelines: bool,
) -> Markup {
    let rows = graph.pipelines();
    let row_of: HashMap<&str, usize> = rows.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    // Depth of each node: the longest path to it, across pipelines too, so a pipeline that
    // starts after others is drawn to the right of their ends.
    let mut depth: HashMap<&str, usize> = graph.nodes.iter().map(|n| (n.id.as_str(), 0)).collect();
    let pipeline_of: HashMap<&str, &str> = graph
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.pipeline.as_str()))
        .collect();
    for _ in 0..graph.nodes.len() {
        let mut changed = false;
        for e in &graph.edges {
            let d = depth.get(e.from.as_str()).copied().unwrap_or(0) + 1;
            if let Some(slot) = depth.get_mut(e.to.as_str())
                && *slot < d
            {
                *slot = d;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    // Nodes of one pipeline in one column (branches) go on lanes, one under the other; a
    // pipeline takes as many lanes as its widest column.
    let mut lane: HashMap<&str, usize> = HashMap::new();
    let mut lanes = vec![1_usize; rows.len()];
    {
        let mut used: HashMap<(usize, usize), usize> = HashMap::new();
        for n in &graph.nodes {
            let (Some(row), Some(col)) =
                (row_of.get(n.pipeline.as_str()), depth.get(n.id.as_str()))
            else {
                continue;
            };
            let k = used.entry((*row, *col)).or_insert(0);
            lane.insert(n.id.as_str(), *k);
            *k += 1;
            lanes[*row] = lanes[*row].max(*k);
        }
    }
    // The first lane's top of each pipeline.
    let mut top = Vec::with_capacity(rows.len());
    let mut y = 10.0;
    for l in &lanes {
        top.push(y);
        y += *l as f64 * (NODE_H + GAP_Y);
    }
    let pos = |id: &str| -> Option<(f64, f64)> {
        let row = *row_of.get(pipeline_of.get(id)?)?;
        let col = *depth.get(id)?;
        let l = lane.get(id).copied().unwrap_or(0);
        Some((
            GUTTER + col as f64 * (NODE_W + GAP_X),
            top[row] + l as f64 * (NODE_H + GAP_Y),
        ))
    };
    let columns = depth.values().copied().max().unwrap_or(0) + 1;
    let width = GUTTER + columns as f64 * (NODE_W + GAP_X);
    let height = 10.0 + y;
    html! {
        svg.graph xmlns="http://www.w3.org/2000/svg" width=(width) height=(height)
            viewBox={"0 0 " (width) " " (height)} role="img" aria-label="pipeline graph" {
            defs {
                marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7"
                    markerHeight="7" orient="auto-start-reverse" {
                    path d="M 0 0 L 10 5 L 0 10 z" fill="#7a8591" {}
                }
            }
            @for (i, p) in rows.iter().enumerate() {
                @let y = top[i] + NODE_H / 2.0 + 5.0;
                @if link_pipelines {
                    a href={"/pipelines/" (p)} {
                        text.pipeline x="8" y=(y) { (clip(p, 20)) }
                    }
                } @else {
                    text.pipeline x="8" y=(y) { (clip(p, 20)) }
                }
            }
            @for e in &graph.edges {
                @if let (Some((x1, y1)), Some((x2, y2))) = (pos(&e.from), pos(&e.to)) {
                    @let across = pipeline_of.get(e.from.as_str()) != pipeline_of.get(e.to.as_str());
                    @if (y1 - y2).abs() < 0.5 {
                        line.edge x1=(x1 + NODE_W) y1=(y1 + NODE_H / 2.0) x2=(x2) y2=(y2 + NODE_H / 2.0)
                            marker-end="url(#arrow)" {}
                    } @else if !across {
                        path.edge d={"M " (x1 + NODE_W) " " (y1 + NODE_H / 2.0) " C " (x1 + NODE_W + GAP_X) " " (y1 + NODE_H / 2.0) ", " (x2 - GAP_X) " " (y2 + NODE_H / 2.0) ", " (x2) " " (y2 + NODE_H / 2.0)}
                            fill="none" marker-end="url(#arrow)" {}
                    } @else {
                        path.edge.after d={"M " (x1 + NODE_W) " " (y1 + NODE_H / 2.0) " C " (x1 + NODE_W + GAP_X) " " (y1 + NODE_H / 2.0) ", " (x2 - GAP_X) " " (y2 + NODE_H / 2.0) ", " (x2) " " (y2 + NODE_H / 2.0)}
                            fill="none" marker-end="url(#arrow)" {}
                    }
                }
            }
            @for n in &graph.nodes {
                @if let Some((x, y)) = pos(&n.id) {
                    @let st = status.get(&n.task);
                    g.node data-node=(n.id) data-status=[st] {
                        title { (n.label) ": " (n.detail) @if let Some(s) = st { " — " (s) } }
                        rect x=(x) y=(y) width=(NODE_W) height=(NODE_H) rx="7"
                            fill=(st.map_or("#f4f6f8", |s| colour(s)))
                            fill-opacity=(if st.is_some() { "0.22" } else { "1" })
                            stroke=(st.map_or("#7a8591", |s| colour(s))) stroke-width="1.5" {}
                        text.label x=(x + 10.0) y=(y + 18.0) { (clip(&n.label, 22)) }
                        text.detail x=(x + 10.0) y=(y + 35.0) { (clip(&n.detail, 27)) }
                    }
                }
            }
        }
    }
}

/// A run's timeline: one bar per task on a shared time axis, from the run-log timestamps.
pub(crate) fn timeline(tasks: &[Task], now: DateTime<Utc>) -> Markup {
    const LABEL: f64 = 170.0;
    const PLOT: f64 = 640.0;
    const ROW: f64 = 26.0;
    let t0 = tasks.iter().map(|t| t.start).min().unwrap_or(now);
    let t1 = tasks
        .iter()
        .map(|t| t.end.unwrap_or(now))
        .max()
        .unwrap_or(now)
        .max(t0 + chrono::Duration::milliseconds(1));
    let span = (t1 - t0).num_milliseconds().max(1) as f64;
    let x = |t: DateTime<Utc>| LABEL + (t - t0).num_milliseconds() as f64 / span * PLOT;
    let height = 30.0 + tasks.len() as f64 * ROW;
    let ticks: BTreeMap<usize, String> = (0..=4)
        .map(|i| {
            let ms = (span * i as f64 / 4.0) as i64;
            (i, human_duration(chrono::Duration::milliseconds(ms)))
        })
        .collect();
    html! {
        svg.timeline xmlns="http://www.w3.org/2000/svg" width=(LABEL + PLOT + 50.0) height=(height)
            viewBox={"0 0 " (LABEL + PLOT + 50.0) " " (height)} role="img" aria-label="run timeline" {
            @for (i, label) in &ticks {
                @let tx = LABEL + PLOT * *i as f64 / 4.0;
                line.tick x1=(tx) y1="0" x2=(tx) y2=(height - 18.0) {}
                text.axis x=(tx) y=(height - 4.0) text-anchor="middle" { "+" (label) }
            }
            @for (i, t) in tasks.iter().enumerate() {
                @let y = 4.0 + i as f64 * ROW;
                @let x1 = x(t.start);
                @let w = (x(t.end.unwrap_or(now)) - x1).max(3.0);
                g.task data-task=(t.label) data-status=(t.status) {
                    title {
                        (t.label) ": " (t.status) ", " (t.start.format("%H:%M:%S%.3f")) " → "
                        @if let Some(e) = t.end { (e.format("%H:%M:%S%.3f")) " (" (human_duration(e - t.start)) ")" } @else { "running" }
                        @if let Some(e) = &t.error { "\n" (e) }
                    }
                    text.label x="4" y=(y + 16.0) { (clip(&t.label, 24)) }
                    rect x=(x1) y=(y + 3.0) width=(w) height=(ROW - 8.0) rx="3" fill=(colour(&t.status)) {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::colour;

    /// WCAG 2's contrast ratio of two `#rrggbb` colours.
    fn contrast(a: &str, b: &str) -> f64 {
        fn luminance(hex: &str) -> f64 {
            let channel = |i: usize| {
                let c = f64::from(u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")) / 255.0;
                if c <= 0.039_28 {
                    c / 12.92
                } else {
                    ((c + 0.055) / 1.055).powf(2.4)
                }
            };
            0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5)
        }
        let (x, y) = (luminance(a), luminance(b));
        (x.max(y) + 0.05) / (x.min(y) + 0.05)
    }

    #[test]
    fn contrast_is_measured_as_wcag_does() {
        assert!((contrast("#000000", "#ffffff") - 21.0).abs() < 1e-9);
        // The badge colours before: 2.56:1 (grey) to 4.38:1 (red), as the issue measured.
        assert!((contrast("#9aa3ad", "#ffffff") - 2.56).abs() < 0.01);
        assert!((contrast("#d64545", "#ffffff") - 4.38).abs() < 0.01);
    }

    #[test]
    fn every_status_badge_holds_aa_contrast_under_white_text() {
        for status in [
            "SUCCEEDED",
            "FAILED",
            "TIMED_OUT",
            "REJECTED",
            "SUBMITTED",
            "RUNNING",
            "RETRYING",
            "SUPERSEDED",
            "SKIPPED",
            "QUEUED",
            "PAUSED",
            "MISSED",
            "UNKNOWN",
        ] {
            let ratio = contrast(colour(status), "#ffffff");
            assert!(ratio >= 4.5, "{status}: {} is {ratio:.2}:1", colour(status));
        }
    }

    #[test]
    fn muted_text_holds_aa_contrast_on_white() {
        let css = crate::pages::CSS;
        let muted = css
            .split(".muted { color: ")
            .nth(1)
            .and_then(|rest| rest.get(..7))
            .expect("a .muted colour");
        assert!(contrast(muted, "#ffffff") >= 4.5, "{muted}");
    }
}
