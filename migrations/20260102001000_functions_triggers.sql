-- Functions and triggers (docs/schema.md §4).
--
-- Security model: functions in `public` are SECURITY INVOKER, so everything they read or write
-- goes through the caller's RLS policies; the writers of the tables a trigger touches are the
-- writers of the table that fires it (e.g. whoever may insert a CRM interaction may also update
-- the client and append to activities), so invoker rights suffice. The few functions that must
-- act beyond the caller's rights are SECURITY DEFINER trigger functions in the non-exposed
-- `private` schema (new user -> profile + org, new org -> owner membership, last-owner guard,
-- embedding job queue, service-scope check). Every function pins search_path = ''.

------------------------------------------------------------------------------------------
-- updated_at
------------------------------------------------------------------------------------------
create or replace function public.update_updated_at()
returns trigger
language plpgsql
security invoker
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end;
$$;

-- One BEFORE UPDATE trigger `update_<table>_updated_at` on every public table with updated_at.
do $$
declare
  t record;
begin
  for t in
    select c.table_name
    from information_schema.columns c
    join information_schema.tables tb
      on tb.table_schema = c.table_schema and tb.table_name = c.table_name and tb.table_type = 'BASE TABLE'
    where c.table_schema = 'public' and c.column_name = 'updated_at'
    order by c.table_name
  loop
    execute format(
      'create trigger %I before update on public.%I for each row execute function public.update_updated_at()',
      'update_' || t.table_name || '_updated_at', t.table_name);
  end loop;
end
$$;

create trigger update_embedding_jobs_updated_at
  before update on private.embedding_jobs
  for each row execute function public.update_updated_at();

------------------------------------------------------------------------------------------
-- Wizard completion: reaching step 5 sets wizard_completed_at once; going back clears it.
------------------------------------------------------------------------------------------
create or replace function public.handle_wizard_completion()
returns trigger
language plpgsql
security invoker
set search_path = ''
as $$
begin
  if new.current_step >= 5 then
    if tg_op = 'UPDATE' then
      new.wizard_completed_at := coalesce(old.wizard_completed_at, new.wizard_completed_at, now());
    else
      new.wizard_completed_at := coalesce(new.wizard_completed_at, now());
    end if;
  else
    new.wizard_completed_at := null;
  end if;
  return new;
end;
$$;

create trigger handle_wizard_completion
  before insert or update of current_step on public.wizard_sessions
  for each row execute function public.handle_wizard_completion();

------------------------------------------------------------------------------------------
-- Client onboarding: the first time a client's status becomes 'client', stamp onboarded_at
-- and set lifecycle_stage = 'onboarding'.
------------------------------------------------------------------------------------------
create or replace function public.handle_client_onboarding()
returns trigger
language plpgsql
security invoker
set search_path = ''
as $$
begin
  if new.status = 'client'
     and (tg_op = 'INSERT' or old.status is distinct from 'client')
     and (tg_op = 'INSERT' or old.onboarded_at is null)
     and new.onboarded_at is null then
    new.onboarded_at := now();
    new.lifecycle_stage := 'onboarding';
  end if;
  return new;
end;
$$;

create trigger handle_client_onboarding
  before insert or update of status on public.clients
  for each row execute function public.handle_client_onboarding();

------------------------------------------------------------------------------------------
-- Deals: closed_at follows won/lost; a won deal promotes its lead/prospect client to client
-- (which in turn fires the onboarding trigger).
------------------------------------------------------------------------------------------
create or replace function public.set_deal_closed_at()
returns trigger
language plpgsql
security invoker
set search_path = ''
as $$
begin
  if new.status in ('won', 'lost') then
    if tg_op = 'INSERT' or old.status is distinct from new.status then
      new.closed_at := coalesce(new.closed_at, now());
    end if;
  else
    new.closed_at := null;
  end if;
  return new;
end;
$$;

