//! `/rest/v1` over HTTP on the real schema: every PostgREST feature supabase-js uses
//! (docs/wire-compat.md §2–4), error mapping, the API-key gate, JWT errors, schema reload, and
//! row-level security seen through the API (a member of org A never gets org B's rows).
use agencyflow_testkit::agencyflow_db::tokio_postgres::Client;
use agencyflow_testkit::{TestApp, TestDb};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

const ALICE: Uuid = Uuid::from_u128(0xaaaaaaaa_0000_4000_8000_000000000001);
const BOB: Uuid = Uuid::from_u128(0xbbbbbbbb_0000_4000_8000_000000000001);
pub(crate) const ACME: Uuid = Uuid::from_u128(0xc1000000_0000_4000_8000_000000000001);
const BETA: Uuid = Uuid::from_u128(0xc1000000_0000_4000_8000_000000000002);
const GAMMA: Uuid = Uuid::from_u128(0xc1000000_0000_4000_8000_000000000003);
const BRAVO: Uuid = Uuid::from_u128(0xc2000000_0000_4000_8000_000000000001);
const ACME_SITE: Uuid = Uuid::from_u128(0xd1000000_0000_4000_8000_000000000001);
const ACME_APP: Uuid = Uuid::from_u128(0xd1000000_0000_4000_8000_000000000002);
const ORPHAN: Uuid = Uuid::from_u128(0xd1000000_0000_4000_8000_000000000003);
const BETA_PITCH: Uuid = Uuid::from_u128(0xd1000000_0000_4000_8000_000000000004);
const B_PROJECT: Uuid = Uuid::from_u128(0xd2000000_0000_4000_8000_000000000001);

/// Two tenants: alice owns org A (three clients, four projects, two systems picked, contacts,
/// two embedded documents), bob owns org B (one client, one project, one embedded document
/// close to alice's first one).
pub(crate) struct Fx {
    /// Keeps the database alive (dropped with the fixture).
    pub _db: TestDb,
    pub app: TestApp,
    pub su: Client,
    pub org_a: Uuid,
    pub org_b: Uuid,
    pub alice: String,
    pub bob: String,
}

/// A 768-dimension basis vector (1 at `i`, 0 elsewhere) as a pgvector literal.
pub(crate) fn basis(i: usize) -> Vec<f32> {
    (0..768).map(|k| if k == i { 1.0 } else { 0.0 }).collect()
}

fn vector_literal(v: &[f32]) -> String {
    format!(
        "[{}]",
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
}

pub(crate) async fn fixture() -> Fx {
    fixture_with(&[]).await
}

/// The fixture with extra `serve` flags (`--db-aggregates-enabled true`...).
pub(crate) async fn fixture_with(serve_args: &[&str]) -> Fx {
    let t = TestDb::new().await;
    let su = t.superuser().await;
    su.batch_execute(&format!(
        "insert into auth.users (id, email, raw_user_meta_data) values
           ('{ALICE}', 'alice@a.test', '{{\"full_name\": \"Alice\"}}'),
           ('{BOB}', 'bob@b.test', '{{\"full_name\": \"Bob\"}}')"
    ))
    .await
    .expect("users");
    let org_of = |u: Uuid| {
        let su = &su;
        async move {
            su.query_one(
                "select org_id from team_members where user_id = $1 and role = 'owner'",
                &[&u],
            )
            .await
            .expect("personal org")
            .get::<_, Uuid>(0)
        }
    };
    let org_a = org_of(ALICE).await;
    let org_b = org_of(BOB).await;
    let (e0, e1) = (vector_literal(&basis(0)), vector_literal(&basis(1)));
    su.batch_execute(&format!(
        r#"
insert into clients (id, org_id, name, status, industry, health_score, value_cents, notes, next_action_date, assigned_to) values
  ('{ACME}', '{org_a}', 'Acme', 'client', 'fashion', 80, 1000, null, '2026-03-01', '{ALICE}'),
  ('{BETA}', '{org_a}', 'Beta Co', 'prospect', 'SaaS', 40, 5000, 'hot lead', null, null),
  ('{GAMMA}', '{org_a}', 'Gamma', 'lead', null, 60, null, 'Cold, maybe', '2026-01-15', null),
  ('{BRAVO}', '{org_b}', 'Bravo Secret', 'client', 'fashion', 90, 9000, 'secret', null, '{BOB}');
insert into projects (id, org_id, client_id, name, status, progress) values
  ('{ACME_SITE}', '{org_a}', '{ACME}', 'Acme Site', 'active', 50),
  ('{ACME_APP}', '{org_a}', '{ACME}', 'Acme App', 'draft', 0),
  ('{ORPHAN}', '{org_a}', null, 'Orphan', 'draft', 10),
  ('{BETA_PITCH}', '{org_a}', '{BETA}', 'Beta Pitch', 'discovery', 5),
  ('{B_PROJECT}', '{org_b}', '{BRAVO}', 'B Project', 'active', 70);
insert into project_systems (org_id, project_id, system_id, is_selected) values
  ('{org_a}', '{ACME_SITE}', 'lead-generation', true),
  ('{org_a}', '{ACME_SITE}', 'customer-support', false),
  ('{org_b}', '{B_PROJECT}', 'lead-generation', true);
insert into crm_contacts (org_id, client_id, first_name, email, tags) values
  ('{org_a}', '{ACME}', 'Ann', 'ann@acme.test', '{{vip,eu}}'),
  ('{org_a}', '{BETA}', 'Ben', 'ben@beta.test', '{{us}}'),
  ('{org_b}', '{BRAVO}', 'Bea', 'bea@bravo.test', '{{vip}}');
insert into documents (org_id, project_id, name, summary, content_text, embedding) values
  ('{org_a}', '{ACME_SITE}', 'Acme proposal', 'website redesign proposal', 'We propose a new website for Acme.', '{e0}'),
  ('{org_a}', '{ACME_SITE}', 'Billing notes', 'invoice process', 'Billing workflow and invoice automation.', '{e1}'),
  ('{org_b}', '{B_PROJECT}', 'Bravo proposal', 'secret website proposal', 'Confidential proposal for Bravo.', '{e0}');
"#
    ))
    .await
    .expect("seed");
    let app = t.spawn_app_with(serve_args).await;
    let alice = app.user_token(ALICE);
    let bob = app.user_token(BOB);
    Fx {
        _db: t,
        app,
        su,
        org_a,
        org_b,
        alice,
        bob,
    }
}

pub(crate) struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    /// The body as received (binary responses).
    pub bytes: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text))
    }
    pub fn header(&self, k: &str) -> Option<String> {
        self.headers.get(k).map(|v| v.to_str().unwrap().to_string())
    }
    /// `name` of every row of a JSON array body, in order.
    pub fn names(&self) -> Vec<String> {
        self.json()
            .as_array()
            .unwrap_or_else(|| panic!("not an array: {} {}", self.status, self.text))
            .iter()
            .map(|r| {
                r["name"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no name in {r}"))
                    .to_string()
            })
            .collect()
    }
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "body: {}", self.text);
        self
    }
    /// Asserts a PostgREST error body with this status and code.
    pub fn error(&self, status: u16, code: &str) -> Value {
        self.expect(status);
        let j = self.json();
        assert_eq!(j["code"], code, "{j}");
        for k in ["message", "details", "hint"] {
            assert!(j.get(k).is_some(), "error body lacks {k}: {j}");
        }
        j
    }
}

/// Who calls: `None` = anon (no Authorization), else the bearer token.
pub(crate) struct Call<'a> {
    fx: &'a Fx,
    rb: reqwest::RequestBuilder,
}

impl<'a> Call<'a> {
    pub fn h(mut self, k: &str, v: &str) -> Self {
        self.rb = self.rb.header(k, v);
        self
    }
    pub fn prefer(self, v: &str) -> Self {
        self.h("Prefer", v)
    }
    /// A body sent as is (set the Content-Type with [`Call::h`]).
    pub fn body_raw(mut self, v: impl Into<reqwest::Body>) -> Self {
        self.rb = self.rb.body(v);
        self
    }
    pub fn body(mut self, v: Value) -> Self {
        self.rb = self
            .rb
            .header("Content-Type", "application/json")
            .body(v.to_string());
        self
    }
    pub async fn send(self) -> Resp {
        let _ = self.fx;
        let r = self.rb.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let bytes = r.bytes().await.expect("body").to_vec();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Resp {
            status,
            headers,
            text,
            bytes,
        }
    }
}

