//! The `{name}` placeholders of batch parameters: finding them and filling them in.

use std::collections::BTreeMap;

fn is_identifier(s: &str) -> bool {
    (s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        || date_offset(s).is_some()
        || secret_name(s).is_some()
}

/// The whole days of a `{date-1d}` / `{date+7d}` placeholder: `-1`, `7`.
pub fn date_offset(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("date")?;
    let sign = match rest.chars().next()? {
        '+' => 1,
        '-' => -1,
        _ => return None,
    };
    let days = rest[1..].strip_suffix('d')?;
    if days.is_empty() || days.len() > 5 || !days.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    days.parse::<i64>().ok().map(|d| sign * d)
}

/// The secret a `{secret:NAME}` placeholder names (`projects/P/secrets/S[/versions/V]`, or in
/// the embedded mode any such path under the state directory's `secrets/`).
pub fn secret_name(name: &str) -> Option<&str> {
    let secret = name.strip_prefix("secret:")?;
    (!secret.is_empty()
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_')))
    .then_some(secret)
}

/// The placeholders every run has besides its captures and ids: the parts of `{date}`
/// and the interval the run covers.
pub const DATE_PLACEHOLDERS: [&str; 6] = [
    "date_nodash",
    "yyyy",
    "mm",
    "dd",
    "data_interval_start",
    "data_interval_end",
];

/// The value of a placeholder derived from the run's `date` (`YYYY-MM-DD`): `{yyyy}`, `{mm}`,
/// `{dd}`, `{date_nodash}`, `{date-1d}`, `{date+7d}`, and, when the run has no interval of its own (a schedule
/// gives one), `{data_interval_start}` / `{data_interval_end}` as the run date's day (UTC,
/// RFC 3339). `None` for other names, or a date of another form.
pub fn derived_value(name: &str, vars: &BTreeMap<String, String>) -> Option<String> {
    let date = chrono::NaiveDate::parse_from_str(vars.get("date")?, "%Y-%m-%d").ok()?;
    let midnight = |d: chrono::NaiveDate| format!("{}T00:00:00Z", d.format("%Y-%m-%d"));
    match name {
        "date_nodash" => Some(date.format("%Y%m%d").to_string()),
        "yyyy" => Some(date.format("%Y").to_string()),
        "mm" => Some(date.format("%m").to_string()),
        "dd" => Some(date.format("%d").to_string()),
        "data_interval_start" => Some(midnight(date)),
        "data_interval_end" => date.succ_opt().map(midnight),
        _ => {
            let days = date_offset(name)?;
            date.checked_add_signed(chrono::Duration::days(days))
                .map(|d| d.format("%Y-%m-%d").to_string())
        }
    }
}

/// A piece of a batch parameter: text, or the name of a placeholder.
enum Piece<'a> {
    Text(&'a str),
    Name(&'a str),
}

/// Splits `template` into text and `{identifier}` placeholders (not `${...}`), in order.
fn pieces(template: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let escaped = rest[..start].ends_with('$');
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) if !escaped && is_identifier(&after[..end]) => {
                out.push(Piece::Text(&rest[..start]));
                out.push(Piece::Name(&after[..end]));
                rest = &after[end + 1..];
            }
            _ => {
                out.push(Piece::Text(&rest[..=start]));
                rest = after;
            }
        }
    }
    out.push(Piece::Text(rest));
    out
}

/// The `{name}` placeholders of a batch parameter, in order. `${...}` and braces around
/// anything but a name are not placeholders.
///
/// # Examples
/// ```
/// use conveyor_core::config::parameter_placeholders;
/// assert_eq!(parameter_placeholders("--table={table} ${HOME} {\"a\": 1}"), vec!["table"]);
/// ```
pub fn parameter_placeholders(template: &str) -> Vec<String> {
    pieces(template)
        .into_iter()
        .filter_map(|p| match p {
            Piece::Name(n) => Some(n.to_owned()),
            Piece::Text(_) => None,
        })
        .collect()
}

/// Replaces the `{name}` placeholders of a batch parameter by their values (verbatim: these
/// go to an API, not a shell).
///
/// # Errors
/// The first placeholder without a value.
pub(crate) fn render_parameter(
    template: &str,
    vars: &BTreeMap<String, String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    for piece in pieces(template) {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Name(name) => match vars.get(name) {
                Some(v) => out.push_str(v),
                None => return Err(format!("{{{name}}} has no value")),
            },
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_placeholders_are_derived_from_the_run_date() {
        let vars = BTreeMap::from([("date".to_owned(), "2026-03-01".to_owned())]);
        let v = |n: &str| derived_value(n, &vars);
        assert_eq!(v("date-1d").as_deref(), Some("2026-02-28"));
        assert_eq!(v("date+7d").as_deref(), Some("2026-03-08"));
        assert_eq!(v("date-365d").as_deref(), Some("2025-03-01"));
        assert_eq!(
            (v("yyyy"), v("mm"), v("dd")),
            (Some("2026".into()), Some("03".into()), Some("01".into()))
        );
        assert_eq!(
            v("data_interval_start").as_deref(),
            Some("2026-03-01T00:00:00Z")
        );
        assert_eq!(
            v("data_interval_end").as_deref(),
            Some("2026-03-02T00:00:00Z")
        );
        assert_eq!(v("date_nodash").as_deref(), Some("20260301"));
        assert_eq!(v("date-1h"), None);
        assert_eq!(v("date+d"), None);
        assert_eq!(
            parameter_placeholders("{date-1d}/{secret:projects/p/secrets/s}/{date*2}"),
            ["date-1d", "secret:projects/p/secrets/s"]
        );
    }

    #[test]
    fn only_identifiers_in_braces_are_placeholders() {
        let vars = BTreeMap::from([("table".to_owned(), "ds.t".to_owned())]);
        assert_eq!(
            render_parameter(
                "--t={table} ${HOME} ${logicalStartTime(yyyy)} {\"a\": 1} {",
                &vars
            )
            .unwrap(),
            "--t=ds.t ${HOME} ${logicalStartTime(yyyy)} {\"a\": 1} {"
        );
        assert!(
            render_parameter("{nope}", &vars)
                .unwrap_err()
                .contains("{nope}")
        );
        assert_eq!(parameter_placeholders("{a}-{b} ${c}"), vec!["a", "b"]);
    }
}
