//! Supabase Auth (GoTrue) compatible `/auth/v1`, and the project's JWT keys.
//!
//! Handlers parse the request, do their database work in one transaction as
//! `supabase_auth_admin` (never as a superuser), and answer with GoTrue's JSON shapes.
pub mod admin;
pub mod error;
pub mod external;
mod handlers;
pub mod mailer;
pub mod mfa;
mod model;
mod off;
mod otp;
pub mod passkey;
pub mod password;
pub mod ratelimit;
pub mod tokens;
pub mod webauthn;

use std::sync::Arc;
use std::time::Duration;

use agencyflow_db::{ClaimsTxn, Db, TxSettings};
use axum::routing::{any, get, post};
use axum::Router;

pub use agencyflow_keys::{api_key, generate_es256_jwk, jwt, JwtError, JwtKeys, VerifiedClaims};
pub use error::{AuthError, ErrorCode};
pub use otp::{email_otp_hash, MAX_FAILED_ATTEMPTS};

use ratelimit::{Limit, Rate, RateLimiter};
use tokens::RefreshTokens;

/// Auth settings, under GoTrue's environment names.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// Access-token lifetime in seconds (1 s to 10 years).
    #[arg(long = "jwt-exp", env = "GOTRUE_JWT_EXP", default_value_t = 3600,
          value_parser = clap::value_parser!(i64).range(1..=MAX_CONFIG_SECS))]
    pub jwt_exp: i64,
    /// The `aud` claim of issued tokens (and the only one accepted when present).
    #[arg(
        long = "jwt-aud",
        env = "GOTRUE_JWT_AUD",
        default_value = "authenticated"
    )]
    pub jwt_aud: String,
    /// Bearer roles allowed to use the admin API (`/auth/v1/admin/*`), comma-separated.
    #[arg(
        long = "jwt-admin-roles",
        env = "GOTRUE_JWT_ADMIN_ROLES",
        default_value = "service_role,supabase_admin"
    )]
    pub jwt_admin_roles: String,
    /// Signing keys as GoTrue takes them: a JSON array of JWKs (RSA → RS256, EC P-256 → ES256,
    /// oct → HS256) with `kid`, `alg` and `key_ops`. The one key with `"sign"` in `key_ops`
    /// signs session tokens (`kid` in the header); the others only verify until removed. The
    /// public RSA/EC keys are served at `/.well-known/jwks.json`.
    #[arg(long = "jwt-keys", env = "GOTRUE_JWT_KEYS", hide_env_values = true)]
    pub jwt_keys: Option<String>,
    /// The `iss` of issued tokens (default: `<API_EXTERNAL_URL>/auth/v1`).
    #[arg(long = "jwt-issuer", env = "GOTRUE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// The public URL of the API (as clients reach it): the `iss` of tokens and the base of
    /// email links. Without it, the request's Host when that is a loopback address (local
    /// development), else `http://localhost`; forwarding headers are never used.
    #[arg(long = "api-external-url", env = "API_EXTERNAL_URL")]
    pub api_external_url: Option<String>,
    /// The front end's URL (the default redirect target).
    #[arg(long = "site-url", env = "GOTRUE_SITE_URL")]
    pub site_url: Option<String>,
    /// Further allowed `redirect_to` targets of email links (comma-separated URL prefixes);
    /// anything else falls back to the site URL.
    #[arg(
        long = "uri-allow-list",
        env = "GOTRUE_URI_ALLOW_LIST",
        default_value = ""
    )]
    pub uri_allow_list: String,
    /// Seconds an emailed link or code stays valid (1 to 86400).
    #[arg(
        long = "mailer-otp-exp",
        env = "GOTRUE_MAILER_OTP_EXP",
        default_value_t = 3600,
        value_parser = clap::value_parser!(i64).range(1..=86_400)
    )]
    pub mailer_otp_exp: i64,
    /// Seconds between two emails of one kind to one address (0 to 86400).
    #[arg(
        long = "smtp-max-frequency",
        env = "GOTRUE_SMTP_MAX_FREQUENCY",
        default_value_t = 60,
        value_parser = clap::value_parser!(i64).range(0..=86_400)
    )]
    pub smtp_max_frequency: i64,
    /// There is no SMTP mailer: log each email's link and code (development only: anyone who
    /// reads the log can sign in as the recipient). Otherwise links come from the admin API's
    /// generate_link.
    #[arg(long = "mailer-log-links", env = "AGENCYFLOW_MAILER_LOG_LINKS", default_value_t = false, action = clap::ArgAction::Set)]
    pub mailer_log_links: bool,
    /// Sign-ups (and an anonymous user's first email) are marked confirmed without proof that
    /// the address is theirs. Off (the default), an address is confirmed only by its emailed
    /// link or code: there is no SMTP mailer, so those come from the admin API's
    /// generate_link (or the log with AGENCYFLOW_MAILER_LOG_LINKS).
    #[arg(long = "mailer-autoconfirm", env = "GOTRUE_MAILER_AUTOCONFIRM", default_value_t = false, action = clap::ArgAction::Set)]
    pub mailer_autoconfirm: bool,
    /// Anonymous sign-ins (`signInAnonymously`).
    #[arg(long = "external-anonymous-users-enabled", env = "GOTRUE_EXTERNAL_ANONYMOUS_USERS_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub anonymous_users_enabled: bool,
    /// Supabase's "secure password change": a password change in a session older than 24 hours
    /// must carry a reauthentication code (`nonce`, from `GET /reauthenticate`).
    #[arg(long = "update-password-require-reauthentication", env = "GOTRUE_SECURITY_UPDATE_PASSWORD_REQUIRE_REAUTHENTICATION", default_value_t = false, action = clap::ArgAction::Set)]
    pub update_password_require_reauthentication: bool,
    /// Refuse new sign-ups (existing users still sign in).
    #[arg(long = "disable-signup", env = "GOTRUE_DISABLE_SIGNUP", default_value_t = false, action = clap::ArgAction::Set)]
    pub disable_signup: bool,
    /// Shortest accepted password.
    #[arg(
        long = "password-min-length",
        env = "GOTRUE_PASSWORD_MIN_LENGTH",
        default_value_t = 8
    )]
    pub password_min_length: usize,
    /// Seconds a rotated refresh token may still be used (concurrent tabs, lost responses;
    /// 0 to 86400).
    #[arg(
        long = "refresh-token-reuse-interval",
        env = "GOTRUE_SECURITY_REFRESH_TOKEN_REUSE_INTERVAL",
        default_value_t = 10,
        value_parser = clap::value_parser!(i64).range(0..=86_400)
    )]
    pub refresh_token_reuse_interval: i64,
    /// Sign-ups and password sign-ins per client IP per 5 minutes (0 = unlimited).
    #[arg(
        long = "rate-limit-sign-in-sign-ups",
        env = "GOTRUE_RATE_LIMIT_SIGN_IN_SIGN_UPS",
        default_value_t = 30.0
    )]
    pub rate_limit_sign_in_sign_ups: f64,
    /// Sign-ups and password sign-ins per email per 5 minutes (0 = unlimited).
    #[arg(
        long = "rate-limit-email-sign-ins",
        env = "AGENCYFLOW_RATE_LIMIT_EMAIL_SIGN_INS",
        default_value_t = 30.0
    )]
    pub rate_limit_email_sign_ins: f64,
    /// Refresh-token grants per client IP per 5 minutes (0 = unlimited).
    #[arg(
        long = "rate-limit-token-refresh",
        env = "GOTRUE_RATE_LIMIT_TOKEN_REFRESH",
        default_value_t = 150.0
    )]
    pub rate_limit_token_refresh: f64,
    /// Anonymous sign-ins per client IP per hour (0 = unlimited).
    #[arg(
        long = "rate-limit-anonymous-users",
        env = "GOTRUE_RATE_LIMIT_ANONYMOUS_USERS",
        default_value_t = 30.0
    )]
    pub rate_limit_anonymous_users: f64,
    /// `/verify` requests (link clicks and codes) per client IP per 5 minutes, and per
    /// target (the address a code is for, or the link's token) (0 = unlimited).
    #[arg(
        long = "rate-limit-verify",
        env = "GOTRUE_RATE_LIMIT_VERIFY",
        default_value_t = 30.0
    )]
    pub rate_limit_verify: f64,
    /// Password and email changes (`PUT /user` with a password, email or nonce) per user per
    /// 5 minutes (0 = unlimited).
    #[arg(
        long = "rate-limit-user-updates",
        env = "AGENCYFLOW_RATE_LIMIT_USER_UPDATES",
        default_value_t = 10.0
    )]
    pub rate_limit_user_updates: f64,
    /// The same per client IP per 5 minutes (0 = unlimited).
    #[arg(
        long = "rate-limit-user-updates-per-ip",
        env = "AGENCYFLOW_RATE_LIMIT_USER_UPDATES_PER_IP",
        default_value_t = 30.0
    )]
    pub rate_limit_user_updates_per_ip: f64,
    /// The request header that carries the client's address (its first value) for the
    /// per-IP limits, e.g. `X-Forwarded-For` behind a reverse proxy that sets it. Unset: the
    /// TCP peer address, and client-sent forwarding headers are ignored (a client could
    /// otherwise pick a fresh "IP" per request and never be limited).
    #[arg(long = "rate-limit-header", env = "GOTRUE_RATE_LIMIT_HEADER")]
    pub rate_limit_header: Option<String>,
    #[command(flatten)]
    pub smtp: mailer::SmtpArgs,
    #[command(flatten)]
    pub mfa: mfa::MfaArgs,
    #[command(flatten)]
    pub webauthn: webauthn::WebAuthnArgs,
    #[command(flatten)]
    pub external: external::ExternalArgs,
}

