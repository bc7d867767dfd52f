//! Hybrid search as the caller: documents through `hybrid_search_documents` (full text +
//! vector, reciprocal-rank fusion) and CRM interactions through `match_crm_interactions`
//! fused the same way with a full-text ranking. RLS limits both to the caller's orgs. Only
//! vectors of `model` (the model that embedded the query) are compared with the query's.
use agencyflow_db::ClaimsTxn;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::ai::vector_literal;
use crate::error::FnError;

pub const DOCUMENT_DIMENSIONS: usize = 768;
pub const INTERACTION_DIMENSIONS: usize = 1536;
/// The RRF constant (as `hybrid_search_documents`' default).
const RRF_K: i32 = 50;

pub async fn documents(
    tx: &mut ClaimsTxn,
    query: &str,
    embedding: &[f32],
    model: &str,
    count: i32,
    org_id: Option<Uuid>,
) -> Result<Value, FnError> {
    let filter = match org_id {
        Some(o) => json!({ "org_id": o, "embedding_model": model }),
        None => json!({ "embedding_model": model }),
    };
    let row = tx
        .query_one(
            "select coalesce(jsonb_agg(jsonb_build_object(
                       'id', h.id, 'org_id', h.org_id, 'project_id', h.project_id, 'wizard_session_id', h.wizard_session_id,
                       'name', h.name, 'category', h.category, 'summary', h.summary,
                       'content', left(h.content_text, 1000),
                       'full_text_rank', h.full_text_rank, 'semantic_rank', h.semantic_rank, 'score', h.score)
                     order by h.score desc, h.id), '[]'::jsonb)
             from public.hybrid_search_documents($1, $2::text::extensions.vector, $3::int, 1, 1, $4::int, $5::jsonb) h",
            &[&query, &vector_literal(embedding), &count, &RRF_K, &filter],
        )
        .await?;
    Ok(row.get(0))
}

pub async fn interactions(
    tx: &mut ClaimsTxn,
    query: &str,
    embedding: &[f32],
    model: &str,
    count: i32,
    org_id: Option<Uuid>,
) -> Result<Value, FnError> {
    let filter = match org_id {
        Some(o) => json!({ "org_id": o, "embedding_model": model }),
        None => json!({ "embedding_model": model }),
    };
    let row = tx
        .query_one(
            "with sem as (
               select m.id, row_number() over (order by m.similarity desc, m.id) as rank_ix
               from public.match_crm_interactions($2::text::extensions.vector, $3::int * 2, $5::jsonb) m
             ), ft as (
               select i.id,
                      row_number() over (order by ts_rank_cd(i.fts, websearch_to_tsquery('english'::regconfig, $1)) desc, i.id) as rank_ix
               from public.crm_interactions i
               where coalesce(btrim($1), '') <> ''
                 and i.fts @@ websearch_to_tsquery('english'::regconfig, $1)
                 and ($6::uuid is null or i.org_id = $6::uuid)
                 and not exists (select 1 from public.clients c where c.org_id = i.org_id and c.id = i.client_id and c.status = 'archived')
               order by rank_ix
               limit $3::int * 2
             ), fused as (
               select i.id, i.org_id, i.client_id, i.deal_id, i.type, i.direction, i.subject, i.summary,
                      left(i.content, 1000) as content, i.sentiment, i.created_at,
                      ft.rank_ix as full_text_rank, sem.rank_ix as semantic_rank,
                      coalesce(1.0 / ($4::int + ft.rank_ix), 0.0) + coalesce(1.0 / ($4::int + sem.rank_ix), 0.0) as score
               from ft full outer join sem on sem.id = ft.id
               join public.crm_interactions i on i.id = coalesce(ft.id, sem.id)
               order by score desc, i.id
               limit $3::int
             )
             select coalesce(jsonb_agg(to_jsonb(f) order by f.score desc, f.id), '[]'::jsonb) from fused f",
            &[&query, &vector_literal(embedding), &count, &RRF_K, &filter, &org_id],
        )
        .await?;
    Ok(row.get(0))
}
