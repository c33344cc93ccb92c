//! What the CLI prints while it works: a line per finished step (`conveyor dev`), and for long
//! runs a progress bar with rate and ETA on a terminal (periodic lines otherwise) and a
//! summary, instead of a line per object.
#![allow(clippy::print_stdout)]

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use conveyor_core::event::{ConveyorEvent, EventType, Status, StepName};
use conveyor_core::steps::{ProgressKind, StageProgress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::broadcast;

use crate::status::colours;

/// Up to this many objects, every object gets its own line; above, a bar or periodic lines.
pub(crate) const SMALL: usize = 20;

/// How often a long run prints a line when stdout is not a terminal.
const EVERY: Duration = Duration::from_secs(5);

fn paint(status: &str, text: &str) -> String {
    if !colours() {
        return text.to_owned();
    }
    let code = match status {
        "SUCCEEDED" => "32",
        "FAILED" | "TIMED_OUT" => "31",
        "REJECTED" => "33",
        _ => "34",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// One line for a finished step, or `None` for a transition that finishes nothing
/// (SUBMITTED, RUNNING).
pub(crate) fn step_line(e: &ConveyorEvent) -> Option<String> {
    if matches!(e.status, Status::Submitted | Status::Running) {
        return None;
    }
    let d = &e.detail;
    let what = match e.step {
        StepName::Stage => d
            .object
            .as_ref()
            .map(|o| format!("staged {}", o.uri()))
            .unwrap_or_default(),
        StepName::Load => match (&d.table, d.rows) {
            (Some(t), Some(n)) => format!("{t} ({n} rows)"),
            (Some(t), None) => t.clone(),
            _ => d.object.as_ref().map(|o| o.uri()).unwrap_or_default(),
        },
        _ => d.job_id.as_ref().map(|j| j.to_string()).unwrap_or_default(),
    };
    let step = if e.kind == EventType::RunFinished {
        "run"
    } else if e.step == StepName::Poll || e.step == StepName::Submit {
        d.job.as_deref().unwrap_or("batch")
    } else {
        e.step.as_str()
    };
    let mut line = format!(
        "{} {:<16} {:<6} {} {what}",
        e.time.format("%H:%M:%S"),
        e.pipeline.as_ref().map_or("-", |p| p.as_str()),
        step,
        paint(e.status.as_str(), &format!("{:<9}", e.status.as_str())),
    );
    if let Some(err) = &d.error {
        let err: String = err.chars().take(300).collect();
        line.push_str(&format!(" — {err}"));
    }
    if conveyor_core::run_state::event_retry_pending(e) {
        line.push_str(" (retry scheduled)");
    }
    line.push_str(&format!("  [{}]", e.run_id));
    Some(line)
}

/// Prints a line per finished step until the channel closes (`conveyor dev`).
pub(crate) async fn print_steps(mut events: broadcast::Receiver<ConveyorEvent>) {
    loop {
        match events.recv().await {
            Ok(e) => {
                if let Some(line) = step_line(&e) {
                    println!("{line}");
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                println!("({n} step line(s) skipped: output fell behind)");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stdout());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// The stage step's reports, printed as a person wants them: each object in short runs; a
/// bar (terminal) or a line every few seconds (pipe, log file) in long ones; failures always.
pub(crate) struct StageOutput {
    tty: bool,
    total: usize,
    bar: Option<ProgressBar>,
}

impl StageOutput {
    pub(crate) fn new() -> Self {
        Self {
            tty: std::io::stdout().is_terminal(),
            total: 0,
            bar: None,
        }
    }

    fn print(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(format!("  {line}")),
            None => println!("  {line}"),
        }
    }

    pub(crate) fn report(&mut self, p: &StageProgress) {
        match p.kind {
            ProgressKind::Planned => {
                self.total = p.total;
                self.print(&p.line);
                if self.tty && p.total > SMALL {
                    self.bar = Some(bar(
                        p.total as u64,
                        "  [{bar:40}] {pos}/{len} objects, {per_sec}, ETA {eta} {msg}",
                    ));
                }
            }
            ProgressKind::Object if self.total <= SMALL => self.print(&p.line),
            ProgressKind::Object => {
                if let Some(b) = &self.bar {
                    b.set_position(p.done as u64);
                    b.set_message(format!("({:.1} MB)", p.bytes as f64 / 1e6));
                }
            }
            ProgressKind::Failed => {
                if let Some(b) = &self.bar {
                    b.set_position(p.done as u64);
                }
                self.print(&p.line);
            }
            ProgressKind::Tick if self.bar.is_none() => self.print(&p.line),
            ProgressKind::Finished => {
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
                }
                self.print(&p.line);
            }
            _ => {}
        }
    }
}

/// Follows the chain after staging: counts loads and batches as their events pass, shown as
/// a bar (terminal) or a line every few seconds, and lists failures as they happen.
pub(crate) struct ChainOutput {
    tty: bool,
    expected: usize,
    loads: usize,
    batches: usize,
    failed: usize,
    verbose: bool,
    bar: Option<ProgressBar>,
    last: Instant,
    started: Instant,
}

impl ChainOutput {
    /// `expected` loads (the objects staged); a line per step when it is small.
    pub(crate) fn new(expected: usize) -> Self {
        let tty = std::io::stdout().is_terminal();
        let verbose = expected <= SMALL;
        let bar = (tty && !verbose).then(|| {
            bar(
                expected as u64,
                "  [{bar:40}] {pos}/{len} loads, {per_sec}, ETA {eta} {msg}",
            )
        });
        Self {
            tty,
            expected,
            loads: 0,
            batches: 0,
            failed: 0,
            verbose,
            bar,
            last: Instant::now(),
            started: Instant::now(),
        }
    }

    fn print(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(format!("  {line}")),
            None => println!("  {line}"),
        }
    }

    /// Takes one event.
    pub(crate) fn event(&mut self, e: &ConveyorEvent) {
        if e.step == StepName::Stage {
            return; // the stage's own report has shown these
        }
        let finished = !matches!(e.status, Status::Submitted | Status::Running);
        let retrying = conveyor_core::run_state::event_retry_pending(e);
        if finished && e.step == StepName::Load {
            self.loads += 1;
        }
        if finished
            && matches!(e.step, StepName::Submit | StepName::Poll)
            && e.kind != EventType::RunFinished
            && !retrying
        {
            self.batches += 1;
        }
        let bad = matches!(
            e.status,
            Status::Failed | Status::TimedOut | Status::Rejected
        );
        if bad && !retrying {
            self.failed += 1;
        }
        if let Some(line) = step_line(e)
            && (self.verbose || bad)
        {
            self.print(&line);
        }
        if let Some(b) = &self.bar {
            b.set_position(self.loads.min(self.expected) as u64);
            b.set_message(format!(
                "· {} batch(es) done · {} failed",
                self.batches, self.failed
            ));
        }
    }

    /// A line every few seconds when stdout is not a terminal (and the run is long).
    pub(crate) fn tick(&mut self, in_flight: usize) {
        if self.tty || self.verbose || self.last.elapsed() < EVERY {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        println!(
            "  ... {}/{} loads ({:.1}/s), {} batch(es) done, {} failed, {in_flight} in flight",
            self.loads,
            self.expected,
            self.loads as f64 / secs,
            self.batches,
            self.failed
        );
    }

    /// Clears the bar and prints the summary.
    pub(crate) fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        println!(
            "  {} load(s) and {} batch(es) finished in {:.1} s, {} failed",
            self.loads,
            self.batches,
            self.started.elapsed().as_secs_f64(),
            self.failed
        );
    }
}
