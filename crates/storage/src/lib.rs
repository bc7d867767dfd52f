//! Supabase Storage compatible `/storage/v1`: buckets and objects as storage-js
//! (supabase-js `storage`, or `StorageClient` on its own) calls them; docs/storage.md lists
//! what is served and where it differs from Storage.
//!
//! Every object statement runs in one transaction as the caller (role and claims from the
//! bearer JWT, else the `apikey`; no credential at all is refused except where Storage serves
//! public buckets without one), so `storage.objects`' RLS policies decide who reads and
//! writes what. Bytes live in a [`Backend`]: written in full (temp file, fsync) before the row
//! is inserted, renamed into place before the commit, removed when anything fails.
//!
//! Nothing is read that the caller may not send: every route has a body limit (JSON routes
//! [`objects::JSON_BODY_LIMIT`]; uploads the object limit plus multipart framing, each part
//! but the file at most [`objects::MAX_FORM_FIELD`]), and an upload is judged (bucket, length,
//! a rolled-back insert under RLS) before its body is read, and the unread rest of a refused
//! body is drained within the route's limit ([`drain`]). Objects are served with `nosniff`;
//! anything a browser could run as a document is also sandboxed (CSP) and an attachment.
pub mod backend;
pub mod buckets;
pub mod drain;
pub mod error;
pub mod list_v2;
pub mod objects;
pub mod render;
pub mod resumable;

use std::path::PathBuf;
use std::sync::Arc;

use agencyflow_db::{Db, TxSettings};
use agencyflow_keys::JwtKeys;
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::routing::{any, get, post};
use axum::Router;
use serde_json::{json, Value};

pub use backend::{Backend, LocalBackend};
pub use error::StorageError;
pub use objects::{capped_multipart, file_part_stream, form_error, StagedObject};

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
    /// How long an unfinished resumable (TUS) upload may be resumed, in milliseconds, counted
    /// from its creation (Storage's `TUS_URL_EXPIRY_MS`; one hour by default). Its parts
    /// are removed after that.
    #[arg(
        long = "storage-tus-url-expiry-ms",
        env = "TUS_URL_EXPIRY_MS",
        default_value_t = resumable::DEFAULT_EXPIRY_MS
    )]
    pub storage_tus_url_expiry_ms: u64,
    /// Image transformations (`/render/image/...`) on or off (Storage's
    /// `IMAGE_TRANSFORMATION_ENABLED`; on by default here).
    #[arg(
        long = "storage-image-transformation",
        env = "IMAGE_TRANSFORMATION_ENABLED",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub storage_image_transformation: bool,
    /// The smallest width or height a transformation may ask for (smaller ones are raised).
    #[arg(
        long = "storage-image-min-size",
        env = "IMAGE_TRANSFORMATION_LIMIT_MIN_SIZE",
        default_value_t = 1
    )]
    pub storage_image_min_size: u32,
    /// The largest width or height a transformation may ask for (larger ones are lowered to
    /// it, as Storage clamps them).
    #[arg(
        long = "storage-image-max-size",
        env = "IMAGE_TRANSFORMATION_LIMIT_MAX_SIZE",
        default_value_t = 2000
    )]
    pub storage_image_max_size: u32,
    /// The largest source a transformation reads, in bytes (imgproxy's setting; Supabase
    /// documents 25 MB).
    #[arg(
        long = "storage-image-max-src-file-size",
        env = "IMGPROXY_MAX_SRC_FILE_SIZE",
        default_value_t = 25 * 1024 * 1024
    )]
    pub storage_image_max_src_file_size: u64,
    /// The largest source a transformation decodes, in megapixels, judged from the image's
    /// header before any pixel is decoded (imgproxy's setting; Supabase documents 50).
    #[arg(
        long = "storage-image-max-src-resolution",
        env = "IMGPROXY_MAX_SRC_RESOLUTION",
        default_value_t = 50.0
    )]
    pub storage_image_max_src_resolution: f64,
    /// Transformations computed at once, each on a blocking thread (default: the CPU count).
    #[arg(long = "storage-image-workers", env = "IMGPROXY_WORKERS")]
    pub storage_image_workers: Option<usize>,
    /// The byte budget of the disk cache of transformed images (`<storage dir>/.render-cache`);
    /// past it the least recently used renditions are removed.
    #[arg(
        long = "storage-image-cache-size",
        env = "STORAGE_IMAGE_CACHE_SIZE",
        default_value_t = 1 << 30
    )]
    pub storage_image_cache_size: u64,
}

