//! The user-facing endpoints: sign-up, token grants, user, logout, settings, health, JWKS.
use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::error::{AuthError, ErrorCode};
use crate::model::{self, ClientInfo, User};
use crate::password;
use crate::ratelimit::Limit;
use crate::tokens::token_hash;
use crate::AuthState;

/// Who is asking, from where, the `iss` to put in tokens issued to them, and the public base
/// of `/auth/v1` for email links.
pub struct ReqInfo {
    pub client: ClientInfo,
    pub issuer: String,
    pub auth_base: String,
}

impl FromRequestParts<AuthState> for ReqInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AuthState,
    ) -> Result<Self, Self::Rejection> {
        let h = &parts.headers;
        // The first value of the configured trusted header (the client, as the proxy saw
        // it), else the socket's peer.
        let forwarded = state
            .args
            .rate_limit_header
            .as_deref()
            .filter(|name| !name.trim().is_empty())
            .and_then(|name| h.get(name.trim()))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        let ip = forwarded
            .or_else(|| {
                parts
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|c| c.0.ip().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let user_agent = h
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let auth_base = format!("{}/auth/v1", external_base(state, h));
        let issuer = state
            .args
            .jwt_issuer
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| auth_base.clone());
        Ok(ReqInfo {
            client: ClientInfo { ip, user_agent },
            issuer,
            auth_base,
        })
    }
}

/// The API's public URL: `API_EXTERNAL_URL`; without it, the URL the request came to when its
/// Host is a loopback address (local development), else `http://localhost`. A client picks
/// its Host and any `X-Forwarded-*` header, so neither may put another site into tokens or
/// into the links emailed to somebody else (a recovery link pointing at an attacker's host
/// would hand them the victim's token).
pub(crate) fn external_base(state: &AuthState, h: &HeaderMap) -> String {
    if let Some(u) = state
        .args
        .api_external_url
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        return u.trim_end_matches('/').to_string();
    }
    h.get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|host| is_loopback_authority(host))
        .map(|host| format!("http://{}", host.to_ascii_lowercase()))
        .unwrap_or_else(|| "http://localhost".to_string())
}

/// `localhost`, `127.x.y.z` or `[::1]`, with an optional numeric port, and nothing else.
fn is_loopback_authority(authority: &str) -> bool {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let Some((h, after)) = rest.split_once(']') else {
            return false;
        };
        match after {
            "" => (h, None),
            a => match a.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return false,
            },
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    port_ok && host_ok
}

/// Parses a JSON body; an empty body is `{}`. Malformed JSON is a 400 `bad_json`.
pub(crate) fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, AuthError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        AuthError::new(
            ErrorCode::BadJson,
            format!("Could not parse request body as JSON: {e}"),
        )
    })
}

/// The bearer token, read by `agencyflow_keys` as on every surface (`Bearer` in any case);
/// a header that is not text carries none.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    agencyflow_keys::bearer(headers).ok().flatten()
}

/// The verified claims of the request's bearer token.
pub(crate) fn bearer_claims(state: &AuthState, headers: &HeaderMap) -> Result<Value, AuthError> {
    let token = bearer(headers).ok_or(ErrorCode::NoAuthorization)?;
    state.keys.verify(token).map_err(|e| {
        AuthError::new(
            ErrorCode::BadJwt,
            match e {
                crate::JwtError::Expired => {
                    "invalid JWT: unable to parse or verify signature, token has invalid claims: token is expired".to_string()
                }
                crate::JwtError::Invalid(m) => {
                    format!("invalid JWT: unable to parse or verify signature, {m}")
                }
            },
        )
    })
}

