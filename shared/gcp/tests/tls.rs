//! The shared HTTP client's TLS: the compiled-in roots verify certificates (a server whose
//! certificate no public CA signed is refused), and the client negotiates over its
//! preconfigured rustls set-up. A local TLS server: Python's `ssl` module with a certificate
//! made by `openssl` (both on the CI machines; the test says so and fails when one is missing).

use std::process::{Command, Stdio};
use std::time::Duration;

use conveyor_gcp::Roots;
use conveyor_gcp::rest::Client;

#[tokio::test]
async fn compiled_in_roots_refuse_a_certificate_no_public_ca_signed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl (Debian package openssl) makes the test certificate");
    assert!(made.success(), "openssl req failed");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let server = format!(
        "import http.server, ssl\n\
         s = http.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler)\n\
         c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
         c.load_cert_chain({cert:?}, {key:?})\n\
         s.socket = c.wrap_socket(s.socket, server_side=True)\n\
         s.serve_forever()\n",
        cert = cert.display().to_string(),
        key = key.display().to_string(),
    );
    let mut child = Command::new("python3")
        .args(["-c", &server])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let client = Client::new(Roots::CompiledIn)
        .expect("client with compiled-in roots")
        .with_timeout(Duration::from_secs(5));
    let url = format!("https://127.0.0.1:{port}/");
    let mut outcome = None;
    for _ in 0..100 {
        match client.get(&url).send().await {
            Err(e) if e.to_string().contains("Connection refused") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => {
                outcome = Some(other);
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let err = match outcome.expect("the TLS server started") {
        Ok(resp) => panic!("a self-signed certificate was trusted: {}", resp.status()),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("UnknownIssuer"),
        "refused for its certificate: {err}"
    );
}
