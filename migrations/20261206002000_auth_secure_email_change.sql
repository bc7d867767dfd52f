-- Secure email change (GoTrue's GOTRUE_MAILER_SECURE_EMAIL_CHANGE_ENABLED): a user with an
-- address proves both the current address and the new one. The current address's token is
-- one more one-time token purpose; `email_change_confirm_status` counts the proofs of the
-- pending change (GoTrue's column): the second one makes the change.
alter table auth.one_time_tokens drop constraint if exists one_time_tokens_token_type_check;
alter table auth.one_time_tokens add constraint one_time_tokens_token_type_check
  check (token_type in ('magiclink', 'recovery', 'signup', 'invite', 'reauthentication',
                        'email_change', 'email_change_current'));
alter table auth.users add column if not exists email_change_confirm_status smallint not null default 0
  check (email_change_confirm_status between 0 and 2);
