//! Operator sign-in, sessions, CSRF and the audit log.
//!
//! A session is 256 random bits in the `af_console` cookie (httpOnly, SameSite=Strict, path
//! `/console`, Secure when the request came over TLS); the database keeps only its SHA-256.
//! Every API call resolves the session (sliding idle expiry, 12 h at most); every call that is
//! not GET/HEAD must carry the session's CSRF token in `X-CSRF-Token` and, when the browser
//! sends an `Origin`, come from the console's own origin. [`Admin`] is the extractor that
//! enforces all of it: a handler that takes an `Admin` cannot run otherwise.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{ConsoleError, Result};
use crate::{header_str, ClientInfo, ConsoleState, Inner, SecureCookie};

pub const COOKIE: &str = "af_console";
/// A session lives at most this long, however active.
const ABSOLUTE_HOURS: i64 = 12;
/// The sign-in window of the rate limits.
const WINDOW: Duration = Duration::from_secs(300);

pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Fixed-window counters per client IP and per account name (one process's view).
pub struct SignInLimiter {
    limit: u32,
    hits: Mutex<HashMap<String, (Instant, u32)>>,
}

impl SignInLimiter {
    pub fn new(limit: u32) -> Self {
        SignInLimiter {
            limit: limit.max(1),
            hits: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one attempt for each key; false when any of them is over the limit.
    fn allow(&self, keys: &[String]) -> bool {
        let now = Instant::now();
        let mut hits = self.hits.lock().expect("limiter lock");
        if hits.len() > 10_000 {
            hits.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let mut ok = true;
        for k in keys {
            let e = hits.entry(k.clone()).or_insert((now, 0));
            if now.duration_since(e.0) >= WINDOW {
                *e = (now, 0);
            }
            e.1 += 1;
            if e.1 > self.limit {
                ok = false;
            }
        }
        ok
    }
}

/// A signed-in operator, for the length of one request (CSRF already checked for
/// state-changing methods).
#[derive(Debug, Clone)]
pub struct Admin {
    pub id: Uuid,
    pub email: String,
    pub csrf: String,
    pub client: ClientInfo,
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// A state-changing request from another origin is refused even with a valid token.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = header_str(headers, "origin") else {
        return true;
    };
    let host = header_str(headers, "host").unwrap_or("");
    let stripped = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    let forwarded = header_str(headers, "x-forwarded-host").unwrap_or("");
    !host.is_empty() && (stripped == host || stripped == forwarded)
}

impl FromRequestParts<ConsoleState> for Admin {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        let st = &state.0;
        let client = ClientInfo::from_parts(st, parts);
        let token = cookie_value(&parts.headers)
            .ok_or_else(|| ConsoleError::unauthorized("sign in to the console first"))?;
        let idle = st.args.console_idle_minutes as f64 * 60.0;
        let client_db = st.admin_db.client().await?;
        let row = client_db
            .query_opt(
                "update console.sessions s set last_seen_at = now()
                   from console.admins a
                  where s.token_hash = $1 and a.id = s.admin_id
                    and s.last_seen_at > now() - make_interval(secs => $2)
                    and s.created_at > now() - make_interval(hours => $3)
                 returning a.id, a.email, s.csrf_token",
                &[&sha256_hex(&token), &idle, &(ABSOLUTE_HOURS as i32)],
            )
            .await?;
        let Some(row) = row else {
            return Err(ConsoleError::unauthorized(
                "your console session has ended: sign in again",
            ));
        };
        let admin = Admin {
            id: row.get(0),
            email: row.get(1),
            csrf: row.get(2),
            client,
        };
        if !matches!(parts.method, Method::GET | Method::HEAD) {
            let sent = header_str(&parts.headers, "x-csrf-token").unwrap_or("");
            if !constant_eq(sent.as_bytes(), admin.csrf.as_bytes()) {
                return Err(ConsoleError::forbidden(
                    "missing or wrong CSRF token (X-CSRF-Token): reload the console",
                ));
            }
            if !same_origin(&parts.headers) {
                return Err(ConsoleError::forbidden(
                    "cross-origin request refused by the console",
                ));
            }
        }
        Ok(admin)
    }
}

impl Inner {
    /// One audit row: who, what, on what, when (the row's default), from where.
    pub async fn audit(
        &self,
        admin: Option<&Admin>,
        client: &ClientInfo,
        email: Option<&str>,
        action: &str,
        target: Option<&str>,
        detail: Value,
    ) {
        let r = async {
            let c = self.admin_db.client().await?;
            c.execute(
                "insert into console.audit_log (admin_id, admin_email, action, target, detail, ip, user_agent, request_id)
                 values ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &admin.map(|a| a.id),
                    &admin.map(|a| a.email.as_str()).or(email),
                    &action,
                    &target,
                    &detail,
                    &client.ip,
                    &client.user_agent,
                    &client.request_id,
                ],
            )
            .await?;
            Ok::<_, agencyflow_db::DbError>(())
        }
        .await;
        if let Err(e) = r {
            tracing::error!(error = %e, action, "console: writing the audit log failed");
        }
    }

    /// `Set-Cookie` for a new session (or, with `None`, one that clears it).
    fn cookie(&self, token: Option<&str>, client: &ClientInfo) -> HeaderValue {
        let secure = match self.args.console_secure_cookie {
            SecureCookie::Always => true,
            SecureCookie::Never => false,
            SecureCookie::Auto => {
                client.tls
                    || self
                        .external_url
                        .as_deref()
                        .is_some_and(|u| u.starts_with("https://"))
            }
        };
        let mut c = match token {
            Some(t) => format!("{COOKIE}={t}; Path=/console; HttpOnly; SameSite=Strict"),
            None => format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0"),
        };
        if secure {
            c.push_str("; Secure");
        }
        HeaderValue::from_str(&c).expect("cookie is ASCII")
    }

    async fn start_session(
        &self,
        admin_id: Uuid,
        email: &str,
        client: &ClientInfo,
    ) -> Result<Response> {
        let token = random_token();
        let csrf = random_token();
        let c = self.admin_db.client().await?;
        c.execute(
            "insert into console.sessions (token_hash, admin_id, csrf_token, ip, user_agent) values ($1, $2, $3, $4, $5)",
            &[&sha256_hex(&token), &admin_id, &csrf, &client.ip, &client.user_agent],
        )
        .await?;
        c.execute(
            "update console.admins set last_sign_in_at = now() where id = $1",
            &[&admin_id],
        )
        .await?;
        // Expired sessions are swept as new ones begin.
        let idle = self.args.console_idle_minutes as f64 * 60.0;
        c.execute(
            "delete from console.sessions where last_seen_at < now() - make_interval(secs => $1) or created_at < now() - make_interval(hours => $2)",
            &[&idle, &(ABSOLUTE_HOURS as i32)],
        )
        .await?;
        let mut res = Json(json!({ "email": email, "csrf": csrf })).into_response();
        res.headers_mut()
            .insert(header::SET_COOKIE, self.cookie(Some(&token), client));
        Ok(res)
    }
}

#[derive(Deserialize)]
pub struct SignIn {
    email: String,
    password: String,
}

fn client_of(st: &Inner, headers: &HeaderMap, parts_ext: &http::Extensions) -> ClientInfo {
    let mut req = http::Request::new(());
    *req.headers_mut() = headers.clone();
    if let Some(ci) = parts_ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>() {
        req.extensions_mut().insert(*ci);
    }
    let (parts, _) = req.into_parts();
    ClientInfo::from_parts(st, &parts)
}

/// `POST /console/api/sign-in {email, password}`: a session cookie and the CSRF token.
pub async fn sign_in(
    State(state): State<ConsoleState>,
    req: axum::extract::Request,
) -> Result<Response> {
    let st = &state.0;
    let (parts, body) = req.into_parts();
    let client = client_of(st, &parts.headers, &parts.extensions);
    if !same_origin(&parts.headers) {
        return Err(ConsoleError::forbidden("cross-origin sign-in refused"));
    }
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|_| ConsoleError::bad_request("sign-in body too large"))?;
    let SignIn { email, password } = serde_json::from_slice(&bytes)
        .map_err(|e| ConsoleError::bad_request(format!("expected {{email, password}}: {e}")))?;
    let email = email.trim().to_string();
    if !st.limiter.allow(&[
        format!("ip:{}", client.ip),
        format!("account:{}", email.to_lowercase()),
    ]) {
        st.audit(
            None,
            &client,
            Some(&email),
            "sign_in.throttled",
            None,
            json!({}),
        )
        .await;
        return Err(ConsoleError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many sign-in attempts: wait a few minutes",
        ));
    }
    // DASHBOARD_USERNAME / DASHBOARD_PASSWORD: the account is created or its password
    // replaced when the configured pair is given.
    if let (Some(u), Some(p)) = (&st.args.dashboard_username, &st.args.dashboard_password) {
        if !u.is_empty()
            && !p.is_empty()
            && u.eq_ignore_ascii_case(&email)
            && constant_eq(p.as_bytes(), password.as_bytes())
        {
            let hash = agencyflow_auth::password::hash(password.clone())
                .await
                .map_err(hashing_failed)?;
            let c = st.admin_db.client().await?;
            let row = c
                .query_one(
                    "insert into console.admins (email, password_hash) values ($1, $2)
                     on conflict (lower(email)) do update set password_hash = excluded.password_hash
                     returning id, email",
                    &[&email, &hash],
                )
                .await?;
            let (id, email): (Uuid, String) = (row.get(0), row.get(1));
            st.audit(
                None,
                &client,
                Some(&email),
                "sign_in",
                None,
                json!({"via": "DASHBOARD_USERNAME"}),
            )
            .await;
            return st.start_session(id, &email, &client).await;
        }
    }
    let c = st.admin_db.client().await?;
    let row = c
        .query_opt(
            "select id, email, password_hash from console.admins where lower(email) = lower($1)",
            &[&email],
        )
        .await?;
    let hash = row.as_ref().and_then(|r| r.get::<_, Option<String>>(2));
    let ok = agencyflow_auth::password::verify(password, hash)
        .await
        .map_err(hashing_failed)?;
    match (ok, row) {
        (true, Some(r)) => {
            let (id, email): (Uuid, String) = (r.get(0), r.get(1));
            st.audit(None, &client, Some(&email), "sign_in", None, json!({}))
                .await;
            st.start_session(id, &email, &client).await
        }
        _ => {
            st.audit(
                None,
                &client,
                Some(&email),
                "sign_in.failed",
                None,
                json!({}),
            )
            .await;
            Err(ConsoleError::unauthorized("wrong e-mail or password"))
        }
    }
}

