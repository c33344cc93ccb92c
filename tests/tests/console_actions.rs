//! The deployed console's actions: the console service wired as on Cloud Run
//! (`conveyor_console_service::with_actions` with the settings Terraform gives it), behind a
//! stand-in for IAP (assertions signed with the IAP test key, served by a local JWKS), a
//! stand-in for the metadata server (ID tokens), and a local submit function on the embedded
//! chain. An operator's confirmed re-run reaches the submit function's `/rerun` with the
//! console's bearer token and the operator's name, and the run re-runs; mark-success goes the
//! same way.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, Uri};
use conveyor_core::event::StepName;
use conveyor_core::http::{CallerCheck, Denied};
use conveyor_core::ports::RunLogRow;
use conveyor_gcp::GcpAuth;
use conveyor_gcp::engines::MetadataIdTokens;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

const IAP_KEY: &[u8] = include_bytes!("../../shared/gcp/tests/fixtures/test-iap-key.pem");
const IAP_JWKS: &str = include_str!("../../shared/gcp/tests/fixtures/test-iap-jwks.json");
const AUDIENCE: &str = "/projects/123456789012/global/backendServices/4242";

const YAML: &str = r#"
environment: test
pipelines:
  - name: chain
    trigger: { manual: true }
    poll: { max_attempts: 1 }
    jobs:
      - { name: extract, engine: local, command: "echo extract {date} >> RAN" }
      - { name: transform, engine: local, command: "test -e FIXED || exit 1; echo transform {date} >> RAN" }
      - { name: publish, engine: local, command: "echo publish {date} >> RAN" }
"#;

/// IAP's signed header for `email`.
fn iap_assertion(email: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("iap-test-1".to_owned());
    encode(
        &header,
        &json!({"aud": AUDIENCE, "iss": "https://cloud.google.com/iap", "iat": now, "exp": now + 600, "email": email}),
        &EncodingKey::from_ec_pem(IAP_KEY).expect("key"),
    )
    .expect("sign")
}

/// The submit function's check: only the token the metadata server gave for its URL; each
/// caller's path and token recorded.
struct SubmitCheck {
    token: String,
    seen: Arc<Mutex<Vec<String>>>,
}

#[async_trait::async_trait]
impl CallerCheck for SubmitCheck {
    async fn check(&self, headers: &HeaderMap) -> Result<(), Denied> {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        self.seen.lock().expect("lock").push(auth.clone());
        if auth == format!("Bearer {}", self.token) {
            Ok(())
        } else {
            Err(Denied::Unauthenticated(auth))
        }
    }
}

/// The `vars` of a row's detail.
fn vars(r: &RunLogRow) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(&r.detail).unwrap_or_default()["vars"].clone()
}

