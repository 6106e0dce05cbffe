//! The key lifecycle and the rotation schedule, as pure functions of (keys, now, policy).
//!
//! ```text
//!   generate ──► next ──promote──► current ──rotate──► retired ──retire_grace──► removed
//!                 │  (published     │ (published,       │ (published, private
//!                 │   prepublish)   │  signing)         │  half destroyed)
//!                 └──────revoke─────┴────────revoke─────┴──► revoked (out of the JWKS at once)
//! ```
//!
//! Nothing here reads a clock, a store or a key: [`plan`] says what must happen now and
//! when to look again; [`check_rotation`] and [`plan_revocation`] decide operator requests,
//! and [`forced`] says whether the steps they return make a key sign before every verifier
//! can have seen it (and what to warn the operator). The keyring applies the answers; the
//! background loop only calls [`plan`] on a timer.

use std::fmt;
use std::str::FromStr;

use crate::keys::Algorithm;

/// Seconds since the Unix epoch. Lifecycle times are whole seconds.
pub type UnixTime = i64;

/// Where a key is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Published, not yet signing.
    Next,
    /// Published and signing. At most one per key set.
    Current,
    /// Published until `remove_at`; its private half is destroyed.
    Retired,
    /// Out of the JWKS after its grace; the record stays for the audit trail.
    Removed,
    /// Withdrawn by an operator: out of the JWKS at once, private half destroyed.
    Revoked,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Current => "current",
            KeyState::Retired => "retired",
            KeyState::Removed => "removed",
            KeyState::Revoked => "revoked",
        }
    }

    /// Whether a key in this state appears in the JWKS.
    pub fn is_published(self) -> bool {
        matches!(self, KeyState::Next | KeyState::Current | KeyState::Retired)
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "next" => KeyState::Next,
            "current" => KeyState::Current,
            "retired" => KeyState::Retired,
            "removed" => KeyState::Removed,
            "revoked" => KeyState::Revoked,
            other => return Err(format!("unknown key state {other:?}")),
        })
    }
}

/// The public facts about one key: everything the lifecycle needs, no key material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    pub kid: String,
    pub keyset: String,
    pub alg: Algorithm,
    pub state: KeyState,
    pub created_at: UnixTime,
    pub published_at: UnixTime,
    pub activated_at: Option<UnixTime>,
    pub retired_at: Option<UnixTime>,
    pub remove_at: Option<UnixTime>,
    pub removed_at: Option<UnixTime>,
    pub revoked_at: Option<UnixTime>,
}

/// The timing part of a key set's policy, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// `None`: rotate only when an operator asks.
    pub rotation_period: Option<i64>,
    pub jwks_max_age: i64,
    pub prepublish: i64,
    pub retire_grace: i64,
}

/// One change to a key set. A plan's steps are applied together, in one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Generate a key that signs at once. Only when the set has nothing that can sign
    /// (first start, or the current key was revoked with no next key to take over).
    CreateCurrent,
    /// Generate and publish a successor that will not sign before `prepublish` has passed.
    CreateNext,
    /// `next` starts signing; `retire`, the old current key, stops and is retired.
    Promote {
        next: String,
        retire: Option<String>,
    },
    /// A retired key whose grace has ended leaves the JWKS.
    Remove { kid: String },
    /// An operator revoked this key.
    Revoke { kid: String },
}

/// A step as the log shows it: `create next`, `promote KID (retiring KID)`, `remove KID`.
impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::CreateCurrent => f.write_str("create current"),
            Step::CreateNext => f.write_str("create next"),
            Step::Promote {
                next,
                retire: Some(retire),
            } => write!(f, "promote {next} (retiring {retire})"),
            Step::Promote { next, retire: None } => write!(f, "promote {next}"),
            Step::Remove { kid } => write!(f, "remove {kid}"),
            Step::Revoke { kid } => write!(f, "revoke {kid}"),
        }
    }
}

/// What to do now, and when the key set next needs a look.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// The next moment the published key set changes on its own (a scheduled rotation or a
    /// removal). Caps the JWKS `max-age`, and wakes the background loop.
    pub next_change_at: Option<UnixTime>,
}

fn current(keys: &[KeyRecord]) -> Option<&KeyRecord> {
    keys.iter()
        .filter(|k| k.state == KeyState::Current)
        .max_by_key(|k| (k.activated_at, k.created_at))
}

