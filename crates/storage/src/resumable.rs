//! Resumable uploads: TUS 1.0 at `/upload/resumable`, as Supabase Storage serves it to
//! `tus-js-client` and Uppy.
//!
//! - **Creation** (`POST /upload/resumable`): `Upload-Length` and `Upload-Metadata`
//!   (`bucketName`, `objectName`, `contentType`, `cacheControl` in seconds, `metadata` as JSON),
//!   `x-upsert: true` to replace. Everything is judged before anything is stored: the bucket,
//!   the length against its limit (and the server's), its MIME allow-list, and the caller's
//!   right to write that name (a rolled-back insert under RLS, as for every upload). The answer
//!   is `201` with `Location: /storage/v1/upload/resumable/<id>`, the id being base64url of
//!   `<bucket>/<name>/<upload uuid>` as in Storage.
//! - **`HEAD <id>`**: `Upload-Offset`, `Upload-Length`; **`PATCH <id>`**
//!   (`application/offset+octet-stream`, `Upload-Offset` equal to the server's): the chunk is
//!   appended (any size; tus-js-client sends Supabase's 6 MiB), and what arrived before a
//!   dropped connection is kept, so the client resumes from there; **`DELETE <id>`** abandons.
//! - Every request after creation must come from the creator (same role and `sub`), and every
//!   write is judged again under RLS before its body is read. One request at a time per upload.
//! - When the last byte arrives the object is written like any upload (backend, then the
//!   `storage.objects` row inserted as the caller under RLS, then published, committed); until
//!   then there is no row. Unfinished uploads expire `TUS_URL_EXPIRY_MS` after their creation
//!   (one hour, as in Storage): a sweeper removes their parts, and they answer 404.
//!
//! Parts are staged as files under `<storage dir>/.resumable` (`<uuid>.part` and its state,
//! `<uuid>.json`), whatever the backend, so one server owns its unfinished uploads.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::error::{Result, StorageError};
use crate::objects::{
    bucket_meta, mime_allowed, probe_write, validate_bucket, validate_key, MAX_USER_METADATA,
};
use crate::{Caller, StorageState};

pub const TUS_VERSION: &str = "1.0.0";
/// Storage's default `TUS_URL_EXPIRY_MS`: an unfinished upload lives one hour.
pub const DEFAULT_EXPIRY_MS: u64 = 60 * 60 * 1000;
/// How long a request waits for another one on the same upload to finish.
const LOCK_WAIT: Duration = Duration::from_secs(10);
const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// What the server keeps of an unfinished upload (`<uuid>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Upload {
    bucket: String,
    name: String,
    length: u64,
    offset: u64,
    mime: String,
    cache_control: String,
    user_metadata: Option<Value>,
    upsert: bool,
    /// Who created it: later requests must be the same role and user.
    role: String,
    sub: Option<String>,
    /// Unix milliseconds after which it is gone.
    expires_ms: i64,
    /// The `Upload-Metadata` header as sent (echoed by HEAD).
    metadata_header: String,
}

/// The uploads in flight of one server: their directory, expiry and per-upload locks.
#[derive(Clone)]
pub struct Resumable {
    dir: PathBuf,
    expiry: Duration,
    locks: Arc<Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Resumable {
    pub fn new(dir: PathBuf, expiry: Duration) -> Self {
        Resumable {
            dir,
            expiry,
            locks: Arc::default(),
        }
    }

    fn state_path(&self, id: Uuid) -> PathBuf {
        self.dir.join(format!("{}.json", id.simple()))
    }

    fn part_path(&self, id: Uuid) -> PathBuf {
        self.dir.join(format!("{}.part", id.simple()))
    }

    /// The lock of one upload (one request at a time may touch it).
    async fn lock(&self, id: Uuid) -> Result<tokio::sync::OwnedMutexGuard<()>> {
        let m = {
            let mut locks = self.locks.lock().expect("resumable locks");
            locks.retain(|_, m| Arc::strong_count(m) > 1);
            locks.entry(id).or_default().clone()
        };
        tokio::time::timeout(LOCK_WAIT, m.lock_owned())
            .await
            .map_err(|_| {
                StorageError::new(
                    StatusCode::LOCKED,
                    "ResourceLocked",
                    "The resource is locked",
                )
            })
    }

    async fn load(&self, id: Uuid) -> Result<Option<Upload>> {
        let text = match tokio::fs::read(self.state_path(id)).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let upload: Upload = serde_json::from_slice(&text).map_err(StorageError::internal)?;
        if upload.expires_ms < now_ms() {
            self.remove(id).await;
            return Ok(None);
        }
        Ok(Some(upload))
    }

    /// Writes the state (temp file, fsync, rename).
    async fn save(&self, id: Uuid, upload: &Upload) -> Result<()> {
        let tmp = self.dir.join(format!("{}.json.tmp", id.simple()));
        let bytes = serde_json::to_vec(upload).map_err(StorageError::internal)?;
        let mut f = tokio::fs::File::create(&tmp).await?;
        f.write_all(&bytes).await?;
        f.sync_all().await?;
        tokio::fs::rename(&tmp, self.state_path(id)).await?;
        Ok(())
    }

    async fn remove(&self, id: Uuid) {
        for p in [self.state_path(id), self.part_path(id)] {
            if let Err(e) = tokio::fs::remove_file(&p).await {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(error = %e, path = %p.display(), "removing a resumable upload");
                }
            }
        }
    }

