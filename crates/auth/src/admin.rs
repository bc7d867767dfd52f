//! The admin API (`/admin/users`): only for bearers whose `role` is one of
//! `GOTRUE_JWT_ADMIN_ROLES` (service_role, supabase_admin).
use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::error::{AuthError, ErrorCode};
use crate::handlers::{bearer_claims, parse_body};
use crate::model;
use crate::password;
use crate::AuthState;

const DEFAULT_PER_PAGE: u64 = 50;

pub(crate) fn require_admin(state: &AuthState, headers: &HeaderMap) -> Result<(), AuthError> {
    let claims = bearer_claims(state, headers)?;
    let role = claims.get("role").and_then(Value::as_str).unwrap_or("");
    if state.args.admin_roles().iter().any(|r| r == role) {
        Ok(())
    } else {
        Err(ErrorCode::NotAdmin.into())
    }
}

fn parse_user_id(id: &str) -> Result<Uuid, AuthError> {
    Uuid::parse_str(id)
        .map_err(|_| AuthError::new(ErrorCode::ValidationFailed, "user_id must be an UUID"))
}

pub async fn list_users(
    State(state): State<AuthState>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(raw): RawQuery,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, AuthError> {
    require_admin(&state, &headers)?;
    let bad = |e: String| {
        AuthError::new(
            ErrorCode::ValidationFailed,
            format!("Bad Pagination Parameters: {e}"),
        )
    };
    let page = match q.get("page").map(String::as_str) {
        None | Some("") => 1,
        Some(p) => p.parse::<u64>().map_err(|e| bad(e.to_string()))?,
    };
    let per_page = match q.get("per_page").map(String::as_str) {
        None | Some("") => DEFAULT_PER_PAGE,
        Some(p) => match p.parse::<u64>().map_err(|e| bad(e.to_string()))? {
            0 => return Err(bad("per_page must be greater than 0".into())),
            n => n.min(1000),
        },
    };
    let offset = page.saturating_sub(1).saturating_mul(per_page);
    let mut tx = state.tx().await?;
    let (users, total) = model::list_users(
        &mut tx,
        &state.args.jwt_aud,
        per_page as i64,
        offset.min(i64::MAX as u64) as i64,
    )
    .await?;
    tx.commit().await?;
    let mut r = Json(json!({
        "users": users.iter().map(model::User::to_json).collect::<Vec<_>>(),
        "aud": state.args.jwt_aud,
    }))
    .into_response();
    let link = link_header(uri.path(), raw.as_deref(), page, per_page, total as u64);
    if let Ok(v) = HeaderValue::from_str(&link) {
        r.headers_mut().insert("link", v);
    }
    r.headers_mut()
        .insert("x-total-count", HeaderValue::from(total));
    Ok(r)
}

/// GoTrue's `Link` header: the request's own query (keys sorted, Go's encoding) with `page`
/// set to the next page (when there is one) and to the last.
fn link_header(
    path: &str,
    raw_query: Option<&str>,
    page: u64,
    per_page: u64,
    total: u64,
) -> String {
    let total_pages = total.div_ceil(per_page);
    let mut pairs: Vec<(String, String)> = raw_query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (unescape(k), unescape(v))
        })
        .collect();
    let url = |pairs: &mut Vec<(String, String)>, page: u64| {
        pairs.retain(|(k, _)| k != "page");
        pairs.push(("page".into(), page.to_string()));
        // Go's url.Values.Encode: sorted by key (stable, so values keep their order).
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let q: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
            .collect();
        format!("{path}?{}", q.join("&"))
    };
    let mut header = String::new();
    if total_pages > page {
        header.push_str(&format!("<{}>; rel=\"next\", ", url(&mut pairs, page + 1)));
    }
    header.push_str(&format!("<{}>; rel=\"last\"", url(&mut pairs, total_pages)));
    header
}

