//! Attack: bodies larger than a route accepts (security issue #14). Every JSON route of every
//! surface refuses a body over its limit with 413 and a JSON error, whether the size is
//! declared (Content-Length) or only discovered while streaming (chunked), and memory stays
//! within 64 MiB of idle while it happens (the app runs in this process: its VmRSS is the
//! server's). A route that never reads a body may instead answer before it is sent. Uploads have their own, larger limits: storage_security tries those.
use crate::storage_security::{rss_growth_during, stream_request, Framing};
use agencyflow_testkit::TestDb;

const ROUTES: &[(&str, &str)] = &[
    ("POST", "/rest/v1/clients"),
    (
        "PATCH",
        "/rest/v1/clients?id=eq.00000000-0000-0000-0000-000000000000",
    ),
    ("POST", "/rest/v1/rpc/match_documents"),
    ("POST", "/auth/v1/signup"),
    ("POST", "/auth/v1/token?grant_type=password"),
    ("PUT", "/auth/v1/user"),
    ("POST", "/auth/v1/otp"),
    ("POST", "/auth/v1/verify"),
    ("POST", "/auth/v1/recover"),
    ("POST", "/auth/v1/resend"),
    ("POST", "/auth/v1/invite"),
    ("POST", "/auth/v1/admin/users"),
    ("POST", "/auth/v1/admin/generate_link"),
    ("POST", "/auth/v1/logout"),
    ("POST", "/functions/v1/analyze-business"),
    ("POST", "/functions/v1/recommend-systems"),
    ("POST", "/functions/v1/crm-intelligence"),
    ("POST", "/storage/v1/bucket"),
    ("POST", "/storage/v1/object/list/documents"),
    ("POST", "/storage/v1/object/move"),
    ("POST", "/storage/v1/object/copy"),
    ("POST", "/storage/v1/object/sign/documents/a.txt"),
];

const SIZE: u64 = 48 * 1024 * 1024;
const RSS_GROWTH: u64 = 64 * 1024 * 1024;

#[tokio::test]
async fn attack_oversized_bodies_get_413_on_every_route_without_memory_growth() {
    let t = TestDb::new().await;
    let app = t.spawn_app().await;
    let user = app.user_token(uuid::Uuid::new_v4());
    let mut failures = Vec::new();
    for (method, path) in ROUTES {
        for framing in [Framing::Declared(SIZE + 16), Framing::Chunked] {
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: localhost\r\napikey: {}\r\nAuthorization: Bearer {user}\r\nContent-Type: application/json\r\n",
                app.service_role_key
            );
            let (r, growth) = rss_growth_during(stream_request(
                &app,
                head,
                framing,
                b"{\"name\": \"".to_vec(),
                b'x',
                SIZE,
                b"\"}".to_vec(),
            ))
            .await;
            let kind = match framing {
                Framing::Chunked => "chunked",
                Framing::Declared(_) => "declared",
            };
            // 413, or a route that never reads a body answering before it was sent (the
            // socket took only what the kernel buffers).
            let json = r.body.is_object() && r.body.get("raw").is_none();
            let refused_unread = (400..500).contains(&r.status) && r.sent < 16 * 1024 * 1024;
            if !json || !(r.status == 413 || refused_unread) {
                failures.push(format!("{method} {path} ({kind}): {} {}", r.status, r.body));
            }
            if growth > RSS_GROWTH {
                failures.push(format!(
                    "{method} {path} ({kind}): memory grew {} MiB",
                    growth / (1024 * 1024)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "oversized bodies not refused cleanly:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn attack_documents_function_endless_multipart_header_is_refused_without_memory_growth() {
    // The documents function parses its own multipart form: a part header that never ends
    // (or an endless preamble) must be cut off at the storage upload's 1 MiB prelude cap.
    let t = TestDb::new().await;
    let app = t.spawn_app().await;
    let user = app.user_token(uuid::Uuid::new_v4());
    for (what, prefix) in [
        (
            "endless part header",
            b"--XyZ\r\nContent-Disposition: form-data; name=\"".to_vec(),
        ),
        ("endless preamble", b"preamble ".to_vec()),
    ] {
        let head = format!(
            "POST /functions/v1/documents HTTP/1.1\r\nHost: localhost\r\napikey: {}\r\nAuthorization: Bearer {user}\r\nContent-Type: multipart/form-data; boundary=XyZ\r\n",
            app.anon_key
        );
        let (r, growth) = rss_growth_during(stream_request(
            &app,
            head,
            Framing::Chunked,
            prefix,
            b'a',
            SIZE,
            Vec::new(),
        ))
        .await;
        assert!(
            r.status == 413 || (400..500).contains(&r.status) && r.sent < 16 * 1024 * 1024,
            "{what}: {} {}",
            r.status,
            r.body
        );
        assert!(
            r.body.is_object() && r.body.get("raw").is_none(),
            "{what}: {}",
            r.body
        );
        assert!(
            growth < RSS_GROWTH,
            "{what}: memory grew {} MiB",
            growth / (1024 * 1024)
        );
    }
}
