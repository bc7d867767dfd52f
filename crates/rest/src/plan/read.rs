//! Reads: the select tree, embeds, filters, order and paging of one relation.

use super::errors::{ambiguous_relationship, column_not_found, no_relationship};
use super::{
    ColumnRef, Cond, EmbedNode, FieldExpr, OrderExpr, OutputField, ReadNode, ResolvedFilter,
    ResolvedOrder, RowExpr, Source,
};
use crate::error::{ErrorKind, RestError};
use crate::parse::{
    ApiRequest, ColumnPath, CountPref, Embed, FieldTarget, Filter, IsValue, JoinType, LogicTree,
    Operation, OrderTarget, PathFilter, SelectItem,
};
use crate::schema::{Cardinality, Relationship, SchemaCache, Table};
use crate::RestConfig;

pub(crate) struct Ctx<'a> {
    pub cache: &'a SchemaCache,
    pub config: &'a RestConfig,
    pub req: &'a ApiRequest,
    pub next_alias: usize,
}

impl Ctx<'_> {
    pub fn alias(&mut self) -> String {
        let a = format!("t{}", self.next_alias);
        self.next_alias += 1;
        a
    }
}

/// Which request parts apply to the root node being built.
#[derive(Clone, Copy)]
pub(crate) struct RootOpts {
    /// Root filters/logic (false for a mutation's representation: they went to the DML).
    pub filters: bool,
    pub order: bool,
}

pub(crate) fn default_select() -> Vec<SelectItem> {
    vec![SelectItem::Star]
}

/// Plans `GET /table`: returns the root node and the effective offset.
pub(crate) fn plan_root_read(ctx: &mut Ctx, table: &Table) -> Result<(ReadNode, i64), RestError> {
    let mut root = build_root(
        ctx,
        table,
        Source::Relation(table.qualified()),
        &[],
        RootOpts {
            filters: true,
            order: true,
        },
    )?;
    let offset = apply_paging(ctx, &mut root);
    Ok((root, offset))
}

pub(crate) fn build_root(
    ctx: &mut Ctx,
    table: &Table,
    source: Source,
    filters: &[PathFilter],
    opts: RootOpts,
) -> Result<ReadNode, RestError> {
    let select = ctx.req.select.clone().unwrap_or_else(default_select);
    let select = if select.is_empty() {
        default_select()
    } else {
        select
    };
    let all_filters: Vec<PathFilter> = ctx
        .req
        .filters
        .iter()
        .chain(filters.iter())
        .cloned()
        .collect();
    check_paths(ctx.req, &select, &all_filters)?;
    let mut node = build_node(ctx, table, source, &select, &[], &all_filters, opts)?;
    node.count_exact = matches!(
        ctx.req.prefer.count,
        Some(CountPref::Exact | CountPref::Estimated)
    );
    Ok(node)
}

/// Limit/offset/Range/max-rows of the root; returns the offset.
pub(crate) fn apply_paging(ctx: &Ctx, node: &mut ReadNode) -> i64 {
    let (offset, limit) = root_paging(ctx);
    node.offset = (offset > 0).then_some(offset);
    node.limit = limit;
    offset
}

pub(crate) fn root_paging(ctx: &Ctx) -> (i64, Option<i64>) {
    let mut offset = ctx.req.offset_for(&[]).unwrap_or(0);
    let mut limit = ctx.req.limit_for(&[]);
    if let Some(r) = ctx.req.range {
        let lower = offset.max(r.first);
        let upper_q = limit.map(|l| offset.saturating_add(l) - 1);
        let upper = match (upper_q, r.last) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        offset = lower;
        limit = upper.map(|u| u.saturating_sub(lower).saturating_add(1).max(0));
    }
    if let Some(max) = ctx.config.max_rows {
        limit = Some(limit.map_or(max, |l| l.min(max)));
    }
    (offset, limit)
}