impl Fx {
    pub fn call(&self, method: Method, path: &str, token: Option<&str>) -> Call<'_> {
        let mut rb = self
            .app
            .http
            .request(method, self.app.url(&format!("/rest/v1{path}")))
            .header("apikey", &self.app.anon_key);
        if let Some(t) = token {
            rb = rb.header("Authorization", format!("Bearer {t}"));
        }
        Call { fx: self, rb }
    }
    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.call(Method::GET, path, token).send().await
    }
    pub fn a(&self) -> Option<&str> {
        Some(&self.alice)
    }
    pub fn service(&self) -> Option<&str> {
        Some(&self.app.service_role_key)
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[tokio::test]
async fn rest_select_columns_aliases_casts_json_paths() {
    let fx = fixture().await;
    let r = fx
        .get(
            "/clients?select=name,score:health_score,value_cents::text,next_action_date&order=name",
            fx.a(),
        )
        .await;
    r.expect(200);
    assert_eq!(
        r.json(),
        json!([
            {"name": "Acme", "score": 80, "value_cents": "1000", "next_action_date": "2026-03-01"},
            {"name": "Beta Co", "score": 40, "value_cents": "5000", "next_action_date": null},
            {"name": "Gamma", "score": 60, "value_cents": null, "next_action_date": "2026-01-15"},
        ])
    );
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json"),
        "{:?}",
        r.headers
    );
    assert!(
        r.header("content-location").is_some(),
        "reads add Content-Location"
    );
    assert_eq!(r.header("content-range").as_deref(), Some("0-2/*"));

    // `*`, and JSON paths over jsonb (arrays by index, `->` JSON, `->>` text) with aliases.
    let r = fx
        .get("/services?select=slug,first_benefit:benefits->>0,features->1,all:features&slug=eq.crm-integration", None)
        .await;
    r.expect(200);
    let row = &r.json()[0];
    assert_eq!(row["slug"], "crm-integration");
    assert_eq!(row["first_benefit"], "No double entry");
    assert_eq!(row["features"], "Field mapping");
    assert!(row["all"].is_array());
    let r = fx
        .get("/clients?select=*&id=eq.".to_string().as_str(), fx.a())
        .await;
    r.error(400, "22P02");
    let r = fx
        .get(&format!("/clients?select=*&id=eq.{ACME}"), fx.a())
        .await;
    let row = &r.expect(200).json()[0];
    for k in [
        "id",
        "org_id",
        "name",
        "status",
        "health_score",
        "created_at",
        "updated_at",
    ] {
        assert!(row.get(k).is_some(), "* lacks {k}: {row}");
    }
    // An unknown column in select is PostgreSQL's 42703 → 400.
    fx.get("/clients?select=nope", fx.a())
        .await
        .error(400, "42703");
}

#[tokio::test]
async fn rest_embeds_many_to_one_one_to_many_many_to_many_inner_and_hints() {
    let fx = fixture().await;
    // many-to-one: object or null
    let r = fx
        .get(
            "/projects?select=name,client:clients(name,status)&order=name",
            fx.a(),
        )
        .await;
    r.expect(200);
    assert_eq!(
        r.json(),
        json!([
            {"name": "Acme App", "client": {"name": "Acme", "status": "client"}},
            {"name": "Acme Site", "client": {"name": "Acme", "status": "client"}},
            {"name": "Beta Pitch", "client": {"name": "Beta Co", "status": "prospect"}},
            {"name": "Orphan", "client": null},
        ])
    );
    // one-to-many: arrays (empty for none), nested two levels, ordered and limited inside.
    let r = fx
        .get("/clients?select=name,projects(name,project_systems(system_id))&order=name&projects.order=name.desc", fx.a())
        .await;
    r.expect(200);
    let j = r.json();
    assert_eq!(j[0]["name"], "Acme");
    assert_eq!(j[0]["projects"][0]["name"], "Acme Site");
    assert_eq!(j[0]["projects"][1]["name"], "Acme App");
    assert_eq!(j[0]["projects"][1]["project_systems"], json!([]));
    let mut systems: Vec<_> = j[0]["projects"][0]["project_systems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["system_id"].as_str().unwrap().to_string())
        .collect();
    systems.sort();
    assert_eq!(systems, s(&["customer-support", "lead-generation"]));
    assert_eq!(j[2]["name"], "Gamma");
    assert_eq!(j[2]["projects"], json!([]));
    let r = fx
        .get(
            "/clients?select=name,projects(name)&name=eq.Acme&projects.limit=1&projects.order=name",
            fx.a(),
        )
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"name": "Acme", "projects": [{"name": "Acme App"}]}])
    );

    // many-to-many through a junction whose two foreign keys lie in one composite key:
    // system_services (unique (system_id, service_id)).
    fx.su
        .batch_execute(
            "insert into system_services (system_id, service_id) values
               ('knowledge-assistant', 'a0000000-0000-4000-8000-000000000001'),
               ('knowledge-assistant', 'a0000000-0000-4000-8000-000000000003')
             on conflict do nothing",
        )
        .await
        .unwrap();
    let r = fx
        .get(
            "/systems?select=id,services(slug)&id=eq.knowledge-assistant&services.order=slug",
            None,
        )
        .await;
    let j = r.expect(200).json();
    let slugs: Vec<&str> = j[0]["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["slug"].as_str().unwrap())
        .collect();
    assert!(
        slugs.contains(&"ai-strategy-workshop") && slugs.contains(&"crm-integration"),
        "{j}"
    );
    let r = fx.get("/services?select=slug,systems!inner(id)&systems.id=eq.knowledge-assistant&slug=eq.crm-integration", None).await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"slug": "crm-integration", "systems": [{"id": "knowledge-assistant"}]}])
    );
    // project_systems is not a junction for projects ↔ systems (its foreign key to projects
    // is (org_id, project_id), outside its unique key): embed through it in two hops.
    fx.get("/projects?select=name,systems(id)", fx.a())
        .await
        .error(400, "PGRST200");
    let r = fx
        .get(&format!("/projects?select=name,project_systems(systems(id))&id=eq.{ACME_SITE}&project_systems.order=system_id"), fx.a())
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"name": "Acme Site", "project_systems": [{"systems": {"id": "customer-support"}}, {"systems": {"id": "lead-generation"}}]}])
    );

    // !inner filters the parents; without it the embed is filtered, the parent kept.
    let r = fx
        .get(
            "/clients?select=name,projects!inner(name)&projects.status=eq.active",
            fx.a(),
        )
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"name": "Acme", "projects": [{"name": "Acme Site"}]}])
    );
    let r = fx
        .get(
            "/clients?select=name,projects(name)&projects.status=eq.active&order=name",
            fx.a(),
        )
        .await;
    assert_eq!(r.expect(200).names(), s(&["Acme", "Beta Co", "Gamma"]));
    // rel=not.is.null ≡ inner; rel=is.null: anti-join.
    let r = fx
        .get(
            "/clients?select=name,projects(id)&projects=not.is.null&order=name",
            fx.a(),
        )
        .await;
    assert_eq!(r.expect(200).names(), s(&["Acme", "Beta Co"]));
    let r = fx
        .get("/clients?select=name,projects(id)&projects=is.null", fx.a())
        .await;
    assert_eq!(r.expect(200).names(), s(&["Gamma"]));
    // An embedded filter on a to-one embed makes it null, the parent stays.
    let r = fx
        .get(
            "/projects?select=name,clients(name)&clients.status=eq.client&order=name",
            fx.a(),
        )
        .await;
    let j = r.expect(200).json();
    assert_eq!(j[2], json!({"name": "Beta Pitch", "clients": null}));
    assert_eq!(j[0]["clients"]["name"], "Acme");
    // embedded or=
    let r = fx
        .get("/clients?select=name,projects!inner(name)&projects.or=(status.eq.discovery,progress.gte.50)&order=name", fx.a())
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"name": "Acme", "projects": [{"name": "Acme Site"}]}, {"name": "Beta Co", "projects": [{"name": "Beta Pitch"}]}])
    );

    // FK hints: by constraint name and by column.
    let fk: String = fx
        .su
        .query_one(
            "select conname::text from pg_constraint where conrelid = 'public.projects'::regclass and confrelid = 'public.clients'::regclass and contype = 'f'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let r = fx
        .get(
            &format!("/projects?select=name,clients!{fk}(name)&id=eq.{ACME_APP}"),
            fx.a(),
        )
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"name": "Acme App", "clients": {"name": "Acme"}}])
    );
    // A column hint names a single-column foreign key (PostgREST's rule) ...
    let r = fx
        .get(
            "/project_systems?select=system:systems!system_id(name)&system_id=eq.lead-generation",
            fx.a(),
        )
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"system": {"name": "AI Lead Generation"}}])
    );
    // ... so the composite (org_id, client_id) key is not found by `client_id`, and the
    // error suggests nothing silly.
    let j = fx
        .get("/projects?select=name,clients!client_id(name)", fx.a())
        .await
        .error(400, "PGRST200");
    assert!(j["hint"].is_null(), "{j}");
    // hint + inner
    let r = fx
        .get(
            &format!("/projects?select=name,clients!{fk}!inner(name)&order=name"),
            fx.a(),
        )
        .await;
    assert_eq!(
        r.expect(200).names(),
        s(&["Acme App", "Acme Site", "Beta Pitch"])
    );

    // An unknown relationship: 400 PGRST200.
    let j = fx
        .get("/clients?select=name,systems(id)", fx.a())
        .await
        .error(400, "PGRST200");
    assert!(
        j["message"].as_str().unwrap().contains("relationship"),
        "{j}"
    );
    fx.get("/clients?select=name,nope(*)", fx.a())
        .await
        .error(400, "PGRST200");
}

#[tokio::test]
async fn rest_embed_ambiguity_is_300_pgrst201() {
    let fx = fixture().await;
    // Two foreign keys from one table to another: the embed needs a hint.
    fx.su
        .batch_execute(
            "create table public.handoffs (
               id bigint generated always as identity primary key,
               from_client uuid references public.clients (id),
               to_client uuid references public.clients (id),
               note text);
             grant select on public.handoffs to authenticated;
             notify pgrst, 'reload schema';",
        )
        .await
        .unwrap();
    let r = wait_until_served(&fx, "/handoffs?select=id", fx.service()).await;
    r.expect(200);
    let j = fx
        .get("/handoffs?select=id,clients(name)", fx.service())
        .await
        .error(300, "PGRST201");
    let hint = j["hint"].as_str().unwrap();
    assert!(
        hint.contains("clients!handoffs_from_client_fkey")
            && hint.contains("clients!handoffs_to_client_fkey"),
        "{j}"
    );
    assert!(
        j["details"].is_array() && j["details"].as_array().unwrap().len() == 2,
        "{j}"
    );
    fx.get(
        "/handoffs?select=id,clients!from_client(name)",
        fx.service(),
    )
    .await
    .expect(200);
    fx.get(
        "/handoffs?select=id,clients!handoffs_to_client_fkey(name)",
        fx.service(),
    )
    .await
    .expect(200);
}

