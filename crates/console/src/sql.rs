//! The SQL page: statements run as service_role (by default), anon or a chosen user, in one
//! transaction with a statement timeout, on a connection of their own that is closed
//! afterwards; `EXPLAIN (ANALYZE)` is always rolled back. Saved snippets per operator.
use agencyflow_db::tokio_postgres::SimpleQueryMessage;
use agencyflow_db::TxSettings;
use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::api::Viewer;
use crate::error::{ConsoleError, Result};
use crate::session::Admin;
use crate::ConsoleState;

/// Rows kept per result set (the rest are counted, not sent).
const MAX_ROWS: usize = 1000;

#[derive(Deserialize)]
pub struct RunSql {
    sql: String,
    #[serde(rename = "as", default)]
    viewer: String,
    /// `EXPLAIN (ANALYZE, BUFFERS)` of the statement, rolled back.
    #[serde(default)]
    explain: bool,
    /// Roll back instead of committing.
    #[serde(default)]
    rollback: bool,
}

/// `POST /console/api/sql {sql, as, explain, rollback}`.
pub async fn run(
    State(state): State<ConsoleState>,
    admin: Admin,
    Json(r): Json<RunSql>,
) -> Result<Json<Value>> {
    let st = &state.0;
    let viewer: Viewer = r.viewer.parse()?;
    if r.sql.trim().is_empty() {
        return Err(ConsoleError::bad_request("no SQL to run"));
    }
    let (role, claims) = match &viewer {
        Viewer::ServiceRole => ("service_role".to_string(), json!({"role": "service_role"})),
        Viewer::Anon => ("anon".to_string(), json!({"role": "anon"})),
        Viewer::User(_) => {
            // The very claims "view as" would send (the minted token's).
            let (_, token) = st.credentials(&viewer).await?;
            let claims = st.keys.verify(&token).map_err(ConsoleError::internal)?;
            let role = claims
                .get("role")
                .and_then(Value::as_str)
                .unwrap_or("authenticated")
                .to_string();
            (role, claims)
        }
    };
    let settings = TxSettings::new(role.clone(), claims.to_string())
        .guc(
            "statement_timeout",
            format!("{}s", st.args.console_sql_timeout),
        )
        .guc("request.method", "POST")
        .guc("request.path", "/console/sql");
    let sql = if r.explain {
        format!("explain (analyze, buffers, format text) {}", r.sql)
    } else {
        r.sql.clone()
    };
    let started = std::time::Instant::now();
    let client = st.db.begin_dedicated(&settings).await?;
    let outcome = client.simple_query(&sql).await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let committed = match &outcome {
        Ok(_) if !r.explain && !r.rollback => {
            client.batch_execute("commit").await?;
            true
        }
        _ => {
            let _ = client.batch_execute("rollback").await;
            false
        }
    };
    drop(client);
    let preview: String = r.sql.chars().take(2000).collect();
    match outcome {
        Ok(messages) => {
            let sets = result_sets(messages);
            st.audit(
                Some(&admin),
                &admin.client,
                None,
                if r.explain { "sql.explain" } else { "sql.run" },
                Some(&viewer.label()),
                json!({"sql": preview, "committed": committed, "ms": elapsed_ms.round()}),
            )
            .await;
            Ok(Json(json!({
                "results": sets, "as": viewer.label(), "role": role,
                "committed": committed, "elapsed_ms": elapsed_ms,
            })))
        }
        Err(e) => {
            let e = ConsoleError::from(e);
            st.audit(
                Some(&admin),
                &admin.client,
                None,
                "sql.error",
                Some(&viewer.label()),
                json!({"sql": preview, "error": e.message}),
            )
            .await;
            Err(e)
        }
    }
}

/// Each statement's columns and rows (text, as PostgreSQL prints them) or its row count.
fn result_sets(messages: Vec<SimpleQueryMessage>) -> Vec<Value> {
    let mut sets = Vec::new();
    let mut columns: Vec<String> = Vec::new();
    let mut rows: Vec<Vec<Option<String>>> = Vec::new();
    for m in messages {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                columns = cols.iter().map(|c| c.name().to_string()).collect();
                rows.clear();
            }
            SimpleQueryMessage::Row(row) => {
                if columns.is_empty() {
                    columns = row.columns().iter().map(|c| c.name().to_string()).collect();
                }
                if rows.len() < MAX_ROWS {
                    rows.push(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_string))
                            .collect(),
                    );
                }
            }
            SimpleQueryMessage::CommandComplete(n) => {
                sets.push(json!({
                    "columns": std::mem::take(&mut columns),
                    "rows": std::mem::take(&mut rows),
                    "row_count": n,
                    "truncated": n as usize > MAX_ROWS,
                }));
            }
            _ => {}
        }
    }
    sets
}

pub async fn list_snippets(State(state): State<ConsoleState>, admin: Admin) -> Result<Json<Value>> {
    let c = state.0.admin_db.client().await?;
    let rows = c
        .query(
            "select id, name, sql, updated_at from console.snippets where admin_id = $1 order by lower(name)",
            &[&admin.id],
        )
        .await?;
    let list: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.get::<_, Uuid>(0), "name": r.get::<_, String>(1), "sql": r.get::<_, String>(2),
                "updated_at": r.get::<_, chrono::DateTime<chrono::Utc>>(3),
            })
        })
        .collect();
    Ok(Json(json!({ "snippets": list })))
}

#[derive(Deserialize)]
pub struct Snippet {
    id: Option<Uuid>,
    name: String,
    sql: String,
}

pub async fn save_snippet(
    State(state): State<ConsoleState>,
    admin: Admin,
    Json(s): Json<Snippet>,
) -> Result<Json<Value>> {
    let st = &state.0;
    if s.name.trim().is_empty() {
        return Err(ConsoleError::bad_request("a snippet needs a name"));
    }
    let c = st.admin_db.client().await?;
    let row = match s.id {
        Some(id) => c
            .query_opt(
                "update console.snippets set name = $3, sql = $4, updated_at = now() where id = $1 and admin_id = $2 returning id",
                &[&id, &admin.id, &s.name.trim(), &s.sql],
            )
            .await?
            .ok_or_else(|| ConsoleError::not_found("no such snippet"))?,
        None => c
            .query_one(
                "insert into console.snippets (admin_id, name, sql) values ($1, $2, $3) returning id",
                &[&admin.id, &s.name.trim(), &s.sql],
            )
            .await?,
    };
    let id: Uuid = row.get(0);
    st.audit(
        Some(&admin),
        &admin.client,
        None,
        "sql.snippet.save",
        Some(s.name.trim()),
        json!({"id": id}),
    )
    .await;
    Ok(Json(json!({ "id": id })))
}

pub async fn delete_snippet(
    State(state): State<ConsoleState>,
    admin: Admin,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>> {
    let st = &state.0;
    let c = st.admin_db.client().await?;
    let n = c
        .execute(
            "delete from console.snippets where id = $1 and admin_id = $2",
            &[&id, &admin.id],
        )
        .await?;
    if n == 0 {
        return Err(ConsoleError::not_found("no such snippet"));
    }
    st.audit(
        Some(&admin),
        &admin.client,
        None,
        "sql.snippet.delete",
        Some(&id.to_string()),
        json!({}),
    )
    .await;
    Ok(Json(json!({})))
}
