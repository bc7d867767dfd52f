-- The five-step wizard and the business-context snapshots it produces.

create table public.wizard_sessions (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  project_id uuid,
  -- The user who runs the wizard (often an anonymous user who later converts).
  user_id uuid references auth.users (id) on delete set null,
  current_step integer not null default 1 check (current_step between 1 and 5),
  wizard_completed_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  foreign key (org_id, project_id) references public.projects (org_id, id)
    on delete set null (project_id)
);

create table public.wizard_answers (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  session_id uuid not null,
  screen_id text not null check (screen_id in ('step-1', 'step-2', 'step-3', 'step-4', 'step-5')),
  step_number integer not null check (step_number between 1 and 5),
  data jsonb not null default '{}'::jsonb,
  ai_results jsonb,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  unique (session_id, screen_id),
  check (screen_id = 'step-' || step_number::text),
  foreign key (org_id, session_id) references public.wizard_sessions (org_id, id) on delete cascade
);

create table public.context_snapshots (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  project_id uuid not null,
  version integer not null default 1 check (version >= 1),
  is_active boolean not null default true,
  summary text,
  metrics jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  unique (project_id, version),
  foreign key (org_id, project_id) references public.projects (org_id, id) on delete cascade
);
-- At most one active snapshot per project.
create unique index context_snapshots_one_active_per_project
  on public.context_snapshots (project_id) where is_active;
