//! The findings of one recorded exchange: the request against the method it calls (its
//! verb and path, query parameters, headers, body, and the combinations the API refuses), and
//! a fake's answer against the method's response schema.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;

use crate::discovery::{Documents, Matched};
use crate::record::{Recorded, lacks_length};
use crate::schema::{self, Ctx, Problem};
use crate::{cdap, rules};

/// Something a request (or a fake's answer) does that Google's API description does not allow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The test that made the request.
    pub test: String,
    /// `POST /bigquery/v2/projects/p/jobs`.
    pub request: String,
    /// The method it calls, when one was found (`bigquery.jobs.insert`).
    pub method: Option<String>,
    /// What is wrong.
    pub message: String,
    /// Whether Google refuses the request for it (the fakes answer 400 or 411).
    pub refused: bool,
}

/// The request kind of a resumable upload's chunk (a PUT to the session's URL).
pub(crate) const UPLOAD_CHUNK: &str = "storage.objects.insert (resumable upload chunk)";

fn problems_into(out: &mut Vec<(String, bool)>, problems: Vec<Problem>, prefix: &str) {
    for p in problems {
        out.push((format!("{prefix}{}: {}", p.at, p.message), p.refused));
    }
}

fn json_content_type(r: &Recorded) -> bool {
    r.headers.get("content-type").is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|m| m.trim() == "application/json")
    })
}

/// Checks a query value against its parameter's description.
fn query_value(name: &str, value: &str, param: &Value) -> Option<String> {
    let ty = param
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("string");
    let ok = match ty {
        "integer" => value.parse::<i64>().is_ok(),
        "boolean" => matches!(value, "true" | "false"),
        "number" => value.parse::<f64>().is_ok(),
        _ => true,
    };
    if !ok {
        return Some(format!("query parameter {name}={value:?} is not {ty}"));
    }
    if let Some(values) = param.get("enum").and_then(Value::as_array)
        && !values.iter().any(|v| v.as_str() == Some(value))
    {
        return Some(format!(
            "query parameter {name}={value:?} is not one of the enum's values"
        ));
    }
    if let Some(p) = param.get("pattern").and_then(Value::as_str)
        && !regex::Regex::new(p).is_ok_and(|r| r.is_match(value))
    {
        return Some(format!(
            "query parameter {name}={value:?} does not match {p}"
        ));
    }
    None
}

/// `Content-Range` of a resumable upload's chunk of `len` bytes: `bytes A-B/T`, `bytes A-B/*`,
/// or `bytes */T` for no bytes.
fn content_range(range: &str, len: usize) -> Option<String> {
    let Some(spec) = range.strip_prefix("bytes ") else {
        return Some(format!(
            "Content-Range {range:?} does not start with \"bytes \""
        ));
    };
    let Some((span, total)) = spec.split_once('/') else {
        return Some(format!("Content-Range {range:?} has no total"));
    };
    let total: Option<u64> = if total == "*" {
        None
    } else {
        match total.parse() {
            Ok(t) => Some(t),
            Err(_) => {
                return Some(format!(
                    "Content-Range {range:?}: the total is not a number"
                ));
            }
        }
    };
    if span == "*" {
        if len != 0 {
            return Some(format!(
                "Content-Range {range:?} with a body of {len} bytes"
            ));
        }
        return total
            .is_none()
            .then(|| format!("Content-Range {range:?} says nothing"));
    }
    let Some((a, b)) = span
        .split_once('-')
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
    else {
        return Some(format!("Content-Range {range:?}: not a byte range"));
    };
    if b < a || b - a + 1 != len as u64 {
        return Some(format!("Content-Range {range:?} for a body of {len} bytes"));
    }
    if total.is_some_and(|t| b >= t) {
        return Some(format!("Content-Range {range:?} ends past its total"));
    }
    None
}

