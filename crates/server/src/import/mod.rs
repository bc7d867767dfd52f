//! `agencyflow import supabase`: brings a hosted Supabase project of the original agency
//! system (docs/import.md) into agencyflow: its public tables mapped to agencyflow's schema,
//! its users (with their bcrypt password hashes) and identities, and its storage files.
//!
//! All or nothing: the database part runs in ONE transaction on agencyflow's database (user
//! triggers of the loaded tables are disabled inside it, so no personal workspaces, version
//! rows or timeline entries are invented for rows that already have their history); a refused
//! row, `--dry-run` or any error rolls it back, and the files this run wrote are removed again.
//! Rows keep their ids and are inserted with ON CONFLICT DO NOTHING, so a second run adds
//! nothing.
pub mod engine;
pub mod files;
pub mod rules;
pub mod tables;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use agencyflow_db::migrate;
use agencyflow_db::tokio_postgres::Client;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::config::GlobalArgs;
use crate::run::{Database, RunError};
use engine::{Ctx, Mapping, Outcome, TableReport};

#[derive(Debug, Args, Clone)]
pub struct ImportArgs {
    #[command(subcommand)]
    pub source: ImportSource,
}

#[derive(Debug, Subcommand, Clone)]
pub enum ImportSource {
    /// A hosted Supabase project of the original agency system (docs/import.md).
    Supabase(SupabaseArgs),
}

#[derive(Debug, Args, Clone)]
pub struct SupabaseArgs {
    /// The old project's database: a postgres:// URL (or key=value conninfo), or a pg_dump
    /// file (custom or plain format), restored into a scratch database first.
    #[arg(long)]
    pub from: String,
    /// The old project's files: a folder (`<folder>/<bucket>/<name>`), or `s3://[prefix]`
    /// with the --storage-from-s3-* settings (Supabase's S3 endpoint: one S3 bucket per bucket).
    #[arg(long = "storage-from")]
    pub storage_from: Option<String>,
    /// Read, map and check everything, report, and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Import what can be imported even when rows are refused (exit 0).
    #[arg(long)]
    pub allow_refusals: bool,
    /// The model of an original embedding column, `documents=MODEL` or
    /// `crm_interactions=MODEL`: its vectors are kept under that name. Without it they are
    /// dropped and queued for `agencyflow embed backfill`.
    #[arg(long = "embedding-model", value_parser = parse_kv)]
    pub embedding_model: Vec<(String, String)>,
    /// Refused rows named (id and reason) per table in the report; beyond that they are
    /// counted only, so a badly broken original cannot fill memory.
    #[arg(long, default_value_t = 1000)]
    pub refusals_listed: usize,
    /// Rows per batch (memory is bounded by it).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
    /// S3 endpoint of the old project's storage (e.g. https://<ref>.supabase.co/storage/v1/s3).
    #[arg(long = "storage-from-s3-endpoint")]
    pub s3_endpoint: Option<String>,
    /// Region of the old project's S3 endpoint (the project's region, e.g. eu-central-1).
    #[arg(long = "storage-from-s3-region")]
    pub s3_region: Option<String>,
    /// Access key of the old project's S3 endpoint (Storage → Settings → S3 access keys).
    #[arg(
        long = "storage-from-s3-access-key-id",
        env = "SUPABASE_S3_ACCESS_KEY_ID",
        hide_env_values = true
    )]
    pub s3_access_key_id: Option<String>,
    /// Secret of that access key (better from the environment than on the command line).
    #[arg(
        long = "storage-from-s3-secret-access-key",
        env = "SUPABASE_S3_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    pub s3_secret_access_key: Option<String>,
    /// Where the imported files go (agencyflow's own storage settings, as for `serve`).
    #[command(flatten)]
    pub storage: agencyflow_storage::StorageArgs,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((t @ ("documents" | "crm_interactions"), m)) if !m.trim().is_empty() => {
            Ok((t.to_string(), m.trim().to_string()))
        }
        _ => Err(format!(
            "`{s}`: expected documents=MODEL or crm_interactions=MODEL"
        )),
    }
}

