//! The `stage` section: where staged data comes from (a local path, an S3 bucket, another
//! Cloud Storage bucket, or https URLs), how staged objects are named in the landing bucket,
//! and the checks that catch mistakes before a run, inline credentials first of all.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use marked_yaml::Node;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{PathPattern, placeholders};
use crate::names::BucketName;

/// Where staged data comes from and where it goes.
///
/// ```yaml
/// stage:
///   source:
///     s3: { bucket: vendor-drop, prefix: rock_quality, region: us-east-1,
///           secret: projects/my-project/secrets/vendor-s3 }
///   bucket: landing
///   prefix: "rock_quality/{date}/"
///   name: "{relative}"
///   include: "**.avro"
///   concurrency: 4
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// The source: a local path, or `s3://`, `gs://`, `http(s)://` URL as one string, or a
    /// mapping with exactly one of `path`, `s3`, `gcs`, `https`.
    pub source: StageSource,
    /// The landing bucket.
    pub bucket: BucketName,
    /// Prefix of the staged object names (`sales/{date}/`). Placeholders as in `name`.
    #[serde(default)]
    pub prefix: String,
    /// Name of each staged object after `prefix`. Default `{relative}`: the object's path
    /// below the source folder. Placeholders: `{relative}`, `{name}` (file name), `{stem}`
    /// (file name without its last extension), `{ext}` (that extension, without the dot),
    /// `{path}` (the full S3 key, object name or URL path), `{date}` (the run's UTC date),
    /// `{run_id}`, and the captures of `include`.
    #[serde(default = "default_name")]
    pub name: String,
    /// Only objects whose relative path matches this pattern are staged (`**.avro`,
    /// `{site}/*.avro`); its captures can be used in `prefix` and `name`.
    #[serde(default)]
    pub include: Option<PathPattern>,
    /// Objects copied at the same time (1 to 32; default 4). Memory grows with it: about
    /// 16 MiB per copy into Cloud Storage, whatever the objects' size.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

fn default_name() -> String {
    "{relative}".to_owned()
}

fn default_concurrency() -> usize {
    4
}

/// Placeholders every stage template knows, besides the captures of `include`.
pub(crate) const STAGE_PLACEHOLDERS: &[&str] =
    &["date", "run_id", "relative", "name", "stem", "ext", "path"];

/// Placeholders that differ from one source object to the next.
const PER_OBJECT: &[&str] = &["relative", "name", "stem", "path"];

/// A stage source.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StageSource {
    /// A local file or directory (relative to the configuration file).
    Path(String),
    /// A folder of an S3 bucket (or of an S3-compatible service).
    S3(S3Source),
    /// A folder of another Cloud Storage bucket.
    Gcs(GcsSource),
    /// Files on web servers.
    Https(HttpsSource),
}

/// A folder of an S3 bucket. Credentials come from the environment (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`; `AWS_REGION` and `AWS_ENDPOINT_URL` too)
/// or from a Secret Manager secret named by `secret`, never from this file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Source {
    /// The bucket name.
    pub bucket: String,
    /// The folder to copy (`vendor/rock_quality`); empty for the whole bucket.
    #[serde(default)]
    pub prefix: String,
    /// The bucket's region (`us-east-1`); default `AWS_REGION`, then `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint of an S3-compatible service (MinIO, moto: `http://127.0.0.1:9000`); default
    /// `AWS_ENDPOINT_URL`, then AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// A Secret Manager secret holding the credentials as JSON (`{"access_key_id": ..,
    /// "secret_access_key": .., "session_token": ..}`): `projects/P/secrets/NAME`, optionally
    /// with `/versions/V` (default `latest`). Without it, the environment's credentials.
    #[serde(default)]
    pub secret: Option<SecretRef>,
    /// A public bucket: requests are not signed and no credentials are needed.
    #[serde(default)]
    pub anonymous: bool,
    /// How a copy is checked against the source: `etag` (default: a single-part upload's
    /// ETag is the MD5 of its bytes, and the bytes read must match it; multipart ETags are
    /// not digests and only the size is checked) or `size` (for buckets encrypted with
    /// SSE-KMS or SSE-C, whose ETags are not MD5 digests).
    #[serde(default)]
    pub verify: S3Verify,
}

/// How an S3 copy is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum S3Verify {
    /// Size, and MD5 against a single-part ETag.
    #[default]
    Etag,
    /// Size only.
    Size,
}

