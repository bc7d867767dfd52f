//! `/object/...`: upload, download, info, exists, list, move, copy, remove, signed URLs.
//!
//! The object row is read and written in the caller's transaction (RLS decides); the bytes
//! follow the row: written and fsynced first, renamed into place before the commit, removed on
//! any failure, and old versions deleted only after the commit that stopped naming them.
use agencyflow_db::{ClaimsTxn, Type};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::backend::{ByteStream, Pending};
use crate::error::{Result, StorageError};
use crate::{Caller, StorageState};

/// Signed upload URLs live 2 hours (Supabase's lifetime), or less when `expiresIn` asks.
const UPLOAD_URL_SECS: i64 = 2 * 60 * 60;
/// The longest a signed download URL may live: ten years of seconds (a larger `expiresIn`
/// would only be a bigger number to overflow the expiry with).
pub const MAX_SIGNED_URL_SECS: i64 = 10 * 365 * 24 * 60 * 60;
const MAX_KEY_LEN: usize = 1024;
/// Each non-file part of a multipart upload (`cacheControl`, `metadata`, anything else).
pub const MAX_FORM_FIELD: usize = 8 * 1024;
/// What a multipart upload may send before its file part starts: preamble, part headers and
/// the small parts. The parser buffers a preamble or a part's headers until it finds the
/// delimiter that ends them, so without this cap one endless line would all land in memory.
pub const MAX_FORM_PRELUDE: u64 = 1 << 20;
/// Room the framing of a multipart upload may take beyond its file.
pub const FORM_OVERHEAD: u64 = MAX_FORM_PRELUDE + 64 * 1024;
/// The largest JSON body of a storage route (Supabase Storage's server has 1 MiB too).
pub const JSON_BODY_LIMIT: u64 = 1 << 20;
/// The largest custom metadata (`x-metadata`, decoded, or the multipart `metadata` part): the
/// multipart text-part cap, so one limit holds whichever way it is sent.
pub const MAX_USER_METADATA: usize = MAX_FORM_FIELD;
/// A `timestamptz` as Supabase Storage renders it (node-postgres' `Date`, then JSON):
/// `2021-02-17T04:43:32.770Z`. `{}` is the column.
pub(crate) const ISO_MS: &str =
    "to_char({} at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";

/// [`ISO_MS`] for `column`.
pub(crate) fn iso(column: &str) -> String {
    ISO_MS.replace("{}", column)
}
/// RFC 5987 `attr-char`s stay as they are in `filename*=`.
pub(crate) const ATTR_CHAR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// An object name: relative, `/`-separated, no empty, `.` or `..` segment, no control characters.
pub fn validate_key(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_KEY_LEN
        && !name.starts_with('/')
        && !name.chars().any(|c| c.is_control() || c == '\\')
        && name
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if ok {
        Ok(())
    } else {
        Err(StorageError::invalid_key(name))
    }
}

pub fn validate_bucket(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 100
        && id != "."
        && id != ".."
        && !id.starts_with('.')
        && !id.chars().any(|c| c.is_control() || c == '/' || c == '\\');
    if ok {
        Ok(())
    } else {
        Err(StorageError::new(
            StatusCode::BAD_REQUEST,
            "Invalid Input",
            format!("Bucket name invalid: {id}"),
        ))
    }
}

/// `bucket/some/name` → (bucket, name), both validated.
pub(crate) fn split_path(rest: &str) -> Result<(String, String)> {
    let (bucket, name) = rest
        .split_once('/')
        .ok_or_else(|| StorageError::invalid_key(rest))?;
    validate_bucket(bucket)?;
    validate_key(name)?;
    Ok((bucket.to_string(), name.to_string()))
}

pub(crate) fn object_key(bucket: &str, name: &str, version: &str) -> String {
    format!("{bucket}/{name}/{version}")
}

pub(crate) fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The one entry point for `/object/{*rest}`: storage-js's routes share the prefix with
/// `/object/{bucket}/{name}`, so the first segment picks the operation (as in Supabase, a
/// bucket cannot be called `sign`, `public`, `list` ...).
pub async fn dispatch(
    State(s): State<StorageState>,
    method: Method,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let q = query.as_deref();
    let (first, tail) = rest.split_once('/').unwrap_or((rest.as_str(), ""));
    let head = method == Method::HEAD;
    let result = match (&method, first) {
        (&Method::POST, "list") => list(&s, &headers, tail, body).await,
        (&Method::POST, "list-v2") => crate::list_v2::list_v2(&s, &headers, tail, body).await,
        (&Method::POST, "move") if tail.is_empty() => move_or_copy(&s, &headers, body, false).await,
        (&Method::POST, "copy") if tail.is_empty() => move_or_copy(&s, &headers, body, true).await,
        (&Method::POST, "sign") if tail.contains('/') => sign_one(&s, &headers, tail, body).await,
        (&Method::POST, "sign") => sign_many(&s, &headers, tail, body).await,
        (&Method::GET | &Method::HEAD, "sign") => {
            download_signed(&s, tail, q, Want::new(head, &headers)).await
        }
        (&Method::POST, "upload") if tail.starts_with("sign/") => {
            sign_upload(&s, &headers, &tail[5..], body).await
        }
        (&Method::PUT, "upload") if tail.starts_with("sign/") => {
            upload_signed(&s, &headers, &tail[5..], q, body).await
        }
        (&Method::GET | &Method::HEAD, "public") => {
            download_public(&s, tail, q, Want::new(head, &headers)).await
        }
        (&Method::GET | &Method::HEAD, "authenticated") => {
            download(
                &s,
                &headers,
                tail,
                q,
                Want::new(head, &headers),
                Access::Token,
            )
            .await
        }
        (&Method::GET, "info") => {
            if let Some(t) = tail.strip_prefix("public/") {
                info(&s, &headers, t, Access::Public).await
            } else if let Some(t) = tail.strip_prefix("authenticated/") {
                info(&s, &headers, t, Access::Token).await
            } else {
                info(&s, &headers, tail, Access::TokenOrPublic).await
            }
        }
        (&Method::GET | &Method::HEAD, _) => {
            let want = Want::new(head, &headers);
            download(&s, &headers, &rest, q, want, Access::TokenOrPublic).await
        }
        (&Method::POST, _) => {
            let upsert =
                header_str(&headers, "x-upsert").is_some_and(|v| v.eq_ignore_ascii_case("true"));
            upload_as_caller(&s, &headers, &rest, upsert, body).await
        }
        (&Method::PUT, _) => upload_as_caller(&s, &headers, &rest, true, body).await,
        (&Method::DELETE, _) if tail.is_empty() => remove_many(&s, &headers, first, body).await,
        (&Method::DELETE, _) => remove_one(&s, &headers, &rest).await,
        _ => Err(StorageError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("Route {method} /object/{rest} not found"),
        )),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The whole body, refused with 413 past `limit` bytes: up front when `Content-Length` says
/// so, else as soon as the bytes read pass it (nothing more is read).
pub(crate) async fn read_capped(headers: &HeaderMap, body: Body, limit: u64) -> Result<Vec<u8>> {
    if content_length(headers).is_some_and(|n| n > limit) {
        return Err(StorageError::body_too_large());
    }
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(body_error)?;
        if (out.len() + chunk.len()) as u64 > limit {
            return Err(StorageError::body_too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A request body's read error: the route's body limit (the router's layer) is a 413.
fn body_error(e: axum::Error) -> StorageError {
    if e.into_inner().is::<http_body_util::LengthLimitError>() {
        StorageError::body_too_large()
    } else {
        StorageError::bad_request("the request body could not be read")
    }
}

/// A JSON body of at most [`JSON_BODY_LIMIT`] bytes.
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> Result<T> {
    let bytes = read_capped(headers, body, JSON_BODY_LIMIT).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| StorageError::bad_request(format!("invalid JSON body: {e}")))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, "content-length").and_then(|v| v.trim().parse().ok())
}

/// A bucket's limits, read as the service role (like Supabase Storage, which reads bucket
/// metadata as superuser: the caller's RLS on buckets does not hide a bucket's limits).
pub(crate) struct BucketMeta {
    pub(crate) public: bool,
    pub(crate) file_size_limit: Option<i64>,
    pub(crate) allowed_mime_types: Option<Vec<String>>,
}

pub(crate) async fn bucket_meta(s: &StorageState, bucket: &str) -> Result<BucketMeta> {
    let tx = s.db.begin(&Caller::service().tx().read_only(true)).await?;
    let rows = tx
        .query_typed_and_commit(
            "select public, file_size_limit, allowed_mime_types from storage.buckets where id = $1",
            &[(&bucket, Type::TEXT)],
        )
        .await?;
    let row = rows
        .into_iter()
        .next()
        .ok_or_else(StorageError::bucket_not_found)?;
    Ok(BucketMeta {
        public: row.get(0),
        file_size_limit: row.get(1),
        allowed_mime_types: row.get(2),
    })
}

pub(crate) fn mime_allowed(allowed: &[String], mime: &str) -> bool {
    let base = mime
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    allowed.iter().any(|a| {
        let a = a.trim().to_ascii_lowercase();
        a == base
            || a == "*/*"
            || a.strip_suffix("/*")
                .is_some_and(|t| base.split('/').next() == Some(t))
    })
}

/// The bytes of a multipart body's `field` as they arrive; parts after it are not read.
pub fn file_part_stream(
    mp: multer::Multipart<'static>,
    field: multer::Field<'static>,
) -> ByteStream {
    futures::stream::unfold((mp, Some(field)), |(mp, field)| async move {
        let mut field = field?;
        match field.chunk().await {
            Ok(Some(b)) => Some((Ok(b), (mp, Some(field)))),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e)), (mp, None))),
        }
    })
    .boxed()
}

