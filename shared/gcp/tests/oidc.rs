//! The functions' optional OIDC check of their callers, against a local JWKS server and tokens
//! signed with a test key (tests/fixtures: a key made for these tests only), in both modes:
//! `verify` (the function verifies every signature) and `cloud-run` (Cloud Run verified the
//! token and forwards it with its signature replaced by `SIGNATURE_REMOVED_BY_GOOGLE`).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use conveyor_core::event::StepName;
use conveyor_core::ports::Ports;
use conveyor_core::steps::Context;
use conveyor_gcp::oidc::{AuthMode, OidcVerifier};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use tower::ServiceExt;

const KEY: &[u8] = include_bytes!("fixtures/test-oidc-key.pem");
const JWKS: &str = include_str!("fixtures/test-oidc-jwks.json");
const AUDIENCE: &str = "https://conveyor-load-123456.europe-west1.run.app";
const PUSHER: &str = "conveyor-push@my-project.iam.gserviceaccount.com";

async fn jwks_server() -> String {
    let app = Router::new().route(
        "/certs",
        axum::routing::get(|| async {
            (
                [
                    ("content-type", "application/json"),
                    ("cache-control", "public, max-age=600"),
                ],
                JWKS,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/certs", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

fn token(claims: serde_json::Value, kid: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(KEY).expect("key"),
    )
    .expect("sign")
}

fn claims(aud: &str, email: &str, verified: bool, exp_in: i64) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": "https://accounts.google.com",
        "aud": aud,
        "email": email,
        "email_verified": verified,
        "iat": now,
        "exp": now + exp_in,
        "sub": "1234567890",
    })
}

fn app(jwks_url: &str) -> Router {
    app_in(jwks_url, AuthMode::Verify)
}

fn app_in(jwks_url: &str, mode: AuthMode) -> Router {
    with_verifier(
        OidcVerifier::new(jwks_url, vec![AUDIENCE.to_owned()], vec![PUSHER.to_owned()])
            .with_mode(mode),
    )
}

fn with_verifier(verifier: OidcVerifier) -> Router {
    let config = conveyor_core::config::parse_str(
        "pipelines:\n  - name: p\n    trigger: { object: { bucket: landing, pattern: \"in/*.csv\" } }\n    load: { table: ds.t, format: CSV }\n",
        "t.yaml",
    )
    .expect("config");
    let ctx = Context::new(Arc::new(config), Ports::unwired());
    conveyor_core::http::with_caller_check(
        conveyor_core::http::router(StepName::Load, ctx),
        Arc::new(verifier),
    )
}

/// `token` as Cloud Run forwards a token it has verified: the signature replaced.
fn stripped(token: &str) -> String {
    let (signed, _signature) = token.rsplit_once('.').expect("a JWT");
    format!("{signed}.SIGNATURE_REMOVED_BY_GOOGLE")
}

/// `token` with other claims and the original signature: what a forger can make from a token
/// they saw (the signature no longer matches).
fn forged(token: &str, claims: &serde_json::Value) -> String {
    use base64::Engine as _;
    let mut parts = token.split('.');
    let (header, _payload, signature) = (
        parts.next().expect("header"),
        parts.next().expect("payload"),
        parts.next().expect("signature"),
    );
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(claims).expect("claims"));
    format!("{header}.{payload}.{signature}")
}

async fn call(app: &Router, token: Option<&str>) -> StatusCode {
    call_with(app, token.map(|t| ("authorization", t))).await
}