/// Polls until the schema cache serves `path` (after a NOTIFY pgrst), 30 s at most.
async fn wait_until_served(fx: &Fx, path: &str, token: Option<&str>) -> Resp {
    agencyflow_testkit::wait::eventually(
        std::time::Duration::from_secs(30),
        &format!("{path} to be served after NOTIFY pgrst"),
        || async move {
            let r = fx.get(path, token).await;
            (r.status != 404 && !r.text.contains("PGRST200") && !r.text.contains("PGRST202"))
                .then_some(r)
        },
    )
    .await
}

async fn names_of(fx: &Fx, path: &str) -> Vec<String> {
    let r = fx.get(path, fx.a()).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text);
    sorted(r.names())
}

#[tokio::test]
async fn rest_filter_operators() {
    let fx = fixture().await;
    let cases: &[(&str, &[&str])] = &[
        ("status=eq.client", &["Acme"]),
        ("status=neq.client", &["Beta Co", "Gamma"]),
        ("health_score=gt.60", &["Acme"]),
        ("health_score=gte.60", &["Acme", "Gamma"]),
        ("health_score=lt.60", &["Beta Co"]),
        ("health_score=lte.40", &["Beta Co"]),
        ("name=like.*Co", &["Beta Co"]),
        ("name=ilike.*ACME*", &["Acme"]),
        ("industry=is.null", &["Gamma"]),
        ("industry=is.NULL", &["Gamma"]),
        ("notes=not.is.null", &["Beta Co", "Gamma"]),
        ("status=in.(client,lead)", &["Acme", "Gamma"]),
        ("status=not.in.(client,lead)", &["Beta Co"]),
        ("notes=in.(\"Cold, maybe\",nothing)", &["Gamma"]),
        ("status=in.()", &[]),
        ("name=match.^B", &["Beta Co"]),
        ("name=imatch.^g", &["Gamma"]),
        ("industry=isdistinct.SaaS", &["Acme", "Gamma"]),
        ("next_action_date=gt.2026-02-01", &["Acme"]),
        ("name=like(any).{A*,G*}", &["Acme", "Gamma"]),
        ("name=not.like(any).{A*,G*}", &["Beta Co"]),
        ("health_score=gt(all).{30,50}", &["Acme", "Gamma"]),
        ("health_score=eq(any).{40,80}", &["Acme", "Beta Co"]),
        ("health_score=not.eq.80", &["Beta Co", "Gamma"]),
        ("or=(status.eq.client,status.eq.lead)", &["Acme", "Gamma"]),
        ("not.or=(status.eq.client,status.eq.lead)", &["Beta Co"]),
        (
            "and=(health_score.gte.40,health_score.lte.60)",
            &["Beta Co", "Gamma"],
        ),
        (
            "or=(status.eq.client,and(health_score.lt.50,notes.not.is.null))",
            &["Acme", "Beta Co"],
        ),
        (
            "or=(notes.eq.\"Cold, maybe\",name.in.(Acme,\"Beta Co\"))",
            &["Acme", "Beta Co", "Gamma"],
        ),
        (
            "or=(industry.not.is.null,next_action_date.not.is.null)",
            &["Acme", "Beta Co", "Gamma"],
        ),
        (
            "not.and=(health_score.gte.40,health_score.lte.60)",
            &["Acme"],
        ),
        // repeated keys AND together
        (
            "health_score=gt.30&health_score=lt.70",
            &["Beta Co", "Gamma"],
        ),
        ("status=eq.client&status=eq.lead", &[]),
        // `+` is a space, `%2B` a plus
        ("name=eq.Beta+Co", &["Beta Co"]),
        ("name=eq.Beta%20Co", &["Beta Co"]),
    ];
    for (q, want) in cases {
        assert_eq!(
            names_of(&fx, &format!("/clients?select=name&{q}")).await,
            s(want),
            "{q}"
        );
    }
    // Arrays: contains, contained by, overlaps.
    for (q, want) in [
        ("tags=cs.{vip}", vec!["Ann"]),
        ("tags=cd.{vip,eu,x}", vec!["Ann"]),
        ("tags=ov.{us,zz}", vec!["Ben"]),
        ("tags=not.cs.{vip}", vec!["Ben"]),
    ] {
        let r = fx
            .get(&format!("/crm_contacts?select=name:first_name&{q}"), fx.a())
            .await;
        assert_eq!(sorted(r.expect(200).names()), s(&want), "{q}");
    }
    // jsonb containment and JSON-path filters (anon reads the catalogue).
    let r = fx
        .get(
            "/services?select=name:slug&features=cs.[\"Two-way sync\"]",
            None,
        )
        .await;
    assert_eq!(r.expect(200).names(), s(&["crm-integration"]));
    let r = fx
        .get(
            "/services?select=name:slug&benefits->>0=eq.No double entry",
            None,
        )
        .await;
    assert_eq!(r.expect(200).names(), s(&["crm-integration"]));
    // Full text search on the generated tsvector, each flavour, with and without a config.
    for q in [
        "fts=fts.invoice",
        "fts=fts(english).invoices",
        "fts=plfts.invoice automation",
        "fts=phfts(english).invoice automation",
        "fts=wfts.invoice -website",
        "fts=not.fts.website",
    ] {
        let r = fx.get(&format!("/documents?select=name&{q}"), fx.a()).await;
        assert_eq!(r.expect(200).names(), s(&["Billing notes"]), "{q}");
    }
    // A bad operator is a parse error.
    fx.get("/clients?health_score=zz.1", fx.a())
        .await
        .error(400, "PGRST100");
    fx.get("/clients?or=(health_score.eq.1", fx.a())
        .await
        .error(400, "PGRST100");
}

#[tokio::test]
async fn rest_order_limit_offset_and_range() {
    let fx = fixture().await;
    let cases = [
        ("order=value_cents.desc", vec!["Gamma", "Beta Co", "Acme"]),
        (
            "order=value_cents.desc.nullslast",
            vec!["Beta Co", "Acme", "Gamma"],
        ),
        (
            "order=value_cents.asc.nullsfirst",
            vec!["Gamma", "Acme", "Beta Co"],
        ),
        ("order=value_cents", vec!["Acme", "Beta Co", "Gamma"]),
        (
            "order=status.asc,health_score.desc",
            vec!["Acme", "Gamma", "Beta Co"],
        ),
        (
            "order=health_score.desc&limit=2&offset=1",
            vec!["Gamma", "Beta Co"],
        ),
        ("order=health_score.desc&limit=1", vec!["Acme"]),
        ("order=health_score&offset=2", vec!["Acme"]),
        ("order=health_score&limit=0", vec![]),
    ];
    for (q, want) in cases {
        let r = fx.get(&format!("/clients?select=name&{q}"), fx.a()).await;
        assert_eq!(r.expect(200).names(), s(&want), "{q}");
    }
    // Order by a to-one embed's column.
    let r = fx
        .get(
            "/projects?select=name,clients(name)&clients=not.is.null&order=clients(name).desc,name",
            fx.a(),
        )
        .await;
    assert_eq!(
        r.expect(200).names(),
        s(&["Beta Pitch", "Acme App", "Acme Site"])
    );
    // Range header, intersected with limit.
    let r = fx
        .call(
            Method::GET,
            "/clients?select=name&order=health_score.desc",
            fx.a(),
        )
        .h("Range", "1-2")
        .send()
        .await;
    assert_eq!(r.expect(200).names(), s(&["Gamma", "Beta Co"]));
    assert_eq!(r.header("content-range").as_deref(), Some("1-2/*"));
    let r = fx
        .call(
            Method::GET,
            "/clients?select=name&order=health_score.desc&limit=1",
            fx.a(),
        )
        .h("Range", "0-5")
        .send()
        .await;
    assert_eq!(r.expect(200).names(), s(&["Acme"]));
}

#[tokio::test]
async fn rest_count_exact_206_content_range_and_head() {
    let fx = fixture().await;
    let count = |path: &str| fx.call(Method::GET, path, fx.a()).prefer("count=exact");
    let r = count("/clients?select=name&order=name&limit=2")
        .send()
        .await;
    r.expect(206);
    assert_eq!(r.header("content-range").as_deref(), Some("0-1/3"));
    assert_eq!(r.names(), s(&["Acme", "Beta Co"]));
    let r = count("/clients?select=name&order=name&offset=1")
        .send()
        .await;
    r.expect(206);
    assert_eq!(r.header("content-range").as_deref(), Some("1-2/3"));
    let r = count("/clients?select=name").send().await;
    r.expect(200);
    assert_eq!(r.header("content-range").as_deref(), Some("0-2/3"));
    assert!(
        r.header("preference-applied")
            .unwrap_or_default()
            .contains("count=exact"),
        "{:?}",
        r.headers
    );
    let r = count("/clients?select=name&name=eq.zzz").send().await;
    r.expect(200);
    assert_eq!(r.header("content-range").as_deref(), Some("*/0"));
    assert_eq!(r.text, "[]");
    let r = fx.get("/clients?select=name&name=eq.zzz", fx.a()).await;
    assert_eq!(r.header("content-range").as_deref(), Some("*/*"));
    // Past the end: 416 PGRST103.
    let r = count("/clients?select=name&offset=10").send().await;
    r.error(416, "PGRST103");
    assert_eq!(r.header("content-range").as_deref(), Some("*/3"));
    // Counting with !inner counts parents with a matching child.
    let r = count("/clients?select=name,projects!inner(name)&projects.status=eq.draft")
        .send()
        .await;
    assert_eq!(
        r.expect(200).header("content-range").as_deref(),
        Some("0-0/1")
    );
    // Planned / estimated counts answer too (an estimate).
    let r = fx
        .call(Method::GET, "/clients?select=name&limit=1", fx.a())
        .prefer("count=planned")
        .send()
        .await;
    assert!([200, 206].contains(&r.status), "{}", r.text);
    assert!(
        r.header("content-range").unwrap().starts_with("0-0/"),
        "{:?}",
        r.headers
    );
    // HEAD: same headers, no body.
    let r = fx
        .call(Method::HEAD, "/clients?select=name&limit=1", fx.a())
        .prefer("count=exact")
        .send()
        .await;
    r.expect(206);
    assert_eq!(r.header("content-range").as_deref(), Some("0-0/3"));
    assert_eq!(r.text, "");
    let r = fx
        .call(Method::HEAD, "/clients", fx.a())
        .prefer("count=exact")
        .send()
        .await;
    r.expect(200);
    assert_eq!(r.header("content-range").as_deref(), Some("0-2/3"));
    assert_eq!(r.text, "");
}