/// A folder of a Cloud Storage bucket, read with the stage function's own identity (in the
/// embedded mode: a bucket directory of the state directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GcsSource {
    /// The bucket.
    pub bucket: BucketName,
    /// The folder to copy (`exports/daily`); empty for the whole bucket.
    #[serde(default)]
    pub prefix: String,
}

/// Files on web servers: a list of URLs, or the URL of a manifest listing them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpsSource {
    /// The files' URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// The URL of a text file listing one URL per line (blank lines and lines starting with
    /// `#` are skipped; relative URLs are resolved against the manifest's), fetched at each
    /// run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
}

impl StageSource {
    /// A short description without credentials: `s3://bucket/prefix`, `gs://…`, a path, the
    /// first URL.
    pub fn describe(&self) -> String {
        match self {
            Self::Path(p) => p.clone(),
            Self::S3(s) => format!("s3://{}/{}", s.bucket, s.prefix),
            Self::Gcs(g) => format!("gs://{}/{}", g.bucket, g.prefix),
            Self::Https(h) => match (&h.manifest, h.urls.as_slice()) {
                (Some(m), _) => format!("manifest {}", redact_url(m)),
                (None, [one]) => redact_url(one),
                (None, urls) => format!("{} URL(s)", urls.len()),
            },
        }
    }

    /// Parses the one-string form: a local path, `file://path`, `s3://bucket/prefix`,
    /// `gs://bucket/prefix` or an `http(s)://` URL.
    ///
    /// # Errors
    /// An empty string, an unknown scheme, a bad bucket name or credentials in the URL.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("the stage source must not be empty".to_owned());
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Ok(Self::Path(s.to_owned()));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        match scheme {
            "file" => Ok(Self::Path(rest.to_owned())),
            "http" | "https" => Ok(Self::Https(HttpsSource {
                urls: vec![s.to_owned()],
                manifest: None,
            })),
            "s3" | "gs" if bucket.contains('@') => Err(format!(
                "credentials are not allowed in a {scheme}:// source: {}",
                CREDENTIALS_HINT
            )),
            "s3" => Ok(Self::S3(S3Source {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
                region: None,
                endpoint: None,
                secret: None,
                anonymous: false,
                verify: S3Verify::default(),
            })),
            "gs" => Ok(Self::Gcs(GcsSource {
                bucket: BucketName::parse(bucket).map_err(|e| e.to_string())?,
                prefix: prefix.to_owned(),
            })),
            other => Err(format!(
                "unsupported source scheme {other:?}: use a local path, file://, s3://, gs://, http:// or https://"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for StageSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StageSource;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a path or an s3://, gs:// or https:// URL, or a mapping with one of `path`, `s3`, `gcs`, `https`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StageSource, E> {
                StageSource::parse(v).map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<StageSource, A::Error> {
                use serde::de::Error;
                const KINDS: &[&str] = &["path", "s3", "gcs", "https"];
                let Some(kind) = map.next_key::<String>()? else {
                    return Err(A::Error::custom(
                        "a source mapping needs one of `path`, `s3`, `gcs`, `https`",
                    ));
                };
                let source = match kind.as_str() {
                    "path" => {
                        let p: String = map.next_value()?;
                        match StageSource::parse(&p).map_err(A::Error::custom)? {
                            StageSource::Path(p) => StageSource::Path(p),
                            _ => {
                                return Err(A::Error::custom(
                                    "`path` takes a local path; use `s3`, `gcs` or `https` for URLs",
                                ));
                            }
                        }
                    }
                    "s3" => StageSource::S3(map.next_value()?),
                    "gcs" => StageSource::Gcs(map.next_value()?),
                    "https" => StageSource::Https(map.next_value()?),
                    other => return Err(A::Error::unknown_variant(other, KINDS)),
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(A::Error::custom(format!(
                        "a source has exactly one of `path`, `s3`, `gcs`, `https` (found `{kind}` and `{extra}`)"
                    )));
                }
                Ok(source)
            }
        }
        d.deserialize_any(V)
    }
}

/// A Secret Manager secret version: `projects/P/secrets/NAME` (the latest version) or
/// `projects/P/secrets/NAME/versions/V`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SecretRef {
    secret: String,
    version: String,
}

