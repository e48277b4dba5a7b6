//! Prometheus metrics: the instruments authlog updates, in one registry, served as text at
//! `GET /metrics`.
//!
//! One process-wide set (the `prometheus` crate's usual shape), so the hasher, the registry and
//! the stores record without being handed a handle. Several apps in one process (tests) share it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::LazyLock;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds, from 100 µs (a `/profile` hit) to 10 s (bcrypt queues, outages).
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Propagation buckets in seconds: fine below 50 ms, where the target is.
const TAIL_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

pub struct Metrics {
    registry: Registry,
    /// `authlog_http_requests_total{route, method, status}`.
    pub http_requests: IntCounterVec,
    /// `authlog_http_request_duration_seconds{route, method}`.
    pub http_duration: HistogramVec,
    /// `authlog_bcrypt_duration_seconds{operation="hash"|"verify"}`: time on the blocking pool,
    /// not the wait for a permit.
    pub bcrypt_duration: HistogramVec,
    /// `authlog_events_appended_total{event_type}`: counted after commit.
    pub events_appended: IntCounterVec,
    /// `authlog_append_duration_seconds`: one batch, from the registry's point of view.
    pub append_duration: Histogram,
    /// `authlog_append_batch_size`: commands per append (group commit at work).
    pub append_batch_size: Histogram,
    /// `authlog_projection_users`: users in the in-memory directory.
    pub projection_users: IntGauge,
    /// `authlog_registry_queue_depth`: commands waiting for the next batch.
    pub registry_queue_depth: IntGauge,
    /// `authlog_login_waiting`: login attempts parked until their turn (bounded per account and
    /// address by `throttle::turns::MAX_WAITING`).
    pub login_waiting: IntGauge,
    /// `authlog_sessions_live`: sessions in the directory (started, not ended or expired).
    pub sessions_live: IntGauge,
    /// `authlog_refreshes_total{outcome}`: refresh attempts, by how they were answered.
    pub refreshes: IntCounterVec,
    /// `authlog_registry_ready`: 1 once the log has been replayed.
    pub registry_ready: IntGauge,
    /// `authlog_db_pool_connections{state="max"|"open"|"idle"|"waiting"}` (PostgreSQL only).
    pub db_pool: IntGaugeVec,
    /// `authlog_log_applied_position`: the last event this instance applied.
    pub log_applied_position: IntGauge,
    /// `authlog_log_head_position`: the last event this instance knows the log holds (its own
    /// appends, notifications, tail reads).
    pub log_head_position: IntGauge,
    /// `authlog_log_lag_seconds`: how long this instance has known of events it has not
    /// applied yet; 0 when it is current.
    pub log_lag_seconds: Gauge,
    /// `authlog_log_listening`: 1 while the instance listens for other instances' appends
    /// (PostgreSQL), 0 while it polls instead.
    pub log_listening: IntGauge,
    /// `authlog_tail_delay_seconds`: from an event's `recorded_at` (taken under the append lock,
    /// just before its commit) to this instance applying it from the tail: how long another
    /// instance's write takes to reach this one.
    pub tail_delay: Histogram,
    /// `authlog_tail_delay_max_seconds`: the longest such delay since start-up.
    pub tail_delay_max: Gauge,
    /// `authlog_log_untrusted_position`: the position of a row this instance refuses to apply
    /// (no log signature covers it, or it does not verify); 0 when there is none. Alert on
    /// anything else.
    pub log_untrusted_position: IntGauge,
    /// `authlog_log_untrusted_rows_total`: refusals raised, once per position.
    pub log_untrusted_rows: IntCounter,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// One route's series, by method and status.
type RouteSeries = HashMap<(&'static str, u16), RequestSeries>;

/// One request series' handles: its counter (route, method, status) and latency (route, method).
struct RequestSeries {
    count: IntCounter,
    latency: Histogram,
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new_custom(Some("authlog".to_owned()), None)
            .unwrap_or_else(|_| Registry::new());
        let latency = |name: &str, help: &str| {
            HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec())
        };
        let metrics = Self {
            http_requests: IntCounterVec::new(
                Opts::new("http_requests_total", "HTTP requests answered"),
                &["route", "method", "status"],
            )
            .expect("valid metric"),
            http_duration: HistogramVec::new(
                latency(
                    "http_request_duration_seconds",
                    "Time to answer an HTTP request",
                ),
                &["route", "method"],
            )
            .expect("valid metric"),
            bcrypt_duration: HistogramVec::new(
                latency(
                    "bcrypt_duration_seconds",
                    "Time bcrypt ran, per hash or verify",
                ),
                &["operation"],
            )
            .expect("valid metric"),
            events_appended: IntCounterVec::new(
                Opts::new("events_appended_total", "Events committed to the log"),
                &["event_type"],
            )
            .expect("valid metric"),
            append_duration: Histogram::with_opts(latency(
                "append_duration_seconds",
                "Time to append one batch to the event log",
            ))
            .expect("valid metric"),
            append_batch_size: Histogram::with_opts(
                HistogramOpts::new("append_batch_size", "Commands per append").buckets(vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
                ]),
            )
            .expect("valid metric"),
            projection_users: IntGauge::new("projection_users", "Users in the directory")
                .expect("valid metric"),
            registry_queue_depth: IntGauge::new(
                "registry_queue_depth",
                "Commands waiting for the registry's next append",
            )
            .expect("valid metric"),
            login_waiting: IntGauge::new("login_waiting", "Login attempts waiting for their turn")
                .expect("valid metric"),
            sessions_live: IntGauge::new("sessions_live", "Live sessions in the directory")
                .expect("valid metric"),
            refreshes: IntCounterVec::new(
                Opts::new("refreshes_total", "Refresh attempts by outcome"),
                &["outcome"],
            )
            .expect("valid metric"),
            registry_ready: IntGauge::new(
                "registry_ready",
                "1 once the event log has been replayed, else 0",
            )
            .expect("valid metric"),
            db_pool: IntGaugeVec::new(
                Opts::new("db_pool_connections", "PostgreSQL connection pool"),
                &["state"],
            )
            .expect("valid metric"),
            log_applied_position: IntGauge::new(
                "log_applied_position",
                "Position of the last event this instance applied",
            )
            .expect("valid metric"),
            log_head_position: IntGauge::new(
                "log_head_position",
                "Position of the last event this instance knows the log holds",
            )
            .expect("valid metric"),
            log_lag_seconds: Gauge::new(
                "log_lag_seconds",
                "How long this instance has known of events it has not applied; 0 when current",
            )
            .expect("valid metric"),
            log_listening: IntGauge::new(
                "log_listening",
                "1 while listening for other instances' appends, 0 while polling",
            )
            .expect("valid metric"),
            tail_delay: Histogram::with_opts(
                HistogramOpts::new(
                    "tail_delay_seconds",
                    "From another instance's append to this instance applying it",
                )
                .buckets(TAIL_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
            tail_delay_max: Gauge::new(
                "tail_delay_max_seconds",
                "Longest delay from another instance's append to applying it here",
            )
            .expect("valid metric"),
            log_untrusted_position: IntGauge::new(
                "log_untrusted_position",
                "Position of a row refused for want of a valid log signature; 0 if none",
            )
            .expect("valid metric"),
            log_untrusted_rows: IntCounter::new(
                "log_untrusted_rows_total",
                "Rows refused for want of a valid log signature, once per position",
            )
            .expect("valid metric"),
            registry,
        };
        metrics.register_all();
        metrics
    }

    fn register_all(&self) {
        let collectors: [Box<dyn prometheus::core::Collector>; 21] = [
            Box::new(self.http_requests.clone()),
            Box::new(self.http_duration.clone()),
            Box::new(self.bcrypt_duration.clone()),
            Box::new(self.events_appended.clone()),
            Box::new(self.append_duration.clone()),
            Box::new(self.append_batch_size.clone()),
            Box::new(self.projection_users.clone()),
            Box::new(self.registry_queue_depth.clone()),
            Box::new(self.login_waiting.clone()),
            Box::new(self.sessions_live.clone()),
            Box::new(self.refreshes.clone()),
            Box::new(self.registry_ready.clone()),
            Box::new(self.db_pool.clone()),
            Box::new(self.log_applied_position.clone()),
            Box::new(self.log_head_position.clone()),
            Box::new(self.log_lag_seconds.clone()),
            Box::new(self.log_listening.clone()),
            Box::new(self.tail_delay.clone()),
            Box::new(self.tail_delay_max.clone()),
            Box::new(self.log_untrusted_position.clone()),
            Box::new(self.log_untrusted_rows.clone()),
        ];
        for collector in collectors {
            // Names are fixed and distinct, so registering cannot collide.
            let _ = self.registry.register(collector);
        }
    }

    /// Counts one answered HTTP request and its latency. Labels must come from small fixed sets
    /// (route names, standard methods, the statuses the API answers), never from what a client
    /// sends.
    pub fn record_request(&self, route: &str, method: &'static str, status: u16, seconds: f64) {
        // Each thread keeps its own handles on the series it has seen, so a request costs two
        // small map lookups instead of hashing its labels into each vector under its lock.
        thread_local! {
            static SERIES: RefCell<HashMap<Box<str>, RouteSeries>> = RefCell::new(HashMap::new());
        }
        SERIES.with_borrow_mut(|series| {
            let by_route = match series.get_mut(route) {
                Some(by_route) => by_route,
                None => series.entry(route.into()).or_default(),
            };
            let handles = by_route.entry((method, status)).or_insert_with(|| {
                let code = status.to_string();
                RequestSeries {
                    count: self
                        .http_requests
                        .with_label_values(&[route, method, &code]),
                    latency: self.http_duration.with_label_values(&[route, method]),
                }
            });
            handles.count.inc();
            handles.latency.observe(seconds);
        });
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec fails only on a metric with invalid names, which ours are not.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}