    /// Removes every expired upload (and any part left without its state for longer than an
    /// expiry period).
    pub async fn sweep(&self) {
        let Ok(mut rd) = tokio::fs::read_dir(&self.dir).await else {
            return;
        };
        let now = now_ms();
        while let Ok(Some(entry)) = rd.next_entry().await {
            let path = entry.path();
            let Some(id) = upload_file_id(&path) else {
                continue;
            };
            let expired = match tokio::fs::read(self.state_path(id)).await {
                Ok(text) => serde_json::from_slice::<Upload>(&text)
                    .map(|u| u.expires_ms < now)
                    .unwrap_or(true),
                Err(_) => entry
                    .metadata()
                    .await
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > self.expiry),
            };
            if expired {
                self.remove(id).await;
            }
        }
    }

    /// Sweeps now and then (a quarter of the expiry period, between 1 s and 10 min) for as
    /// long as the runtime lives.
    pub fn start_sweeper(&self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = self.clone();
        let every = (self.expiry / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
        rt.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.sweep().await;
            }
        });
    }
}

/// The upload uuid of `<uuid>.json`, `<uuid>.part` or `<uuid>.json.tmp`.
fn upload_file_id(path: &Path) -> Option<Uuid> {
    let name = path.file_name()?.to_str()?;
    let stem = name.split('.').next()?;
    Uuid::try_parse(stem).ok()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn http_date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `Upload-Metadata`: `key base64,key base64,...` (a value may be absent).
fn parse_metadata(header: &str) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for pair in header.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once(' ').unwrap_or((pair, ""));
        let value = value.trim();
        let decoded = if value.is_empty() {
            String::new()
        } else {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(value))
                .map_err(|_| {
                    StorageError::bad_request(format!("Upload-Metadata: {key} is not base64"))
                })?;
            String::from_utf8(bytes).map_err(|_| {
                StorageError::bad_request(format!("Upload-Metadata: {key} is not UTF-8"))
            })?
        };
        out.insert(key.to_string(), decoded);
    }
    Ok(out)
}

/// The URL id of an upload: base64url of `<bucket>/<name>/<uuid>`, as Storage's.
fn url_id(bucket: &str, name: &str, id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{bucket}/{name}/{id}"))
}

/// `(bucket, name, uuid)` from a URL id; anything else is not an upload.
fn parse_url_id(s: &str) -> Option<(String, String, Uuid)> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (bucket, rest) = text.split_once('/')?;
    let (name, id) = rest.rsplit_once('/')?;
    Some((
        bucket.to_string(),
        name.to_string(),
        Uuid::try_parse(id).ok()?,
    ))
}

fn not_found() -> StorageError {
    StorageError::new(StatusCode::NOT_FOUND, "NoSuchUpload", "Upload not found")
}

/// The headers every TUS answer carries.
fn tus(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        HeaderName::from_static("tus-resumable"),
        HeaderValue::from_static(TUS_VERSION),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn set(r: &mut Response, name: &'static str, value: impl ToString) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        r.headers_mut().insert(HeaderName::from_static(name), v);
    }
}

