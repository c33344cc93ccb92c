//! Google-group membership for the console's `group:` operators, against a recording fake of
//! the Cloud Identity Groups API whose requests are checked against cloudidentity.v1's
//! discovery document: transitive membership where the account allows it, direct membership
//! after the 403 a non-premium account answers, and answers kept for a while.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use conveyor_contract::{Documents, Recording};
use conveyor_gcp::GcpAuth;
use conveyor_gcp::cloud_identity::CloudIdentity;
use serde_json::json;

/// A fake of the API: group `ops@example.com` is `groups/ops1` with the direct member
/// `dave@example.com`; `checkTransitiveMembership` answers as a premium account when
/// `premium`, else 403. The paths and queries it was asked.
async fn directory(premium: bool) -> (String, Arc<Mutex<Vec<String>>>, Recording) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let keep = seen.clone();
    let app = Router::new().fallback(move |uri: Uri| {
        let keep = keep.clone();
        async move {
            let path = uri.path().to_owned();
            let query = uri.query().unwrap_or("").to_owned();
            keep.lock().expect("lock").push(format!("{path}?{query}"));
            let decoded: String = form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&");
            match path.as_str() {
                "/v1/groups:lookup" if decoded == "groupKey.id=ops@example.com" => {
                    axum::Json(json!({"name": "groups/ops1"})).into_response()
                }
                "/v1/groups:lookup" => (
                    StatusCode::FORBIDDEN,
                    axum::Json(json!({"error": {"code": 403, "message": "Error(2028): Permission denied for the resource or it does not exist", "status": "PERMISSION_DENIED"}})),
                )
                    .into_response(),
                "/v1/groups/ops1/memberships:checkTransitiveMembership" if premium => {
                    let member = decoded.contains("'dave@example.com'")
                        || decoded.contains("'nested@example.com'");
                    axum::Json(json!({"hasMembership": member})).into_response()
                }
                "/v1/groups/ops1/memberships:checkTransitiveMembership" => (
                    StatusCode::FORBIDDEN,
                    axum::Json(json!({"error": {"code": 403, "message": "Error(2015): Insufficient permissions to retrieve memberships (premium feature).", "status": "PERMISSION_DENIED"}})),
                )
                    .into_response(),
                "/v1/groups/ops1/memberships:lookup" if decoded == "memberKey.id=dave@example.com" => {
                    axum::Json(json!({"name": "groups/ops1/memberships/m1"})).into_response()
                }
                "/v1/groups/ops1/memberships:lookup" => (
                    StatusCode::NOT_FOUND,
                    axum::Json(json!({"error": {"code": 404, "message": "Membership does not exist.", "status": "NOT_FOUND"}})),
                )
                    .into_response(),
                _ => StatusCode::NOT_FOUND.into_response(),
            }
        }
    });
    let recording = Recording::new("cloudidentity fake", &["cloudidentity"], true);
    let app = conveyor_contract::record::layer(app, &recording);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, seen, recording)
}

fn contract(recording: &Recording, expected: &[&str]) {
    match Documents::shared() {
        Ok(docs) => {
            let (findings, kinds) = conveyor_contract::check_all(docs, &recording.requests());
            assert!(findings.is_empty(), "{findings:#?}");
            for k in expected {
                assert!(kinds.contains(*k), "{k} not in {kinds:?}");
            }
        }
        Err(e) => panic!("the discovery documents are needed here: {e}"),
    }
}

#[tokio::test]
async fn a_premium_account_checks_transitive_membership_and_answers_are_kept() {
    let (base, seen, recording) = directory(true).await;
    let groups = CloudIdentity::new(&base, GcpAuth::Anonymous);
    assert!(
        groups
            .is_member("Ops@example.com", "nested@example.com")
            .await
            .expect("check")
    );
    assert!(
        !groups
            .is_member("ops@example.com", "erin@example.com")
            .await
            .expect("check")
    );
    // Kept: asked again, nothing is sent.
    assert!(
        groups
            .is_member("ops@example.com", "NESTED@example.com")
            .await
            .expect("check")
    );
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 3, "one lookup, two checks: {seen:#?}");
    assert!(seen[0].starts_with("/v1/groups:lookup?"), "{seen:?}");
    // A group the account cannot see is a permanent refusal, not "not a member".
    let e = groups
        .is_member("secret@example.com", "dave@example.com")
        .await
        .expect_err("refused");
    assert!(!e.is_transient(), "{e}");
    contract(
        &recording,
        &[
            "cloudidentity.groups.lookup",
            "cloudidentity.groups.memberships.checkTransitiveMembership",
        ],
    );
}

#[tokio::test]
async fn without_premium_the_403_falls_back_to_direct_membership() {
    let (base, seen, recording) = directory(false).await;
    let groups = CloudIdentity::new(&base, GcpAuth::Anonymous);
    assert!(
        groups
            .is_member("ops@example.com", "dave@example.com")
            .await
            .expect("check")
    );
    assert!(
        !groups
            .is_member("ops@example.com", "erin@example.com")
            .await
            .expect("check")
    );
    let seen = seen.lock().expect("lock").clone();
    let transitive = seen
        .iter()
        .filter(|s| s.contains("checkTransitiveMembership"))
        .count();
    assert_eq!(transitive, 1, "asked once, then never again: {seen:#?}");
    assert_eq!(
        seen.iter()
            .filter(|s| s.contains("memberships:lookup"))
            .count(),
        2
    );
    contract(
        &recording,
        &[
            "cloudidentity.groups.lookup",
            "cloudidentity.groups.memberships.checkTransitiveMembership",
            "cloudidentity.groups.memberships.lookup",
        ],
    );
}
