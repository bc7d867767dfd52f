//! `/graphql/v1` over HTTP on the real schema (the REST fixture's two tenants): pg_graphql's
//! naming and per-role reflection, collections with filters, ordering and cursors, RLS seen
//! through GraphQL (a member of org A never reaches org B's rows, not by a collection, not by
//! following relationships from a shared catalogue row, not by nodeId), relationships, node,
//! totalCount/aggregate, fragments/variables/directives, mutations with atMost, introspection,
//! and the error shape.
use serde_json::{json, Value};

use crate::rest::{fixture, Fx};

/// POSTs a GraphQL request (`token` None = anon) and returns (status, body).
async fn gql(fx: &Fx, token: Option<&str>, query: &str, variables: Value) -> (u16, Value) {
    let mut rb = fx
        .app
        .http
        .post(fx.app.url("/graphql/v1"))
        .header("apikey", &fx.app.anon_key)
        .header("Content-Type", "application/json");
    if let Some(t) = token {
        rb = rb.header("Authorization", format!("Bearer {t}"));
    }
    let r = rb
        .body(json!({"query": query, "variables": variables}).to_string())
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, v)
}

/// The `data` of a successful response.
async fn data(fx: &Fx, token: Option<&str>, query: &str, variables: Value) -> Value {
    let (status, v) = gql(fx, token, query, variables).await;
    assert_eq!(status, 200, "{v}");
    assert!(v.get("errors").is_none(), "unexpected errors: {v}");
    v["data"].clone()
}

/// The one error message of a failed response (and `data` is null).
async fn error(fx: &Fx, token: Option<&str>, query: &str, variables: Value) -> String {
    let (status, v) = gql(fx, token, query, variables).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"], Value::Null, "{v}");
    let errors = v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors: {v}"));
    assert_eq!(errors.len(), 1, "{v}");
    errors[0]["message"].as_str().expect("message").to_string()
}

fn names(conn: &Value) -> Vec<String> {
    conn["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("no edges: {conn}"))
        .iter()
        .map(|e| e["node"]["name"].as_str().expect("name").to_string())
        .collect()
}

#[tokio::test]
async fn graphql_collections_filter_order_and_paginate_with_cursors() {
    let fx = fixture().await;
    let a = Some(fx.alice.as_str());
    let d = data(
        &fx,
        a,
        r#"{ clientsCollection(orderBy: [{name: DescNullsLast}]) {
               edges { cursor node { name health_score value_cents next_action_date } } } }"#,
        json!({}),
    )
    .await;
    assert_eq!(names(&d["clientsCollection"]), ["Gamma", "Beta Co", "Acme"]);
    let acme = &d["clientsCollection"]["edges"][2]["node"];
    // int4 as a number, bigint as a string, date as ISO text: pg_graphql's rendering.
    assert_eq!(acme["health_score"], 80);
    assert_eq!(acme["value_cents"], "1000");
    assert_eq!(acme["next_action_date"], "2026-03-01");

    // Filters: eq/in/ilike/startsWith/is/gte, and/or/not.
    let q = r#"query($f: clientsFilter) { clientsCollection(filter: $f, orderBy: [{name: AscNullsLast}]) { edges { node { name } } } }"#;
    for (filter, want) in [
        (json!({"status": {"eq": "client"}}), vec!["Acme"]),
        (
            json!({"name": {"in": ["Gamma", "Acme", "Bravo Secret"]}}),
            vec!["Acme", "Gamma"],
        ),
        (json!({"name": {"ilike": "%co%"}}), vec!["Beta Co"]),
        (json!({"name": {"startsWith": "Ga"}}), vec!["Gamma"]),
        (json!({"notes": {"is": "NULL"}}), vec!["Acme"]),
        (json!({"health_score": {"gte": 60}}), vec!["Acme", "Gamma"]),
        (json!({"name": {"regex": "^[AB]"}}), vec!["Acme", "Beta Co"]),
        (
            json!({"or": [{"status": {"eq": "lead"}}, {"health_score": {"lt": 50}}]}),
            vec!["Beta Co", "Gamma"],
        ),
        (
            json!({"not": {"status": {"eq": "client"}}}),
            vec!["Beta Co", "Gamma"],
        ),
        (
            json!({"and": [{"health_score": {"gt": 30}}, {"health_score": {"lt": 70}}]}),
            vec!["Beta Co", "Gamma"],
        ),
        (
            json!({"and": [], "or": [], "not": {}}),
            vec!["Acme", "Beta Co", "Gamma"],
        ),
    ] {
        let d = data(&fx, a, q, json!({"f": filter.clone()})).await;
        assert_eq!(names(&d["clientsCollection"]), want, "filter {filter}");
    }
    // Array filters on crm_contacts.tags.
    let d = data(
        &fx,
        a,
        r#"{ c: crm_contactsCollection(filter: {tags: {contains: ["vip"]}}) { edges { node { first_name tags } } }
             o: crm_contactsCollection(filter: {tags: {overlaps: ["us", "xx"]}}) { edges { node { first_name } } } }"#,
        json!({}),
    )
    .await;
    assert_eq!(d["c"]["edges"].as_array().unwrap().len(), 1, "{d}");
    assert_eq!(d["c"]["edges"][0]["node"]["first_name"], "Ann");
    assert_eq!(d["c"]["edges"][0]["node"]["tags"], json!(["vip", "eu"]));
    assert_eq!(d["o"]["edges"][0]["node"]["first_name"], "Ben");

    // Forward pages of 2 with after, then backwards with last/before.
    let page = r#"query($after: Cursor, $before: Cursor, $first: Int, $last: Int) {
        clientsCollection(first: $first, last: $last, after: $after, before: $before, orderBy: [{name: AscNullsLast}]) {
          pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
          edges { cursor node { name } } } }"#;
    let p1 = data(&fx, a, page, json!({"first": 2})).await["clientsCollection"].clone();
    assert_eq!(names(&p1), ["Acme", "Beta Co"]);
    assert_eq!(p1["pageInfo"]["hasNextPage"], true);
    assert_eq!(p1["pageInfo"]["hasPreviousPage"], false);
    assert_eq!(p1["pageInfo"]["endCursor"], p1["edges"][1]["cursor"]);
    assert_eq!(p1["pageInfo"]["startCursor"], p1["edges"][0]["cursor"]);
    let p2 = data(
        &fx,
        a,
        page,
        json!({"first": 2, "after": p1["pageInfo"]["endCursor"]}),
    )
    .await["clientsCollection"]
        .clone();
    assert_eq!(names(&p2), ["Gamma"]);
    assert_eq!(p2["pageInfo"]["hasNextPage"], false);
    assert_eq!(p2["pageInfo"]["hasPreviousPage"], true);
    let back = data(
        &fx,
        a,
        page,
        json!({"last": 1, "before": p2["edges"][0]["cursor"]}),
    )
    .await["clientsCollection"]
        .clone();
    assert_eq!(names(&back), ["Beta Co"]);
    assert_eq!(back["pageInfo"]["hasPreviousPage"], true);
    let last2 = data(&fx, a, page, json!({"last": 2})).await["clientsCollection"].clone();
    assert_eq!(names(&last2), ["Beta Co", "Gamma"]);
    // offset (pg_graphql 1.5)
    let d = data(
        &fx,
        a,
        r#"{ clientsCollection(first: 1, offset: 1, orderBy: [{name: AscNullsLast}]) { edges { node { name } } } }"#,
        json!({}),
    )
    .await;
    assert_eq!(names(&d["clientsCollection"]), ["Beta Co"]);
    // A cursor is base64 JSON of the ordering values then the primary key.
    let cursor = p1["edges"][0]["cursor"].as_str().unwrap();
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(cursor)
        .unwrap();
    let decoded: Value = serde_json::from_slice(&decoded).unwrap();
    assert_eq!(decoded[0], "Acme", "{decoded}");
}

