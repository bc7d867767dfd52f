-- Delivery: roadmaps (1:1 with a context snapshot, so versioned through it), their phases,
-- tasks, milestones, deliverables, and the versioned briefs.

create table public.roadmaps (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  snapshot_id uuid not null unique,
  total_duration text,
  roi_projection jsonb,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  foreign key (org_id, snapshot_id) references public.context_snapshots (org_id, id) on delete cascade
);

create table public.roadmap_phases (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  roadmap_id uuid not null,
  title text not null,
  description text,
  order_index integer not null check (order_index >= 0),
  outcomes jsonb not null default '[]'::jsonb,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  unique (roadmap_id, order_index),
  foreign key (org_id, roadmap_id) references public.roadmaps (org_id, id) on delete cascade
);

create table public.tasks (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  phase_id uuid not null,
  title text not null check (length(btrim(title)) > 0),
  description text,
  owner text not null default 'agency' check (owner in ('client', 'agency', 'automated')),
  status text not null default 'todo' check (status in ('todo', 'in_progress', 'review', 'done', 'blocked')),
  priority text not null default 'medium' check (priority in ('low', 'medium', 'high', 'urgent')),
  effort text check (effort in ('s', 'm', 'l', 'xl')),
  due_date date,
  tags text[] not null default '{}',
  assigned_to uuid,
  ai_generated boolean not null default false,
  ai_suggestion text,
  -- Set when status becomes done (trigger), cleared when it leaves done; analytics throughput.
  completed_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  foreign key (org_id, phase_id) references public.roadmap_phases (org_id, id) on delete cascade,
  foreign key (org_id, assigned_to) references public.team_members (org_id, user_id)
    on delete set null (assigned_to)
);

create table public.milestones (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  project_id uuid not null,
  phase_id uuid,
  title text not null,
  description text,
  due_date date,
  status text not null default 'upcoming'
    check (status in ('upcoming', 'in_progress', 'completed', 'overdue', 'delayed')),
  completed_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  foreign key (org_id, project_id) references public.projects (org_id, id) on delete cascade,
  foreign key (org_id, phase_id) references public.roadmap_phases (org_id, id) on delete set null (phase_id)
);

create table public.deliverables (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  phase_id uuid not null,
  title text not null,
  description text,
  status text not null default 'pending'
    check (status in ('pending', 'in_progress', 'in_review', 'approved', 'delivered', 'rejected')),
  due_date date,
  delivered_at timestamptz,
  assigned_to uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  foreign key (org_id, phase_id) references public.roadmap_phases (org_id, id) on delete cascade,
  foreign key (org_id, assigned_to) references public.team_members (org_id, user_id)
    on delete set null (assigned_to)
);

create table public.briefs (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  project_id uuid not null,
  title text,
  content jsonb not null default '{}'::jsonb,
  status text not null default 'draft' check (status in ('draft', 'in_review', 'approved', 'archived')),
  version integer not null default 1 check (version >= 1),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  unique (project_id, version),
  foreign key (org_id, project_id) references public.projects (org_id, id) on delete cascade
);

-- Append-only history of a brief (written by save_brief() and the briefs insert trigger).
create table public.brief_versions (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  brief_id uuid not null,
  version integer not null check (version >= 1),
  content jsonb not null,
  diff jsonb not null default '{}'::jsonb,
  change_summary text,
  changed_by uuid,
  created_at timestamptz not null default now(),
  unique (org_id, id),
  unique (brief_id, version),
  foreign key (org_id, brief_id) references public.briefs (org_id, id) on delete cascade,
  foreign key (org_id, changed_by) references public.team_members (org_id, user_id)
    on delete set null (changed_by)
);
