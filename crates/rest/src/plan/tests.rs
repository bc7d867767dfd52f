use http::Method;

use super::*;
use crate::testutil::*;

#[test]
fn planner_errors_table() {
    let cases: Vec<(Req, u16, &str, &str)> = vec![
        (get("/nope", ""), 404, "42P01", "relation \"public.nope\" does not exist"),
        (get("/clients", "select=id,nope"), 400, "42703", "column clients.nope does not exist"),
        (get("/clients", "nope=eq.1"), 400, "42703", "column clients.nope does not exist"),
        (get("/clients", "order=nope"), 400, "42703", "column clients.nope does not exist"),
        (get("/clients", "select=id,projcts(id)"), 400, "PGRST200", "Could not find a relationship between 'clients' and 'projcts' in the schema cache"),
        (get("/clients", "select=id,invoices(id)"), 300, "PGRST201", "Could not embed because more than one relationship was found for 'clients' and 'invoices'"),
        (get("/clients", "select=id,projects!nope(id)"), 400, "PGRST200", "Could not find a relationship between 'clients' and 'projects' in the schema cache"),
        (get("/clients", "projects.name=eq.x"), 400, "PGRST108", "'projects' is not an embedded resource in this request"),
        (get("/clients", "projects.limit=1"), 400, "PGRST108", "'projects' is not an embedded resource in this request"),
        (get("/clients", "select=id,projects(id)&order=projects(name)"), 400, "PGRST118", "A related order on 'projects' is not possible"),
        (get("/clients", "select=id,...projects(id)"), 400, "PGRST119", "A spread operation on 'projects' is not possible"),
        (get("/clients", "select=id,projects(id)&projects=eq.1"), 400, "42703", "column clients.projects does not exist"),
        (get("/clients", "select=id,projects(id)&projects=is.true"), 400, "PGRST120", "Bad operator on the embedded resource"),
        (get("/rpc/nope", ""), 404, "PGRST202", "Could not find the function public.nope() in the schema cache"),
        (with(Method::POST, "/rpc/match_documents", "", &[], r#"{"bogus":1}"#), 404, "PGRST202", "Could not find the function public.match_documents(bogus) in the schema cache"),
        (with(Method::POST, "/rpc/match_documents", "", &[], r#"{"match_count":1}"#), 404, "PGRST202", "Could not find the function public.match_documents(match_count) in the schema cache"),
        (get("/rpc/add", "a=1&b=2"), 300, "PGRST203", "Could not choose the best candidate function between: public.add(a => integer, b => integer), public.add(a => text, b => text)"),
        (with(Method::POST, "/clients", "", &[], r#"{"nope":1}"#), 400, "PGRST204", "Could not find the 'nope' column of 'clients' in the schema cache"),
        (with(Method::POST, "/clients", "columns=name,nope", &[], r#"{"name":"x"}"#), 400, "PGRST204", "Could not find the 'nope' column of 'clients' in the schema cache"),
        (with(Method::PATCH, "/clients", "", &[], r#"{"nope":1}"#), 400, "PGRST204", "Could not find the 'nope' column of 'clients' in the schema cache"),
        (with(Method::POST, "/clients", "", &[], r#"[{"a":1},{"b":2}]"#), 400, "PGRST102", "All object keys must match"),
        (with(Method::POST, "/clients", "", &[], "3"), 400, "PGRST102", "Empty or invalid json"),
        (with(Method::POST, "/clients", "on_conflict=nope", &[("prefer", "resolution=merge-duplicates")], r#"{"name":"x"}"#), 400, "42703", "column clients.nope does not exist"),
        (with(Method::PUT, "/systems", "name=eq.x", &[], r#"{"id":"a"}"#), 405, "PGRST105", "Filters must include all and only primary key columns with 'eq' operators"),
        (with(Method::PUT, "/systems", "id=gt.x", &[], r#"{"id":"a"}"#), 405, "PGRST105", "Filters must include all and only primary key columns with 'eq' operators"),
        (with(Method::PUT, "/systems", "id=eq.a&limit=1", &[], r#"{"id":"a"}"#), 400, "PGRST114", "limit/offset querystring parameters are not allowed for PUT"),
        (with(Method::PUT, "/systems", "id=eq.a", &[], r#"{"id":"b"}"#), 400, "PGRST115", "Payload values do not match URL in primary key column(s)"),
        (with(Method::PUT, "/systems", "id=eq.a", &[], r#"[{"id":"a"},{"id":"a"}]"#), 400, "PGRST102", "PUT payload must contain a single row"),
        (get("/projects", "or=(clients.name.eq.x)"), 400, "PGRST100", "\"failed to parse logic tree (clients)\""),
        (with(Method::DELETE, "/clients", "status=eq.x&limit=1", &[], ""), 400, "PGRST109", "A 'limit' was applied without an explicit 'order'"),
        (with(Method::PATCH, "/clients", "offset=2", &[], r#"{"name":"x"}"#), 400, "PGRST109", "A 'limit' was applied without an explicit 'order'"),
        (with(Method::DELETE, "/active_clients", "limit=1&order=id", &[], ""), 400, "PGRST109", "A 'limit' on an update or delete is only possible on tables"),
    ];
    for (req, status, code, message) in cases {
        let e = err(&req);
        assert_eq!(
            (e.status.as_u16(), e.code.as_str(), e.message.as_str()),
            (status, code, message),
            "{} {}?{}",
            req.method,
            req.path,
            req.query
        );
    }
}

#[test]
fn hints_and_details() {
    let e = err(&get("/clients", "select=id,projcts(id)"));
    assert_eq!(
        e.hint.as_deref(),
        Some("Perhaps you meant 'projects' instead of 'projcts'.")
    );
    assert_eq!(
        e.details.as_deref(),
        Some("Searched for a foreign key relationship between 'clients' and 'projcts' in the schema 'public', but no matches were found.")
    );
    let e = err(&get("/clients", "select=id,invoices(id)"));
    assert_eq!(
        e.hint.as_deref(),
        Some("Try changing 'invoices' to one of the following: 'invoices!invoices_billed_to_id_fkey', 'invoices!invoices_client_id_fkey'. Find the desired relationship in the 'details' key.")
    );
    let details: serde_json::Value = serde_json::from_str(e.details.as_deref().unwrap()).unwrap();
    assert_eq!(details[0]["cardinality"], "one-to-many");
    assert_eq!(details[0]["embedding"], "clients with invoices");
    let e = err(&get("/rpc/pnig", ""));
    assert_eq!(
        e.hint.as_deref(),
        Some("Perhaps you meant to call the function public.ping")
    );
    let e = err(&get("/clients", "projects.name=eq.x"));
    assert_eq!(
        e.hint.as_deref(),
        Some("Verify that 'projects' is included in the 'select' query parameter.")
    );
}

#[test]
fn aggregates_need_config() {
    let cfg = RestConfig::default();
    let e = run_with(&get("/tasks", "select=status,count()"), &cfg).unwrap_err();
    assert_eq!((e.code.as_str(), e.status.as_u16()), ("PGRST123", 400));
    assert!(run_with(&get("/tasks", "select=status,count()"), &config()).is_ok());
}

#[test]
fn read_only_and_actions() {
    let cases: Vec<(Req, Action, bool, bool)> = vec![
        (get("/clients", ""), Action::Read, true, false),
        (
            with(Method::HEAD, "/clients", "", &[], ""),
            Action::Read,
            true,
            false,
        ),
        (
            with(Method::POST, "/clients", "", &[], r#"{"name":"x"}"#),
            Action::Insert,
            false,
            false,
        ),
        (
            with(Method::PATCH, "/clients", "", &[], r#"{"name":"x"}"#),
            Action::Update,
            false,
            false,
        ),
        (
            with(Method::DELETE, "/clients", "", &[], ""),
            Action::Delete,
            false,
            false,
        ),
        (
            with(Method::PUT, "/systems", "id=eq.a", &[], r#"{"id":"a"}"#),
            Action::SingleUpsert,
            false,
            false,
        ),
        (
            with(Method::POST, "/rpc/ping", "", &[], ""),
            Action::Call(CallShape::Scalar),
            true,
            false,
        ),
        (
            with(Method::POST, "/rpc/bump", "", &[], r#"{"p_id":"x"}"#),
            Action::Call(CallShape::Void),
            false,
            false,
        ),
        (
            get("/rpc/bump", "p_id=x"),
            Action::Call(CallShape::Void),
            true,
            true,
        ),
        (
            get("/rpc/counts", ""),
            Action::Call(CallShape::SetOfScalars),
            true,
            false,
        ),
        (
            get("/rpc/first_client", "p_org=x"),
            Action::Call(CallShape::SingleRow),
            true,
            false,
        ),
        (
            get("/rpc/match_documents", "query_embedding=[1,2,3]"),
            Action::Call(CallShape::Rows),
            true,
            false,
        ),
        (
            with(
                Method::POST,
                "/rpc/create_client",
                "",
                &[],
                r#"{"p_org":"x","p_name":"y"}"#,
            ),
            Action::Call(CallShape::SingleRow),
            false,
            false,
        ),
        (get("/", ""), Action::OpenApi, true, false),
    ];
    for (req, action, read_only, volatile_get) in cases {
        let (p, _) = run(&req).unwrap_or_else(|e| panic!("{}: {e:?}", req.path));
        assert_eq!(
            (p.action, p.read_only, p.volatile_call_via_get),
            (action, read_only, volatile_get),
            "{} {}",
            req.method,
            req.path
        );
    }
}

#[test]
fn paging_offsets_and_max_rows() {
    let cases: Vec<(Req, i64, &str)> = vec![
        (get("/clients", ""), 0, "LIMIT $1::bigint"),
        (
            get("/clients", "limit=10&offset=5"),
            5,
            "LIMIT $1::bigint OFFSET $2::bigint",
        ),
        (
            with(Method::GET, "/clients", "", &[("range", "10-19")], ""),
            10,
            "OFFSET",
        ),
        (
            with(
                Method::GET,
                "/clients",
                "limit=5",
                &[("range", "2-100")],
                "",
            ),
            2,
            "OFFSET",
        ),
    ];
    for (req, offset, fragment) in cases {
        let (p, s) = run(&req).unwrap();
        assert_eq!(p.offset, offset, "{}", req.query);
        assert!(s.sql.contains(fragment), "{}: {}", req.query, s.sql);
    }
    let (_, s) = run(&get("/clients", "limit=5000")).unwrap();
    assert_eq!(s.params, vec![Some("1000".to_string())]);
    let (_, s) = run(&with(
        Method::GET,
        "/clients",
        "limit=5",
        &[("range", "2-100")],
        "",
    ))
    .unwrap();
    assert_eq!(s.params, vec![Some("3".to_string()), Some("2".to_string())]);
    let (_, s) = run(&with(Method::GET, "/clients", "", &[("range", "0-9")], "")).unwrap();
    assert_eq!(s.params, vec![Some("10".to_string())]);
    let no_cap = RestConfig {
        max_rows: None,
        ..config()
    };
    let (_, s) = run_with(&get("/clients", ""), &no_cap).unwrap();
    assert!(!s.sql.contains("LIMIT"));
    // max-rows never caps mutations
    let (_, s) = run(&with(Method::DELETE, "/clients", "", &[], "")).unwrap();
    assert!(!s.sql.contains("LIMIT"));
}

#[test]
fn preferences_applied() {
    let (p, _) = run(&with(Method::POST, "/clients", "", &[("prefer", "return=representation, count=exact, resolution=merge-duplicates, missing=default, tx=rollback")], r#"{"name":"x"}"#)).unwrap();
    assert_eq!(
        p.preference_applied,
        vec![
            "return=representation",
            "resolution=merge-duplicates",
            "missing=default",
            "count=exact"
        ]
    );
    assert!(!p.rollback_requested);
    let cfg = RestConfig {
        tx_end_allow_override: true,
        ..config()
    };
    let (p, _) = run_with(
        &with(
            Method::PATCH,
            "/clients",
            "",
            &[("prefer", "tx=rollback, handling=strict, max-affected=2")],
            r#"{"name":"x"}"#,
        ),
        &cfg,
    )
    .unwrap();
    assert!(p.rollback_requested);
    assert_eq!(p.max_affected, Some(2));
    assert_eq!(
        p.preference_applied,
        vec!["tx=rollback", "handling=strict", "max-affected=2"]
    );
    let (p, _) = run(&with(
        Method::PATCH,
        "/clients",
        "",
        &[("prefer", "max-affected=2")],
        r#"{"name":"x"}"#,
    ))
    .unwrap();
    assert_eq!(p.max_affected, None);
}

#[test]
fn planned_count_uses_explain() {
    let (p, _) = run(&with(
        Method::GET,
        "/clients",
        "name=eq.x",
        &[("prefer", "count=planned")],
        "",
    ))
    .unwrap();
    let cs = p.count_statement.expect("explain");
    assert!(cs
        .sql
        .starts_with("EXPLAIN (FORMAT JSON) SELECT 1 FROM \"public\".\"clients\""));
    assert_eq!(cs.params, vec![Some("x".to_string())]);
    let (p, s) = run(&with(
        Method::GET,
        "/clients",
        "",
        &[("prefer", "count=exact")],
        "",
    ))
    .unwrap();
    assert!(p.count_statement.is_none());
    assert!(s
        .sql
        .contains("SELECT pg_catalog.count(*) FROM (SELECT 1 FROM \"public\".\"clients\""));
    assert_eq!(
        crate::render::explain_row_estimate(
            r#"[{"Plan":{"Node Type":"Seq Scan","Plan Rows":1234}}]"#
        ),
        Some(1234)
    );
    assert_eq!(crate::render::explain_row_estimate("junk"), None);
}

#[test]
fn profile_and_locations() {
    let (p, _) = run(&with(
        Method::GET,
        "/clients",
        "select=id",
        &[("accept-profile", "public")],
        "",
    ))
    .unwrap();
    assert_eq!(p.profile.as_deref(), Some("public"));
    assert_eq!(p.content_location, "/clients?select=id");
    let (p, _) = run(&get("/clients", "")).unwrap();
    assert_eq!(p.profile, None);
    assert_eq!(p.content_location, "/clients");
    let e = run(&with(
        Method::GET,
        "/clients",
        "",
        &[("accept-profile", "graphql_public")],
        "",
    ))
    .unwrap_err();
    assert_eq!(e.code, "42P01");
}

#[test]
fn timezone_preference_is_applied_when_plausible() {
    let (p, _) = run(&with(
        Method::GET,
        "/clients",
        "",
        &[("prefer", "timezone=America/New_York")],
        "",
    ))
    .unwrap();
    assert_eq!(p.timezone.as_deref(), Some("America/New_York"));
    assert_eq!(p.preference_applied, vec!["timezone=America/New_York"]);
    let (p, _) = run(&with(
        Method::GET,
        "/clients",
        "",
        &[("prefer", "timezone='; drop table x")],
        "",
    ))
    .unwrap();
    assert_eq!(p.timezone, None);
    assert!(p.preference_applied.is_empty());
}
