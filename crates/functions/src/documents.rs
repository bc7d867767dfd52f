//! `POST /functions/v1/documents`: upload a file into the `documents` bucket and create its
//! `public.documents` row in one call, with the file's text (plain text, Markdown, PDF) in
//! `content_text`, so the embedding pipeline (the row's trigger queues a job) and full-text
//! search pick it up.
//!
//! Body: `multipart/form-data` (supabase-js `functions.invoke('documents', { body: formData })`)
//! with the metadata fields first and the file part last; or the raw file with the metadata
//! in the query string (`?org_id=…&project_id=…&name=brief.pdf`). Fields: `org_id` (required),
//! `project_id` and/or `wizard_session_id` (one required), `name` (default: the file name),
//! `category` (`briefs`, `requirements`, `assets`, `reference`, `other`), `summary`.
//!
//! One transaction as the caller inserts the `storage.objects` row (the bucket's policies:
//! `<org_id>/…` of the caller's orgs) and the `documents` row (its RLS); the file is staged
//! and fsynced before, published just before the commit, removed on any failure: no row
//! without its file, no file without its rows. A file declared as text, Markdown or PDF that
//! cannot be read is refused (422) and nothing is kept.
use std::sync::{Arc, Mutex};

use agencyflow_storage::{StagedObject, StorageError, StorageState};
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::caller::{authenticate, Caller};
use crate::error::FnError;
use crate::extract::{self, Extracted, Format};
use crate::FunctionsState;

/// The bucket the function writes to (created by the storage migration).
pub const BUCKET: &str = "documents";
/// Largest file whose text is extracted (its bytes are held in memory for the extractor);
/// larger files are stored without text.
pub const MAX_EXTRACT_INPUT: usize = 32 * 1024 * 1024;
const CATEGORIES: &[&str] = &["briefs", "requirements", "assets", "reference", "other"];
const MAX_FIELD_BYTES: usize = 64 * 1024;

/// The route, mounted by the server under `/functions/v1` outside the JSON body limit
/// (uploads stream under the storage limits).
pub fn router(functions: FunctionsState, storage: StorageState) -> Router {
    Router::new()
        .route("/documents", any(handle))
        .with_state((functions, storage))
}

