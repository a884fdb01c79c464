//! A deterministic synthetic workload of the reference workflows, as OTLP export requests.
//!
//! Used by the analytics golden tests, the metric cross-checks and `custos bench analytics`. The same
//! seed and size always give the same spans. Every run is one trace; its root span carries the
//! workflow, the outcome and (sometimes) nothing else, and its children are the steps:
//!
//! - `support-triage`: `classify` (model decision with a confidence), `lookup` (connector `crm`, may
//!   fail and be retried), `draft` (model), `review` (human, when the decision was reviewed),
//!   `reply` (connector `mail`).
//! - `invoice-posting`: `extract` (model), `match` (rule), `approve` (model decision), `review`
//!   (human), `post` (connector `erp`, may fail and be retried).
//!
//! Models: `gpt-4o` reports its cost (`gen_ai.usage.cost`); `claude-sonnet-4` reports tokens only,
//! with cache-read and cache-write tokens, and is priced from the price table; `llama-3-70b`
//! (OpenInference keys) has no price. Confidence is reviewed below 0.9 and for one in five decisions
//! above it; overrides are likelier at low confidence. In the second half of the time range,
//! `classify` on prompt `v2` has a confidence distribution shifted downwards (injected drift). The
//! last runs are still in progress: their root span has not arrived. With `canary`, `invoice-posting`
//! also runs a healthy (`v2`) and a regressed (`v3`) canary prompt beside `v1`.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};

use crate::Rng;
use crate::attr::{b, f, i, s};

/// How much to generate.
#[derive(Debug, Clone, Copy)]
pub struct SynthOptions {
    /// Seed of the pseudo-random generator.
    pub seed: u64,
    /// Number of runs.
    pub runs: usize,
    /// First run's start, nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// Runs are spread evenly over this many seconds.
    pub span_seconds: u64,
    /// Runs per export request.
    pub runs_per_request: usize,
    /// How many of the last runs have no root span yet.
    pub in_progress: usize,
    /// Canary prompts in `invoice-posting`: a quarter of its `approve` decisions use prompt `v2`
    /// (healthy: same behaviour as `v1`) and a quarter prompt `v3` (regressed: humans override it
    /// 30 points more often). Off by default.
    pub canary: bool,
}

impl Default for SynthOptions {
    fn default() -> Self {
        Self {
            seed: 7,
            runs: 2_000,
            // 2026-11-01T00:00:00Z
            start_unix_nano: 1_793_491_200_000_000_000,
            span_seconds: 2 * 86_400,
            runs_per_request: 100,
            in_progress: 3,
            canary: false,
        }
    }
}

struct RunBuilder<'a> {
    rng: &'a mut Rng,
    trace_id: Vec<u8>,
    root_id: Vec<u8>,
    next_span: u64,
    cursor: u64,
    spans: Vec<Span>,
    workflow: &'static str,
}

impl RunBuilder<'_> {
    fn span_id(&mut self) -> Vec<u8> {
        self.next_span += 1;
        let mut id = self.trace_id[8..].to_vec();
        id[7] ^= self.next_span as u8;
        id[6] ^= (self.next_span >> 8) as u8 | 0x80;
        id
    }

    /// Appends a step span lasting `ms` milliseconds after a small gap.
    fn step(
        &mut self,
        step: &str,
        kind: &str,
        ms: u64,
        error: Option<&str>,
        mut attrs: Vec<KeyValue>,
    ) {
        let gap = self.rng.range(1, 20) * 1_000_000;
        let start = self.cursor + gap;
        let end = start + ms * 1_000_000;
        self.cursor = end;
        attrs.push(s("automation.workflow", self.workflow));
        attrs.push(s("automation.step", step));
        attrs.push(s("automation.step.kind", kind));
        let span_id = self.span_id();
        self.spans.push(Span {
            trace_id: self.trace_id.clone(),
            span_id,
            parent_span_id: self.root_id.clone(),
            name: step.to_string(),
            kind: 1,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes: attrs,
            status: error.map(|m| Status {
                message: m.to_string(),
                code: status::StatusCode::Error as i32,
            }),
            ..Default::default()
        });
    }
}

