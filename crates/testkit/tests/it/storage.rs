//! `/storage/v1`: every route storage-js uses, RLS across orgs on the documents bucket,
//! signed URLs (expired, tampered, reused for the wrong purpose), path validation, bucket
//! limits, and crash safety (a refused upload leaves neither row nor file).
use std::path::{Path, PathBuf};

use agencyflow_testkit::{TestApp, TestDb, TEST_JWT_SECRET};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

pub(crate) struct Env {
    pub t: TestDb,
    pub app: TestApp,
    pub dir: tempfile::TempDir,
    pub a: Uuid,
    pub a_org: Uuid,
    pub b: Uuid,
    pub b_org: Uuid,
}

pub(crate) async fn setup_with(extra: &[&str]) -> Env {
    setup_in(tempfile::tempdir().unwrap(), extra).await
}

/// As [`setup_with`], with `dir` as the storage directory.
async fn setup_in(dir: tempfile::TempDir, extra: &[&str]) -> Env {
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
    let org = |u: Uuid| {
        let su = &su;
        async move {
            su.query_one("select org_id from team_members where user_id = $1", &[&u])
                .await
                .unwrap()
                .get::<_, Uuid>(0)
        }
    };
    let (a_org, b_org) = (org(a).await, org(b).await);
    let path = dir.path().to_str().unwrap().to_string();
    let mut args = vec!["--storage-dir", path.as_str()];
    args.extend_from_slice(extra);
    let app = t.spawn_app_with(&args).await;
    Env {
        t,
        app,
        dir,
        a,
        a_org,
        b,
        b_org,
    }
}

pub(crate) async fn setup() -> Env {
    setup_with(&[]).await
}