#[derive(Deserialize)]
pub struct Setup {
    token: String,
    password: String,
}

/// `POST /console/api/setup {token, password}`: the one-time link of `console add-admin
/// --link` sets the account's password (the token is the credential), then signs in.
pub async fn setup(
    State(state): State<ConsoleState>,
    req: axum::extract::Request,
) -> Result<Response> {
    let st = &state.0;
    let (parts, body) = req.into_parts();
    let client = client_of(st, &parts.headers, &parts.extensions);
    if !same_origin(&parts.headers) {
        return Err(ConsoleError::forbidden("cross-origin request refused"));
    }
    if !st.limiter.allow(&[format!("ip:{}", client.ip)]) {
        return Err(ConsoleError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many attempts: wait a few minutes",
        ));
    }
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|_| ConsoleError::bad_request("body too large"))?;
    let Setup { token, password } = serde_json::from_slice(&bytes)
        .map_err(|e| ConsoleError::bad_request(format!("expected {{token, password}}: {e}")))?;
    check_password(&password)?;
    let hash = agencyflow_auth::password::hash(password)
        .await
        .map_err(hashing_failed)?;
    let c = st.admin_db.client().await?;
    let row = c
        .query_opt(
            "update console.admins set password_hash = $2, setup_token_hash = null, setup_token_expires_at = null
              where setup_token_hash = $1 and setup_token_expires_at > now()
             returning id, email",
            &[&sha256_hex(&token), &hash],
        )
        .await?;
    let Some(row) = row else {
        return Err(ConsoleError::unauthorized(
            "this setup link is unknown, used or expired: run `agencyflow console add-admin EMAIL --link` again",
        ));
    };
    let (id, email): (Uuid, String) = (row.get(0), row.get(1));
    st.audit(
        None,
        &client,
        Some(&email),
        "admin.setup",
        Some(&email),
        json!({}),
    )
    .await;
    st.start_session(id, &email, &client).await
}

