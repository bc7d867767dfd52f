//! The five-step wizard: analyze-business (1), generate-diagnostics (2), recommend-systems (3),
//! assess-readiness (4, the next context snapshot), generate-roadmap (5, roadmap + phases),
//! and generate-tasks for a roadmap phase.
use agencyflow_db::ClaimsTxn;
use serde_json::{json, Value};
use uuid::Uuid;

use super::prompt_json;
use crate::ai::Run;
use crate::caller::{Caller, Input};
use crate::error::{model_write, FnError};
use crate::schema::{self, s};
use crate::FunctionsState;

const CONSULTANT: &str = "You are a senior consultant at an agency that designs and builds AI automation systems for small and medium businesses. Be concrete, practical and honest. Answer only with JSON that follows the given schema.";
const MAX_CONTEXT: usize = 12_000;

struct Session {
    id: Uuid,
    org_id: Uuid,
    project_id: Option<Uuid>,
    /// `{"step-1": {"data": ..., "ai_results": ...}, ...}`
    answers: Value,
}

async fn load_session(st: &FunctionsState, caller: &Caller, id: Uuid) -> Result<Session, FnError> {
    let mut tx = st.db().begin(&caller.tx().read_only(true)).await?;
    let row = tx
        .query_opt(
            "select s.id, s.org_id, s.project_id,
                    coalesce((select jsonb_object_agg(a.screen_id, jsonb_build_object('data', a.data, 'ai_results', a.ai_results))
                              from public.wizard_answers a where a.session_id = s.id), '{}'::jsonb)
             from public.wizard_sessions s where s.id = $1",
            &[&id],
        )
        .await?;
    tx.commit().await?;
    let r = row.ok_or_else(|| FnError::NotFound("wizard session not found".into()))?;
    Ok(Session {
        id: r.get(0),
        org_id: r.get(1),
        project_id: r.get(2),
        answers: r.get(3),
    })
}

/// Upserts the answer of `step` (keeping earlier `data` when none is given) and advances the
/// session to at least that step.
async fn save_step(
    tx: &mut ClaimsTxn,
    org_id: Uuid,
    session_id: Uuid,
    step: i32,
    data: Option<&Value>,
    ai: &Value,
) -> Result<Value, FnError> {
    let row = tx
        .query_opt(
            "with a as (
               insert into public.wizard_answers (org_id, session_id, screen_id, step_number, data, ai_results)
               values ($1, $2, 'step-' || $3::int, $3::int, coalesce($4::jsonb, '{}'::jsonb), $5::jsonb)
               on conflict (session_id, screen_id) do update
                 set data = coalesce($4::jsonb, public.wizard_answers.data), ai_results = excluded.ai_results
               returning *
             ), s as (
               update public.wizard_sessions set current_step = greatest(current_step, $3::int)
               where id = $2 returning id
             )
             select to_jsonb(a) - 'org_id', (select count(*) from s) from a",
            &[&org_id, &session_id, &step, &data, ai],
        )
        .await
        .map_err(model_write)?;
    let r =
        row.ok_or_else(|| FnError::Forbidden("not allowed to write this wizard session".into()))?;
    if r.get::<_, i64>(1) == 0 {
        return Err(FnError::Forbidden(
            "not allowed to update this wizard session".into(),
        ));
    }
    Ok(r.get(0))
}

