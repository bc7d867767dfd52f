//! Attack: malformed input of every kind at the real router (security issue #14). A seeded
//! random loop throws mutated query strings, `Prefer`/`Range`/`Accept`/`Content-Type`
//! headers, JSON and multipart bodies at every surface; every answer must be a well-formed
//! HTTP response, errors with a JSON body, and the server must stay up. Bounded in time:
//! AGENCYFLOW_FUZZ_SECS (default 20) and AGENCYFLOW_FUZZ_SEED (default: random, printed so a
//! failure can be replayed).
use agencyflow_testkit::TestDb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const PATHS: &[&str] = &[
    "/rest/v1/clients",
    "/rest/v1/projects",
    "/rest/v1/client_crm_status",
    "/rest/v1/rpc/match_documents",
    "/rest/v1/rpc/hybrid_search",
    "/rest/v1/",
    "/rest/v1/nope",
    "/auth/v1/token",
    "/auth/v1/signup",
    "/auth/v1/otp",
    "/auth/v1/verify",
    "/auth/v1/user",
    "/auth/v1/recover",
    "/auth/v1/admin/users",
    "/auth/v1/logout",
    "/storage/v1/bucket",
    "/storage/v1/object/docs/a/b.txt",
    "/storage/v1/object/list/docs",
    "/storage/v1/object/sign/docs/a.txt",
    "/storage/v1/object/public/docs/a.txt",
    "/storage/v1/object/move",
    "/functions/v1/recommend-systems",
    "/functions/v1/analyze-business",
    "/functions/v1/documents",
    "/functions/v1/search-documents",
    "/nowhere",
    "/health",
];

const QUERIES: &[&str] = &[
    "select=id,name,projects(id,name,status)&order=name.desc.nullslast&limit=5&offset=1",
    "id=eq.00000000-0000-0000-0000-000000000000&status=in.(lead,client)",
    "or=(name.ilike.*a*,and(health_score.gt.10,health_score.lt.90))&select=*",
    "select=name,total:value_cents.sum()&name=not.is.null",
    "notes=fts(english).hello&tags=cs.{a,b}&data->>k=eq.v",
    "grant_type=password",
    "grant_type=refresh_token",
    "type=magiclink&token=abc&redirect_to=http://x",
    "columns=name,status&on_conflict=id",
    "",
];

const PREFER: &[&str] = &[
    "return=representation",
    "count=exact",
    "resolution=merge-duplicates",
    "missing=default",
    "tx=rollback",
    "handling=strict",
    "max-affected=1",
    "params=single-object",
    "timezone=Mars/Olympus",
    "count=planned, return=minimal",
];

const RANGES: &[&str] = &[
    "0-9",
    "5-",
    "10-2",
    "-",
    "abc",
    "0-99999999999999999999",
    "items=0-1",
];
const ACCEPTS: &[&str] = &[
    "application/json",
    "text/csv",
    "application/vnd.pgrst.object+json",
    "application/vnd.pgrst.plan+json",
    "application/geo+json",
    "application/octet-stream",
    "*/*",
    "text/html;q=0.5, garbage/;;",
];
const CTYPES: &[&str] = &[
    "application/json",
    "text/csv",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=XyZ",
    "multipart/form-data",
    "application/octet-stream",
    "text/plain",
    "application/vnd.pgrst.object+json",
];

