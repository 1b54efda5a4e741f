//! Small shared records every client must see alike: consumer-group offsets
//! and queue retry policies, one subject per record in one stream that keeps
//! the last message per subject (a KV bucket in all but name).

use async_nats::HeaderMap;
use bytes::Bytes;
use serde_json::json;
use tokio::sync::OnceCell;

use super::api::Js;
use crate::error::Result;

pub const STREAM: &str = "FM_META";
const PREFIX: &str = "fm.meta";

pub struct Meta {
    js: Js,
    ready: OnceCell<()>,
}

impl Meta {
    pub fn new(js: Js) -> Meta {
        Meta { js, ready: OnceCell::new() }
    }

    async fn ensure(&self) -> Result<()> {
        self.ready
            .get_or_try_init(|| async {
                let cfg = json!({
                    "name": STREAM,
                    "subjects": [format!("{PREFIX}.>")],
                    "retention": "limits",
                    "storage": "file",
                    "max_msgs_per_subject": 1,
                    "discard": "old",
                    "allow_rollup_hdrs": true,
                    "metadata": {"flowmesh": "offsets and retry policies"},
                });
                match self.js.create_stream(cfg).await {
                    Ok(_) | Err(crate::Error::AlreadyExists(_)) => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .await
            .map(|_| ())
    }

    /// The subject of the record at `parts`.
    pub fn subject_of(parts: &[String]) -> String {
        Self::subject(&parts.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// `parts` are already-encoded subject tokens.
    fn subject(parts: &[&str]) -> String {
        let mut s = PREFIX.to_owned();
        for p in parts {
            s.push('.');
            s.push_str(p);
        }
        s
    }

    pub async fn put(&self, parts: &[&str], value: Bytes) -> Result<u64> {
        self.ensure().await?;
        Ok(self.js.publish(Self::subject(parts), HeaderMap::new(), value).await?.0)
    }

    /// The records under `parts`: (subject, the tokens after `parts`).
    pub async fn list(&self, parts: &[&str]) -> Result<Vec<(String, Vec<String>)>> {
        self.ensure().await?;
        let base = Self::subject(parts);
        let subjects = self.js.subject_counts(STREAM, &format!("{base}.>")).await?;
        Ok(subjects
            .into_iter()
            .map(|(s, _)| {
                let rest = s[base.len() + 1..].split('.').map(str::to_owned).collect();
                (s, rest)
            })
            .collect())
    }

    /// A record by subject, with its sequence.
    pub async fn get_subject(&self, subject: &str) -> Result<Option<(u64, Bytes)>> {
        self.ensure().await?;
        let m = self.js.get_msg(STREAM, json!({"last_by_subj": subject})).await?;
        Ok(m.map(|m| (m.seq, m.payload)))
    }

    /// Replaces a record if it is still at `seq` (Conflict otherwise).
    pub async fn put_subject_if(&self, subject: &str, value: Bytes, seq: u64) -> Result<u64> {
        self.ensure().await?;
        let mut h = HeaderMap::new();
        h.insert("Nats-Expected-Last-Subject-Sequence", seq.to_string().as_str());
        Ok(self.js.publish(subject.to_owned(), h, value).await?.0)
    }

    /// Removes every record under `parts`.
    pub async fn purge(&self, parts: &[&str]) -> Result<u64> {
        self.ensure().await?;
        self.js.purge(STREAM, &json!({"filter": format!("{}.>", Self::subject(parts))})).await
    }

    /// Removes the record at `parts`.
    pub async fn remove(&self, parts: &[&str]) -> Result<u64> {
        self.ensure().await?;
        self.js.purge(STREAM, &json!({"filter": Self::subject(parts)})).await
    }

    pub async fn get(&self, parts: &[&str]) -> Result<Option<Bytes>> {
        self.ensure().await?;
        let m = self.js.get_msg(STREAM, json!({"last_by_subj": Self::subject(parts)})).await?;
        Ok(m.map(|m| m.payload))
    }
}
