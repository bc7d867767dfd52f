//! The connection pool and the per-request transaction every API surface runs in.
//!
//! [`ClaimsTxn`] is one transaction as one role with one set of JWT claims: `BEGIN`, the
//! `set_config` of role, claims and request GUCs, and the first statement go to PostgreSQL
//! pipelined in one round trip, so RLS decides and the request costs as little as the
//! database allows.
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{NoTls, Row};

use crate::error::CLUSTER_DOWN;
use crate::pipe::{PipeManager, PipePool, TextRows, SETUP_SQL};
use crate::supervise::{ClusterHealth, DbState};
use crate::DbError;

/// Size and time limits of the API pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// Connections per pool (the transaction pool and the one-Sync read pool each).
    pub max_size: usize,
    /// Bound on opening one connection (socket connect, startup and authentication); also
    /// the URL's `connect_timeout` when it has none. None: unbounded.
    pub connect_timeout: Option<Duration>,
    /// Bound on waiting for a free connection when all are busy. None: unbounded.
    pub acquire_timeout: Option<Duration>,
}

impl PoolOptions {
    pub fn new(max_size: usize) -> Self {
        PoolOptions {
            max_size,
            connect_timeout: None,
            acquire_timeout: None,
        }
    }
}

/// Transaction settings of one request.
#[derive(Debug, Clone)]
pub struct TxSettings {
    /// The database role to act as (`anon`, `authenticated`, `service_role`, ...).
    pub role: String,
    /// `request.jwt.claims`: the verified JWT claims as JSON text.
    pub claims: String,
    /// GET/HEAD and non-volatile RPC run READ ONLY.
    pub read_only: bool,
    /// Further request GUCs (`request.method`, `request.path`, `request.headers`...).
    pub gucs: Vec<(String, String)>,
    /// The transaction's `search_path`; `None`: the pool's ([`Db::with_search_path`]).
    pub search_path: Option<String>,
    /// A statement run right after the settings, before the request's own (PostgREST's
    /// `db-pre-request`: `select "schema"."function"()`); its error aborts the request.
    pub pre_request: Option<Arc<str>>,
}

impl TxSettings {
    pub fn new(role: impl Into<String>, claims: impl Into<String>) -> Self {
        TxSettings {
            role: role.into(),
            claims: claims.into(),
            read_only: false,
            gucs: Vec::new(),
            search_path: None,
            pre_request: None,
        }
    }

    pub fn search_path(mut self, path: impl Into<String>) -> Self {
        self.search_path = Some(path.into());
        self
    }

    pub fn pre_request(mut self, sql: Option<Arc<str>>) -> Self {
        self.pre_request = sql;
        self
    }

    pub fn read_only(mut self, ro: bool) -> Self {
        self.read_only = ro;
        self
    }

    pub fn guc(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.gucs.push((k.into(), v.into()));
        self
    }
}

/// Roles whose transactions receive the vault key GUC.
const VAULT_ROLES: &[&str] = &["service_role", "supabase_admin", "postgres"];

#[derive(Clone)]
pub struct Db {
    pool: Pool,
    /// Wire-level connections for [`Db::query_and_commit`] (see `pipe`).
    pipe: PipePool,
    inner: Arc<Inner>,
}

struct Inner {
    /// Statements prepared per connection for `query_cached`, by SQL text: a request shape
    /// is parsed and planned once per connection, and later requests of that shape go out
    /// pipelined with BEGIN and the settings in one round trip.
    prepared: PreparedCache,
    vault_key: Option<String>,
    /// `ALTER ROLE ... SET` values: `SET ROLE` does not apply them, so we do, per request.
    role_settings: RwLock<HashMap<String, Vec<(String, String)>>>,
    search_path: String,
    /// The supervised embedded cluster's state: while it is not up, checkouts fail at once.
    health: Option<ClusterHealth>,
    /// How long the rollback of an abandoned transaction may take before its connection is
    /// deemed dead (a database that stopped answering) and closed instead of pooled again.
    abandon_timeout: Duration,
}

