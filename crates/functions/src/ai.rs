//! Every model call of a function goes through here: the response cache (`ai_cache`), the
//! per-org budget (reserved before the call and settled after it, [`crate::budget`]), the
//! provider, the clean-up and validation of the structured output, and the run log
//! (`ai_run_logs`). Cache, log and budget are service-role-only tables: they are written in
//! short transactions of their own as `service_role`, never in the caller's.
use std::time::Instant;

use agencyflow_db::{ClaimsTxn, DbError, TxSettings};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::budget::{self, Cost, Meter, Refused, Reservation, Want};
use crate::error::FnError;
use crate::provider::{ChatRequest, DynProvider, ProviderError, Usage};
use crate::schema;
use crate::FunctionsState;

/// One structured model call of a function.
pub struct Run {
    pub agent: &'static str,
    pub org_id: Uuid,
    pub project_id: Option<Uuid>,
    pub system: String,
    pub user: String,
    pub schema: Value,
}

/// One `ai_run_logs` row.
pub struct LogEntry<'a> {
    pub agent: &'a str,
    pub org_id: Uuid,
    pub project_id: Option<Uuid>,
    pub provider: &'a str,
    pub model: &'a str,
    pub usage: Usage,
    pub duration_ms: u128,
    pub error: Option<String>,
    pub cache_hit: bool,
}

/// The cache key: sha256 over provider, model and the normalized request (org included, so
/// one tenant's cached answer is never served to another).
pub fn cache_key(provider: &str, model: &str, org_id: Uuid, request: &Value) -> String {
    let mut h = Sha256::new();
    for part in [
        provider,
        model,
        &org_id.to_string(),
        &normalize(request).to_string(),
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

/// Keys sorted (serde_json's map is ordered), strings trimmed with runs of whitespace collapsed.
fn normalize(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(s.split_whitespace().collect::<Vec<_>>().join(" ")),
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), normalize(v))).collect())
        }
        other => other.clone(),
    }
}

impl FunctionsState {
    pub(crate) async fn service_tx(&self) -> Result<ClaimsTxn, DbError> {
        self.db()
            .begin(&TxSettings::new(
                "service_role",
                r#"{"role":"service_role"}"#,
            ))
            .await
    }

    /// The chat provider, or 503 naming the setting to add.
    pub(crate) fn chat_provider(&self) -> Result<DynProvider, FnError> {
        self.chat().ok_or(FnError::NoChatProvider(
            "GEMINI_API_KEY (or OPENAI_API_KEY / OPENAI_BASE_URL, or AI_CHAT_PROVIDER)",
        ))
    }

    /// Reserves one AI run and `tokens` chat tokens for the org: 429 `rate_limited` when its
    /// runs of this hour are spent (the calls in flight included), 429 `ai_budget_exceeded`
    /// when its chat tokens of today are.
    pub(crate) async fn reserve_chat(
        &self,
        org_id: Uuid,
        tokens: i64,
    ) -> Result<Reservation, FnError> {
        let a = self.args();
        let wants = [
            Want {
                meter: Meter::Runs,
                amount: 1,
                limit: a.ai_rate_limit_per_hour,
            },
            Want {
                meter: Meter::ChatTokens,
                amount: tokens,
                limit: a.ai_chat_token_budget_per_day,
            },
        ];
        budget::reserve_all(self.db(), org_id, &wants)
            .await?
            .map_err(refused)
    }

    /// Reserves one AI run and `chars` characters of embedding for the org (paid providers).
    pub(crate) async fn reserve_embed(
        &self,
        org_id: Uuid,
        chars: i64,
    ) -> Result<Reservation, FnError> {
        let a = self.args();
        let wants = [
            Want {
                meter: Meter::Runs,
                amount: 1,
                limit: a.ai_rate_limit_per_hour,
            },
            Want {
                meter: Meter::EmbedChars,
                amount: chars,
                limit: a.ai_embed_budget_chars_per_day,
            },
        ];
        budget::reserve_all(self.db(), org_id, &wants)
            .await?
            .map_err(refused)
    }