/// Why the multipart parser's input stream stopped: the body sent more than
/// [`MAX_FORM_PRELUDE`] bytes before its file part.
#[derive(Debug)]
struct PreludeTooLarge;

impl std::fmt::Display for PreludeTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the multipart body sent more than {MAX_FORM_PRELUDE} bytes before its file"
        )
    }
}

impl std::error::Error for PreludeTooLarge {}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A multipart parser error as Storage answers it: 413 past the prelude's cap, else 400.
pub fn form_error(e: multer::Error) -> StorageError {
    match e {
        multer::Error::StreamReadFailed(inner) if inner.is::<PreludeTooLarge>() => {
            StorageError::body_too_large()
        }
        other => StorageError::bad_request(other.to_string()),
    }
}

/// The parser of a `multipart/form-data` body whose input fails once it has handed over
/// [`MAX_FORM_PRELUDE`] bytes while `file_started` is false; the caller sets it when the file
/// part begins (whose bytes the backend counts against the object's limit).
pub fn capped_multipart(
    body: Body,
    boundary: String,
    file_started: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> multer::Multipart<'static> {
    let mut seen = 0u64;
    let input = body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(|e| Box::new(e) as BoxError)?;
        if !file_started.load(std::sync::atomic::Ordering::Relaxed) {
            seen += chunk.len() as u64;
            if seen > MAX_FORM_PRELUDE {
                return Err(Box::new(PreludeTooLarge) as BoxError);
            }
        }
        Ok(chunk)
    });
    multer::Multipart::new(input, boundary)
}

/// A non-file part, at most [`MAX_FORM_FIELD`] bytes (refused with 413 past that, without
/// reading further).
async fn small_part(mut field: multer::Field<'static>) -> Result<Vec<u8>> {
    let name = field.name().unwrap_or_default().to_string();
    let mut value = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(form_error)? {
        if value.len() + chunk.len() > MAX_FORM_FIELD {
            return Err(StorageError::field_too_large(&name, MAX_FORM_FIELD));
        }
        value.extend_from_slice(&chunk);
    }
    Ok(value)
}

/// What an upload sends besides its bytes.
struct UploadParts {
    mime: String,
    cache_control: String,
    /// The object's custom metadata (`user_metadata`), when the client sent a JSON object.
    user_metadata: Option<Value>,
    stream: ByteStream,
}

/// Custom metadata as Supabase Storage reads it: JSON text of at most [`MAX_USER_METADATA`]
/// bytes (413 past that); text that is not a JSON object is ignored, as Storage ignores text
/// it cannot parse.
fn user_metadata(json: &[u8]) -> Result<Option<Value>> {
    if json.len() > MAX_USER_METADATA {
        return Err(StorageError::entity_too_large("user_metadata"));
    }
    Ok(serde_json::from_slice::<Value>(json)
        .ok()
        .filter(Value::is_object))
}

/// The `x-metadata` header: base64 of the metadata's JSON (storage-js's `toBase64`).
fn metadata_header(headers: &HeaderMap) -> Result<Option<Value>> {
    use base64::Engine;
    let Some(v) = header_str(headers, "x-metadata") else {
        return Ok(None);
    };
    let v = v.trim();
    // Base64 is 4 characters for 3 bytes: a longer header cannot decode within the cap.
    if v.len() > MAX_USER_METADATA / 3 * 4 + 4 {
        return Err(StorageError::entity_too_large("user_metadata"));
    }
    let decoded = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ]
    .iter()
    .find_map(|e| e.decode(v).ok());
    match decoded {
        Some(json) => user_metadata(&json),
        None => Ok(None),
    }
}

