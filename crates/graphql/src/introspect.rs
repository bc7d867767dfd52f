//! Introspection (`__schema`, `__type`), answered from the reflected schema without the
//! database, and only when an exposed schema's comment has `@graphql({"introspection": true})`
//! (pg_graphql 1.6's rule; otherwise the fields do not exist). The whole type system is built
//! as JSON (`__Type` objects whose type references are `{kind, name, ofType}`), then the
//! selection is resolved over it.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::doc::{fields_for, FieldSel, Sel};
use crate::error::GqlError;
use crate::reflect::{Entity, Field, FnReturn, Scalar, Schema};

fn named(kind: &str, name: &str) -> Value {
    json!({"kind": kind, "name": name, "ofType": null})
}
fn non_null(t: Value) -> Value {
    json!({"kind": "NON_NULL", "name": null, "ofType": t})
}
fn list(t: Value) -> Value {
    json!({"kind": "LIST", "name": null, "ofType": t})
}
fn scalar(name: &str) -> Value {
    named("SCALAR", name)
}
fn field(name: &str, ty: Value, args: Vec<Value>, description: Option<&str>) -> Value {
    json!({"name": name, "description": description, "args": args, "type": ty,
           "isDeprecated": false, "deprecationReason": null})
}
fn input(name: &str, ty: Value, default: Option<&str>, description: Option<&str>) -> Value {
    json!({"name": name, "description": description, "type": ty, "defaultValue": default,
           "isDeprecated": false, "deprecationReason": null})
}
fn object(
    name: &str,
    description: Option<&str>,
    fields: Vec<Value>,
    interfaces: Vec<Value>,
) -> Value {
    json!({"kind": "OBJECT", "name": name, "description": description, "fields": fields,
           "inputFields": null, "interfaces": interfaces, "enumValues": null,
           "possibleTypes": null, "ofType": null, "specifiedByURL": null})
}
fn input_object(name: &str, description: Option<&str>, fields: Vec<Value>) -> Value {
    json!({"kind": "INPUT_OBJECT", "name": name, "description": description, "fields": null,
           "inputFields": fields, "interfaces": null, "enumValues": null,
           "possibleTypes": null, "ofType": null, "specifiedByURL": null})
}
fn enum_type(name: &str, description: Option<&str>, values: &[String]) -> Value {
    let vals: Vec<Value> = values
        .iter()
        .map(|v| json!({"name": v, "description": null, "isDeprecated": false, "deprecationReason": null}))
        .collect();
    json!({"kind": "ENUM", "name": name, "description": description, "fields": null,
           "inputFields": null, "interfaces": null, "enumValues": vals,
           "possibleTypes": null, "ofType": null, "specifiedByURL": null})
}
fn scalar_type(name: &str, description: &str) -> Value {
    json!({"kind": "SCALAR", "name": name, "description": description, "fields": null,
           "inputFields": null, "interfaces": null, "enumValues": null,
           "possibleTypes": null, "ofType": null, "specifiedByURL": null})
}

fn scalar_ref(s: &Scalar) -> Value {
    match s {
        Scalar::Enum(n) => named("ENUM", n),
        other => scalar(other.name()),
    }
}

fn field_type(f: &Field) -> Value {
    let base = scalar_ref(&f.scalar);
    let t = if f.is_array { list(base) } else { base };
    if f.nullable {
        t
    } else {
        non_null(t)
    }
}

fn connection_args(e: &Entity) -> Vec<Value> {
    vec![
        input("first", scalar("Int"), None, Some("Query the first `n` records in the collection")),
        input("last", scalar("Int"), None, Some("Query the last `n` records in the collection")),
        input("before", scalar("Cursor"), None, Some("Query values in the collection before the provided cursor")),
        input("after", scalar("Cursor"), None, Some("Query values in the collection after the provided cursor")),
        input("offset", scalar("Int"), None, Some("Skip n values from the after cursor. Alternative to cursor pagination. Backward pagination not supported.")),
        input("filter", named("INPUT_OBJECT", &format!("{}Filter", e.type_name)), None, Some("Filters to apply to the results set when querying from the collection")),
        input("orderBy", list(non_null(named("INPUT_OBJECT", &format!("{}OrderBy", e.type_name)))), None, Some("Sort order to apply to the collection")),
    ]
}

