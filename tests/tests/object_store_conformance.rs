//! The object store port's contract, one set of behaviour tests run against every adapter:
//! the embedded folder ([`LocalStore`]) and [`GcsStore`] on fake-gcs-server (through the
//! recording proxy, so each request is also checked against Google's API description). What
//! the embedded mode promises is that a pipeline sees the same store either way.
//!
//! Without fake-gcs-server the Google run skips loudly; under `CI=true` it fails.

use conveyor_core::names::{BucketName, ObjectName};
use conveyor_core::ports::{ObjectStore, PortError};
use conveyor_e2e::Emulators;
use conveyor_embedded::LocalStore;
use conveyor_gcp::{GcpAuth, GcsStore};
use tokio::io::AsyncReadExt;

fn name(s: &str) -> ObjectName {
    ObjectName::parse(s).expect("object name")
}

fn body(bytes: &[u8]) -> conveyor_core::ports::ByteStream {
    Box::pin(std::io::Cursor::new(bytes.to_vec()))
}

async fn read(store: &dyn ObjectStore, bucket: &BucketName, object: &str) -> Vec<u8> {
    let mut out = Vec::new();
    store
        .open(bucket, &name(object))
        .await
        .expect("open")
        .read_to_end(&mut out)
        .await
        .expect("read");
    out
}

/// What a put returns describes what a read gives back, and a second put replaces it
/// under a new generation.
async fn put_then_open_and_head(store: &dyn ObjectStore, bucket: &BucketName) {
    let meta = store
        .put(bucket, &name("put/a.csv"), body(b"id\n1\n"))
        .await
        .expect("put");
    assert_eq!(meta.object.name.as_str(), "put/a.csv");
    assert_eq!(meta.object.bucket, *bucket);
    assert_eq!(meta.object.size, Some(5));
    assert!(!meta.object.generation.is_empty());
    assert_eq!(read(store, bucket, "put/a.csv").await, b"id\n1\n");
    let head = store
        .head(bucket, &name("put/a.csv"))
        .await
        .expect("head")
        .expect("exists");
    assert_eq!(head.object.generation, meta.object.generation);
    assert_eq!(head.object.size, Some(5));

    let again = store
        .put(bucket, &name("put/a.csv"), body(b"id\n1\n2\n"))
        .await
        .expect("put again");
    assert_ne!(
        again.object.generation, meta.object.generation,
        "new content is a new generation"
    );
    assert_eq!(read(store, bucket, "put/a.csv").await, b"id\n1\n2\n");
}

/// A name that holds nothing: no metadata, a not-found error on open, nothing deleted.
async fn a_missing_object_is_not_found(store: &dyn ObjectStore, bucket: &BucketName) {
    let missing = name("missing/none.csv");
    assert!(store.head(bucket, &missing).await.expect("head").is_none());
    match store.open(bucket, &missing).await {
        Err(PortError::NotFound(_)) => {}
        Err(e) => panic!("open of a missing object: {e:?}, not NotFound"),
        Ok(_) => panic!("open of a missing object succeeded"),
    }
    assert!(
        !store.delete(bucket, &missing, None).await.expect("delete"),
        "nothing to delete"
    );
}

/// A listing holds the objects under the prefix and no other, in name order.
async fn list_by_prefix_in_name_order(store: &dyn ObjectStore, bucket: &BucketName) {
    for object in [
        "list/b.csv",
        "list/a.csv",
        "list/sub/c.csv",
        "listing/x.csv",
    ] {
        store
            .put(bucket, &name(object), body(b"x"))
            .await
            .expect("put");
    }
    let listed: Vec<String> = store
        .list(bucket, "list/")
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.object.name.as_str().to_owned())
        .collect();
    assert_eq!(listed, vec!["list/a.csv", "list/b.csv", "list/sub/c.csv"]);
    assert!(
        store
            .list(bucket, "nothing-here/")
            .await
            .expect("list")
            .is_empty()
    );
    let page = store
        .list_page(bucket, "list/", None)
        .await
        .expect("first page");
    assert!(!page.objects.is_empty());
    assert_eq!(page.objects[0].object.name.as_str(), "list/a.csv");
}

