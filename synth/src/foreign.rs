//! The foreign workload (`custos bench ingest|analytics --workload foreign`): automation traces
//! shaped the way a user's own SDK code sends them, not the way custos' executor does.
//!
//! What makes it foreign, and costly: random 16-byte trace ids and 8-byte span ids, about 5.5
//! spans per trace (a root and 3–6 steps: a model call with GenAI attributes, a connector call
//! with an HTTP status, one to three tool or extra model calls, and for low confidence a human
//! review as its own span, a child of the decision), 15–20 attributes per span with
//! high-cardinality values (response ids, request ids, URLs), two resource attributes,
//! `automation.run_id` and `automation.workflow` on the root only, children ended (and sent)
//! before their root. Runs are spread evenly over [`ForeignOptions::days`] and sent in that order.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};

use crate::Rng;
use crate::attr::{b, f, i, s};

/// Six workflows, each with its service.
const WORKFLOWS: &[(&str, &str)] = &[
    ("support-triage", "helpdesk-agent"),
    ("invoice-posting", "ap-automation"),
    ("sanctions-screening", "kyc-screener"),
    ("refund-approval", "payments-bot"),
    ("contract-review", "legal-assistant"),
    ("claims-intake", "claims-router"),
];

/// Six models: (request model, provider, response model).
const MODELS: &[(&str, &str, &str)] = &[
    ("gpt-4o", "openai", "gpt-4o-2024-11-20"),
    ("gpt-4o-mini", "openai", "gpt-4o-mini-2024-07-18"),
    ("claude-sonnet-4", "anthropic", "claude-sonnet-4-20250514"),
    ("claude-haiku-4-5", "anthropic", "claude-haiku-4-5-20251001"),
    ("gemini-2.5-flash", "gcp.gemini", "gemini-2.5-flash-001"),
    (
        "llama-3.1-70b",
        "aws.bedrock",
        "meta.llama3-1-70b-instruct-v1:0",
    ),
];

const CONNECTORS: &[(&str, &str, &str)] = &[
    ("erp", "erp.internal", "/api/v2/ledger/entries"),
    (
        "crm",
        "crm.example.com",
        "/services/data/v61.0/sobjects/Case",
    ),
    ("sanctions-list", "screening.vendor.io", "/v1/search"),
    ("ticketing", "desk.example.com", "/api/v2/tickets"),
];

const TOOLS: &[&str] = &[
    "search_kb",
    "extract_fields",
    "lookup_policy",
    "summarize",
    "translate",
];

/// What to generate.
#[derive(Debug, Clone)]
pub struct ForeignOptions {
    /// Seed of the generator.
    pub seed: u64,
    /// Spans in all (the last request may be short).
    pub spans: usize,
    /// Spans per export request.
    pub batch: usize,
    /// Days the runs are spread over.
    pub days: u64,
    /// End of the data, Unix nanoseconds.
    pub end_unix_nano: u64,
}

impl ForeignOptions {
    /// The runs to spread over the days for [`spans`](Self::spans), at about 5.6 spans a run
    /// (a few more are generated at the end if the draws fall short).
    pub fn runs(&self) -> usize {
        (self.spans * 5).div_ceil(28).max(1)
    }
}

/// The workload as a lazy sequence of export requests, in time order.
pub struct Foreign {
    rng: Rng,
    options: ForeignOptions,
    runs: usize,
    next_run: usize,
    sent: usize,
    pending: Vec<Span>,
}

impl Foreign {
    /// A generator of the workload `options` describes.
    pub fn new(options: ForeignOptions) -> Self {
        Self {
            rng: Rng::new(options.seed),
            runs: options.runs(),
            options,
            next_run: 0,
            sent: 0,
            pending: Vec::new(),
        }
    }

    fn start_of(&self, run: usize) -> u64 {
        let span = self.options.days * 86_400 * 1_000_000_000;
        let start = self.options.end_unix_nano.saturating_sub(span);
        // The last run starts an hour before the end, so it ends inside the window.
        let usable = span.saturating_sub(3_600 * 1_000_000_000);
        start + (usable as u128 * run as u128 / self.runs.max(1) as u128) as u64
    }
}

impl Iterator for Foreign {
    type Item = ExportTraceServiceRequest;

    fn next(&mut self) -> Option<Self::Item> {
        let want = self.options.batch.max(1);
        if self.sent >= self.options.spans {
            return None;
        }
        while self.pending.len() < want {
            let t = self.start_of(self.next_run.min(self.runs));
            run(&mut self.rng, t, &mut self.pending);
            self.next_run += 1;
        }
        let n = want.min(self.options.spans - self.sent);
        let spans: Vec<Span> = self.pending.drain(..n).collect();
        self.sent += n;
        Some(request(spans))
    }
}

