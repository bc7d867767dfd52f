//! The functions' settings: which model providers to call, where, with which keys, and the
//! limits of the AI layer. Flattened into `agencyflow serve`'s flags; every flag starts with
//! `--ai-`, `--gemini-` or `--openai-` so it cannot collide with the other surfaces' flags.
use std::path::PathBuf;

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChatProviderKind {
    /// Gemini when GEMINI_API_KEY is set, else an OpenAI-compatible endpoint when
    /// OPENAI_API_KEY or OPENAI_BASE_URL is set, else none.
    Auto,
    Gemini,
    Openai,
    /// No chat model: the chat functions answer 503.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmbedProviderKind {
    /// Gemini when GEMINI_API_KEY is set, else OpenAI-compatible when OPENAI_API_KEY or
    /// OPENAI_BASE_URL is set, else (in `serve` and `embed backfill`) `local` when the model
    /// files are present, else `hash`.
    Auto,
    Gemini,
    Openai,
    /// all-MiniLM-L6-v2 running on the CPU inside the binary: semantic, offline, free
    /// (model files from `scripts/setup`, see --ai-local-model-dir).
    Local,
    /// Offline feature hashing: deterministic and free, lexical (shared words), not semantic.
    Hash,
}

/// The `local` provider's model (and the name of its folder).
pub const LOCAL_MODEL: &str = "all-MiniLM-L6-v2";

/// Settings of `/functions/v1` and the embeddings pipeline.
#[derive(Clone, Args)]
pub struct FunctionsArgs {
    /// Gemini API key (also read from the vault secret `GEMINI_API_KEY`).
    #[arg(long, env = "GEMINI_API_KEY", hide_env_values = true)]
    pub gemini_api_key: Option<String>,
    /// Gemini API base URL.
    #[arg(
        long,
        env = "GEMINI_BASE_URL",
        default_value = "https://generativelanguage.googleapis.com/v1beta"
    )]
    pub gemini_base_url: String,
    /// OpenAI-compatible API key (also read from the vault secret `OPENAI_API_KEY`); Ollama,
    /// vLLM and llama.cpp servers usually need none.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<String>,
    /// OpenAI-compatible base URL (OpenAI, Ollama `http://localhost:11434/v1`, vLLM, llama.cpp).
    #[arg(long, env = "OPENAI_BASE_URL")]
    pub openai_base_url: Option<String>,
    /// Chat provider.
    #[arg(long, env = "AI_CHAT_PROVIDER", value_enum, default_value_t = ChatProviderKind::Auto)]
    pub ai_chat_provider: ChatProviderKind,
    /// Chat model (default: gemini-2.5-flash for Gemini, gpt-4o-mini for OpenAI-compatible).
    #[arg(long, env = "AI_CHAT_MODEL")]
    pub ai_chat_model: Option<String>,
    /// Embedding provider.
    #[arg(long, env = "AI_EMBED_PROVIDER", value_enum, default_value_t = EmbedProviderKind::Auto)]
    pub ai_embed_provider: EmbedProviderKind,
    /// Embedding model (default: gemini-embedding-001, text-embedding-3-small, hash-v1).
    /// Ignored by `local`, whose model is all-MiniLM-L6-v2.
    #[arg(long, env = "AI_EMBED_MODEL")]
    pub ai_embed_model: Option<String>,
    /// Folder of the `local` provider's model files (model.safetensors, tokenizer.json,
    /// config.json). Default: `<data-dir>/models/all-MiniLM-L6-v2` when it exists, else
    /// `${XDG_CACHE_HOME:-~/.cache}/agencyflow/models/all-MiniLM-L6-v2` (where
    /// `scripts/setup` unpacks it).
    #[arg(long, env = "AI_LOCAL_MODEL_DIR")]
    pub ai_local_model_dir: Option<PathBuf>,
    /// Seconds the `local` model stays in memory (~100 MiB) after its last embedding; it is
    /// loaded again (≈ 0.1 s) on the next one. 0 keeps it for the life of the process.
    #[arg(long, env = "AI_LOCAL_MODEL_IDLE_SECS", default_value_t = 30)]
    pub ai_local_model_idle_secs: u64,
    /// Whether `auto` may pick `local` (set by `serve` and `embed backfill`, not a flag):
    /// library users and tests keep the `hash` default unless they ask for `local`.
    #[arg(skip)]
    pub ai_auto_local: bool,
    /// Timeout of one provider request, in seconds (for streams: the longest silence).
    #[arg(long, env = "AI_TIMEOUT_SECS", default_value_t = 60)]
    pub ai_timeout_secs: u64,
    /// Retries of a provider request answered 429 or 5xx, or lost in transit.
    #[arg(long, env = "AI_MAX_RETRIES", default_value_t = 3)]
    pub ai_max_retries: u32,
    /// First retry delay in milliseconds (doubling each retry; a Retry-After header wins).
    #[arg(long, env = "AI_RETRY_BASE_MS", default_value_t = 500)]
    pub ai_retry_base_ms: u64,
    /// AI runs (provider calls to a paid provider, cache hits excluded) one organization may
    /// make per clock hour (UTC); 0: no limit. Reserved before the call (so concurrent calls
    /// cannot pass it), released when the provider fails.
    #[arg(long, env = "AI_RATE_LIMIT_PER_HOUR", default_value_t = 100)]
    pub ai_rate_limit_per_hour: i64,
    /// Chat tokens (prompt and answer) one organization may use per UTC day; 0: no token
    /// budget. Each call reserves an estimate before it is sent and is settled with the
    /// tokens the provider reports, so concurrent calls cannot overspend it.
    #[arg(long, env = "AI_CHAT_TOKEN_BUDGET_PER_DAY", default_value_t = 0)]
    pub ai_chat_token_budget_per_day: i64,
    /// Characters of text one organization may send to a paid embedding provider per UTC
    /// day (the worker and the embed/search/assistant functions together); 0: no cap. When
    /// it is spent the worker leaves that organization's rows queued until the next day.
    /// The offline `local` and `hash` providers are metered but never capped.
    #[arg(
        long,
        env = "AI_EMBED_BUDGET_CHARS_PER_DAY",
        default_value_t = 20_000_000
    )]
    pub ai_embed_budget_chars_per_day: i64,
    /// How long a cached model answer stays valid, in seconds (0: no caching).
    #[arg(long, env = "AI_CACHE_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    pub ai_cache_ttl_secs: i64,
    /// Run the embedding worker inside `serve`.
    #[arg(long, env = "AI_EMBED_WORKER", default_value_t = true, action = clap::ArgAction::Set)]
    pub ai_embed_worker: bool,
    /// Jobs the embedding worker claims (and embeds in one provider call) at a time.
    #[arg(long, env = "AI_EMBED_BATCH_SIZE", default_value_t = 32)]
    pub ai_embed_batch_size: i64,
    /// How often an idle embedding worker looks for jobs, in milliseconds.
    #[arg(long, env = "AI_EMBED_POLL_MS", default_value_t = 1000)]
    pub ai_embed_poll_ms: u64,
    /// A claimed job not finished within this many seconds is claimed again (a stopped server's lease).
    #[arg(long, env = "AI_EMBED_LEASE_SECS", default_value_t = 300)]
    pub ai_embed_lease_secs: i64,
    /// Attempts before an embedding job is marked failed.
    #[arg(long, env = "AI_EMBED_MAX_ATTEMPTS", default_value_t = 5)]
    pub ai_embed_max_attempts: i32,
}

