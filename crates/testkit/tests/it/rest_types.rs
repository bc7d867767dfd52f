//! Values keep their declared type through `/rest/v1`: every write casts to the column's
//! type WITH its modifier (char(3), numeric(p,s), varchar(n)...), every filter to the type
//! without it. The money flows (invoice, payment, deal with a currency) are the case that
//! broke: `char(3)` was cast as `character` = char(1).
use crate::rest::fixture;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn rest_money_rows_keep_their_char3_currency_through_insert_update_upsert_and_filters() {
    let fx = fixture().await;
    let org = fx.org_a;
    let inv = fx
        .call(Method::POST, "/invoices", fx.a())
        .prefer("return=representation")
        .h("Accept", "application/vnd.pgrst.object+json")
        .body(json!({"org_id": org, "invoice_number": "INV-1", "amount_cents": 12345, "currency": "EUR"}))
        .send()
        .await;
    inv.expect(201);
    let inv = inv.json();
    assert_eq!(inv["currency"], "EUR");
    let inv_id = inv["id"].as_str().unwrap().to_string();

    // A payment takes the invoice's currency; given explicitly it must be kept.
    let pay = fx
        .call(Method::POST, "/payments", fx.a())
        .prefer("return=representation")
        .body(
            json!([{"org_id": org, "invoice_id": inv_id, "amount_cents": 100, "currency": "EUR"}]),
        )
        .send()
        .await;
    pay.expect(201);
    assert_eq!(pay.json()[0]["currency"], "EUR");

    let deal = fx
        .call(Method::POST, "/crm_deals", fx.a())
        .prefer("return=representation")
        .body(json!({"org_id": org, "client_id": crate::rest::ACME, "title": "Retainer", "amount_cents": 500000, "currency": "GBP"}))
        .send()
        .await;
    deal.expect(201);
    let deal_id = deal.json()[0]["id"].as_str().unwrap().to_string();
    assert_eq!(deal.json()[0]["currency"], "GBP");

    // Filters on char(3): the value is compared whole, not cut to one character.
    let r = fx
        .get("/crm_deals?select=title&currency=eq.GBP", fx.a())
        .await;
    r.expect(200);
    assert_eq!(r.json(), json!([{"title": "Retainer"}]));
    let r = fx
        .get("/crm_deals?select=title&currency=eq.GXX", fx.a())
        .await;
    assert_eq!(r.json(), json!([]));
    let r = fx
        .get("/crm_deals?select=title&currency=in.(USD,GBP)", fx.a())
        .await;
    assert_eq!(r.json(), json!([{"title": "Retainer"}]));

    // PATCH and upsert.
    let r = fx
        .call(
            Method::PATCH,
            &format!("/crm_deals?id=eq.{deal_id}"),
            fx.a(),
        )
        .prefer("return=representation")
        .body(json!({"currency": "CHF"}))
        .send()
        .await;
    r.expect(200);
    assert_eq!(r.json()[0]["currency"], "CHF");
    let r = fx
        .call(Method::POST, "/crm_deals", fx.a())
        .prefer("return=representation,resolution=merge-duplicates")
        .body(json!({"id": deal_id, "org_id": org, "client_id": crate::rest::ACME, "title": "Retainer", "currency": "JPY"}))
        .send()
        .await;
    // All rows updated: 200, as PostgREST answers a merge that inserted nothing.
    r.expect(200);
    assert_eq!(r.json()[0]["currency"], "JPY");

    // A value longer than the column is refused by PostgreSQL (22001), never truncated.
    let r = fx
        .call(
            Method::PATCH,
            &format!("/crm_deals?id=eq.{deal_id}"),
            fx.a(),
        )
        .body(json!({"currency": "EURO"}))
        .send()
        .await;
    r.error(400, "22001");
    let still: String = fx
        .su
        .query_one(
            "select currency::text from crm_deals where id = $1::text::uuid",
            &[&deal_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(still, "JPY");
}
