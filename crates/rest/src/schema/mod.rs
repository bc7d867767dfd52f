//! Stage 0: the schema cache (relations, columns, keys, relationships, functions),
//! loaded by the server with [`SCHEMA_CACHE_SQL`] and built with [`SchemaCache::from_json`].

#[cfg(test)]
pub(crate) mod fixture;
mod relationships;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use relationships::{Cardinality, Relationship};

/// One query, `$1::text[]` = the exposed schemas, returning one `json` column.
pub const SCHEMA_CACHE_SQL: &str = include_str!("catalog.sql");

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QualifiedName {
    pub schema: String,
    pub name: String,
}

impl QualifiedName {
    pub fn new(schema: &str, name: &str) -> Self {
        QualifiedName {
            schema: schema.to_string(),
            name: name.to_string(),
        }
    }
}

impl std::fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelationKind {
    Table,
    View,
    MaterializedView,
    ForeignTable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    /// SQL naming this column's declared type with its modifier (`integer`, `character(3)`,
    /// `numeric(12,2)`, `public.status`, `text[]`): what written values are cast to.
    #[serde(rename = "type")]
    pub pg_type: String,
    /// The same type without modifier (`bpchar`, `numeric`; a domain's base type): what
    /// filter values are cast to, so a comparison never truncates the value it compares.
    /// Empty: `pg_type`.
    #[serde(default)]
    pub cast_type: String,
    /// The declared type with its modifier, for documentation (`character varying(200)`).
    pub data_type: String,
    /// `typname` of the type (or the domain's base type): `jsonb`, `int4`, `_text`.
    pub base_type: String,
    /// `pg_type.typcategory`: `A` array, `R` range, `S` string, `N` numeric...
    pub category: String,
    pub nullable: bool,
    pub default: Option<String>,
    #[serde(default)]
    pub generated: bool,
    pub position: i32,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default, rename = "enum")]
    pub enum_values: Option<Vec<String>>,
    /// The comment of the column's enum type (`/graphql/v1` reads its `@graphql` directive).
    #[serde(default)]
    pub enum_comment: Option<String>,
}

impl Column {
    pub fn is_json(&self) -> bool {
        matches!(self.base_type.as_str(), "json" | "jsonb")
    }

    pub fn is_tsvector(&self) -> bool {
        self.base_type == "tsvector"
    }

    pub fn is_array(&self) -> bool {
        self.category == "A"
    }

