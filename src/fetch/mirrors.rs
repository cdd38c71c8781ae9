//! One fetch from start to stored object: the sources are tried in order; each is asked
//! for its size and validator (`HEAD`), the partial download is resumed when it belongs
//! to the same file (same size, and the same URL and validator when no sha256 is known),
//! and the missing parts are downloaded. On an error, a stall or a wrong hash the next
//! source is tried; a source that served bytes hashing to something else is named. Only
//! a file whose whole sha256 matched is moved into `objects/AA/SHA256` (one rename on the
//! same file system) and recorded in `fetched/SHA256.json`.
//!
//! Known gap: when mirrors are switched mid-file and the hash then does not match, every
//! mirror that wrote bytes is named (per-part hashes would pin it to one).

use std::path::PathBuf;

use super::download::{download, SourceError};
use super::partial::{Partial, State};
use super::progress::{Event, RateLimiter};
use super::{io_err, FetchError, Options, Request};

/// What a successful fetch stored.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Fetched {
    pub label: String,
    pub sha256: String,
    pub size: u64,
    /// The object in the store.
    pub object: PathBuf,
    /// The URL that completed the file (`None` when the object was already stored).
    pub url: Option<String>,
    /// True when the object was already in the store (nothing downloaded).
    pub already: bool,
    /// Bytes taken from an earlier, interrupted run.
    pub resumed_bytes: u64,
    /// True when no hash was known and this one was recorded on first use.
    pub trusted_on_first_use: bool,
    /// Sources that served wrong bytes.
    pub bad_mirrors: Vec<String>,
}