/// The longest lifetime a setting in seconds may have (10 years): anything longer is a
/// mistake, and overflows timestamp arithmetic.
const MAX_CONFIG_SECS: i64 = 10 * 365 * 24 * 3600;

impl AuthArgs {
    pub fn admin_roles(&self) -> Vec<String> {
        self.jwt_admin_roles
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// Checks the settings that can be wrong in ways clap cannot see (the SMTP From address,
    /// template files), naming the setting at fault.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        self.smtp.check()?;
        webauthn::check(self)
    }

    /// Applies the auth settings that every surface's verification shares (the accepted
    /// `aud`, the asymmetric keys) to the project's keys.
    pub fn configure_keys(&self, keys: JwtKeys) -> Result<JwtKeys, JwtError> {
        let keys = keys.with_audience(Some(self.jwt_aud.clone()));
        match self.jwt_keys.as_deref().filter(|k| !k.trim().is_empty()) {
            Some(jwks) => keys.with_jwks(jwks),
            None => Ok(keys),
        }
    }
}

/// What the auth handlers share.
#[derive(Clone)]
pub struct AuthState {
    pub db: Db,
    pub keys: Arc<JwtKeys>,
    pub args: Arc<AuthArgs>,
    inner: Arc<Inner>,
}

struct Inner {
    limiter: RateLimiter,
    refresh: RefreshTokens,
    otp: otp::OtpKey,
    mailer: mailer::Mailer,
    external: external::provider::Client,
    state_key: external::StateKey,
}

