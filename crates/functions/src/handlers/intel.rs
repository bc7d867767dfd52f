//! Intelligence: crm-intelligence (client health), project-monitor (delivery status),
//! assistant (answers with citations from hybrid search) and intelligence-stream (SSE).
use std::convert::Infallible;
use std::time::Instant;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use uuid::Uuid;

use super::platform::run_search;
use super::{prompt_json, resolve_org};
use crate::ai::{chat_costs, estimate_chat_tokens, provider_error, LogEntry, Run};
use crate::caller::{Caller, Input};
use crate::error::{model_write, FnError};
use crate::provider::{ChatRequest, StreamEvent, Usage};
use crate::schema::s;
use crate::FunctionsState;

const ANALYST: &str = "You are the analyst of an AI-automation agency. Base every statement on the data given; say so when the data is thin. Answer only with JSON that follows the given schema.";

pub(crate) async fn crm_intelligence(
    st: &FunctionsState,
    caller: &Caller,
    input: &Input,
) -> Result<Value, FnError> {
    let client_id = input.uuid("client_id")?;
    let mut tx = st.db().begin(&caller.tx().read_only(true)).await?;
    let row = tx
        .query_opt(
            "select c.org_id,
                    jsonb_build_object('name', c.name, 'industry', c.industry, 'status', c.status, 'pipeline_stage', c.pipeline_stage,
                                       'health_score', c.health_score, 'last_activity_at', c.last_activity_at, 'notes', c.notes),
                    coalesce((select jsonb_agg(x order by x.created_at desc) from (
                       select i.type, i.direction, i.subject, left(i.content, 1500) as content, i.summary, i.sentiment, i.created_at
                       from public.crm_interactions i where i.client_id = c.id order by i.created_at desc limit 20) x), '[]'::jsonb),
                    coalesce((select jsonb_agg(jsonb_build_object('title', d.title, 'status', d.status, 'amount_cents', d.amount_cents,
                                                                  'expected_close_date', d.expected_close_date))
                              from public.crm_deals d where d.client_id = c.id), '[]'::jsonb)
             from public.clients c where c.id = $1",
            &[&client_id],
        )
        .await?;
    tx.commit().await?;
    let r = row.ok_or_else(|| FnError::NotFound("client not found".into()))?;
    let org_id: Uuid = r.get(0);
    let (client, interactions, deals): (Value, Value, Value) = (r.get(1), r.get(2), r.get(3));
    let schema = s::object(&[
        ("health_score", s::int_range(0, 100)),
        ("summary", s::text()),
        ("next_best_action", s::text()),
        ("risks", s::strings()),
        (
            "sentiment_trend",
            s::one_of(&["improving", "stable", "declining"]),
        ),
    ]);
    let result = st
        .structured(Run {
            agent: "crm-intelligence",
            org_id,
            project_id: None,
            system: ANALYST.into(),
            user: format!(
                "Score this client's relationship health from 0 (lost) to 100 (thriving), summarise it, name the next best action and the risks.\n\nClient:\n{}\n\nDeals:\n{}\n\nRecent interactions (newest first):\n{}",
                prompt_json(&client, 3000),
                prompt_json(&deals, 3000),
                prompt_json(&interactions, 12_000)
            ),
            schema,
        })
        .await?;
    let mut tx = st.db().begin(&caller.tx()).await?;
    let updated = tx
        .query_opt(
            "update public.clients set health_score = $2 where id = $1 returning health_score",
            &[
                &client_id,
                // Validated as an integer from 0 to 100; `81.0` is one too (as_i64 is not).
                &(result["health_score"].as_f64().unwrap_or(50.0).round() as i32),
            ],
        )
        .await
        .map_err(model_write)?;
    if updated.is_none() {
        return Err(FnError::Forbidden(
            "your role cannot update this client".into(),
        ));
    }
    tx.execute(
        "insert into public.activities (org_id, client_id, activity_type, title, description, metadata, created_by)
         values ($1, $2, 'system', 'AI client health review', $3, $4, (select auth.uid()))",
        &[&org_id, &client_id, &result["summary"].as_str(), &json!({ "source": "crm-intelligence", "result": result })],
    )
    .await
    .map_err(model_write)?;
    tx.commit().await?;
    Ok(json!({ "client_id": client_id, "result": result }))
}

