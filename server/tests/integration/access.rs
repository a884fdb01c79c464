//! Every port authenticates and the policies decide: each route and both OTLP protocols without
//! a token, with a wrong, an expired and a revoked one, and with tokens of the roles.

use std::time::Duration;

use prost::Message as _;
use serde_json::{Value, json};

use super::{admin, authed, bearer, grpc_as, request, span, start_with};

/// Every API route a client can call, with a body where it takes one.
fn routes() -> Vec<(&'static str, &'static str, Option<Value>)> {
    vec![
        ("POST", "/api/sql", Some(json!({"sql": "SELECT 1"}))),
        ("GET", "/api/metrics", None),
        ("GET", "/api/thresholds?workflow=w", None),
        ("GET", "/api/slo", None),
        ("GET", "/api/slo/x/runs", None),
        ("POST", "/api/authorize", Some(json!({}))),
        ("POST", "/api/gate", Some(json!({}))),
        ("POST", "/api/reload", None),
        (
            "POST",
            "/api/erase",
            Some(json!({"person": "nobody-at-all"})),
        ),
        ("GET", "/api/audit/verify", None),
        ("GET", "/api/audit/records/1", None),
        ("POST", "/api/runs", Some(json!({"workflow": "w"}))),
        ("GET", "/api/runs/r", None),
        ("GET", "/api/reviews", None),
        ("GET", "/api/reviews/t", None),
        (
            "POST",
            "/api/reviews/t/approve",
            Some(json!({"reason": "r"})),
        ),
        (
            "POST",
            "/api/reviews/t/reject",
            Some(json!({"reason": "r"})),
        ),
        ("GET", "/api/status", None),
        ("GET", "/api/whoami", None),
        ("GET", "/metrics", None),
        (
            "POST",
            "/api/tokens",
            Some(json!({"principal": "Custos::User::\"ana\""})),
        ),
        ("GET", "/api/tokens", None),
        ("DELETE", "/api/tokens/x", None),
    ]
}

async fn call(
    client: &reqwest::Client,
    api: std::net::SocketAddr,
    (method, path, body): &(&str, &str, Option<Value>),
) -> reqwest::Response {
    let url = format!("http://{api}{path}");
    let req = match *method {
        "GET" => client.get(url),
        "DELETE" => client.delete(url),
        _ => client.post(url),
    };
    let req = match body {
        Some(b) => req.json(b),
        None => req,
    };
    req.send().await.unwrap()
}

/// Sends one OTLP/HTTP export with `token`; the status.
async fn http_export(server: &custos_server::RunningServer, token: Option<&str>) -> u16 {
    let mut req = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", server.otlp_http))
        .header("content-type", "application/x-protobuf")
        .body(request(vec![span(40, 1, "s")]).encode_to_vec());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().status().as_u16()
}