create trigger set_deal_closed_at
  before insert or update of status on public.crm_deals
  for each row execute function public.set_deal_closed_at();

create or replace function public.handle_deal_won()
returns trigger
language plpgsql
security invoker
set search_path = ''
as $$
begin
  if new.status = 'won' and (tg_op = 'INSERT' or old.status is distinct from 'won') then
    update public.clients c
       set status = 'client',
           pipeline_stage = 'won'
     where c.org_id = new.org_id
       and c.id = new.client_id
       and c.status in ('lead', 'prospect');
  end if;
  return null;
end;
$$;

create trigger handle_deal_won
  after insert or update of status on public.crm_deals
  for each row execute function public.handle_deal_won();

------------------------------------------------------------------------------------------
-- Tasks: completed_at follows status 'done'.
------------------------------------------------------------------------------------------
create or replace function public.set_task_completed_at()
returns trigger
language plpgsql
security invoker
set search_path = ''
as $$
begin
  if new.status = 'done' then
    if tg_op = 'INSERT' or old.status is distinct from 'done' then
      new.completed_at := coalesce(new.completed_at, now());
    end if;
  else
    new.completed_at := null;
  end if;
  return new;
end;
$$;

create trigger set_task_completed_at
  before insert or update of status on public.tasks
  for each row execute function public.set_task_completed_at();

------------------------------------------------------------------------------------------
-- Dashboard activation: a roadmap on the project's active snapshot stamps
-- projects.dashboard_activated_at once.
------------------------------------------------------------------------------------------
create or replace function public.handle_dashboard_activation()
returns trigger
language plpgsql
security invoker
set search_path = ''
as $$
begin
  update public.projects p
     set dashboard_activated_at = now()
    from public.context_snapshots s
   where s.org_id = new.org_id
     and s.id = new.snapshot_id
     and s.is_active
     and p.org_id = s.org_id
     and p.id = s.project_id
     and p.dashboard_activated_at is null;
  return null;
end;
$$;

create trigger handle_dashboard_activation
  after insert on public.roadmaps
  for each row execute function public.handle_dashboard_activation();

------------------------------------------------------------------------------------------
-- New CRM interaction: bump the client's last_activity_at and append to the timeline.
------------------------------------------------------------------------------------------
create or replace function public.handle_new_crm_interaction()
returns trigger
language plpgsql
security invoker
set search_path = ''
as $$
begin
  update public.clients c
     set last_activity_at = greatest(c.last_activity_at, new.created_at)
   where c.org_id = new.org_id
     and c.id = new.client_id;

  insert into public.activities (org_id, client_id, activity_type, title, description, metadata, created_by)
  values (
    new.org_id,
    new.client_id,
    case new.type
      when 'email' then 'email'
      when 'call' then 'call'
      when 'meeting' then 'meeting'
      when 'system' then 'system'
      else 'note'
    end,
    coalesce(nullif(btrim(new.subject), ''), initcap(new.type::text) || ' logged'),
    new.summary,
    jsonb_build_object(
      'source', 'crm_interaction',
      'interaction_id', new.id,
      'interaction_type', new.type,
      'direction', new.direction,
      'sentiment', new.sentiment,
      'deal_id', new.deal_id,
      'contact_id', new.contact_id
    ),
    new.created_by
  );
  return null;
end;
$$;

create trigger handle_new_crm_interaction
  after insert on public.crm_interactions
  for each row execute function public.handle_new_crm_interaction();

------------------------------------------------------------------------------------------
-- Payments: currency follows the invoice; an invoice becomes paid when its completed payments
-- reach its amount (and goes back to sent if a completed payment is refunded/removed).
------------------------------------------------------------------------------------------
create or replace function public.check_payment_currency()
returns trigger
language plpgsql
security invoker
set search_path = ''
as $$
declare
  v_currency char(3);
