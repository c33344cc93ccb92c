//! GoogleSQL in the embedded `sql` engine: the functions and forms a BigQuery query commonly
//! uses, rewritten or registered on SQLite so a `sql` job runs unchanged on both.
//!
//! Provided: `MOD(a, b)`, `SAFE_CAST(x AS T)` (NULL when `x` does not convert; `T` one of
//! INT64, FLOAT64, NUMERIC, STRING, BOOL, DATE, TIMESTAMP), `CAST(x AS STRING)`, `IFNULL`,
//! `COALESCE`, `FORMAT_DATE(format, date)` (strftime elements: `%Y %m %d %b %B %a %A %j %F
//! %y %e`…), `DATE_SUB` / `DATE_ADD(date, INTERVAL n DAY|WEEK|MONTH|YEAR)`,
//! `CURRENT_DATE` and `CURRENT_DATE()` (UTC), `INSERT t SELECT …` / `INSERT t (cols) …`
//! without `INTO`, backquoted `` `project.ds.t` `` names, `TRUNCATE TABLE`.
//!
//! Not provided (the query fails with SQLite's error naming it): `STRUCT`, `ARRAY`,
//! `UNNEST`, `QUALIFY`, `EXCEPT`/`REPLACE` in `SELECT *`, `PARSE_DATE`, `FORMAT_TIMESTAMP`,
//! `TIMESTAMP_SUB`/`DATETIME_*`, `DATE_TRUNC`, `DATE_DIFF`, `EXTRACT`, `SAFE.` prefixes,
//! `IF(…)` (SQLite has `IIF`), time zones in `CURRENT_DATE('…')`, scripting
//! (`DECLARE`, `SET`, `BEGIN … END`), `MERGE`, `CREATE TEMP FUNCTION`, wildcard tables.

use std::sync::OnceLock;

use chrono::{Duration, Months, NaiveDate};
use regex::Regex;
use rusqlite::Connection;
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::{Value, ValueRef};

fn regex(cell: &'static OnceLock<Option<Regex>>, pattern: &str) -> Option<&'static Regex> {
    cell.get_or_init(|| Regex::new(pattern).ok()).as_ref()
}

/// Rewrites the GoogleSQL forms SQLite cannot parse into calls of the registered functions.
pub(super) fn rewrite(query: &str) -> String {
    static INSERT: OnceLock<Option<Regex>> = OnceLock::new();
    static CURRENT_DATE: OnceLock<Option<Regex>> = OnceLock::new();
    static INTERVAL: OnceLock<Option<Regex>> = OnceLock::new();
    static AS_STRING: OnceLock<Option<Regex>> = OnceLock::new();
    let mut out = safe_casts(query);
    if let Some(re) = regex(&INSERT, r"(?i)\bINSERT(\s+)([A-Za-z_`\x22])") {
        // `INSERT INTO` and `INSERT OR …` are left alone.
        out = re
            .replace_all(&out, |c: &regex::Captures<'_>| {
                let next = &out[c.get(2).map_or(0, |m| m.start())..];
                let word: String = next
                    .chars()
                    .take_while(|ch| ch.is_ascii_alphabetic())
                    .collect();
                if word.eq_ignore_ascii_case("INTO") || word.eq_ignore_ascii_case("OR") {
                    c[0].to_owned()
                } else {
                    format!("INSERT INTO{}{}", &c[1], &c[2])
                }
            })
            .into_owned();
    }
    if let Some(re) = regex(&CURRENT_DATE, r"(?i)\bCURRENT_DATE\s*\(\s*\)") {
        out = re.replace_all(&out, "CURRENT_DATE").into_owned();
    }
    if let Some(re) = regex(
        &INTERVAL,
        r"(?i)\bINTERVAL\s+(-?\s*[0-9]+|[A-Za-z_][A-Za-z0-9_.]*)\s+(DAY|WEEK|MONTH|YEAR)\b",
    ) {
        out = re.replace_all(&out, "$1, '$2'").into_owned();
    }
    if let Some(re) = regex(&AS_STRING, r"(?i)\bAS\s+STRING\s*\)") {
        out = re.replace_all(&out, "AS TEXT)").into_owned();
    }
    out
}

