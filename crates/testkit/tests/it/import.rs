//! `agencyflow import supabase`: a database shaped like the original hosted project
//! (testkit's import_fixture.sql) with files in a folder, imported into a fresh agencyflow
//! database through the real command line (in process).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use agencyflow_testkit::agencyflow_server::import::{rules, tables};
use agencyflow_testkit::{TestDb, IMPORT_FIXTURE_SQL, TEST_JWT_SECRET};
use serde_json::{json, Value};

const BRIEF_PDF: &[u8] = b"%PDF-1.4 the original's brief";
const AVATAR: &[u8] = b"\x89PNG\r\n\x1a\n";

struct Origin {
    db: TestDb,
    files: tempfile::TempDir,
}

async fn origin() -> Origin {
    let db = TestDb::empty().await;
    let c = agencyflow_testkit::agencyflow_db::connect_one(&db.admin_url())
        .await
        .unwrap();
    let files = fill_origin(&c).await;
    Origin { db, files }
}

/// Loads the fixture into `c`'s (empty) database; the original's files, in a folder.
async fn fill_origin(
    c: &agencyflow_testkit::agencyflow_db::tokio_postgres::Client,
) -> tempfile::TempDir {
    c.batch_execute(IMPORT_FIXTURE_SQL)
        .await
        .unwrap_or_else(|e| panic!("fixture: {e:?}"));
    let files = tempfile::tempdir().unwrap();
    let org_a: String = c
        .query_one("select fx('org-a')::text", &[])
        .await
        .unwrap()
        .get(0);
    let owner: String = c
        .query_one("select fx('owner-a')::text", &[])
        .await
        .unwrap()
        .get(0);
    // A downloaded folder (<bucket>/<name>) and Supabase's file-backend layout
    // (<bucket>/<name>/<version>).
    let brief = files.path().join(format!("documents/{org_a}/Briefs.pdf"));
    std::fs::create_dir_all(brief.parent().unwrap()).unwrap();
    std::fs::write(&brief, BRIEF_PDF).unwrap();
    let avatar = files.path().join(format!("avatars/{owner}/me.png/v7"));
    std::fs::create_dir_all(avatar.parent().unwrap()).unwrap();
    std::fs::write(&avatar, AVATAR).unwrap();
    files
}

/// Runs `agencyflow import supabase` against `target`; the command's result and its report.
async fn import(
    target: &TestDb,
    from: &str,
    storage_from: &str,
    storage_dir: &Path,
    extra: &[&str],
) -> (Result<(), String>, Value) {
    let report = tempfile::NamedTempFile::new().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = [
        "agencyflow",
        "--jwt-secret",
        TEST_JWT_SECRET,
        "--database-url",
        &target.admin_url(),
        "--data-dir",
        data.path().to_str().unwrap(),
        "import",
        "supabase",
        "--from",
        from,
        "--storage-from",
        storage_from,
        "--storage-dir",
        storage_dir.to_str().unwrap(),
        "--batch-size",
        "7",
        "--report",
        report.path().to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let result = tokio::task::spawn_blocking(move || {
        use clap::Parser;
        let cli = agencyflow_testkit::agencyflow_server::config::Cli::try_parse_from(&args)
            .unwrap_or_else(|e| panic!("{e}"));
        agencyflow_testkit::agencyflow_server::run::run(cli).map_err(|e| e.to_string())
    })
    .await
    .unwrap();
    let text = std::fs::read_to_string(report.path()).unwrap_or_default();
    let report = serde_json::from_str(&text).unwrap_or(Value::Null);
    (result, report)
}

/// Row counts of every table the import writes, and the embedding queue.
async fn state(target: &TestDb) -> BTreeMap<String, i64> {
    let c = target.superuser().await;
    let mut out = BTreeMap::new();
    let mut names: Vec<String> = tables::TABLES
        .iter()
        .map(|t| format!("{}.{}", t.target.0, t.target.1))
        .collect();
    names.push("private.embedding_jobs".into());
    for n in names {
        let count: i64 = c
            .query_one(&format!("select count(*) from {n}"), &[])
            .await
            .unwrap()
            .get(0);
        out.insert(n, count);
    }
    out
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.to_string_lossy().contains("/.tmp/") {
                out.push(p);
            }
        }
    }
    out
}

fn table<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == name)
        .unwrap_or_else(|| panic!("{name} in {report}"))
}

