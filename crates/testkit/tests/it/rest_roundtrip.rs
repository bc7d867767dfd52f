//! Every column of every table and view the API exposes keeps its value through `/rest/v1`
//! (issue #15). The list of relations and columns is read from the catalog when the test
//! runs, so a new table or column is covered without touching this file; the demo agency
//! (`agencyflow seed --demo`) gives each table real rows to start from.
//!
//! Per table, as service_role: a row is deleted (as superuser) and POSTed back with every
//! writable column, PATCHed with a value for every column, upserted back
//! (`resolution=merge-duplicates`, update then insert), and after every write the row read
//! back must hold exactly what was sent, the write's own representation must agree with a
//! read, and a read must agree with PostgreSQL's `to_json` of the row. Then every column is
//! used as an `eq` filter and must find its row. Views that cannot be written are read and
//! filtered the same way. A failure names `table.column`.
//!
//! The second test covers every type-modifier family on a table of its own: values keep
//! their declared type WITH its modifier through writes, filters compare against the type
//! without it, and a value longer than its column is refused (22001), never truncated.
use std::collections::{BTreeMap, BTreeSet};

use agencyflow_testkit::agencyflow_db::tokio_postgres::Client;
use agencyflow_testkit::{TestApp, TestDb};
use reqwest::Method;
use serde_json::{json, Map, Value};

type Row = Map<String, Value>;

/// Columns a trigger rewrites on UPDATE: compared after inserts only. An entry applies to a
/// table only while that table has a trigger calling the named function (`*` = every such
/// table), so a column is never excluded by name alone.
const TRIGGER_MAINTAINED_ON_UPDATE: &[(&str, &str, &str)] = &[
    // update_updated_at(): BEFORE UPDATE sets updated_at := now().
    ("*", "updated_at", "update_updated_at"),
    // handle_wizard_completion(): on UPDATE keeps the first completion time
    // (coalesce(old.wizard_completed_at, new.wizard_completed_at, now())), or clears it
    // below step 5.
    (
        "wizard_sessions",
        "wizard_completed_at",
        "handle_wizard_completion",
    ),
];

