//! The Auth page: app users searched in `auth.users` (read by the auth login), changed through
//! GoTrue's admin API (`/auth/v1/admin/...`, in-process as service_role) so every rule of
//! the auth surface holds; sessions ended in `auth.sessions`.
use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::api::{enc, Viewer};
use crate::error::{ConsoleError, Result};
use crate::session::Admin;
use crate::ConsoleState;

/// `GET /console/api/users?q=&page=`: 50 a page, newest first; `q` matches e-mail, phone or id.
pub async fn list(
    State(state): State<ConsoleState>,
    _admin: Admin,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>> {
    let st = &state.0;
    let search = q.get("q").map(|s| s.trim().to_string()).unwrap_or_default();
    let page: i64 = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let c = st.admin_db.client().await?;
    let rows = c
        .query(
            "select coalesce(json_agg(t), '[]') from (
               select u.id, u.email, u.phone, u.created_at, u.last_sign_in_at, u.email_confirmed_at, u.banned_until,
                      coalesce(u.is_anonymous, false) as is_anonymous, u.raw_app_meta_data -> 'provider' as provider,
                      (select count(*) from auth.sessions s where s.user_id = u.id) as sessions,
                      (select count(*) from auth.mfa_factors f where f.user_id = u.id) as factors
                 from auth.users u
                where $1 = '' or u.email ilike '%' || $1 || '%' or u.phone ilike '%' || $1 || '%' or u.id::text = $1
                order by u.created_at desc limit 50 offset ($2::bigint - 1) * 50) t",
            &[&search, &page],
        )
        .await?;
    let total: i64 = c
        .query_one(
            "select count(*) from auth.users u where $1 = '' or u.email ilike '%' || $1 || '%' or u.phone ilike '%' || $1 || '%' or u.id::text = $1",
            &[&search],
        )
        .await?
        .get(0);
    Ok(Json(
        json!({ "users": rows[0].get::<_, Value>(0), "total": total, "page": page }),
    ))
}

/// `GET /console/api/users/{id}`: GoTrue's admin view (identities, factors) and the sessions.
pub async fn get(
    State(state): State<ConsoleState>,
    _admin: Admin,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>> {
    let st = &state.0;
    let user = st
        .call_json(
            Method::GET,
            &format!("/auth/v1/admin/users/{id}"),
            &Viewer::ServiceRole,
            None,
        )
        .await?;
    let c = st.admin_db.client().await?;
    let sessions = c
        .query_one(
            "select coalesce(json_agg(t order by t.created_at desc), '[]') from (
               select id, created_at, updated_at, aal, user_agent, ip::text as ip, not_after from auth.sessions where user_id = $1) t",
            &[&id],
        )
        .await?
        .get::<_, Value>(0);
    Ok(Json(json!({ "user": user, "sessions": sessions })))
}

#[derive(Deserialize)]
pub struct NewUser {
    email: String,
    password: Option<String>,
    #[serde(default)]
    confirm: bool,
}

/// `POST /console/api/users {email, password, confirm}`.
pub async fn create(
    State(state): State<ConsoleState>,
    admin: Admin,
    Json(u): Json<NewUser>,
) -> Result<Json<Value>> {
    let st = &state.0;
    let v = st
        .call_json(
            Method::POST,
            "/auth/v1/admin/users",
            &Viewer::ServiceRole,
            Some(json!({"email": u.email, "password": u.password, "email_confirm": u.confirm})),
        )
        .await?;
    st.audit(
        Some(&admin),
        &admin.client,
        None,
        "auth.user.create",
        Some(&u.email),
        json!({"id": v.get("id"), "confirmed": u.confirm}),
    )
    .await;
    Ok(Json(v))
}

#[derive(Deserialize)]
pub struct Invite {
    email: String,
    redirect_to: Option<String>,
}

