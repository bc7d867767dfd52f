//! Stage 1: HTTP request parts → typed [`ApiRequest`]. No schema knowledge.

pub mod body;
mod cursor;
pub mod filter;
pub mod media;
pub mod order;
pub mod prefer;
pub mod select;

use http::HeaderMap;
use serde_json::Value;

use crate::error::{ErrorKind, RestError};
use crate::RestConfig;
pub use filter::{Filter, FtsKind, IsValue, LogicOp, LogicTree, Operation, Operator, Quantifier};
pub use media::{PlanMedia, RequestMedia, ResponseMedia};
pub use order::{Direction, Nulls, OrderTarget, OrderTerm};
pub use prefer::{CountPref, Handling, Preferences, Resolution, ReturnPref, TxPref};
pub use select::{
    AggregateFn, ColumnPath, Embed, FieldTarget, JoinType, JsonKey, JsonStep, SelectField,
    SelectItem, SelectTree,
};

/// A path of embed labels from the root (`actors.films` → `["actors","films"]`).
pub type EmbedPath = Vec<String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Patch,
    Put,
    Delete,
}

impl Method {
    pub fn from_http(m: &http::Method) -> Option<Self> {
        Some(match *m {
            http::Method::GET => Method::Get,
            http::Method::HEAD => Method::Head,
            http::Method::POST => Method::Post,
            http::Method::PATCH => Method::Patch,
            http::Method::PUT => Method::Put,
            http::Method::DELETE => Method::Delete,
            _ => return None,
        })
    }

    pub fn is_read(self) -> bool {
        matches!(self, Method::Get | Method::Head)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `GET /`: the OpenAPI document.
    Root,
    Relation(String),
    Rpc(String),
}

/// The `Range: first-last` request header (GET only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeHeader {
    pub first: i64,
    pub last: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathFilter {
    pub path: EmbedPath,
    pub filter: Filter,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathLogic {
    pub path: EmbedPath,
    pub tree: LogicTree,
}

/// The typed request, before it meets the schema cache.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    pub method: Method,
    pub target: Target,
    /// The profile schema (Accept-Profile / Content-Profile or the default).
    pub schema: String,
    /// Whether the client named the profile; echoed as `Content-Profile` if so.
    pub schema_explicit: bool,
    pub select: Option<SelectTree>,
    pub filters: Vec<PathFilter>,
    pub logic: Vec<PathLogic>,
    pub order: Vec<(EmbedPath, Vec<OrderTerm>)>,
    pub limits: Vec<(EmbedPath, i64)>,
    pub offsets: Vec<(EmbedPath, i64)>,
    /// GET/HEAD RPC: unreserved query pairs; the planner splits args from filters.
    pub rpc_query: Vec<(String, String)>,
    pub columns: Option<Vec<String>>,
    pub on_conflict: Option<Vec<String>>,
    pub prefer: Preferences,
    pub accept: ResponseMedia,
    /// `Accept: application/vnd.pgrst.plan…` (db-plan-enabled): answer with the EXPLAIN of
    /// the statement that would answer `accept`.
    pub explain: Option<media::PlanMedia>,
    /// The `Accept` media types (essence, as shown in errors), most preferred first; for calls
    /// only (what a media type handler is chosen from).
    pub accept_types: Vec<(String, String)>,
    /// PGRST107 when no built-in media type answers the `Accept` header: raised by the
    /// planner unless the function called has a media type handler that does.
    pub accept_error: Option<RestError>,
    /// When `accept` is `application/geo+json`: what answers instead if the database has no
    /// PostGIS (the next acceptable type, or PGRST107); the planner decides.
    pub accept_without_geojson: Option<media::Negotiated>,
    pub content_type: RequestMedia,
    pub range: Option<RangeHeader>,
    /// The decoded body (writes and POST RPC).
    pub payload: Option<Value>,
    /// A call's body as sent when its media type is text/plain, text/xml or
    /// application/octet-stream: the argument of a single unnamed text, xml or bytea
    /// parameter. (A text/plain body that is JSON is in `payload` too.)
    pub raw_body: Option<Vec<u8>>,
    /// The query string as received, for `Content-Location`.
    pub raw_query: String,
    pub raw_path: String,
}

impl ApiRequest {
    pub fn limit_for(&self, path: &[String]) -> Option<i64> {
        self.limits
            .iter()
            .find(|(p, _)| p.as_slice() == path)
            .map(|(_, n)| *n)
    }

