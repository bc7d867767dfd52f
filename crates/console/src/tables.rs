//! The Tables page: exposed tables and views with row counts, each one's columns, keys and
//! foreign keys; rows browsed, filtered, sorted and paged (keyset on the primary key) and
//! edited through `/rest/v1` as service_role, or read as `anon` / a chosen user ("view as").
use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{enc, Viewer};
use crate::error::{ConsoleError, Result};
use crate::session::Admin;
use crate::{ConsoleState, Inner};

/// Exact counts below this many (estimated) rows; the planner's estimate above.
const EXACT_COUNT_BELOW: f32 = 100_000.0;

fn service_settings() -> agencyflow_db::TxSettings {
    agencyflow_db::TxSettings::new("service_role", r#"{"role":"service_role"}"#)
        .read_only(true)
        .guc("statement_timeout", "5s")
}

/// `GET /console/api/tables`: every table and view of the exposed schemas, with row counts.
pub async fn list(State(state): State<ConsoleState>, _admin: Admin) -> Result<Json<Value>> {
    let st = &state.0;
    let schemas = (st.schemas)();
    let mut tx = st.db.begin(&service_settings()).await?;
    let rows = tx
        .query(
            "select n.nspname, c.relname,
                    case c.relkind when 'v' then 'view' when 'm' then 'materialized view' when 'f' then 'foreign table' else 'table' end,
                    c.relrowsecurity, c.reltuples, obj_description(c.oid, 'pg_class')
               from pg_class c join pg_namespace n on n.oid = c.relnamespace
              where n.nspname = any($1) and c.relkind in ('r', 'p', 'v', 'm', 'f')
              order by array_position($1, n.nspname::text), c.relname",
            &[&schemas],
        )
        .await?;
    drop(tx);
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let (schema, name): (String, String) = (r.get(0), r.get(1));
        let kind: String = r.get(2);
        let estimate: f32 = r.get(4);
        let (count, exact, capped) = if kind == "table" && estimate >= EXACT_COUNT_BELOW {
            (Some(estimate as i64), false, false)
        } else {
            // Counted up to the bound (a view over a big table costs at most that much), in
            // its own transaction: a view that fails or times out costs only its count.
            let sql = format!(
                "select count(*) from (select 1 from {}.{} limit {}) s",
                quote_ident(&schema),
                quote_ident(&name),
                EXACT_COUNT_BELOW as i64 + 1
            );
            let mut tx = st.db.begin(&service_settings()).await?;
            match tx.query(&sql, &[]).await {
                Ok(rows) => {
                    let n = rows[0].get::<_, i64>(0);
                    let capped = n > EXACT_COUNT_BELOW as i64;
                    (Some(n.min(EXACT_COUNT_BELOW as i64)), !capped, capped)
                }
                Err(_) => (None, false, false),
            }
        };
        out.push(json!({
            "schema": schema, "name": name, "kind": kind, "rls": r.get::<_, bool>(3),
            "count": count, "exact": exact, "capped": capped, "comment": r.get::<_, Option<String>>(5),
        }));
    }
    Ok(Json(json!({ "tables": out, "schemas": schemas })))
}

pub use agencyflow_db::quote_ident;

