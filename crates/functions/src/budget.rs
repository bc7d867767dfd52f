//! Per-organization AI budgets, **reserved** before a provider call and **settled** after it.
//!
//! `private.ai_usage` holds one row per organization, meter and period (a UTC hour or day):
//! what was used and what calls in flight have reserved. A reservation is one statement,
//! `insert ... on conflict do update set reserved = reserved + $n where used + reserved + $n
//! <= $limit returning ...`: the row lock serialises concurrent callers and the condition is
//! evaluated on the latest row, so N concurrent calls can never pass a budget that admits
//! k < N of them (a check that only *read* the usage let them all through). After the call
//! the reservation is settled with the real cost, or released when the provider failed. A
//! reservation dropped without either (the request was cancelled while the provider worked
//! on it, which may well bill it) is **charged in full** by a background task, so hanging up
//! mid-call is no way around a budget; one lost to a crash is forgotten with its period.
//!
//! Meters: `runs` (provider calls per hour, `AI_RATE_LIMIT_PER_HOUR`), `chat_tokens` (per
//! day, `AI_CHAT_TOKEN_BUDGET_PER_DAY`), `embed_chars` (characters sent to an embedding
//! provider per day, `AI_EMBED_BUDGET_CHARS_PER_DAY`; `tokens` records what the provider
//! counted). A limit of 0 or less is no limit, but the usage is still recorded.
use agencyflow_db::{ClaimsTxn, Db, DbError, TxSettings};
use chrono::{DateTime, Utc};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Meter {
    /// Provider calls (chat, or embeddings through a paid provider), per hour.
    Runs,
    /// Chat tokens, prompt and answer, per day.
    ChatTokens,
    /// Characters of text embedded, per day.
    EmbedChars,
}

impl Meter {
    /// The `private.ai_usage.meter` value.
    pub fn name(self) -> &'static str {
        match self {
            Meter::Runs => "runs",
            Meter::ChatTokens => "chat_tokens",
            Meter::EmbedChars => "embed_chars",
        }
    }

    /// The period of the budget, as `date_trunc` names it (in UTC).
    pub fn period(self) -> &'static str {
        match self {
            Meter::Runs => "hour",
            Meter::ChatTokens | Meter::EmbedChars => "day",
        }
    }

    fn period_secs(self) -> i64 {
        match self {
            Meter::Runs => 3600,
            Meter::ChatTokens | Meter::EmbedChars => 86_400,
        }
    }

    /// Seconds from `now` to the end of the current period (at least 1): when a refused
    /// call may be tried again.
    pub fn secs_to_period_end(self, now: DateTime<Utc>) -> u64 {
        let p = self.period_secs();
        (p - now.timestamp().rem_euclid(p)).max(1) as u64
    }
}

/// An amount to reserve against a meter's limit (`limit <= 0`: no limit).
#[derive(Debug, Clone, Copy)]
pub struct Want {
    pub meter: Meter,
    pub amount: i64,
    pub limit: i64,
}

/// A reservation refused: the meter whose budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub meter: Meter,
    pub limit: i64,
    pub retry_after_secs: u64,
}

/// What a call really cost one organization on one meter.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    pub org_id: Uuid,
    pub meter: Meter,
    /// Counted against the budget.
    pub used: i64,
    /// The provider's token count, recorded for information.
    pub tokens: i64,
}

#[derive(Debug, Clone)]
struct Held {
    org_id: Uuid,
    meter: Meter,
    period_start: DateTime<Utc>,
    amount: i64,
}

/// Amounts reserved; settle or release it (dropping it charges it in full, in the background).
pub struct Reservation {
    db: Db,
    held: Vec<Held>,
}

async fn service(db: &Db) -> Result<ClaimsTxn, DbError> {
    db.begin(&TxSettings::new(
        "service_role",
        r#"{"role":"service_role"}"#,
    ))
    .await
}

const RESERVE: &str = "insert into private.ai_usage as u (org_id, meter, period_start, reserved)
     select $1, $2, date_trunc($3::text, now(), 'UTC'), $4::bigint
     where $5::bigint <= 0 or $4::bigint <= $5::bigint
     on conflict (org_id, meter, period_start) do update
        set reserved = u.reserved + excluded.reserved, updated_at = now()
      where $5::bigint <= 0 or u.used + u.reserved + excluded.reserved <= $5::bigint
     returning u.period_start";

