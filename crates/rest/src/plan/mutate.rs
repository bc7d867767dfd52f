//! Writes: INSERT/upsert (POST, PUT), UPDATE (PATCH), DELETE.

use serde_json::Value;

use super::errors::{column_not_found, payload_column_not_found};
use super::read::{build_root, mutation_conds, mutation_limit, Ctx, RootOpts};
use super::{
    DeleteQuery, InsertQuery, OnConflict, PayloadColumn, ReadNode, Returning, Source, UpdateQuery,
};
use crate::error::{ErrorKind, RestError};
use crate::parse::body::{invalid_json, payload_keys};
use crate::parse::{Operation, Operator, Resolution, ReturnPref};
use crate::schema::Table;

fn returning(ctx: &Ctx, table: &Table) -> Returning {
    match ctx.req.prefer.return_ {
        Some(ReturnPref::Representation) => Returning::Representation,
        Some(ReturnPref::HeadersOnly) => Returning::HeadersOnly(table.primary_key.clone()),
        _ => Returning::Minimal,
    }
}

fn representation(ctx: &mut Ctx, table: &Table) -> Result<ReadNode, RestError> {
    build_root(
        ctx,
        table,
        Source::MutationResult,
        &[],
        RootOpts {
            filters: false,
            order: false,
        },
    )
}

fn payload_columns(table: &Table, keys: &[String]) -> Result<Vec<PayloadColumn>, RestError> {
    keys.iter()
        .map(|k| {
            let c = table
                .column(k)
                .ok_or_else(|| payload_column_not_found(&table.name, k))?;
            Ok(PayloadColumn {
                name: c.name.clone(),
                pg_type: c.pg_type.clone(),
                default: if c.generated { None } else { c.default.clone() },
            })
        })
        .collect()
}

fn check_columns_exist(table: &Table, cols: &[String]) -> Result<(), RestError> {
    for c in cols {
        if table.column(c).is_none() {
            return Err(column_not_found(&table.name, c));
        }
    }
    Ok(())
}

pub(crate) fn plan_insert(
    ctx: &mut Ctx,
    table: &Table,
    put: bool,
) -> Result<InsertQuery, RestError> {
    let payload = ctx.req.payload.clone().ok_or_else(invalid_json)?;
    let rows: Vec<Value> = match payload {
        Value::Array(items) => items,
        obj @ Value::Object(_) => vec![obj],
        _ => return Err(invalid_json()),
    };
    let keys = match &ctx.req.columns {
        Some(cols) => {
            if rows.iter().any(|r| !r.is_object()) {
                return Err(RestError::new(
                    ErrorKind::InvalidBody,
                    "All object keys must match",
                ));
            }
            cols.clone()
        }
        None => payload_keys(&Value::Array(rows.clone()))?,
    };
    let columns = payload_columns(table, &keys)?;
    let on_conflict = if put {
        check_put(ctx, table, &rows)?;
        Some(OnConflict::DoUpdate {
            target: table.primary_key.clone(),
            set: keys.clone(),
        })
    } else {
        match ctx.req.prefer.resolution {
            None => None,
            Some(resolution) => {
                let target = ctx
                    .req
                    .on_conflict
                    .clone()
                    .unwrap_or_else(|| table.primary_key.clone());
                check_columns_exist(table, &target)?;
                // No primary key (a table without one, a view that does not show its base
                // table's) and no `on_conflict`: a plain insert, as PostgREST does; the
                // resolution is then not applied.
                if target.is_empty() {
                    None
                } else {
                    Some(match resolution {
                        Resolution::IgnoreDuplicates => OnConflict::DoNothing { target },
                        Resolution::MergeDuplicates if keys.is_empty() => {
                            OnConflict::DoNothing { target }
                        }
                        Resolution::MergeDuplicates => OnConflict::DoUpdate {
                            target,
                            set: keys.clone(),
                        },
                    })
                }
            }
        }
    };
    let body = Value::Array(rows).to_string();
    let root = representation(ctx, table)?;
    Ok(InsertQuery {
        table: table.qualified(),
        columns,
        body,
        missing_default: ctx.req.prefer.missing_default && ctx.req.columns.is_some(),
        on_conflict,
        has_xmax: table.kind == crate::schema::RelationKind::Table,
        returning: returning(ctx, table),
        root,
    })
}