/// How a column's PATCH value is chosen when taking it from another row would break a
/// constraint.
enum Pick {
    /// The row's own value.
    Keep,
    /// This JSON value (also used when the table has no row to start from).
    Json(&'static str),
}

/// The only columns whose values are not taken from the rows: each is dictated by a CHECK
/// constraint or a trigger.
const OVERRIDES: &[(&str, &str, Pick)] = &[
    // check_payment_currency(): a payment's currency is its invoice's, and the invoice stays.
    ("payments", "currency", Pick::Keep),
    // protect_last_owner(): an organization keeps at least one owner.
    ("team_members", "role", Pick::Keep),
    // wizard_answers_check: screen_id = 'step-' || step_number, and screen_id is a key.
    ("wizard_answers", "step_number", Pick::Keep),
    // context_snapshots_one_active_per_project: only one active snapshot per project.
    ("context_snapshots", "is_active", Pick::Keep),
    // set_deal_closed_at(): closed_at stays only on won or lost deals.
    ("crm_deals", "status", Pick::Json(r#""lost""#)),
    // set_task_completed_at(): completed_at stays only on done tasks.
    ("tasks", "status", Pick::Keep),
    // invitations_email_check: lower-case, trimmed, an address.
    (
        "invitations",
        "email",
        Pick::Json(r#""round.trip@example.test""#),
    ),
    // invitations_role_check: one of the team roles.
    ("invitations", "role", Pick::Json(r#""consultant""#)),
];

/// Tables whose deleted row must take its dependents with it before it is POSTed back.
const DELETE_WITH_CASCADE: &[&str] = &[
    // handle_new_brief() records the brief's version in brief_versions on insert; the old
    // record (unique (brief_id, version)) goes with the brief, as deleting it through the API
    // would do.
    "briefs",
];

// ----- the catalog -----

struct Column {
    name: String,
    /// `format_type` with the modifier: `character(3)`, `extensions.vector(768)`.
    sql_type: String,
    /// The type's name (a domain's base type).
    udt: String,
    /// `typtype` of that type (`e` = enum).
    typtype: String,
    /// The element type's name, for arrays.
    elem: Option<String>,
    labels: Vec<String>,
    generated: bool,
}

struct ForeignKey {
    cols: Vec<String>,
    ref_table: String,
    ref_cols: Vec<String>,
}

struct Relation {
    name: String,
    kind: String,
    insertable: bool,
    updatable: bool,
    columns: Vec<Column>,
    /// The primary key (a view's: its base table's, when the view has those columns).
    key: Vec<String>,
    /// Columns in any unique index: kept when PATCHing, like the key.
    unique_cols: BTreeSet<String>,
    fks: Vec<ForeignKey>,
    /// The trigger functions of the table, or of a view's base table (`regproc` text).
    triggers: BTreeSet<String>,
}

impl Relation {
    fn is_table(&self) -> bool {
        matches!(self.kind.as_str(), "r" | "p")
    }
    fn writable(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| !c.generated)
    }
    fn fk_cols(&self) -> BTreeSet<&str> {
        self.fks
            .iter()
            .flat_map(|f| f.cols.iter().map(|c| c.as_str()))
            .collect()
    }
    /// Columns a trigger rewrites on UPDATE (TRIGGER_MAINTAINED_ON_UPDATE).
    fn maintained_on_update(&self) -> BTreeSet<&str> {
        TRIGGER_MAINTAINED_ON_UPDATE
            .iter()
            .filter(|(t, c, f)| {
                (*t == "*" || *t == self.name)
                    && self.triggers.contains(*f)
                    && self.columns.iter().any(|col| col.name == *c)
            })
            .map(|(_, c, _)| *c)
            .collect()
    }
    fn override_for(&self, col: &str) -> Option<&'static Pick> {
        OVERRIDES
            .iter()
            .find(|(t, c, _)| *t == self.name && *c == col)
            .map(|(_, _, p)| p)
    }
}

const CATALOG_SQL: &str = r#"
with rels as (
  select c.oid, c.relname, c.relkind,
    case when c.relkind = 'v' then (
      select min(d.refobjid) from pg_rewrite rw
      join pg_depend d on d.classid = 'pg_rewrite'::regclass and d.objid = rw.oid
        and d.refclassid = 'pg_class'::regclass and d.refobjid <> c.oid
      where rw.ev_class = c.oid
      having count(distinct d.refobjid) = 1)
    else c.oid end as base
  from pg_class c
  where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p', 'v', 'm', 'f')
    and not c.relispartition
    and has_table_privilege('service_role', c.oid, 'SELECT')
)
select coalesce(json_agg(json_build_object(
  'name', r.relname,
  'kind', r.relkind,
  'insertable', r.relkind in ('r', 'p') or (pg_relation_is_updatable(r.oid, true) & 8) = 8,
  'updatable', r.relkind in ('r', 'p') or (pg_relation_is_updatable(r.oid, true) & 4) = 4,
  'columns', (
    select json_agg(json_build_object(
      'name', a.attname,
      'sql_type', format_type(a.atttypid, a.atttypmod),
      'udt', coalesce(bt.typname, t.typname),
      'typtype', coalesce(bt.typtype, t.typtype),
      'elem', et.typname,
      'labels', (select json_agg(e.enumlabel order by e.enumsortorder) from pg_enum e
                 where e.enumtypid = coalesce(bt.oid, t.oid)),
      'generated', a.attgenerated <> '' or a.attidentity = 'a') order by a.attnum)
    from pg_attribute a
    join pg_type t on t.oid = a.atttypid
    left join pg_type bt on t.typtype = 'd' and bt.oid = t.typbasetype
    left join pg_type et on et.oid = coalesce(bt.typelem, t.typelem)
      and coalesce(bt.typcategory, t.typcategory) = 'A'
    where a.attrelid = r.oid and a.attnum > 0 and not a.attisdropped),
  'key', coalesce((
    select json_agg(a.attname order by k.ord)
    from pg_index i
    cross join unnest(i.indkey) with ordinality k(attnum, ord)
    join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
    where i.indrelid = r.base and i.indisprimary
    having bool_and(exists (select 1 from pg_attribute va where va.attrelid = r.oid
                            and va.attname = a.attname and not va.attisdropped))), '[]'),
  'unique_cols', coalesce((
    select json_agg(distinct a.attname)
    from pg_index i
    cross join unnest(i.indkey) k(attnum)
    join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
    where i.indrelid = r.oid and i.indisunique), '[]'),
  'fks', coalesce((
    select json_agg(json_build_object(
      'cols', (select json_agg(a.attname order by k.ord)
               from unnest(con.conkey) with ordinality k(n, ord)
               join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.n),
      'ref_table', con.confrelid::regclass::text,
      'ref_cols', (select json_agg(a.attname order by k.ord)
                   from unnest(con.confkey) with ordinality k(n, ord)
                   join pg_attribute a on a.attrelid = con.confrelid and a.attnum = k.n))
      order by cardinality(con.conkey) desc, con.conname)
    from pg_constraint con where con.conrelid = r.oid and con.contype = 'f'), '[]'),
  'triggers', coalesce((
    select json_agg(tg.tgfoid::regproc::text) from pg_trigger tg
    where tg.tgrelid in (r.oid, r.base) and not tg.tgisinternal), '[]')
) order by r.relname), '[]')
from rels r
"#;

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn load_catalog(su: &Client) -> Vec<Relation> {
    let v: Value = su
        .query_one(CATALOG_SQL, &[])
        .await
        .expect("catalog")
        .get(0);
    v.as_array()
        .expect("relations")
        .iter()
        .map(|r| Relation {
            name: r["name"].as_str().unwrap().to_string(),
            kind: r["kind"].as_str().unwrap().to_string(),
            insertable: r["insertable"].as_bool().unwrap(),
            updatable: r["updatable"].as_bool().unwrap(),
            columns: r["columns"]
                .as_array()
                .expect("columns")
                .iter()
                .map(|c| Column {
                    name: c["name"].as_str().unwrap().to_string(),
                    sql_type: c["sql_type"].as_str().unwrap().to_string(),
                    udt: c["udt"].as_str().unwrap().to_string(),
                    typtype: c["typtype"].as_str().unwrap().to_string(),
                    elem: c["elem"].as_str().map(str::to_string),
                    labels: strings(&c["labels"]),
                    generated: c["generated"].as_bool().unwrap(),
                })
                .collect(),
            key: strings(&r["key"]),
            unique_cols: strings(&r["unique_cols"]).into_iter().collect(),
            fks: r["fks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| ForeignKey {
                    cols: strings(&f["cols"]),
                    ref_table: f["ref_table"].as_str().unwrap().to_string(),
                    ref_cols: strings(&f["ref_cols"]),
                })
                .collect(),
            triggers: strings(&r["triggers"]).into_iter().collect(),
        })
        .collect()
}

// ----- values -----

/// A JSON value as PostgREST filter text / a text parameter: strings as they are, arrays as
/// PostgreSQL array literals, everything else as JSON.
fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let inner: Vec<String> = items
                .iter()
                .map(|i| match i {
                    Value::Null => "NULL".to_string(),
                    Value::Array(_) => as_text(i),
                    other => {
                        let s = as_text(other);
                        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
                    }
                })
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        other => other.to_string(),
    }
}

/// A column's value as `eq` filter text: JSON for json/jsonb, else [`as_text`].
fn filter_text(col: &Column, v: &Value) -> String {
    if col.udt == "jsonb" || col.udt == "json" {
        v.to_string()
    } else {
        as_text(v)
    }
}

/// The `n` of `type(n)` / `type(n,m)`, if any.
fn type_len(sql_type: &str) -> Option<(usize, Option<usize>)> {
    let open = sql_type.find('(')?;
    let close = sql_type[open..].find(')')? + open;
    let mut parts = sql_type[open + 1..close]
        .split(',')
        .map(|p| p.trim().parse::<usize>().ok());
    let first = parts.next()??;
    Some((first, parts.next().flatten()))
}

/// A value valid for a scalar type, as PostgreSQL writes it in JSON (so it reads back
/// identical); `variant` picks a different one.
fn generate_scalar(
    udt: &str,
    typtype: &str,
    labels: &[String],
    sql_type: &str,
    variant: usize,
) -> Option<Value> {
    let len = type_len(sql_type);
    if typtype == "e" {
        return labels.get(variant % labels.len().max(1)).map(|l| json!(l));
    }
    Some(match udt {
        "uuid" => json!(uuid::Uuid::new_v4().to_string()),
        "text" | "varchar" | "citext" | "name" => {
            let s = format!("round trip {variant}: ünïcödé, 'single' \"double\" \\ (x) *");
            match len {
                Some((n, _)) => json!(s.chars().take(n).collect::<String>()),
                None => json!(s),
            }
        }
        "bpchar" => {
            let n = len.map(|l| l.0).unwrap_or(1);
            let alphabet = if variant == 0 {
                "ABCDEFGHIJ"
            } else {
                "ZYXWVUTSRQ"
            };
            json!(alphabet.chars().cycle().take(n).collect::<String>())
        }
        "int2" | "int4" | "int8" => json!(7 + variant as i64),
        "numeric" => match len {
            Some((_, Some(s))) if s > 0 => json!(12.5 + variant as f64),
            _ => json!(12 + variant as i64),
        },
        "float4" | "float8" => json!(1.5 + variant as f64),
        "bool" => json!(variant == 0),
        "date" => json!(format!("2026-02-{:02}", 3 + variant)),
        "timestamptz" => json!(format!("2026-02-{:02}T04:05:06.789+00:00", 3 + variant)),
        "timestamp" => json!(format!("2026-02-{:02}T04:05:06.789", 3 + variant)),
        "time" => json!(format!("04:05:{:02}.789", 6 + variant)),
        "interval" => json!(format!("{} days 02:03:04", 1 + variant)),
        "json" | "jsonb" => json!({"round_trip": [1, "two", null, true], "variant": variant}),
        "vector" => {
            let n = len.map(|l| l.0).unwrap_or(3);
            let parts: Vec<String> = (0..n)
                .map(|i| format!("{}", ((i + variant) % 7) as f64 * 0.5))
                .collect();
            json!(format!("[{}]", parts.join(",")))
        }
        "tsvector" => json!(format!("'round':{} 'trip':2", 1 + variant)),
        "bytea" => json!(format!("\\x01020{variant}")),
        "bit" | "varbit" => {
            let n = len.map(|l| l.0).unwrap_or(1);
            json!((0..n)
                .map(|i| if (i + variant) % 2 == 1 { '0' } else { '1' })
                .collect::<String>())
        }
        "inet" => json!(format!("192.0.2.{}", 1 + variant)),
        _ => return None,
    })
}

fn generate(col: &Column, variant: usize) -> Option<Value> {
    match &col.elem {
        Some(elem) => {
            // An array: two elements of its element type (same modifier).
            let elem_type = col.sql_type.trim_end_matches("[]");
            let a = generate_scalar(elem, "", &[], elem_type, variant)?;
            let b = generate_scalar(elem, "", &[], elem_type, variant + 1)?;
            Some(json!([a, b]))
        }
        None => generate_scalar(&col.udt, &col.typtype, &col.labels, &col.sql_type, variant),
    }
}

// ----- the API and the database -----

struct Reply {
    status: u16,
    text: String,
}

impl Reply {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text))
    }
    fn rows(&self) -> Vec<Row> {
        match self.json() {
            Value::Array(a) => a
                .into_iter()
                .map(|r| match r {
                    Value::Object(m) => m,
                    other => panic!("not a row: {other}"),
                })
                .collect(),
            other => panic!("not an array: {other}"),
        }
    }
    fn summary(&self) -> String {
        format!("HTTP {} {}", self.status, self.text)
    }
}

