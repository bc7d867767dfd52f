-- The global catalogue: AI systems and the agency's standard services, and which services
-- make up each system. Fixed ids, ON CONFLICT DO NOTHING: re-running never duplicates rows and
-- never overwrites edits made since.

insert into public.systems (id, name, description, icon, display_order, is_active) values
  ('lead-generation', 'AI Lead Generation', 'Finds, enriches and scores prospects, then starts personalised outreach.', 'target', 10, true),
  ('customer-support', 'AI Customer Support', 'Answers customer questions across chat, email and WhatsApp from your own knowledge base, and hands over to people when needed.', 'message-circle', 20, true),
  ('content-engine', 'AI Content Engine', 'Plans and drafts on-brand posts, product copy and newsletters for review.', 'pen-tool', 30, true),
  ('sales-automation', 'Sales Automation', 'Keeps the CRM up to date, drafts follow-ups and flags deals at risk.', 'trending-up', 40, true),
  ('booking-assistant', 'Booking & Reservations Assistant', 'Takes bookings, reschedules and sends reminders around the clock.', 'calendar', 50, true),
  ('analytics-insights', 'Analytics & Insights', 'Turns sales, marketing and operations data into weekly insights and forecasts.', 'bar-chart', 60, true),
  ('workflow-automation', 'Workflow Automation', 'Connects your tools and automates repetitive back-office work.', 'zap', 70, true),
  ('knowledge-assistant', 'Internal Knowledge Assistant', 'Lets your team search and ask questions over documents, policies and past projects.', 'book-open', 80, true)
on conflict do nothing;

insert into public.services (id, org_id, name, slug, category, description, benefits, features, is_active, display_order) values
  ('a0000000-0000-4000-8000-000000000001', null, 'AI Strategy Workshop', 'ai-strategy-workshop', 'core',
   'A facilitated workshop that maps opportunities and ranks them by impact and effort.',
   '["Clear priorities", "Shared understanding across the team"]', '["Half-day workshop", "Opportunity map", "Prioritised backlog"]', true, 10),
  ('a0000000-0000-4000-8000-000000000002', null, 'Chatbot Development', 'chatbot-development', 'core',
   'Design, build and launch a conversational assistant trained on your content.',
   '["24/7 answers", "Lower support load"]', '["Knowledge-base ingestion", "Web and WhatsApp channels", "Human handover"]', true, 20),
  ('a0000000-0000-4000-8000-000000000003', null, 'CRM Integration', 'crm-integration', 'core',
   'Connect AI workflows to your CRM so data stays consistent.',
   '["No double entry", "Reliable pipeline data"]', '["Two-way sync", "Field mapping", "Deduplication"]', true, 30),
  ('a0000000-0000-4000-8000-000000000004', null, 'Workflow Automation Setup', 'workflow-automation-setup', 'core',
   'Automate hand-offs between tools with monitored, documented workflows.',
   '["Hours saved every week", "Fewer manual errors"]', '["Process mapping", "Automation build", "Monitoring and alerts"]', true, 40),
  ('a0000000-0000-4000-8000-000000000005', null, 'Content Generation Pipeline', 'content-generation-pipeline', 'core',
   'A repeatable pipeline for drafting, reviewing and publishing content with AI.',
   '["Consistent brand voice", "More output with the same team"]', '["Brand voice guide", "Editorial calendar", "Review workflow"]', true, 50),
  ('a0000000-0000-4000-8000-000000000006', null, 'Data & Analytics Dashboard', 'analytics-dashboard', 'core',
   'A live dashboard of the metrics that matter, with AI-written weekly summaries.',
   '["One source of truth", "Faster decisions"]', '["KPI definition", "Dashboard build", "Weekly AI summary"]', true, 60),
  ('a0000000-0000-4000-8000-000000000007', null, 'AI Training for Teams', 'ai-team-training', 'core',
   'Hands-on training so your staff use AI tools safely and effectively.',
   '["Faster adoption", "Safe usage"]', '["Role-based sessions", "Prompt library", "Usage policy"]', true, 70),
  ('a0000000-0000-4000-8000-000000000008', null, 'E-commerce Product Copy', 'ecommerce-product-copy', 'industry_specific',
   'Product descriptions and collection pages generated from your catalogue data (fashion and retail).',
   '["Launch collections faster", "Better SEO"]', '["Catalogue import", "Tone presets", "Bulk generation"]', true, 80),
  ('a0000000-0000-4000-8000-000000000009', null, 'Guest Messaging Assistant', 'guest-messaging-assistant', 'industry_specific',
   'Pre-arrival, in-stay and post-stay messaging for hotels and tour operators.',
   '["Higher review scores", "Upsell opportunities"]', '["Multilingual replies", "Booking-system integration"]', true, 90),
  ('a0000000-0000-4000-8000-00000000000a', null, 'Property Listing Assistant', 'property-listing-assistant', 'industry_specific',
   'Listing descriptions, lead qualification and viewing scheduling for real-estate agencies.',
   '["More qualified viewings", "Less admin per listing"]', '["Listing generator", "Lead qualification bot", "Calendar booking"]', true, 100),
  ('a0000000-0000-4000-8000-00000000000b', null, 'Event Attendee Concierge', 'event-attendee-concierge', 'industry_specific',
   'An assistant that answers attendee questions and handles registrations for events.',
   '["Fewer support emails", "Better attendee experience"]', '["Agenda Q&A", "Registration flow", "Reminders"]', true, 110)
