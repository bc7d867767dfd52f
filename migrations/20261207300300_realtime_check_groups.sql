-- /realtime/v1: a batch of captured changes is authorised in one statement. For each
-- (role, claims) group and table, the function switches to that role and those claims and
-- runs the table's check (built by the server from the table's SELECT privilege and
-- policies, see docs/realtime.md) over the rows that group would receive, returning which
-- of them it may see. One statement instead of two per group keeps the per-group cost to a
-- loop iteration and the check itself.
--
-- SECURITY INVOKER and executable by the API login only. It runs the SQL it is given as any
-- role the caller's session may SET ROLE to, so it must never be reachable by API roles:
-- no grant to anon/authenticated/service_role (a REST caller's session user is the API
-- login, which may switch to service_role), and the realtime schema is not exposed. The
-- function's SET clause makes PostgreSQL restore every setting changed inside it (the
-- role, the claims) when it returns.
create or replace function realtime.check_groups(
  roles text[], claims text[], checks text[], batches text[]
) returns table (item integer, pos bigint)
language plpgsql
security invoker
set search_path = pg_catalog
as $$
begin
  for i in 1 .. coalesce(array_length(roles, 1), 0) loop
    perform set_config('role', roles[i], true);
    perform set_config('request.jwt.claims', claims[i], true);
    return query execute format('select %s::integer, c._af_pos from (%s) as c', i, checks[i])
      using batches[i];
  end loop;
end
$$;
revoke all on function realtime.check_groups(text[], text[], text[], text[]) from public;
grant execute on function realtime.check_groups(text[], text[], text[], text[]) to authenticator;