impl Env {
    pub(crate) fn req(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let r = self
            .app
            .http
            .request(method, self.app.url(&format!("/storage/v1{path}")))
            .header("apikey", &self.app.anon_key);
        match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }
    /// Sends a request without a body.
    async fn call(&self, method: Method, path: &str, token: Option<&str>) -> reqwest::Response {
        self.req(method, path, token).send().await.unwrap()
    }
    /// Sends a request with a JSON body.
    async fn call_json(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> reqwest::Response {
        self.req(method, path, token)
            .json(body)
            .send()
            .await
            .unwrap()
    }
    pub(crate) fn ta(&self) -> String {
        self.app.user_token(self.a)
    }
    pub(crate) fn tb(&self) -> String {
        self.app.user_token(self.b)
    }
    pub(crate) fn service(&self) -> String {
        self.app.service_role_key.clone()
    }
    async fn upload(
        &self,
        token: &str,
        bucket: &str,
        name: &str,
        body: &'static [u8],
        mime: &str,
    ) -> reqwest::Response {
        self.req(
            Method::POST,
            &format!("/object/{bucket}/{name}"),
            Some(token),
        )
        .header("content-type", mime)
        .body(body)
        .send()
        .await
        .unwrap()
    }
    async fn row_count(&self, name_like: &str) -> i64 {
        let su = self.t.superuser().await;
        su.query_one(
            "select count(*) from storage.objects where name like $1",
            &[&name_like],
        )
        .await
        .unwrap()
        .get(0)
    }
    fn files(&self) -> Vec<PathBuf> {
        fn walk(p: &Path, out: &mut Vec<PathBuf>) {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    let path = e.path();
                    if path.is_dir() {
                        walk(&path, out);
                    } else {
                        out.push(path);
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), &mut out);
        out
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

fn assert_error(body: &Value, status: &str) {
    assert_eq!(body["statusCode"], status, "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert!(body["message"].is_string(), "{body}");
}

#[tokio::test]
async fn storage_upload_download_info_exists_and_replace() {
    let e = setup().await;
    let ta = e.ta();
    let name = format!("{}/briefs/brief one.txt", e.a_org);
    let (s, v) = json(
        e.upload(&ta, "documents", &name, b"hello storage", "text/plain")
            .await,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["Key"], format!("documents/{name}"));
    assert!(v["Id"].as_str().unwrap().parse::<Uuid>().is_ok());

    let r = e
        .call(Method::GET, &format!("/object/documents/{name}"), Some(&ta))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.headers()["content-length"], "13");
    assert!(r.headers().contains_key("etag"));
    assert!(r.headers().contains_key("last-modified"));
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"hello storage");
    // The /authenticated/ form and ?download= (Content-Disposition).
    let r = e
        .req(
            Method::GET,
            &format!("/object/authenticated/documents/{name}?download"),
            Some(&ta),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains("brief%20one.txt"));

    let (s, info) = json(
        e.req(
            Method::GET,
            &format!("/object/info/documents/{name}"),
            Some(&ta),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{info}");
    assert_eq!(info["size"], 13);
    assert_eq!(info["content_type"], "text/plain");
    assert_eq!(info["name"], name);
    assert_eq!(info["bucket_id"], "documents");

    let r = e
        .req(
            Method::HEAD,
            &format!("/object/documents/{name}"),
            Some(&ta),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = e
        .req(
            Method::HEAD,
            &format!("/object/documents/{}/nope.txt", e.a_org),
            Some(&ta),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (s, v) = json(
        e.req(
            Method::GET,
            &format!("/object/documents/{}/nope.txt", e.a_org),
            Some(&ta),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(
        v,
        json!({"statusCode": "404", "error": "not_found", "message": "Object not found"})
    );

    // No upsert: the name is taken.
    let (s, v) = json(
        e.upload(&ta, "documents", &name, b"second", "text/plain")
            .await,
    )
    .await;
    assert_eq!(s, 409, "{v}");
    assert_error(&v, "409");
    // x-upsert: true replaces; PUT (update) too. Each replacement removes the old version's file.
    let r = e
        .req(
            Method::POST,
            &format!("/object/documents/{name}"),
            Some(&ta),
        )
        .header("x-upsert", "true")
        .header("content-type", "text/markdown")
        .body("# second")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = e
        .req(Method::PUT, &format!("/object/documents/{name}"), Some(&ta))
        .header("content-type", "text/plain")
        .body("third!")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = e
        .call(Method::GET, &format!("/object/documents/{name}"), Some(&ta))
        .await;
    assert_eq!(r.text().await.unwrap(), "third!");
    assert_eq!(
        e.files().len(),
        1,
        "old versions are removed: {:?}",
        e.files()
    );
    assert_eq!(e.row_count(&format!("{}/%", e.a_org)).await, 1);

    // Delete one.
    let (s, v) = json(
        e.req(
            Method::DELETE,
            &format!("/object/documents/{name}"),
            Some(&ta),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(e.files().len(), 0);
    let r = e
        .req(
            Method::DELETE,
            &format!("/object/documents/{name}"),
            Some(&ta),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn storage_rls_isolates_orgs() {
    let e = setup().await;
    let (ta, tb) = (e.ta(), e.tb());
    let name = format!("{}/secret.txt", e.a_org);
    assert_eq!(
        e.upload(&ta, "documents", &name, b"org A only", "text/plain")
            .await
            .status(),
        200
    );
    assert_eq!(
        e.upload(
            &tb,
            "documents",
            &format!("{}/b.txt", e.b_org),
            b"org B",
            "text/plain"
        )
        .await
        .status(),
        200
    );

    // B cannot read, see, list, sign, inspect or overwrite A's file.
    let r = e
        .call(Method::GET, &format!("/object/documents/{name}"), Some(&tb))
        .await;
    assert_eq!(r.status(), 404);
    let r = e
        .req(
            Method::HEAD,
            &format!("/object/documents/{name}"),
            Some(&tb),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = e
        .req(
            Method::GET,
            &format!("/object/info/documents/{name}"),
            Some(&tb),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (s, v) = json(
        e.call_json(
            Method::POST,
            "/object/list/documents",
            Some(&tb),
            &json!({"prefix": e.a_org.to_string()}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v, json!([]));
    let (_, v) = json(
        e.call_json(
            Method::POST,
            "/object/list/documents",
            Some(&tb),
            &json!({"prefix": ""}),
        )
        .await,
    )
    .await;
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![e.b_org.to_string().as_str()],
        "B sees only its own org folder"
    );
    let r = e
        .req(
            Method::POST,
            &format!("/object/sign/documents/{name}"),
            Some(&tb),
        )
        .json(&json!({"expiresIn": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (s, v) = json(
        e.call_json(
            Method::POST,
            "/object/sign/documents",
            Some(&tb),
            &json!({"expiresIn": 60, "paths": [name]}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        v[0]["signedURL"].is_null() && v[0]["error"].is_string(),
        "{v}"
    );
    let r = e
        .req(
            Method::POST,
            &format!("/object/upload/sign/documents/{name}"),
            Some(&tb),
        )
        .header("x-upsert", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    let r = e
        .req(
            Method::POST,
            &format!("/object/documents/{name}"),
            Some(&tb),
        )
        .header("x-upsert", "true")
        .body("overwritten by B")
        .send()
        .await
        .unwrap();
    let (s, v) = json(r).await;
    assert_eq!(s, 403, "{v}");
    assert_error(&v, "403");
    let r = e
        .req(Method::PUT, &format!("/object/documents/{name}"), Some(&tb))
        .body("overwritten by B")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // B cannot write into A's folder, nor move or copy A's file, nor delete it.
    assert_eq!(
        e.upload(
            &tb,
            "documents",
            &format!("{}/planted.txt", e.a_org),
            b"x",
            "text/plain"
        )
        .await
        .status(),
        403
    );
    let r = e.call_json(Method::POST, "/object/move", Some(&tb), &json!({"bucketId": "documents", "sourceKey": name, "destinationKey": format!("{}/stolen.txt", e.b_org)})).await;
    assert_eq!(r.status(), 404);
    let r = e.call_json(Method::POST, "/object/copy", Some(&tb), &json!({"bucketId": "documents", "sourceKey": name, "destinationKey": format!("{}/stolen.txt", e.b_org)})).await;
    assert_eq!(r.status(), 404);
    // Nor can B move its own file into A's folder.
    let r = e.call_json(Method::POST, "/object/move", Some(&tb), &json!({"bucketId": "documents", "sourceKey": format!("{}/b.txt", e.b_org), "destinationKey": format!("{}/b.txt", e.a_org)})).await;
    assert_eq!(r.status(), 403);
    let (s, v) = json(
        e.call_json(
            Method::DELETE,
            "/object/documents",
            Some(&tb),
            &json!({"prefixes": [name]}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v, json!([]));

    // Anonymous callers see nothing; non-uuid and top-level names are refused, not errors.
    let r = e
        .call(Method::GET, &format!("/object/documents/{name}"), None)
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        e.upload(&ta, "documents", "misc/readme.txt", b"x", "text/plain")
            .await
            .status(),
        403
    );
    assert_eq!(
        e.upload(&ta, "documents", &e.a_org.to_string(), b"x", "text/plain")
            .await
            .status(),
        403
    );
    // A private bucket is not public.
    let r = e
        .app
        .http
        .get(
            e.app
                .url(&format!("/storage/v1/object/public/documents/{name}")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // A still has it, intact.
    let r = e
        .call(Method::GET, &format!("/object/documents/{name}"), Some(&ta))
        .await;
    assert_eq!(r.text().await.unwrap(), "org A only");
    assert_eq!(e.files().len(), 2);
}

#[tokio::test]
async fn storage_refused_upload_leaves_no_row_and_no_file() {
    let e = setup_with(&["--storage-file-size-limit", "1000"]).await;
    let tb = e.tb();
    // Refused by RLS after the bytes were written: the staged file is removed.
    let r = e
        .upload(
            &tb,
            "documents",
            &format!("{}/planted.txt", e.a_org),
            b"payload",
            "text/plain",
        )
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(e.row_count("%planted%").await, 0);
    assert!(e.files().is_empty(), "no file is left: {:?}", e.files());
    // Refused for size while streaming (multipart has no usable length up front).
    let big = vec![b'x'; 5000];
    let (ct, body) = multipart("big.bin", "application/octet-stream", &big);
    let r = e
        .req(
            Method::POST,
            &format!("/object/documents/{}/big.bin", e.b_org),
            Some(&tb),
        )
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    let (s, v) = json(r).await;
    assert_eq!(s, 413, "{v}");
    assert_error(&v, "413");
    assert_eq!(e.row_count("%big.bin").await, 0);
    assert!(e.files().is_empty(), "no file is left: {:?}", e.files());
    // A duplicate (unique violation) after the bytes were written: nothing left either.
    assert_eq!(
        e.upload(
            &tb,
            "documents",
            &format!("{}/one.txt", e.b_org),
            b"1",
            "text/plain"
        )
        .await
        .status(),
        200
    );
    assert_eq!(
        e.upload(
            &tb,
            "documents",
            &format!("{}/one.txt", e.b_org),
            b"2",
            "text/plain"
        )
        .await
        .status(),
        409
    );
    assert_eq!(e.files().len(), 1, "{:?}", e.files());
    let r = e
        .req(
            Method::GET,
            &format!("/object/documents/{}/one.txt", e.b_org),
            Some(&tb),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "1");
}

/// A 1 MiB tmpfs mounted on a directory (the tests run as root), lazily unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path) -> SmallDisk {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "mounting a 1 MiB tmpfs (needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(dir.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn storage_disk_full_is_507_and_leaves_no_file_and_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(dir.path());
    let e = setup_in(dir, &[]).await;
    // Dropped before `e`: unmounted before the temporary directory is removed.
    let _disk = disk;
    let tb = e.tb();
    // Bigger than the whole file system, well under the size limit.
    let big: &'static [u8] = Box::leak(vec![b'x'; 3 << 20].into_boxed_slice());
    let r = e
        .upload(
            &tb,
            "documents",
            &format!("{}/big.bin", e.b_org),
            big,
            "application/octet-stream",
        )
        .await;
    let (s, v) = json(r).await;
    assert_eq!(s, 507, "{v}");
    assert_error(&v, "507");
    assert_eq!(v["error"], "InsufficientStorage", "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("No space left"),
        "{v}"
    );
    assert_eq!(e.row_count("%big.bin").await, 0);
    // Temporary files included (`.tmp/`): the file system is empty again.
    assert!(e.files().is_empty(), "no file is left: {:?}", e.files());
    // The same as multipart (storage-js's form upload).
    let (ct, body) = multipart("big2.bin", "application/octet-stream", big);
    let r = e
        .req(
            Method::POST,
            &format!("/object/documents/{}/big2.bin", e.b_org),
            Some(&tb),
        )
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    let (s, v) = json(r).await;
    assert_eq!(s, 507, "{v}");
    assert_error(&v, "507");
    assert_eq!(e.row_count("%big2.bin").await, 0);
    assert!(e.files().is_empty(), "no file is left: {:?}", e.files());
    // Space was given back: a small upload still works and is readable.
    let r = e
        .upload(
            &tb,
            "documents",
            &format!("{}/small.txt", e.b_org),
            b"still works",
            "text/plain",
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(e.row_count("%small.txt").await, 1);
    assert_eq!(e.files().len(), 1, "{:?}", e.files());
    let r = e
        .req(
            Method::GET,
            &format!("/object/documents/{}/small.txt", e.b_org),
            Some(&tb),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "still works");
}

fn multipart(filename: &str, mime: &str, data: &[u8]) -> (String, Vec<u8>) {
    let boundary = "----agencyflowboundary7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"cacheControl\"\r\n\r\n120\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"\"; filename=\"{filename}\"\r\nContent-Type: {mime}\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test]
async fn storage_multipart_upload_as_storage_js_sends_blobs() {
    let e = setup().await;
    let ta = e.ta();
    let name = format!("{}/logo.png", e.a_org);
    let data: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let (ct, body) = multipart("logo.png", "image/png", &data);
    let r = e
        .req(
            Method::POST,
            &format!("/object/documents/{name}"),
            Some(&ta),
        )
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = e
        .call(Method::GET, &format!("/object/documents/{name}"), Some(&ta))
        .await;
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.headers()["cache-control"], "max-age=120");
    assert_eq!(r.bytes().await.unwrap().as_ref(), data.as_slice());
}

#[tokio::test]
async fn storage_path_traversal_and_bad_names_are_refused() {
    let e = setup().await;
    let ta = e.ta();
    let org = e.a_org;
    for bad in [
        format!("{org}/..%2F..%2Fescape.txt"),
        format!("{org}/%2E%2E%2Fescape.txt"),
        format!("{org}/a%00b.txt"),
        format!("{org}/a%5C..%5Cb.txt"),
        format!("{org}//double.txt"),
        format!("{org}/a%2F.%2Fb.txt"),
        format!("%2F{org}/abs.txt"),
    ] {
        let r = e
            .req(Method::POST, &format!("/object/documents/{bad}"), Some(&ta))
            .body("x")
            .send()
            .await
            .unwrap();
        let (s, v) = json(r).await;
        assert_eq!(s, 400, "{bad}: {v}");
        assert_error(&v, "400");
    }
    let r = e.call_json(Method::POST, "/object/move", Some(&ta), &json!({"bucketId": "documents", "sourceKey": format!("{org}/a.txt"), "destinationKey": format!("{org}/../../x")})).await;
    assert_eq!(r.status(), 400);
    let r = e
        .call_json(
            Method::POST,
            "/object/copy",
            Some(&ta),
            &json!({"bucketId": "..", "sourceKey": "a/b", "destinationKey": "a/c"}),
        )
        .await;
    assert_eq!(r.status(), 400);
    // A literal `..` in the request line (no client-side normalisation).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = e.app.base.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "GET /storage/v1/object/documents/{org}/../../../etc/passwd HTTP/1.1\r\nHost: x\r\napikey: {}\r\nConnection: close\r\n\r\n",
        e.app.anon_key
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    sock.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(e.files().is_empty());
}

#[tokio::test]
async fn storage_bucket_size_and_mime_limits() {
    let e = setup().await;
    let svc = e.service();
    let (s, v) = json(
        e.call_json(Method::POST, "/bucket", Some(&svc), &json!({"id": "limited", "name": "limited", "public": false, "file_size_limit": "1KB", "allowed_mime_types": ["image/png", "text/*"]})).await,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let big: &'static [u8] = Box::leak(vec![b'a'; 2000].into_boxed_slice());
    let (s, v) = json(
        e.upload(&svc, "limited", "big.txt", big, "text/plain")
            .await,
    )
    .await;
    assert_eq!(s, 413, "{v}");
    assert_error(&v, "413");
    let (s, v) = json(
        e.upload(&svc, "limited", "doc.pdf", b"%PDF-1.4", "application/pdf")
            .await,
    )
    .await;
    assert_eq!(s, 415, "{v}");
    assert_error(&v, "415");
    assert_eq!(
        e.upload(
            &svc,
            "limited",
            "ok.txt",
            b"fine",
            "text/plain; charset=utf-8"
        )
        .await
        .status(),
        200
    );
    assert_eq!(
        e.upload(&svc, "limited", "ok.png", b"\x89PNG", "image/png")
            .await
            .status(),
        200
    );
    assert_eq!(
        e.upload(&svc, "nosuchbucket", "a.txt", b"x", "text/plain")
            .await
            .status(),
        404
    );
    assert_eq!(e.files().len(), 2);
}

#[tokio::test]
async fn storage_signed_urls_download_and_refuse_expired_or_tampered() {
    let e = setup().await;
    let ta = e.ta();
    let name = format!("{}/report.pdf", e.a_org);
    let other = format!("{}/other.txt", e.a_org);
    assert_eq!(
        e.upload(&ta, "documents", &name, b"%PDF signed", "application/pdf")
            .await
            .status(),
        200
    );
    assert_eq!(
        e.upload(&ta, "documents", &other, b"other", "text/plain")
            .await
            .status(),
        200
    );
    let (s, v) = json(
        e.req(
            Method::POST,
            &format!("/object/sign/documents/{name}"),
            Some(&ta),
        )
        .json(&json!({"expiresIn": 60}))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let signed = v["signedURL"].as_str().unwrap().to_string();
    assert!(
        signed.starts_with(&format!("/object/sign/documents/{name}?token=")),
        "{signed}"
    );
    // Followed without apikey or bearer, as a browser would.
    let r = e
        .app
        .http
        .get(e.app.url(&format!("/storage/v1{signed}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/pdf");
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"%PDF signed");

    let token = signed.split("token=").nth(1).unwrap().to_string();
    // The token names one object only.
    let r = e
        .app
        .http
        .get(e.app.url(&format!(
            "/storage/v1/object/sign/documents/{other}?token={token}"
        )))
        .send()
        .await
        .unwrap();
    let (s, v) = json(r).await;
    assert_eq!(s, 400, "{v}");
    assert_error(&v, "400");
    // Tampered: the signature no longer matches.
    let (unsigned, sig) = token.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { 'B' } else { 'A' };
    let bad = format!("{unsigned}.{flipped}{}", &sig[1..]);
    let r = e
        .app
        .http
        .get(e.app.url(&format!(
            "/storage/v1/object/sign/documents/{name}?token={bad}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A forged payload signed with another secret.
    let forged = agencyflow_auth::JwtKeys::hs256(b"not-the-project-secret-not-the-project-secret", None)
        .sign_hs256(&json!({"url": format!("documents/{name}"), "storage": "download", "exp": chrono::Utc::now().timestamp() + 60}))
        .unwrap();
    let r = e
        .app
        .http
        .get(e.app.url(&format!(
            "/storage/v1/object/sign/documents/{name}?token={forged}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Expired (beyond the verifier's leeway).
    let keys = agencyflow_auth::JwtKeys::hs256(TEST_JWT_SECRET.as_bytes(), None);
    let now = chrono::Utc::now().timestamp();
    let expired = keys.sign_hs256(&json!({"url": format!("documents/{name}"), "storage": "download", "iat": now - 600, "exp": now - 300})).unwrap();
    let (s, v) = json(
        e.app
            .http
            .get(e.app.url(&format!(
                "/storage/v1/object/sign/documents/{name}?token={expired}"
            )))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"], "InvalidJWT");
    // A user's access token is not a signed URL token; nor is a missing token.
    let r = e
        .app
        .http
        .get(e.app.url(&format!(
            "/storage/v1/object/sign/documents/{name}?token={ta}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = e
        .app
        .http
        .get(
            e.app
                .url(&format!("/storage/v1/object/sign/documents/{name}")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A download token does not authorize an upload.
    let r = e
        .app
        .http
        .put(e.app.url(&format!(
            "/storage/v1/object/upload/sign/documents/{name}?token={token}"
        )))
        .body("overwrite")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Non-positive expiry is refused.
    let r = e
        .req(
            Method::POST,
            &format!("/object/sign/documents/{name}"),
            Some(&ta),
        )
        .json(&json!({"expiresIn": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Bulk signing.
    let (s, v) = json(
        e.call_json(
            Method::POST,
            "/object/sign/documents",
            Some(&ta),
            &json!({"expiresIn": 60, "paths": [name, other, format!("{}/missing.txt", e.a_org)]}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert!(v[0]["signedURL"].is_string() && v[0]["error"].is_null());
    assert!(v[2]["signedURL"].is_null() && v[2]["error"].is_string());
    let r = e
        .app
        .http
        .get(e.app.url(&format!(
            "/storage/v1{}",
            v[1]["signedURL"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "other");
}

#[tokio::test]
async fn storage_signed_upload_urls() {
    let e = setup().await;
    let ta = e.ta();
    let name = format!("{}/incoming/upload.txt", e.a_org);
    let (s, v) = json(
        e.req(
            Method::POST,
            &format!("/object/upload/sign/documents/{name}"),
            Some(&ta),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let url = v["url"].as_str().unwrap().to_string();
    let token = v["token"].as_str().unwrap().to_string();
    assert!(url.ends_with(&format!("?token={token}")));
    // The probe insert was rolled back.
    assert_eq!(e.row_count("%upload.txt").await, 0);
    // Uploaded without apikey or bearer; the row is owned by the signer.
    let r = e
        .app
        .http
        .put(e.app.url(&format!("/storage/v1{url}")))
        .header("content-type", "text/plain")
        .body("via signed upload")
        .send()
        .await
        .unwrap();
    let (s, v) = json(r).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["Key"], format!("documents/{name}"));
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
    let r = e
        .call(Method::GET, &format!("/object/documents/{name}"), Some(&ta))
        .await;
    assert_eq!(r.text().await.unwrap(), "via signed upload");
    // Not an upsert token: a second upload is refused, and leaves no file.
    let r = e
        .app
        .http
        .put(e.app.url(&format!("/storage/v1{url}")))
        .body("again")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(e.files().len(), 1);
    // The token is for that path only.
    let r = e
        .app
        .http
        .put(e.app.url(&format!(
            "/storage/v1/object/upload/sign/documents/{}/x.txt?token={token}",
            e.a_org
        )))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // B cannot get an upload URL into A's folder; an upsert URL replaces.
    let r = e
        .req(
            Method::POST,
            &format!("/object/upload/sign/documents/{}/x.txt", e.a_org),
            Some(&e.tb()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (_, v) = json(
        e.req(
            Method::POST,
            &format!("/object/upload/sign/documents/{name}"),
            Some(&ta),
        )
        .header("x-upsert", "true")
        .send()
        .await
        .unwrap(),
    )
    .await;
    let r = e
        .app
        .http
        .put(
            e.app
                .url(&format!("/storage/v1{}", v["url"].as_str().unwrap())),
        )
        .body("replaced")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = e
        .call(Method::GET, &format!("/object/documents/{name}"), Some(&ta))
        .await;
    assert_eq!(r.text().await.unwrap(), "replaced");
    assert_eq!(e.files().len(), 1);
}

#[tokio::test]
async fn storage_list_move_copy_remove() {
    let e = setup().await;
    let ta = e.ta();
    let org = e.a_org;
    for n in [
        "b.txt",
        "a.txt",
        "folder/c.txt",
        "folder/deeper/d.txt",
        "apple.md",
    ] {
        assert_eq!(
            e.upload(
                &ta,
                "documents",
                &format!("{org}/{n}"),
                b"content",
                "text/plain"
            )
            .await
            .status(),
            200
        );
    }
    let list = |body: Value| {
        let r = e
            .req(Method::POST, "/object/list/documents", Some(&ta))
            .json(&body);
        async move {
            let (s, v) = json(r.send().await.unwrap()).await;
            assert_eq!(s, 200, "{v}");
            v.as_array().unwrap().clone()
        }
    };
    let names = |v: &[Value]| {
        v.iter()
            .map(|o| o["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let top = list(json!({"prefix": org.to_string(), "limit": 100, "offset": 0, "sortBy": {"column": "name", "order": "asc"}})).await;
    assert_eq!(names(&top), vec!["a.txt", "apple.md", "b.txt", "folder"]);
    let folder = top.iter().find(|o| o["name"] == "folder").unwrap();
    assert!(folder["id"].is_null() && folder["metadata"].is_null());
    let file = top.iter().find(|o| o["name"] == "a.txt").unwrap();
    assert_eq!(file["metadata"]["size"], 7);
    assert_eq!(file["metadata"]["mimetype"], "text/plain");
    assert!(file["id"].is_string() && file["created_at"].is_string());
    let sub = list(json!({"prefix": format!("{org}/folder/")})).await;
    assert_eq!(names(&sub), vec!["c.txt", "deeper"]);
    let searched = list(json!({"prefix": org.to_string(), "search": "a"})).await;
    assert_eq!(names(&searched), vec!["a.txt", "apple.md"]);
    let desc = list(json!({"prefix": org.to_string(), "sortBy": {"column": "name", "order": "desc"}, "limit": 2, "offset": 1})).await;
    assert_eq!(names(&desc), vec!["b.txt", "apple.md"]);
    let r = e
        .call_json(
            Method::POST,
            "/object/list/documents",
            Some(&ta),
            &json!({"prefix": "", "sortBy": {"column": "1; drop table x"}}),
        )
        .await;
    assert_eq!(r.status(), 400);

    // Move: the old name is gone, the new one has the bytes.
    let (s, v) = json(
        e.call_json(Method::POST, "/object/move", Some(&ta), &json!({"bucketId": "documents", "sourceKey": format!("{org}/a.txt"), "destinationKey": format!("{org}/moved/a.txt")})).await,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["message"], "Successfully moved");
    assert_eq!(
        e.req(
            Method::GET,
            &format!("/object/documents/{org}/a.txt"),
            Some(&ta)
        )
        .send()
        .await
        .unwrap()
        .status(),
        404
    );
    assert_eq!(
        e.req(
            Method::GET,
            &format!("/object/documents/{org}/moved/a.txt"),
            Some(&ta)
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap(),
        "content"
    );
    // Onto an existing name: 409.
    let r = e.call_json(Method::POST, "/object/move", Some(&ta), &json!({"bucketId": "documents", "sourceKey": format!("{org}/b.txt"), "destinationKey": format!("{org}/apple.md")})).await;
    assert_eq!(r.status(), 409);
    // Copy: both exist, independent.
    let (s, v) = json(
        e.call_json(Method::POST, "/object/copy", Some(&ta), &json!({"bucketId": "documents", "sourceKey": format!("{org}/b.txt"), "destinationKey": format!("{org}/b-copy.txt")})).await,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["Key"], format!("documents/{org}/b-copy.txt"));
    assert_eq!(
        e.req(
            Method::GET,
            &format!("/object/documents/{org}/b-copy.txt"),
            Some(&ta)
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap(),
        "content"
    );
    assert_eq!(e.files().len(), 6);

    // Remove many: the removed objects come back; files go.
    let (s, v) = json(
        e.call_json(Method::DELETE, "/object/documents", Some(&ta), &json!({"prefixes": [format!("{org}/b.txt"), format!("{org}/b-copy.txt"), format!("{org}/missing")]})).await,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let mut removed = names(v.as_array().unwrap());
    removed.sort();
    assert_eq!(
        removed,
        vec![format!("{org}/b-copy.txt"), format!("{org}/b.txt")]
    );
    assert_eq!(e.files().len(), 4);
    assert_eq!(e.row_count(&format!("{org}/%")).await, 4);
}

#[tokio::test]
async fn storage_buckets_for_the_service_role() {
    let e = setup().await;
    let svc = e.service();
    let (s, v) = json(
        e.call_json(
            Method::POST,
            "/bucket",
            Some(&svc),
            &json!({"id": "avatars", "name": "avatars", "public": true}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v, json!({"name": "avatars"}));
    let r = e
        .call_json(
            Method::POST,
            "/bucket",
            Some(&svc),
            &json!({"id": "avatars", "name": "avatars"}),
        )
        .await;
    assert_eq!(r.status(), 409);
    let (s, v) = json(e.call(Method::GET, "/bucket/avatars", Some(&svc)).await).await;
    assert_eq!(s, 200);
    assert_eq!(v["public"], true);
    assert_eq!(v["id"], "avatars");
    let (_, v) = json(e.call(Method::GET, "/bucket", Some(&svc)).await).await;
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["avatars", "documents"]);
    let (s, v) = json(e.call(Method::GET, "/bucket/nope", Some(&svc)).await).await;
    assert_eq!(s, 404);
    assert_error(&v, "404");

    // A public bucket serves without any key.
    assert_eq!(
        e.upload(&svc, "avatars", "u/pic.png", b"\x89PNG pic", "image/png")
            .await
            .status(),
        200
    );
    let r = e
        .app
        .http
        .get(e.app.url("/storage/v1/object/public/avatars/u/pic.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"\x89PNG pic");

    let (s, v) = json(
        e.call_json(
            Method::PUT,
            "/bucket/avatars",
            Some(&svc),
            &json!({"public": false, "file_size_limit": 10, "allowed_mime_types": ["image/png"]}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let r = e
        .app
        .http
        .get(e.app.url("/storage/v1/object/public/avatars/u/pic.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        e.upload(&svc, "avatars", "u/big.png", b"01234567890123", "image/png")
            .await
            .status(),
        413
    );

    // Users cannot manage buckets.
    let r = e
        .call_json(
            Method::POST,
            "/bucket",
            Some(&e.ta()),
            &json!({"name": "mine"}),
        )
        .await;
    assert_eq!(r.status(), 403);
    let (_, v) = json(e.call(Method::GET, "/bucket", Some(&e.ta())).await).await;
    assert_eq!(v, json!([]));
    let r = e
        .call(Method::DELETE, "/bucket/avatars", Some(&e.ta()))
        .await;
    assert_eq!(r.status(), 404);

    // Not empty: 409; empty, then delete.
    let r = e.call(Method::DELETE, "/bucket/avatars", Some(&svc)).await;
    assert_eq!(r.status(), 409);
    let (s, v) = json(
        e.call(Method::POST, "/bucket/avatars/empty", Some(&svc))
            .await,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(e.files().is_empty());
    let (s, v) = json(e.call(Method::DELETE, "/bucket/avatars", Some(&svc)).await).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        e.call(Method::GET, "/bucket/avatars", Some(&svc))
            .await
            .status(),
        404
    );
    // No key and no token: Storage's own refusal (a bearer token alone is enough, as on
    // Supabase: storage_compat).
    let (s, v) = json(
        e.app
            .http
            .get(e.app.url("/storage/v1/bucket"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["message"], "jwt must be provided");
}

#[tokio::test]
async fn storage_supabase_js_e2e() {
    let e = setup().await;
    let (ta, tb) = (e.ta(), e.tb());
    let (a_org, b_org) = (e.a_org.to_string(), e.b_org.to_string());
    let project = e.project(e.a_org).await.to_string();
    e.app
        .run_node_test_with_env(
            "storage.test.js",
            &[
                ("STORAGE_USER_A_TOKEN", &ta),
                ("STORAGE_USER_A_ORG", &a_org),
                ("STORAGE_USER_A_PROJECT", &project),
                ("STORAGE_USER_B_TOKEN", &tb),
                ("STORAGE_USER_B_ORG", &b_org),
            ],
        )
        .await;
}

// ---- The `documents` function: upload + documents row + text extraction in one call. ----

/// A multipart body: text fields in order, then (optionally) the file part.
fn form(fields: &[(&str, &str)], file: Option<(&str, &str, &[u8])>) -> (String, Vec<u8>) {
    let boundary = "----agencyflowdocs0f9c2b";
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    if let Some((filename, mime, data)) = file {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: {mime}\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

impl Env {
    async fn project(&self, org: Uuid) -> Uuid {
        let su = self.t.superuser().await;
        su.query_one(
            "insert into public.projects (org_id, name) values ($1, 'Portal') returning id",
            &[&org],
        )
        .await
        .unwrap()
        .get(0)
    }

    async fn documents_fn(
        &self,
        token: Option<&str>,
        query: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut r = self
            .app
            .http
            .post(self.app.url(&format!("/functions/v1/documents{query}")))
            .header("apikey", &self.app.anon_key)
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        json(r.send().await.unwrap()).await
    }

    async fn document_count(&self) -> i64 {
        let su = self.t.superuser().await;
        su.query_one("select count(*) from public.documents", &[])
            .await
            .unwrap()
            .get(0)
    }
}

#[tokio::test]
async fn documents_function_stores_the_file_the_row_and_its_text() {
    let e = setup().await;
    let project = e.project(e.a_org).await;
    let ta = e.ta();
    let pdf = agencyflow_functions::extract::minimal_pdf(&[
        "Retention review for Q3",
        "Clients likely to leave: the dental practices in Lyon",
    ]);
    let (ct, body) = form(
        &[
            ("org_id", &e.a_org.to_string()),
            ("project_id", &project.to_string()),
            ("category", "briefs"),
            ("summary", "Churn brief"),
        ],
        Some(("retention review.pdf", "application/pdf", &pdf)),
    );
    let (status, v) = e.documents_fn(Some(&ta), "", &ct, body).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let doc = &v["document"];
    let doc_id: Uuid = doc["id"].as_str().unwrap().parse().unwrap();
    let path = format!("{}/{doc_id}/retention review.pdf", e.a_org);
    assert_eq!(doc["org_id"], e.a_org.to_string());
    assert_eq!(doc["project_id"], project.to_string());
    assert_eq!(doc["name"], "retention review.pdf");
    assert_eq!(doc["category"], "briefs");
    assert_eq!(doc["summary"], "Churn brief");
    assert_eq!(doc["storage_path"], path);
    assert_eq!(doc["file_size"], pdf.len());
    assert_eq!(doc["mime_type"], "application/pdf");
    assert_eq!(doc["uploaded_by"], e.a.to_string());
    assert!(
        doc.get("embedding").is_none() && doc.get("fts").is_none(),
        "{doc}"
    );
    let text = doc["content_text"].as_str().unwrap();
    assert!(text.contains("Retention review for Q3"), "{text}");
    assert!(text.contains("dental practices in Lyon"), "{text}");
    assert_eq!(v["extraction"]["status"], "extracted");
    assert_eq!(v["extraction"]["format"], "pdf");
    assert_eq!(v["storage"]["path"], path);

    // The object is in the documents bucket, readable through storage as the uploader.
    let got = e
        .call(Method::GET, &format!("/object/documents/{path}"), Some(&ta))
        .await;
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.bytes().await.unwrap().as_ref(), pdf.as_slice());
    // The row's trigger queued its embedding, and full-text search finds it.
    let su = e.t.superuser().await;
    let queued: i64 = su
        .query_one(
            "select count(*) from private.embedding_jobs where table_name = 'documents' and row_id = $1 and status = 'pending'",
            &[&doc_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(queued, 1);
    let found: i64 = su
        .query_one(
            "select count(*) from public.documents where fts @@ websearch_to_tsquery('english', 'dental practices') and id = $1",
            &[&doc_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(found, 1);

    // Raw body mode (supabase-js invoke with a Blob): Markdown, metadata in the query.
    let md = b"# Kick-off\n\nThe **client** wants a [portal](https://x.test).\n";
    let (status, v) = e
        .documents_fn(
            Some(&ta),
            &format!("?org_id={}&project_id={project}&name=kickoff.md", e.a_org),
            "text/markdown",
            md.to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["document"]["content_text"],
        "Kick-off\nThe client wants a portal."
    );
    assert_eq!(v["extraction"]["format"], "markdown");

    // A format without text (an image) is stored, with no content_text.
    let (ct, body) = form(
        &[
            ("org_id", &e.a_org.to_string()),
            ("project_id", &project.to_string()),
            ("name", "Logo"),
            ("category", "assets"),
        ],
        Some(("logo.png", "image/png", b"\x89PNG\r\n\x1a\n....")),
    );
    let (status, v) = e.documents_fn(Some(&ta), "", &ct, body).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["document"]["name"], "Logo");
    assert!(v["document"]["content_text"].is_null());
    assert_eq!(v["extraction"]["status"], "unsupported");
    assert_eq!(e.document_count().await, 3);
    assert_eq!(e.files().len(), 3, "{:?}", e.files());
}

#[tokio::test]
async fn documents_function_refusals_leave_nothing_behind() {
    let e = setup().await;
    let a_project = e.project(e.a_org).await;
    let (ta, tb) = (e.ta(), e.tb());
    let text = b"Pricing notes for the renewal".as_slice();
    let upload = |org: Uuid, project: Uuid, file: (&'static str, &'static str, &'static [u8])| {
        form(
            &[
                ("org_id", &org.to_string()),
                ("project_id", &project.to_string()),
            ],
            Some(file),
        )
    };
    let check_nothing = || async {
        assert_eq!(e.document_count().await, 0);
        assert_eq!(e.row_count("%").await, 0);
        // Not even a staged temp file.
        assert!(e.files().is_empty(), "{:?}", e.files());
    };

    // Bob (org B) writes into org A's folder: the bucket's policy refuses.
    let (ct, body) = upload(e.a_org, a_project, ("notes.txt", "text/plain", text));
    let (status, v) = e.documents_fn(Some(&tb), "", &ct, body).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["code"], "forbidden");
    check_nothing().await;
    // Bob in his own org but attaching org A's project: the tenant-keyed FK refuses.
    let (ct, body) = upload(e.b_org, a_project, ("notes.txt", "text/plain", text));
    let (status, v) = e.documents_fn(Some(&tb), "", &ct, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    check_nothing().await;
    // A PDF that is not one: 422, nothing kept.
    let (ct, body) = upload(
        e.a_org,
        a_project,
        ("broken.pdf", "application/pdf", b"%PDF-1.4\nnot really"),
    );
    let (status, v) = e.documents_fn(Some(&ta), "", &ct, body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["code"], "unreadable_document");
    check_nothing().await;
    // Text that is not UTF-8.
    let (ct, body) = upload(
        e.a_org,
        a_project,
        ("latin1.txt", "text/plain", b"caf\xe9 cr\xe8me"),
    );
    let (status, _) = e.documents_fn(Some(&ta), "", &ct, body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    check_nothing().await;
    // Bad input, named.
    let (ct, body) = form(
        &[("project_id", &a_project.to_string())],
        Some(("notes.txt", "text/plain", text)),
    );
    let (status, v) = e.documents_fn(Some(&ta), "", &ct, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["field"], "org_id");
    let (ct, body) = form(
        &[("org_id", &e.a_org.to_string())],
        Some(("notes.txt", "text/plain", text)),
    );
    let (status, v) = e.documents_fn(Some(&ta), "", &ct, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["field"], "project_id");
    let (ct, body) = form(
        &[
            ("org_id", &e.a_org.to_string()),
            ("project_id", &a_project.to_string()),
        ],
        None,
    );
    let (status, v) = e.documents_fn(Some(&ta), "", &ct, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["field"], "file");
    let (status, v) = e
        .documents_fn(Some(&ta), "", "application/json", b"{}".to_vec())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    // No user token (the anon key only): 401 in the functions' shape.
    let (ct, body) = upload(e.a_org, a_project, ("notes.txt", "text/plain", text));
    let (status, v) = e.documents_fn(None, "", &ct, body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["msg"], "Invalid JWT");
    check_nothing().await;
    // And the same upload as Alice goes through.
    let (ct, body) = upload(e.a_org, a_project, ("notes.txt", "text/plain", text));
    let (status, v) = e.documents_fn(Some(&ta), "", &ct, body).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["document"]["content_text"],
        "Pricing notes for the renewal"
    );
}

#[tokio::test]
async fn storage_range_requests() {
    let e = setup().await;
    let ta = e.ta();
    let path = format!("{}/media/clip.bin", e.a_org);
    let r = e
        .upload(
            &ta,
            "documents",
            &path,
            b"0123456789abcdef",
            "application/octet-stream",
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let get = |range: &'static str, method: Method| {
        let path = &path;
        let ta = &ta;
        let e = &e;
        async move {
            e.req(method, &format!("/object/documents/{path}"), Some(ta))
                .header("range", range)
                .send()
                .await
                .unwrap()
        }
    };
    let r = get("bytes=2-5", Method::GET).await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 2-5/16");
    assert_eq!(r.headers()["content-length"], "4");
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"2345");
    let r = get("bytes=-3", Method::GET).await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"def");
    let r = get("bytes=10-", Method::HEAD).await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 10-15/16");
    let r = get("bytes=16-", Method::GET).await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["content-range"], "bytes */16");
    let (_, v) = json(r).await;
    assert_error(&v, "416");
    // No Range: the whole object, saying ranges are accepted.
    let r = e
        .call(Method::GET, &format!("/object/documents/{path}"), Some(&ta))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(r.bytes().await.unwrap().len(), 16);
    // RLS still decides first: org B gets nothing, range or not.
    let r = e
        .req(
            Method::GET,
            &format!("/object/documents/{path}"),
            Some(&e.tb()),
        )
        .header("range", "bytes=0-3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

// ---- The s3 backend against a real S3 wire protocol (moto's server). ----

/// `moto_server`: `AGENCYFLOW_TEST_MOTO_SERVER` (set by `./run test`), else where
/// `scripts/setup --with-s3-server` puts it; without it the test fails, saying so (a test
/// never passes by skipping what it tests).
fn moto_server() -> PathBuf {
    if let Some(p) = std::env::var_os("AGENCYFLOW_TEST_MOTO_SERVER").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "AGENCYFLOW_TEST_MOTO_SERVER={} does not exist",
            p.display()
        );
        return p;
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("no HOME: set AGENCYFLOW_TEST_MOTO_SERVER");
    let p = cache.join("agencyflow/moto-venv/bin/moto_server");
    assert!(
        p.is_file(),
        "no moto_server at {}: run `bash scripts/setup --with-s3-server`, or set AGENCYFLOW_TEST_MOTO_SERVER",
        p.display()
    );
    p
}

/// S3 keys in the bucket (ListObjectsV2, unsigned: moto accepts it).
async fn s3_keys(http: &reqwest::Client, endpoint: &str, bucket: &str) -> Vec<String> {
    let xml = http
        .get(format!("{endpoint}/{bucket}?list-type=2"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    xml.split("<Key>")
        .skip(1)
        .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_string()))
        .collect()
}

#[tokio::test]
async fn storage_s3_backend_against_an_s3_server() {
    let moto = moto_server();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = tokio::process::Command::new(&moto)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start moto_server");
    let endpoint = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while http.get(format!("{endpoint}/")).send().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "moto_server did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let bucket = "agencyflow-test";
    let made = http
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success(), "{}", made.text().await.unwrap());
    let e = setup_with(&[
        "--storage-backend",
        "s3",
        "--storage-s3-bucket",
        bucket,
        "--storage-s3-endpoint",
        &endpoint,
        "--storage-s3-region",
        "us-east-1",
        "--storage-s3-access-key-id",
        "test",
        "--storage-s3-secret-access-key",
        "test",
    ])
    .await;
    let ta = e.ta();
    // 9 MiB: a multipart upload of two parts (8 MiB parts).
    let data: Vec<u8> = (0..9u32 << 20)
        .map(|i| (i.wrapping_mul(31) % 251) as u8)
        .collect();
    let path = format!("{}/media/big.bin", e.a_org);
    let url = |p: &str| format!("/object/documents/{p}");
    let r = e
        .req(Method::POST, &url(&path), Some(&ta))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    assert_eq!(s3_keys(&http, &endpoint, bucket).await.len(), 1);
    assert!(e.files().is_empty(), "nothing on local disk");
    let got = e.call(Method::GET, &url(&path), Some(&ta)).await;
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.headers()["content-length"], data.len().to_string());
    assert!(got.bytes().await.unwrap().as_ref() == data.as_slice());
    let part = e
        .req(Method::GET, &url(&path), Some(&ta))
        .header("range", "bytes=8388600-8388615")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.bytes().await.unwrap().as_ref(),
        &data[8388600..8388616]
    );
    // Copy, then replace the original: the replaced version leaves the bucket.
    let copy = format!("{}/media/copy.bin", e.a_org);
    let r = e
        .call_json(
            Method::POST,
            "/object/copy",
            Some(&ta),
            &json!({"bucketId": "documents", "sourceKey": path, "destinationKey": copy}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let r = e
        .req(Method::PUT, &url(&path), Some(&ta))
        .header("content-type", "text/plain")
        .body("small now")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    assert_eq!(s3_keys(&http, &endpoint, bucket).await.len(), 2);
    let got = e.call(Method::GET, &url(&path), Some(&ta)).await;
    assert_eq!(got.text().await.unwrap(), "small now");
    let got = e.call(Method::GET, &url(&copy), Some(&ta)).await;
    assert!(got.bytes().await.unwrap().as_ref() == data.as_slice());
    // A refused upload (org B's member into org A's folder) leaves nothing in the bucket.
    let r = e
        .req(
            Method::POST,
            &url(&format!("{}/x.txt", e.a_org)),
            Some(&e.tb()),
        )
        .header("content-type", "text/plain")
        .body("nope")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    assert_eq!(s3_keys(&http, &endpoint, bucket).await.len(), 2);
    // Remove both: the bucket is empty again.
    let r = e
        .call_json(
            Method::DELETE,
            "/object/documents",
            Some(&ta),
            &json!({"prefixes": [path, copy]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    assert!(s3_keys(&http, &endpoint, bucket).await.is_empty());
    assert_eq!(e.row_count("%").await, 0);
}
