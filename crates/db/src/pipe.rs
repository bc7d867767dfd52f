//! A wire-level connection for the hottest path: a request's settings and its one statement
//! go to PostgreSQL under a **single Sync**, so they run as one implicit transaction that
//! commits (or, after an error, rolls back) at that Sync, in one round trip.
//!
//! tokio-postgres ends every statement with its own Sync, so `BEGIN`, the settings, the
//! statement and `COMMIT` cost four ReadyForQuery flushes from the backend and as many
//! wake-ups on both sides. Measured on the REST primary-key read (BENCHMARKS.md), PostgreSQL
//! spent ~1.6x the CPU per request that the same statements cost it under one Sync.
//!
//! The protocol itself comes from `postgres-protocol` (the message codecs tokio-postgres is
//! built on); this module only sequences messages. Statements are prepared once per
//! connection (Parse + Describe ride in the same pipeline the first time), parameters are
//! sent as text, results come back as text. A connection whose request was abandoned halfway
//! (its future dropped) is never reused: the pool discards it.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{self, sasl};
use postgres_protocol::message::{backend::Message, frontend};
use postgres_protocol::IsNull;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::config::Host;
use tokio_postgres::types::{ToSql, Type};

use crate::{DbError, PgError};

/// The settings statement: `set_config(k, v, true)` for each pair, local to the transaction.
pub(crate) const SETUP_SQL: &str =
    "select pg_catalog.set_config(k, v, true) from unnest($1::text[], $2::text[]) as g(k, v)";
const SETUP_NAME: &str = "af_setup";
/// Statements kept per connection; past it the connection is retired and a fresh one opened.
const STATEMENTS_PER_CONNECTION: usize = 512;
const TEXT_OID: u32 = 25;
const TEXT_ARRAY_OID: u32 = 1009;

/// The rows of one statement, every value as PostgreSQL's text output.
#[derive(Debug, Clone, Default)]
pub struct TextRows {
    pub columns: Arc<[String]>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl TextRows {
    /// The index of the column called `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }
}

pub(crate) enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Stream {
    async fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(b).await,
            Stream::Unix(s) => s.write_all(b).await,
        }
    }

    pub(crate) async fn read_buf(&mut self, b: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read_buf(b).await,
            Stream::Unix(s) => s.read_buf(b).await,
        }
    }
}

struct Prepared {
    name: String,
    columns: Arc<[String]>,
}

/// One connection as the pool's login role.
pub struct PipeConn {
    pub(crate) stream: Stream,
    pub(crate) rbuf: BytesMut,
    pub(crate) wbuf: BytesMut,
    statements: HashMap<String, Prepared>,
    setup_prepared: bool,
    /// The pre-request statement prepared on this connection: (SQL, name).
    pre_prepared: Option<(String, String)>,
    next_id: u64,
    /// A request was written and its ReadyForQuery not yet read: if still set when the
    /// connection returns to the pool, the request was abandoned and the state is unknown.
    busy: bool,
    /// Too many statements, or a protocol surprise: not to be reused.
    retire: bool,
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> DbError {
    DbError::Unavailable(e.to_string())
}

pub(crate) fn protocol(what: &str) -> DbError {
    DbError::Other(format!("PostgreSQL protocol: {what}"))
}

pub(crate) fn pg_error(
    fields: &mut postgres_protocol::message::backend::ErrorFields<'_>,
) -> DbError {
    let mut e = PgError {
        code: String::new(),
        message: String::new(),
        detail: None,
        hint: None,
    };
    while let Ok(Some(f)) = fields.next() {
        let v = String::from_utf8_lossy(f.value_bytes()).into_owned();
        match f.type_() {
            b'C' => e.code = v,
            b'M' => e.message = v,
            b'D' => e.detail = Some(v),
            b'H' => e.hint = Some(v),
            _ => {}
        }
    }
    DbError::from_pg(e)
}

impl PipeConn {
    /// Connects and authenticates as tokio-postgres would with the same configuration
    /// (hosts in order, Unix sockets or TCP; trust, password, MD5 or SCRAM-SHA-256; no TLS,
    /// like the rest of the pool).
    pub async fn connect(config: &tokio_postgres::Config) -> Result<PipeConn, DbError> {
        Self::connect_with(config, &[]).await
    }

