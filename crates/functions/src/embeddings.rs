//! The embeddings pipeline. Triggers queue a job in `private.embedding_jobs` when the text of
//! a document or CRM interaction changes; the worker claims due jobs in batches with
//! `FOR UPDATE SKIP LOCKED`, embeds each batch in one provider call, writes the vectors and
//! `embedded_at` and `embedding_model` (the provider's model), and marks the jobs done.
//!
//! No job is lost if the server stops mid-batch: a claim is a **lease** (`status = running`,
//! `locked_at`), and a lease older than `lease_secs` is claimed again. A failed batch goes
//! back to `pending` with exponential backoff (`attempts`, `run_after`, `last_error`) and is
//! marked `failed` after `max_attempts`. A vector is written only if the text it was computed
//! from is still the row's text (a newer edit has queued a newer job).
//!
//! Every batch is metered per organization (`private.ai_usage`, meter `embed_chars`: the
//! characters sent and the tokens the provider counted, per UTC day). With a paid provider
//! each organization's share of a batch is first reserved against
//! `embed_budget_chars_per_day`: an organization whose budget cannot take it has its jobs put
//! back, not attempted, until the next day (`last_error` says why, and the worker logs it); a
//! single text larger than the whole budget fails. The offline `local` and `hash` providers
//! are metered and never capped.
use std::time::{Duration, Instant};

use agencyflow_db::{ClaimsTxn, Db, DbError, TxSettings};
use uuid::Uuid;

use crate::ai::{is_free, vector_literal};
use crate::budget::{self, Cost, Meter, Reservation};
use crate::config::FunctionsArgs;
use crate::provider::DynProvider;
use crate::search::{DOCUMENT_DIMENSIONS, INTERACTION_DIMENSIONS};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub batch_size: i64,
    pub poll: Duration,
    pub lease_secs: i64,
    pub max_attempts: i32,
    /// First retry delay; doubles with each attempt (capped at one hour).
    pub retry_base_secs: f64,
    /// Characters one organization may have embedded per UTC day by a paid provider
    /// (`AI_EMBED_BUDGET_CHARS_PER_DAY`); 0: no cap.
    pub embed_budget_chars_per_day: i64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig::from(&FunctionsArgs::default())
    }
}

impl From<&FunctionsArgs> for WorkerConfig {
    fn from(a: &FunctionsArgs) -> Self {
        WorkerConfig {
            batch_size: a.ai_embed_batch_size.clamp(1, 1000),
            poll: Duration::from_millis(a.ai_embed_poll_ms.max(10)),
            lease_secs: a.ai_embed_lease_secs.max(1),
            max_attempts: a.ai_embed_max_attempts.max(1),
            retry_base_secs: 10.0,
            embed_budget_chars_per_day: a.ai_embed_budget_chars_per_day.max(0),
        }
    }
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub claimed: u64,
    pub embedded: u64,
    pub failed: u64,
}

/// What a backfill did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackfillReport {
    pub queued: u64,
    pub embedded: u64,
    pub failed: u64,
    /// Jobs still pending at the end (waiting for a retry).
    pub remaining: u64,
}

struct Table {
    name: &'static str,
    dimensions: usize,
    /// The text the embedding is computed from (the trigger's source columns).
    source: &'static str,
}

const TABLES: [Table; 2] = [
    Table {
        name: "documents",
        dimensions: DOCUMENT_DIMENSIONS,
        source: "concat_ws(E'\\n', t.name, t.summary, t.content_text)",
    },
    Table {
        name: "crm_interactions",
        dimensions: INTERACTION_DIMENSIONS,
        source: "concat_ws(E'\\n', t.subject, t.summary, t.content)",
    },
];

async fn service(db: &Db) -> Result<ClaimsTxn, DbError> {
    db.begin(&TxSettings::new(
        "service_role",
        r#"{"role":"service_role"}"#,
    ))
    .await
}

