-- client_crm_status: one row per (non-archived) client with its latest non-archived project,
-- that project's latest wizard session and active roadmap, and the derived CRM classification.
-- security_invoker: the caller's RLS applies (the original ran as its owner and showed every
-- tenant's clients to anyone who could query it).

create or replace view public.client_crm_status
with (security_invoker = true)
as
select
  c.id,
  c.org_id,
  c.name,
  c.industry,
  c.website_url,
  c.contact_name,
  c.contact_email,
  c.contact_phone,
  c.company_size,
  c.status,
  c.lifecycle_stage,
  c.pipeline_stage,
  c.health_score,
  c.value_cents,
  c.last_activity_at,
  c.next_action_date,
  c.onboarded_at,
  c.assigned_to,
  c.created_at,
  c.updated_at,
  p.id as project_id,
  p.name as project_name,
  p.status as project_status,
  p.dashboard_activated_at,
  ws.id as wizard_session_id,
  ws.current_step as wizard_current_step,
  ws.wizard_completed_at,
  rm.id as roadmap_id,
  case
    when ws.current_step >= 5 then 'Completed'
    when ws.id is not null then 'In Progress'
    else 'Not Started'
  end as wizard_status,
  case
    when rm.id is not null then 'Active Dashboard'
    when p.id is not null then 'Project Created (No Dashboard)'
    else 'No Project'
  end as dashboard_status,
  case
    when c.status = 'client' and ws.current_step >= 5 and rm.id is not null then 'Active Client'
    when c.status = 'client' and ws.current_step >= 5 then 'Client (Wizard Complete)'
    when c.status = 'client' then 'Client (In Progress)'
    when c.status = 'prospect' and ws.id is not null then 'Prospect (Wizard Started)'
    when c.status = 'prospect' then 'Prospect (No Wizard)'
    when c.status = 'lead' then 'Lead'
    else 'Unknown'
  end as crm_classification,
  (rm.id is not null) as has_dashboard_access,
  (c.status = 'client') as is_client,
  (c.status in ('prospect', 'lead')) as is_prospect,
  case
    when c.industry ~* 'fashion|apparel|clothing' then 'fashion'
    when c.industry ~* 'saas|software' then 'saas'
    when c.industry ~* 'touris|travel|hospitality|hotel' then 'tourism'
    when c.industry ~* 'real[ _-]?estate|property' then 'real_estate'
    when c.industry ~* 'event' then 'events'
    else 'other'
  end as industry_category
from public.clients c
left join lateral (
  select pr.id, pr.name, pr.status, pr.dashboard_activated_at
  from public.projects pr
  where pr.org_id = c.org_id
    and pr.client_id = c.id
    and pr.status <> 'archived'
  order by pr.created_at desc, pr.id desc
  limit 1
) p on true
left join lateral (
  select w.id, w.current_step, w.wizard_completed_at
  from public.wizard_sessions w
  where w.org_id = c.org_id
    and w.project_id = p.id
  order by w.created_at desc, w.id desc
  limit 1
) ws on true
left join lateral (
  select r.id
  from public.context_snapshots s
  join public.roadmaps r on r.org_id = s.org_id and r.snapshot_id = s.id
  where s.org_id = c.org_id
    and s.project_id = p.id
    and s.is_active
  limit 1
) rm on true
where c.status <> 'archived';

comment on view public.client_crm_status is
  'One row per non-archived client: latest project, wizard and dashboard state, CRM classification. security_invoker.';

-- The classification of one client (the same rules as the view). INVOKER: a caller who cannot
-- see the client (other org, role without CRM access, archived client) gets NULL.
create or replace function public.get_client_classification(p_client_id uuid)
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
  select jsonb_build_object(
    'client_id', v.id,
    'client_status', v.status,
    'wizard_status', v.wizard_status,
    'dashboard_status', v.dashboard_status,
    'crm_classification', v.crm_classification,
    'has_dashboard_access', v.has_dashboard_access,
    'industry_category', v.industry_category
  )
  from public.client_crm_status v
  where v.id = p_client_id
$$;
