//! The object-storage sink (`--out s3://BUCKET/PREFIX`), through the `object_store` crate.
//!
//! An object in S3 appears whole or not at all, so a put is already the atomic second
//! phase; staging keeps the bytes in memory (the checkpoint that committed them is the
//! durable copy: after a crash they are rendered again). Committing creates each object
//! with a conditional put (`If-None-Match: *`, [`PutMode::Create`]): an object that is
//! there already is read back, and counts as written if it holds the same bytes, or is
//! the exit-4 conflict if not. That makes every put idempotent, so a put whose answer was
//! lost (a restart of the server, a kill of the job) is simply made again. Nothing is
//! ever written under a temporary name, so no reader can see a partial object.
//!
//! A store without conditional puts (`aws_conditional_put = "disabled"` in
//! `[object_store]`) gets a read before each put instead: the same outcome for one
//! writer per prefix, which is the job's rule anyway, but no guard against a second one.

use super::{Committer, SinkError, Written};
use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the object store sink is set up.
#[derive(Clone)]
pub struct ObjectConfig {
    pub bucket: String,
    /// Below the bucket, without a leading or trailing `/`; may be empty.
    pub prefix: String,
    /// `object_store`'s S3 options (`aws_endpoint`, `aws_region`, `aws_access_key_id`,
    /// ...): the settings file's `[object_store]` table with the `AWS_*` variables over it.
    pub options: BTreeMap<String, String>,
    /// How long one object is retried through transport errors before the job stops
    /// with the output exit code (its checkpoint intact).
    pub retry_timeout: Duration,
    /// Objects uploaded at once.
    pub concurrency: usize,
}

impl std::fmt::Debug for ObjectConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let options: BTreeMap<&str, &str> = self
            .options
            .iter()
            .map(|(k, v)| (k.as_str(), crate::ops::settings::shown(k, v)))
            .collect();
        f.debug_struct("ObjectConfig")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("options", &options)
            .field("retry_timeout", &self.retry_timeout)
            .finish()
    }
}

impl ObjectConfig {
    pub fn new(bucket: &str, prefix: &str) -> ObjectConfig {
        ObjectConfig {
            bucket: bucket.into(),
            prefix: prefix.into(),
            options: BTreeMap::new(),
            retry_timeout: Duration::from_secs(60),
            concurrency: 16,
        }
    }

    /// The `AWS_*` variables of this process that name an S3 option, as options
    /// (`AWS_ENDPOINT_URL` is `aws_endpoint_url`).
    pub fn options_from_env() -> BTreeMap<String, String> {
        std::env::vars()
            .filter(|(k, _)| k.starts_with("AWS_"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .filter(|(k, _)| k.parse::<AmazonS3ConfigKey>().is_ok())
            .collect()
    }
}

/// What went wrong with the object store, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "object store option `{key}`: {message}; see README \"Object storage\" for the options"
    )]
    Option { key: String, message: String },
    #[error("s3://{bucket}: the bucket does not exist (or the endpoint is not an S3 store): create it, or fix --out and aws_endpoint / AWS_ENDPOINT_URL ({detail})")]
    NoBucket { bucket: String, detail: String },
    #[error("s3://{bucket}: the store refused the credentials: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or `[object_store]` in the settings file) and the bucket's permissions ({detail})")]
    Refused { bucket: String, detail: String },
    #[error("cannot write {object}: {detail}; is the endpoint reachable (aws_endpoint / AWS_ENDPOINT_URL)? The checkpoint is intact: restart when the store answers, and the object is written again")]
    Unreachable { object: String, detail: String },
    #[error("the store refused the request for {object} with {code}: check the object store options (region, endpoint, permissions) ({detail})")]
    Rejected {
        object: String,
        code: String,
        detail: String,
    },
    #[error("s3://{bucket}: the store accepted a second conditional put of one name (If-None-Match is ignored), so it cannot refuse another run's bytes; set aws_conditional_put = \"disabled\" in [object_store] for a store without conditional puts")]
    NoConditionalPut { bucket: String },
}

/// Writes objects below `s3://bucket/prefix/`.
pub struct ObjectSink {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
    conditional: bool,
    retry_timeout: Duration,
    concurrency: usize,
    runtime: tokio::runtime::Runtime,
    staged: Vec<(String, Vec<u8>)>,
}

