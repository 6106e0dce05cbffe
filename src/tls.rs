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
//! **Expiry.** The notAfter of the end-entity certificate being served is read whenever a
//! pair loads ([`ListenerTls::not_after`], the gauge `/metrics` shows). At start, after a
//! reload and every [`EXPIRY_RECHECK`] (a day) while it holds, the log warns when less than
//! [`EXPIRY_WARNING`] is left, and says at ERROR that an expired certificate must be
//! replaced. An expired certificate is still served: refusing it would take the JWKS down
//! for every EHR, including those that do not check the date, while a warning leaves the
//! operator time to replace the files, which are then picked up without a restart.
//!
//! **Trusting.** A CLI command that reaches a listener through jwksd's own configuration dials
//! loopback, whose name the certificate seldom carries; it trusts exactly the end-entity
//! certificate the configuration names ([`pinned_client_config`]), and the peer must still
//! prove it holds that certificate's key in the handshake.
//!
//! Messages name the configuration key, the file and what is wrong, never a key's content.
//! Layer: above `config` (it reads [`TlsFiles`]) and `logging`, below `app`, `cli` and
//! `http` (whose `/metrics` reads [`ListenerTls::not_after`]).

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
use tracing::{error, info, warn};
use x509_cert::der::Decode;
use zeroize::Zeroizing;

use crate::config::TlsFiles;
use crate::logging::HumanSeconds;

/// How often [`watch`] re-reads the certificate and key files.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// How long before its notAfter a certificate is warned about (the example alert rule in
/// `deploy/prometheus/alerts.yml` uses the same 14 days): time for a renewal that needs a
/// person, a ticket or another team.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// How often [`watch`] repeats the expiry warning while it holds: once a day is noticed in
/// a log without filling it.
pub const EXPIRY_RECHECK: Duration = Duration::from_secs(86_400);

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

/// The notAfter of the end-entity certificate `leaf`, in seconds since the Unix epoch;
/// `None` when x509-cert cannot decode it. rustls accepted that certificate, so it is
/// served all the same (a strict DER parser refusing a certificate that worked yesterday
/// must not take the listener down); only its expiry goes unwatched.
fn not_after(leaf: &CertificateDer<'_>) -> Option<i64> {
    let cert = x509_cert::Certificate::from_der(leaf.as_ref()).ok()?;
    let since_epoch = cert.tbs_certificate.validity.not_after.to_unix_duration();
    i64::try_from(since_epoch.as_secs()).ok()
}

/// What the log says of a certificate's expiry: soon (WARN) or already (ERROR).
#[derive(Debug, PartialEq, Eq)]
enum ExpiryNotice {
    Soon(String),
    Expired(String),
}

/// The notice for the certificate of `files` expiring at `not_after`, seen at `now`;
/// nothing while more than [`EXPIRY_WARNING`] is left.
fn expiry_notice(files: &TlsFiles, not_after: i64, now: i64) -> Option<ExpiryNotice> {
    let left = not_after.saturating_sub(now);
    let warn_within = i64::try_from(EXPIRY_WARNING.as_secs()).unwrap_or(i64::MAX);
    if left >= warn_within {
        return None;
    }
    let certificate = format!(
        "the TLS certificate of the {} listener ({} = {})",
        files.listener,
        files.cert_key_name,
        files.cert_file.display()
    );
    let date = crate::rfc3339(not_after).unwrap_or_else(|| not_after.to_string());
    let replace = format!(
        "replace the certificate and key files: jwksd reloads them without a restart (within \
         {}s, or at once on SIGHUP)",
        POLL_INTERVAL.as_secs()
    );
    if left > 0 {
        return Some(ExpiryNotice::Soon(format!(
            "{certificate} expires in {} ({date}); renew it and {replace}",
            HumanSeconds(left)
        )));
    }
    let who = match files.listener {
        "public" => "EHRs that check it can no longer fetch the JWKS",
        _ => "callers that check it can no longer reach the private listener",
    };
    Some(ExpiryNotice::Expired(format!(
        "{certificate} expired {} ago ({date}) and is still served: {who}; {replace}",
        HumanSeconds(left.saturating_neg())
    )))
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
    /// The notAfter of the certificate being served (see [`not_after`]). Its own lock,
    /// never held across a file read, so a scrape of `/metrics` never waits on a slow disk.
    not_after: Mutex<Option<i64>>,
}

