-- Helpers for row-level security policies. SECURITY DEFINER so that they read team_members
-- without recursing into team_members' own policies; STABLE, with an empty search_path and
-- fully qualified names. PL/pgSQL rather than SQL: a SQL function with a SET clause is never
-- inlined and its body is planned again on every statement that calls it, while PL/pgSQL keeps
-- its plans for the session (bench/rls.sh measured the member/service_role gap shrink by a
-- third). They live in `private`, which is not an exposed schema (PostgREST's
-- db_schemas is 'public'), so they are not callable through /rest/v1/rpc; EXECUTE is granted
-- only to the roles whose policies call them.

grant usage on schema private to authenticated, service_role;

-- Orgs the current user belongs to (any role).
create or replace function private.get_user_org_ids()
returns setof uuid
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  return query
    select tm.org_id
    from public.team_members tm
    where tm.user_id = (select auth.uid());
end
$$;

-- Orgs in which the current user holds one of `roles`. Policies use
-- `org_id = any (array(select private.get_user_org_ids(array[...])))`, which the planner evaluates once
-- per statement (an InitPlan) and uses as an index condition.
create or replace function private.get_user_org_ids(roles text[])
returns setof uuid
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  return query
    select tm.org_id
    from public.team_members tm
    where tm.user_id = (select auth.uid())
      and tm.role = any (roles);
end
$$;

create or replace function private.user_has_role_in_org(org uuid, roles text[])
returns boolean
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  return (
    select exists (
      select 1
      from public.team_members tm
      where tm.org_id = org
        and tm.user_id = (select auth.uid())
        and tm.role = any (roles)
    )
  );
end
$$;

create or replace function private.user_is_org_owner(org uuid)
returns boolean
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  return (
    select exists (
      select 1
      from public.team_members tm
      where tm.org_id = org
        and tm.user_id = (select auth.uid())
        and tm.role = 'owner'
    )
  );
end
$$;

-- Users who share at least one org with the current user (the profiles read policy).
create or replace function private.get_user_peer_ids()
returns setof uuid
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  return query
    select distinct other.user_id
    from public.team_members mine
    join public.team_members other on other.org_id = mine.org_id
    where mine.user_id = (select auth.uid());
end
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