/// The upload's bytes, content type, cache control and custom metadata: the raw body (with
/// `x-metadata`), or the file part of a `multipart/form-data` body (storage-js sends Blobs and
/// Files that way, `cacheControl` and `metadata` parts first; a `contentType` part overrides
/// the file part's type, as in Storage). The parts before the file are read under
/// [`MAX_FORM_FIELD`] each and [`MAX_FORM_PRELUDE`] in all.
async fn upload_body(headers: &HeaderMap, body: Body) -> Result<UploadParts> {
    let content_type = header_str(headers, "content-type")
        .unwrap_or("application/octet-stream")
        .to_string();
    let cache_from_header = header_str(headers, "cache-control")
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    if let Ok(boundary) = multer::parse_boundary(&content_type) {
        let file_started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut mp = capped_multipart(body, boundary, file_started.clone());
        let mut cache = cache_from_header;
        let mut meta: Option<Option<Value>> = None;
        let mut mime_field: Option<String> = None;
        while let Some(field) = mp.next_field().await.map_err(form_error)? {
            let is_file = field.file_name().is_some() || matches!(field.name(), None | Some(""));
            if is_file {
                file_started.store(true, std::sync::atomic::Ordering::Relaxed);
                let mime = mime_field
                    .filter(|m| !m.trim().is_empty())
                    .or_else(|| field.content_type().map(|m| m.to_string()))
                    .unwrap_or_else(|| "application/octet-stream".into());
                // The file part streams; later parts (none, from storage-js) are not read.
                let stream = file_part_stream(mp, field);
                return Ok(UploadParts {
                    mime,
                    cache_control: cache.unwrap_or_else(|| "max-age=3600".into()),
                    user_metadata: meta.flatten(),
                    stream,
                });
            }
            let name = field.name().unwrap_or_default().to_string();
            // Every part is read under the same cap; the ones Storage knows are kept.
            let value = small_part(field).await?;
            match name.as_str() {
                "cacheControl" => {
                    let secs = String::from_utf8(value).map_err(|_| {
                        StorageError::bad_request("cacheControl must be UTF-8 text")
                    })?;
                    cache = Some(format!("max-age={}", secs.trim()));
                }
                // `metadata` wins over `userMetadata` (Storage reads them in that order).
                "metadata" => meta = Some(user_metadata(&value)?),
                "userMetadata" if meta.is_none() => meta = Some(user_metadata(&value)?),
                "contentType" => mime_field = String::from_utf8(value).ok(),
                _ => {}
            }
        }
        return Err(StorageError::bad_request("the multipart body has no file"));
    }
    let user_metadata = metadata_header(headers)?;
    let stream = body
        .into_data_stream()
        .map_err(std::io::Error::other)
        .boxed();
    Ok(UploadParts {
        mime: content_type,
        cache_control: cache_from_header.unwrap_or_else(|| "no-cache".into()),
        user_metadata,
        stream,
    })
}

/// Who writes: the caller's role and claims, the row's owner.
struct Writer {
    caller: Caller,
    owner: Option<Uuid>,
}

async fn upload_as_caller(
    s: &StorageState,
    headers: &HeaderMap,
    rest: &str,
    upsert: bool,
    body: Body,
) -> Result<Response> {
    let caller = Caller::from_headers(&s.keys, headers)?;
    let (bucket, name) = split_path(rest)?;
    let owner = caller.owner();
    store(
        s,
        Writer { caller, owner },
        &bucket,
        &name,
        upsert,
        headers,
        body,
    )
    .await
}

/// An upload written in full (and fsynced) to the backend but visible to no reader, waiting
/// for the transaction whose row names it: [`StorageState::insert_object_row`] in that
/// transaction, [`StorageState::publish`] just before its commit, and
/// [`StorageState::discard`] when anything fails. Lets another surface (the `documents`
/// function) store an object and rows of its own in one transaction.
#[derive(Debug)]
pub struct StagedObject {
    pub bucket: String,
    pub name: String,
    pub version: String,
    pub size: u64,
    pub mime: String,
    pub cache_control: String,
    /// The object's custom metadata (`user_metadata`), returned by `info` as `metadata`.
    pub user_metadata: Option<Value>,
    pending: Pending,
}

impl StorageState {
    /// Checks `bucket`'s MIME allow-list, then streams `body` to the backend under the
    /// bucket's (and the server's) size limit: 404 for an unknown bucket, 415, 413.
    pub async fn stage(
        &self,
        bucket: &str,
        name: &str,
        mime: &str,
        cache_control: &str,
        body: ByteStream,
    ) -> Result<StagedObject> {
        validate_bucket(bucket)?;
        validate_key(name)?;
        let meta = bucket_meta(self, bucket).await?;
        self.stage_in(&meta, bucket, name, mime, cache_control, body)
            .await
    }

    pub(crate) async fn stage_in(
        &self,
        meta: &BucketMeta,
        bucket: &str,
        name: &str,
        mime: &str,
        cache_control: &str,
        body: ByteStream,
    ) -> Result<StagedObject> {
        if let Some(allowed) = meta.allowed_mime_types.as_deref().filter(|a| !a.is_empty()) {
            if !mime_allowed(allowed, mime) {
                return Err(StorageError::invalid_mime(mime));
            }
        }
        let version = Uuid::new_v4().to_string();
        let pending = self
            .backend
            .write(
                object_key(bucket, name, &version),
                body,
                meta.size_limit(self),
            )
            .await?;
        Ok(StagedObject {
            bucket: bucket.to_string(),
            name: name.to_string(),
            version,
            size: pending.size,
            mime: mime.to_string(),
            cache_control: cache_control.to_string(),
            user_metadata: None,
            pending,
        })
    }

    /// Inserts (or, with `upsert`, replaces) the staged object's `storage.objects` row in `tx`,
    /// as whoever `tx` runs as: the bucket's policies decide. Returns the row id and the
    /// version it replaced (whose file [`Self::forget_version`] removes after the commit).
    pub async fn insert_object_row(
        &self,
        tx: &mut ClaimsTxn,
        staged: &StagedObject,
        owner: Option<Uuid>,
        upsert: bool,
    ) -> Result<(Uuid, Option<String>)> {
        let (bucket, name, version) = (&staged.bucket, &staged.name, &staged.version);
        let old: Option<String> = if upsert {
            tx.query_opt(
                "select version from storage.objects where bucket_id = $1 and name = $2 for update",
                &[bucket, name],
            )
            .await?
            .and_then(|r| r.get(0))
        } else {
            None
        };
        let metadata = json!({
            "eTag": format!("\"{version}\""),
            "size": staged.size,
            "mimetype": staged.mime,
            "cacheControl": staged.cache_control,
            "lastModified": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "contentLength": staged.size,
            "httpStatusCode": 200,
        });
        // A replaced object is a new object: its custom metadata is what this upload sent.
        let sql = if upsert {
            "insert into storage.objects (bucket_id, name, owner, metadata, version, user_metadata) values ($1, $2, $3, $4, $5, $6)
             on conflict (bucket_id, name) do update set owner = excluded.owner, metadata = excluded.metadata,
               version = excluded.version, user_metadata = excluded.user_metadata,
               updated_at = now(), last_accessed_at = now()
             returning id"
        } else {
            "insert into storage.objects (bucket_id, name, owner, metadata, version, user_metadata) values ($1, $2, $3, $4, $5, $6) returning id"
        };
        let row = tx
            .query_one(
                sql,
                &[
                    bucket,
                    name,
                    &owner,
                    &metadata,
                    version,
                    &staged.user_metadata,
                ],
            )
            .await?;
        Ok((row.get(0), old.filter(|o| o != version)))
    }

    /// Makes the staged bytes readable under their key: the last step before the commit.
    pub async fn publish(&self, staged: &mut StagedObject) -> Result<()> {
        Ok(self.backend.publish(&mut staged.pending).await?)
    }

    /// Removes what staging (and publishing) left behind, after a failure.
    pub async fn discard(&self, staged: StagedObject) {
        self.backend.discard(staged.pending).await;
    }

