//! From a caller to an access token: sign an assertion, post the token request, cache the
//! answer, explain failures.
//!
//! - Tokens are cached per (client, token endpoint, normalised scope set) and refreshed
//!   once 80% of `expires_in` has passed. A cached token is served only while the key that
//!   obtained it is still the key set's current key, so a rotation or revocation drops it.
//! - Concurrent requests for one cache key share one upstream call (single flight): the
//!   first takes the key's lock and fetches; the others wait on the lock, then find the
//!   fresh token.
//! - Errors are never cached. 429 and 5xx answers and network failures are retried with
//!   backoff within a bounded budget, honouring `Retry-After`; every attempt signs a new
//!   assertion (new `jti`), and every assertion is in the audit trail before it is sent.
//! - Outbound HTTP is rustls (aws-lc-rs) with timeouts, and never follows a redirect from a
//!   token endpoint (a redirected client assertion is a leaked client assertion). Answers
//!   are read only up to a limit, and a discovered token endpoint must pass the same URL
//!   rules as a configured one and more ([`upstream`]).
//! - A failure is classified from all the evidence at hand ([`classify`]), including
//!   whether a token was obtained earlier for the same client_id at the same endpoint, and
//!   with which key. That fact is kept in memory, per process: it needs no write on the
//!   signing path and tells only what this jwksd saw, so after a restart, or on another
//!   replica, the classifier knows less and lists more possible causes, never a wrong one.
//!   Where a record of JWKS fetches exists it is consulted through [`JwksFetchRecord`].

pub mod cache;
pub mod classify;
pub mod discovery;
pub mod upstream;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::api::{Diagnosis, EarlierTokens, FailureClass, JwksFetched, TokenResponse};
use crate::assertion::CLIENT_ASSERTION_TYPE;
use crate::config::{ClientConfig, ConfigUrl};
use crate::metrics::CounterVec;
use crate::rotation::UnixTime;
use crate::signing::{Purpose, SignError, SigningService, TokenEndpoints};
use crate::Clock;
use cache::SlotCache;
use classify::{classify, Evidence};
use discovery::{discover, DiscoveryError, SmartConfiguration};
use upstream::{read_limited, BodyError, TOKEN_ANSWER_LIMIT};

/// Attempts per token request, the first included.
const MAX_ATTEMPTS: u32 = 4;
/// Total time a token request may spend retrying.
const RETRY_BUDGET: Duration = Duration::from_secs(20);
/// Timeout of one upstream request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A discovered configuration is reused this long.
const DISCOVERY_TTL: i64 = 3600;
/// Scopes a caller may name in one request when the client has no configured scope.
pub const MAX_CALLER_SCOPES: usize = 32;
/// Characters in one scope a caller names (SMART v2 scopes with query parameters stay well
/// under this).
pub const MAX_SCOPE_LENGTH: usize = 256;
/// Refresh when this fraction of the token's life has passed.
const REFRESH_AT: f64 = 0.8;
/// Kids remembered per client_id and token endpoint as having obtained a token: more than a
/// key set holds at once, so a rotation never forgets the key before.
const REMEMBERED_KIDS: usize = 8;
/// (client_id, token endpoint) pairs remembered; a configuration names far fewer.
const REMEMBERED_CLIENTS: usize = 1024;

/// The record of who fetched a key set's JWKS and when (the operations issue's fetcher
/// record plugs in here), as evidence for classifying a refused token request.
pub trait JwksFetchRecord: Send + Sync {
    /// Whether the EHR behind `token_endpoint` fetched `keyset`'s JWKS since
    /// `kid_published_at` (when the signing kid was published); `None` when the record
    /// cannot tell (no fetch it can attribute to that EHR, or no record kept).
    fn fetched<'a>(
        &'a self,
        keyset: &'a str,
        token_endpoint: &'a str,
        kid_published_at: UnixTime,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<JwksFetched>> + Send + 'a>>;
}

/// What the token exchange knows of the key that signed its last assertion, as evidence
/// for a refusal.
#[derive(Clone, Copy, Debug)]
struct SigningKeyFacts {
    /// The key set's `jwks_max_age`, in seconds.
    jwks_max_age: i64,
    /// Whether the kid joined a key set that had published keys already.
    kid_from_rotation: bool,
    /// When the kid was published.
    kid_published_at: Option<UnixTime>,
}

