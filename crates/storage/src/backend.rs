//! Where the bytes live. Objects are immutable and keyed `<bucket>/<name>/<version>` (the
//! layout of Supabase Storage's file backend): a new upload is a new version, so a file is
//! written in full before any row names it, and replacing one never touches what readers see.
use std::io;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use tokio::io::AsyncWriteExt;

use crate::error::{Result, StorageError};

pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

/// An object written but not yet visible.
#[derive(Debug)]
pub struct Pending {
    pub key: String,
    pub size: u64,
    temp: Option<PathBuf>,
}

/// One storage backend; every method is cancel-safe in the sense that a dropped future
/// leaves at worst an unreferenced file (never a row without its file).
pub trait Backend: Send + Sync + 'static {
    /// Streams `body` to a place no reader sees yet; refuses (413) past `limit` bytes.
    fn write(&self, key: String, body: ByteStream, limit: u64) -> BoxFuture<'_, Result<Pending>>;
    /// Makes the written object readable under its key (before the row's commit).
    fn publish<'a>(&'a self, p: &'a mut Pending) -> BoxFuture<'a, io::Result<()>>;
    /// Removes what `write` and `publish` left behind (after a failure).
    fn discard(&self, p: Pending) -> BoxFuture<'_, ()>;
    /// The object's size and bytes, or `None` when there is no such key.
    fn read(&self, key: String) -> BoxFuture<'_, io::Result<Option<(u64, ByteStream)>>>;
    /// Bytes `start..end` (end exclusive, within the object's size) of the object.
    fn read_range(
        &self,
        key: String,
        start: u64,
        end: u64,
    ) -> BoxFuture<'_, io::Result<Option<ByteStream>>>;
    /// `to` with the content of `from` (objects are immutable: a hard link where possible).
    fn copy(&self, from: String, to: String) -> BoxFuture<'_, io::Result<()>>;
    /// Removes a key; a missing key is not an error.
    fn delete(&self, key: String) -> BoxFuture<'_, io::Result<()>>;
}

/// The file at `path`, or `None` when there is none.
async fn open_existing(path: &Path) -> io::Result<Option<tokio::fs::File>> {
    match tokio::fs::File::open(path).await {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Files under a directory: `<root>/<bucket>/<name>/<version>`, staged in `<root>/.tmp`.
pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    pub fn new(root: PathBuf) -> Self {
        LocalBackend { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of a key; keys are validated by the API, and checked again here.
    fn path(&self, key: &str) -> io::Result<PathBuf> {
        let rel = Path::new(key);
        if key.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid key {key:?}"),
            ));
        }
        Ok(self.root.join(rel))
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join(".tmp")
    }
}

async fn sync_dir(dir: &Path) {
    let dir = dir.to_path_buf();
    let _ =
        tokio::task::spawn_blocking(move || std::fs::File::open(&dir).and_then(|f| f.sync_all()))
            .await;
}

const WRITE_BUFFER: usize = 1 << 20;
const READ_CHUNK: usize = 256 * 1024;

