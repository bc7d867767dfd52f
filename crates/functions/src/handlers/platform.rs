//! Platform functions: `embed` (text → vectors with the configured embedder) and `search`
//! (hybrid search over the caller's documents and CRM interactions).
use serde_json::{json, Value};

use super::resolve_org;
use crate::caller::{Caller, Input};
use crate::error::FnError;
use crate::search::{self, DOCUMENT_DIMENSIONS, INTERACTION_DIMENSIONS};
use crate::FunctionsState;

const MAX_TEXTS: usize = 100;
const MAX_TEXT_CHARS: usize = 32_000;

pub(crate) async fn embed(
    st: &FunctionsState,
    caller: &Caller,
    input: &Input,
) -> Result<Value, FnError> {
    let texts: Vec<String> = match (input.get("text"), input.get("texts")) {
        (Some(_), Some(_)) => {
            return Err(FnError::field(
                "texts",
                "give either text or texts, not both",
            ))
        }
        (Some(_), None) => vec![input.text("text", MAX_TEXT_CHARS)?],
        (None, Some(Value::Array(a))) if !a.is_empty() && a.len() <= MAX_TEXTS => a
            .iter()
            .map(|t| match t.as_str() {
                Some(s) if !s.trim().is_empty() && s.chars().count() <= MAX_TEXT_CHARS => {
                    Ok(s.to_string())
                }
                _ => Err(FnError::field(
                    "texts",
                    format!(
                        "texts must hold non-empty strings of at most {MAX_TEXT_CHARS} characters"
                    ),
                )),
            })
            .collect::<Result<_, _>>()?,
        (None, Some(_)) => {
            return Err(FnError::field(
                "texts",
                format!("texts must be an array of 1 to {MAX_TEXTS} strings"),
            ))
        }
        (None, None) => {
            return Err(FnError::field(
                "text",
                "text (a string) or texts (an array of strings) is required",
            ))
        }
    };
    let dimensions = match input.opt_text("target", 40)?.as_deref() {
        None | Some("documents") => DOCUMENT_DIMENSIONS,
        Some("crm_interactions") | Some("interactions") => INTERACTION_DIMENSIONS,
        Some(_) => {
            return Err(FnError::field(
                "target",
                "target must be documents or crm_interactions",
            ))
        }
    };
    let org_id = resolve_org(st, caller, input.opt_uuid("org_id")?).await?;
    let vectors = st.embed_for("embed", org_id, &texts, dimensions).await?;
    let p = st.embedder();
    Ok(json!({
        "embeddings": vectors,
        "dimensions": dimensions,
        "provider": p.name(),
        "model": p.model(),
        "lexical": p.name() == "hash",
    }))
}

pub(crate) async fn search(
    st: &FunctionsState,
    caller: &Caller,
    input: &Input,
) -> Result<Value, FnError> {
    let query = input.text("query", 2000)?;
    let count = input.int("match_count", 1, 50, 10)? as i32;
    let requested_org = input.opt_uuid("org_id")?;
    let (docs, inter) = match input.get("types") {
        None => (true, true),
        Some(Value::Array(a)) => {
            let names: Vec<&str> = a.iter().filter_map(Value::as_str).collect();
            if names.len() != a.len()
                || names.is_empty()
                || names
                    .iter()
                    .any(|n| !["documents", "interactions"].contains(n))
            {
                return Err(FnError::field(
                    "types",
                    "types must be a non-empty array of documents and/or interactions",
                ));
            }
            (
                names.contains(&"documents"),
                names.contains(&"interactions"),
            )
        }
        Some(_) => return Err(FnError::field("types", "types must be an array")),
    };
    let org_id = resolve_org(st, caller, requested_org).await?;
    let (documents, interactions) = run_search(
        st,
        caller,
        &query,
        count,
        requested_org,
        org_id,
        "search",
        docs,
        inter,
    )
    .await?;
    Ok(
        json!({ "query": query, "documents": documents, "interactions": interactions, "lexical": st.embedder().name() == "hash" }),
    )
}

/// Embeds the query for both columns and runs both searches in one read-only transaction.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_search(
    st: &FunctionsState,
    caller: &Caller,
    query: &str,
    count: i32,
    filter_org: Option<uuid::Uuid>,
    org_id: uuid::Uuid,
    agent: &str,
    docs: bool,
    inter: bool,
) -> Result<(Value, Value), FnError> {
    let q = vec![query.to_string()];
    let doc_vec = if docs {
        st.embed_for(agent, org_id, &q, DOCUMENT_DIMENSIONS)
            .await?
            .pop()
    } else {
        None
    };
    let int_vec = if inter {
        st.embed_for(agent, org_id, &q, INTERACTION_DIMENSIONS)
            .await?
            .pop()
    } else {
        None
    };
    // Stored vectors of another model are not comparable with the query's.
    let model = st.embedder().model().to_string();
    let mut tx = st.db().begin(&caller.tx().read_only(true)).await?;
    let documents = match &doc_vec {
        Some(v) => search::documents(&mut tx, query, v, &model, count, filter_org).await?,
        None => json!([]),
    };
    let interactions = match &int_vec {
        Some(v) => search::interactions(&mut tx, query, v, &model, count, filter_org).await?,
        None => json!([]),
    };
    tx.commit().await?;
    Ok((documents, interactions))
}
