//! The rest of the PostgREST dialect over HTTP (issue #15 part 3): functions in `select`
//! (computed fields and relationships, calls whose rows embed), overloads and whole-body
//! arguments, counts and max-affected on calls, write edge cases, embedding forms, output
//! formats. Each test creates the SQL objects it needs in its own database, then reloads
//! the schema cache.
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::rest::{fixture, fixture_with, Fx, Resp};

/// Runs `sql` as the superuser, reloads the schema cache and waits (10 s at most) until
/// `probe` answers 200 to the service role.
async fn setup(fx: &Fx, sql: &str, probe: &str) {
    setup_until(fx, sql, probe, |r| r.status == 200).await
}

/// As [`setup`], waiting until `ready` holds for the probe's response.
async fn setup_until(fx: &Fx, sql: &str, probe: &str, ready: impl Fn(&Resp) -> bool) {
    fx.su.batch_execute(sql).await.expect("setup sql");
    fx.su
        .batch_execute("notify pgrst, 'reload schema'")
        .await
        .expect("notify");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = fx.get(probe, fx.service()).await;
        if ready(&r) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{probe} never served after the reload: {} {}",
            r.status,
            r.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn names(r: &Resp) -> Vec<String> {
    r.names()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

const COMPUTED: &str = r#"
create function public.client_label(public.clients) returns text language sql stable
  as $$ select $1.name || ' (' || $1.status || ')' $$;
create function public.open_projects(public.clients) returns setof public.projects language sql stable
  as $$ select * from public.projects p where p.org_id = $1.org_id and p.client_id = $1.id and p.status <> 'completed' $$;
create function public.latest_project(public.clients) returns setof public.projects rows 1 language sql stable
  as $$ select * from public.projects p where p.org_id = $1.org_id and p.client_id = $1.id order by p.name desc limit 1 $$;
create function public.main_client(public.projects) returns setof public.clients rows 1 language sql stable
  as $$ select * from public.clients c where c.org_id = $1.org_id and c.id = $1.client_id $$;
create function public.clients_named(q text) returns setof public.clients language sql stable
  as $$ select * from public.clients where name ilike '%' || q || '%' $$;
create function public.crm_board() returns setof public.client_crm_status language sql stable
  as $$ select * from public.client_crm_status $$;
"#;

#[tokio::test]
async fn rest_computed_fields_are_selected_filtered_and_ordered_by_name_only() {
    let fx = fixture().await;
    setup(&fx, COMPUTED, "/clients?select=client_label&limit=1").await;
    let r = fx
        .get("/clients?select=name,client_label&order=name", fx.a())
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([
            {"name": "Acme", "client_label": "Acme (client)"},
            {"name": "Beta Co", "client_label": "Beta Co (prospect)"},
            {"name": "Gamma", "client_label": "Gamma (lead)"},
        ])
    );
    // filtered and ordered like a column, aliased and cast
    let r = fx
        .get("/clients?select=name&client_label=like.*prospect*", fx.a())
        .await;
    assert_eq!(names(r.expect(200)), s(&["Beta Co"]));
    let r = fx
        .get("/clients?select=name&order=client_label.desc", fx.a())
        .await;
    assert_eq!(names(r.expect(200)), s(&["Gamma", "Beta Co", "Acme"]));
    let r = fx
        .get("/clients?select=l:client_label&name=eq.Acme", fx.a())
        .await;
    assert_eq!(r.expect(200).json(), json!([{"l": "Acme (client)"}]));
    let r = fx
        .get(
            "/clients?select=name&or=(client_label.eq.\"Gamma (lead)\",name.eq.Acme)&order=name",
            fx.a(),
        )
        .await;
    assert_eq!(names(r.expect(200)), s(&["Acme", "Gamma"]));
    // `*` never includes a computed field
    let r = fx.get("/clients?select=*&name=eq.Acme", fx.a()).await;
    let row = &r.expect(200).json()[0];
    assert!(row.get("client_label").is_none(), "{row}");
    assert_eq!(row["name"], "Acme");
    // an embedded table's computed field
    let r = fx
        .get(
            "/projects?select=name,clients(client_label)&name=eq.Beta Pitch",
            fx.a(),
        )
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"name": "Beta Pitch", "clients": {"client_label": "Beta Co (prospect)"}}])
    );
    // on the rows a write returns
    let r = fx
        .call(Method::POST, "/clients?select=name,client_label", fx.a())
        .prefer("return=representation")
        .body(json!({"org_id": fx.org_a, "name": "Delta", "status": "lead"}))
        .send()
        .await;
    assert_eq!(
        r.expect(201).json(),
        json!([{"name": "Delta", "client_label": "Delta (lead)"}])
    );
    let r = fx
        .call(
            Method::PATCH,
            "/clients?client_label=eq.Delta (lead)&select=client_label",
            fx.a(),
        )
        .prefer("return=representation")
        .body(json!({"status": "prospect"}))
        .send()
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"client_label": "Delta (prospect)"}])
    );
    // on a call's rows
    let r = fx
        .get(
            "/rpc/clients_named?q=a&select=client_label&order=name",
            fx.a(),
        )
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([
            {"client_label": "Acme (client)"},
            {"client_label": "Beta Co (prospect)"},
            {"client_label": "Delta (prospect)"},
            {"client_label": "Gamma (lead)"},
        ])
    );
    // an unknown name is still PostgreSQL's 42703
    let j = fx
        .get("/clients?select=client_labl", fx.a())
        .await
        .error(400, "42703");
    assert_eq!(j["message"], "column clients.client_labl does not exist");
    // a function of another table's row is no field of this one
    fx.get("/projects?select=client_label", fx.a())
        .await
        .error(400, "42703");
}