/// The one entry point for `/upload/resumable[/<id>]` (`OPTIONS` never gets here: the CORS
/// layer answers it, so TUS discovery headers are not offered; tus-js-client does not ask).
pub async fn handle(
    s: &StorageState,
    method: Method,
    id: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let result = if header_str(headers, "tus-resumable") != Some(TUS_VERSION) {
        let mut r = StorageError::new(
            StatusCode::PRECONDITION_FAILED,
            "TusError",
            format!("Tus-Resumable {TUS_VERSION} is required"),
        )
        .into_response();
        set(&mut r, "tus-version", TUS_VERSION);
        Ok(r)
    } else {
        match (&method, id) {
            (&Method::POST, None) => create(s, headers, body).await,
            (&Method::HEAD, Some(id)) => head(s, id, headers).await,
            (&Method::PATCH, Some(id)) => patch(s, id, headers, body).await,
            (&Method::DELETE, Some(id)) => terminate(s, id, headers).await,
            _ => Err(StorageError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "TusError",
                format!("{method} is not a TUS request here"),
            )),
        }
    };
    tus(result.unwrap_or_else(IntoResponse::into_response))
}

/// `POST /upload/resumable`: judged in full before anything is stored.
async fn create(s: &StorageState, headers: &HeaderMap, body: Body) -> Result<Response> {
    let caller = Caller::from_headers(&s.keys, headers)?;
    if headers.contains_key("upload-defer-length") {
        return Err(StorageError::bad_request(
            "Upload-Defer-Length is not supported: send Upload-Length",
        ));
    }
    let length: u64 = header_str(headers, "upload-length")
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| StorageError::bad_request("Upload-Length must be a number of bytes"))?;
    let metadata_header = header_str(headers, "upload-metadata")
        .unwrap_or("")
        .to_string();
    let meta = parse_metadata(&metadata_header)?;
    let bucket = meta
        .get("bucketName")
        .filter(|b| !b.is_empty())
        .ok_or_else(|| StorageError::bad_request("Metadata header is required: bucketName"))?
        .clone();
    let name = meta
        .get("objectName")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| StorageError::bad_request("Metadata header is required: objectName"))?
        .clone();
    validate_bucket(&bucket)?;
    validate_key(&name)?;
    let mime = meta
        .get("contentType")
        .map(|m| m.trim())
        .filter(|m| !m.is_empty())
        .unwrap_or("application/octet-stream")
        .to_string();
    // Storage: seconds become `max-age=<n>`, anything else `no-cache`.
    let cache_control = match meta.get("cacheControl").map(|c| c.trim()) {
        Some(c) if !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) => {
            format!("max-age={c}")
        }
        _ => "no-cache".to_string(),
    };
    let user_metadata = match meta.get("metadata") {
        Some(m) if m.len() > MAX_USER_METADATA => {
            return Err(StorageError::entity_too_large("user_metadata"))
        }
        Some(m) => serde_json::from_str::<Value>(m)
            .ok()
            .filter(Value::is_object),
        None => None,
    };
    let bucket_limits = bucket_meta(s, &bucket).await?;
    if length > bucket_limits.size_limit(s) {
        return Err(StorageError::too_large());
    }
    if let Some(allowed) = bucket_limits
        .allowed_mime_types
        .as_deref()
        .filter(|a| !a.is_empty())
    {
        if !mime_allowed(allowed, &mime) {
            return Err(StorageError::invalid_mime(&mime));
        }
    }
    let upsert = header_str(headers, "x-upsert").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    probe_write(s, &caller, caller.owner(), &bucket, &name, upsert).await?;

    let r = &s.resumable;
    tokio::fs::create_dir_all(&r.dir).await?;
    let id = Uuid::new_v4();
    let upload = Upload {
        bucket: bucket.clone(),
        name: name.clone(),
        length,
        offset: 0,
        mime,
        cache_control,
        user_metadata,
        upsert,
        role: caller.role.clone(),
        sub: caller.owner().map(|u| u.to_string()),
        expires_ms: now_ms() + r.expiry.as_millis() as i64,
        metadata_header,
    };
    tokio::fs::File::create(r.part_path(id)).await?;
    r.save(id, &upload).await?;
    let location = format!(
        "/storage/v1/upload/resumable/{}",
        url_id(&bucket, &name, id)
    );
    // creation-with-upload: a first chunk in the creation request.
    let with_data = header_str(headers, "content-type")
        .is_some_and(|c| c.trim().eq_ignore_ascii_case(OFFSET_OCTET_STREAM));
    // An empty file is complete at once (tus-js-client sends no PATCH for it).
    let mut r_out = if with_data || length == 0 {
        let body = if with_data { body } else { Body::empty() };
        let guard = r.lock(id).await?;
        let mut resp = append_and_finish(s, id, upload, &caller, body, guard).await?;
        *resp.status_mut() = StatusCode::CREATED;
        resp
    } else {
        let mut resp = StatusCode::CREATED.into_response();
        set(&mut resp, "upload-expires", http_date(upload.expires_ms));
        resp
    };
    set(&mut r_out, "location", location);
    Ok(r_out)
}

