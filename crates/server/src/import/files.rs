//! Storage files: each `storage.objects` row's bytes are read from the original's storage (a
//! local folder, `<folder>/<bucket>/<name>` or Supabase's file-backend layout
//! `<folder>/<bucket>/<name>/<version>`; or the original's S3-compatible endpoint, one S3
//! bucket per Supabase bucket), hashed while they stream, and written into agencyflow's
//! backend under a content-addressed version `import-<sha256>`, then read back and checked.
//! A file already there under that key (an earlier run) is verified and reused. The keys this
//! run wrote are removed again when the import does not commit.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use agencyflow_storage::backend::{Backend, ByteStream, LocalBackend};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::engine::Mapping;

/// Where the original's files are.
pub enum FileSource {
    None,
    Local(LocalBackend),
    /// The original's S3 endpoint; a backend per bucket.
    S3 {
        settings: agencyflow_storage::backend::S3Settings,
        prefix: String,
        buckets: HashMap<String, Arc<dyn Backend>>,
    },
}

#[derive(Debug, Default, Serialize, Clone)]
pub struct FilesReport {
    /// Objects whose file was read and checked.
    pub read: u64,
    /// Files written into agencyflow's storage by this run.
    pub copied: u64,
    /// Files an earlier run had written (same bytes): reused.
    pub reused: u64,
    pub bytes: u64,
    /// Every copied or reused file is read back and its SHA-256 compared with the original's.
    pub verified: u64,
    /// Files this run wrote and removed again because the import did not commit.
    #[serde(skip_serializing_if = "is_zero")]
    pub removed_after_failure: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

pub struct Files {
    pub source: FileSource,
    pub target: Arc<dyn Backend>,
    pub dry_run: bool,
    /// Keys written by this run (removed if it does not commit).
    pub written: Vec<String>,
    pub report: FilesReport,
}

async fn hash_stream(mut s: ByteStream) -> std::io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = s.next().await {
        let chunk = chunk?;
        n += chunk.len() as u64;
        h.update(&chunk);
    }
    Ok((hex::encode(h.finalize()), n))
}

impl Files {
    async fn source_backend(&mut self, bucket: &str) -> Result<(Arc<dyn Backend>, String), String> {
        match &mut self.source {
            FileSource::None => {
                Err("no --storage-from was given: the file cannot be copied".into())
            }
            FileSource::Local(b) => Ok((
                Arc::new(LocalBackend::new(b.root().to_path_buf())) as Arc<dyn Backend>,
                format!("{bucket}/"),
            )),
            FileSource::S3 {
                settings,
                prefix,
                buckets,
            } => {
                if let Some(b) = buckets.get(bucket) {
                    return Ok((b.clone(), prefix.clone()));
                }
                let s = agencyflow_storage::backend::S3Settings {
                    bucket: bucket.to_string(),
                    ..settings.clone()
                };
                let b: Arc<dyn Backend> =
                    Arc::new(agencyflow_storage::backend::ObjectStoreBackend::s3(&s)?);
                buckets.insert(bucket.to_string(), b.clone());
                Ok((b, prefix.clone()))
            }
        }
    }