fn hashing_failed(e: agencyflow_auth::AuthError) -> ConsoleError {
    ConsoleError::internal(format!("password hashing: {e:?}"))
}

pub fn check_password(p: &str) -> Result<()> {
    if p.chars().count() < 10 {
        return Err(ConsoleError::bad_request(
            "an operator password needs at least 10 characters",
        ));
    }
    Ok(())
}

/// `GET /console/api/session`: who is signed in, and the CSRF token for this page.
pub async fn current(admin: Admin) -> Json<Value> {
    Json(json!({ "email": admin.email, "csrf": admin.csrf }))
}

/// `POST /console/api/sign-out`.
pub async fn sign_out(
    State(state): State<ConsoleState>,
    admin: Admin,
    headers: HeaderMap,
) -> Result<Response> {
    let st = &state.0;
    if let Some(token) = cookie_value(&headers) {
        let c = st.admin_db.client().await?;
        c.execute(
            "delete from console.sessions where token_hash = $1",
            &[&sha256_hex(&token)],
        )
        .await?;
    }
    st.audit(
        Some(&admin),
        &admin.client,
        None,
        "sign_out",
        None,
        json!({}),
    )
    .await;
    let mut res = Json(json!({})).into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, st.cookie(None, &admin.client));
    Ok(res)
}

