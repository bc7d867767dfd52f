//! Attack: joining a user to an organisation without their consent (security issue #14.3),
//! and forging authorship columns. A person joins an org only by accepting an invitation for
//! their confirmed address while signed in; owners/admins cannot add anybody directly, nor
//! move a membership to another user; `created_at`/`created_by`/`uploaded_by`... are the
//! database's, not the client's.
use crate::rest::{fixture, ACME};
use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

async fn confirm_emails(fx: &crate::rest::Fx) {
    fx.su
        .batch_execute("update auth.users set email_confirmed_at = now()")
        .await
        .unwrap();
}

#[tokio::test]
async fn attack_owner_inserts_a_victim_into_their_org_is_refused() {
    let fx = fixture().await;
    confirm_emails(&fx).await;
    let bob_id = fx
        .su
        .query_one("select id from auth.users where email = 'bob@b.test'", &[])
        .await
        .unwrap()
        .get::<_, Uuid>(0);
    // Alice (owner of org A) adds Bob to her org directly: refused by RLS.
    for role in ["member", "client", "admin", "owner"] {
        let r = fx
            .call(Method::POST, "/team_members", fx.a())
            .body(json!({"org_id": fx.org_a, "user_id": bob_id, "role": role}))
            .send()
            .await;
        r.error(403, "42501");
    }
    // ... nor by moving her own (or another) membership row to Bob.
    let r = fx
        .call(
            Method::PATCH,
            &format!("/team_members?org_id=eq.{}&role=eq.owner", fx.org_a),
            fx.a(),
        )
        .body(json!({"user_id": bob_id}))
        .send()
        .await;
    r.error(403, "42501");
    let r = fx
        .call(
            Method::PATCH,
            &format!("/team_members?org_id=eq.{}", fx.org_a),
            fx.a(),
        )
        .body(json!({"org_id": fx.org_b}))
        .send()
        .await;
    r.error(403, "42501");
    // Bob's profile (his e-mail) stays invisible to Alice.
    let r = fx
        .get(&format!("/profiles?select=email&id=eq.{bob_id}"), fx.a())
        .await;
    r.expect(200);
    assert_eq!(r.json(), json!([]));
    let n: i64 = fx
        .su
        .query_one(
            "select count(*) from team_members where user_id = $1 and org_id = $2",
            &[&bob_id, &fx.org_a],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn attack_invitations_only_let_the_invitee_join_with_the_invited_role() {
    let fx = fixture().await;
    let bob_id: Uuid = fx
        .su
        .query_one("select id from auth.users where email = 'bob@b.test'", &[])
        .await
        .unwrap()
        .get(0);
    // Alice invites bob@b.test as a consultant; invited_by is stamped, whatever is sent.
    let r = fx
        .call(Method::POST, "/invitations", fx.a())
        .prefer("return=representation")
        .body(json!({"org_id": fx.org_a, "email": "bob@b.test", "role": "consultant", "invited_by": bob_id}))
        .send()
        .await;
    r.expect(201);
    let inv = r.json()[0].clone();
    assert_ne!(inv["invited_by"], json!(bob_id));
    // Bob cannot accept while his address is unconfirmed.
    let join = json!({"org_id": fx.org_a, "user_id": bob_id, "role": "consultant"});
    let r = fx
        .call(Method::POST, "/team_members", Some(&fx.bob))
        .body(join.clone())
        .send()
        .await;
    r.error(403, "42501");
    confirm_emails(&fx).await;
    // Bob sees his invitation; he cannot take a higher role than offered.
    let r = fx
        .get("/invitations?select=email,role", Some(&fx.bob))
        .await;
    assert_eq!(
        r.json(),
        json!([{"email": "bob@b.test", "role": "consultant"}])
    );
    let r = fx
        .call(Method::POST, "/team_members", Some(&fx.bob))
        .body(json!({"org_id": fx.org_a, "user_id": bob_id, "role": "owner"}))
        .send()
        .await;
    r.error(403, "42501");
    // Alice cannot "accept" for Bob.
    let r = fx
        .call(Method::POST, "/team_members", fx.a())
        .body(join.clone())
        .send()
        .await;
    r.error(403, "42501");
    // Bob accepts: he is a consultant of org A, the invitation is used up.
    let r = fx
        .call(Method::POST, "/team_members", Some(&fx.bob))
        .body(join.clone())
        .send()
        .await;
    r.expect(201);
    let accepted: Option<Uuid> = fx
        .su
        .query_one(
            "select accepted_by from invitations where id = $1::text::uuid",
            &[&inv["id"].as_str().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(accepted, Some(bob_id));
    // Leaving and re-joining needs a new invitation.
    let r = fx
        .call(
            Method::DELETE,
            &format!("/team_members?org_id=eq.{}&user_id=eq.{bob_id}", fx.org_a),
            Some(&fx.bob),
        )
        .send()
        .await;
    r.expect(204);
    let r = fx
        .call(Method::POST, "/team_members", Some(&fx.bob))
        .body(join)
        .send()
        .await;
    r.error(403, "42501");
    // A third party (Bob, in org B) cannot invite into org A, nor read A's invitations.
    let r = fx
        .call(Method::POST, "/invitations", Some(&fx.bob))
        .body(json!({"org_id": fx.org_a, "email": "x@y.test"}))
        .send()
        .await;
    r.error(403, "42501");
}

#[tokio::test]
async fn attack_forged_authorship_columns_are_replaced_by_the_database() {
    let fx = fixture().await;
    let alice: Uuid = fx
        .su
        .query_one(
            "select id from auth.users where email = 'alice@a.test'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let bob: Uuid = fx
        .su
        .query_one("select id from auth.users where email = 'bob@b.test'", &[])
        .await
        .unwrap()
        .get(0);
    // Make Bob a member of org A too, so a forged created_by = Bob would pass the foreign key.
    fx.su
        .execute(
            "insert into team_members (org_id, user_id, role) values ($1, $2, 'member')",
            &[&fx.org_a, &bob],
        )
        .await
        .unwrap();
    let r = fx
        .call(Method::POST, "/crm_interactions", fx.a())
        .prefer("return=representation")
        .body(
            json!({"org_id": fx.org_a, "client_id": ACME, "subject": "call",
                     "created_by": bob, "created_at": "2001-01-01T00:00:00Z"}),
        )
        .send()
        .await;
    r.expect(201);
    let row = r.json()[0].clone();
    assert_eq!(row["created_by"], json!(alice));
    assert!(
        !row["created_at"].as_str().unwrap().starts_with("2001"),
        "{row}"
    );
    let id = row["id"].as_str().unwrap().to_string();
    // An update cannot rewrite authorship either.
    let r = fx
        .call(
            Method::PATCH,
            &format!("/crm_interactions?id=eq.{id}"),
            fx.a(),
        )
        .prefer("return=representation")
        .body(json!({"created_by": bob, "created_at": "2001-01-01T00:00:00Z", "subject": "call 2"}))
        .send()
        .await;
    r.expect(200);
    let row2 = r.json()[0].clone();
    assert_eq!(row2["created_by"], json!(alice));
    assert_eq!(row2["created_at"], row["created_at"]);
    assert_eq!(row2["subject"], "call 2");
    // service_role is trusted (imports, back-office tools).
    let r = fx
        .call(Method::POST, "/activities", fx.service())
        .prefer("return=representation")
        .body(
            json!({"org_id": fx.org_a, "activity_type": "note", "title": "imported",
                     "created_by": bob, "created_at": "2001-01-01T00:00:00Z"}),
        )
        .send()
        .await;
    r.expect(201);
    assert_eq!(r.json()[0]["created_by"], json!(bob));
}

#[tokio::test]
async fn attack_the_api_login_cannot_become_the_auth_owner() {
    // Any SQL running in an API request runs in authenticator's session: it must not be able
    // to switch to supabase_auth_admin (the owner of auth.users, password hashes and tokens).
    let t = agencyflow_testkit::TestDb::new().await;
    let api = agencyflow_testkit::agencyflow_db::connect_one(&t.api_url())
        .await
        .unwrap();
    let r = api.batch_execute("set role supabase_auth_admin").await;
    let e = r.expect_err("authenticator switched to supabase_auth_admin");
    assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{e}");
    let member: bool = api
        .query_one(
            "select pg_has_role('authenticator', 'supabase_auth_admin', 'member')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!member);
    // ... while the auth surface, on its own login, still works.
    let app = t.spawn_app().await;
    let r = app
        .http
        .post(app.url("/auth/v1/signup"))
        .header("apikey", &app.anon_key)
        .json(&json!({"email": "own-login@example.test", "password": "a long password 123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test]
async fn auth_with_a_login_that_cannot_connect_answers_503_json_and_touches_nothing() {
    // GOTRUE_DB_DATABASE_URL with a wrong password: the auth surface says it is unavailable,
    // in GoTrue's shape, and creates no user; the rest of the API is unaffected.
    let t = agencyflow_testkit::TestDb::new().await;
    let bad = t.tcp_url("supabase_auth_admin", "not-the-password");
    let app = t.spawn_app_with(&["--auth-database-url", &bad]).await;
    let r = app
        .http
        .post(app.url("/auth/v1/signup"))
        .header("apikey", &app.anon_key)
        .json(&json!({"email": "nobody@example.test", "password": "a long password 123"}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.is_object(), "{body}");
    let su = t.superuser().await;
    let n: i64 = su
        .query_one(
            "select count(*) from auth.users where email = 'nobody@example.test'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let r = app
        .http
        .get(app.url("/rest/v1/systems?select=id&limit=1"))
        .header("apikey", &app.anon_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
