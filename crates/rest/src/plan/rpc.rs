//! Function calls: overload resolution, argument binding and result shape.

use serde_json::Value;

use super::errors::closest;
use super::read::{apply_paging, build_root, root_paging, Ctx, RootOpts};
use super::{CallArg, CallQuery, CallShape, FunctionCall, Source};
use crate::error::{ErrorKind, RestError};
use crate::parse::filter::parse_filter;
use crate::parse::{CountPref, PathFilter};
use crate::schema::{
    ArgMode, Column, Function, FunctionArg, RelationKind, ReturnShape, Table, Volatility,
};

pub(crate) struct PlannedCall {
    pub query: CallQuery,
    pub offset: i64,
    pub volatile: bool,
}

fn is_json_arg(a: &FunctionArg) -> bool {
    matches!(a.base_type.as_str(), "json" | "jsonb")
}

/// What the client supplied as arguments.
enum Given<'a> {
    /// GET/HEAD: query pairs (repeatable keys).
    Query(&'a [(String, String)]),
    /// POST: the JSON body.
    Body(&'a Value),
}

pub(crate) fn plan_call(ctx: &mut Ctx, name: &str) -> Result<PlannedCall, RestError> {
    let req = ctx.req;
    let schema = req.schema.as_str();
    let overloads: Vec<&Function> = ctx.cache.functions_named(schema, name).collect();
    let empty = Value::Object(Default::default());
    let given = if req.method.is_read() {
        Given::Query(&req.rpc_query)
    } else {
        Given::Body(req.payload.as_ref().unwrap_or(&empty))
    };
    let keys: Vec<String> = match &given {
        Given::Query(pairs) => {
            let mut k: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
            k.dedup();
            k
        }
        Given::Body(Value::Object(o)) => o.keys().cloned().collect(),
        Given::Body(_) => Vec::new(),
    };
    let body_is_object = matches!(given, Given::Body(Value::Object(_)));

    // Rank candidates: named match (0), then params=single-object / sole unnamed json (1).
    let mut ranked: Vec<(u8, &Function)> = Vec::new();
    for f in &overloads {
        let inputs: Vec<&FunctionArg> = f.inputs().collect();
        let single_json = inputs.len() == 1 && is_json_arg(inputs[0]);
        if let Given::Body(_) = given {
            if single_json && inputs[0].name.is_empty() {
                ranked.push((1, f));
                continue;
            }
            if single_json && req.prefer.params_single_object {
                ranked.push((1, f));
                continue;
            }
        }
        if inputs.iter().any(|a| a.name.is_empty()) {
            continue;
        }
        let required_ok = inputs
            .iter()
            .filter(|a| !a.has_default && a.mode != ArgMode::Variadic)
            .all(|a| keys.contains(&a.name));
        let extras_ok = match given {
            Given::Query(_) => true,
            Given::Body(_) => {
                body_is_object && keys.iter().all(|k| inputs.iter().any(|a| &a.name == k))
            }
        };
        if required_ok
            && extras_ok
            && !(req.prefer.params_single_object && matches!(given, Given::Body(_)))
        {
            ranked.push((0, f));
        }
    }
    let best = ranked.iter().map(|(r, _)| *r).min();
    let chosen: Vec<&Function> = ranked
        .iter()
        .filter(|(r, _)| Some(*r) == best)
        .map(|(_, f)| *f)
        .collect();
    let function = match chosen.as_slice() {
        [] => return Err(not_found(ctx, schema, name, &keys)),
        [one] => *one,
        many => return Err(ambiguous(schema, name, many)),
    };

    let mut args = Vec::new();
    let mut consumed: Vec<&str> = Vec::new();
    let inputs: Vec<&FunctionArg> = function.inputs().collect();
    match &given {
        Given::Body(body)
            if inputs.len() == 1
                && is_json_arg(inputs[0])
                && (inputs[0].name.is_empty() || req.prefer.params_single_object) =>
        {
            let a = inputs[0];
            if a.name.is_empty() {
                args.push(CallArg::Positional {
                    pg_type: a.call_type().to_string(),
                    value: body.to_string(),
                });
            } else {
                args.push(CallArg::Named {
                    name: a.name.clone(),
                    pg_type: a.call_type().to_string(),
                    value: Some(body.to_string()),
                    variadic: false,
                });
            }
        }
        Given::Body(Value::Object(o)) => {
            for a in &inputs {
                if let Some(v) = o.get(&a.name) {
                    args.push(CallArg::Named {
                        name: a.name.clone(),
                        pg_type: a.call_type().to_string(),
                        value: json_to_param(v, a.category == "A"),
                        variadic: a.mode == ArgMode::Variadic,
                    });
                }
            }
        }
        Given::Body(_) => {}
        Given::Query(pairs) => {
            for a in &inputs {
                let values: Vec<&str> = pairs
                    .iter()
                    .filter(|(k, _)| k == &a.name)
                    .map(|(_, v)| v.as_str())
                    .collect();
                if values.is_empty() {
                    continue;
                }
                consumed.push(a.name.as_str());
                let is_array = a.category == "A";
                let value = if is_array && !(values.len() == 1 && values[0].starts_with('{')) {
                    pg_array_literal(
                        &values
                            .iter()
                            .map(|v| Value::String(v.to_string()))
                            .collect::<Vec<_>>(),
                    )
                } else {
                    values[0].to_string()
                };
                args.push(CallArg::Named {
                    name: a.name.clone(),
                    pg_type: a.call_type().to_string(),
                    value: Some(value),
                    variadic: a.mode == ArgMode::Variadic,
                });
            }
        }
    }

    let call = FunctionCall {
        function: crate::schema::QualifiedName::new(&function.schema, &function.name),
        args,
    };
    let shape = match (function.shape(), function.returns_set) {
        (ReturnShape::Void, _) => CallShape::Void,
        (ReturnShape::Scalar, false) => CallShape::Scalar,
        (ReturnShape::Scalar, true) => CallShape::SetOfScalars,
        (ReturnShape::Composite, false) => CallShape::SingleRow,
        (ReturnShape::Composite, true) => CallShape::Rows,
    };
    let count_exact = matches!(
        req.prefer.count,
        Some(CountPref::Exact | CountPref::Estimated)
    );
    let mut query = CallQuery {
        call: call.clone(),
        shape,
        root: None,
        limit: None,
        offset: None,
        count_exact,
    };
    let mut offset = 0;
    match shape {
        CallShape::Rows | CallShape::SingleRow => {
            let synthetic;
            let table: &Table = match function
                .return_relation
                .as_ref()
                .and_then(|r| ctx.cache.table_by_name(r))
            {
                Some(t) => t,
                None => {
                    synthetic = result_table(function);
                    &synthetic
                }
            };
            let mut extra = Vec::new();
            if let Given::Query(pairs) = given {
                for (k, v) in pairs
                    .iter()
                    .filter(|(k, _)| !consumed.contains(&k.as_str()))
                {
                    let (path, filter) = parse_filter(k, v)?;
                    extra.push(PathFilter { path, filter });
                }
            }
            let mut root = build_root(
                ctx,
                table,
                Source::Function(call),
                &extra,
                RootOpts {
                    filters: true,
                    order: true,
                },
            )?;
            if shape == CallShape::Rows {
                offset = apply_paging(ctx, &mut root);
            }
            query.root = Some(root);
        }
        CallShape::SetOfScalars => {
            let (o, l) = root_paging(ctx);
            offset = o;
            query.offset = (o > 0).then_some(o);
            query.limit = l;
        }
        CallShape::Scalar | CallShape::Void => {}
    }
    Ok(PlannedCall {
        query,
        offset,
        volatile: function.volatility == Volatility::Volatile,
    })
}

/// The columns of a `TABLE(...)`/OUT-parameter result as a relation.
fn result_table(f: &Function) -> Table {
    Table {
        schema: f.schema.clone(),
        name: f.name.clone(),
        kind: RelationKind::View,
        comment: None,
        insertable: false,
        updatable: false,
        deletable: false,
        columns: f
            .output_args()
            .enumerate()
            .map(|(i, a)| Column {
                name: a.name.clone(),
                pg_type: a.pg_type.clone(),
                cast_type: a.call_type().to_string(),
                data_type: a.pg_type.clone(),
                base_type: a.base_type.clone(),
                category: a.category.clone(),
                nullable: true,
                default: None,
                generated: false,
                position: i as i32 + 1,
                comment: None,
                enum_values: None,
            })
            .collect(),
        privileges: Vec::new(),
        primary_key: Vec::new(),
    }
}

/// A JSON argument as the text a `$n::type` cast accepts. Vectors (`[0.1,0.2]`)
/// pass as JSON text, which is pgvector's text input; PostgreSQL arrays need `{}`.
pub(crate) fn json_to_param(v: &Value, pg_array: bool) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Array(items) if pg_array => Some(pg_array_literal(items)),
        other => Some(other.to_string()),
    }
}

