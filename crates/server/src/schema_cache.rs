//! The REST schema cache: loaded once at start, swapped whole on `NOTIFY pgrst` (as
//! PostgREST does; Supabase fires it from DDL event triggers, our runner after migrating).
//! Requests read an `Arc` snapshot and never query the catalog.
use std::sync::{Arc, RwLock};
use std::time::Duration;

use agencyflow_db::Db;
use agencyflow_rest::SchemaCache;

/// The current cache; `None` until the first load succeeded (requests then get PGRST002).
#[derive(Clone, Default)]
pub struct SharedSchemaCache(Arc<RwLock<Option<Arc<SchemaCache>>>>);

impl SharedSchemaCache {
    pub fn get(&self) -> Option<Arc<SchemaCache>> {
        self.0.read().expect("schema cache lock").clone()
    }

    fn set(&self, cache: SchemaCache) {
        *self.0.write().expect("schema cache lock") = Some(Arc::new(cache));
    }

    /// Reads the catalog of the exposed schemas and replaces the cache.
    pub async fn load(&self, db: &Db, schemas: &[String]) -> Result<(), String> {
        let started = std::time::Instant::now();
        let client = db.client().await.map_err(|e| e.to_string())?;
        let row = client
            .query_one(agencyflow_rest::SCHEMA_CACHE_SQL, &[&schemas])
            .await
            .map_err(|e| agencyflow_db::DbError::from(e).to_string())?;
        let json: serde_json::Value = row.try_get(0).map_err(|e| e.to_string())?;
        let cache = SchemaCache::from_json(json).map_err(|e| e.to_string())?;
        self.set(cache);
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "schema cache loaded"
        );
        Ok(())
    }

    /// Reloads on every `NOTIFY pgrst` ('reload schema' or an empty payload), reconnecting
    /// the listener when the connection drops, and reloading after a reconnect since
    /// notifications may have been missed.
    pub fn spawn_reloader(
        &self,
        db: Db,
        listen_url: String,
        schemas: Vec<String>,
    ) -> tokio::task::JoinHandle<()> {
        let cache = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            // Said once per outage (a PostgreSQL restart), not at every retry.
            let mut failing = false;
            loop {
                match agencyflow_db::listen::listen(&listen_url, "pgrst").await {
                    Ok(mut l) => {
                        backoff = Duration::from_millis(200);
                        if std::mem::take(&mut failing) {
                            tracing::info!("schema cache listener reconnected; reloading");
                        }
                        if let Err(e) = cache.load(&db, &schemas).await {
                            tracing::warn!(error = %e, "schema cache reload failed");
                        }
                        while let Some(payload) = l.rx.recv().await {
                            if payload.is_empty() || payload == "reload schema" {
                                if let Err(e) = cache.load(&db, &schemas).await {
                                    tracing::warn!(error = %e, "schema cache reload failed");
                                }
                            }
                        }
                    }
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "schema cache listener could not connect; retrying");
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "schema cache listener could not connect")
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        })
    }
}