/// Every embed path used by filters, order, limit and offset must be selected (PGRST108).
fn check_paths(
    req: &ApiRequest,
    select: &[SelectItem],
    filters: &[PathFilter],
) -> Result<(), RestError> {
    fn collect(items: &[SelectItem], prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        for item in items {
            if let SelectItem::Embed(e) = item {
                prefix.push(e.label().to_string());
                out.push(prefix.clone());
                collect(&e.select, prefix, out);
                prefix.pop();
            }
        }
    }
    let mut known = vec![Vec::new()];
    collect(select, &mut Vec::new(), &mut known);
    let used = filters
        .iter()
        .map(|f| &f.path)
        .chain(req.logic.iter().map(|l| &l.path))
        .chain(req.order.iter().map(|o| &o.0))
        .chain(req.limits.iter().map(|l| &l.0))
        .chain(req.offsets.iter().map(|l| &l.0));
    for path in used {
        if !known.contains(path) {
            let name = path.join(".");
            return Err(RestError::new(
                ErrorKind::FilterOnMissingEmbed,
                format!("'{name}' is not an embedded resource in this request"),
            )
            .with_hint(format!(
                "Verify that '{name}' is included in the 'select' query parameter."
            )));
        }
    }
    Ok(())
}

/// What a node's alias reads: its relation, and whether `"alias".*` is a row of that
/// relation's type (else a computed field gets the row rebuilt with a cast).
#[derive(Clone, Copy)]
pub(crate) struct Scope<'a> {
    pub cache: &'a SchemaCache,
    pub table: &'a Table,
    pub alias: &'a str,
    pub whole_row: bool,
}

impl<'a> Scope<'a> {
    pub fn new(cache: &'a SchemaCache, table: &'a Table, alias: &'a str, source: &Source) -> Self {
        Scope {
            cache,
            table,
            alias,
            whole_row: matches!(source, Source::Relation(_) | Source::Computed { .. }),
        }
    }

    /// The alias's row as a value of the relation's type.
    pub fn row(&self) -> RowExpr {
        if self.whole_row {
            RowExpr::Whole(self.alias.to_string())
        } else {
            RowExpr::Cast {
                alias: self.alias.to_string(),
                relation: self.table.qualified(),
                columns: self.table.columns.iter().map(|c| c.name.clone()).collect(),
            }
        }
    }
}

/// The types a field's values are compared with.
pub(crate) struct FieldType {
    pub filter_type: String,
    pub is_string: bool,
    pub is_tsvector: bool,
}

/// A column of the scope's relation, or one of its computed fields (`f(relation)`).
pub(crate) fn field_ref(
    scope: &Scope,
    path: &ColumnPath,
) -> Result<(ColumnRef, FieldType), RestError> {
    if let Some(c) = scope.table.column(&path.column) {
        return Ok((
            ColumnRef {
                alias: scope.alias.to_string(),
                column: c.name.clone(),
                json_path: path.json_path.clone(),
                computed: None,
            },
            FieldType {
                filter_type: c.filter_type().to_string(),
                is_string: c.category == "S",
                is_tsvector: c.is_tsvector(),
            },
        ));
    }
    let table = scope.table.qualified();
    let Some(f) = scope.cache.computed_field(&table, &path.column) else {
        return Err(column_not_found(&scope.table.name, &path.column));
    };
    Ok((
        ColumnRef {
            alias: scope.alias.to_string(),
            column: f.name.clone(),
            json_path: path.json_path.clone(),
            computed: Some(Box::new((
                crate::schema::QualifiedName::new(&f.schema, &f.name),
                scope.row(),
            ))),
        },
        FieldType {
            filter_type: f.return_type.clone(),
            is_string: f.return_category == "S",
            is_tsvector: f.return_base_type == "tsvector",
        },
    ))
}

fn column_ref(scope: &Scope, path: &ColumnPath) -> Result<ColumnRef, RestError> {
    field_ref(scope, path).map(|(c, _)| c)
}

