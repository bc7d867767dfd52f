//! WebAuthn second factors, as GoTrue's `/factors` API carries them (`factor_type:
//! "webauthn"`): a challenge of an unverified factor is a registration ceremony (`create`:
//! `PublicKeyCredentialCreationOptions`), of a verified one an authentication ceremony
//! (`request`: `PublicKeyCredentialRequestOptions`); `/factors/{id}/verify` takes the
//! authenticator's response (`webauthn: {type, credential_response}`) and raises the session to
//! `aal2` with `{method: "mfa/webauthn"}` in its `amr`.
//!
//! The relying party is the server's (`GOTRUE_WEBAUTHN_RP_ID`, `_RP_ORIGINS`,
//! `_RP_DISPLAY_NAME`), never the client's: supabase-js sends an `rpId` and `rpOrigins` of its
//! own choosing, which GoTrue ignores too. What is checked (W3C WebAuthn Level 2, §7.1 and §7.2):
//! - `clientDataJSON`: the ceremony type, the challenge issued for this factor (used once,
//!   within `GOTRUE_MFA_CHALLENGE_EXPIRY_DURATION`, from the client address that asked), an
//!   origin among the configured ones;
//! - `authenticatorData`: SHA-256 of the RP ID, user presence (always) and user verification
//!   (when `AGENCYFLOW_WEBAUTHN_USER_VERIFICATION=required`), the signature counter (one that
//!   does not grow is refused: a cloned authenticator), no trailing bytes;
//! - registration: attestation format `none` only (the options ask for `"attestation":
//!   "none"`; browsers then send `none`), an ES256 (P-256) COSE key that is a point on the
//!   curve, the credential id matching `rawId` and not already one of the user's factors;
//! - authentication: the factor's own credential, an ECDSA P-256 / SHA-256 signature over
//!   `authenticatorData || SHA-256(clientDataJSON)`, and the user handle (when sent) of the user.
//!
//! CBOR is decoded by the small, strict decoder below (definite lengths, no tags or floats,
//! bounded depth): WebAuthn's attestation object and COSE keys use only that subset.
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::error::{AuthError, ErrorCode};
use crate::handlers::{parse_body, rate_limit, ReqInfo};
use crate::model::{self, User};
use crate::ratelimit::Limit;
use crate::{AuthArgs, AuthState};

/// WebAuthn settings, under GoTrue's names.
#[derive(Debug, Clone, clap::Args)]
pub struct WebAuthnArgs {
    /// New WebAuthn factors may be enrolled (needs a relying party: GOTRUE_WEBAUTHN_RP_ID or
    /// GOTRUE_SITE_URL).
    #[arg(long = "mfa-web-authn-enroll-enabled", env = "GOTRUE_MFA_WEB_AUTHN_ENROLL_ENABLED", default_value_t = false, action = clap::ArgAction::Set)]
    pub enroll_enabled: bool,
    /// WebAuthn factors may be challenged and verified.
    #[arg(long = "mfa-web-authn-verify-enabled", env = "GOTRUE_MFA_WEB_AUTHN_VERIFY_ENABLED", default_value_t = false, action = clap::ArgAction::Set)]
    pub verify_enabled: bool,
    /// The relying party ID: the domain credentials are bound to (default: the host of
    /// GOTRUE_SITE_URL). Changing it makes every registered credential unusable.
    #[arg(long = "webauthn-rp-id", env = "GOTRUE_WEBAUTHN_RP_ID")]
    pub rp_id: Option<String>,
    /// The relying party's name shown by authenticators (default: the RP ID).
    #[arg(
        long = "webauthn-rp-display-name",
        env = "GOTRUE_WEBAUTHN_RP_DISPLAY_NAME"
    )]
    pub rp_display_name: Option<String>,
    /// The origins ceremonies may come from, comma-separated (default: the origin of
    /// GOTRUE_SITE_URL). HTTPS unless loopback; each host the RP ID or a subdomain of it.
    #[arg(long = "webauthn-rp-origins", env = "GOTRUE_WEBAUTHN_RP_ORIGINS")]
    pub rp_origins: Option<String>,
    /// `preferred` (GoTrue's: the authenticator checks the user if it can), `required` (a
    /// response without the user-verified flag is refused) or `discouraged`.
    #[arg(long = "webauthn-user-verification", env = "AGENCYFLOW_WEBAUTHN_USER_VERIFICATION", default_value = "preferred",
          value_parser = ["preferred", "required", "discouraged"])]
    pub user_verification: String,
}

impl WebAuthnArgs {
    fn enabled(&self) -> bool {
        self.enroll_enabled || self.verify_enabled
    }
}

/// The relying party ceremonies are checked against.
#[derive(Debug, Clone, PartialEq)]
pub struct RelyingParty {
    pub id: String,
    pub name: String,
    pub origins: Vec<String>,
    pub user_verification: String,
}

impl RelyingParty {
    fn uv_required(&self) -> bool {
        self.user_verification == "required"
    }
}

