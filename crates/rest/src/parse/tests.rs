use super::*;
use http::{HeaderValue, Method as M};

fn req_with(
    method: M,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<ApiRequest, RestError> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    parse_request(
        RequestParts {
            method: &method,
            path,
            query,
            headers: &map,
            body: body.as_bytes(),
        },
        &RestConfig::default(),
    )
}

fn get(path: &str, query: &str) -> ApiRequest {
    req_with(M::GET, path, query, &[], "").unwrap_or_else(|e| panic!("{query}: {e:?}"))
}

#[test]
fn targets() {
    assert_eq!(
        get("/clients", "").target,
        Target::Relation("clients".into())
    );
    assert_eq!(get("/", "").target, Target::Root);
    assert_eq!(get("", "").target, Target::Root);
    assert_eq!(
        get("/rpc/match_documents", "").target,
        Target::Rpc("match_documents".into())
    );
    assert_eq!(
        get("/my%20table", "").target,
        Target::Relation("my table".into())
    );
    assert_eq!(
        get("/clients/", "").target,
        Target::Relation("clients".into())
    );
    let e = req_with(M::GET, "/a/b", "", &[], "").unwrap_err();
    assert_eq!(e.status.as_u16(), 404);
    let e = req_with(M::PATCH, "/rpc/f", "", &[], "{}").unwrap_err();
    assert_eq!(e.code, "PGRST101");
    let e = req_with(M::OPTIONS, "/x", "", &[], "").unwrap_err();
    assert_eq!(e.code, "PGRST117");
    let e = req_with(M::POST, "/", "", &[], "{}").unwrap_err();
    assert_eq!(e.code, "PGRST117");
}

#[test]
fn query_string_is_form_decoded() {
    let r = get(
        "/t",
        "ts=gt.2024-01-01T00:00:00+00:00&b=eq.a%2Bb&c=eq.%22x%22",
    );
    let values: Vec<_> = r
        .filters
        .iter()
        .map(|f| match &f.filter.operation {
            Operation::Compare { value, .. } => value.clone(),
            _ => String::new(),
        })
        .collect();
    assert_eq!(values, vec!["2024-01-01T00:00:00 00:00", "a+b", "\"x\""]);
}

#[test]
fn reserved_keys() {
    let r = get(
        "/films",
        "select=id,actors(id)&order=id.desc&limit=10&offset=5&actors.limit=2&actors.offset=1&actors.order=name&or=(a.eq.1,b.eq.2)&actors.or=(x.eq.1)&not.and=(a.eq.1,b.eq.2)&actors.not.or=(y.eq.1)&id=gt.1&actors.name=eq.x",
    );
    assert_eq!(r.select.as_ref().map(Vec::len), Some(2));
    assert_eq!(r.limit_for(&[]), Some(10));
    assert_eq!(r.offset_for(&[]), Some(5));
    assert_eq!(r.limit_for(&["actors".to_string()]), Some(2));
    assert_eq!(r.offset_for(&["actors".to_string()]), Some(1));
    assert_eq!(r.order.len(), 2);
    assert_eq!(r.logic.len(), 4);
    assert!(matches!(
        &r.logic[2].tree,
        LogicTree::Expr {
            negate: true,
            op: LogicOp::And,
            ..
        }
    ));
    assert_eq!(r.logic[3].path, vec!["actors".to_string()]);
    assert!(matches!(
        &r.logic[3].tree,
        LogicTree::Expr {
            negate: true,
            op: LogicOp::Or,
            ..
        }
    ));
    assert_eq!(r.filters.len(), 2);
    assert_eq!(r.filters[1].path, vec!["actors".to_string()]);
}

#[test]
fn repeated_filters_and() {
    let r = get("/t", "a=gt.1&a=lt.5");
    assert_eq!(r.filters.len(), 2);
}

