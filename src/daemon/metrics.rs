//! What cardlinkd measures for Prometheus (`[metrics] listen`), served by
//! [`crate::metrics::serve`].
//!
//! | metric | labels | where it is counted |
//! |--------|--------|---------------------|
//! | `cardlink_reader_up` (gauge, 1 connected) | `reader` | read at each scrape from the reader table |
//! | `cardlink_reader_state` (gauge, 1 for the current state) | `reader`, `state` | idem |
//! | `cardlink_reads_total` | `reader`, `source`, `outcome` | `Ctx::handle_read`: a resolution's outcome, or the error code of a read not shown |
//! | `cardlink_read_errors_total` | `reader`, `code` | a reader's return code (`iReadCardBas`, `READ_ERROR`), an identity-card SW3 code as `sw3:XX` |
//! | `cardlink_binds_total`, `cardlink_unbinds_total` | `result` (`ok` or the `ErrorCode` name) | the socket's `bind` / `unbind` answers |
//! | `cardlink_registry_call_duration_seconds` (histogram) | `operation`, `backend` | every call of the daemon's [`super::store::Store`] |
//! | `cardlink_registry_calls_total` | `operation`, `backend`, `result` (`ok` or the error code: `registry_unavailable`, `database_busy`, a bind's refusal, …) | idem |
//! | `cardlink_resolver_queue_depth` (gauge) | `reader` | reads acknowledged and waiting for the registry |
//! | `cardlink_display_clients` (gauge) | | socket clients connected, read at each scrape |
//! | `cardlink_heartbeats_total` | `result` (`ok`, `failed`) | the fleet heartbeat ([`super::fleet`]) |
//! | `cardlink_printer_state` (gauge, 1 for the current state) | `state` (`ok`, `paper_near_end`, `paper_end`, `cover_open`, `offline`, `error`, `disconnected`) | read at each scrape from the printer's live state; absent without a printer |
//! | `cardlink_receipts_printed_total`, `cardlink_receipts_failed_total` | | the printer task's counts (as in `status`), read at each scrape |
//! | `cardlink_build_info` (gauge, 1) | `version`, `sim` | |
//!
//! Labels are reader names from the configuration, fixed vocabularies
//! (sources, outcomes, codes, operations) and the release: never a card,
//! an SSN, a name or anything a card carries.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReaderLabel {
    reader: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    reader: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PrinterStateLabel {
    state: String,
}

/// The printer as a scrape sees it.
#[derive(Debug, Clone, Copy)]
pub struct PrinterScrape {
    /// Its state.
    pub state: crate::printer::PrinterState,
    /// Receipts printed since start.
    pub printed: u64,
    /// Receipts not printed since start.
    pub failed: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadLabels {
    reader: String,
    source: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    reader: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    operation: String,
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    operation: String,
    backend: String,
    result: String,
}

/// The states a reader is shown in (`cardlink_reader_state`).
const STATES: [&str; 3] = ["connected", "disconnected", "error"];

/// The daemon's metrics. Cheap to update (atomics behind a read lock per
/// label set); shared by the tasks through [`super::ctx::Ctx`] and the
/// store.
pub struct DaemonMetrics {
    registry: Registry,
    reader_up: Family<ReaderLabel, Gauge>,
    reader_state: Family<StateLabels, Gauge>,
    reads: Family<ReadLabels, Counter>,
    read_errors: Family<CodeLabels, Counter>,
    binds: Family<ResultLabel, Counter>,
    unbinds: Family<ResultLabel, Counter>,
    calls: Family<CallLabels, Histogram>,
    results: Family<ResultLabels, Counter>,
    queue: Family<ReaderLabel, Gauge>,
    clients: Gauge,
    heartbeats: Family<ResultLabel, Counter>,
    printer_state: Family<PrinterStateLabel, Gauge>,
    printed: Counter,
    print_failed: Counter,
}

impl std::fmt::Debug for DaemonMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DaemonMetrics")
    }
}

