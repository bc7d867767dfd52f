//! sentence-transformers' **all-MiniLM-L6-v2** on the CPU: candle's BERT and Hugging Face
//! `tokenizers`, loaded from a local directory (`model.safetensors`, `tokenizer.json`,
//! `config.json`; nothing is downloaded at run time).
//!
//! Matches `SentenceTransformer("all-MiniLM-L6-v2").encode(text, normalize_embeddings=True)`:
//! word pieces with `[CLS]`/`[SEP]`, mean pooling over the attention mask, L2 normalisation,
//! 384 numbers. A text longer than the model's 256 word pieces is not truncated (as
//! sentence-transformers does) but cut into windows of at most [`WINDOW`] word pieces; its
//! vector is the normalised mean of its windows' vectors.
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::Tokenizer;

/// Dimensions of the model's vectors.
pub const DIMENSIONS: usize = 384;
/// The model's name (what `embedding_model` records).
pub const MODEL: &str = "all-MiniLM-L6-v2";
/// The most word pieces one forward pass sees, `[CLS]` and `[SEP]` included.
pub const MAX_TOKENS: usize = 256;
/// Word pieces per window of a text longer than `MAX_TOKENS - 2`.
pub const WINDOW: usize = 200;
/// Files the model directory must hold.
pub const MODEL_FILES: [&str; 3] = ["model.safetensors", "tokenizer.json", "config.json"];
/// (text index, vector of one of its windows).
type Pooled = Vec<(usize, Vec<f32>)>;
/// Windows run through the model in one forward pass (sorted by length to limit padding).
const BATCH: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("model file {0} not found")]
    Missing(PathBuf),
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("model config: {0}")]
    Config(String),
}

/// Whether `dir` holds the model's files.
pub fn model_present(dir: &Path) -> bool {
    MODEL_FILES.iter().all(|f| dir.join(f).is_file())
}

pub struct LocalEmbedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    cls: u32,
    sep: u32,
    pad: u32,
}

