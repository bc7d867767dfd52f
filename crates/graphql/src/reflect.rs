//! The GraphQL schema one role sees, reflected from the REST schema cache with pg_graphql's
//! rules: every table/view of the exposed schemas the role may select and that has a primary
//! key (a view's by `@graphql({"primary_key_columns": [...]})`), named as pg_graphql names
//! them (`inflect_names` per schema), with `@graphql({...})` comment directives.

use std::collections::HashMap;

use agencyflow_rest::schema::{Column, RelationKind, SchemaCache, Table};
use serde_json::Value;

/// A GraphQL scalar (pg_graphql's set) or one of the schema's enums.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scalar {
    Int,
    Float,
    String,
    Boolean,
    BigInt,
    BigFloat,
    Uuid,
    Date,
    Time,
    Datetime,
    Json,
    Opaque,
    Id,
    Cursor,
    /// An enum type, by its GraphQL name.
    Enum(String),
}

impl Scalar {
    pub fn name(&self) -> &str {
        match self {
            Scalar::Int => "Int",
            Scalar::Float => "Float",
            Scalar::String => "String",
            Scalar::Boolean => "Boolean",
            Scalar::BigInt => "BigInt",
            Scalar::BigFloat => "BigFloat",
            Scalar::Uuid => "UUID",
            Scalar::Date => "Date",
            Scalar::Time => "Time",
            Scalar::Datetime => "Datetime",
            Scalar::Json => "JSON",
            Scalar::Opaque => "Opaque",
            Scalar::Id => "ID",
            Scalar::Cursor => "Cursor",
            Scalar::Enum(n) => n,
        }
    }

    /// The scalar a PostgreSQL type (its `typname`, arrays by their element) reflects as.
    fn of_type(base: &str) -> Scalar {
        match base {
            "int2" | "int4" => Scalar::Int,
            "int8" => Scalar::BigInt,
            "float4" | "float8" => Scalar::Float,
            "numeric" => Scalar::BigFloat,
            "text" | "varchar" | "bpchar" | "citext" | "name" | "char" => Scalar::String,
            "bool" => Scalar::Boolean,
            "uuid" => Scalar::Uuid,
            "date" => Scalar::Date,
            "time" | "timetz" => Scalar::Time,
            "timestamp" | "timestamptz" => Scalar::Datetime,
            "json" | "jsonb" => Scalar::Json,
            _ => Scalar::Opaque,
        }
    }

    /// Filter operators pg_graphql offers for this scalar (`<Scalar>Filter`).
    pub fn filter_ops(&self) -> &'static [&'static str] {
        match self {
            Scalar::String => &[
                "eq",
                "neq",
                "gt",
                "gte",
                "lt",
                "lte",
                "in",
                "is",
                "startsWith",
                "like",
                "ilike",
                "regex",
                "iregex",
            ],
            Scalar::Int
            | Scalar::Float
            | Scalar::BigInt
            | Scalar::BigFloat
            | Scalar::Date
            | Scalar::Time
            | Scalar::Datetime => &["eq", "neq", "gt", "gte", "lt", "lte", "in", "is"],
            Scalar::Boolean => &["eq", "is"],
            Scalar::Uuid | Scalar::Enum(_) => &["eq", "neq", "in", "is"],
            Scalar::Id => &["eq"],
            Scalar::Opaque => &["eq", "is"],
            Scalar::Json | Scalar::Cursor => &[],
        }
    }

    pub fn is_numeric(&self) -> bool {
        matches!(
            self,
            Scalar::Int | Scalar::Float | Scalar::BigInt | Scalar::BigFloat
        )
    }
}

#[derive(Debug, Clone)]
pub struct Field {
    /// The GraphQL field name.
    pub name: String,
    /// The SQL column.
    pub column: String,
    pub scalar: Scalar,
    pub is_array: bool,
    pub nullable: bool,
    /// What filter values are cast to (the type without modifier).
    pub cast: String,
    /// What written values are cast to (the declared type with its modifier).
    pub write_cast: String,
    /// `typname` of the column's type (arrays: `_text`).
    pub base_type: String,
    pub description: Option<String>,
    pub insertable: bool,
    pub updatable: bool,
}

