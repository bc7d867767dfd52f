//! Stage 5: the HTTP response from the plan and the statement's one result row.

use http::header::{
    HeaderName, HeaderValue, CONTENT_LOCATION, CONTENT_RANGE, CONTENT_TYPE, LOCATION,
};
use http::StatusCode;

use crate::error::{ErrorKind, RestError};
use crate::parse::{CountPref, Method, ReturnPref};
use crate::plan::{Action, CallShape, Plan};
use crate::render::explain_row_estimate;

/// The statement's single row, read by index: `total_result_set bigint NULL`,
/// `page_total bigint`, `body text`, `location text NULL`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultRow {
    pub total_result_set: Option<i64>,
    pub page_total: i64,
    pub body: String,
    pub location: Option<String>,
    /// The planner's estimate when [`Plan::count_statement`] was run
    /// (see [`ResultRow::with_explain`]).
    pub estimated_total: Option<i64>,
    /// A merge upsert's fifth column, `inserted_rows bigint`: rows inserted rather than
    /// updated (none → 200 instead of 201). `None` for every other statement.
    pub inserted_rows: Option<i64>,
    /// `response.headers` / `response.status` as the statement left them (columns
    /// `response_headers`, `response_status`); see [`apply_response_settings`].
    pub response_headers: Option<String>,
    pub response_status: Option<String>,
}