/// PUT: PK-only `eq` filters, one row whose PK values match them.
fn check_put(ctx: &Ctx, table: &Table, rows: &[Value]) -> Result<(), RestError> {
    if ctx.req.limit_for(&[]).is_some() || ctx.req.offset_for(&[]).is_some() {
        return Err(RestError::new(
            ErrorKind::PutPrimaryKeyFilters,
            "limit/offset querystring parameters are not allowed for PUT",
        ));
    }
    let pk = &table.primary_key;
    let wrong = || {
        RestError::new(
            ErrorKind::PutNotAllowed,
            "Filters must include all and only primary key columns with 'eq' operators",
        )
    };
    let mut seen = Vec::new();
    for f in &ctx.req.filters {
        let ok = f.path.is_empty()
            && !f.filter.negate
            && f.filter.field.json_path.is_empty()
            && matches!(
                f.filter.operation,
                Operation::Compare {
                    op: Operator::Eq,
                    ..
                }
            )
            && pk.contains(&f.filter.field.column)
            && !seen.contains(&f.filter.field.column);
        if !ok {
            return Err(wrong());
        }
        seen.push(f.filter.field.column.clone());
    }
    if pk.is_empty() || seen.len() != pk.len() || !ctx.req.logic.is_empty() {
        return Err(wrong());
    }
    let [row] = rows else {
        return Err(RestError::new(
            ErrorKind::InvalidBody,
            "PUT payload must contain a single row",
        ));
    };
    for f in &ctx.req.filters {
        let Operation::Compare { value, .. } = &f.filter.operation else {
            continue;
        };
        let given = row.get(&f.filter.field.column);
        let matches = match given {
            Some(Value::String(s)) => s == value,
            Some(Value::Number(n)) => n.to_string() == *value,
            Some(Value::Bool(b)) => b.to_string() == *value,
            _ => false,
        };
        if !matches {
            return Err(RestError::new(
                ErrorKind::PutPrimaryKeyMismatch,
                "Payload values do not match URL in primary key column(s)",
            ));
        }
    }
    Ok(())
}

pub(crate) fn plan_update(ctx: &mut Ctx, table: &Table) -> Result<UpdateQuery, RestError> {
    let payload = ctx.req.payload.clone().ok_or_else(invalid_json)?;
    let obj = match payload {
        Value::Object(o) => o,
        Value::Array(mut items) if items.len() == 1 && items[0].is_object() => {
            match items.remove(0) {
                Value::Object(o) => o,
                _ => return Err(invalid_json()),
            }
        }
        _ => return Err(invalid_json()),
    };
    let keys: Vec<String> = match &ctx.req.columns {
        Some(cols) => cols.clone(),
        None => obj.keys().cloned().collect(),
    };
    let columns = payload_columns(table, &keys)?;
    let conds = mutation_conds(ctx, table)?;
    let limited = mutation_limit(ctx, table)?;
    let root = representation(ctx, table)?;
    Ok(UpdateQuery {
        table: table.qualified(),
        columns,
        body: Value::Object(obj).to_string(),
        conds,
        returning: returning(ctx, table),
        root,
        limited,
    })
}

pub(crate) fn plan_delete(ctx: &mut Ctx, table: &Table) -> Result<DeleteQuery, RestError> {
    let conds = mutation_conds(ctx, table)?;
    let limited = mutation_limit(ctx, table)?;
    let root = representation(ctx, table)?;
    Ok(DeleteQuery {
        table: table.qualified(),
        conds,
        returning: returning(ctx, table),
        root,
        limited,
    })
}
