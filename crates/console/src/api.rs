//! In-process calls to the API surfaces, and the smaller pages: audit log, storage, database,
//! AI, logs & health, API.
use std::str::FromStr;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tower::ServiceExt;
use uuid::Uuid;

use crate::error::{ConsoleError, Result};
use crate::session::Admin;
use crate::{ConsoleState, Inner};

/// Whose eyes a call to the API uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    ServiceRole,
    Anon,
    /// An app user: a token minted for the call from their `auth.users` row, as Supabase
    /// Auth would issue it, so RLS decides as for them.
    User(Uuid),
}

impl FromStr for Viewer {
    type Err = ConsoleError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "" | "service_role" => Ok(Viewer::ServiceRole),
            "anon" => Ok(Viewer::Anon),
            other => other
                .strip_prefix("user:")
                .and_then(|id| Uuid::parse_str(id).ok())
                .map(Viewer::User)
                .ok_or_else(|| {
                    ConsoleError::bad_request(
                        "`as` is service_role, anon or user:<uuid of an auth user>",
                    )
                }),
        }
    }
}

impl Viewer {
    pub fn label(&self) -> String {
        match self {
            Viewer::ServiceRole => "service_role".into(),
            Viewer::Anon => "anon".into(),
            Viewer::User(id) => format!("user:{id}"),
        }
    }
}

/// A surface's answer.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).map_err(ConsoleError::internal)
    }
    /// The answer, or the surface's error in its own words.
    pub fn ok(self) -> Result<Reply> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(ConsoleError::from_surface(self.status, &self.body))
        }
    }
}

impl Inner {
    /// The `(apikey, bearer)` of a viewer.
    pub async fn credentials(&self, who: &Viewer) -> Result<(String, String)> {
        match who {
            Viewer::ServiceRole => {
                Ok((self.service_role_key.clone(), self.service_role_key.clone()))
            }
            Viewer::Anon => Ok((self.anon_key.clone(), self.anon_key.clone())),
            Viewer::User(id) => {
                let c = self.admin_db.client().await?;
                let row = c
                    .query_opt(
                        "select id, coalesce(nullif(role, ''), 'authenticated'), coalesce(nullif(aud, ''), 'authenticated'),
                                coalesce(email, ''), coalesce(phone, ''), coalesce(raw_app_meta_data, '{}'),
                                coalesce(raw_user_meta_data, '{}'), coalesce(is_anonymous, false)
                           from auth.users where id = $1",
                        &[id],
                    )
                    .await?
                    .ok_or_else(|| ConsoleError::not_found(format!("no auth user {id}")))?;
                let now = chrono::Utc::now().timestamp();
                let role: String = row.get(1);
                let claims = json!({
                    "sub": row.get::<_, Uuid>(0),
                    "role": role,
                    "aud": row.get::<_, String>(2),
                    "email": row.get::<_, String>(3),
                    "phone": row.get::<_, String>(4),
                    "app_metadata": row.get::<_, Value>(5),
                    "user_metadata": row.get::<_, Value>(6),
                    "is_anonymous": row.get::<_, bool>(7),
                    "aal": "aal1",
                    "amr": [{"method": "console_view_as", "timestamp": now}],
                    "iat": now,
                    "exp": now + 120,
                });
                let token = self.keys.sign(&claims).map_err(ConsoleError::internal)?;
                Ok((self.anon_key.clone(), token))
            }
        }
    }

    /// Calls one of the API surfaces in-process (`uri` like `/rest/v1/clients?...`).
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        who: &Viewer,
        headers: &[(&str, String)],
        body: Body,
    ) -> Result<Reply> {
        let (apikey, bearer) = self.credentials(who).await?;
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("apikey", apikey)
            .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
            .header(header::HOST, "localhost")
            .header("x-client-info", "agencyflow-console");
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(ConsoleError::internal)?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| ConsoleError::bad_request(format!("invalid {k} header value")))?;
            req = req.header(name, value);
        }
        let req = req.body(body).map_err(ConsoleError::internal)?;
        let res = self
            .api
            .clone()
            .oneshot(req)
            .await
            .map_err(ConsoleError::internal)?;
        let (parts, body) = res.into_parts();
        let body = axum::body::to_bytes(body, 256 * 1024 * 1024)
            .await
            .map_err(ConsoleError::internal)?;
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    pub async fn call_json(
        &self,
        method: Method,
        uri: &str,
        who: &Viewer,
        body: Option<Value>,
    ) -> Result<Value> {
        let (hdrs, body) = match body {
            Some(v) => (
                vec![("content-type", "application/json".to_string())],
                Body::from(v.to_string()),
            ),
            None => (vec![], Body::empty()),
        };
        let r = self.call(method, uri, who, &hdrs, body).await?.ok()?;
        if r.body.is_empty() {
            return Ok(Value::Null);
        }
        r.json()
    }
}

