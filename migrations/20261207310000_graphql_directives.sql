-- /graphql/v1 (pg_graphql's API, served natively): the agency schema's directives.
-- Introspection is on for `public`, as pg_graphql 1.6 needs `@graphql({"introspection": true})`
-- on the schema for `__schema`/`__type` (GraphiQL, codegen). Names stay as in SQL
-- (no inflect_names), as pg_graphql's default and as the seed's clients query them.
comment on schema public is e'@graphql({"introspection": true})';

-- totalCount and aggregate on the lists the app pages through and sums: the tenant's clients,
-- projects, tasks, invoices and deals (row-level security still decides what is counted).
-- (These tables had no comment before.)
comment on table public.clients is e'@graphql({"totalCount": {"enabled": true}, "aggregate": {"enabled": true}})';
comment on table public.projects is e'@graphql({"totalCount": {"enabled": true}, "aggregate": {"enabled": true}})';
comment on table public.tasks is e'@graphql({"totalCount": {"enabled": true}, "aggregate": {"enabled": true}})';
comment on table public.invoices is e'@graphql({"totalCount": {"enabled": true}, "aggregate": {"enabled": true}})';
comment on table public.crm_deals is e'@graphql({"totalCount": {"enabled": true}, "aggregate": {"enabled": true}})';
