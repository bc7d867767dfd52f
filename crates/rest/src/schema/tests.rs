use super::*;

fn qn(name: &str) -> QualifiedName {
    QualifiedName::new("public", name)
}

fn rels<'a>(cache: &'a SchemaCache, from: &str, to: &str) -> Vec<&'a Relationship> {
    cache
        .relationships
        .iter()
        .filter(|r| r.source == qn(from) && r.target == qn(to))
        .collect()
}

#[test]
fn loads_tables_views_and_columns() {
    let c = fixture::cache();
    let clients = c.table("public", "clients").unwrap();
    assert_eq!(clients.kind, RelationKind::Table);
    assert_eq!(clients.primary_key, vec!["id"]);
    let status = clients.column("status").unwrap();
    assert_eq!(status.pg_type, "public.client_status");
    assert_eq!(status.enum_values.as_deref().map(<[String]>::len), Some(5));
    assert_eq!(clients.column("tags").unwrap().pg_type, "text[]");
    assert!(clients.column("tags").unwrap().is_array());
    assert_eq!(
        clients.column("notes").unwrap().data_type,
        "character varying(200)"
    );
    // Writes cast to the type with its modifier, filters to the type without it.
    let notes = clients.column("notes").unwrap();
    assert_eq!(notes.pg_type, "character varying(200)");
    assert_eq!(notes.filter_type(), "character varying");
    let docs = c.table("public", "documents").unwrap();
    let embedding = docs.column("embedding").unwrap();
    assert_eq!(embedding.pg_type, "extensions.vector(3)");
    assert_eq!(embedding.filter_type(), "extensions.vector");
    assert!(docs.column("fts").unwrap().is_tsvector());
    assert!(docs.column("fts").unwrap().generated);
    let view = c.table("public", "active_clients").unwrap();
    assert_eq!(view.kind, RelationKind::View);
    assert_eq!(view.primary_key, vec!["id"]);
    assert_eq!(
        c.table("public", "active_clients2").unwrap().primary_key,
        vec!["cid"]
    );
    assert!(c.table("private", "secrets").is_none());
    assert!(c.table("public", "nope").is_none());
}

#[test]
fn privileges() {
    let c = fixture::cache();
    let inv = c.table("public", "invoices").unwrap();
    assert!(!inv.privilege("anon").unwrap().select);
    assert!(inv.privilege("authenticated").unwrap().insert);
    let clients = c.table("public", "clients").unwrap();
    assert!(clients.privilege("anon").unwrap().select);
    assert!(!clients.privilege("anon").unwrap().insert);
    let bump = c.functions_named("public", "bump").next().unwrap();
    assert_eq!(bump.executable_by, vec!["authenticated"]);
}

#[test]
fn many_to_one_and_one_to_many() {
    let c = fixture::cache();
    let r = rels(&c, "projects", "clients");
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].cardinality, Cardinality::ManyToOne);
    assert_eq!(r[0].constraint, "projects_org_id_client_id_fkey");
    assert_eq!(
        r[0].columns,
        vec![
            ("org_id".into(), "org_id".into()),
            ("client_id".into(), "id".into())
        ]
    );
    let r = rels(&c, "clients", "projects");
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].cardinality, Cardinality::OneToMany);
    assert!(!r[0].is_to_one());
    assert_eq!(rels(&c, "clients", "invoices").len(), 2);
    assert_eq!(rels(&c, "employees", "employees").len(), 2);
}

#[test]
fn one_to_one() {
    let c = fixture::cache();
    let r = rels(&c, "profiles", "organizations");
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].cardinality, Cardinality::OneToOne);
    let r = rels(&c, "organizations", "profiles");
    assert_eq!(r[0].cardinality, Cardinality::OneToOne);
    assert!(r[0].is_to_one());
}

