//! The `local` embedding provider (all-MiniLM-L6-v2 on the CPU) end to end: the worker embeds
//! a small agency corpus, and `search` finds documents from queries that share no word with
//! them (which the lexical `hash` provider cannot). Needs the model files:
//! `AGENCYFLOW_TEST_MODEL_DIR` (set by `./run test`) or the folder `scripts/setup` unpacks
//! to; without them the tests fail, saying so. Also the `#[ignore]`d benchmark
//! `local_model_bench` (see BENCHMARKS.md).
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use agencyflow_functions::embeddings::{backfill_with, WorkerConfig};
use agencyflow_functions::provider::{self, local::LocalProvider, DynProvider, Provider};
use agencyflow_functions::FunctionsArgs;
use agencyflow_testkit::agencyflow_db::tokio_postgres::Client;
use agencyflow_testkit::{TestApp, TestDb};
use serde_json::{json, Value};
use uuid::Uuid;

fn model_dir() -> PathBuf {
    agencyflow_localembed::test_model_dir(FunctionsArgs::default().local_model_dir())
}

const CORPUS: [(&str, &str); 8] = [
    ("retainers", "Accounts likely to leave us: three clients have cut their retainers, stopped answering our emails and asked for exports of their data. Without intervention they may cancel before renewal."),
    ("payables", "Accounts payable: we read supplier bills with OCR, match them to purchase orders and post them to the ledger without manual typing."),
    ("recruiting", "Recruiting roadmap for next year: two senior developers and a designer, the interview loop, salary bands and onboarding for new staff."),
    ("visibility", "Website visibility review: Google rankings dropped, pages load slowly, meta titles are missing and backlinks are weak."),
    ("personal-info", "Handling personal information: consent records, deletion requests, processor agreements and where people's data is stored in the EU."),
    ("fees", "How we charge: fixed-fee packages, hourly rates for extra work and a discount for annual prepayment."),
    ("incident", "Incident review: the chatbot server went down for four hours on Friday after a certificate expired; timeline and fixes."),
    ("calendar", "Instagram and LinkedIn content calendar, posting schedule and engagement metrics for the dental practice."),
];

/// Queries sharing no word with the document they should find.
const QUERIES: [(&str, &str); 6] = [
    ("customer churn risk", "retainers"),
    ("vendor invoice processing", "payables"),
    ("talent acquisition strategy", "recruiting"),
    ("search engine optimisation problems", "visibility"),
    ("privacy compliance", "personal-info"),
    ("service downtime", "incident"),
];

