//! The external providers: their settings (GoTrue's `GOTRUE_EXTERNAL_<NAME>_*`), endpoints,
//! the authorization-code exchange, the user they vouch for, and ID-token verification
//! against the provider's JWKS (OpenID Connect discovery, cached).
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::Url;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::Digest;

/// One provider's settings, under GoTrue's names. The macro gives each its own arg ids, so
/// the five can be flattened into one command.
macro_rules! provider_args {
    ($t:ident, $name:literal, $upper:literal, $url_help:literal) => {
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct $t {
            /// Sign-in with this provider.
            #[arg(id = concat!("external-", $name, "-enabled"),
                                  long = concat!("external-", $name, "-enabled"),
                                  env = concat!("GOTRUE_EXTERNAL_", $upper, "_ENABLED"),
                                  default_value_t = false, action = clap::ArgAction::Set)]
            pub enabled: bool,
            /// The OAuth client id (comma-separated: several are accepted as an ID token's
            /// `aud`; the first is used for the redirect flow).
            #[arg(id = concat!("external-", $name, "-client-id"),
                                  long = concat!("external-", $name, "-client-id"),
                                  env = concat!("GOTRUE_EXTERNAL_", $upper, "_CLIENT_ID"))]
            pub client_id: Option<String>,
            /// The OAuth client secret.
            #[arg(id = concat!("external-", $name, "-secret"),
                                  long = concat!("external-", $name, "-secret"),
                                  env = concat!("GOTRUE_EXTERNAL_", $upper, "_SECRET"),
                                  hide_env_values = true)]
            pub secret: Option<String>,
            /// The callback URL registered with the provider (default:
            /// `<API_EXTERNAL_URL>/auth/v1/callback`).
            #[arg(id = concat!("external-", $name, "-redirect-uri"),
                                  long = concat!("external-", $name, "-redirect-uri"),
                                  env = concat!("GOTRUE_EXTERNAL_", $upper, "_REDIRECT_URI"))]
            pub redirect_uri: Option<String>,
            #[doc = $url_help]
            #[arg(id = concat!("external-", $name, "-url"),
                                  long = concat!("external-", $name, "-url"),
                                  env = concat!("GOTRUE_EXTERNAL_", $upper, "_URL"))]
            pub url: Option<String>,
            /// Accept ID tokens (`grant_type=id_token`) without checking their `nonce`.
            #[arg(id = concat!("external-", $name, "-skip-nonce-check"),
                                  long = concat!("external-", $name, "-skip-nonce-check"),
                                  env = concat!("GOTRUE_EXTERNAL_", $upper, "_SKIP_NONCE_CHECK"),
                                  default_value_t = false, action = clap::ArgAction::Set)]
            pub skip_nonce_check: bool,
        }
    };
}

provider_args!(
    GoogleArgs,
    "google",
    "GOOGLE",
    "The OpenID issuer (default https://accounts.google.com; its discovery document gives the endpoints)."
);
provider_args!(
    GithubArgs,
    "github",
    "GITHUB",
    "GitHub (Enterprise) base URL (default https://github.com; the API is then <URL>/api/v3)."
);
provider_args!(
    GitlabArgs,
    "gitlab",
    "GITLAB",
    "GitLab base URL (default https://gitlab.com)."
);
provider_args!(
    AzureArgs,
    "azure",
    "AZURE",
    "Azure authority (default https://login.microsoftonline.com/common; discovery at <URL>/v2.0)."
);
provider_args!(
    KeycloakArgs,
    "keycloak",
    "KEYCLOAK",
    "The OpenID issuer, e.g. https://keycloak.example.com/realms/myrealm (any OpenID Connect provider; discovery at <URL>/.well-known/openid-configuration)."
);

/// The external-provider settings.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ExternalArgs {
    #[command(flatten)]
    pub google: GoogleArgs,
    #[command(flatten)]
    pub github: GithubArgs,
    #[command(flatten)]
    pub gitlab: GitlabArgs,
    #[command(flatten)]
    pub azure: AzureArgs,
    #[command(flatten)]
    pub keycloak: KeycloakArgs,
    /// `linkIdentity` / `unlinkIdentity` (`/user/identities/*`).
    #[arg(long = "security-manual-linking-enabled", env = "GOTRUE_SECURITY_MANUAL_LINKING_ENABLED", default_value_t = false, action = clap::ArgAction::Set)]
    pub manual_linking_enabled: bool,
}

