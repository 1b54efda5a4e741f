//! Subjects: dotted names such as `orders.created` and the NATS-style
//! patterns subscribers use (`events.*`, `events.>`).
//!
//! The rule: the first token of a subject (up to the first `.`) names the
//! stream; the whole subject travels with the message in the header
//! [`SUBJECT_HEADER`], so a subscriber sees it. A name without a dot is a
//! stream name, exactly as before, and its messages' subject is that name.
//! Names whose first token starts with `_` belong to the library (events)
//! and are taken whole. In a qualified name (`tenant/namespace/subject`)
//! the rule applies to the last segment.

use crate::error::{Error, Result};
use crate::model::Message;

/// The header that carries a message's subject when it is not its stream's name.
pub const SUBJECT_HEADER: &str = "fm-subject";

/// Splits `name` into the stream name (qualified like `name` was) and the
/// subject when it has more than one token.
fn split(name: &str) -> (&str, &str, Option<&str>) {
    let (scope, last) = match name.rfind('/') {
        Some(i) => (&name[..=i], &name[i + 1..]),
        None => ("", name),
    };
    match last.find('.') {
        Some(i) if !last.starts_with('_') => (scope, &last[..i], Some(last)),
        _ => (scope, last, None),
    }
}

fn check_tokens(subject: &str, wildcards: bool) -> Result<()> {
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-');
        let wild = *t == "*" || *t == ">";
        if wild && !wildcards {
            return Err(Error::invalid(format!(
                "invalid subject {subject:?}: wildcards (* and >) are for subscriptions, not publishes"
            )));
        }
        if wild && i == 0 {
            return Err(Error::invalid(format!(
                "invalid subject pattern {subject:?}: the first token names the stream and can not be a wildcard"
            )));
        }
        if *t == ">" && i + 1 != tokens.len() {
            return Err(Error::invalid(format!("invalid subject pattern {subject:?}: > must be the last token")));
        }
        if !wild && (t.is_empty() || !t.chars().all(ok)) {
            return Err(Error::invalid(format!(
                "invalid subject {subject:?}: tokens are 1+ characters of [A-Za-z0-9_-] separated by single dots{}",
                if wildcards { ", or * or > alone" } else { "" }
            )));
        }
    }
    Ok(())
}

/// Where a publish to `name` goes: the stream and, for a dotted name, the
/// subject to carry in [`SUBJECT_HEADER`].
pub fn for_publish(name: &str) -> Result<(String, Option<String>)> {
    let (scope, stream, subject) = split(name);
    if let Some(s) = subject {
        check_tokens(s, false)?;
    }
    Ok((format!("{scope}{stream}"), subject.map(str::to_owned)))
}

/// What a subscription to `name` reads: the stream and, for a dotted name
/// or pattern, the filter its messages must pass.
pub fn for_subscribe(name: &str) -> Result<(String, Option<Pattern>)> {
    let (scope, stream, subject) = split(name);
    if stream.contains('*') || stream.contains('>') {
        return Err(Error::invalid(format!(
            "invalid subject pattern {name:?}: the first token names the stream and can not be a wildcard"
        )));
    }
    let Some(s) = subject else {
        return Ok((name.to_owned(), None));
    };
    check_tokens(s, true)?;
    Ok((format!("{scope}{stream}"), Some(Pattern { tokens: s.split('.').map(str::to_owned).collect() })))
}

/// A subscription's subject filter: tokens, `*` (any one token), `>` (one
/// or more tokens, last only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    tokens: Vec<String>,
}

impl Pattern {
    /// Whether `subject` matches the pattern.
    pub fn matches(&self, subject: &str) -> bool {
        let mut it = subject.split('.');
        for t in &self.tokens {
            match (t.as_str(), it.next()) {
                (">", Some(_)) => return true,
                (_, None) => return false,
                ("*", Some(_)) => {}
                (want, Some(got)) if want == got => {}
                _ => return false,
            }
        }
        it.next().is_none()
    }
}

/// The subject of a message: its [`SUBJECT_HEADER`], else its stream's
/// (unqualified) name.
pub fn of(msg: &Message) -> &str {
    msg.headers
        .iter()
        .find(|(k, _)| k == SUBJECT_HEADER)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| msg.stream.rsplit('/').next().unwrap_or(&msg.stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(p: &str) -> Pattern {
        for_subscribe(p).unwrap().1.unwrap()
    }

    #[test]
    fn the_first_token_names_the_stream() {
        assert_eq!(for_publish("orders").unwrap(), ("orders".into(), None));
        assert_eq!(for_publish("orders.created").unwrap(), ("orders".into(), Some("orders.created".into())));
        assert_eq!(
            for_publish("a/b/orders.eu.created").unwrap(),
            ("a/b/orders".into(), Some("orders.eu.created".into()))
        );
        assert_eq!(for_publish("_events.discarded").unwrap(), ("_events.discarded".into(), None));
        assert!(for_publish("orders.*").is_err());
        assert!(for_publish("orders..x").is_err());
        assert_eq!(for_subscribe("events").unwrap(), ("events".into(), None));
        assert!(for_subscribe("*.x").is_err());
        assert!(for_subscribe(">").is_err());
        assert!(for_subscribe("events.>.x").is_err());
    }

    #[test]
    fn wildcards_match_like_nats() {
        assert!(pattern("events.*").matches("events.click"));
        assert!(!pattern("events.*").matches("events.user.login"));
        assert!(!pattern("events.*").matches("events"));
        assert!(pattern("events.>").matches("events.user.login"));
        assert!(pattern("events.>").matches("events.click"));
        assert!(!pattern("events.>").matches("events"));
        assert!(pattern("events.*.login").matches("events.user.login"));
        assert!(!pattern("events.*.login").matches("events.user.logout"));
        assert!(pattern("orders.created").matches("orders.created"));
        assert!(!pattern("orders.created").matches("orders.created.eu"));
    }
}
