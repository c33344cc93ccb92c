//! Cloud Storage requests of `load.on_success` (`objects.rewrite` for a move,
//! `objects.delete` of the loaded generation) against a fake that refuses what the discovery
//! document of storage.v1 does.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use conveyor_contract::{Documents, Recording};
use conveyor_core::names::{BucketName, ObjectName};
use conveyor_core::ports::ObjectStore;
use conveyor_gcp::{GcpAuth, GcsStore};
use serde_json::json;

fn resource(name: &str) -> serde_json::Value {
    json!({"bucket": "landing", "name": name, "generation": "9", "size": "3", "crc32c": "AAAAAA=="})
}

#[tokio::test]
async fn a_move_rewrites_the_loaded_generation_in_as_many_calls_as_it_takes_then_deletes_it() {
    let seen: Arc<Mutex<Vec<(Method, String)>>> = Arc::default();
    let app = Router::new().fallback({
        let seen = seen.clone();
        move |method: Method, uri: Uri| {
            let seen = seen.clone();
            async move {
                let target = uri.to_string();
                seen.lock()
                    .expect("lock")
                    .push((method.clone(), target.clone()));
                if target.contains("gone.csv") {
                    return (
                        StatusCode::NOT_FOUND,
                        axum::Json(json!({"error": {"code": 404, "message": "No such object"}})),
                    )
                        .into_response();
                }
                if method == Method::DELETE {
                    return StatusCode::NO_CONTENT.into_response();
                }
                if target.contains("rewriteToken=t1") {
                    axum::Json(json!({"kind": "storage#rewriteResponse", "done": true,
                        "totalBytesRewritten": "3", "objectSize": "3",
                        "resource": resource("done/in/a.csv")}))
                    .into_response()
                } else {
                    axum::Json(json!({"kind": "storage#rewriteResponse", "done": false,
                        "totalBytesRewritten": "1", "objectSize": "3", "rewriteToken": "t1"}))
                    .into_response()
                }
            }
        }
    });
    let recording = Recording::new("storage fake", &["storage"], true);
    let app = conveyor_contract::record::layer(app, &recording);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let store = GcsStore::new(&base, GcpAuth::Anonymous);
    let bucket = BucketName::parse("landing").expect("bucket");
    let name = |n: &str| ObjectName::parse(n).expect("name");

    let copied = store
        .copy(
            &bucket,
            &name("in/a.csv"),
            "7",
            &bucket,
            &name("done/in/a.csv"),
        )
        .await
        .expect("copy")
        .expect("copied");
    assert_eq!(copied.object.name.as_str(), "done/in/a.csv");
    assert!(
        store
            .delete(&bucket, &name("in/a.csv"), Some("7"))
            .await
            .expect("delete")
    );
    // A source gone already (a second DONE after the move): nothing to copy, no error.
    assert!(
        store
            .copy(
                &bucket,
                &name("in/gone.csv"),
                "7",
                &bucket,
                &name("done/in/gone.csv")
            )
            .await
            .expect("copy")
            .is_none()
    );

    let seen = seen.lock().expect("lock").clone();
    let targets: Vec<&str> = seen.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        targets[0],
        "/storage/v1/b/landing/o/in%2Fa.csv/rewriteTo/b/landing/o/done%2Fin%2Fa.csv?sourceGeneration=7"
    );
    assert!(
        targets[1].ends_with("sourceGeneration=7&rewriteToken=t1"),
        "{}",
        targets[1]
    );
    assert_eq!(seen[2].0, Method::DELETE);
    assert_eq!(
        targets[2],
        "/storage/v1/b/landing/o/in%2Fa.csv?ifGenerationMatch=7"
    );

    match Documents::shared() {
        Ok(docs) => {
            let (findings, kinds) = conveyor_contract::check_all(docs, &recording.requests());
            assert!(findings.is_empty(), "{findings:#?}");
            assert!(kinds.contains("storage.objects.rewrite"), "{kinds:?}");
            assert!(kinds.contains("storage.objects.delete"), "{kinds:?}");
        }
        Err(e) => panic!("the discovery documents are needed here: {e}"),
    }
}