pub(crate) fn pg_array_literal(items: &[Value]) -> String {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            Value::Null => out.push_str("NULL"),
            Value::Array(inner) => out.push_str(&pg_array_literal(inner)),
            Value::String(s) => quote_element(&mut out, s),
            other => quote_element(&mut out, &other.to_string()),
        }
    }
    out.push('}');
    out
}

fn quote_element(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

fn not_found(ctx: &Ctx, schema: &str, name: &str, keys: &[String]) -> RestError {
    let mut sorted = keys.to_vec();
    sorted.sort();
    let list = sorted.join(", ");
    let details = if sorted.is_empty() {
        format!("Searched for the function {schema}.{name} without parameters or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache.")
    } else {
        format!("Searched for the function {schema}.{name} with parameter{} {list} or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache.", if sorted.len() == 1 { "" } else { "s" })
    };
    let mut e = RestError::new(
        ErrorKind::FunctionNotFound,
        format!("Could not find the function {schema}.{name}({list}) in the schema cache"),
    )
    .with_details(details);
    let names = ctx
        .cache
        .functions
        .iter()
        .filter(|f| f.schema == schema && f.name != name)
        .map(|f| f.name.as_str());
    if let Some(c) = closest(name, names) {
        e = e.with_hint(format!(
            "Perhaps you meant to call the function {schema}.{c}"
        ));
    }
    e
}

fn ambiguous(schema: &str, name: &str, many: &[&Function]) -> RestError {
    let sigs: Vec<String> = many
        .iter()
        .map(|f| {
            let args: Vec<String> = f
                .inputs()
                .map(|a| format!("{} => {}", a.name, a.pg_type))
                .collect();
            format!("{schema}.{name}({})", args.join(", "))
        })
        .collect();
    RestError::new(ErrorKind::AmbiguousFunction, format!("Could not choose the best candidate function between: {}", sigs.join(", ")))
        .with_hint("Try renaming the parameters or the function itself in the database so function overloading can be resolved")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn array_literals() {
        assert_eq!(
            pg_array_literal(&[json!("a"), json!("b,c")]),
            "{\"a\",\"b,c\"}"
        );
        assert_eq!(
            pg_array_literal(&[json!(1), json!(null), json!("q\"\\")]),
            "{\"1\",NULL,\"q\\\"\\\\\"}"
        );
        assert_eq!(
            pg_array_literal(&[json!([1, 2]), json!([3])]),
            "{{\"1\",\"2\"},{\"3\"}}"
        );
        assert_eq!(pg_array_literal(&[]), "{}");
    }

    #[test]
    fn params_from_json() {
        assert_eq!(
            json_to_param(&json!([0.1, 0.2]), false).as_deref(),
            Some("[0.1,0.2]")
        );
        assert_eq!(
            json_to_param(&json!(["a"]), true).as_deref(),
            Some("{\"a\"}")
        );
        assert_eq!(json_to_param(&json!("x"), false).as_deref(), Some("x"));
        assert_eq!(json_to_param(&json!(null), false), None);
        assert_eq!(
            json_to_param(&json!({"a": 1}), false).as_deref(),
            Some("{\"a\":1}")
        );
        assert_eq!(json_to_param(&json!(true), false).as_deref(), Some("true"));
    }
}
