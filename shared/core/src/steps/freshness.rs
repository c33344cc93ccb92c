//! Freshness deadlines (`expect`): on each poll tick, a pipeline whose run date of today (in
//! its `expect.time_zone`) has not SUCCEEDED by `expect.by` gets one `MISSED` run-log row for
//! that date and one alert. The row is keyed by the pipeline and the date, so every later tick
//! (and every other instance) finds it and raises nothing more.

use chrono::{DateTime, Utc};
use tracing::warn;

use super::{Context, StepError};
use crate::config::Pipeline;
use crate::event::{ConveyorEvent, Detail, EventType, Status, StepName};
use crate::names::{RunId, short_hash};
use crate::ports::{RunLogQuery, RunLogRow};

/// The status of a missed deadline's row.
pub const MISSED: &str = "MISSED";
/// The step of a missed deadline's row.
pub const EXPECT_STEP: &str = "expect";

/// Checks every active pipeline's deadline at `now`: returns the lines of the deadlines it
/// recorded as missed.
///
/// # Errors
/// Transient when the run log cannot be read or written or the alert cannot be published.
pub(super) async fn check(ctx: &Context, now: DateTime<Utc>) -> Result<Vec<String>, StepError> {
    let mut missed = Vec::new();
    for p in ctx.config.pipelines.iter().filter(|p| p.active) {
        let Some(expect) = &p.expect else { continue };
        let Ok(zone) = crate::config::parse_time_zone(&expect.time_zone) else {
            continue;
        };
        let date = now.with_timezone(&zone).date_naive();
        let Some(deadline) = expect.deadline(date) else {
            continue;
        };
        if now < deadline {
            continue;
        }
        if let Some(line) = check_date(ctx, p, date, deadline).await? {
            missed.push(line);
        }
    }
    Ok(missed)
}

