//! The state directory's start-up checks: one process at a time, and writable.
//!
//! Two processes on one state directory (a second `conveyor dev`, a `conveyor run` beside a
//! `dev`) would both watch the buckets and load every arrival twice over; a state directory
//! that cannot be written starts and then fails every write ("attempt to write a readonly
//! database") as if it were a passing condition. Both are refused before anything starts.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

/// The lock file, under the state directory.
pub const LOCK_FILE: &str = "conveyor.lock";

/// Why a state directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateDirError {
    /// Another process holds the state directory.
    #[error(
        "the state directory {dir} is in use by another conveyor process ({holder}); stop it, \
         or give this one another --state-dir"
    )]
    InUse {
        /// The state directory.
        dir: PathBuf,
        /// Who holds it: `pid N`, or what is known.
        holder: String,
    },
    /// The state directory (or a file in it) cannot be written.
    #[error(
        "the state directory {dir} cannot be written ({path}: {reason}); make it writable \
         (its owner, permissions, a read-only mount) or give another --state-dir"
    )]
    NotWritable {
        /// The state directory.
        dir: PathBuf,
        /// What could not be written.
        path: PathBuf,
        /// The system's reason.
        reason: String,
    },
}

/// The state directory held by this process: released when dropped (or when the process
/// ends, however it ends: the lock is the operating system's, not the file's existence).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Checks that `dir` can be written (see [`check_writable`]), then takes its lock,
    /// writing this process's id into the lock file.
    ///
    /// # Errors
    /// [`StateDirError::NotWritable`] when `dir` or a file in it cannot be written,
    /// [`StateDirError::InUse`] (naming the holder's pid) when another process holds it.
    pub fn acquire(dir: &Path) -> Result<Self, StateDirError> {
        check_writable(dir)?;
        let path = dir.join(LOCK_FILE);
        let not_writable = |e: std::io::Error| StateDirError::NotWritable {
            dir: dir.to_path_buf(),
            path: path.clone(),
            reason: e.to_string(),
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(not_writable)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let holder = match file.read_to_string(&mut text) {
                    Ok(_) if !text.trim().is_empty() => format!("pid {}", text.trim()),
                    _ => "its pid is not recorded".to_owned(),
                };
                return Err(StateDirError::InUse {
                    dir: dir.to_path_buf(),
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(not_writable(e)),
        }
        file.set_len(0).map_err(not_writable)?;
        file.rewind().map_err(not_writable)?;
        writeln!(file, "{}", std::process::id()).map_err(not_writable)?;
        file.flush().map_err(not_writable)?;
        Ok(Self { _file: file })
    }
}

/// Checks that `dir` (created when missing), its `buckets/`, `warehouse/` and `batches/`
/// folders where they exist, and the warehouse's database files can be written: a file is
/// created and removed in each folder, each database file is opened for writing. This
/// catches a read-only mount, a folder or file of another owner, and a state directory that
/// is a file.
///
/// # Errors
/// [`StateDirError::NotWritable`] naming the first path that cannot be written.
pub fn check_writable(dir: &Path) -> Result<(), StateDirError> {
    let refuse = |path: &Path, e: std::io::Error| StateDirError::NotWritable {
        dir: dir.to_path_buf(),
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| refuse(dir, e))?;
    let mut folders = vec![dir.to_path_buf()];
    folders.extend(
        ["buckets", "warehouse", "batches"]
            .iter()
            .map(|f| dir.join(f))
            .filter(|f| f.exists()),
    );
    for folder in &folders {
        let probe = folder.join(format!(".conveyor-write-check.{}", std::process::id()));
        let created = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&probe)
            .and_then(|mut f| f.write_all(b"ok"));
        let _ = std::fs::remove_file(&probe);
        created.map_err(|e| refuse(folder, e))?;
    }
    let warehouse = dir.join("warehouse");
    if let Ok(entries) = std::fs::read_dir(&warehouse) {
        for entry in entries.flatten() {
            let path = entry.path();
            let database = path
                .extension()
                .is_some_and(|x| x == "sqlite" || x == "sqlite-wal" || x == "sqlite-shm");
            if database {
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| refuse(&path, e))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = StateLock::acquire(dir.path()).expect("first");
        let err = StateLock::acquire(dir.path()).expect_err("a second holder");
        let text = err.to_string();
        assert!(
            matches!(err, StateDirError::InUse { .. })
                && text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        drop(first);
        StateLock::acquire(dir.path()).expect("free again once the first is dropped");
    }

    #[test]
    fn a_state_directory_that_is_a_file_is_refused_as_not_writable() {
        // Tests run as root here, where permissions do not stop a write; a file where the
        // directory should be cannot be written by anyone.
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        std::fs::write(&state, "not a directory").expect("write");
        let err = check_writable(&state).expect_err("a file is no state directory");
        assert!(matches!(err, StateDirError::NotWritable { .. }), "{err}");
        assert!(err.to_string().contains("cannot be written"), "{err}");
    }

    #[test]
    fn a_warehouse_database_that_is_a_folder_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("warehouse/conveyor.sqlite")).expect("mkdir");
        let err = check_writable(dir.path()).expect_err("not writable");
        assert!(err.to_string().contains("conveyor.sqlite"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_read_only_state_directory_is_refused_where_permissions_apply() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let warehouse = dir.path().join("warehouse");
        std::fs::create_dir_all(&warehouse).expect("mkdir");
        std::fs::write(warehouse.join("conveyor.sqlite"), b"").expect("write");
        std::fs::set_permissions(
            warehouse.join("conveyor.sqlite"),
            std::fs::Permissions::from_mode(0o444),
        )
        .expect("chmod");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555))
            .expect("chmod");
        // Root writes whatever the permissions say: then there is nothing to check here.
        let root_writes = std::fs::write(dir.path().join("probe"), b"").is_ok();
        let result = check_writable(dir.path());
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod back");
        if root_writes {
            eprintln!(
                "running as root: permissions do not stop writes; checked by the tests above"
            );
            return;
        }
        assert!(
            matches!(result, Err(StateDirError::NotWritable { .. })),
            "{result:?}"
        );
    }
}
