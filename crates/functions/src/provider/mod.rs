//! The model provider layer: one trait for structured chat, streamed chat and batch
//! embeddings, with Gemini, OpenAI-compatible, offline `local` (all-MiniLM-L6-v2 on the CPU,
//! feature `local-model`) and offline `hash` implementations.
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde_json::Value;

use crate::config::{ChatProviderKind, EmbedProviderKind, FunctionsArgs};

static MODEL_RELEASE_HOOK: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Registers what runs right after a local model's memory was dropped (on the thread that
/// released it): the binary's way to have its allocator hand the freed pages back to the
/// operating system. mimalloc otherwise keeps them until the threads that used them
/// allocate again, so an idle server stayed at ~155 MiB after a release.
pub fn on_model_release(hook: fn()) {
    let _ = MODEL_RELEASE_HOOK.set(hook);
}

pub mod gemini;
pub mod hash;
mod http;
#[cfg(feature = "local-model")]
pub mod local;
pub mod openai;
mod sse;

pub use gemini::Gemini;
pub use hash::HashEmbedder;
pub use http::RetryPolicy;
pub use openai::OpenAi;

/// Tokens a call consumed, from the provider's own usage fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u32,
    pub output_tokens: u32,
}

/// One chat request: a system instruction, the user's message and, for structured output,
/// the JSON schema the answer must follow.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub system: String,
    pub user: String,
    /// Name of the schema (OpenAI's `json_schema.name`).
    pub schema_name: String,
    pub schema: Option<Value>,
    pub temperature: f32,
}

#[derive(Debug, Clone)]
pub struct ChatResponse {
    /// The model's text (JSON text when a schema was given).
    pub text: String,
    pub usage: Usage,
}

/// A piece of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Delta(String),
    Usage(Usage),
}

#[derive(Debug, Clone)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub usage: Usage,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("provider answered HTTP {status}: {body}")]
    Http { status: u16, body: String },
    #[error("provider unreachable: {0}")]
    Transport(String),
    #[error("provider timed out")]
    Timeout,
    #[error("unexpected provider response: {0}")]
    BadResponse(String),
    #[error("{0}")]
    Unsupported(String),
}

pub type ChatStream = BoxStream<'static, Result<StreamEvent, ProviderError>>;

/// A model provider. `chat` and `chat_stream` may be unsupported (the `hash` embedder).
pub trait Provider: Send + Sync {
    /// `gemini`, `openai`, `local` or `hash` (what `ai_run_logs.provider` records).
    fn name(&self) -> &'static str;
    /// The model this provider calls.
    fn model(&self) -> &str;
    /// One structured (or free-text) chat completion.
    fn chat<'a>(
        &'a self,
        req: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>>;
    /// A streamed chat completion.
    fn chat_stream<'a>(
        &'a self,
        req: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatStream, ProviderError>>;
    /// Embeds `texts` as vectors of `dimensions` numbers each, in order.
    fn embed<'a>(
        &'a self,
        texts: &'a [String],
        dimensions: usize,
    ) -> BoxFuture<'a, Result<Embeddings, ProviderError>>;
}

pub type DynProvider = Arc<dyn Provider>;

fn policy(args: &FunctionsArgs) -> RetryPolicy {
    RetryPolicy {
        timeout: Duration::from_secs(args.ai_timeout_secs.max(1)),
        max_retries: args.ai_max_retries,
        base_delay: Duration::from_millis(args.ai_retry_base_ms),
        max_delay: Duration::from_secs(30),
    }
}

/// The OpenAI-compatible endpoint the settings name.
pub fn openai_base(args: &FunctionsArgs) -> String {
    args.openai_base_url
        .clone()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "https://api.openai.com/v1".into())
}

/// The chat provider the settings name, or None when none is configured.
pub fn chat_from_args(args: &FunctionsArgs) -> Option<DynProvider> {
    match args.resolved_chat() {
        ChatProviderKind::Gemini => Some(Arc::new(Gemini::new(
            &args.gemini_base_url,
            args.gemini_api_key.clone().unwrap_or_default(),
            args.chat_model().unwrap_or_default(),
            policy(args),
        ))),
        ChatProviderKind::Openai => Some(Arc::new(OpenAi::new(
            &openai_base(args),
            args.openai_api_key.clone(),
            args.chat_model().unwrap_or_default(),
            policy(args),
        ))),
        ChatProviderKind::None | ChatProviderKind::Auto => None,
    }
}

