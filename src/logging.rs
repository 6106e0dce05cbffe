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
//! The log is written for people ([`LogFormat::Text`], coloured only on a terminal and
//! never with `NO_COLOR` set) or for a log shipper ([`LogFormat::Json`], one JSON object a
//! line), as `server.log_format` says; values in it are written for people too: durations
//! by [`HumanDuration`] and [`HumanSeconds`] (`250ms`, `90d`), never Rust's `Debug`.
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

/// How log lines are written (`server.log_format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// For people: one line per event, coloured only when stderr is a terminal.
    #[default]
    Text,
    /// For a log shipper: one JSON object per line, the event's fields at the top level.
    Json,
}

impl LogFormat {
    /// The value as the configuration writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl std::str::FromStr for LogFormat {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(()),
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether text lines get ANSI colours: only on a terminal, and never with `NO_COLOR` set
/// to anything but the empty string (<https://no-color.org>).
pub fn use_colour(no_color: Option<&std::ffi::OsStr>, terminal: bool) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the log: `JWKSD_LOG` (else `RUST_LOG`, else `info`), to stderr, in `format`,
/// without the parser's per-request errors.
pub fn init(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_env("JWKSD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let colour = use_colour(
        std::env::var_os("NO_COLOR").as_deref(),
        std::io::stderr().is_terminal(),
    );
    tracing_subscriber::registry()
        // Its own filter, not the log filter: counting goes on whatever the log shows.
        .with(ProtocolErrorCounter.with_filter(filter_fn(is_dispatcher_error)))
        .with(
            output_layer(format, colour, std::io::stderr).with_filter(filter.and(NoProtocolErrors)),
        )
        .init();
}

/// The layer that writes log lines to `writer` in `format`.
fn output_layer<S, W>(format: LogFormat, colour: bool, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Text => Box::new(
            tracing_subscriber::fmt::layer()
                .with_ansi(colour)
                .with_writer(writer),
        ),
        LogFormat::Json => Box::new(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(writer),
        ),
    }
}

/// A duration for people: `350µs`, `250ms`, `1.5s`, `2m 30s`, `1h 15m`.
#[derive(Clone, Copy, Debug)]
pub struct HumanDuration(pub Duration);

impl std::fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.0;
        if d < Duration::from_millis(1) {
            write!(f, "{}µs", d.as_micros())
        } else if d < Duration::from_secs(1) {
            write!(f, "{}ms", d.as_millis())
        } else if d < Duration::from_secs(60) {
            let tenths = d.as_millis() / 100;
            match tenths % 10 {
                0 => write!(f, "{}s", tenths / 10),
                t => write!(f, "{}.{t}s", tenths / 10),
            }
        } else {
            HumanSeconds(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)).fmt(f)
        }
    }
}

/// A whole number of seconds for people, as the configuration writes durations: `90d`,
/// `75m`, `1h 15m`, `45s`; the two largest units, nothing for a zero part.
#[derive(Clone, Copy, Debug)]
pub struct HumanSeconds(pub i64);

impl std::fmt::Display for HumanSeconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const UNITS: [(i64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
        let mut left = self.0;
        if left < 0 {
            f.write_str("-")?;
            left = left.saturating_neg();
        }
        if left == 0 {
            return f.write_str("0s");
        }
        let mut written = 0;
        for (size, unit) in UNITS {
            let count = left / size;
            if count > 0 && written < 2 {
                if written > 0 {
                    f.write_str(" ")?;
                }
                write!(f, "{count}{unit}")?;
                written += 1;
                left -= count * size;
            } else if written > 0 {
                // Two units at most, and only adjacent ones: "1d 5s" would read as precise.
                break;
            }
        }
        Ok(())
    }
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
    fn durations_read_as_people_write_them() {
        let shown = |d: Duration| HumanDuration(d).to_string();
        assert_eq!(shown(Duration::from_micros(350)), "350µs");
        assert_eq!(shown(Duration::from_millis(250)), "250ms");
        assert_eq!(shown(Duration::from_millis(1500)), "1.5s");
        assert_eq!(shown(Duration::from_secs(2)), "2s");
        assert_eq!(shown(Duration::from_secs(150)), "2m 30s");
        let seconds = |s: i64| HumanSeconds(s).to_string();
        assert_eq!(seconds(7_776_000), "90d");
        assert_eq!(seconds(4_500), "1h 15m");
        assert_eq!(seconds(3_600), "1h");
        assert_eq!(seconds(86_405), "1d");
        assert_eq!(seconds(0), "0s");
        assert_eq!(seconds(-90), "-1m 30s");
    }

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color() {
        use std::ffi::OsStr;
        assert!(use_colour(None, true));
        assert!(!use_colour(None, false));
        assert!(!use_colour(Some(OsStr::new("1")), true));
        // no-color.org: an empty NO_COLOR does not count.
        assert!(use_colour(Some(OsStr::new("")), true));
    }

    #[test]
    fn a_json_line_is_one_object_with_the_fields_at_the_top() {
        let captured = CapturedLog::default();
        let writer = captured.clone();
        let subscriber =
            tracing_subscriber::registry()
                .with(output_layer(LogFormat::Json, false, move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", request_id = "abc");
            let _entered = span.enter();
            tracing::info!(status = 200u16, duration = %HumanDuration(Duration::from_millis(3)), "request");
        });
        let text = captured.text();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["status"], 200, "{text}");
        assert_eq!(line["duration"], "3ms", "{text}");
        assert_eq!(line["message"], "request", "{text}");
        assert_eq!(line["span"]["request_id"], "abc", "{text}");
    }

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
