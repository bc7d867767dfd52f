//! `/storage/v1` as storage-js meets it, round 2 (issue #18): a bearer JWT without `apikey`,
//! requests without any credential, refused uploads that end with their 4xx rather than a
//! reset, `list-v2` paging, custom metadata and `info`, bucket size units, partial updates,
//! timestamps and messages, and the vector/analytics endpoints this server does not offer.
use std::time::Duration;

use agencyflow_testkit::{TestApp, TestDb};
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

struct Env {
    t: TestDb,
    app: TestApp,
    _dir: tempfile::TempDir,
    a: Uuid,
    a_org: Uuid,
    b: Uuid,
}

async fn setup() -> Env {
    let t = TestDb::new().await;
    let su = t.superuser().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    for (id, email) in [(a, "alice@a.test"), (b, "bob@b.test")] {
        su.execute(
            "insert into auth.users (id, email) values ($1, $2)",
            &[&id, &email],
        )
        .await
        .unwrap();
    }
    let a_org: Uuid = su
        .query_one("select org_id from team_members where user_id = $1", &[&a])
        .await
        .unwrap()
        .get(0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let app = t.spawn_app_with(&["--storage-dir", path.as_str()]).await;
    Env {
        t,
        app,
        _dir: dir,
        a,
        a_org,
        b,
    }
}

/// How a request authenticates.
#[derive(Clone, Copy)]
enum Cred<'a> {
    /// Nothing at all.
    None,
    /// `Authorization: Bearer` only, as `new StorageClient(url, { Authorization })` sends.
    Bearer(&'a str),
    /// The anon `apikey` and a bearer token, as supabase-js sends.
    KeyAnd(&'a str),
}

impl Env {
    fn req(&self, method: Method, path: &str, cred: Cred<'_>) -> reqwest::RequestBuilder {
        let r = self
            .app
            .http
            .request(method, self.app.url(&format!("/storage/v1{path}")));
        match cred {
            Cred::None => r,
            Cred::Bearer(t) => r.bearer_auth(t),
            Cred::KeyAnd(t) => r.header("apikey", &self.app.anon_key).bearer_auth(t),
        }
    }
    async fn send(&self, rb: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let r = rb.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        let v =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        (status, v)
    }
    fn svc(&self) -> String {
        self.app.service_role_key.clone()
    }
    async fn upload(&self, cred: Cred<'_>, bucket: &str, name: &str, body: &str) -> StatusCode {
        self.req(Method::POST, &format!("/object/{bucket}/{name}"), cred)
            .header("content-type", "text/plain")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .status()
    }
    async fn create_bucket(&self, body: Value) -> (StatusCode, Value) {
        let svc = self.svc();
        self.send(
            self.req(Method::POST, "/bucket", Cred::Bearer(&svc))
                .json(&body),
        )
        .await
    }
    async fn list_v2(&self, cred: Cred<'_>, bucket: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            self.req(Method::POST, &format!("/object/list-v2/{bucket}"), cred)
                .json(&body),
        )
        .await
    }
    /// Every page of a `list-v2` listing of `limit` entries each: (folder names, object
    /// names, pages). Asserts the shape of every page on the way.
    async fn list_v2_all(
        &self,
        bucket: &str,
        body: Value,
        limit: u64,
    ) -> (Vec<String>, Vec<String>, usize) {
        let svc = self.svc();
        let (mut folders, mut objects, mut pages) = (Vec::new(), Vec::new(), 0);
        let mut cursor: Option<String> = None;
        loop {
            let mut b = body.clone();
            b["limit"] = json!(limit);
            if let Some(c) = &cursor {
                b["cursor"] = json!(c);
            }
            let (s, v) = self.list_v2(Cred::Bearer(&svc), bucket, b).await;
            assert_eq!(s, 200, "{v}");
            pages += 1;
            assert!(pages < 50, "paging never ends: {v}");
            let page_len =
                v["folders"].as_array().unwrap().len() + v["objects"].as_array().unwrap().len();
            assert!(page_len as u64 <= limit, "{v}");
            folders.extend(names(&v["folders"]));
            objects.extend(names(&v["objects"]));
            if v["hasNext"] == json!(true) {
                assert_eq!(page_len as u64, limit, "{v}");
                cursor = Some(
                    v["nextCursor"]
                        .as_str()
                        .expect("nextCursor with hasNext")
                        .to_string(),
                );
            } else {
                assert_eq!(v["hasNext"], json!(false), "{v}");
                assert!(
                    v.get("nextCursor").is_none(),
                    "no nextCursor on the last page: {v}"
                );
                return (folders, objects, pages);
            }
        }
    }
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_string())
        .collect()
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

fn sorted(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// `2021-02-17T04:43:32.770Z`, as Storage renders timestamps.
fn assert_storage_time(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    let b = s.as_bytes();
    let ok = s.len() == 24
        && s.ends_with('Z')
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && s[20..23].bytes().all(|c| c.is_ascii_digit())
        && chrono::DateTime::parse_from_rfc3339(s).is_ok();
    assert!(ok, "not Storage's timestamp format: {s}");
}

// ---- 1. a bearer JWT is enough; no credential at all gets Storage's answer ----

#[tokio::test]
async fn storage_accepts_a_bearer_jwt_without_apikey_and_answers_no_credential_as_storage() {
    let e = setup().await;
    let (ta, svc) = (e.app.user_token(e.a), e.svc());
    let name = format!("{}/bearer-only.txt", e.a_org);
    // Bearer only: the user writes, lists, reads, signs and removes as with the key.
    assert_eq!(
        e.upload(Cred::Bearer(&ta), "documents", &name, "no key")
            .await,
        200
    );
    let (s, v) = e
        .send(
            e.req(Method::POST, "/object/list/documents", Cred::Bearer(&ta))
                .json(&json!({"prefix": e.a_org.to_string()})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(names(&v), ["bearer-only.txt"]);
    let r = e
        .req(
            Method::GET,
            &format!("/object/documents/{name}"),
            Cred::Bearer(&ta),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "no key");
    let (s, v) = e
        .send(e.req(Method::GET, "/bucket", Cred::Bearer(&svc)))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v[0]["id"], "documents");
    // RLS still decides: Bob's bearer token reads nothing of Alice's organisation.
    let tb = e.app.user_token(e.b);
    let r = e
        .req(
            Method::GET,
            &format!("/object/documents/{name}"),
            Cred::Bearer(&tb),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // A bad token without a key is refused by storage's own check.
    let (s, v) = e
        .send(e.req(Method::GET, "/bucket", Cred::Bearer("not.a.jwt")))
        .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["statusCode"], "403");

    // Nothing at all: Storage's error, not the gateway's.
    let no_jwt =
        json!({"statusCode": "403", "error": "Unauthorized", "message": "jwt must be provided"});
    for (method, path, body) in [
        (Method::GET, "/bucket".to_string(), None),
        (
            Method::POST,
            "/object/list/documents".to_string(),
            Some(json!({"prefix": ""})),
        ),
        (
            Method::POST,
            "/object/list-v2/documents".to_string(),
            Some(json!({})),
        ),
        (
            Method::GET,
            format!("/object/authenticated/documents/{name}"),
            None,
        ),
        (
            Method::GET,
            format!("/object/info/authenticated/documents/{name}"),
            None,
        ),
        (Method::DELETE, format!("/object/documents/{name}"), None),
    ] {
        let mut rb = e.req(method.clone(), &path, Cred::None);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let (s, v) = e.send(rb).await;
        assert_eq!((s, &v), (StatusCode::FORBIDDEN, &no_jwt), "{method} {path}");
    }
    assert_eq!(
        e.upload(
            Cred::None,
            "documents",
            &format!("{}/anon.txt", e.a_org),
            "x"
        )
        .await,
        403
    );
    // The routes Storage serves without a token serve public buckets only.
    let (s, v) = e
        .create_bucket(json!({"name": "pics", "public": true}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        e.upload(Cred::Bearer(&svc), "pics", "a/cat.txt", "meow")
            .await,
        200
    );
    for path in ["/object/pics/a/cat.txt", "/object/public/pics/a/cat.txt"] {
        let r = e.req(Method::GET, path, Cred::None).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.text().await.unwrap(), "meow");
    }
    let (s, v) = e
        .send(e.req(Method::GET, "/object/info/pics/a/cat.txt", Cred::None))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["size"], 4);
    let r = e
        .req(Method::HEAD, "/object/pics/a/cat.txt", Cred::None)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, v) = e
        .send(e.req(
            Method::GET,
            &format!("/object/documents/{name}"),
            Cred::None,
        ))
        .await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["error"], "Bucket not found");
    let (s, v) = e
        .send(e.req(
            Method::GET,
            &format!("/object/info/documents/{name}"),
            Cred::None,
        ))
        .await;
    assert_eq!(s, 404, "{v}");
    // An apikey that is present is still checked by the gateway.
    let r = e
        .app
        .http
        .get(e.app.url("/storage/v1/bucket"))
        .header("apikey", "not-a-key")
        .bearer_auth(&svc)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Other surfaces still need the key.
    let r = e
        .app
        .http
        .get(e.app.url("/rest/v1/systems"))
        .bearer_auth(&svc)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// One HTTP/1.1 response read from `sock`: (status, body).
async fn read_response(sock: &mut tokio::net::TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("a content-length");
            if buf.len() >= end + 4 + len {
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                return (
                    status,
                    String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string(),
                );
            }
        }
        let n = sock.read(&mut tmp).await.expect("reading the response");
        assert!(n > 0, "the server closed the connection before answering");
        buf.extend_from_slice(&tmp[..n]);
    }
}

