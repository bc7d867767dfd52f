-- Core multi-tenant tables: organizations (the tenant root), profiles, team_members,
-- clients, projects. Conventions (docs/schema.md §2): uuid ids, timestamptz timestamps,
-- org_id on every tenant table, unique (org_id, id) on every tenant parent so that children
-- refer to it with a composite foreign key and can never point at another tenant's row.
-- Indexes other than primary/unique keys live in the _indexes migration; policies in _policies.

create table public.organizations (
  id uuid primary key default gen_random_uuid(),
  name text not null check (length(btrim(name)) > 0),
  slug text not null unique check (slug ~ '^[a-z0-9][a-z0-9-]*$'),
  settings jsonb not null default '{}'::jsonb check (jsonb_typeof(settings) = 'object'),
  -- Who created it (the insert policy requires it to be the caller). Lets the creator read
  -- the row back in the creating transaction, before the owner membership exists.
  created_by uuid default auth.uid() references auth.users (id) on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.organizations is 'Tenant root: an agency (or a personal workspace).';

create table public.profiles (
  id uuid primary key references auth.users (id) on delete cascade,
  full_name text,
  avatar_url text,
  email text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.profiles is 'One per auth user, created by private.handle_new_user().';

create table public.team_members (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  user_id uuid not null references auth.users (id) on delete cascade,
  role text not null default 'member'
    check (role in ('owner', 'admin', 'consultant', 'member', 'client')),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, user_id)
);
comment on table public.team_members is 'Membership of a user in an org with a role; people columns elsewhere refer to (org_id, user_id).';

create table public.clients (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  name text not null check (length(btrim(name)) > 0),
  industry text,
  website_url text,
  contact_name text,
  contact_email text,
  contact_phone text,
  company_size text check (company_size in ('small', 'medium', 'large', 'enterprise')),
  status text not null default 'lead'
    check (status in ('lead', 'prospect', 'client', 'churned', 'archived')),
  lifecycle_stage text,
  pipeline_stage text
    check (pipeline_stage in ('new', 'contacted', 'qualified', 'proposal', 'negotiation', 'won', 'lost')),
  health_score integer not null default 50 check (health_score between 0 and 100),
  value_cents bigint check (value_cents >= 0),
  last_activity_at timestamptz,
  next_action_date date,
  onboarded_at timestamptz,
  assigned_to uuid,
  notes text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  foreign key (org_id, assigned_to) references public.team_members (org_id, user_id)
    on delete set null (assigned_to)
);

create table public.projects (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  client_id uuid,
  name text not null check (length(btrim(name)) > 0),
  description text,
  status text not null default 'draft'
    check (status in ('draft', 'discovery', 'planning', 'active', 'on_hold', 'completed', 'cancelled', 'archived')),
  current_phase text check (current_phase in ('phase_1', 'phase_2', 'phase_3')),
  progress integer not null default 0 check (progress between 0 and 100),
  start_date date,
  end_date date,
  value_cents bigint check (value_cents >= 0),
  dashboard_activated_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  check (end_date is null or start_date is null or end_date >= start_date),
  foreign key (org_id, client_id) references public.clients (org_id, id)
    on delete set null (client_id)
);
