//! What a stage run copies: the incremental decision for each listed object, and the name it
//! gets in the landing bucket. Pure functions, so every rule has a unit test.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{StageSpec, render};
use crate::names::ObjectName;
use crate::ports::{Digests, SourceObject};

/// What the watermark remembers of one staged object: the source's fingerprint when it was
/// copied, the digests its bytes were verified or computed to have, and where it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Entry {
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) size: Option<u64>,
    /// The source's ETag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) etag: Option<String>,
    /// The source's version (generation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) version: Option<String>,
    /// The source's modification time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) modified: Option<DateTime<Utc>>,
    /// Digests of the bytes copied.
    #[serde(default)]
    pub(super) digests: Digests,
    /// The staged object's name.
    pub(super) target: String,
    /// The staged object's generation.
    #[serde(default)]
    pub(super) generation: String,
    /// When it was staged.
    pub(super) staged_at: DateTime<Utc>,
}

impl Entry {
    /// The entry for `object`, copied (or found unchanged) with `digests`.
    pub(super) fn of(
        object: &SourceObject,
        digests: Digests,
        target: &str,
        generation: &str,
    ) -> Self {
        Self {
            size: object.size,
            etag: object.etag.clone(),
            version: object.version.clone(),
            modified: object.modified,
            digests,
            target: target.to_owned(),
            generation: generation.to_owned(),
            staged_at: Utc::now(),
        }
    }
}

/// The incremental decision for one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// Copy it; the reason is for progress lines.
    Copy(&'static str),
    /// The watermark says it was copied as it is now.
    Skip,
    /// The source gives nothing but a size and a time, and the time changed: read it and
    /// compare its content with the watermark's digests before copying.
    CompareContent,
}

/// Compares digests of the same kind: `Some(true)` when at least one kind is on both sides
/// and all such agree, `Some(false)` when one differs, `None` when no kind is shared.
pub(super) fn digests_agree(a: &Digests, b: &Digests) -> Option<bool> {
    let pairs = [
        (a.md5.as_deref(), b.md5.as_deref()),
        (a.crc32c.as_deref(), b.crc32c.as_deref()),
        (a.sha256.as_deref(), b.sha256.as_deref()),
    ];
    let mut shared = false;
    for (x, y) in pairs {
        if let (Some(x), Some(y)) = (x, y) {
            if !x.eq_ignore_ascii_case(y) {
                return Some(false);
            }
            shared = true;
        }
    }
    shared.then_some(true)
}

/// Whether `object` is copied, given what the watermark remembers of it. Names alone never
/// decide: a size, a digest, an ETag or a version must agree for an object to be skipped.
pub(super) fn decide(previous: Option<&Entry>, object: &SourceObject, full: bool) -> Decision {
    if full {
        return Decision::Copy("forced by --full");
    }
    let Some(p) = previous else {
        return Decision::Copy("new");
    };
    if let (Some(a), Some(b)) = (p.size, object.size)
        && a != b
    {
        return Decision::Copy("changed");
    }
    if let Some(same) = digests_agree(&p.digests, &object.digests) {
        return if same {
            Decision::Skip
        } else {
            Decision::Copy("changed")
        };
    }
    if let (Some(a), Some(b)) = (&p.etag, &object.etag) {
        return if a == b {
            Decision::Skip
        } else {
            Decision::Copy("changed")
        };
    }
    if let (Some(a), Some(b)) = (&p.version, &object.version) {
        return if a == b {
            Decision::Skip
        } else {
            Decision::Copy("changed")
        };
    }
    if p.size.is_some()
        && p.size == object.size
        && p.modified.is_some()
        && p.modified == object.modified
    {
        return Decision::Skip;
    }
    if object.etag.is_none()
        && object.version.is_none()
        && (p.digests.crc32c.is_some() || p.digests.sha256.is_some())
    {
        return Decision::CompareContent;
    }
    Decision::Copy("changed")
}

/// One object to consider, with its staged name (or why it has none).
#[derive(Debug, Clone)]
pub(super) struct Planned {
    /// The source object.
    pub(super) object: SourceObject,
    /// Its name in the landing bucket.
    pub(super) target: Result<ObjectName, String>,
}