#[tokio::test]
async fn graphql_rls_member_of_org_a_never_reaches_org_b() {
    let fx = fixture().await;
    let a = Some(fx.alice.as_str());
    let b = Some(fx.bob.as_str());
    let d = data(
        &fx,
        a,
        "{ clientsCollection { edges { node { name org_id } } } }",
        json!({}),
    )
    .await;
    let mut got = names(&d["clientsCollection"]);
    got.sort();
    assert_eq!(got, ["Acme", "Beta Co", "Gamma"]);
    for e in d["clientsCollection"]["edges"].as_array().unwrap() {
        assert_eq!(e["node"]["org_id"], fx.org_a.to_string());
    }
    // From the shared catalogue row `lead-generation` (selected by a project in each org),
    // following project_systems to projects shows alice only her org's project.
    let follow = r#"{ systemsCollection(filter: {id: {eq: "lead-generation"}}) { edges { node {
        id name
        project_systemsCollection { edges { node { is_selected projects { name clients { name } } } } }
      } } } }"#;
    let d = data(&fx, a, follow, json!({})).await;
    let sys = &d["systemsCollection"]["edges"][0]["node"];
    let links = sys["project_systemsCollection"]["edges"]
        .as_array()
        .unwrap();
    assert_eq!(links.len(), 1, "{d}");
    assert_eq!(links[0]["node"]["projects"]["name"], "Acme Site");
    assert_eq!(links[0]["node"]["projects"]["clients"]["name"], "Acme");
    let d = data(&fx, b, follow, json!({})).await;
    let links =
        d["systemsCollection"]["edges"][0]["node"]["project_systemsCollection"]["edges"].clone();
    assert_eq!(links.as_array().unwrap().len(), 1, "{d}");
    assert_eq!(links[0]["node"]["projects"]["name"], "B Project");

    // Bob's client's nodeId, asked for by alice: null; by bob: the record.
    let d = data(
        &fx,
        b,
        "{ clientsCollection { edges { node { nodeId name } } } }",
        json!({}),
    )
    .await;
    let bravo_id = d["clientsCollection"]["edges"][0]["node"]["nodeId"].clone();
    assert_eq!(
        d["clientsCollection"]["edges"][0]["node"]["name"],
        "Bravo Secret"
    );
    let node_q =
        r#"query($id: ID!) { node(nodeId: $id) { nodeId ... on clients { name notes } } }"#;
    let d = data(&fx, a, node_q, json!({"id": bravo_id})).await;
    assert_eq!(d["node"], Value::Null);
    let d = data(&fx, b, node_q, json!({"id": bravo_id})).await;
    assert_eq!(d["node"]["name"], "Bravo Secret");
    assert_eq!(d["node"]["nodeId"], bravo_id);
    // A filter by nodeId cannot reach it either.
    let d = data(
        &fx,
        a,
        r#"query($id: ID!) { clientsCollection(filter: {nodeId: {eq: $id}}) { edges { node { name } } } }"#,
        json!({"id": bravo_id}),
    )
    .await;
    assert_eq!(names(&d["clientsCollection"]), Vec::<String>::new());
    // Anonymous: the tenant tables are not in anon's schema at all; the catalogue is.
    let msg = error(
        &fx,
        None,
        "{ clientsCollection { edges { node { name } } } }",
        json!({}),
    )
    .await;
    assert_eq!(msg, "Unknown field \"clientsCollection\" on type Query");
    let d = data(
        &fx,
        None,
        "{ systemsCollection(first: 100) { edges { node { id } } } }",
        json!({}),
    )
    .await;
    assert!(
        !d["systemsCollection"]["edges"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{d}"
    );
}