pub(crate) fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A storage object path, each segment percent-encoded.
fn enc_path(p: &str) -> String {
    p.split('/').map(enc).collect::<Vec<_>>().join("/")
}

// ---- audit log -----------------------------------------------------------------------

#[derive(Deserialize)]
pub struct AuditQuery {
    before: Option<i64>,
    action: Option<String>,
}

/// `GET /console/api/audit?before=<id>&action=<prefix>`: newest first, 100 a page.
pub async fn audit(
    State(state): State<ConsoleState>,
    _admin: Admin,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>> {
    let c = state.0.admin_db.client().await?;
    let rows = c
        .query(
            "select id, at, admin_email, action, target, detail, ip, user_agent, request_id
               from console.audit_log
              where ($1::bigint is null or id < $1)
                and ($2::text is null or action like $2 || '%')
              order by id desc limit 100",
            &[&q.before, &q.action.filter(|a| !a.is_empty())],
        )
        .await?;
    let entries: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.get::<_, i64>(0),
                "at": r.get::<_, chrono::DateTime<chrono::Utc>>(1),
                "admin": r.get::<_, Option<String>>(2),
                "action": r.get::<_, String>(3),
                "target": r.get::<_, Option<String>>(4),
                "detail": r.get::<_, Option<Value>>(5),
                "ip": r.get::<_, Option<String>>(6),
                "user_agent": r.get::<_, Option<String>>(7),
                "request_id": r.get::<_, Option<String>>(8),
            })
        })
        .collect();
    Ok(Json(json!({ "entries": entries })))
}

// ---- storage -------------------------------------------------------------------------

pub async fn buckets(State(state): State<ConsoleState>, _admin: Admin) -> Result<Json<Value>> {
    let v = state
        .0
        .call_json(
            Method::GET,
            "/storage/v1/bucket",
            &Viewer::ServiceRole,
            None,
        )
        .await?;
    Ok(Json(v))
}

#[derive(Deserialize)]
pub struct NewBucket {
    name: String,
    #[serde(default)]
    public: bool,
    file_size_limit: Option<Value>,
    allowed_mime_types: Option<Vec<String>>,
}

pub async fn create_bucket(
    State(state): State<ConsoleState>,
    admin: Admin,
    Json(b): Json<NewBucket>,
) -> Result<Json<Value>> {
    let st = &state.0;
    let v = st
        .call_json(
            Method::POST,
            "/storage/v1/bucket",
            &Viewer::ServiceRole,
            Some(json!({
                "id": b.name, "name": b.name, "public": b.public,
                "file_size_limit": b.file_size_limit, "allowed_mime_types": b.allowed_mime_types,
            })),
        )
        .await?;
    st.audit(
        Some(&admin),
        &admin.client,
        None,
        "storage.bucket.create",
        Some(&b.name),
        json!({"public": b.public}),
    )
    .await;
    Ok(Json(v))
}

/// A bucket's settings as the Storage page edits them (`PUT /storage/v1/bucket/{id}`).
#[derive(Deserialize)]
pub struct BucketLimits {
    public: bool,
    /// Bytes, or a size such as "5MB"; null: no limit of its own.
    file_size_limit: Option<Value>,
    /// e.g. `["image/*", "application/pdf"]`; null or empty: any type.
    allowed_mime_types: Option<Vec<String>>,
}

