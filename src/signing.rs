//! The signing service: the one way to obtain a signed client assertion, for a caller
//! (`POST /v1/assertions`) and for the token exchange alike.
//!
//! It owns the rules of an assertion: which caller may sign for which client, which
//! audience and lifetime a caller may ask for, which key signs (the key set's current key,
//! from the keyring's snapshot), and that an assertion exists for nobody until its audit
//! record is durable. It sits above the keyring and the audit writer and below `http` and
//! `tokens`; it knows nothing of HTTP. The default audience of a client without configured
//! audiences is its token endpoint, which only the token service can discover: it is asked
//! through [`TokenEndpoints`], so this module never imports `tokens`.

use std::future::Future;
use std::sync::Arc;

use crate::api::AssertionRequest;
use crate::assertion::{self, SignedAssertion};
use crate::config::{
    Access, CallerConfig, ClientConfig, MAX_ASSERTION_LIFETIME, MIN_ASSERTION_LIFETIME,
};
use crate::keyring::Keyring;
use crate::rotation::UnixTime;
use crate::trail::AuditWriter;

/// Where a client's token endpoint comes from (configured, or SMART discovery).
pub trait TokenEndpoints {
    type Error;

    /// The token endpoint of `client`.
    fn token_endpoint(
        &self,
        client: &ClientConfig,
    ) -> impl Future<Output = Result<String, Self::Error>>;
}

/// The caller may not use the client it named.
#[derive(Clone, Debug, thiserror::Error)]
pub enum AccessError {
    #[error("no client with that client_id is configured")]
    UnknownClient,
    #[error("caller {caller} may not use client {client}")]
    NotPermitted { caller: String, client: String },
}

/// No assertion could be issued once the client, audience and lifetime were settled. No
/// assertion exists: nothing was returned, sent, or recorded as issued.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SignError {
    /// The key set has no current key (not configured in the running keyring, or between
    /// the revocation of its current key and the promotion of a successor).
    #[error("key set {keyset} has no usable key yet")]
    NoSigningKey { keyset: String },
    /// The key refused to sign. `cause` is for the log only.
    #[error("signing with key {kid} failed: {cause}")]
    Signing { kid: String, cause: String },
    /// The audit record could not be made durable (fail closed). `cause` is for the log only.
    #[error("the audit trail is unavailable: {cause}")]
    AuditUnavailable { cause: String },
}

/// A caller's assertion request refused, in the order the checks are made.
#[derive(Clone, Debug, thiserror::Error)]
pub enum AssertionError<E> {
    #[error(
        "lifetime must be between {MIN_ASSERTION_LIFETIME} and {MAX_ASSERTION_LIFETIME} seconds \
         (SMART: exp at most 5 minutes ahead)"
    )]
    LifetimeOutOfRange,
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The client has no configured audience and its token endpoint could not be found.
    #[error("the client's token endpoint could not be determined")]
    Endpoint(E),
    #[error("that audience is not one of client {client}'s audiences")]
    AudienceNotAllowed { client: String },
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// Why an assertion is issued, for its audit record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Handed to a caller (`POST /v1/assertions`).
    Caller,
    /// Sent by jwksd itself in attempt `attempt` of a token request.
    TokenRequest { attempt: u32 },
}

impl Purpose {
    /// The audit record's `detail`.
    fn detail(self) -> Option<String> {
        match self {
            Purpose::Caller => None,
            Purpose::TokenRequest { attempt } => Some(
                serde_json::json!({ "purpose": "token_request", "attempt": attempt }).to_string(),
            ),
        }
    }
}

/// A signed assertion whose audit record is durable, with what the token exchange reports
/// about the key that signed it.
#[derive(Clone, Debug)]
pub struct Issued {
    pub assertion: SignedAssertion,
    /// How long the signing key had been published at `now`.
    pub kid_published_for: Option<i64>,
    /// When the signing key was published. Evidence read later compares with this, never
    /// with `now - kid_published_for` on a clock that has moved on since.
    pub kid_published_at: Option<UnixTime>,
    /// The key set's configured `jwks_max_age`, in seconds.
    pub jwks_max_age: i64,
    /// Whether the signing key joined a key set that already had published keys (a
    /// rotation or a revocation made it): only then can a verifier's cached JWKS lack it.
    /// A key set's first keys (a current and a next) are published together, in one
    /// transaction.
    pub kid_from_rotation: bool,
}

/// Signs assertions with the keyring's current keys and records each one.
pub struct SigningService {
    keyring: Arc<Keyring>,
    audit: AuditWriter,
}

impl std::fmt::Debug for SigningService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningService").finish_non_exhaustive()
    }
}

impl SigningService {
    pub fn new(keyring: Arc<Keyring>, audit: AuditWriter) -> Self {
        SigningService { keyring, audit }
    }

