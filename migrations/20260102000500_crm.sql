-- CRM: pipelines and stages, contacts, deals, interactions (with a 1536-dimension embedding
-- and a full-text vector) and the append-only activity timeline.

create type public.crm_interaction_type as enum ('email', 'call', 'meeting', 'note', 'linkedin', 'system');
create type public.crm_sentiment as enum ('positive', 'neutral', 'negative', 'churn_risk');

create table public.crm_pipelines (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  name text not null,
  is_default boolean not null default false,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id)
);
-- At most one default pipeline per org.
create unique index crm_pipelines_one_default_per_org on public.crm_pipelines (org_id) where is_default;

create table public.crm_stages (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  pipeline_id uuid not null,
  name text not null,
  probability integer not null default 0 check (probability between 0 and 100),
  display_order integer not null default 0,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  foreign key (org_id, pipeline_id) references public.crm_pipelines (org_id, id) on delete cascade
);

create table public.crm_contacts (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  client_id uuid,
  first_name text,
  last_name text,
  email text,
  phone text,
  linkedin_url text,
  job_title text,
  is_primary boolean not null default false,
  tags text[] not null default '{}',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  check (coalesce(first_name, last_name, email) is not null),
  foreign key (org_id, client_id) references public.clients (org_id, id) on delete set null (client_id)
);

create table public.crm_deals (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  client_id uuid not null,
  stage_id uuid,
  title text not null,
  amount_cents bigint not null default 0 check (amount_cents >= 0),
  currency char(3) not null default 'USD' check (currency ~ '^[A-Z]{3}$'),
  expected_close_date date,
  owner_id uuid,
  win_probability integer check (win_probability between 0 and 100),
  status text not null default 'open' check (status in ('open', 'won', 'lost', 'stale', 'archived')),
  -- Set when the deal becomes won or lost (trigger); analytics win rate per period.
  closed_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  foreign key (org_id, client_id) references public.clients (org_id, id) on delete cascade,
  foreign key (org_id, stage_id) references public.crm_stages (org_id, id) on delete set null (stage_id),
  foreign key (org_id, owner_id) references public.team_members (org_id, user_id) on delete set null (owner_id)
);

create table public.crm_interactions (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  client_id uuid not null,
  deal_id uuid,
  contact_id uuid,
  type public.crm_interaction_type not null default 'note',
  direction text check (direction in ('inbound', 'outbound')),
  subject text,
  content text,
  summary text,
  sentiment public.crm_sentiment not null default 'neutral',
  embedding extensions.vector(1536),
  embedded_at timestamptz,
  created_by uuid,
  fts tsvector generated always as (
    setweight(to_tsvector('english'::regconfig, coalesce(subject, '')), 'A') ||
    setweight(to_tsvector('english'::regconfig, coalesce(summary, '')), 'B') ||
    setweight(to_tsvector('english'::regconfig, coalesce(content, '')), 'C')
  ) stored,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  foreign key (org_id, client_id) references public.clients (org_id, id) on delete cascade,
  foreign key (org_id, deal_id) references public.crm_deals (org_id, id) on delete set null (deal_id),
  foreign key (org_id, contact_id) references public.crm_contacts (org_id, id) on delete set null (contact_id),
  foreign key (org_id, created_by) references public.team_members (org_id, user_id) on delete set null (created_by)
);

-- Append-only timeline of a client / project.
create table public.activities (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  client_id uuid,
  project_id uuid,
  activity_type text not null
    check (activity_type in ('note', 'call', 'email', 'meeting', 'status_change', 'system')),
  title text not null,
  description text,
  metadata jsonb not null default '{}'::jsonb,
  created_by uuid,
  created_at timestamptz not null default now(),
  unique (org_id, id),
  foreign key (org_id, client_id) references public.clients (org_id, id) on delete set null (client_id),
  foreign key (org_id, project_id) references public.projects (org_id, id) on delete set null (project_id),
  foreign key (org_id, created_by) references public.team_members (org_id, user_id) on delete set null (created_by)
);