fn step(answers: &Value, n: u8) -> Value {
    answers
        .get(format!("step-{n}"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Runs one wizard step: the model call, then the answer saved in one transaction.
async fn wizard_step(
    st: &FunctionsState,
    caller: &Caller,
    s: &Session,
    n: i32,
    data: Option<&Value>,
    run: Run,
) -> Result<Value, FnError> {
    let result = st.structured(run).await?;
    let mut tx = st.db().begin(&caller.tx()).await?;
    let answer = save_step(&mut tx, s.org_id, s.id, n, data, &result).await?;
    tx.commit().await?;
    Ok(json!({ "session_id": s.id, "step": n, "result": result, "answer": answer }))
}

pub(crate) async fn analyze_business(
    st: &FunctionsState,
    caller: &Caller,
    input: &Input,
) -> Result<Value, FnError> {
    let session_id = input.uuid("session_id")?;
    let data = input.object("data")?;
    let s = load_session(st, caller, session_id).await?;
    let schema = s::object(&[
        ("summary", s::text()),
        ("industry", s::label()),
        ("business_model", s::string()),
        ("strengths", s::strings()),
        ("challenges", s::strings()),
        (
            "opportunities",
            s::unique_array(s::text_up_to(s::MAX_ITEM), 1, 10, &[]),
        ),
    ]);
    let run = Run {
        agent: "analyze-business",
        org_id: s.org_id,
        project_id: s.project_id,
        system: CONSULTANT.into(),
        user: format!(
            "Wizard step 1. Analyse this business: summarise it, name its industry and business model, its strengths, its challenges, and where AI automation could help most.\n\nBusiness information:\n{}",
            prompt_json(&data, MAX_CONTEXT)
        ),
        schema,
    };
    wizard_step(st, caller, &s, 1, Some(&data), run).await
}

pub(crate) async fn generate_diagnostics(
    st: &FunctionsState,
    caller: &Caller,
    input: &Input,
) -> Result<Value, FnError> {
    let session_id = input.uuid("session_id")?;
    let data = input.opt_object("data")?;
    let s = load_session(st, caller, session_id).await?;
    if step(&s.answers, 1).is_null() {
        return Err(FnError::Conflict(
            "step 1 (analyze-business) has not been answered for this session".into(),
        ));
    }
    let finding = s::object(&[
        ("area", s::label()),
        ("finding", s::text()),
        ("severity", s::one_of(&["low", "medium", "high"])),
        ("recommendation", s::text()),
    ]);
    let schema = s::object(&[
        ("summary", s::text()),
        ("maturity_score", s::int_range(0, 100)),
        // The same finding twice (in the same area) is kept once.
        (
            "findings",
            s::unique_array(finding, 1, 12, &["area", "finding"]),
        ),
    ]);
    let run = Run {
        agent: "generate-diagnostics",
        org_id: s.org_id,
        project_id: s.project_id,
        system: CONSULTANT.into(),
        user: format!(
            "Wizard step 2. Diagnose the business's operations: where time and money are lost, what is manual, what is risky. Score its digital/AI maturity from 0 to 100.\n\nStep 1 (business and analysis):\n{}\n\nStep 2 answers:\n{}",
            prompt_json(&step(&s.answers, 1), MAX_CONTEXT),
            prompt_json(data.as_ref().unwrap_or(&step(&s.answers, 2)["data"]), MAX_CONTEXT)
        ),
        schema,
    };
    wizard_step(st, caller, &s, 2, data.as_ref(), run).await
}

pub(crate) async fn recommend_systems(
    st: &FunctionsState,
    caller: &Caller,
    input: &Input,
) -> Result<Value, FnError> {
    let session_id = input.uuid("session_id")?;
    let data = input.opt_object("data")?;
    let s = load_session(st, caller, session_id).await?;
    let mut tx = st.db().begin(&caller.tx().read_only(true)).await?;
    let catalogue: Value = tx
        .query_one(
            "select coalesce(jsonb_agg(jsonb_build_object('id', y.id, 'name', y.name, 'description', y.description) order by y.display_order, y.id), '[]'::jsonb)
             from public.systems y where y.is_active",
            &[],
        )
        .await?
        .get(0);
    tx.commit().await?;
    let ids: Vec<String> = catalogue
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["id"].as_str().map(str::to_string))
        .collect();
    if ids.is_empty() {
        return Err(FnError::Conflict("the systems catalogue is empty".into()));
    }
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let rec = s::object(&[
        ("system_id", s::one_of(&id_refs)),
        ("why_it_matters", s::text()),
        ("priority", s::one_of(&["high", "medium", "low"])),
    ]);
    // A system recommended twice is kept once (its first recommendation): the answer lists
    // project_systems rows, one per system.
    let schema = s::object(&[
        ("summary", s::text()),
        (
            "recommendations",
            s::unique_array(rec, 1, 6, &["system_id"]),
        ),
    ]);
    let run = Run {
        agent: "recommend-systems",
        org_id: s.org_id,
        project_id: s.project_id,
        system: CONSULTANT.into(),
        user: format!(
            "Wizard step 3. Recommend the AI systems from our catalogue that fit this business best (only ids from the catalogue), each with why it matters for them.\n\nCatalogue:\n{}\n\nEarlier steps:\n{}\n\nStep 3 answers:\n{}",
            prompt_json(&catalogue, MAX_CONTEXT),
            prompt_json(&json!({"step-1": step(&s.answers, 1), "step-2": step(&s.answers, 2)}), MAX_CONTEXT),
            prompt_json(data.as_ref().unwrap_or(&Value::Null), MAX_CONTEXT)
        ),
        schema,
    };
    let result = st.structured(run).await?;
    let mut tx = st.db().begin(&caller.tx()).await?;
    let answer = save_step(&mut tx, s.org_id, s.id, 3, data.as_ref(), &result).await?;
    let mut systems = Value::Array(vec![]);
    if let Some(project_id) = s.project_id {
        systems = tx
            .query_one(
                "with r as (
                   insert into public.project_systems (org_id, project_id, system_id, is_recommended, why_it_matters, recommendation_metadata)
                   select $1, $2, y.id, true, x ->> 'why_it_matters',
                          jsonb_build_object('priority', x ->> 'priority', 'source', 'recommend-systems', 'session_id', $3::uuid)
                   from jsonb_array_elements($4::jsonb) x
                   -- only systems still in the catalogue (it may have changed since the prompt)
                   join public.systems y on y.id = x ->> 'system_id' and y.is_active
                   on conflict (project_id, system_id) do update
                     set is_recommended = true, why_it_matters = excluded.why_it_matters,
                         recommendation_metadata = excluded.recommendation_metadata
                   returning *
                 )
                 select coalesce(jsonb_agg(to_jsonb(r) - 'org_id'), '[]'::jsonb) from r",
                &[&s.org_id, &project_id, &s.id, &result["recommendations"]],
            )
            .await
            .map_err(model_write)?
            .get(0);
    }
    tx.commit().await?;
    Ok(
        json!({ "session_id": s.id, "step": 3, "result": result, "answer": answer, "project_systems": systems }),
    )
}

pub(crate) async fn assess_readiness(
    st: &FunctionsState,
    caller: &Caller,
    input: &Input,
) -> Result<Value, FnError> {
    let session_id = input.uuid("session_id")?;
    let data = input.opt_object("data")?;
    let s = load_session(st, caller, session_id).await?;
    let project_id = s.project_id.ok_or_else(|| {
        FnError::Conflict("the wizard session has no project: set wizard_sessions.project_id before assessing readiness".into())
    })?;
    let schema = s::object(&[
        ("readiness_score", s::int_range(0, 100)),
        (
            "level",
            s::one_of(&["not_ready", "emerging", "ready", "advanced"]),
        ),
        ("summary", s::text()),
        ("strengths", s::strings()),
        ("gaps", s::strings()),
    ]);
    let run = Run {
        agent: "assess-readiness",
        org_id: s.org_id,
        project_id: Some(project_id),
        system: CONSULTANT.into(),
        user: format!(
            "Wizard step 4. Assess how ready this business is to adopt the recommended AI systems (data, processes, people, budget), with a score from 0 to 100.\n\nEarlier steps:\n{}\n\nStep 4 answers:\n{}",
            prompt_json(&json!({"step-1": step(&s.answers, 1), "step-2": step(&s.answers, 2), "step-3": step(&s.answers, 3)}), MAX_CONTEXT),
            prompt_json(data.as_ref().unwrap_or(&Value::Null), MAX_CONTEXT)
        ),
        schema,
    };
    let result = st.structured(run).await?;
    let metrics = json!({
        "readiness_score": result["readiness_score"],
        "readiness_level": result["level"],
        "strengths": result["strengths"],
        "gaps": result["gaps"],
        "analysis": step(&s.answers, 1)["ai_results"],
        "diagnostics": step(&s.answers, 2)["ai_results"],
        "recommendations": step(&s.answers, 3)["ai_results"],
        "session_id": s.id,
    });
    let summary = result["summary"].as_str().unwrap_or_default().to_string();
    let mut tx = st.db().begin(&caller.tx()).await?;
    let answer = save_step(&mut tx, s.org_id, s.id, 4, data.as_ref(), &result).await?;
    let snapshot: Value = tx
        .query_one(
            "select to_jsonb(c) - 'org_id' from public.create_context_snapshot($1, $2, $3) c",
            &[&project_id, &summary, &metrics],
        )
        .await
        .map_err(model_write)?
        .get(0);
    tx.commit().await?;
    Ok(
        json!({ "session_id": s.id, "step": 4, "result": result, "answer": answer, "snapshot": snapshot }),
    )
}

pub(crate) async fn generate_roadmap(
    st: &FunctionsState,
    caller: &Caller,
    input: &Input,
) -> Result<Value, FnError> {
    let project_id = input.uuid("project_id")?;
    let mut tx = st.db().begin(&caller.tx().read_only(true)).await?;
    let row = tx
        .query_opt(
            "select p.org_id, to_jsonb(p) - 'org_id',
                    (select to_jsonb(c) - 'org_id' from public.context_snapshots c where c.project_id = p.id and c.is_active),
                    (select r.id from public.roadmaps r join public.context_snapshots c on c.id = r.snapshot_id
                      where c.project_id = p.id and c.is_active),
                    (select w.id from public.wizard_sessions w where w.project_id = p.id order by w.created_at desc, w.id limit 1)
             from public.projects p where p.id = $1",
            &[&project_id],
        )
        .await?;
    tx.commit().await?;
    let r = row.ok_or_else(|| FnError::NotFound("project not found".into()))?;
    let org_id: Uuid = r.get(0);
    let project: Value = r.get(1);
    let snapshot: Option<Value> = r.get(2);
    let existing: Option<Uuid> = r.get(3);
    let session_id: Option<Uuid> = r.get(4);
    let snapshot = snapshot.ok_or_else(|| {
        FnError::Conflict(
            "the project has no active context snapshot: run assess-readiness first".into(),
        )
    })?;
    if existing.is_some() {
        return Err(FnError::Conflict(
            "the active context snapshot already has a roadmap: run assess-readiness to create a new snapshot".into(),
        ));
    }
    let snapshot_id = snapshot["id"]
        .as_str()
        .and_then(|x| Uuid::parse_str(x).ok())
        .ok_or_else(|| FnError::Internal("snapshot id".into()))?;
    let phase = s::object(&[
        ("title", s::label()),
        ("description", s::string()),
        ("outcomes", s::strings()),
    ]);
    let schema = s::object(&[
        ("total_duration", s::label()),
        (
            "roi_projection",
            s::object(&[
                ("summary", s::string()),
                ("estimated_annual_value_usd", s::number_range(0.0, 1e12)),
                ("payback_months", s::number_range(0.0, 1200.0)),
            ]),
        ),
        // Two phases of the same title are one phase.
        ("phases", s::unique_array(phase, 1, 8, &["title"])),
    ]);
    let run = Run {
        agent: "generate-roadmap",
        org_id,
        project_id: Some(project_id),
        system: CONSULTANT.into(),
        user: format!(
            "Wizard step 5. Plan the implementation roadmap for this project as ordered phases with outcomes, the total duration, and an ROI projection.\n\nProject:\n{}\n\nBusiness context (active snapshot):\n{}",
            prompt_json(&project, 4000),
            prompt_json(&snapshot, MAX_CONTEXT)
        ),
        schema,
    };
    let result = st.structured(run).await?;
    let mut tx = st.db().begin(&caller.tx()).await?;
    let row = tx
        .query_one(
            "with r as (
               insert into public.roadmaps (org_id, snapshot_id, total_duration, roi_projection)
               values ($1, $2, $3, $4) returning *
             ), ph as (
               insert into public.roadmap_phases (org_id, roadmap_id, title, description, order_index, outcomes)
               select $1, r.id, x.p ->> 'title', x.p ->> 'description', (x.ord - 1)::int, coalesce(x.p -> 'outcomes', '[]'::jsonb)
               from r, jsonb_array_elements($5::jsonb) with ordinality as x(p, ord)
               returning *
             )
             select (select to_jsonb(r) - 'org_id' from r),
                    (select coalesce(jsonb_agg(to_jsonb(ph) - 'org_id' order by ph.order_index), '[]'::jsonb) from ph)",
            &[&org_id, &snapshot_id, &result["total_duration"].as_str(), &result["roi_projection"], &result["phases"]],
        )
        .await
        .map_err(model_write)?;
    let roadmap: Value = row.get(0);
    let phases: Value = row.get(1);
    if let Some(sid) = session_id {
        save_step(&mut tx, org_id, sid, 5, None, &result).await?;
    }
    tx.commit().await?;
    Ok(
        json!({ "project_id": project_id, "result": result, "roadmap": roadmap, "phases": phases, "session_id": session_id }),
    )
}