#[derive(Debug, Clone)]
pub struct Relation {
    pub name: String,
    /// Index of the target entity.
    pub target: usize,
    /// (column of this entity, column of the target)
    pub pairs: Vec<(String, String)>,
    /// Many-to-one / one-to-one: an object; otherwise a `<Target>Connection`.
    pub to_one: bool,
    /// A to-one relation over non-null columns is non-null.
    pub non_null: bool,
}

#[derive(Debug, Clone)]
pub struct Entity {
    pub schema: String,
    pub table: String,
    /// `<Table>`: the node type's name; the other type names derive from it.
    pub type_name: String,
    /// `<table>Collection`.
    pub collection: String,
    pub description: Option<String>,
    pub fields: Vec<Field>,
    /// Indices into `fields`.
    pub primary_key: Vec<usize>,
    pub relations: Vec<Relation>,
    pub insertable: bool,
    pub updatable: bool,
    pub deletable: bool,
    pub total_count: bool,
    pub aggregate: bool,
    pub max_rows: Option<i64>,
    /// Every column of the relation in order (the row type), for computed fields' argument.
    pub row_columns: Vec<String>,
    /// Functions of this relation's row type (pg_graphql's computed fields).
    pub computed: Vec<Computed>,
}

/// A computed field: `schema.fn(row)` of a function whose only argument is the entity's row
/// type (pg_graphql's "extending types with functions" and computed relationships).
#[derive(Debug, Clone)]
pub struct Computed {
    pub name: String,
    pub schema: String,
    pub sql_name: String,
    /// What it returns: a scalar (or a list of one), one record of an entity, or a set of
    /// records of an entity (a `<Target>Connection` with the collection arguments).
    pub ret: FnReturn,
    pub description: Option<String>,
}

impl Entity {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
    pub fn relation(&self, name: &str) -> Option<&Relation> {
        self.relations.iter().find(|r| r.name == name)
    }
    pub fn computed_field(&self, name: &str) -> Option<&Computed> {
        self.computed.iter().find(|c| c.name == name)
    }
    pub fn pk_fields(&self) -> impl Iterator<Item = &Field> {
        self.primary_key.iter().map(|i| &self.fields[*i])
    }
    pub fn qualified_sql(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }
}

/// An argument of a function field.
#[derive(Debug, Clone)]
pub struct ArgDef {
    pub name: String,
    pub sql_name: String,
    pub scalar: Scalar,
    pub is_array: bool,
    /// What the value is cast to.
    pub cast: String,
    /// No default: the argument is required (non-null).
    pub required: bool,
}

/// What a function field returns.
#[derive(Debug, Clone)]
pub enum FnReturn {
    Scalar {
        scalar: Scalar,
        is_array: bool,
    },
    /// One row of a reflected entity (index), or null.
    Row(usize),
    /// `SETOF` a reflected entity: a `<Table>Connection`.
    Rows(usize),
}

/// A user-defined function as a Query field (stable/immutable) or a Mutation field (volatile).
#[derive(Debug, Clone)]
pub struct FunctionDef {
    pub name: String,
    pub schema: String,
    pub sql_name: String,
    pub args: Vec<ArgDef>,
    pub ret: FnReturn,
    pub volatile: bool,
    pub description: Option<String>,
}

impl FunctionDef {
    pub fn arg(&self, name: &str) -> Option<&ArgDef> {
        self.args.iter().find(|a| a.name == name)
    }
}

#[derive(Debug, Clone)]
pub struct EnumDef {
    pub name: String,
    /// The GraphQL values (SQL labels renamed by the type's `mappings` directive).
    pub values: Vec<String>,
    /// `mappings`: (SQL label, GraphQL value), for the labels it renames.
    pub mappings: Vec<(String, String)>,
}

