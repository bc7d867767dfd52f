//! Passkeys: sign-in with a discoverable WebAuthn credential, as GoTrue's `/passkeys` API
//! (supabase-js `auth.registerPasskey()`, `signInWithPasskey()`, `auth.passkey.*`,
//! `auth.admin.passkey.*`; experimental opt-in in supabase-js 2.109). Off unless
//! `GOTRUE_PASSKEY_ENABLED=true` (every route then answers 404 `passkey_disabled`).
//!
//! The ceremonies are [`crate::webauthn`]'s (same relying party, same checks); what is
//! passkey-specific: credentials live in `auth.webauthn_credentials` (not in factors), the
//! ceremony state in `auth.webauthn_challenges` (consumed atomically by its delete, bound to the
//! user for a registration and to no user for a sign-in, so one kind can never be replayed as
//! the other), registration asks for a resident key, and sign-in is discoverable: no
//! `allowCredentials`, the account comes from the credential (its user handle must agree).
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::admin::require_admin;
use crate::error::{AuthError, ErrorCode};
use crate::handlers::{parse_body, rate_limit, ReqInfo};
use crate::model::{self, ts};
use crate::ratelimit::Limit;
use crate::webauthn::{
    b64url, relying_party, verify_assertion, verify_registration, Refused, StoredCredential,
};
use crate::AuthState;

fn enabled(state: &AuthState) -> Result<crate::webauthn::RelyingParty, AuthError> {
    if !state.args.webauthn.passkey_enabled {
        return Err(ErrorCode::PasskeyDisabled.into());
    }
    relying_party(&state.args).map_err(|(s, e)| AuthError::internal(format!("{s}: {e}")))
}

fn new_challenge() -> String {
    let mut c = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut c);
    b64url(&c)
}

fn verification_failed(Refused(why): Refused) -> AuthError {
    AuthError::new(
        ErrorCode::WebauthnVerificationFailed,
        format!("Credential verification failed: {why}"),
    )
}

fn parse_uuid(s: &str, what: &'static str) -> Result<Uuid, AuthError> {
    Uuid::parse_str(s.trim()).map_err(|_| {
        AuthError::new(
            ErrorCode::ValidationFailed,
            format!("{what} must be a valid UUID"),
        )
    })
}

#[derive(Deserialize, Default)]
struct VerifyBody {
    challenge_id: Option<String>,
    credential: Option<Value>,
}

impl VerifyBody {
    fn parts(self) -> Result<(Uuid, Value), AuthError> {
        let id = self
            .challenge_id
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| {
                AuthError::new(ErrorCode::ValidationFailed, "challenge_id is required")
            })?;
        let cred = self
            .credential
            .filter(|c| !c.is_null())
            .ok_or_else(|| AuthError::new(ErrorCode::ValidationFailed, "credential is required"))?;
        Ok((parse_uuid(&id, "challenge_id")?, cred))
    }
}

/// Deletes (consumes) a challenge of `kind` for `user` (none for a sign-in): its ceremony
/// state, or 400 `webauthn_challenge_not_found` / `webauthn_challenge_expired`.
async fn consume_challenge(
    tx: &mut agencyflow_db::ClaimsTxn,
    id: Uuid,
    kind: &str,
    user: Option<Uuid>,
) -> Result<Result<Value, AuthError>, AuthError> {
    let row = tx
        .query_opt(
            "delete from auth.webauthn_challenges
             where id = $1 and challenge_type = $2 and user_id is not distinct from $3
             returning session_data, expires_at <= now()",
            &[&id, &kind, &user],
        )
        .await?;
    Ok(match row {
        None => Err(AuthError::new(
            ErrorCode::WebauthnChallengeNotFound,
            "Challenge not found or already used",
        )),
        Some(r) if r.get::<_, bool>(1) => Err(AuthError::new(
            ErrorCode::WebauthnChallengeExpired,
            "Challenge has expired",
        )),
        Some(r) => Ok(r.get(0)),
    })
}

fn challenge_bytes(session: &Value) -> Vec<u8> {
    session
        .get("challenge")
        .and_then(Value::as_str)
        .and_then(|c| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(c)
                .ok()
        })
        .unwrap_or_default()
}

