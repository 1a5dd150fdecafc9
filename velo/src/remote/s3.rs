//! The `s3://BUCKET/PREFIX` remote: any S3-compatible store (AWS S3, R2, MinIO, Garage, Ceph)
//! through Apache OpenDAL's S3 service, driven by one current-thread tokio runtime behind the
//! blocking [`Backend`] facade.
//!
//! Configuration is the standard AWS one: `AWS_ENDPOINT_URL` (for anything but AWS itself),
//! `AWS_REGION` (default `us-east-1`), `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`; OpenDAL also reads `~/.aws/config` and `AWS_PROFILE`. A create-if-absent
//! write is a conditional PUT (`If-None-Match: *`): a 412 answer means the object exists.
//!
//! What the network does to a transfer is handled here, once, by OpenDAL's layers: an answer the
//! server calls temporary (429, 500, 502, 503, 504, a dropped connection) is retried up to
//! [`RETRIES`] times with jittered exponential backoff; a transfer whose bytes stop flowing for
//! `VELO_REMOTE_TIMEOUT` seconds (default 30) fails, however long it has run while they flowed.
//! Objects of 64 MiB or more go up in parts. Several objects travel at once
//! (`VELO_REMOTE_JOBS`, default 8), on the one runtime.

use std::io;
use std::time::Duration;

use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{ErrorKind, Operator, services};

use super::{Backend, Listed};

/// Tries after the first, for an answer the server calls temporary.
const RETRIES: usize = 4;
/// An object this large is uploaded in parts of [`PART`] bytes.
const MULTIPART: usize = 64 << 20;
const PART: usize = 16 << 20;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

pub struct S3Backend {
    url: String,
    op: Operator,
    rt: tokio::runtime::Runtime,
    jobs: usize,
}

fn to_io(e: opendal::Error) -> io::Error {
    let kind = match e.kind() {
        ErrorKind::NotFound => io::ErrorKind::NotFound,
        ErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::Other,
    };
    let text = e.to_string();
    if text.contains("LoadCredential") || text.contains("no valid credential") {
        return io::Error::new(
            io::ErrorKind::PermissionDenied,
            "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and \
             AWS_ENDPOINT_URL for a store other than AWS), or AWS_PROFILE",
        );
    }
    io::Error::new(kind, text)
}

impl S3Backend {
    /// The remote `url` = `s3://BUCKET[/PREFIX]`.
    pub fn new(url: &str, rest: &str) -> io::Result<S3Backend> {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no bucket in the URL (s3://BUCKET/PREFIX)",
            ));
        }
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut builder = services::S3::default()
            .bucket(bucket)
            .root(&format!("/{}", prefix.trim_matches('/')))
            .region(
                &var("AWS_REGION")
                    .or_else(|| var("AWS_DEFAULT_REGION"))
                    .unwrap_or_else(|| "us-east-1".into()),
            );
        if let Some(endpoint) = var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL")) {
            builder = builder.endpoint(&endpoint);
        }
        if let (Some(id), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            builder = builder.access_key_id(&id).secret_access_key(&secret);
        }
        if let Some(token) = var("AWS_SESSION_TOKEN") {
            builder = builder.session_token(&token);
        }
        let stalled = Duration::from_secs(env_number("VELO_REMOTE_TIMEOUT", 30));
        let op = Operator::new(builder)
            .map_err(to_io)?
            .layer(
                TimeoutLayer::new()
                    .with_io_timeout(stalled)
                    .with_timeout(stalled * 2),
            )
            .layer(
                RetryLayer::new()
                    .with_jitter()
                    .with_max_times(RETRIES)
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(5)),
            )
            .finish();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(S3Backend {
            url: url.to_owned(),
            op,
            rt,
            jobs: env_number("VELO_REMOTE_JOBS", 8) as usize,
        })
    }
}

impl Backend for S3Backend {
    fn url(&self) -> &str {
        &self.url
    }

    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        match self.rt.block_on(self.op.read(key)) {
            Ok(buffer) => Ok(Some(buffer.to_vec())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(to_io(e)),
        }
    }

    fn exists(&self, key: &str) -> io::Result<bool> {
        self.rt.block_on(self.op.exists(key)).map_err(to_io)
    }

    fn put(&self, key: &str, bytes: Vec<u8>) -> io::Result<()> {
        self.rt.block_on(put(&self.op, key.to_owned(), bytes))
    }

    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> io::Result<bool> {
        let write = self.op.write_with(key, bytes.to_vec()).if_not_exists(true);
        match self.rt.block_on(async { write.await }) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => Ok(false),
            Err(e) => Err(to_io(e)),
        }
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        let entries = self.rt.block_on(self.op.list(prefix)).map_err(to_io)?;
        Ok(entries
            .iter()
            .filter(|e| e.metadata().is_file())
            .filter_map(|e| e.path().rsplit('/').next().map(str::to_owned))
            .filter(|n| !n.is_empty())
            .collect())
    }

    fn list_all(&self, prefix: &str) -> io::Result<Vec<Listed>> {
        let list = self.op.list_with(prefix).recursive(true);
        let entries = self.rt.block_on(async { list.await }).map_err(to_io)?;
        Ok(entries
            .into_iter()
            .filter(|e| e.metadata().is_file())
            .map(|e| Listed {
                key: e.path().to_owned(),
                modified: e
                    .metadata()
                    .last_modified()
                    .map_or(std::time::SystemTime::UNIX_EPOCH, Into::into),
                size: e.metadata().content_length(),
            })
            .collect())
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        self.rt.block_on(self.op.delete(key)).map_err(to_io)
    }

    fn get_many(&self, keys: &[String]) -> Vec<io::Result<Option<Vec<u8>>>> {
        let op = &self.op;
        self.rt
            .block_on(bounded(self.jobs, keys.iter().cloned(), |key| {
                let op = op.clone();
                async move {
                    match op.read(&key).await {
                        Ok(buffer) => Ok(Some(buffer.to_vec())),
                        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                        Err(e) => Err(to_io(e)),
                    }
                }
            }))
    }

    fn put_many(&self, objects: Vec<(String, Vec<u8>)>) -> Vec<io::Result<()>> {
        let op = &self.op;
        self.rt
            .block_on(bounded(self.jobs, objects.into_iter(), |(key, bytes)| {
                put(op, key, bytes)
            }))
    }
}

/// One upload: in parts when large.
async fn put(op: &Operator, key: String, bytes: Vec<u8>) -> io::Result<()> {
    let large = bytes.len() >= MULTIPART;
    let mut write = op.write_with(&key, bytes);
    if large {
        // Parts one after another: objects already travel several at once (`put_many`).
        write = write.chunk(PART);
    }
    write.await.map(drop).map_err(to_io)
}

/// `work` on each item, at most `jobs` at a time; the results in the items' order.
async fn bounded<I, T, F, Fut>(jobs: usize, items: I, work: F) -> Vec<T>
where
    I: Iterator,
    F: Fn(I::Item) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    use futures::stream::StreamExt;
    futures::stream::iter(items.map(work))
        .buffered(jobs.max(1))
        .collect()
        .await
}
