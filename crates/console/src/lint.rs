//! The schema linter of the Database page: the rules of Supabase's splinter that apply to an
//! agencyflow database, each computed by one catalog query over the exposed schemas
//! (`PGRST_DB_SCHEMAS`), with what it means and how to fix it.
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::error::Result;
use crate::session::Admin;
use crate::ConsoleState;

/// One rule: its splinter name and number, level, category, what it means, how to fix it,
/// and the query finding its objects (`$1`: the exposed schemas; columns `object` and
/// `detail`, text).
pub struct Rule {
    pub name: &'static str,
    pub code: &'static str,
    pub title: &'static str,
    pub level: &'static str,
    pub category: &'static str,
    pub means: &'static str,
    pub fix: &'static str,
    pub sql: &'static str,
}

pub const RULES: &[Rule] = &[
    Rule {
        name: "rls_disabled_in_public",
        code: "0013",
        title: "RLS disabled in an exposed schema",
        level: "ERROR",
        category: "SECURITY",
        means: "The table is reachable through /rest/v1 and /graphql/v1 but row-level security is off: every role granted on it (anon, authenticated) reads and writes all of its rows.",
        fix: "alter table <table> enable row level security; then add policies for the rows each role may see (or revoke the API roles' grants if the table is not for the API).",
        sql: "select format('%I.%I', n.nspname, c.relname) as object, null::text as detail
                from pg_class c join pg_namespace n on n.oid = c.relnamespace
               where c.relkind in ('r', 'p') and n.nspname = any($1) and not c.relrowsecurity
                 and not exists (select 1 from pg_depend d where d.objid = c.oid and d.deptype = 'e')",
    },
    Rule {
        name: "policy_exists_rls_disabled",
        code: "0007",
        title: "Policies exist but RLS is disabled",
        level: "ERROR",
        category: "SECURITY",
        means: "The table has row-level security policies, but RLS is off on it, so the policies are not applied: everyone granted on the table sees every row.",
        fix: "alter table <table> enable row level security;",
        sql: "select format('%I.%I', n.nspname, c.relname) as object,
                     string_agg(quote_ident(p.polname), ', ' order by p.polname) as detail
                from pg_class c join pg_namespace n on n.oid = c.relnamespace join pg_policy p on p.polrelid = c.oid
               where n.nspname = any($1) and not c.relrowsecurity
               group by n.nspname, c.relname",
    },
    Rule {
        name: "rls_enabled_no_policy",
        code: "0008",
        title: "RLS enabled, no policy",
        level: "INFO",
        category: "SECURITY",
        means: "Row-level security is on but no policy exists: the API roles see no rows at all (only service_role, which bypasses RLS, does). Often intended for server-only tables; a mistake otherwise.",
        fix: "create policy ... on <table> for select to authenticated using (...); or leave it if only service_role should read it.",
        sql: "select format('%I.%I', n.nspname, c.relname) as object, null::text as detail
                from pg_class c join pg_namespace n on n.oid = c.relnamespace
               where c.relkind in ('r', 'p') and n.nspname = any($1) and c.relrowsecurity
                 and not exists (select 1 from pg_policy p where p.polrelid = c.oid)",
    },
    Rule {
        name: "security_definer_view",
        code: "0010",
        title: "Security definer view",
        level: "ERROR",
        category: "SECURITY",
        means: "The view runs with its owner's rights (PostgreSQL's default for views), so the row-level security of the tables under it is applied as the owner, not as the user querying it: it can show rows the user may not see.",
        fix: "alter view <view> set (security_invoker = on); (PostgreSQL 15+), or move the view out of the exposed schemas.",
        sql: "select format('%I.%I', n.nspname, c.relname) as object, null::text as detail
                from pg_class c join pg_namespace n on n.oid = c.relnamespace
               where c.relkind = 'v' and n.nspname = any($1)
                 and not (lower(coalesce(c.reloptions::text, '{}'))::text[]
                          && array['security_invoker=1', 'security_invoker=true', 'security_invoker=yes', 'security_invoker=on'])
                 and not exists (select 1 from pg_depend d where d.objid = c.oid and d.deptype = 'e')",
    },
    Rule {
        name: "function_search_path_mutable",
        code: "0011",
        title: "Function search_path mutable",
        level: "WARN",
        category: "SECURITY",
        means: "The function does not fix its search_path, so the names in its body resolve against the caller's search_path: a caller who can create objects in a schema on that path can substitute a table or function (dangerous for SECURITY DEFINER functions).",
        fix: "alter function <function>(<args>) set search_path = ''; and schema-qualify the names in its body (or set it to the schemas it needs, e.g. public, pg_temp).",
        sql: "select format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)) as object,
                     case when p.prosecdef then 'security definer' end as detail
                from pg_proc p join pg_namespace n on n.oid = p.pronamespace
               where n.nspname = any($1) and p.prokind in ('f', 'p')
                 and not exists (select 1 from unnest(coalesce(p.proconfig, '{}')) s where s like 'search\\_path=%')
                 and not exists (select 1 from pg_depend d where d.objid = p.oid and d.deptype = 'e')",
    },
    Rule {
        name: "auth_users_exposed",
        code: "0002",
        title: "auth.users exposed",
        level: "ERROR",
        category: "SECURITY",
        means: "A view in an exposed schema reads auth.users and the API roles may select from it: users' e-mail addresses, phone numbers and metadata can be read through the API.",
        fix: "Drop the view or move it out of the exposed schemas; or revoke select from anon, authenticated; or make it security_invoker so auth.users' own grants apply.",
        sql: "select distinct format('%I.%I', n.nspname, c.relname) as object, null::text as detail
                from pg_depend d
                join pg_rewrite r on r.oid = d.objid
                join pg_class c on c.oid = r.ev_class
                join pg_namespace n on n.oid = c.relnamespace
               where d.classid = 'pg_rewrite'::regclass and d.refobjid = 'auth.users'::regclass
                 and c.relkind in ('v', 'm') and n.nspname = any($1)
                 and (has_table_privilege('anon', c.oid, 'SELECT') or has_table_privilege('authenticated', c.oid, 'SELECT'))
                 and not (lower(coalesce(c.reloptions::text, '{}'))::text[]
                          && array['security_invoker=1', 'security_invoker=true', 'security_invoker=yes', 'security_invoker=on'])",
    },
    Rule {
        name: "multiple_permissive_policies",
        code: "0006",
        title: "Multiple permissive policies",
        level: "WARN",
        category: "PERFORMANCE",
        means: "More than one permissive policy applies to the same role and action on the table: PostgreSQL evaluates each of them for every row (their conditions are OR-ed), which is slower than one policy.",
        fix: "Combine the policies into one whose condition is the OR of theirs (or make the extra ones restrictive if they were meant to narrow).",
        sql: "with p as (
                select n.nspname, c.relname, pol.polname,
                       unnest(case when pol.polroles = '{0}' then array['anon', 'authenticated']
                                   else array(select rolname::text from pg_roles where oid = any(pol.polroles)) end) as role,
                       unnest(case pol.polcmd when '*' then array['SELECT', 'INSERT', 'UPDATE', 'DELETE']
                                              when 'r' then array['SELECT'] when 'a' then array['INSERT']
                                              when 'w' then array['UPDATE'] else array['DELETE'] end) as action
                  from pg_policy pol join pg_class c on c.oid = pol.polrelid join pg_namespace n on n.oid = c.relnamespace
                 where n.nspname = any($1) and pol.polpermissive)
              select format('%I.%I', nspname, relname) as object,
                     format('%s %s: %s', role, action, string_agg(quote_ident(polname), ', ' order by polname)) as detail
                from p where role in ('anon', 'authenticated', 'authenticator')
               group by nspname, relname, role, action having count(*) > 1",
    },
    Rule {
        name: "auth_rls_initplan",
        code: "0003",
        title: "Auth RLS initialization plan",
        level: "WARN",
        category: "PERFORMANCE",
        means: "A policy calls auth.uid(), auth.jwt() or auth.role() directly, so PostgreSQL calls it again for every row; wrapped in a sub-select it is evaluated once per statement.",
        fix: "Write (select auth.uid()) instead of auth.uid() in the policy's USING / WITH CHECK.",
        sql: "select format('%I.%I', schemaname, tablename) as object, quote_ident(policyname) as detail
                from pg_policies
               where schemaname = any($1)
                 and (coalesce(qual, '') || ' ' || coalesce(with_check, '')) ~ 'auth\\.(uid|jwt|role|email)\\(\\)'
                 and (coalesce(qual, '') || ' ' || coalesce(with_check, '')) !~* 'select\\s+auth\\.(uid|jwt|role|email)\\(\\)'",
    },
    Rule {
        name: "unindexed_foreign_keys",
        code: "0001",
        title: "Unindexed foreign keys",
        level: "INFO",
        category: "PERFORMANCE",
        means: "No index starts with the foreign key's columns: joins on it, and every delete or key update of the referenced row, scan the whole table.",
        fix: "create index on <table> (<foreign key columns>);",
        sql: "select format('%I.%I', n.nspname, c.relname) as object,
                     format('%s (%s)', quote_ident(con.conname),
                            (select string_agg(quote_ident(a.attname), ', ' order by k.i)
                               from unnest(con.conkey) with ordinality k(att, i)
                               join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.att)) as detail
                from pg_constraint con join pg_class c on c.oid = con.conrelid join pg_namespace n on n.oid = c.relnamespace
               where con.contype = 'f' and n.nspname = any($1)
                 and not exists (
                   select 1 from pg_index i
                    where i.indrelid = con.conrelid
                      and (string_to_array(i.indkey::text, ' ')::smallint[])[1:cardinality(con.conkey)] @> con.conkey
                      and (string_to_array(i.indkey::text, ' ')::smallint[])[1:cardinality(con.conkey)] <@ con.conkey)",
    },
    Rule {
        name: "no_primary_key",
        code: "0004",
        title: "No primary key",
        level: "INFO",
        category: "PERFORMANCE",
        means: "The table has no primary key: rows cannot be named one by one (the console cannot edit them, upserts and logical replication need one), and it cannot be paged by key.",
        fix: "alter table <table> add primary key (<column>); (add an id column first if none is unique).",
        sql: "select format('%I.%I', n.nspname, c.relname) as object, null::text as detail
                from pg_class c join pg_namespace n on n.oid = c.relnamespace
               where c.relkind in ('r', 'p') and not c.relispartition and n.nspname = any($1)
                 and not exists (select 1 from pg_constraint con where con.conrelid = c.oid and con.contype = 'p')
                 and not exists (select 1 from pg_depend d where d.objid = c.oid and d.deptype = 'e')",
    },
    Rule {
        name: "extension_in_public",
        code: "0014",
        title: "Extension in public",
        level: "WARN",
        category: "SECURITY",
        means: "The extension's objects are in an exposed schema (public): its functions and tables become API endpoints.",
        fix: "Install it in the extensions schema: drop extension <name>; create extension <name> schema extensions; (or alter extension <name> set schema extensions where it allows).",
        sql: "select quote_ident(e.extname) as object, null::text as detail
                from pg_extension e join pg_namespace n on n.oid = e.extnamespace
               where n.nspname = any($1)",
    },
];

