//! The one error type of flowmesh and the status codes of the C ABI. Each
//! variant maps 1:1 onto a [`Status`] (`FM_ERR_*` in `include/flowmesh.h`),
//! so every layer speaks the same errors.

use thiserror::Error;

// The one definition of the status codes: the header's constants, the names
// `fm_status_str` returns (the variant names) and `Error::code` come from it.
/// The status codes: every fallible function returns one as an `fm_status`;
/// `fm_status_str` names it. Values are fixed once released.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum Status {
    /// Success.
    FM_OK = 0,
    /// A NULL pointer, invalid UTF-8, a bad name, an unknown option or a bad value.
    FM_ERR_INVALID_ARGUMENT = 1,
    /// The stream, partition, job, key or committed offset does not exist.
    FM_ERR_NOT_FOUND = 2,
    /// The operation did not finish in time.
    FM_ERR_TIMEOUT = 3,
    /// The connection to the broker was lost during the call.
    FM_ERR_DISCONNECTED = 4,
    /// Missing or wrong credentials, or not allowed.
    FM_ERR_UNAUTHORIZED = 5,
    /// The client (or the handle) was closed.
    FM_ERR_CLOSED = 6,
    /// The resource exists with a different configuration.
    FM_ERR_ALREADY_EXISTS = 7,
    /// A compare-and-set saw another revision, or a job is in the wrong state.
    FM_ERR_CONFLICT = 8,
    /// A payload exceeds max_payload_bytes.
    FM_ERR_TOO_LARGE = 9,
    /// The engine or broker cannot serve the call now.
    FM_ERR_UNAVAILABLE = 10,
    /// A bug or an I/O failure inside the library (see fm_last_error).
    FM_ERR_INTERNAL = 11,
}

impl Status {
    /// Every status in code order (`all()[code]` has that code).
    pub const fn all() -> [Status; 12] {
        [
            Status::FM_OK,
            Status::FM_ERR_INVALID_ARGUMENT,
            Status::FM_ERR_NOT_FOUND,
            Status::FM_ERR_TIMEOUT,
            Status::FM_ERR_DISCONNECTED,
            Status::FM_ERR_UNAUTHORIZED,
            Status::FM_ERR_CLOSED,
            Status::FM_ERR_ALREADY_EXISTS,
            Status::FM_ERR_CONFLICT,
            Status::FM_ERR_TOO_LARGE,
            Status::FM_ERR_UNAVAILABLE,
            Status::FM_ERR_INTERNAL,
        ]
    }

    /// The numeric code (the C `fm_status` value).
    pub const fn code(self) -> i32 {
        self as i32
    }

    /// The status with this code, if there is one.
    pub fn from_code(code: i32) -> Option<Status> {
        usize::try_from(code).ok().and_then(|i| Status::all().get(i).copied())
    }

    /// The C name of the status, e.g. "FM_ERR_NOT_FOUND".
    pub fn name(self) -> String {
        format!("{self:?}")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
/// Every failure of flowmesh, by kind; each kind is one status code of the C ABI (see [`Status`]).
pub enum Error {
    #[error("invalid argument: {0}")]
    /// A malformed name, option, argument or request.
    InvalidArgument(String),
    #[error("not found: {0}")]
    /// The stream, queue, bucket, key, job or group does not exist.
    NotFound(String),
    #[error("timed out: {0}")]
    /// The deadline passed before the engine answered.
    Timeout(String),
    #[error("disconnected: {0}")]
    /// The link to the broker is down (the call may not have reached it).
    Disconnected(String),
    #[error("unauthorized: {0}")]
    /// The token or session does not allow the call.
    Unauthorized(String),
    #[error("closed: {0}")]
    /// The client, subscription or resource was closed.
    Closed(String),
    #[error("already exists: {0}")]
    /// Creation of something that exists with other settings.
    AlreadyExists(String),
    #[error("conflict: {0}")]
    /// A compare-and-set or transaction check failed, or a concurrent change won.
    Conflict(String),
    #[error("too large: {0}")]
    /// A record or request over its size limit.
    TooLarge(String),
    #[error("unavailable: {0}")]
    /// The engine can not serve this now (overloaded, breaker open) or at all (not supported).
    Unavailable(String),
    #[error("internal error: {0}")]
    /// A bug or an unexpected state; the message says where.
    Internal(String),
}

/// The result of every fallible flowmesh call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The status of this error.
    pub fn status(&self) -> Status {
        match self {
            Error::InvalidArgument(_) => Status::FM_ERR_INVALID_ARGUMENT,
            Error::NotFound(_) => Status::FM_ERR_NOT_FOUND,
            Error::Timeout(_) => Status::FM_ERR_TIMEOUT,
            Error::Disconnected(_) => Status::FM_ERR_DISCONNECTED,
            Error::Unauthorized(_) => Status::FM_ERR_UNAUTHORIZED,
            Error::Closed(_) => Status::FM_ERR_CLOSED,
            Error::AlreadyExists(_) => Status::FM_ERR_ALREADY_EXISTS,
            Error::Conflict(_) => Status::FM_ERR_CONFLICT,
            Error::TooLarge(_) => Status::FM_ERR_TOO_LARGE,
            Error::Unavailable(_) => Status::FM_ERR_UNAVAILABLE,
            Error::Internal(_) => Status::FM_ERR_INTERNAL,
        }
    }

    /// The stable numeric code of this error (the C `fm_status`).
    pub fn code(&self) -> i32 {
        self.status().code()
    }

    /// Rebuilds an error from its code and message (used by the wire
    /// protocol); FM_OK or an unknown code gives Internal.
    pub fn from_code(code: i32, msg: impl Into<String>) -> Error {
        let msg = msg.into();
        match Status::from_code(code) {
            Some(Status::FM_ERR_INVALID_ARGUMENT) => Error::InvalidArgument(msg),
            Some(Status::FM_ERR_NOT_FOUND) => Error::NotFound(msg),
            Some(Status::FM_ERR_TIMEOUT) => Error::Timeout(msg),
            Some(Status::FM_ERR_DISCONNECTED) => Error::Disconnected(msg),
            Some(Status::FM_ERR_UNAUTHORIZED) => Error::Unauthorized(msg),
            Some(Status::FM_ERR_CLOSED) => Error::Closed(msg),
            Some(Status::FM_ERR_ALREADY_EXISTS) => Error::AlreadyExists(msg),
            Some(Status::FM_ERR_CONFLICT) => Error::Conflict(msg),
            Some(Status::FM_ERR_TOO_LARGE) => Error::TooLarge(msg),
            Some(Status::FM_ERR_UNAVAILABLE) => Error::Unavailable(msg),
            Some(Status::FM_ERR_INTERNAL | Status::FM_OK) | None => Error::Internal(msg),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_dense_and_round_trip() {
        for (i, s) in Status::all().iter().enumerate() {
            assert_eq!(s.code(), i as i32, "{s:?}");
            assert_eq!(Status::from_code(i as i32), Some(*s));
        }
        assert_eq!(Status::from_code(Status::all().len() as i32), None);
        assert_eq!(Status::from_code(-1), None);
        for s in &Status::all()[1..] {
            let e = Error::from_code(s.code(), "m");
            assert_eq!((e.status(), e.message()), (*s, "m"));
        }
    }
}