impl LocalEmbedder {
    /// Loads the model from `dir` (the folder with `model.safetensors`).
    pub fn load(dir: &Path) -> Result<Self, Error> {
        for f in MODEL_FILES {
            if !dir.join(f).is_file() {
                return Err(Error::Missing(dir.join(f)));
            }
        }
        let config: Config = serde_json::from_slice(
            &std::fs::read(dir.join("config.json")).map_err(|e| Error::Config(e.to_string()))?,
        )
        .map_err(|e| Error::Config(e.to_string()))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        // The file pads and truncates to 128; windows are built here instead.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let id = |t: &str| {
            tokenizer
                .token_to_id(t)
                .ok_or_else(|| Error::Tokenizer(format!("no {t} token")))
        };
        let (cls, sep, pad) = (id("[CLS]")?, id("[SEP]")?, id("[PAD]")?);
        let device = Device::Cpu;
        // SAFETY: the file is memory-mapped read-only; it must not change while loaded.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(
                &[dir.join("model.safetensors")],
                DType::F32,
                &device,
            )?
        };
        let model = BertModel::load(vb, &config)?;
        Ok(LocalEmbedder {
            model,
            tokenizer,
            device,
            cls,
            sep,
            pad,
        })
    }

    /// The windows of word pieces of `text`, each wrapped in `[CLS]` ... `[SEP]`.
    fn windows(&self, text: &str) -> Result<Vec<Vec<u32>>, Error> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let ids = enc.get_ids();
        let wrap = |piece: &[u32]| {
            let mut w = Vec::with_capacity(piece.len() + 2);
            w.push(self.cls);
            w.extend_from_slice(piece);
            w.push(self.sep);
            w
        };
        if ids.len() <= MAX_TOKENS - 2 {
            return Ok(vec![wrap(ids)]);
        }
        // Equal windows of at most WINDOW pieces.
        let n = ids.len().div_ceil(WINDOW);
        let size = ids.len().div_ceil(n);
        Ok(ids.chunks(size).map(wrap).collect())
    }

    /// Mean-pooled, L2-normalised vectors of equally long or padded windows.
    fn forward(&self, windows: &[&Vec<u32>]) -> Result<Vec<Vec<f32>>, Error> {
        let len = windows.iter().map(|w| w.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(windows.len() * len);
        let mut mask = Vec::with_capacity(windows.len() * len);
        for w in windows {
            ids.extend_from_slice(w);
            ids.extend(std::iter::repeat_n(self.pad, len - w.len()));
            mask.extend(std::iter::repeat_n(1u32, w.len()));
            mask.extend(std::iter::repeat_n(0u32, len - w.len()));
        }
        let shape = (windows.len(), len);
        let ids = Tensor::from_vec(ids, shape, &self.device)?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;
        let types = ids.zeros_like()?;
        let out = self.model.forward(&ids, &types, Some(&mask))?; // (b, len, 384)
        let maskf = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (b, len, 1)
        let sum = out.broadcast_mul(&maskf)?.sum(1)?; // (b, 384)
        let count = maskf.sum(1)?.clamp(1e-9f32, f32::MAX)?; // (b, 1)
        let mean = sum.broadcast_div(&count)?;
        Ok(mean.to_vec2::<f32>()?.into_iter().map(normalize).collect())
    }

    /// The unit vectors ([`DIMENSIONS`] numbers) of `texts`, in order. CPU-bound: call it
    /// from a blocking thread.
    pub fn embed(&self, texts: &[impl AsRef<str>]) -> Result<Vec<Vec<f32>>, Error> {
        // Every window, tagged with its text.
        let mut windows: Vec<(usize, Vec<u32>)> = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            windows.extend(self.windows(t.as_ref())?.into_iter().map(|w| (i, w)));
        }
        let mut order: Vec<usize> = (0..windows.len()).collect();
        order.sort_by_key(|&k| windows[k].1.len());
        let batches: Vec<&[usize]> = order.chunks(BATCH).collect();
        // candle's matrix products of these small batches barely use a second core: run
        // batches side by side instead, one thread per core.
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(batches.len())
            .max(1);
        let run = |t: usize| -> Result<Pooled, Error> {
            let mut out = Vec::new();
            for batch in batches.iter().skip(t).step_by(threads) {
                let ws: Vec<&Vec<u32>> = batch.iter().map(|&k| &windows[k].1).collect();
                for (&k, v) in batch.iter().zip(self.forward(&ws)?) {
                    out.push((windows[k].0, v));
                }
            }
            Ok(out)
        };
        let results: Vec<Result<Pooled, Error>> = if threads == 1 {
            vec![run(0)]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads).map(|t| s.spawn(move || run(t))).collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("embedding thread panicked"))
                    .collect()
            })
        };
        let mut sums = vec![vec![0f32; DIMENSIONS]; texts.len()];
        for r in results {
            for (i, v) in r? {
                sums[i].iter_mut().zip(v).for_each(|(a, b)| *a += b);
            }
        }
        Ok(sums.into_iter().map(normalize).collect())
    }
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalize(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// For tests and benchmarks: the model folder named by `AGENCYFLOW_TEST_MODEL_DIR`, else
/// `fallback` (the folder the code under test would use). A missing model fails the test
/// (panic, saying how to get it): a test never passes by skipping what it tests.
pub fn test_model_dir(fallback: Option<PathBuf>) -> PathBuf {
    let explicit = std::env::var_os("AGENCYFLOW_TEST_MODEL_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let named = if explicit.is_some() {
        "AGENCYFLOW_TEST_MODEL_DIR="
    } else {
        ""
    };
    let dir = explicit.or(fallback).unwrap_or_else(|| {
        panic!("no folder for the all-MiniLM-L6-v2 model: set AGENCYFLOW_TEST_MODEL_DIR (no HOME either)")
    });
    assert!(
        model_present(&dir),
        "{named}{} has no all-MiniLM-L6-v2 model files: run `bash scripts/setup`, or set AGENCYFLOW_TEST_MODEL_DIR",
        dir.display()
    );
    dir
}

/// The folder `scripts/setup` unpacks the model to:
/// `${XDG_CACHE_HOME:-$HOME/.cache}/agencyflow/models/all-MiniLM-L6-v2`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("agencyflow").join("models").join(MODEL))
}
