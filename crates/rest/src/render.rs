//! Stage 3: [`Plan`] → one parameterised SQL [`Statement`].
//!
//! Every user value is a `$n` text parameter cast to the type the schema cache
//! gives it; identifiers come from the cache and are always double-quoted.
//! The statement always yields one row: `total_result_set bigint`,
//! `page_total bigint`, `body text`, `location text` (then, by name: `inserted_rows` for
//! merge upserts, `response_headers` and `response_status`).

use crate::parse::{
    Direction, FtsKind, IsValue, JsonKey, JsonStep, LogicOp, Nulls, Operation, Quantifier,
    ResponseMedia,
};
use crate::plan::{
    CallArg, CallQuery, CallShape, ColumnRef, Cond, DeleteQuery, EmbedNode, FieldExpr,
    FunctionCall, InsertQuery, OnConflict, OrderExpr, Plan, Query, ReadNode, ResolvedFilter,
    Returning, RowExpr, Source, UpdateQuery,
};
use crate::schema::{Cardinality, QualifiedName};

/// SQL text plus its parameters, all sent as TEXT (`None` = SQL NULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Option<String>>,
}

/// `"name"` with embedded quotes doubled.
pub fn ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    push_ident(&mut out, name);
    out
}

/// Appends `name` as a quoted identifier (`"` doubled): one pass, no temporaries.
fn push_ident(out: &mut String, name: &str) {
    out.push('"');
    for (i, part) in name.split('"').enumerate() {
        if i > 0 {
            out.push_str("\"\"");
        }
        out.push_str(part);
    }
    out.push('"');
}

/// A string literal for catalog-sourced text only (never user input).
fn catalog_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn qualified(q: &QualifiedName) -> String {
    format!("{}.{}", ident(&q.schema), ident(&q.name))
}

#[derive(Default)]
struct Builder {
    params: Vec<Option<String>>,
}

impl Builder {
    fn bind(&mut self, value: Option<String>, pg_type: &str) -> String {
        self.params.push(value);
        format!("${}::{}", self.params.len(), pg_type)
    }
}

const SOURCE_CTE: &str = "pgrst_source";
const TARGET: &str = "\"pgrst_target\"";

pub fn render(plan: &Plan) -> Statement {
    let mut b = Builder::default();
    let sql = match &plan.query {
        Query::Read(root) => render_read(&mut b, plan, root),
        Query::Insert(q) => render_insert(&mut b, plan, q),
        Query::Update(q) => render_update(&mut b, plan, q),
        Query::Delete(q) => render_delete(&mut b, plan, q),
        Query::Call(q) => render_call(&mut b, plan, q),
        Query::None => "SELECT NULL::bigint AS total_result_set, 0::bigint AS page_total, ''::text AS body, NULL::text AS location".to_string(),
    };
    Statement {
        sql,
        params: b.params,
    }
}

/// The `EXPLAIN (FORMAT JSON)` statement whose row estimate is the planned count.
pub(crate) fn render_explain(plan: &Plan) -> Option<Statement> {
    let mut b = Builder::default();
    let select = match &plan.query {
        Query::Read(root) => explain_rows(&mut b, root),
        Query::Call(q) => match (q.shape, &q.root) {
            (CallShape::Rows | CallShape::SingleRow, Some(root)) => explain_rows(&mut b, root),
            (CallShape::SetOfScalars, _) => {
                format!(
                    "SELECT 1 FROM {} AS pgrst_scalar",
                    call_sql(&mut b, &q.call)
                )
            }
            (CallShape::Scalar, _) => format!("SELECT {}", call_sql(&mut b, &q.call)),
            _ => return None,
        },
        _ => return None,
    };
    Some(Statement {
        sql: format!("EXPLAIN (FORMAT JSON) {select}"),
        params: b.params,
    })
}

/// `SELECT 1 FROM source AS alias WHERE …`: the rows a planned count estimates.
fn explain_rows(b: &mut Builder, root: &ReadNode) -> String {
    let from = source_sql(b, &root.source);
    format!(
        "SELECT 1 FROM {from} AS {}{}",
        ident(&root.alias),
        where_clause(b, root, &root.conds, None)
    )
}

/// Reads the top plan's row estimate from `EXPLAIN (FORMAT JSON)` output.
pub fn explain_row_estimate(explain_json: &str) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(explain_json).ok()?;
    let rows = v.get(0)?.get("Plan")?.get("Plan Rows")?;
    rows.as_i64().or_else(|| rows.as_f64().map(|f| f as i64))
}

// ----- the outer select -----

