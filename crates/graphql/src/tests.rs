//! Pure tests of reflection, naming and compilation on a small catalog (the HTTP behaviour is
//! tested on the real schema in crates/testkit/tests/it/graphql.rs).
use agencyflow_rest::SchemaCache;
use serde_json::{json, Value};

use crate::{plan, reflect, GraphqlRequest, Step};

fn col(name: &str, ty: &str, base: &str, cat: &str, nullable: bool, pos: i32) -> Value {
    json!({"name": name, "type": ty, "data_type": ty, "base_type": base, "category": cat,
           "nullable": nullable, "default": null, "position": pos})
}

fn privs(select_anon: bool) -> Value {
    json!([
        {"role": "anon", "select": select_anon, "insert": false, "update": false, "delete": false},
        {"role": "authenticated", "select": true, "insert": true, "update": true, "delete": true}
    ])
}

fn cache(schema_comment: Option<&str>) -> SchemaCache {
    SchemaCache::from_json(json!({
        "schemas": [{"name": "public", "comment": schema_comment}],
        "tables": [
            {"schema": "public", "name": "blog_post", "kind": "table", "insertable": true,
             "updatable": true, "deletable": true, "privileges": privs(false),
             "comment": "Posts.\n@graphql({\"totalCount\": {\"enabled\": true}})",
             "columns": [col("id", "bigint", "int8", "N", false, 1), col("author_id", "uuid", "uuid", "U", false, 2),
                         col("title", "text", "text", "S", false, 3), col("tags", "text[]", "_text", "A", true, 4),
                         col("meta", "jsonb", "jsonb", "U", true, 5)]},
            {"schema": "public", "name": "author", "kind": "table", "insertable": true,
             "updatable": true, "deletable": true, "privileges": privs(true),
             "columns": [col("id", "uuid", "uuid", "U", false, 1), col("name", "text", "text", "S", false, 2)]},
            {"schema": "public", "name": "no_pk", "kind": "view", "insertable": false,
             "updatable": false, "deletable": false, "privileges": privs(true),
             "columns": [col("x", "integer", "int4", "N", true, 1)]}
        ],
        "keys": [
            {"schema": "public", "name": "blog_post", "primary": true, "columns": ["id"]},
            {"schema": "public", "name": "author", "primary": true, "columns": ["id"]}
        ],
        "foreign_keys": [
            {"name": "blog_post_author_id_fkey", "schema": "public", "table": "blog_post", "columns": ["author_id"],
             "ref_schema": "public", "ref_table": "author", "ref_columns": ["id"]}
        ]
    }))
    .expect("cache")
}

fn sql_of(schema: &reflect::Schema, query: &str) -> (String, Vec<Option<String>>) {
    let p = plan(
        schema,
        &GraphqlRequest {
            query: Some(query.into()),
            ..GraphqlRequest::default()
        },
    )
    .unwrap_or_else(|e| panic!("{query}: {e}"));
    match &p.steps[0].1 {
        Step::Sql(s) => (s.sql.clone(), s.params.clone()),
        Step::Value(v) => panic!("no SQL: {v}"),
    }
}

fn err_of(schema: &reflect::Schema, query: &str) -> String {
    plan(
        schema,
        &GraphqlRequest {
            query: Some(query.into()),
            ..GraphqlRequest::default()
        },
    )
    .expect_err(query)
    .message
}

#[test]
fn naming_follows_pg_graphql_with_and_without_inflection() {
    let plain = reflect::reflect(&cache(None), "authenticated");
    let e = plain
        .entity_by_collection("blog_postCollection")
        .expect("blog_post");
    assert_eq!(e.type_name, "blog_post");
    assert_eq!(e.field("author_id").unwrap().name, "author_id");
    // author_id does not end in "Id": the relation takes the referenced type's name.
    assert!(e.relation("author").is_some());
    assert!(plain
        .entity_by_type("author")
        .unwrap()
        .relation("blog_postCollection")
        .is_some());
    assert!(e.total_count);
    assert_eq!(e.description.as_deref(), Some("Posts."));
    // A view without a primary key directive is not reflected.
    assert!(plain.entity_by_table("public", "no_pk").is_none());
    assert!(!plain.introspection);

    let inflected = reflect::reflect(
        &cache(Some(
            r#"@graphql({"inflect_names": true, "introspection": true})"#,
        )),
        "authenticated",
    );
    let e = inflected
        .entity_by_collection("blogPostCollection")
        .expect("BlogPost");
    assert_eq!(e.type_name, "BlogPost");
    assert!(e.field("authorId").is_some());
    assert!(e.relation("author").is_some());
    assert!(inflected
        .entity_by_type("Author")
        .unwrap()
        .relation("blogPostCollection")
        .is_some());
    assert!(inflected.introspection);
    // Per role: anon may not select blog_post.
    let anon = reflect::reflect(&cache(None), "anon");
    assert!(anon.entity_by_collection("blog_postCollection").is_none());
    assert!(anon.entity_by_collection("authorCollection").is_some());
}