#[tokio::test]
async fn graphql_errors_have_pg_graphqls_shape() {
    let fx = fixture().await;
    let a = Some(fx.alice.as_str());
    let msg = error(
        &fx,
        a,
        "{ clientsCollection { edges { node { nope } } } }",
        json!({}),
    )
    .await;
    assert_eq!(msg, "Unknown field \"nope\" on type clients");
    let (_, v) = gql(&fx, a, "{ clientsCollection { ", json!({})).await;
    assert_eq!(v["data"], Value::Null);
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("parse error"),
        "{v}"
    );
    let msg = error(
        &fx,
        a,
        "{ clientsCollection(first: 1, last: 1) { edges { cursor } } }",
        json!({}),
    )
    .await;
    assert_eq!(msg, "only one of \"first\" and \"last\" may be provided");
    let msg = error(
        &fx,
        a,
        "{ clientsCollection(after: \"!!\") { edges { cursor } } }",
        json!({}),
    )
    .await;
    assert_eq!(msg, "Invalid cursor");
    let msg = error(
        &fx,
        a,
        "query($id: ID!) { node(nodeId: $id) { nodeId } }",
        json!({}),
    )
    .await;
    assert!(msg.contains("$id"), "{msg}");
    // A bad token is PostgREST's 401, as /rest/v1 answers it.
    let r = fx
        .app
        .http
        .post(fx.app.url("/graphql/v1"))
        .header("apikey", &fx.app.anon_key)
        .header("Authorization", "Bearer not-a-jwt")
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Without an API key: the gateway's 401.
    let r = fx
        .app
        .http
        .post(fx.app.url("/graphql/v1"))
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // GET with query and variables in the URL.
    let r = fx
        .app
        .http
        .get(fx.app.url("/graphql/v1"))
        .query(&[
            ("query", "query($n: String) { clientsCollection(filter: {name: {eq: $n}}) { edges { node { name } } } }"),
            ("variables", r#"{"n": "Gamma"}"#),
        ])
        .header("apikey", &fx.app.anon_key)
        .header("Authorization", format!("Bearer {}", fx.alice))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(names(&v["data"]["clientsCollection"]), ["Gamma"]);
}

