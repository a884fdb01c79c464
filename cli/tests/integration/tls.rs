//! The CLI against a server that speaks only mutual TLS: `--ca-cert`, `--client-cert`,
//! `--client-key`, a certificate that stands for a principal, and clients that cannot get in.

use std::path::Path;

use custos_net::pki::Authority;

use super::{KillOnDrop, repo, run_in, spawn_with};

#[test]
fn the_cli_reaches_a_server_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let c = certs.path();
    let ca = Authority::new("custos test CA").unwrap();
    let ca_file = ca.write(&c.join("ca.pem")).unwrap();
    let server = ca.server(c, "server").unwrap();
    let sre = ca.client(c, "sre", "sre-laptop").unwrap();
    let other = ca.client(c, "other", "someone").unwrap();
    let config = c.join("custos.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n[tls.clients]\n\"sre-laptop\" = 'Custos::User::\"sam\"'\n",
            server.cert, server.key, ca_file
        ),
    )
    .unwrap();
    let s = spawn_with(dir.path(), &repo(), &["--config", config.to_str().unwrap()]);
    let _guard = KillOnDrop(s.child.id());
    assert!(s.api.starts_with("https://"), "{}", s.api);
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let (ca_arg, sre_cert, sre_key) = (path(&ca_file), path(&sre.cert), path(&sre.key));
    let cli = |client: Option<(&str, &str)>, token: Option<&str>, args: &[&str]| {
        let mut all = vec!["--ca-cert", ca_arg.as_str()];
        if let Some((cert, key)) = client {
            all.extend(["--client-cert", cert, "--client-key", key]);
        }
        if let Some(t) = token {
            all.extend(["--token", t]);
        }
        all.extend(args);
        run_in(&repo(), &all)
    };
    let whoami = [
        "sql",
        "--server",
        s.api.as_str(),
        "--format",
        "json",
        "SELECT 1 AS one",
    ];

    // The mapped certificate is `sam`, who may query: no token needed.
    let (code, out, err) = cli(Some((&sre_cert, &sre_key)), None, &whoami);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("\"one\":1") || out.contains("\"one\": 1"),
        "{out}"
    );
    // An unmapped certificate needs a token, and then it is the token's principal.
    let (other_cert, other_key) = (path(&other.cert), path(&other.key));
    let (code, _, err) = cli(Some((&other_cert, &other_key)), None, &whoami);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("`someone`") && err.contains("[tls.clients]"),
        "{err}"
    );
    let (code, out, err) = cli(Some((&other_cert, &other_key)), Some(&s.token), &whoami);
    assert_eq!(code, Some(0), "{out}{err}");
    // No client certificate: the handshake fails and the CLI says it cannot reach the server.
    let (code, _, err) = cli(None, Some(&s.token), &whoami);
    assert_ne!(code, Some(0));
    assert!(err.contains("cannot reach"), "{err}");
    // A certificate without its key is the user's mistake, said before connecting.
    let (code, _, err) = run_in(
        &repo(),
        &[
            "--ca-cert",
            &ca_arg,
            "--client-cert",
            &sre_cert,
            "sql",
            "--server",
            &s.api,
            "SELECT 1",
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--client-key"), "{err}");
}
