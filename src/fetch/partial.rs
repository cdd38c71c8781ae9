//! The resume state of one download on disk, beside the store so the finished file is
//! moved into `objects/` by one rename: `partial/KEY.part` (the file, full size, bytes
//! written at their offsets) and `partial/KEY.state` (JSON: size, the server's validator,
//! the part size and how many bytes of each part are on disk). KEY is the expected
//! sha256, or `url-` and the sha256 of the URL when the hash is not known.
//!
//! Two claims are kept: `done` (bytes written; saved every few hundredths of a second
//! without fsync, so a killed process loses almost nothing) and `synced` (bytes on disk
//! for certain: the data file is synced before the state claiming them is written with
//! fsync, every few seconds). The state records the kernel's boot id: after a reboot
//! (power loss) only `synced` is believed, since unsynced writes may be gone; after a
//! mere kill the page cache still holds every written byte and `done` is believed.
//! One process at a time: the `.part` file is locked (`flock`) while in use.
//! Known gap: the lock is advisory and Unix-only (Windows: no lock).

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use super::{io_err, FetchError};

/// State files larger than this are ignored (and the download restarts).
const MAX_STATE: u64 = 4 << 20;

/// What is saved in `KEY.state`.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct State {
    /// Always 1.
    pub version: u32,
    /// The file's size.
    pub size: u64,
    /// The URL the validator below came from.
    pub url: String,
    /// The server's `ETag` for `url`, if any.
    pub etag: Option<String>,
    /// The server's `Last-Modified` for `url`, if any.
    pub last_modified: Option<String>,
    /// Bytes per part (the last part may be shorter).
    pub part_size: u64,
    /// Bytes on disk from the start of each part.
    pub done: Vec<u64>,
    /// Bytes of each part certainly on disk (synced).
    #[serde(default)]
    pub synced: Vec<u64>,
    /// The boot the `done` claims were made in (Linux; `None` elsewhere).
    #[serde(default)]
    pub boot_id: Option<String>,
    /// Every URL that wrote bytes into the file.
    pub sources: Vec<String>,
}

impl State {
    /// A fresh state: nothing downloaded.
    pub fn new(size: u64, part_size: u64, url: &str) -> State {
        let part_size = part_size.max(1);
        let parts = size.div_ceil(part_size).max(1) as usize;
        State {
            version: 1,
            size,
            url: url.to_owned(),
            etag: None,
            last_modified: None,
            part_size,
            done: vec![0; parts],
            synced: vec![0; parts],
            boot_id: boot_id(),
            sources: Vec::new(),
        }
    }

    /// `[start, end)` of part `i`.
    pub fn range(&self, i: usize) -> (u64, u64) {
        let start = i as u64 * self.part_size;
        (start, (start + self.part_size).min(self.size))
    }

    /// Bytes on disk in all parts.
    pub fn total_done(&self) -> u64 {
        self.done.iter().sum()
    }

    /// True when the fields agree with each other (a damaged state is discarded).
    fn consistent(&self) -> bool {
        self.version == 1
            && self.part_size > 0
            && self.done.len() as u64 == self.size.div_ceil(self.part_size).max(1)
            && self.synced.len() == self.done.len()
            && (0..self.done.len()).all(|i| {
                let (s, e) = self.range(i);
                self.synced[i] <= self.done[i] && self.done[i] <= e - s
            })
    }
}

/// An open partial download: its file (locked) and state.
pub struct Partial {
    pub data_path: PathBuf,
    pub state_path: PathBuf,
    pub file: File,
    /// `None` when nothing usable was on disk.
    pub state: Option<State>,
}

