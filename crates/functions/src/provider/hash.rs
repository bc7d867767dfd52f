//! `hash`: offline, deterministic feature-hashing embeddings. Each lower-cased word (and each
//! pair of neighbouring words) adds a signed weight at a hashed position; the vector is
//! L2-normalised. Texts sharing words are close: this is **lexical** similarity, not
//! semantic (synonyms are not close). Free, instant and private: the embedded default.
use futures::future::BoxFuture;
use futures::FutureExt;

use super::{ChatRequest, ChatResponse, ChatStream, Embeddings, Provider, ProviderError, Usage};

pub const MODEL: &str = "hash-v1";

pub struct HashEmbedder {
    model: String,
}

impl HashEmbedder {
    pub fn new(model: String) -> Self {
        HashEmbedder { model }
    }
}

fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Final avalanche so nearby inputs spread over the whole range.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn l2_normalize(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// The embedding of `text` with `dimensions` numbers.
pub fn embed_text(text: &str, dimensions: usize) -> Vec<f32> {
    let mut v = vec![0f32; dimensions.max(1)];
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let mut add = |feature: &[u8], weight: f32| {
        let h = fnv1a(feature, 0);
        let i = (h % dimensions as u64) as usize;
        let sign = if (h >> 63) == 0 { 1.0 } else { -1.0 };
        v[i] += sign * weight;
    };
    for w in &words {
        add(w.as_bytes(), 1.0);
    }
    for pair in words.windows(2) {
        let f = format!("{} {}", pair[0], pair[1]);
        add(f.as_bytes(), 0.5);
    }
    if words.is_empty() {
        // An empty text still needs a unit vector: cosine distance to zero is undefined.
        v[0] = 1.0;
    }
    l2_normalize(v)
}

impl Provider for HashEmbedder {
    fn name(&self) -> &'static str {
        "hash"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn chat<'a>(
        &'a self,
        _req: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        async {
            Err(ProviderError::Unsupported(
                "the hash provider only embeds".into(),
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
                "the hash provider only embeds".into(),
            ))
        }
        .boxed()
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [String],
        dimensions: usize,
    ) -> BoxFuture<'a, Result<Embeddings, ProviderError>> {
        let vectors = texts.iter().map(|t| embed_text(t, dimensions)).collect();
        async move {
            Ok(Embeddings {
                vectors,
                usage: Usage::default(),
            })
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn deterministic_normalised_and_lexical() {
        let a = embed_text("Invoice automation for dental clinics", 768);
        assert_eq!(a, embed_text("Invoice automation for dental clinics", 768));
        assert_eq!(a.len(), 768);
        assert!((cos(&a, &a) - 1.0).abs() < 1e-5);
        let near = embed_text("automation of invoices at a dental clinic", 768);
        let far = embed_text("quarterly marketing newsletter", 768);
        assert!(cos(&a, &near) > cos(&a, &far));
        assert_eq!(embed_text("", 1536).len(), 1536);
        assert!((cos(&embed_text("", 8), &embed_text("", 8)) - 1.0).abs() < 1e-5);
    }
}
