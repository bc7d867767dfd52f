//! Behaviour of the schema's functions and triggers (docs/schema.md §4, §5), and bad data
//! refused by constraints with nothing partial written.
use agencyflow_testkit::agencyflow_db::tokio_postgres::Client;
use agencyflow_testkit::TestDb;
use uuid::Uuid;

use crate::schema_isolation::{fixture, Fixture};

async fn setup() -> (TestDb, Client, Fixture) {
    let t = TestDb::new().await;
    let c = t.superuser().await;
    let f = fixture(&c).await;
    (t, c, f)
}

async fn one_uuid(c: &Client, sql: &str, org: Uuid) -> Uuid {
    c.query_one(sql, &[&org])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

fn sqlstate(e: &agencyflow_testkit::agencyflow_db::tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

/// A vector literal of `dim` dimensions pointing mostly along axis `k` (1-based), with a
/// little weight on axis `k2` to make distances distinct.
fn vec_sql(dim: usize, k: usize, k2: usize, w2: f32) -> String {
    let mut v = vec![0f32; dim];
    v[k - 1] = 1.0;
    v[k2 - 1] += w2;
    format!(
        "'[{}]'",
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
}

async fn completed_at(c: &Client, session: Uuid) -> Option<chrono::DateTime<chrono::Utc>> {
    c.query_one(
        "select wizard_completed_at from wizard_sessions where id = $1",
        &[&session],
    )
    .await
    .unwrap()
    .get(0)
}

async fn pending_jobs(c: &Client, row: Uuid) -> i64 {
    c.query_one(
        "select count(*) from private.embedding_jobs where row_id = $1 and status = 'pending'",
        &[&row],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn wizard_completion_is_set_once_and_cleared_when_going_back() {
    let (_t, c, f) = setup().await;
    let s = one_uuid(
        &c,
        "select id from wizard_sessions where org_id = $1",
        f.org_a,
    )
    .await;
    assert!(completed_at(&c, s).await.is_none());
    c.execute(
        "update wizard_sessions set current_step = 5 where id = $1",
        &[&s],
    )
    .await
    .unwrap();
    let first = completed_at(&c, s).await.expect("completed at step 5");
    c.execute(
        "update wizard_sessions set current_step = 5 where id = $1",
        &[&s],
    )
    .await
    .unwrap();
    assert_eq!(completed_at(&c, s).await, Some(first), "set once");
    c.execute(
        "update wizard_sessions set current_step = 3 where id = $1",
        &[&s],
    )
    .await
    .unwrap();
    assert!(completed_at(&c, s).await.is_none(), "cleared below step 5");
}

#[tokio::test]
async fn onboarding_on_status_change_and_on_a_won_deal() {
    let (_t, c, f) = setup().await;
    // Direct status change
    let client_a = one_uuid(&c, "select id from clients where org_id = $1", f.org_a).await;
    c.execute(
        "update clients set status = 'client' where id = $1",
        &[&client_a],
    )
    .await
    .unwrap();
    let r = c
        .query_one(
            "select onboarded_at is not null, lifecycle_stage from clients where id = $1",
            &[&client_a],
        )
        .await
        .unwrap();
    assert!(r.get::<_, bool>(0));
    assert_eq!(r.get::<_, Option<String>>(1).as_deref(), Some("onboarding"));
    let first: chrono::DateTime<chrono::Utc> = c
        .query_one(
            "select onboarded_at from clients where id = $1",
            &[&client_a],
        )
        .await
        .unwrap()
        .get(0);
    c.execute(
        "update clients set status = 'churned' where id = $1",
        &[&client_a],
    )
    .await
    .unwrap();
    c.execute(
        "update clients set status = 'client' where id = $1",
        &[&client_a],
    )
    .await
    .unwrap();
    let again: chrono::DateTime<chrono::Utc> = c
        .query_one(
            "select onboarded_at from clients where id = $1",
            &[&client_a],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(first, again, "only the first change onboards");
    // A won deal promotes the prospect of org B, through the RLS of a consultant.
    let t = _t;
    let db = t.db();
    let deal_b = one_uuid(&c, "select id from crm_deals where org_id = $1", f.org_b).await;
    let mut tx = t.as_user(&db, f.user('B', "consultant")).await;
    tx.execute(
        "update crm_deals set status = 'won' where id = $1",
        &[&deal_b],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let r = c.query_one("select status, onboarded_at is not null, pipeline_stage from clients where org_id = $1", &[&f.org_b]).await.unwrap();
    assert_eq!(r.get::<_, String>(0), "client");
    assert!(r.get::<_, bool>(1));
    assert_eq!(r.get::<_, Option<String>>(2).as_deref(), Some("won"));
    let closed: bool = c
        .query_one(
            "select closed_at is not null from crm_deals where id = $1",
            &[&deal_b],
        )
        .await
        .unwrap()
        .get(0);
    assert!(closed);
    // A churned client is not promoted by a won deal.
    c.batch_execute(&format!("update clients set status = 'churned' where org_id = '{}'; update crm_deals set status = 'open' where org_id = '{0}'; update crm_deals set status = 'won' where org_id = '{0}'", f.org_b)).await.unwrap();
    let st: String = c
        .query_one("select status from clients where org_id = $1", &[&f.org_b])
        .await
        .unwrap()
        .get(0);
    assert_eq!(st, "churned");
}

#[tokio::test]
async fn dashboard_activates_only_for_a_roadmap_on_the_active_snapshot() {
    let (_t, c, f) = setup().await;
    let project = one_uuid(&c, "select id from projects where org_id = $1", f.org_a).await;
    // The fixture's roadmap sits on the active snapshot: activated.
    let first: Option<chrono::DateTime<chrono::Utc>> = c
        .query_one(
            "select dashboard_activated_at from projects where id = $1",
            &[&project],
        )
        .await
        .unwrap()
        .get(0);
    assert!(first.is_some());
    // A second project: roadmap on an inactive snapshot does nothing.
    let p2: Uuid = c
        .query_one(
            "insert into projects (org_id, name) values ($1, 'P2') returning id",
            &[&f.org_a],
        )
        .await
        .unwrap()
        .get(0);
    let s1: Uuid = c.query_one("insert into context_snapshots (org_id, project_id, version, is_active) values ($1, $2, 1, false) returning id", &[&f.org_a, &p2]).await.unwrap().get(0);
    c.execute(
        "insert into roadmaps (org_id, snapshot_id) values ($1, $2)",
        &[&f.org_a, &s1],
    )
    .await
    .unwrap();
    let none: Option<chrono::DateTime<chrono::Utc>> = c
        .query_one(
            "select dashboard_activated_at from projects where id = $1",
            &[&p2],
        )
        .await
        .unwrap()
        .get(0);
    assert!(none.is_none(), "inactive snapshot activated the dashboard");
    // Active snapshot: activated, and only once.
    let s2: Uuid = c.query_one("insert into context_snapshots (org_id, project_id, version, is_active) values ($1, $2, 2, true) returning id", &[&f.org_a, &p2]).await.unwrap().get(0);
    c.execute(
        "insert into roadmaps (org_id, snapshot_id) values ($1, $2)",
        &[&f.org_a, &s2],
    )
    .await
    .unwrap();
    let set: Option<chrono::DateTime<chrono::Utc>> = c
        .query_one(
            "select dashboard_activated_at from projects where id = $1",
            &[&p2],
        )
        .await
        .unwrap()
        .get(0);
    assert!(set.is_some());
    c.execute(
        "update context_snapshots set is_active = false where project_id = $1",
        &[&p2],
    )
    .await
    .unwrap();
    let s3: Uuid = c.query_one("insert into context_snapshots (org_id, project_id, version, is_active) values ($1, $2, 3, true) returning id", &[&f.org_a, &p2]).await.unwrap().get(0);
    c.execute(
        "insert into roadmaps (org_id, snapshot_id) values ($1, $2)",
        &[&f.org_a, &s3],
    )
    .await
    .unwrap();
    let later: Option<chrono::DateTime<chrono::Utc>> = c
        .query_one(
            "select dashboard_activated_at from projects where id = $1",
            &[&p2],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(set, later, "set once");
}

#[tokio::test]
async fn a_new_interaction_updates_last_activity_and_the_timeline() {
    let (t, c, f) = setup().await;
    let db = t.db();
    let client = one_uuid(&c, "select id from clients where org_id = $1", f.org_a).await;
    let before: i64 = c
        .query_one(
            "select count(*) from activities where client_id = $1",
            &[&client],
        )
        .await
        .unwrap()
        .get(0);
    let mut tx = t.as_user(&db, f.user('A', "consultant")).await;
    let row = tx
        .query_one(
            "insert into crm_interactions (org_id, client_id, type, direction, subject, summary, created_by, created_at)
             values ($1, $2, 'meeting', 'outbound', 'Quarterly review', 'went well', $3, now() + interval '1 hour') returning id, created_at",
            &[&f.org_a, &client, &f.user('A', "consultant")],
        )
        .await
        .unwrap();
    let (iid, created): (Uuid, chrono::DateTime<chrono::Utc>) = (row.get(0), row.get(1));
    tx.commit().await.unwrap();
    let last: chrono::DateTime<chrono::Utc> = c
        .query_one(
            "select last_activity_at from clients where id = $1",
            &[&client],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(last, created);
    let r = c
        .query_one(
            "select count(*), max(activity_type), max(title), bool_and(created_by = $3) from activities where client_id = $1 and metadata @> jsonb_build_object('interaction_id', $2::uuid)",
            &[&client, &iid, &f.user('A', "consultant")],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, i64>(0), 1);
    assert_eq!(r.get::<_, String>(1), "meeting");
    assert_eq!(r.get::<_, String>(2), "Quarterly review");
    assert!(r.get::<_, bool>(3));
    let after: i64 = c
        .query_one(
            "select count(*) from activities where client_id = $1",
            &[&client],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(after, before + 1);
    // An older interaction does not move last_activity_at back.
    c.execute("insert into crm_interactions (org_id, client_id, type, created_at) values ($1, $2, 'note', now() - interval '30 days')", &[&f.org_a, &client]).await.unwrap();
    let still: chrono::DateTime<chrono::Utc> = c
        .query_one(
            "select last_activity_at from clients where id = $1",
            &[&client],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(still, created);
}

#[tokio::test]
async fn snapshot_versioning_keeps_exactly_one_active() {
    let (t, c, f) = setup().await;
    let db = t.db();
    let project = one_uuid(&c, "select id from projects where org_id = $1", f.org_a).await;
    for i in 0..3 {
        let mut tx = t.as_user(&db, f.user('A', "member")).await;
        let v: i32 = tx
            .query_one(
                "select version from create_context_snapshot($1, $2, '{\"k\": 1}'::jsonb)",
                &[&project, &format!("s{i}")],
            )
            .await
            .unwrap()
            .get(0);
        tx.commit().await.unwrap();
        assert_eq!(v, 2 + i);
    }
    let r = c.query_one("select count(*) filter (where is_active), max(version), count(*) from context_snapshots where project_id = $1", &[&project]).await.unwrap();
    assert_eq!(
        (r.get::<_, i64>(0), r.get::<_, i32>(1), r.get::<_, i64>(2)),
        (1, 4, 4)
    );
    let active: i32 = c
        .query_one(
            "select version from context_snapshots where project_id = $1 and is_active",
            &[&project],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(active, 4);
    // The client role cannot create snapshots; another org's member cannot see the project.
    for who in [f.user('A', "client"), f.user('B', "owner")] {
        let mut tx = t.as_user(&db, who).await;
        assert!(tx
            .query(
                "select * from create_context_snapshot($1, 'x', '{}'::jsonb)",
                &[&project]
            )
            .await
            .is_err());
    }
    // Direct insert of a second active snapshot is refused.
    let e = c
        .execute("insert into context_snapshots (org_id, project_id, version, is_active) values ($1, $2, 99, true)", &[&f.org_a, &project])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "23505");
}

#[tokio::test]
async fn save_brief_bumps_the_version_and_appends_a_diff() {
    let (t, c, f) = setup().await;
    let db = t.db();
    let brief = one_uuid(&c, "select id from briefs where org_id = $1", f.org_a).await;
    let me = f.user('A', "consultant");
    let mut tx = t.as_user(&db, me).await;
    let v: i32 = tx
        .query_one("select version from save_brief($1, '{\"goal\": \"y\", \"budget\": 10}'::jsonb, 'tightened goal')", &[&brief])
        .await
        .unwrap()
        .get(0);
    tx.commit().await.unwrap();
    assert_eq!(v, 2);
    let r = c
        .query_one("select diff::text, change_summary, changed_by, content::text from brief_versions where brief_id = $1 and version = 2", &[&brief])
        .await
        .unwrap();
    let diff: serde_json::Value = serde_json::from_str(&r.get::<_, String>(0)).unwrap();
    assert_eq!(diff["added"], serde_json::json!({"budget": 10}));
    assert_eq!(
        diff["changed"],
        serde_json::json!({"goal": {"old": "x", "new": "y"}})
    );
    assert_eq!(diff["removed"], serde_json::json!({}));
    assert_eq!(
        r.get::<_, Option<String>>(1).as_deref(),
        Some("tightened goal")
    );
    assert_eq!(r.get::<_, Option<Uuid>>(2), Some(me));
    let n: i64 = c
        .query_one(
            "select count(*) from brief_versions where brief_id = $1",
            &[&brief],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "version 1 (created) and version 2");
    // brief_versions is append-only for users.
    let mut tx = t.as_user(&db, f.user('A', "owner")).await;
    let up = tx
        .execute(
            "update brief_versions set change_summary = 'x' where brief_id = $1",
            &[&brief],
        )
        .await
        .unwrap();
    let del = tx
        .execute("delete from brief_versions where brief_id = $1", &[&brief])
        .await
        .unwrap();
    assert_eq!((up, del), (0, 0));
}

#[tokio::test]
async fn invoice_is_paid_when_completed_payments_cover_it_and_line_items_must_add_up() {
    let (_t, c, f) = setup().await;
    let inv = one_uuid(&c, "select id from invoices where org_id = $1", f.org_a).await;
    // fixture: 1000 EUR, one pending payment of 100
    c.execute("insert into payments (org_id, invoice_id, amount_cents, status) values ($1, $2, 600, 'completed')", &[&f.org_a, &inv]).await.unwrap();
    let st: String = c
        .query_one("select status from invoices where id = $1", &[&inv])
        .await
        .unwrap()
        .get(0);
    assert_eq!(st, "sent", "600 of 1000 is not paid");
    c.execute("update payments set status = 'completed', amount_cents = 400 where org_id = $1 and status = 'pending'", &[&f.org_a]).await.unwrap();
    let r = c
        .query_one(
            "select status, paid_at is not null from invoices where id = $1",
            &[&inv],
        )
        .await
        .unwrap();
    assert_eq!(
        (r.get::<_, String>(0), r.get::<_, bool>(1)),
        ("paid".to_string(), true)
    );
    let cur: String = c
        .query_one(
            "select currency from payments where invoice_id = $1 limit 1",
            &[&inv],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(cur, "EUR", "payment currency follows the invoice");
    let e = c.execute("insert into payments (org_id, invoice_id, amount_cents, currency, status) values ($1, $2, 1, 'USD', 'completed')", &[&f.org_a, &inv]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "23514");
    // A refund uncovers it again.
    c.execute(
        "update payments set status = 'refunded' where invoice_id = $1 and amount_cents = 400",
        &[&inv],
    )
    .await
    .unwrap();
    let st: String = c
        .query_one("select status from invoices where id = $1", &[&inv])
        .await
        .unwrap()
        .get(0);
    assert_eq!(st, "sent");
    // Line items: must sum to amount_cents.
    let ok = c
        .execute(
            "insert into invoices (org_id, invoice_number, amount_cents, line_items) values ($1, 'LI-1', 1500,
             '[{\"description\": \"a\", \"amount_cents\": 1000}, {\"description\": \"b\", \"quantity\": 2, \"unit_price_cents\": 250}]')",
            &[&f.org_a],
        )
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    let e = c
        .execute("insert into invoices (org_id, invoice_number, amount_cents, line_items) values ($1, 'LI-2', 1500, '[{\"amount_cents\": 1000}]')", &[&f.org_a])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "23514");
    let e = c
        .execute(
            "update invoices set amount_cents = 1499 where org_id = $1 and invoice_number = 'LI-1'",
            &[&f.org_a],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "23514");
}

#[tokio::test]
async fn analytics_match_hand_computed_figures() {
    let (t, c, f) = setup().await;
    let o = f.org_a;
    // A clean org A: remove the fixture's money and work rows, then add known ones in March 2026.
    c.batch_execute(&format!(
        "delete from payments where org_id = '{o}'; delete from invoices where org_id = '{o}'; delete from crm_deals where org_id = '{o}';
         delete from tasks where org_id = '{o}'; delete from ai_run_logs where org_id = '{o}';"
    ))
    .await
    .unwrap();
    let client = one_uuid(&c, "select id from clients where org_id = $1", o).await;
    let phase = one_uuid(&c, "select id from roadmap_phases where org_id = $1", o).await;
    c.batch_execute(&format!(
        "insert into crm_deals (org_id, client_id, title, amount_cents, status, closed_at) values
           ('{o}', '{client}', 'open1', 1000, 'open', null), ('{o}', '{client}', 'open2', 2500, 'open', null),
           ('{o}', '{client}', 'won1', 9000, 'won', '2026-03-05Z'), ('{o}', '{client}', 'won2', 100, 'won', '2026-03-20Z'),
           ('{o}', '{client}', 'lost1', 100, 'lost', '2026-03-09Z'), ('{o}', '{client}', 'won-feb', 100, 'won', '2026-02-27Z');
         insert into invoices (org_id, invoice_number, amount_cents, status, issued_at) values
           ('{o}', 'M1', 5000, 'sent', '2026-03-02Z'), ('{o}', 'M2', 7000, 'sent', '2026-03-31T23:00:00Z'),
           ('{o}', 'M3', 999, 'draft', '2026-03-03Z'), ('{o}', 'A1', 1234, 'sent', '2026-04-01Z');
         insert into payments (org_id, invoice_id, amount_cents, status, processed_at)
           select '{o}', id, 3000, 'completed', '2026-03-10Z' from invoices where org_id = '{o}' and invoice_number = 'M1';
         insert into payments (org_id, invoice_id, amount_cents, status, processed_at)
           select '{o}', id, 2000, 'failed', '2026-03-11Z' from invoices where org_id = '{o}' and invoice_number = 'M1';
         insert into tasks (org_id, phase_id, title, status, completed_at, created_at) values
           ('{o}', '{phase}', 't1', 'done', '2026-03-03Z', '2026-03-01Z'), ('{o}', '{phase}', 't2', 'done', '2026-03-04Z', '2026-02-01Z'),
           ('{o}', '{phase}', 't3', 'todo', null, '2026-03-15Z');
         insert into ai_run_logs (org_id, agent_name, input_tokens, output_tokens, cost_micro_usd, success, cache_hit, created_at) values
           ('{o}', 'a', 100, 50, 30, true, false, '2026-03-01Z'), ('{o}', 'b', 200, 20, 70, false, true, '2026-03-31T12:00:00Z'),
           ('{o}', 'c', 999, 999, 999, true, false, '2026-04-01Z');"
    ))
    .await
    .unwrap();
    let db = t.db();
    let mut tx = t.as_user(&db, f.user('A', "admin")).await;
    let m: String = tx
        .query_one(
            "select metrics::text from refresh_org_analytics($1, 'month', '2026-03-01')",
            &[&o],
        )
        .await
        .unwrap()
        .get(0);
    tx.commit().await.unwrap();
    let m: serde_json::Value = serde_json::from_str(&m).unwrap();
    let expect = serde_json::json!({
        "pipeline_value_cents": 3500, "open_deals": 2, "deals_won": 2, "deals_lost": 1,
        "invoiced_cents": 12000, "invoices_issued": 2, "paid_cents": 3000, "payments_completed": 1,
        "tasks_completed": 2, "tasks_created": 2,
        "ai_runs": 2, "ai_input_tokens": 300, "ai_output_tokens": 70, "ai_tokens": 370, "ai_cost_micro_usd": 100,
        "ai_cache_hits": 1, "ai_failures": 1
    });
    for (k, v) in expect.as_object().unwrap() {
        assert_eq!(&m[k], v, "metric {k} in {m}");
    }
    assert!(
        (m["win_rate"].as_f64().unwrap() - 0.6667).abs() < 1e-9,
        "win_rate {}",
        m["win_rate"]
    );
    // Upsert: one row per (org, period), refreshed in place.
    c.execute(
        "select refresh_org_analytics($1, 'month', '2026-03-01')",
        &[&o],
    )
    .await
    .unwrap();
    let n: i64 = c
        .query_one(
            "select count(*) from analytics where org_id = $1 and period_start = '2026-03-01'",
            &[&o],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    // A member (read-only on analytics) cannot refresh.
    let mut tx = t.as_user(&db, f.user('A', "member")).await;
    assert!(tx
        .query(
            "select refresh_org_analytics($1, 'month', '2026-03-01')",
            &[&o]
        )
        .await
        .is_err());
}

/// (name, status, session step, roadmap on the active snapshot, and the expected
/// wizard status, dashboard status and classification).
type ClassificationCase = (
    &'static str,
    &'static str,
    Option<i32>,
    bool,
    &'static str,
    &'static str,
    &'static str,
);

#[tokio::test]
async fn every_crm_classification_branch() {
    let (t, c, f) = setup().await;
    let o = f.org_a;
    // (name, status, session step (None = no project), roadmap on active snapshot, expected)
    let cases: &[ClassificationCase] = &[
        (
            "c-active",
            "client",
            Some(5),
            true,
            "Active Client",
            "Completed",
            "Active Dashboard",
        ),
        (
            "c-wizard",
            "client",
            Some(5),
            false,
            "Client (Wizard Complete)",
            "Completed",
            "Project Created (No Dashboard)",
        ),
        (
            "c-progress",
            "client",
            Some(2),
            false,
            "Client (In Progress)",
            "In Progress",
            "Project Created (No Dashboard)",
        ),
        (
            "c-noproj",
            "client",
            None,
            false,
            "Client (In Progress)",
            "Not Started",
            "No Project",
        ),
        (
            "p-started",
            "prospect",
            Some(1),
            false,
            "Prospect (Wizard Started)",
            "In Progress",
            "Project Created (No Dashboard)",
        ),
        (
            "p-none",
            "prospect",
            None,
            false,
            "Prospect (No Wizard)",
            "Not Started",
            "No Project",
        ),
        (
            "lead",
            "lead",
            None,
            false,
            "Lead",
            "Not Started",
            "No Project",
        ),
        (
            "churned",
            "churned",
            Some(5),
            true,
            "Unknown",
            "Completed",
            "Active Dashboard",
        ),
    ];
    for (name, status, step, roadmap, ..) in cases {
        let cl: Uuid = c.query_one("insert into clients (org_id, name, status, industry) values ($1, $2, $3, 'Luxury fashion') returning id", &[&o, name, status]).await.unwrap().get(0);
        if let Some(step) = step {
            let p: Uuid = c.query_one("insert into projects (org_id, client_id, name) values ($1, $2, 'p') returning id", &[&o, &cl]).await.unwrap().get(0);
            c.execute("insert into wizard_sessions (org_id, project_id, current_step) values ($1, $2, $3)", &[&o, &p, step]).await.unwrap();
            if *roadmap {
                let s: Uuid = c.query_one("insert into context_snapshots (org_id, project_id) values ($1, $2) returning id", &[&o, &p]).await.unwrap().get(0);
                c.execute(
                    "insert into roadmaps (org_id, snapshot_id) values ($1, $2)",
                    &[&o, &s],
                )
                .await
                .unwrap();
            }
            // an archived, newer project is ignored
            c.execute("insert into projects (org_id, client_id, name, status, created_at) values ($1, $2, 'old', 'archived', now() + interval '1 day')", &[&o, &cl]).await.unwrap();
        }
    }
    c.execute(
        "insert into clients (org_id, name, status) values ($1, 'gone', 'archived')",
        &[&o],
    )
    .await
    .unwrap();
    let db = t.db();
    let mut tx = t.as_user(&db, f.user('A', "consultant")).await;
    for (name, _, _, _, class, wizard, dash) in cases {
        let r = tx
            .query_one(
                "select v.crm_classification, v.wizard_status, v.dashboard_status, v.industry_category, get_client_classification(v.id)::text
                 from client_crm_status v where v.name = $1",
                &[name],
            )
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            (
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2)
            ),
            (class.to_string(), wizard.to_string(), dash.to_string()),
            "{name}"
        );
        assert_eq!(r.get::<_, String>(3), "fashion");
        let j: serde_json::Value = serde_json::from_str(&r.get::<_, String>(4)).unwrap();
        assert_eq!(
            j["crm_classification"],
            serde_json::json!(class),
            "{name}: get_client_classification"
        );
    }
    let n: i64 = tx
        .query_one(
            "select count(*) from client_crm_status where org_id = $1",
            &[&o],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        n,
        cases.len() as i64 + 1,
        "one row per non-archived client (+ the fixture's)"
    );
    let other: i64 = tx
        .query_one(
            "select count(*) from client_crm_status where org_id = $1",
            &[&f.org_b],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(other, 0, "the view follows the caller's RLS");
    let b_client = one_uuid(&c, "select id from clients where org_id = $1", f.org_b).await;
    let hidden: Option<String> = tx
        .query_one("select get_client_classification($1)::text", &[&b_client])
        .await
        .unwrap()
        .get(0);
    assert!(hidden.is_none(), "another org's client classified");
}

#[tokio::test]
async fn vector_and_hybrid_search_return_nearest_rows_within_rls() {
    let (t, c, f) = setup().await;
    // Documents: three in A, one in B that would be the nearest of all; one archived in A.
    let pa = one_uuid(&c, "select id from projects where org_id = $1", f.org_a).await;
    let pb = one_uuid(&c, "select id from projects where org_id = $1", f.org_b).await;
    for (org, p, name, text, v, status) in [
        (
            f.org_a,
            pa,
            "near",
            "pricing strategy",
            vec_sql(768, 1, 2, 0.1),
            "active",
        ),
        (
            f.org_a,
            pa,
            "mid",
            "onboarding checklist",
            vec_sql(768, 1, 2, 0.9),
            "active",
        ),
        (
            f.org_a,
            pa,
            "far",
            "holiday pricing",
            vec_sql(768, 3, 4, 0.0),
            "active",
        ),
        (
            f.org_a,
            pa,
            "archived",
            "pricing archive",
            vec_sql(768, 1, 2, 0.0),
            "archived",
        ),
        (
            f.org_b,
            pb,
            "other-org",
            "pricing secret",
            vec_sql(768, 1, 2, 0.0),
            "active",
        ),
    ] {
        c.execute(
            &format!("insert into documents (org_id, project_id, name, content_text, embedding, status) values ($1, $2, $3, $4, {v}, $5)"),
            &[&org, &p, &name, &text, &status],
        )
        .await
        .unwrap();
    }
    let db = t.db();
    let q = vec_sql(768, 1, 2, 0.0);
    let mut tx = t.as_user(&db, f.user('A', "client")).await;
    let rows = tx
        .query(
            &format!("select name, similarity from match_documents({q}, 2, '{{}}'::jsonb)"),
            &[],
        )
        .await
        .unwrap();
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        names,
        vec!["near", "mid"],
        "nearest first, archived and other org left out"
    );
    let s0: f64 = rows[0].get(1);
    assert!(s0 > 0.99 && s0 <= 1.0);
    let filtered = tx
        .query(
            &format!(
                "select name from match_documents({q}, 10, jsonb_build_object('org_id', $1::uuid))"
            ),
            &[&f.org_b],
        )
        .await
        .unwrap();
    assert!(filtered.is_empty(), "filter cannot widen RLS");
    let hybrid: Vec<String> = tx
        .query(
            &format!("select name from hybrid_search_documents('holiday pricing', {q}, 3)"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(hybrid.len(), 3);
    assert!(
        !hybrid.contains(&"other-org".to_string()) && !hybrid.contains(&"archived".to_string())
    );
    assert!(
        hybrid[..2].contains(&"near".to_string()) && hybrid[..2].contains(&"far".to_string()),
        "RRF ranks the best full-text and best vector hit first: {hybrid:?}"
    );
    drop(tx);
    // Interactions (1536): staff only, nearest first, archived clients left out.
    let ca = one_uuid(&c, "select id from clients where org_id = $1", f.org_a).await;
    c.execute(
        &format!(
            "update crm_interactions set embedding = {} where org_id = $1",
            vec_sql(1536, 5, 6, 0.5)
        ),
        &[&f.org_a],
    )
    .await
    .unwrap();
    c.execute(&format!("insert into crm_interactions (org_id, client_id, type, subject, embedding) values ($1, $2, 'email', 'exact', {})", vec_sql(1536, 5, 6, 0.0)), &[&f.org_a, &ca]).await.unwrap();
    c.execute(
        &format!(
            "update crm_interactions set embedding = {} where org_id = $1",
            vec_sql(1536, 5, 6, 0.0)
        ),
        &[&f.org_b],
    )
    .await
    .unwrap();
    let q = vec_sql(1536, 5, 6, 0.0);
    let mut tx = t.as_user(&db, f.user('A', "consultant")).await;
    let subjects: Vec<Option<String>> = tx
        .query(
            &format!("select subject from match_crm_interactions({q}, 5, '{{}}'::jsonb)"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        subjects,
        vec![Some("exact".to_string()), Some("Call A".to_string())]
    );
    drop(tx);
    let mut tx = t.as_user(&db, f.user('A', "client")).await;
    let n = tx
        .query(
            &format!("select 1 from match_crm_interactions({q}, 5, '{{}}'::jsonb)"),
            &[],
        )
        .await
        .unwrap()
        .len();
    assert_eq!(n, 0, "the client role has no CRM access");
    drop(tx);
    c.execute(
        "update clients set status = 'archived' where id = $1",
        &[&ca],
    )
    .await
    .unwrap();
    let mut tx = t.as_user(&db, f.user('A', "consultant")).await;
    let n = tx
        .query(
            &format!("select 1 from match_crm_interactions({q}, 5, '{{}}'::jsonb)"),
            &[],
        )
        .await
        .unwrap()
        .len();
    assert_eq!(n, 0, "archived client's interactions left out");
}

#[tokio::test]
async fn embeddings_are_cleared_and_queued_when_their_text_changes() {
    let (_t, c, f) = setup().await;
    let doc = one_uuid(&c, "select id from documents where org_id = $1", f.org_a).await;
    assert_eq!(
        pending_jobs(&c, doc).await,
        1,
        "insert with text queued a job"
    );
    c.execute(
        "update private.embedding_jobs set status = 'done' where row_id = $1",
        &[&doc],
    )
    .await
    .unwrap();
    c.execute(
        &format!(
            "update documents set embedding = {}, embedded_at = now() where id = $1",
            vec_sql(768, 1, 2, 0.0)
        ),
        &[&doc],
    )
    .await
    .unwrap();
    assert_eq!(
        pending_jobs(&c, doc).await,
        0,
        "writing the vector queues nothing"
    );
    c.execute(
        "update documents set category = 'reference' where id = $1",
        &[&doc],
    )
    .await
    .unwrap();
    let kept: bool = c
        .query_one(
            "select embedding is not null from documents where id = $1",
            &[&doc],
        )
        .await
        .unwrap()
        .get(0);
    assert!(kept, "a non-text change keeps the embedding");
    c.execute(
        "update documents set content_text = 'new text' where id = $1",
        &[&doc],
    )
    .await
    .unwrap();
    let r = c
        .query_one(
            "select embedding is null, embedded_at is null from documents where id = $1",
            &[&doc],
        )
        .await
        .unwrap();
    assert!(r.get::<_, bool>(0) && r.get::<_, bool>(1));
    assert_eq!(pending_jobs(&c, doc).await, 1);
    c.execute(
        "update documents set summary = 'again' where id = $1",
        &[&doc],
    )
    .await
    .unwrap();
    assert_eq!(pending_jobs(&c, doc).await, 1, "one pending job per row");
    let i = one_uuid(
        &c,
        "select id from crm_interactions where org_id = $1",
        f.org_a,
    )
    .await;
    let n: i64 = c.query_one("select count(*) from private.embedding_jobs where table_name = 'crm_interactions' and row_id = $1", &[&i]).await.unwrap().get(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn bad_data_is_refused_with_nothing_partial_written() {
    let (_t, c, f) = setup().await;
    let o = f.org_a;
    let client = one_uuid(&c, "select id from clients where org_id = $1", o).await;
    let project = one_uuid(&c, "select id from projects where org_id = $1", o).await;
    let cases: Vec<(String, &str, &str)> = vec![
        // multi-row statements: the bad row takes the good one down with it
        (format!("insert into crm_deals (org_id, client_id, title, amount_cents) values ('{o}', '{client}', 'ok', 10), ('{o}', '{client}', 'bad', -1)"), "23514", "select count(*) from crm_deals where title in ('ok', 'bad')"),
        (format!("insert into invoices (org_id, invoice_number, amount_cents) values ('{o}', 'ok-1', 10), ('{o}', 'bad-1', -5)"), "23514", "select count(*) from invoices where invoice_number in ('ok-1', 'bad-1')"),
        (format!("insert into wizard_sessions (org_id, current_step) values ('{o}', 1), ('{o}', 6)"), "23514", "select count(*) - 2 from wizard_sessions"),
        (format!("insert into clients (org_id, name, status) values ('{o}', 'ok-c', 'lead'), ('{o}', 'bad-c', 'Active')"), "23514", "select count(*) from clients where name in ('ok-c', 'bad-c')"),
        (format!("insert into projects (org_id, name, status) values ('{o}', 'ok-p', 'draft'), ('{o}', 'bad-p', 'unknown')"), "23514", "select count(*) from projects where name in ('ok-p', 'bad-p')"),
        (format!("insert into context_snapshots (org_id, project_id, version, is_active) values ('{o}', '{project}', 7, false), ('{o}', '{project}', 8, true)"), "23505", "select count(*) from context_snapshots where version in (7, 8)"),
        (format!("insert into crm_pipelines (org_id, name, is_default) values ('{o}', 'ok-pl', false), ('{o}', 'second default', true)"), "23505", "select count(*) from crm_pipelines where name in ('ok-pl', 'second default')"),
        (format!("insert into payments (org_id, invoice_id, amount_cents) select '{o}', id, 0 from invoices where org_id = '{o}'"), "23514", "select count(*) from payments where amount_cents = 0"),
        (format!("insert into clients (org_id, name, health_score) values ('{o}', 'h', 101)"), "23514", "select count(*) from clients where name = 'h'"),
        (format!("insert into projects (org_id, name, start_date, end_date) values ('{o}', 'dates', '2026-02-01', '2026-01-01')"), "23514", "select count(*) from projects where name = 'dates'"),
        (format!("insert into documents (org_id, name) values ('{o}', 'orphan')"), "23514", "select count(*) from documents where name = 'orphan'"),
        (format!("insert into documents (org_id, project_id, name, file_size) values ('{o}', '{project}', 'neg', -1)"), "23514", "select count(*) from documents where name = 'neg'"),
    ];
    for (sql, code, count) in cases {
        let e = c.execute(&sql, &[]).await.unwrap_err();
        assert_eq!(sqlstate(&e), code, "{sql}: {e:?}");
        let n: i64 = c.query_one(count, &[]).await.unwrap().get(0);
        assert_eq!(n, 0, "partial write after: {sql}");
    }
}

#[tokio::test]
async fn new_users_get_a_personal_org_or_join_their_invitation() {
    let t = TestDb::new().await;
    let c = t.superuser().await;
    let (a, guest, invited) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    c.execute("insert into auth.users (id, email, raw_user_meta_data) values ($1, 'ann@x.test', '{\"full_name\": \"Ann\"}')", &[&a]).await.unwrap();
    c.execute(
        "insert into auth.users (id, is_anonymous) values ($1, true)",
        &[&guest],
    )
    .await
    .unwrap();
    let r = c.query_one("select p.full_name, o.name, tm.role from profiles p join team_members tm on tm.user_id = p.id join organizations o on o.id = tm.org_id where p.id = $1", &[&a]).await.unwrap();
    assert_eq!(
        (
            r.get::<_, Option<String>>(0).as_deref(),
            r.get::<_, String>(1),
            r.get::<_, String>(2)
        ),
        (
            Some("Ann"),
            "Ann's workspace".to_string(),
            "owner".to_string()
        )
    );
    let n: i64 = c
        .query_one(
            "select count(*) from team_members where user_id = $1 and role = 'owner'",
            &[&guest],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "anonymous users get a personal org too");
    let org: Uuid = c
        .query_one("select org_id from team_members where user_id = $1", &[&a])
        .await
        .unwrap()
        .get(0);
    c.execute(
        "insert into auth.users (id, email, raw_app_meta_data, raw_user_meta_data) values ($1, 'inv@x.test', jsonb_build_object('invited_org_id', $2::uuid, 'invited_role', 'consultant'), '{\"invited_org_id\": \"ignored\"}')",
        &[&invited, &org],
    )
    .await
    .unwrap();
    let rows = c
        .query(
            "select org_id, role from team_members where user_id = $1",
            &[&invited],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "invited users get no personal org");
    assert_eq!(
        (rows[0].get::<_, Uuid>(0), rows[0].get::<_, String>(1)),
        (org, "consultant".to_string())
    );
    // A user cannot invite themselves through user metadata (which they control).
    let sneaky = Uuid::new_v4();
    c.execute("insert into auth.users (id, email, raw_user_meta_data) values ($1, 's@x.test', jsonb_build_object('invited_org_id', $2::uuid))", &[&sneaky, &org]).await.unwrap();
    let n: i64 = c
        .query_one(
            "select count(*) from team_members where user_id = $1 and org_id = $2",
            &[&sneaky, &org],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn vault_round_trip_with_the_server_key_only() {
    let t = TestDb::new().await;
    let db = t.db(); // carries the test vault key for service_role transactions
    let mut tx = t.as_role(&db, "service_role").await;
    let id: Uuid = tx
        .query_one(
            "select vault.create_secret('sk-live-123', 'openai', 'provider key')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    tx.execute("select vault.update_secret($1, 'sk-live-456')", &[&id])
        .await
        .unwrap();
    let r = tx
        .query_one(
            "select decrypted_secret, name from vault.decrypted_secrets where id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(
        (r.get::<_, String>(0), r.get::<_, String>(1)),
        ("sk-live-456".to_string(), "openai".to_string())
    );
    tx.commit().await.unwrap();
    let c = t.superuser().await;
    let raw: Vec<u8> = c
        .query_one("select secret from vault.secrets where id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert!(
        !raw.windows(11).any(|w| w == b"sk-live-456"),
        "stored in clear"
    );
    let e = c
        .query_one(
            "select decrypted_secret from vault.decrypted_secrets where id = $1",
            &[&id],
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("vault key") || format!("{e:?}").contains("vault key is not set"),
        "{e:?}"
    );
    let e = c
        .query_one("select set_config('agencyflow.vault_key', 'wrong', false), (select decrypted_secret from vault.decrypted_secrets where id = $1)", &[&id])
        .await;
    assert!(e.is_err(), "decrypted with the wrong key");
    for role in ["anon", "authenticated"] {
        let mut tx = t.as_role(&db, role).await;
        assert!(
            tx.query("select * from vault.decrypted_secrets", &[])
                .await
                .is_err(),
            "{role} read the vault"
        );
    }
}
