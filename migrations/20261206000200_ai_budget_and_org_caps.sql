-- Security issue #14: AI spending reserved per organization, embeddings metered per
-- organization, and a cap on the organizations one user can create (docs/functions.md).

------------------------------------------------------------------------------------------
-- AI usage per organization, meter and period.
--
-- The functions crate reserves before every paid provider call,
--   insert ... on conflict (org_id, meter, period_start) do update
--     set reserved = reserved + $n where used + reserved + $n <= $limit returning ...
-- so the row lock serialises concurrent calls and they cannot pass the budget together (the
-- old check only counted ai_run_logs, written after the call: N concurrent calls all saw
-- the same count). After the call the reservation is settled with the real cost (`used`),
-- or released when the provider failed. Meters:
--   runs         provider calls (chat, paid embeddings) per UTC hour (AI_RATE_LIMIT_PER_HOUR)
--   chat_tokens  chat tokens per UTC day (AI_CHAT_TOKEN_BUDGET_PER_DAY)
--   embed_chars  characters sent to an embedding provider per UTC day, by the worker and the
--                functions alike (AI_EMBED_BUDGET_CHARS_PER_DAY); `tokens` records what the
--                provider counted. The free local/hash providers are metered, never capped.
-- The limits are server settings; this table only counts. Service role only.
------------------------------------------------------------------------------------------
create table private.ai_usage (
  org_id uuid not null references public.organizations (id) on delete cascade,
  meter text not null check (meter in ('runs', 'chat_tokens', 'embed_chars')),
  -- date_trunc('hour' | 'day', now(), 'UTC')
  period_start timestamptz not null,
  used bigint not null default 0 check (used >= 0),
  reserved bigint not null default 0 check (reserved >= 0),
  tokens bigint not null default 0 check (tokens >= 0),
  calls bigint not null default 0 check (calls >= 0),
  updated_at timestamptz not null default now(),
  primary key (org_id, meter, period_start)
);
comment on table private.ai_usage is
  'AI usage per organization, meter (runs, chat_tokens, embed_chars) and UTC period: used, and reserved by calls in flight.';

revoke all on private.ai_usage from public, anon, authenticated;
grant select, insert, update, delete on private.ai_usage to service_role;

------------------------------------------------------------------------------------------
-- Operator limits of the database itself (NULL: no limit). Change one with e.g.
--   update private.limits set value = 25 where name = 'organizations_per_user';
-- as the database owner (or service_role); it applies to the next statement.
------------------------------------------------------------------------------------------
create table private.limits (
  name text primary key,
  value bigint check (value is null or value >= 0),
  description text not null
);
comment on table private.limits is
  'Operator-set limits enforced in the database (NULL value: no limit).';

insert into private.limits (name, value, description) values
  ('organizations_per_user', 10,
   'Organizations one user may have created and still existing (the personal workspace made at sign-up counts). Enforced for API callers (authenticated); service_role and the database''s own code are not capped.');

revoke all on private.limits from public, anon, authenticated;
grant select, update on private.limits to service_role;

-- Refuses the caller's next organization when they have created as many as the cap allows.
-- SECURITY DEFINER: the count includes organizations the caller created but can no longer
-- see (they left them). A per-user advisory lock serialises concurrent creations, so the
-- cap also holds against parallel requests.
create or replace function private.check_organization_cap()
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_uid uuid := (select auth.uid());
  v_cap bigint;
  v_count bigint;
begin
  if v_uid is null then
    -- No user: the organizations insert policy refuses the row anyway.
    return;
  end if;
  select l.value into v_cap from private.limits l where l.name = 'organizations_per_user';
  if v_cap is null then
    return;
  end if;
  perform pg_catalog.pg_advisory_xact_lock(
    pg_catalog.hashtextextended('private.organizations_per_user:' || v_uid::text, 0));
  select count(*) into v_count from public.organizations o where o.created_by = v_uid;
  if v_count >= v_cap then
    raise exception 'organization limit reached: a user may create at most % organizations (you have %)', v_cap, v_count
      using errcode = 'PT403',
            detail = 'Your personal workspace counts; deleted organizations do not.',
            hint = 'Delete an organization you no longer need, or ask the operator to raise private.limits.organizations_per_user.';
  end if;
end
$$;
revoke all on function private.check_organization_cap() from public, anon;
grant execute on function private.check_organization_cap() to authenticated, service_role;

-- BEFORE INSERT on organizations: API callers (authenticated) are capped; service_role and
-- the schema's own SECURITY DEFINER code (the sign-up trigger's personal workspace) are not.
create or replace function private.enforce_organization_cap()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if current_user = 'authenticated' then
    perform private.check_organization_cap();
  end if;
  return new;
end
$$;
revoke all on function private.enforce_organization_cap() from public, anon;
grant execute on function private.enforce_organization_cap() to authenticated, service_role;

create trigger organizations_cap_per_user
  before insert on public.organizations
  for each row execute function private.enforce_organization_cap();

-- The cap counts organizations by created_by: API callers cannot rewrite it (an owner
-- "giving" their organizations to someone else in created_by would free their slots). The
-- old value is kept, as the database keeps other authorship columns; service_role and the
-- database's own code (e.g. ON DELETE SET NULL of the creator's account) are not affected.
create or replace function private.keep_organization_creator()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if current_user in ('anon', 'authenticated') then
    new.created_by := old.created_by;
  end if;
  return new;
end
$$;
revoke all on function private.keep_organization_creator() from public, anon;
grant execute on function private.keep_organization_creator() to authenticated, service_role;

create trigger organizations_keep_creator
  before update of created_by on public.organizations
  for each row execute function private.keep_organization_creator();
