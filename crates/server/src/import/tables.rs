//! Every table the import reads, in load order (parents first), with its references and its
//! mapper. Value sets and rule texts live in `rules.rs`.
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::engine::{person, tenant, Ctx, Mapping, Missing, Outcome, Parent, Ref, TableSpec};

type R = Result<Outcome, String>;

const ORG: Ref = Ref {
    col: "org_id",
    parent: Parent::Global("public.organizations"),
    missing: Missing::Refuse,
    org_from_parent: false,
    copy: None,
};

const fn derive(col: &'static str, table: &'static str, missing: Missing) -> Ref {
    Ref {
        col,
        parent: Parent::Tenant {
            table,
            global_ok: false,
        },
        missing,
        org_from_parent: true,
        copy: None,
    }
}

const fn spec(name: &'static str, refs: &'static [Ref], map: super::engine::MapFn) -> TableSpec {
    TableSpec {
        name,
        source: ("public", name),
        target: ("public", name),
        key: "id",
        conflict: "(id) do nothing",
        order: "id",
        refs,
        map,
    }
}

pub const TABLES: &[TableSpec] = &[
    TableSpec {
        name: "auth.users",
        source: ("auth", "users"),
        target: ("auth", "users"),
        key: "id",
        conflict: "(id) do nothing",
        order: "id",
        refs: &[],
        map: users,
    },
    TableSpec {
        name: "auth.identities",
        source: ("auth", "identities"),
        target: ("auth", "identities"),
        key: "id",
        conflict: "(id) do nothing",
        order: "user_id, provider",
        refs: &[Ref {
            col: "user_id",
            parent: Parent::User,
            missing: Missing::Refuse,
            org_from_parent: false,
            copy: None,
        }],
        map: identities,
    },
    spec("organizations", &[], organizations),
    spec(
        "profiles",
        &[Ref {
            col: "id",
            parent: Parent::User,
            missing: Missing::Refuse,
            org_from_parent: false,
            copy: None,
        }],
        copy,
    ),
    spec(
        "team_members",
        &[
            ORG,
            Ref {
                col: "user_id",
                parent: Parent::User,
                missing: Missing::Refuse,
                org_from_parent: false,
                copy: None,
            },
        ],
        team_members,
    ),
    spec("clients", &[ORG, person("assigned_to")], clients),
    spec(
        "projects",
        &[ORG, tenant("client_id", "clients", Missing::Clear)],
        projects,
    ),
    spec(
        "wizard_sessions",
        &[
            derive("project_id", "projects", Missing::Clear),
            ORG,
            Ref {
                col: "user_id",
                parent: Parent::User,
                missing: Missing::Clear,
                org_from_parent: false,
                copy: None,
            },
        ],
        wizard_sessions,
    ),
    // Newest first: January had no unique (session_id, screen_id), so of duplicates the
    // newest answer goes in and the older ones are refused by agencyflow's unique key.
    TableSpec {
        order: "updated_at desc, id",
        ..spec(
            "wizard_answers",
            &[
                derive("session_id", "wizard_sessions", Missing::Refuse),
                ORG,
            ],
            wizard_answers,
        )
    },
    spec(
        "context_snapshots",
        &[ORG, tenant("project_id", "projects", Missing::Refuse)],
        context_snapshots,
    ),
    spec(
        "roadmaps",
        &[
            ORG,
            tenant("snapshot_id", "context_snapshots", Missing::Refuse),
        ],
        roadmaps,
    ),
    spec(
        "roadmap_phases",
        &[ORG, tenant("roadmap_id", "roadmaps", Missing::Refuse)],
        roadmap_phases,
    ),
    spec(
        "tasks",
        &[
            ORG,
            tenant("phase_id", "roadmap_phases", Missing::Refuse),
            person("assigned_to"),
        ],
        tasks,
    ),
    spec(
        "milestones",
        &[
            ORG,
            tenant("project_id", "projects", Missing::Refuse),
            tenant("phase_id", "roadmap_phases", Missing::Clear),
        ],
        milestones,
    ),
    spec(
        "deliverables",
        &[
            ORG,
            tenant("phase_id", "roadmap_phases", Missing::Refuse),
            person("assigned_to"),
        ],
        deliverables,
    ),
    spec(
        "briefs",
        &[ORG, tenant("project_id", "projects", Missing::Refuse)],
        briefs,
    ),
    spec(
        "brief_versions",
        &[
            derive("brief_id", "briefs", Missing::Refuse),
            person("changed_by"),
        ],
        brief_versions,
    ),
    TableSpec {
        name: "systems",
        source: ("public", "systems"),
        target: ("public", "systems"),
        key: "id",
        conflict: "(id) do nothing",
        order: "id",
        refs: &[],
        map: copy,
    },
    TableSpec {
        order: "org_id nulls first, id",
        ..spec(
            "services",
            &[Ref {
                col: "org_id",
                parent: Parent::Global("public.organizations"),
                missing: Missing::Refuse,
                org_from_parent: false,
                copy: None,
            }],
            services,
        )
    },
    TableSpec {
        conflict: "do nothing",
        ..spec(
            "system_services",
            &[
                Ref {
                    col: "system_id",
                    parent: Parent::Global("public.systems"),
                    missing: Missing::Refuse,
                    org_from_parent: false,
                    copy: None,
                },
                Ref {
                    col: "service_id",
                    parent: Parent::Global("public.services"),
                    missing: Missing::Refuse,
                    org_from_parent: false,
                    copy: None,
                },
            ],
            service_link,
        )
    },
    spec(
        "project_systems",
        &[
            ORG,
            tenant("project_id", "projects", Missing::Refuse),
            Ref {
                col: "system_id",
                parent: Parent::Global("public.systems"),
                missing: Missing::Refuse,
                org_from_parent: false,
                copy: None,
            },
        ],
        project_systems,
    ),
    spec(
        "project_services",
        &[
            ORG,
            tenant("project_id", "projects", Missing::Refuse),
            Ref {
                col: "service_id",
                parent: Parent::Tenant {
                    table: "services",
                    global_ok: true,
                },
                missing: Missing::Refuse,
                org_from_parent: false,
                copy: None,
            },
        ],
        project_services,
    ),
    spec("crm_pipelines", &[ORG], copy),
    spec(
        "crm_stages",
        &[derive("pipeline_id", "crm_pipelines", Missing::Refuse)],
        copy,
    ),
    spec(
        "crm_contacts",
        &[ORG, tenant("client_id", "clients", Missing::Clear)],
        crm_contacts,
    ),
    spec(
        "crm_deals",
        &[
            ORG,
            tenant("client_id", "clients", Missing::Refuse),
            tenant("stage_id", "crm_stages", Missing::Clear),
            person("owner_id"),
        ],
        crm_deals,
    ),
    spec(
        "crm_interactions",
        &[
            ORG,
            Ref {
                col: "deal_id",
                parent: Parent::Tenant {
                    table: "crm_deals",
                    global_ok: false,
                },
                missing: Missing::Clear,
                org_from_parent: false,
                copy: Some(("client_id", "client_id", "interaction_client_from_deal")),
            },
            Ref {
                col: "contact_id",
                parent: Parent::Tenant {
                    table: "crm_contacts",
                    global_ok: false,
                },
                missing: Missing::Clear,
                org_from_parent: false,
                copy: Some(("client_id", "client_id", "interaction_client_from_deal")),
            },
            tenant("client_id", "clients", Missing::Refuse),
            person("created_by"),
        ],
        crm_interactions,
    ),
    spec(
        "invoices",
        &[ORG, tenant("project_id", "projects", Missing::Clear)],
        invoices,
    ),
    spec(
        "payments",
        &[
            ORG,
            Ref {
                col: "invoice_id",
                parent: Parent::Tenant {
                    table: "invoices",
                    global_ok: false,
                },
                missing: Missing::Refuse,
                org_from_parent: false,
                copy: Some(("currency", "currency", "currency_from_invoice")),
            },
        ],
        payments,
    ),
    spec(
        "documents",
        &[
            derive("project_id", "projects", Missing::Clear),
            derive("wizard_session_id", "wizard_sessions", Missing::Clear),
            ORG,
            person("uploaded_by"),
        ],
        documents,
    ),
    spec(
        "activities",
        &[
            ORG,
            tenant("client_id", "clients", Missing::Clear),
            tenant("project_id", "projects", Missing::Clear),
            person("created_by"),
        ],
        activities,
    ),
    spec(
        "ai_run_logs",
        &[ORG, tenant("project_id", "projects", Missing::Clear)],
        ai_run_logs,
    ),
    TableSpec {
        key: "key",
        conflict: "(key) do nothing",
        order: "hash",
        ..spec(
            "ai_cache",
            &[Ref {
                col: "org_id",
                parent: Parent::Global("public.organizations"),
                missing: Missing::Refuse,
                org_from_parent: false,
                copy: None,
            }],
            ai_cache,
        )
    },
    TableSpec {
        name: "storage.buckets",
        source: ("storage", "buckets"),
        target: ("storage", "buckets"),
        key: "id",
        conflict: "(id) do nothing",
        order: "id",
        refs: &[],
        map: buckets,
    },
    TableSpec {
        name: "storage.objects",
        source: ("storage", "objects"),
        target: ("storage", "objects"),
        key: "id",
        conflict: "(id) do nothing",
        order: "bucket_id, name",
        refs: &[Ref {
            col: "bucket_id",
            parent: Parent::Global("storage.buckets"),
            missing: Missing::Refuse,
            org_from_parent: false,
            copy: None,
        }],
        map: objects,
    },
];