/// Claims up to `batch` due jobs (and expired leases) and processes them.
pub async fn run_batch(
    db: &Db,
    provider: &DynProvider,
    cfg: &WorkerConfig,
) -> Result<BatchOutcome, DbError> {
    let mut tx = service(db).await?;
    let claimed = tx
        .query(
            "with c as (
               select j.id from private.embedding_jobs j
               where (j.status = 'pending' and j.run_after <= now())
                  or (j.status = 'running' and j.locked_at < now() - make_interval(secs => $2::bigint::double precision))
               order by j.run_after, j.id
               limit $1
               for update skip locked
             )
             update private.embedding_jobs j
                set status = 'running', locked_at = now(), attempts = j.attempts + 1
               from c where j.id = c.id
             returning j.id, j.table_name, j.row_id",
            &[&cfg.batch_size, &cfg.lease_secs],
        )
        .await?;
    tx.commit().await?;
    let mut out = BatchOutcome {
        claimed: claimed.len() as u64,
        ..Default::default()
    };
    for table in &TABLES {
        let jobs: Vec<(i64, Uuid)> = claimed
            .iter()
            .filter(|r| r.get::<_, String>(1) == table.name)
            .map(|r| (r.get(0), r.get(2)))
            .collect();
        if jobs.is_empty() {
            continue;
        }
        let (embedded, failed) = process(db, provider, cfg, table, &jobs).await?;
        out.embedded += embedded;
        out.failed += failed;
    }
    Ok(out)
}

async fn process(
    db: &Db,
    provider: &DynProvider,
    cfg: &WorkerConfig,
    table: &Table,
    jobs: &[(i64, Uuid)],
) -> Result<(u64, u64), DbError> {
    let job_ids: Vec<i64> = jobs.iter().map(|j| j.0).collect();
    let row_ids: Vec<Uuid> = jobs.iter().map(|j| j.1).collect();
    let mut tx = service(db).await?;
    let rows = tx
        .query(
            &format!(
                "select t.id, t.org_id, {src} from public.{name} t
                 where t.id = any($1) and nullif(btrim({src}), '') is not null",
                src = table.source,
                name = table.name
            ),
            &[&row_ids],
        )
        .await?;
    tx.commit().await?;
    let mut ids: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
    let mut orgs: Vec<Uuid> = rows.iter().map(|r| r.get(1)).collect();
    let mut texts: Vec<String> = rows.iter().map(|r| r.get(2)).collect();
    let free = is_free(provider.name());
    let limit = cfg.embed_budget_chars_per_day;
    let mut failed = 0;
    let mut reservation: Option<Reservation> = None;
    if !free && !texts.is_empty() {
        // A text larger than a whole day's budget can never be embedded: it fails now.
        if limit > 0 {
            let too_big: Vec<Uuid> = ids
                .iter()
                .zip(&texts)
                .filter(|(_, t)| t.chars().count() as i64 > limit)
                .map(|(id, _)| *id)
                .collect();
            if !too_big.is_empty() {
                let jobs_of = jobs_of_rows(jobs, &too_big);
                failed += give_up(
                    db,
                    &jobs_of,
                    &format!("the text is longer than the daily embedding budget of its organization (AI_EMBED_BUDGET_CHARS_PER_DAY = {limit} characters)"),
                )
                .await?;
                tracing::warn!(
                    table = table.name,
                    rows = too_big.len(),
                    limit,
                    "texts larger than the daily embedding budget: not embedded"
                );
                keep_rows(&mut ids, &mut orgs, &mut texts, |id, _| {
                    !too_big.contains(id)
                });
            }
        }
        let amounts = chars_per_org(&orgs, &texts);
        let (granted, refused) =
            budget::reserve_each(db, Meter::EmbedChars, limit, &amounts).await?;
        if !refused.is_empty() {
            let deferred_rows: Vec<Uuid> = ids
                .iter()
                .zip(&orgs)
                .filter(|(_, o)| refused.contains(o))
                .map(|(id, _)| *id)
                .collect();
            let deferred = match defer_to_next_day(
                db,
                &jobs_of_rows(jobs, &deferred_rows),
                &format!("embedding budget reached: the organization has used its AI_EMBED_BUDGET_CHARS_PER_DAY ({limit} characters) for today; waiting for the next day (UTC)"),
            )
            .await
            {
                Ok(n) => n,
                Err(e) => {
                    // Nothing was sent: the reservation is given back, not charged.
                    granted.release().await;
                    return Err(e);
                }
            };
            for org in &refused {
                tracing::warn!(
                    org_id = %org,
                    limit,
                    table = table.name,
                    jobs = deferred,
                    "embedding budget of the organization reached: its rows wait for the next day (AI_EMBED_BUDGET_CHARS_PER_DAY)"
                );
            }
            keep_rows(&mut ids, &mut orgs, &mut texts, |_, org| {
                !refused.contains(org)
            });
        }
        reservation = Some(granted);
    }
    let vectors = if texts.is_empty() {
        Ok(crate::provider::Embeddings {
            vectors: Vec::new(),
            usage: Default::default(),
        })
    } else {
        provider.embed(&texts, table.dimensions).await
    };
    match vectors {
        Ok(emb) => {
            let costs = costs_per_org(&orgs, &texts, i64::from(emb.usage.input_tokens));
            match reservation {
                Some(r) => r.settle(&costs).await,
                None => {
                    if let Err(e) = budget::record(db, &costs).await {
                        tracing::warn!(error = %e, "recording embedding usage failed");
                    }
                }
            }
            let literals: Vec<String> = emb.vectors.iter().map(|v| vector_literal(v)).collect();
            let mut tx = service(db).await?;
            let written = tx
                .execute(
                    &format!(
                        "update public.{name} t set embedding = v.e::extensions.vector, embedded_at = now(),
                                embedding_model = $4
                         from unnest($1::uuid[], $2::text[], $3::text[]) as v(id, e, src)
                         where t.id = v.id and (t.embedding is null or t.embedding_model is distinct from $4)
                           and {src} = v.src",
                        name = table.name,
                        src = table.source
                    ),
                    &[&ids, &literals, &texts, &provider.model()],
                )
                .await?;
            // Rows deleted, emptied or edited since the claim need nothing more from these
            // jobs (an edit queued a newer one). Jobs put back above are no longer running.
            tx.execute(
                "update private.embedding_jobs set status = 'done', locked_at = null, last_error = null
                 where id = any($1) and status = 'running'",
                &[&job_ids],
            )
            .await?;
            tx.commit().await?;
            Ok((written, failed))
        }
        Err(e) => {
            if let Some(r) = reservation {
                r.release().await;
            }
            tracing::warn!(error = %e, table = table.name, jobs = jobs.len(), "embedding batch failed; will retry");
            let mut tx = service(db).await?;
            let n = tx
                .execute(
                    "update private.embedding_jobs j
                        set status = case when j.attempts >= $3 then 'failed' else 'pending' end,
                            run_after = now() + make_interval(secs => least(power(2, greatest(j.attempts - 1, 0)) * $4::double precision, 3600)),
                            locked_at = null, last_error = $2
                      where j.id = any($1) and j.status = 'running'
                        and not exists (select 1 from private.embedding_jobs p
                                        where p.status = 'pending' and p.table_name = j.table_name
                                          and p.row_id = j.row_id and p.id <> j.id)",
                    &[&job_ids, &e.to_string(), &cfg.max_attempts, &cfg.retry_base_secs],
                )
                .await?;
            // A job whose row has a newer pending job is superseded by it.
            tx.execute(
                "update private.embedding_jobs set status = 'done', locked_at = null, last_error = 'superseded'
                 where id = any($1) and status = 'running'",
                &[&job_ids],
            )
            .await?;
            tx.commit().await?;
            Ok((0, failed + n))
        }
    }
}