fn next(keys: &[KeyRecord]) -> Option<&KeyRecord> {
    keys.iter()
        .filter(|k| k.state == KeyState::Next)
        .max_by_key(|k| (k.published_at, k.created_at))
}

fn earliest(a: Option<UnixTime>, b: UnixTime) -> Option<UnixTime> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// Decides what one key set needs at `now`: initial keys, a missing successor, a scheduled
/// rotation, removals of retired keys whose grace has ended.
pub fn plan(keys: &[KeyRecord], now: UnixTime, timing: &Timing) -> Plan {
    plan_held(keys, now, timing, None)
}

/// When the scheduled rotation of a key set is due, and the successor it would promote:
/// `None` when the set rotates only by hand or has no current and next key to rotate.
/// Never before the successor has been published for `prepublish`.
pub fn rotation_due<'a>(
    keys: &'a [KeyRecord],
    timing: &Timing,
) -> Option<(UnixTime, &'a KeyRecord)> {
    let period = timing.rotation_period?;
    let (active, successor) = (current(keys)?, next(keys)?);
    let activated = active.activated_at.unwrap_or(active.published_at);
    Some((
        (activated + period).max(successor.published_at + timing.prepublish),
        successor,
    ))
}

/// When the next retired key leaves the JWKS, if one is waiting to.
pub fn next_removal(keys: &[KeyRecord]) -> Option<UnixTime> {
    keys.iter()
        .filter(|k| k.state == KeyState::Retired)
        .filter_map(|k| k.remove_at)
        .min()
}

/// [`plan`], with a due scheduled rotation held back until `held_until` (the fetch gate's
/// deadline): the rest of the plan (removals, a missing successor) goes ahead.
fn plan_held(
    keys: &[KeyRecord],
    now: UnixTime,
    timing: &Timing,
    held_until: Option<UnixTime>,
) -> Plan {
    let mut out = Plan::default();

    for key in keys.iter().filter(|k| k.state == KeyState::Retired) {
        match key.remove_at {
            Some(at) if at <= now => out.steps.push(Step::Remove {
                kid: key.kid.clone(),
            }),
            Some(at) => out.next_change_at = earliest(out.next_change_at, at),
            None => out.steps.push(Step::Remove {
                kid: key.kid.clone(),
            }),
        }
    }

    match (current(keys), next(keys)) {
        (None, None) => {
            out.steps.push(Step::CreateCurrent);
            out.steps.push(Step::CreateNext);
        }
        // Nothing signs: the published successor is the only candidate.
        (None, Some(successor)) => {
            out.steps.push(Step::Promote {
                next: successor.kid.clone(),
                retire: None,
            });
            out.steps.push(Step::CreateNext);
        }
        (Some(_), None) => out.steps.push(Step::CreateNext),
        (Some(active), Some(successor)) => {
            if let Some(period) = timing.rotation_period {
                let activated = active.activated_at.unwrap_or(active.published_at);
                // Due by the calendar, but never before the successor has been visible to
                // every verifier's cache.
                let due = (activated + period).max(successor.published_at + timing.prepublish);
                if let (true, Some(until)) = (due <= now, held_until) {
                    // Waiting for fetch evidence: it rotates by `until` at the latest.
                    out.next_change_at = earliest(out.next_change_at, until.max(now));
                } else if due <= now {
                    out.steps.push(Step::Promote {
                        next: successor.kid.clone(),
                        retire: Some(active.kid.clone()),
                    });
                    out.steps.push(Step::CreateNext);
                    // The new successor's schedule starts now.
                    let following = (now + period).max(now + timing.prepublish);
                    out.next_change_at = earliest(out.next_change_at, following);
                } else {
                    out.next_change_at = earliest(out.next_change_at, due);
                }
            }
        }
    }
    if out.steps.iter().any(|s| {
        matches!(
            s,
            Step::Promote {
                retire: Some(_),
                ..
            }
        )
    }) {
        // The key retired by this plan leaves after its grace.
        out.next_change_at = earliest(out.next_change_at, now + timing.retire_grace);
    }
    out
}