/// One model call's attributes: tokens and, depending on the model, a reported cost.
fn model_call(rng: &mut Rng, model: &str) -> Vec<KeyValue> {
    let input = rng.range(400, 4_000) as i64;
    let output = rng.range(50, 800) as i64;
    match model {
        "gpt-4o" => vec![
            s("gen_ai.request.model", "gpt-4o"),
            s("gen_ai.provider.name", "openai"),
            i("gen_ai.usage.input_tokens", input),
            i("gen_ai.usage.output_tokens", output),
            f(
                "gen_ai.usage.cost",
                (input as f64 * 2.5 + output as f64 * 10.0) / 1e6,
            ),
        ],
        "claude-sonnet-4" => {
            let cache_read = rng.range(0, input as u64 / 2) as i64;
            let cache_write = rng.range(0, (input - cache_read) as u64 / 4) as i64;
            let reasoning = rng.range(0, output as u64 / 2) as i64;
            vec![
                s("gen_ai.request.model", "claude-sonnet-4"),
                s("gen_ai.provider.name", "anthropic"),
                i("gen_ai.usage.input_tokens", input),
                i("gen_ai.usage.output_tokens", output),
                i("gen_ai.usage.cache_read.input_tokens", cache_read),
                i("gen_ai.usage.cache_creation.input_tokens", cache_write),
                i("gen_ai.usage.reasoning.output_tokens", reasoning),
            ]
        }
        _ => vec![
            s("llm.model_name", model),
            s("llm.provider", "self-hosted"),
            i("llm.token_count.prompt", input),
            i("llm.token_count.completion", output),
        ],
    }
}

