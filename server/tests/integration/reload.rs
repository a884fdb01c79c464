//! Reloading the policies and workflows while the server runs: what changed is in force at once,
//! recorded with who asked; a directory that does not load changes nothing.

use std::path::{Path, PathBuf};

use prost::Message as _;
use serde_json::Value;

use super::access::token;
use super::{POLICIES, admin, bearer, request, span, sql, start_with};

const WORKFLOWS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/workflows");

/// The shipped policies and workflows copied under `dir`.
fn copies(dir: &Path) -> (PathBuf, PathBuf) {
    let (policy, workflows) = (dir.join("policy"), dir.join("workflows"));
    for (from, to) in [
        (Path::new(POLICIES), &policy),
        (Path::new(WORKFLOWS), &workflows),
    ] {
        std::fs::create_dir_all(to).unwrap();
        for f in std::fs::read_dir(from).unwrap() {
            let f = f.unwrap().path();
            if f.is_file() {
                std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
            }
        }
    }
    (policy, workflows)
}

/// Edits the entity store: `edit` gets the entity `type`/`id`.
fn edit_entity(policy: &Path, ty: &str, id: &str, edit: impl FnOnce(&mut Value)) {
    let path = policy.join("entities.json");
    let mut entities: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let e = entities
        .iter_mut()
        .find(|e| e["uid"]["type"] == ty && e["uid"]["id"] == id)
        .unwrap();
    edit(e);
    std::fs::write(&path, serde_json::to_string_pretty(&entities).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_puts_changes_in_force_records_who_made_them_and_refuses_broken_files() {
    let dir = tempfile::tempdir().unwrap();
    let (policy, workflows) = copies(dir.path());
    let data = dir.path().join("data");
    let server = start_with(
        &data,
        &format!(
            "[rules]\npolicies = {:?}\n[executor]\nworkflows = {:?}\n",
            policy.display().to_string(),
            workflows.display().to_string()
        ),
    )
    .await;
    let (api, otlp) = (server.api, server.otlp_http);
    let admin = bearer(&admin(&server));
    let (_, sam) = token(&server, "Custos::User::\"sam\"", None).await;
    let (_, collector) = token(&server, "Custos::Service::\"otel-collector\"", None).await;
    let (sam, collector) = (bearer(&sam), bearer(&collector));
    let reload = |c: reqwest::Client| async move {
        let r = c
            .post(format!("http://{api}/api/reload"))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap())
    };
    let status = |c: reqwest::Client, path: &'static str| async move {
        c.get(format!("http://{api}{path}"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    let export = |c: reqwest::Client, id: u8| async move {
        c.post(format!("http://{otlp}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(request(vec![span(9, id, "step")]).encode_to_vec())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    let server_status = || async {
        admin
            .get(format!("http://{api}/api/status"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let before = server_status().await;

    // Only admins reload; a refusal is recorded like any other.
    let (code, body) = reload(sam.clone()).await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("`reload`"),
        "{body}"
    );
    // Nothing changed on disk: a reload is in force and records nothing.
    let (code, body) = reload(admin.clone()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["policy_change"], Value::Null, "{body}");
    assert_eq!(body["workflow_change"], Value::Null, "{body}");
    assert_eq!(body["policy_hash"], before["policy_hash"]);

    // Before: the SRE does not read the audit trail, the collector sends spans.
    assert_eq!(status(sam.clone(), "/api/audit/verify").await, 403);
    assert_eq!(export(collector.clone(), 1).await, 200);

    // The SRE joins compliance, the collector leaves ingest, and a workflow is added.
    edit_entity(&policy, "Custos::User", "sam", |e| {
        e["parents"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "Custos::Team", "id": "compliance"}));
    });
    edit_entity(&policy, "Custos::Service", "otel-collector", |e| {
        e["parents"] = serde_json::json!([]);
    });
    let triage = std::fs::read_to_string(workflows.join("support-triage.yaml")).unwrap();
    std::fs::write(
        workflows.join("billing-triage.yaml"),
        triage.replace("name: support-triage", "name: billing-triage"),
    )
    .unwrap();
    let (code, body) = reload(admin.clone()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["policy_change"]["changed"],
        serde_json::json!(["entities.json"]),
        "{body}"
    );
    assert_eq!(
        body["workflow_change"]["changed"],
        serde_json::json!(["billing-triage"]),
        "{body}"
    );
    assert_ne!(body["policy_hash"], before["policy_hash"]);
    let after = server_status().await;
    assert_eq!(after["policy_hash"], body["policy_hash"]);
    assert!(
        after["workflows"]
            .as_array()
            .unwrap()
            .contains(&Value::from("billing-triage")),
        "{after}"
    );
    // In force at once, for the API and for the receivers' cached decisions.
    assert_eq!(status(sam.clone(), "/api/audit/verify").await, 200);
    assert_eq!(export(collector.clone(), 2).await, 403);

    // Broken files are refused with the file named, and the set in force stays.
    let entities = std::fs::read_to_string(policy.join("entities.json")).unwrap();
    std::fs::write(policy.join("entities.json"), "[{\"uid\": ").unwrap();
    let (code, body) = reload(admin.clone()).await;
    assert_eq!(code, 422, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("nothing was reloaded") && msg.contains("entities.json"),
        "{msg}"
    );
    std::fs::write(policy.join("entities.json"), &entities).unwrap();
    std::fs::write(
        policy.join("extra.cedar"),
        "permit (principal, action, resource",
    )
    .unwrap();
    let (code, body) = reload(admin.clone()).await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("extra.cedar"),
        "{body}"
    );
    std::fs::remove_file(policy.join("extra.cedar")).unwrap();
    std::fs::write(workflows.join("broken.yaml"), "name: [").unwrap();
    let (code, body) = reload(admin.clone()).await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("broken.yaml"),
        "{body}"
    );
    assert_eq!(server_status().await["policy_hash"], after["policy_hash"]);
    assert_eq!(status(sam.clone(), "/api/audit/verify").await, 200);

    // The trail says who changed what, after the start's records.
    let rows = sql(
        &server,
        "SELECT kind, principal, action FROM audit \
         WHERE kind IN ('policy_change', 'workflow_change') OR action LIKE '%reload%' ORDER BY seq",
    )
    .await;
    let got: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_string(),
                r["principal"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let server_p = custos_server::SERVER_PRINCIPAL.to_string();
    let admin_p = "Custos::User::\"admin\"".to_string();
    assert_eq!(
        got,
        [
            ("policy_change".to_string(), server_p.clone()),
            ("workflow_change".to_string(), server_p),
            ("access".to_string(), "Custos::User::\"sam\"".to_string()),
            ("access".to_string(), admin_p.clone()),
            ("access".to_string(), admin_p.clone()),
            ("policy_change".to_string(), admin_p.clone()),
            ("workflow_change".to_string(), admin_p.clone()),
            ("access".to_string(), admin_p.clone()),
            ("access".to_string(), admin_p.clone()),
            ("access".to_string(), admin_p),
        ],
        "{rows:?}"
    );
    server.shutdown().await.unwrap();
}
