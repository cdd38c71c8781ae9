//! Streaming reader of an update pack: one pass over the tar, signatures checked before a
//! single payload byte is read, every payload hashed as it streams and compared with the
//! signed pack manifest.
//!
//! The tar is hostile input. Entries must come in the exact order and with the exact
//! names of SPEC.md §7.1; anything else (absolute paths, `..`, links, devices, folders,
//! duplicate or unexpected names, sizes that disagree with the signed manifest, data after
//! the last payload) refuses the pack. Nothing is unpacked by the tar library: owners,
//! modes and xattrs in the tar are never applied. Every read is bounded before allocating.
//! [`read_head`] reads the head (entries 0–4) for this reader and for a pack's parts
//! ([`crate::update::parts`], SPEC.md §7.18), which this reader refuses to read as a whole.
//! A payload's bytes reach the caller before its hash is known, so that it is read once:
//! the caller stages what it decodes out of sight, bounded by the declared size, and
//! throws it away when the hash does not match (SPEC.md §7.6 says why that is safe).

use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use crate::hash::{read_bounded, sha256_hex, HashReader};
use crate::manifest::Manifest;
use crate::trust::{SignatureReport, TrustError, TrustPolicy};
use crate::update::pack::{
    PackManifest, Payload, BUNDLE_MANIFEST, MAX_PACK_MANIFEST, MAX_SIG, MAX_SIGS, PACK_MANIFEST,
    PACK_ROOTS, PACK_SIGS, RELEASE_SIGS,
};
use crate::update::{pack_sign, UpdateError};

/// Everything before the payloads, checked.
#[derive(Debug, Clone)]
pub struct PackHead {
    pub pack: PackManifest,
    pub pack_bytes: Vec<u8>,
    pub pack_sigs: Vec<(String, String)>,
    pub pack_reports: Vec<SignatureReport>,
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub release_sigs: Vec<(String, String)>,
    pub release_reports: Vec<SignatureReport>,
    /// Size of the pack file.
    pub pack_size: u64,
}

/// A reader that remembers whether the underlying pack failed to read (truncation, I/O),
/// so a failure while a payload is consumed can be blamed on the pack or on the caller.
pub struct Tracked<R> {
    inner: R,
    pub failed: Option<String>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Err(e) => {
                self.failed = Some(e.to_string());
                Err(e)
            }
            ok => ok,
        }
    }
}

/// Counts bytes read from the file, for progress.
struct Counting<'a, R> {
    inner: R,
    done: u64,
    total: u64,
    progress: crate::Progress<'a>,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        (self.progress)(self.done, self.total);
        Ok(n)
    }
}

pub(crate) fn damaged(pack: &Path, reason: impl Into<String>) -> UpdateError {
    UpdateError::PackDamaged {
        pack: pack.display().to_string(),
        reason: reason.into(),
    }
}

/// Checks one tar entry's header: a regular file with a plain relative name seen once.
pub(crate) fn entry_name<R: Read>(
    pack: &Path,
    e: &tar::Entry<'_, R>,
    seen: &mut std::collections::BTreeSet<String>,
) -> Result<String, UpdateError> {
    let raw = e.path_bytes();
    let name = String::from_utf8(raw.to_vec())
        .map_err(|_| damaged(pack, "a tar entry name is not UTF-8"))?;
    if name.starts_with('/') || name.starts_with('\\') || name.as_bytes().get(1) == Some(&b':') {
        return Err(damaged(
            pack,
            format!("tar entry '{name}' has an absolute path"),
        ));
    }
    if name.split(['/', '\\']).any(|c| c == "..") {
        return Err(damaged(pack, format!("tar entry '{name}' contains '..'")));
    }
    use tar::EntryType as T;
    let t = e.header().entry_type();
    let what = match t {
        T::Regular => None,
        T::Link | T::Symlink => Some("is a link"),
        T::Char | T::Block | T::Fifo => Some("is a device file"),
        T::Directory => Some("is a folder"),
        _ => Some("has an unsupported tar entry type"),
    };
    if let Some(w) = what {
        return Err(damaged(
            pack,
            format!("tar entry '{name}' {w}; packs hold only regular files"),
        ));
    }
    if !seen.insert(name.clone()) {
        return Err(damaged(pack, format!("tar entry '{name}' appears twice")));
    }
    Ok(name)
}

