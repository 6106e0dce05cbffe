//! The audit trail: every assertion issued and every key event, hash-chained.
//!
//! Each record's `hash` is SHA-256 over the previous record's hash and the record's own
//! fields, so editing, deleting or reordering any record breaks the chain at that point;
//! [`verify`] names the first record where it breaks. Records are appended by the store in
//! the same transaction as the change they describe (key events), or by the
//! [`AuditWriter`], which batches concurrent assertion records into one commit (group
//! commit): a signing request waits for its record to be durable, but many requests share
//! one disk sync.

use aws_lc_rs::digest;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::rotation::UnixTime;
use crate::store::{Store, StoreError};

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

impl AuditEvent {
    /// The record of an issued assertion: who asked, for which client, with which key.
    pub fn assertion_issued(
        caller: &str,
        client: &crate::config::ClientConfig,
        signed: &crate::assertion::SignedAssertion,
        audience: &str,
        time: UnixTime,
        detail: Option<String>,
    ) -> Self {
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

/// Verifies the trail in a store, a page at a time, and that it ends exactly at the head
/// the store sealed (so deleting the newest records is detected, with or without the head).
/// The head is read after the records, and records appended meanwhile by a running jwksd
/// are verified too before the two are compared. A seal that fails its MAC is a
/// [`StoreError::Tampered`].
pub async fn verify_store(store: &dyn Store) -> Result<Result<u64, ChainBreak>, StoreError> {
    let mut verifier = Verifier::default();
    loop {
        if let Err(broken) = verify_pages(store, &mut verifier).await? {
            return Ok(Err(broken));
        }
        let head = store.audit_head().await?;
        let (seq, hash) = head.map_or((0, GENESIS_HASH.to_owned()), |h| (h.seq, h.hash));
        let appended_meanwhile = seq > verifier.prev_seq
            && !store
                .audit_page(&AuditFilter::default(), verifier.prev_seq, 1)
                .await?
                .is_empty();
        if appended_meanwhile {
            continue;
        }
        if verifier.prev_seq != seq || verifier.prev_hash != hash {
            return Ok(Err(ChainBreak {
                seq: verifier.prev_seq + 1,
                reason: format!(
                    "the trail ends at record {} but its recorded head is record {seq}: the \
                     newest records were deleted or replaced, or records were added outside jwksd",
                    verifier.prev_seq
                ),
            }));
        }
        return Ok(Ok(verifier.checked));
    }
}

/// Verifies the chain alone, without a sealed head: for a store written before the seal
/// existed, where deleting the newest records cannot be detected.
pub async fn verify_chain_only(store: &dyn Store) -> Result<Result<u64, ChainBreak>, StoreError> {
    let mut verifier = Verifier::default();
    Ok(verify_pages(store, &mut verifier)
        .await?
        .map(|()| verifier.checked))
}

/// Feeds every record after the verifier's last one to it, a page at a time.
async fn verify_pages(
    store: &dyn Store,
    verifier: &mut Verifier,
) -> Result<Result<(), ChainBreak>, StoreError> {
    loop {
        let page = store
            .audit_page(&AuditFilter::default(), verifier.prev_seq, 5000)
            .await?;
        if page.is_empty() {
            return Ok(Ok(()));
        }
        for record in &page {
            if let Err(e) = verifier.check(record) {
                return Ok(Err(e));
            }
        }
    }
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

/// Appending failed; the caller must not hand out what the record describes.
#[derive(Debug, thiserror::Error)]
#[error("the audit record could not be made durable: {0}")]
pub struct AuditUnavailable(pub String);

type Pending = (AuditEvent, oneshot::Sender<Result<i64, AuditUnavailable>>);

/// Group commit: concurrent appends share one transaction and one disk sync.
#[derive(Clone, Debug)]
pub struct AuditWriter {
    queue: mpsc::Sender<Pending>,
}

/// Most records one commit carries.
const MAX_BATCH: usize = 512;

impl AuditWriter {
    /// Starts the writer task on the current runtime.
    pub fn start(store: std::sync::Arc<dyn Store>) -> Self {
        let (queue, mut inbox) = mpsc::channel::<Pending>(4096);
        tokio::spawn(async move {
            let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
            while let Some(first) = inbox.recv().await {
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match inbox.try_recv() {
                        Ok(more) => batch.push(more),
                        Err(_) => break,
                    }
                }
                let events: Vec<AuditEvent> = batch.iter().map(|(e, _)| e.clone()).collect();
                let result = store.append_audit(&events).await;
                match result {
                    Ok(seqs) => {
                        for ((_, reply), seq) in batch.drain(..).zip(seqs) {
                            let _ = reply.send(Ok(seq));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, records = batch.len(), "audit append failed");
                        for (_, reply) in batch.drain(..) {
                            let _ = reply.send(Err(AuditUnavailable(e.to_string())));
                        }
                    }
                }
            }
        });
        AuditWriter { queue }
    }

    /// Appends `event` and returns its sequence number once it is durable.
    pub async fn append(&self, event: AuditEvent) -> Result<i64, AuditUnavailable> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((event, reply))
            .await
            .map_err(|_| AuditUnavailable("the audit writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| AuditUnavailable("the audit writer has stopped".into()))?
    }
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
