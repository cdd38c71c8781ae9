//! Update packs in parts (`create-update-pack --volume-size`, SPEC.md §7.18): a pack too
//! large for one medium is cut into parts `PACK.partKKK-of-NNN`, each a tar of its own
//! that carries the whole signed head (trust roots, pack manifest, signatures, release
//! manifest and its signatures), a `part.toml` marker saying which part it is, and the
//! payload pieces the signed pack manifest puts on it. Each piece has its own signed size
//! and sha256, so one part verifies alone; `apply-update PART…` streams every payload
//! piece by piece straight from the parts, in any order given, never joining them.
//!
//! Here: the marker, the layout HQ cuts (tar sizes counted exactly), the scan of one part
//! (head through [`crate::update::reader::read_head`], marker, the piece entries matched
//! to the signed manifest, positions noted), the reader over all parts (other pack,
//! duplicate and missing parts refused before any payload byte is read) and the check of
//! one part. A piece's bytes reach the consumer before its hash is known (as for a whole
//! pack, the caller stages them out of sight, SPEC.md §7.6). Known gap: `repair --from`
//! does not read packs in parts.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::hash::{sha256_hex, HashReader};
use crate::trust::TrustPolicy;
use crate::update::pack::{PackManifest, Payload, Piece, PAYLOADS};
use crate::update::reader::{damaged, entry_name, next_entry, read_head, read_small, PackHead};
use crate::update::{io_err, UpdateError};

/// The marker entry of a part, right after the release signatures.
pub const PART_MARKER: &str = "part.toml";
/// The marker's format.
pub const PART_FORMAT: &str = "offgrid-pack-part/1";
/// Largest marker read.
const MAX_MARKER: u64 = 4096;
/// Bytes the tar end-of-archive takes (two zero blocks).
pub const TAR_END: u64 = 1024;

/// The content of `part.toml`: which part of which pack this file is. Not signed: it
/// must name the signed pack manifest beside it, and every piece that manifest puts on
/// the claimed part must be there and verify, so a false number only fails the part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartMarker {
    pub format: String,
    pub bundle_id: String,
    /// The release the pack goes to.
    pub to: String,
    /// sha256 of the signed `offgrid-pack.toml`: the pack's identity.
    pub pack_sha256: String,
    /// This part, 1-based.
    pub part: u32,
    /// How many parts the pack has.
    pub parts: u32,
}

