//! `/bucket`: create, get, list, update, empty, delete, in the caller's role (buckets have no
//! policies for anon and authenticated, so in practice the service role manages them).
//!
//! As Supabase Storage has them: size limits parsed by Storage's own rule ([`parse_size`]),
//! `PUT` changing only the fields it names, timestamps rendered like `2021-02-17T04:43:32.770Z`,
//! `type: "STANDARD"` in the listing, and Storage's errors and messages.
use agencyflow_db::Type;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::error::{Result, StorageError};
use crate::objects::{iso, json_body, query_param, validate_bucket};
use crate::{Caller, StorageState};

/// A bucket as Storage's `bucketSchema` renders it; `with_type` adds `type` (the listing).
fn bucket_json(with_type: bool) -> String {
    format!(
        "json_build_object('id', id, 'name', name, 'owner', owner, 'public', public, {}\
         'file_size_limit', file_size_limit, 'allowed_mime_types', allowed_mime_types, \
         'created_at', {}, 'updated_at', {})",
        if with_type {
            "'type', 'STANDARD', "
        } else {
            ""
        },
        iso("created_at"),
        iso("updated_at"),
    )
}

fn raw_json(text: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

/// `GET /bucket`, with storage-js's `listBuckets` options: `limit`, `offset`, `sortColumn`
/// (`id`, `name`, `created_at`, `updated_at`), `sortOrder`, `search` (part of the name).
pub async fn list(
    State(s): State<StorageState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let caller = Caller::from_headers(&s.keys, &headers)?;
    let q = query.as_deref();
    let int = |key: &str, min: i64| -> Result<Option<i64>> {
        match query_param(q, key) {
            None => Ok(None),
            Some(v) => match v.trim().parse::<i64>() {
                Ok(n) if n >= min => Ok(Some(n)),
                _ => Err(StorageError::bad_request(format!(
                    "querystring/{key} must be an integer >= {min}"
                ))),
            },
        }
    };
    let limit = int("limit", 1)?;
    let offset = int("offset", 0)?.unwrap_or(0);
    let column = match query_param(q, "sortColumn").as_deref() {
        None | Some("name") => "name",
        Some("id") => "id",
        Some("created_at") => "created_at",
        Some("updated_at") => "updated_at",
        Some(_) => {
            return Err(StorageError::bad_request(
                "querystring/sortColumn must be equal to one of the allowed values",
            ))
        }
    };
    let order = match query_param(q, "sortOrder").as_deref() {
        None | Some("asc") => "asc",
        Some("desc") => "desc",
        Some(_) => {
            return Err(StorageError::bad_request(
                "querystring/sortOrder must be equal to one of the allowed values",
            ))
        }
    };
    let search = query_param(q, "search").unwrap_or_default();
    let sql = format!(
        "with page as (
           select * from storage.buckets
           where $1 = '' or name ilike '%' || replace(replace(replace($1, '\\', '\\\\'), '%', '\\%'), '_', '\\_') || '%'
           order by {column} {order}, id limit $2 offset $3
         )
         select coalesce(json_agg({} order by {column} {order}, id), '[]')::text from page",
        bucket_json(true)
    );
    let tx = s.db.begin(&caller.tx().read_only(true)).await?;
    let rows = tx
        .query_typed_and_commit(
            &sql,
            &[
                (&search, Type::TEXT),
                (&limit, Type::INT8),
                (&offset, Type::INT8),
            ],
        )
        .await?;
    Ok(raw_json(rows[0].get(0)))
}

pub async fn get_one(
    State(s): State<StorageState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    let caller = Caller::from_headers(&s.keys, &headers)?;
    let tx = s.db.begin(&caller.tx().read_only(true)).await?;
    let sql = format!(
        "select {}::text from storage.buckets where id = $1",
        bucket_json(false)
    );
    let rows = tx
        .query_typed_and_commit(&sql, &[(&id, Type::TEXT)])
        .await?;
    let row = rows
        .into_iter()
        .next()
        .ok_or_else(StorageError::bucket_not_found)?;
    Ok(raw_json(row.get(0)))
}