/// Passkeys are managed from an `aal2` session when the user has a verified factor.
async fn require_management_aal(
    tx: &mut agencyflow_db::ClaimsTxn,
    user_id: Uuid,
    aal: &str,
) -> Result<(), AuthError> {
    let has_factor: bool = tx
        .query_one(
            "select exists (select 1 from auth.mfa_factors where user_id = $1 and status = 'verified')",
            &[&user_id],
        )
        .await?
        .get(0);
    if has_factor && aal != "aal2" {
        return Err(AuthError::new(
            ErrorCode::InsufficientAal,
            "AAL2 required to manage passkeys",
        ));
    }
    Ok(())
}

/// `POST /passkeys/registration/options` (signed in): `{challenge_id, options, expires_at}`.
pub async fn registration_options(
    State(state): State<AuthState>,
    headers: HeaderMap,
) -> Result<Response, AuthError> {
    let rp = enabled(&state)?;
    let (user, _sid, aal) = crate::mfa::session_user(&state, &headers).await?;
    if user.is_anonymous {
        return Err(AuthError::new(
            ErrorCode::ValidationFailed,
            "Anonymous users cannot register passkeys",
        ));
    }
    let mut tx = state.tx().await?;
    require_management_aal(&mut tx, user.id, &aal).await?;
    let existing: Vec<Value> = tx
        .query(
            "select credential_id from auth.webauthn_credentials where user_id = $1 order by created_at",
            &[&user.id],
        )
        .await?
        .iter()
        .map(|r| json!({ "type": "public-key", "id": b64url(&r.get::<_, Vec<u8>>(0)) }))
        .collect();
    if existing.len() as u32 >= state.args.webauthn.passkey_max_per_user {
        return Err(AuthError::new(
            ErrorCode::TooManyPasskeys,
            "Maximum number of passkeys reached",
        ));
    }
    let challenge = new_challenge();
    let name = user
        .email
        .clone()
        .filter(|e| !e.is_empty())
        .or_else(|| user.phone.clone().filter(|p| !p.is_empty()))
        .unwrap_or_else(|| user.id.to_string());
    let expiry = state.args.webauthn.passkey_challenge_expiry;
    let options = json!({
        "challenge": challenge,
        "rp": { "name": rp.name, "id": rp.id },
        "user": { "name": name, "displayName": name, "id": b64url(user.id.to_string().as_bytes()) },
        "pubKeyCredParams": [{ "type": "public-key", "alg": -7 }],
        "timeout": expiry * 1000,
        "excludeCredentials": existing,
        "authenticatorSelection": {
            "residentKey": "required",
            "requireResidentKey": true,
            "userVerification": rp.user_verification,
        },
        "attestation": "none",
    });
    let row = tx
        .query_one(
            "insert into auth.webauthn_challenges (user_id, challenge_type, session_data, expires_at)
             values ($1, 'registration', $2, now() + make_interval(secs => $3::float8))
             returning id, extract(epoch from expires_at)::bigint",
            &[&user.id, &json!({ "challenge": challenge, "user_id": user.id }), &(expiry as f64)],
        )
        .await?;
    let (id, expires_at): (Uuid, i64) = (row.get(0), row.get(1));
    tx.commit().await?;
    Ok(
        Json(json!({ "challenge_id": id, "options": options, "expires_at": expires_at }))
            .into_response(),
    )
}