/// The user (and session) a user token speaks for.
pub(crate) async fn authenticated(
    state: &AuthState,
    headers: &HeaderMap,
) -> Result<(User, Option<Uuid>), AuthError> {
    let claims = bearer_claims(state, headers)?;
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or_else(|| AuthError::new(ErrorCode::BadJwt, "invalid claim: missing sub claim"))?;
    let user_id = Uuid::parse_str(sub).map_err(|_| {
        AuthError::new(ErrorCode::BadJwt, "invalid claim: sub claim must be a UUID")
    })?;
    let session_id = match claims.get("session_id").and_then(Value::as_str) {
        Some(s) => Some(Uuid::parse_str(s).map_err(|_| ErrorCode::SessionNotFound)?),
        None => None,
    };
    let mut tx = state.tx().await?;
    let user = model::find_user(&mut tx, user_id)
        .await?
        .ok_or(ErrorCode::UserNotFoundFromJwt)?;
    if let Some(sid) = session_id {
        let alive: bool = tx
            .query_one(
                "select exists (select 1 from auth.sessions where id = $1 and user_id = $2
                   and (not_after is null or not_after > now()))",
                &[&sid, &user_id],
            )
            .await?
            .get(0);
        if !alive {
            return Err(ErrorCode::SessionNotFound.into());
        }
    }
    tx.commit().await?;
    Ok((user, session_id))
}

pub(crate) fn rate_limit(state: &AuthState, limit: Limit, key: &str) -> Result<(), AuthError> {
    if state.limiter().check(limit, key) {
        Ok(())
    } else {
        Err(ErrorCode::OverRequestRateLimit.into())
    }
}

pub(crate) fn nonempty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn check_password_length(state: &AuthState, password: &str) -> Result<(), AuthError> {
    if password.chars().count() < state.args.password_min_length {
        return Err(AuthError::weak_password(state.args.password_min_length));
    }
    Ok(())
}

#[derive(Deserialize, Default)]
struct SignupBody {
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
    data: Option<Map<String, Value>>,
}

pub async fn signup(
    State(state): State<AuthState>,
    info: ReqInfo,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, AuthError> {
    let body: SignupBody = parse_body(&body)?;
    if state.args.disable_signup {
        return Err(ErrorCode::SignupDisabled.into());
    }
    let email = nonempty(body.email).map(|e| e.to_lowercase());
    let phone = nonempty(body.phone);
    let data = body.data.unwrap_or_default();
    if email.is_none() && phone.is_none() {
        return signup_anonymous(state, info, data).await;
    }
    rate_limit(&state, Limit::SignInSignUpsPerIp, &info.client.ip)?;
    // GoTrue's order: the password, then one of email or phone, then the provider.
    let password = body.password.filter(|p| !p.is_empty()).ok_or_else(|| {
        AuthError::new(
            ErrorCode::ValidationFailed,
            "Signup requires a valid password",
        )
    })?;
    check_password_length(&state, &password)?;
    let email = match (email, phone) {
        (Some(_), Some(_)) => {
            return Err(AuthError::new(
                ErrorCode::ValidationFailed,
                "Only an email address or phone number should be provided on signup.",
            ))
        }
        (None, _) => {
            return Err(AuthError::new(
                ErrorCode::PhoneProviderUnsupported,
                "Phone signups are disabled",
            ))
        }
        (Some(email), None) => email,
    };
    rate_limit(&state, Limit::SignInPerEmail, &email)?;
    model::check_email(&email)?;
    let hash = password::hash(password).await?;
    let confirm = state.args.mailer_autoconfirm;
    let id = Uuid::new_v4();
    let mut metadata = Value::Object(data);
    if let Value::Object(m) = &mut metadata {
        if let Value::Object(idd) = model::email_identity_data(id, &email, confirm) {
            m.extend(idd);
        }
    }
    let app_metadata = model::with_email_provider(&json!({}));
    let mut tx = state.tx().await?;
    let inserted = tx
        .execute(
            "insert into auth.users (id, aud, role, email, encrypted_password, email_confirmed_at,
                 confirmation_sent_at, last_sign_in_at, raw_app_meta_data, raw_user_meta_data)
             values ($1, $2, 'authenticated', $3, $4, case when $5 then now() end,
                 case when $5 then null else now() end, case when $5 then now() end, $6, $7)",
            &[
                &id,
                &state.args.jwt_aud,
                &email,
                &hash,
                &confirm,
                &app_metadata,
                &metadata,
            ],
        )
        .await;
    if let Err(e) = inserted {
        if is_duplicate_email(&e) {
            drop(tx);
            if confirm {
                return Err(ErrorCode::UserAlreadyExists.into());
            }
            // With confirmation on, GoTrue answers an obfuscated user instead of revealing it.
            return Ok(Json(fake_user(&state, id, &email, &metadata)).into_response());
        }
        return Err(e.into());
    }
    model::upsert_email_identity(&mut tx, id, &email, confirm, confirm).await?;
    let (session, confirmation) = if confirm {
        let s = model::create_session(&state, &mut tx, id, "password", &info.client).await?;
        (Some(s), None)
    } else {
        // The address is confirmed only by the link or code "sent" to it.
        let issued = crate::otp::issue_signup_confirmation(&state, &mut tx, id, &email).await?;
        (None, Some(issued))
    };
    let user = model::find_user(&mut tx, id)
        .await?
        .ok_or_else(|| AuthError::internal("inserted user not found"))?;
    tx.commit().await?;
    if let Some(issued) = confirmation {
        crate::otp::send_signup_confirmation(&state, &info, q.get("redirect_to"), &user, &issued);
    }
    match session {
        Some((sid, refresh, amr)) => Ok(Json(model::session_json(
            &state,
            &user,
            sid,
            &amr,
            &refresh,
            &info.issuer,
        )?)
        .into_response()),
        None => Ok(Json(user.to_json()).into_response()),
    }
}