#[tokio::test]
async fn rest_single_object_accept() {
    let fx = fixture().await;
    const OBJ: &str = "application/vnd.pgrst.object+json";
    let r = fx
        .call(
            Method::GET,
            "/clients?select=name,health_score&name=eq.Acme",
            fx.a(),
        )
        .h("Accept", OBJ)
        .send()
        .await;
    r.expect(200);
    assert_eq!(r.json(), json!({"name": "Acme", "health_score": 80}));
    assert!(
        r.header("content-type").unwrap().starts_with(OBJ),
        "{:?}",
        r.headers
    );
    let r = fx
        .call(Method::GET, "/clients?select=name", fx.a())
        .h("Accept", OBJ)
        .send()
        .await;
    let j = r.error(406, "PGRST116");
    assert_eq!(j["details"], "The result contains 3 rows");
    assert_eq!(
        j["message"],
        "JSON object requested, multiple (or no) rows returned"
    );
    let r = fx
        .call(Method::GET, "/clients?select=name&name=eq.zzz", fx.a())
        .h("Accept", OBJ)
        .send()
        .await;
    assert_eq!(
        r.error(406, "PGRST116")["details"],
        "The result contains 0 rows"
    );
    // A mutation that touches ≠ 1 row under object Accept is rolled back.
    let r = fx
        .call(Method::PATCH, "/clients?status=neq.archived", fx.a())
        .h("Accept", OBJ)
        .prefer("return=representation")
        .body(json!({"notes": "bulk"}))
        .send()
        .await;
    assert_eq!(
        r.error(406, "PGRST116")["details"],
        "The result contains 3 rows"
    );
    let n: i64 = fx
        .su
        .query_one("select count(*) from clients where notes = 'bulk'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the update was rolled back");
    // stripped nulls
    let r = fx
        .call(
            Method::GET,
            "/clients?select=name,notes&name=eq.Acme",
            fx.a(),
        )
        .h("Accept", "application/vnd.pgrst.object+json;nulls=stripped")
        .send()
        .await;
    assert_eq!(r.expect(200).json(), json!({"name": "Acme"}));
    // An Accept the server cannot produce: 406 PGRST107.
    fx.call(Method::GET, "/clients", fx.a())
        .h("Accept", "image/png")
        .send()
        .await
        .error(406, "PGRST107");
}

#[tokio::test]
async fn rest_csv() {
    let fx = fixture().await;
    let r = fx
        .call(
            Method::GET,
            "/clients?select=name,health_score,notes&order=name",
            fx.a(),
        )
        .h("Accept", "text/csv")
        .send()
        .await;
    r.expect(200);
    assert!(
        r.header("content-type").unwrap().starts_with("text/csv"),
        "{:?}",
        r.headers
    );
    // PostgREST's CSV is PostgreSQL's record text: values with spaces or commas are quoted.
    assert_eq!(
        r.text.trim_end(),
        "name,health_score,notes\nAcme,80,\n\"Beta Co\",40,\"hot lead\"\nGamma,60,\"Cold, maybe\""
    );
    // CSV in: insert rows from a CSV body.
    let r = fx
        .call(Method::POST, "/clients", fx.a())
        .h("Content-Type", "text/csv")
        .prefer("return=representation")
        .rb_body(format!(
            "org_id,name,health_score\n{},Delta,70\n{},Epsilon,75",
            fx.org_a, fx.org_a
        ))
        .send()
        .await;
    r.expect(201);
    assert_eq!(sorted(r.names()), s(&["Delta", "Epsilon"]));
}

impl<'a> Call<'a> {
    pub fn rb_body(mut self, b: String) -> Self {
        self.rb = self.rb.body(b);
        self
    }
}

#[tokio::test]
async fn rest_insert_single_bulk_columns_and_missing_default() {
    let fx = fixture().await;
    let org = fx.org_a;
    // single object, minimal (the default): 201, empty body
    let r = fx
        .call(Method::POST, "/clients", fx.a())
        .body(json!({"org_id": org, "name": "Delta"}))
        .send()
        .await;
    r.expect(201);
    assert_eq!(r.text, "");
    // representation, shaped by select
    let r = fx
        .call(
            Method::POST,
            "/clients?select=name,status,health_score",
            fx.a(),
        )
        .prefer("return=representation")
        .body(json!({"org_id": org, "name": "Epsilon", "status": "prospect"}))
        .send()
        .await;
    r.expect(201);
    assert_eq!(
        r.json(),
        json!([{"name": "Epsilon", "status": "prospect", "health_score": 50}])
    );
    assert_eq!(r.header("content-range").as_deref(), Some("*/*"));
    // bulk with columns=: keys outside the list are ignored; missing keys are NULL
    let r = fx
        .call(
            Method::POST,
            "/clients?columns=org_id,name,notes&select=name,notes,industry",
            fx.a(),
        )
        .prefer("return=representation,count=exact")
        .body(json!([
            {"org_id": org, "name": "Zeta", "notes": "n1", "industry": "ignored"},
            {"org_id": org, "name": "Eta"}
        ]))
        .send()
        .await;
    r.expect(201);
    assert_eq!(
        r.json(),
        json!([{"name": "Zeta", "notes": "n1", "industry": null}, {"name": "Eta", "notes": null, "industry": null}])
    );
    assert_eq!(r.header("content-range").as_deref(), Some("*/2"));
    // missing keys are NULL (a NOT NULL column then fails) unless Prefer: missing=default
    let body = json!([{"org_id": org, "name": "Theta", "health_score": 10}, {"org_id": org, "name": "Iota"}]);
    let r = fx
        .call(
            Method::POST,
            "/clients?columns=org_id,name,health_score",
            fx.a(),
        )
        .body(body.clone())
        .send()
        .await;
    r.error(400, "23502");
    let r = fx
        .call(
            Method::POST,
            "/clients?columns=org_id,name,health_score&select=name,health_score",
            fx.a(),
        )
        .prefer("return=representation,missing=default")
        .body(body)
        .send()
        .await;
    assert_eq!(
        r.expect(201).json(),
        json!([{"name": "Theta", "health_score": 10}, {"name": "Iota", "health_score": 50}])
    );
    // non-uniform keys without columns: PGRST102
    fx.call(Method::POST, "/clients", fx.a())
        .body(json!([{"org_id": org, "name": "A"}, {"org_id": org}]))
        .send()
        .await
        .error(400, "PGRST102");
    // unknown column in the payload / in columns=: PGRST204
    let j = fx
        .call(Method::POST, "/clients", fx.a())
        .body(json!({"org_id": org, "name": "K", "nope": 1}))
        .send()
        .await
        .error(400, "PGRST204");
    assert!(j["message"].as_str().unwrap().contains("nope"), "{j}");
    fx.call(Method::POST, "/clients?columns=name,nope", fx.a())
        .body(json!({"name": "K"}))
        .send()
        .await
        .error(400, "PGRST204");
    // representation with an embed
    let r = fx
        .call(Method::POST, "/projects?select=name,clients(name)", fx.a())
        .prefer("return=representation")
        .body(json!({"org_id": org, "client_id": ACME, "name": "Acme Ads"}))
        .send()
        .await;
    assert_eq!(
        r.expect(201).json(),
        json!([{"name": "Acme Ads", "clients": {"name": "Acme"}}])
    );
    // an empty array inserts nothing
    let r = fx
        .call(Method::POST, "/clients", fx.a())
        .prefer("return=representation")
        .body(json!([]))
        .send()
        .await;
    assert_eq!(r.expect(201).json(), json!([]));
    let n: i64 = fx
        .su
        .query_one("select count(*) from clients where org_id = $1", &[&org])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3 + 1 + 1 + 2 + 2);
}