#[test]
fn parse_errors() {
    let cases = [
        "select=id,name(()",
        "limit=abc",
        "limit=-1",
        "offset=x",
        "order=a.sideways",
        "or=a.eq.1",
        "a=zz.1",
        "a=1",
        "a->=eq.1",
        "columns=a,,b",
        "on_conflict=",
        // the `..` spread alias of later PostgREST versions
        "select=id,..clients(name)",
    ];
    for q in cases {
        let e = req_with(M::GET, "/t", q, &[], "").unwrap_err();
        assert_eq!(
            (e.code.as_str(), e.status.as_u16()),
            ("PGRST100", 400),
            "{q}"
        );
    }
}

#[test]
fn invalid_paths_are_404_pgrst125() {
    for path in ["/a/b", "/rpc/f/g"] {
        let e = req_with(M::GET, path, "", &[], "").unwrap_err();
        assert_eq!(
            (e.code.as_str(), e.status.as_u16(), e.message.as_str()),
            ("PGRST125", 404, "Invalid path specified in request URL"),
            "{path}"
        );
    }
}

#[test]
fn columns_and_on_conflict() {
    let r = get("/t", "columns=%22a%22,%22b%22&on_conflict=org_id,slug");
    assert_eq!(r.columns, Some(vec!["a".to_string(), "b".to_string()]));
    assert_eq!(
        r.on_conflict,
        Some(vec!["org_id".to_string(), "slug".to_string()])
    );
}

#[test]
fn rpc_get_defers_filters() {
    let r = get("/rpc/f", "a=1&b=eq.2&limit=3");
    assert_eq!(
        r.rpc_query,
        vec![("a".into(), "1".into()), ("b".into(), "eq.2".into())]
    );
    assert!(r.filters.is_empty());
    assert_eq!(r.limit_for(&[]), Some(3));
}

#[test]
fn profiles() {
    let r = req_with(
        M::GET,
        "/t",
        "",
        &[("accept-profile", "graphql_public")],
        "",
    )
    .unwrap();
    assert_eq!(r.schema, "graphql_public");
    assert!(r.schema_explicit);
    let r = req_with(M::GET, "/t", "", &[("content-profile", "nope")], "").unwrap();
    assert_eq!(r.schema, "public");
    let e = req_with(M::GET, "/t", "", &[("accept-profile", "private")], "").unwrap_err();
    assert_eq!((e.code.as_str(), e.status.as_u16()), ("PGRST106", 406));
    assert_eq!(
        e.message,
        "The schema must be one of the following: public, graphql_public"
    );
    let e = req_with(M::POST, "/t", "", &[("content-profile", "auth")], "{}").unwrap_err();
    assert_eq!(e.code, "PGRST106");
    let r = req_with(M::POST, "/t", "", &[("accept-profile", "auth")], "{}").unwrap();
    assert_eq!(r.schema, "public");
}

#[test]
fn prefer_headers_repeat() {
    let r = req_with(
        M::POST,
        "/t",
        "",
        &[
            ("prefer", "return=representation"),
            ("prefer", "count=exact, return=minimal"),
        ],
        "{}",
    )
    .unwrap();
    assert_eq!(r.prefer.return_, Some(ReturnPref::Representation));
    assert_eq!(r.prefer.count, Some(CountPref::Exact));
    let e = req_with(
        M::POST,
        "/t",
        "",
        &[("prefer", "handling=strict, return=all")],
        "{}",
    )
    .unwrap_err();
    assert_eq!(e.code, "PGRST122");
    assert!(req_with(
        M::POST,
        "/t",
        "",
        &[("prefer", "handling=lenient, return=all")],
        "{}"
    )
    .is_ok());
}

