-- Sign-in with external providers (OAuth 2.0 / OpenID Connect), as GoTrue keeps it:
-- a PKCE flow state is created at /authorize, before anybody is known (user_id is filled at
-- the callback), and remembers the provider and the provider's tokens, which the PKCE
-- exchange returns as provider_token / provider_refresh_token.
alter table auth.flow_state alter column user_id drop not null;
alter table auth.flow_state add column if not exists provider_type text not null default '';
alter table auth.flow_state add column if not exists provider_access_token text;
alter table auth.flow_state add column if not exists provider_refresh_token text;
alter table auth.flow_state add column if not exists updated_at timestamptz not null default now();