impl ListenerTls {
    /// Loads the pair `files` names; any problem refuses the start, with what to fix.
    pub fn open(files: &TlsFiles) -> Result<ListenerTls, TlsError> {
        let provider = provider();
        let cert_pem = read_file(&files.cert_file, files.cert_key_name)?;
        let key_pem = Zeroizing::new(read_file(&files.key_file, files.key_key_name)?);
        let key = certified_key(&cert_pem, &key_pem, files, &provider)?;
        let expires = key.cert.first().and_then(not_after);
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
            not_after: Mutex::new(expires),
        })
    }

    /// When the certificate being served expires, in seconds since the Unix epoch; `None`
    /// when it could not be read (see [`not_after`]).
    pub fn not_after(&self) -> Option<i64> {
        *self.not_after.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes to the log what [`expiry_notice`] says at `now`: a WARN within
    /// [`EXPIRY_WARNING`], an ERROR once expired, nothing before.
    pub fn log_expiry(&self, now: i64) {
        let files = &self.files;
        let Some(not_after) = self.not_after() else {
            warn!(
                listener = files.listener,
                cert_file = %files.cert_file.display(),
                "cannot read the expiry (notAfter) of the first certificate of {}: it is \
                 served, but its expiry is neither warned about nor a metric",
                files.cert_key_name
            );
            return;
        };
        match expiry_notice(files, not_after, now) {
            Some(ExpiryNotice::Soon(message)) => warn!(listener = files.listener, "{message}"),
            Some(ExpiryNotice::Expired(message)) => error!(listener = files.listener, "{message}"),
            None => {}
        }
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
                let expires = key.cert.first().and_then(not_after);
                self.resolver.set(key);
                *self.not_after.lock().unwrap_or_else(|p| p.into_inner()) = expires;
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
    /// files were read ("SIGHUP", "a file changed"). A new pair, and a SIGHUP that finds the
    /// files unchanged (the operator may believe they were replaced), also log its expiry
    /// ([`ListenerTls::log_expiry`]).
    pub fn reload_and_log(&self, cause: &str) -> Reloaded {
        let outcome = self.reload();
        let files = &self.files;
        match &outcome {
            Reloaded::Loaded => {
                info!(
                    cert_file = %files.cert_file.display(),
                    "{cause}: loaded the new TLS certificate and key of {}; new connections get \
                     them",
                    files.cert_key_name
                );
                self.log_expiry(crate::unix_now());
            }
            Reloaded::Refused(why) => warn!(
                "{cause}: the new TLS files of {} are refused and the previous certificate keeps \
                 serving: {why} (if the files are being replaced one after the other, this \
                 clears once both are written)",
                files.cert_key_name
            ),
            Reloaded::Unchanged if cause == SIGHUP => {
                info!(
                    cert_file = %files.cert_file.display(),
                    "{cause}: the TLS files of {} are unchanged", files.cert_key_name
                );
                self.log_expiry(crate::unix_now());
            }
            Reloaded::Unchanged | Reloaded::StillRefused => {}
        }
        outcome
    }
}

/// The cause [`ListenerTls::reload_and_log`] is given on SIGHUP.
pub const SIGHUP: &str = "SIGHUP";

/// Re-reads every listener's files each `every`, and repeats what the log says of their
/// expiry each `recheck` ([`EXPIRY_RECHECK`] in service: a certificate runs out of time
/// while nothing changes), for ever (the task is aborted at stop).
pub async fn watch(listeners: Vec<Arc<ListenerTls>>, every: Duration, recheck: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut expiry_logged = tokio::time::Instant::now();
    loop {
        ticks.tick().await;
        for listener in &listeners {
            listener.reload_and_log("a TLS file changed");
        }
        if expiry_logged.elapsed() >= recheck {
            expiry_logged = tokio::time::Instant::now();
            for listener in &listeners {
                listener.log_expiry(crate::unix_now());
            }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    use base64::Engine;
    use rcgen::{CertificateParams, PublicKeyData, SignatureAlgorithm, SigningKey};
    use time::OffsetDateTime;

    use super::*;

    /// An EC P-256 key of aws-lc-rs, signing for rcgen (which has no crypto backend here).
    struct TestKey(EcdsaKeyPair);

    impl PublicKeyData for TestKey {
        fn der_bytes(&self) -> &[u8] {
            self.0.public_key().as_ref()
        }

        fn algorithm(&self) -> &'static SignatureAlgorithm {
            &rcgen::PKCS_ECDSA_P256_SHA256
        }
    }

    impl SigningKey for TestKey {
        fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            Ok(self.0.sign(&rng, msg).unwrap().as_ref().to_vec())
        }
    }

    /// A self-signed certificate for localhost valid until `not_after` (unix seconds): its
    /// DER, its PEM and its key's PEM.
    fn certificate_until(not_after: i64) -> (Vec<u8>, String, String) {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let key = TestKey(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap(),
        );
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_after = OffsetDateTime::from_unix_timestamp(not_after).unwrap();
        let mut serial = [0u8; 16];
        aws_lc_rs::rand::fill(&mut serial).unwrap();
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let cert = params.self_signed(&key).unwrap();
        let body = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
        let key_pem = format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n");
        (cert.der().to_vec(), cert.pem(), key_pem)
    }

    fn public_files(dir: &Path) -> TlsFiles {
        TlsFiles {
            cert_file: dir.join("public.crt"),
            key_file: dir.join("public.key"),
            cert_key_name: "server.tls_cert_file",
            key_key_name: "server.tls_key_file",
            listener: "public",
        }
    }

    fn write_pair(files: &TlsFiles, pair: &(Vec<u8>, String, String)) {
        std::fs::write(&files.cert_file, &pair.1).unwrap();
        std::fs::write(&files.key_file, &pair.2).unwrap();
    }

    #[test]
    fn the_not_after_of_a_certificate_is_read_back_exactly() {
        // 2031-05-17T12:34:56Z is written as a UTCTime, 2080-01-02T03:04:05Z (after 2049)
        // as a GeneralizedTime: both encodings are read.
        for expected in [1_936_787_696, 3_471_390_245] {
            let (der, _, _) = certificate_until(expected);
            assert_eq!(
                not_after(&CertificateDer::from(der)),
                Some(expected),
                "{}",
                crate::rfc3339(expected).unwrap()
            );
        }
        assert_eq!(not_after(&CertificateDer::from(vec![0x30, 0x00])), None);
    }

    #[test]
    fn a_listener_keeps_the_expiry_of_the_pair_it_serves_and_starts_on_an_expired_one() {
        let dir = tempfile::tempdir().unwrap();
        let files = public_files(dir.path());
        let now = crate::unix_now();
        // Expired yesterday: served all the same (the log says so; see the module doc).
        let expired = certificate_until(now - 86_400);
        write_pair(&files, &expired);
        let listener = ListenerTls::open(&files).unwrap();
        assert_eq!(listener.not_after(), Some(now - 86_400));

        let renewed = certificate_until(now + 365 * 86_400);
        write_pair(&files, &renewed);
        assert_eq!(listener.reload(), Reloaded::Loaded);
        assert_eq!(listener.not_after(), Some(now + 365 * 86_400));

        // A refused pair changes nothing: the served certificate's date stays.
        let other = certificate_until(now + 3 * 86_400);
        std::fs::write(&files.cert_file, &other.1).unwrap();
        assert!(matches!(listener.reload(), Reloaded::Refused(_)));
        assert_eq!(listener.not_after(), Some(now + 365 * 86_400));
    }

    #[test]
    fn the_log_warns_within_fourteen_days_and_says_what_to_do_once_expired() {
        let files = TlsFiles {
            cert_file: "/etc/jwksd/public.crt".into(),
            key_file: "/etc/jwksd/public.key".into(),
            cert_key_name: "server.tls_cert_file",
            key_key_name: "server.tls_key_file",
            listener: "public",
        };
        // 2026-12-11T00:00:00Z
        let not_after = 1_796_947_200;
        let day = 86_400;
        assert_eq!(expiry_notice(&files, not_after, not_after - 15 * day), None);
        assert_eq!(expiry_notice(&files, not_after, not_after - 14 * day), None);
        let Some(ExpiryNotice::Soon(soon)) = expiry_notice(&files, not_after, not_after - 9 * day)
        else {
            panic!("no warning 9 days before")
        };
        for part in [
            "public listener",
            "server.tls_cert_file = /etc/jwksd/public.crt",
            "expires in 9d (2026-12-11T00:00:00Z)",
            "without a restart",
        ] {
            assert!(soon.contains(part), "{part:?} not in {soon}");
        }
        let Some(ExpiryNotice::Expired(expired)) =
            expiry_notice(&files, not_after, not_after + day + 3_600)
        else {
            panic!("no error once expired")
        };
        for part in [
            "public listener",
            "server.tls_cert_file = /etc/jwksd/public.crt",
            "expired 1d 1h ago (2026-12-11T00:00:00Z)",
            "replace the certificate and key files",
            "without a restart",
        ] {
            assert!(expired.contains(part), "{part:?} not in {expired}");
        }
        assert!(matches!(
            expiry_notice(&files, not_after, not_after),
            Some(ExpiryNotice::Expired(_))
        ));
    }

    #[tokio::test]
    async fn the_watch_repeats_the_warning_and_an_expired_certificate_is_an_error() {
        use tracing::instrument::WithSubscriber;
        let dir = tempfile::tempdir().unwrap();
        let files = public_files(dir.path());
        let now = crate::unix_now();
        write_pair(&files, &certificate_until(now + 3 * 86_400));
        let expiring = Arc::new(ListenerTls::open(&files).unwrap());
        let log = crate::logging::CapturedLog::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let watching = watch(
            vec![expiring],
            Duration::from_millis(10),
            Duration::from_millis(100),
        );
        // Another test's thread may have met the callsites first, with no subscriber.
        tracing::callsite::rebuild_interest_cache();
        let _ = tokio::time::timeout(Duration::from_millis(450), watching)
            .with_subscriber(subscriber)
            .await;
        let warnings = log
            .text()
            .lines()
            .filter(|l| {
                l.contains("WARN") && l.contains("public listener") && l.contains("expires in")
            })
            .count();
        assert!((2..=4).contains(&warnings), "{}", log.text());

        let expired_files = TlsFiles {
            cert_file: dir.path().join("expired.crt"),
            key_file: dir.path().join("expired.key"),
            ..files
        };
        write_pair(&expired_files, &certificate_until(now - 60));
        let expired = ListenerTls::open(&expired_files).unwrap();
        let log = crate::logging::CapturedLog::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::callsite::rebuild_interest_cache();
            expired.log_expiry(now);
        });
        let text = log.text();
        assert!(
            text.contains("ERROR") && text.contains("expired 1m ago"),
            "{text}"
        );
    }
}
