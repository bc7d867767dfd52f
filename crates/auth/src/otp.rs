//! Email one-time tokens: magic links and codes (`/otp`, `/magiclink`), password recovery
//! (`/recover`), signup confirmation (`/resend`), their verification (`POST /verify` with a
//! code or a `token_hash`, `GET /verify` from an email link, redirecting with the session in
//! the URL fragment), and the admin API's `generate_link`.
//!
//! A token is a random 6-digit code; what is stored, and what links carry, is
//! `hex(sha224(email + code))`, as Supabase Auth does. One live token per user and purpose
//! (a new one replaces it), valid `GOTRUE_MAILER_OTP_EXP` seconds, used once. There is no
//! SMTP mailer: an email that would be sent is logged without its secret unless
//! `AGENCYFLOW_MAILER_LOG_LINKS` is on (development); applications and tests get links from
//! `POST /admin/generate_link`.
use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha224};
use uuid::Uuid;

use crate::admin::require_admin;
use crate::error::{AuthError, ErrorCode};
use crate::handlers::{nonempty, parse_body, rate_limit, ReqInfo};
use crate::model::{self, User};
use crate::ratelimit::Limit;
use crate::AuthState;

/// Everything but RFC 3986's unreserved characters is percent-encoded in links.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What a token is for (the `token_type` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    MagicLink,
    Recovery,
    Signup,
    Invite,
    /// A code (no link) for `updateUser({ nonce })`; never accepted by `/verify`.
    Reauthentication,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::MagicLink => "magiclink",
            Purpose::Recovery => "recovery",
            Purpose::Signup => "signup",
            Purpose::Invite => "invite",
            Purpose::Reauthentication => "reauthentication",
        }
    }

    /// The purposes a `/verify` `type` accepts (`email` is a code from either email).
    fn accepted_by(verify_type: &str) -> Option<&'static [&'static str]> {
        Some(match verify_type {
            "magiclink" => &["magiclink", "signup"],
            "email" => &["magiclink", "signup"],
            "signup" => &["signup"],
            "recovery" => &["recovery"],
            "invite" => &["invite"],
            _ => return None,
        })
    }
}

/// `hex(sha224(email + code))`: the stored token and the `token_hash` of links.
fn token_hash(email: &str, code: &str) -> String {
    let mut h = Sha224::new();
    h.update(email.to_lowercase().as_bytes());
    h.update(code.as_bytes());
    hex::encode(h.finalize())
}

/// A new 6-digit code.
fn new_code() -> String {
    format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000u32))
}

/// An issued token.
struct Issued {
    code: String,
    hash: String,
}

/// Issues (replacing any earlier one) the user's token for `purpose`. With `throttle`, a
/// second email of the same kind within `GOTRUE_SMTP_MAX_FREQUENCY` seconds is refused.
async fn issue(
    state: &AuthState,
    tx: &mut agencyflow_db::ClaimsTxn,
    user_id: Uuid,
    email: &str,
    purpose: Purpose,
    throttle: bool,
) -> Result<Issued, AuthError> {
    if throttle {
        let age: Option<f64> = tx
            .query_opt(
                "select extract(epoch from now() - created_at)::float8 from auth.one_time_tokens
                 where user_id = $1 and token_type = $2",
                &[&user_id, &purpose.as_str()],
            )
            .await?
            .map(|r| r.get(0));
        let wait = state.args.smtp_max_frequency as f64;
        if let Some(age) = age.filter(|a| *a < wait) {
            return Err(AuthError::new(
                ErrorCode::OverEmailSendRateLimit,
                format!(
                    "For security purposes, you can only request this after {} seconds.",
                    (wait - age).ceil().max(1.0) as i64
                ),
            ));
        }
    }
    let code = new_code();
    let hash = token_hash(email, &code);
    tx.execute(
        "insert into auth.one_time_tokens (user_id, token_type, token_hash, relates_to)
         values ($1, $2, $3, $4)
         on conflict (user_id, token_type) do update
           set token_hash = excluded.token_hash, relates_to = excluded.relates_to, created_at = now()",
        &[&user_id, &purpose.as_str(), &hash, &email],
    )
    .await?;
    let sent_column = match purpose {
        Purpose::Recovery => "recovery_sent_at",
        Purpose::Invite => "invited_at",
        Purpose::Signup => "confirmation_sent_at",
        Purpose::MagicLink => "confirmation_sent_at",
        Purpose::Reauthentication => "reauthentication_sent_at",
    };
    tx.execute(
        &format!("update auth.users set {sent_column} = now(), updated_at = now() where id = $1"),
        &[&user_id],
    )
    .await?;
    Ok(Issued { code, hash })
}