/// The whole report (`--report FILE` writes it as JSON).
#[derive(Debug, Serialize, Default)]
pub struct Report {
    pub dry_run: bool,
    /// `committed`, `dry run: rolled back`, `refused: rolled back`, `failed: rolled back`.
    pub outcome: String,
    pub tables: Vec<TableReport>,
    pub users: UsersReport,
    pub files: files::FilesReport,
    /// What the original had that is not carried, and why.
    pub left_behind: Vec<LeftBehind>,
    pub refused_total: u64,
    pub seconds: f64,
}

#[derive(Debug, Serialize, Default)]
pub struct UsersReport {
    pub users: u64,
    pub with_password: u64,
    pub anonymous: u64,
    pub identities_by_provider: BTreeMap<String, u64>,
    pub sessions_not_carried: u64,
    pub note: String,
}

#[derive(Debug, Serialize)]
pub struct LeftBehind {
    pub what: String,
    pub why: String,
}

fn failed(e: impl std::fmt::Display) -> RunError {
    RunError::Failed(e.to_string())
}

/// `--from` names a database (a URL or conninfo) rather than a dump file.
fn is_connection(from: &str) -> bool {
    from.starts_with("postgres://")
        || from.starts_with("postgresql://")
        || from.contains("host=")
        || from.contains("dbname=")
}

/// A scratch database on agencyflow's cluster holding a restored dump; dropped on drop.
struct Scratch {
    admin_url: String,
    name: String,
}

impl Scratch {
    async fn restore(admin_url: &str, file: &Path) -> Result<(Scratch, String), RunError> {
        let name = format!("agencyflow_import_{}", uuid::Uuid::new_v4().simple());
        let admin = agencyflow_db::connect_one(admin_url)
            .await
            .map_err(failed)?;
        admin
            .batch_execute(&format!("create database {name}"))
            .await
            .map_err(failed)?;
        let scratch = Scratch {
            admin_url: admin_url.to_string(),
            name: name.clone(),
        };
        let mut cfg: agencyflow_db::tokio_postgres::Config = admin_url.parse().map_err(failed)?;
        cfg.dbname(&name);
        let url = conninfo(&cfg);
        let head =
            std::fs::read(file).map_err(|e| failed(format!("--from {}: {e}", file.display())))?;
        let custom = head.starts_with(b"PGDMP");
        drop(head);
        let conn = crate::backup::pg::Conn::parse(&url).map_err(failed)?;
        let tools = crate::backup::pg::Tools::find();
        let mut cmd = if custom {
            let mut c = tools.command("pg_restore", &conn);
            c.args(["--no-owner", "--no-privileges", "--dbname"])
                .arg(&name)
                .arg(file);
            c
        } else {
            let mut c = tools.command("psql", &conn);
            c.args(["-q", "-v", "ON_ERROR_STOP=0", "-f"]).arg(file);
            c
        };
        // A Supabase dump names roles and extensions agencyflow's cluster may not have: the
        // statements about them fail and the rest restores; what is missing shows in the report.
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .map_err(failed)?
            .map_err(|e| failed(format!("running pg_restore/psql: {e}")))?;
        if !out.status.success() {
            tracing::warn!(
                "restoring the dump reported errors (statements about roles or extensions agencyflow lacks are expected): {}",
                String::from_utf8_lossy(&out.stderr).lines().take(5).collect::<Vec<_>>().join(" | ")
            );
        }
        Ok((scratch, url))
    }

    async fn drop_now(self) {
        if let Ok(c) = agencyflow_db::connect_one(&self.admin_url).await {
            let _ = c
                .batch_execute(&format!(
                    "drop database if exists {} with (force)",
                    self.name
                ))
                .await;
        }
    }
}

