//! Models: the built-in seeded local models and an OpenAI-compatible chat-completions provider.
//!
//! A model step asks a model one question (classify, extract or generate) about the run's input
//! and gets an [`Answer`]: a label, output fields, a confidence in [0, 1] and the usage.
//!
//! **Local models** are deterministic: the answer is a function of the model's seed, name, the
//! prompt version, the step and the input. Whether an answer is correct is drawn with the model's
//! accuracy (per prompt version when `prompt_accuracy` names it); correct answers come with high
//! confidence, wrong ones mostly with low confidence, and `confidence_shift` moves every
//! confidence (drift). What "correct" means comes from the input's `expected` object: the label
//! of a classification (`expected.label`), or the true fields of an extraction (the input's own
//! fields when `expected` is absent).
//!
//! **OpenAI-compatible** providers get `POST {base_url}/chat/completions` with the task and the
//! prompt version in the system message and the input as JSON in the user message, and must
//! answer with a JSON object `{"label": ..., "confidence": ..., "output": {...}}` in the message
//! content (`response_format: json_object`). `OPENAI_API_KEY`, when set, is sent as a bearer
//! token. HTTP 429 and 5xx are retryable (`rate_limited`, `unavailable`); other failures are not.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use custos_synth::Rng;

use crate::StepError;
use crate::workflow::ModelFile;

/// A model's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The decision (a class, `extracted`, `drafted`).
    pub label: String,
    /// Output fields.
    pub output: Value,
    /// Confidence in [0, 1].
    pub confidence: f64,
    /// The model that answered (`gen_ai.response.model`).
    pub model: String,
    /// `gen_ai.provider.name`.
    pub provider: String,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Completion tokens.
    pub output_tokens: i64,
    /// Reported cost in USD.
    pub cost_usd: f64,
}

impl Answer {
    /// The answer as stored in the journal and the cache.
    pub fn to_json(&self) -> Value {
        json!({
            "label": self.label, "output": self.output, "confidence": self.confidence,
            "model": self.model, "provider": self.provider, "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens, "cost_usd": self.cost_usd,
        })
    }

    /// Reads an answer stored by [`Answer::to_json`].
    pub fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            label: v.get("label")?.as_str()?.to_string(),
            output: v.get("output")?.clone(),
            confidence: v.get("confidence")?.as_f64()?,
            model: v.get("model")?.as_str()?.to_string(),
            provider: v.get("provider")?.as_str()?.to_string(),
            input_tokens: v.get("input_tokens")?.as_i64()?,
            output_tokens: v.get("output_tokens")?.as_i64()?,
            cost_usd: v.get("cost_usd")?.as_f64()?,
        })
    }
}

/// A question to a model.
#[derive(Debug, Clone, Copy)]
pub struct Question<'a> {
    /// `classify`, `extract` or `generate`.
    pub task: &'a str,
    /// The step asking.
    pub step: &'a str,
    /// Prompt version.
    pub prompt_version: &'a str,
    /// The run's input.
    pub input: &'a Value,
}

/// The first 8 bytes (little-endian) of the SHA-256 of the parts, each followed by a zero byte:
/// a stable 64-bit key of strings (run ids, idempotency keys, seeds).
pub fn sha256_u64(parts: &[&str]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

const LABELS: &[&str] = &["urgent", "normal", "low"];

/// The accuracy a local model has under a prompt version.
pub fn accuracy(model: &ModelFile, prompt_version: &str) -> f64 {
    model
        .prompt_accuracy
        .get(prompt_version)
        .copied()
        .or(model.accuracy)
        .unwrap_or(0.9)
}

/// Answers with a local seeded model.
pub fn local(model: &ModelFile, q: &Question<'_>) -> Answer {
    let input_text = q.input.to_string();
    let seed = model.seed.unwrap_or(0).to_string();
    let mut rng = Rng::new(sha256_u64(&[
        &seed,
        &model.model,
        q.prompt_version,
        q.step,
        &input_text,
    ]));
    let correct = rng.unit() < accuracy(model, q.prompt_version);
    let u = rng.unit();
    let base = if correct {
        0.7 + 0.3 * u.sqrt()
    } else {
        0.2 + 0.75 * u
    };
    let confidence = (base + model.confidence_shift.unwrap_or(0.0)).clamp(0.0, 1.0);
    let expected = q.input.get("expected");
    let (label, output) = match q.task {
        "classify" => {
            let truth = expected
                .and_then(|e| e.get("label"))
                .and_then(Value::as_str)
                .unwrap_or(LABELS[(sha256_u64(&[&input_text]) % 3) as usize])
                .to_string();
            let label = if correct {
                truth
            } else {
                let others: Vec<&&str> = LABELS.iter().filter(|l| **l != truth).collect();
                others
                    .get((rng.next_u64() % others.len().max(1) as u64) as usize)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "unknown".into())
            };
            (label.clone(), json!({ "label": label }))
        }
        "extract" => {
            // The truth of each field: `expected.FIELD`, else the input's own field.
            let truth = |f: &str| {
                expected
                    .and_then(|e| e.get(f))
                    .or_else(|| q.input.get(f))
                    .cloned()
            };
            let total = truth("amount_usd").and_then(|v| v.as_f64()).unwrap_or(0.0);
            let total = if correct {
                total
            } else {
                // A misread digit: off by a tenth.
                (total * if rng.unit() < 0.5 { 1.1 } else { 0.9 } * 100.0).round() / 100.0
            };
            let vendor = truth("vendor").unwrap_or(Value::Null);
            (
                "extracted".into(),
                json!({ "total": total, "vendor": vendor }),
            )
        }
        _ => {
            let subject = q
                .input
                .get("subject")
                .and_then(Value::as_str)
                .unwrap_or("your message");
            (
                "drafted".into(),
                json!({ "draft": format!("Thank you for writing about \"{subject}\"; we are on it.") }),
            )
        }
    };
    let input_tokens = 200 + (input_text.len() / 4) as i64;
    let output_tokens = 20 + (rng.next_u64() % 180) as i64;
    let cost_usd =
        model.cost_per_1k_tokens.unwrap_or(0.0) * (input_tokens + output_tokens) as f64 / 1000.0;
    Answer {
        label,
        output,
        confidence,
        model: model.model.clone(),
        provider: "custos-local".into(),
        input_tokens,
        output_tokens,
        cost_usd,
    }
}