/// What `agencyflow console add-admin` does, on a connection as the schema owner: creates
/// the account (or resets it) with a password, or with a one-time setup token (returned, to
/// print as a link; valid 24 hours).
pub async fn add_admin(
    client: &agencyflow_db::tokio_postgres::Client,
    email: &str,
    password: Option<String>,
) -> Result<Option<String>> {
    let email = email.trim();
    if email.is_empty() {
        return Err(ConsoleError::bad_request("the operator's e-mail is empty"));
    }
    match password {
        Some(p) => {
            check_password(&p)?;
            let hash = agencyflow_auth::password::hash(p)
                .await
                .map_err(hashing_failed)?;
            client
                .execute(
                    "insert into console.admins (email, password_hash) values ($1, $2)
                     on conflict (lower(email)) do update set password_hash = excluded.password_hash,
                       setup_token_hash = null, setup_token_expires_at = null",
                    &[&email, &hash],
                )
                .await?;
            client
                .execute(
                    "insert into console.audit_log (admin_email, action, target, ip) values ('cli', 'admin.add', $1, 'local')",
                    &[&email],
                )
                .await?;
            Ok(None)
        }
        None => {
            let token = random_token();
            client
                .execute(
                    "insert into console.admins (email, setup_token_hash, setup_token_expires_at) values ($1, $2, now() + interval '24 hours')
                     on conflict (lower(email)) do update set setup_token_hash = excluded.setup_token_hash,
                       setup_token_expires_at = excluded.setup_token_expires_at",
                    &[&email, &sha256_hex(&token)],
                )
                .await?;
            client
                .execute(
                    "insert into console.audit_log (admin_email, action, target, ip, detail) values ('cli', 'admin.add', $1, 'local', '{\"link\": true}')",
                    &[&email],
                )
                .await?;
            Ok(Some(token))
        }
    }
}