/// The relying party of the settings (`Err((setting, reason))` when WebAuthn is on and it
/// cannot be made, or is inconsistent).
pub fn relying_party(args: &AuthArgs) -> Result<RelyingParty, (&'static str, String)> {
    let w = &args.webauthn;
    let site = args
        .site_url
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let id = match w.rp_id.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(id) => id.to_ascii_lowercase(),
        None => site
            .and_then(|s| split_origin(origin_of(s)?).map(|(_, host)| host))
            .ok_or((
                "GOTRUE_WEBAUTHN_RP_ID",
                "WebAuthn needs a relying party ID (or GOTRUE_SITE_URL to take its host)".into(),
            ))?,
    };
    if id.is_empty() || id.contains(['/', ':', ' ']) {
        return Err((
            "GOTRUE_WEBAUTHN_RP_ID",
            format!("{id:?} is not a domain (no scheme, port or path)"),
        ));
    }
    let origins: Vec<String> = match w.rp_origins.as_deref().map(str::trim) {
        Some(list) if !list.is_empty() => list
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect(),
        _ => site
            .and_then(origin_of)
            .map(str::to_string)
            .into_iter()
            .collect(),
    };
    if origins.is_empty() {
        return Err((
            "GOTRUE_WEBAUTHN_RP_ORIGINS",
            "WebAuthn needs the origins of the pages that run ceremonies (or GOTRUE_SITE_URL)"
                .into(),
        ));
    }
    for o in &origins {
        // App origins (`android:apk-key-hash:...`, `ios:bundle-id:...`) are taken as given.
        if !o.starts_with("http://") && !o.starts_with("https://") {
            continue;
        }
        let Some((scheme, host)) = split_origin(o) else {
            return Err((
                "GOTRUE_WEBAUTHN_RP_ORIGINS",
                format!("{o:?} is not an origin (scheme://host[:port])"),
            ));
        };
        if host != id && !host.ends_with(&format!(".{id}")) {
            return Err((
                "GOTRUE_WEBAUTHN_RP_ORIGINS",
                format!("the host of {o:?} is neither the RP ID {id:?} nor a subdomain of it"),
            ));
        }
        if scheme == "http" && !matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]") {
            return Err((
                "GOTRUE_WEBAUTHN_RP_ORIGINS",
                format!("{o:?}: WebAuthn needs HTTPS except on loopback addresses"),
            ));
        }
    }
    let name = w
        .rp_display_name
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map_or_else(|| id.clone(), str::to_string);
    Ok(RelyingParty {
        id,
        name,
        origins,
        user_verification: w.user_verification.clone(),
    })
}

/// Start-up check: with WebAuthn on, the relying party must be complete and consistent.
pub fn check(args: &AuthArgs) -> Result<(), (&'static str, String)> {
    if args.webauthn.enabled() {
        relying_party(args)?;
    }
    Ok(())
}

/// `scheme://host[:port]` of a URL (without path, query or fragment).
fn origin_of(url: &str) -> Option<&str> {
    let start = url.find("://")? + 3;
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    (end > start).then(|| &url[..end])
}

/// `(scheme, lower-case host without port)` of an origin.
fn split_origin(origin: &str) -> Option<(String, String)> {
    let (scheme, rest) = origin.split_once("://")?;
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    let host = if rest.starts_with('[') {
        &rest[..=rest.find(']')?]
    } else {
        rest.split(':').next()?
    };
    (!host.is_empty()).then(|| (scheme.to_ascii_lowercase(), host.to_ascii_lowercase()))
}

// ---- errors of the ceremonies ----

/// Why a ceremony's response was refused (shown to the client: none of it is secret).
#[derive(Debug, Clone, PartialEq)]
pub struct Refused(pub String);

fn refused<T>(msg: impl Into<String>) -> Result<T, Refused> {
    Err(Refused(msg.into()))
}

// ---- base64url ----

const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub fn b64url(bytes: &[u8]) -> String {
    B64URL.encode(bytes)
}

fn b64url_field(v: &Value, field: &str) -> Result<Vec<u8>, Refused> {
    let s = v
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| Refused(format!("{field} is missing")))?;
    B64URL
        .decode(s)
        .map_err(|_| Refused(format!("{field} is not base64url")))
}

// ---- CBOR (RFC 8949), the subset WebAuthn uses ----

#[derive(Debug, Clone, PartialEq)]
pub enum Cbor {
    Int(i128),
    Bytes(Vec<u8>),
    Text(String),
    Array(Vec<Cbor>),
    Map(Vec<(Cbor, Cbor)>),
    Bool(bool),
    Null,
}

