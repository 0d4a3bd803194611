//! TLS on both ports: the certificate chain and key from PEM files, replaced without a
//! restart.
//!
//! New handshakes take the pair current when they start; open connections keep the one
//! they began with. A new pair is used only once it parses and its key matches its
//! certificate; a bad one is refused with an error and the old pair stays.
//! [`Tls::reload`] is for SIGHUP; [`Tls::watch`] reloads when the files' contents change
//! (which also sees Kubernetes swap the `..data` symlink of a mounted secret).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use ring::digest::{SHA256, digest};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{error, info, warn};

/// Why a certificate and key cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What reading it said.
        source: io::Error,
    },
    /// The certificate file holds no PEM certificate, or a malformed one.
    #[error("{path}: no usable PEM certificate ({reason})")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The key file holds no PEM private key, or one rustls cannot use.
    #[error("{path}: no usable PEM private key ({reason})")]
    Key {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The key is not the certificate's.
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the settings.
    #[error("TLS settings refused: {0}")]
    Settings(rustls::Error),
}

/// How long a TLS handshake may take unless told otherwise.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate served on both ports, and how to replace it; cheap to clone.
#[derive(Clone)]
pub struct Tls {
    inner: Arc<Inner>,
    handshake_timeout: Duration,
}

struct Inner {
    cert_path: PathBuf,
    key_path: PathBuf,
    /// The pair new handshakes get.
    current: Arc<Current>,
    acceptor: TlsAcceptor,
    provider: Arc<CryptoProvider>,
    /// A digest of the files' contents when last loaded or tried; `None` while unreadable.
    seen: Mutex<Option<[u8; 32]>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.inner.cert_path)
            .field("key", &self.inner.key_path)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// Hands every new handshake the current pair.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().clone())
    }
}

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeFailure {
    /// It took longer than the handshake timeout.
    #[error("handshake timed out")]
    Timeout,
    /// The client broke it off or spoke something else than TLS.
    #[error("handshake failed: {0}")]
    Error(io::Error),
}

impl HandshakeFailure {
    /// The label of the failure in metrics.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Error(_) => "error",
        }
    }
}

impl Tls {
    /// Loads the certificate chain (leaf first) and key from PEM files, for TLS 1.2 and
    /// 1.3 with ALPN `http/1.1` only.
    pub fn load(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Self, TlsError> {
        let (cert_path, key_path) = (cert.into(), key.into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (cert_pem, key_pem) = read_pair(&cert_path, &key_path)?;
        let pair = parse_pair(&provider, &cert_path, &cert_pem, &key_path, &key_pem)?;
        let current = Arc::new(Current(RwLock::new(Arc::new(pair))));
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Settings)?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // WebSocket over HTTP/2 is not offered.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            inner: Arc::new(Inner {
                acceptor: TlsAcceptor::from(Arc::new(config)),
                seen: Mutex::new(Some(fingerprint(&cert_pem, &key_pem))),
                cert_path,
                key_path,
                current,
                provider,
            }),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        })
    }

    /// The same certificate with a handshake timeout of `timeout`.
    #[must_use]
    pub fn with_handshake_timeout(self, timeout: Duration) -> Self {
        Self {
            handshake_timeout: timeout,
            ..self
        }
    }

    /// How long a handshake may take.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// The certificate chain new handshakes get, leaf first, in DER.
    pub fn certificate_chain(&self) -> Vec<CertificateDer<'static>> {
        self.inner.current.0.read().cert.clone()
    }

    /// Reads both files again and serves the pair from the next handshake on; a pair
    /// that does not parse or match is refused and the current one stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let inner = &self.inner;
        let read = read_pair(&inner.cert_path, &inner.key_path);
        let (cert_pem, key_pem) = match read {
            Ok(pem) => pem,
            Err(err) => {
                *inner.seen.lock() = None;
                return Err(err);
            }
        };
        *inner.seen.lock() = Some(fingerprint(&cert_pem, &key_pem));
        let pair = parse_pair(
            &inner.provider,
            &inner.cert_path,
            &cert_pem,
            &inner.key_path,
            &key_pem,
        )?;
        *inner.current.0.write() = Arc::new(pair);
        Ok(())
    }

    /// [`Tls::reload`], logged: for SIGHUP.
    pub fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(()) => {
                info!(why, cert = %self.inner.cert_path.display(), "TLS certificate reloaded")
            }
            Err(err) => {
                error!(why, %err, "TLS certificate not reloaded; the previous one stays");
            }
        }
    }

    /// Reloads whenever the files' contents change, checking every `interval`, until
    /// the task is dropped. A pair that fails is logged once and tried again only when
    /// the files change again.
    pub async fn watch(self, interval: Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.check_files();
        }
    }

    /// Reloads if the files changed since they were last loaded or tried.
    fn check_files(&self) {
        let inner = &self.inner;
        let now = read_pair(&inner.cert_path, &inner.key_path)
            .ok()
            .map(|(cert, key)| fingerprint(&cert, &key));
        let before = *inner.seen.lock();
        if now == before {
            return;
        }
        match now {
            // Unreadable, as during a non-atomic replacement: the current pair stays.
            None => {
                *inner.seen.lock() = None;
                warn!(cert = %inner.cert_path.display(), key = %inner.key_path.display(),
                    "TLS files unreadable; the current certificate stays");
            }
            Some(_) => self.reload_logged("files changed"),
        }
    }

    /// Completes the server side of a handshake within the handshake timeout.
    pub(crate) async fn accept(
        &self,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, HandshakeFailure> {
        let handshake = self.inner.acceptor.accept(tcp);
        match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(err)) => Err(HandshakeFailure::Error(err)),
            Err(_) => Err(HandshakeFailure::Timeout),
        }
    }
}

