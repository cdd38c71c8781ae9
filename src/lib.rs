//! offgrid: signed, versioned bundles that carry software and LLM models to places the
//! internet does not reach.
//!
//! The library is the whole product; `src/main.rs` only parses arguments, calls in here
//! and maps errors to exit codes. The library never prints and never exits.
//! See ARCHITECTURE.md for the code map and SPEC.md for the normative format.

pub mod clone;
pub mod diagnostic;
pub mod discover;
pub mod excerpt;
pub mod exit;
pub mod fetch;
pub mod fsutil;
pub mod gguf;
pub mod hash;
pub mod inspect;
pub mod keys;
pub mod lockfile;
pub mod manifest;
pub mod media;
pub mod paths;
pub mod platform;
pub mod pull;
pub mod serve;
pub mod sign;
pub mod signed;
pub mod site;
pub mod toml_guard;
pub mod torrent;
pub mod trust;
pub mod trustroot;
pub mod units;
pub mod update;
pub mod usb;
pub mod verify;
pub mod version;
pub mod volume;

#[cfg(feature = "llama")]
pub mod launcher;
pub mod models;

/// Progress callback used by long operations: `(bytes_done, bytes_total)`.
///
/// The library reports progress through this; the CLI draws bars (or not).
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// A progress callback that does nothing.
pub fn no_progress(_: u64, _: u64) {}
