//! [`Ws`], the workspace of the pack-usb, launcher-script and CLI tests: a temp folder
//! with stock `minisign -G -W` key pairs, synthetic GGUF models and files, and the real
//! binary run inside it.

use std::path::PathBuf;
use std::process::Command;

use assert_cmd::prelude::*;

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
        super::keypair(self.dir.path(), name);
    }

    /// The key id of `NAME.pub`, as offgrid names signature files (16 hex digits).
    pub fn key_id(&self, name: &str) -> String {
        super::key_id(&self.path(&format!("{name}.pub")))
    }

    /// Writes a synthetic GGUF model of about `kib` KiB at `rel`.
    pub fn model(&self, rel: &str, kib: usize, seed: u8) -> PathBuf {
        self.model_with_template(rel, kib, seed, None)
    }

    /// [`Ws::model`] with `tokenizer.chat_template` set to `template` when given.
    pub fn model_with_template(
        &self,
        rel: &str,
        kib: usize,
        seed: u8,
        template: Option<&str>,
    ) -> PathBuf {
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
            ]
            .into_iter()
            .chain(template.map(|t| {
                (
                    "tokenizer.chat_template",
                    offgrid::gguf::MetaValue::Str(t.into()),
                )
            }))
            .collect::<Vec<_>>(),
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

    /// `pack-usb --volume-size 300K` of release `rel` (the model `in/smol.gguf` and
    /// `in/big.bin` as `data/big.bin`, both made by the caller) into `dests`.
    pub fn pack_volumes(&self, rel: &str, dests: &[&str]) -> assert_cmd::assert::Assert {
        self.pack_big(rel, dests, &["--volume-size", "300K"])
    }

    /// `pack-usb` of release `rel` (`in/smol.gguf`, `in/big.bin` as `data/big.bin`) into
    /// `dests`, with the medium options `medium` (`--volume-size …`, `--max-file-size …`).
    pub fn pack_big(
        &self,
        rel: &str,
        dests: &[&str],
        medium: &[&str],
    ) -> assert_cmd::assert::Assert {
        let mut args = vec!["pack-usb"];
        args.extend_from_slice(dests);
        args.extend_from_slice(&[
            "--release",
            rel,
            "--model",
            "in/smol.gguf",
            "--add",
            "data/big.bin=in/big.bin",
            "--sign-with",
            "hq.key",
            "--no-host-binary",
        ]);
        args.extend_from_slice(medium);
        self.offgrid(&args)
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