fn copy(_: &mut Mapping, _: &mut Ctx) -> R {
    Ok(Outcome::Insert)
}

fn users(m: &mut Mapping, _: &mut Ctx) -> R {
    let mut dropped = false;
    let cols: Vec<String> = m.row.keys().cloned().collect();
    for c in cols {
        let pending = c.contains("token") || c == "email_change" || c == "phone_change";
        if pending {
            let v = m.row.remove(&c).unwrap_or(Value::Null);
            if v.as_str().is_some_and(|s| !s.is_empty()) {
                dropped = true;
            }
        }
    }
    if dropped {
        m.changed("auth_tokens_dropped");
    }
    m.default("raw_app_meta_data", json!({}), None);
    m.default("raw_user_meta_data", json!({}), None);
    m.default("is_anonymous", json!(false), None);
    m.default("is_sso_user", json!(false), None);
    Ok(Outcome::Insert)
}

/// A stable uuid from text (the old identity layout had the provider's id as its id).
fn uuid_from(text: &str) -> String {
    let h = Sha256::digest(text.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    uuid::Builder::from_random_bytes(b).into_uuid().to_string()
}

fn identities(m: &mut Mapping, _: &mut Ctx) -> R {
    if m.is_null("provider_id") {
        let old = m.id("id");
        let provider = m.str("provider").unwrap_or("").to_string();
        m.set("provider_id", Value::String(old.clone()));
        if uuid::Uuid::parse_str(&old).is_err() {
            m.set("id", Value::String(uuid_from(&format!("{provider}:{old}"))));
        }
        m.changed("identity_provider_id");
    }
    m.default("identity_data", json!({}), None);
    Ok(Outcome::Insert)
}

fn slugify(name: &str) -> String {
    let mut s = String::new();
    for c in name.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c);
        } else if !s.ends_with('-') && !s.is_empty() {
            s.push('-');
        }
    }
    s.trim_end_matches('-').chars().take(40).collect()
}