/// The fetcher record as evidence. It cannot tell which fetcher is the EHR behind a token
/// endpoint (a user agent and a network say nothing of that), so it answers only what
/// holds for every fetcher and so for the EHR too, as long as the EHR fetches this jwksd's
/// JWKS URL (it cannot hold a copy it was never served): nobody ever fetched the key set
/// ([`JwksFetched::Never`]), or nobody fetched it since the kid was published
/// ([`JwksFetched::BeforeKid`]). Once anyone fetched since, it might have been the EHR or
/// not: `None`. A record that cannot be read is `None` too. With several replicas, a
/// fetch another replica served in its last few seconds (not yet written) is not seen.
impl JwksFetchRecord for crate::fetchers::FetcherLog {
    fn fetched<'a>(
        &'a self,
        keyset: &'a str,
        _token_endpoint: &'a str,
        kid_published_at: UnixTime,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<JwksFetched>> + Send + 'a>> {
        Box::pin(async move {
            match self.last_fetch(keyset).await.ok()? {
                None => Some(JwksFetched::Never),
                Some(last) if last < kid_published_at => Some(JwksFetched::BeforeKid),
                Some(_) => None,
            }
        })
    }
}

/// An outbound HTTP client: rustls on aws-lc-rs with the system's root certificates,
/// timeouts, and no redirects.
pub fn outbound_client() -> Result<reqwest::Client, reqwest::Error> {
    install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("jwksd/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// reqwest is built without a bundled TLS crypto provider; jwksd uses aws-lc-rs for TLS
/// too. Idempotent; call before building any HTTP client.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A short description of a transport error, including its cause chain (TLS problems are
/// in the causes).
pub fn describe_reqwest_error(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Scopes as a set: split on whitespace, deduplicated, sorted, joined by one space.
pub fn normalise_scope(scope: &str) -> String {
    let mut parts: Vec<&str> = scope.split_whitespace().collect();
    parts.sort_unstable();
    parts.dedup();
    parts.join(" ")
}

/// Checks a scope a caller chose for a client without a configured `scope` (with one, the
/// caller may only narrow it). Backend services get only `system/` scopes (as configured
/// scopes must be), each a scope-token of RFC 6749 §3.3, and a bounded number of them:
/// the scope set is part of the cache key, so it is kept small.
pub fn check_caller_scope(scope: &str) -> Result<(), String> {
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    if scopes.len() > MAX_CALLER_SCOPES {
        return Err(format!(
            "scope names {} scopes; at most {MAX_CALLER_SCOPES} are accepted in one request",
            scopes.len()
        ));
    }
    for s in scopes {
        let shown = upstream::bounded(s, 80);
        if s.chars().count() > MAX_SCOPE_LENGTH {
            return Err(format!(
                "scope {shown:?} is longer than {MAX_SCOPE_LENGTH} characters"
            ));
        }
        // scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
        if !s
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
        {
            return Err(format!(
                "scope {shown:?} holds a character a scope may not contain (RFC 6749 §3.3)"
            ));
        }
        if s.len() <= "system/".len() || !s.starts_with("system/") {
            return Err(format!(
                "scope {shown:?} is not a system/ scope; backend services get only system/ scopes \
                 (system/Patient.read, system/Observation.rs)"
            ));
        }
    }
    Ok(())
}

/// A caller's scope refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// The client has allowed scopes and the caller asked for one beyond them.
    #[error("scope {scope:?} is not among client {client}'s allowed_scopes")]
    NotGranted { scope: String, client: String },
    /// The client has none configured and the caller's scope is not a short list of
    /// `system/` scopes ([`check_caller_scope`]).
    #[error("{0}")]
    Invalid(String),
}

/// The scope a caller's token request for `client` asks for: `requested`, or by default the
/// client's `scope`. A caller may ask only for scopes among the client's `allowed_scopes`
/// (by default those of `scope`; the cache is shared by every caller of the client); with
/// neither configured, the caller's own scope must pass [`check_caller_scope`] (it is sent
/// to the EHR and is part of the cache key).
pub fn resolve_scope(
    client: &ClientConfig,
    requested: Option<String>,
) -> Result<String, ScopeError> {
    let scope = requested
        .or_else(|| client.scope.clone())
        .unwrap_or_default();
    if let Some(allowed) = &client.allowed_scopes {
        if let Some(extra) = scope
            .split_whitespace()
            .find(|s| !allowed.iter().any(|a| a == s))
        {
            return Err(ScopeError::NotGranted {
                scope: extra.to_owned(),
                client: client.name.clone(),
            });
        }
    } else {
        check_caller_scope(&scope).map_err(ScopeError::Invalid)?;
    }
    Ok(scope)
}

/// A failed token request.
#[derive(Clone, Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no client_id / token endpoint could be determined: {0}")]
    Discovery(#[from] DiscoveryError),
    /// No assertion could be signed and recorded (no current key, the audit trail).
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error("{}", .class.explanation())]
    Upstream {
        class: FailureClass,
        status: Option<u16>,
        error: Option<String>,
        error_description: Option<String>,
        error_uri: Option<String>,
        retry_after: Option<u64>,
        diagnosis: Box<Diagnosis>,
    },
}

/// The `outcome` label of one upstream token request: `issued`, `bad_answer` (200 without a
/// usable token), `rate_limited` (429), `server_error` (5xx), `refused` (any other status)
/// or `unreachable` (no answer).
fn upstream_outcome(status: Option<u16>, issued: bool) -> &'static str {
    match status {
        None => "unreachable",
        Some(200) if issued => "issued",
        Some(200) => "bad_answer",
        Some(429) => "rate_limited",
        Some(s) if s >= 500 => "server_error",
        Some(_) => "refused",
    }
}

