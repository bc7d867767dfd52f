//! `/graphql/v1`: pg_graphql's API through `agencyflow_graphql`, on the REST surface's
//! machinery: the same API key gate and JWT rules (`rest::authenticate`, PostgREST's 401s),
//! the same schema cache (reflected per role, cached until the cache is swapped), and the
//! same execution: one transaction as the JWT's role with `request.jwt.claims` set, read-only
//! for queries. A query of one collection goes out as one round trip (settings and statement
//! under one Sync); mutations run in document order in one transaction, and a field over its
//! `atMost` rolls everything back. GraphQL errors answer 200 with `{"data": null, "errors"}`,
//! as pg_graphql behind PostgREST does.

use agencyflow_db::{DbError, TxSettings};
use agencyflow_graphql::{assemble, error_body, GqlError, GraphqlRequest, Step};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::routes::rest;

fn json(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

fn gql_error(e: GqlError) -> Response {
    json(StatusCode::OK, error_body(&[e]))
}

/// The request from a POST body (JSON, or `application/graphql` text) or GET parameters.
fn request_of(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<GraphqlRequest, GqlError> {
    if method == Method::GET {
        let mut req = GraphqlRequest::default();
        for (k, v) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "query" => req.query = Some(v.into_owned()),
                "variables" => req.variables = Some(serde_json::Value::String(v.into_owned())),
                "operationName" => req.operation_name = Some(v.into_owned()),
                _ => {}
            }
        }
        return Ok(req);
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.starts_with("application/graphql") {
        return Ok(GraphqlRequest {
            query: Some(String::from_utf8_lossy(body).into_owned()),
            ..GraphqlRequest::default()
        });
    }
    serde_json::from_slice(body).map_err(|_| {
        GqlError::new("Invalid request body: a JSON object with \"query\" is required")
    })
}

pub async fn handle(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method != Method::GET && method != Method::POST {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            error_body(&[GqlError::new("Only GET and POST are supported")]),
        );
    }
    let rt = state.rest();
    let caller = match rest::authenticate(&state, &rt.api_roles, &headers) {
        Ok(c) => c,
        Err(e) => return rest::fail(e, &method),
    };
    let req = match request_of(&method, &uri, &headers, &body) {
        Ok(r) => r,
        Err(e) => return gql_error(e),
    };
    let Some(cache) = state.schema_cache.get() else {
        return rest::fail(
            agencyflow_rest::RestError::new(
                agencyflow_rest::ErrorKind::SchemaCacheLoading,
                "Could not query the database for the schema cache. Retrying.",
            ),
            &method,
        );
    };
    let schema = state.graphql.get(&cache, &caller.role);
    let plan = match agencyflow_graphql::plan(&schema, &req) {
        Ok(p) => p,
        Err(e) => return gql_error(e),
    };
    if method == Method::GET && !plan.read_only {
        return gql_error(GqlError::new("Mutations are only accepted with POST"));
    }
    let mut settings = TxSettings::new(caller.role.clone(), caller.claims.json.clone())
        .pre_request(rt.pre_request.clone());
    if let Some(path) = rt.search_path(&rt.config.schemas[0]) {
        settings = settings.search_path(path);
    }
    let settings = settings
        .read_only(plan.read_only)
        .guc("request.method", method.as_str())
        .guc("request.path", uri.path());
    match execute(&state, &settings, &plan).await {
        Ok(Ok(results)) => json(StatusCode::OK, assemble(&plan.steps, results)),
        Ok(Err(e)) => gql_error(e),
        Err(DbError::Postgres(pg)) => gql_error(GqlError::new(pg.message)),
        Err(e) => rest::fail(
            rest::db_error(e, caller.role == rt.config.anon_role),
            &method,
        ),
    }
}

/// Runs the plan's statements; `Ok(Err(..))` is a GraphQL error after a rollback (`atMost`).
async fn execute(
    state: &AppState,
    settings: &TxSettings,
    plan: &agencyflow_graphql::Plan,
) -> Result<Result<Vec<Option<String>>, GqlError>, DbError> {
    let stmts: Vec<&agencyflow_graphql::Statement> = plan
        .steps
        .iter()
        .filter_map(|(_, s)| match s {
            Step::Sql(st) => Some(st),
            Step::Value(_) => None,
        })
        .collect();
    if stmts.is_empty() {
        return Ok(Ok(Vec::new()));
    }
    if plan.read_only && stmts.len() == 1 {
        // One statement, read-only: settings and statement under one Sync, one round trip.
        let mut rows = state
            .db
            .query_and_commit(settings, &stmts[0].sql, &stmts[0].params)
            .await?;
        let v = rows
            .rows
            .first_mut()
            .and_then(|r| r.first_mut())
            .and_then(Option::take);
        return Ok(Ok(vec![v]));
    }
    let mut tx = state.db.begin(settings).await?;
    let mut out = Vec::with_capacity(stmts.len());
    for st in stmts {
        let rows = tx.query_cached(&st.sql, &st.params).await?;
        let row = rows
            .first()
            .ok_or_else(|| DbError::Other("the GraphQL statement returned no row".into()))?;
        let text: Option<String> = row
            .try_get(0)
            .map_err(|e| DbError::Other(format!("reading the GraphQL result: {e}")))?;
        if let Some((at_most, message)) = st.at_most {
            let affected: i64 = row
                .try_get(1)
                .map_err(|e| DbError::Other(format!("reading the GraphQL result: {e}")))?;
            if affected > at_most {
                tx.rollback().await?;
                return Ok(Err(GqlError::new(message)));
            }
        }
        out.push(text);
    }
    tx.commit().await?;
    Ok(Ok(out))
}
