-- Documents: files attached to a wizard session and/or a project, with extracted text,
-- a 768-dimension embedding (cleared and re-queued when the text changes) and a generated
-- full-text vector for hybrid search.

create table public.documents (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  wizard_session_id uuid,
  project_id uuid,
  name text not null,
  storage_path text,
  file_size bigint check (file_size >= 0),
  mime_type text,
  category text not null default 'other' check (category in ('briefs', 'requirements', 'assets', 'reference', 'other')),
  content_text text,
  summary text,
  embedding extensions.vector(768),
  embedded_at timestamptz,
  status text not null default 'active' check (status in ('active', 'archived')),
  uploaded_by uuid,
  fts tsvector generated always as (
    setweight(to_tsvector('english'::regconfig, coalesce(name, '')), 'A') ||
    setweight(to_tsvector('english'::regconfig, coalesce(summary, '')), 'B') ||
    setweight(to_tsvector('english'::regconfig, coalesce(content_text, '')), 'C')
  ) stored,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  check (wizard_session_id is not null or project_id is not null),
  foreign key (org_id, wizard_session_id) references public.wizard_sessions (org_id, id) on delete cascade,
  foreign key (org_id, project_id) references public.projects (org_id, id) on delete cascade,
  foreign key (org_id, uploaded_by) references public.team_members (org_id, user_id)
    on delete set null (uploaded_by)
);
