//! Multi-factor authentication with TOTP, as GoTrue's `/factors` API: enroll (a secret, its
//! `otpauth://` URI and a QR code SVG), challenge, verify (RFC 6238: HMAC-SHA1, 30-second
//! steps, 6 digits, one step of clock skew either way) and unenroll, and the admin API's
//! `/admin/users/{id}/factors`.
//!
//! A verified code raises the session to `aal2`: `{method: "totp"}` joins the session's `amr`
//! (most recent first), so every access token of the session (refreshes too) says `aal2`; the
//! session's refresh tokens are replaced (one issued before the second factor cannot carry
//! it), and the user's other `aal1` sessions end, as in GoTrue. Each code is accepted once:
//! a factor remembers the last time step it accepted and refuses that step and older ones.
//! Challenges and verifications are rate-limited per IP, and verifications per factor.
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};
use sha1::Sha1;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::admin::require_admin;
use crate::error::{AuthError, ErrorCode};
use crate::handlers::{authenticated, nonempty, parse_body, rate_limit, ReqInfo};
use crate::model::{self, User};
use crate::ratelimit::Limit;
use crate::tokens::token_hash;
use crate::AuthState;

/// MFA settings, under GoTrue's names.
#[derive(Debug, Clone, clap::Args)]
pub struct MfaArgs {
    /// Factors (verified or not) one user may have.
    #[arg(long = "mfa-max-enrolled-factors", env = "GOTRUE_MFA_MAX_ENROLLED_FACTORS", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_enrolled_factors: u32,
    /// Verified factors one user may have.
    #[arg(long = "mfa-max-verified-factors", env = "GOTRUE_MFA_MAX_VERIFIED_FACTORS", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_verified_factors: u32,
    /// Seconds a challenge may wait for its code.
    #[arg(long = "mfa-challenge-expiry-duration", env = "GOTRUE_MFA_CHALLENGE_EXPIRY_DURATION", default_value_t = 300,
          value_parser = clap::value_parser!(i64).range(1..=86_400))]
    pub challenge_expiry: i64,
    /// Challenges per client IP, and verifications per client IP and per factor, per minute
    /// (0 = unlimited).
    #[arg(
        long = "mfa-rate-limit-challenge-and-verify",
        env = "GOTRUE_MFA_RATE_LIMIT_CHALLENGE_AND_VERIFY",
        default_value_t = 15.0
    )]
    pub rate_limit_challenge_and_verify: f64,
    /// New TOTP factors may be enrolled.
    #[arg(long = "mfa-totp-enroll-enabled", env = "GOTRUE_MFA_TOTP_ENROLL_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub totp_enroll_enabled: bool,
    /// TOTP factors may be challenged and verified.
    #[arg(long = "mfa-totp-verify-enabled", env = "GOTRUE_MFA_TOTP_VERIFY_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub totp_verify_enabled: bool,
}

/// An unverified factor never challenged is removed after this long (GoTrue's
/// `GOTRUE_MFA_FACTOR_EXPIRY_DURATION` default).
const FACTOR_EXPIRY_SECS: f64 = 300.0;
/// RFC 6238 parameters (GoTrue's, and every authenticator app's default).
const PERIOD: i64 = 30;
const DIGITS: u32 = 6;
/// Time steps accepted either side of the current one.
const SKEW: i64 = 1;

// ---- RFC 4648 base32 and RFC 6238 TOTP ----

