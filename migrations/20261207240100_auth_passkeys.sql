-- Passkeys (GoTrue's /passkeys): discoverable WebAuthn credentials that sign a user in, and the
-- state of their ceremonies. GoTrue's tables and columns; owned by the auth service, no API
-- role reads them.
create table if not exists auth.webauthn_credentials (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  credential_id bytea not null,
  public_key bytea not null,
  attestation_type text not null default 'none',
  aaguid uuid,
  sign_count bigint not null default 0,
  transports jsonb not null default '[]'::jsonb,
  backup_eligible boolean not null default false,
  backed_up boolean not null default false,
  friendly_name text not null default '',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  last_used_at timestamptz
);
alter table auth.webauthn_credentials owner to supabase_auth_admin;
create unique index if not exists webauthn_credentials_credential_id_key
  on auth.webauthn_credentials (credential_id);
create index if not exists webauthn_credentials_user_id_idx
  on auth.webauthn_credentials (user_id, created_at);

-- A registration challenge names its user; a sign-in challenge names none (the account comes
-- from the credential), so one can never be answered as the other.
create table if not exists auth.webauthn_challenges (
  id uuid primary key default gen_random_uuid(),
  user_id uuid references auth.users (id) on delete cascade,
  challenge_type text not null check (challenge_type in ('signup', 'registration', 'authentication')),
  session_data jsonb not null,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null
);
alter table auth.webauthn_challenges owner to supabase_auth_admin;
create index if not exists webauthn_challenges_expires_at_idx on auth.webauthn_challenges (expires_at);
