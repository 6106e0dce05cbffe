//! HTTPS on jwksd's own listeners, and how jwksd's own command-line clients trust them.
//!
//! **Serving.** A listener's certificate chain and private key (the PEM files the `[server]`
//! `tls_*` keys name, see [`TlsFiles`]) are loaded into a [`ListenerTls`], whose resolver is
//! the certificate source of that listener's `rustls::ServerConfig`. Every handshake asks the
//! resolver for the certified key of the moment, so swapping it changes what new connections
//! are shown without restarting the listener or touching open connections.
//! [`ListenerTls::reload`] re-reads both files (every [`POLL_INTERVAL`] through [`watch`], and
//! on SIGHUP through `app`): an unchanged pair is left alone, a new pair that loads replaces
//! the old one, and a pair that does not load (unreadable, not PEM, a key that does not belong
//! to the certificate) is refused while the old one keeps serving. Content is compared, not
//! modification times, so a replacement within the same second, or one that keeps the old
//! times (`cp -p`, a Kubernetes secret's symlink swap), is still noticed. A new pair also
//! forgets the sessions clients could resume ([`SessionsOfOneCertificate`]), so from then on
//! every new connection is a full handshake with the new certificate: replacing a
//! compromised key ends what was established under it.
//!
//! **Trusting.** A CLI command that reaches a listener through jwksd's own configuration dials
//! loopback, whose name the certificate seldom carries; it trusts exactly the end-entity
//! certificate the configuration names ([`pinned_client_config`]), and the peer must still
//! prove it holds that certificate's key in the handshake.
//!
//! Messages name the configuration key, the file and what is wrong, never a key's content.
//! Layer: above `config` (it reads [`TlsFiles`]), below `app` and `cli`.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{
    ClientHello, ResolvesServerCert, ServerSessionMemoryCache, StoresServerSessions,
};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::config::TlsFiles;

/// How often [`watch`] re-reads the certificate and key files.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Why a certificate and key pair cannot be used: a sentence naming the configuration key,
/// the file and the fix. It never holds any of the key file's content.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// The one crypto provider of jwksd's TLS, as of its outbound client (no ring).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads `path` whole; the error names the key that configured it.
fn read_file(path: &Path, key_name: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| {
        TlsError(format!(
            "{key_name} = {}: cannot read it: {e}; check the path and that the user jwksd runs \
             as may read it",
            path.display()
        ))
    })
}

/// The certificate chain in `pem` (read from `files.cert_file`), end-entity first.
fn parse_chain(pem: &[u8], files: &TlsFiles) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let shown = || format!("{} = {}", files.cert_key_name, files.cert_file.display());
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        // The parser's words are not passed on: they can quote a line, and a misconfigured
        // path can make this a key file.
        .map_err(|_| {
            TlsError(format!(
                "{}: not a PEM certificate chain (a PEM block in it is damaged)",
                shown()
            ))
        })?;
    if chain.is_empty() {
        return Err(TlsError(format!(
            "{}: holds no certificate; it must hold PEM \"-----BEGIN CERTIFICATE-----\" blocks, \
             the server's certificate first, then its intermediates",
            shown()
        )));
    }
    Ok(chain)
}

/// The private key in `pem` (read from `files.key_file`). The parser's own error is not
/// passed on: a PEM error can quote a line of the file.
fn parse_key(pem: &[u8], files: &TlsFiles) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
        let what = match e {
            rustls::pki_types::pem::Error::NoItemsFound => "holds no private key",
            _ => "is not a readable PEM private key",
        };
        TlsError(format!(
            "{} = {}: {what}; it must hold one PEM \"PRIVATE KEY\" (PKCS#8), \"RSA PRIVATE KEY\" \
             or \"EC PRIVATE KEY\" block (the key is not shown)",
            files.key_key_name,
            files.key_file.display()
        ))
    })
}

/// What was read from a pair of files: a certified key, or why the pair cannot be one.
fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    files: &TlsFiles,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = parse_chain(cert_pem, files)?;
    let key = parse_key(key_pem, files)?;
    let cert = format!("{} = {}", files.cert_key_name, files.cert_file.display());
    let key_file = format!("{} = {}", files.key_key_name, files.key_file.display());
    CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        TlsError(match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "the private key of {key_file} does not belong to the first certificate of \
                 {cert}; the chain must start with the server's own certificate, and the two \
                 files must be from the same issuance"
            ),
            rustls::Error::InvalidCertificate(why) => format!(
                "{cert}: the first certificate cannot be used ({why:?}); it must be an X.509 \
                 certificate in PEM"
            ),
            // The key provider's errors say only which key types it tried.
            _ => format!(
                "{key_file}: not a usable private key (RSA, ECDSA P-256/P-384/P-521 or Ed25519 \
                 are; the key is not shown)"
            ),
        })
    })
}