async fn handle(
    State((st, storage)): State<(FunctionsState, StorageState)>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if method != Method::POST {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            Json(json!({"error": "documents accepts POST", "code": "method_not_allowed"})),
        )
            .into_response();
    }
    match upload(&st, &storage, query.as_deref(), &headers, body).await {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The document's metadata, parsed.
#[derive(Debug, Default)]
struct Meta {
    org_id: Option<Uuid>,
    project_id: Option<Uuid>,
    wizard_session_id: Option<Uuid>,
    name: Option<String>,
    category: Option<String>,
    summary: Option<String>,
}

impl Meta {
    fn set(&mut self, field: &str, value: String) -> Result<(), FnError> {
        let value = value.trim().to_string();
        let uuid = |v: &str| {
            Uuid::parse_str(v)
                .map(Some)
                .map_err(|_| FnError::field(field, format!("{field} must be a UUID")))
        };
        match field {
            "org_id" => self.org_id = uuid(&value)?,
            "project_id" if !value.is_empty() => self.project_id = uuid(&value)?,
            "wizard_session_id" if !value.is_empty() => self.wizard_session_id = uuid(&value)?,
            "name" if !value.is_empty() => {
                if value.chars().count() > 255 || value.chars().any(char::is_control) {
                    return Err(FnError::field(
                        "name",
                        "name must be at most 255 characters, without control characters",
                    ));
                }
                self.name = Some(value)
            }
            "category" if !value.is_empty() => {
                if !CATEGORIES.contains(&value.as_str()) {
                    return Err(FnError::field(
                        "category",
                        format!("category must be one of {}", CATEGORIES.join(", ")),
                    ));
                }
                self.category = Some(value)
            }
            "summary" if !value.is_empty() => self.summary = Some(value),
            "project_id" | "wizard_session_id" | "name" | "category" | "summary" => {}
            // Unknown keys (e.g. supabase-js extras) are ignored, as JSON bodies' are.
            _ => {}
        }
        Ok(())
    }

    fn check(&self) -> Result<Uuid, FnError> {
        let org = self
            .org_id
            .ok_or_else(|| FnError::field("org_id", "org_id is required"))?;
        if self.project_id.is_none() && self.wizard_session_id.is_none() {
            return Err(FnError::field(
                "project_id",
                "a document belongs to a project or a wizard session: give project_id or wizard_session_id",
            ));
        }
        Ok(org)
    }
}

/// The file: its declared type and name, and its bytes as they arrive.
struct Upload {
    mime: String,
    file_name: String,
    stream: BoxStream<'static, std::io::Result<Bytes>>,
}

async fn upload(
    st: &FunctionsState,
    storage: &StorageState,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Value, FnError> {
    let caller = authenticate(headers, st.keys())?;
    let (meta, file) = read_request(query, headers, body).await?;
    let org_id = meta.check()?;
    let doc_id = Uuid::new_v4();
    let file_name = safe_file_name(&file.file_name);
    let object_name = format!("{org_id}/{doc_id}/{file_name}");
    let name = meta.name.clone().unwrap_or_else(|| file_name.clone());

    // Stream to the backend, keeping a copy (up to the cap) for the extractor.
    let copy = Arc::new(Mutex::new(Some(Vec::new())));
    let tee = {
        let copy = copy.clone();
        file.stream
            .inspect_ok(move |chunk| {
                let mut guard = copy.lock().expect("copy lock");
                let over = guard
                    .as_ref()
                    .is_some_and(|b| b.len() + chunk.len() > MAX_EXTRACT_INPUT);
                if over {
                    *guard = None;
                } else if let Some(b) = guard.as_mut() {
                    b.extend_from_slice(chunk);
                }
            })
            .boxed()
    };
    let mut staged = storage
        .stage(BUCKET, &object_name, &file.mime, "max-age=3600", tee)
        .await
        .map_err(storage_error)?;
    let bytes = copy.lock().expect("copy lock").take();
    let result = async {
        let extraction = match bytes {
            Some(bytes) => extract_text(&file.mime, &file_name, bytes).await?,
            None => Extraction::Skipped("the file is larger than the extraction limit"),
        };
        let document = write_rows(
            st,
            storage,
            &caller,
            &meta,
            org_id,
            doc_id,
            &name,
            &mut staged,
            &extraction,
        )
        .await?;
        Ok::<_, FnError>((document, extraction))
    }
    .await;
    match result {
        Ok((document, extraction)) => Ok(json!({
            "document": document,
            "storage": {
                "bucket": BUCKET,
                "path": staged.name,
                "size": staged.size,
                "mime_type": staged.mime,
            },
            "extraction": extraction.to_json(),
        })),
        Err(e) => {
            storage.discard(staged).await;
            Err(e)
        }
    }
}

enum Extraction {
    Done(Format, Extracted),
    /// Not a format text is extracted from (images, office files...).
    Unsupported,
    Skipped(&'static str),
}

impl Extraction {
    fn text(&self) -> Option<&str> {
        match self {
            Extraction::Done(_, e) if !e.text.is_empty() => Some(&e.text),
            _ => None,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Extraction::Done(f, e) => json!({
                "status": "extracted",
                "format": f.name(),
                "characters": e.text.chars().count(),
                "truncated": e.truncated,
            }),
            Extraction::Unsupported => json!({
                "status": "unsupported",
                "reason": "text is extracted from plain text, Markdown and PDF files",
            }),
            Extraction::Skipped(why) => json!({ "status": "skipped", "reason": why }),
        }
    }
}

async fn extract_text(mime: &str, file_name: &str, bytes: Vec<u8>) -> Result<Extraction, FnError> {
    let head = &bytes[..bytes.len().min(8)];
    let Some(format) = Format::detect(mime, file_name, head) else {
        return Ok(Extraction::Unsupported);
    };
    let extracted = tokio::task::spawn_blocking(move || extract::extract(format, &bytes))
        .await
        .map_err(|e| FnError::Internal(format!("text extraction task: {e}")))?;
    match extracted {
        Ok(e) => Ok(Extraction::Done(format, e)),
        Err(e) => Err(FnError::Unreadable(format!(
            "{e} (declared as {}; nothing was stored)",
            format.name()
        ))),
    }
}

#[allow(clippy::too_many_arguments)]
async fn write_rows(
    st: &FunctionsState,
    storage: &StorageState,
    caller: &Caller,
    meta: &Meta,
    org_id: Uuid,
    doc_id: Uuid,
    name: &str,
    staged: &mut StagedObject,
    extraction: &Extraction,
) -> Result<Value, FnError> {
    let mut tx = st.db().begin(&caller.tx()).await?;
    storage
        .insert_object_row(&mut tx, staged, Some(caller.user_id), false)
        .await
        .map_err(storage_error)?;
    let size = staged.size as i64;
    let category = meta.category.as_deref().unwrap_or("other");
    let text = extraction.text();
    let row = tx
        .query_one(
            "insert into public.documents
               (id, org_id, project_id, wizard_session_id, name, storage_path, file_size, mime_type,
                category, summary, content_text, uploaded_by)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             returning to_jsonb(documents) - 'embedding' - 'fts'",
            &[
                &doc_id,
                &org_id,
                &meta.project_id,
                &meta.wizard_session_id,
                &name,
                &staged.name,
                &size,
                &staged.mime,
                &category,
                &meta.summary,
                &text,
                &caller.user_id,
            ],
        )
        .await?;
    storage.publish(staged).await.map_err(storage_error)?;
    tx.commit().await?;
    Ok(row.get(0))
}

/// Reads the metadata and opens the file's stream: multipart (fields before the file), or
/// the raw body with the metadata in the query string.
async fn read_request(
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Meta, Upload), FnError> {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let mut meta = Meta::default();
    for (k, v) in query_pairs(query) {
        meta.set(&k, v)?;
    }
    let Ok(boundary) = multer::parse_boundary(&content_type) else {
        if content_type.starts_with("application/json") {
            return Err(FnError::field(
                "body",
                "send the file as multipart/form-data (metadata fields first, then the file), or as the raw body with the metadata in the query string",
            ));
        }
        let file_name = meta.name.clone().ok_or_else(|| {
            FnError::field("name", "name is required when the body is the raw file")
        })?;
        let stream = body
            .into_data_stream()
            .map_err(std::io::Error::other)
            .boxed();
        return Ok((
            meta,
            Upload {
                mime: content_type,
                file_name,
                stream,
            },
        ));
    };
    // The storage upload's parser: it stops (413) once more than 1 MiB came before the file
    // part, so an endless preamble or part header is never held in memory.
    let file_started = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut mp = agencyflow_storage::capped_multipart(body, boundary, file_started.clone());
    let form_error = |e: multer::Error| {
        let e = agencyflow_storage::form_error(e);
        if e.status == StatusCode::PAYLOAD_TOO_LARGE {
            storage_error(e)
        } else {
            FnError::field("body", format!("malformed multipart body: {}", e.message))
        }
    };
    loop {
        let field = mp
            .next_field()
            .await
            .map_err(form_error)?
            .ok_or_else(|| FnError::field("file", "the multipart body has no file part"))?;
        let is_file = field.file_name().is_some() || field.name() == Some("file");
        if is_file {
            file_started.store(true, std::sync::atomic::Ordering::Relaxed);
            let mime = field
                .content_type()
                .map(|m| m.to_string())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "application/octet-stream".into());
            let file_name = field
                .file_name()
                .map(str::to_string)
                .filter(|n| !n.is_empty())
                .or_else(|| meta.name.clone())
                .unwrap_or_else(|| "file".into());
            // The file part streams; parts after it are not read (send metadata first).
            let stream = agencyflow_storage::file_part_stream(mp, field);
            return Ok((
                meta,
                Upload {
                    mime,
                    file_name,
                    stream,
                },
            ));
        }
        let name = field.name().unwrap_or_default().to_string();
        let mut value = Vec::new();
        let mut field = field;
        while let Some(chunk) = field.chunk().await.map_err(form_error)? {
            value.extend_from_slice(&chunk);
            if value.len() > MAX_FIELD_BYTES {
                return Err(FnError::field(&name, "field too long"));
            }
        }
        let value = String::from_utf8(value)
            .map_err(|_| FnError::field(&name, format!("{name} must be UTF-8 text")))?;
        meta.set(&name, value)?;
    }
}

fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

/// The last segment of a client's file name, without separators or control characters,
/// and never `.`/`..`: safe as the final segment of an object name.
fn safe_file_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last.chars().filter(|c| !c.is_control()).take(200).collect();
    let cleaned = cleaned.trim().to_string();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        "file".into()
    } else {
        cleaned
    }
}

