//! Users, identities and sessions in `auth.*`, and their JSON as GoTrue sends it.
use agencyflow_db::tokio_postgres::Row;
use agencyflow_db::ClaimsTxn;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::error::AuthError;
use crate::tokens::token_hash;
use crate::AuthState;

/// RFC 3339 UTC with microseconds, as GoTrue (Go's time.Time) writes timestamps.
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

const TS_SQL: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'"#;

/// The columns of a user `u`, with its identities as a JSON array.
pub fn user_select_columns() -> String {
    format!(
        "select u.id, u.aud, u.role, u.email, u.phone, u.encrypted_password, u.email_confirmed_at,
                u.phone_confirmed_at, u.confirmed_at, u.invited_at, u.confirmation_sent_at,
                u.recovery_sent_at, u.email_change, u.email_change_sent_at, u.last_sign_in_at,
                u.raw_app_meta_data, u.raw_user_meta_data, u.created_at, u.updated_at,
                u.banned_until, u.deleted_at, u.is_anonymous,
                coalesce((select jsonb_agg(jsonb_build_object(
                    'identity_id', i.id, 'id', i.provider_id, 'user_id', i.user_id,
                    'identity_data', i.identity_data, 'provider', i.provider,
                    'last_sign_in_at', to_char(i.last_sign_in_at at time zone 'UTC', {TS_SQL}),
                    'created_at', to_char(i.created_at at time zone 'UTC', {TS_SQL}),
                    'updated_at', to_char(i.updated_at at time zone 'UTC', {TS_SQL}),
                    'email', i.email) order by i.created_at, i.id)
                  from auth.identities i where i.user_id = u.id), '[]'::jsonb) as identities,
                (select jsonb_agg({factor} order by f.created_at, f.id)
                  from auth.mfa_factors f where f.user_id = u.id) as factors",
        factor = factor_json_sql("f")
    )
}

/// A factor `alias` of `auth.mfa_factors` as GoTrue's Factor JSON (SQL).
pub fn factor_json_sql(alias: &str) -> String {
    format!(
        "jsonb_build_object('id', {alias}.id, 'friendly_name', {alias}.friendly_name,
            'factor_type', {alias}.factor_type, 'status', {alias}.status,
            'created_at', to_char({alias}.created_at at time zone 'UTC', {TS_SQL}),
            'updated_at', to_char({alias}.updated_at at time zone 'UTC', {TS_SQL}),
            'last_challenged_at', to_char({alias}.last_challenged_at at time zone 'UTC', {TS_SQL}))"
    )
}

/// GoTrue's Factor JSON from [`factor_json_sql`]: an empty friendly name is omitted.
pub fn factor_json(mut f: Value) -> Value {
    if let Some(o) = f.as_object_mut() {
        if o.get("friendly_name")
            .is_some_and(|n| n.as_str().is_none_or(str::is_empty))
        {
            o.remove("friendly_name");
        }
    }
    f
}

fn user_select() -> String {
    format!("{} from auth.users u", user_select_columns())
}

/// One `auth.users` row with its identities.
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub aud: String,
    pub role: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub encrypted_password: Option<String>,
    pub email_confirmed_at: Option<DateTime<Utc>>,
    pub phone_confirmed_at: Option<DateTime<Utc>>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub invited_at: Option<DateTime<Utc>>,
    pub confirmation_sent_at: Option<DateTime<Utc>>,
    pub recovery_sent_at: Option<DateTime<Utc>>,
    pub email_change: Option<String>,
    pub email_change_sent_at: Option<DateTime<Utc>>,
    pub last_sign_in_at: Option<DateTime<Utc>>,
    pub app_metadata: Value,
    pub user_metadata: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub banned_until: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub is_anonymous: bool,
    pub identities: Value,
    /// The MFA factors (null when none).
    pub factors: Value,
}

