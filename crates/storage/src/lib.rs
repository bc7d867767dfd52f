//! Supabase Storage compatible `/storage/v1`: buckets and objects as storage-js
//! (supabase-js `storage`) calls them.
//!
//! Every object statement runs in one transaction as the caller (role and claims from the
//! bearer JWT, anon without one), so `storage.objects`' RLS policies decide who reads and
//! writes what. Bytes live in a [`Backend`]: written in full (temp file, fsync) before the row
//! is inserted, renamed into place before the commit, removed when anything fails.
pub mod backend;
pub mod buckets;
pub mod error;
pub mod objects;

use std::path::PathBuf;
use std::sync::Arc;

use agencyflow_auth::JwtKeys;
use agencyflow_db::{Db, TxSettings};
use axum::http::HeaderMap;
use axum::routing::{any, get, post};
use axum::Router;
use serde_json::{json, Value};

pub use backend::{Backend, LocalBackend};
pub use error::StorageError;
pub use objects::{file_part_stream, StagedObject};

/// Storage settings (Supabase Storage's environment names where they exist).
#[derive(Debug, Clone, clap::Args)]
pub struct StorageArgs {
    /// Where object bytes live: `local` (files under --storage-dir) or `s3`.
    #[arg(
        long = "storage-backend",
        env = "STORAGE_BACKEND",
        default_value = "local"
    )]
    pub storage_backend: String,
    /// Directory of the local backend (default: `<data-dir>/storage`).
    #[arg(long = "storage-dir", env = "FILE_STORAGE_BACKEND_PATH")]
    pub storage_dir: Option<PathBuf>,
    /// Largest accepted object, in bytes (buckets may set a lower limit).
    #[arg(long = "storage-file-size-limit", env = "FILE_SIZE_LIMIT", default_value_t = 50 * 1024 * 1024)]
    pub storage_file_size_limit: u64,
    /// S3 bucket of the `s3` backend.
    #[arg(long = "storage-s3-bucket", env = "STORAGE_S3_BUCKET")]
    pub storage_s3_bucket: Option<String>,
    /// S3-compatible endpoint of the `s3` backend (e.g. MinIO); AWS by default.
    #[arg(long = "storage-s3-endpoint", env = "STORAGE_S3_ENDPOINT")]
    pub storage_s3_endpoint: Option<String>,
    /// Region of the `s3` backend (else AWS_REGION / AWS_DEFAULT_REGION, else us-east-1).
    #[arg(long = "storage-s3-region", env = "STORAGE_S3_REGION")]
    pub storage_s3_region: Option<String>,
    /// Access key of the `s3` backend (else the AWS_* environment, or the instance's role).
    #[arg(
        long = "storage-s3-access-key-id",
        env = "AWS_ACCESS_KEY_ID",
        hide_env_values = true
    )]
    pub storage_s3_access_key_id: Option<String>,
    /// Secret key matching --storage-s3-access-key-id.
    #[arg(
        long = "storage-s3-secret-access-key",
        env = "AWS_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    pub storage_s3_secret_access_key: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`, what MinIO and most S3-compatible servers
    /// want); false: virtual-hosted style (`bucket.endpoint/key`). Default: path style with a
    /// custom endpoint, virtual-hosted on AWS.
    #[arg(long = "storage-s3-force-path-style", env = "STORAGE_S3_FORCE_PATH_STYLE", action = clap::ArgAction::Set)]
    pub storage_s3_force_path_style: Option<bool>,
}

impl StorageArgs {
    /// Checks the settings at start-up.
    pub fn check(&self) -> Result<(), String> {
        match self.storage_backend.as_str() {
            "local" | "file" => Ok(()),
            "s3" if !cfg!(feature = "s3") => Err(
                "the s3 backend is not in this build (feature `s3`); use STORAGE_BACKEND=local"
                    .into(),
            ),
            "s3" if self.storage_s3_bucket.as_deref().unwrap_or("").is_empty() => {
                Err("STORAGE_BACKEND=s3 needs STORAGE_S3_BUCKET".into())
            }
            "s3" => self.backend().map(drop),
            other => Err(format!("`{other}` is not one of local, s3")),
        }
    }

    /// The configured backend (building it does no I/O).
    fn backend_with(&self, data_dir: impl FnOnce() -> PathBuf) -> Result<Arc<dyn Backend>, String> {
        match self.storage_backend.as_str() {
            #[cfg(feature = "s3")]
            "s3" => Ok(Arc::new(backend::ObjectStoreBackend::s3(
                &backend::S3Settings {
                    bucket: self.storage_s3_bucket.clone().unwrap_or_default(),
                    endpoint: self.storage_s3_endpoint.clone(),
                    region: self.storage_s3_region.clone(),
                    access_key_id: self.storage_s3_access_key_id.clone(),
                    secret_access_key: self.storage_s3_secret_access_key.clone(),
                    force_path_style: self.storage_s3_force_path_style,
                },
            )?)),
            _ => Ok(Arc::new(LocalBackend::new(self.dir_or(data_dir)))),
        }
    }

