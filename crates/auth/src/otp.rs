//! Email one-time tokens: magic links and codes (`/otp`, `/magiclink`), password recovery
//! (`/recover`), signup confirmation (`/signup`, `/resend`), email changes (`PUT /user`), their
//! verification (`POST /verify` with a code or a `token_hash`, `GET /verify` from an email
//! link, redirecting with the session in the URL fragment), and the admin API's
//! `generate_link`.
//!
//! A token is a random 6-digit code. What is stored, and what links carry, is a keyed hash
//! of the address and the code (HMAC-SHA224 under a key derived from the project secret):
//! unlike GoTrue's plain `sha224(email + code)`, nobody can compute the million candidate
//! links of an address, so the only way to guess is to send codes with the address, and those
//! count against the token: after [`MAX_FAILED_ATTEMPTS`] wrong codes it is deleted, whatever
//! IPs they came from. One live token per user and purpose (a new one replaces it), valid
//! `GOTRUE_MAILER_OTP_EXP` seconds, used once. There is no SMTP mailer: an email that would be
//! sent is logged without its secret unless `AGENCYFLOW_MAILER_LOG_LINKS` is on
//! (development); applications and tests get links from `POST /admin/generate_link`.
use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha224, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::admin::require_admin;
use crate::error::{AuthError, ErrorCode};
use crate::handlers::{nonempty, parse_body, rate_limit, ReqInfo};
use crate::model::{self, User};
use crate::ratelimit::Limit;
use crate::{AuthState, JwtKeys};

/// Wrong codes a token survives: the next one deletes it (the right code then fails too).
pub const MAX_FAILED_ATTEMPTS: i32 = 5;

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
    /// The new address of an email change (`relates_to`), confirmed by `type=email_change`.
    EmailChange,
    /// The current address of an email change (secure email change: both must be proved).
    EmailChangeCurrent,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::MagicLink => "magiclink",
            Purpose::Recovery => "recovery",
            Purpose::Signup => "signup",
            Purpose::Invite => "invite",
            Purpose::Reauthentication => "reauthentication",
            Purpose::EmailChange => "email_change",
            Purpose::EmailChangeCurrent => "email_change_current",
        }
    }

    /// The `type` of its `/verify` link.
    fn verify_type(self) -> &'static str {
        match self {
            Purpose::EmailChangeCurrent => "email_change",
            p => p.as_str(),
        }
    }

    /// The template of its e-mail.
    fn mail_kind(self) -> crate::mailer::Kind {
        use crate::mailer::Kind;
        match self {
            Purpose::MagicLink => Kind::MagicLink,
            Purpose::Recovery => Kind::Recovery,
            Purpose::Signup => Kind::Confirmation,
            Purpose::Invite => Kind::Invite,
            Purpose::Reauthentication => Kind::Reauthentication,
            Purpose::EmailChange | Purpose::EmailChangeCurrent => Kind::EmailChange,
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
            "email_change" => &["email_change", "email_change_current"],
            _ => return None,
        })
    }
}

/// The key of stored token hashes, derived from the project secret (every instance of a
/// project derives the same one).
pub(crate) struct OtpKey {
    key: [u8; 32],
}

impl OtpKey {
    pub(crate) fn new(keys: &JwtKeys) -> Self {
        let material = keys
            .sign_hs256(&json!({ "purpose": "email-one-time-token-derivation" }))
            .unwrap_or_default();
        let mut h = Sha256::new();
        h.update(b"agencyflow email one-time token v1\0");
        h.update(material.as_bytes());
        OtpKey {
            key: h.finalize().into(),
        }
    }

    /// `hex(HMAC-SHA224(key, lower(email) NUL code))`: the stored token and the `token_hash` of
    /// links.
    pub(crate) fn hash(&self, email: &str, code: &str) -> String {
        let mut mac = Hmac::<Sha224>::new_from_slice(&self.key).expect("any key length");
        mac.update(email.to_lowercase().as_bytes());
        mac.update(b"\0");
        mac.update(code.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// The stored hash (and link token) of `code` sent to `email`, as a server with these keys
/// computes it: for tests and tools that need to know a token they did not receive.
pub fn email_otp_hash(keys: &JwtKeys, email: &str, code: &str) -> String {
    OtpKey::new(keys).hash(email, code)
}

/// A new 6-digit code.
fn new_code() -> String {
    format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000u32))
}

/// An issued token.
pub(crate) struct Issued {
    code: String,
    hash: String,
}

/// Issues (replacing any earlier one) the user's token for `purpose`, sent to `email`. With
/// `throttle`, a second email of the same kind within `GOTRUE_SMTP_MAX_FREQUENCY` seconds is
/// refused.
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
            return Err(send_throttled(wait - age));
        }
    }
    let code = new_code();
    let hash = state.otp_key().hash(email, &code);
    tx.execute(
        "insert into auth.one_time_tokens (user_id, token_type, token_hash, relates_to)
         values ($1, $2, $3, $4)
         on conflict (user_id, token_type) do update
           set token_hash = excluded.token_hash, relates_to = excluded.relates_to, created_at = now(),
               failed_attempts = 0, pkce = false",
        &[&user_id, &purpose.as_str(), &hash, &email],
    )
    .await?;
    let sent_column = match purpose {
        Purpose::Recovery => "recovery_sent_at",
        Purpose::Invite => "invited_at",
        Purpose::Signup => "confirmation_sent_at",
        Purpose::MagicLink => "confirmation_sent_at",
        Purpose::Reauthentication => "reauthentication_sent_at",
        Purpose::EmailChange | Purpose::EmailChangeCurrent => "email_change_sent_at",
    };
    tx.execute(
        &format!("update auth.users set {sent_column} = now(), updated_at = now() where id = $1"),
        &[&user_id],
    )
    .await?;
    Ok(Issued { code, hash })
}

