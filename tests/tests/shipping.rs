//! The binaries the image ships are the ones the benchmarks measure: each package is built on
//! its own (one `cargo build` of several packages unifies their features, and HTTP/2 and
//! lambda_http came back into every function), the Cloud Run functions link no Lambda runtime
//! and no HTTP/2 stack, and `scripts/bench-service.sh` measures the image's build.

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The packages `package` links (normal dependencies, `features` on), one `name vX.Y.Z` a line.
fn linked(package: &str, features: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo())
        .args([
            "tree",
            "--locked",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args(["--format", "{p}", "-p", package]);
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    let out = cmd.output().expect("cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn links(tree: &str, crate_name: &str) -> bool {
    tree.lines()
        .any(|l| l.split_whitespace().next() == Some(crate_name))
}

#[test]
fn the_cloud_run_functions_link_no_lambda_runtime_and_no_http2() {
    for package in [
        "conveyor-load",
        "conveyor-log",
        "conveyor-poll",
        "conveyor-submit",
        "conveyor-stage",
    ] {
        let tree = linked(package, &[]);
        assert!(links(&tree, "conveyor-gcp"), "{package}: {tree}");
        assert!(
            !links(&tree, "lambda_http"),
            "{package} links lambda_http without the `lambda` feature"
        );
        if package != "conveyor-stage" {
            // The stage sources' reqwest speaks HTTP/2 to web servers; the others have no use
            // for it (the shared client is HTTP/1.1).
            assert!(!links(&tree, "h2"), "{package} links h2");
        }
    }
    // The Lambda build still has its runtime.
    assert!(links(&linked("conveyor-load", &["lambda"]), "lambda_http"));
    // The runner (conveyor-service) holds the Lambda runtime behind its `lambda` feature: the
    // CLI uses its telemetry and serving, not the runtime.
    let cli = linked("conveyor-cli", &[]);
    assert!(links(&cli, "conveyor-service"), "conveyor-cli: {cli}");
    assert!(
        !links(&cli, "lambda_http"),
        "conveyor-cli links lambda_http"
    );
}

#[test]
fn the_image_and_the_bench_build_each_package_on_its_own() {
    let read = |f: &str| std::fs::read_to_string(repo().join(f)).expect(f);
    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains("bash scripts/build-binaries.sh /out"),
        "the Dockerfile builds through scripts/build-binaries.sh"
    );
    assert!(
        !dockerfile
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .any(|l| l.contains("cargo build")),
        "no `cargo build` of several packages at once in the Dockerfile"
    );
    let build = read("scripts/build-binaries.sh");
    assert!(
        build.contains(r#"cargo build --profile "$PROFILE" --locked -p "$package""#),
        "one package per cargo build"
    );
    for binary in [
        "conveyor-stage",
        "conveyor-load",
        "conveyor-submit",
        "conveyor-poll",
        "conveyor-log",
        "conveyor-console",
    ] {
        assert!(build.contains(&format!(":{binary}")), "{binary:?}");
    }
    assert!(build.contains("conveyor-cli:conveyor\""), "the CLI");
    let bench = read("scripts/bench-service.sh");
    assert!(
        bench.contains("BIN=${BIN:-${CARGO_TARGET_DIR:-target}/function/conveyor-load}")
            && bench.contains("scripts/build-binaries.sh - conveyor-load"),
        "the bench measures the image's build by default"
    );
}
