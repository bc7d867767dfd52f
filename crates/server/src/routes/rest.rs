//! `/rest/v1`: wires the pure PostgREST pipeline (`agencyflow_rest`) to the database.
//!
//! parse → authenticate → plan (schema cache) → render one statement → ClaimsTxn as the
//! JWT's role → respond. The only I/O is the transaction; a read is one round trip
//! (BEGIN, settings, statement and COMMIT pipelined).

use agencyflow_db::pipe::TextRows;
use agencyflow_db::{DbError, TxSettings, Type};
use agencyflow_rest::error::ErrorKind;
use agencyflow_rest::plan::Action;
use agencyflow_rest::response::{
    apply_response_settings, error_response, respond, RestResponse, ResultRow,
};
use agencyflow_rest::{parse_request, RequestParts, RestError};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::app::AppState;

/// Who the request acts as: the shared [`agencyflow_keys::Caller`].
pub use agencyflow_keys::Caller;

/// Verifies the bearer token (PostgREST's rules, through `agencyflow_keys`): none → the anon
/// role; a valid token's `role` claim is the role if it is an API role; anything else is 401
/// PGRST301.
pub fn authenticate(
    state: &AppState,
    roles: &agencyflow_keys::ApiRoles,
    headers: &HeaderMap,
) -> Result<Caller, RestError> {
    agencyflow_keys::authenticate(&state.keys, roles, headers).map_err(|e| match e {
        agencyflow_keys::AuthnError::Expired => {
            RestError::new(ErrorKind::JwtInvalid, "JWT expired")
        }
        other => RestError::new(ErrorKind::JwtInvalid, other.to_string()),
    })
}

fn into_response(r: RestResponse, method: &Method, jwt_error: bool) -> Response {
    let mut builder = Response::builder().status(r.status);
    for (k, v) in r.headers {
        builder = builder.header(k, v);
    }
    if jwt_error {
        builder = builder.header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
    }
    let body = if method == Method::HEAD {
        Body::empty()
    } else if let Some(bytes) = r.bytes {
        Body::from(bytes)
    } else {
        Body::from(r.body)
    };
    builder
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

pub(crate) fn fail(e: RestError, method: &Method) -> Response {
    let jwt = e.status == StatusCode::UNAUTHORIZED && e.code == ErrorKind::JwtInvalid.code();
    into_response(error_response(&e), method, jwt)
}

pub(crate) fn db_error(e: DbError, role_is_anon: bool) -> RestError {
    let cluster_down = e.cluster_state().is_some();
    match e {
        DbError::Postgres(pg) => RestError::from_postgres(
            &pg.code,
            &pg.message,
            pg.detail.as_deref(),
            pg.hint.as_deref(),
            role_is_anon,
        ),
        DbError::Unavailable(m) => {
            let mut e = RestError::new(
                ErrorKind::ConnectionError,
                "Database client error. Retrying the connection.",
            );
            // The embedded cluster's supervisor says why (PostgREST puts the connection
            // error in `details` too); other connection errors stay in the log.
            if cluster_down {
                tracing::warn!(error = %m, "database unavailable");
                e.details = Some(m);
            } else {
                tracing::error!(error = %m, "database unavailable");
            }
            e
        }
        DbError::Other(m) => {
            tracing::error!(error = %m, "database error");
            RestError::new(ErrorKind::ClientError, "Database client error")
        }
    }
}

pub async fn handle(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().strip_prefix("/rest/v1").unwrap_or(uri.path());
    let path = if path.is_empty() { "/" } else { path };
    // The gateway consumes `?apikey=` (Kong's hide_credentials): it is no filter.
    let query = without_apikey(uri.query().unwrap_or(""));
    let query = query.as_str();
    let rt = state.rest();
    let config = &rt.config;
    let req = match parse_request(
        RequestParts {
            method: &method,
            path,
            query,
            headers: &headers,
            body: &body,
        },
        config,
    ) {
        Ok(r) => r,
        Err(e) => return fail(e, &method),
    };
    let caller = match authenticate(&state, &rt.api_roles, &headers) {
        Ok(c) => c,
        Err(e) => return fail(e, &method),
    };
    let Some(cache) = state.schema_cache.get() else {
        return fail(
            RestError::new(
                ErrorKind::SchemaCacheLoading,
                "Could not query the database for the schema cache. Retrying.",
            ),
            &method,
        );
    };
    let plan = match agencyflow_rest::plan::plan(&req, &cache, config) {
        Ok(p) => p,
        Err(e) => return fail(e, &method),
    };
    if plan.action == Action::OpenApi {
        let schema = plan
            .profile
            .clone()
            .unwrap_or_else(|| config.schemas[0].clone());
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let doc =
            agencyflow_rest::openapi::openapi_document(&cache, config, &schema, &caller.role, host);
        return (
            [(
                header::CONTENT_TYPE,
                "application/openapi+json; charset=utf-8",
            )],
            doc.to_string(),
        )
            .into_response();
    }
    let role_is_anon = caller.role == config.anon_role;
    match execute(&state, &rt, &plan, &caller, &method, path, &headers).await {
        Ok(r) => into_response(r, &method, false),
        Err(e) => fail(db_error(e, role_is_anon), &method),
    }
}

/// `request.headers`: the request's headers as a JSON object (lower-case names; a repeated
/// header's last value; values that are not visible ASCII left out), serialized in one pass.
fn headers_json(headers: &HeaderMap) -> String {
    struct Headers<'a>(&'a HeaderMap);
    impl serde::Serialize for Headers<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(self.0.keys().filter_map(|k| {
                let v = self.0.get_all(k).iter().next_back()?.to_str().ok()?;
                Some((k.as_str(), v))
            }))
        }
    }
    serde_json::to_string(&Headers(headers)).unwrap_or_else(|_| "{}".into())
}

