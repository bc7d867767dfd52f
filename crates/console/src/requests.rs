//! The last API requests, in memory (a ring buffer the server's metrics layer fills), for the
//! console's Logs page.
use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub at: chrono::DateTime<chrono::Utc>,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub latency_ms: f64,
    /// The API key's / bearer's role when known (`anon`, `authenticated`, `service_role`).
    pub role: Option<String>,
    pub request_id: Option<String>,
}

pub struct RequestLog {
    cap: usize,
    buf: Mutex<VecDeque<RequestRecord>>,
}

impl Default for RequestLog {
    fn default() -> Self {
        RequestLog::new(1000)
    }
}

impl RequestLog {
    pub fn new(cap: usize) -> Self {
        RequestLog {
            cap: cap.max(1),
            buf: Mutex::new(VecDeque::with_capacity(cap.min(4096))),
        }
    }

    pub fn push(&self, r: RequestRecord) {
        let mut b = self.buf.lock().expect("request log lock");
        if b.len() == self.cap {
            b.pop_front();
        }
        b.push_back(r);
    }

    /// The newest first.
    pub fn recent(&self) -> Vec<RequestRecord> {
        let b = self.buf.lock().expect("request log lock");
        b.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_up_to_its_capacity() {
        let log = RequestLog::new(2);
        for i in 0..3u16 {
            log.push(RequestRecord {
                at: chrono::Utc::now(),
                method: "GET".into(),
                path: format!("/{i}"),
                status: 200 + i,
                latency_ms: 1.0,
                role: None,
                request_id: None,
            });
        }
        let r = log.recent();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].path, "/2");
        assert_eq!(r[1].path, "/1");
    }
}
