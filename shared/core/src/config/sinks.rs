//! Additional run-log sinks: besides its run-log table, the log step writes every row to each
//! sink the file names, once per event id (seed 000 logs the on-prem run in a Cloud SQL table
//! beside the BigQuery one).
//!
//! ```yaml
//! run_log:
//!   table: ops.conveyor_run_log
//!   postgres: { url_secret: projects/my-project/secrets/runlog-postgres, table: ops.run_log }
//! ```

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::SecretRef;

/// A PostgreSQL (Cloud SQL) table receiving the run log. The connection string is never in
/// the file: it is the secret `url_secret`, or, without one, the environment's
/// `CONVEYOR_POSTGRES_URL`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresSink {
    /// The Secret Manager secret holding the connection string
    /// (`postgres://user:password@host:5432/db?sslmode=require`), or a JSON object
    /// `{"url": ..., "ca": "-----BEGIN CERTIFICATE-----..."}` adding the server's CA.
    #[serde(default)]
    pub url_secret: Option<SecretRef>,
    /// `schema.table` (created when missing, with a `<table>_latest_status` view).
    pub table: PgTable,
}

/// A PostgreSQL table name, `schema.table` or `table` (schema `public`): unquoted
/// identifiers, letters, digits and `_`, at most 63 bytes each.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PgTable {
    /// The schema.
    pub schema: String,
    /// The table.
    pub table: String,
}

impl PgTable {
    /// Parses `schema.table` or `table`.
    ///
    /// # Errors
    /// When a part is not a plain identifier.
    pub fn parse(s: &str) -> Result<Self, String> {
        let ident = |p: &str| {
            !p.is_empty()
                && p.len() <= 63
                && p.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        let (schema, table) = match s.split_once('.') {
            Some((schema, table)) => (schema, table),
            None => ("public", s),
        };
        if !ident(schema) || !ident(table) {
            return Err(format!(
                "{s:?} is not a PostgreSQL table name: `schema.table`, each a letter or `_` followed by letters, digits or `_` (at most 63)"
            ));
        }
        Ok(Self {
            schema: schema.to_ascii_lowercase(),
            table: table.to_ascii_lowercase(),
        })
    }
}

impl fmt::Display for PgTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

impl Serialize for PgTable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PgTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One additional run-log sink.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RunLogSink {
    /// A PostgreSQL table.
    Postgres(PostgresSink),
}

impl fmt::Display for RunLogSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Postgres(p) => write!(f, "postgres table {}", p.table),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_plain_identifiers() {
        assert_eq!(
            PgTable::parse("ops.run_log").unwrap().to_string(),
            "ops.run_log"
        );
        assert_eq!(
            PgTable::parse("Run_Log").unwrap().to_string(),
            "public.run_log"
        );
        for bad in [
            "",
            "a.b.c",
            "ops.",
            "1x",
            "ops.run-log",
            "x\"; drop table y",
        ] {
            assert!(PgTable::parse(bad).is_err(), "{bad}");
        }
    }
}
