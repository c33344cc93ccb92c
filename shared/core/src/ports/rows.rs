//! [`RowSink`]: tables that take rows as they come (Pub/Sub messages).

use async_trait::async_trait;

use super::PortError;
use crate::config::Partition;
use crate::format::Column;
use crate::names::TableRef;

/// Rows to append to a table as one idempotent write: the valid objects of one Pub/Sub
/// message (or its quarantined ones).
#[derive(Debug, Clone, PartialEq)]
pub struct RowBatch {
    /// Deterministic id (pipeline, message id, and which part): a batch once written is never
    /// written again. Letters, digits, `-` and `_`.
    pub batch_id: String,
    /// The destination, created with `columns` when missing.
    pub table: TableRef,
    /// The columns, in order.
    pub columns: Vec<Column>,
    /// Partitioning of a table the write creates.
    pub partition: Option<Partition>,
    /// Clustering columns of a table the write creates.
    pub clustering: Vec<String>,
    /// The rows, each a cell per column, already checked against the column's type: `null`,
    /// or a string (STRING; BYTES as base64; TIMESTAMP as RFC 3339 in UTC; DATE as
    /// `YYYY-MM-DD`; JSON as JSON text), an integer (INT64), a number (FLOAT64) or a boolean
    /// (BOOL).
    pub rows: Vec<Vec<serde_json::Value>>,
}

/// Tables that take rows as they come (Pub/Sub messages): BigQuery, or an embedded table.
#[async_trait]
pub trait RowSink: Send + Sync {
    /// `false` for [`Unwired`] only: what the start-up check of a function looks at.
    fn wired(&self) -> bool {
        true
    }

    /// Appends `batch`'s rows to its table, once: returns `false`, writing nothing, when a
    /// batch with this id was written before (a redelivered message).
    async fn insert_rows(&self, batch: &RowBatch) -> Result<bool, PortError>;
}