    /// After a COMMIT whose answer was lost with its connection: the row may or may not
    /// have been written, and a row must never name a missing file. The published file is
    /// kept, and removed only once a fresh connection shows that no row names its version
    /// (asked every second while the database is away, for up to 10 minutes; past that
    /// the file stays: an unreferenced file wastes space, a missing one loses an object).
    pub fn settle_in_doubt(&self, staged: StagedObject) {
        let s = self.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(600);
            loop {
                let named = async {
                    let tx = s.db.begin(&Caller::service().tx().read_only(true)).await?;
                    let rows = tx
                        .query_typed_and_commit(
                            "select 1 from storage.objects where bucket_id = $1 and name = $2 and version = $3",
                            &[
                                (&staged.bucket, Type::TEXT),
                                (&staged.name, Type::TEXT),
                                (&staged.version, Type::TEXT),
                            ],
                        )
                        .await?;
                    Ok::<_, StorageError>(!rows.is_empty())
                }
                .await;
                match named {
                    Ok(true) => {
                        tracing::info!(bucket = %staged.bucket, name = %staged.name, "upload whose answer was lost did commit: its file is kept");
                        return;
                    }
                    Ok(false) => {
                        s.discard(staged).await;
                        return;
                    }
                    Err(_) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                    Err(e) => {
                        tracing::warn!(bucket = %staged.bucket, name = %staged.name, error = ?e, "could not learn whether an upload committed; its file is kept");
                        return;
                    }
                }
            }
        });
    }

    /// Removes the file of a version no row names any more (after the commit that replaced it).
    /// Its transformed images go too.
    pub async fn forget_version(&self, bucket: &str, name: &str, version: &str) {
        if let Err(e) = self.backend.delete(object_key(bucket, name, version)).await {
            tracing::warn!(error = %e, "removing a replaced object's file");
        }
        self.render.forget(bucket, name).await;
    }
}

impl BucketMeta {
    /// The bucket's own limit, never above the server's.
    pub(crate) fn size_limit(&self, s: &StorageState) -> u64 {
        self.file_size_limit.map_or(s.file_size_limit, |l| {
            (l.max(0) as u64).min(s.file_size_limit)
        })
    }

    /// Refuses an existing object (its row's `metadata`) that this bucket would not have
    /// accepted as an upload: 413 past its size limit, 415 outside its MIME allow-list.
    fn admits(&self, s: &StorageState, metadata: Option<&Value>) -> Result<()> {
        let size = metadata
            .and_then(|m| m.get("size"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if size > self.size_limit(s) {
            return Err(StorageError::too_large());
        }
        if let Some(allowed) = self.allowed_mime_types.as_deref().filter(|a| !a.is_empty()) {
            let mime = metadata
                .and_then(|m| m.get("mimetype"))
                .and_then(Value::as_str)
                .unwrap_or("application/octet-stream");
            if !mime_allowed(allowed, mime) {
                return Err(StorageError::invalid_mime(mime));
            }
        }
        Ok(())
    }
}

/// Writes one object: file staged and fsynced, row inserted (or upserted) as the writer,
/// file renamed into place, commit; on failure the file is removed and the row rolled back.
async fn store(
    s: &StorageState,
    w: Writer,
    bucket: &str,
    name: &str,
    upsert: bool,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    // Everything that can be decided before the body is read is: the bucket exists, the
    // declared length fits, the writer may write this name. A refusal reads nothing.
    let meta = bucket_meta(s, bucket).await?;
    let multipart = header_str(headers, "content-type").is_some_and(|c| {
        c.trim_start()
            .to_ascii_lowercase()
            .starts_with("multipart/")
    });
    let allowed = if multipart {
        meta.size_limit(s).saturating_add(FORM_OVERHEAD)
    } else {
        meta.size_limit(s)
    };
    if content_length(headers).is_some_and(|n| n > allowed) {
        return Err(StorageError::too_large());
    }
    probe_write(s, &w.caller, w.owner, bucket, name, upsert).await?;
    let parts = upload_body(headers, body).await?;
    let mut staged = s
        .stage_in(
            &meta,
            bucket,
            name,
            &parts.mime,
            &parts.cache_control,
            parts.stream,
        )
        .await?;
    staged.user_metadata = parts.user_metadata;
    let prepared = async {
        let mut tx = s.db.begin(&w.caller.tx()).await?;
        let row = s
            .insert_object_row(&mut tx, &staged, w.owner, upsert)
            .await?;
        s.publish(&mut staged).await?;
        Ok::<_, StorageError>((tx, row))
    }
    .await;
    let committed = match prepared {
        Ok((tx, row)) => match tx.commit().await {
            Ok(()) => Ok(row),
            // The connection died with the COMMIT in flight: whether the row was written is
            // unknown until the database is back. The file stays until that is known.
            Err(e @ agencyflow_db::DbError::Unavailable(_)) => {
                s.settle_in_doubt(staged);
                return Err(e.into());
            }
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e),
    };
    match committed {
        Ok((id, old)) => {
            if let Some(old) = old {
                s.forget_version(bucket, name, &old).await;
            }
            Ok(Json(json!({ "Id": id, "Key": format!("{bucket}/{name}") })).into_response())
        }
        Err(e) => {
            s.discard(staged).await;
            Err(e)
        }
    }
}

/// Refuses (403 under RLS, 409 for an existing name without upsert) unless `caller` could
/// write the row now: the insert runs and is rolled back, as Supabase Storage's
/// `testPermission` does, so an upload is judged before its body is read.
pub(crate) async fn probe_write(
    s: &StorageState,
    caller: &Caller,
    owner: Option<Uuid>,
    bucket: &str,
    name: &str,
    upsert: bool,
) -> Result<()> {
    let mut tx = s.db.begin(&caller.tx()).await?;
    let sql = if upsert {
        "insert into storage.objects (bucket_id, name, owner) values ($1, $2, $3)
         on conflict (bucket_id, name) do update set updated_at = now()"
    } else {
        "insert into storage.objects (bucket_id, name, owner) values ($1, $2, $3)"
    };
    tx.execute(sql, &[&bucket, &name, &owner]).await?;
    tx.rollback().await?;
    Ok(())
}

/// An object row as the caller sees it.
pub(crate) struct Found {
    pub(crate) version: String,
    pub(crate) metadata: Value,
    pub(crate) last_modified: String,
}

const FIND_SQL: &str = "select version, coalesce(metadata, '{}'::jsonb), \
    to_char(updated_at at time zone 'UTC', 'Dy, DD Mon YYYY HH24:MI:SS \"GMT\"') \
    from storage.objects where bucket_id = $1 and name = $2";

pub(crate) async fn find(
    s: &StorageState,
    caller: &Caller,
    bucket: &str,
    name: &str,
) -> Result<Found> {
    let tx = s.db.begin(&caller.tx().read_only(true)).await?;
    let rows = tx
        .query_typed_and_commit(FIND_SQL, &[(&bucket, Type::TEXT), (&name, Type::TEXT)])
        .await?;
    let row = rows
        .into_iter()
        .next()
        .ok_or_else(StorageError::object_not_found)?;
    let version: Option<String> = row.get(0);
    Ok(Found {
        version: version.ok_or_else(StorageError::object_not_found)?,
        metadata: row.get(1),
        last_modified: row.get(2),
    })
}

/// How a download was asked for: GET or HEAD, and its `Range` header.
#[derive(Clone, Copy)]
struct Want<'a> {
    head: bool,
    range: Option<&'a str>,
}

impl<'a> Want<'a> {
    fn new(head: bool, headers: &'a HeaderMap) -> Self {
        Want {
            head,
            range: header_str(headers, "range"),
        }
    }
}

/// A `Range: bytes=…` header against an object of `size` bytes: `Ok(None)` serves the whole
/// object (no header, several ranges, another unit: all allowed by RFC 9110), `Ok(Some)` the
/// one satisfiable range (end exclusive), `Err(())` a 416.
fn byte_range(header: Option<&str>, size: u64) -> std::result::Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        // The last `b` bytes.
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 || size == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            size
        } else {
            let last: u64 = b.parse().map_err(|_| ())?;
            if last < start {
                return Err(());
            }
            last.saturating_add(1).min(size)
        };
        if start >= size {
            return Err(());
        }
        (start, end)
    };
    Ok(Some(range))
}

