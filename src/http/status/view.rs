//! What the status page shows, gathered from the keyring's snapshot, the audit trail and
//! the refusal ring, and the sentences that state what an operator's action will do. No
//! HTML here (that is `html`), and every decision comes from [`crate::rotation`], so the
//! page says what the keyring will do.

use crate::audit::{event, AuditFilter};
use crate::rotation::{self, Forced, KeyRecord, KeyState, Step, Timing, UnixTime};
use crate::store::Store;

/// One JWKS fetcher as the page shows it, from the fetcher record (the same one `GET
/// /admin/v1/keysets/{keyset}/fetchers` lists).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetcherView {
    /// User agent and source network, as the record coarsens them.
    pub label: String,
    pub first_seen: UnixTime,
    pub last_seen: UnixTime,
    /// The kids it was served, in the order it first saw them.
    pub kids_seen: Vec<String>,
}

/// The page's view of a key set's recorded fetchers (most recent first, as recorded).
pub fn fetcher_views(fetchers: &[crate::store::Fetcher]) -> Vec<FetcherView> {
    fetchers
        .iter()
        .map(|f| FetcherView {
            label: if f.user_agent.is_empty() {
                format!("(no user agent) from {}", f.network)
            } else {
                format!("{} from {}", f.user_agent, f.network)
            },
            first_seen: f.first_seen,
            last_seen: f.last_seen,
            kids_seen: f.kids.iter().map(|k| k.kid.clone()).collect(),
        })
        .collect()
}

/// Hours the activity chart covers.
pub const ACTIVITY_HOURS: usize = 24;

/// Most audit records the chart reads per page view (10 pages of 1000).
const ACTIVITY_RECORD_LIMIT: usize = 10_000;

/// Assertions of one key set per hour, oldest hour first; the last bucket ends at `now`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// Assertions handed to callers (`POST /v1/assertions`).
    pub for_callers: [u32; ACTIVITY_HOURS],
    /// Assertions jwksd sent itself in token requests (each attempt counts).
    pub for_token_requests: [u32; ACTIVITY_HOURS],
}

impl Activity {
    pub fn totals(&self) -> (u32, u32) {
        (
            self.for_callers.iter().sum(),
            self.for_token_requests.iter().sum(),
        )
    }
}

/// The day's activity of every key set, and whether the chart was cut at the record limit.
#[derive(Clone, Debug, Default)]
pub struct DayActivity {
    pub by_keyset: std::collections::BTreeMap<String, Activity>,
    /// More records than the page reads: the newest hours may be missing.
    pub truncated: bool,
}

/// Buckets the `assertion.issued` records of the last day by hour and key set.
pub async fn day_activity(
    store: &dyn Store,
    now: UnixTime,
) -> Result<DayActivity, crate::store::StoreError> {
    let since = now - (ACTIVITY_HOURS as i64) * 3600;
    let filter = AuditFilter {
        since: Some(since),
        event: Some(event::ASSERTION_ISSUED.to_owned()),
        ..AuditFilter::default()
    };
    let mut out = DayActivity::default();
    let (mut after, mut read) = (0, 0usize);
    loop {
        let page = store.audit_page(&filter, after, 1000).await?;
        for record in &page {
            let e = &record.event;
            let Some(keyset) = &e.keyset else { continue };
            let age = now - e.time;
            if !(0..(ACTIVITY_HOURS as i64) * 3600).contains(&age) {
                continue;
            }
            let bucket = ACTIVITY_HOURS - 1 - (age / 3600) as usize;
            let activity = out.by_keyset.entry(keyset.clone()).or_default();
            let token_request = e
                .detail
                .as_deref()
                .is_some_and(|d| d.contains("\"token_request\""));
            if token_request {
                activity.for_token_requests[bucket] += 1;
            } else {
                activity.for_callers[bucket] += 1;
            }
        }
        read += page.len();
        match page.last() {
            Some(last) if page.len() == 1000 => after = last.seq,
            _ => break,
        }
        if read >= ACTIVITY_RECORD_LIMIT {
            out.truncated = true;
            break;
        }
    }
    Ok(out)
}

