//! Backup and restore: `agencyflow backup FILE`, `agencyflow restore FILE` and the scheduled
//! backups of `serve --backup-every`.
//!
//! An archive (see [`archive`]) holds everything needed to bring an installation back:
//! - `db/database.dump`: `pg_dump --format=custom` of the whole database (public, auth,
//!   storage, vault, supabase_migrations, private, ...), taken in one exported snapshot;
//! - `db/roles.sql`: `pg_dumpall --roles-only`, the cluster-wide roles the database uses;
//! - `storage/<bucket>/<name>/<version>`: the local backend's files of every object the same
//!   snapshot names (objects are immutable and written before their row commits, so the
//!   files and rows agree);
//! - `secrets/jwt_secret`, `secrets/vault_key`: the secrets in effect (mode 0600 in the
//!   archive, and the archive itself is 0600);
//! - `manifest.json`, last: versions, migrations and the size and SHA-256 of every member.
//!
//! A restore reads and checks the whole archive into a private staging folder inside the
//! target data directory, restores the database into a new cluster there, and only then
//! moves the result into place: a refused or failed restore leaves the target as it was.
pub mod archive;
pub(crate) mod pg;
pub mod wal;

use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agencyflow_db::{migrate, ClusterOptions, EmbeddedCluster};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{ConfigError, GlobalArgs, ServeArgs};
use crate::keys;
use crate::run::{Database, RunError};

use archive::{ArchiveError, Input, Manifest};

#[derive(Debug, Args, Clone)]
pub struct BackupArgs {
    /// The archive to write (a gzip-compressed tar, mode 0600; an existing file is replaced
    /// only once the new archive is complete).
    pub file: PathBuf,
    /// The local storage backend's directory (default: <data-dir>/storage).
    #[arg(long = "storage-dir", env = "FILE_STORAGE_BACKEND_PATH")]
    pub storage_dir: Option<PathBuf>,
    /// The storage backend: `local` files go into the archive; `s3` objects are not copied.
    #[arg(
        long = "storage-backend",
        env = "STORAGE_BACKEND",
        default_value = "local"
    )]
    pub storage_backend: String,
    /// The vault key in effect (default: the one kept in the data directory).
    #[arg(long, env = "VAULT_ENC_KEY", hide_env_values = true)]
    pub vault_key: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct RestoreArgs {
    /// The archive written by `agencyflow backup`.
    pub file: PathBuf,
    /// Replace the database, storage files and secrets of a data directory that is not empty
    /// (its other files are kept). Never applies to a DATABASE_URL database, which must be empty.
    #[arg(long)]
    pub force: bool,
    /// Where the storage files go (default: <data-dir>/storage).
    #[arg(long = "storage-dir", env = "FILE_STORAGE_BACKEND_PATH")]
    pub storage_dir: Option<PathBuf>,
    /// Point-in-time recovery: the database as it was at this moment, e.g.
    /// "2026-12-06 10:00:00+00" (the archive's base backup, then its archived WAL replayed
    /// up to the last transaction committed by then). Needs a backup taken while the WAL was
    /// archived (`serve --backup-every`).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// The WAL archive `--until` replays (default: `wal/` beside FILE, else the folder the
    /// backup's server archived into).
    #[arg(long = "wal-dir", requires = "until")]
    pub wal_dir: Option<PathBuf>,
}

/// "2026-12-06 10:00:00+00", "2026-12-06T10:00:00.5Z", "2026-12-06 10:00:00+01:00": a moment
/// with its offset (a time without one would depend on the machine's zone).
pub fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    let t = s.trim().replacen('T', " ", 1);
    let t = t.strip_suffix('Z').map_or(t.clone(), |u| format!("{u}+00"));
    chrono::DateTime::parse_from_str(&t, "%Y-%m-%d %H:%M:%S%.f%#z")
        .map(|d| d.with_timezone(&chrono::Utc))
        .map_err(|_| {
            format!(
                "`{s}` is not a moment such as \"2026-12-06 10:00:00+00\" (with its UTC offset)"
            )
        })
}

/// `serve`'s scheduled backups.
#[derive(Debug, Args, Clone)]
pub struct ScheduleArgs {
    /// Take a backup this often while serving, e.g. `24h`, `30m`, `7d` (none by default).
    #[arg(long, env = "AGENCYFLOW_BACKUP_EVERY", value_parser = parse_interval)]
    pub backup_every: Option<Duration>,
    /// How many scheduled backups to keep: the newest; older ones are deleted.
    #[arg(long, env = "AGENCYFLOW_BACKUP_KEEP", default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..))]
    pub backup_keep: u32,
    /// Where scheduled backups are written (default: <data-dir>/backups); the embedded
    /// cluster's WAL is archived continuously into its `wal/` folder.
    #[arg(long, env = "AGENCYFLOW_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,
    /// With scheduled backups, the longest a completed transaction waits before its WAL
    /// segment is archived (PostgreSQL's `archive_timeout`), e.g. `60s`, `5m`.
    #[arg(long, env = "AGENCYFLOW_WAL_ARCHIVE_TIMEOUT", default_value = "60s", value_parser = parse_interval)]
    pub wal_archive_timeout: Duration,
}

impl ScheduleArgs {
    pub fn dir(&self, data_dir: &Path) -> PathBuf {
        self.backup_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("backups"))
    }

    /// The embedded cluster's settings for archiving its WAL into the backup directory, when
    /// backups are scheduled.
    pub fn wal_archiving(&self, data_dir: &Path) -> Result<Vec<(String, String)>, RunError> {
        if self.backup_every.is_none() {
            return Ok(Vec::new());
        }
        wal::prepare(&self.dir(data_dir), self.wal_archive_timeout.as_secs())
            .map_err(|e| ConfigError::new("AGENCYFLOW_BACKUP_DIR", e).into())
    }
}