/// A key=value connection string of `cfg` (values quoted as libpq wants them).
fn conninfo(cfg: &agencyflow_db::tokio_postgres::Config) -> String {
    use agencyflow_db::tokio_postgres::config::Host;
    let q = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
    let mut parts = Vec::new();
    if let Some(h) = cfg.get_hosts().first() {
        match h {
            Host::Tcp(h) => parts.push(format!("host={}", q(h))),
            Host::Unix(p) => parts.push(format!("host={}", q(&p.display().to_string()))),
        }
    }
    if let Some(p) = cfg.get_ports().first() {
        parts.push(format!("port={p}"));
    }
    if let Some(u) = cfg.get_user() {
        parts.push(format!("user={}", q(u)));
    }
    if let Some(pw) = cfg.get_password() {
        parts.push(format!("password={}", q(&String::from_utf8_lossy(pw))));
    }
    if let Some(d) = cfg.get_dbname() {
        parts.push(format!("dbname={}", q(d)));
    }
    parts.join(" ")
}

/// Runs the import against the resolved database.
pub async fn import_command(
    database: &Database,
    _global: &GlobalArgs,
    args: &ImportArgs,
    data_dir: &Path,
) -> Result<(), RunError> {
    let ImportSource::Supabase(a) = &args.source;
    let started = Instant::now();
    let (scratch, source_url) = if is_connection(&a.from) {
        (None, a.from.clone())
    } else {
        eprintln!("restoring {} into a scratch database ...", a.from);
        let (s, url) = Scratch::restore(&database.admin_url, Path::new(&a.from)).await?;
        (Some(s), url)
    };
    let result = run_import(database, a, data_dir, &source_url, started).await;
    if let Some(s) = scratch {
        s.drop_now().await;
    }
    let report = result?;
    print_report(&report);
    if let Some(path) = &a.report {
        let text = serde_json::to_string_pretty(&report).map_err(failed)?;
        std::fs::write(path, text + "\n")
            .map_err(|e| failed(format!("writing {}: {e}", path.display())))?;
    }
    if report.refused_total > 0 && !a.allow_refusals {
        return Err(failed(format!(
            "{} row(s) refused; nothing was imported (see the report; --allow-refusals imports the rest)",
            report.refused_total
        )));
    }
    Ok(())
}