pub(crate) fn read_small<R: Read>(
    pack: &Path,
    e: &mut tar::Entry<'_, R>,
    name: &str,
    max: u64,
) -> Result<Vec<u8>, UpdateError> {
    if e.size() > max {
        return Err(damaged(
            pack,
            format!(
                "tar entry '{name}' is {} bytes, more than the {max} allowed",
                e.size()
            ),
        ));
    }
    read_bounded(e, max)
        .map_err(|err| {
            damaged(
                pack,
                format!("cannot read '{name}': {err} (the pack is truncated)"),
            )
        })?
        .ok_or_else(|| {
            damaged(
                pack,
                format!("tar entry '{name}' is larger than {max} bytes"),
            )
        })
}

pub(crate) fn next_entry<'a, R: Read>(
    entries: &mut tar::Entries<'a, R>,
    pack: &Path,
    what: &str,
) -> Result<Option<tar::Entry<'a, R>>, UpdateError> {
    match entries.next() {
        None => Ok(None),
        Some(Ok(e)) => Ok(Some(e)),
        Some(Err(e)) => Err(damaged(
            pack,
            format!("cannot read the tar entry for {what}: {e} (the pack is truncated or damaged)"),
        )),
    }
}

fn sig_name<'n>(name: &'n str, dir: &str) -> Option<&'n str> {
    let rest = name.strip_prefix(dir)?.strip_prefix('/')?;
    crate::update::history::check_sig_name(rest).ok()?;
    Some(rest)
}

/// True when `e` is a `roots/NAME` entry of the chain at a pack's head (name and size
/// checked, at most [`crate::trustroot::MAX_ROOTS`] × 65 entries); false for any other.
fn root_entry<R: Read>(
    pack: &Path,
    e: &tar::Entry<'_, R>,
    name: &str,
    count: &mut usize,
) -> Result<bool, UpdateError> {
    let Some(file) = name
        .strip_prefix(PACK_ROOTS)
        .and_then(|r| r.strip_prefix('/'))
    else {
        return Ok(false);
    };
    if !crate::trustroot::Source::check_name(file) {
        return Err(damaged(
            pack,
            format!("tar entry '{name}' is not a trust root file (roots/N.root.toml or roots/N.KEYID.minisig)"),
        ));
    }
    *count += 1;
    if *count > crate::trustroot::MAX_ROOTS * (1 + MAX_SIGS) {
        return Err(damaged(pack, "the pack carries too many trust root files"));
    }
    let max = crate::trustroot::MAX_ROOT_BYTES.max(MAX_SIG);
    if e.size() > max {
        return Err(damaged(
            pack,
            format!(
                "tar entry '{name}' is {} bytes, more than the {max} allowed",
                e.size()
            ),
        ));
    }
    Ok(true)
}