/// A relation's shape, as the Tables page needs it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Meta {
    pub schema: String,
    pub name: String,
    pub kind: String,
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
    pub foreign_keys: Vec<ForeignKey>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Column {
    pub name: String,
    /// `format_type` (e.g. `timestamp with time zone`, `vector(768)`).
    pub r#type: String,
    /// `b` base, `e` enum, `d` domain, `c` composite, `r` range.
    pub typtype: String,
    pub category: String,
    pub nullable: bool,
    pub has_default: bool,
    pub generated: bool,
    pub enum_values: Option<Vec<String>>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ForeignKey {
    pub columns: Vec<String>,
    pub ref_schema: String,
    pub ref_table: String,
    pub ref_columns: Vec<String>,
}

impl Inner {
    /// The relation's shape; 404 unless it is a table or view of an exposed schema.
    pub async fn meta(&self, schema: &str, name: &str) -> Result<Meta> {
        if !(self.schemas)().iter().any(|s| s == schema) {
            return Err(ConsoleError::not_found(format!(
                "schema {schema} is not exposed (PGRST_DB_SCHEMAS)"
            )));
        }
        let mut tx = self.db.begin(&service_settings()).await?;
        let rel = tx
            .query(
                "select c.oid, case c.relkind when 'v' then 'view' when 'm' then 'materialized view' when 'f' then 'foreign table' else 'table' end
                   from pg_class c join pg_namespace n on n.oid = c.relnamespace
                  where n.nspname = $1 and c.relname = $2 and c.relkind in ('r', 'p', 'v', 'm', 'f')",
                &[&schema, &name],
            )
            .await?;
        let Some(rel) = rel.first() else {
            return Err(ConsoleError::not_found(format!(
                "no table or view {schema}.{name}"
            )));
        };
        let oid: agencyflow_db::tokio_postgres::types::Oid = rel.get(0);
        let kind: String = rel.get(1);
        let cols = tx
            .query(
                "select a.attname, format_type(a.atttypid, a.atttypmod), t.typtype::text, t.typcategory::text, not a.attnotnull,
                        a.atthasdef or a.attidentity <> '' or a.attgenerated <> '', a.attgenerated <> '' or a.attidentity = 'a',
                        (select array_agg(e.enumlabel::text order by e.enumsortorder) from pg_enum e
                          where e.enumtypid = coalesce(nullif(t.typbasetype, 0), a.atttypid))
                   from pg_attribute a join pg_type t on t.oid = a.atttypid
                  where a.attrelid = $1 and a.attnum > 0 and not a.attisdropped order by a.attnum",
                &[&oid],
            )
            .await?;
        let columns = cols
            .iter()
            .map(|r| Column {
                name: r.get(0),
                r#type: r.get(1),
                typtype: r.get(2),
                category: r.get(3),
                nullable: r.get(4),
                has_default: r.get(5),
                generated: r.get(6),
                enum_values: r.get(7),
            })
            .collect();
        let pk = tx
            .query(
                "select array_agg(a.attname::text order by k.ord)
                   from pg_index i, unnest(i.indkey) with ordinality k(attnum, ord), pg_attribute a
                  where i.indrelid = $1 and i.indisprimary and a.attrelid = i.indrelid and a.attnum = k.attnum",
                &[&oid],
            )
            .await?;
        let primary_key: Vec<String> = pk
            .first()
            .and_then(|r| r.get::<_, Option<Vec<String>>>(0))
            .unwrap_or_default();
        let fks = tx
            .query(
                "select (select array_agg(a.attname::text order by k.ord) from unnest(c.conkey) with ordinality k(n, ord)
                          join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.n),
                        rn.nspname::text, rc.relname::text,
                        (select array_agg(a.attname::text order by k.ord) from unnest(c.confkey) with ordinality k(n, ord)
                          join pg_attribute a on a.attrelid = c.confrelid and a.attnum = k.n)
                   from pg_constraint c join pg_class rc on rc.oid = c.confrelid join pg_namespace rn on rn.oid = rc.relnamespace
                  where c.conrelid = $1 and c.contype = 'f' order by c.conname",
                &[&oid],
            )
            .await?;
        let foreign_keys = fks
            .iter()
            .map(|r| ForeignKey {
                columns: r.get(0),
                ref_schema: r.get(1),
                ref_table: r.get(2),
                ref_columns: r.get(3),
            })
            .collect();
        Ok(Meta {
            schema: schema.into(),
            name: name.into(),
            kind,
            columns,
            primary_key,
            foreign_keys,
        })
    }
}

/// `GET /console/api/tables/{schema}/{name}`.
pub async fn meta(
    State(state): State<ConsoleState>,
    _admin: Admin,
    Path((schema, name)): Path<(String, String)>,
) -> Result<Json<Meta>> {
    Ok(Json(state.0.meta(&schema, &name).await?))
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    Like,
    Ilike,
    Is,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Neq => "neq",
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::Like => "like",
            Op::Ilike => "ilike",
            Op::Is => "is",
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct FilterSpec {
    pub column: String,
    pub op: Op,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Deserialize)]
