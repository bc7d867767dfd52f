//! `local`: sentence-transformers' all-MiniLM-L6-v2 on the CPU inside the binary (candle BERT,
//! crate `agencyflow-localembed`). Semantic, offline and free. Its 384-number unit vectors
//! are zero-padded to the column's size (768 or 1536): cosine similarity is unchanged.
//! Texts longer than 256 word pieces are embedded in windows of at most 200 word pieces and
//! get the normalised mean of their windows' vectors.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use agencyflow_localembed::LocalEmbedder;
use futures::future::BoxFuture;
use futures::FutureExt;

use super::{ChatRequest, ChatResponse, ChatStream, Embeddings, Provider, ProviderError, Usage};

pub const MODEL: &str = agencyflow_localembed::MODEL;
pub const DIMENSIONS: usize = agencyflow_localembed::DIMENSIONS;

/// The model is loaded on the first embedding, not at start: ~100 MiB that an idle server
/// (or one whose rows are all embedded) does not need to hold (BENCHMARKS.md, idle RSS).
pub struct LocalProvider {
    dir: PathBuf,
}

/// Models already loaded, by folder: `serve`'s API and its worker share one copy.
fn loaded() -> &'static Mutex<HashMap<PathBuf, Arc<LocalEmbedder>>> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, Arc<LocalEmbedder>>>> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

impl LocalProvider {
    /// A provider for the model in `dir`, checking its files are there; the weights are read
    /// on the first embedding.
    pub fn load(dir: &Path) -> Result<Self, ProviderError> {
        for f in ["model.safetensors", "tokenizer.json", "config.json"] {
            if !dir.join(f).is_file() {
                return Err(ProviderError::Unsupported(format!(
                    "local embedding model in {}: {f} is missing (run scripts/setup or set AI_LOCAL_MODEL_DIR)",
                    dir.display()
                )));
            }
        }
        Ok(LocalProvider {
            dir: dir.to_path_buf(),
        })
    }

    /// Loads (once per process and folder) the model; blocking.
    fn embedder(dir: &Path) -> Result<Arc<LocalEmbedder>, ProviderError> {
        let mut map = loaded().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = map.get(dir) {
            return Ok(e.clone());
        }
        let started = std::time::Instant::now();
        let embedder = Arc::new(LocalEmbedder::load(dir).map_err(|e| {
            ProviderError::Unsupported(format!(
                "local embedding model in {}: {e} (run scripts/setup or set AI_LOCAL_MODEL_DIR)",
                dir.display()
            ))
        })?);
        tracing::info!(dir = %dir.display(), load_ms = started.elapsed().as_millis() as u64, "local embedding model loaded");
        map.insert(dir.to_path_buf(), embedder.clone());
        Ok(embedder)
    }
}

impl Provider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    fn model(&self) -> &str {
        MODEL
    }

    fn chat<'a>(
        &'a self,
        _req: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        async {
            Err(ProviderError::Unsupported(
                "the local provider only embeds".into(),
            ))
        }
        .boxed()
    }

    fn chat_stream<'a>(
        &'a self,
        _req: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatStream, ProviderError>> {
        async {
            Err(ProviderError::Unsupported(
                "the local provider only embeds".into(),
            ))
        }
        .boxed()
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [String],
        dimensions: usize,
    ) -> BoxFuture<'a, Result<Embeddings, ProviderError>> {
        let dir = self.dir.clone();
        let owned = texts.to_vec();
        async move {
            if dimensions < DIMENSIONS {
                return Err(ProviderError::BadResponse(format!(
                    "model {MODEL} returns {DIMENSIONS} dimensions, the column needs {dimensions}"
                )));
            }
            let vectors = tokio::task::spawn_blocking(move || {
                Self::embedder(&dir)?
                    .embed(&owned)
                    .map_err(|e| ProviderError::BadResponse(e.to_string()))
            })
            .await
            .map_err(|e| ProviderError::Transport(format!("local model task: {e}")))??;
            let vectors: Vec<Vec<f32>> = vectors
                .into_iter()
                .map(|mut v| {
                    v.resize(dimensions, 0.0);
                    v
                })
                .collect();
            super::check_vectors(&vectors, texts.len(), dimensions, MODEL)?;
            Ok(Embeddings {
                vectors,
                usage: Usage::default(),
            })
        }
        .boxed()
    }
}