/// A key set's rule for rotating on evidence (`rotation_requires_fetch`, `fetcher_window`,
/// `rotation_deadline`), in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchGate {
    /// A scheduled rotation waits for every recent fetcher to have been served the successor,
    /// and an unforced manual one is refused until then.
    pub requires_fetch: bool,
    /// A fetcher counts when it fetched the JWKS within this long.
    pub fetcher_window: i64,
    /// How long after it was due a scheduled rotation waits for evidence at most.
    pub rotation_deadline: i64,
}

impl Default for FetchGate {
    fn default() -> Self {
        FetchGate {
            requires_fetch: false,
            fetcher_window: 7 * 86_400,
            rotation_deadline: 7 * 86_400,
        }
    }
}

/// What the fetcher record says about one fetcher and the successor key: the input of the
/// gate, read from the store by the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sighting {
    /// How operators know it: user agent and source network.
    pub fetcher: String,
    pub last_seen: UnixTime,
    /// When it was first served the successor's kid, if ever.
    pub served_next_at: Option<UnixTime>,
}

/// A recent fetcher without the evidence a rotation needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unseen {
    pub fetcher: String,
    pub last_seen: UnixTime,
    /// When it was first served the successor (less than `jwks_max_age` ago), or `None`:
    /// never.
    pub served_next_at: Option<UnixTime>,
}

impl Unseen {
    /// When this fetcher's evidence is complete if nothing else changes: `jwks_max_age` after
    /// it was first served the successor; `None` when it never was.
    pub fn ready_at(&self, timing: &Timing) -> Option<UnixTime> {
        self.served_next_at.map(|t| t + timing.jwks_max_age)
    }
}

/// The fetchers seen within `fetcher_window` of `now` that have not been served the
/// successor at least `jwks_max_age` ago, in the order given. Empty: the evidence is
/// complete (also when no fetcher was seen at all: there is no one to wait for).
pub fn unseen_successor(
    sightings: &[Sighting],
    now: UnixTime,
    timing: &Timing,
    gate: &FetchGate,
) -> Vec<Unseen> {
    sightings
        .iter()
        .filter(|s| s.last_seen > now - gate.fetcher_window)
        .filter(|s| {
            s.served_next_at
                .is_none_or(|t| t > now - timing.jwks_max_age)
        })
        .map(|s| Unseen {
            fetcher: s.fetcher.clone(),
            last_seen: s.last_seen,
            served_next_at: s.served_next_at,
        })
        .collect()
}

/// Where a key set's scheduled rotation stands against its fetch gate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateStatus {
    /// `rotation_requires_fetch` is off, or the set has no scheduled rotation.
    Off,
    /// The rotation is not due yet (`due`); `unseen` are the fetchers that would hold it if
    /// it were due now.
    NotDue { due: UnixTime, unseen: Vec<Unseen> },
    /// Due, and every recent fetcher has been served the successor long enough.
    Satisfied { due: UnixTime },
    /// Due, held back for `unseen`, until `deadline` at the latest.
    Waiting {
        due: UnixTime,
        deadline: UnixTime,
        unseen: Vec<Unseen>,
    },
    /// Due, `unseen` still missing, and `deadline` has passed: it rotates anyway.
    DeadlinePassed {
        due: UnixTime,
        deadline: UnixTime,
        unseen: Vec<Unseen>,
    },
}

/// [`plan`] under the fetch gate: with `rotation_requires_fetch`, a due scheduled rotation
/// waits until every fetcher seen within `fetcher_window` has been served the successor
/// (`sightings` are about the successor [`rotation_due`] names) at least `jwks_max_age`
/// ago, and up to `rotation_deadline` after it was due, after which it goes ahead anyway.
/// Nothing else in the plan waits: a set with no current key promotes its successor at once.
pub fn plan_gated(
    keys: &[KeyRecord],
    now: UnixTime,
    timing: &Timing,
    gate: &FetchGate,
    sightings: &[Sighting],
) -> (Plan, GateStatus) {
    let due = match rotation_due(keys, timing) {
        Some((due, _)) if gate.requires_fetch => due,
        _ => return (plan(keys, now, timing), GateStatus::Off),
    };
    let unseen = unseen_successor(sightings, now, timing, gate);
    let deadline = due + gate.rotation_deadline;
    if due > now {
        return (plan(keys, now, timing), GateStatus::NotDue { due, unseen });
    }
    if unseen.is_empty() {
        (plan(keys, now, timing), GateStatus::Satisfied { due })
    } else if now < deadline {
        let plan = plan_held(keys, now, timing, Some(deadline));
        let status = GateStatus::Waiting {
            due,
            deadline,
            unseen,
        };
        (plan, status)
    } else {
        let status = GateStatus::DeadlinePassed {
            due,
            deadline,
            unseen,
        };
        (plan(keys, now, timing), status)
    }
}

