//! The brokers one remote client may use. `grpc://a:50051,b:50051` lists
//! several brokers in front of the same data (gateways to one `nats://`
//! cluster): calls go to the current one; when it stops answering, the
//! client moves on to the next, and the existing retry, reconnect and resume
//! logic carries on there. With one broker nothing ever moves.

use std::sync::atomic::{AtomicUsize, Ordering};

use tonic::service::interceptor::InterceptedService;

use crate::error::{Error, Result};
use crate::wire::{self, pb};

/// Every call carries the client's token (when it has one).
pub(super) type Channel = InterceptedService<tonic::transport::Channel, wire::TokenInterceptor>;

/// Largest gRPC message the client accepts (a read or subscribe batch).
const MAX_MESSAGE: usize = 256 << 20;

/// The service clients of one broker (cheap to clone: they share its channel).
#[derive(Clone)]
pub(super) struct Clients {
    pub streams: pb::streams_client::StreamsClient<Channel>,
    pub queues: pb::queues_client::QueuesClient<Channel>,
    pub kv: pb::kv_client::KvClient<Channel>,
    pub resources: pb::resources_client::ResourcesClient<Channel>,
    pub health: pb::health_client::HealthClient<Channel>,
    pub identity: pb::identity_client::IdentityClient<Channel>,
}

impl Clients {
    pub fn new(channel: Channel) -> Clients {
        Clients {
            streams: pb::streams_client::StreamsClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            queues: pb::queues_client::QueuesClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            kv: pb::kv_client::KvClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            resources: pb::resources_client::ResourcesClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE),
            identity: pb::identity_client::IdentityClient::new(channel.clone()),
            health: pb::health_client::HealthClient::new(channel),
        }
    }
}

/// The listed brokers and which one calls go to.
pub(super) struct Brokers {
    hosts: Vec<String>,
    clients: Vec<Clients>,
    current: AtomicUsize,
}

/// Splits the host list of `grpc://a:50051,b:50051` (or `grpcs://`).
pub(super) fn parse_hosts(url: &str, scheme: &str) -> Result<Vec<String>> {
    let rest = url.trim_start_matches(scheme).trim_end_matches('/');
    let hosts: Vec<String> = rest.split(',').map(|h| h.trim().to_owned()).collect();
    if hosts.iter().any(|h| h.is_empty() || h.contains('/')) {
        return Err(Error::invalid(format!("invalid broker URL {url:?}: expected {scheme}host:port[,host:port...]")));
    }
    Ok(hosts)
}

impl Brokers {
    /// `clients[i]` talks to `hosts[i]`; calls start at `current`.
    pub fn new(hosts: Vec<String>, clients: Vec<Clients>, current: usize) -> Brokers {
        debug_assert_eq!(hosts.len(), clients.len());
        Brokers { hosts, clients, current: AtomicUsize::new(current) }
    }

    /// The broker calls go to now, and its index (to report it failed).
    pub fn pick(&self) -> (usize, &Clients) {
        let at = self.current.load(Ordering::Acquire);
        (at, &self.clients[at])
    }

    /// The broker at `at` did not answer: move to the next one, unless
    /// another call already moved on (many calls fail at once; move once).
    pub fn failed(&self, at: usize) {
        let n = self.clients.len();
        if n < 2 {
            return;
        }
        let next = (at + 1) % n;
        if self.current.compare_exchange(at, next, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            tracing::warn!(from = %self.hosts[at], to = %self.hosts[next], "broker not answering; switching");
        }
    }

    /// Reports a failed call's broker when the failure is the link (the
    /// broker gave no answer), so the next attempt goes elsewhere.
    pub fn observe<T>(&self, at: usize, r: &Result<T>) {
        if let Err(Error::Disconnected(_)) = r {
            self.failed(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_split_and_empty_ones_refused() {
        assert_eq!(parse_hosts("grpc://a:1,b:2/", "grpc://").unwrap(), vec!["a:1", "b:2"]);
        assert_eq!(parse_hosts("grpcs://a:1", "grpcs://").unwrap(), vec!["a:1"]);
        for bad in ["grpc://", "grpc://a:1,", "grpc://,a:1", "grpc://a:1,,b:2", "grpc://a:1/x"] {
            assert!(matches!(parse_hosts(bad, "grpc://"), Err(Error::InvalidArgument(_))), "{bad}");
        }
    }
}
