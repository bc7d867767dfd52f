//! `/storage/v1/render/image/...` (issue #18, item 5): resize modes checked on the decoded
//! output, WebP negotiation and quality, the disk cache (hits, 304, invalidation on
//! overwrite), RLS deciding as for the object, signed URLs carrying their transformation,
//! and the limits (clamped sides, decompression bombs, non-images, big sources); and
//! storage-js's `createSignedUrl(…, { transform })` / `download(…, { transform })`.
use std::io::Cursor;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::storage::{setup, setup_with, Env};

/// A `w`×`h` image: its left quarter green, the rest red (a crop and a stretch differ).
fn quarters(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, _| {
        if x < w / 4 {
            image::Rgb([0, 255, 0])
        } else {
            image::Rgb([255, 0, 0])
        }
    })
}

fn encode(img: image::RgbImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut Cursor::new(&mut out), format)
        .unwrap();
    out
}

fn png(w: u32, h: u32) -> Vec<u8> {
    encode(quarters(w, h), image::ImageFormat::Png)
}

/// A JPEG with detail (so its encoded size depends on the quality asked for).
fn photo(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let n = (x.wrapping_mul(7919) ^ y.wrapping_mul(104_729)).wrapping_mul(2_654_435_761);
        image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, (n >> 24) as u8])
    });
    encode(img, image::ImageFormat::Jpeg)
}

impl Env {
    async fn put_image(&self, token: &str, bucket: &str, name: &str, bytes: Vec<u8>, mime: &str) {
        let r = self
            .req(
                Method::POST,
                &format!("/object/{bucket}/{name}"),
                Some(token),
            )
            .header("content-type", mime)
            .header("cache-control", "max-age=120")
            .header("x-upsert", "true")
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    /// `GET /render/image/<path>` with `token` as the bearer (no `apikey` when `None`).
    async fn render(
        &self,
        path: &str,
        token: Option<&str>,
        accept: Option<&str>,
    ) -> reqwest::Response {
        let mut r = self
            .app
            .http
            .get(self.app.url(&format!("/storage/v1/render/image/{path}")));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(a) = accept {
            r = r.header("accept", a);
        }
        r.send().await.unwrap()
    }
}

/// The status, the response, and the decoded image (failing with the body when it is not one).
async fn decoded(r: reqwest::Response) -> (reqwest::header::HeaderMap, image::DynamicImage, usize) {
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.bytes().await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let img = image::load_from_memory(&body)
        .unwrap_or_else(|e| panic!("not an image ({e}): {:?}", headers));
    (headers, img, body.len())
}

async fn error(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")),
    )
}