/// The template values of one object: `{relative}`, `{name}`, `{stem}`, `{ext}`, `{path}`,
/// plus `run_vars` (`{date}`, `{run_id}`) and `captures` (of `include`).
pub(super) fn object_vars(
    object: &SourceObject,
    run_vars: &BTreeMap<String, String>,
    captures: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let name = object.relative.rsplit('/').next().unwrap_or("").to_owned();
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s.to_owned(), e.to_owned()),
        _ => (name.clone(), String::new()),
    };
    let mut vars = run_vars.clone();
    vars.extend(captures);
    vars.insert("relative".to_owned(), object.relative.clone());
    vars.insert("path".to_owned(), object.path.clone());
    vars.insert("name".to_owned(), name);
    vars.insert("stem".to_owned(), stem);
    vars.insert("ext".to_owned(), ext);
    vars
}

/// The staged name of `object`: `prefix` and `name` rendered with its values.
pub(super) fn target_name(
    spec: &StageSpec,
    object: &SourceObject,
    vars: &BTreeMap<String, String>,
) -> Result<ObjectName, String> {
    if object.relative.is_empty() {
        return Err(format!(
            "cannot name an object after {}: it has no file name",
            object.key
        ));
    }
    let name = format!(
        "{}{}",
        render(&spec.prefix, vars)?,
        render(&spec.name, vars)?
    );
    ObjectName::parse(&name).map_err(|e| format!("staged name {name:?}: {e}"))
}

