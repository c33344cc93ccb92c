//! Commands for a POSIX shell: quoting, and `{placeholder}` rendering with quoted values. The
//! local engine and the SSH engine run batch commands with `sh -c`; a value taken from an
//! object name or an event must reach the command as one word, never as shell syntax.

use std::collections::BTreeMap;

/// `s` as one single-quoted shell word (`it's` → `'it'\''s'`).
///
/// # Examples
/// ```
/// assert_eq!(conveyor_core::shell::quote("a b'c"), r"'a b'\''c'");
/// ```
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Replaces each `{name}` of `command` that `vars` has by its value, shell-quoted, and each
/// `{secret:…}` by a reference to its environment variable ([`env_name`]); other braces
/// (`${HOME}`, `{unknown}`) stay as they are.
///
/// # Examples
/// ```
/// use std::collections::BTreeMap;
/// let vars = BTreeMap::from([("date".to_owned(), "$(rm -rf ~)".to_owned())]);
/// assert_eq!(
///     conveyor_core::shell::render("run {date} ${HOME}", &vars),
///     "run '$(rm -rf ~)' ${HOME}"
/// );
/// ```
pub fn render(command: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(command.len());
    let mut rest = command;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after
            .find('}')
            .and_then(|end| vars.get(&after[..end]).map(|v| (end, v)))
        {
            // A secret never enters the command's text (a process listing, the job's
            // directory): the command reads it from its environment variable.
            Some((end, _)) if after[..end].starts_with("secret:") => {
                out.push_str(&format!("\"${{{}}}\"", env_name(&after[..end])));
                rest = &after[end + 1..];
            }
            Some((end, v)) => {
                out.push_str(&quote(v));
                rest = &after[end + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The environment variable a placeholder is also passed as: `CONVEYOR_` and its name in
/// upper case, other characters as `_` (`{run_id}` → `CONVEYOR_RUN_ID`).
pub fn env_name(placeholder: &str) -> String {
    let key: String = placeholder
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("CONVEYOR_{key}")
}

/// Whether `name` can be an environment variable of a shell (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn is_env_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The first value holding a NUL byte, named for a message (`the command`, `{date}`): no
/// process argument or environment variable can carry one, so such a command can never run.
pub fn nul_value(
    command: &str,
    vars: &BTreeMap<String, String>,
    env: &BTreeMap<String, String>,
) -> Option<String> {
    if command.contains('\0') {
        return Some("the command".to_owned());
    }
    vars.iter()
        .chain(env.iter())
        .find(|(k, v)| k.contains('\0') || v.contains('\0'))
        .map(|(k, _)| format!("{{{}}}", k.replace('\0', "\\0")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_referenced_by_its_variable_never_pasted() {
        let vars = BTreeMap::from([(
            "secret:projects/p/secrets/db-pass".to_owned(),
            "hunter2".to_owned(),
        )]);
        let out = render("login {secret:projects/p/secrets/db-pass}", &vars);
        assert_eq!(
            out,
            "login \"${CONVEYOR_SECRET_PROJECTS_P_SECRETS_DB_PASS}\""
        );
    }

    #[test]
    fn placeholders_are_shell_quoted() {
        let vars = BTreeMap::from([("date".to_owned(), "$(rm -rf ~)'x".to_owned())]);
        assert_eq!(
            render("echo {date} {other}", &vars),
            r"echo '$(rm -rf ~)'\''x' {other}"
        );
    }

    #[test]
    fn a_nul_byte_is_found_in_any_value() {
        let none = BTreeMap::new();
        let vars = BTreeMap::from([("date".to_owned(), "a\0b".to_owned())]);
        assert_eq!(nul_value("x", &vars, &none).as_deref(), Some("{date}"));
        assert_eq!(
            nul_value("x\0", &none, &none).as_deref(),
            Some("the command")
        );
        assert_eq!(nul_value("x", &none, &none), None);
        assert_eq!(env_name("run_id"), "CONVEYOR_RUN_ID");
        assert!(is_env_name("_A1") && !is_env_name("1A") && !is_env_name("A-B"));
    }
}