struct Api {
    app: TestApp,
}

impl Api {
    async fn send(
        &self,
        method: Method,
        rel: &str,
        query: &[(String, String)],
        prefer: &str,
        body: Option<&Value>,
    ) -> Reply {
        let key = &self.app.service_role_key;
        let mut rb = self
            .app
            .http
            .request(method, self.app.url(&format!("/rest/v1/{rel}")))
            .header("apikey", key)
            .header("Authorization", format!("Bearer {key}"))
            .query(query);
        if !prefer.is_empty() {
            rb = rb.header("Prefer", prefer);
        }
        if let Some(b) = body {
            rb = rb
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let r = rb.send().await.expect("request");
        let status = r.status().as_u16();
        Reply {
            status,
            text: r.text().await.expect("body"),
        }
    }

    async fn get(&self, rel: &str, query: &[(String, String)]) -> Reply {
        self.send(Method::GET, rel, query, "", None).await
    }
}

/// `col=eq.value` for every key column of a row.
fn key_query(rel: &Relation, row: &Row) -> Vec<(String, String)> {
    rel.key
        .iter()
        .map(|k| {
            (
                k.clone(),
                format!("eq.{}", as_text(row.get(k).unwrap_or(&Value::Null))),
            )
        })
        .collect()
}

fn key_label(rel: &Relation, row: &Row) -> String {
    rel.key
        .iter()
        .map(|k| format!("{k}={}", as_text(row.get(k).unwrap_or(&Value::Null))))
        .collect::<Vec<_>>()
        .join(",")
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `where k1::text = $1 and ...` and its parameters.
fn key_where(rel: &Relation, row: &Row) -> (String, Vec<String>) {
    let conds: Vec<String> = rel
        .key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("t.{}::text = ${}", quoted(k), i + 1))
        .collect();
    let params = rel
        .key
        .iter()
        .map(|k| as_text(row.get(k).unwrap_or(&Value::Null)))
        .collect();
    (format!(" where {}", conds.join(" and ")), params)
}

fn params_ref(
    p: &[String],
) -> Vec<&(dyn agencyflow_testkit::agencyflow_db::tokio_postgres::types::ToSql + Sync)> {
    p.iter().map(|s| s as _).collect()
}

/// PostgreSQL's own JSON of the row (as superuser), if it exists.
async fn pg_row(su: &Client, rel: &Relation, row: &Row) -> Option<Row> {
    let (w, p) = key_where(rel, row);
    let sql = format!("select to_json(t) from public.{} t{w}", quoted(&rel.name));
    let found = su.query_opt(&sql, &params_ref(&p)).await.expect("pg row");
    found.map(|r| match r.get::<_, Value>(0) {
        Value::Object(m) => m,
        other => panic!("{other}"),
    })
}

/// All rows as PostgreSQL renders them.
async fn pg_rows(su: &Client, rel: &str) -> Vec<Row> {
    let sql = format!(
        "select coalesce(json_agg(to_json(t)), '[]') from public.{} t",
        quoted(rel)
    );
    let v: Value = su.query_one(&sql, &[]).await.expect("pg rows").get(0);
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_object().unwrap().clone())
        .collect()
}