/// The retired key that leaves the JWKS first, and when.
pub fn next_removal(records: &[KeyRecord]) -> Option<(&str, UnixTime)> {
    records
        .iter()
        .filter(|k| k.state == KeyState::Retired)
        .filter_map(|k| k.remove_at.map(|at| (k.kid.as_str(), at)))
        .min_by_key(|(_, at)| *at)
}

/// The newest key in `state`.
pub fn kid_in(records: &[KeyRecord], state: KeyState) -> Option<&str> {
    records
        .iter()
        .filter(|k| k.state == state)
        .max_by_key(|k| (k.activated_at, k.published_at, k.created_at))
        .map(|k| k.kid.as_str())
}

/// A duration for people: `45 s`, `12 min`, `1 h 15 min`, `3 d 4 h`.
pub fn span(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..120 => format!("{s} s"),
        120..7200 if s % 3600 == 0 => format!("{} h", s / 3600),
        120..3600 => format!("{} min", s / 60),
        3600..172_800 => {
            let (h, m) = (s / 3600, (s % 3600) / 60);
            if m == 0 {
                format!("{h} h")
            } else {
                format!("{h} h {m} min")
            }
        }
        _ => {
            let (d, h) = (s / 86_400, (s % 86_400) / 3600);
            if h == 0 {
                format!("{d} d")
            } else {
                format!("{d} d {h} h")
            }
        }
    }
}

/// What a rotation of a key set would do now, as the confirmation step states it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotateConsequence {
    pub promoted: String,
    pub retired: Option<String>,
    /// The rotation must be forced (the next key is younger than `prepublish`).
    pub forced: bool,
    /// Each sentence a paragraph.
    pub sentences: Vec<String>,
}

/// `None` when the key set has no next key to promote.
pub fn rotate_consequence(
    records: &[KeyRecord],
    timing: &Timing,
    fetchers: Option<&[FetcherView]>,
    now: UnixTime,
) -> Option<RotateConsequence> {
    let steps = rotation::check_rotation(records, now, timing, true).ok()?;
    let (promoted, retired) = rotation::promotion(&steps)?;
    let forced = rotation::forced(records, &steps, now, timing);
    let mut sentences = Vec::new();
    let published_for = records
        .iter()
        .find(|k| k.kid == promoted)
        .map_or(0, |k| now - k.published_at);
    match forced {
        Some(Forced::Early { published_for }) => sentences.push(format!(
            "Forced: the next key {promoted} was published {} ago, less than prepublish ({}). \
             EHRs that cached the JWKS before it appeared may reject assertions signed with it \
             for up to {} (jwks_max_age), so token requests may fail until they refetch.",
            span(published_for),
            span(timing.prepublish),
            span(timing.jwks_max_age),
        )),
        _ => sentences.push(format!(
            "The next key {promoted} has been published for {} (prepublish is {}): every EHR \
             that honours the JWKS Cache-Control has had it for long enough.",
            span(published_for),
            span(timing.prepublish),
        )),
    }
    match fetchers {
        None => sentences.push(
            "The fetcher record cannot be read right now, so jwksd cannot say whether each \
             EHR has fetched this key."
                .to_owned(),
        ),
        Some(fetchers) => {
            let missing: Vec<&str> = fetchers
                .iter()
                .filter(|f| !f.kids_seen.iter().any(|k| k == promoted))
                .map(|f| f.label.as_str())
                .collect();
            if !missing.is_empty() {
                sentences.push(format!(
                    "Not yet seen by: {}; their token requests may fail until they refetch.",
                    missing.join(", ")
                ));
            }
        }
    }
    if let Some(retired) = retired {
        sentences.push(format!(
            "{retired} stops signing now, its private half is destroyed, and it stays in the \
             JWKS for {} (retire_grace) so that assertions it signed still verify.",
            span(timing.retire_grace)
        ));
    }
    sentences.push("A new next key is generated and published in the same step.".to_owned());
    Some(RotateConsequence {
        promoted: promoted.to_owned(),
        retired: retired.map(str::to_owned),
        forced: forced.is_some(),
        sentences,
    })
}