impl PartMarker {
    /// The marker of part `part` of the pack `pm` (signed bytes hashing to `pack_sha256`).
    pub fn new(pm: &PackManifest, pack_sha256: &str, part: u32) -> PartMarker {
        PartMarker {
            format: PART_FORMAT.into(),
            bundle_id: pm.bundle_id.clone(),
            to: pm.to.to_string(),
            pack_sha256: pack_sha256.into(),
            part,
            parts: pm.parts.unwrap_or(1),
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Parses marker bytes (at most 4 KiB, unknown fields refused).
    pub fn parse(bytes: &[u8]) -> Result<PartMarker, String> {
        if bytes.len() as u64 > MAX_MARKER {
            return Err(format!("'{PART_MARKER}' is larger than {MAX_MARKER} bytes"));
        }
        let text =
            std::str::from_utf8(bytes).map_err(|_| format!("'{PART_MARKER}' is not UTF-8"))?;
        toml::from_str(text).map_err(|e| {
            format!(
                "'{PART_MARKER}' is not a part marker: {}",
                crate::excerpt::message(&e.to_string())
            )
        })
    }

    /// Refuses a marker that does not name the signed pack manifest `pm` (bytes hashing
    /// to `sha`), its part count, or a part in 1..=N.
    pub fn check(&self, pm: &PackManifest, sha: &str) -> Result<(), String> {
        if self.format != PART_FORMAT {
            return Err(format!(
                "'{PART_MARKER}' has format '{}', not '{PART_FORMAT}'",
                crate::excerpt::excerpt(&self.format)
            ));
        }
        if self.bundle_id != pm.bundle_id || self.to != pm.to.as_str() || self.pack_sha256 != sha {
            return Err(format!(
                "'{PART_MARKER}' does not name the signed pack manifest beside it"
            ));
        }
        let n = pm.parts.unwrap_or(1);
        if self.parts != n || !(1..=n).contains(&self.part) {
            return Err(format!(
                "'{PART_MARKER}' says part {} of {}, the signed pack manifest has {n} part(s)",
                self.part, self.parts
            ));
        }
        Ok(())
    }

    /// `pack BUNDLE FROM -> TO (pack sha256 ABCD…)`, for messages naming a pack.
    fn pack_label(&self, pm: &PackManifest) -> String {
        format!(
            "pack {} {} -> {} (pack sha256 {}…)",
            pm.bundle_id,
            pm.serves(),
            pm.to,
            &self.pack_sha256[..16.min(self.pack_sha256.len())]
        )
    }
}

/// The name of part `k` of `n` of the pack written as `output`.
pub fn part_path(output: &Path, k: u32, n: u32) -> PathBuf {
    PathBuf::from(crate::volume::part_name(
        &output.display().to_string(),
        k as usize,
        n as usize,
    ))
}

/// Bytes a tar entry of `size` bytes named `name` takes: its header, a GNU long-name
/// entry for a name of 100 bytes or more, and the data padded to 512-byte blocks.
pub fn tar_entry_bytes(name: &str, size: u64) -> u64 {
    let pad = |n: u64| n.div_ceil(512) * 512;
    let long = if name.len() >= 100 {
        512 + pad(name.len() as u64 + 1)
    } else {
        0
    };
    512 + long + pad(size)
}

/// Cuts the payloads (in order) over parts that each have `room` bytes for piece
/// entries: each part is filled before the next opens, a payload larger than what is left
/// continues in the next part. Returns each payload's pieces (sha256 left empty) and the
/// number of parts.
pub fn cut(payloads: &[Payload], room: u64) -> Result<(Vec<Vec<Piece>>, u32), String> {
    // A piece entry's name is at most `payloads/NNNNNN.delta.partKKKK-of-NNNN`: one header.
    const HEADER: u64 = 512;
    if room < HEADER + 512 {
        return Err(format!(
            "a part has {room} bytes left after the pack's head, too few for any payload"
        ));
    }
    let mut out = Vec::with_capacity(payloads.len());
    let (mut part, mut used) = (1u32, 0u64);
    for p in payloads {
        let mut pieces = Vec::new();
        let mut offset = 0u64;
        loop {
            let left = p.size - offset;
            let free = room.saturating_sub(used + HEADER) / 512 * 512;
            // Open the next part when this one cannot take a block.
            if free == 0 {
                part += 1;
                used = 0;
                if part > crate::update::pack::MAX_PARTS {
                    return Err(format!(
                        "the pack would need more than {} parts",
                        crate::update::pack::MAX_PARTS
                    ));
                }
                continue;
            }
            let take = left.min(free);
            pieces.push(Piece {
                part,
                offset,
                size: take,
                sha256: String::new(),
            });
            used += HEADER + take.div_ceil(512) * 512;
            offset += take;
            if offset == p.size {
                break;
            }
        }
        out.push(pieces);
    }
    Ok((out, part))
}

/// What each part holds, for messages: `TARGET` for a payload whole in the part,
/// `TARGET (piece K of N)` for a piece of one.
pub fn holds(pm: &PackManifest) -> BTreeMap<u32, Vec<String>> {
    let mut out: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for p in &pm.payloads {
        let n = p.pieces.len();
        for (i, c) in p.pieces.iter().enumerate() {
            let what = match n {
                1 => p.target.clone(),
                _ => format!("{} (piece {} of {n})", p.target, i + 1),
            };
            out.entry(c.part).or_default().push(what);
        }
    }
    out
}

/// One piece entry found in a part: which payload and piece, and where its bytes are.
#[derive(Debug, Clone)]
struct Located {
    payload: usize,
    piece: usize,
    /// Offset of its first byte in the part file.
    at: u64,
}

/// One part, scanned: its head checked against the policy, its marker against the
/// signed pack manifest, and its piece entries matched (names, order, sizes) to the
/// pieces that manifest puts on it. No payload byte is read.
pub struct ScannedPart {
    pub path: PathBuf,
    pub head: PackHead,
    pub marker: PartMarker,
    located: Vec<Located>,
}

impl ScannedPart {
    /// `part K of N of pack BUNDLE FROM -> TO (pack sha256 …)`.
    fn label(&self) -> String {
        format!(
            "part {} of {} of {}",
            self.marker.part,
            self.marker.parts,
            self.marker.pack_label(&self.head.pack)
        )
    }

    fn damaged(&self, reason: impl Into<String>) -> UpdateError {
        part_damaged(&self.path, self.marker.part, self.marker.parts, reason)
    }
}

fn part_damaged(path: &Path, part: u32, parts: u32, reason: impl Into<String>) -> UpdateError {
    UpdateError::PartDamaged {
        path: path.display().to_string(),
        part,
        parts,
        reason: reason.into(),
    }
}

/// True when the file at `path` is a part of a pack in parts: a `part.toml` entry among
/// its head entries. An unsigned peek that only chooses the reader; that reader checks
/// everything.
pub fn is_part(path: &Path) -> bool {
    let Ok(f) = crate::hash::open_regular(path) else {
        return false;
    };
    let mut ar = tar::Archive::new(BufReader::new(f));
    let Ok(entries) = ar.entries_with_seek() else {
        return false;
    };
    let most = crate::trustroot::MAX_ROOTS * (1 + crate::update::pack::MAX_SIGS)
        + 2 * crate::update::pack::MAX_SIGS
        + 4;
    for e in entries.take(most) {
        let Ok(e) = e else { return false };
        let name = e.path_bytes();
        if &name[..] == PART_MARKER.as_bytes() {
            return true;
        }
        if name.starts_with(PAYLOADS.as_bytes()) {
            return false;
        }
    }
    false
}

/// Scans the part at `path` (see [`ScannedPart`]); trust as `policy` says.
pub fn scan_part(path: &Path, policy: &TrustPolicy) -> Result<ScannedPart, UpdateError> {
    let f = crate::hash::open_regular(path).map_err(io_err("open", path))?;
    let size = f.metadata().map_err(io_err("read", path))?.len();
    let mut ar = tar::Archive::new(BufReader::new(f));
    let mut entries = ar
        .entries_with_seek()
        .map_err(|e| damaged(path, format!("not a tar file: {e}")))?;
    let mut seen = BTreeSet::new();
    let (head, next) = read_head(path, &mut entries, &mut seen, policy, size)?;
    if head.pack.parts.is_none() {
        return Err(UpdateError::usage_help(
            format!(
                "'{}' is a whole update pack, not a part of one",
                path.display()
            ),
            "give a whole pack alone, or every part of a pack in parts",
        ));
    }
    let (mut e, name) = next.ok_or_else(|| damaged(path, "it ends after its head"))?;
    if name != PART_MARKER {
        return Err(damaged(
            path,
            format!("tar entry '{name}' found where '{PART_MARKER}' was expected"),
        ));
    }
    let bytes = read_small(path, &mut e, PART_MARKER, MAX_MARKER)?;
    drop(e);
    let marker = PartMarker::parse(&bytes).map_err(|r| damaged(path, r))?;
    marker
        .check(&head.pack, &sha256_hex(&head.pack_bytes))
        .map_err(|r| damaged(path, r))?;
    let (k, n) = (marker.part, marker.parts);
    let bad = |reason: String| part_damaged(path, k, n, reason);
    let mut located = Vec::new();
    for (i, p) in head.pack.payloads.iter().enumerate() {
        for (j, c) in p.pieces.iter().enumerate().filter(|(_, c)| c.part == k) {
            let want = p.piece_entry(j);
            let e = next_entry(&mut entries, path, &want)?
                .ok_or_else(|| bad(format!("it ends before '{want}' (truncated)")))?;
            let name = entry_name(path, &e, &mut seen)?;
            if name != want {
                return Err(bad(format!(
                    "tar entry '{name}' found where '{want}' was expected"
                )));
            }
            let at = e.raw_file_position();
            if e.size() != c.size || at.saturating_add(c.size) > size {
                return Err(bad(format!(
                    "'{want}' is {} bytes (file ends at {size}), the signed pack manifest says {}",
                    e.size(),
                    c.size
                )));
            }
            located.push(Located {
                payload: i,
                piece: j,
                at,
            });
        }
    }
    if let Some(e) = next_entry(&mut entries, path, "the end of the part")? {
        let name = entry_name(path, &e, &mut seen).unwrap_or_else(|_| "?".into());
        return Err(bad(format!(
            "unexpected tar entry '{name}' after its last piece"
        )));
    }
    Ok(ScannedPart {
        path: path.to_owned(),
        head,
        marker,
        located,
    })
}

/// Streams one payload's pieces from their parts, each hashed as it is read and
/// compared with its signed size and sha256 at its end; the first failure is kept in
/// `failed` (naming the part) and the read fails.
struct PieceReader<'a> {
    payload: &'a Payload,
    /// `(part, located piece)` for each piece, in order.
    pieces: Vec<(&'a ScannedPart, &'a Located)>,
    next: usize,
    cur: Option<(HashReader<io::Take<File>>, usize)>,
    failed: Option<UpdateError>,
    done: u64,
    total: u64,
    progress: crate::Progress<'a>,
}

impl PieceReader<'_> {
    fn fail(&mut self, e: UpdateError) -> io::Error {
        let msg = e.to_string();
        self.failed.get_or_insert(e);
        io::Error::other(msg)
    }
}

