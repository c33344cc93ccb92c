//! Data-quality checks (`checks:` on a job): a SQL condition or a shorthand (`row_count`,
//! `not_null`, `unique`, `fresh`), run after the job SUCCEEDED.
//!
//! ```yaml
//! checks:
//!   - { row_count: { table: "analytics.orders_{date}", min: 1 } }
//!   - { not_null: { table: analytics.orders, columns: [order_id] } }
//!   - { unique: { table: analytics.orders, columns: [order_id] }, severity: warn }
//!   - { fresh: { table: analytics.orders, column: loaded_at, within: 26h } }
//!   - { name: positive, sql: "SELECT COUNT(*) = 0 AS ok FROM analytics.orders WHERE amount < 0" }
//! ```

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One check: exactly one of `sql`, `row_count`, `not_null`, `unique`, `fresh`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// Named in the run log's error; default: the kind and its table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A query whose first row's `ok` column (else its first column) must be true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// The table holds at least `min` rows (and at most `max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_count: Option<RowCount>,
    /// No row has a NULL in any of `columns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_null: Option<Columns>,
    /// No two rows have the same values in `columns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique: Option<Columns>,
    /// The newest value of `column` (a timestamp) is at most `within` old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fresh: Option<Fresh>,
    /// `error` (default): a failure fails the job; `warn`: it is recorded on the job's
    /// SUCCEEDED row and logged.
    #[serde(default)]
    pub severity: Severity,
}

/// `row_count: { table, min, max }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RowCount {
    /// `dataset.table`, placeholders allowed.
    pub table: String,
    /// The fewest rows allowed (default 1).
    #[serde(default = "one")]
    pub min: u64,
    /// The most rows allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
}

fn one() -> u64 {
    1
}

/// `not_null` / `unique: { table, columns }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Columns {
    /// `dataset.table`, placeholders allowed.
    pub table: String,
    /// Column names.
    pub columns: Vec<String>,
}

/// `fresh: { table, column, within }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fresh {
    /// `dataset.table`, placeholders allowed.
    pub table: String,
    /// A TIMESTAMP (or `YYYY-MM-DD HH:MM:SS` text) column.
    pub column: String,
    /// How old its newest value may be (`26h`).
    #[serde(with = "humantime_serde")]
    #[schemars(schema_with = "crate::config::schema::duration")]
    pub within: Duration,
}

/// What a failing check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The job fails (CHECK_FAILED).
    #[default]
    Error,
    /// Recorded and logged; the job succeeds.
    Warn,
}

impl Check {
    /// How many kinds the check sets (exactly one is valid).
    pub fn kinds(&self) -> usize {
        usize::from(self.sql.is_some())
            + usize::from(self.row_count.is_some())
            + usize::from(self.not_null.is_some())
            + usize::from(self.unique.is_some())
            + usize::from(self.fresh.is_some())
    }

    /// The check's kind and table, as its default name says them.
    pub fn label(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        match (&self.row_count, &self.not_null, &self.unique, &self.fresh) {
            (Some(r), ..) => format!("row_count {}", r.table),
            (_, Some(c), ..) => format!("not_null {}", c.table),
            (_, _, Some(c), _) => format!("unique {}", c.table),
            (.., Some(f)) => format!("fresh {}", f.table),
            _ => "sql".to_owned(),
        }
    }

    /// The templates the check renders (its table or its query).
    pub fn templates(&self) -> Vec<&str> {
        [
            self.sql.as_deref(),
            self.row_count.as_ref().map(|r| r.table.as_str()),
            self.not_null.as_ref().map(|c| c.table.as_str()),
            self.unique.as_ref().map(|c| c.table.as_str()),
            self.fresh.as_ref().map(|f| f.table.as_str()),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The column names the check names.
    pub fn columns(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for c in [&self.not_null, &self.unique].into_iter().flatten() {
            out.extend(c.columns.iter().map(String::as_str));
        }
        if let Some(f) = &self.fresh {
            out.push(&f.column);
        }
        out
    }
}
