//! Audit records and their hash chain: what a record holds, how it is hashed, and how a
//! sequence of records is verified. Pure: nothing here reads or writes a store.
//!
//! Each record's `hash` is SHA-256 over the previous record's hash and the record's own
//! fields, so editing, deleting or reordering any record breaks the chain at that point;
//! [`verify`] names the first record where it breaks. Storing records (the store, in the
//! same transaction as the key change they describe) and verifying the trail a store holds
//! against its sealed head are above this module, in [`crate::store`] and
//! [`crate::trail`].

use aws_lc_rs::digest;
use serde::Serialize;

use crate::rotation::UnixTime;

/// The hash that precedes the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened.
pub mod event {
    pub const ASSERTION_ISSUED: &str = "assertion.issued";
    pub const KEY_GENERATED: &str = "key.generated";
    pub const KEY_PROMOTED: &str = "key.promoted";
    pub const KEY_RETIRED: &str = "key.retired";
    pub const KEY_REMOVED: &str = "key.removed";
    pub const KEY_REVOKED: &str = "key.revoked";
}

/// A record before it joins the chain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    pub time: UnixTime,
    pub event: String,
    /// Who caused it: a caller name, `admin`, or `scheduler`.
    pub caller: Option<String>,
    pub client_id: Option<String>,
    pub keyset: Option<String>,
    pub kid: Option<String>,
    pub jti: Option<String>,
    pub audience: Option<String>,
    pub expires_at: Option<UnixTime>,
    /// Free-form facts (forced, reason, ...), as JSON text.
    pub detail: Option<String>,
}

/// A record in the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    pub seq: i64,
    #[serde(flatten)]
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
}

/// The chain hash of the record `seq` with `event`, following `prev_hash`.
pub fn chain_hash(prev_hash: &str, seq: i64, event: &AuditEvent) -> String {
    // A JSON array of the fields in a fixed order: unambiguous, and stable because
    // serde_json writes arrays of strings, numbers and nulls deterministically.
    let canonical = serde_json::json!([
        seq,
        event.time,
        event.event,
        event.caller,
        event.client_id,
        event.keyset,
        event.kid,
        event.jti,
        event.audience,
        event.expires_at,
        event.detail,
    ]);
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(prev_hash.as_bytes());
    ctx.update(b"\n");
    ctx.update(canonical.to_string().as_bytes());
    hex::encode(ctx.finish().as_ref())
}

/// Where and why the chain breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("audit record {seq}: {reason}")]
pub struct ChainBreak {
    pub seq: i64,
    pub reason: String,
}

/// Incremental verification, so a long trail can be checked page by page.
#[derive(Debug)]
pub struct Verifier {
    prev_hash: String,
    prev_seq: i64,
    pub checked: u64,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            prev_hash: GENESIS_HASH.to_owned(),
            prev_seq: 0,
            checked: 0,
        }
    }
}

impl Verifier {
    /// The sequence number of the last record checked (0 before the first).
    pub fn last_seq(&self) -> i64 {
        self.prev_seq
    }

    /// The hash of the last record checked ([`GENESIS_HASH`] before the first).
    pub fn last_hash(&self) -> &str {
        &self.prev_hash
    }

    /// Checks the next record in sequence order.
    pub fn check(&mut self, record: &AuditRecord) -> Result<(), ChainBreak> {
        let fail = |reason: String| {
            Err(ChainBreak {
                seq: record.seq,
                reason,
            })
        };
        if record.seq != self.prev_seq + 1 {
            return fail(format!(
                "follows record {} directly: the records between them were deleted",
                self.prev_seq
            ));
        }
        if record.prev_hash != self.prev_hash {
            return fail(format!(
                "does not chain to record {}: records were deleted, reordered or edited before it",
                self.prev_seq
            ));
        }
        if chain_hash(&record.prev_hash, record.seq, &record.event) != record.hash {
            return fail("its contents do not match its hash: the record was edited".into());
        }
        self.prev_hash = record.hash.clone();
        self.prev_seq = record.seq;
        self.checked += 1;
        Ok(())
    }
}

/// Verifies a whole trail held in memory.
pub fn verify(records: &[AuditRecord]) -> Result<u64, ChainBreak> {
    let mut verifier = Verifier::default();
    for record in records {
        verifier.check(record)?;
    }
    Ok(verifier.checked)
}

/// Filters of `GET /admin/v1/audit`.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub since: Option<UnixTime>,
    pub client_id: Option<String>,
    pub caller: Option<String>,
    pub kid: Option<String>,
    pub event: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trail(n: i64) -> Vec<AuditRecord> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let event = AuditEvent {
                    time: 1000 + seq,
                    event: event::ASSERTION_ISSUED.into(),
                    jti: Some(format!("jti-{seq}")),
                    ..Default::default()
                };
                let hash = chain_hash(&prev, seq, &event);
                let record = AuditRecord {
                    seq,
                    event,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                record
            })
            .collect()
    }

    #[test]
    fn an_intact_trail_verifies() {
        assert_eq!(verify(&trail(5)), Ok(5));
        assert_eq!(verify(&[]), Ok(0));
    }

    #[test]
    fn an_edit_is_named_at_the_edited_record() {
        let mut records = trail(5);
        records[2].event.audience = Some("https://evil.example".into());
        assert_eq!(verify(&records).unwrap_err().seq, 3);
    }

    #[test]
    fn a_deletion_is_named_at_the_record_after_the_gap() {
        let mut records = trail(5);
        records.remove(1);
        assert_eq!(verify(&records).unwrap_err().seq, 3);
        let mut first_gone = trail(3);
        first_gone.remove(0);
        assert_eq!(verify(&first_gone).unwrap_err().seq, 2);
    }

    #[test]
    fn a_reordering_is_detected() {
        let mut records = trail(5);
        records.swap(1, 3);
        let (a, b) = (records[1].seq, records[3].seq);
        records[1].seq = b;
        records[3].seq = a;
        assert_eq!(verify(&records).unwrap_err().seq, 2);
    }

    #[test]
    fn a_renumbered_and_rehashed_record_still_fails_at_the_next_link() {
        let mut records = trail(4);
        records[1].event.kid = Some("other".into());
        records[1].hash = chain_hash(&records[1].prev_hash, 2, &records[1].event);
        assert_eq!(verify(&records).unwrap_err().seq, 3);
    }
}