impl ObjectSink {
    /// Builds the client and checks at once that the bucket exists and the credentials
    /// are taken, so that a wrong setting fails the start, not the first file.
    pub fn open(cfg: &ObjectConfig) -> Result<ObjectSink, SinkError> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&cfg.bucket)
            // object_store retries inside each attempt, and the commit loop retries
            // attempts: half the budget each keeps one object's whole wait near
            // `retry_timeout`.
            .with_retry(RetryConfig {
                max_retries: 10,
                retry_timeout: cfg.retry_timeout / 2,
                ..RetryConfig::default()
            });
        // Conditional puts unless the operator turned them off for a store without them.
        let mut conditional = true;
        for (key, value) in &cfg.options {
            let parsed: AmazonS3ConfigKey = key.parse().map_err(|_| StoreError::Option {
                key: key.clone(),
                message: "not an S3 option of the object_store crate".into(),
            })?;
            if parsed == AmazonS3ConfigKey::Bucket {
                return Err(StoreError::Option {
                    key: key.clone(),
                    message: "the bucket is named by --out s3://BUCKET/PREFIX".into(),
                }
                .into());
            }
            if parsed == AmazonS3ConfigKey::ConditionalPut {
                conditional = value.trim() != "disabled";
            }
            builder = builder.with_config(parsed, value);
        }
        let store = builder.build().map_err(|e| StoreError::Option {
            key: "(all)".into(),
            message: e.to_string(),
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("object-store")
            .enable_all()
            .build()
            .map_err(|source| SinkError::Io {
                path: "(object store runtime)".into(),
                source,
            })?;
        let sink = ObjectSink {
            store: Arc::new(store),
            bucket: cfg.bucket.clone(),
            prefix: cfg.prefix.clone(),
            conditional,
            retry_timeout: cfg.retry_timeout,
            concurrency: cfg.concurrency.max(1),
            runtime,
            staged: Vec::new(),
        };
        sink.check_bucket()?;
        if sink.conditional {
            sink.check_conditional_put()?;
        }
        Ok(sink)
    }

    /// A listing of the prefix: the cheapest request that tells a missing bucket (404)
    /// and refused credentials (403) apart from a missing object.
    fn check_bucket(&self) -> Result<(), SinkError> {
        let prefix = self.path("");
        let listed = self
            .runtime
            .block_on(self.store.list_with_delimiter(Some(&prefix)));
        match listed {
            Ok(_) => Ok(()),
            Err(e) => Err(self.classify(&self.url(""), e).into()),
        }
    }

    fn path(&self, name: &str) -> ObjectPath {
        match (self.prefix.is_empty(), name.is_empty()) {
            (true, _) => ObjectPath::from(name),
            (false, true) => ObjectPath::from(self.prefix.as_str()),
            (false, false) => ObjectPath::from(format!("{}/{name}", self.prefix)),
        }
    }

    fn url(&self, name: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.path(name))
    }

    fn classify(&self, object: &str, e: object_store::Error) -> StoreError {
        let detail = summary(&e);
        let code = s3_code(&detail);
        match (&e, code.as_deref()) {
            (_, Some("NoSuchBucket")) | (object_store::Error::NotFound { .. }, None) => {
                StoreError::NoBucket {
                    bucket: self.bucket.clone(),
                    detail,
                }
            }
            (_, Some(c)) if CREDENTIAL_CODES.contains(&c) => StoreError::Refused {
                bucket: self.bucket.clone(),
                detail,
            },
            (
                object_store::Error::Unauthenticated { .. }
                | object_store::Error::PermissionDenied { .. },
                None,
            ) => StoreError::Refused {
                bucket: self.bucket.clone(),
                detail,
            },
            (_, Some(c)) if !TRANSIENT_CODES.contains(&c) => StoreError::Rejected {
                object: object.to_owned(),
                code: c.to_owned(),
                detail,
            },
            _ => StoreError::Unreachable {
                object: object.to_owned(),
                detail,
            },
        }
    }

    /// A store that takes `If-None-Match: *` without honouring it would let the job
    /// overwrite another run's objects and never see the conflict: two conditional puts
    /// of one probe name must give one refusal. The probe is deleted after.
    fn check_conditional_put(&self) -> Result<(), SinkError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let probe = self.path(&format!("_retail-kpi/probe-{}-{nanos}", std::process::id()));
        let create = || PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let url = format!("s3://{}/{probe}", self.bucket);
        let outcome = self.runtime.block_on(async {
            self.store
                .put_opts(&probe, PutPayload::from_static(b"probe"), create())
                .await?;
            let second = self
                .store
                .put_opts(&probe, PutPayload::from_static(b"probe"), create())
                .await;
            let _ = self.store.delete(&probe).await;
            Ok::<_, object_store::Error>(second)
        });
        match outcome {
            Ok(Err(object_store::Error::AlreadyExists { .. })) => Ok(()),
            Ok(Ok(_)) => Err(StoreError::NoConditionalPut {
                bucket: self.bucket.clone(),
            }
            .into()),
            Ok(Err(e)) | Err(e) => Err(self.classify(&url, e).into()),
        }
    }
}

