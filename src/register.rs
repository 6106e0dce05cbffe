//! `jwksd register`: everything a vendor's portal asks for, for one client, with the
//! vendor's own pitfalls spelled out.

use std::path::Path;

use base64::Engine;

use crate::doctor::AdminApi;
use crate::keys::cert::to_pem;

/// EHR vendors with specific registration steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Vendor {
    Eclinicalworks,
    Epic,
    Oracle,
    Athena,
    Generic,
}

impl Vendor {
    fn title(self) -> &'static str {
        match self {
            Vendor::Eclinicalworks => "eClinicalWorks",
            Vendor::Epic => "Epic",
            Vendor::Oracle => "Oracle Health (Cerner)",
            Vendor::Athena => "athenahealth",
            Vendor::Generic => "a SMART Backend Services server",
        }
    }

    fn algorithms(self) -> &'static [&'static str] {
        match self {
            Vendor::Eclinicalworks | Vendor::Athena => &["RS384"],
            Vendor::Epic => &["RS384", "ES256", "ES384"],
            Vendor::Oracle | Vendor::Generic => &["RS384", "ES384"],
        }
    }

    fn notes(self) -> &'static [&'static str] {
        match self {
            Vendor::Eclinicalworks => &[
                "Register the JWKS URL in the eClinicalWorks developer portal, then ask eClinicalWorks support to allow-list it: until they do, every token request fails with 401 invalid_client.",
                "eClinicalWorks accepts RS384 only.",
                "The practice code is a path segment of the FHIR base URL (https://fhir4.eclinicalworks.com/fhir/r4/<practice>), not a token parameter.",
                "Backend tokens last 300 s and about 250 calls a minute per practice count against the limit, /token included: let services use POST /v1/tokens (cached) instead of asking per FHIR call.",
            ],
            Vendor::Epic => &[
                "Epic wants separate key pairs for non-production and production: give each its own jwksd key set (e.g. epic-nonprod, epic-prod) and register each client with its own JWKS URL.",
                "A hosted JWKS URL is mandatory for backend apps from 2026-02-23.",
                "Epic does not follow redirects: register the final URL.",
                "RSA keys must be at least 2048 bits; Epic accepts RS384, ES256 and ES384.",
            ],
            Vendor::Oracle => &[
                "Register the JWKS URL in the system-account console. If it only accepts an uploaded key set, upload jwks.json, which holds the current and the next key (and any retired key still in its grace).",
                "With an uploaded key set, every rotation needs a new upload: run `jwksd register` again after each rotation and upload jwks.json within prepublish, before the next key signs.",
                "Token endpoints are per tenant: the token endpoint below must be the tenant's.",
            ],
            Vendor::Athena => &[
                "Register the JWKS URL (or import jwks.json) for the app.",
                "Tokens last one hour and production allows about 50 token requests a minute: let services use POST /v1/tokens (cached).",
            ],
            Vendor::Generic => &[
                "Register the JWKS URL as the client's jwks_uri, token_endpoint_auth_method private_key_jwt, with the algorithm above.",
            ],
        }
    }
}

/// The registration kit: the text to print and the files to write.
pub struct Kit {
    pub text: String,
    pub files: Vec<(String, String)>,
}

/// Gathers the kit for `client_name` from the running service.
pub async fn kit(admin: &AdminApi, client_name: &str, vendor: Vendor) -> anyhow::Result<Kit> {
    let (client, keyset) = admin.client_and_keyset(client_name).await?;
    let keyset_name = keyset["name"].as_str().unwrap_or("default");
    let jwks = admin.get(&["keysets", keyset_name, "jwks"]).await?;
    let alg = keyset["alg"].as_str().unwrap_or_default();
    let mut text = String::new();
    let mut line = |s: String| {
        text.push_str(&s);
        text.push('\n');
    };
    line(format!(
        "Registration for {} — client {}",
        vendor.title(),
        client["name"].as_str().unwrap_or("")
    ));
    line(String::new());
    let jwks_url = client["jwks_url"].as_str().unwrap_or_default();
    if jwks_url.contains("://") {
        line(format!("JWKS URL:        {jwks_url}"));
    } else {
        line(format!("JWKS URL:        https://<server.public_url>{jwks_url}   (set server.public_url to get the full URL)"));
    }
    line(format!(
        "client_id:       {}",
        client["client_id"].as_str().unwrap_or("")
    ));
    line(format!("algorithm:       {alg}"));
    line(
        "auth method:     private_key_jwt (client_credentials, RFC 7523 client assertion)"
            .to_owned(),
    );
    line(format!(
        "token endpoint:  {}",
        client["token_endpoint"]
            .as_str()
            .unwrap_or("(discovered from fhir_base_url)")
    ));
    line(format!(
        "scopes:          {}",
        client["scope"].as_str().unwrap_or("(none configured)")
    ));
    if !vendor.algorithms().contains(&alg) {
        line(format!(
            "WARNING:         {} accepts {}, not {alg}: create a key set with an accepted alg for this client",
            vendor.title(),
            vendor.algorithms().join(", ")
        ));
    }
    line(String::new());

    let mut files = Vec::new();
    let mut published = Vec::new();
    for (role, kid) in [
        ("current", &keyset["current_kid"]),
        ("next", &keyset["next_kid"]),
    ] {
        let Some(kid) = kid.as_str() else { continue };
        let Some(jwk) = jwks["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|k| k["kid"] == kid)
        else {
            continue;
        };
        let der = jwk["x5c"][0]
            .as_str()
            .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok())
            .unwrap_or_default();
        let pem = to_pem(&der);
        line(format!("{role} key {kid}"));
        line(format!("JWK:\n{}", serde_json::to_string_pretty(jwk)?));
        line(format!("certificate (PEM):\n{pem}"));
        files.push((format!("{kid}.pem"), pem));
        published.push(jwk.clone());
    }
    // An uploaded key set must also keep retired keys until their grace ends, or the
    // assertions they signed stop verifying early.
    for jwk in jwks["keys"].as_array().into_iter().flatten() {
        if !published.contains(jwk) {
            published.push(jwk.clone());
        }
    }
    line(format!("Notes for {}:", vendor.title()));
    for note in vendor.notes() {
        line(format!("- {note}"));
    }
    files.push((
        "jwks.json".into(),
        serde_json::to_string_pretty(&serde_json::json!({ "keys": published }))? + "\n",
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
