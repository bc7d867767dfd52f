//! Sign-in with external providers (OAuth 2.0 / OpenID Connect), as GoTrue does it:
//!
//! - `GET /authorize?provider&redirect_to&scopes&code_challenge&code_challenge_method`: 302 to
//!   the provider with a signed `state` (provider, where to return, the PKCE flow state, the
//!   OpenID `nonce`, the linking target; 5 minutes) and, for PKCE, an `auth.flow_state` row
//!   without a user yet.
//! - `GET|POST /callback?code&state`: the code is exchanged at the provider's token
//!   endpoint, the user read from the verified ID token (JWKS, `iss`, `aud`, `exp`, `nonce`)
//!   or the provider's API, found or created with GoTrue's account-linking rules (an
//!   identity with this subject; else a user with the same **verified** address; else a new
//!   user), recorded in `auth.identities`; then 302 to `redirect_to` with the session in the
//!   fragment (implicit) or `?code=` (PKCE, exchanged at `/token?grant_type=pkce`). Errors
//!   go to the same place as `error`, `error_code`, `error_description`.
//! - `POST /token?grant_type=id_token` (`signInWithIdToken`): a provider's ID token verified
//!   against its JWKS, the nonce as `sha256(nonce)` hex.
//! - `GET /user/identities/authorize` (`linkIdentity`) and `DELETE /user/identities/{id}`
//!   (`unlinkIdentity`), behind `GOTRUE_SECURITY_MANUAL_LINKING_ENABLED`.
pub mod provider;

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{AuthError, ErrorCode};
use crate::handlers::{authenticated, nonempty, parse_body, ReqInfo};
use crate::model::{self, User};
use crate::AuthState;
use provider::{Kind, ProviderError, Settings, UserData};

pub use provider::ExternalArgs;

/// How long the provider may keep the user (GoTrue's state lifetime).
const STATE_SECS: u64 = 300;

/// What survives the round trip through the provider, signed by us.
#[derive(Debug, Serialize, Deserialize)]
struct FlowClaims {
    provider: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    referrer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    flow_state_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    linking_target_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nonce: Option<String>,
    exp: u64,
}

/// The key the `state` is signed with: derived from the project's keys for this purpose only,
/// so a state is never a token any surface would accept, nor the other way round.
pub(crate) struct StateKey([u8; 32]);

impl StateKey {
    pub(crate) fn new(keys: &crate::JwtKeys) -> Self {
        let material = keys
            .sign_hs256(&json!({ "purpose": "oauth-state" }))
            .unwrap_or_default();
        StateKey(Sha256::digest(material.as_bytes()).into())
    }

    fn mac(&self, payload: &str) -> Vec<u8> {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        m.update(payload.as_bytes());
        m.finalize().into_bytes().to_vec()
    }

    fn sign(&self, claims: &FlowClaims) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = b64.encode(serde_json::to_vec(claims).expect("serializable"));
        let sig = b64.encode(self.mac(&payload));
        format!("{payload}.{sig}")
    }

    fn verify(&self, state: &str) -> Option<FlowClaims> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (payload, sig) = state.split_once('.')?;
        let sig = b64.decode(sig).ok()?;
        let mut m = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        m.update(payload.as_bytes());
        m.verify_slice(&sig).ok()?;
        let claims: FlowClaims = serde_json::from_slice(&b64.decode(payload).ok()?).ok()?;
        (claims.exp > unix_now() && !claims.provider.is_empty()).then_some(claims)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::thread_rng().gen();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn params_of(raw: Option<&str>, body: Option<&[u8]>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    if let Some(b) = body {
        out.extend(form_urlencoded::parse(b).into_owned());
    }
    out
}

fn param(params: &[(String, String)], name: &str) -> Option<String> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .filter(|v| !v.trim().is_empty())
}

/// The callback URL registered with the provider.
fn redirect_uri(s: &Settings, info: &ReqInfo) -> String {
    s.redirect_uri
        .clone()
        .unwrap_or_else(|| format!("{}/callback", info.auth_base))
}

fn provider_failure(e: ProviderError) -> AuthError {
    match e {
        ProviderError::BadIdToken(m) => {
            tracing::warn!(reason = %m, "external provider: ID token refused");
            AuthError::new(
                ErrorCode::UnexpectedFailure,
                format!("Error getting user profile from external provider: {m}"),
            )
        }
        ProviderError::Unavailable(m) => {
            tracing::error!(error = %m, "external provider: request failed");
            AuthError::new(
                ErrorCode::UnexpectedFailure,
                "Error getting user profile from external provider",
            )
        }
    }
}

