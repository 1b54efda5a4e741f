//! flowmesh: one messaging core (streams, queues, key-value) for every language.
//!
//! # A tour
//!
//! Everything goes through a [`Client`], connected to an engine chosen by
//! its URL: `mem://` (in this process), `file:///dir` (durable, in this
//! process), `grpc://host:port` (the broker, `flowmesh serve`) or
//! `nats://host:port` (NATS JetStream). The same calls work on each:
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use flowmesh::{Client, Options, Record};
//!
//! let client = Client::connect("mem://", &Options::new().with("tenant", "acme")?).await?;
//!
//! // Streams: append, read back by position, consumer-group offsets.
//! let pos = client.publish("orders", Record::new("order-1")).await?;
//! let read = client.read("orders", pos.partition, pos.offset, 10).await?;
//! assert_eq!(&read[0].payload[..], b"order-1");
//!
//! // Queues: enqueue, reserve for a visibility timeout, ack.
//! let id = client.enqueue("emails", Record::new("welcome"), 0, 0).await?;
//! let job = client.reserve("emails", 30_000, 0).await?.expect("a job is ready");
//! assert_eq!(job.id, id);
//! client.ack("emails", job.id).await?;
//!
//! // Key-value: revisions and compare-and-set.
//! let rev = client.kv_set("config", "mode", "fast", 0).await?;
//! assert!(client.kv_cas("config", "mode", "slow", rev + 1).await.is_err());
//! client.kv_cas("config", "mode", "slow", rev).await?;
//! assert_eq!(&client.kv_get("config", "mode").await?.value[..], b"slow");
//! # Ok::<(), flowmesh::Error>(())
//! # }).unwrap();
//! ```
//!
//! Where each piece lives (docs/ARCHITECTURE.md has the layering):
//! - [`model`], [`options`], [`names`], [`txn`], [`error`]: the data model,
//!   string options, resource names, KV transactions, the error type and
//!   the status codes of the C ABI;
//! - [`engine`]: the [`Engine`] trait, its configuration, link state, and
//!   the engines (`embedded`, `remote`, `nats`); [`wire`] is the broker's
//!   protocol, shared by the remote engine and [`server`];
//! - [`client`]: the async API above; [`metrics`] its Prometheus metrics;
//! - [`events`]: events to named recipients on top of streams and queues;
//!   [`store`]: the document store on top of KV; [`rules`]: the rules
//!   engine (events, facts, rules evaluated exactly once) and
//!   [`procedures`]: named atomic step lists, both on top of the store;
//! - [`blocking`]: the blocking client the C ABI stands on (runtime, callback
//!   threads, async publish pipeline); [`ffi`]: the C ABI itself
//!   (`include/flowmesh.h`, contract in docs/ABI.md);
//! - [`server`]: the broker's gRPC services over any engine.
#![warn(missing_docs)]

pub mod backoff;
pub mod blocking;
pub mod client;
pub mod engine;
pub mod error;
pub mod events;
pub mod ffi;
pub mod keys;
pub mod metrics;
pub mod model;
pub mod names;
pub mod options;
pub mod procedures;
pub mod rules;
pub mod server;
pub(crate) mod signals;
pub mod store;
pub mod subject;
pub mod txn;
pub mod wire;

pub use client::{Client, ClientConfig, Endpoint};
pub use engine::{Engine, EngineConfig};
pub use error::{Error, Result};
pub use model::*;
pub use options::Options;
pub use txn::{TxnOp, TxnResult};