fn state(rows: &[RunLogRow], run: &str) -> String {
    conveyor_core::run_state::RunState::from_rows(rows.iter().filter(|r| r.run_id == run))
        .expect("state")
        .status
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_rerun_on_the_deployed_console_reaches_submit_with_its_token_and_the_operator()
{
    let dir = tempfile::tempdir().expect("tempdir");
    let ran = dir.path().join("ran.out");
    let fixed = dir.path().join("fixed");
    let yaml = YAML
        .replace("RAN", &ran.display().to_string())
        .replace("FIXED", &fixed.display().to_string());
    let chain = conveyor_e2e::Chain::start(&yaml).await;
    chain
        .accepted(
            StepName::Submit,
            r#"{"pipeline":"chain","date":"2026-11-20"}"#,
        )
        .await;
    chain.settle(Duration::from_secs(30)).await;
    let run = chain.run_log().await[0].run_id.clone();
    assert_eq!(state(&chain.run_log().await, &run), "FAILED");
    std::fs::write(&fixed, "").expect("fix");

    // The metadata server: an ID token per audience.
    let asked: Arc<Mutex<Vec<String>>> = Arc::default();
    let keep = asked.clone();
    let metadata =
        conveyor_e2e::serve(Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let keep = keep.clone();
            async move {
                assert_eq!(headers["metadata-flavor"], "Google");
                let audience = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                    .find(|(k, _)| k == "audience")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                keep.lock()
                    .expect("lock")
                    .push(format!("{} {audience}", uri.path()));
                format!("id-token-for-{audience}")
            }
        }))
        .await;
    let jwks = conveyor_e2e::serve(Router::new().route(
        "/public_key-jwk",
        axum::routing::get(|| async { ([("content-type", "application/json")], IAP_JWKS) }),
    ))
    .await;
    // The submit function, on the chain's state, with its caller check.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let submit_url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let submit = conveyor_core::http::with_caller_check(
        conveyor_core::http::router(StepName::Submit, chain.ctx.clone()),
        Arc::new(SubmitCheck {
            token: format!("id-token-for-{submit_url}"),
            seen: seen.clone(),
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, submit).await;
    });

    // The console as deployed: Terraform's variables.
    let settings = conveyor_console_service::Settings::from_vars(
        [
            ("CONVEYOR_OPERATORS", "alice@example.com, @ops.example.com"),
            ("CONVEYOR_SUBMIT_URL", submit_url.as_str()),
            ("CONVEYOR_IAP_AUDIENCE", AUDIENCE),
            ("CONVEYOR_IAP_JWKS_URL", &format!("{jwks}/public_key-jwk")),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    )
    .expect("settings");
    let console = conveyor_console_service::with_actions(
        conveyor_console::Console::new(
            chain.ctx.ports.run_log.clone(),
            Some(chain.ctx.config.clone()),
        ),
        &settings,
        Arc::new(MetadataIdTokens::at(&metadata)),
        GcpAuth::Anonymous,
    )
    .expect("wired");
    let console = conveyor_e2e::serve(conveyor_console_service::router(console)).await;
    let http = reqwest::Client::new();
    let post = |path: &str, user: Option<&str>, form: &str| {
        let mut req = http
            .post(format!("{console}{path}"))
            .header("content-type", "application/x-www-form-urlencoded")
            // What anyone can write: never trusted.
            .header(
                "x-goog-authenticated-user-email",
                "accounts.google.com:alice@example.com",
            )
            .body(form.to_owned());
        if let Some(user) = user {
            req = req.header("x-goog-iap-jwt-assertion", iap_assertion(user));
        }
        req.send()
    };
    let no_redirect = |r: &reqwest::Response| r.status().as_u16();

    // Without IAP's signed header: 401; not an operator: 403; nothing reaches submit.
    let resp = post(&format!("/runs/{run}/rerun"), None, "confirm=yes")
        .await
        .expect("post");
    assert_eq!(no_redirect(&resp), 401);
    let resp = post(
        &format!("/runs/{run}/rerun"),
        Some("bob@example.com"),
        "confirm=yes",
    )
    .await
    .expect("post");
    assert_eq!(no_redirect(&resp), 403);
    assert!(seen.lock().expect("lock").is_empty());
    assert_eq!(state(&chain.run_log().await, &run), "FAILED");

    // Alice confirms: the console asks submit with its token, and the run re-runs.
    let http_no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let resp = http_no_redirect
        .post(format!("{console}/runs/{run}/rerun"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "x-goog-iap-jwt-assertion",
            iap_assertion("alice@example.com"),
        )
        .body("confirm=yes")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 303, "{:?}", resp.text().await);
    assert_eq!(
        *seen.lock().expect("lock"),
        [format!("Bearer id-token-for-{submit_url}")],
        "one call, with the console's token for the submit function's URL"
    );
    assert_eq!(
        *asked.lock().expect("lock"),
        [format!(
            "/computeMetadata/v1/instance/service-accounts/default/identity {submit_url}"
        )]
    );
    chain.settle(Duration::from_secs(30)).await;
    let rows = chain.run_log().await;
    assert_eq!(state(&rows, &run), "SUCCEEDED");
    let rerun_by: Vec<_> = rows
        .iter()
        .filter(|r| r.run_id == run && r.job.as_deref() == Some("transform") && r.attempt == 2)
        .filter_map(|r| vars(r)["rerun_by"].as_str().map(str::to_owned))
        .collect();
    assert!(
        !rerun_by.is_empty() && rerun_by.iter().all(|b| b == "alice@example.com"),
        "{rerun_by:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&ran).expect("ran").lines().count(),
        3,
        "extract once, then transform and publish"
    );

    // Mark-success goes the same way, with the operator and the reason.
    let resp = http_no_redirect
        .post(format!("{console}/runs/{run}/mark-success"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "x-goog-iap-jwt-assertion",
            iap_assertion("carol@ops.example.com"),
        )
        .body("confirm=yes&job=publish&reason=checked+by+hand")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 303, "{:?}", resp.text().await);
    chain.settle(Duration::from_secs(30)).await;
    let marked: Vec<_> = chain
        .run_log()
        .await
        .into_iter()
        .filter(|r| r.run_id == run && !vars(r)["marked_by"].is_null())
        .collect();
    assert!(!marked.is_empty());
    assert_eq!(vars(&marked[0])["marked_by"], "carol@ops.example.com");
    assert_eq!(vars(&marked[0])["reason"], "checked by hand");
    assert_eq!(seen.lock().expect("lock").len(), 2);
    chain.stop().await;
}
