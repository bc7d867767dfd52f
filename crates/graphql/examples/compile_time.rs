//! Compile time per operation (bench/graphql.sh): parse + validate + compile one GraphQL
//! request into its SQL, against a schema cache dumped from a real database.
//! Usage: compile_time <catalog.json> <role> <query.graphql> [iterations]
use std::time::Instant;

use agencyflow_graphql::{plan, reflect, GraphqlRequest};
use agencyflow_rest::SchemaCache;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, catalog, role, query, rest @ ..] = args.as_slice() else {
        eprintln!("usage: compile_time <catalog.json> <role> <query.graphql> [iterations]");
        std::process::exit(2);
    };
    let n: u32 = rest.first().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let json = std::fs::read_to_string(catalog).expect("catalog");
    let cache = SchemaCache::from_json(serde_json::from_str(&json).expect("json")).expect("cache");
    let started = Instant::now();
    let schema = reflect::reflect(&cache, role);
    let reflect_time = started.elapsed();
    let req = GraphqlRequest {
        query: Some(std::fs::read_to_string(query).expect("query")),
        ..GraphqlRequest::default()
    };
    let p = plan(&schema, &req).expect("plan");
    let sql_len: usize = p
        .steps
        .iter()
        .map(|(_, s)| match s {
            agencyflow_graphql::Step::Sql(st) => st.sql.len(),
            _ => 0,
        })
        .sum();
    let started = Instant::now();
    for _ in 0..n {
        std::hint::black_box(plan(&schema, &req).expect("plan"));
    }
    let per = started.elapsed() / n;
    println!(
        "reflect (once per role and schema cache): {:.2} ms; compile per operation: {:.1} µs ({} bytes of SQL)",
        reflect_time.as_secs_f64() * 1e3,
        per.as_secs_f64() * 1e6,
        sql_len
    );
}
