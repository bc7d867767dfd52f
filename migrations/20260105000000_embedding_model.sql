-- Which model computed each embedding. Vectors of different models live in different spaces
-- (the `local` all-MiniLM-L6-v2 vectors are zero-padded to the column's size, `hash` ones are
-- lexical, Gemini/OpenAI ones are their own): comparing them is meaningless. The embedding
-- worker records `embedding_model` with every vector it writes; the vector search functions
-- accept a `filter` key `embedding_model` that keeps only vectors of that model (the
-- `search` function always passes the model that embedded the query). Rows embedded before
-- this migration have no model: they match no model filter, and `agencyflow embed backfill`
-- re-embeds them (and every row of another model) with the configured provider.
alter table public.documents add column if not exists embedding_model text;
alter table public.crm_interactions add column if not exists embedding_model text;

-- A text change clears the vector (handle_embedding_source_change): clear its model too.
create or replace function private.clear_stale_embedding_model()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.embedding is null then
    new.embedding_model := null;
  end if;
  return new;
end;
$$;
revoke all on function private.clear_stale_embedding_model() from public, anon, authenticated;

-- Named to sort after handle_embedding_source_change (before-triggers fire by name).
create trigger zz_clear_stale_embedding_model
  before insert or update on public.documents
  for each row execute function private.clear_stale_embedding_model();

create trigger zz_clear_stale_embedding_model
  before insert or update on public.crm_interactions
  for each row execute function private.clear_stale_embedding_model();

-- The vector search functions of 20260102001000, unchanged but for the `embedding_model`
-- filter key.
create or replace function public.match_documents(
  query_embedding extensions.vector(768),
  match_count integer default 10,
  filter jsonb default '{}'::jsonb
)
returns table (
  id uuid,
  org_id uuid,
  project_id uuid,
  wizard_session_id uuid,
  name text,
  category text,
  summary text,
  content_text text,
  storage_path text,
  created_at timestamptz,
  similarity double precision
)
language sql
stable
security invoker
set search_path = ''
set hnsw.iterative_scan = 'strict_order'
as $$
  select d.id, d.org_id, d.project_id, d.wizard_session_id, d.name, d.category, d.summary,
         d.content_text, d.storage_path, d.created_at,
         1 - (d.embedding operator(extensions.<=>) query_embedding) as similarity
  from public.documents d
  where d.embedding is not null
    and d.status = 'active'
    and (filter ->> 'org_id' is null or d.org_id = (filter ->> 'org_id')::uuid)
    and (filter ->> 'project_id' is null or d.project_id = (filter ->> 'project_id')::uuid)
    and (filter ->> 'wizard_session_id' is null or d.wizard_session_id = (filter ->> 'wizard_session_id')::uuid)
    and (filter ->> 'category' is null or d.category = filter ->> 'category')
    and (filter ->> 'embedding_model' is null or d.embedding_model = filter ->> 'embedding_model')
  order by d.embedding operator(extensions.<=>) query_embedding
  limit least(greatest(coalesce(match_count, 10), 0), 1000)
$$;

