-- auth.flow_state rows that were never exchanged (an abandoned OAuth or PKCE sign-in) are
-- swept: each new flow removes up to 100 rows older than 24 hours (as GoTrue's cleanup
-- does), so the table cannot grow without bound. The sweep reads them by age.
create index if not exists flow_state_created_at_idx on auth.flow_state (created_at);
