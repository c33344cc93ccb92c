//! CDAP's REST routes that the Data Fusion engine calls: discovery documents do not describe
//! an instance's CDAP API, so its routes are written here from CDAP's own sources.
//!
//! Source: cdapio/cdap, `cdap-app-fabric/src/main/java/io/cdap/cdap/gateway/handlers/
//! ProgramLifecycleHttpHandler.java` (`@Path("/v3/namespaces/{namespace-id}")` with
//! `@POST @Path("/start")` `startPrograms`, `@GET @Path("/apps/{app-id}/{program-type}/
//! {program-id}/runs")` `programHistory` with `status`, `start`, `end`, `limit`, `@GET
//! @Path(".../runs/{run-id}")` `programRunRecord`, `@POST @Path(".../runs/{run-id}/stop")`
//! `performRunLevelStop` with `graceful`); the start body is a list of
//! `io.cdap.cdap.proto.BatchProgramStart` (`appId`, `programType`, `programId`,
//! `runtimeargs`); a run is an `io.cdap.cdap.proto.RunRecord`, its status an
//! `io.cdap.cdap.proto.ProgramRunStatus`. Data Fusion serves the API under the instance's
//! `apiEndpoint` (`https://INSTANCE-dot-REGION.datafusion.googleusercontent.com/api`), as
//! Google's CDAP reference for Data Fusion shows.

use serde_json::Value;

/// A run's statuses (`ProgramRunStatus`; `ALL` is for queries only).
pub const RUN_STATUSES: &[&str] = &[
    "PENDING",
    "STARTING",
    "RUNNING",
    "SUSPENDED",
    "RESUMING",
    "STOPPING",
    "COMPLETED",
    "FAILED",
    "KILLED",
    "REJECTED",
];

/// The statuses a run never leaves (`ProgramRunStatus.END_STATES`).
pub const END_STATUSES: &[&str] = &["COMPLETED", "FAILED", "KILLED", "REJECTED"];

/// Program categories as they appear in paths.
const PROGRAM_CATEGORIES: &[&str] = &["workflows", "mapreduce", "spark", "services", "workers"];

/// Program types as a start body names them (read case-insensitively).
const PROGRAM_TYPES: &[&str] = &["workflow", "mapreduce", "spark", "service", "worker"];

/// A run record's fields (`RunRecord`).
const RUN_FIELDS: &[&str] = &[
    "runid",
    "starting",
    "start",
    "suspend",
    "resume",
    "stopping",
    "end",
    "terminateTs",
    "status",
    "properties",
    "cluster",
    "profile",
    "peerName",
];

/// A start result's fields (`BatchProgramResult`).
const START_RESULT_FIELDS: &[&str] = &[
    "appId",
    "programType",
    "programId",
    "appVersion",
    "statusCode",
    "error",
    "runId",
];

/// The route of a CDAP request and what is wrong with it: (`cdap.runs.get`, problems).
pub(crate) fn check(
    method: &str,
    path: &str,
    query: &[(String, String)],
    body: Option<&Value>,
    body_len: usize,
    response: Option<&Value>,
) -> (Option<&'static str>, Vec<String>) {
    let mut problems = Vec::new();
    // The instance's endpoint ends in `/api`.
    let path = path.strip_prefix("/api").unwrap_or(path);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (id, allowed): (&'static str, &[&str]) = match (method, segments.as_slice()) {
        ("POST", ["v3", "namespaces", _, "start"]) => ("cdap.programs.start", &[]),
        ("GET", ["v3", "namespaces", _, "apps", _, category, _, "runs"]) => {
            if !PROGRAM_CATEGORIES.contains(category) {
                problems.push(format!("{category:?} is not a program category"));
            }
            ("cdap.runs.list", &["status", "start", "end", "limit"])
        }
        ("GET", ["v3", "namespaces", _, "apps", _, category, _, "runs", _]) => {
            if !PROGRAM_CATEGORIES.contains(category) {
                problems.push(format!("{category:?} is not a program category"));
            }
            ("cdap.runs.get", &[])
        }
        (
            "POST",
            [
                "v3",
                "namespaces",
                _,
                "apps",
                _,
                category,
                _,
                "runs",
                _,
                "stop",
            ],
        ) => {
            if !PROGRAM_CATEGORIES.contains(category) {
                problems.push(format!("{category:?} is not a program category"));
            }
            ("cdap.runs.stop", &["graceful"])
        }
        _ => {
            problems.push("no CDAP route has this method and path".to_owned());
            return (None, problems);
        }
    };
    for (k, v) in query {
        if !allowed.contains(&k.as_str()) {
            problems.push(format!("unknown query parameter {k}"));
        } else if k == "limit" && v.parse::<u32>().is_err() {
            problems.push(format!("limit={v:?} is not an integer"));
        } else if k == "status" && !RUN_STATUSES.contains(&v.to_ascii_uppercase().as_str()) {
            problems.push(format!("status={v:?} is not a run status"));
        }
    }
    if id == "cdap.programs.start" {
        match body {
            Some(Value::Array(items)) if !items.is_empty() => {
                for (i, item) in items.iter().enumerate() {
                    start_item(item, i, &mut problems);
                }
            }
            _ => problems.push("the start body must be a JSON list of programs".to_owned()),
        }
    } else if body_len > 0 {
        problems.push("this route takes no body".to_owned());
    }
    if let Some(answer) = response {
        match (id, answer) {
            ("cdap.runs.list", Value::Array(runs)) => {
                for (i, run) in runs.iter().enumerate() {
                    run_record(run, &format!("[{i}]"), &mut problems);
                }
            }
            ("cdap.runs.get", run) => run_record(run, "", &mut problems),
            ("cdap.programs.start", Value::Array(results)) => {
                for (i, r) in results.iter().enumerate() {
                    for key in r.as_object().into_iter().flatten().map(|(k, _)| k) {
                        if !START_RESULT_FIELDS.contains(&key.as_str()) {
                            problems.push(format!(
                                "answer [{i}].{key}: a field CDAP's answer does not have"
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    (Some(id), problems)
}

fn start_item(item: &Value, i: usize, problems: &mut Vec<String>) {
    let Some(map) = item.as_object() else {
        problems.push(format!("[{i}] is not an object"));
        return;
    };
    for key in map.keys() {
        if !["appId", "programType", "programId", "runtimeargs"].contains(&key.as_str()) {
            problems.push(format!("[{i}].{key}: unknown field"));
        }
    }
    for key in ["appId", "programType", "programId"] {
        if !map.get(key).is_some_and(Value::is_string) {
            problems.push(format!("[{i}].{key}: required, a string"));
        }
    }
    if let Some(t) = map.get("programType").and_then(Value::as_str)
        && !PROGRAM_TYPES.contains(&t.to_ascii_lowercase().as_str())
    {
        problems.push(format!("[{i}].programType: {t:?} is not a program type"));
    }
    if let Some(args) = map.get("runtimeargs")
        && !args
            .as_object()
            .is_some_and(|a| a.values().all(Value::is_string))
    {
        problems.push(format!("[{i}].runtimeargs: must map names to strings"));
    }
}

fn run_record(run: &Value, at: &str, problems: &mut Vec<String>) {
    for (key, v) in run.as_object().into_iter().flatten() {
        if !RUN_FIELDS.contains(&key.as_str()) {
            problems.push(format!(
                "answer {at}.{key}: a field CDAP's answer does not have"
            ));
        }
        if key == "status" && !v.as_str().is_some_and(|s| RUN_STATUSES.contains(&s)) {
            problems.push(format!("answer {at}.status: {v} is not a run status"));
        }
    }
}