#[tokio::test]
async fn import_dry_run_from_a_url_and_from_a_pg_dump_file_changes_nothing() {
    let target = TestDb::new().await;
    let o = origin().await;
    let storage = tempfile::tempdir().unwrap();
    let before = state(&target).await;
    let (r, report) = import(
        &target,
        &o.db.admin_url(),
        o.files.path().to_str().unwrap(),
        storage.path(),
        &["--dry-run"],
    )
    .await;
    r.unwrap();
    assert_eq!(report["outcome"], "dry run: rolled back");
    assert_eq!(report["refused_total"], 0, "{report:#}");
    assert_eq!(table(&report, "tasks")["imported"], 6);
    assert_eq!(report["files"]["read"], 2);
    assert_eq!(state(&target).await, before, "a dry run writes nothing");
    assert!(
        files_under(storage.path()).is_empty(),
        "a dry run copies no file"
    );

    // The same from a pg_dump file (custom format), restored into a scratch database.
    let dump = tempfile::NamedTempFile::new().unwrap();
    let out = std::process::Command::new("/usr/lib/postgresql/15/bin/pg_dump")
        .args(["--format=custom", "--file"])
        .arg(dump.path())
        .arg(o.db.admin_url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (r, from_dump) = import(
        &target,
        dump.path().to_str().unwrap(),
        o.files.path().to_str().unwrap(),
        storage.path(),
        &["--dry-run"],
    )
    .await;
    r.unwrap();
    for t in report["tables"].as_array().unwrap() {
        let name = t["table"].as_str().unwrap();
        assert_eq!(table(&from_dump, name)["read"], t["read"], "{name}");
        assert_eq!(table(&from_dump, name)["imported"], t["imported"], "{name}");
    }
    assert_eq!(state(&target).await, before);
    let admin =
        agencyflow_testkit::agencyflow_db::connect_one(&agencyflow_testkit::cluster_admin_url())
            .await
            .unwrap();
    let scratch: i64 = admin
        .query_one(
            "select count(*) from pg_database where datname like 'agencyflow_import_%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(scratch, 0, "the scratch database is dropped");
}

#[tokio::test]
async fn import_brings_every_row_users_files_and_a_second_run_adds_nothing() {
    let target = TestDb::new().await;
    let o = origin().await;
    let storage = tempfile::tempdir().unwrap();
    let src = agencyflow_testkit::agencyflow_db::connect_one(&o.db.admin_url())
        .await
        .unwrap();

    // The fixture holds every value of every value map (January, March and drifted).
    for m in rules::VALUE_MAPS {
        let rows = src
            .query(
                &format!(
                    "select distinct {c}::text from public.{t} where {c} is not null",
                    c = m.column,
                    t = m.table
                ),
                &[],
            )
            .await
            .unwrap();
        let mut have: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let mut want: Vec<String> = m.values.iter().map(|v| v.0.to_string()).collect();
        have.sort();
        want.sort();
        assert_eq!(have, want, "{}.{}", m.table, m.column);
    }

    let (r, report) = import(
        &target,
        &o.db.admin_url(),
        o.files.path().to_str().unwrap(),
        storage.path(),
        &["--embedding-model", "documents=text-embedding-004"],
    )
    .await;
    r.unwrap();
    assert_eq!(report["outcome"], "committed", "{report:#}");
    assert_eq!(report["refused_total"], 0, "{report:#}");
    // Every row read is imported (or matched to agencyflow's catalogue).
    for t in report["tables"].as_array().unwrap() {
        let read = t["read"].as_u64().unwrap();
        let placed = t["imported"].as_u64().unwrap()
            + t["matched"].as_u64().unwrap()
            + t["already_present"].as_u64().unwrap();
        assert!(placed >= read, "{t}");
    }
    assert_eq!(table(&report, "services")["matched"], 1);
    assert_eq!(table(&report, "storage.buckets")["already_present"], 1);
    assert_eq!(report["users"]["users"], 8);
    assert_eq!(report["users"]["anonymous"], 1);
    assert_eq!(report["users"]["sessions_not_carried"], 2);
    assert_eq!(report["files"]["copied"], 2);
    assert_eq!(report["files"]["verified"], 2);
    let left: Vec<String> = report["left_behind"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["what"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        left.iter().filter(|w| w.contains("temp_anon_")).count(),
        6,
        "{left:?}"
    );
    assert!(
        left.iter().any(|w| w.contains("view client_crm_status")),
        "{left:?}"
    );
    assert_eq!(
        left.iter()
            .filter(|w| w.contains("on organizations"))
            .count(),
        2,
        "{left:?}"
    );

    // The documented mappings.
    let c = target.superuser().await;
    let one = |sql: &'static str| {
        let c = &c;
        async move {
            c.query_one(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .get::<_, Option<String>>(0)
        }
    };
    let q = |s: &str| s.to_string();
    assert_eq!(one("select string_agg(role, ',' order by role) from team_members where org_id = md5('org-a')::uuid").await, Some(q("admin,client,consultant,consultant,member,owner")));
    assert_eq!(
        one("select role from team_members where org_id = md5('org-b')::uuid").await,
        Some(q("owner"))
    );
    assert_eq!(one("select string_agg(distinct status, ',' order by status) from projects where org_id = md5('org-a')::uuid").await, Some(q("active,archived,cancelled,completed,discovery,draft,on_hold,planning")));
    assert_eq!(
        one("select status from projects where id = md5('project-Discovery')::uuid").await,
        Some(q("discovery"))
    );
    assert_eq!(
        one("select value_cents::text from projects where id = md5('project-Active')::uuid").await,
        Some(q("1000050"))
    );
    // A project pointing at another org's client: the reference is cleared.
    assert_eq!(one("select coalesce(client_id::text, 'none') from projects where id = md5('project-draft')::uuid").await, Some(q("none")));
    assert_eq!(one("select status || ' ' || value_cents || ' ' || pipeline_stage from clients where id = md5('client-onboarding')::uuid").await, Some(q("client 124157 negotiation")));
    assert_eq!(
        one("select pipeline_stage from clients where id = md5('client-x2')::uuid").await,
        Some(q("won"))
    );
    assert_eq!(
        one("select status from clients where id = md5('client-active')::uuid").await,
        Some(q("client"))
    );
    assert_eq!(
        one("select status from clients where id = md5('client-inactive')::uuid").await,
        Some(q("churned"))
    );
    // A client assigned to a user of another org: cleared; the onboarding timestamp kept as it was (none).
    assert_eq!(one("select coalesce(assigned_to::text, 'none') || ' ' || coalesce(onboarded_at::text, 'none') from clients where id = md5('client-lead')::uuid").await, Some(q("none none")));
    assert_eq!(one("select owner || ' ' || status || ' ' || effort || ' ' || array_to_string(tags, '|') from tasks where id = md5('task-pending')::uuid").await, Some(q("automated todo m a")));
    assert_eq!(one("select owner || ' ' || array_to_string(tags, '|') || ' ' || coalesce(assigned_to::text, 'none') from tasks where id = md5('task-todo')::uuid").await, Some(q("client seo|3 none")));
    assert_eq!(
        one("select owner from tasks where id = md5('task-in_progress')::uuid").await,
        Some(q("agency"))
    );
    assert_eq!(one("select amount_cents || ' ' || currency from crm_deals where id = md5('deal-open')::uuid").await, Some(q("10000 USD")));
    assert_eq!(one("select amount_cents || ' ' || currency from crm_deals where id = md5('deal-won')::uuid").await, Some(q("250050 EUR")));
    // Columns agencyflow's (disabled during the load) triggers derive are filled as they would be.
    assert_eq!(
        one(
            "select (completed_at = updated_at)::text from tasks where id = md5('task-done')::uuid"
        )
        .await,
        Some(q("true"))
    );
    assert_eq!(one("select coalesce(completed_at::text, 'none') from tasks where id = md5('task-todo')::uuid").await, Some(q("none")));
    assert_eq!(
        one("select (closed_at is not null)::text from crm_deals where id = md5('deal-won')::uuid")
            .await,
        Some(q("true"))
    );
    assert_eq!(one("select coalesce(closed_at::text, 'none') from crm_deals where id = md5('deal-open')::uuid").await, Some(q("none")));
    assert_eq!(one("select currency || ' ' || coalesce(provider_ref, '') || ' ' || method from payments where id = md5('pay-pending')::uuid").await, Some(q("USD pi_123 card")));
    assert_eq!(one("select currency || ' ' || provider_ref from payments where id = md5('pay-failed')::uuid").await, Some(q("EUR tx-3")));
    // Payments carried as they were: the paid trigger did not re-judge the invoices.
    assert_eq!(one("select status || ' ' || (paid_at is not null) from invoices where id = md5('inv-paid')::uuid").await, Some(q("paid true")));
    assert_eq!(
        one("select status from invoices where id = md5('inv-void')::uuid").await,
        Some(q("void"))
    );
    assert_eq!(one("select jsonb_array_length(line_items) || ' ' || (notes like 'Original line items:%') from invoices where id = md5('inv-sent')::uuid").await, Some(q("0 true")));
    assert_eq!(one("select jsonb_array_length(line_items)::text from invoices where id = md5('inv-draft')::uuid").await, Some(q("2")));
    assert_eq!(
        one("select status from milestones where id = md5('ms-pending')::uuid").await,
        Some(q("upcoming"))
    );
    assert_eq!(
        one("select status from deliverables where id = md5('dl-completed')::uuid").await,
        Some(q("delivered"))
    );
    assert_eq!(
        one("select category from documents where id = md5('doc-Briefs')::uuid").await,
        Some(q("briefs"))
    );
    assert_eq!(
        one("select category from services where id = md5('svc-new')::uuid").await,
        Some(q("industry_specific"))
    );
    // The original's chatbot service is agencyflow's (same slug): links follow it.
    assert_eq!(
        one("select count(*)::text from services where slug = 'chatbot-development'").await,
        Some(q("1"))
    );
    assert_eq!(one("select s.slug from project_services ps join services s on s.id = ps.service_id where ps.id = md5('psv-planned')::uuid").await, Some(q("chatbot-development")));
    // Orgs get a slug; users their profile (client-a had none).
    assert!(
        one("select slug from organizations where id = md5('org-a')::uuid")
            .await
            .unwrap()
            .starts_with("sun-ai-agency-")
    );
    assert_eq!(
        one("select email from profiles where id = md5('client-a')::uuid").await,
        Some(q("client-a@example.com"))
    );
    // No personal workspaces were invented for imported users.
    assert_eq!(
        one("select count(*)::text from organizations").await,
        Some(q("3"))
    );
    // Wizard: the guest's session linked to the guest; the NULL-org session takes its project's org;
    // answers with a missing screen_id / step_number completed.
    assert_eq!(one("select (user_id::text = md5('guest')::uuid::text)::text from wizard_sessions where id = md5('ws-guest')::uuid").await, Some(q("true")));
    assert_eq!(one("select (org_id::text = md5('org-a')::uuid::text)::text from wizard_sessions where id = md5('ws-null-org')::uuid").await, Some(q("true")));
    assert_eq!(one("select screen_id || ' ' || step_number from wizard_answers where id = md5('wa-2')::uuid").await, Some(q("step-2 2")));
    assert_eq!(one("select screen_id || ' ' || step_number from wizard_answers where id = md5('wa-3')::uuid").await, Some(q("step-3 3")));
    // Versioning kept: both snapshots, the active one, both roadmaps; brief history as it was.
    assert_eq!(one("select string_agg(version || ':' || is_active, ',' order by version) from context_snapshots").await, Some(q("1:false,2:true")));
    assert_eq!(
        one("select roi_projection::text from roadmaps where id = md5('roadmap-2')::uuid").await,
        Some(q("\"300% in year one\""))
    );
    assert_eq!(
        one("select roi_projection::text from roadmaps where id = md5('roadmap-1')::uuid").await,
        Some(q("{\"roi\": 2}"))
    );
    assert_eq!(
        one("select string_agg(version::text, ',' order by version) from brief_versions").await,
        Some(q("1,2"))
    );
    assert_eq!(one("select (org_id::text = md5('org-a')::uuid::text)::text || ',' || coalesce(changed_by::text, 'none') from brief_versions where id = md5('bv-2')::uuid").await, Some(q("true,none")));
    assert_eq!(one("select (org_id::text = md5('org-a')::uuid::text)::text from crm_stages where id = md5('stage-1')::uuid").await, Some(q("true")));
    // CRM: a client-less interaction takes its deal's client; timeline not duplicated.
    assert_eq!(one("select (client_id::text = md5('client-prospect')::uuid::text)::text from crm_interactions where id = md5('ix-system')::uuid").await, Some(q("true")));
    assert_eq!(
        one("select count(*)::text from activities").await,
        Some(q("5"))
    );
    assert_eq!(
        one("select metadata ->> 'sentiment' from activities where id = md5('act-call')::uuid")
            .await,
        Some(q("positive"))
    );
    // AI: cache and run logs kept.
    assert_eq!(
        one("select model || ' ' || tokens_used from ai_cache where key = 'hash-org-a'").await,
        Some(q("unknown 0"))
    );
    assert_eq!(
        one("select string_agg(success::text, ',' order by agent_name) from ai_run_logs").await,
        Some(q("false,true"))
    );
    // Embeddings: documents' (model named) kept; crm_interactions' (unknown model) queued.
    assert_eq!(
        one("select embedding_model from documents where id = md5('doc-Briefs')::uuid").await,
        Some(q("text-embedding-004"))
    );
    assert_eq!(one("select (embedding is null)::text from crm_interactions where id = md5('ix-email')::uuid").await, Some(q("true")));
    assert_eq!(one("select count(*)::text from private.embedding_jobs where table_name = 'crm_interactions' and status = 'pending'").await, Some(q("6")));
    assert_eq!(one("select count(*)::text from private.embedding_jobs where table_name = 'documents' and row_id = md5('doc-Briefs')::uuid").await, Some(q("0")));
    // Users: ids, e-mail, metadata, hash, anonymous flag, identities; pending tokens dropped.
    assert_eq!(one("select raw_user_meta_data ->> 'full_name' from auth.users where id = md5('owner-a')::uuid").await, Some(q("Olive Owner")));
    assert_eq!(
        one("select left(encrypted_password, 4) from auth.users where id = md5('owner-a')::uuid")
            .await,
        Some(q("$2a$"))
    );
    assert_eq!(
        one("select is_anonymous::text from auth.users where id = md5('guest')::uuid").await,
        Some(q("true"))
    );
    assert_eq!(one("select coalesce(recovery_token, '') from auth.users where id = md5('consultant-a')::uuid").await, Some(q("")));
    assert_eq!(
        one("select provider_id from auth.identities where provider = 'google'").await,
        Some(q("google-sub-123"))
    );
    assert_eq!(
        one("select count(*)::text from auth.sessions").await,
        Some(q("0"))
    );
    // Triggers are back on after the import.
    assert_eq!(one("select count(*)::text from pg_trigger where tgrelid = 'public.briefs'::regclass and not tgisinternal and tgenabled = 'D'").await, Some(q("0")));

    // A user signs in with the password they had, and downloads their file.
    let app = target
        .spawn_app_with(&["--storage-dir", storage.path().to_str().unwrap()])
        .await;
    let login = app
        .http
        .post(app.url("/auth/v1/token?grant_type=password"))
        .header("apikey", &app.anon_key)
        .json(&json!({"email": "owner-a@example.com", "password": "old-password-a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let session: Value = login.json().await.unwrap();
    let token = session["access_token"].as_str().unwrap().to_string();
    let wrong = app
        .http
        .post(app.url("/auth/v1/token?grant_type=password"))
        .header("apikey", &app.anon_key)
        .json(&json!({"email": "owner-a@example.com", "password": "not-it"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 400);
    let org_a = one("select md5('org-a')::uuid::text").await.unwrap();
    let file = app
        .http
        .get(app.url(&format!("/storage/v1/object/documents/{org_a}/Briefs.pdf")))
        .header("apikey", &app.anon_key)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), 200);
    assert_eq!(
        file.headers()["content-type"].to_str().unwrap(),
        "application/pdf"
    );
    assert_eq!(&file.bytes().await.unwrap()[..], BRIEF_PDF);
    let owner = one("select md5('owner-a')::uuid::text").await.unwrap();
    let avatar = app
        .http
        .get(app.url(&format!("/storage/v1/object/public/avatars/{owner}/me.png")))
        .send()
        .await
        .unwrap();
    assert_eq!(avatar.status(), 200);
    assert_eq!(&avatar.bytes().await.unwrap()[..], AVATAR);

    // Another org's data stays invisible under RLS.
    let clients: Value = app
        .http
        .get(app.url("/rest/v1/clients?select=name"))
        .header("apikey", &app.anon_key)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = clients
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 10, "{names:?}");
    assert!(!names.contains(&"Org B secret client"));
    let theirs = app
        .http
        .get(app.url(&format!("/storage/v1/object/documents/{org_a}/Briefs.pdf")))
        .header("apikey", &app.anon_key)
        .bearer_auth(
            app.user_token(
                uuid::Uuid::parse_str(&one("select md5('owner-b')::uuid::text").await.unwrap())
                    .unwrap(),
            ),
        )
        .send()
        .await
        .unwrap();
    assert_ne!(
        theirs.status(),
        200,
        "org B's owner cannot read org A's file"
    );

    // A second run adds nothing.
    let before = state(&target).await;
    let files_before = files_under(storage.path()).len();
    let (r, again) = import(
        &target,
        &o.db.admin_url(),
        o.files.path().to_str().unwrap(),
        storage.path(),
        &["--embedding-model", "documents=text-embedding-004"],
    )
    .await;
    r.unwrap();
    for t in again["tables"].as_array().unwrap() {
        assert_eq!(t["imported"], 0, "{t}");
    }
    assert_eq!(again["files"]["reused"], 2);
    assert_eq!(again["files"]["copied"], 0);
    assert_eq!(state(&target).await, before);
    assert_eq!(files_under(storage.path()).len(), files_before);
}

#[tokio::test]
async fn a_refused_row_fails_the_import_and_leaves_nothing_behind() {
    let target = TestDb::new().await;
    let o = origin().await;
    let storage = tempfile::tempdir().unwrap();
    let src = agencyflow_testkit::agencyflow_db::connect_one(&o.db.admin_url())
        .await
        .unwrap();
    // A task status in no value set, and a payment whose invoice is gone (its FK dropped).
    src.batch_execute(
        "insert into tasks (id, org_id, phase_id, title, owner, status) values (fx('task-someday'), fx('org-a'), fx('phase-1'), 'Someday', 'Client', 'someday');
         alter table payments drop constraint payments_invoice_id_fkey;
         insert into payments (id, org_id, invoice_id, amount_cents, status) values (fx('pay-orphan'), fx('org-a'), fx('inv-gone'), 100, 'completed');
         insert into wizard_answers (id, org_id, session_id, screen_id, step_number, data, updated_at)
           values (fx('wa-1-older'), fx('org-a'), fx('ws-a'), 'step-1', 1, '{}', now() - interval '1 day');",
    )
    .await
    .unwrap();
    let before = state(&target).await;
    let (r, report) = import(
        &target,
        &o.db.admin_url(),
        o.files.path().to_str().unwrap(),
        storage.path(),
        &[],
    )
    .await;
    let err = r.unwrap_err();
    assert!(err.contains("3 row(s) refused"), "{err}");
    assert_eq!(report["outcome"], "refused: rolled back");
    let task = &table(&report, "tasks")["refused"][0];
    let id: String = src
        .query_one("select fx('task-someday')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(task["id"], id.as_str());
    assert!(
        task["reason"].as_str().unwrap().contains("\"someday\""),
        "{task}"
    );
    let pay = &table(&report, "payments")["refused"][0];
    assert!(
        pay["reason"].as_str().unwrap().contains("does not exist"),
        "{pay}"
    );
    assert_eq!(
        state(&target).await,
        before,
        "nothing is left in the database"
    );
    assert!(
        files_under(storage.path()).is_empty(),
        "the files this run copied are removed"
    );
    assert_eq!(report["files"]["removed_after_failure"], 2);

    // --allow-refusals imports the rest.
    let (r, report) = import(
        &target,
        &o.db.admin_url(),
        o.files.path().to_str().unwrap(),
        storage.path(),
        &["--allow-refusals"],
    )
    .await;
    r.unwrap();
    assert_eq!(report["outcome"], "committed");
    assert_eq!(report["refused_total"], 3);
    let c = target.superuser().await;
    let n: i64 = c
        .query_one("select count(*) from tasks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 6);
}

/// `moto_server`, as the storage tests find it (a test never passes by skipping).
fn moto_server() -> PathBuf {
    if let Some(p) = std::env::var_os("AGENCYFLOW_TEST_MOTO_SERVER").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").expect("no HOME: set AGENCYFLOW_TEST_MOTO_SERVER");
    let p = PathBuf::from(home).join(".cache/agencyflow/moto-venv/bin/moto_server");
    assert!(
        p.is_file(),
        "no moto_server at {}: run `bash scripts/setup --with-s3-server`, or set AGENCYFLOW_TEST_MOTO_SERVER",
        p.display()
    );
    p
}

#[tokio::test]
async fn import_reads_the_files_from_the_original_s3_endpoint() {
    let target = TestDb::new().await;
    let o = origin().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = tokio::process::Command::new(moto_server())
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start moto_server");
    let endpoint = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while http.get(format!("{endpoint}/")).send().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "moto_server did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Supabase's S3 endpoint: one S3 bucket per storage bucket, the object name as the key.
    let src = agencyflow_testkit::agencyflow_db::connect_one(&o.db.admin_url())
        .await
        .unwrap();
    let org_a: String = src
        .query_one("select fx('org-a')::text", &[])
        .await
        .unwrap()
        .get(0);
    let owner: String = src
        .query_one("select fx('owner-a')::text", &[])
        .await
        .unwrap()
        .get(0);
    for (bucket, key, body) in [
        ("documents", format!("{org_a}/Briefs.pdf"), BRIEF_PDF),
        ("avatars", format!("{owner}/me.png"), AVATAR),
    ] {
        let _ = http
            .put(format!("{endpoint}/{bucket}"))
            .send()
            .await
            .unwrap();
        let put = http
            .put(format!("{endpoint}/{bucket}/{key}"))
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert!(put.status().is_success(), "{}", put.text().await.unwrap());
    }
    let storage = tempfile::tempdir().unwrap();
    let (r, report) = import(
        &target,
        &o.db.admin_url(),
        "s3://",
        storage.path(),
        &[
            "--storage-from-s3-endpoint",
            &endpoint,
            "--storage-from-s3-region",
            "us-east-1",
            "--storage-from-s3-access-key-id",
            "test",
            "--storage-from-s3-secret-access-key",
            "test",
        ],
    )
    .await;
    r.unwrap();
    assert_eq!(report["files"]["copied"], 2, "{report:#}");
    assert_eq!(report["files"]["verified"], 2);
    let copied: Vec<Vec<u8>> = files_under(storage.path())
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(copied.iter().any(|b| b == BRIEF_PDF));
    assert!(copied.iter().any(|b| b == AVATAR));
}

/// A hosted Supabase database speaks TLS: `--from` honours libpq's sslmode and sslrootcert.
/// A cluster of its own with `ssl = on` and a certificate for `localhost` from a CA made
/// here; the shared test cluster (no TLS) for the refusal of `require`.
#[tokio::test]
async fn import_from_a_url_honours_sslmode_and_sslrootcert() {
    use agencyflow_testkit::agencyflow_db::tls::SslConnectString;
    use agencyflow_testkit::tls::{TestCa, TlsCluster};

    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new(pki.path(), "origin-ca");
    let other_ca = TestCa::new(pki.path(), "other-ca");
    let (cert, key) = ca.server_cert(&["localhost"]);
    let server = TlsCluster::start(&cert, &key, "s3cret pw").await;
    let su = server.superuser("postgres").await;
    for sql in [
        "create database origin",
        "create role anon nologin",
        "create role authenticated nologin",
    ] {
        su.batch_execute(sql).await.unwrap();
    }
    let files = fill_origin(&server.superuser("origin").await).await;
    let url = |host: &str, params: &str| {
        format!(
            "postgres://postgres:s3cret%20pw@{host}:{}/origin?{params}",
            server.port()
        )
    };
    let ca_file = ca.cert.display().to_string();
    let other_file = other_ca.cert.display().to_string();

    // Encrypted (pg_stat_ssl says so) with every mode that asks for TLS, checked or not.
    async fn encrypted(url: &str) -> Result<bool, String> {
        let c = SslConnectString::parse(url, None)
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(c.query_one(
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0))
    }
    for params in [
        "sslmode=require".to_string(),
        "sslmode=prefer".to_string(),
        format!("sslmode=verify-ca&sslrootcert={ca_file}"),
        format!("sslmode=verify-full&sslrootcert={ca_file}"),
    ] {
        assert_eq!(
            encrypted(&url("localhost", &params)).await,
            Ok(true),
            "{params}"
        );
    }
    assert_eq!(
        encrypted(&url("localhost", "sslmode=disable")).await,
        Ok(false)
    );
    // verify-ca checks the CA only; verify-full also the name (the cert is for localhost).
    assert_eq!(
        encrypted(&url(
            "127.0.0.1",
            &format!("sslmode=verify-ca&sslrootcert={ca_file}")
        ))
        .await,
        Ok(true)
    );
    let err = encrypted(&url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca_file}"),
    ))
    .await
    .unwrap_err();
    assert!(err.contains("not issued for this host name"), "{err}");
    // The default roots (Mozilla's) do not know the test CA.
    let err = encrypted(&url("localhost", "sslmode=verify-full"))
        .await
        .unwrap_err();
    assert!(err.contains("not signed by a trusted CA"), "{err}");

    // The import itself, verify-full against the right CA: every row comes across.
    let target = TestDb::new().await;
    let storage = tempfile::tempdir().unwrap();
    let good = url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca_file}"),
    );
    let (r, report) = import(
        &target,
        &good,
        files.path().to_str().unwrap(),
        storage.path(),
        &[],
    )
    .await;
    r.unwrap();
    assert_eq!(report["outcome"], "committed", "{report:#}");
    assert_eq!(table(&report, "tasks")["imported"], 6);
    assert_eq!(report["files"]["copied"], 2);

    // Another CA: refused, with the reason, and nothing written.
    let target = TestDb::new().await;
    let before = state(&target).await;
    let wrong = url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={other_file}"),
    );
    let (r, _) = import(
        &target,
        &wrong,
        files.path().to_str().unwrap(),
        storage.path(),
        &[],
    )
    .await;
    let err = r.unwrap_err();
    assert!(err.contains("connecting to --from"), "{err}");
    assert!(
        err.contains(&format!("not signed by a CA in sslrootcert={other_file}")),
        "{err}"
    );
    assert_eq!(state(&target).await, before);

    // A server without TLS: `require` is refused rather than silently sent in the clear;
    // `prefer` (libpq's default) falls back to it.
    let plain = TestDb::new().await;
    let su = plain.superuser().await;
    let role = format!("imp_{}", uuid::Uuid::new_v4().simple());
    su.batch_execute(&format!("create role {role} login password 'pw'"))
        .await
        .unwrap();
    let plain_url = |mode: &str| format!("{} sslmode={mode}", plain.tcp_url(&role, "pw"));
    let err = encrypted(&plain_url("require")).await.unwrap_err();
    assert!(err.contains("the server does not offer TLS"), "{err}");
    assert!(err.contains("sslmode=require"), "{err}");
    assert_eq!(encrypted(&plain_url("prefer")).await, Ok(false));
    let (r, _) = import(
        &target,
        &plain_url("require"),
        files.path().to_str().unwrap(),
        storage.path(),
        &[],
    )
    .await;
    assert!(r.unwrap_err().contains("does not offer TLS"));
    su.batch_execute(&format!(
        "select pg_terminate_backend(pid) from pg_stat_activity where usename = '{role}'; drop role {role};"
    ))
    .await
    .unwrap();
}

/// A badly broken original cannot fill memory with its refusals: every refused row is
/// counted, only the first `--refusals-listed` per table are named.
#[tokio::test]
async fn refusals_are_all_counted_but_only_the_first_are_named() {
    let target = TestDb::new().await;
    let o = origin().await;
    let storage = tempfile::tempdir().unwrap();
    let src = agencyflow_testkit::agencyflow_db::connect_one(&o.db.admin_url())
        .await
        .unwrap();
    src.batch_execute(
        "insert into tasks (id, org_id, phase_id, title, owner, status)
         select gen_random_uuid(), fx('org-a'), fx('phase-1'), 'Someday ' || i, 'Client', 'someday'
           from generate_series(1, 300) i",
    )
    .await
    .unwrap();
    let (r, report) = import(
        &target,
        &o.db.admin_url(),
        o.files.path().to_str().unwrap(),
        storage.path(),
        &["--dry-run", "--refusals-listed", "5"],
    )
    .await;
    let err = r.unwrap_err();
    assert!(err.contains("300 row(s) refused"), "{err}");
    let tasks = table(&report, "tasks");
    assert_eq!(tasks["refused_count"], 300, "{tasks:#}");
    assert_eq!(tasks["refused"].as_array().unwrap().len(), 5);
    assert_eq!(tasks["refused_not_listed"], 295);
    assert!(tasks["refused"][4]["reason"]
        .as_str()
        .unwrap()
        .contains("\"someday\""));
    assert_eq!(table(&report, "projects")["refused_count"], 0);
    assert!(table(&report, "projects")
        .get("refused_not_listed")
        .is_none());
    assert_eq!(report["refused_total"], 300);
}
