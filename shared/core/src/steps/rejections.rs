//! Rejections, recorded without flooding the run log: the first rejection of a kind in a
//! window is recorded in full; the repeats within the window are counted, and the count is
//! recorded on one row when the next window of that kind begins. Every rejection is still
//! logged with its full reason (the log keeps the detail; the run log keeps the picture).
//!
//! A kind is the step and the reason with its particulars masked (quoted text, numbers), so a
//! flood of junk requests that differ only in their bodies is one kind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Duration, Utc};
use tracing::warn;

use super::Context;
use crate::event::{ConveyorEvent, Detail, EventType, Status, StepName};
use crate::names::{RunId, short_hash};
use crate::ports::PortError;

/// How long one window of a kind lasts.
const WINDOW_MINUTES: i64 = 5;

/// The kinds seen by this process and their current windows.
#[derive(Clone, Default)]
pub struct Rejections {
    windows: Arc<Mutex<HashMap<String, Window>>>,
}

#[derive(Debug, Clone)]
struct Window {
    started: DateTime<Utc>,
    first_reason: String,
    repeats: u64,
}

/// What to record for one rejection.
enum Record {
    /// The first of its kind in a window: in full.
    First,
    /// A repeat: counted, nothing recorded now.
    Counted,
    /// The first of a new window, after a window that had repeats: its count, then in full.
    CountThenFirst(Window),
}

/// The reason with its particulars masked: quoted text and numbers.
fn kind_of(step: StepName, reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut quoted: Option<char> = None;
    let mut last_digit = false;
    for c in reason.chars() {
        match quoted {
            Some(q) if c == q => {
                quoted = None;
                out.push('…');
                out.push(c);
            }
            Some(_) => {}
            None if c == '"' || c == '`' => {
                quoted = Some(c);
                out.push(c);
            }
            None if c.is_ascii_digit() => {
                if !last_digit {
                    out.push('#');
                }
            }
            None => out.push(c),
        }
        last_digit = c.is_ascii_digit() && quoted.is_none();
    }
    let masked: String = out.chars().take(160).collect();
    format!("{step}:{masked}")
}

impl Rejections {
    fn note(&self, kind: &str, reason: &str, now: DateTime<Utc>) -> Record {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = Window {
            started: now,
            first_reason: reason.to_owned(),
            repeats: 0,
        };
        match windows.get_mut(kind) {
            Some(w) if now - w.started < Duration::minutes(WINDOW_MINUTES) => {
                w.repeats += 1;
                Record::Counted
            }
            Some(w) => {
                let ended = std::mem::replace(w, fresh);
                if ended.repeats > 0 {
                    Record::CountThenFirst(ended)
                } else {
                    Record::First
                }
            }
            None => {
                windows.insert(kind.to_owned(), fresh);
                Record::First
            }
        }
    }
}

fn rejection_event(
    step: StepName,
    parts: &[&str],
    error: String,
) -> Result<ConveyorEvent, PortError> {
    let run_id = RunId::parse(&format!("rejected-{}", short_hash(parts)))
        .map_err(|e| PortError::permanent(e.to_string()))?;
    Ok(ConveyorEvent::new(
        EventType::StepFailed,
        run_id,
        None,
        step,
        1,
        Status::Rejected,
        Detail {
            error: Some(error.chars().take(2000).collect()),
            ..Detail::default()
        },
    ))
}

/// Records a rejected request (`dev.conveyor.step.failed`, status REJECTED) unless one of its
/// kind was recorded in the current window, in which case it is counted; returns the event
/// recorded, if any.
///
/// # Errors
/// The bus's error when a record could not be published (the caller asks for redelivery).
pub async fn record_rejection(
    ctx: &Context,
    step: StepName,
    body: &[u8],
    reason: &str,
) -> Result<Option<ConveyorEvent>, PortError> {
    let now = Utc::now();
    let kind = kind_of(step, reason);
    warn!(step = %step, reason = %reason, body_bytes = body.len(), "request rejected");
    let window_id = now.timestamp().div_euclid(WINDOW_MINUTES * 60).to_string();
    match ctx.rejections.note(&kind, reason, now) {
        Record::Counted => Ok(None),
        Record::First => {
            let ev = rejection_event(step, &[&kind, &window_id], reason.to_owned())?;
            ctx.ports.bus.publish(&ev).await?;
            Ok(Some(ev))
        }
        Record::CountThenFirst(ended) => {
            let summary = rejection_event(
                step,
                &[&kind, &ended.started.to_rfc3339(), "repeats"],
                format!(
                    "{} more rejection(s) like this from {} to {}: {}",
                    ended.repeats,
                    ended.started.to_rfc3339(),
                    now.to_rfc3339(),
                    ended.first_reason
                ),
            )?;
            ctx.ports.bus.publish(&summary).await?;
            let ev = rejection_event(step, &[&kind, &window_id], reason.to_owned())?;
            ctx.ports.bus.publish(&ev).await?;
            Ok(Some(ev))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_that_differ_in_particulars_are_one_kind() {
        let a = kind_of(StepName::Load, "unknown pipeline \"x1\"; body 123 bytes");
        let b = kind_of(StepName::Load, "unknown pipeline \"other\"; body 45 bytes");
        assert_eq!(a, b);
        assert_ne!(
            a,
            kind_of(StepName::Submit, "unknown pipeline \"x1\"; body 123 bytes")
        );
        assert_ne!(a, kind_of(StepName::Load, "body is not JSON"));
    }

    #[test]
    fn repeats_within_a_window_are_counted_and_reported_when_the_next_begins() {
        let r = Rejections::default();
        let t0 = Utc::now();
        assert!(matches!(r.note("k", "why", t0), Record::First));
        for i in 1..=999 {
            assert!(matches!(
                r.note("k", "why", t0 + Duration::milliseconds(i)),
                Record::Counted
            ));
        }
        match r.note("k", "why", t0 + Duration::minutes(WINDOW_MINUTES + 1)) {
            Record::CountThenFirst(w) => assert_eq!(w.repeats, 999),
            _ => panic!("the next window reports the count"),
        }
    }
}