/// Starts a flow: the provider's authorization URL with our signed state.
async fn start_flow(
    state: &AuthState,
    info: &ReqInfo,
    params: &[(String, String)],
    linking_target: Option<Uuid>,
) -> Result<String, AuthError> {
    let name = param(params, "provider").unwrap_or_default();
    let s = state.args.external.oauth_provider(&name).map_err(|e| {
        AuthError::new(
            ErrorCode::ValidationFailed,
            format!("Unsupported provider: {e}"),
        )
    })?;
    let referrer = crate::otp::redirect_target(state, param(params, "redirect_to").as_deref());
    let pkce = crate::otp::Pkce::from_request(
        param(params, "code_challenge"),
        param(params, "code_challenge_method"),
    )?;
    let flow_state_id =
        match pkce {
            Some(p) => {
                // A PKCE start writes a flow-state row for anyone who asks: limited per client
                // IP like sign-ins, so the table cannot be filled by a loop of anonymous calls.
                crate::handlers::rate_limit(
                    state,
                    crate::ratelimit::Limit::SignInSignUpsPerIp,
                    &info.client.ip,
                )?;
                let mut tx = state.tx().await?;
                crate::otp::sweep_flow_states(&mut tx).await?;
                let id: Uuid = tx
                .query_one(
                    "insert into auth.flow_state (auth_code, code_challenge_method, code_challenge,
                         authentication_method, provider_type)
                     values ($1, $2, $3, 'oauth', $4) returning id",
                    &[&Uuid::new_v4().to_string(), &p.method, &p.challenge, &s.kind.name()],
                )
                .await?
                .get(0);
                tx.commit().await?;
                Some(id)
            }
            None => None,
        };
    let nonce = s.kind.is_oidc().then(random_token);
    let claims = FlowClaims {
        provider: s.kind.name().into(),
        referrer,
        flow_state_id,
        linking_target_id: linking_target,
        nonce: nonce.clone(),
        exp: unix_now() + STATE_SECS,
    };
    let signed = state.state_key().sign(&claims);
    // Other query parameters go to the provider as they are (e.g. Google's `prompt`,
    // `access_type`), as GoTrue passes them.
    const OURS: &[&str] = &[
        "provider",
        "scopes",
        "code_challenge",
        "code_challenge_method",
        "redirect_to",
        "skip_http_redirect",
        "client_id",
        "redirect_uri",
        "response_type",
        "scope",
        "state",
        "nonce",
        "apikey",
    ];
    let extra: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| !OURS.contains(&k.as_str()))
        .cloned()
        .collect();
    state
        .external()
        .authorization_url(
            &s,
            &redirect_uri(&s, info),
            &signed,
            param(params, "scopes").as_deref(),
            nonce.as_deref(),
            &extra,
        )
        .await
        .map_err(|e| {
            tracing::error!(error = %e, provider = s.kind.name(), "external provider: discovery failed");
            AuthError::new(
                ErrorCode::UnexpectedFailure,
                "Error reaching the external provider",
            )
        })
}

fn found(location: &str, status: StatusCode) -> Response {
    let mut r = status.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// `GET /authorize`: 302 to the provider.
pub async fn authorize(
    State(state): State<AuthState>,
    info: ReqInfo,
    RawQuery(raw): RawQuery,
) -> Result<Response, AuthError> {
    let params = params_of(raw.as_deref(), None);
    let url = start_flow(&state, &info, &params, None).await?;
    Ok(found(&url, StatusCode::FOUND))
}

/// The OAuth `error` of a failure, as GoTrue's `getErrorQueryString` maps it.
fn error_params(e: &AuthError) -> Vec<(&'static str, String)> {
    match e {
        AuthError::Api { code, message, .. } => {
            let error = match code {
                ErrorCode::SignupDisabled
                | ErrorCode::UserBanned
                | ErrorCode::ProviderEmailNeedsVerification => "access_denied",
                c => match c.status().as_u16() {
                    400 => "invalid_request",
                    401 => "unauthorized_client",
                    403 => "access_denied",
                    503 => "temporarily_unavailable",
                    _ => "server_error",
                },
            };
            vec![
                ("error", error.to_string()),
                ("error_code", code.as_str().to_string()),
                ("error_description", message.to_string()),
            ]
        }
        AuthError::OAuth { error, description } => vec![
            ("error", error.to_string()),
            ("error_description", description.to_string()),
        ],
    }
}

/// `target` with the error in its query (kept parameters) and, as GoTrue still does, its
/// fragment.
fn error_location(target: &str, e: &AuthError) -> String {
    let base = target.split('#').next().unwrap_or(target);
    let (path, query) = base.split_once('?').unwrap_or((base, ""));
    let errs = error_params(e);
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if !errs.iter().any(|(n, _)| *n == k) {
            q.append_pair(&k, &v);
        }
    }
    let mut f = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &errs {
        q.append_pair(k, v);
        f.append_pair(k, v);
    }
    format!("{path}?{}#{}", q.finish(), f.finish())
}