/// Codes that say the credentials are wrong or not allowed.
const CREDENTIAL_CODES: [&str; 5] = [
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "AccessDenied",
    "ExpiredToken",
    "InvalidToken",
];

/// Codes after which the same request may succeed.
const TRANSIENT_CODES: [&str; 7] = [
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "ConditionalRequestConflict",
    "OperationAborted",
];

/// An error as it may be shown: object_store's words, and of the store's XML answer only
/// its code and message. The rest of that answer is left out because AWS echoes the
/// signed request in it (`StringToSign`, `CanonicalRequest`, hex bytes included), which
/// holds the session token in forms the log's masking cannot know.
fn summary(e: &object_store::Error) -> String {
    let text = e.to_string().replace(['\r', '\n'], " ");
    let Some(start) = text.find("<?xml").or_else(|| text.find("<Error>")) else {
        return text;
    };
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let from = text.find(&open)? + open.len();
        let to = text[from..].find(&format!("</{name}>"))? + from;
        Some(text[from..to].to_owned())
    };
    let mut out = text[..start].trim_end().to_owned();
    if let Some(code) = tag("Code") {
        out.push_str(&format!(" <Code>{code}</Code>"));
    }
    if let Some(message) = tag("Message") {
        out.push_str(&format!(" {message}"));
    }
    out
}

/// The S3 error code of the store's answer (`<Code>NoSuchBucket</Code>`), if it gave one:
/// object_store passes many answers on as a generic error with the XML text.
fn s3_code(detail: &str) -> Option<String> {
    let from = detail.find("<Code>")? + "<Code>".len();
    let to = detail[from..].find("</Code>")? + from;
    Some(detail[from..to].to_owned())
}