/// GoTrue's 429 for a second email within `GOTRUE_SMTP_MAX_FREQUENCY`.
fn send_throttled(wait_secs: f64) -> AuthError {
    AuthError::new(
        ErrorCode::OverEmailSendRateLimit,
        format!(
            "For security purposes, you can only request this after {} seconds.",
            wait_secs.ceil().max(1.0) as i64
        ),
    )
}

/// The per-address email throttle for requests that answer the same whether or not the
/// address has an account (`/recover`, `/resend`): it applies to every address, so that a
/// second request within `GOTRUE_SMTP_MAX_FREQUENCY` is a 429 for unknown addresses too.
fn throttle_address(state: &AuthState, kind: &str, email: &str) -> Result<(), AuthError> {
    state
        .limiter()
        .check_wait(Limit::EmailSendPerAddress, &format!("{kind}:{email}"))
        .map_err(|wait| send_throttled(wait.as_secs_f64()))
}

/// The `GET /verify` link of a token.
fn action_link(base: &str, hash: &str, purpose: Purpose, redirect_to: &str) -> String {
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string();
    format!(
        "{}/verify?token={hash}&type={}&redirect_to={}",
        base.trim_end_matches('/'),
        purpose.verify_type(),
        enc(redirect_to)
    )
}

/// Who an e-mail is about: the user's current address, a pending new one, the user metadata
/// (the templates' `{{ .Email }}`, `{{ .NewEmail }}`, `{{ .Data }}`).
#[derive(Default)]
pub(crate) struct MailCtx {
    pub email: String,
    pub new_email: String,
    pub data: Value,
}

impl MailCtx {
    pub(crate) fn of(user: &User) -> MailCtx {
        MailCtx {
            email: user.email.clone().unwrap_or_default(),
            new_email: user.email_change.clone().unwrap_or_default(),
            data: user.user_metadata.clone(),
        }
    }
}

/// Sends the email to `to` through the SMTP queue; without SMTP it is logged (with its
/// secret only when `AGENCYFLOW_MAILER_LOG_LINKS` is on).
#[allow(clippy::too_many_arguments)]
fn deliver(
    state: &AuthState,
    to: &str,
    purpose: Purpose,
    link: Option<&str>,
    code: &str,
    token_hash: &str,
    redirect_to: &str,
    ctx: &MailCtx,
) {
    let vars = crate::mailer::Vars {
        confirmation_url: link.unwrap_or_default().to_string(),
        token: code.to_string(),
        token_hash: token_hash.to_string(),
        site_url: state.args.site_url.clone().unwrap_or_default(),
        email: ctx.email.clone(),
        new_email: ctx.new_email.clone(),
        sending_to: to.to_string(),
        redirect_to: redirect_to.to_string(),
        data: ctx.data.clone(),
    };
    if state.mailer().send(purpose.mail_kind(), to, &vars) {
        return;
    }
    let email = to;
    if state.args.mailer_log_links {
        tracing::info!(to = %email, kind = purpose.as_str(), link = link.unwrap_or(""), code = %code, "email (not sent: no SMTP mailer; AGENCYFLOW_MAILER_LOG_LINKS)");
    } else {
        tracing::warn!(to = %email, kind = purpose.as_str(), "email not sent: no SMTP mailer (use the admin API's generate_link, or AGENCYFLOW_MAILER_LOG_LINKS in development)");
    }
}

/// The confirmation a sign-up without autoconfirm waits for.
pub(crate) async fn issue_signup_confirmation(
    state: &AuthState,
    tx: &mut agencyflow_db::ClaimsTxn,
    user_id: Uuid,
    email: &str,
) -> Result<Issued, AuthError> {
    issue(state, tx, user_id, email, Purpose::Signup, false).await
}

/// Sends a sign-up's confirmation (after its transaction committed).
pub(crate) fn send_signup_confirmation(
    state: &AuthState,
    info: &ReqInfo,
    redirect_to: Option<&String>,
    user: &User,
    issued: &Issued,
) {
    send_link(
        state,
        info,
        redirect_to,
        user.email.as_deref().unwrap_or_default(),
        Purpose::Signup,
        &issued.hash,
        &issued.code,
        &MailCtx::of(user),
    );
}

/// The tokens of an email change: the new address's, and (secure email change, a user with an
/// address) the current address's.
pub(crate) struct EmailChangeIssued {
    new: Issued,
    current: Option<(String, Issued)>,
}