#[test]
fn many_to_many_through_junction() {
    let c = fixture::cache();
    let r = rels(&c, "projects", "systems");
    assert_eq!(r.len(), 1);
    let Cardinality::ManyToMany {
        junction,
        source_columns,
        target_columns,
        ..
    } = &r[0].cardinality
    else {
        panic!("{r:?}")
    };
    assert_eq!(junction, &qn("project_systems"));
    assert_eq!(
        source_columns,
        &vec![("id".to_string(), "project_id".to_string())]
    );
    assert_eq!(
        target_columns,
        &vec![("system_id".to_string(), "id".to_string())]
    );
    assert!(r[0].matches_hint("project_systems"));
    assert_eq!(rels(&c, "systems", "projects").len(), 1);
}

#[test]
fn views_get_base_table_relationships() {
    let c = fixture::cache();
    let r = rels(&c, "projects", "active_clients");
    assert_eq!(r.len(), 1);
    assert_eq!(
        r[0].columns,
        vec![
            ("org_id".into(), "org_id".into()),
            ("client_id".into(), "id".into())
        ]
    );
    assert_eq!(rels(&c, "active_clients", "projects").len(), 1);
    assert_eq!(rels(&c, "active_clients", "organizations").len(), 1);
    // active_clients2 lacks org_id, so the composite FK cannot be traced.
    assert!(rels(&c, "projects", "active_clients2").is_empty());
    // A view over a private table still relates to exposed tables.
    let r = rels(&c, "private_secrets", "clients");
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].cardinality, Cardinality::ManyToOne);
}

#[test]
fn hints() {
    let c = fixture::cache();
    let r = rels(&c, "invoices", "clients");
    let by_col: Vec<_> = r
        .iter()
        .filter(|r| r.matches_hint("billed_to_id"))
        .collect();
    assert_eq!(by_col.len(), 1);
    let by_name: Vec<_> = r
        .iter()
        .filter(|r| r.matches_hint("invoices_client_id_fkey"))
        .collect();
    assert_eq!(by_name.len(), 1);
    assert!(r.iter().all(|r| !r.matches_hint("nope")));
    assert_eq!(
        by_name[0].describe(),
        "invoices_client_id_fkey using invoices(client_id) and clients(id)"
    );
}

#[test]
fn functions() {
    let c = fixture::cache();
    let m = c
        .functions_named("public", "match_documents")
        .next()
        .unwrap();
    assert!(m.returns_set);
    assert_eq!(m.shape(), ReturnShape::Composite);
    assert_eq!(m.return_relation, Some(qn("documents")));
    assert_eq!(m.volatility, Volatility::Stable);
    let args: Vec<_> = m
        .inputs()
        .map(|a| (a.name.as_str(), a.pg_type.as_str(), a.has_default))
        .collect();
    assert_eq!(
        args,
        vec![
            ("query_embedding", "extensions.vector", false),
            ("match_count", "integer", true),
            ("filter", "jsonb", true)
        ]
    );
    assert_eq!(c.functions_named("public", "add").count(), 2);
    assert_eq!(
        c.functions_named("public", "bump").next().unwrap().shape(),
        ReturnShape::Void
    );
    assert_eq!(
        c.functions_named("public", "ping").next().unwrap().shape(),
        ReturnShape::Scalar
    );
    let stats = c.functions_named("public", "stats").next().unwrap();
    assert_eq!(stats.shape(), ReturnShape::Composite);
    assert_eq!(
        stats
            .output_args()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        vec!["status", "n"]
    );
    assert_eq!(stats.inputs().count(), 1);
    let tagged = c.functions_named("public", "tagged").next().unwrap();
    assert_eq!(tagged.args[0].mode, ArgMode::Variadic);
    let echo = c.functions_named("public", "echo").next().unwrap();
    assert_eq!(echo.args[0].name, "");
}

#[test]
fn from_json_rejects_garbage_and_accepts_empty() {
    assert!(SchemaCache::from_json(serde_json::json!({"tables": 3})).is_err());
    let c = SchemaCache::from_json(serde_json::json!({})).unwrap();
    assert!(c.tables.is_empty());
}