/// Maps a provider's `error` to the OAuth error names (anything else is `server_error`).
fn provider_error_name(e: &str) -> &'static str {
    match e {
        "access_denied" => "access_denied",
        "invalid_request" => "invalid_request",
        "unauthorized_client" => "unauthorized_client",
        "unsupported_response_type" => "unsupported_response_type",
        "invalid_scope" => "invalid_scope",
        "temporarily_unavailable" => "temporarily_unavailable",
        "login_required" => "login_required",
        "consent_required" => "consent_required",
        "interaction_required" => "interaction_required",
        _ => "server_error",
    }
}

/// `GET|POST /callback`: the provider sends the browser back here.
pub async fn callback(
    State(state): State<AuthState>,
    info: ReqInfo,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let form = method == Method::POST
        && headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let params = params_of(raw.as_deref(), form.then_some(&body[..]));
    let claims = match param(&params, "state") {
        None => Err(AuthError::new(
            ErrorCode::BadOAuthCallback,
            "OAuth state parameter missing",
        )),
        Some(s) => state
            .state_key()
            .verify(&s)
            .ok_or_else(|| ErrorCode::BadOAuthState.into()),
    };
    let claims = match claims {
        Ok(c) => c,
        Err(e) => {
            // No trustworthy return address: the site URL (303), as GoTrue.
            let site = state.args.site_url.clone().unwrap_or_default();
            if site.is_empty() {
                return e.into_response();
            }
            let mut loc = error_location(&site, &e);
            loc.truncate(loc.find('#').unwrap_or(loc.len()));
            return found(&loc, StatusCode::SEE_OTHER);
        }
    };
    let target = if claims.referrer.is_empty() {
        state.args.site_url.clone().unwrap_or_default()
    } else {
        claims.referrer.clone()
    };
    match finish_flow(&state, &info, &claims, &params).await {
        Ok(Finished::Code(code)) if !target.is_empty() => {
            let base = target.split('#').next().unwrap_or(&target);
            let mut u = form_urlencoded::Serializer::new(String::new());
            u.append_pair("code", &code);
            let sep = if base.contains('?') { '&' } else { '?' };
            found(&format!("{base}{sep}{}", u.finish()), StatusCode::FOUND)
        }
        Ok(Finished::Session(s, provider_tokens)) if !target.is_empty() => {
            let base = target.split('#').next().unwrap_or(&target);
            let mut f = form_urlencoded::Serializer::new(String::new());
            f.append_pair(
                "access_token",
                s["access_token"].as_str().unwrap_or_default(),
            )
            .append_pair("expires_at", &s["expires_at"].to_string())
            .append_pair("expires_in", &s["expires_in"].to_string())
            .append_pair("provider_token", &provider_tokens.0);
            if let Some(r) = &provider_tokens.1 {
                f.append_pair("provider_refresh_token", r);
            }
            f.append_pair(
                "refresh_token",
                s["refresh_token"].as_str().unwrap_or_default(),
            )
            .append_pair("token_type", "bearer");
            found(&format!("{base}#{}", f.finish()), StatusCode::FOUND)
        }
        Ok(Finished::Code(code)) => Json(json!({ "code": code })).into_response(),
        Ok(Finished::Session(s, _)) => Json(s).into_response(),
        Err(e) if target.is_empty() => e.into_response(),
        Err(e) => found(&error_location(&target, &e), StatusCode::FOUND),
    }
}

enum Finished {
    /// PKCE: the flow's auth code.
    Code(String),
    /// Implicit: the session, and the provider's access and refresh tokens.
    Session(Value, (String, Option<String>)),
}