#[tokio::test]
async fn rest_computed_relationships_embed_like_foreign_keys() {
    let fx = fixture().await;
    setup(&fx, COMPUTED, "/clients?select=open_projects(name)&limit=1").await;
    // to-many: arrays, ordered and limited inside
    let r = fx
        .get(
            "/clients?select=name,open_projects(name)&order=name&open_projects.order=name",
            fx.a(),
        )
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([
            {"name": "Acme", "open_projects": [{"name": "Acme App"}, {"name": "Acme Site"}]},
            {"name": "Beta Co", "open_projects": [{"name": "Beta Pitch"}]},
            {"name": "Gamma", "open_projects": []},
        ])
    );
    let r = fx
        .get(
            "/clients?select=name,open_projects(name)&name=eq.Acme&open_projects.order=name.desc&open_projects.limit=1",
            fx.a(),
        )
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"name": "Acme", "open_projects": [{"name": "Acme Site"}]}])
    );
    // !inner with a filter on the embed, and the null filters
    let r = fx
        .get(
            "/clients?select=name,open_projects!inner(name)&open_projects.status=eq.discovery",
            fx.a(),
        )
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"name": "Beta Co", "open_projects": [{"name": "Beta Pitch"}]}])
    );
    let r = fx
        .get(
            "/clients?select=name,open_projects()&open_projects=is.null",
            fx.a(),
        )
        .await;
    assert_eq!(r.expect(200).json(), json!([{"name": "Gamma"}]));
    // to-one: a single composite, or SETOF ... ROWS 1
    let r = fx
        .get("/projects?select=name,main_client(name)&order=name", fx.a())
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([
            {"name": "Acme App", "main_client": {"name": "Acme"}},
            {"name": "Acme Site", "main_client": {"name": "Acme"}},
            {"name": "Beta Pitch", "main_client": {"name": "Beta Co"}},
            {"name": "Orphan", "main_client": null},
        ])
    );
    let r = fx
        .get(
            "/clients?select=name,latest_project(name)&order=name",
            fx.a(),
        )
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([
            {"name": "Acme", "latest_project": {"name": "Acme Site"}},
            {"name": "Beta Co", "latest_project": {"name": "Beta Pitch"}},
            {"name": "Gamma", "latest_project": null},
        ])
    );
    // ordered by a to-one computed relationship, spread
    let r = fx
        .get(
            "/projects?select=name,main_client(name)&order=main_client(name).desc.nullslast,name",
            fx.a(),
        )
        .await;
    assert_eq!(
        names(r.expect(200)),
        s(&["Beta Pitch", "Acme App", "Acme Site", "Orphan"])
    );
    let r = fx
        .get(
            "/projects?select=name,...main_client(client:name)&name=eq.Acme App",
            fx.a(),
        )
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"name": "Acme App", "client": "Acme"}])
    );
    // a related order on a to-many computed relationship is PGRST118
    let j = fx
        .get(
            "/clients?select=name,open_projects(name)&order=open_projects(name)",
            fx.a(),
        )
        .await
        .error(400, "PGRST118");
    assert_eq!(
        j["message"],
        "A related order on 'open_projects' is not possible"
    );
    // RLS still decides: bob's embed never shows alice's projects
    let r = fx
        .get("/clients?select=name,open_projects(name)", Some(&fx.bob))
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"name": "Bravo Secret", "open_projects": [{"name": "B Project"}]}])
    );

    // A function named like a table replaces the foreign key to that table.
    setup_until(
        &fx,
        "create function public.clients(public.projects) returns setof public.clients rows 1 language sql stable
           as $$ select * from public.clients c where c.org_id = $1.org_id and c.id = $1.client_id and c.health_score > 70 $$;",
        "/projects?select=clients(name)&name=eq.Beta Pitch",
        |r| r.status == 200 && r.json()[0]["clients"].is_null(),
    )
    .await;
    let r = fx
        .get(
            "/projects?select=name,clients(name)&order=name&name=neq.Orphan",
            fx.a(),
        )
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([
            {"name": "Acme App", "clients": {"name": "Acme"}},
            {"name": "Acme Site", "clients": {"name": "Acme"}},
            {"name": "Beta Pitch", "clients": null},
        ])
    );
}

#[tokio::test]
async fn rest_rpc_rows_embed_their_relationships_including_a_view() {
    let fx = fixture().await;
    setup(&fx, COMPUTED, "/rpc/crm_board?select=name&limit=1").await;
    // a function returning a table's rows: FK and computed relationships, filters, order
    let r = fx
        .get(
            "/rpc/clients_named?q=a&select=name,projects(name),open_projects(name),crm_contacts(first_name)&order=name&projects.order=name&open_projects.order=name&name=neq.Gamma",
            fx.a(),
        )
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([
            {"name": "Acme", "projects": [{"name": "Acme App"}, {"name": "Acme Site"}],
             "open_projects": [{"name": "Acme App"}, {"name": "Acme Site"}],
             "crm_contacts": [{"first_name": "Ann"}]},
            {"name": "Beta Co", "projects": [{"name": "Beta Pitch"}],
             "open_projects": [{"name": "Beta Pitch"}],
             "crm_contacts": [{"first_name": "Ben"}]},
        ])
    );
    // by POST, with !inner on the call's rows
    let r = fx
        .call(
            Method::POST,
            "/rpc/clients_named?select=name,projects!inner(name)&projects.status=eq.active",
            fx.a(),
        )
        .body(json!({"q": "c"}))
        .send()
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"name": "Acme", "projects": [{"name": "Acme Site"}]}])
    );
    // a function returning a view's rows embeds through the view's base table
    let r = fx
        .get(
            "/rpc/crm_board?select=name,crm_contacts(first_name),projects(name)&order=name&projects.order=name",
            fx.a(),
        )
        .await;
    let j = r.expect(200).json();
    let rows = j.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{j}");
    assert_eq!(
        rows[0],
        json!({"name": "Acme", "crm_contacts": [{"first_name": "Ann"}], "projects": [{"name": "Acme App"}, {"name": "Acme Site"}]})
    );
    assert_eq!(rows[2]["crm_contacts"], json!([]));
    // an unknown embed on a call's rows: PGRST200 naming the function's relation
    let j = fx
        .get("/rpc/clients_named?q=a&select=name,nope(*)", fx.a())
        .await
        .error(400, "PGRST200");
    assert_eq!(
        j["message"],
        "Could not find a relationship between 'clients' and 'nope' in the schema cache"
    );
}

