//! Cloud Scheduler jobs derived from the pipeline configuration.
//!
//! Every *active* pipeline with a `trigger.schedule` gets one job that sends
//! `{"pipeline": NAME, "trigger": "schedule"}` to its first step: `stage` when the pipeline
//! stages data, `submit` otherwise (the same choice the embedded runtime makes). `conveyor
//! schedules --tfvars` writes this list where Terraform reads it (`infra/schedules.auto.tfvars.json`),
//! and Terraform's `for_each` over it creates, updates and deletes the jobs: a pipeline that is
//! made inactive or removed loses its job on the next apply.
//!
//! # Example
//! ```
//! let config = conveyor_core::config::parse_str(
//!     r#"
//! pipelines:
//!   - name: nightly
//!     trigger: { schedule: { cron: "0 2 * * *" } }
//!     batch: { engine: local, command: "true" }
//! "#,
//!     "conveyor.yaml",
//! )
//! .unwrap();
//! let jobs = conveyor_core::schedules::scheduler_jobs(&config);
//! assert_eq!(jobs[0].name, "conveyor-nightly");
//! assert_eq!(jobs[0].target.as_str(), "submit");
//! ```

use serde::Serialize;

use crate::config::{Config, Pipeline};
pub use crate::config::{check_cron, parse_time_zone};
use crate::event::StepName;
use crate::names::PipelineName;

/// One Cloud Scheduler job: when it fires, which function it calls and with what body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchedulerJob {
    /// The job's name, `conveyor-<pipeline>`.
    pub name: String,
    /// The pipeline it starts.
    pub pipeline: PipelineName,
    /// Five-field cron expression, as in the pipeline file.
    pub cron: String,
    /// IANA time zone of the cron expression.
    pub time_zone: String,
    /// The function called: the pipeline's first step.
    pub target: StepName,
    /// The JSON body sent, which the functions read as a scheduler tick.
    pub body: TickBody,
}

/// The body of a scheduler tick for one pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TickBody {
    /// The pipeline to start.
    pub pipeline: PipelineName,
    /// Always `schedule`: the run id then comes from the scheduled minute.
    pub trigger: &'static str,
}

/// The Cloud Scheduler jobs for `config`: one per active pipeline with a schedule, in file
/// order. Inactive pipelines get none, so deploying the list removes their jobs.
pub fn scheduler_jobs(config: &Config) -> Vec<SchedulerJob> {
    config
        .pipelines
        .iter()
        .filter(|p| p.active)
        .filter_map(|p| {
            let schedule = p.trigger.schedule.as_ref()?;
            Some(SchedulerJob {
                name: format!("conveyor-{}", p.name),
                pipeline: p.name.clone(),
                cron: schedule.cron.clone(),
                time_zone: schedule.time_zone.clone(),
                target: first_step(p),
                body: TickBody {
                    pipeline: p.name.clone(),
                    trigger: "schedule",
                },
            })
        })
        .collect()
}

/// The step a scheduled run starts with: `stage` when the pipeline copies data in, else
/// `submit` (a schedule cannot start a load: loads follow object arrivals).
pub fn first_step(pipeline: &Pipeline) -> StepName {
    if pipeline.stage.is_some() {
        StepName::Stage
    } else {
        StepName::Submit
    }
}

/// The jobs as a pretty-printed JSON array, with a final newline.
pub fn to_json(jobs: &[SchedulerJob]) -> String {
    pretty(&jobs)
}

/// The jobs as a Terraform variables file, `{"schedules": [...]}`, with a final newline: what
/// `infra/schedules.auto.tfvars.json` holds.
pub fn to_tfvars(jobs: &[SchedulerJob]) -> String {
    to_tfvars_with_messages(jobs, &[])
}

/// A message pipeline as Terraform deploys it: a push subscription on `topic` to the load
/// function's `/messages/<pipeline>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageSubscription {
    /// The pipeline.
    pub pipeline: PipelineName,
    /// Its topic, as the file names it (`NAME` or `projects/P/topics/NAME`).
    pub topic: String,
    /// Its table (`dataset.table`).
    pub table: String,
}