/// `30s`, `15m`, `24h`, `7d` (or a number of seconds).
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}` is not a duration such as 30m, 24h or 7d"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("`{s}`: the unit must be one of s, m, h, d")),
    };
    if secs == 0 {
        return Err("must be at least 1s".into());
    }
    Ok(Duration::from_secs(secs))
}

/// Where the storage files are.
#[derive(Debug, Clone)]
pub enum StorageSource {
    Local(PathBuf),
    /// Another backend (s3): its objects are not in the archive.
    Remote(String),
}

/// What a backup reads.
#[derive(Clone)]
pub struct Source {
    pub admin_url: String,
    pub embedded: bool,
    pub storage: StorageSource,
    /// (file name, value, `data-dir` | `configured`).
    pub secrets: Vec<(String, String, &'static str)>,
}

/// What a backup wrote.
#[derive(Debug)]
pub struct Summary {
    pub file: PathBuf,
    pub bytes: u64,
    pub objects: u64,
    pub missing: usize,
    pub elapsed: Duration,
}

fn storage_source(backend: &str, dir: Option<&Path>, data_dir: &Path) -> StorageSource {
    match backend {
        "local" | "file" => StorageSource::Local(
            dir.map(Path::to_path_buf)
                .unwrap_or_else(|| data_dir.join("storage")),
        ),
        other => StorageSource::Remote(other.to_string()),
    }
}

/// The secrets in effect: configured, or the data directory's (generated when absent, as
/// `serve` would).
fn secrets(
    jwt_configured: Option<&str>,
    vault_configured: Option<&str>,
    data_dir: &Path,
) -> Result<Vec<(String, String, &'static str)>, ConfigError> {
    let source = |c: Option<&str>| {
        if c.is_some() {
            "configured"
        } else {
            "data-dir"
        }
    };
    let jwt = keys::jwt_secret(jwt_configured, data_dir)?;
    let vault = match vault_configured {
        Some(k) if k.len() < 32 => {
            return Err(ConfigError::new(
                "VAULT_ENC_KEY",
                "must be at least 32 characters",
            ))
        }
        Some(k) => k.to_string(),
        None => keys::persisted_secret(data_dir, "vault_key", "VAULT_ENC_KEY")?,
    };
    Ok(vec![
        ("jwt_secret".into(), jwt, source(jwt_configured)),
        ("vault_key".into(), vault, source(vault_configured)),
    ])
}

fn bytes_bar(show: bool, message: &'static str, len: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:<12} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(message);
    bar
}

fn spinner(show: bool, message: &'static str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Paths removed when dropped (a backup's partial files, a restore's staging folder).
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            if p.is_dir() {
                let _ = fs::remove_dir_all(p);
            } else {
                let _ = fs::remove_file(p);
            }
        }
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Takes one backup of `src` into `file`.
pub async fn take(src: &Source, file: &Path, show_progress: bool) -> Result<Summary, String> {
    let started = Instant::now();
    let tools = pg::Tools::find();
    let conn = pg::Conn::parse(&src.admin_url)?;
    let name = file
        .file_name()
        .ok_or_else(|| format!("{} is not a file name", file.display()))?
        .to_string_lossy()
        .into_owned();
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let work = dir.join(format!(".{name}.partial.d"));
    let partial = dir.join(format!(".{name}.partial"));
    let _cleanup = Cleanup(vec![work.clone(), partial.clone()]);
    for p in [&work, &partial] {
        let _ = fs::remove_dir_all(p);
        let _ = fs::remove_file(p);
    }
    fs::create_dir(&work).map_err(|e| format!("creating {}: {e}", work.display()))?;
    fs::set_permissions(&work, fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("chmod {}: {e}", work.display()))?;

    // One snapshot for the dump and the list of storage files: exported by a transaction
    // that stays open until pg_dump has taken it.
    let db_err = |e: agencyflow_db::tokio_postgres::Error| {
        format!("database: {}", agencyflow_db::DbError::from(e))
    };
    let client = agencyflow_db::connect_one(&src.admin_url)
        .await
        .map_err(|e| format!("connecting to the database: {e}"))?;
    client
        .batch_execute("begin isolation level repeatable read, read only")
        .await
        .map_err(db_err)?;
    let row = client
        .query_one(
            "select pg_export_snapshot(), current_setting('server_version'), current_database(),
                    to_regclass('supabase_migrations.schema_migrations') is not null,
                    to_regclass('storage.objects') is not null,
                    current_setting('archive_mode') <> 'off'
                      and coalesce(current_setting('agencyflow.wal_archive', true), '') <> '',
                    current_setting('agencyflow.wal_archive', true)",
            &[],
        )
        .await
        .map_err(db_err)?;
    let snapshot: String = row.get(0);
    let (server_version, database): (String, String) = (row.get(1), row.get(2));
    let migrations = if row.get::<_, bool>(3) {
        client
            .query(
                "select version, name, checksum from supabase_migrations.schema_migrations order by version",
                &[],
            )
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| archive::MigrationEntry {
                version: r.get(0),
                name: r.get(1),
                checksum: r.get(2),
            })
            .collect()
    } else {
        Vec::new()
    };
    let keys: Vec<String> = match (&src.storage, row.get::<_, bool>(4)) {
        (StorageSource::Local(_), true) => client
            .query(
                "select bucket_id || '/' || name || '/' || version from storage.objects
                  where version is not null order by 1",
                &[],
            )
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| r.get(0))
            .collect(),
        _ => Vec::new(),
    };

    let bar = spinner(show_progress, "dumping the database");
    let dump = work.join("database.dump");
    let mut cmd = tools.command("pg_dump", &conn);
    cmd.args([
        "--format=custom",
        "--compress=0",
        "--snapshot",
        &snapshot,
        "--file",
    ])
    .arg(&dump);
    pg::run_async(cmd).await?;
    let roles = work.join("roles.sql");
    let roles_cmd = |passwords: bool| {
        let mut cmd = tools.command("pg_dumpall", &conn);
        cmd.args(["--roles-only", "-l", &conn.dbname, "--file"])
            .arg(&roles);
        if !passwords {
            cmd.arg("--no-role-passwords");
        }
        cmd
    };
    let role_passwords = match pg::run_async(roles_cmd(true)).await {
        Ok(_) => true,
        // Password hashes need a superuser (pg_authid); managed servers may not give one.
        Err(e) if e.contains("permission denied") => {
            tracing::warn!(error = %e, "backing up the roles without their passwords");
            pg::run_async(roles_cmd(false)).await?;
            false
        }
        Err(e) => return Err(e),
    };
    client.batch_execute("commit").await.map_err(db_err)?;
    bar.finish_and_clear();

    // A physical base backup too when the cluster archives its WAL: what `restore --until`
    // replays the archive on. Tar format, with the WAL that makes it consistent (`-X fetch`).
    let mut base_backup = None;
    if src.embedded && row.get::<_, bool>(5) {
        let bar = spinner(show_progress, "taking a base backup");
        let start_wal: String = client
            .query_one("select pg_walfile_name(pg_current_wal_lsn())", &[])
            .await
            .map_err(db_err)?
            .get(0);
        let mut cmd = tools.command("pg_basebackup", &conn);
        cmd.args([
            "--format=tar",
            "--wal-method=fetch",
            "--checkpoint=fast",
            "--no-manifest",
            "-D",
        ])
        .arg(work.join("base"));
        pg::run_async(cmd).await?;
        let ended_at: String = client
            .query_one(
                "select to_char(now() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
                &[],
            )
            .await
            .map_err(db_err)?
            .get(0);
        bar.finish_and_clear();
        base_backup = Some(archive::BaseBackupInfo {
            member: archive::BASE.into(),
            wal_archive: row.get(6),
            start_wal,
            ended_at,
        });
    }
    drop(client);

    let mut inputs = vec![
        Input {
            path: archive::ROLES.into(),
            source: roles,
        },
        Input {
            path: archive::DUMP.into(),
            source: dump,
        },
    ];
    if base_backup.is_some() {
        inputs.push(Input {
            path: archive::BASE.into(),
            source: work.join("base").join("base.tar"),
        });
    }
    let mut secret_info = Vec::new();
    for (file_name, value, source) in &src.secrets {
        let path = work.join(file_name);
        write_private(&path, value.as_bytes())
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        let member = format!("{}/{file_name}", archive::SECRETS_DIR);
        secret_info.push(archive::SecretInfo {
            name: file_name.clone(),
            member: member.clone(),
            source: source.to_string(),
        });
        inputs.push(Input {
            path: member,
            source: path,
        });
    }
    let mut missing = Vec::new();
    let (mut objects, mut object_bytes) = (0u64, 0u64);
    if let StorageSource::Local(root) = &src.storage {
        for key in keys {
            let path = root.join(&key);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() => {
                    objects += 1;
                    object_bytes += m.len();
                    inputs.push(Input {
                        path: format!("{}/{key}", archive::STORAGE_DIR),
                        source: path,
                    });
                }
                // Deleted after the snapshot: the restored row will name a missing file.
                _ => missing.push(key),
            }
        }
    }
    if !missing.is_empty() {
        tracing::warn!(
            count = missing.len(),
            "storage objects deleted while the backup ran are not in it"
        );
    }
    let total: u64 = inputs
        .iter()
        .filter_map(|i| fs::metadata(&i.source).ok())
        .map(|m| m.len())
        .sum();
    let manifest_base = Manifest {
        format: archive::FORMAT.into(),
        version: archive::FORMAT_VERSION,
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        agencyflow_version: env!("CARGO_PKG_VERSION").into(),
        database: archive::DatabaseInfo {
            source: if src.embedded { "embedded" } else { "external" }.into(),
            server_version,
            database,
            dump: archive::DUMP.into(),
            roles: archive::ROLES.into(),
            role_passwords,
        },
        migrations,
        storage: archive::StorageInfo {
            backend: match &src.storage {
                StorageSource::Local(_) => "local".into(),
                StorageSource::Remote(b) => b.clone(),
            },
            objects,
            bytes: object_bytes,
            missing: missing.clone(),
        },
        secrets: secret_info,
        base_backup,
        members: Vec::new(),
    };
    let bar = bytes_bar(show_progress, "archiving", total);
    let out = partial.clone();
    let bar2 = bar.clone();
    tokio::task::spawn_blocking(move || {
        archive::write(
            &out,
            &inputs,
            |members| Manifest {
                members,
                ..manifest_base
            },
            &bar2,
        )
    })
    .await
    .map_err(|e| format!("archiving: {e}"))?
    .map_err(|e| format!("writing {}: {e}", partial.display()))?;
    bar.finish_and_clear();
    fs::rename(&partial, file).map_err(|e| format!("renaming to {}: {e}", file.display()))?;
    sync_dir(&dir);
    let bytes = fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    Ok(Summary {
        file: file.to_path_buf(),
        bytes,
        objects,
        missing: missing.len(),
        elapsed: started.elapsed(),
    })
}

fn human(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

/// Refuses a backup of a data directory that has no database (before one would be created).
pub fn check_source(g: &GlobalArgs, data_dir: &Path) -> Result<(), RunError> {
    let external = g.database_url.as_deref().is_some_and(|u| !u.is_empty());
    if !external && !data_dir.join("pg").join("PG_VERSION").is_file() {
        return Err(RunError::Failed(format!(
            "{} holds no database to back up (no embedded cluster in it; set --data-dir, or DATABASE_URL)",
            data_dir.display()
        )));
    }
    Ok(())
}

/// `agencyflow backup FILE`.
pub async fn backup_command(
    database: &Database,
    g: &GlobalArgs,
    a: &BackupArgs,
    data_dir: &Path,
) -> Result<(), RunError> {
    let src = Source {
        admin_url: database.admin_url.clone(),
        embedded: g.database_url.as_deref().is_none_or(str::is_empty),
        storage: storage_source(&a.storage_backend, a.storage_dir.as_deref(), data_dir),
        secrets: secrets(g.jwt_secret.as_deref(), a.vault_key.as_deref(), data_dir)?,
    };
    if let StorageSource::Remote(b) = &src.storage {
        eprintln!("note: the {b} storage backend's objects are not in the archive: back them up where they live");
    }
    let s = take(&src, &a.file, true).await.map_err(RunError::Failed)?;
    println!(
        "backup written to {} ({}, {} storage object(s), {:.1}s)",
        s.file.display(),
        human(s.bytes),
        s.objects,
        s.elapsed.as_secs_f64()
    );
    if s.missing > 0 {
        eprintln!(
            "note: {} storage object(s) were deleted while the backup ran and are not in it",
            s.missing
        );
    }
    Ok(())
}

/// The console's "take a backup now": [`take`] into the scheduled backups' folder, as a
/// background job of the console (names `agencyflow-console-*.tar.gz`, which the scheduled
/// backups' pruning leaves alone).
pub struct ConsoleBackups {
    src: Source,
    dir: PathBuf,
}

impl agencyflow_console::BackupTaker for ConsoleBackups {
    fn dir(&self) -> PathBuf {
        self.dir.clone()
    }

    fn take(&self, file: PathBuf) -> agencyflow_console::BackupFuture {
        let src = self.src.clone();
        Box::pin(async move {
            let s = take(&src, &file, false).await?;
            tracing::info!(file = %s.file.display(), bytes = s.bytes, objects = s.objects, "console backup written");
            Ok(agencyflow_console::BackupDone {
                file: s.file.display().to_string(),
                bytes: s.bytes,
                objects: s.objects,
                missing: s.missing,
            })
        })
    }
}

/// The console's backups of `admin_url` (the schema owner's connection), with `serve`'s
/// storage and secrets settings.
pub fn console_backups(
    args: &ServeArgs,
    admin_url: &str,
    embedded: bool,
    jwt_secret: Option<&str>,
    data_dir: &Path,
) -> Result<ConsoleBackups, RunError> {
    Ok(ConsoleBackups {
        src: Source {
            admin_url: admin_url.to_string(),
            embedded,
            storage: storage_source(
                &args.storage.storage_backend,
                args.storage.storage_dir.as_deref(),
                data_dir,
            ),
            secrets: secrets(jwt_secret, args.vault_key.as_deref(), data_dir)?,
        },
        dir: args.backup.dir(data_dir),
    })
}

/// Stops the scheduled backups when dropped.
pub struct Schedule(tokio::task::JoinHandle<()>);

impl Drop for Schedule {
    fn drop(&mut self) {
        self.0.abort();
    }
}

const SCHEDULED_PREFIX: &str = "agencyflow-backup-";
const SCHEDULED_SUFFIX: &str = ".tar.gz";

/// Deletes all but the newest `keep` scheduled archives (their names sort by time), and the
/// leftovers of an interrupted one.
fn prune(dir: &Path, keep: usize) -> Vec<PathBuf> {
    let mut archives: Vec<PathBuf> = Vec::new();
    let mut removed = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(SCHEDULED_PREFIX) && name.ends_with(SCHEDULED_SUFFIX) {
            archives.push(e.path());
        }
    }
    archives.sort();
    let excess = archives.len().saturating_sub(keep);
    for old in archives.into_iter().take(excess) {
        if fs::remove_file(&old).is_ok() {
            removed.push(old);
        }
    }
    removed
}

/// Deletes the archived WAL segments that no kept scheduled backup needs: those older than
/// the oldest kept archive's base backup. Nothing when that archive has no base backup.
fn prune_wal(dir: &Path) -> Result<usize, String> {
    let mut archives: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(SCHEDULED_PREFIX) && n.ends_with(SCHEDULED_SUFFIX)
            })
        })
        .collect();
    archives.sort();
    let Some(oldest) = archives.first() else {
        return Ok(0);
    };
    let manifest =
        archive::read_manifest(oldest).map_err(|e| format!("{}: {e}", oldest.display()))?;
    Ok(match manifest.base_backup {
        Some(b) => wal::cleanup(&dir.join(wal::WAL_DIR), &b.start_wal),
        None => 0,
    })
}

/// Starts `serve`'s scheduled backups, when `--backup-every` is set.
pub fn spawn_schedule(
    args: &ServeArgs,
    database: &Database,
    g: &GlobalArgs,
    data_dir: &Path,
) -> Result<Option<Schedule>, RunError> {
    let s = &args.backup;
    let Some(every) = s.backup_every else {
        return Ok(None);
    };
    let dir = s.dir(data_dir);
    fs::create_dir_all(&dir).map_err(|e| {
        ConfigError::new(
            "AGENCYFLOW_BACKUP_DIR",
            format!("creating {}: {e}", dir.display()),
        )
    })?;
    // 0700, or 0711 when the cluster's user must pass through to `wal/` (wal::prepare).
    if !dir.join(wal::WAL_DIR).is_dir() {
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
    }
    for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!(".{SCHEDULED_PREFIX}")) && name.contains(".partial") {
            let _ = fs::remove_dir_all(e.path()).or_else(|_| fs::remove_file(e.path()));
        }
    }
    let src = Source {
        admin_url: database.admin_url.clone(),
        embedded: g.database_url.as_deref().is_none_or(str::is_empty),
        storage: storage_source(
            &args.storage.storage_backend,
            args.storage.storage_dir.as_deref(),
            data_dir,
        ),
        secrets: secrets(g.jwt_secret.as_deref(), args.vault_key.as_deref(), data_dir)?,
    };
    let keep = s.backup_keep as usize;
    tracing::info!(every_secs = every.as_secs(), keep, dir = %dir.display(), "scheduled backups enabled");
    if let StorageSource::Remote(b) = &src.storage {
        tracing::warn!(backend = %b, "scheduled backups hold the database and secrets, not the storage backend's objects");
    }
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
            let file = dir.join(format!("{SCHEDULED_PREFIX}{stamp}{SCHEDULED_SUFFIX}"));
            match take(&src, &file, false).await {
                Ok(s) => {
                    tracing::info!(
                        file = %s.file.display(),
                        bytes = s.bytes,
                        objects = s.objects,
                        missing = s.missing,
                        ms = s.elapsed.as_millis() as u64,
                        "scheduled backup written"
                    );
                    for old in prune(&dir, keep) {
                        tracing::info!(file = %old.display(), "old scheduled backup removed");
                    }
                    let d = dir.clone();
                    match tokio::task::spawn_blocking(move || prune_wal(&d)).await {
                        Ok(Ok(0)) => {}
                        Ok(Ok(n)) => tracing::info!(
                            files = n,
                            "archived WAL older than the oldest kept backup removed"
                        ),
                        Ok(Err(e)) => tracing::warn!(error = %e, "archived WAL not pruned"),
                        Err(e) => tracing::warn!(error = %e, "archived WAL not pruned"),
                    }
                }
                Err(e) => tracing::error!(error = %e, "scheduled backup failed"),
            }
        }
    });
    Ok(Some(Schedule(task)))
}

/// The pid of a live postmaster on `data_dir`'s cluster.
fn running_postmaster(data_dir: &Path) -> Option<i32> {
    let text = fs::read_to_string(data_dir.join("pg").join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    alive.then_some(pid)
}

const STAGING: &str = ".restore-tmp";

/// What a restore replaces in the data directory.
const RESTORED: [&str; 4] = ["pg", "pg.log", "jwt_secret", "vault_key"];

fn is_empty_dir(dir: &Path, ignore: &[&str]) -> Result<bool, RunError> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(entries
            .flatten()
            .all(|e| ignore.iter().any(|i| e.file_name() == *i))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(RunError::Failed(format!("reading {}: {e}", dir.display()))),
    }
}

/// Moves `from` to `to`, copying when they are on different file systems.
fn move_path(from: &Path, to: &Path) -> std::io::Result<()> {
    match fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) => {
            copy_tree(from, to)?;
            if from.is_dir() {
                fs::remove_dir_all(from)
            } else {
                fs::remove_file(from)
            }
        }
        Err(e) => Err(e),
    }
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    if from.is_dir() {
        fs::create_dir_all(to)?;
        for e in fs::read_dir(from)? {
            let e = e?;
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        }
        Ok(())
    } else {
        fs::copy(from, to).map(drop)
    }
}

/// Moves each `(from, to)` into place; what was at `to` is first renamed beside it and
/// deleted at the end. On an error everything is put back as it was.
fn install(moves: &[(PathBuf, PathBuf)]) -> Result<(), String> {
    let aside_of = |to: &Path| {
        let name = to.file_name().unwrap_or_default().to_string_lossy();
        to.with_file_name(format!(".{name}.replaced-{}", std::process::id()))
    };
    let mut aside: Vec<(&Path, PathBuf)> = Vec::new();
    let mut placed: Vec<&Path> = Vec::new();
    let mut result = Ok(());
    for (_, to) in moves {
        if fs::symlink_metadata(to).is_ok() {
            let a = aside_of(to);
            if let Err(e) = fs::rename(to, &a) {
                result = Err(format!("moving {} aside: {e}", to.display()));
                break;
            }
            aside.push((to, a));
        }
    }
    if result.is_ok() {
        for (from, to) in moves {
            if let Some(parent) = to.parent() {
                let _ = fs::create_dir_all(parent);
            }
            if let Err(e) = move_path(from, to) {
                result = Err(format!("moving into {}: {e}", to.display()));
                break;
            }
            placed.push(to);
        }
    }
    let remove = |p: &Path| {
        let _ = fs::remove_dir_all(p).or_else(|_| fs::remove_file(p));
    };
    match result {
        Ok(()) => {
            for (_, a) in &aside {
                remove(a);
            }
            Ok(())
        }
        Err(e) => {
            for p in placed.iter().rev() {
                remove(p);
            }
            for (to, a) in aside.iter().rev() {
                let _ = fs::rename(a, to);
            }
            Err(e)
        }
    }
}

/// `agencyflow restore FILE`: runs on the main thread, before any runtime (the cluster it
/// starts is tied to this thread). A data directory it had to create is gone again after a
/// failure.
pub fn restore_command(g: &GlobalArgs, a: &RestoreArgs, data_dir: &Path) -> Result<(), RunError> {
    let created = !data_dir.exists();
    let result = restore(g, a, data_dir);
    if result.is_err() && created {
        let _ = fs::remove_dir(data_dir);
    }
    result
}

fn restore(g: &GlobalArgs, a: &RestoreArgs, data_dir: &Path) -> Result<(), RunError> {
    let started = Instant::now();
    let failed = |e: String| RunError::Failed(e);
    let external = g
        .database_url
        .as_deref()
        .filter(|u| !u.is_empty())
        .map(|u| {
            g.migrations_database_url
                .clone()
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| u.to_string())
        });
    if !a.file.is_file() {
        return Err(failed(format!("{}: no such archive", a.file.display())));
    }
    if a.until.is_some() && external.is_some() {
        return Err(ConfigError::new(
            "DATABASE_URL",
            "--until recovers the embedded cluster from its WAL archive; a DATABASE_URL database has its own point-in-time recovery",
        )
        .into());
    }
    let storage_dir = a.storage_dir.clone();
    let storage_outside = storage_dir
        .as_deref()
        .is_some_and(|s| s != data_dir.join("storage"));
    // Refuse before touching anything.
    let mut ignore = vec![STAGING];
    if external.is_some() {
        // The data directory only receives the secrets and the storage files.
        ignore.extend(["run", "pg.log"]);
    }
    if !a.force {
        let not_empty = |d: &Path, setting: &'static str| {
            ConfigError::new(
                setting,
                format!(
                    "{} is not empty: restore into a new or empty directory, or pass --force to replace its database, storage files and secrets",
                    d.display()
                ),
            )
        };
        if !is_empty_dir(data_dir, &ignore)? {
            return Err(not_empty(data_dir, "AGENCYFLOW_DATA_DIR").into());
        }
        if let Some(s) = storage_dir.as_deref().filter(|_| storage_outside) {
            if !is_empty_dir(s, &[])? {
                return Err(not_empty(s, "FILE_STORAGE_BACKEND_PATH").into());
            }
        }
    }
    if let Some(pid) = running_postmaster(data_dir) {
        return Err(failed(format!(
            "PostgreSQL (pid {pid}) is running on {}: stop `agencyflow serve` first",
            data_dir.display()
        )));
    }
    let tools = pg::Tools::find();
    if let Some(url) = &external {
        let conn = pg::Conn::parse(url).map_err(|e| ConfigError::new("DATABASE_URL", e))?;
        let mut cmd = tools.command("psql", &conn);
        cmd.args([
            "-X",
            "-A",
            "-t",
            "-c",
            "select exists (select 1 from pg_namespace where nspname in ('supabase_migrations', 'auth', 'storage', 'vault'))",
        ]);
        let out = pg::run(cmd).map_err(failed)?;
        if String::from_utf8_lossy(&out.stdout).trim() != "f" {
            return Err(ConfigError::new(
                "DATABASE_URL",
                format!(
                    "database {} is not empty (it has agencyflow's schemas): restore into a new, empty database",
                    conn.dbname
                ),
            )
            .into());
        }
    }

    fs::create_dir_all(data_dir)
        .map_err(|e| failed(format!("creating {}: {e}", data_dir.display())))?;
    let data_dir = fs::canonicalize(data_dir)
        .map_err(|e| failed(format!("resolving {}: {e}", data_dir.display())))?;
    if nix::unistd::Uid::effective().is_root() && external.is_none() {
        // The cluster's `postgres` user must reach its folder (as `serve` makes it).
        fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o755))
            .map_err(|e| failed(format!("chmod {}: {e}", data_dir.display())))?;
    }
    let staging = data_dir.join(STAGING);
    if staging.exists() {
        fs::remove_dir_all(&staging)
            .map_err(|e| failed(format!("removing {}: {e}", staging.display())))?;
    }
    fs::create_dir(&staging).map_err(|e| failed(format!("creating {}: {e}", staging.display())))?;
    fs::set_permissions(&staging, fs::Permissions::from_mode(0o700))
        .map_err(|e| failed(format!("chmod {}: {e}", staging.display())))?;
    let cleanup = Cleanup(vec![staging.clone()]);

    // 1. The whole archive, checked against its manifest.
    let unpacked = staging.join("archive");
    fs::create_dir(&unpacked).map_err(|e| failed(e.to_string()))?;
    let len = fs::metadata(&a.file).map_or(0, |m| m.len());
    let bar = bytes_bar(true, "verifying", len);
    let manifest = archive::extract_verified(&a.file, &unpacked, &bar).map_err(|e| {
        bar.finish_and_clear();
        match e {
            ArchiveError::Write(e) => failed(format!("restore failed, nothing was changed: {e}")),
            e => failed(format!("{}: {e}; nothing was restored", a.file.display())),
        }
    })?;
    bar.finish_and_clear();
    let known: Vec<String> = migrate::embedded().into_iter().map(|m| m.version).collect();
    let unknown: Vec<&str> = manifest
        .migrations
        .iter()
        .filter(|m| !known.contains(&m.version))
        .map(|m| m.version.as_str())
        .collect();
    if !unknown.is_empty() {
        eprintln!(
            "warning: the archive (agencyflow {}) has migrations this agencyflow does not know ({}): serve it with that version or newer",
            manifest.agencyflow_version,
            unknown.join(", ")
        );
    }

    // With --until: what point-in-time recovery needs, before anything is made of it.
    let pitr = match a.until {
        None => None,
        Some(until) => Some(pitr_plan(a, &manifest, until).map_err(failed)?),
    };

    // 2. The database: roles first, then the dump, in one transaction each (or, with
    // --until, the base backup and the WAL replayed up to that moment).
    let bar = spinner(true, "restoring the database");
    let roles = fs::read_to_string(unpacked.join(archive::ROLES))
        .map_err(|e| failed(format!("reading the roles: {e}")))?;
    let restore_into = |url: &str| -> Result<(), RunError> {
        let conn = pg::Conn::parse(url).map_err(failed)?;
        let script = staging.join("roles.sql");
        fs::write(
            &script,
            pg::replayable_roles(&roles, &["postgres", conn.user.as_str()]),
        )
        .map_err(|e| failed(e.to_string()))?;
        let mut cmd = tools.command("psql", &conn);
        cmd.args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "--single-transaction",
            "-f",
        ])
        .arg(&script);
        pg::run(cmd).map_err(|e| failed(format!("restoring the roles: {e}")))?;
        let mut cmd = tools.command("pg_restore", &conn);
        cmd.args([
            "--exit-on-error",
            "--single-transaction",
            "-d",
            &conn.dbname,
        ])
        .arg(unpacked.join(archive::DUMP));
        pg::run(cmd).map_err(|e| failed(format!("restoring the database: {e}")))?;
        Ok(())
    };
    let mut reached = None;
    let restored = match (&external, &pitr) {
        (_, Some((wal, until))) => recover_to(&staging, &unpacked.join(archive::BASE), wal, *until)
            .map(|r| reached = Some(r)),
        (Some(url), None) => restore_into(url),
        (None, None) => {
            let mut cluster = EmbeddedCluster::start(&ClusterOptions {
                data_dir: staging.clone(),
                bin_dir: None,
                port: None,
                ephemeral: false,
                settings: Vec::new(),
            })
            .map_err(|e| failed(e.to_string()))?;
            let r = restore_into(&cluster.url("postgres", "postgres"));
            cluster.stop();
            r
        }
    };
    bar.finish_and_clear();
    restored?;

    // 3. Secrets and storage files beside the cluster, then everything into place.
    for s in &manifest.secrets {
        let from = unpacked.join(&s.member);
        let value = fs::read(&from).map_err(|e| failed(format!("{}: {e}", s.member)))?;
        if !matches!(s.name.as_str(), "jwt_secret" | "vault_key") {
            continue;
        }
        write_private(&staging.join(&s.name), &value)
            .map_err(|e| failed(format!("writing {}: {e}", s.name)))?;
    }
    let staged_storage = unpacked.join(archive::STORAGE_DIR);
    fs::create_dir_all(&staged_storage).map_err(|e| failed(e.to_string()))?;
    let storage_target = storage_dir.unwrap_or_else(|| data_dir.join("storage"));
    let mut moves: Vec<(PathBuf, PathBuf)> = RESTORED
        .iter()
        .map(|name| (staging.join(name), data_dir.join(name)))
        .filter(|(from, _)| from.exists())
        .collect();
    moves.push((staged_storage, storage_target));
    install(&moves).map_err(|e| failed(format!("restore failed, nothing was changed: {e}")))?;
    sync_dir(&data_dir);
    drop(cleanup);

    for (name, configured, setting) in [
        ("jwt_secret", g.jwt_secret.as_deref(), "JWT_SECRET"),
        (
            "vault_key",
            std::env::var("VAULT_ENC_KEY").ok().as_deref(),
            "VAULT_ENC_KEY",
        ),
    ] {
        let restored = fs::read_to_string(data_dir.join(name)).unwrap_or_default();
        if configured.is_some_and(|c| !c.is_empty() && c != restored.trim()) {
            eprintln!("warning: {setting} is set and differs from the restored {name}: the configured one wins when serving");
        }
    }
    println!(
        "restored {} (taken {} by agencyflow {}) into {}: the database ({} migrations), {} storage object(s), secrets {} ({:.1}s)",
        a.file.display(),
        manifest.created_at,
        manifest.agencyflow_version,
        match &external {
            Some(_) => "DATABASE_URL".to_string(),
            None => data_dir.display().to_string(),
        },
        manifest.migrations.len(),
        manifest.storage.objects,
        manifest
            .secrets
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        started.elapsed().as_secs_f64()
    );
    if let Some(r) = reached {
        println!("point-in-time recovery: {r}");
    }
    Ok(())
}

/// Checks that the archive and the WAL archive can bring the database to `until`: a base
/// backup that ended by then, and archived WAL. Returns the WAL folder.
fn pitr_plan(
    a: &RestoreArgs,
    manifest: &Manifest,
    until: chrono::DateTime<chrono::Utc>,
) -> Result<(PathBuf, chrono::DateTime<chrono::Utc>), String> {
    let file = a.file.display();
    let base = manifest.base_backup.as_ref().ok_or_else(|| {
        format!(
            "{file} has no base backup (taken while WAL archiving was off): --until needs a backup taken by `serve --backup-every` or while it runs; nothing was restored"
        )
    })?;
    let ended = chrono::DateTime::parse_from_rfc3339(&base.ended_at)
        .map_err(|e| format!("{file}: base backup end `{}`: {e}", base.ended_at))?
        .with_timezone(&chrono::Utc);
    if until < ended {
        return Err(format!(
            "--until {} is before the end of this archive's base backup ({}): recover from an older archive, or to a later moment; nothing was restored",
            until.format("%Y-%m-%d %H:%M:%S%.f+00"),
            ended.format("%Y-%m-%d %H:%M:%S%.f+00")
        ));
    }
    let wal = wal::locate(a.wal_dir.as_deref(), &a.file, &base.wal_archive);
    if wal::segments(&wal).is_empty() {
        return Err(format!(
            "no WAL archive in {} (no archived segment): --until replays the WAL archived beside the backups (pass --wal-dir); nothing was restored",
            wal.display()
        ));
    }
    let wal = fs::canonicalize(&wal).map_err(|e| format!("{}: {e}", wal.display()))?;
    Ok((wal, until))
}

/// Point-in-time recovery into `<staging>/pg`: the base backup unpacked, then PostgreSQL
/// replays its WAL and the archive's up to `until` (`recovery_target_time`), is promoted and
/// stopped. Returns PostgreSQL's line on where it stopped.
fn recover_to(
    staging: &Path,
    base_tar: &Path,
    wal: &Path,
    until: chrono::DateTime<chrono::Utc>,
) -> Result<String, RunError> {
    let failed = |e: String| {
        RunError::Failed(format!(
            "point-in-time recovery failed, nothing was restored: {e}"
        ))
    };
    let pgdata = staging.join("pg");
    fs::create_dir(&pgdata).map_err(|e| failed(format!("creating {}: {e}", pgdata.display())))?;
    fs::set_permissions(&pgdata, fs::Permissions::from_mode(0o700))
        .map_err(|e| failed(e.to_string()))?;
    let tar_file =
        fs::File::open(base_tar).map_err(|e| failed(format!("{}: {e}", base_tar.display())))?;
    tar::Archive::new(std::io::BufReader::new(tar_file))
        .unpack(&pgdata)
        .map_err(|e| failed(format!("unpacking the base backup: {e}")))?;
    fs::write(pgdata.join("recovery.signal"), b"").map_err(|e| failed(e.to_string()))?;
    agencyflow_db::cluster::chown_to_cluster_user(&pgdata).map_err(|e| failed(e.to_string()))?;
    let target = until.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string();
    let log = staging.join("pg.log");
    let setting = |k: &str, v: String| (k.to_string(), v);
    // Ready (postmaster.pid says so) only once promoted: recovery reached the target.
    let mut cluster = EmbeddedCluster::start(&ClusterOptions {
        data_dir: staging.to_path_buf(),
        bin_dir: None,
        port: None,
        ephemeral: false,
        settings: vec![
            setting("restore_command", wal::restore_command(wal)),
            setting("recovery_target_time", target.clone()),
            setting("recovery_target_action", "promote".into()),
            setting("archive_mode", "off".into()),
            // No read-only phase: "ready" in postmaster.pid then means promoted.
            setting("hot_standby", "off".into()),
        ],
    })
    .map_err(|e| {
        let e = e.to_string();
        if e.contains("before configured recovery target") {
            failed(format!(
                "the WAL archive in {} ends before {target} (the newest changes are archived within the archive timeout: wait, or recover to an earlier moment)",
                wal.display()
            ))
        } else {
            failed(e)
        }
    })?;
    cluster.stop();
    // Where it stopped, in PostgreSQL's words.
    let text = fs::read_to_string(&log).unwrap_or_default();
    let said = |what: &str| {
        text.lines().rev().find(|l| l.contains(what)).map(|l| {
            l.split_once("LOG:")
                .map_or(l, |(_, m)| m)
                .trim()
                .to_string()
        })
    };
    let line = said("recovery stopping")
        .or_else(|| said("last completed transaction"))
        .unwrap_or_else(|| format!("replayed to {target}"));
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_interval("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_interval("7d").unwrap(), Duration::from_secs(604_800));
        assert_eq!(parse_interval("45").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_interval("2s").unwrap(), Duration::from_secs(2));
        for bad in ["", "0s", "h", "24x", "-1h", "1.5h"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn install_replaces_or_puts_everything_back() {
        let d = tempfile::tempdir().unwrap();
        let p = |n: &str| d.path().join(n);
        fs::create_dir_all(p("new/storage/b")).unwrap();
        fs::write(p("new/storage/b/f"), b"new file").unwrap();
        fs::write(p("new/jwt_secret"), b"new secret").unwrap();
        fs::create_dir_all(p("dir/storage")).unwrap();
        fs::write(p("dir/storage/old"), b"old file").unwrap();
        fs::write(p("dir/jwt_secret"), b"old secret").unwrap();
        fs::write(p("dir/keep"), b"mine").unwrap();
        // The second source is missing: the first move is undone, the old files come back.
        let failing = vec![
            (p("new/jwt_secret"), p("dir/jwt_secret")),
            (p("new/nothing"), p("dir/storage")),
        ];
        assert!(install(&failing).is_err());
        assert_eq!(fs::read(p("dir/jwt_secret")).unwrap(), b"old secret");
        assert_eq!(fs::read(p("dir/storage/old")).unwrap(), b"old file");
        assert_eq!(
            fs::read_dir(p("dir")).unwrap().count(),
            3,
            "nothing left aside"
        );
        fs::write(p("new/jwt_secret"), b"new secret").unwrap();
        let moves = vec![
            (p("new/jwt_secret"), p("dir/jwt_secret")),
            (p("new/storage"), p("dir/storage")),
        ];
        install(&moves).unwrap();
        assert_eq!(fs::read(p("dir/jwt_secret")).unwrap(), b"new secret");
        assert_eq!(fs::read(p("dir/storage/b/f")).unwrap(), b"new file");
        assert!(!p("dir/storage/old").exists());
        assert_eq!(fs::read(p("dir/keep")).unwrap(), b"mine");
        assert_eq!(
            fs::read_dir(p("dir")).unwrap().count(),
            3,
            "old ones deleted"
        );
    }

    #[test]
    fn prune_keeps_the_newest() {
        let d = tempfile::tempdir().unwrap();
        for stamp in [
            "20260101T000000.000Z",
            "20260102T000000.000Z",
            "20260103T000000.000Z",
        ] {
            fs::write(
                d.path()
                    .join(format!("{SCHEDULED_PREFIX}{stamp}{SCHEDULED_SUFFIX}")),
                b"x",
            )
            .unwrap();
        }
        fs::write(d.path().join("mine.tar.gz"), b"x").unwrap();
        let removed = prune(d.path(), 2);
        assert_eq!(removed.len(), 1);
        assert!(removed[0].to_string_lossy().contains("20260101"));
        assert!(
            d.path().join("mine.tar.gz").exists(),
            "other files are kept"
        );
        assert_eq!(prune(d.path(), 2).len(), 0);
    }
}