/// The upload named by a URL id, for its creator only.
async fn owned(s: &StorageState, url_id: &str, caller: &Caller) -> Result<(Uuid, Upload)> {
    let (bucket, name, id) = parse_url_id(url_id).ok_or_else(not_found)?;
    let upload = s.resumable.load(id).await?.ok_or_else(not_found)?;
    if upload.bucket != bucket || upload.name != name {
        return Err(not_found());
    }
    let sub = caller.owner().map(|u| u.to_string());
    if upload.role != caller.role || upload.sub != sub {
        // Another identity: as if it did not exist.
        return Err(not_found());
    }
    Ok((id, upload))
}

/// `HEAD <id>`: where to resume.
async fn head(s: &StorageState, url_id: &str, headers: &HeaderMap) -> Result<Response> {
    let caller = Caller::from_headers(&s.keys, headers)?;
    let (id, _) = owned(s, url_id, &caller).await?;
    // After any request still writing to it.
    let _guard = s.resumable.lock(id).await?;
    let upload = s.resumable.load(id).await?.ok_or_else(not_found)?;
    let mut r = StatusCode::OK.into_response();
    set(&mut r, "upload-offset", upload.offset);
    set(&mut r, "upload-length", upload.length);
    set(&mut r, "upload-expires", http_date(upload.expires_ms));
    if !upload.metadata_header.is_empty() {
        set(&mut r, "upload-metadata", &upload.metadata_header);
    }
    Ok(r)
}

/// `PATCH <id>`: a chunk at the server's offset; the last one writes the object.
async fn patch(
    s: &StorageState,
    url_id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let caller = Caller::from_headers(&s.keys, headers)?;
    let is_chunk = header_str(headers, "content-type")
        .is_some_and(|c| c.trim().eq_ignore_ascii_case(OFFSET_OCTET_STREAM));
    if !is_chunk {
        return Err(StorageError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "TusError",
            format!("Content-Type must be {OFFSET_OCTET_STREAM}"),
        ));
    }
    let offset: u64 = header_str(headers, "upload-offset")
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| StorageError::bad_request("Upload-Offset must be a number of bytes"))?;
    let (id, _) = owned(s, url_id, &caller).await?;
    let guard = s.resumable.lock(id).await?;
    let upload = s.resumable.load(id).await?.ok_or_else(not_found)?;
    if offset != upload.offset {
        return Err(StorageError::new(
            StatusCode::CONFLICT,
            "TusError",
            format!(
                "Upload-Offset {offset} does not match the upload's offset {}",
                upload.offset
            ),
        ));
    }
    // Judged again before the chunk is read: the caller may still write that name.
    probe_write(
        s,
        &caller,
        caller.owner(),
        &upload.bucket,
        &upload.name,
        upload.upsert,
    )
    .await?;
    append_and_finish(s, id, upload, &caller, body, guard).await
}

