//! Schema catalog: the 33 tables and their columns, checks and keys as docs/schema.md
//! specifies, RLS on and forced everywhere, and the static checks of Supabase's database
//! linter (splinter) that the schema must pass.
use agencyflow_testkit::TestDb;

const TABLES: [&str; 33] = [
    "organizations",
    "profiles",
    "team_members",
    "clients",
    "projects",
    "wizard_sessions",
    "wizard_answers",
    "context_snapshots",
    "roadmaps",
    "roadmap_phases",
    "tasks",
    "milestones",
    "deliverables",
    "briefs",
    "brief_versions",
    "documents",
    "systems",
    "services",
    "system_services",
    "project_systems",
    "project_services",
    "ai_run_logs",
    "ai_cache",
    "analytics",
    "invitations",
    "invoices",
    "payments",
    "crm_pipelines",
    "crm_stages",
    "crm_contacts",
    "crm_deals",
    "crm_interactions",
    "activities",
];

/// Tables without an org_id: the tenant root, user profiles and the global catalogue.
const NO_ORG: [&str; 4] = ["organizations", "profiles", "systems", "system_services"];
/// Tables whose org_id is nullable (NULL = global row).
const NULLABLE_ORG: [&str; 2] = ["services", "ai_cache"];

async fn db() -> (
    TestDb,
    agencyflow_testkit::agencyflow_db::tokio_postgres::Client,
) {
    let t = TestDb::new().await;
    let c = t.superuser().await;
    (t, c)
}

