//! The medium a tree is written to: which file system holds a destination (FAT, exFAT,
//! NTFS, ext*, …), the largest file it can store, how much is free, and the size syntax
//! (`4G`, `4GiB`, `100K`, `4.7GB`, bytes) that `--max-file-size` and friends accept.
//!
//! Detection asks `statfs` for the file system's magic number. Behind FUSE (`fusefat`,
//! `exfat-fuse`, `ntfs-3g`) the magic only says "FUSE", so the mount's entry in
//! `/proc/self/mountinfo` is read: its type (`fuse.fusefat`, `fuseblk`, …) and, for a
//! `fuseblk` mount, the boot sector of its device (the OEM name at byte 3 says `EXFAT` or
//! `NTFS`, byte 82 `FAT32`). Every command that writes a tree checks its files against
//! [`FileSystem::max_file_size`] and its bytes against [`free_bytes`] before writing the
//! first byte. SPEC.md §16 is normative.
//! Known gaps: on other systems than Linux the file system is "unknown" (no limit is
//! assumed; pass `--max-file-size`); FAT12/16 volumes are reported as FAT (same 4 GiB − 1
//! file limit); a FUSE mount whose device cannot be read is reported by its mount type.

use std::path::{Path, PathBuf};

/// The largest file FAT12/16/32 can hold: 4 GiB − 1 byte.
pub const FAT_MAX_FILE: u64 = (4 << 30) - 1;

/// A destination's file system and the largest file it can store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSystem {
    /// A short name for messages: `FAT`, `exFAT`, `NTFS`, `ext2/3/4`, `tmpfs`, …
    pub name: String,
    /// The largest file it holds, when it is a limit media run into (FAT only).
    pub max_file_size: Option<u64>,
}

impl FileSystem {
    fn named(name: &str) -> FileSystem {
        let max_file_size = (name == "FAT").then_some(FAT_MAX_FILE);
        FileSystem {
            name: name.to_owned(),
            max_file_size,
        }
    }
}

impl std::fmt::Display for FileSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// The per-file limit a write to `dest` must respect: `--max-file-size` when given (named
/// as such), else the detected file system's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLimit {
    pub fs: FileSystem,
    /// The limit in force, if any.
    pub max: Option<u64>,
    /// True when `--max-file-size` set it.
    pub overridden: bool,
}

impl FileLimit {
    /// The limit for `dest`: `flag` (from `--max-file-size`) or what [`detect`] finds.
    pub fn for_dest(dest: &Path, flag: Option<u64>) -> FileLimit {
        let fs = detect(dest);
        match flag {
            Some(m) => FileLimit {
                fs,
                max: Some(m),
                overridden: true,
            },
            None => FileLimit {
                max: fs.max_file_size,
                fs,
                overridden: false,
            },
        }
    }

    /// Where the limit comes from, for messages: `FAT` or `--max-file-size`.
    pub fn source(&self) -> String {
        if self.overridden {
            "--max-file-size".to_owned()
        } else {
            self.fs.name.clone()
        }
    }
}

/// Why a write does not fit its medium.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("'{path}' is {size} bytes, more than the {limit}-byte file limit of {source_name} on '{dest}'")]
    TooLarge {
        path: String,
        size: u64,
        limit: u64,
        source_name: String,
        dest: String,
        help: &'static str,
    },
    #[error("'{dest}' has {free} bytes free, but {what} needs {need}")]
    NoSpace {
        dest: String,
        what: &'static str,
        need: u64,
        free: u64,
        help: &'static str,
    },
    #[error("{what} '{value}' is not a size: {reason}")]
    BadSize {
        what: &'static str,
        value: String,
        reason: String,
    },
}

impl MediaError {
    /// None of these is a clean "no": each is a usage or medium problem (exit 2).
    pub fn is_refusal(&self) -> bool {
        false
    }
}

/// [`crate::units::parse_size`] with the flag named in the error.
pub fn parse_size_arg(what: &'static str, text: &str) -> Result<u64, MediaError> {
    crate::units::parse_size(text).map_err(|reason| MediaError::BadSize {
        what,
        value: text.chars().take(40).collect(),
        reason,
    })
}

/// [`crate::units::parse_volume_size`] (`dvd`, `bd25`, `4.7GB`, …) with the flag named in
/// the error.
pub fn parse_volume_size_arg(what: &'static str, text: &str) -> Result<u64, MediaError> {
    crate::units::parse_volume_size(text).map_err(|reason| MediaError::BadSize {
        what,
        value: text.chars().take(40).collect(),
        reason: format!("{reason} (or one of cd, dvd, dvd-dl, bd25, bd50)"),
    })
}

