-- Reauthentication (supabase-js `auth.reauthenticate()`, then `updateUser({ password, nonce })`):
-- a code sent to the signed-in user's email proves a fresh sign-in for a sensitive change. It
-- is one more one-time token purpose; `reauthentication_sent_at` is GoTrue's column for when
-- the last code went out.
alter table auth.one_time_tokens drop constraint if exists one_time_tokens_token_type_check;
alter table auth.one_time_tokens add constraint one_time_tokens_token_type_check
  check (token_type in ('magiclink', 'recovery', 'signup', 'invite', 'reauthentication'));
alter table auth.users add column if not exists reauthentication_sent_at timestamptz;