/// One object's put, made idempotent: see the module's comment.
async fn put_one(
    store: &dyn ObjectStore,
    path: &ObjectPath,
    bytes: Vec<u8>,
    conditional: bool,
) -> Result<Outcome, object_store::Error> {
    let same = |there: &[u8]| {
        if there == bytes.as_slice() {
            Outcome::Written(Written::AlreadyThere)
        } else {
            Outcome::Conflict
        }
    };
    if !conditional {
        match store.get(path).await {
            Ok(r) => return Ok(same(&r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let opts = PutOptions {
        mode: if conditional {
            PutMode::Create
        } else {
            PutMode::Overwrite
        },
        ..PutOptions::default()
    };
    match store
        .put_opts(path, PutPayload::from(bytes.clone()), opts)
        .await
    {
        Ok(_) => Ok(Outcome::Written(Written::New)),
        Err(object_store::Error::AlreadyExists { .. }) => match store.get(path).await {
            Ok(r) => Ok(same(&r.bytes().await?)),
            // Refused, yet not there: AWS's 409 ConditionalRequestConflict (an earlier try
            // of this put still in flight), which object_store reports as AlreadyExists.
            // Another try settles it.
            Err(object_store::Error::NotFound { .. }) => Err(object_store::Error::Generic {
                store: "S3",
                source: "a conditional put was refused but the object is not there yet (a concurrent try in flight)".into(),
            }),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

enum Outcome {
    Written(Written),
    Conflict,
}

/// Whether another try may succeed: not for a missing bucket, refused credentials, or a
/// request the store refuses for what it is (a wrong region, a bad option).
fn transient(e: &object_store::Error) -> bool {
    if let Some(code) = s3_code(&e.to_string()) {
        return TRANSIENT_CODES.contains(&code.as_str());
    }
    !matches!(
        e,
        object_store::Error::NotFound { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::NotImplemented { .. }
            | object_store::Error::NotSupported { .. }
    )
}

impl Committer for ObjectSink {
    fn stage(&mut self, name: &str, bytes: &[u8]) -> Result<(), SinkError> {
        self.staged.push((name.to_owned(), bytes.to_vec()));
        Ok(())
    }

    fn commit(&mut self) -> Result<Vec<Written>, SinkError> {
        let staged = std::mem::take(&mut self.staged);
        crate::failpoint!("sink.after_tmp_before_rename");
        let store = Arc::clone(&self.store);
        let (conditional, retry_timeout) = (self.conditional, self.retry_timeout);
        let puts = staged.into_iter().map(|(name, bytes)| {
            let path = self.path(&name);
            let store = Arc::clone(&store);
            async move {
                // object_store retries what it knows to be safe; a conditional put whose
                // answer was lost is retried here, which its idempotence allows.
                let started = Instant::now();
                let mut wait = Duration::from_millis(200);
                loop {
                    match put_one(store.as_ref(), &path, bytes.clone(), conditional).await {
                        Ok(o) => return Ok((path, o)),
                        Err(e) if transient(&e) && started.elapsed() + wait < retry_timeout => {
                            tracing::warn!(object = %path, error = %summary(&e), "object store write failed; retrying");
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(Duration::from_secs(5));
                        }
                        Err(e) => return Err((path, e)),
                    }
                }
            }
        });
        let results: Result<Vec<(ObjectPath, Outcome)>, (ObjectPath, object_store::Error)> = self
            .runtime
            .block_on(stream::iter(puts).buffered(self.concurrency).try_collect());
        let results = results.map_err(|(path, e)| {
            let url = format!("s3://{}/{path}", self.bucket);
            SinkError::Store(self.classify(&url, e))
        })?;
        let mut written = Vec::with_capacity(results.len());
        for (path, outcome) in results {
            match outcome {
                Outcome::Written(w) => written.push(w),
                Outcome::Conflict => {
                    return Err(SinkError::ObjectConflict {
                        object: format!("s3://{}/{path}", self.bucket),
                    })
                }
            }
        }
        Ok(written)
    }

    fn exists(&self, name: &str) -> Result<bool, SinkError> {
        match self.runtime.block_on(self.store.head(&self.path(name))) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.classify(&self.url(name), e).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_option_is_named() {
        let mut cfg = ObjectConfig::new("b", "p");
        cfg.options.insert("aws_endpoit".into(), "http://x".into());
        let e = ObjectSink::open(&cfg).err().expect("refused");
        assert!(e.to_string().contains("`aws_endpoit`"), "{e}");
    }

    #[test]
    fn the_echoed_request_never_shows() {
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message><StringToSign>AWS4-HMAC-SHA256 x-amz-security-token:SESSIONTOKEN</StringToSign><CanonicalRequestBytes>53 45 53 53</CanonicalRequestBytes></Error>";
        let e = object_store::Error::Generic {
            store: "S3",
            source: format!("Error performing list request: 403 Forbidden: {body}").into(),
        };
        let shown = summary(&e);
        assert!(
            !shown.contains("SESSIONTOKEN") && !shown.contains("53 45"),
            "{shown}"
        );
        assert!(
            shown.ends_with("<Code>SignatureDoesNotMatch</Code> The request signature we calculated does not match"),
            "{shown}"
        );
        assert_eq!(s3_code(&shown).as_deref(), Some("SignatureDoesNotMatch"));
        assert!(!transient(&e));
    }

    #[test]
    fn only_answers_that_may_change_are_retried() {
        let generic = |text: &str| object_store::Error::Generic {
            store: "S3",
            source: text.to_owned().into(),
        };
        assert!(transient(&generic("error sending request")));
        assert!(transient(&generic(
            "503: <Error><Code>SlowDown</Code></Error>"
        )));
        assert!(!transient(&generic(
            "400: <Error><Code>AuthorizationHeaderMalformed</Code></Error>"
        )));
        assert!(!transient(&object_store::Error::NotFound {
            path: "p".into(),
            source: "404".into(),
        }));
    }

    #[test]
    fn secrets_are_masked_in_debug() {
        let mut cfg = ObjectConfig::new("b", "p");
        cfg.options
            .insert("aws_secret_access_key".into(), "hunter2-secret".into());
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
