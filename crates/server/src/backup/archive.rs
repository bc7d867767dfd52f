//! The archive: a gzip-compressed tar. Every member is a regular file under `db/`, `secrets/`
//! or `storage/`; the last member, `manifest.json`, lists each of them with its size and
//! SHA-256, so a reader can check the whole archive before using any of it.
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const FORMAT: &str = "agencyflow-backup";
pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST: &str = "manifest.json";
pub const DUMP: &str = "db/database.dump";
pub const ROLES: &str = "db/roles.sql";
pub const BASE: &str = "db/base.tar";
pub const SECRETS_DIR: &str = "secrets";
pub const STORAGE_DIR: &str = "storage";

/// What an archive holds, written as its last member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `agencyflow-backup`.
    pub format: String,
    /// The archive format's version (this layout is 1).
    pub version: u32,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub agencyflow_version: String,
    pub database: DatabaseInfo,
    /// `supabase_migrations.schema_migrations` as the dump has it.
    pub migrations: Vec<MigrationEntry>,
    pub storage: StorageInfo,
    pub secrets: Vec<SecretInfo>,
    /// The physical base backup, when the cluster archived its WAL (scheduled backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_backup: Option<BaseBackupInfo>,
    /// Every other member, in archive order.
    pub members: Vec<Member>,
}

/// `pg_basebackup` of the embedded cluster (tar format, with the WAL it needs to be
/// consistent), the starting point of `restore --until`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaseBackupInfo {
    /// `db/base.tar`.
    pub member: String,
    /// Where the cluster archived its WAL when the backup was taken.
    pub wal_archive: String,
    /// The oldest WAL segment a recovery from this base backup reads (or an older one).
    pub start_wal: String,
    /// RFC 3339 (UTC, microseconds): the base backup was complete and consistent by then, so
    /// a recovery target must not be earlier.
    pub ended_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseInfo {
    /// `embedded` (the data directory's cluster) or `external` (DATABASE_URL).
    pub source: String,
    pub server_version: String,
    pub database: String,
    /// `pg_dump --format=custom` of the whole database.
    pub dump: String,
    /// `pg_dumpall --roles-only`: the cluster-wide roles the database refers to.
    pub roles: String,
    /// False when the connecting role could not read password hashes (`--no-role-passwords`).
    pub role_passwords: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MigrationEntry {
    pub version: String,
    pub name: Option<String>,
    pub checksum: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StorageInfo {
    /// `local` (files in the archive under `storage/`) or `s3` (not in the archive).
    pub backend: String,
    pub objects: u64,
    pub bytes: u64,
    /// Object keys whose file had disappeared when the archive was made (deleted meanwhile).
    #[serde(default)]
    pub missing: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretInfo {
    /// The data directory's file name: `jwt_secret`, `vault_key`.
    pub name: String,
    pub member: String,
    /// `data-dir` (generated, kept in the data directory) or `configured` (JWT_SECRET, ...).
    pub source: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// A file to put into the archive under `path`.
pub struct Input {
    pub path: String,
    pub source: PathBuf,
}

fn is_secret(path: &str) -> bool {
    path.starts_with("secrets/")
}

/// Hashes (and counts on a progress bar) what passes through.
struct Hashing<'a, R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    bar: &'a ProgressBar,
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// Writes the archive to `out` (created new, mode 0600, synced): `inputs` in order, then the
/// manifest `manifest` makes of their members.
pub fn write(
    out: &Path,
    inputs: &[Input],
    manifest: impl FnOnce(Vec<Member>) -> Manifest,
    bar: &ProgressBar,
) -> io::Result<()> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)?;
    let gz = GzEncoder::new(BufWriter::with_capacity(1 << 20, file), Compression::new(6));
    let mut tar = tar::Builder::new(gz);
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let header = |size: u64, secret: bool| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(size);
        h.set_mode(if secret { 0o600 } else { 0o644 });
        h.set_mtime(mtime);
        h
    };
    let mut members = Vec::with_capacity(inputs.len());
    for input in inputs {
        let f = File::open(&input.source)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", input.source.display())))?;
        let size = f.metadata()?.len();
        let mut h = header(size, is_secret(&input.path));
        let mut reader = Hashing {
            inner: BufReader::with_capacity(1 << 20, f).take(size),
            hasher: Sha256::new(),
            count: 0,
            bar,
        };
        tar.append_data(&mut h, &input.path, &mut reader)?;
        if reader.count != size {
            // The header promised `size` bytes: a file that shrank would corrupt the archive.
            return Err(io::Error::other(format!(
                "{} changed while it was archived",
                input.source.display()
            )));
        }
        members.push(Member {
            path: input.path.clone(),
            size,
            sha256: hex::encode(reader.hasher.finalize()),
        });
    }
    let json = serde_json::to_vec_pretty(&manifest(members)).map_err(io::Error::other)?;
    let mut h = header(json.len() as u64, false);
    tar.append_data(&mut h, MANIFEST, json.as_slice())?;
    let gz = tar.into_inner()?;
    let mut buffered = gz.finish()?;
    buffered.flush()?;
    let file = buffered.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

/// Why an archive cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot read {path}: {source}")]
    Open { path: String, source: io::Error },
    #[error("the archive is corrupt or truncated ({0})")]
    Corrupt(String),
    #[error("not an agencyflow backup ({0})")]
    NotABackup(String),
    #[error("made by a newer agencyflow (archive format {0}, this one reads up to {FORMAT_VERSION}): restore it with that version")]
    TooNew(u32),
    #[error("{0}")]
    Write(String),
}

fn corrupt(e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Corrupt(e.to_string())
}

/// Counts the archive's bytes as they are read (the progress of a restore).
struct Counting<'a, R> {
    inner: R,
    bar: &'a ProgressBar,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// A member's path, checked: relative, plain components only, under one of our folders.
fn member_path(path: &Path) -> Result<String, ArchiveError> {
    let text = path
        .to_str()
        .ok_or_else(|| corrupt(format!("member {path:?} is not UTF-8")))?;
    let plain = path.components().all(|c| matches!(c, Component::Normal(_)));
    let ours = text == MANIFEST
        || ["db/", "secrets/", "storage/"]
            .iter()
            .any(|p| text.starts_with(p) && text.len() > p.len());
    if !plain || !ours {
        return Err(corrupt(format!("unexpected member {text:?}")));
    }
    Ok(text.to_string())
}

/// The manifest alone (the archive is read to its end, where the manifest is; nothing is
/// checked or written).
pub fn read_manifest(archive: &Path) -> Result<Manifest, ArchiveError> {
    let file = File::open(archive).map_err(|e| ArchiveError::Open {
        path: archive.display().to_string(),
        source: e,
    })?;
    let mut tar = tar::Archive::new(GzDecoder::new(BufReader::with_capacity(1 << 20, file)));
    for entry in tar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        if member_path(&entry.path().map_err(corrupt)?)? == MANIFEST {
            let mut json = Vec::new();
            (&mut entry)
                .take(16 << 20)
                .read_to_end(&mut json)
                .map_err(corrupt)?;
            return serde_json::from_slice(&json).map_err(corrupt);
        }
    }
    Err(corrupt("no manifest"))
}

