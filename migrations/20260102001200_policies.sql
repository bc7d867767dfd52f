-- Row-level security (docs/schema.md §6).
--
-- * RLS is enabled AND forced on every table in public (forced: the table owner is subject to
--   it too; superusers and service_role (BYPASSRLS) are not).
-- * One permissive policy per table, role and action (`for select|insert|update|delete`,
--   never an overlapping `for all`); update policies carry WITH CHECK so a row cannot be moved
--   to another org; no `true` on writes; no temp_anon policies.
-- * auth.uid() only inside a sub-select; membership through the private SECURITY DEFINER
--   helpers, used as `org_id = any (array(select private.get_user_org_ids(...)))`: an InitPlan
--   evaluated once per statement whose array is an index condition (`org_id = ANY ($0)`), so a
--   tenant's query reads its own rows through the (org_id, ...) indexes. The `org_id in
--   (select ...)` form became a hashed-sub-plan filter over every tenant's rows.
-- * Role sets: members = any role; staff = owner, admin, consultant, member;
--   writers = owner, admin, consultant; managers = owner, admin.

do $$
declare
  t text;
begin
  for t in select tablename from pg_tables where schemaname = 'public' order by tablename loop
    execute format('alter table public.%I enable row level security', t);
    execute format('alter table public.%I force row level security', t);
  end loop;
end
$$;

-- TRUNCATE ignores RLS, and REFERENCES / TRIGGER are never needed by API roles.
do $$
declare
  t text;
begin
  for t in select tablename from pg_tables where schemaname = 'public' loop
    execute format('revoke truncate, references, trigger on public.%I from anon, authenticated', t);
  end loop;
end
$$;

------------------------------------------------------------------------------------------
-- organizations
------------------------------------------------------------------------------------------
-- Members read their orgs. The creator also sees the row inside the creating transaction
-- (created_at = now() is the transaction's timestamp), so `insert ... returning` works before
-- the owner membership (added by an AFTER trigger) is visible to the policy.
create policy organizations_select on public.organizations
  for select to authenticated
  using (
    id = any (array(select private.get_user_org_ids()))
    or (created_by = (select auth.uid()) and created_at = now())
  );
create policy organizations_insert on public.organizations
  for insert to authenticated
  with check (created_by = (select auth.uid()));
create policy organizations_update on public.organizations
  for update to authenticated
  using (private.user_has_role_in_org(id, array['owner', 'admin']))
  with check (private.user_has_role_in_org(id, array['owner', 'admin']));
create policy organizations_delete on public.organizations
  for delete to authenticated
  using (private.user_is_org_owner(id));

------------------------------------------------------------------------------------------
-- profiles: self, and people who share an org; written by self.
------------------------------------------------------------------------------------------
create policy profiles_select on public.profiles
  for select to authenticated
  using (id = (select auth.uid()) or id in (select private.get_user_peer_ids()));
create policy profiles_insert on public.profiles
  for insert to authenticated
  with check (id = (select auth.uid()));
create policy profiles_update on public.profiles
  for update to authenticated
  using (id = (select auth.uid()))
  with check (id = (select auth.uid()));

------------------------------------------------------------------------------------------
-- team_members: members read; owners manage everyone, admins manage non-owners (an admin can
-- neither create nor remove nor demote an owner); anyone may leave (delete their own row).
-- The last owner cannot leave or be demoted (trigger private.protect_last_owner).
------------------------------------------------------------------------------------------
create policy team_members_select on public.team_members
  for select to authenticated
  using (org_id = any (array(select private.get_user_org_ids())));
create policy team_members_insert on public.team_members
  for insert to authenticated
  with check (
    private.user_is_org_owner(org_id)
    or (role <> 'owner' and private.user_has_role_in_org(org_id, array['admin']))
  );
create policy team_members_update on public.team_members
  for update to authenticated
  using (
    private.user_is_org_owner(org_id)
    or (role <> 'owner' and private.user_has_role_in_org(org_id, array['admin']))
  )
  with check (
    private.user_is_org_owner(org_id)
    or (role <> 'owner' and private.user_has_role_in_org(org_id, array['admin']))
  );
create policy team_members_delete on public.team_members
  for delete to authenticated
  using (
    user_id = (select auth.uid())
    or private.user_is_org_owner(org_id)
    or (role <> 'owner' and private.user_has_role_in_org(org_id, array['admin']))
  );

------------------------------------------------------------------------------------------
-- Generic tenant policies, per access class.
------------------------------------------------------------------------------------------
do $$
declare
  t text;
  members constant text := 'org_id = any (array(select private.get_user_org_ids()))';
  staff constant text := 'org_id = any (array(select private.get_user_org_ids(array[''owner'', ''admin'', ''consultant'', ''member''])))';
  writers constant text := 'org_id = any (array(select private.get_user_org_ids(array[''owner'', ''admin'', ''consultant''])))';
begin
  -- Wizard data and documents: every member, client role included, reads and writes.
  foreach t in array array['wizard_sessions', 'wizard_answers', 'documents'] loop
    execute format('create policy %I on public.%I for select to authenticated using (%s)', t || '_select', t, members);
    execute format('create policy %I on public.%I for insert to authenticated with check (%s)', t || '_insert', t, members);
    execute format('create policy %I on public.%I for update to authenticated using (%s) with check (%s)', t || '_update', t, members, members);
    execute format('create policy %I on public.%I for delete to authenticated using (%s)', t || '_delete', t, members);
  end loop;

  -- Delivery: every member reads (client role included); agency staff write.
  foreach t in array array['projects', 'context_snapshots', 'roadmaps', 'roadmap_phases', 'tasks',
                           'milestones', 'deliverables', 'briefs', 'project_systems', 'project_services'] loop
    execute format('create policy %I on public.%I for select to authenticated using (%s)', t || '_select', t, members);
    execute format('create policy %I on public.%I for insert to authenticated with check (%s)', t || '_insert', t, staff);
    execute format('create policy %I on public.%I for update to authenticated using (%s) with check (%s)', t || '_update', t, staff, staff);
    execute format('create policy %I on public.%I for delete to authenticated using (%s)', t || '_delete', t, staff);
  end loop;

  -- Business data: agency staff read; owner, admin, consultant write (members read only).
  foreach t in array array['clients', 'crm_pipelines', 'crm_stages', 'crm_contacts', 'crm_deals',
                           'crm_interactions', 'invoices', 'payments', 'analytics'] loop
    execute format('create policy %I on public.%I for select to authenticated using (%s)', t || '_select', t, staff);
    execute format('create policy %I on public.%I for insert to authenticated with check (%s)', t || '_insert', t, writers);
    execute format('create policy %I on public.%I for update to authenticated using (%s) with check (%s)', t || '_update', t, writers, writers);
    execute format('create policy %I on public.%I for delete to authenticated using (%s)', t || '_delete', t, writers);
  end loop;

  -- Append-only timeline: staff read, writers append; nobody updates or deletes.
  execute format('create policy activities_select on public.activities for select to authenticated using (%s)', staff);
  execute format('create policy activities_insert on public.activities for insert to authenticated with check (%s)', writers);

  -- Append-only brief history: members read, staff append, attributed to themselves (or nobody).
  execute format('create policy brief_versions_select on public.brief_versions for select to authenticated using (%s)', members);
  execute format('create policy brief_versions_insert on public.brief_versions for insert to authenticated '
                 'with check (%s and (changed_by is null or changed_by = (select auth.uid())))', staff);

  -- AI bookkeeping: written by the service role only (the functions layer).
  execute format('create policy ai_run_logs_select on public.ai_run_logs for select to authenticated using (%s)', writers);
  execute format('create policy ai_cache_select on public.ai_cache for select to authenticated using (org_id is null or %s)', writers);
end
$$;

------------------------------------------------------------------------------------------
-- Catalogue: anon and authenticated read active global rows; the global catalogue is
-- written by the service role only; an org's own services by its owners and admins.
------------------------------------------------------------------------------------------
create policy systems_select on public.systems
  for select to anon, authenticated
  using (is_active);

create policy services_select_anon on public.services
  for select to anon
  using (org_id is null and is_active);
create policy services_select on public.services
  for select to authenticated
  using ((org_id is null and is_active) or org_id = any (array(select private.get_user_org_ids())));
create policy services_insert on public.services
  for insert to authenticated
  with check (org_id = any (array(select private.get_user_org_ids(array['owner', 'admin']))));
create policy services_update on public.services
  for update to authenticated
  using (org_id = any (array(select private.get_user_org_ids(array['owner', 'admin']))))
  with check (org_id = any (array(select private.get_user_org_ids(array['owner', 'admin']))));
create policy services_delete on public.services
  for delete to authenticated
  using (org_id = any (array(select private.get_user_org_ids(array['owner', 'admin']))));

create policy system_services_select on public.system_services
  for select to anon, authenticated
  using (
    exists (select 1 from public.systems s where s.id = system_id and s.is_active)
    and exists (select 1 from public.services sv where sv.id = service_id and sv.org_id is null and sv.is_active)
  );
