//! Google Gemini (Generative Language API): `generateContent` with a response schema,
//! `streamGenerateContent?alt=sse`, `embedContent` / `batchEmbedContents`.
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use serde_json::{json, Value};

use super::http::{self, RetryPolicy};
use super::{
    check_vectors, sse, ChatRequest, ChatResponse, ChatStream, Embeddings, Provider, ProviderError,
    StreamEvent, Usage,
};
use crate::schema;

pub struct Gemini {
    base: String,
    key: String,
    model: String,
    policy: RetryPolicy,
    client: reqwest::Client,
}

impl Gemini {
    pub fn new(base: &str, key: String, model: String, policy: RetryPolicy) -> Self {
        Gemini {
            base: base.trim_end_matches('/').to_string(),
            key,
            model,
            client: http::client(&policy),
            policy,
        }
    }

    fn url(&self, method: &str) -> String {
        let model = self.model.strip_prefix("models/").unwrap_or(&self.model);
        format!("{}/models/{model}:{method}", self.base)
    }

    fn body(&self, req: &ChatRequest) -> Value {
        let mut generation = json!({ "temperature": req.temperature });
        if let Some(s) = &req.schema {
            generation["responseMimeType"] = json!("application/json");
            generation["responseSchema"] = schema::to_gemini(s);
        }
        let mut body = json!({
            "contents": [{ "role": "user", "parts": [{ "text": req.user }] }],
            "generationConfig": generation,
        });
        if !req.system.is_empty() {
            body["systemInstruction"] = json!({ "parts": [{ "text": req.system }] });
        }
        body
    }

    async fn post(
        &self,
        url: String,
        body: &Value,
        stream: bool,
    ) -> Result<reqwest::Response, ProviderError> {
        http::send(&self.policy, stream, || {
            self.client
                .post(&url)
                .header("x-goog-api-key", &self.key)
                .json(body)
        })
        .await
    }
}

fn usage(v: &Value) -> Option<Usage> {
    let u = v.get("usageMetadata")?;
    Some(Usage {
        input_tokens: u
            .get("promptTokenCount")
            .and_then(Value::as_u64)
            .unwrap_or(0) as u32,
        output_tokens: u
            .get("candidatesTokenCount")
            .and_then(Value::as_u64)
            .unwrap_or(0) as u32,
    })
}

fn candidate_text(v: &Value) -> Option<String> {
    let parts = v.pointer("/candidates/0/content/parts")?.as_array()?;
    Some(
        parts
            .iter()
            .filter(|p| p.get("thought").and_then(Value::as_bool) != Some(true))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
    )
}

impl Provider for Gemini {
    fn name(&self) -> &'static str {
        "gemini"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn chat<'a>(
        &'a self,
        req: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        async move {
            let resp = self
                .post(self.url("generateContent"), &self.body(req), false)
                .await?;
            let v = http::json(resp).await?;
            let text = candidate_text(&v).ok_or_else(|| {
                let reason = v
                    .pointer("/candidates/0/finishReason")
                    .or_else(|| v.pointer("/promptFeedback/blockReason"))
                    .and_then(Value::as_str)
                    .unwrap_or("no candidates");
                ProviderError::BadResponse(format!("Gemini returned no text ({reason})"))
            })?;
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
            let url = format!("{}?alt=sse", self.url("streamGenerateContent"));
            let resp = self.post(url, &self.body(req), true).await?;
            let events = sse::data_events(resp).flat_map(|ev| {
                let out: Vec<Result<StreamEvent, ProviderError>> = match ev {
                    Err(e) => vec![Err(e)],
                    Ok(data) => match serde_json::from_str::<Value>(&data) {
                        Err(e) => vec![Err(ProviderError::BadResponse(format!(
                            "stream chunk is not JSON: {e}"
                        )))],
                        Ok(v) => {
                            let mut out = Vec::new();
                            if let Some(t) = candidate_text(&v).filter(|t| !t.is_empty()) {
                                out.push(Ok(StreamEvent::Delta(t)));
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
            let model = format!("models/{}", self.model.strip_prefix("models/").unwrap_or(&self.model));
            let vectors: Vec<Vec<f32>> = if texts.len() == 1 {
                let body = json!({
                    "model": model,
                    "content": { "parts": [{ "text": texts[0] }] },
                    "outputDimensionality": dimensions,
                });
                let v = http::json(self.post(self.url("embedContent"), &body, false).await?).await?;
                let values = v
                    .pointer("/embedding/values")
                    .ok_or_else(|| ProviderError::BadResponse("no embedding.values".into()))?;
                vec![floats(values)?]
            } else {
                let requests: Vec<Value> = texts
                    .iter()
                    .map(|t| json!({ "model": model, "content": { "parts": [{ "text": t }] }, "outputDimensionality": dimensions }))
                    .collect();
                let body = json!({ "requests": requests });
                let v = http::json(self.post(self.url("batchEmbedContents"), &body, false).await?).await?;
                v.get("embeddings")
                    .and_then(Value::as_array)
                    .ok_or_else(|| ProviderError::BadResponse("no embeddings".into()))?
                    .iter()
                    .map(|e| floats(e.get("values").unwrap_or(&Value::Null)))
                    .collect::<Result<_, _>>()?
            };
            // Gemini only pre-normalises its full-size output; cosine search wants unit vectors.
            let vectors: Vec<Vec<f32>> = vectors.into_iter().map(super::hash::l2_normalize).collect();
            check_vectors(&vectors, texts.len(), dimensions, &self.model)?;
            Ok(Embeddings { vectors, usage: Usage::default() })
        }
        .boxed()
    }
}

pub(crate) fn floats(v: &Value) -> Result<Vec<f32>, ProviderError> {
    v.as_array()
        .ok_or_else(|| ProviderError::BadResponse("embedding is not an array".into()))?
        .iter()
        .map(|x| {
            x.as_f64()
                .map(|f| f as f32)
                .ok_or_else(|| ProviderError::BadResponse("embedding holds a non-number".into()))
        })
        .collect()
}