impl User {
    pub fn from_row(r: &Row) -> User {
        User {
            id: r.get("id"),
            aud: r.get::<_, Option<String>>("aud").unwrap_or_default(),
            role: r.get::<_, Option<String>>("role").unwrap_or_default(),
            email: r.get("email"),
            phone: r.get("phone"),
            encrypted_password: r.get("encrypted_password"),
            email_confirmed_at: r.get("email_confirmed_at"),
            phone_confirmed_at: r.get("phone_confirmed_at"),
            confirmed_at: r.get("confirmed_at"),
            invited_at: r.get("invited_at"),
            confirmation_sent_at: r.get("confirmation_sent_at"),
            recovery_sent_at: r.get("recovery_sent_at"),
            email_change: r.get("email_change"),
            email_change_sent_at: r.get("email_change_sent_at"),
            last_sign_in_at: r.get("last_sign_in_at"),
            app_metadata: r.get("raw_app_meta_data"),
            user_metadata: r.get("raw_user_meta_data"),
            created_at: r.get("created_at"),
            updated_at: r.get("updated_at"),
            banned_until: r.get("banned_until"),
            deleted_at: r.get("deleted_at"),
            is_anonymous: r.get("is_anonymous"),
            identities: r.get("identities"),
            factors: r
                .try_get::<_, Option<Value>>("factors")
                .ok()
                .flatten()
                .unwrap_or(Value::Null),
        }
    }

    pub fn is_banned(&self) -> bool {
        self.banned_until.is_some_and(|t| t > Utc::now())
    }

    /// The User JSON: `email`/`phone` always present (`""` when unset), null timestamps
    /// omitted, identities without null fields.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("aud".into(), json!(self.aud));
        m.insert("role".into(), json!(self.role));
        m.insert(
            "email".into(),
            json!(self.email.clone().unwrap_or_default()),
        );
        let opt_ts = |m: &mut Map<String, Value>, k: &str, v: Option<DateTime<Utc>>| {
            if let Some(t) = v {
                m.insert(k.into(), json!(ts(t)));
            }
        };
        opt_ts(&mut m, "email_confirmed_at", self.email_confirmed_at);
        opt_ts(&mut m, "invited_at", self.invited_at);
        m.insert(
            "phone".into(),
            json!(self.phone.clone().unwrap_or_default()),
        );
        opt_ts(&mut m, "phone_confirmed_at", self.phone_confirmed_at);
        opt_ts(&mut m, "confirmation_sent_at", self.confirmation_sent_at);
        opt_ts(&mut m, "confirmed_at", self.confirmed_at);
        opt_ts(&mut m, "recovery_sent_at", self.recovery_sent_at);
        if let Some(e) = self.email_change.as_deref().filter(|e| !e.is_empty()) {
            m.insert("new_email".into(), json!(e));
        }
        opt_ts(&mut m, "email_change_sent_at", self.email_change_sent_at);
        opt_ts(&mut m, "last_sign_in_at", self.last_sign_in_at);
        m.insert("app_metadata".into(), self.app_metadata.clone());
        m.insert("user_metadata".into(), self.user_metadata.clone());
        let identities: Vec<Value> = self
            .identities
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| {
                        let mut i = i.clone();
                        if let Some(o) = i.as_object_mut() {
                            o.retain(|_, v| !v.is_null());
                        }
                        i
                    })
                    .collect()
            })
            .unwrap_or_default();
        m.insert("identities".into(), Value::Array(identities));
        if let Some(factors) = self.factors.as_array().filter(|f| !f.is_empty()) {
            m.insert(
                "factors".into(),
                Value::Array(factors.iter().cloned().map(factor_json).collect()),
            );
        }
        m.insert("created_at".into(), json!(ts(self.created_at)));
        m.insert("updated_at".into(), json!(ts(self.updated_at)));
        opt_ts(&mut m, "banned_until", self.banned_until);
        opt_ts(&mut m, "deleted_at", self.deleted_at);
        m.insert("is_anonymous".into(), json!(self.is_anonymous));
        Value::Object(m)
    }
}

pub async fn find_user(tx: &mut ClaimsTxn, id: Uuid) -> Result<Option<User>, AuthError> {
    let sql = format!("{} where u.id = $1", user_select());
    Ok(tx
        .query_opt(&sql, &[&id])
        .await?
        .as_ref()
        .map(User::from_row))
}

