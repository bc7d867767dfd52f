-- A database shaped like the original hosted Supabase project (../shared/docs/origin-schema.md):
-- its 31 public tables with their original columns (numeric money, capitalised roles, text
-- status columns, no user_id on wizard_sessions, the two enums, vector columns), the
-- temp_anon policies, the SECURITY DEFINER view and the open organization insert, a
-- Supabase-shaped `auth` schema (users with bcrypt hashes from pgcrypto, as GoTrue's `$2a$`
-- ones, identities, sessions) and `storage` (buckets, objects).
--
-- The status CHECK bodies of the original are unpublished and its January and March sets
-- differ; a real project holds one or the other. This fixture leaves the status CHECKs out so
-- one database can hold every January value, every March value and the drifted ones its
-- code wrote (`pending` tasks, `onboarding` clients, lower-case `owner`).
--
-- Ids are md5(<name>)::uuid, so tests can name rows. `fx_scale(n)` adds n more clients with
-- a project, tasks and invoices each (the benchmark's volume).

create extension if not exists pgcrypto;
create extension if not exists vector;

create schema auth;
create table auth.users (
  instance_id uuid, id uuid primary key, aud varchar(255), role varchar(255), email varchar(255),
  encrypted_password varchar(255), email_confirmed_at timestamptz, invited_at timestamptz,
  confirmation_token varchar(255), confirmation_sent_at timestamptz, recovery_token varchar(255),
  recovery_sent_at timestamptz, email_change_token_new varchar(255), email_change varchar(255),
  email_change_sent_at timestamptz, last_sign_in_at timestamptz, raw_app_meta_data jsonb,
  raw_user_meta_data jsonb, is_super_admin boolean, created_at timestamptz, updated_at timestamptz,
  phone text unique, phone_confirmed_at timestamptz, phone_change text default '',
  phone_change_token varchar(255) default '', phone_change_sent_at timestamptz,
  confirmed_at timestamptz generated always as (least(email_confirmed_at, phone_confirmed_at)) stored,
  email_change_token_current varchar(255) default '', email_change_confirm_status smallint default 0,
  banned_until timestamptz, reauthentication_token varchar(255) default '',
  reauthentication_sent_at timestamptz, is_sso_user boolean not null default false,
  deleted_at timestamptz, is_anonymous boolean not null default false
);
create table auth.identities (
  provider_id text not null, user_id uuid not null references auth.users (id) on delete cascade,
  identity_data jsonb not null, provider text not null, last_sign_in_at timestamptz,
  created_at timestamptz, updated_at timestamptz,
  email text generated always as (lower(identity_data ->> 'email')) stored,
  id uuid primary key default gen_random_uuid(), unique (provider_id, provider)
);
create table auth.sessions (id uuid primary key, user_id uuid references auth.users (id), created_at timestamptz);
create table auth.refresh_tokens (id bigserial primary key, token varchar(255), user_id varchar(255), session_id uuid);
create function auth.uid() returns uuid language sql stable as
  $$ select nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;

create schema storage;
create table storage.buckets (
  id text primary key, name text not null, owner uuid, created_at timestamptz default now(),
  updated_at timestamptz default now(), public boolean default false, avif_autodetection boolean default false,
  file_size_limit bigint, allowed_mime_types text[], owner_id text
);
create table storage.objects (
  id uuid primary key default gen_random_uuid(), bucket_id text references storage.buckets (id), name text,
  owner uuid, created_at timestamptz default now(), updated_at timestamptz default now(),
  last_accessed_at timestamptz default now(), metadata jsonb,
  path_tokens text[] generated always as (string_to_array(name, '/')) stored,
  version text, owner_id text, user_metadata jsonb, unique (bucket_id, name)
);

-- The 31 public tables (§2), columns as the baseline and the CRM migration give them.
create type public.crm_interaction_type as enum ('email', 'call', 'meeting', 'note', 'linkedin', 'system');
create type public.crm_sentiment as enum ('positive', 'neutral', 'negative', 'churn_risk');

create table organizations (id uuid primary key default gen_random_uuid(), name text not null, created_at timestamptz not null default now(), updated_at timestamptz not null default now());
create table profiles (id uuid primary key references auth.users (id) on delete cascade, full_name text, avatar_url text, created_at timestamptz not null default now(), updated_at timestamptz not null default now());
create table team_members (id uuid primary key default gen_random_uuid(), org_id uuid not null references organizations (id) on delete cascade, user_id uuid not null references auth.users (id) on delete cascade, role text not null default 'Member', created_at timestamptz not null default now(), updated_at timestamptz not null default now(), unique (org_id, user_id));
create table clients (id uuid primary key default gen_random_uuid(), org_id uuid not null references organizations (id) on delete cascade, name text not null, industry text, website_url text, pipeline_stage text default 'new', status text default 'lead', assigned_to uuid references profiles (id) on delete set null, value numeric, last_activity_at timestamptz, contact_name text, contact_email text, contact_phone text, company_size text, notes text, lifecycle_stage text default 'lead', health_score int default 50, next_action_date timestamptz, onboarded_at timestamptz, created_at timestamptz not null default now(), updated_at timestamptz not null default now());
create table projects (id uuid primary key default gen_random_uuid(), org_id uuid not null references organizations (id) on delete cascade, client_id uuid references clients (id) on delete set null, name text not null, status text not null, start_date date, end_date date, value numeric, current_phase text, progress int default 0, dashboard_activated_at timestamptz, created_at timestamptz not null default now(), updated_at timestamptz not null default now());
-- March: org_id nullable.
create table wizard_sessions (id uuid primary key default gen_random_uuid(), org_id uuid references organizations (id) on delete cascade, project_id uuid references projects (id) on delete set null, current_step int not null default 1 check (current_step between 1 and 5), created_at timestamptz not null default now(), updated_at timestamptz not null default now(), wizard_completed_at timestamptz);
create table wizard_answers (id uuid primary key default gen_random_uuid(), org_id uuid references organizations (id) on delete cascade, session_id uuid not null references wizard_sessions (id) on delete cascade, screen_id text, data jsonb not null default '{}', step_number int, ai_results jsonb, created_at timestamptz not null default now(), updated_at timestamptz not null default now());
create table context_snapshots (id uuid primary key default gen_random_uuid(), org_id uuid not null references organizations (id) on delete cascade, project_id uuid not null references projects (id) on delete cascade, version int not null default 1, is_active bool not null default true, summary text, metrics jsonb, created_at timestamptz not null default now(), updated_at timestamptz not null default now());
create unique index on context_snapshots (project_id) where is_active;
create table roadmaps (id uuid primary key default gen_random_uuid(), org_id uuid not null references organizations (id) on delete cascade, snapshot_id uuid not null unique references context_snapshots (id) on delete cascade, total_duration text not null, roi_projection text not null, created_at timestamptz not null default now(), updated_at timestamptz not null default now());
create table roadmap_phases (id uuid primary key default gen_random_uuid(), org_id uuid not null references organizations (id) on delete cascade, roadmap_id uuid not null references roadmaps (id) on delete cascade, title text not null, order_index int not null, outcomes jsonb not null, created_at timestamptz not null default now(), updated_at timestamptz not null default now());
create table tasks (id uuid primary key default gen_random_uuid(), org_id uuid not null references organizations (id) on delete cascade, phase_id uuid not null references roadmap_phases (id) on delete cascade, title text not null, owner text not null, status text not null default 'todo', assigned_to uuid references profiles (id) on delete set null, description text, effort text, due_date date, tags jsonb, priority text default 'medium', ai_generated bool default false, ai_suggestion text, created_at timestamptz not null default now(), updated_at timestamptz not null default now());
create table briefs (id uuid primary key default gen_random_uuid(), org_id uuid not null references organizations (id) on delete cascade, project_id uuid not null references projects (id) on delete cascade, content jsonb not null, status text not null default 'draft', version int not null default 1, created_at timestamptz not null default now(), updated_at timestamptz not null default now(), unique (project_id, version));
create table brief_versions (id uuid primary key default gen_random_uuid(), brief_id uuid not null references briefs (id) on delete cascade, version int not null, content jsonb not null, diff jsonb, changed_by uuid references profiles (id) on delete set null, change_summary text, created_at timestamptz not null default now(), unique (brief_id, version));
create table systems (id text primary key, name text not null, description text not null, icon text, display_order int not null default 0, is_active bool not null default true, created_at timestamptz not null default now(), updated_at timestamptz not null default now());
create table services (id uuid primary key default gen_random_uuid(), org_id uuid references organizations (id) on delete cascade, name text not null, slug text not null unique, category text not null, description text not null, benefits jsonb, features jsonb, is_active bool not null default true, display_order int not null default 0, created_at timestamptz not null default now(), updated_at timestamptz not null default now());
create table system_services (id uuid primary key default gen_random_uuid(), system_id text not null references systems (id) on delete cascade, service_id uuid not null references services (id) on delete cascade, is_primary bool not null default false, display_order int not null default 0, created_at timestamptz not null default now(), unique (system_id, service_id));
create table project_systems (id uuid primary key default gen_random_uuid(), org_id uuid not null references organizations (id) on delete cascade, project_id uuid not null references projects (id) on delete cascade, system_id text not null references systems (id) on delete cascade, is_recommended bool not null default false, is_selected bool not null default false, why_it_matters text, recommendation_metadata jsonb, created_at timestamptz not null default now(), updated_at timestamptz not null default now(), unique (project_id, system_id));
create table project_services (id uuid primary key default gen_random_uuid(), org_id uuid not null references organizations (id) on delete cascade, project_id uuid not null references projects (id) on delete cascade, service_id uuid not null references services (id) on delete cascade, status text not null default 'planned', started_at timestamptz, completed_at timestamptz, notes text, created_at timestamptz not null default now(), updated_at timestamptz not null default now(), unique (project_id, service_id));
create table ai_run_logs (id uuid primary key default gen_random_uuid(), org_id uuid not null references organizations (id) on delete cascade, project_id uuid references projects (id) on delete set null, agent_name text not null, model_name text not null, input_tokens int default 0, output_tokens int default 0, duration_ms int, success bool, error_message text, created_at timestamptz not null default now());
create table ai_cache (hash text primary key, org_id uuid references organizations (id) on delete cascade, prompt_hash text not null, response jsonb not null, model text, tokens_used int, created_at timestamptz not null default now(), expires_at timestamptz);
create table crm_pipelines (id uuid primary key default gen_random_uuid(), org_id uuid not null references organizations (id) on delete cascade, name text not null, is_default bool not null default false, created_at timestamptz not null default now(), updated_at timestamptz not null default now());
create table crm_stages (id uuid primary key default gen_random_uuid(), pipeline_id uuid not null references crm_pipelines (id) on delete cascade, name text not null, probability int not null default 0, display_order int not null default 0, created_at timestamptz not null default now(), updated_at timestamptz not null default now());
create table crm_contacts (id uuid primary key default gen_random_uuid(), org_id uuid not null references organizations (id) on delete cascade, client_id uuid references clients (id) on delete set null, first_name text not null, last_name text, email text, phone text, linkedin_url text, job_title text, is_primary bool not null default false, tags text[] default '{}', created_at timestamptz not null default now(), updated_at timestamptz not null default now());
create table crm_deals (id uuid primary key default gen_random_uuid(), org_id uuid not null references organizations (id) on delete cascade, client_id uuid not null references clients (id) on delete cascade, stage_id uuid references crm_stages (id) on delete set null, title text not null, amount numeric not null default 0, currency text not null default 'USD', expected_close_date date, owner_id uuid references profiles (id) on delete set null, win_probability int, status text not null default 'open', created_at timestamptz not null default now(), updated_at timestamptz not null default now());
create table crm_interactions (id uuid primary key default gen_random_uuid(), org_id uuid not null references organizations (id) on delete cascade, client_id uuid references clients (id) on delete cascade, deal_id uuid references crm_deals (id) on delete set null, contact_id uuid references crm_contacts (id) on delete set null, type crm_interaction_type not null, direction text, subject text, content text, summary text, embedding vector(1536), sentiment crm_sentiment default 'neutral', created_by uuid references profiles (id) on delete set null, created_at timestamptz not null default now());
create table invoices (id uuid primary key default gen_random_uuid(), org_id uuid not null references organizations (id) on delete cascade, project_id uuid references projects (id) on delete set null, invoice_number text not null unique, amount_cents int not null, currency text not null default 'USD', status text not null default 'draft', due_date date, paid_date date, line_items jsonb, pdf_url text, notes text, created_at timestamptz not null default now(), updated_at timestamptz not null default now());
create table payments (id uuid primary key default gen_random_uuid(), org_id uuid not null references organizations (id) on delete cascade, invoice_id uuid not null references invoices (id) on delete cascade, amount_cents int not null, payment_method text, stripe_id text, transaction_id text, status text not null default 'pending', processed_at timestamptz, created_at timestamptz not null default now(), updated_at timestamptz not null default now());
create table milestones (id uuid primary key default gen_random_uuid(), org_id uuid not null references organizations (id) on delete cascade, project_id uuid not null references projects (id) on delete cascade, phase_id uuid references roadmap_phases (id) on delete set null, title text not null, description text, due_date date not null, completed_at timestamptz, status text not null default 'upcoming', created_at timestamptz not null default now(), updated_at timestamptz not null default now());
create table deliverables (id uuid primary key default gen_random_uuid(), org_id uuid not null references organizations (id) on delete cascade, phase_id uuid not null references roadmap_phases (id) on delete cascade, title text not null, description text, status text not null default 'pending', due_date date, delivered_at timestamptz, assigned_to uuid references profiles (id) on delete set null, created_at timestamptz not null default now(), updated_at timestamptz not null default now());
create table documents (id uuid primary key default gen_random_uuid(), org_id uuid not null references organizations (id) on delete cascade, wizard_session_id uuid references wizard_sessions (id) on delete cascade, project_id uuid references projects (id) on delete cascade, name text not null, storage_path text not null, file_size int not null, mime_type text not null, content_text text, embedding vector(768), summary text, category text not null, uploaded_by uuid references profiles (id) on delete set null, created_at timestamptz not null default now(), updated_at timestamptz not null default now(), constraint documents_wizard_or_project check (wizard_session_id is not null or project_id is not null));
create table activities (id uuid primary key default gen_random_uuid(), org_id uuid not null references organizations (id) on delete cascade, client_id uuid references clients (id) on delete set null, project_id uuid references projects (id) on delete set null, activity_type text not null, title text not null, description text, metadata jsonb, sentiment text, created_by uuid references profiles (id) on delete set null, created_at timestamptz not null default now());

-- RLS as the original had it, including what is not carried.
alter table organizations enable row level security;
alter table wizard_sessions enable row level security;
alter table wizard_answers enable row level security;
create policy "Users can create organizations" on organizations for insert to authenticated with check (true);
create policy "Authenticated users can create orgs" on organizations for insert to authenticated with check (true);
create policy temp_anon_select_wizard_sessions on wizard_sessions for select to anon using (true);
create policy temp_anon_insert_wizard_sessions on wizard_sessions for insert to anon with check (true);
create policy temp_anon_update_wizard_sessions on wizard_sessions for update to anon using (true) with check (true);
create policy temp_anon_select_wizard_answers on wizard_answers for select to anon using (true);
create policy temp_anon_insert_wizard_answers on wizard_answers for insert to anon with check (true);
create policy temp_anon_update_wizard_answers on wizard_answers for update to anon using (true) with check (true);
create view client_crm_status as
  select c.id, c.org_id, c.name, c.status as client_status, p.id as project_id, p.status as project_status
  from clients c left join projects p on p.client_id = c.id and p.status <> 'archived';

create function fx(name text) returns uuid language sql immutable as $$ select md5(name)::uuid $$;

------------------------------------------------------------------------------------------
-- Data
------------------------------------------------------------------------------------------
insert into auth.users (instance_id, id, aud, role, email, encrypted_password, email_confirmed_at, raw_app_meta_data, raw_user_meta_data, created_at, updated_at, is_anonymous, confirmation_token, recovery_token)
values
  ('00000000-0000-0000-0000-000000000000', fx('owner-a'), 'authenticated', 'authenticated', 'owner-a@example.com', crypt('old-password-a', gen_salt('bf', 4)), now(), '{"provider":"email","providers":["email"]}', '{"full_name":"Olive Owner"}', now() - interval '90 days', now(), false, '', ''),
  ('00000000-0000-0000-0000-000000000000', fx('consultant-a'), 'authenticated', 'authenticated', 'consultant-a@example.com', crypt('old-password-c', gen_salt('bf', 4)), now(), '{"provider":"email","providers":["email"]}', '{"full_name":"Cole Consultant"}', now() - interval '80 days', now(), false, '', 'pending-recovery-token'),
  ('00000000-0000-0000-0000-000000000000', fx('member-a'), 'authenticated', 'authenticated', 'member-a@example.com', crypt('old-password-m', gen_salt('bf', 4)), now(), '{}', '{}', now(), now(), false, '', ''),
  ('00000000-0000-0000-0000-000000000000', fx('admin-a'), 'authenticated', 'authenticated', 'admin-a@example.com', crypt('old-password-d', gen_salt('bf', 4)), now(), '{}', '{}', now(), now(), false, '', ''),
  ('00000000-0000-0000-0000-000000000000', fx('client-a'), 'authenticated', 'authenticated', 'client-a@example.com', crypt('old-password-l', gen_salt('bf', 4)), now(), '{}', '{}', now(), now(), false, '', ''),
  ('00000000-0000-0000-0000-000000000000', fx('owner-b'), 'authenticated', 'authenticated', 'owner-b@example.com', crypt('old-password-b', gen_salt('bf', 4)), now(), '{}', '{"name":"Bea"}', now(), now(), false, '', ''),
  ('00000000-0000-0000-0000-000000000000', fx('google-a'), 'authenticated', 'authenticated', 'gina@example.com', null, now(), '{"provider":"google","providers":["google"]}', '{"full_name":"Gina Google","avatar_url":"https://example.com/g.png"}', now(), now(), false, '', ''),
  ('00000000-0000-0000-0000-000000000000', fx('guest'), 'authenticated', 'authenticated', null, null, null, '{}', '{}', now(), now(), true, '', '');

insert into auth.identities (provider_id, user_id, identity_data, provider, created_at, updated_at, id) values
  (fx('owner-a')::text, fx('owner-a'), jsonb_build_object('sub', fx('owner-a'), 'email', 'owner-a@example.com'), 'email', now(), now(), fx('identity-owner-a')),
  ('google-sub-123', fx('google-a'), '{"sub":"google-sub-123","email":"gina@example.com","name":"Gina Google"}', 'google', now(), now(), fx('identity-google-a'));
insert into auth.sessions values (fx('session-1'), fx('owner-a'), now()), (fx('session-2'), fx('owner-b'), now());

insert into organizations (id, name) values (fx('org-a'), 'Sun AI Agency'), (fx('org-b'), 'Other Agency'), (fx('org-guest'), 'Guest workspace');
-- client-a has no profile (the import creates one).
insert into profiles (id, full_name) select id, raw_user_meta_data ->> 'full_name' from auth.users where id <> fx('client-a');
insert into team_members (org_id, user_id, role) values
  (fx('org-a'), fx('owner-a'), 'Owner'), (fx('org-a'), fx('consultant-a'), 'Consultant'), (fx('org-a'), fx('member-a'), 'Member'),
  (fx('org-a'), fx('admin-a'), 'Admin'), (fx('org-a'), fx('client-a'), 'Client'), (fx('org-a'), fx('google-a'), 'Consultant'),
  (fx('org-b'), fx('owner-b'), 'owner'),
  (fx('org-guest'), fx('guest'), 'Owner');

-- Clients: every status (Jan, Mar, drift) × pipeline stages × sizes; numeric value.
insert into clients (id, org_id, name, status, pipeline_stage, company_size, value, assigned_to, next_action_date, lifecycle_stage)
select fx('client-' || s), fx('org-a'), 'Client ' || s, s,
       (array['new','contacted','qualified','proposal','won','lost','negotiation','closed_won','closed_lost'])[1 + (i - 1) % 9],
       (array['small','medium','large','enterprise'])[1 + (i - 1) % 4],
       1234.565 + i, case when i = 1 then fx('owner-b') else fx('consultant-a') end,
       now() + interval '3 days', 'lead'
from unnest(array['lead','client','prospect','active','inactive','churned','onboarding']) with ordinality as t(s, i);
insert into clients (id, org_id, name, status, pipeline_stage, company_size, value)
select fx('client-x' || i), fx('org-a'), 'Client x' || i, 'lead', s, null, null
from unnest(array['negotiation','closed_won','closed_lost']) with ordinality as t(s, i);
insert into clients (id, org_id, name, status, value) values (fx('client-b'), fx('org-b'), 'Org B secret client', 'client', 500);

-- Projects: every status; one points at org B's client (the original had no composite keys).
insert into projects (id, org_id, client_id, name, status, value, current_phase, progress)
select fx('project-' || s), fx('org-a'), case when s = 'draft' then fx('client-b') else fx('client-client') end,
       'Project ' || s, s, 10000.5, 'phase_1', 10
from unnest(array['Discovery','Active','Archived','discovery','draft','planning','active','on_hold','completed','cancelled']) as s;
insert into projects (id, org_id, client_id, name, status) values (fx('project-b'), fx('org-b'), fx('client-b'), 'Org B project', 'active');

-- Wizard: a guest session (no project), one with a project, one with a NULL org (March).
insert into wizard_sessions (id, org_id, project_id, current_step, wizard_completed_at) values
  (fx('ws-guest'), fx('org-guest'), null, 2, null),
  (fx('ws-a'), fx('org-a'), fx('project-active'), 5, now()),
  (fx('ws-null-org'), null, fx('project-planning'), 1, null);
insert into wizard_answers (id, org_id, session_id, screen_id, step_number, data) values
  (fx('wa-1'), fx('org-a'), fx('ws-a'), 'step-1', 1, '{"industry":"saas"}'),
  (fx('wa-2'), fx('org-a'), fx('ws-a'), null, 2, '{"q":"a"}'),
  (fx('wa-3'), fx('org-a'), fx('ws-a'), 'step-3', null, '{}'),
  (fx('wa-4'), fx('org-a'), fx('ws-a'), 'step-4', 4, '{}'),
  (fx('wa-5'), fx('org-a'), fx('ws-a'), 'step-5', 5, '{}'),
  (fx('wa-g'), fx('org-guest'), fx('ws-guest'), 'step-1', 1, '{"guest":true}'),
  (fx('wa-g2'), fx('org-guest'), fx('ws-guest'), 'step-2', 2, '{"guest":true}');

-- Snapshots v1 (inactive) and v2 (active), a roadmap on each, phases.
insert into context_snapshots (id, org_id, project_id, version, is_active, summary, metrics) values
  (fx('snap-1'), fx('org-a'), fx('project-active'), 1, false, 'first', '{"data":40}'),
  (fx('snap-2'), fx('org-a'), fx('project-active'), 2, true, 'second', null);
insert into roadmaps (id, org_id, snapshot_id, total_duration, roi_projection) values
  (fx('roadmap-1'), fx('org-a'), fx('snap-1'), '12 weeks', '{"roi": 2}'),
  (fx('roadmap-2'), fx('org-a'), fx('snap-2'), '10 weeks', '300% in year one');
insert into roadmap_phases (id, org_id, roadmap_id, title, order_index, outcomes)
select fx('phase-' || i), fx('org-a'), fx('roadmap-2'), 'Phase ' || i, i - 1, '["outcome"]' from generate_series(1, 3) i;

-- Tasks: every status × owner × priority × effort; tags as JSON.
insert into tasks (id, org_id, phase_id, title, owner, status, priority, effort, tags, assigned_to)
select fx('task-' || s), fx('org-a'), fx('phase-1'), 'Task ' || s,
       (array['Client','Sun AI','Automated'])[1 + (i - 1) % 3], s,
       (array['low','medium','high','urgent'])[1 + (i - 1) % 4],
       (array['S','M','L','XL'])[1 + (i - 1) % 4],
       case when i = 1 then '["seo", 3]'::jsonb when i = 2 then '"oops"'::jsonb else '["a"]'::jsonb end,
       case when i = 1 then fx('owner-b') else fx('consultant-a') end
from unnest(array['todo','in_progress','review','done','blocked','pending']) with ordinality as t(s, i);

insert into milestones (id, org_id, project_id, phase_id, title, due_date, status)
select fx('ms-' || s), fx('org-a'), fx('project-active'), fx('phase-2'), 'Milestone ' || s, current_date, s
from unnest(array['upcoming','completed','overdue','pending','in_progress','delayed']) as s;
insert into deliverables (id, org_id, phase_id, title, status, assigned_to)
select fx('dl-' || s), fx('org-a'), fx('phase-3'), 'Deliverable ' || s, s, fx('member-a')
from unnest(array['pending','in_progress','in_review','approved','delivered','completed','rejected']) as s;

insert into briefs (id, org_id, project_id, content, status, version)
select fx('brief-' || s), fx('org-a'), fx('project-active'), jsonb_build_object('goal', s), s, i
from unnest(array['draft','in_review','approved']) with ordinality as t(s, i);
insert into brief_versions (id, brief_id, version, content, diff, changed_by, change_summary) values
  (fx('bv-1'), fx('brief-approved'), 1, '{"goal":"x"}', null, fx('owner-a'), 'Created'),
  (fx('bv-2'), fx('brief-approved'), 2, '{"goal":"approved"}', '{"changed":{}}', fx('owner-b'), 'Edited');

-- Catalogue: a system agencyflow has and a new one; a global service agencyflow has (by
-- slug), a new global one and an org's custom one.
insert into systems (id, name, description, display_order) values
  ('lead-generation', 'Lead Gen (old text)', 'old', 1), ('whatsapp-assistant', 'WhatsApp Assistant', 'Answers on WhatsApp', 2);
insert into services (id, org_id, name, slug, category, description, benefits, features) values
  (fx('svc-chatbot'), null, 'Chatbot', 'chatbot-development', 'Core', 'Bots', '["a"]', null),
  (fx('svc-new'), null, 'Hotel AI', 'hotel-ai', 'Industry-Specific', 'For hotels', null, '["b"]'),
  (fx('svc-custom'), fx('org-a'), 'Custom build', 'custom-build', 'Custom', 'Bespoke', '[]', '[]');
insert into system_services (id, system_id, service_id, is_primary) values
  (fx('ss-1'), 'whatsapp-assistant', fx('svc-chatbot'), true), (fx('ss-2'), 'lead-generation', fx('svc-new'), false);
insert into project_systems (id, org_id, project_id, system_id, is_recommended, is_selected) values
  (fx('ps-1'), fx('org-a'), fx('project-active'), 'lead-generation', true, true);
insert into project_services (id, org_id, project_id, service_id, status)
select fx('psv-' || s), fx('org-a'), fx('project-' || p), sv, s
from (values ('planned', 'active', fx('svc-chatbot')), ('active', 'planning', fx('svc-new')),
             ('completed', 'completed', fx('svc-custom')), ('paused', 'on_hold', fx('svc-chatbot'))) v(s, p, sv);

-- CRM.
insert into crm_pipelines (id, org_id, name, is_default) values (fx('pipe-a'), fx('org-a'), 'Sales', true);
insert into crm_stages (id, pipeline_id, name, probability, display_order) values
  (fx('stage-1'), fx('pipe-a'), 'Qualify', 20, 1), (fx('stage-2'), fx('pipe-a'), 'Close', 80, 2);
insert into crm_contacts (id, org_id, client_id, first_name, email, tags) values
  (fx('contact-1'), fx('org-a'), fx('client-client'), 'Carla', 'carla@example.com', '{vip}'),
  (fx('contact-2'), fx('org-a'), fx('client-b'), 'Wrong', 'w@example.com', '{}');
insert into crm_deals (id, org_id, client_id, stage_id, title, amount, currency, owner_id, status)
select fx('deal-' || s), fx('org-a'), fx('client-prospect'), fx('stage-1'), 'Deal ' || s,
       case when i = 1 then 99.999 else 2500.5 end, case when i = 1 then 'usd' else 'EUR' end, fx('owner-a'), s
from unnest(array['open','won','lost','archived','stale']) with ordinality as t(s, i);
insert into crm_interactions (id, org_id, client_id, deal_id, contact_id, type, direction, subject, embedding, sentiment, created_by)
select fx('ix-' || t), fx('org-a'), case when t = 'system' then null else fx('client-client') end,
       case when t = 'system' then fx('deal-open') end, fx('contact-1'), t::crm_interaction_type,
       (array['inbound','outbound'])[1 + (i % 2)], 'About ' || t,
       case when t = 'email' then array_fill(0.01::real, array[1536])::vector end,
       (array['positive','neutral','negative','churn_risk'])[1 + (i - 1) % 4]::crm_sentiment, fx('consultant-a')
from unnest(array['email','call','meeting','note','linkedin','system']) with ordinality as x(t, i);

-- Finance: every invoice and payment status; line items that add up and some that do not.
insert into invoices (id, org_id, project_id, invoice_number, amount_cents, currency, status, paid_date, line_items)
select fx('inv-' || s), fx('org-a'), fx('project-active'), 'INV-' || i, 10000, 'USD', s,
       case when s = 'paid' then current_date end,
       case when i = 1 then '[{"amount_cents": 6000}, {"amount_cents": 4000}]'::jsonb
            when i = 2 then '[{"description": "Work", "amount": 100}]'::jsonb end
from unnest(array['draft','sent','paid','overdue','cancelled','void']) with ordinality as t(s, i);
insert into invoices (id, org_id, invoice_number, amount_cents, currency, status) values (fx('inv-eur'), fx('org-a'), 'INV-EUR', 5000, 'EUR', 'sent');
insert into payments (id, org_id, invoice_id, amount_cents, payment_method, stripe_id, transaction_id, status)
select fx('pay-' || s), fx('org-a'), case when s = 'failed' then fx('inv-eur') else fx('inv-paid') end, 2500, 'card',
       case when i = 1 then 'pi_123' end, 'tx-' || i, s
from unnest(array['pending','completed','failed','refunded']) with ordinality as t(s, i);

-- Documents: every category; one 768-dimension embedding; one on a wizard session only.
insert into documents (id, org_id, wizard_session_id, project_id, name, storage_path, file_size, mime_type, content_text, embedding, category, uploaded_by)
select fx('doc-' || c), fx('org-a'), case when c = 'Other' then fx('ws-a') end, case when c <> 'Other' then fx('project-active') end,
       c || '.pdf', fx('org-a')::text || '/' || c || '.pdf', 100, 'application/pdf', 'Text of ' || c,
       case when c = 'Briefs' then array_fill(0.02::real, array[768])::vector end, c, fx('member-a')
from unnest(array['Briefs','Requirements','Assets','Reference','Other']) as c;

insert into activities (id, org_id, client_id, project_id, activity_type, title, sentiment, metadata, created_by)
select fx('act-' || t), fx('org-a'), fx('client-client'), fx('project-active'), t, 'Did ' || t,
       case when t = 'call' then 'positive' end, case when t = 'note' then null else '{"k":1}'::jsonb end, fx('owner-a')
from unnest(array['note','call','email','meeting','status_change']) as t;

insert into ai_run_logs (id, org_id, project_id, agent_name, model_name, input_tokens, output_tokens, duration_ms, success) values
  (fx('run-1'), fx('org-a'), fx('project-active'), 'Researcher', 'gemini-3-flash-preview', 120, 340, null, null),
  (fx('run-2'), fx('org-a'), null, 'Planner', 'gemini-3-pro-preview', 10, 20, 1500, false);
insert into ai_cache (hash, org_id, prompt_hash, response, model, tokens_used) values
  ('hash-global', null, 'p1', '{"text":"cached"}', 'gemini-3-flash-preview', 42),
  ('hash-org-a', fx('org-a'), 'p2', '{"text":"org"}', null, null);

-- Storage: the documents bucket (agencyflow has it too) and a public avatars bucket.
insert into storage.buckets (id, name, owner, public) values ('documents', 'documents', null, false), ('avatars', 'avatars', null, true);
insert into storage.objects (id, bucket_id, name, owner, owner_id, metadata, version) values
  (fx('obj-brief'), 'documents', fx('org-a')::text || '/Briefs.pdf', fx('owner-a'), fx('owner-a')::text,
   '{"size": 29, "mimetype": "application/pdf", "eTag": "\"abc\"", "cacheControl": "max-age=3600"}', 'v1'),
  (fx('obj-avatar'), 'avatars', fx('owner-a')::text || '/me.png', fx('owner-a'), fx('owner-a')::text,
   '{"size": 8, "mimetype": "image/png"}', 'v7');

-- The benchmark's volume: n more clients, each with a project, a task and an invoice, plus
-- storage objects (files written by the benchmark script).
create function fx_scale(n int) returns void language sql as $$
  insert into clients (id, org_id, name, status, value)
    select fx('sc-' || i), fx('org-a'), 'Scaled ' || i, (array['lead','client','prospect','active'])[1 + i % 4], i * 1.25
    from generate_series(1, n) i;
  insert into projects (id, org_id, client_id, name, status, value)
    select fx('sp-' || i), fx('org-a'), fx('sc-' || i), 'Scaled project ' || i, (array['Active','planning','Discovery'])[1 + i % 3], i
    from generate_series(1, n) i;
  insert into tasks (id, org_id, phase_id, title, owner, status, priority, effort, tags)
    select fx('st-' || i), fx('org-a'), fx('phase-' || (1 + i % 3)), 'Scaled task ' || i, 'Sun AI',
           (array['todo','in_progress','review','done'])[1 + i % 4], 'medium', 'M', '["x"]'
    from generate_series(1, n) i;
  insert into invoices (id, org_id, project_id, invoice_number, amount_cents, status)
    select fx('si-' || i), fx('org-a'), fx('sp-' || i), 'SINV-' || i, 100 * i, 'sent'
    from generate_series(1, n) i;
$$;