impl SecretRef {
    /// Parses a secret reference.
    ///
    /// # Errors
    /// When `s` is not `projects/P/secrets/NAME[/versions/V]`. The message does not repeat
    /// `s`, which may be a key pasted by mistake.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok_part = |p: &str| {
            !p.is_empty()
                && p.len() <= 255
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let (secret, version) = match parts.as_slice() {
            ["projects", p, "secrets", n] if ok_part(p) && ok_part(n) => {
                (format!("projects/{p}/secrets/{n}"), "latest".to_owned())
            }
            ["projects", p, "secrets", n, "versions", v]
                if ok_part(p) && ok_part(n) && ok_part(v) =>
            {
                (format!("projects/{p}/secrets/{n}"), (*v).to_owned())
            }
            _ => {
                return Err(format!(
                    "`secret` must name a Secret Manager secret, `projects/PROJECT/secrets/NAME` (optionally `/versions/V`); {CREDENTIALS_HINT}"
                ));
            }
        };
        Ok(Self { secret, version })
    }

    /// `projects/P/secrets/NAME`.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The version: a number or `latest`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// `projects/P/secrets/NAME/versions/V`, the resource Secret Manager reads.
    pub fn version_name(&self) -> String {
        format!("{}/versions/{}", self.secret, self.version)
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.version == "latest" {
            f.write_str(&self.secret)
        } else {
            write!(f, "{}/versions/{}", self.secret, self.version)
        }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretRef({self})")
    }
}

impl Serialize for SecretRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

const CREDENTIALS_HINT: &str = "credentials never go in the pipeline file: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the service's environment, or store them in Secret Manager and name the secret with `secret: projects/PROJECT/secrets/NAME`";

/// Keys that would hold a credential, in any spelling people use.
const CREDENTIAL_KEYS: &[&str] = &[
    "access_key",
    "access_key_id",
    "accesskeyid",
    "aws_access_key_id",
    "secret_key",
    "secret_access_key",
    "secretaccesskey",
    "aws_secret_access_key",
    "session_token",
    "sessiontoken",
    "aws_session_token",
    "token",
    "password",
    "credentials",
    "private_key",
    "api_key",
];

/// `(field path below the section, line and column, message)`.
type Finding = (String, Option<(usize, usize)>, String);

/// Finds credentials written into a `stage` section: keys such as `access_key_id` or
/// `secret_access_key` anywhere below it, and URLs with a password (`https://u:p@host`).
/// Returns `(field path below the section, line and column, message)`; messages never repeat
/// the value.
pub(super) fn inline_credentials(stage: &Node) -> Vec<Finding> {
    fn line(n: &Node) -> Option<(usize, usize)> {
        n.span().start().map(|m| (m.line(), m.column()))
    }
    fn walk(node: &Node, path: &str, out: &mut Vec<Finding>) {
        if let Some(map) = node.as_mapping() {
            for (k, v) in map.iter() {
                let key = k.as_str();
                let p = if path.is_empty() {
                    key.to_owned()
                } else {
                    format!("{path}.{key}")
                };
                if CREDENTIAL_KEYS.contains(&key.to_ascii_lowercase().as_str()) {
                    out.push((
                        p,
                        k.span().start().map(|m| (m.line(), m.column())),
                        format!("inline credentials are not allowed: {CREDENTIALS_HINT}"),
                    ));
                } else {
                    walk(v, &p, out);
                }
            }
        } else if let Some(seq) = node.as_sequence() {
            for (i, v) in seq.iter().enumerate() {
                walk(v, &format!("{path}[{i}]"), out);
            }
        } else if let Some(s) = node.as_scalar()
            && url_has_password(s.as_str())
        {
            out.push((
                path.to_owned(),
                line(node),
                format!("a URL with a password is not allowed: {CREDENTIALS_HINT}"),
            ));
        }
    }
    let mut out = Vec::new();
    walk(stage, "", &mut out);
    out
}

/// Whether `s` is a URL whose authority carries `user:password@`.
fn url_has_password(s: &str) -> bool {
    let Some((_, rest)) = s.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// `url` without its user information, query string and fragment, for messages and logs
/// (a signed URL's signature is a credential).
pub fn redact_url(url: &str) -> String {
    let base = url.split(['?', '#']).next().unwrap_or(url);
    let redacted = match base.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => base.to_owned(),
    };
    if redacted.len() < url.len() && url[base.len()..].starts_with('?') {
        format!("{redacted}?…")
    } else {
        redacted
    }
}

