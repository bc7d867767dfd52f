-- Demo agency for `agencyflow seed --demo`. Run as superuser in one transaction after all
-- migrations. Idempotent: every row has a fixed id (literal, or derived with md5() from a
-- stable key) and is inserted with ON CONFLICT DO NOTHING, so a second run changes nothing.
--
-- Two agencies: Northwind AI Studio (16 clients) and Bluepeak Automation (4 clients), each with
-- one user per role. Staff are created as auth.users rows carrying an invitation in
-- raw_app_meta_data (invited_org_id, invited_role): private.handle_new_user() then adds them to
-- the demo org with that role instead of creating a personal organization.
-- Every demo user's password is `password123`; emails are <role>@northwind.example and
-- <role>@bluepeak.example.

-- Organizations (created_by NULL: the owners join through the invitation path below).
insert into public.organizations (id, name, slug, settings) values
  ('d0000000-0000-4000-8000-000000000001', 'Northwind AI Studio', 'northwind',
   '{"timezone": "Europe/Madrid", "currency": "EUR", "brand_color": "#1f6feb"}'),
  ('d0000000-0000-4000-8000-000000000002', 'Bluepeak Automation', 'bluepeak',
   '{"timezone": "America/New_York", "currency": "USD", "brand_color": "#0e9f6e"}')
on conflict do nothing;

-- Users: one per role and org.
insert into auth.users (id, instance_id, aud, role, email, encrypted_password, email_confirmed_at,
                        raw_app_meta_data, raw_user_meta_data, created_at, updated_at, last_sign_in_at)
select md5('demo-user:' || o.slug || ':' || r.role)::uuid,
       '00000000-0000-0000-0000-000000000000'::uuid,
       'authenticated', 'authenticated',
       r.role || '@' || o.slug || '.example',
       extensions.crypt('password123', extensions.gen_salt('bf')),
       now(),
       jsonb_build_object('provider', 'email', 'providers', jsonb_build_array('email'),
                          'invited_org_id', o.id, 'invited_role', r.role),
       jsonb_build_object('full_name', r.first_name || ' ' || o.family),
       now() - interval '90 days', now(), now() - interval '1 day'
from (values ('d0000000-0000-4000-8000-000000000001'::uuid, 'northwind', 'Northwind'),
             ('d0000000-0000-4000-8000-000000000002'::uuid, 'bluepeak', 'Bluepeak')) as o(id, slug, family)
cross join (values ('owner', 'Olivia'), ('admin', 'Adam'), ('consultant', 'Carmen'),
                   ('member', 'Marco'), ('client', 'Chloe')) as r(role, first_name)
on conflict do nothing;

-- Memberships are created by the trigger; keep them even if the users existed before.
insert into public.team_members (org_id, user_id, role)
select o.id, md5('demo-user:' || o.slug || ':' || r.role)::uuid, r.role
from (values ('d0000000-0000-4000-8000-000000000001'::uuid, 'northwind'),
             ('d0000000-0000-4000-8000-000000000002'::uuid, 'bluepeak')) as o(id, slug)
cross join (values ('owner'), ('admin'), ('consultant'), ('member'), ('client')) as r(role)
on conflict do nothing;

-- CRM pipeline with stages, one default pipeline per org.
insert into public.crm_pipelines (id, org_id, name, is_default)
select md5('demo-pipeline:' || o.id)::uuid, o.id, 'Sales pipeline', true
from public.organizations o where o.slug in ('northwind', 'bluepeak')
on conflict do nothing;

insert into public.crm_stages (id, org_id, pipeline_id, name, probability, display_order)
select md5('demo-stage:' || o.id || ':' || s.ord)::uuid, o.id, md5('demo-pipeline:' || o.id)::uuid,
       s.name, s.probability, s.ord
from public.organizations o
cross join (values (1, 'New', 5), (2, 'Contacted', 15), (3, 'Qualified', 35), (4, 'Proposal', 60),
                   (5, 'Negotiation', 80), (6, 'Won', 100), (7, 'Lost', 0)) as s(ord, name, probability)
where o.slug in ('northwind', 'bluepeak')
on conflict do nothing;

