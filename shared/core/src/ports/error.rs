//! [`PortError`], the one error every port returns, and its [`Cause`].

use std::sync::Arc;

use crate::format::BadRow;

/// The error of a port call, classified the ways callers act on: is it worth retrying, and
/// for the few callers that make something idempotent, did it exist already or did a
/// condition they set fail. Adapters classify once, where the answer is read (the Google
/// adapters in `conveyor_gcp::rest::classify`); callers match the variant, never the text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PortError {
    /// Retrying later may succeed (backend down, quota, timeout, a refused token, a port this
    /// process did not wire).
    #[error("transient: {0}")]
    Transient(Cause),
    /// Retrying cannot succeed (bad data, refused request).
    #[error("{0}")]
    Permanent(Cause),
    /// The rows of a load were bad; nothing was loaded.
    #[error("{} bad row(s); first: row {}: {}", .0.len(), .0.first().map_or(0, |b| b.row), .0.first().map_or("", |b| b.reason.as_str()))]
    BadRows(Vec<BadRow>),
    /// The thing asked for does not exist.
    #[error("not found: {0}")]
    NotFound(Cause),
    /// What the call creates exists already (HTTP 409, Google's `ALREADY_EXISTS`): for a
    /// deterministic id, the earlier delivery's, to adopt.
    #[error("conflict: {0}")]
    Conflict(Cause),
    /// A condition the call set does not hold (HTTP 412, Google's `FAILED_PRECONDITION`): the
    /// generation asked for is not the live one, the resource is not in a state that allows it.
    #[error("precondition failed: {0}")]
    Precondition(Cause),
}

impl PortError {
    /// A failure that may pass.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient(Cause::new(message))
    }

    /// A failure that will not pass.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent(Cause::new(message))
    }

    /// What was asked for does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(Cause::new(message))
    }

    /// What is created exists already.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict(Cause::new(message))
    }

    /// A condition set on the call does not hold.
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::Precondition(Cause::new(message))
    }

    /// `Ok` for a successful answer `status` of `what` (a webhook: an HTTP endpoint whose body
    /// says nothing more), else its class: 5xx, 429 and 408 may pass, any other status will
    /// not.
    ///
    /// # Errors
    /// `what answered STATUS`, transient or permanent as above.
    pub fn check_status(status: http::StatusCode, what: &str) -> Result<(), Self> {
        if status.is_success() {
            return Ok(());
        }
        let message = format!("{what} answered {status}");
        if status.is_server_error()
            || status == http::StatusCode::TOO_MANY_REQUESTS
            || status == http::StatusCode::REQUEST_TIMEOUT
        {
            Err(Self::transient(message))
        } else {
            Err(Self::permanent(message))
        }
    }

    /// Whether a retry may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }

    /// This error keeping `source`, the typed error it was classified from (an HTTP answer's
    /// status and reason), for callers that need more than the class. Its text is not added:
    /// the message already says it.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        if let Some(cause) = self.cause_mut() {
            cause.source = Some(Arc::new(source));
        }
        self
    }

    /// The typed error this one was classified from, when the adapter kept it (see
    /// [`Self::with_source`]); downcast it to the adapter's error type.
    pub fn origin(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            Self::Transient(c)
            | Self::Permanent(c)
            | Self::NotFound(c)
            | Self::Conflict(c)
            | Self::Precondition(c) => c.source.as_deref(),
            Self::BadRows(_) => None,
        }
    }

    fn cause_mut(&mut self) -> Option<&mut Cause> {
        match self {
            Self::Transient(c)
            | Self::Permanent(c)
            | Self::NotFound(c)
            | Self::Conflict(c)
            | Self::Precondition(c) => Some(c),
            Self::BadRows(_) => None,
        }
    }
}

/// The cause of a [`PortError`]: a message for people (it reads as text: `&*cause` is the
/// message), and, when the adapter kept it, the typed error it was classified from.
///
/// The source is not reported by [`std::error::Error::source`]: the message says what it
/// says, and an error chain printed whole (`{:#}`) would say it twice.
#[derive(Clone)]
pub struct Cause {
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Cause {
    /// A cause with `message` and no source.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The typed error it came from, if kept.
    pub fn source(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl std::ops::Deref for Cause {
    type Target = str;

    fn deref(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::fmt::Debug for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(s) => write!(f, "{:?} (from {s:?})", self.message),
            None => write!(f, "{:?}", self.message),
        }
    }
}

impl From<String> for Cause {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

impl From<Cause> for String {
    fn from(c: Cause) -> Self {
        c.message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_answer_may_pass_when_the_server_failed_or_asked_to_wait() {
        let check = |code| {
            let status = http::StatusCode::from_u16(code).expect("status");
            PortError::check_status(status, "the webhook")
        };
        assert!(check(204).is_ok());
        for code in [500, 502, 503, 429, 408] {
            let e = check(code).expect_err("failed");
            assert!(e.is_transient(), "{code}");
            assert!(e.to_string().contains("the webhook answered"), "{e}");
        }
        for code in [400, 401, 403, 404, 410] {
            assert!(
                matches!(check(code), Err(PortError::Permanent(_))),
                "{code}"
            );
        }
    }
}