fn check_cast(cast: &Option<String>) -> Result<(), RestError> {
    // The parser only admits [A-Za-z0-9_]+ and an optional [], so casts are identifiers.
    if let Some(c) = cast {
        let body = c.strip_suffix("[]").unwrap_or(c);
        if body.is_empty()
            || !body
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        {
            return Err(RestError::parse(
                format!("invalid cast ({c})"),
                "expecting a type name",
            ));
        }
    }
    Ok(())
}

pub(crate) fn build_node(
    ctx: &mut Ctx,
    table: &Table,
    source: Source,
    select: &[SelectItem],
    path: &[String],
    filters: &[PathFilter],
    opts: RootOpts,
) -> Result<ReadNode, RestError> {
    let alias = ctx.alias();
    let cache = ctx.cache;
    let scope = Scope::new(cache, table, &alias, &source);
    let mut node = ReadNode {
        source,
        alias: alias.clone(),
        fields: Vec::new(),
        embeds: Vec::new(),
        conds: Vec::new(),
        order: Vec::new(),
        limit: None,
        offset: None,
        group_by: Vec::new(),
        count_exact: false,
    };
    let mut has_aggregate = false;
    for item in select {
        match item {
            SelectItem::Star => {
                for c in &table.columns {
                    node.fields.push(OutputField {
                        name: c.name.clone(),
                        expr: FieldExpr::Column {
                            col: ColumnRef {
                                alias: alias.clone(),
                                column: c.name.clone(),
                                json_path: Vec::new(),
                                computed: None,
                            },
                            cast: None,
                        },
                    });
                }
            }
            SelectItem::Field(f) => {
                check_cast(&f.cast)?;
                check_cast(&f.aggregate_cast)?;
                let expr = match (&f.target, f.aggregate) {
                    (FieldTarget::Column(p), None) => FieldExpr::Column {
                        col: column_ref(&scope, p)?,
                        cast: f.cast.clone(),
                    },
                    (FieldTarget::Column(p), Some(func)) => {
                        has_aggregate = true;
                        FieldExpr::Aggregate {
                            func,
                            arg: Some((column_ref(&scope, p)?, f.cast.clone())),
                            cast: f.aggregate_cast.clone(),
                        }
                    }
                    (FieldTarget::CountAll, agg) => {
                        has_aggregate = true;
                        FieldExpr::Aggregate {
                            func: agg.unwrap_or(crate::parse::AggregateFn::Count),
                            arg: None,
                            cast: f.aggregate_cast.clone(),
                        }
                    }
                };
                let name = match (&f.alias, &f.target, f.aggregate) {
                    (Some(a), _, _) => a.clone(),
                    (None, _, Some(func)) => func.sql_name().to_string(),
                    (None, FieldTarget::Column(p), None) => p.output_name(),
                    (None, FieldTarget::CountAll, None) => "count".to_string(),
                };
                node.fields.push(OutputField { name, expr });
            }
            SelectItem::Embed(e) => {
                let embed_index = node.embeds.len();
                let child = plan_embed(ctx, &scope, e, path, filters)?;
                if e.join == Some(JoinType::Inner) {
                    node.conds.push(Cond::EmbedExists {
                        embed: embed_index,
                        present: true,
                    });
                }
                if e.spread {
                    let lateral = format!("pgrst_{}", child.node.alias);
                    for (i, f) in child.node.fields.iter().enumerate() {
                        // An aggregate in a to-one spread is hoisted: it aggregates here.
                        let expr = match child.hoisted.iter().find(|h| h.0 == i) {
                            Some((_, func, cast)) => {
                                has_aggregate = true;
                                FieldExpr::Aggregate {
                                    func: *func,
                                    arg: Some((
                                        ColumnRef {
                                            alias: lateral.clone(),
                                            column: f.name.clone(),
                                            json_path: Vec::new(),
                                            computed: None,
                                        },
                                        None,
                                    )),
                                    cast: cast.clone(),
                                }
                            }
                            None => FieldExpr::SpreadColumn {
                                embed: embed_index,
                                name: f.name.clone(),
                            },
                        };
                        node.fields.push(OutputField {
                            name: f.name.clone(),
                            expr,
                        });
                    }
                } else if child.output {
                    let expr = if child.to_one {
                        FieldExpr::EmbedObject { embed: embed_index }
                    } else {
                        FieldExpr::EmbedArray { embed: embed_index }
                    };
                    node.fields.push(OutputField {
                        name: e.label().to_string(),
                        expr,
                    });
                }
                node.embeds.push(child);
            }
        }
    }
    if has_aggregate {
        if !ctx.config.aggregates_enabled {
            return Err(RestError::new(
                ErrorKind::AggregatesDisabled,
                "Use of aggregate functions is not allowed",
            ));
        }
        node.group_by = node
            .fields
            .iter()
            .enumerate()
            .filter(|(_, f)| !matches!(f.expr, FieldExpr::Aggregate { .. }))
            .map(|(i, _)| i + 1)
            .collect();
    }

    let is_root = path.is_empty();
    if !is_root || opts.filters {
        for pf in filters.iter().filter(|f| f.path == path) {
            let cond = resolve_filter(&scope, &node, &pf.filter)?;
            node.conds.push(cond);
        }
        for pl in ctx.req.logic.iter().filter(|l| l.path == path) {
            node.conds.push(resolve_logic(&scope, &node, &pl.tree)?);
        }
    }
    if !is_root || opts.order {
        for (p, terms) in &ctx.req.order {
            if p.as_slice() != path {
                continue;
            }
            for term in terms {
                let expr = match &term.target {
                    OrderTarget::Column(c) => OrderExpr::Column(column_ref(&scope, c)?),
                    OrderTarget::Related { relation, field } => {
                        related_order(&scope, &node, select, relation, field)?
                    }
                };
                node.order.push(ResolvedOrder {
                    expr,
                    direction: term.direction,
                    nulls: term.nulls,
                });
            }
        }
    }
    if !is_root {
        node.limit = ctx.req.limit_for(path);
        node.offset = ctx.req.offset_for(path);
    }
    Ok(node)
}