#[tokio::test]
async fn rest_upsert_merge_and_ignore() {
    let fx = fixture().await;
    let org = fx.org_a;
    // merge on an explicit unique key: the existing row is updated
    let r = fx
        .call(Method::POST, "/project_systems?on_conflict=project_id,system_id&select=system_id,why_it_matters,is_selected", fx.a())
        .prefer("resolution=merge-duplicates,return=representation")
        .body(json!([
            {"org_id": org, "project_id": ACME_SITE, "system_id": "lead-generation", "why_it_matters": "more leads", "is_selected": false},
            {"org_id": org, "project_id": ACME_SITE, "system_id": "content-engine", "why_it_matters": "content", "is_selected": true}
        ]))
        .send()
        .await;
    r.expect(201);
    assert!(
        r.header("preference-applied")
            .unwrap_or_default()
            .contains("resolution=merge-duplicates"),
        "{:?}",
        r.headers
    );
    assert_eq!(
        r.json(),
        json!([
            {"system_id": "lead-generation", "why_it_matters": "more leads", "is_selected": false},
            {"system_id": "content-engine", "why_it_matters": "content", "is_selected": true}
        ])
    );
    // a merge that only updated: 200
    let r = fx
        .call(Method::POST, "/project_systems?on_conflict=project_id,system_id", fx.a())
        .prefer("resolution=merge-duplicates")
        .body(json!({"org_id": org, "project_id": ACME_SITE, "system_id": "content-engine", "why_it_matters": "again"}))
        .send()
        .await;
    r.expect(200);
    // ignore: the existing row is untouched, the new one inserted
    let r = fx
        .call(Method::POST, "/project_systems?on_conflict=project_id,system_id&select=system_id", fx.a())
        .prefer("resolution=ignore-duplicates,return=representation")
        .body(json!([
            {"org_id": org, "project_id": ACME_SITE, "system_id": "lead-generation", "why_it_matters": "ignored"},
            {"org_id": org, "project_id": ACME_SITE, "system_id": "booking-assistant", "why_it_matters": "new"}
        ]))
        .send()
        .await;
    assert_eq!(
        r.expect(201).json(),
        json!([{"system_id": "booking-assistant"}])
    );
    let why: String = fx
        .su
        .query_one("select why_it_matters from project_systems where project_id = $1 and system_id = 'lead-generation'", &[&ACME_SITE])
        .await
        .unwrap()
        .get(0);
    assert_eq!(why, "more leads");
    // default target = the primary key (service role writes the catalogue)
    let r = fx
        .call(Method::POST, "/systems?select=id,name", fx.service())
        .prefer("resolution=merge-duplicates,return=representation")
        .body(json!({"id": "lead-generation", "name": "Lead Gen v2"}))
        .send()
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"id": "lead-generation", "name": "Lead Gen v2"}])
    );
    // without resolution a duplicate is 409; no unique index for on_conflict: 400 (42P10)
    fx.call(Method::POST, "/project_systems", fx.a())
        .body(json!({"org_id": org, "project_id": ACME_SITE, "system_id": "lead-generation"}))
        .send()
        .await
        .error(409, "23505");
    fx.call(
        Method::POST,
        "/project_systems?on_conflict=why_it_matters",
        fx.a(),
    )
    .prefer("resolution=merge-duplicates")
    .body(json!({"org_id": org, "project_id": ACME_SITE, "system_id": "lead-generation"}))
    .send()
    .await
    .error(400, "42P10");
    // PUT: single-row upsert by primary key
    let r = fx
        .call(Method::PUT, "/systems?id=eq.new-system", fx.service())
        .prefer("return=representation")
        .body(json!({"id": "new-system", "name": "New"}))
        .send()
        .await;
    assert_eq!(r.expect(200).json()[0]["name"], "New");
}

#[tokio::test]
async fn rest_update_and_delete_with_filters() {
    let fx = fixture().await;
    let r = fx
        .call(Method::PATCH, "/clients?name=eq.Gamma", fx.a())
        .body(json!({"status": "prospect", "health_score": 65}))
        .send()
        .await;
    r.expect(204);
    assert_eq!(r.text, "");
    let r = fx
        .call(
            Method::PATCH,
            "/clients?health_score=gte.60&select=name,status",
            fx.a(),
        )
        .prefer("return=representation")
        .body(json!({"status": "churned"}))
        .send()
        .await;
    r.expect(200);
    assert_eq!(sorted(r.names()), s(&["Acme", "Gamma"]));
    assert!(r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["status"] == "churned"));
    // PATCH counts
    let r = fx
        .call(Method::PATCH, "/clients?status=eq.churned", fx.a())
        .prefer("count=exact")
        .body(json!({"notes": "x"}))
        .send()
        .await;
    r.expect(204);
    assert_eq!(r.header("content-range").as_deref(), Some("0-1/2"));
    // an update with an unknown column is PGRST204
    fx.call(Method::PATCH, "/clients?name=eq.Gamma", fx.a())
        .body(json!({"nope": 1}))
        .send()
        .await
        .error(400, "PGRST204");
    // a CHECK violation is 400 23514
    fx.call(Method::PATCH, "/clients?name=eq.Gamma", fx.a())
        .body(json!({"health_score": 500}))
        .send()
        .await
        .error(400, "23514");
    // DELETE with filters
    let r = fx
        .call(Method::DELETE, &format!("/projects?id=eq.{ORPHAN}"), fx.a())
        .send()
        .await;
    r.expect(204);
    let r = fx
        .call(
            Method::DELETE,
            "/projects?client_id=eq.".to_string().as_str(),
            fx.a(),
        )
        .send()
        .await;
    r.error(400, "22P02");
    let r = fx
        .call(
            Method::DELETE,
            "/projects?status=eq.draft&select=name",
            fx.a(),
        )
        .prefer("return=representation,count=exact")
        .send()
        .await;
    r.expect(200);
    assert_eq!(r.json(), json!([{"name": "Acme App"}]));
    assert_eq!(r.header("content-range").as_deref(), Some("*/1"));
    let left: Vec<String> = fx
        .su
        .query(
            "select name from projects where org_id = $1 order by name",
            &[&fx.org_a],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, s(&["Acme Site", "Beta Pitch"]));
    // a foreign key violation is 409 23503
    fx.call(
        Method::PATCH,
        &format!("/projects?id=eq.{ACME_SITE}"),
        fx.a(),
    )
    .body(json!({"client_id": BRAVO}))
    .send()
    .await
    .error(409, "23503");
}

#[tokio::test]
async fn rest_return_preferences_and_location() {
    let fx = fixture().await;
    let r = fx
        .call(Method::POST, "/clients", fx.a())
        .prefer("return=headers-only")
        .body(json!({"org_id": fx.org_a, "name": "Loc"}))
        .send()
        .await;
    r.expect(201);
    assert_eq!(r.text, "");
    let loc = r.header("location").expect("Location");
    let id: Uuid = fx
        .su
        .query_one("select id from clients where name = 'Loc'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(loc, format!("/clients?id=eq.{id}"));
    // the Location is a working URL
    let r = fx.get(&format!("{loc}&select=name"), fx.a()).await;
    assert_eq!(r.expect(200).names(), s(&["Loc"]));
    // values are URL-encoded in Location
    fx.su
        .batch_execute(
            "create table public.tagged (key text primary key, label text);
             grant select, insert on public.tagged to service_role;
             notify pgrst, 'reload schema';",
        )
        .await
        .unwrap();
    wait_until_served(&fx, "/tagged", fx.service())
        .await
        .expect(200);
    let r = fx
        .call(Method::POST, "/tagged", fx.service())
        .prefer("return=headers-only")
        .body(json!({"key": "a b&c=d,é", "label": "x"}))
        .send()
        .await;
    r.expect(201);
    let loc = r.header("location").unwrap();
    assert_eq!(loc, "/tagged?key=eq.a%20b%26c%3Dd%2C%C3%A9");
    let r = fx.get(&loc, fx.service()).await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"key": "a b&c=d,é", "label": "x"}])
    );
    // return=minimal on an insert succeeds where representation needs a SELECT policy
    let r = fx
        .call(Method::POST, "/clients", fx.a())
        .prefer("return=minimal")
        .body(json!({"org_id": fx.org_a, "name": "Min"}))
        .send()
        .await;
    r.expect(201);
    assert!(
        r.header("preference-applied")
            .unwrap_or_default()
            .contains("return=minimal"),
        "{:?}",
        r.headers
    );
}

