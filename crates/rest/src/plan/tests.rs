use http::Method;

use super::*;
use crate::plan::RawMedia;
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
        (get("/clients", "select=id,...projects(n:count())"), 400, "PGRST127", "Feature not implemented"),
        (get("/organizations", "select=id,...clients(name,...projects(progress.sum()))"), 400, "PGRST127", "Feature not implemented"),
        (get("/clients", "select=id,projects(id)&projects=eq.1"), 400, "PGRST120", "Bad operator on the 'projects' embedded resource"),
        (get("/clients", "select=id,projects(id)&projects=is.true"), 400, "PGRST120", "Bad operator on the 'projects' embedded resource"),
        (get("/clients", "select=id,p:projects(id)&p=eq.1"), 400, "PGRST120", "Bad operator on the 'projects' embedded resource"),
        (get("/clients", "select=id,p:projects(id)&projects=eq.1"), 400, "42703", "column clients.projects does not exist"),
        (get("/rpc/nope", ""), 404, "PGRST202", "Could not find the function public.nope without parameters in the schema cache"),
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
    // so do aggregates inside embeds, and spreads of to-many relationships (PostgREST 13)
    for q in [
        "select=name,projects(count())",
        "select=name,...projects(name)",
        "select=name,...open_projects_missing(name)",
    ] {
        let e = run_with(&get("/clients", q), &cfg).unwrap_err();
        if q.contains("missing") {
            assert_eq!(e.code, "PGRST200", "{q}");
            continue;
        }
        assert_eq!(
            (
                e.code.as_str(),
                e.status.as_u16(),
                e.message.as_str(),
                e.details.as_deref()
            ),
            (
                "PGRST123",
                400,
                "Use of aggregate functions is not allowed",
                None
            ),
            "{q}"
        );
    }
    let e = run_with(
        &get("/clients", "select=id,...projects(n:count())"),
        &config(),
    )
    .unwrap_err();
    assert_eq!(
        e.details.as_deref(),
        Some("Aggregates are not implemented for one-to-many or many-to-many spreads.")
    );
    assert_eq!(e.hint, None);
    // to-one spreads need nothing
    assert!(run_with(
        &get("/projects", "select=name,...clients(client:name)"),
        &cfg
    )
    .is_ok());
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

/// An embed as (label, target, cardinality).
type EmbedSummary = (String, String, String);

/// The relationship each embed of the root resolved to.
fn embeds_of(req: &Req) -> Vec<EmbedSummary> {
    let (p, _) = run(req).unwrap_or_else(|e| panic!("{}?{}: {e:?}", req.path, req.query));
    let root = match &p.query {
        Query::Read(root) => root.clone(),
        Query::Call(c) => c.root.clone().expect("rows"),
        Query::Insert(q) => q.root.clone(),
        _ => panic!("no read"),
    };
    root.embeds
        .iter()
        .map(|e| {
            (
                e.label.clone(),
                e.relationship.target.name.clone(),
                match &e.relationship.cardinality {
                    crate::schema::Cardinality::Computed {
                        function,
                        single_row,
                    } => format!("computed {} {}", function.name, single_row),
                    c => c.label().to_string(),
                },
            )
        })
        .collect()
}

fn t(label: &str, target: &str, card: &str) -> EmbedSummary {
    (label.into(), target.into(), card.into())
}