/// Reserves every amount of `wants` for `org_id`, or none of them: the first meter whose
/// budget cannot take its amount is refused (and the transaction rolled back).
pub async fn reserve_all(
    db: &Db,
    org_id: Uuid,
    wants: &[Want],
) -> Result<Result<Reservation, Refused>, DbError> {
    // Rows are locked in (organization, meter) order, as every writer does.
    let mut wants = wants.to_vec();
    wants.sort_by_key(|w| w.meter.name());
    let mut tx = service(db).await?;
    let mut held = Vec::with_capacity(wants.len());
    for w in &wants {
        let row = tx
            .query_opt(
                RESERVE,
                &[
                    &org_id,
                    &w.meter.name(),
                    &w.meter.period(),
                    &w.amount.max(0),
                    &w.limit,
                ],
            )
            .await?;
        match row {
            Some(r) => held.push(Held {
                org_id,
                meter: w.meter,
                period_start: r.get(0),
                amount: w.amount.max(0),
            }),
            None => {
                tx.rollback().await?;
                return Ok(Err(Refused {
                    meter: w.meter,
                    limit: w.limit,
                    retry_after_secs: w.meter.secs_to_period_end(Utc::now()),
                }));
            }
        }
    }
    tx.commit().await?;
    Ok(Ok(Reservation {
        db: db.clone(),
        held,
    }))
}

/// Reserves `amount` on `meter` for each organization independently (one statement; the
/// organizations must be distinct). Returns the reservation of those granted and the
/// organizations refused.
pub async fn reserve_each(
    db: &Db,
    meter: Meter,
    limit: i64,
    amounts: &[(Uuid, i64)],
) -> Result<(Reservation, Vec<Uuid>), DbError> {
    let orgs: Vec<Uuid> = amounts.iter().map(|a| a.0).collect();
    let sizes: Vec<i64> = amounts.iter().map(|a| a.1.max(0)).collect();
    let mut tx = service(db).await?;
    // Rows are locked in organization order, so two workers cannot deadlock.
    let rows = tx
        .query(
            "insert into private.ai_usage as u (org_id, meter, period_start, reserved)
             select v.org, $2, date_trunc($3::text, now(), 'UTC'), v.amount
             from unnest($1::uuid[], $4::bigint[]) as v(org, amount)
             where $5::bigint <= 0 or v.amount <= $5::bigint
             order by v.org
             on conflict (org_id, meter, period_start) do update
                set reserved = u.reserved + excluded.reserved, updated_at = now()
              where $5::bigint <= 0 or u.used + u.reserved + excluded.reserved <= $5::bigint
             returning u.org_id, u.period_start",
            &[&orgs, &meter.name(), &meter.period(), &sizes, &limit],
        )
        .await?;
    tx.commit().await?;
    let mut held = Vec::with_capacity(rows.len());
    for r in &rows {
        let org_id: Uuid = r.get(0);
        let amount = amounts
            .iter()
            .find(|a| a.0 == org_id)
            .map_or(0, |a| a.1.max(0));
        held.push(Held {
            org_id,
            meter,
            period_start: r.get(1),
            amount,
        });
    }
    let refused = orgs
        .into_iter()
        .filter(|o| !held.iter().any(|h| h.org_id == *o))
        .collect();
    Ok((
        Reservation {
            db: db.clone(),
            held,
        },
        refused,
    ))
}

/// Records usage that was not reserved (the free providers): added to the current periods.
pub async fn record(db: &Db, costs: &[Cost]) -> Result<(), DbError> {
    if costs.is_empty() {
        return Ok(());
    }
    let mut costs = costs.to_vec();
    // One row per (org, meter) in the statement, in lock order.
    costs.sort_by_key(|c| (c.org_id, c.meter.name()));
    costs.dedup_by(|b, a| {
        let same = a.org_id == b.org_id && a.meter == b.meter;
        if same {
            a.used += b.used;
            a.tokens += b.tokens;
        }
        same
    });
    let orgs: Vec<Uuid> = costs.iter().map(|c| c.org_id).collect();
    let meters: Vec<&str> = costs.iter().map(|c| c.meter.name()).collect();
    let periods: Vec<&str> = costs.iter().map(|c| c.meter.period()).collect();
    let used: Vec<i64> = costs.iter().map(|c| c.used.max(0)).collect();
    let tokens: Vec<i64> = costs.iter().map(|c| c.tokens.max(0)).collect();
    let mut tx = service(db).await?;
    tx.execute(
        "insert into private.ai_usage as u (org_id, meter, period_start, used, tokens, calls)
         select v.org, v.meter, date_trunc(v.period, now(), 'UTC'), v.used, v.tokens, 1
         from unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])
              as v(org, meter, period, used, tokens)
         order by v.org, v.meter
         on conflict (org_id, meter, period_start) do update
            set used = u.used + excluded.used, tokens = u.tokens + excluded.tokens,
                calls = u.calls + 1, updated_at = now()",
        &[&orgs, &meters, &periods, &used, &tokens],
    )
    .await?;
    tx.commit().await
}