impl ResultRow {
    /// Records the `EXPLAIN (FORMAT JSON)` output of `Plan::count_statement`.
    pub fn with_explain(mut self, explain_json: &str) -> Self {
        self.estimated_total = explain_row_estimate(explain_json);
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestResponse {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: String,
    /// A binary body (a media type handler returning bytea), sent instead of `body`.
    pub bytes: Option<Vec<u8>>,
    /// Roll the transaction back instead of committing.
    pub rollback: bool,
}

const PREFERENCE_APPLIED: &str = "preference-applied";
const CONTENT_PROFILE: &str = "content-profile";

fn header(name: &str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    Some((
        HeaderName::from_bytes(name.as_bytes()).ok()?,
        HeaderValue::from_str(value).ok()?,
    ))
}

/// An error as a response (`{"code","message","details","hint"}`).
pub fn error_response(err: &RestError) -> RestResponse {
    let mut headers = vec![(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    )];
    for (k, v) in err.headers.iter().flat_map(|h| h.iter()) {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::from_str(v)) {
            headers.push((k, v));
        }
    }
    RestResponse {
        status: err.status,
        headers,
        body: err.to_json().to_string(),
        bytes: None,
        rollback: true,
    }
}

/// Applies the `response.headers` and `response.status` settings the request's SQL made
/// (`set_config('response.status', '201', true)` in a function, as PostgREST allows): headers
/// are a JSON array of one-key objects, the status a number from 100 to 599. Anything else
/// is PGRST111 / PGRST112.
pub fn apply_response_settings(
    mut resp: RestResponse,
    headers: Option<&str>,
    status: Option<&str>,
) -> Result<RestResponse, RestError> {
    if let Some(raw) = headers.filter(|h| !h.trim().is_empty()) {
        let invalid = || {
            RestError::new(
                ErrorKind::InvalidResponseHeaders,
                "response.headers guc must be a JSON array composed of objects with a single key and a string value",
            )
        };
        let Ok(serde_json::Value::Array(items)) = serde_json::from_str::<serde_json::Value>(raw)
        else {
            return Err(invalid());
        };
        for item in items {
            let serde_json::Value::Object(o) = item else {
                return Err(invalid());
            };
            if o.len() != 1 {
                return Err(invalid());
            }
            let (k, v) = o.into_iter().next().expect("one key");
            let serde_json::Value::String(v) = v else {
                return Err(invalid());
            };
            let (Ok(name), Ok(value)) =
                (HeaderName::try_from(k.as_str()), HeaderValue::from_str(&v))
            else {
                return Err(invalid());
            };
            resp.headers.retain(|(n, _)| *n != name);
            resp.headers.push((name, value));
        }
    }
    if let Some(raw) = status.filter(|s| !s.trim().is_empty()) {
        let code = raw
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
            .and_then(|c| http::StatusCode::from_u16(c).ok())
            .ok_or_else(|| {
                RestError::new(
                    ErrorKind::InvalidResponseStatus,
                    format!("Invalid response.status: {raw}"),
                )
            })?;
        resp.status = code;
    }
    Ok(resp)
}

fn with_common(plan: &Plan, mut resp: RestResponse) -> RestResponse {
    if !plan.preference_applied.is_empty() {
        resp.headers.extend(header(
            PREFERENCE_APPLIED,
            &plan.preference_applied.join(", "),
        ));
    }
    if let Some(p) = &plan.profile {
        resp.headers.extend(header(CONTENT_PROFILE, p));
    }
    if plan.method == Method::Head {
        resp.body.clear();
    }
    resp
}

fn total(plan: &Plan, row: &ResultRow) -> Option<i64> {
    match plan.count? {
        CountPref::Exact => row.total_result_set,
        CountPref::Planned => row.estimated_total.or(row.total_result_set),
        CountPref::Estimated => match (
            row.total_result_set,
            row.estimated_total,
            plan.estimate_threshold,
        ) {
            (Some(exact), Some(est), Some(max)) if exact > max => Some(est.max(exact.min(max))),
            (exact, est, _) => exact.or(est),
        },
    }
}

fn range(first: i64, count: i64, total: Option<i64>) -> String {
    let t = total.map_or_else(|| "*".to_string(), |t| t.to_string());
    if count <= 0 {
        format!("*/{t}")
    } else {
        format!("{first}-{}/{t}", first.saturating_add(count - 1))
    }
}

/// Builds the response; `row` is the one row of the rendered statement.
pub fn respond(plan: &Plan, row: ResultRow) -> RestResponse {
    let rollback = plan.rollback_requested;
    let is_mutation = matches!(
        plan.action,
        Action::Insert | Action::Update | Action::Delete | Action::SingleUpsert
    );
    if plan.media.is_singular()
        && !matches!(
            plan.action,
            Action::Call(CallShape::Void | CallShape::Scalar)
        )
        && row.page_total != 1
    {
        let err = RestError::new(
            ErrorKind::SingularityError,
            "JSON object requested, multiple (or no) rows returned",
        )
        .with_details(format!("The result contains {} rows", row.page_total));
        return with_common(
            plan,
            RestResponse {
                rollback: true,
                ..error_response(&err)
            },
        );
    }
    if is_mutation || matches!(plan.action, Action::Call(_)) {
        if let Some(max) = plan.max_affected {
            if row.page_total > max {
                let err = RestError::new(
                    ErrorKind::MaxAffectedViolation,
                    "Query result exceeds max-affected preference constraint",
                )
                .with_details(format!("The query affects {} rows", row.page_total));
                return with_common(
                    plan,
                    RestResponse {
                        rollback: true,
                        ..error_response(&err)
                    },
                );
            }
        }
    }
    if let Some(raw) = &plan.raw_media {
        return with_common(plan, raw_response(plan, raw, row));
    }
    let total = total(plan, &row);
    let content_type = (
        CONTENT_TYPE,
        HeaderValue::from_static(plan.media.content_type()),
    );
    let mut headers = Vec::new();
    let (status, body) = match plan.action {
        Action::Read | Action::Call(_) | Action::OpenApi => {
            if plan.action == Action::Call(CallShape::Void) {
                return with_common(
                    plan,
                    RestResponse {
                        status: StatusCode::NO_CONTENT,
                        headers,
                        body: String::new(),
                        bytes: None,
                        rollback,
                    },
                );
            }
            let first = plan.offset;
            if let Some(t) = total {
                if first > t {
                    let err = RestError::new(
                        ErrorKind::RangeNotSatisfiable,
                        "Requested range not satisfiable",
                    )
                    .with_details(format!(
                        "An offset of {first} was requested, but there are only {t} rows."
                    ));
                    let mut resp = error_response(&err);
                    resp.rollback = rollback;
                    resp.headers
                        .extend(header(CONTENT_RANGE.as_str(), &format!("*/{t}")));
                    return with_common(plan, resp);
                }
            }
            headers.push(content_type);
            headers.extend(header(
                CONTENT_RANGE.as_str(),
                &range(first, row.page_total, total),
            ));
            if plan.action == Action::Read {
                headers.extend(header(CONTENT_LOCATION.as_str(), &plan.content_location));
            }
            let partial = total.is_some_and(|t| row.page_total < t && t > 0);
            (
                if partial {
                    StatusCode::PARTIAL_CONTENT
                } else {
                    StatusCode::OK
                },
                row.body,
            )
        }
        Action::Insert | Action::SingleUpsert | Action::Update | Action::Delete => {
            let range = match plan.action {
                Action::Update => range(0, row.page_total, total),
                _ => format!(
                    "*/{}",
                    total.map_or_else(|| "*".to_string(), |t| t.to_string())
                ),
            };
            headers.extend(header(CONTENT_RANGE.as_str(), &range));
            if plan.return_pref == ReturnPref::HeadersOnly {
                if let Some(loc) = &row.location {
                    headers.extend(header(
                        LOCATION.as_str(),
                        &format!("{}?{}", plan.resource_path, location_query(loc)),
                    ));
                }
            }
            let representation = plan.return_pref == ReturnPref::Representation;
            let only_updated = row.inserted_rows == Some(0) && row.page_total > 0;
            let status = match (plan.action, representation) {
                (Action::Insert, _) if only_updated => StatusCode::OK,
                (Action::Insert, _) => StatusCode::CREATED,
                (_, true) => StatusCode::OK,
                (_, false) => StatusCode::NO_CONTENT,
            };
            if representation {
                headers.push(content_type);
                (status, row.body)
            } else {
                (status, String::new())
            }
        }
    };
    with_common(
        plan,
        RestResponse {
            status,
            headers,
            body,
            bytes: None,
            rollback,
        },
    )
}

/// The response to `Accept: application/vnd.pgrst.plan…`: `explain` is the EXPLAIN output
/// (JSON, or the text lines joined). Always rolled back.
pub fn respond_explain(plan: &Plan, explain: String) -> RestResponse {
    let content_type = plan
        .explain
        .map(|p| p.content_type())
        .unwrap_or_else(|| "application/vnd.pgrst.plan+text; charset=utf-8".to_string());
    with_common(
        plan,
        RestResponse {
            status: StatusCode::OK,
            headers: header(CONTENT_TYPE.as_str(), &content_type)
                .into_iter()
                .collect(),
            body: explain,
            bytes: None,
            rollback: true,
        },
    )
}

/// A media type handler's response: the value as the body (bytea decoded from hex), with
/// the handler's Content-Type.
fn raw_response(plan: &Plan, raw: &crate::plan::RawMedia, row: ResultRow) -> RestResponse {
    let mut headers: Vec<(HeaderName, HeaderValue)> =
        header(CONTENT_TYPE.as_str(), &raw.content_type)
            .into_iter()
            .collect();
    if plan.count.is_some() || plan.offset > 0 {
        headers.extend(header(
            CONTENT_RANGE.as_str(),
            &range(plan.offset, row.page_total, row.total_result_set),
        ));
    }
    let bytes = raw.bytes.then(|| hex_decode(&row.body));
    RestResponse {
        status: StatusCode::OK,
        headers,
        body: if raw.bytes { String::new() } else { row.body },
        bytes,
        rollback: plan.rollback_requested,
    }
}

fn hex_decode(hex: &str) -> Vec<u8> {
    let digits: Vec<u8> = hex
        .bytes()
        .filter_map(|c| (c as char).to_digit(16).map(|d| d as u8))
        .collect();
    digits
        .chunks(2)
        .map(|p| p[0] << 4 | p.get(1).copied().unwrap_or(0))
        .collect()
}

/// The query of a `Location` header from the renderer's `[[column, value], …]`:
/// `col=eq.value&…`, names and values percent-encoded. Anything else is used as is.
fn location_query(raw: &str) -> String {
    let Ok(pairs) = serde_json::from_str::<Vec<(String, Option<String>)>>(raw) else {
        return raw.to_string();
    };
    pairs
        .iter()
        .map(|(c, v)| {
            let v = v.as_deref().unwrap_or("");
            format!("{}=eq.{}", percent_encode(c), percent_encode(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
