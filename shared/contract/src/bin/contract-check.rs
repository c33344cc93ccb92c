//! `contract-check [DIR]`: checks every request the tests recorded in DIR (default
//! `$CONVEYOR_CONTRACT_DIR`) against Google's discovery documents and CDAP's routes, prints
//! each finding with the test that made it, and checks that every request kind the adapters
//! can send was made. Exits 1 on any finding, on a kind no test sent (unless
//! `CONTRACT_UNCOVERED_OK=1`: tests were skipped here), or when nothing was recorded.

use std::collections::BTreeSet;
use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::ExitCode;

use conveyor_contract::kinds::KINDS;
use conveyor_contract::{Documents, Recorded, check_all};

#[expect(clippy::print_stdout, reason = "a command-line report")]
fn main() -> ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .or_else(|| std::env::var_os("CONVEYOR_CONTRACT_DIR"))
        .map(PathBuf::from);
    let Some(dir) = dir else {
        eprintln!("usage: contract-check DIR (or CONVEYOR_CONTRACT_DIR)");
        return ExitCode::from(2);
    };
    let docs = match Documents::shared() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("contract: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut records: Vec<Recorded> = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "jsonl"))
    {
        let Ok(f) = std::fs::File::open(file) else {
            continue;
        };
        for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Recorded>(&line) {
                Ok(r) => records.push(r),
                Err(e) => {
                    eprintln!(
                        "contract: {}:{}: unreadable record: {e}",
                        file.display(),
                        n + 1
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let tests: BTreeSet<&str> = records.iter().map(|r| r.test.as_str()).collect();
    println!(
        "contract: {} requests from {} tests, checked against {} and CDAP's routes",
        records.len(),
        tests.len(),
        docs.versions
    );
    if records.is_empty() {
        println!("contract: nothing was recorded in {}", dir.display());
        return ExitCode::FAILURE;
    }
    let (findings, kinds) = check_all(docs, &records);
    let uncovered: Vec<&str> = KINDS
        .iter()
        .copied()
        .filter(|k| !kinds.contains(*k))
        .collect();
    let unlisted: Vec<&String> = kinds
        .iter()
        .filter(|k| !KINDS.contains(&k.as_str()))
        .collect();
    println!(
        "contract: request kinds covered: {}/{}",
        KINDS.len() - uncovered.len(),
        KINDS.len()
    );
    for k in &uncovered {
        println!("contract: NOT COVERED: {k}: no test sent it through a recording fake or proxy");
    }
    for k in &unlisted {
        println!("contract: note: {k} was sent but is not in the adapters' list (kinds.rs)");
    }
    for f in &findings {
        println!(
            "contract: FINDING in {}: {} ({}): {}",
            f.test,
            f.request,
            f.method.as_deref().unwrap_or("no method"),
            f.message
        );
    }
    println!("contract: {} findings", findings.len());
    let uncovered_ok = std::env::var("CONTRACT_UNCOVERED_OK").as_deref() == Ok("1");
    if !findings.is_empty() || (!uncovered.is_empty() && !uncovered_ok) {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
