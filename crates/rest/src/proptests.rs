//! Property tests: no input panics, and user values only ever travel as parameters.

use http::Method;
use proptest::prelude::*;

use crate::testutil::*;

fn nasty_value() -> impl Strategy<Value = String> {
    // Quotes, semicolons, comments, dollar quotes, unicode; prefixed so a value
    // can never coincide with an identifier or SQL keyword from the cache.
    "[a-zA-Z0-9 '\";$\\-(),.{}*ü漢\u{1F600}]{1,24}".prop_map(|s| format!("zq{s}"))
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn random_query_strings_never_panic(q in "[a-z_.=&(),!:*>\\-\"{}0-9%+]{0,60}") {
        let _ = run(&get("/clients", &q));
        let _ = run(&get("/rpc/match_documents", &q));
        let _ = run(&with(Method::PATCH, "/clients", &q, &[], "{\"name\":\"x\"}"));
    }

    #[test]
    fn random_select_strings_never_panic(s in "[a-z_,()!:.*>\\-\" ]{0,40}") {
        let _ = crate::parse::select::parse_select(&s);
        let q = format!("select={}", encode(&s));
        let _ = run(&get("/projects", &q));
    }

    #[test]
    fn random_bodies_never_panic(b in ".{0,40}") {
        let _ = run(&with(Method::POST, "/clients", "", &[], &b));
        let _ = run(&with(Method::POST, "/rpc/match_documents", "", &[], &b));
    }

    #[test]
    fn filter_values_are_always_parameters(v in nasty_value(), op in prop::sample::select(vec!["eq", "neq", "gt", "like", "ilike", "match", "cs", "fts", "isdistinct", "not.eq", "eq(any)"])) {
        let q = format!("name={op}.{}", encode(&v));
        if let Ok((_, s)) = run(&get("/clients", &q)) {
            prop_assert!(!s.sql.contains(&v), "value leaked: {}", s.sql);
            assert_params_bound(&s);
        }
        let q = format!("status=in.({},\"{}\")", encode(&v), encode(&v.replace('"', "")));
        if let Ok((_, s)) = run(&get("/clients", &q)) {
            prop_assert!(!s.sql.contains(&v));
            assert_params_bound(&s);
        }
        let q = format!("or=(name.eq.\"{}\",notes.is.null)", encode(&v.replace(['"', '\\'], "")));
        if let Ok((_, s)) = run(&get("/clients", &q)) {
            prop_assert!(!s.sql.contains(&v.replace(['"', '\\'], "")));
            assert_params_bound(&s);
        }
        let q = format!("meta->>{}=eq.{}", encode(&v.replace(['"', '(', ')', ',', '.', '-', '>', '&'], "")), encode(&v));
        if let Ok((_, s)) = run(&get("/tasks", &q)) {
            prop_assert!(!s.sql.contains(&v));
            assert_params_bound(&s);
        }
    }

    #[test]
    fn body_values_are_always_parameters(v in nasty_value()) {
        let body = serde_json::json!({"name": v, "notes": v}).to_string();
        for (method, path) in [(Method::POST, "/clients"), (Method::PATCH, "/clients")] {
            let (_, s) = run(&with(method, path, "", &[("prefer", "return=representation")], &body)).unwrap();
            prop_assert!(!s.sql.contains(&v));
            assert_params_bound(&s);
        }
        let body = serde_json::json!({"q": v, "statuses": [v]}).to_string();
        let (_, s) = run(&with(Method::POST, "/rpc/search_clients", "", &[], &body)).unwrap();
        prop_assert!(!s.sql.contains(&v));
        assert_params_bound(&s);
        let q = format!("q={}", encode(&v));
        let (_, s) = run(&get("/rpc/search_clients", &q)).unwrap();
        prop_assert!(!s.sql.contains(&v));
    }

    #[test]
    fn limits_and_offsets_are_parameters(l in 0i64..1_000_000, o in 0i64..1_000_000) {
        let q = format!("limit={l}&offset={o}&select=id,projects(id)&projects.limit={l}");
        let (_, s) = run(&get("/clients", &q)).unwrap();
        assert_params_bound(&s);
        let needle = format!(" {o}");
        prop_assert!(o < 10 || !s.sql.contains(&needle));
    }
}