/// The claimed jobs of `rows`.
fn jobs_of_rows(jobs: &[(i64, Uuid)], rows: &[Uuid]) -> Vec<i64> {
    jobs.iter()
        .filter(|j| rows.contains(&j.1))
        .map(|j| j.0)
        .collect()
}

/// Keeps the rows (ids, orgs and texts alike) for which `keep(id, org)` holds.
fn keep_rows(
    ids: &mut Vec<Uuid>,
    orgs: &mut Vec<Uuid>,
    texts: &mut Vec<String>,
    keep: impl Fn(&Uuid, &Uuid) -> bool,
) {
    let kept: Vec<bool> = ids
        .iter()
        .zip(orgs.iter())
        .map(|(i, o)| keep(i, o))
        .collect();
    let mut k = kept.iter();
    ids.retain(|_| *k.next().unwrap_or(&true));
    let mut k = kept.iter();
    orgs.retain(|_| *k.next().unwrap_or(&true));
    let mut k = kept.iter();
    texts.retain(|_| *k.next().unwrap_or(&true));
}

/// Characters of `texts` per organization (each organization once).
fn chars_per_org(orgs: &[Uuid], texts: &[String]) -> Vec<(Uuid, i64)> {
    let mut out: Vec<(Uuid, i64)> = Vec::new();
    for (org, text) in orgs.iter().zip(texts) {
        let n = text.chars().count() as i64;
        match out.iter_mut().find(|(o, _)| o == org) {
            Some((_, total)) => *total += n,
            None => out.push((*org, n)),
        }
    }
    out
}