-- 20 clients across all statuses and industries.
create temporary table demo_clients (
  n int primary key, org_slug text, name text, industry text, status text, pipeline_stage text,
  company_size text, health int, value_cents bigint, contact text, wizard_step int, with_roadmap boolean
) on commit drop;
insert into demo_clients values
  (1,  'northwind', 'Maison Lumière',        'Fashion retail',      'client',   'won',         'medium',     82, 4800000, 'Claire Dubois',   5, true),
  (2,  'northwind', 'Stackwise',             'SaaS',                'client',   'won',         'small',      74, 3600000, 'Ravi Patel',      5, true),
  (3,  'northwind', 'Costa Azul Tours',      'Tourism',             'client',   'won',         'small',      68, 2400000, 'Lucía Romero',    5, false),
  (4,  'northwind', 'Harbor Realty',         'Real estate',         'client',   'won',         'medium',     59, 3000000, 'James Whitaker',  4, false),
  (5,  'northwind', 'Pulse Events',          'Events',              'client',   'won',         'small',      71, 1800000, 'Nina Okafor',     3, false),
  (6,  'northwind', 'Atelier Nord',          'Fashion design',      'prospect', 'proposal',    'small',      60, 1500000, 'Sofie Lind',      2, false),
  (7,  'northwind', 'Ledgerly',              'SaaS / fintech',      'prospect', 'qualified',   'medium',     55, 2200000, 'Tom Becker',      1, false),
  (8,  'northwind', 'Alpine Escapes',        'Travel & hospitality','prospect', 'negotiation', 'medium',     64, 2600000, 'Marie Keller',    4, false),
  (9,  'northwind', 'UrbanNest Properties',  'Real estate',         'prospect', 'contacted',   'large',      50, 5000000, 'Daniel Kim',      null, false),
  (10, 'northwind', 'Festivo',               'Events',              'lead',     'new',         'small',      50, 900000,  'Paolo Greco',     null, false),
  (11, 'northwind', 'GreenLeaf Clinics',     'Healthcare',          'lead',     'contacted',   'enterprise', 45, 7500000, 'Hannah Moore',    null, false),
  (12, 'northwind', 'Brightside Logistics',  'Logistics',           'lead',     'new',         'large',      50, null,    'Omar Haddad',     null, false),
  (13, 'northwind', 'Velvet & Co',           'Fashion e-commerce',  'churned',  'lost',        'small',      20, 1200000, 'Isabel Costa',    5, true),
  (14, 'northwind', 'Cloudberry Apps',       'SaaS',                'churned',  'lost',        'small',      25, 800000,  'Eva Novak',       2, false),
  (15, 'northwind', 'Old Town Hostels',      'Tourism',             'archived', 'lost',        'small',      30, null,    'Pierre Martin',   null, false),
  (16, 'northwind', 'Summit Conferences',    'Events',              'client',   'won',         'enterprise', 88, 9600000, 'Grace Liu',       5, true),
  (17, 'bluepeak',  'Riverside Dental',      'Healthcare',          'client',   'won',         'small',      77, 1400000, 'Ben Carter',      5, true),
  (18, 'bluepeak',  'Skyline Lofts',         'Real estate',         'prospect', 'proposal',    'medium',     58, 2100000, 'Ava Johnson',     3, false),
  (19, 'bluepeak',  'Northpeak SaaS',        'SaaS',                'lead',     'qualified',   'medium',     50, 3300000, 'Liam Brown',      null, false),
  (20, 'bluepeak',  'Trendline Apparel',     'Fashion',             'churned',  'lost',        'medium',     15, 900000,  'Mia Davis',       1, false);

insert into public.clients (id, org_id, name, industry, website_url, contact_name, contact_email, contact_phone,
                            company_size, status, lifecycle_stage, pipeline_stage, health_score, value_cents,
                            next_action_date, onboarded_at, assigned_to, notes, created_at)
