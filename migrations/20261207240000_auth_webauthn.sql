-- WebAuthn second factors (GoTrue's factor_type 'webauthn'): the registered credential of a
-- factor (its id, COSE public key, signature counter, flags) and the AAGUID of the
-- authenticator, and the ceremony state of a challenge (the random challenge, the user it was
-- issued for, create or request). GoTrue's column names.
alter table auth.mfa_factors alter column secret drop not null;
alter table auth.mfa_factors add column if not exists web_authn_credential jsonb;
alter table auth.mfa_factors add column if not exists web_authn_aaguid uuid;
alter table auth.mfa_factors drop constraint if exists mfa_factors_totp_has_secret;
alter table auth.mfa_factors add constraint mfa_factors_totp_has_secret
  check (factor_type <> 'totp' or secret is not null);
-- One credential is one factor of one user.
create unique index if not exists mfa_factors_user_web_authn_credential_unique
  on auth.mfa_factors (user_id, (web_authn_credential ->> 'id'))
  where web_authn_credential is not null;
alter table auth.mfa_challenges add column if not exists web_authn_session_data jsonb;
