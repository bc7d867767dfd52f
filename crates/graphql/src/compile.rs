//! Compiles one top-level field into ONE SQL statement that builds the field's JSON in
//! PostgreSQL (`json_build_object`/`json_agg`, as the REST planner does), values bound as
//! text parameters, identifiers quoted from the reflected schema (never from the request).

use base64::Engine;
use serde_json::{Map, Value};

use crate::doc::{fields_for, FieldSel};
use crate::error::GqlError;
use crate::reflect::{quote_ident, Computed, Entity, Field, FnReturn, FunctionDef, Scalar, Schema};

/// The default page size (pg_graphql's `max_rows` default).
pub const DEFAULT_MAX_ROWS: i64 = 30;

/// A compiled statement: one row, column 1 the field's JSON as text; mutations add column 2,
/// the number of affected rows, checked against `at_most`.
#[derive(Debug, Clone)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Option<String>>,
    pub at_most: Option<(i64, &'static str)>,
}

pub struct Compiler<'a> {
    schema: &'a Schema,
    params: Vec<Option<String>>,
    aliases: usize,
    /// Work budget: every node/relation selected costs one (complexity limit).
    cost: usize,
}

const MAX_COST: usize = 2000;
const MAX_JSON_PAIRS: usize = 50;

fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The JSON array inside a base64 cursor or nodeId.
fn decode_b64_array(s: &str) -> Option<Vec<Value>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    match serde_json::from_slice::<Value>(&bytes).ok()? {
        Value::Array(a) => Some(a),
        _ => None,
    }
}

/// A JSON input value as the text PostgreSQL parses.
fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