/// The query string without its `apikey` pairs.
fn without_apikey(query: &str) -> String {
    if !query
        .split('&')
        .any(|p| p == "apikey" || p.starts_with("apikey="))
    {
        return query.to_string();
    }
    query
        .split('&')
        .filter(|p| !(*p == "apikey" || p.starts_with("apikey=")))
        .collect::<Vec<_>>()
        .join("&")
}

fn text_params(
    params: &[Option<String>],
) -> Vec<(
    &(dyn agencyflow_db::tokio_postgres::types::ToSql + Sync),
    Type,
)> {
    params
        .iter()
        .map(|p| {
            (
                p as &(dyn agencyflow_db::tokio_postgres::types::ToSql + Sync),
                Type::TEXT,
            )
        })
        .collect()
}

/// The statement's one result row, read from either client's rows.
trait ResultSource {
    fn position(&self, name: &str) -> Option<usize>;
    /// Column `i` as text; a row that owns its values hands them over (the body can be large).
    fn text(&mut self, i: usize) -> Result<Option<String>, DbError>;
    fn int(&self, i: usize) -> Result<Option<i64>, DbError>;
}

fn read_error(e: impl std::fmt::Display) -> DbError {
    DbError::Other(format!("reading the REST result row: {e}"))
}

impl ResultSource for agencyflow_db::tokio_postgres::Row {
    fn position(&self, name: &str) -> Option<usize> {
        self.columns().iter().position(|c| c.name() == name)
    }
    fn text(&mut self, i: usize) -> Result<Option<String>, DbError> {
        self.try_get(i).map_err(read_error)
    }
    fn int(&self, i: usize) -> Result<Option<i64>, DbError> {
        self.try_get(i).map_err(read_error)
    }
}

/// The first row of a [`TextRows`], its values owned.
struct TextRow<'a>(&'a TextRows, Vec<Option<String>>);

impl ResultSource for TextRow<'_> {
    fn position(&self, name: &str) -> Option<usize> {
        self.0.position(name)
    }
    fn text(&mut self, i: usize) -> Result<Option<String>, DbError> {
        self.1
            .get_mut(i)
            .map(Option::take)
            .ok_or_else(|| read_error("missing column"))
    }
    fn int(&self, i: usize) -> Result<Option<i64>, DbError> {
        match self.1.get(i) {
            Some(Some(v)) => v.parse().map(Some).map_err(read_error),
            Some(None) => Ok(None),
            None => Err(read_error("missing column")),
        }
    }
}

fn result_row(row: Option<impl ResultSource>) -> Result<ResultRow, DbError> {
    let mut row = row.ok_or_else(|| DbError::Other("the REST statement returned no row".into()))?;
    // Optional columns by name: inserted_rows (merge upserts), the response settings.
    let mut text = |name: &str| match row.position(name) {
        Some(i) => row.text(i),
        None => Ok(None),
    };
    let response_headers = text("response_headers")?;
    let response_status = text("response_status")?;
    Ok(ResultRow {
        total_result_set: row.int(0)?,
        page_total: row.int(1)?.unwrap_or_default(),
        body: row.text(2)?.unwrap_or_default(),
        location: row.text(3)?,
        estimated_total: None,
        inserted_rows: match row.position("inserted_rows") {
            Some(i) => row.int(i)?,
            None => None,
        },
        response_headers,
        response_status,
    })
}

