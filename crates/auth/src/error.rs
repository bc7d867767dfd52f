//! The one registry of Supabase Auth error codes (HTTP status, machine code, default
//! message) and the two wire shapes they are sent in.
//!
//! A handler returns an [`AuthError`]; its response carries the legacy shape
//! (`{"code":<status>,"error_code","msg"}` + `x-sb-error-code`) and the error itself as a
//! response extension, and [`api_version_layer`] rewrites it to the 2024-01-01 shape
//! (`{"code":"<error_code>","error_code","msg","message"}` + the echoed
//! `X-Supabase-Api-Version`) when the request asked for that version.
use std::borrow::Cow;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

macro_rules! error_codes {
    ($($variant:ident => ($status:literal, $code:literal, $msg:literal)),* $(,)?) => {
        /// Every error code `/auth/v1` answers with: status, code and default message, once.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode { $($variant),* }

        impl ErrorCode {
            pub fn status(self) -> StatusCode {
                match self { $(ErrorCode::$variant => StatusCode::from_u16($status).expect("valid status")),* }
            }
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code),* }
            }
            pub fn default_message(self) -> &'static str {
                match self { $(ErrorCode::$variant => $msg),* }
            }
            /// Every code, for tests and documentation.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];
        }
    };
}

error_codes! {
    InvalidCredentials => (400, "invalid_credentials", "Invalid login credentials"),
    EmailNotConfirmed => (400, "email_not_confirmed", "Email not confirmed"),
    ValidationFailed => (400, "validation_failed", "Validation failed"),
    BadJson => (400, "bad_json", "Could not parse request body as JSON"),
    // GoTrue's validateEmail: a malformed address is a 400 validation_failed (its
    // email_address_invalid is for addresses its mail checks reject, which we do not run).
    EmailAddressInvalid => (400, "validation_failed", "Unable to validate email address: invalid format"),
    RefreshTokenNotFound => (400, "refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found"),
    RefreshTokenAlreadyUsed => (400, "refresh_token_already_used", "Invalid Refresh Token: Already Used"),
    SessionExpired => (400, "session_expired", "Invalid Refresh Token: Session Expired"),
    UserBanned => (400, "user_banned", "User is banned"),
    NoAuthorization => (401, "no_authorization", "This endpoint requires a valid Bearer token"),
    BadJwt => (403, "bad_jwt", "invalid JWT: unable to parse or verify signature"),
    NotAdmin => (403, "not_admin", "User not allowed"),
    SessionNotFound => (403, "session_not_found", "Session from session_id claim in JWT does not exist"),
    UserNotFoundFromJwt => (403, "user_not_found", "User from sub claim in JWT does not exist"),
    UserNotFound => (404, "user_not_found", "User not found"),
    NotFound => (404, "not_found", "Not found"),
    MethodNotAllowed => (405, "validation_failed", "Method not allowed"),
    UserAlreadyExists => (422, "user_already_exists", "User already registered"),
    EmailExists => (422, "email_exists", "A user with this email address has already been registered"),
    PhoneExists => (422, "phone_exists", "A user with this phone number has already been registered"),
    WeakPassword => (422, "weak_password", "Password is too weak"),
    SamePassword => (422, "same_password", "New password should be different from the old password."),
    AnonymousPasswordWithoutEmail => (422, "validation_failed", "Updating password of an anonymous user without an email or phone is not allowed"),
    SignupDisabled => (422, "signup_disabled", "Signups not allowed for this instance"),
    AnonymousProviderDisabled => (422, "anonymous_provider_disabled", "Anonymous sign-ins are disabled"),
    EmailProviderDisabled => (422, "email_provider_disabled", "Email logins are disabled"),
    PhoneProviderDisabled => (422, "phone_provider_disabled", "Phone logins are disabled"),
    // The 400 GoTrue answers on the phone routes that would send an SMS (`/otp`, `/signup`,
    // `/resend`) when there is no SMS provider; their messages differ.
    PhoneProviderUnsupported => (400, "phone_provider_disabled", "Unsupported phone provider"),
    SamlProviderDisabled => (404, "saml_provider_disabled", "SAML 2.0 is disabled"),
    Web3ProviderDisabled => (422, "web3_provider_disabled", "Web3 provider is disabled"),
    OtpExpired => (403, "otp_expired", "Token has expired or is invalid"),
    ReauthenticationNeeded => (400, "reauthentication_needed", "Password update requires reauthentication"),
    ReauthenticationNotValid => (422, "reauthentication_not_valid", "Verification code needs to be provided: request one with reauthenticate, it expires"),
    BadCodeVerifier => (400, "bad_code_verifier", "code challenge does not match previously saved code verifier"),
    FlowStateNotFound => (404, "flow_state_not_found", "invalid flow state, no valid flow state found"),
    FlowStateExpired => (422, "flow_state_expired", "invalid flow state, flow state has expired"),
    BadOAuthState => (400, "bad_oauth_state", "OAuth callback with invalid state"),
    BadOAuthCallback => (400, "bad_oauth_callback", "OAuth callback with missing authorization code missing"),
    OAuthProviderNotSupported => (400, "oauth_provider_not_supported", "Unsupported provider"),
    ProviderDisabled => (400, "provider_disabled", "Provider is not enabled"),
    ManualLinkingDisabled => (404, "manual_linking_disabled", "Manual linking is disabled"),
    NotFoundValidation => (404, "validation_failed", "Not found"),
    SingleIdentityNotDeletable => (422, "single_identity_not_deletable", "User must have at least 1 identity after unlinking"),
    IdentityNotFound => (422, "identity_not_found", "Identity doesn't exist"),
    IdentityAlreadyExists => (422, "identity_already_exists", "Identity is already linked"),
    EmailConflictIdentityNotDeletable => (422, "email_conflict_identity_not_deletable", "Unable to unlink identity due to email conflict"),
    ProviderEmailNeedsVerification => (422, "provider_email_needs_verification", "Unverified email with the provider"),
    OtpDisabled => (422, "otp_disabled", "Signups not allowed for otp"),
    MfaFactorNotFound => (404, "mfa_factor_not_found", "Factor not found"),
    MfaChallengeNotFound => (422, "mfa_factor_not_found", "MFA factor with the provided challenge ID not found"),
    MfaIpAddressMismatch => (422, "mfa_ip_address_mismatch", "Challenge and verify IP addresses mismatch."),
    MfaChallengeExpired => (422, "mfa_challenge_expired", "MFA challenge has expired, verify against another challenge or create a new challenge."),
    MfaVerificationFailed => (422, "mfa_verification_failed", "Invalid TOTP code entered"),
    MfaFactorNameConflict => (422, "mfa_factor_name_conflict", "A factor with this friendly name already exists"),
    TooManyEnrolledMfaFactors => (422, "too_many_enrolled_mfa_factors", "Maximum number of verified factors reached, unenroll to continue"),
    InsufficientAal => (403, "insufficient_aal", "AAL2 required to enroll a new factor"),
    InsufficientAalToUnenroll => (422, "insufficient_aal", "AAL2 required to unenroll verified factor"),
    MfaTotpEnrollNotEnabled => (422, "mfa_totp_enroll_not_enabled", "MFA enroll is disabled for TOTP"),
    MfaTotpVerifyNotEnabled => (422, "mfa_totp_verify_not_enabled", "MFA verification is disabled for TOTP"),
    MfaPhoneEnrollNotEnabled => (422, "mfa_phone_enroll_not_enabled", "MFA enroll is disabled for Phone"),
    MfaWebauthnEnrollNotEnabled => (422, "mfa_web_authn_enroll_not_enabled", "MFA enroll is disabled for WebAuthn"),
    MfaWebauthnVerifyNotEnabled => (422, "mfa_web_authn_verify_not_enabled", "MFA verification is disabled for WebAuthn"),
    PasskeyDisabled => (404, "passkey_disabled", "Passkeys are disabled"),
    TooManyPasskeys => (422, "too_many_passkeys", "Maximum number of passkeys reached"),
    WebauthnCredentialExists => (422, "webauthn_credential_exists", "This credential is already registered"),
    WebauthnCredentialNotFound => (400, "webauthn_credential_not_found", "Passkey not found"),
    WebauthnChallengeNotFound => (400, "webauthn_challenge_not_found", "Challenge not found or already used"),
    WebauthnChallengeExpired => (400, "webauthn_challenge_expired", "Challenge has expired"),
    WebauthnVerificationFailed => (400, "webauthn_verification_failed", "Credential verification failed"),
    PasskeyEmailNotConfirmed => (403, "email_not_confirmed", "Email not confirmed"),
    PasskeyPhoneNotConfirmed => (403, "phone_not_confirmed", "Phone not confirmed"),
    PasskeyUserBanned => (403, "user_banned", "User is banned"),
    OverRequestRateLimit => (429, "over_request_rate_limit", "Request rate limit reached"),
    OverEmailSendRateLimit => (429, "over_email_send_rate_limit", "Email rate limit exceeded"),
    UnexpectedFailure => (500, "unexpected_failure", "Unexpected failure, please check server logs for more information"),
    ServiceUnavailable => (503, "unexpected_failure", "The database is unavailable, please try again"),
}