pub struct OrderSpec {
    pub column: String,
    #[serde(default)]
    pub desc: bool,
}

/// What the page asks for (the `q` query parameter, JSON).
#[derive(Debug, Default, Deserialize)]
pub struct RowsSpec {
    #[serde(default)]
    pub filters: Vec<FilterSpec>,
    pub order: Option<OrderSpec>,
    /// Keyset cursor: the last row's `[sort value (or null), primary key values...]`.
    pub after: Option<Vec<Value>>,
    /// Without a primary key (views), pages by offset.
    pub offset: Option<u64>,
    pub limit: Option<u32>,
    #[serde(rename = "as", default)]
    pub viewer: String,
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A value inside an `or=(...)` tree, double-quoted.
fn quoted(v: &Value) -> String {
    format!(
        "\"{}\"",
        value_text(v).replace('\\', "\\\\").replace('"', "\\\"")
    )
}

/// The PostgREST query string for a page: filters on known columns, a total order (the sort
/// column, then the primary key), the keyset cursor, one row more than the page to tell
/// whether another page follows.
pub fn rest_query(meta: &Meta, spec: &RowsSpec, page: u32) -> Result<String> {
    let known = |c: &str| -> Result<()> {
        meta.columns
            .iter()
            .any(|col| col.name == c)
            .then_some(())
            .ok_or_else(|| ConsoleError::bad_request(format!("no column {c} in {}", meta.name)))
    };
    let mut q = vec!["select=*".to_string()];
    for f in &spec.filters {
        known(&f.column)?;
        let value = match f.op {
            Op::Is => match f.value.to_ascii_lowercase().as_str() {
                v @ ("null" | "true" | "false" | "unknown") => v.to_string(),
                _ => {
                    return Err(ConsoleError::bad_request(
                        "`is` takes null, true, false or unknown",
                    ))
                }
            },
            Op::Like | Op::Ilike if !f.value.contains(['*', '%']) => format!("*{}*", f.value),
            _ => f.value.clone(),
        };
        q.push(format!(
            "{}={}.{}",
            enc(&f.column),
            f.op.as_str(),
            enc(&value)
        ));
    }
    let pk: Vec<&str> = meta.primary_key.iter().map(String::as_str).collect();
    let (sort, desc) = match &spec.order {
        Some(o) => {
            known(&o.column)?;
            (Some(o.column.as_str()), o.desc)
        }
        None => (None, false),
    };
    let dir = if desc { "desc" } else { "asc" };
    // The total order: the sort column, then the key's other columns.
    let mut order = Vec::new();
    if let Some(s) = sort {
        order.push(format!("{}.{dir}.nullslast", enc(s)));
    }
    for p in pk.iter().filter(|p| Some(**p) != sort) {
        order.push(format!("{}.asc", enc(p)));
    }
    if !order.is_empty() {
        q.push(format!("order={}", order.join(",")));
    }
    if let Some(after) = &spec.after {
        q.extend(keyset(&pk, sort, desc, after)?);
    }
    if let Some(o) = spec.offset.filter(|o| *o > 0) {
        q.push(format!("offset={o}"));
    }
    q.push(format!("limit={}", page + 1));
    Ok(q.join("&"))
}

/// The filters of a keyset page: the rows after `after` (`[sort value, key values...]`) in
/// the order (sort column, then the primary key's other columns), as PostgREST logic trees:
/// the row-value comparison `(a, b) > (x, y)` written out as `a > x or (a = x and b > y)`,
/// with `a >= x` beside it so that an index on `(a, b)` serves the page by a range scan (page
/// 10,000 costs what page 1 does). A nullable sort column has its NULLs last.
fn keyset(pk: &[&str], sort: Option<&str>, desc: bool, after: &[Value]) -> Result<Vec<String>> {
    if pk.is_empty() {
        return Err(ConsoleError::bad_request(
            "keyset paging needs a primary key: page by offset",
        ));
    }
    if after.len() != pk.len() + 1 {
        return Err(ConsoleError::bad_request(format!(
            "`after` is [sort value, {}]",
            pk.join(", ")
        )));
    }
    fn key_value<'a>(pk: &[&str], after: &'a [Value], p: &str) -> &'a Value {
        &after[1 + pk.iter().position(|k| *k == p).unwrap_or(0)]
    }
    // (column, comparison, value) in order; the key's columns ascending.
    let mut cols: Vec<(&str, &str, &Value)> = Vec::new();
    let sort_in_key = sort.is_some_and(|s| pk.contains(&s));
    let cmp = if desc { "lt" } else { "gt" };
    if let Some(s) = sort.filter(|_| sort_in_key) {
        cols.push((s, cmp, key_value(pk, after, s)));
    }
    for p in pk.iter().copied().filter(|p| Some(*p) != sort) {
        cols.push((p, "gt", key_value(pk, after, p)));
    }
    // a.gt.x | or(a.gt.x,and(a.eq.x,REST))
    fn lex(cols: &[(&str, &str, &Value)]) -> String {
        let (c, op, v) = cols[0];
        if cols.len() == 1 {
            return format!("{c}.{op}.{}", quoted(v));
        }
        format!(
            "or({c}.{op}.{v},and({c}.eq.{v},{rest}))",
            v = quoted(v),
            rest = lex(&cols[1..])
        )
    }
    let top = |expr: String| -> String {
        // A tree's outermost operator becomes the parameter's name.
        match expr.split_once('(') {
            Some((op @ ("or" | "and"), rest)) if expr.ends_with(')') => {
                format!("{op}={}", enc(&format!("({}", rest)))
            }
            _ => {
                let (c, rest) = expr.split_once('.').unwrap_or((&expr, ""));
                format!("{}={}", enc(c), enc(rest))
            }
        }
    };
    let mut out = Vec::new();
    match sort.filter(|_| !sort_in_key) {
        None if cols.len() == 1 => {
            let (c, op, v) = cols[0];
            out.push(format!("{}={op}.{}", enc(c), enc(&value_text(v))));
        }
        None => {
            // The leading column's bound: what an index range scan starts from.
            let (c, _, v) = cols[0];
            let bound = if cols[0].1 == "lt" { "lte" } else { "gte" };
            out.push(format!("{}={bound}.{}", enc(c), enc(&value_text(v))));
            out.push(top(lex(&cols)));
        }
        Some(s) => {
            let sv = &after[0];
            if sv.is_null() {
                out.push(format!("{}=is.null", enc(s)));
                out.push(top(lex(&cols)));
            } else {
                out.push(format!(
                    "or={}",
                    enc(&format!(
                        "({s}.{cmp}.{sv},and({s}.eq.{sv},{rest}),{s}.is.null)",
                        sv = quoted(sv),
                        rest = lex(&cols)
                    ))
                ));
            }
        }
    }
    Ok(out)
}