impl Backend for LocalBackend {
    fn write(
        &self,
        key: String,
        mut body: ByteStream,
        limit: u64,
    ) -> BoxFuture<'_, Result<Pending>> {
        async move {
            self.path(&key)?;
            let dir = self.tmp_dir();
            tokio::fs::create_dir_all(&dir).await?;
            let temp = dir.join(uuid::Uuid::new_v4().simple().to_string());
            let file = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)
                .await?;
            let mut out = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file);
            let written: Result<u64> = async {
                let mut size = 0u64;
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(|e| {
                        StorageError::bad_request(format!("reading the upload: {e}"))
                    })?;
                    size += chunk.len() as u64;
                    if size > limit {
                        return Err(StorageError::too_large());
                    }
                    out.write_all(&chunk).await?;
                }
                out.flush().await?;
                out.get_mut().sync_all().await?;
                Ok(size)
            }
            .await;
            drop(out);
            match written {
                Ok(size) => Ok(Pending {
                    key,
                    size,
                    temp: Some(temp),
                }),
                Err(e) => {
                    let _ = tokio::fs::remove_file(&temp).await;
                    Err(e)
                }
            }
        }
        .boxed()
    }

    fn publish<'a>(&'a self, p: &'a mut Pending) -> BoxFuture<'a, io::Result<()>> {
        async move {
            let dest = self.path(&p.key)?;
            let parent = dest.parent().expect("keys have a parent").to_path_buf();
            tokio::fs::create_dir_all(&parent).await?;
            if let Some(temp) = p.temp.take() {
                if let Err(e) = tokio::fs::rename(&temp, &dest).await {
                    p.temp = Some(temp);
                    return Err(e);
                }
                sync_dir(&parent).await;
            }
            Ok(())
        }
        .boxed()
    }

    fn discard(&self, p: Pending) -> BoxFuture<'_, ()> {
        async move {
            match p.temp {
                Some(temp) => {
                    let _ = tokio::fs::remove_file(temp).await;
                }
                None => {
                    let _ = self.delete(p.key).await;
                }
            }
        }
        .boxed()
    }

    fn read(&self, key: String) -> BoxFuture<'_, io::Result<Option<(u64, ByteStream)>>> {
        async move {
            let Some(file) = open_existing(&self.path(&key)?).await? else {
                return Ok(None);
            };
            let size = file.metadata().await?.len();
            let stream = tokio_util::io::ReaderStream::with_capacity(file, READ_CHUNK).boxed();
            Ok(Some((size, stream)))
        }
        .boxed()
    }

    fn read_range(
        &self,
        key: String,
        start: u64,
        end: u64,
    ) -> BoxFuture<'_, io::Result<Option<ByteStream>>> {
        async move {
            use tokio::io::{AsyncReadExt, AsyncSeekExt};
            let Some(mut file) = open_existing(&self.path(&key)?).await? else {
                return Ok(None);
            };
            file.seek(io::SeekFrom::Start(start)).await?;
            let part = file.take(end.saturating_sub(start));
            Ok(Some(
                tokio_util::io::ReaderStream::with_capacity(part, READ_CHUNK).boxed(),
            ))
        }
        .boxed()
    }

    fn copy(&self, from: String, to: String) -> BoxFuture<'_, io::Result<()>> {
        async move {
            let src = self.path(&from)?;
            let dest = self.path(&to)?;
            let parent = dest.parent().expect("keys have a parent").to_path_buf();
            tokio::fs::create_dir_all(&parent).await?;
            if tokio::fs::hard_link(&src, &dest).await.is_err() {
                let dir = self.tmp_dir();
                tokio::fs::create_dir_all(&dir).await?;
                let temp = dir.join(uuid::Uuid::new_v4().simple().to_string());
                let copied = async {
                    tokio::fs::copy(&src, &temp).await?;
                    tokio::fs::File::open(&temp).await?.sync_all().await?;
                    tokio::fs::rename(&temp, &dest).await
                }
                .await;
                if copied.is_err() {
                    let _ = tokio::fs::remove_file(&temp).await;
                }
                copied?;
            }
            sync_dir(&parent).await;
            Ok(())
        }
        .boxed()
    }

    fn delete(&self, key: String) -> BoxFuture<'_, io::Result<()>> {
        async move {
            let path = self.path(&key)?;
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            // Tidy the now-empty folders of the name, never the bucket's own directory.
            let bucket_dir = key.split('/').next().map(|b| self.root.join(b));
            let mut dir = path.parent().map(Path::to_path_buf);
            while let Some(d) = dir {
                if Some(&d) == bucket_dir.as_ref() || !d.starts_with(&self.root) {
                    break;
                }
                if tokio::fs::remove_dir(&d).await.is_err() {
                    break;
                }
                dir = d.parent().map(Path::to_path_buf);
            }
            Ok(())
        }
        .boxed()
    }
}

/// An S3-compatible bucket (or any `object_store`): objects are written straight to their
/// versioned key, which no row names until the commit, so publishing is a no-op and a
/// failure deletes the key.
#[cfg(feature = "s3")]
pub struct ObjectStoreBackend {
    store: std::sync::Arc<dyn object_store::ObjectStore>,
}