/// Issues the codes that prove an email change to `new_email` (the new address's is refused
/// within `GOTRUE_SMTP_MAX_FREQUENCY` of the previous one, as GoTrue does); the change starts
/// over unconfirmed.
pub(crate) async fn issue_email_change(
    state: &AuthState,
    tx: &mut agencyflow_db::ClaimsTxn,
    user: &User,
    new_email: &str,
) -> Result<EmailChangeIssued, AuthError> {
    let new = issue(state, tx, user.id, new_email, Purpose::EmailChange, true).await?;
    let current = match user.email.as_deref().filter(|e| !e.is_empty()) {
        Some(current) if state.args.smtp.secure_email_change_enabled => {
            let issued = issue(
                state,
                tx,
                user.id,
                current,
                Purpose::EmailChangeCurrent,
                false,
            )
            .await?;
            Some((current.to_string(), issued))
        }
        _ => {
            tx.execute(
                "delete from auth.one_time_tokens where user_id = $1 and token_type = 'email_change_current'",
                &[&user.id],
            )
            .await?;
            None
        }
    };
    tx.execute(
        "update auth.users set email_change_confirm_status = 0 where id = $1",
        &[&user.id],
    )
    .await?;
    Ok(EmailChangeIssued { new, current })
}

/// Sends an email change's link and code to the new address, and (secure email change) the
/// other one to the current address. `user` is the user with the change pending.
pub(crate) fn send_email_change(
    state: &AuthState,
    info: &ReqInfo,
    redirect_to: Option<&String>,
    user: &User,
    new_email: &str,
    issued: &EmailChangeIssued,
) {
    let mut ctx = MailCtx::of(user);
    ctx.new_email = new_email.to_string();
    send_link(
        state,
        info,
        redirect_to,
        new_email,
        Purpose::EmailChange,
        &issued.new.hash,
        &issued.new.code,
        &ctx,
    );
    if let Some((current, c)) = &issued.current {
        send_link(
            state,
            info,
            redirect_to,
            current,
            Purpose::EmailChangeCurrent,
            &c.hash,
            &c.code,
            &ctx,
        );
    }
}

/// Builds the email's link (to the allowed `redirect_to`) and sends it.
#[allow(clippy::too_many_arguments)]
fn send_link(
    state: &AuthState,
    info: &ReqInfo,
    redirect_to: Option<&String>,
    email: &str,
    purpose: Purpose,
    link_token: &str,
    code: &str,
    ctx: &MailCtx,
) {
    let target = redirect_target(state, redirect_to.map(String::as_str));
    let link = action_link(&info.auth_base, link_token, purpose, &target);
    deliver(
        state,
        email,
        purpose,
        Some(&link),
        code,
        link_token,
        &target,
        ctx,
    );
}

/// Where email links may send the browser: the site URL, or a prefix of the allow list;
/// anything else becomes the site URL (no open redirect).
pub(crate) fn redirect_target(state: &AuthState, wanted: Option<&str>) -> String {
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
    model::check_email(&email)?;
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
    match (nonempty(body.email.clone()), nonempty(body.phone)) {
        (Some(_), Some(_)) => {
            return Err(AuthError::new(
                ErrorCode::ValidationFailed,
                "Only an email address or phone number should be provided",
            ))
        }
        (None, Some(_)) => return Err(ErrorCode::PhoneProviderUnsupported.into()),
        (None, None) => {
            return Err(AuthError::new(
                ErrorCode::ValidationFailed,
                "One of email or phone must be set",
            ))
        }
        (Some(_), None) => {}
    }
    let email = valid_email_or_error(body.email)?;
    rate_limit(&state, Limit::SignInSignUpsPerIp, &info.client.ip)?;
    let mut tx = state.tx().await?;
    let (user_id, purpose, data) = match model::find_user_by_email(&mut tx, &email).await? {
        Some(u) if u.is_banned() => return Err(ErrorCode::UserBanned.into()),
        Some(u) => {
            let purpose = if u.email_confirmed_at.is_some() {
                Purpose::MagicLink
            } else {
                Purpose::Signup
            };
            (u.id, purpose, u.user_metadata)
        }
        None if !body.create_user.unwrap_or(true) => return Err(ErrorCode::OtpDisabled.into()),
        None if state.args.disable_signup => return Err(ErrorCode::SignupDisabled.into()),
        None => {
            let data = body.data.unwrap_or_default();
            let id = create_passwordless_user(&state, &mut tx, &email, data.clone(), None).await?;
            (id, Purpose::Signup, Value::Object(data))
        }
    };
    let issued = issue(&state, &mut tx, user_id, &email, purpose, true).await?;
    let link_token = match &pkce {
        Some(p) => p.start(&mut tx, user_id, purpose, &issued.hash).await?,
        None => issued.hash.clone(),
    };
    tx.commit().await?;
    let ctx = MailCtx {
        email: email.clone(),
        data,
        ..MailCtx::default()
    };
    send_link(
        &state,
        &info,
        q.get("redirect_to"),
        &email,
        purpose,
        &link_token,
        &issued.code,
        &ctx,
    );
    Ok(Json(json!({})).into_response())
}

/// A PKCE code challenge sent with an email request.
pub(crate) struct Pkce {
    pub(crate) challenge: String,
    pub(crate) method: &'static str,
}

