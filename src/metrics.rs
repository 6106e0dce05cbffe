//! The metric primitives every layer can bump without knowing about HTTP: counters with
//! labels ([`CounterVec`]) and a histogram of durations ([`Histogram`]), and the writer of
//! the Prometheus text exposition format (version 0.0.4) that `http::metrics` renders them
//! with.
//!
//! Hand-written rather than a crate: jwksd has a dozen metric families, every label value
//! comes from the configuration or the store (never from a request), and what is needed
//! is an atomic add, a mutex-guarded map and a text writer.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A counter per combination of `N` label values. Callers pass only values that come from
/// the configuration or the store, so the number of series stays bounded.
#[derive(Debug)]
pub struct CounterVec<const N: usize> {
    values: Mutex<BTreeMap<[String; N], u64>>,
}

impl<const N: usize> Default for CounterVec<N> {
    fn default() -> Self {
        CounterVec {
            values: Mutex::new(BTreeMap::new()),
        }
    }
}

impl<const N: usize> CounterVec<N> {
    /// Adds one to the series `labels`.
    pub fn inc(&self, labels: [&str; N]) {
        *locked(&self.values)
            .entry(labels.map(str::to_owned))
            .or_insert(0) += 1;
    }

    /// The value of one series (0 when it was never bumped).
    pub fn get(&self, labels: [&str; N]) -> u64 {
        locked(&self.values)
            .get(&labels.map(str::to_owned))
            .copied()
            .unwrap_or(0)
    }

    /// Every series, in label order.
    pub fn series(&self) -> Vec<([String; N], u64)> {
        locked(&self.values)
            .iter()
            .map(|(labels, value)| (labels.clone(), *value))
            .collect()
    }
}

/// Upper bounds (seconds) of the latency buckets: from a tenth of a millisecond (a batch in
/// a page cache) to ten seconds (a stalled disk or database).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0,
];

/// A histogram of durations over [`LATENCY_BUCKETS`]; lock-free to observe.
#[derive(Debug)]
pub struct Histogram {
    /// Observations at or below each bound (not cumulative here; summed when written).
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    /// Observations above the last bound.
    overflow: AtomicU64,
    count: AtomicU64,
    /// Sum of all observations, in nanoseconds.
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            overflow: AtomicU64::new(0),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        match LATENCY_BUCKETS.iter().position(|bound| seconds <= *bound) {
            Some(i) => self.buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.overflow.fetch_add(1, Ordering::Relaxed),
        };
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// How many durations were observed.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// The kind of a metric family, as `# TYPE` writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Writes metric families in the Prometheus text format: each family's `# HELP` and
/// `# TYPE` once, then its samples.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a family; the samples written next belong to it.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(
            self.out,
            "# HELP {name} {help}\n# TYPE {name} {}",
            kind.as_str()
        );
        self
    }

    /// One sample: `name{labels} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{}\"", escape_label(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", format_value(value));
    }

    /// A counter family with one sample per series of `counters`.
    pub fn counter_vec<const N: usize>(
        &mut self,
        name: &str,
        help: &str,
        label_names: [&str; N],
        counters: &CounterVec<N>,
    ) {
        self.family(name, Kind::Counter, help);
        for (values, count) in counters.series() {
            let labels: Vec<(&str, &str)> = label_names
                .iter()
                .copied()
                .zip(values.iter().map(String::as_str))
                .collect();
            self.sample(name, &labels, count as f64);
        }
    }

    /// A histogram family: cumulative `_bucket`s, `_sum` (seconds) and `_count`.
    pub fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        self.family(name, Kind::Histogram, help);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&histogram.buckets) {
            cumulative += count.load(Ordering::Relaxed);
            self.sample(&bucket, &[("le", &format_value(*bound))], cumulative as f64);
        }
        cumulative += histogram.overflow.load(Ordering::Relaxed);
        self.sample(&bucket, &[("le", "+Inf")], cumulative as f64);
        let sum = histogram.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        self.sample(&format!("{name}_sum"), &[], sum);
        // The count written is the buckets' total, so `_count` equals the `+Inf` bucket even
        // when an observation lands between the two loads.
        self.sample(&format!("{name}_count"), &[], cumulative as f64);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Label values escaped as the text format requires (backslash, quote, newline).
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Whole numbers without a fraction (`3`, not `3.0`); others as Rust prints them.
fn format_value(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_is_written_cumulatively_with_its_sum_and_count() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(50));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(20));
        let mut out = Exposition::default();
        out.histogram("x_seconds", "help", &histogram);
        let text = out.finish();
        assert!(text.contains("# TYPE x_seconds histogram\n"), "{text}");
        assert!(
            text.contains("x_seconds_bucket{le=\"0.0001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{le=\"0.005\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("x_seconds_bucket{le=\"10\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("x_seconds_count 3\n"), "{text}");
        assert!(text.contains("x_seconds_sum 20.00305"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let counters = CounterVec::<1>::default();
        counters.inc(["a\"b\\c\nd"]);
        counters.inc(["a\"b\\c\nd"]);
        let mut out = Exposition::default();
        out.counter_vec("y_total", "help", ["name"], &counters);
        assert!(out
            .finish()
            .contains("y_total{name=\"a\\\"b\\\\c\\nd\"} 2\n"));
    }
}
