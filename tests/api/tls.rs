//! HTTPS on jwksd's listeners: a test CA, an intermediate and leaves for localhost made here
//! with rcgen; the JWKS over HTTPS to a client trusting only that CA; a replaced pair served
//! without a restart (by the poll, and by SIGHUP on the real binary); a broken replacement
//! keeping the old certificate; refusals at start that name the file and never the key; the
//! CLI and the container probe against HTTPS listeners.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyIdMethod, KeyUsagePurpose, PublicKeyData, SerialNumber, SignatureAlgorithm, SigningKey,
};

use crate::helpers::{into_test_app, test_config, try_build, wait_until_listening, KillOnDrop};

/// An EC P-256 key made by aws-lc-rs, signing certificates for rcgen.
struct TestKey(EcdsaKeyPair);

impl TestKey {
    fn new() -> TestKey {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        TestKey(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap())
    }

    fn pem(&self) -> String {
        let der = self.0.to_pkcs8v1().unwrap();
        pem("PRIVATE KEY", der.as_ref())
    }

    fn key_id(&self) -> Vec<u8> {
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.0.public_key().as_ref()).as_ref()
            [..20]
            .to_vec()
    }
}

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

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn ca_params(name: &str, key: &TestKey) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.key_identifier_method = KeyIdMethod::PreSpecified(key.key_id());
    // rcgen without a crypto backend of its own cannot draw a serial itself.
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial).unwrap();
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params
}

/// A root CA and an intermediate it signed; leaves are signed by the intermediate.
struct TestPki {
    root_pem: String,
    intermediate_pem: String,
    intermediate: Issuer<'static, TestKey>,
}

