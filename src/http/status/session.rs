//! Status-page sessions and their CSRF tokens: values MAC'd under a key derived from the
//! master key, so that every replica sharing the master key accepts a session another one
//! issued, and nothing secret is in the cookie (an expiry, a random nonce and a tag).
//!
//! A session is bound to the admin token's digest: a new admin token ends every session
//! made under the old one. Its CSRF token is a MAC of its nonce in another domain, so it
//! needs no storage either and is checked in constant time. Logging out clears the cookie
//! and remembers the nonce on this process until the session would have expired (other
//! replicas keep accepting a copied cookie until its expiry; the cookie is `HttpOnly`, so a
//! page script cannot copy it).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::rotation::UnixTime;

/// How long a session lasts after login.
pub const SESSION_LIFETIME: i64 = 8 * 3600;

/// The cookie's name. `__Host-`: the browser keeps it only when it is `Secure`, has
/// `Path=/` and no `Domain`, so a sibling host cannot plant one.
pub const COOKIE_NAME: &str = "__Host-jwksd_session";

const SESSION_MAC: &str = "jwksd/status-session/v1";
const CSRF_MAC: &str = "jwksd/status-csrf/v1";
const VERSION: &str = "v1";

/// A MAC under the master key, in a domain: [`crate::keyring::Keyring::master_mac`].
pub type Mac<'a> = &'a dyn Fn(&str, &[u8]) -> Vec<u8>;

/// A session that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Random, base64url; names the session (for logout and its CSRF token).
    pub nonce: String,
    pub expires_at: UnixTime,
}

fn tagged_input(body: &str, admin_digest: &[u8; 32]) -> Vec<u8> {
    let mut input = body.as_bytes().to_vec();
    input.push(0);
    input.extend_from_slice(admin_digest);
    input
}

/// A fresh session at `now`, and its cookie value.
pub fn issue(mac: Mac<'_>, admin_digest: &[u8; 32], now: UnixTime) -> (Session, String) {
    let mut nonce = [0u8; 16];
    // A failing system RNG is unrecoverable; aws-lc aborts in that case anyway.
    let _ = aws_lc_rs::rand::fill(&mut nonce);
    let session = Session {
        nonce: URL_SAFE_NO_PAD.encode(nonce),
        expires_at: now + SESSION_LIFETIME,
    };
    let body = format!("{VERSION}.{}.{}", session.expires_at, session.nonce);
    let tag = URL_SAFE_NO_PAD.encode(mac(SESSION_MAC, &tagged_input(&body, admin_digest)));
    (session, format!("{body}.{tag}"))
}

/// The session a cookie value stands for at `now`: `None` when it is malformed, its tag
/// does not verify (forged, or made under another master key or admin token) or it expired.
pub fn verify(
    mac: Mac<'_>,
    admin_digest: &[u8; 32],
    value: &str,
    now: UnixTime,
) -> Option<Session> {
    if value.len() > 200 {
        return None;
    }
    let (body, tag) = value.rsplit_once('.')?;
    let mut parts = body.split('.');
    let (version, expires, nonce) = (parts.next()?, parts.next()?, parts.next()?);
    if version != VERSION || parts.next().is_some() {
        return None;
    }
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    let expected = mac(SESSION_MAC, &tagged_input(body, admin_digest));
    aws_lc_rs::constant_time::verify_slices_are_equal(&expected, &tag).ok()?;
    let expires_at: UnixTime = expires.parse().ok()?;
    (now < expires_at).then(|| Session {
        nonce: nonce.to_owned(),
        expires_at,
    })
}

/// The CSRF token of `session`, for the hidden field of every form that changes something.
pub fn csrf_token(mac: Mac<'_>, session: &Session) -> String {
    URL_SAFE_NO_PAD.encode(mac(CSRF_MAC, session.nonce.as_bytes()))
}

/// Whether `presented` is `session`'s CSRF token, compared in constant time.
pub fn csrf_matches(mac: Mac<'_>, session: &Session, presented: &str) -> bool {
    let expected = csrf_token(mac, session);
    aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), presented.as_bytes())
        .is_ok()
}

