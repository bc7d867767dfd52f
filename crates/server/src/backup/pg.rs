//! The PostgreSQL client programs behind backups: pg_dump, pg_dumpall, pg_restore, psql.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use agencyflow_db::tokio_postgres::config::{Host, SslMode};
use agencyflow_db::tokio_postgres::Config;

/// Where the client programs are: `pg_config --bindir`, the newest
/// `/usr/lib/postgresql/*/bin`, or the PATH.
pub struct Tools {
    bin: Option<PathBuf>,
}

impl Tools {
    pub fn find() -> Tools {
        let has = |d: &Path| d.join("pg_dump").is_file() && d.join("pg_restore").is_file();
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
            let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if out.status.success() && has(&d) {
                return Tools { bin: Some(d) };
            }
        }
        let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                Some((v, e.path().join("bin")))
            })
            .filter(|(_, d)| has(d))
            .collect();
        found.sort();
        Tools {
            bin: found.pop().map(|(_, d)| d),
        }
    }

    /// A command for `program`, connected by `conn` (environment, never arguments, so no
    /// password shows in the process list).
    pub fn command(&self, program: &str, conn: &Conn) -> Command {
        let mut cmd = Command::new(match &self.bin {
            Some(d) => d.join(program),
            None => PathBuf::from(program),
        });
        for k in [
            "PGHOST",
            "PGHOSTADDR",
            "PGPORT",
            "PGUSER",
            "PGPASSWORD",
            "PGDATABASE",
            "PGOPTIONS",
            "PGSSLMODE",
            "PGSERVICE",
            "PGCONNECT_TIMEOUT",
            "PGAPPNAME",
        ] {
            cmd.env_remove(k);
        }
        cmd.envs(conn.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("LC_ALL", "C")
            .arg("--no-password");
        cmd
    }
}

