//! Data-quality checks: a job's, run by the poll step once the job's engine says it
//! SUCCEEDED and before its end is published, and a pipeline's, run by the submit step
//! before a run's SUCCEEDED end: a failing `error` check ends the job FAILED
//! (`CHECK_FAILED`, with the value observed), a failing `warn` check is recorded on its
//! SUCCEEDED row and logged. Each check is one read-only query on the warehouse (BigQuery, or
//! SQLite embedded); the observed value is compared here, so the SQL is the same in both.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use tracing::warn;

use super::Context;
use crate::config::{Check, Job, Pipeline, Severity};
use crate::event::Detail;
use crate::names::{JobId, RunId, TableRef};
use crate::ports::PortError;

/// What a job's checks found.
#[derive(Debug, Default)]
pub(super) struct Report {
    /// The failed `error` checks, as the job's error (`CHECK_FAILED: …`).
    pub(super) failure: Option<String>,
    /// The failed `warn` checks.
    pub(super) warnings: Vec<String>,
}

/// Runs `job`'s checks for `run_id` with the run's values.
///
/// # Errors
/// A warehouse that cannot be reached (transient: the next check runs them again). A check
/// the warehouse refuses is a failure of the check, not an error.
pub(super) async fn run(
    ctx: &Context,
    pipeline: &Pipeline,
    job: &Job,
    run_id: &RunId,
    detail: &Detail,
) -> Result<Report, PortError> {
    if job.checks.is_empty() {
        return Ok(Report::default());
    }
    let vars = super::submit::table_safe_vars(pipeline, Some(job), run_id, detail);
    run_checks(ctx, pipeline, job.name.as_str(), &job.checks, run_id, &vars).await
}

/// Runs the pipeline's own checks, once every job of a run SUCCEEDED (or its load, without
/// jobs), before the run's end.
///
/// # Errors
/// As [`run`].
pub(super) async fn run_for_pipeline(
    ctx: &Context,
    pipeline: &Pipeline,
    run_id: &RunId,
    detail: &Detail,
) -> Result<Report, PortError> {
    if pipeline.checks.is_empty() {
        return Ok(Report::default());
    }
    let vars = super::submit::table_safe_vars(pipeline, None, run_id, detail);
    run_checks(ctx, pipeline, "run", &pipeline.checks, run_id, &vars).await
}

/// Runs `checks` of `scope` (a job's name, or `run`).
async fn run_checks(
    ctx: &Context,
    pipeline: &Pipeline,
    scope: &str,
    checks: &[Check],
    run_id: &RunId,
    vars: &BTreeMap<String, String>,
) -> Result<Report, PortError> {
    let mut report = Report::default();
    let mut failures = Vec::new();
    for (i, check) in checks.iter().enumerate() {
        // One query job per check of the run's job: a check run again (its warehouse was
        // unreachable a moment) reads the same job's result.
        let job_id = JobId::derive(&format!("{scope}-check{i}"), run_id, 1);
        let found = match evaluate(ctx, check, &job_id, vars).await {
            Ok(None) => continue,
            Ok(Some(why)) => why,
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => format!("cannot run: {e}"),
        };
        let line = format!("check {}: {found}", check.label());
        warn!(pipeline = %pipeline.name, run_id = %run_id, scope, check = %check.label(), severity = ?check.severity, found = %found, "data-quality check failed");
        match check.severity {
            Severity::Error => failures.push(line),
            Severity::Warn => report.warnings.push(line),
        }
    }
    if !failures.is_empty() {
        report.failure = Some(format!("CHECK_FAILED: {}", failures.join("; ")));
    }
    Ok(report)
}

