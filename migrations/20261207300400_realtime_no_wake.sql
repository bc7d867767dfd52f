-- /realtime/v1: the wake-up triggers of 20261207300000 are removed. A transaction that
-- NOTIFYs takes a database-wide lock at commit that serialises every other notifying commit
-- (WAL flush included), so a NOTIFY per write on the published tables cut concurrent
-- INSERTs into public.clients from ~7,400/s to ~2,900/s with 16 writers (pgbench, release
-- server, 2026-12-06). The capture leader polls the slot instead (`--realtime-poll-ms`,
-- 25 ms when idle; back to back while there are changes).
do $$
declare
  t text;
begin
  foreach t in array array['clients', 'projects', 'tasks', 'roadmap_phases', 'milestones',
    'deliverables', 'crm_deals', 'crm_interactions', 'activities', 'invoices', 'payments',
    'wizard_sessions', 'wizard_answers', 'documents']
  loop
    execute format('drop trigger if exists realtime_wake on public.%I', t);
  end loop;
end
$$;
drop function if exists realtime.wake();