/// The (non-anonymous, not deleted) user with this email, case-insensitively.
pub async fn find_user_by_email(
    tx: &mut ClaimsTxn,
    email: &str,
) -> Result<Option<User>, AuthError> {
    let sql = format!(
        "{} where lower(u.email) = lower($1) and u.is_sso_user = false and u.deleted_at is null",
        user_select()
    );
    Ok(tx
        .query_opt(&sql, &[&email])
        .await?
        .as_ref()
        .map(User::from_row))
}

/// Ids of all users in `aud`, newest first, with the total.
pub async fn list_users(
    tx: &mut ClaimsTxn,
    aud: &str,
    limit: i64,
    offset: i64,
) -> Result<(Vec<User>, i64), AuthError> {
    let sql = format!(
        "{} where u.aud = $1 order by u.created_at desc, u.id desc limit $2 offset $3",
        user_select()
    );
    let rows = tx.query(&sql, &[&aud, &limit, &offset]).await?;
    let total: i64 = tx
        .query_one("select count(*) from auth.users where aud = $1", &[&aud])
        .await?
        .get(0);
    Ok((rows.iter().map(User::from_row).collect(), total))
}

/// Where a request came from, recorded on the session.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub ip: String,
    pub user_agent: Option<String>,
}

/// A new session and its first refresh token. Returns `(session_id, refresh_token, amr)`.
pub async fn create_session(
    state: &AuthState,
    tx: &mut ClaimsTxn,
    user_id: Uuid,
    method: &str,
    client: &ClientInfo,
) -> Result<(Uuid, String, Value), AuthError> {
    let token = state.refresh_tokens().random();
    let amr = json!([{ "method": method, "timestamp": Utc::now().timestamp() }]);
    let ip: Option<std::net::IpAddr> = client.ip.parse().ok();
    let row = tx
        .query_one(
            "with s as (
               insert into auth.sessions (user_id, aal, amr, ip, user_agent)
               values ($1, 'aal1', $2, $3, $4) returning id
             ), t as (
               insert into auth.refresh_tokens (token_hash, user_id, session_id)
               select $5, $1, s.id from s returning id
             )
             select s.id from s, t",
            &[&user_id, &amr, &ip, &client.user_agent, &token_hash(&token)],
        )
        .await?;
    Ok((row.get(0), token, amr))
}

/// The access token's claims for a user in a session, as Supabase Auth issues them.
pub fn access_claims(
    state: &AuthState,
    user: &User,
    session_id: Uuid,
    amr: &Value,
    issuer: &str,
) -> (Value, i64) {
    let now = Utc::now().timestamp();
    let exp = now + state.args.jwt_exp;
    let claims = json!({
        "iss": issuer,
        "sub": user.id,
        "aud": if user.aud.is_empty() { state.args.jwt_aud.clone() } else { user.aud.clone() },
        "exp": exp,
        "iat": now,
        "email": user.email.clone().unwrap_or_default(),
        "phone": user.phone.clone().unwrap_or_default(),
        "app_metadata": user.app_metadata,
        "user_metadata": user.user_metadata,
        "role": user.role,
        "aal": aal_of(amr),
        "amr": amr,
        "session_id": session_id,
        "is_anonymous": user.is_anonymous,
    });
    (claims, exp)
}

/// The assurance level a session's authentication methods give: `aal2` once a second factor
/// (TOTP) was verified in it, else `aal1` (GoTrue's rule).
pub fn aal_of(amr: &Value) -> &'static str {
    let second = amr.as_array().is_some_and(|a| {
        a.iter().any(|e| {
            matches!(
                e.get("method").and_then(Value::as_str),
                Some("totp" | "mfa/phone" | "mfa/webauthn")
            )
        })
    });
    if second {
        "aal2"
    } else {
        "aal1"
    }
}

/// The Session JSON: a fresh access token plus the given refresh token and the user.
pub fn session_json(
    state: &AuthState,
    user: &User,
    session_id: Uuid,
    amr: &Value,
    refresh_token: &str,
    issuer: &str,
) -> Result<Value, AuthError> {
    let (claims, exp) = access_claims(state, user, session_id, amr, issuer);
    let token = state.keys.sign(&claims).map_err(AuthError::internal)?;
    Ok(json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": state.args.jwt_exp,
        "expires_at": exp,
        "refresh_token": refresh_token,
        "user": user.to_json(),
    }))
}