begin
  select i.currency into v_currency
  from public.invoices i
  where i.org_id = new.org_id and i.id = new.invoice_id;
  if v_currency is not null then
    if new.currency is null then
      new.currency := v_currency;
    elsif new.currency <> v_currency then
      raise exception 'payment currency % does not match invoice currency %', new.currency, v_currency
        using errcode = '23514', constraint = 'payments_currency_matches_invoice';
    end if;
  end if;
  return new;
end;
$$;

create trigger check_payment_currency
  before insert or update of currency, invoice_id on public.payments
  for each row execute function public.check_payment_currency();

create or replace function public.handle_payment_change()
returns trigger
language plpgsql
security invoker
set search_path = ''
as $$
declare
  v_org uuid;
  v_invoice uuid;
  v_paid bigint;
begin
  if tg_op = 'DELETE' then
    v_org := old.org_id; v_invoice := old.invoice_id;
  else
    v_org := new.org_id; v_invoice := new.invoice_id;
  end if;

  select coalesce(sum(p.amount_cents), 0) into v_paid
  from public.payments p
  where p.org_id = v_org and p.invoice_id = v_invoice and p.status = 'completed';

  update public.invoices i
     set status = 'paid',
         paid_at = coalesce(i.paid_at, now())
   where i.org_id = v_org and i.id = v_invoice
     and i.status in ('draft', 'sent', 'overdue')
     and v_paid >= i.amount_cents;

  -- A completed payment went away (refunded, failed, deleted): the invoice is no longer covered.
  if tg_op in ('UPDATE', 'DELETE') and old.status = 'completed' then
    update public.invoices i
       set status = 'sent', paid_at = null
     where i.org_id = v_org and i.id = v_invoice
       and i.status = 'paid'
       and v_paid < i.amount_cents;
  end if;
  return null;
end;
$$;

create trigger handle_payment_change
  after insert or update or delete on public.payments
  for each row execute function public.handle_payment_change();

------------------------------------------------------------------------------------------
-- JSON diff (top-level keys) used by brief versioning.
-- {"added": {k: new}, "removed": {k: old}, "changed": {k: {"old": .., "new": ..}}}
------------------------------------------------------------------------------------------
create or replace function public.jsonb_diff(old_value jsonb, new_value jsonb)
returns jsonb
language sql
immutable
parallel safe
security invoker
set search_path = ''
as $$
  select case
    when jsonb_typeof(coalesce(old_value, '{}'::jsonb)) = 'object'
     and jsonb_typeof(coalesce(new_value, '{}'::jsonb)) = 'object' then
      jsonb_build_object(
        'added', coalesce((
          select jsonb_object_agg(n.key, n.value)
          from jsonb_each(coalesce(new_value, '{}'::jsonb)) n
          where not coalesce(old_value, '{}'::jsonb) ? n.key), '{}'::jsonb),
        'removed', coalesce((
          select jsonb_object_agg(o.key, o.value)
          from jsonb_each(coalesce(old_value, '{}'::jsonb)) o
          where not coalesce(new_value, '{}'::jsonb) ? o.key), '{}'::jsonb),
        'changed', coalesce((
          select jsonb_object_agg(n.key, jsonb_build_object('old', o.value, 'new', n.value))
          from jsonb_each(coalesce(new_value, '{}'::jsonb)) n
          join jsonb_each(coalesce(old_value, '{}'::jsonb)) o on o.key = n.key
          where o.value is distinct from n.value), '{}'::jsonb)
      )
    when old_value is not distinct from new_value then
      jsonb_build_object('added', '{}'::jsonb, 'removed', '{}'::jsonb, 'changed', '{}'::jsonb)
    else
      jsonb_build_object('added', '{}'::jsonb, 'removed', '{}'::jsonb,
        'changed', jsonb_build_object('$', jsonb_build_object('old', old_value, 'new', new_value)))
  end
$$;