/// Appends `body` at the upload's offset (keeping what arrived if the body breaks off), and
/// writes the object once the last byte is there. Answers 204 with the new offset (and
/// `Tus-Complete: 1` at the end, as Storage does).
async fn append_and_finish(
    s: &StorageState,
    id: Uuid,
    mut upload: Upload,
    caller: &Caller,
    body: Body,
    _guard: tokio::sync::OwnedMutexGuard<()>,
) -> Result<Response> {
    let r = &s.resumable;
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .open(r.part_path(id))
        .await
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                not_found()
            } else {
                e.into()
            }
        })?;
    // Whatever lies past the recorded offset (a write cut short by a crash) is not data.
    file.set_len(upload.offset).await?;
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
    use tokio::io::AsyncSeekExt;
    file.seek(std::io::SeekFrom::Start(upload.offset)).await?;
    let room = upload.length - upload.offset;
    let mut got = 0u64;
    let mut broke: Option<StorageError> = None;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                if got + bytes.len() as u64 > room {
                    broke = Some(StorageError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "TusError",
                        "The chunk goes past Upload-Length",
                    ));
                    break;
                }
                file.write_all(&bytes).await?;
                got += bytes.len() as u64;
            }
            Err(e) => {
                // A dropped connection: keep what arrived, the client resumes from there.
                broke = Some(StorageError::bad_request(format!(
                    "the chunk could not be read: {e}"
                )));
                break;
            }
        }
    }
    file.flush().await?;
    file.get_ref().sync_data().await?;
    upload.offset += got;
    r.save(id, &upload).await?;
    if let Some(e) = broke {
        return Err(e);
    }
    let done = upload.offset == upload.length;
    if done {
        finish(s, id, &upload, caller).await?;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    set(&mut resp, "upload-offset", upload.offset);
    if done {
        set(&mut resp, "tus-complete", "1");
    } else {
        set(&mut resp, "upload-expires", http_date(upload.expires_ms));
    }
    Ok(resp)
}

/// The last byte arrived: the object is written as any upload (limits checked again, the row
/// inserted as the caller under RLS, the file published, commit), then the parts removed.
async fn finish(s: &StorageState, id: Uuid, upload: &Upload, caller: &Caller) -> Result<()> {
    let r = &s.resumable;
    let meta = bucket_meta(s, &upload.bucket).await?;
    let file = tokio::fs::File::open(r.part_path(id)).await?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).boxed();
    let mut staged = s
        .stage_in(
            &meta,
            &upload.bucket,
            &upload.name,
            &upload.mime,
            &upload.cache_control,
            stream,
        )
        .await?;
    staged.user_metadata = upload.user_metadata.clone();
    let committed: Result<(Uuid, Option<String>)> = async {
        let mut tx = s.db.begin(&caller.tx()).await?;
        let row = s
            .insert_object_row(&mut tx, &staged, caller.owner(), upload.upsert)
            .await?;
        s.publish(&mut staged).await?;
        tx.commit().await?;
        Ok(row)
    }
    .await;
    match committed {
        Ok((_, old)) => {
            if let Some(old) = old {
                s.forget_version(&upload.bucket, &upload.name, &old).await;
            }
            r.remove(id).await;
            Ok(())
        }
        Err(e) => {
            s.discard(staged).await;
            Err(e)
        }
    }
}

/// `DELETE <id>`: the upload is abandoned and its parts removed.
async fn terminate(s: &StorageState, url_id: &str, headers: &HeaderMap) -> Result<Response> {
    let caller = Caller::from_headers(&s.keys, headers)?;
    let (id, _) = owned(s, url_id, &caller).await?;
    let _guard = s.resumable.lock(id).await?;
    s.resumable.remove(id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_metadata_and_ids_read_as_tus_and_storage_write_them() {
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let h = format!(
            "bucketName {},objectName {}, contentType {},cacheControl {},empty",
            b("docs"),
            b("a/b c.pdf"),
            b("application/pdf"),
            b("3600")
        );
        let m = parse_metadata(&h).unwrap();
        assert_eq!(m["bucketName"], "docs");
        assert_eq!(m["objectName"], "a/b c.pdf");
        assert_eq!(m["contentType"], "application/pdf");
        assert_eq!(m["cacheControl"], "3600");
        assert_eq!(m["empty"], "");
        assert!(parse_metadata("bucketName !!!").is_err());

        let id = Uuid::new_v4();
        let u = url_id("docs", "a/b c.pdf", id);
        assert!(!u.contains('/') && !u.contains('+') && !u.contains('='));
        assert_eq!(
            parse_url_id(&u),
            Some(("docs".into(), "a/b c.pdf".into(), id))
        );
        for bad in ["", "!!", "ZG9jcw", &url_id("docs", "x", id)[..40]] {
            let parsed = parse_url_id(bad);
            assert!(parsed.is_none_or(|(_, _, i)| i != id), "{bad}");
        }
        // A uuid is required: no path can be smuggled into the part's file name.
        let sneaky =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("docs/x/../../etc/passwd");
        assert_eq!(parse_url_id(&sneaky), None);
        assert_eq!(
            upload_file_id(Path::new(&format!("/x/{}.json.tmp", id.simple()))),
            Some(id)
        );
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
