//! `engine: sql` in the embedded mode: the query runs on SQLite with every dataset of the
//! warehouse attached, so `dataset.table` names work as in BigQuery. A job runs within its
//! submit, in one transaction with its record in `_jobs.sqlite` (`query_jobs`): exactly once
//! per job id; a resubmission adopts the record. The poll step then reads DONE or FAILED.
//!
//! GoogleSQL and SQLite differ; the common forms work on both: `SELECT … FROM ds.t`,
//! `INSERT INTO ds.t SELECT …`, `DELETE FROM ds.t WHERE …`. `TRUNCATE TABLE ds.t` is run as
//! `DELETE FROM ds.t`, and a backquoted `` `project.ds.t` `` as `ds.t`; the GoogleSQL functions
//! and forms of [`super::googlesql`] are provided (and the ones it lists are not).

use async_trait::async_trait;
use chrono::Utc;
use rusqlite::{OptionalExtension, params};

use conveyor_core::config::{BatchSpec, CreateDisposition, WriteDisposition};
use conveyor_core::names::{JobId, TableRef};
use conveyor_core::ports::{BatchEngine, BatchRequest, JobState, PortError, Submitted};

use super::{Db, SqliteWarehouse, attach, quoted, table_columns, transient, ts};

/// The `sql` engine on the embedded warehouse.
#[derive(Clone)]
pub struct SqliteSqlEngine {
    warehouse: SqliteWarehouse,
}

impl SqliteSqlEngine {
    /// Runs query jobs on `warehouse`.
    pub fn new(warehouse: SqliteWarehouse) -> Self {
        Self { warehouse }
    }
}

/// Rewrites the GoogleSQL forms SQLite lacks (see the module docs).
pub(super) fn sqlite_dialect(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let mut rest = query;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('`') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let name = &after[..end];
        let parts: Vec<&str> = name.split('.').collect();
        let kept = if parts.len() == 3 {
            &parts[1..]
        } else {
            &parts[..]
        };
        out.push_str(
            &kept
                .iter()
                .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
                .collect::<Vec<_>>()
                .join("."),
        );
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    let trimmed = out.trim_start();
    if trimmed.len() >= 14 && trimmed[..14].eq_ignore_ascii_case("TRUNCATE TABLE") {
        return format!("DELETE FROM {}", &trimmed[14..]);
    }
    out
}

/// The datasets a query names where a table is expected (`FROM ds.t`, `INTO ds.t`,
/// `TABLE ds.t`, …): attached, and created when missing, as BigQuery's would exist.
fn named_datasets(query: &str) -> Vec<String> {
    static RE: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    let Some(re) = RE
        .get_or_init(|| {
            regex::Regex::new(
                r#"(?i)\b(?:from|join|into|table|update|exists)\s+["`]?([A-Za-z_][A-Za-z0-9_]*)["`]?\s*\.\s*["`]?[A-Za-z_]"#,
            )
            .ok()
        })
        .as_ref()
    else {
        return Vec::new();
    };
    re.captures_iter(query)
        .filter_map(|c| c.get(1).map(|m| m.as_str().to_owned()))
        .filter(|d| d != "main" && d != "temp")
        .collect()
}

/// Attaches every dataset file of the warehouse (so a query may name any dataset).
pub(super) fn attach_all(db: &mut Db, dir: &std::path::Path) -> Result<(), PortError> {
    let entries = std::fs::read_dir(dir).map_err(transient)?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "sqlite")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
            && !stem.starts_with('_')
            && stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            attach(db, dir, stem)?;
        }
    }
    Ok(())
}