------------------------------------------------------------------------------------------
-- Briefs: a new brief records version 1 in brief_versions; save_brief() bumps the version and
-- appends the new content with a diff against the previous one.
------------------------------------------------------------------------------------------
create or replace function public.handle_new_brief()
returns trigger
language plpgsql
security invoker
set search_path = ''
as $$
begin
  insert into public.brief_versions (org_id, brief_id, version, content, diff, change_summary, changed_by)
  values (
    new.org_id, new.id, new.version, new.content,
    public.jsonb_diff('{}'::jsonb, new.content),
    'Created',
    (select tm.user_id from public.team_members tm
      where tm.org_id = new.org_id and tm.user_id = (select auth.uid()))
  );
  return null;
end;
$$;

create trigger handle_new_brief
  after insert on public.briefs
  for each row execute function public.handle_new_brief();

create or replace function public.save_brief(brief_id uuid, content jsonb, change_summary text default null)
returns public.briefs
language plpgsql
security invoker
set search_path = ''
as $$
declare
  v_old public.briefs;
  v_new public.briefs;
  v_next integer;
begin
  select b.* into v_old from public.briefs b where b.id = save_brief.brief_id for update;
  if not found then
    raise exception 'brief % not found', save_brief.brief_id using errcode = 'P0002';
  end if;

  -- briefs are unique per (project_id, version): take the next free version in the project.
  select greatest(v_old.version, max(b.version)) + 1 into v_next
  from public.briefs b
  where b.org_id = v_old.org_id and b.project_id = v_old.project_id;

  update public.briefs b
     set content = coalesce(save_brief.content, '{}'::jsonb),
         version = v_next
   where b.id = v_old.id
  returning b.* into v_new;

  insert into public.brief_versions (org_id, brief_id, version, content, diff, change_summary, changed_by)
  values (
    v_old.org_id, v_old.id, v_next, v_new.content,
    public.jsonb_diff(v_old.content, v_new.content),
    save_brief.change_summary,
    (select tm.user_id from public.team_members tm
      where tm.org_id = v_old.org_id and tm.user_id = (select auth.uid()))
  );
  return v_new;
end;
$$;

------------------------------------------------------------------------------------------
-- Context snapshots: next version, older ones deactivated, atomically (the project row is
-- locked so concurrent calls serialize).
------------------------------------------------------------------------------------------
create or replace function public.create_context_snapshot(project_id uuid, summary text default null, metrics jsonb default '{}'::jsonb)
returns public.context_snapshots
language plpgsql
security invoker
set search_path = ''
as $$
declare
  v_org uuid;
  v_row public.context_snapshots;
begin
  select p.org_id into v_org
  from public.projects p
  where p.id = create_context_snapshot.project_id
  for update;
  if not found then
    raise exception 'project % not found', create_context_snapshot.project_id using errcode = 'P0002';
  end if;

  update public.context_snapshots s
     set is_active = false
   where s.org_id = v_org
     and s.project_id = create_context_snapshot.project_id
     and s.is_active;

  insert into public.context_snapshots (org_id, project_id, version, is_active, summary, metrics)
  values (
    v_org,
    create_context_snapshot.project_id,
    coalesce((select max(s.version) from public.context_snapshots s
              where s.org_id = v_org and s.project_id = create_context_snapshot.project_id), 0) + 1,
    true,
    create_context_snapshot.summary,
    coalesce(create_context_snapshot.metrics, '{}'::jsonb)
  )
  returning * into v_row;
  return v_row;
end;
$$;

------------------------------------------------------------------------------------------
-- Vector and hybrid search. INVOKER: RLS limits results to the caller's orgs. Archived rows
-- are left out. `filter` keys (all optional): documents: org_id, project_id,
-- wizard_session_id, category; interactions: org_id, client_id, deal_id, contact_id, type,
-- sentiment.
------------------------------------------------------------------------------------------
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