/// Deletes the row as superuser: in replica mode (no triggers, no cascades: the row comes
/// back with the same key), unless the table is in DELETE_WITH_CASCADE.
async fn pg_delete(su: &Client, rel: &Relation, row: &Row) {
    let (w, p) = key_where(rel, row);
    let replica = !DELETE_WITH_CASCADE.contains(&rel.name.as_str());
    if replica {
        su.batch_execute("set session_replication_role = replica")
            .await
            .unwrap();
    }
    let n = su
        .execute(
            &format!("delete from public.{} t{w}", quoted(&rel.name)),
            &params_ref(&p),
        )
        .await
        .unwrap_or_else(|e| panic!("deleting {} {}: {e}", rel.name, key_label(rel, row)));
    if replica {
        su.batch_execute("reset session_replication_role")
            .await
            .unwrap();
    }
    assert_eq!(n, 1, "deleting {} {}", rel.name, key_label(rel, row));
}

/// Puts the row (writable columns) back as superuser, replacing it, without triggers: the
/// state a failed write is diagnosed from.
async fn pg_restore(su: &Client, rel: &Relation, row: &Row) {
    if pg_row(su, rel, row).await.is_some() {
        pg_delete(su, rel, row).await;
    }
    let cols: Vec<String> = rel.writable().map(|c| quoted(&c.name)).collect();
    let body: Row = rel
        .writable()
        .map(|c| {
            (
                c.name.clone(),
                row.get(&c.name).cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    su.batch_execute("set session_replication_role = replica")
        .await
        .unwrap();
    let sql = format!(
        "insert into public.{t} ({c}) select {c} from json_populate_record(null::public.{t}, $1)",
        t = quoted(&rel.name),
        c = cols.join(", ")
    );
    let r = su.execute(&sql, &[&Value::Object(body)]).await;
    su.batch_execute("reset session_replication_role")
        .await
        .unwrap();
    r.unwrap_or_else(|e| panic!("restoring {} {}: {e}", rel.name, key_label(rel, row)));
}

/// Fills the null columns of every foreign key in `want` from a referenced row that agrees
/// with the row's other values (composite keys first: they share `org_id`).
async fn fill_foreign_keys(su: &Client, rel: &Relation, row: &mut Row, want: &BTreeSet<String>) {
    for fk in &rel.fks {
        let missing: Vec<usize> = (0..fk.cols.len())
            .filter(|&i| {
                want.contains(&fk.cols[i]) && row.get(&fk.cols[i]).is_none_or(Value::is_null)
            })
            .collect();
        if missing.is_empty() {
            continue;
        }
        let mut conds = Vec::new();
        let mut params = Vec::new();
        for (i, c) in fk.cols.iter().enumerate() {
            if let Some(v) = row.get(c).filter(|v| !v.is_null()) {
                params.push(as_text(v));
                conds.push(format!(
                    "r.{}::text = ${}",
                    quoted(&fk.ref_cols[i]),
                    params.len()
                ));
            }
        }
        let cols: Vec<String> = fk
            .ref_cols
            .iter()
            .map(|c| format!("r.{}", quoted(c)))
            .collect();
        let sql = format!(
            "select to_json(x) from (select {} from {} r{} order by 1 limit 1) x",
            cols.join(", "),
            fk.ref_table,
            if conds.is_empty() {
                String::new()
            } else {
                format!(" where {}", conds.join(" and "))
            }
        );
        let found = su
            .query_opt(&sql, &params_ref(&params))
            .await
            .expect("fk row");
        let Some(found) = found else { continue };
        let found: Value = found.get(0);
        for i in missing {
            row.insert(fk.cols[i].clone(), found[&fk.ref_cols[i]].clone());
        }
    }
}

// ----- the round trip -----

struct Run<'a> {
    api: &'a Api,
    su: &'a Client,
    failures: Vec<String>,
    columns_written: usize,
    /// PATCHed values that differ from the row's (the rest are keys, or kept).
    columns_changed: usize,
}

fn non_null_count(r: &Row) -> usize {
    r.values().filter(|v| !v.is_null()).count()
}

/// A row's identity for matching REST and PostgreSQL rows.
fn row_id(rel: &Relation, r: &Row) -> String {
    if rel.key.is_empty() {
        Value::Object(r.clone()).to_string()
    } else {
        rel.key
            .iter()
            .map(|k| r[k].to_string())
            .collect::<Vec<_>>()
            .join("|")
    }
}

impl Run<'_> {
    fn fail(&mut self, msg: String) {
        self.failures.push(msg);
    }

    /// Every row through the API equals PostgreSQL's JSON of it, column by column.
    async fn check_reads(&mut self, rel: &Relation, rows: &[Row]) {
        let pg = pg_rows(self.su, &rel.name).await;
        let by_id: BTreeMap<String, &Row> = pg.iter().map(|r| (row_id(rel, r), r)).collect();
        if pg.len() != rows.len() {
            self.fail(format!(
                "{} [GET]: the API returned {} rows, PostgreSQL has {}",
                rel.name,
                rows.len(),
                pg.len()
            ));
        }
        for r in rows {
            let Some(p) = by_id.get(&row_id(rel, r)) else {
                self.fail(format!(
                    "{} [GET]: a row PostgreSQL does not have: {}",
                    rel.name,
                    Value::Object(r.clone())
                ));
                continue;
            };
            for c in &rel.columns {
                if r.get(&c.name) != p.get(&c.name) {
                    self.fail(format!(
                        "{}.{} [GET]: the API read {:?}, PostgreSQL has {:?}",
                        rel.name,
                        c.name,
                        r.get(&c.name),
                        p.get(&c.name)
                    ));
                    break;
                }
            }
        }
    }

    /// Every column with a value, as an `eq` filter (plus the key), finds the row.
    async fn check_filters(&mut self, rel: &Relation, rows: &[Row]) {
        for c in &rel.columns {
            // json has no equality operator.
            if c.udt == "json" {
                continue;
            }
            let Some(row) = rows
                .iter()
                .find(|r| r.get(&c.name).is_some_and(|v| !v.is_null()))
            else {
                continue;
            };
            let mut q = if rel.key.is_empty() {
                vec![]
            } else {
                key_query(rel, row)
            };
            q.push((
                c.name.clone(),
                format!("eq.{}", filter_text(c, &row[&c.name])),
            ));
            let r = self.api.get(&rel.name, &q).await;
            if !r.ok() {
                self.fail(format!(
                    "{}.{} [filter eq]: {}",
                    rel.name,
                    c.name,
                    r.summary()
                ));
            } else if !r.rows().contains(row) {
                self.fail(format!(
                    "{}.{} [filter eq.{}]: the row is not found: {}",
                    rel.name,
                    c.name,
                    filter_text(c, &row[&c.name]),
                    r.text
                ));
            }
        }
    }

    /// After a write: the row read back holds what was sent (except `skip`), the write's
    /// representation agrees with the read, the read agrees with PostgreSQL.
    async fn check_written(
        &mut self,
        rel: &Relation,
        phase: &str,
        at: &Row,
        sent: &Row,
        repr: Option<&Row>,
        skip: &BTreeSet<&str>,
    ) -> bool {
        let r = self.api.get(&rel.name, &key_query(rel, at)).await;
        if !r.ok() {
            self.fail(format!("{} [{phase}] read back: {}", rel.name, r.summary()));
            return false;
        }
        let rows = r.rows();
        let [read] = rows.as_slice() else {
            self.fail(format!(
                "{} [{phase}] read back {} rows: {}",
                rel.name,
                rows.len(),
                r.text
            ));
            return false;
        };
        let pg = pg_row(self.su, rel, at).await.unwrap_or_default();
        let before = self.failures.len();
        for c in &rel.columns {
            let got = read.get(&c.name);
            if let Some(want) = sent.get(&c.name) {
                if !skip.contains(c.name.as_str()) && got != Some(want) {
                    self.fail(format!(
                        "{}.{} [{phase}]: sent {want}, read back {}",
                        rel.name,
                        c.name,
                        got.map(Value::to_string)
                            .unwrap_or_else(|| "nothing".into())
                    ));
                }
            }
            if let Some(repr) = repr {
                if repr.get(&c.name) != got {
                    self.fail(format!(
                        "{}.{} [{phase}]: the write answered {:?}, a read gives {:?}",
                        rel.name,
                        c.name,
                        repr.get(&c.name),
                        got
                    ));
                }
            }
            if pg.get(&c.name) != got {
                self.fail(format!(
                    "{}.{} [{phase}]: the API read {:?}, PostgreSQL has {:?}",
                    rel.name,
                    c.name,
                    got,
                    pg.get(&c.name)
                ));
            }
        }
        self.failures.len() == before
    }

    /// A write failed: PATCH each column alone on the (restored) row to name the culprits.
    async fn name_culprits(&mut self, rel: &Relation, phase: &str, restore: &Row, body: &Row) {
        pg_restore(self.su, rel, restore).await;
        let mut named = false;
        for (col, v) in body {
            let one: Row = [(col.clone(), v.clone())].into_iter().collect();
            let r = self
                .api
                .send(
                    Method::PATCH,
                    &rel.name,
                    &key_query(rel, restore),
                    "return=representation",
                    Some(&Value::Object(one)),
                )
                .await;
            if !r.ok() {
                named = true;
                self.fail(format!(
                    "{}.{col} [{phase}, alone]: {}",
                    rel.name,
                    r.summary()
                ));
            }
            pg_restore(self.su, rel, restore).await;
        }
        if !named {
            self.fail(format!(
                "{} [{phase}]: every column passes alone; the row as a whole is refused",
                rel.name
            ));
        }
    }

    async fn round_trip(&mut self, rel: &Relation) {
        let all = self
            .api
            .get(&rel.name, &[("select".into(), "*".into())])
            .await;
        if !all.ok() {
            self.fail(format!("{} [GET]: {}", rel.name, all.summary()));
            return;
        }
        let rows = all.rows();
        self.check_reads(rel, &rows).await;
        // Tables are; views and foreign tables as PostgreSQL says.
        let writable = rel.insertable && rel.updatable;
        if !writable {
            // A view that cannot be written: read back consistently and filtered.
            if rows.is_empty() {
                self.fail(format!(
                    "{} [GET]: no rows to read back; the demo seed should reach it",
                    rel.name
                ));
            }
            self.check_filters(rel, &rows).await;
            return;
        }
        if rel.key.is_empty() {
            self.fail(format!(
                "{}: writable but without a primary key to find its rows by",
                rel.name
            ));
            return;
        }

        // Row A: the fullest row (the first of equals); row B: the next fullest.
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(non_null_count(&rows[i])));
        let synthetic = rows.is_empty();
        let a: Row = if synthetic {
            match self.synthetic_row(rel).await {
                Some(a) => a,
                None => return,
            }
        } else {
            rows[order[0]].clone()
        };
        let b: Option<&Row> = order.get(1).map(|&i| &rows[i]);
        let body_a: Row = rel
            .writable()
            .map(|c| {
                (
                    c.name.clone(),
                    a.get(&c.name).cloned().unwrap_or(Value::Null),
                )
            })
            .collect();
        self.columns_written += body_a.len();
        let none = BTreeSet::new();
        let on_update = rel.maintained_on_update();

        // POST the row back.
        if !synthetic {
            pg_delete(self.su, rel, &a).await;
        }
        let r = self
            .api
            .send(
                Method::POST,
                &rel.name,
                &[],
                "return=representation",
                Some(&json!([body_a])),
            )
            .await;
        if r.ok() {
            let repr = r.rows();
            self.check_written(rel, "POST", &a, &body_a, repr.first(), &none)
                .await;
        } else {
            self.fail(format!("{} [POST]: {}", rel.name, r.summary()));
            self.name_culprits(rel, "POST", &body_a, &body_a).await;
        }

        // PATCH every column.
        let body_p = self.patch_values(rel, &a, b, &rows, synthetic).await;
        self.columns_changed += body_p.iter().filter(|(c, v)| a.get(*c) != Some(*v)).count();
        let r = self
            .api
            .send(
                Method::PATCH,
                &rel.name,
                &key_query(rel, &a),
                "return=representation",
                Some(&Value::Object(body_p.clone())),
            )
            .await;
        if r.ok() {
            let repr = r.rows();
            if repr.len() != 1 {
                self.fail(format!(
                    "{} [PATCH]: {} rows updated: {}",
                    rel.name,
                    repr.len(),
                    r.text
                ));
            }
            self.check_written(rel, "PATCH", &a, &body_p, repr.first(), &on_update)
                .await;
        } else {
            self.fail(format!("{} [PATCH]: {}", rel.name, r.summary()));
            self.name_culprits(rel, "PATCH", &body_a, &body_p).await;
        }

        // Upsert the original values back over the row (update), then as a new row (insert).
        let r = self
            .api
            .send(
                Method::POST,
                &rel.name,
                &[],
                "return=representation,resolution=merge-duplicates",
                Some(&json!([body_a])),
            )
            .await;
        if r.status == 200 {
            let repr = r.rows();
            self.check_written(rel, "upsert update", &a, &body_a, repr.first(), &on_update)
                .await;
        } else {
            self.fail(format!(
                "{} [upsert update]: want 200, got {}",
                rel.name,
                r.summary()
            ));
            if !r.ok() {
                self.name_culprits(rel, "upsert update", &body_a, &body_a)
                    .await;
            }
        }
        pg_delete(self.su, rel, &a).await;
        let r = self
            .api
            .send(
                Method::POST,
                &rel.name,
                &[],
                "return=representation,resolution=merge-duplicates",
                Some(&json!([body_a])),
            )
            .await;
        if r.status == 201 {
            let repr = r.rows();
            self.check_written(rel, "upsert insert", &a, &body_a, repr.first(), &none)
                .await;
        } else {
            self.fail(format!(
                "{} [upsert insert]: want 201, got {}",
                rel.name,
                r.summary()
            ));
            pg_restore(self.su, rel, &body_a).await;
        }

        // Every column of the row as a filter.
        let r = self.api.get(&rel.name, &key_query(rel, &a)).await;
        if r.ok() {
            let now = r.rows();
            self.check_filters(rel, &now).await;
        }
    }

    /// A row for a table the seed leaves empty: foreign keys from referenced rows, the
    /// overrides, generated values for the rest.
    async fn synthetic_row(&mut self, rel: &Relation) -> Option<Row> {
        let mut row = Row::new();
        let fk_cols: BTreeSet<String> = rel.fk_cols().into_iter().map(str::to_string).collect();
        fill_foreign_keys(self.su, rel, &mut row, &fk_cols).await;
        for c in rel.writable() {
            if row.contains_key(&c.name) {
                continue;
            }
            let v = match rel.override_for(&c.name) {
                Some(Pick::Json(j)) => Some(serde_json::from_str(j).unwrap()),
                _ => generate(c, 0),
            };
            match v {
                Some(v) => {
                    row.insert(c.name.clone(), v);
                }
                None => {
                    self.fail(format!(
                        "{}.{} [generate]: no value for type {} (add one to generate_scalar)",
                        rel.name, c.name, c.sql_type
                    ));
                    return None;
                }
            }
        }
        Some(row)
    }

    /// A non-null value for every writable column: keys and foreign keys keep the row's
    /// (filled from a referenced row when null), the overrides, else the other full row's
    /// value, another row's, the row's own, or a generated one.
    async fn patch_values(
        &mut self,
        rel: &Relation,
        a: &Row,
        b: Option<&Row>,
        rows: &[Row],
        synthetic: bool,
    ) -> Row {
        let fk_cols = rel.fk_cols();
        let keyish = |c: &str| {
            rel.key.iter().any(|k| k == c) || rel.unique_cols.contains(c) || fk_cols.contains(c)
        };
        let mut body = Row::new();
        let mut null_fks = BTreeSet::new();
        for c in rel.writable() {
            let own = a.get(&c.name).cloned().unwrap_or(Value::Null);
            let v = match rel.override_for(&c.name) {
                Some(Pick::Keep) => own,
                Some(Pick::Json(j)) => serde_json::from_str(j).unwrap(),
                None if keyish(&c.name) => {
                    if own.is_null() && fk_cols.contains(c.name.as_str()) {
                        null_fks.insert(c.name.clone());
                    }
                    own
                }
                None => {
                    // A different value than the row's, from the other full row first (its
                    // values satisfy the row's constraints together), else from any row.
                    let from_b = b.and_then(|b| b.get(&c.name)).filter(|v| !v.is_null());
                    let differing = from_b.filter(|v| **v != own).or_else(|| {
                        rows.iter()
                            .filter_map(|r| r.get(&c.name))
                            .find(|v| !v.is_null() && **v != own)
                    });
                    match differing.or(from_b) {
                        Some(v) => v.clone(),
                        None if !own.is_null() && !synthetic => own,
                        None => match generate(c, 1) {
                            Some(v) => v,
                            None => {
                                self.fail(format!("{}.{} [generate]: no value for type {} (add one to generate_scalar)", rel.name, c.name, c.sql_type));
                                own
                            }
                        },
                    }
                }
            };
            body.insert(c.name.clone(), v);
        }
        fill_foreign_keys(self.su, rel, &mut body, &null_fks).await;
        body
    }
}