fn organizations(m: &mut Mapping, _: &mut Ctx) -> R {
    if m.is_null("slug") {
        let id = m.id("id");
        let base = slugify(m.str("name").unwrap_or(""));
        let short: String = id.chars().filter(|c| *c != '-').take(8).collect();
        let slug = if base.is_empty() {
            format!("org-{short}")
        } else {
            format!("{base}-{short}")
        };
        m.set("slug", Value::String(slug));
        m.changed("slug_generated");
    }
    m.default("settings", json!({}), None);
    Ok(Outcome::Insert)
}

fn team_members(m: &mut Mapping, _: &mut Ctx) -> R {
    m.default("role", json!("Member"), None);
    m.map_value("team_members", "role")?;
    Ok(Outcome::Insert)
}

fn clients(m: &mut Mapping, _: &mut Ctx) -> R {
    for c in ["status", "pipeline_stage", "company_size"] {
        m.map_value("clients", c)?;
    }
    m.cents("value", "value_cents")?;
    if let Some(d) = m
        .str("next_action_date")
        .map(|s| s.chars().take(10).collect::<String>())
    {
        m.set("next_action_date", Value::String(d));
    }
    m.default("health_score", json!(50), None);
    m.default("status", json!("lead"), None);
    Ok(Outcome::Insert)
}

