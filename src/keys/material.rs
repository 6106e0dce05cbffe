//! Private key material: generation, PKCS#8 import/export and JWS signing.
//!
//! Everything here runs on aws-lc-rs (constant-time, FIPS-validated lineage). A
//! [`KeyMaterial`] is the only type in jwksd that holds a usable private key; it never
//! implements `Serialize`, its `Debug` prints no key bytes, and its PKCS#8 export comes back
//! in a [`Zeroizing`] buffer meant to go straight into [`crate::keys::seal`].

use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair, RsaKeyPair};
use zeroize::Zeroizing;

use super::alg::{Algorithm, Curve, KeyFamily, RsaBits};
use super::jwk::PublicJwk;

/// Key generation, parsing or signing failed inside the crypto library.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the crypto library could not generate a {0} key")]
    Generate(Algorithm),
    #[error("stored private key does not parse as a {0} PKCS#8 key")]
    Parse(Algorithm),
    #[error("the crypto library failed to sign with a {0} key")]
    Sign(Algorithm),
    #[error("RSA key of {0} bits is below the 2048-bit minimum")]
    TooSmall(usize),
}

enum Inner {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// A private key bound to the one algorithm it signs with.
pub struct KeyMaterial {
    alg: Algorithm,
    inner: Inner,
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("alg", &self.alg)
            .field("private", &"[private key elided]")
            .finish()
    }
}

fn rsa_encoding(alg: Algorithm) -> &'static dyn signature::RsaEncoding {
    match alg {
        Algorithm::Rs256 => &signature::RSA_PKCS1_SHA256,
        Algorithm::Rs512 => &signature::RSA_PKCS1_SHA512,
        _ => &signature::RSA_PKCS1_SHA384,
    }
}

/// JWS (RFC 7518 §3.4) wants the fixed-width `r || s` signature, X.509 wants ASN.1 DER.
fn ecdsa_signing(curve: Curve, asn1: bool) -> &'static EcdsaSigningAlgorithm {
    match (curve, asn1) {
        (Curve::P256, false) => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        (Curve::P256, true) => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        (Curve::P384, false) => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        (Curve::P384, true) => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
    }
}

impl KeyMaterial {
    /// Generates a fresh key for `alg`. CPU-heavy for RSA (tens to hundreds of
    /// milliseconds): call it from a blocking thread, never on an async worker.
    pub fn generate(alg: Algorithm, rsa_bits: RsaBits) -> Result<Self, KeyError> {
        let inner = match alg.family() {
            KeyFamily::Rsa => {
                let size = match rsa_bits {
                    RsaBits::B2048 => KeySize::Rsa2048,
                    RsaBits::B3072 => KeySize::Rsa3072,
                    RsaBits::B4096 => KeySize::Rsa4096,
                };
                Inner::Rsa(RsaKeyPair::generate(size).map_err(|_| KeyError::Generate(alg))?)
            }
            KeyFamily::Ec(curve) => Inner::Ec(
                EcdsaKeyPair::generate(ecdsa_signing(curve, false))
                    .map_err(|_| KeyError::Generate(alg))?,
            ),
        };
        Ok(KeyMaterial { alg, inner })
    }

    /// Parses a PKCS#8 v1 private key that must suit `alg`.
    pub fn from_pkcs8(alg: Algorithm, der: &[u8]) -> Result<Self, KeyError> {
        let inner = match alg.family() {
            KeyFamily::Rsa => {
                let pair = RsaKeyPair::from_pkcs8(der).map_err(|_| KeyError::Parse(alg))?;
                let bits = pair.public_modulus_len() * 8;
                if bits < 2048 {
                    return Err(KeyError::TooSmall(bits));
                }
                Inner::Rsa(pair)
            }
            KeyFamily::Ec(curve) => Inner::Ec(
                EcdsaKeyPair::from_pkcs8(ecdsa_signing(curve, false), der)
                    .map_err(|_| KeyError::Parse(alg))?,
            ),
        };
        Ok(KeyMaterial { alg, inner })
    }

    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The PKCS#8 v1 encoding of the private key, in a buffer wiped on drop.
    pub fn to_pkcs8(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let bytes = match &self.inner {
            Inner::Rsa(pair) => {
                let der = pair.as_der().map_err(|_| KeyError::Parse(self.alg))?;
                Zeroizing::new(der.as_ref().to_vec())
            }
            Inner::Ec(pair) => {
                let doc = pair.to_pkcs8v1().map_err(|_| KeyError::Parse(self.alg))?;
                Zeroizing::new(doc.as_ref().to_vec())
            }
        };
        Ok(bytes)
    }

