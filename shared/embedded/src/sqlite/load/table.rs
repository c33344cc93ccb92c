//! The table a job writes: its SQLite name (case kept apart), created or checked against the
//! job's dispositions and schema update options, and the INSERT statements that fill it.

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use tracing::info;

use conveyor_core::config::{CreateDisposition, Partition, SchemaUpdateOption, WriteDisposition};
use conveyor_core::names::TableRef;
use conveyor_core::ports::{LoadJob, PortError};

use crate::sqlite::sql_type;

use super::sqlite_error;
use crate::formats::{Column, ColumnType};

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

/// The schema of existing table `name` in `dataset`, as a load reads it (TEXT is STRING;
/// the `_PARTITIONTIME` column is left out).
pub(super) fn table_schema(
    conn: &Connection,
    dataset: &str,
    name: &str,
) -> Result<Vec<Column>, PortError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT name, type, \"notnull\" FROM pragma_table_info(?1, ?2) ORDER BY cid",
        )
        .map_err(sqlite_error)?;
    let cols = stmt
        .query_map(params![name, dataset], |r| {
            let name: String = r.get(0)?;
            let ty: String = r.get(1)?;
            let required: bool = r.get(2)?;
            Ok((name, ty, required))
        })
        .map_err(sqlite_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sqlite_error)?;
    Ok(cols
        .into_iter()
        .filter(|(name, _, _)| name != PARTITIONTIME)
        .map(|(name, ty, required)| Column {
            name,
            ty: match ty.to_ascii_uppercase().as_str() {
                "INTEGER" => ColumnType::Int64,
                "REAL" => ColumnType::Float64,
                "BOOLEAN" => ColumnType::Bool,
                "BLOB" => ColumnType::Bytes,
                "TIMESTAMP" => ColumnType::Timestamp,
                "DATE" => ColumnType::Date,
                _ => ColumnType::String,
            },
            nullable: !required,
        })
        .collect())
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
    /// The table's largest rowid before the job's rows: the rows after it are the job's.
    pub(super) rowid_before: i64,
}

/// The column an ingestion-time partitioned table keeps each row's partition in (BigQuery's
/// `_PARTITIONTIME` pseudo-column), added when a load names a partition and no field.
pub(super) const PARTITIONTIME: &str = "_PARTITIONTIME";

/// The loaded partition: its column and the text prefix of every value in it.
fn one_partition(job: &LoadJob) -> Option<(&str, String)> {
    let id = job.partition_id.as_deref()?;
    let column = job
        .partition
        .as_ref()
        .and_then(|p| p.field.as_deref())
        .unwrap_or(PARTITIONTIME);
    Some((column, Partition::prefix_of(id)))
}

