//! The request's document, parsed (graphql-parser) and normalised into a typed operation:
//! the chosen operation, its variables coerced, fragments expanded, `@skip`/`@include`
//! applied, and fields of the same response key merged. Argument values are JSON (variables
//! substituted; enum literals as strings).

use std::collections::HashMap;

use graphql_parser::query::{
    Definition, Directive, Document, FragmentDefinition, OperationDefinition, Selection,
    SelectionSet, TypeCondition, Value as GValue,
};
use serde_json::{Map, Value};

use crate::error::GqlError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Query,
    Mutation,
}

/// One field of a selection, with its arguments resolved to JSON.
#[derive(Debug, Clone)]
pub struct FieldSel {
    /// The response key (alias or name).
    pub key: String,
    pub name: String,
    pub args: Map<String, Value>,
    pub selections: Vec<Sel>,
    pub line: usize,
    pub column: usize,
}

/// A selection: a field, or an inline fragment with a type condition kept for `node`
/// (which type the fragment applies to is known only once the record's type is).
#[derive(Debug, Clone)]
pub enum Sel {
    Field(FieldSel),
    On(String, Vec<Sel>),
}

#[derive(Debug)]
pub struct Operation {
    pub kind: OpKind,
    /// The root selections (fragments on the root type kept for [`fields_for`]).
    pub selections: Vec<Sel>,
}

const MAX_DEPTH: usize = 24;

struct Ctx<'a> {
    vars: &'a Map<String, Value>,
    fragments: HashMap<&'a str, &'a FragmentDefinition<'a, String>>,
}

pub fn parse(
    query: &str,
    operation_name: Option<&str>,
    variables: &Map<String, Value>,
) -> Result<Operation, GqlError> {
    let doc: Document<String> = graphql_parser::parse_query::<String>(query)
        .map_err(|e| GqlError::new(e.to_string().trim().to_string()))?;
    let mut ops = Vec::new();
    let mut fragments = HashMap::new();
    for d in &doc.definitions {
        match d {
            Definition::Operation(op) => ops.push(op),
            Definition::Fragment(f) => {
                fragments.insert(f.name.as_str(), f);
            }
        }
    }
    let name_of = |op: &OperationDefinition<String>| -> Option<String> {
        match op {
            OperationDefinition::Query(q) => q.name.clone(),
            OperationDefinition::Mutation(m) => m.name.clone(),
            OperationDefinition::Subscription(s) => s.name.clone(),
            OperationDefinition::SelectionSet(_) => None,
        }
    };
    let op = match operation_name {
        Some(n) => ops
            .iter()
            .find(|o| name_of(o).as_deref() == Some(n))
            .ok_or_else(|| GqlError::new("Operation not found"))?,
        None if ops.len() == 1 => &ops[0],
        None if ops.is_empty() => return Err(GqlError::new("No operation found in document")),
        None => {
            return Err(GqlError::new(
                "Operation name required when document contains multiple operations",
            ))
        }
    };
    let (kind, defs, set) = match op {
        OperationDefinition::SelectionSet(s) => (OpKind::Query, &[][..], s),
        OperationDefinition::Query(q) => {
            (OpKind::Query, &q.variable_definitions[..], &q.selection_set)
        }
        OperationDefinition::Mutation(m) => (
            OpKind::Mutation,
            &m.variable_definitions[..],
            &m.selection_set,
        ),
        OperationDefinition::Subscription(_) => {
            return Err(GqlError::new("Subscriptions are not supported"))
        }
    };
    // Coerce variables: provided values, else the declared default, else null (a missing
    // non-null variable is an error).
    let mut vars = Map::new();
    for d in defs {
        let v = match variables.get(&d.name) {
            Some(v) => v.clone(),
            None => match &d.default_value {
                Some(dv) => literal(dv, &Map::new())?,
                None => {
                    if matches!(d.var_type, graphql_parser::query::Type::NonNullType(_)) {
                        return Err(GqlError::new(format!(
                            "Variable \"${}\" of required type \"{}\" was not provided",
                            d.name, d.var_type
                        )));
                    }
                    Value::Null
                }
            },
        };
        vars.insert(d.name.clone(), v);
    }
    let ctx = Ctx {
        vars: &vars,
        fragments,
    };
    let selections = ctx.selections(set, 0, &mut Vec::new())?;
    Ok(Operation { kind, selections })
}

/// A GraphQL value as JSON, variables substituted.
fn literal(v: &GValue<String>, vars: &Map<String, Value>) -> Result<Value, GqlError> {
    Ok(match v {
        GValue::Variable(n) => vars.get(n).cloned().unwrap_or(Value::Null),
        GValue::Int(i) => Value::from(
            i.as_i64()
                .ok_or_else(|| GqlError::new("Int out of range"))?,
        ),
        GValue::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        GValue::String(s) => Value::String(s.clone()),
        GValue::Boolean(b) => Value::Bool(*b),
        GValue::Null => Value::Null,
        GValue::Enum(e) => Value::String(e.clone()),
        GValue::List(l) => Value::Array(
            l.iter()
                .map(|x| literal(x, vars))
                .collect::<Result<_, _>>()?,
        ),
        GValue::Object(o) => {
            let mut m = Map::new();
            for (k, x) in o {
                m.insert(k.clone(), literal(x, vars)?);
            }
            Value::Object(m)
        }
    })
}

