-- Supabase Storage's schema: buckets and objects, with RLS deciding every object operation
-- as the caller (the storage API runs its object statements in the caller's role and claims).
-- Files live outside the database (local disk or S3) under `<bucket>/<name>/<version>`; a row
-- names the version that is visible, so a file without a row is invisible garbage, never data.

create schema if not exists storage;
grant usage on schema storage to anon, authenticated, service_role;

create table storage.buckets (
  id text primary key check (id <> '' and id !~ '[/\x00-\x1f]'),
  name text not null,
  owner uuid,
  public boolean not null default false,
  file_size_limit bigint check (file_size_limit is null or file_size_limit > 0),
  allowed_mime_types text[],
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create unique index bname on storage.buckets (name);

create table storage.objects (
  id uuid primary key default gen_random_uuid(),
  bucket_id text not null references storage.buckets (id),
  name text not null,
  owner uuid,
  -- {"size": bytes, "mimetype": "...", "cacheControl": "...", "eTag": "...", "lastModified": "..."}
  metadata jsonb,
  user_metadata jsonb,
  -- The file version this row makes visible: `<bucket>/<name>/<version>` in the backend.
  version text,
  path_tokens text[] generated always as (pg_catalog.string_to_array(name, '/')) stored,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  last_accessed_at timestamptz not null default now(),
  unique (bucket_id, name)
);
create index name_prefix_search on storage.objects (bucket_id, name text_pattern_ops);

alter table storage.buckets enable row level security;
alter table storage.buckets force row level security;
alter table storage.objects enable row level security;
alter table storage.objects force row level security;

-- Supabase grants everything to the API roles and lets RLS decide.
grant all on storage.buckets, storage.objects to anon, authenticated, service_role;

-- `a/b/c.pdf` → {a,b}; Supabase's helpers, as inlinable SQL.
create or replace function storage.foldername(name text)
returns text[]
language sql
immutable
as $$
  select (pg_catalog.string_to_array(name, '/'))[1:pg_catalog.array_length(pg_catalog.string_to_array(name, '/'), 1) - 1]
$$;

-- `a/b/c.pdf` → c.pdf
create or replace function storage.filename(name text)
returns text
language sql
immutable
as $$
  select (pg_catalog.string_to_array(name, '/'))[pg_catalog.array_length(pg_catalog.string_to_array(name, '/'), 1)]
$$;

-- `a/b/c.pdf` → pdf
create or replace function storage.extension(name text)
returns text
language sql
immutable
as $$
  select case when storage.filename(name) like '%.%'
    then pg_catalog.reverse(pg_catalog.split_part(pg_catalog.reverse(storage.filename(name)), '.', 1))
  end
$$;

-- The first folder of `name` as an org id; null when it is absent or not a uuid (so a policy
-- comparing it never raises on `misc/file.txt`).
create or replace function storage.org_folder(name text)
returns uuid
language sql
immutable
as $$
  select case
    when (storage.foldername(name))[1] ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
    then ((storage.foldername(name))[1])::uuid
  end
$$;

grant execute on function storage.foldername(text), storage.filename(text), storage.extension(text),
  storage.org_folder(text) to anon, authenticated, service_role;

-- The documents bucket: the files behind public.documents.storage_path (`<org_id>/...`).
insert into storage.buckets (id, name, public) values ('documents', 'documents', false);

-- Members of an org read and write objects under `<org_id>/` only.
create policy documents_member_select on storage.objects
  for select to authenticated
  using (bucket_id = 'documents' and storage.org_folder(name) = any (array(select private.get_user_org_ids())));

create policy documents_member_insert on storage.objects
  for insert to authenticated
  with check (bucket_id = 'documents' and storage.org_folder(name) = any (array(select private.get_user_org_ids())));

create policy documents_member_update on storage.objects
  for update to authenticated
  using (bucket_id = 'documents' and storage.org_folder(name) = any (array(select private.get_user_org_ids())))
  with check (bucket_id = 'documents' and storage.org_folder(name) = any (array(select private.get_user_org_ids())));

create policy documents_member_delete on storage.objects
  for delete to authenticated
  using (bucket_id = 'documents' and storage.org_folder(name) = any (array(select private.get_user_org_ids())));
