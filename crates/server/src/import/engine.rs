//! The table loop: read the original's rows in batches through a cursor (one repeatable-read
//! snapshot of the source), map each row, check its references against what agencyflow's
//! database holds inside the import's transaction, and insert the batch with
//! `INSERT ... SELECT ... FROM jsonb_populate_recordset(...) ON CONFLICT DO NOTHING`. A batch
//! the database rejects is retried row by row under savepoints, so the one bad row is refused
//! with the database's reason and the rest go in. Memory holds one batch at a time.
use std::collections::{BTreeMap, HashMap, HashSet};

use agencyflow_db::tokio_postgres::Transaction;
use serde::Serialize;
use serde_json::{Map, Value};

use super::rules;

pub type Row = Map<String, Value>;

/// One row on its way: the (mapped) columns and the rules that changed it.
pub struct Mapping {
    pub row: Row,
    pub rules: Vec<&'static str>,
}

impl Mapping {
    pub fn new(row: Row) -> Self {
        Mapping {
            row,
            rules: Vec::new(),
        }
    }

    pub fn id(&self, key: &str) -> String {
        match self.row.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => String::new(),
        }
    }

    pub fn str(&self, col: &str) -> Option<&str> {
        self.row.get(col).and_then(Value::as_str)
    }

    pub fn is_null(&self, col: &str) -> bool {
        self.row.get(col).is_none_or(Value::is_null)
    }

    /// Records that `rule` changed this row (once per rule).
    pub fn changed(&mut self, rule: &'static str) {
        debug_assert!(rules::RULES.iter().any(|r| r.id == rule), "{rule}");
        if !self.rules.contains(&rule) {
            self.rules.push(rule);
        }
    }

    pub fn set(&mut self, col: &str, v: Value) {
        self.row.insert(col.to_string(), v);
    }

    /// Maps `col` through its value map (NULL stays NULL).
    pub fn map_value(&mut self, table: &str, col: &str) -> Result<(), String> {
        let Some(v) = self.str(col).map(str::to_string) else {
            return Ok(());
        };
        if let Some(to) = rules::map_value(table, col, &v)? {
            self.set(col, Value::String(to.into()));
            self.changed("value_map");
        }
        Ok(())
    }

    /// Moves `from` to `to` (no rule: a plain rename is documented with the table).
    pub fn rename(&mut self, from: &str, to: &str) {
        if let Some(v) = self.row.remove(from) {
            self.row.insert(to.to_string(), v);
        }
    }

    /// `col` = `v` when it is NULL or absent, counted under `rule` when the column was there.
    pub fn default(&mut self, col: &str, v: Value, rule: Option<&'static str>) {
        if self.is_null(col) {
            if let Some(r) = rule {
                if self.row.contains_key(col) {
                    self.changed(r);
                }
            }
            self.set(col, v);
        }
    }

    /// A numeric amount (read as text) in `from` → integer cents in `to`.
    pub fn cents(&mut self, from: &str, to: &str) -> Result<(), String> {
        let Some(v) = self.row.remove(from) else {
            return Ok(());
        };
        let text = match &v {
            Value::Null => return Ok(()),
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => return Err(format!("{from} = {other} is not a number")),
        };
        let cents = to_cents(&text).ok_or_else(|| format!("{from} = {text} is not an amount"))?;
        if cents < 0 {
            return Err(format!("{from} = {text} is negative"));
        }
        self.set(to, Value::from(cents));
        self.changed("numeric_to_cents");
        Ok(())
    }
}

/// "1234.565" → 123457 (half away from zero), "-3" → -300.
pub fn to_cents(s: &str) -> Option<i64> {
    let s = s.trim();
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let f: Vec<u8> = frac.bytes().map(|b| b - b'0').collect();
    let mut cents = int.checked_mul(100)?
        + (*f.first().unwrap_or(&0) as i64) * 10
        + *f.get(1).unwrap_or(&0) as i64;
    if f.get(2).is_some_and(|d| *d >= 5) {
        cents += 1;
    }
    Some(if neg { -cents } else { cents })
}

