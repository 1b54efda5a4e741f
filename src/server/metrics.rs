//! Broker metrics (`flowmesh serve --metrics ADDR`): a tower layer on the
//! gRPC server counts requests by service/method/status with latency and in
//! flight, the accept loop counts connections, the served engine is metered
//! like a client's (`flowmesh_broker_engine_*`), and `/metrics` (a minimal
//! HTTP/1 server) adds resource gauges gathered from the engine at scrape
//! time. Also logs every request at debug level.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::metrics::{latency_histogram, status_name};

/// Every gRPC method the broker serves: labels only ever take these values,
/// so a client sending made-up paths cannot blow up the series count.
const METHODS: &[(&str, &[&str])] = &[
    ("Health", &["Check", "Ready"]),
    ("Streams", &["CreateStream", "Publish", "Read", "Info", "Subscribe", "CommitOffset", "GetOffset", "GroupState"]),
    (
        "Queues",
        &[
            "Enqueue",
            "Reserve",
            "Ack",
            "Nack",
            "Stats",
            "SetRetryPolicy",
            "GetRetryPolicy",
            "DlqList",
            "DlqReplay",
            "DlqReplayAll",
            "Extend",
        ],
    ),
    ("Kv", &["Set", "Get", "Delete", "Exists", "Keys", "Watch", "Cas", "Txn"]),
    ("Resources", &["List", "Delete", "Purge", "UpdateStream"]),
    ("Overview", &["Inventory", "Metrics"]),
];

/// `(service, method)` of a request path like `/flowmesh.v1.Streams/Publish`.
fn classify(path: &str) -> (&'static str, &'static str) {
    let mut it = path.trim_start_matches('/').splitn(2, '/');
    let (svc, method) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
    let svc = svc.strip_prefix("flowmesh.v1.").unwrap_or("");
    for (s, methods) in METHODS {
        if *s == svc {
            return (s, methods.iter().find(|m| **m == method).copied().unwrap_or("unknown"));
        }
    }
    ("unknown", "unknown")
}

/// The outcome of a gRPC response from its headers: flowmesh errors carry
/// `fm-code`; other failures only a `grpc-status`. A response without a
/// status header is a success whose status comes in trailers (streams count
/// how they opened).
fn response_status(headers: &http::HeaderMap) -> &'static str {
    let num = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()?.parse::<i32>().ok());
    if let Some(code) = num(crate::wire::CODE_KEY) {
        return status_name(Some(&Error::from_code(code, "")));
    }
    match num("grpc-status") {
        None | Some(0) => "ok",
        Some(12) => "unimplemented",
        Some(_) => "grpc_error",
    }
}

type ReqLabels = [(&'static str, &'static str); 3];
type MethodLabels = [(&'static str, &'static str); 2];

/// Request and connection metrics of one broker.
#[derive(Debug)]
pub struct BrokerMetrics {
    registry: Registry,
    /// The served engine's calls, per message: a publish stream is one
    /// request but many publishes (`flowmesh_broker_engine_*`).
    pub(crate) engine: Arc<crate::metrics::ClientMetrics>,
    requests: Family<ReqLabels, Counter>,
    durations: Family<MethodLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    connections: Gauge,
    connections_total: Counter,
    /// Totals for the Overview service (the families above are per label).
    requests_total: Counter,
    request_errors: Counter,
    started: Instant,
}

impl Default for BrokerMetrics {
    fn default() -> Self {
        BrokerMetrics::new()
    }
}

impl BrokerMetrics {
    pub fn new() -> BrokerMetrics {
        let m = BrokerMetrics {
            registry: Registry::default(),
            engine: Arc::new(crate::metrics::ClientMetrics::with_prefix("flowmesh_broker_engine")),
            requests: Family::default(),
            durations: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            in_flight: Gauge::default(),
            connections: Gauge::default(),
            connections_total: Counter::default(),
            requests_total: Counter::default(),
            request_errors: Counter::default(),
            started: Instant::now(),
        };
        let mut r = Registry::with_prefix("flowmesh_broker");
        r.register("requests", "gRPC requests by service, method and status", m.requests.clone());
        r.register("request_duration_seconds", "gRPC request latency (to response headers)", m.durations.clone());
        r.register("requests_in_flight", "gRPC requests being handled now", m.in_flight.clone());
        r.register("connections", "Open client connections", m.connections.clone());
        r.register("connections_accepted", "Client connections accepted since start", m.connections_total.clone());
        BrokerMetrics { registry: r, ..m }
    }