fn id8(rng: &mut Rng) -> Vec<u8> {
    (rng.next_u64() | 1).to_be_bytes().to_vec()
}

/// A uuid-looking random string.
fn uuid(rng: &mut Rng) -> String {
    let (a, b) = (rng.next_u64(), rng.next_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// A right-skewed duration around `median_ms`: log-normal with σ = 0.6.
fn skewed(rng: &mut Rng, median_ms: f64) -> u64 {
    let (u1, u2) = (rng.unit().max(1e-12), rng.unit());
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (median_ms * (0.6 * z).exp() * 1e6) as u64 + rng.below(1_000_000)
}

struct Ctx {
    trace: Vec<u8>,
    root: Vec<u8>,
    t: u64,
}

impl Ctx {
    fn span(&mut self, rng: &mut Rng, name: String, parent: &[u8], dur: u64) -> Span {
        let start = self.t + rng.below(3_000_000);
        self.t = start + dur;
        Span {
            trace_id: self.trace.clone(),
            span_id: id8(rng),
            parent_span_id: parent.to_vec(),
            name,
            kind: 1,
            start_time_unix_nano: start,
            end_time_unix_nano: start + dur,
            status: Some(Status::default()),
            ..Default::default()
        }
    }
}

/// One run's spans, children first (in the order they end), the root last.
fn run(rng: &mut Rng, t0: u64, out: &mut Vec<Span>) {
    let (workflow, _) = WORKFLOWS[rng.below(WORKFLOWS.len() as u64) as usize];
    let mut trace = rng.next_u64().to_be_bytes().to_vec();
    trace.extend_from_slice(&rng.next_u64().to_be_bytes());
    let mut cx = Ctx {
        trace,
        root: id8(rng),
        t: t0 + rng.below(1_000_000_000),
    };
    let root_start = cx.t;
    let (model, provider, response_model) = MODELS[rng.below(MODELS.len() as u64) as usize];
    // Confidence drifts down over time for two models, so drift queries find something.
    let drifting = matches!(model, "gpt-4o-mini" | "claude-haiku-4-5");
    // About half the decisions fall under 0.8 and get a review of their own.
    let base = if drifting && rng.below(2) == 0 {
        0.52
    } else {
        0.62
    };
    let confidence = (base + rng.unit() * 0.36).clamp(0.0, 1.0);
    let root = cx.root.clone();
    let decision = model_span(
        rng,
        &mut cx,
        &root,
        (model, provider, response_model),
        Some(confidence),
    );
    let decision_id = decision.span_id.clone();
    out.push(decision);
    if confidence < 0.8 {
        out.push(review_span(rng, &mut cx, &decision_id));
    }
    let mut failed = false;
    let connector = connector_span(rng, &mut cx, &root);
    failed |= connector.status.as_ref().is_some_and(|s| s.code == 2);
    out.push(connector);
    for _ in 0..1 + rng.below(3) {
        if rng.below(3) == 0 {
            let (m, p, r) = MODELS[rng.below(MODELS.len() as u64) as usize];
            out.push(model_span(rng, &mut cx, &root, (m, p, r), None));
        } else {
            out.push(tool_span(rng, &mut cx, &root));
        }
    }
    let run_id = format!("run_{}", uuid(rng));
    let mut attributes = vec![
        s("automation.run_id", run_id),
        s("automation.workflow", workflow),
        s(
            "automation.outcome",
            if failed { "failure" } else { "success" },
        ),
        s(
            "automation.trigger",
            if rng.below(4) == 0 {
                "schedule"
            } else {
                "webhook"
            },
        ),
        s("automation.tenant", format!("tenant-{:03}", rng.below(200))),
        s("messaging.message.id", uuid(rng)),
        s("http.route", format!("/hooks/{workflow}")),
        s("http.request.method", "POST"),
        i("http.response.status_code", if failed { 500 } else { 202 }),
        s("code.function.name", "handle_event"),
        s("code.file.path", "app/workflows/runner.py"),
        i("code.line.number", 118),
        s("thread.name", format!("worker-{}", rng.below(16))),
        s("enduser.pseudo.id", format!("u{:05}", rng.below(5_000))),
        i("automation.attempt", 1 + (rng.below(20) == 0) as i64),
    ];
    if rng.below(2) == 0 {
        attributes.push(s(
            "automation.priority",
            ["low", "normal", "high"][rng.below(3) as usize],
        ));
    }
    let end = cx.t + rng.below(5_000_000);
    out.push(Span {
        trace_id: cx.trace.clone(),
        span_id: cx.root.clone(),
        name: format!("POST /hooks/{workflow}"),
        kind: 2,
        start_time_unix_nano: root_start,
        end_time_unix_nano: end,
        attributes,
        status: Some(Status {
            code: if failed { 2 } else { 0 },
            message: String::new(),
        }),
        ..Default::default()
    });
}

fn model_span(
    rng: &mut Rng,
    cx: &mut Ctx,
    parent: &[u8],
    (model, provider, response_model): (&str, &str, &str),
    confidence: Option<f64>,
) -> Span {
    let dur = skewed(
        rng,
        if model.contains("mini") || model.contains("haiku") {
            450.0
        } else {
            1_100.0
        },
    );
    let mut span = cx.span(rng, format!("chat {model}"), parent, dur);
    let input = 300 + rng.below(3_500) as i64;
    let mut attributes = vec![
        s("gen_ai.operation.name", "chat"),
        s("gen_ai.provider.name", provider),
        s("gen_ai.request.model", model),
        s("gen_ai.response.model", response_model),
        s(
            "gen_ai.response.id",
            format!("resp_{:016x}{:08x}", rng.next_u64(), rng.next_u64() >> 32),
        ),
        s(
            "gen_ai.response.finish_reasons",
            if rng.below(30) == 0 { "length" } else { "stop" },
        ),
        f(
            "gen_ai.request.temperature",
            [0.0, 0.2, 0.7][rng.below(3) as usize],
        ),
        i(
            "gen_ai.request.max_tokens",
            [512, 1024, 4096][rng.below(3) as usize],
        ),
        i("gen_ai.usage.input_tokens", input),
        i("gen_ai.usage.output_tokens", 15 + rng.below(600) as i64),
        s("server.address", format!("api.{provider}.example")),
        i("server.port", 443),
        s("automation.step.kind", "model"),
    ];
    match confidence {
        Some(c) => {
            attributes.push(s("automation.step", "decide"));
            attributes.push(f("automation.decision.confidence", (c * 1e4).round() / 1e4));
            attributes.push(s(
                "automation.decision.outcome",
                ["approve", "reject", "escalate"][rng.below(3) as usize],
            ));
            attributes.push(s(
                "automation.model.version",
                format!("{model}@2026-1{}", rng.below(2)),
            ));
            attributes.push(s(
                "automation.prompt.version",
                format!("p-{}", 7 + rng.below(3)),
            ));
            attributes.push(i(
                "gen_ai.usage.cache_read.input_tokens",
                (rng.below(4) * 256) as i64,
            ));
        }
        None => {
            attributes.push(s("automation.step", "summarize"));
            attributes.push(s("gen_ai.output.type", "text"));
            if rng.below(2) == 0 {
                attributes.push(s("gen_ai.conversation.id", uuid(rng)));
            }
        }
    }
    span.attributes = attributes;
    span.kind = 3;
    span
}

fn review_span(rng: &mut Rng, cx: &mut Ctx, decision: &[u8]) -> Span {
    let dur = skewed(rng, 90_000.0);
    let mut span = cx.span(rng, "human review".into(), decision, dur);
    let mut attributes = vec![
        s("automation.step", "review"),
        s("automation.step.kind", "human"),
        b("automation.human.override", rng.below(7) == 0),
        s(
            "automation.human.reviewer",
            format!("reviewer-{:02}", rng.below(40)),
        ),
        i("automation.human.review_ms", (dur / 1_000_000) as i64),
        s(
            "review.queue",
            ["tier-1", "tier-2", "specialist"][rng.below(3) as usize],
        ),
        s("review.task.id", uuid(rng)),
        s("review.ui.version", "4.12.0"),
        i("review.fields.changed", rng.below(4) as i64),
        s("code.function.name", "submit_review"),
        s("thread.name", format!("review-{}", rng.below(8))),
        s(
            "review.ui.locale",
            ["en-GB", "de-DE", "fr-FR"][rng.below(3) as usize],
        ),
        s(
            "user_agent.original",
            "Mozilla/5.0 (X11; Linux x86_64) Review/4.12",
        ),
        s(
            "network.peer.address",
            format!("10.2.{}.{}", rng.below(8), rng.below(250)),
        ),
        i("review.comments", rng.below(3) as i64),
    ];
    if rng.below(3) == 0 {
        attributes.push(s("review.reason", "low confidence"));
    }
    span.attributes = attributes;
    span
}

fn connector_span(rng: &mut Rng, cx: &mut Ctx, parent: &[u8]) -> Span {
    let (connector, host, path) = CONNECTORS[rng.below(CONNECTORS.len() as u64) as usize];
    let dur = skewed(rng, 120.0);
    let mut span = cx.span(rng, format!("POST {path}"), parent, dur);
    let code = match rng.below(100) {
        0 => 503,
        1 => 429,
        2 => 400,
        _ => 200,
    };
    let id = rng.next_u64() >> 20;
    span.attributes = vec![
        s("automation.step", format!("call-{connector}")),
        s("automation.step.kind", "connector"),
        s("automation.connector", connector),
        s("http.request.method", "POST"),
        i("http.response.status_code", code),
        s("url.full", format!("https://{host}{path}/{id}")),
        s("url.scheme", "https"),
        s("server.address", host),
        i("server.port", 443),
        s("network.protocol.version", "1.1"),
        i("http.request.body.size", 200 + rng.below(4_000) as i64),
        i("http.response.body.size", 100 + rng.below(20_000) as i64),
        s("user_agent.original", "python-httpx/0.28.1"),
        s("http.request.header.x-request-id", uuid(rng)),
        i("http.resend_count", (rng.below(10) == 0) as i64),
    ];
    if rng.below(2) == 0 {
        span.attributes.push(s("peer.service", connector));
    }
    span.kind = 3;
    if code != 200 {
        span.status = Some(Status {
            code: 2,
            message: match code {
                503 => "503 Service Unavailable".into(),
                429 => "429 Too Many Requests".into(),
                _ => "400 Bad Request: invalid field `amount`".into(),
            },
        });
    }
    span
}

fn tool_span(rng: &mut Rng, cx: &mut Ctx, parent: &[u8]) -> Span {
    let tool = TOOLS[rng.below(TOOLS.len() as u64) as usize];
    let dur = skewed(rng, 40.0);
    let mut span = cx.span(rng, format!("execute_tool {tool}"), parent, dur);
    span.attributes = vec![
        s("gen_ai.operation.name", "execute_tool"),
        s("gen_ai.tool.name", tool),
        s(
            "gen_ai.tool.call.id",
            format!("call_{:016x}", rng.next_u64()),
        ),
        s("gen_ai.tool.type", "function"),
        s("automation.step", tool),
        s("automation.step.kind", "tool"),
        s("code.function.name", tool),
        s("code.file.path", format!("app/tools/{tool}.py")),
        i("code.line.number", 20 + rng.below(200) as i64),
        s("thread.name", format!("worker-{}", rng.below(16))),
        i("tool.result.size", rng.below(50_000) as i64),
        b("tool.cache_hit", rng.below(4) == 0),
        s("tool.input.format", ["json", "text"][rng.below(2) as usize]),
        i("tool.attempt", 1),
        s(
            "deployment.region",
            ["eu-west-1", "us-east-1"][rng.below(2) as usize],
        ),
    ];
    if rng.below(3) == 0 {
        span.attributes.push(s("tool.version", "2.3.1"));
    }
    span
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    crate::attr::export(
        vec![
            s("service.name", "automation-app"),
            s("service.version", "3.8.1"),
        ],
        ("app.automation", "3.8.1"),
        spans,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(spans: usize) -> ForeignOptions {
        ForeignOptions {
            seed: 3,
            spans,
            batch: 512,
            days: 14,
            end_unix_nano: 1_793_491_200_000_000_000,
        }
    }

    #[test]
    fn the_shape_is_what_the_issue_describes() {
        let reqs: Vec<_> = Foreign::new(options(100_000)).collect();
        let spans: Vec<&Span> = reqs
            .iter()
            .flat_map(|r| r.resource_spans[0].scope_spans[0].spans.iter())
            .collect();
        assert_eq!(spans.len(), 100_000);
        assert!(
            reqs[..reqs.len() - 1]
                .iter()
                .all(|r| r.resource_spans[0].scope_spans[0].spans.len() == 512)
        );
        let roots = spans.iter().filter(|s| s.parent_span_id.is_empty()).count();
        let per_trace = spans.len() as f64 / roots as f64;
        assert!((5.0..6.0).contains(&per_trace), "{per_trace} spans a trace");
        let outside = spans
            .iter()
            .map(|s| s.attributes.len())
            .find(|n| !(15..=20).contains(n));
        assert_eq!(outside, None, "attributes a span");
        // The run id is on roots only; reviews are spans of their own.
        for s in &spans {
            let has_run = s.attributes.iter().any(|a| a.key == "automation.run_id");
            assert_eq!(has_run, s.parent_span_id.is_empty());
        }
        assert!(spans.iter().any(|s| s.name == "human review"));
        // Sent in time order: each request's first span starts no earlier than a day before the
        // previous one's.
        let firsts: Vec<u64> = reqs
            .iter()
            .map(|r| r.resource_spans[0].scope_spans[0].spans[0].start_time_unix_nano)
            .collect();
        assert!(firsts.windows(2).all(|w| w[1] + 3_600_000_000_000 > w[0]));
    }

    #[test]
    fn the_same_seed_gives_the_same_requests() {
        let a: Vec<_> = Foreign::new(options(3_000)).collect();
        let b: Vec<_> = Foreign::new(options(3_000)).collect();
        assert_eq!(a, b);
    }
}