#[test]
fn sql_is_one_parameterised_statement() {
    assert!(SCHEMA_CACHE_SQL.contains("$1::text[]"));
    assert!(!SCHEMA_CACHE_SQL.contains("$2"));
    assert!(!SCHEMA_CACHE_SQL.trim_end().ends_with(';'));
}

/// Runs one request through parse → plan → render against `cache`.
fn render_with(
    cache: &SchemaCache,
    method: http::Method,
    path: &str,
    query: &str,
    body: &str,
) -> crate::render::Statement {
    let config = crate::RestConfig::default();
    let headers = http::HeaderMap::new();
    let parts = crate::parse::RequestParts {
        method: &method,
        path,
        query,
        headers: &headers,
        body: body.as_bytes(),
    };
    let api = crate::parse::parse_request(parts, &config).expect("parse");
    let plan = crate::plan::plan(&api, cache, &config).expect("plan");
    crate::render::render(&plan)
}

/// A domain over char(3), as `SCHEMA_CACHE_SQL` describes it: written values cast to the
/// domain (whose modifier refuses 'GBPX'), filter values and RPC arguments to its base type
/// (`cast_type`), because an explicit cast to the domain truncates 'GBPX' to 'GBP'.
#[test]
fn domains_are_written_as_themselves_but_filtered_and_called_as_their_base_type() {
    use http::Method;
    let cur = |cast: &str| {
        serde_json::json!({"name": "cur", "type": "public.currency_code", "cast_type": cast,
            "data_type": "public.currency_code", "base_type": "bpchar", "category": "S",
            "nullable": true, "position": 2})
    };
    let cache = SchemaCache::from_json(serde_json::json!({
        "tables": [{"schema": "public", "name": "deals", "kind": "table",
            "insertable": true, "updatable": true, "deletable": true,
            "columns": [
                {"name": "id", "type": "integer", "cast_type": "integer", "data_type": "integer",
                 "base_type": "int4", "category": "N", "nullable": false, "position": 1},
                cur("bpchar")]}],
        "keys": [{"schema": "public", "name": "deals", "primary": true, "columns": ["id"]}],
        "functions": [{"schema": "public", "name": "fx", "return_type": "text",
            "return_base_type": "text", "returns_set": false, "return_relation": null,
            "volatility": "stable", "executable_by": ["anon"],
            "args": [{"name": "cur", "type": "public.currency_code", "cast_type": "bpchar",
                      "base_type": "bpchar", "category": "S", "mode": "i", "has_default": false}]}]
    }))
    .unwrap();

    let s = render_with(&cache, Method::GET, "/deals", "cur=eq.GBPX", "");
    assert!(s.sql.contains("\"cur\" = $1::bpchar"), "{}", s.sql);
    let s = render_with(&cache, Method::GET, "/deals", "cur=in.(GBP,USD)", "");
    assert!(s.sql.contains("= ANY($1::bpchar[])"), "{}", s.sql);
    let s = render_with(
        &cache,
        Method::POST,
        "/deals",
        "",
        r#"{"id": 1, "cur": "GBP"}"#,
    );
    assert!(s.sql.contains("\"cur\" public.currency_code"), "{}", s.sql);
    let s = render_with(
        &cache,
        Method::PATCH,
        "/deals",
        "id=eq.1",
        r#"{"cur": "GBP"}"#,
    );
    assert!(s.sql.contains("\"cur\" public.currency_code"), "{}", s.sql);
    let s = render_with(&cache, Method::POST, "/rpc/fx", "", r#"{"cur": "GBPX"}"#);
    assert!(s.sql.contains("\"cur\" := $1::bpchar"), "{}", s.sql);
    let s = render_with(&cache, Method::GET, "/rpc/fx", "cur=GBPX", "");
    assert!(s.sql.contains("\"cur\" := $1::bpchar"), "{}", s.sql);

    // A cache without `cast_type` (older output) casts to the declared type, as before.
    let f = &cache.functions[0].args[0];
    assert_eq!(f.call_type(), "bpchar");
    let mut old = f.clone();
    old.cast_type.clear();
    assert_eq!(old.call_type(), "public.currency_code");
}
