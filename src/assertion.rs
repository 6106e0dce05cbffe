//! RFC 7523 client assertions as SMART Backend Services profiles them, signed as a
//! compact JWS (RFC 7515 §7.1).
//!
//! jwksd alone chooses every header member and claim: the caller names a client, and at
//! most an audience from that client's list and a shorter lifetime. There is no way to add
//! a claim or a header, so the signing API is not a general signing oracle. The audit
//! record of an issued assertion is built here too ([`issued_event`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;

use crate::audit::{event, AuditEvent};
use crate::config::ClientConfig;
use crate::keys::{KeyError, Signer};
use crate::rotation::UnixTime;

/// RFC 7523 §2.2.
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// `iat` is set this many seconds in the past: strict verifiers reject an `iat` even
/// milliseconds in their future (atproto #4474), and clocks drift.
pub const IAT_BACKDATE: i64 = 5;

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    kid: &'a str,
    typ: &'static str,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: &'a str,
    iat: UnixTime,
    exp: UnixTime,
}

/// A signed assertion and the facts the caller and the audit trail need.
#[derive(Clone, Debug)]
pub struct SignedAssertion {
    pub jwt: String,
    pub kid: String,
    pub alg: &'static str,
    pub jti: String,
    pub issued_at: UnixTime,
    pub expires_at: UnixTime,
}

/// A fresh `jti`: 128 random bits, base64url.
pub fn new_jti() -> String {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes)
        .unwrap_or_else(|_| unreachable!("the system random generator failed"));
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs an assertion for `client_id` to `audience`, valid from `now` for `lifetime`
/// seconds (the caller has checked it is at most 300).
pub fn sign(
    signer: &Signer,
    client_id: &str,
    audience: &str,
    jti: String,
    now: UnixTime,
    lifetime: i64,
) -> Result<SignedAssertion, KeyError> {
    let alg = signer.key.alg().as_str();
    let header = Header {
        alg,
        kid: &signer.kid,
        typ: "JWT",
    };
    let issued_at = now - IAT_BACKDATE;
    let expires_at = now + lifetime;
    let claims = Claims {
        iss: client_id,
        sub: client_id,
        aud: audience,
        jti: &jti,
        iat: issued_at,
        exp: expires_at,
    };
    // Serialising structs of strings and integers cannot fail.
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let claims = serde_json::to_vec(&claims).unwrap_or_default();
    let mut jwt = String::with_capacity(1024);
    URL_SAFE_NO_PAD.encode_string(header, &mut jwt);
    jwt.push('.');
    URL_SAFE_NO_PAD.encode_string(claims, &mut jwt);
    let signature = signer.key.sign_jws(jwt.as_bytes())?;
    jwt.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut jwt);
    Ok(SignedAssertion {
        jwt,
        kid: signer.kid.clone(),
        alg,
        jti,
        issued_at,
        expires_at,
    })
}

/// The audit record of an issued assertion: who asked, for which client, with which key.
/// Built here rather than in [`crate::audit`], so that the chain knows nothing of assertions.
pub fn issued_event(
    caller: &str,
    client: &ClientConfig,
    signed: &SignedAssertion,
    audience: &str,
    time: UnixTime,
    detail: Option<String>,
) -> AuditEvent {
    AuditEvent {
        time,
        event: event::ASSERTION_ISSUED.into(),
        caller: Some(caller.to_owned()),
        client_id: Some(client.client_id.clone()),
        keyset: Some(client.keyset.clone()),
        kid: Some(signed.kid.clone()),
        jti: Some(signed.jti.clone()),
        audience: Some(audience.to_owned()),
        expires_at: Some(signed.expires_at),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Algorithm, KeyMaterial, RsaBits};

    #[test]
    fn the_assertion_carries_exactly_the_smart_header_and_claims() {
        let signer = Signer {
            kid: "kid-1".into(),
            key: KeyMaterial::generate(Algorithm::Es384, RsaBits::B2048).unwrap(),
        };
        let signed = sign(
            &signer,
            "client-1",
            "https://ehr/token",
            new_jti(),
            1_000_000,
            240,
        )
        .unwrap();
        let parts: Vec<&str> = signed.jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg": "ES384", "kid": "kid-1", "typ": "JWT"})
        );
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({
                "iss": "client-1", "sub": "client-1", "aud": "https://ehr/token",
                "jti": signed.jti, "iat": 1_000_000 - IAT_BACKDATE, "exp": 1_000_240
            })
        );
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 96);
    }

    #[test]
    fn jtis_are_128_bit_and_unique() {
        let a = new_jti();
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 16);
        assert_ne!(a, new_jti());
    }
}
