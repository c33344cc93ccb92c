//! A JSON value checked against a discovery schema: every field known, of its JSON type
//! (Google's JSON mapping: 64-bit integers as strings, durations as `"3600s"`, bytes as
//! base64), enum values among the listed ones, and in a request the fields Google requires.
//!
//! Discovery marks few fields `required`; Google's descriptions say it instead
//! (`"Required. ..."` in the newer APIs, `"[Required] ..."` in BigQuery's) or the field's
//! `annotations.required` lists the methods that require it (Cloud Storage). All three count,
//! for a field whose parent object is sent. JSON `null` is an unset field and always passes.

use serde_json::Value;

use crate::discovery::Documents;

/// One thing wrong with a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// Where, as `a.b[2].c`.
    pub(crate) at: String,
    /// What.
    pub(crate) message: String,
    /// Whether Google refuses the request for it (400), rather than ignoring it.
    pub(crate) refused: bool,
}

/// What is checked: a request's body (required fields, output-only fields) or an answer.
pub(crate) struct Ctx<'a> {
    pub(crate) docs: &'a Documents,
    pub(crate) api: &'a str,
    pub(crate) method: &'a str,
    pub(crate) request: bool,
    /// A PATCH: only what changes is sent, so no field is required.
    pub(crate) partial: bool,
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether a field's description or annotations make it required for `method`.
fn required(field: &Value, method: &str) -> bool {
    if field.get("readOnly").and_then(Value::as_bool) == Some(true) {
        return false;
    }
    if field.get("required").and_then(Value::as_bool) == Some(true) {
        return true;
    }
    let annotated = field
        .pointer("/annotations/required")
        .and_then(Value::as_array)
        .is_some_and(|ms| ms.iter().any(|m| m.as_str() == Some(method)));
    let described = field
        .get("description")
        .and_then(Value::as_str)
        .is_some_and(|d| d.starts_with("Required.") || d.starts_with("[Required]"));
    annotated || described
}

/// Whether `s` is an integer of `format` written as text (`int64` as `"-12"`).
fn integer_text(s: &str, format: Option<&str>) -> bool {
    let unsigned = matches!(format, Some("uint64" | "uint32"));
    let digits = if unsigned {
        s
    } else {
        s.strip_prefix('-').unwrap_or(s)
    };
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn integer_fits(n: &serde_json::Number, format: Option<&str>) -> bool {
    match format {
        Some("int32") => n.as_i64().is_some_and(|v| i32::try_from(v).is_ok()),
        Some("uint32") => n.as_u64().is_some_and(|v| u32::try_from(v).is_ok()),
        Some("uint64") => n.as_u64().is_some(),
        _ => n.as_i64().is_some() || n.as_u64().is_some(),
    }
}

/// Whether `s` has the form `format` asks of a string (`None`: no opinion).
fn string_form(s: &str, format: &str) -> Option<&'static str> {
    let ok = match format {
        "int64" | "uint64" | "int32" | "uint32" => integer_text(s, Some(format)),
        "byte" => s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_' | b'=')),
        "google-duration" => s
            .strip_suffix('s')
            .is_some_and(|n| !n.is_empty() && n.parse::<f64>().is_ok()),
        "google-datetime" | "date-time" => {
            s.len() >= 20 && s.as_bytes().get(4) == Some(&b'-') && s.contains('T')
        }
        "date" => s.len() == 10 && s.as_bytes().get(4) == Some(&b'-'),
        _ => return None,
    };
    (!ok).then_some(match format {
        "byte" => "base64",
        "google-duration" => "a duration such as \"3600s\"",
        "google-datetime" | "date-time" => "an RFC 3339 time",
        "date" => "a date YYYY-MM-DD",
        _ => "an integer",
    })
}

/// The values a string field's description lists, where the API says them in words rather
/// than in an `enum` (BigQuery's "The following values are supported: * WRITE_TRUNCATE: ...",
/// "specify \"CSV\"", "Possible values include NULLABLE, REQUIRED and REPEATED"): every
/// upper-case constant the description names. `None` when it names fewer than two.
fn described_values(description: &str) -> Option<Vec<&str>> {
    let values: Vec<&str> = description
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.len() >= 2 && constant(w))
        .collect();
    (values.len() >= 2).then_some(values)
}