impl Cbor {
    fn get(&self, key: &Cbor) -> Option<&Cbor> {
        match self {
            Cbor::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

const CBOR_MAX_DEPTH: usize = 8;

/// Decodes one CBOR item at the start of `input`: the item and the bytes it took.
pub fn cbor_decode(input: &[u8]) -> Result<(Cbor, usize), Refused> {
    let mut pos = 0;
    let v = cbor_item(input, &mut pos, 0)?;
    Ok((v, pos))
}

fn cbor_take<'a>(input: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], Refused> {
    let end = pos
        .checked_add(n)
        .filter(|e| *e <= input.len())
        .ok_or_else(|| Refused("CBOR item is truncated".into()))?;
    let s = &input[*pos..end];
    *pos = end;
    Ok(s)
}

fn cbor_item(input: &[u8], pos: &mut usize, depth: usize) -> Result<Cbor, Refused> {
    if depth > CBOR_MAX_DEPTH {
        return refused("CBOR is nested too deeply");
    }
    let head = cbor_take(input, pos, 1)?[0];
    let (major, info) = (head >> 5, head & 0x1f);
    let arg: u64 = match info {
        0..=23 => u64::from(info),
        24 => u64::from(cbor_take(input, pos, 1)?[0]),
        25 => u64::from(u16::from_be_bytes(
            cbor_take(input, pos, 2)?.try_into().expect("2"),
        )),
        26 => u64::from(u32::from_be_bytes(
            cbor_take(input, pos, 4)?.try_into().expect("4"),
        )),
        27 => u64::from_be_bytes(cbor_take(input, pos, 8)?.try_into().expect("8")),
        _ => return refused("CBOR indefinite lengths and reserved values are not accepted"),
    };
    // Every element takes at least one byte: a count beyond what is left is malformed (and
    // never allocates more than the input's size).
    let remaining = (input.len() - *pos) as u64;
    match major {
        0 => Ok(Cbor::Int(i128::from(arg))),
        1 => Ok(Cbor::Int(-1 - i128::from(arg))),
        2 | 3 => {
            if arg > remaining {
                return refused("CBOR item is truncated");
            }
            let bytes = cbor_take(input, pos, arg as usize)?.to_vec();
            if major == 2 {
                Ok(Cbor::Bytes(bytes))
            } else {
                String::from_utf8(bytes)
                    .map(Cbor::Text)
                    .map_err(|_| Refused("CBOR text is not UTF-8".into()))
            }
        }
        4 => {
            if arg > remaining {
                return refused("CBOR item is truncated");
            }
            let mut items = Vec::with_capacity(arg as usize);
            for _ in 0..arg {
                items.push(cbor_item(input, pos, depth + 1)?);
            }
            Ok(Cbor::Array(items))
        }
        5 => {
            if arg.saturating_mul(2) > remaining {
                return refused("CBOR item is truncated");
            }
            let mut entries: Vec<(Cbor, Cbor)> = Vec::with_capacity(arg as usize);
            for _ in 0..arg {
                let k = cbor_item(input, pos, depth + 1)?;
                if entries.iter().any(|(e, _)| *e == k) {
                    return refused("CBOR map has a duplicate key");
                }
                let v = cbor_item(input, pos, depth + 1)?;
                entries.push((k, v));
            }
            Ok(Cbor::Map(entries))
        }
        7 => match info {
            20 => Ok(Cbor::Bool(false)),
            21 => Ok(Cbor::Bool(true)),
            22 => Ok(Cbor::Null),
            _ => refused("CBOR floats and simple values are not accepted"),
        },
        _ => refused("CBOR tags are not accepted"),
    }
}

// ---- authenticator data ----

const FLAG_UP: u8 = 0x01;
const FLAG_UV: u8 = 0x04;
const FLAG_BE: u8 = 0x08;
const FLAG_BS: u8 = 0x10;
const FLAG_AT: u8 = 0x40;
const FLAG_ED: u8 = 0x80;

/// The parts of `authenticatorData` a relying party checks.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthData {
    pub rp_id_hash: [u8; 32],
    pub flags: u8,
    pub sign_count: u32,
    /// `(aaguid, credential id, COSE public key)` when attested credential data is present.
    pub attested: Option<([u8; 16], Vec<u8>, Cbor)>,
}

pub fn parse_auth_data(data: &[u8]) -> Result<AuthData, Refused> {
    if data.len() < 37 {
        return refused("authenticatorData is too short");
    }
    let rp_id_hash: [u8; 32] = data[..32].try_into().expect("32");
    let flags = data[32];
    let sign_count = u32::from_be_bytes(data[33..37].try_into().expect("4"));
    let mut pos = 37;
    let attested = if flags & FLAG_AT != 0 {
        let aaguid: [u8; 16] = cbor_take(data, &mut pos, 16)?.try_into().expect("16");
        let len = u16::from_be_bytes(cbor_take(data, &mut pos, 2)?.try_into().expect("2"));
        if len == 0 || len > 1023 {
            return refused("credential id length is out of range");
        }
        let id = cbor_take(data, &mut pos, usize::from(len))?.to_vec();
        let (key, used) = cbor_decode(&data[pos..])?;
        pos += used;
        Some((aaguid, id, key))
    } else {
        None
    };
    if flags & FLAG_ED != 0 {
        let (ext, used) = cbor_decode(&data[pos..])?;
        if !matches!(ext, Cbor::Map(_)) {
            return refused("authenticator extensions are not a map");
        }
        pos += used;
    }
    if pos != data.len() {
        return refused("authenticatorData has trailing bytes");
    }
    Ok(AuthData {
        rp_id_hash,
        flags,
        sign_count,
        attested,
    })
}

/// The P-256 public key of a COSE_Key (kty EC2, alg ES256, crv P-256).
pub fn es256_key(cose: &Cbor) -> Result<p256::ecdsa::VerifyingKey, Refused> {
    let int = |k: i128| cose.get(&Cbor::Int(k));
    let only_es256 = "only ES256 (P-256) credentials are accepted";
    if int(1) != Some(&Cbor::Int(2)) || int(3) != Some(&Cbor::Int(-7)) {
        return refused(only_es256);
    }
    if int(-1) != Some(&Cbor::Int(1)) {
        return refused(only_es256);
    }
    let (Some(Cbor::Bytes(x)), Some(Cbor::Bytes(y))) = (int(-2), int(-3)) else {
        return refused("the credential's public key has no coordinates");
    };
    if x.len() != 32 || y.len() != 32 {
        return refused("the credential's public key coordinates are not 32 bytes");
    }
    let point = p256::EncodedPoint::from_affine_coordinates(
        p256::FieldBytes::from_slice(x),
        p256::FieldBytes::from_slice(y),
        false,
    );
    p256::ecdsa::VerifyingKey::from_encoded_point(&point)
        .map_err(|_| Refused("the credential's public key is not a point on P-256".into()))
}

// ---- client data ----

fn check_client_data(
    rp: &RelyingParty,
    raw: &[u8],
    ceremony: &str,
    challenge: &[u8],
) -> Result<(), Refused> {
    let cd: Value =
        serde_json::from_slice(raw).map_err(|_| Refused("clientDataJSON is not JSON".into()))?;
    if cd.get("type").and_then(Value::as_str) != Some(ceremony) {
        return refused(format!("clientDataJSON type is not {ceremony}"));
    }
    let got = b64url_field(&cd, "challenge")?;
    if got.len() != challenge.len() || !bool::from(got.ct_eq(challenge)) {
        return refused("the response is not for this challenge");
    }
    let origin = cd.get("origin").and_then(Value::as_str).unwrap_or_default();
    if !rp.origins.iter().any(|o| o == origin.trim_end_matches('/')) {
        return refused(format!("origin {origin:?} is not allowed"));
    }
    if cd.get("crossOrigin").and_then(Value::as_bool) == Some(true) {
        return refused("cross-origin ceremonies are not allowed");
    }
    Ok(())
}

fn check_flags(rp: &RelyingParty, auth: &AuthData) -> Result<(), Refused> {
    let want: [u8; 32] = Sha256::digest(rp.id.as_bytes()).into();
    if auth.rp_id_hash != want {
        return refused("the credential is not for this relying party (RP ID hash)");
    }
    if auth.flags & FLAG_UP == 0 {
        return refused("the user was not present (UP flag)");
    }
    if rp.uv_required() && auth.flags & FLAG_UV == 0 {
        return refused("the user was not verified (UV flag)");
    }
    if auth.flags & FLAG_BS != 0 && auth.flags & FLAG_BE == 0 {
        return refused("backup state without backup eligibility");
    }
    Ok(())
}

/// A credential registered by a `create` ceremony: stored as the factor's
/// `web_authn_credential`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCredential {
    pub id: Vec<u8>,
    pub aaguid: Uuid,
    pub public_key: Cbor,
    pub public_key_raw: Vec<u8>,
    pub sign_count: u32,
    pub flags: u8,
    pub transports: Vec<String>,
}