    /// The type filter values are cast to (see `cast_type`).
    pub fn filter_type(&self) -> &str {
        if self.cast_type.is_empty() {
            &self.pg_type
        } else {
            &self.cast_type
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TablePrivilege {
    pub role: String,
    pub select: bool,
    pub insert: bool,
    pub update: bool,
    pub delete: bool,
    /// Row-level security lets the role read some rows (no RLS, BYPASSRLS, or a permissive
    /// SELECT/ALL policy for it): `/graphql/v1` reflects only such tables.
    #[serde(default = "yes")]
    pub rows_visible: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub schema: String,
    pub name: String,
    pub kind: RelationKind,
    #[serde(default)]
    pub comment: Option<String>,
    pub insertable: bool,
    pub updatable: bool,
    pub deletable: bool,
    pub columns: Vec<Column>,
    #[serde(default)]
    pub privileges: Vec<TablePrivilege>,
    /// Filled from `keys` (views inherit their base table's when all PK columns are exposed).
    #[serde(default)]
    pub primary_key: Vec<String>,
}

impl Table {
    pub fn qualified(&self) -> QualifiedName {
        QualifiedName::new(&self.schema, &self.name)
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn privilege(&self, role: &str) -> Option<&TablePrivilege> {
        self.privileges.iter().find(|p| p.role == role)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UniqueKey {
    pub schema: String,
    pub name: String,
    pub primary: bool,
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignKey {
    pub name: String,
    pub schema: String,
    pub table: String,
    pub columns: Vec<String>,
    pub ref_schema: String,
    pub ref_table: String,
    pub ref_columns: Vec<String>,
    /// The constraint's comment (`/graphql/v1` reads its `@graphql` directive).
    #[serde(default)]
    pub comment: Option<String>,
}

/// A view column traced to the base-table column it shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewColumn {
    pub schema: String,
    pub view: String,
    pub column: String,
    pub base_schema: String,
    pub base_table: String,
    pub base_column: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArgMode {
    #[serde(rename = "i")]
    In,
    #[serde(rename = "o")]
    Out,
    #[serde(rename = "b")]
    InOut,
    #[serde(rename = "v")]
    Variadic,
    #[serde(rename = "t")]
    Table,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionArg {
    pub name: String,
    /// SQL naming the argument's type (a domain by its name): what it is shown as.
    #[serde(rename = "type")]
    pub pg_type: String,
    /// What the argument's value is cast to: a domain's base type, whose cast never applies
    /// the domain's modifier by truncating (the call then coerces to the domain, refusing an
    /// over-long value). Empty: `pg_type`.
    #[serde(default)]
    pub cast_type: String,
    pub base_type: String,
    pub category: String,
    pub mode: ArgMode,
    pub has_default: bool,
}

impl FunctionArg {
    pub fn is_input(&self) -> bool {
        matches!(self.mode, ArgMode::In | ArgMode::InOut | ArgMode::Variadic)
    }

    pub fn is_output(&self) -> bool {
        matches!(self.mode, ArgMode::Out | ArgMode::InOut | ArgMode::Table)
    }

    /// The type the argument's value is cast to (see `cast_type`).
    pub fn call_type(&self) -> &str {
        if self.cast_type.is_empty() {
            &self.pg_type
        } else {
            &self.cast_type
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Volatility {
    Immutable,
    Stable,
    Volatile,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Function {
    pub schema: String,
    pub name: String,
    pub args: Vec<FunctionArg>,
    pub return_type: String,
    pub return_base_type: String,
    pub returns_set: bool,
    /// The table/view whose row type the function returns, if any.
    pub return_relation: Option<QualifiedName>,
    pub volatility: Volatility,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub executable_by: Vec<String>,
    /// `pg_type.typcategory` of the return type (`S` string, `N` numeric...).
    #[serde(default)]
    pub return_category: String,
    /// The media type a function returning a domain named like one (`"text/html"`, `"*/*"`)
    /// answers with: its result is the response body, raw.
    #[serde(default)]
    pub return_media_type: Option<String>,
    /// `prorows`: a set-returning function declared `ROWS 1` embeds as one object.
    #[serde(default)]
    pub rows: Option<serde_json::Number>,
    /// The relation whose row type is the function's only argument: a computed field
    /// (scalar result) or a computed relationship (a relation's rows) of that relation.
    #[serde(default)]
    pub arg_relation: Option<QualifiedName>,
}

/// What a call produces, which decides the response shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReturnShape {
    Void,
    Scalar,
    /// A table's row type or `TABLE(...)`/OUT columns.
    Composite,
}

impl Function {
    pub fn inputs(&self) -> impl Iterator<Item = &FunctionArg> {
        self.args.iter().filter(|a| a.is_input())
    }

    pub fn shape(&self) -> ReturnShape {
        if self.return_base_type == "void" {
            ReturnShape::Void
        } else if self.return_relation.is_some()
            || (self.return_base_type == "record" && self.args.iter().any(|a| a.is_output()))
        {
            ReturnShape::Composite
        } else {
            ReturnShape::Scalar
        }
    }

    /// A computed field of `table`: `f(table)` returning a non-set scalar, in the table's schema.
    pub fn is_computed_field_of(&self, table: &QualifiedName) -> bool {
        self.arg_relation.as_ref() == Some(table)
            && self.schema == table.schema
            && !self.returns_set
            && self.return_relation.is_none()
            && self.return_base_type != "void"
            && self.inputs().count() == 1
    }

    /// Columns of a `TABLE(...)`/OUT-parameter result.
    pub fn output_args(&self) -> impl Iterator<Item = &FunctionArg> {
        self.args.iter().filter(|a| a.is_output())
    }
}

/// An exposed schema and its comment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaInfo {
    pub name: String,
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct RawCatalog {
    #[serde(default)]
    server_version_num: i64,
    #[serde(default)]
    schemas: Vec<SchemaInfo>,
    #[serde(default)]
    geojson_function: Option<QualifiedName>,
    #[serde(default)]
    tables: Vec<Table>,
    #[serde(default)]
    keys: Vec<UniqueKey>,
    #[serde(default)]
    foreign_keys: Vec<ForeignKey>,
    #[serde(default)]
    view_columns: Vec<ViewColumn>,
    #[serde(default)]
    functions: Vec<Function>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid schema cache json: {0}")]
pub struct SchemaCacheError(#[from] serde_json::Error);

/// The in-memory model of the exposed schemas.
#[derive(Debug, Clone, Default)]
pub struct SchemaCache {
    pub server_version_num: i64,
    /// The exposed schemas with their comments (`/graphql/v1`'s schema directives).
    pub schemas: Vec<SchemaInfo>,
    /// PostGIS's `ST_AsGeoJSON(record)`, when the database has PostGIS: what answers
    /// `Accept: application/geo+json` (without it that media type is not available).
    pub geojson_function: Option<QualifiedName>,
    pub tables: Vec<Table>,
    pub keys: Vec<UniqueKey>,
    pub foreign_keys: Vec<ForeignKey>,
    pub view_columns: Vec<ViewColumn>,
    pub functions: Vec<Function>,
    pub relationships: Vec<Relationship>,
    table_index: HashMap<QualifiedName, usize>,
}

impl SchemaCache {
    pub fn from_json(value: Value) -> Result<SchemaCache, SchemaCacheError> {
        let raw: RawCatalog = serde_json::from_value(value)?;
        Ok(SchemaCache::build(raw))
    }

    fn build(raw: RawCatalog) -> SchemaCache {
        let mut cache = SchemaCache {
            server_version_num: raw.server_version_num,
            schemas: raw.schemas,
            geojson_function: raw.geojson_function,
            tables: raw.tables,
            keys: raw.keys,
            foreign_keys: raw.foreign_keys,
            view_columns: raw.view_columns,
            functions: raw.functions,
            relationships: Vec::new(),
            table_index: HashMap::new(),
        };
        cache.table_index = cache
            .tables
            .iter()
            .enumerate()
            .map(|(i, t)| (t.qualified(), i))
            .collect();
        cache.assign_primary_keys();
        cache.relationships = relationships::derive(&cache);
        cache
    }

    fn assign_primary_keys(&mut self) {
        for i in 0..self.tables.len() {
            let t = &self.tables[i];
            let pk = match t.kind {
                RelationKind::View | RelationKind::MaterializedView => self.view_primary_key(t),
                _ => self
                    .keys
                    .iter()
                    .find(|k| k.primary && k.schema == t.schema && k.name == t.name)
                    .map(|k| k.columns.clone())
                    .unwrap_or_default(),
            };
            self.tables[i].primary_key = pk;
        }
    }

    /// A view inherits a base table's PK when it shows every PK column.
    fn view_primary_key(&self, view: &Table) -> Vec<String> {
        let sources: Vec<&ViewColumn> = self
            .view_columns
            .iter()
            .filter(|v| v.schema == view.schema && v.view == view.name)
            .collect();
        let mut bases: Vec<(&str, &str)> = sources
            .iter()
            .map(|v| (v.base_schema.as_str(), v.base_table.as_str()))
            .collect();
        bases.dedup();
        for (bs, bt) in bases {
            let Some(pk) = self
                .keys
                .iter()
                .find(|k| k.primary && k.schema == bs && k.name == bt)
            else {
                continue;
            };
            let mapped: Option<Vec<String>> = pk
                .columns
                .iter()
                .map(|c| {
                    sources
                        .iter()
                        .find(|v| v.base_schema == bs && v.base_table == bt && &v.base_column == c)
                        .map(|v| v.column.clone())
                })
                .collect();
            if let Some(cols) = mapped {
                return cols;
            }
        }
        Vec::new()
    }

    pub fn table(&self, schema: &str, name: &str) -> Option<&Table> {
        self.table_index
            .get(&QualifiedName::new(schema, name))
            .map(|i| &self.tables[*i])
    }

    pub fn table_by_name(&self, qn: &QualifiedName) -> Option<&Table> {
        self.table_index.get(qn).map(|i| &self.tables[*i])
    }

    pub fn functions_named<'a>(
        &'a self,
        schema: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Function> + 'a {
        self.functions
            .iter()
            .filter(move |f| f.schema == schema && f.name == name)
    }

    /// The computed field `name` of `table` (a function `name(table)`), if any.
    pub fn computed_field(&self, table: &QualifiedName, name: &str) -> Option<&Function> {
        self.functions
            .iter()
            .find(|f| f.name == name && f.is_computed_field_of(table))
    }

    /// Unique keys (PK first) of any user table, exposed or not.
    pub fn unique_keys<'a>(
        &'a self,
        schema: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a UniqueKey> + 'a {
        self.keys
            .iter()
            .filter(move |k| k.schema == schema && k.name == name)
    }

    pub fn relationships_from<'a>(
        &'a self,
        source: &'a QualifiedName,
    ) -> impl Iterator<Item = &'a Relationship> + 'a {
        self.relationships
            .iter()
            .filter(move |r| &r.source == source)
    }
}

#[cfg(test)]
mod tests;
