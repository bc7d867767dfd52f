-- Vault: encrypted secrets (the seed's supabase_vault, which is not packaged for Debian).
--
-- Encryption: pgcrypto's OpenPGP symmetric encryption (AES-256, with the OpenPGP modification
-- detection code, so tampering is detected on decryption). The key is held by the server and
-- supplied per transaction in the GUC `agencyflow.vault_key`
-- (`select set_config('agencyflow.vault_key', $1, true)`); it is never stored in the database.
-- Each ciphertext is bound to its row: the encrypted plaintext is `<id>:<secret>`, and
-- decryption checks the id, so a ciphertext copied onto another row does not decrypt.
--
-- Access: schema vault is not exposed through the API. Only service_role (and the owner) may
-- use it; vault.decrypted_secrets is readable by service_role only.

create table if not exists vault.secrets (
  id uuid primary key default gen_random_uuid(),
  name text unique,
  description text not null default '',
  secret bytea not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table vault.secrets is 'Encrypted secrets; the key comes from the server (GUC agencyflow.vault_key), never from the database.';

create or replace function vault._key()
returns text
language plpgsql
stable
set search_path = ''
as $$
declare
  v_key text := current_setting('agencyflow.vault_key', true);
begin
  if v_key is null or v_key = '' then
    raise exception 'vault key is not set'
      using errcode = '55000',
            hint = 'The server must supply the key per transaction: select set_config(''agencyflow.vault_key'', <key>, true).';
  end if;
  return v_key;
end;
$$;

create or replace function vault._encrypt(secret_id uuid, plaintext text)
returns bytea
language sql
volatile
set search_path = ''
as $$
  select extensions.pgp_sym_encrypt(
    secret_id::text || ':' || plaintext,
    vault._key(),
    'cipher-algo=aes256, compress-algo=0, s2k-digest-algo=sha256'
  )
$$;

create or replace function vault._decrypt(secret_id uuid, ciphertext bytea)
returns text
language plpgsql
stable
set search_path = ''
as $$
declare
  v_plain text;
  v_prefix text := secret_id::text || ':';
begin
  if ciphertext is null then
    return null;
  end if;
  v_plain := extensions.pgp_sym_decrypt(ciphertext, vault._key());
  if left(v_plain, length(v_prefix)) <> v_prefix then
    raise exception 'vault secret % does not belong to this row', secret_id using errcode = '22000';
  end if;
  return substr(v_plain, length(v_prefix) + 1);
end;
$$;

create or replace function vault.create_secret(new_secret text, new_name text default null, new_description text default '')
returns uuid
language plpgsql
set search_path = ''
as $$
declare
  v_id uuid := gen_random_uuid();
begin
  if new_secret is null then
    raise exception 'new_secret must not be null' using errcode = '22004';
  end if;
  insert into vault.secrets (id, name, description, secret)
  values (v_id, new_name, coalesce(new_description, ''), vault._encrypt(v_id, new_secret));
  return v_id;
end;
$$;

create or replace function vault.update_secret(
  secret_id uuid,
  new_secret text default null,
  new_name text default null,
  new_description text default null
)
returns void
language plpgsql
set search_path = ''
as $$
begin
  update vault.secrets s
     set secret = case when new_secret is null then s.secret else vault._encrypt(s.id, new_secret) end,
         name = coalesce(new_name, s.name),
         description = coalesce(new_description, s.description),
         updated_at = now()
   where s.id = secret_id;
  if not found then
    raise exception 'vault secret % not found', secret_id using errcode = 'P0002';
  end if;
end;
$$;

create or replace view vault.decrypted_secrets
with (security_invoker = true)
as
select s.id,
       s.name,
       s.description,
       s.secret,
       vault._decrypt(s.id, s.secret) as decrypted_secret,
       s.created_at,
       s.updated_at
from vault.secrets s;

revoke all on schema vault from public, anon, authenticated;
revoke all on all tables in schema vault from public, anon, authenticated;
revoke all on all functions in schema vault from public, anon, authenticated;
grant usage on schema vault to service_role;
grant select, insert, update, delete on vault.secrets to service_role;
grant select on vault.decrypted_secrets to service_role;
grant execute on function vault._key(), vault._encrypt(uuid, text), vault._decrypt(uuid, bytea),
  vault.create_secret(text, text, text), vault.update_secret(uuid, text, text, text)
  to service_role;
