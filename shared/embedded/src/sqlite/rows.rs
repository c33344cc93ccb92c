//! The [`RowSink`] port: rows from messages, appended once per batch id (the dedup key is
//! recorded in `_jobs.sqlite`'s `load_jobs` in the same transaction as the rows).

use async_trait::async_trait;
use chrono::Utc;
use rusqlite::{OptionalExtension, params, types::Value as Sql};
use serde_json::Value;

use conveyor_core::ports::{PortError, RowBatch, RowSink};

use super::{SqliteWarehouse, attach, quoted, sql_type, table_columns, transient, ts};

fn cell(v: &Value) -> Sql {
    match v {
        Value::Null => Sql::Null,
        Value::Bool(b) => Sql::Integer(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Sql::Integer(i),
            None => Sql::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Sql::Text(s.clone()),
        other => Sql::Text(other.to_string()),
    }
}

#[async_trait]
impl RowSink for SqliteWarehouse {
    async fn insert_rows(&self, batch: &RowBatch) -> Result<bool, PortError> {
        let batch = batch.clone();
        self.with_db(move |db, dir| {
            attach(db, dir, &batch.table.dataset)?;
            let tx = db.conn.transaction().map_err(transient)?;
            let key = format!("rows:{}", batch.batch_id);
            let done: Option<i64> = tx
                .query_row(
                    "SELECT rows FROM load_jobs WHERE job_id = ?1",
                    params![key],
                    |r| r.get(0),
                )
                .optional()
                .map_err(transient)?;
            if done.is_some() {
                return Ok(false);
            }
            let table = quoted(&batch.table);
            let names: Vec<String> = batch.columns.iter().map(|c| c.name.clone()).collect();
            match table_columns(&tx, &batch.table)? {
                None => {
                    let cols: Vec<String> = batch
                        .columns
                        .iter()
                        .map(|c| {
                            format!(
                                "\"{}\" {}{}",
                                c.name.replace('"', "\"\""),
                                sql_type(c.ty),
                                if c.nullable { "" } else { " NOT NULL" }
                            )
                        })
                        .collect();
                    tx.execute_batch(&format!("CREATE TABLE {table} ({})", cols.join(", ")))
                        .map_err(transient)?;
                }
                Some(existing) if existing != names => {
                    return Err(PortError::permanent(format!(
                        "table {} has columns {existing:?}, not the declared {names:?}",
                        batch.table
                    )));
                }
                Some(_) => {}
            }
            {
                let placeholders = vec!["?"; names.len()].join(", ");
                let mut stmt = tx
                    .prepare(&format!("INSERT INTO {table} VALUES ({placeholders})"))
                    .map_err(transient)?;
                for row in &batch.rows {
                    stmt.execute(rusqlite::params_from_iter(row.iter().map(cell)))
                        .map_err(|e| {
                            PortError::permanent(format!("insert into {}: {e}", batch.table))
                        })?;
                }
            }
            tx.execute(
                "INSERT INTO load_jobs (job_id, destination, source, rows, finished_at) VALUES (?1, ?2, 'rows', ?3, ?4)",
                params![key, batch.table.to_string(), batch.rows.len() as i64, ts(&Utc::now())],
            )
            .map_err(transient)?;
            tx.commit().map_err(transient)?;
            Ok(true)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use conveyor_core::format::{Column, ColumnType};
    use conveyor_core::names::TableRef;
    use conveyor_core::ports::Warehouse;
    use serde_json::json;

    use super::*;
    use crate::LocalStore;

    #[tokio::test]
    async fn a_batch_is_written_once_whatever_its_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("b")).unwrap();
        let w = SqliteWarehouse::open(dir.path().join("w"), Arc::new(store)).unwrap();
        let batch = RowBatch {
            batch_id: "cv-msg-x-1".into(),
            table: TableRef::parse("ops.issues").unwrap(),
            columns: vec![
                Column {
                    name: "machine".into(),
                    ty: ColumnType::String,
                    nullable: false,
                },
                Column {
                    name: "severity".into(),
                    ty: ColumnType::Int64,
                    nullable: true,
                },
            ],
            partition: None,
            clustering: Vec::new(),
            rows: vec![
                vec![json!("drill-7"), json!(3)],
                vec![json!("truck-2"), json!(null)],
            ],
        };
        assert!(w.insert_rows(&batch).await.unwrap());
        assert!(
            !w.insert_rows(&batch).await.unwrap(),
            "a redelivery writes nothing"
        );
        assert_eq!(w.row_count(&batch.table).await.unwrap(), 2);
        let other = RowBatch {
            batch_id: "cv-msg-x-2".into(),
            ..batch.clone()
        };
        assert!(w.insert_rows(&other).await.unwrap());
        assert_eq!(w.row_count(&batch.table).await.unwrap(), 4);
    }
}
