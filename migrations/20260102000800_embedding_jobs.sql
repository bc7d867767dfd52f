-- The embedding job queue. Inserting a document or CRM interaction with text, or changing the
-- text an embedding was computed from, clears the stale embedding and queues one job here
-- (trigger private.handle_embedding_source_change, in _functions_triggers). A worker inside
-- the server claims jobs with FOR UPDATE SKIP LOCKED, embeds in batches, writes the vector and
-- embedded_at, and marks the job done (or failed after retries with backoff via run_after).
-- It lives in the non-exposed `private` schema: no API role can see or forge jobs; the worker
-- connects as the schema owner or as service_role.

create table private.embedding_jobs (
  id bigserial primary key,
  org_id uuid not null references public.organizations (id) on delete cascade,
  table_name text not null check (table_name in ('documents', 'crm_interactions')),
  row_id uuid not null,
  status text not null default 'pending' check (status in ('pending', 'running', 'done', 'failed')),
  attempts integer not null default 0 check (attempts >= 0),
  run_after timestamptz not null default now(),
  locked_at timestamptz,
  last_error text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table private.embedding_jobs is
  'Embedding work queue: one pending job per (table_name, row_id); claim with FOR UPDATE SKIP LOCKED ordered by run_after.';

-- One pending job per row (a text change while a job is running queues exactly one more).
create unique index embedding_jobs_one_pending_per_row
  on private.embedding_jobs (table_name, row_id) where status = 'pending';
-- The worker's claim query: pending jobs due now, oldest first.
create index embedding_jobs_pending_due_idx
  on private.embedding_jobs (run_after, id) where status = 'pending';
-- Covers the organizations foreign key (and per-org progress queries).
create index embedding_jobs_org_id_status_idx on private.embedding_jobs (org_id, status);

revoke all on private.embedding_jobs from public, anon, authenticated;
revoke all on sequence private.embedding_jobs_id_seq from public, anon, authenticated;
grant select, insert, update, delete on private.embedding_jobs to service_role;
grant usage, select on sequence private.embedding_jobs_id_seq to service_role;