fn is_duplicate_email(e: &agencyflow_db::DbError) -> bool {
    match e {
        agencyflow_db::DbError::Postgres(p) => {
            p.code == "23505" && (p.message.contains("email") || p.message.contains("users_pkey"))
        }
        _ => false,
    }
}

/// GoTrue's obfuscated user for a sign-up of a registered address: the shape (and the
/// `sub` in the metadata) of a new unconfirmed user, with the fresh `id` the insert tried.
fn fake_user(state: &AuthState, id: Uuid, email: &str, metadata: &Value) -> Value {
    let now = model::ts(chrono::Utc::now());
    json!({
        "id": id, "aud": state.args.jwt_aud, "role": "authenticated", "email": email,
        "phone": "", "confirmation_sent_at": now, "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": metadata, "identities": [], "created_at": now, "updated_at": now, "is_anonymous": false,
    })
}

async fn signup_anonymous(
    state: AuthState,
    info: ReqInfo,
    data: Map<String, Value>,
) -> Result<Response, AuthError> {
    if !state.args.anonymous_users_enabled {
        return Err(ErrorCode::AnonymousProviderDisabled.into());
    }
    rate_limit(&state, Limit::AnonymousPerIp, &info.client.ip)?;
    let id = Uuid::new_v4();
    let mut tx = state.tx().await?;
    tx.execute(
        "insert into auth.users (id, aud, role, is_anonymous, last_sign_in_at, raw_app_meta_data, raw_user_meta_data)
         values ($1, $2, 'authenticated', true, now(), '{}'::jsonb, $3)",
        &[&id, &state.args.jwt_aud, &Value::Object(data)],
    )
    .await?;
    let (sid, refresh, amr) =
        model::create_session(&state, &mut tx, id, "anonymous", &info.client).await?;
    let user = model::find_user(&mut tx, id)
        .await?
        .ok_or_else(|| AuthError::internal("inserted user not found"))?;
    tx.commit().await?;
    Ok(Json(model::session_json(
        &state,
        &user,
        sid,
        &amr,
        &refresh,
        &info.issuer,
    )?)
    .into_response())
}

#[derive(Deserialize, Default)]
struct PasswordGrant {
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
}

#[derive(Deserialize, Default)]
struct RefreshGrant {
    refresh_token: Option<String>,
}