/// A bucket's `file_size_limit` as Supabase Storage reads it: a whole number of bytes, or a
/// string `<number><unit>` with the unit `b`, `kb`, `mb` or `gb` in any case and no space,
/// the units decimal (`"20mb"` is 20,000,000 bytes; binary units such as `"20MiB"` are
/// refused, as Storage refuses them) and the number kept to three significant digits (Storage
/// applies `toPrecision(3)`: `"1.2345MB"` is 1,230,000). `null` is no limit of the bucket's
/// own. A limit above the server's (`FILE_SIZE_LIMIT`) is refused with 413, as Storage does.
/// Unlike Storage, zero or a fraction of a byte is refused (the column holds positive bytes).
pub fn parse_size(v: &Value, server_limit: u64) -> Result<Option<i64>> {
    let bytes = match v {
        Value::Null => return Ok(None),
        Value::Number(n) => match n.as_i64() {
            Some(b) if b > 0 => b,
            Some(0) => {
                return Err(StorageError::bad_request(
                    "file_size_limit must be more than 0 bytes (null for no limit)",
                ))
            }
            _ => return Err(StorageError::invalid_file_size()),
        },
        Value::String(s) => size_with_unit(s)?,
        _ => return Err(StorageError::invalid_file_size()),
    };
    if bytes as u64 > server_limit {
        return Err(StorageError::too_large());
    }
    Ok(Some(bytes))
}

/// `<digits>[.<digits>](b|kb|mb|gb)`, rounded to three significant digits (half up), in bytes.
fn size_with_unit(s: &str) -> Result<i64> {
    let bad = StorageError::invalid_file_size;
    let lower = s.to_ascii_lowercase();
    let (number, unit_exp) = if let Some(n) = lower.strip_suffix("gb") {
        (n, 9)
    } else if let Some(n) = lower.strip_suffix("mb") {
        (n, 6)
    } else if let Some(n) = lower.strip_suffix("kb") {
        (n, 3)
    } else if let Some(n) = lower.strip_suffix('b') {
        (n, 0)
    } else {
        return Err(bad());
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits_ok = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if !digits_ok(int) || (number.contains('.') && !digits_ok(frac)) {
        return Err(bad());
    }
    // The number is `digits × 10^-frac.len()`; keep its first three significant digits.
    let all = format!("{int}{frac}");
    let sig = all.trim_start_matches('0');
    if sig.is_empty() {
        return Err(StorageError::bad_request(
            "file_size_limit must be more than 0 bytes (null for no limit)",
        ));
    }
    let mut exp = unit_exp - frac.len() as i64;
    let mut mantissa: i64;
    if sig.len() > 3 {
        mantissa = sig[..3].parse().map_err(|_| bad())?;
        if sig.as_bytes()[3] >= b'5' {
            mantissa += 1;
        }
        exp += (sig.len() - 3) as i64;
    } else {
        mantissa = sig.parse().map_err(|_| bad())?;
    }
    let too_large = StorageError::too_large;
    if exp >= 0 {
        let scale = 10i64.checked_pow(exp as u32).ok_or_else(too_large)?;
        mantissa.checked_mul(scale).ok_or_else(too_large)
    } else {
        let scale = 10i64.checked_pow((-exp) as u32).ok_or_else(bad)?;
        if mantissa % scale != 0 {
            // A fraction of a byte.
            return Err(bad());
        }
        Ok(mantissa / scale)
    }
}

/// `allowed_mime_types`: strings, empty ones dropped (as Storage drops them), each a
/// `type/subtype` (optionally `; charset=...`) or ending in `*` (`image/*`); anything else is
/// Storage's 415 `mime type ... is not supported`.
fn mime_list(v: &Value) -> Result<Option<Vec<String>>> {
    let list = match v {
        Value::Null => return Ok(None),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| StorageError::bad_request("allowed_mime_types must be strings"))
            })
            .collect::<Result<Vec<_>>>()?,
        _ => {
            return Err(StorageError::bad_request(
                "allowed_mime_types must be an array of strings",
            ))
        }
    };
    let list: Vec<String> = list.into_iter().filter(|m| !m.is_empty()).collect();
    for m in &list {
        if !valid_mime(m) {
            return Err(StorageError::invalid_mime(m));
        }
    }
    Ok(Some(list))
}

