//! Any OpenAI-compatible endpoint (OpenAI, Ollama, vLLM, llama.cpp server):
//! `/chat/completions` with `response_format: json_schema`, streaming with `stream: true`,
//! and `/embeddings`.
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use serde_json::{json, Value};

use super::gemini::floats;
use super::http::{self, RetryPolicy};
use super::{
    check_vectors, sse, ChatRequest, ChatResponse, ChatStream, Embeddings, Provider, ProviderError,
    StreamEvent, Usage,
};
use crate::schema;

pub struct OpenAi {
    base: String,
    key: Option<String>,
    model: String,
    policy: RetryPolicy,
    client: reqwest::Client,
}

impl OpenAi {
    pub fn new(base: &str, key: Option<String>, model: String, policy: RetryPolicy) -> Self {
        OpenAi {
            base: base.trim_end_matches('/').to_string(),
            key: key.filter(|k| !k.is_empty()),
            model,
            client: http::client(&policy),
            policy,
        }
    }

    fn body(&self, req: &ChatRequest, stream: bool) -> Value {
        let mut messages = Vec::new();
        if !req.system.is_empty() {
            messages.push(json!({ "role": "system", "content": req.system }));
        }
        messages.push(json!({ "role": "user", "content": req.user }));
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "temperature": req.temperature,
        });
        if let Some(s) = &req.schema {
            body["response_format"] = json!({
                "type": "json_schema",
                "json_schema": { "name": req.schema_name, "strict": true, "schema": schema::to_openai(s) },
            });
        }
        if stream {
            body["stream"] = json!(true);
            body["stream_options"] = json!({ "include_usage": true });
        }
        body
    }

    async fn post(
        &self,
        path: &str,
        body: &Value,
        stream: bool,
    ) -> Result<reqwest::Response, ProviderError> {
        let url = format!("{}{path}", self.base);
        http::send(&self.policy, stream, || {
            let r = self.client.post(&url).json(body);
            match &self.key {
                Some(k) => r.bearer_auth(k),
                None => r,
            }
        })
        .await
    }
}

fn usage(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    Some(Usage {
        input_tokens: u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0) as u32,
        output_tokens: u
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0) as u32,
    })
}

impl Provider for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn chat<'a>(
        &'a self,
        req: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        async move {
            let v = http::json(
                self.post("/chat/completions", &self.body(req, false), false)
                    .await?,
            )
            .await?;
            let msg = v
                .pointer("/choices/0/message")
                .ok_or_else(|| ProviderError::BadResponse("no choices[0].message".into()))?;
            if let Some(refusal) = msg.get("refusal").and_then(Value::as_str) {
                return Err(ProviderError::BadResponse(format!(
                    "the model refused: {refusal}"
                )));
            }
            let text = msg
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| ProviderError::BadResponse("no message content".into()))?
                .to_string();
            Ok(ChatResponse {
                text,
                usage: usage(&v).unwrap_or_default(),
            })
        }
        .boxed()
    }

    fn chat_stream<'a>(
        &'a self,
        req: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatStream, ProviderError>> {
        async move {
            let resp = self
                .post("/chat/completions", &self.body(req, true), true)
                .await?;
            let events = sse::data_events(resp)
                .take_while(|ev| {
                    futures::future::ready(!matches!(ev, Ok(d) if d.trim() == "[DONE]"))
                })
                .flat_map(|ev| {
                    let out: Vec<Result<StreamEvent, ProviderError>> = match ev {
                        Err(e) => vec![Err(e)],
                        Ok(data) => match serde_json::from_str::<Value>(&data) {
                            Err(e) => vec![Err(ProviderError::BadResponse(format!(
                                "stream chunk is not JSON: {e}"
                            )))],
                            Ok(v) => {
                                let mut out = Vec::new();
                                if let Some(t) = v
                                    .pointer("/choices/0/delta/content")
                                    .and_then(Value::as_str)
                                    .filter(|t| !t.is_empty())
                                {
                                    out.push(Ok(StreamEvent::Delta(t.to_string())));
                                }
                                if let Some(u) = usage(&v) {
                                    out.push(Ok(StreamEvent::Usage(u)));
                                }
                                out
                            }
                        },
                    };
                    futures::stream::iter(out)
                });
            Ok(events.boxed())
        }
        .boxed()
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [String],
        dimensions: usize,
    ) -> BoxFuture<'a, Result<Embeddings, ProviderError>> {
        async move {
            let body = json!({ "model": self.model, "input": texts, "dimensions": dimensions, "encoding_format": "float" });
            let v = http::json(self.post("/embeddings", &body, false).await?).await?;
            let mut data: Vec<&Value> = v
                .get("data")
                .and_then(Value::as_array)
                .ok_or_else(|| ProviderError::BadResponse("no data".into()))?
                .iter()
                .collect();
            data.sort_by_key(|d| d.get("index").and_then(Value::as_u64).unwrap_or(0));
            let vectors = data
                .iter()
                .map(|d| floats(d.get("embedding").unwrap_or(&Value::Null)))
                .collect::<Result<Vec<_>, _>>()?;
            check_vectors(&vectors, texts.len(), dimensions, &self.model)?;
            Ok(Embeddings { vectors, usage: usage(&v).unwrap_or_default() })
        }
        .boxed()
    }
}