/// Go's `url.QueryEscape`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Deserialize, Default)]
struct AdminUserParams {
    id: Option<Uuid>,
    role: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
    password_hash: Option<String>,
    email_confirm: Option<bool>,
    phone_confirm: Option<bool>,
    user_metadata: Option<Map<String, Value>>,
    app_metadata: Option<Map<String, Value>>,
    ban_duration: Option<String>,
}

/// `ban_duration`: `none` lifts a ban, else a Go duration (`24h`, `1h30m`, `90s`), parsed as
/// Go's `time.ParseDuration` does, within its bounds (about 292 years either way): anything
/// else is GoTrue's 400 `invalid format for ban duration: <Go's error>`, never an overflow.
fn banned_until(d: &str) -> Result<Option<DateTime<Utc>>, AuthError> {
    if d == "none" {
        return Ok(None);
    }
    let bad = |why: String| {
        AuthError::new(
            ErrorCode::ValidationFailed,
            format!("invalid format for ban duration: {why}"),
        )
    };
    let nanos = parse_go_duration(d).map_err(bad)?;
    Utc::now()
        .checked_add_signed(chrono::Duration::nanoseconds(nanos))
        .map(Some)
        .ok_or_else(|| bad(format!("time: invalid duration {d:?}")))
}

/// Go's `time.ParseDuration`: nanoseconds, or Go's error text.
fn parse_go_duration(orig: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {orig:?}");
    let mut s = orig;
    let mut neg = false;
    if let Some(c) = s.chars().next() {
        if c == '-' || c == '+' {
            neg = c == '-';
            s = &s[1..];
        }
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    const LIMIT: u64 = 1 << 63;
    let mut total: u64 = 0;
    while !s.is_empty() {
        let b = s.as_bytes();
        if !(b[0] == b'.' || b[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // The integer part.
        let int_len = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let mut v: u64 = 0;
        for &c in &b[..int_len] {
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(c - b'0')))
                .filter(|v| *v <= LIMIT)
                .ok_or_else(invalid)?;
        }
        s = &s[int_len..];
        // The fraction: digits past what fits are read and ignored.
        let (mut f, mut scale, mut frac_len) = (0u64, 1f64, 0usize);
        if let Some(rest) = s.strip_prefix('.') {
            s = rest;
            let mut overflow = false;
            for &c in s.as_bytes().iter().take_while(|c| c.is_ascii_digit()) {
                frac_len += 1;
                if overflow {
                    continue;
                }
                match f
                    .checked_mul(10)
                    .and_then(|y| y.checked_add(u64::from(c - b'0')))
                    .filter(|y| *y <= LIMIT)
                {
                    Some(y) => {
                        f = y;
                        scale *= 10.0;
                    }
                    None => overflow = true,
                }
            }
            s = &s[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return Err(invalid());
        }
        let unit_len = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration {orig:?}"));
        }
        let u = &s[..unit_len];
        s = &s[unit_len..];
        let unit: u64 = match u {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            _ => return Err(format!("time: unknown unit {u:?} in duration {orig:?}")),
        };
        if v > LIMIT / unit {
            return Err(invalid());
        }
        v *= unit;
        if f > 0 {
            v += (f as f64 * (unit as f64 / scale)) as u64;
            if v > LIMIT {
                return Err(invalid());
            }
        }
        total = total
            .checked_add(v)
            .filter(|t| *t <= LIMIT)
            .ok_or_else(invalid)?;
    }
    if neg {
        return Ok((total as i128).wrapping_neg() as i64);
    }
    i64::try_from(total).map_err(|_| invalid())
}

fn duplicate(e: &agencyflow_db::DbError) -> Option<ErrorCode> {
    match e {
        agencyflow_db::DbError::Postgres(p) if p.code == "23505" => {
            if p.message.contains("phone") {
                Some(ErrorCode::PhoneExists)
            } else {
                Some(ErrorCode::EmailExists)
            }
        }
        _ => None,
    }
}

async fn new_hash(
    state: &AuthState,
    password: Option<String>,
    password_hash: Option<String>,
) -> Result<Option<String>, AuthError> {
    match (
        password.filter(|p| !p.is_empty()),
        password_hash.filter(|h| !h.is_empty()),
    ) {
        (Some(_), Some(_)) => Err(AuthError::new(
            ErrorCode::ValidationFailed,
            "Only a password or a password hash should be provided",
        )),
        (Some(p), None) => {
            if p.chars().count() < state.args.password_min_length {
                return Err(AuthError::weak_password(state.args.password_min_length));
            }
            Ok(Some(password::hash(p).await?))
        }
        (None, Some(h)) => {
            if password::hash_kind(&h) == password::HashKind::Unknown {
                return Err(AuthError::new(
                    ErrorCode::ValidationFailed,
                    "Invalid password hash format: only bcrypt and argon2 hashes are supported",
                ));
            }
            Ok(Some(h))
        }
        (None, None) => Ok(None),
    }
}

pub async fn create_user(
    State(state): State<AuthState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AuthError> {
    require_admin(&state, &headers)?;
    let p: AdminUserParams = parse_body(&body)?;
    let email = p
        .email
        .map(|e| e.trim().to_lowercase())
        .filter(|e| !e.is_empty());
    let phone = p
        .phone
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty());
    if email.is_none() && phone.is_none() {
        return Err(AuthError::new(
            ErrorCode::ValidationFailed,
            "Cannot create a user without either an email or phone",
        ));
    }
    if let Some(e) = &email {
        model::check_email(e)?;
    }
    let banned = match p.ban_duration.as_deref() {
        Some(d) => banned_until(d)?,
        None => None,
    };
    let hash = new_hash(&state, p.password, p.password_hash).await?;
    let id = p.id.unwrap_or_else(Uuid::new_v4);
    let provider = if email.is_some() { "email" } else { "phone" };
    let mut app = Map::new();
    app.insert("provider".into(), json!(provider));
    app.insert("providers".into(), json!([provider]));
    let app = model::merge_metadata(&Value::Object(app), &p.app_metadata.unwrap_or_default());
    let user_md = Value::Object(p.user_metadata.unwrap_or_default());
    let email_confirm = p.email_confirm.unwrap_or(false) && email.is_some();
    let phone_confirm = p.phone_confirm.unwrap_or(false) && phone.is_some();
    let role = p.role.unwrap_or_else(|| "authenticated".into());
    let mut tx = state.tx().await?;
    let inserted = tx
        .execute(
            "insert into auth.users (id, aud, role, email, phone, encrypted_password,
                 email_confirmed_at, phone_confirmed_at, raw_app_meta_data, raw_user_meta_data, banned_until)
             values ($1, $2, $3, $4, $5, coalesce($6, ''), case when $7 then now() end,
                 case when $8 then now() end, $9, $10, $11)",
            &[
                &id,
                &state.args.jwt_aud,
                &role,
                &email,
                &phone,
                &hash,
                &email_confirm,
                &phone_confirm,
                &app,
                &user_md,
                &banned,
            ],
        )
        .await;
    if let Err(e) = inserted {
        return Err(match duplicate(&e) {
            Some(code) => code.into(),
            None => e.into(),
        });
    }
    match &email {
        Some(e) => model::upsert_email_identity(&mut tx, id, e, email_confirm, false).await?,
        None => {
            tx.execute(
                "insert into auth.identities (provider_id, user_id, identity_data, provider)
                 values ($1::uuid::text, $1, $2, 'phone')",
                &[
                    &id,
                    &json!({"sub": id.to_string(), "phone": phone, "email_verified": false, "phone_verified": phone_confirm}),
                ],
            )
            .await?;
        }
    }
    let user = model::find_user(&mut tx, id)
        .await?
        .ok_or_else(|| AuthError::internal("inserted user not found"))?;
    tx.commit().await?;
    Ok(Json(user.to_json()).into_response())
}

