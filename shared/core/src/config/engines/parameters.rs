//! The `{name}` placeholders of batch parameters: finding them and filling them in.

use std::collections::BTreeMap;

fn is_identifier(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
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
