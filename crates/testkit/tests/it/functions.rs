//! /functions/v1 against a mock model provider speaking the real Gemini and OpenAI wire
//! formats: the request each function sends, structured output parsed and validated, the
//! database effects (as the caller, RLS deciding), cache, run logs, rate limit, retries,
//! streaming, and the embeddings pipeline (worker restart, backfill, hybrid search).
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agencyflow_functions::embeddings::{
    backfill_with, run_batch, spawn_embedding_worker, spawn_embedding_worker_until, WorkerConfig,
};
use agencyflow_functions::futures::future::BoxFuture;
use agencyflow_functions::futures::{self, FutureExt};
use agencyflow_functions::provider::{
    self, ChatRequest, ChatResponse, ChatStream, Embeddings, Provider, ProviderError,
};
use agencyflow_testkit::agencyflow_db::tokio_postgres::Client;
use agencyflow_testkit::{wait, TestApp, TestDb};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// The mock provider
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Mock {
    /// (path, headers of interest, body) of every request.
    calls: Mutex<Vec<(String, Value, Value)>>,
    /// Answer the next chat calls with text that is not JSON.
    junk: std::sync::atomic::AtomicBool,
    /// Answer this many calls with 429 (Retry-After: 0) first.
    busy: AtomicUsize,
}

impl Mock {
    fn chat_calls(&self) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| {
                c.0.contains("chat/completions")
                    || c.0.contains("generateContent")
                    || c.0.contains("streamGenerateContent")
            })
            .count()
    }
    fn last(&self) -> (String, Value, Value) {
        self.calls.lock().unwrap().last().cloned().unwrap()
    }
}

/// A canned answer that fits the function's schema, recognised by its properties.
fn answer_for(schema: &Value, user: &str) -> Value {
    let props = &schema["properties"];
    let has = |k: &str| props.get(k).is_some();
    if has("status") && has("reasons") {
        json!({"status": "at_risk", "reasons": ["two tasks are overdue"], "recommendations": ["re-plan phase 1"]})
    } else if has("maturity_score") {
        json!({"summary": "manual back office", "maturity_score": 35, "findings": [{"area": "billing", "finding": "invoices typed by hand", "severity": "high", "recommendation": "automate invoicing"}]})
    } else if has("readiness_score") {
        json!({"readiness_score": 72, "level": "ready", "summary": "ready for a pilot", "strengths": ["clean data"], "gaps": ["no owner"]})
    } else if has("phases") {
        json!({"total_duration": "3 months", "roi_projection": {"summary": "pays back in 5 months", "estimated_annual_value_usd": 48000, "payback_months": 5},
               "phases": [{"title": "Foundations", "description": "data and access", "outcomes": ["CRM cleaned"]},
                          {"title": "Pilot", "description": "first system live", "outcomes": ["lead bot live"]}]})
    } else if has("tasks") {
        json!({"tasks": [{"title": "Export CRM", "description": "csv export", "owner": "client", "priority": "high", "effort": "s", "tags": ["data"]},
                         {"title": "Configure bot", "description": "prompting", "owner": "agency", "priority": "medium", "effort": "m", "tags": []}]})
    } else if has("health_score") {
        json!({"health_score": 81, "summary": "engaged client", "next_best_action": "propose phase 2", "risks": [], "sentiment_trend": "improving"})
    } else if has("citations") {
        let id = user
            .split("\"id\": \"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("none");
        json!({"answer": "The invoice bot saves 10 hours a week.", "citations": [{"id": id, "type": "document"}, {"id": "00000000-0000-0000-0000-000000000000", "type": "document"}]})
    } else if has("recommendations") {
        let first = schema
            .pointer("/properties/recommendations/items/properties/system_id/enum/0")
            .cloned()
            .unwrap_or(json!("lead-generation"));
        json!({"summary": "start with leads", "recommendations": [{"system_id": first, "why_it_matters": "more leads", "priority": "high"}]})
    } else {
        json!({"summary": "A dental clinic chain", "industry": "healthcare", "business_model": "services", "strengths": ["loyal patients"], "challenges": ["manual billing"], "opportunities": ["invoice automation"]})
    }
}

fn gemini_schema_to_plain(s: &Value) -> Value {
    // Enough of the inverse of the Gemini dialect for answer_for: properties and enums.
    s.clone()
}

async fn mock_openai(
    State(m): State<Arc<Mock>>,
    Path(rest): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    m.calls.lock().unwrap().push((
        format!("/v1/{rest}"),
        json!({"authorization": auth}),
        body.clone(),
    ));
    if m.busy.load(Ordering::SeqCst) > 0 {
        m.busy.fetch_sub(1, Ordering::SeqCst);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "0")],
            "{\"error\":{\"message\":\"slow down\"}}",
        )
            .into_response();
    }
    match rest.as_str() {
        "embeddings" => {
            let dims = body["dimensions"].as_u64().unwrap_or(1536) as usize;
            let inputs: Vec<String> = body["input"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect();
            let data: Vec<Value> = inputs.iter().enumerate().map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": provider::hash::embed_text(t, dims)})).collect();
            axum::Json(json!({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 3, "total_tokens": 3}})).into_response()
        }
        "chat/completions" if body["stream"] == json!(true) => {
            let mut s = String::new();
            for piece in ["Projects ", "look ", "healthy."] {
                s += &format!(
                    "data: {}\n\n",
                    json!({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": piece}}]})
                );
            }
            s += &format!(
                "data: {}\n\n",
                json!({"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}})
            );
            s += "data: [DONE]\n\n";
            ([("content-type", "text/event-stream")], s).into_response()
        }
        "chat/completions" => {
            let user = body["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|x| x["role"] == "user")
                .map(|x| x["content"].as_str().unwrap().to_string())
                .collect::<String>();
            let content = if m.junk.load(Ordering::SeqCst) {
                "Sure! Here is my analysis: it is great.".to_string()
            } else {
                answer_for(&body["response_format"]["json_schema"]["schema"], &user).to_string()
            };
            axum::Json(json!({"id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": null}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}})).into_response()
        }
        _ => (StatusCode::NOT_FOUND, "{}").into_response(),
    }
}

async fn mock_gemini(
    State(m): State<Arc<Mock>>,
    Path(rest): Path<String>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let key = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let path = format!(
        "/gemini/models/{rest}{}",
        uri.query().map(|q| format!("?{q}")).unwrap_or_default()
    );
    m.calls
        .lock()
        .unwrap()
        .push((path, json!({"x-goog-api-key": key}), body.clone()));
    let (_model, method) = rest.split_once(':').unwrap_or((&rest, ""));
    match method {
        "generateContent" => {
            let user = body["contents"][0]["parts"][0]["text"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let schema = lower_types(&gemini_schema_to_plain(
                &body["generationConfig"]["responseSchema"],
            ));
            let text = if m.junk.load(Ordering::SeqCst) {
                "not json".to_string()
            } else {
                answer_for(&schema, &user).to_string()
            };
            axum::Json(json!({"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
                              "usageMetadata": {"promptTokenCount": 13, "candidatesTokenCount": 5, "totalTokenCount": 18}})).into_response()
        }
        "streamGenerateContent" => {
            let mut s = String::new();
            for piece in ["All ", "good."] {
                s += &format!(
                    "data: {}\r\n\r\n",
                    json!({"candidates": [{"content": {"role": "model", "parts": [{"text": piece}]}}]})
                );
            }
            s += &format!(
                "data: {}\r\n\r\n",
                json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2}})
            );
            ([("content-type", "text/event-stream")], s).into_response()
        }
        "embedContent" => {
            let dims = body["outputDimensionality"].as_u64().unwrap() as usize;
            let t = body["content"]["parts"][0]["text"].as_str().unwrap();
            axum::Json(json!({"embedding": {"values": provider::hash::embed_text(t, dims)}}))
                .into_response()
        }
        "batchEmbedContents" => {
            let embs: Vec<Value> = body["requests"].as_array().unwrap().iter().map(|r| {
                json!({"values": provider::hash::embed_text(r["content"]["parts"][0]["text"].as_str().unwrap(), r["outputDimensionality"].as_u64().unwrap() as usize)})
            }).collect();
            axum::Json(json!({"embeddings": embs})).into_response()
        }
        _ => (StatusCode::NOT_FOUND, "{}").into_response(),
    }
}