    fn record(&self, svc: &'static str, method: &'static str, status: &'static str, seconds: f64) {
        self.requests.get_or_create(&[("service", svc), ("method", method), ("status", status)]).inc();
        self.durations.get_or_create(&[("service", svc), ("method", method)]).observe(seconds);
        self.requests_total.inc();
        if status != "ok" {
            self.request_errors.inc();
        }
    }

    /// The broker-wide counters of the Overview service.
    pub(crate) fn snapshot(&self) -> crate::wire::pb::MetricsResponse {
        crate::wire::pb::MetricsResponse {
            connections: self.connections.get().max(0) as u64,
            connections_accepted: self.connections_total.get(),
            requests: self.requests_total.get(),
            request_errors: self.request_errors.get(),
            requests_in_flight: self.in_flight.get().max(0) as u64,
            uptime_ms: self.started.elapsed().as_millis() as u64,
        }
    }

    /// Request metrics plus the engine's resources, in the Prometheus text format.
    pub async fn render(&self, engine: &dyn Engine) -> Result<String> {
        let mut out = String::new();
        let enc = |out: &mut String, r: &Registry| {
            prometheus_client::encoding::prometheus_text::encode(out, r).expect("writing to a String cannot fail")
        };
        enc(&mut out, &self.registry);
        out.push_str(&self.engine.encode());
        enc(&mut out, &resources_registry(&engine.inventory().await?));
        Ok(out)
    }
}

type Named = Vec<(&'static str, String)>;

/// Scrape-time gauges of streams, groups, queues, buckets and storage.
fn resources_registry(inv: &crate::engine::Inventory) -> Registry {
    let mut r = Registry::with_prefix("flowmesh_broker");
    let gauge = |r: &mut Registry, name: &str, help: &str, rows: Vec<(Named, u64)>| {
        let fam = Family::<Named, Gauge>::default();
        for (labels, v) in rows {
            fam.get_or_create(&labels).set(v.min(i64::MAX as u64) as i64);
        }
        r.register(name, help, fam);
    };
    let stream = |s: &crate::engine::StreamStats| vec![("stream", s.name.clone()), ("tier", s.tier.name().to_owned())];
    gauge(
        &mut r,
        "stream_messages",
        "Messages retained per stream",
        inv.streams.iter().map(|s| (stream(s), s.messages)).collect(),
    );
    gauge(
        &mut r,
        "stream_bytes",
        "Bytes retained per stream",
        inv.streams.iter().map(|s| (stream(s), s.bytes)).collect(),
    );
    let lags = inv
        .streams
        .iter()
        .flat_map(|s| {
            s.groups.iter().map(|g| {
                let lag = g.partitions.iter().map(|p| p.lag).sum();
                (vec![("stream", s.name.clone()), ("group", g.group.clone())], lag)
            })
        })
        .collect();
    gauge(&mut r, "consumer_group_lag", "Messages not yet processed by a consumer group", lags);
    let q = |name: &String| vec![("queue", name.clone())];
    gauge(
        &mut r,
        "queue_pending",
        "Jobs ready for delivery",
        inv.queues.iter().map(|(n, s)| (q(n), s.pending)).collect(),
    );
    gauge(
        &mut r,
        "queue_in_flight",
        "Jobs reserved, not yet acked",
        inv.queues.iter().map(|(n, s)| (q(n), s.in_flight)).collect(),
    );
    gauge(
        &mut r,
        "queue_delayed",
        "Jobs waiting for their delay or backoff",
        inv.queues.iter().map(|(n, s)| (q(n), s.delayed)).collect(),
    );
    gauge(
        &mut r,
        "dlq_size",
        "Jobs in the dead-letter queue",
        inv.queues.iter().map(|(n, s)| (q(n), s.dead)).collect(),
    );
    gauge(
        &mut r,
        "kv_keys",
        "Live keys per bucket",
        inv.buckets.iter().map(|(n, k)| (vec![("bucket", n.clone())], *k)).collect(),
    );
    let storage = Gauge::<i64>::default();
    storage.set(inv.storage_bytes.min(i64::MAX as u64) as i64);
    r.register("storage_bytes", "Bytes of the data directory (0 in memory)", storage);
    r
}

/// The tower layer counting gRPC requests.
#[derive(Clone)]
pub(crate) struct MetricsLayer(pub Arc<BrokerMetrics>);

impl<S> tower_layer::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> MetricsService<S> {
        MetricsService { inner, metrics: self.0.clone() }
    }
}

