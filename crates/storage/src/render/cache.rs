//! Rendered images on disk, keyed by the object's version and the normalised options, so an
//! object's renditions are computed once per version:
//!
//! ```text
//! <dir>/<sha256(bucket, name)>/<version>/<sha256(options)>   "<mime>\n" then the bytes
//! ```
//!
//! A new version of an object (upload, upsert, move, delete) makes its older renditions
//! unreachable, and they are removed: by the storage writes that replace or delete an
//! object ([`RenderCache::forget`]), and, for changes made behind the API's back, when a
//! render of the object finds versions other than the current one. The whole cache is kept
//! under a byte budget: past it, the least recently used files go first (a hit touches its
//! file's modification time).
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

/// A rendition read from the cache.
#[derive(Debug, Clone)]
pub struct Entry {
    pub mime: String,
    pub bytes: Vec<u8>,
}

#[derive(Clone)]
pub struct RenderCache {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    max_bytes: u64,
    /// Bytes in the cache as far as this process knows (seeded by a scan at start).
    used: AtomicU64,
    evicting: AtomicBool,
}

fn hex_of(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// A version is a UUID we wrote; anything else is not used as a path segment.
fn version_ok(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl RenderCache {
    /// A cache in `dir` (created on first write) holding at most `max_bytes`.
    pub fn new(dir: PathBuf, max_bytes: u64) -> Self {
        RenderCache {
            inner: Arc::new(Inner {
                dir,
                max_bytes,
                used: AtomicU64::new(0),
                evicting: AtomicBool::new(false),
            }),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn object_dir(&self, bucket: &str, name: &str) -> PathBuf {
        self.inner
            .dir
            .join(hex_of(&[bucket.as_bytes(), name.as_bytes()]))
    }

    /// The file of a rendition; `None` for a version that is not one of ours.
    fn path(&self, bucket: &str, name: &str, version: &str, key: &str) -> Option<PathBuf> {
        version_ok(version).then(|| {
            self.object_dir(bucket, name)
                .join(version)
                .join(hex_of(&[key.as_bytes()]))
        })
    }

    /// Seeds the byte count from what is on disk (at start, on a blocking thread).
    pub fn scan(&self) {
        let total = walk(&self.inner.dir).iter().map(|(_, len, _)| len).sum();
        self.inner.used.store(total, Ordering::Relaxed);
        self.evict_if_over();
    }

    /// The rendition, when cached (its modification time is touched: it was used).
    pub fn get(&self, bucket: &str, name: &str, version: &str, key: &str) -> Option<Entry> {
        let path = self.path(bucket, name, version, key)?;
        let data = std::fs::read(&path).ok()?;
        let nl = data.iter().position(|b| *b == b'\n')?;
        let mime = std::str::from_utf8(&data[..nl]).ok()?.to_string();
        if let Ok(f) = std::fs::File::options().append(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        Some(Entry {
            mime,
            bytes: data[nl + 1..].to_vec(),
        })
    }

    /// Stores a rendition (written to a temporary file, then renamed into place), and removes
    /// the object's renditions of other versions.
    pub fn put(
        &self,
        bucket: &str,
        name: &str,
        version: &str,
        key: &str,
        mime: &str,
        bytes: &[u8],
    ) -> io::Result<()> {
        let Some(path) = self.path(bucket, name, version, key) else {
            return Ok(());
        };
        let object_dir = self.object_dir(bucket, name);
        if let Ok(rd) = std::fs::read_dir(&object_dir) {
            for e in rd.flatten() {
                if e.file_name().to_str() != Some(version) {
                    self.remove_tree(&e.path());
                }
            }
        }
        let tmp_dir = self.inner.dir.join(".tmp");
        std::fs::create_dir_all(&tmp_dir)?;
        std::fs::create_dir_all(path.parent().expect("entries have a parent"))?;
        let tmp = tmp_dir.join(uuid::Uuid::new_v4().simple().to_string());
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(mime.as_bytes())?;
            f.write_all(b"\n")?;
            f.write_all(bytes)?;
            std::fs::rename(&tmp, &path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        let size = (mime.len() + 1 + bytes.len()) as u64;
        self.inner.used.fetch_add(size, Ordering::Relaxed);
        self.evict_if_over();
        Ok(())
    }

    /// Removes every rendition of an object (it was replaced, moved or deleted).
    pub fn forget(&self, bucket: &str, name: &str) {
        self.remove_tree(&self.object_dir(bucket, name));
    }

    fn remove_tree(&self, path: &Path) {
        let freed: u64 = walk(path).iter().map(|(_, len, _)| len).sum();
        if std::fs::remove_dir_all(path).is_ok() {
            let _ = self
                .inner
                .used
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                    Some(u.saturating_sub(freed))
                });
        }
    }

    /// Past the budget, removes the least recently used files down to 90% of it.
    fn evict_if_over(&self) {
        let inner = &self.inner;
        if inner.used.load(Ordering::Relaxed) <= inner.max_bytes
            || inner.evicting.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let mut files = walk(&inner.dir);
        let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
        files.sort_by_key(|(_, _, modified)| *modified);
        let target = inner.max_bytes / 10 * 9;
        for (path, len, _) in files {
            if total <= target {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(len);
                // Tidy the version and object folders it leaves empty.
                let mut dir = path.parent();
                for _ in 0..2 {
                    match dir {
                        Some(d) if d != inner.dir && std::fs::remove_dir(d).is_ok() => {
                            dir = d.parent()
                        }
                        _ => break,
                    }
                }
            }
        }
        inner.used.store(total, Ordering::Relaxed);
        inner.evicting.store(false, Ordering::Release);
    }
}

/// The files under `dir` (not the temporary ones) with their sizes and modification times.
fn walk(dir: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                if e.file_name() != ".tmp" {
                    stack.push(e.path());
                }
            } else {
                let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                out.push((e.path(), meta.len(), modified));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "11111111-1111-1111-1111-111111111111";
    const V2: &str = "22222222-2222-2222-2222-222222222222";

    #[test]
    fn entries_are_per_version_and_a_new_version_drops_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let c = RenderCache::new(dir.path().join("c"), 1 << 20);
        assert!(c.get("b", "a/x.png", V1, "k").is_none());
        c.put("b", "a/x.png", V1, "k", "image/webp", b"one")
            .unwrap();
        let e = c.get("b", "a/x.png", V1, "k").unwrap();
        assert_eq!(
            (e.mime.as_str(), e.bytes.as_slice()),
            ("image/webp", &b"one"[..])
        );
        assert!(c.get("b", "a/x.png", V1, "other").is_none());
        assert!(c.get("b", "a/x.png", V2, "k").is_none());
        c.put("b", "a/x.png", V2, "k", "image/png", b"two").unwrap();
        assert!(
            c.get("b", "a/x.png", V1, "k").is_none(),
            "old version removed"
        );
        c.forget("b", "a/x.png");
        assert!(c.get("b", "a/x.png", V2, "k").is_none());
        assert!(c.get("b", "a/x.png", "../../etc", "k").is_none());
        assert_eq!(c.inner.used.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_budget_evicts_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let c = RenderCache::new(dir.path().to_path_buf(), 100);
        let old = SystemTime::now() - std::time::Duration::from_secs(60);
        c.put("b", "first", V1, "k", "m", &[0; 40]).unwrap();
        c.put("b", "second", V1, "k", "m", &[0; 40]).unwrap();
        for name in ["first", "second"] {
            let p = c.path("b", name, V1, "k").unwrap();
            let f = std::fs::File::options().append(true).open(p).unwrap();
            f.set_modified(old).unwrap();
        }
        // `first` is used again: `second` is now the least recently used.
        assert!(c.get("b", "first", V1, "k").is_some());
        c.put("b", "third", V1, "k", "m", &[0; 40]).unwrap();
        assert!(c.get("b", "second", V1, "k").is_none());
        assert!(c.get("b", "first", V1, "k").is_some());
        assert!(c.get("b", "third", V1, "k").is_some());
        let fresh = RenderCache::new(dir.path().to_path_buf(), 100);
        fresh.scan();
        assert_eq!(fresh.inner.used.load(Ordering::Relaxed), 2 * 42);
    }
}