#[tokio::test]
async fn rest_rpc_get_post_shapes() {
    let fx = fixture().await;
    // scalar (jsonb) by POST with named args, and by GET
    let r = fx
        .call(Method::POST, "/rpc/get_client_classification", fx.a())
        .body(json!({"p_client_id": ACME}))
        .send()
        .await;
    let j = r.expect(200).json();
    assert_eq!(j["client_id"], ACME.to_string());
    assert_eq!(j["client_status"], "client");
    let r = fx
        .get(
            &format!("/rpc/get_client_classification?p_client_id={ACME}"),
            fx.a(),
        )
        .await;
    assert_eq!(r.expect(200).json()["client_status"], "client");
    // composite return (a row) → object; volatile
    let r = fx
        .call(Method::POST, "/rpc/create_context_snapshot", fx.a())
        .body(json!({"project_id": ACME_SITE, "summary": "first"}))
        .send()
        .await;
    let j = r.expect(200).json();
    assert_eq!(j["version"], 1, "{j}");
    assert_eq!(j["is_active"], true);
    // a volatile function by GET: 405 (read-only transaction)
    let r = fx
        .get(
            &format!("/rpc/create_context_snapshot?project_id={ACME_SITE}"),
            fx.a(),
        )
        .await;
    r.error(405, "25006");
    // not found / wrong arguments: 404 PGRST202
    let j = fx
        .call(Method::POST, "/rpc/nope", fx.a())
        .body(json!({}))
        .send()
        .await
        .error(404, "PGRST202");
    assert!(j["message"].as_str().unwrap().contains("nope"), "{j}");
    fx.call(Method::POST, "/rpc/get_client_classification", fx.a())
        .body(json!({"wrong": 1}))
        .send()
        .await
        .error(404, "PGRST202");
    // anon lacks EXECUTE on writers: 401
    fx.call(Method::POST, "/rpc/create_context_snapshot", None)
        .body(json!({"project_id": ACME_SITE}))
        .send()
        .await
        .error(401, "42501");
    // a bad argument value: 400 22P02
    fx.call(Method::POST, "/rpc/get_client_classification", fx.a())
        .body(json!({"p_client_id": "x"}))
        .send()
        .await
        .error(400, "22P02");

    // setof scalar, void, overloaded, single unnamed json param, defaults (created now, served after reload)
    fx.su
        .batch_execute(
            r#"
create function public.client_names() returns setof text language sql stable as $$ select name from public.clients order by name $$;
create function public.touch_nothing(n int) returns void language sql volatile as $$ select $$;
create function public.add(a int, b int default 10) returns int language sql immutable as $$ select a + b $$;
create function public.echo_body(json) returns json language sql immutable as $$ select $1 $$;
create function public.top_clients(min_score int) returns setof public.clients language sql stable as $$ select * from public.clients where health_score >= min_score $$;
notify pgrst, 'reload schema';
"#,
        )
        .await
        .unwrap();
    wait_until_served(&fx, "/rpc/client_names", fx.a()).await;
    let r = fx
        .call(Method::POST, "/rpc/client_names", fx.a())
        .body(json!({}))
        .send()
        .await;
    assert_eq!(r.expect(200).json(), json!(["Acme", "Beta Co", "Gamma"]));
    // zero-arg RPC with no body and no content type
    let r = fx
        .call(Method::POST, "/rpc/client_names", fx.a())
        .send()
        .await;
    assert_eq!(r.expect(200).json(), json!(["Acme", "Beta Co", "Gamma"]));
    let r = fx
        .call(Method::POST, "/rpc/touch_nothing", fx.a())
        .body(json!({"n": 1}))
        .send()
        .await;
    r.expect(204);
    let r = fx
        .call(Method::POST, "/rpc/add", fx.a())
        .body(json!({"a": 1, "b": 2}))
        .send()
        .await;
    assert_eq!(r.expect(200).json(), json!(3));
    let r = fx.get("/rpc/add?a=5", fx.a()).await;
    assert_eq!(r.expect(200).json(), json!(15));
    let r = fx
        .call(Method::POST, "/rpc/echo_body", fx.a())
        .body(json!({"any": ["thing"]}))
        .send()
        .await;
    assert_eq!(r.expect(200).json(), json!({"any": ["thing"]}));
    // setof table: select, filters, order, limit, embeds, count
    let r = fx
        .call(Method::POST, "/rpc/top_clients?select=name,projects(name)&order=name&status=neq.lead&projects.order=name", fx.a())
        .prefer("count=exact")
        .body(json!({"min_score": 50}))
        .send()
        .await;
    r.expect(200);
    assert_eq!(
        r.json(),
        json!([{"name": "Acme", "projects": [{"name": "Acme App"}, {"name": "Acme Site"}]}])
    );
    assert_eq!(r.header("content-range").as_deref(), Some("0-0/1"));
    let r = fx
        .get(
            "/rpc/top_clients?min_score=0&select=name&order=name&limit=2",
            fx.a(),
        )
        .await;
    assert_eq!(r.expect(200).names(), s(&["Acme", "Beta Co"]));
    // HEAD on a function
    let r = fx
        .call(Method::HEAD, "/rpc/client_names", fx.a())
        .send()
        .await;
    r.expect(200);
    assert_eq!(r.text, "");
}

#[tokio::test]
async fn rest_rpc_vector_search_with_json_array_arguments() {
    let fx = fixture().await;
    // match_documents: the embedding is a JSON array; RLS keeps bob's identical document out.
    let r = fx
        .call(Method::POST, "/rpc/match_documents", fx.a())
        .body(json!({"query_embedding": basis(0), "match_count": 5}))
        .send()
        .await;
    let j = r.expect(200).json();
    let rows = j.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{j}");
    assert_eq!(rows[0]["name"], "Acme proposal");
    assert!(
        (rows[0]["similarity"].as_f64().unwrap() - 1.0).abs() < 1e-6,
        "{j}"
    );
    assert_eq!(rows[1]["name"], "Billing notes");
    assert!(rows.iter().all(|r| r["org_id"] == fx.org_a.to_string()));
    // the same for bob sees only his
    let r = fx
        .call(
            Method::POST,
            "/rpc/match_documents?select=name,similarity",
            Some(&fx.bob),
        )
        .body(json!({"query_embedding": basis(0)}))
        .send()
        .await;
    assert_eq!(r.expect(200).names(), s(&["Bravo proposal"]));
    // filter argument, select and filters on the result
    let r = fx
        .call(Method::POST, "/rpc/match_documents?select=name&similarity=lt.0.5", fx.a())
        .body(json!({"query_embedding": basis(0), "match_count": 5, "filter": {"project_id": ACME_SITE}}))
        .send()
        .await;
    assert_eq!(r.expect(200).names(), s(&["Billing notes"]));
    // a wrong dimension is a 400 from pgvector (22000)
    let r = fx
        .call(Method::POST, "/rpc/match_documents", fx.a())
        .body(json!({"query_embedding": [1, 2, 3]}))
        .send()
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    // by GET, the vector as a query value
    let q: String = vector_literal(&basis(1));
    let r = fx
        .get(
            &format!("/rpc/match_documents?select=name&match_count=1&query_embedding={q}"),
            fx.a(),
        )
        .await;
    assert_eq!(r.expect(200).names(), s(&["Billing notes"]));
    // hybrid search: full text + vector fused
    let r = fx
        .call(Method::POST, "/rpc/hybrid_search_documents?select=name,full_text_rank,semantic_rank,score", fx.a())
        .body(json!({"query_text": "invoice automation", "query_embedding": basis(1), "match_count": 5}))
        .send()
        .await;
    let j = r.expect(200).json();
    assert_eq!(j[0]["name"], "Billing notes", "{j}");
    assert_eq!(j[0]["full_text_rank"], 1);
    assert_eq!(j[0]["semantic_rank"], 1);
    assert!(
        j.as_array()
            .unwrap()
            .iter()
            .all(|r| r["name"] != "Bravo proposal"),
        "{j}"
    );
}

#[tokio::test]
async fn rest_error_mapping() {
    let fx = fixture().await;
    // 23505 → 409
    let j = fx
        .call(Method::POST, "/project_systems", fx.a())
        .body(json!({"org_id": fx.org_a, "project_id": ACME_SITE, "system_id": "lead-generation"}))
        .send()
        .await
        .error(409, "23505");
    assert!(
        j["message"].as_str().unwrap().contains("duplicate key"),
        "{j}"
    );
    // PostgreSQL leaves the key values out of DETAIL on a table with RLS enabled.
    assert!(
        j["details"].is_null() || j["details"].as_str().unwrap().contains("already exists"),
        "{j}"
    );
    // 23503 → 409
    fx.call(Method::POST, "/project_systems", fx.a())
        .body(json!({"org_id": fx.org_a, "project_id": ACME_SITE, "system_id": "no-such-system"}))
        .send()
        .await
        .error(409, "23503");
    // 42501: anon → 401, authenticated → 403
    fx.call(Method::POST, "/systems", None)
        .body(json!({"id": "x", "name": "X"}))
        .send()
        .await
        .error(401, "42501");
    fx.call(Method::POST, "/systems", fx.a())
        .body(json!({"id": "x", "name": "X"}))
        .send()
        .await
        .error(403, "42501");
    // insert into another tenant: the RLS WITH CHECK refuses (403)
    fx.call(Method::POST, "/clients", fx.a())
        .body(json!({"org_id": fx.org_b, "name": "Intruder"}))
        .send()
        .await
        .error(403, "42501");
    // 22P02 → 400
    fx.get("/clients?health_score=eq.abc", fx.a())
        .await
        .error(400, "22P02");
    // unknown table → 404
    let r = fx.get("/nope", fx.a()).await;
    assert_eq!(r.status, 404, "{}", r.text);
    let j = r.json();
    assert!(j["code"] == "42P01" || j["code"] == "PGRST205", "{j}");
    // non-exposed schemas' tables are not reachable
    assert_eq!(fx.get("/users", fx.service()).await.status, 404);
    // 23502 → 400
    fx.call(Method::POST, "/clients", fx.a())
        .body(json!({"org_id": fx.org_a}))
        .send()
        .await
        .error(400, "23502");
    // bad JSON body → 400 PGRST102
    fx.call(Method::POST, "/clients", fx.a())
        .h("Content-Type", "application/json")
        .rb_body("{nope".into())
        .send()
        .await
        .error(400, "PGRST102");
    // unsupported method
    let r = fx
        .call(Method::from_bytes(b"TRACE").unwrap(), "/clients", fx.a())
        .send()
        .await;
    assert!(r.status == 405, "{} {}", r.status, r.text);
}

#[tokio::test]
async fn rest_profile_headers() {
    let fx = fixture().await;
    let r = fx
        .call(Method::GET, "/systems?select=id&limit=1", None)
        .h("Accept-Profile", "public")
        .send()
        .await;
    r.expect(200);
    assert_eq!(r.header("content-profile").as_deref(), Some("public"));
    let j = fx
        .call(Method::GET, "/systems", None)
        .h("Accept-Profile", "private")
        .send()
        .await
        .error(406, "PGRST106");
    assert!(j["message"].as_str().unwrap().contains("public"), "{j}");
    fx.call(Method::POST, "/systems", fx.service())
        .h("Content-Profile", "auth")
        .body(json!({"id": "x", "name": "x"}))
        .send()
        .await
        .error(406, "PGRST106");
    // Content-Profile is for writes; a GET ignores it
    fx.call(Method::GET, "/systems?limit=1", None)
        .h("Content-Profile", "auth")
        .send()
        .await
        .expect(200);
}

