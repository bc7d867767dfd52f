-- Nobody joins an organisation without consent (security issue #14, docs/schema.md §6).
--
-- Before: team_members_insert let an owner or admin insert ANY user id into their org, and
-- that "member" then shared the org with them, so the victim's profile (e-mail included)
-- became readable. Now a person joins only by accepting an invitation: an `invitations`
-- row for their address, accepted by inserting their own membership while signed in as
-- that (confirmed) address; or by the service role. Owners and admins still change roles
-- and remove members, but can no longer move a membership to another user or org.
--
-- Also: authorship columns (`created_at`, `created_by`, `uploaded_by`, `changed_by`,
-- `wizard_sessions.user_id`) are set by the database for API callers, never taken from the
-- request body, and cannot be rewritten by an update.

create table public.invitations (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  email text not null check (email = lower(btrim(email)) and email like '%_@_%'),
  role text not null default 'member'
    check (role in ('owner', 'admin', 'consultant', 'member', 'client')),
  -- People columns refer to (org_id, user_id) memberships, as everywhere in the schema.
  invited_by uuid default auth.uid(),
  created_at timestamptz not null default now(),
  expires_at timestamptz not null default now() + interval '7 days',
  accepted_at timestamptz,
  accepted_by uuid,
  unique (org_id, id),
  foreign key (org_id, invited_by) references public.team_members (org_id, user_id)
    on delete set null (invited_by),
  foreign key (org_id, accepted_by) references public.team_members (org_id, user_id)
    on delete set null (accepted_by)
);
comment on table public.invitations is
  'An offer to join an org with a role, for one e-mail address; the invitee accepts it by inserting their own team_members row while signed in as that address.';
create unique index invitations_pending_org_email_key
  on public.invitations (org_id, email) where accepted_at is null;
create index invitations_email_idx on public.invitations (email) where accepted_at is null;
create index invitations_org_id_invited_by_idx on public.invitations (org_id, invited_by);
create index invitations_org_id_accepted_by_idx on public.invitations (org_id, accepted_by);

alter table public.invitations enable row level security;
alter table public.invitations force row level security;
grant select, insert, delete on public.invitations to authenticated;
grant select, insert, update, delete on public.invitations to service_role;

-- The signed-in user's e-mail, only once confirmed (an unproved address accepts nothing).
create or replace function private.current_user_confirmed_email()
returns text
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  return (
    select lower(u.email) from auth.users u
    where u.id = (select auth.uid()) and u.email_confirmed_at is not null
  );
end
$$;

-- Is there a pending, unexpired invitation to `org` with `role` for the caller's address?
create or replace function private.has_pending_invitation(org uuid, invited_role text)
returns boolean
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  return exists (
    select 1 from public.invitations i
    where i.org_id = org and i.role = invited_role and i.accepted_at is null
      and i.expires_at > now()
      and i.email = private.current_user_confirmed_email()
  );
end
$$;

revoke all on function private.current_user_confirmed_email() from public, anon;
revoke all on function private.has_pending_invitation(uuid, text) from public, anon;
grant execute on function private.current_user_confirmed_email(),
  private.has_pending_invitation(uuid, text) to authenticated, service_role;

-- Invitations: managers of the org see and send them (an admin cannot invite an owner);
-- the invitee sees the ones for their confirmed address and may decline (delete) them.
create policy invitations_select on public.invitations
  for select to authenticated
  using (
    org_id = any (array(select private.get_user_org_ids(array['owner', 'admin'])))
    or email = (select private.current_user_confirmed_email())
  );
create policy invitations_insert on public.invitations
  for insert to authenticated
  with check (
    invited_by = (select auth.uid())
    and (private.user_is_org_owner(org_id)
         or (role <> 'owner' and private.user_has_role_in_org(org_id, array['admin'])))
  );
create policy invitations_delete on public.invitations
  for delete to authenticated
  using (
    org_id = any (array(select private.get_user_org_ids(array['owner', 'admin'])))
    or email = (select private.current_user_confirmed_email())
  );

-- team_members: insert only one's own membership, and only against an invitation.
drop policy team_members_insert on public.team_members;
create policy team_members_insert on public.team_members
  for insert to authenticated
  with check (
    user_id = (select auth.uid())
    and private.has_pending_invitation(org_id, role)
  );

-- Accepting marks the invitation used (one invitation, one membership).
create or replace function private.consume_invitation()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  update public.invitations i
  set accepted_at = now(), accepted_by = new.user_id
  where i.org_id = new.org_id and i.accepted_at is null
    and i.email = (select lower(u.email) from auth.users u where u.id = new.user_id);
  return null;
end
$$;
revoke all on function private.consume_invitation() from public, anon, authenticated;
create trigger consume_invitation
  after insert on public.team_members
  for each row execute function private.consume_invitation();

-- A membership's org and user never change through the API: a role change is an update
-- of `role` only (an owner could otherwise hand their own row to someone else).
create or replace function private.freeze_membership_identity()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if current_user in ('anon', 'authenticated')
     and (new.org_id, new.user_id) is distinct from (old.org_id, old.user_id) then
    raise exception 'a membership cannot be moved to another user or organization'
      using errcode = '42501',
            hint = 'Invite the person instead: they join by accepting the invitation.';
  end if;
  return new;
end
$$;
revoke all on function private.freeze_membership_identity() from public, anon;
grant execute on function private.freeze_membership_identity() to authenticated, service_role;
create trigger freeze_membership_identity
  before update of org_id, user_id on public.team_members
  for each row execute function private.freeze_membership_identity();

------------------------------------------------------------------------------------------
-- Authorship set by the database. For API callers (anon, authenticated) a BEFORE trigger
-- stamps created_at = now() and the listed columns = auth.uid() on insert, and keeps their
-- old values on update. service_role and the schema's own SECURITY DEFINER code (e.g. the
-- activity log, which records who changed a client) are trusted and left alone.
------------------------------------------------------------------------------------------
create or replace function private.stamp_authorship()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  v_patch jsonb := '{}'::jsonb;
  v_old jsonb;
  i int;