fn related_order(
    scope: &Scope,
    node: &ReadNode,
    select: &[SelectItem],
    relation: &str,
    field: &ColumnPath,
) -> Result<OrderExpr, RestError> {
    let position = select
        .iter()
        .filter_map(|i| match i {
            SelectItem::Embed(e) => Some(e),
            _ => None,
        })
        .position(|e| e.label() == relation || e.relation == relation);
    let Some(i) = position else {
        return Err(RestError::new(
            ErrorKind::FilterOnMissingEmbed,
            format!("'{relation}' is not an embedded resource in this request"),
        )
        .with_hint(format!(
            "Verify that '{relation}' is included in the 'select' query parameter."
        )));
    };
    let embed = &node.embeds[i];
    if !embed.to_one {
        return Err(RestError::new(
            ErrorKind::RelatedOrderNotToOne,
            format!("A related order on '{relation}' is not possible"),
        )
        .with_details(format!(
            "'{}' and '{relation}' do not form a many-to-one or one-to-one relationship",
            scope.table.name
        )));
    }
    let target = embed.relationship.target.clone();
    let target_table = scope
        .cache
        .table_by_name(&target)
        .ok_or_else(|| column_not_found(&target.name, &field.column))?;
    let source = match &embed.node.source {
        computed @ Source::Computed { .. } => computed.clone(),
        _ => Source::Relation(target.clone()),
    };
    let target_scope = Scope::new(scope.cache, target_table, "_pgrst_ord", &source);
    let column = column_ref(&target_scope, field)?;
    Ok(OrderExpr::Related {
        embed_rel: Box::new(embed.relationship.clone()),
        parent_alias: scope.alias.to_string(),
        column,
        source: Box::new(source),
    })
}

