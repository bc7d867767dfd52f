//! Shared helpers for unit tests: run a request through parse → plan → render.

use http::{HeaderMap, HeaderValue, Method};

use crate::error::RestError;
use crate::parse::{parse_request, RequestParts};
use crate::plan::{plan, Plan};
use crate::render::{render, Statement};
use crate::schema::{fixture, SchemaCache};
use crate::RestConfig;

pub(crate) struct Req<'a> {
    pub method: Method,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: &'a str,
}

pub(crate) fn get<'a>(path: &'a str, query: &'a str) -> Req<'a> {
    Req {
        method: Method::GET,
        path,
        query,
        headers: Vec::new(),
        body: "",
    }
}

pub(crate) fn with<'a>(
    method: Method,
    path: &'a str,
    query: &'a str,
    headers: &[(&'a str, &'a str)],
    body: &'a str,
) -> Req<'a> {
    Req {
        method,
        path,
        query,
        headers: headers.to_vec(),
        body,
    }
}

thread_local! {
    static CACHE: SchemaCache = fixture::cache();
}

pub(crate) fn config() -> RestConfig {
    RestConfig {
        aggregates_enabled: true,
        ..RestConfig::default()
    }
}

pub(crate) fn run_with(req: &Req, config: &RestConfig) -> Result<(Plan, Statement), RestError> {
    CACHE.with(|c| run_on(req, config, c))
}

/// As [`run_with`], against `cache` (the fixture changed by a test).
pub(crate) fn run_on(
    req: &Req,
    config: &RestConfig,
    cache: &SchemaCache,
) -> Result<(Plan, Statement), RestError> {
    let mut headers = HeaderMap::new();
    for (k, v) in &req.headers {
        headers.append(
            http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let parts = RequestParts {
        method: &req.method,
        path: req.path,
        query: req.query,
        headers: &headers,
        body: req.body.as_bytes(),
    };
    let api = parse_request(parts, config)?;
    let p = plan(&api, cache, config)?;
    let s = render(&p);
    Ok((p, s))
}

pub(crate) fn run(req: &Req) -> Result<(Plan, Statement), RestError> {
    run_with(req, &config())
}

pub(crate) fn sql(req: &Req) -> Statement {
    match run(req) {
        Ok((_, s)) => s,
        Err(e) => panic!("{} {}?{}: {e:?}", req.method, req.path, req.query),
    }
}

pub(crate) fn err(req: &Req) -> RestError {
    match run(req) {
        Ok((_, s)) => panic!(
            "expected an error for {}?{}, got {}",
            req.path, req.query, s.sql
        ),
        Err(e) => e,
    }
}

/// Every `$n` in the SQL has a parameter and every parameter is used.
pub(crate) fn assert_params_bound(s: &Statement) {
    for i in 1..=s.params.len() {
        assert!(
            s.sql.contains(&format!("${i}::")),
            "param ${i} unused in {}",
            s.sql
        );
    }
    assert!(
        !s.sql.contains(&format!("${}::", s.params.len() + 1)),
        "unbound param in {}",
        s.sql
    );
}