    /// Appends one run log; a failure to log is reported, not fatal to the call.
    pub(crate) async fn log_run(&self, e: LogEntry<'_>) {
        let result = async {
            let mut tx = self.service_tx().await?;
            tx.execute(
                "insert into public.ai_run_logs
                   (org_id, project_id, agent_name, model_name, provider, input_tokens, output_tokens,
                    duration_ms, success, error_message, cache_hit)
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    &e.org_id,
                    &e.project_id,
                    &e.agent,
                    &e.model,
                    &e.provider,
                    &(e.usage.input_tokens.min(i32::MAX as u32) as i32),
                    &(e.usage.output_tokens.min(i32::MAX as u32) as i32),
                    &(e.duration_ms.min(i32::MAX as u128) as i32),
                    &e.error.is_none(),
                    &e.error,
                    &e.cache_hit,
                ],
            )
            .await?;
            tx.commit().await
        }
        .await;
        if let Err(err) = result {
            tracing::warn!(error = %err, agent = e.agent, "writing ai_run_logs failed");
        }
    }

    /// A live cached answer for `key` (counting the hit), if any.
    pub(crate) async fn cache_get(&self, key: &str) -> Option<Value> {
        if self.args().ai_cache_ttl_secs <= 0 {
            return None;
        }
        let result = async {
            let mut tx = self.service_tx().await?;
            let row = tx
                .query_opt(
                    "update public.ai_cache set hit_count = hit_count + 1
                     where key = $1 and (expires_at is null or expires_at > now())
                     returning response",
                    &[&key],
                )
                .await?;
            tx.commit().await?;
            Ok::<_, DbError>(row.map(|r| r.get::<_, Value>(0)))
        }
        .await;
        result.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading ai_cache failed");
            None
        })
    }

    pub(crate) async fn cache_put(
        &self,
        key: &str,
        org_id: Uuid,
        provider: &str,
        model: &str,
        response: &Value,
        usage: Usage,
    ) {
        let ttl = self.args().ai_cache_ttl_secs;
        if ttl <= 0 {
            return;
        }
        let tokens = (usage.input_tokens + usage.output_tokens).min(i32::MAX as u32) as i32;
        let result = async {
            let mut tx = self.service_tx().await?;
            tx.execute(
                "insert into public.ai_cache (key, org_id, provider, model, response, tokens_used, expires_at)
                 values ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7::bigint::double precision))
                 on conflict (key) do update
                   set response = excluded.response, tokens_used = excluded.tokens_used,
                       created_at = now(), expires_at = excluded.expires_at, hit_count = 0",
                &[&key, &org_id, &provider, &model, response, &tokens, &ttl],
            )
            .await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "writing ai_cache failed");
        }
    }

    /// A structured model call: cache, rate limit, provider, validation, log. Returns the
    /// validated JSON the model produced.
    pub(crate) async fn structured(&self, run: Run) -> Result<Value, FnError> {
        let chat = self.chat_provider()?;
        let req = ChatRequest {
            system: run.system,
            user: run.user,
            schema_name: run.agent.replace('-', "_"),
            schema: Some(run.schema.clone()),
            temperature: 0.2,
        };
        let key = cache_key(
            chat.name(),
            chat.model(),
            run.org_id,
            &json!({ "agent": run.agent, "system": req.system, "user": req.user, "schema": run.schema }),
        );
        let log =
            |usage: Usage, started: Instant, error: Option<String>, cache_hit: bool| LogEntry {
                agent: run.agent,
                org_id: run.org_id,
                project_id: run.project_id,
                provider: chat.name(),
                model: chat.model(),
                usage,
                duration_ms: started.elapsed().as_millis(),
                error,
                cache_hit,
            };
        let started = Instant::now();
        if let Some(cached) = self.cache_get(&key).await {
            let cached = schema::normalize(&run.schema, cached);
            if schema::validate(&run.schema, &cached).is_ok() {
                self.log_run(log(Usage::default(), started, None, true))
                    .await;
                return Ok(cached);
            }
        }
        let estimate = estimate_chat_tokens(&req);
        let reservation = self.reserve_chat(run.org_id, estimate).await?;
        let started = Instant::now();
        let answer = match chat.chat(&req).await {
            Ok(a) => a,
            Err(e) => {
                // No answer: nothing is charged.
                reservation.release().await;
                self.log_run(log(Usage::default(), started, Some(e.to_string()), false))
                    .await;
                return Err(provider_error(e));
            }
        };
        // An answer, even one we refuse, has been paid for.
        reservation
            .settle(&chat_costs(run.org_id, answer.usage, estimate))
            .await;
        // The answer is untrusted: cleaned up (trimmed, deduplicated) and then held to the
        // schema's types, enums and bounds.
        let parsed = schema::parse_model_json(&answer.text)
            .map(|v| schema::normalize(&run.schema, v))
            .and_then(|v| schema::validate(&run.schema, &v).map(|()| v));
        match parsed {
            Ok(v) => {
                self.log_run(log(answer.usage, started, None, false)).await;
                self.cache_put(
                    &key,
                    run.org_id,
                    chat.name(),
                    chat.model(),
                    &v,
                    answer.usage,
                )
                .await;
                Ok(v)
            }
            Err(why) => {
                let e = FnError::BadModelOutput(why);
                self.log_run(log(answer.usage, started, Some(e.to_string()), false))
                    .await;
                Err(e)
            }
        }
    }

    /// Embeds texts with the configured embedder for a column of `dimensions`, logged and
    /// metered (`embed_chars`); for paid providers also cached, and reserved against the
    /// org's runs and embedding budget.
    pub(crate) async fn embed_for(
        &self,
        agent: &str,
        org_id: Uuid,
        texts: &[String],
        dimensions: usize,
    ) -> Result<Vec<Vec<f32>>, FnError> {
        let p = self.embedder();
        // Offline providers cost nothing: no budget (only the meter), no cache.
        let free = is_free(p.name());
        let chars: i64 = texts.iter().map(|t| t.chars().count() as i64).sum();
        let key = cache_key(
            p.name(),
            p.model(),
            org_id,
            &json!({ "embed": texts, "dimensions": dimensions }),
        );
        let started = Instant::now();
        let mut reservation = None;
        if !free {
            if let Some(cached) = self.cache_get(&key).await {
                if let Ok(vectors) = serde_json::from_value::<Vec<Vec<f32>>>(cached) {
                    self.log_run(LogEntry {
                        agent,
                        org_id,
                        project_id: None,
                        provider: p.name(),
                        model: p.model(),
                        usage: Usage::default(),
                        duration_ms: started.elapsed().as_millis(),
                        error: None,
                        cache_hit: true,
                    })
                    .await;
                    return Ok(vectors);
                }
            }
            reservation = Some(self.reserve_embed(org_id, chars).await?);
        }
        let result = p.embed(texts, dimensions).await;
        let (usage, error) = match &result {
            Ok(e) => (e.usage, None),
            Err(e) => (Usage::default(), Some(e.to_string())),
        };
        let costs = [
            Cost {
                org_id,
                meter: Meter::Runs,
                used: 1,
                tokens: i64::from(usage.input_tokens),
            },
            Cost {
                org_id,
                meter: Meter::EmbedChars,
                used: chars,
                tokens: i64::from(usage.input_tokens),
            },
        ];
        match (reservation, &result) {
            (Some(r), Ok(_)) => r.settle(&costs).await,
            (Some(r), Err(_)) => r.release().await,
            (None, Ok(_)) => {
                if let Err(e) = budget::record(self.db(), &costs[1..]).await {
                    tracing::warn!(error = %e, "recording embedding usage failed");
                }
            }
            (None, Err(_)) => {}
        }
        self.log_run(LogEntry {
            agent,
            org_id,
            project_id: None,
            provider: p.name(),
            model: p.model(),
            usage,
            duration_ms: started.elapsed().as_millis(),
            error,
            cache_hit: false,
        })
        .await;
        let emb = result.map_err(provider_error)?;
        if !free {
            self.cache_put(
                &key,
                org_id,
                p.name(),
                p.model(),
                &json!(emb.vectors),
                emb.usage,
            )
            .await;
        }
        Ok(emb.vectors)
    }
}