async fn finish_flow(
    state: &AuthState,
    info: &ReqInfo,
    claims: &FlowClaims,
    params: &[(String, String)],
) -> Result<Finished, AuthError> {
    if let Some(err) = param(params, "error") {
        return Err(AuthError::OAuth {
            error: provider_error_name(&err),
            description: param(params, "error_description")
                .unwrap_or_default()
                .into(),
        });
    }
    let code = param(params, "code").ok_or_else(|| {
        AuthError::new(
            ErrorCode::BadOAuthCallback,
            "OAuth callback with missing authorization code missing",
        )
    })?;
    let s = state
        .args
        .external
        .oauth_provider(&claims.provider)
        .map_err(|e| {
            AuthError::new(
                ErrorCode::OAuthProviderNotSupported,
                format!("Unsupported provider: {e}"),
            )
        })?;
    let client = state.external();
    let tokens = client
        .exchange(&s, &code, &redirect_uri(&s, info))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, provider = s.kind.name(), "external provider: code exchange failed");
            AuthError::new(ErrorCode::UnexpectedFailure, "Unable to exchange external code")
        })?;
    let user_data = client
        .user(&s, &tokens, claims.nonce.as_deref())
        .await
        .map_err(provider_failure)?;
    if user_data.emails.is_empty() {
        return Err(AuthError::new(
            ErrorCode::UnexpectedFailure,
            "Error getting user email from external provider",
        ));
    }
    let provider = s.kind.name();
    let mut tx = state.tx().await?;
    if let Some(fid) = claims.flow_state_id {
        let live: bool = tx
            .query_one(
                "select exists (select 1 from auth.flow_state where id = $1 and user_id is null)",
                &[&fid],
            )
            .await?
            .get(0);
        if !live {
            return Err(AuthError::new(
                ErrorCode::FlowStateNotFound,
                "Flow state not found",
            ));
        }
    }
    let outcome = match claims.linking_target_id {
        Some(target) => link_identity_to_user(state, &mut tx, target, provider, &user_data).await?,
        None => account_from_identity(state, &mut tx, provider, &user_data).await?,
    };
    let user = match outcome {
        Outcome::User(u) => u,
        Outcome::Refused {
            user,
            issued,
            error,
        } => {
            tx.commit().await?;
            if let Some(issued) = issued {
                let redirect = Some(claims.referrer.clone()).filter(|r| !r.is_empty());
                crate::otp::send_signup_confirmation(
                    state,
                    info,
                    redirect.as_ref(),
                    &user,
                    &issued,
                );
            }
            return Err(error);
        }
    };
    if let Some(fid) = claims.flow_state_id {
        let auth_code: String = tx
            .query_one(
                "update auth.flow_state set user_id = $2, provider_access_token = $3,
                     provider_refresh_token = $4, auth_code_issued_at = now(), updated_at = now()
                 where id = $1 returning auth_code",
                &[&fid, &user.id, &tokens.access_token, &tokens.refresh_token],
            )
            .await?
            .get(0);
        tx.commit().await?;
        return Ok(Finished::Code(auth_code));
    }
    let (sid, refresh, amr) =
        model::create_session(state, &mut tx, user.id, "oauth", &info.client).await?;
    let user = model::find_user(&mut tx, user.id)
        .await?
        .ok_or_else(|| AuthError::internal("user vanished during sign-in"))?;
    tx.commit().await?;
    let session = model::session_json(state, &user, sid, &amr, &refresh, &info.issuer)?;
    Ok(Finished::Session(
        session,
        (tokens.access_token, tokens.refresh_token),
    ))
}

/// The result of finding the account for an external identity.
enum Outcome {
    User(User),
    /// Written (commit), but no sign-in: the address must be verified first.
    Refused {
        user: User,
        issued: Option<crate::otp::Issued>,
        error: AuthError,
    },
}

async fn insert_identity(
    tx: &mut agencyflow_db::ClaimsTxn,
    user_id: Uuid,
    provider: &str,
    data: &UserData,
) -> Result<Uuid, AuthError> {
    Ok(tx
        .query_one(
            "insert into auth.identities (provider_id, user_id, identity_data, provider, last_sign_in_at)
             values ($1, $2, $3, $4, now()) returning id",
            &[
                &data.subject,
                &user_id,
                &Value::Object(data.metadata.clone()),
                &provider,
            ],
        )
        .await?
        .get(0))
}

/// `app_metadata.providers`: the user's identities' providers (GoTrue's
/// `UpdateAppMetaDataProviders`).
async fn update_providers(
    tx: &mut agencyflow_db::ClaimsTxn,
    user_id: Uuid,
) -> Result<(), AuthError> {
    tx.execute(
        "update auth.users set raw_app_meta_data = coalesce(raw_app_meta_data, '{}'::jsonb)
             || jsonb_build_object('providers', coalesce((
                  select jsonb_agg(p order by first) from (
                    select provider as p, min(created_at) as first from auth.identities
                    where user_id = $1 group by provider) x), '[]'::jsonb)),
             updated_at = now()
         where id = $1",
        &[&user_id],
    )
    .await?;
    Ok(())
}