/// Fetches `req` into the store under `opts.hq`.
pub fn fetch(
    agent: &ureq::Agent,
    req: &Request,
    opts: &Options,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<Fetched, FetchError> {
    if req.sha256.is_none() && !req.tofu {
        return Err(FetchError::NoHash {
            label: req.label.clone(),
        });
    }
    if req.urls.is_empty() {
        return Err(FetchError::Usage(format!("no source for '{}'", req.label)));
    }
    if let Some(sha) = &req.sha256 {
        let obj = crate::update::history::object_path(&opts.hq, sha);
        if let Ok(m) = std::fs::metadata(&obj) {
            if m.is_file() && req.size.is_none_or(|s| s == m.len()) {
                return Ok(Fetched {
                    label: req.label.clone(),
                    sha256: sha.clone(),
                    size: m.len(),
                    object: obj,
                    url: None,
                    already: true,
                    resumed_bytes: 0,
                    trusted_on_first_use: false,
                    bad_mirrors: Vec::new(),
                });
            }
        }
    }
    let key = match &req.sha256 {
        Some(s) => s.clone(),
        None => format!("url-{}", crate::sign::sha256_hex(req.urls[0].as_bytes())),
    };
    let mut partial = Partial::open(&opts.hq, &key)?;
    let limiter = opts.limit_rate.map(RateLimiter::new);
    let mut failures: Vec<String> = Vec::new();
    let mut bad: Vec<String> = Vec::new();
    let mut mismatch: Option<(Vec<String>, String)> = None;
    for source in &req.urls {
        let url = match resolve_source(agent, source, req, opts) {
            Ok(u) => u,
            Err(reason) => {
                on_event(Event::MirrorFailed {
                    url: source.clone(),
                    reason: reason.clone(),
                });
                failures.push(format!("{source}: {reason}"));
                continue;
            }
        };
        let url = &url;
        match try_source(
            agent,
            url,
            req,
            opts,
            &mut partial,
            limiter.as_ref(),
            on_event,
        ) {
            Ok((sha, resumed)) => {
                if let Some(want) = &req.sha256 {
                    if &sha != want {
                        let served = partial
                            .state
                            .as_ref()
                            .map(|s| s.sources.clone())
                            .unwrap_or_else(|| vec![url.clone()]);
                        on_event(Event::BadBytes {
                            url: served.join(", "),
                            expected: want.clone(),
                            actual: sha.clone(),
                        });
                        failures.push(format!(
                            "{} served wrong bytes (sha256 {sha})",
                            served.join(", ")
                        ));
                        bad.extend(served.iter().cloned());
                        mismatch = Some((served, sha));
                        partial.discard()?;
                        continue;
                    }
                }
                let fetched = store(&opts.hq, &mut partial, &sha, req, url, resumed, bad)?;
                return Ok(fetched);
            }
            Err(reason) => {
                on_event(Event::MirrorFailed {
                    url: url.clone(),
                    reason: reason.clone(),
                });
                failures.push(format!("{url}: {reason}"));
            }
        }
    }
    match mismatch {
        Some((urls, actual)) => Err(FetchError::Mismatch {
            label: req.label.clone(),
            urls,
            expected: req.sha256.clone().unwrap_or_default(),
            actual,
        }),
        None => Err(FetchError::AllFailed {
            label: req.label.clone(),
            failures,
        }),
    }
}

/// An `hf://` mirror resolved to its download URL (its LFS sha256, when known, must be
/// the expected one); other sources as they are.
fn resolve_source(
    agent: &ureq::Agent,
    source: &str,
    req: &Request,
    opts: &Options,
) -> Result<String, String> {
    if !source.starts_with("hf://") {
        return Ok(source.to_owned());
    }
    let name = super::hf::parse(source).map_err(|e| e.to_string())?;
    let r = super::hf::resolve(agent, &name, &opts.hf_endpoint, opts.hf_token.as_deref())
        .map_err(|e| e.to_string())?;
    if let (Some(want), Some(got)) = (&req.sha256, &r.sha256) {
        if want != got {
            return Err(format!(
                "Hugging Face names sha256 {got} at commit {}, expected {want}",
                r.commit
            ));
        }
    }
    Ok(r.url)
}

/// Downloads the whole file from `url` (resuming what matches); returns its sha256 and
/// the bytes taken from an earlier run. `Err`: why this source was given up.
fn try_source(
    agent: &ureq::Agent,
    url: &str,
    req: &Request,
    opts: &Options,
    partial: &mut Partial,
    limiter: Option<&RateLimiter>,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<(String, u64), String> {
    let resp = head(agent, url, opts, on_event)?;
    let h = |n: &str| super::client::header(&resp, n);
    let size = h("content-length")
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or("the server gave no Content-Length")?;
    if let Some(want) = req.size {
        if want != size {
            return Err(format!("it serves {size} bytes, expected {want}"));
        }
    }
    let etag = h("etag");
    let last_modified = h("last-modified");
    let ranges = h("accept-ranges").is_some_and(|v| v.eq_ignore_ascii_case("bytes"));
    let mut fresh = State::new(size, part_size(size, opts), url);
    fresh.etag = etag.clone();
    fresh.last_modified = last_modified.clone();
    // Resume when the partial file is this file.
    let resumable = partial.state.as_ref().is_some_and(|s| {
        s.size == size
            && (req.sha256.is_some()
                || (s.url == url && s.etag == etag && s.last_modified == last_modified))
    });
    let local = |e: FetchError| e.to_string();
    if resumable {
        if let Some(s) = partial.state.as_mut() {
            if s.url != url || s.etag != etag {
                if s.url == url {
                    on_event(Event::Restart {
                        url: url.to_owned(),
                        reason: "the server's ETag changed; the sha256 decides".into(),
                    });
                }
                s.url = url.to_owned();
                s.etag = etag.clone();
                s.last_modified = last_modified.clone();
            }
        }
    } else {
        partial.reset(fresh.clone()).map_err(local)?;
    }
    let mut use_ranges = ranges;
    let resumed = partial.state.as_ref().map(|s| s.total_done()).unwrap_or(0);
    on_event(Event::Source {
        url: url.to_owned(),
        size,
        resumed_bytes: resumed,
    });
    let mut restarts = 0;
    loop {
        if !use_ranges {
            let mut one = State::new(size, size.max(1), url);
            one.etag = etag.clone();
            one.last_modified = last_modified.clone();
            let single = partial.state.as_ref().is_some_and(|s| s.done.len() == 1);
            if !single {
                partial.reset(one).map_err(local)?;
            }
        }
        match download(agent, url, partial, opts, use_ranges, limiter, on_event) {
            Ok(sha) => return Ok((sha, resumed)),
            Err(SourceError::NoRanges) if use_ranges && restarts < 2 => {
                restarts += 1;
                on_event(Event::Restart {
                    url: url.to_owned(),
                    reason: "the server ignores Range; downloading the whole file in one stream"
                        .into(),
                });
                use_ranges = false;
                let mut one = State::new(size, size.max(1), url);
                one.etag = etag.clone();
                one.last_modified = last_modified.clone();
                partial.reset(one).map_err(local)?;
            }
            Err(SourceError::Changed(reason)) => {
                on_event(Event::Restart {
                    url: url.to_owned(),
                    reason: reason.clone(),
                });
                if req.sha256.is_none() {
                    // No hash to decide: never splice two versions.
                    let _ = partial.discard();
                    return Err(format!("{reason}; run again to start over"));
                }
                // Start over on the new version; the sha256 decides whether it is wanted.
                return restart_fresh(agent, url, req, opts, partial, limiter, on_event);
            }
            Err(SourceError::NoRanges) => return Err("the server ignores Range".into()),
            Err(SourceError::Failed(r)) => return Err(r),
            Err(SourceError::Local(e)) => return Err(e.to_string()),
        }
    }
}

/// `HEAD url`, retried with backoff on network errors and statuses other than
/// 401/403/404/410; `Ok` only for a 200.
fn head(
    agent: &ureq::Agent,
    url: &str,
    opts: &Options,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<ureq::http::Response<ureq::Body>, String> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let reason = match super::client::authed(agent.head(url), url, opts).call() {
            Ok(r) if r.status().as_u16() == 200 => return Ok(r),
            Ok(r) => {
                let status = r.status().as_u16();
                if matches!(status, 401 | 403 | 404 | 410) {
                    return Err(format!("HTTP {status}"));
                }
                format!("HTTP {status}")
            }
            Err(e) => format!("request failed: {e}"),
        };
        if attempt >= opts.retries.max(1) {
            return Err(format!("{reason} (gave up after {attempt} attempts)"));
        }
        on_event(Event::Retry {
            url: url.to_owned(),
            attempt,
            reason,
        });
        let pause = opts
            .backoff
            .saturating_mul(1 << (attempt - 1).min(4))
            .min(std::time::Duration::from_secs(8));
        std::thread::sleep(pause);
    }
}

/// After the file changed on the server: forget the partial file and download again.
fn restart_fresh(
    agent: &ureq::Agent,
    url: &str,
    req: &Request,
    opts: &Options,
    partial: &mut Partial,
    limiter: Option<&RateLimiter>,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<(String, u64), String> {
    partial.discard().map_err(|e| e.to_string())?;
    let resp = head(agent, url, opts, on_event)?;
    let h = |n: &str| super::client::header(&resp, n);
    let size = h("content-length")
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or("the server gave no Content-Length")?;
    if req.size.is_some_and(|w| w != size) {
        return Err(format!(
            "the file changed on the server and now has {size} bytes"
        ));
    }
    let mut st = State::new(size, part_size(size, opts), url);
    st.etag = h("etag");
    st.last_modified = h("last-modified");
    partial.reset(st).map_err(|e| e.to_string())?;
    match download(agent, url, partial, opts, true, limiter, on_event) {
        Ok(sha) => Ok((sha, 0)),
        Err(SourceError::Failed(r)) | Err(SourceError::Changed(r)) => Err(r),
        Err(SourceError::NoRanges) => Err("the server ignores Range".into()),
        Err(SourceError::Local(e)) => Err(e.to_string()),
    }
}

/// Parts: the configured size, but at least enough parts to use every connection on a
/// file of a few parts' size (and at least 1 MiB each).
fn part_size(size: u64, opts: &Options) -> u64 {
    let per_conn = size.div_ceil(opts.connections.max(1) as u64);
    opts.part_size.min(per_conn).max(1 << 20)
}

/// Moves the verified file into the store and records where it came from.
fn store(
    hq: &std::path::Path,
    partial: &mut Partial,
    sha: &str,
    req: &Request,
    url: &str,
    resumed: u64,
    bad_mirrors: Vec<String>,
) -> Result<Fetched, FetchError> {
    let size = partial.state.as_ref().map(|s| s.size).unwrap_or(0);
    let obj = crate::update::history::object_path(hq, sha);
    let dir = crate::fsutil::parent_dir(&obj);
    std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    partial
        .file
        .sync_all()
        .map_err(io_err("sync", &partial.data_path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ =
            std::fs::set_permissions(&partial.data_path, std::fs::Permissions::from_mode(0o444));
    }
    std::fs::rename(&partial.data_path, &obj).map_err(io_err("store", &obj))?;
    crate::fsutil::fsync_dir(&dir).map_err(io_err("sync", &dir))?;
    partial.remove_state()?;
    let tofu = req.sha256.is_none();
    let record = serde_json::json!({
        "sha256": sha,
        "size": size,
        "label": req.label,
        "url": url,
        "trusted_on_first_use": tofu,
        "fetched": crate::manifest::now_rfc3339(),
        "origin": req.origin,
    });
    let rdir = hq.join("fetched");
    std::fs::create_dir_all(&rdir).map_err(io_err("create", &rdir))?;
    let rpath = rdir.join(format!("{sha}.json"));
    crate::fsutil::atomic_write(&rpath, format!("{record:#}\n").as_bytes())
        .map_err(io_err("write", &rpath))?;
    Ok(Fetched {
        label: req.label.clone(),
        sha256: sha.to_owned(),
        size,
        object: obj,
        url: Some(url.to_owned()),
        already: false,
        resumed_bytes: resumed,
        trusted_on_first_use: tofu,
        bad_mirrors,
    })
}