impl std::fmt::Debug for FunctionsArgs {
    // Keys are secrets: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionsArgs")
            .field(
                "gemini_api_key",
                &self.gemini_api_key.as_ref().map(|_| "<set>"),
            )
            .field("gemini_base_url", &self.gemini_base_url)
            .field(
                "openai_api_key",
                &self.openai_api_key.as_ref().map(|_| "<set>"),
            )
            .field("openai_base_url", &self.openai_base_url)
            .field("ai_chat_provider", &self.ai_chat_provider)
            .field("ai_chat_model", &self.ai_chat_model)
            .field("ai_embed_provider", &self.ai_embed_provider)
            .field("ai_embed_model", &self.ai_embed_model)
            .field("ai_local_model_dir", &self.ai_local_model_dir)
            .field("ai_local_model_idle_secs", &self.ai_local_model_idle_secs)
            .field("ai_rate_limit_per_hour", &self.ai_rate_limit_per_hour)
            .field(
                "ai_chat_token_budget_per_day",
                &self.ai_chat_token_budget_per_day,
            )
            .field(
                "ai_embed_budget_chars_per_day",
                &self.ai_embed_budget_chars_per_day,
            )
            .field("ai_cache_ttl_secs", &self.ai_cache_ttl_secs)
            .field("ai_embed_worker", &self.ai_embed_worker)
            .finish_non_exhaustive()
    }
}

impl Default for FunctionsArgs {
    fn default() -> Self {
        FunctionsArgs {
            gemini_api_key: None,
            gemini_base_url: "https://generativelanguage.googleapis.com/v1beta".into(),
            openai_api_key: None,
            openai_base_url: None,
            ai_chat_provider: ChatProviderKind::Auto,
            ai_chat_model: None,
            ai_embed_provider: EmbedProviderKind::Auto,
            ai_embed_model: None,
            ai_local_model_dir: None,
            ai_local_model_idle_secs: 30,
            ai_auto_local: false,
            ai_timeout_secs: 60,
            ai_max_retries: 3,
            ai_retry_base_ms: 500,
            ai_rate_limit_per_hour: 100,
            ai_chat_token_budget_per_day: 0,
            ai_embed_budget_chars_per_day: 20_000_000,
            ai_cache_ttl_secs: 7 * 24 * 3600,
            ai_embed_worker: true,
            ai_embed_batch_size: 32,
            ai_embed_poll_ms: 1000,
            ai_embed_lease_secs: 300,
            ai_embed_max_attempts: 5,
        }
    }
}