/// Whether `s` looks like an enum constant (`WRITE_APPEND`, `INT64`).
fn constant(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_uppercase())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Checks `value` against `schema` (a schema object, or `{"$ref": name}`), adding what is
/// wrong to `out`.
pub(crate) fn check(
    ctx: &Ctx<'_>,
    schema: &Value,
    value: &Value,
    at: &str,
    out: &mut Vec<Problem>,
) {
    let here = if at.is_empty() { "(body)" } else { at };
    let problem = |out: &mut Vec<Problem>, message: String, refused: bool| {
        out.push(Problem {
            at: here.to_owned(),
            message,
            refused,
        });
    };
    if value.is_null() {
        return;
    }
    if let Some(name) = schema.get("$ref").and_then(Value::as_str) {
        match ctx.docs.schema(ctx.api, name) {
            Some(s) => check(ctx, s, value, at, out),
            None => problem(out, format!("the document has no schema {name}"), false),
        }
        return;
    }
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("any");
    let format = schema.get("format").and_then(Value::as_str);
    match (ty, value) {
        ("any", _) => {}
        ("object", Value::Object(map)) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties");
            for (key, v) in map {
                let path = join(at, key);
                match (properties.and_then(|p| p.get(key)), extra) {
                    (Some(field), _) => {
                        if ctx.request
                            && field.get("readOnly").and_then(Value::as_bool) == Some(true)
                        {
                            out.push(Problem {
                                at: path.clone(),
                                message: "an output-only field, ignored in a request".to_owned(),
                                refused: false,
                            });
                        }
                        if ctx.request
                            && field.get("deprecated").and_then(Value::as_bool) == Some(true)
                            && !v.is_null()
                        {
                            out.push(Problem {
                                at: path.clone(),
                                message: "deprecated".to_owned(),
                                refused: false,
                            });
                        }
                        check(ctx, field, v, &path, out);
                    }
                    (None, Some(each)) => check(ctx, each, v, &path, out),
                    (None, None) if properties.is_none() => {}
                    (None, None) => out.push(Problem {
                        at: path,
                        message: if ctx.request {
                            "unknown field".to_owned()
                        } else {
                            "a field Google's answer does not have".to_owned()
                        },
                        refused: ctx.request,
                    }),
                }
            }
            if ctx.request && !ctx.partial {
                for (key, field) in properties.into_iter().flatten() {
                    if required(field, ctx.method) && map.get(key).is_none_or(Value::is_null) {
                        out.push(Problem {
                            at: join(at, key),
                            message: "required, missing".to_owned(),
                            refused: true,
                        });
                    }
                }
            }
        }
        ("array", Value::Array(items)) => {
            if let Some(each) = schema.get("items") {
                // Items described by their array (BigQuery's `schemaUpdateOptions`).
                let mut each = each.clone();
                if each.get("description").is_none()
                    && let (Some(map), Some(d)) = (each.as_object_mut(), schema.get("description"))
                {
                    map.insert("description".to_owned(), d.clone());
                }
                for (i, v) in items.iter().enumerate() {
                    check(ctx, &each, v, &format!("{at}[{i}]"), out);
                }
            }
        }
        ("string", Value::String(s)) => {
            if let Some(values) = schema.get("enum").and_then(Value::as_array)
                && !values.iter().any(|v| v.as_str() == Some(s))
            {
                problem(out, format!("{s:?} is not one of the enum's values"), true);
            } else if let Some(want) = format.and_then(|f| string_form(s, f)) {
                problem(out, format!("{s:?} is not {want}"), true);
            } else if schema.get("enum").is_none()
                && constant(s)
                && let Some(values) = schema
                    .get("description")
                    .and_then(Value::as_str)
                    .and_then(described_values)
                && !values.contains(&s.as_str())
            {
                problem(
                    out,
                    format!("{s:?} is none of the values the field's description lists"),
                    true,
                );
            }
        }
        // Google's JSON mapping reads 64-bit integers written as numbers too.
        ("string", Value::Number(n))
            if matches!(format, Some("int64" | "uint64")) && integer_fits(n, format) => {}
        ("integer", Value::Number(n)) => {
            if !integer_fits(n, format) {
                problem(
                    out,
                    format!("{n} is not an integer of {}", format.unwrap_or("int64")),
                    true,
                );
            }
        }
        ("integer", Value::String(s)) if integer_text(s, format) => {}
        ("number", Value::Number(_)) | ("boolean", Value::Bool(_)) => {}
        ("number", Value::String(s))
            if s.parse::<f64>().is_ok()
                || matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity") => {}
        (ty, v) => problem(
            out,
            format!(
                "{} where the schema says {ty}{}",
                json_type(v),
                format.map(|f| format!(" ({f})")).unwrap_or_default()
            ),
            true,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_may_be_text_and_durations_end_in_s() {
        assert!(integer_text("-12", Some("int64")));
        assert!(!integer_text("-12", Some("uint64")));
        assert!(!integer_text("1e3", None));
        assert_eq!(string_form("3600s", "google-duration"), None);
        assert!(string_form("1h", "google-duration").is_some());
        assert!(string_form("a b", "byte").is_some());
    }

    #[test]
    fn values_listed_in_words_are_read_from_the_description() {
        let listed = described_values(
            "Optional. The following values are supported: * WRITE_TRUNCATE: overwrites. * WRITE_APPEND: appends.",
        )
        .unwrap();
        assert!(listed.contains(&"WRITE_TRUNCATE") && listed.contains(&"WRITE_APPEND"));
        assert!(!listed.contains(&"Optional"));
        assert_eq!(
            described_values("Required. The top level type of this field."),
            None
        );
    }
}