impl StorageArgs {
    /// Checks the settings at start-up.
    pub fn check(&self) -> Result<(), String> {
        if self.storage_tus_url_expiry_ms == 0 {
            return Err("TUS_URL_EXPIRY_MS must be more than 0".into());
        }
        if self.storage_image_min_size == 0
            || self.storage_image_max_size < self.storage_image_min_size
        {
            return Err("IMAGE_TRANSFORMATION_LIMIT_MIN_SIZE must be at least 1 and at most IMAGE_TRANSFORMATION_LIMIT_MAX_SIZE".into());
        }
        let mp = self.storage_image_max_src_resolution;
        if mp.is_nan() || mp <= 0.0 {
            return Err("IMGPROXY_MAX_SRC_RESOLUTION must be more than 0".into());
        }
        if self.storage_image_workers == Some(0) {
            return Err("IMGPROXY_WORKERS must be at least 1".into());
        }
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

    /// The configured backend (building it does no I/O); `dir` is the local backend's.
    pub fn backend_in(&self, dir: PathBuf) -> Result<Arc<dyn Backend>, String> {
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
            _ => Ok(Arc::new(LocalBackend::new(dir))),
        }
    }

    /// The image transformation settings.
    pub fn render_settings(&self) -> render::RenderSettings {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        render::RenderSettings {
            enabled: self.storage_image_transformation,
            sides: render::transform::SideLimits {
                min: self.storage_image_min_size,
                max: self.storage_image_max_size,
            },
            source: render::transform::SourceLimits {
                max_bytes: self.storage_image_max_src_file_size,
                max_pixels: (self.storage_image_max_src_resolution * 1_000_000.0) as u64,
            },
            workers: self.storage_image_workers.unwrap_or(cores).max(1),
            cache_bytes: self.storage_image_cache_size,
        }
    }

