//! `flowmesh stats` and `flowmesh top`: fetch a broker's `/metrics` and show
//! it as readable tables.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::error::{Error, Result};

/// One sample line of the text format: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Series name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The sample value.
    pub value: f64,
}

impl Sample {
    fn label(&self, k: &str) -> &str {
        self.labels.get(k).map_or("", String::as_str)
    }
}

/// GETs `url` (`http://host:port/path`) and returns the body.
pub async fn fetch(url: &str, timeout: Duration) -> Result<String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| Error::InvalidArgument(format!("metrics URL {url:?}: expected http://host:port/metrics")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    let work = async {
        let tcp = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| Error::Unavailable(format!("cannot connect to {authority}: {e}")))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| Error::Unavailable(format!("HTTP handshake with {authority}: {e}")))?;
        tokio::spawn(conn);
        let req = hyper::Request::get(path)
            .header("host", authority)
            .body(Empty::<Bytes>::new())
            .map_err(|e| Error::InvalidArgument(format!("metrics URL {url:?}: {e}")))?;
        let resp = send.send_request(req).await.map_err(|e| Error::Unavailable(format!("GET {url}: {e}")))?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(|e| Error::Unavailable(format!("GET {url}: {e}")))?;
        let text = String::from_utf8_lossy(&body.to_bytes()).into_owned();
        if !status.is_success() {
            return Err(Error::Unavailable(format!("GET {url}: HTTP {status}: {}", text.trim())));
        }
        Ok(text)
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| Error::Timeout(format!("GET {url}")))?
}

/// Parses the sample lines of the Prometheus text format (comments skipped).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, labels, rest) = match line.find('{') {
        Some(i) => {
            let end = line.rfind('}')?;
            (&line[..i], parse_labels(&line[i + 1..end])?, &line[end + 1..])
        }
        None => {
            let (n, r) = line.split_once(' ')?;
            (n, BTreeMap::new(), r)
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample { name: name.to_owned(), labels, value })
}

fn parse_labels(s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                c => value.push(c),
            }
        }
        out.insert(key.trim().to_owned(), value);
    }
}

fn sum(samples: &[Sample], name: &str) -> f64 {
    samples.iter().filter(|s| s.name == name).map(|s| s.value).sum()
}

fn table(out: &mut String, title: &str, header: &[&str], rows: Vec<Vec<String>>) {
    use std::fmt::Write;
    if rows.is_empty() {
        return;
    }
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let _ = writeln!(out, "\n{title}");
    let line = |cells: Vec<String>| {
        cells.iter().zip(&width).enumerate().fold(String::new(), |mut acc, (i, (c, w))| {
            // First column left-aligned (a name), numbers right-aligned.
            let _ = if i == 0 || header[i] == "tier" || header[i] == "status" || header[i] == "group" {
                write!(acc, "  {c:<w$}")
            } else {
                write!(acc, "  {c:>w$}")
            };
            acc
        })
    };
    let _ = writeln!(out, "{}", line(header.iter().map(|h| h.to_string()).collect()));
    for r in rows {
        let _ = writeln!(out, "{}", line(r));
    }
}

fn n(v: f64) -> String {
    format!("{}", v as u64)
}

/// The broker's metrics as tables: totals, streams, groups, queues, KV, requests.
pub fn render(samples: &[Sample]) -> String {
    use std::fmt::Write;
    fn by<'a>(samples: &'a [Sample], name: &'a str) -> impl Iterator<Item = &'a Sample> {
        samples.iter().filter(move |s| s.name == name)
    }
    let by = |name: &'static str| by(samples, name);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "connections {}  requests in flight {}  requests {}  storage {} bytes",
        n(sum(samples, "flowmesh_broker_connections")),
        n(sum(samples, "flowmesh_broker_requests_in_flight")),
        n(sum(samples, "flowmesh_broker_requests_total")),
        n(sum(samples, "flowmesh_broker_storage_bytes")),
    );
    let _ = writeln!(
        out,
        "messages published {}  delivered {}  engine calls in flight {}",
        n(sum(samples, "flowmesh_broker_engine_messages_published_total")),
        n(sum(samples, "flowmesh_broker_engine_messages_delivered_total")),
        n(sum(samples, "flowmesh_broker_engine_in_flight")),
    );
    let bytes: BTreeMap<(String, String), f64> = by("flowmesh_broker_stream_bytes")
        .map(|s| ((s.label("stream").to_owned(), s.label("tier").to_owned()), s.value))
        .collect();
    let rows = by("flowmesh_broker_stream_messages")
        .map(|s| {
            let key = (s.label("stream").to_owned(), s.label("tier").to_owned());
            vec![key.0.clone(), key.1.clone(), n(s.value), n(bytes.get(&key).copied().unwrap_or(0.0))]
        })
        .collect();
    table(&mut out, "STREAMS", &["stream", "tier", "messages", "bytes"], rows);
    let rows = by("flowmesh_broker_consumer_group_lag")
        .map(|s| vec![s.label("stream").to_owned(), s.label("group").to_owned(), n(s.value)])
        .collect();
    table(&mut out, "CONSUMER GROUPS", &["stream", "group", "lag"], rows);
    let queue = |metric: &'static str, q: &str| {
        by(metric).find(|s| s.label("queue") == q).map_or("0".to_owned(), |s| n(s.value))
    };
    let rows = by("flowmesh_broker_queue_pending")
        .map(|s| {
            let q = s.label("queue");
            vec![
                q.to_owned(),
                n(s.value),
                queue("flowmesh_broker_queue_in_flight", q),
                queue("flowmesh_broker_queue_delayed", q),
                queue("flowmesh_broker_dlq_size", q),
            ]
        })
        .collect();
    table(&mut out, "QUEUES", &["queue", "pending", "in_flight", "delayed", "dlq"], rows);
    let rows = by("flowmesh_broker_kv_keys").map(|s| vec![s.label("bucket").to_owned(), n(s.value)]).collect();
    table(&mut out, "KV BUCKETS", &["bucket", "keys"], rows);
    let lat: BTreeMap<(String, String), (f64, f64)> = by("flowmesh_broker_request_duration_seconds_sum")
        .map(|s| {
            let key = (s.label("service").to_owned(), s.label("method").to_owned());
            let count = by("flowmesh_broker_request_duration_seconds_count")
                .find(|c| c.label("service") == key.0 && c.label("method") == key.1)
                .map_or(0.0, |c| c.value);
            (key, (s.value, count))
        })
        .collect();
    let rows = by("flowmesh_broker_requests_total")
        .map(|s| {
            let key = (s.label("service").to_owned(), s.label("method").to_owned());
            let (total, count) = lat.get(&key).copied().unwrap_or((0.0, 0.0));
            let mean = if count > 0.0 { format!("{:.3}", total / count * 1000.0) } else { "-".into() };
            vec![key.0, key.1, s.label("status").to_owned(), n(s.value), mean]
        })
        .collect();
    table(&mut out, "REQUESTS", &["service", "method", "status", "count", "mean_ms"], rows);
    out
}