pub async fn token(
    State(state): State<AuthState>,
    info: ReqInfo,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, AuthError> {
    match q.get("grant_type").map(String::as_str) {
        // Sign-in with Ethereum/Solana wallets: no Web3 provider is offered (GoTrue's answer
        // when none is enabled).
        Some("web3") => Err(ErrorCode::Web3ProviderDisabled.into()),
        Some("password") => password_grant(state, info, parse_body(&body)?).await,
        Some("refresh_token") => refresh_grant(state, info, parse_body(&body)?).await,
        Some("pkce") => crate::otp::pkce_grant(state, info, &body).await,
        Some("id_token") => crate::external::id_token_grant(state, info, &body).await,
        _ => Err(AuthError::oauth("unsupported_grant_type", "")),
    }
}

async fn password_grant(
    state: AuthState,
    info: ReqInfo,
    body: PasswordGrant,
) -> Result<Response, AuthError> {
    let email = nonempty(body.email).map(|e| e.to_lowercase());
    let phone = nonempty(body.phone);
    if email.is_some() && phone.is_some() {
        return Err(AuthError::new(
            ErrorCode::ValidationFailed,
            "Only an email address or phone number should be provided on login.",
        ));
    }
    let Some(login) = email.clone() else {
        if phone.is_some() {
            // No SMS provider, so the phone provider is off: GoTrue refuses phone logins.
            return Err(ErrorCode::PhoneProviderDisabled.into());
        }
        return Err(AuthError::new(
            ErrorCode::ValidationFailed,
            "missing email or phone",
        ));
    };
    rate_limit(&state, Limit::SignInSignUpsPerIp, &info.client.ip)?;
    rate_limit(&state, Limit::SignInPerEmail, &login)?;
    let password = body.password.unwrap_or_default();
    let mut tx = state.tx().await?;
    let user = model::find_user_by_email(&mut tx, &login).await?;
    tx.commit().await?;
    // Verified even for an unknown user (a dummy hash), so timing does not reveal who exists.
    let hash = user.as_ref().and_then(|u| u.encrypted_password.clone());
    let ok = password::verify(password.clone(), hash.clone()).await?;
    let user = match user {
        Some(u) if ok && !password.is_empty() => u,
        _ => return Err(ErrorCode::InvalidCredentials.into()),
    };
    if email.is_some() && user.email_confirmed_at.is_none() {
        return Err(ErrorCode::EmailNotConfirmed.into());
    }
    if user.is_banned() {
        return Err(ErrorCode::UserBanned.into());
    }
    let rehash = match hash.as_deref() {
        Some(h) if password::needs_rehash(h) => Some(password::hash(password.clone()).await?),
        _ => None,
    };
    let mut tx = state.tx().await?;
    tx.execute(
        "with u as (
           update auth.users set last_sign_in_at = now(), updated_at = now(),
             encrypted_password = coalesce($2, encrypted_password)
           where id = $1 returning id
         )
         update auth.identities set last_sign_in_at = now()
         where user_id = (select id from u) and provider = 'email'",
        &[&user.id, &rehash],
    )
    .await?;
    let (sid, refresh, amr) =
        model::create_session(&state, &mut tx, user.id, "password", &info.client).await?;
    let user = model::find_user(&mut tx, user.id)
        .await?
        .ok_or_else(|| AuthError::internal("user vanished during sign-in"))?;
    tx.commit().await?;
    let mut session = model::session_json(&state, &user, sid, &amr, &refresh, &info.issuer)?;
    if password.chars().count() < state.args.password_min_length {
        session["weak_password"] = json!({
            "reasons": ["length"],
            "message": format!("Password should be at least {} characters.", state.args.password_min_length),
        });
    }
    Ok(Json(session).into_response())
}

