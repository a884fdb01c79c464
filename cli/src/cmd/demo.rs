//! `custos demo`: the whole loop in one command, on a fresh data directory.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use custos_executor::telemetry::Telemetry;

use super::{engine, user};
use crate::flags::{DemoArgs, Source};

/// Runs `custos demo`.
pub async fn run(a: DemoArgs) -> Result<ExitCode> {
    let data = a.data.unwrap_or_else(|| PathBuf::from("./custos-demo"));
    demo(data, a.runs, a.keep_serving).await
}

const DEMO_SCENARIO: &str = include_str!("../../../fixtures/scenarios/demo.yaml");

const DEMO_MARKER: &str = ".custos-demo";

fn heading(s: &str) {
    println!("\n== {s} {}", "=".repeat(76usize.saturating_sub(s.len())));
}

/// The demo's own tokens, one per role it plays (made before its server starts, so the server
/// reads them at once).
struct DemoTokens {
    executor: String,
    sre: String,
    ci: String,
}

fn demo_tokens(data: &Path) -> Result<DemoTokens> {
    use custos_governance::tokens::{Request, create, local_actor};
    let engine = custos_policy::engine::Engine::load(Path::new("rules/policy"))?;
    let file = custos_auth::TokenFile::new(data);
    let audit = custos_audit::AuditLog::open(&custos_server::audit_dir(data))?;
    let make = |principal: &str, note: &str| -> Result<String> {
        let req = Request {
            principal: principal.into(),
            expires: None,
            note: format!("custos demo: {note}"),
        };
        Ok(create(&engine, &file, &audit, &local_actor(), &req)?
            .0
            .token)
    };
    Ok(DemoTokens {
        executor: make(
            "Custos::Service::\"executor\"",
            "the simulated executor's spans",
        )?,
        sre: make("Custos::User::\"sam\"", "metrics and SLOs")?,
        ci: make("Custos::Service::\"ci\"", "the deploy gate")?,
    })
}

async fn demo(data: PathBuf, runs: usize, keep_serving: bool) -> Result<ExitCode> {
    prepare(&data)?;
    let tokens = demo_tokens(&data)?;
    let started = std::time::Instant::now();
    let mut options = custos_server::Config::default().validate()?;
    options.store.data_dir = data.clone();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse()?;
    options.otlp_grpc = any;
    options.otlp_http = any;
    options.api = any;
    options.executor.workflows = None;
    let server = custos_server::start(options).await?;
    let api = format!("http://{}", server.api);
    println!(
        "custos demo: server on {api} (OTLP/HTTP {}), data in `{}`",
        server.otlp_http,
        data.display()
    );
    simulate_runs(
        &format!("http://{}", server.otlp_http),
        &data,
        runs,
        &tokens.executor,
    )
    .await?;
    super::set_token(Some(tokens.sre.clone()));
    let source = |server: &str| Source {
        data: None,
        server: Some(server.to_string()),
        prices: None,
    };
    heading("metrics (last hour, by workflow)");
    super::metrics::metrics(source(&api), "1h", "workflow", "table", None).await?;
    heading("SLOs (rules/slos.yaml)");
    super::slo::slo(source(&api), None, None, "table").await?;
    super::set_token(Some(tokens.ci.clone()));
    gates(&api, &data).await?;
    server.shutdown().await?;
    heading("audit trail");
    super::audit::audit_verify(Some(data.clone()), None, "text")?;
    heading("next");
    println!(
        "finished in {:.0} s. Explore the same data:\n  custos serve --data {d}            # the API on http://127.0.0.1:4380 (an admin token is in {d}/auth/admin.token)\n  custos top --token \"$(cat {d}/auth/admin.token)\"   # the terminal dashboard of that server (? for keys)\n  custos sql --data {d} \"SELECT workflow, outcome, count(*) FROM runs GROUP BY 1, 2 ORDER BY 1, 2\"\n  custos metrics --data {d} --by version\n  custos audit report --data {d} --from 2020-01-01 --to 2100-01-01 --out report",
        started.elapsed().as_secs_f64(),
        d = data.display()
    );
    if keep_serving {
        let mut options = custos_server::Config::default().validate()?;
        options.store.data_dir = data.clone();
        let server = custos_server::start(options).await?;
        println!(
            "serving `{}` on http://{} (Ctrl-C to stop); an admin token is in `{}`",
            data.display(),
            server.api,
            custos_auth::auth_dir(&data)
                .join(custos_server::ADMIN_TOKEN_FILE)
                .display()
        );
        super::serve::wait_for_signal().await?;
        server.shutdown().await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks that the demo runs from the checkout and makes `data` a fresh demo directory (an
/// earlier demo's is replaced; anything else is refused).
fn prepare(data: &Path) -> Result<()> {
    for needed in ["rules/policy", "rules/slos.yaml", "fixtures/workflows"] {
        if !Path::new(needed).exists() {
            return Err(user(format!(
                "`{needed}` is missing: run `custos demo` from the custos checkout"
            )));
        }
    }
    if data.exists() {
        if data.join(DEMO_MARKER).exists() {
            std::fs::remove_dir_all(data)
                .with_context(|| format!("cannot remove the earlier demo `{}`", data.display()))?;
        } else if std::fs::read_dir(data)?.next().is_some() {
            return Err(user(format!(
                "`{}` exists and is not a demo directory; pass --data with a new directory",
                data.display()
            )));
        }
    }
    std::fs::create_dir_all(data)?;
    std::fs::write(data.join(DEMO_MARKER), "created by custos demo\n")?;
    Ok(())
}

/// Simulates `runs` runs of the fixture workflows with the demo scenario, their telemetry sent
/// to `otlp_http`.
async fn simulate_runs(otlp_http: &str, data: &Path, runs: usize, token: &str) -> Result<()> {
    use custos_executor::simulate::{Scenario, SimulateOptions};
    println!(
        "simulating {runs} runs of support-triage and invoice-processing (canary prompts: support-triage v2 healthy, invoice-processing v2 regressing) ..."
    );
    let scenario = Scenario::parse(DEMO_SCENARIO, "fixtures/scenarios/demo.yaml")?;
    let telemetry = Telemetry::otlp(otlp_http, "custos-executor", Some(token))?;
    let engine = engine(Path::new("rules/policy"))?;
    let report = custos_executor::simulate::simulate(SimulateOptions {
        workflows: PathBuf::from("fixtures/workflows"),
        runs,
        rate: None,
        seed: 7,
        scenario,
        data_dir: data.to_path_buf(),
        engine,
        telemetry: telemetry.clone(),
        concurrency: 32,
    })
    .await?;
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .context("telemetry task failed")??;
    super::simulate::print_simulation(&report);
    Ok(())
}

/// Asks the deploy gate about each workflow's canary prompt (v1 to v2).
async fn gates(api: &str, data: &Path) -> Result<()> {
    for (workflow, step) in [
        ("support-triage", "classify"),
        ("invoice-processing", "extract"),
    ] {
        heading(&format!("deploy gate: {workflow} prompt v1 -> v2"));
        let change = data.join(format!("change-{workflow}.yaml"));
        std::fs::write(
            &change,
            format!(
                "change: prompt\nworkflow: {workflow}\nstep: {step}\ncurrent: v1\ncandidate: v2\nrequested_by: Custos::Service::\"ci\"\ncanary: {{last: 1h}}\ndescription: custos demo canary\n"
            ),
        )?;
        super::gate::gate(
            &change,
            None,
            Some(api.to_string()),
            Path::new("rules/policy"),
            None,
            None,
            "text",
        )
        .await?;
    }
    Ok(())
}
