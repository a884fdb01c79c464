//! Receiver metrics, registered into the server's Prometheus registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels: the transport (`grpc` or `http`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    /// `grpc` or `http`.
    pub transport: &'static str,
}

/// Labels: transport and the status returned.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `grpc` or `http`.
    pub transport: &'static str,
    /// HTTP status code or gRPC code name.
    pub status: String,
}

/// Labels: the listener (`otlp_grpc`, `otlp_http`, `api`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// The listener.
    pub listener: &'static str,
}

type HistogramFamily = Family<TransportLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Counters and histograms of both receivers.
#[derive(Clone, Debug)]
pub struct CollectorMetrics {
    /// Spans stored.
    pub spans_accepted: Family<TransportLabels, Counter>,
    /// Spans rejected as invalid (partial success).
    pub spans_rejected: Family<TransportLabels, Counter>,
    /// Requests by outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency in seconds, from decode to acknowledgment.
    pub request_seconds: HistogramFamily,
    /// Request handlers that panicked (answered with an internal error), by listener; the API's
    /// listener counts here too.
    pub panics: Family<ListenerLabels, Counter>,
}

impl Default for CollectorMetrics {
    fn default() -> Self {
        Self {
            spans_accepted: Family::default(),
            spans_rejected: Family::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            panics: Family::default(),
        }
    }
}

impl CollectorMetrics {
    /// Registers every metric under `custos_receiver_*`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "custos_receiver_spans_accepted",
            "Spans durably stored",
            self.spans_accepted.clone(),
        );
        registry.register(
            "custos_receiver_spans_rejected",
            "Spans rejected as invalid",
            self.spans_rejected.clone(),
        );
        registry.register(
            "custos_receiver_requests",
            "Export requests by transport and status",
            self.requests.clone(),
        );
        registry.register(
            "custos_receiver_request_duration_seconds",
            "Export request latency from decode to acknowledgment",
            self.request_seconds.clone(),
        );
        registry.register(
            "custos_panics",
            "Request handlers that panicked and were answered with an internal error, by listener",
            self.panics.clone(),
        );
    }

    /// What a listener's panic guard calls: counts one panic on `listener`.
    pub fn on_panic(&self, listener: &'static str) -> custos_net::panics::OnPanic {
        let family = self.panics.clone();
        std::sync::Arc::new(move || {
            family.get_or_create(&ListenerLabels { listener }).inc();
        })
    }

    pub(crate) fn record(
        &self,
        transport: &'static str,
        status: impl Into<String>,
        accepted: u64,
        rejected: u64,
        seconds: f64,
    ) {
        let t = TransportLabels { transport };
        if accepted > 0 {
            self.spans_accepted.get_or_create(&t).inc_by(accepted);
        }
        if rejected > 0 {
            self.spans_rejected.get_or_create(&t).inc_by(rejected);
        }
        self.requests
            .get_or_create(&RequestLabels {
                transport,
                status: status.into(),
            })
            .inc();
        self.request_seconds.get_or_create(&t).observe(seconds);
    }
}