/// SHA-256 over both files' bytes (each length-prefixed), to notice a change without
/// keeping the key's text.
fn digest(cert_pem: &[u8], key_pem: &[u8]) -> [u8; 32] {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in [cert_pem, key_pem] {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// The certificate resolver of one listener: the certified key every new handshake gets.
pub struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadingCert {
    fn get(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set(&self, key: CertifiedKey) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(key);
    }
}

/// Not derived: nothing about the key is shown.
impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReloadingCert { .. }")
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// How many sessions a listener remembers for resumption (rustls' default).
const RESUMABLE_SESSIONS: usize = 256;

/// The server's memory of resumable sessions, forgotten whenever the certificate changes:
/// a resumed session shows no certificate, so without this a client could go on resuming
/// what the old certificate (and a possibly compromised key) established.
pub struct SessionsOfOneCertificate {
    cache: RwLock<Arc<ServerSessionMemoryCache>>,
}

impl SessionsOfOneCertificate {
    fn new() -> Self {
        SessionsOfOneCertificate {
            cache: RwLock::new(ServerSessionMemoryCache::new(RESUMABLE_SESSIONS)),
        }
    }

    fn cache(&self) -> Arc<ServerSessionMemoryCache> {
        self.cache
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn forget_all(&self) {
        *self
            .cache
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            ServerSessionMemoryCache::new(RESUMABLE_SESSIONS);
    }
}

impl std::fmt::Debug for SessionsOfOneCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionsOfOneCertificate { .. }")
    }
}

impl StoresServerSessions for SessionsOfOneCertificate {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.cache().put(key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.cache().get(key)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.cache().take(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

/// What [`ListenerTls::reload`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The files hold the pair being served.
    Unchanged,
    /// A new pair loaded; new connections get it.
    Loaded,
    /// The files changed and do not load; the previous pair keeps serving. Reported once per
    /// distinct content of the files.
    Refused(String),
    /// The same refused content as at the last reload: nothing new to say.
    StillRefused,
}

/// The digests of the pair being served and of the last pair refused.
struct Seen {
    serving: [u8; 32],
    refused: Option<[u8; 32]>,
}

/// One listener's HTTPS: its files, its resolver, and what was last read from the files.
pub struct ListenerTls {
    files: TlsFiles,
    resolver: Arc<ReloadingCert>,
    sessions: Arc<SessionsOfOneCertificate>,
    provider: Arc<CryptoProvider>,
    seen: Mutex<Seen>,
}

impl ListenerTls {
    /// Loads the pair `files` names; any problem refuses the start, with what to fix.
    pub fn open(files: &TlsFiles) -> Result<ListenerTls, TlsError> {
        let provider = provider();
        let cert_pem = read_file(&files.cert_file, files.cert_key_name)?;
        let key_pem = Zeroizing::new(read_file(&files.key_file, files.key_key_name)?);
        let key = certified_key(&cert_pem, &key_pem, files, &provider)?;
        Ok(ListenerTls {
            files: files.clone(),
            resolver: Arc::new(ReloadingCert {
                current: RwLock::new(Arc::new(key)),
            }),
            sessions: Arc::new(SessionsOfOneCertificate::new()),
            provider,
            seen: Mutex::new(Seen {
                serving: digest(&cert_pem, &key_pem),
                refused: None,
            }),
        })
    }

    /// The files this listener serves from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The listener's rustls configuration: TLS 1.2 and 1.3 (rustls' safe defaults), no
    /// client certificates, the certificate from this listener's resolver. actix adds the
    /// ALPN protocol (`http/1.1`). Sessions resume from this listener's
    /// [`SessionsOfOneCertificate`] (rustls makes no stateless tickets by default).
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let resolver: Arc<dyn ResolvesServerCert> = self.resolver.clone();
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("cannot set up TLS: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        config.session_storage = self.sessions.clone();
        Ok(config)
    }

    /// Re-reads both files and serves the pair they hold if it differs from the one being
    /// served and loads; see [`Reloaded`].
    pub fn reload(&self) -> Reloaded {
        let files = &self.files;
        let read = read_file(&files.cert_file, files.cert_key_name).and_then(|cert| {
            let key = Zeroizing::new(read_file(&files.key_file, files.key_key_name)?);
            Ok((cert, key))
        });
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let (cert_pem, key_pem) = match read {
            Ok(pair) => pair,
            Err(e) => {
                // An unreadable file has no content to remember: report it once, by message.
                let marker = digest(e.0.as_bytes(), b"unreadable");
                if seen.refused == Some(marker) {
                    return Reloaded::StillRefused;
                }
                seen.refused = Some(marker);
                return Reloaded::Refused(e.0);
            }
        };
        let now = digest(&cert_pem, &key_pem);
        if now == seen.serving {
            seen.refused = None;
            return Reloaded::Unchanged;
        }
        if seen.refused == Some(now) {
            return Reloaded::StillRefused;
        }
        match certified_key(&cert_pem, &key_pem, files, &self.provider) {
            Ok(key) => {
                self.resolver.set(key);
                self.sessions.forget_all();
                seen.serving = now;
                seen.refused = None;
                Reloaded::Loaded
            }
            Err(e) => {
                seen.refused = Some(now);
                Reloaded::Refused(e.0)
            }
        }
    }

    /// [`ListenerTls::reload`], with what it did written to the log; `cause` says why the
    /// files were read ("SIGHUP", "a file changed").
    pub fn reload_and_log(&self, cause: &str) -> Reloaded {
        let outcome = self.reload();
        let files = &self.files;
        match &outcome {
            Reloaded::Loaded => info!(
                cert_file = %files.cert_file.display(),
                "{cause}: loaded the new TLS certificate and key of {}; new connections get them",
                files.cert_key_name
            ),
            Reloaded::Refused(why) => warn!(
                "{cause}: the new TLS files of {} are refused and the previous certificate keeps \
                 serving: {why} (if the files are being replaced one after the other, this \
                 clears once both are written)",
                files.cert_key_name
            ),
            Reloaded::Unchanged if cause == SIGHUP => info!(
                cert_file = %files.cert_file.display(),
                "{cause}: the TLS files of {} are unchanged", files.cert_key_name
            ),
            Reloaded::Unchanged | Reloaded::StillRefused => {}
        }
        outcome
    }
}

/// The cause [`ListenerTls::reload_and_log`] is given on SIGHUP.
pub const SIGHUP: &str = "SIGHUP";

/// Re-reads every listener's files each `every`, for ever (the task is aborted at stop).
pub async fn watch(listeners: Vec<Arc<ListenerTls>>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        for listener in &listeners {
            listener.reload_and_log("a TLS file changed");
        }
    }
}

/// A client configuration that trusts exactly the end-entity certificate at the head of
/// `cert_file` (the chain a listener of this configuration serves), under whatever name
/// the client dialled: the CLI reaches its own jwksd through loopback, which the
/// certificate seldom names. The server must still sign the handshake with that
/// certificate's key, so the pin is as strong as the key.
pub fn pinned_client_config(
    cert_file: &Path,
    key_name: &str,
) -> Result<rustls::ClientConfig, TlsError> {
    let pem = read_file(cert_file, key_name)?;
    let pinned = CertificateDer::pem_slice_iter(&pem)
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| {
            TlsError(format!(
                "{key_name} = {}: holds no PEM certificate to trust",
                cert_file.display()
            ))
        })?;
    let provider = provider();
    let verifier = Arc::new(PinnedCert {
        pinned,
        file: cert_file.display().to_string(),
        provider: provider.clone(),
    });
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("cannot set up TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// Accepts one certificate, byte for byte, and checks the handshake's signature with it.
#[derive(Debug)]
struct PinnedCert {
    pinned: CertificateDer<'static>,
    file: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.pinned.as_ref() {
            return Ok(ServerCertVerified::assertion());
        }
        Err(rustls::Error::General(format!(
            "the listener's certificate is not the one in {}; if the file was just replaced, \
             retry in a few seconds (jwksd re-reads it every {}s), else --server reaches \
             another service",
            self.file,
            POLL_INTERVAL.as_secs()
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
