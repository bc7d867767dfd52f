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
    /// `to` with the content of `from` (objects are immutable: a hard link where possible).
    fn copy(&self, from: String, to: String) -> BoxFuture<'_, io::Result<()>>;
    /// Removes a key; a missing key is not an error.
    fn delete(&self, key: String) -> BoxFuture<'_, io::Result<()>>;
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
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid key {key:?}")));
        }
        Ok(self.root.join(rel))
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join(".tmp")
    }
}

async fn sync_dir(dir: &Path) {
    let dir = dir.to_path_buf();
    let _ = tokio::task::spawn_blocking(move || std::fs::File::open(&dir).and_then(|f| f.sync_all())).await;
}

const WRITE_BUFFER: usize = 1 << 20;
const READ_CHUNK: usize = 256 * 1024;

impl Backend for LocalBackend {
    fn write(&self, key: String, mut body: ByteStream, limit: u64) -> BoxFuture<'_, Result<Pending>> {
        async move {
            self.path(&key)?;
            let dir = self.tmp_dir();
            tokio::fs::create_dir_all(&dir).await?;
            let temp = dir.join(uuid::Uuid::new_v4().simple().to_string());
            let file = tokio::fs::OpenOptions::new().write(true).create_new(true).open(&temp).await?;
            let mut out = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file);
            let written: Result<u64> = async {
                let mut size = 0u64;
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(|e| StorageError::bad_request(format!("reading the upload: {e}")))?;
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
                Ok(size) => Ok(Pending { key, size, temp: Some(temp) }),
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
            let path = self.path(&key)?;
            let file = match tokio::fs::File::open(&path).await {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let size = file.metadata().await?.len();
            let stream = tokio_util::io::ReaderStream::with_capacity(file, READ_CHUNK).boxed();
            Ok(Some((size, stream)))
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