fn plan_embed(
    ctx: &mut Ctx,
    parent: &Scope,
    e: &Embed,
    path: &[String],
    filters: &[PathFilter],
) -> Result<EmbedNode, RestError> {
    let rel = find_relationship(
        ctx.cache,
        parent.table,
        &ctx.req.schema,
        &e.relation,
        e.hint.as_deref(),
    )?;
    let target = ctx
        .cache
        .table_by_name(&rel.target)
        .ok_or_else(|| super::relation_not_found(&rel.target.schema, &rel.target.name))?;
    let to_one = rel.is_to_one();
    // A spread of a to-many relationship aggregates its columns into arrays (PostgREST 13):
    // it needs aggregates enabled, and takes no aggregate of its own.
    if e.spread && !to_one && !ctx.config.aggregates_enabled {
        return Err(RestError::new(
            ErrorKind::AggregatesDisabled,
            "Use of aggregate functions is not allowed",
        ));
    }
    let source = match &rel.cardinality {
        Cardinality::Computed { function, .. } => Source::Computed {
            function: function.clone(),
            row: parent.row(),
        },
        _ => Source::Relation(rel.target.clone()),
    };
    let mut child_path = path.to_vec();
    child_path.push(e.label().to_string());
    let node = build_node(
        ctx,
        target,
        source,
        &e.select,
        &child_path,
        filters,
        RootOpts {
            filters: true,
            order: true,
        },
    )?;
    if e.spread && !to_one && has_aggregate(&node) {
        return Err(
            RestError::new(ErrorKind::NotImplemented, "Feature not implemented").with_details(
                "Aggregates are not implemented for one-to-many or many-to-many spreads.",
            ),
        );
    }
    // The aggregates of a to-one spread are hoisted to the parent (PostgREST's
    // hoistSpreadAggFunctions): the spread reads the values, the parent aggregates them.
    let mut node = node;
    let mut hoisted = Vec::new();
    if e.spread && to_one {
        for (i, f) in node.fields.iter_mut().enumerate() {
            if let FieldExpr::Aggregate { func, arg, cast } = &f.expr {
                hoisted.push((i, *func, cast.clone()));
                f.expr = match arg {
                    Some((col, c)) => FieldExpr::Column {
                        col: col.clone(),
                        cast: c.clone(),
                    },
                    None => FieldExpr::RowMarker,
                };
            }
        }
        if !hoisted.is_empty() {
            node.group_by.clear();
        }
    }
    Ok(EmbedNode {
        hoisted,
        label: e.label().to_string(),
        relation: e.relation.clone(),
        relationship: rel,
        node,
        to_one,
        output: !e.select.is_empty() || e.spread,
        spread: e.spread,
    })
}

/// Whether a node aggregates, itself or through the spreads it holds.
fn has_aggregate(node: &ReadNode) -> bool {
    node.fields
        .iter()
        .any(|f| matches!(f.expr, FieldExpr::Aggregate { .. }))
        || node
            .embeds
            .iter()
            .any(|e| e.spread && has_aggregate(&e.node))
}

