//! Stage 2: resolve an [`ApiRequest`] against the [`SchemaCache`] into a [`Plan`].

mod errors;
mod mutate;
mod read;
mod rpc;

use crate::error::RestError;
use crate::parse::{
    AggregateFn, ApiRequest, CountPref, Direction, Handling, JsonStep, LogicOp, Method, Nulls,
    Operation, ResponseMedia, ReturnPref, Target, TxPref,
};
use crate::render::Statement;
use crate::schema::{QualifiedName, Relationship, SchemaCache};
use crate::RestConfig;

pub use errors::relation_not_found;

/// What the request does; decides status codes and body handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Insert,
    Update,
    Delete,
    /// `PUT`: single-row upsert.
    SingleUpsert,
    Call(CallShape),
    /// `GET /`: the server answers with [`crate::openapi::openapi_document`].
    OpenApi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallShape {
    Void,
    /// One bare value.
    Scalar,
    /// `SETOF scalar`: an array of values.
    SetOfScalars,
    /// A single composite row: one object.
    SingleRow,
    /// `SETOF t` / `TABLE(...)`: rows, filterable like a table.
    Rows,
}

/// The resolved request, ready to render.
#[derive(Debug, Clone)]
pub struct Plan {
    pub action: Action,
    pub method: Method,
    /// Run in a READ ONLY transaction (GET/HEAD, and calls of stable/immutable functions).
    pub read_only: bool,
    /// A GET/HEAD call of a volatile function: a write inside fails with 25006 → 405.
    pub volatile_call_via_get: bool,
    pub media: ResponseMedia,
    pub count: Option<CountPref>,
    pub return_pref: ReturnPref,
    /// First row's position, for `Content-Range`.
    pub offset: i64,
    /// `Prefer: tx=rollback` honoured (config allows override).
    pub rollback_requested: bool,
    /// `max-affected` enforced (only with `handling=strict`).
    pub max_affected: Option<i64>,
    /// Values for `Preference-Applied`.
    pub preference_applied: Vec<String>,
    /// The request path and query, echoed as `Content-Location` on reads.
    pub content_location: String,
    /// The profile, echoed as `Content-Profile` when the client asked for one.
    pub profile: Option<String>,
    /// The relation/function path, for `Location` on `return=headers-only`.
    pub resource_path: String,
    /// Set when `count=planned|estimated` needs an `EXPLAIN (FORMAT JSON)` first;
    /// read its single text column with [`crate::render::explain_row_estimate`].
    pub count_statement: Option<Statement>,
    /// `count=estimated` uses the exact count up to this many rows (db-max-rows).
    pub estimate_threshold: Option<i64>,
    /// `Prefer: timezone=`: the server sets the `timezone` GUC for the transaction.
    pub timezone: Option<String>,
    /// A media type handler answers: the function's scalar result is the body, raw.
    pub raw_media: Option<RawMedia>,
    /// `Accept: application/vnd.pgrst.plan…`: run `EXPLAIN (options)` of the statement
    /// instead (rolled back) and answer with [`crate::response::respond_explain`].
    pub explain: Option<crate::parse::PlanMedia>,
    /// Reads of tables return the `response.*` settings too (a pre-request may set them).
    pub(crate) response_settings: bool,
    /// `application/geo+json`: PostGIS's `ST_AsGeoJSON(record)`, which turns each row into a
    /// Feature (from the schema cache).
    pub(crate) geojson_function: Option<QualifiedName>,
    pub(crate) query: Query,
}

/// The response of a function returning a domain named like a media type (PostgREST 12's
/// media type handlers): its value is the body, with that Content-Type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMedia {
    pub content_type: String,
    /// The value is bytea (the statement hex-encodes it; the response decodes it).
    pub bytes: bool,
}

// ----- the resolved query tree the renderer walks -----

#[derive(Debug, Clone)]
pub(crate) enum Query {
    Read(ReadNode),
    Insert(InsertQuery),
    Update(UpdateQuery),
    Delete(DeleteQuery),
    Call(CallQuery),
    None,
}

#[derive(Debug, Clone)]
pub(crate) enum Source {
    Relation(QualifiedName),
    /// The mutation CTE (`pgrst_source`) for representation.
    MutationResult,
    Function(FunctionCall),
    /// A computed relationship: `function(parent row)`.
    Computed {
        function: QualifiedName,
        row: RowExpr,
    },
}

