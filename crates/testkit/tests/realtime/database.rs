//! The database side of /realtime/v1: broadcasts from SQL (`realtime.send`, the trigger
//! helper `realtime.broadcast_changes`) and who may send them; the capture surviving its
//! leader's death without losing or repeating a change; a slot past its lag limit dropped
//! and recreated.
use std::time::{Duration, Instant};

use agencyflow_testkit::agencyflow_db::tokio_postgres::{self, Client as Pg};
use agencyflow_testkit::TestDb;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::changes::{insert_client, next_change, user_with_org, watch};
use crate::{eventually, metric, Client};

/// Runs `sql` as `user` (role authenticated, their claims) in a transaction of its own.
async fn as_user(su: &Pg, user: Uuid, sql: &str) -> Result<(), tokio_postgres::Error> {
    let claims = json!({"sub": user, "role": "authenticated"}).to_string();
    su.batch_execute("begin").await?;
    let r = async {
        su.execute(
            "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', $1, true)",
            &[&claims],
        )
        .await?;
        su.batch_execute(sql).await
    }
    .await;
    su.batch_execute(if r.is_ok() { "commit" } else { "rollback" })
        .await?;
    r
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

/// The next broadcast on the socket: (event, payload).
async fn next_broadcast(c: &mut Client) -> (String, Value) {
    let (_, _, _, _, p) = c.expect_event("broadcast").await;
    (
        p["event"].as_str().unwrap_or("").to_string(),
        p["payload"].clone(),
    )
}

#[tokio::test]
async fn send_from_sql_reaches_subscribers_and_a_private_send_needs_the_insert_policy() {
    let db = TestDb::new().await;
    let app = db.spawn_app().await;
    let (alice, _) = user_with_org(&db, "alice-send@rt.test").await;
    let (bob, _) = user_with_org(&db, "bob-send@rt.test").await;
    let su = db.superuser().await;
    su.batch_execute(&format!(
        "create policy ops_read on realtime.messages for select to authenticated
           using (realtime.topic() = 'ops-room' and (select auth.uid()) = '{alice}');
         create policy ops_write on realtime.messages for insert to authenticated
           with check (realtime.topic() = 'ops-room' and (select auth.uid()) = '{alice}');"
    ))
    .await
    .unwrap();
    let mut lobby = Client::connect(&app, "1.0.0").await;
    let (_, r) = lobby.join("lobby", json!({}), None).await;
    assert_eq!(r["status"], "ok", "{r}");
    let mut ops = Client::connect(&app, "2.0.0").await;
    let (_, r) = ops
        .join(
            "ops-room",
            json!({"private": true}),
            Some(&app.user_token(alice)),
        )
        .await;
    assert_eq!(r["status"], "ok", "{r}");

    // A public send, from the service side and from a user.
    su.batch_execute("select realtime.send('{\"n\": 1}', 'hello', 'lobby', false)")
        .await
        .unwrap();
    assert_eq!(
        next_broadcast(&mut lobby).await,
        ("hello".into(), json!({"n": 1}))
    );
    as_user(
        &su,
        bob,
        "select realtime.send('{\"n\": 2}', 'hello', 'lobby', false)",
    )
    .await
    .unwrap();
    assert_eq!(
        next_broadcast(&mut lobby).await,
        ("hello".into(), json!({"n": 2}))
    );

    // Private: Bob has no INSERT policy for the topic; Alice has.
    let e = as_user(
        &su,
        bob,
        "select realtime.send('{\"forged\": true}', 'note', 'ops-room', true)",
    )
    .await
    .expect_err("Bob may not send to ops-room");
    assert_eq!(sqlstate(&e), "42501", "{e}");
    // Nor around realtime.send: publishing a message he did not insert, or the trigger helper.
    let e = as_user(
        &su,
        bob,
        &format!("select realtime.publish_message('{}')", Uuid::new_v4()),
    )
    .await
    .expect_err("no such message");
    assert_eq!(sqlstate(&e), "42501", "{e}");
    let e = as_user(
        &su,
        bob,
        "select realtime.broadcast_changes('ops-room', 'INSERT', 'INSERT', 'clients', 'public', null::public.clients, null::public.clients)",
    )
    .await
    .expect_err("the trigger helper is not for users");
    assert_eq!(sqlstate(&e), "42501", "{e}");
    let e = as_user(
        &su,
        bob,
        "select realtime.publish('{}', 'note', 'ops-room', true)",
    )
    .await
    .expect_err("the NOTIFY itself is the owner's");
    assert_eq!(sqlstate(&e), "42501", "{e}");

    as_user(
        &su,
        alice,
        "select realtime.send('{\"n\": 3}', 'note', 'ops-room', true)",
    )
    .await
    .unwrap();
    // The first broadcast Alice's private channel gets is her own: nothing of Bob's.
    assert_eq!(
        next_broadcast(&mut ops).await,
        ("note".into(), json!({"n": 3}))
    );
    // Sends leave no rows behind.
    let left: i64 = su
        .query_one("select count(*) from realtime.messages", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[tokio::test]
async fn broadcast_changes_from_a_security_definer_trigger_reaches_the_private_channel() {
    let db = TestDb::new().await;
    let app = db.spawn_app().await;
    let (alice, org_a) = user_with_org(&db, "alice-bc@rt.test").await;
    let su = db.superuser().await;
    let topic = format!("board:{org_a}");
    su.batch_execute(&format!(
        "create function public.clients_board() returns trigger
           language plpgsql security definer set search_path = '' as $$
         begin
           perform realtime.broadcast_changes('board:' || coalesce(new.org_id, old.org_id)::text,
             tg_op, tg_op, tg_table_name, tg_table_schema, new, old);
           return null;
         end $$;
         create trigger clients_board after insert or update or delete on public.clients
           for each row execute function public.clients_board();
         create policy board_read on realtime.messages for select to authenticated
           using (realtime.topic() = '{topic}' and (select auth.uid()) = '{alice}');"
    ))
    .await
    .unwrap();
    let token = app.user_token(alice);
    let mut c = Client::connect(&app, "1.0.0").await;
    let (_, r) = c.join(&topic, json!({"private": true}), Some(&token)).await;
    assert_eq!(r["status"], "ok", "{r}");
    // Alice inserts through /rest/v1: the trigger runs in her transaction.
    let resp = app
        .http
        .post(app.url("/rest/v1/clients"))
        .header("apikey", &app.anon_key)
        .header("authorization", format!("Bearer {token}"))
        .json(&json!({"org_id": org_a, "name": "Via trigger"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let (event, p) = next_broadcast(&mut c).await;
    assert_eq!(event, "INSERT");
    assert_eq!(p["operation"], "INSERT");
    assert_eq!(p["table"], "clients");
    assert_eq!(p["schema"], "public");
    assert_eq!(p["record"]["name"], "Via trigger");
    assert_eq!(p["old_record"], Value::Null);
}

/// Kills the capture leader's session (the holder of realtime's advisory lock); returns
/// whether one was killed.
async fn kill_leader(su: &Pg) -> bool {
    su.query_one(
        "select count(pg_terminate_backend(l.pid)) from pg_locks l
          where l.locktype = 'advisory' and l.granted and l.objsubid = 1
            and l.classid::int8 = $1 and l.objid::int8 = $2
            and l.database = (select oid from pg_database where datname = current_database())",
        &[&LOCK_HI, &LOCK_LO],
    )
    .await
    .unwrap()
    .get::<_, i64>(0)
        > 0
}

/// realtime's leader lock (crates/realtime/src/changes.rs `LEADER_LOCK`), as pg_locks
/// shows a bigint key: high and low 32 bits.
const LEADER_LOCK: i64 = 0x6167_666c_7274_0001;
const LOCK_HI: i64 = LEADER_LOCK >> 32;
const LOCK_LO: i64 = LEADER_LOCK & 0xffff_ffff;

#[tokio::test]
async fn the_capture_survives_its_leader_being_killed_without_losing_or_repeating_a_change() {
    let db = TestDb::new().await;
    let one = db.spawn_app().await;
    let two = db.spawn_app().await;
    let (alice, org_a) = user_with_org(&db, "alice-kill@rt.test").await;
    let mut a = Client::connect(&one, "2.0.0").await;
    let mut b = Client::connect(&two, "1.0.0").await;
    watch(
        &mut a,
        "k",
        json!({"event": "INSERT"}),
        &one.user_token(alice),
    )
    .await;
    watch(
        &mut b,
        "k",
        json!({"event": "INSERT"}),
        &two.user_token(alice),
    )
    .await;
    let su = db.superuser().await;
    let mut names = Vec::new();
    let mut kills = 0;
    for round in 0..3 {
        for i in 0..6 {
            let name = format!("r{round}-{i}");
            insert_client(&su, org_a, &name).await;
            names.push(name);
            if i == 2 {
                // Mid-stream: some of this round's changes may be read but not yet delivered.
                let deadline = Instant::now() + Duration::from_secs(20);
                while !kill_leader(&su).await {
                    assert!(Instant::now() < deadline, "no capture leader to kill");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                kills += 1;
            }
        }
    }
    assert_eq!(kills, 3);
    insert_client(&su, org_a, "marker").await;
    names.push("marker".into());
    for c in [&mut a, &mut b] {
        let mut got = Vec::new();
        while got.last().map(String::as_str) != Some("marker") {
            let v = next_change(c).await;
            got.push(v["data"]["record"]["name"].as_str().unwrap().to_string());
        }
        assert_eq!(got, names, "every change once, in commit order");
    }
}

#[tokio::test]
async fn a_slot_past_its_lag_limit_is_dropped_and_recreated() {
    let db = TestDb::new().await;
    let app = db
        .spawn_app_with(&["--realtime-max-slot-lag-mb", "1"])
        .await;
    let (alice, org_a) = user_with_org(&db, "alice-lag@rt.test").await;
    let mut c = Client::connect(&app, "2.0.0").await;
    watch(
        &mut c,
        "lag",
        json!({"event": "INSERT"}),
        &app.user_token(alice),
    )
    .await;
    let su = db.superuser().await;
    insert_client(&su, org_a, "before").await;
    assert_eq!(
        next_change(&mut c).await["data"]["record"]["name"],
        "before"
    );
    assert_eq!(metric(&app, "slot_resets_total").await, 0.0);

    // Nobody reads the slot: the test takes the leader lock (queued behind the leader, it is
    // granted the moment the leader's session ends), then writes 4 MB of WAL elsewhere.
    let holder = db.superuser().await;
    let waiting = tokio::spawn(async move {
        holder
            .execute("select pg_advisory_lock($1)", &[&LEADER_LOCK])
            .await
            .unwrap();
        holder
    });
    eventually("the lock request to queue", || async {
        su.query_one(
            "select count(*) from pg_locks where locktype = 'advisory' and not granted
               and classid::int8 = $1 and objid::int8 = $2",
            &[&LOCK_HI, &LOCK_LO],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
            == 1
    })
    .await;
    assert!(kill_leader(&su).await);
    let holder = waiting.await.unwrap();
    su.batch_execute(
        "create table public.lag_filler as select g, repeat('x', 200) as pad from generate_series(1, 20000) g",
    )
    .await
    .unwrap();
    let lag: i64 = su
        .query_one("select realtime.slot_lag()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(lag > 1024 * 1024, "{lag}");
    holder
        .execute("select pg_advisory_unlock($1)", &[&LEADER_LOCK])
        .await
        .unwrap();

    // The next leader finds the slot past the limit, drops and recreates it, and carries on.
    eventually("the slot to be reset", || async {
        metric(&app, "slot_resets_total").await == 1.0
    })
    .await;
    // The new slot (the counter moves just before the old one is dropped).
    eventually("a new slot within the limit", || async {
        let lag: Option<i64> = su
            .query_one("select realtime.slot_lag()", &[])
            .await
            .unwrap()
            .get(0);
        lag.is_some_and(|l| l < 1024 * 1024)
    })
    .await;
    insert_client(&su, org_a, "after").await;
    assert_eq!(next_change(&mut c).await["data"]["record"]["name"], "after");
}

#[tokio::test]
async fn without_logical_wal_a_subscription_is_told_why() {
    // A database of one's own (DATABASE_URL) on a cluster with wal_level = replica: the
    // join succeeds, and the system message says why changes cannot be delivered.
    use agencyflow_testkit::agencyflow_db::{self, migrate, ClusterOptions, EmbeddedCluster};
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    let cluster = tokio::task::spawn_blocking(move || {
        EmbeddedCluster::start(&ClusterOptions {
            data_dir,
            bin_dir: None,
            port: None,
            ephemeral: true,
            settings: vec![("wal_level".into(), "replica".into())],
        })
    })
    .await
    .unwrap()
    .expect("a cluster with wal_level = replica");
    let admin = agencyflow_db::connect_one(&cluster.url("postgres", "postgres"))
        .await
        .unwrap();
    admin.batch_execute("create database app").await.unwrap();
    let mut owner = agencyflow_db::connect_one(&cluster.url("postgres", "app"))
        .await
        .unwrap();
    migrate::apply(&mut owner, &migrate::embedded(), |_| {})
        .await
        .unwrap();
    let app = agencyflow_testkit::spawn_app_at(&cluster.url("authenticator", "app"), &[]).await;
    let mut c = Client::connect(&app, "2.0.0").await;
    let (_, reply) = c
        .join(
            "no-wal",
            json!({"postgres_changes": [{"event": "*", "schema": "public", "table": "clients"}]}),
            Some(&app.service_role_key),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let (_, _, _, _, sys) = c.expect_event("system").await;
    assert_eq!(sys["status"], "error", "{sys}");
    assert_eq!(sys["extension"], "postgres_changes");
    let message = sys["message"].as_str().unwrap();
    assert!(
        message.contains("wal_level is replica") && message.contains("wal_level = logical"),
        "{message}"
    );
    // And nothing was left in PostgreSQL: no slot.
    let slots: i64 = owner
        .query_one("select count(*) from pg_replication_slots", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(slots, 0);
}

/// The capture leader streams the slot over a replication connection (as
/// `supabase_replication_admin`), and confirms it past WAL of tables nobody watches, so the
/// slot holds nothing back while the published tables are quiet.
#[tokio::test]
async fn changes_are_streamed_over_a_replication_connection_that_keeps_the_slot_current() {
    let db = TestDb::new().await;
    let app = db.spawn_app().await;
    let (alice, org_a) = user_with_org(&db, "alice-stream@rt.test").await;
    let mut c = Client::connect(&app, "1.0.0").await;
    watch(
        &mut c,
        "stream",
        json!({"event": "INSERT", "schema": "public", "table": "clients"}),
        &app.user_token(alice),
    )
    .await;
    let su = db.superuser().await;
    insert_client(&su, org_a, "streamed").await;
    assert_eq!(
        next_change(&mut c).await["data"]["record"]["name"],
        "streamed"
    );
    assert!(metric(&app, "capture_streams_total").await >= 1.0);
    let walsenders: i64 = su
        .query_one(
            "select count(*) from pg_replication_slots s join pg_stat_replication r on r.pid = s.active_pid
              where s.slot_name = realtime.slot_name()
                and r.usename = 'supabase_replication_admin' and r.application_name = 'agencyflow realtime'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(walsenders, 1);
    // ~4 MB of WAL on a table outside the publication: the slot is confirmed past it.
    su.batch_execute(
        "create table public.quiet_filler as select g, repeat('x', 200) as pad from generate_series(1, 20000) g",
    )
    .await
    .unwrap();
    let written: String = su
        .query_one("select pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    eventually("the slot to be confirmed past the unrelated WAL", || {
        let su = &su;
        let written = written.clone();
        async move {
            su.query_one(
                "select confirmed_flush_lsn >= $1::text::pg_lsn from pg_replication_slots
                  where slot_name = realtime.slot_name()",
                &[&written],
            )
            .await
            .unwrap()
            .get::<_, bool>(0)
        }
    })
    .await;
    // And the stream still delivers after that.
    insert_client(&su, org_a, "after quiet").await;
    assert_eq!(
        next_change(&mut c).await["data"]["record"]["name"],
        "after quiet"
    );
}

/// Without a replication login (here: one naming a role that may not replicate), the
/// leader says so and polls the slot through SQL: changes still arrive, nothing is streamed.
#[tokio::test]
async fn without_a_replication_login_the_slot_is_polled_through_sql() {
    let db = TestDb::new().await;
    let url = db.api_url();
    let app = db
        .spawn_app_with(&["--realtime-replication-url", &url])
        .await;
    let (alice, org_a) = user_with_org(&db, "alice-poll@rt.test").await;
    let mut c = Client::connect(&app, "2.0.0").await;
    watch(
        &mut c,
        "poll",
        json!({"event": "*", "schema": "public", "table": "clients"}),
        &app.user_token(alice),
    )
    .await;
    let su = db.superuser().await;
    for name in ["polled one", "polled two"] {
        insert_client(&su, org_a, name).await;
        assert_eq!(next_change(&mut c).await["data"]["record"]["name"], name);
    }
    assert_eq!(metric(&app, "capture_streams_total").await, 0.0);
    assert!(metric(&app, "changes_captured_total").await >= 2.0);
}

/// `realtime.check_groups` prepares each distinct check once per session and executes it per
/// group (planning the policies was most of a check's cost); a session keeps at most 64 of
/// them, and the answers stay right across the cap.
#[tokio::test]
async fn check_groups_prepares_each_check_once_and_caps_the_statements() {
    let db = TestDb::new().await;
    let (api, conn) = tokio_postgres::connect(&db.api_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let check = |i: usize| {
        format!(
            "select r._af_pos from pg_catalog.jsonb_array_elements($1::text::jsonb) with ordinality as r(_af_row, _af_pos)
              where {i} >= 0 and (r._af_row->>'v')::int > 0 order by 1"
        )
    };
    let run = |sql: String| {
        let api = &api;
        async move {
            api.query(
                "select item, pos from realtime.check_groups($1, $2, $3, $4)",
                &[
                    &vec!["authenticated", "authenticated"],
                    &vec!["{\"sub\":\"a\"}", "{\"sub\":\"b\"}"],
                    &vec![sql.clone(), sql],
                    &vec!["[{\"v\":1},{\"v\":0},{\"v\":2}]", "[{\"v\":0}]"],
                ],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, i32>(0), r.get::<_, i64>(1)))
            .collect::<Vec<_>>()
        }
    };
    assert_eq!(run(check(0)).await, vec![(1, 1), (1, 3)]);
    assert_eq!(run(check(0)).await, vec![(1, 1), (1, 3)]);
    // Two groups per call, two calls: one statement, planned once, executed four times.
    let (count, executions): (i64, i64) = {
        let r = api
            .query_one(
                "select count(*), coalesce(sum(generic_plans + custom_plans), 0)::int8
                   from pg_prepared_statements where name like 'af\\_rt\\_check\\_%'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((count, executions), (1, 4));
    for i in 1..80 {
        assert_eq!(run(check(i)).await, vec![(1, 1), (1, 3)], "check {i}");
    }
    let count: i64 = api
        .query_one(
            "select count(*) from pg_prepared_statements where name like 'af\\_rt\\_check\\_%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!((1..=64).contains(&count), "{count} statements kept");
    // A statement planted under a check's name by other SQL on the session (answering "row 1
    // is visible" whatever the rows) is replaced, not trusted.
    let sql = check(500);
    let name: String = api
        .query_one("select 'af_rt_check_' || md5($1)", &[&sql])
        .await
        .unwrap()
        .get(0);
    api.batch_execute(&format!("prepare {name}(text) as select 1::bigint"))
        .await
        .unwrap();
    let rows = api
        .query(
            "select item, pos from realtime.check_groups($1, $2, $3, $4)",
            &[
                &vec!["authenticated"],
                &vec!["{}"],
                &vec![sql],
                &vec!["[{\"v\":0}]"],
            ],
        )
        .await
        .unwrap();
    assert!(rows.is_empty(), "the planted statement answered");
}

/// A table added to the publication while the slot is streamed: the leader restarts the
/// stream with the new table list (the decoding plugin filters by it) within seconds, and the
/// table's changes arrive.
#[tokio::test]
async fn a_table_added_to_the_publication_is_streamed_after_the_leader_notices() {
    let db = TestDb::new().await;
    let app = db.spawn_app().await;
    let (alice, org_a) = user_with_org(&db, "alice-pub@rt.test").await;
    let su = db.superuser().await;
    su.batch_execute(
        "create table public.rt_extra (id bigint generated always as identity primary key, note text);
         grant select on public.rt_extra to authenticated;",
    )
    .await
    .unwrap();
    let token = app.user_token(alice);
    let mut c = Client::connect(&app, "1.0.0").await;
    watch(&mut c, "pub-clients", json!({"event": "INSERT"}), &token).await;
    let (_, reply) = c
        .join(
            "pub-extra",
            json!({"postgres_changes": [{"event": "INSERT", "schema": "public", "table": "rt_extra"}]}),
            Some(&token),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    insert_client(&su, org_a, "streaming").await;
    assert_eq!(
        next_change(&mut c).await["data"]["record"]["name"],
        "streaming"
    );
    let streams = metric(&app, "capture_streams_total").await;
    assert!(streams >= 1.0);
    su.batch_execute("alter publication supabase_realtime add table public.rt_extra")
        .await
        .unwrap();
    eventually("the stream to restart with the new table", || {
        let app = &app;
        async move { metric(app, "capture_streams_total").await > streams }
    })
    .await;
    su.batch_execute("insert into public.rt_extra (note) values ('published now')")
        .await
        .unwrap();
    let got = next_change(&mut c).await;
    assert_eq!(got["data"]["table"], "rt_extra", "{got}");
    assert_eq!(got["data"]["record"]["note"], "published now");
}