/// Whether a provider costs nothing per call (the offline `local` and `hash` embedders): no
/// budget, no cache; their usage is metered all the same.
pub(crate) fn is_free(provider: &str) -> bool {
    matches!(provider, "hash" | "local")
}

/// Answer tokens a chat call is assumed to produce, reserved before it and settled with the
/// provider's count.
pub(crate) const ANSWER_TOKENS_ESTIMATE: i64 = 2048;

/// The chat tokens reserved for `req`: a third of its prompt's bytes (generous for English
/// and JSON) plus [`ANSWER_TOKENS_ESTIMATE`].
pub(crate) fn estimate_chat_tokens(req: &ChatRequest) -> i64 {
    let bytes =
        req.system.len() + req.user.len() + req.schema.as_ref().map_or(0, |s| s.to_string().len());
    (bytes as i64 + 2) / 3 + ANSWER_TOKENS_ESTIMATE
}

/// What a chat call cost: one run, and the tokens the provider counted (the estimate when it
/// reports none).
pub(crate) fn chat_costs(org_id: Uuid, usage: Usage, estimate: i64) -> [Cost; 2] {
    let real = i64::from(usage.input_tokens) + i64::from(usage.output_tokens);
    let tokens = if real > 0 { real } else { estimate };
    [
        Cost {
            org_id,
            meter: Meter::Runs,
            used: 1,
            tokens,
        },
        Cost {
            org_id,
            meter: Meter::ChatTokens,
            used: tokens,
            tokens,
        },
    ]
}

