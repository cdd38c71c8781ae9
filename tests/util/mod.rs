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

/// Changes one byte of `path` in place (same size, so a size check alone would pass).
pub fn flip_byte(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, at).unwrap();
    f.sync_all().unwrap();
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

/// The signed tree at `root` as stored (manifest, signatures, marker, files or parts):
/// [`snapshot`] without offgrid's own `.offgrid*` files.
pub fn signed_tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    snapshot(root)
        .into_iter()
        .filter(|(p, _)| !p.starts_with(".offgrid"))
        .collect()
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

/// Starts `c` with `OFFGRID_FAULT_AT=STEP:stop` (stdin closed, output piped) and gives
/// it back once it has stopped itself at `step` ([`wait_stopped`]).
pub fn spawn_stopped(mut c: Command, step: &str) -> std::process::Child {
    use std::process::Stdio;
    let child = c
        .env("OFFGRID_FAULT_AT", format!("{step}:stop"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_stopped(child, step)
}

/// Lets a process stopped by [`spawn_stopped`] go on (`SIGCONT`) and waits for its end.
pub fn resume(child: std::process::Child) -> Out {
    let st = Command::new("kill")
        .args(["-CONT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    child.wait_with_output().unwrap().into()
}

/// Resumes a clone (or `pack-usb --read-back`) stopped before its read-back, after a
/// byte was changed on `bad`'s medium: exit 1, `good` reported ok, `bad` reported BAD
/// naming `path`; returns the output for further checks.
pub fn assert_read_back_names(
    child: std::process::Child,
    good: &str,
    bad: &str,
    path: &str,
) -> Out {
    let out = resume(child);
    let Out {
        code,
        stdout,
        stderr,
    } = &out;
    assert_eq!(*code, 1, "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("ok      '{good}'")), "{stdout}");
    assert!(stdout.contains(&format!("BAD     '{bad}'")), "{stdout}");
    assert!(stdout.contains(path), "{stdout}");
    out
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

/// An HTTP answer read by [`http`].
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), 10 s timeouts.
pub fn http(addr: &str, method: &str, path: &str, extra: &[(&str, &str)]) -> Resp {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut raw).unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Resp {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

/// `offgrid ARGS` on a pseudo-terminal (util-linux `script -qec`), driven as an operator
/// would: wait for a prompt, do something, type an answer.
pub struct Terminal {
    child: std::process::Child,
    input: Option<std::process::ChildStdin>,
    output: std::sync::mpsc::Receiver<Vec<u8>>,
    /// Everything the terminal showed so far.
    pub seen: String,
}

impl Terminal {
    /// Starts `offgrid ARGS` (a shell-quoted string) in `dir` with `envs`.
    pub fn start(dir: &Path, args: &str, envs: &[(&str, &Path)]) -> Terminal {
        use std::io::Read;
        let mut c = Command::new("script");
        c.args([
            "-qec",
            &format!("'{}' {args}", offgrid_bin().display()),
            "/dev/null",
        ])
        .current_dir(dir)
        .env_remove("OFFGRID_PASSWORD")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
        for (k, v) in envs {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("util-linux 'script' is installed");
        let mut out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Terminal {
            input: child.stdin.take(),
            child,
            output: rx,
            seen: String::new(),
        }
    }

    /// Waits (at most a minute) until the terminal has shown `text` `times` times.
    pub fn wait_for(&mut self, text: &str, times: usize) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.seen.matches(text).count() < times {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match self.output.recv_timeout(left) {
                Ok(b) => self.seen.push_str(&String::from_utf8_lossy(&b)),
                Err(_) => panic!(
                    "waited for {text:?} ×{times}; the terminal showed:\n{}",
                    self.seen
                ),
            }
        }
    }

    /// Types `line` and Enter.
    pub fn type_line(&mut self, line: &str) {
        self.type_text(&format!("{line}\n"));
    }

    /// Types `text` as it is (typed ahead: read when the program asks).
    pub fn type_text(&mut self, text: &str) {
        use std::io::Write;
        let i = self.input.as_mut().expect("input still open");
        i.write_all(text.as_bytes()).unwrap();
        i.flush().unwrap();
    }

    /// Closes the input and waits for the end: `(exit code, everything shown)`.
    pub fn finish(mut self) -> (Option<i32>, String) {
        drop(self.input.take());
        let status = self.child.wait().unwrap();
        while let Ok(b) = self.output.recv_timeout(std::time::Duration::from_secs(10)) {
            self.seen.push_str(&String::from_utf8_lossy(&b));
        }
        (status.code(), self.seen)
    }
}