impl AuthState {
    pub fn new(db: Db, keys: Arc<JwtKeys>, args: Arc<AuthArgs>) -> Self {
        const FIVE_MIN: Duration = Duration::from_secs(300);
        let limiter = RateLimiter::new([
            (
                Limit::SignInSignUpsPerIp,
                Rate {
                    capacity: args.rate_limit_sign_in_sign_ups,
                    period: FIVE_MIN,
                },
            ),
            (
                Limit::SignInPerEmail,
                Rate {
                    capacity: args.rate_limit_email_sign_ins,
                    period: FIVE_MIN,
                },
            ),
            (
                Limit::TokenRefreshPerIp,
                Rate {
                    capacity: args.rate_limit_token_refresh,
                    period: FIVE_MIN,
                },
            ),
            (
                Limit::AnonymousPerIp,
                Rate {
                    capacity: args.rate_limit_anonymous_users,
                    period: Duration::from_secs(3600),
                },
            ),
            (
                Limit::VerifyPerIp,
                Rate {
                    capacity: args.rate_limit_verify,
                    period: FIVE_MIN,
                },
            ),
            (
                Limit::VerifyPerTarget,
                Rate {
                    capacity: args.rate_limit_verify,
                    period: FIVE_MIN,
                },
            ),
            (
                Limit::UserUpdatesPerUser,
                Rate {
                    capacity: args.rate_limit_user_updates,
                    period: FIVE_MIN,
                },
            ),
            (
                Limit::UserUpdatesPerIp,
                Rate {
                    capacity: args.rate_limit_user_updates_per_ip,
                    period: FIVE_MIN,
                },
            ),
            (
                Limit::MfaChallengePerIp,
                Rate {
                    capacity: args.mfa.rate_limit_challenge_and_verify,
                    period: Duration::from_secs(60),
                },
            ),
            (
                Limit::MfaVerifyPerIp,
                Rate {
                    capacity: args.mfa.rate_limit_challenge_and_verify,
                    period: Duration::from_secs(60),
                },
            ),
            (
                Limit::MfaVerifyPerFactor,
                Rate {
                    capacity: args.mfa.rate_limit_challenge_and_verify,
                    period: Duration::from_secs(60),
                },
            ),
            (
                Limit::EmailSendPerAddress,
                Rate {
                    capacity: 1.0,
                    period: Duration::from_secs(args.smtp_max_frequency.max(0) as u64),
                },
            ),
        ]);
        // Successor tokens are keyed by a value only the server knows: a signature by the
        // project's keys over a fixed message.
        let material = keys
            .sign_hs256(&serde_json::json!({ "purpose": "refresh-token-derivation" }))
            .unwrap_or_default();
        password::warm_up();
        log_address_policy(&args);
        let otp = otp::OtpKey::new(&keys);
        let mailer = mailer::Mailer::new(&args.smtp);
        let state_key = external::StateKey::new(&keys);
        AuthState {
            db,
            keys,
            args,
            inner: Arc::new(Inner {
                limiter,
                refresh: RefreshTokens::new(material.as_bytes()),
                otp,
                mailer,
                external: external::provider::Client::new(),
                state_key,
            }),
        }
    }

