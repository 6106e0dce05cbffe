//! Signing algorithms (RFC 7518 §3) and the key shapes they need.
//!
//! One key set uses exactly one algorithm; this module is the single table that maps an
//! algorithm name to its key type, curve and the signature/certificate primitives, so the
//! rest of the code never matches on algorithm names itself.

use std::fmt;
use std::str::FromStr;

/// A JWS algorithm jwksd can sign with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Rs256,
    Rs384,
    Rs512,
    Es256,
    Es384,
}

/// The key family an algorithm needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFamily {
    Rsa,
    /// An EC key on the named curve (`crv` in RFC 7518 §6.2.1.1).
    Ec(Curve),
}

/// The NIST curves used by ES256 and ES384.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

impl Curve {
    /// The JWK `crv` value.
    pub fn jwk_name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
        }
    }

    /// Length in bytes of one coordinate (and of `r`, `s` in a JWS signature).
    pub fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
}

impl Algorithm {
    pub const ALL: [Algorithm; 5] = [
        Algorithm::Rs256,
        Algorithm::Rs384,
        Algorithm::Rs512,
        Algorithm::Es256,
        Algorithm::Es384,
    ];

    /// The JOSE name, as in the JWK `alg` member and the JWS header.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Rs384 => "RS384",
            Algorithm::Rs512 => "RS512",
            Algorithm::Es256 => "ES256",
            Algorithm::Es384 => "ES384",
        }
    }

    pub fn family(self) -> KeyFamily {
        match self {
            Algorithm::Rs256 | Algorithm::Rs384 | Algorithm::Rs512 => KeyFamily::Rsa,
            Algorithm::Es256 => KeyFamily::Ec(Curve::P256),
            Algorithm::Es384 => KeyFamily::Ec(Curve::P384),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name was not one of [`Algorithm::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown algorithm {0:?}: expected one of RS256, RS384, RS512, ES256, ES384")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|alg| alg.as_str() == s)
            .ok_or_else(|| UnknownAlgorithm(s.to_owned()))
    }
}

/// RSA modulus sizes jwksd generates. Below 2048 is refused (Epic, NIST SP 800-131A).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RsaBits {
    B2048,
    B3072,
    B4096,
}

impl RsaBits {
    pub fn from_bits(bits: u64) -> Option<Self> {
        match bits {
            2048 => Some(RsaBits::B2048),
            3072 => Some(RsaBits::B3072),
            4096 => Some(RsaBits::B4096),
            _ => None,
        }
    }

    pub fn bits(self) -> u32 {
        match self {
            RsaBits::B2048 => 2048,
            RsaBits::B3072 => 3072,
            RsaBits::B4096 => 4096,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.as_str().parse::<Algorithm>().ok(), Some(alg));
        }
        assert!(
            "rs384".parse::<Algorithm>().is_err(),
            "names are case-sensitive (RFC 7518)"
        );
        assert!("HS256".parse::<Algorithm>().is_err());
    }
}
