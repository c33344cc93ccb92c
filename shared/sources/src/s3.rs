//! A folder of an S3 bucket (or of an S3-compatible service) as a stage source, through the
//! `object_store` crate: paged listing (`ListObjectsV2`), streamed reads pinned to the
//! listed ETag (`If-Match`), SigV4 signing.

use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as StorePath;
use object_store::{ClientOptions, GetOptions, ObjectStore as _};
use serde::Deserialize;

use super::below;
use conveyor_core::config::{S3Source as S3Spec, S3Verify, SecretRef, folder};
use conveyor_core::ports::{Digests, Opened, PortError, SecretValue, Source, SourceObject};

/// S3 credentials read from a secret. Deliberately not `Debug`.
pub(super) struct AwsKeys {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

#[derive(Deserialize)]
struct KeysJson {
    #[serde(alias = "aws_access_key_id", alias = "AccessKeyId")]
    access_key_id: String,
    #[serde(alias = "aws_secret_access_key", alias = "SecretAccessKey")]
    secret_access_key: String,
    #[serde(default, alias = "aws_session_token", alias = "SessionToken")]
    session_token: Option<String>,
}

impl AwsKeys {
    /// Reads a secret's JSON value. The error names the secret, never its content.
    pub(super) fn parse(secret: &SecretRef, value: &SecretValue) -> Result<Self, PortError> {
        let k: KeysJson = serde_json::from_slice(value.expose()).map_err(|_| {
            PortError::permanent(format!(
                "secret {secret} is not a JSON object with `access_key_id` and `secret_access_key`"
            ))
        })?;
        Ok(Self {
            access_key_id: k.access_key_id,
            secret_access_key: k.secret_access_key,
            session_token: k.session_token.filter(|t| !t.is_empty()),
        })
    }
}

/// Variables through which the AWS environment can supply credentials.
const AWS_CREDENTIAL_VARIABLES: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
];

pub(super) struct S3Source {
    store: AmazonS3,
    bucket: String,
    folder: String,
    verify: S3Verify,
}

fn port_error(e: object_store::Error) -> PortError {
    use object_store::Error as E;
    match e {
        E::NotFound { path, .. } => PortError::not_found(format!("s3 object {path}")),
        E::Precondition { path, .. } | E::NotModified { path, .. } => PortError::transient(
            format!("s3 object {path} changed since it was listed; the next run copies it"),
        ),
        e @ (E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::UnknownConfigurationKey { .. }) => PortError::permanent(format!("s3: {e}")),
        e => PortError::transient(format!("s3: {e}")),
    }
}

impl S3Source {
    /// A client for `spec`: the environment's `AWS_*` settings, overridden by the file's
    /// region and endpoint, with `keys` (from a secret) when given.
    pub(super) fn connect(spec: &S3Spec, keys: Option<AwsKeys>) -> Result<Self, PortError> {
        // The AWS convention: region, endpoint and credentials from `AWS_*` variables.
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&spec.bucket);
        if let Some(r) = &spec.region {
            b = b.with_region(r);
        }
        if let Some(e) = &spec.endpoint {
            b = b.with_endpoint(e);
        }
        let plain_http = spec
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .is_some_and(|e| e.starts_with("http://"));
        // One read may stream gigabytes: no overall request timeout, but a stalled read fails.
        let mut options = ClientOptions::new()
            .with_timeout_disabled()
            .with_read_timeout(Duration::from_secs(60))
            .with_connect_timeout(Duration::from_secs(10));
        if plain_http {
            options = options.with_allow_http(true);
        }
        b = b.with_client_options(options);
        if spec.anonymous {
            b = b.with_skip_signature(true);
        } else if let Some(k) = keys {
            b = b
                .with_access_key_id(k.access_key_id)
                .with_secret_access_key(k.secret_access_key);
            if let Some(t) = k.session_token {
                b = b.with_token(t);
            }
        } else if !AWS_CREDENTIAL_VARIABLES
            .iter()
            .any(|v| std::env::var_os(v).is_some())
        {
            return Err(PortError::permanent(format!(
                "no credentials for s3://{}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment, name a Secret Manager secret with `secret:`, or set `anonymous: true` for a public bucket",
                spec.bucket
            )));
        }
        let store = b
            .build()
            .map_err(|e| PortError::permanent(format!("s3://{}: {e}", spec.bucket)))?;
        Ok(Self {
            store,
            bucket: spec.bucket.clone(),
            folder: folder(&spec.prefix).to_owned(),
            verify: spec.verify,
        })
    }
}

