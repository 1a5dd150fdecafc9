//! The `s3://BUCKET/PREFIX` remote: any S3-compatible store (AWS S3, R2, MinIO, Garage, Ceph)
//! through Apache OpenDAL's S3 service, driven by one current-thread tokio runtime behind the
//! blocking [`Backend`] facade.
//!
//! Configuration is the standard AWS one: `AWS_ENDPOINT_URL` (for anything but AWS itself),
//! `AWS_REGION` (default `us-east-1`), `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`; OpenDAL also reads `~/.aws/config` and `AWS_PROFILE`. A create-if-absent
//! write is a conditional PUT (`If-None-Match: *`): a 412 answer means the object exists.

use std::io;

use opendal::{ErrorKind, Operator, services};

use super::Backend;

pub struct S3Backend {
    url: String,
    op: Operator,
    rt: tokio::runtime::Runtime,
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
        let op = Operator::new(builder).map_err(to_io)?.finish();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(S3Backend {
            url: url.to_owned(),
            op,
            rt,
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
}