/// The nearest existing folder at or above `path` (what `statfs` can ask about).
pub fn existing_ancestor(path: &Path) -> PathBuf {
    let mut p = if path.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        path.to_path_buf()
    };
    loop {
        if p.exists() {
            return p;
        }
        match p.parent() {
            Some(q) if !q.as_os_str().is_empty() => p = q.to_path_buf(),
            _ => return PathBuf::from("."),
        }
    }
}

/// Free bytes for an unprivileged writer on the file system holding `path` (or its
/// nearest existing ancestor); `None` when it cannot be asked, or when the file system
/// reports no blocks at all (`fusefat` answers `statvfs` with zeros).
#[cfg(unix)]
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let p = existing_ancestor(path);
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    // A file system reporting no blocks at all does not report space (fusefat).
    if st.f_blocks == 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(not(unix))]
pub fn free_bytes(_path: &Path) -> Option<u64> {
    None
}

/// Refuses with [`MediaError::NoSpace`] when the file system of `dest` has less than
/// `need` bytes free (unknown free space passes).
pub fn check_space(
    dest: &Path,
    what: &'static str,
    need: u64,
    help: &'static str,
) -> Result<(), MediaError> {
    match free_bytes(dest) {
        Some(free) if free < need => Err(MediaError::NoSpace {
            dest: dest.display().to_string(),
            what,
            need,
            free,
            help,
        }),
        _ => Ok(()),
    }
}

/// The fix named when a site home lacks room for a release.
pub const HOME_SPACE_HELP: &str = "free space on that file system (an older release is removed after the next switch), or use --home on a larger one";

/// Bytes a home needs free to stage `m` beside the current release: every file (a
/// version is a full copy), the manifest and signatures, and 1 MiB for the journal,
/// state and folders.
pub fn install_need(m: &crate::manifest::Manifest, manifest_bytes: usize) -> u64 {
    m.total_size()
        .saturating_add(manifest_bytes as u64)
        .saturating_add(1 << 20)
}

const MSDOS_SUPER_MAGIC: i64 = 0x4d44;
const EXFAT_SUPER_MAGIC: i64 = 0x2011_BAB0;
const NTFS3_SUPER_MAGIC: i64 = 0x7366_746e;
const NTFS_SB_MAGIC: i64 = 0x5346_544e;
const EXT_SUPER_MAGIC: i64 = 0xEF53;
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
const TMPFS_MAGIC: i64 = 0x0102_1994;
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;
const XFS_SUPER_MAGIC: i64 = 0x5846_5342;

/// The file system holding `path` (or its nearest existing ancestor).
pub fn detect(path: &Path) -> FileSystem {
    let p = existing_ancestor(path);
    match statfs_magic(&p) {
        Some(MSDOS_SUPER_MAGIC) => FileSystem::named("FAT"),
        Some(EXFAT_SUPER_MAGIC) => FileSystem::named("exFAT"),
        Some(NTFS3_SUPER_MAGIC) | Some(NTFS_SB_MAGIC) => FileSystem::named("NTFS"),
        Some(EXT_SUPER_MAGIC) => FileSystem::named("ext2/3/4"),
        Some(TMPFS_MAGIC) => FileSystem::named("tmpfs"),
        Some(BTRFS_SUPER_MAGIC) => FileSystem::named("btrfs"),
        Some(XFS_SUPER_MAGIC) => FileSystem::named("xfs"),
        Some(FUSE_SUPER_MAGIC) => fuse_fs(&p),
        Some(m) => FileSystem::named(&format!("file system 0x{m:x}")),
        None => FileSystem::named("unknown"),
    }
}

#[cfg(target_os = "linux")]
fn statfs_magic(path: &Path) -> Option<i64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statfs.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    // f_type is signed on some targets; the magic numbers fit in 32 bits.
    Some((st.f_type as i64) & 0xffff_ffff)
}

#[cfg(not(target_os = "linux"))]
fn statfs_magic(_path: &Path) -> Option<i64> {
    None
}

