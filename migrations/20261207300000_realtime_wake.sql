-- /realtime/v1: wake the capture leader when a published table changes, instead of waiting
-- for its next poll of the logical slot (docs/realtime.md, "Capture"). A statement-level
-- trigger NOTIFYs `agencyflow_realtime_wake` with an empty payload: PostgreSQL delivers it
-- at commit, once per transaction (identical notifications are folded), after the commit
-- record is flushed, so the leader's next read of the slot finds the change. Tables added
-- to the publication later are still captured by the poll (`--realtime-poll-ms`); give them
-- the same trigger for the lower latency.
create or replace function realtime.wake() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  perform pg_catalog.pg_notify('agencyflow_realtime_wake', '');
  return null;
end
$$;

revoke all on function realtime.wake() from public;

do $$
declare
  t text;
begin
  foreach t in array array['clients', 'projects', 'tasks', 'roadmap_phases', 'milestones',
    'deliverables', 'crm_deals', 'crm_interactions', 'activities', 'invoices', 'payments',
    'wizard_sessions', 'wizard_answers', 'documents']
  loop
    execute format(
      'create trigger realtime_wake after insert or update or delete on public.%I
         for each statement execute function realtime.wake()', t);
  end loop;
end
$$;