/// `SAFE_CAST(expr AS TYPE)` → `SAFE_CAST(expr, 'TYPE')`, parentheses balanced.
fn safe_casts(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let mut rest = query;
    loop {
        let Some(at) = find_word(rest, "SAFE_CAST") else {
            out.push_str(rest);
            return out;
        };
        let after = &rest[at + "SAFE_CAST".len()..];
        let Some(open) = after.find('(').filter(|&i| after[..i].trim().is_empty()) else {
            out.push_str(&rest[..at + "SAFE_CAST".len()]);
            rest = after;
            continue;
        };
        let inner_start = open + 1;
        let mut depth = 1usize;
        let mut close = None;
        let mut last_as = None;
        let bytes = after.as_bytes();
        let mut i = inner_start;
        while i < bytes.len() {
            match bytes[i] {
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(i);
                        break;
                    }
                }
                _ if depth == 1
                    && after[i..].len() >= 4
                    && after[i..i + 4].eq_ignore_ascii_case(" AS ") =>
                {
                    last_as = Some(i);
                }
                _ => {}
            }
            i += 1;
        }
        match (close, last_as) {
            (Some(close), Some(as_at)) => {
                let expr = &after[inner_start..as_at];
                let ty = after[as_at + 4..close].trim();
                out.push_str(&rest[..at]);
                out.push_str(&format!(
                    "SAFE_CAST({}, '{}')",
                    safe_casts(expr),
                    ty.replace('\'', "")
                ));
                rest = &after[close + 1..];
            }
            _ => {
                out.push_str(&rest[..at + "SAFE_CAST".len()]);
                rest = after;
            }
        }
    }
}

/// Where `word` starts in `text` as a whole word, case-insensitively.
fn find_word(text: &str, word: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    let word = word.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(&word) {
        let at = from + i;
        let before = lower[..at].chars().next_back();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

fn text_of(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
    }
}

fn date_of(v: ValueRef<'_>) -> Option<NaiveDate> {
    let text = text_of(v)?;
    NaiveDate::parse_from_str(text.get(..10).unwrap_or(&text), "%Y-%m-%d").ok()
}

fn safe_cast(value: ValueRef<'_>, ty: &str) -> Value {
    let Some(text) = text_of(value) else {
        return Value::Null;
    };
    let text = text.trim();
    match ty.to_ascii_uppercase().as_str() {
        "INT64" | "INTEGER" | "INT" => match value {
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Value::Integer(f as i64),
            _ => text.parse().map_or(Value::Null, Value::Integer),
        },
        "FLOAT64" | "FLOAT" | "NUMERIC" | "BIGNUMERIC" => {
            text.parse().map_or(Value::Null, Value::Real)
        }
        "BOOL" | "BOOLEAN" => match text.to_ascii_lowercase().as_str() {
            "true" => Value::Integer(1),
            "false" => Value::Integer(0),
            _ => Value::Null,
        },
        "DATE" => NaiveDate::parse_from_str(text, "%Y-%m-%d").map_or(Value::Null, |d| {
            Value::Text(d.format("%Y-%m-%d").to_string())
        }),
        "TIMESTAMP" => chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&chrono::Utc))
            .or_else(|_| {
                chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
                    .map(|t| t.and_utc())
            })
            .map_or(Value::Null, |t| {
                Value::Text(t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            }),
        _ => Value::Text(text.to_owned()),
    }
}

fn shift(date: NaiveDate, n: i64, unit: &str) -> Option<NaiveDate> {
    match unit.to_ascii_uppercase().as_str() {
        "DAY" => date.checked_add_signed(Duration::try_days(n)?),
        "WEEK" => date.checked_add_signed(Duration::try_weeks(n)?),
        "MONTH" | "YEAR" => {
            let months = if unit.eq_ignore_ascii_case("YEAR") {
                n.checked_mul(12)?
            } else {
                n
            };
            let m = Months::new(u32::try_from(months.unsigned_abs()).ok()?);
            if months >= 0 {
                date.checked_add_months(m)
            } else {
                date.checked_sub_months(m)
            }
        }
        _ => None,
    }
}

fn date_shift(ctx: &Context<'_>, sign: i64) -> rusqlite::Result<Value> {
    let (Some(date), Ok(n), Ok(unit)) = (
        date_of(ctx.get_raw(0)),
        ctx.get::<i64>(1),
        ctx.get::<String>(2),
    ) else {
        return Ok(Value::Null);
    };
    Ok(shift(date, sign * n, &unit).map_or(Value::Null, |d| {
        Value::Text(d.format("%Y-%m-%d").to_string())
    }))
}