#[tokio::test]
async fn graphql_relationships_node_counts_fragments_variables_and_directives() {
    let fx = fixture().await;
    let a = Some(fx.alice.as_str());
    let q = r#"
      query Clients($withProjects: Boolean!, $skipCount: Boolean = false, $status: String) {
        __typename
        all: clientsCollection(filter: {status: {eq: $status}}) {
          totalCount @skip(if: $skipCount)
          aggregate { count sum { health_score value_cents } avg { health_score } max { name } min { next_action_date } }
        }
        acme: clientsCollection(filter: {name: {eq: "Acme"}}) {
          __typename
          edges { node {
            ...ClientBits
            projectsCollection(orderBy: [{name: AscNullsLast}]) @include(if: $withProjects) {
              totalCount
              edges { node { name progress clients { name } } }
            }
          } }
        }
      }
      fragment ClientBits on clients { __typename nodeId name ... on clients { status } }
    "#;
    let d = data(&fx, a, q, json!({"withProjects": true})).await;
    assert_eq!(d["__typename"], "Query");
    assert_eq!(
        d["all"]["totalCount"], 3,
        "RLS decides what is counted: {d}"
    );
    let agg = &d["all"]["aggregate"];
    assert_eq!(agg["count"], 3);
    // Aggregates are JSON numbers in pg_graphql, bigint included; avg a double.
    assert_eq!(agg["sum"]["health_score"], 180);
    assert_eq!(agg["sum"]["value_cents"], 6000);
    assert_eq!(agg["avg"]["health_score"].as_f64(), Some(60.0), "{agg}");
    assert_eq!(agg["max"]["name"], "Gamma");
    assert_eq!(agg["min"]["next_action_date"], "2026-01-15");
    let acme = &d["acme"]["edges"][0]["node"];
    assert_eq!(d["acme"]["__typename"], "clientsConnection");
    assert_eq!(acme["__typename"], "clients");
    assert_eq!(acme["status"], "client");
    assert_eq!(acme["projectsCollection"]["totalCount"], 2);
    let projects: Vec<&str> = acme["projectsCollection"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(projects, ["Acme App", "Acme Site"]);
    // many-to-one back to the client, as an object
    assert_eq!(
        acme["projectsCollection"]["edges"][1]["node"]["clients"]["name"],
        "Acme"
    );
    // @include false and @skip true drop the fields; a variable filter narrows the set.
    let d = data(
        &fx,
        a,
        q,
        json!({"withProjects": false, "skipCount": true, "status": "lead"}),
    )
    .await;
    assert!(
        d["acme"]["edges"][0]["node"]
            .get("projectsCollection")
            .is_none(),
        "{d}"
    );
    assert!(d["all"].get("totalCount").is_none(), "{d}");
    assert_eq!(d["all"]["aggregate"]["count"], 1);
    // node(nodeId:) with a fragment on the record's type (and one on another type, ignored).
    let id = acme["nodeId"].clone();
    let d = data(
        &fx,
        a,
        r#"query($id: ID!) { node(nodeId: $id) { __typename nodeId ... on clients { name projectsCollection(first: 1) { edges { node { name } } } } ... on projects { progress } } }"#,
        json!({"id": id}),
    )
    .await;
    assert_eq!(d["node"]["__typename"], "clients");
    assert_eq!(d["node"]["name"], "Acme");
    assert!(d["node"].get("progress").is_none(), "{d}");
    assert_eq!(
        d["node"]["projectsCollection"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The nodeId is base64 of ["public", "clients", <id>].
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(id.as_str().unwrap())
        .unwrap();
    let parts: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(parts[0], "public");
    assert_eq!(parts[1], "clients");
    // operationName picks one of several operations.
    let (_, v) = {
        let r = fx
            .app
            .http
            .post(fx.app.url("/graphql/v1"))
            .header("apikey", &fx.app.anon_key)
            .header("Authorization", format!("Bearer {}", fx.alice))
            .json(&json!({
                "query": "query A { clientsCollection(first: 1, orderBy: [{name: AscNullsLast}]) { edges { node { name } } } } query B { __typename }",
                "operationName": "A"
            }))
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(names(&v["data"]["clientsCollection"]), ["Acme"]);
}

#[tokio::test]
async fn graphql_mutations_insert_update_delete_with_at_most() {
    let fx = fixture().await;
    let a = Some(fx.alice.as_str());
    let d = data(
        &fx,
        a,
        r#"mutation($org: UUID!) {
             insertIntoclientsCollection(objects: [{org_id: $org, name: "Delta", health_score: 10}, {org_id: $org, name: "Echo", status: "prospect"}]) {
               affectedCount records { name status health_score __typename }
             } }"#,
        json!({"org": fx.org_a}),
    )
    .await;
    let ins = &d["insertIntoclientsCollection"];
    assert_eq!(ins["affectedCount"], 2);
    assert_eq!(ins["records"][0]["name"], "Delta");
    assert_eq!(
        ins["records"][0]["status"], "lead",
        "the default applies: {ins}"
    );
    assert_eq!(ins["records"][1]["health_score"], 50);
    assert_eq!(ins["records"][0]["__typename"], "clients");
    // Over atMost (default 1): pg_graphql's error, and nothing changed.
    let msg = error(
        &fx,
        a,
        r#"mutation { updateclientsCollection(set: {notes: "clobbered"}, filter: {name: {in: ["Delta", "Echo"]}}) { affectedCount } }"#,
        json!({}),
    )
    .await;
    assert_eq!(msg, "update impacts too many records");
    let n: i64 = fx
        .su
        .query_one(
            "select count(*) from clients where notes = 'clobbered'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the update was rolled back");
    let d = data(
        &fx,
        a,
        r#"mutation { updateclientsCollection(set: {notes: "batch"}, filter: {name: {in: ["Delta", "Echo"]}}, atMost: 2) { affectedCount records { name notes } } }"#,
        json!({}),
    )
    .await;
    assert_eq!(d["updateclientsCollection"]["affectedCount"], 2);
    assert_eq!(d["updateclientsCollection"]["records"][0]["notes"], "batch");
    // Bob cannot touch alice's rows: RLS makes them invisible to his update.
    let d = data(
        &fx,
        Some(fx.bob.as_str()),
        r#"mutation { deleteFromclientsCollection(filter: {name: {eq: "Delta"}}) { affectedCount } }"#,
        json!({}),
    )
    .await;
    assert_eq!(d["deleteFromclientsCollection"]["affectedCount"], 0);
    // ... nor insert into her org.
    let msg = error(
        &fx,
        Some(fx.bob.as_str()),
        r#"mutation($org: UUID!) { insertIntoclientsCollection(objects: [{org_id: $org, name: "Intruder"}]) { affectedCount } }"#,
        json!({"org": fx.org_a}),
    )
    .await;
    assert!(msg.contains("row-level security"), "{msg}");
    let msg = error(
        &fx,
        a,
        r#"mutation { deleteFromclientsCollection(filter: {name: {in: ["Delta", "Echo"]}}) { affectedCount } }"#,
        json!({}),
    )
    .await;
    assert_eq!(msg, "delete impacts too many records");
    // Two mutation fields run in one transaction, in order: the second's failure undoes the first.
    let msg = error(
        &fx,
        a,
        r#"mutation {
             a: deleteFromclientsCollection(filter: {name: {eq: "Delta"}}) { affectedCount }
             b: updateclientsCollection(set: {notes: "x"}, filter: {name: {neq: "nobody"}}) { affectedCount } }"#,
        json!({}),
    )
    .await;
    assert_eq!(msg, "update impacts too many records");
    let d = data(
        &fx,
        a,
        r#"mutation { deleteFromclientsCollection(filter: {name: {eq: "Delta"}}) { affectedCount records { name } } }"#,
        json!({}),
    )
    .await;
    assert_eq!(
        d["deleteFromclientsCollection"]["affectedCount"], 1,
        "the first run was rolled back: {d}"
    );
    // Unknown input keys, mutations through GET, and mutations anon may not run.
    let msg = error(
        &fx,
        a,
        r#"mutation { updateclientsCollection(set: {bogus: 1}) { affectedCount } }"#,
        json!({}),
    )
    .await;
    assert!(msg.contains("bogus"), "{msg}");
    let msg = error(
        &fx,
        None,
        r#"mutation { insertIntoclientsCollection(objects: [{name: "x"}]) { affectedCount } }"#,
        json!({}),
    )
    .await;
    assert_eq!(
        msg,
        "Unknown field \"insertIntoclientsCollection\" on type Mutation"
    );
    let r = fx
        .app
        .http
        .get(fx.app.url("/graphql/v1"))
        .query(&[("query", r#"mutation { deleteFromclientsCollection(filter: {name: {eq: "Echo"}}) { affectedCount } }"#)])
        .header("apikey", &fx.app.anon_key)
        .header("Authorization", format!("Bearer {}", fx.alice))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"], Value::Null, "{v}");
}

/// graphql-js's `getIntrospectionQuery()` (what GraphiQL and codegen send), abridged depth.
const INTROSPECTION: &str = r#"
query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } }
"#;

#[tokio::test]
async fn graphql_introspection_per_role_and_only_when_the_schema_enables_it() {
    let fx = fixture().await;
    let a = Some(fx.alice.as_str());
    let d = data(&fx, a, INTROSPECTION, json!({})).await;
    let types = d["__schema"]["types"].as_array().unwrap();
    let type_names: Vec<&str> = types.iter().map(|t| t["name"].as_str().unwrap()).collect();
    for want in [
        "clients",
        "clientsConnection",
        "clientsEdge",
        "clientsFilter",
        "clientsOrderBy",
        "clientsInsertInput",
        "clientsUpdateInput",
        "clientsInsertResponse",
        "clientsAggregate",
        "tasks",
        "roadmap_phases",
        "Node",
        "PageInfo",
        "UUIDFilter",
        "StringFilter",
        "OrderByDirection",
        "FilterIs",
        "BigInt",
        "Datetime",
        "Cursor",
    ] {
        assert!(
            type_names.contains(&want),
            "{want} missing from {type_names:?}"
        );
    }
    assert_eq!(d["__schema"]["queryType"]["name"], "Query");
    assert_eq!(d["__schema"]["mutationType"]["name"], "Mutation");
    let clients = types.iter().find(|t| t["name"] == "clients").unwrap();
    let field = |name: &str| {
        clients["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("clients.{name} missing"))
            .clone()
    };
    assert_eq!(
        field("id")["type"],
        json!({"kind": "NON_NULL", "name": null, "ofType": {"kind": "SCALAR", "name": "UUID", "ofType": null}})
    );
    assert_eq!(field("value_cents")["type"]["name"], "BigInt");
    assert_eq!(field("created_at")["type"]["ofType"]["name"], "Datetime");
    assert_eq!(
        field("projectsCollection")["type"]["name"],
        "projectsConnection"
    );
    assert_eq!(field("nodeId")["type"]["ofType"]["name"], "ID");
    // __type(name:)
    let d = data(&fx, a, r#"{ __type(name: "projects") { name kind fields { name type { name kind ofType { name } } } } }"#, json!({})).await;
    let fields = d["__type"]["fields"].as_array().unwrap();
    let clients_rel = fields
        .iter()
        .find(|f| f["name"] == "clients")
        .expect("projects.clients");
    assert_eq!(clients_rel["type"]["name"], "clients");
    // anon's schema: the catalogue, not the tenant tables.
    let d = data(&fx, None, r#"{ __schema { types { name } } }"#, json!({})).await;
    let anon: Vec<String> = d["__schema"]["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert!(anon.contains(&"systems".to_string()), "{anon:?}");
    assert!(!anon.contains(&"clients".to_string()), "{anon:?}");
    assert!(!anon.contains(&"projects".to_string()), "{anon:?}");
    // Without the schema directive, introspection fields do not exist (pg_graphql 1.6).
    fx.su
        .batch_execute("comment on schema public is null")
        .await
        .unwrap();
    agencyflow_testkit::wait::until(
        std::time::Duration::from_secs(20),
        "the schema reload",
        || async {
            let (_, v) = gql(&fx, a, "{ __schema { queryType { name } } }", json!({})).await;
            v["data"].is_null()
        },
    )
    .await;
    let msg = error(&fx, a, "{ __type(name: \"clients\") { name } }", json!({})).await;
    assert_eq!(msg, "Unknown field \"__type\" on type Query");
}

/// The e2e suite with graphql-request (e2e/graphql.test.js) on a seeded roadmap of org A.
#[tokio::test]
async fn graphql_e2e_graphql_request() {
    let fx = fixture().await;
    let org = fx.org_a;
    // The fixture's "Acme Site" project of org A.
    let project = uuid::Uuid::from_u128(0xd1000000_0000_4000_8000_000000000001);
    let alice = fx
        .su
        .query_one(
            "select user_id from team_members where org_id = $1 and role = 'owner'",
            &[&org],
        )
        .await
        .unwrap()
        .get::<_, uuid::Uuid>(0);
    let phase: uuid::Uuid = fx
        .su
        .query_one(
            &format!(
                r#"with s as (insert into wizard_sessions (org_id, project_id, user_id, current_step, wizard_completed_at)
                              values ('{org}', '{project}', '{alice}', 5, now())),
                    snap as (insert into context_snapshots (org_id, project_id, version, is_active, summary)
                             values ('{org}', '{project}', 1, true, 'Redesign the storefront') returning id),
                    rm as (insert into roadmaps (org_id, snapshot_id, total_duration) select '{org}', id, '8 weeks' from snap returning id),
                    ph as (insert into roadmap_phases (org_id, roadmap_id, title, order_index)
                           select '{org}', rm.id, t, i from rm, (values ('Discovery', 0), ('Build', 1)) v(t, i)
                           returning id, title),
                    tk as (insert into tasks (org_id, phase_id, title)
                           select '{org}', ph.id, t from ph join (values ('Discovery', 'Map the journeys'),
                             ('Discovery', 'Interview the team'), ('Build', 'Ship the pages')) v(p, t) on v.p = ph.title)
                select id from ph where title = 'Discovery'"#
            ),
            &[],
        )
        .await
        .expect("seed roadmap")
        .get(0);
    fx.app
        .run_node_test_with_env(
            "graphql.test.js",
            &[
                ("GQL_ALICE_TOKEN", fx.alice.as_str()),
                ("GQL_BOB_TOKEN", fx.bob.as_str()),
                ("GQL_ORG_A", &org.to_string()),
                ("GQL_PROJECT", &project.to_string()),
                ("GQL_PHASE", &phase.to_string()),
            ],
        )
        .await;
}

#[tokio::test]
async fn graphql_functions_stable_as_queries_volatile_as_mutations() {
    let fx = fixture().await;
    let a = Some(fx.alice.as_str());
    let acme = uuid::Uuid::from_u128(0xc1000000_0000_4000_8000_000000000001);
    let acme_site = uuid::Uuid::from_u128(0xd1000000_0000_4000_8000_000000000001);
    // A stable function returning jsonb: a Query field, JSON as a serialized string.
    let q = r#"query($c: UUID!) { get_client_classification(p_client_id: $c) }"#;
    let d = data(&fx, a, q, json!({"c": acme})).await;
    let text = d["get_client_classification"]
        .as_str()
        .unwrap_or_else(|| panic!("{d}"));
    let v: Value = serde_json::from_str(text).unwrap();
    assert_eq!(v["client_status"], "client", "{v}");
    // Invoker rights: bob's RLS hides alice's client, so the function sees nothing.
    let d = data(&fx, Some(fx.bob.as_str()), q, json!({"c": acme})).await;
    assert_eq!(d["get_client_classification"], Value::Null);
    // A volatile function returning a table row: a Mutation field returning that record.
    let m = r#"mutation($p: UUID!, $s: String) { create_context_snapshot(project_id: $p, summary: $s) { version is_active summary nodeId } }"#;
    let d = data(&fx, a, m, json!({"p": acme_site, "s": "first"})).await;
    assert_eq!(d["create_context_snapshot"]["version"], 1, "{d}");
    let d = data(&fx, a, m, json!({"p": acme_site, "s": "second"})).await;
    assert_eq!(d["create_context_snapshot"]["version"], 2);
    assert_eq!(d["create_context_snapshot"]["is_active"], true);
    // ... which is not a query field, and anon may not execute it at all.
    let msg = error(
        &fx,
        a,
        "{ create_context_snapshot(project_id: \"x\") { version } }",
        json!({}),
    )
    .await;
    assert_eq!(
        msg,
        "Unknown field \"create_context_snapshot\" on type Query"
    );
    let msg = error(&fx, None, m, json!({"p": acme_site})).await;
    assert_eq!(
        msg,
        "Unknown field \"create_context_snapshot\" on type Mutation"
    );
    let msg = error(
        &fx,
        a,
        "mutation { create_context_snapshot { version } }",
        json!({}),
    )
    .await;
    assert!(msg.contains("project_id"), "{msg}");
}

/// `GET /graphql/v1` for a browser: GraphiQL from the cache folder (`scripts/setup`), or a page
/// saying how to get it; never a CDN.
#[tokio::test]
async fn graphql_explorer_page() {
    let fx = fixture().await;
    let r = fx
        .app
        .http
        .get(fx.app.url("/graphql/v1"))
        .query(&[("apikey", fx.app.anon_key.as_str())])
        .header("Accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = r.text().await.unwrap();
    assert!(!html.contains("unpkg") && !html.contains("cdn"), "{html}");
    if html.contains("GraphiQL is not installed") {
        assert!(html.contains("scripts/setup"), "{html}");
    } else {
        assert!(
            html.contains("/graphql/v1/graphiql/graphiql.min.js?apikey="),
            "{html}"
        );
        let js = fx
            .app
            .http
            .get(fx.app.url("/graphql/v1/graphiql/graphiql.min.js"))
            .query(&[("apikey", fx.app.anon_key.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(js.status().as_u16(), 200);
        assert!(js.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript"));
    }
    // Only the explorer's own files are served from the folder.
    let r = fx
        .app
        .http
        .get(fx.app.url("/graphql/v1/graphiql/..%2F..%2Fetc%2Fpasswd"))
        .query(&[("apikey", fx.app.anon_key.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // Without the key the gateway refuses, as for every surface.
    let r = fx
        .app
        .http
        .get(fx.app.url("/graphql/v1"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

/// Runs DDL as the superuser and waits until `/graphql/v1` has reloaded its schema (`probe`,
/// a query of alice's, answers without errors).
async fn ddl_then_reload(fx: &Fx, sql: &str, probe: &str) {
    fx.su.batch_execute(sql).await.expect("ddl");
    agencyflow_testkit::wait::until(
        std::time::Duration::from_secs(20),
        "the schema reload",
        || async {
            let (_, v) = gql(fx, Some(fx.alice.as_str()), probe, json!({})).await;
            v.get("errors").is_none()
        },
    )
    .await;
}

/// pg_graphql's computed fields: a function whose only argument is a table's row type is a
/// field of that table's type (scalar, one record, or SETOF a table as a connection with the
/// collection arguments), in the same statement, RLS applying inside; functions returning
/// `record` (OUT parameters, `TABLE(...)`) are left out as pg_graphql leaves them out.
#[tokio::test]
async fn graphql_computed_fields_scalar_record_and_connection() {
    let fx = fixture().await;
    let a = Some(fx.alice.as_str());
    ddl_then_reload(
        &fx,
        r#"
create function public._display_name(rec public.clients) returns text stable language sql
  as $$ select rec.name || ' (' || rec.status || ')' $$;
create function public.client_value_doubled(public.clients) returns bigint stable language sql
  as $$ select $1.value_cents * 2 $$;
create function public.client_projects(public.clients) returns setof public.projects stable language sql
  as $$ select * from public.projects p where p.client_id = $1.id $$;
create function public.project_client(public.projects) returns public.clients stable language sql
  as $$ select * from public.clients c where c.id = $1.client_id $$;
create function public.client_pair(rec public.clients, out a int, out b text) stable language sql
  as $$ select 1, rec.name $$;
create function public.client_table(rec public.clients) returns table (a int, b text) stable language sql
  as $$ select 1, rec.name $$;
grant execute on function public._display_name(public.clients), public.client_value_doubled(public.clients),
  public.client_projects(public.clients), public.project_client(public.projects),
  public.client_pair(public.clients), public.client_table(public.clients) to authenticated;
"#,
        "{ clientsCollection(first: 1) { edges { node { display_name } } } }",
    )
    .await;
    let d = data(
        &fx,
        a,
        r#"{ clientsCollection(orderBy: [{name: AscNullsLast}]) { edges { node {
               name display_name client_value_doubled
               client_projects(first: 1, orderBy: [{name: AscNullsLast}]) {
                 totalCount pageInfo { hasNextPage } edges { node { name project_client { name } } } }
             } } } }"#,
        json!({}),
    )
    .await;
    let edges = d["clientsCollection"]["edges"].as_array().unwrap();
    let acme = &edges[0]["node"];
    assert_eq!(acme["display_name"], "Acme (client)", "{d}");
    // bigint as a string, as a column of that type.
    assert_eq!(acme["client_value_doubled"], "2000");
    let cp = &acme["client_projects"];
    assert_eq!(cp["totalCount"], 2, "{d}");
    assert_eq!(cp["pageInfo"]["hasNextPage"], true);
    assert_eq!(names(cp), ["Acme App"]);
    assert_eq!(cp["edges"][0]["node"]["project_client"]["name"], "Acme");
    assert_eq!(edges[2]["node"]["display_name"], "Gamma (lead)");
    assert_eq!(edges[2]["node"]["client_projects"]["totalCount"], 0);
    assert_eq!(edges[2]["node"]["client_value_doubled"], Value::Null);
    // A record-returning computed field of a row without one is null.
    let d = data(
        &fx,
        a,
        r#"{ projectsCollection(filter: {name: {eq: "Orphan"}}) { edges { node { project_client { name } } } } }"#,
        json!({}),
    )
    .await;
    assert_eq!(
        d["projectsCollection"]["edges"][0]["node"]["project_client"],
        Value::Null
    );
    // In mutation records and node(nodeId:) too.
    let d = data(
        &fx,
        a,
        r#"mutation { updateclientsCollection(set: {status: "client"}, filter: {name: {eq: "Gamma"}}) {
               records { nodeId display_name } } }"#,
        json!({}),
    )
    .await;
    let rec = &d["updateclientsCollection"]["records"][0];
    assert_eq!(rec["display_name"], "Gamma (client)");
    let q = format!(
        r#"{{ node(nodeId: "{}") {{ ... on clients {{ display_name }} }} }}"#,
        rec["nodeId"].as_str().unwrap()
    );
    let d = data(&fx, a, &q, json!({})).await;
    assert_eq!(d["node"]["display_name"], "Gamma (client)");
    // RLS applies inside the function: org B's member sees only org B's projects.
    let d = data(
        &fx,
        Some(fx.bob.as_str()),
        "{ clientsCollection { edges { node { name client_projects { edges { node { name } } } } } } }",
        json!({}),
    )
    .await;
    let e = &d["clientsCollection"]["edges"];
    assert_eq!(e.as_array().unwrap().len(), 1, "{d}");
    assert_eq!(names(&e[0]["node"]["client_projects"]), ["B Project"]);
    // Reflection: fields of the type, not of Query; OUT-parameter and TABLE(...) functions
    // (returning `record`) are not reflected.
    let d = data(
        &fx,
        a,
        r#"{ __type(name: "clients") { fields { name type { kind name } args { name } } }
             q: __type(name: "Query") { fields { name } } }"#,
        json!({}),
    )
    .await;
    let fields = d["__type"]["fields"].as_array().unwrap();
    let f = |n: &str| fields.iter().find(|f| f["name"] == n).cloned();
    assert_eq!(
        f("display_name").expect("display_name")["type"]["name"],
        "String"
    );
    let cp = f("client_projects").expect("client_projects");
    assert_eq!(cp["type"]["name"], "projectsConnection");
    assert!(cp["args"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["name"] == "first"));
    assert!(
        f("client_pair").is_none() && f("client_table").is_none(),
        "{d}"
    );
    let qf: Vec<&str> = d["q"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(
        !qf.contains(&"display_name") && !qf.contains(&"client_pair"),
        "{qf:?}"
    );
    assert_eq!(
        error(
            &fx,
            a,
            "{ clientsCollection { edges { node { client_pair } } } }",
            json!({})
        )
        .await,
        "Unknown field \"client_pair\" on type clients"
    );
}

/// pg_graphql's enum `mappings` directive: the GraphQL values replace the SQL labels in
/// results, filters, inserts, updates and introspection.
#[tokio::test]
async fn graphql_enum_mappings_rename_values_both_ways() {
    let fx = fixture().await;
    let a = Some(fx.alice.as_str());
    ddl_then_reload(
        &fx,
        r#"comment on type public.crm_sentiment is e'@graphql({"mappings": {"churn_risk": "CHURN_RISK", "positive": "POSITIVE"}})';"#,
        "{ crm_interactionsCollection(filter: {sentiment: {eq: CHURN_RISK}}) { edges { cursor } } }",
    )
    .await;
    let client = crate::rest::ACME;
    let d = data(
        &fx,
        a,
        r#"mutation($org: UUID!, $client: UUID!) {
             insertIntocrm_interactionsCollection(objects: [
               {org_id: $org, client_id: $client, subject: "one", sentiment: CHURN_RISK},
               {org_id: $org, client_id: $client, subject: "two", sentiment: neutral}]) {
               records { subject sentiment } } }"#,
        json!({"org": fx.org_a, "client": client}),
    )
    .await;
    assert_eq!(
        d["insertIntocrm_interactionsCollection"]["records"],
        json!([{"subject": "one", "sentiment": "CHURN_RISK"}, {"subject": "two", "sentiment": "neutral"}])
    );
    let stored: String = fx
        .su
        .query_one(
            "select sentiment::text from crm_interactions where subject = 'one'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, "churn_risk");
    let subjects = |d: &Value| -> Vec<String> {
        d["crm_interactionsCollection"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["subject"].as_str().unwrap().to_string())
            .collect()
    };
    let q = r#"query($f: crm_interactionsFilter) { crm_interactionsCollection(filter: $f, orderBy: [{subject: AscNullsLast}]) { edges { node { subject } } } }"#;
    let d = data(&fx, a, q, json!({"f": {"sentiment": {"eq": "CHURN_RISK"}}})).await;
    assert_eq!(subjects(&d), ["one"]);
    let d = data(
        &fx,
        a,
        q,
        json!({"f": {"sentiment": {"in": ["CHURN_RISK", "neutral"]}}}),
    )
    .await;
    assert_eq!(subjects(&d), ["one", "two"]);
    let d = data(
        &fx,
        a,
        q,
        json!({"f": {"sentiment": {"neq": "CHURN_RISK"}}}),
    )
    .await;
    assert_eq!(subjects(&d), ["two"]);
    // The SQL label of a renamed value is not a value of the GraphQL enum.
    let msg = error(&fx, a, q, json!({"f": {"sentiment": {"eq": "churn_risk"}}})).await;
    assert_eq!(msg, "Invalid input for crm_sentiment type");
    let d = data(
        &fx,
        a,
        r#"mutation { updatecrm_interactionsCollection(set: {sentiment: POSITIVE}, filter: {subject: {eq: "two"}}) {
             records { sentiment } } }"#,
        json!({}),
    )
    .await;
    assert_eq!(
        d["updatecrm_interactionsCollection"]["records"][0]["sentiment"],
        "POSITIVE"
    );
    let stored: String = fx
        .su
        .query_one(
            "select sentiment::text from crm_interactions where subject = 'two'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, "positive");
    let d = data(
        &fx,
        a,
        r#"{ __type(name: "crm_sentiment") { kind enumValues { name } } }"#,
        json!({}),
    )
    .await;
    assert_eq!(d["__type"]["kind"], "ENUM");
    assert_eq!(
        d["__type"]["enumValues"],
        json!([{"name": "POSITIVE"}, {"name": "neutral"}, {"name": "negative"}, {"name": "CHURN_RISK"}])
    );
}

/// pageInfo as pg_graphql computes it: on the paging side, whether a row lies beyond the
/// page; on the other side, whether the page does not start at the first row of the whole
/// filtered collection (so false for an empty page, and false when the rows skipped by a
/// cursor are filtered out).
#[tokio::test]
async fn graphql_page_info_matches_pg_graphql() {
    let fx = fixture().await;
    let a = Some(fx.alice.as_str());
    let q = r#"query($first: Int, $last: Int, $after: Cursor, $before: Cursor, $offset: Int, $f: clientsFilter) {
        clientsCollection(first: $first, last: $last, after: $after, before: $before, offset: $offset,
                          filter: $f, orderBy: [{name: AscNullsLast}]) {
          pageInfo { hasNextPage hasPreviousPage } edges { cursor node { name } } } }"#;
    let page = |vars: Value| {
        let fx = &fx;
        async move {
            let c = data(fx, a, q, vars).await["clientsCollection"].clone();
            (
                names(&c),
                c["pageInfo"]["hasPreviousPage"].as_bool().unwrap(),
                c["pageInfo"]["hasNextPage"].as_bool().unwrap(),
            )
        }
    };
    let all = data(&fx, a, q, json!({})).await["clientsCollection"].clone();
    let cur = |i: usize| all["edges"][i]["cursor"].clone();
    assert_eq!(names(&all), ["Acme", "Beta Co", "Gamma"]);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // (names, hasPreviousPage, hasNextPage)
    for (vars, want) in [
        (json!({"first": 2}), (s(&["Acme", "Beta Co"]), false, true)),
        (
            json!({"first": 2, "after": cur(0)}),
            (s(&["Beta Co", "Gamma"]), true, false),
        ),
        // An empty page has no previous page.
        (json!({"first": 2, "after": cur(2)}), (s(&[]), false, false)),
        // The rows before the cursor are filtered out: the page starts the collection.
        (
            json!({"first": 2, "after": cur(0), "f": {"name": {"neq": "Acme"}}}),
            (s(&["Beta Co", "Gamma"]), false, false),
        ),
        (
            json!({"first": 1, "offset": 1}),
            (s(&["Beta Co"]), true, true),
        ),
        (
            json!({"first": 1, "offset": 0}),
            (s(&["Acme"]), false, true),
        ),
        (json!({"first": 2, "offset": 5}), (s(&[]), false, false)),
        (json!({"last": 2}), (s(&["Beta Co", "Gamma"]), true, false)),
        (
            json!({"last": 1, "before": cur(2)}),
            (s(&["Beta Co"]), true, true),
        ),
        (
            json!({"last": 2, "before": cur(2)}),
            (s(&["Acme", "Beta Co"]), false, true),
        ),
        // The rows after the cursor are filtered out: the page ends the collection.
        (
            json!({"last": 2, "before": cur(2), "f": {"name": {"neq": "Gamma"}}}),
            (s(&["Acme", "Beta Co"]), false, false),
        ),
        (json!({"last": 2, "before": cur(0)}), (s(&[]), false, false)),
    ] {
        assert_eq!(page(vars.clone()).await, want, "{vars}");
    }
}

/// pg_graphql's names and messages: a foreign key constraint's comment names both
/// relationship fields; a connection's unknown field, aggregates without the directive and
/// min/max of a UUID have pg_graphql's messages.
#[tokio::test]
async fn graphql_constraint_names_and_pg_graphql_messages() {
    let fx = fixture().await;
    let a = Some(fx.alice.as_str());
    let fk: String = fx
        .su
        .query_one(
            "select conname::text from pg_constraint
              where conrelid = 'public.projects'::regclass and confrelid = 'public.clients'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    ddl_then_reload(
        &fx,
        &format!(
            r#"comment on constraint "{fk}" on public.projects is e'@graphql({{"foreign_name": "owner", "local_name": "work"}})';"#
        ),
        "{ projectsCollection(first: 1) { edges { node { owner { name } } } } }",
    )
    .await;
    let d = data(
        &fx,
        a,
        r#"{ projectsCollection(filter: {name: {eq: "Acme Site"}}) { edges { node { owner { name work { totalCount } } } } } }"#,
        json!({}),
    )
    .await;
    let owner = &d["projectsCollection"]["edges"][0]["node"]["owner"];
    assert_eq!(owner["name"], "Acme", "{d}");
    assert_eq!(owner["work"]["totalCount"], 2, "{d}");
    // The default names are gone.
    let msg = error(
        &fx,
        a,
        "{ projectsCollection { edges { node { clients { name } } } } }",
        json!({}),
    )
    .await;
    assert_eq!(msg, "Unknown field \"clients\" on type projects");
    for (q, want) in [
        (
            "{ crm_contactsCollection { aggregate { count } } }",
            "enable the aggregate directive to use aggregates",
        ),
        (
            "{ clientsCollection { nope } }",
            "unknown field in connection",
        ),
        (
            "{ clientsCollection { aggregate { min { id } } } }",
            "UUID fields (like \"id\") are not supported for min/max aggregation because they don't have a meaningful natural ordering",
        ),
    ] {
        assert_eq!(error(&fx, a, q, json!({})).await, want, "{q}");
    }
}

/// GraphiQL in headless Chromium: it loads from the server's own files (no request leaves
/// for a CDN), introspects with the anon key and runs queries under RLS (e2e/graphiql.test.js).
#[tokio::test]
async fn graphql_explorer_works_in_a_browser() {
    let fx = fixture().await;
    fx.app.run_node_test_with_env("graphiql.test.js", &[]).await;
}