/// `PUT /console/api/storage/buckets/{id}`: public/private, size limit and allowed types.
pub async fn update_bucket(
    State(state): State<ConsoleState>,
    admin: Admin,
    axum::extract::Path(id): axum::extract::Path<String>,
    Json(b): Json<BucketLimits>,
) -> Result<Json<Value>> {
    let st = &state.0;
    let types = b
        .allowed_mime_types
        .map(|t| {
            t.into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|t| !t.is_empty());
    let body = json!({
        "public": b.public,
        "file_size_limit": b.file_size_limit,
        "allowed_mime_types": types,
    });
    st.call_json(
        Method::PUT,
        &format!("/storage/v1/bucket/{}", enc(&id)),
        &Viewer::ServiceRole,
        Some(body.clone()),
    )
    .await?;
    st.audit(
        Some(&admin),
        &admin.client,
        None,
        "storage.bucket.update",
        Some(&id),
        body,
    )
    .await;
    let v = st
        .call_json(
            Method::GET,
            &format!("/storage/v1/bucket/{}", enc(&id)),
            &Viewer::ServiceRole,
            None,
        )
        .await?;
    Ok(Json(v))
}

#[derive(Deserialize)]
pub struct ListQuery {
    bucket: String,
    #[serde(default)]
    prefix: String,
}

pub async fn list_objects(
    State(state): State<ConsoleState>,
    _admin: Admin,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>> {
    let v = state
        .0
        .call_json(
            Method::POST,
            &format!("/storage/v1/object/list/{}", enc(&q.bucket)),
            &Viewer::ServiceRole,
            Some(json!({"prefix": q.prefix, "limit": 1000, "offset": 0, "sortBy": {"column": "name", "order": "asc"}})),
        )
        .await?;
    Ok(Json(v))
}

#[derive(Deserialize)]
pub struct ObjectQuery {
    bucket: String,
    path: String,
    #[serde(default)]
    download: bool,
}

/// `GET /console/api/storage/object?bucket=&path=`: the file, for previews (same origin, so
/// the page's CSP allows it as a blob) or, with `download=true`, as an attachment.
pub async fn download(
    State(state): State<ConsoleState>,
    admin: Admin,
    Query(q): Query<ObjectQuery>,
) -> Result<Response> {
    let st = &state.0;
    let r = st
        .call(
            Method::GET,
            &format!(
                "/storage/v1/object/authenticated/{}/{}",
                enc(&q.bucket),
                enc_path(&q.path)
            ),
            &Viewer::ServiceRole,
            &[],
            Body::empty(),
        )
        .await?
        .ok()?;
    if q.download {
        st.audit(
            Some(&admin),
            &admin.client,
            None,
            "storage.object.download",
            Some(&format!("{}/{}", q.bucket, q.path)),
            json!({}),
        )
        .await;
    }
    let ctype = r
        .headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let name = q
        .path
        .rsplit('/')
        .next()
        .unwrap_or("file")
        .replace(['"', '\\', '\r', '\n'], "_");
    let disposition = if q.download {
        format!("attachment; filename=\"{name}\"")
    } else {
        "inline".to_string()
    };
    let mut res = Response::new(Body::from(r.body));
    res.headers_mut().insert(header::CONTENT_TYPE, ctype);
    res.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).unwrap_or(HeaderValue::from_static("attachment")),
    );
    // An uploaded HTML or SVG file never runs as the console's origin.
    res.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    Ok(res)
}