    fn backend(&self) -> Result<Arc<dyn Backend>, String> {
        self.backend_in(self.dir_or(|| PathBuf::from(".")))
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
    /// Unfinished resumable uploads ([`resumable`]).
    pub resumable: resumable::Resumable,
    /// Image transformations and their disk cache ([`render`]).
    pub render: render::Renderer,
}

impl StorageState {
    /// `resumable` holds the parts of unfinished resumable uploads, `render` transforms images.
    pub fn new(
        db: Db,
        keys: Arc<JwtKeys>,
        backend: Arc<dyn Backend>,
        file_size_limit: u64,
        resumable: resumable::Resumable,
        render: render::Renderer,
    ) -> Self {
        StorageState {
            db,
            keys,
            backend,
            file_size_limit,
            resumable,
            render,
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
        let dir = args.dir_or(data_dir);
        let resumable = resumable::Resumable::new(
            dir.join(".resumable"),
            std::time::Duration::from_millis(args.storage_tus_url_expiry_ms),
        );
        // Renditions are cached on local disk whatever the backend (like resumable parts).
        let render = render::Renderer::new(args.render_settings(), dir.join(".render-cache"));
        let backend = args.backend_in(dir)?;
        Ok(Self::new(
            db,
            keys,
            backend,
            args.storage_file_size_limit,
            resumable,
            render,
        ))
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

    /// From `Authorization: Bearer` (else the `apikey` header, which Supabase's gateway
    /// forwards). Verified and role-checked by `agencyflow_keys` like every surface: a bad
    /// token or a non-API role is a 403. A request with neither is refused as Supabase Storage
    /// refuses it (`jwt must be provided`): the routes that serve public buckets without a
    /// token use [`Caller::from_headers_opt`].
    pub fn from_headers(keys: &JwtKeys, headers: &HeaderMap) -> Result<Caller, StorageError> {
        Self::from_headers_opt(keys, headers)?.ok_or_else(StorageError::jwt_required)
    }

    /// [`Caller::from_headers`], with `None` for a request that carries no credential at all.
    pub fn from_headers_opt(
        keys: &JwtKeys,
        headers: &HeaderMap,
    ) -> Result<Option<Caller>, StorageError> {
        let refused = |e: agencyflow_keys::AuthnError| match e {
            agencyflow_keys::AuthnError::RoleNotAllowed(_) => {
                StorageError::unauthorized(e.to_string())
            }
            other => StorageError::new(
                axum::http::StatusCode::FORBIDDEN,
                "InvalidJWT",
                other.to_string(),
            ),
        };
        let bearer = agencyflow_keys::bearer(headers).map_err(refused)?;
        let token = bearer.or_else(|| {
            headers
                .get("apikey")
                .and_then(|v| v.to_str().ok())
                .filter(|t| !t.is_empty())
        });
        let Some(token) = token else {
            return Ok(None);
        };
        let roles = agencyflow_keys::ApiRoles::default();
        let c = agencyflow_keys::caller_from_token(keys, &roles, token).map_err(refused)?;
        Ok(Some(Caller {
            role: c.role,
            claims: c.claims.claims.clone(),
        }))
    }
}

/// The most a request to `path` (inside `/storage/v1`) may send: the JSON limit, or for the
/// upload routes the server's object limit plus multipart framing (each upload is then held
/// to its bucket's own limit as it streams).
pub fn body_limit(file_size_limit: u64, method: &Method, path: &str) -> u64 {
    let path = path.strip_prefix("/storage/v1").unwrap_or(path);
    // Resumable uploads: the creation (which may carry a first chunk) and the chunks.
    let resumable =
        path.starts_with("/upload/resumable") && matches!(*method, Method::POST | Method::PATCH);
    let upload = resumable
        || path.strip_prefix("/object/").is_some_and(|rest| {
            let (first, tail) = rest.split_once('/').unwrap_or((rest, ""));
            let first = percent_encoding::percent_decode_str(first).decode_utf8_lossy();
            match *method {
                Method::PUT => true,
                Method::POST => {
                    let json_route =
                        matches!(&*first, "list" | "list-v2" | "move" | "copy" | "sign")
                            || (first == "upload" && tail.starts_with("sign/"));
                    !json_route
                }
                _ => false,
            }
        });
    if upload {
        file_size_limit.saturating_add(objects::FORM_OVERHEAD)
    } else {
        objects::JSON_BODY_LIMIT
    }
}

/// Every storage route has a body limit: a declared length past it is a 413 before anything
/// is read, and a body that goes on past it fails as it streams. (The handlers hold JSON
/// bodies, multipart parts and files to their own, smaller limits first.)
async fn limit_body(
    State(s): State<StorageState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let limit = body_limit(s.file_size_limit, req.method(), req.uri().path());
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return StorageError::body_too_large().into_response();
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let req = req.map(|body| axum::body::Body::new(http_body_util::Limited::new(body, limit)));
    next.run(req).await
}

/// Drains what a handler left unread of a request's body once it has answered (see
/// [`drain`]), within the route's body limit: a refused upload ends with its 4xx, not a reset.
/// The server puts this outside the API-key gate, so the gate's refusals are drained too.
pub async fn drain_unread_bodies(
    State(s): State<StorageState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let cap = body_limit(s.file_size_limit, req.method(), req.uri().path());
    let drainable = drain::drainable(req.headers());
    let req = req.map(|body| axum::body::Body::new(drain::DrainOnDrop::new(body, cap, drainable)));
    next.run(req).await
}

/// `/upload/resumable`: TUS creation (and discovery).
async fn resumable_create(
    State(s): State<StorageState>,
    method: Method,
    headers: HeaderMap,
    body: axum::body::Body,
) -> axum::response::Response {
    resumable::handle(&s, method, None, &headers, body).await
}

/// `/upload/resumable/<id>`: TUS `HEAD`, `PATCH`, `DELETE`.
async fn resumable_upload(
    State(s): State<StorageState>,
    method: Method,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> axum::response::Response {
    resumable::handle(&s, method, Some(&id), &headers, body).await
}

/// `/vector/...` (storage-js's `storage.vectors`): vector buckets are not implemented.
async fn vector_buckets() -> StorageError {
    StorageError::feature_not_enabled("vector buckets")
}

/// `/iceberg/...` (storage-js's `storage.analytics`, the Iceberg REST catalog): analytics
/// buckets are not implemented.
async fn analytics_buckets() -> StorageError {
    StorageError::feature_not_enabled("analytics buckets")
}

/// The `/storage/v1` router (and the sweeper of expired resumable uploads).
pub fn router(state: StorageState) -> Router {
    state.resumable.start_sweeper();
    state.render.start();
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
        .route("/upload/resumable", any(resumable_create))
        .route("/upload/resumable/", any(resumable_create))
        .route("/upload/resumable/{id}", any(resumable_upload))
        .route("/render/image/{*rest}", get(render::dispatch))
        // Not implemented (docs/storage.md): Storage's own "feature not enabled" answer.
        .route("/vector", any(vector_buckets))
        .route("/vector/{*rest}", any(vector_buckets))
        .route("/iceberg", any(analytics_buckets))
        .route("/iceberg/{*rest}", any(analytics_buckets))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limit_body,
        ))
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
    fn uploads_stream_under_the_object_limit_and_the_rest_under_the_json_limit() {
        let json = objects::JSON_BODY_LIMIT;
        let upload = 1000 + objects::FORM_OVERHEAD;
        for (method, path, want) in [
            (Method::POST, "/object/docs/a/b.txt", upload),
            (Method::PUT, "/object/docs/a.txt", upload),
            (Method::PUT, "/object/upload/sign/docs/a.txt", upload),
            (Method::POST, "/storage/v1/object/docs/a.txt", upload),
            (Method::POST, "/object/upload/sign/docs/a.txt", json),
            (Method::POST, "/object/list/docs", json),
            (Method::POST, "/object/list-v2/docs", json),
            (Method::POST, "/vector/CreateVectorBucket", json),
            (Method::POST, "/object/%6Cist/docs", json),
            (Method::POST, "/object/move", json),
            (Method::POST, "/object/copy", json),
            (Method::POST, "/object/sign/docs/a.txt", json),
            (Method::POST, "/object/sign/docs", json),
            (Method::DELETE, "/object/docs", json),
            (Method::GET, "/object/docs/a.txt", json),
            (Method::POST, "/bucket", json),
            (Method::PUT, "/bucket/docs", json),
            (Method::POST, "/bucket/docs/empty", json),
        ] {
            assert_eq!(body_limit(1000, &method, path), want, "{method} {path}");
        }
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