impl FunctionsArgs {
    fn has_gemini(&self) -> bool {
        self.gemini_api_key
            .as_deref()
            .is_some_and(|k| !k.is_empty())
    }

    fn has_openai(&self) -> bool {
        self.openai_api_key
            .as_deref()
            .is_some_and(|k| !k.is_empty())
            || self
                .openai_base_url
                .as_deref()
                .is_some_and(|k| !k.is_empty())
    }

    /// The chat provider `auto` resolves to.
    pub fn resolved_chat(&self) -> ChatProviderKind {
        match self.ai_chat_provider {
            ChatProviderKind::Auto if self.has_gemini() => ChatProviderKind::Gemini,
            ChatProviderKind::Auto if self.has_openai() => ChatProviderKind::Openai,
            ChatProviderKind::Auto => ChatProviderKind::None,
            k => k,
        }
    }

    /// The chat model called (AI_CHAT_MODEL, else the provider's default); None without a
    /// chat provider.
    pub fn chat_model(&self) -> Option<String> {
        let default = match self.resolved_chat() {
            ChatProviderKind::Gemini => "gemini-2.5-flash",
            ChatProviderKind::Openai => "gpt-4o-mini",
            ChatProviderKind::None | ChatProviderKind::Auto => return None,
        };
        Some(self.ai_chat_model.clone().unwrap_or_else(|| default.into()))
    }

    /// The embedding model used (AI_EMBED_MODEL, else the provider's default).
    pub fn embed_model(&self) -> String {
        let default = match self.resolved_embed() {
            EmbedProviderKind::Gemini => "gemini-embedding-001",
            EmbedProviderKind::Openai => "text-embedding-3-small",
            EmbedProviderKind::Local => LOCAL_MODEL,
            EmbedProviderKind::Hash | EmbedProviderKind::Auto => crate::provider::hash::MODEL,
        };
        self.ai_embed_model
            .clone()
            .unwrap_or_else(|| default.into())
    }

    /// The embedding provider `auto` resolves to.
    pub fn resolved_embed(&self) -> EmbedProviderKind {
        match self.ai_embed_provider {
            EmbedProviderKind::Auto if self.has_gemini() => EmbedProviderKind::Gemini,
            EmbedProviderKind::Auto if self.has_openai() => EmbedProviderKind::Openai,
            EmbedProviderKind::Auto if self.ai_auto_local && self.local_model_available() => {
                EmbedProviderKind::Local
            }
            EmbedProviderKind::Auto => EmbedProviderKind::Hash,
            k => k,
        }
    }

    /// The folder the `local` provider loads its model from (see `--ai-local-model-dir`;
    /// `serve` fills in `<data-dir>/models/all-MiniLM-L6-v2` when that folder exists).
    pub fn local_model_dir(&self) -> Option<PathBuf> {
        if let Some(d) = self
            .ai_local_model_dir
            .clone()
            .filter(|d| !d.as_os_str().is_empty())
        {
            return Some(d);
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("agencyflow/models").join(LOCAL_MODEL))
    }

    /// Whether this binary has the `local` provider and its model files are present.
    pub fn local_model_available(&self) -> bool {
        cfg!(feature = "local-model")
            && self.local_model_dir().is_some_and(|d| {
                ["model.safetensors", "tokenizer.json", "config.json"]
                    .iter()
                    .all(|f| d.join(f).is_file())
            })
    }

    /// Fills missing provider keys from the vault (`vault.decrypted_secrets`, as service_role).
    /// A vault that cannot be read is logged and ignored: the environment is enough.
    pub async fn fill_keys_from_vault(&mut self, db: &agencyflow_db::Db) {
        if self.has_gemini() && self.openai_api_key.is_some() {
            return;
        }
        let settings = agencyflow_db::TxSettings::new("service_role", r#"{"role":"service_role"}"#)
            .read_only(true);
        let rows = async {
            let mut tx = db.begin(&settings).await?;
            let rows = tx
                .query(
                    "select name, decrypted_secret from vault.decrypted_secrets
                     where name in ('GEMINI_API_KEY', 'OPENAI_API_KEY')",
                    &[],
                )
                .await?;
            tx.commit().await?;
            Ok::<_, agencyflow_db::DbError>(rows)
        }
        .await;
        match rows {
            Ok(rows) => {
                for r in rows {
                    let name: String = r.get(0);
                    let value: Option<String> = r.get(1);
                    let Some(value) = value.filter(|v| !v.is_empty()) else {
                        continue;
                    };
                    match name.as_str() {
                        "GEMINI_API_KEY" if !self.has_gemini() => self.gemini_api_key = Some(value),
                        "OPENAI_API_KEY" if self.openai_api_key.is_none() => {
                            self.openai_api_key = Some(value)
                        }
                        _ => {}
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "provider keys not read from the vault"),
        }
    }
}