impl Pkce {
    /// `None` without a challenge (the implicit flow); 400 for a malformed one.
    pub(crate) fn from_request(
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
        sweep_flow_states(tx).await?;
        tx.execute(
            "insert into auth.flow_state (user_id, auth_code, code_challenge_method, code_challenge, authentication_method)
             values ($1, $2, $3, $4, $5)",
            &[&user_id, &Uuid::new_v4().to_string(), &self.method, &self.challenge, &purpose.as_str()],
        )
        .await?;
        // The token's link now leads only to the flow's auth code: its bare hash no longer
        // opens a session (the code typed with the address still does, as in GoTrue).
        tx.execute(
            "update auth.one_time_tokens set pkce = true where user_id = $1 and token_type = $2",
            &[&user_id, &purpose.as_str()],
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
                    created_at > now() - make_interval(secs => $2::float8),
                    provider_access_token, provider_refresh_token
             from auth.flow_state where auth_code = $1 and user_id is not null for update",
            &[&code, &FLOW_STATE_SECS],
        )
        .await?
    else {
        return Err(ErrorCode::FlowStateNotFound.into());
    };
    // An external provider's tokens, returned with the session as GoTrue does.
    let provider_tokens: (Option<String>, Option<String>) = (row.get(6), row.get(7));
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
    let mut session = model::session_json(&state, &user, sid, &amr, &refresh, &info.issuer)?;
    if let (Some(t), Value::Object(m)) = (provider_tokens.0, &mut session) {
        m.insert("provider_token".into(), json!(t));
        m.insert(
            "provider_refresh_token".into(),
            json!(provider_tokens.1.unwrap_or_default()),
        );
    }
    Ok(Json(session).into_response())
}

#[derive(Deserialize, Default)]
struct EmailBody {
    email: Option<String>,
    /// Only read to refuse it: there is no SMS provider.
    phone: Option<String>,
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
    throttle_address(&state, Purpose::Recovery.as_str(), &email)?;
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
            &MailCtx::of(&user),
        );
    }
    Ok(Json(json!({})).into_response())
}

