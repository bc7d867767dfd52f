//! Tenant isolation, driven from a table of expectations (docs/schema.md §6): for every tenant
//! table and select / insert / update / delete, each in-org role gets exactly its rights; a
//! member of org A sees and changes nothing of org B, cannot move a row to org B, and cannot
//! point A's rows at B's rows; anon sees only the active catalogue; service_role sees all.
use std::collections::HashMap;

use agencyflow_testkit::agencyflow_db::tokio_postgres::Client;
use agencyflow_testkit::agencyflow_db::Db;
use agencyflow_testkit::TestDb;
use uuid::Uuid;

pub(crate) const ROLES: [&str; 5] = ["owner", "admin", "consultant", "member", "client"];

/// Two agencies with one user per role each (joined through the invitation path of
/// handle_new_user), an outsider with only a personal org, and exactly one row per org in
/// every tenant table (two triggers add brief_versions and activities rows).
pub(crate) struct Fixture {
    pub org_a: Uuid,
    pub org_b: Uuid,
    pub users: HashMap<(char, &'static str), Uuid>,
    pub outsider: Uuid,
}

impl Fixture {
    pub fn user(&self, org: char, role: &str) -> Uuid {
        *self
            .users
            .iter()
            .find(|((o, r), _)| *o == org && *r == role)
            .map(|(_, u)| u)
            .unwrap()
    }
}

fn org_sql(label: char, org: Uuid, users: &HashMap<(char, &'static str), Uuid>) -> String {
    let u = |r: &str| users[&(label, ROLES.iter().copied().find(|x| *x == r).unwrap())];
    let mut s = format!(
        "insert into organizations (id, name, slug) values ('{org}', 'Org {label}', 'org-{l}');\n",
        l = label.to_ascii_lowercase()
    );
    for r in ROLES {
        s += &format!(
            "insert into auth.users (id, email, raw_app_meta_data) values ('{id}', '{r}@{l}.test', jsonb_build_object('invited_org_id', '{org}', 'invited_role', '{r}'));\n",
            id = u(r),
            l = label.to_ascii_lowercase()
        );
    }
    let owner = u("owner");
    let client_user = u("client");
    s += &format!(
        r#"
insert into clients (org_id, name, status, industry, assigned_to) values ('{org}', 'Client {label}', 'prospect', 'SaaS', '{owner}');
insert into projects (org_id, client_id, name) select '{org}', id, 'Project {label}' from clients where org_id = '{org}';
insert into wizard_sessions (org_id, project_id, user_id) select '{org}', id, '{client_user}' from projects where org_id = '{org}';
insert into wizard_answers (org_id, session_id, screen_id, step_number, data) select '{org}', id, 'step-1', 1, '{{"a": 1}}' from wizard_sessions where org_id = '{org}';
insert into context_snapshots (org_id, project_id, version, is_active, summary) select '{org}', id, 1, true, 'ctx' from projects where org_id = '{org}';
insert into roadmaps (org_id, snapshot_id, total_duration) select '{org}', id, '3 months' from context_snapshots where org_id = '{org}';
insert into roadmap_phases (org_id, roadmap_id, title, order_index) select '{org}', id, 'Phase 1', 0 from roadmaps where org_id = '{org}';
insert into tasks (org_id, phase_id, title, assigned_to) select '{org}', id, 'Task {label}', '{owner}' from roadmap_phases where org_id = '{org}';
insert into milestones (org_id, project_id, phase_id, title) select '{org}', p.id, ph.id, 'M' from projects p, roadmap_phases ph where p.org_id = '{org}' and ph.org_id = '{org}';
insert into deliverables (org_id, phase_id, title, assigned_to) select '{org}', id, 'D', '{owner}' from roadmap_phases where org_id = '{org}';
insert into briefs (org_id, project_id, title, content) select '{org}', id, 'Brief', '{{"goal": "x"}}' from projects where org_id = '{org}';
insert into documents (org_id, project_id, wizard_session_id, name, content_text, uploaded_by)
  select '{org}', p.id, w.id, 'Doc {label}', 'text of {label}', '{owner}' from projects p, wizard_sessions w where p.org_id = '{org}' and w.org_id = '{org}';
insert into services (org_id, name, slug, category) values ('{org}', 'Custom {label}', 'custom-svc', 'custom');
insert into project_systems (org_id, project_id, system_id) select '{org}', id, 'lead-generation' from projects where org_id = '{org}';
insert into project_services (org_id, project_id, service_id) select '{org}', p.id, s.id from projects p, services s where p.org_id = '{org}' and s.org_id = '{org}';
insert into ai_run_logs (org_id, project_id, agent_name, input_tokens, output_tokens) select '{org}', id, 'analyze-business', 10, 5 from projects where org_id = '{org}';
insert into ai_cache (key, org_id, model, response) values ('cache-{label}', '{org}', 'm', '{{}}');
insert into analytics (org_id, period_type, period_start, metrics) values ('{org}', 'month', '2026-01-01', '{{}}');
insert into invoices (org_id, client_id, project_id, invoice_number, amount_cents, currency, status)
  select '{org}', c.id, p.id, 'INV-{label}', 1000, 'EUR', 'sent' from clients c, projects p where c.org_id = '{org}' and p.org_id = '{org}';
insert into payments (org_id, invoice_id, amount_cents, status) select '{org}', id, 100, 'pending' from invoices where org_id = '{org}';
insert into crm_pipelines (org_id, name, is_default) values ('{org}', 'Sales', true);
insert into invitations (org_id, email, role, invited_by) values ('{org}', 'invitee@{l}.test', 'member', '{owner}');
insert into crm_stages (org_id, pipeline_id, name, probability) select '{org}', id, 'New', 10 from crm_pipelines where org_id = '{org}';
insert into crm_contacts (org_id, client_id, first_name, email) select '{org}', id, 'Pat', 'pat@{l}.test' from clients where org_id = '{org}';
insert into crm_deals (org_id, client_id, stage_id, title, amount_cents, owner_id)
  select '{org}', c.id, s.id, 'Deal', 5000, '{owner}' from clients c, crm_stages s where c.org_id = '{org}' and s.org_id = '{org}';
insert into crm_interactions (org_id, client_id, deal_id, contact_id, type, subject, content, created_by)
  select '{org}', c.id, d.id, k.id, 'call', 'Call {label}', 'talked', '{owner}'
  from clients c, crm_deals d, crm_contacts k where c.org_id = '{org}' and d.org_id = '{org}' and k.org_id = '{org}';
"#,
        l = label.to_ascii_lowercase()
    );
    s
}

pub(crate) async fn fixture(c: &Client) -> Fixture {
    let org_a = Uuid::new_v4();
    let org_b = Uuid::new_v4();
    let mut users = HashMap::new();
    for org in ['A', 'B'] {
        for r in ROLES {
            users.insert((org, r), Uuid::new_v4());
        }
    }
    let outsider = Uuid::new_v4();
    let sql = format!(
        "begin;\n{}{}insert into auth.users (id, email) values ('{outsider}', 'outsider@elsewhere.test');\ncommit;",
        org_sql('A', org_a, &users),
        org_sql('B', org_b, &users)
    );
    c.batch_execute(&sql)
        .await
        .unwrap_or_else(|e| panic!("fixture: {e:?}"));
    Fixture {
        org_a,
        org_b,
        users,
        outsider,
    }
}

const ALL: &[&str] = &["owner", "admin", "consultant", "member", "client"];
const STAFF: &[&str] = &["owner", "admin", "consultant", "member"];
const WRITERS: &[&str] = &["owner", "admin", "consultant"];
const MANAGERS: &[&str] = &["owner", "admin"];
const NONE: &[&str] = &[];

/// (table, read, insert, update, delete) — the §6 matrix for rows of the caller's own org.
type Roles = &'static [&'static str];
const MATRIX: &[(&str, Roles, Roles, Roles, Roles)] = &[
    // Nobody inserts another user's membership: people join by accepting an invitation.
    ("team_members", ALL, NONE, MANAGERS, MANAGERS),
    ("invitations", MANAGERS, MANAGERS, NONE, MANAGERS),
    ("wizard_sessions", ALL, ALL, ALL, ALL),
    ("wizard_answers", ALL, ALL, ALL, ALL),
    ("documents", ALL, ALL, ALL, ALL),
    ("projects", ALL, STAFF, STAFF, STAFF),
    ("context_snapshots", ALL, STAFF, STAFF, STAFF),
    ("roadmaps", ALL, STAFF, STAFF, STAFF),
    ("roadmap_phases", ALL, STAFF, STAFF, STAFF),
    ("tasks", ALL, STAFF, STAFF, STAFF),
    ("milestones", ALL, STAFF, STAFF, STAFF),
    ("deliverables", ALL, STAFF, STAFF, STAFF),
    ("briefs", ALL, STAFF, STAFF, STAFF),
    ("project_systems", ALL, STAFF, STAFF, STAFF),
    ("project_services", ALL, STAFF, STAFF, STAFF),
    ("brief_versions", ALL, STAFF, NONE, NONE),
    ("clients", STAFF, WRITERS, WRITERS, WRITERS),
    ("crm_pipelines", STAFF, WRITERS, WRITERS, WRITERS),
    ("crm_stages", STAFF, WRITERS, WRITERS, WRITERS),
    ("crm_contacts", STAFF, WRITERS, WRITERS, WRITERS),
    ("crm_deals", STAFF, WRITERS, WRITERS, WRITERS),
    ("crm_interactions", STAFF, WRITERS, WRITERS, WRITERS),
    ("invoices", STAFF, WRITERS, WRITERS, WRITERS),
    ("payments", STAFF, WRITERS, WRITERS, WRITERS),
    ("analytics", STAFF, WRITERS, WRITERS, WRITERS),
    ("activities", STAFF, WRITERS, NONE, NONE),
    ("ai_run_logs", WRITERS, NONE, NONE, NONE),
    ("ai_cache", WRITERS, NONE, NONE, NONE),
    ("services", ALL, MANAGERS, MANAGERS, MANAGERS),
];

/// Which row of a table a test copies / deletes (team_members: a plain member, so that an
/// admin's rights are tested on a row an admin may manage).
fn row_filter(table: &str) -> &'static str {
    match table {
        "team_members" => " and role = 'member'",
        _ => "",
    }
}