fn check_url(url: &str) -> Option<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Some(format!(
            "{} is not an http:// or https:// URL",
            redact_url(url)
        ));
    };
    if !matches!(scheme, "http" | "https") {
        return Some(format!(
            "{} is not an http:// or https:// URL",
            redact_url(url)
        ));
    }
    if rest.split(['/', '?', '#']).next().unwrap_or("").is_empty() {
        return Some(format!("{} has no host", redact_url(url)));
    }
    None
}

/// The folder a prefix names: without leading and trailing `/`.
pub fn folder(prefix: &str) -> &str {
    prefix.trim_matches('/')
}

impl StageSpec {
    /// The placeholders `prefix` and `name` may use: [`STAGE_PLACEHOLDERS`] and the captures
    /// of `include`.
    pub(crate) fn known_placeholders(&self) -> Vec<String> {
        let mut known: Vec<String> = STAGE_PLACEHOLDERS.iter().map(|s| (*s).to_owned()).collect();
        if let Some(p) = &self.include {
            known.extend(p.names().iter().cloned());
        }
        known
    }

    /// Makes a relative local source path relative to `base` (the configuration file's
    /// directory).
    pub(crate) fn resolve_relative(&mut self, base: &Path) {
        if let StageSource::Path(p) = &mut self.source
            && Path::new(p.as_str()).is_relative()
        {
            let relative = p.trim_start_matches("./");
            *p = base.join(relative).display().to_string();
        }
    }