/// The request kind of `r` and what is wrong with it (message, refused); `sessions` are the
/// resumable upload sessions (Location targets) recorded so far.
fn inspect(
    docs: &Documents,
    r: &Recorded,
    sessions: &[String],
) -> (Option<String>, Vec<(String, bool)>) {
    let mut out: Vec<(String, bool)> = Vec::new();
    if lacks_length(&r.method, &r.headers) {
        out.push((
            format!(
                "{} without Content-Length: Google's front end answers 411",
                r.method
            ),
            true,
        ));
    }
    let path = r.path();
    let query = r.query();
    if r.apis.iter().any(|a| a == "cdap") && path.contains("/v3/namespaces/") {
        let response = (r.fake && (200..300).contains(&r.status))
            .then_some(())
            .and(r.response.as_ref());
        let (id, problems) = cdap::check(
            &r.method,
            path,
            &query,
            r.body.as_ref(),
            r.body_len,
            response,
        );
        out.extend(problems.into_iter().map(|p| (p, true)));
        if r.body.is_some() && !json_content_type(r) {
            out.push((
                "a JSON body without Content-Type: application/json".to_owned(),
                true,
            ));
        }
        return (id.map(str::to_owned), out);
    }
    // A resumable upload's chunk goes to the session's URL, which the start answered.
    let session = r.method == "PUT"
        && (query.iter().any(|(k, _)| k == "upload_id") || sessions.contains(&r.target));
    if session {
        match r.headers.get("content-range") {
            None => out.push(("an upload chunk without Content-Range".to_owned(), true)),
            Some(range) => out.extend(content_range(range, r.body_len).map(|m| (m, true))),
        }
        return (Some(UPLOAD_CHUNK.to_owned()), out);
    }
    let matched = match docs.find(&r.apis, &r.method, path) {
        Ok(m) => m,
        Err(e) => {
            out.push((e, true));
            return (None, out);
        }
    };
    let upload_type = query
        .iter()
        .find(|(k, _)| k == "uploadType")
        .map(|(_, v)| v.as_str());
    parameters(&matched, &query, upload_type, &mut out);
    body(docs, r, &matched, upload_type, &mut out);
    if r.fake
        && (200..300).contains(&r.status)
        && let (Some(answer), Some(schema)) = (&r.response, matched.response())
    {
        let ctx = Ctx {
            docs,
            api: matched.api,
            method: matched.id,
            request: false,
            partial: false,
        };
        let mut problems = Vec::new();
        schema::check(
            &ctx,
            &serde_json::json!({"$ref": schema}),
            answer,
            "",
            &mut problems,
        );
        for p in problems {
            // The fake's answer is ours to fix, not a reason for Google to refuse.
            out.push((format!("the fake's answer {}: {}", p.at, p.message), false));
        }
    }
    (Some(matched.id.to_owned()), out)
}

fn parameters(
    matched: &Matched<'_>,
    query: &[(String, String)],
    upload_type: Option<&str>,
    out: &mut Vec<(String, bool)>,
) {
    let mut seen = BTreeSet::new();
    for (k, v) in query {
        let Some(param) = matched.parameter(k) else {
            out.push((format!("unknown query parameter {k}"), true));
            continue;
        };
        if param.get("location").and_then(Value::as_str) == Some("path") {
            out.push((format!("{k} belongs in the path, not the query"), true));
            continue;
        }
        if !seen.insert(k.clone()) && param.get("repeated").and_then(Value::as_bool) != Some(true) {
            out.push((format!("query parameter {k} given twice"), true));
        }
        // `alt=media` downloads the object itself where the method supports it.
        let media = k == "alt" && v == "media" && matched.supports_media_download();
        if let Some(m) = query_value(k, v, param).filter(|_| !media) {
            out.push((m, true));
        }
    }
    for (name, param) in matched.query_parameters() {
        if param.get("required").and_then(Value::as_bool) == Some(true) && !seen.contains(name) {
            out.push((format!("required query parameter {name} missing"), true));
        }
    }
    if matched.upload && !matches!(upload_type, Some("media" | "multipart" | "resumable")) {
        out.push((
            "an upload path without uploadType=media, multipart or resumable".to_owned(),
            true,
        ));
    }
}