/// `POST /passkeys/registration/verify` `{challenge_id, credential}` (signed in): the new
/// passkey's `{id, friendly_name?, created_at}`.
pub async fn registration_verify(
    State(state): State<AuthState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AuthError> {
    let rp = enabled(&state)?;
    let (user, _sid, aal) = crate::mfa::session_user(&state, &headers).await?;
    let (challenge_id, credential) = parse_body::<VerifyBody>(&body)?.parts()?;
    let mut tx = state.tx().await?;
    require_management_aal(&mut tx, user.id, &aal).await?;
    let session =
        match consume_challenge(&mut tx, challenge_id, "registration", Some(user.id)).await? {
            Ok(s) => s,
            Err(e) => {
                tx.commit().await?;
                return Err(e);
            }
        };
    let cred = match verify_registration(&rp, &challenge_bytes(&session), &credential) {
        Ok(c) => c,
        Err(r) => {
            tx.commit().await?;
            return Err(verification_failed(r));
        }
    };
    // The user's row lock makes the count and the insert one step.
    tx.execute(
        "select 1 from auth.users where id = $1 for update",
        &[&user.id],
    )
    .await?;
    let (count, exists): (i64, bool) = {
        let r = tx
            .query_one(
                "select (select count(*) from auth.webauthn_credentials where user_id = $1),
                        exists (select 1 from auth.webauthn_credentials where credential_id = $2)",
                &[&user.id, &cred.id],
            )
            .await?;
        (r.get(0), r.get(1))
    };
    if exists {
        tx.commit().await?;
        return Err(AuthError::new(
            ErrorCode::WebauthnCredentialExists,
            "This credential is already registered",
        ));
    }
    if count >= i64::from(state.args.webauthn.passkey_max_per_user) {
        tx.commit().await?;
        return Err(AuthError::new(
            ErrorCode::TooManyPasskeys,
            "Maximum number of passkeys reached",
        ));
    }
    let key = cred.public_key_raw.clone();
    let row = tx
        .query_one(
            "insert into auth.webauthn_credentials (user_id, credential_id, public_key, aaguid,
               sign_count, transports, backup_eligible, backed_up)
             values ($1, $2, $3, $4, $5, $6, $7, $8) returning id, created_at",
            &[
                &user.id,
                &cred.id,
                &key,
                &cred.aaguid,
                &i64::from(cred.sign_count),
                &json!(cred.transports),
                &(cred.flags & 0x08 != 0),
                &(cred.flags & 0x10 != 0),
            ],
        )
        .await?;
    let (id, created): (Uuid, chrono::DateTime<chrono::Utc>) = (row.get(0), row.get(1));
    tx.commit().await?;
    tracing::info!(user_id = %user.id, passkey_id = %id, "passkey registered");
    Ok(Json(json!({ "id": id, "created_at": ts(created) })).into_response())
}

/// `POST /passkeys/authentication/options` (no session): a discoverable sign-in ceremony.
pub async fn authentication_options(
    State(state): State<AuthState>,
    info: ReqInfo,
) -> Result<Response, AuthError> {
    let rp = enabled(&state)?;
    rate_limit(&state, Limit::SignInSignUpsPerIp, &info.client.ip)?;
    let challenge = new_challenge();
    let expiry = state.args.webauthn.passkey_challenge_expiry;
    let mut tx = state.tx().await?;
    // Sign-in challenges nobody answered are not kept.
    tx.execute(
        "delete from auth.webauthn_challenges where expires_at < now() - interval '1 hour'",
        &[],
    )
    .await?;
    let row = tx
        .query_one(
            "insert into auth.webauthn_challenges (user_id, challenge_type, session_data, expires_at)
             values (null, 'authentication', $1, now() + make_interval(secs => $2::float8))
             returning id, extract(epoch from expires_at)::bigint",
            &[&json!({ "challenge": challenge }), &(expiry as f64)],
        )
        .await?;
    let (id, expires_at): (Uuid, i64) = (row.get(0), row.get(1));
    tx.commit().await?;
    Ok(Json(json!({
        "challenge_id": id,
        "options": {
            "challenge": challenge,
            "timeout": expiry * 1000,
            "rpId": rp.id,
            "allowCredentials": [],
            "userVerification": rp.user_verification,
        },
        "expires_at": expires_at,
    }))
    .into_response())
}