select md5('demo-client:' || c.n)::uuid, o.id, c.name, c.industry,
       'https://' || regexp_replace(lower(c.name), '[^a-z0-9]+', '', 'g') || '.example',
       c.contact,
       lower(split_part(c.contact, ' ', 1)) || '@' || regexp_replace(lower(c.name), '[^a-z0-9]+', '', 'g') || '.example',
       '+1 555 01' || lpad(c.n::text, 2, '0'),
       c.company_size, c.status,
       case c.status when 'client' then 'active' when 'churned' then 'churned' when 'lead' then 'awareness'
                     when 'prospect' then 'consideration' else null end,
       c.pipeline_stage, c.health, c.value_cents,
       case when c.status in ('lead', 'prospect') then current_date + (c.n % 10) end,
       case when c.status in ('client', 'churned') then now() - ((120 - c.n * 3) || ' days')::interval end,
       md5('demo-user:' || c.org_slug || ':' || case when c.n % 2 = 0 then 'consultant' else 'admin' end)::uuid,
       'Demo client #' || c.n || ' (' || c.status || ').',
       now() - ((150 - c.n * 4) || ' days')::interval
from demo_clients c
join public.organizations o on o.slug = c.org_slug
on conflict do nothing;

-- Contacts: a primary contact per client, and a second one for the larger accounts.
insert into public.crm_contacts (id, org_id, client_id, first_name, last_name, email, phone, job_title, is_primary, tags)
select md5('demo-contact:' || c.n || ':1')::uuid, cl.org_id, cl.id,
       split_part(c.contact, ' ', 1), split_part(c.contact, ' ', 2), cl.contact_email, cl.contact_phone,
       (array['Founder', 'CEO', 'Head of Marketing', 'Operations Director', 'COO'])[1 + c.n % 5],
       true, array['decision-maker']
from demo_clients c join public.clients cl on cl.id = md5('demo-client:' || c.n)::uuid
union all
select md5('demo-contact:' || c.n || ':2')::uuid, cl.org_id, cl.id,
       (array['Alex', 'Sam', 'Jordan', 'Taylor'])[1 + c.n % 4], 'Rivera',
       'team' || c.n || '@' || regexp_replace(lower(c.name), '[^a-z0-9]+', '', 'g') || '.example', null,
       'Project Manager', false, array['day-to-day']
from demo_clients c join public.clients cl on cl.id = md5('demo-client:' || c.n)::uuid
where c.company_size in ('medium', 'large', 'enterprise')
on conflict do nothing;

-- Deals: one per client that reached the pipeline; won for clients, lost for churned/archived.
insert into public.crm_deals (id, org_id, client_id, stage_id, title, amount_cents, currency, expected_close_date,
                              owner_id, win_probability, status, closed_at, created_at)
select md5('demo-deal:' || c.n)::uuid, cl.org_id, cl.id,
       md5('demo-stage:' || cl.org_id || ':' ||
           case c.pipeline_stage when 'new' then 1 when 'contacted' then 2 when 'qualified' then 3
                when 'proposal' then 4 when 'negotiation' then 5 when 'won' then 6 else 7 end)::uuid,
       c.name || ' — AI rollout', coalesce(c.value_cents, 500000),
       case c.org_slug when 'northwind' then 'EUR' else 'USD' end,
       current_date + (c.n * 3),
       md5('demo-user:' || c.org_slug || ':' || case when c.n % 2 = 0 then 'consultant' else 'admin' end)::uuid,
       case c.pipeline_stage when 'new' then 5 when 'contacted' then 15 when 'qualified' then 35
            when 'proposal' then 60 when 'negotiation' then 80 when 'won' then 100 else 0 end,
       case when c.status = 'client' then 'won' when c.status = 'churned' then 'lost'
            when c.status = 'archived' then 'archived' else 'open' end,
       case when c.status in ('client', 'churned') then now() - ((100 - c.n * 3) || ' days')::interval end,
       now() - ((140 - c.n * 4) || ' days')::interval
from demo_clients c join public.clients cl on cl.id = md5('demo-client:' || c.n)::uuid
on conflict do nothing;

-- Interactions (each also lands on the activity timeline and in the embedding queue).
insert into public.crm_interactions (id, org_id, client_id, deal_id, contact_id, type, direction, subject, content,
                                     summary, sentiment, created_by, created_at)
