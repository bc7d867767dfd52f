//! Serving a database agencyflow did not create, as PostgREST does (README: "Use it in place
//! of PostgREST on your own database"): an empty database with its own schema, roles, grants
//! and RLS (the README's SQL, run as written), served with PostgREST's settings alone; DDL
//! made outside the server picked up without a restart; PostgREST's in-database
//! configuration, pre-request function and per-role settings.
//!
//! Roles are cluster-wide and tests share a cluster: every test renames the README's roles
//! with a suffix of its own.
use std::future::Future;
use std::time::{Duration, Instant};

use agencyflow_testkit::agencyflow_db::tokio_postgres::Client;
use agencyflow_testkit::{TestApp, TestDb};
use reqwest::Method;
use serde_json::{json, Value};

/// How soon DDL made outside the server must be served.
const DDL_DEADLINE: Duration = Duration::from_secs(1);

/// The SQL block of README.md that follows `<!-- own-db: {name} -->`.
fn readme_sql(name: &str) -> String {
    let readme = include_str!("../../../../README.md");
    let marker = format!("<!-- own-db: {name} -->");
    let after = &readme[readme
        .find(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"))
        + marker.len()..];
    let body = after
        .trim_start()
        .strip_prefix("```sql\n")
        .expect("a ```sql block follows the marker");
    body[..body.find("```").expect("the block ends")].to_string()
}

/// A database of one's own: empty, then the README's example schema with this test's role
/// names.
struct Own {
    t: TestDb,
    su: Client,
    anon: String,
    user: String,
    login: String,
}

impl Own {
    async fn new() -> Own {
        let t = TestDb::empty().await;
        let su = agencyflow_testkit::agencyflow_db::connect_one(&t.admin_url())
            .await
            .expect("superuser");
        let sfx = &t.name[2..10];
        let (anon, user, login) = (
            format!("web_anon_{sfx}"),
            format!("web_user_{sfx}"),
            format!("shop_authenticator_{sfx}"),
        );
        su.batch_execute(&self_named(&readme_sql("schema"), &anon, &user, &login))
            .await
            .expect("the README's example schema");
        Own {
            t,
            su,
            anon,
            user,
            login,
        }
    }

    /// Runs SQL written with the README's role names.
    async fn sql(&self, sql: &str) {
        self.su
            .batch_execute(&self_named(sql, &self.anon, &self.user, &self.login))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The server, logging in as this database's authenticator, with `args`.
    async fn app(&self, args: &[&str]) -> TestApp {
        let args: Vec<String> = args
            .iter()
            .map(|a| self_named(a, &self.anon, &self.user, &self.login))
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.t
            .spawn_app_on(&self.t.url_as(&self.login), &args)
            .await
    }

    /// The PostgREST settings of the README's example, as flags (= environment).
    async fn app_with_postgrest_settings(&self) -> TestApp {
        self.app(&[
            "--db-schemas",
            "shop",
            "--db-anon-role",
            "web_anon",
            "--api-roles",
            "web_user",
        ])
        .await
    }

    fn user_token(&self, app: &TestApp, sub: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        app.keys
            .sign(&json!({"sub": sub, "role": self.user, "aud": "authenticated", "iat": now, "exp": now + 3600}))
            .unwrap()
    }
}

fn self_named(sql: &str, anon: &str, user: &str, login: &str) -> String {
    sql.replace("web_anon", anon)
        .replace("web_user", user)
        .replace("shop_authenticator", login)
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Resp {
    let mut r = app
        .http
        .request(method, app.url(path))
        .header("apikey", &app.anon_key);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    Resp {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

async fn get(app: &TestApp, path: &str, token: Option<&str>) -> Resp {
    call(app, Method::GET, path, token, None, &[]).await
}

/// Polls `check` until it holds, failing after `deadline` (no fixed sleeps: a short pause
/// between attempts only).
async fn within<F, Fut>(deadline: Duration, what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    agencyflow_testkit::wait::until(deadline, what, check).await
}

#[tokio::test]
async fn served_like_postgrest() {
    let own = Own::new().await;
    let app = own.app_with_postgrest_settings().await;
    let ada = own.user_token(&app, "ada");
    let bob = own.user_token(&app, "bob");

    // GET as the anonymous role, POST and PATCH as a user, under the roles' grants.
    let r = get(&app, "/rest/v1/products", None).await;
    assert_eq!((r.status, r.body.clone()), (200, json!([])), "{:?}", r.body);
    let r = call(
        &app,
        Method::POST,
        "/rest/v1/products",
        Some(&ada),
        Some(json!([{"name": "kettle", "price": 25.5}, {"name": "mug", "price": 4}])),
        &[("Prefer", "return=representation")],
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body[0]["name"], "kettle");
    let kettle = r.body[0]["id"].as_i64().unwrap();
    let r = call(
        &app,
        Method::PATCH,
        &format!("/rest/v1/products?id=eq.{kettle}"),
        Some(&ada),
        Some(json!({"price": 19.99})),
        &[("Prefer", "return=representation")],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body,
        json!([{"id": kettle, "name": "kettle", "price": 19.99}])
    );
    let r = get(&app, "/rest/v1/products?select=name&order=price.desc", None).await;
    assert_eq!(r.body, json!([{"name": "kettle"}, {"name": "mug"}]));
    // The anonymous role may not write: PostgREST's 401 for an anonymous 42501.
    let r = call(
        &app,
        Method::POST,
        "/rest/v1/products",
        None,
        Some(json!({"name": "free", "price": 0})),
        &[],
    )
    .await;
    assert_eq!(r.status, 401, "{:?}", r.body);
    assert_eq!(r.body["code"], "42501");

    // RLS: each user sees and changes only their own notes.
    let r = call(
        &app,
        Method::POST,
        "/rest/v1/notes",
        Some(&ada),
        Some(json!({"body": "ada's"})),
        &[("Prefer", "return=representation")],
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body[0]["author"], "ada");
    let note = r.body[0]["id"].as_i64().unwrap();
    assert_eq!(
        get(&app, "/rest/v1/notes?select=body", Some(&bob))
            .await
            .body,
        json!([])
    );
    let r = call(
        &app,
        Method::PATCH,
        &format!("/rest/v1/notes?id=eq.{note}"),
        Some(&bob),
        Some(json!({"body": "bob was here"})),
        &[("Prefer", "return=representation")],
    )
    .await;
    assert_eq!((r.status, r.body), (200, json!([])));
    let r = call(
        &app,
        Method::POST,
        "/rest/v1/notes",
        Some(&bob),
        Some(json!({"body": "forged", "author": "ada"})),
        &[],
    )
    .await;
    assert_eq!(
        r.status, 403,
        "WITH CHECK refuses a note in another's name: {:?}",
        r.body
    );
    assert_eq!(
        get(&app, "/rest/v1/notes?select=body", Some(&ada))
            .await
            .body,
        json!([{"body": "ada's"}])
    );

    // The surfaces that need the agency schema say so, each in its own error shape.
    let r = call(
        &app,
        Method::POST,
        "/functions/v1/search",
        Some(&ada),
        Some(json!({"query": "x"})),
        &[],
    )
    .await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.body["code"], "schema_missing");
    let msg = r.body["error"].as_str().unwrap();
    assert!(
        msg.contains("/functions/v1 is not available") && msg.contains("agencyflow migrate"),
        "{msg}"
    );
    let r = call(
        &app,
        Method::POST,
        "/functions/v1/documents",
        Some(&ada),
        None,
        &[],
    )
    .await;
    assert_eq!(
        (r.status, r.body["code"].clone()),
        (503, json!("schema_missing"))
    );
    let r = get(&app, "/storage/v1/bucket", Some(&ada)).await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.body["statusCode"], "503");
    assert_eq!(r.body["error"], "DatabaseSchemaMissing");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("storage.buckets"),
        "{:?}",
        r.body
    );
    let r = get(&app, "/storage/v1/object/public/b/x.txt", None).await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    let r = call(
        &app,
        Method::POST,
        "/auth/v1/signup",
        None,
        Some(json!({"email": "a@b.test", "password": "correct horse"})),
        &[],
    )
    .await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.body["code"], 503);
    assert!(
        r.body["msg"].as_str().unwrap().contains("auth.users"),
        "{:?}",
        r.body
    );
    let r = call(
        &app,
        Method::POST,
        "/auth/v1/signup",
        None,
        Some(json!({"email": "a@b.test", "password": "correct horse"})),
        &[("X-Supabase-Api-Version", "2024-01-01")],
    )
    .await;
    assert_eq!(
        (r.status, r.body["code"].clone()),
        (503, json!("unexpected_failure"))
    );
    assert!(r.body["message"].as_str().unwrap().contains("auth.users"));
    // What reads no table still answers.
    assert_eq!(get(&app, "/auth/v1/settings", None).await.status, 200);
    assert_eq!(
        get(&app, "/auth/v1/.well-known/jwks.json", None)
            .await
            .status,
        200
    );
    assert_eq!(get(&app, "/health", None).await.status, 200);
    // Nothing of agencyflow's was created in the database.
    let ours: i64 = own
        .su
        .query_one(
            "select count(*) from pg_namespace where nspname in ('supabase_migrations', 'auth', 'storage', 'private', 'extensions')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ours, 0);
}

#[tokio::test]
async fn ddl_made_outside_is_served_within_a_second_with_the_readme_trigger() {
    let own = Own::new().await;
    own.sql(&readme_sql("watch")).await;
    let app = own.app_with_postgrest_settings().await;
    assert_eq!(get(&app, "/rest/v1/reviews", None).await.status, 404);
    let started = Instant::now();
    own.sql(
        "create table shop.reviews (id int primary key, stars int);
         grant select on shop.reviews to web_anon;
         insert into shop.reviews values (1, 5);",
    )
    .await;
    within(DDL_DEADLINE, "a table created by SQL", || async {
        get(&app, "/rest/v1/reviews?select=stars", None).await.body == json!([{"stars": 5}])
    })
    .await;
    eprintln!("served after {:?}", started.elapsed());
    // A new column, then a dropped table.
    own.sql("alter table shop.reviews add column text text")
        .await;
    within(DDL_DEADLINE, "a column added by SQL", || async {
        get(&app, "/rest/v1/reviews?select=text", None).await.status == 200
    })
    .await;
    own.sql("drop table shop.reviews").await;
    within(DDL_DEADLINE, "a table dropped by SQL", || async {
        let r = get(&app, "/rest/v1/reviews", None).await;
        r.status == 404 && r.body["code"] == "42P01"
    })
    .await;
}

#[tokio::test]
async fn ddl_made_outside_is_served_within_a_second_on_a_migrated_database() {
    // The migration's pgrst_ddl_watch / pgrst_drop_watch event triggers.
    let t = TestDb::new().await;
    let app = t.spawn_app().await;
    let su = t.superuser().await;
    let r = get(&app, "/rest/v1/gizmos", None).await;
    assert_eq!(r.status, 404);
    su.batch_execute(
        "create table public.gizmos (id int primary key, name text);
         insert into public.gizmos values (1, 'one');",
    )
    .await
    .unwrap();
    within(DDL_DEADLINE, "a table created by SQL", || async {
        get(&app, "/rest/v1/gizmos?select=name", None).await.body == json!([{"name": "one"}])
    })
    .await;
    su.batch_execute("drop table public.gizmos").await.unwrap();
    within(DDL_DEADLINE, "a table dropped by SQL", || async {
        get(&app, "/rest/v1/gizmos", None).await.status == 404
    })
    .await;
    // Which surfaces the database can serve is read again with the schema: storage goes
    // when its tables go (and its requests get the 503, not a 500 per request).
    let storage = || async { get(&app, "/storage/v1/bucket", Some(&app.service_role_key)).await };
    assert_eq!(storage().await.status, 200);
    su.batch_execute("drop table storage.objects cascade")
        .await
        .unwrap();
    within(DDL_DEADLINE, "storage turned off", || async {
        let r = storage().await;
        r.status == 503
            && r.body["message"]
                .as_str()
                .unwrap_or("")
                .contains("storage.objects")
    })
    .await;
}

#[tokio::test]
async fn pgrst_settings_in_the_database_win_over_flags_and_reload() {
    let own = Own::new().await;
    own.sql(
        "insert into shop.products (name, price) values ('a', 1), ('b', 2), ('c', 3);
         create schema util;
         grant usage on schema util to web_anon;
         create function util.two() returns int language sql immutable as $$ select 2 $$;
         create function shop.forty() returns int language plpgsql immutable as $$ begin return 40; end $$;
         -- Unqualified: the request's schema, then the extra search path, resolve them.
         create function shop.answer() returns int language plpgsql stable as $$ begin return forty() + two(); end $$;
         create function shop.check_request() returns void language plpgsql as $$
         begin
           perform set_config('response.headers', '[{\"x-checked\": \"yes\"}]', true);
         end $$;
         alter role shop_authenticator set pgrst.db_schemas = 'shop';
         alter role shop_authenticator set pgrst.db_anon_role = 'web_anon';
         alter role shop_authenticator set pgrst.db_max_rows = '2';
         alter role shop_authenticator set pgrst.db_extra_search_path = 'util';
         alter role shop_authenticator set pgrst.db_pre_request = 'shop.check_request';",
    )
    .await;
    // A database's own setting is not PostgREST configuration.
    own.su
        .batch_execute(&format!(
            "alter database {} set pgrst.db_max_rows = '3'",
            own.t.name
        ))
        .await
        .unwrap();
    // The flags say otherwise: public, anon, 1000 rows, no extra search path.
    let app = own
        .app(&[
            "--db-schemas",
            "public",
            "--db-anon-role",
            "anon",
            "--db-max-rows",
            "1000",
            "--db-extra-search-path",
            "public",
        ])
        .await;
    let r = get(&app, "/rest/v1/products?select=name&order=id", None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body,
        json!([{"name": "a"}, {"name": "b"}]),
        "db_schemas, db_anon_role, db_max_rows"
    );
    assert_eq!(r.headers["x-checked"], "yes", "db_pre_request");
    let r = get(&app, "/rest/v1/rpc/answer", None).await;
    assert_eq!((r.status, r.body.clone()), (200, json!(42)), "{:?}", r.body);

    // A setting for this database wins over the role's setting for all of them; read again
    // on NOTIFY pgrst, 'reload config'.
    own.sql(&format!(
        "alter role shop_authenticator in database {} set pgrst.db_max_rows = '1';
         notify pgrst, 'reload config';",
        own.t.name
    ))
    .await;
    within(Duration::from_secs(5), "db_max_rows reloaded", || async {
        get(&app, "/rest/v1/products?select=name&order=id", None)
            .await
            .body
            == json!([{"name": "a"}])
    })
    .await;
    // Exposing another schema through the database reloads the schema cache for it.
    own.sql(
        "create schema extra;
         create table extra.things (id int);
         grant usage on schema extra to web_anon;
         grant select on extra.things to web_anon;
         alter role shop_authenticator set pgrst.db_schemas = 'shop, extra';
         notify pgrst, 'reload config';",
    )
    .await;
    within(Duration::from_secs(5), "db_schemas reloaded", || async {
        let r = call(
            &app,
            Method::GET,
            "/rest/v1/things",
            None,
            None,
            &[("Accept-Profile", "extra")],
        )
        .await;
        r.status == 200
    })
    .await;

    // PGRST_DB_CONFIG=false: the database's pgrst.* are not read.
    let app = own
        .app(&[
            "--db-config",
            "false",
            "--db-schemas",
            "shop",
            "--db-anon-role",
            "web_anon",
        ])
        .await;
    let r = get(&app, "/rest/v1/products?select=name&order=id", None).await;
    assert_eq!(r.body, json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]));
    assert!(r.headers.get("x-checked").is_none());
    // Without the extra search path, two() is unknown.
    let r = get(&app, "/rest/v1/rpc/answer", None).await;
    assert_ne!(r.status, 200, "{:?}", r.body);

    // A bad value in the database stops the start with the setting's name.
    own.sql(&format!(
        "alter role shop_authenticator in database {} set pgrst.db_max_rows = 'many'",
        own.t.name
    ))
    .await;
    let own_api = own.t.url_as(&own.login);
    let e = agencyflow_testkit::agencyflow_server::run::build_state(
        &own_api,
        serve_args(&[]),
        app.keys.clone(),
        None,
    )
    .await
    .err()
    .expect("a bad pgrst.db_max_rows is refused");
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(e.to_string().contains("pgrst.db_max_rows"), "{e}");
}