/// `POST /console/api/storage/object?bucket=&path=` with the file as the body.
pub async fn upload(
    State(state): State<ConsoleState>,
    admin: Admin,
    Query(q): Query<ObjectQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>> {
    let st = &state.0;
    let ctype = crate::header_str(&headers, "content-type")
        .unwrap_or("application/octet-stream")
        .to_string();
    let size = body.len();
    let r = st
        .call(
            Method::POST,
            &format!(
                "/storage/v1/object/{}/{}",
                enc(&q.bucket),
                enc_path(&q.path)
            ),
            &Viewer::ServiceRole,
            &[("content-type", ctype.clone()), ("x-upsert", "true".into())],
            Body::from(body),
        )
        .await?
        .ok()?;
    st.audit(
        Some(&admin),
        &admin.client,
        None,
        "storage.object.upload",
        Some(&format!("{}/{}", q.bucket, q.path)),
        json!({"bytes": size, "content_type": ctype}),
    )
    .await;
    Ok(Json(r.json()?))
}

#[derive(Deserialize)]
pub struct DeleteObjects {
    bucket: String,
    paths: Vec<String>,
}

pub async fn delete_objects(
    State(state): State<ConsoleState>,
    admin: Admin,
    Json(d): Json<DeleteObjects>,
) -> Result<Json<Value>> {
    let st = &state.0;
    let v = st
        .call_json(
            Method::DELETE,
            &format!("/storage/v1/object/{}", enc(&d.bucket)),
            &Viewer::ServiceRole,
            Some(json!({"prefixes": d.paths})),
        )
        .await?;
    st.audit(
        Some(&admin),
        &admin.client,
        None,
        "storage.object.delete",
        Some(&d.bucket),
        json!({"paths": d.paths}),
    )
    .await;
    Ok(Json(v))
}

#[derive(Deserialize)]
pub struct SignObject {
    bucket: String,
    path: String,
    #[serde(default = "default_expiry")]
    expires_in: u32,
}

fn default_expiry() -> u32 {
    3600
}

pub async fn sign_object(
    State(state): State<ConsoleState>,
    admin: Admin,
    Json(s): Json<SignObject>,
) -> Result<Json<Value>> {
    let st = &state.0;
    let v = st
        .call_json(
            Method::POST,
            &format!(
                "/storage/v1/object/sign/{}/{}",
                enc(&s.bucket),
                enc_path(&s.path)
            ),
            &Viewer::ServiceRole,
            Some(json!({"expiresIn": s.expires_in})),
        )
        .await?;
    st.audit(
        Some(&admin),
        &admin.client,
        None,
        "storage.object.sign",
        Some(&format!("{}/{}", s.bucket, s.path)),
        json!({"expires_in": s.expires_in}),
    )
    .await;
    let signed = v
        .get("signedURL")
        .and_then(Value::as_str)
        .map(|u| format!("{}/storage/v1{}", st.public_base(), u))
        .unwrap_or_default();
    Ok(Json(json!({ "url": signed, "expires_in": s.expires_in })))
}

impl Inner {
    /// The API's public base URL (API_EXTERNAL_URL), else the local address.
    pub fn public_base(&self) -> String {
        self.external_url
            .clone()
            .filter(|u| !u.trim().is_empty())
            .map(|u| u.trim_end_matches('/').to_string())
            .unwrap_or_default()
    }
}

// ---- database, AI, health, requests, API --------------------------------------------------

async fn rows_json(c: &agencyflow_db::tokio_postgres::Client, sql: &str) -> Result<Value> {
    let rows = c
        .query(
            &format!("select coalesce(json_agg(t), '[]') from ({sql}) t"),
            &[],
        )
        .await?;
    Ok(rows
        .first()
        .map(|r| r.get::<_, Value>(0))
        .unwrap_or(Value::Null))
}

/// `GET /console/api/database`: migrations, extensions, roles, RLS policies per table.
pub async fn database(State(state): State<ConsoleState>, _admin: Admin) -> Result<Json<Value>> {
    let st = &state.0;
    let c = st.admin_db.client().await?;
    let applied = migrations_applied(&c).await;
    let schemas = (st.schemas)();
    let extensions = rows_json(&c, "select extname as name, extversion as version, n.nspname as schema from pg_extension e join pg_namespace n on n.oid = e.extnamespace order by 1").await?;
    let roles = rows_json(&c, "select rolname as name, rolcanlogin as login, rolbypassrls as bypass_rls, rolsuper as superuser, rolinherit as inherit, coalesce((select string_agg(b.rolname, ', ' order by b.rolname) from pg_auth_members m join pg_roles b on b.oid = m.roleid where m.member = r.oid), '') as member_of from pg_roles r where rolname !~ '^pg_' order by 1").await?;
    let policies = c
        .query(
            "select coalesce(json_agg(t order by t.schema, t.table, t.name), '[]') from (
               select p.schemaname as schema, p.tablename as table, p.policyname as name, p.permissive, p.roles::text[] as roles,
                      p.cmd as command, p.qual as using, p.with_check
                 from pg_policies p where p.schemaname = any($1)) t",
            &[&schemas],
        )
        .await?
        .first()
        .map(|r| r.get::<_, Value>(0))
        .unwrap_or(Value::Null);
    let rls = c
        .query(
            "select coalesce(json_agg(t order by t.schema, t.table), '[]') from (
               select n.nspname as schema, c.relname as table, c.relrowsecurity as enabled, c.relforcerowsecurity as forced
                 from pg_class c join pg_namespace n on n.oid = c.relnamespace
                where n.nspname = any($1) and c.relkind in ('r', 'p')) t",
            &[&schemas],
        )
        .await?
        .first()
        .map(|r| r.get::<_, Value>(0))
        .unwrap_or(Value::Null);
    Ok(Json(json!({
        "migrations": applied,
        "embedded_migrations": agencyflow_db::migrate::embedded().iter().map(|m| m.file_name()).collect::<Vec<_>>(),
        "extensions": extensions,
        "roles": roles,
        "rls": rls,
        "policies": policies,
    })))
}

