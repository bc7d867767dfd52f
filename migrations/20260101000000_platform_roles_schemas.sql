-- Platform objects that Supabase provides and a self-hosted agencyflow must create itself:
-- the API roles, the platform schemas, the extensions (in `extensions`, never `public`),
-- and the auth.* helper functions that read the per-request JWT claims.

-- Roles are cluster-wide: create them only when absent so several databases of one
-- cluster (tests clone a template per test) can each run this migration.
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit;
  end if;
  -- The auth service's own role: owns auth.* tables; the API switches to it for /auth/v1 work.
  if not exists (select 1 from pg_roles where rolname = 'supabase_auth_admin') then
    create role supabase_auth_admin nologin noinherit createrole;
  end if;
end
$$;

grant anon, authenticated, service_role, supabase_auth_admin to authenticator;

-- PostgREST and Supabase's linter read the exposed schemas from this role setting.
alter role authenticator set pgrst.db_schemas = 'public';
-- The API serves short OLTP statements: JIT compilation (hundreds of ms once a plan's
-- estimated cost passes jit_above_cost) only ever costs it time (bench/rest.sh).
alter role authenticator set jit = off;
-- Per-role statement timeouts as Supabase sets them (applied by the server per request).
alter role anon set statement_timeout = '3s';
alter role authenticated set statement_timeout = '8s';

create schema if not exists extensions;
create schema if not exists auth authorization supabase_auth_admin;
create schema if not exists vault;
create schema if not exists private;

create extension if not exists pgcrypto with schema extensions;
create extension if not exists "uuid-ossp" with schema extensions;
create extension if not exists vector with schema extensions;

-- pg_stat_statements needs shared_preload_libraries: the embedded cluster sets it,
-- an external database may not, and then we skip it with a notice.
do $$
begin
  if current_setting('shared_preload_libraries', true) like '%pg_stat_statements%' then
    create extension if not exists pg_stat_statements with schema extensions;
  else
    raise notice 'pg_stat_statements is not in shared_preload_libraries; skipping the extension';
  end if;
end
$$;

grant usage on schema extensions to anon, authenticated, service_role, supabase_auth_admin;
grant usage on schema auth to anon, authenticated, service_role;
grant usage on schema public to anon, authenticated, service_role;
grant all on schema public to supabase_auth_admin;

-- Default privileges as Supabase has them: the API roles get table, sequence and function
-- privileges on objects created in public, and RLS decides what each row shows.
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
alter default privileges in schema extensions grant all on functions to anon, authenticated, service_role;
-- Nothing in `private` is callable unless granted explicitly.
alter default privileges in schema private revoke execute on functions from public;

-- auth helpers: read the GUC the server sets per request. As Supabase defines them: STABLE
-- SQL without a SET clause, so the planner inlines them and `(select auth.uid())` in a
-- policy is one cheap InitPlan (a SET clause forbids inlining and re-plans the body on every
-- statement: bench/rls.sh). Safe without a search_path: every name is schema-qualified,
-- operators included.
create or replace function auth.jwt() returns jsonb
language sql stable
as $$
  select coalesce(
    nullif(pg_catalog.current_setting('request.jwt.claim', true), ''),
    nullif(pg_catalog.current_setting('request.jwt.claims', true), '')
  )::pg_catalog.jsonb
$$;

create or replace function auth.uid() returns uuid
language sql stable
as $$
  select nullif(
    coalesce(
      pg_catalog.current_setting('request.jwt.claim.sub', true),
      (nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::pg_catalog.jsonb operator(pg_catalog.->>) 'sub')
    ), ''
  )::pg_catalog.uuid
$$;

create or replace function auth.role() returns text
language sql stable
as $$
  select nullif(
    coalesce(
      pg_catalog.current_setting('request.jwt.claim.role', true),
      (nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::pg_catalog.jsonb operator(pg_catalog.->>) 'role')
    ), ''
  )::pg_catalog.text
$$;

create or replace function auth.email() returns text
language sql stable
as $$
  select nullif(
    coalesce(
      pg_catalog.current_setting('request.jwt.claim.email', true),
      (nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::pg_catalog.jsonb operator(pg_catalog.->>) 'email')
    ), ''
  )::pg_catalog.text
$$;

grant execute on function auth.jwt(), auth.uid(), auth.role(), auth.email()
  to anon, authenticated, service_role, supabase_auth_admin;

-- auth.users: GoTrue-compatible columns that clients and policies read. Never exposed
-- through the API (auth is not an exposed schema); only supabase_auth_admin writes it.
create table if not exists auth.users (
  instance_id uuid,
  id uuid primary key default gen_random_uuid(),
  aud varchar(255) default 'authenticated',
  role varchar(255) default 'authenticated',
  email varchar(255),
  encrypted_password varchar(255),
  email_confirmed_at timestamptz,
  invited_at timestamptz,
  confirmation_token varchar(255),
  confirmation_sent_at timestamptz,
  recovery_token varchar(255),
  recovery_sent_at timestamptz,
  email_change varchar(255),
  email_change_sent_at timestamptz,
  last_sign_in_at timestamptz,
  raw_app_meta_data jsonb not null default '{}'::jsonb,
  raw_user_meta_data jsonb not null default '{}'::jsonb,
  is_super_admin boolean,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  phone text unique default null,
  phone_confirmed_at timestamptz,
  confirmed_at timestamptz generated always as (least(email_confirmed_at, phone_confirmed_at)) stored,
  banned_until timestamptz,
  deleted_at timestamptz,
  is_anonymous boolean not null default false,
  is_sso_user boolean not null default false
);
alter table auth.users owner to supabase_auth_admin;
-- Emails are unique among non-anonymous users, case-insensitively (GoTrue stores them lower-cased).
create unique index if not exists users_email_partial_key on auth.users (lower(email)) where email is not null and is_sso_user = false;
create index if not exists users_is_anonymous_idx on auth.users (is_anonymous);
grant select on auth.users to service_role;
