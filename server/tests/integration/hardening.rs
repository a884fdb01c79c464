//! Hostile or unlucky timing costs an error, never a double effect: two decisions racing for one
//! review task (issue 16).

use std::time::Duration;

use serde_json::json;

use super::{get_json, start_triage, start_with};

const WORKFLOWS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/workflows");

/// Starts support-triage runs until one waits for a review; returns the run and its task.
async fn run_waiting_for_review(server: &custos_server::RunningServer) -> (String, String) {
    for n in 0..40 {
        let body = format!("parcel {n} has not arrived");
        let id = start_triage(server, &format!("e-{n}"), "where is my parcel", &body).await;
        for _ in 0..100 {
            let run = get_json(server, &format!("/api/runs/{id}")).await;
            match run["status"].as_str() {
                Some("waiting") if run["review"].is_string() => {
                    return (id, run["review"].as_str().unwrap().to_string());
                }
                Some("finished") => break,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
    panic!("no run waited for a review");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_review_decisions_have_one_winner_and_the_loser_gets_409() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(
        dir.path(),
        &format!("[executor]\nworkflows = {WORKFLOWS:?}\n"),
    )
    .await;
    let (_, ben) = super::access::token(&server, "Custos::User::\"ben\"", None).await;
    for round in 0..3 {
        let (run, task) = run_waiting_for_review(&server).await;
        let decide = |verb: &'static str| {
            let url = format!("http://{}/api/reviews/{task}/{verb}", server.api);
            let client = super::bearer(&ben);
            async move {
                let res = client
                    .post(url)
                    .json(&json!({"reason": format!("{verb} in a race")}))
                    .send()
                    .await
                    .unwrap();
                (verb, res.status().as_u16(), res.text().await.unwrap())
            }
        };
        let (a, b) = tokio::join!(decide("approve"), decide("reject"));
        let mut codes = [a.1, b.1];
        codes.sort_unstable();
        assert_eq!(codes, [200, 409], "round {round}: {a:?} {b:?}");
        let loser = if a.1 == 409 { &a } else { &b };
        assert!(loser.2.contains("decided meanwhile"), "{loser:?}");
        let winner = if a.1 == 200 { a.0 } else { b.0 };
        let got = get_json(&server, &format!("/api/reviews/{task}")).await;
        let want = if winner == "approve" {
            "approved"
        } else {
            "rejected"
        };
        assert_eq!(got["status"], want, "round {round}: {got}");
        // The run goes on once: one reply or one ticket at most, never one per decision.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for connector in ["mail", "tickets"] {
            let lines =
                std::fs::read_to_string(dir.path().join(format!("connectors/{connector}.jsonl")))
                    .unwrap_or_default();
            let n = lines
                .lines()
                .filter(|l| l.contains(&format!("\"run_id\":\"{run}\"")))
                .count();
            assert!(
                n <= 1,
                "round {round}: {connector} has {n} effects of {run}"
            );
        }
    }
    server.shutdown().await.unwrap();
}
