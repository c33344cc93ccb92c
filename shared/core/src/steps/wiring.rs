//! The start-up check of a runtime's wiring: every port a step needs for the pipeline file is
//! wired, every batch engine a job names runs here, and every run-log sink has what it needs
//! to connect. A function that fails it refuses to start, naming what is missing, instead of
//! meeting the gap on the first event that needs it.

use std::fmt;

use crate::config::{Config, Pipeline};
use crate::event::StepName;
use crate::ports::Ports;

/// What a runtime lacks to run its step for a pipeline file: one line per gap, each naming
/// the pipeline-file key that needs it and the port or setting that is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WiringError {
    /// The step.
    pub step: StepName,
    /// One line per gap.
    pub gaps: Vec<String>,
}

impl fmt::Display for WiringError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the {} step cannot run this pipeline file: {}",
            self.step,
            self.gaps.join("; ")
        )
    }
}

impl std::error::Error for WiringError {}

/// Checks that `ports` serve everything `step` needs for `config`'s active pipelines.
///
/// # Errors
/// A [`WiringError`] listing every gap.
pub fn check_wiring(step: StepName, config: &Config, ports: &Ports) -> Result<(), WiringError> {
    let mut gaps = Vec::new();
    let active: Vec<&Pipeline> = config.pipelines.iter().filter(|p| p.active).collect();
    if let Some(p) = active.first() {
        need(
            &mut gaps,
            ports.bus.wired(),
            "event bus",
            format!("pipeline {} (every step publishes its events)", p.name),
        );
    }
    for p in &active {
        let name = &p.name;
        match step {
            StepName::Stage => {
                if p.stage.is_some() {
                    need(
                        &mut gaps,
                        ports.store.wired(),
                        "object store",
                        format!("pipeline {name}: `stage`"),
                    );
                    need(
                        &mut gaps,
                        ports.sources.wired(),
                        "stage sources",
                        format!("pipeline {name}: `stage.source`"),
                    );
                    need(
                        &mut gaps,
                        ports.run_log.wired(),
                        "run log",
                        format!(
                            "pipeline {name}: `stage` (a pause, `conveyor pause`, is read there)"
                        ),
                    );
                }
            }
            StepName::Load => {
                if let Some(load) = &p.load {
                    need(
                        &mut gaps,
                        ports.warehouse.wired(),
                        "warehouse",
                        format!("pipeline {name}: `load`"),
                    );
                    need(
                        &mut gaps,
                        ports.run_log.wired(),
                        "run log",
                        format!(
                            "pipeline {name}: `load` (a pause, `conveyor pause`, is read there)"
                        ),
                    );
                    if load.check_generation || load.batch.is_some() {
                        need(
                            &mut gaps,
                            ports.store.wired(),
                            "object store",
                            format!("pipeline {name}: `load.check_generation` or `load.batch`"),
                        );
                    }
                }
                if p.trigger.topic.is_some() {
                    need(
                        &mut gaps,
                        ports.rows.wired(),
                        "row sink",
                        format!("pipeline {name}: `trigger.topic`"),
                    );
                }
            }
            StepName::Submit | StepName::Poll => {
                if !p.jobs.is_empty() {
                    need(
                        &mut gaps,
                        ports.batch.wired(),
                        "batch engines",
                        format!("pipeline {name}: `jobs`"),
                    );
                }
                if ports.batch.wired() {
                    for job in &p.jobs {
                        if let Some(why) = ports.batch.refuses(job.spec.engine()) {
                            gaps.push(format!("pipeline {name}, job {}: {why}", job.name));
                        }
                    }
                }
                let reads_rows = p
                    .jobs
                    .iter()
                    .any(|j| j.for_each.as_ref().is_some_and(|f| f.table.is_some()));
                if reads_rows {
                    need(
                        &mut gaps,
                        ports.warehouse.wired(),
                        "warehouse",
                        format!("pipeline {name}: `for_each.table`"),
                    );
                }
                if step == StepName::Submit && !p.trigger.after.is_empty() {
                    need(
                        &mut gaps,
                        ports.run_log.wired(),
                        "run log",
                        format!("pipeline {name}: `trigger.after`"),
                    );
                }
                if step == StepName::Poll {
                    need(
                        &mut gaps,
                        ports.run_log.wired(),
                        "run log",
                        format!("pipeline {name} (poll follows its runs in the run log)"),
                    );
                    if p.load.is_some() {
                        // Load jobs still running when the load request ended, and windows.
                        need(
                            &mut gaps,
                            ports.warehouse.wired(),
                            "warehouse",
                            format!("pipeline {name}: `load`"),
                        );
                    }
                    if p.load.as_ref().is_some_and(|l| l.batch.is_some()) {
                        need(
                            &mut gaps,
                            ports.store.wired(),
                            "object store",
                            format!("pipeline {name}: `load.batch`"),
                        );
                    }
                }
            }
            StepName::Log => {
                need(
                    &mut gaps,
                    ports.run_log.wired(),
                    "run log",
                    format!("pipeline {name}: `run_log`"),
                );
                for sink in config.run_log_target(Some(p)).sinks() {
                    need(
                        &mut gaps,
                        ports.sinks.wired(),
                        "run-log sinks",
                        format!("pipeline {name}: `run_log.postgres`"),
                    );
                    if ports.sinks.wired()
                        && let Some(why) = ports.sinks.lacks(&sink)
                    {
                        let gap = format!("`run_log.postgres` ({sink}): {why}");
                        if !gaps.contains(&gap) {
                            gaps.push(gap);
                        }
                    }
                }
            }
        }
    }
    if gaps.is_empty() {
        Ok(())
    } else {
        Err(WiringError { step, gaps })
    }
}

