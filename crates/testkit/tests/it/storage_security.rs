//! `/storage/v1` under attack (security issue #14): bodies that would exhaust memory or be
//! read before the caller is known to be refused, JSON bodies past the limit, stored script
//! served from the API's origin, copy/move around a bucket's limits, signed-URL expiries that
//! overflow, and TRUNCATE (which ignores RLS) as the API roles.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agencyflow_testkit::TestApp;
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1024 * 1024;
/// The attack bodies: generated as they are sent, never held in memory.
const HUGE: u64 = 200 * MIB;
/// Most a refused request may have had accepted by the server's socket (kernel buffers on
/// loopback hold a few MiB) before the refusal stopped the client.
const READ_BEFORE_REFUSAL: u64 = 32 * MIB;
/// Most the process may grow while the server refuses a huge body.
const RSS_GROWTH: u64 = 64 * MIB;

use crate::storage::{setup, setup_with, Env};

impl Env {
    async fn upload_owned(
        &self,
        token: &str,
        bucket: &str,
        name: &str,
        body: Vec<u8>,
        mime: &str,
    ) -> (StatusCode, Value) {
        json(
            self.req(
                Method::POST,
                &format!("/object/{bucket}/{name}"),
                Some(token),
            )
            .header("content-type", mime)
            .body(body)
            .send()
            .await
            .unwrap(),
        )
        .await
    }
    async fn create_bucket(&self, body: Value) {
        let svc = self.service();
        let (s, v) = json(
            self.req(Method::POST, "/bucket", Some(&svc))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 200, "{v}");
    }
    async fn names_in(&self, bucket: &str) -> Vec<String> {
        let su = self.t.superuser().await;
        su.query(
            "select name from storage.objects where bucket_id = $1 order by name",
            &[&bucket],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    }
    /// Files under the storage directory (staged ones included).
    fn file_count(&self) -> usize {
        fn walk(p: &std::path::Path) -> usize {
            std::fs::read_dir(p).map_or(0, |rd| {
                rd.flatten()
                    .map(|e| {
                        let path = e.path();
                        if path.is_dir() {
                            walk(&path)
                        } else {
                            1
                        }
                    })
                    .sum()
            })
        }
        walk(self.dir.path())
    }
    /// The request line and headers of a raw request to `/storage/v1{path}`.
    fn head(&self, method: &str, path: &str, token: Option<&str>, extra: &[&str]) -> String {
        let mut h = format!(
            "{method} /storage/v1{path} HTTP/1.1\r\nHost: localhost\r\napikey: {}\r\n",
            self.app.anon_key
        );
        if let Some(t) = token {
            h.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        for x in extra {
            h.push_str(x);
            h.push_str("\r\n");
        }
        h
    }
}

async fn json(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")),
    )
}

/// Supabase Storage's error shape with this status.
fn assert_error(body: &Value, status: u16) {
    assert_eq!(body["statusCode"], status.to_string(), "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert!(body["message"].is_string(), "{body}");
}

/// How a streamed request frames its body.
#[derive(Clone, Copy)]
pub(crate) enum Framing {
    /// `Transfer-Encoding: chunked`: the server learns the size only by reading.
    Chunked,
    /// `Content-Length: n` (the bytes sent may be fewer: the server should answer first).
    Declared(u64),
}

/// What a streamed request got back, and how much of its body the server let in.
pub(crate) struct Streamed {
    pub status: u16,
    pub head: String,
    pub body: Value,
    pub sent: u64,
}

/// Sends `head` and then `prefix`, `filler_len` bytes of `filler` (64 KiB at a time, made as
/// they are written) and `suffix`, while reading the response; writing stops as soon as the
/// response has arrived. `sent` counts the body bytes the client's socket took: what the
/// server read plus at most the kernel's socket buffers (a few MiB on loopback).
pub(crate) async fn stream_request(
    app: &TestApp,
    head: String,
    framing: Framing,
    prefix: Vec<u8>,
    filler: u8,
    filler_len: u64,
    suffix: Vec<u8>,
) -> Streamed {
    let addr = app.base.trim_start_matches("http://").to_string();
    let sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut rd, mut wr) = sock.into_split();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let writer = tokio::spawn(async move {
        let mut head = head;
        match framing {
            Framing::Chunked => head.push_str("Transfer-Encoding: chunked\r\n"),
            Framing::Declared(n) => head.push_str(&format!("Content-Length: {n}\r\n")),
        }
        head.push_str("Connection: close\r\n\r\n");
        wr.write_all(head.as_bytes()).await?;
        write_framed(&mut wr, framing, &prefix).await?;
        counter.fetch_add(prefix.len() as u64, Ordering::Relaxed);
        let block = vec![filler; 64 * 1024];
        let mut left = filler_len;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            write_framed(&mut wr, framing, &block[..n]).await?;
            counter.fetch_add(n as u64, Ordering::Relaxed);
            left -= n as u64;
        }
        write_framed(&mut wr, framing, &suffix).await?;
        counter.fetch_add(suffix.len() as u64, Ordering::Relaxed);
        if let Framing::Chunked = framing {
            wr.write_all(b"0\r\n\r\n").await?;
        }
        Ok::<_, std::io::Error>(wr)
    });
    let read = async {
        let mut buf = Vec::new();
        let mut tmp = vec![0u8; 16 * 1024];
        loop {
            if let Some(done) = complete_response(&buf) {
                return Ok(done);
            }
            match rd.read(&mut tmp).await {
                Ok(0) => return Err(format!("connection closed after {} bytes", buf.len())),
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
                Err(e) => return Err(format!("reading the response: {e}")),
            }
        }
    };
    let result = tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .expect("the server answered within two minutes");
    writer.abort();
    let (status, head, body) = result.unwrap_or_else(|e| panic!("{e}"));
    let body = serde_json::from_str(&body).unwrap_or_else(|_| json!({ "raw": body }));
    Streamed {
        status,
        head,
        body,
        sent: sent.load(Ordering::Relaxed),
    }
}

