//! Optional TLS for the web server, with a certificate and key the owner provides (PEM files
//! named by `[web] tls_cert` and `tls_key`).
//!
//! rustls with its ring provider does the cryptography; tokio-rustls the handshake. Handshakes
//! run on their own tasks behind [`TlsListener`] (a slow or silent client holds up nobody), and
//! the finished streams go to `axum::serve` like plain TCP connections, so the server stops
//! with the node exactly as the plain one does. A connection that does not start a TLS
//! handshake (plain HTTP to the HTTPS port) is closed without an answer.

use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, warn};

/// Why the web server's certificate and key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Only one of the two files is set.
    #[error(
        "[web] tls_cert and tls_key go together: set both (PEM files) for HTTPS, or neither for \
         plain HTTP"
    )]
    OnlyOne,
    /// A file cannot be read.
    #[error("cannot read the web UI's TLS {what} {path}: {source}")]
    Read {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A file is not PEM, or holds nothing of the kind wanted.
    #[error("the web UI's TLS {what} {path} is not usable PEM: {message}")]
    NotPem {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key is not the certificate's.
    #[error(
        "the web UI's TLS key {key} does not match the certificate {cert} (the key's public key \
         is not the one the certificate names)"
    )]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refuses the pair for another reason (an unsupported key type, say).
    #[error("the web UI's TLS certificate {cert} and key {key} cannot be used: {message}")]
    Unusable {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        message: String,
    },
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn not_pem(what: &'static str, path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::NotPem {
        what,
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Loads a PEM certificate chain (the node's certificate first, then any intermediates) and
/// its PEM private key (PKCS#8, PKCS#1 or SEC1), checks that they belong together, and makes
/// the server's TLS configuration (TLS 1.3 and 1.2, HTTP/1.1).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_pem = read("certificate", cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| not_pem("certificate", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(not_pem(
            "certificate",
            cert,
            "it holds no -----BEGIN CERTIFICATE----- block",
        ));
    }
    let key_pem = read("key", key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => not_pem(
            "key",
            key,
            "it holds no -----BEGIN PRIVATE KEY----- (or RSA / EC PRIVATE KEY) block",
        ),
        e => not_pem("key", key, e.to_string()),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let unusable = |e: rustls::Error| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsError::Mismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            }
        }
        e => TlsError::Unusable {
            cert: cert.to_owned(),
            key: key.to_owned(),
            message: e.to_string(),
        },
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(unusable)?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(unusable)?;
    // The server speaks HTTP/1.1 only (axum's http1 feature).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How long a client may take over its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most handshakes in progress at once; further connections wait to be accepted.
const MAX_HANDSHAKES: usize = 64;

/// A listener whose connections are TLS streams, for `axum::serve`. Handshakes run on their
/// own tasks; dropping the listener (the server stopping) closes the socket.
#[derive(Debug)]
pub(crate) struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub(crate) fn new(listener: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(16);
        let acceptor = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), tx));
        Ok(TlsListener {
            local,
            ready,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let limit = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // As axum's own listener: a failed connection is nothing; anything else (out
                // of file descriptors) waits a moment before trying again.
                use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
                if !matches!(
                    e.kind(),
                    ConnectionRefused | ConnectionAborted | ConnectionReset
                ) {
                    warn!("web UI: accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
        };
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            let shake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
            drop(permit);
            match shake {
                Ok(Ok(tls)) => {
                    // Fails only when the server has stopped: the connection just closes.
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => debug!(%peer, "web UI: TLS handshake failed: {e}"),
                Err(_) => debug!(%peer, "web UI: TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept loop only ends when aborted, that is when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn a_matching_pair_loads_and_bad_ones_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path(), "a");
        let (_, other_key) = pair(dir.path(), "b");
        let config = server_config(&cert, &key).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);

        let missing = dir.path().join("missing.crt");
        let err = server_config(&missing, &key).unwrap_err();
        assert!(matches!(
            err,
            TlsError::Read {
                what: "certificate",
                ..
            }
        ));
        let msg = err.to_string();
        assert!(
            msg.contains("missing.crt") && msg.contains("cannot read"),
            "{msg}"
        );
        let err = server_config(&cert, &dir.path().join("missing.key")).unwrap_err();
        assert!(matches!(err, TlsError::Read { what: "key", .. }), "{err}");

        let err = server_config(&cert, &other_key).unwrap_err();
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("b.key") && msg.contains("does not match"),
            "{msg}"
        );

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let err = server_config(&junk, &key).unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::NotPem {
                    what: "certificate",
                    ..
                }
            ),
            "{err}"
        );
        // The certificate where the key should be, and the reverse.
        let err = server_config(&cert, &cert).unwrap_err();
        assert!(matches!(err, TlsError::NotPem { what: "key", .. }), "{err}");
        assert!(err.to_string().contains("PRIVATE KEY"), "{err}");
        let err = server_config(&key, &key).unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::NotPem {
                    what: "certificate",
                    ..
                }
            ),
            "{err}"
        );
        // A PEM block that is not base64.
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = server_config(&junk, &key).unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::NotPem {
                    what: "certificate",
                    ..
                }
            ),
            "{err}"
        );
    }
}
