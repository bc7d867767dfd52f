-- Helpers for row-level security policies. SECURITY DEFINER so that they read team_members
-- without recursing into team_members' own policies; STABLE SQL with an empty search_path and
-- fully qualified names. They live in `private`, which is not an exposed schema (PostgREST's
-- db_schemas is 'public'), so they are not callable through /rest/v1/rpc; EXECUTE is granted
-- only to the roles whose policies call them.

grant usage on schema private to authenticated, service_role;

-- Orgs the current user belongs to (any role).
create or replace function private.get_user_org_ids()
returns setof uuid
language sql
stable
security definer
set search_path = ''
as $$
  select tm.org_id
  from public.team_members tm
  where tm.user_id = (select auth.uid())
$$;

-- Orgs in which the current user holds one of `roles`. Policies use
-- `org_id in (select private.get_user_org_ids(array[...]))`, which the planner evaluates once
-- per statement (a hashed sub-plan) instead of once per row.
create or replace function private.get_user_org_ids(roles text[])
returns setof uuid
language sql
stable
security definer
set search_path = ''
as $$
  select tm.org_id
  from public.team_members tm
  where tm.user_id = (select auth.uid())
    and tm.role = any (roles)
$$;

create or replace function private.user_has_role_in_org(org uuid, roles text[])
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select exists (
    select 1
    from public.team_members tm
    where tm.org_id = org
      and tm.user_id = (select auth.uid())
      and tm.role = any (roles)
  )
$$;

create or replace function private.user_is_org_owner(org uuid)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select exists (
    select 1
    from public.team_members tm
    where tm.org_id = org
      and tm.user_id = (select auth.uid())
      and tm.role = 'owner'
  )
$$;

-- Users who share at least one org with the current user (the profiles read policy).
create or replace function private.get_user_peer_ids()
returns setof uuid
language sql
stable
security definer
set search_path = ''
as $$
  select distinct other.user_id
  from public.team_members mine
  join public.team_members other on other.org_id = mine.org_id
  where mine.user_id = (select auth.uid())
$$;

revoke all on function private.get_user_org_ids() from public, anon;
revoke all on function private.get_user_org_ids(text[]) from public, anon;
revoke all on function private.user_has_role_in_org(uuid, text[]) from public, anon;
revoke all on function private.user_is_org_owner(uuid) from public, anon;
revoke all on function private.get_user_peer_ids() from public, anon;
grant execute on function
  private.get_user_org_ids(),
  private.get_user_org_ids(text[]),
  private.user_has_role_in_org(uuid, text[]),
  private.user_is_org_owner(uuid),
  private.get_user_peer_ids()
  to authenticated, service_role;
