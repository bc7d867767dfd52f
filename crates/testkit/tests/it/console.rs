//! The operator console's API (`/console/api`, docs/console.md) and its security: no session
//! → 401, no CSRF token → 403, the cookie's flags, throttled sign-in, "view as" and the SQL
//! page under RLS, the console schema out of every API role's reach, the audit log.
use agencyflow_testkit::TestApp;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::rest::{fixture_with, Fx};

const EMAIL: &str = "ops@agency.test";
const PASSWORD: &str = "correct horse battery";

/// A signed-in operator: the session cookie and the CSRF token, sent by hand (no cookie jar,
/// so each test says exactly what it sends).
struct Operator<'a> {
    app: &'a TestApp,
    cookie: String,
    csrf: String,
}

impl Operator<'_> {
    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self
            .app
            .http
            .request(method.clone(), self.app.url(&format!("/console/api{path}")))
            .header("cookie", &self.cookie);
        if method == Method::GET {
            rb
        } else {
            rb.header("x-csrf-token", &self.csrf)
        }
    }

    async fn get(&self, path: &str) -> Value {
        let r = self.req(Method::GET, path).send().await.expect("get");
        let status = r.status();
        let body: Value = r.json().await.expect("json");
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    async fn send(&self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .req(method, path)
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, method: Method, path: &str, body: Value) -> Value {
        let (status, v) = self.send(method.clone(), path, body).await;
        assert_eq!(status, StatusCode::OK, "{method} {path}: {v}");
        v
    }

    async fn sql(&self, sql: &str, r#as: &str) -> Value {
        self.ok(Method::POST, "/sql", json!({"sql": sql, "as": r#as}))
            .await
    }
}

async fn add_admin(fx: &Fx) {
    agencyflow_console::session::add_admin(&fx.su, EMAIL, Some(PASSWORD.into()))
        .await
        .expect("add admin");
}

async fn sign_in_raw(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.http
        .post(app.url("/console/api/sign-in"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("sign in")
}

fn session_cookie(r: &reqwest::Response) -> String {
    let set = r
        .headers()
        .get("set-cookie")
        .expect("set-cookie")
        .to_str()
        .unwrap();
    set.split(';').next().unwrap().to_string()
}

async fn sign_in(app: &TestApp) -> Operator<'_> {
    let r = sign_in_raw(app, EMAIL, PASSWORD).await;
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = session_cookie(&r);
    let body: Value = r.json().await.unwrap();
    Operator {
        app,
        cookie,
        csrf: body["csrf"].as_str().unwrap().to_string(),
    }
}

async fn user_id(fx: &Fx, email: &str) -> uuid::Uuid {
    fx.su
        .query_one("select id from auth.users where email = $1", &[&email])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn console_refuses_api_calls_without_a_session_and_serves_its_page_with_a_strict_csp() {
    let fx = fixture_with(&[]).await;
    let app = &fx.app;
    for (method, path) in [
        (Method::GET, "/console/api/tables"),
        (Method::GET, "/console/api/session"),
        (Method::GET, "/console/api/audit"),
        (Method::POST, "/console/api/sql"),
        (Method::POST, "/console/api/keys"),
    ] {
        let r = app
            .http
            .request(method.clone(), app.url(path))
            .header("cookie", "af_console=forged-or-expired")
            .json(&json!({"sql": "select 1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["message"].as_str().unwrap().contains("sign in"),
            "{body}"
        );
    }
    let r = app.http.get(app.url("/console/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let html = r.text().await.unwrap();
    assert!(html.contains("/console/assets/console.js") && !html.contains("<script>"));
    // `/` leads to the console.
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(app.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/console/");
}

#[tokio::test]
async fn console_cookie_is_httponly_strict_and_secure_behind_tls_and_writes_need_the_csrf_token() {
    let fx = fixture_with(&[]).await;
    add_admin(&fx).await;
    let app = &fx.app;
    let r = sign_in_raw(app, EMAIL, PASSWORD).await;
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.starts_with("af_console="), "{set}");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(set.contains(flag), "{set} lacks {flag}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    let tls = app
        .http
        .post(app.url("/console/api/sign-in"))
        .header("x-forwarded-proto", "https")
        .json(&json!({"email": EMAIL, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert!(tls.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("; Secure"));

    let op = sign_in(app).await;
    // Reads need only the session.
    op.get("/tables").await;
    // A state-changing call without the token, with a wrong one, or from another origin.
    let no_token = app
        .http
        .post(app.url("/console/api/sql"))
        .header("cookie", &op.cookie)
        .json(&json!({"sql": "select 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), StatusCode::FORBIDDEN);
    let wrong = app
        .http
        .post(app.url("/console/api/sql"))
        .header("cookie", &op.cookie)
        .header("x-csrf-token", "x".repeat(op.csrf.len()))
        .json(&json!({"sql": "select 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let cross = op
        .req(Method::POST, "/sql")
        .header("origin", "https://evil.example")
        .json(&json!({"sql": "select 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    let r = op.sql("select 1 as one", "service_role").await;
    assert_eq!(r["results"][0]["rows"], json!([["1"]]));
    // Signing out ends the session.
    op.ok(Method::POST, "/sign-out", json!({})).await;
    let r = op.req(Method::GET, "/tables").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn console_sign_in_is_throttled_per_ip_and_account() {
    let fx = fixture_with(&["--console-sign-in-limit", "3"]).await;
    add_admin(&fx).await;
    for _ in 0..3 {
        let r = sign_in_raw(&fx.app, EMAIL, "wrong password!").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // Past the limit even the right password waits.
    let r = sign_in_raw(&fx.app, EMAIL, PASSWORD).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let rows = fx
        .su
        .query(
            "select action from console.audit_log where admin_email = $1 order by id",
            &[&EMAIL],
        )
        .await
        .unwrap();
    let actions: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        actions,
        [
            "sign_in.failed",
            "sign_in.failed",
            "sign_in.failed",
            "sign_in.throttled"
        ]
    );
}

#[tokio::test]
async fn console_view_as_a_member_of_org_a_sees_none_of_org_b_and_sql_as_a_user_is_under_rls() {
    let fx = fixture_with(&[]).await;
    add_admin(&fx).await;
    let op = sign_in(&fx.app).await;
    let alice = user_id(&fx, "alice@a.test").await;
    let q = |r#as: &str| {
        format!(
            "/tables/public/clients/rows?q={}",
            urlencode(&json!({"as": r#as, "order": {"column": "name"}}).to_string())
        )
    };
    let all = op.get(&q("service_role")).await;
    let names = |v: &Value| -> Vec<String> {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&all), ["Acme", "Beta Co", "Bravo Secret", "Gamma"]);
    let as_alice = op.get(&q(&format!("user:{alice}"))).await;
    assert_eq!(names(&as_alice), ["Acme", "Beta Co", "Gamma"]);
    assert!(as_alice["rows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["org_id"] == json!(fx.org_a)));
    let as_anon = op.get(&q("anon")).await;
    assert_eq!(as_anon["rows"], json!([]));

    // The SQL page: the same statement as service_role and as alice.
    let count = "select count(*) from clients";
    let r = op.sql(count, "service_role").await;
    assert_eq!(r["results"][0]["rows"], json!([["4"]]));
    let r = op.sql(count, &format!("user:{alice}")).await;
    assert_eq!(r["results"][0]["rows"], json!([["3"]]), "{r}");
    assert_eq!(r["role"], "authenticated");
    let r = op
        .sql(
            &format!("select count(*) from clients where org_id = '{}'", fx.org_b),
            &format!("user:{alice}"),
        )
        .await;
    assert_eq!(r["results"][0]["rows"], json!([["0"]]));
    // A user's write to another tenant changes nothing.
    let r = op
        .sql(
            &format!(
                "update clients set name = 'pwned' where org_id = '{}'",
                fx.org_b
            ),
            &format!("user:{alice}"),
        )
        .await;
    assert_eq!(r["results"][0]["row_count"], 0);

    let audit = op.get("/audit").await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in ["sign_in", "tables.view_as", "sql.run"] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    let view_as = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["action"] == "tables.view_as" && e["detail"]["as"] == json!(format!("user:{alice}"))
        })
        .expect("view-as audit row");
    assert_eq!(view_as["admin"], EMAIL);
    assert_eq!(view_as["target"], "public.clients");
    assert!(view_as["ip"].as_str().unwrap().starts_with("127.0.0.1"));
}

#[tokio::test]
async fn console_browses_with_filters_and_keyset_pages_and_edits_rows_with_an_audit_trail() {
    let fx = fixture_with(&[]).await;
    add_admin(&fx).await;
    fx.su
        .batch_execute(&format!(
            "insert into clients (org_id, name) select '{}', 'Bulk ' || lpad(n::text, 3, '0') from generate_series(1, 45) n",
            fx.org_a
        ))
        .await
        .unwrap();
    let op = sign_in(&fx.app).await;
    let list = op.get("/tables").await;
    let clients = list["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "clients")
        .unwrap();
    assert_eq!(clients["count"], 49);
    assert_eq!(clients["exact"], true);
    let meta = op.get("/tables/public/clients").await;
    assert_eq!(meta["primary_key"], json!(["id"]));
    let status = meta["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "status")
        .unwrap();
    assert!(
        status["enum_values"].is_array() || status["type"] == "text",
        "{status}"
    );
    assert!(meta["foreign_keys"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["ref_table"] == "organizations"));

    // Filter, sort descending, walk every page by keyset: each row once, in order.
    let mut seen = Vec::new();
    let mut after: Option<Value> = None;
    loop {
        let mut spec = json!({
            "filters": [{"column": "name", "op": "like", "value": "Bulk*"}],
            "order": {"column": "name", "desc": true},
            "limit": 20,
        });
        if let Some(a) = &after {
            spec["after"] = a.clone();
        }
        let page = op
            .get(&format!(
                "/tables/public/clients/rows?q={}",
                urlencode(&spec.to_string())
            ))
            .await;
        let rows = page["rows"].as_array().unwrap();
        seen.extend(rows.iter().map(|r| r["name"].as_str().unwrap().to_string()));
        if page["more"] != true {
            break;
        }
        let last = rows.last().unwrap();
        after = Some(json!([last["name"], last["id"]]));
    }
    let expected: Vec<String> = (1..=45).rev().map(|n| format!("Bulk {n:03}")).collect();
    assert_eq!(seen, expected);

    // Insert, update, delete through /rest/v1 as service_role.
    let xss = "<img src=x onerror=alert(1)>";
    let ins = op
        .ok(
            Method::POST,
            "/tables/public/clients/rows",
            json!({"values": {"org_id": fx.org_a, "name": xss}}),
        )
        .await;
    let id = ins["rows"][0]["id"].clone();
    assert_eq!(ins["rows"][0]["name"], xss);
    op.ok(
        Method::PATCH,
        "/tables/public/clients/rows",
        json!({"key": {"id": id}, "values": {"notes": "edited in the console", "health_score": 77}}),
    )
    .await;
    let row = fx
        .su
        .query_one(
            "select notes, health_score from clients where id = $1::text::uuid",
            &[&id.as_str().unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("edited in the console")
    );
    // The database's own words come back (a check constraint).
    let (status, err) = op
        .send(
            Method::PATCH,
            "/tables/public/clients/rows",
            json!({"key": {"id": id}, "values": {"health_score": 1000}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("check constraint"),
        "{err}"
    );
    op.ok(
        Method::DELETE,
        "/tables/public/clients/rows",
        json!({"key": {"id": id}}),
    )
    .await;
    let left: i64 = fx
        .su
        .query_one("select count(*) from clients where name = $1", &[&xss])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    // CSV export of the filtered rows.
    let csv = op
        .req(
            Method::GET,
            &format!(
                "/tables/public/clients/csv?q={}",
                urlencode(
                    &json!({"filters": [{"column": "name", "op": "eq", "value": "Acme"}]})
                        .to_string()
                )
            ),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(csv.lines().nth(1).unwrap().contains("Acme"));

    let audit = op.get("/audit?action=tables.").await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "tables.export_csv",
            "tables.delete",
            "tables.update",
            "tables.insert"
        ]
    );
}

#[tokio::test]
async fn console_schema_is_out_of_reach_of_every_api_role_and_the_audit_log_is_append_only() {
    let fx = fixture_with(&[]).await;
    add_admin(&fx).await;
    let op = sign_in(&fx.app).await;
    let alice = user_id(&fx, "alice@a.test").await;
    for who in [
        "service_role".to_string(),
        "anon".into(),
        format!("user:{alice}"),
    ] {
        for sql in [
            "select * from console.admins",
            "select * from console.sessions",
            "delete from console.audit_log",
            // The SQL page's connection is authenticator's: leaving the role gains nothing.
            "reset role; select password_hash from console.admins",
            "set role supabase_auth_admin",
        ] {
            let (status, err) = op
                .send(Method::POST, "/sql", json!({"sql": sql, "as": who}))
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{who}: {sql}: {err}");
            assert_eq!(err["code"], "42501", "{who}: {sql}: {err}");
        }
    }
    // Nor through /rest/v1 with the service_role key.
    let r = fx
        .app
        .http
        .get(fx.app.url("/rest/v1/admins"))
        .header("apikey", &fx.app.service_role_key)
        .header(
            "authorization",
            format!("Bearer {}", fx.app.service_role_key),
        )
        .header("accept-profile", "console")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE);
    // The console's own login may only append to the audit log.
    let auth_admin =
        agencyflow_testkit::agencyflow_db::connect_one(&fx._db.url_as("supabase_auth_admin"))
            .await
            .unwrap();
    let e = auth_admin
        .execute("delete from console.audit_log", &[])
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "42501");
}

#[tokio::test]
async fn console_setup_link_and_dashboard_credentials_sign_in() {
    let fx = fixture_with(&[
        "--dashboard-username",
        "supabase",
        "--dashboard-password",
        "this-is-the-dashboard-password",
    ])
    .await;
    // DASHBOARD_USERNAME / DASHBOARD_PASSWORD.
    let r = sign_in_raw(&fx.app, "supabase", "this-is-the-dashboard-password").await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = sign_in_raw(&fx.app, "supabase", "not-the-password").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A one-time setup link: usable once, and the account then signs in with its password.
    let token = agencyflow_console::session::add_admin(&fx.su, "new@agency.test", None)
        .await
        .unwrap()
        .expect("a setup token");
    let r = sign_in_raw(&fx.app, "new@agency.test", "").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let setup = |password: &'static str| {
        fx.app
            .http
            .post(fx.app.url("/console/api/setup"))
            .json(&json!({"token": token, "password": password}))
            .send()
    };
    assert_eq!(
        setup("short").await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    let r = setup("a long new password").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("HttpOnly"));
    assert_eq!(
        setup("another long password").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let r = sign_in_raw(&fx.app, "new@agency.test", "a long new password").await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn console_auth_and_storage_pages_act_through_the_surfaces() {
    let fx = fixture_with(&[]).await;
    add_admin(&fx).await;
    let op = sign_in(&fx.app).await;
    // Users: create, invite (a link), ban, sign out everywhere, delete.
    let u = op
        .ok(
            Method::POST,
            "/users",
            json!({"email": "staff@agency.test", "password": "staff-password-1", "confirm": true}),
        )
        .await;
    let id = u["id"].as_str().unwrap().to_string();
    let inv = op
        .ok(
            Method::POST,
            "/users/invite",
            json!({"email": "invitee@agency.test"}),
        )
        .await;
    assert!(
        inv["action_link"].as_str().unwrap().contains("/verify"),
        "{inv}"
    );
    let found = op.get("/users?q=invitee").await;
    assert_eq!(found["total"], 1);
    op.ok(Method::POST, &format!("/users/{id}/ban"), json!({}))
        .await;
    let banned: bool = fx
        .su
        .query_one(
            "select banned_until > now() from auth.users where id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(banned);
    op.ok(Method::POST, &format!("/users/{id}/unban"), json!({}))
        .await;
    op.ok(Method::POST, &format!("/users/{id}/sign-out"), json!({}))
        .await;
    op.ok(Method::DELETE, &format!("/users/{id}"), json!({}))
        .await;
    // Storage: bucket, upload, list, preview bytes, signed link, delete.
    op.ok(
        Method::POST,
        "/storage/buckets",
        json!({"name": "docs", "public": false}),
    )
    .await;
    let r = op
        .req(
            Method::POST,
            "/storage/object?bucket=docs&path=notes/hello.txt",
        )
        .header("content-type", "text/plain")
        .body("hello console")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let list = op.get("/storage/list?bucket=docs&prefix=notes").await;
    assert_eq!(list[0]["name"], "hello.txt");
    let r = op
        .req(
            Method::GET,
            "/storage/object?bucket=docs&path=notes/hello.txt",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-security-policy"],
        "sandbox; default-src 'none'"
    );
    assert_eq!(r.text().await.unwrap(), "hello console");
    let signed = op
        .ok(
            Method::POST,
            "/storage/sign",
            json!({"bucket": "docs", "path": "notes/hello.txt"}),
        )
        .await;
    let url = signed["url"].as_str().unwrap();
    assert!(
        url.contains("/storage/v1/object/sign/docs/notes/hello.txt?token="),
        "{url}"
    );
    let fetched = fx.app.http.get(fx.app.url(url)).send().await.unwrap();
    assert_eq!(fetched.text().await.unwrap(), "hello console");
    op.ok(
        Method::DELETE,
        "/storage/object",
        json!({"bucket": "docs", "paths": ["notes/hello.txt"]}),
    )
    .await;
    assert_eq!(
        op.get("/storage/list?bucket=docs&prefix=notes").await,
        json!([])
    );
    // The other pages answer.
    for page in [
        "/database",
        "/ai",
        "/health",
        "/requests",
        "/api-info",
        "/auth-settings",
    ] {
        op.get(page).await;
    }
    let audit = op.get("/audit").await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "auth.user.create",
        "auth.user.invite",
        "auth.user.ban",
        "auth.user.sign-out",
        "auth.user.delete",
        "storage.bucket.create",
        "storage.object.upload",
        "storage.object.sign",
        "storage.object.delete",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The console in headless Chromium (e2e/console.test.js) on the demo agency, with 150 more
/// clients in Northwind (org A) to page through and one named like an XSS payload.
#[tokio::test]
async fn console_e2e_in_headless_chromium() {
    let t = agencyflow_testkit::TestDb::new().await;
    let su = t.superuser().await;
    su.batch_execute(agencyflow_server_seed())
        .await
        .expect("demo seed");
    let org_a = "d0000000-0000-4000-8000-000000000001";
    su.batch_execute(&format!(
        "insert into clients (org_id, name) select '{org_a}', 'Bulk ' || lpad(n::text, 3, '0') from generate_series(1, 150) n;
         insert into clients (org_id, name) values ('{org_a}', '<img src=x onerror=alert(1)>');"
    ))
    .await
    .unwrap();
    let org_a_clients: i64 = su
        .query_one(
            "select count(*) from clients where org_id = $1::text::uuid",
            &[&org_a],
        )
        .await
        .unwrap()
        .get(0);
    let org_b_client: String = su
        .query_one(
            "select name from clients where org_id <> $1::text::uuid and name not in (select name from clients where org_id = $1::text::uuid) limit 1",
            &[&org_a],
        )
        .await
        .unwrap()
        .get(0);
    // A table breaking the linter's rules, named like an XSS payload (the Database page
    // shows it as text).
    su.batch_execute(r#"create table public."<img src=x onerror=alert(1)>" (note text)"#)
        .await
        .unwrap();
    agencyflow_console::session::add_admin(&su, EMAIL, Some(PASSWORD.into()))
        .await
        .unwrap();
    let backups = tempfile::tempdir().unwrap();
    let app = t
        .spawn_app_with(&["--backup-dir", backups.path().to_str().unwrap()])
        .await;
    // The server's log tail holds an XSS payload (the Logs page shows it as text).
    tracing::warn!(
        client = "<img src=x onerror=alert(1)>",
        "<img src=x onerror=alert(1)>"
    );
    let shots =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
    app.run_node_test_with_env(
        "console.test.js",
        &[
            ("CONSOLE_EMAIL", EMAIL),
            ("CONSOLE_PASSWORD", PASSWORD),
            ("VIEW_AS_EMAIL", "member@northwind.example"),
            ("ORG_A", org_a),
            ("ORG_A_CLIENTS", &org_a_clients.to_string()),
            ("ORG_B_CLIENT", &org_b_client),
            ("SCREENSHOT_DIR", shots.to_str().unwrap()),
        ],
    )
    .await;
    // BENCHMARKS.md: the console's first load, as the browser measured it.
    let first = std::fs::read_to_string(shots.join("first-load.json")).unwrap();
    let v: Value = serde_json::from_str(&first).unwrap();
    eprintln!(
        "console first load: {} bytes in {} requests, interactive at {:.0} ms (DOMContentLoaded {:.0} ms, load {:.0} ms)",
        v["bytes"], v["requests"], v["tti_ms"].as_f64().unwrap(), v["dom_content_loaded_ms"].as_f64().unwrap(), v["load_ms"].as_f64().unwrap()
    );
}

fn agencyflow_server_seed() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "set search_path = public, extensions;\n{}",
            agencyflow_testkit::agencyflow_server::SEED_DEMO_SQL
        )
    })
}

/// BENCHMARKS.md, console: a page of 100 `clients` through the console's rows API with
/// 1,000,000 rows in the table, first page and last page (keyset on the primary key), and
/// sorted by an unindexed column. Long (the insert): `--ignored`.
#[tokio::test]
#[ignore]
async fn console_bench_pages_of_a_million_rows() {
    let fx = fixture_with(&[]).await;
    add_admin(&fx).await;
    let started = std::time::Instant::now();
    fx.su
        .batch_execute(&format!(
            "insert into clients (org_id, name) select '{}', 'Row ' || n from generate_series(1, 1000000) n; analyze clients;",
            fx.org_a
        ))
        .await
        .unwrap();
    eprintln!("inserted 1,000,000 clients in {:?}", started.elapsed());
    let op = sign_in(&fx.app).await;
    let last_ids: Vec<String> = fx
        .su
        .query(
            "select id::text from clients order by id desc offset 100 limit 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let cases = [
        ("first page (by id)", json!({"limit": 100})),
        (
            "last page (by id, keyset)",
            json!({"limit": 100, "after": [last_ids[0], last_ids[0]]}),
        ),
        (
            "first page sorted by name (no index)",
            json!({"limit": 100, "order": {"column": "name"}}),
        ),
    ];
    for (label, spec) in cases {
        let path = format!(
            "/tables/public/clients/rows?q={}",
            urlencode(&spec.to_string())
        );
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = std::time::Instant::now();
            let v = op.get(&path).await;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            assert!(!v["rows"].as_array().unwrap().is_empty());
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        eprintln!(
            "{label}: median {:.1} ms (min {:.1}, max {:.1})",
            times[2], times[0], times[4]
        );
    }
    let t = std::time::Instant::now();
    let list = op.get("/tables").await;
    eprintln!(
        "table list with counts: {:.1} ms ({} tables)",
        t.elapsed().as_secs_f64() * 1000.0,
        list["tables"].as_array().unwrap().len()
    );
}

/// Polls a console GET until `done` holds (a deadline, no sleeps to wait for a condition).
async fn poll_until(
    op: &Operator<'_>,
    path: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let v = op.get(path).await;
        if done(&v) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn audit_actions(op: &Operator<'_>, prefix: &str) -> Vec<String> {
    op.get(&format!("/audit?action={prefix}")).await["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

/// Logs & health: the server's own log tail (filtered by level, secrets redacted), the
/// supervisor (none on a DATABASE_URL-style database), and "take a backup now" as a
/// background job whose archive is a valid backup, audited.
#[tokio::test]
async fn console_logs_and_health_show_the_log_tail_and_take_a_backup_now() {
    let backups = tempfile::tempdir().unwrap();
    let fx = fixture_with(&["--backup-dir", backups.path().to_str().unwrap()]).await;
    add_admin(&fx).await;
    let op = sign_in(&fx.app).await;

    // The tail: this process's events, as the server's are (one subscriber per process).
    let jwt = fx.app.service_role_key.clone();
    let marker = uuid::Uuid::new_v4().to_string();
    tracing::warn!(password = "hunter2-in-a-test", marker = %marker, "console test warning carrying {jwt}");
    tracing::info!(marker = %marker, "console test info");
    let warn = op.get("/logs?level=warn").await;
    let text = warn.to_string();
    assert!(
        !text.contains("hunter2-in-a-test") && !text.contains(&jwt),
        "{text}"
    );
    let mine: Vec<&Value> = warn["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["fields"]["marker"] == marker.as_str())
        .collect();
    assert_eq!(mine.len(), 1, "{text}");
    assert_eq!(mine[0]["level"], "WARN");
    assert_eq!(
        mine[0]["message"],
        "console test warning carrying [redacted jwt]"
    );
    assert_eq!(mine[0]["fields"]["password"], "[redacted]");
    let info = op.get("/logs?level=info").await;
    assert_eq!(
        info["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["fields"]["marker"] == marker.as_str())
            .count(),
        2
    );
    let (status, _) = op.send(Method::GET, "/logs?level=loud", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // No embedded cluster here: the page says there is no supervisor.
    let health = op.get("/health").await;
    assert_eq!(health["supervisor"], Value::Null, "{health}");

    // Take a backup now: CSRF needed, runs in the background, its result shown and audited.
    let before = op.get("/backups").await;
    assert_eq!(before["available"], true, "{before}");
    assert_eq!(before["archives"], json!([]));
    let refused = fx
        .app
        .http
        .post(fx.app.url("/console/api/backups"))
        .header("cookie", &op.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let started = op.ok(Method::POST, "/backups", json!({})).await;
    assert_eq!(started["state"], "running");
    let file = started["file"].as_str().unwrap().to_string();
    let done = poll_until(&op, "/backups", "the backup job to end", |v| {
        v["jobs"][0]["state"] != "running"
    })
    .await;
    assert_eq!(done["jobs"][0]["state"], "done", "{done}");
    assert_eq!(done["jobs"][0]["by"], EMAIL);
    assert!(
        done["jobs"][0]["result"]["bytes"].as_u64().unwrap() > 10_000,
        "{done}"
    );
    assert_eq!(done["archives"][0]["name"], file.as_str(), "{done}");
    let manifest = agencyflow_testkit::agencyflow_server::backup::archive::read_manifest(
        &backups.path().join(&file),
    )
    .expect("a valid archive");
    assert!(!manifest.migrations.is_empty());
    assert_eq!(
        audit_actions(&op, "backups.").await,
        ["backups.done", "backups.take"]
    );
}

/// Realtime: connections, channels and events per second come from the realtime crate's own
/// counters (those /metrics renders).
#[tokio::test]
async fn console_realtime_page_counts_connections_channels_and_events_per_second() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let fx = fixture_with(&[]).await;
    add_admin(&fx).await;
    let op = sign_in(&fx.app).await;
    let idle = op.get("/realtime").await;
    assert_eq!(idle["enabled"], true, "{idle}");
    assert_eq!(idle["now"]["connections"], 0);
    let url = format!(
        "{}/realtime/v1/websocket?apikey={}&vsn=1.0.0",
        fx.app.base.replace("http://", "ws://"),
        fx.app.anon_key
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    let msg = |r: u32, event: &str, payload: Value| {
        Message::Text(
            json!({"join_ref": "1", "ref": r.to_string(), "topic": "realtime:console-room", "event": event, "payload": payload})
                .to_string()
                .into(),
        )
    };
    ws.send(msg(
        1,
        "phx_join",
        json!({"config": {"broadcast": {"self": true}}}),
    ))
    .await
    .unwrap();
    // The join's reply.
    loop {
        let m = tokio::time::timeout(std::time::Duration::from_secs(20), ws.next())
            .await
            .expect("a reply")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["event"] == "phx_reply" {
                assert_eq!(v["payload"]["status"], "ok", "{v}");
                break;
            }
        }
    }
    for i in 0..30u32 {
        ws.send(msg(
            i + 2,
            "broadcast",
            json!({"type": "broadcast", "event": "tick", "payload": {"i": i}}),
        ))
        .await
        .unwrap();
    }
    let v = poll_until(
        &op,
        "/realtime",
        "the socket, its channel and its events",
        |v| {
            v["now"]["connections"] == 1
                && v["now"]["channels"] == 1
                && v["now"]["events_in"].as_u64().unwrap_or(0) >= 31
                && v["per_second"]["events_in"].as_f64().unwrap_or(0.0) > 0.0
        },
    )
    .await;
    assert!(v["now"]["events_out"].as_u64().unwrap() >= 30, "{v}");
    assert!(v["last_minute"].is_array());
    drop(ws);
    poll_until(&op, "/realtime", "the socket to be gone", |v| {
        v["now"]["connections"] == 0
    })
    .await;
}

/// The schema linter: a table breaking the rules, created in the test database, shows up
/// under each rule it breaks, with what the rule means and how to fix it.
#[tokio::test]
async fn console_schema_linter_finds_what_a_violating_table_breaks() {
    let fx = fixture_with(&[]).await;
    add_admin(&fx).await;
    fx.su
        .batch_execute(
            "create table public.lint_bad (org_id uuid references public.organizations (id), note text);
             grant select on public.lint_bad to anon, authenticated;
             create table public.lint_policies (id int primary key, org_id uuid);
             create policy one on public.lint_policies for select to authenticated using (true);
             create policy two on public.lint_policies for select to authenticated using (org_id is not null);
             create table public.lint_rls_no_policy (id int primary key);
             alter table public.lint_rls_no_policy enable row level security;
             create table public.lint_initplan (id int primary key, owner uuid);
             alter table public.lint_initplan enable row level security;
             create policy mine on public.lint_initplan for select to authenticated using (owner = auth.uid());
             create function public.lint_mutable() returns int language sql as 'select 1';
             create view public.lint_users as select id, email from auth.users;
             grant select on public.lint_users to anon;",
        )
        .await
        .unwrap();
    let op = sign_in(&fx.app).await;
    let l = op.get("/lint").await;
    let found = |rule: &str, object: &str| {
        l["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["rule"] == rule && f["object"] == object)
    };
    for (rule, object) in [
        ("rls_disabled_in_public", "public.lint_bad"),
        ("no_primary_key", "public.lint_bad"),
        ("unindexed_foreign_keys", "public.lint_bad"),
        ("policy_exists_rls_disabled", "public.lint_policies"),
        ("multiple_permissive_policies", "public.lint_policies"),
        ("rls_enabled_no_policy", "public.lint_rls_no_policy"),
        ("auth_rls_initplan", "public.lint_initplan"),
        ("function_search_path_mutable", "public.lint_mutable()"),
        ("security_definer_view", "public.lint_users"),
        ("auth_users_exposed", "public.lint_users"),
    ] {
        assert!(found(rule, object), "{rule} on {object} not found: {l}");
    }
    // Each rule says what it means and how to fix it; none failed to run.
    for r in l["rules"].as_array().unwrap() {
        assert!(r["means"].as_str().unwrap().len() > 40, "{r}");
        assert!(!r["fix"].as_str().unwrap().is_empty(), "{r}");
        assert_eq!(r["error"], Value::Null, "{r}");
    }
    // The fix clears the finding.
    fx.su
        .batch_execute(
            "alter table public.lint_bad enable row level security;
             create index on public.lint_bad (org_id);",
        )
        .await
        .unwrap();
    let l = op.get("/lint").await;
    let still = |rule: &str| {
        l["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["rule"] == rule && f["object"] == "public.lint_bad")
    };
    assert!(!still("rls_disabled_in_public") && !still("unindexed_foreign_keys"));
    assert!(still("no_primary_key"));
}

/// Bucket limits edited from the Storage page are enforced by /storage/v1; the AI page names
/// the providers and models; the auth settings in force show no secret anywhere.
#[tokio::test]
async fn console_bucket_limits_ai_providers_and_auth_settings_without_secrets() {
    const SMTP_PASS: &str = "smtp-pass-must-not-show-9271";
    const GOOGLE_SECRET: &str = "google-secret-must-not-show-5531";
    const GEMINI_KEY: &str = "gemini-key-must-not-show-8812";
    let fx = fixture_with(&[
        "--smtp-pass",
        SMTP_PASS,
        "--smtp-host",
        "127.0.0.1",
        "--smtp-admin-email",
        "ops@agency.test",
        "--smtp-user",
        "mailer",
        "--external-google-enabled",
        "true",
        "--external-google-client-id",
        "console-test-client",
        "--external-google-secret",
        GOOGLE_SECRET,
        "--gemini-api-key",
        GEMINI_KEY,
        // Nothing here may call Gemini.
        "--ai-embed-worker",
        "false",
    ])
    .await;
    add_admin(&fx).await;
    let op = sign_in(&fx.app).await;

    let auth = op.get("/auth-settings").await;
    let s = &auth["in_force"];
    assert_eq!(s["smtp"]["GOTRUE_SMTP_PASS"], "[set, hidden]", "{auth}");
    assert_eq!(s["smtp"]["GOTRUE_SMTP_HOST"], "127.0.0.1");
    assert_eq!(s["external"]["google"]["secret"], "[set, hidden]");
    assert_eq!(s["external"]["google"]["client_id"], "console-test-client");
    assert_eq!(s["GOTRUE_JWT_EXP"], 3600);
    let ai = op.get("/ai").await;
    let chat = &ai["providers"][0];
    assert_eq!(
        (
            &chat["use"],
            &chat["provider"],
            &chat["model"],
            &chat["key"]
        ),
        (
            &json!("chat"),
            &json!("gemini"),
            &json!("gemini-2.5-flash"),
            &json!(true)
        ),
        "{ai}"
    );
    assert_eq!(ai["providers"][1]["model"], "gemini-embedding-001");
    // No secret in any page's answer.
    for page in [
        "/auth-settings",
        "/ai",
        "/health",
        "/logs",
        "/realtime",
        "/database",
        "/lint",
        "/api-info",
        "/backups",
    ] {
        let text = op.get(page).await.to_string();
        for secret in [
            SMTP_PASS,
            GOOGLE_SECRET,
            GEMINI_KEY,
            agencyflow_testkit::TEST_JWT_SECRET,
        ] {
            assert!(!text.contains(secret), "{page} shows a secret: {text}");
        }
        assert!(
            !text.contains(&fx.app.service_role_key),
            "{page} shows the service_role key"
        );
    }

    // Bucket limits: size and types, enforced by the storage surface.
    op.ok(
        Method::POST,
        "/storage/buckets",
        json!({"name": "limited", "public": false}),
    )
    .await;
    let refused = fx
        .app
        .http
        .put(fx.app.url("/console/api/storage/buckets/limited"))
        .header("cookie", &op.cookie)
        .json(&json!({"public": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let b = op
        .ok(
            Method::PUT,
            "/storage/buckets/limited",
            json!({"public": true, "file_size_limit": 10, "allowed_mime_types": ["text/plain", " "]}),
        )
        .await;
    assert_eq!(b["public"], true, "{b}");
    assert_eq!(b["file_size_limit"], 10, "{b}");
    assert_eq!(b["allowed_mime_types"], json!(["text/plain"]), "{b}");
    let upload = |path: &str, ctype: &str, body: &'static str| {
        op.req(
            Method::POST,
            &format!("/storage/object?bucket=limited&path={path}"),
        )
        .header("content-type", ctype.to_string())
        .body(body)
        .send()
    };
    let r = upload("small.txt", "text/plain", "12345").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = upload("big.txt", "text/plain", "12345678901")
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("size"),
        "{body}"
    );
    let r = upload("x.png", "image/png", "png").await.unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    // Cleared again: any size, any type.
    let b = op
        .ok(
            Method::PUT,
            "/storage/buckets/limited",
            json!({"public": false, "file_size_limit": null, "allowed_mime_types": null}),
        )
        .await;
    assert_eq!(
        (&b["file_size_limit"], &b["allowed_mime_types"]),
        (&Value::Null, &Value::Null),
        "{b}"
    );
    let r = upload("x.png", "image/png", "png").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        audit_actions(&op, "storage.bucket.").await,
        [
            "storage.bucket.update",
            "storage.bucket.update",
            "storage.bucket.create"
        ]
    );
}

/// Keyset pages over a composite primary key (`private.ai_usage`: org, meter, period),
/// exposed for the test: every row once, in key order, also sorted by another column.
#[tokio::test]
async fn console_keyset_pages_a_composite_primary_key() {
    // The database's own pgrst.db_schemas ('public') would win over the flag.
    let fx = fixture_with(&["--db-config", "false", "--db-schemas", "public,private"]).await;
    add_admin(&fx).await;
    fx.su
        .batch_execute(&format!(
            "insert into private.ai_usage (org_id, meter, period_start, used, reserved)
             select o, m, timestamptz '2026-01-01' + (d || ' days')::interval, (d * 7) % 5, 0
               from unnest(array['{a}'::uuid, '{b}'::uuid]) o,
                    unnest(array['runs', 'chat_tokens']) m,
                    generate_series(0, 11) d",
            a = fx.org_a,
            b = fx.org_b
        ))
        .await
        .unwrap();
    let op = sign_in(&fx.app).await;
    let meta = op.get("/tables/private/ai_usage").await;
    assert_eq!(
        meta["primary_key"],
        json!(["org_id", "meter", "period_start"])
    );
    let expected = |order: &str| {
        let su = &fx.su;
        let sql = format!(
            "select org_id::text || '|' || meter || '|' || (to_json(period_start) #>> '{{}}') from private.ai_usage order by {order}"
        );
        async move {
            su.query(&sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
        }
    };
    for (order, spec_order) in [
        ("org_id, meter, period_start", Value::Null),
        (
            "used desc, org_id, meter, period_start",
            json!({"column": "used", "desc": true}),
        ),
        ("meter, org_id, period_start", json!({"column": "meter"})),
    ] {
        let mut seen = Vec::new();
        let mut after: Option<Value> = None;
        let mut pages = 0;
        loop {
            let mut spec = json!({"limit": 7, "order": spec_order});
            if let Some(a) = &after {
                spec["after"] = a.clone();
            }
            let page = op
                .get(&format!(
                    "/tables/private/ai_usage/rows?q={}",
                    urlencode(&spec.to_string())
                ))
                .await;
            pages += 1;
            let rows = page["rows"].as_array().unwrap();
            seen.extend(rows.iter().map(|r| {
                format!(
                    "{}|{}|{}",
                    r["org_id"].as_str().unwrap(),
                    r["meter"].as_str().unwrap(),
                    r["period_start"].as_str().unwrap()
                )
            }));
            if page["more"] != true {
                break;
            }
            let last = rows.last().unwrap();
            let sv = spec_order
                .get("column")
                .and_then(Value::as_str)
                .map_or(Value::Null, |c| last[c].clone());
            after = Some(json!([
                sv,
                last["org_id"],
                last["meter"],
                last["period_start"]
            ]));
        }
        assert_eq!(seen.len(), 48, "{order}");
        assert_eq!(pages, 7, "{order}");
        // Ties on the sort column are broken by the key: the same rows in the same order.
        assert_eq!(seen, expected(order).await, "{order}");
    }
}