/// GoTrue's automatic account linking (`DetermineAccountLinking`) and what follows it
/// (`createAccountFromExternalIdentity`).
async fn account_from_identity(
    state: &AuthState,
    tx: &mut agencyflow_db::ClaimsTxn,
    provider: &str,
    data: &UserData,
) -> Result<Outcome, AuthError> {
    let autoconfirm = state.args.mailer_autoconfirm;
    let verified: Vec<String> = data
        .emails
        .iter()
        .filter(|e| e.verified || autoconfirm)
        .map(|e| e.email.to_lowercase())
        .collect();
    let candidate = data.primary().cloned();
    let candidate_verified = candidate.as_ref().is_some_and(|c| c.verified);
    let identity_data = Value::Object(data.metadata.clone());

    let existing = tx
        .query_opt(
            "select id, user_id from auth.identities where provider_id = $1 and provider = $2",
            &[&data.subject, &provider],
        )
        .await?;
    let (user_id, identity_id) = if let Some(row) = existing {
        // The identity is known: its user signs in, with refreshed identity data.
        let (iid, uid): (Uuid, Uuid) = (row.get(0), row.get(1));
        tx.execute(
            "update auth.identities set identity_data = $2, last_sign_in_at = now(), updated_at = now()
             where id = $1",
            &[&iid, &identity_data],
        )
        .await?;
        tx.execute(
            "update auth.users set raw_user_meta_data = coalesce(raw_user_meta_data, '{}'::jsonb) || $2
             where id = $1",
            &[&uid, &identity_data],
        )
        .await?;
        update_providers(tx, uid).await?;
        (uid, iid)
    } else {
        let link_to: Option<Uuid> = if verified.is_empty() {
            None
        } else {
            let by_identity: Vec<Uuid> = tx
                .query(
                    "select distinct user_id from auth.identities where email = any($1)",
                    &[&verified],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let by_user: Vec<Uuid> = tx
                .query(
                    "select id from auth.users where lower(email) = any($1) and is_sso_user = false",
                    &[&verified],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let candidates = if by_identity.is_empty() {
                by_user
            } else {
                by_identity
            };
            match candidates.len() {
                0 => None,
                1 => Some(candidates[0]),
                _ => {
                    return Err(AuthError::internal(
                        "Multiple accounts with the same email address in the same linking domain detected: default",
                    ))
                }
            }
        };
        match link_to {
            Some(uid) => {
                let iid = insert_identity(tx, uid, provider, data).await?;
                tx.execute(
                    "update auth.users set raw_user_meta_data = coalesce(raw_user_meta_data, '{}'::jsonb) || $2
                     where id = $1",
                    &[&uid, &identity_data],
                )
                .await?;
                update_providers(tx, uid).await?;
                (uid, iid)
            }
            None => {
                if state.args.disable_signup {
                    return Err(ErrorCode::SignupDisabled.into());
                }
                // A new user; an address another account holds (unverified here) is left out.
                let email = match candidate.as_ref().map(|c| c.email.to_lowercase()) {
                    Some(e) => {
                        let taken: bool = tx
                            .query_one(
                                "select exists (select 1 from auth.users
                                   where lower(email) = $1 and is_sso_user = false)",
                                &[&e],
                            )
                            .await?
                            .get(0);
                        (!taken).then_some(e)
                    }
                    None => None,
                };
                let uid = Uuid::new_v4();
                tx.execute(
                    "insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data)
                     values ($1, $2, 'authenticated', $3, $4, $5)",
                    &[
                        &uid,
                        &state.args.jwt_aud,
                        &email,
                        &json!({ "provider": provider, "providers": [provider] }),
                        &identity_data,
                    ],
                )
                .await?;
                let iid = insert_identity(tx, uid, provider, data).await?;
                (uid, iid)
            }
        }
    };
    let user = model::find_user(tx, user_id)
        .await?
        .ok_or_else(|| AuthError::internal("user vanished during sign-in"))?;
    if user.is_banned() {
        return Err(AuthError::new(ErrorCode::UserBanned, "User is banned"));
    }
    if user.email_confirmed_at.is_none() {
        // Other ways into an unconfirmed account (a password somebody set for this address,
        // other unverified identities) are closed now that a provider vouches for it:
        // otherwise whoever registered the address first would keep a door into it.
        tx.execute(
            "with d as (delete from auth.identities where user_id = $1 and id <> $2)
             update auth.users set encrypted_password = null where id = $1",
            &[&user_id, &identity_id],
        )
        .await?;
        update_providers(tx, user_id).await?;
        if candidate_verified || autoconfirm {
            tx.execute(
                "update auth.users set email_confirmed_at = now() where id = $1 and email is not null",
                &[&user_id],
            )
            .await?;
        } else {
            let issued = match user.email.as_deref() {
                Some(e) if !e.is_empty() => {
                    Some(crate::otp::issue_signup_confirmation(state, tx, user_id, e).await?)
                }
                _ => None,
            };
            let message = if issued.is_some() {
                format!("Unverified email with {provider}. A confirmation email has been sent to your {provider} email")
            } else {
                format!("Unverified email with {provider}. Verify the email with {provider} in order to sign in")
            };
            let user = model::find_user(tx, user_id)
                .await?
                .ok_or_else(|| AuthError::internal("user vanished during sign-in"))?;
            return Ok(Outcome::Refused {
                user,
                issued,
                error: AuthError::new(ErrorCode::ProviderEmailNeedsVerification, message),
            });
        }
    }
    tx.execute(
        "update auth.users set last_sign_in_at = now(), updated_at = now() where id = $1",
        &[&user_id],
    )
    .await?;
    let user = model::find_user(tx, user_id)
        .await?
        .ok_or_else(|| AuthError::internal("user vanished during sign-in"))?;
    Ok(Outcome::User(user))
}

/// `linkIdentity`'s callback: the identity joins the signed-in user who asked
/// (GoTrue's `linkIdentityToUser`).
async fn link_identity_to_user(
    state: &AuthState,
    tx: &mut agencyflow_db::ClaimsTxn,
    target: Uuid,
    provider: &str,
    data: &UserData,
) -> Result<Outcome, AuthError> {
    let owner: Option<Uuid> = tx
        .query_opt(
            "select user_id from auth.identities where provider_id = $1 and provider = $2",
            &[&data.subject, &provider],
        )
        .await?
        .map(|r| r.get(0));
    match owner {
        Some(o) if o == target => {
            return Err(AuthError::new(
                ErrorCode::IdentityAlreadyExists,
                "Identity is already linked",
            ))
        }
        Some(_) => {
            return Err(AuthError::new(
                ErrorCode::IdentityAlreadyExists,
                "Identity is already linked to another user",
            ))
        }
        None => {}
    }
    let user = model::find_user(tx, target)
        .await?
        .ok_or_else(|| AuthError::new(ErrorCode::UserNotFound, "Linking target user not found"))?;
    insert_identity(tx, target, provider, data).await?;
    if user.email.as_deref().is_none_or(str::is_empty) {
        if let Some(p) = data.primary() {
            let email = p.email.to_lowercase();
            let taken: bool = tx
                .query_one(
                    "select exists (select 1 from auth.users
                       where lower(email) = $1 and is_sso_user = false and id <> $2)",
                    &[&email, &target],
                )
                .await?
                .get(0);
            if taken {
                return Err(ErrorCode::EmailExists.into());
            }
            tx.execute(
                "update auth.users set email = $2 where id = $1",
                &[&target, &email],
            )
            .await?;
            if !p.verified {
                update_providers(tx, target).await?;
                let issued =
                    crate::otp::issue_signup_confirmation(state, tx, target, &email).await?;
                let user = model::find_user(tx, target)
                    .await?
                    .ok_or_else(|| AuthError::internal("user vanished while linking"))?;
                return Ok(Outcome::Refused {
                    user,
                    issued: Some(issued),
                    error: AuthError::new(
                        ErrorCode::EmailNotConfirmed,
                        format!("Unverified email with {provider}. A confirmation email has been sent to your {provider} email"),
                    ),
                });
            }
            tx.execute(
                "update auth.users set email_confirmed_at = coalesce(email_confirmed_at, now()),
                     is_anonymous = false
                 where id = $1",
                &[&target],
            )
            .await?;
        }
    }
    update_providers(tx, target).await?;
    let user = model::find_user(tx, target)
        .await?
        .ok_or_else(|| AuthError::internal("user vanished while linking"))?;
    Ok(Outcome::User(user))
}

