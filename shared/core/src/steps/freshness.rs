//! Freshness deadlines (`expect`): on each poll tick, a pipeline whose run date of today (in
//! its `expect.time_zone`) has not SUCCEEDED by `expect.by` gets one `MISSED` run-log row for
//! that date and one alert; one whose last SUCCEEDED run ended more than `expect.within` ago
//! gets one `MISSED` row and one alert for that lapse. Each row is keyed (the pipeline and the
//! date; the pipeline and its last success), so every later tick (and every other instance)
//! finds it and raises nothing more.

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
        if let Some(within) = expect.within
            && let Some(line) = check_within(ctx, p, within, now).await?
        {
            missed.push(line);
        }
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
    let rows = ctx
        .pipeline_rows(
            p,
            RunLogQuery {
                date_from: Some(date),
                date_to: Some(date),
                ..RunLogQuery::default()
            },
        )
        .await?;
    let date_text = date.format("%Y-%m-%d").to_string();
    let event_id = short_hash(&[p.name.as_str(), MISSED, &date_text]);
    if rows.iter().any(|r| r.event_id == event_id) {
        return Ok(None);
    }
    let succeeded = crate::run_state::RunState::by_run(&rows)
        .values()
        .any(crate::run_state::RunState::succeeded);
    if succeeded {
        return Ok(None);
    }
    let error = format!(
        "no SUCCEEDED run of {} for {date_text} by {} {} (expect)",
        p.name,
        p.expect
            .as_ref()
            .and_then(|e| e.by.as_deref())
            .unwrap_or(""),
        p.expect.as_ref().map_or("", |e| e.time_zone.as_str())
    );
    let run_id = RunId::derive(&p.name, &[EXPECT_STEP, &date_text]);
    record_missed(ctx, p, run_id, event_id, deadline, date_text, error).await
}

/// `expect.within`: one `MISSED` row and one alert when the newest SUCCEEDED run ended longer
/// than `within` ago, keyed by that success (so once per lapse, whatever the ticks). One
/// run-log read: the pipeline's newest SUCCEEDED and MISSED rows.
async fn check_within(
    ctx: &Context,
    p: &Pipeline,
    within: std::time::Duration,
    now: DateTime<Utc>,
) -> Result<Option<String>, StepError> {
    let rows = ctx
        .pipeline_rows(
            p,
            RunLogQuery {
                statuses: vec!["SUCCEEDED".to_owned(), MISSED.to_owned()],
                limit: 500,
                ..RunLogQuery::default()
            },
        )
        .await?;
    // The newest run end that SUCCEEDED (a run's end names no job).
    let Some(last) = rows
        .iter()
        .filter(|r| r.status == "SUCCEEDED" && crate::run_state::is_run_end(r))
        .map(|r| r.finished_at.unwrap_or(r.td_timestamp))
        .max()
    else {
        return Ok(None);
    };
    let Ok(limit) = chrono::Duration::from_std(within) else {
        return Ok(None);
    };
    let deadline = last + limit;
    if now < deadline {
        return Ok(None);
    }
    let last_text = last.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let event_id = short_hash(&[p.name.as_str(), MISSED, "within", &last_text]);
    if rows.iter().any(|r| r.event_id == event_id) {
        return Ok(None);
    }
    let error = format!(
        "no SUCCEEDED run of {} within {} (the last ended {last_text}) (expect)",
        p.name,
        humantime::format_duration(within)
    );
    let run_id = RunId::derive(&p.name, &[EXPECT_STEP, "within", &last_text]);
    let date_text = deadline.format("%Y-%m-%d").to_string();
    record_missed(ctx, p, run_id, event_id, deadline, date_text, error).await
}

/// Records one `MISSED` row (idempotent on `event_id`) and raises its alert.
async fn record_missed(
    ctx: &Context,
    p: &Pipeline,
    run_id: RunId,
    event_id: String,
    deadline: DateTime<Utc>,
    date_text: String,
    error: String,
) -> Result<Option<String>, StepError> {
    let table = ctx.config.run_log_table(p);
    let now = Utc::now();
    let row = RunLogRow {
        td_timestamp: deadline,
        last_modified_at: now,
        environment: ctx.config.environment.clone(),
        status: MISSED.to_owned(),
        event_id,
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
        let event = ConveyorEvent::new(
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
        )
        .at(now);
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

    fn success_at(end: DateTime<Utc>) -> RunLogRow {
        RunLogRow {
            event_id: format!("end-{end}"),
            run_id: format!("fresh-{}", end.timestamp()),
            pipeline: Some("fresh".to_owned()),
            step: "submit".to_owned(),
            attempt: 1,
            status: "SUCCEEDED".to_owned(),
            td_timestamp: end,
            finished_at: Some(end),
            ..RunLogRow::default()
        }
    }

    #[tokio::test]
    async fn a_lapse_past_within_of_the_last_success_yields_one_alert_and_one_missed_row() {
        let yaml = r#"
pipelines:
  - name: fresh
    trigger: { manual: true }
    expect: { within: 26h }
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
        let table = TableRef::parse("conveyor.run_log").expect("table");
        let t0 = at("2026-11-20T03:00:00Z");
        // Never succeeded: `within` counts from a success, so nothing.
        assert!(
            check(&ctx, t0).await.expect("check").is_empty(),
            "a pipeline that never succeeded"
        );
        log.record(&table, &success_at(t0)).await.expect("record");
        let hours = |h: i64| t0 + chrono::Duration::hours(h);
        assert!(check(&ctx, hours(25)).await.expect("check").is_empty());
        // 26 h after the last success, and every tick after: one row, one alert.
        let first = check(&ctx, hours(26)).await.expect("check");
        assert_eq!(first.len(), 1, "{first:?}");
        assert!(first[0].contains("within 1day 2h"), "{first:?}");
        for h in [27, 30, 31] {
            assert!(check(&ctx, hours(h)).await.expect("check").is_empty());
        }
        let missed = |log: &Log| {
            log.0
                .lock()
                .expect("lock")
                .iter()
                .filter(|r| r.status == MISSED)
                .count()
        };
        assert_eq!(missed(&log), 1);
        assert_eq!(alerts.0.lock().expect("lock").len(), 1);
        // A new success, then another lapse: a second row and alert, for that lapse.
        log.record(&table, &success_at(hours(32)))
            .await
            .expect("record");
        assert!(check(&ctx, hours(57)).await.expect("check").is_empty());
        assert_eq!(check(&ctx, hours(58)).await.expect("check").len(), 1);
        assert!(check(&ctx, hours(59)).await.expect("check").is_empty());
        assert_eq!(missed(&log), 2);
        assert_eq!(alerts.0.lock().expect("lock").len(), 2);
    }
}