/// Reads the whole archive into `into` (a fresh, private folder), hashing every member, and
/// checks it against its manifest: every member present, of its size and checksum, and
/// nothing else. On an error `into` holds whatever was read: the caller removes it.
pub fn extract_verified(
    archive: &Path,
    into: &Path,
    bar: &ProgressBar,
) -> Result<Manifest, ArchiveError> {
    let open = |e| ArchiveError::Open {
        path: archive.display().to_string(),
        source: e,
    };
    let file = File::open(archive).map_err(open)?;
    bar.set_length(file.metadata().map_err(open)?.len());
    let mut gz = GzDecoder::new(Counting {
        inner: BufReader::with_capacity(1 << 20, file),
        bar,
    });
    let mut seen: BTreeMap<String, Member> = BTreeMap::new();
    let mut manifest_json: Option<Vec<u8>> = None;
    {
        let mut tar = tar::Archive::new(&mut gz);
        for entry in tar.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            if manifest_json.is_some() {
                return Err(corrupt("a member follows the manifest"));
            }
            let path = member_path(&entry.path().map_err(corrupt)?)?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                return Err(corrupt(format!("{path} is not a regular file")));
            }
            if path == MANIFEST {
                let mut json = Vec::new();
                (&mut entry)
                    .take(16 << 20)
                    .read_to_end(&mut json)
                    .map_err(corrupt)?;
                manifest_json = Some(json);
                continue;
            }
            if seen.contains_key(&path) {
                return Err(corrupt(format!("{path} appears twice")));
            }
            let dest = into.join(&path);
            let write_err = |e: io::Error| ArchiveError::Write(format!("{}: {e}", dest.display()));
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(write_err)?;
            }
            let out = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(if is_secret(&path) { 0o600 } else { 0o644 })
                .open(&dest)
                .map_err(write_err)?;
            let hidden = ProgressBar::hidden();
            let mut reader = Hashing {
                inner: &mut entry,
                hasher: Sha256::new(),
                count: 0,
                bar: &hidden,
            };
            let mut out = BufWriter::with_capacity(1 << 20, out);
            // A read error is the archive's fault; a write error ours (a full disk).
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = reader.read(&mut buf).map_err(corrupt)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n]).map_err(write_err)?;
            }
            out.flush().map_err(write_err)?;
            let size = reader.count;
            seen.insert(
                path.clone(),
                Member {
                    path,
                    size,
                    sha256: hex::encode(reader.hasher.finalize()),
                },
            );
        }
    }
    // The tar ends before the gzip stream does: read to its end, where the CRC is checked.
    io::copy(&mut gz, &mut io::sink()).map_err(corrupt)?;
    bar.set_position(bar.length().unwrap_or(0));
    let json = manifest_json.ok_or_else(|| ArchiveError::NotABackup("no manifest.json".into()))?;
    let manifest: Manifest = serde_json::from_slice(&json)
        .map_err(|e| ArchiveError::NotABackup(format!("manifest.json: {e}")))?;
    if manifest.format != FORMAT {
        return Err(ArchiveError::NotABackup(format!(
            "format {:?}",
            manifest.format
        )));
    }
    if manifest.version > FORMAT_VERSION {
        return Err(ArchiveError::TooNew(manifest.version));
    }
    for m in &manifest.members {
        match seen.remove(&m.path) {
            None => return Err(corrupt(format!("{} is missing", m.path))),
            Some(s) if s.size != m.size || s.sha256 != m.sha256 => {
                return Err(corrupt(format!("{} does not match its checksum", m.path)))
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = seen.keys().next() {
        return Err(corrupt(format!("{extra} is not in the manifest")));
    }
    for required in [DUMP, ROLES] {
        if !manifest.members.iter().any(|m| m.path == required) {
            return Err(ArchiveError::NotABackup(format!("no {required}")));
        }
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(members: Vec<Member>) -> Manifest {
        Manifest {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            created_at: "2026-01-01T00:00:00Z".into(),
            agencyflow_version: "test".into(),
            database: DatabaseInfo {
                source: "embedded".into(),
                server_version: "15".into(),
                database: "postgres".into(),
                dump: DUMP.into(),
                roles: ROLES.into(),
                role_passwords: true,
            },
            migrations: vec![],
            storage: StorageInfo {
                backend: "local".into(),
                objects: 0,
                bytes: 0,
                missing: vec![],
            },
            secrets: vec![],
            base_backup: None,
            members,
        }
    }

    fn sample(dir: &Path) -> PathBuf {
        let files = [
            (DUMP, b"dump bytes".to_vec()),
            (ROLES, b"create role x;".to_vec()),
            ("secrets/jwt_secret", b"s3cr3t".to_vec()),
            (
                "storage/documents/a/very/long/name/that/needs/a/gnu/long/name/header/because/it/is/longer/than/one/hundred/bytes/v1",
                (0..=255u8).cycle().take(100_000).collect(),
            ),
        ];
        let mut inputs = vec![];
        for (i, (path, bytes)) in files.iter().enumerate() {
            let src = dir.join(format!("in{i}"));
            fs::write(&src, bytes).unwrap();
            inputs.push(Input {
                path: path.to_string(),
                source: src,
            });
        }
        let out = dir.join("a.tar.gz");
        write(&out, &inputs, manifest, &ProgressBar::hidden()).unwrap();
        out
    }

    #[test]
    fn round_trip_keeps_every_member_and_checks_it() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let out = sample(d.path());
        assert_eq!(
            fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let into = d.path().join("x");
        fs::create_dir(&into).unwrap();
        let m = extract_verified(&out, &into, &ProgressBar::hidden()).unwrap();
        assert_eq!(m.members.len(), 4);
        assert_eq!(fs::read(into.join(DUMP)).unwrap(), b"dump bytes");
        let secret = into.join("secrets/jwt_secret");
        assert_eq!(
            fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let long = &m.members[3];
        assert_eq!(fs::metadata(into.join(&long.path)).unwrap().len(), 100_000);
    }

    #[test]
    fn a_changed_member_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let out = sample(d.path());
        // Decompress, change one byte of the dump's data, recompress: gzip is happy, the
        // manifest's checksum is not.
        let mut tar = Vec::new();
        GzDecoder::new(File::open(&out).unwrap())
            .read_to_end(&mut tar)
            .unwrap();
        let at = tar.windows(10).position(|w| w == b"dump bytes").unwrap();
        tar[at] = b'D';
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(&tar).unwrap();
        let bad = d.path().join("bad.tar.gz");
        fs::write(&bad, gz.finish().unwrap()).unwrap();
        let into = d.path().join("y");
        fs::create_dir(&into).unwrap();
        let e = extract_verified(&bad, &into, &ProgressBar::hidden()).unwrap_err();
        assert!(
            e.to_string()
                .contains("db/database.dump does not match its checksum"),
            "{e}"
        );
        // A truncated file is refused too.
        let bytes = fs::read(&out).unwrap();
        fs::write(&bad, &bytes[..bytes.len() - 20]).unwrap();
        let into = d.path().join("z");
        fs::create_dir(&into).unwrap();
        let e = extract_verified(&bad, &into, &ProgressBar::hidden()).unwrap_err();
        assert!(matches!(e, ArchiveError::Corrupt(_)), "{e}");
    }

    #[test]
    fn member_paths_stay_inside() {
        for bad in [
            "../x",
            "/etc/passwd",
            "db/../../x",
            "other/x",
            "db/",
            "secrets",
        ] {
            assert!(member_path(Path::new(bad)).is_err(), "{bad}");
        }
        for good in ["manifest.json", "db/database.dump", "storage/b/n/v"] {
            assert_eq!(member_path(Path::new(good)).unwrap(), good);
        }
    }
}
