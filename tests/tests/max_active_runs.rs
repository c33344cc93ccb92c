//! `max_active_runs` on the embedded chain: starts beyond the limit are recorded QUEUED and
//! start in run-date order as runs end, never more than the limit at once.

use std::path::Path;
use std::time::{Duration, Instant};

use conveyor_core::event::StepName;
use conveyor_core::ports::RunLogRow;
use conveyor_e2e::Chain;

/// The run ends of `pipeline`, by run date.
fn run_ends(log: &[RunLogRow]) -> Vec<(String, String)> {
    let mut ends: Vec<(String, String)> = log
        .iter()
        .filter(|r| r.step == "submit" && r.job.is_none() && r.job_id.is_none())
        .map(|r| (r.run_date.clone().unwrap_or_default(), r.status.clone()))
        .collect();
    ends.sort();
    ends
}

/// The `(start, end, date)` nanoseconds each run's job wrote, in start order.
fn spans(path: &Path) -> Vec<(u128, u128, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut spans: Vec<(u128, u128, String)> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 3, "{l}");
            (
                f[1].parse().expect("start"),
                f[2].parse().expect("end"),
                f[0].to_owned(),
            )
        })
        .collect();
    spans.sort();
    spans
}

#[tokio::test]
async fn starts_beyond_the_limit_are_queued_and_start_in_date_order_one_at_a_time() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let spans_file = tmp.path().join("spans");
    let yaml = r#"
pipelines:
  - name: nightly
    max_active_runs: 1
    trigger: { manual: true }
    poll: { interval: 50ms }
    jobs:
      - { name: work, engine: local, command: "s=$(date +%s%N); sleep 0.4; echo {date} $s $(date +%s%N) >> SPANS" }
"#
    .replace("SPANS", &spans_file.display().to_string());
    let chain = Chain::start(&yaml).await;
    let start = async |date: &str| {
        chain
            .accepted(
                StepName::Submit,
                &format!(r#"{{"pipeline":"nightly","date":"{date}"}}"#),
            )
            .await;
    };
    // The latest date first: it takes the one slot (waiting for its first row makes the order
    // of the runs below certain); then two at once, which queue.
    start("2026-11-03").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !chain
        .run_log()
        .await
        .iter()
        .any(|r| r.status == "SUBMITTED")
    {
        assert!(Instant::now() < deadline, "the first run did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start("2026-11-02").await;
    start("2026-11-01").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = chain.run_log().await;
        if run_ends(&log).len() == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every run ended: {:#?}\nspans: {:?}\nbatches: {:?}",
            log.iter()
                .map(|r| format!(
                    "{} {} {} {} {} {:?} {:?}",
                    r.run_date.as_deref().unwrap_or("-"),
                    r.step,
                    r.job.as_deref().unwrap_or("-"),
                    r.attempt,
                    r.status,
                    r.error,
                    r.dataproc_job_id
                ))
                .collect::<Vec<_>>(),
            std::fs::read_to_string(&spans_file),
            std::fs::read_dir(chain.dir.path().join("state/batches")).map(|d| d
                .filter_map(Result::ok)
                .map(|e| e.file_name())
                .collect::<Vec<_>>())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    chain.settle(Duration::from_secs(10)).await;

    let log = chain.run_log().await;
    assert_eq!(
        run_ends(&log),
        [
            ("2026-11-01".to_owned(), "SUCCEEDED".to_owned()),
            ("2026-11-02".to_owned(), "SUCCEEDED".to_owned()),
            ("2026-11-03".to_owned(), "SUCCEEDED".to_owned()),
        ]
    );
    let mut queued: Vec<String> = log
        .iter()
        .filter(|r| r.status == "QUEUED")
        .map(|r| r.run_date.clone().unwrap_or_default())
        .collect();
    queued.sort();
    assert_eq!(
        queued,
        ["2026-11-01", "2026-11-02"],
        "the two starts beyond the limit were recorded QUEUED, once each"
    );
    assert!(
        log.iter()
            .filter(|r| r.status == "QUEUED")
            .all(|r| r.job.as_deref() == Some("work") && r.dataproc_job_id.is_none()),
        "a QUEUED row names the first job and no batch"
    );
    let spans = spans(&spans_file);
    let order: Vec<&str> = spans.iter().map(|s| s.2.as_str()).collect();
    assert_eq!(
        order,
        ["2026-11-03", "2026-11-01", "2026-11-02"],
        "the first start ran, then the queued ones in date order"
    );
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "runs overlapped: {} ended at {}, {} started at {}",
            pair[0].2,
            pair[0].1,
            pair[1].2,
            pair[1].0
        );
    }
    chain.stop().await;
}

/// The most spans open at once.
fn overlap(spans: &[(u128, u128, String)]) -> usize {
    let mut edges: Vec<(u128, i32)> = spans
        .iter()
        .flat_map(|(s, e, _)| [(*s, 1), (*e, -1)])
        .collect();
    // An end before a start at the same instant.
    edges.sort();
    let (mut open, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        open += d;
        most = most.max(open);
    }
    most as usize
}

#[tokio::test]
async fn a_burst_of_six_starts_never_runs_more_than_two_at_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let spans_file = tmp.path().join("spans");
    let yaml = r#"
pipelines:
  - name: nightly
    max_active_runs: 2
    trigger: { manual: true }
    poll: { interval: 50ms }
    jobs:
      - { name: work, engine: local, command: "s=$(date +%s%N); sleep 0.3; echo {date} $s $(date +%s%N) >> SPANS" }
"#
    .replace("SPANS", &spans_file.display().to_string());
    let chain = Chain::start(&yaml).await;
    let dates = [
        "2026-11-01",
        "2026-11-02",
        "2026-11-03",
        "2026-11-04",
        "2026-11-05",
        "2026-11-06",
    ];
    // Six starts at once, as a backfill posts them: none of them is in the run log when the
    // others are decided.
    let bodies: Vec<String> = dates
        .iter()
        .map(|date| format!(r#"{{"pipeline":"nightly","date":"{date}"}}"#))
        .collect();
    futures::future::join_all(
        bodies
            .iter()
            .map(|body| chain.accepted(StepName::Submit, body)),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = chain.run_log().await;
        if run_ends(&log).len() == dates.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every run ended: {:?}\nspans: {:?}",
            run_ends(&log),
            std::fs::read_to_string(&spans_file),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    chain.settle(Duration::from_secs(10)).await;
    let log = chain.run_log().await;
    assert!(
        run_ends(&log).iter().all(|(_, s)| s == "SUCCEEDED"),
        "{:?}",
        run_ends(&log)
    );
    let spans = spans(&spans_file);
    let mut ran: Vec<&str> = spans.iter().map(|s| s.2.as_str()).collect();
    ran.sort_unstable();
    ran.dedup();
    assert_eq!(ran, dates, "every run's job ran");
    assert!(
        overlap(&spans) <= 2,
        "more than max_active_runs ran at once: {spans:?}"
    );
    let queued: std::collections::BTreeSet<String> = log
        .iter()
        .filter(|r| r.status == "QUEUED")
        .map(|r| r.run_date.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        queued.len(),
        4,
        "the four starts beyond the two slots queued: {queued:?}"
    );
    chain.stop().await;
}