async fn demo_app() -> (TestDb, Client, Api) {
    let t = TestDb::new().await;
    let su = t.superuser().await;
    su.batch_execute(&format!(
        "begin; set local search_path = public, extensions;\n{}\ncommit;",
        agencyflow_testkit::agencyflow_server::SEED_DEMO_SQL
    ))
    .await
    .expect("demo seed");
    let app = t.spawn_app().await;
    (t, su, Api { app })
}

#[tokio::test]
async fn rest_every_column_of_every_table_round_trips_through_post_patch_and_upsert() {
    let (_db, su, api) = demo_app().await;
    let catalog = load_catalog(&su).await;
    assert!(
        catalog.iter().filter(|r| r.is_table()).count() >= 30,
        "the catalog query found too few tables: {:?}",
        catalog.iter().map(|r| &r.name).collect::<Vec<_>>()
    );
    let mut run = Run {
        api: &api,
        su: &su,
        failures: vec![],
        columns_written: 0,
        columns_changed: 0,
    };
    for rel in &catalog {
        run.round_trip(rel).await;
    }
    let total: usize = catalog.iter().map(|r| r.columns.len()).sum();
    eprintln!(
        "round trip: {} relations, {total} columns, {} written through POST/PATCH/upsert, {} changed by the PATCH",
        catalog.len(),
        run.columns_written,
        run.columns_changed
    );
    assert!(
        run.failures.is_empty(),
        "{} column(s) do not round-trip through /rest/v1:\n{}",
        run.failures.len(),
        run.failures.join("\n")
    );
}

