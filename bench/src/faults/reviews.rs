//! Review decisions racing: runs of the reference `support-triage` workflow are started until one
//! waits for a human review, then its approval and its rejection are sent at once. Exactly one
//! may win (200) and the other must get 409; two winners would drive the run twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::hostile::{Answers, count};

/// The answer key of a race that both decisions won (must never be counted).
pub(super) const TWO_WINNERS: &str = "two winners";

/// Races decisions until `stop`. `tokens` is (who starts runs, who reviews).
pub(super) async fn race(
    api: String,
    tokens: (String, String),
    answers: Answers,
    stop: Arc<AtomicBool>,
) {
    let client = reqwest::Client::new();
    let (starter, reviewer) = tokens;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let Some(task) = waiting_review(&client, &api, &starter, n).await else {
            continue;
        };
        let decide = |verb: &str| {
            client
                .post(format!("{api}/api/reviews/{task}/{verb}"))
                .bearer_auth(&reviewer)
                .json(&json!({"reason": format!("{verb} in a fault-suite race")}))
                .timeout(Duration::from_secs(10))
                .send()
        };
        let (a, r) = tokio::join!(decide("approve"), decide("reject"));
        let codes = [a, r].map(|x| x.map(|r| r.status().as_u16()).ok());
        for code in codes {
            count(&answers, code.map_or("conn".into(), |c| c.to_string()));
        }
        let key = match codes {
            [Some(200), Some(409)] | [Some(409), Some(200)] => "one winner, one 409".to_string(),
            [Some(200), Some(200)] => TWO_WINNERS.to_string(),
            [a, r] => format!("approve {a:?} / reject {r:?}"),
        };
        count(&answers, key);
    }
}

/// Starts run `n` and waits up to 2 s for it to wait for a review; its task's id (`None` when
/// the run finished without one: the model was confident, or it was not answered in time).
async fn waiting_review(
    client: &reqwest::Client,
    api: &str,
    token: &str,
    n: u64,
) -> Option<String> {
    let started: Value = client
        .post(format!("{api}/api/runs"))
        .bearer_auth(token)
        .json(&json!({
            "workflow": "support-triage",
            "input": {
                "email_id": format!("fault-{n}"),
                "subject": "where is my parcel",
                "body": format!("parcel {n} has not arrived"),
            },
        }))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let id = started["run_id"].as_str()?.to_string();
    for _ in 0..100 {
        let run: Value = client
            .get(format!("{api}/api/runs/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        match run["status"].as_str() {
            Some("waiting") if run["review"].is_string() => {
                return run["review"].as_str().map(String::from);
            }
            Some("finished" | "failed") => return None,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    None
}
