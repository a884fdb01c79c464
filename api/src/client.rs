//! The one HTTP client of the custos API.
//!
//! Every call goes through [`Client::send`], so every caller reports a refusal the same way
//! (the status and the server's `error` message) and builds URLs the same way (each path segment
//! percent-encoded, so a task id or SLO name cannot change the path).

use reqwest::{Method, RequestBuilder, Url};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::types::{
    AuditRecord, CreateToken, Decided, EraseRequest, Erased, Reloaded, ReviewDecision, ReviewTask,
    Reviews, SqlRequest, StartRun, Started, Status, TokenCreated, Tokens, Verification, WhoAmI,
};
use crate::{Error, Result};

/// How to reach a server: who to say you are, which TLS to speak, how long to wait.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// Sent as `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
    /// The CA to trust (the system's when unset) and the client certificate for mutual TLS,
    /// for an `https://` server.
    pub tls: custos_net::ClientTls,
    /// Per-request timeout.
    pub timeout: Option<std::time::Duration>,
}

/// A client of one server's API.
#[derive(Debug, Clone)]
pub struct Client {
    base: Url,
    http: reqwest::Client,
    token: Option<String>,
}

impl Client {
    /// A client of the server at `server` (`http://127.0.0.1:4380`, a path prefix allowed).
    pub fn new(server: &str) -> Result<Self> {
        Self::connect(server, &Connection::default())
    }

    /// A client of the server at `server`, reached as `connection` says. Makes ring the process's
    /// default rustls provider when none is installed (custos-net), so that `https://` works
    /// whatever else the process links.
    pub fn connect(server: &str, connection: &Connection) -> Result<Self> {
        custos_net::tls::install_default_provider();
        let mut builder = reqwest::Client::builder();
        if let Some(t) = connection.timeout {
            builder = builder.timeout(t);
        }
        if connection.tls.is_set() {
            let config = connection
                .tls
                .config()
                .map_err(|e| Error::Tls(e.to_string()))?;
            builder = builder.use_preconfigured_tls(config);
        }
        let http = builder
            .build()
            .map_err(|e| Error::Tls(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self::with_http(server, http)?.with_token(connection.token.clone()))
    }

    /// A client sharing an existing connection pool.
    pub fn with_http(server: &str, http: reqwest::Client) -> Result<Self> {
        let base = Url::parse(server.trim_end_matches('/')).map_err(|e| Error::Url {
            url: server.to_string(),
            reason: e.to_string(),
        })?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(Error::Url {
                url: server.to_string(),
                reason: "use an http:// or https:// URL".into(),
            });
        }
        Ok(Self {
            base,
            http,
            token: None,
        })
    }