/// `POST /passkeys/authentication/verify` `{challenge_id, credential}`: a new session (amr
/// `passkey`), for a user whose address is confirmed and who is not banned.
pub async fn authentication_verify(
    State(state): State<AuthState>,
    info: ReqInfo,
    body: Bytes,
) -> Result<Response, AuthError> {
    let rp = enabled(&state)?;
    rate_limit(&state, Limit::SignInSignUpsPerIp, &info.client.ip)?;
    let (challenge_id, credential) = parse_body::<VerifyBody>(&body)?.parts()?;
    let mut tx = state.tx().await?;
    let session = match consume_challenge(&mut tx, challenge_id, "authentication", None).await? {
        Ok(s) => s,
        Err(e) => {
            tx.commit().await?;
            return Err(e);
        }
    };
    // From here the challenge is spent whatever the outcome: a refusal commits its deletion.
    let cred_id = credential
        .get("rawId")
        .or_else(|| credential.get("id"))
        .and_then(Value::as_str)
        .and_then(crate::webauthn::b64url_decode);
    let row = match &cred_id {
        Some(id) => {
            tx.query_opt(
                "select id, user_id, public_key, sign_count from auth.webauthn_credentials
                 where credential_id = $1 for update",
                &[&id],
            )
            .await?
        }
        None => None,
    };
    let Some(row) = row else {
        return refuse(
            tx,
            AuthError::new(
                ErrorCode::WebauthnCredentialNotFound,
                "This passkey is not registered",
            ),
        )
        .await;
    };
    let (passkey_id, user_id, public_key, sign_count): (Uuid, Uuid, Vec<u8>, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let stored = StoredCredential::from_json(&json!({
        "id": b64url(&cred_id.unwrap_or_default()),
        "public_key": b64url(&public_key),
        "sign_count": sign_count,
    }))
    .map_err(|e| AuthError::internal(format!("stored passkey: {e}")))?;
    // A discoverable credential names its account: it must be the credential's.
    let handle = credential
        .pointer("/response/userHandle")
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty());
    if handle.is_none() {
        return refuse(
            tx,
            verification_failed(Refused("the user handle is missing".into())),
        )
        .await;
    }
    let assertion = match verify_assertion(
        &rp,
        &challenge_bytes(&session),
        &stored,
        user_id.to_string().as_bytes(),
        &credential,
    ) {
        Ok(a) => a,
        Err(r) => return refuse(tx, verification_failed(r)).await,
    };
    let Some(user) = model::find_user(&mut tx, user_id).await? else {
        return refuse(tx, ErrorCode::WebauthnCredentialNotFound.into()).await;
    };
    if user.email.as_deref().is_some_and(|e| !e.is_empty()) && user.email_confirmed_at.is_none() {
        return refuse(tx, ErrorCode::PasskeyEmailNotConfirmed.into()).await;
    }
    if user.phone.as_deref().is_some_and(|p| !p.is_empty()) && user.phone_confirmed_at.is_none() {
        return refuse(tx, ErrorCode::PasskeyPhoneNotConfirmed.into()).await;
    }
    if user.is_banned() {
        return refuse(tx, ErrorCode::PasskeyUserBanned.into()).await;
    }
    tx.execute(
        "update auth.webauthn_credentials set sign_count = $2, last_used_at = now(),
           updated_at = now() where id = $1",
        &[&passkey_id, &i64::from(assertion.sign_count)],
    )
    .await?;
    tx.execute(
        "update auth.users set last_sign_in_at = now(), updated_at = now() where id = $1",
        &[&user.id],
    )
    .await?;
    let (sid, refresh, amr) =
        model::create_session(&state, &mut tx, user.id, "passkey", &info.client).await?;
    let user = model::find_user(&mut tx, user.id)
        .await?
        .ok_or(ErrorCode::UserNotFound)?;
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

async fn refuse(tx: agencyflow_db::ClaimsTxn, e: AuthError) -> Result<Response, AuthError> {
    tx.commit().await?;
    Err(e)
}

fn passkey_json(r: &agencyflow_db::tokio_postgres::Row) -> Value {
    let mut o = json!({
        "id": r.get::<_, Uuid>("id"),
        "created_at": ts(r.get("created_at")),
    });
    let name: String = r.get("friendly_name");
    if !name.is_empty() {
        o["friendly_name"] = json!(name);
    }
    if let Some(t) = r.get::<_, Option<chrono::DateTime<chrono::Utc>>>("last_used_at") {
        o["last_used_at"] = json!(ts(t));
    }
    o
}

const PASSKEY_COLUMNS: &str = "id, friendly_name, created_at, last_used_at";

async fn list_of(state: &AuthState, user_id: Uuid) -> Result<Vec<Value>, AuthError> {
    let mut tx = state.tx().await?;
    let rows = tx
        .query(
            &format!("select {PASSKEY_COLUMNS} from auth.webauthn_credentials where user_id = $1 order by created_at, id"),
            &[&user_id],
        )
        .await?;
    tx.commit().await?;
    Ok(rows.iter().map(passkey_json).collect())
}

/// `GET /passkeys` (signed in): `[{id, friendly_name?, created_at, last_used_at?}]`.
pub async fn list(
    State(state): State<AuthState>,
    headers: HeaderMap,
) -> Result<Response, AuthError> {
    enabled(&state)?;
    let (user, _sid, _aal) = crate::mfa::session_user(&state, &headers).await?;
    Ok(Json(list_of(&state, user.id).await?).into_response())
}

#[derive(Deserialize, Default)]
struct UpdateBody {
    friendly_name: Option<String>,
}

/// `PATCH /passkeys/{id}` `{friendly_name}` (signed in, at most 120 characters).
pub async fn update(
    State(state): State<AuthState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, AuthError> {
    enabled(&state)?;
    let (user, _sid, aal) = crate::mfa::session_user(&state, &headers).await?;
    let id = parse_uuid(&id, "passkey id")?;
    let name = parse_body::<UpdateBody>(&body)?
        .friendly_name
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| AuthError::new(ErrorCode::ValidationFailed, "friendly_name is required"))?;
    if name.chars().count() > 120 {
        return Err(AuthError::new(
            ErrorCode::ValidationFailed,
            "friendly_name must be at most 120 characters",
        ));
    }
    let mut tx = state.tx().await?;
    require_management_aal(&mut tx, user.id, &aal).await?;
    let row = tx
        .query_opt(
            &format!(
                "update auth.webauthn_credentials set friendly_name = $3, updated_at = now()
                 where id = $1 and user_id = $2 returning {PASSKEY_COLUMNS}"
            ),
            &[&id, &user.id, &name],
        )
        .await?
        .ok_or(ErrorCode::WebauthnCredentialNotFound)?;
    tx.commit().await?;
    Ok(Json(passkey_json(&row)).into_response())
}

/// `DELETE /passkeys/{id}` (signed in): 204.
pub async fn delete(
    State(state): State<AuthState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, AuthError> {
    enabled(&state)?;
    let (user, _sid, aal) = crate::mfa::session_user(&state, &headers).await?;
    let id = parse_uuid(&id, "passkey id")?;
    let mut tx = state.tx().await?;
    require_management_aal(&mut tx, user.id, &aal).await?;
    let n = tx
        .execute(
            "delete from auth.webauthn_credentials where id = $1 and user_id = $2",
            &[&id, &user.id],
        )
        .await?;
    if n == 0 {
        return Err(ErrorCode::WebauthnCredentialNotFound.into());
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /admin/users/{id}/passkeys` (admin).
pub async fn admin_list(
    State(state): State<AuthState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, AuthError> {
    require_admin(&state, &headers)?;
    enabled(&state)?;
    let user_id = parse_uuid(&id, "user_id")?;
    Ok(Json(list_of(&state, user_id).await?).into_response())
}

/// `DELETE /admin/users/{id}/passkeys/{passkey_id}` (admin): 204.
pub async fn admin_delete(
    State(state): State<AuthState>,
    headers: HeaderMap,
    Path((id, passkey_id)): Path<(String, String)>,
) -> Result<Response, AuthError> {
    require_admin(&state, &headers)?;
    enabled(&state)?;
    let user_id = parse_uuid(&id, "user_id")?;
    let passkey_id = parse_uuid(&passkey_id, "passkey_id")?;
    let mut tx = state.tx().await?;
    let n = tx
        .execute(
            "delete from auth.webauthn_credentials where id = $1 and user_id = $2",
            &[&passkey_id, &user_id],
        )
        .await?;
    if n == 0 {
        return Err(ErrorCode::WebauthnCredentialNotFound.into());
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
