-- The operator console (`/console/`, docs/console.md): its accounts, sessions, audit log and
-- saved SQL snippets. Operators are not app users: they live in their own schema, reachable
-- only by the auth surface's login `supabase_auth_admin` (which no API request can become,
-- see 20261206000500_auth_own_login.sql). No API role (anon, authenticated, service_role) and
-- not the API login (authenticator) has any privilege here, so neither /rest/v1 nor SQL run
-- from the console's own SQL page (as service_role or a user) can read a password hash or a
-- session, or rewrite the audit log.
create schema if not exists console;
revoke all on schema console from public;
grant usage on schema console to supabase_auth_admin;

create table console.admins (
  id uuid primary key default gen_random_uuid(),
  -- An e-mail address, or the DASHBOARD_USERNAME of a Supabase-style configuration.
  email text not null,
  -- argon2id (the auth surface's hashing); null until a one-time setup link is used.
  password_hash text,
  -- SHA-256 of the one-time setup token printed by `agencyflow console add-admin --link`.
  setup_token_hash text,
  setup_token_expires_at timestamptz,
  created_at timestamptz not null default now(),
  last_sign_in_at timestamptz,
  constraint admins_email_not_blank check (length(btrim(email)) > 0)
);
create unique index admins_email_key on console.admins (lower(email));

create table console.sessions (
  -- SHA-256 of the cookie's random token: a leaked table row is no session.
  token_hash text primary key,
  admin_id uuid not null references console.admins (id) on delete cascade,
  csrf_token text not null,
  created_at timestamptz not null default now(),
  last_seen_at timestamptz not null default now(),
  ip text,
  user_agent text
);
create index sessions_admin_idx on console.sessions (admin_id);

create table console.audit_log (
  id bigint generated always as identity primary key,
  at timestamptz not null default now(),
  admin_id uuid,
  admin_email text,
  action text not null,
  target text,
  detail jsonb,
  ip text,
  user_agent text,
  -- the console request's x-request-id
  request_id text
);
create index audit_log_at_idx on console.audit_log (at desc);

create table console.snippets (
  id uuid primary key default gen_random_uuid(),
  admin_id uuid not null references console.admins (id) on delete cascade,
  name text not null check (length(btrim(name)) > 0),
  sql text not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index snippets_admin_idx on console.snippets (admin_id);

revoke all on all tables in schema console from public, anon, authenticated, service_role, authenticator;
grant select, insert, update, delete on console.admins, console.sessions, console.snippets to supabase_auth_admin;
-- The audit log is append-only, even for the console's own login.
grant select, insert on console.audit_log to supabase_auth_admin;