/// What a reference points at.
#[derive(Clone, Copy)]
pub enum Parent {
    /// A tenant row of this `public` table: must exist and belong to the row's org (or be
    /// global, org_id NULL, when `global_ok`).
    Tenant {
        table: &'static str,
        global_ok: bool,
    },
    /// An auth user.
    User,
    /// A member of the row's org (`team_members (org_id, user_id)`).
    Member,
    /// A row of a table without org_id (schema-qualified name), matched by its key as text.
    Global(&'static str),
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// The row cannot exist without it.
    Refuse,
    /// Cleared, as ON DELETE SET NULL would.
    Clear,
}

/// A reference column checked before insert.
pub struct Ref {
    pub col: &'static str,
    pub parent: Parent,
    pub missing: Missing,
    /// The row's org_id comes from the parent when it is NULL.
    pub org_from_parent: bool,
    /// (parent column, child column): the child's column is filled from the parent's when NULL.
    pub copy: Option<(&'static str, &'static str, &'static str)>,
}

pub const fn tenant(col: &'static str, table: &'static str, missing: Missing) -> Ref {
    Ref {
        col,
        parent: Parent::Tenant {
            table,
            global_ok: false,
        },
        missing,
        org_from_parent: false,
        copy: None,
    }
}

pub const fn person(col: &'static str) -> Ref {
    Ref {
        col,
        parent: Parent::Member,
        missing: Missing::Clear,
        org_from_parent: false,
        copy: None,
    }
}

/// Shared state of the mappers.
#[derive(Default)]
pub struct Ctx {
    /// `--embedding-model`: table → model name.
    pub embedding_models: HashMap<String, String>,
    /// Dimensions of each embedding column in agencyflow.
    pub embedding_dims: HashMap<String, usize>,
    /// agencyflow's global services: slug → id.
    pub global_services: HashMap<String, String>,
    /// An original service id → the agencyflow id it was matched to.
    pub service_remap: HashMap<String, String>,
    /// org → its only member, for the orgs of the wizard_sessions batch at hand (looked up
    /// per batch, so it never holds more than a batch's orgs).
    pub sole_member: HashMap<String, String>,
    /// `--refusals-listed`: refused rows named per table.
    pub refusals_listed: usize,
}

pub type MapFn = fn(&mut Mapping, &mut Ctx) -> Result<Outcome, String>;

pub enum Outcome {
    Insert,
    /// Matched to a row agencyflow already has (not inserted, not refused).
    Matched,
}

pub struct TableSpec {
    /// The name in the report: `tasks`, `auth.users`.
    pub name: &'static str,
    pub source: (&'static str, &'static str),
    pub target: (&'static str, &'static str),
    /// The key the row keeps (`id`, or `key` for ai_cache).
    pub key: &'static str,
    /// `ON CONFLICT ...` clause body.
    pub conflict: &'static str,
    /// Source ordering (stable batches).
    pub order: &'static str,
    pub refs: &'static [Ref],
    pub map: MapFn,
}

#[derive(Debug, Default, Serialize, Clone)]
pub struct Refusal {
    pub id: String,
    pub reason: String,
}

#[derive(Debug, Default, Serialize, Clone)]
pub struct TableReport {
    pub table: String,
    /// Rows read from the original (0 when the table is absent there).
    pub read: u64,
    /// Rows written into agencyflow by this run.
    pub imported: u64,
    /// Rows agencyflow already had (same id: an earlier run) and left as they are.
    pub already_present: u64,
    /// Rows matched to an existing agencyflow row by another key (e.g. a service's slug).
    pub matched: u64,
    /// Rows changed by at least one mapping rule.
    pub changed: u64,
    /// How many rows each rule changed.
    pub rules: BTreeMap<String, u64>,
    /// Rows refused: all of them counted.
    pub refused_count: u64,
    /// The first refused rows (`--refusals-listed`, 1000 per table) with their id and
    /// reason; the rest are only counted, so memory does not grow with bad data.
    pub refused: Vec<Refusal>,
    /// Refused rows beyond the listed ones.
    #[serde(skip_serializing_if = "is_zero")]
    pub refused_not_listed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl TableReport {
    /// Counts a refused row; names it while fewer than `listed` are named.
    pub fn refuse(&mut self, id: String, reason: String, listed: usize) {
        self.refused_count += 1;
        if self.refused.len() < listed {
            self.refused.push(Refusal { id, reason });
        } else {
            self.refused_not_listed += 1;
        }
    }

    pub fn rule(&mut self, id: &'static str, n: u64) {
        if n > 0 {
            *self.rules.entry(id.to_string()).or_default() += n;
        }
    }
}

pub fn qi(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub fn qualified((schema, table): (&str, &str)) -> String {
    format!("{}.{}", qi(schema), qi(table))
}

/// Insertable columns of a table (not generated).
pub async fn target_columns(
    c: &Transaction<'_>,
    (schema, table): (&str, &str),
) -> Result<HashSet<String>, String> {
    let rows = c
        .query(
            "select column_name::text from information_schema.columns
              where table_schema = $1 and table_name = $2 and is_generated = 'NEVER'",
            &[&schema, &table],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Parent lookups: id → (org_id, copied column).
async fn lookup(
    tx: &Transaction<'_>,
    parent: Parent,
    copy_col: Option<&str>,
    ids: Vec<String>,
) -> Result<HashMap<String, (Option<String>, Option<String>)>, String> {
    let extra = copy_col.map_or("null".to_string(), |c| format!("{}::text", qi(c)));
    let sql = match parent {
        Parent::Tenant { table, .. } => format!(
            "select id::text, org_id::text, {extra} from public.{} where id = any($1::text[]::uuid[])",
            qi(table)
        ),
        Parent::User => {
            "select id::text, null::text, null::text from auth.users where id = any($1::text[]::uuid[])"
                .to_string()
        }
        Parent::Global(table) => format!(
            "select id::text, null::text, {extra} from {table} where id::text = any($1::text[])"
        ),
        Parent::Member => unreachable!(),
    };
    let rows = tx.query(&sql, &[&ids]).await.map_err(|e| e.to_string())?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, String>(0), (r.get(1), r.get(2))))
        .collect())
}

/// Checks and resolves the batch's references; returns the refusals (index, reason).
pub async fn resolve_refs(
    tx: &Transaction<'_>,
    spec: &TableSpec,
    batch: &mut [Mapping],
    refused: &mut [Option<String>],
) -> Result<(), String> {
    for r in spec.refs {
        let ids: Vec<String> = batch
            .iter()
            .zip(refused.iter())
            .filter(|(_, x)| x.is_none())
            .filter_map(|(m, _)| m.str(r.col).map(str::to_string))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if ids.is_empty() {
            continue;
        }
        if let Parent::Member = r.parent {
            let rows = tx
                .query(
                    "select org_id::text, user_id::text from public.team_members where user_id = any($1::text[]::uuid[])",
                    &[&ids],
                )
                .await
                .map_err(|e| e.to_string())?;
            let members: HashSet<(String, String)> =
                rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            for (m, x) in batch.iter_mut().zip(refused.iter()) {
                if x.is_some() {
                    continue;
                }
                let (Some(user), Some(org)) = (m.str(r.col), m.str("org_id")) else {
                    continue;
                };
                if !members.contains(&(org.to_string(), user.to_string())) {
                    m.set(r.col, Value::Null);
                    m.changed("person_not_member");
                }
            }
            continue;
        }
        let found = lookup(tx, r.parent, r.copy.map(|c| c.0), ids).await?;
        for (m, x) in batch.iter_mut().zip(refused.iter_mut()) {
            if x.is_some() {
                continue;
            }
            let Some(id) = m.str(r.col).map(str::to_string) else {
                continue;
            };
            let problem = match found.get(&id) {
                None => Some(format!("{} {id} does not exist", r.col)),
                Some((porg, extra)) => {
                    if let (true, Some(po)) = (r.org_from_parent && m.is_null("org_id"), porg) {
                        m.set("org_id", Value::String(po.clone()));
                        m.changed("org_from_parent");
                    }
                    if let Some((_, child, rule)) = r.copy {
                        if m.is_null(child) {
                            if let Some(v) = extra {
                                m.set(child, Value::String(v.clone()));
                                m.changed(rule);
                            }
                        }
                    }
                    match (r.parent, porg, m.str("org_id")) {
                        (Parent::Tenant { .. }, Some(po), Some(o)) if po != o => Some(format!(
                            "{} {id} belongs to another organization ({po})",
                            r.col
                        )),
                        (
                            Parent::Tenant {
                                global_ok: false, ..
                            },
                            None,
                            _,
                        ) => Some(format!("{} {id} has no organization", r.col)),
                        _ => None,
                    }
                }
            };
            if let Some(p) = problem {
                match r.missing {
                    Missing::Refuse => *x = Some(p),
                    Missing::Clear => {
                        m.set(r.col, Value::Null);
                        m.changed("dangling_ref_cleared");
                    }
                }
            }
        }
    }
    Ok(())
}

fn to_json<'a>(rows: impl Iterator<Item = &'a Row>) -> String {
    Value::Array(rows.map(|r| Value::Object(r.clone())).collect()).to_string()
}

/// Inserts the rows; returns (inserted, already present, refusals by index).
pub async fn insert_batch(
    tx: &mut Transaction<'_>,
    spec: &TableSpec,
    columns: &HashSet<String>,
    rows: &[(usize, Row)],
) -> Result<(u64, u64, Vec<(usize, String)>), String> {
    if rows.is_empty() {
        return Ok((0, 0, Vec::new()));
    }
    let mut cols: Vec<&String> = columns
        .iter()
        .filter(|c| rows.iter().any(|(_, r)| r.contains_key(c.as_str())))
        .collect();
    cols.sort();
    let list = cols.iter().map(|c| qi(c)).collect::<Vec<_>>().join(", ");
    let table = qualified(spec.target);
    let sql = format!(
        "insert into {table} ({list}) select {list} from jsonb_populate_recordset(null::{table}, $1::text::jsonb) on conflict {} returning 1",
        spec.conflict
    );
    let all = to_json(rows.iter().map(|(_, r)| r));
    let sp = tx
        .savepoint("import_batch")
        .await
        .map_err(|e| e.to_string())?;
    match sp.query(&sql, &[&all]).await {
        Ok(done) => {
            sp.commit().await.map_err(|e| e.to_string())?;
            let n = done.len() as u64;
            return Ok((n, rows.len() as u64 - n, Vec::new()));
        }
        Err(e) if e.as_db_error().is_none() => return Err(e.to_string()),
        Err(_) => sp.rollback().await.map_err(|e| e.to_string())?,
    }
    // One at a time, to name the rows the database refuses.
    let (mut ins, mut present, mut bad) = (0, 0, Vec::new());
    for (i, r) in rows {
        let one = to_json(std::iter::once(r));
        let sp = tx
            .savepoint("import_row")
            .await
            .map_err(|e| e.to_string())?;
        match sp.query(&sql, &[&one]).await {
            Ok(done) => {
                sp.commit().await.map_err(|e| e.to_string())?;
                if done.is_empty() {
                    present += 1
                } else {
                    ins += 1
                }
            }
            Err(e) => match e.as_db_error() {
                Some(db) => {
                    sp.rollback().await.map_err(|e| e.to_string())?;
                    let mut reason = db.message().to_string();
                    if let Some(d) = db.detail() {
                        reason.push_str(": ");
                        reason.push_str(d);
                    }
                    bad.push((*i, reason));
                }
                None => return Err(e.to_string()),
            },
        }
    }
    Ok((ins, present, bad))
}

/// Whether a source table exists, and its numeric columns (read as text, exactly).
pub async fn source_table(
    src: &Transaction<'_>,
    (schema, table): (&str, &str),
) -> Result<Option<Vec<String>>, String> {
    let exists: bool = src
        .query_one(
            "select to_regclass(format('%I.%I', $1::text, $2::text)) is not null",
            &[&schema, &table],
        )
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let rows = src
        .query(
            "select column_name::text from information_schema.columns
              where table_schema = $1 and table_name = $2 and data_type = 'numeric'",
            &[&schema, &table],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(rows.iter().map(|r| r.get(0)).collect()))
}

/// The SELECT that reads a source table as JSON text, numerics as exact text.
pub fn source_sql(spec: &TableSpec, numeric: &[String]) -> String {
    let mut expr = "to_jsonb(t)".to_string();
    if !numeric.is_empty() {
        let pairs: Vec<String> = numeric
            .iter()
            .map(|c| format!("'{}', t.{}::text", c.replace('\'', "''"), qi(c)))
            .collect();
        expr = format!("({expr} || jsonb_build_object({}))", pairs.join(", "));
    }
    format!(
        "select {expr}::text from {} t order by {}",
        qualified(spec.source),
        spec.order
    )
}

#[cfg(test)]
mod tests {
    use super::to_cents;

    #[test]
    fn amounts_become_cents_exactly() {
        assert_eq!(to_cents("1234.5"), Some(123450));
        assert_eq!(to_cents("1234.565"), Some(123457));
        assert_eq!(to_cents("1234.564999"), Some(123456));
        assert_eq!(to_cents("0.1"), Some(10));
        assert_eq!(to_cents("12"), Some(1200));
        assert_eq!(to_cents("-3.2"), Some(-320));
        assert_eq!(to_cents("1e3"), None);
        assert_eq!(to_cents(""), None);
    }
}