/// A JSON list as a PostgreSQL array literal.
fn array_literal(items: &[Value]) -> String {
    let parts: Vec<String> = items
        .iter()
        .map(|v| match text_of(v) {
            None => "NULL".to_string(),
            Some(s) => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// `json_build_object` over (key, expression) pairs, in chunks under PostgreSQL's 100
/// argument limit (merged as jsonb past 50 pairs).
fn build_object(pairs: &[(String, String)]) -> String {
    let chunk = |c: &[(String, String)], f: &str| {
        let args: Vec<String> = c
            .iter()
            .map(|(k, e)| format!("{}, {}", lit(k), e))
            .collect();
        format!("pg_catalog.{f}({})", args.join(", "))
    };
    if pairs.len() <= MAX_JSON_PAIRS {
        return chunk(pairs, "json_build_object");
    }
    let parts: Vec<String> = pairs
        .chunks(MAX_JSON_PAIRS)
        .map(|c| chunk(c, "jsonb_build_object"))
        .collect();
    format!("({})::json", parts.join(" || "))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Dir {
    asc: bool,
    nulls_first: bool,
}

impl Dir {
    fn parse(s: &str) -> Option<Dir> {
        Some(match s {
            "AscNullsFirst" => Dir {
                asc: true,
                nulls_first: true,
            },
            "AscNullsLast" => Dir {
                asc: true,
                nulls_first: false,
            },
            "DescNullsFirst" => Dir {
                asc: false,
                nulls_first: true,
            },
            "DescNullsLast" => Dir {
                asc: false,
                nulls_first: false,
            },
            _ => return None,
        })
    }
    fn reversed(self) -> Dir {
        Dir {
            asc: !self.asc,
            nulls_first: !self.nulls_first,
        }
    }
    fn sql(self) -> &'static str {
        match (self.asc, self.nulls_first) {
            (true, true) => "ASC NULLS FIRST",
            (true, false) => "ASC NULLS LAST",
            (false, true) => "DESC NULLS FIRST",
            (false, false) => "DESC NULLS LAST",
        }
    }
}

/// The join of a nested collection/object to its parent row.
struct Join<'j> {
    pairs: &'j [(String, String)],
    parent: &'j str,
}

fn unknown_field(f: &FieldSel, type_name: &str) -> GqlError {
    GqlError::new(format!(
        "Unknown field \"{}\" on type {}",
        f.name, type_name
    ))
    .at(f.line, f.column)
}

fn no_subfields(f: &FieldSel) -> Result<(), GqlError> {
    if f.selections.is_empty() {
        Ok(())
    } else {
        Err(GqlError::new(format!(
            "Field \"{}\" of a scalar type must not have a selection",
            f.name
        ))
        .at(f.line, f.column))
    }
}

impl<'a> Compiler<'a> {
    pub fn new(schema: &'a Schema) -> Self {
        Compiler {
            schema,
            params: Vec::new(),
            aliases: 0,
            cost: 0,
        }
    }

    fn bind(&mut self, v: Option<String>) -> String {
        self.params.push(v);
        format!("${}", self.params.len())
    }

    fn alias(&mut self) -> String {
        self.aliases += 1;
        format!("b{}", self.aliases)
    }

    fn charge(&mut self, f: &FieldSel) -> Result<(), GqlError> {
        self.cost += 1;
        if self.cost > MAX_COST {
            return Err(GqlError::new(format!(
                "Query is too complex (more than {MAX_COST} selected objects and collections)"
            ))
            .at(f.line, f.column));
        }
        Ok(())
    }

    fn finish(self, select: String, at_most: Option<(i64, &'static str)>) -> Statement {
        Statement {
            sql: select,
            params: self.params,
            at_most,
        }
    }

    // ---- values -----------------------------------------------------------------------

    fn column_expr(&self, alias: &str, f: &Field) -> String {
        let c = format!("{alias}.{}", quote_ident(&f.column));
        match &f.scalar {
            Scalar::BigInt | Scalar::BigFloat | Scalar::Json if !f.is_array => {
                format!("({c})::text")
            }
            // An enum's labels renamed by its `mappings` directive.
            Scalar::Enum(name) if !f.is_array => match self.schema.enum_def(name) {
                Some(en) if !en.mappings.is_empty() => {
                    let cases: Vec<String> = en
                        .mappings
                        .iter()
                        .map(|(sql, g)| format!("WHEN {c} = {} THEN {}", lit(sql), lit(g)))
                        .collect();
                    format!("CASE {} ELSE ({c})::text END", cases.join(" "))
                }
                _ => c,
            },
            _ => c,
        }
    }

    /// The SQL value of a scalar expression (a computed field's result) rendered as the
    /// scalar's JSON.
    fn scalar_render(scalar: &Scalar, is_array: bool, expr: String) -> String {
        match scalar {
            Scalar::BigInt | Scalar::BigFloat | Scalar::Json if !is_array => {
                format!("({expr})::text")
            }
            _ => expr,
        }
    }

    /// The row of `e` under `alias` as a value of the relation's row type (what a computed
    /// field's function takes): built from its columns, so it works whatever else the
    /// alias carries (a page's row number, a CTE's record).
    fn row_value(e: &Entity, alias: &str) -> String {
        let cols: Vec<String> = e
            .row_columns
            .iter()
            .map(|c| format!("{alias}.{}", quote_ident(c)))
            .collect();
        format!("ROW({})::{}", cols.join(", "), e.qualified_sql())
    }

    fn node_id_expr(e: &Entity, alias: &str) -> String {
        let mut parts = vec![lit(&e.schema), lit(&e.table)];
        parts.extend(
            e.pk_fields()
                .map(|f| format!("{alias}.{}", quote_ident(&f.column))),
        );
        format!(
            "pg_catalog.translate(pg_catalog.encode(pg_catalog.convert_to(pg_catalog.jsonb_build_array({})::text, 'utf8'), 'base64'), E'\\n', '')",
            parts.join(", ")
        )
    }

    /// A bound input value cast to `cast`, shaped for the field (lists as array literals,
    /// JSON objects as their text).
    fn bind_value(&mut self, f: &Field, v: &Value, cast: &str) -> Result<String, GqlError> {
        let text = if f.is_array {
            match v {
                Value::Null => None,
                Value::Array(items) => Some(array_literal(items)),
                other => Some(array_literal(std::slice::from_ref(other))),
            }
        } else {
            self.check_scalar(f, v)?;
            match (&f.scalar, v) {
                // A GraphQL enum value as its SQL label (`mappings`).
                (Scalar::Enum(name), Value::String(s)) => Some(
                    self.schema
                        .enum_def(name)
                        .and_then(|en| en.sql_label(s))
                        .unwrap_or(s)
                        .to_string(),
                ),
                _ => text_of(v),
            }
        };
        Ok(format!("{}::{}", self.bind(text), cast))
    }

    /// The value's GraphQL type matches the field's scalar (as pg_graphql's input coercion).
    fn check_scalar(&self, f: &Field, v: &Value) -> Result<(), GqlError> {
        let ok = match (&f.scalar, v) {
            (_, Value::Null) => true,
            (Scalar::Int, Value::Number(n)) => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
            (Scalar::Float, Value::Number(_)) => true,
            (Scalar::BigInt | Scalar::BigFloat, Value::Number(_) | Value::String(_)) => true,
            (Scalar::Boolean, Value::Bool(_)) => true,
            (Scalar::Json, _) => true,
            (Scalar::Opaque, _) => true,
            (Scalar::Enum(name), Value::String(s)) => self
                .schema
                .enum_def(name)
                .is_none_or(|e| e.sql_label(s).is_some()),
            (
                Scalar::String
                | Scalar::Uuid
                | Scalar::Date
                | Scalar::Time
                | Scalar::Datetime
                | Scalar::Id
                | Scalar::Cursor,
                Value::String(_),
            ) => true,
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(GqlError::new(format!(
                "Invalid input for {} type",
                f.scalar.name()
            )))
        }
    }

    // ---- filters ----------------------------------------------------------------------

    fn filter(&mut self, e: &Entity, alias: &str, v: &Value) -> Result<String, GqlError> {
        let obj = match v {
            Value::Null => return Ok("true".into()),
            Value::Object(o) => o,
            _ => {
                return Err(GqlError::new(format!(
                    "Invalid input for {}Filter type",
                    e.type_name
                )))
            }
        };
        let mut parts = Vec::new();
        for (k, val) in obj {
            if val.is_null() {
                continue;
            }
            match k.as_str() {
                "and" | "or" => {
                    let items: Vec<Value> = match val {
                        Value::Array(a) => a.clone(),
                        other => vec![other.clone()],
                    };
                    if items.is_empty() {
                        continue;
                    }
                    let subs = items
                        .iter()
                        .map(|i| self.filter(e, alias, i))
                        .collect::<Result<Vec<_>, _>>()?;
                    let op = if k == "and" { " AND " } else { " OR " };
                    parts.push(format!("({})", subs.join(op)));
                }
                "not" => {
                    if val.as_object().is_some_and(|o| o.is_empty()) {
                        continue;
                    }
                    parts.push(format!("NOT ({})", self.filter(e, alias, val)?));
                }
                "nodeId" => {
                    let ops = val
                        .as_object()
                        .ok_or_else(|| GqlError::new("Invalid input for IDFilter type"))?;
                    for (op, id) in ops {
                        if op != "eq" {
                            return Err(GqlError::new(format!(
                                "Unknown operator \"{op}\" for IDFilter"
                            )));
                        }
                        let Some(id) = id.as_str() else { continue };
                        parts.push(self.node_id_match(e, alias, id)?);
                    }
                }
                name => {
                    let f = e.field(name).ok_or_else(|| {
                        GqlError::new(format!(
                            "Unknown field \"{name}\" on type {}Filter",
                            e.type_name
                        ))
                    })?;
                    if f.scalar == Scalar::Json {
                        return Err(GqlError::new(format!(
                            "Unknown field \"{name}\" on type {}Filter",
                            e.type_name
                        )));
                    }
                    let ops = val.as_object().ok_or_else(|| {
                        GqlError::new(format!("Invalid input for {}Filter type", f.scalar.name()))
                    })?;
                    for (op, x) in ops {
                        if x.is_null() {
                            continue;
                        }
                        parts.push(self.op(f, alias, op, x)?);
                    }
                }
            }
        }
        Ok(if parts.is_empty() {
            "true".into()
        } else {
            parts.join(" AND ")
        })
    }

    fn op(&mut self, f: &Field, alias: &str, op: &str, x: &Value) -> Result<String, GqlError> {
        let col = format!("{alias}.{}", quote_ident(&f.column));
        let cast = f.cast.clone();
        let filter_name = if f.is_array {
            format!("{}ListFilter", f.scalar.name())
        } else {
            format!("{}Filter", f.scalar.name())
        };
        let bad = || GqlError::new(format!("Unknown operator \"{op}\" for {filter_name}"));
        if op == "is" {
            return match x.as_str() {
                Some("NULL") => Ok(format!("{col} IS NULL")),
                Some("NOT_NULL") => Ok(format!("{col} IS NOT NULL")),
                _ => Err(GqlError::new("Invalid input for FilterIs type")),
            };
        }
        if f.is_array {
            let sql_op = match op {
                "eq" => "=",
                "contains" => "@>",
                "containedBy" => "<@",
                "overlaps" => "&&",
                _ => return Err(bad()),
            };
            let v = self.bind_value(f, x, &cast)?;
            return Ok(format!("{col} {sql_op} {v}"));
        }
        if !f.scalar.filter_ops().contains(&op) {
            return Err(bad());
        }
        let sql_op = match op {
            "eq" => "=",
            "neq" => "<>",
            "gt" => ">",
            "gte" => ">=",
            "lt" => "<",
            "lte" => "<=",
            "like" => "OPERATOR(pg_catalog.~~)",
            "ilike" => "OPERATOR(pg_catalog.~~*)",
            "regex" => "OPERATOR(pg_catalog.~)",
            "iregex" => "OPERATOR(pg_catalog.~*)",
            "startsWith" => {
                let v = self.bind(text_of(x));
                return Ok(format!("pg_catalog.starts_with({col}::text, {v}::text)"));
            }
            "in" => {
                let items = match x {
                    Value::Array(a) => a.clone(),
                    other => vec![other.clone()],
                };
                if items.is_empty() {
                    return Ok("false".into());
                }
                let vs = items
                    .iter()
                    .map(|i| self.bind_value(f, i, &cast))
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(format!("{col} IN ({})", vs.join(", ")));
            }
            _ => return Err(bad()),
        };
        if matches!(op, "like" | "ilike" | "regex" | "iregex") {
            let v = self.bind(text_of(x));
            return Ok(format!("{col}::text {sql_op} {v}::text"));
        }
        let v = self.bind_value(f, x, &cast)?;
        Ok(format!("{col} {sql_op} {v}"))
    }

    /// `alias` is the record a nodeId names (false for another type's id).
    fn node_id_match(&mut self, e: &Entity, alias: &str, id: &str) -> Result<String, GqlError> {
        let parts = decode_b64_array(id).ok_or_else(|| GqlError::new("Invalid NodeId"))?;
        if parts.len() != 2 + e.primary_key.len()
            || parts[0].as_str() != Some(e.schema.as_str())
            || parts[1].as_str() != Some(e.table.as_str())
        {
            return Ok("false".into());
        }
        let conds: Vec<String> = e
            .pk_fields()
            .zip(&parts[2..])
            .map(|(f, v)| {
                let p = self.bind(text_of(v));
                format!("{alias}.{} = {p}::{}", quote_ident(&f.column), f.cast)
            })
            .collect();
        Ok(format!("({})", conds.join(" AND ")))
    }

    // ---- objects ----------------------------------------------------------------------

    /// The JSON object of one record of `e` (row `alias`) for the selection.
    fn node_object(
        &mut self,
        e: &Entity,
        alias: &str,
        sels: &[FieldSel],
    ) -> Result<String, GqlError> {
        let mut pairs = Vec::new();
        for f in sels {
            let expr = match f.name.as_str() {
                "__typename" => lit(&e.type_name),
                "nodeId" => {
                    no_subfields(f)?;
                    Self::node_id_expr(e, alias)
                }
                name => {
                    if let Some(col) = e.field(name) {
                        no_subfields(f)?;
                        self.column_expr(alias, col)
                    } else if let Some(cf) = e.computed_field(name) {
                        self.computed(e, alias, cf, f)?
                    } else if let Some(rel) = e.relation(name) {
                        self.charge(f)?;
                        let target = &self.schema.entities[rel.target];
                        let join = Join {
                            pairs: &rel.pairs,
                            parent: alias,
                        };
                        if rel.to_one {
                            let sub = fields_for(&f.selections, &target.type_name, &["Node"]);
                            self.related_object(target, &sub, join)?
                        } else {
                            self.connection(target, f, Some(join))?
                        }
                    } else {
                        return Err(unknown_field(f, &e.type_name));
                    }
                }
            };
            pairs.push((f.key.clone(), expr));
        }
        Ok(build_object(&pairs))
    }

    /// A computed field of the record `alias` of `e`: `"schema"."fn"(row)` as a scalar, one
    /// record, or a connection over the rows it returns.
    fn computed(
        &mut self,
        e: &Entity,
        alias: &str,
        cf: &Computed,
        f: &FieldSel,
    ) -> Result<String, GqlError> {
        let call = format!(
            "{}.{}({})",
            quote_ident(&cf.schema),
            quote_ident(&cf.sql_name),
            Self::row_value(e, alias)
        );
        Ok(match &cf.ret {
            FnReturn::Scalar { scalar, is_array } => {
                no_subfields(f)?;
                if let Some((k, _)) = f.args.iter().next() {
                    return Err(GqlError::new(format!(
                        "Unknown argument \"{k}\" on field \"{}\"",
                        f.name
                    ))
                    .at(f.line, f.column));
                }
                Self::scalar_render(scalar, *is_array, call)
            }
            FnReturn::Row(i) => {
                self.charge(f)?;
                let target = &self.schema.entities[*i];
                let a = self.alias();
                let sub = fields_for(&f.selections, &target.type_name, &["Node"]);
                let obj = self.node_object(target, &a, &sub)?;
                let pk = target
                    .pk_fields()
                    .map(|p| format!("{a}.{} IS NOT NULL", quote_ident(&p.column)))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                format!("(SELECT {obj} FROM {call} {a} WHERE {pk} LIMIT 1)")
            }
            FnReturn::Rows(i) => {
                self.charge(f)?;
                let target = &self.schema.entities[*i];
                self.connection_from(target, f, None, Some((&call, &[])))?
            }
        })
    }

    fn join_cond(j: &Join, e: &Entity, alias: &str) -> String {
        let _ = e;
        j.pairs
            .iter()
            .map(|(parent_col, col)| {
                format!(
                    "{alias}.{} = {}.{}",
                    quote_ident(col),
                    j.parent,
                    quote_ident(parent_col)
                )
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    fn related_object(
        &mut self,
        e: &Entity,
        sels: &[FieldSel],
        join: Join,
    ) -> Result<String, GqlError> {
        let a = self.alias();
        let obj = self.node_object(e, &a, sels)?;
        Ok(format!(
            "(SELECT {obj} FROM {} {a} WHERE {} LIMIT 1)",
            e.qualified_sql(),
            Self::join_cond(&join, e, &a)
        ))
    }

    fn int_arg(f: &FieldSel, name: &str) -> Result<Option<i64>, GqlError> {
        match f.args.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| GqlError::new(format!("Invalid input for Int type ({name})"))),
            Some(_) => Err(GqlError::new(format!(
                "Invalid input for Int type ({name})"
            ))),
        }
    }

    fn cursor_arg(f: &FieldSel, name: &str) -> Result<Option<Vec<Value>>, GqlError> {
        match f.args.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => decode_b64_array(s)
                .map(Some)
                .ok_or_else(|| GqlError::new("Invalid cursor")),
            Some(_) => Err(GqlError::new("Invalid input for Cursor type")),
        }
    }

    /// The ordering: `orderBy`, then the primary key (so cursors are unique).
    fn ordering<'e>(e: &'e Entity, f: &FieldSel) -> Result<Vec<(&'e Field, Dir)>, GqlError> {
        let mut keys: Vec<(&Field, Dir)> = Vec::new();
        let list = match f.args.get("orderBy") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(other) => vec![other.clone()],
        };
        for item in &list {
            let o = item.as_object().ok_or_else(|| {
                GqlError::new(format!("Invalid input for {}OrderBy type", e.type_name))
            })?;
            if o.len() != 1 {
                return Err(GqlError::new(
                    "Invalid orderBy: each element must have exactly one field",
                ));
            }
            let (k, v) = o.iter().next().expect("one entry");
            let field = e
                .field(k)
                .filter(|f| !f.is_array && f.scalar != Scalar::Json)
                .ok_or_else(|| {
                    GqlError::new(format!(
                        "Unknown field \"{k}\" on type {}OrderBy",
                        e.type_name
                    ))
                })?;
            let dir = v
                .as_str()
                .and_then(Dir::parse)
                .ok_or_else(|| GqlError::new("Invalid input for OrderByDirection type"))?;
            keys.push((field, dir));
        }
        for pk in e.pk_fields() {
            if !keys.iter().any(|(f, _)| f.column == pk.column) {
                keys.push((
                    pk,
                    Dir {
                        asc: true,
                        nulls_first: false,
                    },
                ));
            }
        }
        Ok(keys)
    }

    /// Rows strictly after the cursor position in `keys`' order.
    fn after_cursor(
        &mut self,
        keys: &[(&Field, Dir)],
        alias: &str,
        cursor: &[Value],
    ) -> Result<String, GqlError> {
        if cursor.len() != keys.len() {
            return Err(GqlError::new("Invalid cursor"));
        }
        let mut ors = Vec::new();
        let mut eqs: Vec<String> = Vec::new();
        for ((f, dir), v) in keys.iter().zip(cursor) {
            let col = format!("{alias}.{}", quote_ident(&f.column));
            let p = self.bind(text_of(v));
            let val = format!("{p}::{}", f.cast);
            let cmp = if dir.asc { ">" } else { "<" };
            let gt = match (v.is_null(), dir.nulls_first) {
                (true, true) => format!("{col} IS NOT NULL"),
                (true, false) => "false".to_string(),
                (false, true) => format!("{col} {cmp} {val}"),
                (false, false) => format!("({col} {cmp} {val} OR {col} IS NULL)"),
            };
            let mut and = eqs.clone();
            and.push(gt);
            ors.push(format!("({})", and.join(" AND ")));
            eqs.push(format!("{col} IS NOT DISTINCT FROM {val}"));
        }
        Ok(format!("({})", ors.join(" OR ")))
    }

    /// A `<Table>Connection` as a scalar subquery.
    fn connection(
        &mut self,
        e: &Entity,
        f: &FieldSel,
        join: Option<Join>,
    ) -> Result<String, GqlError> {
        self.connection_from(e, f, join, None)
    }

    /// A connection over `source` (a function call, with its argument names) instead of the
    /// entity's table.
    fn connection_from(
        &mut self,
        e: &Entity,
        f: &FieldSel,
        join: Option<Join>,
        source: Option<(&str, &[String])>,
    ) -> Result<String, GqlError> {
        let from_sql = match source {
            Some((sql, _)) => sql.to_string(),
            None => e.qualified_sql(),
        };
        for k in f.args.keys() {
            if source.is_some_and(|(_, extra)| extra.contains(k)) {
                continue;
            }
            if !matches!(
                k.as_str(),
                "first" | "last" | "before" | "after" | "offset" | "filter" | "orderBy"
            ) {
                return Err(GqlError::new(format!(
                    "Unknown argument \"{k}\" on field \"{}\"",
                    f.name
                ))
                .at(f.line, f.column));
            }
        }
        let first = Self::int_arg(f, "first")?;
        let last = Self::int_arg(f, "last")?;
        let offset = Self::int_arg(f, "offset")?;
        let after = Self::cursor_arg(f, "after")?;
        let before = Self::cursor_arg(f, "before")?;
        if first.is_some() && last.is_some() {
            return Err(GqlError::new(
                "only one of \"first\" and \"last\" may be provided",
            ));
        }
        if before.is_some() && after.is_some() {
            return Err(GqlError::new(
                "only one of \"before\" and \"after\" may be provided",
            ));
        }
        if first.is_some() && before.is_some() {
            return Err(GqlError::new("\"first\" may only be used with \"after\""));
        }
        if last.is_some() && after.is_some() {
            return Err(GqlError::new("\"last\" may only be used with \"before\""));
        }
        if offset.is_some() && (last.is_some() || before.is_some()) {
            return Err(GqlError::new(
                "\"offset\" may only be used with \"first\" and \"after\"",
            ));
        }
        if [first, last, offset].iter().flatten().any(|n| *n < 0) {
            return Err(GqlError::new("Pagination arguments must be non-negative"));
        }
        let backward = last.is_some() || before.is_some();
        let max_rows = e.max_rows.unwrap_or(DEFAULT_MAX_ROWS);
        let n = first.or(last).unwrap_or(max_rows).min(max_rows);
        let keys = Self::ordering(e, f)?;
        let inner_alias = self.alias();
        let filter_v = f.args.get("filter").cloned().unwrap_or(Value::Null);
        let mut conds = vec![self.filter(e, &inner_alias, &filter_v)?];
        if let Some(j) = &join {
            conds.push(Self::join_cond(j, e, &inner_alias));
        }
        if let Some(c) = &after {
            conds.push(self.after_cursor(&keys, &inner_alias, c)?);
        }
        if let Some(c) = &before {
            let rev: Vec<(&Field, Dir)> = keys.iter().map(|(f, d)| (*f, d.reversed())).collect();
            conds.push(self.after_cursor(&rev, &inner_alias, c)?);
        }
        // The page's order (reversed when paging backwards), for the rows under `alias`.
        let order_for = |alias: &str| -> String {
            keys.iter()
                .map(|(fl, d)| {
                    let d = if backward { d.reversed() } else { *d };
                    format!("{alias}.{} {}", quote_ident(&fl.column), d.sql())
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let order = order_for(&inner_alias);
        let b = self.alias();
        let display = if backward {
            format!("{b}.\"__n\" DESC")
        } else {
            format!("{b}.\"__n\"")
        };
        let reverse_display = if backward {
            format!("{b}.\"__n\"")
        } else {
            format!("{b}.\"__n\" DESC")
        };
        let in_page = format!("{b}.\"__n\" <= {n}");
        let cursor_expr = {
            let vals: Vec<String> = keys
                .iter()
                .map(|(fl, _)| format!("{b}.{}", quote_ident(&fl.column)))
                .collect();
            format!(
                "pg_catalog.translate(pg_catalog.encode(pg_catalog.convert_to(pg_catalog.jsonb_build_array({})::text, 'utf8'), 'base64'), E'\\n', '')",
                vals.join(", ")
            )
        };
        let conn_type = format!("{}Connection", e.type_name);
        let mut pairs = Vec::new();
        let mut needs_rows = false;
        for cf in fields_for(&f.selections, &conn_type, &[]) {
            let expr = match cf.name.as_str() {
                "__typename" => lit(&conn_type),
                "edges" => {
                    needs_rows = true;
                    let edge_type = format!("{}Edge", e.type_name);
                    let mut ep = Vec::new();
                    for ef in fields_for(&cf.selections, &edge_type, &[]) {
                        let x = match ef.name.as_str() {
                            "__typename" => lit(&edge_type),
                            "cursor" => {
                                no_subfields(&ef)?;
                                cursor_expr.clone()
                            }
                            "node" => {
                                self.charge(&ef)?;
                                let sub = fields_for(&ef.selections, &e.type_name, &["Node"]);
                                self.node_object(e, &b, &sub)?
                            }
                            _ => return Err(unknown_field(&ef, &edge_type)),
                        };
                        ep.push((ef.key.clone(), x));
                    }
                    format!(
                        "COALESCE(pg_catalog.json_agg({} ORDER BY {display}) FILTER (WHERE {in_page}), '[]'::json)",
                        build_object(&ep)
                    )
                }
                "pageInfo" => {
                    needs_rows = true;
                    let mut pp = Vec::new();
                    for pf in fields_for(&cf.selections, "PageInfo", &[]) {
                        let x = match pf.name.as_str() {
                            "__typename" => lit("PageInfo"),
                            // pg_graphql's rule: on the paging side, a row beyond the page
                            // (the page was read with one row more); on the other side, the
                            // page does not start at the first row of the whole filtered
                            // collection in the page's order (false for an empty page).
                            "hasNextPage" if !backward => format!("(pg_catalog.count(*) > {n})"),
                            "hasPreviousPage" if backward => {
                                format!("(pg_catalog.count(*) > {n})")
                            }
                            "hasNextPage" | "hasPreviousPage" => {
                                let c = self.alias();
                                let mut conds = vec![self.filter(e, &c, &filter_v)?];
                                if let Some(j) = &join {
                                    conds.push(Self::join_cond(j, e, &c));
                                }
                                let pk = |a: &str| {
                                    e.pk_fields()
                                        .map(|p| format!("{a}.{}", quote_ident(&p.column)))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                };
                                format!(
                                    "COALESCE(pg_catalog.bool_or(ROW({}) IS DISTINCT FROM (SELECT ROW({}) FROM {} {c} WHERE {} ORDER BY {} LIMIT 1)) FILTER (WHERE {b}.\"__n\" = 1), false)",
                                    pk(&b),
                                    pk(&c),
                                    from_sql,
                                    conds.join(" AND "),
                                    order_for(&c)
                                )
                            }
                            "startCursor" => format!(
                                "(pg_catalog.array_agg({cursor_expr} ORDER BY {display}) FILTER (WHERE {in_page}))[1]"
                            ),
                            "endCursor" => format!(
                                "(pg_catalog.array_agg({cursor_expr} ORDER BY {reverse_display}) FILTER (WHERE {in_page}))[1]"
                            ),
                            _ => return Err(unknown_field(&pf, "PageInfo")),
                        };
                        pp.push((pf.key.clone(), x));
                    }
                    build_object(&pp)
                }
                "totalCount" if e.total_count => {
                    let c = self.alias();
                    let mut conds = vec![self.filter(e, &c, &filter_v)?];
                    if let Some(j) = &join {
                        conds.push(Self::join_cond(j, e, &c));
                    }
                    format!(
                        "(SELECT pg_catalog.count(*) FROM {} {c} WHERE {})",
                        &from_sql,
                        conds.join(" AND ")
                    )
                }
                "aggregate" if e.aggregate => {
                    self.aggregate(e, &cf, &filter_v, join.as_ref(), &from_sql)?
                }
                // pg_graphql's messages for a connection's unknown fields.
                "aggregate" => {
                    return Err(
                        GqlError::new("enable the aggregate directive to use aggregates")
                            .at(cf.line, cf.column),
                    )
                }
                _ => {
                    return Err(GqlError::new("unknown field in connection").at(cf.line, cf.column))
                }
            };
            pairs.push((cf.key.clone(), expr));
        }
        let obj = build_object(&pairs);
        if !needs_rows {
            return Ok(format!("(SELECT {obj})"));
        }
        let limit = n + 1;
        // Row numbers count from the first row after the offset (the window runs before it).
        let (offset_sql, minus) = match offset {
            Some(o) if o > 0 => (format!(" OFFSET {o}"), format!(" - {o}")),
            _ => (String::new(), String::new()),
        };
        Ok(format!(
            "(SELECT {obj} FROM (SELECT {inner_alias}.*, pg_catalog.row_number() OVER (ORDER BY {order}){minus} AS \"__n\" FROM {} {inner_alias} WHERE {} ORDER BY {order} LIMIT {limit}{offset_sql}) {b})",
            from_sql,
            conds.join(" AND ")
        ))
    }

    fn aggregate(
        &mut self,
        e: &Entity,
        f: &FieldSel,
        filter_v: &Value,
        join: Option<&Join>,
        from_sql: &str,
    ) -> Result<String, GqlError> {
        let c = self.alias();
        let agg_type = format!("{}Aggregate", e.type_name);
        let mut pairs = Vec::new();
        for af in fields_for(&f.selections, &agg_type, &[]) {
            let x = match af.name.as_str() {
                "__typename" => lit(&agg_type),
                "count" => "pg_catalog.count(*)".to_string(),
                func @ ("sum" | "avg" | "min" | "max") => {
                    let sub_type = format!(
                        "{}{}AggregateResult",
                        e.type_name,
                        match func {
                            "sum" => "Sum",
                            "avg" => "Avg",
                            "min" => "Min",
                            _ => "Max",
                        }
                    );
                    let mut sp = Vec::new();
                    for cf in fields_for(&af.selections, &sub_type, &[]) {
                        if cf.name == "__typename" {
                            sp.push((cf.key.clone(), lit(&sub_type)));
                            continue;
                        }
                        if matches!(func, "min" | "max")
                            && e.field(&cf.name).is_some_and(|x| x.scalar == Scalar::Uuid)
                        {
                            // pg_graphql's words for it.
                            return Err(GqlError::new(format!(
                                "UUID fields (like \"{}\") are not supported for min/max aggregation because they don't have a meaningful natural ordering",
                                cf.name
                            ))
                            .at(cf.line, cf.column));
                        }
                        let col = e
                            .field(&cf.name)
                            .filter(|x| !x.is_array)
                            .filter(|x| match func {
                                "sum" | "avg" => x.scalar.is_numeric(),
                                _ => {
                                    x.scalar.is_numeric()
                                        || matches!(
                                            x.scalar,
                                            Scalar::String
                                                | Scalar::Date
                                                | Scalar::Time
                                                | Scalar::Datetime
                                        )
                                }
                            })
                            .ok_or_else(|| unknown_field(&cf, &sub_type))?;
                        let colref = format!("{c}.{}", quote_ident(&col.column));
                        // pg_graphql returns aggregates as JSON numbers, bigint and numeric
                        // included (`sum {id: 10}`, `max {price: 29.99}`), and `avg` as a
                        // double (`2.5`).
                        let expr = match func {
                            "avg" => format!("(pg_catalog.avg({colref}))::float8"),
                            _ => format!("pg_catalog.{func}({colref})"),
                        };
                        sp.push((cf.key.clone(), expr));
                    }
                    build_object(&sp)
                }
                _ => return Err(unknown_field(&af, &agg_type)),
            };
            pairs.push((af.key.clone(), x));
        }
        let mut conds = vec![self.filter(e, &c, filter_v)?];
        if let Some(j) = join {
            conds.push(Self::join_cond(j, e, &c));
        }
        Ok(format!(
            "(SELECT {} FROM {} {c} WHERE {})",
            build_object(&pairs),
            from_sql,
            conds.join(" AND ")
        ))
    }

    // ---- entry points -----------------------------------------------------------------

    /// `<table>Collection` at the root.
    pub fn collection(mut self, e: &Entity, f: &FieldSel) -> Result<Statement, GqlError> {
        self.charge(f)?;
        let expr = self.connection(e, f, None)?;
        Ok(self.finish(format!("SELECT ({expr})::text"), None))
    }

    /// `node(nodeId:)`: the record, or null when the id names nothing the caller can see.
    pub fn node(mut self, f: &FieldSel) -> Result<Option<Statement>, GqlError> {
        let id = match f.args.get("nodeId") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(GqlError::new("Invalid input for ID type").at(f.line, f.column)),
        };
        let parts = decode_b64_array(&id).ok_or_else(|| GqlError::new("Invalid NodeId"))?;
        let (Some(schema), Some(table)) = (
            parts.first().and_then(|v| v.as_str()),
            parts.get(1).and_then(|v| v.as_str()),
        ) else {
            return Err(GqlError::new("Invalid NodeId"));
        };
        let Some(e) = self.schema.entity_by_table(schema, table) else {
            // A table the role cannot see: nothing to return.
            return Ok(None);
        };
        let a = self.alias();
        let cond = self.node_id_match(e, &a, &id)?;
        let sels = fields_for(&f.selections, &e.type_name, &["Node"]);
        let obj = self.node_object(e, &a, &sels)?;
        let sql = format!(
            "SELECT (SELECT {obj} FROM {} {a} WHERE {cond} LIMIT 1)::text",
            e.qualified_sql()
        );
        Ok(Some(self.finish(sql, None)))
    }

    /// A function field: `"schema"."fn"("arg" => $1::type, ...)` as a scalar, one record or a
    /// connection over its rows.
    pub fn function(mut self, func: &FunctionDef, f: &FieldSel) -> Result<Statement, GqlError> {
        let mut call_args = Vec::new();
        for (k, v) in &f.args {
            let Some(a) = func.arg(k) else {
                if matches!(func.ret, FnReturn::Rows(_)) {
                    continue; // a collection argument, checked by the connection
                }
                return Err(GqlError::new(format!(
                    "Unknown argument \"{k}\" on field \"{}\"",
                    f.name
                ))
                .at(f.line, f.column));
            };
            let field = Field {
                name: a.name.clone(),
                column: a.sql_name.clone(),
                scalar: a.scalar.clone(),
                is_array: a.is_array,
                nullable: !a.required,
                cast: a.cast.clone(),
                write_cast: a.cast.clone(),
                base_type: String::new(),
                description: None,
                insertable: false,
                updatable: false,
            };
            let val = self.bind_value(&field, v, &a.cast)?;
            call_args.push(format!("{} => {val}", quote_ident(&a.sql_name)));
        }
        for a in &func.args {
            if a.required && f.args.get(&a.name).is_none_or(Value::is_null) {
                return Err(GqlError::new(format!(
                    "Argument \"{}\" of required type was not provided",
                    a.name
                ))
                .at(f.line, f.column));
            }
        }
        let call = format!(
            "{}.{}({})",
            quote_ident(&func.schema),
            quote_ident(&func.sql_name),
            call_args.join(", ")
        );
        let sql = match &func.ret {
            FnReturn::Scalar { scalar, is_array } => {
                no_subfields(f)?;
                match scalar {
                    Scalar::BigInt | Scalar::BigFloat | Scalar::Json if !is_array => {
                        format!("SELECT pg_catalog.to_json(({call})::text)::text")
                    }
                    _ => format!("SELECT pg_catalog.to_json({call})::text"),
                }
            }
            FnReturn::Row(i) => {
                let e = &self.schema.entities[*i];
                let a = self.alias();
                let sub = fields_for(&f.selections, &e.type_name, &["Node"]);
                let obj = self.node_object(e, &a, &sub)?;
                let pk = e
                    .pk_fields()
                    .map(|p| format!("{a}.{} IS NOT NULL", quote_ident(&p.column)))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                format!("SELECT (SELECT {obj} FROM {call} {a} WHERE {pk} LIMIT 1)::text")
            }
            FnReturn::Rows(i) => {
                let e = &self.schema.entities[*i];
                let names: Vec<String> = func.args.iter().map(|a| a.name.clone()).collect();
                let expr = self.connection_from(e, f, None, Some((&call, &names)))?;
                format!("SELECT ({expr})::text")
            }
        };
        Ok(self.finish(sql, None))
    }

    fn mutation_result(
        &mut self,
        e: &Entity,
        f: &FieldSel,
        response_type: &str,
        dml: String,
    ) -> Result<String, GqlError> {
        let mut pairs = Vec::new();
        for rf in fields_for(&f.selections, response_type, &[]) {
            let x = match rf.name.as_str() {
                "__typename" => lit(response_type),
                "affectedCount" => {
                    "(SELECT pg_catalog.count(*) FROM \"__affected\")::int".to_string()
                }
                "records" => {
                    let r = self.alias();
                    let sub = fields_for(&rf.selections, &e.type_name, &["Node"]);
                    let obj = self.node_object(e, &r, &sub)?;
                    format!(
                        "COALESCE((SELECT pg_catalog.json_agg({obj}) FROM \"__affected\" {r}), '[]'::json)"
                    )
                }
                _ => return Err(unknown_field(&rf, response_type)),
            };
            pairs.push((rf.key.clone(), x));
        }
        Ok(format!(
            "WITH \"__affected\" AS ({dml}) SELECT ({})::text, (SELECT pg_catalog.count(*) FROM \"__affected\")",
            build_object(&pairs)
        ))
    }

    pub fn insert(mut self, e: &Entity, f: &FieldSel) -> Result<Statement, GqlError> {
        let objects = match f.args.get("objects") {
            Some(Value::Array(a)) => a.clone(),
            Some(Value::Object(o)) => vec![Value::Object(o.clone())],
            _ => {
                return Err(
                    GqlError::new("Invalid input for objects: a list is required")
                        .at(f.line, f.column),
                )
            }
        };
        if objects.is_empty() {
            return Err(GqlError::new("At least one record must be provided"));
        }
        let input_type = format!("{}InsertInput", e.type_name);
        let mut cols: Vec<&Field> = Vec::new();
        let rows: Vec<&Map<String, Value>> = objects
            .iter()
            .map(|o| {
                o.as_object()
                    .ok_or_else(|| GqlError::new(format!("Invalid input for {input_type} type")))
            })
            .collect::<Result<_, _>>()?;
        for r in &rows {
            for k in r.keys() {
                let field = e.field(k).filter(|x| x.insertable).ok_or_else(|| {
                    GqlError::new(format!(
                        "Input for type {input_type} contains extra keys [\"{k}\"]"
                    ))
                })?;
                if !cols.iter().any(|c| c.column == field.column) {
                    cols.push(field);
                }
            }
        }
        let col_list: Vec<String>;
        let mut values = Vec::new();
        if cols.is_empty() {
            let first = e
                .fields
                .iter()
                .find(|x| x.insertable)
                .ok_or_else(|| GqlError::new("No insertable column"))?;
            col_list = vec![quote_ident(&first.column)];
            for _ in &rows {
                values.push("(DEFAULT)".to_string());
            }
        } else {
            col_list = cols.iter().map(|c| quote_ident(&c.column)).collect();
            for r in &rows {
                let mut vs = Vec::new();
                for c in &cols {
                    vs.push(match r.get(&c.name) {
                        None => "DEFAULT".to_string(),
                        Some(v) => self.bind_value(c, v, &c.write_cast)?,
                    });
                }
                values.push(format!("({})", vs.join(", ")));
            }
        }
        let dml = format!(
            "INSERT INTO {} ({}) VALUES {} RETURNING *",
            e.qualified_sql(),
            col_list.join(", "),
            values.join(", ")
        );
        let sql = self.mutation_result(e, f, &format!("{}InsertResponse", e.type_name), dml)?;
        Ok(self.finish(sql, None))
    }

    fn at_most(f: &FieldSel) -> Result<i64, GqlError> {
        Ok(Self::int_arg(f, "atMost")?.unwrap_or(1))
    }

    pub fn update(mut self, e: &Entity, f: &FieldSel) -> Result<Statement, GqlError> {
        let set = match f.args.get("set") {
            Some(Value::Object(o)) => o.clone(),
            _ => {
                return Err(GqlError::new(
                    "Invalid input for set: an object is required",
                ))
            }
        };
        if set.is_empty() {
            return Err(GqlError::new("At least one mapping required for \"set\""));
        }
        let input_type = format!("{}UpdateInput", e.type_name);
        let mut assigns = Vec::new();
        for (k, v) in &set {
            let field = e.field(k).filter(|x| x.updatable).ok_or_else(|| {
                GqlError::new(format!(
                    "Input for type {input_type} contains extra keys [\"{k}\"]"
                ))
            })?;
            let val = self.bind_value(field, v, &field.write_cast)?;
            assigns.push(format!("{} = {val}", quote_ident(&field.column)));
        }
        let a = self.alias();
        let filter = self.filter(e, &a, f.args.get("filter").unwrap_or(&Value::Null))?;
        let dml = format!(
            "UPDATE {} {a} SET {} WHERE {filter} RETURNING {a}.*",
            e.qualified_sql(),
            assigns.join(", ")
        );
        let at_most = Self::at_most(f)?;
        let sql = self.mutation_result(e, f, &format!("{}UpdateResponse", e.type_name), dml)?;
        Ok(self.finish(sql, Some((at_most, "update impacts too many records"))))
    }

    pub fn delete(mut self, e: &Entity, f: &FieldSel) -> Result<Statement, GqlError> {
        let a = self.alias();
        let filter = self.filter(e, &a, f.args.get("filter").unwrap_or(&Value::Null))?;
        let dml = format!(
            "DELETE FROM {} {a} WHERE {filter} RETURNING {a}.*",
            e.qualified_sql()
        );
        let at_most = Self::at_most(f)?;
        let sql = self.mutation_result(e, f, &format!("{}DeleteResponse", e.type_name), dml)?;
        Ok(self.finish(sql, Some((at_most, "delete impacts too many records"))))
    }
}
