//! Resource names: `name` (the client's default tenant and namespace) or
//! `tenant/namespace/name`. Segments are limited to `[A-Za-z0-9._-]` so a
//! name is also a safe relative path on disk.

use crate::error::{Error, Result};

/// Longest tenant, namespace or name segment, in bytes.
pub const MAX_SEGMENT: usize = 128;

fn check_segment(what: &str, seg: &str, full: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if seg.is_empty() || seg.len() > MAX_SEGMENT || seg == "." || seg == ".." || !seg.chars().all(ok_char) {
        return Err(Error::InvalidArgument(format!(
            "invalid {what} in name {full:?}: use 1-{MAX_SEGMENT} characters of [A-Za-z0-9._-], not . or .."
        )));
    }
    Ok(())
}

/// Resolves a user-supplied name into its fully qualified form.
pub fn qualify(name: &str, tenant: &str, namespace: &str) -> Result<String> {
    if !name.contains('/') {
        check_segment("name", name, name)?;
        let mut q = String::with_capacity(tenant.len() + namespace.len() + name.len() + 2);
        for (i, part) in [tenant, namespace, name].into_iter().enumerate() {
            if i > 0 {
                q.push('/');
            }
            q.push_str(part);
        }
        return Ok(q);
    }
    if name.split('/').count() != 3 {
        return Err(Error::InvalidArgument(format!(
            "invalid name {name:?}: expected \"name\" or \"tenant/namespace/name\""
        )));
    }
    check_qualified(name)?;
    Ok(name.to_owned())
}

/// Checks an already qualified name (as an engine or the broker receives it).
pub fn check_qualified(name: &str) -> Result<()> {
    let mut parts = name.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(t), Some(ns), Some(n), None) => {
            check_segment("tenant", t, name)?;
            check_segment("namespace", ns, name)?;
            check_segment("name", n, name)
        }
        _ => Err(Error::InvalidArgument(format!("expected a qualified name tenant/namespace/name, got {name:?}"))),
    }
}

/// Checks a tenant or namespace given as an option.
pub fn check_scope(what: &str, value: &str) -> Result<()> {
    check_segment(what, value, value)
}

/// KV keys: any non-empty UTF-8 up to 1 KiB without NUL.
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 1024 || key.contains('\0') {
        return Err(Error::invalid(format!("invalid key {key:?}: 1-1024 bytes, no NUL")));
    }
    Ok(())
}

/// Consumer group names follow the segment rules.
pub fn check_group(group: &str) -> Result<()> {
    check_segment("group", group, group)
}

/// Checks a listing prefix as an engine or the broker receives it: the
/// start of a qualified name (`tenant/namespace/...`), segments limited to
/// the name alphabet.
pub fn check_prefix(prefix: &str) -> Result<()> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/');
    if prefix.len() > 3 * MAX_SEGMENT + 2 || !prefix.chars().all(ok) || prefix.split('/').count() > 3 {
        return Err(Error::InvalidArgument(format!(
            "invalid prefix {prefix:?}: the start of a name tenant/namespace/name of [A-Za-z0-9._-]"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualifies_short_and_full_names() {
        assert_eq!(qualify("orders", "acme", "prod").unwrap(), "acme/prod/orders");
        assert_eq!(qualify("a/b/c", "x", "y").unwrap(), "a/b/c");
    }

    #[test]
    fn rejects_unsafe_names() {
        for bad in ["", "..", "a/b", "a/b/c/d", "a b", "x/../y", "ü", "a//c"] {
            assert!(qualify(bad, "t", "n").is_err(), "{bad:?} accepted");
        }
        assert!(check_qualified("short").is_err());
        assert!(check_qualified("t/n/s").is_ok());
    }
}