/// Per-connection statement cache keyed by deadpool's object id (never reused).
#[derive(Default)]
struct PreparedCache(
    std::sync::Mutex<
        HashMap<deadpool_postgres::ObjectId, HashMap<String, tokio_postgres::Statement>>,
    >,
);

/// Statements kept per connection; past it the connection's cache starts over (dropped
/// statements are closed on the server).
const PREPARED_PER_CONNECTION: usize = 512;

impl PreparedCache {
    fn key(client: &Object) -> deadpool_postgres::ObjectId {
        Object::id(client)
    }

    fn get(&self, client: &Object, sql: &str) -> Option<tokio_postgres::Statement> {
        self.0
            .lock()
            .expect("prepared cache lock")
            .get(&Self::key(client))?
            .get(sql)
            .cloned()
    }

    fn put(&self, client: &Object, sql: &str, stmt: tokio_postgres::Statement) {
        let mut all = self.0.lock().expect("prepared cache lock");
        // Connections the pool replaced leave their entries behind; a bound keeps that small.
        if all.len() > 1024 && !all.contains_key(&Self::key(client)) {
            all.clear();
        }
        let mine = all.entry(Self::key(client)).or_default();
        if mine.len() >= PREPARED_PER_CONNECTION {
            mine.clear();
        }
        mine.insert(sql.to_string(), stmt);
    }
}

impl Db {
    /// A pool on `url` (a `postgres://` URL or `key=value` string) of at most `max_size` connections.
    pub fn connect(url: &str, max_size: usize) -> Result<Self, DbError> {
        Self::connect_with(url, PoolOptions::new(max_size))
    }

