//! The HTTP API's OpenAPI 3.1 document, `GET /api/openapi.json`.
//!
//! Each handler carries its `#[utoipa::path]` (method, path, parameters, body, answers) and the
//! router is assembled from those annotations (`utoipa-axum`), so a route cannot be served
//! without being described. The request and answer types come from `custos-api`; answers whose
//! shape the analytics engine owns (metric, threshold, SLO and gate reports) are described as
//! JSON objects with a pointer to their docs. What every authenticated route can answer (401,
//! 403, 429 for repeated bad tokens, 500 when a decision cannot be recorded) is added here once.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

/// The document's fixed parts; the paths come from the router (`super::api_router`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "custos",
        description = "The custos HTTP API: SQL and metrics over automation telemetry, SLOs, \
                       the deploy gate, policy decisions, the audit trail, runs and reviews, \
                       tokens. Every route but `/healthz` and `/readyz` takes a bearer token \
                       (`Authorization: Bearer ...`); the policies decide what it may do \
                       (docs/governance.md). Errors answer `{\"error\": \"...\"}`."
    ),
    // Schemas named only by a derived answer set (`IntoResponses` registers none itself).
    components(schemas(custos_api::ErrorBody, custos_api::Decided)),
    security(("bearer" = [])),
    tags(
        (name = "analytics", description = "SQL, metrics, thresholds and SLOs (docs/metrics.md)"),
        (name = "governance", description = "Policy decisions, the deploy gate, reloads and the audit trail (docs/governance.md, docs/ci.md)"),
        (name = "privacy", description = "Erasure (docs/privacy.md)"),
        (name = "runs", description = "Runs of deployed workflows and their human reviews (docs/executor.md)"),
        (name = "status", description = "Health, readiness, status and Prometheus metrics (docs/operations.md)"),
        (name = "tokens", description = "Bearer tokens (docs/governance.md)"),
    )
)]
pub(crate) struct ApiDoc;

/// Adds the bearer scheme and the answers every authenticated route shares; applied to the
/// assembled document (`super::openapi`), after the routes have added their paths.
pub(crate) struct Common;

impl Modify for Common {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A custos token (`custos token create`)"))
                    .build(),
            ),
        );
        let error = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            )
        };
        for (path, item) in api.paths.paths.iter_mut() {
            let open = crate::auth::open_path(path, false);
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                let answers = &mut op.responses.responses;
                answers.entry("500".into()).or_insert_with(|| {
                    error("The server failed; for decisions and writes, a deny that could not be recorded")
                });
                if open {
                    continue;
                }
                answers.entry("401".into()).or_insert_with(|| {
                    error("No token, or one that is unknown, expired or revoked")
                });
                answers.entry("403".into()).or_insert_with(|| {
                    error("The policies deny the caller this action (recorded)")
                });
                answers.entry("429".into()).or_insert_with(|| {
                    error("Too many failed tokens from this address, or every query slot taken: retry after `Retry-After` seconds")
                });
            }
        }
    }
}

/// `GET /api/openapi.json`: the document, for any authenticated caller. It is a constant of the
/// binary, rendered once.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "status",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = serde_json::Value))
)]
pub(crate) async fn document() -> axum::response::Response {
    use axum::response::IntoResponse;
    static DOC: std::sync::OnceLock<bytes::Bytes> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| {
        serde_json::to_vec(&super::openapi_document())
            .map(bytes::Bytes::from)
            .unwrap_or_default()
    });
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        doc.clone(),
    )
        .into_response()
}
