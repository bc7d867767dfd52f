//! postgres_changes: capture from the slot, RLS per (role, claims) group, filters, DELETEs
//! with the primary key only, capture once with two processes.
use agencyflow_testkit::TestDb;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{metric, Client};

/// A user with their personal organisation (created by the signup trigger).
pub(crate) async fn user_with_org(db: &TestDb, email: &str) -> (Uuid, Uuid) {
    let su = db.superuser().await;
    let user = Uuid::new_v4();
    su.execute(
        "insert into auth.users (id, email) values ($1, $2)",
        &[&user, &email],
    )
    .await
    .unwrap();
    let org: Uuid = su
        .query_one(
            "select org_id from team_members where user_id = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    (user, org)
}

/// Joins a channel watching `clients` with `spec` overrides as `token`; waits for
/// "Subscribed to PostgreSQL". Returns the binding id.
pub(crate) async fn watch(c: &mut Client, name: &str, spec: Value, token: &str) -> u64 {
    let mut binding = json!({"event": "*", "schema": "public", "table": "clients"});
    for (k, v) in spec.as_object().unwrap() {
        binding[k] = v.clone();
    }
    let (_, reply) = c
        .join(
            name,
            json!({"postgres_changes": [binding.clone()]}),
            Some(token),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let got = &reply["response"]["postgres_changes"][0];
    assert_eq!(got["event"], binding["event"]);
    assert_eq!(got["table"], binding["table"]);
    assert_eq!(got["filter"], binding["filter"]);
    let (_, _, _, _, sys) = c.expect_event("system").await;
    assert_eq!(sys["status"], "ok", "{sys}");
    assert_eq!(sys["message"], "Subscribed to PostgreSQL");
    assert_eq!(sys["extension"], "postgres_changes");
    got["id"].as_u64().expect("integer id")
}

pub(crate) async fn next_change(c: &mut Client) -> Value {
    let (_, _, _, _, p) = c.expect_event("postgres_changes").await;
    p
}

/// A marker change everyone may see the end of: a client in `org` named `marker`.
pub(crate) async fn insert_client(
    su: &agencyflow_testkit::agencyflow_db::tokio_postgres::Client,
    org: Uuid,
    name: &str,
) -> Uuid {
    su.query_one(
        "insert into clients (org_id, name, status) values ($1, $2, 'lead') returning id",
        &[&org, &name],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn members_see_their_orgs_changes_only_with_delete_carrying_the_key() {
    let db = TestDb::new().await;
    let app = db.spawn_app().await;
    let (alice, org_a) = user_with_org(&db, "alice@rt.test").await;
    let (_bob, org_b) = user_with_org(&db, "bob@rt.test").await;
    let mut c = Client::connect(&app, "2.0.0").await;
    let id = watch(&mut c, "crm", json!({}), &app.user_token(alice)).await;
    let su = db.superuser().await;

    // Bob's org first: none of it may reach Alice.
    let b1 = insert_client(&su, org_b, "Bob Corp").await;
    su.execute(
        "update clients set name = 'Bob Corp 2' where id = $1",
        &[&b1],
    )
    .await
    .unwrap();
    su.execute("delete from clients where id = $1", &[&b1])
        .await
        .unwrap();
    // Alice's org.
    let a1 = insert_client(&su, org_a, "Acme").await;
    su.execute("update clients set name = 'Acme 2' where id = $1", &[&a1])
        .await
        .unwrap();
    su.execute("delete from clients where id = $1", &[&a1])
        .await
        .unwrap();

    let ins = next_change(&mut c).await;
    assert_eq!(ins["ids"], json!([id]));
    let d = &ins["data"];
    assert_eq!(
        (
            d["schema"].as_str(),
            d["table"].as_str(),
            d["type"].as_str()
        ),
        (Some("public"), Some("clients"), Some("INSERT"))
    );
    assert_eq!(
        d["record"]["id"],
        json!(a1),
        "Bob's changes must not arrive: {d}"
    );
    assert_eq!(d["record"]["name"], "Acme");
    assert_eq!(d["errors"], Value::Null);
    assert!(d["commit_timestamp"].as_str().unwrap().ends_with('Z'));
    let types: Vec<(String, String)> = d["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().into(),
                c["type"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(types.contains(&("id".into(), "uuid".into())), "{types:?}");
    assert!(
        types.contains(&("created_at".into(), "timestamptz".into())),
        "{types:?}"
    );

    let upd = next_change(&mut c).await;
    assert_eq!(upd["data"]["type"], "UPDATE");
    assert_eq!(upd["data"]["record"]["name"], "Acme 2");
    assert_eq!(upd["data"]["old_record"]["name"], "Acme");

    let del = next_change(&mut c).await;
    assert_eq!(del["data"]["type"], "DELETE");
    // Under RLS a deleted row is only its primary key.
    assert_eq!(del["data"]["old_record"], json!({"id": a1}));
    assert!(del["data"].get("record").is_none());
    // Two (role, claims) groups, three changes: at most one check per group and change
    // (fewer when changes arrive together and are judged in one query).
    let checks = metric(&app, "authorization_queries_total").await;
    assert!((1.0..=6.0).contains(&checks), "{checks}");
}

#[tokio::test]
async fn filters_events_roles_and_token_refresh() {
    let db = TestDb::new().await;
    let app = db.spawn_app().await;
    let (alice, org_a) = user_with_org(&db, "alice2@rt.test").await;
    let (bob, org_b) = user_with_org(&db, "bob2@rt.test").await;
    let su = db.superuser().await;

    let mut filtered = Client::connect(&app, "1.0.0").await;
    let fid = watch(
        &mut filtered,
        "f",
        json!({"event": "INSERT", "filter": "name=in.(Wanted,Other)"}),
        &app.user_token(alice),
    )
    .await;
    let mut anon = Client::connect(&app, "2.0.0").await;
    watch(&mut anon, "a", json!({}), &app.anon_key).await;
    let mut service = Client::connect(&app, "2.0.0").await;
    watch(
        &mut service,
        "s",
        json!({"event": "INSERT"}),
        &app.service_role_key,
    )
    .await;
    let mut switcher = Client::connect(&app, "2.0.0").await;
    watch(
        &mut switcher,
        "w",
        json!({"event": "INSERT"}),
        &app.user_token(alice),
    )
    .await;

    insert_client(&su, org_a, "Unwanted").await;
    let wanted = insert_client(&su, org_a, "Wanted").await;
    su.execute(
        "update clients set status = 'client' where id = $1",
        &[&wanted],
    )
    .await
    .unwrap();
    let p = next_change(&mut filtered).await;
    assert_eq!(p["ids"], json!([fid]));
    assert_eq!(p["data"]["record"]["name"], "Wanted");

    // service_role (bypasses RLS) sees both inserts.
    assert_eq!(
        next_change(&mut service).await["data"]["record"]["name"],
        "Unwanted"
    );
    assert_eq!(
        next_change(&mut service).await["data"]["record"]["name"],
        "Wanted"
    );

    // The switcher moves to Bob's token: Alice's org stops, Bob's arrives.
    assert_eq!(
        next_change(&mut switcher).await["data"]["record"]["name"],
        "Unwanted"
    );
    assert_eq!(
        next_change(&mut switcher).await["data"]["record"]["name"],
        "Wanted"
    );
    switcher
        .push(
            None,
            "realtime:w",
            "access_token",
            json!({"access_token": app.user_token(bob)}),
        )
        .await;
    // The heartbeat's reply proves the refresh was handled (messages are handled in order).
    let hb = switcher.push(None, "phoenix", "heartbeat", json!({})).await;
    switcher.reply(&hb).await;
    insert_client(&su, org_a, "Alice After").await;
    insert_client(&su, org_b, "Bob After").await;
    assert_eq!(
        next_change(&mut switcher).await["data"]["record"]["name"],
        "Bob After"
    );

    // anon has no policy on clients: nothing arrived. A broadcast proves the socket is live
    // and that nothing was queued before it.
    let hb = anon.push(None, "phoenix", "heartbeat", json!({})).await;
    let m = anon.recv().await.unwrap();
    assert_eq!(
        (m.1, m.3.as_str()),
        (json!(hb), "phx_reply"),
        "anon must see no change"
    );
}

#[tokio::test]
async fn two_processes_capture_once_and_both_deliver() {
    let db = TestDb::new().await;
    let one = db.spawn_app().await;
    let two = db.spawn_app().await;
    let (alice, org_a) = user_with_org(&db, "alice3@rt.test").await;
    let mut a = Client::connect(&one, "2.0.0").await;
    let mut b = Client::connect(&two, "2.0.0").await;
    watch(
        &mut a,
        "x",
        json!({"event": "INSERT"}),
        &one.user_token(alice),
    )
    .await;
    watch(
        &mut b,
        "x",
        json!({"event": "INSERT"}),
        &two.user_token(alice),
    )
    .await;
    let su = db.superuser().await;
    for i in 0..5 {
        insert_client(&su, org_a, &format!("c{i}")).await;
    }
    for c in [&mut a, &mut b] {
        for i in 0..5 {
            assert_eq!(
                next_change(c).await["data"]["record"]["name"],
                format!("c{i}")
            );
        }
    }
    let total =
        metric(&one, "changes_captured_total").await + metric(&two, "changes_captured_total").await;
    assert_eq!(total, 5.0, "each change is captured by one process only");
}

/// A roadmap phase in `org` (client → project → snapshot → roadmap → phase), `n` of them.
async fn phases(
    su: &agencyflow_testkit::agencyflow_db::tokio_postgres::Client,
    org: Uuid,
    n: usize,
) -> Vec<Uuid> {
    let row = su
        .query_one(
            "with c as (insert into clients (org_id, name) values ($1, 'Client') returning id),
                  p as (insert into projects (org_id, client_id, name) select $1, c.id, 'Project' from c returning id),
                  s as (insert into context_snapshots (org_id, project_id) select $1, p.id from p returning id)
             insert into roadmaps (org_id, snapshot_id) select $1, s.id from s returning id",
            &[&org],
        )
        .await
        .unwrap();
    let roadmap: Uuid = row.get(0);
    let mut out = Vec::new();
    for i in 0..n {
        let id: Uuid = su
            .query_one(
                "insert into roadmap_phases (org_id, roadmap_id, title, order_index) values ($1, $2, $3, $4) returning id",
                &[&org, &roadmap, &format!("Phase {i}"), &(i as i32)],
            )
            .await
            .unwrap()
            .get(0);
        out.push(id);
    }
    out
}

#[tokio::test]
async fn e2e_supabase_js() {
    let db = TestDb::new().await;
    let app = db.spawn_app().await;
    let (alice, org_a) = user_with_org(&db, "alice-e2e@rt.test").await;
    let (bob, org_b) = user_with_org(&db, "bob-e2e@rt.test").await;
    let su = db.superuser().await;
    let pa = phases(&su, org_a, 2).await;
    let pb = phases(&su, org_b, 1).await;
    // The private channel `team-room` is Alice's only (read and write).
    su.batch_execute(&format!(
        "create policy team_room_read on realtime.messages for select to authenticated
           using (realtime.topic() = 'team-room' and (select auth.uid()) = '{alice}');
         create policy team_room_write on realtime.messages for insert to authenticated
           with check (realtime.topic() = 'team-room' and (select auth.uid()) = '{alice}');"
    ))
    .await
    .unwrap();
    let (ta, tb) = (app.user_token(alice), app.user_token(bob));
    let (oa, ob) = (org_a.to_string(), org_b.to_string());
    let (p0, p1, p2) = (pa[0].to_string(), pa[1].to_string(), pb[0].to_string());
    app.run_node_test_with_env(
        "realtime.test.js",
        &[
            ("RT_ALICE_TOKEN", &ta),
            ("RT_BOB_TOKEN", &tb),
            ("RT_ORG_A", &oa),
            ("RT_ORG_B", &ob),
            ("RT_PHASE_A", &p0),
            ("RT_PHASE_A2", &p1),
            ("RT_PHASE_B", &p2),
        ],
    )
    .await;
}

#[tokio::test]
async fn tasks_inserted_through_rest_reach_members() {
    let db = TestDb::new().await;
    let app = db.spawn_app().await;
    let (alice, org_a) = user_with_org(&db, "alice4@rt.test").await;
    let su = db.superuser().await;
    let pa = phases(&su, org_a, 1).await;
    let mut c = Client::connect(&app, "2.0.0").await;
    watch(
        &mut c,
        "t",
        json!({"table": "tasks"}),
        &app.user_token(alice),
    )
    .await;
    su.execute(
        "insert into tasks (org_id, phase_id, title) values ($1, $2, 'by sql')",
        &[&org_a, &pa[0]],
    )
    .await
    .unwrap();
    assert_eq!(
        next_change(&mut c).await["data"]["record"]["title"],
        "by sql"
    );
    let resp = app
        .http
        .post(app.url("/rest/v1/tasks"))
        .header("apikey", &app.service_role_key)
        .header("authorization", format!("Bearer {}", app.service_role_key))
        .json(&json!({"org_id": org_a, "phase_id": pa[0], "title": "by rest"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    assert_eq!(
        next_change(&mut c).await["data"]["record"]["title"],
        "by rest"
    );
}

/// A batch judged by more groups than one connection takes (40 members of 40 orgs, every
/// socket watching all INSERTs) is split over connections; each member still gets exactly
/// their org's rows, batch after batch.
#[tokio::test]
async fn a_batch_split_over_connections_still_delivers_each_org_its_own_rows_only() {
    let db = TestDb::new().await;
    let app = db.spawn_app().await;
    let mut members = Vec::new();
    for i in 0..40 {
        members.push(user_with_org(&db, &format!("split-{i}@rt.test")).await);
    }
    let mut sockets = Vec::new();
    for (i, (user, _)) in members.iter().enumerate() {
        let mut c = Client::connect(&app, "1.0.0").await;
        watch(
            &mut c,
            &format!("split-{i}"),
            json!({"event": "INSERT"}),
            &app.user_token(*user),
        )
        .await;
        sockets.push(c);
    }
    let su = db.superuser().await;
    let before = metric(&app, "authorization_queries_total").await;
    for round in 0..2 {
        // One transaction: the whole round is one batch of 40 groups.
        let orgs: Vec<Uuid> = members.iter().map(|(_, o)| *o).collect();
        su.execute(
            "insert into clients (org_id, name, status)
             select o, 'split ' || $2::int || ' ' || o, 'lead' from unnest($1::uuid[]) o",
            &[&orgs, &round],
        )
        .await
        .unwrap();
        for (c, (_, org)) in sockets.iter_mut().zip(&members) {
            let got = next_change(c).await;
            assert_eq!(
                got["data"]["record"]["name"],
                format!("split {round} {org}"),
                "{got}"
            );
        }
    }
    // 40 groups judged 80 rows: far fewer checks than rows × groups (3,200).
    let checks = metric(&app, "authorization_queries_total").await - before;
    assert!(checks <= 200.0, "{checks} checks");
}
