//! Getting files into HQ: `offgrid fetch` downloads a catalog entry, a plain URL or a
//! Hugging Face file into the HQ content store (`objects/AA/SHA256`, SPEC.md §7.1, §14),
//! resumable and verified. Nothing enters the store before its whole-file sha256 matched
//! the expected value (or, with an explicit trusted-on-first-use flag, was recorded as
//! first seen).
//!
//! One concept per file: [`catalog`] (the catalog format and its signature), [`client`]
//! (the HTTP agent: rustls, proxies, extra CA, stall timeout), [`partial`] (the resume
//! state on disk), [`download`] (parallel ranged parts from one URL), [`mirrors`] (trying
//! each source in turn and storing the verified object), [`hf`] (resolving `hf://`
//! through the Hugging Face resolve endpoint and API), [`progress`] (events and the rate
//! limiter).
//!
//! Known gaps: bytes spliced from two mirrors are only attributed to a mirror when one
//! mirror served the whole file (else every mirror that served bytes is named).

pub mod catalog;
pub mod client;
pub mod climb;
pub mod download;
pub mod hf;
pub mod mirrors;
pub mod partial;
pub mod progress;

use std::path::PathBuf;
use std::time::Duration;

pub use mirrors::{fetch, Fetched};
pub use progress::Event;

/// Where the bytes may come from, in preference order, and what they must hash to.
#[derive(Clone, Debug)]
pub struct Request {
    /// A label for messages and the record: `NAME@VERSION`, the URL, or the `hf://` name.
    pub label: String,
    /// Download URLs (`http://`, `https://`) in preference order.
    pub urls: Vec<String>,
    /// The expected sha256 (64 lowercase hex); `None` only with `tofu`.
    pub sha256: Option<String>,
    /// The expected size, when known.
    pub size: Option<u64>,
    /// Accept an unknown hash and record it as trusted on first use.
    pub tofu: bool,
    /// Extra facts recorded with the object (catalog entry, Hugging Face commit).
    pub origin: serde_json::Value,
}

/// How to download.
#[derive(Clone, Debug)]
pub struct Options {
    /// The HQ history dir (the store is `objects/` under it, partial downloads `partial/`).
    pub hq: PathBuf,
    /// Ranged connections in parallel (the most, when `climb`).
    pub connections: usize,
    /// Start on one connection and add more only while they raise the throughput, up to
    /// `connections` ([`climb`]); `false`: `connections` from the start.
    pub climb: bool,
    /// Size of one resumable part.
    pub part_size: u64,
    /// Attempts per part and mirror before the next mirror is tried.
    pub retries: u32,
    /// No bytes for this long: the connection is dropped and retried.
    pub stall: Duration,
    /// First retry delay (doubled each attempt, at most 8 s).
    pub backoff: Duration,
    /// Bytes per second over all connections; `None`: unlimited.
    pub limit_rate: Option<u64>,
    /// Extra CA certificates (PEM) for an internal mirror.
    pub ca_file: Option<PathBuf>,
    /// `Authorization: Bearer` token for Hugging Face (from `HF_TOKEN`).
    pub hf_token: Option<String>,
    /// The Hugging Face endpoint (from `HF_ENDPOINT`, default `https://huggingface.co`).
    pub hf_endpoint: String,
}

impl Options {
    /// Defaults for `hq`: up to 4 connections as they help, 16 MiB parts, 4 attempts,
    /// 30 s stall.
    pub fn new(hq: PathBuf) -> Options {
        Options {
            hq,
            connections: 4,
            climb: true,
            part_size: 16 << 20,
            retries: 4,
            stall: Duration::from_secs(30),
            backoff: Duration::from_millis(500),
            limit_rate: None,
            ca_file: None,
            hf_token: None,
            hf_endpoint: hf::DEFAULT_ENDPOINT.to_owned(),
        }
    }
}

