//! What jwksd knows about each EHR it works with: how to recognise it from a token endpoint
//! or FHIR base URL, which signing algorithms it accepts for client assertions, what its
//! portal asks for at registration, and how it words the failures that matter.
//!
//! `jwksd doctor` (the algorithm check), `jwksd register` (the kit's notes) and the
//! classification of failed token requests ([`crate::tokens::classify`]) read it from here,
//! so that a vendor changing its rules is one edit. Plain data and pure functions: this
//! module imports nothing from the rest of jwksd.

/// The EHR vendors jwksd knows, plus [`Vendor::Generic`] for any other SMART Backend
/// Services server. Each one's [`Vendor::id`] names it on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    Eclinicalworks,
    Epic,
    /// Oracle Health, formerly Cerner.
    Oracle,
    Athena,
    Generic,
}

/// Every vendor, generic last.
pub const ALL: [Vendor; 5] = [
    Vendor::Eclinicalworks,
    Vendor::Epic,
    Vendor::Oracle,
    Vendor::Athena,
    Vendor::Generic,
];

impl Vendor {
    /// The vendor behind `url` (a token endpoint or a FHIR base URL), recognised from its
    /// host; [`Vendor::Generic`] when no pattern matches or `url` is not a URL.
    ///
    /// Hosts are matched by name fragments rather than exact domains because vendors and
    /// their customers host endpoints under many names (`fhir4.eclinicalworks.com`,
    /// `fhir.epic.com`, `*.epichosted.com`, `fhir-ehr.cerner.com`, `*.oraclecloud.com`,
    /// `api.platform.athenahealth.com`). Epic installations are often hosted under the
    /// customer's own domain; their paths still carry Epic's `interconnect-` prefix.
    pub fn recognise(url: &str) -> Vendor {
        let Ok(parsed) = reqwest::Url::parse(url.trim()) else {
            return Vendor::Generic;
        };
        let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
        let path = parsed.path().to_ascii_lowercase();
        ALL.into_iter()
            .find(|vendor| {
                vendor.host_fragments().iter().any(|f| host.contains(f))
                    || vendor.path_markers().iter().any(|m| path.contains(m))
            })
            .unwrap_or(Vendor::Generic)
    }