/// The chain of trust roots at the head of the pack at `path` (SPEC.md §7.2 entry 0), read
/// before anything else so the site can apply it before the pack's signatures are
/// checked: `None` when the pack carries none. Only the leading `roots/` entries are read
/// (each bounded, at most [`crate::trustroot::MAX_CHAIN_BYTES`] together); they are
/// trusted only through their own signatures (SPEC.md §19.3).
pub fn read_roots(path: &Path) -> Result<Option<crate::trustroot::Source>, UpdateError> {
    // A path that is missing or not a regular file (a folder, a FIFO), or a file that is
    // not a tar at all, is left to [`read_pack`], which names it as the wrong file (a
    // usage error) with its help.
    let Ok(f) = crate::hash::open_regular(path) else {
        return Ok(None);
    };
    let mut ar = tar::Archive::new(BufReader::new(f));
    // A file that is not a tar at all is left to [`read_pack`], which names it as the
    // wrong file (a usage error).
    let Ok(mut entries) = ar.entries() else {
        return Ok(None);
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut files = Vec::new();
    let mut count = 0usize;
    let mut total = 0u64;
    loop {
        let mut e = match entries.next() {
            None => break,
            Some(Ok(e)) => e,
            Some(Err(_)) if files.is_empty() => return Ok(None),
            Some(Err(e)) => {
                return Err(damaged(
                    path,
                    format!("cannot read the tar entry for a trust root: {e} (the pack is truncated or damaged)"),
                ))
            }
        };
        let name = entry_name(path, &e, &mut seen)?;
        if !root_entry(path, &e, &name, &mut count)? {
            break;
        }
        total += e.size();
        if total > crate::trustroot::MAX_CHAIN_BYTES {
            return Err(damaged(
                path,
                format!(
                    "its trust roots are larger than {} bytes",
                    crate::trustroot::MAX_CHAIN_BYTES
                ),
            ));
        }
        let size = e.size();
        let bytes = read_small(path, &mut e, &name, size)?;
        files.push((name[PACK_ROOTS.len() + 1..].to_owned(), bytes));
    }
    if files.is_empty() {
        return Ok(None);
    }
    crate::trustroot::source_from(path.join(PACK_ROOTS), files)
        .map(Some)
        .map_err(|r| damaged(path, r))
}

/// Exact bytes and their signatures `(file name, text)`, neither checked nor parsed.
pub type SignedBytes = (Vec<u8>, Vec<(String, String)>);

/// The pack manifest's exact bytes and its signatures `(file name, text)` at the head
/// of the pack (or pack part) at `path`, read with the pack reader's bounds and parsed
/// neither (leading trust roots skipped); `None` when the file does not start like a
/// pack. For choosing a bundle's home ([`crate::update::home::Home::route_pack`]), which
/// checks the signatures before it parses anything.
pub fn peek_signed_head(path: &Path) -> Option<SignedBytes> {
    let f = crate::hash::open_regular(path).ok()?;
    let mut ar = tar::Archive::new(BufReader::new(f));
    let mut seen = std::collections::BTreeSet::new();
    let mut n_roots = 0usize;
    let mut entries = ar.entries().ok()?;
    let bytes = loop {
        let mut e = entries.next()?.ok()?;
        let name = entry_name(path, &e, &mut seen).ok()?;
        if root_entry(path, &e, &name, &mut n_roots).ok()? {
            continue;
        }
        if name != PACK_MANIFEST {
            return None;
        }
        break read_small(path, &mut e, &name, MAX_PACK_MANIFEST).ok()?;
    };
    let mut sigs = Vec::new();
    for e in entries {
        let mut e = e.ok()?;
        let name = entry_name(path, &e, &mut seen).ok()?;
        let Some(file) = sig_name(&name, PACK_SIGS) else {
            break;
        };
        if sigs.len() >= MAX_SIGS {
            return None;
        }
        let b = read_small(path, &mut e, &name, MAX_SIG).ok()?;
        sigs.push((file.to_owned(), String::from_utf8(b).ok()?));
    }
    Some((bytes, sigs))
}

/// A tar entry with its checked name.
pub(crate) type Named<'a, R> = (tar::Entry<'a, R>, String);

