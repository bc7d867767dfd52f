//! The migrations runner: `migrations/YYYYMMDDHHMMSS_name.sql`, applied in order, each in its
//! own transaction, recorded in `supabase_migrations.schema_migrations` (the Supabase CLI's
//! shape) plus a SHA-256 checksum, so an edited, already-applied file is an error.
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::DbError;

/// Serialises concurrent runners (two servers starting at once) on one database.
const LOCK_KEY: i64 = 0x6167_656e_6379_666c; // "agencyfl"

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("migration file name `{0}` is not `YYYYMMDDHHMMSS_name.sql`")]
    BadName(String),
    #[error("migration {file} was changed after it was applied (checksum {applied} in the database, {current} on disk); write a new migration instead of editing an applied one")]
    Changed {
        file: String,
        applied: String,
        current: String,
    },
    #[error("migration {file} failed and was rolled back: {source}")]
    Failed { file: String, source: DbError },
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for MigrateError {
    fn from(e: tokio_postgres::Error) -> Self {
        MigrateError::Db(e.into())
    }
}

#[derive(Debug, Clone)]
pub struct Migration {
    pub version: String,
    pub name: String,
    pub sql: String,
    pub checksum: String,
}

impl Migration {
    pub fn new(file_name: &str, sql: String) -> Result<Self, MigrateError> {
        let stem = file_name
            .strip_suffix(".sql")
            .ok_or_else(|| MigrateError::BadName(file_name.into()))?;
        let (version, name) = stem
            .split_once('_')
            .ok_or_else(|| MigrateError::BadName(file_name.into()))?;
        if version.len() != 14 || !version.bytes().all(|b| b.is_ascii_digit()) || name.is_empty() {
            return Err(MigrateError::BadName(file_name.into()));
        }
        let checksum = hex::encode(Sha256::digest(sql.as_bytes()));
        Ok(Migration {
            version: version.into(),
            name: name.into(),
            sql,
            checksum,
        })
    }

    pub fn file_name(&self) -> String {
        format!("{}_{}.sql", self.version, self.name)
    }
}

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_migrations.rs"));
}

/// The migrations compiled into the binary.
pub fn embedded() -> Vec<Migration> {
    embedded::EMBEDDED
        .iter()
        .map(|(f, sql)| {
            Migration::new(f, sql.to_string())
                .expect("embedded migration names are checked at build")
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Applied,
    Pending,
}

const LEDGER: &str = "
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
  version text primary key,
  statements text[],
  name text
);
alter table supabase_migrations.schema_migrations add column if not exists checksum text;
alter table supabase_migrations.schema_migrations add column if not exists applied_at timestamptz default now();
";

async fn applied(client: &Client) -> Result<Vec<(String, Option<String>)>, MigrateError> {
    let exists: bool = client
        .query_one(
            "select to_regclass('supabase_migrations.schema_migrations') is not null",
            &[],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "select version, checksum from supabase_migrations.schema_migrations order by version",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Every migration with its state; fails when an applied file has changed.
pub async fn status(
    client: &Client,
    migrations: &[Migration],
) -> Result<Vec<(Migration, State)>, MigrateError> {
    let done = applied(client).await?;
    let mut out = Vec::with_capacity(migrations.len());
    for m in migrations {
        match done.iter().find(|(v, _)| *v == m.version) {
            Some((_, Some(sum))) if *sum != m.checksum => {
                return Err(MigrateError::Changed {
                    file: m.file_name(),
                    applied: sum.clone(),
                    current: m.checksum.clone(),
                })
            }
            Some(_) => out.push((m.clone(), State::Applied)),
            None => out.push((m.clone(), State::Pending)),
        }
    }
    Ok(out)
}

/// Applies every pending migration in order, each in its own transaction, and returns the
/// ones applied. A failing migration is rolled back and not recorded; later ones are not run.
pub async fn apply(
    client: &mut Client,
    migrations: &[Migration],
    mut progress: impl FnMut(&Migration),
) -> Result<Vec<Migration>, MigrateError> {
    client
        .execute("select pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let result = apply_locked(client, migrations, &mut progress).await;
    let _ = client
        .execute("select pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    result
}

async fn apply_locked(
    client: &mut Client,
    migrations: &[Migration],
    progress: &mut impl FnMut(&Migration),
) -> Result<Vec<Migration>, MigrateError> {
    client.batch_execute(LEDGER).await?;
    let pending: Vec<Migration> = status(client, migrations)
        .await?
        .into_iter()
        .filter(|(_, s)| *s == State::Pending)
        .map(|(m, _)| m)
        .collect();
    for m in &pending {
        progress(m);
        let tx = client.transaction().await?;
        let run = async {
            tx.batch_execute("set local search_path = public, extensions")
                .await?;
            tx.batch_execute(&m.sql).await?;
            tx.execute(
                "insert into supabase_migrations.schema_migrations (version, name, statements, checksum) values ($1, $2, array[$3], $4)",
                &[&m.version, &m.name, &m.sql, &m.checksum],
            )
            .await?;
            Ok::<(), tokio_postgres::Error>(())
        };
        match run.await {
            Ok(()) => tx.commit().await.map_err(|e| MigrateError::Failed {
                file: m.file_name(),
                source: e.into(),
            })?,
            Err(e) => {
                let _ = tx.rollback().await;
                return Err(MigrateError::Failed {
                    file: m.file_name(),
                    source: e.into(),
                });
            }
        }
    }
    if !pending.is_empty() {
        // The REST schema cache listens on this channel, as PostgREST does.
        client
            .batch_execute("notify pgrst, 'reload schema'")
            .await?;
    }
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(Migration::new("20260101000000_platform.sql", String::new()).is_ok());
        for bad in [
            "2026_platform.sql",
            "20260101000000.sql",
            "20260101000000_x.txt",
            "2026010100000x_x.sql",
            "20260101000000_.sql",
        ] {
            assert!(Migration::new(bad, String::new()).is_err(), "{bad}");
        }
    }

    #[test]
    fn embedded_are_sorted_and_unique() {
        let m = embedded();
        assert!(!m.is_empty());
        assert!(m.windows(2).all(|w| w[0].version < w[1].version));
    }

    #[test]
    fn checksum_tracks_content() {
        let a = Migration::new("20260101000000_a.sql", "select 1".into()).unwrap();
        let b = Migration::new("20260101000000_a.sql", "select 2".into()).unwrap();
        assert_ne!(a.checksum, b.checksum);
    }
}