#[tokio::test]
async fn rest_openapi_document() {
    let fx = fixture().await;
    for path in ["/rest/v1/", "/rest/v1"] {
        let r = fx
            .app
            .http
            .get(fx.app.url(path))
            .header("apikey", &fx.app.service_role_key)
            .header(
                "Authorization",
                format!("Bearer {}", fx.app.service_role_key),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("openapi+json"));
        let j: Value = r.json().await.unwrap();
        assert_eq!(j["swagger"], "2.0");
        assert!(
            j["paths"]["/clients"].is_object(),
            "{path}: paths = {:?}",
            j["paths"].as_object().map(|o| o.keys().collect::<Vec<_>>())
        );
        assert!(j["paths"]["/rpc/match_documents"].is_object());
        assert!(j["definitions"]["clients"]["properties"]["health_score"].is_object());
    }
}

#[tokio::test]
async fn rest_notify_pgrst_reloads_the_schema_cache() {
    let fx = fixture().await;
    // Without the DDL event triggers (a database agencyflow does not own), only an explicit
    // NOTIFY reloads; `own_database` tests the triggers.
    fx.su
        .batch_execute(
            "alter event trigger pgrst_ddl_watch disable; alter event trigger pgrst_drop_watch disable",
        )
        .await
        .unwrap();
    let r = fx.get("/gadgets", fx.a()).await;
    assert_eq!(r.status, 404, "{}", r.text);
    fx.su
        .batch_execute(
            "create table public.gadgets (id int primary key, name text, span int4range, tags text[]);
             grant select, insert on public.gadgets to anon, authenticated;
             insert into public.gadgets values (1, 'one', '[1,5)', '{a}'), (2, 'two', '[5,10)', '{b}'), (3, 'three', '[20,30)', '{a,b}');",
        )
        .await
        .unwrap();
    // not served until the cache reloads
    assert_eq!(fx.get("/gadgets", fx.a()).await.status, 404);
    fx.su
        .batch_execute("notify pgrst, 'reload schema'")
        .await
        .unwrap();
    let r = wait_until_served(&fx, "/gadgets?select=name&order=id", fx.a()).await;
    assert_eq!(r.expect(200).names(), s(&["one", "two", "three"]));
    // range operators on the new table
    for (q, want) in [
        ("span=sl.[10,20)", vec!["one", "two"]),
        ("span=sr.[10,20)", vec!["three"]),
        ("span=nxr.[1,6)", vec!["one"]),
        ("span=nxl.[5,6)", vec!["two", "three"]),
        ("span=adj.[10,20)", vec!["two", "three"]),
        ("span=ov.[4,6)", vec!["one", "two"]),
        ("span=cs.[2,3)", vec!["one"]),
        ("span=cd.[0,7)", vec!["one"]),
    ] {
        let r = fx
            .get(&format!("/gadgets?select=name&order=id&{q}"), fx.a())
            .await;
        assert_eq!(r.expect(200).names(), s(&want), "{q}");
    }
    // a new column is unknown until the next reload
    fx.su
        .batch_execute("alter table public.gadgets add column color text")
        .await
        .unwrap();
    fx.call(Method::POST, "/gadgets", fx.a())
        .body(json!({"id": 9, "color": "red"}))
        .send()
        .await
        .error(400, "PGRST204");
    fx.su.batch_execute("notify pgrst").await.unwrap();
    let fx = &fx;
    agencyflow_testkit::wait::until(
        std::time::Duration::from_secs(30),
        "the new column to be served after an empty NOTIFY pgrst",
        || async move {
            fx.call(Method::POST, "/gadgets", fx.a())
                .body(json!({"id": 9, "color": "red"}))
                .send()
                .await
                .status
                == 201
        },
    )
    .await;
}

#[tokio::test]
async fn rest_apikey_gate() {
    let fx = fixture().await;
    let url = fx.app.url("/rest/v1/systems");
    let r = fx.app.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"message": "No API key found in request"})
    );
    let r = fx
        .app
        .http
        .get(&url)
        .header("apikey", "not-a-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"message": "Invalid authentication credentials"})
    );
    let r = fx
        .app
        .http
        .get(format!(
            "{url}?apikey={}&select=id&limit=1",
            fx.app.anon_key
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // `apikey` in the query is not a filter
    let r = fx
        .app
        .http
        .get(format!("{url}?apikey={}&select=id", fx.app.anon_key))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap().as_array().unwrap().len(),
        8
    );
    // CORS preflight needs no key
    let r = fx
        .app
        .http
        .request(Method::OPTIONS, &url)
        .header("Origin", "http://localhost:3000")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "apikey,authorization,content-type,prefer,accept-profile,x-client-info",
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn rest_bad_expired_and_forged_jwts_are_401_pgrst301() {
    let fx = fixture().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expired = fx
        .app
        .keys
        .sign(&json!({"sub": ALICE, "role": "authenticated", "iat": now - 7200, "exp": now - 3600}))
        .unwrap();
    let forged =
        agencyflow_auth::JwtKeys::hs256(b"another-secret-another-secret-another-secret", None)
            .sign(&json!({"sub": ALICE, "role": "service_role", "iat": now, "exp": now + 3600}))
            .unwrap();
    let mut alg_none = {
        use base64::Engine;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            e.encode(r#"{"alg":"none","typ":"JWT"}"#),
            e.encode(json!({"role": "service_role", "exp": now + 3600}).to_string())
        )
    };
    for (what, token) in [
        ("garbage", "not.a.jwt".to_string()),
        ("expired", expired),
        ("forged", forged),
        ("alg none", std::mem::take(&mut alg_none)),
    ] {
        let r = fx.get("/systems?select=id&limit=1", Some(&token)).await;
        let j = r.error(401, "PGRST301");
        let www = r
            .header("www-authenticate")
            .unwrap_or_else(|| panic!("{what}: no WWW-Authenticate"));
        assert!(
            www.starts_with("Bearer") && www.contains("invalid_token"),
            "{what}: {www}"
        );
        if what == "expired" {
            assert_eq!(j["message"], "JWT expired");
        }
    }
    // like PostgREST, another scheme or an empty bearer carries no token: anon
    let r = fx
        .call(Method::GET, "/systems?select=id&limit=1", None)
        .h("Authorization", "Basic abc")
        .send()
        .await;
    r.expect(200);
    let r = fx
        .call(Method::GET, "/systems?select=id&limit=1", None)
        .h("Authorization", "Bearer ")
        .send()
        .await;
    r.expect(200);
    // a token whose role does not exist: PostgreSQL refuses the role switch
    let ghost = fx
        .app
        .keys
        .sign(&json!({"sub": ALICE, "role": "ghost", "iat": now, "exp": now + 3600}))
        .unwrap();
    let r = fx.get("/systems?select=id&limit=1", Some(&ghost)).await;
    assert!(
        r.status == 401 || r.status == 400 || r.status == 403,
        "{} {}",
        r.status,
        r.text
    );
}

#[tokio::test]
async fn rest_rls_member_of_a_never_gets_org_b_rows() {
    let fx = fixture().await;
    let (a, org_b) = (fx.a(), fx.org_b);
    // plain reads and filters
    assert_eq!(
        names_of(&fx, "/clients?select=name").await,
        s(&["Acme", "Beta Co", "Gamma"])
    );
    assert_eq!(
        fx.get(&format!("/clients?org_id=eq.{org_b}"), a)
            .await
            .expect(200)
            .text,
        "[]"
    );
    assert_eq!(
        fx.get(&format!("/clients?id=eq.{BRAVO}"), a)
            .await
            .expect(200)
            .text,
        "[]"
    );
    assert_eq!(
        fx.get("/clients?name=ilike.*bravo*", a)
            .await
            .expect(200)
            .text,
        "[]"
    );
    assert_eq!(
        fx.get(&format!("/organizations?select=id&id=eq.{org_b}"), a)
            .await
            .expect(200)
            .text,
        "[]"
    );
    let r = fx
        .call(Method::GET, "/documents?select=name", a)
        .prefer("count=exact")
        .send()
        .await;
    assert_eq!(
        r.expect(200).header("content-range").as_deref(),
        Some("0-1/2")
    );
    // embeds: from a global table and from the org
    let r = fx
        .get(
            "/systems?select=id,project_systems(project_id)&id=eq.lead-generation",
            a,
        )
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"id": "lead-generation", "project_systems": [{"project_id": ACME_SITE}]}])
    );
    let r = fx
        .get("/organizations?select=name,clients(name),projects(name)", a)
        .await;
    let j = r.expect(200).json();
    assert_eq!(j.as_array().unwrap().len(), 1, "{j}");
    assert!(
        !j.to_string().contains("Bravo") && !j.to_string().contains("B Project"),
        "{j}"
    );
    let r = fx
        .get(
            "/services?select=slug,project_services(id)&org_id=is.null&limit=50",
            a,
        )
        .await;
    assert!(!r.expect(200).text.contains(&B_PROJECT.to_string()));
    let r = fx.get("/profiles?select=id,full_name", a).await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"id": ALICE, "full_name": "Alice"}])
    );
    // RPC
    let r = fx
        .call(Method::POST, "/rpc/get_client_classification", a)
        .body(json!({"p_client_id": BRAVO}))
        .send()
        .await;
    assert_eq!(r.expect(200).json(), Value::Null);
    let r = fx
        .call(Method::POST, "/rpc/match_documents?select=name", a)
        .body(json!({"query_embedding": basis(0), "filter": {"org_id": org_b}}))
        .send()
        .await;
    assert_eq!(r.expect(200).text, "[]");
    // the security-invoker view
    let r = fx
        .get(
            "/client_crm_status?select=name,crm_classification&order=name",
            a,
        )
        .await;
    assert_eq!(r.expect(200).names(), s(&["Acme", "Beta Co", "Gamma"]));
    assert_eq!(
        fx.get(&format!("/client_crm_status?id=eq.{BRAVO}"), a)
            .await
            .expect(200)
            .text,
        "[]"
    );
    let r = fx
        .get("/client_crm_status?select=name", Some(&fx.bob))
        .await;
    assert_eq!(r.expect(200).names(), s(&["Bravo Secret"]));
    // writes to B's rows change nothing
    let r = fx
        .call(Method::PATCH, &format!("/clients?id=eq.{BRAVO}"), a)
        .prefer("return=representation")
        .body(json!({"name": "pwned"}))
        .send()
        .await;
    assert_eq!(r.expect(200).text, "[]");
    fx.call(Method::DELETE, &format!("/projects?id=eq.{B_PROJECT}"), a)
        .send()
        .await
        .expect(204);
    // moving one of A's rows to B is refused
    fx.call(Method::PATCH, &format!("/clients?id=eq.{GAMMA}"), a)
        .body(json!({"org_id": org_b}))
        .send()
        .await
        .error(403, "42501");
    let row = fx.su.query_one("select (select name from clients where id = $1), (select count(*) from projects where id = $2), (select org_id from clients where id = $3)", &[&BRAVO, &B_PROJECT, &GAMMA]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "Bravo Secret");
    assert_eq!(row.get::<_, i64>(1), 1);
    assert_eq!(row.get::<_, Uuid>(2), fx.org_a);
    // service_role sees every tenant
    let r = fx
        .get("/clients?select=name&order=name", fx.service())
        .await;
    assert_eq!(
        r.expect(200).names(),
        s(&["Acme", "Beta Co", "Bravo Secret", "Gamma"])
    );
}

