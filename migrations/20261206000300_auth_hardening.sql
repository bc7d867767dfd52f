-- Auth hardening (security issue #14).
--
-- Email one-time tokens count the wrong codes tried against them: after a few (the server's
-- limit) the token is deleted, so guessing a 6-digit code is hopeless however many addresses
-- the guesses come from. A token issued for a PKCE flow is marked: its link must go through
-- the flow (auth code + code verifier), never straight to a session.
alter table auth.one_time_tokens add column if not exists failed_attempts integer not null default 0;
alter table auth.one_time_tokens add column if not exists pkce boolean not null default false;

-- Email changes are proved by a code sent to the new address (`relates_to`).
alter table auth.one_time_tokens drop constraint if exists one_time_tokens_token_type_check;
alter table auth.one_time_tokens add constraint one_time_tokens_token_type_check
  check (token_type in ('magiclink', 'recovery', 'signup', 'invite', 'reauthentication', 'email_change'));

-- A code is checked against the live tokens of the address it names.
create index if not exists one_time_tokens_relates_to_idx on auth.one_time_tokens (lower(relates_to));

-- Tokens issued before this release were stored as an unkeyed hash of the address and the
-- code, which anyone can compute for all million codes: they are withdrawn (users ask again).
delete from auth.one_time_tokens;
