//! The console's check of Identity-Aware Proxy's signed header, against a local JWKS server
//! and assertions signed with a test key (tests/fixtures/test-iap-key.pem: a P-256 key made for
//! these tests only): only a verified `x-goog-iap-jwt-assertion` names the caller.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use conveyor_core::http::Denied;
use conveyor_gcp::iap::{IAP_ISSUER, IapVerifier};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

const KEY: &[u8] = include_bytes!("fixtures/test-iap-key.pem");
const JWKS: &str = include_str!("fixtures/test-iap-jwks.json");
const AUDIENCE: &str = "/projects/123456789012/global/backendServices/4242";

/// A JWKS server of the test key; the count of fetches.
async fn jwks_server() -> (String, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let count = fetches.clone();
    let app = Router::new().route(
        "/public_key-jwk",
        axum::routing::get(move || {
            count.fetch_add(1, Ordering::SeqCst);
            async { ([("content-type", "application/json")], JWKS) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/public_key-jwk",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, fetches)
}

fn assertion(claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("iap-test-1".to_owned());
    encode(
        &header,
        claims,
        &EncodingKey::from_ec_pem(KEY).expect("key"),
    )
    .expect("sign")
}

fn claims(aud: &str, iss: &str, exp_in: i64) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "aud": aud, "iss": iss, "iat": now - 10, "exp": now + exp_in,
        "sub": "accounts.google.com:1234567890", "email": "alice@example.com", "hd": "example.com",
    })
}

fn headers(assertion: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    // The plain header IAP also sets, which anyone can write: never trusted.
    h.insert(
        "x-goog-authenticated-user-email",
        "accounts.google.com:mallory@example.com"
            .parse()
            .expect("value"),
    );
    if let Some(a) = assertion {
        h.insert("x-goog-iap-jwt-assertion", a.parse().expect("value"));
    }
    h
}

fn refused(r: Result<String, Denied>, why: &str) {
    match r {
        Err(Denied::Unauthenticated(w)) => assert!(w.contains(why), "{w}"),
        other => panic!("expected a refusal ({why}), got {other:?}"),
    }
}

#[tokio::test]
async fn only_a_verified_iap_assertion_for_this_audience_names_the_caller() {
    let (url, fetches) = jwks_server().await;
    let iap = IapVerifier::new(&url, AUDIENCE);

    let good = assertion(&claims(AUDIENCE, IAP_ISSUER, 600));
    assert_eq!(
        iap.email(&headers(Some(&good))).await.expect("verified"),
        "alice@example.com"
    );
    // Missing header: the plain e-mail header alone names nobody.
    refused(iap.email(&headers(None)).await, "x-goog-iap-jwt-assertion");
    // Another backend's assertion, an expired one, another issuer.
    let other = assertion(&claims(
        "/projects/123456789012/global/backendServices/9",
        IAP_ISSUER,
        600,
    ));
    refused(iap.email(&headers(Some(&other))).await, "InvalidAudience");
    let expired = assertion(&claims(AUDIENCE, IAP_ISSUER, -600));
    refused(
        iap.email(&headers(Some(&expired))).await,
        "ExpiredSignature",
    );
    let issuer = assertion(&claims(AUDIENCE, "https://accounts.google.com", 600));
    refused(iap.email(&headers(Some(&issuer))).await, "InvalidIssuer");
    // A bad signature: the claims changed after signing.
    let (head, rest) = good.split_once('.').expect("jwt");
    let (_, sig) = rest.split_once('.').expect("jwt");
    let forged_claims = claims(AUDIENCE, IAP_ISSUER, 600)
        .to_string()
        .replace("alice", "mallory");
    let forged = format!("{head}.{}.{sig}", base64_url(forged_claims.as_bytes()));
    refused(iap.email(&headers(Some(&forged))).await, "InvalidSignature");
    // A token of another algorithm (an HS256 one signed with a guessable secret).
    let hs = encode(
        &Header::new(Algorithm::HS256),
        &claims(AUDIENCE, IAP_ISSUER, 600),
        &EncodingKey::from_secret(b"secret"),
    )
    .expect("sign");
    refused(iap.email(&headers(Some(&hs))).await, "not ES256");
    // The keys were fetched once and are kept.
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_key_server_that_does_not_answer_is_unavailable_within_the_fetch_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/public_key-jwk",
        listener.local_addr().expect("addr")
    );
    let app = Router::new().route(
        "/public_key-jwk",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "{}"
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let iap = IapVerifier::new(&url, AUDIENCE).with_fetch_timeout(Duration::from_millis(200));
    let good = assertion(&claims(AUDIENCE, IAP_ISSUER, 600));
    let started = std::time::Instant::now();
    match iap.email(&headers(Some(&good))).await {
        Err(Denied::Unavailable(_)) => {}
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