/// Reads a pack's head from `entries` (SPEC.md §7.2 entries 0–4): the leading trust roots
/// skipped (the caller applied them, [`read_roots`]), the pack manifest and its
/// signatures checked against `policy` over the exact bytes before the parse, the
/// embedded release manifest against its signed hash and its own signatures. Returns the
/// head and the entry that follows it, unread. Shared by the one-file reader and the
/// parts reader ([`crate::update::parts`]).
pub(crate) fn read_head<'a, R: Read>(
    path: &Path,
    entries: &mut tar::Entries<'a, R>,
    seen: &mut std::collections::BTreeSet<String>,
    policy: &TrustPolicy,
    pack_size: u64,
) -> Result<(PackHead, Option<Named<'a, R>>), UpdateError> {
    // 1. The pack manifest. A file that does not even start like a pack is the wrong
    // file (a usage error), not a damaged pack.
    let not_a_pack = |reason: String| UpdateError::NotAPack {
        path: path.display().to_string(),
        reason,
    };
    let mut n_roots = 0usize;
    let (mut e, name) = loop {
        let e = match entries.next() {
            Some(Ok(e)) => e,
            Some(Err(err)) => return Err(not_a_pack(format!("no tar header: {err}"))),
            None => return Err(not_a_pack("an empty tar".into())),
        };
        let name = entry_name(path, &e, seen)?;
        // 0. A chain of trust roots may come first; the caller read and applied it
        // ([`read_roots`]) before choosing `policy`. Here it is only checked and skipped.
        match root_entry(path, &e, &name, &mut n_roots)? {
            true => continue,
            false => break (e, name),
        }
    };
    if name != PACK_MANIFEST {
        return Err(not_a_pack(format!(
            "its first entry is '{name}', not '{PACK_MANIFEST}'"
        )));
    }
    let pack_bytes = read_small(path, &mut e, &name, MAX_PACK_MANIFEST)?;
    drop(e);

    // 2. Its signatures, then trust over the exact bytes, before the pack manifest is
    // parsed and before anything else is read (SPEC.md §4.6).
    let mut pack_sigs = Vec::new();
    let next = loop {
        let Some(mut e) = next_entry(entries, path, "a signature")? else {
            break None;
        };
        let name = entry_name(path, &e, seen)?;
        match sig_name(&name, PACK_SIGS) {
            Some(file) => {
                if pack_sigs.len() >= MAX_SIGS {
                    return Err(damaged(path, "the pack has too many signatures"));
                }
                let b = read_small(path, &mut e, &name, MAX_SIG)?;
                let text = String::from_utf8(b)
                    .map_err(|_| damaged(path, format!("'{name}' is not UTF-8")))?;
                pack_sigs.push((file.to_owned(), text));
            }
            None => break Some((e, name)),
        }
    };
    let untrusted = |what: &'static str| {
        move |source: TrustError| match source {
            TrustError::ThresholdNotMet { .. } => UpdateError::PackUntrusted {
                what,
                pack: path.display().to_string(),
                source,
            },
            other => UpdateError::Trust(other),
        }
    };
    let pending = policy
        .check_bytes(&pack_bytes, &pack_sigs)
        .map_err(untrusted("pack"))?;
    let pack = PackManifest::parse(&pack_bytes).map_err(|r| damaged(path, r))?;
    let pack_sha = sha256_hex(&pack_bytes);
    let pack_reports = pending
        .bind(|c| pack_sign::check_comment(c, &pack, &pack_sha))
        .map_err(untrusted("pack"))?;
    let mut e = next.ok_or_else(|| damaged(path, "the pack ends after its signatures"))?;

    // 3. The embedded bundle manifest, whose hash the signed pack manifest names.
    if e.1 != BUNDLE_MANIFEST {
        return Err(damaged(
            path,
            format!(
                "tar entry '{}' found where '{BUNDLE_MANIFEST}' was expected",
                e.1
            ),
        ));
    }
    let manifest_bytes = read_small(path, &mut e.0, BUNDLE_MANIFEST, pack.manifest_size)?;
    drop(e);
    if manifest_bytes.len() as u64 != pack.manifest_size
        || sha256_hex(&manifest_bytes) != pack.manifest_sha256
    {
        return Err(UpdateError::PayloadMismatch {
            pack: path.display().to_string(),
            entry: BUNDLE_MANIFEST.into(),
            reason: "its sha256 is not the one the pack manifest signs".into(),
        });
    }
    let manifest = Manifest::parse(&manifest_bytes)
        .map_err(|e| damaged(path, format!("embedded manifest.toml: {e}")))?;
    pack.check_against(&manifest)
        .map_err(|r| damaged(path, r))?;

    // 4. The release's own signatures, then the payloads.
    let mut release_sigs = Vec::new();
    let mut pending = None;
    while let Some(mut e) = next_entry(entries, path, "a release signature")? {
        let name = entry_name(path, &e, seen)?;
        match sig_name(&name, RELEASE_SIGS) {
            Some(file) => {
                if release_sigs.len() >= MAX_SIGS {
                    return Err(damaged(path, "the pack has too many release signatures"));
                }
                let b = read_small(path, &mut e, &name, MAX_SIG)?;
                let text = String::from_utf8(b)
                    .map_err(|_| damaged(path, format!("'{name}' is not UTF-8")))?;
                release_sigs.push((file.to_owned(), text));
            }
            None => {
                pending = Some((e, name));
                break;
            }
        }
    }
    let release_reports = policy
        .evaluate(&manifest, &manifest_bytes, &release_sigs)
        .map_err(untrusted("the release manifest in pack"))?;
    let head = PackHead {
        pack,
        pack_bytes,
        pack_sigs,
        pack_reports,
        manifest,
        manifest_bytes,
        release_sigs,
        release_reports,
        pack_size,
    };
    Ok((head, pending))
}