    pub(crate) fn mailer(&self) -> &mailer::Mailer {
        &self.inner.mailer
    }

    pub(crate) fn external(&self) -> &external::provider::Client {
        &self.inner.external
    }

    pub(crate) fn state_key(&self) -> &external::StateKey {
        &self.inner.state_key
    }

    pub(crate) fn otp_key(&self) -> &otp::OtpKey {
        &self.inner.otp
    }

    pub(crate) fn limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }

    pub(crate) fn refresh_tokens(&self) -> &RefreshTokens {
        &self.inner.refresh
    }

    /// A transaction as the auth service's own role.
    pub(crate) async fn tx(&self) -> Result<ClaimsTxn, AuthError> {
        Ok(self
            .db
            .begin(&TxSettings::new(
                "supabase_auth_admin",
                r#"{"role":"supabase_auth_admin"}"#,
            ))
            .await?)
    }
}

/// Says at start how email addresses are (not) proved, and where links point.
fn log_address_policy(args: &AuthArgs) {
    if args.mailer_autoconfirm {
        tracing::warn!(
            "GOTRUE_MAILER_AUTOCONFIRM=true: sign-up email addresses are marked confirmed without \
             proof that they belong to the user who gave them"
        );
    } else if args.smtp.enabled() {
        tracing::info!(
            smtp_host = args.smtp.smtp_host.as_deref().unwrap_or_default(),
            "email addresses are confirmed by the link or code mailed to them"
        );
    } else {
        tracing::warn!(
            "no SMTP mailer (GOTRUE_SMTP_HOST): email addresses are not verified by mail; they stay \
             unconfirmed until their link or code is used, and links and codes come only from \
             POST /auth/v1/admin/generate_link{}",
            if args.mailer_log_links { " or the log (AGENCYFLOW_MAILER_LOG_LINKS)" } else { "" }
        );
    }
    if args
        .api_external_url
        .as_deref()
        .is_none_or(|u| u.trim().is_empty())
    {
        tracing::warn!(
            "API_EXTERNAL_URL is not set: token issuers and email links use the request's Host \
             only when it is a loopback address, else http://localhost"
        );
    }
}