fn body_expr(plan: &Plan) -> String {
    match plan.media {
        ResponseMedia::Json { strip_nulls: false } | ResponseMedia::OpenApi => {
            "coalesce(pg_catalog.json_agg(_postgrest_t), '[]')::text".to_string()
        }
        ResponseMedia::Json { strip_nulls: true } => {
            "coalesce(pg_catalog.json_strip_nulls(pg_catalog.json_agg(_postgrest_t)), '[]')::text".to_string()
        }
        ResponseMedia::SingleObject { strip_nulls: false } => {
            "coalesce(pg_catalog.string_agg(pg_catalog.row_to_json(_postgrest_t)::text, ','), '')".to_string()
        }
        ResponseMedia::SingleObject { strip_nulls: true } => {
            "coalesce(pg_catalog.string_agg(pg_catalog.json_strip_nulls(pg_catalog.row_to_json(_postgrest_t))::text, ','), '')".to_string()
        }
        ResponseMedia::Csv => concat!(
            "coalesce((SELECT pg_catalog.string_agg(k, ',') FROM pg_catalog.json_object_keys(pg_catalog.json_agg(_postgrest_t) -> 0) AS k), '')",
            " || pg_catalog.chr(10) || ",
            "coalesce(pg_catalog.string_agg(pg_catalog.substring(_postgrest_t::text, 2, pg_catalog.length(_postgrest_t::text) - 2), pg_catalog.chr(10)), '')"
        )
        .to_string(),
        // PostgREST's: every row a Feature by PostGIS's ST_AsGeoJSON(record) (the first
        // geometry column is the geometry, the other fields the properties), in a
        // FeatureCollection. The function is the one the schema cache found, qualified.
        ResponseMedia::GeoJson => match &plan.geojson_function {
            Some(f) => format!(
                "pg_catalog.json_build_object('type', 'FeatureCollection', 'features', coalesce(pg_catalog.json_agg({}(_postgrest_t)::json), '[]'))",
                qualified(f)
            ),
            // The planner never leaves GeoJSON without the function; JSON is the safe answer.
            None => "coalesce(pg_catalog.json_agg(_postgrest_t), '[]')::text".to_string(),
        },
    }
}

/// The `response.headers` / `response.status` settings, read after the source ran (the
/// outer select aggregates it first), so functions and triggers can shape the response.
const RESPONSE_SETTINGS: &str = ", NULLIF(pg_catalog.current_setting('response.headers', true), '') AS response_headers, NULLIF(pg_catalog.current_setting('response.status', true), '') AS response_status";

/// The outer select of statements that run code (calls and writes): with the response
/// settings that code may have set.
fn outer(cte: &str, total: &str, body: &str, location: &str, from: &str) -> String {
    format!(
        "WITH {SOURCE_CTE} AS ({cte}) SELECT {total}::bigint AS total_result_set, pg_catalog.count(_postgrest_t)::bigint AS page_total, {body}::text AS body, {location}::text AS location{RESPONSE_SETTINGS} FROM {from} AS _postgrest_t"
    )
}

/// The outer select of a read of a table or view: no response settings (nothing the
/// request runs is meant to set them, and reads are the hot path), unless a pre-request
/// function runs first (`with_settings`), which may.
fn outer_read(cte: &str, total: &str, body: &str, with_settings: bool) -> String {
    let settings = if with_settings { RESPONSE_SETTINGS } else { "" };
    format!(
        "WITH {SOURCE_CTE} AS ({cte}) SELECT {total}::bigint AS total_result_set, pg_catalog.count(_postgrest_t)::bigint AS page_total, {body}::text AS body, NULL::text AS location{settings} FROM {SOURCE_CTE} AS _postgrest_t"
    )
}

// ----- reads -----

fn render_read(b: &mut Builder, plan: &Plan, root: &ReadNode) -> String {
    let cte = render_node(b, root, None, false);
    let total = if root.count_exact {
        count_subquery(b, root)
    } else {
        "NULL".to_string()
    };
    outer_read(&cte, &total, &body_expr(plan), plan.response_settings)
}

fn count_subquery(b: &mut Builder, root: &ReadNode) -> String {
    let from = source_sql(b, &root.source);
    let inner = if root.group_by.is_empty() {
        format!(
            "SELECT 1 FROM {from} AS {}{}",
            ident(&root.alias),
            where_clause(b, root, &root.conds, None)
        )
    } else {
        let fields = render_fields(b, root, false);
        format!(
            "SELECT {fields} FROM {from} AS {}{}{}",
            ident(&root.alias),
            where_clause(b, root, &root.conds, None),
            group_by(root)
        )
    };
    format!("(SELECT pg_catalog.count(*) FROM ({inner}) AS _pgrst_count)")
}

fn source_sql(b: &mut Builder, source: &Source) -> String {
    match source {
        Source::Relation(q) => qualified(q),
        Source::MutationResult => SOURCE_CTE.to_string(),
        Source::Function(call) => call_sql(b, call),
        Source::Computed { function, row } => {
            format!("{}({})", qualified(function), row_sql(row))
        }
    }
}