/// The supported providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Google,
    Github,
    Gitlab,
    Azure,
    Keycloak,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Azure,
        Kind::Github,
        Kind::Gitlab,
        Kind::Google,
        Kind::Keycloak,
    ];

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(name.trim()))
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Google => "google",
            Kind::Github => "github",
            Kind::Gitlab => "gitlab",
            Kind::Azure => "azure",
            Kind::Keycloak => "keycloak",
        }
    }

    /// Speaks OpenID Connect (an ID token comes with the access token).
    pub fn is_oidc(self) -> bool {
        matches!(self, Kind::Google | Kind::Azure | Kind::Keycloak)
    }

    fn default_scopes(self) -> &'static str {
        match self {
            Kind::Google | Kind::Keycloak | Kind::Azure => "openid email profile",
            Kind::Github => "user:email",
            Kind::Gitlab => "read_user",
        }
    }
}

/// One provider's settings, whatever its kind.
#[derive(Debug, Clone)]
pub struct Settings {
    pub kind: Kind,
    pub enabled: bool,
    pub client_ids: Vec<String>,
    pub secret: String,
    pub redirect_uri: Option<String>,
    pub url: Option<String>,
    pub skip_nonce_check: bool,
}

macro_rules! settings_of {
    ($kind:expr, $a:expr) => {
        Settings {
            kind: $kind,
            enabled: $a.enabled,
            client_ids: $a
                .client_id
                .as_deref()
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            secret: $a.secret.clone().unwrap_or_default(),
            redirect_uri: $a.redirect_uri.clone().filter(|s| !s.trim().is_empty()),
            url: $a
                .url
                .as_deref()
                .map(|u| u.trim().trim_end_matches('/').to_string())
                .filter(|s| !s.is_empty()),
            skip_nonce_check: $a.skip_nonce_check,
        }
    };
}

impl ExternalArgs {
    pub fn settings(&self, kind: Kind) -> Settings {
        match kind {
            Kind::Google => settings_of!(kind, self.google),
            Kind::Github => settings_of!(kind, self.github),
            Kind::Gitlab => settings_of!(kind, self.gitlab),
            Kind::Azure => settings_of!(kind, self.azure),
            Kind::Keycloak => settings_of!(kind, self.keycloak),
        }
    }

    /// The provider for the redirect flow, or GoTrue's reason why not ("provider is not
    /// enabled", "missing OAuth client ID"...).
    pub fn oauth_provider(&self, name: &str) -> Result<Settings, String> {
        let kind =
            Kind::parse(name).ok_or_else(|| format!("Provider {name} could not be found"))?;
        let s = self.settings(kind);
        if !s.enabled {
            return Err("provider is not enabled".into());
        }
        if s.client_ids.is_empty() {
            return Err("missing OAuth client ID".into());
        }
        if s.secret.is_empty() {
            return Err("missing OAuth secret".into());
        }
        if kind == Kind::Keycloak && s.url.is_none() {
            return Err("unable to find URL for the Keycloak provider".into());
        }
        Ok(s)
    }
}

impl Settings {
    pub fn client_id(&self) -> &str {
        self.client_ids.first().map(String::as_str).unwrap_or("")
    }

    /// The OpenID issuer whose discovery document names the endpoints.
    fn discovery_url(&self) -> String {
        match self.kind {
            Kind::Google => format!(
                "{}/.well-known/openid-configuration",
                self.url.as_deref().unwrap_or("https://accounts.google.com")
            ),
            Kind::Keycloak => format!(
                "{}/.well-known/openid-configuration",
                self.url.as_deref().unwrap_or_default()
            ),
            Kind::Azure => format!(
                "{}/v2.0/.well-known/openid-configuration",
                self.url
                    .as_deref()
                    .unwrap_or("https://login.microsoftonline.com/common")
            ),
            Kind::Github | Kind::Gitlab => String::new(),
        }
    }

    fn github_base(&self) -> (String, String) {
        match &self.url {
            Some(u) => (u.clone(), format!("{u}/api/v3")),
            None => ("https://github.com".into(), "https://api.github.com".into()),
        }
    }

    fn gitlab_base(&self) -> String {
        self.url
            .clone()
            .unwrap_or_else(|| "https://gitlab.com".into())
    }
}