async fn run_import(
    database: &Database,
    a: &SupabaseArgs,
    data_dir: &Path,
    source_url: &str,
    started: Instant,
) -> Result<Report, RunError> {
    // libpq's sslmode/sslrootcert: a hosted Supabase database wants TLS (docs/import.md).
    let mut src = agencyflow_db::tls::connect_with_libpq_tls(source_url)
        .await
        .map_err(|e| failed(format!("connecting to --from: {e}")))?;
    let mut dst = agencyflow_db::connect_one(&database.admin_url)
        .await
        .map_err(failed)?;
    migrate::apply(&mut dst, &migrate::embedded(), |_| {})
        .await
        .map_err(failed)?;
    let target = a
        .storage
        .backend_in(a.storage.dir_or(|| data_dir.to_path_buf()))
        .map_err(failed)?;
    let s3 = agencyflow_storage::backend::S3Settings {
        bucket: String::new(),
        endpoint: a.s3_endpoint.clone(),
        region: a.s3_region.clone(),
        access_key_id: a.s3_access_key_id.clone(),
        secret_access_key: a.s3_secret_access_key.clone(),
        force_path_style: Some(true),
    };
    let mut files = files::Files {
        source: files::parse_source(a.storage_from.as_deref(), s3).map_err(failed)?,
        target,
        dry_run: a.dry_run,
        written: Vec::new(),
        report: Default::default(),
    };
    let mut report = Report {
        dry_run: a.dry_run,
        ..Default::default()
    };
    let outcome = load(&mut src, &mut dst, a, &mut files, &mut report).await;
    let committed = matches!(outcome, Ok(true));
    report.outcome = match &outcome {
        Err(_) => "failed: rolled back".into(),
        Ok(true) => "committed".into(),
        Ok(false) if a.dry_run => "dry run: rolled back".into(),
        Ok(false) => "refused: rolled back".into(),
    };
    if !committed {
        files.remove_written().await;
    }
    outcome?;
    report.users = users_report(&src).await;
    report.left_behind = left_behind(&src).await;
    report.files = files.report.clone();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The database part: one transaction on agencyflow's side, committed only when nothing was
/// refused (or --allow-refusals) and this is no dry run; one repeatable-read snapshot on the
/// original's side. `Ok(true)` when it committed.
async fn load(
    src: &mut Client,
    dst: &mut Client,
    a: &SupabaseArgs,
    files: &mut files::Files,
    report: &mut Report,
) -> Result<bool, RunError> {
    let stx = src
        .build_transaction()
        .isolation_level(agencyflow_db::tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(failed)?;
    let mut tx = dst.transaction().await.map_err(failed)?;
    let mut targets: Vec<(&str, &str)> = tables::TABLES.iter().map(|t| t.target).collect();
    targets.dedup();
    for t in &targets {
        tx.batch_execute(&format!(
            "alter table {} disable trigger user",
            engine::qualified(*t)
        ))
        .await
        .map_err(failed)?;
    }
    let mut ctx = Ctx {
        embedding_models: a.embedding_model.iter().cloned().collect(),
        refusals_listed: a.refusals_listed,
        ..Default::default()
    };
    for t in ["documents", "crm_interactions"] {
        let dims: i32 = tx
            .query_one(
                "select atttypmod from pg_attribute where attrelid = format('public.%I', $1::text)::regclass and attname = 'embedding'",
                &[&t],
            )
            .await
            .map_err(failed)?
            .get(0);
        ctx.embedding_dims
            .insert(t.to_string(), dims.max(0) as usize);
    }
    let style = ProgressStyle::with_template("{prefix:>20} [{bar:30}] {pos}/{len} {msg}")
        .map_err(failed)?
        .progress_chars("=> ");
    for spec in tables::TABLES {
        before_table(&tx, spec, &mut ctx).await?;
        let mut tr = TableReport {
            table: spec.name.to_string(),
            ..Default::default()
        };
        let Some(numeric) = engine::source_table(&stx, spec.source)
            .await
            .map_err(failed)?
        else {
            tr.note = Some("not in the original".into());
            report.tables.push(tr);
            continue;
        };
        let total: i64 = stx
            .query_one(
                &format!("select count(*) from {}", engine::qualified(spec.source)),
                &[],
            )
            .await
            .map_err(failed)?
            .get(0);
        let bar = ProgressBar::new(total as u64)
            .with_style(style.clone())
            .with_prefix(spec.name);
        let columns = engine::target_columns(&tx, spec.target)
            .await
            .map_err(failed)?;
        let sql = engine::source_sql(spec, &numeric);
        let portal = stx.bind(sql.as_str(), &[]).await.map_err(failed)?;
        loop {
            let rows = stx
                .query_portal(&portal, a.batch_size as i32)
                .await
                .map_err(failed)?;
            if rows.is_empty() {
                break;
            }
            tr.read += rows.len() as u64;
            bar.inc(rows.len() as u64);
            let mut batch = Vec::with_capacity(rows.len());
            for r in &rows {
                let text: String = r.get(0);
                let row: engine::Row = serde_json::from_str(&text).map_err(failed)?;
                batch.push(Mapping::new(row));
            }
            drop(rows);
            process_batch(&mut tx, spec, &columns, batch, &mut ctx, files, &mut tr).await?;
        }
        drop(portal);
        after_table(&tx, spec, &mut tr).await?;
        bar.finish_and_clear();
        eprintln!(
            "{:>20}: {} read, {} imported, {} already present, {} refused",
            spec.name, tr.read, tr.imported, tr.already_present, tr.refused_count
        );
        report.refused_total += tr.refused_count;
        report.tables.push(tr);
    }
    for t in &targets {
        tx.batch_execute(&format!(
            "alter table {} enable trigger user",
            engine::qualified(*t)
        ))
        .await
        .map_err(failed)?;
    }
    let commit = !a.dry_run && (report.refused_total == 0 || a.allow_refusals);
    if commit {
        tx.commit().await.map_err(failed)?;
    } else {
        tx.rollback().await.map_err(failed)?;
    }
    let _ = stx.rollback().await;
    Ok(commit)
}

async fn process_batch(
    tx: &mut agencyflow_db::tokio_postgres::Transaction<'_>,
    spec: &engine::TableSpec,
    columns: &std::collections::HashSet<String>,
    mut batch: Vec<Mapping>,
    ctx: &mut Ctx,
    files: &mut files::Files,
    tr: &mut TableReport,
) -> Result<(), RunError> {
    let mut refused: Vec<Option<String>> = vec![None; batch.len()];
    let mut matched = vec![false; batch.len()];
    for (i, m) in batch.iter_mut().enumerate() {
        match (spec.map)(m, ctx) {
            Ok(Outcome::Insert) => {}
            Ok(Outcome::Matched) => matched[i] = true,
            Err(reason) => refused[i] = Some(reason),
        }
    }
    for (i, x) in matched.iter().enumerate() {
        if *x {
            refused[i] = Some(String::new());
        }
    }
    engine::resolve_refs(tx, spec, &mut batch, &mut refused)
        .await
        .map_err(failed)?;
    if spec.name == "wizard_sessions" {
        let orgs: Vec<String> = batch
            .iter()
            .zip(&refused)
            .filter(|(m, x)| x.is_none() && !m.row.contains_key("user_id"))
            .filter_map(|(m, _)| m.str("org_id").map(str::to_string))
            .collect::<std::collections::HashSet<_>>()
            .into_iter()
            .collect();
        let rows = tx
            .query(
                "select org_id::text, min(user_id::text) from public.team_members
                  where org_id = any($1::text[]::uuid[]) group by org_id having count(*) = 1",
                &[&orgs],
            )
            .await
            .map_err(failed)?;
        ctx.sole_member = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        for (m, x) in batch.iter_mut().zip(&refused) {
            if x.is_none() {
                tables::link_wizard_user(m, ctx);
            }
        }
    }
    if spec.name == "storage.objects" {
        for (m, x) in batch.iter_mut().zip(refused.iter_mut()) {
            if x.is_none() {
                if let Err(reason) = files.place(m).await {
                    *x = Some(reason);
                }
            }
        }
    }
    let key = spec.key;
    let mut ids = Vec::with_capacity(batch.len());
    let rows: Vec<(usize, engine::Row)> = batch
        .iter()
        .enumerate()
        .filter(|(i, _)| refused[*i].is_none())
        .map(|(i, m)| {
            let mut r = m.row.clone();
            r.retain(|k, _| columns.contains(k));
            (i, r)
        })
        .collect();
    for m in &batch {
        ids.push(m.id(key));
    }
    let (ins, present, bad) = engine::insert_batch(tx, spec, columns, &rows)
        .await
        .map_err(failed)?;
    for (i, reason) in bad {
        refused[i] = Some(reason);
    }
    tr.imported += ins;
    tr.already_present += present;
    for (i, m) in batch.iter().enumerate() {
        match &refused[i] {
            Some(r) if r.is_empty() => tr.matched += 1,
            Some(r) => tr.refuse(ids[i].clone(), r.clone(), ctx.refusals_listed),
            None => {
                if !m.rules.is_empty() {
                    tr.changed += 1;
                }
                for r in &m.rules {
                    tr.rule(r, 1);
                }
            }
        }
    }
    Ok(())
}

async fn before_table(
    tx: &agencyflow_db::tokio_postgres::Transaction<'_>,
    spec: &engine::TableSpec,
    ctx: &mut Ctx,
) -> Result<(), RunError> {
    // agencyflow's global catalog: as large as agencyflow's, not the original's, data.
    if spec.name == "services" {
        let rows = tx
            .query(
                "select slug, id::text from public.services where org_id is null",
                &[],
            )
            .await
            .map_err(failed)?;
        ctx.global_services = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    }
    Ok(())
}

async fn after_table(
    tx: &agencyflow_db::tokio_postgres::Transaction<'_>,
    spec: &engine::TableSpec,
    tr: &mut TableReport,
) -> Result<(), RunError> {
    match spec.name {
        "profiles" => {
            let added = tx
                .execute(
                    "insert into public.profiles (id, email, full_name)
                     select u.id, u.email, nullif(btrim(coalesce(u.raw_user_meta_data ->> 'full_name', u.raw_user_meta_data ->> 'name')), '')
                       from auth.users u
                      where not exists (select 1 from public.profiles p where p.id = u.id)",
                    &[],
                )
                .await
                .map_err(failed)?;
            let filled = tx
                .execute(
                    "update public.profiles p set email = u.email from auth.users u
                      where u.id = p.id and p.email is null and u.email is not null",
                    &[],
                )
                .await
                .map_err(failed)?;
            tr.imported += added;
            tr.rule("profile_email", added + filled);
        }
        // The user triggers are off while the import loads: the columns they derive are
        // filled here, as they would have been.
        "tasks" => {
            let n = tx
                .execute(
                    "update public.tasks set completed_at = updated_at
                      where status = 'done' and completed_at is null",
                    &[],
                )
                .await
                .map_err(failed)?;
            tr.rule("task_completed_at", n);
        }
        "crm_deals" => {
            let n = tx
                .execute(
                    "update public.crm_deals set closed_at = updated_at
                      where status in ('won', 'lost') and closed_at is null",
                    &[],
                )
                .await
                .map_err(failed)?;
            tr.rule("deal_closed_at", n);
        }
        "documents" | "crm_interactions" => {
            let queued = tx
                .execute(
                    &format!(
                        "insert into private.embedding_jobs (org_id, table_name, row_id)
                         select t.org_id, '{0}', t.id from public.{0} t
                          where t.embedding is null
                         on conflict (table_name, row_id) where status = 'pending' do nothing",
                        spec.name
                    ),
                    &[],
                )
                .await
                .map_err(failed)?;
            tr.note = Some(format!(
                "{queued} row(s) queued for `agencyflow embed backfill`"
            ));
        }
        _ => {}
    }
    Ok(())
}

async fn users_report(src: &Client) -> UsersReport {
    let mut u = UsersReport {
        note: "sessions and refresh tokens are not carried: every user signs in again (passwords and external identities work as before)".into(),
        ..Default::default()
    };
    if let Ok(r) = src
        .query_one(
            "select count(*), count(*) filter (where coalesce(encrypted_password, '') <> ''),
                    count(*) filter (where to_jsonb(u) ->> 'is_anonymous' = 'true')
               from auth.users u",
            &[],
        )
        .await
    {
        u.users = r.get::<_, i64>(0) as u64;
        u.with_password = r.get::<_, i64>(1) as u64;
        u.anonymous = r.get::<_, i64>(2) as u64;
    }
    if let Ok(rows) = src
        .query(
            "select provider, count(*) from auth.identities group by 1 order by 1",
            &[],
        )
        .await
    {
        u.identities_by_provider = rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
            .collect();
    }
    if let Ok(r) = src
        .query_one("select count(*) from auth.sessions", &[])
        .await
    {
        u.sessions_not_carried = r.get::<_, i64>(0) as u64;
    }
    u
}

/// The insecure or platform-specific parts of the original that are not carried.
async fn left_behind(src: &Client) -> Vec<LeftBehind> {
    let mut out = Vec::new();
    if let Ok(rows) = src
        .query(
            "select policyname::text, tablename::text from pg_policies
              where schemaname = 'public' and policyname like 'temp\\_anon\\_%' order by 1",
            &[],
        )
        .await
    {
        for r in rows {
            out.push(LeftBehind {
                what: format!("policy {} on {}", r.get::<_, String>(0), r.get::<_, String>(1)),
                why: "lets anyone (anon) read and write every organization's wizard data; agencyflow gives visitors an anonymous user with a workspace of their own instead".into(),
            });
        }
    }
    if let Ok(rows) = src
        .query(
            "select c.relname::text from pg_class c
              where c.relnamespace = 'public'::regnamespace and c.relkind = 'v'
                and not coalesce('security_invoker=true' = any(c.reloptions) or 'security_invoker=on' = any(c.reloptions), false)
              order by 1",
            &[],
        )
        .await
    {
        for r in rows {
            out.push(LeftBehind {
                what: format!("view {} (runs as its owner: SECURITY DEFINER)", r.get::<_, String>(0)),
                why: "shows every organization's rows to anyone who may query it; agencyflow has its own security_invoker view of the same name, so RLS applies".into(),
            });
        }
    }
    if let Ok(rows) = src
        .query(
            "select policyname::text from pg_policies
              where schemaname = 'public' and tablename = 'organizations' and cmd in ('INSERT', 'ALL')
                and coalesce(with_check, '') in ('true', '(true)') order by 1",
            &[],
        )
        .await
    {
        for r in rows {
            out.push(LeftBehind {
                what: format!("policy {} on organizations (WITH CHECK true)", r.get::<_, String>(0)),
                why: "anyone could create organizations without limit or owner; agencyflow's insert policy makes the creator the owner and caps organizations per user".into(),
            });
        }
    }
    for (what, why) in [
        ("every other policy, function, trigger and index of the original", "agencyflow's schema brings its own (docs/schema.md); only rows are carried"),
        ("auth.sessions and auth.refresh_tokens", "sessions are not carried: users sign in again"),
        ("edge functions and their secrets", "agencyflow's /functions/v1 serves its own; set provider keys again (docs/functions.md)"),
    ] {
        out.push(LeftBehind {
            what: what.into(),
            why: why.into(),
        });
    }
    out
}

fn print_report(r: &Report) {
    println!(
        "{:<20} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "table", "read", "imported", "present", "matched", "changed", "refused"
    );
    for t in &r.tables {
        println!(
            "{:<20} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8}{}",
            t.table,
            t.read,
            t.imported,
            t.already_present,
            t.matched,
            t.changed,
            t.refused_count,
            t.note
                .as_deref()
                .map(|n| format!("  ({n})"))
                .unwrap_or_default()
        );
        for (rule, n) in &t.rules {
            println!("{:<20}   {rule}: {n}", "");
        }
        for x in t.refused.iter().take(20) {
            println!("{:<20}   refused {}: {}", "", x.id, x.reason);
        }
        if t.refused_count > 20 {
            println!(
                "{:<20}   ... {} more refused ({} named in --report, {} only counted)",
                "",
                t.refused_count - 20,
                t.refused.len().saturating_sub(20),
                t.refused_not_listed
            );
        }
    }
    println!(
        "users: {} ({} with a password, {} anonymous), identities: {}; {} session(s) not carried: {}",
        r.users.users,
        r.users.with_password,
        r.users.anonymous,
        r.users
            .identities_by_provider
            .iter()
            .map(|(p, n)| format!("{p} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        r.users.sessions_not_carried,
        r.users.note
    );
    println!(
        "files: {} read, {} copied, {} reused, {} verified, {} bytes",
        r.files.read, r.files.copied, r.files.reused, r.files.verified, r.files.bytes
    );
    println!("left behind:");
    for l in &r.left_behind {
        println!("  - {}: {}", l.what, l.why);
    }
    println!(
        "{} ({} refused, {:.1}s)",
        r.outcome, r.refused_total, r.seconds
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_connection_strings_quote_their_values() {
        let cfg: agencyflow_db::tokio_postgres::Config =
            "host=/run/pg port=5432 user=postgres password='a b\\'c' dbname=x"
                .parse()
                .unwrap();
        let s = conninfo(&cfg);
        assert_eq!(
            s,
            "host='/run/pg' port=5432 user='postgres' password='a b\\'c' dbname='x'"
        );
        let back: agencyflow_db::tokio_postgres::Config = s.parse().unwrap();
        assert_eq!(back.get_password(), Some(&b"a b'c"[..]));
        assert!(is_connection("postgres://u@h/db"));
        assert!(!is_connection("./old-project.dump"));
    }
}