/// The push subscriptions for `config`: one per active pipeline with `trigger.topic`, in
/// file order.
pub fn message_subscriptions(config: &Config) -> Vec<MessageSubscription> {
    config
        .pipelines
        .iter()
        .filter(|p| p.active)
        .filter_map(|p| {
            Some(MessageSubscription {
                pipeline: p.name.clone(),
                topic: p.trigger.topic.as_ref()?.to_string(),
                table: p.load.as_ref()?.table.clone(),
            })
        })
        .collect()
}

/// The Terraform variables file with the message pipelines too (`"message_pipelines"`, only
/// when there are some, so a file without any prints what [`to_tfvars`] prints).
pub fn to_tfvars_with_messages(jobs: &[SchedulerJob], messages: &[MessageSubscription]) -> String {
    #[derive(Serialize)]
    struct Tfvars<'a> {
        schedules: &'a [SchedulerJob],
        #[serde(skip_serializing_if = "<[MessageSubscription]>::is_empty")]
        message_pipelines: &'a [MessageSubscription],
    }
    pretty(&Tfvars {
        schedules: jobs,
        message_pipelines: messages,
    })
}

fn pretty(value: &impl Serialize) -> String {
    // Serializing plain structs of strings cannot fail; an empty document would be caught by
    // the committed-file test.
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// The first time after `after` at which `cron` fires, evaluated in `time_zone` (as Cloud
/// Scheduler does: `0 7 * * *` in `Asia/Tokyo` fires at 22:00 UTC the day before).
///
/// # Errors
/// When the expression or the zone is invalid, or the expression never fires.
pub fn next_fire(
    cron: &str,
    time_zone: &str,
    after: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, String> {
    let zone = parse_time_zone(time_zone)?;
    let cron = croner::Cron::new(cron).parse().map_err(|e| e.to_string())?;
    cron.find_next_occurrence(&after.with_timezone(&zone), false)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| e.to_string())
}

/// The last time before `before` at which `cron` fires in `time_zone`: the start of the data
/// interval a run scheduled at `before` covers (Airflow's `data_interval_start`).
///
/// # Errors
/// When the expression or the zone is invalid, or it did not fire in the year before.
pub fn previous_fire(
    cron: &str,
    time_zone: &str,
    before: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, String> {
    // Walk forward from a little before `before`, widening the look-back until a fire is found
    // (a minute's cron finds one within the hour, a yearly one within 400 days).
    for back in [1_i64, 24, 24 * 32, 24 * 400] {
        let mut at = before - chrono::Duration::hours(back);
        let mut last = None;
        loop {
            let next = next_fire(cron, time_zone, at)?;
            if next >= before {
                break;
            }
            last = Some(next);
            at = next;
        }
        if let Some(t) = last {
            return Ok(t);
        }
    }
    Err(format!(
        "{cron:?} did not fire in the 400 days before {before}"
    ))
}

/// The date, in `time_zone`, of a schedule firing at `at` (a run's date: `0 1 * * *` in
/// `Asia/Tokyo` fires at 16:00 UTC the day before, for the Tokyo day). UTC's when the zone
/// does not parse (it was checked at start-up).
pub fn fire_date(at: chrono::DateTime<chrono::Utc>, time_zone: &str) -> chrono::NaiveDate {
    match parse_time_zone(time_zone) {
        Ok(zone) => at.with_timezone(&zone).date_naive(),
        Err(_) => at.date_naive(),
    }
}

/// Whether `cron` fires at most once on `date` in `time_zone`: such a schedule has one run
/// per run date (a tick, a `trigger --date` and a backfill of that date are the same run);
/// one firing more often has one run per tick.
pub fn fires_at_most_once_on(cron: &str, time_zone: &str, date: chrono::NaiveDate) -> bool {
    let Ok(zone) = parse_time_zone(time_zone) else {
        return false;
    };
    let Some(midnight) = date
        .and_hms_opt(0, 0, 0)
        .and_then(|t| t.and_local_timezone(zone).earliest())
    else {
        return false;
    };
    let before = midnight.with_timezone(&chrono::Utc) - chrono::Duration::seconds(1);
    let Ok(first) = next_fire(cron, time_zone, before) else {
        return true;
    };
    match next_fire(cron, time_zone, first) {
        Ok(second) => second.with_timezone(&zone).date_naive() != date,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;
    use crate::config;

    fn parse(yaml: &str) -> Config {
        config::parse_str(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn workspace_file(relative: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(relative)
    }

    fn example_config() -> Config {
        config::load_file(&workspace_file("examples/conveyor.yaml"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    const MIXED: &str = r#"
pipelines:
  - name: staged_nightly
    trigger: { schedule: { cron: "0 2 * * *", time_zone: Europe/Paris } }
    stage: { source: ./exports, bucket: landing }
  - name: batch_hourly
    trigger: { schedule: { cron: "15 * * * *" } }
    batch: { engine: local, command: "true" }
  - name: retired
    active: false
    trigger: { schedule: { cron: "0 3 * * *" } }
    batch: { engine: local, command: "true" }
  - name: on_arrival
    trigger:
      object: { bucket: landing, pattern: "in/*.csv" }
    load: { table: "analytics.t", format: CSV }
"#;

    #[test]
    fn an_active_scheduled_pipeline_gets_one_job_named_after_it() {
        let jobs = scheduler_jobs(&parse(MIXED));
        let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["conveyor-staged_nightly", "conveyor-batch_hourly"]);
    }

    #[test]
    fn an_inactive_pipeline_gets_no_job_even_with_a_schedule() {
        let jobs = scheduler_jobs(&parse(MIXED));
        assert!(jobs.iter().all(|j| j.pipeline.as_str() != "retired"));
    }

    #[test]
    fn a_pipeline_without_a_schedule_gets_no_job() {
        let jobs = scheduler_jobs(&parse(MIXED));
        assert!(jobs.iter().all(|j| j.pipeline.as_str() != "on_arrival"));
    }

    #[test]
    fn a_staging_pipeline_is_started_at_stage_and_any_other_at_submit() {
        let jobs = scheduler_jobs(&parse(MIXED));
        assert_eq!(jobs[0].target, StepName::Stage);
        assert_eq!(jobs[1].target, StepName::Submit);
    }

    #[test]
    fn the_time_zone_defaults_to_utc_and_is_kept_when_given() {
        let jobs = scheduler_jobs(&parse(MIXED));
        assert_eq!(jobs[0].time_zone, "Europe/Paris");
        assert_eq!(jobs[1].time_zone, "Etc/UTC");
        assert_eq!(jobs[1].cron, "15 * * * *");
    }

    #[test]
    fn the_body_is_a_scheduler_tick_for_the_pipeline() {
        let jobs = scheduler_jobs(&parse(MIXED));
        let body = serde_json::to_value(&jobs[1].body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"pipeline": "batch_hourly", "trigger": "schedule"})
        );
    }

    #[test]
    fn tfvars_wrap_the_list_under_schedules() {
        let jobs = scheduler_jobs(&parse(MIXED));
        let value: serde_json::Value = serde_json::from_str(&to_tfvars(&jobs)).unwrap();
        let list = value["schedules"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["target"], "stage");
        assert_eq!(list[0]["name"], "conveyor-staged_nightly");
    }

    #[test]
    fn a_file_without_schedules_gives_an_empty_list() {
        let jobs = scheduler_jobs(&parse(
            "pipelines:\n  - name: a\n    batch: { engine: local, command: \"true\" }\n",
        ));
        assert!(jobs.is_empty());
        assert_eq!(to_tfvars(&jobs), "{\n  \"schedules\": []\n}\n");
    }

    #[test]
    fn example_jobs_match_the_example_active_scheduled_pipelines() {
        let config = example_config();
        let expected: BTreeSet<String> = config
            .pipelines
            .iter()
            .filter(|p| p.active && p.trigger.schedule.is_some())
            .map(|p| format!("conveyor-{}", p.name))
            .collect();
        let jobs: BTreeSet<String> = scheduler_jobs(&config)
            .into_iter()
            .map(|j| j.name)
            .collect();
        assert_eq!(jobs, expected);
        // The example exercises both rules: a scheduled job and an inactive scheduled pipeline.
        assert!(
            !jobs.is_empty(),
            "the example has no active scheduled pipeline"
        );
        assert!(
            config
                .pipelines
                .iter()
                .any(|p| !p.active && p.trigger.schedule.is_some()),
            "the example has no inactive scheduled pipeline"
        );
    }

    #[test]
    fn committed_tfvars_match_the_deployment_example() {
        // The committed variables deploy examples/deploy.yaml, the example written for Google
        // Cloud (Terraform refuses examples/conveyor.yaml's local engine and source).
        let path = workspace_file("infra/schedules.auto.tfvars.json");
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let deploy = crate::config::load_file(&workspace_file("examples/deploy.yaml"))
            .expect("examples/deploy.yaml");
        assert_eq!(
            committed,
            to_tfvars(&scheduler_jobs(&deploy)),
            "infra/schedules.auto.tfvars.json is stale: regenerate it with \
             `conveyor --config examples/deploy.yaml schedules --tfvars > infra/schedules.auto.tfvars.json`"
        );
    }

    #[test]
    fn the_previous_fire_is_the_start_of_the_interval_a_scheduled_run_covers() {
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .with_timezone(&chrono::Utc)
        };
        assert_eq!(
            previous_fire("0 2 * * *", "Etc/UTC", at("2026-11-20T02:00:00Z")).unwrap(),
            at("2026-11-19T02:00:00Z")
        );
        assert_eq!(
            previous_fire("*/15 * * * *", "Etc/UTC", at("2026-11-20T02:00:00Z")).unwrap(),
            at("2026-11-20T01:45:00Z")
        );
        assert_eq!(
            previous_fire("0 7 1 * *", "Asia/Tokyo", at("2026-11-30T22:00:00Z")).unwrap(),
            at("2026-10-31T22:00:00Z")
        );
    }

    #[test]
    fn a_tokyo_schedule_fires_in_tokyo_time() {
        use chrono::TimeZone;
        let now = chrono::Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
        let next = next_fire("11 7 * * *", "Asia/Tokyo", now).unwrap();
        // 07:11 in Tokyo (UTC+9) is 22:11 UTC the day before, not 07:11 UTC.
        assert_eq!(
            next,
            chrono::Utc
                .with_ymd_and_hms(2026, 12, 1, 22, 11, 0)
                .unwrap()
        );
        let utc = next_fire("11 7 * * *", "Etc/UTC", now).unwrap();
        assert_eq!(
            utc,
            chrono::Utc.with_ymd_and_hms(2026, 12, 2, 7, 11, 0).unwrap()
        );
        // Daylight saving time: 02:30 in Paris is 00:30 UTC in summer, 01:30 in winter.
        let summer = chrono::Utc.with_ymd_and_hms(2026, 7, 1, 12, 0, 0).unwrap();
        assert_eq!(
            next_fire("30 2 * * *", "Europe/Paris", summer).unwrap(),
            chrono::Utc.with_ymd_and_hms(2026, 7, 2, 0, 30, 0).unwrap()
        );
        assert_eq!(
            next_fire("30 2 * * *", "Europe/Paris", now).unwrap(),
            chrono::Utc.with_ymd_and_hms(2026, 12, 2, 1, 30, 0).unwrap()
        );
        assert!(next_fire("11 7 * * *", "Mars/Olympus", now).is_err());
    }
}
