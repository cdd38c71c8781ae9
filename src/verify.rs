//! Verification of a USB tree: signatures over the manifest against a trust policy
//! first, then every file's size and chunk hashes in parallel; missing files fail,
//! extra files are reported. Produces a structured report the CLI prints as text or JSON.
//!
//! STUB: to be written (owner: verify/hash helper).

/// Why verification could not complete or did not pass.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("verification failed")]
    Failed,
}

impl VerifyError {
    /// True for a clean "no" (exit 1) rather than an error.
    pub fn is_refusal(&self) -> bool {
        matches!(self, VerifyError::Failed)
    }
}