/// An OpenID provider's discovery document (the parts used).
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: String,
}

/// The provider's tokens from the code exchange.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderTokens {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub id_token: Option<String>,
}

/// An e-mail address the provider vouches for.
#[derive(Debug, Clone)]
pub struct Email {
    pub email: String,
    pub verified: bool,
    pub primary: bool,
}

/// Who the provider says the user is: the stable subject, addresses, and the identity data
/// stored in `auth.identities` (and merged into `user_metadata`), as GoTrue's claims.
#[derive(Debug, Clone)]
pub struct UserData {
    pub subject: String,
    pub emails: Vec<Email>,
    pub metadata: Map<String, Value>,
}

impl UserData {
    /// The address GoTrue records for the identity: the primary one, else the last.
    pub fn primary(&self) -> Option<&Email> {
        self.emails
            .iter()
            .find(|e| e.primary)
            .or_else(|| self.emails.last())
    }
}

/// Why a provider's answer is not accepted.
#[derive(Debug)]
pub enum ProviderError {
    /// The provider could not be reached or answered something unusable.
    Unavailable(String),
    /// An ID token failed verification (the reason is for the log and the error description).
    BadIdToken(String),
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProviderError::Unavailable(m) | ProviderError::BadIdToken(m) => f.write_str(m),
        }
    }
}

const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
const JWKS_TTL: Duration = Duration::from_secs(600);

/// The HTTP client and the discovery/JWKS caches shared by all requests.
pub struct Client {
    http: reqwest::Client,
    discovery: Mutex<HashMap<String, (Instant, Discovery)>>,
    jwks: Mutex<HashMap<String, (Instant, JwkSet)>>,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unavailable(format!("{what}: {e}"))
}