/// Writes `data` as the request's framing has it (an empty chunk would end a chunked body).
async fn write_framed(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    framing: Framing,
    data: &[u8],
) -> std::io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    if let Framing::Chunked = framing {
        wr.write_all(format!("{:x}\r\n", data.len()).as_bytes())
            .await?;
        wr.write_all(data).await?;
        wr.write_all(b"\r\n").await
    } else {
        wr.write_all(data).await
    }
}

/// A complete HTTP/1.1 response (status, head, body) once `buf` holds all of it.
fn complete_response(buf: &[u8]) -> Option<(u16, String, String)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let body = &buf[end + 4..];
    let lower = head.to_ascii_lowercase();
    let len = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match len {
        Some(n) if body.len() >= n => Some((
            status,
            head,
            String::from_utf8_lossy(&body[..n]).to_string(),
        )),
        Some(_) => None,
        None if lower.contains("transfer-encoding: chunked") => {
            // The error bodies are small: one chunk, then the last.
            let text = String::from_utf8_lossy(body).to_string();
            let (size, rest) = text.split_once("\r\n")?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            (rest.len() >= n).then(|| (status, head.clone(), rest[..n].to_string()))
        }
        None => Some((status, head, String::new())),
    }
}

/// This process's resident set in bytes (the app under test runs in it).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

/// The highest resident set seen (every 2 ms) while `f` runs, minus the one before it.
pub(crate) async fn rss_growth_during<F: std::future::Future>(f: F) -> (F::Output, u64) {
    let before = rss();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let sampler = std::thread::spawn(move || {
        let mut peak = rss();
        while !flag.load(Ordering::Relaxed) {
            peak = peak.max(rss());
            std::thread::sleep(Duration::from_millis(2));
        }
        peak.max(rss())
    });
    let out = f.await;
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    (out, peak.saturating_sub(before))
}

const BOUNDARY: &str = "XyZbOuNdArY";

fn multipart_type() -> String {
    format!("Content-Type: multipart/form-data; boundary={BOUNDARY}")
}

/// The opening of a text part named `name`.
fn text_part_open(name: &str) -> Vec<u8> {
    format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n").into_bytes()
}

/// The end of an open text part, then a small file part and the closing delimiter.
fn then_small_file() -> Vec<u8> {
    format!(
        "\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"\"; filename=\"x.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--{BOUNDARY}--\r\n"
    )
    .into_bytes()
}