const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Base32 without padding (how authenticator apps take secrets).
pub fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(B32[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(B32[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes base32 (case-insensitive, padding and spaces ignored).
pub fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in s.chars().filter(|c| *c != '=' && !c.is_whitespace()) {
        let v = B32
            .iter()
            .position(|b| *b as char == c.to_ascii_uppercase())? as u32;
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
        buf &= (1 << bits) - 1;
    }
    Some(out)
}

/// RFC 4226 HOTP: the 6-digit code of `counter`.
pub fn hotp(secret: &[u8], counter: u64) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("any key length");
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let off = usize::from(h[h.len() - 1] & 0x0f);
    let bin = (u32::from(h[off]) & 0x7f) << 24
        | u32::from(h[off + 1]) << 16
        | u32::from(h[off + 2]) << 8
        | u32::from(h[off + 3]);
    format!(
        "{:0width$}",
        bin % 10u32.pow(DIGITS),
        width = DIGITS as usize
    )
}

/// The RFC 6238 time step of a Unix time.
pub fn time_step(unix: i64) -> i64 {
    unix.div_euclid(PERIOD)
}

/// The step (within ±[`SKEW`] of `now`'s, and after `last_used`) whose code is `code`.
fn matching_step(secret: &[u8], code: &str, now: i64, last_used: Option<i64>) -> Option<i64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let current = time_step(now);
    let mut found = None;
    // Every candidate is computed and compared in constant time, whichever matches.
    for step in current - SKEW..=current + SKEW {
        let candidate = hotp(secret, step.max(0) as u64);
        if bool::from(candidate.as_bytes().ct_eq(code.as_bytes()))
            && last_used.is_none_or(|l| step > l)
            && found.is_none()
        {
            found = Some(step);
        }
    }
    found
}

/// GoTrue's `otpauth://` URI (the QR code's content).
fn otpauth_uri(issuer: &str, account: &str, secret: &str) -> String {
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, QUERY).to_string();
    format!(
        "otpauth://totp/{}:{}?algorithm=SHA1&digits={DIGITS}&issuer={}&period={PERIOD}&secret={secret}",
        enc(issuer),
        enc(account),
        enc(issuer)
    )
}

const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@');

/// The QR code of `uri` as an SVG document (no `#` in it: supabase-js puts it in a
/// `data:image/svg+xml;utf-8,` URI, where `#` would end the data).
fn qr_svg(uri: &str) -> Result<String, AuthError> {
    let code = qrcode::QrCode::with_error_correction_level(uri, qrcode::EcLevel::M)
        .map_err(AuthError::internal)?;
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .dark_color(qrcode::render::svg::Color("black"))
        .light_color(qrcode::render::svg::Color("white"))
        .build();
    Ok(match svg.find("<svg") {
        Some(i) => svg[i..].to_string(),
        None => svg,
    })
}

// ---- helpers ----

/// The signed-in user, the session of the token and that session's assurance level.
pub(crate) async fn session_user(
    state: &AuthState,
    headers: &HeaderMap,
) -> Result<(User, Uuid, String), AuthError> {
    let (user, session) = authenticated(state, headers).await?;
    let sid = session.ok_or(ErrorCode::SessionNotFound)?;
    let mut tx = state.tx().await?;
    let aal: String = tx
        .query_opt("select aal from auth.sessions where id = $1", &[&sid])
        .await?
        .map(|r| r.get(0))
        .ok_or(ErrorCode::SessionNotFound)?;
    tx.commit().await?;
    Ok((user, sid, aal))
}

fn parse_factor_id(id: &str) -> Result<Uuid, AuthError> {
    Uuid::parse_str(id)
        .map_err(|_| AuthError::new(ErrorCode::ValidationFailed, "factor_id must be an UUID"))
}

/// The sessions that this factor raised to `aal2` drop back to `aal1` (its `amr` entries go).
async fn downgrade_sessions(
    tx: &mut agencyflow_db::ClaimsTxn,
    factor_id: Uuid,
) -> Result<(), AuthError> {
    tx.execute(
        "update auth.sessions set aal = 'aal1', factor_id = null, updated_at = now(),
           amr = coalesce((select jsonb_agg(e order by n) from jsonb_array_elements(amr) with ordinality as x(e, n)
                           where e->>'method' not in ('totp', 'mfa/webauthn')), '[]'::jsonb)
         where factor_id = $1",
        &[&factor_id],
    )
    .await?;
    Ok(())
}

// ---- endpoints ----

