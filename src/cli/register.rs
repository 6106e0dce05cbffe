//! `jwksd register`: everything a vendor's portal asks for, for one client, with the
//! vendor's own pitfalls (from [`crate::vendor`]) spelled out, and the verdicts of the
//! same JWKS-URL checks `jwksd doctor` runs ([`super::doctor::jwks_url_checks`]), so that
//! the two never disagree about a URL.

use std::path::Path;

use anyhow::bail;
use base64::Engine;
use serde::Serialize;

use super::client::{pretty, Client};
use super::doctor::{jwks_url_checks, Check, Verdict};
use super::AdminArgs;
use crate::api::{Jwk, Jwks};
use crate::keys::cert::to_pem;
use crate::vendor::Vendor;

/// `jwksd register`: prints the kit (as JSON with `--json`) and, with `out`, writes its
/// files there; `out` must not be a non-empty directory unless `force`.
pub async fn run(
    args: &AdminArgs,
    client: &str,
    vendor: Vendor,
    out: Option<&Path>,
    force: bool,
) -> anyhow::Result<()> {
    if let Some(dir) = out {
        check_out_dir(dir, force)?;
    }
    let api = args.client()?;
    let outbound = crate::tokens::outbound_client()?;
    let kit = kit(&api, &outbound, client, vendor).await?;
    if args.json {
        println!("{}", pretty(&kit.summary)?);
    } else {
        print!("{}", kit.text);
        for c in &kit.summary.checks {
            if matches!(c.verdict, Verdict::Warn | Verdict::Fail) {
                eprintln!("warning: {}: {}", c.check, c.detail);
            }
        }
    }
    if let Some(dir) = out {
        write(&kit, dir)?;
        eprintln!("wrote {} files to {}", kit.files.len(), dir.display());
    }
    Ok(())
}

/// Refuses to write into an existing directory that holds anything, unless forced: a kit
/// written over another client's would mix their keys.
fn check_out_dir(dir: &Path, force: bool) -> anyhow::Result<()> {
    match std::fs::read_dir(dir).map(|mut entries| entries.next().is_some()) {
        Ok(true) if !force => bail!(
            "{} exists and is not empty; choose a new directory, or pass --force to write the \
             kit's files into it (files of the same name are replaced)",
            dir.display()
        ),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) if dir.exists() && !dir.is_dir() => {
            bail!("{} exists and is not a directory", dir.display())
        }
        Err(e) => bail!("cannot read {}: {e}", dir.display()),
    }
}

/// The registration kit: the text to print, the same as data (`--json`), and the files to
/// write.
pub struct Kit {
    pub text: String,
    pub summary: KitSummary,
    pub files: Vec<(String, String)>,
}

/// What `register --json` prints.
#[derive(Debug, Serialize)]
pub struct KitSummary {
    pub vendor: &'static str,
    pub client: String,
    pub client_id: String,
    /// `null` while `server.public_url` is not set.
    pub jwks_url: Option<String>,
    pub algorithm: String,
    pub token_endpoint: Option<String>,
    pub scope: Option<String>,
    pub keys: Vec<KitKey>,
    pub notes: Vec<&'static str>,
    /// The JWKS-URL checks `jwksd doctor` runs too.
    pub checks: Vec<Check>,
}

/// One key to register.
#[derive(Debug, Serialize)]
pub struct KitKey {
    /// `current` or `next`.
    pub role: &'static str,
    pub kid: String,
    pub jwk: Jwk,
    pub certificate_pem: String,
}

