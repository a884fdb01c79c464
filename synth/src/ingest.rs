//! The ingest benchmark's workload (`custos bench ingest`): export requests of runs of five spans
//! (root, classify, lookup, review, post) over four workflows, with the attributes an automation
//! executor sends.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};

use crate::Rng;
use crate::attr::{b, f, i, s};

const WORKFLOWS: &[&str] = &[
    "support-triage",
    "invoice-posting",
    "sanctions-screening",
    "refund-approval",
];

/// One export of `n` spans: runs of five spans (root, classify, lookup, review, post).
pub fn workload_request(rng: &mut Rng, n: usize, t0: u64) -> ExportTraceServiceRequest {
    let mut spans = Vec::with_capacity(n);
    let mut t = t0;
    while spans.len() < n {
        let run = rng.next_u64();
        let workflow = WORKFLOWS[rng.below(WORKFLOWS.len() as u64) as usize];
        let mut trace = [0u8; 16];
        trace[..8].copy_from_slice(&run.to_be_bytes());
        trace[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
        let run_id = format!("run-{:016x}", run);
        let root_id = rng.next_u64() | 1;
        let confidence = (0.55 + rng.unit() * 0.45).min(1.0);
        let outcome = if rng.below(50) == 0 {
            "failure"
        } else {
            "success"
        };
        let steps: [(&str, &str); 4] = [
            ("classify", "model"),
            ("lookup-customer", "connector"),
            ("review", "human"),
            ("post-ledger", "connector"),
        ];
        let run_start = t;
        let mut step_t = t + 1_000_000;
        for (name, kind) in steps {
            if spans.len() + 1 >= n {
                break;
            }
            let dur = match kind {
                "model" => 300_000_000 + rng.below(900_000_000),
                "human" => 5_000_000_000 + rng.below(60_000_000_000),
                _ => 20_000_000 + rng.below(200_000_000),
            };
            let mut attributes = vec![
                s("automation.workflow", workflow),
                s("automation.run_id", run_id.clone()),
                s("automation.step", name),
                s("automation.step.kind", kind),
            ];
            // Unreviewed runs have no review span.
            let Some(more) = step_attributes(rng, kind, confidence, dur) else {
                continue;
            };
            attributes.extend(more);
            let error = kind == "connector" && rng.below(100) == 0;
            spans.push(Span {
                trace_id: trace.to_vec(),
                span_id: (rng.next_u64() | 1).to_be_bytes().to_vec(),
                parent_span_id: root_id.to_be_bytes().to_vec(),
                name: name.into(),
                kind: if kind == "human" { 1 } else { 3 },
                start_time_unix_nano: step_t,
                end_time_unix_nano: step_t + dur,
                attributes,
                status: Some(Status {
                    code: if error { 2 } else { 1 },
                    message: if error {
                        "upstream timeout".into()
                    } else {
                        String::new()
                    },
                }),
                ..Default::default()
            });
            step_t += dur + 1_000_000;
        }
        spans.push(Span {
            trace_id: trace.to_vec(),
            span_id: root_id.to_be_bytes().to_vec(),
            name: format!("run {workflow}"),
            kind: 2,
            start_time_unix_nano: run_start,
            end_time_unix_nano: step_t,
            attributes: vec![
                s("automation.workflow", workflow),
                s("automation.run_id", run_id),
                s("automation.outcome", outcome),
            ],
            status: Some(Status::default()),
            ..Default::default()
        });
        t += 50_000_000;
    }
    request(spans)
}

/// A step's own attributes by kind; `None` for the review of a run nobody reviewed (decided at
/// confidence 0.8 or more). The draws happen in this order; the benchmark's inputs depend on it.
fn step_attributes(rng: &mut Rng, kind: &str, confidence: f64, dur: u64) -> Option<Vec<KeyValue>> {
    Some(match kind {
        "model" => vec![
            s("gen_ai.operation.name", "chat"),
            s("gen_ai.provider.name", "openai"),
            s("gen_ai.request.model", "gpt-4o-mini"),
            i("gen_ai.usage.input_tokens", 800 + rng.below(1200) as i64),
            i("gen_ai.usage.output_tokens", 20 + rng.below(200) as i64),
            i(
                "gen_ai.usage.cache_read.input_tokens",
                (rng.below(4) * 256) as i64,
            ),
            f("automation.cost_usd", 0.0002 + rng.unit() * 0.002),
            f(
                "automation.decision.confidence",
                (confidence * 1000.0).round() / 1000.0,
            ),
            s(
                "automation.decision.outcome",
                if rng.below(3) == 0 {
                    "reject"
                } else {
                    "approve"
                },
            ),
            s("automation.model.version", "m-2026-10"),
            s(
                "automation.prompt.version",
                if rng.below(10) == 0 { "p-8" } else { "p-7" },
            ),
        ],
        "human" if confidence >= 0.8 => return None,
        "human" => vec![
            b("automation.human.override", rng.below(8) == 0),
            s(
                "automation.human.reviewer",
                format!("reviewer-{}", rng.below(12)),
            ),
            i("automation.human.review_ms", (dur / 1_000_000) as i64),
        ],
        _ => vec![
            s("http.request.method", "POST"),
            i("http.response.status_code", 200),
            s("server.address", "erp.internal"),
        ],
    })
}

/// The spans as one export from the benchmark's executor.
fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    crate::attr::export(
        vec![
            s("service.name", "automation-executor"),
            s("service.version", "1.4.2"),
            s("deployment.environment.name", "production"),
            s("host.name", "worker-3"),
        ],
        ("custos.executor", "0.1.0"),
        spans,
    )
}

/// An OTLP/protobuf export of `n` empty spans in one resource and scope: 2 bytes each on the
/// wire, the cheapest body that asks the most of a decoder (the hostile-export tests and the
/// fault suite send millions).
pub fn empty_spans(n: usize) -> Vec<u8> {
    fn len(out: &mut Vec<u8>, mut n: usize) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    let scope: Vec<u8> = [0x12u8, 0x00].repeat(n);
    let mut rs = vec![0x12];
    len(&mut rs, scope.len());
    rs.extend_from_slice(&scope);
    let mut body = vec![0x0a];
    len(&mut body, rs.len());
    body.extend_from_slice(&rs);
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_benchmark_workload_is_pinned() {
        let mut rng = Rng::new(42);
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let mut spans = 0;
        for k in 0..20 {
            let req = workload_request(&mut rng, 512, 1_793_491_200_000_000_000 + k);
            spans += req.resource_spans[0].scope_spans[0].spans.len();
            for byte in format!("{req:?}").bytes() {
                h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        assert_eq!((spans, h), (10_240, 10_729_687_229_221_604_357));
    }

    #[test]
    fn empty_spans_decode_to_that_many_spans() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest as Req;
        use prost::Message as _;
        for n in [0, 1, 63, 64, 100_000] {
            let req = Req::decode(&empty_spans(n)[..]).unwrap();
            assert_eq!(req.resource_spans[0].scope_spans[0].spans.len(), n);
        }
    }
}