/// The embedding cost of a batch per organization: its characters, and its share of the
/// provider's token count (by characters).
fn costs_per_org(orgs: &[Uuid], texts: &[String], tokens: i64) -> Vec<Cost> {
    let amounts = chars_per_org(orgs, texts);
    let total: i64 = amounts.iter().map(|a| a.1).sum();
    amounts
        .into_iter()
        .map(|(org_id, chars)| Cost {
            org_id,
            meter: Meter::EmbedChars,
            used: chars,
            tokens: if total > 0 {
                (i128::from(tokens) * i128::from(chars) / i128::from(total)) as i64
            } else {
                0
            },
        })
        .collect()
}

/// Puts running jobs back to wait for the next UTC day, without counting the attempt (a job
/// whose row has a newer pending job is superseded instead). Returns how many were put back.
async fn defer_to_next_day(db: &Db, job_ids: &[i64], why: &str) -> Result<u64, DbError> {
    if job_ids.is_empty() {
        return Ok(0);
    }
    let mut tx = service(db).await?;
    let n = tx
        .execute(
            "update private.embedding_jobs j
                set status = 'pending', attempts = greatest(j.attempts - 1, 0),
                    run_after = date_trunc('day', now(), 'UTC') + interval '1 day',
                    locked_at = null, last_error = $2, updated_at = now()
              where j.id = any($1) and j.status = 'running'
                and not exists (select 1 from private.embedding_jobs p
                                where p.status = 'pending' and p.table_name = j.table_name
                                  and p.row_id = j.row_id and p.id <> j.id)",
            &[&job_ids, &why],
        )
        .await?;
    tx.execute(
        "update private.embedding_jobs set status = 'done', locked_at = null, last_error = 'superseded'
         where id = any($1) and status = 'running'",
        &[&job_ids],
    )
    .await?;
    tx.commit().await?;
    Ok(n)
}

/// Marks running jobs failed with `why` (no retry can succeed).
async fn give_up(db: &Db, job_ids: &[i64], why: &str) -> Result<u64, DbError> {
    if job_ids.is_empty() {
        return Ok(0);
    }
    let mut tx = service(db).await?;
    let n = tx
        .execute(
            "update private.embedding_jobs
                set status = 'failed', locked_at = null, last_error = $2, updated_at = now()
              where id = any($1) and status = 'running'",
            &[&job_ids, &why],
        )
        .await?;
    tx.commit().await?;
    Ok(n)
}

/// Runs the worker until the task is aborted: batches back to back while there is work,
/// polling every `cfg.poll` when idle.
pub fn spawn_embedding_worker(
    db: Db,
    provider: DynProvider,
    cfg: WorkerConfig,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(worker_loop(db, provider, cfg, None))
}

/// [`spawn_embedding_worker`] that also ends when `stop` turns true: after the batch it is
/// running (a claimed job is finished, never abandoned), or at once while idle.
pub fn spawn_embedding_worker_until(
    db: Db,
    provider: DynProvider,
    cfg: WorkerConfig,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(worker_loop(db, provider, cfg, Some(stop)))
}

