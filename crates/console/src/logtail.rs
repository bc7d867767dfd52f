//! The server's own log tail: the last tracing events in memory (a ring buffer fed by
//! [`TailLayer`], installed beside the log writer), for the console's Logs & health page.
//!
//! Nothing secret is kept: a field whose name says it holds a secret (password, token,
//! secret, key, authorization, cookie...) is stored as `[redacted]`, and any text that looks
//! like a JWT or a bearer credential is masked wherever it appears (message or field).
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// One log event.
#[derive(Debug, Clone, Serialize)]
pub struct LogRecord {
    /// Sequence number (newer is bigger).
    pub seq: u64,
    pub at: chrono::DateTime<chrono::Utc>,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG`, `TRACE`.
    pub level: String,
    pub target: String,
    pub message: String,
    /// The event's other fields, as text (secrets redacted).
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// The last events, newest last; warnings and errors also in a ring of their own, so that a
/// burst of info lines does not push them out.
pub struct LogTail {
    cap: usize,
    inner: Mutex<Rings>,
}

#[derive(Default)]
struct Rings {
    seq: u64,
    all: VecDeque<LogRecord>,
    severe: VecDeque<LogRecord>,
}

impl LogTail {
    pub fn new(cap: usize) -> Self {
        LogTail {
            cap: cap.max(1),
            inner: Mutex::default(),
        }
    }

    /// The process's tail (the tracing subscriber is process-wide too).
    pub fn global() -> Arc<LogTail> {
        static TAIL: OnceLock<Arc<LogTail>> = OnceLock::new();
        TAIL.get_or_init(|| Arc::new(LogTail::new(2000))).clone()
    }

    pub fn push(&self, mut r: LogRecord) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.seq += 1;
        r.seq = g.seq;
        if r.level.parse::<Level>().is_ok_and(|l| l <= Level::WARN) {
            if g.severe.len() == self.cap {
                g.severe.pop_front();
            }
            g.severe.push_back(r.clone());
        }
        if g.all.len() == self.cap {
            g.all.pop_front();
        }
        g.all.push_back(r);
    }

    /// The newest first, at `min` severity or worse (`None`: all), up to `limit`.
    pub fn recent(&self, min: Option<Level>, limit: usize) -> Vec<LogRecord> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let ring = match min {
            Some(m) if m <= Level::WARN => &g.severe,
            _ => &g.all,
        };
        ring.iter()
            .rev()
            .filter(|r| min.is_none_or(|m| r.level.parse::<Level>().is_ok_and(|l| l <= m)))
            .take(limit)
            .cloned()
            .collect()
    }
}

/// The layer feeding a [`LogTail`] (put it beside the log writer, with its own filter).
pub struct TailLayer(pub Arc<LogTail>);

/// Field names whose values are never kept.
fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "apikey",
        "api_key",
        "authorization",
        "cookie",
        "credential",
        "private",
        "jwt",
        "otp",
        "nonce",
    ]
    .iter()
    .any(|s| n.contains(s))
        || n == "key"
        || n == "code"
        || n.ends_with("_key")
}

/// Masks what looks like a credential inside free text: JWTs (`eyJ…`), `Bearer …`, and
/// `password=…`-style pairs (also in connection strings).
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        // A JWT: three base64url parts, the first starting with eyJ.
        if rest.starts_with("eyJ") {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
                .unwrap_or(rest.len());
            if rest[..end].matches('.').count() >= 2 {
                out.push_str("[redacted jwt]");
                i += end;
                continue;
            }
        }
        let lower = rest
            .get(..rest.len().min(16))
            .unwrap_or("")
            .to_ascii_lowercase();
        let word_start = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        if word_start {
            if let Some(kw) = ["bearer ", "basic "].iter().find(|k| lower.starts_with(*k)) {
                let start = kw.len();
                let end = rest[start..]
                    .find(|c: char| c.is_whitespace() || c == '"' || c == ',')
                    .map_or(rest.len(), |e| start + e);
                if end > start {
                    out.push_str(&rest[..start]);
                    out.push_str("[redacted]");
                    i += end;
                    continue;
                }
            }
            if let Some(kw) = [
                "password=",
                "password:",
                "pass=",
                "secret=",
                "apikey=",
                "token=",
                "code=",
            ]
            .iter()
            .find(|k| lower.starts_with(*k))
            {
                let start = kw.len();
                let end = rest[start..]
                    .find(|c: char| c.is_whitespace() || c == '&' || c == ';' || c == '"')
                    .map_or(rest.len(), |e| start + e);
                out.push_str(&rest[..start]);
                out.push_str("[redacted]");
                i += end;
                continue;
            }
        }
        let ch = rest.chars().next().expect("not at the end");
        out.push(ch);
        i += ch.len_utf8();
    }
    // A password in a URL's user info: scheme://user:password@host
    if let Some(at) = out.find("://") {
        let after = &out[at + 3..];
        if let (Some(colon), Some(amp)) = (after.find(':'), after.find('@')) {
            if colon < amp && !after[..amp].contains('/') {
                let masked = format!(
                    "{}://{}:[redacted]{}",
                    &out[..at],
                    &after[..colon],
                    &after[amp..]
                );
                return masked;
            }
        }
    }
    out
}

struct Collect {
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl Collect {
    fn put(&mut self, field: &Field, text: String) {
        if field.name() == "message" {
            self.message = scrub(&text);
        } else if secret_name(field.name()) {
            self.fields
                .insert(field.name().to_string(), "[redacted]".into());
        } else {
            self.fields
                .insert(field.name().to_string(), scrub(&text).into());
        }
    }
}

impl Visit for Collect {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        self.put(field, s);
    }
}

impl<S: Subscriber> Layer<S> for TailLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut c = Collect {
            message: String::new(),
            fields: serde_json::Map::new(),
        };
        event.record(&mut c);
        let mut message = c.message;
        message.truncate(
            (0..=message.len().min(2000))
                .rev()
                .find(|i| message.is_char_boundary(*i))
                .unwrap_or(0),
        );
        self.0.push(LogRecord {
            seq: 0,
            at: chrono::Utc::now(),
            level: meta.level().to_string(),
            target: meta.target().to_string(),
            message,
            fields: c.fields,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn secrets_are_redacted_by_field_name_and_by_shape() {
        let tail = Arc::new(LogTail::new(10));
        let sub = tracing_subscriber::registry().with(TailLayer(tail.clone()));
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJl";
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(
                password = "hunter2-secret",
                user = "ops",
                "signing in with {jwt}"
            );
            tracing::info!(
                url = "postgres://app:pa55word@db:5432/x",
                header = "Bearer abc.def",
                "plain"
            );
            tracing::error!(service_role_key = %jwt, "boom");
        });
        let all = tail.recent(None, 10);
        let text = serde_json::to_string(&all).unwrap();
        for secret in ["hunter2-secret", jwt, "pa55word", "abc.def"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert_eq!(all.len(), 3);
        assert_eq!(all[2].message, "signing in with [redacted jwt]");
        assert_eq!(all[2].fields["password"], "[redacted]");
        assert_eq!(all[2].fields["user"], "ops");
        assert_eq!(all[1].fields["url"], "postgres://app:[redacted]@db:5432/x");
        let tail2 = Arc::new(LogTail::new(3));
        let sub = tracing_subscriber::registry().with(TailLayer(tail2.clone()));
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(
                link = "https://x.test/auth/v1/verify?token=abc123&type=invite",
                code = "123456",
                "kept"
            );
            for _ in 0..5 {
                tracing::info!("chatter");
            }
        });
        let text = serde_json::to_string(&tail2.recent(None, 10)).unwrap();
        assert!(
            !text.contains("kept"),
            "evicted from the ring of all: {text}"
        );
        let warn = tail2.recent(Some(Level::WARN), 10);
        assert_eq!(warn.len(), 1, "a warning outlives the info chatter");
        assert_eq!(
            warn[0].fields["link"],
            "https://x.test/auth/v1/verify?token=[redacted]&type=invite"
        );
        assert_eq!(warn[0].fields["code"], "[redacted]");
        // Filtered by level: WARN and worse.
        let warn = tail.recent(Some(Level::WARN), 10);
        assert_eq!(
            warn.iter().map(|r| r.level.as_str()).collect::<Vec<_>>(),
            ["ERROR", "WARN"]
        );
    }

    #[test]
    fn keeps_the_newest_up_to_its_capacity() {
        let tail = LogTail::new(2);
        for i in 0..3 {
            tail.push(LogRecord {
                seq: 0,
                at: chrono::Utc::now(),
                level: "INFO".into(),
                target: "t".into(),
                message: format!("{i}"),
                fields: Default::default(),
            });
        }
        let r = tail.recent(None, 10);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].message.as_str(), r[0].seq), ("2", 3));
    }
}