/// Adds a gap when a port `key` needs is not wired.
fn need(gaps: &mut Vec<String>, wired: bool, port: &str, key: String) {
    if !wired {
        gaps.push(format!(
            "{key} needs the {port}, which this function does not wire (its `ports`)"
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::parse_str;
    use crate::engines::Engines;
    use crate::inbound::Inbound;
    use crate::ports::{PortError, RunLogSinks};
    use crate::steps::{Context, StepError, handle};

    const LOAD_AND_BATCH: &str = r#"
run_log: { table: ops.run_log, postgres: { table: ops.run_log } }
pipelines:
  - name: sales
    trigger: { object: { bucket: landing, pattern: "sales/{date}/*.csv" } }
    load: { table: "analytics.sales_{date}", format: CSV }
    batch: { engine: local, command: "true" }
"#;

    fn config() -> Config {
        parse_str(LOAD_AND_BATCH, "conveyor.yaml").expect("config")
    }

    #[test]
    fn a_step_whose_ports_are_not_wired_is_refused_naming_what_needs_them() {
        let err = check_wiring(StepName::Load, &config(), &Ports::unwired())
            .expect_err("the load step has no warehouse, store or bus");
        let text = err.to_string();
        for needed in [
            "pipeline sales: `load` needs the warehouse",
            "`load.check_generation` or `load.batch` needs the object store",
            "needs the event bus",
        ] {
            assert!(text.contains(needed), "{needed:?} missing from: {text}");
        }
    }

    #[test]
    fn an_engine_the_runtime_does_not_run_is_refused_at_start_up() {
        let mut ports = Ports::unwired();
        ports.batch = Arc::new(Engines::new());
        let err = check_wiring(StepName::Submit, &config(), &ports).expect_err("no local engine");
        assert!(
            err.to_string().contains(
                "pipeline sales, job batch: `engine: local` runs in the embedded runtime only"
            ),
            "{err}"
        );
    }

    /// Sinks that can write to no PostgreSQL table without a connection string.
    struct NoUrl;

    #[async_trait::async_trait]
    impl RunLogSinks for NoUrl {
        fn lacks(&self, _: &crate::config::RunLogSink) -> Option<String> {
            Some("set CONVEYOR_POSTGRES_URL".to_owned())
        }

        async fn record(
            &self,
            _: &crate::config::RunLogSink,
            _: &crate::ports::RunLogRow,
        ) -> Result<(), PortError> {
            Ok(())
        }
    }

    #[test]
    fn a_sink_without_its_setting_is_refused_once_naming_the_setting() {
        let mut ports = Ports::unwired();
        let testing = Arc::new(crate::testing::MemoryStore::default());
        ports.store = testing;
        ports.sinks = Arc::new(NoUrl);
        let err = check_wiring(StepName::Log, &config(), &ports).expect_err("no url");
        let text = err.to_string();
        assert_eq!(text.matches("CONVEYOR_POSTGRES_URL").count(), 1, "{text}");
        assert!(text.contains("`run_log.postgres`"), "{text}");
        assert!(text.contains("needs the run log"), "{text}");
    }

    #[test]
    fn a_fully_wired_step_passes_and_inactive_pipelines_need_nothing() {
        let mut ports = Ports::unwired();
        ports.batch = Arc::new(Engines::new().with_local(Arc::new(crate::ports::Unwired)));
        // The local engine is registered (wired through Engines), the bus is not.
        let err = check_wiring(StepName::Submit, &config(), &ports).expect_err("no bus");
        assert_eq!(err.gaps.len(), 1, "{err}");
        let mut inactive = config();
        inactive.pipelines[0].active = false;
        assert_eq!(
            check_wiring(StepName::Load, &inactive, &Ports::unwired()),
            Ok(())
        );
    }

    #[tokio::test]
    async fn reaching_an_unwired_port_is_retried_not_rejected() {
        // A wiring mistake is the deployment's, not the event's: the event is answered with a
        // transient error (503, redelivered), never acknowledged as bad input and dropped.
        let ctx = Context::new(Arc::new(config()), Ports::unwired());
        let body = br#"{"bucket":"landing","name":"sales/2026-11-20/a.csv","generation":"1"}"#;
        let (_, inbound) = crate::inbound::parse_http(&http::HeaderMap::new(), body);
        let inbound: Inbound = inbound.expect("an object arrival");
        match handle(StepName::Load, &ctx, inbound).await {
            Err(StepError::Transient(why)) => {
                assert!(why.contains("wiring mistake"), "{why}");
            }
            other => panic!("expected a transient error, got {other:?}"),
        }
    }
}