pub(crate) async fn generate_tasks(
    st: &FunctionsState,
    caller: &Caller,
    input: &Input,
) -> Result<Value, FnError> {
    let phase_id = input.uuid("phase_id")?;
    let mut tx = st.db().begin(&caller.tx().read_only(true)).await?;
    let row = tx
        .query_opt(
            "select ph.org_id, c.project_id,
                    jsonb_build_object('title', ph.title, 'description', ph.description, 'outcomes', ph.outcomes, 'order_index', ph.order_index),
                    jsonb_build_object('summary', c.summary, 'total_duration', r.total_duration),
                    coalesce((select jsonb_agg(t.title order by t.created_at) from public.tasks t where t.phase_id = ph.id), '[]'::jsonb)
             from public.roadmap_phases ph
             join public.roadmaps r on r.id = ph.roadmap_id
             join public.context_snapshots c on c.id = r.snapshot_id
             where ph.id = $1",
            &[&phase_id],
        )
        .await?;
    tx.commit().await?;
    let r = row.ok_or_else(|| FnError::NotFound("roadmap phase not found".into()))?;
    let org_id: Uuid = r.get(0);
    let project_id: Uuid = r.get(1);
    let (phase, context, existing): (Value, Value, Value) = (r.get(2), r.get(3), r.get(4));
    let task = s::object(&[
        ("title", s::label()),
        ("description", s::string()),
        ("owner", s::one_of(&["client", "agency", "automated"])),
        ("priority", s::one_of(&["low", "medium", "high", "urgent"])),
        ("effort", s::one_of(&["s", "m", "l", "xl"])),
        ("tags", s::unique_array(s::text_up_to(50), 0, 10, &[])),
    ]);
    // The same task twice is one task.
    let schema = s::object(&[("tasks", s::unique_array(task, 1, 20, &["title"]))]);
    let run = Run {
        agent: "generate-tasks",
        org_id,
        project_id: Some(project_id),
        system: CONSULTANT.into(),
        user: format!(
            "Break this roadmap phase into concrete tasks (who owns each, priority, effort s/m/l/xl, tags). Do not repeat existing tasks.\n\nPhase:\n{}\n\nRoadmap context:\n{}\n\nExisting tasks:\n{}",
            prompt_json(&phase, 4000),
            prompt_json(&context, MAX_CONTEXT),
            prompt_json(&existing, 4000)
        ),
        schema,
    };
    let mut result = st.structured(run).await?;
    // Tasks the phase already has are not added again; an answer of nothing new is refused.
    let known: Vec<&str> = existing
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if let Some(tasks) = result["tasks"].as_array_mut() {
        tasks.retain(|t| {
            let title = t["title"].as_str().unwrap_or_default();
            !known.iter().any(|k| schema::same_text(k, title))
        });
        if tasks.is_empty() {
            return Err(FnError::BadModelOutput(
                "$.tasks: every task proposed already exists in this phase".into(),
            ));
        }
    }
    let mut tx = st.db().begin(&caller.tx()).await?;
    let tasks: Value = tx
        .query_one(
            "with t as (
               insert into public.tasks (org_id, phase_id, title, description, owner, priority, effort, tags, status, ai_generated)
               select $1, $2, x ->> 'title', x ->> 'description', x ->> 'owner', x ->> 'priority', x ->> 'effort',
                      coalesce(array(select jsonb_array_elements_text(x -> 'tags')), '{}'::text[]), 'todo', true
               from jsonb_array_elements($3::jsonb) x
               returning *
             )
             select coalesce(jsonb_agg(to_jsonb(t) - 'org_id' order by t.created_at, t.title), '[]'::jsonb) from t",
            &[&org_id, &phase_id, &result["tasks"]],
        )
        .await
        .map_err(model_write)?
        .get(0);
    tx.commit().await?;
    Ok(json!({ "phase_id": phase_id, "tasks": tasks }))
}
