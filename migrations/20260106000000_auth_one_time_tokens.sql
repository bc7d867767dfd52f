-- One-time email tokens (magic links, recovery, signup confirmation, invites), as Supabase
-- Auth keeps them: one live token per user and purpose, looked up by `token_hash` (what the
-- email link carries; also derived from the email and the 6-digit code the email shows).
create table if not exists auth.one_time_tokens (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  token_type text not null check (token_type in ('magiclink', 'recovery', 'signup', 'invite')),
  token_hash text not null,
  relates_to text not null,
  created_at timestamptz not null default now(),
  constraint one_time_tokens_token_hash_unique unique (token_hash),
  constraint one_time_tokens_user_type_unique unique (user_id, token_type)
);
alter table auth.one_time_tokens owner to supabase_auth_admin;

-- PKCE flows (supabase-js `flowType: 'pkce'`): the code challenge sent with /otp or
-- /recover; the email link then redirects with `?code=<auth_code>`, which the client
-- exchanges, with its code verifier, at /token?grant_type=pkce.
create table if not exists auth.flow_state (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  auth_code text not null,
  code_challenge_method text not null check (code_challenge_method in ('s256', 'plain')),
  code_challenge text not null,
  authentication_method text not null,
  created_at timestamptz not null default now(),
  auth_code_issued_at timestamptz,
  constraint flow_state_auth_code_unique unique (auth_code)
);
create index if not exists flow_state_user_method_idx
  on auth.flow_state (user_id, authentication_method, created_at desc);
alter table auth.flow_state owner to supabase_auth_admin;