/// Reads the pack at `path` once: head first (signatures over the pack manifest checked
/// against `policy`, then the embedded manifest's hash and its own signatures), then
/// `on_head` (which may refuse), then each payload in order through `on_payload`, which
/// reads as much as it wants of the payload bytes; the rest is drained and the payload's
/// size and sha256 compared with the signed manifest.
pub fn read_pack(
    path: &Path,
    policy: &TrustPolicy,
    progress: crate::Progress,
    on_head: &mut dyn FnMut(&PackHead) -> Result<(), UpdateError>,
    on_payload: &mut dyn FnMut(&Payload, &mut dyn BufRead) -> Result<(), UpdateError>,
) -> Result<PackHead, UpdateError> {
    let f = crate::hash::open_regular(path).map_err(crate::update::io_err("open", path))?;
    let pack_size = f
        .metadata()
        .map_err(crate::update::io_err("read", path))?
        .len();
    let counting = Counting {
        inner: BufReader::with_capacity(1 << 20, f),
        done: 0,
        total: pack_size,
        progress,
    };
    let mut tracked = Tracked {
        inner: counting,
        failed: None,
    };
    let mut ar = tar::Archive::new(&mut tracked);
    let mut entries = ar
        .entries()
        .map_err(|e| damaged(path, format!("not a tar file: {e}")))?;
    let mut seen = std::collections::BTreeSet::new();
    let (head, mut pending) = read_head(path, &mut entries, &mut seen, policy, pack_size)?;
    if let Some(n) = head.pack.parts {
        return Err(damaged(
            path,
            format!("it is one part of a pack in {n} parts, read as a whole pack"),
        ));
    }
    on_head(&head)?;

    for p in &head.pack.payloads {
        let (e, name) = match pending.take() {
            Some(x) => x,
            None => {
                let e = next_entry(&mut entries, path, &p.entry)?.ok_or_else(|| {
                    damaged(
                        path,
                        format!("the pack ends before payload '{}' (truncated)", p.entry),
                    )
                })?;
                let name = entry_name(path, &e, &mut seen)?;
                (e, name)
            }
        };
        if name != p.entry {
            return Err(damaged(
                path,
                format!(
                    "tar entry '{name}' found where payload '{}' was expected",
                    p.entry
                ),
            ));
        }
        if e.size() != p.size {
            return Err(UpdateError::PayloadMismatch {
                pack: path.display().to_string(),
                entry: p.entry.clone(),
                reason: format!(
                    "it is {} bytes, the pack manifest says {}",
                    e.size(),
                    p.size
                ),
            });
        }
        let mut hr = HashReader::new(e);
        let res = on_payload(p, &mut hr);
        let drained = io::copy(&mut hr, &mut io::sink());
        let mismatch = |reason: String| UpdateError::PayloadMismatch {
            pack: path.display().to_string(),
            entry: p.entry.clone(),
            reason,
        };
        let (count, sha) = hr.digest();
        if let Err(err) = drained {
            return Err(damaged(
                path,
                format!(
                    "cannot read payload '{}': {err} (the pack is truncated)",
                    p.entry
                ),
            ));
        }
        if count != p.size {
            return Err(damaged(
                path,
                format!(
                    "payload '{}' is truncated ({count} of {} bytes)",
                    p.entry, p.size
                ),
            ));
        }
        if sha != p.sha256 {
            return Err(mismatch(format!(
                "its sha256 is {sha}, the signed pack manifest says {}",
                p.sha256
            )));
        }
        res?;
    }
    if let Some((_, name)) = pending {
        return Err(damaged(path, format!("unexpected tar entry '{name}'")));
    }
    if let Some(mut e) = next_entry(&mut entries, path, "the end of the pack")? {
        let name = entry_name(path, &e, &mut seen).unwrap_or_else(|_| "?".into());
        let _ = io::copy(&mut e, &mut io::sink());
        return Err(damaged(
            path,
            format!("unexpected tar entry '{name}' after the last payload"),
        ));
    }
    if let Some(f) = tracked.failed {
        return Err(damaged(path, format!("read error: {f}")));
    }
    Ok(head)
}
