-- Indexes (docs/schema.md §2, §3). Primary keys, unique constraints and partial unique
-- indexes are declared with their tables; `unique (org_id, id)` already covers each table's
-- organizations foreign key. Here: an index for every other foreign key, with the foreign key's
-- columns leading (org_id first for composites), list filters (org_id, status) and
-- (org_id, created_at desc), GIN for full text and containment queries, and HNSW for vectors.
-- No index duplicates another.

-- Membership lookups behind every policy: team_members where user_id = auth.uid().
create index team_members_user_id_idx on public.team_members (user_id) include (org_id, role);
create index organizations_created_by_idx on public.organizations (created_by);

-- clients
create index clients_org_id_assigned_to_idx on public.clients (org_id, assigned_to);
create index clients_org_id_status_idx on public.clients (org_id, status);
create index clients_org_id_created_at_idx on public.clients (org_id, created_at desc);

-- projects
create index projects_org_id_client_id_idx on public.projects (org_id, client_id, created_at desc);
create index projects_org_id_status_idx on public.projects (org_id, status);
create index projects_org_id_created_at_idx on public.projects (org_id, created_at desc);

-- wizard
create index wizard_sessions_org_id_project_id_idx on public.wizard_sessions (org_id, project_id, created_at desc);
create index wizard_sessions_user_id_idx on public.wizard_sessions (user_id);
create index wizard_answers_org_id_session_id_idx on public.wizard_answers (org_id, session_id);
create index context_snapshots_org_id_project_id_idx on public.context_snapshots (org_id, project_id, version desc);

-- delivery
create index roadmaps_org_id_snapshot_id_idx on public.roadmaps (org_id, snapshot_id);
create index roadmap_phases_org_id_roadmap_id_idx on public.roadmap_phases (org_id, roadmap_id, order_index);
create index tasks_org_id_phase_id_idx on public.tasks (org_id, phase_id);
create index tasks_org_id_assigned_to_idx on public.tasks (org_id, assigned_to);
create index tasks_org_id_status_idx on public.tasks (org_id, status);
create index tasks_tags_idx on public.tasks using gin (tags);
create index milestones_org_id_project_id_idx on public.milestones (org_id, project_id, due_date);
create index milestones_org_id_phase_id_idx on public.milestones (org_id, phase_id);
create index deliverables_org_id_phase_id_idx on public.deliverables (org_id, phase_id);
create index deliverables_org_id_assigned_to_idx on public.deliverables (org_id, assigned_to);
create index briefs_org_id_project_id_idx on public.briefs (org_id, project_id);
create index brief_versions_org_id_brief_id_idx on public.brief_versions (org_id, brief_id, version desc);
create index brief_versions_org_id_changed_by_idx on public.brief_versions (org_id, changed_by);

-- catalogue
create index system_services_service_id_idx on public.system_services (service_id);
create index project_systems_org_id_project_id_idx on public.project_systems (org_id, project_id);
create index project_systems_system_id_idx on public.project_systems (system_id);
create index project_services_org_id_project_id_idx on public.project_services (org_id, project_id);
create index project_services_service_id_idx on public.project_services (service_id);

-- documents
create index documents_org_id_project_id_idx on public.documents (org_id, project_id);
create index documents_org_id_wizard_session_id_idx on public.documents (org_id, wizard_session_id);
create index documents_org_id_uploaded_by_idx on public.documents (org_id, uploaded_by);
create index documents_org_id_created_at_idx on public.documents (org_id, created_at desc);
create index documents_fts_idx on public.documents using gin (fts);
create index documents_embedding_idx on public.documents
  using hnsw (embedding extensions.vector_cosine_ops);

-- CRM
create index crm_stages_org_id_pipeline_id_idx on public.crm_stages (org_id, pipeline_id, display_order);
create index crm_contacts_org_id_client_id_idx on public.crm_contacts (org_id, client_id);
create index crm_contacts_tags_idx on public.crm_contacts using gin (tags);
create index crm_deals_org_id_client_id_idx on public.crm_deals (org_id, client_id);
create index crm_deals_org_id_stage_id_idx on public.crm_deals (org_id, stage_id);
create index crm_deals_org_id_owner_id_idx on public.crm_deals (org_id, owner_id);
create index crm_deals_org_id_status_idx on public.crm_deals (org_id, status);
create index crm_interactions_org_id_client_id_idx on public.crm_interactions (org_id, client_id, created_at desc);
create index crm_interactions_org_id_deal_id_idx on public.crm_interactions (org_id, deal_id);
create index crm_interactions_org_id_contact_id_idx on public.crm_interactions (org_id, contact_id);
create index crm_interactions_org_id_created_by_idx on public.crm_interactions (org_id, created_by);
create index crm_interactions_fts_idx on public.crm_interactions using gin (fts);
create index crm_interactions_embedding_idx on public.crm_interactions
  using hnsw (embedding extensions.vector_cosine_ops);
create index activities_org_id_client_id_idx on public.activities (org_id, client_id, created_at desc);
create index activities_org_id_project_id_idx on public.activities (org_id, project_id, created_at desc);
create index activities_org_id_created_by_idx on public.activities (org_id, created_by);
create index activities_org_id_created_at_idx on public.activities (org_id, created_at desc);
create index activities_metadata_idx on public.activities using gin (metadata jsonb_path_ops);

-- finance
create index invoices_org_id_client_id_idx on public.invoices (org_id, client_id);
create index invoices_org_id_project_id_idx on public.invoices (org_id, project_id);
create index invoices_org_id_status_idx on public.invoices (org_id, status);
create index payments_org_id_invoice_id_idx on public.payments (org_id, invoice_id);

-- AI
create index ai_run_logs_org_id_project_id_idx on public.ai_run_logs (org_id, project_id);
create index ai_run_logs_org_id_created_at_idx on public.ai_run_logs (org_id, created_at desc);
create index ai_cache_org_id_idx on public.ai_cache (org_id);
create index ai_cache_expires_at_idx on public.ai_cache (expires_at);
