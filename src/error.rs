//! The one error type of flowmesh. Each variant maps 1:1 onto a C status code
//! (`FM_ERR_*` in `include/flowmesh.h`), so every layer speaks the same errors.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("disconnected: {0}")]
    Disconnected(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("closed: {0}")]
    Closed(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The stable numeric code of this error (the C `fm_status`).
    pub fn code(&self) -> i32 {
        match self {
            Error::InvalidArgument(_) => 1,
            Error::NotFound(_) => 2,
            Error::Timeout(_) => 3,
            Error::Disconnected(_) => 4,
            Error::Unauthorized(_) => 5,
            Error::Closed(_) => 6,
            Error::AlreadyExists(_) => 7,
            Error::Conflict(_) => 8,
            Error::TooLarge(_) => 9,
            Error::Unavailable(_) => 10,
            Error::Internal(_) => 11,
        }
    }

    /// Rebuilds an error from its code and message (used by the wire protocol).
    pub fn from_code(code: i32, msg: impl Into<String>) -> Error {
        let msg = msg.into();
        match code {
            1 => Error::InvalidArgument(msg),
            2 => Error::NotFound(msg),
            3 => Error::Timeout(msg),
            4 => Error::Disconnected(msg),
            5 => Error::Unauthorized(msg),
            6 => Error::Closed(msg),
            7 => Error::AlreadyExists(msg),
            8 => Error::Conflict(msg),
            9 => Error::TooLarge(msg),
            10 => Error::Unavailable(msg),
            _ => Error::Internal(msg),
        }
    }

    /// The detail message without the category prefix.
    pub fn message(&self) -> &str {
        match self {
            Error::InvalidArgument(m)
            | Error::NotFound(m)
            | Error::Timeout(m)
            | Error::Disconnected(m)
            | Error::Unauthorized(m)
            | Error::Closed(m)
            | Error::AlreadyExists(m)
            | Error::Conflict(m)
            | Error::TooLarge(m)
            | Error::Unavailable(m)
            | Error::Internal(m) => m,
        }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Error {
        Error::InvalidArgument(msg.into())
    }

    pub(crate) fn io(context: &str, err: std::io::Error) -> Error {
        Error::Internal(format!("{context}: {err}"))
    }
}