/// Filters `listed` by `include`, names every object, and fails the objects whose names
/// collide (two sources would overwrite each other).
pub(super) fn plan(
    spec: &StageSpec,
    listed: Vec<SourceObject>,
    run_vars: &BTreeMap<String, String>,
) -> Vec<Planned> {
    let mut out: Vec<Planned> = Vec::new();
    for object in listed {
        let captures = match &spec.include {
            None => BTreeMap::new(),
            Some(p) => match p.captures(&object.relative) {
                Some(c) => c,
                None => continue,
            },
        };
        let vars = object_vars(&object, run_vars, captures);
        let target = target_name(spec, &object, &vars);
        out.push(Planned { object, target });
    }
    let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, p) in out.iter().enumerate() {
        if let Ok(t) = &p.target {
            by_name.entry(t.as_str().to_owned()).or_default().push(i);
        }
    }
    for (name, idx) in by_name {
        if idx.len() > 1 {
            let keys: Vec<String> = idx.iter().map(|&i| out[i].object.key.clone()).collect();
            for &i in &idx {
                out[i].target = Err(format!(
                    "{} source objects would be staged as {name}: {}; use {{relative}} or {{path}} in stage.name",
                    keys.len(),
                    keys.join(", ")
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PathPattern, StageSource};

    fn obj(relative: &str) -> SourceObject {
        SourceObject {
            key: format!("vendor/{relative}"),
            relative: relative.to_owned(),
            path: format!("vendor/{relative}"),
            size: Some(10),
            etag: Some("\"e1\"".to_owned()),
            version: None,
            modified: None,
            digests: Digests::default(),
        }
    }

    fn entry(o: &SourceObject) -> Entry {
        Entry::of(o, Digests::default(), "t", "1")
    }

    fn spec(prefix: &str, name: &str, include: Option<&str>) -> StageSpec {
        StageSpec {
            source: StageSource::Path("x".to_owned()),
            bucket: crate::names::BucketName::parse("landing").unwrap(),
            prefix: prefix.to_owned(),
            name: name.to_owned(),
            include: include.map(|p| PathPattern::parse(p).unwrap()),
            concurrency: 4,
        }
    }

    fn run_vars() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("date".to_owned(), "2026-11-20".to_owned()),
            ("run_id".to_owned(), "r1".to_owned()),
        ])
    }

    #[test]
    fn a_new_object_is_copied_and_an_unchanged_one_skipped() {
        let o = obj("a.avro");
        assert_eq!(decide(None, &o, false), Decision::Copy("new"));
        assert_eq!(decide(Some(&entry(&o)), &o, false), Decision::Skip);
        assert_eq!(
            decide(Some(&entry(&o)), &o, true),
            Decision::Copy("forced by --full")
        );
    }

    #[test]
    fn a_changed_etag_or_size_is_copied_even_under_the_same_name() {
        let o = obj("a.avro");
        let before = entry(&o);
        let mut etag = o.clone();
        etag.etag = Some("\"e2\"".to_owned());
        assert_eq!(
            decide(Some(&before), &etag, false),
            Decision::Copy("changed")
        );
        let mut size = o.clone();
        size.size = Some(11);
        assert_eq!(
            decide(Some(&before), &size, false),
            Decision::Copy("changed")
        );
    }

    #[test]
    fn a_rewrite_with_the_same_content_is_skipped_by_its_checksum() {
        // A Cloud Storage object rewritten with the same bytes: new generation, same CRC32C.
        let mut o = obj("a.avro");
        o.etag = None;
        o.version = Some("1".to_owned());
        o.digests.crc32c = Some("yZRlqg==".to_owned());
        let before = Entry::of(&o, o.digests.clone(), "t", "1");
        let mut again = o.clone();
        again.version = Some("2".to_owned());
        assert_eq!(decide(Some(&before), &again, false), Decision::Skip);
        again.digests.crc32c = Some("AAAAAA==".to_owned());
        assert_eq!(
            decide(Some(&before), &again, false),
            Decision::Copy("changed")
        );
    }

    #[test]
    fn a_local_file_with_only_a_new_time_is_compared_by_content() {
        let mut o = obj("a.csv");
        o.etag = None;
        o.modified = Some(Utc::now());
        let digests = Digests {
            crc32c: Some("yZRlqg==".to_owned()),
            ..Digests::default()
        };
        let before = Entry::of(&o, digests, "t", "1");
        assert_eq!(decide(Some(&before), &o, false), Decision::Skip);
        let mut touched = o.clone();
        touched.modified = Some(Utc::now() + chrono::Duration::seconds(5));
        assert_eq!(
            decide(Some(&before), &touched, false),
            Decision::CompareContent
        );
    }

    #[test]
    fn digests_agree_only_on_shared_kinds() {
        let a = Digests {
            md5: Some("AB".to_owned()),
            ..Digests::default()
        };
        let b = Digests {
            md5: Some("ab".to_owned()),
            crc32c: Some("x".to_owned()),
            ..Digests::default()
        };
        assert_eq!(digests_agree(&a, &b), Some(true));
        assert_eq!(digests_agree(&a, &Digests::default()), None);
    }

    #[test]
    fn names_are_templated_from_the_object_and_the_run() {
        let s = spec("rock_quality/{date}/", "{stem}-{run_id}.{ext}", None);
        let o = obj("site1/core.avro");
        let vars = object_vars(&o, &run_vars(), BTreeMap::new());
        assert_eq!(
            target_name(&s, &o, &vars).unwrap().as_str(),
            "rock_quality/2026-11-20/core-r1.avro"
        );
        let s = spec("copy/", "{path}", None);
        assert_eq!(
            target_name(&s, &o, &vars).unwrap().as_str(),
            "copy/vendor/site1/core.avro"
        );
    }

    #[test]
    fn include_filters_and_its_captures_name_objects() {
        let s = spec("q/{site}/", "{name}", Some("{site}/*.avro"));
        let planned = plan(
            &s,
            vec![obj("s1/a.avro"), obj("s1/a.csv"), obj("s2/b.avro")],
            &run_vars(),
        );
        let names: Vec<String> = planned
            .iter()
            .map(|p| p.target.as_ref().unwrap().to_string())
            .collect();
        assert_eq!(names, ["q/s1/a.avro", "q/s2/b.avro"]);
    }

    #[test]
    fn colliding_names_fail_every_object_involved() {
        let s = spec("", "{name}", None);
        let planned = plan(
            &s,
            vec![obj("a/x.csv"), obj("b/x.csv"), obj("c/y.csv")],
            &run_vars(),
        );
        assert!(
            planned[0]
                .target
                .as_ref()
                .is_err_and(|e| e.contains("vendor/b/x.csv"))
        );
        assert!(planned[1].target.is_err());
        assert!(planned[2].target.is_ok());
    }
}