/// Why a fetch did not end in a verified object.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Bad input from the operator (a URL, a hash, a name).
    #[error("{0}")]
    Usage(String),
    /// Another fetch holds the lock of the same object.
    #[error("another offgrid fetch is downloading '{path}'")]
    Busy { path: String },
    /// Not an `hf://OWNER/REPO/FILE[@REVISION]` name.
    #[error("'{name}' is not a Hugging Face name: {why}")]
    BadName { name: String, why: String },
    /// The catalog could not be read or is malformed.
    #[error("catalog '{source_name}': {reason}")]
    Catalog { source_name: String, reason: String },
    /// The catalog's signature did not hold.
    #[error("catalog '{source_name}' is not signed by a trusted key: {reason}")]
    CatalogUntrusted { source_name: String, reason: String },
    /// No catalog entry of this name (and version).
    #[error("catalog '{source_name}' has no entry '{wanted}'")]
    NotInCatalog {
        source_name: String,
        wanted: String,
        known: String,
    },
    /// A Hugging Face name could not be resolved.
    #[error("cannot resolve '{name}' at '{url}': {reason}")]
    Resolve {
        name: String,
        url: String,
        reason: String,
    },
    /// No hash is known and trusted-on-first-use was not allowed.
    #[error("no sha256 is known for '{label}'")]
    NoHash { label: String },
    /// Every source failed; each with its reason.
    #[error("could not fetch '{label}': {}", .failures.join("; "))]
    AllFailed {
        label: String,
        failures: Vec<String>,
    },
    /// The bytes did not hash to the expected value.
    #[error("'{label}' downloaded from {} does not match its sha256 (expected {expected}, got {actual})", .urls.join(", "))]
    Mismatch {
        label: String,
        urls: Vec<String>,
        expected: String,
        actual: String,
    },
    /// A local I/O error.
    #[error("cannot {action} '{path}': {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
}

impl FetchError {
    /// True for a clean "no" (exit 1): untrusted catalog, wrong bytes.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            FetchError::CatalogUntrusted { .. } | FetchError::Mismatch { .. }
        )
    }

    /// What the operator can do about it.
    pub fn help(&self) -> String {
        match self {
            FetchError::Usage(_) => "see 'offgrid fetch --help' and SPEC.md §14".into(),
            FetchError::Busy { .. } => {
                "wait for it to finish, or stop it; this one resumes where it left off".into()
            }
            FetchError::BadName { .. } => {
                "write hf://OWNER/REPO/FILE or hf://OWNER/REPO/FILE@REVISION".into()
            }
            FetchError::Catalog { .. } => {
                "check the catalog against formats/catalog.example.toml".into()
            }
            FetchError::CatalogUntrusted { .. } => "get a catalog signed by HQ's key (minisign, trusted comment as in SPEC.md §14.2), or check --pubkey/--trust".into(),
            FetchError::NotInCatalog { known, .. } => {
                if known.is_empty() {
                    "the catalog lists no entries".into()
                } else {
                    format!("the catalog lists: {known}")
                }
            }
            FetchError::Resolve { .. } => "check the name, the revision, HF_ENDPOINT and HF_TOKEN (gated repositories need a token)".into(),
            FetchError::NoHash { .. } => "pass --sha256 HEX, or --trust-on-first-use to record the hash of what arrives".into(),
            FetchError::AllFailed { .. } => "run the same command again: verified parts are kept and the download resumes".into(),
            FetchError::Mismatch { .. } => "the named mirror served wrong bytes; nothing was stored. Try another mirror or tell its operator".into(),
            FetchError::Io { .. } => "check the HQ folder (--history / OFFGRID_HQ): space and permissions".into(),
        }
    }
}

pub(crate) fn io_err<'a>(
    action: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> FetchError + 'a {
    move |source| FetchError::Io {
        action,
        path: path.display().to_string(),
        source,
    }
}

/// True when `s` is 64 lowercase hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A short printable excerpt of text from outside (for messages).
pub(crate) fn excerpt(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(120)
        .collect();
    if s.chars().count() > 120 {
        format!("{clean}…")
    } else {
        clean
    }
}