    /// The same client, sending `Authorization: Bearer TOKEN` with every request.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.trim().is_empty());
        self
    }

    /// The server's URL as given (without a trailing `/`).
    pub fn server(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `server` + `/api/<segments…>`, each segment percent-encoded.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("api").extend(segments);
        }
        url
    }

    /// Sends `request` to `url`: the answer of a success, the status and the server's `error`
    /// message of a refusal, or why the server could not be reached.
    pub async fn send(&self, url: &Url, request: RequestBuilder) -> Result<reqwest::Response> {
        let request = match &self.token {
            Some(t) => request.bearer_auth(t.trim()),
            None => request,
        };
        let resp = request.send().await.map_err(|cause| Error::Unreachable {
            url: url.to_string(),
            cause,
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let bytes = resp.bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let message = match body.get("error").and_then(Value::as_str) {
            Some(m) => m.to_string(),
            None if body.is_null() => String::from_utf8_lossy(&bytes).into_owned(),
            None => String::new(),
        };
        Err(Error::Refused {
            url: url.to_string(),
            status,
            message,
            body,
        })
    }

    async fn json<T: DeserializeOwned>(&self, url: Url, request: RequestBuilder) -> Result<T> {
        let resp = self.send(&url, request).await?;
        let bytes = resp.bytes().await.map_err(|cause| Error::Unreachable {
            url: url.to_string(),
            cause,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
            url: url.to_string(),
            cause: e.to_string(),
        })
    }

    /// `GET /api/<segments…>?<query>` as `T` (absent query values are left out).
    pub async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, Option<&str>)],
    ) -> Result<T> {
        let mut url = self.url(segments);
        let present: Vec<(&str, &str)> = query
            .iter()
            .filter_map(|(k, v)| v.map(|v| (*k, v)))
            .collect();
        if !present.is_empty() {
            url.query_pairs_mut().extend_pairs(present);
        }
        let request = self.http.get(url.clone());
        self.json(url, request).await
    }

    /// `POST /api/<segments…>` with a JSON body, answered as `T`.
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<T> {
        let url = self.url(segments);
        let request = self.http.request(Method::POST, url.clone()).json(body);
        self.json(url, request).await
    }

    /// `DELETE /api/<segments…>`, answered with no content.
    pub async fn delete(&self, segments: &[&str]) -> Result<()> {
        let url = self.url(segments);
        let request = self.http.request(Method::DELETE, url.clone());
        self.send(&url, request).await.map(|_| ())
    }

    /// `GET /api/whoami`.
    pub async fn whoami(&self) -> Result<WhoAmI> {
        self.get(&["whoami"], &[]).await
    }

    /// `POST /api/tokens`.
    pub async fn create_token(&self, req: &CreateToken) -> Result<TokenCreated> {
        self.post(&["tokens"], req).await
    }

    /// `GET /api/tokens`.
    pub async fn tokens(&self) -> Result<Tokens> {
        self.get(&["tokens"], &[]).await
    }

    /// `DELETE /api/tokens/{id}`.
    pub async fn revoke_token(&self, id: &str) -> Result<()> {
        self.delete(&["tokens", id]).await
    }

    /// `POST /api/reload`: the policies and workflows reloaded from the server's files.
    pub async fn reload(&self) -> Result<Reloaded> {
        self.post(&["reload"], &serde_json::json!({})).await
    }

    /// `POST /api/erase`.
    pub async fn erase(&self, req: &EraseRequest) -> Result<Erased> {
        self.post(&["erase"], req).await
    }

    /// `GET /api/status`.
    pub async fn status(&self) -> Result<Status> {
        self.get(&["status"], &[]).await
    }

    /// `POST /api/sql` answered as JSON rows.
    pub async fn sql(&self, sql: &str) -> Result<Value> {
        self.post(&["sql"], &SqlRequest { sql: sql.into() }).await
    }

    /// `POST /api/sql` answered in the format `accept` names (a content type the server renders:
    /// JSON, NDJSON, CSV, text, Arrow IPC): the answer's bytes.
    pub async fn sql_as(&self, sql: &str, accept: &str) -> Result<Vec<u8>> {
        let url = self.url(&["sql"]);
        let request = self
            .http
            .post(url.clone())
            .header(reqwest::header::ACCEPT, accept)
            .json(&SqlRequest { sql: sql.into() });
        let resp = self.send(&url, request).await?;
        let bytes = resp.bytes().await.map_err(|cause| Error::Unreachable {
            url: url.to_string(),
            cause,
        })?;
        Ok(bytes.to_vec())
    }

    /// `GET /api/reviews` (pending tasks) or, with `all`, `?status=all`.
    pub async fn reviews(&self, all: bool) -> Result<Reviews> {
        let status = all.then_some("all");
        self.get(&["reviews"], &[("status", status)]).await
    }

    /// `GET /api/reviews/{id}`.
    pub async fn review(&self, id: &str) -> Result<ReviewTask> {
        self.get(&["reviews", id], &[]).await
    }

    /// `GET /api/audit/records/{seq}`: one audit record, whole.
    pub async fn audit_record(&self, seq: u64) -> Result<AuditRecord> {
        self.get(&["audit", "records", &seq.to_string()], &[]).await
    }

    /// `POST /api/reviews/{id}/approve` (or `reject`): a person's decision, which the server
    /// authorizes and records.
    pub async fn decide(&self, id: &str, approve: bool, d: &ReviewDecision) -> Result<Decided> {
        let verb = if approve { "approve" } else { "reject" };
        self.post(&["reviews", id, verb], d).await
    }

    /// `POST /api/runs`.
    pub async fn start_run(&self, run: &StartRun) -> Result<Started> {
        self.post(&["runs"], run).await
    }

    /// `GET /api/audit/verify`.
    pub async fn verify_audit(&self) -> Result<Verification> {
        self.get(&["audit", "verify"], &[]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded_and_prefixes_kept() {
        let c = Client::new("http://127.0.0.1:4380/").unwrap();
        assert_eq!(c.server(), "http://127.0.0.1:4380");
        assert_eq!(
            c.url(&["reviews", "a/b?c", "approve"]).as_str(),
            "http://127.0.0.1:4380/api/reviews/a%2Fb%3Fc/approve"
        );
        let p = Client::new("https://example.test/custos").unwrap();
        assert_eq!(
            p.url(&["status"]).as_str(),
            "https://example.test/custos/api/status"
        );
    }

    #[test]
    fn unusable_urls_are_refused() {
        for bad in [
            "",
            "127.0.0.1:4380",
            "mailto:ops@example.test",
            "ftp://host/",
        ] {
            let e = Client::new(bad).unwrap_err();
            assert!(matches!(e, Error::Url { .. }), "{bad}: {e}");
            assert!(e.to_string().starts_with("invalid server URL"), "{e}");
        }
    }

    #[tokio::test]
    async fn refusals_carry_status_and_message_and_unreachable_says_where() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await.unwrap();
            let body = r#"{"error":"no review task `t9`"}"#;
            let answer = format!(
                "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(answer.as_bytes()).await.unwrap();
        });
        let c = Client::new(&format!("http://{addr}")).unwrap();
        let e = c.review("t9").await.unwrap_err();
        server.await.unwrap();
        assert_eq!(e.status(), Some(reqwest::StatusCode::NOT_FOUND));
        assert!(e.is_client_error());
        assert_eq!(e.message(), "no review task `t9`");
        assert_eq!(
            e.to_string(),
            format!("`http://{addr}/api/reviews/t9` answered 404 Not Found: no review task `t9`")
        );
        // Nothing listens there any more.
        let e = c.status().await.unwrap_err();
        assert!(matches!(e, Error::Unreachable { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("cannot reach `http://{addr}/api/status`"))
        );
    }
}
