//! A task's log: the tails of a local or SSH job's standard output and error, kept with its
//! run-log rows (bounded), and the line of them that says why it failed.
//!
//! A failing command's last line is often the least telling one (`lost connection` after
//! `sftp: Permission denied (publickey,password).`): [`telling_line`] picks the last line that
//! reads like an error, else the last line.

use serde::{Deserialize, Serialize};

/// At most this many bytes of each stream are kept (the end of it).
pub const TAIL_BYTES: usize = 4096;
/// At most this many lines of each stream are kept (the last ones).
pub const TAIL_LINES: usize = 40;

/// The tails of a job's standard output and error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLog {
    /// The end of its standard output.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stdout: String,
    /// The end of its standard error.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stderr: String,
}

impl TaskLog {
    /// The bounded tails of `stdout` and `stderr`; `None` when both are empty.
    pub fn from_outputs(stdout: &str, stderr: &str) -> Option<Self> {
        let log = Self {
            stdout: tail(stdout),
            stderr: tail(stderr),
        };
        (!log.stdout.is_empty() || !log.stderr.is_empty()).then_some(log)
    }
}

/// The end of `text`: its last [`TAIL_LINES`] lines, at most [`TAIL_BYTES`] bytes (cut at a
/// character boundary), without trailing blank lines.
pub fn tail(text: &str) -> String {
    let text = text.trim_end();
    let start = text
        .char_indices()
        .map(|(i, _)| i)
        .find(|&i| text.len() - i <= TAIL_BYTES)
        .unwrap_or(text.len());
    let text = &text[start..];
    let lines: Vec<&str> = text.lines().collect();
    let keep = lines.len().saturating_sub(TAIL_LINES);
    lines[keep..].join("\n")
}

/// Words that mark a line as the reason a command failed.
const TELLING: [&str; 16] = [
    "error",
    "denied",
    "fail",
    "fatal",
    "exception",
    "traceback",
    "cannot",
    "can't",
    "could not",
    "no such",
    "not found",
    "refused",
    "permission",
    "invalid",
    "unable",
    "panicked",
];

/// The line of a failed job's standard error that says why: the last one that reads like an
/// error (`Permission denied`, `ERROR:`, `No such file`, …), else the last non-empty one, at
/// most 500 characters; `None` when it is empty.
///
/// # Examples
/// ```
/// use conveyor_core::task_log::telling_line;
/// let stderr = "sftp: Permission denied (publickey,password).\nConnection closed\nlost connection\n";
/// assert_eq!(telling_line(stderr).as_deref(), Some("sftp: Permission denied (publickey,password)."));
/// assert_eq!(telling_line("step 1\nstep 2\n").as_deref(), Some("step 2"));
/// ```
pub fn telling_line(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let telling = lines.iter().rev().find(|l| {
        let lower = l.to_lowercase();
        TELLING.iter().any(|w| lower.contains(w))
    });
    telling
        .or(lines.last())
        .map(|l| l.chars().take(500).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_telling_line_is_the_last_error_like_one_not_the_last_line() {
        let stderr = "connecting\nsftp: Permission denied (publickey,password).\nConnection closed\nlost connection\n";
        assert_eq!(
            telling_line(stderr).as_deref(),
            Some("sftp: Permission denied (publickey,password).")
        );
        let py =
            "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: bad date\n";
        assert_eq!(telling_line(py).as_deref(), Some("ValueError: bad date"));
        assert_eq!(telling_line("done\n\n").as_deref(), Some("done"));
        assert_eq!(telling_line("\n \n"), None);
    }

    #[test]
    fn tails_keep_the_end_within_their_bounds() {
        let many: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let t = tail(&many);
        assert_eq!(t.lines().count(), TAIL_LINES);
        assert!(t.ends_with("line 99"));
        let long = "é".repeat(TAIL_BYTES);
        let t = tail(&long);
        assert!(t.len() <= TAIL_BYTES && t.chars().all(|c| c == 'é'));
        assert_eq!(TaskLog::from_outputs("", " \n"), None);
        assert_eq!(
            TaskLog::from_outputs("out\n", "").map(|l| l.stdout),
            Some("out".to_owned())
        );
    }
}
