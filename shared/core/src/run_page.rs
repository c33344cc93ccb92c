//! Pages of runs read with a query, not a fixed number of newest rows: what the console's
//! pages and `/api/runs` show, fast on a run log of a million rows.
//!
//! A page is read in two queries per run-log table, each written once per dialect by the
//! adapters ([`RunLog::run_starts`], [`RunLog::rows_of_runs`]):
//! 1. the runs, by their **first row** (the oldest row of the run among the rows that pass
//!    the filters), newest first, after a cursor ([`RunStart`]): keyset paging, so a deep
//!    page costs what the first one does;
//! 2. every row of those runs, from which [`RunState`] says what each run is.
//!
//! A status filter is on the run's state, which only its rows decide: the first query keeps
//! the runs with a row of a [`candidate_statuses`] status (every run in the state has one),
//! and [`page`] keeps those whose state matches, reading further pages until it has enough.
//! [`starts_in_memory`] is the reference the adapters are tested against (the run-log
//! conformance suite) and the trait's default.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::names::TableRef;
use crate::ports::{PortError, RunLog, RunLogRow, RunStart, RunsQuery};
use crate::run_state::{RETRYING, RunState, newest_first};

/// How many reads [`page`] makes at most to fill a status-filtered page (each of up to
/// [`MAX_SCAN`] runs): a rare state on a long history ends the page early, with a cursor.
pub const MAX_ROUNDS: usize = 8;

/// How many runs one read of a status-filtered page asks for at most.
pub const MAX_SCAN: usize = 2_000;

/// The row statuses of which a run in one of `statuses` has at least one: the statuses
/// themselves, and FAILED for RETRYING (a failed attempt whose retry is pending).
pub fn candidate_statuses(statuses: &[String]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for s in statuses {
        if s == RETRYING {
            out.insert("FAILED".to_owned());
        } else {
            out.insert(s.clone());
        }
    }
    out.into_iter().collect()
}

/// Whether `row` passes the row filters of `query` (pipeline, run dates).
pub fn row_matches(row: &RunLogRow, query: &RunsQuery) -> bool {
    let date = row.run_date.as_deref();
    query
        .pipeline
        .as_ref()
        .is_none_or(|p| row.pipeline.as_ref() == Some(p))
        && query
            .date_from
            .is_none_or(|f| date.is_some_and(|d| d >= f.to_string().as_str()))
        && query
            .date_to
            .is_none_or(|t| date.is_some_and(|d| d <= t.to_string().as_str()))
}

/// The runs of `rows` that `query` selects (see [`RunLog::run_starts`]), picked in memory:
/// the reference definition.
pub fn starts_in_memory(rows: &[RunLogRow], query: &RunsQuery) -> Vec<RunStart> {
    let candidates = candidate_statuses(&query.statuses);
    let mut runs: HashMap<&str, (RunStart, bool)> = HashMap::new();
    for r in rows.iter().filter(|r| row_matches(r, query)) {
        let has = candidates.is_empty() || candidates.contains(&r.status);
        let e = runs.entry(r.run_id.as_str()).or_insert_with(|| {
            (
                RunStart {
                    first: r.td_timestamp,
                    run_id: r.run_id.clone(),
                },
                false,
            )
        });
        e.0.first = e.0.first.min(r.td_timestamp);
        e.1 |= has;
    }
    let mut out: Vec<RunStart> = runs
        .into_values()
        .filter(|(start, has)| *has && query.before.as_ref().is_none_or(|b| start < b))
        .map(|(start, _)| start)
        .collect();
    out.sort_by(|a, b| b.cmp(a));
    if query.limit > 0 {
        out.truncate(query.limit);
    }
    out
}

/// One run of a page: where it stands and its rows (newest first).
#[derive(Debug, Clone, PartialEq)]
pub struct PagedRun {
    /// Its place in the order.
    pub start: RunStart,
    /// Its rows, newest first.
    pub rows: Vec<RunLogRow>,
}

/// A page of runs and the cursor of the next one.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunsPage {
    /// The runs, newest first.
    pub runs: Vec<PagedRun>,
    /// Pass as `before` for the next page; `None` on the last page.
    pub next: Option<RunStart>,
}

impl RunsPage {
    /// Every row of the page's runs.
    pub fn rows(&self) -> Vec<RunLogRow> {
        self.runs.iter().flat_map(|r| r.rows.clone()).collect()
    }
}

