//! The image transformation pipeline of `/render/image`, in process (no HTTP, no database):
//! a photo-like 12-megapixel JPEG (4000×3000, quality 90: gradients, shapes and sensor-like
//! noise) rendered to a 200 px wide lossy WebP. Cold: read the source file, check its header,
//! decode, orient, resize (Lanczos3), encode, store in the disk cache; each run another
//! rendition (quality 71..). Cached: the disk cache's read of a stored rendition.
//! `render_bench photo <file>`, then `render_bench <file> [runs]` (bench/storage_transform.sh).
use std::time::Instant;

use agencyflow_storage::render::cache::RenderCache;
use agencyflow_storage::render::transform::{
    self, Format, Resize, SourceLimits, Target, Transform,
};

fn photo(w: u32, h: u32) -> Vec<u8> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let noise = (seed % 17) as f32 - 8.0;
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let (dx, dy) = (fx - 0.6, fy - 0.4);
        let disc = if dx * dx + dy * dy < 0.04 { 90.0 } else { 0.0 };
        let wave = ((fx * 40.0).sin() * (fy * 25.0).cos()) * 30.0;
        let px = |base: f32| (base + wave + disc + noise).clamp(0.0, 255.0) as u8;
        image::Rgb([
            px(200.0 * fy + 20.0),
            px(120.0 + 80.0 * fx),
            px(60.0 + 150.0 * (1.0 - fy)),
        ])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .expect("encoding the JPEG");
    out
}

fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb / 1024)
}

fn stats(label: &str, mut ms: Vec<f64>) {
    ms.sort_by(|a, b| a.total_cmp(b));
    let median = ms[ms.len() / 2];
    println!(
        "{label}: median {median:.3} ms, min {:.3}, max {:.3} (n={})",
        ms[0],
        ms[ms.len() - 1],
        ms.len()
    );
}

fn main() {
    // `render_bench photo <file>` writes the source (in a process of its own, so the peak
    // RSS measured by `render_bench <file> [runs]` is the rendering's alone).
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("photo") {
        let path = args.get(1).expect("render_bench photo <file>");
        std::fs::write(path, photo(4000, 3000)).expect("writing the source");
        return;
    }
    let src_path = std::path::PathBuf::from(args.first().expect("render_bench <file> [runs]"));
    let runs: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(10);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let src_len = std::fs::metadata(&src_path).map_or(0, |m| m.len());
    println!("source: 4000×3000 JPEG, {} KiB", src_len / 1024);
    let rss_before = peak_rss_mib();
    let limits = SourceLimits {
        max_bytes: 25 << 20,
        max_pixels: 50_000_000,
    };
    let cache = RenderCache::new(dir.path().join("cache"), 1 << 30);
    let version = "00000000-0000-0000-0000-000000000001";
    let mut cold = Vec::new();
    let mut out = None;
    for i in 0..runs {
        let t = Transform {
            width: 200,
            height: 0,
            resize: Resize::Cover,
            format: Format::Webp,
            quality: Some(71 + (i % 30) as u8),
        };
        let started = Instant::now();
        let src = std::fs::read(&src_path).expect("reading the source");
        let r = transform::render(&src, &t, Target::Webp, &limits).expect("rendering");
        cache
            .put(
                "bench",
                "photo.jpg",
                version,
                &format!("k{i}"),
                r.mime,
                &r.bytes,
            )
            .expect("caching");
        cold.push(started.elapsed().as_secs_f64() * 1000.0);
        out = Some(r);
    }
    let out = out.expect("at least one run");
    println!(
        "output: {}×{} {}, {} bytes",
        out.width,
        out.height,
        out.mime,
        out.bytes.len()
    );
    stats("cold (read, decode, resize, encode, cache)", cold);
    let mut cached = Vec::new();
    for _ in 0..runs * 10 {
        let started = Instant::now();
        let hit = cache
            .get("bench", "photo.jpg", version, "k0")
            .expect("a hit");
        assert!(!hit.bytes.is_empty());
        cached.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    stats("cached (disk cache read)", cached);
    println!(
        "peak RSS: {} MiB at start, {} MiB after rendering",
        rss_before,
        peak_rss_mib()
    );
}