async fn serve(
    s: &StorageState,
    bucket: &str,
    name: &str,
    found: Found,
    query: Option<&str>,
    want: Want<'_>,
) -> Result<Response> {
    let key = object_key(bucket, name, &found.version);
    let mime = found
        .metadata
        .get("mimetype")
        .and_then(Value::as_str)
        .unwrap_or("application/octet-stream")
        .to_string();
    let size = found
        .metadata
        .get("size")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let range = match byte_range(want.range, size) {
        Ok(r) => r,
        Err(()) => {
            let mut r = StorageError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "InvalidRange",
                format!("The requested range is not satisfiable (the object has {size} bytes)"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(r);
        }
    };
    let missing = |key: &str| {
        tracing::error!(key = %key, "an object row names a file that is missing");
        StorageError::object_not_found()
    };
    let mut resp = match (want.head, range) {
        (true, None) => {
            let mut r = Response::new(Body::empty());
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
            r
        }
        (false, None) => {
            let Some((size, stream)) = s.backend.read(key.clone()).await? else {
                return Err(missing(&key));
            };
            let mut r = Response::new(Body::from_stream(stream));
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
            r
        }
        (head, Some((start, end))) => {
            let body = if head {
                Body::empty()
            } else {
                let Some(stream) = s.backend.read_range(key.clone(), start, end).await? else {
                    return Err(missing(&key));
                };
                Body::from_stream(stream)
            };
            let mut r = Response::new(body);
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            let h = r.headers_mut();
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1)) {
                h.insert(header::CONTENT_RANGE, v);
            }
            r
        }
    };
    let h = resp.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let (content_type, active) = served_type(&mime);
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    // Objects are what users uploaded, served from the API's own origin: the browser must
    // never guess a type, and a document that could run script runs in a sandbox (an opaque
    // origin: no cookies, storage or same-origin requests) and is downloaded, not shown.
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if active {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(ACTIVE_CONTENT_CSP),
        );
    }
    if let Some(v) = found
        .metadata
        .get("cacheControl")
        .and_then(Value::as_str)
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        h.insert(header::CACHE_CONTROL, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", found.version)) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&found.last_modified) {
        h.insert(header::LAST_MODIFIED, v);
    }
    let download = query_param(query, "download").or_else(|| active.then(String::new));
    if let Some(d) = download {
        let file = if d.is_empty() {
            name.rsplit('/').next().unwrap_or(name).to_string()
        } else {
            d
        };
        let enc = percent_encoding::utf8_percent_encode(&file, ATTR_CHAR);
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename*=UTF-8''{enc}")) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    Ok(resp)
}

/// The policy of an object that could run script if a browser rendered it.
const ACTIVE_CONTENT_CSP: &str = "default-src 'none'; sandbox";

/// Types a browser shows inline without running anything in the page's origin.
const PASSIVE_TYPES: &[&str] = &[
    "text/plain",
    "text/csv",
    "application/json",
    "application/pdf",
    "image/png",
    "image/jpeg",
    "image/jpg",
    "image/pjpeg",
    "image/gif",
    "image/webp",
    "image/avif",
    "image/apng",
    "image/bmp",
    "image/x-icon",
    "image/vnd.microsoft.icon",
    "image/tiff",
    "image/heic",
    "image/heif",
];

/// The `Content-Type` an object is served with, and whether it is active content (served
/// with [`ACTIVE_CONTENT_CSP`] and as an attachment). Only a known passive type (a raster
/// image, audio, video, a font, plain text, CSV, JSON, PDF) is passive: HTML, XHTML, SVG,
/// XML, JavaScript and anything unknown are active. A stored type that is not one clean
/// `type/subtype[; params]` (browsers read `text/plain, text/html` as HTML) is served as
/// `application/octet-stream`; `text/html` as `text/plain`, as Supabase Storage serves it.
fn served_type(stored: &str) -> (String, bool) {
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    let base = stored.split(';').next().unwrap_or("").trim();
    let clean = !stored.contains(',')
        && !stored.chars().any(|c| c.is_control() || !c.is_ascii())
        && base.split_once('/').is_some_and(|(t, st)| {
            !t.is_empty() && !st.is_empty() && t.chars().all(tchar) && st.chars().all(tchar)
        });
    if !clean {
        return ("application/octet-stream".into(), true);
    }
    let base = base.to_ascii_lowercase();
    if base == "text/html" {
        let params = stored.find(';').map_or("", |i| &stored[i..]);
        return (format!("text/plain{params}"), true);
    }
    let passive = PASSIVE_TYPES.contains(&base.as_str())
        || ["audio/", "video/", "font/"]
            .iter()
            .any(|p| base.starts_with(p));
    (stored.to_string(), !passive)
}

/// Who may read an object on a route, as Supabase Storage routes them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// `/authenticated/...`: a token (or `apikey`) is required; RLS decides as the caller.
    Token,
    /// `/object/{bucket}/...`, `/object/info/{bucket}/...`: as [`Access::Token`], and without
    /// any credential the object of a public bucket (else `Bucket not found`).
    TokenOrPublic,
    /// `/public/...`: any object of a public bucket; in a private one, only what the caller's
    /// RLS shows (never what the service role would, whatever Storage does there).
    Public,
}

/// The role that reads `bucket` for this request on a route of `access`.
async fn reader(
    s: &StorageState,
    headers: &HeaderMap,
    bucket: &str,
    access: Access,
) -> Result<Caller> {
    let public = || async {
        match bucket_meta(s, bucket).await {
            Ok(meta) if meta.public => Ok(Caller::service()),
            _ => Err(StorageError::bucket_not_found()),
        }
    };
    match access {
        Access::Token => Caller::from_headers(&s.keys, headers),
        Access::TokenOrPublic => match Caller::from_headers_opt(&s.keys, headers)? {
            Some(caller) => Ok(caller),
            None => public().await,
        },
        Access::Public => match public().await {
            Ok(service) => Ok(service),
            Err(not_public) => Caller::from_headers_opt(&s.keys, headers)?.ok_or(not_public),
        },
    }
}

async fn download(
    s: &StorageState,
    headers: &HeaderMap,
    rest: &str,
    query: Option<&str>,
    want: Want<'_>,
    access: Access,
) -> Result<Response> {
    let (bucket, name) = split_path(rest)?;
    let caller = reader(s, headers, &bucket, access).await?;
    let found = find(s, &caller, &bucket, &name).await?;
    serve(s, &bucket, &name, found, query, want).await
}

async fn download_public(
    s: &StorageState,
    rest: &str,
    query: Option<&str>,
    want: Want<'_>,
) -> Result<Response> {
    let (bucket, name) = split_path(rest)?;
    let meta = bucket_meta(s, &bucket)
        .await
        .map_err(|_| StorageError::object_not_found())?;
    if !meta.public {
        return Err(StorageError::object_not_found());
    }
    let found = find(s, &Caller::service(), &bucket, &name).await?;
    serve(s, &bucket, &name, found, query, want).await
}

