//! The web console in a real headless Chromium (Debian's `chromium`, which `scripts/test.sh`
//! installs): `conveyor dev` serves the example pipelines after `conveyor run`, plus a
//! pipeline whose batch fails; the pages must show the graph, the runs, a run's timeline and
//! the failed run's error. Screenshots go to `target/test-artefacts/console/` (and, with
//! `CONVEYOR_SCREENSHOTS=docs`, to `docs/` for docs/operate.md).
//!
//! Without Chromium the test is skipped loudly; under `CI=true` that is a failure.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use conveyor_e2e::{binary, repo};
use tokio::process::Command;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Added to the examples: a pipeline whose batch exits 3 with a message on stderr, and one
/// that starts after two others (fan-in).
const BROKEN: &str = r#"
  - name: broken_report
    description: A report whose batch fails, to show a failure in the console.
    trigger: { manual: true }
    batch:
      engine: local
      command: "echo 'report failed: table analytics.missing_report does not exist' >&2; exit 3"
    poll: { timeout: 1m, max_attempts: 1 }
  - name: daily_summary
    description: Once the day's CSV and Parquet orders are loaded and aggregated, summarise them.
    trigger: { after: [sales_csv, sales_parquet] }
    jobs:
      - { name: summarise, engine: local, command: "echo summarising {date}" }
  - name: branching
    description: Two branches side by side, a join, and a cleanup that runs only when one failed.
    trigger: { manual: true }
    jobs:
      - { name: extract, engine: local, command: "echo extract" }
      - { name: left, engine: local, command: "echo left", needs: [extract] }
      - { name: right, engine: local, command: "echo right", needs: [extract] }
      - { name: join, engine: local, command: "echo join", needs: [left, right] }
      - { name: cleanup, engine: local, command: "echo cleanup", needs: [join], run_if: one_failed }
  - name: sales_report
    description: Totals per customer from the day's CSV orders (drawn for lineage; started by hand).
    trigger: { manual: true }
    jobs:
      - name: totals
        engine: sql
        query: "SELECT customer, SUM(amount) AS total FROM analytics.sales_csv_{date} GROUP BY customer"
        destination: "reports.customer_totals"
"#;

fn chromium() -> Option<PathBuf> {
    if Path::new(CHROMIUM).exists() {
        return Some(PathBuf::from(CHROMIUM));
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "Chromium is missing at {CHROMIUM}: scripts/test.sh installs it (apt-get install chromium)"
    );
    conveyor_e2e::skipped(&format!(
        "Chromium is not installed ({CHROMIUM}); the console browser test did not run (apt-get install chromium)"
    ));
    None
}