async fn refresh_grant(
    state: AuthState,
    info: ReqInfo,
    body: RefreshGrant,
) -> Result<Response, AuthError> {
    let Some(presented) = nonempty(body.refresh_token) else {
        return Err(AuthError::oauth(
            "invalid_request",
            "refresh_token required",
        ));
    };
    rate_limit(&state, Limit::TokenRefreshPerIp, &info.client.ip)?;
    let hash = token_hash(&presented);
    let tokens = state.refresh_tokens();
    // The common case, an active token of a live session of a user in good standing: one
    // statement, prepared once per connection, rotates it, pipelined with BEGIN and COMMIT
    // (one round trip, no parse or plan per request).
    let child = tokens.child_of(&presented);
    let rows = state
        .tx()
        .await?
        .query_cached_and_commit(
            rotate_sql(),
            &[Some(hash.clone()), Some(token_hash(&child))],
        )
        .await?;
    if let Some(row) = rows.first() {
        let user = User::from_row(row);
        let session_id: Uuid = row.get("s_id");
        let amr: Value = row.get("s_amr");
        return Ok(Json(model::session_json(
            &state,
            &user,
            session_id,
            &amr,
            &child,
            &info.issuer,
        )?)
        .into_response());
    }
    // Everything else (revoked, unknown, expired, banned) is decided under a row lock.
    let mut tx = state.tx().await?;
    let sql = format!(
        "{}, rt.id as rt_id, rt.revoked as rt_revoked, rt.session_id as rt_session_id,
            s.amr as s_amr, (s.not_after is not null and s.not_after <= now()) as s_expired,
            (now() - rt.updated_at) < make_interval(secs => $2::double precision) as rt_in_reuse_interval
         from auth.refresh_tokens rt
         join auth.sessions s on s.id = rt.session_id
         join auth.users u on u.id = rt.user_id
         where rt.token_hash = $1
         for update of rt",
        model::user_select_columns()
    );
    let reuse = state.args.refresh_token_reuse_interval as f64;
    let Some(row) = tx.query_opt(&sql, &[&hash, &reuse]).await? else {
        return Err(ErrorCode::RefreshTokenNotFound.into());
    };
    let user = User::from_row(&row);
    let token_id: i64 = row.get("rt_id");
    let revoked: bool = row.get("rt_revoked");
    let session_id: Uuid = row.get("rt_session_id");
    let amr: Value = row.get("s_amr");
    if row.get::<_, bool>("s_expired") {
        return Err(ErrorCode::SessionExpired.into());
    }
    if user.is_banned() {
        return Err(ErrorCode::UserBanned.into());
    }
    let issued = if !revoked {
        let child = tokens.child_of(&presented);
        swap(
            &mut tx,
            token_id,
            &hash,
            &token_hash(&child),
            &user,
            session_id,
        )
        .await?;
        child
    } else {
        let active: Option<(String, Option<String>)> = tx
            .query_opt(
                "select token_hash, parent from auth.refresh_tokens
                 where session_id = $1 and revoked = false order by id desc limit 1",
                &[&session_id],
            )
            .await?
            .map(|r| (r.get(0), r.get(1)));
        let derived = tokens.child_of(&presented);
        match active {
            // The client lost the answer to its last refresh: hand it the active token again.
            Some((active_hash, Some(parent)))
                if parent == hash && active_hash == token_hash(&derived) =>
            {
                tx.execute(
                    "update auth.sessions set refreshed_at = now(), updated_at = now() where id = $1",
                    &[&session_id],
                )
                .await?;
                derived
            }
            Some((_, Some(parent))) if parent == hash => {
                let child = tokens.random();
                swap(
                    &mut tx,
                    token_id,
                    &hash,
                    &token_hash(&child),
                    &user,
                    session_id,
                )
                .await?;
                child
            }
            _ if row.get::<_, bool>("rt_in_reuse_interval") => {
                let child = tokens.random();
                swap(
                    &mut tx,
                    token_id,
                    &hash,
                    &token_hash(&child),
                    &user,
                    session_id,
                )
                .await?;
                child
            }
            _ => {
                // Reuse of an old token: someone else may hold this family. End the session.
                tracing::warn!(session_id = %session_id, user_id = %user.id, "refresh token reuse detected; session revoked");
                tx.execute("delete from auth.sessions where id = $1", &[&session_id])
                    .await?;
                tx.commit().await?;
                return Err(ErrorCode::RefreshTokenAlreadyUsed.into());
            }
        }
    };
    tx.commit().await?;
    Ok(Json(model::session_json(
        &state,
        &user,
        session_id,
        &amr,
        &issued,
        &info.issuer,
    )?)
    .into_response())
}

