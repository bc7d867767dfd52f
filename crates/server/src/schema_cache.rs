//! The REST schema cache: loaded once at start, swapped whole on `NOTIFY pgrst` (as
//! PostgREST does; the `pgrst_ddl_watch`/`pgrst_drop_watch` event triggers fire it on DDL,
//! our runner after migrating). Requests read an `Arc` snapshot and never query the catalog.
//! The reloader also reads the in-database configuration again (`pgrst.*` role settings,
//! the roles' own settings) and which surfaces the database can serve.
use std::sync::{Arc, RwLock};
use std::time::Duration;

use agencyflow_db::Db;
use agencyflow_rest::SchemaCache;

use crate::app::AppState;

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
}

/// What a `NOTIFY pgrst` payload asks for (PostgREST's: an empty payload or
/// 'reload schema' reloads the schema cache, and with it the in-database configuration;
/// 'reload config' the configuration alone). Other payloads are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reload {
    pub schema: bool,
    pub config: bool,
}

impl Reload {
    pub fn of(payload: &str) -> Reload {
        match payload {
            "" | "reload schema" => Reload {
                schema: true,
                config: true,
            },
            "reload config" => Reload {
                schema: false,
                config: true,
            },
            _ => Reload::default(),
        }
    }

    fn merge(self, o: Reload) -> Reload {
        Reload {
            schema: self.schema || o.schema,
            config: self.config || o.config,
        }
    }
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the in-database configuration: {0}")]
    Db(agencyflow_db::DbError),
    #[error(transparent)]
    Config(crate::config::ConfigError),
}

/// The REST runtime from the settings and, unless `PGRST_DB_CONFIG=false`, the database's
/// `pgrst.*` settings of the login role over them; also the settings read from the database.
pub async fn read_rest_runtime(
    db: &Db,
    args: &crate::config::ServeArgs,
) -> Result<(crate::config::RestRuntime, Vec<(String, String)>), ReadError> {
    let db_settings = if args.db_config {
        db.pgrst_settings(crate::config::IN_DB_SETTINGS)
            .await
            .map_err(ReadError::Db)?
    } else {
        Vec::new()
    };
    let merged = crate::config::with_db_settings(args, &db_settings).map_err(ReadError::Config)?;
    let names: Vec<&str> = db_settings.iter().map(|(k, _)| k.as_str()).collect();
    let rt = crate::config::rest_runtime(&merged).map_err(|e| {
        ReadError::Config(if names.is_empty() {
            e
        } else {
            let reason = format!(
                "{} (with the database's pgrst.{} applied)",
                e.reason,
                names.join(", pgrst.")
            );
            crate::config::ConfigError::new(e.setting, reason)
        })
    })?;
    Ok((rt, db_settings))
}

/// Reads the configuration again: the in-database settings and the roles' settings.
/// Returns whether the exposed schemas changed. An invalid configuration keeps the current
/// one (logged), as PostgREST does once it runs.
async fn reload_config(state: &AppState) -> bool {
    let before = state.rest().config.schemas.clone();
    match read_rest_runtime(&state.db, &state.settings.serve).await {
        Ok((rt, _)) => state.set_rest(rt),
        Err(e) => tracing::warn!(error = %e, "configuration not reloaded; keeping the current one"),
    }
    if let Err(e) = state.db.load_role_settings().await {
        tracing::warn!(error = %e, "role settings not reloaded");
    }
    state.rest().config.schemas != before
}

/// The schema cache of the exposed schemas, and which surfaces the database can serve.
async fn reload_schema(state: &AppState) {
    let schemas = state.rest().config.schemas.clone();
    if let Err(e) = state.schema_cache.load(&state.db, &schemas).await {
        tracing::warn!(error = %e, "schema cache reload failed");
    }
    state.surfaces.refresh(&state.db).await;
}

async fn reload(state: &AppState, what: Reload) {
    let schemas_changed = what.config && reload_config(state).await;
    if what.schema || schemas_changed {
        reload_schema(state).await;
    }
}

/// Listens on `pgrst` and reloads what each notification asks for, reconnecting the
/// listener when the connection drops (and reloading everything once listening, since
/// notifications may have been missed). Notifications that queued up while a reload ran (psql running
/// DDL statement by statement, each firing the event trigger) make one reload.
pub fn spawn_reloader(state: AppState, listen_url: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            match agencyflow_db::listen::listen(&listen_url, "pgrst").await {
                Ok(mut l) => {
                    backoff = Duration::from_millis(200);
                    // What changed before LISTEN took effect (since the load at start, or
                    // while the connection was down) was not notified.
                    reload(
                        &state,
                        Reload {
                            schema: true,
                            config: true,
                        },
                    )
                    .await;
                    while let Some(payload) = l.rx.recv().await {
                        let mut what = Reload::of(&payload);
                        while let Ok(more) = l.rx.try_recv() {
                            what = what.merge(Reload::of(&more));
                        }
                        reload(&state, what).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "schema cache listener could not connect"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_as_postgrest_reads_them() {
        let both = Reload {
            schema: true,
            config: true,
        };
        assert_eq!(Reload::of(""), both);
        assert_eq!(Reload::of("reload schema"), both);
        assert_eq!(
            Reload::of("reload config"),
            Reload {
                schema: false,
                config: true
            }
        );
        assert_eq!(Reload::of("something else"), Reload::default());
        assert_eq!(Reload::of("reload config").merge(Reload::of("")), both);
    }
}