/// Runs headless Chromium on `url` with `args` (`--dump-dom`, `--screenshot=...`) and returns
/// its stdout.
async fn browse(browser: &Path, profile: &Path, url: &str, args: &[String]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=1440,1200",
                // Let the page's script run before the DOM is dumped.
                "--virtual-time-budget=3000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .arg(url)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output(),
    )
    .await
    .expect("chromium timed out")
    .expect("run chromium");
    assert!(out.status.success(), "chromium failed on {url}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn conveyor(args: &[&str], config: &Path, state: &Path) -> std::process::Output {
    Command::new(binary("conveyor"))
        .current_dir(repo())
        .arg("--config")
        .arg(config)
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("CONVEYOR_PROJECT")
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("run conveyor")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_draws_the_example_pipelines_a_run_timeline_and_a_failed_runs_error() {
    let Some(browser) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // The example file, its sample data beside it, and the failing pipeline.
    let examples = repo().join("examples");
    let data = dir.path().join("data/landing/sales/2026-11-20");
    std::fs::create_dir_all(&data).expect("mkdir");
    for f in std::fs::read_dir(examples.join("data/landing/sales/2026-11-20")).expect("data") {
        let f = f.expect("entry").path();
        std::fs::copy(&f, data.join(f.file_name().expect("name"))).expect("copy");
    }
    // Its batch commands run in the file's folder.
    std::fs::create_dir_all(dir.path().join("batch")).expect("mkdir");
    std::fs::copy(
        examples.join("batch/aggregate.sh"),
        dir.path().join("batch/aggregate.sh"),
    )
    .expect("copy");
    let mut yaml = std::fs::read_to_string(examples.join("conveyor.yaml")).expect("examples");
    yaml.push_str(BROKEN);
    let config = dir.path().join("conveyor.yaml");
    std::fs::write(&config, yaml).expect("config");
    let state = dir.path().join("state");

    let run = conveyor(&["run", "--timeout", "90s"], &config, &state).await;
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(
        text.contains("every run SUCCEEDED") && run.status.success(),
        "the examples should run: {text}"
    );
    let trigger = conveyor(&["trigger", "broken_report"], &config, &state).await;
    assert!(
        !trigger.status.success(),
        "a failed run makes trigger fail: {}",
        String::from_utf8_lossy(&trigger.stdout)
    );

    let branching = conveyor(&["trigger", "branching"], &config, &state).await;
    assert!(
        branching.status.success(),
        "the branching pipeline runs: {}",
        String::from_utf8_lossy(&branching.stdout)
    );

    let (mut dev, port) = conveyor_e2e::start_listening("conveyor dev", |port| {
        Command::new(binary("conveyor"))
            .current_dir(repo())
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(&state)
            .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
            .env("NO_COLOR", "1")
            .stdout(std::fs::File::create(dir.path().join("dev.out")).expect("dev.out"))
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("conveyor dev")
    })
    .await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let runs: serde_json::Value = http
        .get(format!("{base}/api/runs?pipeline=broken_report"))
        .send()
        .await
        .expect("api")
        .json()
        .await
        .expect("json");
    let failed = runs[0]["run_id"]
        .as_str()
        .expect("the failed run")
        .to_owned();
    assert_eq!(runs[0]["status"], "FAILED", "{runs}");

    // An operator's re-run from the console (under `conveyor dev` the local user is the
    // operator): the confirmation page, then the action, recorded with who did it.
    let confirm = http
        .get(format!("{base}/runs/{failed}/rerun"))
        .send()
        .await
        .expect("confirm page");
    assert_eq!(confirm.status(), 200);
    let confirm = confirm.text().await.expect("text");
    assert!(
        confirm.contains(r#"name="confirm" value="yes""#),
        "{confirm}"
    );
    let unconfirmed = http
        .post(format!("{base}/runs/{failed}/rerun"))
        .form(&[("from", "")])
        .send()
        .await
        .expect("post");
    assert_eq!(
        unconfirmed.status(),
        400,
        "no action without the confirmation"
    );
    let done = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(format!("{base}/runs/{failed}/rerun"))
        .form(&[("confirm", "yes"), ("from", "")])
        .send()
        .await
        .expect("post");
    assert_eq!(done.status(), 303, "{:?}", done.text().await);
    // The re-run ends (its batch fails again) and the run page names who started it.
    let mut operated = String::new();
    for _ in 0..100 {
        operated = http
            .get(format!("{base}/runs/{failed}"))
            .send()
            .await
            .expect("run page")
            .text()
            .await
            .expect("text");
        // Ended again: the pages below show it among the failures, not as running.
        let again: serde_json::Value = http
            .get(format!("{base}/api/runs?pipeline=broken_report"))
            .send()
            .await
            .expect("api")
            .json()
            .await
            .expect("json");
        if operated.contains("started by")
            && operated.contains("batch attempt 2")
            && again[0]["status"] == "FAILED"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(operated.contains("(conveyor dev)"), "{operated}");
    assert!(operated.contains("batch attempt 2"), "{operated}");

    let artefacts = repo().join("target/test-artefacts/console");
    std::fs::create_dir_all(&artefacts).expect("artefacts dir");
    let profile = dir.path().join("chromium-profile");
    let pages = [
        ("overview", format!("{base}/")),
        ("run-failed", format!("{base}/runs/{failed}")),
        ("pipeline", format!("{base}/pipelines/sales_csv")),
        ("grid", format!("{base}/grid")),
        ("runs-filtered", format!("{base}/runs?status=FAILED")),
        ("branches", format!("{base}/pipelines/branching")),
        (
            "lineage",
            format!("{base}/tables/analytics.sales_csv_%7Bdate%7D"),
        ),
        ("rerun", format!("{base}/runs/{failed}/rerun")),
    ];
    let mut doms = Vec::new();
    for (name, url) in &pages {
        let shot = artefacts.join(format!("{name}.png"));
        let _ = std::fs::remove_file(&shot);
        // One browser start for both: the DOM after the page's script, and its picture.
        let dom = browse(
            &browser,
            &profile,
            url,
            &[
                "--dump-dom".to_owned(),
                format!("--screenshot={}", shot.display()),
            ],
        )
        .await;
        let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{name}: no real screenshot ({size} bytes)");
        doms.push(dom);
    }
    let (overview, run, pipeline) = (&doms[0], &doms[1], &doms[2]);
    let (grid, filtered, branches, lineage, rerun) =
        (&doms[3], &doms[4], &doms[5], &doms[6], &doms[7]);

    // The grid by run date: a row per pipeline, the failed run's cell on its date.
    assert!(grid.contains(r#"data-row="broken_report""#), "{grid}");
    assert!(grid.contains(r#"data-status="FAILED""#), "{grid}");
    assert!(grid.contains(r#"data-row="branching""#));
    // Runs filtered by state: only failed ones, with the form filled in.
    assert!(
        filtered.contains(r#"<option value="FAILED" selected"#),
        "{filtered}"
    );
    assert!(filtered.contains(r#"data-status="FAILED""#));
    assert!(
        !filtered.contains(r#"data-status="SUCCEEDED""#),
        "{filtered}"
    );
    // The branches: left and right after extract, join after both, drawn side by side.
    for node in ["extract", "left", "right", "join", "cleanup"] {
        assert!(
            branches.contains(&format!(r#"data-node="branching/job/{node}""#)),
            "{node}"
        );
    }
    assert!(branches.contains("if one_failed"));
    // Lineage: the load writes the table, the report job reads it.
    assert!(lineage.contains("sales_csv.load"), "{lineage}");
    assert!(
        lineage.contains(r#"data-table="reports.customer_totals""#),
        "{lineage}"
    );
    assert!(lineage.contains(r#"data-table="gs://"#), "{lineage}");
    // The confirmation page of a re-run.
    assert!(rerun.contains("Confirm: Re-run"), "{rerun}");

    // Wide pictures scroll sideways in regions the keyboard can reach (Tab, then arrows).
    for (name, dom) in [
        ("overview", overview),
        ("run", run),
        ("pipeline", pipeline),
        ("grid", grid),
        ("branches", branches),
    ] {
        assert!(
            dom.contains(r#"class="scroll" tabindex="0" role="region" aria-label="#),
            "{name}: a scroll region the keyboard cannot reach"
        );
    }
    // The overview at a phone's width (390 px), for a look (target/test-artefacts).
    browse(
        &browser,
        &profile,
        &pages[0].1,
        &[
            "--window-size=390,844".to_owned(),
            format!("--screenshot={}", artefacts.join("phone.png").display()),
        ],
    )
    .await;

    // The overview: the graph of every example pipeline, the grid, and the failure.
    assert!(overview.contains(r#"<svg class="graph""#), "no graph");
    for p in [
        "landing_import",
        "sales_avro",
        "sales_parquet",
        "sales_csv",
        "sales_ndjson",
        "nightly_summary",
        "legacy_export",
        "broken_report",
        "daily_summary",
    ] {
        assert!(
            overview.contains(&format!(r#"data-node="{p}/trigger""#)),
            "{p} is not drawn"
        );
        assert!(
            overview.contains(&format!(r#"data-pipeline="{p}""#)),
            "{p} has no grid row"
        );
    }
    for node in [
        "landing_import/stage",
        "sales_csv/load",
        "sales_csv/job/batch",
    ] {
        assert!(
            overview.contains(&format!(r#"data-node="{node}""#)),
            "{node}"
        );
    }
    assert!(
        overview.contains(r#"class="edge after""#),
        "after-edges between pipelines"
    );
    assert!(overview.contains(r#"data-node="daily_summary/job/summarise""#));
    assert!(overview.contains("Recent failures"), "failures are listed");
    assert!(overview.contains("analytics.missing_report"));
    assert!(
        overview.contains(" ago</time>"),
        "the page's script ran in the browser (relative times)"
    );

    // The failed run: its error, its timeline with the batch attempt, its graph coloured.
    assert!(run.contains(r#"<svg class="timeline""#), "no timeline");
    assert!(run.contains(r#"data-task="batch attempt 1""#), "{run}");
    assert!(run.contains(r#"id="error""#));
    assert!(run.contains("report failed: table analytics.missing_report does not exist"));
    assert!(run.contains(r#"data-node="broken_report/job/batch" data-status="FAILED""#));

    // A pipeline page: its graph, its runs, the table it wrote.
    assert!(pipeline.contains(r#"data-node="sales_csv/load""#));
    assert!(pipeline.contains("SUCCEEDED"));

    if std::env::var("CONVEYOR_SCREENSHOTS").as_deref() == Ok("docs") {
        let docs = repo().join("docs");
        std::fs::create_dir_all(&docs).expect("docs");
        for name in [
            "overview",
            "run-failed",
            "phone",
            "grid",
            "branches",
            "lineage",
            "runs-filtered",
        ] {
            std::fs::copy(
                artefacts.join(format!("{name}.png")),
                docs.join(format!("console-{name}.png")),
            )
            .expect("copy screenshot");
        }
    }
    let _ = dev.kill().await;
    // `conveyor dev` printed a line per finished step (the loads of the files it found).
    let printed = std::fs::read_to_string(dir.path().join("dev.out")).expect("dev.out");
    assert!(
        printed
            .lines()
            .any(|l| l.contains("sales_csv") && l.contains(" load ") && l.contains("SUCCEEDED")),
        "{printed}"
    );
}