    /// Fragments of host names that identify the vendor.
    fn host_fragments(self) -> &'static [&'static str] {
        match self {
            Vendor::Eclinicalworks => &["eclinicalworks"],
            Vendor::Epic => &["epic"],
            Vendor::Oracle => &["cerner", "oracle"],
            Vendor::Athena => &["athena"],
            Vendor::Generic => &[],
        }
    }

    /// Path fragments that identify the vendor on a host named after its customer.
    fn path_markers(self) -> &'static [&'static str] {
        match self {
            Vendor::Epic => &["/interconnect-"],
            _ => &[],
        }
    }

    /// The vendor's identifier: its variant's name in lowercase (`eclinicalworks`,
    /// `oracle`), the value of `jwksd register --vendor`.
    pub fn id(self) -> &'static str {
        match self {
            Vendor::Eclinicalworks => "eclinicalworks",
            Vendor::Epic => "epic",
            Vendor::Oracle => "oracle",
            Vendor::Athena => "athena",
            Vendor::Generic => "generic",
        }
    }

    /// The vendor's name in a sentence ("RS256 is not among what {name} accepts").
    pub fn name(self) -> &'static str {
        match self {
            Vendor::Eclinicalworks => "eClinicalWorks",
            Vendor::Epic => "Epic",
            Vendor::Oracle => "Oracle Health",
            Vendor::Athena => "athenahealth",
            Vendor::Generic => "a SMART server",
        }
    }

    /// The vendor's name as a heading of the registration kit.
    pub fn title(self) -> &'static str {
        match self {
            Vendor::Oracle => "Oracle Health (Cerner)",
            Vendor::Generic => "a SMART Backend Services server",
            other => other.name(),
        }
    }

    /// The JWS algorithms (RFC 7518 names) the vendor accepts on a client assertion. For a
    /// server jwksd does not know, those SMART App Launch 2 requires every server to accept.
    pub fn algorithms(self) -> &'static [&'static str] {
        match self {
            Vendor::Eclinicalworks | Vendor::Athena => &["RS384"],
            Vendor::Epic => &["RS384", "ES256", "ES384"],
            Vendor::Oracle | Vendor::Generic => &["RS384", "ES384"],
        }
    }

    /// Whether the vendor accepts `alg` on a client assertion.
    pub fn accepts(self, alg: &str) -> bool {
        self.algorithms().contains(&alg)
    }

    /// What an operator registering a client with this vendor must know: the steps the
    /// portal does not spell out and the limits that bite later.
    pub fn registration_notes(self) -> &'static [&'static str] {
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
                "Token endpoints are per tenant: the token endpoint at the top of this kit must be the tenant's.",
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

/// Words EHRs put in `error_description` when they do not know the client_id. Almost every
/// vendor answers `invalid_client` both for an unknown client and for an unaccepted key
/// (eClinicalWorks says "Client not found", others "unknown client" or "invalid client_id"),
/// so the description is the only way to tell the two apart. Lowercase; matched as
/// substrings of the lowercased description.
pub const UNKNOWN_CLIENT_WORDING: &[&str] = &[
    "unknown client",
    "client not found",
    "no such client",
    "invalid client_id",
    "invalid client id",
    "client id not found",
    "client_id not found",
    "client does not exist",
    "unregistered client",
];

/// Words EHRs put in `error_description` when they found the client and then could not
/// verify the assertion with its keys: the client_id is known, the key is the problem.
/// A generic "client authentication failed" (node-oidc-provider, and many others) says
/// neither, and is not here. Lowercase; matched as substrings of the lowercased
/// description.
pub const KEY_REJECTED_WORDING: &[&str] = &[
    "signature verification failed",
    "invalid signature",
    "signature is invalid",
    "could not verify",
    "unable to verify",
    "no matching key",
    "key not found",
    "kid not found",
    "unknown kid",
    "no key with kid",
    "jwks",
];

/// OAuth `error` codes outside RFC 6749 that EHRs use for a rate limit, sometimes with a
/// 400 instead of a 429.
pub const RATE_LIMIT_ERRORS: &[&str] = &["rate_limit_exceeded", "slow_down", "too_many_requests"];

/// Whether `description` (an `error_description`) says the client_id is unknown.
pub fn says_unknown_client(description: &str) -> bool {
    let description = description.to_ascii_lowercase();
    UNKNOWN_CLIENT_WORDING
        .iter()
        .any(|words| description.contains(words))
}

/// Whether `description` (an `error_description`) says the client's key, not the
/// client, was the problem.
pub fn says_key_rejected(description: &str) -> bool {
    let description = description.to_ascii_lowercase();
    KEY_REJECTED_WORDING
        .iter()
        .any(|words| description.contains(words))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendors_are_recognised_from_their_hosts() {
        for (url, vendor) in [
            (
                "https://oauthserver.eclinicalworks.com/oauth/oauth2/token",
                Vendor::Eclinicalworks,
            ),
            (
                "https://fhir4.eclinicalworks.com/fhir/r4/ABCDEF",
                Vendor::Eclinicalworks,
            ),
            (
                "https://fhir.epic.com/interconnect-fhir-oauth/oauth2/token",
                Vendor::Epic,
            ),
            (
                "https://epicproxy.et0001.epichosted.com/APIProxyPRD/oauth2/token",
                Vendor::Epic,
            ),
            (
                "https://fhir.example-health.org/Interconnect-FHIR-PRD/api/FHIR/R4",
                Vendor::Epic,
            ),
            (
                "https://authorization.cerner.com/tenants/x/protocols/oauth2/profiles/smart-v1/token",
                Vendor::Oracle,
            ),
            ("https://fhir-ehr.cerner.com/r4/tenant", Vendor::Oracle),
            (
                "https://fhir.health.us-ashburn-1.oraclecloud.com/r4",
                Vendor::Oracle,
            ),
            (
                "https://api.platform.athenahealth.com/oauth2/v1/token",
                Vendor::Athena,
            ),
            ("HTTPS://FHIR.EPIC.COM/token", Vendor::Epic),
            ("http://127.0.0.1:9/token", Vendor::Generic),
            ("https://sso.example.org/token", Vendor::Generic),
            ("", Vendor::Generic),
            ("not a url", Vendor::Generic),
        ] {
            assert_eq!(Vendor::recognise(url), vendor, "{url}");
        }
    }

    #[test]
    fn a_vendor_word_in_the_path_or_query_does_not_name_the_host() {
        for url in [
            "https://sso.example.org/epic/token",
            "https://sso.example.org/token?next=eclinicalworks",
            "http://127.0.0.1:9/cerner/athena/token",
            "https://user:epic@sso.example.org/token",
        ] {
            assert_eq!(Vendor::recognise(url), Vendor::Generic, "{url}");
        }
    }

    #[test]
    fn each_vendor_accepts_its_algorithms() {
        assert!(Vendor::Eclinicalworks.accepts("RS384"));
        assert!(!Vendor::Eclinicalworks.accepts("ES384"));
        assert!(Vendor::Epic.accepts("ES256"));
        assert!(Vendor::Oracle.accepts("ES384") && !Vendor::Oracle.accepts("RS256"));
        for vendor in ALL {
            // RS384 is the one algorithm SMART requires everywhere.
            assert!(vendor.accepts("RS384"), "{vendor:?}");
            assert!(!vendor.registration_notes().is_empty(), "{vendor:?}");
        }
    }

    #[test]
    fn unknown_client_wording_is_found_in_any_case() {
        assert!(says_unknown_client("Client not found"));
        assert!(says_unknown_client("error: INVALID CLIENT_ID supplied"));
        assert!(!says_unknown_client("signature verification failed"));
    }

    #[test]
    fn key_rejected_wording_is_found_and_generic_wording_is_not() {
        assert!(says_key_rejected("Signature verification failed"));
        assert!(says_key_rejected(
            "no matching key found in JWKS for kid abc"
        ));
        assert!(says_key_rejected("Unable to verify the client assertion"));
        // node-oidc-provider's words for an unknown client, an unregistered JWKS and a
        // stale cache alike.
        assert!(!says_key_rejected("client authentication failed"));
        assert!(!says_key_rejected("Client not found"));
    }
}
