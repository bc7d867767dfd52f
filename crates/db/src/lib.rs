//! PostgreSQL for agencyflow: the embedded cluster, the migrations runner, the pool and the
//! per-request claims transaction. The only crate that talks to the database driver.
pub mod cluster;
pub mod error;
pub mod listen;
pub mod migrate;
pub mod pipe;
pub mod pool;
pub mod replication;
pub mod supervise;
pub mod tls;

pub use cluster::{ClusterError, ClusterOptions, EmbeddedCluster};
pub use error::{DbError, PgError};
pub use pool::{ClaimsTxn, Db, PoolOptions, TxSettings};
pub use supervise::{
    ClusterHealth, DbState, RestartEvent, RestartPolicy, SupervisedCluster, RESTART_HISTORY,
};
pub use tokio_postgres;
pub use tokio_postgres::types::Type;

/// Connects one plain client (no pool) and drives its connection in the background.
pub async fn connect_one(url: &str) -> Result<tokio_postgres::Client, DbError> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "connection closed");
        }
    });
    Ok(client)
}

/// `s` as a double-quoted SQL identifier (for names read from the catalog or checked against
/// it; values always travel as bind parameters).
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `s` as a single-quoted SQL literal, for the few places no bind parameter can go (the
/// replication protocol's options, a PREPARE's text).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