#[derive(Deserialize, Default)]
struct EnrollBody {
    factor_type: Option<String>,
    friendly_name: Option<String>,
    issuer: Option<String>,
}

/// `POST /factors` (supabase-js `mfa.enroll`): a new unverified TOTP factor,
/// `{id, type, friendly_name, totp: {qr_code, secret, uri}}`.
pub async fn enroll(
    State(state): State<AuthState>,
    info: ReqInfo,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AuthError> {
    let body: EnrollBody = parse_body(&body)?;
    let (user, _sid, aal) = session_user(&state, &headers).await?;
    let factor_type = match body.factor_type.as_deref() {
        Some("totp") if state.args.mfa.totp_enroll_enabled => "totp",
        Some("totp") => return Err(ErrorCode::MfaTotpEnrollNotEnabled.into()),
        Some("phone") => return Err(ErrorCode::MfaPhoneEnrollNotEnabled.into()),
        // A WebAuthn factor has no secret: its credential comes with its first challenge.
        Some("webauthn") if state.args.webauthn.enroll_enabled => "webauthn",
        Some("webauthn") => return Err(ErrorCode::MfaWebauthnEnrollNotEnabled.into()),
        _ => {
            return Err(AuthError::new(
                ErrorCode::ValidationFailed,
                "factor_type needs to be totp, phone, or webauthn",
            ))
        }
    };
    let friendly_name = body.friendly_name.unwrap_or_default().trim().to_string();
    if friendly_name.chars().count() > 255 {
        return Err(AuthError::new(
            ErrorCode::ValidationFailed,
            "friendly_name must be at most 255 characters",
        ));
    }
    // GoTrue's default issuer: the host of the site URL (here also the API's public URL).
    let issuer = nonempty(body.issuer)
        .or_else(|| host_of(state.args.site_url.as_deref().unwrap_or_default()))
        .or_else(|| host_of(&info.auth_base))
        .unwrap_or_else(|| "agencyflow".into());
    let account = user
        .email
        .clone()
        .filter(|e| !e.is_empty())
        .or_else(|| user.phone.clone().filter(|p| !p.is_empty()))
        .unwrap_or_else(|| user.id.to_string());
    let totp = if factor_type == "totp" {
        let mut secret = [0u8; 20];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let secret = base32_encode(&secret);
        let uri = otpauth_uri(&issuer, &account, &secret);
        let qr = qr_svg(&uri)?;
        Some((secret, uri, qr))
    } else {
        None
    };

    let mut tx = state.tx().await?;
    // The user's row lock makes the checks and the insert one step per user.
    tx.execute(
        "select 1 from auth.users where id = $1 for update",
        &[&user.id],
    )
    .await?;
    tx.execute(
        "delete from auth.mfa_factors f where f.user_id = $1 and f.status = 'unverified'
           and f.created_at < now() - make_interval(secs => $2::float8)
           and not exists (select 1 from auth.mfa_challenges c where c.factor_id = f.id)",
        &[&user.id, &FACTOR_EXPIRY_SECS],
    )
    .await?;
    let rows = tx
        .query(
            "select friendly_name, status from auth.mfa_factors where user_id = $1",
            &[&user.id],
        )
        .await?;
    let mut verified = 0u32;
    for r in &rows {
        let (name, status): (String, String) = (r.get(0), r.get(1));
        if !friendly_name.is_empty() && name == friendly_name {
            return Err(AuthError::new(
                ErrorCode::MfaFactorNameConflict,
                format!("A factor with the friendly name {friendly_name:?} for this user already exists"),
            ));
        }
        if status == "verified" {
            verified += 1;
        }
    }
    if rows.len() as u32 >= state.args.mfa.max_enrolled_factors
        || verified >= state.args.mfa.max_verified_factors
    {
        return Err(ErrorCode::TooManyEnrolledMfaFactors.into());
    }
    if verified > 0 && aal != "aal2" {
        return Err(ErrorCode::InsufficientAal.into());
    }
    let id: Uuid = tx
        .query_one(
            "insert into auth.mfa_factors (user_id, friendly_name, factor_type, status, secret)
             values ($1, $2, $3, 'unverified', $4) returning id",
            &[
                &user.id,
                &friendly_name,
                &factor_type,
                &totp.as_ref().map(|t| t.0.as_str()),
            ],
        )
        .await?
        .get(0);
    tx.commit().await?;
    let mut out = json!({ "id": id, "type": factor_type });
    if let Some((secret, uri, qr)) = totp {
        out["totp"] = json!({ "qr_code": qr, "secret": secret, "uri": uri });
    }
    if !friendly_name.is_empty() {
        out["friendly_name"] = json!(friendly_name);
    }
    Ok(Json(out).into_response())
}

fn host_of(url: &str) -> Option<String> {
    let rest = url.trim().split_once("://")?.1;
    let host = rest.split(['/', '?', '#']).next()?;
    let host = host.rsplit('@').next()?;
    (!host.is_empty()).then(|| host.to_string())
}

/// `POST /factors/{id}/challenge` (supabase-js `mfa.challenge`): `{id, type, expires_at}`.
pub async fn challenge(
    State(state): State<AuthState>,
    info: ReqInfo,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, AuthError> {
    rate_limit(&state, Limit::MfaChallengePerIp, &info.client.ip)?;
    let (user, _sid, _aal) = session_user(&state, &headers).await?;
    let factor_id = parse_factor_id(&id)?;
    let mut tx = state.tx().await?;
    let Some(row) = tx
        .query_opt(
            "update auth.mfa_factors set last_challenged_at = now()
             where id = $1 and user_id = $2 returning factor_type",
            &[&factor_id, &user.id],
        )
        .await?
    else {
        return Err(ErrorCode::MfaFactorNotFound.into());
    };
    let factor_type: String = row.get(0);
    if factor_type == "webauthn" {
        let out =
            crate::webauthn::challenge(&state, &mut tx, &user, factor_id, &info.client.ip).await?;
        tx.commit().await?;
        return Ok(Json(out).into_response());
    }
    if !state.args.mfa.totp_verify_enabled {
        return Err(ErrorCode::MfaTotpVerifyNotEnabled.into());
    }
    let row = tx
        .query_one(
            "insert into auth.mfa_challenges (factor_id, ip_address) values ($1, $2)
             returning id, extract(epoch from created_at)::bigint",
            &[&factor_id, &info.client.ip],
        )
        .await?;
    let (challenge_id, created): (Uuid, i64) = (row.get(0), row.get(1));
    tx.commit().await?;
    Ok(Json(json!({
        "id": challenge_id,
        "type": factor_type,
        "expires_at": created + state.args.mfa.challenge_expiry,
    }))
    .into_response())
}

#[derive(Deserialize, Default)]
struct VerifyBody {
    challenge_id: Option<String>,
    code: Option<String>,
    webauthn: Option<Value>,
}

/// The challenge `challenge_id` of the factor, locked in `tx`, if it may still be verified
/// (from the address that asked for it, unused, fresh), with its WebAuthn ceremony state; an
/// expired one is deleted (and `tx` committed).
pub(crate) async fn take_challenge(
    state: &AuthState,
    mut tx: agencyflow_db::ClaimsTxn,
    ip: &str,
    factor_id: Uuid,
    challenge_id: Uuid,
) -> Result<(agencyflow_db::ClaimsTxn, Option<Value>), AuthError> {
    let Some(challenge) = tx
        .query_opt(
            "select ip_address, verified_at is not null,
                    created_at > now() - make_interval(secs => $3::float8), web_authn_session_data
             from auth.mfa_challenges where id = $1 and factor_id = $2 for update",
            &[
                &challenge_id,
                &factor_id,
                &(state.args.mfa.challenge_expiry as f64),
            ],
        )
        .await?
    else {
        return Err(ErrorCode::MfaChallengeNotFound.into());
    };
    let (challenge_ip, used, fresh): (String, bool, bool) =
        (challenge.get(0), challenge.get(1), challenge.get(2));
    if used || challenge_ip != ip {
        return Err(ErrorCode::MfaIpAddressMismatch.into());
    }
    if !fresh {
        tx.execute(
            "delete from auth.mfa_challenges where id = $1",
            &[&challenge_id],
        )
        .await?;
        tx.commit().await?;
        return Err(AuthError::new(
            ErrorCode::MfaChallengeExpired,
            format!("MFA challenge {challenge_id} has expired, verify against another challenge or create a new challenge."),
        ));
    }
    Ok((tx, challenge.get(3)))
}

/// The session gains the second factor `factor_id` (of `factor_type`): its `amr` method first
/// (GoTrue: most recent first), `aal2`; its refresh tokens are replaced by a new one (one
/// issued before the second factor must not carry it); the user's `aal1` sessions end and
/// their other unverified factors of that type go, as in GoTrue. The new `amr` and token.
pub(crate) async fn raise_session(
    state: &AuthState,
    tx: &mut agencyflow_db::ClaimsTxn,
    user_id: Uuid,
    sid: Uuid,
    factor_id: Uuid,
    factor_type: &str,
) -> Result<(Value, String), AuthError> {
    let method = if factor_type == "webauthn" {
        "mfa/webauthn"
    } else {
        factor_type
    };
    let amr: Value = tx
        .query_opt(
            "select amr from auth.sessions where id = $1 and user_id = $2 for update",
            &[&sid, &user_id],
        )
        .await?
        .map(|r| r.get(0))
        .ok_or(ErrorCode::SessionNotFound)?;
    let mut entries: Vec<Value> = amr
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.get("method").and_then(Value::as_str) != Some(method))
        .collect();
    let now = chrono::Utc::now().timestamp();
    entries.insert(0, json!({ "method": method, "timestamp": now }));
    let amr = Value::Array(entries);
    tx.execute(
        "update auth.sessions set amr = $2, aal = 'aal2', factor_id = $3, updated_at = now()
         where id = $1",
        &[&sid, &amr, &factor_id],
    )
    .await?;
    let refresh = state.refresh_tokens().random();
    tx.execute(
        "with d as (delete from auth.refresh_tokens where session_id = $1)
         insert into auth.refresh_tokens (token_hash, user_id, session_id) values ($2, $3, $1)",
        &[&sid, &token_hash(&refresh), &user_id],
    )
    .await?;
    tx.execute(
        "delete from auth.sessions where user_id = $1 and id <> $2 and aal = 'aal1'",
        &[&user_id, &sid],
    )
    .await?;
    tx.execute(
        "delete from auth.mfa_factors where user_id = $1 and id <> $2
           and status = 'unverified' and factor_type = $3",
        &[&user_id, &factor_id, &factor_type],
    )
    .await?;
    Ok((amr, refresh))
}

/// `POST /factors/{id}/verify` (supabase-js `mfa.verify`): the code of the factor's secret
/// for the challenge → a Session at `aal2` (the same session, a new refresh token).
pub async fn verify(
    State(state): State<AuthState>,
    info: ReqInfo,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, AuthError> {
    let parsed: VerifyBody = parse_body(&body)?;
    rate_limit(&state, Limit::MfaVerifyPerIp, &info.client.ip)?;
    if parsed.webauthn.is_some() {
        let factor_id = parse_factor_id(&id)?;
        return crate::webauthn::verify(&state, &info, &headers, factor_id, &body).await;
    }
    let (user, sid, _aal) = session_user(&state, &headers).await?;
    let factor_id = parse_factor_id(&id)?;
    let code = nonempty(parsed.code)
        .ok_or_else(|| AuthError::new(ErrorCode::ValidationFailed, "Code needs to be non-empty"))?;
    rate_limit(&state, Limit::MfaVerifyPerFactor, &factor_id.to_string())?;
    let challenge_id = parsed
        .challenge_id
        .as_deref()
        .and_then(|c| Uuid::parse_str(c.trim()).ok())
        .ok_or(ErrorCode::MfaChallengeNotFound)?;
    let mut tx = state.tx().await?;
    let Some(factor) = tx
        .query_opt(
            "select secret, last_used_step, status, factor_type from auth.mfa_factors
             where id = $1 and user_id = $2 for update",
            &[&factor_id, &user.id],
        )
        .await?
    else {
        return Err(ErrorCode::MfaFactorNotFound.into());
    };
    let (secret, last_used, status, factor_type): (Option<String>, Option<i64>, String, String) =
        (factor.get(0), factor.get(1), factor.get(2), factor.get(3));
    if factor_type == "webauthn" {
        return Err(AuthError::new(
            ErrorCode::ValidationFailed,
            "WebAuthn config required",
        ));
    }
    if !state.args.mfa.totp_verify_enabled {
        return Err(ErrorCode::MfaTotpVerifyNotEnabled.into());
    }
    let (mut tx, _) = take_challenge(&state, tx, &info.client.ip, factor_id, challenge_id).await?;
    let key = secret
        .as_deref()
        .and_then(base32_decode)
        .ok_or_else(|| AuthError::internal("stored TOTP secret is not base32"))?;
    let now = chrono::Utc::now().timestamp();
    let Some(step) = matching_step(&key, &code, now, last_used) else {
        return Err(ErrorCode::MfaVerificationFailed.into());
    };
    tx.execute(
        "update auth.mfa_challenges set verified_at = now() where id = $1",
        &[&challenge_id],
    )
    .await?;
    tx.execute(
        "update auth.mfa_factors set status = 'verified', last_used_step = $2, updated_at = now()
         where id = $1",
        &[&factor_id, &step],
    )
    .await?;
    let (amr, refresh) = raise_session(&state, &mut tx, user.id, sid, factor_id, "totp").await?;
    let user = model::find_user(&mut tx, user.id)
        .await?
        .ok_or(ErrorCode::UserNotFoundFromJwt)?;
    tx.commit().await?;
    if status != "verified" {
        tracing::info!(user_id = %user.id, factor_id = %factor_id, "TOTP factor verified");
    }
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

/// `DELETE /factors/{id}` (supabase-js `mfa.unenroll`): `{id}`. A verified factor needs an
/// `aal2` session (422 insufficient_aal); its sessions drop to `aal1`.
pub async fn unenroll(
    State(state): State<AuthState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, AuthError> {
    let (user, _sid, aal) = session_user(&state, &headers).await?;
    let factor_id = parse_factor_id(&id)?;
    let mut tx = state.tx().await?;
    let status: String = tx
        .query_opt(
            "select status from auth.mfa_factors where id = $1 and user_id = $2 for update",
            &[&factor_id, &user.id],
        )
        .await?
        .map(|r| r.get(0))
        .ok_or(ErrorCode::MfaFactorNotFound)?;
    if status == "verified" && aal != "aal2" {
        return Err(ErrorCode::InsufficientAalToUnenroll.into());
    }
    downgrade_sessions(&mut tx, factor_id).await?;
    tx.execute("delete from auth.mfa_factors where id = $1", &[&factor_id])
        .await?;
    tx.commit().await?;
    Ok(Json(json!({ "id": factor_id })).into_response())
}

fn parse_user_id(id: &str) -> Result<Uuid, AuthError> {
    Uuid::parse_str(id)
        .map_err(|_| AuthError::new(ErrorCode::ValidationFailed, "user_id must be an UUID"))
}

/// `GET /admin/users/{id}/factors` (supabase-js `auth.admin.mfa.listFactors`): the factors.
pub async fn admin_list_factors(
    State(state): State<AuthState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, AuthError> {
    require_admin(&state, &headers)?;
    let user_id = parse_user_id(&id)?;
    let mut tx = state.tx().await?;
    let user = model::find_user(&mut tx, user_id)
        .await?
        .ok_or(ErrorCode::UserNotFound)?;
    tx.commit().await?;
    let factors: Vec<Value> = user
        .factors
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(model::factor_json)
        .collect();
    Ok(Json(factors).into_response())
}

/// `DELETE /admin/users/{id}/factors/{factor_id}` (supabase-js `auth.admin.mfa.deleteFactor`):
/// the deleted factor; its sessions drop to `aal1`.
pub async fn admin_delete_factor(
    State(state): State<AuthState>,
    headers: HeaderMap,
    Path((id, factor_id)): Path<(String, String)>,
) -> Result<Response, AuthError> {
    require_admin(&state, &headers)?;
    let user_id = parse_user_id(&id)?;
    let factor_id = parse_factor_id(&factor_id)?;
    let mut tx = state.tx().await?;
    if model::find_user(&mut tx, user_id).await?.is_none() {
        return Err(ErrorCode::UserNotFound.into());
    }
    let factor: Value = tx
        .query_opt(
            &format!(
                "select {} from auth.mfa_factors f where f.id = $1 and f.user_id = $2 for update",
                model::factor_json_sql("f")
            ),
            &[&factor_id, &user_id],
        )
        .await?
        .map(|r| r.get(0))
        .ok_or(ErrorCode::MfaFactorNotFound)?;
    downgrade_sessions(&mut tx, factor_id).await?;
    tx.execute("delete from auth.mfa_factors where id = $1", &[&factor_id])
        .await?;
    tx.commit().await?;
    Ok(Json(model::factor_json(factor)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_test_vectors() {
        // RFC 6238 appendix B (SHA1 seed "12345678901234567890"), last 6 digits.
        let seed = b"12345678901234567890";
        for (t, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
            (20_000_000_000, "353130"),
        ] {
            assert_eq!(hotp(seed, time_step(t) as u64), code, "t={t}");
        }
    }

    #[test]
    fn base32_round_trips() {
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32_decode("MZXW6YTBOI======").unwrap(), b"foobar");
        assert_eq!(base32_decode("mzxw6ytboi").unwrap(), b"foobar");
        let secret = [7u8; 20];
        let e = base32_encode(&secret);
        assert_eq!(e.len(), 32);
        assert_eq!(base32_decode(&e).unwrap(), secret);
        assert!(base32_decode("not base32!").is_none());
    }

    #[test]
    fn codes_match_within_one_step_and_once() {
        let key = b"a-secret-of-twenty-b";
        let now = 1_700_000_015;
        let step = time_step(now);
        let code = |s: i64| hotp(key, s as u64);
        assert_eq!(matching_step(key, &code(step), now, None), Some(step));
        assert_eq!(
            matching_step(key, &code(step - 1), now, None),
            Some(step - 1)
        );
        assert_eq!(
            matching_step(key, &code(step + 1), now, None),
            Some(step + 1)
        );
        assert_eq!(matching_step(key, &code(step - 2), now, None), None);
        assert_eq!(matching_step(key, &code(step + 2), now, None), None);
        // A step already used (or an older one) is refused.
        assert_eq!(matching_step(key, &code(step), now, Some(step)), None);
        assert_eq!(matching_step(key, &code(step - 1), now, Some(step)), None);
        assert_eq!(
            matching_step(key, &code(step + 1), now, Some(step)),
            Some(step + 1)
        );
        assert_eq!(matching_step(key, "12345", now, None), None);
        assert_eq!(matching_step(key, "abcdef", now, None), None);
    }

    #[test]
    fn uri_and_qr_code() {
        let uri = otpauth_uri("app.example.com", "ada@example.com", "ABC");
        assert_eq!(
            uri,
            "otpauth://totp/app.example.com:ada@example.com?algorithm=SHA1&digits=6&issuer=app.example.com&period=30&secret=ABC"
        );
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
        assert!(!svg.contains('#'));
        assert_eq!(
            host_of("https://app.example.com/x"),
            Some("app.example.com".into())
        );
        assert_eq!(host_of(""), None);
    }
}