select md5('demo-interaction:' || c.n || ':' || i.k)::uuid, cl.org_id, cl.id,
       md5('demo-deal:' || c.n)::uuid, md5('demo-contact:' || c.n || ':1')::uuid,
       i.type::public.crm_interaction_type, i.direction,
       i.subject || ' — ' || c.name,
       replace(i.content, '{client}', c.name),
       i.summary,
       (case when c.status = 'churned' and i.k = 3 then 'churn_risk' else i.sentiment end)::public.crm_sentiment,
       md5('demo-user:' || c.org_slug || ':' || case when c.n % 2 = 0 then 'consultant' else 'admin' end)::uuid,
       now() - ((60 - c.n * 2 - i.k * 5) || ' days')::interval
from demo_clients c
join public.clients cl on cl.id = md5('demo-client:' || c.n)::uuid
cross join (values
  (1, 'email', 'inbound', 'Enquiry about AI automation',
   'Hi, we found you online. {client} is exploring how AI could take repetitive customer questions off our team''s plate. Could we talk next week?',
   'Inbound enquiry about automating customer questions.', 'positive'),
  (2, 'call', 'outbound', 'Discovery call',
   'Discovery call with {client}: current tools are a CRM, a shared inbox and spreadsheets. Main pain points are slow lead follow-up and manual reporting. Budget approved for a pilot this quarter.',
   'Pain points: slow follow-up, manual reporting. Pilot budget approved.', 'positive'),
  (3, 'meeting', 'outbound', 'Proposal review',
   'Walked {client} through the proposal and roadmap. They asked about data privacy, integration with their booking system and the timeline for phase one. Pricing felt high compared to a competitor.',
   'Proposal reviewed; concerns on privacy, integration and price.', 'neutral')
) as i(k, type, direction, subject, content, summary, sentiment)
where c.status <> 'lead' or i.k = 1
on conflict do nothing;

-- Projects: one per client that started the wizard (wizard_step not null), at every step.
insert into public.projects (id, org_id, client_id, name, description, status, current_phase, progress,
                             start_date, end_date, value_cents, created_at)
select md5('demo-project:' || c.n)::uuid, cl.org_id, cl.id,
       c.name || ' AI programme',
       'AI adoption programme for ' || c.name || ' (' || c.industry || ').',
       case when c.status = 'churned' then 'cancelled'
            when c.with_roadmap then 'active'
            when c.wizard_step >= 4 then 'planning'
            else 'discovery' end,
       case when c.with_roadmap then 'phase_' || (1 + c.n % 3) end,
       case when c.with_roadmap then 20 + (c.n * 7) % 60 else 0 end,
       current_date - (c.n * 5), current_date + 120 - c.n,
       c.value_cents,
       now() - ((100 - c.n * 3) || ' days')::interval
from demo_clients c join public.clients cl on cl.id = md5('demo-client:' || c.n)::uuid
where c.wizard_step is not null
on conflict do nothing;

-- Wizard sessions at steps 1..5 (step 5 completes the wizard via trigger), run by the client user.
insert into public.wizard_sessions (id, org_id, project_id, user_id, current_step, created_at)
select md5('demo-session:' || c.n)::uuid, cl.org_id, md5('demo-project:' || c.n)::uuid,
       md5('demo-user:' || c.org_slug || ':client')::uuid, c.wizard_step,
       now() - ((90 - c.n * 3) || ' days')::interval
from demo_clients c join public.clients cl on cl.id = md5('demo-client:' || c.n)::uuid
where c.wizard_step is not null
on conflict do nothing;

insert into public.wizard_answers (id, org_id, session_id, screen_id, step_number, data, ai_results)
select md5('demo-answer:' || c.n || ':' || s.step)::uuid, cl.org_id, md5('demo-session:' || c.n)::uuid,
       'step-' || s.step, s.step,
       case s.step
         when 1 then jsonb_build_object('company_name', c.name, 'industry', c.industry, 'company_size', c.company_size,
                                        'goals', jsonb_build_array('Respond to leads faster', 'Reduce manual reporting'))
         when 2 then jsonb_build_object('current_tools', jsonb_build_array('CRM', 'Shared inbox', 'Spreadsheets'),
                                        'biggest_bottleneck', 'Lead follow-up takes two days on average')
         when 3 then jsonb_build_object('selected_systems', jsonb_build_array('lead-generation', 'customer-support'))
         when 4 then jsonb_build_object('data_readiness', 3, 'team_readiness', 4, 'budget_readiness', 3)
         else jsonb_build_object('accepted_roadmap', true)
       end,
       case s.step
         when 1 then jsonb_build_object('business_summary', c.name || ' is a ' || lower(c.industry) || ' business looking to automate customer-facing work.')
         when 2 then jsonb_build_object('diagnostics', jsonb_build_array('Slow lead response', 'No single customer view'))
         when 3 then jsonb_build_object('recommended', jsonb_build_array('lead-generation', 'customer-support', 'analytics-insights'))
         when 4 then jsonb_build_object('readiness_score', 60 + c.n % 30)
         else jsonb_build_object('roadmap_generated', c.with_roadmap)
       end