// ----- every type-modifier family -----

const MODIFIERS_DDL: &str = r#"
create type public.rt_mood as enum ('calm', 'happy', 'sad');
create domain public.rt_currency as char(3) check (value ~ '^[A-Z]{3}$');
create table public.rt_modifiers (
  id int primary key,
  c3 char(3),
  vc2 varchar(2),
  num numeric(7,3),
  b4 bit(4),
  vb6 bit varying(6),
  ts2 timestamp(2),
  tstz3 timestamptz(3),
  t1 time(1),
  iv interval day to second(3),
  c3s char(3)[],
  nums numeric(5,2)[],
  cur public.rt_currency,
  curs public.rt_currency[],
  mood public.rt_mood,
  v3 extensions.vector(3)
);
grant select, insert, update, delete on public.rt_modifiers to service_role;
create function public.rt_echo(cur public.rt_currency) returns text
  language sql immutable as 'select cur::text';
notify pgrst, 'reload schema';
"#;

/// Two rows of values, each exactly as PostgreSQL writes it back in JSON.
fn modifier_values() -> (Row, Row) {
    let one = json!({
        "c3": "USD", "vc2": "ab", "num": 1234.567, "b4": "1010", "vb6": "101",
        "ts2": "2026-01-02T03:04:05.67", "tstz3": "2026-01-02T03:04:05.678+00:00",
        "t1": "03:04:05.6", "iv": "1 day 02:03:04.567",
        "c3s": ["USD", "EUR"], "nums": [1.25, 999.99],
        "cur": "GBP", "curs": ["USD", "GBP"], "mood": "happy", "v3": "[1,2.5,-3]"
    });
    let two = json!({
        "c3": "EUR", "vc2": "z", "num": -0.001, "b4": "0001", "vb6": "111000",
        "ts2": "1999-12-31T23:59:59.99", "tstz3": "2000-02-29T12:00:00.001+00:00",
        "t1": "23:59:59.9", "iv": "10 days 00:00:00.001",
        "c3s": ["JPY"], "nums": [-5.5],
        "cur": "CHF", "curs": ["CHF"], "mood": "sad", "v3": "[0,0,0.5]"
    });
    match (one, two) {
        (Value::Object(a), Value::Object(b)) => (a, b),
        _ => unreachable!(),
    }
}

