//! `POST /object/list-v2/{bucket}`: cursor-paged listing, as storage-js's `listV2` calls it
//! and Supabase Storage answers it: `{hasNext, nextCursor, folders, objects}`.
//!
//! - `prefix` is a plain string prefix of the object name (`%` and `_` are literal), not a
//!   folder: `a` matches `a.txt` and `a/b.txt`.
//! - `with_delimiter: true` folds everything below the next `/` after the prefix into one
//!   folder entry (`name` ends with `/`); folders and objects share one order and one `limit`
//!   (1 to 1000, default 1000). Without it every object under the prefix is listed.
//! - `sortBy`: `name` (bytewise, `COLLATE "C"`), `created_at` or `updated_at` (to the
//!   millisecond, then name; a folder's time is the creation of its oldest object, as
//!   Storage's own `search_by_timestamp` has it), `asc` or `desc`.
//! - `nextCursor` (present only with `hasNext`) is Storage's continuation token: base64 of
//!   `l:<last name>`, `o:<order>`, `c:<column>`, `a:<last timestamp>` lines. It only says
//!   where to resume: a forged one moves the start, never past RLS, which decides every row.
use agencyflow_db::Type;
use axum::body::Body;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Result, StorageError};
use crate::objects::{json_body, validate_bucket, ISO_MS};
use crate::{Caller, StorageState};

/// The most one page may hold (Storage's cap).
const MAX_KEYS: i64 = 1000;

#[derive(Deserialize, Default)]
#[serde(default)]
struct ListV2Body {
    prefix: Option<String>,
    limit: Option<Value>,
    cursor: Option<String>,
    with_delimiter: Option<bool>,
    #[serde(rename = "sortBy")]
    sort_by: Option<SortBy>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SortBy {
    column: Option<String>,
    order: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Column {
    Name,
    CreatedAt,
    UpdatedAt,
}

impl Column {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "name" => Some(Column::Name),
            "created_at" => Some(Column::CreatedAt),
            "updated_at" => Some(Column::UpdatedAt),
            _ => None,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Column::Name => "name",
            Column::CreatedAt => "created_at",
            Column::UpdatedAt => "updated_at",
        }
    }
}

fn parse_order(s: &str) -> Option<bool> {
    match s {
        "asc" => Some(true),
        "desc" => Some(false),
        _ => None,
    }
}

/// Where a page resumes: Storage's continuation token, decoded.
#[derive(Debug, Default, PartialEq, Eq)]
struct Cursor {
    start_after: String,
    order: Option<String>,
    column: Option<String>,
    after: Option<String>,
}

fn encode_cursor(c: &Cursor) -> String {
    let mut lines = vec![format!("l:{}", c.start_after)];
    if let Some(o) = &c.order {
        lines.push(format!("o:{o}"));
    }
    if let Some(col) = &c.column {
        lines.push(format!("c:{col}"));
    }
    if let Some(a) = &c.after {
        lines.push(format!("a:{a}"));
    }
    base64::engine::general_purpose::STANDARD.encode(lines.join("\n"))
}

/// Decodes a token as Storage does (each line `<one character>:<value>`, known keys only);
/// anything else is `400 Invalid Parameter continuation token`.
fn decode_cursor(token: &str) -> Result<Cursor> {
    let bad = || StorageError::invalid_parameter("continuation token");
    let t = token.trim();
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let bytes = engines
        .iter()
        .find_map(|e| e.decode(t).ok())
        .ok_or_else(bad)?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let mut c = Cursor::default();
    for part in text.split('\n') {
        let mut chars = part.chars();
        let key = chars
            .next()
            .filter(|k| !k.is_whitespace())
            .ok_or_else(bad)?;
        let value = chars
            .as_str()
            .strip_prefix(':')
            .ok_or_else(bad)?
            .to_string();
        match key {
            'l' => c.start_after = value,
            'o' => c.order = Some(value),
            'c' => c.column = Some(value),
            'a' => c.after = Some(value),
            // Storage's version id (versioned buckets): nothing to resume by here.
            'v' => {}
            _ => return Err(bad()),
        }
    }
    Ok(c)
}

/// `limit`: a whole number from 1 (Storage's schema), at most [`MAX_KEYS`] used.
fn page_size(v: Option<&Value>) -> Result<i64> {
    match v {
        None | Some(Value::Null) => Ok(MAX_KEYS),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(n) if n >= 1 => Ok(n.min(MAX_KEYS)),
            Some(_) => Err(StorageError::bad_request("body/limit must be >= 1")),
            None => match n.as_f64() {
                Some(f) if f >= 1.0 && f.fract() == 0.0 => Ok(MAX_KEYS),
                _ => Err(StorageError::bad_request("body/limit must be integer")),
            },
        },
        Some(_) => Err(StorageError::bad_request("body/limit must be integer")),
    }
}

