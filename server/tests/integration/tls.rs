//! TLS on every listener and mutual TLS: certificates made in the test, real clients (reqwest,
//! the OpenTelemetry SDK's OTLP/HTTP exporter, tonic), a client certificate standing for a
//! principal, and the clients that must not get in.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use custos_net::ClientTls;
use custos_net::pki::{Authority, Issued};
use opentelemetry::trace::{Tracer as _, TracerProvider as _};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message as _;
use serde_json::Value;

use super::{admin, request, span, start_with};

struct Pki {
    ca: PathBuf,
    server: Issued,
    /// Mapped to `Custos::Service::"otel-collector"` in `[tls.clients]`.
    collector: Issued,
    /// Signed by the CA but not mapped.
    laptop: Issued,
    /// Signed by another CA.
    rogue: Issued,
}

fn pki(dir: &Path) -> Pki {
    let ca = Authority::new("custos test CA").unwrap();
    let other = Authority::new("someone else's CA").unwrap();
    Pki {
        ca: ca.write(&dir.join("ca.pem")).unwrap(),
        server: ca.server(dir, "server").unwrap(),
        collector: ca.client(dir, "collector", "collector-1").unwrap(),
        laptop: ca.client(dir, "laptop", "ops-laptop").unwrap(),
        rogue: other.client(dir, "rogue", "collector-1").unwrap(),
    }
}

fn tls(p: &Pki, client: Option<&Issued>) -> ClientTls {
    ClientTls {
        ca: Some(p.ca.clone()),
        cert: client.map(|c| c.cert.clone()),
        key: client.map(|c| c.key.clone()),
    }
}

fn https(p: &Pki, client: Option<&Issued>) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls(p, client).config().unwrap())
        .build()
        .unwrap()
}