async fn check_date(
    ctx: &Context,
    p: &Pipeline,
    date: chrono::NaiveDate,
    deadline: DateTime<Utc>,
) -> Result<Option<String>, StepError> {
    let table = ctx.config.run_log_table(p);
    let rows = match ctx
        .ports
        .run_log
        .rows(
            &table,
            &RunLogQuery {
                pipeline: Some(p.name.to_string()),
                date_from: Some(date),
                date_to: Some(date),
                ..RunLogQuery::default()
            },
        )
        .await
    {
        Ok(rows) => rows,
        Err(crate::ports::PortError::NotFound(_)) => Vec::new(),
        Err(e) => return Err(StepError::from_port(e)),
    };
    if rows.iter().any(|r| r.status == MISSED) {
        return Ok(None);
    }
    let succeeded = crate::run_state::RunState::by_run(&rows)
        .values()
        .any(crate::run_state::RunState::succeeded);
    if succeeded {
        return Ok(None);
    }
    let date_text = date.format("%Y-%m-%d").to_string();
    let error = format!(
        "no SUCCEEDED run of {} for {date_text} by {} {} (expect)",
        p.name,
        p.expect.as_ref().map_or("", |e| e.by.as_str()),
        p.expect.as_ref().map_or("", |e| e.time_zone.as_str())
    );
    let run_id = RunId::derive(&p.name, &[EXPECT_STEP, &date_text]);
    let now = Utc::now();
    let row = RunLogRow {
        td_timestamp: deadline,
        last_modified_at: now,
        environment: ctx.config.environment.clone(),
        status: MISSED.to_owned(),
        event_id: short_hash(&[p.name.as_str(), MISSED, &date_text]),
        run_id: run_id.to_string(),
        pipeline: Some(p.name.to_string()),
        step: EXPECT_STEP.to_owned(),
        attempt: 1,
        error: Some(error.clone()),
        finished_at: Some(now),
        detail: "{}".to_owned(),
        run_date: Some(date_text.clone()),
        ..RunLogRow::default()
    };
    ctx.ports
        .run_log
        .record(&table, &row)
        .await
        .map_err(StepError::from_port)?;
    warn!(pipeline = %p.name, run_date = %date_text, "freshness deadline missed");
    if let Some(alerts) = &ctx.ports.alerts {
        let event = ConveyorEvent::new_at(
            now,
            EventType::StepFailed,
            run_id,
            Some(p.name.clone()),
            StepName::Poll,
            1,
            Status::Failed,
            Detail {
                error: Some(error.clone()),
                vars: [("date".to_owned(), date_text)].into(),
                ..Detail::default()
            },
        );
        alerts.publish(&event).await.map_err(|e| {
            StepError::Transient(format!("cannot publish to the alerts topic: {e}"))
        })?;
    }
    Ok(Some(error))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;

    use super::*;
    use crate::names::TableRef;
    use crate::ports::{EventBus, PortError, Ports, RunLog};

    /// A run log in memory, answering the pipeline and run-date filters as the adapters do.
    #[derive(Default)]
    struct Log(Mutex<Vec<RunLogRow>>);

    #[async_trait]
    impl RunLog for Log {
        async fn record(&self, _: &TableRef, row: &RunLogRow) -> Result<(), PortError> {
            let mut rows = self.0.lock().expect("lock");
            if !rows.iter().any(|r| r.event_id == row.event_id) {
                rows.push(row.clone());
            }
            Ok(())
        }
        async fn rows(&self, _: &TableRef, q: &RunLogQuery) -> Result<Vec<RunLogRow>, PortError> {
            let date = |d: Option<chrono::NaiveDate>| d.map(|d| d.to_string());
            Ok(self
                .0
                .lock()
                .expect("lock")
                .iter()
                .filter(|r| q.pipeline.is_none() || r.pipeline == q.pipeline)
                .filter(|r| {
                    date(q.date_from).is_none_or(|f| r.run_date.clone().unwrap_or_default() >= f)
                })
                .filter(|r| {
                    date(q.date_to).is_none_or(|t| r.run_date.clone().unwrap_or_default() <= t)
                })
                .cloned()
                .collect())
        }
        async fn open_batches(
            &self,
            _: &TableRef,
            _: DateTime<Utc>,
        ) -> Result<Vec<RunLogRow>, PortError> {
            Ok(Vec::new())
        }
    }

    #[derive(Default)]
    struct Alerts(Mutex<Vec<ConveyorEvent>>);

    #[async_trait]
    impl EventBus for Alerts {
        async fn publish(&self, event: &ConveyorEvent) -> Result<(), PortError> {
            self.0.lock().expect("lock").push(event.clone());
            Ok(())
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[tokio::test]
    async fn a_missed_deadline_yields_one_alert_and_one_missed_row_and_a_success_none() {
        let yaml = r#"
pipelines:
  - name: daily
    trigger: { manual: true }
    expect: { by: "06:00", time_zone: Europe/Paris, every: day }
    batch: { engine: local, command: "true" }
"#;
        let config = crate::config::parse_str(yaml, "t.yaml").expect("config");
        let log = Arc::new(Log::default());
        let alerts = Arc::new(Alerts::default());
        let ports = Ports {
            run_log: log.clone(),
            alerts: Some(alerts.clone()),
            ..Ports::unwired()
        };
        let ctx = Context::new(Arc::new(config), ports);
        // 04:59 UTC is 05:59 in Paris: not late yet.
        assert!(
            check(&ctx, at("2026-11-20T04:59:00Z"))
                .await
                .expect("check")
                .is_empty()
        );
        // Late: one row, one alert, however many ticks follow.
        for minute in ["05:00", "05:01", "09:30"] {
            check(&ctx, at(&format!("2026-11-20T{minute}:00Z")))
                .await
                .expect("check");
        }
        let rows = log.0.lock().expect("lock").clone();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].status, MISSED);
        assert_eq!(rows[0].run_date.as_deref(), Some("2026-11-20"));
        assert_eq!(alerts.0.lock().expect("lock").len(), 1);
        // A day whose run SUCCEEDED before the deadline: nothing.
        log.record(
            &TableRef::parse("conveyor.run_log").expect("table"),
            &RunLogRow {
                event_id: "end".to_owned(),
                run_id: "daily-1".to_owned(),
                pipeline: Some("daily".to_owned()),
                step: "submit".to_owned(),
                attempt: 1,
                status: "SUCCEEDED".to_owned(),
                run_date: Some("2026-11-21".to_owned()),
                td_timestamp: at("2026-11-21T03:00:00Z"),
                ..RunLogRow::default()
            },
        )
        .await
        .expect("record");
        assert!(
            check(&ctx, at("2026-11-21T06:00:00Z"))
                .await
                .expect("check")
                .is_empty()
        );
        assert_eq!(alerts.0.lock().expect("lock").len(), 1);
    }
}
