//! `local`: sentence-transformers' all-MiniLM-L6-v2 on the CPU inside the binary (candle BERT,
//! crate `agencyflow-localembed`). Semantic, offline and free. Its 384-number unit vectors
//! are zero-padded to the column's size (768 or 1536): cosine similarity is unchanged.
//! Texts longer than 256 word pieces are embedded in windows of at most 200 word pieces and
//! get the normalised mean of their windows' vectors.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use agencyflow_localembed::LocalEmbedder;
use futures::future::BoxFuture;
use futures::FutureExt;

use super::{ChatRequest, ChatResponse, ChatStream, Embeddings, Provider, ProviderError, Usage};

pub const MODEL: &str = agencyflow_localembed::MODEL;
pub const DIMENSIONS: usize = agencyflow_localembed::DIMENSIONS;

/// The model is loaded on the first embedding, not at start, and released after a spell
/// without embeddings (`release_after`, `AI_LOCAL_MODEL_IDLE_SECS`): ~100 MiB that an idle
/// server, or one whose rows are all embedded, does not need to hold (BENCHMARKS.md, RSS).
pub struct LocalProvider {
    dir: PathBuf,
    idle: Option<Duration>,
}

/// A loaded model and when it was last used.
struct Loaded {
    embedder: Arc<LocalEmbedder>,
    last_used: Instant,
    /// Released after this long unused (`None`: kept).
    idle: Option<Duration>,
}

/// Models already loaded, by folder: `serve`'s API and its worker share one copy.
fn loaded() -> &'static Mutex<HashMap<PathBuf, Loaded>> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, Loaded>>> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

fn lock() -> std::sync::MutexGuard<'static, HashMap<PathBuf, Loaded>> {
    loaded().lock().unwrap_or_else(|e| e.into_inner())
}

/// Drops models unused for their idle time and not in use (one thread per process, started
/// with the first model that may be released).
fn start_reaper() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("local-model-reaper".into())
            .spawn(|| loop {
                std::thread::sleep(Duration::from_secs(1));
                let released: Vec<PathBuf> = {
                    let mut map = lock();
                    let stale: Vec<PathBuf> = map
                        .iter()
                        .filter(|(_, l)| {
                            l.idle.is_some_and(|idle| l.last_used.elapsed() >= idle)
                                && Arc::strong_count(&l.embedder) == 1
                        })
                        .map(|(d, _)| d.clone())
                        .collect();
                    for d in &stale {
                        map.remove(d);
                    }
                    stale
                };
                if released.is_empty() {
                    continue;
                }
                if let Some(hook) = super::MODEL_RELEASE_HOOK.get() {
                    hook();
                }
                for d in released {
                    tracing::info!(dir = %d.display(), "local embedding model released after its idle time");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no reaper thread: the local model stays loaded");
        }
    });
}

/// Whether the model in `dir` is in memory now.
pub fn is_loaded(dir: &Path) -> bool {
    lock().contains_key(dir)
}

impl LocalProvider {
    /// A provider for the model in `dir`, checking its files are there; the weights are read
    /// on the first embedding and kept until the process ends (see [`Self::release_after`]).
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
            idle: None,
        })
    }

    /// Releases the weights after `idle` without embeddings (`None`: never).
    pub fn release_after(mut self, idle: Option<Duration>) -> Self {
        self.idle = idle;
        self
    }

    /// Loads (once per process and folder, again after a release) the model; blocking.
    fn embedder(dir: &Path, idle: Option<Duration>) -> Result<Arc<LocalEmbedder>, ProviderError> {
        let mut map = lock();
        if let Some(l) = map.get_mut(dir) {
            l.last_used = Instant::now();
            return Ok(l.embedder.clone());
        }
        let started = Instant::now();
        let embedder = Arc::new(LocalEmbedder::load(dir).map_err(|e| {
            ProviderError::Unsupported(format!(
                "local embedding model in {}: {e} (run scripts/setup or set AI_LOCAL_MODEL_DIR)",
                dir.display()
            ))
        })?);
        tracing::info!(dir = %dir.display(), load_ms = started.elapsed().as_millis() as u64, "local embedding model loaded");
        map.insert(
            dir.to_path_buf(),
            Loaded {
                embedder: embedder.clone(),
                last_used: Instant::now(),
                idle,
            },
        );
        if idle.is_some() {
            start_reaper();
        }
        Ok(embedder)
    }

    /// Marks the model used now (at the end of an embedding: a long batch is not idle time).
    fn touch(dir: &Path) {
        if let Some(l) = lock().get_mut(dir) {
            l.last_used = Instant::now();
        }
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
            let idle = self.idle;
            let vectors = tokio::task::spawn_blocking(move || {
                let embedder = Self::embedder(&dir, idle)?;
                let out = embedder
                    .embed(&owned)
                    .map_err(|e| ProviderError::BadResponse(e.to_string()));
                drop(embedder);
                Self::touch(&dir);
                out
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