/// Forgets usage rows no budget needs any more: hourly run counters after two days, daily
/// meters after 400 days.
pub async fn prune(db: &Db) -> Result<u64, DbError> {
    let mut tx = service(db).await?;
    let n = tx
        .execute(
            "delete from private.ai_usage
             where (meter = 'runs' and period_start < now() - interval '2 days')
                or period_start < now() - interval '400 days'",
            &[],
        )
        .await?;
    tx.commit().await?;
    Ok(n)
}

impl Reservation {
    /// Whether anything is held for `org_id`.
    pub fn holds(&self, org_id: Uuid) -> bool {
        self.held.iter().any(|h| h.org_id == org_id)
    }

    /// Replaces each held amount by what the call really cost (`costs`; a meter without a
    /// cost is released). A failure to write is logged: the reservation then stays counted
    /// until its period ends, which errs on the side of the budget.
    pub async fn settle(mut self, costs: &[Cost]) {
        let held = std::mem::take(&mut self.held);
        if let Err(e) = apply(&self.db, &held, costs).await {
            tracing::warn!(error = %e, "settling an AI budget reservation failed");
        }
    }

    /// Gives everything back (the call did not happen or the provider failed).
    pub async fn release(self) {
        self.settle(&[]).await
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        let db = self.db.clone();
        // The call was abandoned mid-way: the provider may have been paid, so the whole
        // reservation counts as used.
        let costs: Vec<Cost> = held
            .iter()
            .map(|h| Cost {
                org_id: h.org_id,
                meter: h.meter,
                used: h.amount,
                tokens: 0,
            })
            .collect();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = apply(&db, &held, &costs).await {
                        tracing::warn!(error = %e, "charging an abandoned AI budget reservation failed");
                    }
                });
            }
            Err(_) => tracing::warn!(
                "an AI budget reservation was dropped outside a runtime; it stays counted until its period ends"
            ),
        }
    }
}

/// Settles `held` with `costs`, one row at a time in (organization, meter) order: every
/// writer of `private.ai_usage` locks its rows in that order, so none can deadlock another.
async fn apply(db: &Db, held: &[Held], costs: &[Cost]) -> Result<(), DbError> {
    if held.is_empty() {
        return Ok(());
    }
    let mut held = held.to_vec();
    held.sort_by_key(|h| (h.org_id, h.meter.name()));
    let mut tx = service(db).await?;
    for h in &held {
        let cost = costs
            .iter()
            .find(|c| c.org_id == h.org_id && c.meter == h.meter);
        let used = cost.map_or(0, |c| c.used.max(0));
        let tokens = cost.map_or(0, |c| c.tokens.max(0));
        let calls = i64::from(cost.is_some());
        tx.execute(
            "update private.ai_usage
                set reserved = greatest(reserved - $4, 0), used = used + $5,
                    tokens = tokens + $6, calls = calls + $7, updated_at = now()
              where org_id = $1 and meter = $2 and period_start = $3",
            &[
                &h.org_id,
                &h.meter.name(),
                &h.period_start,
                &h.amount,
                &used,
                &tokens,
                &calls,
            ],
        )
        .await?;
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn periods_end_on_utc_boundaries() {
        let t = Utc.with_ymd_and_hms(2026, 3, 4, 10, 59, 30).unwrap();
        assert_eq!(Meter::Runs.secs_to_period_end(t), 30);
        assert_eq!(Meter::EmbedChars.secs_to_period_end(t), 13 * 3600 + 30);
        let midnight = Utc.with_ymd_and_hms(2026, 3, 5, 0, 0, 0).unwrap();
        assert_eq!(Meter::ChatTokens.secs_to_period_end(midnight), 86_400);
    }
}