/// The runs `query` selects from every table of `tables` (a table not made yet has none):
/// at most `query.limit` runs (0: every one), newest first, each with its rows and in a state
/// of `query.statuses` when that is set.
///
/// # Errors
/// The run log's error.
pub async fn page(
    log: &dyn RunLog,
    tables: &[TableRef],
    query: &RunsQuery,
) -> Result<RunsPage, PortError> {
    let want = query.limit;
    let filtered = !query.statuses.is_empty();
    let mut out = Vec::new();
    let mut cursor = query.before.clone();
    for _ in 0..MAX_ROUNDS {
        // One more than wanted tells whether there is a next page.
        let ask = match (want, filtered) {
            (0, _) => 0,
            (n, false) => n + 1,
            (n, true) => ((n + 1 - out.len()) * 4).clamp(n + 1, MAX_SCAN),
        };
        let starts = starts(
            log,
            tables,
            &RunsQuery {
                before: cursor.clone(),
                limit: ask,
                ..query.clone()
            },
        )
        .await?;
        let exhausted = ask == 0 || starts.len() < ask;
        let ids: Vec<String> = starts.iter().map(|s| s.run_id.clone()).collect();
        let since = starts
            .iter()
            .map(|s| s.first)
            .min()
            .map(|t| t - ROWS_MARGIN);
        let mut rows = rows_of_runs(log, tables, &ids, since).await?;
        for start in starts {
            let run_rows = rows.remove(&start.run_id).unwrap_or_default();
            let keep = !filtered
                || RunState::from_rows(&run_rows)
                    .is_some_and(|s| query.statuses.contains(&s.status));
            if keep {
                if want > 0 && out.len() == want {
                    // A run after the page's last: there is a next page.
                    let next = out.last().map(|r: &PagedRun| r.start.clone());
                    return Ok(RunsPage { runs: out, next });
                }
                out.push(PagedRun {
                    start: start.clone(),
                    rows: run_rows,
                });
            }
            cursor = Some(start);
        }
        if exhausted {
            return Ok(RunsPage {
                runs: out,
                next: None,
            });
        }
    }
    // Not filled within the rounds: what was found, and where to go on from.
    Ok(RunsPage {
        runs: out,
        next: cursor,
    })
}