fn serve_args(extra: &[&str]) -> agencyflow_testkit::agencyflow_server::config::ServeArgs {
    use agencyflow_testkit::agencyflow_server::config::{Cli, Command};
    use clap::Parser;
    let mut v = vec!["agencyflow", "serve", "--db-pool", "2"];
    v.extend_from_slice(extra);
    match Cli::try_parse_from(v).unwrap().command {
        Command::Serve(s) => s,
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn pre_request_runs_first_and_its_error_aborts_the_request() {
    let own = Own::new().await;
    own.sql(
        "create table shop.audit (what text);
         grant insert on shop.audit to web_user;
         create function shop.check_request() returns void language plpgsql as $$
         begin
           if current_setting('request.headers', true)::json ->> 'x-blocked' = 'yes' then
             raise sqlstate 'PT403' using message = 'blocked by the pre-request',
               detail = current_setting('role') || ' ' || current_setting('request.method', true);
           end if;
           if current_setting('request.method', true) <> 'GET' then
             insert into shop.audit values (current_setting('request.method', true));
           end if;
         end $$;",
    )
    .await;
    let app = own
        .app(&[
            "--db-schemas",
            "shop",
            "--db-anon-role",
            "web_anon",
            "--api-roles",
            "web_user",
            "--db-pre-request",
            "shop.check_request",
        ])
        .await;
    let ada = own.user_token(&app, "ada");
    let blocked = [("x-blocked", "yes")];
    // Reads (one Sync) and writes (a transaction) alike; it runs as the request's role, with
    // the request's settings, before the statement.
    let r = call(&app, Method::GET, "/rest/v1/products", None, None, &blocked).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(r.body["message"], "blocked by the pre-request");
    assert_eq!(r.body["details"], format!("{} GET", own.anon));
    let r = call(
        &app,
        Method::POST,
        "/rest/v1/products",
        Some(&ada),
        Some(json!({"name": "kettle", "price": 1})),
        &blocked,
    )
    .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(r.body["details"], format!("{} POST", own.user));
    let count = |sql: &'static str| {
        let su = &own.su;
        async move { su.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(
        count("select count(*) from shop.products").await,
        0,
        "nothing written"
    );
    // Allowed: the request goes on in the same transaction as the pre-request's writes.
    let r = call(
        &app,
        Method::POST,
        "/rest/v1/products",
        Some(&ada),
        Some(json!({"name": "kettle", "price": 1})),
        &[],
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(count("select count(*) from shop.audit").await, 1);
    for _ in 0..3 {
        // The same statement again, now prepared on the connection.
        let r = get(&app, "/rest/v1/products?select=name", None).await;
        assert_eq!((r.status, r.body), (200, json!([{"name": "kettle"}])));
        let r = call(
            &app,
            Method::GET,
            "/rest/v1/products?select=name",
            None,
            None,
            &blocked,
        )
        .await;
        assert_eq!(r.status, 403);
    }
    // A missing function is an error, not a silent skip.
    own.sql("drop function shop.check_request()").await;
    let r = get(&app, "/rest/v1/products", None).await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    assert_eq!(r.body["code"], "42883");
}

#[tokio::test]
async fn role_settings_apply_per_request_and_reload() {
    let own = Own::new().await;
    own.sql(
        "create function shop.slow() returns int language sql as $$ select 1 from pg_sleep(0.3) $$;
         alter role web_anon set statement_timeout = '100ms';
         -- Not a setting the login role may make: PostgREST leaves it out (it would make
         -- every request of the role fail).
         alter role web_anon set log_min_duration_statement = '1000';",
    )
    .await;
    let app = own.app_with_postgrest_settings().await;
    let r = call(
        &app,
        Method::POST,
        "/rest/v1/rpc/slow",
        None,
        Some(json!({})),
        &[],
    )
    .await;
    assert_eq!(r.status, 500, "{:?}", r.body);
    assert_eq!(
        r.body["code"], "57014",
        "statement_timeout of the role: {:?}",
        r.body
    );
    let ada = own.user_token(&app, "ada");
    let r = call(
        &app,
        Method::POST,
        "/rest/v1/rpc/slow",
        Some(&ada),
        Some(json!({})),
        &[],
    )
    .await;
    assert_eq!(
        (r.status, r.body),
        (200, json!(1)),
        "another role, no timeout"
    );
    assert_eq!(get(&app, "/rest/v1/products", None).await.status, 200);
    // Read again on reload.
    own.sql("alter role web_anon set statement_timeout = '5s'; notify pgrst, 'reload config'")
        .await;
    within(
        Duration::from_secs(5),
        "the role's new statement_timeout",
        || async {
            call(
                &app,
                Method::POST,
                "/rest/v1/rpc/slow",
                None,
                Some(json!({})),
                &[],
            )
            .await
            .status
                == 200
        },
    )
    .await;
}

#[tokio::test]
async fn migrating_later_turns_the_agency_surfaces_on_without_a_restart() {
    let t = TestDb::empty().await;
    let app = t.spawn_app().await;
    let buckets = || async {
        get(&app, "/storage/v1/bucket", Some(&app.service_role_key))
            .await
            .status
    };
    assert_eq!(buckets().await, 503);
    let mut owner = agencyflow_testkit::agencyflow_db::connect_one(&t.admin_url())
        .await
        .unwrap();
    // What `agencyflow migrate` does; its NOTIFY pgrst reloads the running server.
    agencyflow_testkit::agencyflow_db::migrate::apply(
        &mut owner,
        &agencyflow_testkit::agencyflow_db::migrate::embedded(),
        |_| {},
    )
    .await
    .unwrap();
    within(Duration::from_secs(5), "storage turned on", || async {
        buckets().await == 200
    })
    .await;
    let r = call(
        &app,
        Method::POST,
        "/functions/v1/search",
        None,
        Some(json!({"query": "x"})),
        &[],
    )
    .await;
    assert_eq!(r.status, 401, "the functions answer: {:?}", r.body);
}
