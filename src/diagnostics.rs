//! Error reporting that every layer shares: one line with the whole cause chain, for logs and
//! readiness probes. It sits below the actors, the stores and HTTP, which all use it.

use std::error::Error as StdError;

/// `error: cause: cause's cause`, for one-line logs.
pub fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
