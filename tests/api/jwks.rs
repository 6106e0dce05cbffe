//! The published JWKS: shape, headers, caching, thumbprints and certificates.

use aws_lc_rs::digest;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::Value;
use x509_cert::der::{Decode, Encode};

use crate::helpers::{assert_problem, spawn_app, spawn_app_with, EC_DEFAULT};

fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn the_jwks_has_the_documented_shape_and_headers() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path()).await;
    let response = app.get_public("/.well-known/jwks.json").await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["access-control-allow-origin"], "*");
    let cache_control = headers["cache-control"].to_str().unwrap();
    let max_age: i64 = cache_control
        .strip_prefix("public, max-age=")
        .unwrap_or_else(|| panic!("{cache_control}"))
        .parse()
        .unwrap();
    assert!((60..=3600).contains(&max_age), "{cache_control}");
    let etag = headers["etag"].to_str().unwrap();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "a strong ETag: {etag}"
    );

    let body: Value = response.json().await.unwrap();
    let keys = body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "a current and a published next key: {body}");
    for key in keys {
        let mut members: Vec<&str> = key
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        members.sort();
        assert_eq!(
            members,
            ["alg", "e", "kid", "kty", "n", "use", "x5c", "x5t#S256"]
        );
        assert_eq!(key["kty"], "RSA");
        assert_eq!(key["use"], "sig");
        assert_eq!(key["alg"], "RS384");
        assert_eq!(key["e"], "AQAB");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(key["n"].as_str().unwrap())
                .unwrap()
                .len(),
            256
        );
    }
    assert_eq!(
        app.jwks("default").await,
        body,
        "the default key set is also served at /jwks/default.json"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_matching_etag_gets_304_and_head_gets_headers_only() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    let first = app.get_public("/.well-known/jwks.json").await;
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let length = first.bytes().await.unwrap().len();

    for header in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
        "*".into(),
    ] {
        let again = app
            .http
            .get(format!("{}/.well-known/jwks.json", app.public))
            .header("If-None-Match", &header)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "If-None-Match: {header}");
        assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
        assert!(again.headers().contains_key("cache-control"));
        assert!(again.bytes().await.unwrap().is_empty());
    }
    let stale = app
        .http
        .get(format!("{}/.well-known/jwks.json", app.public))
        .header("If-None-Match", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);

    let head = app
        .http
        .head(format!("{}/.well-known/jwks.json", app.public))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        length.to_string()
    );
    assert!(head.bytes().await.unwrap().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn every_kid_is_the_rfc7638_thumbprint_of_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(
        dir.path(),
        "[keysets.default]\n[keysets.ec]\nalg = \"ES256\"\n",
    )
    .await;
    let mut seen = 0;
    for keyset in ["default", "ec"] {
        for key in app.jwks(keyset).await["keys"].as_array().unwrap() {
            // RFC 7638 §3.2: required members only, lexicographic order, no whitespace.
            let canonical = match key["kty"].as_str().unwrap() {
                "RSA" => format!(
                    r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                    key["e"].as_str().unwrap(),
                    key["n"].as_str().unwrap()
                ),
                "EC" => format!(
                    r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
                    key["crv"].as_str().unwrap(),
                    key["x"].as_str().unwrap(),
                    key["y"].as_str().unwrap()
                ),
                other => panic!("unexpected kty {other}"),
            };
            let thumbprint = b64url(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref());
            assert_eq!(key["kid"], thumbprint.as_str());
            seen += 1;
        }
    }
    assert_eq!(seen, 4);
    app.stop().await;
}