on conflict do nothing;

insert into public.system_services (id, system_id, service_id, is_primary, display_order) values
  ('b0000000-0000-4000-8000-000000000001', 'lead-generation', 'a0000000-0000-4000-8000-000000000003', true, 10),
  ('b0000000-0000-4000-8000-000000000002', 'lead-generation', 'a0000000-0000-4000-8000-000000000004', false, 20),
  ('b0000000-0000-4000-8000-000000000003', 'customer-support', 'a0000000-0000-4000-8000-000000000002', true, 10),
  ('b0000000-0000-4000-8000-000000000004', 'customer-support', 'a0000000-0000-4000-8000-000000000009', false, 20),
  ('b0000000-0000-4000-8000-000000000005', 'content-engine', 'a0000000-0000-4000-8000-000000000005', true, 10),
  ('b0000000-0000-4000-8000-000000000006', 'content-engine', 'a0000000-0000-4000-8000-000000000008', false, 20),
  ('b0000000-0000-4000-8000-000000000007', 'sales-automation', 'a0000000-0000-4000-8000-000000000003', true, 10),
  ('b0000000-0000-4000-8000-000000000008', 'sales-automation', 'a0000000-0000-4000-8000-00000000000a', false, 20),
  ('b0000000-0000-4000-8000-000000000009', 'booking-assistant', 'a0000000-0000-4000-8000-000000000009', true, 10),
  ('b0000000-0000-4000-8000-00000000000a', 'booking-assistant', 'a0000000-0000-4000-8000-00000000000b', false, 20),
  ('b0000000-0000-4000-8000-00000000000b', 'analytics-insights', 'a0000000-0000-4000-8000-000000000006', true, 10),
  ('b0000000-0000-4000-8000-00000000000c', 'workflow-automation', 'a0000000-0000-4000-8000-000000000004', true, 10),
  ('b0000000-0000-4000-8000-00000000000d', 'knowledge-assistant', 'a0000000-0000-4000-8000-000000000002', true, 10),
  ('b0000000-0000-4000-8000-00000000000e', 'knowledge-assistant', 'a0000000-0000-4000-8000-000000000007', false, 20),
  ('b0000000-0000-4000-8000-00000000000f', 'lead-generation', 'a0000000-0000-4000-8000-000000000001', false, 30)
on conflict do nothing;