/// Decides the fetch evidence of an operator's rotation whose prepublish wait is over
/// ([`check_rotation`] said yes): with `rotation_requires_fetch`, an unforced request is
/// refused while any recent fetcher lacks the successor; otherwise (and when forced) the
/// fetchers it risks are returned, for the answer to name.
pub fn check_rotation_evidence(
    sightings: &[Sighting],
    now: UnixTime,
    timing: &Timing,
    gate: &FetchGate,
    force: bool,
) -> Result<Vec<Unseen>, RotationRefused> {
    let unseen = unseen_successor(sightings, now, timing, gate);
    if gate.requires_fetch && !force && !unseen.is_empty() {
        // Worth retrying once the last of them can be ready; never when one has not been
        // served the successor at all (only its next fetch can change that).
        let retry_after = unseen
            .iter()
            .map(|u| u.ready_at(timing).map(|at| at - now))
            .collect::<Option<Vec<_>>>()
            .and_then(|waits| waits.into_iter().max());
        return Err(RotationRefused::NotFetched {
            unseen,
            retry_after,
        });
    }
    Ok(unseen)
}

/// Why a rotation request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotationRefused {
    /// `rotation_requires_fetch`: these recent fetchers have not been served the successor
    /// at least `jwks_max_age` ago. `retry_after`: when all of them can be, if all were
    /// served it.
    NotFetched {
        unseen: Vec<Unseen>,
        retry_after: Option<i64>,
    },
    /// The successor has not been published for `prepublish` yet.
    TooEarly {
        next_kid: String,
        published_for: i64,
        retry_after: i64,
    },
    /// The key set has no published successor (it is being repaired by the scheduler).
    NoNextKey,
}

/// Decides an operator's rotation request. `force` skips the prepublish wait, at the risk
/// that verifiers holding a cached JWKS without the new kid reject its assertions until
/// their cache expires.
pub fn check_rotation(
    keys: &[KeyRecord],
    now: UnixTime,
    timing: &Timing,
    force: bool,
) -> Result<Vec<Step>, RotationRefused> {
    let successor = next(keys).ok_or(RotationRefused::NoNextKey)?;
    let published_for = now - successor.published_at;
    if published_for < timing.prepublish && !force {
        return Err(RotationRefused::TooEarly {
            next_kid: successor.kid.clone(),
            published_for,
            retry_after: timing.prepublish - published_for,
        });
    }
    Ok(vec![
        Step::Promote {
            next: successor.kid.clone(),
            retire: current(keys).map(|k| k.kid.clone()),
        },
        Step::CreateNext,
    ])
}

/// The key `steps` promote and the one they retire, if they promote one.
pub fn promotion(steps: &[Step]) -> Option<(&str, Option<&str>)> {
    steps.iter().find_map(|s| match s {
        Step::Promote { next, retire } => Some((next.as_str(), retire.as_deref())),
        _ => None,
    })
}

/// A key made to sign before `prepublish` has passed since it was published: verifiers that
/// cached the JWKS before it appeared reject its assertions until their cache expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forced {
    /// The promoted successor had been published for only `published_for` seconds.
    Early { published_for: i64 },
    /// No published successor existed, so a key made now signs at once.
    Unpublished,
}

impl Forced {
    /// What the operator is told when `kid` signs this way.
    pub fn warning(&self, kid: &str, timing: &Timing) -> String {
        match self {
            Forced::Early { published_for } => format!(
                "{kid} was published only {published_for}s ago (prepublish is {}s): verifiers \
                 that cached the JWKS before it appeared will reject its assertions until their \
                 cache expires (up to {}s)",
                timing.prepublish, timing.jwks_max_age
            ),
            Forced::Unpublished => format!(
                "no published successor existed, so the new key {kid} signs at once; verifiers \
                 will reject its assertions until they refetch the JWKS (up to {}s)",
                timing.jwks_max_age
            ),
        }
    }
}