/// A successful token answer.
#[derive(Clone, Debug)]
pub struct TokenAnswer {
    /// The token endpoint's JSON object, with `expires_in` counting down when cached.
    pub body: TokenResponse,
    pub from_cache: bool,
    pub diagnosis: Diagnosis,
}

#[derive(Clone, Debug)]
struct CachedToken {
    body: TokenResponse,
    kid: String,
    refresh_at: UnixTime,
    expires_at: UnixTime,
}

/// One cache key: the cached token, and the outcome of the last fetch so that requests
/// that waited on a failed fetch share its error instead of each repeating it.
#[derive(Default)]
struct SlotInner {
    /// Fetches finished so far (read before waiting on `state`).
    completed: AtomicU64,
    state: tokio::sync::Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    token: Option<CachedToken>,
    /// The error of fetch number `.0`; only requests that were already waiting see it.
    last_error: Option<(u64, TokenError)>,
}

/// What a token request needs from the rest of jwksd.
pub struct TokenContext<'a> {
    /// Signs and records every assertion a token request sends.
    pub signing: &'a SigningService,
    /// Who asked (a caller name, or `admin` for the doctor's check).
    pub caller: &'a str,
}

/// The token exchanger and its cache.
pub struct TokenService {
    http: reqwest::Client,
    clock: Clock,
    slots: Mutex<SlotCache<SlotInner>>,
    discovered: Mutex<HashMap<String, (SmartConfiguration, UnixTime)>>,
    upstream_requests: AtomicU64,
    /// Token requests sent upstream by `[client, outcome]` (see [`upstream_outcome`]).
    upstream_outcomes: CounterVec<2>,
    /// Kids that obtained a token, per (client_id, token endpoint), newest last.
    obtained_with: Mutex<HashMap<(String, String), Vec<String>>>,
    jwks_fetches: Option<std::sync::Arc<dyn JwksFetchRecord>>,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService").finish_non_exhaustive()
    }
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl TokenService {
    pub fn new(http: reqwest::Client, clock: Clock) -> Self {
        TokenService {
            http,
            clock,
            slots: Mutex::new(SlotCache::default()),
            discovered: Mutex::new(HashMap::new()),
            upstream_requests: AtomicU64::new(0),
            upstream_outcomes: CounterVec::default(),
            obtained_with: Mutex::new(HashMap::new()),
            jwks_fetches: None,
        }
    }

    /// Consults `record` when classifying a refused token request.
    pub fn with_jwks_fetch_record(mut self, record: std::sync::Arc<dyn JwksFetchRecord>) -> Self {
        self.jwks_fetches = Some(record);
        self
    }

    /// Remembers that `kid` obtained a token for `client_id` at `endpoint`.
    fn remember_token(&self, client_id: &str, endpoint: &str, kid: &str) {
        let mut obtained = locked(&self.obtained_with);
        let key = (client_id.to_owned(), endpoint.to_owned());
        if !obtained.contains_key(&key) && obtained.len() >= REMEMBERED_CLIENTS {
            // Bounded: forgetting only makes later diagnoses less certain, never wrong.
            obtained.clear();
        }
        let kids = obtained.entry(key).or_default();
        kids.retain(|k| k != kid);
        kids.push(kid.to_owned());
        if kids.len() > REMEMBERED_KIDS {
            kids.remove(0);
        }
    }

    /// Whether a token was obtained earlier for `client_id` at `endpoint`, and with `kid`.
    fn earlier_tokens(&self, client_id: &str, endpoint: &str, kid: Option<&str>) -> EarlierTokens {
        let obtained = locked(&self.obtained_with);
        match obtained.get(&(client_id.to_owned(), endpoint.to_owned())) {
            None => EarlierTokens::None,
            Some(kids) if kid.is_some_and(|kid| kids.iter().any(|k| k == kid)) => {
                EarlierTokens::WithThisKey
            }
            Some(kids) if kids.is_empty() => EarlierTokens::None,
            Some(_) => EarlierTokens::WithAnotherKey,
        }
    }

    /// Token requests sent upstream since start.
    pub fn upstream_requests(&self) -> u64 {
        self.upstream_requests.load(Ordering::Relaxed)
    }

    /// Token requests sent upstream by `[client, outcome]`, retries included.
    pub fn upstream_outcomes(&self) -> &CounterVec<2> {
        &self.upstream_outcomes
    }

    /// The client's SMART configuration (cached for an hour).
    pub async fn smart_configuration(
        &self,
        fhir_base_url: &ConfigUrl,
    ) -> Result<SmartConfiguration, DiscoveryError> {
        let now = (self.clock)();
        if let Some((config, at)) = locked(&self.discovered).get(fhir_base_url.as_str()) {
            if now - at < DISCOVERY_TTL {
                return Ok(config.clone());
            }
        }
        let config = discover(&self.http, fhir_base_url.url()).await?;
        locked(&self.discovered).insert(fhir_base_url.as_str().to_owned(), (config.clone(), now));
        Ok(config)
    }

    /// The configured token endpoint, or the discovered one.
    pub async fn token_endpoint(&self, client: &ClientConfig) -> Result<String, TokenError> {
        match (&client.token_endpoint, &client.fhir_base_url) {
            (Some(endpoint), _) => Ok(endpoint.as_str().to_owned()),
            (None, Some(base)) => Ok(self.smart_configuration(base).await?.token_endpoint),
            // The configuration refuses a client with neither.
            (None, None) => Err(DiscoveryError::Fetch {
                url: String::new(),
                reason: format!(
                    "client {} has neither token_endpoint nor fhir_base_url",
                    client.name
                ),
            }
            .into()),
        }
    }

    /// A token for `client` and `scope`, from the cache while fresh.
    pub async fn token(
        &self,
        ctx: &TokenContext<'_>,
        client: &ClientConfig,
        scope: &str,
    ) -> Result<TokenAnswer, TokenError> {
        let endpoint = self.token_endpoint(client).await?;
        let scope = normalise_scope(scope);
        // Bounded per client: see the cache module.
        let slot = locked(&self.slots).slot(&client.name, &endpoint, &scope);
        // Single flight: whoever holds the slot fetches; the others wait here.
        let seen = slot.completed.load(Ordering::SeqCst);
        let mut state = slot.state.lock().await;
        let now = (self.clock)();
        let current_kid = ctx.signing.current_kid(&client.keyset);
        if let Some(token) = state.token.as_ref() {
            let fresh = now < token.refresh_at && Some(&token.kid) == current_kid.as_ref();
            if fresh {
                let mut body = token.body.clone();
                body.expires_in = Some(token.expires_at - now);
                return Ok(TokenAnswer {
                    body,
                    from_cache: true,
                    diagnosis: Diagnosis {
                        token_endpoint: endpoint,
                        kid: Some(token.kid.clone()),
                        scope,
                        ..Diagnosis::default()
                    },
                });
            }
        }
        // A fetch that finished while this request waited failed: share its answer.
        if let Some((number, error)) = &state.last_error {
            if *number > seen {
                return Err(error.clone());
            }
        }
        // Stale, or obtained with a key that no longer signs: never serve it again.
        state.token = None;
        let mut fetched = self.fetch(ctx, client, &endpoint, &scope).await;
        if let Ok(answer) = &fetched {
            // The key was rotated or revoked while the request was in flight: a token
            // obtained with it must not be served; ask once more with the new key.
            if answer.diagnosis.kid != ctx.signing.current_kid(&client.keyset) {
                fetched = self.fetch(ctx, client, &endpoint, &scope).await;
            }
        }
        let number = slot.completed.fetch_add(1, Ordering::SeqCst) + 1;
        let answer = match fetched {
            Ok(answer) => {
                state.last_error = None;
                answer
            }
            Err(error) => {
                state.last_error = Some((number, error.clone()));
                return Err(error);
            }
        };
        let expires_in = answer.body.expires_in.unwrap_or(0);
        let still_current = answer.diagnosis.kid == ctx.signing.current_kid(&client.keyset);
        if let (Some(kid), true) = (
            answer.diagnosis.kid.clone(),
            expires_in > 0 && still_current,
        ) {
            let obtained = (self.clock)();
            state.token = Some(CachedToken {
                body: answer.body.clone(),
                kid,
                refresh_at: obtained + (expires_in as f64 * REFRESH_AT) as i64,
                expires_at: obtained + expires_in,
            });
        }
        Ok(answer)
    }

    /// A token request that bypasses the cache (and does not fill it): the doctor's check.
    pub async fn fresh_token(
        &self,
        ctx: &TokenContext<'_>,
        client: &ClientConfig,
        scope: &str,
    ) -> Result<TokenAnswer, TokenError> {
        let endpoint = self.token_endpoint(client).await?;
        self.fetch(ctx, client, &endpoint, &normalise_scope(scope))
            .await
    }

    /// Sends the token request, retrying 429, 5xx and transport failures within the budget.
    async fn fetch(
        &self,
        ctx: &TokenContext<'_>,
        client: &ClientConfig,
        endpoint: &str,
        scope: &str,
    ) -> Result<TokenAnswer, TokenError> {
        // SMART: a client assertion's aud is the token endpoint it is sent to, exactly.
        let audience = endpoint.to_owned();
        let started = Instant::now();
        let mut diagnosis = Diagnosis {
            token_endpoint: endpoint.to_owned(),
            audience: audience.clone(),
            scope: scope.to_owned(),
            ..Diagnosis::default()
        };
        let mut backoff = Duration::from_millis(500);
        let mut signing_key;
        loop {
            diagnosis.attempts += 1;
            let now = (self.clock)();
            let issued = ctx
                .signing
                .issue(
                    ctx.caller,
                    client,
                    &audience,
                    client.assertion_lifetime,
                    Purpose::TokenRequest {
                        attempt: diagnosis.attempts,
                    },
                    now,
                )
                .await?;
            signing_key = SigningKeyFacts {
                jwks_max_age: issued.jwks_max_age,
                kid_from_rotation: issued.kid_from_rotation,
                kid_published_at: issued.kid_published_at,
            };
            diagnosis.kid = Some(issued.assertion.kid.clone());
            diagnosis.kid_published_for_seconds = issued.kid_published_for;
            let signed = issued.assertion;

            let mut form = vec![
                ("grant_type", "client_credentials"),
                ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ("client_assertion", signed.jwt.as_str()),
            ];
            if !scope.is_empty() {
                form.push(("scope", scope));
            }
            self.upstream_requests.fetch_add(1, Ordering::Relaxed);
            let mut unread: Option<BodyError> = None;
            let sent = self
                .http
                .post(endpoint)
                .header("Accept", "application/json")
                .form(&form)
                .send()
                .await;
            let (status, retry_after, body) = match sent {
                Err(e) => {
                    tracing::warn!(client = %client.name, error = %describe_reqwest_error(&e), "token endpoint unreachable");
                    (None, None, Map::new())
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    diagnosis.clock_skew_seconds = response
                        .headers()
                        .get("date")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| httpdate::parse_http_date(v).ok())
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_secs() as i64 - crate::unix_now());
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| {
                            // Seconds, or an HTTP date (RFC 9110 §10.2.3).
                            v.trim().parse::<u64>().ok().or_else(|| {
                                httpdate::parse_http_date(v.trim()).ok().map(|at| {
                                    at.duration_since(std::time::SystemTime::now())
                                        .map_or(0, |d| d.as_secs())
                                })
                            })
                        });
                    // Token answers are small JSON objects: never buffer more than the
                    // limit, whatever the server sends or announces.
                    let body = match read_limited(response, TOKEN_ANSWER_LIMIT).await {
                        Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
                            .ok()
                            .and_then(|v| v.as_object().cloned())
                            .unwrap_or_default(),
                        Err(e) => {
                            tracing::warn!(client = %client.name, %status, error = %e, "token endpoint answer not read");
                            unread = Some(e);
                            Map::new()
                        }
                    };
                    (Some(status), retry_after, body)
                }
            };
            // What jwksd itself says about an answer it could not use, in the place of the
            // upstream's error_description (which it did not get).
            let own_description = |text: String| {
                Map::from_iter([("error_description".to_owned(), Value::from(text))])
            };
            let answer = (status == Some(200))
                .then(|| TokenResponse::from_object(body.clone()))
                .flatten();
            self.upstream_outcomes
                .inc([&client.name, upstream_outcome(status, answer.is_some())]);
            if status == Some(200) {
                if let Some(body) = answer {
                    self.remember_token(&client.client_id, endpoint, &signed.kid);
                    return Ok(TokenAnswer {
                        body,
                        from_cache: false,
                        diagnosis,
                    });
                }
                let why = unread.map_or_else(
                    || "the answer has no access_token".to_owned(),
                    |e| e.to_string(),
                );
                return Err(self
                    .upstream_error(
                        client,
                        Some(200),
                        own_description(why),
                        None,
                        diagnosis,
                        signing_key,
                    )
                    .await);
            }
            let body = match unread {
                Some(e) => own_description(e.to_string()),
                None => body,
            };
            let retryable = match status {
                None => true,
                Some(s) => s == 429 || s >= 500,
            };
            let wait = retry_after
                .map(|s| Duration::from_secs(s.min(RETRY_BUDGET.as_secs())))
                .unwrap_or(backoff);
            let budget_left = RETRY_BUDGET.saturating_sub(started.elapsed());
            if !retryable || diagnosis.attempts >= MAX_ATTEMPTS || wait >= budget_left {
                return Err(self
                    .upstream_error(client, status, body, retry_after, diagnosis, signing_key)
                    .await);
            }
            tokio::time::sleep(wait).await;
            backoff *= 2;
        }
    }

    /// The error of a refused request, classified from everything known about it and
    /// about the `key` that signed the assertion.
    async fn upstream_error(
        &self,
        client: &ClientConfig,
        status: Option<u16>,
        body: Map<String, Value>,
        retry_after: Option<u64>,
        mut diagnosis: Diagnosis,
        key: SigningKeyFacts,
    ) -> TokenError {
        let text = |key: &str| {
            body.get(key).and_then(Value::as_str).map(|s| {
                s.chars()
                    .filter(|c| !c.is_control())
                    .take(500)
                    .collect::<String>()
            })
        };
        let error = text("error");
        let error_description = text("error_description");
        let earlier_tokens = self.earlier_tokens(
            &client.client_id,
            &diagnosis.token_endpoint,
            diagnosis.kid.as_deref(),
        );
        let jwks_fetched = match (&self.jwks_fetches, key.kid_published_at) {
            (Some(record), Some(published_at)) => {
                record
                    .fetched(&client.keyset, &diagnosis.token_endpoint, published_at)
                    .await
            }
            _ => None,
        };
        let read = classify(&Evidence {
            status,
            error: error.as_deref(),
            description: error_description.as_deref(),
            kid_published_for: diagnosis.kid_published_for_seconds,
            jwks_max_age: key.jwks_max_age,
            kid_from_rotation: key.kid_from_rotation,
            earlier_tokens,
            jwks_fetched,
        });
        diagnosis.kid_from_rotation = diagnosis.kid.as_ref().map(|_| key.kid_from_rotation);
        diagnosis.earlier_tokens = Some(earlier_tokens);
        diagnosis.jwks_fetched = jwks_fetched;
        diagnosis.possible_causes = read.causes_on_the_wire();
        TokenError::Upstream {
            class: read.class,
            status,
            error,
            error_description,
            error_uri: text("error_uri"),
            retry_after,
            diagnosis: Box::new(diagnosis),
        }
    }
}

impl TokenEndpoints for TokenService {
    type Error = TokenError;

    fn token_endpoint(
        &self,
        client: &ClientConfig,
    ) -> impl std::future::Future<Output = Result<String, TokenError>> {
        TokenService::token_endpoint(self, client)
    }
}
