//! The table a job writes: its SQLite name (case kept apart), created or checked against the
//! job's dispositions and schema update options, and the INSERT statements that fill it.

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use tracing::info;

use conveyor_core::config::{CreateDisposition, SchemaUpdateOption, WriteDisposition};
use conveyor_core::names::TableRef;
use conveyor_core::ports::{LoadJob, PortError};

use crate::sqlite::sql_type;

use super::sqlite_error;
use crate::formats::Column;

/// The SQLite name of BigQuery table `table` in its dataset: the name itself, unless a table
/// whose name differs only in case already holds it (SQLite compares table names without
/// case), then `<name>__<8 hex digits of SHA-256 of the name>`. `true` when it exists.
pub(in crate::sqlite) fn sqlite_name(
    conn: &Connection,
    table: &TableRef,
) -> Result<(String, bool), PortError> {
    let digest = Sha256::digest(table.table.as_bytes());
    let alternate = format!("{}__{}", table.table, hex::encode(&digest[..4]));
    // `=` compares with BINARY collation: exact case.
    let exact: Option<String> = conn
        .prepare_cached(&format!(
            "SELECT name FROM \"{}\".sqlite_master WHERE type = 'table' AND name IN (?1, ?2) \
             ORDER BY name = ?1 DESC LIMIT 1",
            table.dataset
        ))
        .and_then(|mut s| {
            s.query_row(params![table.table, alternate], |r| r.get(0))
                .optional()
        })
        .map_err(sqlite_error)?;
    if let Some(name) = exact {
        return Ok((name, true));
    }
    let taken: bool = conn
        .prepare_cached(&format!(
            "SELECT EXISTS (SELECT 1 FROM \"{}\".sqlite_master WHERE name = ?1 COLLATE NOCASE)",
            table.dataset
        ))
        .and_then(|mut s| s.query_row(params![table.table], |r| r.get(0)))
        .map_err(sqlite_error)?;
    Ok((
        if taken {
            alternate
        } else {
            table.table.clone()
        },
        false,
    ))
}