/// Whether applying `steps`, decided from `keys` at `now`, makes a key sign before its
/// prepublish has passed: a promotion of a successor younger than `prepublish`, or a fresh
/// current key. `None` when the steps respect the prepublish wait.
pub fn forced(
    keys: &[KeyRecord],
    steps: &[Step],
    now: UnixTime,
    timing: &Timing,
) -> Option<Forced> {
    if let Some((promoted, _)) = promotion(steps) {
        // The steps were decided from `keys`, so the promoted key is among them.
        let published_for = keys
            .iter()
            .find(|k| k.kid == promoted)
            .map_or(0, |k| now - k.published_at);
        return (published_for < timing.prepublish).then_some(Forced::Early { published_for });
    }
    steps
        .contains(&Step::CreateCurrent)
        .then_some(Forced::Unpublished)
}

/// Why a revocation request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevocationRefused {
    /// The key is already revoked or removed.
    NotPublished(KeyState),
}

/// What revoking `kid` entails. Revoking the current key promotes the successor at once
/// (a forced promotion), or makes a fresh current key when there is none; revoking the
/// successor makes a new one.
pub fn plan_revocation(keys: &[KeyRecord], kid: &str) -> Result<Vec<Step>, RevocationRefused> {
    let Some(key) = keys.iter().find(|k| k.kid == kid) else {
        // The caller looked the kid up first; an absent kid has nothing to revoke.
        return Ok(Vec::new());
    };
    let revoke = Step::Revoke {
        kid: kid.to_owned(),
    };
    match key.state {
        KeyState::Revoked | KeyState::Removed => Err(RevocationRefused::NotPublished(key.state)),
        KeyState::Retired => Ok(vec![revoke]),
        KeyState::Next => Ok(vec![revoke, Step::CreateNext]),
        KeyState::Current => Ok(match next(keys) {
            Some(successor) => vec![
                revoke,
                Step::Promote {
                    next: successor.kid.clone(),
                    retire: None,
                },
                Step::CreateNext,
            ],
            None => vec![revoke, Step::CreateCurrent, Step::CreateNext],
        }),
    }
}

