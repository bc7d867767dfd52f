//! The functions. Each reads what it needs as the caller, asks the model, and writes its
//! results in one transaction as the caller.
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use uuid::Uuid;

use crate::caller::{authenticate, Caller, Input};
use crate::error::FnError;
use crate::FunctionsState;

mod intel;
mod platform;
mod wizard;

pub(crate) async fn call(
    st: &FunctionsState,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, FnError> {
    let caller = authenticate(headers, st.keys())?;
    let input = Input::parse(body)?;
    let json = |v: Value| Json(v).into_response();
    Ok(match name {
        "analyze-business" => json(wizard::analyze_business(st, &caller, &input).await?),
        "generate-diagnostics" => json(wizard::generate_diagnostics(st, &caller, &input).await?),
        "recommend-systems" => json(wizard::recommend_systems(st, &caller, &input).await?),
        "assess-readiness" => json(wizard::assess_readiness(st, &caller, &input).await?),
        "generate-roadmap" => json(wizard::generate_roadmap(st, &caller, &input).await?),
        "generate-tasks" => json(wizard::generate_tasks(st, &caller, &input).await?),
        "crm-intelligence" => json(intel::crm_intelligence(st, &caller, &input).await?),
        "project-monitor" => json(intel::project_monitor(st, &caller, &input).await?),
        "assistant" => json(intel::assistant(st, &caller, &input).await?),
        "intelligence-stream" => intel::intelligence_stream(st, &caller, &input).await?,
        "embed" => json(platform::embed(st, &caller, &input).await?),
        "search" => json(platform::search(st, &caller, &input).await?),
        _ => return Err(FnError::NotFound(format!("function `{name}` not found"))),
    })
}

/// The organization a request acts in: `org_id` from the body (the caller must be a member),
/// else the caller's first membership.
pub(crate) async fn resolve_org(
    st: &FunctionsState,
    caller: &Caller,
    org_id: Option<Uuid>,
) -> Result<Uuid, FnError> {
    let mut tx = st.db().begin(&caller.tx().read_only(true)).await?;
    let row = tx
        .query_opt(
            "select tm.org_id from public.team_members tm
             where tm.user_id = (select auth.uid()) and ($1::uuid is null or tm.org_id = $1)
             order by tm.created_at, tm.org_id limit 1",
            &[&org_id],
        )
        .await?;
    tx.commit().await?;
    match (row, org_id) {
        (Some(r), _) => Ok(r.get(0)),
        (None, Some(_)) => Err(FnError::NotFound(
            "organization not found, or you are not a member of it".into(),
        )),
        (None, None) => Err(FnError::Forbidden(
            "you are not a member of any organization".into(),
        )),
    }
}

/// JSON for a prompt: indented, and cut at `max` characters.
pub(crate) fn prompt_json(v: &Value, max: usize) -> String {
    let s = serde_json::to_string_pretty(v).unwrap_or_default();
    if s.chars().count() > max {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}\n…(truncated)")
    } else {
        s
    }
}
