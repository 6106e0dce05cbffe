//! The process's log: the subscriber `main` installs, and what it keeps out of the log.
//!
//! actix-http answers a request head it cannot parse by itself (400 or 431, empty body,
//! connection closed) before any jwksd code runs, and then logs `stream error: request
//! parse error: ...` at ERROR for each one, so any client on the network could write one
//! ERROR line per request. actix offers no hook to shape those answers or that line (no
//! `HttpServer`/`HttpService`/h1 option; the dispatcher builds the response itself). So
//! here those events are counted, kept out of the log, and summed up in one WARN at most
//! once a minute by [`summarize_protocol_errors`]; every other actix event is logged as
//! before.
//!
//! The summary cannot say which client sent them: the dispatcher's event carries no peer
//! address, so the limit is per process, not per source.
//!
//! For tests, `CapturedLog` (test builds only) is the writer that keeps what a
//! subscriber logs, for every unit test that reads the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt};
use tracing_subscriber::layer::{Context, Filter, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Where actix-http's h1 dispatcher logs.
const DISPATCHER: &str = "actix_http::h1::dispatcher";
/// The start of the dispatcher's message for a request head its parser refused (the
/// display of `DispatchError::Parse`); I/O, body and shutdown errors read differently.
const PARSE_ERROR: &str = "stream error: request parse error: ";

/// Malformed requests answered by the HTTP parser since the process started.
static PROTOCOL_ERRORS: AtomicU64 = AtomicU64::new(0);
/// Wakes the summary task after a quiet period.
static NEW_PROTOCOL_ERROR: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Installs the log: `JWKSD_LOG` (else `RUST_LOG`, else `info`), to stderr, without the
/// parser's per-request errors.
pub fn init() {
    let filter = EnvFilter::try_from_env("JWKSD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        // Its own filter, not the log filter: counting goes on whatever the log shows.
        .with(ProtocolErrorCounter.with_filter(filter_fn(is_dispatcher_error)))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter.and(NoProtocolErrors)),
        )
        .init();
}

/// How many malformed requests the HTTP parser answered (for `/metrics`).
pub fn protocol_errors_total() -> u64 {
    PROTOCOL_ERRORS.load(Ordering::Relaxed)
}

/// Logs one WARN for the malformed requests answered since the last one: the first a
/// second after the first such request (so a burst is one line), then at most once per
/// `every`. Runs until aborted.
///
/// It is a task rather than part of the layer because an event emitted from inside a
/// layer's callback does not reach the subscriber (tracing does not re-enter it).
pub async fn summarize_protocol_errors(every: Duration) {
    const GATHER: Duration = Duration::from_secs(1);
    let mut reported = protocol_errors_total();
    loop {
        while protocol_errors_total() == reported {
            NEW_PROTOCOL_ERROR.notified().await;
        }
        tokio::time::sleep(GATHER).await;
        let total = protocol_errors_total();
        tracing::warn!(
            total,
            "{} malformed requests answered by the HTTP parser in the last minute (400/431, \
             empty body); not logged one by one, and the client address is not known",
            total - reported
        );
        reported = total;
        tokio::time::sleep(every.saturating_sub(GATHER)).await;
    }
}

fn is_dispatcher_error(metadata: &Metadata<'_>) -> bool {
    metadata.level() == &Level::ERROR && metadata.target() == DISPATCHER
}

fn is_protocol_error(event: &Event<'_>) -> bool {
    if !is_dispatcher_error(event.metadata()) {
        return false;
    }
    let mut message = Message(false);
    event.record(&mut message);
    message.0
}

/// Whether an event's `message` starts with [`PARSE_ERROR`].
struct Message(bool);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}").starts_with(PARSE_ERROR);
        }
    }
}

/// Counts the parser's per-request errors (sees only the dispatcher's ERROR events).
struct ProtocolErrorCounter;

impl<S: Subscriber> Layer<S> for ProtocolErrorCounter {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if is_protocol_error(event) {
            PROTOCOL_ERRORS.fetch_add(1, Ordering::Relaxed);
            NEW_PROTOCOL_ERROR.notify_one();
        }
    }
}

/// Keeps the parser's per-request errors out of the log, and nothing else.
struct NoProtocolErrors;

impl<S> Filter<S> for NoProtocolErrors {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        !is_protocol_error(event)
    }
}

/// A log writer for tests: keeps what a subscriber writes through it (clones share one
/// buffer), to be read back with [`CapturedLog::text`].
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct CapturedLog(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl CapturedLog {
    /// Everything written so far.
    pub(crate) fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        String::from_utf8(bytes).unwrap_or_else(|e| panic!("the log is not UTF-8: {e}"))
    }
}

#[cfg(test)]
impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_the_parsers_errors_are_kept_out_and_counted() {
        let captured = CapturedLog::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry()
            .with(ProtocolErrorCounter.with_filter(filter_fn(is_dispatcher_error)))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || writer.clone())
                    .with_filter(EnvFilter::new("info").and(NoProtocolErrors)),
            );
        let before = protocol_errors_total();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: "actix_http::h1::dispatcher", "stream error: {}",
                "request parse error: invalid Header provided");
            tracing::error!(target: "actix_http::h1::dispatcher", "stream error: {}",
                "I/O error: broken pipe");
            tracing::error!(target: "actix_http::h1::dispatcher", "write zero; closing");
            tracing::error!(target: "jwksd::other", "stream error: request parse error: x");
            tracing::info!(target: "actix_http::h1::dispatcher", "stream error: request parse error: y");
        });
        let log = captured.text();
        assert!(!log.contains("invalid Header provided"), "{log}");
        assert!(log.contains("I/O error: broken pipe"), "{log}");
        assert!(log.contains("write zero; closing"), "{log}");
        assert!(log.contains("request parse error: x"), "{log}");
        assert!(log.contains("request parse error: y"), "{log}");
        // Other unit tests run in parallel but none logs a parse error: exactly one more.
        assert_eq!(protocol_errors_total() - before, 1);
    }
}
