//! Store errors: a machine-readable code (`VALIDATION_ERROR`, `NOT_FOUND`,
//! ...), a message, and for validation the failed fields, so every language
//! reports the same thing.

use serde_json::{json, Value};

use crate::error::Error;

#[derive(Debug, Clone, PartialEq)]
/// A failure of the store, rules or procedures, with the code their JSON errors carry.
pub struct StoreError {
    /// Code such as `NOT_FOUND` or `VALIDATION_ERROR` (docs/STORE.md).
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// For `VALIDATION_ERROR`: one `{field, message}` per failed field.
    pub details: Option<Value>,
}

/// The result of store, rules and procedures calls.
pub type StoreResult<T> = std::result::Result<T, StoreError>;

impl StoreError {
    /// An error with `code` and no details.
    pub fn new(code: &'static str, message: impl Into<String>) -> StoreError {
        StoreError { code, message: message.into(), details: None }
    }

    /// A record breaking its bucket's schema, one detail per failed field.
    pub fn validation(message: impl Into<String>, details: Vec<Value>) -> StoreError {
        StoreError { code: "VALIDATION_ERROR", message: message.into(), details: Some(Value::Array(details)) }
    }

    /// A malformed request (`INVALID_ARGUMENT`).
    pub fn invalid(message: impl Into<String>) -> StoreError {
        StoreError::new("INVALID_ARGUMENT", message)
    }

    /// Something that does not exist (`NOT_FOUND`).
    pub fn not_found(message: impl Into<String>) -> StoreError {
        StoreError::new("NOT_FOUND", message)
    }

    /// A version check failed or a change kept racing (`CONFLICT`).
    pub fn conflict(message: impl Into<String>) -> StoreError {
        StoreError::new("CONFLICT", message)
    }

    /// The error as JSON: `{"code", "message", "details"?}`.
    pub fn to_json(&self) -> Value {
        let mut v = json!({ "code": self.code, "message": self.message });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }

    /// The matching core error (and so C status) of this error.
    pub fn to_error(&self) -> Error {
        let msg = self.message.clone();
        match self.code {
            "NOT_FOUND" | "BUCKET_NOT_DEFINED" | "QUERY_NOT_DEFINED" => Error::NotFound(msg),
            "CONFLICT" => Error::Conflict(msg),
            "ALREADY_EXISTS" => Error::AlreadyExists(msg),
            "TIMEOUT" => Error::Timeout(msg),
            "DISCONNECTED" => Error::Disconnected(msg),
            "UNAUTHORIZED" => Error::Unauthorized(msg),
            "CLOSED" => Error::Closed(msg),
            "TOO_LARGE" => Error::TooLarge(msg),
            "UNAVAILABLE" => Error::Unavailable(msg),
            "INTERNAL" => Error::Internal(msg),
            _ => Error::InvalidArgument(msg),
        }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(d) = &self.details {
            write!(f, " {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for StoreError {}

impl From<Error> for StoreError {
    fn from(e: Error) -> StoreError {
        let code = match &e {
            Error::InvalidArgument(_) => "INVALID_ARGUMENT",
            Error::NotFound(_) => "NOT_FOUND",
            Error::Timeout(_) => "TIMEOUT",
            Error::Disconnected(_) => "DISCONNECTED",
            Error::Unauthorized(_) => "UNAUTHORIZED",
            Error::Closed(_) => "CLOSED",
            Error::AlreadyExists(_) => "ALREADY_EXISTS",
            Error::Conflict(_) => "CONFLICT",
            Error::TooLarge(_) => "TOO_LARGE",
            Error::Unavailable(_) => "UNAVAILABLE",
            Error::Internal(_) => "INTERNAL",
        };
        StoreError::new(code, e.message())
    }
}
