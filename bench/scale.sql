-- Bench data: 100 organizations x 1,000 clients (one project each), and a `member` user
-- (bench-member@agencyflow.local / bench-password) in the first organization.
-- Idempotent: does nothing when the bench organizations exist.
do $$
begin
  if exists (select 1 from public.organizations where slug = 'bench-org-1') then
    return;
  end if;
  insert into public.organizations (id, name, slug)
  select ('b0000000-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid, 'Bench Org ' || g, 'bench-org-' || g
  from generate_series(1, 100) g;
  insert into public.clients (org_id, name, industry, status, pipeline_stage, health_score)
  select ('b0000000-0000-4000-8000-' || lpad(o::text, 12, '0'))::uuid,
         'Client ' || o || '-' || c,
         (array['fashion','saas','tourism','real_estate','events'])[1 + c % 5],
         (array['lead','prospect','client','churned','archived'])[1 + c % 5],
         (array['new','contacted','qualified','proposal','negotiation','won','lost'])[1 + c % 7],
         c % 101
  from generate_series(1, 100) o, generate_series(1, 1000) c;
  insert into public.projects (org_id, client_id, name, status, progress)
  select c.org_id, c.id, c.name || ' project', 'active', 50 from public.clients c
  where c.org_id::text like 'b0000000-%';
  insert into auth.users (id, aud, role, email, encrypted_password, email_confirmed_at, raw_app_meta_data, raw_user_meta_data)
  values ('b1000000-0000-4000-8000-000000000001', 'authenticated', 'authenticated', 'bench-member@agencyflow.local',
          extensions.crypt('bench-password', extensions.gen_salt('bf', 6)), now(),
          '{"provider":"email","providers":["email"],"invited_org_id":"b0000000-0000-4000-8000-000000000001","invited_role":"member"}', '{}');
end
$$;
analyze;
