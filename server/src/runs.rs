//! The reference executor inside the server: the workflows of its `[executor] workflows`
//! directory, journaled in `DATA/executor/journal.redb`, unfinished runs resumed at start, overdue
//! reviews timed out every second, and the runs' spans sent to its own OTLP/HTTP receiver unless
//! `[executor] otlp` names another collector. The routes are in `routes/runs.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use custos_executor::telemetry::Telemetry;
use custos_executor::{Executor, ExecutorOptions};
use custos_policy::live::Live;

use crate::config::ExecutorSettings;
use crate::{Error, Result};

/// Deployed workflows by name: (definition text, file).
pub type Workflows = BTreeMap<String, (String, String)>;

/// The executor and the workflows it may run.
pub struct Runner {
    /// The executor.
    pub executor: Arc<Executor>,
    /// Where the definitions are read from (at start and at every reload).
    pub dir: PathBuf,
    /// The deployed workflows; a reload replaces them whole. Runs already started keep the
    /// definition they started with (the journal holds it).
    workflows: RwLock<Arc<Workflows>>,
    /// How long finished runs keep their data in the journal.
    pub retention: Duration,
}

impl Runner {
    /// The deployed workflows now.
    pub fn workflows(&self) -> Arc<Workflows> {
        match self.workflows.read() {
            Ok(w) => w.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Deploys `workflows` for every later start.
    pub fn replace_workflows(&self, workflows: Workflows) {
        let new = Arc::new(workflows);
        match self.workflows.write() {
            Ok(mut w) => *w = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }

    /// Each deployed workflow's definition text, for the change records.
    pub fn definitions(&self) -> BTreeMap<String, String> {
        definitions(&self.workflows())
    }
}

/// Each workflow's definition text.
pub fn definitions(workflows: &Workflows) -> BTreeMap<String, String> {
    workflows
        .iter()
        .map(|(name, (text, _))| (name.clone(), text.clone()))
        .collect()
}

/// Reads and validates every `*.yaml`/`*.yml` definition of `dir`; any invalid one is an error.
pub fn load_workflows(dir: &Path) -> Result<Workflows> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::Config(format!(
            "cannot read workflow directory `{}`: {e}",
            dir.display()
        ))
    })?;
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    paths.sort();
    let mut out = BTreeMap::new();
    for p in paths {
        let w = custos_executor::workflow::load(&p).map_err(|e| Error::Config(e.to_string()))?;
        let text = std::fs::read_to_string(&p)
            .map_err(|e| Error::Config(format!("cannot read `{}`: {e}", p.display())))?;
        if let Some((_, other)) = out.insert(w.file.name.clone(), (text, p.display().to_string())) {
            return Err(Error::Config(format!(
                "workflow `{}` is defined twice: `{other}` and `{}`",
                w.file.name,
                p.display()
            )));
        }
    }
    Ok(out)
}

/// Opens the executor when workflows are configured.
pub fn open(
    settings: &ExecutorSettings,
    data_dir: &Path,
    engine: Option<Live>,
    own_receiver: Arc<dyn opentelemetry_http::HttpClient>,
    token: &str,
    scrub: custos_audit::Scrub,
) -> Result<Option<Arc<Runner>>> {
    let Some(dir) = &settings.workflows else {
        return Ok(None);
    };
    let workflows = load_workflows(dir)?;
    // The process token is good only for the own receiver: another collector gets the standard
    // `OTEL_EXPORTER_OTLP_HEADERS` instead.
    let telemetry = match &settings.otlp {
        Some(endpoint) => Telemetry::otlp(endpoint, "custos-executor", None),
        None => Telemetry::otlp_via(own_receiver, "custos-executor", token),
    }
    .map_err(|e| Error::Config(format!("`executor.otlp`: {e}")))?;
    let executor = Executor::open(ExecutorOptions {
        data_dir: data_dir.to_path_buf(),
        engine,
        telemetry,
        principal: "executor".into(),
        scrub: Some(scrub),
    })
    .map_err(Error::Executor)?;
    Ok(Some(Arc::new(Runner {
        executor,
        dir: dir.clone(),
        workflows: RwLock::new(Arc::new(workflows)),
        retention: settings.journal_retention,
    })))
}

/// Resumes unfinished runs, then times out overdue reviews every second and applies the
/// journal's retention, until `stop`.
pub async fn background(
    runner: Arc<Runner>,
    audit: Arc<custos_audit::AuditLog>,
    stop: impl std::future::Future<Output = ()>,
) {
    let reviews = async {
        match custos_executor::batch::resume(&runner.executor, 16).await {
            Ok(s) if !s.runs.is_empty() => {
                tracing::info!(runs = s.runs.len(), "resumed unfinished runs");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot resume runs"),
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            match runner
                .executor
                .expire_reviews(custos_executor::now_ms())
                .await
            {
                Ok(moved) => {
                    for id in moved {
                        spawn_drive(&runner, id);
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot time out reviews"),
            }
        }
    };
    let retention = async {
        // Often enough that nothing stays much past its retention, at most hourly.
        let every = (runner.retention / 2).clamp(Duration::from_secs(1), Duration::from_secs(3600));
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = apply_retention(&runner, &audit).await {
                tracing::error!(error = %e, "cannot apply the journal's retention");
            }
        }
    };
    tokio::select! {
        _ = stop => {}
        _ = reviews => {}
        _ = retention => {}
    }
}

/// Clears the data of runs finished longer ago than the retention and records it (as the
/// server) when there were any.
pub async fn apply_retention(
    runner: &Runner,
    audit: &custos_audit::AuditLog,
) -> Result<custos_executor::erase::Forgotten> {
    let ms = i64::try_from(runner.retention.as_millis()).unwrap_or(i64::MAX);
    let what = custos_executor::erase::Forget {
        finished_before_ms: Some(custos_executor::now_ms().saturating_sub(ms)),
        ..Default::default()
    };
    let ex = &runner.executor;
    let done = custos_executor::erase::forget(ex.journal(), ex.connectors(), &what)
        .await
        .map_err(Error::Executor)?;
    if !done.runs.is_empty() {
        crate::erase::record(
            audit,
            "retention",
            crate::SERVER_PRINCIPAL,
            serde_json::json!({
                "journal_retention_secs": runner.retention.as_secs(),
                "runs": done.runs,
                "reviews": done.reviews,
                "connector_records": done.connector_records,
            }),
        )?;
        tracing::info!(
            runs = done.runs.len(),
            "cleared finished runs past the journal's retention"
        );
    }
    Ok(done)
}

pub(crate) fn spawn_drive(runner: &Arc<Runner>, run_id: String) {
    let ex = runner.executor.clone();
    tokio::spawn(async move {
        if let Err(e) = ex.drive(&run_id).await {
            tracing::error!(run = %run_id, error = %e, "run failed to progress");
        }
    });
}
