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
                if due <= now {
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

/// Why a rotation request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotationRefused {
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

    #[test]
    fn max_age_is_capped_by_the_next_change_and_floored_at_a_minute() {
        assert_eq!(jwks_max_age(0, None, 3600), 3600);
        assert_eq!(jwks_max_age(0, Some(600), 3600), 600);
        assert_eq!(jwks_max_age(0, Some(10), 3600), 60);
        assert_eq!(jwks_max_age(0, Some(-50), 3600), 60);
    }
}