/// `GET /console/api/lint`: the rules and their findings.
pub async fn lint(State(state): State<ConsoleState>, _admin: Admin) -> Result<Json<Value>> {
    let st = &state.0;
    let schemas = (st.schemas)();
    let c = st.admin_db.client().await?;
    let mut findings = Vec::new();
    let mut rules = Vec::new();
    for r in RULES {
        let (count, error) = match c.query(r.sql, &[&schemas]).await {
            Ok(rows) => {
                for row in &rows {
                    findings.push(json!({
                        "rule": r.name,
                        "code": r.code,
                        "title": r.title,
                        "level": r.level,
                        "category": r.category,
                        "object": row.get::<_, String>(0),
                        "detail": row.get::<_, Option<String>>(1),
                    }));
                }
                (rows.len(), None)
            }
            Err(e) => (0, Some(crate::ConsoleError::from(e).message)),
        };
        rules.push(json!({
            "rule": r.name, "code": r.code, "title": r.title, "level": r.level,
            "category": r.category, "means": r.means, "fix": r.fix,
            "findings": count, "error": error,
            "docs": format!("https://supabase.com/docs/guides/database/database-linter?lint={}_{}", r.code, r.name),
        }));
    }
    Ok(Json(
        json!({ "schemas": schemas, "rules": rules, "findings": findings }),
    ))
}