impl BufRead for PieceReader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        loop {
            if self.cur.is_none() {
                let Some(&(part, loc)) = self.pieces.get(self.next) else {
                    return Ok(&[]);
                };
                let c = &self.payload.pieces[loc.piece];
                let opened = File::open(&part.path).and_then(|mut f| {
                    f.seek(SeekFrom::Start(loc.at))?;
                    Ok(f)
                });
                let f = match opened {
                    Ok(f) => f,
                    Err(e) => return Err(self.fail(part.damaged(format!("cannot read it: {e}")))),
                };
                // HashReader reads the piece in blocks of its own: no BufReader between.
                self.cur = Some((HashReader::new(f.take(c.size)), self.next));
                self.next += 1;
            }
            let (r, i) = self.cur.as_mut().expect("set above");
            let i = *i;
            match r.fill_buf() {
                Ok(b) if !b.is_empty() => break,
                Ok(_) => {}
                Err(e) => {
                    let part = self.pieces[i].0;
                    return Err(self.fail(part.damaged(format!("cannot read it: {e}"))));
                }
            }
            let (r, _) = self.cur.take().expect("set above");
            let (count, sha) = r.digest();
            let (part, loc) = self.pieces[i];
            let c = &self.payload.pieces[loc.piece];
            let entry = self.payload.piece_entry(loc.piece);
            if count != c.size {
                return Err(self.fail(part.damaged(format!(
                    "'{entry}' is truncated ({count} of {} bytes)",
                    c.size
                ))));
            }
            if sha != c.sha256 {
                return Err(self.fail(part.damaged(format!(
                    "'{entry}' has sha256 {sha}, the signed pack manifest says {}",
                    c.sha256
                ))));
            }
        }
        match self.cur.as_mut() {
            Some((r, _)) => r.fill_buf(),
            None => Ok(&[]),
        }
    }

    fn consume(&mut self, amt: usize) {
        if let Some((r, _)) = self.cur.as_mut() {
            r.consume(amt);
            self.done += amt as u64;
            (self.progress)(self.done, self.total);
        }
    }
}

