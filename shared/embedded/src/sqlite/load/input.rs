//! Opening a job's sources for the decoder: local files read in place (and checked against
//! their content generation as they are read), other stores streamed through the runtime.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::runtime::Handle;
use tokio_util::io::SyncIoBridge;

use conveyor_core::config::Compression;
use conveyor_core::event::ObjectRef;
use conveyor_core::format::Format;
use conveyor_core::ports::{ObjectStore, PortError};

use crate::sqlite::transient;

use crate::LocalStore;
use crate::formats::{FormatError, Input};

/// The content check of one local source: the SHA-256 of every byte the decoder read, and a
/// second handle on the same open file (sharing its offset) to hash what it left unread.
/// The open file is the one that was checked, so a rename over the name (how the store and
/// most tools overwrite) cannot swap the bytes under the load.
pub(super) struct ContentCheck {
    hashed: Arc<std::sync::Mutex<(Sha256, u64)>>,
    rest: std::fs::File,
    generation: String,
}

impl ContentCheck {
    /// Whether the content read (and the rest of the file) is still `generation`.
    pub(super) fn holds(self) -> Result<bool, std::io::Error> {
        let mut rest = Hashing {
            file: self.rest,
            hashed: self.hashed.clone(),
        };
        std::io::copy(&mut rest, &mut std::io::sink())?;
        drop(rest);
        let (h, size) = std::mem::take(
            &mut *self
                .hashed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        Ok(crate::store::content_generation(size, &h.finalize()) == self.generation)
    }
}

/// A file whose bytes are hashed as they are read.
pub(super) struct Hashing {
    file: std::fs::File,
    hashed: Arc<std::sync::Mutex<(Sha256, u64)>>,
}

impl Read for Hashing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        let mut hashed = self
            .hashed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        hashed.0.update(&buf[..n]);
        hashed.1 += n as u64;
        Ok(n)
    }
}

/// Why a source is not loaded: its content is no longer the generation the job names.
pub(super) fn overwritten(source: &ObjectRef) -> PortError {
    PortError::precondition(format!(
        "{} changed after its arrival: its content is no longer generation {}",
        source.uri(),
        source.generation
    ))
}

/// Opens one source for the decoder: a stream read through the runtime, or, for Parquet
/// (which needs random access), a copy in an anonymous temporary file beside the databases.
/// A local file checked against its generation (`check`) comes with its [`ContentCheck`]
/// (a Parquet file is hashed before it is decoded: [`PortError::Precondition`] when changed).
pub(super) fn open_input(
    handle: &Handle,
    store: &Arc<dyn ObjectStore>,
    local: Option<&LocalStore>,
    source: &ObjectRef,
    format: Format,
    dir: &Path,
    check: bool,
) -> Result<(Input, Option<ContentCheck>), PortError> {
    let missing = || PortError::permanent(format!("{} does not exist", source.uri()));
    if let Some(local) = local {
        // A local file is read here, on the load's thread: no trip through the runtime per
        // read, and a Parquet file is read in place (it is seekable).
        let mut file = match local.open_blocking(&source.bucket, &source.name) {
            Ok(file) => file,
            Err(PortError::NotFound(_)) => return Err(missing()),
            Err(e) => return Err(e),
        };
        let read_error =
            |e: std::io::Error| PortError::transient(format!("read {}: {e}", source.uri()));
        let check = check && !source.generation.is_empty();
        if format == Format::Parquet {
            if check {
                use std::io::Seek as _;
                let (size, digest) =
                    crate::store::hash_content(&mut file, 1 << 16).map_err(read_error)?;
                if crate::store::content_generation(size, &digest) != source.generation {
                    return Err(overwritten(source));
                }
                file.rewind().map_err(read_error)?;
            }
            return Ok((Input::File(file), None));
        }
        if !check {
            let input = Input::Stream(Box::new(BufReader::with_capacity(1 << 16, file)));
            return Ok((input, None));
        }
        let hashed = Arc::new(std::sync::Mutex::new((Sha256::new(), 0)));
        let content = ContentCheck {
            hashed: hashed.clone(),
            rest: file.try_clone().map_err(read_error)?,
            generation: source.generation.clone(),
        };
        let reader = Hashing { file, hashed };
        let input = Input::Stream(Box::new(BufReader::with_capacity(1 << 16, reader)));
        return Ok((input, Some(content)));
    }
    let stream = match handle.block_on(store.open(&source.bucket, &source.name)) {
        Ok(s) => s,
        Err(PortError::NotFound(_)) => return Err(missing()),
        Err(e) => return Err(e),
    };
    let read_error =
        |e: std::io::Error| PortError::transient(format!("read {}: {e}", source.uri()));
    let mut reader = SyncIoBridge::new_with_handle(stream, handle.clone());
    if format == Format::Parquet {
        let mut file = tempfile::tempfile_in(dir).map_err(transient)?;
        std::io::copy(&mut reader, &mut file).map_err(read_error)?;
        Ok((Input::File(file), None))
    } else {
        Ok((
            Input::Stream(Box::new(BufReader::with_capacity(
                1 << 16,
                ReadErrors(reader),
            ))),
            None,
        ))
    }
}