/// Registers the functions on `conn` (for the queries of the `sql` engine).
///
/// # Errors
/// SQLite's, when a function cannot be registered.
pub(super) fn register(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("MOD", 2, flags, |ctx| {
        let (a, b) = (ctx.get_raw(0), ctx.get_raw(1));
        Ok(match (a, b) {
            (ValueRef::Integer(_), ValueRef::Integer(0)) => Value::Null,
            (ValueRef::Integer(a), ValueRef::Integer(b)) => Value::Integer(a.wrapping_rem(b)),
            (ValueRef::Null, _) | (_, ValueRef::Null) => Value::Null,
            _ => match (ctx.get::<f64>(0), ctx.get::<f64>(1)) {
                (Ok(a), Ok(b)) if b != 0.0 => Value::Real(a % b),
                _ => Value::Null,
            },
        })
    })?;
    conn.create_scalar_function("SAFE_CAST", 2, flags, |ctx| {
        let ty: String = ctx.get(1)?;
        Ok(safe_cast(ctx.get_raw(0), &ty))
    })?;
    conn.create_scalar_function("FORMAT_DATE", 2, flags, |ctx| {
        let format: String = ctx.get(0)?;
        Ok(match date_of(ctx.get_raw(1)) {
            None => Value::Null,
            Some(d) => {
                use std::fmt::Write as _;
                let mut out = String::new();
                // A format chrono cannot render is a NULL, never a panic.
                if write!(out, "{}", d.format(&format)).is_err() {
                    return Ok(Value::Null);
                }
                Value::Text(out)
            }
        })
    })?;
    conn.create_scalar_function("DATE_SUB", 3, flags, |ctx| date_shift(ctx, -1))?;
    conn.create_scalar_function("DATE_ADD", 3, flags, |ctx| date_shift(ctx, 1))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(sql: &str) -> Vec<String> {
        let conn = Connection::open_in_memory().unwrap();
        register(&conn).unwrap();
        conn.execute_batch("CREATE TABLE t (n INTEGER, s TEXT, d TEXT); CREATE TABLE u (n INTEGER, s TEXT, d TEXT); INSERT INTO t VALUES (7, '12', '2026-03-31'), (-7, 'x', '2026-11-20')").unwrap();
        let sql = rewrite(sql);
        let mut stmt = conn.prepare(&sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let n = stmt.column_count();
        stmt.query_map([], |r| {
            Ok((0..n)
                .map(|i| text_of(r.get_ref(i).unwrap()).unwrap_or_else(|| "NULL".into()))
                .collect::<Vec<_>>()
                .join("|"))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    #[test]
    fn common_googlesql_functions_run_on_sqlite() {
        assert_eq!(
            run(
                "SELECT MOD(n, 3), SAFE_CAST(s AS INT64), IFNULL(SAFE_CAST(s AS INT64), 0) FROM t ORDER BY n DESC"
            ),
            ["1|12|12", "-1|NULL|0"]
        );
        assert_eq!(
            run(
                "SELECT FORMAT_DATE('%Y%m%d', d), DATE_SUB(d, INTERVAL 1 MONTH), DATE_ADD(d, INTERVAL 2 DAY) FROM t ORDER BY n DESC"
            ),
            [
                "20260331|2026-02-28|2026-04-02",
                "20261120|2026-10-20|2026-11-22"
            ]
        );
        assert_eq!(
            run("SELECT CAST('007' AS STRING), CURRENT_DATE() = CURRENT_DATE"),
            ["007|1"]
        );
    }

    #[test]
    fn insert_without_into_is_read_as_insert_into() {
        assert_eq!(
            rewrite(
                "INSERT ds.t SELECT 1; insert `ds.u` (a) VALUES (1); INSERT INTO x SELECT 2; INSERT OR REPLACE INTO y VALUES (3)"
            ),
            "INSERT INTO ds.t SELECT 1; INSERT INTO `ds.u` (a) VALUES (1); INSERT INTO x SELECT 2; INSERT OR REPLACE INTO y VALUES (3)"
        );
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (n INTEGER); CREATE TABLE u (n INTEGER)")
            .unwrap();
        conn.execute_batch(&rewrite(
            "INSERT t SELECT 1; INSERT u (n) SELECT n + 1 FROM t",
        ))
        .unwrap();
        let n: i64 = conn.query_row("SELECT n FROM u", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn safe_cast_nests_and_leaves_other_text_alone() {
        assert_eq!(
            rewrite("SELECT SAFE_CAST(CONCAT(a, ' AS x') AS FLOAT64), safe_cast_x FROM t"),
            "SELECT SAFE_CAST(CONCAT(a, ' AS x'), 'FLOAT64'), safe_cast_x FROM t"
        );
    }
}
