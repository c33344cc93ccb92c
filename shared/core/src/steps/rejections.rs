//! Refusals (rejections and superseded arrivals), recorded without flooding the run log: the
//! first refusal of a kind in a window is recorded; the repeats within the window are
//! counted, and the count is recorded on one row when the next window of that kind begins.
//! Every refusal is still logged with its reason (the log keeps the detail; the run log keeps
//! the picture).
//!
//! Bounded by construction, whatever callers send:
//! - A kind is the step and the reason with its particulars masked: quoted text (escaped
//!   quotes included), and every word that is not plain letters (names, URIs, numbers, event
//!   types), so a flood of requests that differ only in what they name is one kind.
//! - At most [`MAX_KINDS`] kinds are tracked; beyond them, new kinds share one overflow kind
//!   per step until windows end, so however many distinct reasons arrive, a window records at
//!   most [`MAX_KINDS`] rows plus one per step, and the tracking itself stays small.
//! - What is stored is bounded: a reason to [`MAX_REASON`] characters, each quoted particular
//!   in it to [`MAX_PARTICULAR`], a caller's generation to [`MAX_GENERATION`] bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Duration, Utc};
use tracing::warn;

use super::Context;
use crate::event::{ConveyorEvent, Detail, EventType, ObjectRef, Status, StepName};
use crate::names::{PipelineName, RunId};
use crate::ports::PortError;

/// How long one window of a kind lasts.
const WINDOW_MINUTES: i64 = 5;

/// The most kinds tracked at once.
pub(crate) const MAX_KINDS: usize = 256;

/// The longest reason stored or logged, in characters.
pub(crate) const MAX_REASON: usize = 1000;

/// The longest quoted particular kept in a stored reason, in characters.
pub(crate) const MAX_PARTICULAR: usize = 64;

/// The longest caller's generation stored, in bytes (Cloud Storage's are 16 digits).
pub const MAX_GENERATION: usize = 64;

/// The longest kind, in characters.
const MAX_KIND: usize = 160;

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

/// What to record for one refusal.
#[derive(Debug)]
enum Record {
    /// The first of its kind in a window: recorded.
    First,
    /// A repeat: counted, nothing recorded now.
    Counted,
    /// The first of a new window, after a window that had repeats: its count, then recorded.
    CountThenFirst(Window),
}

/// Whether a word of a reason is kept in its kind: plain words (letters, `-`, `'`, `_`, with
/// punctuation around them), short enough to be the message's own.
fn plain_word(word: &str) -> bool {
    let core = word.trim_matches(|c: char| matches!(c, ',' | ';' | ':' | '.' | '(' | ')' | '!'));
    !core.is_empty()
        && core.len() <= 24
        && core
            .chars()
            .all(|c| c.is_ascii_alphabetic() || matches!(c, '-' | '\'' | '_'))
}

/// The reason with its particulars masked: quoted text (a backslash escapes a quote, so an
/// escaped quote cannot end the masking) and every word that is not a plain word.
fn kind_of(step: StepName, reason: &str) -> String {
    let mut out = String::with_capacity(reason.len().min(MAX_KIND));
    let mut quoted: Option<char> = None;
    let mut escaped = false;
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.is_empty() {
            return;
        }
        if plain_word(word) {
            out.push_str(word);
        } else if !out.ends_with('…') {
            out.push('…');
        }
        word.clear();
    };
    for c in reason.chars() {
        // Bytes, not characters: a constant-time check (the result is cut to characters).
        if out.len() >= MAX_KIND * 4 {
            break;
        }
        if let Some(q) = quoted {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quoted = None;
                out.push('…');
                out.push(c);
            }
            continue;
        }
        match c {
            '"' | '`' => {
                flush(&mut word, &mut out);
                quoted = Some(c);
                out.push(c);
            }
            c if c.is_whitespace() => {
                flush(&mut word, &mut out);
                if !out.ends_with(' ') {
                    out.push(' ');
                }
            }
            c => {
                if word.len() < 64 {
                    word.push(c);
                } else if !word.ends_with('0') {
                    // A very long word is no plain word (a digit marks it): it stays masked,
                    // and the word is not kept longer.
                    word.push('0');
                }
            }
        }
    }
    flush(&mut word, &mut out);
    let masked: String = out.chars().take(MAX_KIND).collect();
    format!("{step}:{masked}")
}

/// `reason` as it may be stored: each quoted particular cut to [`MAX_PARTICULAR`] characters
/// and the whole to [`MAX_REASON`].
pub fn bounded_reason(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len().min(MAX_REASON));
    let mut quoted: Option<char> = None;
    let mut inside = 0usize;
    let mut escaped = false;
    let mut kept = 0usize;
    for c in reason.chars() {
        if kept >= MAX_REASON {
            out.push('…');
            break;
        }
        let before = out.len();
        match quoted {
            Some(q) => {
                let ends = !escaped && c == q;
                escaped = !escaped && c == '\\';
                if ends {
                    quoted = None;
                    out.push(c);
                } else {
                    inside += 1;
                    if inside <= MAX_PARTICULAR {
                        out.push(c);
                    } else if inside == MAX_PARTICULAR + 1 {
                        out.push('…');
                    }
                }
            }
            None => {
                if c == '"' || c == '`' {
                    quoted = Some(c);
                    inside = 0;
                }
                out.push(c);
            }
        }
        kept += usize::from(out.len() > before);
    }
    out
}