#[test]
fn range_header() {
    let r = req_with(M::GET, "/t", "", &[("range", "0-9")], "").unwrap();
    assert_eq!(
        r.range,
        Some(RangeHeader {
            first: 0,
            last: Some(9)
        })
    );
    let r = req_with(M::GET, "/t", "", &[("range", "5-")], "").unwrap();
    assert_eq!(
        r.range,
        Some(RangeHeader {
            first: 5,
            last: None
        })
    );
    let r = req_with(M::HEAD, "/t", "", &[("range", "0-9")], "").unwrap();
    assert_eq!(r.range, None);
    let r = req_with(M::GET, "/t", "", &[("range", "junk")], "").unwrap();
    assert_eq!(r.range, None);
    let e = req_with(M::GET, "/t", "", &[("range", "9-2")], "").unwrap_err();
    assert_eq!(e.code, "PGRST103");
}

#[test]
fn bodies() {
    let r = req_with(M::POST, "/rpc/f", "", &[], "").unwrap();
    assert_eq!(r.payload, Some(serde_json::json!({})));
    // A call's text/plain, text/xml and octet-stream bodies are kept as sent (a text/plain
    // one that is JSON is decoded too).
    let r = req_with(M::POST, "/rpc/f", "", &[("content-type", "text/plain")], "").unwrap();
    assert_eq!((r.payload, r.raw_body), (None, Some(Vec::new())));
    let r = req_with(
        M::POST,
        "/rpc/f",
        "",
        &[("content-type", "text/plain")],
        "hi there",
    )
    .unwrap();
    assert_eq!((r.payload, r.raw_body), (None, Some(b"hi there".to_vec())));
    let r = req_with(
        M::POST,
        "/rpc/f",
        "",
        &[("content-type", "text/plain")],
        "{\"a\":1}",
    )
    .unwrap();
    assert_eq!(r.payload, Some(serde_json::json!({"a": 1})));
    let r = req_with(
        M::POST,
        "/rpc/f",
        "",
        &[("content-type", "text/xml")],
        "<a/>",
    )
    .unwrap();
    assert_eq!((r.payload, r.raw_body), (None, Some(b"<a/>".to_vec())));
    let r = req_with(
        M::POST,
        "/rpc/f",
        "",
        &[("content-type", "application/octet-stream")],
        "\u{1}\u{2}",
    )
    .unwrap();
    assert_eq!(r.raw_body, Some(vec![1, 2]));
    let r = req_with(
        M::POST,
        "/t",
        "",
        &[("content-type", "text/plain")],
        "{\"a\":1}",
    )
    .unwrap();
    assert_eq!(
        (r.payload, r.raw_body),
        (Some(serde_json::json!({"a": 1})), None)
    );
    let e = req_with(M::POST, "/t", "", &[], "").unwrap_err();
    assert_eq!(e.code, "PGRST102");
    let r = req_with(
        M::PATCH,
        "/t",
        "id=eq.1",
        &[("content-type", "application/json; charset=utf-8")],
        "{\"a\":1}",
    )
    .unwrap();
    assert_eq!(r.payload, Some(serde_json::json!({"a":1})));
    let r = req_with(M::DELETE, "/t", "id=eq.1", &[], "garbage").unwrap();
    assert_eq!(r.payload, None);
}

#[test]
fn accept_header() {
    let r = req_with(
        M::GET,
        "/t",
        "",
        &[("accept", "application/vnd.pgrst.object+json")],
        "",
    )
    .unwrap();
    assert!(r.accept.is_singular());
    // An Accept nothing built-in answers is decided by the planner (a function may).
    let r = req_with(
        M::GET,
        "/rpc/t",
        "",
        &[(
            "accept",
            "text/html, image/png;q=0.5, application/xml;charset=x;q=0.9",
        )],
        "",
    )
    .unwrap();
    let e = r.accept_error.expect("PGRST107");
    assert_eq!((e.code.as_str(), e.status.as_u16()), ("PGRST107", 406));
    assert_eq!(
        e.message,
        "None of these media types are available: text/html, application/xml;charset=x, image/png"
    );
    assert_eq!(
        r.accept_types
            .iter()
            .map(|(e, _)| e.as_str())
            .collect::<Vec<_>>(),
        vec!["text/html", "application/xml", "image/png"]
    );
}