from demo_clients c
join public.clients cl on cl.id = md5('demo-client:' || c.n)::uuid
cross join generate_series(1, 5) as s(step)
where c.wizard_step is not null and s.step <= c.wizard_step
on conflict do nothing;

-- Recommended / selected systems for projects past step 3.
insert into public.project_systems (id, org_id, project_id, system_id, is_recommended, is_selected, why_it_matters, recommendation_metadata)
select md5('demo-project-system:' || c.n || ':' || s.system_id)::uuid, cl.org_id, md5('demo-project:' || c.n)::uuid,
       s.system_id, true, s.selected, s.why, jsonb_build_object('score', s.score, 'source', 'recommend-systems')
from demo_clients c
join public.clients cl on cl.id = md5('demo-client:' || c.n)::uuid
cross join (values ('lead-generation', true, 'Leads wait two days for a reply; automated qualification answers in minutes.', 0.91),
                   ('customer-support', true, 'Most inbound questions repeat; an assistant can answer them around the clock.', 0.86),
                   ('analytics-insights', false, 'Weekly reporting is built by hand from spreadsheets.', 0.64)) as s(system_id, selected, why, score)
where c.wizard_step >= 3
on conflict do nothing;

insert into public.project_services (id, org_id, project_id, service_id, status, started_at, notes)
select md5('demo-project-service:' || c.n || ':' || s.service_id)::uuid, cl.org_id, md5('demo-project:' || c.n)::uuid,
       s.service_id::uuid, case when c.with_roadmap then 'active' else 'planned' end,
       case when c.with_roadmap then now() - interval '30 days' end, null
from demo_clients c
join public.clients cl on cl.id = md5('demo-client:' || c.n)::uuid
cross join (values ('a0000000-0000-4000-8000-000000000002'), ('a0000000-0000-4000-8000-000000000003')) as s(service_id)
where c.wizard_step >= 4
on conflict do nothing;

-- Context snapshots: every project past step 4 has an active snapshot; roadmap projects also an
-- older, inactive version 1.
insert into public.context_snapshots (id, org_id, project_id, version, is_active, summary, metrics, created_at)
select md5('demo-snapshot:' || c.n || ':' || v.version)::uuid, cl.org_id, md5('demo-project:' || c.n)::uuid,
       v.version, v.version = case when c.with_roadmap then 2 else 1 end,
       c.name || ': business context v' || v.version || '. Priorities: faster lead response, self-service support, automated reporting.',
       jsonb_build_object('readiness_score', 55 + c.n % 30 + v.version * 5, 'monthly_leads', 120 + c.n * 10,
                          'avg_response_hours', 48 - v.version * 12),
       now() - ((80 - c.n * 3 - v.version * 5) || ' days')::interval
from demo_clients c
join public.clients cl on cl.id = md5('demo-client:' || c.n)::uuid
cross join (values (1), (2)) as v(version)
where c.wizard_step >= 4 and (v.version = 1 or c.with_roadmap)
on conflict do nothing;

-- Roadmaps on the active snapshot (activates the project dashboard via trigger).
insert into public.roadmaps (id, org_id, snapshot_id, total_duration, roi_projection)
select md5('demo-roadmap:' || c.n)::uuid, cl.org_id, md5('demo-snapshot:' || c.n || ':2')::uuid,
       '6 months',
       jsonb_build_object('payback_months', 4 + c.n % 4, 'annual_savings_cents', 2000000 + c.n * 150000,
                          'summary', 'Automation of lead follow-up and support frees about 20 hours a week.')
from demo_clients c join public.clients cl on cl.id = md5('demo-client:' || c.n)::uuid
where c.with_roadmap
on conflict do nothing;

