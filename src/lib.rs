//! flowmesh: one messaging core (streams, queues, key-value) for every language.
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
pub mod server;
pub mod signals;
pub mod store;
pub mod txn;
pub mod wire;

pub use client::{Client, ClientConfig, Endpoint};
pub use engine::{Engine, EngineConfig};
pub use error::{Error, Result};
pub use model::*;
pub use options::Options;
pub use txn::{TxnOp, TxnResult};
