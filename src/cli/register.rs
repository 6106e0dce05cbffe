//! `jwksd register`: everything a vendor's portal asks for, for one client, with the
//! vendor's own pitfalls (from [`crate::vendor`]) spelled out.

use std::path::Path;

use base64::Engine;

use super::client::{pretty, Client};
use super::AdminArgs;
use crate::api::Jwks;
use crate::keys::cert::to_pem;
use crate::vendor::Vendor;

/// `jwksd register`: prints the kit and, with `out`, writes its files there.
pub async fn run(
    args: &AdminArgs,
    client: &str,
    vendor: Vendor,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    let api = args.client()?;
    let kit = kit(&api, client, vendor).await?;
    print!("{}", kit.text);
    if let Some(dir) = out {
        write(&kit, dir)?;
        eprintln!("wrote {} files to {}", kit.files.len(), dir.display());
    }
    Ok(())
}

/// The registration kit: the text to print and the files to write.
pub struct Kit {
    pub text: String,
    pub files: Vec<(String, String)>,
}

/// Gathers the kit for `client_name` from the running service.
pub async fn kit(admin: &Client, client_name: &str, vendor: Vendor) -> anyhow::Result<Kit> {
    let (client, keyset) = admin.client_and_keyset(client_name).await?;
    let jwks = admin.jwks(&keyset.name).await?;
    let alg = keyset.alg.as_str();
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
        files.push((format!("{kid}.pem"), pem));
        published.push(jwk.clone());
    }
    // An uploaded key set must also keep retired keys until their grace ends, or the
    // assertions they signed stop verifying early.
    for jwk in &jwks.keys {
        if !published.contains(jwk) {
            published.push(jwk.clone());
        }
    }
    line(format!("Notes for {}:", vendor.title()));
    for note in vendor.registration_notes() {
        line(format!("- {note}"));
    }
    files.push((
        "jwks.json".into(),
        pretty(&Jwks { keys: published })? + "\n",
    ));
    files.push(("README.txt".into(), text.clone()));
    Ok(Kit { text, files })
}

/// Writes the kit's files into `dir` (created if needed).
pub fn write(kit: &Kit, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, contents) in &kit.files {
        std::fs::write(dir.join(name), contents)?;
    }
    Ok(())
}