#[derive(Clone)]
pub(crate) struct MetricsService<S> {
    inner: S,
    metrics: Arc<BrokerMetrics>,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for MetricsService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = std::result::Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (svc, method) = classify(req.uri().path());
        let metrics = self.metrics.clone();
        let start = Instant::now();
        metrics.in_flight.inc();
        let _in_flight = InFlight(metrics.in_flight.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let _in_flight = _in_flight;
            let r = fut.await;
            let status = match &r {
                Ok(resp) => response_status(resp.headers()),
                Err(_) => "transport_error",
            };
            let elapsed = start.elapsed();
            metrics.record(svc, method, status, elapsed.as_secs_f64());
            tracing::debug!(service = svc, method, status, elapsed_us = elapsed.as_micros() as u64, "request");
            r
        })
    }
}

/// Decrements the in-flight gauge however the request ends (also when cancelled).
struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One open connection of a listener other than the gRPC one (WebSocket),
/// counted like a gRPC connection until dropped.
pub(crate) struct OpenConn(Gauge);

impl BrokerMetrics {
    pub(crate) fn open_conn(&self) -> OpenConn {
        self.connections.inc();
        self.connections_total.inc();
        OpenConn(self.connections.clone())
    }
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A client connection, counted while it is open.
pub(crate) struct CountedConn {
    inner: tokio::net::TcpStream,
    open: Gauge,
}

impl CountedConn {
    pub(crate) fn new(inner: tokio::net::TcpStream, metrics: &BrokerMetrics) -> CountedConn {
        metrics.connections.inc();
        metrics.connections_total.inc();
        CountedConn { inner, open: metrics.connections.clone() }
    }
}

impl Drop for CountedConn {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl tonic::transport::server::Connected for CountedConn {
    type ConnectInfo = <tokio::net::TcpStream as tonic::transport::server::Connected>::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for CountedConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves `GET /metrics` on `listener` until `stop` resolves.
pub(crate) async fn serve_http(
    listener: tokio::net::TcpListener,
    metrics: Arc<BrokerMetrics>,
    engine: Arc<dyn Engine>,
    stop: impl Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    loop {
        let (tcp, _) = tokio::select! {
            _ = &mut stop => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (metrics, engine) = (metrics.clone(), engine.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (metrics, engine) = (metrics.clone(), engine.clone());
                async move { Ok::<_, std::convert::Infallible>(answer(&req, &metrics, &*engine).await) }
            });
            // Scrapes are short: a bounded time per connection keeps idle ones from piling up.
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
        });
    }
}

async fn answer<B>(
    req: &hyper::Request<B>,
    metrics: &BrokerMetrics,
    engine: &dyn Engine,
) -> hyper::Response<Full<Bytes>> {
    let reply = |code: u16, ctype: &str, body: String| {
        hyper::Response::builder()
            .status(code)
            .header("content-type", ctype)
            .body(Full::new(Bytes::from(body)))
            .expect("static response parts are valid")
    };
    if req.method() != hyper::Method::GET || req.uri().path() != "/metrics" {
        return reply(404, "text/plain", "not found: GET /metrics\n".into());
    }
    match metrics.render(engine).await {
        Ok(text) => reply(200, prometheus_client::encoding::prometheus_text::CONTENT_TYPE, text),
        Err(e) => reply(500, "text/plain", format!("{e}\n")),
    }
}
