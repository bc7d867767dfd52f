-- The catalogue: global AI systems and services (plus org-specific custom services), their
-- mapping, and what a project selected. systems and system_services are global (no org_id);
-- services.org_id is NULL for the global catalogue.

create table public.systems (
  id text primary key check (id ~ '^[a-z0-9][a-z0-9_-]*$'),
  name text not null,
  description text,
  icon text,
  display_order integer not null default 0,
  is_active boolean not null default true,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create table public.services (
  id uuid primary key default gen_random_uuid(),
  org_id uuid references public.organizations (id) on delete cascade,
  name text not null,
  slug text not null check (slug ~ '^[a-z0-9][a-z0-9-]*$'),
  category text not null default 'core' check (category in ('core', 'industry_specific', 'custom')),
  description text,
  benefits jsonb not null default '[]'::jsonb,
  features jsonb not null default '[]'::jsonb,
  is_active boolean not null default true,
  display_order integer not null default 0,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  -- org slugs unique within the org (NULL org_id rows are distinct here) ...
  unique (org_id, slug)
);
-- ... and global slugs unique among global rows.
create unique index services_global_slug_key on public.services (slug) where org_id is null;

create table public.system_services (
  id uuid primary key default gen_random_uuid(),
  system_id text not null references public.systems (id) on delete cascade,
  service_id uuid not null references public.services (id) on delete cascade,
  is_primary boolean not null default false,
  display_order integer not null default 0,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (system_id, service_id)
);

create table public.project_systems (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  project_id uuid not null,
  system_id text not null references public.systems (id) on delete cascade,
  is_recommended boolean not null default false,
  is_selected boolean not null default false,
  why_it_matters text,
  recommendation_metadata jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  unique (project_id, system_id),
  foreign key (org_id, project_id) references public.projects (org_id, id) on delete cascade
);

create table public.project_services (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  project_id uuid not null,
  -- A global service or one of this org's own (enforced by a trigger: services.org_id is nullable,
  -- so a composite key cannot express it).
  service_id uuid not null references public.services (id) on delete cascade,
  status text not null default 'planned' check (status in ('planned', 'active', 'paused', 'completed')),
  started_at timestamptz,
  completed_at timestamptz,
  notes text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  unique (project_id, service_id),
  foreign key (org_id, project_id) references public.projects (org_id, id) on delete cascade
);
