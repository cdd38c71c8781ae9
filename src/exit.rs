//! Exit codes, and which library errors are a clean "no" rather than a failure.
//!
//! SPEC.md §8 is normative: 0 ok, 1 a clean "no" (verification failed, update refused,
//! model does not fit), 2 usage, I/O or internal error. Each library error type says
//! which exit code it means through [`crate::diagnostic::Diagnostic`]; [`is_refusal`]
//! and [`help`] ask each link of an error chain.

use std::error::Error;

use crate::diagnostic;

/// Success.
pub const OK: u8 = 0;
/// Verification failed or the request was refused (a clean "no").
pub const REFUSED: u8 = 1;
/// Usage, I/O or internal error.
pub const ERROR: u8 = 2;

/// True when this error is a refusal of one of the library's areas (the first link only;
/// walk a chain with `chain().any(is_refusal)`).
pub fn is_refusal(err: &(dyn Error + 'static)) -> bool {
    diagnostic::of(err).is_some_and(|d| d.exit_code() == REFUSED)
}

/// The `help:` text of this link of an error chain, when it is a library error with one.
pub fn help(err: &(dyn Error + 'static)) -> Option<String> {
    diagnostic::of(err).and_then(|d| d.help())
}