fn delete_filter(table: &str, me: Uuid) -> String {
    match table {
        // anyone may leave (delete their own row): test managing someone else's row
        "team_members" => format!(" and role = 'member' and user_id <> '{me}'"),
        _ => String::new(),
    }
}

struct Tables {
    cols: HashMap<String, Vec<String>>,
}

impl Tables {
    async fn load(c: &Client) -> Tables {
        let mut cols: HashMap<String, Vec<String>> = HashMap::new();
        for r in c
            .query(
                "select table_name::text, column_name::text from information_schema.columns
                 where table_schema = 'public' and is_generated = 'NEVER'
                   and table_name in (select tablename from pg_tables where schemaname = 'public')
                 order by ordinal_position",
                &[],
            )
            .await
            .unwrap()
        {
            cols.entry(r.get(0)).or_default().push(r.get(1));
        }
        Tables { cols }
    }

    /// An INSERT that copies the given JSON row (all non-generated columns).
    fn insert_sql(&self, table: &str) -> String {
        let cols = self.cols[table]
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        format!("insert into public.{table} ({cols}) select {cols} from jsonb_populate_record(null::public.{table}, $1::text::jsonb)")
    }
}

/// A copy of one of `org`'s rows of `table` with a fresh key, moved to `target_org`.
async fn row_copy(c: &Client, table: &str, org: Uuid, target_org: Uuid) -> String {
    let sql = format!(
        "select to_jsonb(x)::text from public.{table} x where org_id = $1{} limit 1",
        row_filter(table)
    );
    let json: String = c
        .query_one(&sql, &[&org])
        .await
        .unwrap_or_else(|e| panic!("{table}: {e}"))
        .get(0);
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let o = v.as_object_mut().unwrap();
    if table == "invitations" {
        o.insert(
            "email".into(),
            serde_json::json!(format!("copy-{}@copy.test", Uuid::new_v4())),
        );
    }
    if table == "ai_cache" {
        o.insert(
            "key".into(),
            serde_json::json!(format!("copy-{}", Uuid::new_v4())),
        );
    } else {
        o.insert("id".into(), serde_json::json!(Uuid::new_v4()));
    }
    o.insert("org_id".into(), serde_json::json!(target_org));
    v.to_string()
}