/// The error of a refused reservation.
pub(crate) fn refused(r: Refused) -> FnError {
    match r.meter {
        Meter::Runs => FnError::RateLimited {
            limit: r.limit,
            retry_after_secs: r.retry_after_secs,
        },
        Meter::ChatTokens => FnError::BudgetExceeded {
            setting: "AI_CHAT_TOKEN_BUDGET_PER_DAY",
            unit: "chat tokens",
            period: "day (UTC)",
            limit: r.limit,
            retry_after_secs: r.retry_after_secs,
        },
        Meter::EmbedChars => FnError::BudgetExceeded {
            setting: "AI_EMBED_BUDGET_CHARS_PER_DAY",
            unit: "characters of embeddings",
            period: "day (UTC)",
            limit: r.limit,
            retry_after_secs: r.retry_after_secs,
        },
    }
}

pub(crate) fn provider_error(e: ProviderError) -> FnError {
    tracing::warn!(error = %e, "provider call failed");
    FnError::Provider(e)
}

/// A vector as pgvector's text form.
pub fn vector_literal(v: &[f32]) -> String {
    let mut s = String::with_capacity(v.len() * 10 + 2);
    s.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("{x}"));
    }
    s.push(']');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_normalizes_whitespace_and_scopes_by_org() {
        let org = Uuid::nil();
        let a = cache_key("gemini", "m", org, &json!({"b": "x  y", "a": 1}));
        let b = cache_key("gemini", "m", org, &json!({"a": 1, "b": " x y "}));
        assert_eq!(a, b);
        assert_ne!(
            a,
            cache_key("openai", "m", org, &json!({"a": 1, "b": "x y"}))
        );
        assert_ne!(
            a,
            cache_key(
                "gemini",
                "m",
                Uuid::from_u128(1),
                &json!({"a": 1, "b": "x y"})
            )
        );
        assert_eq!(vector_literal(&[1.0, 0.5]), "[1,0.5]");
    }
}