    /// Opens the original's file of an object: `<prefix><name>`, else `<prefix><name>/<version>`.
    async fn open(
        &mut self,
        bucket: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<ByteStream, String> {
        let (src, prefix) = self.source_backend(bucket).await?;
        let mut keys = vec![format!("{prefix}{name}")];
        if let Some(v) = version {
            keys.push(format!("{prefix}{name}/{v}"));
        }
        for k in &keys {
            // A folder holds either the file or (file-backend layout) a directory of versions.
            if let FileSource::Local(b) = &self.source {
                if !b.root().join(k).is_file() {
                    continue;
                }
            }
            if let Ok(Some((_, s))) = src.read(k.clone()).await {
                return Ok(s);
            }
        }
        Err(format!(
            "the original's file {bucket}/{name} was not found in --storage-from"
        ))
    }

    /// Copies (or, in a dry run, reads and checks) the object's file and sets its version and
    /// metadata. `Err` is the reason the object is refused.
    pub async fn place(&mut self, m: &mut Mapping) -> Result<(), String> {
        let bucket = m.str("bucket_id").unwrap_or("").to_string();
        let name = m.str("name").unwrap_or("").to_string();
        let version = m.str("version").map(str::to_string);
        agencyflow_storage::objects::validate_key(&name).map_err(|e| e.message)?;
        let s = self.open(&bucket, &name, version.as_deref()).await?;
        let (sha, size) = hash_stream(s)
            .await
            .map_err(|e| format!("reading the original's file: {e}"))?;
        self.report.read += 1;
        let meta = m.row.get("metadata").cloned().unwrap_or(Value::Null);
        if let Some(expected) = meta.get("size").and_then(Value::as_u64) {
            if expected != size {
                return Err(format!(
                    "the file has {size} bytes, the original's metadata says {expected}"
                ));
            }
        }
        let new_version = format!("import-{sha}");
        let key = format!("{bucket}/{name}/{new_version}");
        if !self.dry_run {
            let existing = match self.target.read(key.clone()).await {
                Ok(Some((_, s))) => Some(hash_stream(s).await.map_err(|e| e.to_string())?.0),
                Ok(None) => None,
                Err(e) => return Err(format!("reading agencyflow's storage: {e}")),
            };
            if existing.as_deref() == Some(sha.as_str()) {
                self.report.reused += 1;
            } else {
                let s = self.open(&bucket, &name, version.as_deref()).await?;
                let mut p = self
                    .target
                    .write(key.clone(), s, u64::MAX)
                    .await
                    .map_err(|e| format!("writing the file: {}", e.message))?;
                self.target
                    .publish(&mut p)
                    .await
                    .map_err(|e| format!("writing the file: {e}"))?;
                self.written.push(key.clone());
                self.report.copied += 1;
                let back = match self.target.read(key.clone()).await {
                    Ok(Some((_, s))) => hash_stream(s).await.map_err(|e| e.to_string())?.0,
                    _ => String::new(),
                };
                if back != sha {
                    return Err("the copied file's checksum differs from the original's".into());
                }
            }
            self.report.verified += 1;
        }
        self.report.bytes += size;
        let mut meta = match meta {
            Value::Object(o) => o,
            _ => Default::default(),
        };
        meta.insert("size".into(), json!(size));
        meta.entry("mimetype")
            .or_insert_with(|| json!("application/octet-stream"));
        meta.insert("eTag".into(), json!(format!("\"{new_version}\"")));
        meta.entry("lastModified")
            .or_insert_with(|| json!(chrono::Utc::now().to_rfc3339()));
        meta.insert("sha256".into(), json!(sha));
        m.set("metadata", Value::Object(meta));
        m.set("version", json!(new_version));
        m.changed("object_version");
        Ok(())
    }

    /// Removes what this run wrote (the import did not commit).
    pub async fn remove_written(&mut self) {
        for k in std::mem::take(&mut self.written) {
            if self.target.delete(k).await.is_ok() {
                self.report.removed_after_failure += 1;
            }
        }
    }
}

/// `--storage-from`: a folder, or `s3://[prefix]` (the endpoint and keys from the
/// `--storage-from-s3-*` flags).
pub fn parse_source(
    from: Option<&str>,
    s3: agencyflow_storage::backend::S3Settings,
) -> Result<FileSource, String> {
    match from {
        None => Ok(FileSource::None),
        Some(s) if s.starts_with("s3://") => Ok(FileSource::S3 {
            settings: s3,
            prefix: {
                let p = s.trim_start_matches("s3://").trim_matches('/');
                if p.is_empty() {
                    String::new()
                } else {
                    format!("{p}/")
                }
            },
            buckets: HashMap::new(),
        }),
        Some(dir) => {
            let p = PathBuf::from(dir);
            if !p.is_dir() {
                return Err(format!("--storage-from {dir}: not a folder"));
            }
            Ok(FileSource::Local(LocalBackend::new(p)))
        }
    }
}