async fn whoami(
    client: &reqwest::Client,
    port: u16,
    token: Option<&str>,
) -> reqwest::Result<(u16, Value)> {
    let mut req = client.get(format!("https://localhost:{port}/api/whoami"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await?;
    let status = res.status().as_u16();
    Ok((status, res.json().await.unwrap_or(Value::Null)))
}

/// A tonic client over TLS, through a connector (tonic's own TLS is not compiled in).
async fn grpc_tls(
    port: u16,
    config: rustls::ClientConfig,
) -> TraceServiceClient<tonic::transport::Channel> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://localhost:{port}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .unwrap();
    TraceServiceClient::new(channel)
}

fn config(p: &Pki) -> String {
    format!(
        "[tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n[tls.clients]\n\"collector-1\" = 'Custos::Service::\"otel-collector\"'\n",
        p.server.cert, p.server.key, p.ca
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_on_every_listener_and_certificates_that_stand_for_a_principal() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let p = pki(certs.path());
    let server = start_with(dir.path(), &config(&p)).await;
    let admin = admin(&server);
    let api = server.api.port();

    // A mapped certificate is the principal it maps to, with no token.
    let collector = https(&p, Some(&p.collector));
    let (status, me) = whoami(&collector, api, None).await.unwrap();
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["principal"], "Custos::Service::\"otel-collector\"");
    // A token wins over the certificate.
    let (status, me) = whoami(&collector, api, Some(&admin)).await.unwrap();
    assert_eq!(
        (status, me["principal"].as_str()),
        (200, Some("Custos::User::\"admin\""))
    );

    // A certificate of the CA that maps to nobody needs a token.
    let laptop = https(&p, Some(&p.laptop));
    let (status, body) = whoami(&laptop, api, None).await.unwrap();
    assert_eq!(status, 401, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("`ops-laptop`") && message.contains("[tls.clients]"),
        "{message}"
    );
    assert_eq!(whoami(&laptop, api, Some(&admin)).await.unwrap().0, 200);

    // No certificate, another CA's certificate, or plain HTTP: no connection at all.
    let anonymous = https(&p, None);
    assert!(whoami(&anonymous, api, Some(&admin)).await.is_err());
    let rogue = https(&p, Some(&p.rogue));
    assert!(whoami(&rogue, api, Some(&admin)).await.is_err());
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{api}/healthz"))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    // Health is open to any client with a certificate, and it speaks TLS like the rest.
    let health = laptop
        .get(format!("https://localhost:{api}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // OTLP/HTTP: the stock SDK exporter over TLS with the collector's certificate, no token.
    let port = server.otlp_http.port();
    let config = tls(&p, Some(&p.collector)).config().unwrap();
    std::thread::spawn(move || {
        let client = reqwest_sdk::blocking::Client::builder()
            .use_preconfigured_tls(config)
            .build()
            .unwrap();
        use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(format!("https://localhost:{port}/v1/traces"))
            .with_http_client(client)
            .build()
            .unwrap();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("tls-sdk")
                    .build(),
            )
            .build();
        let tracer = provider.tracer("custos-test");
        for i in 0..5 {
            tracer.in_span(format!("step-{i}"), |_| {});
        }
        provider.shutdown().unwrap();
    })
    .join()
    .unwrap();
    // Without a certificate the exporter's connection fails; with an unmapped one it is 401.
    let body = request(vec![span(61, 1, "s")]).encode_to_vec();
    let export = |c: &reqwest::Client| {
        c.post(format!("https://localhost:{port}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(body.clone())
            .send()
    };
    assert!(export(&anonymous).await.is_err());
    assert_eq!(export(&laptop).await.unwrap().status(), 401);

    // OTLP/gRPC over TLS: a mapped certificate ingests; an unmapped one is UNAUTHENTICATED.
    let grpc = server.otlp_grpc.port();
    let mut client = grpc_tls(grpc, tls(&p, Some(&p.collector)).config().unwrap()).await;
    client
        .export(request(vec![span(62, 1, "g")]))
        .await
        .unwrap();
    let mut client = grpc_tls(grpc, tls(&p, Some(&p.laptop)).config().unwrap()).await;
    let e = client
        .export(request(vec![span(63, 1, "g")]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");

    // What got in is there, under the certificate's principal's rules, read over HTTPS.
    let rows: Vec<Value> = laptop
        .post(format!("https://localhost:{api}/api/sql"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"sql": "SELECT \
            count(*) FILTER (WHERE service_name = 'tls-sdk') AS sdk, \
            count(*) FILTER (WHERE name = 'g') AS grpc, \
            count(*) FILTER (WHERE name = 's') AS http FROM spans"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = &rows[0];
    assert_eq!(
        (
            row["sdk"].as_i64(),
            row["grpc"].as_i64(),
            row["http"].as_i64()
        ),
        (Some(5), Some(1), Some(0)),
        "{rows:?}"
    );
    server.shutdown().await.unwrap();
}

#[test]
fn tls_settings_are_checked_before_anything_starts() {
    let certs = tempfile::tempdir().unwrap();
    let p = pki(certs.path());
    let check = |text: String| -> String {
        let c: custos_server::Config = toml::from_str(&text).unwrap();
        c.validate().unwrap_err().to_string()
    };
    let e = check(format!("[tls]\ncert = {:?}\n", p.server.cert));
    assert!(e.contains("`tls.cert` and `tls.key` go together"), "{e}");
    let e = check(format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n[tls.clients]\na = 'Custos::User::\"admin\"'\n",
        p.server.cert, p.server.key
    ));
    assert!(e.contains("`tls.client_ca`"), "{e}");
    let e = check(format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n",
        p.server.cert, p.collector.key
    ));
    assert!(e.contains("is the key the certificate's"), "{e}");
    let e = check(format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n",
        certs.path().join("nope.pem"),
        p.server.key
    ));
    assert!(e.contains("nope.pem"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_mapped_to_an_unknown_principal_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let p = pki(certs.path());
    let text = config(&p).replace("otel-collector", "nobody-knows");
    let config: custos_server::Config = toml::from_str(&format!(
        "data_dir = {:?}\n[listen]\notlp_grpc = \"127.0.0.1:0\"\notlp_http = \"127.0.0.1:0\"\napi = \"127.0.0.1:0\"\n[rules]\npolicies = {:?}\n{text}",
        dir.path().display().to_string(),
        super::POLICIES
    ))
    .unwrap();
    let e = custos_server::start(config.validate().unwrap())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("`tls.clients` `collector-1`") && e.contains("nobody-knows"),
        "{e}"
    );
}