#[test]
fn embed_targets_follow_postgrest_rules() {
    let cases: Vec<(Req, Vec<EmbedSummary>)> = vec![
        // by the foreign key's single column on the parent's side, or by its name
        (
            get("/documents", "select=project:project_id(name)"),
            vec![t("project", "projects", "many-to-one")],
        ),
        (
            get("/projects", "select=projects_org_id_fkey(name)"),
            vec![t("projects_org_id_fkey", "organizations", "many-to-one")],
        ),
        // a constraint name as the target never reaches views that show the table
        (
            get("/projects", "select=projects_org_id_client_id_fkey(name)"),
            vec![t(
                "projects_org_id_client_id_fkey",
                "clients",
                "many-to-one",
            )],
        ),
        // self-reference: the table's name is the children, the column the parent
        (
            get("/employees", "select=employees(name)"),
            vec![t("employees", "employees", "one-to-many")],
        ),
        (
            get("/employees", "select=boss:manager_id(name)"),
            vec![t("boss", "employees", "many-to-one")],
        ),
        (
            get("/employees", "select=reports:employees!manager_id(name)"),
            vec![t("reports", "employees", "one-to-many")],
        ),
        // several keys to one table: a hint by key name or by column on either side
        (
            get("/clients", "select=invoices!billed_to_id(id)"),
            vec![t("invoices", "invoices", "one-to-many")],
        ),
        (
            get(
                "/invoices",
                "select=payer:clients!invoices_client_id_fkey(name)",
            ),
            vec![t("payer", "clients", "many-to-one")],
        ),
        // computed relationships, by the function's name
        (
            get("/clients", "select=organization(name)"),
            vec![t(
                "organization",
                "organizations",
                "computed organization true",
            )],
        ),
        (
            get("/projects", "select=open_tasks(id)"),
            vec![t("open_tasks", "tasks", "computed open_tasks false")],
        ),
        (
            get("/projects", "select=top_task(id)"),
            vec![t("top_task", "tasks", "computed top_task true")],
        ),
        // on a call's rows, and on a function returning a view
        (
            with(
                Method::POST,
                "/rpc/search_clients",
                "select=id,organization(name),projects(id)",
                &[],
                r#"{"q":"a"}"#,
            ),
            vec![
                t(
                    "organization",
                    "organizations",
                    "computed organization true",
                ),
                t("projects", "projects", "one-to-many"),
            ],
        ),
        (
            get(
                "/rpc/active_clients_of",
                "p_org=x&select=client_name,projects(name)",
            ),
            vec![t("projects", "projects", "one-to-many")],
        ),
    ];
    for (req, want) in cases {
        assert_eq!(embeds_of(&req), want, "{}?{}", req.path, req.query);
    }
    let e = err(&get("/employees", "select=employees!nope(name)"));
    assert_eq!((e.code.as_str(), e.status.as_u16()), ("PGRST200", 400));
    assert_eq!(
        e.details.as_deref(),
        Some("Searched for a foreign key relationship between 'employees' and 'employees' using the hint 'nope' in the schema 'public', but no matches were found.")
    );
    // a column on the parent's side names a single-column key only
    let e = err(&get("/projects", "select=client_id(name)"));
    assert_eq!(e.code, "PGRST200");
    let e = err(&get("/clients", "select=invoices(id)"));
    let details: serde_json::Value = serde_json::from_str(e.details.as_deref().unwrap()).unwrap();
    assert_eq!(
        details,
        serde_json::json!([
            {"cardinality": "one-to-many", "embedding": "clients with invoices", "relationship": "invoices_billed_to_id_fkey using clients(id) and invoices(billed_to_id)"},
            {"cardinality": "one-to-many", "embedding": "clients with invoices", "relationship": "invoices_client_id_fkey using clients(id) and invoices(client_id)"},
        ])
    );
}

#[test]
fn computed_fields_read_filter_and_order_like_columns() {
    let s = sql(&get(
        "/clients",
        "select=id,display_name,label:display_name&display_name=like.A*&order=display_name.desc",
    ));
    assert!(
        s.sql
            .contains("\"public\".\"display_name\"(\"t0\".*) AS \"display_name\""),
        "{}",
        s.sql
    );
    assert!(
        s.sql
            .contains("\"public\".\"display_name\"(\"t0\".*) AS \"label\""),
        "{}",
        s.sql
    );
    assert!(
        s.sql
            .contains("\"public\".\"display_name\"(\"t0\".*) LIKE $1::text"),
        "{}",
        s.sql
    );
    assert!(
        s.sql
            .contains("ORDER BY \"public\".\"display_name\"(\"t0\".*) DESC"),
        "{}",
        s.sql
    );
    // `*` never includes them
    let s = sql(&get("/clients", "select=*"));
    assert!(!s.sql.contains("display_name"), "{}", s.sql);
    // a mutation's rows and a call's rows are a CTE: the row is rebuilt with its type
    let s = sql(&with(
        Method::POST,
        "/clients",
        "select=display_name",
        &[("prefer", "return=representation")],
        r#"{"name":"x"}"#,
    ));
    assert!(s.sql.contains("\"public\".\"display_name\"(ROW(\"t0\".\"id\", \"t0\".\"org_id\", \"t0\".\"name\", \"t0\".\"status\", \"t0\".\"health_score\", \"t0\".\"tags\", \"t0\".\"value_cents\", \"t0\".\"notes\")::\"public\".\"clients\")"), "{}", s.sql);
    // PATCH filters on a computed field read the statement's target
    let s = sql(&with(
        Method::PATCH,
        "/clients",
        "display_name=eq.x",
        &[],
        r#"{"name":"y"}"#,
    ));
    assert!(
        s.sql
            .contains("\"public\".\"display_name\"(\"pgrst_target\".*) = $"),
        "{}",
        s.sql
    );
    // computed relationships take the parent row; no join condition
    let s = sql(&get(
        "/projects",
        "select=id,open_tasks(id)&open_tasks.limit=1",
    ));
    assert!(
        s.sql
            .contains("FROM \"public\".\"open_tasks\"(\"t0\".*) AS \"t1\" LIMIT"),
        "{}",
        s.sql
    );
    let s = sql(&get(
        "/clients",
        "select=id,organization!inner(name)&order=organization(name)",
    ));
    assert!(
        s.sql
            .contains("EXISTS (SELECT 1 FROM \"public\".\"organization\"(\"t0\".*) AS \"t1\")"),
        "{}",
        s.sql
    );
    assert!(s.sql.contains("ORDER BY (SELECT \"_pgrst_ord\".\"name\" FROM \"public\".\"organization\"(\"t0\".*) AS \"_pgrst_ord\" LIMIT 1)"), "{}", s.sql);
    // unknown names are still 42703
    let e = err(&get("/clients", "select=display_nam"));
    assert_eq!(
        (e.code.as_str(), e.message.as_str()),
        ("42703", "column clients.display_nam does not exist")
    );
    // a function of another table's row is not a field here
    let e = err(&get("/projects", "select=display_name"));
    assert_eq!(e.code, "42703");
}

