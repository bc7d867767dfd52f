//! `/bucket`: create, get, list, update, empty, delete, in the caller's role (buckets have no
//! policies for anon and authenticated, so in practice the service role manages them).
use agencyflow_db::Type;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{Result, StorageError};
use crate::objects::{json_body, validate_bucket};
use crate::{Caller, StorageState};

const BUCKET_JSON: &str =
    "json_build_object('id', id, 'name', name, 'owner', owner, 'public', public, \
    'file_size_limit', file_size_limit, 'allowed_mime_types', allowed_mime_types, \
    'created_at', created_at, 'updated_at', updated_at)";

fn raw_json(text: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

pub async fn list(State(s): State<StorageState>, headers: HeaderMap) -> Result<Response> {
    let caller = Caller::from_headers(&s.keys, &headers)?;
    let tx = s.db.begin(&caller.tx().read_only(true)).await?;
    let sql = format!(
        "select coalesce(json_agg({BUCKET_JSON} order by name), '[]')::text from storage.buckets"
    );
    let rows = tx.query_typed_and_commit(&sql, &[]).await?;
    Ok(raw_json(rows[0].get(0)))
}

pub async fn get_one(
    State(s): State<StorageState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    let caller = Caller::from_headers(&s.keys, &headers)?;
    let tx = s.db.begin(&caller.tx().read_only(true)).await?;
    let sql = format!("select {BUCKET_JSON}::text from storage.buckets where id = $1");
    let rows = tx
        .query_typed_and_commit(&sql, &[(&id, Type::TEXT)])
        .await?;
    let row = rows
        .into_iter()
        .next()
        .ok_or_else(StorageError::bucket_not_found)?;
    Ok(raw_json(row.get(0)))
}

/// `10485760`, `"10485760"`, `"10MB"`, `"1.5 GB"`, `"512kb"`.
pub fn parse_size(v: &Value) -> Result<Option<i64>> {
    let bad = || {
        StorageError::bad_request(
            "file_size_limit must be a number of bytes or a size such as \"50MB\"",
        )
    };
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_i64().filter(|n| *n > 0).map(Some).ok_or_else(bad),
        Value::String(s) => {
            let t = s.trim().to_ascii_lowercase();
            let split = t
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(t.len());
            let (num, unit) = t.split_at(split);
            let num: f64 = num.parse().map_err(|_| bad())?;
            let mult: f64 = match unit.trim() {
                "" | "b" => 1.0,
                "k" | "kb" => 1024.0,
                "m" | "mb" => 1024.0 * 1024.0,
                "g" | "gb" => 1024.0 * 1024.0 * 1024.0,
                _ => return Err(bad()),
            };
            let bytes = (num * mult) as i64;
            if bytes <= 0 {
                return Err(bad());
            }
            Ok(Some(bytes))
        }
        _ => Err(bad()),
    }
}

fn mime_list(v: &Value) -> Result<Option<Vec<String>>> {
    match v {
        Value::Null => Ok(None),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| StorageError::bad_request("allowed_mime_types must be strings"))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some),
        _ => Err(StorageError::bad_request(
            "allowed_mime_types must be an array of strings",
        )),
    }
}

#[derive(Deserialize)]
pub struct BucketBody {
    id: Option<String>,
    name: Option<String>,
    #[serde(default)]
    public: Option<bool>,
    #[serde(default)]
    file_size_limit: Value,
    #[serde(default)]
    allowed_mime_types: Value,
}

pub async fn create(
    State(s): State<StorageState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let caller = Caller::from_headers(&s.keys, &headers)?;
    let b: BucketBody = json_body(&headers, body).await?;
    let id =
        b.id.clone()
            .or_else(|| b.name.clone())
            .ok_or_else(|| StorageError::bad_request("body must have property name"))?;
    validate_bucket(&id)?;
    let name = b.name.clone().unwrap_or_else(|| id.clone());
    let limit = parse_size(&b.file_size_limit)?;
    let mimes = mime_list(&b.allowed_mime_types)?;
    let mut tx = s.db.begin(&caller.tx()).await?;
    tx.execute(
        "insert into storage.buckets (id, name, owner, public, file_size_limit, allowed_mime_types) values ($1, $2, $3, $4, $5, $6)",
        &[&id, &name, &caller.owner(), &b.public.unwrap_or(false), &limit, &mimes],
    )
    .await?;
    tx.commit().await?;
    Ok(Json(json!({ "name": id })).into_response())
}

pub async fn update(
    State(s): State<StorageState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response> {
    let caller = Caller::from_headers(&s.keys, &headers)?;
    let b: BucketBody = json_body(&headers, body).await?;
    let limit = parse_size(&b.file_size_limit)?;
    let mimes = mime_list(&b.allowed_mime_types)?;
    let mut tx = s.db.begin(&caller.tx()).await?;
    let n = tx
        .execute(
            "update storage.buckets set public = coalesce($2, public), file_size_limit = $3, allowed_mime_types = $4, updated_at = now() where id = $1",
            &[&id, &b.public, &limit, &mimes],
        )
        .await?;
    if n == 0 {
        return Err(StorageError::bucket_not_found());
    }
    tx.commit().await?;
    Ok(Json(json!({ "message": "Successfully updated" })).into_response())
}

pub async fn empty(
    State(s): State<StorageState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    let caller = Caller::from_headers(&s.keys, &headers)?;
    let mut tx = s.db.begin(&caller.tx()).await?;
    if tx
        .query_opt("select 1 from storage.buckets where id = $1", &[&id])
        .await?
        .is_none()
    {
        return Err(StorageError::bucket_not_found());
    }
    let rows = tx
        .query(
            "delete from storage.objects where bucket_id = $1 returning name, version",
            &[&id],
        )
        .await?;
    tx.commit().await?;
    for r in rows {
        let (name, version): (String, Option<String>) = (r.get(0), r.get(1));
        if let Some(v) = version {
            if let Err(e) = s.backend.delete(format!("{id}/{name}/{v}")).await {
                tracing::warn!(error = %e, bucket = %id, name = %name, "removing an emptied object's file");
            }
        }
    }
    Ok(Json(json!({ "message": "Successfully emptied" })).into_response())
}

pub async fn delete(
    State(s): State<StorageState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    let caller = Caller::from_headers(&s.keys, &headers)?;
    let mut tx = s.db.begin(&caller.tx()).await?;
    if tx
        .query_opt(
            "select 1 from storage.objects where bucket_id = $1 limit 1",
            &[&id],
        )
        .await?
        .is_some()
    {
        return Err(StorageError::new(
            axum::http::StatusCode::CONFLICT,
            "InvalidRequest",
            "The bucket you tried to delete is not empty",
        ));
    }
    let n = tx
        .execute("delete from storage.buckets where id = $1", &[&id])
        .await?;
    if n == 0 {
        return Err(StorageError::bucket_not_found());
    }
    tx.commit().await?;
    Ok(Json(json!({ "message": "Successfully deleted" })).into_response())
}