impl EnumDef {
    /// The SQL label of a GraphQL value, if it is one of the enum's.
    pub fn sql_label<'e>(&'e self, value: &'e str) -> Option<&'e str> {
        if let Some((sql, _)) = self.mappings.iter().find(|(_, g)| g == value) {
            return Some(sql);
        }
        // A label renamed by the mappings is no longer a value under its SQL name.
        if self.mappings.iter().any(|(sql, _)| sql == value) {
            return None;
        }
        self.values.iter().any(|v| v == value).then_some(value)
    }
}

/// One role's GraphQL schema.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    pub role: String,
    pub entities: Vec<Entity>,
    pub enums: Vec<EnumDef>,
    pub functions: Vec<FunctionDef>,
    /// `@graphql({"introspection": true})` on any exposed schema.
    pub introspection: bool,
    /// The exposed schemas whose comment enables introspection: only their types are listed
    /// (pg_graphql 1.6's per-schema rule; the others still answer queries).
    pub introspection_schemas: Vec<String>,
    by_type: HashMap<String, usize>,
    by_collection: HashMap<String, usize>,
}

impl Schema {
    pub fn entity_by_type(&self, name: &str) -> Option<&Entity> {
        self.by_type.get(name).map(|i| &self.entities[*i])
    }
    pub fn entity_by_collection(&self, name: &str) -> Option<&Entity> {
        self.by_collection.get(name).map(|i| &self.entities[*i])
    }
    pub fn entity_by_table(&self, schema: &str, table: &str) -> Option<&Entity> {
        self.entities
            .iter()
            .find(|e| e.schema == schema && e.table == table)
    }
    /// A function field of the Query (`mutation` false) or Mutation type.
    pub fn function(&self, name: &str, mutation: bool) -> Option<&FunctionDef> {
        self.functions
            .iter()
            .find(|f| f.name == name && f.volatile == mutation)
    }
    /// Whether introspection lists the entity (its schema enables introspection).
    pub fn introspectable(&self, i: usize) -> bool {
        self.introspection_schemas
            .iter()
            .any(|s| *s == self.entities[i].schema)
    }
    pub fn enum_def(&self, name: &str) -> Option<&EnumDef> {
        self.enums.iter().find(|e| e.name == name)
    }
}

/// The JSON inside `@graphql(...)` in a comment, if any.
pub fn directive(comment: Option<&str>) -> Option<Value> {
    let c = comment?;
    let start = c.find("@graphql(")? + "@graphql(".len();
    // The JSON object ends at its matching brace.
    let rest = &c[start..];
    let mut depth = 0i32;
    let mut in_str = false;
    let mut esc = false;
    for (i, ch) in rest.char_indices() {
        if in_str {
            match ch {
                _ if esc => esc = false,
                '\\' => esc = true,
                '"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match ch {
            '"' => in_str = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return serde_json::from_str(&rest[..=i]).ok();
                }
            }
            _ => {}
        }
    }
    None
}

/// A comment without its directive, as a description (or the directive's `description`).
fn description(comment: Option<&str>) -> Option<String> {
    let d = directive(comment);
    if let Some(s) = d
        .as_ref()
        .and_then(|d| d.get("description"))
        .and_then(|v| v.as_str())
    {
        return Some(s.to_string());
    }
    let c = comment?;
    let text = match c.find("@graphql(") {
        Some(i) => c[..i].trim(),
        None => c.trim(),
    };
    (!text.is_empty()).then(|| text.to_string())
}

/// pg_graphql's `to_base_type_name`: `account_BY_email` → `AccountByEmail` when inflecting.
pub fn base_name(name: &str, inflect: bool) -> String {
    if !inflect {
        return name.to_string();
    }
    let mut out = String::new();
    let mut prev_alnum = false;
    for ch in name.chars() {
        if prev_alnum {
            out.push(ch);
        } else {
            out.extend(ch.to_uppercase());
        }
        prev_alnum = ch.is_alphanumeric();
    }
    out.replace('_', "")
}

pub fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn valid_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f == '_' || f.is_ascii_alphabetic())
        && c.all(|ch| ch == '_' || ch.is_ascii_alphanumeric())
}

fn enabled(d: &Option<Value>, key: &str) -> bool {
    d.as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| v.get("enabled"))
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