impl Client {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("agencyflow-auth")
            .build()
            .unwrap_or_default();
        Client {
            http,
            discovery: Mutex::new(HashMap::new()),
            jwks: Mutex::new(HashMap::new()),
        }
    }

    async fn get_json(&self, url: &str, bearer: Option<&str>) -> Result<Value, ProviderError> {
        let mut rb = self.http.get(url).header("accept", "application/json");
        if let Some(t) = bearer {
            rb = rb.bearer_auth(t);
        }
        let r = rb.send().await.map_err(|e| unavailable(url, e))?;
        if !r.status().is_success() {
            return Err(unavailable(url, r.status()));
        }
        r.json().await.map_err(|e| unavailable(url, e))
    }

    /// The discovery document of an OpenID provider (cached for an hour).
    pub async fn discovery(&self, s: &Settings) -> Result<Discovery, ProviderError> {
        let url = s.discovery_url();
        if let Some((at, d)) = self.discovery.lock().expect("lock").get(&url) {
            if at.elapsed() < DISCOVERY_TTL {
                return Ok(d.clone());
            }
        }
        let v = self.get_json(&url, None).await?;
        let d: Discovery = serde_json::from_value(v).map_err(|e| unavailable(&url, e))?;
        self.discovery
            .lock()
            .expect("lock")
            .insert(url, (Instant::now(), d.clone()));
        Ok(d)
    }

    /// The provider's keys; fetched again when stale or when `kid` is not among them (key
    /// rotation), at most once per call.
    async fn jwks(&self, uri: &str, kid: Option<&str>) -> Result<JwkSet, ProviderError> {
        if let Some((at, set)) = self.jwks.lock().expect("lock").get(uri) {
            let knows = kid.is_none_or(|k| set.find(k).is_some());
            if at.elapsed() < JWKS_TTL && knows {
                return Ok(set.clone());
            }
        }
        let v = self.get_json(uri, None).await?;
        let set: JwkSet = serde_json::from_value(v).map_err(|e| unavailable(uri, e))?;
        self.jwks
            .lock()
            .expect("lock")
            .insert(uri.to_string(), (Instant::now(), set.clone()));
        Ok(set)
    }

    /// The provider's authorization URL for this flow.
    pub async fn authorization_url(
        &self,
        s: &Settings,
        redirect_uri: &str,
        state: &str,
        scopes: Option<&str>,
        nonce: Option<&str>,
        extra: &[(String, String)],
    ) -> Result<String, ProviderError> {
        let endpoint = match s.kind {
            Kind::Github => format!("{}/login/oauth/authorize", s.github_base().0),
            Kind::Gitlab => format!("{}/oauth/authorize", s.gitlab_base()),
            _ => self.discovery(s).await?.authorization_endpoint,
        };
        let mut url = Url::parse(&endpoint).map_err(|e| unavailable(&endpoint, e))?;
        let mut scope = s.kind.default_scopes().to_string();
        for extra_scope in scopes.unwrap_or_default().split([' ', ',']) {
            if !extra_scope.is_empty() && !scope.split(' ').any(|x| x == extra_scope) {
                scope.push(' ');
                scope.push_str(extra_scope);
            }
        }
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("client_id", s.client_id())
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("response_type", "code")
                .append_pair("scope", &scope)
                .append_pair("state", state);
            if let Some(n) = nonce {
                q.append_pair("nonce", n);
            }
            for (k, v) in extra {
                q.append_pair(k, v);
            }
        }
        Ok(url.into())
    }

    /// Exchanges the authorization code at the provider's token endpoint.
    pub async fn exchange(
        &self,
        s: &Settings,
        code: &str,
        redirect_uri: &str,
    ) -> Result<ProviderTokens, ProviderError> {
        let endpoint = match s.kind {
            Kind::Github => format!("{}/login/oauth/access_token", s.github_base().0),
            Kind::Gitlab => format!("{}/oauth/token", s.gitlab_base()),
            _ => self.discovery(s).await?.token_endpoint,
        };
        let r = self
            .http
            .post(&endpoint)
            .header("accept", "application/json")
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("client_id", s.client_id()),
                ("client_secret", &s.secret),
            ])
            .send()
            .await
            .map_err(|e| unavailable(&endpoint, e))?;
        let status = r.status();
        let body: Value = r.json().await.map_err(|e| unavailable(&endpoint, e))?;
        if !status.is_success() || body.get("error").is_some() {
            return Err(unavailable(
                &endpoint,
                format!(
                    "{status}: {}",
                    body.get("error").and_then(Value::as_str).unwrap_or("")
                ),
            ));
        }
        serde_json::from_value(body).map_err(|e| unavailable(&endpoint, e))
    }

    /// The user behind the provider's tokens. For OpenID providers the ID token is verified
    /// (signature by the provider's JWKS, `iss`, `aud`, `exp`, and `nonce` when one was
    /// sent), then completed from the userinfo endpoint when it lacks the address.
    pub async fn user(
        &self,
        s: &Settings,
        tokens: &ProviderTokens,
        nonce: Option<&str>,
    ) -> Result<UserData, ProviderError> {
        match s.kind {
            Kind::Github => self.github_user(s, &tokens.access_token).await,
            Kind::Gitlab => self.gitlab_user(s, &tokens.access_token).await,
            _ => {
                let id_token = tokens.id_token.as_deref().ok_or_else(|| {
                    ProviderError::BadIdToken("the provider returned no ID token".into())
                })?;
                let mut claims = self.verify_id_token(s, id_token).await?;
                check_audience(s, &claims)?;
                if let Some(expected) = nonce {
                    let got = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
                    if !constant_eq(got, expected) {
                        return Err(ProviderError::BadIdToken(
                            "ID token nonce does not match".into(),
                        ));
                    }
                }
                if claims.get("email").is_none() {
                    if let Some(ui) = self.discovery(s).await?.userinfo_endpoint {
                        let info = self.get_json(&ui, Some(&tokens.access_token)).await?;
                        if info.get("sub") == claims.get("sub") {
                            if let (Some(c), Some(i)) = (claims.as_object_mut(), info.as_object()) {
                                for (k, v) in i {
                                    c.entry(k.clone()).or_insert_with(|| v.clone());
                                }
                            }
                        }
                    }
                }
                oidc_user_data(&claims)
            }
        }
    }

    /// Verifies an ID token's signature with the provider's JWKS, its `iss` and `exp` (60 s
    /// leeway). `aud` and `nonce` are the caller's (their errors differ by flow).
    pub async fn verify_id_token(&self, s: &Settings, token: &str) -> Result<Value, ProviderError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| ProviderError::BadIdToken(format!("malformed ID token: {e}")))?;
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::ES256
                | Algorithm::ES384
        ) {
            return Err(ProviderError::BadIdToken(format!(
                "ID token algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let d = self.discovery(s).await?;
        let set = self.jwks(&d.jwks_uri, header.kid.as_deref()).await?;
        let jwk = match header.kid.as_deref() {
            Some(kid) => set.find(kid),
            None => set.keys.first(),
        }
        .ok_or_else(|| ProviderError::BadIdToken("ID token signed by an unknown key".into()))?;
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|e| ProviderError::BadIdToken(format!("unusable provider key: {e}")))?;
        // Azure's multi-tenant discovery names `{tenantid}`: the token's own `tid` fills it.
        let issuer = if d.issuer.contains("{tenantid}") {
            let tid = unverified_claim(token, "tid").unwrap_or_default();
            d.issuer.replace("{tenantid}", &tid)
        } else {
            d.issuer.clone()
        };
        let mut v = Validation::new(header.alg);
        v.validate_aud = false;
        v.leeway = 60;
        v.set_issuer(&[issuer]);
        v.set_required_spec_claims(&["exp", "iss", "sub"]);
        let data = jsonwebtoken::decode::<Value>(token, &key, &v).map_err(|e| {
            ProviderError::BadIdToken(match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "ID token has expired".into(),
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => {
                    "ID token issuer does not match the provider".into()
                }
                _ => format!("ID token does not verify: {e}"),
            })
        })?;
        Ok(data.claims)
    }

    async fn github_user(&self, s: &Settings, token: &str) -> Result<UserData, ProviderError> {
        let (_, api) = s.github_base();
        let u = self.get_json(&format!("{api}/user"), Some(token)).await?;
        let emails = self
            .get_json(&format!("{api}/user/emails"), Some(token))
            .await?;
        let subject = match &u["id"] {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            _ => return Err(unavailable("github user", "no id")),
        };
        let emails: Vec<Email> = emails
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                Some(Email {
                    email: e.get("email")?.as_str()?.to_string(),
                    verified: e.get("verified").and_then(Value::as_bool).unwrap_or(false),
                    primary: e.get("primary").and_then(Value::as_bool).unwrap_or(false),
                })
            })
            .collect();
        let mut m = Map::new();
        let name = u["name"].as_str().unwrap_or_default();
        let login = u["login"].as_str().unwrap_or_default();
        let avatar = u["avatar_url"].as_str().unwrap_or_default();
        put(&mut m, "iss", &format!("{api}/user"));
        put(&mut m, "sub", &subject);
        put(&mut m, "provider_id", &subject);
        put(&mut m, "name", name);
        put(&mut m, "full_name", name);
        put(&mut m, "user_name", login);
        put(&mut m, "preferred_username", login);
        put(&mut m, "avatar_url", avatar);
        Ok(finish(subject, emails, m))
    }

    async fn gitlab_user(&self, s: &Settings, token: &str) -> Result<UserData, ProviderError> {
        let base = s.gitlab_base();
        let u = self
            .get_json(&format!("{base}/api/v4/user"), Some(token))
            .await?;
        let subject = match &u["id"] {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            _ => return Err(unavailable("gitlab user", "no id")),
        };
        let mut emails = Vec::new();
        if let Some(e) = u["email"].as_str().filter(|e| !e.is_empty()) {
            emails.push(Email {
                email: e.to_string(),
                verified: u
                    .get("confirmed_at")
                    .is_some_and(|c| c.as_str().is_some_and(|c| !c.is_empty())),
                primary: true,
            });
        }
        if let Ok(more) = self
            .get_json(&format!("{base}/api/v4/user/emails"), Some(token))
            .await
        {
            for e in more.as_array().into_iter().flatten() {
                if let Some(addr) = e["email"].as_str() {
                    if !emails.iter().any(|x| x.email.eq_ignore_ascii_case(addr)) {
                        emails.push(Email {
                            email: addr.to_string(),
                            verified: e["confirmed_at"].as_str().is_some_and(|c| !c.is_empty()),
                            primary: false,
                        });
                    }
                }
            }
        }
        let mut m = Map::new();
        let name = u["name"].as_str().unwrap_or_default();
        put(&mut m, "iss", &base);
        put(&mut m, "sub", &subject);
        put(&mut m, "provider_id", &subject);
        put(&mut m, "name", name);
        put(&mut m, "full_name", name);
        put(
            &mut m,
            "preferred_username",
            u["username"].as_str().unwrap_or_default(),
        );
        put(
            &mut m,
            "avatar_url",
            u["avatar_url"].as_str().unwrap_or_default(),
        );
        Ok(finish(subject, emails, m))
    }
}

