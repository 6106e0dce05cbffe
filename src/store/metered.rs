//! A [`Store`] that counts the errors of the store it wraps, by operation (the trait
//! method's name), for `jwksd_store_errors_total`. `app` wraps every backend in it, so
//! every storage fault is counted wherever it was met (a signing request's audit append, a
//! rotation, the scheduler, the readiness probe, a replica's re-read).
//!
//! A concurrent change ([`StoreError::Conflict`]) is not a store error: the store worked and
//! refused a stale plan, and the request is answered 409.

use std::sync::Arc;

use super::{Change, Fetcher, FetchersWritten, Store, StoreError, StoreFuture, StoredKey};
use crate::audit::{AuditEvent, AuditFilter, AuditRecord};
use crate::metrics::CounterVec;
use crate::rotation::UnixTime;

/// Store errors by operation.
pub type StoreErrors = CounterVec<1>;

/// Every operation the wrapper counts (the [`Store`] methods), so that `/metrics` shows
/// each one, at 0 until it fails.
pub const OPERATIONS: [&str; 14] = [
    "load_keys",
    "audit_head",
    "authenticate_legacy_rows",
    "initialise",
    "apply",
    "append_audit",
    "audit_page",
    "meta",
    "set_meta",
    "ping",
    "record_fetchers",
    "fetchers",
    "close",
    "database_time",
];

/// `inner`, with its errors counted in `errors`.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    errors: Arc<StoreErrors>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn Store>, errors: Arc<StoreErrors>) -> Self {
        MeteredStore { inner, errors }
    }

    fn counted<'a, T: Send + 'a>(
        &'a self,
        operation: &'static str,
        future: StoreFuture<'a, T>,
    ) -> StoreFuture<'a, T> {
        Box::pin(async move {
            let result = future.await;
            if let Err(e) = &result {
                if !matches!(e, StoreError::Conflict(_)) {
                    self.errors.inc([operation]);
                }
            }
            result
        })
    }
}

impl Store for MeteredStore {
    fn load_keys(&self) -> StoreFuture<'_, Vec<StoredKey>> {
        self.counted("load_keys", self.inner.load_keys())
    }

    fn audit_head(&self) -> StoreFuture<'_, Option<super::AuditHead>> {
        self.counted("audit_head", self.inner.audit_head())
    }

    fn authenticate_legacy_rows<'a>(
        &'a self,
        generated: &'a [String],
        check_name: &'a str,
        master_check: &'a [u8],
    ) -> StoreFuture<'a, usize> {
        self.counted(
            "authenticate_legacy_rows",
            self.inner
                .authenticate_legacy_rows(generated, check_name, master_check),
        )
    }

    fn initialise<'a>(
        &'a self,
        check_name: &'a str,
        master_check: &'a [u8],
    ) -> StoreFuture<'a, ()> {
        self.counted(
            "initialise",
            self.inner.initialise(check_name, master_check),
        )
    }

    fn apply<'a>(&'a self, change: &'a Change) -> StoreFuture<'a, ()> {
        self.counted("apply", self.inner.apply(change))
    }

    fn append_audit<'a>(&'a self, events: &'a [AuditEvent]) -> StoreFuture<'a, Vec<i64>> {
        self.counted("append_audit", self.inner.append_audit(events))
    }

    fn audit_page<'a>(
        &'a self,
        filter: &'a AuditFilter,
        after: i64,
        limit: u32,
    ) -> StoreFuture<'a, Vec<AuditRecord>> {
        self.counted("audit_page", self.inner.audit_page(filter, after, limit))
    }

    fn meta<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        self.counted("meta", self.inner.meta(name))
    }

    fn set_meta<'a>(&'a self, name: &'a str, value: &'a [u8]) -> StoreFuture<'a, ()> {
        self.counted("set_meta", self.inner.set_meta(name, value))
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        self.counted("ping", self.inner.ping())
    }

    fn record_fetchers<'a>(
        &'a self,
        batch: &'a [Fetcher],
        cap: usize,
        prune_before: UnixTime,
    ) -> StoreFuture<'a, FetchersWritten> {
        self.counted(
            "record_fetchers",
            self.inner.record_fetchers(batch, cap, prune_before),
        )
    }

    fn fetchers<'a>(&'a self, keyset: &'a str) -> StoreFuture<'a, Vec<Fetcher>> {
        self.counted("fetchers", self.inner.fetchers(keyset))
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        self.counted("close", self.inner.close())
    }

    fn database_time(&self) -> StoreFuture<'_, Option<UnixTime>> {
        self.counted("database_time", self.inner.database_time())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real store whose pool is closed fails every operation, as a store whose database
    /// went away does: each failure is counted under its operation, nothing else moves.
    #[tokio::test]
    async fn every_failed_operation_is_counted_under_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let master = std::sync::Arc::new(crate::keys::MasterKey::generate().0);
        let inner = crate::store::test_store(dir.path(), master).await;
        let errors = Arc::new(StoreErrors::default());
        let store = MeteredStore::new(inner, errors.clone());
        assert_eq!(store.meta("nothing").await.unwrap(), None);
        assert_eq!(errors.get(["meta"]), 0);
        store.close().await.unwrap();
        assert!(store.meta("nothing").await.is_err());
        assert!(store.append_audit(&[AuditEvent::default()]).await.is_err());
        assert!(store.meta("nothing").await.is_err());
        assert_eq!(errors.get(["meta"]), 2);
        assert_eq!(errors.get(["append_audit"]), 1);
        assert_eq!(errors.get(["apply"]), 0);
        for (operation, _) in errors.series() {
            assert!(OPERATIONS.contains(&operation[0].as_str()), "{operation:?}");
        }
    }
}
