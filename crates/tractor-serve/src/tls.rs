//! TLS for both front ends: the PEM certificate chain and key given by `--tls-cert`/`--tls-key`,
//! served by rustls (ring provider, no OpenSSL) on the REST port and by tonic on the gRPC port.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A client that opens a TCP connection and never finishes the handshake must not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Finished handshakes waiting for the HTTP server to pick them up; accepting stops while it is full.
const ACCEPTED_BACKLOG: usize = 128;

/// The certificate chain and key, read once at start (a rotated Secret reaches the pod as a restart), and the
/// REST port's rustls configuration built from them.
#[derive(Clone)]
pub struct TlsFiles {
    /// The certificate chain, PEM, leaf first.
    pub cert_pem: Vec<u8>,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: Vec<u8>,
    rest: Arc<rustls::ServerConfig>,
}

/// Why TLS could not be set up; names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A file did not hold what it should.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl TlsFiles {
    /// Read and check both files, so a bad Secret fails the pod at start with the file named.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsFiles, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let (cert_pem, key_pem) = (read(cert)?, read(key)?);
        let certs = certs(&cert_pem).map_err(|reason| TlsError::Invalid {
            path: cert.to_owned(),
            reason,
        })?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Invalid {
            path: key.to_owned(),
            reason: format!("no PEM private key: {e}"),
        })?;
        let mut rest = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key_der))
        .map_err(|e| TlsError::Invalid {
            path: key.to_owned(),
            reason: format!("certificate and key do not form a usable identity: {e}"),
        })?;
        // HTTP/1.1 only, as the REST server speaks.
        rest.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsFiles {
            cert_pem,
            key_pem,
            rest: Arc::new(rest),
        })
    }

    /// The rustls configuration for the REST port.
    pub fn rest_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.rest)
    }

    /// tonic's identity for the gRPC port.
    pub fn grpc_identity(&self) -> tonic::transport::Identity {
        tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem)
    }
}

/// The PEM certificate chain's certificates, at least one.
fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate chain: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block found".into());
    }
    Ok(certs)
}

/// A listener for axum that hands out connections whose TLS handshake has finished. Handshakes run in
/// their own tasks, so one slow or hostile client does not stall the others.
pub struct TlsListener {
    accepted: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Start accepting on `tcp` with `config`.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, accepted) = mpsc::channel(ACCEPTED_BACKLOG);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(error) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %error, "accepting a TLS connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Small request/response pairs: Nagle's algorithm with delayed ACKs adds tens of ms.
                let _ = stream.set_nodelay(true);
                if tx.is_closed() {
                    return;
                }
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { accepted, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(c) => c,
            // The accept task only ends when this listener is gone, so this is never reached.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_names_the_path() {
        let err = TlsFiles::load(
            Path::new("/nonexistent/tls.crt"),
            Path::new("/nonexistent/tls.key"),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("/nonexistent/tls.crt"), "{err}");
    }

    #[test]
    fn garbage_certificate_is_refused_with_the_file_named() {
        let dir = std::env::temp_dir().join(format!("tractor-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let cert = dir.join("tls.crt");
        let key = dir.join("tls.key");
        std::fs::write(&cert, "not a certificate").ok();
        std::fs::write(&key, "not a key").ok();
        let err = TlsFiles::load(&cert, &key)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("tls.crt") && err.contains("CERTIFICATE"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
