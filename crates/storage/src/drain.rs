//! Refused uploads still end cleanly for the client.
//!
//! Uploads are judged before their body is read (bucket, credentials, RLS), so a refusal is
//! answered while the client is still sending. If the connection were then closed with the
//! rest of the body unread, the kernel would answer the client's next segments with a reset,
//! and most clients (fetch/undici, curl, hyper) report that reset instead of the 4xx they had
//! been sent. Supabase Storage closes such connections gracefully; here the unread body is
//! drained (read and discarded, never buffered) after the handler has dropped it, so the
//! client finishes sending, reads the answer, and may even reuse the connection.
//!
//! Draining is bounded so it never becomes what the refusal avoided: only a body whose
//! `Content-Length` is declared and within what the route would have accepted anyway (the
//! route's body limit), never a chunked body of unknown size, never when the client waits
//! for `100 Continue` (it then sends nothing more), and for at most [`DRAIN_TIME`]. Anything
//! else is left to the HTTP server, which closes the connection after the answer.
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

/// The longest a refused body is drained after its answer.
pub const DRAIN_TIME: Duration = Duration::from_secs(10);

/// A request body that, when dropped before its end, drains what is left of it in the
/// background (see the module's documentation for the bounds).
pub struct DrainOnDrop {
    inner: Option<Body>,
    /// Body bytes the handler read.
    seen: u64,
    /// The most this request's body may carry in all (the route's limit).
    cap: u64,
    /// Whether the remainder may be drained at all (a declared length, no `Expect`).
    drainable: bool,
}

impl DrainOnDrop {
    pub fn new(inner: Body, cap: u64, drainable: bool) -> Self {
        DrainOnDrop {
            inner: Some(inner),
            seen: 0,
            cap,
            drainable,
        }
    }
}

impl HttpBody for DrainOnDrop {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen = this.seen.saturating_add(data.len() as u64);
                }
            }
            // The end, or an error: nothing is left to drain.
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.inner = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        let Some(body) = self.inner.take() else {
            return;
        };
        if !self.drainable || body.is_end_stream() {
            return;
        }
        let left = self.cap.saturating_sub(self.seen);
        // Only what the client declared it would still send, within the route's limit.
        match body.size_hint().upper() {
            Some(declared) if declared <= left => {}
            _ => return,
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let _ = tokio::time::timeout(DRAIN_TIME, discard(body)).await;
        });
    }
}

/// Reads `body` to its end, keeping nothing.
async fn discard(mut body: Body) {
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            return;
        }
    }
}

/// Whether a request's body may be drained if its handler drops it unread: its length is
/// declared and the client is not waiting for `100 Continue`.
pub fn drainable(headers: &http::HeaderMap) -> bool {
    let declared = headers.contains_key(http::header::CONTENT_LENGTH)
        && !headers.contains_key(http::header::TRANSFER_ENCODING);
    let expects = headers
        .get(http::header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
    declared && !expects
}