/// A row passed to a function taking a relation's row type.
fn row_sql(row: &RowExpr) -> String {
    match row {
        RowExpr::Whole(alias) => format!("{}.*", ident(alias)),
        RowExpr::Cast {
            alias,
            relation,
            columns,
        } => {
            let a = ident(alias);
            let cols: Vec<String> = columns
                .iter()
                .map(|c| format!("{a}.{}", ident(c)))
                .collect();
            format!("ROW({})::{}", cols.join(", "), qualified(relation))
        }
    }
}

fn call_sql(b: &mut Builder, call: &FunctionCall) -> String {
    let args: Vec<String> = call
        .args
        .iter()
        .map(|a| match a {
            CallArg::Named {
                name,
                pg_type,
                value,
                variadic,
            } => {
                let v = b.bind(value.clone(), pg_type);
                format!(
                    "{}{} := {v}",
                    if *variadic { "VARIADIC " } else { "" },
                    ident(name)
                )
            }
            CallArg::Positional { pg_type, value } => b.bind(Some(value.clone()), pg_type),
        })
        .collect();
    format!("{}({})", qualified(&call.function), args.join(", "))
}

fn lateral_alias(embed: &EmbedNode) -> String {
    ident(&format!("pgrst_{}", embed.node.alias))
}

fn render_fields(b: &mut Builder, node: &ReadNode, flatten: bool) -> String {
    let mut out = Vec::new();
    for f in &node.fields {
        let expr = match &f.expr {
            FieldExpr::Column { col, cast } => match cast {
                Some(c) => format!("({})::{c}", colref(b, col)),
                None => colref(b, col),
            },
            FieldExpr::Aggregate { func, arg, cast } => {
                let inner = match arg {
                    None => "*".to_string(),
                    Some((col, None)) => colref(b, col),
                    Some((col, Some(c))) => format!("({})::{c}", colref(b, col)),
                };
                let agg = format!("pg_catalog.{}({inner})", func.sql_name());
                match cast {
                    Some(c) => format!("({agg})::{c}"),
                    None => agg,
                }
            }
            // A grouped node groups by its embeds too: jsonb, which has equality.
            FieldExpr::EmbedObject { embed } if !node.group_by.is_empty() => {
                format!("{}.body::jsonb", lateral_alias(&node.embeds[*embed]))
            }
            FieldExpr::EmbedObject { embed } => {
                format!("{}.body", lateral_alias(&node.embeds[*embed]))
            }
            // Inside a to-many spread a to-many embed joins row by row: one object each.
            FieldExpr::EmbedArray { embed } if flatten => {
                format!("{}.body", lateral_alias(&node.embeds[*embed]))
            }
            FieldExpr::EmbedArray { embed } if !node.group_by.is_empty() => format!(
                "coalesce({}.body::jsonb, '[]'::jsonb)",
                lateral_alias(&node.embeds[*embed])
            ),
            FieldExpr::EmbedArray { embed } => format!(
                "coalesce({}.body, '[]'::json)",
                lateral_alias(&node.embeds[*embed])
            ),
            FieldExpr::RowMarker => "1".to_string(),
            FieldExpr::SpreadColumn { embed, name } => {
                format!("{}.{}", lateral_alias(&node.embeds[*embed]), ident(name))
            }
        };
        out.push(format!("{expr} AS {}", ident(&f.name)));
    }
    out.join(", ")
}