async fn starts(
    log: &dyn RunLog,
    tables: &[TableRef],
    query: &RunsQuery,
) -> Result<Vec<RunStart>, PortError> {
    let mut all: BTreeMap<String, RunStart> = BTreeMap::new();
    for t in tables {
        match log.run_starts(t, query).await {
            Ok(starts) => {
                for s in starts {
                    // A run in two tables (its pipeline's table changed) starts at its first.
                    let e = all.entry(s.run_id.clone()).or_insert_with(|| s.clone());
                    if s.first < e.first {
                        *e = s;
                    }
                }
            }
            Err(PortError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let mut out: Vec<RunStart> = all.into_values().collect();
    out.sort_by(|a, b| b.cmp(a));
    if query.limit > 0 {
        out.truncate(query.limit);
    }
    Ok(out)
}

/// How much older than the oldest first row of a page's runs their rows are read from: a
/// run's first row is its oldest, but [`RunLog::run_starts`] finds it among the rows its
/// filters keep (a row without a run date, written before the column existed, is not among
/// them). A week costs BigQuery seven more day partitions and keeps such a run whole.
pub const ROWS_MARGIN: chrono::Duration = chrono::Duration::days(7);

async fn rows_of_runs(
    log: &dyn RunLog,
    tables: &[TableRef],
    ids: &[String],
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<HashMap<String, Vec<RunLogRow>>, PortError> {
    let mut by_run: HashMap<String, Vec<RunLogRow>> = HashMap::new();
    if ids.is_empty() {
        return Ok(by_run);
    }
    let mut seen = BTreeSet::new();
    for t in tables {
        match log.rows_of_runs(t, ids, since).await {
            Ok(rows) => {
                for r in rows {
                    if seen.insert(r.event_id.clone()) {
                        by_run.entry(r.run_id.clone()).or_default().push(r);
                    }
                }
            }
            Err(PortError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    for rows in by_run.values_mut() {
        rows.sort_by(newest_first);
    }
    Ok(by_run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn row(run: &str, status: &str, secs: i64, date: &str) -> RunLogRow {
        RunLogRow {
            event_id: format!("{run}-{status}-{secs}"),
            run_id: run.to_owned(),
            pipeline: Some(if run.starts_with('a') { "a" } else { "b" }.to_owned()),
            step: "load".to_owned(),
            attempt: 1,
            status: status.to_owned(),
            td_timestamp: Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap(),
            run_date: Some(date.to_owned()),
            ..RunLogRow::default()
        }
    }

    /// A run log in memory that answers with the trait's defaults.
    struct Mem(Vec<RunLogRow>);

    #[async_trait::async_trait]
    impl RunLog for Mem {
        async fn record(&self, _: &TableRef, _: &RunLogRow) -> Result<(), PortError> {
            Ok(())
        }
        async fn rows(
            &self,
            _: &TableRef,
            q: &crate::ports::RunLogQuery,
        ) -> Result<Vec<RunLogRow>, PortError> {
            Ok(self
                .0
                .iter()
                .filter(|r| q.run_id.as_ref().is_none_or(|id| &r.run_id == id))
                .cloned()
                .collect())
        }
        async fn open_batches(
            &self,
            _: &TableRef,
            _: chrono::DateTime<Utc>,
        ) -> Result<Vec<RunLogRow>, PortError> {
            Ok(Vec::new())
        }
    }

    fn log() -> Mem {
        // a1 (day 1) succeeds; b2 fails; a3 fails then its retry succeeds; a4 runs.
        Mem(vec![
            row("a1", "RUNNING", 0, "2026-11-01"),
            row("a1", "SUCCEEDED", 5, "2026-11-01"),
            row("b2", "FAILED", 10, "2026-11-02"),
            row("a3", "FAILED", 20, "2026-11-03"),
            RunLogRow {
                attempt: 2,
                ..row("a3", "SUCCEEDED", 25, "2026-11-03")
            },
            row("a4", "RUNNING", 30, "2026-11-04"),
        ])
    }

    /// [`Mem`], recording the `since` each read of rows was told.
    struct Since(Mem, std::sync::Mutex<Vec<chrono::DateTime<Utc>>>);

    #[async_trait::async_trait]
    impl RunLog for Since {
        async fn record(&self, t: &TableRef, r: &RunLogRow) -> Result<(), PortError> {
            self.0.record(t, r).await
        }
        async fn rows(
            &self,
            t: &TableRef,
            q: &crate::ports::RunLogQuery,
        ) -> Result<Vec<RunLogRow>, PortError> {
            self.0.rows(t, q).await
        }
        async fn open_batches(
            &self,
            t: &TableRef,
            since: chrono::DateTime<Utc>,
        ) -> Result<Vec<RunLogRow>, PortError> {
            self.0.open_batches(t, since).await
        }
        async fn rows_of_runs(
            &self,
            t: &TableRef,
            ids: &[String],
            since: Option<chrono::DateTime<Utc>>,
        ) -> Result<Vec<RunLogRow>, PortError> {
            let since = since.expect("a page reads rows since its oldest run");
            self.1.lock().unwrap().push(since);
            let rows = self.0.rows_of_runs(t, ids, None).await?;
            Ok(rows
                .into_iter()
                .filter(|r| r.td_timestamp >= since)
                .collect())
        }
    }

    #[tokio::test]
    async fn a_pages_rows_are_read_from_its_oldest_runs_first_row_less_the_margin() {
        let log = Since(log(), std::sync::Mutex::default());
        let t = [TableRef::parse("conveyor.run_log").unwrap()];
        let q = RunsQuery {
            limit: 2,
            ..RunsQuery::default()
        };
        let first = page(&log, &t, &q).await.unwrap();
        assert_eq!(ids(&first), ["a4", "a3"]);
        assert_eq!(first.runs[1].rows.len(), 2, "every row of the run");
        // The page read a4, a3 and b2 (one more, to know there is a next page): b2's first
        // row is the oldest.
        let b2_first = Utc.timestamp_opt(1_700_000_010, 0).unwrap();
        assert_eq!(*log.1.lock().unwrap(), [b2_first - ROWS_MARGIN]);
    }

    fn ids(p: &RunsPage) -> Vec<&str> {
        p.runs.iter().map(|r| r.start.run_id.as_str()).collect()
    }

    #[tokio::test]
    async fn pages_follow_each_other_newest_first_with_a_cursor() {
        let log = log();
        let t = [TableRef::parse("conveyor.run_log").unwrap()];
        let q = RunsQuery {
            limit: 2,
            ..RunsQuery::default()
        };
        let first = page(&log, &t, &q).await.unwrap();
        assert_eq!(ids(&first), ["a4", "a3"]);
        assert_eq!(first.runs[1].rows.len(), 2, "every row of the run");
        let second = page(
            &log,
            &t,
            &RunsQuery {
                before: first.next.clone(),
                ..q.clone()
            },
        )
        .await
        .unwrap();
        assert_eq!(ids(&second), ["b2", "a1"]);
        assert_eq!(second.next, None, "the last page");
    }

    #[tokio::test]
    async fn a_status_filter_is_on_the_runs_state_not_on_any_row() {
        let log = log();
        let t = [TableRef::parse("conveyor.run_log").unwrap()];
        let failed = page(
            &log,
            &t,
            &RunsQuery {
                statuses: vec!["FAILED".into()],
                limit: 10,
                ..RunsQuery::default()
            },
        )
        .await
        .unwrap();
        // a3 has a FAILED row, but its last attempt succeeded.
        assert_eq!(ids(&failed), ["b2"]);
        let succeeded_a = page(
            &log,
            &t,
            &RunsQuery {
                statuses: vec!["SUCCEEDED".into()],
                pipeline: Some("a".into()),
                limit: 1,
                ..RunsQuery::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(ids(&succeeded_a), ["a3"]);
        assert!(succeeded_a.next.is_some(), "a1 follows");
        let dated = starts_in_memory(
            &log.0,
            &RunsQuery {
                date_from: chrono::NaiveDate::from_ymd_opt(2026, 11, 2),
                date_to: chrono::NaiveDate::from_ymd_opt(2026, 11, 3),
                ..RunsQuery::default()
            },
        );
        let dated: Vec<&str> = dated.iter().map(|s| s.run_id.as_str()).collect();
        assert_eq!(dated, ["a3", "b2"]);
    }

    #[test]
    fn retrying_runs_are_found_by_their_failed_rows() {
        assert_eq!(
            candidate_statuses(&["RETRYING".into(), "RUNNING".into()]),
            ["FAILED", "RUNNING"]
        );
    }
}