/// The email identity's data, as GoTrue stores (and mirrors into user_metadata).
pub fn email_identity_data(user_id: Uuid, email: &str, verified: bool) -> Value {
    json!({ "sub": user_id.to_string(), "email": email, "email_verified": verified, "phone_verified": false })
}

/// Creates or refreshes the user's email identity.
pub async fn upsert_email_identity(
    tx: &mut ClaimsTxn,
    user_id: Uuid,
    email: &str,
    verified: bool,
    signed_in: bool,
) -> Result<(), AuthError> {
    let data = email_identity_data(user_id, email, verified);
    tx.execute(
        "insert into auth.identities (provider_id, user_id, identity_data, provider, last_sign_in_at)
         values ($1::uuid::text, $1, $2, 'email', case when $3 then now() end)
         on conflict (provider_id, provider) do update
           set identity_data = excluded.identity_data, updated_at = now()",
        &[&user_id, &data, &signed_in],
    )
    .await?;
    Ok(())
}

/// Merges `updates` into a metadata object: a null value removes the key (GoTrue's rule).
pub fn merge_metadata(base: &Value, updates: &Map<String, Value>) -> Value {
    let mut m = base.as_object().cloned().unwrap_or_default();
    for (k, v) in updates {
        if v.is_null() {
            m.remove(k);
        } else {
            m.insert(k.clone(), v.clone());
        }
    }
    Value::Object(m)
}

/// `app_metadata` with `provider`/`providers` set for the email provider.
pub fn with_email_provider(app_metadata: &Value) -> Value {
    let mut m = app_metadata.as_object().cloned().unwrap_or_default();
    let mut providers: Vec<Value> = m
        .get("providers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !providers.iter().any(|p| p == "email") {
        providers.insert(0, json!("email"));
    }
    m.insert("provider".into(), json!("email"));
    m.insert("providers".into(), Value::Array(providers));
    Value::Object(m)
}

/// GoTrue's `validateEmail` on an address given (not empty): too long, or not of the form
/// something@something.tld, is a 400 `validation_failed` with GoTrue's message.
pub fn check_email(email: &str) -> Result<(), crate::AuthError> {
    if email.len() > 255 {
        return Err(crate::AuthError::new(
            crate::ErrorCode::ValidationFailed,
            "An email address is too long",
        ));
    }
    if !valid_email(email) {
        return Err(crate::ErrorCode::EmailAddressInvalid.into());
    }
    Ok(())
}

/// GoTrue's `validatePhone`: spaces, dashes, parentheses and a leading `+` dropped, then an
/// E.164 number (1 to 15 digits, not starting with 0), else a 400 `validation_failed`.
pub fn check_phone(phone: &str) -> Result<String, crate::AuthError> {
    let digits: String = phone
        .trim()
        .trim_start_matches('+')
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
        .collect();
    let e164 = (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if !e164 {
        return Err(crate::AuthError::new(
            crate::ErrorCode::ValidationFailed,
            "Invalid phone number format (E.164 required)",
        ));
    }
    Ok(digits)
}

/// A cheap syntactic email check (GoTrue's: something@something, no spaces, ≤ 255).
pub fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return false;
    };
    email.len() <= 255
        && !local.is_empty()
        && !domain.is_empty()
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && domain.contains('.')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && !local.contains('@')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert!(valid_email("a@example.com"));
        assert!(!valid_email("a@b"));
        assert!(!valid_email("not an email"));
        assert!(!valid_email("@example.com"));
        assert!(!valid_email("a b@example.com"));
    }

    #[test]
    fn metadata_merge_removes_nulls() {
        let base = json!({"a": 1, "b": 2});
        let upd = json!({"b": null, "c": 3});
        assert_eq!(
            merge_metadata(&base, upd.as_object().unwrap()),
            json!({"a": 1, "c": 3})
        );
        assert_eq!(
            with_email_provider(&json!({}))["providers"],
            json!(["email"])
        );
    }
}