/// What revoking `kid` would do now; `None` when it is not published (nothing to revoke).
pub fn revoke_consequence(
    records: &[KeyRecord],
    timing: &Timing,
    kid: &str,
    now: UnixTime,
) -> Option<Vec<String>> {
    let key = records.iter().find(|k| k.kid == kid)?;
    if !key.state.is_published() {
        return None;
    }
    let steps = rotation::plan_revocation(records, kid).ok()?;
    let mut sentences = vec![format!(
        "{kid} ({}) leaves the JWKS at once and never signs again: assertions signed with it \
         stop verifying at once for every EHR that fetches the JWKS (a copy cached before \
         the revocation may hold it for up to {}).",
        key.state,
        span(timing.jwks_max_age)
    )];
    match rotation::forced(records, &steps, now, timing) {
        Some(forced) => {
            let promoted = rotation::promotion(&steps).map_or("a new key", |(next, _)| next);
            sentences.push(format!(
                "It is the current key, so {promoted} signs in its place now. {}",
                forced.warning(promoted, timing)
            ));
        }
        None if steps.contains(&Step::CreateNext) => {
            sentences.push("A new next key is generated and published in its place.".to_owned())
        }
        None => {}
    }
    Some(sentences)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Algorithm;

    fn key(kid: &str, state: KeyState, published_at: i64, activated_at: Option<i64>) -> KeyRecord {
        KeyRecord {
            kid: kid.into(),
            keyset: "default".into(),
            alg: Algorithm::Es256,
            state,
            created_at: published_at,
            published_at,
            activated_at,
            retired_at: None,
            remove_at: None,
            removed_at: None,
            revoked_at: None,
        }
    }

    const TIMING: Timing = Timing {
        rotation_period: Some(86_400),
        jwks_max_age: 3600,
        prepublish: 4500,
        retire_grace: 86_400,
    };

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(span(45), "45 s");
        assert_eq!(span(600), "10 min");
        assert_eq!(span(3600), "1 h");
        assert_eq!(span(4500), "1 h 15 min");
        assert_eq!(span(86_400), "24 h");
        assert_eq!(span(90 * 86_400), "90 d");
        assert_eq!(span(3 * 86_400 + 4 * 3600), "3 d 4 h");
        assert_eq!(span(-5), "0 s");
    }

    #[test]
    fn the_confirmation_says_when_a_rotation_is_forced_and_what_it_risks() {
        let now = 1_000_000;
        let young = [
            key("c", KeyState::Current, now - 90_000, Some(now - 90_000)),
            key("n", KeyState::Next, now - 600, None),
        ];
        let early = rotate_consequence(&young, &TIMING, None, now).unwrap();
        assert!(early.forced);
        assert_eq!(
            (early.promoted.as_str(), early.retired.as_deref()),
            ("n", Some("c"))
        );
        assert!(
            early.sentences[0].contains("published 10 min ago, less than prepublish (1 h 15 min)")
                && early.sentences[0].contains("for up to 1 h"),
            "{:?}",
            early.sentences
        );
        let old = [
            key("c", KeyState::Current, now - 90_000, Some(now - 90_000)),
            key("n", KeyState::Next, now - 5000, None),
        ];
        assert!(!rotate_consequence(&old, &TIMING, None, now).unwrap().forced);
        assert_eq!(rotate_consequence(&old[..1], &TIMING, None, now), None);

        let revoked = revoke_consequence(&young, &TIMING, "c", now).unwrap();
        assert!(revoked[0].contains("stop verifying at once"), "{revoked:?}");
        assert!(
            revoked[1].contains("n signs in its place now"),
            "{revoked:?}"
        );
        let mut gone = young.clone();
        gone[0].state = KeyState::Revoked;
        assert_eq!(revoke_consequence(&gone, &TIMING, "c", now), None);
    }
}