pub async fn get_user(
    State(state): State<AuthState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, AuthError> {
    require_admin(&state, &headers)?;
    let id = parse_user_id(&id)?;
    let mut tx = state.tx().await?;
    let user = model::find_user(&mut tx, id)
        .await?
        .ok_or(ErrorCode::UserNotFound)?;
    tx.commit().await?;
    Ok(Json(user.to_json()).into_response())
}

pub async fn update_user(
    State(state): State<AuthState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, AuthError> {
    require_admin(&state, &headers)?;
    let id = parse_user_id(&id)?;
    let p: AdminUserParams = parse_body(&body)?;
    let email = p
        .email
        .map(|e| e.trim().to_lowercase())
        .filter(|e| !e.is_empty());
    if let Some(e) = &email {
        model::check_email(e)?;
    }
    let phone = p
        .phone
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty());
    let ban: Option<Option<DateTime<Utc>>> = match p.ban_duration.as_deref() {
        Some(d) => Some(banned_until(d)?),
        None => None,
    };
    let hash = new_hash(&state, p.password, p.password_hash).await?;
    let mut tx = state.tx().await?;
    let user = model::find_user(&mut tx, id)
        .await?
        .ok_or(ErrorCode::UserNotFound)?;
    let user_md = p
        .user_metadata
        .map(|m| model::merge_metadata(&user.user_metadata, &m));
    let mut app_md = p
        .app_metadata
        .map(|m| model::merge_metadata(&user.app_metadata, &m));
    if email.is_some() && user.is_anonymous {
        app_md = Some(model::with_email_provider(
            app_md.as_ref().unwrap_or(&user.app_metadata),
        ));
    }
    let email_confirm = p.email_confirm.unwrap_or(false);
    let phone_confirm = p.phone_confirm.unwrap_or(false);
    let set_ban = ban.is_some();
    let ban_value = ban.flatten();
    let updated = tx
        .execute(
            "update auth.users set
               role = coalesce($2, role),
               email = coalesce($3, email),
               phone = coalesce($4, phone),
               encrypted_password = coalesce($5, encrypted_password),
               email_confirmed_at = case when $6 then coalesce(email_confirmed_at, now()) else email_confirmed_at end,
               phone_confirmed_at = case when $7 then coalesce(phone_confirmed_at, now()) else phone_confirmed_at end,
               raw_user_meta_data = coalesce($8, raw_user_meta_data),
               raw_app_meta_data = coalesce($9, raw_app_meta_data),
               banned_until = case when $10 then $11 else banned_until end,
               is_anonymous = case when $3::text is not null then false else is_anonymous end,
               updated_at = now()
             where id = $1",
            &[
                &id,
                &p.role,
                &email,
                &phone,
                &hash,
                &email_confirm,
                &phone_confirm,
                &user_md,
                &app_md,
                &set_ban,
                &ban_value,
            ],
        )
        .await;
    if let Err(e) = updated {
        return Err(match duplicate(&e) {
            Some(code) => code.into(),
            None => e.into(),
        });
    }
    if let Some(e) = &email {
        let verified = email_confirm || user.email_confirmed_at.is_some();
        model::upsert_email_identity(&mut tx, id, e, verified, false).await?;
    }
    if set_ban && ban_value.is_some() {
        tx.execute("delete from auth.sessions where user_id = $1", &[&id])
            .await?;
    }
    let user = model::find_user(&mut tx, id)
        .await?
        .ok_or(ErrorCode::UserNotFound)?;
    tx.commit().await?;
    Ok(Json(user.to_json()).into_response())
}

#[derive(Deserialize, Default)]
struct DeleteParams {
    should_soft_delete: Option<bool>,
}

pub async fn delete_user(
    State(state): State<AuthState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, AuthError> {
    require_admin(&state, &headers)?;
    let id = parse_user_id(&id)?;
    let p: DeleteParams = parse_body(&body)?;
    let mut tx = state.tx().await?;
    let n = if p.should_soft_delete.unwrap_or(false) {
        // GoTrue's soft delete: the row stays (for foreign keys), unusable and anonymised.
        tx.execute(
            "with u as (
               update auth.users set deleted_at = now(), email = null, phone = null,
                 encrypted_password = '', email_change = null, raw_app_meta_data = '{}'::jsonb,
                 raw_user_meta_data = '{}'::jsonb, updated_at = now()
               where id = $1 and deleted_at is null returning id
             ), s as (delete from auth.sessions where user_id in (select id from u))
             , i as (delete from auth.identities where user_id in (select id from u))
             select id from u",
            &[&id],
        )
        .await?
    } else {
        tx.execute("delete from auth.users where id = $1", &[&id])
            .await?
    };
    if n == 0 {
        return Err(ErrorCode::UserNotFound.into());
    }
    tx.commit().await?;
    Ok(Json(json!({})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_as_gotrue_writes_it() {
        assert_eq!(
            link_header("/admin/users", Some("page=1&per_page=2"), 1, 2, 5),
            "</admin/users?page=2&per_page=2>; rel=\"next\", </admin/users?page=3&per_page=2>; rel=\"last\""
        );
        // supabase-js sends empty values; the keys stay, sorted.
        assert_eq!(
            link_header("/admin/users", Some("per_page=&page="), 1, 50, 3),
            "</admin/users?page=1&per_page=>; rel=\"last\""
        );
        assert_eq!(
            link_header("/admin/users", None, 1, 50, 0),
            "</admin/users?page=0>; rel=\"last\""
        );
    }

    #[test]
    fn ban_durations() {
        assert!(banned_until("none").unwrap().is_none());
        let t = banned_until("1h30m").unwrap().unwrap();
        let d = t - Utc::now();
        assert!(d.num_minutes() >= 89 && d.num_minutes() <= 90);
        assert!(banned_until("forever").is_err());
        assert!(banned_until("").is_err());
        // Past Go's range: a 400, not a panic.
        for huge in [
            "99999999999h",
            "9223372036854775808ns",
            "2562048h",
            "-99999999999h",
        ] {
            let e = banned_until(huge).unwrap_err();
            assert_eq!(e.code(), Some(ErrorCode::ValidationFailed), "{huge}");
        }
        assert!(banned_until("2562047h").is_ok());
    }

    #[test]
    fn go_durations_parse_as_go_does() {
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("-1m30s"), Ok(-90_000_000_000));
        assert_eq!(parse_go_duration("+300ms"), Ok(300_000_000));
        assert_eq!(parse_go_duration("1\u{b5}s"), Ok(1_000));
        assert_eq!(parse_go_duration(".5s"), Ok(500_000_000));
        assert_eq!(parse_go_duration("9223372036854775807ns"), Ok(i64::MAX));
        assert_eq!(parse_go_duration("-9223372036854775808ns"), Ok(i64::MIN));
        assert_eq!(
            parse_go_duration("99999999999h"),
            Err("time: invalid duration \"99999999999h\"".to_string())
        );
        assert_eq!(
            parse_go_duration("10"),
            Err("time: missing unit in duration \"10\"".to_string())
        );
        assert_eq!(
            parse_go_duration("5d"),
            Err("time: unknown unit \"d\" in duration \"5d\"".to_string())
        );
        assert!(parse_go_duration(".h").is_err());
        assert!(parse_go_duration("-").is_err());
    }

    #[test]
    fn query_escaping() {
        assert_eq!(escape("a b&c"), "a+b%26c");
        assert_eq!(unescape("a+b%26c"), "a b&c");
        assert_eq!(unescape("100%"), "100%");
    }
}