------------------------------------------------------------------------------------------
-- Analytics: compute one org's figures for one period and upsert the analytics row.
-- Periods are [period_start, period_start + 1 day/week/month) in UTC. Metrics:
--   pipeline_value_cents / open_deals     open deals now (all currencies summed)
--   deals_won / deals_lost / win_rate      deals closed (closed_at) in the period; win_rate = won/(won+lost), null if none
--   invoiced_cents / invoices_issued       invoices issued in the period, excluding draft/void/cancelled
--   paid_cents / payments_completed        completed payments processed in the period (processed_at, else created_at)
--   tasks_completed / tasks_created        tasks completed / created in the period
--   ai_runs / ai_input_tokens / ai_output_tokens / ai_tokens / ai_cost_micro_usd / ai_cache_hits / ai_failures
------------------------------------------------------------------------------------------
create or replace function public.refresh_org_analytics(org_id uuid, period_type text, period_start date)
returns public.analytics
language plpgsql
security invoker
set search_path = ''
as $$
#variable_conflict use_variable
declare
  v_from timestamptz;
  v_to timestamptz;
  v_metrics jsonb;
  v_row public.analytics;
  v_won bigint;
  v_lost bigint;
begin
  if period_type is null or period_type not in ('day', 'week', 'month') then
    raise exception 'period_type must be day, week or month (got %)', period_type using errcode = '22023';
  end if;
  if org_id is null or period_start is null then
    raise exception 'org_id and period_start are required' using errcode = '22004';
  end if;

  v_from := period_start::timestamp at time zone 'UTC';
  v_to := (period_start::timestamp + case period_type
             when 'day' then interval '1 day'
             when 'week' then interval '7 days'
             else interval '1 month' end) at time zone 'UTC';

  select count(*) filter (where d.status = 'won' and d.closed_at >= v_from and d.closed_at < v_to),
         count(*) filter (where d.status = 'lost' and d.closed_at >= v_from and d.closed_at < v_to)
    into v_won, v_lost
  from public.crm_deals d
  where d.org_id = org_id;

  v_metrics := jsonb_build_object(
    'period_from', v_from,
    'period_to', v_to,
    'pipeline_value_cents', (select coalesce(sum(d.amount_cents), 0) from public.crm_deals d
                             where d.org_id = org_id and d.status = 'open'),
    'open_deals', (select count(*) from public.crm_deals d where d.org_id = org_id and d.status = 'open'),
    'deals_won', v_won,
    'deals_lost', v_lost,
    'win_rate', case when v_won + v_lost > 0 then round(v_won::numeric / (v_won + v_lost), 4) end,
    'invoiced_cents', (select coalesce(sum(i.amount_cents), 0) from public.invoices i
                       where i.org_id = org_id and i.status not in ('draft', 'void', 'cancelled')
                         and i.issued_at >= v_from and i.issued_at < v_to),
    'invoices_issued', (select count(*) from public.invoices i
                        where i.org_id = org_id and i.status not in ('draft', 'void', 'cancelled')
                          and i.issued_at >= v_from and i.issued_at < v_to),
    'paid_cents', (select coalesce(sum(p.amount_cents), 0) from public.payments p
                   where p.org_id = org_id and p.status = 'completed'
                     and coalesce(p.processed_at, p.created_at) >= v_from
                     and coalesce(p.processed_at, p.created_at) < v_to),
    'payments_completed', (select count(*) from public.payments p
                           where p.org_id = org_id and p.status = 'completed'
                             and coalesce(p.processed_at, p.created_at) >= v_from
                             and coalesce(p.processed_at, p.created_at) < v_to),
    'tasks_completed', (select count(*) from public.tasks t
                        where t.org_id = org_id and t.completed_at >= v_from and t.completed_at < v_to),
    'tasks_created', (select count(*) from public.tasks t
                      where t.org_id = org_id and t.created_at >= v_from and t.created_at < v_to)
  ) || (
    select jsonb_build_object(
      'ai_runs', count(*),
      'ai_input_tokens', coalesce(sum(l.input_tokens), 0),
      'ai_output_tokens', coalesce(sum(l.output_tokens), 0),
      'ai_tokens', coalesce(sum(l.input_tokens + l.output_tokens), 0),
      'ai_cost_micro_usd', coalesce(sum(l.cost_micro_usd), 0),
      'ai_cache_hits', count(*) filter (where l.cache_hit),
      'ai_failures', count(*) filter (where not l.success))
    from public.ai_run_logs l
    where l.org_id = org_id and l.created_at >= v_from and l.created_at < v_to
  );

  insert into public.analytics as a (org_id, period_type, period_start, metrics)
  values (org_id, period_type, period_start, v_metrics)
  on conflict on constraint analytics_org_id_period_type_period_start_key
  do update set metrics = excluded.metrics
  returning a.* into v_row;
  return v_row;