#[tokio::test]
async fn rest_overloads_are_chosen_by_named_arguments_and_whole_bodies_by_media_type() {
    let fx = fixture().await;
    setup(
        &fx,
        r#"
create function public.pick(a int) returns text language sql immutable as $$ select 'a=' || a $$;
create function public.pick(b text) returns text language sql immutable as $$ select 'b=' || b $$;
create function public.pick(a int, b text) returns text language sql immutable as $$ select 'a=' || a || ',b=' || b $$;
create function public.twin(x int) returns text language sql immutable as $$ select 'int' $$;
create function public.twin(x text) returns text language sql immutable as $$ select 'text' $$;
create function public.fee(amount int, rate numeric default 0.1, flat int default 0) returns numeric language sql immutable as $$ select amount * rate + flat $$;
create function public.shout(text) returns text language sql immutable as $$ select upper($1) $$;
create function public.xml_root(xml) returns text language sql immutable as $$ select (xpath('name(/*)', $1))[1]::text $$;
create function public.byte_len(bytea) returns int language sql immutable as $$ select length($1) $$;
create function public.body_keys(jsonb) returns text language sql immutable as $$ select string_agg(k, ',' order by k) from jsonb_object_keys($1) k $$;
"#,
        "/rpc/fee?amount=10",
    )
    .await;
    // by the names given, GET and POST
    for (path, want) in [
        ("/rpc/pick?a=1", "a=1"),
        ("/rpc/pick?b=x", "b=x"),
        ("/rpc/pick?a=1&b=x", "a=1,b=x"),
    ] {
        let r = fx.get(path, fx.a()).await;
        assert_eq!(r.expect(200).json(), json!(want), "{path}");
    }
    let r = fx
        .call(Method::POST, "/rpc/pick", fx.a())
        .body(json!({"a": 2, "b": "y"}))
        .send()
        .await;
    assert_eq!(r.expect(200).json(), json!("a=2,b=y"));
    // defaults may be omitted
    let r = fx.get("/rpc/fee?amount=10", fx.a()).await;
    assert_eq!(r.expect(200).json(), json!(1.0));
    let r = fx
        .call(Method::POST, "/rpc/fee", fx.a())
        .body(json!({"amount": 10, "flat": 5}))
        .send()
        .await;
    assert_eq!(r.expect(200).json(), json!(6.0));
    // ambiguous: 300 PGRST203 listing the candidates
    let j = fx.get("/rpc/twin?x=1", fx.a()).await.error(300, "PGRST203");
    assert_eq!(
        j,
        json!({
            "code": "PGRST203",
            "message": "Could not choose the best candidate function between: public.twin(x => integer), public.twin(x => text)",
            "details": null,
            "hint": "Try renaming the parameters or the function itself in the database so function overloading can be resolved",
        })
    );
    // no overload takes these names: 404 PGRST202 suggesting the closest parameters
    let j = fx.get("/rpc/pick?c=1", fx.a()).await.error(404, "PGRST202");
    assert_eq!(
        j,
        json!({
            "code": "PGRST202",
            "message": "Could not find the function public.pick(c) in the schema cache",
            "details": "Searched for the function public.pick with parameter c, but no matches were found in the schema cache.",
            "hint": null,
        })
    );
    let j = fx
        .call(Method::POST, "/rpc/fee", fx.a())
        .body(json!({"amout": 10}))
        .send()
        .await
        .error(404, "PGRST202");
    assert_eq!(
        j["details"],
        "Searched for the function public.fee with parameter amout or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache."
    );
    assert_eq!(
        j["hint"],
        "Perhaps you meant to call the function public.fee(amount, flat, rate)"
    );
    let j = fx
        .get("/rpc/nothing_here", fx.a())
        .await
        .error(404, "PGRST202");
    assert_eq!(
        j["message"],
        "Could not find the function public.nothing_here without parameters in the schema cache"
    );

    // a single unnamed parameter takes the whole body, by media type
    let r = fx
        .call(Method::POST, "/rpc/shout", fx.a())
        .h("Content-Type", "text/plain")
        .body_raw("hello, world")
        .send()
        .await;
    assert_eq!(r.expect(200).json(), json!("HELLO, WORLD"));
    let r = fx
        .call(Method::POST, "/rpc/xml_root", fx.a())
        .h("Content-Type", "text/xml")
        .body_raw("<invoice><id>1</id></invoice>")
        .send()
        .await;
    assert_eq!(r.expect(200).json(), json!("invoice"));
    let r = fx
        .call(Method::POST, "/rpc/byte_len", fx.a())
        .h("Content-Type", "application/octet-stream")
        .body_raw(vec![0u8, 159, 146, 150, 255])
        .send()
        .await;
    assert_eq!(r.expect(200).json(), json!(5));
    let r = fx
        .call(Method::POST, "/rpc/body_keys", fx.a())
        .body(json!({"b": 1, "a": [2]}))
        .send()
        .await;
    assert_eq!(r.expect(200).json(), json!("a,b"));
    // the wrong media type for the only parameter: PGRST202 without a hint
    let j = fx
        .call(Method::POST, "/rpc/byte_len", fx.a())
        .h("Content-Type", "text/plain")
        .body_raw("abc")
        .send()
        .await
        .error(404, "PGRST202");
    assert_eq!(
        j,
        json!({
            "code": "PGRST202",
            "message": "Could not find the function public.byte_len in the schema cache",
            "details": "Searched for the function public.byte_len with a single unnamed text parameter, but no matches were found in the schema cache.",
            "hint": null,
        })
    );
    let j = fx
        .call(Method::POST, "/rpc/shout", fx.a())
        .h("Content-Type", "application/octet-stream")
        .body_raw(vec![1u8])
        .send()
        .await
        .error(404, "PGRST202");
    assert_eq!(
        j["details"],
        "Searched for the function public.shout with a single unnamed bytea parameter, but no matches were found in the schema cache."
    );
    // JSON sent as text/plain still reaches named parameters
    let r = fx
        .call(Method::POST, "/rpc/pick", fx.a())
        .h("Content-Type", "text/plain;charset=UTF-8")
        .body_raw(r#"{"a": 3}"#)
        .send()
        .await;
    assert_eq!(r.expect(200).json(), json!("a=3"));
}

#[tokio::test]
async fn rest_rpc_counts_and_max_affected() {
    let fx = fixture().await;
    let sql = format!(
        "{COMPUTED}
create function public.numbers(n int) returns setof int language sql stable as $$ select generate_series(1, n) $$;
create function public.answer() returns int language sql immutable as $$ select 42 $$;
create function public.bump_status(p_status text) returns setof public.clients language sql volatile
  as $$ update public.clients set health_score = health_score + 1 where status = p_status returning * $$;"
    );
    setup(&fx, &sql, "/rpc/numbers?n=1").await;
    let range = |r: &Resp| r.header("content-range").unwrap_or_default();
    // exact, by GET, POST and HEAD: Content-Range and 206 for a partial page
    let r = fx
        .call(
            Method::GET,
            "/rpc/clients_named?q=a&select=name&order=name&limit=2",
            fx.a(),
        )
        .prefer("count=exact")
        .send()
        .await;
    assert_eq!(names(r.expect(206)), s(&["Acme", "Beta Co"]));
    assert_eq!(range(&r), "0-1/3");
    assert_eq!(
        r.header("preference-applied").as_deref(),
        Some("count=exact")
    );
    let r = fx
        .call(
            Method::POST,
            "/rpc/clients_named?select=name&order=name&offset=1",
            fx.a(),
        )
        .prefer("count=exact")
        .body(json!({"q": "a"}))
        .send()
        .await;
    assert_eq!(names(r.expect(206)), s(&["Beta Co", "Gamma"]));
    assert_eq!(range(&r), "1-2/3");
    let r = fx
        .call(Method::HEAD, "/rpc/numbers?n=5&limit=2", fx.a())
        .prefer("count=exact")
        .send()
        .await;
    assert_eq!(
        (r.status, range(&r), r.text.as_str()),
        (206, "0-1/5".into(), "")
    );
    let r = fx
        .call(Method::GET, "/rpc/numbers?n=5", fx.a())
        .prefer("count=exact")
        .send()
        .await;
    assert_eq!(r.expect(200).json(), json!([1, 2, 3, 4, 5]));
    assert_eq!(range(&r), "0-4/5");
    // a scalar counts as one row
    let r = fx
        .call(Method::GET, "/rpc/answer", fx.a())
        .prefer("count=exact")
        .send()
        .await;
    assert_eq!(r.expect(200).json(), json!(42));
    assert_eq!(range(&r), "0-0/1");
    // planned: the planner's estimate; estimated: exact under db-max-rows
    let r = fx
        .call(Method::GET, "/rpc/numbers?n=5&limit=2", fx.a())
        .prefer("count=planned")
        .send()
        .await;
    r.expect(if range(&r) == "0-1/2" { 200 } else { 206 });
    let total = range(&r);
    assert!(
        total.starts_with("0-1/") && total[4..].parse::<i64>().is_ok(),
        "{total}"
    );
    let r = fx
        .call(Method::POST, "/rpc/clients_named?select=name", fx.a())
        .prefer("count=estimated")
        .body(json!({"q": "a"}))
        .send()
        .await;
    assert_eq!(range(r.expect(200)), "0-2/3");

    // max-affected (with handling=strict) counts the rows a function returns; over it the
    // call is rolled back
    let before = gamma_health(&fx).await;
    let j = fx
        .call(Method::POST, "/rpc/bump_status", fx.a())
        .prefer("handling=strict, max-affected=0")
        .body(json!({"p_status": "lead"}))
        .send()
        .await
        .error(400, "PGRST124");
    assert_eq!(
        j,
        json!({"code": "PGRST124", "message": "Query result exceeds max-affected preference constraint", "details": "The query affects 1 rows", "hint": null})
    );
    assert_eq!(gamma_health(&fx).await, before);
    let r = fx
        .call(Method::POST, "/rpc/bump_status?select=name", fx.a())
        .prefer("handling=strict, max-affected=1")
        .body(json!({"p_status": "lead"}))
        .send()
        .await;
    assert_eq!(r.expect(200).json(), json!([{"name": "Gamma"}]));
    assert_eq!(
        r.header("preference-applied").as_deref(),
        Some("handling=strict, max-affected=1")
    );
    assert_eq!(gamma_health(&fx).await, before + 1);
    // without handling=strict the preference is ignored
    fx.call(Method::POST, "/rpc/bump_status", fx.a())
        .prefer("max-affected=0")
        .body(json!({"p_status": "lead"}))
        .send()
        .await
        .expect(200);
    // a function that does not return a set: PGRST128 (PostgREST 13)
    let j = fx
        .call(Method::GET, "/rpc/answer", fx.a())
        .prefer("handling=strict, max-affected=1")
        .send()
        .await
        .error(400, "PGRST128");
    assert_eq!(
        j,
        json!({"code": "PGRST128", "message": "Function must return SETOF or TABLE when max-affected preference is used with handling=strict", "details": null, "hint": null})
    );
}

async fn gamma_health(fx: &Fx) -> i32 {
    fx.su
        .query_one(
            "select health_score from public.clients where name = 'Gamma'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

const OBJECT: &str = "application/vnd.pgrst.object+json";

#[tokio::test]
async fn rest_writes_single_object_missing_default_upsert_and_columns() {
    let fx = fixture().await;
    setup(
        &fx,
        "create table public.tickets (
           id bigint generated by default as identity primary key,
           code text unique not null,
           title text not null,
           status text not null default 'open',
           priority int not null default 3);
         grant select, insert, update, delete on public.tickets to authenticated;",
        "/tickets",
    )
    .await;
    // bulk insert: columns= lists the keys, missing=default fills the absent ones with the
    // column defaults (an identity column's included)
    let r = fx
        .call(
            Method::POST,
            "/tickets?columns=id,code,title,status,priority&select=code,status,priority",
            fx.a(),
        )
        .prefer("return=representation, missing=default")
        .body(json!([
            {"code": "a", "title": "A"},
            {"code": "b", "title": "B", "status": "closed", "priority": 1}
        ]))
        .send()
        .await;
    assert_eq!(
        r.expect(201).json(),
        json!([
            {"code": "a", "status": "open", "priority": 3},
            {"code": "b", "status": "closed", "priority": 1}
        ])
    );
    let applied = r.header("preference-applied").unwrap_or_default();
    assert!(
        applied.contains("missing=default") && applied.contains("return=representation"),
        "{applied}"
    );
    // without missing=default an absent key is NULL
    fx.call(Method::POST, "/tickets?columns=code,title,status", fx.a())
        .body(json!([{"code": "x", "title": "X"}]))
        .send()
        .await
        .error(400, "23502");
    // upsert (merge) with missing=default: a conflicting row gets the defaults of the keys
    // it lacks, a new one is inserted with them
    fx.su
        .batch_execute("update public.tickets set priority = 9 where code = 'a'")
        .await
        .unwrap();
    let r = fx
        .call(
            Method::POST,
            "/tickets?columns=code,title,priority&on_conflict=code&select=code,title,priority",
            fx.a(),
        )
        .prefer("resolution=merge-duplicates, missing=default, return=representation")
        .body(json!([{"code": "a", "title": "A2"}, {"code": "c", "title": "C", "priority": 1}]))
        .send()
        .await;
    assert_eq!(
        r.expect(201).json(),
        json!([
            {"code": "a", "title": "A2", "priority": 3},
            {"code": "c", "title": "C", "priority": 1}
        ])
    );
    // upsert (ignore) with missing=default: the existing row is untouched
    let r = fx
        .call(
            Method::POST,
            "/tickets?columns=code,title,priority&on_conflict=code&select=code,priority",
            fx.a(),
        )
        .prefer("resolution=ignore-duplicates, missing=default, return=representation")
        .body(json!([{"code": "a", "title": "ignored"}, {"code": "d", "title": "D"}]))
        .send()
        .await;
    assert_eq!(r.expect(201).json(), json!([{"code": "d", "priority": 3}]));
    assert_eq!(
        all_tickets(&fx).await,
        vec![
            json!({"code": "a", "title": "A2", "status": "open", "priority": 3}),
            json!({"code": "b", "title": "B", "status": "closed", "priority": 1}),
            json!({"code": "c", "title": "C", "status": "open", "priority": 1}),
            json!({"code": "d", "title": "D", "status": "open", "priority": 3}),
        ]
    );
    // on_conflict without a resolution is a plain insert: a duplicate is 409
    fx.call(Method::POST, "/tickets?on_conflict=code", fx.a())
        .body(json!({"code": "a", "title": "dup"}))
        .send()
        .await
        .error(409, "23505");

    // .single(): one row is an object; any other count is 406 PGRST116 and rolled back
    let r = fx
        .call(Method::POST, "/tickets?select=code,status", fx.a())
        .h("Accept", OBJECT)
        .prefer("return=representation")
        .body(json!({"code": "e", "title": "E"}))
        .send()
        .await;
    assert_eq!(r.expect(201).json(), json!({"code": "e", "status": "open"}));
    let before = all_tickets(&fx).await;
    let j = fx
        .call(Method::POST, "/tickets", fx.a())
        .h("Accept", OBJECT)
        .prefer("return=representation")
        .body(json!([{"code": "f", "title": "F"}, {"code": "g", "title": "G"}]))
        .send()
        .await
        .error(406, "PGRST116");
    assert_eq!(
        j,
        json!({"code": "PGRST116", "message": "JSON object requested, multiple (or no) rows returned", "details": "The result contains 2 rows", "hint": null})
    );
    let j = fx
        .call(Method::DELETE, "/tickets?status=eq.open", fx.a())
        .h("Accept", OBJECT)
        .send()
        .await
        .error(406, "PGRST116");
    assert_eq!(j["details"], "The result contains 4 rows");
    let j = fx
        .call(Method::PATCH, "/tickets?code=eq.zzz", fx.a())
        .h("Accept", OBJECT)
        .body(json!({"title": "none"}))
        .send()
        .await
        .error(406, "PGRST116");
    assert_eq!(j["details"], "The result contains 0 rows");
    assert_eq!(
        all_tickets(&fx).await,
        before,
        "every refused write was rolled back"
    );
    // on a call returning several rows, and on a read
    let r = fx
        .call(Method::GET, "/tickets?select=code&order=code", fx.a())
        .h("Accept", OBJECT)
        .send()
        .await;
    assert_eq!(
        r.error(406, "PGRST116")["details"],
        "The result contains 5 rows"
    );
    setup(
        &fx,
        "create function public.open_tickets() returns setof public.tickets language sql stable as $$ select * from public.tickets where status = 'open' $$;",
        "/rpc/open_tickets",
    )
    .await;
    let r = fx
        .call(Method::GET, "/rpc/open_tickets?select=code", fx.a())
        .h("Accept", OBJECT)
        .send()
        .await;
    assert_eq!(
        r.error(406, "PGRST116")["details"],
        "The result contains 4 rows"
    );
    let r = fx
        .call(
            Method::GET,
            "/rpc/open_tickets?select=code&code=eq.e",
            fx.a(),
        )
        .h("Accept", OBJECT)
        .send()
        .await;
    assert_eq!(r.expect(200).json(), json!({"code": "e"}));
}

async fn all_tickets(fx: &Fx) -> Vec<serde_json::Value> {
    fx.su
        .query(
            "select code, title, status, priority from public.tickets order by code",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            json!({"code": r.get::<_, String>(0), "title": r.get::<_, String>(1),
                   "status": r.get::<_, String>(2), "priority": r.get::<_, i32>(3)})
        })
        .collect()
}

const PEOPLE: &str = "
create table public.people (
  id int primary key, name text not null,
  manager_id int references public.people (id),
  mentor_id int references public.people (id));
create table public.pets (
  id int primary key, name text not null,
  owner_id int references public.people (id),
  vet_id int references public.people (id));
grant select on public.people, public.pets to anon, authenticated;
insert into public.people values (1, 'Ada', null, null), (2, 'Bob', 1, null), (3, 'Cy', 1, 2), (4, 'Di', 2, 1);
insert into public.pets values (1, 'Rex', 2, 1), (2, 'Tom', 2, 4), (3, 'Zed', 3, 4);
";

#[tokio::test]
async fn rest_embed_by_column_constraint_hint_and_self_reference() {
    let fx = fixture().await;
    setup(&fx, PEOPLE, "/pets").await;
    // by the foreign key's column (any alias), or by the constraint's name
    let r = fx
        .get(
            "/pets?select=name,owner:owner_id(name),vet_id(name)&order=id",
            fx.a(),
        )
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([
            {"name": "Rex", "owner": {"name": "Bob"}, "vet_id": {"name": "Ada"}},
            {"name": "Tom", "owner": {"name": "Bob"}, "vet_id": {"name": "Di"}},
            {"name": "Zed", "owner": {"name": "Cy"}, "vet_id": {"name": "Di"}},
        ])
    );
    let r = fx
        .get("/pets?select=name,pets_vet_id_fkey(name)&id=eq.1", fx.a())
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"name": "Rex", "pets_vet_id_fkey": {"name": "Ada"}}])
    );
    // two keys to one table: 300 PGRST201 until a hint picks one
    let j = fx
        .get("/pets?select=name,people(name)", fx.a())
        .await
        .error(300, "PGRST201");
    assert_eq!(
        j,
        json!({
            "code": "PGRST201",
            "message": "Could not embed because more than one relationship was found for 'pets' and 'people'",
            "details": [
                {"cardinality": "many-to-one", "embedding": "pets with people", "relationship": "pets_owner_id_fkey using pets(owner_id) and people(id)"},
                {"cardinality": "many-to-one", "embedding": "pets with people", "relationship": "pets_vet_id_fkey using pets(vet_id) and people(id)"},
            ],
            "hint": "Try changing 'people' to one of the following: 'people!pets_owner_id_fkey', 'people!pets_vet_id_fkey'. Find the desired relationship in the 'details' key.",
        })
    );
    for (q, want) in [
        ("people!owner_id(name)", "Bob"),
        ("people!pets_owner_id_fkey(name)", "Bob"),
        ("people!pets_vet_id_fkey(name)", "Ada"),
        ("people!vet_id(name)", "Ada"),
    ] {
        let r = fx
            .get(&format!("/pets?select=name,who:{q}&id=eq.1"), fx.a())
            .await;
        assert_eq!(r.expect(200).json()[0]["who"]["name"], want, "{q}");
    }
    // the other direction, by hint
    let r = fx
        .get(
            "/people?select=name,pets!owner_id(name)&id=eq.2&pets.order=name",
            fx.a(),
        )
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"name": "Bob", "pets": [{"name": "Rex"}, {"name": "Tom"}]}])
    );
    // a hint that names nothing: PGRST200 with the hint in the details
    let j = fx
        .get("/pets?select=name,people!nope(name)", fx.a())
        .await
        .error(400, "PGRST200");
    assert_eq!(
        j,
        json!({
            "code": "PGRST200",
            "message": "Could not find a relationship between 'pets' and 'people' in the schema cache",
            "details": "Searched for a foreign key relationship between 'pets' and 'people' using the hint 'nope' in the schema 'public', but no matches were found.",
            "hint": null,
        })
    );

    // self-reference: the column embeds the parent, the table (with a hint) the children
    let r = fx
        .get(
            "/people?select=name,manager:manager_id(name),mentor_id(name),reports:people!manager_id(name),mentees:people!mentor_id(name)&order=id&reports.order=id",
            fx.a(),
        )
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([
            {"name": "Ada", "manager": null, "mentor_id": null, "reports": [{"name": "Bob"}, {"name": "Cy"}], "mentees": [{"name": "Di"}]},
            {"name": "Bob", "manager": {"name": "Ada"}, "mentor_id": null, "reports": [{"name": "Di"}], "mentees": [{"name": "Cy"}]},
            {"name": "Cy", "manager": {"name": "Ada"}, "mentor_id": {"name": "Bob"}, "reports": [], "mentees": []},
            {"name": "Di", "manager": {"name": "Bob"}, "mentor_id": {"name": "Ada"}, "reports": [], "mentees": []},
        ])
    );
    let j = fx
        .get("/people?select=name,people(name)", fx.a())
        .await
        .error(300, "PGRST201");
    assert_eq!(
        j["details"],
        json!([
            {"cardinality": "one-to-many", "embedding": "people with people", "relationship": "people_manager_id_fkey using people(id) and people(manager_id)"},
            {"cardinality": "one-to-many", "embedding": "people with people", "relationship": "people_mentor_id_fkey using people(id) and people(mentor_id)"},
        ])
    );
    // ordered by the to-one parent; !inner on the children
    let r = fx
        .get(
            "/people?select=name,manager:manager_id(name),reports:people!manager_id!inner(name)&order=manager(name).nullsfirst,name",
            fx.a(),
        )
        .await;
    assert_eq!(names(r.expect(200)), s(&["Ada", "Bob"]));
}