/// A row passed to a function that takes a relation's row type (computed fields and
/// relationships).
#[derive(Debug, Clone)]
pub(crate) enum RowExpr {
    /// `"alias".*`: the alias reads the relation itself (or a function returning its rows).
    Whole(String),
    /// `ROW("alias"."c1", …)::"schema"."rel"`: the alias reads a CTE (a mutation's rows, a
    /// call's result) whose row type is anonymous.
    Cast {
        alias: String,
        relation: QualifiedName,
        columns: Vec<String>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct FunctionCall {
    pub function: QualifiedName,
    pub args: Vec<CallArg>,
}

#[derive(Debug, Clone)]
pub(crate) enum CallArg {
    Named {
        name: String,
        pg_type: String,
        value: Option<String>,
        variadic: bool,
    },
    /// The sole unnamed json/jsonb parameter: the whole body.
    Positional { pg_type: String, value: String },
}

#[derive(Debug, Clone)]
pub(crate) struct ColumnRef {
    pub alias: String,
    pub column: String,
    /// JSON path steps, the keys bound as parameters.
    pub json_path: Vec<JsonStep>,
    /// A computed field: `function(row)` is read instead of `alias.column`.
    pub computed: Option<Box<(QualifiedName, RowExpr)>>,
}

#[derive(Debug, Clone)]
pub(crate) enum FieldExpr {
    Column {
        col: ColumnRef,
        cast: Option<String>,
    },
    Aggregate {
        func: AggregateFn,
        arg: Option<(ColumnRef, Option<String>)>,
        cast: Option<String>,
    },
    /// A to-one embed: `row_to_json` body or null.
    EmbedObject { embed: usize },
    /// A to-many embed: `coalesce(body, '[]')`.
    EmbedArray { embed: usize },
    /// A field of a spread embed (`...rel(col)`), read from the lateral.
    SpreadColumn { embed: usize, name: String },
    /// `1` for each related row: what a `count()` hoisted out of a spread counts.
    RowMarker,
}

#[derive(Debug, Clone)]
pub(crate) struct OutputField {
    pub name: String,
    pub expr: FieldExpr,
}

/// A condition in a WHERE clause.
#[derive(Debug, Clone)]
pub(crate) enum Cond {
    Filter(ResolvedFilter),
    Logic {
        op: LogicOp,
        negate: bool,
        children: Vec<Cond>,
    },
    /// `rel!inner`, `rel=not.is.null` (present) and `rel=is.null` (absent).
    EmbedExists {
        embed: usize,
        present: bool,
    },
    /// Always false (`in.()`).
    False,
}

#[derive(Debug, Clone)]
pub(crate) struct ResolvedFilter {
    pub lhs: ColumnRef,
    /// The type a value compared with `lhs` is cast to.
    pub value_type: String,
    pub lhs_is_string: bool,
    pub lhs_is_tsvector: bool,
    pub negate: bool,
    pub operation: Operation,
}

#[derive(Debug, Clone)]
pub(crate) enum OrderExpr {
    Column(ColumnRef),
    /// `order=rel(col)` on a to-one embed: a scalar subquery.
    Related {
        embed_rel: Box<Relationship>,
        parent_alias: String,
        column: ColumnRef,
        /// What the subquery reads: the target relation, or a computed relationship's call.
        source: Box<Source>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct ResolvedOrder {
    pub expr: OrderExpr,
    pub direction: Option<Direction>,
    pub nulls: Option<Nulls>,
}

#[derive(Debug, Clone)]
pub(crate) struct EmbedNode {
    /// The name the request gives the embed (alias, else the relation as written).
    pub label: String,
    /// The relation as written in the select (`projects` in `p:projects(...)`).
    pub relation: String,
    pub relationship: Relationship,
    pub node: ReadNode,
    pub to_one: bool,
    /// `rel()`: used for filtering only, no output and no lateral join.
    pub output: bool,
    pub spread: bool,
    /// A to-one spread's aggregates, hoisted to the parent: (field index, function, cast).
    pub hoisted: Vec<(usize, AggregateFn, Option<String>)>,
}

#[derive(Debug, Clone)]
pub(crate) struct ReadNode {
    pub source: Source,
    pub alias: String,
    pub fields: Vec<OutputField>,
    pub embeds: Vec<EmbedNode>,
    pub conds: Vec<Cond>,
    pub order: Vec<ResolvedOrder>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
    /// Positions (1-based) of non-aggregate fields when any field aggregates.
    pub group_by: Vec<usize>,
    /// The row `count=exact` counts (the root only).
    pub count_exact: bool,
}

#[derive(Debug, Clone)]
pub(crate) enum Returning {
    /// `RETURNING 1`: no SELECT policy involved.
    Minimal,
    /// Primary-key columns for `Location`.
    HeadersOnly(Vec<String>),
    /// Whole rows shaped by the `root` read.
    Representation,
}

#[derive(Debug, Clone)]
pub(crate) struct PayloadColumn {
    pub name: String,
    pub pg_type: String,
    /// Catalog default expression for `missing=default`.
    pub default: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) enum OnConflict {
    DoNothing {
        target: Vec<String>,
    },
    DoUpdate {
        target: Vec<String>,
        set: Vec<String>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct InsertQuery {
    pub table: QualifiedName,
    pub columns: Vec<PayloadColumn>,
    /// The body normalised to a JSON array.
    pub body: String,
    pub missing_default: bool,
    pub on_conflict: Option<OnConflict>,
    /// A table's rows carry `xmax` (0 for a row the upsert inserted); a view's do not, so a
    /// merge upsert on a view counts what it inserts in a transaction setting instead.
    pub has_xmax: bool,
    pub returning: Returning,
    pub root: ReadNode,
}

#[derive(Debug, Clone)]
pub(crate) struct UpdateQuery {
    pub table: QualifiedName,
    pub columns: Vec<PayloadColumn>,
    /// The body as one JSON object.
    pub body: String,
    pub conds: Vec<Cond>,
    pub returning: Returning,
    pub root: ReadNode,
    pub limited: Option<MutationLimit>,
}

/// `limit`/`offset` on PATCH or DELETE: the rows are picked by ctid from the filtered,
/// ordered table (PostgREST's limited update/delete; tables only, explicit order required).
#[derive(Debug, Clone)]
pub(crate) struct MutationLimit {
    pub order: Vec<ResolvedOrder>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[derive(Debug, Clone)]
pub(crate) struct DeleteQuery {
    pub table: QualifiedName,
    pub conds: Vec<Cond>,
    pub returning: Returning,
    pub root: ReadNode,
    pub limited: Option<MutationLimit>,
}

#[derive(Debug, Clone)]
pub(crate) struct CallQuery {
    pub call: FunctionCall,
    pub shape: CallShape,
    /// Shapes `Rows` and `SingleRow`: the read over the function's result.
    pub root: Option<ReadNode>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
    pub count_exact: bool,
}

/// A timezone name or offset PostgreSQL may know (`Europe/Paris`, `UTC`, `+02:00`); anything
/// else is ignored like an unknown preference. PostgreSQL has the last word (22023 → 400).
fn plausible_timezone(tz: &str) -> bool {
    !tz.is_empty()
        && tz.len() <= 64
        && tz
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '+' | '-' | ':'))
}

/// Resolves names, checks the request against the schema and picks the SQL shape.
pub fn plan(req: &ApiRequest, cache: &SchemaCache, config: &RestConfig) -> Result<Plan, RestError> {
    let return_pref = req.prefer.return_.unwrap_or(ReturnPref::Minimal);
    let mut applied = Vec::new();
    let tx_honoured = config.tx_end_allow_override && req.prefer.tx.is_some();
    let strict = req.prefer.handling == Some(Handling::Strict);
    // `application/geo+json` needs PostGIS: without it, the next acceptable media type
    // answers, or PGRST107 once the target is known (PostgREST keeps GeoJSON out of its
    // media handlers when PostGIS is missing; v12 itself ran the query and failed with
    // 42883).
    let mut geojson_error = None;
    let (media, explain) = match (&req.accept_without_geojson, &cache.geojson_function) {
        (Some(Ok((m, e))), None) => (*m, *e),
        (Some(Err(e)), None) => {
            geojson_error = Some(e.clone());
            (ResponseMedia::Json { strip_nulls: false }, None)
        }
        _ => (req.accept, req.explain),
    };
    let mut plan = Plan {
        action: Action::Read,
        method: req.method,
        read_only: req.method.is_read(),
        volatile_call_via_get: false,
        media,
        count: req.prefer.count,
        return_pref,
        offset: 0,
        rollback_requested: tx_honoured && req.prefer.tx == Some(TxPref::Rollback),
        max_affected: if strict {
            req.prefer.max_affected
        } else {
            None
        },
        preference_applied: Vec::new(),
        content_location: content_location(req),
        profile: req.schema_explicit.then(|| req.schema.clone()),
        resource_path: String::new(),
        count_statement: None,
        estimate_threshold: config.max_rows,
        timezone: None,
        raw_media: None,
        explain,
        response_settings: config.pre_request,
        geojson_function: (media == ResponseMedia::GeoJson)
            .then(|| cache.geojson_function.clone())
            .flatten(),
        query: Query::None,
    };
    let mut ctx = read::Ctx {
        cache,
        config,
        req,
        next_alias: 0,
    };
    match &req.target {
        Target::Root => {
            plan.action = Action::OpenApi;
        }
        Target::Relation(name) => {
            let table = cache
                .table(&req.schema, name)
                .ok_or_else(|| relation_not_found(&req.schema, name))?;
            plan.resource_path = format!("/{name}");
            match req.method {
                Method::Get | Method::Head => {
                    let (root, offset) = read::plan_root_read(&mut ctx, table)?;
                    plan.offset = offset;
                    plan.query = Query::Read(root);
                }
                Method::Post => {
                    plan.action = Action::Insert;
                    plan.query = Query::Insert(mutate::plan_insert(&mut ctx, table, false)?);
                }
                Method::Put => {
                    plan.action = Action::SingleUpsert;
                    plan.query = Query::Insert(mutate::plan_insert(&mut ctx, table, true)?);
                }
                Method::Patch => {
                    plan.action = Action::Update;
                    plan.query = Query::Update(mutate::plan_update(&mut ctx, table)?);
                }
                Method::Delete => {
                    plan.action = Action::Delete;
                    plan.query = Query::Delete(mutate::plan_delete(&mut ctx, table)?);
                }
            }
        }
        Target::Rpc(name) => {
            let planned = rpc::plan_call(&mut ctx, name)?;
            // max-affected counts the rows a function returns: it needs SETOF or TABLE (v13).
            if plan.max_affected.is_some()
                && !matches!(
                    planned.query.shape,
                    CallShape::Rows | CallShape::SetOfScalars
                )
            {
                return Err(RestError::new(
                    crate::error::ErrorKind::MaxAffectedNotSetReturning,
                    "Function must return SETOF or TABLE when max-affected preference is used with handling=strict",
                ));
            }
            plan.resource_path = format!("/rpc/{name}");
            plan.action = Action::Call(planned.query.shape);
            plan.offset = planned.offset;
            if !planned.volatile {
                plan.read_only = true;
            } else if req.method.is_read() {
                plan.volatile_call_via_get = true;
            }
            plan.raw_media = planned.raw_media.filter(|_| plan.explain.is_none());
            plan.query = Query::Call(planned.query);
        }
    }
    // No media type answers the Accept header: PGRST107, once the target is known.
    if plan.raw_media.is_none() {
        if let Some(e) = req.accept_error.as_ref().or(geojson_error.as_ref()) {
            return Err(e.clone());
        }
    }
    if matches!(
        plan.action,
        Action::Insert | Action::Update | Action::Delete | Action::SingleUpsert
    ) {
        if let Some(r) = req.prefer.return_ {
            applied.push(format!(
                "return={}",
                match r {
                    ReturnPref::Minimal => "minimal",
                    ReturnPref::Representation => "representation",
                    ReturnPref::HeadersOnly => "headers-only",
                }
            ));
        }
        // The resolution applies when there is a conflict target (a primary key or
        // `on_conflict`); otherwise the insert is a plain one and says so.
        let upserts = matches!(&plan.query, Query::Insert(q) if q.on_conflict.is_some());
        if plan.action == Action::Insert {
            if let Some(r) = req.prefer.resolution.filter(|_| upserts) {
                applied.push(format!(
                    "resolution={}",
                    match r {
                        crate::parse::Resolution::MergeDuplicates => "merge-duplicates",
                        crate::parse::Resolution::IgnoreDuplicates => "ignore-duplicates",
                    }
                ));
            }
            if req.prefer.missing_default {
                applied.push("missing=default".to_string());
            }
        }
    }
    if let Some(c) = req.prefer.count {
        applied.push(format!(
            "count={}",
            match c {
                CountPref::Exact => "exact",
                CountPref::Planned => "planned",
                CountPref::Estimated => "estimated",
            }
        ));
    }
    if tx_honoured {
        applied.push(format!(
            "tx={}",
            if plan.rollback_requested {
                "rollback"
            } else {
                "commit"
            }
        ));
    }
    if strict {
        applied.push("handling=strict".to_string());
        if let Some(n) = plan.max_affected {
            applied.push(format!("max-affected={n}"));
        }
    }
    if req.prefer.params_single_object && matches!(plan.action, Action::Call(_)) {
        applied.push("params=single-object".to_string());
    }
    if let Some(tz) = req
        .prefer
        .timezone
        .as_deref()
        .filter(|tz| plausible_timezone(tz))
    {
        plan.timezone = Some(tz.to_string());
        applied.push(format!("timezone={tz}"));
    }
    plan.preference_applied = applied;
    if matches!(plan.count, Some(CountPref::Planned | CountPref::Estimated))
        && plan.action != Action::Call(CallShape::Void)
        && plan.explain.is_none()
    {
        plan.count_statement = crate::render::render_explain(&plan);
    }
    Ok(plan)
}

fn content_location(req: &ApiRequest) -> String {
    if req.raw_query.is_empty() {
        req.raw_path.clone()
    } else {
        format!("{}?{}", req.raw_path, req.raw_query)
    }
}

#[cfg(test)]
mod tests;

/// A PostgreSQL array literal of text elements, every element quoted.
pub(crate) fn pg_text_array(values: &[String]) -> String {
    let items: Vec<serde_json::Value> = values
        .iter()
        .map(|v| serde_json::Value::String(v.clone()))
        .collect();
    rpc::pg_array_literal(&items)
}