/// Storage's refusals in the functions' error shape, statuses kept.
fn storage_error(e: StorageError) -> FnError {
    let code = match e.status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::CONFLICT => "conflict",
        StatusCode::BAD_REQUEST => "invalid_input",
        StatusCode::SERVICE_UNAVAILABLE => "database_unavailable",
        _ => "internal_error",
    };
    if e.status.is_server_error() && e.status != StatusCode::SERVICE_UNAVAILABLE {
        return FnError::Internal(e.message);
    }
    let status = if matches!(e.status, StatusCode::UNAUTHORIZED) {
        StatusCode::FORBIDDEN
    } else {
        e.status
    };
    FnError::Upload {
        status,
        code,
        message: e.message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_made_safe() {
        assert_eq!(safe_file_name("brief.pdf"), "brief.pdf");
        assert_eq!(safe_file_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_file_name("C:\\Users\\a\\x.md"), "x.md");
        assert_eq!(safe_file_name(".."), "file");
        assert_eq!(safe_file_name("a\0b\n.txt"), "ab.txt");
        assert_eq!(safe_file_name(""), "file");
    }

    #[test]
    fn metadata_is_parsed_and_checked() {
        let mut m = Meta::default();
        assert!(m.set("org_id", "nope".into()).is_err());
        assert!(m.set("category", "secret".into()).is_err());
        m.set("org_id", Uuid::nil().to_string()).unwrap();
        assert!(
            m.check().is_err(),
            "a project or wizard session is required"
        );
        m.set("project_id", format!(" {} ", Uuid::nil())).unwrap();
        m.set("category", "briefs".into()).unwrap();
        m.set("unknown", "x".into()).unwrap();
        assert_eq!(m.check().unwrap(), Uuid::nil());
        assert_eq!(m.category.as_deref(), Some("briefs"));
    }
}