fn require_manual_linking(state: &AuthState) -> Result<(), AuthError> {
    if state.args.external.manual_linking_enabled {
        Ok(())
    } else {
        Err(ErrorCode::ManualLinkingDisabled.into())
    }
}

/// `GET /user/identities/authorize` (`linkIdentity`): the provider's URL for the signed-in
/// user (`{"url"}` with `skip_http_redirect=true`, else 302).
pub async fn link_identity(
    State(state): State<AuthState>,
    info: ReqInfo,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, AuthError> {
    let (user, _) = authenticated(&state, &headers).await?;
    require_manual_linking(&state)?;
    let params = params_of(raw.as_deref(), None);
    let url = start_flow(&state, &info, &params, Some(user.id)).await?;
    if param(&params, "skip_http_redirect").as_deref() == Some("true") {
        return Ok(Json(json!({ "url": url })).into_response());
    }
    Ok(found(&url, StatusCode::FOUND))
}

/// `DELETE /user/identities/{id}` (`unlinkIdentity`): never the last identity.
pub async fn unlink_identity(
    State(state): State<AuthState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, AuthError> {
    let (user, _) = authenticated(&state, &headers).await?;
    require_manual_linking(&state)?;
    let identity_id = Uuid::parse_str(&id).map_err(|_| {
        AuthError::new(ErrorCode::NotFoundValidation, "identity_id must be an UUID")
    })?;
    let identities = user.identities.as_array().cloned().unwrap_or_default();
    if identities.len() <= 1 {
        return Err(ErrorCode::SingleIdentityNotDeletable.into());
    }
    let Some(gone) = identities
        .iter()
        .find(|i| i["identity_id"].as_str() == Some(&identity_id.to_string()))
    else {
        return Err(ErrorCode::IdentityNotFound.into());
    };
    let mut tx = state.tx().await?;
    tx.execute(
        "delete from auth.identities where id = $1 and user_id = $2",
        &[&identity_id, &user.id],
    )
    .await?;
    // The user's address follows its identities: when the one that carried it goes, the
    // address of the oldest remaining identity takes its place.
    let gone_email = gone["email"].as_str().unwrap_or_default().to_lowercase();
    let user_email = user.email.clone().unwrap_or_default().to_lowercase();
    if !user_email.is_empty() && gone_email == user_email {
        let still: bool = tx
            .query_one(
                "select exists (select 1 from auth.identities where user_id = $1 and email = $2)",
                &[&user.id, &user_email],
            )
            .await?
            .get(0);
        if !still {
            let next: Option<String> = tx
                .query_opt(
                    "select email from auth.identities where user_id = $1 and email is not null
                     order by created_at, id limit 1",
                    &[&user.id],
                )
                .await?
                .and_then(|r| r.get(0));
            let updated = tx
                .execute(
                    "update auth.users set email = $2 where id = $1",
                    &[&user.id, &next],
                )
                .await;
            if let Err(e) = updated {
                if matches!(&e, agencyflow_db::DbError::Postgres(p) if p.code == "23505") {
                    return Err(ErrorCode::EmailConflictIdentityNotDeletable.into());
                }
                return Err(e.into());
            }
        }
    }
    update_providers(&mut tx, user.id).await?;
    tx.commit().await?;
    Ok(Json(json!({})).into_response())
}

#[derive(Deserialize, Default)]
struct IdTokenGrant {
    id_token: Option<String>,
    access_token: Option<String>,
    nonce: Option<String>,
    provider: Option<String>,
    client_id: Option<String>,
    issuer: Option<String>,
}

fn bad_id_token(description: impl Into<Cow<'static, str>>) -> AuthError {
    AuthError::oauth("invalid request", description)
}

/// `POST /token?grant_type=id_token` (`signInWithIdToken`).
pub(crate) async fn id_token_grant(
    state: AuthState,
    info: ReqInfo,
    body: &Bytes,
) -> Result<Response, AuthError> {
    let p: IdTokenGrant = parse_body(body)?;
    let id_token = nonempty(p.id_token).ok_or_else(|| bad_id_token("id_token required"))?;
    let provider_name = nonempty(p.provider);
    let issuer = nonempty(p.issuer);
    if provider_name.is_none() && (nonempty(p.client_id).is_none() || issuer.is_none()) {
        return Err(bad_id_token("provider or client_id and issuer required"));
    }
    crate::handlers::rate_limit(
        &state,
        crate::ratelimit::Limit::SignInSignUpsPerIp,
        &info.client.ip,
    )?;
    let ext = &state.args.external;
    // The provider by name, or by the issuer of a configured OpenID provider.
    let kind = match provider_name.as_deref() {
        Some(n) => Kind::parse(n).filter(|k| k.is_oidc()),
        None => Kind::ALL.into_iter().filter(|k| k.is_oidc()).find(|k| {
            let s = ext.settings(*k);
            s.enabled && s.url.is_some() && s.url.as_deref() == issuer.as_deref()
        }),
    };
    let Some(kind) = kind else {
        return Err(AuthError::new(
            ErrorCode::ValidationFailed,
            format!(
                "Custom OIDC provider \"{}\" not allowed",
                provider_name.or(issuer).unwrap_or_default()
            ),
        ));
    };
    let s = ext.settings(kind);
    if !s.enabled {
        let iss = match kind {
            Kind::Google => s
                .url
                .clone()
                .unwrap_or_else(|| "https://accounts.google.com".into()),
            _ => s.url.clone().unwrap_or_default(),
        };
        return Err(AuthError::new(
            ErrorCode::ProviderDisabled,
            format!("Provider (issuer \"{iss}\") is not enabled"),
        ));
    }
    let client = state.external();
    let claims = client
        .verify_id_token(&s, &id_token)
        .await
        .map_err(|e| match e {
            ProviderError::BadIdToken(m) => {
                tracing::info!(reason = %m, "id_token grant: token refused");
                bad_id_token("Bad ID token")
            }
            ProviderError::Unavailable(m) => {
                tracing::error!(error = %m, "id_token grant: provider unreachable");
                AuthError::new(
                    ErrorCode::UnexpectedFailure,
                    "Unable to reach the provider to verify the ID token",
                )
            }
        })?;
    let user_data = provider::oidc_user_data(&claims)
        .map_err(|_| bad_id_token("Missing sub claim in id_token"))?;
    if !provider::audience_matches(&s.client_ids, &claims) {
        return Err(bad_id_token("Unacceptable audience in id_token"));
    }
    if !s.skip_nonce_check {
        let token_nonce = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
        let given = nonempty(p.nonce);
        match (token_nonce.is_empty(), &given) {
            (true, None) => {}
            (false, Some(raw)) => {
                let hashed = hex::encode(Sha256::digest(raw.as_bytes()));
                if !provider::constant_eq(&hashed, token_nonce) {
                    return Err(AuthError::oauth("invalid nonce", "Nonces mismatch"));
                }
            }
            _ => {
                return Err(bad_id_token(
                    "Passed nonce and nonce in id_token should either both exist or not.",
                ))
            }
        }
    }
    if let (Some(at), Some(expected)) = (
        nonempty(p.access_token),
        claims.get("at_hash").and_then(Value::as_str),
    ) {
        if !provider::constant_eq(&provider::at_hash(&at), expected) {
            return Err(bad_id_token("Bad ID token"));
        }
    }
    let mut tx = state.tx().await?;
    let user = match account_from_identity(&state, &mut tx, kind.name(), &user_data).await? {
        Outcome::User(u) => u,
        Outcome::Refused {
            user,
            issued,
            error,
        } => {
            tx.commit().await?;
            if let Some(issued) = issued {
                crate::otp::send_signup_confirmation(&state, &info, None, &user, &issued);
            }
            return Err(error);
        }
    };
    let (sid, refresh, amr) =
        model::create_session(&state, &mut tx, user.id, "oauth", &info.client).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip_and_tampering() {
        let k = StateKey([7u8; 32]);
        let c = FlowClaims {
            provider: "keycloak".into(),
            referrer: "http://app/cb".into(),
            flow_state_id: None,
            linking_target_id: None,
            nonce: Some("n".into()),
            exp: unix_now() + 60,
        };
        let s = k.sign(&c);
        assert_eq!(k.verify(&s).unwrap().referrer, "http://app/cb");
        let (p, sig) = s.split_once('.').unwrap();
        assert!(k.verify(&format!("{p}x.{sig}")).is_none());
        assert!(StateKey([8u8; 32]).verify(&s).is_none());
        let old = k.sign(&FlowClaims {
            exp: unix_now() - 1,
            ..c
        });
        assert!(k.verify(&old).is_none());
    }

    #[test]
    fn error_location_keeps_the_query() {
        let e = AuthError::new(
            ErrorCode::SignupDisabled,
            "Signups not allowed for this instance",
        );
        let l = error_location("http://app/cb?x=1#old", &e);
        assert!(l.starts_with("http://app/cb?x=1&error=access_denied&error_code=signup_disabled"));
        assert!(l.contains("#error=access_denied"));
    }
}