/// The `GET /verify` link of a token.
fn action_link(base: &str, hash: &str, purpose: Purpose, redirect_to: &str) -> String {
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string();
    format!(
        "{}/verify?token={hash}&type={}&redirect_to={}",
        base.trim_end_matches('/'),
        purpose.as_str(),
        enc(redirect_to)
    )
}

/// "Sends" the email: there is no SMTP mailer, so it is logged (with its secret only when
/// `AGENCYFLOW_MAILER_LOG_LINKS` is on).
fn deliver(state: &AuthState, email: &str, purpose: Purpose, link: Option<&str>, code: &str) {
    if state.args.mailer_log_links {
        tracing::info!(to = %email, kind = purpose.as_str(), link = link.unwrap_or(""), code = %code, "email (not sent: no SMTP mailer; AGENCYFLOW_MAILER_LOG_LINKS)");
    } else {
        tracing::warn!(to = %email, kind = purpose.as_str(), "email not sent: no SMTP mailer (use the admin API's generate_link, or AGENCYFLOW_MAILER_LOG_LINKS in development)");
    }
}

/// Builds the email's link (to the allowed `redirect_to`) and "sends" it.
fn send_link(
    state: &AuthState,
    info: &ReqInfo,
    redirect_to: Option<&String>,
    email: &str,
    purpose: Purpose,
    link_token: &str,
    code: &str,
) {
    let target = redirect_target(state, redirect_to.map(String::as_str));
    let link = action_link(&info.issuer, link_token, purpose, &target);
    deliver(state, email, purpose, Some(&link), code);
}

/// Where email links may send the browser: the site URL, or a prefix of the allow list;
/// anything else becomes the site URL (no open redirect).
fn redirect_target(state: &AuthState, wanted: Option<&str>) -> String {
    let site = state.args.site_url.clone().unwrap_or_default();
    let Some(w) = wanted.map(str::trim).filter(|w| !w.is_empty()) else {
        return site;
    };
    let allowed = std::iter::once(site.as_str())
        .chain(state.args.uri_allow_list.split(','))
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .any(|a| {
            w == a
                || (w.starts_with(a)
                    && (a.ends_with('/') || w[a.len()..].starts_with(['/', '?', '#'])))
        });
    if allowed {
        w.to_string()
    } else {
        site
    }
}

fn valid_email_or_error(email: Option<String>) -> Result<String, AuthError> {
    let email = nonempty(email)
        .map(|e| e.trim().to_lowercase())
        .ok_or_else(|| {
            AuthError::new(ErrorCode::ValidationFailed, "An email address is required")
        })?;
    if !model::valid_email(&email) {
        return Err(ErrorCode::EmailAddressInvalid.into());
    }
    Ok(email)
}

/// A user without a password, for an emailed sign-in or an invite (email unconfirmed until
/// the link or code is used).
async fn create_passwordless_user(
    state: &AuthState,
    tx: &mut agencyflow_db::ClaimsTxn,
    email: &str,
    data: Map<String, Value>,
    password_hash: Option<String>,
) -> Result<Uuid, AuthError> {
    let id = Uuid::new_v4();
    let mut metadata = Value::Object(data);
    if let (Value::Object(m), Value::Object(idd)) =
        (&mut metadata, model::email_identity_data(id, email, false))
    {
        m.extend(idd);
    }
    tx.execute(
        "insert into auth.users (id, aud, role, email, encrypted_password, raw_app_meta_data, raw_user_meta_data)
         values ($1, $2, 'authenticated', $3, $4, $5, $6)",
        &[
            &id,
            &state.args.jwt_aud,
            &email,
            &password_hash,
            &model::with_email_provider(&json!({})),
            &metadata,
        ],
    )
    .await?;
    model::upsert_email_identity(tx, id, email, false, false).await?;
    Ok(id)
}