/// The worker. While the database is unavailable (a restart) it says so once, keeps
/// polling, and says when it is back.
async fn worker_loop(
    db: Db,
    provider: DynProvider,
    cfg: WorkerConfig,
    mut stop: Option<tokio::sync::watch::Receiver<bool>>,
) {
    tracing::info!(
        provider = provider.name(),
        model = provider.model(),
        "embedding worker started"
    );
    let stopped =
        |s: &Option<tokio::sync::watch::Receiver<bool>>| s.as_ref().is_some_and(|s| *s.borrow());
    let mut unavailable = false;
    let mut pruned: Option<Instant> = None;
    while !stopped(&stop) {
        // Usage rows no budget needs any more go, once an hour.
        if pruned.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
            pruned = Some(Instant::now());
            if let Err(e) = budget::prune(&db).await {
                tracing::warn!(error = %e, "embedding worker: pruning ai_usage failed");
            }
        }
        match run_batch(&db, &provider, &cfg).await {
            Ok(b) => {
                if std::mem::take(&mut unavailable) {
                    tracing::info!("embedding worker: database available again");
                }
                if b.claimed > 0 {
                    tracing::debug!(
                        claimed = b.claimed,
                        embedded = b.embedded,
                        failed = b.failed,
                        "embedding batch"
                    );
                    continue;
                }
            }
            Err(DbError::Unavailable(e)) => {
                if !std::mem::replace(&mut unavailable, true) {
                    tracing::warn!(error = %e, "embedding worker: database unavailable; waiting for it");
                }
            }
            Err(e) => tracing::warn!(error = %e, "embedding worker: database error"),
        }
        match stop.as_mut() {
            Some(s) => {
                tokio::select! {
                    _ = tokio::time::sleep(cfg.poll) => {}
                    // A dropped sender never asks to stop: forget it.
                    r = s.changed() => if r.is_err() { stop = None; },
                }
            }
            None => tokio::time::sleep(cfg.poll).await,
        }
    }
    tracing::info!("embedding worker stopped after its current job");
}

/// Queues a job for every document and interaction with text and no embedding (or an
/// embedding of another model than `provider`'s), then embeds them all;
/// `progress(done, total)` after each batch.
///
/// This is the operator's command (`agencyflow embed backfill`): it is metered like the
/// worker but not capped by the per-organization embedding budget.
pub async fn backfill(
    db: &Db,
    provider: DynProvider,
    progress: impl FnMut(u64, u64),
) -> Result<BackfillReport, DbError> {
    let cfg = WorkerConfig {
        embed_budget_chars_per_day: 0,
        ..WorkerConfig::default()
    };
    backfill_with(db, provider, &cfg, progress).await
}

pub async fn backfill_with(
    db: &Db,
    provider: DynProvider,
    cfg: &WorkerConfig,
    mut progress: impl FnMut(u64, u64),
) -> Result<BackfillReport, DbError> {
    let mut tx = service(db).await?;
    let mut queued = 0;
    for table in &TABLES {
        queued += tx
            .execute(
                &format!(
                    "insert into private.embedding_jobs (org_id, table_name, row_id)
                     select t.org_id, '{name}', t.id from public.{name} t
                     where (t.embedding is null or t.embedding_model is distinct from $1)
                       and nullif(btrim({src}), '') is not null
                     on conflict (table_name, row_id) where status = 'pending' do nothing",
                    name = table.name,
                    src = table.source
                ),
                &[&provider.model()],
            )
            .await?;
    }
    let total: i64 = tx
        .query_one(
            "select count(*) from private.embedding_jobs where status in ('pending', 'running')",
            &[],
        )
        .await?
        .get(0);
    tx.commit().await?;
    let total = total as u64;
    let mut report = BackfillReport {
        queued,
        ..Default::default()
    };
    let mut done = 0;
    progress(0, total);
    loop {
        let b = run_batch(db, &provider, cfg).await?;
        if b.claimed == 0 {
            break;
        }
        done += b.claimed;
        report.embedded += b.embedded;
        report.failed += b.failed;
        progress(done.min(total), total.max(done));
    }
    let mut tx = service(db).await?;
    report.remaining = tx
        .query_one(
            "select count(*) from private.embedding_jobs where status in ('pending', 'running')",
            &[],
        )
        .await?
        .get::<_, i64>(0) as u64;
    tx.commit().await?;
    Ok(report)
}

/// [`backfill`] with a terminal progress bar (what `agencyflow embed backfill` shows).
pub async fn backfill_with_progress_bar(
    db: &Db,
    provider: DynProvider,
) -> Result<BackfillReport, DbError> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} embedding [{bar:40}] {pos}/{len} rows ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let started = Instant::now();
    let report = backfill(db, provider, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .await;
    bar.finish_and_clear();
    if let Ok(r) = &report {
        eprintln!(
            "embedded {} rows in {:.1}s ({} failed, {} waiting for a retry)",
            r.embedded,
            started.elapsed().as_secs_f64(),
            r.failed,
            r.remaining
        );
    }
    report
}