/// Parses `x5c[0]`, checks `x5t#S256`, the subject, that the certificate's key is the
/// JWK's key, and that the certificate verifies under the JWK's key (it is self-signed).
fn check_certificate(key: &Value, expected_cn: &str) -> Vec<u8> {
    let der_bytes = STANDARD.decode(key["x5c"][0].as_str().unwrap()).unwrap();
    assert_eq!(
        key["x5t#S256"],
        b64url(digest::digest(&digest::SHA256, &der_bytes).as_ref()).as_str()
    );
    let cert = x509_cert::Certificate::from_der(&der_bytes).unwrap();
    assert_eq!(
        cert.tbs_certificate.subject.to_string(),
        format!("CN={expected_cn}")
    );
    let spk = cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    let tbs = cert.tbs_certificate.to_der().unwrap();
    let signature = cert.signature.raw_bytes();
    let jwk_bytes = |member: &str| {
        URL_SAFE_NO_PAD
            .decode(key[member].as_str().unwrap())
            .unwrap()
    };
    match key["kty"].as_str().unwrap() {
        "RSA" => {
            let rsa = pkcs1::RsaPublicKey::from_der(spk).unwrap();
            assert_eq!(rsa.modulus.as_bytes(), jwk_bytes("n").as_slice());
            assert_eq!(rsa.public_exponent.as_bytes(), jwk_bytes("e").as_slice());
            aws_lc_rs::signature::RsaPublicKeyComponents {
                n: jwk_bytes("n"),
                e: jwk_bytes("e"),
            }
            .verify(
                &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA384,
                &tbs,
                signature,
            )
            .expect("the certificate is signed by the JWK's key");
        }
        "EC" => {
            let mut point = vec![4u8];
            point.extend(jwk_bytes("x"));
            point.extend(jwk_bytes("y"));
            assert_eq!(spk, point.as_slice());
            aws_lc_rs::signature::UnparsedPublicKey::new(
                &aws_lc_rs::signature::ECDSA_P384_SHA384_ASN1,
                &point,
            )
            .verify(&tbs, signature)
            .expect("the certificate is signed by the JWK's key");
        }
        other => panic!("unexpected kty {other}"),
    }
    der_bytes
}

#[tokio::test]
async fn x5c_and_the_pem_endpoint_carry_a_certificate_over_the_same_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(
        dir.path(),
        "[keysets.default]\n[keysets.epic-prod]\nalg = \"ES384\"\ncert_subject = \"CN=epic-prod\"\n",
    )
    .await;
    for (keyset, alg) in [("default", "RS384"), ("epic-prod", "ES384")] {
        for key in app.jwks(keyset).await["keys"].as_array().unwrap() {
            assert_eq!(key["alg"], alg);
            let der_bytes = check_certificate(key, keyset);
            let pem = app
                .get_public(&format!("/certs/{}.pem", key["kid"].as_str().unwrap()))
                .await;
            assert_eq!(pem.status(), 200);
            assert_eq!(
                pem.headers()["content-type"],
                "application/pem-certificate-chain"
            );
            let pem = pem.text().await.unwrap();
            let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
            assert_eq!(STANDARD.decode(body).unwrap(), der_bytes);
        }
    }
    assert_problem(app.get_public("/certs/not-a-kid.pem").await, 404).await;
    app.stop().await;
}

#[tokio::test]
async fn several_key_sets_are_served_at_their_own_urls_with_their_own_keys() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(
        dir.path(),
        r#"
[keysets.default]
[keysets.epic-nonprod]
alg = "ES384"
[keysets.epic-prod]
alg = "RS256"
rsa_bits = 3072
"#,
    )
    .await;
    let default = app.jwks("default").await;
    let nonprod = app.jwks("epic-nonprod").await;
    let prod = app.jwks("epic-prod").await;
    assert_eq!(nonprod["keys"][0]["kty"], "EC");
    assert_eq!(nonprod["keys"][0]["crv"], "P-384");
    assert_eq!(prod["keys"][0]["alg"], "RS256");
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(prod["keys"][0]["n"].as_str().unwrap())
            .unwrap()
            .len(),
        384
    );
    let mut all: Vec<String> = [&default, &nonprod, &prod]
        .iter()
        .flat_map(|set| {
            set["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_owned())
        })
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 6, "no key is shared between key sets");
    assert_problem(app.get_public("/jwks/nope.json").await, 404).await;

    let listing: Value = app
        .admin(reqwest::Method::GET, "/admin/v1/keysets")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = listing["keysets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "epic-nonprod", "epic-prod"]);
    assert_eq!(listing["keysets"][1]["jwks_url"], "/jwks/epic-nonprod.json");
    app.stop().await;
}

#[tokio::test]
async fn max_age_is_shortened_to_the_next_planned_change() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(
        dir.path(),
        "[keysets.default]\nalg = \"ES256\"\njwks_max_age = \"1h\"\nretire_grace = \"10m\"\n",
    )
    .await;
    assert_eq!(app.rotate("default", true).await.status(), 200);
    // The retired key leaves in 10 minutes: no verifier may cache past that.
    let response = app.get_public("/.well-known/jwks.json").await;
    let cache_control = response.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_owned();
    let max_age: i64 = cache_control
        .trim_start_matches("public, max-age=")
        .parse()
        .unwrap();
    assert!((590..=600).contains(&max_age), "{cache_control}");
    app.stop().await;
}