    /// A pool on `url` with size and time limits. Connections PostgreSQL closed (a restart,
    /// `pg_terminate_backend`) are dropped at checkout by both pools, never handed out.
    pub fn connect_with(url: &str, opts: PoolOptions) -> Result<Self, DbError> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| DbError::Other(format!("invalid database URL: {e}")))?;
        if let (Some(t), None) = (opts.connect_timeout, config.get_connect_timeout()) {
            config.connect_timeout(t);
        }
        // A database host that vanished (no FIN, no RST) leaves connections that look open:
        // unless the URL sets its own (the defaults are two hours of idle and the system's
        // retransmission limit, ~15 min), the kernel probes idle ones after a minute and gives
        // up on one whose sent data goes unacknowledged for a minute, so the pools see them
        // closed and replace them instead of handing them out to hang until a request's
        // deadline.
        if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            config.keepalives_idle(Duration::from_secs(60));
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(Duration::from_secs(60));
        }
        let timeouts = deadpool::managed::Timeouts {
            wait: opts.acquire_timeout,
            create: opts.connect_timeout,
            recycle: opts.connect_timeout,
        };
        let pipe = PipePool::builder(PipeManager {
            config: config.clone(),
        })
        .max_size(opts.max_size)
        .timeouts(timeouts)
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| DbError::Other(e.to_string()))?;
        let mgr = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(opts.max_size)
            .timeouts(timeouts)
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| DbError::Other(e.to_string()))?;
        Ok(Db {
            pool,
            pipe,
            inner: Arc::new(Inner {
                prepared: PreparedCache::default(),
                vault_key: None,
                role_settings: RwLock::new(HashMap::new()),
                search_path: "public, extensions".into(),
                health: None,
                abandon_timeout: opts.connect_timeout.unwrap_or(Duration::from_secs(5)),
            }),
        })
    }

    /// Ties the pools to the supervised embedded cluster: while PostgreSQL is restarting (or
    /// could not be restarted) every checkout fails at once with [`DbError::Unavailable`]
    /// instead of trying to connect.
    pub fn with_cluster_health(mut self, health: Option<ClusterHealth>) -> Self {
        let inner = Arc::get_mut(&mut self.inner).expect("configure Db before cloning");
        inner.health = health;
        self
    }

    /// The supervised cluster's state, when the database is the embedded one.
    pub fn cluster_health(&self) -> Option<&ClusterHealth> {
        self.inner.health.as_ref()
    }

    fn check_up(&self) -> Result<(), DbError> {
        match &self.inner.health {
            Some(h) if !h.is_up() => Err(DbError::Unavailable(format!(
                "{CLUSTER_DOWN}{}",
                match h.state() {
                    DbState::Restarting { .. } => "is restarting",
                    DbState::Failed { .. } => "is down; restarting it failed (see /health)",
                    DbState::Stopped => "is stopped",
                    DbState::Up => "is starting",
                }
            ))),
            _ => Ok(()),
        }
    }

    /// The key `vault.*` encrypts with, handed to privileged transactions as
    /// `agencyflow.vault_key`; it never touches a table.
    pub fn with_vault_key(mut self, key: Option<String>) -> Self {
        let inner = Arc::get_mut(&mut self.inner).expect("configure Db before cloning");
        inner.vault_key = key;
        self
    }

    /// The search_path every request transaction gets (PostgREST's extra search path).
    pub fn with_search_path(mut self, path: impl Into<String>) -> Self {
        let inner = Arc::get_mut(&mut self.inner).expect("configure Db before cloning");
        inner.search_path = path.into();
        self
    }

    /// Reads the per-role settings (`statement_timeout` ...) that requests must apply, as
    /// PostgREST does: only parameters the login role may set itself (context `user`, or
    /// granted with `GRANT SET ON PARAMETER`), which a role switch would otherwise skip,
    /// plus custom `x.y` settings; a role's setting for this database wins over its
    /// setting for every database, as at login. `pgrst.*` are PostgREST's own, not the
    /// role's. Called at start and on every reload.
    pub async fn load_role_settings(&self) -> Result<(), DbError> {
        let client = self.client().await?;
        let version: i32 = client
            .query_one(
                "select pg_catalog.current_setting('server_version_num')::int",
                &[],
            )
            .await?
            .get(0);
        // has_parameter_privilege exists from PostgreSQL 15 on.
        let granted = if version >= 150000 {
            "or pg_catalog.has_parameter_privilege(current_user, p.name, 'set')"
        } else {
            ""
        };
        let rows = client
            .query(
                &format!(
                    "select distinct on (r.rolname, k.key) r.rolname::text, k.key, k.value
                     from pg_catalog.pg_db_role_setting d
                     join pg_catalog.pg_roles r on r.oid = d.setrole
                     cross join lateral pg_catalog.unnest(d.setconfig) as s(setting)
                     cross join lateral (select pg_catalog.split_part(s.setting, '=', 1) as key,
                       pg_catalog.substr(s.setting, pg_catalog.strpos(s.setting, '=') + 1) as value) k
                     left join pg_catalog.pg_settings p on p.name = k.key
                     where d.setdatabase in (0, (select oid from pg_catalog.pg_database where datname = current_database()))
                       and k.key not like 'pgrst.%'
                       and (p.context = 'user' {granted}
                            or (p.name is null and k.key like '%.%'))
                     order by r.rolname, k.key, d.setdatabase desc"
                ),
                &[],
            )
            .await?;
        let mut map: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for r in rows {
            map.entry(r.get(0)).or_default().push((r.get(1), r.get(2)));
        }
        *self
            .inner
            .role_settings
            .write()
            .expect("role settings lock") = map;
        Ok(())
    }

    /// PostgREST's in-database configuration: the login role's `pgrst.<name>` settings
    /// (`ALTER ROLE authenticator SET pgrst.db_schemas = ...`), the ones for this database
    /// winning over the ones for every database. A database's own settings (`ALTER
    /// DATABASE`) do not count, as in PostgREST. Returns `(name, value)` without the prefix.
    pub async fn pgrst_settings(&self, names: &[&str]) -> Result<Vec<(String, String)>, DbError> {
        let client = self.client().await?;
        let keys: Vec<String> = names.iter().map(|n| format!("pgrst.{n}")).collect();
        let rows = client
            .query(
                "with kv as (
                   select d.setdatabase, pg_catalog.split_part(s.setting, '=', 1) as k,
                          pg_catalog.substr(s.setting, pg_catalog.strpos(s.setting, '=') + 1) as v
                   from pg_catalog.pg_db_role_setting d
                   cross join lateral pg_catalog.unnest(d.setconfig) as s(setting)
                   where d.setrole = (select oid from pg_catalog.pg_roles where rolname = current_user)
                     and d.setdatabase in (0, (select oid from pg_catalog.pg_database where datname = current_database()))
                 )
                 select distinct on (k) pg_catalog.substr(k, 7), v from kv
                 where k = any($1) and v is not null
                 order by k, setdatabase desc",
                &[&keys],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Which of `relations` (`schema.name`) exist, read from the catalog (so a schema the
    /// login role may not use counts too, without a permission error).
    pub async fn existing_relations(&self, relations: &[&str]) -> Result<Vec<String>, DbError> {
        let client = self.client().await?;
        let wanted: Vec<String> = relations.iter().map(|r| r.to_string()).collect();
        let rows = client
            .query(
                "select n.nspname::text || '.' || c.relname::text
                 from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
                 where n.nspname::text || '.' || c.relname::text = any($1)",
                &[&wanted],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// A pooled connection as the pool's login role, for work outside a request.
    pub async fn client(&self) -> Result<Object, DbError> {
        self.check_up()?;
        Ok(self.pool.get().await?)
    }

    /// 200-or-503 health: PostgreSQL answers a trivial query.
    pub async fn ping(&self) -> Result<(), DbError> {
        let client = self.client().await?;
        client.simple_query("select 1").await?;
        Ok(())
    }

    /// The `set_config` pairs of a request: search_path, the role's own settings, role,
    /// claims, the vault key for privileged roles, then the request's GUCs.
    fn settings_pairs(&self, settings: &TxSettings) -> (Vec<String>, Vec<String>) {
        let mut keys = Vec::with_capacity(settings.gucs.len() + 6);
        let mut values = Vec::with_capacity(settings.gucs.len() + 6);
        keys.push("search_path".to_string());
        values.push(
            settings
                .search_path
                .clone()
                .unwrap_or_else(|| self.inner.search_path.clone()),
        );
        if let Some(rs) = self
            .inner
            .role_settings
            .read()
            .expect("role settings lock")
            .get(&settings.role)
        {
            for (k, v) in rs {
                keys.push(k.clone());
                values.push(v.clone());
            }
        }
        keys.push("role".into());
        values.push(settings.role.clone());
        keys.push("request.jwt.claims".into());
        values.push(settings.claims.clone());
        if let (Some(key), true) = (
            &self.inner.vault_key,
            VAULT_ROLES.contains(&settings.role.as_str()),
        ) {
            keys.push("agencyflow.vault_key".into());
            values.push(key.clone());
        }
        for (k, v) in &settings.gucs {
            keys.push(k.clone());
            values.push(v.clone());
        }
        (keys, values)
    }

    /// Starts a request transaction. Nothing is sent until the first statement, which goes
    /// out pipelined with `BEGIN` and the settings.
    pub async fn begin(&self, settings: &TxSettings) -> Result<ClaimsTxn, DbError> {
        let client = self.client().await?;
        let (keys, values) = self.settings_pairs(settings);
        let begin = if settings.read_only {
            "begin isolation level read committed read only"
        } else {
            "begin isolation level read committed"
        };
        Ok(ClaimsTxn {
            client: Some(client),
            pending: Some(Setup {
                begin,
                keys,
                values,
                pre: settings.pre_request.clone(),
            }),
            open: false,
            inner: self.inner.clone(),
        })
    }

    /// A connection taken out of the pool for good, with a transaction begun under
    /// `settings` (role, claims, search_path... as [`Db::begin`]). For SQL typed by an
    /// operator (the console's SQL page): whatever session state it leaves behind (`SET`,
    /// `RESET ROLE`, temporary tables, a `COMMIT` that ends the transaction early) dies with
    /// the connection when the caller drops it, and never reaches a pooled request.
    pub async fn begin_dedicated(
        &self,
        settings: &TxSettings,
    ) -> Result<deadpool_postgres::ClientWrapper, DbError> {
        let client = Object::take(self.client().await?);
        let (keys, values) = self.settings_pairs(settings);
        client
            .batch_execute(if settings.read_only {
                "begin isolation level read committed read only"
            } else {
                "begin isolation level read committed"
            })
            .await?;
        client.query(SETUP_SQL, &[&keys, &values]).await?;
        pre_request(&client, settings.pre_request.as_deref()).await?;
        Ok(client)
    }

    /// A whole request transaction in one round trip and one Sync: the settings, then `sql`
    /// (prepared once per connection; parameters as text), committed together, or rolled
    /// back together when either fails. For requests whose outcome cannot depend on commit
    /// versus rollback. Values come back as text.
    pub async fn query_and_commit(
        &self,
        settings: &TxSettings,
        sql: &str,
        params: &[Option<String>],
    ) -> Result<TextRows, DbError> {
        let (mut keys, mut values) = self.settings_pairs(settings);
        if settings.read_only {
            // Going read-only is allowed at any point of a transaction (unlike the reverse).
            keys.push("transaction_read_only".into());
            values.push("on".into());
        }
        self.check_up()?;
        let mut conn = self.pipe.get().await.map_err(|e| match e {
            deadpool::managed::PoolError::Backend(e) => e,
            other => DbError::Unavailable(other.to_string()),
        })?;
        conn.query_and_commit(&keys, &values, settings.pre_request.as_deref(), sql, params)
            .await
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The state of the one-Sync read pool (see [`Db::query_and_commit`]).
    pub fn read_pool_status(&self) -> deadpool::Status {
        self.pipe.status()
    }
}

enum Stmt<'a> {
    Query(&'a tokio_postgres::Statement, &'a [&'a (dyn ToSql + Sync)]),
    Execute(&'a tokio_postgres::Statement, &'a [&'a (dyn ToSql + Sync)]),
    Typed(&'a str, &'a [(&'a (dyn ToSql + Sync), Type)]),
}

enum Outcome {
    Rows(Vec<Row>),
    Count(u64),
}

impl Outcome {
    fn rows(self) -> Vec<Row> {
        match self {
            Outcome::Rows(r) => r,
            Outcome::Count(_) => Vec::new(),
        }
    }
}

impl Stmt<'_> {
    async fn run(&self, client: &Object) -> Result<Outcome, tokio_postgres::Error> {
        match self {
            Stmt::Query(s, p) => client.query(*s, p).await.map(Outcome::Rows),
            Stmt::Execute(s, p) => client.execute(*s, p).await.map(Outcome::Count),
            Stmt::Typed(sql, p) => client.query_typed(sql, p).await.map(Outcome::Rows),
        }
    }
}

struct Setup {
    begin: &'static str,
    keys: Vec<String>,
    values: Vec<String>,
    /// The pre-request statement, sent right after the settings.
    pre: Option<Arc<str>>,
}

/// Sends the pre-request statement (when there is one) as part of a pipeline: called in
/// `join!` order after BEGIN and the settings, so it goes out right behind them.
async fn pre_request(
    client: &tokio_postgres::Client,
    pre: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    match pre {
        Some(sql) => client.batch_execute(sql).await,
        None => Ok(()),
    }
}

/// One request's transaction. Dropped without `commit`, it is rolled back.
pub struct ClaimsTxn {
    client: Option<Object>,
    pending: Option<Setup>,
    open: bool,
    inner: Arc<Inner>,
}

impl ClaimsTxn {
    /// Sends `BEGIN` and the settings (while still pending) pipelined with `stmt`.
    async fn run(&mut self, stmt: Stmt<'_>) -> Result<Outcome, DbError> {
        let client = self.client.as_ref().expect("transaction already finished");
        let Some(setup) = self.pending.take() else {
            return Ok(stmt.run(client).await?);
        };
        let setup_stmt = client.prepare_cached(SETUP_SQL).await?;
        self.open = true;
        let setup_params: [&(dyn ToSql + Sync); 2] = [&setup.keys, &setup.values];
        let (b, s, p, q) = futures::join!(
            client.batch_execute(setup.begin),
            client.query(&setup_stmt, &setup_params),
            pre_request(client, setup.pre.as_deref()),
            stmt.run(client)
        );
        b?;
        s?;
        p?;
        Ok(q?)
    }

    /// Prepares `sql` (cached per connection). The first statement of a transaction is
    /// prepared after the role switch, pipelined with it: names are resolved, and
    /// privileges checked, as the request's role.
    async fn prepare(&mut self, sql: &str) -> Result<tokio_postgres::Statement, DbError> {
        let client = self.client.as_ref().expect("transaction already finished");
        let Some(setup) = self.pending.take() else {
            return Ok(client.prepare_cached(sql).await?);
        };
        let setup_stmt = client.prepare_cached(SETUP_SQL).await?;
        self.open = true;
        let setup_params: [&(dyn ToSql + Sync); 2] = [&setup.keys, &setup.values];
        let (b, s, r, p) = futures::join!(
            client.batch_execute(setup.begin),
            client.query(&setup_stmt, &setup_params),
            pre_request(client, setup.pre.as_deref()),
            client.prepare_cached(sql)
        );
        b?;
        s?;
        r?;
        Ok(p?)
    }

    /// Runs a statement (prepared and cached per connection).
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, DbError> {
        let stmt = self.prepare(sql).await?;
        self.run(Stmt::Query(&stmt, params))
            .await
            .map(Outcome::rows)
    }

    /// Runs a one-off statement with explicitly typed parameters; as the first statement
    /// of the transaction it goes out in the same round trip as `BEGIN` and the settings.
    /// The REST layer's statements vary per request, so they are not prepared separately.
    pub async fn query_typed(
        &mut self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, DbError> {
        self.run(Stmt::Typed(sql, params)).await.map(Outcome::rows)
    }

    /// Runs a one-off typed statement and commits, all in one round trip when it is the
    /// transaction's first statement: for read-only requests, whose outcome cannot depend
    /// on commit versus rollback.
    pub async fn query_typed_and_commit(
        mut self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, DbError> {
        let client = self.client.take().expect("transaction already finished");
        let Some(setup) = self.pending.take() else {
            let rows = client.query_typed(sql, params).await;
            let done = client.batch_execute("commit").await;
            let rows = rows?;
            done?;
            return Ok(rows);
        };
        let setup_stmt = client.prepare_cached(SETUP_SQL).await?;
        let setup_params: [&(dyn ToSql + Sync); 2] = [&setup.keys, &setup.values];
        // A failed statement aborts the transaction; the pipelined COMMIT then rolls back.
        let (b, s, p, q, c) = futures::join!(
            client.batch_execute(setup.begin),
            client.query(&setup_stmt, &setup_params),
            pre_request(&client, setup.pre.as_deref()),
            client.query_typed(sql, params),
            client.batch_execute("commit")
        );
        b?;
        s?;
        p?;
        let rows = q?;
        c?;
        Ok(rows)
    }

    /// Runs `sql` (all parameters TEXT) as a statement prepared once per connection. When it
    /// is already prepared and is the transaction's first statement, BEGIN, the settings, the
    /// statement and (with `commit`) COMMIT go out in one round trip; the first time, the
    /// prepare rides with BEGIN and the settings, so names resolve as the request's role.
    async fn cached(
        &mut self,
        sql: &str,
        params: &[Option<String>],
        commit: bool,
    ) -> Result<Vec<Row>, DbError> {
        let client = self.client.as_ref().expect("transaction already finished");
        let values: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let known = self.inner.prepared.get(client, sql);
        let setup = self.pending.take();
        let setup_stmt = match &setup {
            Some(_) => Some(client.prepare_cached(SETUP_SQL).await?),
            None => None,
        };
        self.open = true;
        let stmt = match known {
            Some(stmt) => stmt,
            None => {
                let types = vec![Type::TEXT; params.len()];
                let stmt = match (&setup, &setup_stmt) {
                    (Some(setup), Some(ss)) => {
                        let sp: [&(dyn ToSql + Sync); 2] = [&setup.keys, &setup.values];
                        let (b, s, r, p) = futures::join!(
                            client.batch_execute(setup.begin),
                            client.query(ss, &sp),
                            pre_request(client, setup.pre.as_deref()),
                            client.prepare_typed(sql, &types)
                        );
                        b?;
                        s?;
                        r?;
                        p?
                    }
                    _ => client.prepare_typed(sql, &types).await?,
                };
                self.inner.prepared.put(client, sql, stmt.clone());
                let (q, c) = futures::join!(client.query(&stmt, &values), async {
                    if commit {
                        client.batch_execute("commit").await
                    } else {
                        Ok(())
                    }
                });
                if commit {
                    self.open = false;
                }
                let rows = q?;
                c?;
                return Ok(rows);
            }
        };
        let sp: Option<[&(dyn ToSql + Sync); 2]> = setup
            .as_ref()
            .map(|s| [&s.keys as &(dyn ToSql + Sync), &s.values]);
        let (b, s, p, q, c) = futures::join!(
            async {
                match &setup {
                    Some(setup) => client.batch_execute(setup.begin).await,
                    None => Ok(()),
                }
            },
            async {
                match (&setup_stmt, &sp) {
                    (Some(ss), Some(sp)) => client.query(ss, sp).await.map(|_| ()),
                    _ => Ok(()),
                }
            },
            pre_request(client, setup.as_ref().and_then(|s| s.pre.as_deref())),
            client.query(&stmt, &values),
            async {
                if commit {
                    client.batch_execute("commit").await
                } else {
                    Ok(())
                }
            }
        );
        if commit {
            self.open = false;
        }
        b?;
        s?;
        p?;
        let rows = q?;
        c?;
        Ok(rows)
    }

    /// [`Self::cached`] within the transaction.
    pub async fn query_cached(
        &mut self,
        sql: &str,
        params: &[Option<String>],
    ) -> Result<Vec<Row>, DbError> {
        self.cached(sql, params, false).await
    }

    /// [`Self::cached`], then COMMIT in the same round trip: for read-only requests, whose
    /// outcome cannot depend on commit versus rollback.
    pub async fn query_cached_and_commit(
        mut self,
        sql: &str,
        params: &[Option<String>],
    ) -> Result<Vec<Row>, DbError> {
        let rows = self.cached(sql, params, true).await;
        // The COMMIT was sent either way (a failed statement turns it into a rollback).
        self.open = false;
        self.client.take();
        rows
    }

    pub async fn query_one(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, DbError> {
        let rows = self.query(sql, params).await?;
        rows.into_iter()
            .next()
            .ok_or_else(|| DbError::Other("query returned no rows".into()))
    }

    pub async fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, DbError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// Runs a statement and returns the number of rows it affected.
    pub async fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, DbError> {
        let stmt = self.prepare(sql).await?;
        match self.run(Stmt::Execute(&stmt, params)).await? {
            Outcome::Count(n) => Ok(n),
            Outcome::Rows(r) => Ok(r.len() as u64),
        }
    }

    pub async fn commit(mut self) -> Result<(), DbError> {
        self.finish("commit").await
    }

    pub async fn rollback(mut self) -> Result<(), DbError> {
        self.finish("rollback").await
    }

    async fn finish(&mut self, how: &str) -> Result<(), DbError> {
        let client = self.client.take().expect("transaction already finished");
        if self.open {
            client.batch_execute(how).await?;
        }
        Ok(())
    }
}

impl Drop for ClaimsTxn {
    fn drop(&mut self) {
        if let (Some(client), true) = (self.client.take(), self.open) {
            // The connection goes back to the pool only after the rollback completes. A
            // request abandoned at its deadline may have been waiting on a database that no
            // longer answers on this connection (a blackholed host): if the rollback does not
            // come back in time, the connection leaves the pool and closes, so the pool's slot
            // is free for a fresh connection instead of held by a dead one forever.
            let bound = self.inner.abandon_timeout;
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    match tokio::time::timeout(bound, client.batch_execute("rollback")).await {
                        Ok(Ok(())) => {}
                        _ => drop(Object::take(client)),
                    }
                });
            }
        }
    }
}
