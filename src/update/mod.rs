//! Updates: HQ release history, update packs, deltas, install, apply, rollback.
//!
//! STUB: to be written (owner: update helper; `delta` is the delta helper's).

pub mod delta;

/// Why an update operation failed or was refused.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("update refused: {0}")]
    Refused(String),
}

impl UpdateError {
    /// True for a clean "no" (exit 1) rather than an error.
    pub fn is_refusal(&self) -> bool {
        matches!(self, UpdateError::Refused(_))
    }
}