/// The synthetic workload, one export request at a time.
pub fn generate(options: SynthOptions) -> impl Iterator<Item = ExportTraceServiceRequest> {
    let mut rng = Rng::new(options.seed);
    let mut next_run = 0usize;
    std::iter::from_fn(move || {
        if next_run >= options.runs {
            return None;
        }
        let end = (next_run + options.runs_per_request.max(1)).min(options.runs);
        let mut per_service: Vec<(&'static str, Vec<Span>)> =
            vec![("triage-bot", Vec::new()), ("ap-automation", Vec::new())];
        for run in next_run..end {
            let in_progress = run + options.in_progress >= options.runs;
            let (service, spans) = one_run(&mut rng, &options, run, in_progress);
            if let Some(slot) = per_service.iter_mut().find(|(s, _)| *s == service) {
                slot.1.extend(spans);
            }
        }
        next_run = end;
        let resource_spans = per_service
            .into_iter()
            .filter(|(_, spans)| !spans.is_empty())
            .map(|(service, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        s("service.name", service),
                        s("deployment.environment", "prod"),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: None,
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect();
        Some(ExportTraceServiceRequest { resource_spans })
    })
}

/// The decision step of a run, drawn before any span is written.
struct Decision {
    step: &'static str,
    model: &'static str,
    prompt: &'static str,
    confidence: f64,
    reviewed: bool,
    overridden: bool,
}

/// Draws the decision: which model and prompt, the confidence (shifted down by the injected
/// drift), whether people reviewed it and whether they overrode it. The draws happen in this
/// order; the seeded data depends on it.
fn decide(rng: &mut Rng, triage: bool, second_half: bool, canary: bool) -> Decision {
    let (step, model, prompt) = if triage {
        let prompt = if second_half && rng.unit() < 0.7 {
            "v2"
        } else {
            "v1"
        };
        let model = if rng.unit() < 0.5 {
            "gpt-4o"
        } else {
            "claude-sonnet-4"
        };
        ("classify", model, prompt)
    } else {
        let model = if rng.unit() < 0.8 {
            "claude-sonnet-4"
        } else {
            "llama-3-70b"
        };
        // Drawn only with canaries on, so the default workload stays as it was.
        let prompt = if canary {
            match rng.unit() {
                u if u < 0.25 => "v2",
                u if u < 0.5 => "v3",
                _ => "v1",
            }
        } else {
            "v1"
        };
        ("approve", model, prompt)
    };
    // Confidence: a skewed distribution, shifted down by the injected drift.
    let u = rng.unit().max(rng.unit());
    let mut confidence = 0.35 + 0.65 * u;
    if triage && prompt == "v2" {
        confidence -= 0.25 * rng.unit();
    }
    let confidence = (confidence * 1000.0).round() / 1000.0;
    let reviewed = confidence < 0.9 || rng.unit() < 0.2;
    let regressed = !triage && prompt == "v3";
    let override_p = ((1.0 - confidence) * 0.6 + if regressed { 0.3 } else { 0.0 }).clamp(0.0, 1.0);
    let overridden = reviewed && rng.unit() < override_p;
    Decision {
        step,
        model,
        prompt,
        confidence,
        reviewed,
        overridden,
    }
}

impl RunBuilder<'_> {
    /// The decision span, with the review's attributes when people reviewed it.
    fn decision(&mut self, d: &Decision, triage: bool) {
        let model_version = match d.model {
            "gpt-4o" => "2024-08-06",
            "claude-sonnet-4" => "20250514",
            _ => "3.0",
        };
        let mut attrs = model_call(self.rng, d.model);
        attrs.push(s("automation.model.version", model_version));
        attrs.push(s("automation.prompt.version", d.prompt));
        attrs.push(f("automation.decision.confidence", d.confidence));
        attrs.push(s(
            "automation.decision.outcome",
            if triage { "route" } else { "approve" },
        ));
        if d.reviewed {
            let reviewer = if self.rng.unit() < 0.5 { "ana" } else { "ben" };
            attrs.push(s("automation.human.reviewer", reviewer));
            attrs.push(b("automation.human.override", d.overridden));
            attrs.push(i(
                "automation.human.review_ms",
                self.rng.range(20_000, 600_000) as i64,
            ));
        }
        let ms = self.rng.range(400, 3_000);
        self.step(d.step, "model", ms, None, attrs);
    }

    /// A connector that sometimes fails and is retried; whether its last attempt failed.
    fn connector(&mut self, triage: bool) -> bool {
        let (step, connector) = if triage {
            ("lookup", "crm")
        } else {
            ("post", "erp")
        };
        let mut failed = false;
        let attempts = if self.rng.unit() < 0.12 {
            2 + (self.rng.unit() < 0.3) as usize
        } else {
            1
        };
        for attempt in 0..attempts {
            let last = attempt + 1 == attempts;
            let fails = !last || self.rng.unit() < 0.04;
            let message = if self.rng.unit() < 0.5 {
                "timeout after 5s"
            } else {
                "HTTP 503 from upstream"
            };
            failed = fails;
            let ms = self.rng.range(50, 1_200);
            let attrs = vec![s("automation.connector", connector)];
            self.step(step, "connector", ms, fails.then_some(message), attrs);
        }
        failed
    }
}

fn one_run(
    rng: &mut Rng,
    o: &SynthOptions,
    run: usize,
    in_progress: bool,
) -> (&'static str, Vec<Span>) {
    let step_ns = o.span_seconds * 1_000_000_000 / o.runs.max(1) as u64;
    let start = o.start_unix_nano + run as u64 * step_ns + rng.range(0, step_ns.max(1));
    let second_half = run * 2 >= o.runs;
    let triage = rng.unit() < 0.6;
    let (workflow, service) = if triage {
        ("support-triage", "triage-bot")
    } else {
        ("invoice-posting", "ap-automation")
    };
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
    trace_id[8..].copy_from_slice(&(run as u64 + 1).to_be_bytes());
    let mut root_id = trace_id[8..].to_vec();
    root_id[0] |= 0x40;
    let d = decide(rng, triage, second_half, o.canary);
    let mut r = RunBuilder {
        rng,
        trace_id: trace_id.to_vec(),
        root_id: root_id.clone(),
        next_span: 0,
        cursor: start,
        spans: Vec::new(),
        workflow,
    };
    if !triage {
        let attrs = model_call(r.rng, d.model);
        let ms = r.rng.range(300, 2_500);
        r.step("extract", "model", ms, None, attrs);
        let ms = r.rng.range(5, 40);
        r.step("match", "rule", ms, None, vec![]);
    }
    r.decision(&d, triage);
    let connector_failed = r.connector(triage);
    if triage {
        let attrs = model_call(r.rng, "gpt-4o");
        let ms = r.rng.range(800, 4_000);
        r.step("draft", "model", ms, None, attrs);
    }
    if d.reviewed {
        let ms = r.rng.range(20_000, 600_000);
        r.step("review", "human", ms, None, vec![]);
    }
    if triage && !connector_failed {
        let ms = r.rng.range(30, 300);
        let attrs = vec![s("automation.connector", "mail")];
        r.step("reply", "connector", ms, None, attrs);
    }
    let outcome = if connector_failed {
        "failure"
    } else if d.overridden && r.rng.unit() < 0.3 {
        "escalated"
    } else {
        "success"
    };
    let end = r.cursor + r.rng.range(1, 10) * 1_000_000;
    let mut spans = std::mem::take(&mut r.spans);
    if !in_progress {
        spans.push(Span {
            trace_id: trace_id.to_vec(),
            span_id: root_id,
            name: workflow.to_string(),
            kind: 2,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes: vec![
                s("automation.workflow", workflow),
                s("automation.outcome", outcome),
            ],
            status: (outcome == "failure").then(|| Status {
                message: "connector failed".to_string(),
                code: status::StatusCode::Error as i32,
            }),
            ..Default::default()
        });
    }
    (service, spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FNV-1a over the requests' debug text: any change to the draws or their order shows.
    fn fingerprint(options: SynthOptions) -> (usize, u64) {
        let mut spans = 0;
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for req in generate(options) {
            for rs in &req.resource_spans {
                spans += rs.scope_spans.iter().map(|s| s.spans.len()).sum::<usize>();
            }
            for byte in format!("{req:?}").bytes() {
                h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        (spans, h)
    }

    #[test]
    fn the_reference_workload_is_pinned() {
        let small = SynthOptions {
            runs: 300,
            ..SynthOptions::default()
        };
        let canary = SynthOptions {
            canary: true,
            ..small
        };
        assert_eq!(fingerprint(small), (1809, 1_108_775_752_091_521_744));
        assert_eq!(fingerprint(canary), (1776, 6_232_112_213_188_632_649));
    }
}