/// Whether a function field's type is listed (a record or connection of an entity whose
/// schema does not enable introspection is not).
fn fn_visible(schema: &Schema, ret: &FnReturn) -> bool {
    match ret {
        FnReturn::Scalar { .. } => true,
        FnReturn::Row(i) | FnReturn::Rows(i) => schema.introspectable(*i),
    }
}

/// The type of a function field (a scalar or list, a record, a connection) and the arguments
/// its return adds (a connection's).
fn fn_return_type(schema: &Schema, ret: &FnReturn) -> (Value, Vec<Value>) {
    match ret {
        FnReturn::Scalar { scalar, is_array } => {
            let base = scalar_ref(scalar);
            (if *is_array { list(base) } else { base }, Vec::new())
        }
        FnReturn::Row(i) => (named("OBJECT", &schema.entities[*i].type_name), Vec::new()),
        FnReturn::Rows(i) => {
            let e = &schema.entities[*i];
            (
                named("OBJECT", &format!("{}Connection", e.type_name)),
                connection_args(e),
            )
        }
    }
}

/// Every type of the schema, by name.
fn types(schema: &Schema) -> BTreeMap<String, Value> {
    let mut t = BTreeMap::new();
    let mut add = |v: Value| {
        let name = v["name"].as_str().expect("named type").to_string();
        t.insert(name, v);
    };
    for (n, d) in [
        ("ID", "A globally unique identifier for a given record"),
        ("Int", "A scalar integer up to 32 bits"),
        ("Float", "A scalar floating point value up to 32 bits"),
        ("String", "A string"),
        ("Boolean", "A value that is true or false"),
        (
            "BigInt",
            "An arbitrary size integer represented as a string",
        ),
        (
            "BigFloat",
            "A high precision floating point value represented as a string",
        ),
        ("UUID", "A universally unique identifier"),
        ("Date", "A date without time information"),
        ("Time", "A time without date information"),
        ("Datetime", "A date and time"),
        (
            "JSON",
            "A Javascript Object Notation value serialized as a string",
        ),
        ("Opaque", "Any type not handled by the type system"),
        (
            "Cursor",
            "An opaque string using for tracking a position in results during pagination",
        ),
    ] {
        add(scalar_type(n, d));
    }
    add(enum_type(
        "FilterIs",
        None,
        &["NULL".into(), "NOT_NULL".into()],
    ));
    add(enum_type(
        "OrderByDirection",
        Some("Defines a per-field sorting order"),
        &[
            "AscNullsFirst".into(),
            "AscNullsLast".into(),
            "DescNullsFirst".into(),
            "DescNullsLast".into(),
        ],
    ));
    for en in &schema.enums {
        add(enum_type(&en.name, None, &en.values));
    }
    // Scalar filters, and list filters for array columns.
    let mut filters: BTreeMap<String, Value> = BTreeMap::new();
    let mut scalar_filter = |s: &Scalar, is_array: bool| -> Option<String> {
        if matches!(s, Scalar::Json | Scalar::Cursor) {
            return None;
        }
        let r = scalar_ref(s);
        let name = if is_array {
            format!("{}ListFilter", s.name())
        } else {
            format!("{}Filter", s.name())
        };
        if !filters.contains_key(&name) {
            let fields: Vec<Value> = if is_array {
                ["containedBy", "contains", "eq", "overlaps"]
                    .iter()
                    .map(|op| input(op, list(non_null(r.clone())), None, None))
                    .chain([input("is", named("ENUM", "FilterIs"), None, None)])
                    .collect()
            } else {
                s.filter_ops()
                    .iter()
                    .map(|op| match *op {
                        "in" => input(op, list(non_null(r.clone())), None, None),
                        "is" => input(op, named("ENUM", "FilterIs"), None, None),
                        "startsWith" | "like" | "ilike" | "regex" | "iregex" => {
                            input(op, scalar("String"), None, None)
                        }
                        _ => input(op, r.clone(), None, None),
                    })
                    .collect()
            };
            filters.insert(
                name.clone(),
                input_object(
                    &name,
                    Some(&format!(
                        "Boolean expression comparing fields on type \"{}\"",
                        s.name()
                    )),
                    fields,
                ),
            );
        }
        Some(name)
    };
    scalar_filter(&Scalar::Id, false);
    let mut entity_types = Vec::new();
    for (ei, e) in schema.entities.iter().enumerate() {
        if !schema.introspectable(ei) {
            continue;
        }
        let tn = &e.type_name;
        // The node type.
        let mut fields = vec![field(
            "nodeId",
            non_null(scalar("ID")),
            vec![],
            Some("Globally Unique Record Identifier"),
        )];
        for f in &e.fields {
            fields.push(field(
                &f.name,
                field_type(f),
                vec![],
                f.description.as_deref(),
            ));
        }
        for r in &e.relations {
            if !schema.introspectable(r.target) {
                continue;
            }
            let target = &schema.entities[r.target];
            if r.to_one {
                let t = named("OBJECT", &target.type_name);
                fields.push(field(
                    &r.name,
                    if r.non_null { non_null(t) } else { t },
                    vec![],
                    None,
                ));
            } else {
                fields.push(field(
                    &r.name,
                    named("OBJECT", &format!("{}Connection", target.type_name)),
                    connection_args(target),
                    None,
                ));
            }
        }
        // Computed fields (functions of the row), after the columns and relationships.
        for cf in e.computed.iter().filter(|c| fn_visible(schema, &c.ret)) {
            let (ty, args) = fn_return_type(schema, &cf.ret);
            fields.push(field(&cf.name, ty, args, cf.description.as_deref()));
        }
        entity_types.push(object(
            tn,
            e.description.as_deref(),
            fields,
            vec![named("INTERFACE", "Node")],
        ));
        // Connection and edge.
        let mut conn = vec![
            field(
                "edges",
                non_null(list(non_null(named("OBJECT", &format!("{tn}Edge"))))),
                vec![],
                None,
            ),
            field(
                "pageInfo",
                non_null(named("OBJECT", "PageInfo")),
                vec![],
                None,
            ),
        ];
        if e.total_count {
            conn.push(field(
                "totalCount",
                non_null(scalar("Int")),
                vec![],
                Some("The total number of records matching the `filter` criteria"),
            ));
        }
        if e.aggregate {
            conn.push(field(
                "aggregate",
                named("OBJECT", &format!("{tn}Aggregate")),
                vec![],
                Some("Aggregate functions calculated on the collection of `{tn}`"),
            ));
            let mut agg = vec![field("count", non_null(scalar("Int")), vec![], None)];
            for (func, label) in [
                ("sum", "Sum"),
                ("avg", "Avg"),
                ("min", "Min"),
                ("max", "Max"),
            ] {
                let cols: Vec<Value> = e
                    .fields
                    .iter()
                    .filter(|f| !f.is_array)
                    .filter(|f| match func {
                        "sum" | "avg" => f.scalar.is_numeric(),
                        _ => {
                            f.scalar.is_numeric()
                                || matches!(
                                    f.scalar,
                                    Scalar::String | Scalar::Date | Scalar::Time | Scalar::Datetime
                                )
                        }
                    })
                    .map(|f| {
                        let ty = match (func, &f.scalar) {
                            ("avg", _) => scalar("Float"),
                            ("sum", Scalar::Float) => scalar("Float"),
                            ("sum", Scalar::BigFloat) => scalar("BigFloat"),
                            ("sum", _) => scalar("BigInt"),
                            (_, s) => scalar_ref(s),
                        };
                        field(&f.name, ty, vec![], None)
                    })
                    .collect();
                if cols.is_empty() {
                    continue;
                }
                let name = format!("{tn}{label}AggregateResult");
                agg.push(field(func, named("OBJECT", &name), vec![], None));
                entity_types.push(object(&name, None, cols, vec![]));
            }
            entity_types.push(object(&format!("{tn}Aggregate"), None, agg, vec![]));
        }
        entity_types.push(object(&format!("{tn}Connection"), None, conn, vec![]));
        entity_types.push(object(
            &format!("{tn}Edge"),
            None,
            vec![
                field("cursor", non_null(scalar("String")), vec![], None),
                field("node", non_null(named("OBJECT", tn)), vec![], None),
            ],
            vec![],
        ));
        // Filter and order.
        let mut fl = vec![input(
            "nodeId",
            named("INPUT_OBJECT", "IDFilter"),
            None,
            None,
        )];
        let mut ob = Vec::new();
        for f in &e.fields {
            if let Some(name) = scalar_filter(&f.scalar, f.is_array) {
                fl.push(input(&f.name, named("INPUT_OBJECT", &name), None, None));
            }
            if !f.is_array && f.scalar != Scalar::Json {
                ob.push(input(
                    &f.name,
                    named("ENUM", "OrderByDirection"),
                    None,
                    None,
                ));
            }
        }
        let filter_ref = named("INPUT_OBJECT", &format!("{tn}Filter"));
        fl.push(input(
            "and",
            list(non_null(filter_ref.clone())),
            None,
            Some("Returns true only if all its inner filters are true, otherwise returns false"),
        ));
        fl.push(input("or", list(non_null(filter_ref.clone())), None, Some("Returns true if at least one of its inner filters is true, otherwise returns false")));
        fl.push(input("not", filter_ref, None, Some("Negates a filter")));
        entity_types.push(input_object(&format!("{tn}Filter"), None, fl));
        entity_types.push(input_object(&format!("{tn}OrderBy"), None, ob));
        let records = field(
            "records",
            non_null(list(non_null(named("OBJECT", tn)))),
            vec![],
            Some("Array of records impacted by the mutation"),
        );
        let affected = field(
            "affectedCount",
            non_null(scalar("Int")),
            vec![],
            Some("Count of the records impacted by the mutation"),
        );
        let plain = |f: &Field| {
            let base = scalar_ref(&f.scalar);
            if f.is_array {
                list(base)
            } else {
                base
            }
        };
        if e.insertable {
            let cols = e
                .fields
                .iter()
                .filter(|f| f.insertable)
                .map(|f| input(&f.name, plain(f), None, None))
                .collect();
            entity_types.push(input_object(&format!("{tn}InsertInput"), None, cols));
            entity_types.push(object(
                &format!("{tn}InsertResponse"),
                None,
                vec![affected.clone(), records.clone()],
                vec![],
            ));
        }
        if e.updatable {
            let cols = e
                .fields
                .iter()
                .filter(|f| f.updatable)
                .map(|f| input(&f.name, plain(f), None, None))
                .collect();
            entity_types.push(input_object(&format!("{tn}UpdateInput"), None, cols));
            entity_types.push(object(
                &format!("{tn}UpdateResponse"),
                None,
                vec![affected.clone(), records.clone()],
                vec![],
            ));
        }
        if e.deletable {
            entity_types.push(object(
                &format!("{tn}DeleteResponse"),
                None,
                vec![affected, records],
                vec![],
            ));
        }
    }
    for v in filters.into_values().chain(entity_types) {
        add(v);
    }
    add(object(
        "PageInfo",
        None,
        vec![
            field("endCursor", scalar("String"), vec![], None),
            field("hasNextPage", non_null(scalar("Boolean")), vec![], None),
            field("hasPreviousPage", non_null(scalar("Boolean")), vec![], None),
            field("startCursor", scalar("String"), vec![], None),
        ],
        vec![],
    ));
    let mut node = object(
        "Node",
        None,
        vec![field(
            "nodeId",
            non_null(scalar("ID")),
            vec![],
            Some("Retrieves a record by `ID`"),
        )],
        vec![],
    );
    node["kind"] = json!("INTERFACE");
    node["interfaces"] = json!([]);
    node["possibleTypes"] = Value::Array(
        schema
            .entities
            .iter()
            .enumerate()
            .filter(|(i, _)| schema.introspectable(*i))
            .map(|(_, e)| named("OBJECT", &e.type_name))
            .collect(),
    );
    add(node);
    let mut q = vec![field(
        "node",
        named("INTERFACE", "Node"),
        vec![input(
            "nodeId",
            non_null(scalar("ID")),
            None,
            Some("The record's `ID`"),
        )],
        Some("Retrieve a record by its `ID`"),
    )];
    let mut m = Vec::new();
    for (ei, e) in schema.entities.iter().enumerate() {
        if !schema.introspectable(ei) {
            continue;
        }
        let tn = &e.type_name;
        q.push(field(
            &e.collection,
            named("OBJECT", &format!("{tn}Connection")),
            connection_args(e),
            Some(&format!("A pagable collection of type `{tn}`")),
        ));
        let filter = input(
            "filter",
            named("INPUT_OBJECT", &format!("{tn}Filter")),
            None,
            Some("Restricts the mutation's impact to records matching the criteria"),
        );
        let at_most = input(
            "atMost",
            non_null(scalar("Int")),
            Some("1"),
            Some("The maximum number of records in the collection permitted to be affected"),
        );
        if e.insertable {
            m.push(field(
                &format!("insertInto{tn}Collection"),
                named("OBJECT", &format!("{tn}InsertResponse")),
                vec![input(
                    "objects",
                    non_null(list(non_null(named(
                        "INPUT_OBJECT",
                        &format!("{tn}InsertInput"),
                    )))),
                    None,
                    None,
                )],
                Some(&format!(
                    "Adds one or more `{tn}` records to the collection"
                )),
            ));
        }
        if e.updatable {
            m.push(field(
                &format!("update{tn}Collection"),
                non_null(named("OBJECT", &format!("{tn}UpdateResponse"))),
                vec![
                    input("set", non_null(named("INPUT_OBJECT", &format!("{tn}UpdateInput"))), None, Some("Fields that are set will be updated for all records matching the `filter`")),
                    filter.clone(),
                    at_most.clone(),
                ],
                Some(&format!("Updates zero or more records in the `{tn}` collection")),
            ));
        }
        if e.deletable {
            m.push(field(
                &format!("deleteFrom{tn}Collection"),
                non_null(named("OBJECT", &format!("{tn}DeleteResponse"))),
                vec![filter, at_most],
                Some(&format!(
                    "Deletes zero or more records from the `{tn}` collection"
                )),
            ));
        }
    }
    for func in &schema.functions {
        if !schema.introspection_schemas.contains(&func.schema) || !fn_visible(schema, &func.ret) {
            continue;
        }
        let mut args: Vec<Value> = func
            .args
            .iter()
            .map(|a| {
                let base = scalar_ref(&a.scalar);
                let t = if a.is_array { list(base) } else { base };
                input(
                    &a.name,
                    if a.required { non_null(t) } else { t },
                    None,
                    None,
                )
            })
            .collect();
        let (ty, extra) = fn_return_type(schema, &func.ret);
        args.extend(extra);
        let fl = field(&func.name, ty, args, func.description.as_deref());
        if func.volatile {
            m.push(fl);
        } else {
            q.push(fl);
        }
    }
    q.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    m.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    add(object(
        "Query",
        Some("The root type for querying data"),
        q,
        vec![],
    ));
    if !m.is_empty() {
        add(object(
            "Mutation",
            Some("The root type for creating and mutating data"),
            m,
            vec![],
        ));
    }
    t
}