pub(super) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The columns (name, NOT NULL) of table `name` in `dataset`.
pub(super) fn columns_of(
    conn: &Connection,
    dataset: &str,
    name: &str,
) -> Result<Vec<(String, bool)>, PortError> {
    let mut stmt = conn
        // The schema is the pragma's second argument (a `schema.` prefix is ignored).
        .prepare_cached("SELECT name, \"notnull\" FROM pragma_table_info(?1, ?2) ORDER BY cid")
        .map_err(sqlite_error)?;
    let cols = stmt
        .query_map(params![name, dataset], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(sqlite_error)?
        .collect::<Result<_, _>>()
        .map_err(sqlite_error)?;
    Ok(cols)
}

/// The table a job writes, once its columns are known: created or checked, then the INSERTs
/// that take decoded rows.
pub(super) struct Target {
    /// One row.
    pub(super) insert: String,
    /// `per_insert` rows (when more than one).
    pub(super) insert_many: String,
    pub(super) per_insert: usize,
    pub(super) columns: Vec<Column>,
}

/// Rows per INSERT statement: stepping one statement over many rows costs SQLite less per row
/// than a statement per row. Fewer for wide tables: a statement binds at most
/// [`MAX_PARAMETERS`] values.
pub(super) const ROWS_PER_INSERT: usize = 64;

/// SQLite's limit on the parameters of one statement (`SQLITE_MAX_VARIABLE_NUMBER`, 32,766
/// since 3.32; the bundled SQLite is newer).
pub(super) const MAX_PARAMETERS: usize = 32_766;

/// The most columns of a SQLite table (`SQLITE_MAX_COLUMN` of the bundled build); BigQuery
/// holds 10,000.
pub(super) const SQLITE_MAX_COLUMNS: usize = 2000;

pub(super) fn prepare_target(
    conn: &Connection,
    job: &LoadJob,
    name: &str,
    exists: bool,
    columns: &[Column],
) -> Result<Target, PortError> {
    if columns.len() > SQLITE_MAX_COLUMNS {
        // SQLite answers "too many columns" as a generic error: never retried here.
        return Err(PortError::permanent(format!(
            "the file has {} columns: the embedded warehouse (SQLite) holds at most \
             {SQLITE_MAX_COLUMNS} per table (BigQuery 10,000)",
            columns.len()
        )));
    }
    let dataset = &job.table.dataset;
    let quoted = format!("\"{dataset}\".{}", ident(name));
    if exists {
        let mut existing = columns_of(conn, dataset, name)?;
        let additions = job
            .schema_update_options
            .contains(&SchemaUpdateOption::AllowFieldAddition);
        for column in columns {
            if existing
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(&column.name))
            {
                continue;
            }
            if !additions {
                return Err(PortError::permanent(format!(
                    "the file's column `{}` is not in table {} (columns {:?}); \
                     schema_update_options ALLOW_FIELD_ADDITION would add it",
                    column.name,
                    job.table,
                    existing.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()
                )));
            }
            // An added column is NULLABLE, as in BigQuery.
            conn.execute_batch(&format!(
                "ALTER TABLE {quoted} ADD COLUMN {} {}",
                ident(&column.name),
                sql_type(column.ty)
            ))
            .map_err(sqlite_error)?;
            existing.push((column.name.clone(), false));
        }
        if let Some((missing, _)) = existing.iter().find(|(n, required)| {
            *required && !columns.iter().any(|c| c.name.eq_ignore_ascii_case(n))
        }) {
            return Err(PortError::permanent(format!(
                "table {}'s REQUIRED column `{missing}` is not in the file",
                job.table
            )));
        }
        match job.write {
            WriteDisposition::WriteAppend => {}
            WriteDisposition::WriteTruncate => {
                conn.execute_batch(&format!("DELETE FROM {quoted}"))
                    .map_err(sqlite_error)?;
            }
            WriteDisposition::WriteEmpty => {
                let any: bool = conn
                    .query_row(
                        &format!("SELECT EXISTS (SELECT 1 FROM {quoted})"),
                        [],
                        |r| r.get(0),
                    )
                    .map_err(sqlite_error)?;
                if any {
                    return Err(PortError::permanent(format!(
                        "table {} is not empty and write_disposition is WRITE_EMPTY",
                        job.table
                    )));
                }
            }
        }
    } else {
        if job.create == CreateDisposition::CreateNever {
            return Err(PortError::permanent(format!(
                "table {} does not exist and create_disposition is CREATE_NEVER",
                job.table
            )));
        }
        let defs: Vec<String> = columns
            .iter()
            .map(|c| {
                format!(
                    "{} {}{}",
                    ident(&c.name),
                    sql_type(c.ty),
                    if c.nullable { "" } else { " NOT NULL" }
                )
            })
            .collect();
        conn.execute_batch(&format!("CREATE TABLE {quoted} ({})", defs.join(", ")))
            .map_err(sqlite_error)?;
        if name != job.table.table {
            info!(table = %job.table, sqlite_table = name, "table name differs only in case from an existing table; kept apart");
        }
        if let Some(field) = job.partition.as_ref().and_then(|p| p.field.as_ref())
            && columns.iter().any(|c| &c.name == field)
        {
            // SQLite has no partitions; an index on the partition column serves the same queries.
            conn.execute_batch(&format!(
                "CREATE INDEX IF NOT EXISTS \"{dataset}\".{} ON {} ({})",
                ident(&format!("{name}__partition")),
                ident(name),
                ident(field)
            ))
            .map_err(sqlite_error)?;
        }
    }
    let names: Vec<String> = columns.iter().map(|c| ident(&c.name)).collect();
    let marks = format!("({})", vec!["?"; columns.len()].join(", "));
    let per_insert = (MAX_PARAMETERS / columns.len().max(1)).clamp(1, ROWS_PER_INSERT);
    let insert = format!("INSERT INTO {quoted} ({}) VALUES ", names.join(", "));
    Ok(Target {
        insert_many: format!("{insert}{}", vec![marks.as_str(); per_insert].join(", ")),
        insert: format!("{insert}{marks}"),
        per_insert,
        columns: columns.to_vec(),
    })
}

pub(super) fn same_columns(a: &[Column], b: &[Column]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.name.eq_ignore_ascii_case(&y.name))
}

pub(super) fn names(columns: &[Column]) -> Vec<&str> {
    columns.iter().map(|c| c.name.as_str()).collect()
}

#[cfg(test)]
mod tests {

    use conveyor_core::format::Format;
    use conveyor_core::names::TableRef;
    use conveyor_core::ports::{PortError, Warehouse};

    use super::super::fixtures::*;

    #[tokio::test]
    async fn tables_differing_only_in_case_are_kept_apart() {
        let s = setup();
        let a = put(&s.store, "a.csv", b"n\n1\n").await;
        let b = put(&s.store, "b.csv", b"n\n2\n3\n").await;
        s.warehouse
            .load(
                &job("load-a", "analytics.Sales", Format::Csv, vec![a]),
                Default::default(),
            )
            .await
            .unwrap();
        s.warehouse
            .load(
                &job("load-b", "analytics.sales", Format::Csv, vec![b]),
                Default::default(),
            )
            .await
            .unwrap();
        let count = |t: &str| {
            let w = s.warehouse.clone();
            let t = TableRef::parse(t).unwrap();
            async move { w.row_count(&t).await.unwrap() }
        };
        assert_eq!(count("analytics.Sales").await, 1);
        assert_eq!(count("analytics.sales").await, 2);
        assert!(matches!(
            s.warehouse
                .row_count(&TableRef::parse("analytics.SALES").unwrap())
                .await,
            Err(PortError::NotFound(_))
        ));
    }
}
