//! agencyflow-graphql: pg_graphql's API (`/graphql/v1`) without the extension. Pure stages,
//! no I/O: [`reflect`] the schema a role sees from the REST schema cache, [`doc::parse`] the
//! request into a typed operation, [`plan`] each top-level field into ONE SQL statement
//! ([`compile`]) that builds its JSON in PostgreSQL (or a value computed here: `__typename`,
//! introspection); the server runs the statements in one transaction as the caller and
//! [`assemble`]s the response.

pub mod compile;
pub mod doc;
pub mod error;
pub mod introspect;
pub mod reflect;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use agencyflow_rest::SchemaCache;
use serde::Deserialize;
use serde_json::{Map, Value};

pub use compile::Statement;
pub use error::{error_body, GqlError};
pub use reflect::Schema;

use doc::{fields_for, OpKind};

/// The body of a GraphQL request (or the GET parameters).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GraphqlRequest {
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub variables: Option<Value>,
    #[serde(default, rename = "operationName")]
    pub operation_name: Option<String>,
}

/// What one top-level field resolves by.
#[derive(Debug)]
pub enum Step {
    /// A statement whose first column is the field's JSON text.
    Sql(Statement),
    /// A value known without the database.
    Value(Value),
}

#[derive(Debug)]
pub struct Plan {
    /// A query (run read-only); mutations run read-write, in document order.
    pub read_only: bool,
    /// (response key, how it resolves), in document order.
    pub steps: Vec<(String, Step)>,
}

/// The reflected schemas of one schema cache, per role.
type PerRole = HashMap<String, Arc<Schema>>;

/// The reflected schema per role, for one schema cache (rebuilt when the cache is swapped).
/// The cache is held weakly: its allocation cannot be reused for another cache while the
/// store remembers it, so a pointer match is an identity match.
#[derive(Default)]
pub struct SchemaStore {
    inner: Mutex<Option<(Weak<SchemaCache>, PerRole)>>,
}

impl SchemaStore {
    pub fn get(&self, cache: &Arc<SchemaCache>, role: &str) -> Arc<Schema> {
        let mut g = self.inner.lock().expect("graphql schema store");
        let same = g
            .as_ref()
            .is_some_and(|(w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(cache)));
        if !same {
            *g = Some((Arc::downgrade(cache), HashMap::new()));
        }
        let (_, map) = g.as_mut().expect("set above");
        map.entry(role.to_string())
            .or_insert_with(|| Arc::new(reflect::reflect(cache, role)))
            .clone()
    }
}

/// Plans a request: parse, validate against `schema`, compile each top-level field.
pub fn plan(schema: &Schema, req: &GraphqlRequest) -> Result<Plan, GqlError> {
    let query = req
        .query
        .as_deref()
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| GqlError::new("No query provided"))?;
    let vars: Map<String, Value> = match &req.variables {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        // GET passes variables as a JSON string.
        Some(Value::String(s)) if s.trim().is_empty() => Map::new(),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => m,
            _ => {
                return Err(GqlError::new(
                    "Invalid variables: a JSON object is required",
                ))
            }
        },
        Some(_) => {
            return Err(GqlError::new(
                "Invalid variables: a JSON object is required",
            ))
        }
    };
    let op = doc::parse(query, req.operation_name.as_deref(), &vars)?;
    let root = match op.kind {
        OpKind::Query => "Query",
        OpKind::Mutation => "Mutation",
    };
    let fields = fields_for(&op.selections, root, &[]);
    let mut steps = Vec::new();
    for f in &fields {
        let step = match (op.kind, f.name.as_str()) {
            (_, "__typename") => Step::Value(Value::String(root.to_string())),
            (OpKind::Query, "__schema" | "__type") if schema.introspection => {
                Step::Value(introspect::resolve(schema, f)?)
            }
            (OpKind::Query, "node") => match compile::Compiler::new(schema).node(f)? {
                Some(s) => Step::Sql(s),
                None => Step::Value(Value::Null),
            },
            (OpKind::Query, name) => match schema.entity_by_collection(name) {
                Some(e) => Step::Sql(compile::Compiler::new(schema).collection(e, f)?),
                None => {
                    let func = schema
                        .function(name, false)
                        .ok_or_else(|| unknown(f, root))?;
                    Step::Sql(compile::Compiler::new(schema).function(func, f)?)
                }
            },
            (OpKind::Mutation, name) => {
                let by = |prefix: &str, ok: fn(&reflect::Entity) -> bool| {
                    name.strip_prefix(prefix)
                        .and_then(|r| r.strip_suffix("Collection"))
                        .and_then(|t| schema.entity_by_type(t))
                        .filter(|e| ok(e))
                };
                if let Some(e) = by("insertInto", |e| e.insertable) {
                    Step::Sql(compile::Compiler::new(schema).insert(e, f)?)
                } else if let Some(e) = by("update", |e| e.updatable) {
                    Step::Sql(compile::Compiler::new(schema).update(e, f)?)
                } else if let Some(e) = by("deleteFrom", |e| e.deletable) {
                    Step::Sql(compile::Compiler::new(schema).delete(e, f)?)
                } else if let Some(func) = schema.function(name, true) {
                    Step::Sql(compile::Compiler::new(schema).function(func, f)?)
                } else {
                    return Err(unknown(f, root));
                }
            }
        };
        steps.push((f.key.clone(), step));
    }
    Ok(Plan {
        read_only: op.kind == OpKind::Query,
        steps,
    })
}

fn unknown(f: &doc::FieldSel, type_name: &str) -> GqlError {
    GqlError::new(format!(
        "Unknown field \"{}\" on type {}",
        f.name, type_name
    ))
    .at(f.line, f.column)
}

/// `{"data": {...}}` from the steps and the JSON text each statement returned (in order;
/// `None` for a SQL null).
pub fn assemble(steps: &[(String, Step)], sql_results: Vec<Option<String>>) -> String {
    let mut results = sql_results.into_iter();
    let mut out = String::from("{\"data\":{");
    for (i, (key, step)) in steps.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(key.clone()).to_string());
        out.push(':');
        match step {
            Step::Value(v) => out.push_str(&v.to_string()),
            Step::Sql(_) => match results.next().flatten() {
                Some(t) => out.push_str(&t),
                None => out.push_str("null"),
            },
        }
    }
    out.push_str("}}");
    out
}

#[cfg(test)]
mod tests;