insert into public.roadmap_phases (id, org_id, roadmap_id, title, description, order_index, outcomes)
select md5('demo-phase:' || c.n || ':' || p.idx)::uuid, cl.org_id, md5('demo-roadmap:' || c.n)::uuid,
       p.title, p.description, p.idx, p.outcomes::jsonb
from demo_clients c
join public.clients cl on cl.id = md5('demo-client:' || c.n)::uuid
cross join (values
  (1, 'Phase 1: Foundations', 'Connect data sources, clean the CRM and define KPIs.', '["CRM cleaned", "KPIs agreed", "Data connectors live"]'),
  (2, 'Phase 2: Quick wins', 'Launch the support assistant and automated lead qualification.', '["Assistant live on web chat", "Leads answered within 5 minutes"]'),
  (3, 'Phase 3: Scale', 'Roll out to all channels and add weekly AI insights.', '["WhatsApp channel", "Weekly insight report", "Team trained"]')
) as p(idx, title, description, outcomes)
where c.with_roadmap
on conflict do nothing;

insert into public.tasks (id, org_id, phase_id, title, description, owner, status, priority, effort, due_date, tags,
                          assigned_to, ai_generated, ai_suggestion)
select md5('demo-task:' || c.n || ':' || p.idx || ':' || t.k)::uuid, cl.org_id,
       md5('demo-phase:' || c.n || ':' || p.idx)::uuid,
       t.title, t.description, t.owner,
       case when p.idx = 1 then 'done' when p.idx = 2 and t.k = 1 then 'in_progress'
            when p.idx = 2 and t.k = 2 then 'review' when p.idx = 3 and t.k = 3 then 'blocked' else 'todo' end,
       t.priority, t.effort, current_date + (p.idx * 30 + t.k * 5 - 45),
       array['phase-' || p.idx, t.tag],
       case when t.owner = 'agency' then md5('demo-user:' || c.org_slug || ':' || t.who)::uuid end,
       t.k <> 3, case when t.k <> 3 then 'Start with the highest-volume enquiry types.' end
from demo_clients c
join public.clients cl on cl.id = md5('demo-client:' || c.n)::uuid
cross join generate_series(1, 3) as p(idx)
cross join (values
  (1, 'Audit current workflows', 'Map every step from enquiry to invoice.', 'agency', 'high', 'm', 'discovery', 'consultant'),
  (2, 'Configure the assistant', 'Load the knowledge base and set the tone of voice.', 'agency', 'medium', 'l', 'build', 'member'),
  (3, 'Approve brand guidelines', 'The client signs off tone of voice and escalation rules.', 'client', 'medium', 's', 'approval', 'consultant')
) as t(k, title, description, owner, priority, effort, tag, who)
where c.with_roadmap
on conflict do nothing;

insert into public.milestones (id, org_id, project_id, phase_id, title, description, due_date, status, completed_at)
select md5('demo-milestone:' || c.n || ':' || p.idx)::uuid, cl.org_id, md5('demo-project:' || c.n)::uuid,
       md5('demo-phase:' || c.n || ':' || p.idx)::uuid,
       'Phase ' || p.idx || ' complete', 'Sign-off of phase ' || p.idx || ' outcomes.',
       current_date + (p.idx * 45 - 60),
       case p.idx when 1 then 'completed' when 2 then 'in_progress' else 'upcoming' end,
       case when p.idx = 1 then now() - interval '10 days' end
from demo_clients c
join public.clients cl on cl.id = md5('demo-client:' || c.n)::uuid
cross join generate_series(1, 3) as p(idx)
where c.with_roadmap
on conflict do nothing;

insert into public.deliverables (id, org_id, phase_id, title, description, status, due_date, delivered_at, assigned_to)
select md5('demo-deliverable:' || c.n || ':' || p.idx)::uuid, cl.org_id, md5('demo-phase:' || c.n || ':' || p.idx)::uuid,
       (array['Workflow audit report', 'Support assistant (web chat)', 'Insights dashboard'])[p.idx],
       'Deliverable of phase ' || p.idx || '.',
       case p.idx when 1 then 'delivered' when 2 then 'in_review' else 'pending' end,
       current_date + (p.idx * 45 - 60),
       case when p.idx = 1 then now() - interval '12 days' end,
       md5('demo-user:' || c.org_slug || ':consultant')::uuid