#[test]
fn values_are_bound_and_identifiers_come_from_the_catalog() {
    let s = reflect::reflect(&cache(None), "authenticated");
    let evil = "x'); drop table author; --";
    let (sql, params) = sql_of(
        &s,
        &format!(
            r#"{{ blog_postCollection(filter: {{title: {{eq: "{evil}"}}, tags: {{contains: ["a\"b"]}}}}) {{ edges {{ node {{ id meta author {{ name }} }} }} }} }}"#
        ),
    );
    assert!(!sql.contains("drop table"), "{sql}");
    assert!(params.contains(&Some(evil.to_string())), "{params:?}");
    assert!(
        params.contains(&Some(r#"{"a\"b"}"#.to_string())),
        "{params:?}"
    );
    // bigint and jsonb render as text, as pg_graphql's BigInt and JSON strings
    assert!(sql.contains("(b2.\"id\")::text"), "{sql}");
    assert!(sql.contains("(b2.\"meta\")::text"), "{sql}");
    // A name that is no GraphQL name cannot even be written as a filter key.
    assert!(!err_of(
        &s,
        r#"{ blog_postCollection(filter: {"title\"; drop": {eq: 1}}) { edges { cursor } } }"#
    )
    .is_empty());
    assert_eq!(
        err_of(&s, "{ blog_postCollection { edges { node { nope } } } }"),
        "Unknown field \"nope\" on type blog_post"
    );
    assert_eq!(
        err_of(
            &s,
            "{ blog_postCollection(filter: {title: {contains: [\"a\"]}}) { edges { cursor } } }"
        ),
        "Unknown operator \"contains\" for StringFilter"
    );
    assert_eq!(
        err_of(
            &s,
            "{ blog_postCollection(filter: {meta: {eq: \"{}\"}}) { edges { cursor } } }"
        ),
        "Unknown field \"meta\" on type blog_postFilter"
    );
}

#[test]
fn depth_and_fragment_cycles_are_refused() {
    let s = reflect::reflect(&cache(None), "authenticated");
    let mut q = String::from("{ authorCollection { edges { node { ");
    for _ in 0..10 {
        q.push_str("blog_postCollection { edges { node { author { ");
    }
    q.push_str("name");
    for _ in 0..10 {
        q.push_str(" } } } }");
    }
    q.push_str(" } } } }");
    assert!(err_of(&s, &q).contains("nested too deeply"));
    let cyc = "{ authorCollection { ...A } } fragment A on authorConnection { ...B } fragment B on authorConnection { ...A }";
    assert!(err_of(&s, cyc).contains("within itself"));
    assert_eq!(
        err_of(&s, "subscription { authorCollection { __typename } }"),
        "Subscriptions are not supported"
    );
}

#[test]
fn at_most_travels_with_update_and_delete() {
    let s = reflect::reflect(&cache(None), "authenticated");
    let p = plan(
        &s,
        &GraphqlRequest {
            query: Some(r#"mutation { u: updateauthorCollection(set: {name: "n"}, atMost: 3) { affectedCount } d: deleteFromauthorCollection { affectedCount } }"#.into()),
            ..GraphqlRequest::default()
        },
    )
    .unwrap();
    assert!(!p.read_only);
    let at: Vec<_> = p
        .steps
        .iter()
        .map(|(_, s)| match s {
            Step::Sql(st) => st.at_most,
            Step::Value(_) => None,
        })
        .collect();
    assert_eq!(
        at,
        [
            Some((3, "update impacts too many records")),
            Some((1, "delete impacts too many records"))
        ]
    );
}

fn func(name: &str, arg_rel: &str, ret: Value, set: bool, base: &str) -> Value {
    json!({"schema": "public", "name": name,
           "args": [{"name": "rec", "type": format!("public.{arg_rel}"), "base_type": arg_rel,
                     "category": "C", "mode": "i", "has_default": false}],
           "return_type": base, "return_base_type": base, "returns_set": set,
           "return_relation": ret, "volatility": "stable", "return_category": "S",
           "executable_by": ["authenticated"],
           "arg_relation": {"schema": "public", "name": arg_rel}})
}

/// A catalog with computed fields, an enum with `mappings` and a foreign key renamed by its
/// constraint's comment.
fn cache_extended() -> SchemaCache {
    let mut c = serde_json::to_value(json!({})).unwrap();
    let base = cache(None);
    let mut tables: Vec<Value> = base
        .tables
        .iter()
        .map(|t| serde_json::to_value(t).unwrap())
        .collect();
    // blog_post.status: an enum whose labels are renamed
    tables[0]["columns"].as_array_mut().unwrap().push(json!({
        "name": "status", "type": "public.post_status", "data_type": "post_status",
        "base_type": "post_status", "category": "E", "nullable": true, "default": null,
        "position": 6, "enum": ["in-progress", "done"],
        "enum_comment": "@graphql({\"name\": \"PostStatus\", \"mappings\": {\"in-progress\": \"IN_PROGRESS\"}})"}));
    let mut out_fn = func("post_pair", "blog_post", Value::Null, false, "record");
    out_fn["args"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "a", "type": "integer", "base_type": "int4", "category": "N", "mode": "o", "has_default": false}));
    c["schemas"] = json!([{"name": "public"}]);
    c["tables"] = Value::Array(tables);
    c["keys"] = json!([
        {"schema": "public", "name": "blog_post", "primary": true, "columns": ["id"]},
        {"schema": "public", "name": "author", "primary": true, "columns": ["id"]}
    ]);
    c["foreign_keys"] = json!([
        {"name": "blog_post_author_id_fkey", "schema": "public", "table": "blog_post", "columns": ["author_id"],
         "ref_schema": "public", "ref_table": "author", "ref_columns": ["id"],
         "comment": "@graphql({\"foreign_name\": \"writer\", \"local_name\": \"posts\"})"}
    ]);
    c["functions"] = json!([
        func("_title_upper", "blog_post", Value::Null, false, "text"),
        func(
            "author_posts",
            "author",
            json!({"schema": "public", "name": "blog_post"}),
            true,
            "blog_post"
        ),
        out_fn,
    ]);
    SchemaCache::from_json(c).expect("cache")
}

#[test]
fn computed_fields_enum_mappings_and_constraint_names() {
    let s = reflect::reflect(&cache_extended(), "authenticated");
    let post = s.entity_by_type("blog_post").unwrap();
    assert!(post.relation("writer").is_some(), "{:?}", post.relations);
    assert!(s
        .entity_by_type("author")
        .unwrap()
        .relation("posts")
        .is_some());
    // `_title_upper` → `title_upper`; the OUT-parameter (record) function is left out.
    assert!(post.computed_field("title_upper").is_some());
    assert!(post.computed_field("post_pair").is_none());
    assert!(s.function("post_pair", false).is_none());
    let (sql, _) = sql_of(
        &s,
        "{ blog_postCollection { edges { node { title_upper writer { author_posts(first: 2) { totalCount edges { node { id } } } } } } } }",
    );
    assert!(
        sql.contains(r#""public"."_title_upper"(ROW(b2."id", b2."author_id", b2."title", b2."tags", b2."meta", b2."status")::"public"."blog_post")"#),
        "{sql}"
    );
    assert!(
        sql.contains(r#"FROM "public"."author_posts"(ROW("#),
        "{sql}"
    );
    // The enum is named by its directive and its values mapped both ways.
    let en = s.enum_def("PostStatus").expect("PostStatus");
    assert_eq!(en.values, ["IN_PROGRESS", "done"]);
    let (sql, params) = sql_of(
        &s,
        "{ blog_postCollection(filter: {status: {in: [IN_PROGRESS, done]}}) { edges { node { status } } } }",
    );
    assert!(
        sql.contains(r#"CASE WHEN b2."status" = 'in-progress' THEN 'IN_PROGRESS' ELSE (b2."status")::text END"#),
        "{sql}"
    );
    assert!(params.contains(&Some("in-progress".into())), "{params:?}");
    assert!(params.contains(&Some("done".into())), "{params:?}");
    assert_eq!(
        err_of(
            &s,
            r#"{ blog_postCollection(filter: {status: {eq: "in-progress"}}) { edges { cursor } } }"#
        ),
        "Invalid input for PostStatus type"
    );
}

#[test]
fn overloaded_functions_are_left_out_as_pg_graphql_does() {
    let scalar_fn = |name: &str, arg_type: &str, base: &str| {
        json!({"schema": "public", "name": name,
               "args": [{"name": "x", "type": arg_type, "base_type": base, "category": "N",
                         "mode": "i", "has_default": false}],
               "return_type": "integer", "return_base_type": "int4", "returns_set": false,
               "return_relation": null, "volatility": "stable", "return_category": "N",
               "executable_by": ["authenticated"]})
    };
    let c = SchemaCache::from_json(json!({
        "schemas": [{"name": "public"}],
        "functions": [scalar_fn("twice", "integer", "int4"), scalar_fn("twice", "bigint", "int8"),
                      scalar_fn("once", "integer", "int4")]
    }))
    .expect("cache");
    let s = reflect::reflect(&c, "authenticated");
    assert!(s.function("once", false).is_some());
    assert!(s.function("twice", false).is_none());
    assert_eq!(
        err_of(&s, "{ twice(x: 1) }"),
        "Unknown field \"twice\" on type Query"
    );
}

/// pg_graphql 1.6: only the types of schemas whose comment enables introspection are listed;
/// the others still answer queries, and an unlisted type is as null as an unknown one.
#[test]
fn introspection_lists_only_the_schemas_that_enable_it() {
    let mut c = serde_json::to_value(json!({})).unwrap();
    let base = cache(None);
    let mut tables: Vec<Value> = base
        .tables
        .iter()
        .map(|t| serde_json::to_value(t).unwrap())
        .collect();
    // author moves to a schema without the directive
    tables[1]["schema"] = json!("priv");
    c["schemas"] = json!([{"name": "public", "comment": "@graphql({\"introspection\": true})"},
                          {"name": "priv", "comment": "@graphql({\"introspection\": false})"}]);
    c["tables"] = Value::Array(tables);
    c["keys"] = json!([
        {"schema": "public", "name": "blog_post", "primary": true, "columns": ["id"]},
        {"schema": "priv", "name": "author", "primary": true, "columns": ["id"]}
    ]);
    c["foreign_keys"] = json!([
        {"name": "fk", "schema": "public", "table": "blog_post", "columns": ["author_id"],
         "ref_schema": "priv", "ref_table": "author", "ref_columns": ["id"]}
    ]);
    let s = reflect::reflect(&SchemaCache::from_json(c).expect("cache"), "authenticated");
    let value = |q: &str| -> Value {
        let p = plan(
            &s,
            &GraphqlRequest {
                query: Some(q.into()),
                ..GraphqlRequest::default()
            },
        )
        .unwrap_or_else(|e| panic!("{q}: {e}"));
        match &p.steps[0].1 {
            Step::Value(v) => v.clone(),
            Step::Sql(_) => panic!("SQL for {q}"),
        }
    };
    assert_eq!(value(r#"{ __type(name: "author") { name } }"#), Value::Null);
    assert_eq!(
        value(r#"{ __type(name: "blog_post") { name } }"#)["name"],
        "blog_post"
    );
    let fields = value(r#"{ __type(name: "blog_post") { fields { name } } }"#);
    let names: Vec<&str> = fields["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"title") && !names.contains(&"author"),
        "{names:?}"
    );
    let q = value(r#"{ __schema { queryType { fields { name } } } }"#);
    let qn: Vec<&str> = q["queryType"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(
        qn.contains(&"blog_postCollection") && !qn.contains(&"authorCollection"),
        "{qn:?}"
    );
    // The hidden schema still answers queries.
    sql_of(&s, "{ authorCollection { edges { node { name } } } }");
}
