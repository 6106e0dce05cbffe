//! The durable audit trail: the group-commit writer that appends records to a [`Store`],
//! and verification of the trail a store holds against the head the store sealed.
//!
//! Records of key events are appended by the store in the same transaction as the change
//! they describe; records of issued assertions go through the [`AuditWriter`], which batches
//! concurrent appends into one commit (group commit): a signing request waits for its record
//! to be durable, but many requests share one disk sync. The chain itself (record types,
//! hashing, [`Verifier`]) is the pure [`crate::audit`] below this module.
//!
//! The writer also measures itself ([`AuditMetrics`]): how long each batch takes to become
//! durable, and the assertions it made durable, by client and kid.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::audit::{
    event::ASSERTION_ISSUED, AuditEvent, AuditFilter, ChainBreak, Verifier, GENESIS_HASH,
};
use crate::metrics::{CounterVec, Histogram};
use crate::store::{Store, StoreError};

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
        let appended_meanwhile = seq > verifier.last_seq()
            && !store
                .audit_page(&AuditFilter::default(), verifier.last_seq(), 1)
                .await?
                .is_empty();
        if appended_meanwhile {
            continue;
        }
        if verifier.last_seq() != seq || verifier.last_hash() != hash {
            return Ok(Err(ChainBreak {
                seq: verifier.last_seq() + 1,
                reason: format!(
                    "the trail ends at record {} but its recorded head is record {seq}: the \
                     newest records were deleted or replaced, or records were added outside jwksd",
                    verifier.last_seq()
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
            .audit_page(&AuditFilter::default(), verifier.last_seq(), 5000)
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

/// Appending failed; the caller must not hand out what the record describes.
#[derive(Debug, thiserror::Error)]
#[error("the audit record could not be made durable: {0}")]
pub struct AuditUnavailable(pub String);

type Pending = (AuditEvent, oneshot::Sender<Result<i64, AuditUnavailable>>);

/// Group commit: concurrent appends share one transaction and one disk sync.
#[derive(Clone, Debug)]
pub struct AuditWriter {
    queue: mpsc::Sender<Pending>,
    metrics: Arc<AuditMetrics>,
}

/// What the writer measures, for `/metrics`.
#[derive(Debug, Default)]
pub struct AuditMetrics {
    /// Seconds from the start of a batch's append to its commit (failed ones included).
    pub write_latency: Histogram,
    /// Assertions whose record was committed, by `[client_id, kid]` (values from the
    /// configuration and the keyring, never from a request).
    pub assertions: CounterVec<2>,
}

/// Most records one commit carries.
const MAX_BATCH: usize = 512;

impl AuditWriter {
    /// Starts the writer task on the current runtime.
    pub fn start(store: std::sync::Arc<dyn Store>) -> Self {
        let (queue, mut inbox) = mpsc::channel::<Pending>(4096);
        let metrics = Arc::new(AuditMetrics::default());
        let measured = metrics.clone();
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
                let started = Instant::now();
                let result = store.append_audit(&events).await;
                measured.write_latency.observe(started.elapsed());
                match result {
                    Ok(seqs) => {
                        for event in events.iter().filter(|e| e.event == ASSERTION_ISSUED) {
                            measured.assertions.inc([
                                event.client_id.as_deref().unwrap_or(""),
                                event.kid.as_deref().unwrap_or(""),
                            ]);
                        }
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
        AuditWriter { queue, metrics }
    }

    /// The writer's measurements.
    pub fn metrics(&self) -> Arc<AuditMetrics> {
        self.metrics.clone()
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