fn projects(m: &mut Mapping, _: &mut Ctx) -> R {
    m.map_value("projects", "status")?;
    m.default("status", json!("draft"), None);
    m.default("progress", json!(0), None);
    m.cents("value", "value_cents")?;
    Ok(Outcome::Insert)
}

fn wizard_sessions(m: &mut Mapping, ctx: &mut Ctx) -> R {
    if m.is_null("user_id") {
        // Linked once the org is known (after the references): see `link_wizard_user`.
        m.row.remove("user_id");
    }
    let _ = ctx;
    Ok(Outcome::Insert)
}

/// After references resolved org_id: a session of an org with one member belongs to them.
pub fn link_wizard_user(m: &mut Mapping, ctx: &Ctx) {
    if m.row.contains_key("user_id") {
        return;
    }
    let user = m
        .str("org_id")
        .and_then(|o| ctx.sole_member.get(o))
        .cloned();
    match user {
        Some(u) => {
            m.set("user_id", Value::String(u));
            m.changed("wizard_user_linked");
        }
        None => m.set("user_id", Value::Null),
    }
}

fn wizard_answers(m: &mut Mapping, _: &mut Ctx) -> R {
    let step = m.row.get("step_number").and_then(Value::as_i64);
    match (m.str("screen_id").map(str::to_string), step) {
        (Some(_), Some(_)) => m.map_value("wizard_answers", "screen_id")?,
        (Some(s), None) => {
            m.map_value("wizard_answers", "screen_id")?;
            let n: i64 = s.trim_start_matches("step-").parse().unwrap_or(0);
            m.set("step_number", json!(n));
            m.changed("wizard_step_derived");
        }
        (None, Some(n)) if (1..=5).contains(&n) => {
            m.set("screen_id", json!(format!("step-{n}")));
            m.changed("wizard_step_derived");
        }
        _ => return Err("wizard answer has neither a screen_id nor a step_number".into()),
    }
    m.default("data", json!({}), Some("jsonb_default"));
    Ok(Outcome::Insert)
}

fn context_snapshots(m: &mut Mapping, _: &mut Ctx) -> R {
    m.default("metrics", json!({}), Some("jsonb_default"));
    Ok(Outcome::Insert)
}

fn roadmaps(m: &mut Mapping, _: &mut Ctx) -> R {
    if let Some(s) = m.str("roi_projection").map(str::to_string) {
        let v = serde_json::from_str::<Value>(&s).unwrap_or(Value::String(s));
        m.set("roi_projection", v);
        m.changed("roi_projection_json");
    }
    Ok(Outcome::Insert)
}

fn roadmap_phases(m: &mut Mapping, _: &mut Ctx) -> R {
    m.default("outcomes", json!([]), Some("jsonb_default"));
    Ok(Outcome::Insert)
}

fn tasks(m: &mut Mapping, _: &mut Ctx) -> R {
    for c in ["status", "priority", "owner", "effort"] {
        m.map_value("tasks", c)?;
    }
    m.default("priority", json!("medium"), None);
    match m.row.remove("tags") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            let items: Vec<Value> = items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Value::String(s),
                    other => Value::String(other.to_string()),
                })
                .collect();
            m.set("tags", Value::Array(items));
            m.changed("tags_jsonb_to_array");
        }
        Some(_) => {
            m.set("tags", json!([]));
            m.changed("tags_jsonb_to_array");
        }
    }
    m.default("tags", json!([]), None);
    m.default("ai_generated", json!(false), None);
    Ok(Outcome::Insert)
}

fn milestones(m: &mut Mapping, _: &mut Ctx) -> R {
    m.map_value("milestones", "status")?;
    Ok(Outcome::Insert)
}

fn deliverables(m: &mut Mapping, _: &mut Ctx) -> R {
    m.map_value("deliverables", "status")?;
    Ok(Outcome::Insert)
}

fn briefs(m: &mut Mapping, _: &mut Ctx) -> R {
    m.map_value("briefs", "status")?;
    Ok(Outcome::Insert)
}

fn brief_versions(m: &mut Mapping, _: &mut Ctx) -> R {
    m.default("diff", json!({}), Some("jsonb_default"));
    Ok(Outcome::Insert)
}