/// The applied migrations, when the auth login may read them (it may not on every database).
async fn migrations_applied(c: &agencyflow_db::tokio_postgres::Client) -> Value {
    match c
        .query(
            "select coalesce(json_agg(t order by t.version), '[]') from (select version, name from supabase_migrations.schema_migrations) t",
            &[],
        )
        .await
    {
        Ok(rows) => rows.first().map(|r| r.get::<_, Value>(0)).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// `GET /console/api/ai`: `ai_run_logs` by org and function, today's usage against the
/// configured limits, and the embedding queue, read as service_role.
pub async fn ai(State(state): State<ConsoleState>, _admin: Admin) -> Result<Json<Value>> {
    let st = &state.0;
    let settings = agencyflow_db::TxSettings::new("service_role", r#"{"role":"service_role"}"#)
        .read_only(true);
    let queries = [
        ("by_function",
         "select coalesce(json_agg(t order by t.org_name, t.function_name), '[]') from (
            select coalesce(o.name, l.org_id::text) as org_name, l.org_id, l.agent_name as function_name, count(*) as runs,
                   sum(l.input_tokens) as input_tokens, sum(l.output_tokens) as output_tokens,
                   sum(l.cost_micro_usd) as cost_micro_usd,
                   count(*) filter (where not l.success) as failures,
                   round(avg(l.duration_ms)::numeric, 1) as avg_latency_ms,
                   round(100.0 * count(*) filter (where l.cache_hit) / greatest(count(*), 1), 1) as cache_hit_pct,
                   max(l.created_at) as last_run
              from public.ai_run_logs l left join public.organizations o on o.id = l.org_id
             group by 1, 2, 3) t"),
        ("usage_today",
         "select coalesce(json_agg(t order by t.org_name, t.meter), '[]') from (
            select coalesce(o.name, u.org_id::text) as org_name, u.meter, sum(u.used) as used, sum(u.reserved) as reserved
              from private.ai_usage u left join public.organizations o on o.id = u.org_id
             where u.period_start >= date_trunc('day', now() at time zone 'UTC') at time zone 'UTC'
             group by 1, 2) t"),
        ("embedding_queue",
         "select coalesce(json_agg(t order by t.table_name, t.status), '[]') from (
            select table_name, status, count(*) as jobs, max(attempts) as max_attempts, max(updated_at) as last_change,
                   (array_agg(last_error order by updated_at desc) filter (where last_error is not null))[1] as last_error
              from private.embedding_jobs group by 1, 2) t"),
        ("embedding_models",
         "select coalesce(json_agg(t), '[]') from (
            select 'documents' as table_name, coalesce(embedding_model, '(none)') as model, count(*) as rows from public.documents group by 2
            union all
            select 'crm_interactions', coalesce(embedding_model, '(none)'), count(*) from public.crm_interactions group by 2) t"),
    ];
    let mut out = serde_json::Map::new();
    for (name, sql) in queries {
        // Each read on its own: a database without one of these tables still shows the rest.
        let mut tx = st.db.begin(&settings).await?;
        let v = match tx.query(sql, &[]).await {
            Ok(rows) => rows[0].get::<_, Value>(0),
            Err(e) => json!({"error": ConsoleError::from(e).message}),
        };
        out.insert(name.into(), v);
    }
    out.insert(
        "limits".into(),
        st.facts.get("ai_limits").cloned().unwrap_or(Value::Null),
    );
    out.insert(
        "providers".into(),
        st.settings
            .get("ai_providers")
            .cloned()
            .unwrap_or(Value::Null),
    );
    Ok(Json(Value::Object(out)))
}

/// `GET /console/api/health`: the server's own `/health` and its facts.
pub async fn health(State(state): State<ConsoleState>, _admin: Admin) -> Result<Json<Value>> {
    let st = &state.0;
    let r = st
        .call(Method::GET, "/health", &Viewer::Anon, &[], Body::empty())
        .await?;
    let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    Ok(Json(json!({
        "status": r.status.as_u16(), "health": body, "server": st.facts,
        "supervisor": crate::ops::supervisor(st),
    })))
}

pub async fn requests(State(state): State<ConsoleState>, _admin: Admin) -> Json<Value> {
    Json(json!({ "requests": state.0.requests.recent() }))
}

/// `GET /console/api/api-info`: the URL and each table's supabase-js snippets (keys only
/// through [`reveal_keys`]).
pub async fn api_info(State(state): State<ConsoleState>, _admin: Admin) -> Result<Json<Value>> {
    let st = &state.0;
    Ok(Json(json!({
        "url": st.public_base(),
        "schemas": (st.schemas)(),
    })))
}

/// `POST /console/api/keys`: the anon and service_role keys, on demand (audited).
pub async fn reveal_keys(State(state): State<ConsoleState>, admin: Admin) -> Result<Response> {
    let st = &state.0;
    st.audit(
        Some(&admin),
        &admin.client,
        None,
        "keys.reveal",
        None,
        json!({}),
    )
    .await;
    Ok(Json(json!({ "anon": st.anon_key, "service_role": st.service_role_key })).into_response())
}
