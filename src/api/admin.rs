//! The admin API (`/admin/v1/...` on the private listener, admin token): key sets, keys,
//! rotation and revocation, clients, the audit trail, and a key set's JWKS as published.
//! The token check lives in [`super::tokens`] with the other token shapes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `GET /admin/v1/keysets`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysetList {
    pub keysets: Vec<KeysetInfo>,
}

/// A key set with its policy and where its JWKS is published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysetInfo {
    pub name: String,
    /// `RS256` | `RS384` | `RS512` | `ES256` | `ES384`.
    pub alg: String,
    /// Modulus size; `None` for EC key sets.
    pub rsa_bits: Option<u32>,
    /// `None`: rotation is manual only (`rotation_period = "off"`).
    pub rotation_period_seconds: Option<i64>,
    pub jwks_max_age_seconds: i64,
    pub prepublish_seconds: i64,
    pub retire_grace_seconds: i64,
    pub cert_subject: String,
    /// The JWKS URL on the public listener (relative when `server.public_url` is unset).
    pub jwks_url: String,
    /// The key that signs now, if any.
    pub current_kid: Option<String>,
    /// The published successor, if any.
    pub next_kid: Option<String>,
    /// A scheduled rotation waits for every recent fetcher to have been served the next key.
    #[serde(default)]
    pub rotation_requires_fetch: bool,
    /// A fetcher counts for that when it fetched within this long.
    #[serde(default)]
    pub fetcher_window_seconds: i64,
    /// How long after it was due a scheduled rotation waits for that at most.
    #[serde(default)]
    pub rotation_deadline_seconds: i64,
    /// When the key set next changes by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

/// When a key set next changes by itself; times are RFC 3339.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// When the scheduled rotation is due (in the past while it waits for fetchers);
    /// `null` when rotation is manual only.
    pub next_rotation_at: Option<String>,
    /// When the next retired key leaves the JWKS; `null` when none is waiting to.
    pub next_removal_at: Option<String>,
    pub rotation_gate: RotationGate,
}

/// Where a key set's scheduled rotation stands against `rotation_requires_fetch`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationGate {
    pub state: GateState,
    /// When a waiting rotation goes ahead anyway (`rotation_deadline` after it was due).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_at: Option<String>,
    /// Recent fetchers not yet served the next key at least `jwks_max_age` ago
    /// (user agent and network).
    #[serde(default)]
    pub unseen_by: Vec<String>,
}

/// The states of [`RotationGate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateState {
    /// `rotation_requires_fetch` is off, or the key set rotates only by hand.
    Off,
    /// The rotation is not due yet.
    NotDue,
    /// Due, and every recent fetcher has the next key: it rotates at the next tick.
    Satisfied,
    /// Due, waiting for the fetchers in `unseen_by` until `deadline_at`.
    Waiting,
    /// The deadline passed: it rotates without them.
    DeadlinePassed,
}

/// `GET /admin/v1/keysets/{keyset}/fetchers`: who fetched this key set's JWKS, most recent
/// fetch first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetcherList {
    pub keyset: String,
    pub fetchers: Vec<FetcherInfo>,
}

/// One distinct fetcher: a user agent from a source network (IPv4 /24, IPv6 /48).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetcherInfo {
    /// As sent (shortened); empty when it sent none.
    pub user_agent: String,
    pub network: String,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    /// Whether it was served the key that signs now, and the published successor.
    pub seen_current: bool,
    pub seen_next: bool,
    /// Every kid it was served, oldest first.
    pub kids: Vec<ServedKidInfo>,
}

/// A kid a fetcher was served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedKidInfo {
    pub kid: String,
    pub first_served: Option<String>,
    pub last_served: Option<String>,
    /// The key's state now; `null` when it is not in this key set any more.
    pub state: Option<KeyState>,
}

/// `GET /admin/v1/keysets/{keyset}/keys`: newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
    /// When the key set next changes by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

/// Where a key is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Published, not yet signing.
    Next,
    /// Published and signing.
    Current,
    /// Published until `remove_at`, no longer signing.
    Retired,
    /// Out of the JWKS after its grace.
    Removed,
    /// Withdrawn by an operator.
    Revoked,
}