/// Storage's `validateMimeType`: `^([a-zA-Z0-9\-+.]+)/([a-zA-Z0-9\-+.]+)(;\s*charset=[a-zA-Z0-9\-]+)?$|\*$`.
fn valid_mime(m: &str) -> bool {
    if m.len() > 1000 {
        return false;
    }
    if m.ends_with('*') {
        return true;
    }
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-+.".contains(&b))
    };
    let (base, params) = match m.split_once(';') {
        Some((b, p)) => (b, Some(p)),
        None => (m, None),
    };
    let params_ok = params.is_none_or(|p| {
        p.trim_start().strip_prefix("charset=").is_some_and(|c| {
            !c.is_empty() && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
    });
    base.split_once('/')
        .is_some_and(|(t, st)| token(t) && token(st))
        && params_ok
}

/// A JSON object body (fields absent and fields `null` are told apart).
async fn object_body(headers: &HeaderMap, body: Body) -> Result<Map<String, Value>> {
    match json_body::<Value>(headers, body).await? {
        Value::Object(m) => Ok(m),
        _ => Err(StorageError::bad_request("body must be object")),
    }
}

fn opt_string(m: &Map<String, Value>, key: &str) -> Result<Option<String>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(StorageError::bad_request(format!(
            "body/{key} must be string"
        ))),
    }
}

fn opt_bool(m: &Map<String, Value>, key: &str) -> Result<Option<bool>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(StorageError::bad_request(format!(
            "body/{key} must be boolean"
        ))),
    }
}

pub async fn create(
    State(s): State<StorageState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let caller = Caller::from_headers(&s.keys, &headers)?;
    let b = object_body(&headers, body).await?;
    let name = opt_string(&b, "name")?;
    let id = opt_string(&b, "id")?
        .or_else(|| name.clone())
        .ok_or_else(|| StorageError::bad_request("body must have required property 'name'"))?;
    let name = name.unwrap_or_else(|| id.clone());
    validate_bucket(&id)?;
    match opt_string(&b, "type")?.as_deref() {
        None | Some("STANDARD") => {}
        Some("ANALYTICS") => return Err(StorageError::feature_not_enabled("analytics buckets")),
        Some(_) => {
            return Err(StorageError::bad_request(
                "body/type must be equal to one of the allowed values",
            ))
        }
    }
    let limit = parse_size(
        b.get("file_size_limit").unwrap_or(&Value::Null),
        s.file_size_limit,
    )?;
    let mimes = mime_list(b.get("allowed_mime_types").unwrap_or(&Value::Null))?;
    let public = opt_bool(&b, "public")?.unwrap_or(false);
    let mut tx = s.db.begin(&caller.tx()).await?;
    tx.execute(
        "insert into storage.buckets (id, name, owner, public, file_size_limit, allowed_mime_types) values ($1, $2, $3, $4, $5, $6)",
        &[&id, &name, &caller.owner(), &public, &limit, &mimes],
    )
    .await?;
    tx.commit().await?;
    Ok(Json(json!({ "name": name })).into_response())
}