/// `generation` as it may be stored: at most [`MAX_GENERATION`] bytes (cut at a character).
pub fn bounded_generation(generation: &str) -> String {
    let mut end = generation.len().min(MAX_GENERATION);
    while !generation.is_char_boundary(end) {
        end -= 1;
    }
    generation[..end].to_owned()
}

impl Rejections {
    /// Notes one refusal of `kind` at `now`: what to record, and the counts of windows that
    /// ended and were dropped to make room (each to be recorded as a count row).
    fn note(
        &self,
        step: StepName,
        kind: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> (String, Record, Vec<(String, Window)>) {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = Window {
            started: now,
            first_reason: bounded_reason(reason),
            repeats: 0,
        };
        let open = |w: &Window| now - w.started < Duration::minutes(WINDOW_MINUTES);
        let mut ended = Vec::new();
        let mut kind = kind.to_owned();
        if !windows.contains_key(&kind) && windows.len() >= MAX_KINDS {
            // Room first from windows that ended: their counts are recorded now.
            let done: Vec<String> = windows
                .iter()
                .filter(|(_, w)| !open(w))
                .map(|(k, _)| k.clone())
                .collect();
            for k in done {
                if let Some(w) = windows.remove(&k)
                    && w.repeats > 0
                {
                    ended.push((k, w));
                }
            }
            if windows.len() >= MAX_KINDS {
                // Still full: this kind shares the step's overflow kind.
                kind = format!("{step}:(more kinds of refusal than are tracked)");
            }
        }
        let record = match windows.get_mut(&kind) {
            Some(w) if open(w) => {
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
                windows.insert(kind.clone(), fresh);
                Record::First
            }
        };
        (kind, record, ended)
    }

    /// The kinds tracked now (for tests of the bound).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.windows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// What a refusal is about, when it is known: the pipeline and object of a refused arrival,
/// or the object of a superseded one.
#[derive(Debug, Clone, Default)]
pub struct About {
    /// The pipeline the refused input was meant for.
    pub pipeline: Option<PipelineName>,
    /// The object (its generation is stored bounded).
    pub object: Option<ObjectRef>,
}

/// The status and event type of a refusal's rows.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Rejected,
    Superseded,
}

fn refusal_event(
    refusal: Refusal,
    step: StepName,
    parts: &[&str],
    error: String,
    about: &About,
) -> Result<ConveyorEvent, PortError> {
    let prefix = match refusal {
        Refusal::Rejected => "rejected",
        Refusal::Superseded => "superseded",
    };
    let run_id = RunId::parse(&crate::run_origin::unowned(prefix, parts))
        .map_err(|e| PortError::permanent(e.to_string()))?;
    let object = about.object.clone().map(|mut o| {
        o.generation = bounded_generation(&o.generation);
        o
    });
    let (kind, status, job) = match refusal {
        Refusal::Rejected => (EventType::StepFailed, Status::Rejected, None),
        Refusal::Superseded => (
            EventType::ObjectSuperseded,
            Status::Superseded,
            Some(super::load::LOAD_JOB.to_owned()),
        ),
    };
    Ok(ConveyorEvent::new(
        kind,
        run_id,
        about.pipeline.clone(),
        step,
        1,
        status,
        Detail {
            error: Some(bounded_reason(&error)),
            object,
            job,
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
    record_rejection_about(ctx, step, body, reason, &About::default()).await
}

/// [`record_rejection`] of input known to be about a pipeline or an object (a refused
/// arrival): the row names them.
///
/// # Errors
/// The bus's error when a record could not be published (the caller asks for redelivery).
pub async fn record_rejection_about(
    ctx: &Context,
    step: StepName,
    body: &[u8],
    reason: &str,
    about: &About,
) -> Result<Option<ConveyorEvent>, PortError> {
    let logged = bounded_reason(reason);
    warn!(step = %step, reason = %logged, body_bytes = body.len(), "request rejected");
    record(
        ctx,
        Refusal::Rejected,
        step,
        &kind_of(step, reason),
        reason,
        about,
    )
    .await
}

/// Records an arrival whose generation is no longer live (`dev.conveyor.object.superseded`,
/// status SUPERSEDED), aggregated like rejections: the first of its kind (`gone`: the object
/// was deleted; else overwritten) in a window is recorded, repeats are counted.
///
/// # Errors
/// The bus's error when a record could not be published.
pub(super) async fn record_superseded(
    ctx: &Context,
    gone: bool,
    reason: &str,
    about: &About,
) -> Result<Option<ConveyorEvent>, PortError> {
    let kind = format!(
        "{}:superseded:{}",
        StepName::Load,
        if gone { "gone" } else { "overwritten" }
    );
    record(
        ctx,
        Refusal::Superseded,
        StepName::Load,
        &kind,
        reason,
        about,
    )
    .await
}

async fn record(
    ctx: &Context,
    refusal: Refusal,
    step: StepName,
    kind: &str,
    reason: &str,
    about: &About,
) -> Result<Option<ConveyorEvent>, PortError> {
    let now = Utc::now();
    let window_id = now.timestamp().div_euclid(WINDOW_MINUTES * 60).to_string();
    let (kind, record, ended) = ctx.rejections.note(step, kind, reason, now);
    let count_row = |kind: &str, ended: &Window| {
        refusal_event(
            refusal,
            step,
            &[kind, &ended.started.to_rfc3339(), "repeats"],
            format!(
                "{} more like this from {} to {}: {}",
                ended.repeats,
                ended.started.to_rfc3339(),
                now.to_rfc3339(),
                ended.first_reason
            ),
            &About::default(),
        )
    };
    for (k, w) in &ended {
        ctx.ports.bus.publish(&count_row(k, w)?).await?;
    }
    match record {
        Record::Counted => Ok(None),
        Record::First => {
            let ev = refusal_event(
                refusal,
                step,
                &[&kind, &window_id],
                reason.to_owned(),
                about,
            )?;
            ctx.ports.bus.publish(&ev).await?;
            Ok(Some(ev))
        }
        Record::CountThenFirst(ended) => {
            ctx.ports.bus.publish(&count_row(&kind, &ended)?).await?;
            let ev = refusal_event(
                refusal,
                step,
                &[&kind, &window_id],
                reason.to_owned(),
                about,
            )?;
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
    fn names_uris_event_types_and_escaped_quotes_do_not_make_new_kinds() {
        let one = |reason: &str| kind_of(StepName::Load, reason);
        assert_eq!(
            one("gs://landing/in/missing-1.csv does not exist"),
            one("gs://landing/other/x_y.csv does not exist")
        );
        assert_eq!(
            one("unknown CloudEvent type com.example.abc"),
            one("unknown CloudEvent type dev.evil.v2")
        );
        // An escaped quote does not end the masking.
        assert_eq!(
            one(r#"bad value "a\" and then unique words zzz" here"#),
            one(r#"bad value "b\" and then other words yyy" here"#)
        );
        assert!(one(&"x".repeat(10_000)).len() < 200);
    }

    #[test]
    fn repeats_within_a_window_are_counted_and_reported_when_the_next_begins() {
        let r = Rejections::default();
        let t0 = Utc::now();
        let step = StepName::Load;
        assert!(matches!(r.note(step, "k", "why", t0).1, Record::First));
        for i in 1..=999 {
            assert!(matches!(
                r.note(step, "k", "why", t0 + Duration::milliseconds(i)).1,
                Record::Counted
            ));
        }
        match r
            .note(step, "k", "why", t0 + Duration::minutes(WINDOW_MINUTES + 1))
            .1
        {
            Record::CountThenFirst(w) => assert_eq!(w.repeats, 999),
            _ => panic!("the next window reports the count"),
        }
    }

    #[test]
    fn the_kinds_tracked_are_bounded_and_ended_windows_make_room() {
        let r = Rejections::default();
        let t0 = Utc::now();
        let step = StepName::Load;
        let mut firsts = 0;
        for i in 0..40_000 {
            let kind = format!("k{i}");
            let (_, record, _) = r.note(step, &kind, &"why ".repeat(500), t0);
            firsts += usize::from(matches!(record, Record::First));
        }
        assert_eq!(
            r.tracked(),
            MAX_KINDS + 1,
            "the kinds and the overflow kind"
        );
        assert_eq!(
            firsts,
            MAX_KINDS + 1,
            "a row per kind tracked, one for the rest"
        );
        // The next window: ended windows with repeats (the overflow kind's) are reported when
        // they make room.
        let later = t0 + Duration::minutes(WINDOW_MINUTES + 1);
        let (_, record, ended) = r.note(step, "new", "why", later);
        assert!(matches!(record, Record::First));
        assert_eq!(ended.len(), 1, "{ended:?}");
        assert_eq!(ended[0].1.repeats, 40_000 - MAX_KINDS as u64 - 1);
        assert!(r.tracked() <= MAX_KINDS);
    }

    #[test]
    fn stored_values_are_bounded() {
        let reason = format!(
            "bad \"{}\" then {}",
            "q".repeat(10_000),
            "w ".repeat(10_000)
        );
        let stored = bounded_reason(&reason);
        assert!(stored.chars().count() <= MAX_REASON + 1, "{}", stored.len());
        assert!(stored.starts_with(&format!("bad \"{}…\" then", "q".repeat(MAX_PARTICULAR))));
        assert_eq!(
            bounded_generation(&"9".repeat(8 << 20)).len(),
            MAX_GENERATION
        );
        assert_eq!(bounded_generation("1234"), "1234");
    }
}