/// `None` when the check passes, else what was observed against what was expected.
async fn evaluate(
    ctx: &Context,
    check: &Check,
    job_id: &JobId,
    vars: &BTreeMap<String, String>,
) -> Result<Option<String>, PortError> {
    let select = |sql: String| async move { ctx.ports.warehouse.select_as(job_id, &sql, 1).await };
    let table = |t: &str| -> Result<String, PortError> {
        let rendered = crate::config::render_parameter(t, vars).map_err(PortError::permanent)?;
        let t = TableRef::parse(&rendered).map_err(|e| PortError::permanent(e.to_string()))?;
        Ok(format!("`{t}`"))
    };
    let count = |sql: String| async move {
        let rows = select(sql).await?;
        rows.first()
            .and_then(|r| r.get("observed"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| PortError::permanent("the count query gave no number"))
    };
    if let Some(sql) = &check.sql {
        let sql = crate::config::render_parameter(sql, vars).map_err(PortError::permanent)?;
        let rows = select(sql).await?;
        let Some(row) = rows.first() else {
            return Ok(Some(
                "observed no row, expected one with ok true".to_owned(),
            ));
        };
        let ok = row.get("ok").or_else(|| row.values().next());
        if ok.is_some_and(|v| crate::config::job_truthy(v.trim())) {
            return Ok(None);
        }
        let observed: Vec<String> = row.iter().map(|(k, v)| format!("{k}={v}")).collect();
        return Ok(Some(format!(
            "observed {}, expected ok true",
            observed.join(", ")
        )));
    }
    if let Some(r) = &check.row_count {
        let n = count(format!(
            "SELECT COUNT(*) AS observed FROM {}",
            table(&r.table)?
        ))
        .await?;
        let within = n >= r.min && r.max.is_none_or(|m| n <= m);
        return Ok((!within).then(|| match r.max {
            Some(m) => format!("observed {n} rows, expected {} to {m}", r.min),
            None => format!("observed {n} rows, expected at least {}", r.min),
        }));
    }
    if let Some(c) = &check.not_null {
        let cond = c
            .columns
            .iter()
            .map(|col| format!("{col} IS NULL"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let n = count(format!(
            "SELECT COUNT(*) AS observed FROM {} WHERE {cond}",
            table(&c.table)?
        ))
        .await?;
        return Ok((n > 0).then(|| {
            format!(
                "observed {n} rows with a NULL in {}, expected 0",
                c.columns.join(", ")
            )
        }));
    }
    if let Some(c) = &check.unique {
        let cols = c.columns.join(", ");
        let n = count(format!(
            "SELECT COUNT(*) AS observed FROM (SELECT {cols} FROM {} GROUP BY {cols} HAVING COUNT(*) > 1) AS duplicates",
            table(&c.table)?
        ))
        .await?;
        return Ok(
            (n > 0).then(|| format!("observed {n} duplicated values of ({cols}), expected 0"))
        );
    }
    if let Some(f) = &check.fresh {
        let rows = select(format!(
            "SELECT MAX({}) AS observed FROM {}",
            f.column,
            table(&f.table)?
        ))
        .await?;
        let newest = rows.first().and_then(|r| r.get("observed")).cloned();
        let limit = humantime::format_duration(f.within);
        let Some(text) = newest else {
            return Ok(Some(format!(
                "observed no value of {}, expected one within {limit}",
                f.column
            )));
        };
        let Some(at) = timestamp(&text) else {
            return Ok(Some(format!("observed {text:?}, which is not a timestamp")));
        };
        let age = (Utc::now() - at).to_std().unwrap_or_default();
        return Ok((age > f.within).then(|| {
            format!(
                "observed newest {} {} ({} old), expected within {limit}",
                f.column,
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                humantime::format_duration(std::time::Duration::from_secs(age.as_secs()))
            )
        }));
    }
    Err(PortError::permanent("the check names no kind"))
}

/// A timestamp as the warehouses give it: RFC 3339, `YYYY-MM-DD HH:MM:SS[.f]` (UTC, SQLite's
/// `CURRENT_TIMESTAMP`), `… UTC`, a date, or seconds since the epoch (BigQuery's REST answer).
fn timestamp(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.with_timezone(&Utc));
    }
    let naive = t.trim_end_matches(" UTC").replace('T', " ");
    if let Ok(d) = NaiveDateTime::parse_from_str(&naive, "%Y-%m-%d %H:%M:%S%.f") {
        return Some(d.and_utc());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|d| d.and_utc());
    }
    let secs: f64 = t.parse().ok()?;
    #[expect(clippy::cast_possible_truncation, reason = "seconds since the epoch")]
    DateTime::from_timestamp(secs.floor() as i64, 0)
}

#[cfg(test)]
mod tests {
    use super::timestamp;

    #[test]
    fn timestamps_of_either_warehouse_are_read() {
        let want = "2026-11-20T08:30:00Z";
        for t in [
            "2026-11-20T08:30:00Z",
            "2026-11-20 08:30:00",
            "2026-11-20 08:30:00.000 UTC",
            "1.7916282E9",
        ] {
            let got = timestamp(t).map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            if t.starts_with("1.") {
                assert!(got.is_some(), "{t}");
            } else {
                assert_eq!(got.as_deref(), Some(want), "{t}");
            }
        }
        assert_eq!(timestamp("yesterday"), None);
    }
}