/// An error as `/auth/v1` sends it.
#[derive(Debug, Clone)]
pub enum AuthError {
    /// A registered code, with its default or a more specific message.
    Api {
        code: ErrorCode,
        message: Cow<'static, str>,
        /// `weak_password.reasons` of a 422 weak_password.
        weak_reasons: Option<Vec<&'static str>>,
    },
    /// OAuth-style `{"error","error_description"}` 400 (the `/token` request errors).
    OAuth {
        error: &'static str,
        description: Cow<'static, str>,
    },
}

impl From<ErrorCode> for AuthError {
    fn from(code: ErrorCode) -> Self {
        AuthError::Api {
            code,
            message: Cow::Borrowed(code.default_message()),
            weak_reasons: None,
        }
    }
}

impl AuthError {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        AuthError::Api {
            code,
            message: message.into(),
            weak_reasons: None,
        }
    }

    pub fn weak_password(min_length: usize) -> Self {
        AuthError::Api {
            code: ErrorCode::WeakPassword,
            message: format!("Password should be at least {min_length} characters.").into(),
            weak_reasons: Some(vec!["length"]),
        }
    }

    pub fn oauth(error: &'static str, description: impl Into<Cow<'static, str>>) -> Self {
        AuthError::OAuth {
            error,
            description: description.into(),
        }
    }

    /// An internal failure: logged with its cause, answered without it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "auth: unexpected failure");
        ErrorCode::UnexpectedFailure.into()
    }

    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            AuthError::Api { code, .. } => Some(*code),
            AuthError::OAuth { .. } => None,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            AuthError::Api { code, .. } => code.status(),
            AuthError::OAuth { .. } => StatusCode::BAD_REQUEST,
        }
    }

    /// The body for clients that sent no API version (GoTrue's `HTTPError`).
    fn legacy_body(&self) -> Value {
        match self {
            AuthError::Api {
                code,
                message,
                weak_reasons,
            } => {
                let mut b = json!({ "code": code.status().as_u16(), "error_code": code.as_str(), "msg": message });
                if let Some(r) = weak_reasons {
                    b["weak_password"] = json!({ "reasons": r });
                }
                b
            }
            AuthError::OAuth { error, description } => {
                json!({ "error": error, "error_description": description })
            }
        }
    }

    /// The body for API version 2024-01-01 and later.
    fn versioned_body(&self) -> Value {
        match self {
            AuthError::Api {
                code,
                message,
                weak_reasons,
            } => {
                let mut b = json!({ "code": code.as_str(), "error_code": code.as_str(), "msg": message, "message": message });
                if let Some(r) = weak_reasons {
                    b["weak_password"] = json!({ "reasons": r });
                }
                b
            }
            AuthError::OAuth { .. } => self.legacy_body(),
        }
    }
}