/// A leaf for `localhost` and `127.0.0.1`: its chain file (leaf, then intermediate), its
/// key file, and its DER (what a client is shown).
struct Leaf {
    chain_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl TestPki {
    fn new() -> TestPki {
        let root_key = TestKey::new();
        let root_params = ca_params("jwksd test root", &root_key);
        let root_pem = root_params.self_signed(&root_key).unwrap().pem();
        let root = Issuer::new(root_params, root_key);
        let intermediate_key = TestKey::new();
        let intermediate_params = ca_params("jwksd test intermediate", &intermediate_key);
        let intermediate_pem = intermediate_params
            .signed_by(&intermediate_key, &root)
            .unwrap()
            .pem();
        TestPki {
            root_pem,
            intermediate_pem,
            intermediate: Issuer::new(intermediate_params, intermediate_key),
        }
    }

    fn leaf(&self, serial: u64) -> Leaf {
        self.leaf_with(serial, |_| {})
    }

    /// A leaf whose notAfter is `not_after` (seconds since the Unix epoch); rcgen's default
    /// is the year 4096.
    fn leaf_until(&self, serial: u64, not_after: i64) -> Leaf {
        self.leaf_with(serial, |params| {
            params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
        })
    }

    fn leaf_with(&self, serial: u64, adjust: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let key = TestKey::new();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.serial_number = Some(SerialNumber::from(serial));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_identifier_method = KeyIdMethod::PreSpecified(key.key_id());
        adjust(&mut params);
        let cert = params.signed_by(&key, &self.intermediate).unwrap();
        Leaf {
            chain_pem: format!("{}{}", cert.pem(), self.intermediate_pem),
            key_pem: key.pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// Where a listener's files are, and writing a leaf's pair there.
struct TlsDir {
    cert: PathBuf,
    key: PathBuf,
}

impl TlsDir {
    fn new(dir: &Path, name: &str, leaf: &Leaf) -> TlsDir {
        let files = TlsDir {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        files.write(leaf);
        files
    }

    /// Replaces both files the way a renewal tool does: written beside, renamed over.
    fn write(&self, leaf: &Leaf) {
        replace(&self.cert, &leaf.chain_pem);
        replace(&self.key, &leaf.key_pem);
    }
}

fn replace(path: &Path, text: &str) {
    let temp = path.with_extension("new");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// A client that trusts only `root_pem`, opening a new connection for every request and
/// keeping what the server showed (`TlsInfo`).
/// Session resumption is off, so that every request is a full handshake, which shows the
/// certificate the listener serves at that moment.
fn client_trusting(root_pem: &str) -> reqwest::Client {
    use rustls::pki_types::pem::PemObject;
    jwksd::tokens::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(root_pem.as_bytes()).unwrap())
        .unwrap();
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.resumption = rustls::client::Resumption::disabled();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// The end-entity certificate `url`'s server shows a new connection.
async fn served_certificate(client: &reqwest::Client, url: &str) -> Vec<u8> {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("the server's certificate")
        .to_vec()
}

/// Waits until new connections to `url` are shown `expected`, at most `within`.
async fn wait_for_certificate(
    client: &reqwest::Client,
    url: &str,
    expected: &[u8],
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        if served_certificate(client, url).await == expected {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{url} still shows the old certificate after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn public_tls_toml(files: &TlsDir) -> String {
    format!(
        "{}[server]\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
        crate::helpers::EC_DEFAULT,
        files.cert,
        files.key
    )
}

#[tokio::test]
async fn the_jwks_is_served_over_https_to_a_client_trusting_only_the_test_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let leaf = pki.leaf(1);
    let files = TlsDir::new(dir.path(), "public", &leaf);
    let app = try_build(dir.path(), &public_tls_toml(&files))
        .await
        .unwrap();
    let port = app.public_addr().port();
    let app = into_test_app(app);

    let client = client_trusting(&pki.root_pem);
    let url = format!("https://localhost:{port}/.well-known/jwks.json");
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let jwks: serde_json::Value = response.json().await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "{jwks}");
    assert_eq!(served_certificate(&client, &url).await, leaf.der);
    // By address too: the leaf names 127.0.0.1.
    let by_ip = format!("https://127.0.0.1:{port}/healthz");
    assert_eq!(client.get(&by_ip).send().await.unwrap().status(), 200);

    // Another CA's client refuses the chain: the trust above is real.
    let stranger = client_trusting(&TestPki::new().root_pem);
    let refused = stranger.get(&url).send().await;
    assert!(refused.is_err(), "a client of another CA connected");

    // Plain HTTP to the TLS port gets no answer of jwksd's.
    let plain = crate::helpers::http_client()
        .get(format!("http://127.0.0.1:{port}/.well-known/jwks.json"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    match plain {
        Err(_) => {}
        Ok(response) => assert!(
            !response.status().is_success(),
            "plain HTTP was answered {}",
            response.status()
        ),
    }
    app.stop().await;
}

#[tokio::test]
async fn a_replaced_certificate_is_served_without_restart_and_a_broken_one_keeps_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let first = pki.leaf(1);
    let files = TlsDir::new(dir.path(), "public", &first);
    let app = try_build(dir.path(), &public_tls_toml(&files))
        .await
        .unwrap();
    let port = app.public_addr().port();
    let app = into_test_app(app);
    let client = client_trusting(&pki.root_pem);
    let url = format!("https://localhost:{port}/.well-known/jwks.json");
    assert_eq!(served_certificate(&client, &url).await, first.der);
    // A client that resumes sessions, as most do: it holds one from the first certificate.
    let resuming = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.root_pem.as_bytes()).unwrap())
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    assert_eq!(served_certificate(&resuming, &url).await, first.der);

    // A renewal: a new leaf (new serial, new key) written over both files.
    let second = pki.leaf(2);
    files.write(&second);
    let poll = jwksd::tls::POLL_INTERVAL;
    let took = wait_for_certificate(&client, &url, &second.der, poll * 3).await;
    eprintln!("the new certificate was served after {took:?} (poll every {poll:?})");
    // The sessions of the old certificate are forgotten: the resuming client gets a full
    // handshake with the new one.
    assert!(
        served_certificate(&resuming, &url).await == second.der,
        "a resumed session still shows the replaced certificate"
    );

    // Broken replacements, one after the other: a key that belongs to another certificate,
    // a key file that is not a key, a missing key file, an empty chain. Each keeps the
    // second certificate serving.
    let third = pki.leaf(3);
    std::fs::write(&files.cert, &third.chain_pem).unwrap();
    std::fs::write(&files.key, &second.key_pem).unwrap();
    tokio::time::sleep(poll * 2 + Duration::from_millis(500)).await;
    assert_eq!(served_certificate(&client, &url).await, second.der);
    std::fs::write(
        &files.key,
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    tokio::time::sleep(poll + Duration::from_millis(500)).await;
    assert_eq!(served_certificate(&client, &url).await, second.der);
    std::fs::remove_file(&files.key).unwrap();
    std::fs::write(&files.cert, "").unwrap();
    tokio::time::sleep(poll + Duration::from_millis(500)).await;
    assert_eq!(served_certificate(&client, &url).await, second.der);

    // Once a good pair is back, it is served.
    files.write(&third);
    wait_for_certificate(&client, &url, &third.der, poll * 3).await;
    app.stop().await;
}

#[tokio::test]
async fn a_listener_reloads_its_pair_and_says_why_it_refuses_one() {
    // The reload step itself, as the poll and SIGHUP call it.
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let first = pki.leaf(1);
    let files = TlsDir::new(dir.path(), "public", &first);
    let config = test_config(dir.path(), &public_tls_toml(&files)).unwrap();
    let tls_files = config.server.public_tls.clone().unwrap();
    let listener = jwksd::tls::ListenerTls::open(&tls_files).unwrap();
    use jwksd::tls::Reloaded;
    assert_eq!(listener.reload(), Reloaded::Unchanged);
    let second = pki.leaf(2);
    std::fs::write(&files.key, &second.key_pem).unwrap();
    let Reloaded::Refused(why) = listener.reload() else {
        panic!("a key of another certificate was accepted")
    };
    assert!(why.contains("does not belong"), "{why}");
    assert!(why.contains(&files.key.display().to_string()), "{why}");
    assert!(why.contains("server.tls_key_file"), "{why}");
    assert_no_key_text(&why, &second.key_pem);
    assert_eq!(listener.reload(), Reloaded::StillRefused, "said once");
    std::fs::write(&files.cert, &second.chain_pem).unwrap();
    assert_eq!(listener.reload(), Reloaded::Loaded);
    assert_eq!(listener.reload(), Reloaded::Unchanged);
}

/// No line of the key's base64 appears in `message`.
fn assert_no_key_text(message: &str, key_pem: &str) {
    for line in key_pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!message.contains(line), "the key is shown: {message}");
        assert!(
            !message.contains(&line[..16]),
            "the key is shown: {message}"
        );
    }
}

#[tokio::test]
async fn tls_files_that_cannot_serve_refuse_the_start_naming_the_file_and_never_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let leaf = pki.leaf(1);
    let other = pki.leaf(2);
    let files = TlsDir::new(dir.path(), "private", &leaf);
    let toml = |cert: &Path, key: &Path| {
        format!(
            "{}[server]\nprivate_tls_cert_file = {cert:?}\nprivate_tls_key_file = {key:?}\n",
            crate::helpers::EC_DEFAULT
        )
    };
    let refusal = |toml: String| {
        let dir = dir.path().to_owned();
        async move {
            match try_build(&dir, &toml).await {
                Ok(_) => panic!("jwksd started with unusable TLS files"),
                Err(e) => e.to_string(),
            }
        }
    };

    // One of a pair alone: a configuration problem naming both keys.
    let err = test_config(
        dir.path(),
        &format!("[server]\nprivate_tls_cert_file = {:?}\n", files.cert),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("server.private_tls_cert_file and server.private_tls_key_file go together"),
        "{err}"
    );
    let err = test_config(
        dir.path(),
        &format!("[server]\ntls_key_file = {:?}\n", files.key),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("server.tls_cert_file and server.tls_key_file"),
        "{err}"
    );

    // A missing file.
    let missing = dir.path().join("missing.crt");
    let err = refusal(toml(&missing, &files.key)).await;
    assert!(err.contains("server.private_tls_cert_file"), "{err}");
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(err.contains("cannot read"), "{err}");

    // A key that belongs to another certificate.
    std::fs::write(&files.key, &other.key_pem).unwrap();
    let err = refusal(toml(&files.cert, &files.key)).await;
    assert!(err.contains("does not belong"), "{err}");
    assert_no_key_text(&err, &other.key_pem);

    // A key file whose PEM is damaged: the parser's words are not passed on.
    let damaged = other.key_pem.replacen("-----END PRIVATE KEY-----", "", 1);
    std::fs::write(&files.key, &damaged).unwrap();
    let err = refusal(toml(&files.cert, &files.key)).await;
    assert!(err.contains("server.private_tls_key_file"), "{err}");
    assert!(err.contains("not a readable PEM private key"), "{err}");
    assert_no_key_text(&err, &other.key_pem);

    // A certificate file holding a key instead, and the key file holding certificates.
    std::fs::write(&files.key, &leaf.key_pem).unwrap();
    let err = refusal(toml(&files.key, &files.cert)).await;
    assert!(err.contains("holds no certificate"), "{err}");
    let err = refusal(toml(&files.cert, &files.cert)).await;
    assert!(err.contains("holds no private key"), "{err}");
    // Nothing was made: the refusals come before the store.
    assert!(!crate::helpers::store_exists(dir.path()).await);
}

#[tokio::test]
async fn a_private_listener_beyond_loopback_without_tls_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let load = |env: &[(&str, &str)]| {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        jwksd::config::Config::load(None, env).unwrap().warnings
    };
    let warnings = load(&[("JWKSD_SERVER__PRIVATE_LISTEN", "0.0.0.0:8081")]);
    let warning = warnings
        .iter()
        .find(|w| w.contains("server.private_listen"))
        .unwrap_or_else(|| panic!("no warning: {warnings:?}"));
    assert!(
        warning.contains("server.private_tls_cert_file")
            && warning.contains("server.private_tls_key_file"),
        "says what to set: {warning}"
    );
    for loopback in ["127.0.0.1:8081", "localhost:8081"] {
        let warnings = load(&[("JWKSD_SERVER__PRIVATE_LISTEN", loopback)]);
        assert!(warnings.is_empty(), "{loopback}: {warnings:?}");
    }
    // (An IPv6 address from a variable reads as a TOML list: written in the file here.)
    let file = dir.path().join("v6.toml");
    std::fs::write(&file, "[server]\nprivate_listen = \"[::1]:8081\"\n").unwrap();
    let v6 = jwksd::config::Config::load(Some(&file), Vec::new()).unwrap();
    assert!(v6.warnings.is_empty(), "{:?}", v6.warnings);
    // With TLS, no warning; the variables name the files (they are not read as values).
    let pki = TestPki::new();
    let files = TlsDir::new(dir.path(), "private", &pki.leaf(1));
    let cert = files.cert.display().to_string();
    let key = files.key.display().to_string();
    let env = [
        ("JWKSD_SERVER__PRIVATE_LISTEN", "0.0.0.0:8081"),
        ("JWKSD_SERVER__PRIVATE_TLS_CERT_FILE", cert.as_str()),
        ("JWKSD_SERVER__PRIVATE_TLS_KEY_FILE", key.as_str()),
    ];
    assert!(load(&env).is_empty());
    let loaded = jwksd::config::Config::load(
        None,
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .unwrap();
    assert_eq!(loaded.server.private_tls.unwrap().key_file, files.key);
}

/// `jwksd serve` with both listeners on HTTPS, configured through `JWKSD_` variables.
struct TlsService {
    child: KillOnDrop,
    public_port: u16,
    private_port: u16,
    log: PathBuf,
}

impl TlsService {
    async fn start(dir: &Path, public: &TlsDir, private: &TlsDir) -> TlsService {
        std::fs::write(dir.join("jwksd.toml"), crate::helpers::EC_DEFAULT).unwrap();
        let log_path = dir.join("jwksd.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_jwksd"))
                .args(["serve", "--config", "jwksd.toml"])
                .current_dir(dir)
                .envs(Self::env(public, private))
                .env("JWKSD_LOG", "info")
                .envs(crate::helpers::backend_env(dir))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let (public_addr, private_addr) = wait_until_listening(&mut child, read_log).await;
        TlsService {
            child,
            public_port: public_addr.port(),
            private_port: private_addr.port(),
            log: log_path,
        }
    }

    fn env(public: &TlsDir, private: &TlsDir) -> Vec<(String, String)> {
        [
            ("JWKSD_SERVER__PUBLIC_LISTEN", "127.0.0.1:0".to_owned()),
            ("JWKSD_SERVER__PRIVATE_LISTEN", "127.0.0.1:0".to_owned()),
            (
                "JWKSD_SERVER__TLS_CERT_FILE",
                public.cert.display().to_string(),
            ),
            (
                "JWKSD_SERVER__TLS_KEY_FILE",
                public.key.display().to_string(),
            ),
            (
                "JWKSD_SERVER__PRIVATE_TLS_CERT_FILE",
                private.cert.display().to_string(),
            ),
            (
                "JWKSD_SERVER__PRIVATE_TLS_KEY_FILE",
                private.key.display().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs a CLI command in `dir` with the service's configuration (file and variables,
    /// the ports it really bound) and `extra` variables.
    fn cli(
        &self,
        dir: &Path,
        public: &TlsDir,
        private: &TlsDir,
        args: &[&str],
        extra: &[(&str, String)],
    ) -> std::process::Output {
        let mut env = Self::env(public, private);
        env[0].1 = format!("127.0.0.1:{}", self.public_port);
        env[1].1 = format!("127.0.0.1:{}", self.private_port);
        Command::new(env!("CARGO_BIN_EXE_jwksd"))
            .args(args)
            .args(["--config", "jwksd.toml"])
            .current_dir(dir)
            .env_remove("JWKSD_SERVER")
            .env_remove("JWKSD_ADMIN_TOKEN")
            .env_remove("JWKSD_CA_FILE")
            .envs(env)
            .envs(crate::helpers::backend_env(dir))
            .envs(extra.iter().map(|(k, v)| (k.to_string(), v.clone())))
            .output()
            .unwrap()
    }
}

#[tokio::test]
async fn the_cli_and_the_probe_work_against_https_listeners_and_sighup_reloads_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let public = TlsDir::new(dir.path(), "public", &pki.leaf(1));
    let private = TlsDir::new(dir.path(), "private", &pki.leaf(11));
    let service = TlsService::start(dir.path(), &public, &private).await;
    let client = client_trusting(&pki.root_pem);
    let ready = format!("https://localhost:{}/readyz", service.public_port);
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(&ready).send().await.map(|r| r.status()).ok() != Some(reqwest::StatusCode::OK)
    {
        assert!(Instant::now() < deadline, "not ready: {}", service.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Through the configuration: https on loopback, trusting the configured certificate.
    let run = |args: &[&str], extra: &[(&str, String)]| {
        service.cli(dir.path(), &public, &private, args, extra)
    };
    let probe = run(&["healthcheck"], &[]);
    assert!(
        probe.status.success(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let listed = run(&["keys", "list"], &[]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("current"));

    // Given a URL: the system's roots, plus JWKSD_CA_FILE.
    let server = format!("https://localhost:{}", service.private_port);
    let without_ca = run(&["keys", "list"], &[("JWKSD_SERVER", server.clone())]);
    assert!(!without_ca.status.success(), "trusted a test CA by default");
    let root = dir.path().join("root.pem");
    std::fs::write(&root, &pki.root_pem).unwrap();
    let with_ca = run(
        &["keys", "list"],
        &[
            ("JWKSD_SERVER", server),
            ("JWKSD_CA_FILE", root.display().to_string()),
        ],
    );
    assert!(
        with_ca.status.success(),
        "{}",
        String::from_utf8_lossy(&with_ca.stderr)
    );
    let probe_url = run(
        &["healthcheck", "--url", &ready],
        &[("JWKSD_CA_FILE", root.display().to_string())],
    );
    assert!(probe_url.status.success());

    // SIGHUP: the new pair at once, said in the log.
    let renewed = pki.leaf(2);
    public.write(&renewed);
    let status = Command::new("kill")
        .args(["-s", "HUP", &service.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let url = format!("https://localhost:{}/healthz", service.public_port);
    wait_for_certificate(&client, &url, &renewed.der, Duration::from_secs(5)).await;
    // The poll may have seen the files in the moment between their writing and the signal;
    // then SIGHUP finds them unchanged, and says so.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = service.log();
        if log.contains("SIGHUP: loaded the new TLS certificate and key of server.tls_cert_file")
            || (log.contains("a TLS file changed: loaded the new TLS certificate")
                && log.contains("SIGHUP: the TLS files of server.tls_cert_file are unchanged"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The log never holds a key.
    assert_no_key_text(&service.log(), &renewed.key_pem);
    // The CLI trusts the renewed private certificate as soon as it is served.
    let renewed_private = pki.leaf(12);
    private.write(&renewed_private);
    let private_url = format!("https://localhost:{}/healthz", service.private_port);
    wait_for_certificate(
        &client,
        &private_url,
        &renewed_private.der,
        jwksd::tls::POLL_INTERVAL * 3,
    )
    .await;
    let listed = run(&["keys", "list"], &[]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
}

/// The value of `series` (`name{labels}` as written) in the `/metrics` of the private
/// listener at `private_port`, over HTTPS.
async fn scraped(client: &reqwest::Client, private_port: u16, series: &str) -> Option<f64> {
    let text = client
        .get(format!("https://localhost:{private_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_certificate_expiring_within_two_weeks_is_warned_about_and_its_date_is_a_metric() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let now = jwksd::unix_now();
    let in_three_days = now + 3 * 86_400;
    let public = TlsDir::new(dir.path(), "public", &pki.leaf_until(1, in_three_days));
    // rcgen's default notAfter, 4096-01-01: nothing to warn about on the private listener.
    let private = TlsDir::new(dir.path(), "private", &pki.leaf(11));
    let service = TlsService::start(dir.path(), &public, &private).await;
    let client = client_trusting(&pki.root_pem);
    let public_series = "jwksd_tls_certificate_expiry_timestamp_seconds{listener=\"public\"}";
    let private_series = "jwksd_tls_certificate_expiry_timestamp_seconds{listener=\"private\"}";
    assert_eq!(
        scraped(&client, service.private_port, public_series).await,
        Some(in_three_days as f64)
    );
    assert_eq!(
        scraped(&client, service.private_port, private_series).await,
        Some(67_090_118_400.0)
    );

    // The start said it, naming the listener, the file and the date, in words.
    let warning = |log: &str| {
        log.lines()
            .filter(|l| l.contains("WARN") && l.contains("expires in"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let log = service.log();
    let warned = warning(&log);
    assert_eq!(warned.len(), 1, "{log}");
    let expected_date = jwksd::rfc3339(in_three_days).unwrap();
    for part in [
        "public listener",
        &format!("server.tls_cert_file = {}", public.cert.display()),
        &format!("({expected_date})"),
    ] {
        assert!(warned[0].contains(part), "{part:?} not in {}", warned[0]);
    }
    // Three days, less the seconds the start took, if any.
    assert!(
        warned[0].contains(&format!("expires in 3d ({expected_date})"))
            || warned[0].contains(&format!("expires in 2d 23h ({expected_date})")),
        "{}",
        warned[0]
    );

    // Renewed for a year: the gauge follows the reload, and the log has no new warning.
    let in_a_year = now + 365 * 86_400;
    public.write(&pki.leaf_until(2, in_a_year));
    let deadline = Instant::now() + jwksd::tls::POLL_INTERVAL * 3;
    while scraped(&client, service.private_port, public_series).await != Some(in_a_year as f64) {
        assert!(
            Instant::now() < deadline,
            "the gauge did not follow the renewal: {}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = service.log();
    assert!(log.contains("loaded the new TLS certificate and key of server.tls_cert_file"));
    assert_eq!(warning(&log).len(), 1, "{log}");
}