#[tokio::test]
async fn rest_to_many_spreads_and_aggregates_in_embeds() {
    let fx = fixture_with(&["--db-aggregates-enabled", "true"]).await;
    setup(&fx, PEOPLE, "/pets").await;
    // a to-many spread: every column becomes the array of its values (PostgREST 13)
    let r = fx
        .get(
            "/people?select=name,...pets!owner_id(pet:name,pet_id:id)&order=id&pets.order=name.desc",
            fx.a(),
        )
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([
            {"name": "Ada", "pet": [], "pet_id": []},
            {"name": "Bob", "pet": ["Tom", "Rex"], "pet_id": [2, 1]},
            {"name": "Cy", "pet": ["Zed"], "pet_id": [3]},
            {"name": "Di", "pet": [], "pet_id": []},
        ])
    );
    // nested: a to-one spread inside is aggregated too, a to-many one flattened
    let r = fx
        .get(
            "/people?select=name,...people!manager_id(report:name,...manager_id(boss:name))&id=eq.1",
            fx.a(),
        )
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"name": "Ada", "report": ["Bob", "Cy"], "boss": ["Ada", "Ada"]}])
    );
    let r = fx
        .get(
            "/people?select=name,...people!manager_id(report:name,...pets!owner_id(pet:name))&id=eq.1&people.order=id&people.pets.order=id",
            fx.a(),
        )
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"name": "Ada", "report": ["Bob", "Bob", "Cy"], "pet": ["Rex", "Tom", "Zed"]}])
    );
    // no aggregate inside a to-many spread: 400 PGRST127
    let j = fx
        .get("/people?select=name,...pets!owner_id(count())", fx.a())
        .await
        .error(400, "PGRST127");
    assert_eq!(
        j,
        json!({"code": "PGRST127", "message": "Feature not implemented", "details": "Aggregates are not implemented for one-to-many or many-to-many spreads.", "hint": null})
    );
    // aggregates inside an embed, and grouped by an embed
    let r = fx
        .get(
            "/people?select=name,pets!owner_id(count(),max_id:id.max())&order=id",
            fx.a(),
        )
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([
            {"name": "Ada", "pets": [{"count": 0, "max_id": null}]},
            {"name": "Bob", "pets": [{"count": 2, "max_id": 2}]},
            {"name": "Cy", "pets": [{"count": 1, "max_id": 3}]},
            {"name": "Di", "pets": [{"count": 0, "max_id": null}]},
        ])
    );
    let r = fx
        .get("/pets?select=owner:owner_id(name),count()", fx.a())
        .await;
    let mut rows = r.expect(200).json().as_array().unwrap().clone();
    rows.sort_by_key(|r| r["owner"]["name"].as_str().unwrap().to_string());
    assert_eq!(
        rows,
        vec![
            json!({"owner": {"name": "Bob"}, "count": 2}),
            json!({"owner": {"name": "Cy"}, "count": 1}),
        ]
    );
    let r = fx
        .get("/pets?select=...owner_id(owner:name),n:count()", fx.a())
        .await;
    let mut rows = r.expect(200).json().as_array().unwrap().clone();
    rows.sort_by_key(|r| r["owner"].as_str().unwrap().to_string());
    assert_eq!(
        rows,
        vec![
            json!({"owner": "Bob", "n": 2}),
            json!({"owner": "Cy", "n": 1})
        ]
    );
    // an aggregate inside a to-one spread is hoisted: the parent aggregates (and groups)
    let r = fx
        .get(
            "/pets?select=owner_id,...vet_id(top_vet:id.max(),vets:count())&order=owner_id",
            fx.a(),
        )
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"owner_id": 2, "top_vet": 4, "vets": 2}, {"owner_id": 3, "top_vet": 4, "vets": 1}])
    );
    // an aggregate PostgreSQL does not have for the type: 42883, 404 as PostgREST maps it
    fx.get("/pets?select=name.sum()", fx.a())
        .await
        .error(404, "42883");

    // aggregates disabled: every form is 400 PGRST123
    let plain = fixture().await;
    setup(&plain, PEOPLE, "/pets").await;
    for q in [
        "/pets?select=count()",
        "/people?select=name,pets!owner_id(count())",
        "/people?select=name,...pets!owner_id(name)",
    ] {
        let j = plain.get(q, plain.a()).await.error(400, "PGRST123");
        assert_eq!(
            j["message"], "Use of aggregate functions is not allowed",
            "{q}"
        );
    }
}