/// A FUSE mount: named by its mount type, or by the boot sector of its device.
fn fuse_fs(path: &Path) -> FileSystem {
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Some((fstype, source)) = mount_of(&text, &canon) else {
        return FileSystem::named("FUSE");
    };
    if let Some(fs) = by_type_name(&fstype) {
        return fs;
    }
    if let Some(fs) = boot_sector_fs(Path::new(&source)) {
        return fs;
    }
    FileSystem::named(&fstype)
}

/// The file system a mount type names (`fuse.fusefat`, `fuse.exfat`, `fuseblk.ntfs`, …).
fn by_type_name(fstype: &str) -> Option<FileSystem> {
    let sub = fstype
        .strip_prefix("fuseblk.")
        .or_else(|| fstype.strip_prefix("fuse."))
        .unwrap_or(fstype)
        .to_ascii_lowercase();
    if sub.contains("exfat") {
        Some(FileSystem::named("exFAT"))
    } else if sub.contains("fat") || sub == "msdos" {
        Some(FileSystem::named("FAT"))
    } else if sub.contains("ntfs") {
        Some(FileSystem::named("NTFS"))
    } else {
        None
    }
}

/// Reads the OEM name and FAT type fields of a device's boot sector.
fn boot_sector_fs(dev: &Path) -> Option<FileSystem> {
    use std::io::Read;
    if !dev.is_absolute() {
        return None;
    }
    let f = std::fs::File::open(dev).ok()?;
    let mut b = [0u8; 512];
    f.take(512).read_exact(&mut b).ok()?;
    if &b[3..11] == b"EXFAT   " {
        Some(FileSystem::named("exFAT"))
    } else if &b[3..11] == b"NTFS    " {
        Some(FileSystem::named("NTFS"))
    } else if &b[82..87] == b"FAT32" || &b[54..59] == b"FAT16" || &b[54..59] == b"FAT12" {
        Some(FileSystem::named("FAT"))
    } else {
        None
    }
}

/// The type and source of the mount holding `path`, from mountinfo text: the entry
/// with the longest mount point that is a prefix of `path` (the last one wins a tie).
fn mount_of(mountinfo: &str, path: &Path) -> Option<(String, String)> {
    let mut best: Option<(usize, String, String)> = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(point) = left.split(' ').nth(4) else {
            continue;
        };
        let point = unescape(point);
        if !path.starts_with(&point) {
            continue;
        }
        let mut r = right.split(' ');
        let (Some(fstype), Some(source)) = (r.next(), r.next()) else {
            continue;
        };
        let len = point.as_os_str().len();
        if best.as_ref().is_none_or(|(l, _, _)| len >= *l) {
            best = Some((
                len,
                fstype.to_owned(),
                unescape(source).display().to_string(),
            ));
        }
    }
    best.map(|(_, t, s)| (t, s))
}

/// Mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        PathBuf::from(std::ffi::OsString::from_vec(out))
    }
    #[cfg(not(unix))]
    PathBuf::from(String::from_utf8_lossy(&out).into_owned())
}

impl crate::diagnostic::Diagnostic for MediaError {
    fn help(&self) -> Option<String> {
        match self {
            MediaError::TooLarge { help, .. } => Some(help.to_string()),
            MediaError::NoSpace { help, .. } => Some(help.to_string()),
            MediaError::BadSize { .. } => {
                Some("write a size as bytes or with a unit: 4G, 4GiB, 4.7GB, 100K".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_mount_of_a_path() {
        let info = "22 1 0:21 / / rw - ext4 /dev/vda rw\n\
                    45 22 0:40 / /mnt/my\\040stick rw - fuse.fusefat fusefat rw\n\
                    46 22 7:0 / /mnt/ex rw - fuseblk /dev/loop0 rw\n";
        assert_eq!(
            mount_of(info, Path::new("/mnt/my stick/tree")),
            Some(("fuse.fusefat".into(), "fusefat".into()))
        );
        assert_eq!(
            mount_of(info, Path::new("/mnt/ex")),
            Some(("fuseblk".into(), "/dev/loop0".into()))
        );
        assert_eq!(
            mount_of(info, Path::new("/home")).map(|m| m.0),
            Some("ext4".into())
        );
        assert_eq!(by_type_name("fuse.fusefat").unwrap().name, "FAT");
        assert_eq!(by_type_name("fuse.exfat").unwrap().name, "exFAT");
        assert_eq!(by_type_name("fuseblk.ntfs-3g").unwrap().name, "NTFS");
        assert!(by_type_name("fuseblk").is_none());
        assert_eq!(FileSystem::named("FAT").max_file_size, Some((4 << 30) - 1));
    }
}