/// Rotates an active refresh token `$1` (hash) to its child `$2` (hash) when its session is
/// live and its user not banned, returning the user and the session; no row otherwise.
fn rotate_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "with t as (
               select rt.id, rt.user_id, rt.session_id
               from auth.refresh_tokens rt
               join auth.sessions s on s.id = rt.session_id
               join auth.users u on u.id = rt.user_id
               where rt.token_hash = $1 and rt.revoked = false
                 and (s.not_after is null or s.not_after > now())
                 and (u.banned_until is null or u.banned_until <= now())
               for update of rt
             ), r as (
               update auth.refresh_tokens x set revoked = true, updated_at = now()
               from t where x.id = t.id returning x.id
             ), c as (
               insert into auth.refresh_tokens (token_hash, user_id, session_id, parent)
               select $2, t.user_id, t.session_id, $1 from t returning id
             ), s as (
               update auth.sessions ss set refreshed_at = now(), updated_at = now()
               from t where ss.id = t.session_id returning ss.id, ss.amr
             )
             {}, s.id as s_id, s.amr as s_amr
             from t join s on s.id = t.session_id join auth.users u on u.id = t.user_id",
            model::user_select_columns()
        )
    })
}

/// Revokes the presented token and issues its child in the same session.
async fn swap(
    tx: &mut agencyflow_db::ClaimsTxn,
    token_id: i64,
    parent_hash: &str,
    child_hash: &str,
    user: &User,
    session_id: Uuid,
) -> Result<(), AuthError> {
    tx.execute(
        "with r as (
           update auth.refresh_tokens set revoked = true, updated_at = now()
           where id = $1 and revoked = false returning id
         ), c as (
           insert into auth.refresh_tokens (token_hash, user_id, session_id, parent)
           values ($3, $4, $5, $2) returning id
         )
         update auth.sessions set refreshed_at = now(), updated_at = now() where id = $5",
        &[&token_id, &parent_hash, &child_hash, &user.id, &session_id],
    )
    .await?;
    Ok(())
}

pub async fn get_user(
    State(state): State<AuthState>,
    headers: HeaderMap,
) -> Result<Response, AuthError> {
    let (user, _) = authenticated(&state, &headers).await?;
    Ok(Json(user.to_json()).into_response())
}

#[derive(Deserialize, Default)]
struct UpdateUserBody {
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
    data: Option<Map<String, Value>>,
    /// The code `GET /reauthenticate` sent (supabase-js `updateUser({ password, nonce })`).
    nonce: Option<String>,
}