begin
  -- Only created on tables that have created_at (below).
  if current_user not in ('anon', 'authenticated') then
    return new;
  end if;
  if tg_op = 'INSERT' then
    v_patch := jsonb_build_object('created_at', now());
    for i in 0 .. tg_nargs - 1 loop
      v_patch := v_patch || jsonb_build_object(tg_argv[i], (select auth.uid()));
    end loop;
  else
    v_old := to_jsonb(old);
    v_patch := jsonb_build_object('created_at', v_old -> 'created_at');
    for i in 0 .. tg_nargs - 1 loop
      v_patch := v_patch || jsonb_build_object(tg_argv[i], v_old -> tg_argv[i]);
    end loop;
  end if;
  new := jsonb_populate_record(new, v_patch);
  return new;
end
$$;
revoke all on function private.stamp_authorship() from public, anon;
grant execute on function private.stamp_authorship() to authenticated, service_role;

-- Every public table with created_at; authorship columns named per table.
do $$
declare
  t text;
  args text;
begin
  for t in
    select c.relname from pg_catalog.pg_class c
    where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')
      and exists (select 1 from pg_catalog.pg_attribute a
                  where a.attrelid = c.oid and a.attname = 'created_at' and not a.attisdropped)
    order by c.relname
  loop
    args := case t
      -- organizations.created_by: its insert policy already requires the caller.
      when 'documents' then '''uploaded_by'''
      when 'crm_interactions' then '''created_by'''
      when 'activities' then '''created_by'''
      when 'brief_versions' then '''changed_by'''
      when 'invitations' then '''invited_by'''
      when 'wizard_sessions' then '''user_id'''
      else ''
    end;
    execute format(
      'create trigger a_stamp_authorship before insert or update on public.%I
         for each row execute function private.stamp_authorship(%s)', t, args);
  end loop;
end
$$;