    /// Everything wrong with this section that parsing alone does not catch, as
    /// `(field path below the section, message)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let known = self.known_placeholders();
        let mut used = BTreeSet::new();
        for (field, template) in [("prefix", &self.prefix), ("name", &self.name)] {
            for p in placeholders(template) {
                if !known.contains(&p) {
                    out.push((
                        field.to_owned(),
                        format!("unknown placeholder {{{p}}}; known: {}", known.join(", ")),
                    ));
                }
                used.insert(p);
            }
            if template.matches('{').count() != template.matches('}').count() {
                out.push((field.to_owned(), "unbalanced `{` and `}`".to_owned()));
            }
        }
        if self.name.trim().is_empty() {
            out.push(("name".to_owned(), "must not be empty".to_owned()));
        }
        if self.prefix.starts_with('/') {
            out.push((
                "prefix".to_owned(),
                "must be relative to the bucket (no leading '/')".to_owned(),
            ));
        }
        let single = match &self.source {
            StageSource::Https(h) => h.manifest.is_none() && h.urls.len() == 1,
            _ => false,
        };
        let distinguishing = PER_OBJECT.iter().any(|p| used.contains(*p))
            || self
                .include
                .as_ref()
                .is_some_and(|i| i.names().iter().any(|n| used.contains(n)));
        if !single && !distinguishing {
            out.push((
                "name".to_owned(),
                "every object would get the same name: use {relative}, {name}, {stem} or {path}"
                    .to_owned(),
            ));
        }
        if !(1..=32).contains(&self.concurrency) {
            out.push((
                "concurrency".to_owned(),
                "must be between 1 and 32".to_owned(),
            ));
        }
        match &self.source {
            StageSource::Path(p) if p.trim().is_empty() => {
                out.push(("source.path".to_owned(), "must not be empty".to_owned()));
            }
            StageSource::Path(_) => {}
            StageSource::S3(s) => {
                let b = &s.bucket;
                let valid = (3..=63).contains(&b.len())
                    && b.bytes().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.'
                    })
                    && b.bytes().next().is_some_and(|c| c.is_ascii_alphanumeric())
                    && b.bytes().last().is_some_and(|c| c.is_ascii_alphanumeric());
                if !valid {
                    out.push((
                        "source.s3.bucket".to_owned(),
                        format!("{b:?} is not an S3 bucket name: 3-63 characters of a-z, 0-9, '-' and '.'"),
                    ));
                }
                if let Some(r) = &s.region
                    && (r.is_empty()
                        || !r
                            .bytes()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'))
                {
                    out.push((
                        "source.s3.region".to_owned(),
                        format!("{r:?} is not a region name such as us-east-1"),
                    ));
                }
                if let Some(e) = &s.endpoint
                    && let Some(m) = check_url(e)
                {
                    out.push(("source.s3.endpoint".to_owned(), m));
                }
                if s.anonymous && s.secret.is_some() {
                    out.push((
                        "source.s3.anonymous".to_owned(),
                        "an anonymous source takes no `secret`".to_owned(),
                    ));
                }
            }
            StageSource::Gcs(g) => {
                if g.bucket == self.bucket {
                    let target: String = self.prefix.split('{').next().unwrap_or("").to_owned();
                    let source = folder(&g.prefix);
                    if source.is_empty() || target.starts_with(&format!("{source}/")) {
                        out.push((
                            "source.gcs.prefix".to_owned(),
                            "the source folder contains the staged objects: each run would copy the previous run's copies".to_owned(),
                        ));
                    }
                }
            }
            StageSource::Https(h) => {
                match (&h.manifest, h.urls.is_empty()) {
                    (Some(_), false) => out.push((
                        "source.https".to_owned(),
                        "set `urls` or `manifest`, not both".to_owned(),
                    )),
                    (None, true) => out.push((
                        "source.https".to_owned(),
                        "set `urls` (a list) or `manifest` (the URL of a list)".to_owned(),
                    )),
                    _ => {}
                }
                if let Some(m) = &h.manifest
                    && let Some(msg) = check_url(m)
                {
                    out.push(("source.https.manifest".to_owned(), msg));
                }
                for (i, u) in h.urls.iter().enumerate() {
                    if let Some(msg) = check_url(u) {
                        out.push((format!("source.https.urls[{i}]"), msg));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_string_form_names_every_kind_of_source() {
        assert_eq!(
            StageSource::parse("./exports").unwrap(),
            StageSource::Path("./exports".to_owned())
        );
        assert_eq!(
            StageSource::parse("file:///data/x").unwrap(),
            StageSource::Path("/data/x".to_owned())
        );
        let StageSource::S3(s3) = StageSource::parse("s3://vendor-drop/rock/quality").unwrap()
        else {
            panic!("not s3");
        };
        assert_eq!(
            (s3.bucket.as_str(), s3.prefix.as_str()),
            ("vendor-drop", "rock/quality")
        );
        let StageSource::Gcs(g) = StageSource::parse("gs://exports").unwrap() else {
            panic!("not gcs");
        };
        assert_eq!((g.bucket.as_str(), g.prefix.as_str()), ("exports", ""));
        assert!(matches!(
            StageSource::parse("https://example.com/a.csv").unwrap(),
            StageSource::Https(_)
        ));
        assert!(StageSource::parse("ftp://x/y").is_err());
        assert!(StageSource::parse("").is_err());
        let e = StageSource::parse("s3://AKIAXX:secretvalue@bucket/p").unwrap_err();
        assert!(!e.contains("secretvalue"), "{e}");
    }

    #[test]
    fn secret_references_parse_and_bad_ones_are_not_echoed() {
        let r = SecretRef::parse("projects/p1/secrets/s3-creds").unwrap();
        assert_eq!(
            r.version_name(),
            "projects/p1/secrets/s3-creds/versions/latest"
        );
        let r = SecretRef::parse("projects/p1/secrets/s3-creds/versions/3").unwrap();
        assert_eq!(r.to_string(), "projects/p1/secrets/s3-creds/versions/3");
        let e = SecretRef::parse("wJalrXUtnFEMI/K7MDENG").unwrap_err();
        assert!(!e.contains("wJalr"), "{e}");
    }

    use crate::config::{ConfigError, ConfigIssue, parse_str};

    fn pipeline_with(stage: &str) -> String {
        format!(
            "pipelines:\n  - name: vendor\n    trigger: {{ manual: true }}\n    stage:\n{stage}"
        )
    }

    fn issues(text: &str) -> Vec<ConfigIssue> {
        match parse_str(text, "t.yaml") {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid { issues, .. }) => issues,
            Err(e) => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn every_source_shape_parses() {
        let text = pipeline_with(
            r#"      source:
        s3:
          bucket: vendor-drop
          prefix: rock_quality/
          region: us-east-1
          endpoint: http://127.0.0.1:9000
          secret: projects/mine/secrets/vendor-s3
          verify: size
      bucket: landing
      prefix: "rock_quality/{date}/"
      name: "{stem}.{ext}"
      include: "**.avro"
      concurrency: 8
"#,
        );
        let c = parse_str(&text, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        let stage = c.pipelines[0].stage.clone().unwrap();
        let StageSource::S3(s3) = &stage.source else {
            panic!("not s3");
        };
        assert_eq!(s3.verify, S3Verify::Size);
        assert_eq!(
            s3.secret.as_ref().map(SecretRef::version_name).as_deref(),
            Some("projects/mine/secrets/vendor-s3/versions/latest")
        );
        assert_eq!(stage.concurrency, 8);
        for source in [
            "./exports",
            "{ path: ./exports }",
            "gs://partner/daily",
            "{ gcs: { bucket: partner, prefix: daily } }",
            "{ https: { urls: [https://example.com/a.csv, https://example.com/b.csv] } }",
            "{ https: { manifest: https://example.com/list.txt } }",
            "s3://vendor-drop/rock_quality",
        ] {
            let text = pipeline_with(&format!("      source: {source}\n      bucket: landing\n"));
            assert!(issues(&text).is_empty(), "{source}: {:?}", issues(&text));
        }
        let defaults = parse_str(
            &pipeline_with("      source: ./x\n      bucket: landing\n"),
            "t.yaml",
        )
        .unwrap();
        let stage = defaults.pipelines[0].stage.clone().unwrap();
        assert_eq!((stage.name.as_str(), stage.concurrency), ("{relative}", 4));
    }

    #[test]
    fn inline_credentials_are_rejected_with_their_path_and_line_and_never_echoed() {
        let text = pipeline_with(
            r#"      source:
        s3:
          bucket: vendor-drop
          aws_access_key_id: AKIAIOSFODNN7EXAMPLE
          secret_access_key: wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY
      bucket: landing
"#,
        );
        let found = issues(&text);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(
            found[0].path,
            "pipelines[0].stage.source.s3.aws_access_key_id"
        );
        assert_eq!(found[0].line, Some(8));
        assert_eq!(
            found[1].path,
            "pipelines[0].stage.source.s3.secret_access_key"
        );
        assert_eq!(found[1].line, Some(9));
        for i in &found {
            assert!(i.message.contains("AWS_ACCESS_KEY_ID"), "{}", i.message);
            assert!(!i.message.contains("wJalr") && !i.message.contains("AKIAIOS"));
        }
        let text = pipeline_with(
            "      source: https://user:hunter2@example.com/a.csv\n      bucket: landing\n",
        );
        let found = issues(&text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].path, "pipelines[0].stage.source");
        assert!(!found[0].message.contains("hunter2"));
        let text = pipeline_with(
            "      source: { s3: { bucket: b-1, secret: AKIAIOSFODNN7EXAMPLE } }\n      bucket: landing\n",
        );
        let found = issues(&text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].message.contains("projects/PROJECT/secrets/NAME"));
        assert!(!found[0].message.contains("AKIAIOS"));
    }

    #[test]
    fn stage_mistakes_are_reported_with_their_paths() {
        let text = pipeline_with(
            r#"      source:
        https:
          urls: [https://example.com/a.csv]
          manifest: https://example.com/list.txt
      bucket: landing
      prefix: "x/{region}/"
      name: "fixed.csv"
      concurrency: 0
"#,
        );
        let found = issues(&text);
        let has = |path: &str, word: &str, line: usize| {
            found
                .iter()
                .any(|i| i.path == path && i.message.contains(word) && i.line == Some(line))
        };
        assert!(
            has("pipelines[0].stage.source.https", "not both", 7),
            "{found:#?}"
        );
        assert!(
            has("pipelines[0].stage.prefix", "{region}", 10),
            "{found:#?}"
        );
        assert!(
            has("pipelines[0].stage.name", "same name", 11),
            "{found:#?}"
        );
        assert!(
            has("pipelines[0].stage.concurrency", "between 1 and 32", 12),
            "{found:#?}"
        );
        let text = pipeline_with(
            "      source: { gcs: { bucket: landing, prefix: in } }\n      bucket: landing\n      prefix: in/copies/\n",
        );
        assert!(
            issues(&text)
                .iter()
                .any(|i| i.message.contains("previous run"))
        );
        let text =
            pipeline_with("      source: { s3: { bucket: Bad_Bucket } }\n      bucket: landing\n");
        assert!(
            issues(&text)
                .iter()
                .any(|i| i.path == "pipelines[0].stage.source.s3.bucket")
        );
        let text = pipeline_with("      source: { ftp: x }\n      bucket: landing\n");
        assert_eq!(issues(&text).len(), 1);
    }

    #[test]
    fn urls_are_redacted_for_messages() {
        assert_eq!(
            redact_url("https://u:p@example.com/a/b.csv?X-Amz-Signature=abc"),
            "https://example.com/a/b.csv?…"
        );
        assert_eq!(redact_url("http://h:8080/x"), "http://h:8080/x");
        assert!(url_has_password("https://u:p@h/x"));
        assert!(!url_has_password("https://h/x@y"));
        assert!(!url_has_password("./a@b"));
    }
}
