-- The auth surface logs in as the owner of the auth schema, `supabase_auth_admin`, as GoTrue
-- does; the API login (`authenticator`) is no longer a member of it. Before, any SQL running
-- in an API request (as authenticator's session) could `set role supabase_auth_admin` and
-- read every user's password hash and tokens (security issue #14). The API roles a request
-- may run as are anon, authenticated and service_role, nothing else.
alter role supabase_auth_admin with login;
revoke supabase_auth_admin from authenticator;