/// `POST /resend`: the signup confirmation again (for an unconfirmed address), or the code
/// of a pending email change (`email` is the current address). 200 `{}` either way.
pub async fn resend(
    State(state): State<AuthState>,
    info: ReqInfo,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, AuthError> {
    let body: EmailBody = parse_body(&body)?;
    let kind = body.kind.as_deref();
    let purpose = match kind {
        Some("signup") => Some(Purpose::Signup),
        Some("email_change") => Some(Purpose::EmailChange),
        Some("sms") | Some("phone_change") => None,
        _ => {
            return Err(AuthError::new(
                ErrorCode::ValidationFailed,
                "Missing one of these types: signup, email_change, sms, phone_change",
            ))
        }
    };
    // GoTrue's checks, in its order; a phone is refused as phone logins are off.
    let (email, phone) = (nonempty(body.email.clone()), nonempty(body.phone));
    let invalid = |m: &'static str| Err(AuthError::new(ErrorCode::ValidationFailed, m));
    match (&email, &phone) {
        (None, _) if kind == Some("signup") => {
            return invalid("Type provided requires an email address")
        }
        (_, None) if kind == Some("sms") => {
            return invalid("Type provided requires a phone number")
        }
        (Some(_), Some(_)) => {
            return invalid("Only an email address or phone number should be provided.")
        }
        (None, Some(_)) => {
            return Err(AuthError::new(
                ErrorCode::PhoneProviderUnsupported,
                "Phone logins are disabled",
            ))
        }
        (None, None) => return invalid("Missing email address or phone number"),
        (Some(_), None) => {}
    }
    let Some(purpose) = purpose else {
        // An email with type sms or phone_change: nothing of the kind is pending.
        let _ = valid_email_or_error(body.email)?;
        return Ok(Json(json!({})).into_response());
    };
    let email = valid_email_or_error(body.email)?;
    rate_limit(&state, Limit::SignInSignUpsPerIp, &info.client.ip)?;
    throttle_address(&state, purpose.as_str(), &email)?;
    let mut tx = state.tx().await?;
    let Some(user) = model::find_user_by_email(&mut tx, &email).await? else {
        return Ok(Json(json!({})).into_response());
    };
    match purpose {
        Purpose::Signup if user.email_confirmed_at.is_none() => {
            let issued = issue(&state, &mut tx, user.id, &email, purpose, true).await?;
            tx.commit().await?;
            send_link(
                &state,
                &info,
                q.get("redirect_to"),
                &email,
                purpose,
                &issued.hash,
                &issued.code,
                &MailCtx::of(&user),
            );
        }
        Purpose::EmailChange => {
            if let Some(new_email) = user.email_change.clone().filter(|e| !e.is_empty()) {
                let issued = issue_email_change(&state, &mut tx, &user, &new_email).await?;
                tx.commit().await?;
                send_email_change(
                    &state,
                    &info,
                    q.get("redirect_to"),
                    &user,
                    &new_email,
                    &issued,
                );
            }
        }
        _ => {}
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
    redirect_to: Option<String>,
}

/// What a `/verify` request presents.
enum Presented {
    /// A 6-digit code, with the address it was sent to (its hash computed).
    Code { email: String, hash: String },
    /// An email link's token: `token_hash`, or `pkce_<token_hash>` for a PKCE flow.
    Link { hash: String, pkce: bool },
}

impl Presented {
    /// What the per-target limit counts: the address, or the link's token.
    fn target(&self) -> &str {
        match self {
            Presented::Code { email, .. } => email,
            Presented::Link { hash, .. } => hash,
        }
    }

    fn from_link(token: &str) -> Presented {
        let t = token.trim().to_lowercase();
        match t.strip_prefix(PKCE_PREFIX) {
            Some(h) => Presented::Link {
                hash: h.to_string(),
                pkce: true,
            },
            None => Presented::Link {
                hash: t,
                pkce: false,
            },
        }
    }
}

/// The `/verify` limits: per client IP and per target (429 `over_request_rate_limit`).
fn verify_limits(
    state: &AuthState,
    info: &ReqInfo,
    presented: &Presented,
) -> Result<(), AuthError> {
    rate_limit(state, Limit::VerifyPerIp, &info.client.ip)?;
    rate_limit(state, Limit::VerifyPerTarget, presented.target())
}

/// A used token: the transaction that took it (and applied what it proves), its user and
/// its purpose.
struct Taken {
    tx: agencyflow_db::ClaimsTxn,
    user: User,
    purpose: String,
    /// A secure email change's first confirmation: nothing changed yet, the other address's
    /// link or code is still needed.
    awaiting_other: bool,
}

/// GoTrue's answer to the first of the two confirmations of a secure email change.
pub const SINGLE_CONFIRMATION_ACCEPTED: &str =
    "Confirmation link accepted. Please proceed to confirm link sent to the other email";

/// Takes a token: deletes it and, when it was live, applies what it proves (the user's
/// address is confirmed; an email change is made). `Err(OtpExpired)` for an unknown, used or
/// expired token. A code checks the live tokens of the address it names, under a row lock:
/// a wrong one counts against all of them, and the [`MAX_FAILED_ATTEMPTS`]th deletes them.
async fn take_token(
    state: &AuthState,
    verify_type: &str,
    presented: &Presented,
) -> Result<Taken, AuthError> {
    let Some(purposes) = Purpose::accepted_by(verify_type) else {
        return Err(AuthError::new(
            ErrorCode::ValidationFailed,
            "Unsupported verification type",
        ));
    };
    let purposes: Vec<String> = purposes.iter().map(|p| p.to_string()).collect();
    let exp = state.args.mailer_otp_exp as f64;
    let mut tx = state.tx().await?;
    let found: Option<(Uuid, String, String, bool)> = match presented {
        Presented::Link { hash, pkce } => tx
            .query_opt(
                "delete from auth.one_time_tokens
                 where token_hash = $1 and token_type = any($2) and pkce = $3
                 returning user_id, token_type, relates_to,
                           created_at > now() - make_interval(secs => $4::float8)",
                &[hash, &purposes, pkce, &exp],
            )
            .await?
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))),
        Presented::Code { email, hash } => {
            let rows = tx
                .query(
                    "select id, user_id, token_type, token_hash, relates_to, failed_attempts,
                            created_at > now() - make_interval(secs => $3::float8)
                     from auth.one_time_tokens
                     where lower(relates_to) = lower($1) and token_type = any($2)
                     order by id for update",
                    &[email, &purposes, &exp],
                )
                .await?;
            let hit = rows.iter().find(|r| {
                let stored: &str = r.get(3);
                bool::from(stored.as_bytes().ct_eq(hash.as_bytes()))
                    && r.get::<_, i32>(5) < MAX_FAILED_ATTEMPTS
            });
            match hit {
                Some(r) => {
                    let id: Uuid = r.get(0);
                    tx.execute("delete from auth.one_time_tokens where id = $1", &[&id])
                        .await?;
                    Some((r.get(1), r.get(2), r.get(4), r.get(6)))
                }
                None => {
                    if !rows.is_empty() {
                        let ids: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
                        record_failure(&mut tx, &ids).await?;
                        tx.commit().await?;
                    }
                    return Err(ErrorCode::OtpExpired.into());
                }
            }
        }
    };
    let Some((user_id, purpose, relates_to, fresh)) = found else {
        return Err(ErrorCode::OtpExpired.into());
    };
    if !fresh {
        // An expired token is deleted either way.
        tx.commit().await?;
        return Err(ErrorCode::OtpExpired.into());
    }
    let user: User = model::find_user(&mut tx, user_id)
        .await?
        .ok_or(ErrorCode::OtpExpired)?;
    if user.is_banned() {
        return Err(ErrorCode::UserBanned.into());
    }
    if purpose == Purpose::EmailChange.as_str() || purpose == Purpose::EmailChangeCurrent.as_str() {
        let pending = user.email_change.clone().filter(|e| !e.is_empty());
        let new_email = if purpose == Purpose::EmailChange.as_str() {
            // The new address's token must be for the change that is pending.
            if pending
                .as_deref()
                .is_some_and(|p| !p.eq_ignore_ascii_case(&relates_to))
            {
                tx.commit().await?;
                return Err(ErrorCode::OtpExpired.into());
            }
            relates_to
        } else {
            match pending {
                Some(p) => p,
                None => {
                    tx.commit().await?;
                    return Err(ErrorCode::OtpExpired.into());
                }
            }
        };
        // Secure email change: a user with an address proves both the current and the new
        // one; the first proof is only counted (under the user's row lock).
        let secure = state.args.smtp.secure_email_change_enabled
            && user.email.as_deref().is_some_and(|e| !e.is_empty());
        if secure {
            let confirmations: i16 = tx
                .query_one(
                    "update auth.users set email_change_confirm_status = email_change_confirm_status + 1,
                       updated_at = now() where id = $1 returning email_change_confirm_status",
                    &[&user_id],
                )
                .await?
                .get(0);
            if confirmations < 2 {
                return Ok(Taken {
                    tx,
                    user,
                    purpose,
                    awaiting_other: true,
                });
            }
        }
        apply_email_change(&mut tx, &user, &new_email).await?;
    } else {
        tx.execute(
            "update auth.users set email_confirmed_at = coalesce(email_confirmed_at, now()),
               last_sign_in_at = now(), updated_at = now() where id = $1",
            &[&user_id],
        )
        .await?;
        if let Some(email) = user.email.as_deref() {
            model::upsert_email_identity(&mut tx, user_id, email, true, true).await?;
        }
    }
    Ok(Taken {
        tx,
        user,
        purpose,
        awaiting_other: false,
    })
}