/// The `/auth/v1` routes (mounted by the server under that prefix).
pub fn router(state: AuthState) -> Router {
    Router::new()
        .route("/signup", post(handlers::signup))
        .route("/token", post(handlers::token))
        .route("/user", get(handlers::get_user).put(handlers::update_user))
        .route("/logout", post(handlers::logout))
        .route("/settings", get(handlers::settings))
        .route("/health", get(handlers::health))
        .route("/.well-known/jwks.json", get(handlers::jwks))
        .route("/otp", post(otp::otp))
        .route("/magiclink", post(otp::otp))
        .route("/recover", post(otp::recover))
        .route("/resend", post(otp::resend))
        .route("/verify", get(otp::verify_link).post(otp::verify))
        .route("/admin/generate_link", post(otp::generate_link))
        .route("/invite", post(otp::invite))
        .route("/factors", post(mfa::enroll))
        .route("/factors/{id}", axum::routing::delete(mfa::unenroll))
        .route("/factors/{id}/challenge", post(mfa::challenge))
        .route("/factors/{id}/verify", post(mfa::verify))
        .route("/admin/users/{id}/factors", get(mfa::admin_list_factors))
        .route(
            "/admin/users/{id}/factors/{factor_id}",
            axum::routing::delete(mfa::admin_delete_factor),
        )
        .route(
            "/passkeys/registration/options",
            post(passkey::registration_options),
        )
        .route(
            "/passkeys/registration/verify",
            post(passkey::registration_verify),
        )
        .route(
            "/passkeys/authentication/options",
            post(passkey::authentication_options),
        )
        .route(
            "/passkeys/authentication/verify",
            post(passkey::authentication_verify),
        )
        .route("/passkeys", get(passkey::list))
        .route(
            "/passkeys/{id}",
            axum::routing::patch(passkey::update).delete(passkey::delete),
        )
        .route("/admin/users/{id}/passkeys", get(passkey::admin_list))
        .route(
            "/admin/users/{id}/passkeys/{passkey_id}",
            axum::routing::delete(passkey::admin_delete),
        )
        .route("/reauthenticate", get(otp::reauthenticate))
        .route("/sso", any(off::saml_disabled))
        .route("/sso/saml/metadata", any(off::saml_disabled))
        .route("/sso/saml/acs", any(off::saml_disabled))
        .route("/authorize", get(external::authorize))
        .route(
            "/callback",
            get(external::callback).post(external::callback),
        )
        .route("/user/identities/authorize", get(external::link_identity))
        .route(
            "/user/identities/{id}",
            axum::routing::delete(external::unlink_identity),
        )
        .route(
            "/admin/users",
            get(admin::list_users).post(admin::create_user),
        )
        .route(
            "/admin/users/{id}",
            get(admin::get_user)
                .put(admin::update_user)
                .delete(admin::delete_user),
        )
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .with_state(state)
        .layer(axum::middleware::from_fn(error::api_version_layer))
}
