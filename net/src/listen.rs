//! A TCP listener that may speak TLS, handing on each connection with who is on the other end.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::tls::{ServerTls, common_name};

/// How long a client has to finish its TLS handshake before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in flight at once; connections beyond are closed at once (a flood of silent
/// clients costs sockets for [`HANDSHAKE_TIMEOUT`], not unbounded tasks).
pub const MAX_HANDSHAKES: usize = 1024;

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// Under mutual TLS, the subject common name of the certificate the client presented
    /// (verified against the client CA during the handshake).
    pub certificate: Option<String>,
}

/// One accepted connection: plain TCP or TLS over it.
pub struct Conn {
    io: Io,
    peer: Peer,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    /// Who is on the other end.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

/// Accepts connections; with TLS, handshakes run in their own tasks and finished ones queue.
pub struct Listener {
    local: SocketAddr,
    kind: Kind,
}

enum Kind {
    Plain(TcpListener),
    Tls {
        ready: mpsc::Receiver<Conn>,
        acceptor: JoinHandle<()>,
    },
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Kind::Tls { acceptor, .. } = &self.kind {
            acceptor.abort();
        }
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("local", &self.local)
            .field("tls", &self.is_tls())
            .finish()
    }
}

impl Listener {
    /// Serves `tcp`, with TLS when `tls` is given. With TLS this spawns the accepting task, so
    /// it must be called inside a Tokio runtime.
    pub fn new(tcp: TcpListener, tls: Option<&ServerTls>) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let kind = match tls {
            None => Kind::Plain(tcp),
            Some(tls) => {
                let (tx, ready) = mpsc::channel(64);
                let acceptor = tokio::spawn(accept_tls(tcp, tls.acceptor(), tx));
                Kind::Tls { ready, acceptor }
            }
        };
        Ok(Self { local, kind })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Whether connections speak TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.kind, Kind::Tls { .. })
    }

    /// The next connection. Accept errors are logged and retried, as axum's listener does.
    pub async fn next(&mut self) -> Conn {
        loop {
            match &mut self.kind {
                Kind::Plain(tcp) => match tcp.accept().await {
                    Ok((stream, addr)) => {
                        let _ = stream.set_nodelay(true);
                        return Conn {
                            io: Io::Plain(stream),
                            peer: Peer {
                                addr,
                                certificate: None,
                            },
                        };
                    }
                    Err(e) => accept_failed(e).await,
                },
                Kind::Tls { ready, .. } => match ready.recv().await {
                    Some(conn) => return conn,
                    // The accepting task ended (it only does when the runtime shuts down).
                    None => std::future::pending::<()>().await,
                },
            }
        }
    }

    /// The connections as a stream, for tonic's `serve_with_incoming`.
    pub fn incoming(self) -> impl Stream<Item = io::Result<Conn>> + Send + 'static {
        futures::stream::unfold(self, |mut l| async move {
            let conn = l.next().await;
            Some((Ok(conn), l))
        })
    }
}

