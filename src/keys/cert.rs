//! Self-signed X.509 certificates over published keys.
//!
//! Vendor portals (Epic, Oracle Health) ask for a certificate rather than a JWK, and some
//! verifiers read `x5c`. The certificate is only a container for the public key: it is
//! self-signed by the key it carries, made once when the key is generated, stored beside
//! it, and never changes. rcgen builds it; the signature comes from [`KeyMaterial`] through
//! rcgen's [`SigningKey`] trait, so the private key never leaves aws-lc-rs.

use aws_lc_rs::digest;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, IsCa, KeyIdMethod, KeyUsagePurpose,
    PublicKeyData, SerialNumber, SignatureAlgorithm, SigningKey,
};
use time::{Duration, OffsetDateTime};

use super::alg::Algorithm;
use super::material::KeyMaterial;

/// How long a certificate is valid. It carries a key whose life is decided by rotation, not
/// by the certificate, so the validity is long; verifiers that check it still see a sane
/// window.
const VALIDITY_DAYS: i64 = 3650;

/// A subject like `CN=default, O=Example Health` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate subject {0:?} is not a list of NAME=value (CN, O, OU, L, ST, C)")]
    Subject(String),
    #[error("building the certificate failed: {0}")]
    Build(String),
}

/// Parses `CN=default, O=Example` into a distinguished name. Only the common attribute
/// types are accepted; values may not contain commas.
pub fn parse_subject(subject: &str) -> Result<DistinguishedName, CertError> {
    let mut name = DistinguishedName::new();
    let mut any = false;
    for part in subject.split(',') {
        let (ty, value) = part
            .split_once('=')
            .ok_or_else(|| CertError::Subject(subject.to_owned()))?;
        let value = value.trim();
        let ty = match ty.trim().to_ascii_uppercase().as_str() {
            "CN" => DnType::CommonName,
            "O" => DnType::OrganizationName,
            "OU" => DnType::OrganizationalUnitName,
            "L" => DnType::LocalityName,
            "ST" => DnType::StateOrProvinceName,
            "C" => DnType::CountryName,
            _ => return Err(CertError::Subject(subject.to_owned())),
        };
        if value.is_empty() {
            return Err(CertError::Subject(subject.to_owned()));
        }
        name.push(ty, value);
        any = true;
    }
    if any {
        Ok(name)
    } else {
        Err(CertError::Subject(subject.to_owned()))
    }
}

/// Adapts a [`KeyMaterial`] to rcgen's signer interface.
struct CertSigner<'a> {
    key: &'a KeyMaterial,
    public: Vec<u8>,
}

impl PublicKeyData for CertSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        match self.key.alg() {
            Algorithm::Rs256 => &rcgen::PKCS_RSA_SHA256,
            Algorithm::Rs384 => &rcgen::PKCS_RSA_SHA384,
            Algorithm::Rs512 => &rcgen::PKCS_RSA_SHA512,
            Algorithm::Es256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Algorithm::Es384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }
}

impl SigningKey for CertSigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.key
            .sign_x509(msg)
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

/// Makes the self-signed certificate for `key` and returns its DER.
pub fn self_signed(
    key: &KeyMaterial,
    subject: &str,
    now: OffsetDateTime,
) -> Result<Vec<u8>, CertError> {
    let signer = CertSigner {
        key,
        public: key.subject_public_key(),
    };
    let mut params = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| CertError::Build(e.to_string()))?;
    params.distinguished_name = parse_subject(subject)?;
    // Tolerate a verifier whose clock runs a little behind ours.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(VALIDITY_DAYS);
    let serial = digest::digest(&digest::SHA256, &signer.public);
    let mut serial_bytes = serial.as_ref()[..16].to_vec();
    serial_bytes[0] &= 0x7f; // a positive INTEGER (RFC 5280 §4.1.2.2)
    params.serial_number = Some(SerialNumber::from_slice(&serial_bytes));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.key_identifier_method = KeyIdMethod::PreSpecified(serial.as_ref()[..20].to_vec());
    let cert = params
        .self_signed(&signer)
        .map_err(|e| CertError::Build(e.to_string()))?;
    Ok(cert.der().to_vec())
}

/// PEM armour for a DER certificate (RFC 7468 §5).
pub fn to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_parse_or_explain() {
        assert!(parse_subject("CN=default").is_ok());
        assert!(parse_subject("CN=epic-prod, O=Example Health, C=US").is_ok());
        assert!(parse_subject("").is_err());
        assert!(parse_subject("default").is_err());
        assert!(parse_subject("XX=1").is_err());
        assert!(parse_subject("CN=").is_err());
    }
}