impl NewCredential {
    pub fn to_json(&self) -> Value {
        json!({
            "id": b64url(&self.id),
            "public_key": b64url(&self.public_key_raw),
            "attestation_type": "none",
            "aaguid": self.aaguid,
            "sign_count": self.sign_count,
            "transports": self.transports,
            "flags": flags_json(self.flags),
        })
    }
}

fn flags_json(flags: u8) -> Value {
    json!({
        "user_present": flags & FLAG_UP != 0,
        "user_verified": flags & FLAG_UV != 0,
        "backup_eligible": flags & FLAG_BE != 0,
        "backup_state": flags & FLAG_BS != 0,
    })
}

/// The credential id of a response (`id` and `rawId`, which must agree).
fn response_credential_id(resp: &Value) -> Result<Vec<u8>, Refused> {
    if resp.get("type").and_then(Value::as_str) != Some("public-key") {
        return refused("credential type is not public-key");
    }
    let id = b64url_field(resp, "id")?;
    if resp.get("rawId").is_some() && b64url_field(resp, "rawId")? != id {
        return refused("id and rawId differ");
    }
    Ok(id)
}

/// §7.1 Registering a new credential: the `credential_response` of a `create` ceremony.
pub fn verify_registration(
    rp: &RelyingParty,
    challenge: &[u8],
    resp: &Value,
) -> Result<NewCredential, Refused> {
    let id = response_credential_id(resp)?;
    let r = resp
        .get("response")
        .ok_or_else(|| Refused("response is missing".into()))?;
    let client_data = b64url_field(r, "clientDataJSON")?;
    check_client_data(rp, &client_data, "webauthn.create", challenge)?;
    let att_raw = b64url_field(r, "attestationObject")?;
    let (att, used) = cbor_decode(&att_raw)?;
    if used != att_raw.len() {
        return refused("attestationObject has trailing bytes");
    }
    let text = |k: &str| Cbor::Text(k.into());
    let fmt = match att.get(&text("fmt")) {
        Some(Cbor::Text(f)) => f.clone(),
        _ => return refused("attestationObject has no fmt"),
    };
    if fmt != "none" {
        return refused(format!(
            "attestation format {fmt:?} is not supported: the relying party asks for attestation \"none\""
        ));
    }
    if !matches!(att.get(&text("attStmt")), Some(Cbor::Map(m)) if m.is_empty()) {
        return refused("attestation \"none\" must have an empty attStmt");
    }
    let Some(Cbor::Bytes(auth_raw)) = att.get(&text("authData")) else {
        return refused("attestationObject has no authData");
    };
    let auth = parse_auth_data(auth_raw)?;
    check_flags(rp, &auth)?;
    let Some((aaguid, cred_id, key)) = auth.attested.clone() else {
        return refused("authenticatorData has no attested credential (AT flag)");
    };
    if cred_id != id {
        return refused("the credential id differs from the attested one");
    }
    es256_key(&key)?;
    // The key's own bytes, as the authenticator encoded them.
    let key_start = 37 + 16 + 2 + cred_id.len();
    let (_, key_len) = cbor_decode(&auth_raw[key_start..])?;
    let transports = r
        .get("transports")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .take(8)
                .map(|s| s.chars().take(32).collect())
                .collect()
        })
        .unwrap_or_default();
    Ok(NewCredential {
        id,
        aaguid: Uuid::from_bytes(aaguid),
        public_key: key,
        public_key_raw: auth_raw[key_start..key_start + key_len].to_vec(),
        sign_count: auth.sign_count,
        flags: auth.flags,
        transports,
    })
}

/// A stored credential, as [`NewCredential::to_json`] wrote it.
#[derive(Debug, Clone)]
pub struct StoredCredential {
    pub id: Vec<u8>,
    pub key: p256::ecdsa::VerifyingKey,
    pub sign_count: u32,
}

impl StoredCredential {
    pub fn from_json(v: &Value) -> Result<StoredCredential, String> {
        let id = b64url_field(v, "id").map_err(|e| e.0)?;
        let raw = b64url_field(v, "public_key").map_err(|e| e.0)?;
        let (cose, _) = cbor_decode(&raw).map_err(|e| e.0)?;
        let key = es256_key(&cose).map_err(|e| e.0)?;
        let sign_count = v
            .get("sign_count")
            .and_then(Value::as_u64)
            .and_then(|c| u32::try_from(c).ok())
            .ok_or("sign_count is missing")?;
        Ok(StoredCredential {
            id,
            key,
            sign_count,
        })
    }
}

/// What a verified assertion tells: the authenticator's new counter and flags.
#[derive(Debug, Clone, PartialEq)]
pub struct Assertion {
    pub sign_count: u32,
    pub flags: u8,
}