async fn org_with_user(db: &Client) -> (Uuid, Uuid) {
    let user = Uuid::new_v4();
    db.execute(
        "insert into auth.users (id, email) values ($1, 'owner@local.test')",
        &[&user],
    )
    .await
    .unwrap();
    let org: Uuid = db
        .query_one(
            "select org_id from team_members where user_id = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    (user, org)
}

async fn client_and_project(db: &Client, org: Uuid) -> (Uuid, Uuid) {
    let client: Uuid = db
        .query_one(
            "insert into clients (org_id, name, status) values ($1, 'Acme Dental', 'client') returning id",
            &[&org],
        )
        .await
        .unwrap()
        .get(0);
    let project: Uuid = db
        .query_one(
            "insert into projects (org_id, client_id, name) values ($1, $2, 'Automation') returning id",
            &[&org, &client],
        )
        .await
        .unwrap()
        .get(0);
    (client, project)
}

async fn search(app: &TestApp, user: Uuid, query: &str) -> Value {
    let resp = app
        .http
        .post(app.url("/functions/v1/search"))
        .header("apikey", &app.anon_key)
        .bearer_auth(app.user_token(user))
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

fn cos(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test]
async fn local_model_semantic_search_finds_paraphrases() {
    let dir = model_dir();
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let (user, org) = org_with_user(&db).await;
    let (client, project) = client_and_project(&db, org).await;
    for (name, text) in CORPUS {
        db.execute(
            "insert into documents (org_id, project_id, name, content_text) values ($1, $2, $3, $4)",
            &[&org, &project, &name, &text],
        )
        .await
        .unwrap();
    }
    db.execute(
        "insert into crm_interactions (org_id, client_id, type, subject, content) values ($1, $2, 'call', 'Unhappy', 'They are unhappy with results and consider ending the contract')",
        &[&org, &client],
    )
    .await
    .unwrap();

    let local: DynProvider = Arc::new(LocalProvider::load(&dir).unwrap());
    let report = backfill_with(&t.db(), local, &WorkerConfig::default(), |_, _| {})
        .await
        .unwrap();
    assert_eq!((report.embedded, report.failed), (9, 0), "{report:?}");
    let models: Vec<(Option<String>, i32)> = db
        .query(
            "select embedding_model, vector_dims(embedding) from documents
             union all select embedding_model, vector_dims(embedding) from crm_interactions",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(models.len(), 9);
    for (m, dims) in &models[..8] {
        assert_eq!((m.as_deref(), *dims), (Some("all-MiniLM-L6-v2"), 768));
    }
    assert_eq!(models[8], (Some("all-MiniLM-L6-v2".into()), 1536));

    // `local`: every paraphrase finds its document first, by meaning alone.
    let app = t
        .spawn_app_with(&[
            "--ai-chat-provider",
            "none",
            "--ai-embed-provider",
            "local",
            "--ai-local-model-dir",
            dir.to_str().unwrap(),
        ])
        .await;
    for (query, want) in QUERIES {
        let v = search(&app, user, query).await;
        assert_eq!(v["lexical"], false);
        let top = &v["documents"][0];
        assert_eq!(top["name"], want, "{query}: {v}");
        assert!(
            top["full_text_rank"].is_null(),
            "{query}: no shared word expected: {v}"
        );
        assert_eq!(top["semantic_rank"], 1, "{query}: {v}");
    }
    let v = search(&app, user, "customer churn risk").await;
    assert_eq!(v["interactions"][0]["subject"], "Unhappy", "{v}");

    // `hash` (lexical) on the same corpus and queries: words in common decide, and there are
    // none, so it ranks the right document first far less often.
    let hash_hits = QUERIES
        .iter()
        .filter(|(q, want)| {
            let qv = provider::hash::embed_text(q, 768);
            let best = CORPUS
                .iter()
                .max_by(|a, b| {
                    cos(&qv, &provider::hash::embed_text(a.1, 768))
                        .total_cmp(&cos(&qv, &provider::hash::embed_text(b.1, 768)))
                })
                .unwrap();
            best.0 == *want
        })
        .count();
    eprintln!(
        "top-1 hits: local {}/{n}, hash {hash_hits}/{n}",
        QUERIES.len(),
        n = QUERIES.len()
    );
    assert!(hash_hits <= QUERIES.len() / 2, "hash found {hash_hits}");

    // A server embedding queries with another model never compares them with these vectors.
    let hash_app = t
        .spawn_app_with(&["--ai-chat-provider", "none", "--ai-embed-provider", "hash"])
        .await;
    let v = search(&hash_app, user, "customer churn risk").await;
    assert_eq!(v["lexical"], true);
    for d in v["documents"].as_array().unwrap() {
        assert!(d["semantic_rank"].is_null(), "{v}");
    }
    assert_eq!(v["interactions"].as_array().unwrap().len(), 0, "{v}");

    // Editing a text clears its vector and its model; a backfill with `hash` re-embeds only
    // what is not already hash's (here: everything), recording the model.
    db.execute(
        "update documents set content_text = 'rewritten' where name = 'fees'",
        &[],
    )
    .await
    .unwrap();
    let row = db
        .query_one(
            "select embedding is null, embedding_model from documents where name = 'fees'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, bool>(0), row.get::<_, Option<String>>(1)),
        (true, None)
    );
    let hash: DynProvider = Arc::new(provider::HashEmbedder::new("hash-v1".into()));
    let report = backfill_with(&t.db(), hash, &WorkerConfig::default(), |_, _| {})
        .await
        .unwrap();
    // 8 queued here, the edited row by its trigger.
    assert_eq!((report.queued, report.embedded), (8, 9), "{report:?}");
    let n: i64 = db
        .query_one(
            "select count(*) from documents where embedding_model = 'hash-v1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 8);
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// `cargo test -p agencyflow-testkit --release --test it local_model_bench -- --ignored --nocapture`
/// (`LOCAL_BENCH_DOCS` documents, default 10000).
#[tokio::test]
#[ignore = "benchmark: run explicitly"]
async fn local_model_bench() {
    let dir = model_dir();
    let before = rss_mib();
    let started = Instant::now();
    let local = LocalProvider::load(&dir).unwrap();
    let load = started.elapsed();
    let after = rss_mib();
    let local: DynProvider = Arc::new(local);
    let words = [
        "client",
        "invoice",
        "automation",
        "dental",
        "clinic",
        "renewal",
        "report",
        "meeting",
        "budget",
        "campaign",
        "website",
        "contract",
        "onboarding",
        "support",
        "deadline",
    ];
    let sentence = |i: usize| {
        (0..12 + i % 20)
            .map(|k| words[(i * 7 + k * 3) % words.len()])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let texts: Vec<String> = (0..512).map(sentence).collect();
    local.embed(&texts[..32], 768).await.unwrap(); // warm-up
    let started = Instant::now();
    for chunk in texts.chunks(32) {
        local.embed(chunk, 768).await.unwrap();
    }
    let per_sec = texts.len() as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "local model: load {:.2}s, RSS {before:.0} MiB -> {after:.0} MiB loaded, {:.0} MiB after embedding; {per_sec:.1} sentences/s (12-31 words, batches of 32)",
        load.as_secs_f64(),
        rss_mib()
    );

    let n: i64 = std::env::var("LOCAL_BENCH_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let (_, org) = org_with_user(&db).await;
    let (_, project) = client_and_project(&db, org).await;
    // Agency-document-sized texts (~60-120 words, one window each), inserted without jobs
    // (as before the pipeline existed): the backfill queues and embeds them.
    db.execute(
        "alter table documents disable trigger handle_embedding_source_change",
        &[],
    )
    .await
    .unwrap();
    db.execute(
        "insert into documents (org_id, project_id, name, content_text)
         select $1, $3, 'doc-' || g, repeat('Quarterly report for client ' || g || ' about automation, invoices and the website campaign. ', (4 + g % 4)::int)
         from generate_series(1, $2::bigint) g",
        &[&org, &n, &project],
    )
    .await
    .unwrap();
    db.execute(
        "alter table documents enable trigger handle_embedding_source_change",
        &[],
    )
    .await
    .unwrap();
    let started = Instant::now();
    let report = backfill_with(&t.db(), local, &WorkerConfig::default(), |_, _| {})
        .await
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "backfill: {} documents in {secs:.1}s ({:.1} docs/s), RSS {:.0} MiB",
        report.embedded,
        report.embedded as f64 / secs,
        rss_mib()
    );
    assert_eq!(report.embedded, n as u64);
}

/// The model leaves memory after its idle time without embeddings and comes back on the
/// next one (a folder of its own, so other tests' copies do not interfere).
#[tokio::test]
async fn local_model_is_released_when_idle_and_reloaded_on_demand() {
    let dir = model_dir();
    let own = tempfile::tempdir().unwrap();
    for f in ["model.safetensors", "tokenizer.json", "config.json"] {
        std::os::unix::fs::symlink(dir.join(f), own.path().join(f)).unwrap();
    }
    static RELEASES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    provider::on_model_release(|| {
        RELEASES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    let releases = || RELEASES.load(std::sync::atomic::Ordering::SeqCst);
    let local = LocalProvider::load(own.path())
        .unwrap()
        .release_after(Some(std::time::Duration::from_secs(1)));
    assert!(!provider::local::is_loaded(own.path()), "loaded lazily");
    let texts = vec!["customer churn risk".to_string()];
    let first = local.embed(&texts, 768).await.unwrap();
    assert!(provider::local::is_loaded(own.path()));
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while provider::local::is_loaded(own.path()) {
        assert!(
            Instant::now() < deadline,
            "not released after its idle time"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // The binary's hook (mimalloc's collect in `agencyflow`) runs after the release.
    while releases() == 0 {
        assert!(Instant::now() < deadline, "the release hook did not run");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let again = local.embed(&texts, 768).await.unwrap();
    assert!(provider::local::is_loaded(own.path()), "reloaded on demand");
    assert_eq!(first.vectors, again.vectors);
}