fn services(m: &mut Mapping, ctx: &mut Ctx) -> R {
    m.map_value("services", "category")?;
    m.default("benefits", json!([]), Some("jsonb_default"));
    m.default("features", json!([]), Some("jsonb_default"));
    if m.is_null("org_id") {
        if let Some(existing) = m
            .str("slug")
            .and_then(|s| ctx.global_services.get(s))
            .cloned()
        {
            let id = m.id("id");
            if existing != id {
                ctx.service_remap.insert(id, existing);
            }
            return Ok(Outcome::Matched);
        }
    }
    Ok(Outcome::Insert)
}

fn project_systems(m: &mut Mapping, _: &mut Ctx) -> R {
    m.default("recommendation_metadata", json!({}), Some("jsonb_default"));
    Ok(Outcome::Insert)
}

fn remap_service(m: &mut Mapping, ctx: &Ctx) {
    if let Some(to) = m
        .str("service_id")
        .and_then(|s| ctx.service_remap.get(s))
        .cloned()
    {
        m.set("service_id", Value::String(to));
        m.changed("service_matched_by_slug");
    }
}

fn service_link(m: &mut Mapping, ctx: &mut Ctx) -> R {
    remap_service(m, ctx);
    Ok(Outcome::Insert)
}

fn project_services(m: &mut Mapping, ctx: &mut Ctx) -> R {
    remap_service(m, ctx);
    m.map_value("project_services", "status")?;
    Ok(Outcome::Insert)
}

fn crm_contacts(m: &mut Mapping, _: &mut Ctx) -> R {
    m.default("tags", json!([]), None);
    Ok(Outcome::Insert)
}

fn currency(m: &mut Mapping) {
    match m.str("currency").map(str::to_string) {
        None => {
            m.set("currency", json!("USD"));
            m.changed("currency_normalised");
        }
        Some(c) if c != c.trim().to_uppercase() => {
            m.set("currency", json!(c.trim().to_uppercase()));
            m.changed("currency_normalised");
        }
        _ => {}
    }
}

fn crm_deals(m: &mut Mapping, _: &mut Ctx) -> R {
    m.map_value("crm_deals", "status")?;
    if m.row.contains_key("amount") {
        m.cents("amount", "amount_cents")?;
    }
    m.default("amount_cents", json!(0), None);
    currency(m);
    Ok(Outcome::Insert)
}

fn embedding(m: &mut Mapping, ctx: &Ctx, table: &str) {
    let Some(v) = m.str("embedding").map(str::to_string) else {
        return;
    };
    let dims = v.trim_matches(['[', ']']).split(',').count();
    let model = ctx.embedding_models.get(table);
    match model {
        Some(model) if ctx.embedding_dims.get(table) == Some(&dims) => {
            m.set("embedding_model", Value::String(model.clone()));
            m.changed("embedding_kept");
        }
        _ => {
            m.set("embedding", Value::Null);
            m.set("embedding_model", Value::Null);
            m.changed("embedding_queued");
        }
    }
}

fn crm_interactions(m: &mut Mapping, ctx: &mut Ctx) -> R {
    m.map_value("crm_interactions", "direction")?;
    m.default("sentiment", json!("neutral"), None);
    embedding(m, ctx, "crm_interactions");
    Ok(Outcome::Insert)
}

/// Whether line items add up the way agencyflow's CHECK wants them to.
fn line_items_add_up(items: &Value, amount: i64) -> bool {
    let Value::Array(items) = items else {
        return false;
    };
    if items.is_empty() {
        return true;
    }
    let mut sum: i64 = 0;
    for it in items {
        let Value::Object(o) = it else { return false };
        let cents = match (o.get("amount_cents"), o.get("unit_price_cents")) {
            (Some(a), _) => a.as_i64(),
            (None, Some(p)) => p
                .as_i64()
                .map(|p| p * o.get("quantity").and_then(Value::as_f64).unwrap_or(1.0) as i64),
            _ => None,
        };
        match cents {
            Some(c) if c >= 0 => sum += c,
            _ => return false,
        }
    }
    sum == amount
}

