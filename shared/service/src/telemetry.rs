//! Logging set-up: Cloud Logging JSON in production (through [`crate::cloud_logging`]), readable
//! text locally.

use std::io::IsTerminal as _;

use serde::Deserialize;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines on stderr, coloured only when stderr is a terminal and
    /// `NO_COLOR` is not set (a log written to a file or a pipe holds no escape codes).
    #[default]
    Text,
    /// One JSON object per line in Cloud Logging's structured format (tracing-stackdriver).
    Json,
}

/// Installs the global subscriber. `filter` is an `EnvFilter` directive such as
/// `info,conveyor=debug`. Calling it twice is harmless (the second call does nothing).
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let result = match format {
        LogFormat::Json => Registry::default()
            .with(filter)
            .with(
                tracing_stackdriver::layer()
                    .with_writer(crate::cloud_logging::CloudWriter::new(std::io::stdout)),
            )
            .try_init(),
        LogFormat::Text => Registry::default()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(colour(
                        std::io::stderr().is_terminal(),
                        std::env::var_os("NO_COLOR"),
                    ))
                    .with_target(false),
            )
            .try_init(),
    };
    let _ = result;
}

/// Whether text logs are coloured: on a terminal, unless `NO_COLOR` is set to anything but
/// the empty string (<https://no-color.org>).
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn text_logs_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())));
        assert!(!colour(true, Some("1".into())));
        assert!(
            !colour(false, None),
            "a file or a pipe gets no escape codes"
        );
    }
}
