//! Counters behind `GET /metrics`, rendered in the Prometheus text exposition format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;

/// Message types counted by `profiledb_messages_total{type=...}`.
pub(crate) const TYPES: [&str; 7] = [
    "identify", "group", "alias", "track", "page", "screen", "other",
];

/// Refusal reasons counted by `profiledb_refusals_total{reason=...}`: the library's
/// [`crate::Error::kind`] names for refusals, plus `too_large` (over the message-size limit).
pub(crate) const REASONS: [&str; 5] = ["invalid", "suppressed", "malformed", "too_large", "other"];

/// Upper bounds (seconds) of the sync-latency histogram buckets.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Index of a message type in [`TYPES`].
pub(crate) fn type_index(kind: &str) -> usize {
    TYPES
        .iter()
        .position(|t| t.eq_ignore_ascii_case(kind))
        .unwrap_or(TYPES.len() - 1)
}

/// Index of a refusal reason in [`REASONS`].
pub(crate) fn reason_index(reason: &str) -> usize {
    REASONS
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(REASONS.len() - 1)
}

/// Per-project counters.
#[derive(Default)]
pub(crate) struct ProjectMetrics {
    pub(crate) messages: [AtomicU64; TYPES.len()],
    pub(crate) accepted: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) merges: AtomicU64,
    pub(crate) refusals: [AtomicU64; REASONS.len()],
    pub(crate) sync: Histogram,
    pub(crate) unavailable: AtomicU64,
}

/// A latency histogram with fixed buckets.
#[derive(Default)]
pub(crate) struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Record one observation.
    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }
}

