-- Multi-factor authentication (GoTrue's /factors): TOTP factors and their challenges, and the
-- factor that raised a session to aal2. Owned by the auth service; no API role may read them
-- (a factor's secret is what its codes are computed from).
create table if not exists auth.mfa_factors (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  friendly_name text not null default '',
  factor_type text not null check (factor_type in ('totp', 'phone', 'webauthn')),
  status text not null check (status in ('unverified', 'verified')),
  -- base32 TOTP secret
  secret text not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  last_challenged_at timestamptz,
  -- the RFC 6238 time step of the last accepted code: that step and older ones are refused,
  -- so each code is used once
  last_used_step bigint
);
alter table auth.mfa_factors owner to supabase_auth_admin;
create index if not exists mfa_factors_user_id_idx on auth.mfa_factors (user_id, created_at);
create unique index if not exists mfa_factors_user_friendly_name_unique
  on auth.mfa_factors (user_id, friendly_name) where friendly_name <> '';

create table if not exists auth.mfa_challenges (
  id uuid primary key default gen_random_uuid(),
  factor_id uuid not null references auth.mfa_factors (id) on delete cascade,
  created_at timestamptz not null default now(),
  verified_at timestamptz,
  -- the client address that asked; the code must come from the same one
  ip_address text not null
);
alter table auth.mfa_challenges owner to supabase_auth_admin;
create index if not exists mfa_challenges_factor_id_idx on auth.mfa_challenges (factor_id, created_at);

alter table auth.sessions add column if not exists factor_id uuid
  references auth.mfa_factors (id) on delete set null;
create index if not exists sessions_factor_id_idx on auth.sessions (factor_id);
