//! Exit codes, and which library errors are a clean "no" rather than a failure.
//!
//! SPEC.md §8 is normative: 0 ok, 1 a clean "no" (verification failed, update refused,
//! model does not fit), 2 usage, I/O or internal error. Each area error type says which
//! of its variants are refusals through a `is_refusal()` method; [`is_refusal`] asks
//! them, walking an error chain.

/// Success.
pub const OK: u8 = 0;
/// Verification failed or the request was refused (a clean "no").
pub const REFUSED: u8 = 1;
/// Usage, I/O or internal error.
pub const ERROR: u8 = 2;

/// True when any error in the chain is a refusal of one of the library's areas.
pub fn is_refusal(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if one_is_refusal(e) {
            return true;
        }
        cur = e.source();
    }
    false
}

fn one_is_refusal(e: &(dyn std::error::Error + 'static)) -> bool {
    // Each area adds one line here for its error type.
    if let Some(e) = e.downcast_ref::<crate::trust::TrustError>() {
        return e.is_refusal();
    }
    if let Some(e) = e.downcast_ref::<crate::verify::VerifyError>() {
        return e.is_refusal();
    }
    if let Some(e) = e.downcast_ref::<crate::update::UpdateError>() {
        return e.is_refusal();
    }
    if let Some(e) = e.downcast_ref::<crate::update::delta::DeltaError>() {
        return e.is_refusal();
    }
    if let Some(e) = e.downcast_ref::<crate::usb::PackError>() {
        return e.is_refusal();
    }
    if let Some(e) = e.downcast_ref::<crate::torrent::TorrentError>() {
        return e.is_refusal();
    }
    if let Some(e) = e.downcast_ref::<crate::fetch::FetchError>() {
        return e.is_refusal();
    }
    if let Some(e) = e.downcast_ref::<crate::pull::PullError>() {
        return e.is_refusal();
    }
    if let Some(e) = e.downcast_ref::<crate::clone::CloneError>() {
        return e.is_refusal();
    }
    if let Some(e) = e.downcast_ref::<crate::trustroot::RootError>() {
        return e.is_refusal();
    }
    if let Some(e) = e.downcast_ref::<crate::site::SiteError>() {
        return e.is_refusal();
    }
    if let Some(e) = e.downcast_ref::<crate::models::ModelError>() {
        return e.is_refusal();
    }
    false
}