fn enum_name(col: &Column, inflect: bool) -> String {
    if let Some(n) = directive(col.enum_comment.as_deref())
        .as_ref()
        .and_then(|d| d.get("name"))
        .and_then(|v| v.as_str())
    {
        return n.to_string();
    }
    // `public.crm_sentiment` / `"My Type"`: the type's own name.
    let raw = col.pg_type.rsplit('.').next().unwrap_or(&col.pg_type);
    base_name(raw.trim_matches('"'), inflect)
}

/// An enum type as GraphQL sees it: its labels, renamed by the type comment's
/// `@graphql({"mappings": {"sql-label": "GRAPHQL_VALUE"}})`.
fn enum_def(name: String, col: &Column, labels: &[String]) -> EnumDef {
    let mappings: Vec<(String, String)> = directive(col.enum_comment.as_deref())
        .as_ref()
        .and_then(|d| d.get("mappings"))
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .filter(|(sql, _)| labels.contains(sql))
                .filter_map(|(sql, g)| g.as_str().map(|g| (sql.clone(), g.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let values = labels
        .iter()
        .map(|l| {
            mappings
                .iter()
                .find(|(sql, _)| sql == l)
                .map(|(_, g)| g.clone())
                .unwrap_or_else(|| l.clone())
        })
        .collect();
    EnumDef {
        name,
        values,
        mappings,
    }
}

/// Reflects the schema `role` sees.
pub fn reflect(cache: &SchemaCache, role: &str) -> Schema {
    let schema_directive: HashMap<&str, Option<Value>> = cache
        .schemas
        .iter()
        .map(|s| (s.name.as_str(), directive(s.comment.as_deref())))
        .collect();
    let inflect_of = |schema: &str| {
        schema_directive
            .get(schema)
            .and_then(|d| d.as_ref())
            .and_then(|d| d.get("inflect_names"))
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    };
    let mut introspection_schemas: Vec<String> = schema_directive
        .iter()
        .filter(|(_, d)| {
            d.as_ref()
                .and_then(|d| d.get("introspection"))
                .and_then(|v| v.as_bool())
                .unwrap_or(false)
        })
        .map(|(s, _)| s.to_string())
        .collect();
    introspection_schemas.sort();
    let mut out = Schema {
        role: role.to_string(),
        introspection: !introspection_schemas.is_empty(),
        introspection_schemas,
        ..Schema::default()
    };
    let mut enums: HashMap<String, EnumDef> = HashMap::new();
    let mut tables: Vec<&Table> = Vec::new();
    for t in &cache.tables {
        let Some(p) = t.privilege(role) else { continue };
        // pg_graphql reflects what the role may select; a table whose row-level security has
        // no policy letting the role read a row (anon on tenant tables) is left out too.
        if !p.select || !p.rows_visible {
            continue;
        }
        let d = directive(t.comment.as_deref());
        let inflect = inflect_of(&t.schema);
        let type_name = d
            .as_ref()
            .and_then(|d| d.get("name"))
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| base_name(&t.name, inflect));
        if !valid_name(&type_name) {
            continue;
        }
        let pk_cols: Vec<String> = match t.kind {
            RelationKind::Table => t.primary_key.clone(),
            _ => d
                .as_ref()
                .and_then(|d| d.get("primary_key_columns"))
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        };
        if pk_cols.is_empty() || pk_cols.iter().any(|c| t.column(c).is_none()) {
            continue;
        }
        let mut fields = Vec::new();
        for c in &t.columns {
            let cd = directive(c.comment.as_deref());
            let name = cd
                .as_ref()
                .and_then(|d| d.get("name"))
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| {
                    let b = base_name(&c.name, inflect);
                    if inflect {
                        lower_first(&b)
                    } else {
                        b
                    }
                });
            if !valid_name(&name) {
                continue;
            }
            let elem = if c.is_array() {
                c.base_type.trim_start_matches('_')
            } else {
                c.base_type.as_str()
            };
            let scalar = match &c.enum_values {
                Some(values) if !c.is_array() => {
                    let en = enum_name(c, inflect);
                    enums
                        .entry(en.clone())
                        .or_insert_with(|| enum_def(en.clone(), c, values));
                    Scalar::Enum(en)
                }
                _ => Scalar::of_type(elem),
            };
            fields.push(Field {
                name,
                column: c.name.clone(),
                scalar,
                is_array: c.is_array(),
                nullable: c.nullable,
                cast: c.filter_type().to_string(),
                write_cast: c.pg_type.clone(),
                base_type: c.base_type.clone(),
                description: description(c.comment.as_deref()),
                insertable: !c.generated,
                updatable: !c.generated,
            });
        }
        let primary_key: Vec<usize> = pk_cols
            .iter()
            .filter_map(|c| fields.iter().position(|f| &f.column == c))
            .collect();
        if primary_key.len() != pk_cols.len() {
            continue;
        }
        let collection = format!("{}Collection", lower_first(&type_name));
        let max_rows = d
            .as_ref()
            .and_then(|d| d.get("max_rows"))
            .and_then(|v| v.as_i64());
        out.entities.push(Entity {
            schema: t.schema.clone(),
            table: t.name.clone(),
            type_name,
            collection,
            description: description(t.comment.as_deref()),
            fields,
            primary_key,
            relations: Vec::new(),
            insertable: p.insert && t.insertable,
            updatable: p.update && t.updatable,
            deletable: p.delete && t.deletable,
            total_count: enabled(&d, "totalCount"),
            aggregate: enabled(&d, "aggregate"),
            max_rows,
            row_columns: t.columns.iter().map(|c| c.name.clone()).collect(),
            computed: Vec::new(),
        });
        tables.push(t);
    }
    // Relationships from foreign keys between reflected entities (both directions), and from
    // `foreign_keys` directives on views.
    let index: HashMap<(String, String), usize> = out
        .entities
        .iter()
        .enumerate()
        .map(|(i, e)| ((e.schema.clone(), e.table.clone()), i))
        .collect();
    struct Fk {
        local: usize,
        foreign: usize,
        local_cols: Vec<String>,
        foreign_cols: Vec<String>,
        local_name: Option<String>,
        foreign_name: Option<String>,
    }
    let mut fks: Vec<Fk> = Vec::new();
    for fk in &cache.foreign_keys {
        let (Some(&l), Some(&f)) = (
            index.get(&(fk.schema.clone(), fk.table.clone())),
            index.get(&(fk.ref_schema.clone(), fk.ref_table.clone())),
        ) else {
            continue;
        };
        // `comment on constraint ... is e'@graphql({"local_name": ..., "foreign_name": ...})'`
        let d = directive(fk.comment.as_deref());
        let name_of = |key: &str| {
            d.as_ref()
                .and_then(|d| d.get(key))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        fks.push(Fk {
            local: l,
            foreign: f,
            local_cols: fk.columns.clone(),
            foreign_cols: fk.ref_columns.clone(),
            local_name: name_of("local_name"),
            foreign_name: name_of("foreign_name"),
        });
    }
    for (i, t) in tables.iter().enumerate() {
        let Some(d) = directive(t.comment.as_deref()) else {
            continue;
        };
        let Some(list) = d.get("foreign_keys").and_then(|v| v.as_array()) else {
            continue;
        };
        for k in list {
            let s = |key: &str| k.get(key).and_then(|v| v.as_str()).map(str::to_string);
            let cols = |key: &str| -> Vec<String> {
                k.get(key)
                    .and_then(|v| v.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|c| c.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let (Some(fs), Some(ft)) = (s("foreign_schema"), s("foreign_table")) else {
                continue;
            };
            let Some(&f) = index.get(&(fs, ft)) else {
                continue;
            };
            fks.push(Fk {
                local: i,
                foreign: f,
                local_cols: cols("local_columns"),
                foreign_cols: cols("foreign_columns"),
                local_name: s("local_name"),
                foreign_name: s("foreign_name"),
            });
        }
    }
    for fk in &fks {
        let local_table = tables[fk.local];
        // Many-to-one on the local table.
        let foreign_type = out.entities[fk.foreign].type_name.clone();
        let inflect = inflect_of(&out.entities[fk.foreign].schema);
        let base_field = lower_first(&foreign_type);
        let name = fk
            .foreign_name
            .clone()
            .unwrap_or_else(|| match &fk.local_cols[..] {
                [c] => {
                    let stripped = if inflect {
                        c.strip_suffix("_id")
                    } else {
                        c.strip_suffix("Id")
                    };
                    match stripped {
                        Some(s) => lower_first(&base_name(s, inflect)),
                        None => base_field.clone(),
                    }
                }
                _ => base_field.clone(),
            });
        let non_null = fk
            .local_cols
            .iter()
            .all(|c| local_table.column(c).is_some_and(|c| !c.nullable));
        push_relation(
            &mut out.entities[fk.local],
            Relation {
                name,
                target: fk.foreign,
                pairs: fk
                    .local_cols
                    .iter()
                    .cloned()
                    .zip(fk.foreign_cols.iter().cloned())
                    .collect(),
                to_one: true,
                non_null,
            },
        );
        // The reverse: a collection, or an object when the local columns are unique (they
        // contain a unique key: `(org_id, snapshot_id)` with `unique (snapshot_id)`).
        let unique = cache
            .unique_keys(&local_table.schema, &local_table.name)
            .any(|k| k.columns.iter().all(|c| fk.local_cols.contains(c)));
        let local_type = out.entities[fk.local].type_name.clone();
        let local_field = lower_first(&local_type);
        let name = fk.local_name.clone().unwrap_or_else(|| {
            if unique {
                local_field.clone()
            } else {
                format!("{local_field}Collection")
            }
        });
        push_relation(
            &mut out.entities[fk.foreign],
            Relation {
                name,
                target: fk.local,
                pairs: fk
                    .foreign_cols
                    .iter()
                    .cloned()
                    .zip(fk.local_cols.iter().cloned())
                    .collect(),
                to_one: unique,
                non_null: false,
            },
        );
    }
    out.by_type = out
        .entities
        .iter()
        .enumerate()
        .map(|(i, e)| (e.type_name.clone(), i))
        .collect();
    out.by_collection = out
        .entities
        .iter()
        .enumerate()
        .map(|(i, e)| (e.collection.clone(), i))
        .collect();
    out.functions = reflect_functions(cache, role, &out, &inflect_of);
    reflect_computed(cache, role, &mut out, &inflect_of);
    let mut enums: Vec<EnumDef> = enums.into_values().collect();
    enums.sort_by(|a, b| a.name.cmp(&b.name));
    out.enums = enums;
    out
}

/// A relation whose name a column or an earlier relation already has is left out (pg_graphql
/// would show a conflict; the first one wins here).
fn push_relation(e: &mut Entity, r: Relation) {
    if e.fields.iter().any(|f| f.name == r.name) || e.relations.iter().any(|x| x.name == r.name) {
        return;
    }
    e.relations.push(r);
}

/// User-defined functions the role may execute: every input argument named, returning a
/// scalar, a reflected entity's row, or a set of them. Functions of one row-type argument
/// (computed fields) and those returning records, void or triggers are left out.
fn reflect_functions(
    cache: &SchemaCache,
    role: &str,
    schema: &Schema,
    inflect_of: &dyn Fn(&str) -> bool,
) -> Vec<FunctionDef> {
    use agencyflow_rest::schema::Volatility;
    let mut out: Vec<FunctionDef> = Vec::new();
    for f in &cache.functions {
        if !f.executable_by.iter().any(|r| r == role)
            || f.arg_relation.is_some()
            || f.return_base_type == "void"
            || f.return_base_type == "record"
            || f.return_media_type.is_some()
        {
            continue;
        }
        if f.args.iter().any(|a| !a.is_input() || a.name.is_empty()) {
            continue;
        }
        let inflect = inflect_of(&f.schema);
        let d = directive(f.comment.as_deref());
        let name = d
            .as_ref()
            .and_then(|d| d.get("name"))
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| {
                lower_first(&base_name(
                    f.name.strip_prefix('_').unwrap_or(&f.name),
                    inflect,
                ))
            });
        if !valid_name(&name) {
            continue;
        }
        let ret = match &f.return_relation {
            Some(qn) => match schema
                .entities
                .iter()
                .position(|e| e.schema == qn.schema && e.table == qn.name)
            {
                Some(i) if f.returns_set => FnReturn::Rows(i),
                Some(i) => FnReturn::Row(i),
                None => continue,
            },
            None if f.returns_set => continue,
            None => {
                let is_array = f.return_category == "A";
                FnReturn::Scalar {
                    scalar: Scalar::of_type(f.return_base_type.trim_start_matches('_')),
                    is_array,
                }
            }
        };
        let args = f
            .inputs()
            .map(|a| {
                let arg_name = base_name(&a.name, inflect);
                ArgDef {
                    name: if inflect {
                        lower_first(&arg_name)
                    } else {
                        arg_name
                    },
                    sql_name: a.name.clone(),
                    scalar: Scalar::of_type(a.base_type.trim_start_matches('_')),
                    is_array: a.category == "A",
                    cast: a.call_type().to_string(),
                    required: !a.has_default,
                }
            })
            .collect();
        // Overloaded functions are left out, as pg_graphql leaves them out (a SQL name two
        // functions of the exposed schemas share); two names mapping to one field name too.
        let volatile = f.volatility == Volatility::Volatile;
        if cache.functions.iter().filter(|x| x.name == f.name).count() > 1
            || out.iter().any(|x| x.name == name && x.volatile == volatile)
        {
            continue;
        }
        out.push(FunctionDef {
            name,
            schema: f.schema.clone(),
            sql_name: f.name.clone(),
            args,
            ret,
            volatile,
            description: description(f.comment.as_deref()),
        });
    }
    out
}

/// Computed fields: functions of exactly one argument, the row type of a reflected entity,
/// that the role may execute, become fields of that entity's type (pg_graphql: a scalar, a
/// list, one record of an entity, or `SETOF` an entity as a connection), whatever their
/// volatility. Functions returning `record` (OUT parameters, `TABLE(...)`), `void`, a set of
/// scalars, or an entity the role does not see are left out, as pg_graphql leaves them out.
fn reflect_computed(
    cache: &SchemaCache,
    role: &str,
    schema: &mut Schema,
    inflect_of: &dyn Fn(&str) -> bool,
) {
    for f in &cache.functions {
        let Some(arg) = &f.arg_relation else { continue };
        if !f.executable_by.iter().any(|r| r == role)
            || f.inputs().count() != 1
            || f.return_base_type == "void"
            || f.return_base_type == "record"
            || f.return_media_type.is_some()
        {
            continue;
        }
        let Some(owner) = schema
            .entities
            .iter()
            .position(|e| e.schema == arg.schema && e.table == arg.name)
        else {
            continue;
        };
        let ret = match &f.return_relation {
            Some(qn) => match schema
                .entities
                .iter()
                .position(|e| e.schema == qn.schema && e.table == qn.name)
            {
                Some(i) if f.returns_set => FnReturn::Rows(i),
                Some(i) => FnReturn::Row(i),
                None => continue,
            },
            None if f.returns_set => continue,
            None => FnReturn::Scalar {
                scalar: Scalar::of_type(f.return_base_type.trim_start_matches('_')),
                is_array: f.return_category == "A",
            },
        };
        let d = directive(f.comment.as_deref());
        let name = d
            .as_ref()
            .and_then(|d| d.get("name"))
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| {
                lower_first(&base_name(
                    f.name.strip_prefix('_').unwrap_or(&f.name),
                    inflect_of(&f.schema),
                ))
            });
        let e = &mut schema.entities[owner];
        if !valid_name(&name)
            || name == "nodeId"
            || e.field(&name).is_some()
            || e.relation(&name).is_some()
            || e.computed_field(&name).is_some()
        {
            continue;
        }
        e.computed.push(Computed {
            name,
            schema: f.schema.clone(),
            sql_name: f.name.clone(),
            ret,
            description: description(f.comment.as_deref()),
        });
    }
}
