//! Who is calling, decided once for every surface (REST, storage, functions, auth, and
//! realtime/GraphQL when they come): the project's JWT keys and verifier, the reading of
//! `Authorization: Bearer`, the allow-list of database roles a token may run as, and the
//! [`Caller`] a request then runs as. One crate below `auth`, so the rule holds everywhere by
//! construction instead of in four parsers that disagree.
pub mod jwt;

use std::sync::Arc;

use http::HeaderMap;
use serde_json::{json, Value};

pub use jwt::{api_key, generate_es256_jwk, JwtError, JwtKeys, VerifiedClaims};

/// The bearer token of a request, as PostgREST and GoTrue read `Authorization`: the scheme
/// `Bearer` in any case, one space, the token. `None` when there is no header, another
/// scheme, or an empty token (HTTP trims the space of a bare `Bearer `); `Err` when the
/// header is not visible ASCII.
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, AuthnError> {
    let Some(v) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| AuthnError::Invalid("Invalid Authorization header".into()))?;
    Ok(match v.trim().split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => {
            Some(t.trim()).filter(|t| !t.is_empty())
        }
        _ => None,
    })
}

/// Why a request's credentials were refused. Each surface renders it in its own shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    #[error("JWT expired")]
    Expired,
    #[error("{0}")]
    Invalid(String),
    /// A valid token whose `role` claim is a database role no API request may run as
    /// (`authenticator`, `supabase_auth_admin`, `postgres`...).
    #[error("role \"{0}\" is not an API role")]
    RoleNotAllowed(String),
}

impl From<JwtError> for AuthnError {
    fn from(e: JwtError) -> Self {
        match e {
            JwtError::Expired => AuthnError::Expired,
            JwtError::Invalid(m) => AuthnError::Invalid(m),
        }
    }
}

/// The database roles API requests may run as: the anonymous role, `authenticated`,
/// `service_role`, and any the operator lists (`AGENCYFLOW_API_ROLES`). Never the login
/// role, the auth owner or a superuser, whatever a correctly signed token claims.
#[derive(Debug, Clone)]
pub struct ApiRoles {
    anon: String,
    allowed: Vec<String>,
}

impl Default for ApiRoles {
    fn default() -> Self {
        ApiRoles::new("anon", &[])
    }
}

/// Roles no configuration can allow: the platform's own.
const NEVER: &[&str] = &[
    "authenticator",
    "supabase_auth_admin",
    "supabase_admin",
    "supabase_storage_admin",
    "postgres",
];

impl ApiRoles {
    /// `anon` is the role of requests without a user token; `extra` adds roles (empty
    /// entries ignored; platform roles and `pg_*` refused).
    pub fn new(anon: &str, extra: &[String]) -> Self {
        let mut allowed = vec![
            anon.to_string(),
            "anon".to_string(),
            "authenticated".to_string(),
            "service_role".to_string(),
        ];
        for r in extra {
            let r = r.trim();
            if !r.is_empty() && Self::configurable(r) && !allowed.iter().any(|a| a == r) {
                allowed.push(r.to_string());
            }
        }
        ApiRoles {
            anon: anon.to_string(),
            allowed,
        }
    }

    /// Whether an operator may add `role` to the list.
    pub fn configurable(role: &str) -> bool {
        !NEVER.contains(&role) && !role.starts_with("pg_")
    }

    pub fn anon(&self) -> &str {
        &self.anon
    }

    pub fn allows(&self, role: &str) -> bool {
        self.allowed.iter().any(|a| a == role)
    }
}

/// Who a request runs as: the database role and the verified claims (with their JSON text,
/// what `request.jwt.claims` is set to).
#[derive(Debug, Clone)]
pub struct Caller {
    pub role: String,
    pub claims: Arc<VerifiedClaims>,
}