impl<'a> Ctx<'a> {
    /// Whether `@skip`/`@include` keep this selection.
    fn included(&self, directives: &[Directive<'a, String>]) -> Result<bool, GqlError> {
        for d in directives {
            let cond = || -> Result<bool, GqlError> {
                let v = d
                    .arguments
                    .iter()
                    .find(|(k, _)| k == "if")
                    .map(|(_, v)| literal(v, self.vars))
                    .transpose()?;
                match v {
                    Some(Value::Bool(b)) => Ok(b),
                    _ => Err(GqlError::new(format!(
                        "Directive @{} requires a Boolean \"if\" argument",
                        d.name
                    ))),
                }
            };
            match d.name.as_str() {
                "skip" if cond()? => return Ok(false),
                "include" if !cond()? => return Ok(false),
                _ => {}
            }
        }
        Ok(true)
    }

    fn selections(
        &self,
        set: &SelectionSet<'a, String>,
        depth: usize,
        spreads: &mut Vec<String>,
    ) -> Result<Vec<Sel>, GqlError> {
        if depth > MAX_DEPTH {
            return Err(GqlError::new(format!(
                "Query is nested too deeply (more than {MAX_DEPTH} levels)"
            )));
        }
        let mut out: Vec<Sel> = Vec::new();
        for s in &set.items {
            match s {
                Selection::Field(f) => {
                    if !self.included(&f.directives)? {
                        continue;
                    }
                    let mut args = Map::new();
                    for (k, v) in &f.arguments {
                        args.insert(k.clone(), literal(v, self.vars)?);
                    }
                    let children = self.selections(&f.selection_set, depth + 1, spreads)?;
                    let key = f.alias.clone().unwrap_or_else(|| f.name.clone());
                    merge(
                        &mut out,
                        FieldSel {
                            key,
                            name: f.name.clone(),
                            args,
                            selections: children,
                            line: f.position.line,
                            column: f.position.column,
                        },
                    );
                }
                Selection::FragmentSpread(fs) => {
                    if !self.included(&fs.directives)? {
                        continue;
                    }
                    let frag = self
                        .fragments
                        .get(fs.fragment_name.as_str())
                        .ok_or_else(|| {
                            GqlError::new(format!("Unknown fragment \"{}\"", fs.fragment_name))
                        })?;
                    if spreads.contains(&fs.fragment_name) {
                        return Err(GqlError::new(format!(
                            "Cannot spread fragment \"{}\" within itself",
                            fs.fragment_name
                        )));
                    }
                    spreads.push(fs.fragment_name.clone());
                    let inner = self.selections(&frag.selection_set, depth, spreads)?;
                    spreads.pop();
                    let TypeCondition::On(t) = &frag.type_condition;
                    push_on(&mut out, Some(t.clone()), inner);
                }
                Selection::InlineFragment(inf) => {
                    if !self.included(&inf.directives)? {
                        continue;
                    }
                    let inner = self.selections(&inf.selection_set, depth, spreads)?;
                    let t = inf
                        .type_condition
                        .as_ref()
                        .map(|TypeCondition::On(t)| t.clone());
                    push_on(&mut out, t, inner);
                }
            }
        }
        Ok(out)
    }
}

fn push_on(out: &mut Vec<Sel>, t: Option<String>, inner: Vec<Sel>) {
    match t {
        Some(t) => out.push(Sel::On(t, inner)),
        None => {
            for s in inner {
                match s {
                    Sel::Field(f) => merge(out, f),
                    other => out.push(other),
                }
            }
        }
    }
}

/// Adds a field, merging it into an earlier field of the same response key.
fn merge(out: &mut Vec<Sel>, f: FieldSel) {
    for s in out.iter_mut() {
        if let Sel::Field(e) = s {
            if e.key == f.key {
                e.selections.extend(f.selections);
                return;
            }
        }
    }
    out.push(Sel::Field(f));
}

/// The fields that apply to an object of type `type_name` (implementing `interfaces`), fragments
/// on other types dropped and same-key fields merged.
pub fn fields_for(sels: &[Sel], type_name: &str, interfaces: &[&str]) -> Vec<FieldSel> {
    let mut out: Vec<Sel> = Vec::new();
    fn walk(sels: &[Sel], type_name: &str, interfaces: &[&str], out: &mut Vec<Sel>) {
        for s in sels {
            match s {
                Sel::Field(f) => merge(out, f.clone()),
                Sel::On(t, inner) => {
                    if t == type_name || interfaces.contains(&t.as_str()) {
                        walk(inner, type_name, interfaces, out);
                    }
                }
            }
        }
    }
    walk(sels, type_name, interfaces, &mut out);
    out.into_iter()
        .filter_map(|s| match s {
            Sel::Field(f) => Some(f),
            Sel::On(..) => None,
        })
        .collect()
}