/// The `Set-Cookie` value that stores `value` for the rest of the session's life.
///
/// Always `Secure`: Chromium and Firefox keep Secure cookies on `http://localhost` and
/// `http://127.0.0.1` (loopback is a secure context), and behind a TLS-terminating proxy
/// the browser sees HTTPS. On plain HTTP to any other host the browser drops the cookie and
/// login does not stick, which is what should happen there: the admin token would travel
/// in the clear (the login page says so).
pub fn set_cookie(value: &str, session: &Session, now: UnixTime) -> String {
    format!(
        "{COOKIE_NAME}={value}; Max-Age={}; Path=/; Secure; HttpOnly; SameSite=Strict",
        (session.expires_at - now).max(0)
    )
}

/// The `Set-Cookie` value that deletes the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE_NAME}=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Strict")
}

/// The session cookie's value in a `Cookie` request header, if present.
pub fn cookie_value(header: &str) -> Option<&str> {
    header.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == COOKIE_NAME).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::MasterKey;

    fn keys() -> (MasterKey, MasterKey) {
        (MasterKey::generate().0, MasterKey::generate().0)
    }

    #[test]
    fn a_session_verifies_until_it_expires_and_only_under_its_keys() {
        let (master, other) = keys();
        let mac = |p: &str, d: &[u8]| master.mac(p, d);
        let other_mac = |p: &str, d: &[u8]| other.mac(p, d);
        let admin = [7u8; 32];
        let now = 1_800_000_000;
        let (session, value) = issue(&mac, &admin, now);
        assert_eq!(verify(&mac, &admin, &value, now), Some(session.clone()));
        assert_eq!(
            verify(&mac, &admin, &value, now + SESSION_LIFETIME - 1),
            Some(session)
        );
        assert_eq!(verify(&mac, &admin, &value, now + SESSION_LIFETIME), None);
        assert_eq!(
            verify(&other_mac, &admin, &value, now),
            None,
            "other master key"
        );
        assert_eq!(
            verify(&mac, &[8u8; 32], &value, now),
            None,
            "new admin token"
        );
    }

    #[test]
    fn an_edited_or_malformed_cookie_is_refused() {
        let (master, _) = keys();
        let mac = |p: &str, d: &[u8]| master.mac(p, d);
        let admin = [1u8; 32];
        let now = 1_800_000_000;
        let (_, value) = issue(&mac, &admin, now);
        let (body, tag) = value.rsplit_once('.').unwrap();
        let mut parts: Vec<&str> = body.split('.').collect();
        let later = (now + 10 * SESSION_LIFETIME).to_string();
        parts[1] = &later;
        let extended = format!("{}.{tag}", parts.join("."));
        for bad in [
            extended.as_str(),
            "",
            "v1",
            "v1.1.2",
            "v2.1.2.3",
            &value[..value.len() - 2],
            &format!("{value}x"),
        ] {
            assert_eq!(verify(&mac, &admin, bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn the_csrf_token_belongs_to_one_session() {
        let (master, _) = keys();
        let mac = |p: &str, d: &[u8]| master.mac(p, d);
        let admin = [1u8; 32];
        let (first, _) = issue(&mac, &admin, 1);
        let (second, _) = issue(&mac, &admin, 1);
        let token = csrf_token(&mac, &first);
        assert!(csrf_matches(&mac, &first, &token));
        assert!(!csrf_matches(&mac, &second, &token));
        assert!(!csrf_matches(&mac, &first, ""));
        assert!(!csrf_matches(&mac, &first, &token[1..]));
    }

    #[test]
    fn the_cookie_is_found_among_others_and_carries_its_attributes() {
        let header = format!("a=b; {COOKIE_NAME}=v1.2.3.4; c=d");
        assert_eq!(cookie_value(&header), Some("v1.2.3.4"));
        assert_eq!(cookie_value("a=b"), None);
        let session = Session {
            nonce: "n".into(),
            expires_at: 100,
        };
        let set = set_cookie("v", &session, 40);
        for attribute in [
            "Max-Age=60",
            "Path=/",
            "Secure",
            "HttpOnly",
            "SameSite=Strict",
        ] {
            assert!(set.contains(attribute), "{set}");
        }
        assert!(clear_cookie().contains("Max-Age=0"));
    }
}
