//! Helpers shared by the pack-usb and launcher-script tests: temp workspaces, synthetic
//! GGUF models, stock `minisign -G -W` key pairs, and running the real binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::prelude::*;
use sha2::{Digest, Sha256};

/// A temp workspace with one unencrypted key pair made by the stock minisign tool.
pub struct Ws {
    pub dir: tempfile::TempDir,
}

impl Ws {
    pub fn new() -> Ws {
        let ws = Ws {
            dir: tempfile::tempdir().unwrap(),
        };
        ws.keypair("hq");
        ws
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Makes `NAME.key` / `NAME.pub` with `minisign -G -W` (no password).
    pub fn keypair(&self, name: &str) {
        let st = Command::new("minisign")
            .args(["-G", "-W", "-f", "-p"])
            .arg(self.path(&format!("{name}.pub")))
            .arg("-s")
            .arg(self.path(&format!("{name}.key")))
            .output()
            .expect("minisign is installed");
        assert!(st.status.success(), "{st:?}");
    }

    /// The key id minisign prints in the public key file's comment, as 16 hex digits
    /// (minisign does not zero-pad it: one key in 16 shows 15 digits).
    pub fn key_id(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.path(&format!("{name}.pub"))).unwrap();
        let id = text.lines().next().unwrap().rsplit(' ').next().unwrap();
        format!("{id:0>16}")
    }

    /// Writes a synthetic GGUF model of about `kib` KiB at `rel`.
    pub fn model(&self, rel: &str, kib: usize, seed: u8) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let n = kib * 1024 / 4;
        let data: Vec<u8> = (0..n * 4)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect();
        let mut buf = Vec::new();
        offgrid::gguf::write_synthetic(
            &mut buf,
            &[
                (
                    "general.architecture",
                    offgrid::gguf::MetaValue::Str("llama".into()),
                ),
                ("general.file_type", offgrid::gguf::MetaValue::U32(3)),
                ("llama.context_length", offgrid::gguf::MetaValue::U32(4096)),
            ],
            &[("w", vec![n as u64], &data)],
        )
        .unwrap();
        std::fs::write(&p, buf).unwrap();
        p
    }

    /// Writes a file at `rel` (folders made as needed).
    pub fn file(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// `offgrid ARGS` run in the workspace, no password in the environment.
    pub fn offgrid(&self, args: &[&str]) -> assert_cmd::assert::Assert {
        self.offgrid_pw(None, args)
    }

    /// `offgrid ARGS` with OFFGRID_PASSWORD set to `password` (or unset), stdin closed.
    pub fn offgrid_pw(&self, password: Option<&str>, args: &[&str]) -> assert_cmd::assert::Assert {
        let mut c = Command::cargo_bin("offgrid").unwrap();
        c.current_dir(self.dir.path())
            .env_remove("OFFGRID_PASSWORD")
            // Keep the HQ release history of every test inside its own workspace.
            .env("OFFGRID_HQ", self.dir.path().join("hq-history"))
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .args(args);
        if let Some(p) = password {
            c.env("OFFGRID_PASSWORD", p);
        }
        c.assert()
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
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
            (rel, std::fs::read(e.path()).unwrap())
        })
        .collect();
    v.sort();
    v
}