/// A whole multipart body: `cacheControl`, then the file.
fn multipart_file(mime: &str, data: &[u8]) -> Vec<u8> {
    let mut body = text_part_open("cacheControl");
    body.extend_from_slice(b"60");
    body.extend_from_slice(
        format!("\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"\"; filename=\"f\"\r\nContent-Type: {mime}\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

// ---- 1. memory exhaustion and bodies read before the caller is judged ----

#[tokio::test]
async fn storage_attack_anon_huge_multipart_text_part_is_refused_before_reading() {
    let e = setup().await;
    let name = format!("{}/anon.txt", e.a_org);
    let head = e.head(
        "POST",
        &format!("/object/documents/{name}"),
        None,
        &[&multipart_type()],
    );
    let (r, growth) = rss_growth_during(stream_request(
        &e.app,
        head,
        Framing::Chunked,
        text_part_open("cacheControl"),
        b'1',
        HUGE,
        then_small_file(),
    ))
    .await;
    // The anon key may not write there: refused by RLS before a byte of the body is read.
    assert_eq!(r.status, 403, "{} {}", r.head, r.body);
    assert_error(&r.body, 403);
    assert!(r.sent < READ_BEFORE_REFUSAL, "{} bytes went in", r.sent);
    assert!(growth < RSS_GROWTH, "the process grew {growth} bytes");
    assert!(e.names_in("documents").await.is_empty());
    assert_eq!(e.file_count(), 0);
}

#[tokio::test]
async fn storage_attack_huge_multipart_text_part_is_refused_without_memory_growth() {
    let e = setup().await;
    let ta = e.ta();
    let name = format!("{}/cache.txt", e.a_org);
    // Warm the path up (first-use allocations are not what is measured).
    let (s, v) = e
        .upload_owned(
            &ta,
            "documents",
            &format!("{}/warm.txt", e.a_org),
            b"w".to_vec(),
            "text/plain",
        )
        .await;
    assert_eq!(s, 200, "{v}");
    for part in ["cacheControl", "metadata", "anything"] {
        let head = e.head(
            "POST",
            &format!("/object/documents/{name}"),
            Some(&ta),
            &[&multipart_type()],
        );
        let (r, growth) = rss_growth_during(stream_request(
            &e.app,
            head,
            Framing::Chunked,
            text_part_open(part),
            b'1',
            HUGE,
            then_small_file(),
        ))
        .await;
        assert_eq!(r.status, 413, "{part}: {} {}", r.head, r.body);
        assert_error(&r.body, 413);
        assert!(
            r.sent < READ_BEFORE_REFUSAL,
            "{part}: {} bytes went in",
            r.sent
        );
        assert!(
            growth < RSS_GROWTH,
            "{part}: the process grew {growth} bytes"
        );
    }
    assert_eq!(
        e.names_in("documents").await,
        [format!("{}/warm.txt", e.a_org)]
    );
    assert_eq!(e.file_count(), 1);
    // A part at the cap is fine; one byte more is not.
    for (len, want) in [(8 * 1024, 200), (8 * 1024 + 1, 413)] {
        let mut body = text_part_open("metadata");
        body.extend(std::iter::repeat_n(b' ', len));
        body.extend(then_small_file());
        let r = e
            .req(
                Method::POST,
                &format!("/object/documents/{name}"),
                Some(&ta),
            )
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .header("x-upsert", "true")
            .body(body)
            .send()
            .await
            .unwrap();
        let (s, v) = json(r).await;
        assert_eq!(s, want, "{len}: {v}");
    }
}

#[tokio::test]
async fn storage_attack_endless_multipart_preamble_or_part_header_is_refused_without_memory_growth()
{
    let e = setup().await;
    let ta = e.ta();
    let name = format!("{}/preamble.txt", e.a_org);
    // No delimiter ever (the parser looks for the first one), then a part header line that
    // never ends (it looks for the blank line).
    let header_open =
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"cacheControl\"\r\nX-Pad: ")
            .into_bytes();
    for (what, prefix) in [("preamble", Vec::new()), ("part header", header_open)] {
        let head = e.head(
            "POST",
            &format!("/object/documents/{name}"),
            Some(&ta),
            &[&multipart_type()],
        );
        let (r, growth) = rss_growth_during(stream_request(
            &e.app,
            head,
            Framing::Chunked,
            prefix,
            b'a',
            HUGE,
            Vec::new(),
        ))
        .await;
        assert_eq!(r.status, 413, "{what}: {} {}", r.head, r.body);
        assert_error(&r.body, 413);
        assert!(
            r.sent < READ_BEFORE_REFUSAL,
            "{what}: {} bytes went in",
            r.sent
        );
        assert!(
            growth < RSS_GROWTH,
            "{what}: the process grew {growth} bytes"
        );
    }
    assert!(e.names_in("documents").await.is_empty());
    assert_eq!(e.file_count(), 0);
}

#[tokio::test]
async fn storage_attack_large_upload_is_judged_before_its_body_is_read() {
    let e = setup().await;
    let (ta, tb) = (e.ta(), e.tb());
    // Under the server's 50 MiB limit: without a decision up front it would all be read.
    let big = 48 * MIB;
    let alice_path = format!("/object/documents/{}/big.bin", e.a_org);
    let dup = format!("{}/dup.txt", e.a_org);
    let (s, v) = e
        .upload_owned(&ta, "documents", &dup, b"first".to_vec(), "text/plain")
        .await;
    assert_eq!(s, 200, "{v}");
    let ct = "Content-Type: application/octet-stream";
    for (what, head, want) in [
        // Bob writing into Alice's organization: RLS says no.
        (
            "other org",
            e.head("POST", &alice_path, Some(&tb), &[ct]),
            403,
        ),
        // The anon key, raw body.
        ("anon", e.head("POST", &alice_path, None, &[ct]), 403),
        // No such bucket.
        (
            "no bucket",
            e.head("POST", "/object/nosuchbucket/a.bin", Some(&ta), &[ct]),
            404,
        ),
        // An existing name without x-upsert.
        (
            "duplicate",
            e.head(
                "POST",
                &format!("/object/documents/{dup}"),
                Some(&ta),
                &[ct],
            ),
            409,
        ),
        // PUT (upsert) of a name Bob may not write.
        (
            "other org put",
            e.head("PUT", &alice_path, Some(&tb), &[ct]),
            403,
        ),
    ] {
        let r = stream_request(
            &e.app,
            head,
            Framing::Chunked,
            Vec::new(),
            0,
            big,
            Vec::new(),
        )
        .await;
        assert_eq!(r.status, want, "{what}: {} {}", r.head, r.body);
        assert_error(&r.body, want);
        assert!(
            r.sent < READ_BEFORE_REFUSAL,
            "{what}: {} bytes went in",
            r.sent
        );
    }
    assert_eq!(e.names_in("documents").await, [dup]);
    assert_eq!(e.file_count(), 1);
}

#[tokio::test]
async fn storage_attack_oversized_json_bodies_get_413() {
    let e = setup().await;
    let svc = e.service();
    let ta = e.ta();
    let pad = "a".repeat(2 * MIB as usize);
    let org = e.a_org;
    let routes: Vec<(Method, String, Value)> = vec![
        (
            Method::POST,
            "/bucket".into(),
            json!({"id": "x", "name": pad}),
        ),
        (
            Method::PUT,
            "/bucket/documents".into(),
            json!({"public": false, "pad": pad}),
        ),
        (
            Method::POST,
            "/bucket/documents/empty".into(),
            json!({"pad": pad}),
        ),
        (
            Method::POST,
            "/object/list/documents".into(),
            json!({"prefix": pad}),
        ),
        (
            Method::POST,
            format!("/object/sign/documents/{org}/a.txt"),
            json!({"expiresIn": 60, "pad": pad}),
        ),
        (
            Method::POST,
            "/object/sign/documents".into(),
            json!({"expiresIn": 60, "paths": [pad]}),
        ),
        (
            Method::POST,
            format!("/object/upload/sign/documents/{org}/a.txt"),
            json!({"pad": pad}),
        ),
        (
            Method::POST,
            "/object/move".into(),
            json!({"bucketId": "documents", "sourceKey": pad, "destinationKey": "b"}),
        ),
        (
            Method::POST,
            "/object/copy".into(),
            json!({"bucketId": "documents", "sourceKey": pad, "destinationKey": "b"}),
        ),
        (
            Method::DELETE,
            "/object/documents".into(),
            json!({"prefixes": [pad]}),
        ),
    ];
    for (method, path, body) in &routes {
        for token in [&svc, &ta] {
            let r = e
                .req(method.clone(), path, Some(token))
                .json(body)
                .send()
                .await
                .unwrap();
            let (s, v) = json(r).await;
            assert_eq!(s, 413, "{method} {path}: {v}");
            assert_error(&v, 413);
        }
    }
    // Without a Content-Length the limit holds as the body streams.
    for (method, path) in [("POST", "/object/list/documents"), ("POST", "/bucket")] {
        let head = e.head(
            method,
            path,
            Some(&svc),
            &["Content-Type: application/json"],
        );
        let r = stream_request(
            &e.app,
            head,
            Framing::Chunked,
            b"{\"prefix\": \"".to_vec(),
            b'a',
            HUGE,
            b"\"}".to_vec(),
        )
        .await;
        assert_eq!(r.status, 413, "{method} {path}: {} {}", r.head, r.body);
        assert_error(&r.body, 413);
        assert!(
            r.sent < READ_BEFORE_REFUSAL,
            "{path}: {} bytes went in",
            r.sent
        );
    }
    // Ordinary bodies still pass.
    let (s, v) = json(
        e.req(Method::POST, "/object/list/documents", Some(&svc))
            .json(&json!({"prefix": ""}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let r = e
        .req(Method::POST, "/bucket", Some(&svc))
        .json(&json!({"id": "fine", "name": "fine", "public": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn storage_attack_multipart_file_past_the_bucket_or_server_limit_is_refused() {
    let e = setup_with(&["--storage-file-size-limit", "4096"]).await;
    let ta = e.ta();
    let svc = e.service();
    e.create_bucket(
        json!({"id": "tiny", "name": "tiny", "public": false, "file_size_limit": 1000}),
    )
    .await;
    let send = |bucket: &'static str, name: String, token: String, data: Vec<u8>| {
        let r = e
            .req(
                Method::POST,
                &format!("/object/{bucket}/{name}"),
                Some(&token),
            )
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(multipart_file("text/plain", &data));
        async move { json(r.send().await.unwrap()).await }
    };
    // The bucket's limit.
    let (s, v) = send("tiny", "a.txt".into(), svc.clone(), vec![b'x'; 1001]).await;
    assert_eq!(s, 413, "{v}");
    assert_error(&v, 413);
    let (s, v) = send("tiny", "a.txt".into(), svc.clone(), vec![b'x'; 1000]).await;
    assert_eq!(s, 200, "{v}");
    // The server's limit (FILE_SIZE_LIMIT) where the bucket has none.
    let org = e.a_org;
    let (s, v) = send(
        "documents",
        format!("{org}/b.txt"),
        ta.clone(),
        vec![b'x'; 4097],
    )
    .await;
    assert_eq!(s, 413, "{v}");
    assert_error(&v, 413);
    let (s, v) = send(
        "documents",
        format!("{org}/b.txt"),
        ta.clone(),
        vec![b'x'; 4096],
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // A declared length far past the limit is refused before any of it is read.
    let head = e.head(
        "POST",
        &format!("/object/documents/{org}/c.txt"),
        Some(&ta),
        &[&multipart_type()],
    );
    let r = stream_request(
        &e.app,
        head,
        Framing::Declared(10 * 1024 * MIB),
        text_part_open("cacheControl"),
        b'1',
        HUGE,
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 413, "{} {}", r.head, r.body);
    assert_error(&r.body, 413);
    assert!(r.sent < READ_BEFORE_REFUSAL, "{} bytes went in", r.sent);
    assert_eq!(e.names_in("documents").await, [format!("{org}/b.txt")]);
    assert_eq!(e.names_in("tiny").await, ["a.txt"]);
}

// ---- 2. stored script ----

#[tokio::test]
async fn storage_attack_stored_html_svg_or_script_is_never_served_as_an_active_document() {
    let e = setup().await;
    let svc = e.service();
    e.create_bucket(json!({"id": "site", "name": "site", "public": true}))
        .await;
    let script = b"<script>fetch('/auth/v1/user')</script>".to_vec();
    let active = [
        ("page.html", "text/html"),
        ("page2.html", "text/html; charset=utf-8"),
        ("page.xhtml", "application/xhtml+xml"),
        ("logo.svg", "image/svg+xml"),
        ("feed.xml", "text/xml"),
        ("data.xml", "application/xml"),
        ("app.js", "text/javascript"),
        ("app2.js", "application/javascript"),
        ("blob.bin", "application/octet-stream"),
        ("odd.x", "application/x-agencyflow-unknown"),
        // Browsers read a list as its last type: HTML.
        ("list.txt", "text/plain, text/html"),
    ];
    let passive = [
        ("img.png", "image/png"),
        ("doc.pdf", "application/pdf"),
        ("notes.txt", "text/plain"),
    ];
    for (name, mime) in active.iter().chain(passive.iter()) {
        let (s, v) = e
            .upload_owned(&svc, "site", name, script.clone(), mime)
            .await;
        assert_eq!(s, 200, "{name}: {v}");
    }
    let mut routes = Vec::new();
    for (name, _) in active.iter().chain(passive.iter()) {
        let (s, v) = json(
            e.req(
                Method::POST,
                &format!("/object/sign/site/{name}"),
                Some(&svc),
            )
            .json(&json!({"expiresIn": 60}))
            .send()
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let signed = v["signedURL"].as_str().unwrap().to_string();
        routes.push((*name, format!("/object/site/{name}")));
        routes.push((*name, format!("/object/authenticated/site/{name}")));
        routes.push((*name, format!("/object/public/site/{name}")));
        routes.push((*name, signed));
    }
    for (name, path) in &routes {
        let is_active = active.iter().any(|(n, _)| n == name);
        for (method, range) in [
            (Method::GET, None),
            (Method::HEAD, None),
            (Method::GET, Some("bytes=0-3")),
        ] {
            let mut r = e.req(method.clone(), path, Some(&svc));
            if let Some(range) = range {
                r = r.header("range", range);
            }
            let r = r.send().await.unwrap();
            assert!(r.status().is_success(), "{method} {path}: {}", r.status());
            let h = r.headers();
            let get = |k: &str| {
                h.get(k)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            assert_eq!(get("x-content-type-options"), "nosniff", "{method} {path}");
            let ct = get("content-type").to_ascii_lowercase();
            assert!(
                !ct.starts_with("text/html"),
                "{method} {path}: served as {ct}"
            );
            if is_active {
                let csp = get("content-security-policy");
                assert!(
                    csp.split(';').any(|d| d.trim() == "sandbox"),
                    "{method} {path}: CSP {csp:?}"
                );
                assert!(
                    get("content-disposition").starts_with("attachment"),
                    "{method} {path}: {:?}",
                    get("content-disposition")
                );
            } else {
                assert_eq!(get("content-security-policy"), "", "{method} {path}");
                assert_eq!(get("content-disposition"), "", "{method} {path}");
            }
        }
    }
    // HTML is plain text, as Supabase Storage serves it; the list type is not passed on.
    let r = e
        .req(Method::GET, "/object/site/page2.html", Some(&svc))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    let r = e
        .req(Method::GET, "/object/site/list.txt", Some(&svc))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    let r = e
        .req(Method::GET, "/object/site/logo.svg", Some(&svc))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    assert_eq!(r.bytes().await.unwrap().as_ref(), script.as_slice());
    // ?download= names the file for active content too.
    let r = e
        .req(
            Method::GET,
            "/object/site/page.html?download=saved.txt",
            Some(&svc),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename*=UTF-8''saved.txt"
    );
}

// ---- 3. copy and move into a bucket with limits ----

#[tokio::test]
async fn storage_attack_copy_or_move_past_the_destination_buckets_limits_is_refused() {
    let e = setup().await;
    let svc = e.service();
    e.create_bucket(json!({"id": "roomy", "name": "roomy", "public": false}))
        .await;
    e.create_bucket(json!({"id": "strict", "name": "strict", "public": false, "file_size_limit": 1000, "allowed_mime_types": ["image/png"]}))
        .await;
    for (name, mime, len) in [
        ("big.png", "image/png", 2000),
        ("small.txt", "text/plain", 10),
        ("ok.png", "image/png", 10),
        ("ok2.png", "image/png", 1000),
    ] {
        let (s, v) = e
            .upload_owned(&svc, "roomy", name, vec![7; len], mime)
            .await;
        assert_eq!(s, 200, "{name}: {v}");
    }
    let op = |what: &'static str, source: &'static str, dest: &'static str| {
        let r = e
            .req(Method::POST, &format!("/object/{what}"), Some(&svc))
            .json(&json!({"bucketId": "roomy", "sourceKey": source, "destinationBucket": "strict", "destinationKey": dest}));
        async move { json(r.send().await.unwrap()).await }
    };
    for what in ["copy", "move"] {
        let (s, v) = op(what, "big.png", "big.png").await;
        assert_eq!(s, 413, "{what} too large: {v}");
        assert_error(&v, 413);
        let (s, v) = op(what, "small.txt", "small.png").await;
        assert_eq!(s, 415, "{what} wrong type: {v}");
        assert_error(&v, 415);
    }
    // Nothing arrived, nothing left the source.
    assert!(e.names_in("strict").await.is_empty());
    assert_eq!(
        e.names_in("roomy").await,
        ["big.png", "ok.png", "ok2.png", "small.txt"]
    );
    // What fits still copies and moves.
    let (s, v) = op("copy", "ok.png", "ok.png").await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = op("move", "ok2.png", "ok2.png").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(e.names_in("strict").await, ["ok.png", "ok2.png"]);
    let r = e
        .req(Method::GET, "/object/strict/ok2.png", Some(&svc))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), 1000);
    // A bucket's limits also hold for a move inside it (limits may have been lowered since).
    let (s, v) = json(
        e.req(Method::PUT, "/bucket/roomy", Some(&svc))
            .json(&json!({"file_size_limit": 100}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = json(
        e.req(Method::POST, "/object/copy", Some(&svc))
            .json(
                &json!({"bucketId": "roomy", "sourceKey": "big.png", "destinationKey": "big2.png"}),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 413, "{v}");
}

// ---- 4. signed URL expiry ----

/// The `exp - iat` of a signed URL's or upload URL's token.
fn token_lifetime(url: &str) -> i64 {
    let token = url.split("token=").nth(1).unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap()
}

#[tokio::test]
async fn storage_attack_signed_url_expiry_overflow_is_refused() {
    let e = setup().await;
    let ta = e.ta();
    let name = format!("{}/signed.txt", e.a_org);
    let (s, v) = e
        .upload_owned(&ta, "documents", &name, b"x".to_vec(), "text/plain")
        .await;
    assert_eq!(s, 200, "{v}");
    let ten_years = 10 * 365 * 24 * 3600i64;
    let bad: Vec<Value> = vec![
        json!(0),
        json!(-1),
        json!(-9_223_372_036_854_775_807i64),
        json!(1e20),
        json!(i64::MAX),
        json!(u64::MAX),
        json!(ten_years + 1),
        json!(1.5),
        json!("soon"),
        json!(null),
        json!({"seconds": 60}),
    ];
    let sign = |path: String, body: Value| {
        let r = e.req(Method::POST, &path, Some(&ta)).json(&body);
        async move { json(r.send().await.unwrap()).await }
    };
    for exp in &bad {
        let (s, v) = sign(
            format!("/object/sign/documents/{name}"),
            json!({"expiresIn": exp}),
        )
        .await;
        assert_eq!(s, 400, "createSignedUrl {exp}: {v}");
        assert_error(&v, 400);
        let (s, v) = sign(
            "/object/sign/documents".into(),
            json!({"expiresIn": exp, "paths": [name]}),
        )
        .await;
        assert_eq!(s, 400, "createSignedUrls {exp}: {v}");
        assert_error(&v, 400);
        if exp.is_null() {
            // An upload URL without expiresIn has the default lifetime (below).
            continue;
        }
        let (s, v) = sign(
            format!("/object/upload/sign/documents/{}/up.txt", e.a_org),
            json!({"expiresIn": exp}),
        )
        .await;
        assert_eq!(s, 400, "createSignedUploadUrl {exp}: {v}");
        assert_error(&v, 400);
    }
    // A missing expiresIn on a download URL is refused too.
    let (s, v) = sign(format!("/object/sign/documents/{name}"), json!({})).await;
    assert_eq!(s, 400, "{v}");
    // The bounds themselves, and the lifetimes the tokens carry.
    for exp in [1, 60, ten_years] {
        let (s, v) = sign(
            format!("/object/sign/documents/{name}"),
            json!({"expiresIn": exp}),
        )
        .await;
        assert_eq!(s, 200, "{exp}: {v}");
        let url = v["signedURL"].as_str().unwrap();
        assert_eq!(token_lifetime(url), exp);
        let r = e
            .app
            .http
            .get(e.app.url(&format!("/storage/v1{url}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{exp}");
    }
    let (s, v) = sign(
        "/object/sign/documents".into(),
        json!({"expiresIn": ten_years, "paths": [name]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        token_lifetime(v[0]["signedURL"].as_str().unwrap()),
        ten_years
    );
    // Upload URLs: two hours unless asked for less, never more.
    let up = format!("/object/upload/sign/documents/{}/up.txt", e.a_org);
    for default in [json!({}), json!({"expiresIn": null})] {
        let (s, v) = sign(up.clone(), default).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(token_lifetime(v["url"].as_str().unwrap()), 7200);
    }
    let (s, v) = sign(up.clone(), json!({"expiresIn": 60})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(token_lifetime(v["url"].as_str().unwrap()), 60);
    let (s, v) = sign(up.clone(), json!({"expiresIn": 7201})).await;
    assert_eq!(s, 400, "{v}");
    assert_error(&v, 400);
    // No body at all (curl) is the default too.
    let (s, v) = json(e.req(Method::POST, &up, Some(&ta)).send().await.unwrap()).await;
    assert_eq!(s, 200, "{v}");
}

// ---- 5. TRUNCATE as the API roles ----

#[tokio::test]
async fn storage_attack_truncate_storage_tables_as_api_roles_is_denied() {
    let e = setup().await;
    let ta = e.ta();
    let (s, v) = e
        .upload_owned(
            &ta,
            "documents",
            &format!("{}/keep.txt", e.a_org),
            b"keep".to_vec(),
            "text/plain",
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let db = e.t.db();
    for role in ["anon", "authenticated", "service_role"] {
        for table in ["storage.objects", "storage.buckets"] {
            let mut tx = if role == "authenticated" {
                e.t.as_user(&db, e.a).await
            } else {
                e.t.as_role(&db, role).await
            };
            let err = tx
                .execute(&format!("truncate {table}"), &[])
                .await
                .expect_err(&format!("{role} truncated {table}"));
            assert_eq!(err.sqlstate(), Some("42501"), "{role} {table}: {err}");
        }
    }
    // Only what the API uses is granted: no TRUNCATE, REFERENCES or TRIGGER; DML stays.
    let su = e.t.superuser().await;
    let rows = su
        .query(
            "select grantee, table_name, privilege_type from information_schema.role_table_grants
             where table_schema = 'storage' and grantee in ('anon', 'authenticated', 'service_role', 'PUBLIC')
               and privilege_type not in ('SELECT', 'INSERT', 'UPDATE', 'DELETE')",
            &[],
        )
        .await
        .unwrap();
    let extra: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2)
            )
        })
        .collect();
    assert!(extra.is_empty(), "{extra:?}");
    let dml: i64 = su
        .query_one(
            "select count(*) from information_schema.role_table_grants
             where table_schema = 'storage' and table_name in ('objects', 'buckets')
               and grantee in ('anon', 'authenticated', 'service_role')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(dml, 3 * 2 * 4);
    // The object and its row are still there, and the API still works.
    let r = e
        .req(
            Method::GET,
            &format!("/object/documents/{}/keep.txt", e.a_org),
            Some(&ta),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "keep");
}
