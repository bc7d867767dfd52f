//! A tiny SMTP server for tests: speaks enough of RFC 5321 for a real client (EHLO/HELO,
//! AUTH PLAIN/LOGIN, MAIL FROM, RCPT TO, DATA, RSET, NOOP, QUIT) on a local port and keeps
//! every message it accepts. It can answer slowly (a delayed greeting) or refuse the first
//! transactions with a temporary error, to test that the server queues and retries.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// How the sink behaves.
#[derive(Debug, Clone, Default)]
pub struct SinkOptions {
    /// Wait this long after accepting a connection before the 220 greeting.
    pub greeting_delay: Duration,
    /// Refuse this many transactions (`MAIL FROM`) with `451` before accepting any.
    pub reject_first: usize,
}

/// A message the sink accepted.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// The message as received (headers and encoded body), dot-unstuffed.
    pub raw: String,
    pub subject: String,
    /// The `From:` header.
    pub from_header: String,
    /// The body, decoded (7bit, quoted-printable or base64).
    pub body: String,
    /// `AUTH` credentials the client gave on this connection, `user:pass`.
    pub auth: Option<String>,
}

impl Mail {
    /// The first `href="..."` of the body, HTML entities undone.
    pub fn link(&self) -> Option<String> {
        let start = self.body.find("href=\"")? + 6;
        let end = self.body[start..].find('"')? + start;
        Some(self.body[start..end].replace("&amp;", "&"))
    }

    /// The first run of exactly six digits in the body that is not part of a longer number.
    pub fn code(&self) -> Option<String> {
        let b = self.body.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i].is_ascii_digit() {
                let s = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                let before = if s > 0 { b[s - 1] } else { b' ' };
                let after = b.get(i).copied().unwrap_or(b' ');
                if i - s == 6
                    && !before.is_ascii_alphanumeric()
                    && !after.is_ascii_alphanumeric()
                    && before != b'='
                {
                    return Some(self.body[s..i].to_string());
                }
            } else {
                i += 1;
            }
        }
        None
    }
}