/// After the job's rows are in: an ingestion-time partition's rows get their
/// `_PARTITIONTIME`; a column-partitioned table's rows must all fall in the partition the
/// decorator names (BigQuery fails the load otherwise).
pub(super) fn finish_partition(
    conn: &Connection,
    job: &LoadJob,
    name: &str,
    target: &Target,
) -> Result<(), PortError> {
    let Some((column, prefix)) = one_partition(job) else {
        return Ok(());
    };
    let quoted = format!("\"{}\".{}", job.table.dataset, ident(name));
    if column == PARTITIONTIME {
        let start = match prefix.len() {
            13 => format!("{prefix}:00:00Z"),
            10 => format!("{prefix}T00:00:00Z"),
            7 => format!("{prefix}-01T00:00:00Z"),
            _ => format!("{prefix}-01-01T00:00:00Z"),
        };
        conn.execute(
            &format!(
                "UPDATE {quoted} SET {} = ?1 WHERE rowid > ?2",
                ident(PARTITIONTIME)
            ),
            params![start, target.rowid_before],
        )
        .map_err(sqlite_error)?;
        return Ok(());
    }
    let outside: i64 = conn
        .query_row(
            &format!(
                "SELECT COUNT(*) FROM {quoted} WHERE rowid > ?1 AND \
                 (CAST({col} AS TEXT) IS NULL OR substr(CAST({col} AS TEXT), 1, ?2) <> ?3)",
                col = ident(column)
            ),
            params![target.rowid_before, prefix.len() as i64, prefix],
            |r| r.get(0),
        )
        .map_err(sqlite_error)?;
    if outside > 0 {
        return Err(PortError::permanent(format!(
            "{outside} row(s) have a `{column}` outside partition {}${} (the decorator names \
             one partition; BigQuery refuses rows of another)",
            job.table,
            job.partition_id.as_deref().unwrap_or_default()
        )));
    }
    Ok(())
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
        let partition = one_partition(job);
        if let Some((PARTITIONTIME, _)) = &partition
            && !existing.iter().any(|(n, _)| n == PARTITIONTIME)
        {
            conn.execute_batch(&format!(
                "ALTER TABLE {quoted} ADD COLUMN {} TEXT",
                ident(PARTITIONTIME)
            ))
            .map_err(sqlite_error)?;
        }
        // With a decorator, the write disposition concerns that partition only.
        let (rows_of, args) = match &partition {
            Some((column, prefix)) => (
                format!(
                    "{quoted} WHERE substr(CAST({} AS TEXT), 1, {}) = ?1",
                    ident(column),
                    prefix.len()
                ),
                vec![prefix.clone()],
            ),
            None => (quoted.clone(), Vec::new()),
        };
        match job.write {
            WriteDisposition::WriteAppend => {}
            WriteDisposition::WriteTruncate => {
                conn.execute(
                    &format!("DELETE FROM {rows_of}"),
                    rusqlite::params_from_iter(&args),
                )
                .map_err(sqlite_error)?;
            }
            WriteDisposition::WriteEmpty => {
                let any: bool = conn
                    .query_row(
                        &format!("SELECT EXISTS (SELECT 1 FROM {rows_of})"),
                        rusqlite::params_from_iter(&args),
                        |r| r.get(0),
                    )
                    .map_err(sqlite_error)?;
                if any {
                    return Err(PortError::permanent(format!(
                        "{} {} is not empty and write_disposition is WRITE_EMPTY",
                        if partition.is_some() {
                            "partition of table"
                        } else {
                            "table"
                        },
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
        let mut defs: Vec<String> = columns
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
        if let Some((PARTITIONTIME, _)) = one_partition(job) {
            defs.push(format!("{} TEXT", ident(PARTITIONTIME)));
        }
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
    let rowid_before: i64 = conn
        .query_row(
            &format!("SELECT COALESCE(MAX(rowid), 0) FROM {quoted}"),
            [],
            |r| r.get(0),
        )
        .map_err(sqlite_error)?;
    Ok(Target {
        rowid_before,
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
    use conveyor_core::ports::{LoadJob, PortError, Warehouse};

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

    fn into_partition(mut job: LoadJob, field: Option<&str>, id: &str) -> LoadJob {
        job.partition = Some(conveyor_core::config::Partition {
            field: field.map(str::to_owned),
            kind: conveyor_core::config::PartitionKind::Day,
            decorator: Some("{date_nodash}".to_owned()),
        });
        job.partition_id = Some(id.to_owned());
        job.write = conveyor_core::config::WriteDisposition::WriteTruncate;
        job
    }

    #[tokio::test]
    async fn a_truncate_into_one_partition_replaces_only_that_partitions_rows() {
        let s = setup();
        let day1 = put(&s.store, "d1.csv", b"n,day\n1,2026-11-20\n2,2026-11-20\n").await;
        let day2 = put(&s.store, "d2.csv", b"n,day\n3,2026-11-21\n").await;
        let day1_again = put(&s.store, "d1b.csv", b"n,day\n4,2026-11-20\n").await;
        let load = |id: &str, part: &str, source| {
            into_partition(
                job(id, "analytics.sales", Format::Csv, vec![source]),
                Some("day"),
                part,
            )
        };
        for j in [
            load("load-1", "20261120", day1),
            load("load-2", "20261121", day2),
            load("load-3", "20261120", day1_again),
        ] {
            s.warehouse.load(&j, Default::default()).await.unwrap();
        }
        let rows = dump(&s.warehouse_dir, "analytics", "sales").unwrap();
        assert_eq!(rows, ["3|'2026-11-21'", "4|'2026-11-20'"]);
        // A row of another day in a partition's load fails it, as in BigQuery.
        let stray = put(&s.store, "d3.csv", b"n,day\n5,2026-11-22\n").await;
        let err = s
            .warehouse
            .load(&load("load-4", "20261120", stray), Default::default())
            .await;
        assert!(format!("{err:?}").contains("outside partition"), "{err:?}");
        let rows = dump(&s.warehouse_dir, "analytics", "sales").unwrap();
        assert_eq!(
            rows,
            ["3|'2026-11-21'", "4|'2026-11-20'"],
            "nothing changed"
        );
    }

    #[tokio::test]
    async fn an_ingestion_time_partition_keeps_its_rows_partitiontime() {
        let s = setup();
        let a = put(&s.store, "a.csv", b"n\n1\n").await;
        let b = put(&s.store, "b.csv", b"n\n2\n").await;
        let c = put(&s.store, "c.csv", b"n\n3\n").await;
        for (id, part, source) in [
            ("load-a", "20261120", a),
            ("load-b", "20261121", b),
            ("load-c", "20261120", c),
        ] {
            let j = into_partition(
                job(id, "analytics.events", Format::Csv, vec![source]),
                None,
                part,
            );
            s.warehouse.load(&j, Default::default()).await.unwrap();
        }
        let rows = dump(&s.warehouse_dir, "analytics", "events").unwrap();
        assert_eq!(
            rows,
            ["2|'2026-11-21T00:00:00Z'", "3|'2026-11-20T00:00:00Z'"]
        );
    }

    #[tokio::test]
    async fn a_csv_load_into_an_existing_table_reads_the_tables_schema() {
        let s = setup();
        let first = put(&s.store, "a.csv", b"id,name\n1,ann\n").await;
        let bare = put(&s.store, "b.csv", b"2,bob\n").await;
        let named = put(&s.store, "c.csv", b"ID,Name\n3,cy\n").await;
        s.warehouse
            .load(
                &job("load-a", "analytics.people", Format::Csv, vec![first]),
                Default::default(),
            )
            .await
            .unwrap();
        // No skip_leading_rows and no schema: the table's columns, by position; a first line
        // naming them is the header.
        for (id, source) in [("load-b", bare), ("load-c", named)] {
            let mut j = job(id, "analytics.people", Format::Csv, vec![source]);
            j.csv.skip_leading_rows = None;
            s.warehouse.load(&j, Default::default()).await.unwrap();
        }
        let rows = dump(&s.warehouse_dir, "analytics", "people").unwrap();
        assert_eq!(rows, ["1|'ann'", "2|'bob'", "3|'cy'"]);
    }
}