/// Finds the relationship `/parent?select=target!hint(...)` names, by PostgREST's rules:
/// `target` is the related table or view (or, for tables, the foreign key's name or its
/// single column on the parent's side), or a computed relationship's function, which
/// replaces the foreign-key relationships to a table of the same name. A hint names the
/// foreign key, one of its single columns, or a many-to-many junction. On a self-reference
/// the table's name embeds the children (one-to-many) and the key's column the parent.
pub(crate) fn find_relationship(
    cache: &SchemaCache,
    parent: &Table,
    schema: &str,
    target: &str,
    hint: Option<&str>,
) -> Result<Relationship, RestError> {
    let source = parent.qualified();
    let all: Vec<&Relationship> = cache.relationships_from(&source).collect();
    let is_view = |q: &crate::schema::QualifiedName| {
        cache
            .table_by_name(q)
            .is_some_and(|t| t.kind != crate::schema::RelationKind::Table)
    };
    let matches = |r: &Relationship| -> bool {
        let m2m = matches!(r.cardinality, Cardinality::ManyToMany { .. });
        match &r.cardinality {
            Cardinality::Computed { function, .. } => function.name == target,
            Cardinality::OneToMany | Cardinality::ManyToOne if r.source == r.target => {
                let o2m = r.cardinality == Cardinality::OneToMany;
                match hint {
                    None => {
                        (r.target.name == target && o2m)
                            || (!o2m && r.single_source_column() == Some(target))
                    }
                    Some(h) => {
                        r.target.name == target && o2m && r.single_target_column() == Some(h)
                    }
                }
            }
            _ => match hint {
                None => {
                    r.target.name == target
                        || (!m2m
                            && !is_view(&r.target)
                            && (r.constraint == target || r.single_source_column() == Some(target)))
                }
                Some(h) => r.target.name == target && r.matches_hint(h),
            },
        }
    };
    let pick = |pool: &[&Relationship]| -> Vec<Relationship> {
        let mut found: Vec<Relationship> = pool
            .iter()
            .filter(|r| matches(r))
            .map(|r| (*r).clone())
            .collect();
        // A computed relationship named like a table overrides the keys to that table.
        if found.iter().any(|r| r.is_computed()) {
            found.retain(|r| r.is_computed() || r.target.name != target);
        }
        found
    };
    let in_schema: Vec<&Relationship> = all
        .iter()
        .copied()
        .filter(|r| r.target.schema == schema)
        .collect();
    let mut candidates = pick(&in_schema);
    if candidates.is_empty() {
        candidates = pick(&all);
    }
    match candidates.len() {
        0 => Err(no_relationship(
            &source,
            target,
            hint,
            all.iter().map(|r| r.target.name.as_str()),
        )),
        1 => Ok(candidates.remove(0)),
        _ => {
            let refs: Vec<&Relationship> = candidates.iter().collect();
            Err(ambiguous_relationship(&source, target, &refs))
        }
    }
}

fn embed_index(node: &ReadNode, name: &str) -> Option<usize> {
    node.embeds.iter().position(|e| e.label == name)
}

fn resolve_filter(scope: &Scope, node: &ReadNode, filter: &Filter) -> Result<Cond, RestError> {
    if scope.table.column(&filter.field.column).is_none() && filter.field.json_path.is_empty() {
        if let Some(embed) = embed_index(node, &filter.field.column) {
            let present = match &filter.operation {
                Operation::Is(IsValue::Null) => false,
                Operation::Is(IsValue::NotNull) => true,
                _ => {
                    return Err(RestError::new(
                        ErrorKind::InvalidEmbedFilter,
                        format!(
                            "Bad operator on the '{}' embedded resource",
                            node.embeds[embed].relation
                        ),
                    )
                    .with_details(
                        "Only is null or not is null filters are allowed on embedded resources",
                    ))
                }
            };
            return Ok(Cond::EmbedExists {
                embed,
                present: present != filter.negate,
            });
        }
    }
    let (lhs, ty) = field_ref(scope, &filter.field)?;
    if matches!(&filter.operation, Operation::In(v) if v.is_empty()) {
        return Ok(if filter.negate {
            Cond::Logic {
                op: crate::parse::LogicOp::And,
                negate: false,
                children: Vec::new(),
            }
        } else {
            Cond::False
        });
    }
    let text_result = filter.field.json_path.last().map(|s| s.as_text);
    let value_type = match text_result {
        Some(true) => "text".to_string(),
        None | Some(false) => ty.filter_type,
    };
    Ok(Cond::Filter(ResolvedFilter {
        lhs,
        lhs_is_string: match text_result {
            None => ty.is_string,
            Some(t) => t,
        },
        lhs_is_tsvector: text_result.is_none() && ty.is_tsvector,
        value_type,
        negate: filter.negate,
        operation: filter.operation.clone(),
    }))
}