/// The `aud` check of a redirect-flow ID token: our client id must be among its audiences.
fn check_audience(s: &Settings, claims: &Value) -> Result<(), ProviderError> {
    if audience_matches(&s.client_ids, claims) {
        Ok(())
    } else {
        Err(ProviderError::BadIdToken(
            "ID token audience is not this client".into(),
        ))
    }
}

/// `true` when one of `client_ids` is the token's `aud` (a string or an array).
pub fn audience_matches(client_ids: &[String], claims: &Value) -> bool {
    let auds: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    client_ids
        .iter()
        .filter(|c| !c.is_empty())
        .any(|c| auds.contains(&c.as_str()))
}

/// The `at_hash` of an access token (OpenID Connect Core 3.1.3.6, for SHA-256 algorithms).
pub fn at_hash(access_token: &str) -> String {
    let d = sha2::Sha256::digest(access_token.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&d[..16])
}

pub fn constant_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A claim of a token's payload, read without verification (only to pick the issuer to
/// verify against).
fn unverified_claim(token: &str, claim: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get(claim)?.as_str().map(str::to_string)
}

fn put(m: &mut Map<String, Value>, k: &str, v: &str) {
    if !v.is_empty() {
        m.insert(k.into(), json!(v));
    }
}

fn finish(subject: String, emails: Vec<Email>, mut m: Map<String, Value>) -> UserData {
    let primary = emails
        .iter()
        .find(|e| e.primary)
        .or_else(|| emails.last())
        .cloned();
    if let Some(p) = primary {
        m.insert("email".into(), json!(p.email));
        m.insert("email_verified".into(), json!(p.verified));
    }
    m.insert("phone_verified".into(), json!(false));
    UserData {
        subject,
        emails,
        metadata: m,
    }
}