    pub fn offset_for(&self, path: &[String]) -> Option<i64> {
        self.offsets
            .iter()
            .find(|(p, _)| p.as_slice() == path)
            .map(|(_, n)| *n)
    }
}

/// The raw parts of an HTTP request under `/rest/v1`.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    pub method: &'a http::Method,
    /// Relative to `/rest/v1`: `/clients`, `/rpc/fn`, `/`.
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub fn parse_request(
    parts: RequestParts<'_>,
    config: &RestConfig,
) -> Result<ApiRequest, RestError> {
    let method = Method::from_http(parts.method).ok_or_else(|| {
        RestError::new(
            ErrorKind::UnsupportedMethod,
            format!("Unsupported HTTP method: {}", parts.method),
        )
    })?;
    let target = parse_target(parts.path)?;
    if matches!(target, Target::Root) && !method.is_read() {
        return Err(RestError::new(
            ErrorKind::UnsupportedMethod,
            format!("Unsupported HTTP method: {}", parts.method),
        ));
    }
    if matches!(target, Target::Rpc(_))
        && !matches!(method, Method::Get | Method::Head | Method::Post)
    {
        return Err(RestError::new(
            ErrorKind::RpcMethodNotAllowed,
            "Cannot use this HTTP method on a function",
        ));
    }

    let (schema, schema_explicit) = pick_schema(method, parts.headers, config)?;
    let prefer = Preferences::parse(
        parts
            .headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    if prefer.handling == Some(Handling::Strict) && !prefer.invalid.is_empty() {
        return Err(RestError::new(
            ErrorKind::InvalidPreferences,
            "Invalid preferences given with handling=strict",
        )
        .with_details(format!(
            "Invalid preferences: {}",
            prefer.invalid.join(", ")
        )));
    }
    let accept_header = header(parts.headers, "accept");
    let root = matches!(target, Target::Root);
    let (accept, explain, accept_error) =
        match media::negotiate(accept_header, root, config.plan_enabled) {
            Ok((m, plan)) => (m, plan, None),
            Err(e) => (ResponseMedia::Json { strip_nulls: false }, None, Some(e)),
        };
    let accept_without_geojson = (accept == ResponseMedia::GeoJson)
        .then(|| media::negotiate_without_geojson(accept_header, root, config.plan_enabled));
    // Only a call can have a media type handler: reads skip the list (the hot path).
    let accept_types = if matches!(target, Target::Rpc(_)) {
        media::accept_list(accept_header)
    } else {
        Vec::new()
    };
    let content_type = media::parse_content_type(header(parts.headers, "content-type"));
    let range = if method == Method::Get {
        parse_range(header(parts.headers, "range"))?
    } else {
        None
    };

    let mut req = ApiRequest {
        method,
        target,
        schema,
        schema_explicit,
        select: None,
        filters: Vec::new(),
        logic: Vec::new(),
        order: Vec::new(),
        limits: Vec::new(),
        offsets: Vec::new(),
        rpc_query: Vec::new(),
        columns: None,
        on_conflict: None,
        prefer,
        accept,
        explain,
        accept_types,
        accept_error,
        accept_without_geojson,
        content_type,
        range,
        payload: None,
        raw_body: None,
        raw_query: parts.query.to_string(),
        raw_path: parts.path.to_string(),
    };
    parse_query(&mut req, parts.query)?;

    let needs_body = matches!(req.method, Method::Post | Method::Patch | Method::Put);
    let raw_call = matches!(req.target, Target::Rpc(_))
        && matches!(
            req.content_type,
            RequestMedia::TextPlain | RequestMedia::Xml | RequestMedia::OctetStream
        );
    if needs_body && raw_call {
        req.raw_body = Some(parts.body.to_vec());
        if req.content_type == RequestMedia::TextPlain {
            req.payload = body::decode_body(req.content_type, parts.body, None).ok();
        }
    } else if needs_body {
        let empty_default =
            matches!(req.target, Target::Rpc(_)).then(|| Value::Object(Default::default()));
        req.payload = Some(body::decode_body(
            req.content_type,
            parts.body,
            empty_default,
        )?);
    }
    Ok(req)
}

fn parse_target(path: &str) -> Result<Target, RestError> {
    let decoded = percent_decode(path);
    let trimmed = decoded.trim_start_matches('/').trim_end_matches('/');
    let segments: Vec<&str> = if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    };
    match segments.as_slice() {
        [] => Ok(Target::Root),
        ["rpc", name] if !name.is_empty() => Ok(Target::Rpc(name.to_string())),
        [name] if !name.is_empty() => Ok(Target::Relation(name.to_string())),
        _ => Err(RestError::new(
            ErrorKind::InvalidPath,
            "Invalid path specified in request URL",
        )),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() + 1 {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn pick_schema(
    method: Method,
    headers: &HeaderMap,
    config: &RestConfig,
) -> Result<(String, bool), RestError> {
    let name = if method.is_read() {
        "accept-profile"
    } else {
        "content-profile"
    };
    let default = config
        .schemas
        .first()
        .cloned()
        .unwrap_or_else(|| "public".to_string());
    match header(headers, name)
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => Ok((default, false)),
        Some(s) if config.schemas.iter().any(|x| x == s) => Ok((s.to_string(), true)),
        Some(_) => Err(RestError::new(
            ErrorKind::SchemaNotExposed,
            format!(
                "The schema must be one of the following: {}",
                config.schemas.join(", ")
            ),
        )),
    }
}

fn parse_range(value: Option<&str>) -> Result<Option<RangeHeader>, RestError> {
    let Some(v) = value else { return Ok(None) };
    let spec = v.trim().strip_prefix("items=").unwrap_or(v.trim());
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let Ok(first) = a.trim().parse::<i64>() else {
        return Ok(None);
    };
    let last = match b.trim() {
        "" => None,
        s => match s.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => return Ok(None),
        },
    };
    if first < 0 || last.is_some_and(|l| l < first) {
        return Err(RestError::new(
            ErrorKind::RangeNotSatisfiable,
            "Requested range not satisfiable",
        )
        .with_details(format!("The range '{spec}' is invalid")));
    }
    Ok(Some(RangeHeader { first, last }))
}

/// Splits a reserved key `a.b.limit` into (`["a","b"]`, `"limit"`).
fn reserved_key(key: &str) -> Option<(EmbedPath, &'static str, bool)> {
    const WORDS: [&str; 5] = ["order", "limit", "offset", "or", "and"];
    let parts: Vec<&str> = key.split('.').collect();
    let last = *parts.last()?;
    let word = WORDS.iter().find(|w| **w == last)?;
    let mut prefix = &parts[..parts.len() - 1];
    let mut negate = false;
    if matches!(*word, "or" | "and") && prefix.last() == Some(&"not") {
        negate = true;
        prefix = &prefix[..prefix.len() - 1];
    }
    if negate && !matches!(*word, "or" | "and") {
        return None;
    }
    if prefix.iter().any(|p| p.is_empty()) {
        return None;
    }
    Some((prefix.iter().map(|s| s.to_string()).collect(), word, negate))
}

fn parse_nonneg(name: &str, value: &str) -> Result<i64, RestError> {
    value
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| {
            RestError::parse(
                format!("\"failed to parse {name} parameter ({value})\""),
                "expecting a non-negative integer",
            )
        })
}

fn parse_name_list(name: &str, value: &str) -> Result<Vec<String>, RestError> {
    let mut out = Vec::new();
    for part in value.split(',') {
        let p = part.trim();
        let p = p
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .unwrap_or(p);
        if p.is_empty() {
            return Err(RestError::parse(
                format!("\"failed to parse {name} parameter ({value})\""),
                "unexpected \",\" expecting field name",
            ));
        }
        out.push(p.to_string());
    }
    Ok(out)
}

fn parse_query(req: &mut ApiRequest, query: &str) -> Result<(), RestError> {
    let defer_filters = matches!(req.target, Target::Rpc(_)) && req.method.is_read();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let (key, value) = (key.as_ref(), value.as_ref());
        match key {
            "select" => {
                if req.select.is_none() {
                    req.select = Some(select::parse_select(value)?);
                }
                continue;
            }
            "columns" => {
                req.columns = Some(parse_name_list("columns", value)?);
                continue;
            }
            "on_conflict" => {
                req.on_conflict = Some(parse_name_list("on_conflict", value)?);
                continue;
            }
            _ => {}
        }
        if let Some((path, word, negate)) = reserved_key(key) {
            match word {
                "order" => req.order.push((path, order::parse_order(value)?)),
                "limit" => req.limits.push((path, parse_nonneg("limit", value)?)),
                "offset" => req.offsets.push((path, parse_nonneg("offset", value)?)),
                _ => {
                    let op = if word == "or" {
                        LogicOp::Or
                    } else {
                        LogicOp::And
                    };
                    let tree = filter::parse_logic(op, negate, value)?;
                    req.logic.push(PathLogic { path, tree });
                }
            }
            continue;
        }
        if defer_filters {
            req.rpc_query.push((key.to_string(), value.to_string()));
            continue;
        }
        let (path, filter) = filter::parse_filter(key, value)?;
        req.filters.push(PathFilter { path, filter });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