fn fingerprint(cert: &[u8], key: &[u8]) -> [u8; 32] {
    let mut both = Vec::with_capacity(cert.len() + key.len() + 1);
    both.extend_from_slice(cert);
    both.push(0);
    both.extend_from_slice(key);
    let mut out = [0; 32];
    out.copy_from_slice(digest(&SHA256, &both).as_ref());
    out
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    Ok((read(cert)?, read(key)?))
}

/// Parses a chain and a key and checks that the key is the leaf certificate's.
fn parse_pair(
    provider: &CryptoProvider,
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let cert_error = |reason: String| TlsError::Certificate {
        path: cert_path.to_owned(),
        reason,
    };
    let key_error = |reason: String| TlsError::Key {
        path: key_path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| key_error(e.to_string()))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| key_error(e.to_string()))?;
    let pair = CertifiedKey::new(chain, signing);
    match pair.keys_match() {
        Ok(()) => Ok(pair),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::Mismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
        }),
        Err(err) => Err(cert_error(err.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: PathBuf,
        cert: PathBuf,
        key: PathBuf,
    }

    impl Files {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("octate-tls-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            Self {
                cert: dir.join("cert.pem"),
                key: dir.join("key.pem"),
                dir,
            }
        }

        fn write(&self, cert: &str, key: &str) {
            std::fs::write(&self.cert, cert).expect("write cert");
            std::fs::write(&self.key, key).expect("write key");
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn self_signed() -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["localhost".into()]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    fn leaf(tls: &Tls) -> Vec<u8> {
        tls.certificate_chain()[0].to_vec()
    }

    #[test]
    fn a_pair_loads_and_reloads() {
        let files = Files::new("reload");
        let (cert1, key1) = self_signed();
        files.write(&cert1, &key1);
        let tls = Tls::load(&files.cert, &files.key).expect("loads");
        let first = leaf(&tls);
        let (cert2, key2) = self_signed();
        files.write(&cert2, &key2);
        tls.reload().expect("reloads");
        assert_ne!(leaf(&tls), first, "the new certificate is served");
    }

    #[test]
    fn a_bad_pair_is_refused_and_the_old_one_stays() {
        let files = Files::new("bad");
        let (cert1, key1) = self_signed();
        files.write(&cert1, &key1);
        let tls = Tls::load(&files.cert, &files.key).expect("loads");
        let served = leaf(&tls);

        let (cert2, _) = self_signed();
        files.write(&cert2, &key1);
        assert!(matches!(tls.reload(), Err(TlsError::Mismatch { .. })));
        assert_eq!(leaf(&tls), served);

        files.write("not pem", &key1);
        assert!(matches!(tls.reload(), Err(TlsError::Certificate { .. })));
        files.write(
            &cert1,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        );
        assert!(matches!(tls.reload(), Err(TlsError::Key { .. })));
        std::fs::remove_file(&files.key).expect("remove");
        assert!(matches!(tls.reload(), Err(TlsError::Read { .. })));
        assert_eq!(leaf(&tls), served);

        assert!(matches!(
            Tls::load(&files.cert, files.dir.join("missing.pem")),
            Err(TlsError::Read { .. })
        ));
    }

    #[test]
    fn a_chain_keeps_its_order() {
        let files = Files::new("chain");
        let (leaf_pem, key) = self_signed();
        let (other, _) = self_signed();
        files.write(&format!("{leaf_pem}{other}"), &key);
        let tls = Tls::load(&files.cert, &files.key).expect("a chain loads");
        assert_eq!(tls.certificate_chain().len(), 2);
    }

    #[test]
    fn the_watcher_reloads_changed_files_only() {
        let files = Files::new("watch");
        let (cert1, key1) = self_signed();
        files.write(&cert1, &key1);
        let tls = Tls::load(&files.cert, &files.key).expect("loads");
        let first = leaf(&tls);
        tls.check_files();
        assert_eq!(leaf(&tls), first);
        let (cert2, key2) = self_signed();
        files.write(&cert2, &key2);
        tls.check_files();
        assert_ne!(leaf(&tls), first, "changed files are served");
    }
}