create or replace function public.match_crm_interactions(
  query_embedding extensions.vector(1536),
  match_count integer default 10,
  filter jsonb default '{}'::jsonb
)
returns table (
  id uuid,
  org_id uuid,
  client_id uuid,
  deal_id uuid,
  contact_id uuid,
  type public.crm_interaction_type,
  direction text,
  subject text,
  content text,
  summary text,
  sentiment public.crm_sentiment,
  created_at timestamptz,
  similarity double precision
)
language sql
stable
security invoker
set search_path = ''
set hnsw.iterative_scan = 'strict_order'
as $$
  select i.id, i.org_id, i.client_id, i.deal_id, i.contact_id, i.type, i.direction, i.subject,
         i.content, i.summary, i.sentiment, i.created_at,
         1 - (i.embedding operator(extensions.<=>) query_embedding) as similarity
  from public.crm_interactions i
  where i.embedding is not null
    and (filter ->> 'org_id' is null or i.org_id = (filter ->> 'org_id')::uuid)
    and (filter ->> 'client_id' is null or i.client_id = (filter ->> 'client_id')::uuid)
    and (filter ->> 'deal_id' is null or i.deal_id = (filter ->> 'deal_id')::uuid)
    and (filter ->> 'contact_id' is null or i.contact_id = (filter ->> 'contact_id')::uuid)
    and (filter ->> 'type' is null or i.type = (filter ->> 'type')::public.crm_interaction_type)
    and (filter ->> 'sentiment' is null or i.sentiment = (filter ->> 'sentiment')::public.crm_sentiment)
    and (filter ->> 'embedding_model' is null or i.embedding_model = filter ->> 'embedding_model')
    -- interactions of archived clients are archived with them
    and not exists (
      select 1 from public.clients c
      where c.org_id = i.org_id and c.id = i.client_id and c.status = 'archived')
  order by i.embedding operator(extensions.<=>) query_embedding
  limit least(greatest(coalesce(match_count, 10), 0), 1000)
$$;

-- Reciprocal-rank fusion of a full-text ranking (websearch syntax on documents.fts) and a
-- vector ranking: score = sum over lists of weight / (rrf_k + rank).
create or replace function public.hybrid_search_documents(
  query_text text,
  query_embedding extensions.vector(768),
  match_count integer default 10,
  full_text_weight double precision default 1,
  semantic_weight double precision default 1,
  rrf_k integer default 50,
  filter jsonb default '{}'::jsonb
)
returns table (
  id uuid,
  org_id uuid,
  project_id uuid,
  wizard_session_id uuid,
  name text,
  category text,
  summary text,
  content_text text,
  full_text_rank bigint,
  semantic_rank bigint,
  score double precision
)
language sql
stable
security invoker
set search_path = ''
set hnsw.iterative_scan = 'strict_order'
as $$
  with candidates as (
    select d.*
    from public.documents d
    where d.status = 'active'
      and (filter ->> 'org_id' is null or d.org_id = (filter ->> 'org_id')::uuid)
      and (filter ->> 'project_id' is null or d.project_id = (filter ->> 'project_id')::uuid)
      and (filter ->> 'wizard_session_id' is null or d.wizard_session_id = (filter ->> 'wizard_session_id')::uuid)
      and (filter ->> 'category' is null or d.category = filter ->> 'category')
  ),
  full_text as (
    select c.id,
           row_number() over (
             order by ts_rank_cd(c.fts, websearch_to_tsquery('english'::regconfig, query_text)) desc, c.id
           ) as rank_ix
    from candidates c
    where coalesce(btrim(query_text), '') <> ''
      and c.fts @@ websearch_to_tsquery('english'::regconfig, query_text)
    order by rank_ix
    limit least(greatest(coalesce(match_count, 10), 1), 100) * 2
  ),
  semantic as (
    select c.id,
           row_number() over (order by c.embedding operator(extensions.<=>) query_embedding, c.id) as rank_ix
    from candidates c
    where query_embedding is not null
      and c.embedding is not null
      and (filter ->> 'embedding_model' is null or c.embedding_model = filter ->> 'embedding_model')
    order by rank_ix
    limit least(greatest(coalesce(match_count, 10), 1), 100) * 2
  )
  select d.id, d.org_id, d.project_id, d.wizard_session_id, d.name, d.category, d.summary, d.content_text,
         ft.rank_ix as full_text_rank,
         s.rank_ix as semantic_rank,
         coalesce(1.0 / (rrf_k + ft.rank_ix), 0.0) * full_text_weight
           + coalesce(1.0 / (rrf_k + s.rank_ix), 0.0) * semantic_weight as score
  from full_text ft
  full outer join semantic s on s.id = ft.id
  join public.documents d on d.id = coalesce(ft.id, s.id)
  order by score desc, d.id
  limit least(greatest(coalesce(match_count, 10), 0), 100)
$$;