fn group_by(node: &ReadNode) -> String {
    if node.group_by.is_empty() {
        String::new()
    } else {
        format!(
            " GROUP BY {}",
            node.group_by
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// `SELECT fields FROM source AS alias <laterals> WHERE ... ORDER BY ... LIMIT ...`.
/// `join` is the condition tying an embedded node to its parent. `flatten`: the node is the
/// inside of a to-many spread, whose nested to-many spreads join row by row (the outer
/// spread aggregates them all into flat arrays, as PostgREST 13 does).
fn render_node(b: &mut Builder, node: &ReadNode, join: Option<String>, flatten: bool) -> String {
    let fields = render_fields(b, node, flatten);
    let from = source_sql(b, &node.source);
    let mut sql = format!("SELECT {fields} FROM {from} AS {}", ident(&node.alias));
    for embed in &node.embeds {
        if !embed.output {
            continue;
        }
        let join_cond = join_condition(embed, &node.alias);
        let to_many_spread = embed.spread && !embed.to_one;
        let child = render_node(b, &embed.node, join_cond, flatten || to_many_spread);
        let lat = lateral_alias(embed);
        if embed.spread && (embed.to_one || flatten) {
            sql.push_str(&format!(" LEFT JOIN LATERAL ({child}) AS {lat} ON TRUE"));
        } else if to_many_spread {
            // Each spread column becomes the array of its values over the related rows.
            let arrays: Vec<String> = embed
                .node
                .fields
                .iter()
                .map(|f| {
                    let name = ident(&f.name);
                    format!("coalesce(pg_catalog.json_agg(_e.{name}), '[]') AS {name}")
                })
                .collect();
            sql.push_str(&format!(
                " LEFT JOIN LATERAL (SELECT {} FROM ({child}) AS _e) AS {lat} ON TRUE",
                arrays.join(", ")
            ));
        } else if embed.to_one || flatten {
            sql.push_str(&format!(" LEFT JOIN LATERAL (SELECT pg_catalog.row_to_json(_e) AS body FROM ({child}) AS _e) AS {lat} ON TRUE"));
        } else {
            sql.push_str(&format!(" LEFT JOIN LATERAL (SELECT pg_catalog.json_agg(_e) AS body FROM ({child}) AS _e) AS {lat} ON TRUE"));
        }
    }
    sql.push_str(&where_clause(b, node, &node.conds, join));
    sql.push_str(&group_by(node));
    if !node.order.is_empty() {
        let terms: Vec<String> = node.order.iter().map(|o| order_term(b, o)).collect();
        sql.push_str(&format!(" ORDER BY {}", terms.join(", ")));
    }
    if let Some(l) = node.limit {
        let p = b.bind(Some(l.to_string()), "bigint");
        sql.push_str(&format!(" LIMIT {p}"));
    }
    if let Some(o) = node.offset {
        let p = b.bind(Some(o.to_string()), "bigint");
        sql.push_str(&format!(" OFFSET {p}"));
    }
    sql
}

fn order_term(b: &mut Builder, o: &crate::plan::ResolvedOrder) -> String {
    let expr = match &o.expr {
        OrderExpr::Column(c) => colref(b, c),
        OrderExpr::Related {
            embed_rel,
            parent_alias,
            column,
            source,
        } => {
            let conds: Vec<String> = embed_rel
                .columns
                .iter()
                .map(|(src, tgt)| {
                    format!(
                        "{}.{} = {}.{}",
                        ident(&column.alias),
                        ident(tgt),
                        ident(parent_alias),
                        ident(src)
                    )
                })
                .collect();
            let from = source_sql(b, source);
            let value = colref(b, column);
            let filter = if conds.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", conds.join(" AND "))
            };
            format!(
                "(SELECT {value} FROM {from} AS {}{filter} LIMIT 1)",
                ident(&column.alias),
            )
        }
    };
    let dir = match o.direction {
        Some(Direction::Desc) => " DESC",
        Some(Direction::Asc) => " ASC",
        None => "",
    };
    let nulls = match o.nulls {
        Some(Nulls::First) => " NULLS FIRST",
        Some(Nulls::Last) => " NULLS LAST",
        None => "",
    };
    format!("{expr}{dir}{nulls}")
}

/// The condition tying an embedded node's rows to its parent row (none for a computed
/// relationship: its function takes the parent row).
fn join_condition(embed: &EmbedNode, parent_alias: &str) -> Option<String> {
    let child = ident(&embed.node.alias);
    let parent = ident(parent_alias);
    Some(match &embed.relationship.cardinality {
        Cardinality::Computed { .. } => return None,
        Cardinality::ManyToMany {
            junction,
            source_columns,
            target_columns,
            ..
        } => {
            let mut conds: Vec<String> = source_columns
                .iter()
                .map(|(src, jc)| format!("pgrst_jn.{} = {parent}.{}", ident(jc), ident(src)))
                .collect();
            conds.extend(
                target_columns
                    .iter()
                    .map(|(jc, tgt)| format!("pgrst_jn.{} = {child}.{}", ident(jc), ident(tgt))),
            );
            format!(
                "EXISTS (SELECT 1 FROM {} AS pgrst_jn WHERE {})",
                qualified(junction),
                conds.join(" AND ")
            )
        }
        _ => embed
            .relationship
            .columns
            .iter()
            .map(|(src, tgt)| format!("{child}.{} = {parent}.{}", ident(tgt), ident(src)))
            .collect::<Vec<_>>()
            .join(" AND "),
    })
}

fn where_clause(b: &mut Builder, node: &ReadNode, conds: &[Cond], join: Option<String>) -> String {
    let mut parts: Vec<String> = join.into_iter().collect();
    parts.extend(conds.iter().map(|c| cond_sql(b, node, c)));
    if parts.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", parts.join(" AND "))
    }
}

fn cond_sql(b: &mut Builder, node: &ReadNode, cond: &Cond) -> String {
    match cond {
        Cond::False => "FALSE".to_string(),
        Cond::Filter(f) => filter_sql(b, f),
        Cond::Logic {
            op,
            negate,
            children,
        } => {
            let inner = if children.is_empty() {
                match op {
                    LogicOp::And => "TRUE".to_string(),
                    LogicOp::Or => "FALSE".to_string(),
                }
            } else {
                let sep = if *op == LogicOp::And { " AND " } else { " OR " };
                children
                    .iter()
                    .map(|c| cond_sql(b, node, c))
                    .collect::<Vec<_>>()
                    .join(sep)
            };
            if *negate {
                format!("NOT ({inner})")
            } else {
                format!("({inner})")
            }
        }
        Cond::EmbedExists { embed, present } => {
            let e = &node.embeds[*embed];
            let child = &e.node;
            let from = source_sql(b, &child.source);
            let join = join_condition(e, &node.alias);
            let exists = format!(
                "EXISTS (SELECT 1 FROM {from} AS {}{})",
                ident(&child.alias),
                where_clause(b, child, &child.conds, join)
            );
            if *present {
                exists
            } else {
                format!("NOT {exists}")
            }
        }
    }
}

fn colref(b: &mut Builder, c: &ColumnRef) -> String {
    let mut sql = String::with_capacity(c.alias.len() + c.column.len() + 5);
    match &c.computed {
        None => {
            push_ident(&mut sql, &c.alias);
            sql.push('.');
            push_ident(&mut sql, &c.column);
        }
        Some(call) => {
            let (function, row) = call.as_ref();
            sql = format!("{}({})", qualified(function), row_sql(row));
        }
    }
    if c.json_path.is_empty() {
        return sql;
    }
    for JsonStep { as_text, key } in &c.json_path {
        let op = if *as_text { "->>" } else { "->" };
        let k = match key {
            JsonKey::Field(f) => b.bind(Some(f.clone()), "text"),
            JsonKey::Index(i) => b.bind(Some(i.to_string()), "integer"),
        };
        sql = format!("{sql}{op}{k}");
    }
    format!("({sql})")
}

fn filter_sql(b: &mut Builder, f: &ResolvedFilter) -> String {
    let lhs = colref(b, &f.lhs);
    let text_lhs = if f.lhs_is_string {
        lhs.clone()
    } else {
        format!("{lhs}::text")
    };
    let expr = match &f.operation {
        Operation::Compare { op, value } if op.is_pattern() => {
            format!(
                "{text_lhs} {} {}",
                op.sql(),
                b.bind(Some(value.clone()), "text")
            )
        }
        Operation::Compare { op, value } => format!(
            "{lhs} {} {}",
            op.sql(),
            b.bind(Some(value.clone()), &f.value_type)
        ),
        Operation::Quantified {
            op,
            quantifier,
            values,
        } => {
            let q = match quantifier {
                Quantifier::Any => "ANY",
                Quantifier::All => "ALL",
            };
            if op.is_pattern() {
                format!(
                    "{text_lhs} {} {q}({})",
                    op.sql(),
                    b.bind(Some(values.clone()), "text[]")
                )
            } else {
                format!(
                    "{lhs} {} {q}({})",
                    op.sql(),
                    b.bind(Some(values.clone()), &array_of(&f.value_type))
                )
            }
        }
        Operation::In(values) => {
            let literal = crate::plan::pg_text_array(values);
            format!(
                "{lhs} = ANY({})",
                b.bind(Some(literal), &array_of(&f.value_type))
            )
        }
        Operation::Is(v) => {
            let kw = match v {
                IsValue::Null => "IS NULL",
                IsValue::NotNull => "IS NOT NULL",
                IsValue::True => "IS TRUE",
                IsValue::False => "IS FALSE",
                IsValue::Unknown => "IS UNKNOWN",
            };
            format!("{lhs} {kw}")
        }
        Operation::Fts {
            kind,
            config,
            query,
        } => {
            let cfg = |b: &mut Builder| {
                config
                    .as_ref()
                    .map(|c| format!("{}, ", b.bind(Some(c.clone()), "regconfig")))
            };
            let vector = if f.lhs_is_tsvector {
                lhs.clone()
            } else {
                let c = cfg(b).unwrap_or_default();
                format!("pg_catalog.to_tsvector({c}{lhs})")
            };
            let c = cfg(b).unwrap_or_default();
            let q = b.bind(Some(query.clone()), "text");
            let func = match kind {
                FtsKind::Fts => "to_tsquery",
                FtsKind::Plain => "plainto_tsquery",
                FtsKind::Phrase => "phraseto_tsquery",
                FtsKind::Websearch => "websearch_to_tsquery",
            };
            format!("{vector} @@ pg_catalog.{func}({c}{q})")
        }
    };
    if f.negate {
        format!("NOT ({expr})")
    } else {
        expr
    }
}

fn array_of(pg_type: &str) -> String {
    format!("{pg_type}[]")
}

// ----- writes -----

fn returning_sql(r: &Returning) -> String {
    match r {
        Returning::Minimal => " RETURNING 1".to_string(),
        Returning::HeadersOnly(pk) if !pk.is_empty() => {
            format!(
                " RETURNING {}",
                pk.iter()
                    .map(|c| format!("{TARGET}.{}", ident(c)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
        Returning::HeadersOnly(_) => " RETURNING 1".to_string(),
        Returning::Representation => format!(" RETURNING {TARGET}.*"),
    }
}

fn mutation_outer(
    b: &mut Builder,
    plan: &Plan,
    cte: &str,
    returning: &Returning,
    root: &ReadNode,
) -> String {
    let total = if plan.count.is_some() {
        "pg_catalog.count(_postgrest_t)"
    } else {
        "NULL"
    };
    match returning {
        Returning::Representation => {
            let shaped = render_node(b, root, None, false);
            outer(cte, total, &body_expr(plan), "NULL", &format!("({shaped})"))
        }
        Returning::HeadersOnly(pk) if !pk.is_empty() => {
            // `[[column, value], …]` of the first row: the response URL-encodes it.
            let parts: Vec<String> = pk
                .iter()
                .map(|c| {
                    format!(
                        "pg_catalog.json_build_array({}, _postgrest_t.{}::text)",
                        catalog_literal(c),
                        ident(c)
                    )
                })
                .collect();
            let location = format!(
                "(pg_catalog.array_agg(pg_catalog.json_build_array({})::text))[1]",
                parts.join(", ")
            );
            outer(cte, total, "''", &location, SOURCE_CTE)
        }
        _ => outer(cte, total, "''", "NULL", SOURCE_CTE),
    }
}

/// The name of the column a merge upsert's RETURNING adds: true for inserted rows.
const INSERTED_FLAG: &str = "_pgrst_inserted";

/// The transaction setting a merge upsert on a view counts its inserted rows in (as
/// PostgREST does): one up for each row offered, one down for each that updated instead.
const INSERTED_SETTING: &str = "pgrst.inserted";

/// `set_config` of [`INSERTED_SETTING`] one up (`+`) or down (`-`), as a condition that holds
/// (a WHERE clause that only counts).
fn count_inserted(op: char) -> String {
    let never = if op == '+' { "0" } else { "-1" };
    format!(
        "pg_catalog.set_config('{INSERTED_SETTING}', (coalesce(NULLIF(pg_catalog.current_setting('{INSERTED_SETTING}', true), '')::int, 0) {op} 1)::text, true) <> '{never}'"
    )
}

/// Appends the `inserted_rows` column (how many rows a merge upsert inserted rather than
/// updated) to a mutation's outer SELECT: rows whose `xmax` was 0 (tables), or the count in
/// [`INSERTED_SETTING`] (views), read once the statement's rows have all been written.
fn with_inserted_count(sql: String, has_xmax: bool) -> String {
    let extra = if has_xmax {
        format!(
            ", (SELECT pg_catalog.count(*) FROM {SOURCE_CTE} WHERE {SOURCE_CTE}.{INSERTED_FLAG})::bigint AS inserted_rows"
        )
    } else {
        format!(
            ", coalesce(NULLIF(pg_catalog.current_setting('{INSERTED_SETTING}', true), '')::bigint, 0) AS inserted_rows"
        )
    };
    match sql.rfind(" AS location") {
        Some(i) => {
            let at = i + " AS location".len();
            format!("{}{}{}", &sql[..at], extra, &sql[at..])
        }
        None => sql,
    }
}

fn record_def(cols: &[crate::plan::PayloadColumn]) -> String {
    cols.iter()
        .map(|c| format!("{} {}", ident(&c.name), c.pg_type))
        .collect::<Vec<_>>()
        .join(", ")
}

fn render_insert(b: &mut Builder, plan: &Plan, q: &InsertQuery) -> String {
    let table = qualified(&q.table);
    let body = b.bind(Some(q.body.clone()), "json");
    // A merge upsert on a view counts the rows offered (then those updated, below).
    let counted = !q.has_xmax && matches!(q.on_conflict, Some(OnConflict::DoUpdate { .. }));
    let offered = if counted {
        format!(" WHERE {}", count_inserted('+'))
    } else {
        String::new()
    };
    let mut dml = if q.columns.is_empty() {
        format!(
            "INSERT INTO {table} AS {TARGET} SELECT FROM pg_catalog.json_array_elements({body}){offered}"
        )
    } else {
        let names: Vec<String> = q.columns.iter().map(|c| ident(&c.name)).collect();
        let select = if q.missing_default {
            let exprs: Vec<String> = q
                .columns
                .iter()
                .map(|c| {
                    format!(
                        "CASE WHEN _j.value ? {} THEN _r.{} ELSE {} END",
                        catalog_literal(&c.name),
                        ident(&c.name),
                        c.default
                            .as_ref()
                            .map(|d| format!("({d})"))
                            .unwrap_or_else(|| "NULL".to_string())
                    )
                })
                .collect();
            format!(
                "SELECT {} FROM pg_catalog.jsonb_array_elements({body}::jsonb) AS _j, LATERAL pg_catalog.jsonb_to_record(_j.value) AS _r({}){offered}",
                exprs.join(", "),
                record_def(&q.columns)
            )
        } else {
            format!(
                "SELECT {} FROM pg_catalog.json_to_recordset({body}) AS _({}){offered}",
                names.join(", "),
                record_def(&q.columns)
            )
        };
        format!(
            "INSERT INTO {table} AS {TARGET} ({}) {select}",
            names.join(", ")
        )
    };
    match &q.on_conflict {
        None => {}
        Some(OnConflict::DoNothing { target }) => {
            dml.push_str(&format!(
                " ON CONFLICT ({}) DO NOTHING",
                target
                    .iter()
                    .map(|c| ident(c))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Some(OnConflict::DoUpdate { target, set }) => {
            let sets: Vec<String> = set
                .iter()
                .map(|c| format!("{} = EXCLUDED.{}", ident(c), ident(c)))
                .collect();
            dml.push_str(&format!(
                " ON CONFLICT ({}) DO UPDATE SET {}",
                target
                    .iter()
                    .map(|c| ident(c))
                    .collect::<Vec<_>>()
                    .join(", "),
                sets.join(", ")
            ));
            if counted {
                dml.push_str(&format!(" WHERE {}", count_inserted('-')));
            }
        }
    }
    dml.push_str(&returning_sql(&q.returning));
    if matches!(q.on_conflict, Some(OnConflict::DoUpdate { .. })) {
        if q.has_xmax {
            // A row the upsert updated has a non-zero xmax; one it inserted has xmax = 0.
            dml.push_str(&format!(", ({TARGET}.xmax = 0) AS {INSERTED_FLAG}"));
        }
        return with_inserted_count(
            mutation_outer(b, plan, &dml, &q.returning, &q.root),
            q.has_xmax,
        );
    }
    mutation_outer(b, plan, &dml, &q.returning, &q.root)
}

fn mutation_where(b: &mut Builder, root: &ReadNode, conds: &[Cond]) -> String {
    where_clause(b, root, conds, None)
}

/// The WHERE of a PATCH/DELETE; with `limit`, the rows are the first of the filtered,
/// ordered table, picked by ctid (the inner `pgrst_target` shadows the DML target).
fn limited_where(
    b: &mut Builder,
    root: &ReadNode,
    conds: &[Cond],
    table: &str,
    limited: Option<&crate::plan::MutationLimit>,
) -> String {
    let Some(l) = limited else {
        return mutation_where(b, root, conds);
    };
    let mut inner = format!("SELECT {TARGET}.ctid FROM {table} AS {TARGET}");
    inner.push_str(&mutation_where(b, root, conds));
    let terms: Vec<String> = l.order.iter().map(|o| order_term(b, o)).collect();
    inner.push_str(&format!(" ORDER BY {}", terms.join(", ")));
    if let Some(n) = l.limit {
        let p = b.bind(Some(n.to_string()), "bigint");
        inner.push_str(&format!(" LIMIT {p}"));
    }
    if let Some(n) = l.offset {
        let p = b.bind(Some(n.to_string()), "bigint");
        inner.push_str(&format!(" OFFSET {p}"));
    }
    format!(" WHERE {TARGET}.ctid = ANY(ARRAY({inner}))")
}

fn render_update(b: &mut Builder, plan: &Plan, q: &UpdateQuery) -> String {
    let table = qualified(&q.table);
    let dml = if q.columns.is_empty() {
        let cols = match q.returning {
            Returning::Minimal => "1".to_string(),
            _ => format!("{TARGET}.*"),
        };
        format!("SELECT {cols} FROM {table} AS {TARGET} WHERE FALSE")
    } else {
        let body = b.bind(Some(q.body.clone()), "json");
        let sets: Vec<String> = q
            .columns
            .iter()
            .map(|c| format!("{} = _.{}", ident(&c.name), ident(&c.name)))
            .collect();
        let mut s = format!(
            "UPDATE {table} AS {TARGET} SET {} FROM (SELECT * FROM pg_catalog.json_to_record({body}) AS _r({})) AS _",
            sets.join(", "),
            record_def(&q.columns)
        );
        s.push_str(&limited_where(
            b,
            &q.root,
            &q.conds,
            &table,
            q.limited.as_ref(),
        ));
        s.push_str(&returning_sql(&q.returning));
        s
    };
    mutation_outer(b, plan, &dml, &q.returning, &q.root)
}

fn render_delete(b: &mut Builder, plan: &Plan, q: &DeleteQuery) -> String {
    let table = qualified(&q.table);
    let mut dml = format!("DELETE FROM {table} AS {TARGET}");
    dml.push_str(&limited_where(
        b,
        &q.root,
        &q.conds,
        &table,
        q.limited.as_ref(),
    ));
    dml.push_str(&returning_sql(&q.returning));
    mutation_outer(b, plan, &dml, &q.returning, &q.root)
}

// ----- calls -----

fn render_call(b: &mut Builder, plan: &Plan, q: &CallQuery) -> String {
    let call = call_sql(b, &q.call);
    match q.shape {
        CallShape::Void => outer(&format!("SELECT {call}"), "NULL", "''", "NULL", SOURCE_CTE),
        CallShape::Scalar if plan.raw_media.is_some() => {
            // A media type handler's value is the body as is (bytea as hex, decoded later).
            let bytes = plan.raw_media.as_ref().is_some_and(|m| m.bytes);
            let value = if bytes {
                "pg_catalog.encode(_postgrest_t.pgrst_scalar::bytea, 'hex')"
            } else {
                "_postgrest_t.pgrst_scalar::text"
            };
            outer(
                &format!("SELECT {call} AS pgrst_scalar"),
                "NULL",
                &format!("coalesce(pg_catalog.string_agg({value}, ''), '')"),
                "NULL",
                SOURCE_CTE,
            )
        }
        // GeoJSON of a scalar result: PostGIS makes the row a Feature (a geometry) or
        // refuses it (22023 `geometry column is missing`), as for PostgREST.
        CallShape::Scalar if plan.media == ResponseMedia::GeoJson => outer(
            &format!("SELECT {call} AS pgrst_scalar"),
            if q.count_exact {
                "(SELECT pg_catalog.count(*) FROM pgrst_source)"
            } else {
                "NULL"
            },
            &body_expr(plan),
            "NULL",
            SOURCE_CTE,
        ),
        CallShape::Scalar => outer(
            &format!("SELECT {call} AS pgrst_scalar"),
            if q.count_exact {
                "(SELECT pg_catalog.count(*) FROM pgrst_source)"
            } else {
                "NULL"
            },
            "coalesce((pg_catalog.json_agg(_postgrest_t.pgrst_scalar) -> 0)::text, 'null')",
            "NULL",
            SOURCE_CTE,
        ),
        CallShape::SetOfScalars => {
            let mut page = format!("SELECT * FROM {SOURCE_CTE}");
            if let Some(l) = q.limit {
                page.push_str(&format!(" LIMIT {}", b.bind(Some(l.to_string()), "bigint")));
            }
            if let Some(o) = q.offset {
                page.push_str(&format!(
                    " OFFSET {}",
                    b.bind(Some(o.to_string()), "bigint")
                ));
            }
            let total = if q.count_exact {
                format!("(SELECT pg_catalog.count(*) FROM {SOURCE_CTE})")
            } else {
                "NULL".into()
            };
            let body = if plan.media == ResponseMedia::GeoJson {
                body_expr(plan)
            } else {
                "coalesce(pg_catalog.json_agg(_postgrest_t.pgrst_scalar), '[]')".to_string()
            };
            outer(
                &format!("SELECT pgrst_scalar FROM {call} AS pgrst_scalar"),
                &total,
                &body,
                "NULL",
                &format!("({page})"),
            )
        }
        CallShape::Rows | CallShape::SingleRow => {
            let cte = format!("SELECT * FROM {call}");
            let Some(root) = &q.root else {
                return outer(&cte, "NULL", &body_expr(plan), "NULL", SOURCE_CTE);
            };
            // The root reads the CTE so the function runs once, even with a count.
            let mut root = root.clone();
            root.source = Source::MutationResult;
            let shaped = render_node(b, &root, None, false);
            let total = match q.shape {
                CallShape::Rows if root.count_exact => count_subquery(b, &root),
                CallShape::SingleRow if root.count_exact => {
                    format!("(SELECT pg_catalog.count(*) FROM {SOURCE_CTE})")
                }
                _ => "NULL".into(),
            };
            let body = if q.shape == CallShape::SingleRow
                && !plan.media.is_singular()
                && plan.media != ResponseMedia::GeoJson
            {
                "coalesce((pg_catalog.json_agg(_postgrest_t) -> 0)::text, 'null')".to_string()
            } else {
                body_expr(plan)
            };
            outer(&cte, &total, &body, "NULL", &format!("({shaped})"))
        }
    }
}

#[cfg(test)]
mod tests;