#[tokio::test]
async fn rest_anon_sees_only_the_catalogue() {
    let fx = fixture().await;
    let r = fx.get("/systems?select=id", None).await;
    assert_eq!(r.expect(200).json().as_array().unwrap().len(), 8);
    let r = fx.get("/services?select=slug,org_id", None).await;
    let j = r.expect(200).json();
    assert!(!j.as_array().unwrap().is_empty());
    assert!(
        j.as_array().unwrap().iter().all(|x| x["org_id"].is_null()),
        "{j}"
    );
    let r = fx
        .get(
            "/system_services?select=system_id,services(slug)&limit=3",
            None,
        )
        .await;
    r.expect(200);
    for t in [
        "clients",
        "projects",
        "documents",
        "organizations",
        "profiles",
        "team_members",
        "client_crm_status",
        "project_systems",
        "crm_contacts",
    ] {
        let r = fx.get(&format!("/{t}"), None).await;
        assert!(
            r.status == 200 && r.text == "[]" || r.status == 401,
            "anon read {t}: {} {}",
            r.status,
            r.text
        );
    }
    // an inactive catalogue row is hidden from anon
    fx.su
        .batch_execute("update systems set is_active = false where id = 'lead-generation'")
        .await
        .unwrap();
    let r = fx
        .get("/systems?select=id&id=eq.lead-generation", None)
        .await;
    assert_eq!(r.expect(200).text, "[]");
    // anon writes nothing
    let r = fx
        .call(Method::POST, "/clients", None)
        .body(json!({"org_id": fx.org_a, "name": "x"}))
        .send()
        .await;
    r.error(401, "42501");
    let r = fx
        .call(Method::DELETE, "/systems?id=eq.content-engine", None)
        .send()
        .await;
    assert!(
        r.status == 401 || r.status == 204,
        "{} {}",
        r.status,
        r.text
    );
    let n: i64 = fx
        .su
        .query_one("select count(*) from systems", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 8);
}

#[tokio::test]
async fn rest_timezone_preference() {
    let fx = fixture().await;
    fx.su
        .batch_execute(&format!(
            "update clients set last_activity_at = '2026-01-01 12:00:00+00' where id = '{ACME}'"
        ))
        .await
        .unwrap();
    let r = fx
        .call(
            Method::GET,
            &format!("/clients?select=t:last_activity_at::text&id=eq.{ACME}"),
            fx.a(),
        )
        .prefer("timezone=America/New_York")
        .send()
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"t": "2026-01-01 07:00:00-05"}])
    );
    assert!(
        r.header("preference-applied")
            .unwrap_or_default()
            .contains("timezone=America/New_York"),
        "{:?}",
        r.headers
    );
    let r = fx
        .get(
            &format!("/clients?select=t:last_activity_at::text&id=eq.{ACME}"),
            fx.a(),
        )
        .await;
    assert_eq!(
        r.expect(200).json(),
        json!([{"t": "2026-01-01 12:00:00+00"}])
    );
}

#[tokio::test]
async fn rest_supabase_js_e2e() {
    let fx = fixture().await;
    let (org_a, org_b, acme, site) = (
        fx.org_a.to_string(),
        fx.org_b.to_string(),
        ACME.to_string(),
        ACME_SITE.to_string(),
    );
    fx.app
        .run_node_test_with_env(
            "rest.test.js",
            &[
                ("REST_ALICE_TOKEN", &fx.alice),
                ("REST_BOB_TOKEN", &fx.bob),
                ("REST_ORG_A", &org_a),
                ("REST_ORG_B", &org_b),
                ("REST_ACME", &acme),
                ("REST_ACME_SITE", &site),
            ],
        )
        .await;
}

/// Functions shape the response as in PostgREST: `RAISE SQLSTATE 'PGRST'` with JSON message
/// and detail, and the `response.status` / `response.headers` settings.
#[tokio::test]
async fn rest_functions_shape_responses_with_raise_pgrst_and_response_settings() {
    let fx = fixture().await;
    fx.su
        .batch_execute(
            r#"create function public.pay_up() returns json language plpgsql as $$
               begin
                 raise sqlstate 'PGRST' using
                   message = '{"code":"123","message":"Payment Required","details":"Quota exceeded","hint":"Upgrade your plan"}',
                   detail = '{"status":402,"headers":{"X-Powered-By":"Nerd Rage"}}';
               end $$;
               create function public.bad_raise() returns json language plpgsql as $$
               begin raise sqlstate 'PGRST' using message = 'not json', detail = '{}'; end $$;
               create function public.made_it() returns json language plpgsql as $$
               begin
                 perform set_config('response.status', '201', true);
                 perform set_config('response.headers', '[{"Location": "/things/7"}, {"Cache-Control": "no-store"}]', true);
                 return json_build_object('id', 7);
               end $$;
               create function public.bad_status() returns int language plpgsql as $$
               begin perform set_config('response.status', 'teapot', true); return 1; end $$;
               create function public.bad_headers() returns int language plpgsql as $$
               begin perform set_config('response.headers', '{"not": "an array"}', true); return 1; end $$;
               grant execute on function public.pay_up(), public.bad_raise(), public.made_it(),
                 public.bad_status(), public.bad_headers() to authenticated;
               notify pgrst, 'reload schema';"#,
        )
        .await
        .unwrap();
    wait_until_served(&fx, "/rpc/made_it", fx.a()).await;
    let r = fx.call(Method::POST, "/rpc/pay_up", fx.a()).send().await;
    assert_eq!(r.status, 402, "{}", r.text);
    assert_eq!(r.header("x-powered-by").as_deref(), Some("Nerd Rage"));
    assert_eq!(
        r.json(),
        json!({"code": "123", "message": "Payment Required", "details": "Quota exceeded", "hint": "Upgrade your plan"})
    );
    fx.call(Method::POST, "/rpc/bad_raise", fx.a())
        .send()
        .await
        .error(500, "PGRST121");
    let r = fx.call(Method::POST, "/rpc/made_it", fx.a()).send().await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("location").as_deref(), Some("/things/7"));
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(r.json(), json!({"id": 7}));
    // A read-only call (GET) of the same function is shaped the same way.
    let r = fx.get("/rpc/made_it", fx.a()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    fx.call(Method::POST, "/rpc/bad_status", fx.a())
        .send()
        .await
        .error(500, "PGRST112");
    fx.call(Method::POST, "/rpc/bad_headers", fx.a())
        .send()
        .await
        .error(500, "PGRST111");
    // Ordinary requests are untouched.
    fx.get("/clients?select=id&limit=1", fx.a())
        .await
        .expect(200);
}

/// `limit` on PATCH/DELETE touches at most that many rows, first in the requested order, and
/// only rows RLS lets the caller see; without an order it is refused (PGRST109), never
/// silently applied to every matching row.
#[tokio::test]
async fn rest_limited_update_and_delete() {
    let fx = fixture().await;
    // Alice's org has Acme, Beta Co and Gamma; Bob's Bravo Secret sorts before all of them
    // by health score descending (90) but is not Alice's to touch.
    let r = fx
        .call(
            Method::PATCH,
            "/clients?order=health_score.desc&limit=1",
            fx.a(),
        )
        .prefer("return=representation")
        .body(json!({"notes": "top account"}))
        .send()
        .await;
    r.expect(200);
    assert_eq!(r.names(), vec!["Acme".to_string()]);
    fx.call(Method::DELETE, "/clients?status=neq.client&limit=1", fx.a())
        .send()
        .await
        .error(400, "PGRST109");
    let r = fx
        .call(
            Method::DELETE,
            "/clients?status=neq.client&order=name.asc&limit=1",
            fx.a(),
        )
        .prefer("return=representation")
        .send()
        .await;
    r.expect(200);
    assert_eq!(r.names(), vec!["Beta Co".to_string()]);
    let left = fx
        .get("/clients?select=name&order=name", fx.service())
        .await;
    assert_eq!(
        left.names(),
        s(&["Acme", "Bravo Secret", "Gamma"]),
        "one row deleted, Bob's untouched"
    );
    let bravo = fx
        .get("/clients?select=notes&name=eq.Bravo%20Secret", fx.service())
        .await
        .json();
    assert_eq!(bravo[0]["notes"], "secret");
}