/// The response for the statement's result row, with the `response.headers` /
/// `response.status` settings applied to a successful one (a bad setting is PGRST111/112 and
/// rolls back).
fn finish(plan: &agencyflow_rest::plan::Plan, row: ResultRow) -> RestResponse {
    let (headers, status) = (row.response_headers.clone(), row.response_status.clone());
    let response = respond(plan, row);
    if response.rollback || (headers.is_none() && status.is_none()) {
        return response;
    }
    apply_response_settings(response, headers.as_deref(), status.as_deref())
        .unwrap_or_else(|e| error_response(&e))
}

async fn execute(
    state: &AppState,
    rt: &crate::config::RestRuntime,
    plan: &agencyflow_rest::plan::Plan,
    caller: &Caller,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<RestResponse, DbError> {
    let stmt = agencyflow_rest::render::render(plan);
    // PostgREST's search_path: the request's schema, then db-extra-search-path.
    let schema = plan
        .profile
        .as_deref()
        .unwrap_or(rt.config.schemas[0].as_str());
    let mut settings = TxSettings::new(caller.role.clone(), caller.claims.json.clone())
        .pre_request(rt.pre_request.clone());
    if let Some(path) = rt.search_path(schema) {
        settings = settings.search_path(path);
    }
    let settings = settings
        .read_only(plan.read_only)
        .guc("request.method", method.as_str())
        .guc("request.path", path)
        .guc("request.headers", headers_json(headers));
    let settings = match &plan.timezone {
        Some(tz) => settings.guc("timezone", tz.as_str()),
        None => settings,
    };
    if let Some(explain) = plan.explain {
        // Accept: application/vnd.pgrst.plan: the statement's plan, never its effects.
        let sql = format!("EXPLAIN ({}) {}", explain.explain_options(), stmt.sql);
        let mut tx = state.db.begin(&settings).await?;
        let rows = tx.query_typed(&sql, &text_params(&stmt.params)).await?;
        let lines: Vec<String> = rows
            .iter()
            .map(|r| {
                r.try_get::<_, String>(0)
                    .ok()
                    .or_else(|| r.try_get::<_, Value>(0).ok().map(|v| v.to_string()))
                    .unwrap_or_default()
            })
            .collect();
        tx.rollback().await?;
        return Ok(agencyflow_rest::response::respond_explain(
            plan,
            lines.join("\n"),
        ));
    }
    // A read-only request's outcome cannot depend on commit or rollback: the settings and
    // the statement go out under one Sync, one implicit transaction, one round trip.
    // Statements are prepared once per connection (by SQL text; values are parameters), so
    // a request shape is planned once, not per request.
    if plan.read_only && plan.count_statement.is_none() {
        let mut rows = state
            .db
            .query_and_commit(&settings, &stmt.sql, &stmt.params)
            .await?;
        let values = rows.rows.first_mut().map(std::mem::take);
        return Ok(finish(plan, result_row(values.map(|v| TextRow(&rows, v)))?));
    }
    let mut tx = state.db.begin(&settings).await?;
    let mut explain = None;
    if let Some(cs) = &plan.count_statement {
        let rows = tx.query_typed(&cs.sql, &text_params(&cs.params)).await?;
        explain = rows.first().and_then(|r| {
            r.try_get::<_, String>(0)
                .ok()
                .or_else(|| r.try_get::<_, Value>(0).ok().map(|v| v.to_string()))
        });
    }
    let rows = tx.query_cached(&stmt.sql, &stmt.params).await?;
    let mut row = result_row(rows.into_iter().next())?;
    if let Some(e) = explain {
        row = row.with_explain(&e);
    }
    let response = finish(plan, row);
    if response.rollback {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_headers_become_one_json_object() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-client-info",
            HeaderValue::from_static("supabase-js/2.109.0"),
        );
        h.append("accept", HeaderValue::from_static("text/csv"));
        h.append("accept", HeaderValue::from_static("application/json"));
        h.insert("x-quote", HeaderValue::from_static("say \"hi\" \\ bye"));
        h.insert("x-binary", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let v: Value = serde_json::from_str(&headers_json(&h)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "x-client-info": "supabase-js/2.109.0",
                "accept": "application/json",
                "x-quote": "say \"hi\" \\ bye",
            })
        );
        assert_eq!(headers_json(&HeaderMap::new()), "{}");
    }
}
