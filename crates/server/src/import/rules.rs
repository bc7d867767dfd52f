//! The import's mapping rules, as data: the value sets of every status-like column of the
//! original (its January 2026 and March 2026 sets, and the drifted values its code wrote) and
//! what each becomes in agencyflow, plus the column rules that are not value maps. The mappers
//! in `tables.rs` look values and rules up here; `docs/import.md`'s mapping table is
//! [`markdown`]'s output (a unit test checks they agree).

/// One column's value map: every value the original is known to hold, and its target value.
/// A value found in no map is refused (with the row's id), never guessed.
pub struct ValueMap {
    pub table: &'static str,
    pub column: &'static str,
    /// (original value, agencyflow value, where the original value comes from).
    pub values: &'static [(&'static str, &'static str, &'static str)],
}

const JAN: &str = "Jan";
const MAR: &str = "Mar";
const BOTH: &str = "Jan+Mar";
const DRIFT: &str = "drift";

pub const VALUE_MAPS: &[ValueMap] = &[
    ValueMap {
        table: "team_members",
        column: "role",
        values: &[
            ("Owner", "owner", BOTH),
            ("Admin", "admin", MAR),
            ("Consultant", "consultant", BOTH),
            ("Member", "member", BOTH),
            ("Client", "client", BOTH),
            ("owner", "owner", DRIFT),
        ],
    },
    ValueMap {
        table: "projects",
        column: "status",
        values: &[
            ("Discovery", "discovery", JAN),
            ("Active", "active", BOTH),
            ("Archived", "archived", JAN),
            ("discovery", "discovery", MAR),
            ("draft", "draft", MAR),
            ("planning", "planning", MAR),
            ("active", "active", MAR),
            ("on_hold", "on_hold", MAR),
            ("completed", "completed", MAR),
            ("cancelled", "cancelled", MAR),
        ],
    },
    ValueMap {
        table: "clients",
        column: "status",
        values: &[
            ("lead", "lead", BOTH),
            ("client", "client", BOTH),
            ("prospect", "prospect", BOTH),
            ("active", "client", MAR),
            ("inactive", "churned", MAR),
            ("churned", "churned", MAR),
            ("onboarding", "client", DRIFT),
        ],
    },
    ValueMap {
        table: "clients",
        column: "pipeline_stage",
        values: &[
            ("new", "new", BOTH),
            ("contacted", "contacted", BOTH),
            ("qualified", "qualified", BOTH),
            ("proposal", "proposal", BOTH),
            ("won", "won", BOTH),
            ("lost", "lost", BOTH),
            ("negotiation", "negotiation", MAR),
            ("closed_won", "won", MAR),
            ("closed_lost", "lost", MAR),
        ],
    },
    ValueMap {
        table: "clients",
        column: "company_size",
        values: &[
            ("small", "small", BOTH),
            ("medium", "medium", BOTH),
            ("large", "large", BOTH),
            ("enterprise", "enterprise", BOTH),
        ],
    },
    ValueMap {
        table: "tasks",
        column: "status",
        values: &[
            ("todo", "todo", BOTH),
            ("in_progress", "in_progress", BOTH),
            ("review", "review", BOTH),
            ("done", "done", BOTH),
            ("blocked", "blocked", MAR),
            ("pending", "todo", DRIFT),
        ],
    },
    ValueMap {
        table: "tasks",
        column: "priority",
        values: &[
            ("low", "low", BOTH),
            ("medium", "medium", BOTH),
            ("high", "high", BOTH),
            ("urgent", "urgent", BOTH),
        ],
    },
    ValueMap {
        table: "tasks",
        column: "owner",
        values: &[
            ("Client", "client", BOTH),
            ("Sun AI", "agency", BOTH),
            ("Automated", "automated", BOTH),
        ],
    },
    ValueMap {
        table: "tasks",
        column: "effort",
        values: &[
            ("S", "s", BOTH),
            ("M", "m", BOTH),
            ("L", "l", BOTH),
            ("XL", "xl", BOTH),
        ],
    },
    ValueMap {
        table: "briefs",
        column: "status",
        values: &[
            ("draft", "draft", BOTH),
            ("in_review", "in_review", BOTH),
            ("approved", "approved", BOTH),
        ],
    },
    ValueMap {
        table: "project_services",
        column: "status",
        values: &[
            ("planned", "planned", BOTH),
            ("active", "active", BOTH),
            ("completed", "completed", BOTH),
            ("paused", "paused", BOTH),
        ],
    },
    ValueMap {
        table: "services",
        column: "category",
        values: &[
            ("Core", "core", BOTH),
            ("Industry-Specific", "industry_specific", BOTH),
            ("Custom", "custom", BOTH),
        ],
    },
    ValueMap {
        table: "crm_deals",
        column: "status",
        values: &[
            ("open", "open", BOTH),
            ("won", "won", BOTH),
            ("lost", "lost", BOTH),
            ("archived", "archived", BOTH),
            ("stale", "stale", MAR),
        ],
    },
    ValueMap {
        table: "crm_interactions",
        column: "direction",
        values: &[("inbound", "inbound", BOTH), ("outbound", "outbound", BOTH)],
    },
    ValueMap {
        table: "invoices",
        column: "status",
        values: &[
            ("draft", "draft", BOTH),
            ("sent", "sent", BOTH),
            ("paid", "paid", BOTH),
            ("overdue", "overdue", BOTH),
            ("cancelled", "cancelled", BOTH),
            ("void", "void", MAR),
        ],
    },
    ValueMap {
        table: "payments",
        column: "status",
        values: &[
            ("pending", "pending", BOTH),
            ("completed", "completed", BOTH),
            ("failed", "failed", BOTH),
            ("refunded", "refunded", BOTH),
        ],
    },
    ValueMap {
        table: "milestones",
        column: "status",
        values: &[
            ("upcoming", "upcoming", BOTH),
            ("completed", "completed", BOTH),
            ("overdue", "overdue", BOTH),
            ("pending", "upcoming", MAR),
            ("in_progress", "in_progress", MAR),
            ("delayed", "delayed", MAR),
        ],
    },
    ValueMap {
        table: "deliverables",
        column: "status",
        values: &[
            ("pending", "pending", BOTH),
            ("in_progress", "in_progress", BOTH),
            ("in_review", "in_review", BOTH),
            ("approved", "approved", BOTH),
            ("delivered", "delivered", BOTH),
            ("completed", "delivered", MAR),
            ("rejected", "rejected", MAR),
        ],
    },
    ValueMap {
        table: "documents",
        column: "category",
        values: &[
            ("Briefs", "briefs", BOTH),
            ("Requirements", "requirements", BOTH),
            ("Assets", "assets", BOTH),
            ("Reference", "reference", BOTH),
            ("Other", "other", BOTH),
        ],
    },
    ValueMap {
        table: "activities",
        column: "activity_type",
        values: &[
            ("note", "note", BOTH),
            ("call", "call", BOTH),
            ("email", "email", BOTH),
            ("meeting", "meeting", BOTH),
            ("status_change", "status_change", BOTH),
        ],
    },
    ValueMap {
        table: "wizard_answers",
        column: "screen_id",
        values: &[
            ("step-1", "step-1", BOTH),
            ("step-2", "step-2", BOTH),
            ("step-3", "step-3", BOTH),
            ("step-4", "step-4", BOTH),
            ("step-5", "step-5", BOTH),
        ],
    },
];