const FORMATS: &str = r#"
create table public.samples (id int primary key, txt text, n int, tags text[], data jsonb);
grant select, insert on public.samples to authenticated;
insert into public.samples values
  (1, 'plain', 1, '{a,b}', '{"k": 1}'),
  (2, 'with, comma', null, null, null),
  (3, 'say "hi"', 3, '{}', '{"k": 3}'),
  (4, E'line\nbreak', 4, null, '{"k": 2}'),
  (5, '', 5, null, null);
create domain public."text/html" as text;
create domain public."application/octet-stream" as bytea;
create domain public."*/*" as bytea;
create function public.hello_page(name text) returns public."text/html" language sql immutable
  as $$ select ('<h1>Hello ' || name || '</h1>')::public."text/html" $$;
create function public.png_bytes() returns public."application/octet-stream" language sql immutable
  as $$ select '\x89504e470d0a'::bytea::public."application/octet-stream" $$;
create function public.whatever() returns public."*/*" language sql immutable
  as $$ select 'any bytes'::bytea::public."*/*" $$;
"#;

#[tokio::test]
async fn rest_output_formats_csv_media_handlers_plan_and_ordering() {
    let fx = fixture_with(&["--db-plan-enabled", "true"]).await;
    setup(&fx, FORMATS, "/samples").await;
    // CSV: a header from the keys, PostgreSQL's record quoting, NULL as an empty field
    let r = fx
        .call(Method::GET, "/samples?order=id", fx.a())
        .h("Accept", "text/csv")
        .send()
        .await;
    r.expect(200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/csv; charset=utf-8")
    );
    assert_eq!(
        r.text,
        "id,txt,n,tags,data\n1,plain,1,\"{a,b}\",\"{\"\"k\"\": 1}\"\n2,\"with, comma\",,,\n3,\"say \"\"hi\"\"\",3,{},\"{\"\"k\"\": 3}\"\n4,\"line\nbreak\",4,,\"{\"\"k\"\": 2}\"\n5,\"\",5,,"
    );
    let r = fx
        .call(Method::GET, "/samples?select=id&id=gt.100", fx.a())
        .h("Accept", "text/csv")
        .send()
        .await;
    assert_eq!(r.expect(200).text, "\n");
    // text/plain before application/json: JSON (PostgREST #2170)
    let r = fx
        .call(Method::GET, "/samples?select=id&id=eq.1", fx.a())
        .h("Accept", "text/plain, application/json")
        .send()
        .await;
    assert_eq!(r.expect(200).json(), json!([{"id": 1}]));
    // nothing producible: 406 PGRST107
    let j = fx
        .call(Method::GET, "/samples", fx.a())
        .h("Accept", "text/html, image/png;q=0.5")
        .send()
        .await
        .error(406, "PGRST107");
    assert_eq!(
        j,
        json!({"code": "PGRST107", "message": "None of these media types are available: text/html, image/png", "details": null, "hint": null})
    );

    // ordering: JSON paths, embedded columns, a related to-one column
    let r = fx
        .get("/samples?select=id&order=data->k.desc.nullslast,id", fx.a())
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"id": 3}, {"id": 4}, {"id": 1}, {"id": 2}, {"id": 5}])
    );
    let r = fx
        .get(
            "/samples?select=id,k:data->>k&order=data->>k.asc.nullsfirst,id&limit=3",
            fx.a(),
        )
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"id": 2, "k": null}, {"id": 5, "k": null}, {"id": 1, "k": "1"}])
    );
    let r = fx
        .get(
            "/projects?select=name,clients(name)&order=clients(name).desc,name",
            fx.a(),
        )
        .await;
    assert_eq!(
        names(r.expect(200)),
        s(&["Orphan", "Beta Pitch", "Acme App", "Acme Site"])
    );
    let r = fx
        .get(
            "/clients?select=name,projects(name)&name=eq.Acme&projects.order=progress.desc",
            fx.a(),
        )
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"name": "Acme", "projects": [{"name": "Acme Site"}, {"name": "Acme App"}]}])
    );

    // media type handlers: a function returning a domain named like a media type
    let r = fx
        .call(Method::GET, "/rpc/hello_page?name=Ann", fx.a())
        .h(
            "Accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        )
        .send()
        .await;
    assert_eq!(r.expect(200).text, "<h1>Hello Ann</h1>");
    assert_eq!(r.header("content-type").as_deref(), Some("text/html"));
    let r = fx.get("/rpc/hello_page?name=Ann", fx.a()).await;
    assert_eq!(r.expect(200).json(), json!("<h1>Hello Ann</h1>"));
    let r = fx
        .call(Method::GET, "/rpc/png_bytes", fx.a())
        .h("Accept", "application/octet-stream")
        .send()
        .await;
    r.expect(200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(r.bytes, vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a]);
    let j = fx
        .call(Method::GET, "/rpc/png_bytes", fx.a())
        .h("Accept", "image/png")
        .send()
        .await
        .error(406, "PGRST107");
    assert_eq!(
        j["message"],
        "None of these media types are available: image/png"
    );
    let r = fx
        .call(Method::GET, "/rpc/whatever", fx.a())
        .h("Accept", "image/png")
        .send()
        .await;
    assert_eq!(r.expect(200).text, "any bytes");
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/octet-stream")
    );

    // application/vnd.pgrst.plan (db-plan-enabled): the statement's EXPLAIN
    let r = fx
        .call(Method::GET, "/samples?id=eq.1", fx.a())
        .h("Accept", "application/vnd.pgrst.plan+json")
        .send()
        .await;
    assert_eq!(
        r.expect(200).header("content-type").as_deref(),
        Some("application/vnd.pgrst.plan+json; charset=utf-8")
    );
    assert!(r.json()[0]["Plan"]["Total Cost"].is_number(), "{}", r.text);
    let r = fx
        .call(Method::GET, "/samples?id=eq.1", fx.a())
        .h("Accept", "application/vnd.pgrst.plan")
        .send()
        .await;
    assert_eq!(
        r.expect(200).header("content-type").as_deref(),
        Some("application/vnd.pgrst.plan+text; charset=utf-8")
    );
    assert!(r.text.starts_with("Aggregate"), "{}", r.text);
    // a write with options=analyze runs, and is rolled back
    let r = fx
        .call(Method::POST, "/samples", fx.a())
        .h(
            "Accept",
            "application/vnd.pgrst.plan+json; for=\"application/json\"; options=analyze|verbose",
        )
        .body(json!({"id": 9, "txt": "planned"}))
        .send()
        .await;
    assert_eq!(
        r.expect(200).header("content-type").as_deref(),
        Some("application/vnd.pgrst.plan+json; for=\"application/json\"; options=analyze|verbose; charset=utf-8")
    );
    assert!(r.json()[0]["Plan"]["Actual Rows"].is_number(), "{}", r.text);
    let n: i64 = fx
        .su
        .query_one("select count(*) from public.samples where id = 9", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the explained insert was rolled back");
    let r = fx
        .call(Method::GET, "/rpc/hello_page?name=x", fx.a())
        .h("Accept", "application/vnd.pgrst.plan+json")
        .send()
        .await;
    assert!(r.expect(200).json()[0]["Plan"].is_object(), "{}", r.text);

    // without db-plan-enabled the plan media type is not available
    let plain = fixture().await;
    plain
        .call(Method::GET, "/clients", plain.a())
        .h("Accept", "application/vnd.pgrst.plan")
        .send()
        .await
        .error(406, "PGRST107");
}