#[test]
fn overloads_are_chosen_by_the_named_arguments_and_the_body_type() {
    let text = [("content-type", "text/plain")];
    let xml = [("content-type", "text/xml")];
    let bytes = [("content-type", "application/octet-stream")];
    let form = [("content-type", "application/x-www-form-urlencoded")];
    // (request, the call's SQL, its parameters)
    let cases: Vec<(Req, &str, Vec<Option<String>>)> = vec![
        (
            with(
                Method::POST,
                "/rpc/greet",
                "",
                &[],
                r#"{"name":"a","greeting":"yo"}"#,
            ),
            "\"public\".\"greet\"(\"name\" := $1::text, \"greeting\" := $2::text)",
            vec![Some("a".into()), Some("yo".into())],
        ),
        (
            get("/rpc/greet", "name=a&greeting=yo"),
            "\"public\".\"greet\"(\"name\" := $1::text, \"greeting\" := $2::text)",
            vec![Some("a".into()), Some("yo".into())],
        ),
        (
            with(Method::POST, "/rpc/greet", "", &form, "name=a&greeting=yo"),
            "\"public\".\"greet\"(\"name\" := $1::text, \"greeting\" := $2::text)",
            vec![Some("a".into()), Some("yo".into())],
        ),
        // `columns=` names the arguments; a listed key absent from the body is NULL
        (
            with(
                Method::POST,
                "/rpc/greet",
                "columns=name,greeting",
                &[],
                r#"{"name":"a","other":1}"#,
            ),
            "\"public\".\"greet\"(\"name\" := $1::text, \"greeting\" := $2::text)",
            vec![Some("a".into()), None],
        ),
        // default arguments may be omitted
        (
            get("/rpc/match_documents", "query_embedding=[1,2,3]"),
            "\"public\".\"match_documents\"(\"query_embedding\" := $1::extensions.vector)",
            vec![Some("[1,2,3]".into()), Some("1000".into())],
        ),
        // a single unnamed parameter takes the whole body, chosen by the media type
        (
            with(Method::POST, "/rpc/echo", "", &[], r#"{"any":[1]}"#),
            "\"public\".\"echo\"($1::json)",
            vec![Some(r#"{"any":[1]}"#.into())],
        ),
        (
            with(Method::POST, "/rpc/echo_text", "", &text, "hello, world"),
            "\"public\".\"echo_text\"($1::text)",
            vec![Some("hello, world".into())],
        ),
        (
            with(Method::POST, "/rpc/echo_xml", "", &xml, "<a>1</a>"),
            "\"public\".\"echo_xml\"($1::xml)",
            vec![Some("<a>1</a>".into())],
        ),
        (
            with(Method::POST, "/rpc/echo_bytes", "", &bytes, "\u{0}\u{ff}"),
            "\"public\".\"echo_bytes\"($1::bytea)",
            vec![Some("\\x00c3bf".into())],
        ),
        // JSON sent as text/plain still reaches named parameters when nothing takes text
        (
            with(
                Method::POST,
                "/rpc/greet",
                "",
                &text,
                r#"{"name":"a","greeting":"yo"}"#,
            ),
            "\"public\".\"greet\"(\"name\" := $1::text, \"greeting\" := $2::text)",
            vec![Some("a".into()), Some("yo".into())],
        ),
        (
            with(Method::POST, "/rpc/ping", "", &text, ""),
            "\"public\".\"ping\"()",
            vec![],
        ),
        // GET: a pair whose value is an operator expression filters the rows
        (
            get("/rpc/search_clients", "q=a&name=eq.x"),
            "\"public\".\"search_clients\"(\"q\" := $1::text)",
            vec![Some("a".into()), Some("x".into()), Some("1000".into())],
        ),
    ];
    for (req, call, params) in cases {
        let s = sql(&req);
        assert!(
            s.sql.contains(call),
            "{} {}: {}",
            req.method,
            req.path,
            s.sql
        );
        assert_eq!(
            s.params, params,
            "{} {}?{}",
            req.method, req.path, req.query
        );
        assert_params_bound(&s);
    }
}

#[test]
fn function_errors_are_worded_as_postgrest_v12() {
    let text = [("content-type", "text/plain")];
    let xml = [("content-type", "text/xml")];
    let bytes = [("content-type", "application/octet-stream")];
    // (request, status, code, message, details, hint)
    type Case<'a> = (Req<'a>, u16, &'a str, &'a str, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (with(Method::POST, "/rpc/greet", "", &[], r#"{"name":"a"}"#), 300, "PGRST203",
         "Could not choose the best candidate function between: public.greet(name => text), public.greet(name => text, greeting => text)",
         "", Some("Try renaming the parameters or the function itself in the database so function overloading can be resolved")),
        (get("/rpc/add", "a=1&b=2"), 300, "PGRST203",
         "Could not choose the best candidate function between: public.add(a => integer, b => integer), public.add(a => text, b => text)",
         "", Some("Try renaming the parameters or the function itself in the database so function overloading can be resolved")),
        (get("/rpc/nope", ""), 404, "PGRST202", "Could not find the function public.nope without parameters in the schema cache",
         "Searched for the function public.nope without parameters, but no matches were found in the schema cache.", None),
        (with(Method::POST, "/rpc/ping", "", &[], r#"{"x":1}"#), 404, "PGRST202", "Could not find the function public.ping(x) in the schema cache",
         "Searched for the function public.ping with parameter x or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache.", None),
        (get("/rpc/add", "a=1"), 404, "PGRST202", "Could not find the function public.add(a) in the schema cache",
         "Searched for the function public.add with parameter a, but no matches were found in the schema cache.", Some("Perhaps you meant to call the function public.add(a, b)")),
        (get("/rpc/greet", "nam=a&greting=b"), 404, "PGRST202", "Could not find the function public.greet(greting, nam) in the schema cache",
         "Searched for the function public.greet with parameters greting, nam, but no matches were found in the schema cache.", Some("Perhaps you meant to call the function public.greet(greeting, name)")),
        // a variadic parameter without a default is required
        (get("/rpc/tagged", ""), 404, "PGRST202", "Could not find the function public.tagged without parameters in the schema cache",
         "Searched for the function public.tagged without parameters, but no matches were found in the schema cache.", Some("Perhaps you meant to call the function public.tagged(t)")),
        (with(Method::POST, "/rpc/add", "", &text, "1"), 404, "PGRST202", "Could not find the function public.add in the schema cache",
         "Searched for the function public.add with a single unnamed text parameter, but no matches were found in the schema cache.", None),
        (with(Method::POST, "/rpc/echo_text", "", &xml, "<a/>"), 404, "PGRST202", "Could not find the function public.echo_text in the schema cache",
         "Searched for the function public.echo_text with a single unnamed xml parameter, but no matches were found in the schema cache.", None),
        (with(Method::POST, "/rpc/echo_text", "", &bytes, "x"), 404, "PGRST202", "Could not find the function public.echo_text in the schema cache",
         "Searched for the function public.echo_text with a single unnamed bytea parameter, but no matches were found in the schema cache.", None),
        (with(Method::POST, "/rpc/echo_text", "", &[], r#"{"x":1}"#), 404, "PGRST202", "Could not find the function public.echo_text(x) in the schema cache",
         "Searched for the function public.echo_text with parameter x or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache.", None),
        (with(Method::POST, "/rpc/ping", "", &[("prefer", "params=single-object")], r#"{"x":1}"#), 404, "PGRST202", "Could not find the function public.ping in the schema cache",
         "Searched for the function public.ping with a single json/jsonb parameter, but no matches were found in the schema cache.", None),
    ];
    for (req, status, code, message, details, hint) in cases {
        let e = err(&req);
        let what = format!("{} {}?{}", req.method, req.path, req.query);
        assert_eq!(
            (e.status.as_u16(), e.code.as_str(), e.message.as_str()),
            (status, code, message),
            "{what}"
        );
        if !details.is_empty() {
            assert_eq!(e.details.as_deref(), Some(details), "{what}");
        }
        assert_eq!(e.hint.as_deref(), hint, "{what}");
    }
}

#[test]
fn calls_plan_counts_and_max_affected() {
    let planned = [("prefer", "count=planned")];
    let cases: Vec<(Req, Option<&str>)> = vec![
        (with(Method::GET, "/rpc/search_clients", "q=a&name=eq.x", &planned, ""), Some("EXPLAIN (FORMAT JSON) SELECT 1 FROM \"public\".\"search_clients\"(\"q\" := $1::text) AS \"t0\" WHERE \"t0\".\"name\" = $2::text")),
        (with(Method::POST, "/rpc/counts", "", &planned, ""), Some("EXPLAIN (FORMAT JSON) SELECT 1 FROM \"public\".\"counts\"() AS pgrst_scalar")),
        (with(Method::HEAD, "/rpc/ping", "", &[("prefer", "count=estimated")], ""), Some("EXPLAIN (FORMAT JSON) SELECT \"public\".\"ping\"()")),
        (with(Method::POST, "/rpc/bump", "", &planned, r#"{"p_id":"x"}"#), None),
    ];
    for (req, want) in cases {
        let (p, _) = run(&req).unwrap();
        assert_eq!(
            p.count_statement.as_ref().map(|s| s.sql.as_str()),
            want,
            "{}",
            req.path
        );
    }
    let (_, s) = run(&with(
        Method::GET,
        "/rpc/ping",
        "",
        &[("prefer", "count=exact")],
        "",
    ))
    .unwrap();
    assert!(
        s.sql
            .contains("(SELECT pg_catalog.count(*) FROM pgrst_source)::bigint AS total_result_set"),
        "{}",
        s.sql
    );
    let (_, s) = run(&with(
        Method::GET,
        "/rpc/first_client",
        "p_org=x",
        &[("prefer", "count=exact")],
        "",
    ))
    .unwrap();
    assert!(
        s.sql
            .contains("(SELECT pg_catalog.count(*) FROM pgrst_source)::bigint AS total_result_set"),
        "{}",
        s.sql
    );
    // max-affected on a call needs SETOF/TABLE (PostgREST 13's PGRST128)
    let strict = [("prefer", "handling=strict,max-affected=1")];
    for path in ["/rpc/ping", "/rpc/first_client?p_org=x", "/rpc/bump?p_id=x"] {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let e = err(&with(Method::GET, path, query, &strict, ""));
        assert_eq!(
            (e.status.as_u16(), e.code.as_str(), e.message.as_str()),
            (400, "PGRST128", "Function must return SETOF or TABLE when max-affected preference is used with handling=strict"),
            "{path}"
        );
    }
    let (p, _) = run(&with(Method::GET, "/rpc/counts", "", &strict, "")).unwrap();
    assert_eq!(p.max_affected, Some(1));
    // without handling=strict max-affected is ignored
    let (p, _) = run(&with(
        Method::GET,
        "/rpc/ping",
        "",
        &[("prefer", "max-affected=1")],
        "",
    ))
    .unwrap();
    assert_eq!(p.max_affected, None);
}

#[test]
fn missing_default_fills_identity_and_column_defaults_on_inserts_and_upserts() {
    let s = sql(&with(
        Method::POST,
        "/tasks",
        "columns=id,project_id,title,status&on_conflict=id",
        &[("prefer", "missing=default, resolution=merge-duplicates")],
        r#"[{"title":"a"}]"#,
    ));
    assert!(
        s.sql.contains("CASE WHEN _j.value ? 'id' THEN _r.\"id\" ELSE (nextval('public.tasks_id_seq'::regclass)) END"),
        "{}",
        s.sql
    );
    assert!(
        s.sql
            .contains("CASE WHEN _j.value ? 'status' THEN _r.\"status\" ELSE ('todo'::text) END"),
        "{}",
        s.sql
    );
    assert!(
        s.sql.contains("ON CONFLICT (\"id\") DO UPDATE SET"),
        "{}",
        s.sql
    );
    // without columns= every key is present: nothing to fill
    let s = sql(&with(
        Method::POST,
        "/tasks",
        "",
        &[("prefer", "missing=default")],
        r#"{"title":"a"}"#,
    ));
    assert!(!s.sql.contains("CASE WHEN"), "{}", s.sql);
}

#[test]
fn to_many_spreads_aggregate_arrays_and_grouped_embeds_are_jsonb() {
    let s = sql(&get(
        "/clients",
        "select=name,...projects(project:name,status)&projects.order=name",
    ));
    assert!(
        s.sql.contains("LEFT JOIN LATERAL (SELECT coalesce(pg_catalog.json_agg(_e.\"project\"), '[]') AS \"project\", coalesce(pg_catalog.json_agg(_e.\"status\"), '[]') AS \"status\" FROM (SELECT \"t1\".\"name\" AS \"project\", \"t1\".\"status\" AS \"status\" FROM \"public\".\"projects\" AS \"t1\" WHERE"),
        "{}",
        s.sql
    );
    assert!(
        s.sql
            .contains("ORDER BY \"t1\".\"name\") AS _e) AS \"pgrst_t1\" ON TRUE"),
        "{}",
        s.sql
    );
    assert!(
        s.sql.contains("\"pgrst_t1\".\"project\" AS \"project\""),
        "{}",
        s.sql
    );
    // a to-many spread inside a to-many spread joins row by row
    let s = sql(&get(
        "/organizations",
        "select=name,...clients(client:name,...projects(project:name))",
    ));
    assert!(s.sql.contains("LEFT JOIN LATERAL (SELECT \"t2\".\"name\" AS \"project\" FROM \"public\".\"projects\" AS \"t2\""), "{}", s.sql);
    // a grouped node groups by its embeds as jsonb
    let s = sql(&get("/projects", "select=status,clients(name),count()"));
    assert!(
        s.sql.contains("\"pgrst_t1\".body::jsonb AS \"clients\""),
        "{}",
        s.sql
    );
    assert!(s.sql.contains("GROUP BY 1, 2"), "{}", s.sql);
}

#[test]
fn media_type_handlers_and_accept_errors() {
    let accept = |v: &'static str| [("accept", v)];
    // a function returning a media type domain answers its type, raw
    let (p, s) = run(&with(
        Method::GET,
        "/rpc/page",
        "",
        &accept("text/html"),
        "",
    ))
    .unwrap();
    assert_eq!(
        p.raw_media,
        Some(RawMedia {
            content_type: "text/html".into(),
            bytes: false
        })
    );
    assert!(s.sql.contains("coalesce(pg_catalog.string_agg(_postgrest_t.pgrst_scalar::text, ''), '')::text AS body"), "{}", s.sql);
    let (p, s) = run(&with(
        Method::GET,
        "/rpc/blob",
        "",
        &accept("application/octet-stream"),
        "",
    ))
    .unwrap();
    assert_eq!(p.raw_media.as_ref().map(|m| m.bytes), Some(true));
    assert!(
        s.sql
            .contains("pg_catalog.encode(_postgrest_t.pgrst_scalar::bytea, 'hex')"),
        "{}",
        s.sql
    );
    // `*/*` answers anything, as application/octet-stream
    let (p, _) = run(&with(
        Method::GET,
        "/rpc/anything",
        "",
        &accept("image/png"),
        "",
    ))
    .unwrap();
    assert_eq!(
        p.raw_media.map(|m| m.content_type),
        Some("application/octet-stream".into())
    );
    // the first acceptable type wins; */* and JSON are built in
    for a in ["application/json, text/html", "*/*", "text/csv"] {
        let (p, _) = run(&with(Method::GET, "/rpc/page", "", &accept(a), "")).unwrap();
        assert_eq!(p.raw_media, None, "{a}");
    }
    let (p, _) = run(&with(
        Method::GET,
        "/rpc/page",
        "",
        &accept("image/png, text/html;q=0.5, application/json;q=0.1"),
        "",
    ))
    .unwrap();
    assert_eq!(
        p.raw_media.map(|m| m.content_type),
        Some("text/html".into())
    );
    // nothing answers: 406 PGRST107 naming what was asked, after the target resolves
    for (path, query, a, shown) in [
        ("/rpc/page", "", "text/plain", "text/plain"),
        ("/rpc/page", "select=x", "text/html", "text/html"),
        ("/rpc/ping", "", "text/plain", "text/plain"),
        (
            "/clients",
            "",
            "text/html, image/png;q=0.2",
            "text/html, image/png",
        ),
        (
            "/clients",
            "",
            "application/vnd.pgrst.plan+json",
            "application/vnd.pgrst.plan+json",
        ),
    ] {
        let e = err(&with(Method::GET, path, query, &accept(a), ""));
        assert_eq!(
            (e.status.as_u16(), e.code.as_str(), e.message),
            (
                406,
                "PGRST107",
                format!("None of these media types are available: {shown}")
            ),
            "{path} {a}"
        );
    }
    let e = err(&with(Method::GET, "/nope", "", &accept("text/html"), ""));
    assert_eq!(e.code, "42P01");
}

#[test]
fn plan_media_type_needs_db_plan_enabled() {
    let cfg = RestConfig {
        plan_enabled: true,
        ..config()
    };
    let req = |a: &'static str| with(Method::GET, "/clients", "name=eq.x", &[("accept", a)], "");
    let (p, _) = run_with(&req("application/vnd.pgrst.plan"), &cfg).unwrap();
    let e = p.explain.expect("explain");
    assert_eq!(
        e.content_type(),
        "application/vnd.pgrst.plan+text; charset=utf-8"
    );
    assert_eq!(e.explain_options(), "FORMAT TEXT");
    let (p, _) = run_with(
        &req("application/vnd.pgrst.plan+json; for=\"application/vnd.pgrst.object\"; options=analyze|verbose"),
        &cfg,
    )
    .unwrap();
    let e = p.explain.expect("explain");
    assert_eq!(
        e.content_type(),
        "application/vnd.pgrst.plan+json; for=\"application/vnd.pgrst.object+json\"; options=analyze|verbose; charset=utf-8"
    );
    assert_eq!(e.explain_options(), "FORMAT JSON, ANALYZE, VERBOSE");
    assert!(
        p.media.is_singular(),
        "the statement explained is the object one"
    );
    for bad in [
        "application/vnd.pgrst.plan; options=nope",
        "application/vnd.pgrst.plan; for=\"text/html\"",
    ] {
        let e = run_with(&req(bad), &cfg).unwrap_err();
        assert_eq!(e.code, "PGRST107", "{bad}");
    }
}

#[test]
fn aggregates_in_to_one_spreads_are_hoisted_to_the_parent() {
    let s = sql(&get(
        "/projects",
        "select=status,...clients(n:name.count(),best:health_score.max()::text)",
    ));
    assert!(s.sql.contains("SELECT \"t0\".\"status\" AS \"status\", pg_catalog.count(\"pgrst_t1\".\"n\") AS \"n\", (pg_catalog.max(\"pgrst_t1\".\"best\"))::text AS \"best\" FROM"), "{}", s.sql);
    assert!(s.sql.contains("SELECT \"t1\".\"name\" AS \"n\", \"t1\".\"health_score\" AS \"best\" FROM \"public\".\"clients\" AS \"t1\""), "{}", s.sql);
    assert!(s.sql.contains("GROUP BY 1"), "{}", s.sql);
    let s = sql(&get("/projects", "select=...clients(count())"));
    assert!(
        s.sql
            .contains("pg_catalog.count(\"pgrst_t1\".\"count\") AS \"count\""),
        "{}",
        s.sql
    );
    assert!(
        s.sql
            .contains("SELECT 1 AS \"count\" FROM \"public\".\"clients\""),
        "{}",
        s.sql
    );
}

#[test]
fn geojson_needs_postgis_and_is_a_feature_collection_of_its_rows() {
    let geo = [("accept", "application/geo+json")];
    // The fixture has no PostGIS: 406 PGRST107 once the target resolves (an unknown
    // table is still 404), or the next acceptable media type.
    let e = err(&with(Method::GET, "/clients", "", &geo, ""));
    assert_eq!((e.status.as_u16(), e.code.as_str()), (406, "PGRST107"));
    assert_eq!(
        e.message,
        "None of these media types are available: application/geo+json"
    );
    let e = err(&with(Method::GET, "/nope", "", &geo, ""));
    assert_eq!(e.code, "42P01");
    let (p, s) = run(&with(
        Method::GET,
        "/clients",
        "",
        &[("accept", "application/geo+json, text/csv;q=0.5")],
        "",
    ))
    .unwrap();
    assert_eq!(p.media, ResponseMedia::Csv);
    assert!(!s.sql.contains("st_asgeojson"), "{}", s.sql);

    // With PostGIS: every row through the extension's ST_AsGeoJSON(record), by its schema.
    let mut cache = crate::schema::fixture::cache();
    cache.geojson_function = Some(QualifiedName::new("extensions", "st_asgeojson"));
    let feature_collection = "pg_catalog.json_build_object('type', 'FeatureCollection', 'features', coalesce(pg_catalog.json_agg(\"extensions\".\"st_asgeojson\"(_postgrest_t)::json), '[]'))::text AS body";
    let config = config();
    for req in [
        with(Method::GET, "/clients", "select=id,name", &geo, ""),
        with(
            Method::GET,
            "/clients",
            "select=id,projects(id)&id=eq.x",
            &geo,
            "",
        ),
        with(Method::GET, "/rpc/search_clients", "q=a", &geo, ""),
        with(Method::GET, "/rpc/first_client", "p_org=x", &geo, ""),
        with(
            Method::POST,
            "/clients",
            "",
            &[
                ("accept", "application/geo+json"),
                ("prefer", "return=representation"),
            ],
            r#"{"name":"x"}"#,
        ),
        with(
            Method::DELETE,
            "/clients",
            "id=eq.x",
            &[
                ("accept", "application/geo+json"),
                ("prefer", "return=representation"),
            ],
            "",
        ),
    ] {
        let (p, s) = crate::testutil::run_on(&req, &config, &cache)
            .unwrap_or_else(|e| panic!("{}?{}: {e:?}", req.path, req.query));
        assert_eq!(p.media, ResponseMedia::GeoJson);
        assert_eq!(
            p.media.content_type(),
            "application/geo+json; charset=utf-8"
        );
        assert!(s.sql.contains(feature_collection), "{}", s.sql);
        assert_params_bound(&s);
    }
    // application/json is still JSON with PostGIS installed
    let (p, s) = crate::testutil::run_on(&get("/clients", ""), &config, &cache).unwrap();
    assert_eq!(p.media, ResponseMedia::Json { strip_nulls: false });
    assert!(!s.sql.contains("st_asgeojson"), "{}", s.sql);
}

#[test]
fn upserts_on_views_use_the_inherited_key_and_without_a_key_are_plain_inserts() {
    let cache = crate::schema::fixture::cache();
    let merge = [
        ("prefer", "resolution=merge-duplicates"),
        ("prefer", "return=representation"),
    ];
    // A view showing its base table's primary key: ON CONFLICT on those columns (PostgreSQL
    // takes ON CONFLICT on an auto-updatable view to its base table).
    let view = cache.table("public", "active_clients").unwrap();
    assert!(!view.primary_key.is_empty(), "{:?}", view.primary_key);
    let (p, s) = run(&with(
        Method::POST,
        "/active_clients",
        "",
        &merge,
        r#"{"id":"x","org_id":"y","client_name":"z"}"#,
    ))
    .unwrap();
    let target: Vec<String> = view
        .primary_key
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect();
    assert!(
        s.sql.contains(&format!(
            " ON CONFLICT ({}) DO UPDATE SET",
            target.join(", ")
        )),
        "{}",
        s.sql
    );
    assert!(p
        .preference_applied
        .contains(&"resolution=merge-duplicates".to_string()));
    // A view's rows have no xmax: the inserted rows are counted in `pgrst.inserted`, up for
    // each row offered, down for each updated, read after the statement.
    assert!(!s.sql.contains("xmax"), "{}", s.sql);
    for part in [
        "AS _(\"client_name\" text, \"id\" uuid, \"org_id\" uuid) WHERE pg_catalog.set_config('pgrst.inserted', (coalesce(NULLIF(pg_catalog.current_setting('pgrst.inserted', true), '')::int, 0) + 1)::text, true) <> '0' ON CONFLICT",
        "= EXCLUDED.\"org_id\" WHERE pg_catalog.set_config('pgrst.inserted', (coalesce(NULLIF(pg_catalog.current_setting('pgrst.inserted', true), '')::int, 0) - 1)::text, true) <> '-1' RETURNING",
        "coalesce(NULLIF(pg_catalog.current_setting('pgrst.inserted', true), '')::bigint, 0) AS inserted_rows",
    ] {
        assert!(s.sql.contains(part), "{part}\n{}", s.sql);
    }
    // on_conflict names any columns of the view
    let (_, s) = run(&with(
        Method::POST,
        "/active_clients",
        "on_conflict=client_name",
        &merge,
        r#"{"client_name":"z"}"#,
    ))
    .unwrap();
    assert!(
        s.sql
            .contains(" ON CONFLICT (\"client_name\") DO UPDATE SET"),
        "{}",
        s.sql
    );
    // Without a key (a view not showing its base table's): a plain insert, the resolution
    // not applied, as PostgREST does.
    let mut keyless = cache.clone();
    let i = keyless
        .tables
        .iter()
        .position(|t| t.name == "active_clients")
        .unwrap();
    keyless.tables[i].primary_key.clear();
    let config = config();
    let body = r#"{"client_name":"z"}"#;
    let (p, s) = crate::testutil::run_on(
        &with(Method::POST, "/active_clients", "", &merge, body),
        &config,
        &keyless,
    )
    .unwrap();
    assert!(!s.sql.contains("ON CONFLICT"), "{}", s.sql);
    assert_eq!(
        p.preference_applied,
        vec!["return=representation".to_string()]
    );
    let (_, s) = crate::testutil::run_on(
        &with(
            Method::POST,
            "/active_clients",
            "on_conflict=client_name",
            &merge,
            body,
        ),
        &config,
        &keyless,
    )
    .unwrap();
    assert!(
        s.sql.contains(" ON CONFLICT (\"client_name\")"),
        "{}",
        s.sql
    );
}