/// The user an OpenID ID token (or userinfo) describes, with GoTrue's identity-data names.
pub fn oidc_user_data(claims: &Value) -> Result<UserData, ProviderError> {
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ProviderError::BadIdToken("Missing sub claim in id_token".into()))?
        .to_string();
    let s = |k: &str| claims.get(k).and_then(Value::as_str).unwrap_or_default();
    let verified = match claims.get("email_verified") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(v)) => v == "true",
        _ => false,
    };
    let mut emails = Vec::new();
    if !s("email").is_empty() {
        emails.push(Email {
            email: s("email").to_string(),
            verified,
            primary: true,
        });
    }
    let mut m = Map::new();
    put(&mut m, "iss", s("iss"));
    put(&mut m, "sub", &subject);
    put(&mut m, "provider_id", &subject);
    put(&mut m, "name", s("name"));
    put(
        &mut m,
        "full_name",
        if s("name").is_empty() {
            s("preferred_username")
        } else {
            s("name")
        },
    );
    put(&mut m, "given_name", s("given_name"));
    put(&mut m, "family_name", s("family_name"));
    put(&mut m, "preferred_username", s("preferred_username"));
    put(&mut m, "picture", s("picture"));
    put(&mut m, "avatar_url", s("picture"));
    put(&mut m, "locale", s("locale"));
    Ok(finish(subject, emails, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_is_the_left_half_of_sha256() {
        // OpenID Connect Core, appendix A.3's access token and at_hash.
        assert_eq!(
            at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }

    #[test]
    fn audiences() {
        let ids = vec!["a".to_string(), "b".to_string()];
        assert!(audience_matches(&ids, &json!({"aud": "b"})));
        assert!(audience_matches(&ids, &json!({"aud": ["x", "a"]})));
        assert!(!audience_matches(&ids, &json!({"aud": "c"})));
        assert!(!audience_matches(&ids, &json!({})));
    }

    #[test]
    fn provider_names() {
        assert_eq!(Kind::parse("GitHub"), Some(Kind::Github));
        assert_eq!(Kind::parse("twitter"), None);
        let a = ExternalArgs::default();
        assert_eq!(
            a.oauth_provider("google").unwrap_err(),
            "provider is not enabled"
        );
        assert_eq!(
            a.oauth_provider("nope").unwrap_err(),
            "Provider nope could not be found"
        );
    }
}