/// PostGIS in this test's database only (the agency's migrations never need it).
const SHOPS: &str = r#"
create extension if not exists postgis with schema extensions;
create table public.shops (id int primary key, address text, shop_geom extensions.geometry(point, 4326));
create table public.shop_beacons (id int primary key, shop_id int references public.shops, name text,
  coords extensions.geometry(point, 4326));
insert into public.shops values
  (1, '1369 Cambridge St', 'SRID=4326;POINT(-71.10044 42.373695)'),
  (2, '757 Massachusetts Ave', 'SRID=4326;POINT(-71.10543 42.366432)'),
  (3, '605 W Kendall St', 'SRID=4326;POINT(-71.081924 42.36437)');
insert into public.shop_beacons values (1, 1, 'Beacon-1', 'SRID=4326;POINT(-71.10044 42.373695)');
grant select, insert, update, delete on public.shops, public.shop_beacons to authenticated;
create function public.get_shop(shop int) returns setof public.shops language sql stable
  as $$ select * from public.shops where id = shop $$;
"#;

fn feature(id: i32, address: &str, lon: f64, lat: f64) -> serde_json::Value {
    json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
           "properties": {"id": id, "address": address}})
}

#[tokio::test]
async fn rest_geojson_is_a_feature_collection_with_postgis_and_406_without() {
    let fx = fixture().await;
    let geo = |method: Method, path: &str| {
        fx.call(method, path, fx.a())
            .h("Accept", "application/geo+json")
    };
    // Without PostGIS in the database: not available (406 PGRST107), or the next
    // acceptable type answers.
    let j = geo(Method::GET, "/clients")
        .send()
        .await
        .error(406, "PGRST107");
    assert_eq!(
        j,
        json!({"code": "PGRST107", "message": "None of these media types are available: application/geo+json", "details": null, "hint": null})
    );
    let r = fx
        .call(
            Method::GET,
            "/clients?select=name&order=name&limit=1",
            fx.a(),
        )
        .h("Accept", "application/geo+json, application/json;q=0.5")
        .send()
        .await;
    assert_eq!(r.expect(200).json(), json!([{"name": "Acme"}]));

    // With PostGIS (created here, picked up by the schema reload).
    setup(&fx, SHOPS, "/shops").await;
    let r = geo(Method::GET, "/shops?order=id").send().await;
    r.expect(200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/geo+json; charset=utf-8")
    );
    assert_eq!(
        r.json(),
        json!({"type": "FeatureCollection", "features": [
            feature(1, "1369 Cambridge St", -71.10044, 42.373695),
            feature(2, "757 Massachusetts Ave", -71.10543, 42.366432),
            feature(3, "605 W Kendall St", -71.081924, 42.36437),
        ]})
    );
    // no rows: an empty collection
    let r = geo(Method::GET, "/shops?id=gt.100").send().await;
    assert_eq!(
        r.expect(200).json(),
        json!({"type": "FeatureCollection", "features": []})
    );
    // the select decides the properties; the geometry must be selected
    let r = geo(Method::GET, "/shops?select=id,shop_geom&id=eq.1")
        .send()
        .await;
    assert_eq!(
        r.expect(200).json()["features"][0]["properties"],
        json!({"id": 1})
    );
    // embeds are properties
    let r = geo(
        Method::GET,
        "/shops?select=id,shop_geom,shop_beacons(id,name)&id=eq.1",
    )
    .send()
    .await;
    assert_eq!(
        r.expect(200).json()["features"],
        json!([{"type": "Feature", "geometry": {"type": "Point", "coordinates": [-71.10044, 42.373695]},
                "properties": {"id": 1, "shop_beacons": [{"id": 1, "name": "Beacon-1"}]}}])
    );
    // calls returning rows
    let r = geo(Method::GET, "/rpc/get_shop?shop=2").send().await;
    assert_eq!(
        r.expect(200).json()["features"],
        json!([feature(2, "757 Massachusetts Ave", -71.10543, 42.366432)])
    );
    // writes with return=representation
    let r = geo(Method::POST, "/shops")
        .prefer("return=representation")
        .body(json!({"id": 4, "address": "1354 Massachusetts Ave", "shop_geom": "SRID=4326;POINT(-71.11834 42.373238)"}))
        .send()
        .await;
    r.expect(201);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/geo+json; charset=utf-8")
    );
    assert_eq!(
        r.json()["features"],
        json!([feature(4, "1354 Massachusetts Ave", -71.11834, 42.373238)])
    );
    let r = geo(Method::PATCH, "/shops?id=eq.3")
        .prefer("return=representation")
        .body(json!({"address": "1354 Massachusetts Avenue"}))
        .send()
        .await;
    assert_eq!(
        r.expect(200).json()["features"],
        json!([feature(
            3,
            "1354 Massachusetts Avenue",
            -71.081924,
            42.36437
        )])
    );
    let r = geo(Method::DELETE, "/shops?id=eq.4")
        .prefer("return=representation")
        .send()
        .await;
    assert_eq!(
        r.expect(200).json()["features"],
        json!([feature(4, "1354 Massachusetts Ave", -71.11834, 42.373238)])
    );
    // application/json keeps the geometry as a GeoJSON object (PostGIS's json cast)
    let r = fx.get("/shops?select=shop_geom&id=eq.1", fx.a()).await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"shop_geom": {"type": "Point", "crs": {"type": "name", "properties": {"name": "EPSG:4326"}}, "coordinates": [-71.10044, 42.373695]}}])
    );
    // a relation without a geometry column: PostGIS refuses it, 400 22023 as in PostgREST
    let j = geo(Method::GET, "/clients")
        .send()
        .await
        .error(400, "22023");
    assert_eq!(j["message"], "geometry column is missing");
    // and with PostGIS, GeoJSON is no longer refused by negotiation
    let r = fx
        .call(Method::GET, "/shops?select=id&id=eq.1", fx.a())
        .h("Accept", "application/geo+json;q=0.5, application/json")
        .send()
        .await;
    assert_eq!(r.expect(200).json(), json!([{"id": 1}]));
}