/// `info`, in the shape of Storage's info renderer (what storage-js's `info()` camelizes):
/// `id, name, version, bucket_id, size, content_type, cache_control, etag, metadata (the
/// custom metadata, `{}` when there is none), last_modified, created_at`. No `updated_at`
/// (storage-js documents `last_modified` in its place), `owner` or `last_accessed_at`.
async fn info(
    s: &StorageState,
    headers: &HeaderMap,
    rest: &str,
    access: Access,
) -> Result<Response> {
    let (bucket, name) = split_path(rest)?;
    let caller = reader(s, headers, &bucket, access).await?;
    let tx = s.db.begin(&caller.tx().read_only(true)).await?;
    let sql = format!(
        "select json_build_object('id', id, 'name', name, 'version', version, 'bucket_id', bucket_id,
           'size', (metadata->>'size')::bigint, 'content_type', metadata->>'mimetype',
           'cache_control', metadata->>'cacheControl', 'etag', metadata->>'eTag',
           'metadata', coalesce(user_metadata, '{{}}'::jsonb),
           'last_modified', {}, 'created_at', {})::text
         from storage.objects where bucket_id = $1 and name = $2",
        iso("updated_at"),
        iso("created_at"),
    );
    let rows = tx
        .query_typed_and_commit(&sql, &[(&bucket, Type::TEXT), (&name, Type::TEXT)])
        .await?;
    let row = rows
        .into_iter()
        .next()
        .ok_or_else(StorageError::object_not_found)?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        row.get::<_, String>(0),
    )
        .into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SortBy {
    column: Option<String>,
    order: Option<String>,
}

#[derive(Deserialize)]
struct ListBody {
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    offset: Option<i64>,
    #[serde(default, rename = "sortBy")]
    sort_by: Option<SortBy>,
    #[serde(default)]
    search: Option<String>,
}

/// One level of the bucket under `prefix`: folders (`id: null`) and files, as Supabase's
/// `storage.search` returns them; RLS hides what the caller may not select.
async fn list(s: &StorageState, headers: &HeaderMap, bucket: &str, body: Body) -> Result<Response> {
    let caller = Caller::from_headers(&s.keys, headers)?;
    validate_bucket(bucket)?;
    let b: ListBody = json_body(headers, body).await?;
    let mut prefix = b
        .prefix
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_string();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    let sort = b.sort_by.unwrap_or_default();
    let column = match sort.column.as_deref().unwrap_or("name") {
        "name" => "name",
        "updated_at" => "updated_at",
        "created_at" => "created_at",
        "last_accessed_at" => "last_accessed_at",
        other => return Err(StorageError::bad_request(format!("cannot sort by {other}"))),
    };
    let order = match sort
        .order
        .as_deref()
        .unwrap_or("asc")
        .to_ascii_lowercase()
        .as_str()
    {
        "asc" => "asc",
        "desc" => "desc",
        other => {
            return Err(StorageError::bad_request(format!(
                "invalid sort order {other}"
            )))
        }
    };
    let limit = b.limit.unwrap_or(100).clamp(1, 1000);
    let offset = b.offset.unwrap_or(0).max(0);
    let search = b.search.unwrap_or_default();
    let sql = format!(
        "with o as (
           select substr(name, length($2) + 1) as rest, id, updated_at, created_at, last_accessed_at, metadata
           from storage.objects where bucket_id = $1 and starts_with(name, $2)
         ), e as (
           select split_part(rest, '/', 1) as name, null::uuid as id, null::timestamptz as updated_at,
                  null::timestamptz as created_at, null::timestamptz as last_accessed_at, null::jsonb as metadata
           from o where strpos(rest, '/') > 0 group by 1
           union all
           select rest, id, updated_at, created_at, last_accessed_at, metadata from o where strpos(rest, '/') = 0
         ), page as (
           select * from e where $3 = '' or name ilike replace(replace(replace($3, '\\', '\\\\'), '%', '\\%'), '_', '\\_') || '%'
           order by {column} {order} nulls last, name
           limit $4 offset $5
         )
         select coalesce(json_agg(json_build_object('name', name, 'id', id, 'updated_at', {u},
                  'created_at', {c}, 'last_accessed_at', {l}, 'metadata', metadata)
                  order by {column} {order} nulls last, name), '[]')::text from page",
        u = iso("updated_at"),
        c = iso("created_at"),
        l = iso("last_accessed_at"),
    );
    let tx = s.db.begin(&caller.tx().read_only(true)).await?;
    let rows = tx
        .query_typed_and_commit(
            &sql,
            &[
                (&bucket, Type::TEXT),
                (&prefix, Type::TEXT),
                (&search, Type::TEXT),
                (&limit, Type::INT8),
                (&offset, Type::INT8),
            ],
        )
        .await?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        rows[0].get::<_, String>(0),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MoveBody {
    bucket_id: String,
    source_key: String,
    destination_key: String,
    #[serde(default)]
    destination_bucket: Option<String>,
}

/// Move: the row is renamed (RLS checks the old and the new name), the file linked under its
/// new key before the commit and unlinked from the old one after it. Copy: a new row and a
/// new version with the same bytes.
async fn move_or_copy(
    s: &StorageState,
    headers: &HeaderMap,
    body: Body,
    copy: bool,
) -> Result<Response> {
    let caller = Caller::from_headers(&s.keys, headers)?;
    let b: MoveBody = json_body(headers, body).await?;
    let dest_bucket = b
        .destination_bucket
        .clone()
        .unwrap_or_else(|| b.bucket_id.clone());
    validate_bucket(&b.bucket_id)?;
    validate_bucket(&dest_bucket)?;
    validate_key(&b.source_key)?;
    validate_key(&b.destination_key)?;
    // The destination bucket's limits hold for what arrives there by copy or move too.
    let dest_meta = bucket_meta(s, &dest_bucket).await?;
    let mut tx = s.db.begin(&caller.tx()).await?;
    let (old_key, new_key, id) = if copy {
        let row = tx
            .query_opt(
                "select version, metadata, user_metadata from storage.objects where bucket_id = $1 and name = $2",
                &[&b.bucket_id, &b.source_key],
            )
            .await?
            .ok_or_else(StorageError::object_not_found)?;
        let version: Option<String> = row.get(0);
        let version = version.ok_or_else(StorageError::object_not_found)?;
        let (metadata, user_metadata): (Option<Value>, Option<Value>) = (row.get(1), row.get(2));
        dest_meta.admits(s, metadata.as_ref())?;
        let new_version = Uuid::new_v4().to_string();
        let id: Uuid = tx
            .query_one(
                "insert into storage.objects (bucket_id, name, owner, metadata, user_metadata, version) values ($1, $2, $3, $4, $5, $6) returning id",
                &[&dest_bucket, &b.destination_key, &caller.owner(), &metadata, &user_metadata, &new_version],
            )
            .await?
            .get(0);
        (
            object_key(&b.bucket_id, &b.source_key, &version),
            object_key(&dest_bucket, &b.destination_key, &new_version),
            id,
        )
    } else {
        let row = tx
            .query_opt(
                "update storage.objects set bucket_id = $3, name = $4, updated_at = now()
                 where bucket_id = $1 and name = $2 returning version, id, metadata",
                &[
                    &b.bucket_id,
                    &b.source_key,
                    &dest_bucket,
                    &b.destination_key,
                ],
            )
            .await?
            .ok_or_else(StorageError::object_not_found)?;
        let version: Option<String> = row.get(0);
        let version = version.ok_or_else(StorageError::object_not_found)?;
        let metadata: Option<Value> = row.get(2);
        dest_meta.admits(s, metadata.as_ref())?;
        (
            object_key(&b.bucket_id, &b.source_key, &version),
            object_key(&dest_bucket, &b.destination_key, &version),
            row.get(1),
        )
    };
    if let Err(e) = s.backend.copy(old_key.clone(), new_key.clone()).await {
        return Err(e.into());
    }
    if let Err(e) = tx.commit().await {
        let _ = s.backend.delete(new_key).await;
        return Err(e.into());
    }
    if copy {
        return Ok(Json(
            json!({ "Id": id, "Key": format!("{dest_bucket}/{}", b.destination_key) }),
        )
        .into_response());
    }
    if let Err(e) = s.backend.delete(old_key).await {
        tracing::warn!(error = %e, "removing a moved object's old file");
    }
    s.render.forget(&b.bucket_id, &b.source_key).await;
    Ok(Json(json!({ "message": "Successfully moved" })).into_response())
}