/// SQLite's `busy` and `locked` errors pass; every other failure of a query is its own.
fn is_locked(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Runs the query (into `destination`, when given) inside the open transaction.
fn run(
    tx: &rusqlite::Transaction<'_>,
    query: &str,
    destination: Option<&TableRef>,
    write: WriteDisposition,
    create: CreateDisposition,
) -> Result<(), String> {
    let Some(t) = destination else {
        return tx.execute_batch(query).map_err(|e| e.to_string());
    };
    let table = quoted(t);
    let exists = table_columns(tx, t).map_err(|e| e.to_string())?.is_some();
    if !exists && create == CreateDisposition::CreateNever {
        return Err(format!(
            "table {t} does not exist and create_disposition is CREATE_NEVER"
        ));
    }
    let select = query.trim().trim_end_matches(';');
    let sql = match (exists, write) {
        (false, _) => format!("CREATE TABLE {table} AS {select}"),
        (true, WriteDisposition::WriteTruncate) => {
            tx.execute_batch(&format!("DROP TABLE {table}"))
                .map_err(|e| e.to_string())?;
            format!("CREATE TABLE {table} AS {select}")
        }
        (true, WriteDisposition::WriteAppend) => format!("INSERT INTO {table} {select}"),
        (true, WriteDisposition::WriteEmpty) => {
            let n: i64 = tx
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .map_err(|e| e.to_string())?;
            if n > 0 {
                return Err(format!(
                    "table {t} is not empty and write_disposition is WRITE_EMPTY"
                ));
            }
            format!("INSERT INTO {table} {select}")
        }
    };
    tx.execute_batch(&sql).map_err(|e| e.to_string())
}

#[async_trait]
impl BatchEngine for SqliteSqlEngine {
    async fn submit(&self, req: &BatchRequest) -> Result<Submitted, PortError> {
        let BatchSpec::Sql(spec) = &req.spec else {
            return Err(PortError::wrong_engine("sql", &req.spec));
        };
        let (query, destination) = spec.rendered(&req.vars).map_err(PortError::permanent)?;
        let query = super::googlesql::rewrite(&sqlite_dialect(&query));
        let write = spec
            .write_disposition
            .unwrap_or(WriteDisposition::WriteEmpty);
        let create = spec.create_disposition;
        let job_id = req.job_id.clone();
        self.warehouse
            .with_db(move |db, dir| {
                attach_all(db, dir)?;
                super::googlesql::register(&db.conn).map_err(transient)?;
                for d in named_datasets(&query) {
                    attach(db, dir, &d)?;
                }
                if let Some(t) = &destination {
                    attach(db, dir, &t.dataset)?;
                }
                db.conn
                    .execute_batch(
                        "CREATE TABLE IF NOT EXISTS main.query_jobs (job_id TEXT PRIMARY KEY,
                         state TEXT NOT NULL, error TEXT, finished_at TEXT NOT NULL)",
                    )
                    .map_err(transient)?;
                let tx = db
                    .conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(transient)?;
                let done: Option<String> = tx
                    .query_row(
                        "SELECT state FROM main.query_jobs WHERE job_id = ?1",
                        params![job_id.as_str()],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(transient)?;
                if done.is_some() {
                    return Ok(Submitted {
                        job_id,
                        adopted: true,
                    });
                }
                tx.execute_batch("SAVEPOINT query").map_err(transient)?;
                let (state, error) = match run(&tx, &query, destination.as_ref(), write, create)
                {
                    Ok(()) => {
                        tx.execute_batch("RELEASE query").map_err(transient)?;
                        ("DONE", None)
                    }
                    Err(e) => {
                        tx.execute_batch("ROLLBACK TO query; RELEASE query")
                            .map_err(transient)?;
                        if e.contains("database is locked") || e.contains("database is busy") {
                            return Err(PortError::transient(format!("sqlite: {e}")));
                        }
                        ("FAILED", Some(e))
                    }
                };
                tx.execute(
                    "INSERT INTO main.query_jobs (job_id, state, error, finished_at) VALUES (?1, ?2, ?3, ?4)",
                    params![job_id.as_str(), state, error, ts(&Utc::now())],
                )
                .map_err(|e| {
                    if is_locked(&e) {
                        PortError::transient(format!("sqlite: {e}"))
                    } else {
                        transient(e)
                    }
                })?;
                tx.commit().map_err(transient)?;
                Ok(Submitted {
                    job_id,
                    adopted: false,
                })
            })
            .await
    }

    async fn state(&self, _spec: &BatchSpec, job_id: &JobId) -> Result<JobState, PortError> {
        let job_id = job_id.clone();
        self.warehouse
            .with_db(move |db, _| {
                db.conn
                    .execute_batch(
                        "CREATE TABLE IF NOT EXISTS main.query_jobs (job_id TEXT PRIMARY KEY,
                         state TEXT NOT NULL, error TEXT, finished_at TEXT NOT NULL)",
                    )
                    .map_err(transient)?;
                let row: Option<(String, Option<String>)> = db
                    .conn
                    .query_row(
                        "SELECT state, error FROM main.query_jobs WHERE job_id = ?1",
                        params![job_id.as_str()],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()
                    .map_err(transient)?;
                match row {
                    Some((state, error)) => Ok(JobState {
                        log: None,
                        state,
                        terminal: true,
                        error,
                    }),
                    None => Err(PortError::not_found(format!("query job {job_id}"))),
                }
            })
            .await
    }

    async fn cancel(&self, _spec: &BatchSpec, _job_id: &JobId) -> Result<(), PortError> {
        // A query runs within its submit: there is nothing left to cancel.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_datasets_a_query_names_are_found() {
        assert_eq!(
            named_datasets(
                "CREATE TABLE IF NOT EXISTS cdf.configuration (a TEXT); INSERT INTO cdf.configuration \
                 SELECT x.a FROM staging.t AS x JOIN `ref`.u ON TRUE"
            ),
            ["cdf", "cdf", "staging", "ref"]
        );
    }

    #[test]
    fn backquoted_names_and_truncate_become_sqlite() {
        assert_eq!(
            sqlite_dialect("SELECT * FROM `proj.ds.t` JOIN `ds.u` USING (id)"),
            "SELECT * FROM \"ds\".\"t\" JOIN \"ds\".\"u\" USING (id)"
        );
        assert_eq!(
            sqlite_dialect("truncate table cdf.configuration"),
            "DELETE FROM  cdf.configuration"
        );
    }
}