/// `POST /console/api/users/invite {email}`: GoTrue's invite link (`generate_link`), shown
/// to the operator; mailed too when an SMTP server is configured (`/invite`).
pub async fn invite(
    State(state): State<ConsoleState>,
    admin: Admin,
    Json(i): Json<Invite>,
) -> Result<Json<Value>> {
    let st = &state.0;
    let v = st
        .call_json(
            Method::POST,
            "/auth/v1/admin/generate_link",
            &Viewer::ServiceRole,
            Some(json!({"type": "invite", "email": i.email, "redirect_to": i.redirect_to})),
        )
        .await?;
    st.audit(
        Some(&admin),
        &admin.client,
        None,
        "auth.user.invite",
        Some(&i.email),
        json!({"id": v.get("id")}),
    )
    .await;
    Ok(Json(json!({
        "id": v.get("id"),
        "email": i.email,
        "action_link": v.get("action_link").or_else(|| v.pointer("/properties/action_link")),
    })))
}

/// `POST /console/api/users/{id}/{confirm|ban|unban|sign-out|recovery-link}`.
pub async fn action(
    State(state): State<ConsoleState>,
    admin: Admin,
    Path((id, action)): Path<(Uuid, String)>,
) -> Result<Json<Value>> {
    let st = &state.0;
    let put = |body: Value| async move {
        st.call_json(
            Method::PUT,
            &format!("/auth/v1/admin/users/{id}"),
            &Viewer::ServiceRole,
            Some(body),
        )
        .await
    };
    let result = match action.as_str() {
        "confirm" => put(json!({"email_confirm": true})).await?,
        // GoTrue's form: a duration; a century is "until unbanned".
        "ban" => put(json!({"ban_duration": "876000h"})).await?,
        "unban" => put(json!({"ban_duration": "none"})).await?,
        "sign-out" => {
            let c = st.admin_db.client().await?;
            let n = c
                .execute("delete from auth.sessions where user_id = $1", &[&id])
                .await?;
            // (refresh tokens go with their sessions: on delete cascade)
            json!({"sessions_ended": n})
        }
        "recovery-link" => {
            let email: Option<String> = st
                .admin_db
                .client()
                .await?
                .query_opt("select email from auth.users where id = $1", &[&id])
                .await?
                .and_then(|r| r.get(0));
            let email = email
                .ok_or_else(|| ConsoleError::bad_request("this user has no e-mail address"))?;
            let v = st
                .call_json(
                    Method::POST,
                    "/auth/v1/admin/generate_link",
                    &Viewer::ServiceRole,
                    Some(json!({"type": "recovery", "email": email})),
                )
                .await?;
            json!({"action_link": v.get("action_link").or_else(|| v.pointer("/properties/action_link"))})
        }
        other => {
            return Err(ConsoleError::not_found(format!(
                "no user action {other} (confirm, ban, unban, sign-out, recovery-link)"
            )))
        }
    };
    st.audit(
        Some(&admin),
        &admin.client,
        None,
        &format!("auth.user.{action}"),
        Some(&id.to_string()),
        json!({}),
    )
    .await;
    Ok(Json(result))
}

/// `DELETE /console/api/users/{id}`.
pub async fn delete(
    State(state): State<ConsoleState>,
    admin: Admin,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>> {
    let st = &state.0;
    st.call_json(
        Method::DELETE,
        &format!("/auth/v1/admin/users/{}", enc(&id.to_string())),
        &Viewer::ServiceRole,
        None,
    )
    .await?;
    st.audit(
        Some(&admin),
        &admin.client,
        None,
        "auth.user.delete",
        Some(&id.to_string()),
        json!({}),
    )
    .await;
    Ok(Json(json!({})))
}

/// `GET /console/api/auth-settings`: GoTrue's public `/settings` (nothing secret in it).
pub async fn settings(State(state): State<ConsoleState>, _admin: Admin) -> Result<Json<Value>> {
    let st = &state.0;
    let v = st
        .call_json(Method::GET, "/auth/v1/settings", &Viewer::Anon, None)
        .await?;
    Ok(Json(
        json!({ "settings": v, "in_force": st.settings.get("auth").cloned().unwrap_or(Value::Null) }),
    ))
}