fn with_id(id: i64, values: &Row) -> Value {
    let mut r = values.clone();
    r.insert("id".into(), json!(id));
    Value::Object(r)
}

fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `("a b",c)`: an `in` list with every item double-quoted.
fn in_list(values: &[&Value]) -> String {
    let items: Vec<String> = values
        .iter()
        .map(|v| {
            format!(
                "\"{}\"",
                as_text(v).replace('\\', "\\\\").replace('"', "\\\"")
            )
        })
        .collect();
    format!("in.({})", items.join(","))
}

async fn ids_where(api: &Api, filter: (&str, String)) -> Vec<i64> {
    let r = api
        .get(
            "rt_modifiers",
            &[
                ("select".into(), "id".into()),
                ("order".into(), "id".into()),
                (filter.0.to_string(), filter.1.clone()),
            ],
        )
        .await;
    assert!(r.ok(), "{}={}: {}", filter.0, filter.1, r.summary());
    r.rows().iter().map(|r| r["id"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn rest_type_modifiers_round_trip_filter_and_refuse_overlong_values() {
    let t = TestDb::new().await;
    let su = t.superuser().await;
    let api = Api {
        app: t.spawn_app().await,
    };
    su.batch_execute(MODIFIERS_DDL).await.expect("ddl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = api.get("rt_modifiers", &q(&[("select", "id")])).await;
        if r.status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rt_modifiers never served after NOTIFY pgrst: {}",
            r.summary()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (one, two) = modifier_values();
    let read = |id: i64| {
        let api = &api;
        async move {
            let r = api
                .get("rt_modifiers", &q(&[("id", &format!("eq.{id}"))]))
                .await;
            assert!(r.ok(), "{}", r.summary());
            let rows = r.rows();
            assert_eq!(rows.len(), 1, "row {id}: {}", r.text);
            rows.into_iter().next().unwrap()
        }
    };
    let assert_row = |got: &Row, id: i64, want: &Row, what: &str| {
        for (k, v) in want {
            assert_eq!(got.get(k), Some(v), "{what}: column {k} of row {id}");
        }
        assert_eq!(got["id"], json!(id), "{what}");
    };

    // POST.
    let r = api
        .send(
            Method::POST,
            "rt_modifiers",
            &[],
            "return=representation",
            Some(&json!([with_id(1, &one)])),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.summary());
    assert_row(&r.rows()[0], 1, &one, "POST representation");
    assert_row(&read(1).await, 1, &one, "POST");

    // PATCH row 2 from the first values to the second.
    let r = api
        .send(
            Method::POST,
            "rt_modifiers",
            &[],
            "",
            Some(&with_id(2, &one)),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.summary());
    let r = api
        .send(
            Method::PATCH,
            "rt_modifiers",
            &q(&[("id", "eq.2")]),
            "return=representation",
            Some(&Value::Object(two.clone())),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_row(&r.rows()[0], 2, &two, "PATCH representation");
    assert_row(&read(2).await, 2, &two, "PATCH");

    // Upsert: row 1 updated to the second values, row 3 inserted with the first; then row 1
    // back to the first values.
    let r = api
        .send(
            Method::POST,
            "rt_modifiers",
            &[],
            "return=representation,resolution=merge-duplicates",
            Some(&json!([with_id(1, &two), with_id(3, &one)])),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.summary());
    assert_row(&read(1).await, 1, &two, "upsert update");
    assert_row(&read(3).await, 3, &one, "upsert insert");
    let r = api
        .send(
            Method::POST,
            "rt_modifiers",
            &[],
            "resolution=merge-duplicates",
            Some(&json!([with_id(1, &one)])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_row(&read(1).await, 1, &one, "upsert update back");

    // Filters: rows 1 and 3 hold the first values, row 2 the second.
    for (col, v1) in &one {
        let v2 = &two[col];
        assert_eq!(
            ids_where(&api, (col.as_ref(), format!("eq.{}", as_text(v1)))).await,
            vec![1, 3],
            "{col}=eq"
        );
        assert_eq!(
            ids_where(&api, (col.as_ref(), format!("eq.{}", as_text(v2)))).await,
            vec![2],
            "{col}=eq"
        );
        if let Value::Array(items) = v1 {
            // `in` compares a scalar with each item: an array column has none (PostgREST
            // answers 42704 there too); its membership operators cast the same way.
            let first = format!("cs.{}", as_text(&json!([items[0]])));
            assert_eq!(
                ids_where(&api, (col.as_ref(), first)).await,
                vec![1, 3],
                "{col}=cs"
            );
            continue;
        }
        assert_eq!(
            ids_where(&api, (col.as_ref(), in_list(&[v1]))).await,
            vec![1, 3],
            "{col}=in"
        );
        assert_eq!(
            ids_where(&api, (col.as_ref(), in_list(&[v2, v1]))).await,
            vec![1, 2, 3],
            "{col}=in"
        );
    }
    // A filter value is compared whole: never cut to the column's length.
    for (col, longer) in [
        ("c3", "USDX"),
        ("vc2", "abc"),
        ("b4", "10101"),
        ("cur", "GBPX"),
    ] {
        assert_eq!(
            ids_where(&api, (col, format!("eq.{longer}"))).await,
            Vec::<i64>::new(),
            "{col}=eq.{longer}"
        );
        assert_eq!(
            ids_where(&api, (col, format!("in.({longer})"))).await,
            Vec::<i64>::new(),
            "{col}=in.({longer})"
        );
    }
    // A filter value is not checked against the domain's CHECK: it just matches nothing.
    assert_eq!(
        ids_where(&api, ("cur", "eq.abc".into())).await,
        Vec::<i64>::new()
    );

    // An RPC argument of the domain: the value whole, an over-long one refused.
    let call = |method: Method, query: Vec<(String, String)>, body: Option<Value>| {
        let api = &api;
        async move {
            api.send(method, "rpc/rt_echo", &query, "", body.as_ref())
                .await
        }
    };
    let r = call(Method::POST, vec![], Some(json!({"cur": "GBP"}))).await;
    assert_eq!((r.status, r.json()), (200, json!("GBP")), "{}", r.summary());
    let r = call(Method::POST, vec![], Some(json!({"cur": "GBPX"}))).await;
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (400, json!("22001")),
        "{}",
        r.summary()
    );
    let r = call(Method::GET, q(&[("cur", "GBPX")]), None).await;
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (400, json!("22001")),
        "{}",
        r.summary()
    );

    // A value longer than its column is refused, by every write, and nothing changes.
    for (col, long) in [("c3", "EURO"), ("vc2", "abc"), ("cur", "GBPX")] {
        let mut bad = one.clone();
        bad.insert(col.into(), json!(long));
        let attempts = [
            (Method::POST, vec![], "", with_id(9, &bad)),
            (Method::PATCH, q(&[("id", "eq.1")]), "", json!({col: long})),
            (
                Method::POST,
                vec![],
                "resolution=merge-duplicates",
                with_id(1, &bad),
            ),
        ];
        for (method, query, prefer, body) in attempts {
            let r = api
                .send(method.clone(), "rt_modifiers", &query, prefer, Some(&body))
                .await;
            assert_eq!(r.status, 400, "{method} {col}={long}: {}", r.summary());
            assert_eq!(
                r.json()["code"],
                "22001",
                "{method} {col}={long}: {}",
                r.summary()
            );
        }
    }
    assert_row(&read(1).await, 1, &one, "after the refused writes");
    let r = api.get("rt_modifiers", &q(&[("id", "eq.9")])).await;
    assert_eq!(r.json(), json!([]), "no row was inserted");
}