impl From<agencyflow_db::DbError> for AuthError {
    fn from(e: agencyflow_db::DbError) -> Self {
        match e {
            agencyflow_db::DbError::Unavailable(m) => {
                tracing::warn!(error = %m, "auth: database unavailable");
                ErrorCode::ServiceUnavailable.into()
            }
            other => AuthError::internal(other),
        }
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, axum::Json(body)).into_response();
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let mut r = json_response(self.status(), &self.legacy_body());
        if let AuthError::Api { code, .. } = &self {
            r.headers_mut()
                .insert("x-sb-error-code", HeaderValue::from_static(code.as_str()));
        }
        r.extensions_mut().insert(self);
        r
    }
}

/// The API version GoTrue answers with for 2024-01-01 and later requests.
pub const API_VERSION_2024_01_01: &str = "2024-01-01";

/// `true` when the request's `X-Supabase-Api-Version` is a date on or after 2024-01-01.
pub fn wants_2024_01_01(headers: &http::HeaderMap) -> bool {
    headers
        .get("x-supabase-api-version")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| chrono::NaiveDate::parse_from_str(v.trim(), "%Y-%m-%d").ok())
        .is_some_and(|d| d >= chrono::NaiveDate::from_ymd_opt(2024, 1, 1).expect("date"))
}

