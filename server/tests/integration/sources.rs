//! Spans carry who sent them (`spans.source`), and the deploy gate counts only the sources a
//! workflow trusts (`trusted_sources` in entities.json).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message as _;
use serde_json::{Value, json};

use super::access::token;
use super::{admin, authed, grpc_as, request, span, sql, start};

const COLLECTOR: &str = "Custos::Service::\"otel-collector\"";

/// The canary workload of `seed`; with `relabel`, the regressed prompt `v3` is sent as `v2`.
fn workload(seed: u64, relabel: bool) -> Vec<ExportTraceServiceRequest> {
    let options = custos_synth::reference::SynthOptions {
        seed,
        runs: 8_000,
        runs_per_request: 500,
        canary: true,
        ..Default::default()
    };
    custos_synth::reference::generate(options)
        .map(|mut req| {
            if relabel {
                for span in req
                    .resource_spans
                    .iter_mut()
                    .flat_map(|r| r.scope_spans.iter_mut())
                    .flat_map(|s| s.spans.iter_mut())
                {
                    for kv in &mut span.attributes {
                        if kv.key == "automation.prompt.version"
                            && let Some(v) = kv.value.as_mut()
                            && v.value == Some(any_value::Value::StringValue("v3".into()))
                        {
                            v.value = Some(any_value::Value::StringValue("v2".into()));
                        }
                    }
                }
            }
            req
        })
        .collect()
}

async fn send(
    server: &custos_server::RunningServer,
    token: &str,
    reqs: &[ExportTraceServiceRequest],
) {
    let client = super::bearer(token);
    for req in reqs {
        let res = client
            .post(format!("http://{}/v1/traces", server.otlp_http))
            .header("content-type", "application/x-protobuf")
            .body(req.encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
}

async fn gate(server: &custos_server::RunningServer, ci: &str, candidate: &str) -> Value {
    let body = json!({
        "change": {
            "change": "prompt", "workflow": "invoice-posting", "step": "approve",
            "current": "v1", "candidate": candidate,
            "requested_by": "Custos::Service::\"ci\"", "canary": {"last": "48h"}
        },
        "at": "2026-11-03T00:00:00Z"
    });
    let res = super::bearer(ci)
        .post(format!("http://{}/api/gate", server.api))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_carry_their_source_and_untrusted_sources_do_not_move_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let admin = admin(&server);
    let (_, collector) = token(&server, COLLECTOR, None).await;
    let (_, ci) = token(&server, "Custos::Service::\"ci\"", None).await;

    // Both protocols record the principal of the export's token.
    let mut grpc = grpc_as(&server, &collector).await;
    grpc.export(request(vec![span(70, 1, "via-grpc")]))
        .await
        .unwrap();
    let res = authed(&server)
        .post(format!("http://{}/v1/traces", server.otlp_http))
        .header("content-type", "application/x-protobuf")
        .body(request(vec![span(71, 1, "via-http")]).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let rows = sql(
        &server,
        "SELECT name, source FROM spans WHERE name LIKE 'via-%' ORDER BY 1",
    )
    .await;
    assert_eq!(rows[0]["source"], COLLECTOR);
    assert_eq!(rows[1]["source"], "Custos::User::\"admin\"");

    // The trusted collector sends the canary workload: `v2` is healthy.
    send(&server, &collector, &workload(7, false)).await;
    let before = gate(&server, &ci, "v2").await;
    assert_eq!(before["decision"]["decision"], "allow", "{before}");
    // An untrusted source (an admin may ingest, but `invoice-posting` trusts only the collector
    // and the executor) sends the regressed prompt's traffic labelled `v2`: it is stored, and
    // the gate does not count it.
    let poisoned = workload(8, true);
    send(&server, &admin, &poisoned).await;
    let rows = sql(
        &server,
        "SELECT source, count(*) AS n FROM decisions WHERE prompt_version = 'v2' GROUP BY 1 ORDER BY 1",
    )
    .await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let after = gate(&server, &ci, "v2").await;
    assert_eq!(after["decision"]["decision"], "allow", "{after}");
    assert_eq!(
        after["measurement"]["candidate"]["decisions"],
        before["measurement"]["candidate"]["decisions"],
        "untrusted decisions were counted"
    );
    // The same traffic from the trusted source does move it: the filter is what kept it out.
    send(&server, &collector, &workload(9, true)).await;
    let moved = gate(&server, &ci, "v2").await;
    assert_eq!(moved["decision"]["decision"], "deny", "{moved}");
    server.shutdown().await.unwrap();
}
