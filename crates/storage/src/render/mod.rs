//! `/render/image/{public|authenticated|sign}/{bucket}/{name}`: Supabase Storage's image
//! transformations (which Storage hands to imgproxy; here the `image` crate decodes,
//! `fast_image_resize` resizes, libwebp and the `image` crate encode).
//!
//! Access is decided exactly as for the object itself: the object row is read as the caller
//! (`authenticated`, RLS decides), as the service role in a public bucket (`public`), or
//! under a signed URL's token (`sign`), whose transformation is the one signed into the
//! token: the query string cannot change it. Rendering runs on blocking threads, at most
//! [`RenderSettings::workers`] at once; renditions are cached on disk per object version
//! ([`cache`]) and answered with the object's `Cache-Control`, an ETag of their own (304 on
//! `If-None-Match`) and `Vary: Accept` when the format was negotiated.
pub mod cache;
pub mod transform;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::Value;

use crate::error::{Result, StorageError};
use crate::objects::{self, query_param, Found};
use crate::{Caller, StorageState};
use transform::{RenderError, SideLimits, SourceLimits, Target, Transform};

/// The transformation settings (see `StorageArgs`).
#[derive(Debug, Clone)]
pub struct RenderSettings {
    pub enabled: bool,
    pub sides: SideLimits,
    pub source: SourceLimits,
    /// Renders at once (each on a blocking thread).
    pub workers: usize,
    /// The disk cache's byte budget.
    pub cache_bytes: u64,
}

/// Renders waiting for a worker, per worker, before new ones are refused with 429.
const QUEUE_PER_WORKER: usize = 16;

/// The renderer: settings, the worker permits, the disk cache and two counters.
#[derive(Clone)]
pub struct Renderer {
    inner: Arc<Inner>,
}

struct Inner {
    settings: RenderSettings,
    permits: tokio::sync::Semaphore,
    /// Renders running or waiting for a permit.
    queued: AtomicUsize,
    cache: cache::RenderCache,
    rendered: AtomicU64,
    cache_hits: AtomicU64,
}

impl Renderer {
    /// A renderer whose cache lives in `cache_dir`.
    pub fn new(settings: RenderSettings, cache_dir: std::path::PathBuf) -> Self {
        let workers = settings.workers.max(1);
        let cache = cache::RenderCache::new(cache_dir, settings.cache_bytes);
        Renderer {
            inner: Arc::new(Inner {
                permits: tokio::sync::Semaphore::new(workers),
                queued: AtomicUsize::new(0),
                cache,
                rendered: AtomicU64::new(0),
                cache_hits: AtomicU64::new(0),
                settings,
            }),
        }
    }

    pub fn settings(&self) -> &RenderSettings {
        &self.inner.settings
    }

    pub fn cache(&self) -> &cache::RenderCache {
        &self.inner.cache
    }

    /// Renders computed, and renders answered from the cache, since start.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.inner.rendered.load(Ordering::Relaxed),
            self.inner.cache_hits.load(Ordering::Relaxed),
        )
    }

    /// Counts what the cache holds (on a blocking thread; at start).
    pub(crate) fn start(&self) {
        let cache = self.inner.cache.clone();
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::task::spawn_blocking(move || cache.scan());
        }
    }

    /// Removes an object's renditions (it was replaced, moved or deleted).
    pub async fn forget(&self, bucket: &str, name: &str) {
        let cache = self.inner.cache.clone();
        let (bucket, name) = (bucket.to_string(), name.to_string());
        let _ = tokio::task::spawn_blocking(move || cache.forget(&bucket, &name)).await;
    }
}

/// A transformation refused by Storage's validation.
fn invalid(e: transform::Invalid) -> StorageError {
    StorageError::bad_request(e.0)
}

/// Storage's answer for an image it could not process (imgproxy's errors, as Storage words
/// them): 400 with the code `InvalidRequest`, or 500.
fn render_error(e: RenderError) -> StorageError {
    let bad = |m: &str| StorageError::new(StatusCode::BAD_REQUEST, "InvalidRequest", m);
    match e {
        RenderError::FileTooLarge => bad("The source image file is too large to process"),
        RenderError::ResolutionTooLarge => {
            bad("The source image resolution is too large to process")
        }
        RenderError::Unsupported(why) => {
            tracing::debug!(error = %why, "image not rendered");
            bad("The source image is invalid or unsupported for rendering")
        }
        RenderError::AvifUnavailable => {
            bad("format avif is not available on this server: use webp or origin")
        }
        RenderError::Internal(why) => StorageError::internal(why),
    }
}

