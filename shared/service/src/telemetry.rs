//! Logging set-up: Cloud Logging JSON in production (through [`crate::cloud_logging`]), readable
//! text locally.

use serde::Deserialize;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines on stderr.
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
                    .with_target(false),
            )
            .try_init(),
    };
    let _ = result;
}