/// §7.2 Verifying an authentication assertion: the `credential_response` of a `request`
/// ceremony, against the factor's credential and the user's handle.
pub fn verify_assertion(
    rp: &RelyingParty,
    challenge: &[u8],
    cred: &StoredCredential,
    user_handle: &[u8],
    resp: &Value,
) -> Result<Assertion, Refused> {
    let id = response_credential_id(resp)?;
    if id != cred.id {
        return refused("the credential is not this factor's");
    }
    let r = resp
        .get("response")
        .ok_or_else(|| Refused("response is missing".into()))?;
    if let Some(h) = r.get("userHandle").filter(|h| !h.is_null()) {
        let h = h.as_str().unwrap_or_default();
        if !h.is_empty() && B64URL.decode(h).ok().as_deref() != Some(user_handle) {
            return refused("the user handle is not this user's");
        }
    }
    let client_data = b64url_field(r, "clientDataJSON")?;
    check_client_data(rp, &client_data, "webauthn.get", challenge)?;
    let auth_raw = b64url_field(r, "authenticatorData")?;
    let auth = parse_auth_data(&auth_raw)?;
    check_flags(rp, &auth)?;
    let sig = b64url_field(r, "signature")?;
    let sig = p256::ecdsa::Signature::from_der(&sig)
        .map_err(|_| Refused("the signature is not a DER ECDSA signature".into()))?;
    // Authenticators need not produce low-S signatures; both halves verify the same.
    let sig = sig.normalize_s().unwrap_or(sig);
    let mut signed = auth_raw.clone();
    signed.extend_from_slice(&Sha256::digest(&client_data));
    cred.key
        .verify(&signed, &sig)
        .map_err(|_| Refused("the signature does not verify".into()))?;
    // §7.2 step 21: a counter that does not grow (unless both are 0: authenticators without
    // one) means two authenticators hold the key.
    if (auth.sign_count != 0 || cred.sign_count != 0) && auth.sign_count <= cred.sign_count {
        return refused(format!(
            "the authenticator's signature counter went from {} to {}: it may be cloned",
            cred.sign_count, auth.sign_count
        ));
    }
    Ok(Assertion {
        sign_count: auth.sign_count,
        flags: auth.flags,
    })
}

// ---- the /factors endpoints' WebAuthn parts ----

fn rp_of(state: &AuthState) -> Result<RelyingParty, AuthError> {
    relying_party(&state.args)
        .map_err(|(setting, e)| AuthError::internal(format!("{setting}: {e}")))
}

/// The challenge of a WebAuthn factor (`POST /factors/{id}/challenge`, in the caller's
/// transaction, after the factor was found): a registration ceremony for an unverified factor,
/// an authentication ceremony for a verified one; the ceremony's state goes with the challenge.
pub(crate) async fn challenge(
    state: &AuthState,
    tx: &mut agencyflow_db::ClaimsTxn,
    user: &User,
    factor_id: Uuid,
    ip: &str,
) -> Result<Value, AuthError> {
    if !state.args.webauthn.verify_enabled {
        return Err(ErrorCode::MfaWebauthnVerifyNotEnabled.into());
    }
    let rp = rp_of(state)?;
    let factor = tx
        .query_one(
            "select status, web_authn_credential from auth.mfa_factors where id = $1",
            &[&factor_id],
        )
        .await?;
    let (status, credential): (String, Option<Value>) = (factor.get(0), factor.get(1));
    let mut challenge = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut challenge);
    let challenge = b64url(&challenge);
    let timeout = state.args.mfa.challenge_expiry * 1000;
    let (kind, public_key) = match (status.as_str(), credential) {
        ("verified", Some(cred)) => {
            let id = cred.get("id").cloned().unwrap_or(Value::Null);
            (
                "request",
                json!({
                    "challenge": challenge,
                    "timeout": timeout,
                    "rpId": rp.id,
                    "allowCredentials": [{ "type": "public-key", "id": id }],
                    "userVerification": rp.user_verification,
                }),
            )
        }
        _ => {
            // The user's other credentials: an authenticator already registered says so.
            let exclude: Vec<Value> = tx
                .query(
                    "select web_authn_credential->>'id' from auth.mfa_factors
                     where user_id = $1 and web_authn_credential is not null",
                    &[&user.id],
                )
                .await?
                .iter()
                .map(|r| json!({ "type": "public-key", "id": r.get::<_, String>(0) }))
                .collect();
            let name = user
                .email
                .clone()
                .filter(|e| !e.is_empty())
                .or_else(|| user.phone.clone().filter(|p| !p.is_empty()))
                .unwrap_or_else(|| user.id.to_string());
            (
                "create",
                json!({
                    "challenge": challenge,
                    "rp": { "name": rp.name, "id": rp.id },
                    // GoTrue's user handle: the user's id as text.
                    "user": { "name": name, "displayName": name, "id": b64url(user.id.to_string().as_bytes()) },
                    "pubKeyCredParams": [{ "type": "public-key", "alg": -7 }],
                    "timeout": timeout,
                    "excludeCredentials": exclude,
                    "authenticatorSelection": {
                        "requireResidentKey": false,
                        "residentKey": "discouraged",
                        "userVerification": rp.user_verification,
                    },
                    "attestation": "none",
                }),
            )
        }
    };
    let session = json!({
        "type": kind,
        "challenge": challenge,
        "user_id": user.id,
        "rp_id": rp.id,
    });
    let row = tx
        .query_one(
            "insert into auth.mfa_challenges (factor_id, ip_address, web_authn_session_data)
             values ($1, $2, $3) returning id, extract(epoch from created_at)::bigint",
            &[&factor_id, &ip, &session],
        )
        .await?;
    let (challenge_id, created): (Uuid, i64) = (row.get(0), row.get(1));
    Ok(json!({
        "id": challenge_id,
        "type": "webauthn",
        "expires_at": created + state.args.mfa.challenge_expiry,
        "webauthn": { "type": kind, "credential_options": { "publicKey": public_key } },
    }))
}

