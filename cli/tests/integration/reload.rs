//! A running `custos serve` reloads its policies on `SIGHUP` and on `custos policy reload`; a
//! directory that does not load changes nothing and the command says which file is wrong.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{KillOnDrop, authed, policies_with, repo, run_as, spawn_with, sql_offline, token_for};

#[test]
fn policies_reload_on_sighup_and_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policies_with(dir.path(), "sam", "sre");
    let data = dir.path().join("data");
    let server = spawn_with(&data, &repo(), &["--policies", policy.to_str().unwrap()]);
    let _guard = KillOnDrop(server.child.id());
    let sam = token_for(&data, "Custos::User::\"sam\"");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let get = |token: &str, path: &str| {
        rt.block_on(async {
            let r = authed(token)
                .get(format!("{}{path}", server.api))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    let hash = || {
        let (_, body) = get(&server.token, "/api/status");
        serde_json::from_str::<Value>(&body).unwrap()["policy_hash"].clone()
    };
    let before = hash();
    assert_eq!(get(&sam, "/api/audit/verify").0, 403);

    // SIGHUP: the SRE joins compliance.
    let path = policy.join("entities.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut entities: Vec<Value> = serde_json::from_str(&text).unwrap();
    let user = entities
        .iter_mut()
        .find(|e| e["uid"]["id"] == "sam")
        .unwrap();
    user["parents"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "Custos::Team", "id": "compliance"}));
    std::fs::write(&path, serde_json::to_string_pretty(&entities).unwrap()).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while hash() == before {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(&sam, "/api/audit/verify").0, 200);

    // `custos policy reload`: nothing changed; then a broken file changes nothing.
    let reload = |token: &str| {
        run_as(
            &repo(),
            token,
            &["policy", "reload", "--server", &server.api],
        )
    };
    let (code, out, err) = reload(&server.token);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("policies unchanged") && out.contains("workflows"),
        "{out}"
    );
    let (code, _, err) = reload(&sam);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("may not `reload`"), "{err}");
    std::fs::write(&path, "{").unwrap();
    let (code, _, err) = reload(&server.token);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("nothing was reloaded") && err.contains("entities.json"),
        "{err}"
    );
    assert_eq!(
        get(&sam, "/api/audit/verify").0,
        200,
        "the reloaded set stays"
    );
    std::fs::write(&path, &text).unwrap();
    let (code, out, err) = reload(&server.token);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("policies changed: entities.json (audit record"),
        "{out}"
    );
    assert_eq!(
        get(&sam, "/api/audit/verify").0,
        403,
        "back to the shipped roles"
    );

    // The start, the signal (the server itself) and the admin's command, in the trail.
    let rows = sql_offline(
        &data,
        "SELECT principal FROM audit WHERE kind = 'policy_change' ORDER BY seq",
    );
    let who: Vec<&str> = rows
        .iter()
        .map(|r| r["principal"].as_str().unwrap())
        .collect();
    assert_eq!(
        who,
        [
            custos_server::SERVER_PRINCIPAL,
            custos_server::SERVER_PRINCIPAL,
            "Custos::User::\"admin\""
        ]
    );
}
