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

/// The GraphiQL files `scripts/setup` unpacks from npm (never committed, never from a CDN).
const GRAPHIQL_FILES: [(&str, &str); 4] = [
    ("react.production.min.js", "text/javascript; charset=utf-8"),
    (
        "react-dom.production.min.js",
        "text/javascript; charset=utf-8",
    ),
    ("graphiql.min.js", "text/javascript; charset=utf-8"),
    ("graphiql.min.css", "text/css; charset=utf-8"),
];

/// `$GRAPHIQL_DIR`, else `${XDG_CACHE_HOME:-~/.cache}/agencyflow/graphiql`.
fn graphiql_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("GRAPHIQL_DIR") {
            return d.into();
        }
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")))
            .unwrap_or_else(|| "/tmp".into());
        cache.join("agencyflow").join("graphiql")
    })
}

/// `GET /graphql/v1/graphiql/<file>`: one of the explorer's files from the cache folder.
pub async fn graphiql_asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let Some((name, ct)) = GRAPHIQL_FILES.iter().find(|(n, _)| *n == file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match tokio::fs::read(graphiql_dir().join(name)).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, *ct),
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            bytes,
        )
            .into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The in-browser explorer (`GET /graphql/v1` with `Accept: text/html`), with the API key
/// the page was opened with (`?apikey=`, checked by the gateway) as its default header; a
/// session token goes in GraphiQL's Headers tab as `Authorization: Bearer ...`.
fn explorer(uri: &Uri) -> Response {
    let key = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "apikey")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let present = GRAPHIQL_FILES
        .iter()
        .all(|(n, _)| graphiql_dir().join(n).is_file());
    let html_headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    if !present {
        let body = format!(
            "<!doctype html><html><head><title>GraphiQL</title></head><body>\
             <h1>GraphiQL is not installed</h1><p>The explorer's files (GraphiQL's browser build \
             from npm) are not in <code>{}</code>. Run <code>scripts/setup</code> (it fetches them \
             with npm into the cache folder), or set <code>GRAPHIQL_DIR</code> to a folder holding \
             {}. <code>POST /graphql/v1</code> works without them.</p></body></html>",
            html_escape(&graphiql_dir().display().to_string()),
            GRAPHIQL_FILES.map(|(n, _)| n).join(", ")
        );
        return (StatusCode::OK, html_headers, body).into_response();
    }
    // The key as a JSON string safe inside <script> and in a URL.
    let key_js = serde_json::to_string(&key)
        .unwrap_or_else(|_| "\"\"".into())
        .replace('<', "\\u003c");
    let q: String = form_urlencoded::byte_serialize(key.as_bytes()).collect();
    let asset = |n: &str| html_escape(&format!("/graphql/v1/graphiql/{n}?apikey={q}"));
    let body = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>GraphiQL · agencyflow</title>
<style>body{{margin:0;height:100vh}}#graphiql{{height:100vh}}</style>
<link rel="stylesheet" href="{css}"></head><body><div id="graphiql">Loading…</div>
<script src="{react}"></script><script src="{react_dom}"></script><script src="{graphiql}"></script>
<script>
const apikey = {key_js};
const fetcher = GraphiQL.createFetcher({{ url: '/graphql/v1', headers: {{ apikey }} }});
ReactDOM.createRoot(document.getElementById('graphiql')).render(
  React.createElement(GraphiQL, {{ fetcher, defaultEditorToolsVisibility: true,
    defaultHeaders: JSON.stringify({{ Authorization: 'Bearer ' + apikey }}, null, 2) }}));
</script></body></html>"#,
        css = asset("graphiql.min.css"),
        react = asset("react.production.min.js"),
        react_dom = asset("react-dom.production.min.js"),
        graphiql = asset("graphiql.min.js"),
    );
    (StatusCode::OK, html_headers, body).into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub async fn handle(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    let has_query = uri
        .query()
        .is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "query"));
    if method == Method::GET && wants_html && !has_query {
        return explorer(&uri);
    }
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