#[derive(Deserialize)]
pub(crate) struct VerifyParams {
    #[serde(rename = "type")]
    kind: Option<String>,
    credential_response: Option<Value>,
}

#[derive(Deserialize)]
struct VerifyBody {
    challenge_id: Option<String>,
    webauthn: Option<VerifyParams>,
}

/// `POST /factors/{id}/verify` with `webauthn` (supabase-js `mfa.verify({factorId,
/// challengeId, webauthn: {type, rpId, rpOrigins, credential_response}})`): the factor's
/// credential is registered (`create`) or proved (`request`), and the session is raised to
/// `aal2` as a TOTP code raises it.
pub(crate) async fn verify(
    state: &AuthState,
    info: &ReqInfo,
    headers: &HeaderMap,
    factor_id: Uuid,
    body: &Bytes,
) -> Result<Response, AuthError> {
    let body: VerifyBody = parse_body(body)?;
    let (user, sid, _aal) = crate::mfa::session_user(state, headers).await?;
    rate_limit(state, Limit::MfaVerifyPerFactor, &factor_id.to_string())?;
    let params = body
        .webauthn
        .ok_or_else(|| AuthError::new(ErrorCode::ValidationFailed, "WebAuthn config required"))?;
    let kind = match params.kind.as_deref() {
        Some(k @ ("create" | "request")) => k.to_string(),
        _ => {
            return Err(AuthError::new(
                ErrorCode::ValidationFailed,
                "WebAuthn type must be create or request",
            ))
        }
    };
    let response = params.credential_response.ok_or_else(|| {
        AuthError::new(ErrorCode::ValidationFailed, "credential_response required")
    })?;
    let challenge_id = body
        .challenge_id
        .as_deref()
        .and_then(|c| Uuid::parse_str(c.trim()).ok())
        .ok_or(ErrorCode::MfaChallengeNotFound)?;
    let rp = rp_of(state)?;

    let mut tx = state.tx().await?;
    let Some(factor) = tx
        .query_opt(
            "select factor_type, status, web_authn_credential from auth.mfa_factors
             where id = $1 and user_id = $2 for update",
            &[&factor_id, &user.id],
        )
        .await?
    else {
        return Err(ErrorCode::MfaFactorNotFound.into());
    };
    let (factor_type, status, stored): (String, String, Option<Value>) =
        (factor.get(0), factor.get(1), factor.get(2));
    if factor_type != "webauthn" {
        return Err(AuthError::new(
            ErrorCode::ValidationFailed,
            "webauthn is only for WebAuthn factors; send a code",
        ));
    }
    if !state.args.webauthn.verify_enabled {
        return Err(ErrorCode::MfaWebauthnVerifyNotEnabled.into());
    }
    let (mut tx, session) =
        crate::mfa::take_challenge(state, tx, &info.client.ip, factor_id, challenge_id).await?;
    // From here the challenge is spent, whatever the outcome: it is deleted now, and a
    // refused response commits that deletion.
    tx.execute(
        "delete from auth.mfa_challenges where id = $1",
        &[&challenge_id],
    )
    .await?;
    let session = session.unwrap_or(Value::Null);
    let expected: Option<Vec<u8>> = session
        .get("challenge")
        .and_then(Value::as_str)
        .and_then(|c| B64URL.decode(c).ok());
    let bound = session.get("user_id").and_then(Value::as_str) == Some(&user.id.to_string());
    let (Some(expected), true) = (expected, bound) else {
        tx.commit().await?;
        return Err(ErrorCode::MfaChallengeNotFound.into());
    };
    if session.get("type").and_then(Value::as_str) != Some(kind.as_str()) {
        tx.commit().await?;
        return Err(AuthError::new(
            ErrorCode::ValidationFailed,
            format!(
                "this challenge is for a {} ceremony",
                session.get("type").and_then(Value::as_str).unwrap_or("?")
            ),
        ));
    }
    let outcome = if kind == "create" {
        if status == "verified" {
            Err(Refused("the factor already has a credential".into()))
        } else {
            verify_registration(&rp, &expected, &response).map(|c| (Some(c), None))
        }
    } else {
        match stored.as_ref().map(StoredCredential::from_json) {
            Some(Ok(cred)) => verify_assertion(
                &rp,
                &expected,
                &cred,
                user.id.to_string().as_bytes(),
                &response,
            )
            .map(|a| (None, Some(a))),
            Some(Err(e)) => return Err(AuthError::internal(format!("stored credential: {e}"))),
            None => Err(Refused("the factor has no credential yet".into())),
        }
    };
    let (new, assertion) = match outcome {
        Ok(o) => o,
        Err(Refused(why)) => {
            tx.commit().await?;
            tracing::info!(user_id = %user.id, factor_id = %factor_id, reason = %why, "WebAuthn response refused");
            return Err(AuthError::new(
                ErrorCode::MfaVerificationFailed,
                format!("WebAuthn verification failed: {why}"),
            ));
        }
    };
    if let Some(cred) = &new {
        let taken: bool = tx
            .query_one(
                "select exists (select 1 from auth.mfa_factors
                   where user_id = $1 and web_authn_credential->>'id' = $2)",
                &[&user.id, &b64url(&cred.id)],
            )
            .await?
            .get(0);
        if taken {
            tx.commit().await?;
            return Err(AuthError::new(
                ErrorCode::MfaVerificationFailed,
                "WebAuthn verification failed: this authenticator is already registered",
            ));
        }
        tx.execute(
            "update auth.mfa_factors set status = 'verified', web_authn_credential = $2,
               web_authn_aaguid = $3, updated_at = now() where id = $1",
            &[&factor_id, &cred.to_json(), &cred.aaguid],
        )
        .await?;
    }
    if let Some(a) = &assertion {
        tx.execute(
            "update auth.mfa_factors set updated_at = now(),
               web_authn_credential = web_authn_credential
                 || jsonb_build_object('sign_count', $2::bigint, 'flags', $3::jsonb)
             where id = $1",
            &[&factor_id, &i64::from(a.sign_count), &flags_json(a.flags)],
        )
        .await?;
    }
    let (amr, refresh) =
        crate::mfa::raise_session(state, &mut tx, user.id, sid, factor_id, "webauthn").await?;
    let user = model::find_user(&mut tx, user.id)
        .await?
        .ok_or(ErrorCode::UserNotFoundFromJwt)?;
    tx.commit().await?;
    if new.is_some() {
        tracing::info!(user_id = %user.id, factor_id = %factor_id, "WebAuthn factor verified");
    }
    Ok(Json(model::session_json(
        state,
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
    use p256::ecdsa::signature::Signer;

    fn rp() -> RelyingParty {
        RelyingParty {
            id: "example.com".into(),
            name: "Example".into(),
            origins: vec!["https://app.example.com".into()],
            user_verification: "preferred".into(),
        }
    }

    // A minimal CBOR encoder for the test authenticator.
    fn head(major: u8, n: u64, out: &mut Vec<u8>) {
        match n {
            0..=23 => out.push(major << 5 | n as u8),
            24..=0xff => out.extend([major << 5 | 24, n as u8]),
            _ => {
                out.push(major << 5 | 25);
                out.extend((n as u16).to_be_bytes());
            }
        }
    }
    fn int(i: i64, out: &mut Vec<u8>) {
        if i >= 0 {
            head(0, i as u64, out)
        } else {
            head(1, (-1 - i) as u64, out)
        }
    }
    fn bytes(b: &[u8], out: &mut Vec<u8>) {
        head(2, b.len() as u64, out);
        out.extend(b);
    }
    fn text(s: &str, out: &mut Vec<u8>) {
        head(3, s.len() as u64, out);
        out.extend(s.as_bytes());
    }

    fn cose(key: &p256::ecdsa::VerifyingKey) -> Vec<u8> {
        let p = key.to_encoded_point(false);
        let mut out = Vec::new();
        head(5, 5, &mut out);
        int(1, &mut out);
        int(2, &mut out);
        int(3, &mut out);
        int(-7, &mut out);
        int(-1, &mut out);
        int(1, &mut out);
        int(-2, &mut out);
        bytes(p.x().unwrap(), &mut out);
        int(-3, &mut out);
        bytes(p.y().unwrap(), &mut out);
        out
    }

    fn auth_data(rp_id: &str, flags: u8, count: u32, attested: Option<(&[u8], &[u8])>) -> Vec<u8> {
        let mut d = Sha256::digest(rp_id.as_bytes()).to_vec();
        d.push(flags);
        d.extend(count.to_be_bytes());
        if let Some((id, key)) = attested {
            d.extend([0u8; 16]);
            d.extend((id.len() as u16).to_be_bytes());
            d.extend(id);
            d.extend(key);
        }
        d
    }

    fn client_data(kind: &str, challenge: &[u8], origin: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({"type": kind, "challenge": b64url(challenge), "origin": origin}))
            .unwrap()
    }

    fn registration(
        key: &p256::ecdsa::SigningKey,
        id: &[u8],
        challenge: &[u8],
        fmt: &str,
        rp_id: &str,
    ) -> Value {
        let ad = auth_data(
            rp_id,
            FLAG_UP | FLAG_AT,
            0,
            Some((id, &cose(key.verifying_key()))),
        );
        let mut att = Vec::new();
        head(5, 3, &mut att);
        text("fmt", &mut att);
        text(fmt, &mut att);
        text("attStmt", &mut att);
        head(5, 0, &mut att);
        text("authData", &mut att);
        bytes(&ad, &mut att);
        json!({
            "id": b64url(id), "rawId": b64url(id), "type": "public-key",
            "response": {
                "clientDataJSON": b64url(&client_data("webauthn.create", challenge, "https://app.example.com")),
                "attestationObject": b64url(&att),
                "transports": ["usb"],
            }
        })
    }

    fn assertion(
        key: &p256::ecdsa::SigningKey,
        id: &[u8],
        challenge: &[u8],
        count: u32,
        flags: u8,
    ) -> Value {
        let ad = auth_data("example.com", flags, count, None);
        let cd = client_data("webauthn.get", challenge, "https://app.example.com");
        let mut signed = ad.clone();
        signed.extend(Sha256::digest(&cd));
        let sig: p256::ecdsa::Signature = key.sign(&signed);
        json!({
            "id": b64url(id), "rawId": b64url(id), "type": "public-key",
            "response": {
                "clientDataJSON": b64url(&cd),
                "authenticatorData": b64url(&ad),
                "signature": b64url(sig.to_der().as_bytes()),
                "userHandle": b64url(&[7u8; 16]),
            }
        })
    }

    fn key() -> p256::ecdsa::SigningKey {
        p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).unwrap()
    }

    #[test]
    fn registration_then_assertions() {
        let (k, id, ch) = (key(), b"cred-1".to_vec(), [9u8; 32]);
        let c = verify_registration(
            &rp(),
            &ch,
            &registration(&k, &id, &ch, "none", "example.com"),
        )
        .unwrap();
        assert_eq!(c.id, id);
        assert_eq!(c.transports, vec!["usb"]);
        let stored = StoredCredential::from_json(&c.to_json()).unwrap();
        let a = verify_assertion(
            &rp(),
            &ch,
            &stored,
            &[7u8; 16],
            &assertion(&k, &id, &ch, 5, FLAG_UP),
        )
        .unwrap();
        assert_eq!(a.sign_count, 5);
        let stored = StoredCredential {
            sign_count: 5,
            ..stored
        };
        // The counter must grow.
        let e = verify_assertion(
            &rp(),
            &ch,
            &stored,
            &[7u8; 16],
            &assertion(&k, &id, &ch, 5, FLAG_UP),
        )
        .unwrap_err();
        assert!(e.0.contains("cloned"), "{e:?}");
        // Without user presence; with UV required and no UV flag.
        let e = verify_assertion(
            &rp(),
            &ch,
            &stored,
            &[7u8; 16],
            &assertion(&k, &id, &ch, 6, 0),
        )
        .unwrap_err();
        assert!(e.0.contains("UP"), "{e:?}");
        let strict = RelyingParty {
            user_verification: "required".into(),
            ..rp()
        };
        let e = verify_assertion(
            &strict,
            &ch,
            &stored,
            &[7u8; 16],
            &assertion(&k, &id, &ch, 6, FLAG_UP),
        )
        .unwrap_err();
        assert!(e.0.contains("UV"), "{e:?}");
        verify_assertion(
            &strict,
            &ch,
            &stored,
            &[7u8; 16],
            &assertion(&k, &id, &ch, 6, FLAG_UP | FLAG_UV),
        )
        .unwrap();
        // Another key's signature; another user's handle; another challenge.
        let other = p256::ecdsa::SigningKey::from_slice(&[0x43; 32]).unwrap();
        let e = verify_assertion(
            &rp(),
            &ch,
            &stored,
            &[7u8; 16],
            &assertion(&other, &id, &ch, 6, FLAG_UP),
        )
        .unwrap_err();
        assert!(e.0.contains("signature"), "{e:?}");
        let e = verify_assertion(
            &rp(),
            &ch,
            &stored,
            &[8u8; 16],
            &assertion(&k, &id, &ch, 6, FLAG_UP),
        )
        .unwrap_err();
        assert!(e.0.contains("user handle"), "{e:?}");
        let e = verify_assertion(
            &rp(),
            &[1u8; 32],
            &stored,
            &[7u8; 16],
            &assertion(&k, &id, &ch, 6, FLAG_UP),
        )
        .unwrap_err();
        assert!(e.0.contains("challenge"), "{e:?}");
    }

    #[test]
    fn registration_refusals() {
        let (k, id, ch) = (key(), b"cred-1".to_vec(), [9u8; 32]);
        let e = verify_registration(
            &rp(),
            &ch,
            &registration(&k, &id, &ch, "packed", "example.com"),
        )
        .unwrap_err();
        assert!(e.0.contains("attestation format \"packed\""), "{e:?}");
        let e = verify_registration(&rp(), &ch, &registration(&k, &id, &ch, "none", "evil.com"))
            .unwrap_err();
        assert!(e.0.contains("RP ID hash"), "{e:?}");
        let mut r = registration(&k, &id, &ch, "none", "example.com");
        r["response"]["clientDataJSON"] = json!(b64url(&client_data(
            "webauthn.create",
            &ch,
            "https://evil.example.net"
        )));
        let e = verify_registration(&rp(), &ch, &r).unwrap_err();
        assert!(e.0.contains("origin"), "{e:?}");
        let mut r = registration(&k, &id, &ch, "none", "example.com");
        r["id"] = json!(b64url(b"other"));
        r["rawId"] = json!(b64url(b"other"));
        let e = verify_registration(&rp(), &ch, &r).unwrap_err();
        assert!(e.0.contains("credential id"), "{e:?}");
    }

    #[test]
    fn cbor_is_strict() {
        assert_eq!(cbor_decode(&[0x18, 0x64]).unwrap(), (Cbor::Int(100), 2));
        assert_eq!(cbor_decode(&[0x38, 0x63]).unwrap().0, Cbor::Int(-100));
        // Indefinite length, truncated, huge counts, duplicate keys, tags, floats, depth.
        assert!(cbor_decode(&[0x5f]).is_err());
        assert!(cbor_decode(&[0x44, 1, 2]).is_err());
        assert!(cbor_decode(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(cbor_decode(&[0xa2, 0x01, 0x01, 0x01, 0x02]).is_err());
        assert!(cbor_decode(&[0xc0, 0x01]).is_err());
        assert!(cbor_decode(&[0xf9, 0, 0]).is_err());
        assert!(cbor_decode(&[0x81; 20]).is_err());
        assert!(cbor_decode(&[0x62, 0xff, 0xfe]).is_err());
    }

    #[test]
    fn relying_party_settings() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: AuthArgs,
        }
        let parse = |args: &[&str]| {
            let mut v = vec!["t"];
            v.extend_from_slice(args);
            relying_party(&T::try_parse_from(v).unwrap().a)
        };
        let r = parse(&["--site-url", "https://app.example.com/x"]).unwrap();
        assert_eq!(r.id, "app.example.com");
        assert_eq!(r.origins, vec!["https://app.example.com"]);
        let r = parse(&[
            "--webauthn-rp-id",
            "example.com",
            "--webauthn-rp-origins",
            "https://a.example.com, http://localhost:3000",
        ]);
        assert!(r.is_err(), "localhost is not under example.com: {r:?}");
        let r = parse(&[
            "--webauthn-rp-id",
            "localhost",
            "--webauthn-rp-origins",
            "http://localhost:3000",
        ])
        .unwrap();
        assert_eq!(r.origins, vec!["http://localhost:3000"]);
        assert!(parse(&[
            "--webauthn-rp-id",
            "example.com",
            "--webauthn-rp-origins",
            "http://example.com"
        ])
        .is_err());
        assert!(parse(&[]).is_err());
    }
}