impl Read for PieceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// Feeds payload `p` to `on_payload` from `pieces`, then drains the rest and checks every
/// piece: a damaged piece is reported (naming its part) before `on_payload`'s own error.
fn feed<'a>(
    p: &'a Payload,
    pieces: Vec<(&'a ScannedPart, &'a Located)>,
    (done, total): (&mut u64, u64),
    progress: crate::Progress<'a>,
    on_payload: &mut dyn FnMut(&Payload, &mut dyn BufRead) -> Result<(), UpdateError>,
) -> Result<(), UpdateError> {
    let mut r = PieceReader {
        payload: p,
        pieces,
        next: 0,
        cur: None,
        failed: None,
        done: *done,
        total,
        progress,
    };
    let res = on_payload(p, &mut r);
    let drained = io::copy(&mut r, &mut io::sink());
    *done = r.done;
    if let Some(e) = r.failed {
        return Err(e);
    }
    drained.map_err(|e| UpdateError::usage(format!("internal error reading pieces: {e}")))?;
    res
}

/// Reads a pack given as one file or as its parts (any order): one file that is not a
/// part goes to [`crate::update::reader::read_pack`]; otherwise every path is scanned
/// ([`scan_part`]), then refused before `on_head` when a part is of another pack, given
/// twice, or missing; then `on_head` with part 1's head, then each payload streamed
/// from its pieces through `on_payload`, as `read_pack` does.
pub fn read_any(
    paths: &[PathBuf],
    policy: &TrustPolicy,
    progress: crate::Progress,
    on_head: &mut dyn FnMut(&PackHead) -> Result<(), UpdateError>,
    on_payload: &mut dyn FnMut(&Payload, &mut dyn BufRead) -> Result<(), UpdateError>,
) -> Result<PackHead, UpdateError> {
    if let [one] = paths {
        if !is_part(one) {
            return crate::update::reader::read_pack(one, policy, progress, on_head, on_payload);
        }
    }
    let parts = scan_all(paths, policy)?;
    on_head(&parts[0].head)?;
    let total: u64 = parts.iter().map(|p| p.head.pack_size).sum();
    let mut done = 0u64;
    let by_piece: BTreeMap<(usize, usize), (&ScannedPart, &Located)> = parts
        .iter()
        .flat_map(|sp| {
            sp.located
                .iter()
                .map(move |l| ((l.payload, l.piece), (sp, l)))
        })
        .collect();
    let pm = &parts[0].head.pack;
    for (i, p) in pm.payloads.iter().enumerate() {
        let pieces = (0..p.pieces.len())
            .filter_map(|j| by_piece.get(&(i, j)).copied())
            .collect();
        feed(p, pieces, (&mut done, total), progress, on_payload)?;
    }
    let mut head = parts[0].head.clone();
    head.pack_size = total;
    Ok(head)
}