    /// The client `client_id` names (its client_id or its section name), if `caller` may
    /// use it: the one place the rule "which caller may sign for which client" is applied,
    /// for `POST /v1/assertions` ([`SigningService::for_caller`]) and for token requests
    /// alike.
    pub fn client_for<'a>(
        &self,
        caller: &CallerConfig,
        access: &'a Access,
        client_id: &str,
    ) -> Result<&'a ClientConfig, AccessError> {
        let client = access.client(client_id).ok_or(AccessError::UnknownClient)?;
        if !caller.clients.contains(&client.name) {
            return Err(AccessError::NotPermitted {
                caller: caller.name.clone(),
                client: client.name.clone(),
            });
        }
        Ok(client)
    }

    /// An assertion for `caller`, as `POST /v1/assertions` asks for it: the client must be
    /// one the caller may use; the audience one of the client's (default: its first, or its
    /// token endpoint); the lifetime within bounds (default: the client's).
    pub async fn for_caller<E: TokenEndpoints>(
        &self,
        caller: &CallerConfig,
        access: &Access,
        request: &AssertionRequest,
        endpoints: &E,
        now: UnixTime,
    ) -> Result<SignedAssertion, AssertionError<E::Error>> {
        if let Some(lifetime) = request.lifetime {
            if !(MIN_ASSERTION_LIFETIME..=MAX_ASSERTION_LIFETIME).contains(&lifetime) {
                return Err(AssertionError::LifetimeOutOfRange);
            }
        }
        let client = self.client_for(caller, access, &request.client_id)?;
        let default_audience = match client.audiences.first() {
            Some(audience) => audience.clone(),
            None => endpoints
                .token_endpoint(client)
                .await
                .map_err(AssertionError::Endpoint)?,
        };
        let audience = match &request.audience {
            None => default_audience,
            Some(audience)
                if *audience == default_audience || client.audiences.contains(audience) =>
            {
                audience.clone()
            }
            Some(_) => {
                return Err(AssertionError::AudienceNotAllowed {
                    client: client.name.clone(),
                })
            }
        };
        let lifetime = request.lifetime.unwrap_or(client.assertion_lifetime);
        let issued = self
            .issue(
                &caller.name,
                client,
                &audience,
                lifetime,
                Purpose::Caller,
                now,
            )
            .await?;
        Ok(issued.assertion)
    }

    /// Signs an assertion for `client` to `audience` with the key set's current key, valid
    /// from `now` for `lifetime` seconds (already checked), and returns it once its audit
    /// record, naming `caller` and `purpose`, is durable.
    pub async fn issue(
        &self,
        caller: &str,
        client: &ClientConfig,
        audience: &str,
        lifetime: i64,
        purpose: Purpose,
        now: UnixTime,
    ) -> Result<Issued, SignError> {
        let snapshot = self.keyring.snapshot();
        let no_key = || SignError::NoSigningKey {
            keyset: client.keyset.clone(),
        };
        let view = snapshot.keysets.get(&client.keyset).ok_or_else(no_key)?;
        let signer = view.signer.clone().ok_or_else(no_key)?;
        let signing_record = view.records.iter().find(|r| r.kid == signer.kid);
        let kid_published_at = signing_record.map(|r| r.published_at);
        let kid_published_for = kid_published_at.map(|at| now - at);
        // Times are in seconds, so a rotation in the set's first second shares its first
        // keys' time: a key with two others published no later than itself is not one of
        // the first two either (the conservative reading: it allows a stale cache).
        let kid_from_rotation = signing_record.is_some_and(|signing| {
            let earlier_or_same = view
                .records
                .iter()
                .filter(|r| r.kid != signing.kid && r.published_at <= signing.published_at)
                .count();
            earlier_or_same >= 2
                || view
                    .records
                    .iter()
                    .any(|r| r.published_at < signing.published_at)
        });
        let signed = assertion::sign(
            &signer,
            &client.client_id,
            audience,
            assertion::new_jti(),
            now,
            lifetime,
        )
        .map_err(|e| SignError::Signing {
            kid: signer.kid.clone(),
            cause: e.to_string(),
        })?;
        // Fail closed: the assertion leaves only once its record is durable.
        self.audit
            .append(crate::assertion::issued_event(
                caller,
                client,
                &signed,
                audience,
                now,
                purpose.detail(),
            ))
            .await
            .map_err(|e| SignError::AuditUnavailable {
                cause: e.to_string(),
            })?;
        Ok(Issued {
            assertion: signed,
            kid_published_for,
            kid_published_at,
            jwks_max_age: view.config.timing.jwks_max_age,
            kid_from_rotation,
        })
    }

    /// The kid that signs for `keyset` now, if any.
    pub fn current_kid(&self, keyset: &str) -> Option<String> {
        self.keyring
            .snapshot()
            .keysets
            .get(keyset)
            .and_then(|view| view.signer.as_ref().map(|s| s.kid.clone()))
    }
}
