//! TLS configurations from PEM files, with the ring crypto provider chosen explicitly.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::{Error, Result};

/// The crypto provider of every TLS configuration custos makes: ring. The dependency tree also
/// holds aws-lc-rs (through object_store), so nothing is left to rustls' process default.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process default, for clients built by libraries that ask rustls for the default
/// (reqwest without a preconfigured TLS). Idempotent; the binary calls it once at start.
pub fn install_default_provider() {
    if CryptoProvider::get_default().is_none() {
        // Losing a race to another thread installing the same provider is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|cause| Error::Read {
        what,
        path: path.to_path_buf(),
        cause,
    })
}

/// Every certificate in a PEM file (a chain, or a bundle of CAs); at least one.
pub fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem {
            what,
            path: path.to_path_buf(),
            reason: format!("not a PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(Error::Pem {
            what,
            path: path.to_path_buf(),
            reason: "holds no `-----BEGIN CERTIFICATE-----` block".into(),
        });
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>> {
    let bytes = read(what, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| Error::Pem {
        what,
        path: path.to_path_buf(),
        reason: format!(
            "no private key found ({e}); give a PEM file with a `PRIVATE KEY` block (PKCS#8, RSA or EC)"
        ),
    })
}

fn roots(what: &'static str, path: &Path) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    for cert in certificates(what, path)? {
        store.add(cert).map_err(|e| Error::Pem {
            what,
            path: path.to_path_buf(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(store)
}

/// The subject common name of a DER certificate, if it has one.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// A listener's TLS: the server certificate and, for mutual TLS, the CA client certificates
/// must be signed by.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    mutual: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads `cert` (the server's certificate chain, leaf first), `key`, and with `client_ca`
    /// requires every client to present a certificate that CA signed. ALPN offers HTTP/2 and
    /// HTTP/1.1.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self> {
        let chain = certificates("tls.cert", cert)?;
        let key = private_key("tls.key", key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(e.to_string()))?;
        let builder = match client_ca {
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots("tls.client_ca", ca)?),
                    provider(),
                )
                .build()
                .map_err(|e| Error::Config(format!("`tls.client_ca` `{}`: {e}", ca.display())))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| {
            Error::Config(format!(
                "`tls.cert` `{}` and `tls.key`: {e} (is the key the certificate's?)",
                cert.display()
            ))
        })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            mutual: client_ca.is_some(),
        })
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.mutual
    }

    /// The acceptor handshakes run with.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }
}

/// A client's TLS: which CAs to trust (the system's when none is given) and, for mutual TLS,
/// the certificate and key to present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM file of the CA(s) that signed the server's certificate.
    pub ca: Option<PathBuf>,
    /// PEM file of the client certificate (chain) to present.
    pub cert: Option<PathBuf>,
    /// PEM file of that certificate's private key.
    pub key: Option<PathBuf>,
}

impl ClientTls {
    /// Whether anything is set (otherwise the system's defaults apply).
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// The rustls client configuration, ALPN offering HTTP/2 and HTTP/1.1.
    pub fn config(&self) -> Result<ClientConfig> {
        let roots = match &self.ca {
            Some(ca) => roots("CA certificate", ca)?,
            None => {
                let mut store = RootCertStore::empty();
                let (added, _) =
                    store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                if added == 0 {
                    return Err(Error::Config(
                        "no CA certificates found on this system; name the server's CA with `--ca-cert FILE`".into(),
                    ));
                }
                store
            }
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(
                    certificates("client certificate", cert)?,
                    private_key("client key", key)?,
                )
                .map_err(|e| {
                    Error::Config(format!("client certificate `{}`: {e}", cert.display()))
                })?,
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(Error::Config(
                    "a client certificate needs its key and a key its certificate: give both `--client-cert` and `--client-key`".into(),
                ));
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}