/// Scans every part given, then checks they make one whole pack: all of one pack, none
/// twice, none missing. Returns them in part order.
pub fn scan_all(paths: &[PathBuf], policy: &TrustPolicy) -> Result<Vec<ScannedPart>, UpdateError> {
    let mut parts: Vec<ScannedPart> = Vec::new();
    for p in paths {
        let sp = scan_part(p, policy)?;
        if let Some(first) = parts.first() {
            if sp.marker.pack_sha256 != first.marker.pack_sha256 {
                return Err(UpdateError::OtherPackPart {
                    path: sp.path.display().to_string(),
                    this: sp.label(),
                    first: first.path.display().to_string(),
                    other: first.label(),
                });
            }
            if let Some(twin) = parts.iter().find(|x| x.marker.part == sp.marker.part) {
                return Err(UpdateError::usage_help(
                    format!(
                        "part {} is given twice: '{}' and '{}'",
                        sp.marker.part,
                        twin.path.display(),
                        sp.path.display()
                    ),
                    "give each part once",
                ));
            }
        }
        parts.push(sp);
    }
    parts.sort_by_key(|p| p.marker.part);
    let n = parts[0].marker.parts;
    let given: Vec<u32> = parts.iter().map(|p| p.marker.part).collect();
    let missing: Vec<u32> = (1..=n).filter(|k| !given.contains(k)).collect();
    if !missing.is_empty() {
        return Err(UpdateError::PartsMissing {
            pack: parts[0].marker.pack_label(&parts[0].head.pack),
            parts: n,
            given,
            missing,
        });
    }
    Ok(parts)
}

