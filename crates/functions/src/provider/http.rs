//! Provider HTTP: timeouts, and retries with exponential backoff on 429 and 5xx (honouring
//! `Retry-After`) and on requests lost in transit.
use std::time::Duration;

use reqwest::{RequestBuilder, Response, StatusCode};

use super::ProviderError;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Whole-request timeout (streams: connect and the longest silence between chunks).
    pub timeout: Duration,
    pub max_retries: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

pub(crate) fn client(p: &RetryPolicy) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(p.timeout.min(Duration::from_secs(10)))
        .read_timeout(p.timeout)
        .user_agent(concat!("agencyflow/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("building the provider HTTP client")
}

fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| *s >= 0.0)
        .map(Duration::from_secs_f64)
}

fn transport(e: reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        ProviderError::Timeout
    } else {
        ProviderError::Transport(e.without_url().to_string())
    }
}

/// Sends the request `build` makes, retrying per `p`; a non-success final answer becomes
/// [`ProviderError::Http`] with (the start of) its body.
pub(crate) async fn send(
    p: &RetryPolicy,
    stream: bool,
    build: impl Fn() -> RequestBuilder,
) -> Result<Response, ProviderError> {
    let mut attempt = 0u32;
    loop {
        let mut req = build();
        if !stream {
            req = req.timeout(p.timeout);
        }
        let outcome = req.send().await;
        let delay = match outcome {
            Ok(resp) if resp.status().is_success() => return Ok(resp),
            Ok(resp) => {
                let status = resp.status();
                let wait = retry_after(&resp);
                if !retryable(status) || attempt >= p.max_retries {
                    let body = resp.text().await.unwrap_or_default();
                    let body: String = body.chars().take(500).collect();
                    return Err(ProviderError::Http {
                        status: status.as_u16(),
                        body,
                    });
                }
                tracing::warn!(
                    status = status.as_u16(),
                    attempt,
                    "provider busy or failing; retrying"
                );
                wait
            }
            Err(e)
                if attempt < p.max_retries
                    && (e.is_timeout() || e.is_connect() || e.is_request()) =>
            {
                tracing::warn!(error = %e.without_url(), attempt, "provider request failed; retrying");
                None
            }
            Err(e) => return Err(transport(e)),
        };
        let backoff = p.base_delay.saturating_mul(1u32 << attempt.min(16));
        tokio::time::sleep(delay.unwrap_or(backoff).min(p.max_delay)).await;
        attempt += 1;
    }
}

/// The largest provider response read (a batch of 1,000 vectors of 1,536 numbers is ~30 MiB
/// of JSON): a provider's answer is untrusted and is not buffered without bound.
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 << 20;

pub(crate) async fn json(mut resp: Response) -> Result<serde_json::Value, ProviderError> {
    let too_big = || {
        ProviderError::BadResponse(format!(
            "response larger than {} MiB",
            MAX_RESPONSE_BYTES >> 20
        ))
    };
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_big());
        }
        bytes.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ProviderError::BadResponse(format!("response is not JSON: {e}")))
}

pub(crate) fn stream_err(e: reqwest::Error) -> ProviderError {
    transport(e)
}