/// The embedding provider the settings name (`hash` when nothing else is configured).
pub fn embedder_from_args(args: &FunctionsArgs) -> DynProvider {
    match args.resolved_embed() {
        EmbedProviderKind::Gemini => Arc::new(Gemini::new(
            &args.gemini_base_url,
            args.gemini_api_key.clone().unwrap_or_default(),
            args.embed_model(),
            policy(args),
        )),
        EmbedProviderKind::Openai => Arc::new(OpenAi::new(
            &openai_base(args),
            args.openai_api_key.clone(),
            args.embed_model(),
            policy(args),
        )),
        EmbedProviderKind::Local => local_embedder(args),
        EmbedProviderKind::Hash | EmbedProviderKind::Auto => {
            Arc::new(HashEmbedder::new(args.embed_model()))
        }
    }
}

#[cfg(feature = "local-model")]
fn local_embedder(args: &FunctionsArgs) -> DynProvider {
    let Some(dir) = args.local_model_dir() else {
        let reason = "local embedding model: no model folder (set AI_LOCAL_MODEL_DIR)".to_string();
        tracing::error!("{reason}");
        return Arc::new(Unavailable { reason });
    };
    match local::LocalProvider::load(&dir) {
        Ok(p) => Arc::new(p.release_after(match args.ai_local_model_idle_secs {
            0 => None,
            s => Some(std::time::Duration::from_secs(s)),
        })),
        Err(e) => {
            tracing::error!(error = %e, "the local embedding model could not be loaded; embeddings will fail");
            Arc::new(Unavailable {
                reason: e.to_string(),
            })
        }
    }
}

#[cfg(not(feature = "local-model"))]
fn local_embedder(_args: &FunctionsArgs) -> DynProvider {
    let reason =
        "this agencyflow was built without the local-model feature: no local embedding provider"
            .to_string();
    tracing::error!("{reason}");
    Arc::new(Unavailable { reason })
}

/// Stands in for `local` when its model cannot be loaded: every call fails with the reason
/// (jobs retry and then fail visibly rather than being embedded by another model).
pub struct Unavailable {
    pub reason: String,
}

impl Provider for Unavailable {
    fn name(&self) -> &'static str {
        "local"
    }

    fn model(&self) -> &str {
        crate::config::LOCAL_MODEL
    }

    fn chat<'a>(
        &'a self,
        _req: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        let e = ProviderError::Unsupported(self.reason.clone());
        Box::pin(async move { Err(e) })
    }

    fn chat_stream<'a>(
        &'a self,
        _req: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatStream, ProviderError>> {
        let e = ProviderError::Unsupported(self.reason.clone());
        Box::pin(async move { Err(e) })
    }

    fn embed<'a>(
        &'a self,
        _texts: &'a [String],
        _dimensions: usize,
    ) -> BoxFuture<'a, Result<Embeddings, ProviderError>> {
        let e = ProviderError::Unsupported(self.reason.clone());
        Box::pin(async move { Err(e) })
    }
}

/// Checks a provider's vectors: one per text, each of the requested size.
pub(crate) fn check_vectors(
    vectors: &[Vec<f32>],
    texts: usize,
    dimensions: usize,
    model: &str,
) -> Result<(), ProviderError> {
    if vectors.len() != texts {
        return Err(ProviderError::BadResponse(format!(
            "{} embeddings for {texts} texts",
            vectors.len()
        )));
    }
    // Numbers beyond f32 (1e39) became infinities, which pgvector refuses.
    if vectors.iter().flatten().any(|x| !x.is_finite()) {
        return Err(ProviderError::BadResponse(format!(
            "model {model} returned an embedding with a non-finite number"
        )));
    }
    if let Some(v) = vectors.iter().find(|v| v.len() != dimensions) {
        return Err(ProviderError::BadResponse(format!(
            "model {model} returned {} dimensions, the column needs {dimensions} (choose a model that supports {dimensions}, e.g. with AI_EMBED_MODEL)",
            v.len()
        )));
    }
    Ok(())
}