struct Resolver {
    types: BTreeMap<String, Value>,
    has_mutation: bool,
}

const MAX_INTROSPECTION_DEPTH: usize = 20;

impl Resolver {
    /// A `__Type` value: references to named types resolve to the full type.
    fn full<'v>(&'v self, t: &'v Value) -> &'v Value {
        match t["kind"].as_str() {
            Some("NON_NULL") | Some("LIST") => t,
            _ => t["name"]
                .as_str()
                .and_then(|n| self.types.get(n))
                .unwrap_or(t),
        }
    }

    fn resolve(&self, v: &Value, ty: &str, sels: &[Sel], depth: usize) -> Result<Value, GqlError> {
        if depth > MAX_INTROSPECTION_DEPTH {
            return Err(GqlError::new("Introspection query is nested too deeply"));
        }
        let v = if ty == "__Type" { self.full(v) } else { v };
        let mut out = Map::new();
        for f in fields_for(sels, ty, &[]) {
            let child = |name: &str| -> Option<&'static str> {
                Some(match (ty, name) {
                    ("__Schema", "types") => "__Type",
                    ("__Schema", "queryType" | "mutationType" | "subscriptionType") => "__Type",
                    ("__Schema", "directives") => "__Directive",
                    ("__Type", "fields") => "__Field",
                    ("__Type", "inputFields") => "__InputValue",
                    ("__Type", "interfaces" | "possibleTypes" | "ofType") => "__Type",
                    ("__Type", "enumValues") => "__EnumValue",
                    ("__Field", "args") | ("__Directive", "args") => "__InputValue",
                    ("__Field" | "__InputValue", "type") => "__Type",
                    _ => return None,
                })
            };
            let val = if f.name == "__typename" {
                Value::String(ty.to_string())
            } else {
                let raw = v.get(&f.name).ok_or_else(|| {
                    GqlError::new(format!("Unknown field \"{}\" on type {ty}", f.name))
                        .at(f.line, f.column)
                })?;
                match (child(&f.name), raw) {
                    (Some(_), Value::Null) => Value::Null,
                    (Some(ct), Value::Array(items)) => Value::Array(
                        items
                            .iter()
                            .map(|i| self.resolve(i, ct, &f.selections, depth + 1))
                            .collect::<Result<_, _>>()?,
                    ),
                    (Some(ct), item) => self.resolve(item, ct, &f.selections, depth + 1)?,
                    (None, scalar) => scalar.clone(),
                }
            };
            out.insert(f.key.clone(), val);
        }
        Ok(Value::Object(out))
    }

    fn schema_value(&self) -> Value {
        let dir_args = vec![input("if", non_null(scalar("Boolean")), None, None)];
        let locations = json!(["FIELD", "FRAGMENT_SPREAD", "INLINE_FRAGMENT"]);
        json!({
            "description": null,
            "types": self.types.values().map(|t| named(t["kind"].as_str().unwrap_or("OBJECT"), t["name"].as_str().unwrap_or(""))).collect::<Vec<_>>(),
            "queryType": named("OBJECT", "Query"),
            "mutationType": if self.has_mutation { named("OBJECT", "Mutation") } else { Value::Null },
            "subscriptionType": null,
            "directives": [
                {"name": "include", "description": "Directs the executor to include this field or fragment only when the `if` argument is true.", "locations": locations, "args": dir_args, "isRepeatable": false},
                {"name": "skip", "description": "Directs the executor to skip this field or fragment when the `if` argument is true.", "locations": locations, "args": dir_args, "isRepeatable": false},
            ],
        })
    }
}

/// `__schema` or `__type(name:)` for the selection.
pub fn resolve(schema: &Schema, f: &FieldSel) -> Result<Value, GqlError> {
    let types = types(schema);
    let r = Resolver {
        has_mutation: types.contains_key("Mutation"),
        types,
    };
    match f.name.as_str() {
        "__schema" => r.resolve(&r.schema_value(), "__Schema", &f.selections, 0),
        _ => {
            let Some(name) = f.args.get("name").and_then(|v| v.as_str()) else {
                return Err(
                    GqlError::new("Invalid input for String type (name)").at(f.line, f.column)
                );
            };
            match r.types.get(name) {
                Some(t) => r.resolve(t, "__Type", &f.selections, 0),
                None => Ok(Value::Null),
            }
        }
    }
}