fn resolve_logic(scope: &Scope, node: &ReadNode, tree: &LogicTree) -> Result<Cond, RestError> {
    match tree {
        LogicTree::Expr {
            negate,
            op,
            children,
        } => Ok(Cond::Logic {
            op: *op,
            negate: *negate,
            children: children
                .iter()
                .map(|c| resolve_logic(scope, node, c))
                .collect::<Result<_, _>>()?,
        }),
        LogicTree::Leaf { path, filter } if path.is_empty() => resolve_filter(scope, node, filter),
        LogicTree::Leaf { path, .. } => Err(RestError::parse(
            format!("\"failed to parse logic tree ({})\"", path.join(".")),
            "embedded fields inside a logic tree are not supported; use the 'rel.or' parameter",
        )),
    }
}

/// The alias a PATCH/DELETE's filters and order refer to: the statement's target table.
pub(crate) const MUTATION_TARGET: &str = "pgrst_target";

/// The `limit`/`offset` of a PATCH or DELETE with its required `order` (PGRST109 without
/// one; tables only, since rows are picked by ctid).
pub(crate) fn mutation_limit(
    ctx: &Ctx,
    table: &Table,
) -> Result<Option<super::MutationLimit>, RestError> {
    let (limit, offset) = (ctx.req.limit_for(&[]), ctx.req.offset_for(&[]));
    if limit.is_none() && offset.is_none() {
        return Ok(None);
    }
    if table.kind != crate::schema::RelationKind::Table {
        return Err(RestError::new(
            crate::error::ErrorKind::LimitWithoutOrder,
            "A 'limit' on an update or delete is only possible on tables",
        ));
    }
    let scope = Scope {
        cache: ctx.cache,
        table,
        alias: MUTATION_TARGET,
        whole_row: true,
    };
    let mut order = Vec::new();
    for (p, terms) in &ctx.req.order {
        if !p.is_empty() {
            continue;
        }
        for term in terms {
            let OrderTarget::Column(c) = &term.target else {
                return Err(RestError::new(
                    crate::error::ErrorKind::RelatedOrderNotToOne,
                    "A related order is not possible on an update or delete",
                ));
            };
            order.push(ResolvedOrder {
                expr: OrderExpr::Column(column_ref(&scope, c)?),
                direction: term.direction,
                nulls: term.nulls,
            });
        }
    }
    if order.is_empty() {
        return Err(RestError::new(
            crate::error::ErrorKind::LimitWithoutOrder,
            "A 'limit' was applied without an explicit 'order'",
        )
        .with_hint("Apply an 'order' using unique column(s)"));
    }
    Ok(Some(super::MutationLimit {
        order,
        limit,
        offset,
    }))
}

/// Resolves the root filters of a mutation against its target table (`pgrst_target`).
pub(crate) fn mutation_conds(ctx: &Ctx, table: &Table) -> Result<Vec<Cond>, RestError> {
    let empty = ReadNode {
        source: Source::Relation(table.qualified()),
        alias: MUTATION_TARGET.to_string(),
        fields: Vec::new(),
        embeds: Vec::new(),
        conds: Vec::new(),
        order: Vec::new(),
        limit: None,
        offset: None,
        group_by: Vec::new(),
        count_exact: false,
    };
    let scope = Scope::new(ctx.cache, table, MUTATION_TARGET, &empty.source);
    let mut conds = Vec::new();
    for pf in ctx.req.filters.iter().filter(|f| f.path.is_empty()) {
        conds.push(resolve_filter(&scope, &empty, &pf.filter)?);
    }
    for pl in ctx.req.logic.iter().filter(|l| l.path.is_empty()) {
        conds.push(resolve_logic(&scope, &empty, &pl.tree)?);
    }
    Ok(conds)
}
