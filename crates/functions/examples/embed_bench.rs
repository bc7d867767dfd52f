//! Embedding throughput of the offline `hash` provider (CPU only, no database).
//!
//!     cargo run --release -p agencyflow-functions --example embed_bench [texts] [words_per_text]
//!
//! The end-to-end pipeline (jobs claimed, embedded, vectors written to PostgreSQL) is measured by
//! `cargo test -p agencyflow-testkit --test it functions::bench_embedding_pipeline -- --ignored --nocapture`.
use std::time::Instant;

use agencyflow_functions::provider::{HashEmbedder, Provider};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let words: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let vocab = [
        "invoice",
        "automation",
        "client",
        "pipeline",
        "roadmap",
        "phase",
        "dental",
        "clinic",
        "lead",
        "booking",
        "support",
        "agent",
        "workflow",
        "report",
        "revenue",
        "churn",
        "email",
        "meeting",
    ];
    let texts: Vec<String> = (0..n)
        .map(|i| {
            (0..words)
                .map(|w| format!("{}{}", vocab[(i * 7 + w * 13) % vocab.len()], (i + w) % 97))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let p = HashEmbedder::new("hash-v1".into());
    for dims in [768usize, 1536] {
        let started = Instant::now();
        for chunk in texts.chunks(32) {
            let e = p.embed(chunk, dims).await.expect("hash embeds");
            assert_eq!(e.vectors[0].len(), dims);
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "hash embeddings, {dims} dims, {words} words/text: {n} texts in {secs:.2}s = {:.0} texts/s",
            n as f64 / secs
        );
    }
}