/// A wrong code against the tokens `ids`: each counts it, and those that reached
/// [`MAX_FAILED_ATTEMPTS`] are deleted.
async fn record_failure(tx: &mut agencyflow_db::ClaimsTxn, ids: &[Uuid]) -> Result<(), AuthError> {
    let ids = ids.to_vec();
    tx.execute(
        "update auth.one_time_tokens set failed_attempts = failed_attempts + 1 where id = any($1)",
        &[&ids],
    )
    .await?;
    let withdrawn = tx
        .query(
            "delete from auth.one_time_tokens where id = any($1) and failed_attempts >= $2
             returning user_id, token_type",
            &[&ids, &MAX_FAILED_ATTEMPTS],
        )
        .await?;
    for r in &withdrawn {
        let (user_id, kind): (Uuid, String) = (r.get(0), r.get(1));
        tracing::warn!(%user_id, kind = %kind, attempts = MAX_FAILED_ATTEMPTS, "one-time token withdrawn after too many wrong codes");
    }
    Ok(())
}

/// The proved email change: the new address becomes the user's, confirmed (an anonymous
/// user becomes permanent). Another user who took the address meanwhile makes it 422.
async fn apply_email_change(
    tx: &mut agencyflow_db::ClaimsTxn,
    user: &User,
    new_email: &str,
) -> Result<(), AuthError> {
    let mut user_metadata = user.user_metadata.clone();
    if let Value::Object(m) = &mut user_metadata {
        if user.is_anonymous || m.contains_key("email") {
            if let Value::Object(idd) = model::email_identity_data(user.id, new_email, true) {
                m.extend(idd);
            }
        }
    }
    let app_metadata = model::with_email_provider(&user.app_metadata);
    let updated = tx
        .execute(
            "update auth.users set email = $2, email_confirmed_at = now(), email_change = null,
               email_change_sent_at = null, email_change_confirm_status = 0,
               is_anonymous = false, raw_user_meta_data = $3,
               raw_app_meta_data = $4, last_sign_in_at = now(), updated_at = now()
             where id = $1",
            &[&user.id, &new_email, &user_metadata, &app_metadata],
        )
        .await;
    match updated {
        Err(agencyflow_db::DbError::Postgres(p)) if p.code == "23505" => {
            return Err(ErrorCode::EmailExists.into())
        }
        r => r?,
    };
    model::upsert_email_identity(tx, user.id, new_email, true, true).await?;
    tx.execute(
        "delete from auth.one_time_tokens where user_id = $1
           and token_type in ('email_change', 'email_change_current')",
        &[&user.id],
    )
    .await?;
    Ok(())
}

/// What a used token gave.
enum Verified {
    Session(Value),
    /// The first of a secure email change's two confirmations.
    AwaitingOther,
}

