//! The [`RowSink`] port on BigQuery: a message's rows as one DML `INSERT` query job whose job
//! id is the batch id.
//!
//! Why a query job, not `tabledata.insertAll` or the Storage Write API: BigQuery refuses a
//! second job with an existing job id (409), so a redelivered message — minutes or days later,
//! from any instance — writes nothing twice; insertAll's `insertId` de-duplication is best
//! effort over about a minute (and the emulator has none), and the Storage Write API's
//! exactly-once offsets belong to one stream and one writer, which concurrent push deliveries
//! are not. The price is a query per message (~1 s, billed at the 10 MB minimum per DML
//! statement; DML has no daily quota): right for a low-volume feed such as seed 003's
//! mobile-app issues. A high-volume feed goes through Pub/Sub's native BigQuery subscription
//! instead (see `infra/`). With `CONVEYOR_BIGQUERY_EMULATOR=true` (the emulator runs a job
//! again under an existing id instead of answering 409) the id is looked up first.
//!
//! Values travel as typed query parameters, never inside the SQL text. A batch larger than
//! one statement should carry is split into chunks with ids `ID-c2`, `ID-c3`, ...; a job id
//! spent on a transient failure is followed by `ID-r2` ... `ID-r5`, as load jobs are.

use std::time::Duration;

use async_trait::async_trait;
use http::Method;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::load::bq_type;
use super::{BigQuery, Inserted, transient_reason};
use conveyor_core::config::PartitionKind;
use conveyor_core::format::Column;
use conveyor_core::ports::{PortError, RowBatch, RowSink};

/// Query parameters per statement (BigQuery allows 10,000).
const MAX_PARAMETERS: usize = 5_000;
/// Rows per statement.
const MAX_ROWS: usize = 500;
/// How long a request waits for its insert job.
const WAIT: Duration = Duration::from_secs(60);