from demo_clients c
join public.clients cl on cl.id = md5('demo-client:' || c.n)::uuid
cross join generate_series(1, 3) as p(idx)
where c.with_roadmap
on conflict do nothing;

-- Briefs (version 1 is recorded in brief_versions by trigger).
insert into public.briefs (id, org_id, project_id, title, content, status, version)
select md5('demo-brief:' || c.n)::uuid, cl.org_id, md5('demo-project:' || c.n)::uuid,
       c.name || ' — project brief',
       jsonb_build_object('objective', 'Cut lead response time from two days to five minutes.',
                          'audience', 'Inbound leads and existing customers of ' || c.name,
                          'scope', jsonb_build_array('Web chat assistant', 'Lead qualification', 'CRM sync'),
                          'success_metrics', jsonb_build_array('Response time < 5 min', '30% fewer support emails')),
       case when c.with_roadmap then 'approved' else 'draft' end, 1
from demo_clients c join public.clients cl on cl.id = md5('demo-client:' || c.n)::uuid
where c.wizard_step >= 3
on conflict do nothing;

-- Documents with extracted text (queued for embedding by trigger).
insert into public.documents (id, org_id, wizard_session_id, project_id, name, storage_path, file_size, mime_type,
                              category, content_text, summary, status, uploaded_by)
select md5('demo-document:' || c.n || ':' || d.k)::uuid, cl.org_id, md5('demo-session:' || c.n)::uuid,
       md5('demo-project:' || c.n)::uuid, d.name, cl.org_id || '/' || md5('demo-project:' || c.n)::uuid || '/' || d.file,
       d.size, d.mime, d.category, replace(d.content, '{client}', c.name), replace(d.summary, '{client}', c.name),
       case when c.status = 'churned' and d.k = 2 then 'archived' else 'active' end,
       md5('demo-user:' || c.org_slug || ':consultant')::uuid
from demo_clients c
join public.clients cl on cl.id = md5('demo-client:' || c.n)::uuid
cross join (values
  (1, 'Discovery notes', 'discovery-notes.md', 14200, 'text/markdown', 'requirements',
   '{client} receives about 300 enquiries a month by email, web form and WhatsApp. Two people answer them by hand; the average first reply takes two days. Frequent questions: pricing, availability, delivery times and returns. The CRM is out of date because follow-ups are logged manually.',
   'Enquiry volumes, channels and the slow manual follow-up at {client}.'),
  (2, 'Brand voice guidelines', 'brand-voice.pdf', 482000, 'application/pdf', 'assets',
   'Tone of voice for {client}: warm, concise and expert. Avoid jargon, always offer a next step, escalate complaints to a person within one hour. Use the customer''s first name; sign off with the team name.',
   'How the {client} assistant should sound and when it must hand over to a person.'),
  (3, 'Competitor research', 'competitors.md', 9100, 'text/markdown', 'reference',
   'Three competitors of {client} already offer instant chat replies and online booking. None provides proactive follow-up or weekly insight reports, which is where an AI roadmap can differentiate.',
   'Competitor landscape and differentiation opportunities for {client}.')
) as d(k, name, file, size, mime, category, content, summary)
where c.wizard_step is not null
on conflict do nothing;

