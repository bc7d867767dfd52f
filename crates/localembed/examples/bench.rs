//! Sentences per second and memory of the local model, without the database:
//! `cargo run --release -p agencyflow-localembed --example bench [-- MODEL_DIR]`
//! (default: `AGENCYFLOW_TEST_MODEL_DIR`, else the folder `scripts/setup` unpacks to).
use std::path::PathBuf;
use std::time::Instant;

use agencyflow_localembed::{default_cache_dir, LocalEmbedder};

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("AGENCYFLOW_TEST_MODEL_DIR").map(PathBuf::from))
        .or_else(default_cache_dir)
        .expect("no model folder");
    let before = rss_mib();
    let started = Instant::now();
    let model = LocalEmbedder::load(&dir).expect("loading the model");
    println!(
        "load: {:.2}s, RSS {before:.0} MiB -> {:.0} MiB",
        started.elapsed().as_secs_f64(),
        rss_mib()
    );
    let words = [
        "client",
        "invoice",
        "automation",
        "dental",
        "clinic",
        "renewal",
        "report",
        "meeting",
        "budget",
        "campaign",
        "website",
        "contract",
        "onboarding",
        "support",
        "deadline",
    ];
    let text = |i: usize, n: usize| {
        (0..n)
            .map(|k| words[(i * 7 + k * 3) % words.len()])
            .collect::<Vec<_>>()
            .join(" ")
    };
    for (label, count, len) in [
        ("sentences (12-31 words)", 512, 0),
        ("documents (~100 words)", 256, 100),
        ("long documents (~600 words, 4 windows)", 32, 600),
    ] {
        let texts: Vec<String> = (0..count)
            .map(|i| text(i, if len == 0 { 12 + i % 20 } else { len }))
            .collect();
        model.embed(&texts[..8]).unwrap(); // warm-up
        let started = Instant::now();
        for chunk in texts.chunks(32) {
            model.embed(chunk).unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{label}: {:.1} texts/s ({count} in {secs:.1}s, batches of 32), RSS {:.0} MiB",
            count as f64 / secs,
            rss_mib()
        );
    }
}