fn mutate(rng: &mut StdRng, s: &str) -> String {
    let mut b: Vec<u8> = s.as_bytes().to_vec();
    for _ in 0..rng.gen_range(0..6) {
        let op = rng.gen_range(0..5);
        let at = if b.is_empty() {
            0
        } else {
            rng.gen_range(0..=b.len())
        };
        match op {
            0 => {
                const JUNK: &[u8] = b"()=.,*&:!{}[]\"'%\\|<>;-+~^$#@ \t";
                b.insert(at, JUNK[rng.gen_range(0..JUNK.len())])
            }
            1 if !b.is_empty() && at < b.len() => {
                b.remove(at);
            }
            2 => {
                let junk = format!("%{:02X}", rng.gen::<u8>());
                b.splice(at..at, junk.bytes());
            }
            3 => {
                let dup = b.clone();
                b.extend_from_slice(&dup[..dup.len().min(64)]);
            }
            _ => b.insert(at, rng.gen_range(b'a'..=b'z')),
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

fn random_json(rng: &mut StdRng, depth: u32) -> Value {
    match rng.gen_range(0..if depth > 3 { 5 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.gen::<bool>()),
        2 => json!(rng.gen::<i64>()),
        3 => json!(rng.gen::<f64>() * 1e12),
        4 => json!(mutate(rng, "name")),
        5 | 6 => {
            let keys = [
                "name",
                "org_id",
                "id",
                "email",
                "password",
                "status",
                "query_embedding",
                "bucketId",
                "sourceKey",
                "expiresIn",
                "prefix",
                "limit",
                "project_id",
                "text",
                "x",
            ];
            let mut m = serde_json::Map::new();
            for _ in 0..rng.gen_range(0..6) {
                let k = keys[rng.gen_range(0..keys.len())];
                m.insert(k.to_string(), random_json(rng, depth + 1));
            }
            Value::Object(m)
        }
        _ => Value::Array(
            (0..rng.gen_range(0..4))
                .map(|_| random_json(rng, depth + 1))
                .collect(),
        ),
    }
}

fn random_body(rng: &mut StdRng) -> Vec<u8> {
    match rng.gen_range(0..5) {
        0 => Vec::new(),
        1 => random_json(rng, 0).to_string().into_bytes(),
        2 => {
            let s = random_json(rng, 0).to_string();
            mutate(rng, &s).into_bytes()
        }
        3 => format!(
            "--XyZ\r\nContent-Disposition: form-data; name=\"{}\"\r\n\r\n{}\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XyZ{}",
            mutate(rng, "cacheControl"),
            mutate(rng, "3600"),
            mutate(rng, "a.txt"),
            if rng.gen() { "--\r\n" } else { "" }
        )
        .into_bytes(),
        _ => (0..rng.gen_range(0..256)).map(|_| rng.gen()).collect(),
    }
}

#[tokio::test]
async fn attack_random_and_mutated_requests_never_crash_and_errors_are_json() {
    let secs: u64 = std::env::var("AGENCYFLOW_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("AGENCYFLOW_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("fuzz seed {seed} ({secs}s): AGENCYFLOW_FUZZ_SEED={seed} replays it");
    let mut rng = StdRng::seed_from_u64(seed);
    let t = TestDb::new().await;
    let app = t.spawn_app().await;
    let user = app.user_token(uuid::Uuid::new_v4());
    let methods = [
        Method::GET,
        Method::POST,
        Method::PATCH,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
    ];
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut n = 0u32;
    while Instant::now() < deadline {
        n += 1;
        let method = methods[rng.gen_range(0..methods.len())].clone();
        let mut path = PATHS[rng.gen_range(0..PATHS.len())].to_string();
        if rng.gen_bool(0.3) {
            path = mutate(&mut rng, &path);
        }
        let q = QUERIES[rng.gen_range(0..QUERIES.len())];
        let query = mutate(&mut rng, q);
        let url = if path.starts_with('/') {
            app.url(&format!("{path}?{query}"))
        } else {
            app.url(&format!("/{path}?{query}"))
        };
        let Ok(url) = reqwest::Url::parse(&url) else {
            continue;
        };
        let mut rb = app
            .http
            .request(method.clone(), url.clone())
            .timeout(Duration::from_secs(30));
        match rng.gen_range(0..4) {
            0 => {}
            1 => rb = rb.header("apikey", &app.anon_key),
            2 => rb = rb.header("apikey", &app.anon_key).bearer_auth(&user),
            _ => {
                rb = rb
                    .header("apikey", mutate(&mut rng, &app.anon_key))
                    .header("Authorization", mutate(&mut rng, &format!("Bearer {user}")))
            }
        }
        for (name, values) in [
            ("Prefer", PREFER),
            ("Range", RANGES),
            ("Accept", ACCEPTS),
            ("Content-Type", CTYPES),
        ] {
            if rng.gen_bool(0.5) {
                let pick = values[rng.gen_range(0..values.len())];
                let v = mutate(&mut rng, pick);
                if let Ok(hv) = reqwest::header::HeaderValue::from_str(&v) {
                    rb = rb.header(name, hv);
                }
            }
        }
        if method != Method::GET && method != Method::HEAD {
            rb = rb.body(random_body(&mut rng));
        }
        let r = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {n} ({method} {url}) got no HTTP answer: {e}"));
        let status = r.status().as_u16();
        assert!(
            (100..600).contains(&status),
            "{method} {url}: status {status}"
        );
        let body = r
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: body cut: {e}"));
        if status >= 400 && method != Method::HEAD {
            let j: Result<Value, _> = serde_json::from_slice(&body);
            assert!(
                matches!(&j, Ok(Value::Object(_))),
                "{method} {url}: {status} without a JSON error body: {}",
                String::from_utf8_lossy(&body)
            );
        }
        assert!(
            status != 500 || !String::from_utf8_lossy(&body).contains("panicked"),
            "{method} {url}: {status}"
        );
    }
    let r = app.http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200, "server down after {n} fuzz requests");
    eprintln!("{n} fuzz requests, server up");
}