impl Default for DaemonMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn call_histogram() -> Histogram {
    // 100 µs to about 13 s: a cached SQLite resolution to a call that runs
    // into the busy timeout.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

impl DaemonMetrics {
    /// Every family, registered.
    pub fn new() -> DaemonMetrics {
        let mut registry = Registry::default();
        let m = DaemonMetrics {
            reader_up: Family::default(),
            reader_state: Family::default(),
            reads: Family::default(),
            read_errors: Family::default(),
            binds: Family::default(),
            unbinds: Family::default(),
            calls: Family::new_with_constructor(call_histogram),
            results: Family::default(),
            queue: Family::default(),
            clients: Gauge::default(),
            heartbeats: Family::default(),
            printer_state: Family::default(),
            printed: Counter::default(),
            print_failed: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "cardlink_reader_up",
            "1 while the reader is connected, else 0",
            m.reader_up.clone(),
        );
        registry.register(
            "cardlink_reader_state",
            "1 for the reader's current state (connected, disconnected, error)",
            m.reader_state.clone(),
        );
        registry.register(
            "cardlink_reads",
            "Card reads by reader, source and outcome (a resolution's outcome, or the error code of a read not shown)",
            m.reads.clone(),
        );
        registry.register(
            "cardlink_read_errors",
            "Reads a reader could not make, by its return code",
            m.read_errors.clone(),
        );
        registry.register(
            "cardlink_binds",
            "Bind requests by result (ok or the error code)",
            m.binds.clone(),
        );
        registry.register(
            "cardlink_unbinds",
            "Unbind requests by result (ok or the error code)",
            m.unbinds.clone(),
        );
        registry.register(
            "cardlink_registry_call_duration_seconds",
            "How long the daemon's registry calls take, by operation and backend",
            m.calls.clone(),
        );
        registry.register(
            "cardlink_registry_calls",
            "Registry calls by operation, backend and result (ok or the error code)",
            m.results.clone(),
        );
        registry.register(
            "cardlink_resolver_queue_depth",
            "Card reads acknowledged and waiting for the registry, per reader",
            m.queue.clone(),
        );
        registry.register(
            "cardlink_display_clients",
            "Clients connected to the display socket",
            m.clients.clone(),
        );
        registry.register(
            "cardlink_heartbeats",
            "Fleet heartbeats written into the registry, by result",
            m.heartbeats.clone(),
        );
        registry.register(
            "cardlink_printer_state",
            "1 for the receipt printer's current state (absent without a printer)",
            m.printer_state.clone(),
        );
        registry.register(
            "cardlink_receipts_printed",
            "Receipts printed",
            m.printed.clone(),
        );
        registry.register(
            "cardlink_receipts_failed",
            "Receipts that could not be printed",
            m.print_failed.clone(),
        );
        crate::metrics::register_build_info(&mut registry);
        DaemonMetrics { registry, ..m }
    }

    /// A card read shown (`outcome`: the resolution's) or not shown
    /// (`outcome`: the error code).
    pub fn read(&self, reader: &str, source: &str, outcome: &str) {
        self.reads
            .get_or_create(&ReadLabels {
                reader: reader.into(),
                source: source.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// A reader's failure to read, by its code.
    pub fn read_error(&self, reader: &str, code: &str) {
        self.read_errors
            .get_or_create(&CodeLabels {
                reader: reader.into(),
                code: code.into(),
            })
            .inc();
    }

    /// A bind request's result (`ok` or the error code's name).
    pub fn bind(&self, result: &str) {
        self.binds
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    /// An unbind request's result.
    pub fn unbind(&self, result: &str) {
        self.unbinds
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    /// One registry call: its duration and its result (`ok` or the
    /// error code's name).
    pub fn registry_call(
        &self,
        operation: &str,
        backend: &str,
        took: std::time::Duration,
        result: &str,
    ) {
        self.calls
            .get_or_create(&CallLabels {
                operation: operation.into(),
                backend: backend.into(),
            })
            .observe(took.as_secs_f64());
        self.results
            .get_or_create(&ResultLabels {
                operation: operation.into(),
                backend: backend.into(),
                result: result.into(),
            })
            .inc();
    }

    /// A read queued for (`+1`) or taken by (`-1`) a reader's resolver.
    pub fn queue(&self, reader: &str, delta: i64) {
        self.queue
            .get_or_create(&ReaderLabel {
                reader: reader.into(),
            })
            .inc_by(delta);
    }

    /// A heartbeat written (`true`) or not.
    pub fn heartbeat(&self, ok: bool) {
        self.heartbeats
            .get_or_create(&ResultLabel {
                result: if ok { "ok" } else { "failed" }.into(),
            })
            .inc();
    }

    /// The exposition, with the gauges that mirror state set first from
    /// `readers` (name, state), `clients` and the printer. Readers no
    /// longer configured disappear from it.
    pub fn render<'a>(
        &self,
        readers: impl IntoIterator<Item = (&'a str, &'a str)>,
        clients: u64,
        printer: Option<PrinterScrape>,
    ) -> String {
        self.printer_state.clear();
        if let Some(p) = printer {
            for s in crate::printer::PrinterState::ALL {
                self.printer_state
                    .get_or_create(&PrinterStateLabel {
                        state: s.as_str().into(),
                    })
                    .set(i64::from(s == p.state));
            }
            // The printer task's counts only grow: the counters follow.
            self.printed
                .inc_by(p.printed.saturating_sub(self.printed.get()));
            self.print_failed
                .inc_by(p.failed.saturating_sub(self.print_failed.get()));
        }
        self.reader_up.clear();
        self.reader_state.clear();
        for (name, state) in readers {
            self.reader_up
                .get_or_create(&ReaderLabel {
                    reader: name.into(),
                })
                .set(i64::from(state == "connected"));
            for s in STATES {
                self.reader_state
                    .get_or_create(&StateLabels {
                        reader: name.into(),
                        state: s.into(),
                    })
                    .set(i64::from(state == s));
            }
        }
        self.clients.set(i64::try_from(clients).unwrap_or(i64::MAX));
        crate::metrics::encode(&self.registry)
    }
}