/// Picks the error shape by the request's API version and echoes the version header.
pub async fn api_version_layer(req: Request<Body>, next: Next) -> Response {
    let versioned = wants_2024_01_01(req.headers());
    let mut res = next.run(req).await;
    if !versioned {
        return res;
    }
    if let Some(err) = res.extensions_mut().remove::<AuthError>() {
        if let AuthError::Api { .. } = err {
            res = json_response(err.status(), &err.versioned_body());
        } else {
            res.extensions_mut().insert(err);
        }
    }
    res.headers_mut().insert(
        "x-supabase-api-version",
        HeaderValue::from_static(API_VERSION_2024_01_01),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_consistent() {
        for c in ErrorCode::ALL {
            assert!(!c.as_str().is_empty());
            assert!(c.status().is_client_error() || c.status().is_server_error());
            assert!(!c.default_message().is_empty());
        }
    }

    #[test]
    fn shapes() {
        let e = AuthError::weak_password(8);
        let l = e.legacy_body();
        assert_eq!(l["code"], 422);
        assert_eq!(l["error_code"], "weak_password");
        assert_eq!(l["msg"], "Password should be at least 8 characters.");
        assert_eq!(l["weak_password"]["reasons"][0], "length");
        let v = e.versioned_body();
        assert_eq!(v["code"], "weak_password");
        assert_eq!(v["message"], v["msg"]);
        let o = AuthError::oauth("invalid_request", "refresh_token required");
        assert_eq!(o.versioned_body()["error"], "invalid_request");
    }

    #[test]
    fn version_header_parsing() {
        let mut h = http::HeaderMap::new();
        assert!(!wants_2024_01_01(&h));
        h.insert(
            "x-supabase-api-version",
            HeaderValue::from_static("2024-01-01"),
        );
        assert!(wants_2024_01_01(&h));
        h.insert(
            "x-supabase-api-version",
            HeaderValue::from_static("2025-06-30"),
        );
        assert!(wants_2024_01_01(&h));
        h.insert(
            "x-supabase-api-version",
            HeaderValue::from_static("2023-12-31"),
        );
        assert!(!wants_2024_01_01(&h));
    }
}