impl Caller {
    pub fn anon(roles: &ApiRoles) -> Self {
        Caller {
            role: roles.anon().to_string(),
            claims: Arc::new(VerifiedClaims::new(json!({ "role": roles.anon() }))),
        }
    }

    /// The `sub` claim (the user id) when the caller is a user.
    pub fn user_id(&self) -> Option<&str> {
        self.claims.claims.get("sub").and_then(Value::as_str)
    }
}

/// The caller of a request, from its bearer token: none → the anonymous role; a token →
/// verified (signature, `exp`/`nbf` with skew, `aud`, known `kid`) and its `role` claim
/// checked against `roles` (no role claim → the anonymous role, which the claims then name).
pub fn authenticate(
    keys: &JwtKeys,
    roles: &ApiRoles,
    headers: &HeaderMap,
) -> Result<Caller, AuthnError> {
    match bearer(headers)? {
        None => Ok(Caller::anon(roles)),
        Some(token) => caller_from_token(keys, roles, token),
    }
}

/// [`authenticate`] for a token taken from elsewhere (a query string, a websocket message).
pub fn caller_from_token(
    keys: &JwtKeys,
    roles: &ApiRoles,
    token: &str,
) -> Result<Caller, AuthnError> {
    let verified = keys.verify_shared(token)?;
    match verified.claims.get("role").and_then(Value::as_str) {
        Some(r) if !r.is_empty() => {
            if !roles.allows(r) {
                return Err(AuthnError::RoleNotAllowed(r.to_string()));
            }
            Ok(Caller {
                role: r.to_string(),
                claims: verified,
            })
        }
        _ => {
            let mut claims = verified.claims.clone();
            claims["role"] = Value::String(roles.anon().to_string());
            Ok(Caller {
                role: roles.anon().to_string(),
                claims: Arc::new(VerifiedClaims::new(claims)),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn bearer_scheme_in_any_case_and_nothing_else() {
        assert_eq!(bearer(&headers("Bearer abc")).unwrap(), Some("abc"));
        assert_eq!(bearer(&headers("bearer abc")).unwrap(), Some("abc"));
        assert_eq!(bearer(&headers("BEARER  abc ")).unwrap(), Some("abc"));
        assert_eq!(bearer(&headers("Bearer")).unwrap(), None);
        assert_eq!(bearer(&headers("Basic abc")).unwrap(), None);
        assert_eq!(bearer(&HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn platform_roles_are_never_api_roles() {
        let roles = ApiRoles::new(
            "anon",
            &[
                "reporting".into(),
                "authenticator".into(),
                "pg_read_all_data".into(),
            ],
        );
        for r in ["anon", "authenticated", "service_role", "reporting"] {
            assert!(roles.allows(r), "{r}");
        }
        for r in NEVER.iter().copied().chain(["pg_read_all_data", "other"]) {
            assert!(!roles.allows(r), "{r}");
        }
    }

    #[test]
    fn a_token_claiming_a_platform_role_is_refused() {
        let keys = JwtKeys::hs256(b"0123456789abcdef0123456789abcdef", None);
        let roles = ApiRoles::default();
        for role in ["authenticator", "supabase_auth_admin", "postgres"] {
            let t = keys.sign_hs256(&json!({ "role": role })).unwrap();
            assert_eq!(
                caller_from_token(&keys, &roles, &t).unwrap_err(),
                AuthnError::RoleNotAllowed(role.into())
            );
        }
        let t = keys
            .sign_hs256(&json!({ "role": "authenticated", "sub": "u" }))
            .unwrap();
        let c = caller_from_token(&keys, &roles, &t).unwrap();
        assert_eq!((c.role.as_str(), c.user_id()), ("authenticated", Some("u")));
        let t = keys.sign_hs256(&json!({ "sub": "u" })).unwrap();
        let c = caller_from_token(&keys, &roles, &t).unwrap();
        assert_eq!(c.role, "anon");
        assert_eq!(c.claims.claims["role"], "anon");
    }
}