pub(crate) async fn project_monitor(
    st: &FunctionsState,
    caller: &Caller,
    input: &Input,
) -> Result<Value, FnError> {
    let project_id = input.uuid("project_id")?;
    let mut tx = st.db().begin(&caller.tx().read_only(true)).await?;
    let row = tx
        .query_opt(
            "with t as (
               select t.status, t.due_date, t.title, t.priority
               from public.tasks t
               join public.roadmap_phases ph on ph.id = t.phase_id
               join public.roadmaps r on r.id = ph.roadmap_id
               join public.context_snapshots c on c.id = r.snapshot_id and c.is_active
               where c.project_id = $1
             )
             select p.org_id, p.client_id,
                    jsonb_build_object('name', p.name, 'status', p.status, 'progress', p.progress, 'start_date', p.start_date,
                                       'end_date', p.end_date, 'current_phase', p.current_phase, 'today', current_date),
                    jsonb_build_object(
                      'total', (select count(*) from t),
                      'by_status', coalesce((select jsonb_object_agg(q.status, q.n) from (select status, count(*) as n from t group by status) q), '{}'::jsonb),
                      'overdue', coalesce((select jsonb_agg(jsonb_build_object('title', t.title, 'due_date', t.due_date, 'priority', t.priority))
                                           from t where t.due_date < current_date and t.status <> 'done'), '[]'::jsonb)),
                    coalesce((select jsonb_agg(jsonb_build_object('title', m.title, 'status', m.status, 'due_date', m.due_date) order by m.due_date)
                              from public.milestones m where m.project_id = p.id), '[]'::jsonb)
             from public.projects p where p.id = $1",
            &[&project_id],
        )
        .await?;
    tx.commit().await?;
    let r = row.ok_or_else(|| FnError::NotFound("project not found".into()))?;
    let org_id: Uuid = r.get(0);
    let client_id: Option<Uuid> = r.get(1);
    let (project, tasks, milestones): (Value, Value, Value) = (r.get(2), r.get(3), r.get(4));
    let schema = s::object(&[
        ("status", s::one_of(&["on_track", "at_risk", "delayed"])),
        ("reasons", s::unique_array(s::text(), 1, 10, &[])),
        ("recommendations", s::strings()),
    ]);
    let result = st
        .structured(Run {
            agent: "project-monitor",
            org_id,
            project_id: Some(project_id),
            system: ANALYST.into(),
            user: format!(
                "Judge whether this project is on_track, at_risk or delayed, with the reasons and what to do.\n\nProject:\n{}\n\nTasks:\n{}\n\nMilestones:\n{}",
                prompt_json(&project, 3000),
                prompt_json(&tasks, 8000),
                prompt_json(&milestones, 4000)
            ),
            schema,
        })
        .await?;
    let mut tx = st.db().begin(&caller.tx()).await?;
    let status = result["status"].as_str().unwrap_or("on_track");
    tx.execute(
        "insert into public.activities (org_id, client_id, project_id, activity_type, title, description, metadata, created_by)
         values ($1, $2, $3, 'system', 'Project monitor: ' || $4, $5, $6, (select auth.uid()))",
        &[&org_id, &client_id, &project_id, &status, &result["reasons"][0].as_str(), &json!({ "source": "project-monitor", "result": result })],
    )
    .await
    .map_err(model_write)?;
    tx.commit().await?;
    Ok(json!({ "project_id": project_id, "result": result }))
}

fn sources(documents: &Value, interactions: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for d in documents.as_array().into_iter().flatten() {
        out.push(json!({ "id": d["id"], "type": "document", "title": d["name"], "text": format!("{}\n{}", d["summary"].as_str().unwrap_or(""), d["content"].as_str().unwrap_or("")), "score": d["score"] }));
    }
    for i in interactions.as_array().into_iter().flatten() {
        out.push(json!({ "id": i["id"], "type": "interaction", "title": i["subject"], "text": format!("{}\n{}", i["summary"].as_str().unwrap_or(""), i["content"].as_str().unwrap_or("")), "score": i["score"] }));
    }
    out
}

pub(crate) async fn assistant(
    st: &FunctionsState,
    caller: &Caller,
    input: &Input,
) -> Result<Value, FnError> {
    let question = input.text("question", 4000)?;
    let count = input.int("match_count", 1, 20, 6)? as i32;
    let requested_org = input.opt_uuid("org_id")?;
    st.chat_provider()?;
    let org_id = resolve_org(st, caller, requested_org).await?;
    let (documents, interactions) = run_search(
        st,
        caller,
        &question,
        count,
        requested_org,
        org_id,
        "assistant",
        true,
        true,
    )
    .await?;
    let found = sources(&documents, &interactions);
    let listing: Vec<Value> = found
        .iter()
        .map(
            |x| json!({ "id": x["id"], "type": x["type"], "title": x["title"], "text": x["text"] }),
        )
        .collect();
    let citation = s::object(&[
        ("id", s::label()),
        ("type", s::one_of(&["document", "interaction"])),
    ]);
    // A source cited twice is cited once.
    let schema = s::object(&[
        ("answer", s::text_up_to(20_000)),
        (
            "citations",
            s::unique_array(citation, 0, 20, &["id", "type"]),
        ),
    ]);
    let result = st
        .structured(Run {
            agent: "assistant",
            org_id,
            project_id: None,
            system: "You answer questions for an AI-automation agency's team using only the sources given. Cite the ids of the sources you used. If the sources do not contain the answer, say so. Answer only with JSON that follows the given schema.".into(),
            user: format!("Question: {question}\n\nSources:\n{}", prompt_json(&Value::Array(listing), 24_000)),
            schema,
        })
        .await?;
    // Only sources that were retrieved can be cited.
    let citations: Vec<Value> = result["citations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            found
                .iter()
                .find(|x| x["id"] == c["id"] && x["type"] == c["type"])
                .map(|x| json!({ "id": x["id"], "type": x["type"], "title": x["title"], "score": x["score"] }))
        })
        .collect();
    Ok(
        json!({ "answer": result["answer"], "citations": citations, "sources_considered": found.len() }),
    )
}