/// A removed object, as Storage's `remove` answers it (timestamps as Storage renders them).
fn object_json() -> String {
    format!(
        "jsonb_build_object('name', name, 'bucket_id', bucket_id, 'owner', owner, 'id', id, \
         'updated_at', {}, 'created_at', {}, 'last_accessed_at', {}, 'metadata', metadata)",
        iso("updated_at"),
        iso("created_at"),
        iso("last_accessed_at")
    )
}

async fn delete_rows(
    s: &StorageState,
    mut tx: ClaimsTxn,
    bucket: &str,
    names: &[String],
) -> Result<Vec<Value>> {
    let sql = format!(
        "delete from storage.objects where bucket_id = $1 and name = any($2) returning version, {}",
        object_json()
    );
    let rows = tx.query(&sql, &[&bucket, &names]).await?;
    tx.commit().await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let version: Option<String> = r.get(0);
        let obj: Value = r.get(1);
        if let (Some(v), Some(name)) = (version, obj.get("name").and_then(Value::as_str)) {
            if let Err(e) = s.backend.delete(object_key(bucket, name, &v)).await {
                tracing::warn!(error = %e, "removing a deleted object's file");
            }
            s.render.forget(bucket, name).await;
        }
        out.push(obj);
    }
    Ok(out)
}

#[derive(Deserialize)]
struct RemoveBody {
    prefixes: Vec<String>,
}

async fn remove_many(
    s: &StorageState,
    headers: &HeaderMap,
    bucket: &str,
    body: Body,
) -> Result<Response> {
    let caller = Caller::from_headers(&s.keys, headers)?;
    validate_bucket(bucket)?;
    let b: RemoveBody = json_body(headers, body).await?;
    if b.prefixes.is_empty() || b.prefixes.len() > 1000 {
        return Err(StorageError::bad_request(
            "prefixes must hold 1 to 1000 names",
        ));
    }
    let tx = s.db.begin(&caller.tx()).await?;
    let deleted = delete_rows(s, tx, bucket, &b.prefixes).await?;
    Ok(Json(Value::Array(deleted)).into_response())
}

async fn remove_one(s: &StorageState, headers: &HeaderMap, rest: &str) -> Result<Response> {
    let caller = Caller::from_headers(&s.keys, headers)?;
    let (bucket, name) = split_path(rest)?;
    let tx = s.db.begin(&caller.tx()).await?;
    let deleted = delete_rows(s, tx, &bucket, &[name]).await?;
    if deleted.is_empty() {
        return Err(StorageError::object_not_found());
    }
    Ok(Json(json!({ "message": "Successfully deleted" })).into_response())
}

// ---- signed URLs: HS256 JWTs over the project secret, `url` = `<bucket>/<name>` ----

fn sign_token(s: &StorageState, claims: Value) -> Result<String> {
    s.keys.sign_hs256(&claims).map_err(StorageError::internal)
}

/// Verifies a signed-URL token of `kind` for exactly `url`.
pub(crate) fn verify_token(
    s: &StorageState,
    token: Option<String>,
    kind: &str,
    url: &str,
) -> Result<Value> {
    let token = token.filter(|t| !t.is_empty()).ok_or_else(|| {
        StorageError::bad_request("querystring must have required property 'token'")
    })?;
    let claims = s.keys.verify(&token).map_err(|e| match e {
        agencyflow_keys::JwtError::Expired => StorageError::invalid_jwt("jwt expired"),
        other => StorageError::invalid_jwt(other.to_string()),
    })?;
    if claims.get("exp").and_then(Value::as_i64).is_none() {
        return Err(StorageError::invalid_jwt("the token has no expiry"));
    }
    if claims.get("storage").and_then(Value::as_str) != Some(kind)
        || claims.get("url").and_then(Value::as_str) != Some(url)
    {
        return Err(StorageError::new(
            StatusCode::BAD_REQUEST,
            "InvalidSignature",
            "The url does not match the signature",
        ));
    }
    Ok(claims)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignBody {
    #[serde(default)]
    expires_in: Value,
    #[serde(default)]
    paths: Vec<String>,
    /// An image transformation (storage-js's `createSignedUrl(path, expires, { transform })`):
    /// carried by the token, which then opens `/render/image/sign/...` only.
    #[serde(default)]
    transform: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SignUploadBody {
    #[serde(default)]
    expires_in: Value,
}

/// A JSON body that may be absent (storage-js sends `{}`; curl often nothing).
async fn optional_json_body<T: serde::de::DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: Body,
) -> Result<T> {
    let bytes = read_capped(headers, body, JSON_BODY_LIMIT).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| StorageError::bad_request(format!("invalid JSON body: {e}")))
}

/// `expiresIn`: whole seconds from 1 to `max` (a JSON integer, or its text as Supabase's
/// validator coerces it); anything else, huge numbers included, is a 400.
fn expires_in(v: &Value, max: i64) -> Result<i64> {
    let n = match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() <= max as f64)
                .map(|f| f as i64)
        }),
        Value::String(t) => t.trim().parse::<i64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(StorageError::bad_request(format!(
            "expiresIn must be a whole number of seconds from 1 to {max}"
        ))),
    }
}

/// `now + secs` as a JWT `exp`, never wrapped.
fn expiry(now: i64, secs: i64) -> Result<i64> {
    now.checked_add(secs)
        .ok_or_else(|| StorageError::bad_request("expiresIn is too large"))
}

async fn sign_one(
    s: &StorageState,
    headers: &HeaderMap,
    rest: &str,
    body: Body,
) -> Result<Response> {
    let caller = Caller::from_headers(&s.keys, headers)?;
    let (bucket, name) = split_path(rest)?;
    let b: SignBody = json_body(headers, body).await?;
    let secs = expires_in(&b.expires_in, MAX_SIGNED_URL_SECS)?;
    let transformations = crate::render::signed_transformations(s, b.transform.as_ref())?;
    // Only what the caller may read can be signed.
    find(s, &caller, &bucket, &name).await?;
    let url = format!("{bucket}/{name}");
    let t = now();
    let mut claims =
        json!({ "url": url, "storage": "download", "iat": t, "exp": expiry(t, secs)? });
    // As Storage signs a transformation: in the token, and the URL is the render route's.
    let route = match transformations {
        Some(tr) => {
            claims["transformations"] = Value::String(tr);
            "render/image"
        }
        None => "object",
    };
    let token = sign_token(s, claims)?;
    Ok(Json(json!({ "signedURL": format!("/{route}/sign/{url}?token={token}") })).into_response())
}

