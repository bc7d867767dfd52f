//! Relationships derived from foreign keys: M2O, O2M, O2O and M2M through a
//! junction table; views stand in for the tables whose key columns they show.

use super::{ForeignKey, QualifiedName, RelationKind, SchemaCache};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cardinality {
    ManyToOne,
    OneToMany,
    OneToOne,
    ManyToMany {
        junction: QualifiedName,
        source_constraint: String,
        target_constraint: String,
        /// (source column, junction column)
        source_columns: Vec<(String, String)>,
        /// (junction column, target column)
        target_columns: Vec<(String, String)>,
    },
    /// A computed relationship: `function(source) RETURNS [SETOF] target`, embedded by the
    /// function's name. One object when it returns a single row (or is declared `ROWS 1`).
    Computed {
        function: QualifiedName,
        single_row: bool,
    },
}

impl Cardinality {
    pub fn label(&self) -> &'static str {
        match self {
            Cardinality::ManyToOne => "many-to-one",
            Cardinality::OneToMany => "one-to-many",
            Cardinality::OneToOne => "one-to-one",
            Cardinality::ManyToMany { .. } => "many-to-many",
            Cardinality::Computed {
                single_row: true, ..
            } => "many-to-one",
            Cardinality::Computed { .. } => "one-to-many",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relationship {
    pub source: QualifiedName,
    pub target: QualifiedName,
    pub cardinality: Cardinality,
    /// The foreign key's name (for M2M, the target-side key's).
    pub constraint: String,
    /// Join columns (source column, target column); empty for M2M.
    pub columns: Vec<(String, String)>,
}

impl Relationship {
    /// Whether the embed yields one object (or null) rather than an array.
    pub fn is_to_one(&self) -> bool {
        matches!(
            self.cardinality,
            Cardinality::ManyToOne
                | Cardinality::OneToOne
                | Cardinality::Computed {
                    single_row: true,
                    ..
                }
        )
    }

    pub fn is_computed(&self) -> bool {
        matches!(self.cardinality, Cardinality::Computed { .. })
    }

    /// The single column on the source side of a one-column foreign key.
    pub fn single_source_column(&self) -> Option<&str> {
        match self.columns.as_slice() {
            [(s, _)] => Some(s),
            _ => None,
        }
    }

    /// The single column on the target side of a one-column foreign key.
    pub fn single_target_column(&self) -> Option<&str> {
        match self.columns.as_slice() {
            [(_, t)] => Some(t),
            _ => None,
        }
    }

    /// Whether a hint (`rel!hint`) selects this relationship: the foreign key's name, its
    /// single column on either side, or (many-to-many) the junction table.
    pub fn matches_hint(&self, hint: &str) -> bool {
        if self.constraint == hint && !self.is_computed() {
            return true;
        }
        match &self.cardinality {
            Cardinality::Computed { .. } => false,
            Cardinality::ManyToMany {
                junction,
                source_constraint,
                ..
            } => junction.name == hint || source_constraint == hint,
            _ => {
                let source_cols: Vec<&str> = self.columns.iter().map(|(s, _)| s.as_str()).collect();
                let target_cols: Vec<&str> = self.columns.iter().map(|(_, t)| t.as_str()).collect();
                source_cols == [hint] || target_cols == [hint]
            }
        }
    }

    /// PostgREST's description used in PGRST201 details.
    pub fn describe(&self) -> String {
        match &self.cardinality {
            Cardinality::ManyToMany {
                junction,
                source_columns,
                target_columns,
                source_constraint,
                target_constraint,
            } => format!(
                "{} using {}({}) and {}({})",
                junction.name,
                source_constraint,
                source_columns
                    .iter()
                    .map(|(_, j)| j.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                target_constraint,
                target_columns
                    .iter()
                    .map(|(j, _)| j.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            Cardinality::Computed { function, .. } => format!("{function}"),
            _ => format!(
                "{} using {}({}) and {}({})",
                self.constraint,
                self.source.name,
                self.columns
                    .iter()
                    .map(|(s, _)| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.target.name,
                self.columns
                    .iter()
                    .map(|(_, t)| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        }
    }
}

/// The exposed relations that show `columns` of `schema.table`: the table itself
/// and every view whose columns trace back to all of them.
fn endpoints(
    cache: &SchemaCache,
    schema: &str,
    table: &str,
    columns: &[String],
) -> Vec<(QualifiedName, Vec<String>)> {
    let mut out = Vec::new();
    if cache.table(schema, table).is_some() {
        out.push((QualifiedName::new(schema, table), columns.to_vec()));
    }
    let mut views: Vec<(&str, &str)> = cache
        .view_columns
        .iter()
        .filter(|v| v.base_schema == schema && v.base_table == table)
        .map(|v| (v.schema.as_str(), v.view.as_str()))
        .collect();
    views.sort();
    views.dedup();
    for (vs, vn) in views {
        if cache.table(vs, vn).is_none() {
            continue;
        }
        let mapped: Option<Vec<String>> = columns
            .iter()
            .map(|c| {
                cache
                    .view_columns
                    .iter()
                    .find(|v| {
                        v.schema == vs
                            && v.view == vn
                            && v.base_schema == schema
                            && v.base_table == table
                            && &v.base_column == c
                    })
                    .map(|v| v.column.clone())
            })
            .collect();
        if let Some(cols) = mapped {
            out.push((QualifiedName::new(vs, vn), cols));
        }
    }
    out
}

fn same_set(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

fn subset(a: &[String], b: &[String]) -> bool {
    a.iter().all(|x| b.contains(x))
}

pub(super) fn derive(cache: &SchemaCache) -> Vec<Relationship> {
    let mut rels = Vec::new();
    for fk in &cache.foreign_keys {
        let unique = cache
            .unique_keys(&fk.schema, &fk.table)
            .any(|k| same_set(&k.columns, &fk.columns));
        let sources = endpoints(cache, &fk.schema, &fk.table, &fk.columns);
        let targets = endpoints(cache, &fk.ref_schema, &fk.ref_table, &fk.ref_columns);
        for (s, scols) in &sources {
            for (t, tcols) in &targets {
                let pairs: Vec<(String, String)> =
                    scols.iter().cloned().zip(tcols.iter().cloned()).collect();
                let reversed: Vec<(String, String)> =
                    pairs.iter().map(|(a, b)| (b.clone(), a.clone())).collect();
                let (forward, backward) = if unique {
                    (Cardinality::OneToOne, Cardinality::OneToOne)
                } else {
                    (Cardinality::ManyToOne, Cardinality::OneToMany)
                };
                rels.push(Relationship {
                    source: s.clone(),
                    target: t.clone(),
                    cardinality: forward,
                    constraint: fk.name.clone(),
                    columns: pairs,
                });
                rels.push(Relationship {
                    source: t.clone(),
                    target: s.clone(),
                    cardinality: backward,
                    constraint: fk.name.clone(),
                    columns: reversed,
                });
            }
        }
    }
    for junction in cache
        .tables
        .iter()
        .filter(|t| t.kind == RelationKind::Table)
    {
        let fks: Vec<&ForeignKey> = cache
            .foreign_keys
            .iter()
            .filter(|f| f.schema == junction.schema && f.table == junction.name)
            .collect();
        let keys: Vec<&Vec<String>> = cache
            .unique_keys(&junction.schema, &junction.name)
            .map(|k| &k.columns)
            .collect();
        for f1 in &fks {
            for f2 in &fks {
                if f1.name == f2.name {
                    continue;
                }
                let both: Vec<String> = f1
                    .columns
                    .iter()
                    .chain(f2.columns.iter())
                    .cloned()
                    .collect();
                if !keys.iter().any(|k| subset(&both, k)) {
                    continue;
                }
                for (s, scols) in endpoints(cache, &f1.ref_schema, &f1.ref_table, &f1.ref_columns) {
                    for (t, tcols) in
                        endpoints(cache, &f2.ref_schema, &f2.ref_table, &f2.ref_columns)
                    {
                        rels.push(Relationship {
                            source: s.clone(),
                            target: t,
                            cardinality: Cardinality::ManyToMany {
                                junction: junction.qualified(),
                                source_constraint: f1.name.clone(),
                                target_constraint: f2.name.clone(),
                                source_columns: scols
                                    .iter()
                                    .cloned()
                                    .zip(f1.columns.iter().cloned())
                                    .collect(),
                                target_columns: f2.columns.iter().cloned().zip(tcols).collect(),
                            },
                            constraint: f2.name.clone(),
                            columns: Vec::new(),
                        });
                    }
                }
            }
        }
    }
    for f in &cache.functions {
        let (Some(source), Some(target)) = (&f.arg_relation, &f.return_relation) else {
            continue;
        };
        if f.inputs().count() != 1
            || cache.table_by_name(source).is_none()
            || cache.table_by_name(target).is_none()
        {
            continue;
        }
        rels.push(Relationship {
            source: source.clone(),
            target: target.clone(),
            cardinality: Cardinality::Computed {
                function: QualifiedName::new(&f.schema, &f.name),
                single_row: !f.returns_set || f.rows.as_ref().and_then(|n| n.as_f64()) == Some(1.0),
            },
            constraint: f.name.clone(),
            columns: Vec::new(),
        });
    }
    rels
}
