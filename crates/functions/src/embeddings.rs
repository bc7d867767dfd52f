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
use std::time::{Duration, Instant};

use agencyflow_db::{ClaimsTxn, Db, DbError, TxSettings};
use uuid::Uuid;

use crate::ai::vector_literal;
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
                "select t.id, {src} from public.{name} t
                 where t.id = any($1) and nullif(btrim({src}), '') is not null",
                src = table.source,
                name = table.name
            ),
            &[&row_ids],
        )
        .await?;
    tx.commit().await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
    let texts: Vec<String> = rows.iter().map(|r| r.get(1)).collect();
    let vectors = if texts.is_empty() {
        Ok(Vec::new())
    } else {
        provider
            .embed(&texts, table.dimensions)
            .await
            .map(|e| e.vectors)
    };
    match vectors {
        Ok(vectors) => {
            let literals: Vec<String> = vectors.iter().map(|v| vector_literal(v)).collect();
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
            // jobs (an edit queued a newer one).
            tx.execute(
                "update private.embedding_jobs set status = 'done', locked_at = null, last_error = null
                 where id = any($1) and status = 'running'",
                &[&job_ids],
            )
            .await?;
            tx.commit().await?;
            Ok((written, 0))
        }
        Err(e) => {
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
            Ok((0, n))
        }
    }
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
    while !stopped(&stop) {
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
pub async fn backfill(
    db: &Db,
    provider: DynProvider,
    progress: impl FnMut(u64, u64),
) -> Result<BackfillReport, DbError> {
    backfill_with(db, provider, &WorkerConfig::default(), progress).await
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
