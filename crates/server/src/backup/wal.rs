//! Continuous WAL archiving, for point-in-time recovery of the embedded cluster.
//!
//! With scheduled backups on (`serve --backup-every`), every postmaster of the embedded
//! cluster runs with `archive_mode=on` and an `archive_command` that copies each completed
//! WAL segment into `<backup-dir>/wal/` gzip-compressed, durably: written to a temporary
//! name, fsynced, renamed, the folder fsynced. An existing file is never overwritten: when
//! PostgreSQL archives a segment again (after a crash between the copy and its
//! bookkeeping), identical content counts as archived and different content fails the
//! command, so PostgreSQL retries and logs it. `archive_timeout` bounds how old the newest
//! archived change can be on a quiet system.
//!
//! Backups taken while the cluster archives also hold a physical base backup
//! (`pg_basebackup`), and `restore --until` replays the archive on it (see `restore`).
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The archive's folder inside the backup directory.
pub const WAL_DIR: &str = "wal";
/// A custom setting the postmaster carries, naming its WAL archive (so `backup` can find it).
pub const ARCHIVE_SETTING: &str = "agencyflow.wal_archive";
/// The suffix of an archived (gzip-compressed) WAL file.
const SUFFIX: &str = ".gz";

/// A string for `/bin/sh`, single-quoted; `%` doubled for PostgreSQL's `%f`/`%p`
/// substitution.
fn sh_path(p: &Path) -> String {
    format!(
        "'{}'",
        p.to_string_lossy()
            .replace('\'', r"'\''")
            .replace('%', "%%")
    )
}

/// Copies `%p` to `<wal>/%f.gz` durably; an existing file must hold the same WAL.
fn archive_command(wal: &Path) -> String {
    let w = sh_path(wal);
    format!(
        "f={w}/%f{SUFFIX}; t={w}/.%f{SUFFIX}.tmp; \
         if [ -f \"$f\" ]; then gzip -dc \"$f\" | cmp -s - %p; \
         else gzip -1 -c %p > \"$t\" && sync \"$t\" && mv \"$t\" \"$f\" && sync {w}; fi"
    )
}

/// Reads `<wal>/%f.gz` back (a missing file is the normal end of the archive).
pub fn restore_command(wal: &Path) -> String {
    let w = sh_path(wal);
    format!("[ -f {w}/%f{SUFFIX} ] && gzip -dc {w}/%f{SUFFIX} > %p")
}

/// Creates `<backup-dir>/wal` for the cluster's user, and the settings that archive into it.
pub fn prepare(backup_dir: &Path, timeout_secs: u64) -> Result<Vec<(String, String)>, String> {
    let wal = backup_dir.join(WAL_DIR);
    fs::create_dir_all(&wal).map_err(|e| format!("creating {}: {e}", wal.display()))?;
    let backup_dir = fs::canonicalize(backup_dir)
        .map_err(|e| format!("resolving {}: {e}", backup_dir.display()))?;
    let wal = backup_dir.join(WAL_DIR);
    // The archive holds every change: only its writer reads it. As root, the cluster runs as
    // `postgres`, which must pass through the (root's) backup directory to reach it.
    let traverse = if nix::unistd::Uid::effective().is_root() {
        0o711
    } else {
        0o700
    };
    fs::set_permissions(&backup_dir, fs::Permissions::from_mode(traverse))
        .map_err(|e| format!("chmod {}: {e}", backup_dir.display()))?;
    fs::set_permissions(&wal, fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("chmod {}: {e}", wal.display()))?;
    agencyflow_db::cluster::chown_to_cluster_user(&wal).map_err(|e| e.to_string())?;
    Ok(vec![
        ("archive_mode".into(), "on".into()),
        ("archive_command".into(), archive_command(&wal)),
        ("archive_timeout".into(), timeout_secs.to_string()),
        (ARCHIVE_SETTING.into(), wal.to_string_lossy().into_owned()),
    ])
}

/// The archived WAL segment files (`<timeline><log><seg>.gz`), sorted.
pub fn segments(wal: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(wal)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_segment(n))
        .collect();
    names.sort();
    names
}

fn is_segment(name: &str) -> bool {
    name.strip_suffix(SUFFIX)
        .is_some_and(|s| s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Deletes the archived segments older than `oldest_needed` (a segment name: the first one
/// the oldest kept base backup needs), on every timeline, as `pg_archivecleanup` does.
/// Timeline history files are kept. Returns how many files were removed.
pub fn cleanup(wal: &Path, oldest_needed: &str) -> usize {
    let Some(needed) = oldest_needed.get(8..24) else {
        return 0;
    };
    let mut removed = 0;
    for name in segments(wal) {
        if &name[8..24] < needed && fs::remove_file(wal.join(&name)).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Where `restore --until` reads the WAL: `--wal-dir`, else `wal/` beside the archive, else
/// where the backup's server archived it.
pub fn locate(given: Option<&Path>, archive: &Path, recorded: &str) -> PathBuf {
    if let Some(g) = given {
        return g.to_path_buf();
    }
    let beside = archive
        .parent()
        .map(|p| p.join(WAL_DIR))
        .filter(|p| p.is_dir());
    beside.unwrap_or_else(|| PathBuf::from(recorded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn sh(cmd: &str, f: &str, p: &str, cwd: &Path) -> bool {
        let cmd = cmd.replace("%f", f).replace("%p", p).replace("%%", "%");
        Command::new("/bin/sh")
            .args(["-c", &cmd])
            .current_dir(cwd)
            .status()
            .unwrap()
            .success()
    }

    #[test]
    fn archive_copies_once_keeps_identical_refuses_different_and_restores() {
        let d = tempfile::tempdir().unwrap();
        let wal = d.path().join("it's 100% wal");
        fs::create_dir(&wal).unwrap();
        let seg = "000000010000000000000003";
        fs::create_dir(d.path().join("pg_wal")).unwrap();
        fs::write(d.path().join("pg_wal").join(seg), b"segment bytes").unwrap();
        let archive = archive_command(&wal);
        let p = format!("pg_wal/{seg}");
        assert!(sh(&archive, seg, &p, d.path()));
        assert_eq!(segments(&wal), vec![format!("{seg}.gz")]);
        // Again with the same bytes: archived already.
        assert!(sh(&archive, seg, &p, d.path()));
        // Different bytes under the same name: refused, the archived file kept.
        fs::write(d.path().join("pg_wal").join(seg), b"other bytes").unwrap();
        assert!(!sh(&archive, seg, &p, d.path()));
        assert!(sh(&restore_command(&wal), seg, "restored", d.path()));
        assert_eq!(
            fs::read(d.path().join("restored")).unwrap(),
            b"segment bytes"
        );
        assert!(!sh(
            &restore_command(&wal),
            "000000010000000000000004",
            "x",
            d.path()
        ));
        assert_eq!(fs::read_dir(&wal).unwrap().count(), 1, "no temporary file");
    }

    #[test]
    fn cleanup_removes_older_segments_on_every_timeline() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            "000000010000000000000001.gz",
            "000000010000000000000002.gz",
            "000000020000000000000003.gz",
            "000000020000000000000004.gz",
            "00000002.history.gz",
        ] {
            fs::write(d.path().join(n), b"").unwrap();
        }
        assert_eq!(cleanup(d.path(), "000000020000000000000003"), 2);
        let mut left: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "00000002.history.gz",
                "000000020000000000000003.gz",
                "000000020000000000000004.gz"
            ]
        );
    }
}