    /// The public half as JWK parameters (RFC 7518 §6.3.1 / §6.2.1).
    pub fn public_jwk(&self) -> PublicJwk {
        match &self.inner {
            Inner::Rsa(pair) => {
                let public = pair.public_key();
                PublicJwk::Rsa {
                    n: public.modulus().big_endian_without_leading_zero().to_vec(),
                    e: public.exponent().big_endian_without_leading_zero().to_vec(),
                }
            }
            Inner::Ec(pair) => {
                let KeyFamily::Ec(curve) = self.alg.family() else {
                    unreachable!("an EC key pair always has an EC algorithm")
                };
                // The public key is the SEC1 uncompressed point: 0x04 || X || Y.
                let point = pair.public_key().as_ref();
                let len = curve.coordinate_len();
                PublicJwk::Ec {
                    curve,
                    x: point[1..1 + len].to_vec(),
                    y: point[1 + len..1 + 2 * len].to_vec(),
                }
            }
        }
    }

    /// The public key as X.509 `subjectPublicKey` bits: RSAPublicKey DER for RSA
    /// (RFC 8017 A.1.1), the uncompressed point for EC (RFC 5480 §2.2).
    pub fn subject_public_key(&self) -> Vec<u8> {
        match &self.inner {
            Inner::Rsa(pair) => pair.public_key().as_ref().to_vec(),
            Inner::Ec(pair) => pair.public_key().as_ref().to_vec(),
        }
    }

    /// Signs `message` as a JWS signature for this key's algorithm (RFC 7518 §3.3/§3.4).
    pub fn sign_jws(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.inner {
            Inner::Rsa(pair) => {
                let mut signature = vec![0u8; pair.public_modulus_len()];
                pair.sign(
                    rsa_encoding(self.alg),
                    &SystemRandom::new(),
                    message,
                    &mut signature,
                )
                .map_err(|_| KeyError::Sign(self.alg))?;
                Ok(signature)
            }
            Inner::Ec(pair) => pair
                .sign(&SystemRandom::new(), message)
                .map(|sig| sig.as_ref().to_vec())
                .map_err(|_| KeyError::Sign(self.alg)),
        }
    }

    /// Signs `message` the way an X.509 certificate signature wants it: identical to the
    /// JWS signature for RSA, ASN.1 DER `(r, s)` for ECDSA (RFC 5758 §3.2).
    pub fn sign_x509(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.inner {
            Inner::Rsa(_) => self.sign_jws(message),
            Inner::Ec(_) => {
                let KeyFamily::Ec(curve) = self.alg.family() else {
                    unreachable!("an EC key pair always has an EC algorithm")
                };
                // A short-lived second handle on the same key, bound to the DER encoding.
                let pkcs8 = self.to_pkcs8()?;
                let asn1 = EcdsaKeyPair::from_pkcs8(ecdsa_signing(curve, true), &pkcs8)
                    .map_err(|_| KeyError::Parse(self.alg))?;
                asn1.sign(&SystemRandom::new(), message)
                    .map(|sig| sig.as_ref().to_vec())
                    .map_err(|_| KeyError::Sign(self.alg))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P384_SHA384_FIXED};

    #[test]
    fn debug_never_shows_key_bytes() {
        let key = KeyMaterial::generate(Algorithm::Es256, RsaBits::B2048).unwrap();
        let text = format!("{key:?}");
        assert!(text.contains("elided"), "{text}");
        assert!(text.len() < 80, "{text}");
    }

    #[test]
    fn pkcs8_round_trip_keeps_the_public_key() {
        for alg in [Algorithm::Rs384, Algorithm::Es256, Algorithm::Es384] {
            let key = KeyMaterial::generate(alg, RsaBits::B2048).unwrap();
            let again = KeyMaterial::from_pkcs8(alg, &key.to_pkcs8().unwrap()).unwrap();
            assert_eq!(key.public_jwk(), again.public_jwk(), "{alg}");
        }
    }

    #[test]
    fn a_key_of_one_family_is_refused_for_the_other() {
        let ec = KeyMaterial::generate(Algorithm::Es256, RsaBits::B2048).unwrap();
        assert!(KeyMaterial::from_pkcs8(Algorithm::Rs256, &ec.to_pkcs8().unwrap()).is_err());
        assert!(KeyMaterial::from_pkcs8(Algorithm::Es384, &ec.to_pkcs8().unwrap()).is_err());
    }

    #[test]
    fn es384_signature_is_fixed_width_and_verifies() {
        let key = KeyMaterial::generate(Algorithm::Es384, RsaBits::B2048).unwrap();
        let sig = key.sign_jws(b"hello").unwrap();
        assert_eq!(sig.len(), 96);
        UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, key.subject_public_key())
            .verify(b"hello", &sig)
            .unwrap();
    }
}