-- Invoices and payments for clients (and churned clients' final invoice).
insert into public.invoices (id, org_id, project_id, client_id, invoice_number, amount_cents, currency, status,
                             issued_at, due_date, line_items, notes)
select md5('demo-invoice:' || c.n || ':' || i.k)::uuid, cl.org_id,
       case when c.wizard_step is not null then md5('demo-project:' || c.n)::uuid end, cl.id,
       upper(left(c.org_slug, 2)) || '-2026-' || lpad((c.n * 10 + i.k)::text, 4, '0'),
       i.setup + i.monthly,
       case c.org_slug when 'northwind' then 'EUR' else 'USD' end,
       i.status,
       now() - ((60 - i.k * 30) || ' days')::interval,
       (now() - ((60 - i.k * 30) || ' days')::interval)::date + 30,
       jsonb_build_array(
         jsonb_build_object('description', 'Implementation (phase ' || i.k || ')', 'quantity', 1, 'unit_price_cents', i.setup, 'amount_cents', i.setup),
         jsonb_build_object('description', 'Platform and support (monthly)', 'quantity', 1, 'unit_price_cents', i.monthly, 'amount_cents', i.monthly)),
       'Thank you for your business.'
from demo_clients c
join public.clients cl on cl.id = md5('demo-client:' || c.n)::uuid
cross join (values (1, 'sent', 450000, 50000), (2, 'sent', 300000, 50000)) as i(k, status, setup, monthly)
where c.status in ('client', 'churned') and (i.k = 1 or c.status = 'client')
on conflict do nothing;

-- First invoices are paid in full (one payment), second invoices of even clients half paid;
-- the payments trigger marks fully covered invoices as paid.
insert into public.payments (id, org_id, invoice_id, amount_cents, currency, status, method, provider_ref, processed_at)
select md5('demo-payment:' || inv.id)::uuid, inv.org_id, inv.id,
       case when inv.invoice_number like '%1' then inv.amount_cents else inv.amount_cents / 2 end,
       inv.currency, 'completed', 'bank_transfer', 'demo-' || left(md5(inv.id::text), 10),
       inv.issued_at + interval '12 days'
from public.invoices inv
where inv.id in (select md5('demo-invoice:' || c.n || ':' || k)::uuid
                 from demo_clients c cross join (values (1), (2)) as x(k)
                 where k = 1 or c.n % 2 = 0)
on conflict do nothing;

-- A failed card payment on an open invoice, for realism.
insert into public.payments (id, org_id, invoice_id, amount_cents, currency, status, method, provider_ref, processed_at)
select md5('demo-payment-failed:' || inv.id)::uuid, inv.org_id, inv.id, inv.amount_cents, inv.currency, 'failed', 'card',
       'demo-failed-' || left(md5(inv.id::text), 8), inv.issued_at + interval '3 days'
from public.invoices inv
where inv.id = md5('demo-invoice:1:2')::uuid
on conflict do nothing;

-- AI run log history and the org analytics of the current month.
insert into public.ai_run_logs (id, org_id, project_id, agent_name, model_name, provider, input_tokens, output_tokens,
                                duration_ms, cost_micro_usd, success, error_message, cache_hit, created_at)
select md5('demo-ai-run:' || c.n || ':' || a.k)::uuid, cl.org_id, md5('demo-project:' || c.n)::uuid,
       a.agent, 'gemini-2.0-flash', 'gemini', 1200 + a.k * 300, 400 + a.k * 150, 1500 + a.k * 700,
       (1200 + a.k * 300) * 0.1 + (400 + a.k * 150) * 0.4, a.k <> 4,
       case when a.k = 4 then 'model returned invalid JSON' end, a.k = 2,
       now() - ((40 - c.n - a.k) || ' days')::interval
from demo_clients c
join public.clients cl on cl.id = md5('demo-client:' || c.n)::uuid
cross join (values (1, 'analyze-business'), (2, 'generate-diagnostics'), (3, 'recommend-systems'),
                   (4, 'assess-readiness'), (5, 'generate-roadmap')) as a(k, agent)
where c.wizard_step is not null and a.k <= c.wizard_step
on conflict do nothing;

select public.refresh_org_analytics(o.id, 'month', date_trunc('month', now())::date)
from public.organizations o
where o.slug in ('northwind', 'bluepeak')
  and not exists (select 1 from public.analytics a
                  where a.org_id = o.id and a.period_type = 'month'
                    and a.period_start = date_trunc('month', now())::date);

-- An org-specific service in the Northwind catalogue.
insert into public.services (id, org_id, name, slug, category, description, benefits, features, is_active, display_order)
values ('d0000000-0000-4000-8000-0000000000a1', 'd0000000-0000-4000-8000-000000000001',
        'Northwind Retail Accelerator', 'retail-accelerator', 'custom',
        'Northwind''s packaged offer for fashion and retail brands: product copy, support assistant and weekly sales insights.',
        '["Launch in 6 weeks", "Fixed price"]', '["Product copy generator", "Support assistant", "Sales insights"]', true, 1)
on conflict do nothing;