/// A column rule that is not a value map: (id, table, what happens and why).
pub struct Rule {
    pub id: &'static str,
    pub table: &'static str,
    pub text: &'static str,
}

pub const RULES: &[Rule] = &[
    Rule { id: "value_map", table: "*", text: "a status/role/category value of the original's January or March set (or a known drifted value) becomes agencyflow's value (table above); a value in no set is refused" },
    Rule { id: "dangling_ref_cleared", table: "*", text: "an optional reference (ON DELETE SET NULL in the original) to a row that does not exist or belongs to another organization is cleared, as the original's SET NULL would have done" },
    Rule { id: "person_not_member", table: "*", text: "a people column (assigned_to, owner_id, created_by, uploaded_by, changed_by) naming a user who is not a member of the row's organization is cleared: agencyflow refers to (org_id, user_id) in team_members" },
    Rule { id: "org_from_parent", table: "*", text: "org_id missing (brief_versions, crm_stages, wizard rows with a NULL org_id after March) is taken from the parent row" },
    Rule { id: "numeric_to_cents", table: "clients, projects, crm_deals", text: "numeric money (value, amount) becomes integer cents (value_cents, amount_cents), rounded half away from zero to the cent" },
    Rule { id: "currency_normalised", table: "crm_deals, invoices", text: "currency upper-cased; missing currency becomes USD (the original's default)" },
    Rule { id: "currency_from_invoice", table: "payments", text: "payments had no currency: the invoice's currency" },
    Rule { id: "payment_fields_renamed", table: "payments", text: "payment_method becomes method; stripe_id (else transaction_id) becomes provider_ref" },
    Rule { id: "paid_date_to_paid_at", table: "invoices", text: "paid_date (a date) becomes paid_at at midnight UTC" },
    Rule { id: "line_items_to_notes", table: "invoices", text: "line items that do not add up to amount_cents (agencyflow checks the sum) are moved into notes as JSON text; line_items becomes []" },
    Rule { id: "slug_generated", table: "organizations", text: "organizations had no slug: one is made from the name and the id's first 8 characters" },
    Rule { id: "profile_email", table: "profiles", text: "profiles get the user's e-mail; a user without a profile gets one" },
    Rule { id: "task_completed_at", table: "tasks", text: "a done task without completed_at gets its updated_at (what agencyflow's trigger would have recorded; analytics count throughput by it)" },
    Rule { id: "deal_closed_at", table: "crm_deals", text: "a won or lost deal without closed_at gets its updated_at (what agencyflow's trigger would have recorded; win rates count by it)" },
    Rule { id: "wizard_user_linked", table: "wizard_sessions", text: "wizard_sessions had no user_id: a session whose organization has exactly one member is linked to that member (a guest or personal workspace); otherwise it stays unlinked" },
    Rule { id: "wizard_step_derived", table: "wizard_answers", text: "a missing screen_id is derived from step_number (and the other way round); a row with neither is refused" },
    Rule { id: "roi_projection_json", table: "roadmaps", text: "roi_projection (text) becomes JSON: parsed when it is JSON, else a JSON string" },
    Rule { id: "tags_jsonb_to_array", table: "tasks", text: "tags (a JSON array) becomes text[]; non-string items are written as their JSON text; a non-array becomes {}" },
    Rule { id: "jsonb_default", table: "services, project_systems, context_snapshots, roadmap_phases, brief_versions, ai_cache", text: "NULL JSON columns that agencyflow requires become their default ({} or [])" },
    Rule { id: "service_matched_by_slug", table: "services", text: "a global service whose slug agencyflow's catalogue already has is matched to that row (references follow it), not duplicated" },
    Rule { id: "interaction_client_from_deal", table: "crm_interactions", text: "client_id is required in agencyflow: a missing one is taken from the deal, else the contact; an interaction with none is refused" },
    Rule { id: "activity_sentiment_to_metadata", table: "activities", text: "activities.sentiment (no column in agencyflow) moves into metadata.sentiment" },
    Rule { id: "ai_cache_key", table: "ai_cache", text: "hash becomes key; prompt_hash is dropped (the key is the hash); a missing model becomes 'unknown'" },
    Rule { id: "ai_run_defaults", table: "ai_run_logs", text: "success (added in March) defaults to true, token counts to 0" },
    Rule { id: "embedding_kept", table: "documents, crm_interactions", text: "an embedding whose model is named (--embedding-model TABLE=MODEL) and whose dimensions fit the column is kept with that model" },
    Rule { id: "embedding_queued", table: "documents, crm_interactions", text: "an embedding of unknown model is dropped and the row queued for `agencyflow embed backfill` (private.embedding_jobs)" },
    Rule { id: "auth_tokens_dropped", table: "auth.users", text: "pending confirmation, recovery, e-mail/phone change and reauthentication tokens are not carried: links the old project sent stop working" },
    Rule { id: "identity_provider_id", table: "auth.identities", text: "an identity of the old layout (id = provider's user id, no provider_id) gets provider_id = that id and a new uuid derived from it" },
    Rule { id: "object_version", table: "storage.objects", text: "each object gets version `import-<sha256>`: the file is written under <bucket>/<name>/<version>, content-addressed, so a re-run reuses it" },
];

