//! The Cloud Logging writer: in Cloud Logging's JSON every line of a request gets its trace
//! context and `httpRequest` fields (from core's `request` span, [`conveyor_core::trace`]) as
//! the fields Cloud Logging groups by: `logging.googleapis.com/trace`,
//! `logging.googleapis.com/spanId`, `logging.googleapis.com/trace_sampled` and `httpRequest`.
//! The run id, pipeline and step of the step's spans become top-level fields of every line too.
//!
//! tracing-stackdriver writes span fields only nested (`span`, `spans`) and sets the trace
//! field only through OpenTelemetry, a large dependency for one field; [`CloudWriter`] lifts
//! these few fields to the top of each JSON line instead.

use std::io::Write;
use std::sync::OnceLock;

use serde_json::{Map, Value};
use tracing_subscriber::fmt::MakeWriter;

static PROJECT: OnceLock<String> = OnceLock::new();

/// Sets the project that trace ids belong to (`projects/P/traces/ID`), once, at start-up.
pub fn set_project(project: &str) {
    let _ = PROJECT.set(project.to_owned());
}

/// Span fields copied to the top of every line: what Cloud Logging queries filter on.
const LIFTED: [&str; 5] = ["run_id", "pipeline", "step", "attempt", "job_id"];

fn camel(s: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in s.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Rewrites one Cloud Logging JSON line: the trace context and `httpRequest` fields of its
/// spans, and the [`LIFTED`] ones, become top-level fields. A line that is not a JSON object
/// is returned as it is.
pub fn lift(line: &str, project: Option<&str>) -> String {
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(line) else {
        return line.to_owned();
    };
    let spans: Vec<Map<String, Value>> = map
        .get("spans")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|s| s.as_object().cloned()).collect())
        .unwrap_or_default();
    let mut http = match map.remove("httpRequest") {
        Some(Value::Object(h)) => h,
        _ => Map::new(),
    };
    for span in spans.iter().rev() {
        for (k, v) in span {
            match k.as_str() {
                "trace" => {
                    if let Some(id) = v.as_str() {
                        let full = match project {
                            Some(p) => format!("projects/{p}/traces/{id}"),
                            None => id.to_owned(),
                        };
                        map.entry("logging.googleapis.com/trace")
                            .or_insert(Value::String(full));
                    }
                }
                "span_id" => {
                    map.entry("logging.googleapis.com/spanId")
                        .or_insert_with(|| v.clone());
                }
                "trace_sampled" => {
                    map.entry("logging.googleapis.com/trace_sampled")
                        .or_insert_with(|| v.clone());
                }
                k if k.starts_with("http_request.") => {
                    http.entry(camel(&k["http_request.".len()..]))
                        .or_insert_with(|| v.clone());
                }
                k if LIFTED.contains(&k) => {
                    map.entry(k).or_insert_with(|| v.clone());
                }
                _ => {}
            }
        }
    }
    if !http.is_empty() {
        map.insert("httpRequest".to_owned(), Value::Object(http));
    }
    serde_json::to_string(&Value::Object(map)).unwrap_or_else(|_| line.to_owned())
}

/// A `MakeWriter` for tracing-stackdriver that passes each line through [`lift`].
#[derive(Clone)]
pub struct CloudWriter<M> {
    inner: M,
}

impl<M> CloudWriter<M> {
    /// Wraps `inner` (stdout in production).
    pub fn new(inner: M) -> Self {
        Self { inner }
    }
}

/// One line being written; lifted and passed on when dropped (the formatter writes a whole
/// event, then drops its writer).
pub struct LineWriter<W: Write> {
    buf: Vec<u8>,
    out: W,
}

impl<W: Write> Write for LineWriter<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for LineWriter<W> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buf);
        let mut out = String::new();
        for line in text.lines() {
            out.push_str(&lift(line, PROJECT.get().map(String::as_str)));
            out.push('\n');
        }
        let _ = self.out.write_all(out.as_bytes());
        let _ = self.out.flush();
    }
}

impl<'a, M> MakeWriter<'a> for CloudWriter<M>
where
    M: MakeWriter<'a>,
{
    type Writer = LineWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            buf: Vec::new(),
            out: self.inner.make_writer(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lift_moves_span_fields_to_the_top_and_keeps_a_non_json_line() {
        let line = r#"{"severity":"INFO","message":"x","httpRequest":{"status":200},"spans":[{"name":"request","trace":"abc","http_request.request_method":"POST"},{"name":"load_one","run_id":"r1","pipeline":"p"}]}"#;
        let v: Value = serde_json::from_str(&lift(line, Some("proj"))).unwrap();
        assert_eq!(
            v["logging.googleapis.com/trace"],
            "projects/proj/traces/abc"
        );
        assert_eq!(v["httpRequest"]["requestMethod"], "POST");
        assert_eq!(v["httpRequest"]["status"], 200);
        assert_eq!(v["run_id"], "r1");
        assert_eq!(v["pipeline"], "p");
        assert_eq!(lift("plain text", None), "plain text");
    }
}
