-- AI bookkeeping: the run log (append-only audit), the response cache (global or per org)
-- and per-period analytics computed by refresh_org_analytics().

create table public.ai_run_logs (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  project_id uuid,
  agent_name text not null,
  model_name text,
  provider text,
  input_tokens integer not null default 0 check (input_tokens >= 0),
  output_tokens integer not null default 0 check (output_tokens >= 0),
  duration_ms integer check (duration_ms >= 0),
  -- Cost in millionths of a US dollar (a call often costs a fraction of a cent).
  cost_micro_usd bigint not null default 0 check (cost_micro_usd >= 0),
  success boolean not null default true,
  error_message text,
  cache_hit boolean not null default false,
  created_at timestamptz not null default now(),
  unique (org_id, id),
  foreign key (org_id, project_id) references public.projects (org_id, id) on delete set null (project_id)
);

create table public.ai_cache (
  -- hash of provider, model and the normalized request
  key text primary key,
  org_id uuid references public.organizations (id) on delete cascade,
  provider text,
  model text not null,
  response jsonb not null,
  tokens_used integer not null default 0 check (tokens_used >= 0),
  hit_count integer not null default 0 check (hit_count >= 0),
  created_at timestamptz not null default now(),
  expires_at timestamptz
);

create table public.analytics (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  period_type text not null check (period_type in ('day', 'week', 'month')),
  period_start date not null,
  metrics jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, period_type, period_start)
);