/// `GET /render/image/{*rest}`.
pub async fn dispatch(
    State(s): State<StorageState>,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    handle(&s, &rest, query.as_deref(), &headers)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn handle(
    s: &StorageState,
    rest: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response> {
    let r = &s.render;
    if !r.settings().enabled {
        return Err(StorageError::feature_not_enabled("image transformations"));
    }
    let (route, path) = rest.split_once('/').unwrap_or((rest, ""));
    let from_query = || {
        Transform::parse("querystring", r.settings().sides, |name| {
            query_param(query, name)
        })
        .map_err(invalid)
    };
    let (bucket, name) = objects::split_path(path)?;
    let (found, t, expires) = match route {
        "public" => {
            let t = from_query()?;
            let public = objects::bucket_meta(s, &bucket)
                .await
                .is_ok_and(|meta| meta.public);
            if !public {
                return Err(StorageError::bucket_not_found());
            }
            let found = objects::find(s, &Caller::service(), &bucket, &name).await?;
            (found, t, None)
        }
        "authenticated" => {
            let t = from_query()?;
            // A token is required (no public fallback), and RLS decides as the caller.
            let caller = Caller::from_headers(&s.keys, headers)?;
            (objects::find(s, &caller, &bucket, &name).await?, t, None)
        }
        "sign" => {
            let claims = objects::verify_token(
                s,
                query_param(query, "token"),
                "download",
                &format!("{bucket}/{name}"),
            )?;
            // The transformation is the token's; the query string's options are ignored.
            let claim = claims
                .get("transformations")
                .and_then(Value::as_str)
                .unwrap_or("");
            let t = Transform::from_claim(claim, r.settings().sides).map_err(invalid)?;
            let expires = claims.get("exp").and_then(Value::as_i64);
            let found = objects::find(s, &Caller::service(), &bucket, &name).await?;
            (found, t, expires)
        }
        _ => {
            return Err(StorageError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("Route GET /render/image/{rest} not found"),
            ))
        }
    };
    respond(s, &bucket, &name, found, &t, query, headers, expires).await
}

/// The rendition's cache key: everything that decides its bytes besides the object version.
fn rendition_key(t: &Transform, target: Target) -> String {
    format!(
        "w{}:h{}:{}:q{}:{}",
        t.width,
        t.height,
        t.resize.name(),
        t.quality.unwrap_or(transform::DEFAULT_QUALITY),
        target.name()
    )
}

fn etag_of(version: &str, key: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{version}\n{key}").as_bytes());
    format!("\"{}\"", &hex::encode(digest)[..32])
}

/// Does `If-None-Match` name `etag` (or `*`)?
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

#[allow(clippy::too_many_arguments)]
async fn respond(
    s: &StorageState,
    bucket: &str,
    name: &str,
    found: Found,
    t: &Transform,
    query: Option<&str>,
    headers: &HeaderMap,
    expires: Option<i64>,
) -> Result<Response> {
    let r = &s.render;
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let target = Target::of(t.format, transform::accepts(accept, "image/webp"));
    let key = rendition_key(t, target);
    let etag = etag_of(&found.version, &key);
    let mut h = HeaderMap::new();
    let mut set = |name: header::HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    set(header::ETAG, &etag);
    set(header::LAST_MODIFIED, &found.last_modified);
    match expires.and_then(|exp| chrono::DateTime::from_timestamp(exp, 0)) {
        // Signed URLs: cached until the token expires, as Storage answers them.
        Some(at) => set(
            header::EXPIRES,
            &at.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        ),
        None => {
            if let Some(cc) = found.metadata.get("cacheControl").and_then(Value::as_str) {
                set(header::CACHE_CONTROL, cc);
            }
        }
    }
    if t.format == transform::Format::Auto {
        set(header::VARY, "Accept");
    }
    let segments = t.segments();
    if !segments.is_empty() {
        set(
            header::HeaderName::from_static("x-transformations"),
            &segments.join(","),
        );
    }
    if none_match(headers, &etag) {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        resp.headers_mut().extend(h);
        return Ok(resp);
    }

    let version = found.version.clone();
    let lookup = {
        let (cache, b, n, v, k) = (
            r.cache().clone(),
            bucket.to_string(),
            name.to_string(),
            version.clone(),
            key.clone(),
        );
        tokio::task::spawn_blocking(move || cache.get(&b, &n, &v, &k))
            .await
            .map_err(StorageError::internal)?
    };
    let (mime, bytes, hit) = match lookup {
        Some(entry) => {
            r.inner.cache_hits.fetch_add(1, Ordering::Relaxed);
            (entry.mime, entry.bytes, true)
        }
        None => {
            let out = render_now(s, bucket, name, &found, t, target, &key).await?;
            (out.0, out.1, false)
        }
    };
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&mime).map_err(StorageError::internal)?,
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::HeaderName::from_static("x-render-cache"),
        HeaderValue::from_static(if hit { "hit" } else { "miss" }),
    );
    if let Some(d) = query_param(query, "download") {
        let file = if d.is_empty() {
            name.rsplit('/').next().unwrap_or(name).to_string()
        } else {
            d
        };
        let enc = percent_encoding::utf8_percent_encode(&file, objects::ATTR_CHAR);
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename*=UTF-8''{enc}")) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    let mut resp = Response::new(Body::from(bytes));
    *resp.headers_mut() = h;
    Ok(resp)
}