async fn accept_failed(e: io::Error) {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    // Out of file descriptors and the like: wait instead of spinning.
    tracing::error!("accepting a connection failed: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn accept_tls(tcp: TcpListener, acceptor: TlsAcceptor, ready: mpsc::Sender<Conn>) {
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let accepted = tokio::select! {
            _ = ready.closed() => return,
            r = tcp.accept() => r,
        };
        let (stream, addr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                accept_failed(e).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%addr, "{MAX_HANDSHAKES} TLS handshakes in flight: connection closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let certificate = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| common_name(c));
                    let conn = Conn {
                        io: Io::Tls(Box::new(tls)),
                        peer: Peer { addr, certificate },
                    };
                    let _ = ready.send(conn).await;
                }
                Ok(Err(e)) => tracing::debug!(%addr, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for Listener {
    type Io = Conn;
    type Addr = Peer;

    async fn accept(&mut self) -> (Conn, Peer) {
        let conn = self.next().await;
        let peer = conn.peer.clone();
        (conn, peer)
    }

    fn local_addr(&self) -> io::Result<Peer> {
        Ok(Peer {
            addr: self.local,
            certificate: None,
        })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Listener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Listener>) -> Self {
        stream.remote_addr().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientTls;
    use crate::pki::Authority;
    use rustls_pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Setup {
        _dir: tempfile::TempDir,
        client: ClientTls,
        anonymous: ClientTls,
        listener: Listener,
    }

    async fn setup(mutual: bool) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("test CA").unwrap();
        let ca_file = ca.write(&dir.path().join("ca.pem")).unwrap();
        let server = ca.server(dir.path(), "server").unwrap();
        let client = ca.client(dir.path(), "client", "otel-collector").unwrap();
        let tls = ServerTls::load(
            &server.cert,
            &server.key,
            mutual.then_some(ca_file.as_path()),
        )
        .unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Setup {
            client: ClientTls {
                ca: Some(ca_file.clone()),
                cert: Some(client.cert),
                key: Some(client.key),
            },
            anonymous: ClientTls {
                ca: Some(ca_file),
                ..Default::default()
            },
            listener: Listener::new(tcp, Some(&tls)).unwrap(),
            _dir: dir,
        }
    }

    async fn connect(
        addr: SocketAddr,
        tls: &ClientTls,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls.config().unwrap()));
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").unwrap();
        let mut s = connector.connect(name, tcp).await?;
        // TLS 1.3 reports a refused client certificate on the first read, not in connect.
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"pong");
        Ok(s)
    }

    /// Answers `ping` with `pong` on every connection, reporting each peer.
    fn serve(mut l: Listener) -> mpsc::UnboundedReceiver<Peer> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let mut c = l.next().await;
                let _ = tx.send(c.peer().clone());
                tokio::spawn(async move {
                    let mut buf = [0u8; 4];
                    if c.read_exact(&mut buf).await.is_ok() {
                        let _ = c.write_all(b"pong").await;
                    }
                });
            }
        });
        rx
    }

    #[tokio::test]
    async fn mutual_tls_names_the_client_certificate() {
        let s = setup(true).await;
        let addr = s.listener.local_addr();
        assert!(s.listener.is_tls());
        let mut peers = serve(s.listener);
        connect(addr, &s.client).await.unwrap();
        let peer = peers.recv().await.unwrap();
        assert_eq!(peer.certificate.as_deref(), Some("otel-collector"));
        assert_eq!(peer.addr.ip(), addr.ip());
    }

    #[tokio::test]
    async fn mutual_tls_refuses_a_client_without_a_certificate() {
        let s = setup(true).await;
        let addr = s.listener.local_addr();
        let mut peers = serve(s.listener);
        let refused = connect(addr, &s.anonymous).await;
        assert!(
            refused.is_err(),
            "a client without a certificate got through"
        );
        // The refused client never reached the server; the next good one does.
        connect(addr, &s.client).await.unwrap();
        let peer = peers.recv().await.unwrap();
        assert_eq!(peer.certificate.as_deref(), Some("otel-collector"));
    }

    #[tokio::test]
    async fn one_way_tls_has_no_certificate_and_plain_clients_fail() {
        let s = setup(false).await;
        let addr = s.listener.local_addr();
        let mut peers = serve(s.listener);
        connect(addr, &s.anonymous).await.unwrap();
        assert_eq!(peers.recv().await.unwrap().certificate, None);
        // Plain text on a TLS port is a failed handshake, not a connection.
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = Vec::new();
        let _ = plain.read_to_end(&mut buf).await;
        assert!(!buf.starts_with(b"HTTP"), "{buf:?}");
        assert!(peers.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_silent_client_does_not_hold_up_the_next() {
        let s = setup(true).await;
        let addr = s.listener.local_addr();
        let mut peers = serve(s.listener);
        let _silent = TcpStream::connect(addr).await.unwrap();
        let started = std::time::Instant::now();
        connect(addr, &s.client).await.unwrap();
        assert!(peers.recv().await.is_some());
        assert!(started.elapsed() < HANDSHAKE_TIMEOUT / 2);
    }

    #[tokio::test]
    async fn bad_files_say_which_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("test CA").unwrap();
        let a = ca.server(dir.path(), "a").unwrap();
        let b = ca.server(dir.path(), "b").unwrap();
        let missing = dir.path().join("missing.pem");
        let e = ServerTls::load(&missing, &a.key, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls.cert") && e.contains("missing.pem"), "{e}");
        let e = ServerTls::load(&a.key, &a.key, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("BEGIN CERTIFICATE"), "{e}");
        let e = ServerTls::load(&a.cert, &a.cert, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls.key") && e.contains("PRIVATE KEY"), "{e}");
        let e = ServerTls::load(&a.cert, &b.key, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is the key the certificate's"), "{e}");
        let half = ClientTls {
            cert: Some(a.cert.clone()),
            ..Default::default()
        };
        let e = half.config().unwrap_err().to_string();
        assert!(e.contains("--client-key"), "{e}");
    }
}
