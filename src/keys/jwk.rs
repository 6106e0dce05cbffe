//! Public JWKs (RFC 7517) and their RFC 7638 thumbprints.
//!
//! jwksd renders JWKs itself with serde instead of a JWK crate: the output must carry
//! exactly the members verifiers and vendor portals expect (`kty`, `kid`, `use`, `alg`, the
//! public parameters, `x5c`, `x5t#S256`) and nothing else. A private member cannot appear
//! because [`PublicJwk`] has no field to hold one.

use aws_lc_rs::digest;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::Serialize;

use super::alg::{Algorithm, Curve};

/// The public parameters of a key, as raw big-endian bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicJwk {
    /// RFC 7518 §6.3.1: modulus and public exponent, without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// RFC 7518 §6.2.1: affine coordinates, each exactly the curve's coordinate length.
    Ec {
        curve: Curve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
}

fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl PublicJwk {
    /// The RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order,
    /// no whitespace, base64url without padding. Used as the `kid`, so a kid can be
    /// recomputed by anyone and new key material can never reuse an old kid.
    pub fn thumbprint(&self) -> String {
        // The member values are base64url or fixed ASCII, so no JSON escaping is needed.
        let canonical = match self {
            PublicJwk::Rsa { n, e } => {
                format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64url(e), b64url(n))
            }
            PublicJwk::Ec { curve, x, y } => format!(
                r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
                curve.jwk_name(),
                b64url(x),
                b64url(y)
            ),
        };
        b64url(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    }

    /// Serialises the public parameters for storage (the same JSON members as in the JWK).
    pub fn to_stored_json(&self) -> String {
        let params = self.params();
        // Serialising a struct of strings cannot fail.
        serde_json::to_string(&params).unwrap_or_default()
    }

    /// Parses what [`PublicJwk::to_stored_json`] wrote.
    pub fn from_stored_json(text: &str) -> Option<Self> {
        #[derive(serde::Deserialize)]
        struct Stored {
            kty: String,
            n: Option<String>,
            e: Option<String>,
            crv: Option<String>,
            x: Option<String>,
            y: Option<String>,
        }
        let stored: Stored = serde_json::from_str(text).ok()?;
        let decode = |v: Option<String>| URL_SAFE_NO_PAD.decode(v?).ok();
        match stored.kty.as_str() {
            "RSA" => Some(PublicJwk::Rsa {
                n: decode(stored.n)?,
                e: decode(stored.e)?,
            }),
            "EC" => Some(PublicJwk::Ec {
                curve: match stored.crv.as_deref()? {
                    "P-256" => Curve::P256,
                    "P-384" => Curve::P384,
                    _ => return None,
                },
                x: decode(stored.x)?,
                y: decode(stored.y)?,
            }),
            _ => None,
        }
    }

    fn params(&self) -> JwkParams {
        match self {
            PublicJwk::Rsa { n, e } => JwkParams {
                kty: "RSA",
                n: Some(b64url(n)),
                e: Some(b64url(e)),
                crv: None,
                x: None,
                y: None,
            },
            PublicJwk::Ec { curve, x, y } => JwkParams {
                kty: "EC",
                n: None,
                e: None,
                crv: Some(curve.jwk_name()),
                x: Some(b64url(x)),
                y: Some(b64url(y)),
            },
        }
    }
}

#[derive(Serialize)]
struct JwkParams {
    kty: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    e: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    crv: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    y: Option<String>,
}

/// One published key as it appears in the JWKS.
#[derive(Serialize)]
pub struct Jwk {
    #[serde(flatten)]
    params: JwkParams,
    kid: String,
    /// MEDITECH and the ONC test kit want `use: "sig"`; `key_ops` is left out on purpose
    /// (a `key_ops: ["sign"]` on a public key broke registrations, see DOMAIN.md).
    #[serde(rename = "use")]
    key_use: &'static str,
    alg: &'static str,
    /// RFC 7517 §4.7: standard (not URL-safe) base64 DER, leaf first.
    x5c: [String; 1],
    /// RFC 7517 §4.9: base64url SHA-256 of the certificate DER.
    #[serde(rename = "x5t#S256")]
    x5t_s256: String,
}

impl Jwk {
    pub fn new(public: &PublicJwk, kid: &str, alg: Algorithm, cert_der: &[u8]) -> Self {
        Jwk {
            params: public.params(),
            kid: kid.to_owned(),
            key_use: "sig",
            alg: alg.as_str(),
            x5c: [STANDARD.encode(cert_der)],
            x5t_s256: b64url(digest::digest(&digest::SHA256, cert_der).as_ref()),
        }
    }
}

/// A JWK Set (RFC 7517 §5).
#[derive(Serialize)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of RFC 7638 §3.1.
    #[test]
    fn thumbprint_matches_rfc7638_example() {
        let n = URL_SAFE_NO_PAD
            .decode(
                "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            )
            .unwrap();
        let jwk = PublicJwk::Rsa {
            n,
            e: vec![1, 0, 1],
        };
        assert_eq!(
            jwk.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn stored_json_round_trips() {
        let jwk = PublicJwk::Ec {
            curve: Curve::P384,
            x: vec![7; 48],
            y: vec![9; 48],
        };
        assert_eq!(
            PublicJwk::from_stored_json(&jwk.to_stored_json()),
            Some(jwk)
        );
    }

    #[test]
    fn rendered_jwk_has_exactly_the_public_members() {
        let jwk = PublicJwk::Rsa {
            n: vec![0xc0; 256],
            e: vec![1, 0, 1],
        };
        let value =
            serde_json::to_value(Jwk::new(&jwk, "kid1", Algorithm::Rs384, b"cert")).unwrap();
        let mut members: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        members.sort();
        assert_eq!(
            members,
            ["alg", "e", "kid", "kty", "n", "use", "x5c", "x5t#S256"]
        );
    }
}