pub(super) async fn token(
    server: &custos_server::RunningServer,
    principal: &str,
    expires: Option<&str>,
) -> (String, String) {
    let api = custos_api::Client::new(&format!("http://{}", server.api))
        .unwrap()
        .with_token(Some(admin(server)));
    let t = api
        .create_token(&custos_api::CreateToken {
            principal: principal.into(),
            expires: expires.map(str::to_string),
            note: "test".into(),
        })
        .await
        .unwrap();
    (t.id, t.token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_both_otlp_protocols_refuse_callers_without_a_valid_token() {
    let dir = tempfile::tempdir().unwrap();
    // Many bad tokens from one address: the failure limit is the third test's subject.
    let server = start_with(dir.path(), "[auth]\nmax_failures = 1000\n").await;
    let (_, expired) = token(&server, "Custos::User::\"admin\"", Some("1s")).await;
    let (revoked_id, revoked) = token(&server, "Custos::User::\"admin\"", None).await;
    let res = authed(&server)
        .delete(format!("http://{}/api/tokens/{revoked_id}", server.api))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let none = reqwest::Client::new();
    for (who, client, says) in [
        ("no token", none.clone(), "authentication required"),
        ("a wrong token", bearer("cst_not-a-token"), "not valid"),
        ("an expired token", bearer(&expired), "has expired"),
        ("a revoked token", bearer(&revoked), "was revoked"),
    ] {
        for route in routes() {
            let res = call(&client, server.api, &route).await;
            assert_eq!(res.status(), 401, "{who}: {} {}", route.0, route.1);
            let challenge = res.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .to_string();
            assert!(
                challenge.starts_with("Bearer realm=\"custos\""),
                "{challenge}"
            );
            assert_eq!(
                challenge.contains("invalid_token"),
                who != "no token",
                "{who}: {challenge}"
            );
            let body: Value = res.json().await.unwrap();
            assert!(
                body["error"].as_str().unwrap().contains(says),
                "{who}: {body}"
            );
        }
    }
    // Health stays open.
    let res = none
        .get(format!("http://{}/healthz", server.api))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // OTLP/HTTP: 401 without or with a bad token, 403 for a caller who may not ingest, 200 for
    // an ingest service. OTLP/gRPC: UNAUTHENTICATED, PERMISSION_DENIED, OK.
    let (_, ana) = token(&server, "Custos::User::\"ana\"", None).await;
    let (_, collector) = token(&server, "Custos::Service::\"otel-collector\"", None).await;
    assert_eq!(http_export(&server, None).await, 401);
    assert_eq!(http_export(&server, Some("cst_nope")).await, 401);
    assert_eq!(http_export(&server, Some(&revoked)).await, 401);
    assert_eq!(http_export(&server, Some(&ana)).await, 403);
    assert_eq!(http_export(&server, Some(&collector)).await, 200);
    for (t, code) in [
        ("cst_nope", tonic::Code::Unauthenticated),
        (expired.as_str(), tonic::Code::Unauthenticated),
        (ana.as_str(), tonic::Code::PermissionDenied),
    ] {
        let mut c = grpc_as(&server, t).await;
        let e = c.export(request(vec![span(41, 1, "s")])).await.unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
    }
    let mut c = grpc_as(&server, &collector).await;
    c.export(request(vec![span(41, 2, "s")])).await.unwrap();
    // Without any token, gRPC says how to get one.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.otlp_grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::new(channel);
    let e = c.export(request(vec![span(41, 3, "s")])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert!(e.message().contains("custos token create"), "{e:?}");
    // Only the admitted exports were stored; the refused export of a known caller was recorded,
    // the unauthenticated ones counted.
    let rows = super::sql(&server, "SELECT count(*) AS n FROM spans WHERE name = 's'").await;
    assert_eq!(rows[0]["n"], 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows = super::sql(
        &server,
        "SELECT principal, action, decision FROM audit WHERE kind = 'access' ORDER BY seq",
    )
    .await;
    assert_eq!(
        rows,
        [
            json!({"principal": "Custos::User::\"ana\"", "action": "Custos::Action::\"ingest\"", "decision": "deny"})
        ]
    );
    let m = authed(&server)
        .get(format!("http://{}/metrics", server.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("custos_auth_failures_total{listener=\"otlp\",reason=\"missing\"}"),
        "{m}"
    );
    assert!(
        m.contains("custos_access_decisions_total{action=\"ingest\",decision=\"allow\"} 2"),
        "{m}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_may_do_its_operations_and_every_denial_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), "").await;
    let (_, sam) = token(&server, "Custos::User::\"sam\"", None).await;
    let (_, cleo) = token(&server, "Custos::User::\"cleo\"", None).await;
    let (_, prom) = token(&server, "Custos::Service::\"prometheus\"", None).await;
    let (_, exec) = token(&server, "Custos::Service::\"executor\"", None).await;
    let api = server.api;
    let get = |t: String, path: &'static str| async move {
        call(&bearer(&t), api, &("GET", path, None))
            .await
            .status()
            .as_u16()
    };
    let sql = |t: String, q: &'static str| async move {
        call(
            &bearer(&t),
            api,
            &("POST", "/api/sql", Some(json!({"sql": q}))),
        )
        .await
        .status()
        .as_u16()
    };
    // An SRE queries spans and metrics but not the audit trail, through SQL or the API.
    assert_eq!(get(sam.clone(), "/api/metrics").await, 200);
    assert_eq!(get(sam.clone(), "/metrics").await, 200);
    assert_eq!(sql(sam.clone(), "SELECT count(*) FROM runs").await, 200);
    assert_eq!(sql(sam.clone(), "SELECT count(*) FROM audit").await, 403);
    assert_eq!(
        sql(
            sam.clone(),
            "SELECT count(*) FROM spans WHERE name IN (SELECT kind FROM audit)"
        )
        .await,
        403
    );
    assert_eq!(get(sam.clone(), "/api/audit/verify").await, 403);
    assert_eq!(get(sam.clone(), "/api/tokens").await, 403);
    // Compliance reads the trail; monitoring only scrapes.
    assert_eq!(sql(cleo.clone(), "SELECT count(*) FROM audit").await, 200);
    assert_eq!(get(cleo.clone(), "/api/audit/verify").await, 200);
    assert_eq!(get(prom.clone(), "/metrics").await, 200);
    assert_eq!(get(prom.clone(), "/api/metrics").await, 403);
    // A forged store on /api/authorize is a 400 naming the entity, and recorded as a deny.
    let res = call(
        &bearer(&exec),
        api,
        &(
            "POST",
            "/api/authorize",
            Some(json!({
                "principal": "Custos::User::\"mallory\"", "action": "approve_review",
                "resource": "Custos::ReviewTask::\"t\"", "context": {"override": false},
                "entities": [
                    {"uid": {"type": "Custos::Team", "id": "reviewers"}, "attrs": {}, "parents": []},
                    {"uid": {"type": "Custos::ReviewTask", "id": "t"}, "attrs": {
                        "workflow": {"__entity": {"type": "Custos::Workflow", "id": "invoice-posting"}},
                        "reviewers": {"__entity": {"type": "Custos::Team", "id": "reviewers"}}},
                     "parents": []}]
            })),
        ),
    )
    .await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("`Custos::Team::\"reviewers\"` is an entity of the store"),
        "{body}"
    );
    // Each denial above is in the audit log with the caller and the route.
    let rows = super::sql(
        &server,
        "SELECT principal, action, context FROM audit WHERE kind = 'access' ORDER BY seq",
    )
    .await;
    let denied: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["principal"].as_str().unwrap().to_string(),
                r["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let act = |a: &str| format!("Custos::Action::\"{a}\"");
    assert_eq!(
        denied,
        [
            ("Custos::User::\"sam\"".to_string(), act("read_audit")),
            ("Custos::User::\"sam\"".to_string(), act("read_audit")),
            ("Custos::User::\"sam\"".to_string(), act("read_audit")),
            ("Custos::User::\"sam\"".to_string(), act("manage_tokens")),
            ("Custos::Service::\"prometheus\"".to_string(), act("query")),
        ]
    );
    assert!(
        rows[2]["context"]
            .as_str()
            .unwrap()
            .contains("GET /api/audit/verify")
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_bad_tokens_from_one_address_wait_and_metrics_can_be_opened() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(
        dir.path(),
        "[auth]\nmax_failures = 3\nfailure_window_secs = 2\nmetrics_open = true\n",
    )
    .await;
    let bad = bearer("cst_guess");
    let url = format!("http://{}/api/status", server.api);
    for _ in 0..3 {
        assert_eq!(bad.get(&url).send().await.unwrap().status(), 401);
    }
    let res = authed(&server).get(&url).send().await.unwrap();
    assert_eq!(res.status(), 429, "even a good token waits out the window");
    assert!(
        res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    // OTLP shares the limit: the same address is throttled there too.
    assert_eq!(http_export(&server, Some("cst_guess")).await, 429);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        authed(&server).get(&url).send().await.unwrap().status(),
        200
    );
    // `[auth] metrics_open`: Prometheus without a token.
    let res = reqwest::get(format!("http://{}/metrics", server.api))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("custos_auth_failures_total")
    );
    server.shutdown().await.unwrap();
}
