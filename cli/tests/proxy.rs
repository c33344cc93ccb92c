//! `conveyor` honours `HTTPS_PROXY` and `NO_PROXY` when it calls a deployed function (and
//! Google's APIs): on a network that reaches the internet only through a proxy, the call goes
//! through a CONNECT tunnel.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

/// A proxy on 127.0.0.1 that records the head of the first request it gets, accepts a CONNECT
/// and then closes the tunnel (nothing reaches the network).
fn proxy() -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(mut sock) = sock else { return };
            let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
            let mut buf = vec![0u8; 8192];
            let mut read = 0;
            while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut buf[read..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read += n,
                }
            }
            let _ = sock.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
            let _ = tx.send(String::from_utf8_lossy(&buf[..read]).into_owned());
        }
    });
    (format!("http://{addr}"), rx)
}

fn conveyor_with_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_conveyor"));
    cmd.args(args).env_remove("CONVEYOR_CONFIG");
    for var in conveyor_gcp::rest::PROXY_VARIABLES
        .into_iter()
        .chain(["NO_PROXY", "no_proxy"])
    {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run conveyor")
}

#[test]
fn a_remote_trigger_goes_through_the_https_proxy() {
    let (proxy_url, seen) = proxy();
    let out = conveyor_with_env(
        &[
            "trigger",
            "sales_csv",
            "--remote",
            "https://submit.example.invalid/",
            "--token",
            "t0k",
        ],
        &[("HTTPS_PROXY", &proxy_url)],
    );
    let head = seen
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            panic!(
                "the proxy saw nothing; conveyor said: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(
        head.starts_with("CONNECT submit.example.invalid:443 HTTP/1.1\r\n"),
        "{head}"
    );
    // The tunnel closed: the call failed, saying where it was going.
    assert!(!out.status.success());
}

#[test]
fn no_proxy_hosts_are_called_directly() {
    let (proxy_url, seen) = proxy();
    // Nothing listens at the direct address: the call fails, and the proxy sees nothing.
    let free = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let out = conveyor_with_env(
        &[
            "trigger",
            "sales_csv",
            "--remote",
            &format!("http://{free}/"),
            "--token",
            "t0k",
        ],
        &[("HTTP_PROXY", &proxy_url), ("NO_PROXY", "127.0.0.1")],
    );
    assert!(!out.status.success());
    assert!(
        seen.recv_timeout(Duration::from_millis(500)).is_err(),
        "a NO_PROXY host went through the proxy"
    );
}