#[derive(Deserialize, Default)]
struct OtpBody {
    email: Option<String>,
    phone: Option<String>,
    data: Option<Map<String, Value>>,
    create_user: Option<bool>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

/// `POST /otp` and `POST /magiclink`: email a sign-in link and code (creating the user unless
/// `create_user` is false). 200 `{}`.
pub async fn otp(
    State(state): State<AuthState>,
    info: ReqInfo,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, AuthError> {
    let body: OtpBody = parse_body(&body)?;
    let pkce = Pkce::from_request(body.code_challenge, body.code_challenge_method)?;
    if nonempty(body.phone).is_some() && body.email.is_none() {
        return Err(AuthError::from(ErrorCode::PhoneProviderDisabled));
    }
    let email = valid_email_or_error(body.email)?;
    rate_limit(&state, Limit::SignInSignUpsPerIp, &info.client.ip)?;
    let mut tx = state.tx().await?;
    let (user_id, purpose) = match model::find_user_by_email(&mut tx, &email).await? {
        Some(u) if u.is_banned() => return Err(ErrorCode::UserBanned.into()),
        Some(u) => {
            let purpose = if u.email_confirmed_at.is_some() {
                Purpose::MagicLink
            } else {
                Purpose::Signup
            };
            (u.id, purpose)
        }
        None if !body.create_user.unwrap_or(true) => return Err(ErrorCode::OtpDisabled.into()),
        None if state.args.disable_signup => return Err(ErrorCode::SignupDisabled.into()),
        None => {
            let id = create_passwordless_user(
                &state,
                &mut tx,
                &email,
                body.data.unwrap_or_default(),
                None,
            )
            .await?;
            (id, Purpose::Signup)
        }
    };
    let issued = issue(&state, &mut tx, user_id, &email, purpose, true).await?;
    let link_token = match &pkce {
        Some(p) => p.start(&mut tx, user_id, purpose, &issued.hash).await?,
        None => issued.hash.clone(),
    };
    tx.commit().await?;
    send_link(
        &state,
        &info,
        q.get("redirect_to"),
        &email,
        purpose,
        &link_token,
        &issued.code,
    );
    Ok(Json(json!({})).into_response())
}

/// A PKCE code challenge sent with an email request.
struct Pkce {
    challenge: String,
    method: &'static str,
}

impl Pkce {
    /// `None` without a challenge (the implicit flow); 400 for a malformed one.
    fn from_request(
        challenge: Option<String>,
        method: Option<String>,
    ) -> Result<Option<Pkce>, AuthError> {
        let Some(challenge) = nonempty(challenge) else {
            return Ok(None);
        };
        let method = match method.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("s256") => "s256",
            Some("plain") => "plain",
            _ => {
                return Err(AuthError::new(
                    ErrorCode::ValidationFailed,
                    "code challenge method not supported: s256 or plain",
                ))
            }
        };
        if !(43..=128).contains(&challenge.len()) {
            return Err(AuthError::new(
                ErrorCode::ValidationFailed,
                "code challenge has to be between 43 and 128 characters",
            ));
        }
        Ok(Some(Pkce { challenge, method }))
    }

    /// Records the flow (replacing the user's earlier one for this purpose); returns the
    /// email link's token, `pkce_<hash>`.
    async fn start(
        &self,
        tx: &mut agencyflow_db::ClaimsTxn,
        user_id: Uuid,
        purpose: Purpose,
        hash: &str,
    ) -> Result<String, AuthError> {
        tx.execute(
            "delete from auth.flow_state where user_id = $1 and authentication_method = $2",
            &[&user_id, &purpose.as_str()],
        )
        .await?;
        tx.execute(
            "insert into auth.flow_state (user_id, auth_code, code_challenge_method, code_challenge, authentication_method)
             values ($1, $2, $3, $4, $5)",
            &[&user_id, &Uuid::new_v4().to_string(), &self.method, &self.challenge, &purpose.as_str()],
        )
        .await?;
        Ok(format!("{PKCE_PREFIX}{hash}"))
    }
}

/// Links of PKCE flows carry `pkce_<token hash>`.
const PKCE_PREFIX: &str = "pkce_";
/// How long an auth code may wait for its exchange (GoTrue's flow state expiry).
const FLOW_STATE_SECS: f64 = 300.0;

/// The PKCE challenge check: `base64url(sha256(verifier)) == challenge` (s256) or equality.
fn pkce_matches(method: &str, challenge: &str, verifier: &str) -> bool {
    use base64::Engine;
    let expected = match method {
        "s256" => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes())),
        _ => verifier.to_string(),
    };
    expected.len() == challenge.len()
        && expected
            .bytes()
            .zip(challenge.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[derive(Deserialize, Default)]
struct PkceGrant {
    auth_code: Option<String>,
    code_verifier: Option<String>,
}

/// `POST /token?grant_type=pkce`: `{auth_code, code_verifier}` → 200 Session. A wrong
/// verifier leaves the flow in place (400 bad_code_verifier); the code is used once.
pub(crate) async fn pkce_grant(
    state: AuthState,
    info: ReqInfo,
    body: &Bytes,
) -> Result<Response, AuthError> {
    let body: PkceGrant = parse_body(body)?;
    let (Some(code), Some(verifier)) = (nonempty(body.auth_code), nonempty(body.code_verifier))
    else {
        return Err(AuthError::new(
            ErrorCode::ValidationFailed,
            "invalid request: both auth code and code verifier should be non-empty",
        ));
    };
    rate_limit(&state, Limit::SignInSignUpsPerIp, &info.client.ip)?;
    let mut tx = state.tx().await?;
    let Some(row) = tx
        .query_opt(
            "select id, user_id, code_challenge_method, code_challenge, authentication_method,
                    created_at > now() - make_interval(secs => $2::float8)
             from auth.flow_state where auth_code = $1 for update",
            &[&code, &FLOW_STATE_SECS],
        )
        .await?
    else {
        return Err(ErrorCode::FlowStateNotFound.into());
    };
    let (flow_id, user_id, method, challenge, auth_method, fresh): (
        Uuid,
        Uuid,
        String,
        String,
        String,
        bool,
    ) = (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
    );
    if !fresh {
        return Err(ErrorCode::FlowStateExpired.into());
    }
    if !pkce_matches(&method, &challenge, &verifier) {
        return Err(ErrorCode::BadCodeVerifier.into());
    }
    let user = model::find_user(&mut tx, user_id)
        .await?
        .ok_or(ErrorCode::FlowStateNotFound)?;
    if user.is_banned() {
        return Err(ErrorCode::UserBanned.into());
    }
    tx.execute("delete from auth.flow_state where id = $1", &[&flow_id])
        .await?;
    let (sid, refresh, amr) =
        model::create_session(&state, &mut tx, user_id, &auth_method, &info.client).await?;
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
struct EmailBody {
    email: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

/// `POST /recover`: email a password-recovery link. 200 `{}` whether or not the address has an
/// account (no user enumeration).
pub async fn recover(
    State(state): State<AuthState>,
    info: ReqInfo,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, AuthError> {
    let body: EmailBody = parse_body(&body)?;
    let pkce = Pkce::from_request(body.code_challenge, body.code_challenge_method)?;
    let email = valid_email_or_error(body.email)?;
    rate_limit(&state, Limit::SignInSignUpsPerIp, &info.client.ip)?;
    let mut tx = state.tx().await?;
    if let Some(user) = model::find_user_by_email(&mut tx, &email).await? {
        let issued = issue(&state, &mut tx, user.id, &email, Purpose::Recovery, true).await?;
        let link_token = match &pkce {
            Some(p) => {
                p.start(&mut tx, user.id, Purpose::Recovery, &issued.hash)
                    .await?
            }
            None => issued.hash.clone(),
        };
        tx.commit().await?;
        send_link(
            &state,
            &info,
            q.get("redirect_to"),
            &email,
            Purpose::Recovery,
            &link_token,
            &issued.code,
        );
    }
    Ok(Json(json!({})).into_response())
}

/// `POST /resend`: the signup confirmation again (for an unconfirmed address). 200 `{}`.
pub async fn resend(
    State(state): State<AuthState>,
    info: ReqInfo,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, AuthError> {
    let body: EmailBody = parse_body(&body)?;
    match body.kind.as_deref() {
        Some("signup") => {}
        Some("email_change") => return Ok(Json(json!({})).into_response()),
        Some("sms") | Some("phone_change") => return Err(ErrorCode::PhoneProviderDisabled.into()),
        _ => {
            return Err(AuthError::new(
                ErrorCode::ValidationFailed,
                "Missing one of these types: signup, email_change, sms, phone_change",
            ))
        }
    }
    let email = valid_email_or_error(body.email)?;
    rate_limit(&state, Limit::SignInSignUpsPerIp, &info.client.ip)?;
    let mut tx = state.tx().await?;
    if let Some(user) = model::find_user_by_email(&mut tx, &email).await? {
        if user.email_confirmed_at.is_none() {
            let issued = issue(&state, &mut tx, user.id, &email, Purpose::Signup, true).await?;
            tx.commit().await?;
            send_link(
                &state,
                &info,
                q.get("redirect_to"),
                &email,
                Purpose::Signup,
                &issued.hash,
                &issued.code,
            );
        }
    }
    Ok(Json(json!({})).into_response())
}

#[derive(Deserialize, Default)]
struct VerifyBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    token_hash: Option<String>,
    token: Option<String>,
    email: Option<String>,
    phone: Option<String>,
}

/// Takes a token: deletes it, and, when it was live, confirms the user's email. Returns the
/// user and the token's purpose; `Err(OtpExpired)` for an unknown, used or expired token.
async fn take_token(
    state: &AuthState,
    verify_type: &str,
    hash: &str,
) -> Result<(agencyflow_db::ClaimsTxn, User, String), AuthError> {
    let mut tx = state.tx().await?;
    match take_token_in(state, &mut tx, verify_type, hash).await {
        Ok((user, purpose)) => Ok((tx, user, purpose)),
        Err(e) => {
            // An expired token is deleted either way.
            if e.code() == Some(ErrorCode::OtpExpired) {
                tx.commit().await?;
            }
            Err(e)
        }
    }
}

async fn take_token_in(
    state: &AuthState,
    tx: &mut agencyflow_db::ClaimsTxn,
    verify_type: &str,
    hash: &str,
) -> Result<(User, String), AuthError> {
    let Some(purposes) = Purpose::accepted_by(verify_type) else {
        return Err(AuthError::new(
            ErrorCode::ValidationFailed,
            format!("Unsupported verification type `{verify_type}`: magiclink, email, signup, recovery or invite"),
        ));
    };
    let purposes: Vec<String> = purposes.iter().map(|p| p.to_string()).collect();
    let row = tx
        .query_opt(
            "delete from auth.one_time_tokens where token_hash = $1 and token_type = any($2)
             returning user_id, token_type, created_at > now() - make_interval(secs => $3::float8)",
            &[&hash, &purposes, &(state.args.mailer_otp_exp as f64)],
        )
        .await?;
    let Some(row) = row else {
        return Err(ErrorCode::OtpExpired.into());
    };
    let (user_id, purpose, fresh): (Uuid, String, bool) = (row.get(0), row.get(1), row.get(2));
    if !fresh {
        return Err(ErrorCode::OtpExpired.into());
    }
    let user: User = model::find_user(tx, user_id)
        .await?
        .ok_or(ErrorCode::OtpExpired)?;
    if user.is_banned() {
        return Err(ErrorCode::UserBanned.into());
    }
    tx.execute(
        "update auth.users set email_confirmed_at = coalesce(email_confirmed_at, now()),
           last_sign_in_at = now(), updated_at = now() where id = $1",
        &[&user_id],
    )
    .await?;
    if let Some(email) = user.email.as_deref() {
        model::upsert_email_identity(tx, user_id, email, true, true).await?;
    }
    Ok((user, purpose))
}

/// Uses a token and opens a session.
async fn consume(
    state: &AuthState,
    info: &ReqInfo,
    verify_type: &str,
    hash: &str,
    via_code: bool,
) -> Result<Value, AuthError> {
    let (mut tx, user, purpose) = take_token(state, verify_type, hash).await?;
    let method = match (purpose.as_str(), via_code) {
        ("recovery", _) => "recovery",
        ("invite", _) => "invite",
        (_, true) => "otp",
        ("signup", false) => "email/signup",
        _ => "magiclink",
    };
    let (sid, refresh, amr) =
        model::create_session(state, &mut tx, user.id, method, &info.client).await?;
    let user = model::find_user(&mut tx, user.id)
        .await?
        .ok_or_else(|| AuthError::internal("user vanished during verification"))?;
    tx.commit().await?;
    model::session_json(state, &user, sid, &amr, &refresh, &info.issuer)
}

/// Uses the token of a PKCE flow's link: no session yet, the flow's auth code instead (the
/// client exchanges it with its verifier at /token?grant_type=pkce).
async fn consume_pkce(
    state: &AuthState,
    verify_type: &str,
    hash: &str,
) -> Result<String, AuthError> {
    let (mut tx, user, purpose) = take_token(state, verify_type, hash).await?;
    let method = if purpose == "signup" {
        "magiclink"
    } else {
        purpose.as_str()
    };
    let code: String = tx
        .query_opt(
            "update auth.flow_state set auth_code_issued_at = now()
             where id = (select id from auth.flow_state where user_id = $1 and authentication_method = any($2)
                         order by created_at desc limit 1)
             returning auth_code",
            &[&user.id, &vec![purpose.clone(), method.to_string()]],
        )
        .await?
        .map(|r| r.get(0))
        .ok_or(ErrorCode::FlowStateNotFound)?;
    tx.commit().await?;
    Ok(code)
}

/// `POST /verify`: `{type, token_hash}` or `{type, email, token}` → 200 Session.
pub async fn verify(
    State(state): State<AuthState>,
    info: ReqInfo,
    body: Bytes,
) -> Result<Response, AuthError> {
    let body: VerifyBody = parse_body(&body)?;
    let kind = nonempty(body.kind).ok_or_else(|| {
        AuthError::new(
            ErrorCode::ValidationFailed,
            "Verify requires a verification type",
        )
    })?;
    if matches!(kind.as_str(), "sms" | "phone_change")
        || (body.phone.is_some() && body.email.is_none())
    {
        return Err(AuthError::from(ErrorCode::PhoneProviderDisabled));
    }
    rate_limit(&state, Limit::SignInSignUpsPerIp, &info.client.ip)?;
    let (hash, via_code) = match (nonempty(body.token_hash), nonempty(body.token)) {
        (Some(h), _) => {
            let h = h.to_lowercase();
            (h.strip_prefix(PKCE_PREFIX).unwrap_or(&h).to_string(), false)
        }
        (None, Some(code)) => {
            let email = valid_email_or_error(body.email)?;
            (token_hash(&email, code.trim()), true)
        }
        (None, None) => {
            return Err(AuthError::new(
                ErrorCode::ValidationFailed,
                "Verify requires either a token or a token hash",
            ))
        }
    };
    let session = consume(&state, &info, &kind, &hash, via_code).await?;
    Ok(Json(session).into_response())
}

/// `GET /verify?token&type&redirect_to` (the email link): 303 to the redirect target with
/// the session, or the error, in the URL fragment, as supabase-js's `detectSessionInUrl`
/// reads it.
pub async fn verify_link(
    State(state): State<AuthState>,
    info: ReqInfo,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let kind = q.get("type").cloned().unwrap_or_default();
    let target = redirect_target(&state, q.get("redirect_to").map(String::as_str));
    let hash = q
        .get("token")
        .map(|t| t.trim().to_lowercase())
        .unwrap_or_default();
    if let Some(pkce_hash) = hash.strip_prefix(PKCE_PREFIX) {
        return pkce_redirect(&target, consume_pkce(&state, &kind, pkce_hash).await);
    }
    let result = if hash.is_empty() {
        Err(ErrorCode::OtpExpired.into())
    } else {
        consume(&state, &info, &kind, &hash, false).await
    };
    let form = |pairs: &[(&str, String)]| {
        pairs
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    percent_encoding::utf8_percent_encode(v, UNRESERVED)
                )
            })
            .collect::<Vec<_>>()
            .join("&")
    };
    let fragment = match &result {
        Ok(s) => form(&[
            (
                "access_token",
                s["access_token"].as_str().unwrap_or_default().to_string(),
            ),
            ("expires_at", s["expires_at"].to_string()),
            ("expires_in", s["expires_in"].to_string()),
            (
                "refresh_token",
                s["refresh_token"].as_str().unwrap_or_default().to_string(),
            ),
            ("token_type", "bearer".into()),
            ("type", kind.clone()),
        ]),
        Err(AuthError::Api { code, .. }) if *code == ErrorCode::OtpExpired => form(&[
            ("error", "access_denied".into()),
            ("error_code", "otp_expired".into()),
            (
                "error_description",
                "Email link is invalid or has expired".into(),
            ),
        ]),
        Err(e) => {
            let code = e.code().unwrap_or(ErrorCode::UnexpectedFailure);
            form(&[
                ("error", "server_error".into()),
                ("error_code", code.as_str().into()),
                ("error_description", code.default_message().into()),
            ])
        }
    };
    if target.is_empty() {
        // No site URL to send the browser to: answer as POST /verify would.
        return match result {
            Ok(s) => Json(s).into_response(),
            Err(e) => e.into_response(),
        };
    }
    let location = format!("{}#{fragment}", target.split('#').next().unwrap_or(&target));
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// A PKCE link's answer: 303 to the target with `?code=` (or `?error=...`), as supabase-js's
/// `exchangeCodeForSession` callbacks expect.
fn pkce_redirect(target: &str, result: Result<String, AuthError>) -> Response {
    let enc = |v: &str| percent_encoding::utf8_percent_encode(v, UNRESERVED).to_string();
    let query = match &result {
        Ok(code) => format!("code={}", enc(code)),
        Err(e) => {
            let code = e.code().unwrap_or(ErrorCode::UnexpectedFailure);
            let (error, description) = if code == ErrorCode::OtpExpired {
                ("access_denied", "Email link is invalid or has expired")
            } else {
                ("server_error", code.default_message())
            };
            format!(
                "error={error}&error_code={}&error_description={}",
                code.as_str(),
                enc(description)
            )
        }
    };
    if target.is_empty() {
        return match result {
            Ok(code) => Json(json!({ "code": code })).into_response(),
            Err(e) => e.into_response(),
        };
    }
    let base = target.split('#').next().unwrap_or(target);
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!("{base}{sep}{query}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

#[derive(Deserialize, Default)]
struct GenerateLinkBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    email: Option<String>,
    password: Option<String>,
    data: Option<Map<String, Value>>,
    redirect_to: Option<String>,
}

/// `POST /admin/generate_link` (service role): a link and code without sending an email,
/// `{...user, action_link, email_otp, hashed_token, redirect_to, verification_type}`.
pub async fn generate_link(
    State(state): State<AuthState>,
    info: ReqInfo,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AuthError> {
    require_admin(&state, &headers)?;
    let body: GenerateLinkBody = parse_body(&body)?;
    let purpose = match body.kind.as_deref() {
        Some("magiclink") => Purpose::MagicLink,
        Some("recovery") => Purpose::Recovery,
        Some("signup") => Purpose::Signup,
        Some("invite") => Purpose::Invite,
        _ => {
            return Err(AuthError::new(
                ErrorCode::ValidationFailed,
                "Invalid link type: signup, magiclink, recovery or invite",
            ))
        }
    };
    let email = valid_email_or_error(body.email)?;
    let mut tx = state.tx().await?;
    let existing = model::find_user_by_email(&mut tx, &email).await?;
    let user_id = match (purpose, existing) {
        (Purpose::Reauthentication, _) => unreachable!("not a generate_link type (matched above)"),
        (Purpose::MagicLink | Purpose::Recovery, Some(u)) => u.id,
        (Purpose::MagicLink | Purpose::Recovery, None) => {
            return Err(ErrorCode::UserNotFound.into())
        }
        (Purpose::Invite, existing) => {
            invitee(
                &state,
                &mut tx,
                &email,
                existing,
                body.data.unwrap_or_default(),
            )
            .await?
        }
        (Purpose::Signup, Some(u)) if u.email_confirmed_at.is_some() => {
            return Err(ErrorCode::EmailExists.into())
        }
        (Purpose::Signup, Some(u)) => u.id,
        (Purpose::Signup, None) => {
            let password = body.password.filter(|p| !p.is_empty()).ok_or_else(|| {
                AuthError::new(
                    ErrorCode::ValidationFailed,
                    "Password is required for a signup link",
                )
            })?;
            if password.chars().count() < state.args.password_min_length {
                return Err(AuthError::weak_password(state.args.password_min_length));
            }
            let hash = crate::password::hash(password).await?;
            create_passwordless_user(
                &state,
                &mut tx,
                &email,
                body.data.unwrap_or_default(),
                Some(hash),
            )
            .await?
        }
    };
    let issued = issue(&state, &mut tx, user_id, &email, purpose, false).await?;
    let user = model::find_user(&mut tx, user_id)
        .await?
        .ok_or_else(|| AuthError::internal("user vanished while generating a link"))?;
    tx.commit().await?;
    let target = redirect_target(&state, body.redirect_to.as_deref());
    let mut out = user.to_json();
    if let Value::Object(m) = &mut out {
        m.insert(
            "action_link".into(),
            json!(action_link(&info.issuer, &issued.hash, purpose, &target)),
        );
        m.insert("email_otp".into(), json!(issued.code));
        m.insert("hashed_token".into(), json!(issued.hash));
        m.insert("redirect_to".into(), json!(target));
        m.insert("verification_type".into(), json!(purpose.as_str()));
    }
    Ok(Json(out).into_response())
}

/// `GET /reauthenticate` (signed-in user; supabase-js `auth.reauthenticate()`): "emails" a
/// code that a later `PUT /user` passes as `nonce`. 200 `{}`; one per address per
/// `GOTRUE_SMTP_MAX_FREQUENCY`; a user without an email is 422.
pub async fn reauthenticate(
    State(state): State<AuthState>,
    headers: HeaderMap,
) -> Result<Response, AuthError> {
    let (user, _) = crate::handlers::authenticated(&state, &headers).await?;
    let Some(email) = user.email.clone().filter(|e| !e.is_empty()) else {
        return Err(AuthError::new(
            ErrorCode::ValidationFailed,
            "Reauthentication requires the user to have an email",
        ));
    };
    let mut tx = state.tx().await?;
    let issued = issue(
        &state,
        &mut tx,
        user.id,
        &email,
        Purpose::Reauthentication,
        true,
    )
    .await?;
    tx.commit().await?;
    deliver(
        &state,
        &email,
        Purpose::Reauthentication,
        None,
        &issued.code,
    );
    Ok(Json(json!({})).into_response())
}

/// Uses up `user`'s live reauthentication code `nonce` within `tx`, or refuses with 422
/// `reauthentication_not_valid` (none issued, another code, or older than
/// `GOTRUE_MAILER_OTP_EXP`).
pub(crate) async fn take_reauthentication(
    state: &AuthState,
    tx: &mut agencyflow_db::ClaimsTxn,
    user: &User,
    nonce: &str,
) -> Result<(), AuthError> {
    let hash = token_hash(user.email.as_deref().unwrap_or_default(), nonce.trim());
    let fresh: Option<bool> = tx
        .query_opt(
            "delete from auth.one_time_tokens
             where user_id = $1 and token_type = 'reauthentication' and token_hash = $2
             returning created_at > now() - make_interval(secs => $3::float8)",
            &[&user.id, &hash, &(state.args.mailer_otp_exp as f64)],
        )
        .await?
        .map(|r| r.get(0));
    match fresh {
        Some(true) => Ok(()),
        _ => Err(ErrorCode::ReauthenticationNotValid.into()),
    }
}

/// The user an invite is for: the address's unconfirmed user, or a new passwordless one with
/// `data` as its metadata; a confirmed address is 422 `email_exists`.
async fn invitee(
    state: &AuthState,
    tx: &mut agencyflow_db::ClaimsTxn,
    email: &str,
    existing: Option<model::User>,
    data: Map<String, Value>,
) -> Result<Uuid, AuthError> {
    match existing {
        Some(u) if u.email_confirmed_at.is_some() => Err(ErrorCode::EmailExists.into()),
        Some(u) => Ok(u.id),
        None => create_passwordless_user(state, tx, email, data, None).await,
    }
}

#[derive(Deserialize, Default)]
struct InviteBody {
    email: Option<String>,
    data: Option<Map<String, Value>>,
}

/// `POST /invite` (service role; supabase-js `auth.admin.inviteUserByEmail`): creates a
/// passwordless user with `data` as its user metadata (or keeps the unconfirmed one the
/// address already has), issues the invite token and "sends" its link to `?redirect_to=`.
/// 200 with the User (`invited_at` set); a confirmed address is 422 `email_exists`.
pub async fn invite(
    State(state): State<AuthState>,
    info: ReqInfo,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, AuthError> {
    require_admin(&state, &headers)?;
    let body: InviteBody = parse_body(&body)?;
    let email = valid_email_or_error(body.email)?;
    let mut tx = state.tx().await?;
    let existing = model::find_user_by_email(&mut tx, &email).await?;
    let user_id = invitee(
        &state,
        &mut tx,
        &email,
        existing,
        body.data.unwrap_or_default(),
    )
    .await?;
    let issued = issue(&state, &mut tx, user_id, &email, Purpose::Invite, false).await?;
    let user = model::find_user(&mut tx, user_id)
        .await?
        .ok_or_else(|| AuthError::internal("user vanished while inviting"))?;
    tx.commit().await?;
    send_link(
        &state,
        &info,
        q.get("redirect_to"),
        &email,
        Purpose::Invite,
        &issued.hash,
        &issued.code,
    );
    Ok(Json(user.to_json()).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hash_is_sha224_of_email_and_code() {
        assert_eq!(
            token_hash("A@x.test", "123456"),
            token_hash("a@x.test", "123456")
        );
        assert_ne!(
            token_hash("a@x.test", "123456"),
            token_hash("b@x.test", "123456")
        );
        assert_eq!(token_hash("a@x.test", "123456").len(), 56);
        let c = new_code();
        assert!(c.len() == 6 && c.chars().all(|d| d.is_ascii_digit()), "{c}");
    }
}
