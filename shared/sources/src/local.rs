//! A local file or directory as a stage source.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use conveyor_core::ports::{Digests, Opened, PortError, Source, SourceObject};

/// A local file, or every visible file below a directory. Hidden files and directories
/// (names starting with `.`) are skipped: editors and copy tools write temporary files so.
pub(super) struct LocalSource {
    root: PathBuf,
}

impl LocalSource {
    pub(super) fn new(path: &str) -> Self {
        Self {
            root: PathBuf::from(path),
        }
    }
}

fn object(relative: String, md: &std::fs::Metadata) -> SourceObject {
    SourceObject {
        key: relative.clone(),
        path: relative.clone(),
        relative,
        size: Some(md.len()),
        etag: None,
        version: None,
        modified: md.modified().ok().map(DateTime::<Utc>::from),
        digests: Digests::default(),
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<SourceObject>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let md = std::fs::metadata(&path)?;
        if md.is_dir() {
            walk(root, &path, out)?;
        } else if md.is_file() {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let relative = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            out.push(object(relative, &md));
        }
    }
    Ok(())
}

#[async_trait]
impl Source for LocalSource {
    fn uri(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn list(&self) -> Result<Vec<SourceObject>, PortError> {
        let root = self.root.clone();
        let listed = tokio::task::spawn_blocking(move || {
            let md = std::fs::metadata(&root)?;
            if md.is_file() {
                let name = root
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                return Ok(vec![object(name, &md)]);
            }
            let mut out = Vec::new();
            walk(&root, &root, &mut out)?;
            Ok::<_, std::io::Error>(out)
        })
        .await
        .map_err(|e| PortError::transient(format!("list {}: {e}", self.root.display())))?;
        let mut out = listed.map_err(|e| {
            PortError::transient(format!(
                "cannot read stage source {}: {e}",
                self.root.display()
            ))
        })?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn open(&self, object: &SourceObject) -> Result<Opened, PortError> {
        let root_is_file = tokio::fs::metadata(&self.root)
            .await
            .map(|m| m.is_file())
            .unwrap_or(false);
        let path = if root_is_file {
            self.root.clone()
        } else {
            self.root.join(&object.relative)
        };
        let file = tokio::fs::File::open(&path).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                PortError::not_found(path.display().to_string())
            } else {
                PortError::transient(format!("{}: {e}", path.display()))
            }
        })?;
        Ok(Opened {
            body: Box::pin(file),
            size: None,
            digests: Digests::default(),
        })
    }
}