/// Reads the object (refused past the source size limit before a byte is read), renders it
/// on a blocking thread once a worker is free, and stores the rendition.
async fn render_now(
    s: &StorageState,
    bucket: &str,
    name: &str,
    found: &Found,
    t: &Transform,
    target: Target,
    key: &str,
) -> Result<(String, Vec<u8>)> {
    let r = &s.render;
    let limits = r.settings().source;
    let size = found
        .metadata
        .get("size")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    if size > limits.max_bytes {
        return Err(render_error(RenderError::FileTooLarge));
    }
    // Waiting renders are bounded: past that, Storage's (imgproxy's) 429.
    let workers = r.settings().workers.max(1);
    let queued = r.inner.queued.fetch_add(1, Ordering::AcqRel);
    let _slot = QueueSlot(&r.inner.queued);
    if queued >= workers * (QUEUE_PER_WORKER + 1) {
        return Err(StorageError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "InvalidRequest",
            "Too many requests",
        ));
    }
    // The source is read once a worker is free: waiting renders hold no image in memory.
    let _permit = r
        .inner
        .permits
        .acquire()
        .await
        .map_err(StorageError::internal)?;
    let src = read_source(s, bucket, name, &found.version, limits.max_bytes).await?;
    let (t, cache) = (*t, r.cache().clone());
    let (b, n, v, k) = (
        bucket.to_string(),
        name.to_string(),
        found.version.clone(),
        key.to_string(),
    );
    let rendered = tokio::task::spawn_blocking(move || {
        let out = transform::render(&src, &t, target, &limits)?;
        if let Err(e) = cache.put(&b, &n, &v, &k, out.mime, &out.bytes) {
            tracing::warn!(error = %e, "storing a rendition in the cache");
        }
        Ok::<_, RenderError>(out)
    })
    .await
    .map_err(StorageError::internal)?
    .map_err(render_error)?;
    r.inner.rendered.fetch_add(1, Ordering::Relaxed);
    Ok((rendered.mime.to_string(), rendered.bytes))
}

/// Holds a place in the render queue until dropped.
struct QueueSlot<'a>(&'a AtomicUsize);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The object's bytes, at most `max` (a file that grew past its row's size is refused).
async fn read_source(
    s: &StorageState,
    bucket: &str,
    name: &str,
    version: &str,
    max: u64,
) -> Result<Vec<u8>> {
    let key = objects::object_key(bucket, name, version);
    let Some((size, mut stream)) = s.backend.read(key.clone()).await? else {
        tracing::error!(key = %key, "an object row names a file that is missing");
        return Err(StorageError::object_not_found());
    };
    if size > max {
        return Err(render_error(RenderError::FileTooLarge));
    }
    let mut out = Vec::with_capacity(size as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if (out.len() + chunk.len()) as u64 > max {
            return Err(render_error(RenderError::FileTooLarge));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The `transform` of a signing request (`POST /object/sign/...`), as the token's
/// `transformations` claim; `None` when there is none (absent, `null` or `{}`).
pub(crate) fn signed_transformations(
    s: &StorageState,
    transform: Option<&Value>,
) -> Result<Option<String>> {
    let Some(fields) = transform.and_then(Value::as_object) else {
        return Ok(None);
    };
    if fields.is_empty() {
        return Ok(None);
    }
    let t = Transform::parse(
        "body/transform",
        s.render.settings().sides,
        |name| match fields.get(name)? {
            Value::String(v) => Some(v.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Null => None,
            other => Some(other.to_string()),
        },
    )
    .map_err(invalid)?;
    Ok(Some(t.to_claim()))
}