async fn call_with(app: &Router, token: Option<(&str, &str)>) -> StatusCode {
    let mut req = Request::post("/").header("content-type", "application/json");
    if let Some((header, t)) = token {
        req = req.header(header, format!("Bearer {t}"));
    }
    // An object under `_conveyor/` needs no backend: 200 once the caller is let through.
    let req = req
        .body(Body::from(r#"{"bucket":"landing","name":"_conveyor/x"}"#))
        .expect("request");
    app.clone().oneshot(req).await.expect("response").status()
}

#[tokio::test]
async fn only_a_google_signed_token_for_this_service_from_an_allowed_account_passes() {
    let url = jwks_server().await;
    let app = app(&url);
    let good = token(claims(AUDIENCE, PUSHER, true, 600), "test-key-1");
    assert_eq!(call(&app, Some(&good)).await, StatusCode::OK);
    assert_eq!(call(&app, None).await, StatusCode::UNAUTHORIZED, "no token");
    let wrong_aud = token(
        claims("https://other.run.app", PUSHER, true, 600),
        "test-key-1",
    );
    assert_eq!(
        call(&app, Some(&wrong_aud)).await,
        StatusCode::UNAUTHORIZED,
        "wrong audience"
    );
    let stranger = token(
        claims(AUDIENCE, "someone@example.com", true, 600),
        "test-key-1",
    );
    assert_eq!(
        call(&app, Some(&stranger)).await,
        StatusCode::FORBIDDEN,
        "unknown account"
    );
    let unverified = token(claims(AUDIENCE, PUSHER, false, 600), "test-key-1");
    assert_eq!(call(&app, Some(&unverified)).await, StatusCode::FORBIDDEN);
    let expired = token(claims(AUDIENCE, PUSHER, true, -3600), "test-key-1");
    assert_eq!(
        call(&app, Some(&expired)).await,
        StatusCode::UNAUTHORIZED,
        "expired"
    );
    let other_key = token(claims(AUDIENCE, PUSHER, true, 600), "not-a-google-key");
    assert_eq!(
        call(&app, Some(&other_key)).await,
        StatusCode::UNAUTHORIZED,
        "unknown key"
    );
    assert_eq!(
        call(&app, Some("not.a.jwt")).await,
        StatusCode::UNAUTHORIZED
    );
    // Cloud Run's probes carry no token.
    let health = app
        .clone()
        .oneshot(
            Request::get("/healthz")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_unreachable_key_server_asks_for_redelivery() {
    let app = app("http://127.0.0.1:9/certs");
    let good = token(claims(AUDIENCE, PUSHER, true, 600), "test-key-1");
    assert_eq!(
        call(&app, Some(&good)).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn behind_cloud_run_a_token_whose_signature_cloud_run_removed_is_checked_by_its_claims() {
    // No key server at all: a token Cloud Run verified needs none.
    let app = app_in("http://127.0.0.1:9/certs", AuthMode::CloudRun);
    let good = token(claims(AUDIENCE, PUSHER, true, 600), "test-key-1");
    assert_eq!(call(&app, Some(&stripped(&good))).await, StatusCode::OK);
    let wrong_aud = token(
        claims(
            "https://conveyor-poll-123456.europe-west1.run.app",
            PUSHER,
            true,
            600,
        ),
        "test-key-1",
    );
    assert_eq!(
        call(&app, Some(&stripped(&wrong_aud))).await,
        StatusCode::UNAUTHORIZED,
        "a token for another function"
    );
    let expired = token(claims(AUDIENCE, PUSHER, true, -3600), "test-key-1");
    assert_eq!(
        call(&app, Some(&stripped(&expired))).await,
        StatusCode::UNAUTHORIZED,
        "expired"
    );
    let stranger = token(
        claims(AUDIENCE, "someone@example.com", true, 600),
        "test-key-1",
    );
    assert_eq!(
        call(&app, Some(&stripped(&stranger))).await,
        StatusCode::FORBIDDEN,
        "an account not on the allow-list"
    );
    let unverified = token(claims(AUDIENCE, PUSHER, false, 600), "test-key-1");
    assert_eq!(
        call(&app, Some(&stripped(&unverified))).await,
        StatusCode::FORBIDDEN
    );
    let mut other_issuer = claims(AUDIENCE, PUSHER, true, 600);
    other_issuer["iss"] = json!("https://sts.example.com");
    assert_eq!(
        call(&app, Some(&stripped(&token(other_issuer, "test-key-1")))).await,
        StatusCode::UNAUTHORIZED,
        "not issued by Google"
    );
    // Cloud Run checks X-Serverless-Authorization when it is present and leaves Authorization
    // to the application: the function reads the one Cloud Run verified.
    assert_eq!(
        call_with(&app, Some(("x-serverless-authorization", &stripped(&good)))).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_token_whose_signature_was_removed_is_refused_where_nothing_in_front_verified_it() {
    let url = jwks_server().await;
    let app = app_in(&url, AuthMode::Verify);
    let good = token(claims(AUDIENCE, PUSHER, true, 600), "test-key-1");
    assert_eq!(call(&app, Some(&good)).await, StatusCode::OK, "signed");
    assert_eq!(
        call(&app, Some(&stripped(&good))).await,
        StatusCode::UNAUTHORIZED,
        "a stripped token proves nothing when no one in front verified it"
    );
    assert_eq!(
        call_with(&app, Some(("x-serverless-authorization", &stripped(&good)))).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_forged_token_that_still_carries_a_signature_is_refused_in_each_mode() {
    let url = jwks_server().await;
    let genuine = token(
        claims(AUDIENCE, "someone@example.com", true, 600),
        "test-key-1",
    );
    // The payload rewritten to name the allowed account, the genuine signature kept.
    let forgery = forged(&genuine, &claims(AUDIENCE, PUSHER, true, 600));
    for mode in [AuthMode::Verify, AuthMode::CloudRun] {
        let app = app_in(&url, mode);
        assert_eq!(
            call(&app, Some(&forgery)).await,
            StatusCode::UNAUTHORIZED,
            "{mode:?}: a signature that does not match the claims"
        );
        let wrong_aud = token(
            claims("https://other.run.app", PUSHER, true, 600),
            "test-key-1",
        );
        assert_eq!(
            call(&app, Some(&wrong_aud)).await,
            StatusCode::UNAUTHORIZED,
            "{mode:?}: wrong audience"
        );
        // A signed, valid token is accepted in both modes (behind Cloud Run it arrives signed
        // only where Cloud Run did not verify that header: it is verified here).
        let good = token(claims(AUDIENCE, PUSHER, true, 600), "test-key-1");
        assert_eq!(call(&app, Some(&good)).await, StatusCode::OK, "{mode:?}");
    }
}

/// A key server that answers its first request with the keys, fresh for one second, and
/// then never answers again (it accepts the connection and stalls).
async fn stalling_jwks_server() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let app = Router::new().route(
        "/certs",
        axum::routing::get(move || {
            let calls = seen.clone();
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) > 0 {
                    std::future::pending::<()>().await;
                }
                (
                    [
                        ("content-type", "application/json"),
                        ("cache-control", "public, max-age=1"),
                    ],
                    JWKS,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/certs", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, calls)
}

#[tokio::test]
async fn a_stalled_key_server_blocks_no_caller_whose_key_is_cached() {
    use std::time::Duration;
    let (url, calls) = stalling_jwks_server().await;
    let app = with_verifier(
        OidcVerifier::new(&url, vec![AUDIENCE.to_owned()], vec![PUSHER.to_owned()])
            .with_fetch_timeout(Duration::from_secs(2)),
    );
    let good = token(claims(AUDIENCE, PUSHER, true, 600), "test-key-1");
    assert_eq!(call(&app, Some(&good)).await, StatusCode::OK);
    // The keys go stale; the next refresh stalls. Valid callers are served from the cache
    // at once, however many, while the refresh waits in the background.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let started = std::time::Instant::now();
    let answers = tokio::time::timeout(
        Duration::from_secs(5),
        futures::future::join_all((0..8).map(|_| call(&app, Some(&good)))),
    )
    .await
    .expect("valid callers were held up by the stalled key server");
    assert!(answers.iter().all(|s| *s == StatusCode::OK), "{answers:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "callers waited {:?} for a stalled key server",
        started.elapsed()
    );
    // The refresh runs on its own task: it reaches the key server (and stalls there).
    let asked = std::time::Instant::now();
    while calls.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "no refresh was started for the stale keys"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A token naming a key the cache lacks waits for the refresh, at most its timeout, and
    // is asked to come back (503) rather than refused for good.
    let unknown = token(claims(AUDIENCE, PUSHER, true, 600), "rotated-key-2");
    let waited = std::time::Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(10), call(&app, Some(&unknown)))
        .await
        .expect("the fetch timeout bounds the wait");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        waited.elapsed() < Duration::from_secs(5),
        "{:?}",
        waited.elapsed()
    );
}