/// `input` decompressed as `load.compression` says: gzip when asked or (`auto`) when it
/// starts with gzip's magic bytes, as BigQuery reads it. A file that is not what the setting
/// says is refused as bad input with the reason, never decoded as garbage rows.
pub(super) fn decompress(
    input: Input,
    compression: Compression,
    source: &ObjectRef,
) -> Result<Input, PortError> {
    let Input::Stream(mut stream) = input else {
        // Parquet, read in place: compressed inside the file.
        return Ok(input);
    };
    let gzip = stream
        .fill_buf()
        .map_err(|e| PortError::transient(format!("read {}: {e}", source.uri())))?
        .starts_with(&[0x1f, 0x8b]);
    match (compression, gzip) {
        (Compression::Auto | Compression::Gzip, true) => Ok(Input::Stream(Box::new(
            BufReader::with_capacity(1 << 16, flate2::bufread::MultiGzDecoder::new(stream)),
        ))),
        (Compression::Gzip, false) => Err(PortError::permanent(format!(
            "{} is not gzip-compressed (load.compression: gzip); set `compression: auto` to read \
             it as it is",
            source.uri()
        ))),
        (Compression::None, true) => Err(PortError::permanent(format!(
            "{} is gzip-compressed and load.compression is `none`; set `auto` or `gzip` to \
             decompress it",
            source.uri()
        ))),
        (_, false) => Ok(Input::Stream(stream)),
    }
}

/// A reader whose errors are kept as they are (a bridge to the async stream).
pub(super) struct ReadErrors<R>(R);

impl<R: Read> Read for ReadErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

pub(super) fn format_error(e: FormatError, source: &ObjectRef) -> PortError {
    match e {
        FormatError::BadRows(bad) => PortError::BadRows(bad),
        other => PortError::permanent(format!("{}: {other}", source.uri())),
    }
}

#[cfg(test)]
mod tests {

    use conveyor_core::format::Format;

    use conveyor_core::ports::{LoadState, PortError, Warehouse};

    use crate::SqliteWarehouse;

    use super::super::fixtures::*;

    #[tokio::test]
    async fn a_source_overwritten_after_its_arrival_is_not_loaded_under_the_old_generation() {
        let mut s = setup();
        // As the embedded runtime opens it: reading the local store's files itself.
        s.warehouse = SqliteWarehouse::open_local(&s.warehouse_dir, s.store.clone()).unwrap();
        let old = put(&s.store, "a.csv", b"n\n1\n2\n").await;
        let kept = put(&s.store, "b.csv", b"n\n7\n").await;
        // Overwritten while the arrival waited for the database.
        let new = put(&s.store, "a.csv", b"n\n10\n20\n30\n").await;
        assert_ne!(old.generation, new.generation);
        let result = s
            .warehouse
            .load(
                &job("load-old", "analytics.t", Format::Csv, vec![old.clone()]),
                Default::default(),
            )
            .await;
        assert!(
            matches!(&result, Err(PortError::Precondition(_))),
            "the newer content was loaded under the older generation: {result:?}"
        );
        assert_eq!(
            dump(&s.warehouse_dir, "analytics", "t"),
            None,
            "nothing loaded"
        );
        // In a job of several sources, the changed one is left out (its own arrival loads
        // the new content), the others load.
        let status = s
            .warehouse
            .load(
                &job("load-two", "analytics.t", Format::Csv, vec![old, kept]),
                Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(status.state, LoadState::Done { rows: 1 });
        let status = s
            .warehouse
            .load(
                &job("load-new", "analytics.t", Format::Csv, vec![new]),
                Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(status.state, LoadState::Done { rows: 3 });
        assert_eq!(
            dump(&s.warehouse_dir, "analytics", "t").unwrap(),
            ["7", "10", "20", "30"]
        );
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[tokio::test]
    async fn a_gzip_file_is_decompressed_unless_compression_says_none() {
        use conveyor_core::config::Compression;
        let s = setup();
        let csv_gz = put(&s.store, "a.csv.gz", &gzip(b"n\n1\n2\n")).await;
        let ndjson_gz = put(&s.store, "b.json.gz", &gzip(b"{\"m\":1}\n")).await;
        let plain = put(&s.store, "c.csv", b"n\n3\n").await;
        let status = s
            .warehouse
            .load(
                &job(
                    "load-gz",
                    "analytics.t",
                    Format::Csv,
                    vec![csv_gz.clone(), plain.clone()],
                ),
                Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(status.state, LoadState::Done { rows: 3 });
        assert_eq!(
            dump(&s.warehouse_dir, "analytics", "t").unwrap(),
            ["1", "2", "3"]
        );
        let status = s
            .warehouse
            .load(
                &job("load-nd", "analytics.j", Format::Ndjson, vec![ndjson_gz]),
                Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(status.state, LoadState::Done { rows: 1 });
        let mut none = job("load-none", "analytics.u", Format::Csv, vec![csv_gz]);
        none.compression = Compression::None;
        let err = s.warehouse.load(&none, Default::default()).await;
        assert!(
            format!("{err:?}").contains("is gzip-compressed and load.compression is `none`"),
            "{err:?}"
        );
        let mut forced = job("load-forced", "analytics.u", Format::Csv, vec![plain]);
        forced.compression = Compression::Gzip;
        let err = s.warehouse.load(&forced, Default::default()).await;
        assert!(
            format!("{err:?}").contains("is not gzip-compressed"),
            "{err:?}"
        );
        assert_eq!(
            dump(&s.warehouse_dir, "analytics", "u"),
            None,
            "nothing loaded"
        );
    }
}
