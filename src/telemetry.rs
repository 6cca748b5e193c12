//! Logs and metrics: `tracing` (human-readable or JSON) and Prometheus counters behind the
//! `metrics` facade. Every bus event is both logged by its caller and counted here, with the
//! same names on both buses.

use crate::config::{LogColor, LogFormat};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::io::IsTerminal;
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the log subscriber on stderr (once per process; later calls do nothing). Text
/// logs carry ANSI colours only as `color` says (by default only on a terminal), so logs
/// redirected to a file or a pipe are plain.
pub fn init_logging(format: LogFormat, color: LogColor) {
    let filter = EnvFilter::try_from_env("DREHKREUZ_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,lapin=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(color.ansi(std::io::stderr().is_terminal()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Installs the Prometheus recorder (once per process) and returns its render handle.
pub fn prometheus() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may exist in tests that set their own; then ours renders empty.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        "drehkreuz_bus_published_total",
        "Events published and confirmed, by routing key."
    );
    metrics::describe_counter!(
        "drehkreuz_bus_consumed_total",
        "Deliveries handed to a consumer, by queue."
    );
    metrics::describe_counter!(
        "drehkreuz_bus_retried_total",
        "Deliveries scheduled for a retry, by queue."
    );
    metrics::describe_counter!(
        "drehkreuz_bus_dead_lettered_total",
        "Deliveries dead-lettered, by queue."
    );
    metrics::describe_gauge!("drehkreuz_outbox_backlog", "Outbox rows not yet published.");
    metrics::describe_counter!(
        "drehkreuz_exports_total",
        "Invoices exported, by target and format."
    );
    metrics::describe_counter!(
        "drehkreuz_goods_receipts_total",
        "Goods receipts stored, by format and status (accepted | review)."
    );
    metrics::describe_counter!(
        "drehkreuz_bus_reconnects_total",
        "Broker connections rebuilt after a loss."
    );
}

pub fn published(routing_key: &str) {
    metrics::counter!("drehkreuz_bus_published_total", "routing_key" => routing_key.to_string())
        .increment(1);
}
pub fn consumed(queue: &str) {
    metrics::counter!("drehkreuz_bus_consumed_total", "queue" => queue.to_string()).increment(1);
}
pub fn retried(queue: &str) {
    metrics::counter!("drehkreuz_bus_retried_total", "queue" => queue.to_string()).increment(1);
}
pub fn dead_lettered(queue: &str) {
    metrics::counter!("drehkreuz_bus_dead_lettered_total", "queue" => queue.to_string())
        .increment(1);
}
pub fn outbox_backlog(rows: i64) {
    metrics::gauge!("drehkreuz_outbox_backlog").set(rows as f64);
}
pub fn reconnected(connection: &str) {
    metrics::counter!("drehkreuz_bus_reconnects_total", "connection" => connection.to_string())
        .increment(1);
}

/// One invoice exported to a target in a format.
pub fn exported(target: &str, format: &str) {
    metrics::counter!("drehkreuz_exports_total", "target" => target.to_string(), "format" => format.to_string())
        .increment(1);
}