pub async fn update_user(
    State(state): State<AuthState>,
    info: ReqInfo,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, AuthError> {
    let body: UpdateUserBody = parse_body(&body)?;
    let (user, session_id) = authenticated(&state, &headers).await?;
    let new_email = nonempty(body.email)
        .map(|e| e.to_lowercase())
        .filter(|e| Some(e) != user.email.as_ref());
    if let Some(p) = nonempty(body.phone) {
        if Some(&p) != user.phone.as_ref() {
            return Err(AuthError::new(
                ErrorCode::PhoneProviderDisabled,
                "Phone changes are disabled: there is no SMS provider",
            ));
        }
    }
    if let Some(e) = &new_email {
        model::check_email(e)?;
    }
    let password = body.password.filter(|p| !p.is_empty());
    let nonce = nonempty(body.nonce);
    // Each password change hashes with argon2id, an email change sends an email and a nonce
    // is a guess at a code: limited per user and per client.
    if password.is_some() || new_email.is_some() || nonce.is_some() {
        rate_limit(&state, Limit::UserUpdatesPerUser, &user.id.to_string())?;
        rate_limit(&state, Limit::UserUpdatesPerIp, &info.client.ip)?;
    }
    let new_hash = match password {
        Some(p) => {
            if user.is_anonymous && user.email.is_none() && new_email.is_none() {
                return Err(ErrorCode::AnonymousPasswordWithoutEmail.into());
            }
            check_password_length(&state, &p)?;
            if user
                .encrypted_password
                .as_deref()
                .is_some_and(|h| !h.is_empty())
                && password::verify(p.clone(), user.encrypted_password.clone()).await?
            {
                return Err(ErrorCode::SamePassword.into());
            }
            Some(password::hash(p).await?)
        }
        None => None,
    };
    let mut user_metadata = match &body.data {
        Some(d) => model::merge_metadata(&user.user_metadata, d),
        None => user.user_metadata.clone(),
    };
    let mut app_metadata = None;
    // GoTrue's rule: an anonymous user may take an address at once when the operator set
    // autoconfirm (it is like signing up); any other new address waits, in `email_change`,
    // until the code sent to it comes back through /verify type=email_change.
    let immediate = user.is_anonymous && state.args.mailer_autoconfirm;
    let (set_email, pending_email) = match &new_email {
        Some(e) if immediate => {
            if let Value::Object(m) = &mut user_metadata {
                if let Value::Object(idd) = model::email_identity_data(user.id, e, true) {
                    m.extend(idd);
                }
            }
            app_metadata = Some(model::with_email_provider(&user.app_metadata));
            (Some(e.clone()), None)
        }
        Some(e) => (None, Some(e.clone())),
        None => (None, None),
    };
    let mut tx = state.tx().await?;
    // A reauthentication code, when given, must be the live one: it is used up with this
    // update (and kept if the update fails). With secure password change on, a password
    // change in a session older than 24 hours needs one.
    if new_hash.is_some() && nonce.is_none() && state.args.update_password_require_reauthentication
    {
        let recent: bool = match session_id {
            Some(sid) => tx
                .query_opt(
                    "select created_at > now() - interval '24 hours' from auth.sessions where id = $1",
                    &[&sid],
                )
                .await?
                .is_some_and(|r| r.get(0)),
            None => false,
        };
        if !recent {
            return Err(ErrorCode::ReauthenticationNeeded.into());
        }
    }
    if let Some(nonce) = nonce {
        tx = crate::otp::take_reauthentication(&state, tx, &user, &nonce).await?;
    }
    if let Some(e) = new_email.as_deref() {
        let taken: bool = tx
            .query_one(
                "select exists (select 1 from auth.users where lower(email) = lower($1) and id <> $2 and is_sso_user = false)",
                &[&e, &user.id],
            )
            .await?
            .get(0);
        if taken {
            return Err(ErrorCode::EmailExists.into());
        }
    }
    // The code for the new address (refused within GOTRUE_SMTP_MAX_FREQUENCY of the last).
    let email_change = match &pending_email {
        Some(e) => Some(crate::otp::issue_email_change(&state, &mut tx, &user, e).await?),
        None => None,
    };
    let updated = tx
        .execute(
            "update auth.users set
               raw_user_meta_data = $2,
               encrypted_password = coalesce($3, encrypted_password),
               email = coalesce($4, email),
               email_confirmed_at = case when $4::text is not null then coalesce(email_confirmed_at, now()) else email_confirmed_at end,
               email_change = case when $5::text is not null then $5 when $4::text is not null then null else email_change end,
               email_change_sent_at = case when $5::text is not null then now() else email_change_sent_at end,
               is_anonymous = case when $4::text is not null then false else is_anonymous end,
               raw_app_meta_data = coalesce($6, raw_app_meta_data),
               updated_at = now()
             where id = $1",
            &[
                &user.id,
                &user_metadata,
                &new_hash,
                &set_email,
                &pending_email,
                &app_metadata,
            ],
        )
        .await;
    match updated {
        Err(e) if is_duplicate_email(&e) => return Err(ErrorCode::EmailExists.into()),
        r => r?,
    };
    if let Some(e) = &set_email {
        model::upsert_email_identity(&mut tx, user.id, e, true, false).await?;
    }
    if new_hash.is_some() {
        // A new password: other sessions must sign in again (GoTrue's rule).
        tx.execute(
            "delete from auth.sessions where user_id = $1 and id is distinct from $2",
            &[&user.id, &session_id],
        )
        .await?;
    }
    let user = model::find_user(&mut tx, user.id)
        .await?
        .ok_or(ErrorCode::UserNotFoundFromJwt)?;
    tx.commit().await?;
    if let (Some(e), Some(issued)) = (&pending_email, &email_change) {
        crate::otp::send_email_change(&state, &info, q.get("redirect_to"), &user, e, issued);
    }
    Ok(Json(user.to_json()).into_response())
}

pub async fn logout(
    State(state): State<AuthState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, AuthError> {
    let scope = q.get("scope").map(String::as_str).unwrap_or("global");
    if !matches!(scope, "" | "global" | "local" | "others") {
        return Err(AuthError::new(
            ErrorCode::ValidationFailed,
            format!("Unsupported logout scope {scope:?}"),
        ));
    }
    let (user, session_id) = authenticated(&state, &headers).await?;
    let mut tx = state.tx().await?;
    match (scope, session_id) {
        ("local", Some(sid)) => {
            tx.execute("delete from auth.sessions where id = $1", &[&sid])
                .await?
        }
        ("others", Some(sid)) => {
            tx.execute(
                "delete from auth.sessions where user_id = $1 and id <> $2",
                &[&user.id, &sid],
            )
            .await?
        }
        ("others", None) => 0,
        _ => {
            tx.execute("delete from auth.sessions where user_id = $1", &[&user.id])
                .await?
        }
    };
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn settings(State(state): State<AuthState>) -> Json<Value> {
    let a = &state.args;
    let mut external = Map::new();
    for p in [
        "apple",
        "azure",
        "bitbucket",
        "discord",
        "facebook",
        "figma",
        "fly",
        "github",
        "gitlab",
        "google",
        "keycloak",
        "kakao",
        "linkedin",
        "linkedin_oidc",
        "notion",
        "spotify",
        "slack",
        "slack_oidc",
        "workos",
        "twitch",
        "twitter",
        "zoom",
    ] {
        external.insert(p.into(), json!(false));
    }
    for k in crate::external::provider::Kind::ALL {
        external.insert(k.name().into(), json!(a.external.settings(k).enabled));
    }
    external.insert("anonymous_users".into(), json!(a.anonymous_users_enabled));
    external.insert("email".into(), json!(true));
    external.insert("phone".into(), json!(false));
    Json(json!({
        "external": external,
        "disable_signup": a.disable_signup,
        "mailer_autoconfirm": a.mailer_autoconfirm,
        "phone_autoconfirm": false,
        "sms_provider": "",
        "saml_enabled": false,
    }))
}

pub async fn health() -> Json<Value> {
    Json(json!({
        "version": concat!("agencyflow-", env!("CARGO_PKG_VERSION")),
        "name": "GoTrue",
        "description": "GoTrue is a user registration and authentication API",
    }))
}

pub async fn jwks(State(state): State<AuthState>) -> Response {
    let mut r = Json(state.keys.public_jwks()).into_response();
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=600"),
    );
    r
}

pub async fn not_found() -> AuthError {
    AuthError::new(ErrorCode::NotFound, "Not found")
}

pub async fn method_not_allowed() -> AuthError {
    ErrorCode::MethodNotAllowed.into()
}