/// A running sink.
pub struct SmtpSink {
    pub port: u16,
    messages: Arc<Mutex<Vec<Mail>>>,
    transactions: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        Self::start_with(SinkOptions::default()).await
    }

    pub async fn start_with(opts: SinkOptions) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let port = listener.local_addr().expect("addr").port();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let transactions = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (m, t, c) = (messages.clone(), transactions.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let (m, t, opts) = (m.clone(), t.clone(), opts.clone());
                tokio::spawn(async move {
                    let _ = session(stream, m, t, opts).await;
                });
            }
        });
        SmtpSink {
            port,
            messages,
            transactions,
            connections,
        }
    }

    /// Every message accepted so far.
    pub fn messages(&self) -> Vec<Mail> {
        self.messages.lock().unwrap().clone()
    }

    /// Transactions begun (`MAIL FROM`), refused ones included.
    pub fn transactions(&self) -> usize {
        self.transactions.load(Ordering::SeqCst)
    }

    /// Connections accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Waits (polling, up to `within`) for a message matching `pred`; panics naming what
    /// arrived meanwhile.
    pub async fn wait_for(&self, within: Duration, pred: impl Fn(&Mail) -> bool) -> Mail {
        let deadline = Instant::now() + within;
        loop {
            if let Some(m) = self.messages().into_iter().find(|m| pred(m)) {
                return m;
            }
            if Instant::now() >= deadline {
                let got: Vec<(Vec<String>, String)> = self
                    .messages()
                    .into_iter()
                    .map(|m| (m.to, m.subject))
                    .collect();
                panic!("no matching email within {within:?}; received: {got:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the `n`th (1-based) message to `to` whose subject contains `subject`.
    pub async fn wait_for_mail_to(&self, to: &str, subject: &str) -> Mail {
        self.wait_for(Duration::from_secs(30), |m| {
            m.to.iter().any(|t| t.eq_ignore_ascii_case(to)) && m.subject.contains(subject)
        })
        .await
    }
}

async fn session(
    stream: TcpStream,
    messages: Arc<Mutex<Vec<Mail>>>,
    transactions: Arc<AtomicUsize>,
    opts: SinkOptions,
) -> std::io::Result<()> {
    tokio::time::sleep(opts.greeting_delay).await;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 sink.test ESMTP ready\r\n").await?;
    let (mut from, mut to, mut auth) = (String::new(), Vec::new(), None);
    let mut line = String::new();
    let b64 = base64::engine::general_purpose::STANDARD;
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            w.write_all(
                b"250-sink.test\r\n250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
            )
            .await?;
        } else if upper.starts_with("HELO") {
            w.write_all(b"250 sink.test\r\n").await?;
        } else if upper.starts_with("AUTH PLAIN") {
            let arg = cmd[10..].trim().to_string();
            let arg = if arg.is_empty() {
                w.write_all(b"334 \r\n").await?;
                line.clear();
                r.read_line(&mut line).await?;
                line.trim().to_string()
            } else {
                arg
            };
            let decoded = b64.decode(arg).unwrap_or_default();
            let parts: Vec<String> = decoded
                .split(|b| *b == 0)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            auth = Some(format!(
                "{}:{}",
                parts.get(1).cloned().unwrap_or_default(),
                parts.get(2).cloned().unwrap_or_default()
            ));
            w.write_all(b"235 2.7.0 Authentication successful\r\n")
                .await?;
        } else if upper.starts_with("AUTH LOGIN") {
            w.write_all(b"334 VXNlcm5hbWU6\r\n").await?;
            line.clear();
            r.read_line(&mut line).await?;
            let user =
                String::from_utf8_lossy(&b64.decode(line.trim()).unwrap_or_default()).into_owned();
            w.write_all(b"334 UGFzc3dvcmQ6\r\n").await?;
            line.clear();
            r.read_line(&mut line).await?;
            let pass =
                String::from_utf8_lossy(&b64.decode(line.trim()).unwrap_or_default()).into_owned();
            auth = Some(format!("{user}:{pass}"));
            w.write_all(b"235 2.7.0 Authentication successful\r\n")
                .await?;
        } else if upper.starts_with("MAIL FROM:") {
            let n = transactions.fetch_add(1, Ordering::SeqCst);
            if n < opts.reject_first {
                w.write_all(b"451 4.3.0 Temporary failure, try again later\r\n")
                    .await?;
                continue;
            }
            from = angle(&cmd[10..]);
            to.clear();
            w.write_all(b"250 2.1.0 Ok\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            to.push(angle(&cmd[8..]));
            w.write_all(b"250 2.1.5 Ok\r\n").await?;
        } else if upper == "DATA" {
            w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await?;
            let mut raw = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                let l = line.trim_end_matches(['\r', '\n']);
                if l == "." {
                    break;
                }
                raw.push_str(l.strip_prefix('.').unwrap_or(l));
                raw.push_str("\r\n");
            }
            let (subject, from_header, body) = parse_message(&raw);
            messages.lock().unwrap().push(Mail {
                from: from.clone(),
                to: to.clone(),
                raw,
                subject,
                from_header,
                body,
                auth: auth.clone(),
            });
            w.write_all(b"250 2.0.0 Ok: queued\r\n").await?;
        } else if upper == "RSET" || upper == "NOOP" {
            w.write_all(b"250 2.0.0 Ok\r\n").await?;
        } else if upper == "QUIT" {
            w.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else {
            w.write_all(b"502 5.5.2 Command not recognized\r\n").await?;
        }
    }
}

fn angle(s: &str) -> String {
    let s = s.trim();
    match (s.find('<'), s.find('>')) {
        (Some(a), Some(b)) if b > a => s[a + 1..b].to_string(),
        _ => s.split_whitespace().next().unwrap_or("").to_string(),
    }
}

/// `(subject, from, decoded body)` of a single-part message.
fn parse_message(raw: &str) -> (String, String, String) {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    // Unfold continuation lines.
    let mut headers: Vec<(String, String)> = Vec::new();
    for l in head.split("\r\n") {
        if l.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(l.trim());
            }
        } else if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |k: &str| {
        headers
            .iter()
            .find(|(h, _)| h == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let encoding = get("content-transfer-encoding").to_ascii_lowercase();
    let body = match encoding.as_str() {
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            String::from_utf8_lossy(
                &base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .unwrap_or_default(),
            )
            .into_owned()
        }
        "quoted-printable" => quoted_printable(body),
        _ => body.to_string(),
    };
    (get("subject"), get("from"), body)
}

fn quoted_printable(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            if b.get(i + 1) == Some(&b'\r') && b.get(i + 2) == Some(&b'\n') {
                i += 3;
                continue;
            }
            if let (Some(h), Some(l)) = (b.get(i + 1), b.get(i + 2)) {
                let hex = |c: u8| (c as char).to_digit(16);
                if let (Some(h), Some(l)) = (hex(*h), hex(*l)) {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