/// The rule with this id (every id the mappers use is in [`RULES`]).
pub fn rule(id: &str) -> &'static Rule {
    RULES
        .iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("import rule `{id}` is not in RULES"))
}

/// The value map of a column, if it has one.
pub fn value_map(table: &str, column: &str) -> Option<&'static ValueMap> {
    VALUE_MAPS
        .iter()
        .find(|m| m.table == table && m.column == column)
}

/// Maps one value: `Ok(Some(new))` when it changes, `Ok(None)` when it stays, `Err(reason)`
/// when the value is in no known set.
pub fn map_value(table: &str, column: &str, value: &str) -> Result<Option<&'static str>, String> {
    let m = value_map(table, column).unwrap_or_else(|| panic!("no value map for {table}.{column}"));
    match m.values.iter().find(|(from, _, _)| *from == value) {
        Some((from, to, _)) if from == to => Ok(None),
        Some((_, to, _)) => Ok(Some(to)),
        None => Err(format!(
            "{table}.{column} = {value:?} is in none of the original's value sets ({})",
            m.values
                .iter()
                .map(|(f, _, _)| *f)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The mapping tables of docs/import.md.
pub fn markdown() -> String {
    let mut s = String::from(
        "| table.column | original value | from | agencyflow value |\n|---|---|---|---|\n",
    );
    for m in VALUE_MAPS {
        for (from, to, when) in m.values {
            s.push_str(&format!(
                "| {}.{} | `{from}` | {when} | `{to}` |\n",
                m.table, m.column
            ));
        }
    }
    s.push_str("\n| rule | tables | what happens |\n|---|---|---|\n");
    for r in RULES {
        s.push_str(&format!("| `{}` | {} | {} |\n", r.id, r.table, r.text));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_import_md_holds_the_generated_mapping_table() {
        let doc = include_str!("../../../../docs/import.md");
        assert!(
            doc.contains(&markdown()),
            "docs/import.md's mapping table differs from the rules: paste `rules::markdown()`"
        );
    }

    #[test]
    fn every_target_value_is_allowed_and_unknown_values_are_refused() {
        assert_eq!(
            map_value("team_members", "role", "Owner"),
            Ok(Some("owner"))
        );
        assert_eq!(map_value("projects", "status", "active"), Ok(None));
        assert!(map_value("tasks", "status", "someday").is_err());
        let ids: std::collections::HashSet<_> = RULES.iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), RULES.len(), "rule ids are unique");
    }
}
