//! Reads a `text/event-stream` response as the `data:` payloads of its events.
use futures::stream::{self, BoxStream, StreamExt};

use super::{http, ProviderError};

/// The largest single event read from a stream.
const MAX_EVENT_BYTES: usize = 4 << 20;

/// The `data` of each event (multi-line data joined with `\n`), in order.
pub(crate) fn data_events(
    resp: reqwest::Response,
) -> BoxStream<'static, Result<String, ProviderError>> {
    let bytes = resp.bytes_stream();
    stream::unfold(
        (bytes, Vec::<u8>::new(), Vec::<String>::new(), false),
        |(mut bytes, mut buf, mut ready, mut ended)| async move {
            loop {
                if let Some(ev) = (!ready.is_empty()).then(|| ready.remove(0)) {
                    return Some((Ok(ev), (bytes, buf, ready, ended)));
                }
                if ended {
                    return None;
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => {
                        buf.extend_from_slice(&chunk);
                        ready.extend(take_events(&mut buf, false));
                        // What is left is one unfinished event: it is not buffered without
                        // bound.
                        if buf.len() > MAX_EVENT_BYTES {
                            ended = true;
                            let e = ProviderError::BadResponse(format!(
                                "stream event larger than {} MiB",
                                MAX_EVENT_BYTES >> 20
                            ));
                            return Some((Err(e), (bytes, buf, ready, ended)));
                        }
                    }
                    Some(Err(e)) => {
                        ended = true;
                        return Some((Err(http::stream_err(e)), (bytes, buf, ready, ended)));
                    }
                    None => {
                        ended = true;
                        ready.extend(take_events(&mut buf, true));
                    }
                }
            }
        },
    )
    .boxed()
}

/// Splits complete events (ended by a blank line) off the front of `buf`.
pub(crate) fn take_events(buf: &mut Vec<u8>, eof: bool) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let text = String::from_utf8_lossy(buf).replace("\r\n", "\n");
        let end = text.find("\n\n");
        let (event, rest) = match end {
            Some(i) => (text[..i].to_string(), text[i + 2..].to_string()),
            None if eof && !text.trim().is_empty() => (text.clone(), String::new()),
            None => break,
        };
        *buf = rest.into_bytes();
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if !data.is_empty() {
            out.push(data.join("\n"));
        }
        if end.is_none() {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::take_events;

    #[test]
    fn splits_events_across_chunks() {
        let mut buf = b"data: {\"a\":1}\n\ndata: {\"b\"".to_vec();
        assert_eq!(take_events(&mut buf, false), vec!["{\"a\":1}"]);
        buf.extend_from_slice(b":2}\r\n\r\n: comment\n\ndata: [DONE]");
        assert_eq!(take_events(&mut buf, false), vec!["{\"b\":2}"]);
        assert_eq!(take_events(&mut buf, true), vec!["[DONE]"]);
    }
}