/// `prefix` as a `LIKE` pattern matching names that start with it.
fn like_prefix(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 1);
    for ch in prefix.chars() {
        if matches!(ch, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push('%');
    p
}

pub async fn list_v2(
    s: &StorageState,
    headers: &HeaderMap,
    bucket: &str,
    body: Body,
) -> Result<Response> {
    let caller = Caller::from_headers(&s.keys, headers)?;
    validate_bucket(bucket)?;
    let b: ListV2Body = json_body(headers, body).await?;
    let limit = page_size(b.limit.as_ref())?;
    let (req_column, req_order) = match &b.sort_by {
        None => (None, None),
        Some(sb) => {
            let column = sb.column.as_deref().ok_or_else(|| {
                StorageError::bad_request("body/sortBy must have required property 'column'")
            })?;
            Column::parse(column).ok_or_else(|| {
                StorageError::bad_request(
                    "body/sortBy/column must be equal to one of the allowed values",
                )
            })?;
            if let Some(o) = &sb.order {
                parse_order(o).ok_or_else(|| {
                    StorageError::bad_request(
                        "body/sortBy/order must be equal to one of the allowed values",
                    )
                })?;
            }
            (Some(column.to_string()), sb.order.clone())
        }
    };
    let cursor = b
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(decode_cursor)
        .transpose()?;
    // The token's sort wins over the request's, as in Storage (a page never changes order).
    let order_text = cursor.as_ref().and_then(|c| c.order.clone()).or(req_order);
    let column_text = cursor
        .as_ref()
        .and_then(|c| c.column.clone())
        .or(req_column);
    let bad_token = || StorageError::invalid_parameter("continuation token");
    let asc = match order_text.as_deref() {
        None => true,
        Some(o) => parse_order(o).ok_or_else(bad_token)?,
    };
    let column = match column_text.as_deref() {
        None => Column::Name,
        Some(c) => Column::parse(c).ok_or_else(bad_token)?,
    };
    if let Some(a) = cursor.as_ref().and_then(|c| c.after.as_deref()) {
        chrono::DateTime::parse_from_rfc3339(a).map_err(|_| bad_token())?;
    }
    let prefix = b.prefix.unwrap_or_default();
    let delimiter = b.with_delimiter.unwrap_or(false);
    let start_after = cursor
        .as_ref()
        .map(|c| c.start_after.clone())
        .filter(|s| !s.is_empty());
    let after = cursor.as_ref().and_then(|c| c.after.clone());

    let dir = if asc { "asc" } else { "desc" };
    let op = if asc { ">" } else { "<" };
    let (sort_key, seek) = match column {
        Column::Name => (
            format!("name collate \"C\" {dir}"),
            format!("($4::text is null or name collate \"C\" {op} $4::text)"),
        ),
        time => {
            let col = time.as_str();
            (
                format!(
                    "coalesce(date_trunc('milliseconds', {col}), 'epoch'::timestamptz) {dir}, name collate \"C\" {dir}"
                ),
                format!(
                    "($4::text is null or (coalesce(date_trunc('milliseconds', {col}), 'epoch'::timestamptz), name collate \"C\") \
                     {op} (coalesce($5::text::timestamptz, 'epoch'::timestamptz), $4::text))"
                ),
            )
        }
    };
    let iso = |c: &str| ISO_MS.replace("{}", c);
    // The timestamp a page boundary resumes after (none when sorting by name).
    let sort_ts = match column {
        Column::Name => "null::text".to_string(),
        time => iso(time.as_str()),
    };
    let levels = prefix.split('/').count() as i32;
    let sql = if delimiter {
        // A folder has no times of its own: by name, none; by time, its oldest object's.
        let folder_ts = if column == Column::Name {
            "null::timestamptz"
        } else {
            "min(created_at)"
        };
        format!(
            "with o as (
               select name, id, updated_at, created_at, last_accessed_at, metadata, user_metadata,
                      strpos(substr(name, char_length($6::text) + 1), '/') as slash
               from storage.objects where bucket_id = $1 and name like $2
             ), e as (
               select left(name, char_length($6::text) + slash) as name, true as folder, null::uuid as id,
                      {folder_ts} as updated_at, {folder_ts} as created_at, null::timestamptz as last_accessed_at,
                      null::jsonb as metadata, null::jsonb as user_metadata
               from o where slash > 0 group by 1
               union all
               select name, false, id, updated_at, created_at, last_accessed_at, metadata, user_metadata
               from o where slash = 0
             )
             select name, folder, {sort_ts}, json_build_object(
                      'key', split_part(case when folder then left(name, -1) else name end, '/', $7::int4),
                      'name', name, 'id', id, 'updated_at', {u}, 'created_at', {c},
                      'last_accessed_at', {l}, 'metadata', metadata, 'user_metadata', user_metadata)::text
             from e where {seek} order by {sort_key} limit $3",
            u = iso("updated_at"),
            c = iso("created_at"),
            l = iso("last_accessed_at"),
        )
    } else {
        format!(
            "select name, false, {sort_ts}, json_build_object('id', id, 'name', name, 'metadata', metadata,
                      'updated_at', {u}, 'created_at', {c}, 'last_accessed_at', {l})::text
             from storage.objects
             where bucket_id = $1 and name like $2 and {seek}
             order by {sort_key} limit $3",
            u = iso("updated_at"),
            c = iso("created_at"),
            l = iso("last_accessed_at"),
        )
    };
    let pattern = like_prefix(&prefix);
    let fetch = limit + 1;
    let tx = s.db.begin(&caller.tx().read_only(true)).await?;
    let rows = tx
        .query_typed_and_commit(
            &sql,
            &[
                (&bucket, Type::TEXT),
                (&pattern, Type::TEXT),
                (&fetch, Type::INT8),
                (&start_after, Type::TEXT),
                (&after, Type::TEXT),
                (&prefix, Type::TEXT),
                (&levels, Type::INT4),
            ],
        )
        .await?;
    let has_next = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let mut folders = Vec::new();
    let mut objects = Vec::new();
    for r in page {
        let folder: bool = r.get(1);
        let entry: String = r.get(3);
        if folder {
            folders.push(entry);
        } else {
            objects.push(entry);
        }
    }
    let next_cursor = if has_next {
        let last = page.last().expect("a page before more rows is not empty");
        let name: String = last.get(0);
        let ts: Option<String> = last.get(2);
        Some(encode_cursor(&Cursor {
            start_after: name,
            order: order_text,
            column: column_text,
            after: ts,
        }))
    } else {
        None
    };
    let mut out = format!("{{\"hasNext\":{has_next}");
    if let Some(c) = next_cursor {
        out.push_str(&format!(",\"nextCursor\":{}", Value::String(c)));
    }
    out.push_str(&format!(
        ",\"folders\":[{}],\"objects\":[{}]}}",
        folders.join(","),
        objects.join(",")
    ));
    Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_storages_continuation_tokens() {
        let c = Cursor {
            start_after: "a/b.txt".into(),
            order: Some("desc".into()),
            column: Some("created_at".into()),
            after: Some("2024-11-01T00:00:00.000Z".into()),
        };
        let token = encode_cursor(&c);
        let text = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(&token)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            text,
            "l:a/b.txt\no:desc\nc:created_at\na:2024-11-01T00:00:00.000Z"
        );
        assert_eq!(decode_cursor(&token).unwrap(), c);
        // Storage's own token for `l:x` (Node's Buffer base64), and without padding.
        assert_eq!(decode_cursor("bDp4").unwrap().start_after, "x");
        assert_eq!(decode_cursor("bDphYg").unwrap().start_after, "ab");
        for bad in ["", "!!!", "e:invalid", "bm9jb2xvbg=="] {
            let token = if bad.contains(':') {
                base64::engine::general_purpose::STANDARD.encode(bad)
            } else {
                bad.to_string()
            };
            let e = decode_cursor(&token).unwrap_err();
            assert_eq!(e.message, "Invalid Parameter continuation token", "{bad}");
        }
    }

    #[test]
    fn prefixes_are_literal_and_limits_are_storages() {
        assert_eq!(like_prefix("a_b%c\\"), "a\\_b\\%c\\\\%");
        assert_eq!(like_prefix(""), "%");
        assert_eq!(page_size(None).unwrap(), 1000);
        assert_eq!(page_size(Some(&serde_json::json!(5))).unwrap(), 5);
        assert_eq!(page_size(Some(&serde_json::json!(5000))).unwrap(), 1000);
        assert!(page_size(Some(&serde_json::json!(0))).is_err());
        assert!(page_size(Some(&serde_json::json!("5"))).is_err());
        assert!(page_size(Some(&serde_json::json!(1.5))).is_err());
    }
}