async fn sign_many(
    s: &StorageState,
    headers: &HeaderMap,
    bucket: &str,
    body: Body,
) -> Result<Response> {
    let caller = Caller::from_headers(&s.keys, headers)?;
    validate_bucket(bucket)?;
    let b: SignBody = json_body(headers, body).await?;
    let secs = expires_in(&b.expires_in, MAX_SIGNED_URL_SECS)?;
    if b.paths.is_empty() || b.paths.len() > 1000 {
        return Err(StorageError::bad_request("paths must hold 1 to 1000 names"));
    }
    let tx = s.db.begin(&caller.tx().read_only(true)).await?;
    let rows = tx
        .query_typed_and_commit(
            "select name from storage.objects where bucket_id = $1 and name = any($2)",
            &[(&bucket, Type::TEXT), (&b.paths, Type::TEXT_ARRAY)],
        )
        .await?;
    let visible: std::collections::HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
    let t = now();
    let exp = expiry(t, secs)?;
    let mut out = Vec::with_capacity(b.paths.len());
    for p in &b.paths {
        if visible.contains(p) {
            let url = format!("{bucket}/{p}");
            let token = sign_token(
                s,
                json!({ "url": url, "storage": "download", "iat": t, "exp": exp }),
            )?;
            out.push(json!({ "error": null, "path": p, "signedURL": format!("/object/sign/{url}?token={token}") }));
        } else {
            out.push(json!({ "error": "Either the object does not exist or you do not have access to it", "path": p, "signedURL": null }));
        }
    }
    Ok(Json(Value::Array(out)).into_response())
}

async fn download_signed(
    s: &StorageState,
    rest: &str,
    query: Option<&str>,
    want: Want<'_>,
) -> Result<Response> {
    let (bucket, name) = split_path(rest)?;
    let claims = verify_token(
        s,
        query_param(query, "token"),
        "download",
        &format!("{bucket}/{name}"),
    )?;
    // A URL signed for a transformed image does not open the original (Storage would).
    if claims
        .get("transformations")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty())
    {
        return Err(StorageError::new(
            StatusCode::BAD_REQUEST,
            "InvalidSignature",
            "The url was signed for an image transformation: use /render/image/sign/",
        ));
    }
    let found = find(s, &Caller::service(), &bucket, &name).await?;
    serve(s, &bucket, &name, found, query, want).await
}

/// A signed upload URL: granted when the caller could write the object now (a probe insert,
/// rolled back); the upload itself then runs with the token's owner.
async fn sign_upload(
    s: &StorageState,
    headers: &HeaderMap,
    rest: &str,
    body: Body,
) -> Result<Response> {
    let caller = Caller::from_headers(&s.keys, headers)?;
    let (bucket, name) = split_path(rest)?;
    bucket_meta(s, &bucket).await?;
    let upsert = header_str(headers, "x-upsert").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let b: SignUploadBody = optional_json_body(headers, body).await?;
    let secs = match b.expires_in {
        Value::Null => UPLOAD_URL_SECS,
        v => expires_in(&v, UPLOAD_URL_SECS)?,
    };
    let owner = caller.owner();
    probe_write(s, &caller, owner, &bucket, &name, upsert).await?;
    let url = format!("{bucket}/{name}");
    let t = now();
    let token = sign_token(
        s,
        json!({ "url": url, "storage": "upload", "owner": owner, "upsert": upsert, "iat": t, "exp": expiry(t, secs)? }),
    )?;
    Ok(
        Json(json!({ "url": format!("/object/upload/sign/{url}?token={token}"), "token": token }))
            .into_response(),
    )
}

async fn upload_signed(
    s: &StorageState,
    headers: &HeaderMap,
    rest: &str,
    query: Option<&str>,
    body: Body,
) -> Result<Response> {
    let (bucket, name) = split_path(rest)?;
    let claims = verify_token(
        s,
        query_param(query, "token"),
        "upload",
        &format!("{bucket}/{name}"),
    )?;
    let owner = claims
        .get("owner")
        .and_then(Value::as_str)
        .and_then(|o| o.parse().ok());
    let upsert = claims
        .get("upsert")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    store(
        s,
        Writer {
            caller: Caller::service(),
            owner,
        },
        &bucket,
        &name,
        upsert,
        headers,
        body,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges_as_rfc_9110_reads_them() {
        assert_eq!(byte_range(None, 10), Ok(None));
        assert_eq!(byte_range(Some("bytes=0-4"), 10), Ok(Some((0, 5))));
        assert_eq!(byte_range(Some("bytes=5-"), 10), Ok(Some((5, 10))));
        assert_eq!(byte_range(Some("bytes=-3"), 10), Ok(Some((7, 10))));
        assert_eq!(byte_range(Some("bytes=-30"), 10), Ok(Some((0, 10))));
        assert_eq!(byte_range(Some("bytes=8-100"), 10), Ok(Some((8, 10))));
        // Several ranges or another unit: the whole object (allowed), never an error.
        assert_eq!(byte_range(Some("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(byte_range(Some("items=0-1"), 10), Ok(None));
        // Unsatisfiable or malformed: 416.
        assert_eq!(byte_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(byte_range(Some("bytes=5-2"), 10), Err(()));
        assert_eq!(byte_range(Some("bytes=-0"), 10), Err(()));
        assert_eq!(byte_range(Some("bytes=a-b"), 10), Err(()));
        assert_eq!(byte_range(Some("bytes=0-0"), 0), Err(()));
    }

    #[test]
    fn active_types_are_served_inert() {
        let t = |m: &str| served_type(m);
        assert_eq!(t("image/png"), ("image/png".into(), false));
        assert_eq!(t("application/pdf"), ("application/pdf".into(), false));
        assert_eq!(
            t("text/plain; charset=utf-8"),
            ("text/plain; charset=utf-8".into(), false)
        );
        assert_eq!(t("video/mp4"), ("video/mp4".into(), false));
        assert_eq!(t("Text/HTML"), ("text/plain".into(), true));
        assert_eq!(
            t("text/html; charset=utf-8"),
            ("text/plain; charset=utf-8".into(), true)
        );
        for active in [
            "image/svg+xml",
            "application/xhtml+xml",
            "text/xml",
            "application/xml",
            "text/javascript",
            "application/javascript",
            "application/octet-stream",
            "application/x-unknown",
        ] {
            assert_eq!(t(active), (active.to_string(), true), "{active}");
        }
        // Browsers take the last type of a list: never pass such a value on.
        for odd in [
            "text/plain, text/html",
            "",
            "html",
            "text/",
            "te xt/plain",
            "a/b\u{e9}",
        ] {
            assert_eq!(t(odd), ("application/octet-stream".into(), true), "{odd:?}");
        }
    }

    #[test]
    fn expires_in_is_whole_seconds_within_bounds() {
        let max = MAX_SIGNED_URL_SECS;
        assert_eq!(expires_in(&json!(60), max), Ok(60));
        assert_eq!(expires_in(&json!("60"), max), Ok(60));
        assert_eq!(expires_in(&json!(60.0), max), Ok(60));
        assert_eq!(expires_in(&json!(max), max), Ok(max));
        for bad in [
            json!(0),
            json!(-1),
            json!(max + 1),
            json!(1e20),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(1.5),
            json!("abc"),
            json!(null),
            json!([60]),
        ] {
            let e = expires_in(&bad, max).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        assert!(expiry(i64::MAX, 1).is_err());
    }
}
