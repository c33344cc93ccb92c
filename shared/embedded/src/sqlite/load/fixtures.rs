//! What the load tests share: a store and a warehouse in a temporary directory, objects,
//! jobs, columns and a table's rows as text.

use std::sync::Arc;

use conveyor_core::event::ObjectRef;
use conveyor_core::format::{Column, ColumnType, Format};
use conveyor_core::names::{BucketName, JobId, ObjectName, TableRef};
use conveyor_core::ports::{LoadJob, ObjectStore};
use rusqlite::types::ValueRef;

use crate::{LocalStore, SqliteWarehouse};

pub(super) struct Setup {
    pub(super) _dir: tempfile::TempDir,
    pub(super) store: LocalStore,
    pub(super) warehouse: SqliteWarehouse,
    pub(super) warehouse_dir: std::path::PathBuf,
}

pub(super) fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path().join("buckets")).unwrap();
    let warehouse_dir = dir.path().join("warehouse");
    let warehouse = SqliteWarehouse::open(&warehouse_dir, Arc::new(store.clone())).unwrap();
    Setup {
        _dir: dir,
        store,
        warehouse,
        warehouse_dir,
    }
}

pub(super) async fn put(store: &LocalStore, name: &str, bytes: &[u8]) -> ObjectRef {
    let bucket = BucketName::parse("landing").unwrap();
    let name = ObjectName::parse(name).unwrap();
    store
        .put(
            &bucket,
            &name,
            Box::pin(std::io::Cursor::new(bytes.to_vec())),
        )
        .await
        .unwrap()
        .object
}

pub(super) fn job(id: &str, table: &str, format: Format, sources: Vec<ObjectRef>) -> LoadJob {
    let job = LoadJob::new(
        JobId::parse(id).unwrap(),
        sources,
        TableRef::parse(table).unwrap(),
        format,
    );
    if format == Format::Csv {
        job.with_header_row()
    } else {
        job
    }
}

pub(super) fn col(name: &str, ty: ColumnType, required: bool) -> Column {
    Column {
        name: name.to_owned(),
        ty,
        nullable: !required,
    }
}

/// The table's rows as `v|v` text: NULL, integers, reals, 'text', x'blob'.
pub(super) fn dump(
    warehouse_dir: &std::path::Path,
    dataset: &str,
    table: &str,
) -> Option<Vec<String>> {
    let conn = rusqlite::Connection::open(warehouse_dir.join(format!("{dataset}.sqlite"))).ok()?;
    let mut stmt = conn
        .prepare(&format!("SELECT * FROM \"{table}\" ORDER BY rowid"))
        .ok()?;
    let n = stmt.column_count();
    let rows = stmt
        .query_map([], |r| {
            Ok((0..n)
                .map(|i| match r.get_ref(i).unwrap() {
                    ValueRef::Null => "NULL".to_owned(),
                    ValueRef::Integer(i) => i.to_string(),
                    ValueRef::Real(f) => format!("{f:?}"),
                    ValueRef::Text(t) => format!("'{}'", String::from_utf8_lossy(t)),
                    ValueRef::Blob(b) => format!("x'{}'", hex::encode(b)),
                })
                .collect::<Vec<_>>()
                .join("|"))
        })
        .ok()?;
    Some(rows.map(Result::unwrap).collect())
}
