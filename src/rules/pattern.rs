//! Patterns: event topics (`user.*` matches one dot-separated segment,
//! `user.>` one or more trailing segments, as in NATS subjects) and fact keys
//! (`user:*:status`: `*` matches any run of characters, none or more).

/// Whether `topic` matches the topic pattern.
pub fn topic_matches(pattern: &str, topic: &str) -> bool {
    let mut p = pattern.split('.');
    let mut t = topic.split('.');
    loop {
        match (p.next(), t.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Why a topic pattern is malformed, if it is.
pub fn check_topic_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() || pattern.len() > 256 {
        return Err("a topic pattern is 1-256 bytes".into());
    }
    let segs: Vec<&str> = pattern.split('.').collect();
    for (i, s) in segs.iter().enumerate() {
        if s.is_empty() {
            return Err(format!("topic pattern {pattern:?} has an empty segment"));
        }
        if *s == ">" && i + 1 != segs.len() {
            return Err(format!("in topic pattern {pattern:?} `>` may only be the last segment"));
        }
        if s.len() > 1 && (s.contains('*') || s.contains('>')) {
            return Err(format!("in topic pattern {pattern:?} `*` and `>` stand for whole segments"));
        }
    }
    Ok(())
}

/// Why a topic (of an emitted event) is malformed, if it is.
pub fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 256 || topic.contains('\0') {
        return Err("a topic is 1-256 bytes without NUL".into());
    }
    if topic.split('.').any(|s| s.is_empty() || s == "*" || s == ">") {
        return Err(format!("topic {topic:?}: segments are non-empty and not the wildcards * or >"));
    }
    Ok(())
}

/// Whether a fact key matches a pattern where `*` matches any characters.
pub fn key_matches(pattern: &str, key: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == key;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !key.starts_with(first) || key.len() < first.len() + last.len() || !key.ends_with(last) {
        return false;
    }
    let mut rest = &key[first.len()..key.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// The literal start of a key pattern (listing only that prefix).
pub fn key_prefix(pattern: &str) -> &str {
    pattern.split('*').next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_wildcards() {
        assert!(topic_matches("user.*", "user.created"));
        assert!(!topic_matches("user.*", "user.created.eu"));
        assert!(topic_matches("user.>", "user.created.eu"));
        assert!(!topic_matches("user.>", "user"));
        assert!(topic_matches("*.created", "order.created"));
        assert!(topic_matches("a.b", "a.b") && !topic_matches("a.b", "a.c"));
        assert!(check_topic_pattern("a.>.b").is_err() && check_topic_pattern("a..b").is_err());
        assert!(check_topic_pattern("a*").is_err() && check_topic_pattern(">").is_ok());
        assert!(check_topic("a.*").is_err() && check_topic("order.created").is_ok());
    }

    #[test]
    fn key_wildcards() {
        assert!(key_matches("user:*:status", "user:1:status"));
        assert!(key_matches("user:*", "user:1:status"));
        assert!(!key_matches("user:*:status", "user:1:name"));
        assert!(key_matches("*", "anything") && key_matches("a*b*c", "aXbYc") && !key_matches("a*b*c", "acb"));
        assert!(key_matches("exact", "exact") && !key_matches("exact", "exactly"));
        assert_eq!(key_prefix("user:*:status"), "user:");
    }
}
