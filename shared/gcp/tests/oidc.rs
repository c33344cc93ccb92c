//! The functions' optional OIDC check of their callers, against a local JWKS server and tokens
//! signed with a test key (tests/fixtures: a key made for these tests only).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use conveyor_core::event::StepName;
use conveyor_core::ports::Ports;
use conveyor_core::steps::Context;
use conveyor_gcp::oidc::OidcVerifier;
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
    let config = conveyor_core::config::parse_str(
        "pipelines:\n  - name: p\n    trigger: { object: { bucket: landing, pattern: \"in/*.csv\" } }\n    load: { table: ds.t, format: CSV }\n",
        "t.yaml",
    )
    .expect("config");
    let ctx = Context::new(Arc::new(config), Ports::unwired());
    conveyor_core::http::with_caller_check(
        conveyor_core::http::router(StepName::Load, ctx),
        Arc::new(OidcVerifier::new(
            jwks_url,
            vec![AUDIENCE.to_owned()],
            vec![PUSHER.to_owned()],
        )),
    )
}

async fn call(app: &Router, token: Option<&str>) -> StatusCode {
    let mut req = Request::post("/").header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
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