/// One part checked alone: what [`check_part`] found.
#[derive(Debug, Clone, Serialize)]
pub struct PartReport {
    pub part: u32,
    pub parts: u32,
    /// Pieces this part holds, each checked against its signed sha256.
    pub pieces: usize,
    /// Payload bytes this part holds.
    pub bytes: u64,
    /// What the other parts hold (not looked for).
    pub elsewhere: Vec<Elsewhere>,
}

/// What another part holds.
#[derive(Debug, Clone, Serialize)]
pub struct Elsewhere {
    pub part: u32,
    pub payloads: Vec<String>,
}

/// Checks the part at `path` alone: its head against `policy`, its marker, then every
/// piece it holds, streamed through `on_payload` (which sees a whole payload's bytes
/// only when the payload is in this part alone; otherwise it is not called for it).
pub fn check_part(
    path: &Path,
    policy: &TrustPolicy,
    progress: crate::Progress,
    on_payload: &mut dyn FnMut(&Payload, &mut dyn BufRead) -> Result<(), UpdateError>,
) -> Result<(PackHead, PartReport), UpdateError> {
    let sp = scan_part(path, policy)?;
    let pm = &sp.head.pack;
    let total = sp.head.pack_size;
    let mut done = 0u64;
    let mut bytes = 0u64;
    let mut skip = |_: &Payload, _: &mut dyn BufRead| Ok(());
    for l in &sp.located {
        let p = &pm.payloads[l.payload];
        bytes += p.pieces[l.piece].size;
        let consumer: &mut dyn FnMut(&Payload, &mut dyn BufRead) -> Result<(), UpdateError> =
            match p.pieces.len() {
                1 => &mut *on_payload,
                _ => &mut skip,
            };
        feed(p, vec![(&sp, l)], (&mut done, total), progress, consumer)?;
    }
    let k = sp.marker.part;
    let report = PartReport {
        part: k,
        parts: sp.marker.parts,
        pieces: sp.located.len(),
        bytes,
        elsewhere: holds(pm)
            .into_iter()
            .filter(|(part, _)| *part != k)
            .map(|(part, payloads)| Elsewhere { part, payloads })
            .collect(),
    };
    Ok((sp.head, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(size: u64) -> Payload {
        Payload {
            entry: "payloads/000001.zst".into(),
            encoding: crate::update::pack::Encoding::Zstd,
            size,
            sha256: String::new(),
            target: "a".into(),
            target_size: 0,
            target_sha256: String::new(),
            base_release: None,
            base_path: None,
            base_sha256: None,
            pieces: Vec::new(),
        }
    }

    #[test]
    fn cut_fills_each_part_before_the_next() {
        // Room for 5 blocks: a header and a block for payload 1, a header and two blocks
        // of payload 2; part 2 takes its rest (a header, 4 blocks), part 3 payload 3.
        let (pieces, n) = cut(&[payload(100), payload(3000), payload(10)], 2560).unwrap();
        assert_eq!(n, 3);
        let shape: Vec<Vec<(u32, u64, u64)>> = pieces
            .iter()
            .map(|v| v.iter().map(|c| (c.part, c.offset, c.size)).collect())
            .collect();
        assert_eq!(
            shape,
            [
                vec![(1, 0, 100)],
                vec![(1, 0, 1024), (2, 1024, 1976)],
                vec![(3, 0, 10)],
            ]
        );
        for (p, cs) in [payload(100), payload(3000), payload(10)]
            .iter()
            .zip(&pieces)
        {
            assert_eq!(cs.iter().map(|c| c.size).sum::<u64>(), p.size);
        }
        assert!(cut(&[payload(1)], 1000).is_err(), "no room for one block");
        assert_eq!(tar_entry_bytes("a", 0), 512);
        assert_eq!(tar_entry_bytes("a", 513), 1536);
        assert_eq!(tar_entry_bytes(&"x".repeat(100), 1), 512 + 1024 + 512);
    }
}