/// Gathers the kit for `client_name` from the running service, and checks its JWKS URL
/// from this host as `doctor` does.
pub async fn kit(
    admin: &Client,
    outbound: &reqwest::Client,
    client_name: &str,
    vendor: Vendor,
) -> anyhow::Result<Kit> {
    let (client, keyset) = admin.client_and_keyset(client_name).await?;
    let jwks = admin.jwks(&keyset.name).await?;
    let alg = keyset.alg.as_str();
    let checks = jwks_url_checks(
        outbound,
        &client.jwks_url,
        keyset.current_kid.as_deref().unwrap_or_default(),
        keyset.next_kid.as_deref().unwrap_or_default(),
        vendor,
    )
    .await;
    let mut keys = Vec::new();
    let mut text = String::new();
    let mut line = |s: String| {
        text.push_str(&s);
        text.push('\n');
    };
    line(format!(
        "Registration for {} — client {}",
        vendor.title(),
        client.name
    ));
    line(String::new());
    let jwks_url = &client.jwks_url;
    if jwks_url.contains("://") {
        line(format!("JWKS URL:        {jwks_url}"));
    } else {
        line(format!("JWKS URL:        https://<server.public_url>{jwks_url}   (set server.public_url to get the full URL)"));
    }
    line(format!("client_id:       {}", client.client_id));
    line(format!("algorithm:       {alg}"));
    line(
        "auth method:     private_key_jwt (client_credentials, RFC 7523 client assertion)"
            .to_owned(),
    );
    line(format!(
        "token endpoint:  {}",
        client
            .token_endpoint
            .as_deref()
            .unwrap_or("(discovered from fhir_base_url)")
    ));
    line(format!(
        "scopes:          {}",
        client.scope.as_deref().unwrap_or("(none configured)")
    ));
    if !vendor.accepts(alg) {
        line(format!(
            "WARNING:         {} accepts {}, not {alg}: create a key set with an accepted alg for this client",
            vendor.title(),
            vendor.algorithms().join(", ")
        ));
    }
    line(String::new());

    let mut files = Vec::new();
    let mut published = Vec::new();
    for (role, kid) in [("current", &keyset.current_kid), ("next", &keyset.next_kid)] {
        let Some(kid) = kid.as_deref() else { continue };
        let Some(jwk) = jwks.keys.iter().find(|k| k.kid == kid) else {
            continue;
        };
        let der = jwk
            .x5c
            .first()
            .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok())
            .unwrap_or_default();
        let pem = to_pem(&der);
        line(format!("{role} key {kid}"));
        line(format!("JWK:\n{}", pretty(jwk)?));
        line(format!("certificate (PEM):\n{pem}"));
        files.push((format!("{kid}.pem"), pem.clone()));
        published.push(jwk.clone());
        keys.push(KitKey {
            role,
            kid: kid.to_owned(),
            jwk: jwk.clone(),
            certificate_pem: pem,
        });
    }
    // An uploaded key set must also keep retired keys until their grace ends, or the
    // assertions they signed stop verifying early.
    for jwk in &jwks.keys {
        if !published.contains(jwk) {
            published.push(jwk.clone());
        }
    }
    line("Checks of the JWKS URL (the same as `jwksd doctor`):".to_owned());
    for c in &checks {
        let tag = match c.verdict {
            Verdict::Ok => "ok",
            Verdict::Warn => "warning",
            Verdict::Fail => "FAILED",
            Verdict::Skip => "skipped",
        };
        line(format!("- {tag}: {} ({})", c.detail, c.check));
        if let (Some(fix), Verdict::Warn | Verdict::Fail) = (&c.fix, c.verdict) {
            line(format!("  fix: {fix}"));
        }
    }
    line(String::new());
    line(format!("Notes for {}:", vendor.title()));
    for note in vendor.registration_notes() {
        line(format!("- {note}"));
    }
    files.push((
        "jwks.json".into(),
        pretty(&Jwks { keys: published })? + "\n",
    ));
    files.push(("README.txt".into(), text.clone()));
    let summary = KitSummary {
        vendor: vendor.id(),
        client: client.name.clone(),
        client_id: client.client_id.clone(),
        jwks_url: Some(client.jwks_url.clone()).filter(|u| u.contains("://")),
        algorithm: alg.to_owned(),
        token_endpoint: client.token_endpoint.clone(),
        scope: client.scope.clone(),
        keys,
        notes: vendor.registration_notes().to_vec(),
        checks,
    };
    Ok(Kit {
        text,
        summary,
        files,
    })
}

/// Writes the kit's files into `dir` (created if needed).
pub fn write(kit: &Kit, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, contents) in &kit.files {
        std::fs::write(dir.join(name), contents)?;
    }
    Ok(())
}