#[tokio::test]
async fn all_33_tables_exist_with_rls_enabled_and_forced() {
    let (_t, c) = db().await;
    let rows = c
        .query(
            "select c.relname::text, c.relrowsecurity, c.relforcerowsecurity
             from pg_class c join pg_namespace n on n.oid = c.relnamespace
             where n.nspname = 'public' and c.relkind in ('r', 'p') order by 1",
            &[],
        )
        .await
        .unwrap();
    let mut names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    names.sort();
    let mut expected: Vec<String> = TABLES.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(names, expected, "public holds exactly the 33 tables");
    for r in &rows {
        let (name, enabled, forced): (String, bool, bool) = (r.get(0), r.get(1), r.get(2));
        assert!(enabled, "{name}: RLS not enabled");
        assert!(forced, "{name}: RLS not forced");
    }
    // Every table has a primary key (splinter 0004).
    let no_pk: Vec<String> = c
        .query(
            "select c.relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
             where n.nspname = 'public' and c.relkind = 'r'
               and not exists (select 1 from pg_constraint k where k.conrelid = c.oid and k.contype = 'p')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(no_pk.is_empty(), "tables without a primary key: {no_pk:?}");
}

#[tokio::test]
async fn tenant_key_on_every_tenant_table_with_unique_org_id_id() {
    let (_t, c) = db().await;
    for t in TABLES {
        let row = c
            .query_opt(
                "select a.attnotnull, format_type(a.atttypid, a.atttypmod)
                 from pg_attribute a where a.attrelid = ('public.' || $1)::regclass and a.attname = 'org_id' and not a.attisdropped",
                &[&t],
            )
            .await
            .unwrap();
        if NO_ORG.contains(&t) {
            assert!(row.is_none(), "{t} must not have org_id");
            continue;
        }
        let row = row.unwrap_or_else(|| panic!("{t} has no org_id"));
        let (not_null, ty): (bool, String) = (row.get(0), row.get(1));
        assert_eq!(ty, "uuid", "{t}.org_id type");
        assert_eq!(
            not_null,
            !NULLABLE_ORG.contains(&t),
            "{t}.org_id nullability"
        );
        // org_id references organizations(id) on delete cascade
        let n: i64 = c
            .query_one(
                "select count(*) from pg_constraint k
                 where k.conrelid = ('public.' || $1)::regclass and k.contype = 'f'
                   and k.confrelid = 'public.organizations'::regclass and k.confdeltype = 'c'
                   and k.conkey = array[(select attnum from pg_attribute where attrelid = k.conrelid and attname = 'org_id')]",
                &[&t],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "{t}.org_id -> organizations on delete cascade");
    }
    // Every tenant parent (referenced through a composite key) has unique (org_id, id).
    for parent in [
        "clients",
        "projects",
        "wizard_sessions",
        "context_snapshots",
        "roadmaps",
        "roadmap_phases",
        "briefs",
        "invoices",
        "crm_pipelines",
        "crm_stages",
        "crm_contacts",
        "crm_deals",
    ] {
        let n: i64 = c
            .query_one(
                "select count(*) from pg_constraint k where k.conrelid = ('public.' || $1)::regclass and k.contype = 'u'
                   and pg_get_constraintdef(k.oid) = 'UNIQUE (org_id, id)'",
                &[&parent],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "{parent} lacks unique (org_id, id)");
    }
}

/// (table, column, type as format_type shows it, not null)
const COLUMNS: &[(&str, &str, &str, bool)] = &[
    ("organizations", "id", "uuid", true),
    ("organizations", "name", "text", true),
    ("organizations", "slug", "text", true),
    ("organizations", "settings", "jsonb", true),
    (
        "organizations",
        "created_at",
        "timestamp with time zone",
        true,
    ),
    (
        "organizations",
        "updated_at",
        "timestamp with time zone",
        true,
    ),
    ("profiles", "id", "uuid", true),
    ("profiles", "full_name", "text", false),
    ("profiles", "avatar_url", "text", false),
    ("profiles", "email", "text", false),
    ("team_members", "user_id", "uuid", true),
    ("team_members", "role", "text", true),
    ("clients", "name", "text", true),
    ("clients", "status", "text", true),
    ("clients", "health_score", "integer", true),
    ("clients", "value_cents", "bigint", false),
    (
        "clients",
        "last_activity_at",
        "timestamp with time zone",
        false,
    ),
    ("clients", "next_action_date", "date", false),
    ("clients", "onboarded_at", "timestamp with time zone", false),
    ("clients", "assigned_to", "uuid", false),
    ("projects", "client_id", "uuid", false),
    ("projects", "name", "text", true),
    ("projects", "progress", "integer", true),
    ("projects", "start_date", "date", false),
    ("projects", "end_date", "date", false),
    ("projects", "value_cents", "bigint", false),
    (
        "projects",
        "dashboard_activated_at",
        "timestamp with time zone",
        false,
    ),
    ("wizard_sessions", "project_id", "uuid", false),
    ("wizard_sessions", "user_id", "uuid", false),
    ("wizard_sessions", "current_step", "integer", true),
    (
        "wizard_sessions",
        "wizard_completed_at",
        "timestamp with time zone",
        false,
    ),
    ("wizard_answers", "session_id", "uuid", true),
    ("wizard_answers", "screen_id", "text", true),
    ("wizard_answers", "step_number", "integer", true),
    ("wizard_answers", "data", "jsonb", true),
    ("wizard_answers", "ai_results", "jsonb", false),
    ("context_snapshots", "project_id", "uuid", true),
    ("context_snapshots", "version", "integer", true),
    ("context_snapshots", "is_active", "boolean", true),
    ("context_snapshots", "metrics", "jsonb", true),
    ("roadmaps", "snapshot_id", "uuid", true),
    ("roadmap_phases", "roadmap_id", "uuid", true),
    ("roadmap_phases", "order_index", "integer", true),
    ("roadmap_phases", "outcomes", "jsonb", true),
    ("tasks", "phase_id", "uuid", true),
    ("tasks", "tags", "text[]", true),
    ("tasks", "due_date", "date", false),
    ("tasks", "ai_generated", "boolean", true),
    ("milestones", "project_id", "uuid", true),
    ("milestones", "phase_id", "uuid", false),
    ("deliverables", "phase_id", "uuid", true),
    ("briefs", "project_id", "uuid", true),
    ("briefs", "content", "jsonb", true),
    ("briefs", "version", "integer", true),
    ("brief_versions", "brief_id", "uuid", true),
    ("brief_versions", "version", "integer", true),
    ("brief_versions", "diff", "jsonb", true),
    ("brief_versions", "changed_by", "uuid", false),
    ("documents", "name", "text", true),
    ("documents", "file_size", "bigint", false),
    ("documents", "content_text", "text", false),
    ("documents", "embedding", "vector(768)", false),
    (
        "documents",
        "embedded_at",
        "timestamp with time zone",
        false,
    ),
    ("documents", "fts", "tsvector", false),
    ("systems", "id", "text", true),
    ("systems", "is_active", "boolean", true),
    ("services", "slug", "text", true),
    ("services", "benefits", "jsonb", true),
    ("services", "features", "jsonb", true),
    ("system_services", "system_id", "text", true),
    ("system_services", "service_id", "uuid", true),
    ("project_systems", "system_id", "text", true),
    ("project_systems", "recommendation_metadata", "jsonb", true),
    ("project_services", "service_id", "uuid", true),
    ("ai_run_logs", "agent_name", "text", true),
    ("ai_run_logs", "input_tokens", "integer", true),
    ("ai_run_logs", "output_tokens", "integer", true),
    ("ai_run_logs", "success", "boolean", true),
    ("ai_run_logs", "cache_hit", "boolean", true),
    ("ai_cache", "key", "text", true),
    ("ai_cache", "response", "jsonb", true),
    ("ai_cache", "hit_count", "integer", true),
    ("ai_cache", "expires_at", "timestamp with time zone", false),
    ("analytics", "period_type", "text", true),
    ("analytics", "period_start", "date", true),
    ("analytics", "metrics", "jsonb", true),
    ("invoices", "invoice_number", "text", true),
    ("invoices", "amount_cents", "bigint", true),
    ("invoices", "currency", "character(3)", true),
    ("invoices", "line_items", "jsonb", true),
    ("invoices", "paid_at", "timestamp with time zone", false),
    ("payments", "invoice_id", "uuid", true),
    ("payments", "amount_cents", "bigint", true),
    ("payments", "currency", "character(3)", true),
    ("crm_pipelines", "is_default", "boolean", true),
    ("crm_stages", "pipeline_id", "uuid", true),
    ("crm_stages", "probability", "integer", true),
    ("crm_contacts", "tags", "text[]", true),
    ("crm_deals", "client_id", "uuid", true),
    ("crm_deals", "amount_cents", "bigint", true),
    ("crm_deals", "currency", "character(3)", true),
    ("crm_deals", "win_probability", "integer", false),
    ("crm_interactions", "client_id", "uuid", true),
    ("crm_interactions", "type", "crm_interaction_type", true),
    ("crm_interactions", "sentiment", "crm_sentiment", true),
    ("crm_interactions", "embedding", "vector(1536)", false),
    ("crm_interactions", "fts", "tsvector", false),
    ("activities", "activity_type", "text", true),
    ("activities", "metadata", "jsonb", true),
];

#[tokio::test]
async fn columns_have_the_specified_types_and_nullability() {
    let (_t, c) = db().await;
    let mut wrong = Vec::new();
    for (table, col, ty, not_null) in COLUMNS {
        let row = c
            .query_opt(
                "select format_type(a.atttypid, a.atttypmod), a.attnotnull from pg_attribute a
                 where a.attrelid = ('public.' || $1)::regclass and a.attname = $2 and not a.attisdropped",
                &[table, col],
            )
            .await
            .unwrap();
        match row {
            None => wrong.push(format!("{table}.{col} missing")),
            Some(r) => {
                let (t, nn): (String, bool) = (r.get(0), r.get(1));
                let t = t
                    .trim_start_matches("extensions.")
                    .trim_start_matches("public.")
                    .to_string();
                if t != *ty || nn != *not_null {
                    wrong.push(format!(
                        "{table}.{col}: {t} not null={nn}, expected {ty} not null={not_null}"
                    ));
                }
            }
        }
    }
    // ids are uuid default gen_random_uuid() (systems: text slug; ai_cache: text key)
    let bad_ids: Vec<String> = c
        .query(
            "select c.relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
             join pg_attribute a on a.attrelid = c.oid and a.attname = 'id'
             left join pg_attrdef d on d.adrelid = c.oid and d.adnum = a.attnum
             where n.nspname = 'public' and c.relkind = 'r' and c.relname not in ('systems', 'profiles')
               and (a.atttypid <> 'uuid'::regtype or coalesce(pg_get_expr(d.adbin, d.adrelid), '') <> 'gen_random_uuid()')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        bad_ids.is_empty(),
        "id columns without uuid default gen_random_uuid(): {bad_ids:?}"
    );
    // Every timestamp is timestamptz.
    let naive: Vec<String> = c
        .query(
            "select table_name || '.' || column_name from information_schema.columns
             where table_schema = 'public' and data_type = 'timestamp without time zone'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(naive.is_empty(), "timestamp without time zone: {naive:?}");
    assert!(wrong.is_empty(), "column mismatches:\n{}", wrong.join("\n"));
}

/// (table, column, the exact lower-case value set of its CHECK)
const VALUE_SETS: &[(&str, &str, &[&str])] = &[
    (
        "team_members",
        "role",
        &["owner", "admin", "consultant", "member", "client"],
    ),
    (
        "clients",
        "company_size",
        &["small", "medium", "large", "enterprise"],
    ),
    (
        "clients",
        "status",
        &["lead", "prospect", "client", "churned", "archived"],
    ),
    (
        "clients",
        "pipeline_stage",
        &[
            "new",
            "contacted",
            "qualified",
            "proposal",
            "negotiation",
            "won",
            "lost",
        ],
    ),
    (
        "projects",
        "status",
        &[
            "draft",
            "discovery",
            "planning",
            "active",
            "on_hold",
            "completed",
            "cancelled",
            "archived",
        ],
    ),
    (
        "projects",
        "current_phase",
        &["phase_1", "phase_2", "phase_3"],
    ),
    (
        "wizard_answers",
        "screen_id",
        &["step-1", "step-2", "step-3", "step-4", "step-5"],
    ),
    ("tasks", "owner", &["client", "agency", "automated"]),
    (
        "tasks",
        "status",
        &["todo", "in_progress", "review", "done", "blocked"],
    ),
    ("tasks", "priority", &["low", "medium", "high", "urgent"]),
    ("tasks", "effort", &["s", "m", "l", "xl"]),
    (
        "milestones",
        "status",
        &["upcoming", "in_progress", "completed", "overdue", "delayed"],
    ),
    (
        "deliverables",
        "status",
        &[
            "pending",
            "in_progress",
            "in_review",
            "approved",
            "delivered",
            "rejected",
        ],
    ),
    (
        "briefs",
        "status",
        &["draft", "in_review", "approved", "archived"],
    ),
    (
        "documents",
        "category",
        &["briefs", "requirements", "assets", "reference", "other"],
    ),
    ("documents", "status", &["active", "archived"]),
    (
        "services",
        "category",
        &["core", "industry_specific", "custom"],
    ),
    (
        "project_services",
        "status",
        &["planned", "active", "paused", "completed"],
    ),
    ("analytics", "period_type", &["day", "week", "month"]),
    (
        "invoices",
        "status",
        &["draft", "sent", "paid", "overdue", "void", "cancelled"],
    ),
    (
        "payments",
        "status",
        &["pending", "completed", "failed", "refunded"],
    ),
    (
        "crm_deals",
        "status",
        &["open", "won", "lost", "stale", "archived"],
    ),
    ("crm_interactions", "direction", &["inbound", "outbound"]),
    (
        "activities",
        "activity_type",
        &[
            "note",
            "call",
            "email",
            "meeting",
            "status_change",
            "system",
        ],
    ),
];

#[tokio::test]
async fn status_checks_hold_exactly_the_specified_lower_case_sets() {
    let (_t, c) = db().await;
    for (table, col, values) in VALUE_SETS {
        let defs: Vec<String> = c
            .query(
                "select pg_get_constraintdef(k.oid) from pg_constraint k
                 where k.conrelid = ('public.' || $1)::regclass and k.contype = 'c'
                   and k.conkey = array[(select attnum from pg_attribute where attrelid = k.conrelid and attname = $2)]",
                &[table, col],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let def = defs
            .iter()
            .find(|d| d.contains("ANY"))
            .unwrap_or_else(|| panic!("{table}.{col}: no value-set CHECK among {defs:?}"));
        let mut found: Vec<String> = def
            .split('\'')
            .skip(1)
            .step_by(2)
            .map(|s| s.to_string())
            .collect();
        found.sort();
        let mut want: Vec<String> = values.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(found, want, "{table}.{col}: {def}");
    }
    // Enum types
    for (ty, labels) in [
        (
            "crm_interaction_type",
            vec!["email", "call", "meeting", "note", "linkedin", "system"],
        ),
        (
            "crm_sentiment",
            vec!["positive", "neutral", "negative", "churn_risk"],
        ),
    ] {
        let got: Vec<String> = c
            .query(
                "select e.enumlabel::text from pg_enum e join pg_type t on t.oid = e.enumtypid
                 join pg_namespace n on n.oid = t.typnamespace where n.nspname = 'public' and t.typname = $1 order by e.enumsortorder",
                &[&ty],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(got, labels, "enum {ty}");
    }
    // Range and money checks, by behaviour (each in its own savepoint-free statement).
    for (sql, what) in [
        ("select 1 from pg_constraint where conrelid = 'public.clients'::regclass and pg_get_constraintdef(oid) like '%health_score >= 0%health_score <= 100%'", "clients.health_score 0..100"),
        ("select 1 from pg_constraint where conrelid = 'public.projects'::regclass and pg_get_constraintdef(oid) like '%end_date >= start_date%'", "projects end_date >= start_date"),
        ("select 1 from pg_constraint where conrelid = 'public.payments'::regclass and pg_get_constraintdef(oid) like '%amount_cents > 0%'", "payments.amount_cents > 0"),
        ("select 1 from pg_constraint where conrelid = 'public.invoices'::regclass and pg_get_constraintdef(oid) like '%amount_cents >= 0%'", "invoices.amount_cents >= 0"),
        ("select 1 from pg_constraint where conrelid = 'public.crm_deals'::regclass and pg_get_constraintdef(oid) like '%amount_cents >= 0%'", "crm_deals.amount_cents >= 0"),
        ("select 1 from pg_constraint where conrelid = 'public.documents'::regclass and pg_get_constraintdef(oid) like '%wizard_session_id IS NOT NULL%project_id IS NOT NULL%'", "documents needs a session or a project"),
        ("select 1 from pg_constraint where conrelid = 'public.wizard_sessions'::regclass and pg_get_constraintdef(oid) like '%current_step >= 1%current_step <= 5%'", "wizard current_step 1..5"),
        ("select 1 from pg_indexes where tablename = 'context_snapshots' and indexdef like 'CREATE UNIQUE INDEX%(project_id) WHERE is_active'", "one active snapshot per project"),
        ("select 1 from pg_indexes where tablename = 'crm_pipelines' and indexdef like 'CREATE UNIQUE INDEX%(org_id) WHERE is_default'", "one default pipeline per org"),
    ] {
        assert!(c.query_opt(sql, &[]).await.unwrap().is_some(), "missing: {what}");
    }
}

/// Every foreign key other than org_id -> organizations: (table, columns, parent, parent columns, on delete)
const FOREIGN_KEYS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "invitations",
        "org_id,accepted_by",
        "team_members",
        "org_id,user_id",
        "set null accepted_by",
    ),
    (
        "invitations",
        "org_id,invited_by",
        "team_members",
        "org_id,user_id",
        "set null invited_by",
    ),
    (
        "activities",
        "org_id,client_id",
        "clients",
        "org_id,id",
        "set null client_id",
    ),
    (
        "activities",
        "org_id,created_by",
        "team_members",
        "org_id,user_id",
        "set null created_by",
    ),
    (
        "activities",
        "org_id,project_id",
        "projects",
        "org_id,id",
        "set null project_id",
    ),
    (
        "ai_run_logs",
        "org_id,project_id",
        "projects",
        "org_id,id",
        "set null project_id",
    ),
    (
        "brief_versions",
        "org_id,brief_id",
        "briefs",
        "org_id,id",
        "cascade",
    ),
    (
        "brief_versions",
        "org_id,changed_by",
        "team_members",
        "org_id,user_id",
        "set null changed_by",
    ),
    (
        "briefs",
        "org_id,project_id",
        "projects",
        "org_id,id",
        "cascade",
    ),
    (
        "clients",
        "org_id,assigned_to",
        "team_members",
        "org_id,user_id",
        "set null assigned_to",
    ),
    (
        "context_snapshots",
        "org_id,project_id",
        "projects",
        "org_id,id",
        "cascade",
    ),
    (
        "crm_contacts",
        "org_id,client_id",
        "clients",
        "org_id,id",
        "set null client_id",
    ),
    (
        "crm_deals",
        "org_id,client_id",
        "clients",
        "org_id,id",
        "cascade",
    ),
    (
        "crm_deals",
        "org_id,owner_id",
        "team_members",
        "org_id,user_id",
        "set null owner_id",
    ),
    (
        "crm_deals",
        "org_id,stage_id",
        "crm_stages",
        "org_id,id",
        "set null stage_id",
    ),
    (
        "crm_interactions",
        "org_id,client_id",
        "clients",
        "org_id,id",
        "cascade",
    ),
    (
        "crm_interactions",
        "org_id,contact_id",
        "crm_contacts",
        "org_id,id",
        "set null contact_id",
    ),
    (
        "crm_interactions",
        "org_id,created_by",
        "team_members",
        "org_id,user_id",
        "set null created_by",
    ),
    (
        "crm_interactions",
        "org_id,deal_id",
        "crm_deals",
        "org_id,id",
        "set null deal_id",
    ),
    (
        "crm_stages",
        "org_id,pipeline_id",
        "crm_pipelines",
        "org_id,id",
        "cascade",
    ),
    (
        "deliverables",
        "org_id,assigned_to",
        "team_members",
        "org_id,user_id",
        "set null assigned_to",
    ),
    (
        "deliverables",
        "org_id,phase_id",
        "roadmap_phases",
        "org_id,id",
        "cascade",
    ),
    (
        "documents",
        "org_id,project_id",
        "projects",
        "org_id,id",
        "cascade",
    ),
    (
        "documents",
        "org_id,uploaded_by",
        "team_members",
        "org_id,user_id",
        "set null uploaded_by",
    ),
    (
        "documents",
        "org_id,wizard_session_id",
        "wizard_sessions",
        "org_id,id",
        "cascade",
    ),
    (
        "invoices",
        "org_id,client_id",
        "clients",
        "org_id,id",
        "set null client_id",
    ),
    (
        "invoices",
        "org_id,project_id",
        "projects",
        "org_id,id",
        "set null project_id",
    ),
    (
        "milestones",
        "org_id,phase_id",
        "roadmap_phases",
        "org_id,id",
        "set null phase_id",
    ),
    (
        "milestones",
        "org_id,project_id",
        "projects",
        "org_id,id",
        "cascade",
    ),
    (
        "organizations",
        "created_by",
        "auth.users",
        "id",
        "set null",
    ),
    (
        "payments",
        "org_id,invoice_id",
        "invoices",
        "org_id,id",
        "cascade",
    ),
    ("profiles", "id", "auth.users", "id", "cascade"),
    (
        "project_services",
        "org_id,project_id",
        "projects",
        "org_id,id",
        "cascade",
    ),
    (
        "project_services",
        "service_id",
        "services",
        "id",
        "cascade",
    ),
    (
        "project_systems",
        "org_id,project_id",
        "projects",
        "org_id,id",
        "cascade",
    ),
    ("project_systems", "system_id", "systems", "id", "cascade"),
    (
        "projects",
        "org_id,client_id",
        "clients",
        "org_id,id",
        "set null client_id",
    ),
    (
        "roadmap_phases",
        "org_id,roadmap_id",
        "roadmaps",
        "org_id,id",
        "cascade",
    ),
    (
        "roadmaps",
        "org_id,snapshot_id",
        "context_snapshots",
        "org_id,id",
        "cascade",
    ),
    ("system_services", "service_id", "services", "id", "cascade"),
    ("system_services", "system_id", "systems", "id", "cascade"),
    (
        "tasks",
        "org_id,assigned_to",
        "team_members",
        "org_id,user_id",
        "set null assigned_to",
    ),
    (
        "tasks",
        "org_id,phase_id",
        "roadmap_phases",
        "org_id,id",
        "cascade",
    ),
    ("team_members", "user_id", "auth.users", "id", "cascade"),
    (
        "wizard_answers",
        "org_id,session_id",
        "wizard_sessions",
        "org_id,id",
        "cascade",
    ),
    (
        "wizard_sessions",
        "org_id,project_id",
        "projects",
        "org_id,id",
        "set null project_id",
    ),
    ("wizard_sessions", "user_id", "auth.users", "id", "set null"),
];

#[tokio::test]
async fn foreign_keys_are_composite_within_the_tenant_as_specified() {
    let (_t, c) = db().await;
    let mut got: Vec<(String, String, String, String, String)> = c
        .query(
            "select replace(c.conrelid::regclass::text, 'public.', ''),
               (select string_agg(a.attname, ',' order by k.ord) from unnest(c.conkey) with ordinality k(attnum, ord)
                  join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.attnum),
               replace(c.confrelid::regclass::text, 'public.', ''),
               (select string_agg(a.attname, ',' order by k.ord) from unnest(c.confkey) with ordinality k(attnum, ord)
                  join pg_attribute a on a.attrelid = c.confrelid and a.attnum = k.attnum),
               case c.confdeltype when 'c' then 'cascade' when 'n' then 'set null' when 'a' then 'no action'
                    when 'r' then 'restrict' else 'other' end
                 || coalesce(' ' || (select string_agg(a.attname, ',') from unnest(c.confdelsetcols) x
                                     join pg_attribute a on a.attrelid = c.conrelid and a.attnum = x), '')
             from pg_constraint c join pg_namespace n on n.oid = c.connamespace
             where c.contype = 'f' and n.nspname = 'public'
               and not (c.confrelid = 'public.organizations'::regclass
                        and c.conkey = array[(select attnum from pg_attribute where attrelid = c.conrelid and attname = 'org_id')])
             order by 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let mut want: Vec<(String, String, String, String, String)> = FOREIGN_KEYS
        .iter()
        .map(|(a, b, c, d, e)| {
            (
                a.to_string(),
                b.to_string(),
                c.to_string(),
                d.to_string(),
                e.to_string(),
            )
        })
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn view_is_security_invoker_and_exposes_no_auth_users() {
    let (_t, c) = db().await;
    let opts: Option<Vec<String>> = c
        .query_one(
            "select reloptions from pg_class where oid = 'public.client_crm_status'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let opts = opts.unwrap_or_default();
    assert!(
        opts.iter().any(|o| o == "security_invoker=true"),
        "client_crm_status options: {opts:?}"
    );
    // splinter 0010 / 0002: no SECURITY DEFINER view, no view over auth.users, in an exposed schema.
    let bad: Vec<String> = c
        .query(
            "select c.relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
             where n.nspname = 'public' and c.relkind in ('v', 'm')
               and (not coalesce(c.reloptions, '{}') @> array['security_invoker=true']
                    or exists (select 1 from pg_depend d join pg_rewrite r on r.oid = d.objid
                               where r.ev_class = c.oid and d.refobjid = 'auth.users'::regclass))",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
}

#[tokio::test]
async fn no_function_has_a_mutable_search_path_and_no_extension_is_in_public() {
    let (_t, c) = db().await;
    let mutable: Vec<String> = c
        .query(
            "select p.oid::regprocedure::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
             where n.nspname in ('public', 'private', 'vault')
               and not exists (select 1 from pg_depend d where d.objid = p.oid and d.deptype = 'e')
               and not exists (select 1 from unnest(coalesce(p.proconfig, '{}')) cfg where cfg like 'search_path=%')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        mutable.is_empty(),
        "functions with a mutable search_path: {mutable:?}"
    );
    let in_public: Vec<String> = c
        .query(
            "select extname::text from pg_extension where extnamespace = 'public'::regnamespace",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(in_public.is_empty(), "extensions in public: {in_public:?}");
    // The exposed schemas, as splinter reads them.
    let cfg: Vec<String> = c
        .query_one(
            "select coalesce(rolconfig, '{}') from pg_roles where rolname = 'authenticator'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        cfg.iter().any(|s| s == "pgrst.db_schemas=public"),
        "{cfg:?}"
    );
}

#[tokio::test]
async fn every_foreign_key_is_covered_and_no_index_is_duplicated() {
    let (_t, c) = db().await;
    let uncovered: Vec<String> = c
        .query(
            "select c.conrelid::regclass::text || ' ' || c.conname from pg_constraint c
             join pg_namespace n on n.oid = c.connamespace
             where c.contype = 'f' and n.nspname in ('public', 'private')
               and not exists (
                 select 1 from pg_index i
                 where i.indrelid = c.conrelid and i.indpred is null
                   and (i.indkey::int2[])[0:array_length(c.conkey, 1) - 1] @> c.conkey
                   and (i.indkey::int2[])[0:array_length(c.conkey, 1) - 1] <@ c.conkey)",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        uncovered.is_empty(),
        "foreign keys without a covering index: {uncovered:?}"
    );
    let dups: Vec<String> = c
        .query(
            "select a.indexrelid::regclass::text || ' = ' || b.indexrelid::regclass::text
             from pg_index a join pg_index b on a.indrelid = b.indrelid and a.indexrelid < b.indexrelid
             join pg_class t on t.oid = a.indrelid join pg_namespace n on n.oid = t.relnamespace
             where n.nspname in ('public', 'private', 'vault')
               and a.indkey::text = b.indkey::text and a.indclass::text = b.indclass::text
               and coalesce(pg_get_expr(a.indexprs, a.indrelid), '') = coalesce(pg_get_expr(b.indexprs, b.indrelid), '')
               and coalesce(pg_get_expr(a.indpred, a.indrelid), '') = coalesce(pg_get_expr(b.indpred, b.indrelid), '')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(dups.is_empty(), "duplicate indexes: {dups:?}");
    // Vector and full-text indexes.
    for (table, needle) in [
        ("documents", "USING hnsw (embedding %vector_cosine_ops)"),
        (
            "crm_interactions",
            "USING hnsw (embedding %vector_cosine_ops)",
        ),
        ("documents", "USING gin (fts)"),
        ("crm_interactions", "USING gin (fts)"),
    ] {
        let n: i64 = c
            .query_one("select count(*) from pg_indexes where schemaname = 'public' and tablename = $1 and indexdef like '%' || $2", &[&table, &needle])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "{table}: {needle}");
    }
}

#[tokio::test]
async fn policies_are_single_per_role_and_action_and_wrap_auth_calls() {
    let (_t, c) = db().await;
    // splinter 0006: at most one permissive policy per (table, role, action).
    let overlaps: Vec<String> = c
        .query(
            "with p as (
               select tablename, r as role, a as action, policyname
               from pg_policies,
                    unnest(roles) r,
                    unnest(case cmd when 'ALL' then array['SELECT', 'INSERT', 'UPDATE', 'DELETE'] else array[cmd] end) a
               where schemaname = 'public' and permissive = 'PERMISSIVE')
             select tablename || ' ' || role || ' ' || action || ': ' || string_agg(policyname, ', ')
             from p group by tablename, role, action having count(*) > 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        overlaps.is_empty(),
        "overlapping permissive policies: {overlaps:?}"
    );
    let rows = c
        .query(
            "select tablename::text, policyname::text, roles::text[], cmd::text, coalesce(qual, ''), coalesce(with_check, '')
             from pg_policies where schemaname = 'public'",
            &[],
        )
        .await
        .unwrap();
    assert!(
        rows.len() > 60,
        "expected the full policy matrix, found {} policies",
        rows.len()
    );
    for r in &rows {
        let (table, name, roles, cmd, qual, check): (
            String,
            String,
            Vec<String>,
            String,
            String,
            String,
        ) = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
        assert!(
            !name.starts_with("temp_anon"),
            "{table}.{name}: temp_anon policies are not reproduced"
        );
        assert!(
            !roles.iter().any(|r| r == "public"),
            "{table}.{name} applies to PUBLIC"
        );
        if roles.iter().any(|r| r == "anon") {
            assert!(
                ["systems", "services", "system_services"].contains(&table.as_str())
                    && cmd == "SELECT",
                "{table}.{name}: anon only reads the catalogue"
            );
        }
        for expr in [&qual, &check] {
            // splinter 0003: every auth.<fn>() call sits inside a sub-select.
            let calls = expr.matches("auth.uid()").count()
                + expr.matches("auth.jwt()").count()
                + expr.matches("auth.role()").count();
            let wrapped = expr.matches("SELECT auth.uid()").count()
                + expr.matches("SELECT auth.jwt()").count()
                + expr.matches("SELECT auth.role()").count();
            assert_eq!(
                calls, wrapped,
                "{table}.{name}: unwrapped auth call in {expr}"
            );
            // splinter 0015: no policy reads user metadata.
            assert!(
                !expr.contains("user_metadata"),
                "{table}.{name} reads user_metadata"
            );
        }
        // splinter 0024: no always-true write policies.
        if cmd != "SELECT" {
            for expr in [&qual, &check] {
                assert_ne!(
                    expr.trim(),
                    "true",
                    "{table}.{name}: USING/WITH CHECK (true) on {cmd}"
                );
            }
        }
        if cmd == "UPDATE" {
            assert!(
                !check.is_empty(),
                "{table}.{name}: update policy without WITH CHECK"
            );
        }
    }
}

#[tokio::test]
async fn no_security_definer_function_is_callable_through_the_api() {
    let (_t, c) = db().await;
    // splinter 0028/0029: SECURITY DEFINER functions in an exposed schema executable by anon/authenticated.
    let exposed: Vec<String> = c
        .query(
            "select p.oid::regprocedure::text || ' by ' || r.rolname
             from pg_proc p join pg_namespace n on n.oid = p.pronamespace
             cross join (values ('anon'), ('authenticated')) as r(rolname)
             where n.nspname = 'public' and p.prosecdef
               and has_function_privilege(r.rolname, p.oid, 'execute')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        exposed.is_empty(),
        "SECURITY DEFINER functions callable through /rpc: {exposed:?}"
    );
    // The policy helpers are DEFINER, in private, executable by authenticated but not anon.
    for f in [
        "private.get_user_org_ids()",
        "private.user_has_role_in_org(uuid, text[])",
        "private.user_is_org_owner(uuid)",
    ] {
        let r = c
            .query_one(
                &format!(
                    "select p.prosecdef, has_function_privilege('authenticated', p.oid, 'execute'),
                            has_function_privilege('anon', p.oid, 'execute'), p.provolatile::text
                     from pg_proc p where p.oid = '{f}'::regprocedure"
                ),
                &[],
            )
            .await
            .unwrap();
        let (definer, auth, anon, vol): (bool, bool, bool, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        assert!(
            definer && auth && !anon && vol == "s",
            "{f}: definer={definer} authenticated={auth} anon={anon} volatility={vol}"
        );
    }
    let handle_new_user: bool = c
        .query_one("select has_function_privilege('authenticated', 'private.handle_new_user()'::regprocedure, 'execute')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!handle_new_user);
    // Vault: only service_role reads the decrypted view.
    for role in ["anon", "authenticated"] {
        let can: bool = c
            .query_one(&format!("select has_table_privilege('{role}', 'vault.decrypted_secrets', 'select') or has_table_privilege('{role}', 'vault.secrets', 'select')"), &[])
            .await
            .unwrap()
            .get(0);
        assert!(!can, "{role} can read the vault");
    }
    let svc: bool = c
        .query_one(
            "select has_table_privilege('service_role', 'vault.decrypted_secrets', 'select')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(svc);
}

#[tokio::test]
async fn every_updated_at_table_has_its_trigger() {
    let (_t, c) = db().await;
    let missing: Vec<String> = c
        .query(
            "select c.table_name::text from information_schema.columns c
             join information_schema.tables t on t.table_schema = c.table_schema and t.table_name = c.table_name and t.table_type = 'BASE TABLE'
             where c.table_schema = 'public' and c.column_name = 'updated_at'
               and not exists (select 1 from pg_trigger g where g.tgrelid = ('public.' || c.table_name)::regclass
                               and g.tgname = 'update_' || c.table_name || '_updated_at'
                               and g.tgfoid = 'public.update_updated_at()'::regprocedure)",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(missing.is_empty(), "{missing:?}");
    let organizations: i64 = c
        .query_one("select count(*) from pg_trigger where tgname in ('update_organizations_updated_at', 'update_profiles_updated_at')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(organizations, 2);
}

#[tokio::test]
async fn linter_no_api_role_may_truncate_reference_or_trigger_any_table() {
    // TRUNCATE ignores row-level security; REFERENCES and TRIGGER are never needed by the API.
    // Checked over every user schema (public, storage, auth, vault, private...), for the API
    // roles and the API login.
    let (_t, c) = db().await;
    let rows = c
        .query(
            "select n.nspname || '.' || cl.relname || ' ' || r.rolname || ' ' || p.priv
             from pg_class cl
             join pg_namespace n on n.oid = cl.relnamespace
             cross join (values ('anon'), ('authenticated'), ('service_role'), ('authenticator')) r(rolname)
             cross join (values ('TRUNCATE'), ('REFERENCES'), ('TRIGGER')) p(priv)
             where cl.relkind in ('r', 'p', 'v', 'm', 'f')
               and n.nspname not in ('pg_catalog', 'information_schema')
               and n.nspname not like 'pg\\_%'
               and has_table_privilege(r.rolname, cl.oid, p.priv)
             order by 1",
            &[],
        )
        .await
        .unwrap();
    let found: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert!(
        found.is_empty(),
        "API roles hold dangerous grants:\n{}",
        found.join("\n")
    );
}