    /// [`PipeConn::connect`] with extra startup parameters (`replication=database` for
    /// [`crate::replication`]).
    pub(crate) async fn connect_with(
        config: &tokio_postgres::Config,
        startup: &[(&str, &str)],
    ) -> Result<PipeConn, DbError> {
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(DbError::Other(
                "sslmode=require: agencyflow connects to PostgreSQL without TLS".into(),
            ));
        }
        let mut last = None;
        let ports = config.get_ports();
        for (i, host) in config.get_hosts().iter().enumerate() {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            let attempt = async {
                match host {
                    Host::Tcp(h) => {
                        let s = tokio::net::TcpStream::connect((h.as_str(), port)).await?;
                        s.set_nodelay(true)?;
                        Ok::<_, std::io::Error>(Stream::Tcp(s))
                    }
                    Host::Unix(dir) => {
                        let path: PathBuf = dir.join(format!(".s.PGSQL.{port}"));
                        Ok(Stream::Unix(tokio::net::UnixStream::connect(path).await?))
                    }
                }
            };
            let stream = match config.get_connect_timeout() {
                Some(t) => tokio::time::timeout(*t, attempt)
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
                None => attempt.await,
            };
            match stream {
                Ok(stream) => {
                    let mut conn = PipeConn {
                        stream,
                        rbuf: BytesMut::with_capacity(8192),
                        wbuf: BytesMut::with_capacity(4096),
                        statements: HashMap::new(),
                        setup_prepared: false,
                        pre_prepared: None,
                        next_id: 0,
                        busy: false,
                        retire: false,
                    };
                    conn.startup(config, startup).await?;
                    return Ok(conn);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(unavailable(match last {
            Some(e) => format!("connecting to PostgreSQL: {e}"),
            None => "connecting to PostgreSQL: no host configured".into(),
        }))
    }

    /// Whether the pool may hand this connection out again: no request abandoned on it, not
    /// retired, and not closed by PostgreSQL while it sat idle (a terminated backend sends
    /// its FATAL and closes; a non-blocking read sees either, and costs no system call while
    /// the reactor has seen nothing arrive).
    pub fn reusable(&self) -> bool {
        if self.busy || self.retire {
            return false;
        }
        let mut byte = [0u8; 1];
        let read = match &self.stream {
            Stream::Tcp(s) => s.try_read(&mut byte),
            Stream::Unix(s) => s.try_read(&mut byte),
        };
        matches!(read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    pub(crate) async fn flush(&mut self) -> Result<(), DbError> {
        let r = self.stream.write_all(&self.wbuf).await;
        self.wbuf.clear();
        r.map_err(unavailable)
    }

    pub(crate) async fn next_message(&mut self) -> Result<Message, DbError> {
        loop {
            if let Some(m) = Message::parse(&mut self.rbuf).map_err(unavailable)? {
                return Ok(m);
            }
            if self
                .stream
                .read_buf(&mut self.rbuf)
                .await
                .map_err(unavailable)?
                == 0
            {
                return Err(unavailable("PostgreSQL closed the connection"));
            }
        }
    }

    async fn startup(
        &mut self,
        config: &tokio_postgres::Config,
        extra: &[(&str, &str)],
    ) -> Result<(), DbError> {
        let user = config
            .get_user()
            .ok_or_else(|| DbError::Other("database URL has no user".into()))?;
        let mut params = vec![("client_encoding", "UTF8"), ("user", user)];
        if let Some(db) = config.get_dbname() {
            params.push(("database", db));
        }
        if let Some(o) = config.get_options() {
            params.push(("options", o));
        }
        if let Some(a) = config.get_application_name() {
            params.push(("application_name", a));
        }
        params.extend_from_slice(extra);
        frontend::startup_message(params, &mut self.wbuf).map_err(unavailable)?;
        self.flush().await?;
        let password = || {
            config.get_password().ok_or_else(|| {
                DbError::Other("PostgreSQL asks for a password; the database URL has none".into())
            })
        };
        loop {
            match self.next_message().await? {
                Message::AuthenticationOk => break,
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(password()?, &mut self.wbuf).map_err(unavailable)?;
                    self.flush().await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = authentication::md5_hash(user.as_bytes(), password()?, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.wbuf)
                        .map_err(unavailable)?;
                    self.flush().await?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut scram = false;
                    while let Some(m) = mechanisms.next().map_err(unavailable)? {
                        scram |= m == sasl::SCRAM_SHA_256;
                    }
                    if !scram {
                        return Err(DbError::Other(
                            "PostgreSQL offers no SASL mechanism we speak".into(),
                        ));
                    }
                    let mut s =
                        sasl::ScramSha256::new(password()?, sasl::ChannelBinding::unsupported());
                    frontend::sasl_initial_response(
                        sasl::SCRAM_SHA_256,
                        s.message(),
                        &mut self.wbuf,
                    )
                    .map_err(unavailable)?;
                    self.flush().await?;
                    match self.next_message().await? {
                        Message::AuthenticationSaslContinue(b) => {
                            s.update(b.data()).map_err(unavailable)?
                        }
                        Message::ErrorResponse(b) => return Err(pg_error(&mut b.fields())),
                        _ => return Err(protocol("unexpected message during SCRAM")),
                    }
                    frontend::sasl_response(s.message(), &mut self.wbuf).map_err(unavailable)?;
                    self.flush().await?;
                    match self.next_message().await? {
                        Message::AuthenticationSaslFinal(b) => {
                            s.finish(b.data()).map_err(unavailable)?
                        }
                        Message::ErrorResponse(b) => return Err(pg_error(&mut b.fields())),
                        _ => return Err(protocol("unexpected message during SCRAM")),
                    }
                }
                Message::ErrorResponse(b) => return Err(pg_error(&mut b.fields())),
                _ => {
                    return Err(DbError::Other(
                        "unsupported PostgreSQL authentication method".into(),
                    ))
                }
            }
        }
        loop {
            match self.next_message().await? {
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ErrorResponse(b) => return Err(pg_error(&mut b.fields())),
                _ => {} // ParameterStatus, BackendKeyData, notices
            }
        }
    }

    /// Runs the settings statement (`keys[i] = values[i]`, transaction-local), then the
    /// `pre` statement when there is one (PostgREST's pre-request), then `sql` with text
    /// `params`, as one implicit transaction under one Sync: all commit together, and an
    /// error in any rolls them all back. One write, one round trip.
    pub async fn query_and_commit(
        &mut self,
        keys: &[String],
        values: &[String],
        pre: Option<&str>,
        sql: &str,
        params: &[Option<String>],
    ) -> Result<TextRows, DbError> {
        let encode = |e| protocol(&format!("encoding a message: {e}"));
        // Nothing half-encoded by an earlier call that failed before sending may go out.
        self.wbuf.clear();
        // The ParseCompletes to expect, in order.
        let mut parses: std::collections::VecDeque<Parsed> = std::collections::VecDeque::new();
        if !self.setup_prepared {
            frontend::parse(
                SETUP_NAME,
                SETUP_SQL,
                [TEXT_ARRAY_OID, TEXT_ARRAY_OID],
                &mut self.wbuf,
            )
            .map_err(encode)?;
            parses.push_back(Parsed::Setup);
        }
        let setup_values: [&[String]; 2] = [keys, values];
        frontend::bind(
            "",
            SETUP_NAME,
            [1i16],
            setup_values,
            |v, buf| {
                v.to_sql(&Type::TEXT_ARRAY, buf)?;
                Ok(IsNull::No)
            },
            [0i16],
            &mut self.wbuf,
        )
        .map_err(|_| protocol("encoding the settings"))?;
        frontend::execute("", 0, &mut self.wbuf).map_err(encode)?;

        let mut new_pre = None;
        if let Some(pre) = pre {
            let name = match &self.pre_prepared {
                Some((known, name)) if known == pre => name.clone(),
                _ => {
                    self.next_id += 1;
                    let name = format!("af_{}", self.next_id);
                    frontend::parse(&name, pre, std::iter::empty::<u32>(), &mut self.wbuf)
                        .map_err(encode)?;
                    parses.push_back(Parsed::Pre);
                    new_pre = Some(name.clone());
                    name
                }
            };
            frontend::bind(
                "",
                &name,
                std::iter::empty::<i16>(),
                std::iter::empty::<Option<String>>(),
                |_: Option<String>, _: &mut BytesMut| Ok(IsNull::Yes),
                [0i16],
                &mut self.wbuf,
            )
            .map_err(|_| protocol("encoding the pre-request"))?;
            frontend::execute("", 0, &mut self.wbuf).map_err(encode)?;
        }
        // Index of the request's statement among the CommandCompletes.
        let main = if pre.is_some() { 2 } else { 1 };

        let (name, new) = match self.statements.get(sql) {
            Some(p) => (p.name.clone(), false),
            None => {
                self.next_id += 1;
                let name = format!("af_{}", self.next_id);
                frontend::parse(
                    &name,
                    sql,
                    std::iter::repeat_n(TEXT_OID, params.len()),
                    &mut self.wbuf,
                )
                .map_err(encode)?;
                frontend::describe(b'S', &name, &mut self.wbuf).map_err(encode)?;
                parses.push_back(Parsed::Main);
                (name, true)
            }
        };
        frontend::bind(
            "",
            &name,
            [0i16],
            params,
            |p, buf| match p {
                Some(s) => {
                    buf.extend_from_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                None => Ok(IsNull::Yes),
            },
            [0i16],
            &mut self.wbuf,
        )
        .map_err(|_| protocol("encoding the parameters"))?;
        frontend::execute("", 0, &mut self.wbuf).map_err(encode)?;
        frontend::sync(&mut self.wbuf);

        self.busy = true;
        self.flush().await?;

        // Replies arrive in message order: [ParseComplete (setup)], BindComplete, rows,
        // CommandComplete; then the pre-request's [ParseComplete], BindComplete, rows,
        // CommandComplete; [ParseComplete, ParameterDescription, RowDescription | NoData],
        // BindComplete, rows, CommandComplete; ReadyForQuery. After an error, PostgreSQL
        // skips to the Sync.
        let mut parsed = false;
        let mut completes = 0;
        let mut error = None;
        let mut columns: Option<Arc<[String]>> = None;
        let mut rows = Vec::new();
        loop {
            match self.next_message().await? {
                Message::ParseComplete => match parses.pop_front() {
                    Some(Parsed::Setup) => self.setup_prepared = true,
                    Some(Parsed::Pre) => {
                        if let (Some(pre), Some(name)) = (pre, new_pre.take()) {
                            self.pre_prepared = Some((pre.to_string(), name));
                        }
                    }
                    Some(Parsed::Main) => parsed = true,
                    None => return Err(protocol("an unexpected ParseComplete")),
                },
                Message::NoData => columns = Some(Arc::from(Vec::new())),
                Message::RowDescription(body) => {
                    let names: Vec<String> = body
                        .fields()
                        .map(|f| Ok(f.name().to_string()))
                        .collect()
                        .map_err(unavailable)?;
                    columns = Some(names.into());
                }
                Message::DataRow(body) if completes == main => {
                    let buf = body.buffer();
                    let row = body
                        .ranges()
                        .map(|r| Ok(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned())))
                        .collect()
                        .map_err(unavailable)?;
                    rows.push(row);
                }
                Message::CommandComplete(_) | Message::EmptyQueryResponse => completes += 1,
                // The first error is the one that stopped the pipeline.
                Message::ErrorResponse(b) if error.is_none() => {
                    error = Some(pg_error(&mut b.fields()));
                }
                Message::ReadyForQuery(_) => break,
                _ => {} // BindComplete, ParameterDescription, DataRows of the settings and the pre-request, notices
            }
        }
        self.busy = false;
        // A statement whose Parse failed (or never ran, after an earlier error) is not kept.
        if let (true, true, Some(columns)) = (new, parsed, &columns) {
            let columns = columns.clone();
            self.statements
                .insert(sql.to_string(), Prepared { name, columns });
            self.retire |= self.statements.len() >= STATEMENTS_PER_CONNECTION;
        }
        if let Some(e) = error {
            return Err(e);
        }
        let columns = match columns {
            Some(c) => c,
            None => self
                .statements
                .get(sql)
                .map(|p| p.columns.clone())
                .ok_or_else(|| protocol("no description of a prepared statement"))?,
        };
        Ok(TextRows { columns, rows })
    }
}

/// Which statement a ParseComplete answers.
enum Parsed {
    Setup,
    Pre,
    Main,
}

/// deadpool's manager for [`PipeConn`]s.
pub struct PipeManager {
    pub config: tokio_postgres::Config,
}

impl deadpool::managed::Manager for PipeManager {
    type Type = PipeConn;
    type Error = DbError;

    async fn create(&self) -> Result<PipeConn, DbError> {
        PipeConn::connect(&self.config).await
    }

    async fn recycle(
        &self,
        conn: &mut PipeConn,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<DbError> {
        if conn.reusable() {
            Ok(())
        } else {
            Err(deadpool::managed::RecycleError::message(
                "abandoned mid-request, retired, or closed by PostgreSQL",
            ))
        }
    }
}

pub type PipePool = deadpool::managed::Pool<PipeManager>;