/// Answers with an OpenAI-compatible chat-completions API.
pub async fn openai(
    client: &reqwest::Client,
    model: &ModelFile,
    q: &Question<'_>,
) -> Result<Answer, StepError> {
    let base = model.base_url.as_deref().unwrap_or_default();
    let url = format!("{}/chat/completions", base.trim_end_matches('/'));
    let body = json!({
        "model": model.model,
        "temperature": 0,
        "response_format": {"type": "json_object"},
        "messages": [
            {"role": "system", "content": format!(
                "task: {}; prompt version: {}. Answer with a JSON object {{\"label\": string, \"confidence\": number in [0, 1], \"output\": object}}.",
                q.task, q.prompt_version)},
            {"role": "user", "content": q.input.to_string()},
        ],
    });
    let mut req = client.post(&url).json(&body);
    if let Ok(key) = std::env::var("OPENAI_API_KEY") {
        req = req.bearer_auth(key);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| StepError::retryable("unavailable", format!("cannot reach `{url}`: {e}")))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    match refusal(&url, status, &text) {
        Some(e) => Err(e),
        None => parse_answer(&url, &text, model).map_err(|e| *e),
    }
}

/// A refusal as a step error: 429 and 5xx may be retried, other failures are fatal.
fn refusal(url: &str, status: reqwest::StatusCode, text: &str) -> Option<StepError> {
    if status.as_u16() == 429 {
        Some(StepError::retryable(
            "rate_limited",
            format!("`{url}` answered 429 too many requests"),
        ))
    } else if status.is_server_error() {
        Some(StepError::retryable(
            "unavailable",
            format!("`{url}` answered {status}: {}", clip(text)),
        ))
    } else if !status.is_success() {
        Some(StepError::fatal(
            "invalid_input",
            format!("`{url}` answered {status}: {}", clip(text)),
        ))
    } else {
        None
    }
}

/// The answer in a chat-completions body: the message content must be a JSON object with a
/// `label` and a `confidence` in [0, 1]; token usage prices the call.
fn parse_answer(url: &str, text: &str, model: &ModelFile) -> Result<Answer, Box<StepError>> {
    let bad = |what: &str| {
        Box::new(StepError::fatal(
            "invalid_response",
            format!("`{url}` answered without {what}: {}", clip(text)),
        ))
    };
    let v: Value = serde_json::from_str(text).map_err(|_| bad("a JSON body"))?;
    let content = v
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("`choices[0].message.content`"))?;
    let c: Value =
        serde_json::from_str(content).map_err(|_| bad("a JSON object in the message content"))?;
    let confidence = c
        .get("confidence")
        .and_then(Value::as_f64)
        .filter(|c| (0.0..=1.0).contains(c))
        .ok_or_else(|| bad("`confidence` in [0, 1] in the message content"))?;
    let label = c
        .get("label")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("`label` in the message content"))?
        .to_string();
    let tokens = |p: &str| v.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let (input_tokens, output_tokens) = (
        tokens("/usage/prompt_tokens"),
        tokens("/usage/completion_tokens"),
    );
    Ok(Answer {
        output: c.get("output").cloned().unwrap_or_else(|| json!({})),
        label,
        confidence,
        model: v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(&model.model)
            .to_string(),
        provider: "openai".into(),
        input_tokens,
        output_tokens,
        cost_usd: model.cost_per_1k_tokens.unwrap_or(0.0) * (input_tokens + output_tokens) as f64
            / 1000.0,
    })
}

fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}