/// Responses by endpoint and status code.
#[derive(Default)]
pub(crate) struct HttpMetrics {
    responses: Mutex<Vec<(&'static str, u16, u64)>>,
}

impl HttpMetrics {
    /// Count one response.
    pub(crate) fn record(&self, endpoint: &'static str, status: u16) {
        let mut v = self.responses.lock();
        match v
            .iter_mut()
            .find(|(e, s, _)| *e == endpoint && *s == status)
        {
            Some(entry) => entry.2 += 1,
            None => v.push((endpoint, status, 1)),
        }
    }
}

/// A project's store figures, read when `/metrics` is scraped (from [`crate::Db::counts`]:
/// cheap whatever the store's size).
pub(crate) struct StoreFigures {
    pub(crate) disk_bytes: u64,
    pub(crate) profiles: u64,
    pub(crate) companies: u64,
    pub(crate) syncs: u64,
    /// Identifiers the guard holds quarantined (docs/journal.md "Guard").
    pub(crate) quarantined: u64,
    /// Calls since the store was opened that skipped a quarantined identifier (or had one
    /// quarantined).
    pub(crate) guard_skipped_calls: u64,
}

/// A metric's name, help text and how to read its value.
type Row<T> = (&'static str, &'static str, fn(&T) -> u64);

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Render every metric.
pub(crate) fn render(
    http: &HttpMetrics,
    projects: &[(&str, &ProjectMetrics, Option<StoreFigures>)],
) -> String {
    let mut out = String::with_capacity(4096);

    header(
        &mut out,
        "profiledb_http_responses_total",
        "counter",
        "HTTP responses by endpoint and status code.",
    );
    let mut responses = http.responses.lock().clone();
    responses.sort();
    for (endpoint, status, n) in responses {
        let _ = writeln!(
            out,
            "profiledb_http_responses_total{{endpoint=\"{endpoint}\",code=\"{status}\"}} {n}"
        );
    }

    header(
        &mut out,
        "profiledb_messages_total",
        "counter",
        "Messages received, by project and type.",
    );
    for (name, m, _) in projects {
        let name = escape(name);
        for (i, t) in TYPES.iter().enumerate() {
            let _ = writeln!(
                out,
                "profiledb_messages_total{{project=\"{name}\",type=\"{t}\"}} {}",
                m.messages[i].load(Relaxed)
            );
        }
    }

    let simple: [Row<ProjectMetrics>; 4] = [
        (
            "profiledb_accepted_total",
            "Messages applied and made durable (duplicates excluded).",
            |m| m.accepted.load(Relaxed),
        ),
        (
            "profiledb_duplicates_total",
            "Messages acknowledged as duplicates of an earlier messageId.",
            |m| m.duplicates.load(Relaxed),
        ),
        (
            "profiledb_merges_total",
            "Messages that merged two or more profiles.",
            |m| m.merges.load(Relaxed),
        ),
        (
            "profiledb_unavailable_total",
            "Requests answered 503 because the store failed (poisoned or I/O error).",
            |m| m.unavailable.load(Relaxed),
        ),
    ];
    for (metric, help, get) in simple {
        header(&mut out, metric, "counter", help);
        for (name, m, _) in projects {
            let _ = writeln!(out, "{metric}{{project=\"{}\"}} {}", escape(name), get(m));
        }
    }

    header(
        &mut out,
        "profiledb_refusals_total",
        "counter",
        "Messages refused, by project and reason.",
    );
    for (name, m, _) in projects {
        let name = escape(name);
        for (i, r) in REASONS.iter().enumerate() {
            let _ = writeln!(
                out,
                "profiledb_refusals_total{{project=\"{name}\",reason=\"{r}\"}} {}",
                m.refusals[i].load(Relaxed)
            );
        }
    }

    header(
        &mut out,
        "profiledb_request_sync_seconds",
        "histogram",
        "Time a request waited for its sync (durable acknowledgement), by project.",
    );
    for (name, m, _) in projects {
        let name = escape(name);
        let mut cumulative = 0u64;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += m.sync.counts[i].load(Relaxed);
            let _ = writeln!(
                out,
                "profiledb_request_sync_seconds_bucket{{project=\"{name}\",le=\"{b}\"}} {cumulative}"
            );
        }
        let count = m.sync.count.load(Relaxed);
        let _ = writeln!(
            out,
            "profiledb_request_sync_seconds_bucket{{project=\"{name}\",le=\"+Inf\"}} {count}"
        );
        let sum = m.sync.sum_nanos.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(
            out,
            "profiledb_request_sync_seconds_sum{{project=\"{name}\"}} {sum}"
        );
        let _ = writeln!(
            out,
            "profiledb_request_sync_seconds_count{{project=\"{name}\"}} {count}"
        );
    }

    let gauges: [Row<StoreFigures>; 5] = [
        (
            "profiledb_store_disk_bytes",
            "Bytes of all segment files of the project's store.",
            |f| f.disk_bytes,
        ),
        (
            "profiledb_store_profiles",
            "Live profiles in the project's store.",
            |f| f.profiles,
        ),
        (
            "profiledb_store_companies",
            "Companies in the project's store.",
            |f| f.companies,
        ),
        (
            "profiledb_store_syncs",
            "fdatasync calls of the project's store since it was opened.",
            |f| f.syncs,
        ),
        (
            "profiledb_guard_quarantined_identifiers",
            "Emails and anonymous ids the guard holds quarantined in the project's store.",
            |f| f.quarantined,
        ),
    ];
    let counters: [Row<StoreFigures>; 1] = [(
        "profiledb_guard_skipped_calls_total",
        "Calls that skipped a quarantined identifier (or had one quarantined), since the \
         project's store was opened.",
        |f| f.guard_skipped_calls,
    )];
    let rows = (gauges.into_iter().map(|r| ("gauge", r)))
        .chain(counters.into_iter().map(|r| ("counter", r)));
    for (kind, (metric, help, get)) in rows {
        header(&mut out, metric, kind, help);
        for (name, _, figures) in projects {
            if let Some(f) = figures {
                let _ = writeln!(out, "{metric}{{project=\"{}\"}} {}", escape(name), get(f));
            }
        }
    }
    out
}