/// `PUT /bucket/{id}`: only the fields the body names change (`public`, `file_size_limit`,
/// `allowed_mime_types`; `null` clears a limit or the type list), as in Storage.
pub async fn update(
    State(s): State<StorageState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response> {
    let caller = Caller::from_headers(&s.keys, &headers)?;
    validate_bucket(&id)?;
    let b = object_body(&headers, body).await?;
    let public = opt_bool(&b, "public")?;
    let limit = b
        .get("file_size_limit")
        .map(|v| parse_size(v, s.file_size_limit))
        .transpose()?;
    let mimes = b.get("allowed_mime_types").map(mime_list).transpose()?;
    let mut tx = s.db.begin(&caller.tx()).await?;
    let n = tx
        .execute(
            "update storage.buckets set
               public = coalesce($2, public),
               file_size_limit = case when $3 then $4 else file_size_limit end,
               allowed_mime_types = case when $5 then $6 else allowed_mime_types end,
               updated_at = now()
             where id = $1",
            &[
                &id,
                &public,
                &limit.is_some(),
                &limit.flatten(),
                &mimes.is_some(),
                &mimes.flatten(),
            ],
        )
        .await?;
    if n == 0 {
        return Err(StorageError::bucket_not_found());
    }
    tx.commit().await?;
    Ok(Json(json!({ "message": "Successfully updated" })).into_response())
}

/// `POST /bucket/{id}/empty`: deletes every object, as the caller. When the caller's policies
/// let it see objects it may not delete, nothing is deleted and the answer is Storage's 403
/// (`Cannot delete: ..., you may have SELECT but not DELETE permissions`).
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
    let kept = tx
        .query(
            "select name from storage.objects where bucket_id = $1 order by name limit 21",
            &[&id],
        )
        .await?;
    if !kept.is_empty() {
        let mut names: Vec<String> = kept.iter().take(20).map(|r| r.get(0)).collect();
        if kept.len() > 20 {
            names.push("...".into());
        }
        tx.rollback().await?;
        return Err(StorageError::unauthorized(format!(
            "Cannot delete: {}, you may have SELECT but not DELETE permissions",
            names.join(" ,")
        )));
    }
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

/// `DELETE /bucket/{id}`: a bucket the caller cannot see is `Bucket not found`; then, as in
/// Storage, its emptiness is checked as the service role (objects the caller cannot see
/// still count) and the delete runs as the caller.
pub async fn delete(
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
    let check = s.db.begin(&Caller::service().tx().read_only(true)).await?;
    let rows = check
        .query_typed_and_commit(
            "select exists (select 1 from storage.objects where bucket_id = $1)",
            &[(&id, Type::TEXT)],
        )
        .await?;
    if rows.first().is_some_and(|r| r.get::<_, bool>(0)) {
        return Err(StorageError::new(
            StatusCode::CONFLICT,
            "ResourceNotEmpty",
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

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: u64 = 50 * 1000 * 1000 * 1000;

    fn size(v: Value) -> Result<Option<i64>> {
        parse_size(&v, SERVER)
    }

    #[test]
    fn sizes_parse_as_supabase_storage_parses_them() {
        for (text, bytes) in [
            ("20mb", 20_000_000),
            ("20MB", 20_000_000),
            ("20Mb", 20_000_000),
            ("1gb", 1_000_000_000),
            ("30KB", 30_000),
            ("3B", 3),
            ("3b", 3),
            ("1.5MB", 1_500_000),
            ("0.5kb", 500),
            // toPrecision(3): three significant digits, half up.
            ("1.2345MB", 1_230_000),
            ("1.2355MB", 1_240_000),
            ("1234kb", 1_230_000),
            ("9999b", 10_000),
            ("999.5kb", 1_000_000),
            ("007mb", 7_000_000),
        ] {
            assert_eq!(size(json!(text)).unwrap(), Some(bytes), "{text}");
        }
        assert_eq!(size(json!(10485760)).unwrap(), Some(10485760));
        assert_eq!(size(json!(null)).unwrap(), None);
        // Storage's regex: no binary units, no space, no bare number, no sign, no exponent.
        for bad in [
            "20MiB", "20mib", "20 MB", "10485760", "MB", ".5mb", "5.mb", "-5mb", "+5mb", "1e3kb",
            "5tb", "5k", "", "1.5b",
        ] {
            let e = size(json!(bad)).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        assert_eq!(
            size(json!("20MiB")).unwrap_err().message,
            "Invalid file size format, hint: use 20GB / 20MB / 30KB / 3B"
        );
        for bad in [json!(0), json!("0mb"), json!(-1), json!(1.5), json!(true)] {
            assert_eq!(
                size(bad.clone()).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
        // Above the server's limit: Storage's 413.
        let e = parse_size(&json!("2mb"), 1_000_000).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            parse_size(&json!("1mb"), 1_000_000).unwrap(),
            Some(1_000_000)
        );
        assert_eq!(
            size(json!("99999999999gb")).unwrap_err().status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[test]
    fn mime_types_are_checked_as_storage_checks_them() {
        for ok in [
            "image/png",
            "image/*",
            "*",
            "*/*",
            "application/vnd.api+json",
            "text/plain; charset=utf-8",
            "text/plain;charset=UTF-8",
        ] {
            assert!(valid_mime(ok), "{ok}");
        }
        for bad in [
            "image",
            "image/",
            "/png",
            "text/plain; q=1",
            "a b/c",
            "text/html, x/y",
        ] {
            assert!(!valid_mime(bad), "{bad}");
        }
        assert_eq!(
            mime_list(&json!(["image/png", ""])).unwrap(),
            Some(vec!["image/png".to_string()])
        );
        assert_eq!(
            mime_list(&json!(["nope"])).unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }
}
