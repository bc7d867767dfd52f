use http::Method;

use super::*;
use crate::testutil::*;

fn row(total: Option<i64>, page: i64, body: &str) -> ResultRow {
    ResultRow {
        total_result_set: total,
        page_total: page,
        body: body.to_string(),
        location: None,
        estimated_total: None,
        inserted_rows: None,
        response_headers: None,
        response_status: None,
    }
}

fn hdr<'a>(r: &'a RestResponse, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k.as_str() == name)
        .and_then(|(_, v)| v.to_str().ok())
}

#[test]
fn status_and_content_range_table() {
    let exact = [("prefer", "count=exact")];
    let repr = [("prefer", "return=representation")];
    let cases: Vec<(Req, ResultRow, u16, Option<&str>)> = vec![
        (get("/clients", ""), row(None, 10, "[]"), 200, Some("0-9/*")),
        (
            with(Method::GET, "/clients", "limit=10", &exact, ""),
            row(Some(100), 10, "[]"),
            206,
            Some("0-9/100"),
        ),
        (
            with(Method::GET, "/clients", "", &exact, ""),
            row(Some(3), 3, "[]"),
            200,
            Some("0-2/3"),
        ),
        (get("/clients", ""), row(None, 0, "[]"), 200, Some("*/*")),
        (
            with(Method::GET, "/clients", "", &exact, ""),
            row(Some(0), 0, "[]"),
            200,
            Some("*/0"),
        ),
        (
            with(Method::GET, "/clients", "offset=200", &exact, ""),
            row(Some(100), 0, "[]"),
            416,
            Some("*/100"),
        ),
        (
            with(Method::GET, "/clients", "offset=10&limit=5", &exact, ""),
            row(Some(100), 5, "[]"),
            206,
            Some("10-14/100"),
        ),
        (
            with(Method::HEAD, "/clients", "", &exact, ""),
            row(Some(3), 3, "[]"),
            200,
            Some("0-2/3"),
        ),
        (
            with(Method::POST, "/clients", "", &[], r#"{"name":"x"}"#),
            row(None, 1, ""),
            201,
            Some("*/*"),
        ),
        (
            with(
                Method::POST,
                "/clients",
                "",
                &[("prefer", "count=exact")],
                r#"{"name":"x"}"#,
            ),
            row(Some(1), 1, ""),
            201,
            Some("*/1"),
        ),
        (
            with(Method::PATCH, "/clients", "", &repr, r#"{"name":"x"}"#),
            row(None, 5, "[]"),
            200,
            Some("0-4/*"),
        ),
        (
            with(Method::PATCH, "/clients", "", &[], r#"{"name":"x"}"#),
            row(None, 5, ""),
            204,
            Some("0-4/*"),
        ),
        (
            with(Method::DELETE, "/clients", "", &[], ""),
            row(None, 2, ""),
            204,
            Some("*/*"),
        ),
        (
            with(Method::DELETE, "/clients", "", &repr, ""),
            row(None, 2, "[]"),
            200,
            Some("*/*"),
        ),
        (
            with(Method::POST, "/rpc/bump", "", &[], r#"{"p_id":"x"}"#),
            row(None, 1, ""),
            204,
            None,
        ),
        (
            with(Method::POST, "/rpc/ping", "", &[], ""),
            row(None, 1, "\"pong\""),
            200,
            Some("0-0/*"),
        ),
        (
            with(Method::GET, "/rpc/counts", "limit=2", &exact, ""),
            row(Some(3), 2, "[1,2]"),
            206,
            Some("0-1/3"),
        ),
    ];
    for (req, r, status, range) in cases {
        let (plan, _) = run(&req).unwrap();
        let resp = respond(&plan, r);
        assert_eq!(
            resp.status.as_u16(),
            status,
            "{} {}?{}",
            req.method,
            req.path,
            req.query
        );
        assert_eq!(
            hdr(&resp, "content-range"),
            range,
            "{} {}?{}",
            req.method,
            req.path,
            req.query
        );
        if req.method == Method::HEAD {
            assert!(resp.body.is_empty());
        }
    }
}

#[test]
fn singular_requests() {
    let obj = [("accept", "application/vnd.pgrst.object+json")];
    let (plan, _) = run(&with(Method::GET, "/clients", "", &obj, "")).unwrap();
    let resp = respond(&plan, row(None, 1, "{\"id\":1}"));
    assert_eq!(resp.status.as_u16(), 200);
    assert_eq!(resp.body, "{\"id\":1}");
    assert_eq!(
        hdr(&resp, "content-type"),
        Some("application/vnd.pgrst.object+json; charset=utf-8")
    );
    for n in [0, 2] {
        let resp = respond(&plan, row(None, n, ""));
        assert_eq!(resp.status.as_u16(), 406);
        assert!(resp.rollback);
        let body: serde_json::Value = serde_json::from_str(&resp.body).unwrap();
        assert_eq!(body["code"], "PGRST116");
        assert_eq!(
            body["message"],
            "JSON object requested, multiple (or no) rows returned"
        );
        assert_eq!(body["details"], format!("The result contains {n} rows"));
    }
    let (plan, _) = run(&with(
        Method::PATCH,
        "/clients",
        "",
        &obj,
        r#"{"name":"x"}"#,
    ))
    .unwrap();
    let resp = respond(&plan, row(None, 3, ""));
    assert_eq!(resp.status.as_u16(), 406);
    assert!(resp.rollback);
}

#[test]
fn headers() {
    let (plan, _) = run(&with(
        Method::GET,
        "/clients",
        "select=id",
        &[("accept-profile", "public"), ("prefer", "count=exact")],
        "",
    ))
    .unwrap();
    let resp = respond(&plan, row(Some(1), 1, "[]"));
    assert_eq!(
        hdr(&resp, "content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(hdr(&resp, "content-location"), Some("/clients?select=id"));
    assert_eq!(hdr(&resp, "content-profile"), Some("public"));
    assert_eq!(hdr(&resp, "preference-applied"), Some("count=exact"));
    let (plan, _) = run(&with(
        Method::POST,
        "/organizations",
        "",
        &[("prefer", "return=headers-only")],
        r#"{"name":"x"}"#,
    ))
    .unwrap();
    let mut r = row(None, 1, "");
    r.location = Some("id=eq.abc".into());
    let resp = respond(&plan, r);
    assert_eq!(hdr(&resp, "location"), Some("/organizations?id=eq.abc"));
    // the renderer's [[column, value], …] form is percent-encoded
    let mut r = row(None, 1, "");
    r.location = Some(r#"[["id","a b&c=d,é"],["k y","1"]]"#.into());
    let resp = respond(&plan, r);
    assert_eq!(
        hdr(&resp, "location"),
        Some("/organizations?id=eq.a%20b%26c%3Dd%2C%C3%A9&k%20y=eq.1")
    );
    assert_eq!(
        hdr(&resp, "preference-applied"),
        Some("return=headers-only")
    );
    let (plan, _) = run(&with(
        Method::GET,
        "/clients",
        "",
        &[("accept", "text/csv")],
        "",
    ))
    .unwrap();
    let resp = respond(&plan, row(None, 1, "id\n1"));
    assert_eq!(hdr(&resp, "content-type"), Some("text/csv; charset=utf-8"));
}

#[test]
fn rollbacks_and_max_affected() {
    let cfg = crate::RestConfig {
        tx_end_allow_override: true,
        ..config()
    };
    let (plan, _) = run_with(
        &with(
            Method::DELETE,
            "/clients",
            "",
            &[("prefer", "tx=rollback")],
            "",
        ),
        &cfg,
    )
    .unwrap();
    assert!(respond(&plan, row(None, 1, "")).rollback);
    let (plan, _) = run(&with(
        Method::DELETE,
        "/clients",
        "",
        &[("prefer", "tx=rollback")],
        "",
    ))
    .unwrap();
    assert!(!respond(&plan, row(None, 1, "")).rollback);
    let (plan, _) = run(&with(
        Method::DELETE,
        "/clients",
        "",
        &[("prefer", "handling=strict, max-affected=1")],
        "",
    ))
    .unwrap();
    let resp = respond(&plan, row(None, 2, ""));
    assert_eq!(resp.status.as_u16(), 400);
    assert!(resp.rollback);
    assert!(resp.body.contains("PGRST124"));
    assert!(!respond(&plan, row(None, 1, "")).rollback);
}

#[test]
fn counts_planned_and_estimated() {
    let (plan, _) = run(&with(
        Method::GET,
        "/clients",
        "limit=10",
        &[("prefer", "count=planned")],
        "",
    ))
    .unwrap();
    let r = row(None, 10, "[]").with_explain(r#"[{"Plan":{"Plan Rows":5000}}]"#);
    let resp = respond(&plan, r);
    assert_eq!(hdr(&resp, "content-range"), Some("0-9/5000"));
    assert_eq!(resp.status.as_u16(), 206);
    let (plan, _) = run(&with(
        Method::GET,
        "/clients",
        "limit=10",
        &[("prefer", "count=estimated")],
        "",
    ))
    .unwrap();
    let resp = respond(
        &plan,
        row(Some(50), 10, "[]").with_explain(r#"[{"Plan":{"Plan Rows":70}}]"#),
    );
    assert_eq!(hdr(&resp, "content-range"), Some("0-9/50"));
    let resp = respond(
        &plan,
        row(Some(5000), 10, "[]").with_explain(r#"[{"Plan":{"Plan Rows":9000}}]"#),
    );
    assert_eq!(hdr(&resp, "content-range"), Some("0-9/9000"));
}

#[test]
fn error_bodies() {
    let e = crate::RestError::from_postgres(
        "42501",
        "permission denied for table clients",
        None,
        None,
        true,
    );
    let resp = error_response(&e);
    assert_eq!(resp.status.as_u16(), 401);
    let v: serde_json::Value = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"code":"42501","message":"permission denied for table clients","details":null,"hint":null})
    );
}

#[test]
fn merge_upsert_that_only_updated_is_200() {
    let (plan, _) = run(&with(
        Method::POST,
        "/organizations",
        "",
        &[("prefer", "resolution=merge-duplicates")],
        r#"{"name":"x"}"#,
    ))
    .unwrap();
    let mut r = row(None, 2, "");
    r.inserted_rows = Some(0);
    assert_eq!(respond(&plan, r.clone()).status, StatusCode::OK);
    r.inserted_rows = Some(1);
    assert_eq!(respond(&plan, r.clone()).status, StatusCode::CREATED);
    r.inserted_rows = None;
    assert_eq!(respond(&plan, r).status, StatusCode::CREATED);
    // nothing affected at all is still 201
    let mut r = row(None, 0, "");
    r.inserted_rows = Some(0);
    assert_eq!(respond(&plan, r).status, StatusCode::CREATED);
}

#[test]
fn response_settings_shape_a_successful_response() {
    use crate::response::apply_response_settings;
    let base = || RestResponse {
        status: http::StatusCode::OK,
        headers: vec![],
        body: "{}".into(),
        bytes: None,
        rollback: false,
    };
    let r = apply_response_settings(
        base(),
        Some(r#"[{"Location": "/x/1"}, {"Cache-Control": "no-store"}]"#),
        Some("201"),
    )
    .unwrap();
    assert_eq!(r.status.as_u16(), 201);
    assert_eq!(r.headers.len(), 2);
    assert_eq!(r.headers[0].0.as_str(), "location");
    for bad in [
        r#"{"a":"b"}"#,
        r#"[{"a":"b","c":"d"}]"#,
        r#"[{"a":1}]"#,
        "[\"x\"]",
        "nope",
    ] {
        let e = apply_response_settings(base(), Some(bad), None).unwrap_err();
        assert_eq!(e.code, "PGRST111", "{bad}");
    }
    for bad in ["teapot", "99", "600", "-1"] {
        let e = apply_response_settings(base(), None, Some(bad)).unwrap_err();
        assert_eq!(e.code, "PGRST112", "{bad}");
    }
    assert_eq!(
        apply_response_settings(base(), None, None)
            .unwrap()
            .status
            .as_u16(),
        200
    );
}

#[test]
fn calls_count_and_honour_max_affected() {
    let strict = [("prefer", "handling=strict, max-affected=2")];
    let (plan, _) = run(&with(
        Method::POST,
        "/rpc/search_clients",
        "",
        &strict,
        r#"{"q":"a"}"#,
    ))
    .unwrap();
    let resp = respond(&plan, row(None, 3, "[{},{},{}]"));
    assert_eq!(resp.status.as_u16(), 400);
    assert!(resp.rollback);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&resp.body).unwrap(),
        serde_json::json!({"code": "PGRST124", "message": "Query result exceeds max-affected preference constraint", "details": "The query affects 3 rows", "hint": null})
    );
    let resp = respond(&plan, row(None, 2, "[{},{}]"));
    assert_eq!(resp.status.as_u16(), 200);
    assert!(!resp.rollback);
    assert_eq!(
        hdr(&resp, "preference-applied"),
        Some("handling=strict, max-affected=2")
    );
    // counts on calls: exact, planned, and HEAD
    let (plan, _) = run(&with(
        Method::GET,
        "/rpc/counts",
        "limit=2",
        &[("prefer", "count=exact")],
        "",
    ))
    .unwrap();
    let resp = respond(&plan, row(Some(3), 2, "[1,2]"));
    assert_eq!(
        (resp.status.as_u16(), hdr(&resp, "content-range")),
        (206, Some("0-1/3"))
    );
    let (plan, _) = run(&with(
        Method::POST,
        "/rpc/search_clients",
        "",
        &[("prefer", "count=planned")],
        r#"{"q":"a"}"#,
    ))
    .unwrap();
    let resp = respond(
        &plan,
        row(None, 2, "[]").with_explain(r#"[{"Plan":{"Plan Rows":40}}]"#),
    );
    assert_eq!(
        (resp.status.as_u16(), hdr(&resp, "content-range")),
        (206, Some("0-1/40"))
    );
    let (plan, _) = run(&with(
        Method::HEAD,
        "/rpc/ping",
        "",
        &[("prefer", "count=exact")],
        "",
    ))
    .unwrap();
    let resp = respond(&plan, row(Some(1), 1, "\"pong\""));
    assert_eq!(
        (
            resp.status.as_u16(),
            hdr(&resp, "content-range"),
            resp.body.as_str()
        ),
        (200, Some("0-0/1"), "")
    );
}

#[test]
fn media_type_handlers_answer_raw_bodies() {
    let (plan, _) = run(&with(
        Method::GET,
        "/rpc/blob",
        "",
        &[("accept", "application/octet-stream")],
        "",
    ))
    .unwrap();
    let resp = respond(&plan, row(None, 1, "00ff10"));
    assert_eq!(resp.status.as_u16(), 200);
    assert_eq!(hdr(&resp, "content-type"), Some("application/octet-stream"));
    assert_eq!(resp.bytes.as_deref(), Some(&[0u8, 255, 16][..]));
    let (plan, _) = run(&with(
        Method::GET,
        "/rpc/page",
        "",
        &[("accept", "text/html")],
        "",
    ))
    .unwrap();
    let resp = respond(&plan, row(None, 1, "<h1>hi</h1>"));
    assert_eq!(
        (
            hdr(&resp, "content-type"),
            resp.body.as_str(),
            resp.bytes.is_none()
        ),
        (Some("text/html"), "<h1>hi</h1>", true)
    );
    // no value: an empty body
    let resp = respond(&plan, row(None, 1, ""));
    assert_eq!((resp.status.as_u16(), resp.body.as_str()), (200, ""));
}

#[test]
fn explain_responses_are_rolled_back() {
    let cfg = crate::RestConfig {
        plan_enabled: true,
        ..config()
    };
    let (plan, _) = run_with(
        &with(
            Method::DELETE,
            "/clients",
            "",
            &[("accept", "application/vnd.pgrst.plan+json")],
            "",
        ),
        &cfg,
    )
    .unwrap();
    let resp = respond_explain(&plan, "[{\"Plan\":{}}]".into());
    assert_eq!(resp.status.as_u16(), 200);
    assert!(resp.rollback);
    assert_eq!(
        hdr(&resp, "content-type"),
        Some("application/vnd.pgrst.plan+json; charset=utf-8")
    );
    assert_eq!(resp.body, "[{\"Plan\":{}}]");
}