fn rest_path(meta: &Meta) -> String {
    format!("/rest/v1/{}", enc(&meta.name))
}

fn profile_headers(meta: &Meta, write: bool) -> Vec<(&'static str, String)> {
    vec![(
        if write {
            "content-profile"
        } else {
            "accept-profile"
        },
        meta.schema.clone(),
    )]
}

fn parse_spec(q: &HashMap<String, String>) -> Result<RowsSpec> {
    match q.get("q").filter(|s| !s.is_empty()) {
        Some(s) => serde_json::from_str(s)
            .map_err(|e| ConsoleError::bad_request(format!("bad rows query: {e}"))),
        None => Ok(RowsSpec::default()),
    }
}

/// `GET /console/api/tables/{schema}/{name}/rows?q={filters, order, after, as}`: one page
/// of rows read through `/rest/v1` as the chosen viewer.
pub async fn rows(
    State(state): State<ConsoleState>,
    admin: Admin,
    Path((schema, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>> {
    let st = &state.0;
    let spec = parse_spec(&q)?;
    let viewer: Viewer = spec.viewer.parse()?;
    let meta = st.meta(&schema, &name).await?;
    let page = spec.limit.unwrap_or(100).clamp(1, 500);
    let query = rest_query(&meta, &spec, page)?;
    let started = std::time::Instant::now();
    let r = st
        .call(
            Method::GET,
            &format!("{}?{query}", rest_path(&meta)),
            &viewer,
            &profile_headers(&meta, false),
            Body::empty(),
        )
        .await?
        .ok()?;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut rows = match r.json()? {
        Value::Array(a) => a,
        _ => Vec::new(),
    };
    let more = rows.len() > page as usize;
    rows.truncate(page as usize);
    if viewer != Viewer::ServiceRole {
        st.audit(
            Some(&admin),
            &admin.client,
            None,
            "tables.view_as",
            Some(&format!("{schema}.{name}")),
            json!({"as": viewer.label(), "rows": rows.len()}),
        )
        .await;
    }
    Ok(Json(json!({
        "rows": rows, "more": more, "as": viewer.label(), "elapsed_ms": elapsed_ms,
        "primary_key": meta.primary_key,
    })))
}

/// The `?pk=eq.value` filters naming one row by its primary key.
fn key_filter(meta: &Meta, key: &serde_json::Map<String, Value>) -> Result<String> {
    if meta.primary_key.is_empty() {
        return Err(ConsoleError::bad_request(format!(
            "{} has no primary key: edit it from the SQL page",
            meta.name
        )));
    }
    meta.primary_key
        .iter()
        .map(|k| {
            let v = key
                .get(k)
                .filter(|v| !v.is_null())
                .ok_or_else(|| ConsoleError::bad_request(format!("the row's key lacks {k}")))?;
            Ok(format!("{}=eq.{}", enc(k), enc(&value_text(v))))
        })
        .collect::<Result<Vec<_>>>()
        .map(|v| v.join("&"))
}

#[derive(Deserialize)]
pub struct Write {
    #[serde(default)]
    key: serde_json::Map<String, Value>,
    #[serde(default)]
    values: serde_json::Map<String, Value>,
}

async fn write(
    st: &Inner,
    admin: &Admin,
    method: Method,
    schema: &str,
    name: &str,
    w: Write,
) -> Result<Json<Value>> {
    let meta = st.meta(schema, name).await?;
    for c in w.values.keys() {
        if !meta.columns.iter().any(|col| &col.name == c) {
            return Err(ConsoleError::bad_request(format!(
                "no column {c} in {name}"
            )));
        }
    }
    let (uri, action) = match method {
        Method::POST => (rest_path(&meta), "tables.insert"),
        Method::PATCH => (
            format!("{}?{}", rest_path(&meta), key_filter(&meta, &w.key)?),
            "tables.update",
        ),
        _ => (
            format!("{}?{}", rest_path(&meta), key_filter(&meta, &w.key)?),
            "tables.delete",
        ),
    };
    let mut headers = profile_headers(&meta, true);
    headers.push(("prefer", "return=representation".into()));
    headers.push(("content-type", "application/json".into()));
    let body = if method == Method::DELETE {
        Body::empty()
    } else {
        Body::from(Value::Object(w.values.clone()).to_string())
    };
    let r = st
        .call(method.clone(), &uri, &Viewer::ServiceRole, &headers, body)
        .await?
        .ok()?;
    let rows = r.json()?;
    let n = rows.as_array().map_or(0, Vec::len);
    if method != Method::POST && n == 0 {
        return Err(ConsoleError::new(
            StatusCode::NOT_FOUND,
            "no row has this key any more (deleted meanwhile?)",
        ));
    }
    let columns: Vec<&String> = w.values.keys().collect();
    st.audit(
        Some(admin),
        &admin.client,
        None,
        action,
        Some(&format!("{schema}.{name}")),
        json!({"key": w.key, "columns": columns, "rows": n}),
    )
    .await;
    Ok(Json(json!({ "rows": rows })))
}

pub async fn insert(
    State(state): State<ConsoleState>,
    admin: Admin,
    Path((schema, name)): Path<(String, String)>,
    Json(w): Json<Write>,
) -> Result<Json<Value>> {
    write(&state.0, &admin, Method::POST, &schema, &name, w).await
}

pub async fn update(
    State(state): State<ConsoleState>,
    admin: Admin,
    Path((schema, name)): Path<(String, String)>,
    Json(w): Json<Write>,
) -> Result<Json<Value>> {
    if w.values.is_empty() {
        return Err(ConsoleError::bad_request("nothing to change"));
    }
    write(&state.0, &admin, Method::PATCH, &schema, &name, w).await
}

pub async fn delete(
    State(state): State<ConsoleState>,
    admin: Admin,
    Path((schema, name)): Path<(String, String)>,
    Json(w): Json<Write>,
) -> Result<Json<Value>> {
    write(&state.0, &admin, Method::DELETE, &schema, &name, w).await
}

/// `GET /console/api/tables/{schema}/{name}/csv?q=...`: the filtered rows as CSV (as the
/// chosen viewer), page after page along the primary key up to 100,000 rows.
pub async fn csv(
    State(state): State<ConsoleState>,
    admin: Admin,
    Path((schema, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let st = &state.0;
    let mut spec = parse_spec(&q)?;
    let viewer: Viewer = spec.viewer.parse()?;
    let meta = st.meta(&schema, &name).await?;
    spec.after = None;
    spec.offset = None;
    // Keyset along the primary key (one sort order the cursor can follow).
    let pk = meta.primary_key.clone();
    if !pk.is_empty() {
        spec.order = None;
    }
    let page = 1000u32;
    let mut out = String::new();
    let mut total = 0usize;
    loop {
        let query = rest_query(&meta, &spec, page)?;
        let r = st
            .call(
                Method::GET,
                &format!("{}?{query}", rest_path(&meta)),
                &viewer,
                &profile_headers(&meta, false),
                Body::empty(),
            )
            .await?
            .ok()?;
        let rows = match r.json()? {
            Value::Array(a) => a,
            _ => Vec::new(),
        };
        let more = rows.len() > page as usize;
        let rows = &rows[..rows.len().min(page as usize)];
        if out.is_empty() {
            let header: Vec<String> = meta
                .columns
                .iter()
                .map(|c| csv_cell(&Value::String(c.name.clone())))
                .collect();
            out.push_str(&header.join(","));
            out.push_str("\r\n");
        }
        for row in rows {
            let cells: Vec<String> = meta
                .columns
                .iter()
                .map(|c| csv_cell(row.get(&c.name).unwrap_or(&Value::Null)))
                .collect();
            out.push_str(&cells.join(","));
            out.push_str("\r\n");
        }
        total += rows.len();
        match rows.last() {
            Some(last) if !pk.is_empty() && more && total < 100_000 => {
                let mut after = vec![Value::Null];
                after.extend(
                    pk.iter()
                        .map(|p| last.get(p).cloned().unwrap_or(Value::Null)),
                );
                spec.after = Some(after);
            }
            _ => break,
        }
    }
    st.audit(
        Some(&admin),
        &admin.client,
        None,
        "tables.export_csv",
        Some(&format!("{schema}.{name}")),
        json!({"as": viewer.label(), "rows": total}),
    )
    .await;
    let file = format!(
        "{}.csv",
        name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "_")
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        out,
    )
        .into_response())
}

/// One CSV cell (RFC 4180); a cell a spreadsheet would run as a formula gets a `'` first.
fn csv_cell(v: &Value) -> String {
    let s = match v {
        Value::Null => return String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) && !matches!(v, Value::Number(_)) {
        format!("'{s}")
    } else {
        s
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        let col = |n: &str| Column {
            name: n.into(),
            r#type: "text".into(),
            typtype: "b".into(),
            category: "S".into(),
            nullable: true,
            has_default: false,
            generated: false,
            enum_values: None,
        };
        Meta {
            schema: "public".into(),
            name: "clients".into(),
            kind: "table".into(),
            columns: vec![col("id"), col("name")],
            primary_key: vec!["id".into()],
            foreign_keys: vec![],
        }
    }

    #[test]
    fn keyset_after_a_sorted_value_is_a_total_order() {
        let spec = RowsSpec {
            order: Some(OrderSpec {
                column: "name".into(),
                desc: false,
            }),
            after: Some(vec![json!("a,\"b"), json!("7")]),
            ..Default::default()
        };
        let q = rest_query(&meta(), &spec, 100).unwrap();
        let decoded = percent_encoding::percent_decode_str(&q)
            .decode_utf8()
            .unwrap();
        assert!(
            decoded.contains("order=name.asc.nullslast,id.asc"),
            "{decoded}"
        );
        assert!(
            decoded.contains(r#"or=(name.gt."a,\"b",and(name.eq."a,\"b",id.gt."7"),name.is.null)"#),
            "{decoded}"
        );
        assert!(decoded.ends_with("limit=101"));
    }

    #[test]
    fn keyset_on_a_composite_key_is_a_row_value_comparison_with_an_index_bound() {
        let mut m = meta();
        m.columns.push(Column {
            name: "seq".into(),
            ..m.columns[0].clone()
        });
        m.primary_key = vec!["id".into(), "seq".into()];
        let spec = RowsSpec {
            after: Some(vec![Value::Null, json!("a"), json!(3)]),
            ..Default::default()
        };
        let q = rest_query(&m, &spec, 10).unwrap();
        let decoded = percent_encoding::percent_decode_str(&q)
            .decode_utf8()
            .unwrap();
        assert!(decoded.contains("order=id.asc,seq.asc"), "{decoded}");
        assert!(decoded.contains("id=gte.a&"), "{decoded}");
        assert!(
            decoded.contains(r#"or=(id.gt."a",and(id.eq."a",seq.gt."3"))"#),
            "{decoded}"
        );
        // Sorted by a column outside the key: the sort value, then the whole key.
        let spec = RowsSpec {
            order: Some(OrderSpec {
                column: "name".into(),
                desc: true,
            }),
            after: Some(vec![json!("n"), json!("a"), json!(3)]),
            ..Default::default()
        };
        let decoded = rest_query(&m, &spec, 10).unwrap();
        let decoded = percent_encoding::percent_decode_str(&decoded)
            .decode_utf8()
            .unwrap()
            .into_owned();
        assert!(
            decoded.contains(r#"or=(name.lt."n",and(name.eq."n",or(id.gt."a",and(id.eq."a",seq.gt."3"))),name.is.null)"#),
            "{decoded}"
        );
        // A cursor of the wrong length is refused.
        let spec = RowsSpec {
            after: Some(vec![json!("a"), json!("b")]),
            ..Default::default()
        };
        assert!(rest_query(&m, &spec, 10).is_err());
    }

    #[test]
    fn unknown_columns_and_bad_is_values_are_refused() {
        let spec = RowsSpec {
            filters: vec![FilterSpec {
                column: "nope".into(),
                op: Op::Eq,
                value: "1".into(),
            }],
            ..Default::default()
        };
        assert!(rest_query(&meta(), &spec, 10).is_err());
        let spec = RowsSpec {
            filters: vec![FilterSpec {
                column: "name".into(),
                op: Op::Is,
                value: "1; drop".into(),
            }],
            ..Default::default()
        };
        assert!(rest_query(&meta(), &spec, 10).is_err());
    }

    #[test]
    fn csv_cells_are_quoted_and_formulas_defused() {
        assert_eq!(csv_cell(&json!("a,b")), "\"a,b\"");
        assert_eq!(csv_cell(&json!("=1+1")), "'=1+1");
        assert_eq!(csv_cell(&json!(-3)), "-3");
        assert_eq!(csv_cell(&Value::Null), "");
    }
}
