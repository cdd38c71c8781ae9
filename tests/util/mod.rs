//! The one helper module of the test crate (ripgrep's `tests/util`): the generic pieces
//! here (digests, stock-minisign keys and signatures, temp dirs, the binary under test,
//! snapshots, waiting for a stopped child) and, by concept, [`pack`] (the `Ws` workspace),
//! [`world`] (signed trees made without pack-usb, the two-release world, update packs,
//! installed-version checks) and [`models`] (the real and synthetic GGUF fixtures).
//! Everything is re-exported here: `use crate::util::{…}`.

#![allow(dead_code)]

pub mod models;
pub mod pack;
pub mod world;

pub use models::*;
pub use pack::*;
pub use world::*;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256 of `b`.
pub fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A fresh unencrypted key pair made by stock `minisign -G -W`: `(secret, public)`.
pub fn keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let s = dir.join(format!("{name}.key"));
    let p = dir.join(format!("{name}.pub"));
    let out = Command::new("minisign")
        .args(["-G", "-W", "-f", "-p"])
        .arg(&p)
        .arg("-s")
        .arg(&s)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("minisign installed");
    assert!(out.status.success(), "{out:?}");
    (s, p)
}

/// The host platform tag as offgrid spells it.
pub fn host() -> String {
    offgrid::platform::Platform::host().to_string()
}

/// Deterministic pseudo-random bytes (incompressible, like quantized weights).
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(n);
    v
}

/// Signs `file` with stock minisign, writing `DIR/KEYID.minisig`.
pub fn sign_file(file: &Path, key: &Path, comment: &str, dir: &Path) -> PathBuf {
    let tmp = dir.join(".sig");
    let out = Command::new("minisign")
        .args(["-S", "-s"])
        .arg(key)
        .arg("-m")
        .arg(file)
        .arg("-x")
        .arg(&tmp)
        .args(["-t", comment])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = fs::read_to_string(&tmp).unwrap();
    let id = key_id(&key.with_extension("pub"));
    let dst = dir.join(format!("{id}.minisig"));
    fs::write(&dst, text).unwrap();
    fs::remove_file(tmp).unwrap();
    dst
}

/// The key id of a minisign public key file as offgrid names signature files: 16
/// uppercase hex digits (stock minisign prints it without leading zeros).
pub fn key_id(pubfile: &Path) -> String {
    use ct_codecs::Decoder;
    let text = fs::read_to_string(pubfile).unwrap();
    let raw = ct_codecs::Base64::decode_to_vec(text.lines().nth(1).unwrap().trim(), None).unwrap();
    let kn: [u8; 8] = raw[2..10].try_into().unwrap();
    format!("{:016X}", u64::from_le_bytes(kn))
}

/// The offgrid binary under test.
pub fn offgrid_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("offgrid")
}

/// This offgrid binary without debug symbols (`strip`; 5 MiB instead of 70), so the
/// tests ship and diff a real runnable binary without spending minutes on debug info.
pub fn stripped_exe(dir: &Path) -> Vec<u8> {
    let p = dir.join("offgrid-stripped");
    fs::copy(offgrid_bin(), &p).unwrap();
    let _ = Command::new("strip").arg(&p).status();
    let b = fs::read(&p).unwrap();
    fs::remove_file(&p).unwrap();
    b
}

/// A temp dir, in RAM (`/dev/shm`) when `ram` and available: fsync is free there, and a
/// SIGKILL test does not need the disk (the page cache survives the process).
pub fn tempdir(ram: bool) -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if ram && shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("offgrid-test-")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

/// Every file under `root` with its bytes, relative `/` paths, sorted.
pub fn snapshot(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            (rel, fs::read(e.path()).unwrap())
        })
        .collect();
    v.sort();
    v
}

/// Waits (up to 120 s) until `child`, run with `OFFGRID_FAULT_AT=STEP:stop`, has stopped
/// itself at `step` (state `T` in `/proc/PID/stat`) and gives it back; panics with its
/// output if it ends first or never gets there.
pub fn wait_stopped(mut child: std::process::Child, step: &str) -> std::process::Child {
    let stat = format!("/proc/{}/stat", child.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let s = fs::read_to_string(&stat).unwrap_or_default();
        let state = s.rsplit(')').next().unwrap_or("").trim_start().to_owned();
        if state.starts_with('T') {
            return child;
        }
        if state.starts_with('Z') || std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "the process never reached {step}: {:?}",
                child.wait_with_output()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// What a finished command printed, and its exit code (-1 when killed by a signal).
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `c` to its end and keeps its output as text.
pub fn output(mut c: Command) -> Out {
    c.output().unwrap().into()
}

impl From<std::process::Output> for Out {
    fn from(o: std::process::Output) -> Out {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}