fn body(
    docs: &Documents,
    r: &Recorded,
    matched: &Matched<'_>,
    upload_type: Option<&str>,
    out: &mut Vec<(String, bool)>,
) {
    if r.body_len == 0 {
        return;
    }
    // The object's bytes themselves, not JSON.
    if matched.upload && upload_type == Some("media") {
        return;
    }
    let Some(schema) = matched.request() else {
        out.push(("a body for a method that takes none".to_owned(), false));
        return;
    };
    if !json_content_type(r) {
        out.push((
            "a JSON body without Content-Type: application/json".to_owned(),
            true,
        ));
    }
    let Some(value) = &r.body else {
        out.push(("the body is not JSON".to_owned(), true));
        return;
    };
    let ctx = Ctx {
        docs,
        api: matched.api,
        method: matched.id,
        request: true,
        partial: r.method == "PATCH",
    };
    let mut problems = Vec::new();
    schema::check(&ctx, schema, value, "", &mut problems);
    problems_into(out, problems, "");
    for (at, message, refused) in rules::request(matched.id, value) {
        out.push((format!("{at}: {message}"), refused));
    }
}

/// What is wrong with `r` (the request, and a fake's answer), given the resumable sessions
/// `sessions` (Location targets) its test opened before.
pub fn check(docs: &Documents, r: &Recorded, sessions: &[String]) -> Vec<Finding> {
    let (method, problems) = inspect(docs, r, sessions);
    problems
        .into_iter()
        .map(|(message, refused)| Finding {
            test: r.test.clone(),
            request: format!("{} {}", r.method, r.target),
            method: method.clone(),
            message,
            refused,
        })
        .collect()
}

/// Checks every exchange in `records` (in the order they were made): the findings, and the
/// request kinds seen.
pub fn check_all(docs: &Documents, records: &[Recorded]) -> (Vec<Finding>, BTreeSet<String>) {
    let mut findings = Vec::new();
    let mut kinds = BTreeSet::new();
    let mut sessions: Vec<String> = Vec::new();
    for r in records {
        let (kind, problems) = inspect(docs, r, &sessions);
        if let Some(k) = &kind {
            kinds.insert(k.clone());
        }
        findings.extend(problems.into_iter().map(|(message, refused)| Finding {
            test: r.test.clone(),
            request: format!("{} {}", r.method, r.target),
            method: kind.clone(),
            message,
            refused,
        }));
        if let Some(location) = &r.location
            && r.query()
                .iter()
                .any(|(k, v)| k == "uploadType" && v == "resumable")
        {
            sessions.push(target_of(location));
        }
    }
    (findings, kinds)
}

/// The path and query of a URL (`http://host:port/a?b` → `/a?b`).
pub(crate) fn target_of(url: &str) -> String {
    match url.split_once("://") {
        Some((_, rest)) => rest
            .find('/')
            .map_or_else(|| "/".to_owned(), |i| rest[i..].to_owned()),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_must_describe_their_chunk() {
        assert_eq!(content_range("bytes 0-9/*", 10), None);
        assert_eq!(content_range("bytes 0-9/10", 10), None);
        assert_eq!(content_range("bytes */0", 0), None);
        assert!(content_range("bytes 0-9/*", 9).is_some());
        assert!(content_range("bytes */0", 3).is_some());
        assert!(content_range("0-9/10", 10).is_some());
        assert!(content_range("bytes 0-9/5", 10).is_some());
    }

    #[test]
    fn a_session_url_loses_its_host() {
        assert_eq!(
            target_of("http://127.0.0.1:1/upload/x?upload_id=3"),
            "/upload/x?upload_id=3"
        );
    }
}