/// A delete names the generation it means: another generation is left alone (where the
/// backend enforces it: see [`Backend::deletes_check_the_generation`]).
async fn delete_honours_the_generation(
    store: &dyn ObjectStore,
    bucket: &BucketName,
    backend: Backend,
) {
    let object = name("delete/a.csv");
    let first = store
        .put(bucket, &object, body(b"one\n"))
        .await
        .expect("put");
    let second = store
        .put(bucket, &object, body(b"two\n"))
        .await
        .expect("put again");
    if backend.deletes_check_the_generation {
        assert!(
            !store
                .delete(bucket, &object, Some(&first.object.generation))
                .await
                .expect("delete of an old generation"),
            "an old generation is not the live one: nothing deleted"
        );
        assert_eq!(read(store, bucket, "delete/a.csv").await, b"two\n");
    }
    assert!(
        store
            .delete(bucket, &object, Some(&second.object.generation))
            .await
            .expect("delete of the live generation")
    );
    assert!(store.head(bucket, &object).await.expect("head").is_none());
    store
        .put(bucket, &object, body(b"three\n"))
        .await
        .expect("put");
    assert!(
        store
            .delete(bucket, &object, None)
            .await
            .expect("delete of any generation")
    );
    assert!(store.head(bucket, &object).await.expect("head").is_none());
}

/// `create_new` writes only where nothing is: the second of two creates writes nothing.
async fn create_new_only_where_nothing_is(store: &dyn ObjectStore, bucket: &BucketName) {
    let object = name("create/lease");
    let created = store
        .create_new(bucket, &object, body(b"first"))
        .await
        .expect("create");
    assert!(created.is_some(), "nothing was there");
    let again = store
        .create_new(bucket, &object, body(b"second"))
        .await
        .expect("create again");
    assert!(again.is_none(), "an object was there: nothing written");
    assert_eq!(read(store, bucket, "create/lease").await, b"first");
}

/// `copy` copies the generation it names, and nothing when that generation is no longer
/// live (a move done already, an overwrite since).
async fn copy_copies_the_named_generation_only(store: &dyn ObjectStore, bucket: &BucketName) {
    let from = name("copy/in/a.csv");
    let first = store.put(bucket, &from, body(b"one")).await.expect("put");
    let to = name("copy/done/a.csv");
    let copied = store
        .copy(bucket, &from, &first.object.generation, bucket, &to)
        .await
        .expect("copy")
        .expect("the generation is live");
    assert_eq!(copied.object.name, to);
    assert_eq!(read(store, bucket, "copy/done/a.csv").await, b"one");
    assert_eq!(
        read(store, bucket, "copy/in/a.csv").await,
        b"one",
        "a copy, not a move"
    );
    store
        .put(bucket, &from, body(b"two"))
        .await
        .expect("overwrite");
    let stale = store
        .copy(
            bucket,
            &from,
            &first.object.generation,
            bucket,
            &name("copy/done/b.csv"),
        )
        .await
        .expect("copy");
    assert!(stale.is_none(), "an overwritten generation is not copied");
    assert!(
        store
            .head(bucket, &name("copy/done/b.csv"))
            .await
            .expect("head")
            .is_none()
    );
    let gone = store
        .copy(
            bucket,
            &name("copy/in/missing.csv"),
            "1",
            bucket,
            &name("copy/done/c.csv"),
        )
        .await
        .expect("copy");
    assert!(gone.is_none(), "a missing object is not copied");
}

/// What a backend does not do as the service it stands for does: the checks it cannot pass
/// are left out for it, each named here.
#[derive(Clone, Copy)]
struct Backend {
    /// A delete with a generation deletes only that generation. fake-gcs-server ignores
    /// `ifGenerationMatch` on a delete (Cloud Storage answers 412, which the adapter reads as
    /// nothing deleted; the recording proxy checks the parameter is sent).
    deletes_check_the_generation: bool,
}

/// Every behaviour, on one store and bucket (each under its own prefix).
async fn conforms(store: &dyn ObjectStore, bucket: &BucketName, backend: Backend) {
    put_then_open_and_head(store, bucket).await;
    a_missing_object_is_not_found(store, bucket).await;
    list_by_prefix_in_name_order(store, bucket).await;
    delete_honours_the_generation(store, bucket, backend).await;
    create_new_only_where_nothing_is(store, bucket).await;
    copy_copies_the_named_generation_only(store, bucket).await;
}

#[tokio::test]
async fn the_embedded_folder_store_keeps_the_object_store_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::new(dir.path()).expect("store");
    let bucket = BucketName::parse("landing").expect("bucket");
    std::fs::create_dir_all(dir.path().join("landing")).expect("bucket dir");
    let backend = Backend {
        deletes_check_the_generation: true,
    };
    conforms(&store, &bucket, backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gcs_store_on_fake_gcs_server_keeps_the_object_store_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(emu) = Emulators::start(
        &dir.path().join("emu"),
        &["start-gcs"],
        "the object store conformance on fake-gcs-server",
    ) else {
        return;
    };
    emu.bucket("landing").await;
    let store = GcsStore::new(&emu.wire.gcs, GcpAuth::Anonymous);
    let bucket = BucketName::parse("landing").expect("bucket");
    let backend = Backend {
        deletes_check_the_generation: false,
    };
    conforms(&store, &bucket, backend).await;
}