#[cfg(feature = "s3")]
impl ObjectStoreBackend {
    pub fn new(store: std::sync::Arc<dyn object_store::ObjectStore>) -> Self {
        ObjectStoreBackend { store }
    }

    /// S3 from `STORAGE_S3_BUCKET`, `STORAGE_S3_ENDPOINT` and the usual `AWS_*` variables
    /// (credentials, region, session token).
    /// An S3 (or S3-compatible) bucket. Settings left out come from the AWS_* environment.
    pub fn s3(settings: &S3Settings) -> std::result::Result<Self, String> {
        let mut b =
            object_store::aws::AmazonS3Builder::from_env().with_bucket_name(&settings.bucket);
        let endpoint = settings.endpoint.as_deref().filter(|e| !e.is_empty());
        if let Some(ep) = endpoint {
            b = b
                .with_endpoint(ep)
                .with_allow_http(ep.starts_with("http://"));
        }
        let path_style = settings.force_path_style.unwrap_or(endpoint.is_some());
        b = b.with_virtual_hosted_style_request(!path_style);
        if let Some(r) = settings.region.as_deref().filter(|r| !r.is_empty()) {
            b = b.with_region(r);
        }
        if let Some(k) = settings.access_key_id.as_deref().filter(|k| !k.is_empty()) {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = settings
            .secret_access_key
            .as_deref()
            .filter(|k| !k.is_empty())
        {
            b = b.with_secret_access_key(k);
        }
        let store = b.build().map_err(|e| e.to_string())?;
        Ok(Self::new(std::sync::Arc::new(store)))
    }

    fn path(key: &str) -> io::Result<object_store::path::Path> {
        if key.is_empty()
            || key
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid key {key:?}"),
            ));
        }
        Ok(object_store::path::Path::from_iter(key.split('/')))
    }
}

#[cfg(feature = "s3")]
fn os_err(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e),
        other => io::Error::other(other),
    }
}

#[cfg(feature = "s3")]
const PART_SIZE: usize = 8 << 20;

/// Where the `s3` backend's bucket is and how to sign for it.
#[cfg(feature = "s3")]
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    pub bucket: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub force_path_style: Option<bool>,
}