pub(crate) async fn intelligence_stream(
    st: &FunctionsState,
    caller: &Caller,
    input: &Input,
) -> Result<Response, FnError> {
    let question = input
        .opt_text("question", 8000)?
        .or(input.opt_text("prompt", 8000)?)
        .ok_or_else(|| FnError::field("question", "question is required (a non-empty string)"))?;
    let project_id = input.opt_uuid("project_id")?;
    let chat = st.chat_provider()?;
    let (org_id, context) = match project_id {
        Some(pid) => {
            let mut tx = st.db().begin(&caller.tx().read_only(true)).await?;
            let row = tx
                .query_opt(
                    "select p.org_id, jsonb_build_object('project', jsonb_build_object('name', p.name, 'status', p.status, 'progress', p.progress),
                              'snapshot', (select jsonb_build_object('summary', c.summary, 'metrics', c.metrics) from public.context_snapshots c
                                           where c.project_id = p.id and c.is_active))
                     from public.projects p where p.id = $1",
                    &[&pid],
                )
                .await?;
            tx.commit().await?;
            let r = row.ok_or_else(|| FnError::NotFound("project not found".into()))?;
            (r.get::<_, Uuid>(0), Some(r.get::<_, Value>(1)))
        }
        None => (
            resolve_org(st, caller, input.opt_uuid("org_id")?).await?,
            None,
        ),
    };
    let user = match &context {
        Some(c) => format!("{question}\n\nContext:\n{}", prompt_json(c, 12_000)),
        None => question,
    };
    let req = ChatRequest {
        system: "You are the analyst of an AI-automation agency. Answer clearly and concisely in Markdown.".into(),
        user,
        schema_name: "answer".into(),
        schema: None,
        temperature: 0.4,
    };
    let estimate = estimate_chat_tokens(&req);
    let reservation = st.reserve_chat(org_id, estimate).await?;
    let started = Instant::now();
    let log = |usage: Usage, error: Option<String>| LogEntry {
        agent: "intelligence-stream",
        org_id,
        project_id,
        provider: chat.name(),
        model: chat.model(),
        usage,
        duration_ms: started.elapsed().as_millis(),
        error,
        cache_hit: false,
    };
    let mut upstream = match chat.chat_stream(&req).await {
        Ok(s) => s,
        Err(e) => {
            reservation.release().await;
            st.log_run(log(Usage::default(), Some(e.to_string()))).await;
            return Err(provider_error(e));
        }
    };
    let (mut tx, rx) = mpsc::channel::<Result<Event, Infallible>>(16);
    let st2 = st.clone();
    let (provider, model) = (chat.name(), chat.model().to_string());
    tokio::spawn(async move {
        let mut usage = Usage::default();
        let mut error = None;
        while let Some(ev) = upstream.next().await {
            let out = match ev {
                Ok(StreamEvent::Delta(text)) => json!({ "type": "delta", "text": text }),
                Ok(StreamEvent::Usage(u)) => {
                    usage = u;
                    continue;
                }
                Err(e) => {
                    error = Some(e.to_string());
                    json!({ "type": "error", "error": e.to_string(), "code": "provider_error" })
                }
            };
            if tx
                .send(Ok(Event::default().data(out.to_string())))
                .await
                .is_err()
            {
                error = Some("client went away".into());
                break;
            }
            if error.is_some() {
                break;
            }
        }
        if error.is_none() {
            let done = json!({ "type": "done", "usage": { "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens } });
            let _ = tx.send(Ok(Event::default().data(done.to_string()))).await;
        }
        drop(tx);
        // A stream that started has been paid for, to the tokens the provider counted (the
        // estimate when it reported none).
        reservation
            .settle(&chat_costs(org_id, usage, estimate))
            .await;
        st2.log_run(LogEntry {
            agent: "intelligence-stream",
            org_id,
            project_id,
            provider,
            model: &model,
            usage,
            duration_ms: started.elapsed().as_millis(),
            error,
            cache_hit: false,
        })
        .await;
    });
    Ok(Sse::new(rx)
        .keep_alive(KeepAlive::default())
        .into_response())
}
