//! String key/value options, as the C ABI passes them. Every key is known and
//! its value checked when set, so a typo fails at once instead of being
//! ignored; each consumer (connect, subscribe, stream creation) then checks
//! that the keys it was given apply to it.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::model::{DeliveryTier, PublishOptions, StartFrom, StreamConfig, SubscribeSpec, Tier};
use crate::names;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Scope,
    Unsigned,
    Bool,
    Fsync,
    Start,
    Group,
    Text,
    Float,
    Tier,
}

/// Every key with its value kind and the place it applies.
const KEYS: &[(&str, Kind, Context)] = &[
    ("tenant", Kind::Scope, Context::Connect),
    ("namespace", Kind::Scope, Context::Connect),
    ("max_payload_bytes", Kind::Unsigned, Context::Connect),
    ("fsync", Kind::Fsync, Context::Connect),
    ("fsync_interval_ms", Kind::Unsigned, Context::Connect),
    ("segment_bytes", Kind::Unsigned, Context::Connect),
    ("worker_threads", Kind::Unsigned, Context::Connect),
    ("connect_timeout_ms", Kind::Unsigned, Context::Connect),
    ("request_timeout_ms", Kind::Unsigned, Context::Connect),
    ("reconnect_initial_ms", Kind::Unsigned, Context::Connect),
    ("reconnect_max_ms", Kind::Unsigned, Context::Connect),
    ("reconnect_multiplier", Kind::Float, Context::Connect),
    ("reconnect_jitter_ms", Kind::Unsigned, Context::Connect),
    ("max_reconnect_attempts", Kind::Unsigned, Context::Connect),
    ("token", Kind::Text, Context::Connect),
    ("heartbeat_ms", Kind::Unsigned, Context::Connect),
    ("max_retries", Kind::Unsigned, Context::Connect),
    ("breaker_threshold", Kind::Unsigned, Context::Connect),
    ("breaker_timeout_ms", Kind::Unsigned, Context::Connect),
    ("max_in_flight", Kind::Unsigned, Context::Connect),
    ("nonblocking", Kind::Bool, Context::Connect),
    // events (src/events): identity, end-to-end key, subscription settings
    ("app_id", Kind::Scope, Context::Connect),
    ("app_secret_key", Kind::Text, Context::Connect),
    ("auto_ack", Kind::Bool, Context::Event),
    ("ack_wait_ms", Kind::Unsigned, Context::Event),
    ("async_handler", Kind::Bool, Context::Event),
    ("tls_ca_file", Kind::Text, Context::Connect),
    ("tls_server_name", Kind::Text, Context::Connect),
    // identity of a broker with --identity: log in after connect and after every reconnect
    ("identity_user", Kind::Text, Context::Connect),
    ("identity_password", Kind::Text, Context::Connect),
    ("identity_secret", Kind::Text, Context::Connect),
    // nats:// (src/engine/nats): replication, credentials, TLS client cert, domain
    ("replicas", Kind::Unsigned, Context::Connect),
    ("user", Kind::Text, Context::Connect),
    ("password", Kind::Text, Context::Connect),
    ("creds_file", Kind::Text, Context::Connect),
    ("tls_cert_file", Kind::Text, Context::Connect),
    ("tls_key_file", Kind::Text, Context::Connect),
    ("js_domain", Kind::Text, Context::Connect),
    ("group", Kind::Group, Context::Subscribe),
    ("partition", Kind::Unsigned, Context::Subscribe),
    ("start", Kind::Start, Context::Subscribe),
    ("auto_commit", Kind::Bool, Context::Subscribe),
    ("partitions", Kind::Unsigned, Context::Stream),
    ("max_age_ms", Kind::Unsigned, Context::Stream),
    ("max_bytes", Kind::Unsigned, Context::Stream),
    ("max_messages", Kind::Unsigned, Context::Stream),
    ("tier", Kind::Tier, Context::Stream),
    // per publish (fm_publish_with): delivery tier, acknowledgement, deadline
    ("tier", Kind::Tier, Context::Publish),
    ("require_ack", Kind::Bool, Context::Publish),
    ("timeout_ms", Kind::Unsigned, Context::Publish),
    // the message's id: a stored publish with an id seen before is stored once
    ("msg_id", Kind::Text, Context::Publish),
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
/// Where an option may be given; every known key belongs to one.
pub enum Context {
    /// Connecting a client.
    Connect,
    /// Subscribing to a stream.
    Subscribe,
    /// Creating or updating a stream.
    Stream,
    /// Subscribing to events.
    Event,
    /// One publish.
    Publish,
}

impl Context {
    fn name(self) -> &'static str {
        match self {
            Context::Connect => "connect",
            Context::Subscribe => "subscribe",
            Context::Stream => "stream creation",
            Context::Event => "event subscription",
            Context::Publish => "publish",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
/// String key-value options, as every binding passes them; each key and value is checked when set.
pub struct Options {
    values: BTreeMap<String, String>,
}

fn parse_u64(key: &str, v: &str) -> Result<u64> {
    v.trim().parse().map_err(|_| Error::invalid(format!("option {key}: expected a non-negative integer, got {v:?}")))
}

fn parse_f64(key: &str, v: &str) -> Result<f64> {
    match v.trim().parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 1.0 => Ok(f),
        _ => Err(Error::invalid(format!("option {key}: expected a number >= 1, got {v:?}"))),
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(Error::invalid(format!("option {key}: expected true or false, got {v:?}"))),
    }
}

fn parse_tier(v: &str) -> Result<Tier> {
    match v.trim() {
        "durable" => Ok(Tier::Durable),
        "memory" => Ok(Tier::Memory),
        _ => Err(Error::invalid(format!("option tier: a stream's tier is durable or memory, got {v:?}"))),
    }
}

fn parse_start(v: &str) -> Result<StartFrom> {
    match v.trim() {
        "earliest" => Ok(StartFrom::Earliest),
        "latest" => Ok(StartFrom::Latest),
        "committed" => Ok(StartFrom::Committed),
        other => other.parse().map(StartFrom::Offset).map_err(|_| {
            Error::invalid(format!("option start: expected earliest, latest, committed or an offset, got {v:?}"))
        }),
    }
}

impl Options {
    /// No options: every setting at its default.
    pub fn new() -> Options {
        Options::default()
    }

    /// Sets a key after checking that it exists and its value parses.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let Some(&(_, kind, _)) = KEYS.iter().find(|(k, _, _)| *k == key) else {
            let known: Vec<&str> = KEYS.iter().map(|(k, _, _)| *k).collect();
            return Err(Error::invalid(format!("unknown option {key:?}; known options: {}", known.join(", "))));
        };
        match kind {
            Kind::Scope => names::check_scope(key, value)?,
            Kind::Unsigned => {
                parse_u64(key, value)?;
            }
            Kind::Bool => {
                parse_bool(key, value)?;
            }
            Kind::Fsync => {
                if !matches!(value, "batch" | "interval" | "none") {
                    return Err(Error::invalid(format!(
                        "option fsync: expected batch, interval or none, got {value:?}"
                    )));
                }
            }
            Kind::Start => {
                parse_start(value)?;
            }
            Kind::Group => names::check_group(value)?,
            Kind::Text => {}
            Kind::Float => {
                parse_f64(key, value)?;
            }
            // One key for a stream's tier and a publish's: each use
            // checks its own values (stream_config, publish_options).
            Kind::Tier => {
                if !matches!(value.trim(), "durable" | "memory" | "persistent" | "replicated") {
                    return Err(Error::invalid(format!(
                        "option tier: expected memory, persistent or replicated (per publish) or durable or memory (per stream), got {value:?}"
                    )));
                }
            }
        }
        self.values.insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    /// [`Options::set`], chained.
    pub fn with(mut self, key: &str, value: &str) -> Result<Options> {
        self.set(key, value)?;
        Ok(self)
    }

    /// The raw value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Every key set, with its value, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Fails if a key set here does not apply to `ctx`.
    pub fn check_context(&self, ctx: Context) -> Result<()> {
        for key in self.values.keys() {
            let applies = KEYS.iter().any(|(k, _, c)| k == key && *c == ctx);
            if !applies {
                return Err(Error::invalid(format!("option {key:?} does not apply to {}", ctx.name())));
            }
        }
        Ok(())
    }

    /// The value of `key` as an unsigned integer, if set.
    pub fn u64(&self, key: &str) -> Result<Option<u64>> {
        self.get(key).map(|v| parse_u64(key, v)).transpose()
    }

    /// The value of `key` as a number, if set.
    pub fn f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key).map(|v| parse_f64(key, v)).transpose()
    }

    /// The value of `key` as a boolean, if set.
    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key).map(|v| parse_bool(key, v)).transpose()
    }

    /// Stream creation settings.
    pub fn stream_config(&self) -> Result<StreamConfig> {
        self.check_context(Context::Stream)?;
        let partitions = self.u64("partitions")?.unwrap_or(1);
        if partitions == 0 || partitions > 4096 {
            return Err(Error::invalid("option partitions: must be between 1 and 4096"));
        }
        Ok(StreamConfig {
            partitions: partitions as u32,
            max_age_ms: self.u64("max_age_ms")?.unwrap_or(0),
            max_bytes: self.u64("max_bytes")?.unwrap_or(0),
            max_messages: self.u64("max_messages")?.unwrap_or(0),
            tier: match self.get("tier") {
                Some(t) => parse_tier(t)?,
                None => Tier::Durable,
            },
        })
    }

    /// Per-publish settings (fm_publish_with).
    pub fn publish_options(&self) -> Result<PublishOptions> {
        self.check_context(Context::Publish)?;
        let tier = match self.get("tier").map(str::trim) {
            None | Some("persistent") => DeliveryTier::Persistent,
            Some("memory") => DeliveryTier::Memory,
            Some("replicated") => DeliveryTier::Replicated,
            Some(other) => {
                return Err(Error::invalid(format!(
                    "option tier: a publish's tier is memory, persistent or replicated, got {other:?}"
                )))
            }
        };
        Ok(PublishOptions {
            tier,
            require_ack: self.bool("require_ack")?.unwrap_or(false),
            timeout_ms: self.u64("timeout_ms")?,
        })
    }

    /// A stream update: the creation keys that are set, except the tier
    /// (fixed at creation).
    pub fn stream_update(&self) -> Result<crate::model::StreamUpdate> {
        self.check_context(Context::Stream)?;
        if self.get("tier").is_some() {
            return Err(Error::invalid("option tier: a stream's tier is fixed when it is created"));
        }
        let partitions = match self.u64("partitions")? {
            Some(p) if p == 0 || p > 4096 => {
                return Err(Error::invalid("option partitions: must be between 1 and 4096"));
            }
            p => p.map(|p| p as u32),
        };
        Ok(crate::model::StreamUpdate {
            partitions,
            max_age_ms: self.u64("max_age_ms")?,
            max_bytes: self.u64("max_bytes")?,
            max_messages: self.u64("max_messages")?,
        })
    }

    /// Subscription settings: where to start, which group, auto-commit.
    pub fn subscription(&self) -> Result<(SubscribeSpec, bool)> {
        self.check_context(Context::Subscribe)?;
        let group = self.get("group").map(str::to_owned);
        let partition = match self.u64("partition")? {
            Some(p) if p > u32::MAX as u64 => return Err(Error::invalid("option partition: out of range")),
            p => p.map(|p| p as u32),
        };
        let start = match self.get("start") {
            Some(v) => parse_start(v)?,
            None if group.is_some() => StartFrom::Committed,
            None => StartFrom::Latest,
        };
        if start == StartFrom::Committed && group.is_none() {
            return Err(Error::invalid("option start=committed needs option group"));
        }
        let auto_commit = self.bool("auto_commit")?.unwrap_or(group.is_some());
        if auto_commit && group.is_none() {
            return Err(Error::invalid("option auto_commit=true needs option group"));
        }
        Ok((SubscribeSpec { partition, start, group }, auto_commit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_values_fail_when_set() {
        let mut o = Options::new();
        assert!(matches!(o.set("colour", "red"), Err(Error::InvalidArgument(_))));
        assert!(o.set("partitions", "-1").is_err());
        assert!(o.set("auto_commit", "maybe").is_err());
        assert!(o.set("start", "yesterday").is_err());
        assert!(o.set("tenant", "a/b").is_err());
        assert!(o.set("fsync", "sometimes").is_err());
        assert!(o.set("start", "42").is_ok());
    }

    #[test]
    fn keys_must_fit_their_context() {
        let o = Options::new().with("group", "g").unwrap();
        assert!(o.check_context(Context::Connect).is_err());
        let (spec, auto) = o.subscription().unwrap();
        assert_eq!(spec.start, StartFrom::Committed);
        assert!(auto);
        let plain = Options::new().subscription().unwrap();
        assert_eq!(plain.0.start, StartFrom::Latest);
        assert!(!plain.1);
        let bad = Options::new().with("start", "committed").unwrap();
        assert!(bad.subscription().is_err());
    }
}