#[cfg(feature = "s3")]
impl Backend for ObjectStoreBackend {
    fn write(
        &self,
        key: String,
        mut body: ByteStream,
        limit: u64,
    ) -> BoxFuture<'_, Result<Pending>> {
        async move {
            let path = Self::path(&key)?;
            let upload = self.store.put_multipart(&path).await.map_err(os_err)?;
            let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            let mut size = 0u64;
            let streamed: Result<()> = async {
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(|e| {
                        StorageError::bad_request(format!("reading the upload: {e}"))
                    })?;
                    size += chunk.len() as u64;
                    if size > limit {
                        return Err(StorageError::too_large());
                    }
                    w.wait_for_capacity(4).await.map_err(os_err)?;
                    w.put(chunk);
                }
                Ok(())
            }
            .await;
            match streamed {
                Ok(()) => {
                    w.finish().await.map_err(os_err)?;
                    Ok(Pending {
                        key,
                        size,
                        temp: None,
                    })
                }
                Err(e) => {
                    let _ = w.abort().await;
                    Err(e)
                }
            }
        }
        .boxed()
    }

    fn publish<'a>(&'a self, _p: &'a mut Pending) -> BoxFuture<'a, io::Result<()>> {
        async { Ok(()) }.boxed()
    }

    fn discard(&self, p: Pending) -> BoxFuture<'_, ()> {
        async move {
            let _ = self.delete(p.key).await;
        }
        .boxed()
    }

    fn read(&self, key: String) -> BoxFuture<'_, io::Result<Option<(u64, ByteStream)>>> {
        async move {
            let path = Self::path(&key)?;
            match self.store.get(&path).await {
                Ok(r) => {
                    let size = r.meta.size;
                    let stream = r.into_stream().map(|c| c.map_err(os_err)).boxed();
                    Ok(Some((size, stream)))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(os_err(e)),
            }
        }
        .boxed()
    }

    fn read_range(
        &self,
        key: String,
        start: u64,
        end: u64,
    ) -> BoxFuture<'_, io::Result<Option<ByteStream>>> {
        async move {
            let path = Self::path(&key)?;
            let opts = object_store::GetOptions {
                range: Some((start..end).into()),
                ..Default::default()
            };
            match self.store.get_opts(&path, opts).await {
                Ok(r) => Ok(Some(r.into_stream().map(|c| c.map_err(os_err)).boxed())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(os_err(e)),
            }
        }
        .boxed()
    }

    fn copy(&self, from: String, to: String) -> BoxFuture<'_, io::Result<()>> {
        async move {
            self.store
                .copy(&Self::path(&from)?, &Self::path(&to)?)
                .await
                .map_err(os_err)
        }
        .boxed()
    }

    fn delete(&self, key: String) -> BoxFuture<'_, io::Result<()>> {
        async move {
            match self.store.delete(&Self::path(&key)?).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(os_err(e)),
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[&'static [u8]]) -> ByteStream {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
        .boxed()
    }

    async fn read_all(b: &dyn Backend, key: &str) -> Option<Vec<u8>> {
        let (size, s) = b.read(key.into()).await.unwrap()?;
        let chunks: Vec<Bytes> = s.map(|c| c.unwrap()).collect().await;
        let all = chunks.concat();
        assert_eq!(all.len() as u64, size);
        Some(all)
    }

    /// The contract every backend keeps: invisible until published, limit enforced, discard
    /// removes, copy is independent, delete is idempotent.
    async fn contract(b: &dyn Backend, staged_is_invisible: bool) {
        let mut p = b
            .write("bk/a/b.txt/v1".into(), body(&[b"hello ", b"world"]), 100)
            .await
            .unwrap();
        assert_eq!(p.size, 11);
        if staged_is_invisible {
            assert!(read_all(b, "bk/a/b.txt/v1").await.is_none());
        }
        b.publish(&mut p).await.unwrap();
        assert_eq!(read_all(b, "bk/a/b.txt/v1").await.unwrap(), b"hello world");
        let part: Vec<u8> = b
            .read_range("bk/a/b.txt/v1".into(), 3, 8)
            .await
            .unwrap()
            .unwrap()
            .map(|c| c.unwrap().to_vec())
            .concat()
            .await;
        assert_eq!(part, b"lo wo");
        assert!(b
            .read_range("bk/none/v1".into(), 0, 1)
            .await
            .unwrap()
            .is_none());
        let err = b
            .write(
                "bk/big/v1".into(),
                body(&[b"0123456789", b"0123456789"]),
                15,
            )
            .await
            .unwrap_err();
        assert_eq!(err.status, axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        assert!(read_all(b, "bk/big/v1").await.is_none());
        let mut q = b
            .write("bk/gone/v1".into(), body(&[b"x"]), 10)
            .await
            .unwrap();
        b.publish(&mut q).await.unwrap();
        b.discard(q).await;
        assert!(read_all(b, "bk/gone/v1").await.is_none());
        b.copy("bk/a/b.txt/v1".into(), "bk/c/v2".into())
            .await
            .unwrap();
        b.delete("bk/a/b.txt/v1".into()).await.unwrap();
        b.delete("bk/a/b.txt/v1".into()).await.unwrap();
        assert!(read_all(b, "bk/a/b.txt/v1").await.is_none());
        assert_eq!(read_all(b, "bk/c/v2").await.unwrap(), b"hello world");
        assert!(b.read("../escape".into()).await.is_err());
    }

    #[tokio::test]
    async fn local_backend_keeps_the_contract() {
        let dir = std::env::temp_dir().join(format!(
            "agencyflow-storage-unit-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let b = LocalBackend::new(dir.clone());
        contract(&b, true).await;
        // Nothing staged is left behind, and emptied folders are tidied.
        assert_eq!(std::fs::read_dir(dir.join(".tmp")).unwrap().count(), 0);
        assert!(!dir.join("bk/a").exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[cfg(feature = "s3")]
    #[tokio::test]
    async fn object_store_backend_keeps_the_contract() {
        let b = ObjectStoreBackend::new(std::sync::Arc::new(object_store::memory::InMemory::new()));
        contract(&b, false).await;
    }
}