const GIZMOS: &str = r#"
create table public.gizmos (id int generated by default as identity primary key,
  sku text unique not null, name text, qty int not null default 0);
insert into public.gizmos (id, sku, name, qty) values (1, 'A-1', 'anvil', 1), (2, 'B-2', 'bolt', 2);
select pg_catalog.setval(pg_catalog.pg_get_serial_sequence('public.gizmos', 'id'), 100);
-- auto-updatable views: one shows the primary key, one does not
create view public.gizmo_list as select id, sku, name, qty from public.gizmos;
create view public.gizmo_names as select sku, name from public.gizmos;
grant select, insert, update on public.gizmos, public.gizmo_list, public.gizmo_names to authenticated;
"#;

#[tokio::test]
async fn rest_upserts_on_auto_updatable_views() {
    let fx = fixture().await;
    setup(&fx, GIZMOS, "/gizmo_names").await;
    let post = |path: &str, prefer: &str, body: serde_json::Value| {
        fx.call(Method::POST, path, fx.a())
            .prefer(prefer)
            .body(body)
    };
    let applied = |r: &Resp| r.header("preference-applied").unwrap_or_default();
    let fxr = &fx;
    let rows = move || async move {
        fxr.get("/gizmos?select=id,sku,name,qty&order=id", fxr.a())
            .await
            .expect(200)
            .json()
    };
    // merge-duplicates on the view's inherited primary key: inserts and updates
    let r = post(
        "/gizmo_list",
        "resolution=merge-duplicates, return=representation",
        json!([{"id": 1, "sku": "A-1", "name": "anvil II", "qty": 5},
               {"id": 3, "sku": "C-3", "name": "cog", "qty": 1}]),
    )
    .send()
    .await;
    assert_eq!(
        r.expect(201).json(),
        json!([{"id": 1, "sku": "A-1", "name": "anvil II", "qty": 5},
               {"id": 3, "sku": "C-3", "name": "cog", "qty": 1}])
    );
    assert!(
        applied(&r).contains("resolution=merge-duplicates"),
        "{}",
        applied(&r)
    );
    // only updates: 200
    let r = post(
        "/gizmo_list",
        "resolution=merge-duplicates",
        json!({"id": 3, "sku": "C-3", "name": "cog", "qty": 2}),
    )
    .send()
    .await;
    r.expect(200);
    // ignore-duplicates: the existing row is left alone
    let r = post(
        "/gizmo_list",
        "resolution=ignore-duplicates, return=representation",
        json!([{"id": 1, "sku": "A-1", "name": "ignored", "qty": 0},
               {"id": 4, "sku": "D-4", "name": "dial", "qty": 4}]),
    )
    .send()
    .await;
    assert_eq!(
        r.expect(201).json(),
        json!([{"id": 4, "sku": "D-4", "name": "dial", "qty": 4}])
    );
    // on_conflict on a unique column of the base table, through the view without the key
    let r = post(
        "/gizmo_names?on_conflict=sku",
        "resolution=merge-duplicates, return=representation",
        json!({"sku": "B-2", "name": "bolt II"}),
    )
    .send()
    .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"sku": "B-2", "name": "bolt II"}])
    );
    // PUT on the view by its inherited key
    let r = fx
        .call(Method::PUT, "/gizmo_list?id=eq.2", fx.a())
        .prefer("return=representation")
        .body(json!({"id": 2, "sku": "B-2", "name": "bolt III", "qty": 9}))
        .send()
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"id": 2, "sku": "B-2", "name": "bolt III", "qty": 9}])
    );
    // A view without a primary key and no on_conflict: a plain insert, the resolution not
    // applied (PostgREST's answer), so a duplicate is PostgreSQL's 23505 (409)
    let r = post(
        "/gizmo_names",
        "resolution=merge-duplicates, return=representation",
        json!({"sku": "E-5", "name": "eel"}),
    )
    .send()
    .await;
    assert_eq!(r.expect(201).json(), json!([{"sku": "E-5", "name": "eel"}]));
    assert_eq!(applied(&r), "return=representation");
    post(
        "/gizmo_names",
        "resolution=merge-duplicates",
        json!({"sku": "E-5", "name": "eel again"}),
    )
    .send()
    .await
    .error(409, "23505");
    assert_eq!(
        rows().await,
        json!([
            {"id": 1, "sku": "A-1", "name": "anvil II", "qty": 5},
            {"id": 2, "sku": "B-2", "name": "bolt III", "qty": 9},
            {"id": 3, "sku": "C-3", "name": "cog", "qty": 2},
            {"id": 4, "sku": "D-4", "name": "dial", "qty": 4},
            // 101 went to the insert through gizmo_names that conflicted on sku
            {"id": 102, "sku": "E-5", "name": "eel", "qty": 0},
        ])
    );
}