    fn backend(&self) -> Result<Arc<dyn Backend>, String> {
        self.backend_with(|| PathBuf::from("."))
    }

    /// The local backend's directory when none was given: `<default data dir>/storage`.
    pub fn dir_or(&self, data_dir: impl FnOnce() -> PathBuf) -> PathBuf {
        self.storage_dir
            .clone()
            .unwrap_or_else(|| data_dir().join("storage"))
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct StorageState {
    pub db: Db,
    pub keys: Arc<JwtKeys>,
    pub backend: Arc<dyn Backend>,
    pub file_size_limit: u64,
}

impl StorageState {
    pub fn new(
        db: Db,
        keys: Arc<JwtKeys>,
        backend: Arc<dyn Backend>,
        file_size_limit: u64,
    ) -> Self {
        StorageState {
            db,
            keys,
            backend,
            file_size_limit,
        }
    }

    /// State from the settings; `data_dir` resolves the local backend's default directory.
    pub fn from_args(
        db: Db,
        keys: Arc<JwtKeys>,
        args: &StorageArgs,
        data_dir: impl FnOnce() -> PathBuf,
    ) -> Result<Self, String> {
        args.check()?;
        let backend = args.backend_with(data_dir)?;
        Ok(Self::new(db, keys, backend, args.storage_file_size_limit))
    }
}

/// The request's database identity.
#[derive(Debug, Clone)]
pub struct Caller {
    pub role: String,
    pub claims: Value,
}

impl Caller {
    pub fn service() -> Self {
        Caller {
            role: "service_role".into(),
            claims: json!({ "role": "service_role" }),
        }
    }

    pub fn tx(&self) -> TxSettings {
        TxSettings::new(self.role.clone(), self.claims.to_string())
    }

    /// The `sub` claim as a user id.
    pub fn owner(&self) -> Option<uuid::Uuid> {
        self.claims
            .get("sub")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
    }

    /// From `Authorization: Bearer` (else the `apikey` header); no token at all is anon.
    pub fn from_headers(keys: &JwtKeys, headers: &HeaderMap) -> Result<Caller, StorageError> {
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let token = bearer.or_else(|| {
            headers
                .get("apikey")
                .and_then(|v| v.to_str().ok())
                .filter(|t| !t.is_empty())
        });
        let Some(token) = token else {
            return Ok(Caller {
                role: "anon".into(),
                claims: json!({ "role": "anon" }),
            });
        };
        let claims = keys
            .verify(token)
            .map_err(|e| StorageError::invalid_jwt(e.to_string()))?;
        let role = claims
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match role {
            "anon" | "authenticated" | "service_role" => Ok(Caller {
                role: role.to_string(),
                claims,
            }),
            _ => Err(StorageError::unauthorized("the token carries no API role")),
        }
    }
}

/// The `/storage/v1` router.
pub fn router(state: StorageState) -> Router {
    Router::new()
        .route("/bucket", get(buckets::list).post(buckets::create))
        .route("/bucket/", get(buckets::list).post(buckets::create))
        .route(
            "/bucket/{id}",
            get(buckets::get_one)
                .put(buckets::update)
                .delete(buckets::delete),
        )
        .route("/bucket/{id}/empty", post(buckets::empty))
        .route("/object/{*rest}", any(objects::dispatch))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        storage: StorageArgs,
    }

    fn args(a: &[&str]) -> StorageArgs {
        let mut v = vec!["t"];
        v.extend_from_slice(a);
        Cli::try_parse_from(v).unwrap().storage
    }

    #[test]
    fn backends_are_checked_at_start() {
        assert!(args(&[]).check().is_ok());
        assert_eq!(
            args(&[]).dir_or(|| PathBuf::from("/data")),
            PathBuf::from("/data/storage")
        );
        assert!(args(&["--storage-backend", "ftp"]).check().is_err());
        let no_bucket = args(&["--storage-backend", "s3"]).check().unwrap_err();
        assert!(no_bucket.contains("STORAGE_S3_BUCKET"), "{no_bucket}");
        #[cfg(feature = "s3")]
        assert!(args(&[
            "--storage-backend",
            "s3",
            "--storage-s3-bucket",
            "b",
            "--storage-s3-endpoint",
            "http://127.0.0.1:9000"
        ])
        .check()
        .is_ok());
    }
}