/// A connection string as libpq's environment variables.
pub struct Conn {
    env: Vec<(&'static str, String)>,
    pub dbname: String,
    pub user: String,
}

impl Conn {
    pub fn parse(url: &str) -> Result<Conn, String> {
        let c: Config = url
            .parse()
            .map_err(|e| format!("not a valid PostgreSQL connection string: {e}"))?;
        let mut env = Vec::new();
        let join = |v: Vec<String>| v.join(",");
        let hosts: Vec<String> = c
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(h) => h.clone(),
                Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        if !hosts.is_empty() {
            env.push(("PGHOST", join(hosts)));
        }
        let addrs: Vec<String> = c.get_hostaddrs().iter().map(|a| a.to_string()).collect();
        if !addrs.is_empty() {
            env.push(("PGHOSTADDR", join(addrs)));
        }
        let ports: Vec<String> = c.get_ports().iter().map(|p| p.to_string()).collect();
        if !ports.is_empty() {
            env.push(("PGPORT", join(ports)));
        }
        let user = c.get_user().unwrap_or("postgres").to_string();
        env.push(("PGUSER", user.clone()));
        if let Some(p) = c.get_password() {
            env.push(("PGPASSWORD", String::from_utf8_lossy(p).into_owned()));
        }
        let dbname = c.get_dbname().unwrap_or(&user).to_string();
        env.push(("PGDATABASE", dbname.clone()));
        if let Some(o) = c.get_options() {
            env.push(("PGOPTIONS", o.to_string()));
        }
        if let Some(t) = c.get_connect_timeout() {
            env.push(("PGCONNECT_TIMEOUT", t.as_secs().max(1).to_string()));
        }
        env.push((
            "PGSSLMODE",
            match c.get_ssl_mode() {
                SslMode::Disable => "disable",
                SslMode::Require => "require",
                _ => "prefer",
            }
            .to_string(),
        ));
        Ok(Conn { env, dbname, user })
    }
}

fn program(cmd: &Command) -> String {
    Path::new(cmd.get_program())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The outcome of a finished program: its error output's last lines on failure.
pub fn check(name: &str, out: std::io::Result<Output>) -> Result<Output, String> {
    let out = out.map_err(|e| format!("cannot run {name}: {e}"))?;
    if out.status.success() {
        return Ok(out);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    Err(format!(
        "{name} failed ({}): {}",
        out.status,
        lines[lines.len().saturating_sub(3)..].join(" / ")
    ))
}

/// Runs a program to completion (blocking).
pub fn run(mut cmd: Command) -> Result<Output, String> {
    let name = program(&cmd);
    check(&name, cmd.stdin(std::process::Stdio::null()).output())
}

/// Runs a program to completion without blocking the runtime; killed if the future is dropped.
pub async fn run_async(cmd: Command) -> Result<Output, String> {
    let name = program(&cmd);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    check(&name, cmd.output().await)
}

/// `pg_dumpall --roles-only` made safe to replay on a cluster where some roles exist
/// already (a fresh cluster's bootstrap superuser, or an external server's platform roles):
/// each `CREATE ROLE` tolerates an existing role, and the roles in `keep` (the connecting
/// one, `postgres`) are neither created nor altered.
pub fn replayable_roles(script: &str, keep: &[&str]) -> String {
    let quoted = |name: &str| {
        if name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            name.to_string()
        } else {
            format!("\"{}\"", name.replace('"', "\"\""))
        }
    };
    let kept: Vec<String> = keep.iter().map(|k| quoted(k)).collect();
    let mut out = String::with_capacity(script.len() + 1024);
    for line in script.lines() {
        if let Some(role) = line
            .strip_prefix("CREATE ROLE ")
            .and_then(|r| r.strip_suffix(';'))
        {
            if kept.iter().any(|k| k == role) {
                continue;
            }
            out.push_str(&format!(
                "DO $agencyflow$ BEGIN CREATE ROLE {role}; EXCEPTION WHEN duplicate_object THEN NULL; END $agencyflow$;\n"
            ));
            continue;
        }
        if kept
            .iter()
            .any(|k| line.starts_with(&format!("ALTER ROLE {k} WITH ")))
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_replay_tolerates_existing_roles_and_keeps_the_superuser() {
        let script = "SET x = y;\nCREATE ROLE anon;\nALTER ROLE anon WITH NOLOGIN;\nCREATE ROLE postgres;\nALTER ROLE postgres WITH SUPERUSER LOGIN;\nCREATE ROLE \"Odd\";\nGRANT anon TO authenticator GRANTED BY postgres;\n";
        let out = replayable_roles(script, &["postgres"]);
        assert!(out.contains("BEGIN CREATE ROLE anon; EXCEPTION WHEN duplicate_object"));
        assert!(out.contains("ALTER ROLE anon WITH NOLOGIN;"));
        assert!(out.contains("BEGIN CREATE ROLE \"Odd\";"));
        assert!(!out.contains("postgres WITH SUPERUSER"));
        assert!(!out.contains("CREATE ROLE postgres"));
        assert!(out.contains("GRANT anon TO authenticator GRANTED BY postgres;"));
    }

    #[test]
    fn connection_strings_become_libpq_environment() {
        let c = Conn::parse("host=/tmp/run port=5433 user=postgres dbname=app").unwrap();
        assert_eq!(c.dbname, "app");
        assert!(c.env.contains(&("PGHOST", "/tmp/run".to_string())));
        assert!(c.env.contains(&("PGPORT", "5433".to_string())));
        let c = Conn::parse("postgres://u:p%40ss@db.example:6543/prod?sslmode=require").unwrap();
        assert!(c.env.contains(&("PGPASSWORD", "p@ss".to_string())));
        assert!(c.env.contains(&("PGSSLMODE", "require".to_string())));
        assert_eq!((c.user.as_str(), c.dbname.as_str()), ("u", "prod"));
        assert!(Conn::parse("postgres://x:y@h:notaport/db").is_err());
    }
}