#[tokio::test]
async fn render_resize_modes_give_the_expected_dimensions() {
    let e = setup().await;
    let ta = e.ta();
    let name = format!("{}/img/src.png", e.a_org);
    e.put_image(&ta, "documents", &name, png(400, 200), "image/png")
        .await;
    let at = |q: &str| format!("authenticated/documents/{name}?{q}");
    let dims = |img: &image::DynamicImage| (img.width(), img.height());

    let (h, img, _) = decoded(e.render(&at("width=100&height=100"), Some(&ta), None).await).await;
    assert_eq!(
        h["content-type"], "image/png",
        "no WebP in Accept: the source's format"
    );
    assert_eq!(dims(&img), (100, 100), "cover is the default");
    let px = img.to_rgb8().get_pixel(2, 50).0;
    assert!(px[0] > 200 && px[1] < 60, "cover crops the centre: {px:?}");
    assert_eq!(
        h["x-transformations"],
        "height:100,width:100,resizing_type:fill"
    );
    assert_eq!(
        h["cache-control"], "max-age=120",
        "the object's Cache-Control"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");

    let (_, img, _) = decoded(
        e.render(&at("width=100&height=100&resize=contain"), Some(&ta), None)
            .await,
    )
    .await;
    assert_eq!(dims(&img), (100, 50), "contain fits inside");
    let (_, img, _) = decoded(
        e.render(&at("width=100&height=100&resize=fill"), Some(&ta), None)
            .await,
    )
    .await;
    assert_eq!(dims(&img), (100, 100));
    let px = img.to_rgb8().get_pixel(2, 50).0;
    assert!(
        px[1] > 200 && px[0] < 60,
        "fill stretches: green stays left, {px:?}"
    );
    let (_, img, _) = decoded(e.render(&at("width=100"), Some(&ta), None).await).await;
    assert_eq!(dims(&img), (100, 50), "one side keeps the aspect ratio");
    let (_, img, _) = decoded(
        e.render(&at("height=40&resize=fill"), Some(&ta), None)
            .await,
    )
    .await;
    assert_eq!(dims(&img), (80, 40));
    // Never enlarged; a side past the limit is clamped to it (2000), as Storage clamps.
    let (_, img, _) = decoded(e.render(&at("width=800"), Some(&ta), None).await).await;
    assert_eq!(dims(&img), (400, 200));
    let (h, img, _) = decoded(e.render(&at("width=5000"), Some(&ta), None).await).await;
    assert_eq!(dims(&img), (400, 200));
    assert_eq!(h["x-transformations"], "width:2000,resizing_type:fill");
    // No option at all: the image as it is (re-encoded).
    let (_, img, _) = decoded(e.render(&at(""), Some(&ta), None).await).await;
    assert_eq!(dims(&img), (400, 200));

    // Options as Storage's schema refuses them.
    for (q, message) in [
        ("quality=10", "querystring/quality must be >= 20"),
        ("quality=101", "querystring/quality must be <= 100"),
        ("width=-5", "querystring/width must be >= 0"),
        ("width=wide", "querystring/width must be integer"),
        (
            "resize=stretch",
            "querystring/resize must be equal to one of the allowed values",
        ),
        (
            "format=gif",
            "querystring/format must be equal to one of the allowed values",
        ),
    ] {
        let (s, v) = error(e.render(&at(q), Some(&ta), None).await).await;
        assert_eq!(s, 400, "{q}: {v}");
        assert_eq!(v["message"], message, "{q}");
        assert_eq!(v["statusCode"], "400");
    }
}

#[tokio::test]
async fn render_negotiates_webp_and_honours_quality() {
    let e = setup().await;
    let ta = e.ta();
    let name = format!("{}/img/photo.jpg", e.a_org);
    e.put_image(&ta, "documents", &name, photo(640, 480), "image/jpeg")
        .await;
    let at = |q: &str| format!("authenticated/documents/{name}?{q}");
    let chrome = Some("image/avif,image/webp,image/apng,image/*,*/*;q=0.8");

    let (h, img, _) = decoded(e.render(&at("width=200"), Some(&ta), chrome).await).await;
    assert_eq!(h["content-type"], "image/webp");
    assert!(h.get_all("vary").iter().any(|v| v == "Accept"), "{h:?}");
    assert_eq!((img.width(), img.height()), (200, 150));
    let (h, _, _) = decoded(e.render(&at("width=200"), Some(&ta), None).await).await;
    assert_eq!(h["content-type"], "image/jpeg");
    let (h, _, _) = decoded(
        e.render(&at("width=200&format=webp"), Some(&ta), None)
            .await,
    )
    .await;
    assert_eq!(h["content-type"], "image/webp", "asked for by name");
    let varies: Vec<_> = h
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap().to_ascii_lowercase())
        .collect();
    assert!(
        !varies.iter().any(|v| v.contains("accept")),
        "not negotiated: {varies:?}"
    );
    let (h, _, _) = decoded(
        e.render(&at("width=200&format=origin"), Some(&ta), chrome)
            .await,
    )
    .await;
    assert_eq!(h["content-type"], "image/jpeg", "origin wins over Accept");

    // Quality changes the lossy encodings (WebP is lossy, as imgproxy writes it).
    for format in ["webp", "origin"] {
        let size = |q: u32| {
            let path = at(&format!("width=320&format={format}&quality={q}"));
            let e = &e;
            let ta = &ta;
            async move { decoded(e.render(&path, Some(ta), None).await).await.2 }
        };
        let (low, high) = (size(20).await, size(95).await);
        assert!(
            low * 2 < high,
            "{format}: quality 20 gives {low} bytes, 95 gives {high}"
        );
    }
}

