//! `conveyor schedules`: the Cloud Scheduler jobs the pipeline file asks for, as JSON, for
//! Terraform (`conveyor schedules --tfvars > infra/schedules.auto.tfvars.json`).
#![allow(clippy::print_stdout)]

use std::path::Path;
use std::process::ExitCode;

use clap::ValueEnum;
use conveyor_core::config;
use conveyor_core::schedules::{self, scheduler_jobs};

/// How `conveyor schedules` prints the jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// A JSON array of jobs.
    Json,
    /// A Terraform variables file: `{"schedules": [...]}`, and `"message_pipelines"` (the
    /// push subscriptions of pipelines with `trigger.topic`) when there are some.
    Tfvars,
}

/// Prints one job per active pipeline with a schedule.
///
/// # Errors
/// When the file cannot be read or is invalid (every issue is in the message).
pub(crate) fn schedules(config_path: &Path, format: Format) -> anyhow::Result<ExitCode> {
    let config = config::load_file(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let jobs = scheduler_jobs(&config);
    let text = match format {
        Format::Json => schedules::to_json(&jobs),
        Format::Tfvars => {
            schedules::to_tfvars_with_messages(&jobs, &schedules::message_subscriptions(&config))
        }
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