end;
$$;

------------------------------------------------------------------------------------------
-- SECURITY DEFINER trigger functions (schema private, not callable through the API).
------------------------------------------------------------------------------------------

-- New auth user: profile, then either join the org they were invited to
-- (raw_app_meta_data.invited_org_id / invited_role, which only the service role / admin API can
-- set — never raw_user_meta_data, which the user controls) or get a personal organization
-- they own. Anonymous users get a personal org too.
create or replace function private.handle_new_user()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_invited_org uuid;
  v_role text;
  v_name text;
  v_org uuid;
begin
  v_name := coalesce(
    nullif(btrim(new.raw_user_meta_data ->> 'full_name'), ''),
    nullif(btrim(new.raw_user_meta_data ->> 'name'), ''));

  insert into public.profiles (id, email, full_name, avatar_url)
  values (new.id, new.email, v_name, new.raw_user_meta_data ->> 'avatar_url')
  on conflict (id) do nothing;

  begin
    v_invited_org := nullif(new.raw_app_meta_data ->> 'invited_org_id', '')::uuid;
  exception when invalid_text_representation then
    v_invited_org := null;
  end;

  if v_invited_org is not null
     and exists (select 1 from public.organizations o where o.id = v_invited_org) then
    v_role := coalesce(nullif(new.raw_app_meta_data ->> 'invited_role', ''), 'member');
    if v_role not in ('owner', 'admin', 'consultant', 'member', 'client') then
      v_role := 'member';
    end if;
    insert into public.team_members (org_id, user_id, role)
    values (v_invited_org, new.id, v_role)
    on conflict (org_id, user_id) do nothing;
  else
    insert into public.organizations (name, slug, created_by)
    values (
      case
        when new.is_anonymous then 'Guest workspace'
        else coalesce(v_name, nullif(split_part(coalesce(new.email, ''), '@', 1), ''), 'My') || '''s workspace'
      end,
      'ws-' || replace(new.id::text, '-', ''),
      new.id
    )
    returning id into v_org;
    -- private.handle_new_organization adds the owner row; be explicit and idempotent anyway.
    insert into public.team_members (org_id, user_id, role)
    values (v_org, new.id, 'owner')
    on conflict (org_id, user_id) do nothing;
  end if;
  return null;
end;
$$;

create trigger on_auth_user_created
  after insert on auth.users
  for each row execute function private.handle_new_user();

-- New organization: its creator becomes the owner (the organizations insert policy requires
-- created_by = auth.uid(), so a user can only make themselves owner).
create or replace function private.handle_new_organization()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.created_by is not null then
    insert into public.team_members (org_id, user_id, role)
    values (new.id, new.created_by, 'owner')
    on conflict (org_id, user_id) do nothing;
  end if;
  return null;
end;
$$;

create trigger handle_new_organization
  after insert on public.organizations
  for each row execute function private.handle_new_organization();

-- An organization always keeps at least one owner: demoting, moving or removing the last
-- owner is refused, except when the organization itself (or the user account) is being deleted.
create or replace function private.protect_last_owner()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if old.role <> 'owner' then
    return coalesce(new, old);
  end if;
  if tg_op = 'UPDATE' and new.role = 'owner' and new.org_id = old.org_id then
    return new;
  end if;
  if not exists (select 1 from public.organizations o where o.id = old.org_id)
     or not exists (select 1 from auth.users u where u.id = old.user_id) then
    return coalesce(new, old);
  end if;
  if not exists (
    select 1 from public.team_members tm
    where tm.org_id = old.org_id and tm.role = 'owner' and tm.id <> old.id
  ) then
    raise exception 'an organization must keep at least one owner'
      using errcode = '23514', constraint = 'team_members_last_owner';
  end if;
  return coalesce(new, old);
end;
$$;

create trigger protect_last_owner
  before update of role, org_id, user_id or delete on public.team_members
  for each row execute function private.protect_last_owner();

-- project_services.service_id must be a global service or one of the project's org.
create or replace function private.check_project_service_scope()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if not exists (
    select 1 from public.services s
    where s.id = new.service_id and (s.org_id is null or s.org_id = new.org_id)
  ) then
    raise exception 'service % is not available to organization %', new.service_id, new.org_id
      using errcode = '23503', constraint = 'project_services_service_scope';
  end if;
  return new;
end;
$$;

create trigger check_project_service_scope
  before insert or update of service_id, org_id on public.project_services
  for each row execute function private.check_project_service_scope();

-- Embeddings: when the text an embedding was computed from changes (and the same statement
-- does not also supply a new embedding), clear embedding/embedded_at; whenever a row has text
-- but no embedding after an insert or text change, queue one job. Trigger arguments name the
-- source text columns.
create or replace function private.handle_embedding_source_change()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_new jsonb := to_jsonb(new);
  v_old jsonb;
  v_changed boolean;
  v_has_text boolean;
begin
  select bool_or(nullif(btrim(v_new ->> col), '') is not null) into v_has_text
  from unnest(tg_argv) as col;

  if tg_op = 'UPDATE' then
    v_old := to_jsonb(old);
    select bool_or((v_new -> col) is distinct from (v_old -> col)) into v_changed
    from unnest(tg_argv) as col;
    if not v_changed then
      return new;
    end if;
    -- `is not distinct from` would need vector's `=` on the search path; spell it out.
    if (new.embedding is null and old.embedding is null)
       or (new.embedding operator(extensions.=) old.embedding) then
      new.embedding := null;
      new.embedded_at := null;
    end if;
  end if;

  if new.embedding is null and coalesce(v_has_text, false) then
    insert into private.embedding_jobs (org_id, table_name, row_id)
    values (new.org_id, tg_table_name, new.id)
    on conflict (table_name, row_id) where status = 'pending'
    do update set attempts = 0, run_after = now(), last_error = null;
  end if;
  return new;
end;
$$;

create trigger handle_embedding_source_change
  before insert or update on public.documents
  for each row execute function private.handle_embedding_source_change('name', 'summary', 'content_text');

create trigger handle_embedding_source_change
  before insert or update on public.crm_interactions
  for each row execute function private.handle_embedding_source_change('subject', 'content', 'summary');

revoke all on function private.handle_new_user() from public, anon, authenticated;
revoke all on function private.handle_new_organization() from public, anon, authenticated;
revoke all on function private.protect_last_owner() from public, anon, authenticated;
revoke all on function private.check_project_service_scope() from public, anon, authenticated;
revoke all on function private.handle_embedding_source_change() from public, anon, authenticated;

-- Functions that only write: not for anon.
revoke execute on function public.create_context_snapshot(uuid, text, jsonb) from public, anon;
revoke execute on function public.save_brief(uuid, jsonb, text) from public, anon;
revoke execute on function public.refresh_org_analytics(uuid, text, date) from public, anon;