/// The `max-age` for a JWKS served at `now`: the configured ceiling, shortened so that
/// caches expire by the next planned change, but never below 60 s (a verifier that
/// re-fetches on every request is the failure `no-store` causes).
pub fn jwks_max_age(now: UnixTime, next_change_at: Option<UnixTime>, ceiling: i64) -> i64 {
    const FLOOR: i64 = 60;
    let until_change = next_change_at.map_or(ceiling, |at| at - now);
    ceiling.min(until_change).max(FLOOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600;
    const D: i64 = 24 * H;

    fn timing() -> Timing {
        Timing {
            rotation_period: Some(90 * D),
            jwks_max_age: H,
            prepublish: 75 * 60,
            retire_grace: D,
        }
    }

    fn key(kid: &str, state: KeyState, published_at: UnixTime) -> KeyRecord {
        KeyRecord {
            kid: kid.into(),
            keyset: "default".into(),
            alg: Algorithm::Rs384,
            state,
            created_at: published_at,
            published_at,
            activated_at: (state == KeyState::Current).then_some(published_at),
            retired_at: None,
            remove_at: None,
            removed_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn an_empty_key_set_gets_a_current_and_a_next_key() {
        let plan = plan(&[], 1000, &timing());
        assert_eq!(plan.steps, vec![Step::CreateCurrent, Step::CreateNext]);
    }

    #[test]
    fn a_key_set_without_a_successor_gets_one() {
        let plan = plan(&[key("a", KeyState::Current, 0)], 10, &timing());
        assert_eq!(plan.steps, vec![Step::CreateNext]);
    }

    #[test]
    fn nothing_happens_before_the_rotation_is_due_and_the_plan_says_when() {
        let keys = [key("a", KeyState::Current, 0), key("b", KeyState::Next, 0)];
        let plan = plan(&keys, 89 * D, &timing());
        assert!(plan.steps.is_empty());
        assert_eq!(plan.next_change_at, Some(90 * D));
    }

    #[test]
    fn a_due_rotation_promotes_next_retires_current_and_makes_a_new_next() {
        let keys = [key("a", KeyState::Current, 0), key("b", KeyState::Next, 0)];
        let plan = plan(&keys, 90 * D, &timing());
        assert_eq!(
            plan.steps,
            vec![
                Step::Promote {
                    next: "b".into(),
                    retire: Some("a".into())
                },
                Step::CreateNext
            ]
        );
        assert_eq!(
            plan.next_change_at,
            Some(90 * D + D),
            "the retired key leaves after its grace"
        );
    }

    #[test]
    fn a_scheduled_rotation_waits_for_a_young_successor() {
        // The successor was made 10 minutes ago (after a forced rotation, say).
        let now = 100 * D;
        let keys = [
            key("a", KeyState::Current, 0),
            key("b", KeyState::Next, now - 600),
        ];
        let plan = plan(&keys, now, &timing());
        assert!(plan.steps.is_empty());
        assert_eq!(plan.next_change_at, Some(now - 600 + 75 * 60));
    }

    #[test]
    fn rotation_off_never_rotates_by_itself() {
        let mut t = timing();
        t.rotation_period = None;
        let keys = [key("a", KeyState::Current, 0), key("b", KeyState::Next, 0)];
        let plan = plan(&keys, 10_000 * D, &t);
        assert!(plan.steps.is_empty());
        assert_eq!(plan.next_change_at, None);
    }

    #[test]
    fn retired_keys_stay_through_their_grace_then_are_removed() {
        let mut old = key("old", KeyState::Retired, 0);
        old.remove_at = Some(50 * D);
        let keys = [
            old,
            key("a", KeyState::Current, 49 * D),
            key("b", KeyState::Next, 49 * D),
        ];
        let before = plan(&keys, 50 * D - 1, &timing());
        assert!(before.steps.is_empty());
        assert_eq!(before.next_change_at, Some(50 * D));
        let at = plan(&keys, 50 * D, &timing());
        assert_eq!(at.steps, vec![Step::Remove { kid: "old".into() }]);
    }

    #[test]
    fn a_key_set_with_only_a_successor_promotes_it() {
        let plan = plan(&[key("b", KeyState::Next, 0)], 5, &timing());
        assert_eq!(
            plan.steps,
            vec![
                Step::Promote {
                    next: "b".into(),
                    retire: None
                },
                Step::CreateNext
            ]
        );
    }

    #[test]
    fn manual_rotation_is_refused_while_next_is_younger_than_prepublish() {
        let keys = [
            key("a", KeyState::Current, 0),
            key("b", KeyState::Next, 1000),
        ];
        let refused = check_rotation(&keys, 1000 + 60, &timing(), false).unwrap_err();
        assert_eq!(
            refused,
            RotationRefused::TooEarly {
                next_kid: "b".into(),
                published_for: 60,
                retry_after: 75 * 60 - 60
            }
        );
        assert!(check_rotation(&keys, 1000 + 60, &timing(), true).is_ok());
        assert!(check_rotation(&keys, 1000 + 75 * 60, &timing(), false).is_ok());
    }

    #[test]
    fn revoking_the_current_key_promotes_next_at_once() {
        let keys = [key("a", KeyState::Current, 0), key("b", KeyState::Next, 0)];
        assert_eq!(
            plan_revocation(&keys, "a").unwrap(),
            vec![
                Step::Revoke { kid: "a".into() },
                Step::Promote {
                    next: "b".into(),
                    retire: None
                },
                Step::CreateNext
            ]
        );
        assert_eq!(
            plan_revocation(&keys, "b").unwrap(),
            vec![Step::Revoke { kid: "b".into() }, Step::CreateNext]
        );
        let gone = [key("x", KeyState::Revoked, 0)];
        assert!(plan_revocation(&gone, "x").is_err());
    }

    #[test]
    fn a_rotation_is_forced_only_while_the_successor_is_younger_than_prepublish() {
        let keys = [
            key("a", KeyState::Current, 0),
            key("b", KeyState::Next, 1000),
        ];
        let early = check_rotation(&keys, 1000 + 60, &timing(), true).unwrap();
        assert_eq!(promotion(&early), Some(("b", Some("a"))));
        assert_eq!(
            forced(&keys, &early, 1000 + 60, &timing()),
            Some(Forced::Early { published_for: 60 })
        );
        let due = check_rotation(&keys, 1000 + 75 * 60, &timing(), false).unwrap();
        assert_eq!(forced(&keys, &due, 1000 + 75 * 60, &timing()), None);
    }

    #[test]
    fn a_revocation_is_forced_when_it_promotes_early_or_makes_a_key_that_signs_at_once() {
        let now = 1000 + 60;
        let young = [
            key("a", KeyState::Current, 0),
            key("b", KeyState::Next, 1000),
        ];
        let steps = plan_revocation(&young, "a").unwrap();
        assert_eq!(promotion(&steps), Some(("b", None)));
        assert_eq!(
            forced(&young, &steps, now, &timing()),
            Some(Forced::Early { published_for: 60 })
        );
        let old = [key("a", KeyState::Current, 0), key("b", KeyState::Next, 0)];
        let steps = plan_revocation(&old, "a").unwrap();
        assert_eq!(forced(&old, &steps, 100 * D, &timing()), None);

        let alone = [key("a", KeyState::Current, 0)];
        let steps = plan_revocation(&alone, "a").unwrap();
        assert_eq!(promotion(&steps), None);
        assert_eq!(
            forced(&alone, &steps, now, &timing()),
            Some(Forced::Unpublished)
        );

        // Revoking the successor or a retired key promotes nothing.
        let steps = plan_revocation(&young, "b").unwrap();
        assert_eq!(forced(&young, &steps, now, &timing()), None);
    }

    #[test]
    fn the_warnings_name_the_key_the_wait_and_the_cache_lifetime() {
        let t = timing();
        assert_eq!(
            Forced::Early { published_for: 60 }.warning("kid-b", &t),
            "kid-b was published only 60s ago (prepublish is 4500s): verifiers that cached the \
             JWKS before it appeared will reject its assertions until their cache expires (up to \
             3600s)"
        );
        assert_eq!(
            Forced::Unpublished.warning("kid-c", &t),
            "no published successor existed, so the new key kid-c signs at once; verifiers will \
             reject its assertions until they refetch the JWKS (up to 3600s)"
        );
    }

    fn gate() -> FetchGate {
        FetchGate {
            requires_fetch: true,
            ..FetchGate::default()
        }
    }

    fn sighting(fetcher: &str, last_seen: UnixTime, served_next_at: Option<UnixTime>) -> Sighting {
        Sighting {
            fetcher: fetcher.into(),
            last_seen,
            served_next_at,
        }
    }

    #[test]
    fn a_due_rotation_waits_for_a_fetcher_without_the_successor_until_it_leaves_the_window() {
        let keys = [key("a", KeyState::Current, 0), key("b", KeyState::Next, 0)];
        let due = 90 * D;
        let now = due + H;
        // The EHR fetched yesterday and got the successor long ago; the other stopped
        // fetching two days before the rotation was due, before the successor existed.
        let ehr = sighting("ehr", now - D, Some(10));
        let gone = sighting("gone", due - 2 * D, None);
        let (held, status) =
            plan_gated(&keys, now, &timing(), &gate(), &[ehr.clone(), gone.clone()]);
        assert!(held.steps.is_empty(), "{held:?}");
        assert_eq!(
            held.next_change_at,
            Some(due + 7 * D),
            "rotates by the deadline at the latest"
        );
        let GateStatus::Waiting {
            unseen, deadline, ..
        } = status
        else {
            panic!("{status:?}")
        };
        assert_eq!(deadline, due + 7 * D);
        assert_eq!(unseen.len(), 1);
        assert_eq!(unseen[0].fetcher, "gone");

        // Five days after its last fetch it drops out of the 7-day window: the rotation goes.
        let later = gone.last_seen + 7 * D;
        let (plan, status) = plan_gated(&keys, later, &timing(), &gate(), &[ehr, gone]);
        assert_eq!(status, GateStatus::Satisfied { due });
        assert_eq!(promotion(&plan.steps), Some(("b", Some("a"))));
    }

    #[test]
    fn a_fetcher_served_the_successor_only_recently_holds_the_rotation_until_max_age_has_passed() {
        let keys = [key("a", KeyState::Current, 0), key("b", KeyState::Next, 0)];
        let now = 90 * D;
        let fresh = [sighting("ehr", now - 60, Some(now - 600))];
        let (plan, status) = plan_gated(&keys, now, &timing(), &gate(), &fresh);
        assert!(plan.steps.is_empty());
        assert!(matches!(status, GateStatus::Waiting { .. }), "{status:?}");
        let (plan, _) = plan_gated(&keys, now - 600 + H, &timing(), &gate(), &fresh);
        assert_eq!(promotion(&plan.steps), Some(("b", Some("a"))));
    }

    #[test]
    fn past_the_deadline_the_rotation_goes_ahead_and_says_who_is_missing() {
        let keys = [key("a", KeyState::Current, 0), key("b", KeyState::Next, 0)];
        let due = 90 * D;
        let now = due + 7 * D;
        let stuck = [sighting("stuck", now - H, None)];
        let (plan, status) = plan_gated(&keys, now, &timing(), &gate(), &stuck);
        assert_eq!(promotion(&plan.steps), Some(("b", Some("a"))));
        let GateStatus::DeadlinePassed { unseen, .. } = status else {
            panic!("{status:?}")
        };
        assert_eq!(unseen[0].fetcher, "stuck");
    }

    #[test]
    fn without_rotation_requires_fetch_or_before_it_is_due_the_gate_changes_nothing() {
        let keys = [key("a", KeyState::Current, 0), key("b", KeyState::Next, 0)];
        let stuck = [sighting("stuck", 90 * D, None)];
        let off = FetchGate::default();
        let (plan_off, status) = plan_gated(&keys, 90 * D, &timing(), &off, &stuck);
        assert_eq!(status, GateStatus::Off);
        assert_eq!(plan_off, plan(&keys, 90 * D, &timing()));
        let (early, status) = plan_gated(&keys, 89 * D, &timing(), &gate(), &stuck);
        assert_eq!(early, plan(&keys, 89 * D, &timing()));
        assert!(matches!(status, GateStatus::NotDue { due, .. } if due == 90 * D));
        // Nothing signs: the successor is promoted whatever the fetchers saw.
        let (alone, _) = plan_gated(
            &[key("b", KeyState::Next, 0)],
            5,
            &timing(),
            &gate(),
            &stuck,
        );
        assert_eq!(promotion(&alone.steps), Some(("b", None)));
    }

    #[test]
    fn a_manual_rotation_is_refused_while_a_fetcher_lacks_the_successor_unless_forced() {
        let now = 10 * D;
        let sightings = [
            sighting("ehr", now - 60, Some(now - 2 * H)),
            sighting("late", now - 60, Some(now - 600)),
            sighting("never", now - 60, None),
        ];
        let refused =
            check_rotation_evidence(&sightings, now, &timing(), &gate(), false).unwrap_err();
        let RotationRefused::NotFetched {
            unseen,
            retry_after,
        } = refused
        else {
            panic!("{refused:?}")
        };
        let names: Vec<_> = unseen.iter().map(|u| u.fetcher.as_str()).collect();
        assert_eq!(names, ["late", "never"]);
        assert_eq!(retry_after, None, "one was never served it");
        let refused =
            check_rotation_evidence(&sightings[..2], now, &timing(), &gate(), false).unwrap_err();
        assert!(
            matches!(refused, RotationRefused::NotFetched { retry_after: Some(r), .. } if r == H - 600)
        );

        let risked = check_rotation_evidence(&sightings, now, &timing(), &gate(), true).unwrap();
        assert_eq!(risked.len(), 2, "forced: it names whom it risks");
        let off = FetchGate::default();
        assert_eq!(
            check_rotation_evidence(&sightings, now, &timing(), &off, false)
                .unwrap()
                .len(),
            2,
            "without the gate it is allowed and still says who has not seen the key"
        );
    }

    #[test]
    fn the_next_rotation_and_removal_are_read_from_the_keys() {
        let mut old = key("old", KeyState::Retired, 0);
        old.remove_at = Some(50 * D);
        let keys = [
            old,
            key("a", KeyState::Current, 49 * D),
            key("b", KeyState::Next, 49 * D),
        ];
        assert_eq!(
            rotation_due(&keys, &timing()).map(|(at, k)| (at, k.kid.as_str())),
            Some((139 * D, "b"))
        );
        assert_eq!(next_removal(&keys), Some(50 * D));
        let mut manual = timing();
        manual.rotation_period = None;
        assert_eq!(rotation_due(&keys, &manual), None);
    }

    #[test]
    fn max_age_is_capped_by_the_next_change_and_floored_at_a_minute() {
        assert_eq!(jwks_max_age(0, None, 3600), 3600);
        assert_eq!(jwks_max_age(0, Some(600), 3600), 600);
        assert_eq!(jwks_max_age(0, Some(10), 3600), 60);
        assert_eq!(jwks_max_age(0, Some(-50), 3600), 60);
    }
}