impl BigQuery {
    /// Creates `batch`'s table when missing (409: it exists), once per process.
    async fn ensure_table(&self, batch: &RowBatch) -> Result<(), PortError> {
        let t = &batch.table;
        let project = self.project_of(t).to_owned();
        let key = format!("{project}.{}.{}", t.dataset, t.table);
        if self.run_logs_ready.lock().await.contains(&key) {
            return Ok(());
        }
        let fields: Vec<Value> = batch
            .columns
            .iter()
            .map(|c| json!({"name": c.name, "type": bq_type(c.ty), "mode": if c.nullable { "NULLABLE" } else { "REQUIRED" }}))
            .collect();
        let mut body = json!({
            "tableReference": {"projectId": project, "datasetId": t.dataset, "tableId": t.table},
            "schema": {"fields": fields},
        });
        if let Some(p) = &batch.partition {
            let kind = match p.kind {
                PartitionKind::Hour => "HOUR",
                PartitionKind::Day => "DAY",
                PartitionKind::Month => "MONTH",
                PartitionKind::Year => "YEAR",
            };
            body["timePartitioning"] = json!({"type": kind});
            if let Some(f) = &p.field {
                body["timePartitioning"]["field"] = json!(f);
            }
        }
        if !batch.clustering.is_empty() {
            body["clustering"] = json!({"fields": batch.clustering});
        }
        let tables = format!("projects/{project}/datasets/{}/tables", t.dataset);
        match self
            .call(Method::POST, &tables, &[], Some(&body), "create the table")
            .await
        {
            Ok(_) => info!(table = %t, "created the table"),
            Err(PortError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        self.run_logs_ready.lock().await.insert(key);
        Ok(())
    }

    /// The query job configuration inserting `rows`.
    fn insert_configuration(&self, batch: &RowBatch, rows: &[Vec<Value>]) -> Value {
        let t = &batch.table;
        let names: Vec<String> = batch
            .columns
            .iter()
            .map(|c| format!("`{}`", c.name))
            .collect();
        let mut values = Vec::with_capacity(rows.len());
        let mut parameters = Vec::with_capacity(rows.len() * batch.columns.len());
        for (r, row) in rows.iter().enumerate() {
            let mut placeholders = Vec::with_capacity(row.len());
            for (c, (column, cell)) in batch.columns.iter().zip(row).enumerate() {
                let name = format!("r{r}_{c}");
                placeholders.push(format!("@{name}"));
                parameters.push(parameter(&name, column, cell));
            }
            values.push(format!("({})", placeholders.join(", ")));
        }
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {}",
            super::quoted(self.project_of(t), t),
            names.join(", "),
            values.join(", ")
        );
        json!({"query": {
            "query": sql,
            "useLegacySql": false,
            "parameterMode": "NAMED",
            "queryParameters": parameters,
        }})
    }

    /// Inserts one chunk under `id` (or the next id of its series): `true` when this call
    /// wrote it, `false` when an earlier delivery had.
    async fn insert_chunk(
        &self,
        id: &str,
        batch: &RowBatch,
        rows: &[Vec<Value>],
    ) -> Result<bool, PortError> {
        for round in 1..=5u32 {
            let job_id = if round == 1 {
                id.to_owned()
            } else {
                format!("{id}-r{round}")
            };
            // 409 (or, with CONVEYOR_BIGQUERY_EMULATOR, a job found by a look-up) means an
            // earlier delivery inserted these rows under this id.
            let (existed, first) = match self
                .insert_job(&job_id, &self.insert_configuration(batch, rows))
                .await?
            {
                Inserted::New(job) => (false, Some(job)),
                Inserted::Exists => (true, None),
            };
            let job = self.wait_job(&job_id, first, WAIT).await?;
            if !job.done() {
                return Err(PortError::transient(format!(
                    "insert job {job_id} still runs; a redelivery will find it"
                )));
            }
            match job.error {
                None => return Ok(!existed),
                Some((reason, message)) if transient_reason(&reason) => {
                    warn!(job_id = %job_id, error = %message, "insert job failed transiently");
                    if existed {
                        // Spent: the next id of the series writes the rows.
                        continue;
                    }
                    return Err(PortError::transient(format!(
                        "insert job {job_id}: {message}"
                    )));
                }
                Some((_, message)) => {
                    return Err(PortError::permanent(format!(
                        "insert into {} failed: {message}",
                        batch.table
                    )));
                }
            }
        }
        Err(PortError::transient(format!(
            "insert job {id} failed transiently five times"
        )))
    }
}

/// A named query parameter of `column`'s type holding `cell` (null: no value).
fn parameter(name: &str, column: &Column, cell: &Value) -> Value {
    let value = match cell {
        Value::Null => json!({}),
        Value::String(s) => json!({"value": s}),
        other => json!({"value": other.to_string()}),
    };
    json!({
        "name": name,
        "parameterType": {"type": bq_type(column.ty)},
        "parameterValue": value,
    })
}

#[async_trait]
impl RowSink for BigQuery {
    async fn insert_rows(&self, batch: &RowBatch) -> Result<bool, PortError> {
        self.ensure_table(batch).await?;
        let per_chunk = (MAX_PARAMETERS / batch.columns.len().max(1)).clamp(1, MAX_ROWS);
        let mut wrote = false;
        for (i, rows) in batch.rows.chunks(per_chunk).enumerate() {
            let id = if i == 0 {
                batch.batch_id.clone()
            } else {
                format!("{}-c{}", batch.batch_id, i + 1)
            };
            wrote |= self.insert_chunk(&id, batch, rows).await?;
        }
        Ok(wrote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conveyor_core::format::ColumnType;

    #[test]
    fn cells_become_typed_parameters_and_null_has_no_value() {
        let col = |ty| Column {
            name: "x".into(),
            ty,
            nullable: true,
        };
        assert_eq!(
            parameter("r0_0", &col(ColumnType::Int64), &json!(3)),
            json!({"name": "r0_0", "parameterType": {"type": "INT64"}, "parameterValue": {"value": "3"}})
        );
        assert_eq!(
            parameter("r0_1", &col(ColumnType::String), &json!("it's")),
            json!({"name": "r0_1", "parameterType": {"type": "STRING"}, "parameterValue": {"value": "it's"}})
        );
        assert_eq!(
            parameter("r1_0", &col(ColumnType::Timestamp), &Value::Null)["parameterValue"],
            json!({})
        );
    }
}