/// The files of the render cache under the storage directory.
fn cached_files(e: &Env) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![e.dir.path().join(".render-cache")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                if entry.file_name() != ".tmp" {
                    stack.push(p);
                }
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test]
async fn render_cache_hits_answers_304_and_is_invalidated_on_overwrite() {
    let e = setup().await;
    let ta = e.ta();
    let name = format!("{}/img/cached.png", e.a_org);
    e.put_image(&ta, "documents", &name, png(400, 200), "image/png")
        .await;
    let path = format!("authenticated/documents/{name}?width=100&resize=contain");

    let first = e.render(&path, Some(&ta), None).await;
    assert_eq!(first.headers()["x-render-cache"], "miss");
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    let first_bytes = first.bytes().await.unwrap();
    assert_eq!(cached_files(&e).len(), 1);
    let second = e.render(&path, Some(&ta), None).await;
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["x-render-cache"], "hit");
    assert_eq!(second.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(second.bytes().await.unwrap(), first_bytes);
    // Another transformation of the same version is another rendition, with its own ETag.
    let other = e
        .render(
            &format!("authenticated/documents/{name}?width=50"),
            Some(&ta),
            None,
        )
        .await;
    assert_eq!(other.headers()["x-render-cache"], "miss");
    assert_ne!(other.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(cached_files(&e).len(), 2);

    // The source's bytes are not read on a hit: remove them and the rendition still answers.
    let object_dir = e.dir.path().join("documents").join(&name);
    let versions: Vec<_> = std::fs::read_dir(&object_dir).unwrap().flatten().collect();
    assert_eq!(versions.len(), 1);
    let source = versions[0].path();
    let kept = std::fs::read(&source).unwrap();
    std::fs::remove_file(&source).unwrap();
    let third = e.render(&path, Some(&ta), None).await;
    assert_eq!(third.status(), 200);
    assert_eq!(third.headers()["x-render-cache"], "hit");
    std::fs::write(&source, kept).unwrap();

    // A client holding the rendition gets 304, with the validators and caching headers.
    let r = e
        .app
        .http
        .get(e.app.url(&format!("/storage/v1/render/image/{path}")))
        .bearer_auth(&ta)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(r.headers()["cache-control"], "max-age=120");
    assert!(r.bytes().await.unwrap().is_empty());

    // Overwritten: the old renditions are gone, the new version renders afresh.
    e.put_image(&ta, "documents", &name, png(300, 300), "image/png")
        .await;
    assert!(cached_files(&e).is_empty(), "{:?}", cached_files(&e));
    let r = e.render(&path, Some(&ta), None).await;
    assert_eq!(r.headers()["x-render-cache"], "miss");
    assert_ne!(r.headers()["etag"].to_str().unwrap(), etag);
    let (_, img, _) = decoded(r).await;
    assert_eq!((img.width(), img.height()), (100, 100));
    // An old ETag no longer matches.
    let r = e
        .app
        .http
        .get(e.app.url(&format!("/storage/v1/render/image/{path}")))
        .bearer_auth(&ta)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Deleted: its renditions go with it.
    let r = e
        .req(
            Method::DELETE,
            &format!("/object/documents/{name}"),
            Some(&ta),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(cached_files(&e).is_empty());
    let (s, _) = error(e.render(&path, Some(&ta), None).await).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn render_access_is_decided_as_for_the_object() {
    let e = setup().await;
    let (ta, tb) = (e.ta(), e.tb());
    let name = format!("{}/img/private.png", e.a_org);
    e.put_image(&ta, "documents", &name, png(400, 200), "image/png")
        .await;
    let auth = format!("authenticated/documents/{name}?width=100");

    // Bob's RLS hides Alice's org: not found, as a download would be.
    let (s, v) = error(e.render(&auth, Some(&tb), None).await).await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["message"], "Object not found");
    assert_eq!(cached_files(&e).len(), 0, "nothing rendered for Bob");
    // Rendered for Alice, the cached rendition is still refused to Bob.
    decoded(e.render(&auth, Some(&ta), None).await).await;
    let (s, _) = error(e.render(&auth, Some(&tb), None).await).await;
    assert_eq!(s, 404);
    // The authenticated route needs a token, even for a public bucket.
    let (s, v) = error(e.render(&auth, None, None).await).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["message"], "jwt must be provided");
    // The public route serves public buckets only.
    let (s, v) = error(
        e.render(
            &format!("public/documents/{name}?width=100"),
            Some(&ta),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        (s, v["message"].as_str()),
        (StatusCode::NOT_FOUND, Some("Bucket not found"))
    );

    let svc = e.service();
    let r = e
        .req(Method::POST, "/bucket", Some(&svc))
        .json(&json!({"id": "pics", "name": "pics", "public": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    e.put_image(&svc, "pics", "logo.png", png(400, 200), "image/png")
        .await;
    // getPublicUrl(…, { transform }) is followed by browsers without any key.
    let (h, img, _) = decoded(
        e.render(
            "public/pics/logo.png?width=100&height=50",
            None,
            Some("image/webp"),
        )
        .await,
    )
    .await;
    assert_eq!(h["content-type"], "image/webp");
    assert_eq!((img.width(), img.height()), (100, 50));
    let (s, _) = error(
        e.render("public/pics/missing.png?width=10", None, None)
            .await,
    )
    .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn render_signed_urls_carry_their_transformation() {
    let e = setup().await;
    let ta = e.ta();
    let name = format!("{}/img/signed.png", e.a_org);
    e.put_image(&ta, "documents", &name, png(400, 200), "image/png")
        .await;
    let sign = |body: Value| {
        let e = &e;
        let ta = &ta;
        let name = &name;
        async move {
            let r = e
                .req(
                    Method::POST,
                    &format!("/object/sign/documents/{name}"),
                    Some(ta),
                )
                .json(&body)
                .send()
                .await
                .unwrap();
            error(r).await
        }
    };
    let get = |signed: &str| {
        e.app
            .http
            .get(e.app.url(&format!("/storage/v1{signed}")))
            .send()
    };

    let (s, v) = sign(
        json!({"expiresIn": 60, "transform": {"width": 100, "height": 100, "resize": "contain"}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let signed = v["signedURL"].as_str().unwrap().to_string();
    assert!(
        signed.starts_with(&format!("/render/image/sign/documents/{name}?token=")),
        "{signed}"
    );
    let (h, img, _) = decoded(get(&signed).await.unwrap()).await;
    assert_eq!((img.width(), img.height()), (100, 50));
    assert!(h.contains_key("expires"), "cached until the token expires");
    assert!(!h.contains_key("cache-control"));
    // The query string cannot change a signed transformation.
    let (_, img, _) = decoded(
        get(&format!("{signed}&width=300&resize=fill"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((img.width(), img.height()), (100, 50));
    // Nor does a URL signed for a thumbnail open the original.
    let object_url = signed.replacen("/render/image/sign/", "/object/sign/", 1);
    let (s, v) = error(get(&object_url).await.unwrap()).await;
    assert_eq!(s, 400, "{v}");

    // A URL signed without a transformation renders the image untransformed, whatever the
    // query string asks.
    let (_, v) = sign(json!({"expiresIn": 60})).await;
    let plain = v["signedURL"].as_str().unwrap().to_string();
    assert!(plain.starts_with("/object/sign/"), "{plain}");
    let render_url = plain.replacen("/object/sign/", "/render/image/sign/", 1);
    let (_, img, _) = decoded(
        get(&format!("{render_url}&width=50&height=50"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((img.width(), img.height()), (400, 200));

    // A tampered token, another object's token, a bad transformation to sign.
    let (s, _) = error(get(&format!("{signed}x")).await.unwrap()).await;
    assert_eq!(s, 400);
    let (s, v) = sign(json!({"expiresIn": 60, "transform": {"quality": 5}})).await;
    assert_eq!(s, 400);
    assert_eq!(v["message"], "body/transform/quality must be >= 20");
    // Bob cannot sign what he cannot read.
    let r = e
        .req(
            Method::POST,
            &format!("/object/sign/documents/{name}"),
            Some(&e.tb()),
        )
        .json(&json!({"expiresIn": 60, "transform": {"width": 10}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// A PNG whose header claims `w`×`h` pixels around a few bytes of data.
fn bomb_png(w: u32, h: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for b in bytes {
            crc ^= u32::from(*b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut png = png(4, 4);
    // IHDR's data starts after the signature (8), the length (4) and the type (4).
    png[16..20].copy_from_slice(&w.to_be_bytes());
    png[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

#[tokio::test]
async fn render_limits_refuse_bombs_non_images_and_big_sources() {
    let e = setup_with(&["--storage-image-max-src-file-size", "20000"]).await;
    let ta = e.ta();
    let org = e.a_org;
    let at = |n: &str| format!("authenticated/documents/{org}/img/{n}?width=100");

    // 100,000 × 100,000 pixels by its header (40 GB decoded): refused from the header.
    e.put_image(
        &ta,
        "documents",
        &format!("{org}/img/bomb.png"),
        bomb_png(100_000, 100_000),
        "image/png",
    )
    .await;
    let (s, v) = error(e.render(&at("bomb.png"), Some(&ta), None).await).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(
        v["message"],
        "The source image resolution is too large to process"
    );
    assert_eq!(v["error"], "InvalidRequest");
    // Just past 50 megapixels.
    e.put_image(
        &ta,
        "documents",
        &format!("{org}/img/bomb2.png"),
        bomb_png(10_000, 5_001),
        "image/png",
    )
    .await;
    let (s, v) = error(e.render(&at("bomb2.png"), Some(&ta), None).await).await;
    assert_eq!(
        (s, v["message"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("The source image resolution is too large to process")
        )
    );

    // Not an image (whatever its declared type), or a truncated one.
    e.put_image(
        &ta,
        "documents",
        &format!("{org}/img/notes.png"),
        b"just some text".to_vec(),
        "image/png",
    )
    .await;
    let (s, v) = error(e.render(&at("notes.png"), Some(&ta), None).await).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(
        v["message"],
        "The source image is invalid or unsupported for rendering"
    );
    let mut cut = png(400, 200);
    cut.truncate(cut.len() / 2);
    e.put_image(
        &ta,
        "documents",
        &format!("{org}/img/cut.png"),
        cut,
        "image/png",
    )
    .await;
    let (s, v) = error(e.render(&at("cut.png"), Some(&ta), None).await).await;
    assert_eq!(
        (s, v["message"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("The source image is invalid or unsupported for rendering")
        )
    );
    let svg = br#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>"#.to_vec();
    e.put_image(
        &ta,
        "documents",
        &format!("{org}/img/icon.svg"),
        svg,
        "image/svg+xml",
    )
    .await;
    let (s, _) = error(e.render(&at("icon.svg"), Some(&ta), None).await).await;
    assert_eq!(s, 400);

    // A source past the server's source size limit (20,000 bytes here) is not read.
    let big = photo(400, 400);
    assert!(big.len() > 20_000, "{}", big.len());
    e.put_image(
        &ta,
        "documents",
        &format!("{org}/img/big.jpg"),
        big,
        "image/jpeg",
    )
    .await;
    let (s, v) = error(e.render(&at("big.jpg"), Some(&ta), None).await).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(
        v["message"],
        "The source image file is too large to process"
    );
    assert!(cached_files(&e).is_empty());
}

#[tokio::test]
async fn render_can_be_switched_off() {
    let e = setup_with(&["--storage-image-transformation", "false"]).await;
    let ta = e.ta();
    let name = format!("{}/img/off.png", e.a_org);
    e.put_image(&ta, "documents", &name, png(40, 20), "image/png")
        .await;
    let (s, v) = error(
        e.render(
            &format!("authenticated/documents/{name}?width=10"),
            Some(&ta),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"], "FeatureNotEnabled");
}

#[tokio::test]
async fn storage_transform_supabase_js_e2e() {
    let e = setup().await;
    let (ta, org) = (e.ta(), e.a_org.to_string());
    e.app
        .run_node_test_with_env(
            "storage_transform.test.js",
            &[("STORAGE_USER_A_TOKEN", &ta), ("STORAGE_USER_A_ORG", &org)],
        )
        .await;
}

/// TUS against a plain upload, through the real router (in the test binary's build, so
/// debug numbers: a ratio, not a throughput to quote). `BENCH_MIB` (default 64):
/// `cargo nextest run -p agencyflow-testkit --test it bench_tus --run-ignored only --no-capture`.
#[tokio::test]
#[ignore = "a benchmark: run on demand"]
async fn bench_tus_against_a_plain_upload() {
    use base64::Engine;
    let mib: usize = std::env::var("BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let e = setup_with(&["--storage-file-size-limit", &((mib + 1) << 20).to_string()]).await;
    let ta = e.ta();
    let bytes: Vec<u8> = (0..mib << 20)
        .map(|i| ((i * 2_654_435_761usize) >> 13) as u8)
        .collect();
    let started = std::time::Instant::now();
    let r = e
        .req(
            Method::POST,
            &format!("/object/documents/{}/plain.bin", e.a_org),
            Some(&ta),
        )
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let plain = started.elapsed().as_secs_f64();
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    let started = std::time::Instant::now();
    let r = e
        .req(Method::POST, "/upload/resumable", Some(&ta))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", bytes.len().to_string())
        .header(
            "upload-metadata",
            format!(
                "bucketName {},objectName {},contentType {}",
                b64("documents"),
                b64(&format!("{}/tus.bin", e.a_org)),
                b64("application/octet-stream")
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let chunk = 6 << 20;
    let mut offset = 0;
    while offset < bytes.len() {
        let end = (offset + chunk).min(bytes.len());
        let r = e
            .app
            .http
            .patch(e.app.url(&location))
            .bearer_auth(&ta)
            .header("apikey", &e.app.anon_key)
            .header("tus-resumable", "1.0.0")
            .header("upload-offset", offset.to_string())
            .header("content-type", "application/offset+octet-stream")
            .body(bytes[offset..end].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
        offset = end;
    }
    let tus = started.elapsed().as_secs_f64();
    println!(
        "{mib} MiB: plain POST {:.0} MiB/s ({plain:.2} s), TUS in 6 MiB PATCHes {:.0} MiB/s ({tus:.2} s), TUS/plain {:.2}",
        mib as f64 / plain,
        mib as f64 / tus,
        plain / tus
    );
}