#[tokio::test]
async fn storage_refused_uploads_are_drained_so_the_client_reads_its_4xx_and_keeps_the_connection()
{
    let e = setup().await;
    let tb = e.app.user_token(e.b);
    let svc = e.svc();
    let addr = e.app.base.trim_start_matches("http://").to_string();
    // Larger than the socket buffers: a client that sends its whole body before reading
    // (as fetch and curl do) would be reset if the server closed on the unread rest.
    let size = 16 * 1024 * 1024;
    let boundary = "dr41nb0und4ry";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"cacheControl\"\r\n\r\n3600\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"\"; filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.resize(body.len() + size, b'x');
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let path = format!("/storage/v1/object/documents/{}/big.bin", e.a_org);
    for (what, auth, want) in [
        ("no credential", String::new(), 403),
        (
            "another org's member",
            format!("Authorization: Bearer {tb}\r\n"),
            403,
        ),
        ("a bad apikey", "apikey: nope\r\n".to_string(), 401),
    ] {
        let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let exchange = async {
            sock.write_all(head.as_bytes()).await.unwrap();
            sock.write_all(&body)
                .await
                .unwrap_or_else(|err| panic!("{what}: the body could not be sent: {err}"));
            let (status, text) = read_response(&mut sock).await;
            assert_eq!(status, want, "{what}: {text}");
            let v: Value = serde_json::from_str(&text).unwrap();
            assert!(v["message"].is_string(), "{what}: {v}");
            // The connection is still good for the next request.
            sock.write_all(
                format!("GET /storage/v1/bucket/documents HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {svc}\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
            let (status, text) = read_response(&mut sock).await;
            assert_eq!(status, 200, "{what}, then: {text}");
        };
        tokio::time::timeout(Duration::from_secs(60), exchange)
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer within a minute"));
    }
    let su = e.t.superuser().await;
    let n: i64 = su
        .query_one("select count(*) from storage.objects", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

// ---- 2. list-v2 ----

#[tokio::test]
async fn storage_list_v2_pages_by_cursor_with_folders_prefixes_and_sorting() {
    let e = setup().await;
    let svc = e.svc();
    let (s, v) = e.create_bucket(json!({"name": "lv2"})).await;
    assert_eq!(s, 200, "{v}");
    let files = [
        "a.txt",
        "b.txt",
        "c.txt",
        "docs/one.txt",
        "docs/two.txt",
        "docs/sub/deep.txt",
        "docs.txt",
        "img/x.png",
        "img/y.png",
        "Z.txt",
        "aa!",
        "aa/child.txt",
        "50%_off.txt",
    ];
    for f in files {
        assert_eq!(e.upload(Cred::Bearer(&svc), "lv2", f, f).await, 200, "{f}");
    }
    // Distinct creation times in a known order (the reverse of the names), and one update.
    let su = e.t.superuser().await;
    let mut by_time: Vec<&str> = files.to_vec();
    by_time.sort();
    by_time.reverse();
    for (i, f) in by_time.iter().enumerate() {
        su.execute(
            "update storage.objects set created_at = timestamptz '2024-01-01 00:00:00+00' + make_interval(secs => $2::float8),
               updated_at = timestamptz '2024-01-01 00:00:00+00' + make_interval(secs => $2::float8)
             where bucket_id = 'lv2' and name = $1",
            &[f, &(i as f64)],
        )
        .await
        .unwrap();
    }

    // Flat: every object under the prefix, bytewise by name, over pages of 3.
    let (folders, objects, pages) = e.list_v2_all("lv2", json!({}), 3).await;
    assert!(folders.is_empty());
    assert_eq!(objects, sorted(&files));
    assert_eq!(pages, files.len().div_ceil(3));
    let (_, objects, _) = e
        .list_v2_all(
            "lv2",
            json!({"sortBy": {"column": "name", "order": "desc"}}),
            4,
        )
        .await;
    let mut want = sorted(&files);
    want.reverse();
    assert_eq!(objects, want);
    // By creation time: the order set above, and back.
    let (_, objects, _) = e
        .list_v2_all(
            "lv2",
            json!({"sortBy": {"column": "created_at", "order": "asc"}}),
            2,
        )
        .await;
    assert_eq!(objects, by_time);
    let (_, objects, _) = e
        .list_v2_all(
            "lv2",
            json!({"sortBy": {"column": "updated_at", "order": "desc"}}),
            5,
        )
        .await;
    let mut rev = by_time.clone();
    rev.reverse();
    assert_eq!(objects, rev);

    // With the delimiter: one level, folders and objects in one order and one limit.
    let (folders, objects, pages) = e
        .list_v2_all("lv2", json!({"with_delimiter": true}), 2)
        .await;
    assert_eq!(folders, ["aa/", "docs/", "img/"]);
    assert_eq!(
        objects,
        sorted(&[
            "a.txt",
            "b.txt",
            "c.txt",
            "docs.txt",
            "Z.txt",
            "aa!",
            "50%_off.txt"
        ])
    );
    assert_eq!(pages, 10usize.div_ceil(2));
    // Inside a folder: full names, the nested folder as one entry.
    let (folders, objects, _) = e
        .list_v2_all("lv2", json!({"with_delimiter": true, "prefix": "docs/"}), 1)
        .await;
    assert_eq!(folders, ["docs/sub/"]);
    assert_eq!(objects, ["docs/one.txt", "docs/two.txt"]);
    // A prefix is a string prefix, not a folder.
    let (folders, objects, _) = e
        .list_v2_all("lv2", json!({"with_delimiter": true, "prefix": "docs"}), 10)
        .await;
    assert_eq!(folders, ["docs/"]);
    assert_eq!(objects, ["docs.txt"]);
    let (_, objects, _) = e.list_v2_all("lv2", json!({"prefix": "img/"}), 10).await;
    assert_eq!(objects, ["img/x.png", "img/y.png"]);
    // `%` and `_` are plain characters.
    let (_, objects, _) = e.list_v2_all("lv2", json!({"prefix": "50%_"}), 10).await;
    assert_eq!(objects, ["50%_off.txt"]);
    let (_, objects, _) = e.list_v2_all("lv2", json!({"prefix": "%"}), 10).await;
    assert!(objects.is_empty());
    // Folders by time: the creation of their oldest object; ties by name, folders with `/`.
    let (_, v) = e
        .list_v2(
            Cred::Bearer(&svc),
            "lv2",
            json!({"with_delimiter": true, "sortBy": {"column": "created_at", "order": "asc"}, "limit": 3}),
        )
        .await;
    assert_eq!(names(&v["folders"]), ["img/", "docs/"], "{v}");
    assert_eq!(names(&v["objects"]), ["docs.txt"], "{v}");
    assert_storage_time(&v["folders"][0]["created_at"]);

    // The shapes: exactly Storage's fields, its timestamps, `nextCursor` only with more.
    let (s, v) = e
        .list_v2(Cred::Bearer(&svc), "lv2", json!({"limit": 1}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(keys(&v), ["folders", "hasNext", "nextCursor", "objects"]);
    let o = &v["objects"][0];
    assert_eq!(
        keys(o),
        [
            "created_at",
            "id",
            "last_accessed_at",
            "metadata",
            "name",
            "updated_at"
        ]
    );
    for t in ["created_at", "updated_at", "last_accessed_at"] {
        assert_storage_time(&o[t]);
    }
    assert_eq!(o["metadata"]["mimetype"], "text/plain");
    let token = v["nextCursor"].as_str().unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token)
        .unwrap();
    assert_eq!(
        String::from_utf8(decoded).unwrap(),
        format!("l:{}", o["name"].as_str().unwrap())
    );
    let (_, v) = e
        .list_v2(
            Cred::Bearer(&svc),
            "lv2",
            json!({"with_delimiter": true, "prefix": "docs/", "limit": 10}),
        )
        .await;
    assert_eq!(keys(&v), ["folders", "hasNext", "objects"]);
    let f = &v["folders"][0];
    assert_eq!(f["name"], "docs/sub/");
    assert_eq!(f["key"], "sub");
    assert_eq!(f["id"], Value::Null);
    let o = &v["objects"][0];
    assert_eq!(o["key"], "one.txt");
    assert_eq!(
        keys(o),
        [
            "created_at",
            "id",
            "key",
            "last_accessed_at",
            "metadata",
            "name",
            "updated_at",
            "user_metadata"
        ]
    );

    // Bad input: Storage's errors.
    let bad = base64::engine::general_purpose::STANDARD.encode("e:invalid");
    let (s, v) = e
        .list_v2(Cred::Bearer(&svc), "lv2", json!({"cursor": bad}))
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["message"], "Invalid Parameter continuation token");
    for body in [
        json!({"limit": 0}),
        json!({"sortBy": {"column": "size"}}),
        json!({"sortBy": {"order": "asc"}}),
        json!({"sortBy": {"column": "name", "order": "up"}}),
    ] {
        let (s, v) = e.list_v2(Cred::Bearer(&svc), "lv2", body.clone()).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["statusCode"], "400");
    }

    // RLS decides every row: Bob sees nothing of Alice's organisation, Alice sees hers.
    let (ta, tb) = (e.app.user_token(e.a), e.app.user_token(e.b));
    for i in 0..3 {
        let n = format!("{}/f/{i}.txt", e.a_org);
        assert_eq!(e.upload(Cred::Bearer(&ta), "documents", &n, "x").await, 200);
    }
    let (s, v) = e
        .list_v2(
            Cred::Bearer(&tb),
            "documents",
            json!({"with_delimiter": true}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v, json!({"hasNext": false, "folders": [], "objects": []}));
    let (_, v) = e
        .list_v2(
            Cred::Bearer(&ta),
            "documents",
            json!({"with_delimiter": true}),
        )
        .await;
    assert_eq!(names(&v["folders"]), [format!("{}/", e.a_org)]);
}

// ---- 3. custom metadata and info ----

#[tokio::test]
async fn storage_custom_metadata_is_stored_from_header_or_form_and_info_has_storages_shape() {
    let e = setup().await;
    let ta = e.app.user_token(e.a);
    let org = e.a_org;
    let b64 = |v: &Value| base64::engine::general_purpose::STANDARD.encode(v.to_string());
    let info = |name: String, authenticated: bool| {
        let path = if authenticated {
            format!("/object/info/authenticated/documents/{name}")
        } else {
            format!("/object/info/documents/{name}")
        };
        e.send(e.req(Method::GET, &path, Cred::KeyAnd(&ta)))
    };
    // x-metadata: base64 JSON on a raw upload.
    let meta = json!({"client": "Acme", "tags": ["brief", "q3"], "n": 3});
    let raw = format!("{org}/raw.txt");
    let r = e
        .req(
            Method::POST,
            &format!("/object/documents/{raw}"),
            Cred::KeyAnd(&ta),
        )
        .header("content-type", "text/plain")
        .header("cache-control", "max-age=60")
        .header("x-metadata", b64(&meta))
        .body("raw body")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, v) = info(raw.clone(), false).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        keys(&v),
        [
            "bucket_id",
            "cache_control",
            "content_type",
            "created_at",
            "etag",
            "id",
            "last_modified",
            "metadata",
            "name",
            "size",
            "version"
        ]
    );
    assert_eq!(v["metadata"], meta);
    assert_eq!(v["name"], raw);
    assert_eq!(v["bucket_id"], "documents");
    assert_eq!(v["size"], 8);
    assert_eq!(v["content_type"], "text/plain");
    assert_eq!(v["cache_control"], "max-age=60");
    assert_eq!(v["etag"], format!("\"{}\"", v["version"].as_str().unwrap()));
    assert_storage_time(&v["created_at"]);
    assert_storage_time(&v["last_modified"]);
    let (_, same) = info(raw.clone(), true).await;
    assert_eq!(same, v);
    // The multipart `metadata` part (storage-js sends Blobs that way), and `contentType`.
    let boundary = "m3tab0undary";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"cacheControl\"\r\n\r\n120\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{{\"source\":\"form\"}}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"contentType\"\r\n\r\ntext/markdown\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"\"; filename=\"blob\"\r\nContent-Type: application/octet-stream\r\n\r\n# hi\r\n--{boundary}--\r\n"
    );
    let form_name = format!("{org}/form.md");
    let r = e
        .req(
            Method::POST,
            &format!("/object/documents/{form_name}"),
            Cred::KeyAnd(&ta),
        )
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, v) = info(form_name.clone(), false).await;
    assert_eq!(v["metadata"], json!({"source": "form"}));
    assert_eq!(v["content_type"], "text/markdown");
    assert_eq!(v["cache_control"], "max-age=120");
    // None sent: `metadata: {}`. Text that is not a JSON object is ignored, as Storage does.
    let plain = format!("{org}/plain.txt");
    assert_eq!(
        e.upload(Cred::KeyAnd(&ta), "documents", &plain, "p").await,
        200
    );
    let (_, v) = info(plain.clone(), false).await;
    assert_eq!(v["metadata"], json!({}));
    for junk in [
        "not base64 !!",
        &base64::engine::general_purpose::STANDARD.encode("[1,2]"),
    ] {
        let r = e
            .req(
                Method::PUT,
                &format!("/object/documents/{plain}"),
                Cred::KeyAnd(&ta),
            )
            .header("content-type", "text/plain")
            .header("x-metadata", junk)
            .body("p2")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let (_, v) = info(plain.clone(), false).await;
        assert_eq!(v["metadata"], json!({}), "{junk}");
    }
    // A replaced object has the new upload's metadata; copy keeps it.
    let r = e
        .req(
            Method::PUT,
            &format!("/object/documents/{raw}"),
            Cred::KeyAnd(&ta),
        )
        .header("content-type", "text/plain")
        .header("x-metadata", b64(&json!({"v": 2})))
        .body("v2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        info(raw.clone(), false).await.1["metadata"],
        json!({"v": 2})
    );
    let copy = format!("{org}/copy.txt");
    let (s, v) = e
        .send(
            e.req(Method::POST, "/object/copy", Cred::KeyAnd(&ta))
                .json(&json!({"bucketId": "documents", "sourceKey": raw, "destinationKey": copy})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(info(copy, false).await.1["metadata"], json!({"v": 2}));
    // Past the 8 KiB cap, header or part: 413, nothing stored.
    let big = json!({"pad": "x".repeat(8 * 1024)});
    let too_big = format!("{org}/too-big.txt");
    let (s, v) = e
        .send(
            e.req(
                Method::POST,
                &format!("/object/documents/{too_big}"),
                Cred::KeyAnd(&ta),
            )
            .header("content-type", "text/plain")
            .header("x-metadata", b64(&big))
            .body("x"),
        )
        .await;
    assert_eq!(s, 413, "{v}");
    assert_eq!(
        v["message"],
        "The user_metadata exceeded the maximum allowed size"
    );
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{big}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"\"; filename=\"blob\"\r\n\r\nx\r\n--{boundary}--\r\n"
    );
    let (s, v) = e
        .send(
            e.req(
                Method::POST,
                &format!("/object/documents/{too_big}"),
                Cred::KeyAnd(&ta),
            )
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(form),
        )
        .await;
    assert_eq!(s, 413, "{v}");
    let su = e.t.superuser().await;
    let n: i64 = su
        .query_one(
            "select count(*) from storage.objects where name = $1",
            &[&too_big],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

// ---- 4. buckets ----

#[tokio::test]
async fn storage_buckets_parse_sizes_update_partially_and_render_as_storage() {
    let e = setup().await;
    let svc = e.svc();
    let get =
        |id: &'static str| e.send(e.req(Method::GET, &format!("/bucket/{id}"), Cred::Bearer(&svc)));
    // Units as Storage parses them: decimal, three significant digits, nothing else.
    for (id, limit, want) in [
        ("u-mb", json!("20mb"), json!(20_000_000)),
        ("u-kb", json!("30KB"), json!(30_000)),
        ("u-prec", json!("1.2345MB"), json!(1_230_000)),
        ("u-num", json!(1000), json!(1000)),
        ("u-null", json!(null), json!(null)),
    ] {
        let (s, v) = e
            .create_bucket(json!({"name": id, "file_size_limit": limit}))
            .await;
        assert_eq!(s, 200, "{id}: {v}");
        assert_eq!(v, json!({"name": id}));
        assert_eq!(get(id).await.1["file_size_limit"], want, "{id}");
    }
    for bad in [json!("20MiB"), json!("20 MB"), json!("10485760")] {
        let (s, v) = e
            .create_bucket(json!({"name": "u-bad", "file_size_limit": bad}))
            .await;
        assert_eq!(s, 400, "{bad}: {v}");
        assert_eq!(
            v["message"],
            "Invalid file size format, hint: use 20GB / 20MB / 30KB / 3B"
        );
    }
    // Above the server's limit (50 MiB here): Storage's 413.
    let (s, v) = e
        .create_bucket(json!({"name": "u-big", "file_size_limit": "1gb"}))
        .await;
    assert_eq!(s, 413, "{v}");
    let (s, v) = e
        .create_bucket(json!({"name": "u-mime", "allowed_mime_types": ["image/png", "nope"]}))
        .await;
    assert_eq!(s, 415, "{v}");
    assert_eq!(v["message"], "mime type nope is not supported");
    // The limit holds for uploads: 20 MB is 20,000,000 bytes.
    let (s, _) = e
        .create_bucket(json!({"name": "tiny", "file_size_limit": "0.01kb"}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(get("tiny").await.1["file_size_limit"], 10);
    assert_eq!(
        e.upload(Cred::Bearer(&svc), "tiny", "ok.txt", "0123456789")
            .await,
        200
    );
    assert_eq!(
        e.upload(Cred::Bearer(&svc), "tiny", "no.txt", "0123456789A")
            .await,
        413
    );

    // Partial updates keep what the body does not name.
    let (s, v) = e
        .create_bucket(json!({"name": "part", "public": false, "file_size_limit": "2mb", "allowed_mime_types": ["image/png"]}))
        .await;
    assert_eq!(s, 200, "{v}");
    let before = get("part").await.1;
    let put = |body: Value| {
        e.send(
            e.req(Method::PUT, "/bucket/part", Cred::Bearer(&svc))
                .json(&body),
        )
    };
    let (s, v) = put(json!({"public": true})).await;
    assert_eq!(
        (s, v),
        (StatusCode::OK, json!({"message": "Successfully updated"}))
    );
    let after = get("part").await.1;
    assert_eq!(after["public"], true);
    assert_eq!(after["file_size_limit"], 2_000_000);
    assert_eq!(after["allowed_mime_types"], json!(["image/png"]));
    assert_eq!(after["created_at"], before["created_at"]);
    let (s, _) = put(json!({"file_size_limit": "5kb"})).await;
    assert_eq!(s, 200);
    let after = get("part").await.1;
    assert_eq!(
        (after["public"].clone(), after["file_size_limit"].clone()),
        (json!(true), json!(5000))
    );
    assert_eq!(after["allowed_mime_types"], json!(["image/png"]));
    let (s, _) = put(json!({"allowed_mime_types": null})).await;
    assert_eq!(s, 200);
    let after = get("part").await.1;
    assert_eq!(after["allowed_mime_types"], Value::Null);
    assert_eq!(after["file_size_limit"], 5000);
    let (s, _) = put(json!({"file_size_limit": null, "public": false})).await;
    assert_eq!(s, 200);
    let after = get("part").await.1;
    assert_eq!(
        (after["public"].clone(), after["file_size_limit"].clone()),
        (json!(false), Value::Null)
    );
    let (s, v) = e
        .send(
            e.req(Method::PUT, "/bucket/nope", Cred::Bearer(&svc))
                .json(&json!({"public": true})),
        )
        .await;
    assert_eq!(s, 404, "{v}");

    // Storage's rendering: its timestamps; `type` in the listing; the listing's options.
    let (_, b) = get("part").await;
    assert_eq!(
        keys(&b),
        [
            "allowed_mime_types",
            "created_at",
            "file_size_limit",
            "id",
            "name",
            "owner",
            "public",
            "updated_at"
        ]
    );
    assert_storage_time(&b["created_at"]);
    assert_storage_time(&b["updated_at"]);
    let (s, list) = e
        .send(e.req(Method::GET, "/bucket", Cred::Bearer(&svc)))
        .await;
    assert_eq!(s, 200, "{list}");
    for b in list.as_array().unwrap() {
        assert_eq!(b["type"], "STANDARD", "{b}");
        assert_storage_time(&b["created_at"]);
    }
    let (_, list) = e
        .send(e.req(
            Method::GET,
            "/bucket?search=u-&sortColumn=id&sortOrder=desc&limit=2&offset=1",
            Cred::Bearer(&svc),
        ))
        .await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["u-num", "u-null"]);

    // Storage's messages for delete and empty.
    assert_eq!(
        e.upload(Cred::Bearer(&svc), "part", "f.txt", "f").await,
        200
    );
    let (s, v) = e
        .send(e.req(Method::DELETE, "/bucket/part", Cred::Bearer(&svc)))
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(
        v,
        json!({"statusCode": "409", "error": "ResourceNotEmpty", "message": "The bucket you tried to delete is not empty"})
    );
    // Objects the caller cannot see still keep a bucket from being deleted, and one who may
    // see but not delete them is told so instead of "emptied".
    let su = e.t.superuser().await;
    su.batch_execute(
        "create policy part_bucket_read on storage.buckets for select to authenticated using (id = 'part');
         create policy part_objects_read on storage.objects for select to authenticated using (bucket_id = 'part');",
    )
    .await
    .unwrap();
    let ta = e.app.user_token(e.a);
    let (s, v) = e
        .send(e.req(Method::POST, "/bucket/part/empty", Cred::Bearer(&ta)))
        .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(
        v["message"],
        "Cannot delete: f.txt, you may have SELECT but not DELETE permissions"
    );
    let (s, v) = e
        .send(e.req(Method::POST, "/bucket/part/empty", Cred::Bearer(&svc)))
        .await;
    assert_eq!(
        (s, v),
        (StatusCode::OK, json!({"message": "Successfully emptied"}))
    );
    let (s, v) = e
        .send(e.req(Method::DELETE, "/bucket/part", Cred::Bearer(&svc)))
        .await;
    assert_eq!(
        (s, v),
        (StatusCode::OK, json!({"message": "Successfully deleted"}))
    );
    let (s, v) = e
        .send(e.req(Method::DELETE, "/bucket/part", Cred::Bearer(&svc)))
        .await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["error"], "Bucket not found");
}

// ---- 7. not implemented: vector and analytics buckets ----

#[tokio::test]
async fn storage_vector_and_analytics_buckets_answer_feature_not_enabled() {
    let e = setup().await;
    let svc = e.svc();
    for (method, path, what) in [
        (Method::POST, "/vector/CreateVectorBucket", "vector buckets"),
        (Method::POST, "/vector/ListVectorBuckets", "vector buckets"),
        (Method::POST, "/vector/QueryVectors", "vector buckets"),
        (Method::POST, "/iceberg/bucket", "analytics buckets"),
        (Method::GET, "/iceberg/bucket", "analytics buckets"),
        (
            Method::DELETE,
            "/iceberg/bucket/events",
            "analytics buckets",
        ),
        (Method::GET, "/iceberg/v1/config", "analytics buckets"),
    ] {
        let (s, v) = e
            .send(
                e.req(method.clone(), path, Cred::Bearer(&svc))
                    .json(&json!({"vectorBucketName": "v"})),
            )
            .await;
        assert_eq!(s, 403, "{method} {path}: {v}");
        assert_eq!(
            v,
            json!({"statusCode": "403", "error": "FeatureNotEnabled",
                   "message": format!("feature not enabled for this tenant: {what} are not available on this server")}),
            "{method} {path}"
        );
    }
    let (s, v) = e
        .create_bucket(json!({"name": "lake", "type": "ANALYTICS"}))
        .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"], "FeatureNotEnabled");
    assert_eq!(
        e.send(e.req(Method::GET, "/bucket/lake", Cred::Bearer(&svc)))
            .await
            .0,
        404
    );
}

// ---- 6. resumable uploads (TUS 1.0) ----

const TUS: &str = "/storage/v1/upload/resumable";

/// A TUS request (`Tus-Resumable: 1.0.0`) to `path` (absolute, from `Location`).
fn tus(e: &Env, method: Method, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
    let r = e
        .app
        .http
        .request(method, e.app.url(path))
        .header("tus-resumable", "1.0.0");
    match token {
        Some(t) => r.bearer_auth(t),
        None => r,
    }
}

fn tus_metadata(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k} {}",
                base64::engine::general_purpose::STANDARD.encode(v)
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", r.headers()))
        .to_str()
        .unwrap()
        .to_string()
}

/// Files staged for unfinished resumable uploads.
fn staged(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir.join(".resumable"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn object_count(e: &Env, name: &str) -> i64 {
    let su = e.t.superuser().await;
    su.query_one(
        "select count(*) from storage.objects where name = $1",
        &[&name],
    )
    .await
    .unwrap()
    .get(0)
}

/// Polls until `f` is true (a minute at most): the server finishes what a client dropped on
/// its own schedule.
async fn eventually<F, Fut>(what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    agencyflow_testkit::wait::until(Duration::from_secs(60), what, f).await
}

#[tokio::test]
async fn storage_resumable_upload_creates_patches_resumes_after_a_drop_and_writes_the_object_at_the_end(
) {
    let e = setup().await;
    let (ta, tb) = (e.app.user_token(e.a), e.app.user_token(e.b));
    let dir = e._dir.path().to_path_buf();
    let name = format!("{}/tus/report.bin", e.a_org);
    let data: Vec<u8> = (0..(3 * 1024 * 1024 + 12_345u32))
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let len = data.len();
    let meta = tus_metadata(&[
        ("bucketName", "documents"),
        ("objectName", &name),
        ("contentType", "application/pdf"),
        ("cacheControl", "60"),
        ("metadata", r#"{"client":"Acme"}"#),
    ]);
    // Refused at creation, before anything is stored.
    for (what, token, length, metadata, want) in [
        ("another org", Some(tb.as_str()), len, meta.clone(), 403),
        ("no credential", None, len, meta.clone(), 403),
        (
            "past the server's limit",
            Some(ta.as_str()),
            51 * 1024 * 1024,
            meta.clone(),
            413,
        ),
        (
            "no such bucket",
            Some(ta.as_str()),
            len,
            tus_metadata(&[("bucketName", "nope"), ("objectName", "a.bin")]),
            404,
        ),
        (
            "no object name",
            Some(ta.as_str()),
            len,
            tus_metadata(&[("bucketName", "documents")]),
            400,
        ),
    ] {
        let r = tus(&e, Method::POST, TUS, token)
            .header("upload-length", length.to_string())
            .header("upload-metadata", metadata)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{what}: {}", r.text().await.unwrap());
    }
    let r = e
        .app
        .http
        .post(e.app.url(TUS))
        .bearer_auth(&ta)
        .header("upload-length", "1")
        .header("upload-metadata", meta.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412, "Tus-Resumable is required");
    assert!(staged(&dir).is_empty(), "{:?}", staged(&dir));

    // Created with only the user's bearer token (as storage-js/tus-js-client send it).
    let r = tus(&e, Method::POST, TUS, Some(&ta))
        .header("upload-length", len.to_string())
        .header("upload-metadata", meta.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "tus-resumable"), "1.0.0");
    let location = header(&r, "location");
    assert!(
        location.starts_with("/storage/v1/upload/resumable/"),
        "{location}"
    );
    assert!(header(&r, "upload-expires").ends_with(" GMT"));
    assert_eq!(
        object_count(&e, &name).await,
        0,
        "no row before the last byte"
    );
    let head = |token: &str| tus(&e, Method::HEAD, &location, Some(token)).send();
    let r = head(&ta).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "upload-offset"), "0");
    assert_eq!(header(&r, "upload-length"), len.to_string());
    // Only its creator sees it.
    assert_eq!(head(&tb).await.unwrap().status(), 404);
    assert_eq!(
        tus(&e, Method::HEAD, &location, None)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );

    let patch = |offset: usize, chunk: Vec<u8>, token: &str| {
        tus(&e, Method::PATCH, &location, Some(token))
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", offset.to_string())
            .body(chunk)
            .send()
    };
    let mib = 1024 * 1024;
    let r = patch(0, data[..mib].to_vec(), &ta).await.unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    assert_eq!(header(&r, "upload-offset"), mib.to_string());
    // A stale offset, another user, a wrong type: refused, nothing appended.
    assert_eq!(
        patch(0, data[..10].to_vec(), &ta).await.unwrap().status(),
        409
    );
    assert_eq!(
        patch(mib, data[mib..mib + 10].to_vec(), &tb)
            .await
            .unwrap()
            .status(),
        404
    );
    let r = tus(&e, Method::PATCH, &location, Some(&ta))
        .header("content-type", "application/octet-stream")
        .header("upload-offset", mib.to_string())
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);

    // The connection drops halfway through a chunk: what arrived is kept.
    let addr = e.app.base.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let sent = 300 * 1024;
    sock.write_all(
        format!(
            "PATCH {location} HTTP/1.1\r\nHost: localhost\r\nTus-Resumable: 1.0.0\r\nAuthorization: Bearer {ta}\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: {mib}\r\nContent-Length: {mib}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    sock.write_all(&data[mib..mib + sent]).await.unwrap();
    sock.shutdown().await.unwrap();
    drop(sock);
    let resumed_at = (mib + sent).to_string();
    eventually("the dropped chunk's bytes are kept", || async {
        let r = head(&ta).await.unwrap();
        header(&r, "upload-offset") == resumed_at
    })
    .await;
    assert_eq!(object_count(&e, &name).await, 0);

    // Resumed from there to the end: the object is written, as Alice, with its metadata.
    let mut offset = mib + sent;
    while offset < len {
        let end = (offset + 2 * mib).min(len);
        let r = patch(offset, data[offset..end].to_vec(), &ta)
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
        assert_eq!(header(&r, "upload-offset"), end.to_string());
        if end == len {
            assert_eq!(header(&r, "tus-complete"), "1");
        }
        offset = end;
    }
    assert_eq!(object_count(&e, &name).await, 1);
    let r = e
        .req(
            Method::GET,
            &format!("/object/documents/{name}"),
            Cred::Bearer(&ta),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/pdf");
    assert_eq!(r.headers()["cache-control"], "max-age=60");
    assert!(
        r.bytes().await.unwrap().as_ref() == data.as_slice(),
        "bytes identical"
    );
    let (_, info) = e
        .send(e.req(
            Method::GET,
            &format!("/object/info/documents/{name}"),
            Cred::Bearer(&ta),
        ))
        .await;
    assert_eq!(info["metadata"], json!({"client": "Acme"}));
    let su = e.t.superuser().await;
    let owner: Option<Uuid> = su
        .query_one(
            "select owner from storage.objects where name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, Some(e.a));
    assert!(staged(&dir).is_empty(), "{:?}", staged(&dir));
    assert_eq!(
        head(&ta).await.unwrap().status(),
        404,
        "finished uploads are gone"
    );

    // The name is now taken: a new upload needs x-upsert.
    let r = tus(&e, Method::POST, TUS, Some(&ta))
        .header("upload-length", "3")
        .header("upload-metadata", meta.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    // An empty file is written at creation (tus-js-client sends no PATCH for it).
    let empty = format!("{}/tus/empty.txt", e.a_org);
    let r = tus(&e, Method::POST, TUS, Some(&ta))
        .header("upload-length", "0")
        .header(
            "upload-metadata",
            tus_metadata(&[("bucketName", "documents"), ("objectName", &empty)]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "tus-complete"), "1");
    assert_eq!(object_count(&e, &empty).await, 1);
    // Termination removes an upload and its parts.
    let r = tus(&e, Method::POST, TUS, Some(&ta))
        .header("upload-length", "3")
        .header("upload-metadata", meta.clone())
        .header("x-upsert", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let second = header(&r, "location");
    assert!(!staged(&dir).is_empty());
    let r = tus(&e, Method::DELETE, &second, Some(&ta))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        tus(&e, Method::HEAD, &second, Some(&ta))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert!(staged(&dir).is_empty(), "{:?}", staged(&dir));
}

#[tokio::test]
async fn storage_resumable_uploads_abandoned_past_their_expiry_are_removed() {
    let t = TestDb::new().await;
    let su = t.superuser().await;
    let a = Uuid::new_v4();
    su.execute(
        "insert into auth.users (id, email) values ($1, 'a@a.test')",
        &[&a],
    )
    .await
    .unwrap();
    let org: Uuid = su
        .query_one("select org_id from team_members where user_id = $1", &[&a])
        .await
        .unwrap()
        .get(0);
    let dir = tempfile::tempdir().unwrap();
    let app = t
        .spawn_app_with(&[
            "--storage-dir",
            dir.path().to_str().unwrap(),
            "--storage-tus-url-expiry-ms",
            "1500",
        ])
        .await;
    let ta = app.user_token(a);
    let name = format!("{org}/abandoned.bin");
    let r = app
        .http
        .post(app.url(TUS))
        .header("tus-resumable", "1.0.0")
        .bearer_auth(&ta)
        .header("upload-length", "1000")
        .header(
            "upload-metadata",
            tus_metadata(&[("bucketName", "documents"), ("objectName", &name)]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let location = header(&r, "location");
    let r = app
        .http
        .patch(app.url(&location))
        .header("tus-resumable", "1.0.0")
        .bearer_auth(&ta)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "0")
        .body(vec![1u8; 400])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(staged(dir.path()).len(), 2, "{:?}", staged(dir.path()));
    // Abandoned: the sweeper removes its parts once it has expired, and it is gone.
    eventually("the abandoned upload's parts are removed", || async {
        staged(dir.path()).is_empty()
    })
    .await;
    let r = app
        .http
        .head(app.url(&location))
        .header("tus-resumable", "1.0.0")
        .bearer_auth(&ta)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let n: i64 = su
        .query_one(
            "select count(*) from storage.objects where name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}