/// Uses a token and opens a session.
async fn consume(
    state: &AuthState,
    info: &ReqInfo,
    verify_type: &str,
    presented: &Presented,
) -> Result<Verified, AuthError> {
    let Taken {
        mut tx,
        user,
        purpose,
        awaiting_other,
    } = take_token(state, verify_type, presented).await?;
    if awaiting_other {
        tx.commit().await?;
        return Ok(Verified::AwaitingOther);
    }
    let via_code = matches!(presented, Presented::Code { .. });
    let method = match (purpose.as_str(), via_code) {
        ("recovery", _) => "recovery",
        ("invite", _) => "invite",
        ("email_change", _) => "email_change",
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
    model::session_json(state, &user, sid, &amr, &refresh, &info.issuer).map(Verified::Session)
}

/// Uses the token of a PKCE flow's link: no session, the flow's auth code instead (the
/// client exchanges it with its verifier at /token?grant_type=pkce).
async fn consume_pkce(
    state: &AuthState,
    verify_type: &str,
    hash: &str,
) -> Result<String, AuthError> {
    let presented = Presented::Link {
        hash: hash.to_string(),
        pkce: true,
    };
    let Taken {
        mut tx,
        user,
        purpose,
        awaiting_other,
    } = take_token(state, verify_type, &presented).await?;
    if awaiting_other {
        // No PKCE flow starts an email change; a link that claims one gives nothing.
        return Err(ErrorCode::FlowStateNotFound.into());
    }
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

/// `POST /verify`: `{type, token_hash}` or `{type, email, token}` → 200 Session. The link
/// token of a PKCE flow (`pkce_…`) gives no session: 200 `{"code"}`, the auth code that only
/// the holder of the code verifier can exchange at `/token?grant_type=pkce`.
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
    // GoTrue's VerifyParams.Validate, in its order and words.
    let invalid = |m: &'static str| AuthError::new(ErrorCode::ValidationFailed, m);
    let (email, phone) = (nonempty(body.email), nonempty(body.phone));
    let presented = match (nonempty(body.token_hash), nonempty(body.token)) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(invalid("Verify requires either a token or a token hash"))
        }
        (Some(_), None) if email.is_some() || phone.is_some() || body.redirect_to.is_some() => {
            return Err(invalid("Only the token_hash and type should be provided"))
        }
        (Some(h), None) => Presented::from_link(&h),
        (None, Some(code)) => match (email, phone) {
            (Some(email), None) => {
                let email = valid_email_or_error(Some(email))?;
                let hash = state.otp_key().hash(&email, code.trim());
                Presented::Code { email, hash }
            }
            (None, Some(phone)) => {
                model::check_phone(&phone)?;
                // There is no SMS provider, so no phone code was ever sent: none is valid.
                rate_limit(&state, Limit::VerifyPerIp, &info.client.ip)?;
                return Err(ErrorCode::OtpExpired.into());
            }
            _ => {
                return Err(invalid(
                    "Only an email address or phone number should be provided on verify",
                ))
            }
        },
    };
    rate_limit(&state, Limit::VerifyPerIp, &info.client.ip)?;
    rate_limit(&state, Limit::VerifyPerTarget, presented.target())?;
    if let Presented::Link { hash, pkce: true } = &presented {
        let code = consume_pkce(&state, &kind, hash).await?;
        return Ok(Json(json!({ "code": code })).into_response());
    }
    match consume(&state, &info, &kind, &presented).await? {
        Verified::Session(session) => Ok(Json(session).into_response()),
        Verified::AwaitingOther => {
            Ok(Json(json!({ "msg": SINGLE_CONFIRMATION_ACCEPTED, "code": "200" })).into_response())
        }
    }
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
    // A link without its type or token is answered, like GoTrue, with the JSON error itself.
    for (missing, message) in [
        (
            kind.trim().is_empty(),
            "Verify requires a verification type",
        ),
        (
            q.get("token").is_none_or(|t| t.trim().is_empty()),
            "Verify requires a token or a token hash",
        ),
    ] {
        if missing {
            return AuthError::new(ErrorCode::ValidationFailed, message).into_response();
        }
    }
    let target = redirect_target(&state, q.get("redirect_to").map(String::as_str));
    let presented = Presented::from_link(q.get("token").map(String::as_str).unwrap_or(""));
    // Over a limit, no redirect: the 429 itself (a browser shows it; a script sees it).
    if let Err(e) = verify_limits(&state, &info, &presented) {
        return e.into_response();
    }
    if let Presented::Link { hash, pkce: true } = &presented {
        return pkce_redirect(&target, consume_pkce(&state, &kind, hash).await);
    }
    let result = if presented.target().is_empty() {
        Err(ErrorCode::OtpExpired.into())
    } else {
        consume(&state, &info, &kind, &presented).await
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
        // Go's url.QueryEscape, as GoTrue writes it: spaces as `+`.
        Ok(Verified::AwaitingOther) => {
            form(&[("message", SINGLE_CONFIRMATION_ACCEPTED.into())]).replace("%20", "+")
        }
        Ok(Verified::Session(s)) => form(&[
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
            Ok(Verified::Session(s)) => Json(s).into_response(),
            Ok(Verified::AwaitingOther) => {
                Json(json!({ "msg": SINGLE_CONFIRMATION_ACCEPTED, "code": "200" })).into_response()
            }
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
    new_email: Option<String>,
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
        Some("email_change_new") => Purpose::EmailChange,
        Some("email_change_current") if state.args.smtp.secure_email_change_enabled => {
            Purpose::EmailChangeCurrent
        }
        Some("email_change_current") => {
            return Err(AuthError::new(
                ErrorCode::ValidationFailed,
                "Enable secure email change to generate link for current email",
            ))
        }
        _ => {
            return Err(AuthError::new(
                ErrorCode::ValidationFailed,
                "Invalid link type: signup, magiclink, recovery, invite, email_change_current or email_change_new",
            ))
        }
    };
    let email = valid_email_or_error(body.email)?;
    let new_email = match purpose {
        Purpose::EmailChange | Purpose::EmailChangeCurrent => {
            Some(valid_email_or_error(body.new_email)?)
        }
        _ => None,
    };
    // A new sign-up's password is hashed before the transaction: the hash may wait for a
    // slot, and must not hold a database connection meanwhile.
    let signup_hash = match (purpose, body.password.filter(|p| !p.is_empty())) {
        (Purpose::Signup, Some(password)) => {
            if password.chars().count() < state.args.password_min_length {
                return Err(AuthError::weak_password(state.args.password_min_length));
            }
            Some(crate::password::hash(password).await?)
        }
        _ => None,
    };
    let mut tx = state.tx().await?;
    let existing = model::find_user_by_email(&mut tx, &email).await?;
    let user_id = match (purpose, existing) {
        (Purpose::Reauthentication, _) => unreachable!("not a generate_link type (matched above)"),
        (
            Purpose::MagicLink
            | Purpose::Recovery
            | Purpose::EmailChange
            | Purpose::EmailChangeCurrent,
            None,
        ) => return Err(ErrorCode::UserNotFound.into()),
        (Purpose::MagicLink | Purpose::Recovery, Some(u)) => u.id,
        (Purpose::EmailChange | Purpose::EmailChangeCurrent, Some(u)) => {
            let new_email = new_email.as_deref().unwrap_or_default();
            let taken: bool = tx
                .query_one(
                    "select exists (select 1 from auth.users where lower(email) = lower($1) and id <> $2 and is_sso_user = false)",
                    &[&new_email, &u.id],
                )
                .await?
                .get(0);
            if taken {
                return Err(ErrorCode::EmailExists.into());
            }
            // Another pending change's tokens prove nothing about this one.
            if u.email_change
                .as_deref()
                .is_some_and(|p| !p.eq_ignore_ascii_case(new_email))
            {
                tx.execute(
                    "delete from auth.one_time_tokens where user_id = $1
                       and token_type in ('email_change', 'email_change_current')",
                    &[&u.id],
                )
                .await?;
            }
            tx.execute(
                "update auth.users set email_change = $2, email_change_confirm_status = 0,
                   updated_at = now() where id = $1",
                &[&u.id, &new_email],
            )
            .await?;
            u.id
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
            let hash = signup_hash.ok_or_else(|| {
                AuthError::new(
                    ErrorCode::ValidationFailed,
                    "Password is required for a signup link",
                )
            })?;
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
    let sent_to = match purpose {
        Purpose::EmailChange => new_email.as_deref().unwrap_or(&email),
        _ => &email,
    };
    let issued = issue(&state, &mut tx, user_id, sent_to, purpose, false).await?;
    let user = model::find_user(&mut tx, user_id)
        .await?
        .ok_or_else(|| AuthError::internal("user vanished while generating a link"))?;
    tx.commit().await?;
    let target = redirect_target(&state, body.redirect_to.as_deref());
    let mut out = user.to_json();
    if let Value::Object(m) = &mut out {
        m.insert(
            "action_link".into(),
            json!(action_link(&info.auth_base, &issued.hash, purpose, &target)),
        );
        m.insert("email_otp".into(), json!(issued.code));
        m.insert("hashed_token".into(), json!(issued.hash));
        m.insert("redirect_to".into(), json!(target));
        m.insert(
            "verification_type".into(),
            json!(body.kind.as_deref().unwrap_or(purpose.as_str())),
        );
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
        &issued.hash,
        "",
        &MailCtx::of(&user),
    );
    Ok(Json(json!({})).into_response())
}

/// Uses up `user`'s live reauthentication code `nonce` within `tx` (returned for the rest of
/// the update), or refuses with 422 `reauthentication_not_valid` (none issued, another code,
/// or older than `GOTRUE_MAILER_OTP_EXP`). A wrong code counts against the live one, and the
/// [`MAX_FAILED_ATTEMPTS`]th deletes it: that failure is committed with `tx`, so the caller's
/// update must not have written anything yet.
pub(crate) async fn take_reauthentication(
    state: &AuthState,
    mut tx: agencyflow_db::ClaimsTxn,
    user: &User,
    nonce: &str,
) -> Result<agencyflow_db::ClaimsTxn, AuthError> {
    let hash = state
        .otp_key()
        .hash(user.email.as_deref().unwrap_or_default(), nonce.trim());
    let row = tx
        .query_opt(
            "select id, token_hash, failed_attempts,
                    created_at > now() - make_interval(secs => $2::float8)
             from auth.one_time_tokens
             where user_id = $1 and token_type = 'reauthentication' for update",
            &[&user.id, &(state.args.mailer_otp_exp as f64)],
        )
        .await?;
    let Some(row) = row else {
        return Err(ErrorCode::ReauthenticationNotValid.into());
    };
    let (id, stored, failed, fresh): (Uuid, String, i32, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let matches = bool::from(stored.as_bytes().ct_eq(hash.as_bytes()));
    if matches && fresh && failed < MAX_FAILED_ATTEMPTS {
        tx.execute("delete from auth.one_time_tokens where id = $1", &[&id])
            .await?;
        return Ok(tx);
    }
    if !matches {
        record_failure(&mut tx, &[id]).await?;
        tx.commit().await?;
    }
    Err(ErrorCode::ReauthenticationNotValid.into())
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
        &MailCtx::of(&user),
    );
    Ok(Json(user.to_json()).into_response())
}

/// Removes up to 100 flow states older than 24 hours (abandoned sign-ins; a flow is good for
/// minutes): run with every new flow, so the table stays bounded by the rate of new flows.
pub(crate) async fn sweep_flow_states(tx: &mut agencyflow_db::ClaimsTxn) -> Result<(), AuthError> {
    tx.execute(
        "delete from auth.flow_state where id in (
           select id from auth.flow_state where created_at < now() - interval '24 hours'
           order by created_at limit 100)",
        &[],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hash_is_keyed_by_the_project_secret() {
        let key = OtpKey::new(&JwtKeys::hs256(b"secret-one-secret-one-secret-one!", None));
        let other = OtpKey::new(&JwtKeys::hs256(b"secret-two-secret-two-secret-two!", None));
        assert_eq!(
            key.hash("A@x.test", "123456"),
            key.hash("a@x.test", "123456")
        );
        assert_ne!(
            key.hash("a@x.test", "123456"),
            key.hash("b@x.test", "123456")
        );
        assert_ne!(
            key.hash("a@x.test", "123456"),
            other.hash("a@x.test", "123456")
        );
        // Not GoTrue's unkeyed sha224(email + code), which anyone can compute.
        let plain = hex::encode(Sha224::digest(b"a@x.test123456"));
        assert_ne!(key.hash("a@x.test", "123456"), plain);
        assert_eq!(key.hash("a@x.test", "123456").len(), 56);
        assert_eq!(
            email_otp_hash(
                &JwtKeys::hs256(b"secret-one-secret-one-secret-one!", None),
                "a@x.test",
                "1"
            ),
            key.hash("a@x.test", "1")
        );
        let c = new_code();
        assert!(c.len() == 6 && c.chars().all(|d| d.is_ascii_digit()), "{c}");
    }
}