fn lower_types(s: &Value) -> Value {
    match s {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        if k == "type" {
                            json!(v.as_str().unwrap_or("").to_lowercase())
                        } else {
                            lower_types(v)
                        },
                    )
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(lower_types).collect()),
        o => o.clone(),
    }
}

async fn spawn_mock() -> (String, Arc<Mock>) {
    let m = Arc::new(Mock::default());
    let app = Router::new()
        .route("/v1/{*rest}", post(mock_openai))
        .route("/gemini/models/{*rest}", post(mock_gemini))
        .with_state(m.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), m)
}

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

pub(crate) struct World {
    pub(crate) user: Uuid,
    pub(crate) org: Uuid,
    pub(crate) client: Uuid,
    pub(crate) project: Uuid,
    pub(crate) session: Uuid,
    pub(crate) outsider: Uuid,
}

pub(crate) async fn world(db: &Client) -> World {
    let user = Uuid::new_v4();
    let outsider = Uuid::new_v4();
    for (id, email) in [(user, "owner@a.test"), (outsider, "other@b.test")] {
        db.execute(
            "insert into auth.users (id, email) values ($1, $2)",
            &[&id, &email],
        )
        .await
        .unwrap();
    }
    let org: Uuid = db
        .query_one(
            "select org_id from team_members where user_id = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    let client: Uuid = db.query_one("insert into clients (org_id, name, status) values ($1, 'Acme Dental', 'client') returning id", &[&org]).await.unwrap().get(0);
    let project: Uuid = db.query_one("insert into projects (org_id, client_id, name) values ($1, $2, 'Automation') returning id", &[&org, &client]).await.unwrap().get(0);
    let session: Uuid = db.query_one("insert into wizard_sessions (org_id, project_id, user_id) values ($1, $2, $3) returning id", &[&org, &project, &user]).await.unwrap().get(0);
    World {
        user,
        org,
        client,
        project,
        session,
        outsider,
    }
}

pub(crate) fn openai_flags(mock: &str) -> Vec<String> {
    [
        "--ai-chat-provider",
        "openai",
        "--openai-base-url",
        &format!("{mock}/v1"),
        "--openai-api-key",
        "sk-test",
        "--ai-chat-model",
        "gpt-test",
        "--ai-embed-provider",
        "hash",
        "--ai-retry-base-ms",
        "5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

pub(crate) async fn app_with(t: &TestDb, flags: &[String]) -> TestApp {
    let f: Vec<&str> = flags.iter().map(String::as_str).collect();
    t.spawn_app_with(&f).await
}

pub(crate) async fn invoke(
    app: &TestApp,
    name: &str,
    token: Option<&str>,
    body: Value,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = app
        .http
        .post(app.url(&format!("/functions/v1/{name}")))
        .header("apikey", &app.anon_key)
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| json!({"raw": text}));
    (status, headers, v)
}

pub(crate) async fn count(db: &Client, sql: &str) -> i64 {
    db.query_one(&format!("select count(*) from ({sql}) q"), &[])
        .await
        .unwrap()
        .get(0)
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn wizard_pipeline_with_openai_writes_each_step_caches_and_logs() {
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    let (mock, m) = spawn_mock().await;
    let app = app_with(&t, &openai_flags(&mock)).await;
    let tok = app.user_token(w.user);
    let business = json!({"business_name": "Acme Dental", "industry": "healthcare", "description": "12 clinics, billing by hand"});

    let (s, _, v) = invoke(
        &app,
        "analyze-business",
        Some(&tok),
        json!({"session_id": w.session, "data": business}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["industry"], "healthcare");
    // The request as OpenAI expects it.
    let (path, hdrs, req) = m.last();
    assert_eq!(path, "/v1/chat/completions");
    assert_eq!(hdrs["authorization"], "Bearer sk-test");
    assert_eq!(req["model"], "gpt-test");
    assert_eq!(req["response_format"]["type"], "json_schema");
    assert_eq!(req["response_format"]["json_schema"]["strict"], true);
    assert_eq!(
        req["response_format"]["json_schema"]["schema"]["additionalProperties"],
        false
    );
    assert_eq!(req["messages"][0]["role"], "system");
    assert!(req["messages"][1]["content"]
        .as_str()
        .unwrap()
        .contains("billing by hand"));

    for (name, step) in [
        ("generate-diagnostics", 2),
        ("recommend-systems", 3),
        ("assess-readiness", 4),
    ] {
        let (s, _, v) = invoke(&app, name, Some(&tok), json!({"session_id": w.session})).await;
        assert_eq!(s, 200, "{name}: {v}");
        assert_eq!(v["step"], step);
    }
    let (s, _, v) = invoke(
        &app,
        "generate-roadmap",
        Some(&tok),
        json!({"project_id": w.project}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["phases"].as_array().unwrap().len(), 2);
    let phase = v["phases"][0]["id"].as_str().unwrap().to_string();
    let (s, _, v) = invoke(
        &app,
        "generate-tasks",
        Some(&tok),
        json!({"phase_id": phase}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["tasks"].as_array().unwrap().len(), 2);

    // Database effects.
    let steps: Vec<String> = db
        .query(
            "select screen_id from wizard_answers where session_id = $1 order by step_number",
            &[&w.session],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(steps, ["step-1", "step-2", "step-3", "step-4", "step-5"]);
    let r = db.query_one("select current_step, wizard_completed_at is not null from wizard_sessions where id = $1", &[&w.session]).await.unwrap();
    assert_eq!((r.get::<_, i32>(0), r.get::<_, bool>(1)), (5, true));
    assert_eq!(
        count(
            &db,
            &format!(
                "select 1 from project_systems where project_id = '{}' and is_recommended",
                w.project
            )
        )
        .await,
        1
    );
    let r = db.query_one("select version, is_active, (metrics->>'readiness_score')::int from context_snapshots where project_id = $1", &[&w.project]).await.unwrap();
    assert_eq!(
        (r.get::<_, i32>(0), r.get::<_, bool>(1), r.get::<_, i32>(2)),
        (1, true, 72)
    );
    assert_eq!(
        count(
            &db,
            "select 1 from roadmaps r join roadmap_phases p on p.roadmap_id = r.id"
        )
        .await,
        2
    );
    let statuses: Vec<String> = db
        .query("select distinct status from tasks where ai_generated", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(statuses, ["todo"]);
    let r = db.query_one("select count(*), sum(input_tokens)::int, sum(output_tokens)::int, bool_and(success) from ai_run_logs where provider = 'openai'", &[]).await.unwrap();
    assert_eq!(
        (
            r.get::<_, i64>(0),
            r.get::<_, i32>(1),
            r.get::<_, i32>(2),
            r.get::<_, bool>(3)
        ),
        (6, 66, 42, true)
    );
    // A roadmap exists for the active snapshot: a second one is refused.
    let (s, _, v) = invoke(
        &app,
        "generate-roadmap",
        Some(&tok),
        json!({"project_id": w.project}),
    )
    .await;
    assert_eq!(s, 409, "{v}");

    // Cache: the same request again costs no provider call, and is logged as a hit.
    let calls = m.chat_calls();
    let (s, _, v) = invoke(
        &app,
        "analyze-business",
        Some(&tok),
        json!({"session_id": w.session, "data": business}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(m.chat_calls(), calls);
    assert_eq!(
        count(&db, "select 1 from ai_cache where hit_count = 1").await,
        1
    );
    assert_eq!(count(&db, "select 1 from ai_run_logs where cache_hit and agent_name = 'analyze-business' and input_tokens = 0").await, 1);
    // A cached readiness still versions the snapshot.
    let (s, _, v) = invoke(
        &app,
        "assess-readiness",
        Some(&tok),
        json!({"session_id": w.session}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["snapshot"]["version"], 2);
    let active: Vec<i32> = db
        .query(
            "select version from context_snapshots where project_id = $1 and is_active",
            &[&w.project],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(active, [2]);
}

#[tokio::test]
async fn gemini_wire_format_streaming_and_embeddings() {
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    let (mock, m) = spawn_mock().await;
    let flags: Vec<String> = [
        "--ai-chat-provider",
        "gemini",
        "--gemini-api-key",
        "g-key",
        "--gemini-base-url",
        &format!("{mock}/gemini"),
        "--ai-chat-model",
        "gemini-test",
        "--ai-embed-provider",
        "gemini",
        "--ai-embed-model",
        "embed-test",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let app = app_with(&t, &flags).await;
    let tok = app.user_token(w.user);

    let (s, _, v) = invoke(
        &app,
        "analyze-business",
        Some(&tok),
        json!({"session_id": w.session, "data": {"name": "Acme"}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (path, hdrs, req) = m.last();
    assert_eq!(path, "/gemini/models/gemini-test:generateContent");
    assert_eq!(hdrs["x-goog-api-key"], "g-key");
    assert_eq!(
        req["generationConfig"]["responseMimeType"],
        "application/json"
    );
    assert_eq!(req["generationConfig"]["responseSchema"]["type"], "OBJECT");
    assert!(req["generationConfig"]["responseSchema"]
        .get("additionalProperties")
        .is_none());
    assert!(req["systemInstruction"]["parts"][0]["text"]
        .as_str()
        .unwrap()
        .contains("consultant"));
    let r = db
        .query_one(
            "select provider, model_name, input_tokens, output_tokens from ai_run_logs",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            r.get::<_, i32>(2),
            r.get::<_, i32>(3)
        ),
        ("gemini".into(), "gemini-test".into(), 13, 5)
    );

    // Streaming over SSE.
    let resp = app
        .http
        .post(app.url("/functions/v1/intelligence-stream"))
        .header("apikey", &app.anon_key)
        .bearer_auth(&tok)
        .json(&json!({"question": "How are we doing?", "project_id": w.project}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let body = resp.text().await.unwrap();
    assert!(
        body.contains(r#""text":"All ""#) && body.contains(r#""type":"done""#),
        "{body}"
    );
    assert!(m.last().0.ends_with(":streamGenerateContent?alt=sse"));
    // The run is logged once the stream has ended, on the server's schedule.
    wait_for(&db, "select 1 from ai_run_logs where agent_name = 'intelligence-stream' and success and output_tokens = 2", 1).await;

    // Embeddings: one text → embedContent, several → batchEmbedContents, at the column's size.
    let (s, _, v) = invoke(
        &app,
        "embed",
        Some(&tok),
        json!({"text": "invoice automation"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["embeddings"][0].as_array().unwrap().len(), 768);
    assert_eq!(m.last().2["outputDimensionality"], 768);
    let (s, _, v) = invoke(
        &app,
        "embed",
        Some(&tok),
        json!({"texts": ["a", "b"], "target": "crm_interactions"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["embeddings"].as_array().unwrap().len(), 2);
    assert_eq!(v["embeddings"][1].as_array().unwrap().len(), 1536);
    assert!(m.last().0.ends_with("embed-test:batchEmbedContents"));
}

#[tokio::test]
async fn auth_validation_isolation_and_configuration_errors() {
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    let (mock, m) = spawn_mock().await;
    let app = app_with(&t, &openai_flags(&mock)).await;
    let tok = app.user_token(w.user);
    let body = json!({"session_id": w.session, "data": {"name": "x"}});

    let (s, _, v) = invoke(&app, "analyze-business", None, body.clone()).await;
    assert_eq!((s.as_u16(), v["msg"].as_str()), (401, Some("Invalid JWT")));
    let anon = app.anon_key.clone();
    let (s, _, _) = invoke(&app, "analyze-business", Some(&anon), body.clone()).await;
    assert_eq!(s, 401);
    let (s, _, _) = invoke(
        &app,
        "analyze-business",
        Some(&app.service_role_key.clone()),
        body.clone(),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _, v) = invoke(
        &app,
        "analyze-business",
        Some(&tok),
        json!({"data": {"name": "x"}}),
    )
    .await;
    assert_eq!((s.as_u16(), v["field"].as_str()), (400, Some("session_id")));
    let (s, _, v) = invoke(
        &app,
        "analyze-business",
        Some(&tok),
        json!({"session_id": "nope", "data": {}}),
    )
    .await;
    assert_eq!((s.as_u16(), v["field"].as_str()), (400, Some("session_id")));
    let (s, _, v) = invoke(
        &app,
        "analyze-business",
        Some(&tok),
        json!({"session_id": w.session}),
    )
    .await;
    assert_eq!((s.as_u16(), v["field"].as_str()), (400, Some("data")));
    let (s, _, v) = invoke(
        &app,
        "search",
        Some(&tok),
        json!({"query": "x", "match_count": 500}),
    )
    .await;
    assert_eq!(
        (s.as_u16(), v["field"].as_str()),
        (400, Some("match_count"))
    );
    let (s, _, v) = invoke(&app, "no-such-function", Some(&tok), json!({})).await;
    assert_eq!((s.as_u16(), v["code"].as_str()), (404, Some("not_found")));

    // A member of another org is refused and nothing is spent or written.
    let other = app.user_token(w.outsider);
    for (name, body) in [
        ("analyze-business", body.clone()),
        ("generate-roadmap", json!({"project_id": w.project})),
        ("crm-intelligence", json!({"client_id": w.client})),
        ("project-monitor", json!({"project_id": w.project})),
        ("search", json!({"query": "x", "org_id": w.org})),
    ] {
        let (s, _, v) = invoke(&app, name, Some(&other), body).await;
        assert_eq!(s, 404, "{name}: {v}");
        assert!(v["error"].is_string());
    }
    assert_eq!(m.chat_calls(), 0);
    assert_eq!(count(&db, "select 1 from wizard_answers").await, 0);

    // No chat model configured: 503 naming the setting.
    let t2 = TestDb::new().await;
    let db2 = t2.superuser().await;
    let w2 = world(&db2).await;
    let bare = t2.spawn_app_with(&["--ai-chat-provider", "none"]).await;
    let (s, _, v) = invoke(
        &bare,
        "analyze-business",
        Some(&bare.user_token(w2.user)),
        json!({"session_id": w2.session, "data": {"a": 1}}),
    )
    .await;
    assert_eq!(s, 503, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("GEMINI_API_KEY"),
        "{v}"
    );
    // ... while embedding works offline with `hash`.
    let (s, _, v) = invoke(
        &bare,
        "embed",
        Some(&bare.user_token(w2.user)),
        json!({"text": "hello"}),
    )
    .await;
    assert_eq!(
        (s.as_u16(), v["provider"].as_str(), v["lexical"].as_bool()),
        (200, Some("hash"), Some(true))
    );
}

#[tokio::test]
async fn malformed_model_output_is_502_and_writes_nothing() {
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    let (mock, m) = spawn_mock().await;
    let app = app_with(&t, &openai_flags(&mock)).await;
    let tok = app.user_token(w.user);
    m.junk.store(true, Ordering::SeqCst);
    let (s, _, v) = invoke(
        &app,
        "analyze-business",
        Some(&tok),
        json!({"session_id": w.session, "data": {"name": "x"}}),
    )
    .await;
    assert_eq!(
        (s.as_u16(), v["code"].as_str()),
        (502, Some("invalid_model_output")),
        "{v}"
    );
    let (s, _, _) = invoke(
        &app,
        "crm-intelligence",
        Some(&tok),
        json!({"client_id": w.client}),
    )
    .await;
    assert_eq!(s, 502);
    assert_eq!(count(&db, "select 1 from wizard_answers").await, 0);
    assert_eq!(
        count(
            &db,
            "select 1 from activities where activity_type = 'system'"
        )
        .await,
        0
    );
    assert_eq!(count(&db, "select 1 from ai_cache").await, 0);
    assert_eq!(
        count(
            &db,
            "select 1 from ai_run_logs where not success and error_message like '%invalid answer%'"
        )
        .await,
        2
    );
    let health: i32 = db
        .query_one(
            "select health_score from clients where id = $1",
            &[&w.client],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(health, 50);
    // Healthy again: the roadmap path writes roadmap and phases together.
    m.junk.store(false, Ordering::SeqCst);
    db.execute(
        "select create_context_snapshot($1, 'ctx', '{}')",
        &[&w.project],
    )
    .await
    .unwrap();
    m.junk.store(true, Ordering::SeqCst);
    let (s, _, _) = invoke(
        &app,
        "generate-roadmap",
        Some(&tok),
        json!({"project_id": w.project}),
    )
    .await;
    assert_eq!(s, 502);
    assert_eq!(
        count(&db, "select 1 from roadmaps").await
            + count(&db, "select 1 from roadmap_phases").await,
        0
    );
}

#[tokio::test]
async fn rate_limit_trips_at_the_limit_and_retries_honour_429() {
    // The limit is per UTC clock hour: do not straddle one.
    crate::functions_security::avoid_period_boundary().await;
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    let (mock, m) = spawn_mock().await;
    let mut flags = openai_flags(&mock);
    flags.extend(["--ai-rate-limit-per-hour".to_string(), "2".to_string()]);
    let app = app_with(&t, &flags).await;
    let tok = app.user_token(w.user);
    // The provider is busy once: the call is retried after Retry-After and succeeds.
    m.busy.store(1, Ordering::SeqCst);
    let (s, _, v) = invoke(
        &app,
        "analyze-business",
        Some(&tok),
        json!({"session_id": w.session, "data": {"n": 1}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(m.chat_calls(), 2);
    let (s, _, _) = invoke(
        &app,
        "analyze-business",
        Some(&tok),
        json!({"session_id": w.session, "data": {"n": 2}}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, h, v) = invoke(
        &app,
        "analyze-business",
        Some(&tok),
        json!({"session_id": w.session, "data": {"n": 3}}),
    )
    .await;
    assert_eq!(
        (s.as_u16(), v["code"].as_str()),
        (429, Some("rate_limited")),
        "{v}"
    );
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry));
    assert_eq!(m.chat_calls(), 3);
    // A cached answer is still served (it costs nothing).
    let (s, _, _) = invoke(
        &app,
        "analyze-business",
        Some(&tok),
        json!({"session_id": w.session, "data": {"n": 1}}),
    )
    .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn crm_intelligence_project_monitor_and_openai_stream() {
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    db.execute("insert into crm_interactions (org_id, client_id, type, subject, content) values ($1, $2, 'call', 'Kickoff', 'They loved the demo')", &[&w.org, &w.client]).await.unwrap();
    let (mock, m) = spawn_mock().await;
    let app = app_with(&t, &openai_flags(&mock)).await;
    let tok = app.user_token(w.user);
    let (s, _, v) = invoke(
        &app,
        "crm-intelligence",
        Some(&tok),
        json!({"client_id": w.client}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(m.last().2["messages"][1]["content"]
        .as_str()
        .unwrap()
        .contains("They loved the demo"));
    let health: i32 = db
        .query_one(
            "select health_score from clients where id = $1",
            &[&w.client],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(health, 81);
    let (s, _, v) = invoke(
        &app,
        "project-monitor",
        Some(&tok),
        json!({"project_id": w.project}),
    )
    .await;
    assert_eq!(
        (s.as_u16(), v["result"]["status"].as_str()),
        (200, Some("at_risk")),
        "{v}"
    );
    assert_eq!(
        count(
            &db,
            "select 1 from activities where activity_type = 'system'"
        )
        .await,
        2
    );

    let resp = app
        .http
        .post(app.url("/functions/v1/intelligence-stream"))
        .header("apikey", &app.anon_key)
        .bearer_auth(&tok)
        .json(&json!({"question": "Summarise the pipeline"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    let text: String = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|e| e["type"] == "delta")
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, "Projects look healthy.");
    assert_eq!(m.last().2["stream"], true);
}

/// A provider that never answers: a worker using it holds its claimed jobs until it is stopped.
struct Stuck;
impl Provider for Stuck {
    fn name(&self) -> &'static str {
        "stuck"
    }
    fn model(&self) -> &str {
        "stuck"
    }
    fn chat<'a>(
        &'a self,
        _: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        futures::future::pending().boxed()
    }
    fn chat_stream<'a>(
        &'a self,
        _: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatStream, ProviderError>> {
        futures::future::pending().boxed()
    }
    fn embed<'a>(
        &'a self,
        _: &'a [String],
        _: usize,
    ) -> BoxFuture<'a, Result<Embeddings, ProviderError>> {
        futures::future::pending().boxed()
    }
}

/// The hash embedder, held at the gate: `entered` fires when a batch reaches it, and it
/// embeds once `release` has a permit.
struct Gated {
    inner: provider::HashEmbedder,
    entered: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Semaphore>,
}
impl Provider for Gated {
    fn name(&self) -> &'static str {
        "gated"
    }
    fn model(&self) -> &str {
        self.inner.model()
    }
    fn chat<'a>(
        &'a self,
        _: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        futures::future::pending().boxed()
    }
    fn chat_stream<'a>(
        &'a self,
        _: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatStream, ProviderError>> {
        futures::future::pending().boxed()
    }
    fn embed<'a>(
        &'a self,
        texts: &'a [String],
        dimensions: usize,
    ) -> BoxFuture<'a, Result<Embeddings, ProviderError>> {
        async move {
            self.entered.notify_one();
            let _permit = self.release.acquire().await;
            self.inner.embed(texts, dimensions).await
        }
        .boxed()
    }
}

async fn insert_docs(db: &Client, w: &World, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for i in 0..n {
        let text = format!("Document {i} about topic{i} and the shared agency handbook");
        let id: Uuid = db.query_one("insert into documents (org_id, project_id, name, content_text) values ($1, $2, $3, $4) returning id",
            &[&w.org, &w.project, &format!("doc-{i}"), &text]).await.unwrap().get(0);
        ids.push(id);
    }
    ids
}

/// Polls until `sql` yields `want` rows (30 s at most).
pub(crate) async fn wait_for(db: &Client, sql: &str, want: i64) {
    wait::until(
        Duration::from_secs(30),
        &format!("{want} rows of {sql}"),
        || async move { count(db, sql).await == want },
    )
    .await
}

#[tokio::test]
async fn a_worker_asked_to_stop_finishes_the_batch_it_is_embedding_then_ends() {
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    insert_docs(&db, &w, 3).await;
    let entered = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let gated: provider::DynProvider = Arc::new(Gated {
        inner: provider::HashEmbedder::new("hash-v1".into()),
        entered: entered.clone(),
        release: release.clone(),
    });
    let cfg = WorkerConfig {
        batch_size: 10,
        poll: Duration::from_millis(20),
        lease_secs: 300,
        max_attempts: 5,
        retry_base_secs: 0.1,
        embed_budget_chars_per_day: 0,
    };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut worker = spawn_embedding_worker_until(t.db(), gated, cfg, stop_rx);
    tokio::time::timeout(Duration::from_secs(60), entered.notified())
        .await
        .expect("the worker reaches the provider");
    // Asked to stop (a SIGTERM) while its batch is at the provider.
    stop.send(true).unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut worker)
            .await
            .is_err(),
        "the worker must not end before its batch"
    );
    release.add_permits(1);
    tokio::time::timeout(Duration::from_secs(60), worker)
        .await
        .expect("the worker ends after its batch")
        .unwrap();
    // The batch was finished, not abandoned as 'running' for a later lease expiry.
    assert_eq!(
        count(
            &db,
            "select 1 from private.embedding_jobs where status = 'done'"
        )
        .await,
        3
    );
    assert_eq!(
        count(&db, "select 1 from documents where embedding is not null").await,
        3
    );
}

#[tokio::test]
async fn embedding_jobs_survive_a_worker_stop_and_search_ranks_own_text_first() {
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    insert_docs(&db, &w, 12).await;
    db.execute("insert into crm_interactions (org_id, client_id, type, subject, content) values ($1, $2, 'email', 'Renewal', 'Renewal of the support contract')", &[&w.org, &w.client]).await.unwrap();
    assert_eq!(
        count(
            &db,
            "select 1 from private.embedding_jobs where status = 'pending'"
        )
        .await,
        13
    );

    // A worker claims a batch, then the server "stops" mid-batch.
    let cfg = WorkerConfig {
        batch_size: 5,
        poll: Duration::from_millis(20),
        lease_secs: 1,
        max_attempts: 5,
        retry_base_secs: 0.1,
        embed_budget_chars_per_day: 0,
    };
    let stuck = spawn_embedding_worker(t.db(), Arc::new(Stuck), cfg.clone());
    wait_for(
        &db,
        "select 1 from private.embedding_jobs where status = 'running'",
        5,
    )
    .await;
    stuck.abort();
    let _ = stuck.await;
    assert_eq!(
        count(&db, "select 1 from documents where embedding is not null").await,
        0
    );

    // After the lease expires, a new worker finishes every job.
    let hash: provider::DynProvider = Arc::new(provider::HashEmbedder::new("hash-v1".into()));
    let worker = spawn_embedding_worker(t.db(), hash, cfg);
    wait_for(
        &db,
        "select 1 from private.embedding_jobs where status = 'done'",
        13,
    )
    .await;
    worker.abort();
    assert_eq!(
        count(
            &db,
            "select 1 from documents where embedding is not null and embedded_at is not null"
        )
        .await,
        12
    );
    assert_eq!(
        count(
            &db,
            "select 1 from crm_interactions where vector_dims(embedding) = 1536"
        )
        .await,
        1
    );

    // Editing the text queues a new job and clears the stale vector.
    db.execute(
        "update documents set content_text = 'rewritten' where name = 'doc-3'",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        count(&db, "select 1 from documents where embedding is null").await,
        1
    );

    // Hybrid search: a document's own text ranks it first.
    let app = t.spawn_app_with(&["--ai-chat-provider", "none"]).await;
    let tok = app.user_token(w.user);
    let (s, _, v) = invoke(
        &app,
        "search",
        Some(&tok),
        json!({"query": "Document 7 about topic7 and the shared agency handbook"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["documents"][0]["name"], "doc-7", "{v}");
    assert_eq!(v["interactions"].as_array().unwrap().len(), 1);
    // ... and the outsider sees nothing.
    let (s, _, v) = invoke(
        &app,
        "search",
        Some(&app.user_token(w.outsider)),
        json!({"query": "handbook"}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["documents"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn backfill_embeds_every_row_and_failures_back_off() {
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    insert_docs(&db, &w, 30).await;
    // Rows from before the pipeline existed: no jobs.
    db.execute("delete from private.embedding_jobs", &[])
        .await
        .unwrap();

    // A failing provider: jobs go back to pending with backoff and the error kept.
    let (mock, m) = spawn_mock().await;
    m.busy.store(usize::MAX / 2, Ordering::SeqCst);
    let failing: provider::DynProvider = Arc::new(provider::OpenAi::new(
        &format!("{mock}/v1"),
        None,
        "emb".into(),
        provider::RetryPolicy {
            timeout: Duration::from_secs(5),
            max_retries: 0,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
        },
    ));
    let cfg = WorkerConfig {
        batch_size: 8,
        poll: Duration::from_millis(20),
        lease_secs: 60,
        max_attempts: 2,
        retry_base_secs: 0.05,
        embed_budget_chars_per_day: 0,
    };
    let mut seen = Vec::new();
    let r = backfill_with(&t.db(), failing.clone(), &cfg, |d, n| seen.push((d, n)))
        .await
        .unwrap();
    assert_eq!((r.queued, r.embedded), (30, 0));
    assert!(r.failed > 0);
    assert_eq!(
        count(
            &db,
            "select 1 from private.embedding_jobs where attempts >= 1 and last_error like '%429%'"
        )
        .await,
        30
    );
    // After max_attempts, jobs are failed, not retried forever: batches claim them again
    // once their backoff has passed, until every one has failed; then nothing is claimed.
    let (tdb, failing_ref, cfg_ref, su) = (&t, &failing, &cfg, &db);
    wait::until(
        Duration::from_secs(30),
        "every job failed after max_attempts",
        || async move {
            run_batch(&tdb.db(), failing_ref, cfg_ref).await.unwrap();
            count(
                su,
                "select 1 from private.embedding_jobs where status = 'failed'",
            )
            .await
                == 30
        },
    )
    .await;
    assert_eq!(
        run_batch(&t.db(), &failing, &cfg).await.unwrap().claimed,
        0,
        "failed jobs are not claimed again"
    );

    // Backfill with hash: every row embedded, progress reported up to the total.
    seen.clear();
    let hash: provider::DynProvider = Arc::new(provider::HashEmbedder::new("hash-v1".into()));
    let r = backfill_with(&t.db(), hash, &cfg, |d, n| seen.push((d, n)))
        .await
        .unwrap();
    assert_eq!((r.queued, r.embedded, r.remaining), (30, 30, 0));
    assert_eq!(seen.first(), Some(&(0, 30)));
    assert_eq!(seen.last(), Some(&(30, 30)));
    assert_eq!(
        count(
            &db,
            "select 1 from documents where vector_dims(embedding) = 768"
        )
        .await,
        30
    );
}

#[tokio::test]
async fn assistant_answers_with_citations_from_hybrid_search() {
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    let ids = insert_docs(&db, &w, 3).await;
    let hash: provider::DynProvider = Arc::new(provider::HashEmbedder::new("hash-v1".into()));
    agencyflow_functions::backfill(&t.db(), hash, |_, _| {})
        .await
        .unwrap();
    let (mock, m) = spawn_mock().await;
    let app = app_with(&t, &openai_flags(&mock)).await;
    let (s, _, v) = invoke(
        &app,
        "assistant",
        Some(&app.user_token(w.user)),
        json!({"question": "What is in topic1?"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let cited: Vec<&str> = v["citations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    // The model's first citation is a retrieved document; the made-up one is dropped.
    assert_eq!(cited.len(), 1, "{v}");
    assert!(ids.iter().any(|i| i.to_string() == cited[0]));
    assert!(m.last().2["messages"][1]["content"]
        .as_str()
        .unwrap()
        .contains("topic1"));
}

#[tokio::test]
async fn supabase_js_functions_invoke() {
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    let (mock, _m) = spawn_mock().await;
    let app = app_with(&t, &openai_flags(&mock)).await;
    // Passed to Node's process only: the test process's environment is shared by every test.
    let (token, session) = (app.user_token(w.user), w.session.to_string());
    app.run_node_test_with_env(
        "functions.test.js",
        &[
            ("FUNCTIONS_E2E_TOKEN", &token),
            ("FUNCTIONS_E2E_SESSION", &session),
        ],
    )
    .await;
}

/// Throughput of the whole pipeline with the `hash` provider: triggers queue the jobs, one
/// worker claims, embeds and writes them. Run with `-- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn bench_embedding_pipeline() {
    let t = TestDb::new().await;
    let db = t.superuser().await;
    let w = world(&db).await;
    let n: i64 = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    db.execute(
        "insert into documents (org_id, project_id, name, content_text)
         select $1, $2, 'doc ' || g, repeat('invoice automation for clinic ' || g || ' ', 40) from generate_series(1, $3::bigint) g",
        &[&w.org, &w.project, &n],
    )
    .await
    .unwrap();
    if std::env::var_os("BENCH_DROP_HNSW").is_some() {
        // Separates the cost of the HNSW index inserts from the pipeline's own.
        db.execute("drop index documents_embedding_idx", &[])
            .await
            .unwrap();
    }
    let hash: provider::DynProvider = Arc::new(provider::HashEmbedder::new("hash-v1".into()));
    let cfg = WorkerConfig {
        batch_size: 128,
        poll: Duration::from_millis(10),
        lease_secs: 300,
        max_attempts: 5,
        retry_base_secs: 1.0,
        embed_budget_chars_per_day: 0,
    };
    let started = std::time::Instant::now();
    let r = backfill_with(&t.db(), hash, &cfg, |_, _| {}).await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(r.embedded as i64, n);
    println!("embedding pipeline (hash, 768 dims, batch 128, 1 worker): {n} documents in {secs:.2}s = {:.0} rows/s", n as f64 / secs);
}