fn code(e: &agencyflow_testkit::agencyflow_db::DbError) -> String {
    e.sqlstate().unwrap_or("?").to_string()
}

#[tokio::test]
async fn each_role_gets_exactly_its_rights_in_its_own_org() {
    let t = TestDb::new().await;
    let c = t.superuser().await;
    let f = fixture(&c).await;
    let tables = Tables::load(&c).await;
    let db: Db = t.db();
    let mut failures = Vec::new();
    for (table, read, insert, update, delete) in MATRIX {
        let copy = row_copy(&c, table, f.org_a, f.org_a).await;
        for role in ROLES {
            let me = f.user('A', role);
            // read
            let mut tx = t.as_user(&db, me).await;
            let n: i64 = tx
                .query_one(
                    &format!("select count(*) from public.{table} where org_id = $1"),
                    &[&f.org_a],
                )
                .await
                .unwrap()
                .get(0);
            tx.rollback().await.unwrap();
            if (n > 0) != read.contains(&role) {
                failures.push(format!("{table} select as {role}: saw {n} rows"));
            }
            // insert (allowed: RLS lets it through; a unique violation of the copy still proves that)
            let mut tx = t.as_user(&db, me).await;
            let r = tx.execute(&tables.insert_sql(table), &[&copy]).await;
            drop(tx);
            let allowed = match &r {
                Ok(_) => true,
                Err(e) if code(e) == "23505" => true,
                Err(e) if code(e) == "42501" => false,
                Err(e) => {
                    failures.push(format!("{table} insert as {role}: unexpected {e}"));
                    continue;
                }
            };
            if allowed != insert.contains(&role) {
                failures.push(format!(
                    "{table} insert as {role}: allowed={allowed} ({r:?})"
                ));
            }
            // update
            let mut tx = t.as_user(&db, me).await;
            let r = tx
                .execute(
                    &format!(
                        "update public.{table} set org_id = org_id where org_id = $1{}",
                        row_filter(table)
                    ),
                    &[&f.org_a],
                )
                .await;
            drop(tx);
            match r {
                Ok(n) if (n > 0) == update.contains(&role) => {}
                other => failures.push(format!("{table} update as {role}: {other:?}")),
            }
            // delete
            let mut tx = t.as_user(&db, me).await;
            let r = tx
                .execute(
                    &format!(
                        "delete from public.{table} where org_id = $1{}",
                        delete_filter(table, me)
                    ),
                    &[&f.org_a],
                )
                .await;
            drop(tx);
            match r {
                Ok(n) if (n > 0) == delete.contains(&role) => {}
                other => failures.push(format!("{table} delete as {role}: {other:?}")),
            }
        }
    }
    // organizations: members read; owner/admin update; only the owner deletes.
    for role in ROLES {
        let me = f.user('A', role);
        let mut tx = t.as_user(&db, me).await;
        let n: i64 = tx
            .query_one(
                "select count(*) from organizations where id = $1",
                &[&f.org_a],
            )
            .await
            .unwrap()
            .get(0);
        let up = tx
            .execute(
                "update organizations set name = name where id = $1",
                &[&f.org_a],
            )
            .await
            .unwrap();
        let del = tx
            .execute("delete from organizations where id = $1", &[&f.org_a])
            .await
            .unwrap();
        drop(tx);
        if n != 1 || (up == 1) != MANAGERS.contains(&role) || (del == 1) != (role == "owner") {
            failures.push(format!(
                "organizations as {role}: read {n}, update {up}, delete {del}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn a_member_of_org_a_cannot_touch_org_b() {
    let t = TestDb::new().await;
    let c = t.superuser().await;
    let f = fixture(&c).await;
    let tables = Tables::load(&c).await;
    let db = t.db();
    let mut failures = Vec::new();
    let strangers: Vec<(String, Uuid)> = ROLES
        .iter()
        .map(|r| (format!("A/{r}"), f.user('A', r)))
        .chain([("outsider".to_string(), f.outsider)])
        .collect();
    for (table, _, _, update, _) in MATRIX {
        let copy_into_b = row_copy(&c, table, f.org_b, f.org_b).await;
        for (who, me) in &strangers {
            let mut tx = t.as_user(&db, *me).await;
            let seen: i64 = tx
                .query_one(
                    &format!("select count(*) from public.{table} where org_id = $1"),
                    &[&f.org_b],
                )
                .await
                .unwrap()
                .get(0);
            let updated = tx
                .execute(
                    &format!("update public.{table} set org_id = org_id where org_id = $1"),
                    &[&f.org_b],
                )
                .await
                .unwrap();
            let deleted = tx
                .execute(
                    &format!("delete from public.{table} where org_id = $1"),
                    &[&f.org_b],
                )
                .await
                .unwrap();
            drop(tx);
            if seen + updated as i64 + deleted as i64 != 0 {
                failures.push(format!(
                    "{table} as {who}: saw {seen}, updated {updated}, deleted {deleted} of org B"
                ));
            }
            let mut tx = t.as_user(&db, *me).await;
            let r = tx.execute(&tables.insert_sql(table), &[&copy_into_b]).await;
            drop(tx);
            if !matches!(&r, Err(e) if code(e) == "42501") {
                failures.push(format!("{table} insert into org B as {who}: {r:?}"));
            }
        }
        // Moving one of A's rows to org B by updating org_id: refused (or nothing updatable).
        let owner = f.user('A', "owner");
        let mut tx = t.as_user(&db, owner).await;
        let r = tx
            .execute(
                &format!(
                    "update public.{table} set org_id = $2 where org_id = $1{}",
                    row_filter(table)
                ),
                &[&f.org_a, &f.org_b],
            )
            .await;
        drop(tx);
        // 42501: the update policy's WITH CHECK; 23503: project_services' service-scope trigger,
        // which runs first (BEFORE ROW triggers precede the policy check).
        let ok = if update.contains(&"owner") {
            matches!(&r, Err(e) if code(e) == "42501" || code(e) == "23503")
        } else {
            matches!(r, Ok(0))
        };
        if !ok {
            failures.push(format!(
                "{table}: moving a row to org B as A's owner: {r:?}"
            ));
        }
    }
    // organizations, team_members and profiles of org B
    let me = f.user('A', "owner");
    let mut tx = t.as_user(&db, me).await;
    let orgs: i64 = tx
        .query_one(
            "select count(*) from organizations where id = $1",
            &[&f.org_b],
        )
        .await
        .unwrap()
        .get(0);
    let up = tx
        .execute(
            "update organizations set name = 'x' where id = $1",
            &[&f.org_b],
        )
        .await
        .unwrap();
    let del = tx
        .execute("delete from organizations where id = $1", &[&f.org_b])
        .await
        .unwrap();
    let profiles: i64 = tx
        .query_one(
            "select count(*) from profiles where id = $1",
            &[&f.user('B', "owner")],
        )
        .await
        .unwrap()
        .get(0);
    let pup = tx
        .execute(
            "update profiles set full_name = 'x' where id = $1",
            &[&f.user('B', "member")],
        )
        .await
        .unwrap();
    drop(tx);
    assert_eq!(
        (orgs, up, del, profiles, pup),
        (0, 0, 0, 0, 0),
        "org B's organization/profiles visible to A's owner"
    );
    // A's owner cannot add themselves to org B
    let mut tx = t.as_user(&db, me).await;
    let r = tx
        .execute(
            "insert into team_members (org_id, user_id, role) values ($1, $2, 'owner')",
            &[&f.org_b, &me],
        )
        .await;
    drop(tx);
    assert!(matches!(&r, Err(e) if code(e) == "42501"), "{r:?}");
    assert!(
        failures.is_empty(),
        "{} leaks:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn rows_of_org_a_cannot_reference_rows_of_org_b() {
    let t = TestDb::new().await;
    let c = t.superuser().await;
    let f = fixture(&c).await;
    // Every composite (org_id, x) -> parent (org_id, y) key, checked even for the superuser
    // (RLS plays no part): pointing A's row at B's parent is a foreign-key violation.
    let fks = c
        .query(
            "select c.conrelid::regclass::text, a2.attname::text, c.confrelid::regclass::text, p2.attname::text
             from pg_constraint c
             join pg_attribute a1 on a1.attrelid = c.conrelid and a1.attnum = c.conkey[1]
             join pg_attribute a2 on a2.attrelid = c.conrelid and a2.attnum = c.conkey[2]
             join pg_attribute p2 on p2.attrelid = c.confrelid and p2.attnum = c.confkey[2]
             where c.contype = 'f' and c.connamespace = 'public'::regnamespace
               and array_length(c.conkey, 1) = 2 and a1.attname = 'org_id'",
            &[],
        )
        .await
        .unwrap();
    assert!(
        fks.len() >= 35,
        "expected the composite keys, found {}",
        fks.len()
    );
    let mut failures = Vec::new();
    for r in &fks {
        let (child, col, parent, pcol): (String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        c.batch_execute("begin").await.unwrap();
        // Make room: B's own rows of the child could collide on unique keys before the FK check.
        c.execute(
            &format!("delete from {child} where org_id = $1"),
            &[&f.org_b],
        )
        .await
        .unwrap();
        let res = c
            .execute(
                &format!("update {child} set {col} = (select {pcol} from {parent} where org_id = $2 limit 1) where org_id = $1"),
                &[&f.org_a, &f.org_b],
            )
            .await;
        c.batch_execute("rollback").await.unwrap();
        match res {
            Err(e) if e.code().map(|c| c.code()) == Some("23503") => {}
            other => failures.push(format!("{child}.{col} -> {parent} of org B: {other:?}")),
        }
    }
    // project_services: another org's custom service is refused as well.
    let r = c
        .execute(
            "update project_services set service_id = (select id from services where org_id = $2) where org_id = $1",
            &[&f.org_a, &f.org_b],
        )
        .await;
    assert!(
        r.is_err(),
        "project_services may reference another org's service"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn anon_sees_only_the_active_catalogue_and_service_role_sees_everything() {
    let t = TestDb::new().await;
    let c = t.superuser().await;
    let f = fixture(&c).await;
    c.batch_execute("update systems set is_active = false where id = 'content-engine'")
        .await
        .unwrap();
    let db = t.db();
    let tables: Vec<String> = c
        .query(
            "select tablename::text from pg_tables where schemaname = 'public' order by 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tables.len(), 33);
    let mut failures = Vec::new();
    for table in &tables {
        let total: i64 = c
            .query_one(&format!("select count(*) from public.{table}"), &[])
            .await
            .unwrap()
            .get(0);
        let visible_to_anon: i64 = match table.as_str() {
            "systems" => c.query_one("select count(*) from systems where is_active", &[]).await.unwrap().get(0),
            "services" => c.query_one("select count(*) from services where org_id is null and is_active", &[]).await.unwrap().get(0),
            "system_services" => c
                .query_one(
                    "select count(*) from system_services ss join systems s on s.id = ss.system_id join services v on v.id = ss.service_id
                     where s.is_active and v.is_active and v.org_id is null",
                    &[],
                )
                .await
                .unwrap()
                .get(0),
            _ => 0,
        };
        let mut tx = t.as_role(&db, "anon").await;
        let n: i64 = tx
            .query_one(&format!("select count(*) from public.{table}"), &[])
            .await
            .unwrap()
            .get(0);
        drop(tx);
        if n != visible_to_anon {
            failures.push(format!(
                "anon sees {n} rows of {table}, expected {visible_to_anon}"
            ));
        }
        // The fixture holds an inactive system and org-specific services: anon must see some
        // catalogue rows, never all of them.
        if ["systems", "services"].contains(&table.as_str()) && !(n > 0 && n < total) {
            failures.push(format!(
                "anon catalogue check of {table} is vacuous: {n} of {total}"
            ));
        }
        let mut tx = t.as_role(&db, "service_role").await;
        let s: i64 = tx
            .query_one(&format!("select count(*) from public.{table}"), &[])
            .await
            .unwrap()
            .get(0);
        drop(tx);
        if s != total {
            failures.push(format!("service_role sees {s} of {total} rows of {table}"));
        }
    }
    // anon writes nothing, not even to the catalogue
    for sql in [
        "insert into systems (id, name) values ('anon-system', 'x')".to_string(),
        "insert into organizations (name, slug) values ('x', 'anon-org')".to_string(),
        format!(
            "insert into clients (org_id, name) values ('{}', 'x')",
            f.org_a
        ),
        format!(
            "insert into wizard_sessions (org_id) values ('{}')",
            f.org_a
        ),
    ] {
        let mut tx = t.as_role(&db, "anon").await;
        let r = tx.execute(&sql, &[]).await;
        drop(tx);
        assert!(
            matches!(&r, Err(e) if code(e) == "42501"),
            "anon: {sql}: {r:?}"
        );
    }
    let mut tx = t.as_role(&db, "anon").await;
    let n = tx
        .execute("update services set name = 'x'", &[])
        .await
        .unwrap();
    drop(tx);
    assert_eq!(n, 0);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn profiles_and_memberships_follow_shared_orgs() {
    let t = TestDb::new().await;
    let c = t.superuser().await;
    let f = fixture(&c).await;
    let db = t.db();
    let me = f.user('A', "member");
    let mut tx = t.as_user(&db, me).await;
    let peers: i64 = tx
        .query_one("select count(*) from profiles", &[])
        .await
        .unwrap()
        .get(0);
    let own = tx
        .execute("update profiles set full_name = 'Me' where id = $1", &[&me])
        .await
        .unwrap();
    let other = tx
        .execute(
            "update profiles set full_name = 'Hacked' where id = $1",
            &[&f.user('A', "owner")],
        )
        .await
        .unwrap();
    drop(tx);
    assert_eq!(
        (peers, own, other),
        (5, 1, 0),
        "a member sees the 5 profiles of org A and writes only their own"
    );
    // An admin can neither create, promote to, nor remove an owner; an owner can.
    let admin = f.user('A', "admin");
    let mut tx = t.as_user(&db, admin).await;
    let r = tx
        .execute(
            "update team_members set role = 'owner' where org_id = $1 and role = 'member'",
            &[&f.org_a],
        )
        .await;
    drop(tx);
    assert!(
        matches!(&r, Err(e) if code(e) == "42501"),
        "admin promoting to owner: {r:?}"
    );
    let mut tx = t.as_user(&db, admin).await;
    let n = tx
        .execute(
            "delete from team_members where org_id = $1 and role = 'owner'",
            &[&f.org_a],
        )
        .await
        .unwrap();
    drop(tx);
    assert_eq!(n, 0, "admin removed an owner");
    let mut tx = t.as_user(&db, f.user('A', "owner")).await;
    let n = tx
        .execute(
            "update team_members set role = 'admin' where org_id = $1 and role = 'member'",
            &[&f.org_a],
        )
        .await
        .unwrap();
    drop(tx);
    assert_eq!(n, 1);
    // The last owner cannot leave; a member can.
    let mut tx = t.as_user(&db, f.user('A', "owner")).await;
    let r = tx
        .execute(
            "delete from team_members where org_id = $1 and user_id = $2",
            &[&f.org_a, &f.user('A', "owner")],
        )
        .await;
    drop(tx);
    assert!(
        matches!(&r, Err(e) if code(e) == "23514"),
        "last owner left: {r:?}"
    );
    let mut tx = t.as_user(&db, me).await;
    let n = tx
        .execute(
            "delete from team_members where org_id = $1 and user_id = $2",
            &[&f.org_a, &me],
        )
        .await
        .unwrap();
    drop(tx);
    assert_eq!(n, 1, "a member can leave");
    // Any authenticated user creates an org, reads it back in the same statement and owns it.
    let mut tx = t.as_user(&db, f.outsider).await;
    let row = tx
        .query_one(
            "insert into organizations (name, slug) values ('Fresh', 'fresh-org') returning id",
            &[],
        )
        .await
        .unwrap();
    let id: Uuid = row.get(0);
    let role: String = tx
        .query_one(
            "select role from team_members where org_id = $1 and user_id = $2",
            &[&id, &f.outsider],
        )
        .await
        .unwrap()
        .get(0);
    tx.commit().await.unwrap();
    assert_eq!(role, "owner");
    // ... but cannot create one on someone else's behalf.
    let mut tx = t.as_user(&db, f.outsider).await;
    let r = tx
        .execute(
            "insert into organizations (name, slug, created_by) values ('X', 'x-org', $1)",
            &[&f.user('B', "owner")],
        )
        .await;
    drop(tx);
    assert!(matches!(&r, Err(e) if code(e) == "42501"), "{r:?}");
}