fn invoices(m: &mut Mapping, _: &mut Ctx) -> R {
    m.map_value("invoices", "status")?;
    currency(m);
    if let Some(d) = m.row.remove("paid_date") {
        if let Some(d) = d.as_str() {
            m.set("paid_at", json!(format!("{d}T00:00:00Z")));
            m.changed("paid_date_to_paid_at");
        }
    }
    let amount = m
        .row
        .get("amount_cents")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    match m.row.get("line_items").cloned() {
        None | Some(Value::Null) => m.set("line_items", json!([])),
        Some(items) if line_items_add_up(&items, amount) => {}
        Some(items) => {
            let notes = m.str("notes").unwrap_or("").to_string();
            let sep = if notes.is_empty() { "" } else { "\n\n" };
            m.set(
                "notes",
                json!(format!("{notes}{sep}Original line items: {items}")),
            );
            m.set("line_items", json!([]));
            m.changed("line_items_to_notes");
        }
    }
    Ok(Outcome::Insert)
}

fn payments(m: &mut Mapping, _: &mut Ctx) -> R {
    m.map_value("payments", "status")?;
    let renamed =
        !m.is_null("payment_method") || !m.is_null("stripe_id") || !m.is_null("transaction_id");
    m.rename("payment_method", "method");
    let provider_ref = m
        .row
        .remove("stripe_id")
        .filter(|v| !v.is_null())
        .or_else(|| m.row.remove("transaction_id").filter(|v| !v.is_null()));
    m.row.remove("transaction_id");
    if let Some(p) = provider_ref {
        m.set("provider_ref", p);
    }
    if renamed {
        m.changed("payment_fields_renamed");
    }
    if m.row
        .get("amount_cents")
        .and_then(Value::as_i64)
        .unwrap_or(0)
        <= 0
    {
        return Err("a payment's amount_cents must be more than 0".into());
    }
    Ok(Outcome::Insert)
}

fn documents(m: &mut Mapping, ctx: &mut Ctx) -> R {
    m.map_value("documents", "category")?;
    m.default("status", json!("active"), None);
    embedding(m, ctx, "documents");
    Ok(Outcome::Insert)
}

fn activities(m: &mut Mapping, _: &mut Ctx) -> R {
    m.map_value("activities", "activity_type")?;
    let sentiment = m.row.remove("sentiment").filter(|v| !v.is_null());
    m.default("metadata", json!({}), None);
    if let Some(s) = sentiment {
        if let Some(Value::Object(o)) = m.row.get_mut("metadata") {
            o.insert("sentiment".into(), s);
        } else {
            m.set("metadata", json!({ "sentiment": s }));
        }
        m.changed("activity_sentiment_to_metadata");
    }
    Ok(Outcome::Insert)
}

fn ai_run_logs(m: &mut Mapping, _: &mut Ctx) -> R {
    if !m.row.contains_key("success") {
        m.changed("ai_run_defaults");
    }
    m.default("success", json!(true), Some("ai_run_defaults"));
    m.default("input_tokens", json!(0), Some("ai_run_defaults"));
    m.default("output_tokens", json!(0), Some("ai_run_defaults"));
    Ok(Outcome::Insert)
}

fn ai_cache(m: &mut Mapping, _: &mut Ctx) -> R {
    m.rename("hash", "key");
    m.row.remove("prompt_hash");
    m.default("model", json!("unknown"), None);
    m.default("tokens_used", json!(0), None);
    m.default("response", json!({}), Some("jsonb_default"));
    m.changed("ai_cache_key");
    Ok(Outcome::Insert)
}

fn buckets(m: &mut Mapping, _: &mut Ctx) -> R {
    m.default("public", json!(false), None);
    m.default("name", Value::String(m.id("id")), None);
    if m.is_null("owner") {
        if let Some(o) = m
            .str("owner_id")
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
        {
            m.set("owner", json!(o));
        }
    }
    Ok(Outcome::Insert)
}

fn objects(m: &mut Mapping, _: &mut Ctx) -> R {
    if m.is_null("owner") {
        if let Some(o) = m
            .str("owner_id")
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
        {
            m.set("owner", json!(o));
        }
    }
    // The version (and the file) are set by the file copy, which reads the original's
    // version to find the file.
    Ok(Outcome::Insert)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_fit_agencyflow_s_check() {
        assert_eq!(slugify("Sun AI Agency!"), "sun-ai-agency");
        assert_eq!(slugify("  --"), "");
        assert!(line_items_add_up(
            &json!([{"amount_cents": 100}, {"unit_price_cents": 50, "quantity": 2}]),
            200
        ));
        assert!(!line_items_add_up(&json!([{"amount": 1.5}]), 150));
    }
}
