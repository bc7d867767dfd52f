//! The db layer's one error type. It keeps PostgreSQL's SQLSTATE, message, detail and hint
//! so the HTTP layers can map them (PostgREST's table) without string matching.
use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// PostgreSQL answered with an error.
    #[error("{0}")]
    Postgres(PgError),
    /// The database could not be reached (connect, pool exhausted, connection lost).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else that went wrong on our side of the wire.
    #[error("database error: {0}")]
    Other(String),
}

/// A PostgreSQL error as the server reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)?;
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

/// How every message of a checkout refused while the supervised cluster is down begins.
pub(crate) const CLUSTER_DOWN: &str = "the embedded PostgreSQL ";

impl DbError {
    /// The supervisor's word on why the database is unavailable ("the embedded PostgreSQL
    /// is restarting"), fit to show callers; None for every other error, whose text stays
    /// in the logs.
    pub fn cluster_state(&self) -> Option<&str> {
        match self {
            DbError::Unavailable(m) if m.starts_with(CLUSTER_DOWN) => Some(m),
            _ => None,
        }
    }

    /// A PostgreSQL error, except the ones that only say the connection is gone or cannot
    /// be had now: class 08 (connection exception), 57P01/57P02 (the backend was
    /// terminated: shutdown, or the postmaster died) and 57P03 (starting up, in recovery).
    /// Those are [`DbError::Unavailable`], so every surface answers 503.
    pub fn from_pg(e: PgError) -> Self {
        if e.code.starts_with("08") || matches!(e.code.as_str(), "57P01" | "57P02" | "57P03") {
            return DbError::Unavailable(e.to_string());
        }
        DbError::Postgres(e)
    }

    /// The SQLSTATE when PostgreSQL produced the error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            DbError::Postgres(e) => Some(&e.code),
            _ => None,
        }
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            return DbError::from_pg(PgError {
                code: db.code().code().to_string(),
                message: db.message().to_string(),
                detail: db.detail().map(str::to_string),
                hint: db.hint().map(str::to_string),
            });
        }
        if e.is_closed() || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>())
        {
            return DbError::Unavailable(e.to_string());
        }
        DbError::Other(e.to_string())
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        // Whatever stopped the pool from handing out a connection (a refused login 28P01, a
        // missing database 3D000, too many connections 53300, a network error) means the
        // request never reached a statement: the database is unavailable to it (503), not a
        // failed statement (which would become a 500 or a 4xx on the surfaces).
        DbError::Unavailable(match e {
            deadpool_postgres::PoolError::Backend(b) => format!("cannot connect: {b}"),
            other => other.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(code: &str) -> PgError {
        PgError {
            code: code.into(),
            message: "m".into(),
            detail: None,
            hint: None,
        }
    }

    #[test]
    fn lost_connections_are_unavailable_other_errors_stay_postgres() {
        for code in ["08006", "08001", "57P01", "57P02", "57P03"] {
            assert!(
                matches!(DbError::from_pg(pg(code)), DbError::Unavailable(_)),
                "{code}"
            );
        }
        for code in ["57014", "42501", "23505", "53300"] {
            assert_eq!(DbError::from_pg(pg(code)).sqlstate(), Some(code));
        }
    }
}