impl KeyState {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Current => "current",
            KeyState::Retired => "retired",
            KeyState::Removed => "removed",
            KeyState::Revoked => "revoked",
        }
    }
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key as the admin API shows it; times are RFC 3339, `null` until they happen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub kid: String,
    pub keyset: String,
    pub alg: String,
    pub state: KeyState,
    pub created_at: Option<String>,
    pub published_at: Option<String>,
    pub activated_at: Option<String>,
    pub retired_at: Option<String>,
    pub remove_at: Option<String>,
    pub revoked_at: Option<String>,
    /// The certificate's URL on the public listener, while the key is published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_url: Option<String>,
}

/// `POST /admin/v1/keysets/{keyset}/rotate?force=true`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateQuery {
    #[serde(default)]
    pub force: bool,
}

/// The optional body of a rotation (the same flag as the query).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    #[serde(default)]
    pub force: bool,
}

/// What a rotation did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    pub keyset: String,
    /// The key that signs from now on.
    pub promoted: String,
    /// The key that stopped signing (stays published through `retire_grace`).
    pub retired: Option<String>,
    /// The freshly published successor.
    pub new_next: Option<String>,
    pub forced: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Recent fetchers that had not been served the promoted key at least `jwks_max_age`
    /// before: the EHRs whose token requests it risks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unseen_by: Vec<String>,
}

/// The optional body of `POST /admin/v1/keys/{kid}/revoke`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Why; recorded in the audit trail (first 500 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a revocation did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub keyset: String,
    pub revoked: String,
    /// Set when the revoked key was current: the key promoted (forced) in its place.
    pub promoted: Option<String>,
    pub new_next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// `GET /admin/v1/clients`: the configured clients, without secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientList {
    pub clients: Vec<ClientInfo>,
}

/// One `[clients.NAME]` section as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub name: String,
    pub client_id: String,
    pub keyset: String,
    /// `None`: discovered from `fhir_base_url`.
    pub token_endpoint: Option<String>,
    pub audiences: Vec<String>,
    pub fhir_base_url: Option<String>,
    pub scope: Option<String>,
    /// The scopes a caller may ask for (`allowed_scopes`, by default those of `scope`);
    /// `null` when neither is configured: then any short list of `system/` scopes.
    #[serde(default)]
    pub allowed_scopes: Option<Vec<String>>,
    pub assertion_lifetime_seconds: i64,
    /// The JWKS URL of the client's key set.
    pub jwks_url: String,
}

/// `GET /admin/v1/audit?since=&client=&caller=&kid=&event=&cursor=&limit=`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// A client's name or its client_id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Records per page, 1 to 1000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// One page of the audit trail, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditPage {
    pub records: Vec<AuditEntry>,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// One audit record as the admin API shows it; times are RFC 3339.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub time: Option<String>,
    /// `assertion.issued`, `key.generated`, `key.promoted`, ...
    pub event: String,
    pub caller: Option<String>,
    pub client_id: Option<String>,
    pub keyset: Option<String>,
    pub kid: Option<String>,
    pub jti: Option<String>,
    pub audience: Option<String>,
    pub expires_at: Option<String>,
    /// Free-form facts (forced, reason, purpose, ...).
    pub detail: Option<Value>,
    /// The record's chain hash.
    pub hash: String,
}

/// A JWK Set (RFC 7517 §5) as jwksd publishes it, on the public listener and at
/// `GET /admin/v1/keysets/{keyset}/jwks`. For reading: the server renders its JWKS once
/// per change (`keys::jwk`), and sends those bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// One published public key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// `RSA` or `EC`.
    pub kty: String,
    pub kid: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub key_use: String,
    pub alg: String,
    /// RSA modulus and exponent (RFC 7518 §6.3.1), base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// EC curve and coordinates (RFC 7518 §6.2.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// RFC 7517 §4.7: standard base64 DER, leaf first.
    pub x5c: Vec<String>,
    /// RFC 7517 §4.9.
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}