impl Partial {
    /// Opens (creating) `partial/KEY.part` under `hq` and reads its state, if usable.
    pub fn open(hq: &Path, key: &str) -> Result<Partial, FetchError> {
        let dir = hq.join("partial");
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let data_path = dir.join(format!("{key}.part"));
        let state_path = dir.join(format!("{key}.state"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&data_path)
            .map_err(io_err("open", &data_path))?;
        lock(&file, &data_path)?;
        let len = file.metadata().map_err(io_err("read", &data_path))?.len();
        let mut state = read_state(&state_path).filter(|s| s.consistent() && s.size == len);
        if let Some(s) = state.as_mut() {
            if s.boot_id.is_none() || s.boot_id != boot_id() {
                // Rebooted since (or unknown): only synced bytes are certain.
                s.done = s.synced.clone();
            }
            s.boot_id = boot_id();
        }
        Ok(Partial {
            data_path,
            state_path,
            file,
            state,
        })
    }

    /// Starts over: an empty file of `size` bytes and a fresh state.
    pub fn reset(&mut self, state: State) -> Result<(), FetchError> {
        // Remove the old claim first: a crash between the two steps leaves no state.
        crate::fsutil::remove_if_exists(&self.state_path)
            .map_err(io_err("remove", &self.state_path))?;
        self.file
            .set_len(0)
            .and_then(|_| self.file.set_len(state.size))
            .map_err(io_err("size", &self.data_path))?;
        self.state = Some(state);
        self.save()
    }

    /// Syncs the data, then atomically and durably writes the state claiming all of it.
    pub fn save(&mut self) -> Result<(), FetchError> {
        let Some(s) = self.state.as_mut() else {
            return Ok(());
        };
        self.file
            .sync_data()
            .map_err(io_err("sync", &self.data_path))?;
        s.synced = s.done.clone();
        let text = encode(s, &self.state_path)?;
        crate::fsutil::atomic_write(&self.state_path, &text)
            .map_err(io_err("write", &self.state_path))
    }

    /// Writes the state without syncing anything (its `done` claims hold unless the
    /// machine loses power; `synced` keeps the last durable claim).
    pub fn save_quick(&self) -> Result<(), FetchError> {
        let Some(s) = &self.state else {
            return Ok(());
        };
        let text = encode(s, &self.state_path)?;
        let tmp = self.state_path.with_extension("state-tmp");
        fs::write(&tmp, &text)
            .and_then(|_| fs::rename(&tmp, &self.state_path))
            .map_err(io_err("write", &self.state_path))
    }

    /// Removes the state file (the data file has been moved into the store or is
    /// discarded by the caller).
    pub fn remove_state(&self) -> Result<(), FetchError> {
        crate::fsutil::remove_if_exists(&self.state_path)
            .map_err(io_err("remove", &self.state_path))
    }

    /// Discards everything: the state and the data.
    pub fn discard(&mut self) -> Result<(), FetchError> {
        self.state = None;
        self.remove_state()?;
        self.file
            .set_len(0)
            .map_err(io_err("truncate", &self.data_path))
    }
}

fn encode(s: &State, path: &Path) -> Result<Vec<u8>, FetchError> {
    serde_json::to_vec(s).map_err(|e| FetchError::Io {
        action: "encode",
        path: path.display().to_string(),
        source: std::io::Error::other(e),
    })
}

/// The kernel's boot id (changes at every boot), where there is one.
fn boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn read_state(path: &Path) -> Option<State> {
    let meta = fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_STATE {
        return None;
    }
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

#[cfg(unix)]
fn lock(file: &File, path: &Path) -> Result<(), FetchError> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a file descriptor we own; no memory is passed.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        Ok(())
    } else {
        Err(FetchError::Busy {
            path: path.display().to_string(),
        })
    }
}

#[cfg(not(unix))]
fn lock(_: &File, _: &Path) -> Result<(), FetchError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_damaged_state_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        let mut p = Partial::open(d.path(), "k").unwrap();
        assert!(p.state.is_none());
        let mut s = State::new(10, 4, "http://x/");
        assert_eq!(s.done.len(), 3);
        assert_eq!(s.range(2), (8, 10));
        s.done[0] = 4;
        p.reset(s.clone()).unwrap();
        p.state.as_mut().unwrap().done[0] = 4;
        p.save().unwrap();
        drop(p);
        let mut p = Partial::open(d.path(), "k").unwrap();
        assert_eq!(p.state.as_ref().unwrap().done, vec![4, 0, 0]);
        // Quick claims survive a kill, but not a reboot.
        p.state.as_mut().unwrap().done[1] = 2;
        p.save_quick().unwrap();
        drop(p);
        let p = Partial::open(d.path(), "k").unwrap();
        assert_eq!(p.state.as_ref().unwrap().done, vec![4, 2, 0]);
        drop(p);
        let text = fs::read_to_string(d.path().join("partial/k.state")).unwrap();
        let mut st: State = serde_json::from_str(&text).unwrap();
        st.boot_id = Some("another-boot".into());
        fs::write(
            d.path().join("partial/k.state"),
            serde_json::to_vec(&st).unwrap(),
        )
        .unwrap();
        let p = Partial::open(d.path(), "k").unwrap();
        assert_eq!(p.state.as_ref().unwrap().done, vec![4, 0, 0]);
        drop(p);
        fs::write(d.path().join("partial/k.state"), b"{garbage").unwrap();
        assert!(Partial::open(d.path(), "k").unwrap().state.is_none());
    }
}