/// The MD5 a single-part upload's ETag is; `None` for multipart (`"…-3"`) and other ETags.
fn etag_md5(etag: &str) -> Option<String> {
    let e = etag.trim_start_matches("W/").trim_matches('"');
    (e.len() == 32 && e.bytes().all(|c| c.is_ascii_hexdigit())).then(|| e.to_ascii_lowercase())
}

#[async_trait]
impl Source for S3Source {
    fn uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.folder)
    }

    async fn list(&self) -> Result<Vec<SourceObject>, PortError> {
        let prefix = (!self.folder.is_empty()).then(|| StorePath::from(self.folder.as_str()));
        // ListObjectsV2 pages of 1000, followed by the stream.
        let listed: Vec<object_store::ObjectMeta> = self
            .store
            .list(prefix.as_ref())
            .try_collect()
            .await
            .map_err(port_error)?;
        let mut out = Vec::with_capacity(listed.len());
        for meta in listed {
            let key: &str = meta.location.as_ref();
            let Some(relative) = below(&self.folder, key) else {
                continue;
            };
            if relative.is_empty() || key.ends_with('/') {
                continue; // a "folder" marker
            }
            let md5 = match self.verify {
                S3Verify::Etag => meta.e_tag.as_deref().and_then(etag_md5),
                S3Verify::Size => None,
            };
            out.push(SourceObject {
                key: key.to_owned(),
                relative: relative.to_owned(),
                path: key.to_owned(),
                size: Some(meta.size),
                etag: meta.e_tag.clone(),
                version: meta.version.clone(),
                modified: Some(meta.last_modified),
                digests: Digests {
                    md5,
                    ..Digests::default()
                },
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn open(&self, object: &SourceObject) -> Result<Opened, PortError> {
        // The key is the listed path's own text, so it parses back to the same path.
        let location = StorePath::parse(&object.key)
            .map_err(|e| PortError::permanent(format!("s3 key {}: {e}", object.key)))?;
        let options = GetOptions {
            if_match: object.etag.clone(),
            ..GetOptions::default()
        };
        let result = self
            .store
            .get_opts(&location, options)
            .await
            .map_err(port_error)?;
        let size = Some(result.meta.size);
        let stream = result.into_stream().map_err(std::io::Error::other);
        Ok(Opened {
            body: Box::pin(tokio_util::io::StreamReader::new(stream)),
            size,
            digests: Digests::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_single_part_etag_is_an_md5() {
        assert_eq!(
            etag_md5("\"5EB63BBBE01EEED093CB22BB8F5ACDC3\"").as_deref(),
            Some("5eb63bbbe01eeed093cb22bb8f5acdc3")
        );
        assert_eq!(etag_md5("\"5eb63bbbe01eeed093cb22bb8f5acdc3-2\""), None);
        assert_eq!(etag_md5("abc"), None);
    }

    #[test]
    fn a_secret_that_is_not_json_is_reported_without_its_content() {
        let r = SecretRef::parse("projects/p/secrets/s").unwrap();
        let Err(e) = AwsKeys::parse(&r, &SecretValue::new(b"AKIA wJalrXUtnFEMI".to_vec())) else {
            panic!("parsed");
        };
        assert!(!e.to_string().contains("wJalr"), "{e}");
        let k = AwsKeys::parse(
            &r,
            &SecretValue::new(br#"{"AccessKeyId":"a","SecretAccessKey":"b"}"#.to_vec()),
        )
        .unwrap();
        assert_eq!((k.access_key_id.as_str(), k.session_token), ("a", None));
    }
}
