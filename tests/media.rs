//! Real media, end to end through the binary: file-system detection (FAT32 through
//! `fusefat`, exFAT through `exfat-fuse` on a loop device), the per-file limit and
//! `--max-file-size`, models split the way llama.cpp loads them (checked with the PyPI
//! `gguf` reader), a split model that packs, verifies, installs, updates by a small pack
//! and runs, a damaged shard refused before loading, and space checks that refuse before
//! writing (a small tmpfs). Mounting needs root; CI runs as root, so these tests fail
//! rather than skip when a mount does not work.

use crate::util;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use offgrid::gguf::{self, MetaValue};
use offgrid::manifest::Manifest;
use predicates::prelude::*;
use util::{sha, snapshot, Ws};

/// A synthetic GGUF of `n` F32 tensors of `kib` KiB each, with a chat template.
fn model(ws: &Ws, rel: &str, n: usize, kib: usize, template: &str) -> PathBuf {
    let p = ws.path(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    let data: Vec<Vec<u8>> = (0..n)
        .map(|t| {
            (0..kib * 1024)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(t as u8))
                .collect()
        })
        .collect();
    let names: Vec<String> = (0..n).map(|t| format!("blk.{t}.w")).collect();
    let tensors: Vec<(&str, Vec<u64>, &[u8])> = names
        .iter()
        .zip(&data)
        .map(|(n, d)| (n.as_str(), vec![d.len() as u64 / 4], d.as_slice()))
        .collect();
    let mut buf = Vec::new();
    gguf::write_synthetic(
        &mut buf,
        &[
            ("general.architecture", MetaValue::Str("llama".into())),
            ("general.file_type", MetaValue::U32(3)),
            ("llama.context_length", MetaValue::U32(4096)),
            ("tokenizer.chat_template", MetaValue::Str(template.into())),
        ],
        &tensors,
    )
    .unwrap();
    fs::write(&p, buf).unwrap();
    p
}

fn manifest(root: &Path) -> Manifest {
    Manifest::parse(&fs::read(root.join("manifest.toml")).unwrap()).unwrap()
}

/// The model shards of a tree, `(path, shard, shards)`, in path order.
fn shards(m: &Manifest) -> Vec<(String, u32, u32)> {
    m.models()
        .map(|f| {
            let i = f.model.as_ref().unwrap();
            (f.path.clone(), i.shard.unwrap(), i.shards.unwrap())
        })
        .collect()
}

/// Reads `split.no`, `split.count`, `split.tensors.count` and the tensor names of each
/// file with the PyPI `gguf` package (an independent reader), one line per file.
fn python_split_keys(files: &[PathBuf]) -> Vec<String> {
    let script = r#"
import sys
from gguf import GGUFReader
for p in sys.argv[1:]:
    r = GGUFReader(p)
    def val(k):
        f = r.fields.get(k)
        return None if f is None else int(f.parts[f.data[0]][0])
    tmpl = r.fields.get("tokenizer.chat_template") is not None
    print(val("split.no"), val("split.count"), val("split.tensors.count"), len(r.tensors), tmpl)
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(files)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the PyPI gguf reader failed (pip install gguf; .ci/install-deps does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Writes `in-RELEASE/smol.gguf`, `in/smol.gguf` with its chat template replaced, and
/// runs `create-update-pack --since SINCE --release RELEASE -o OUT` of it; returns the
/// new model's path.
fn template_update(
    ws: &Ws,
    since: &str,
    release: &str,
    template: &str,
    out: &str,
    extra: &[&str],
) -> (PathBuf, assert_cmd::assert::Assert) {
    let rel = format!("in-{release}/smol.gguf");
    fs::create_dir_all(ws.path(&format!("in-{release}"))).unwrap();
    gguf::rewrite_string(
        &ws.path("in/smol.gguf"),
        &ws.path(&rel),
        "tokenizer.chat_template",
        template,
    )
    .unwrap();
    let mut a = vec![
        "create-update-pack",
        "--since",
        since,
        "--release",
        release,
        "--bundle-id",
        "org.example.media",
        "--model",
        &rel,
        "--sign-with",
        "hq.key",
        "--no-host-binary",
        "-o",
        out,
    ];
    a.extend_from_slice(extra);
    let run = ws.offgrid(&a);
    (ws.path(&rel), run)
}

/// `verify` and `models` of the stick at `stick`, then its install into `home`.
fn verify_list_install(ws: &Ws) {
    ws.offgrid(&["verify", "stick", "--pubkey", "hq.pub"])
        .success();
    ws.offgrid(&["models", "--stick", "stick"])
        .success()
        .stdout(predicate::str::contains("smol").count(1));
    ws.offgrid(&[
        "install", "--from", "stick", "--home", "home", "--pubkey", "hq.pub",
    ])
    .success();
}

#[test]
fn a_model_over_the_limit_is_split_and_travels_as_one_model() {
    let ws = Ws::new();
    // 8 tensors of 64 KiB; at most 150 KiB a file: metadata shard + 4 of two tensors.
    model(&ws, "in/smol.gguf", 8, 64, "{{ messages }}");
    let pack = |dest: &str, release: &str, model: &str| {
        ws.offgrid(&[
            "pack-usb",
            dest,
            "--release",
            release,
            "--bundle-id",
            "org.example.media",
            "--model",
            model,
            "--sign-with",
            "hq.key",
            "--no-host-binary",
            "--max-file-size",
            "150K",
        ])
    };
    pack("stick", "1.0", "in/smol.gguf")
        .success()
        .stdout(predicate::str::contains("smol").and(predicate::str::contains("in 5 shards")));
    let stick = ws.path("stick");
    let m = manifest(&stick);
    let sh = shards(&m);
    assert_eq!(sh.len(), 5, "{sh:?}");
    for (k, (path, shard, n)) in sh.iter().enumerate() {
        assert_eq!(path, &format!("models/smol-{:05}-of-00005.gguf", k + 1));
        assert_eq!((*shard, *n), (k as u32 + 1, 5));
    }
    for f in m.models() {
        assert!(f.size <= 150 * 1024, "{} is {} bytes", f.path, f.size);
        assert_eq!(f.model.as_ref().unwrap().name, "smol");
    }
    assert_eq!(m.logical_models().count(), 1);
    // The layout llama.cpp's gguf-split writes, read by an independent reader.
    let files: Vec<PathBuf> = sh.iter().map(|s| stick.join(&s.0)).collect();
    let lines = python_split_keys(&files);
    assert_eq!(lines[0], "0 5 8 0 True");
    let mut tensors = 0;
    for (k, l) in lines.iter().enumerate().skip(1) {
        let parts: Vec<&str> = l.split(' ').collect();
        assert_eq!(parts[..3], [k.to_string().as_str(), "5", "8"], "{l}");
        assert_eq!(parts[4], "False");
        tensors += parts[3].parse::<usize>().unwrap();
    }
    assert_eq!(tensors, 8);

    // Install, then an update whose only change is the chat template: shards 2..5 are
    // unchanged files, so the pack carries shard 1's bytes only.
    verify_list_install(&ws);
    let (model2, run) = template_update(
        &ws,
        "1.0",
        "1.1",
        "{{ messages }} edited",
        "u.ogpack",
        &["--json"],
    );
    let out = run.success().get_output().stdout.clone();
    let text = String::from_utf8(out).unwrap();
    let size = fs::metadata(ws.path("u.ogpack")).unwrap().len();
    let model_bytes = fs::metadata(&model2).unwrap().len();
    assert!(
        size * 8 < model_bytes,
        "a template edit cost {size} bytes for a {model_bytes}-byte model: {text}"
    );
    let report: serde_json::Value =
        serde_json::from_str(text.lines().find(|l| l.contains("update-pack")).unwrap()).unwrap();
    let parts = report["data"]["parts"].as_array().unwrap();
    for k in 1..=5 {
        let path = format!("models/smol-{k:05}-of-00005.gguf");
        let how: Vec<&str> = parts
            .iter()
            .filter(|p| p["target"] == path.as_str())
            .map(|p| p["how"].as_str().unwrap())
            .collect();
        let want = if k == 1 { "not unchanged" } else { "unchanged" };
        assert!(
            if k == 1 {
                how != ["unchanged"]
            } else {
                how == ["unchanged"]
            },
            "{path} should be {want}: {how:?} in {text}"
        );
    }
    ws.offgrid(&["apply-update", "u.ogpack", "--home", "home", "--dry-run"])
        .success()
        .stdout(predicate::str::contains("nothing written"));
    ws.offgrid(&["apply-update", "u.ogpack", "--home", "home"])
        .success();
    ws.offgrid(&["status", "--home", "home"])
        .success()
        .stdout(predicate::str::contains("1.1"));

    // A damaged shard 2 on the stick is caught by verify, named.
    let s2 = stick.join("models/smol-00002-of-00005.gguf");
    let mut b = fs::read(&s2).unwrap();
    let at = b.len() - 10;
    b[at] ^= 0xff;
    fs::write(&s2, b).unwrap();
    ws.offgrid(&["verify", "stick", "--pubkey", "hq.pub"])
        .code(1)
        .stderr(predicate::str::contains("smol-00002-of-00005.gguf"));
}

/// Bytes of the files under `roots`, each inode once (as `du` counts).
fn disk_usage(roots: &[PathBuf]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::BTreeSet::new();
    let mut n = 0;
    for e in roots
        .iter()
        .flat_map(|r| walkdir::WalkDir::new(r).into_iter().map(|e| e.unwrap()))
    {
        if e.file_type().is_file() {
            let m = e.metadata().unwrap();
            if seen.insert(m.ino()) {
                n += m.len();
            }
        }
    }
    n
}

#[test]
fn a_model_over_the_split_threshold_keeps_its_metadata_apart_so_a_site_stores_its_tensors_once() {
    use std::os::unix::fs::MetadataExt;
    let ws = Ws::new();
    // 8 tensors of 64 KiB: 512 KiB, under the default threshold (256 MiB), over 256K.
    model(&ws, "in/smol.gguf", 8, 64, "{{ messages }}");
    let pack = |dest: &str, extra: &[&str]| {
        let mut a = vec![
            "pack-usb",
            dest,
            "--release",
            "1.0",
            "--bundle-id",
            "org.example.media",
            "--model",
            "in/smol.gguf",
            "--sign-with",
            "hq.key",
            "--no-host-binary",
        ];
        a.extend_from_slice(extra);
        ws.offgrid(&a)
    };
    // Under the default threshold, and with `never`: one file.
    for (dest, extra) in [
        ("whole", &[][..]),
        ("never", &["--split-models-over", "never"][..]),
    ] {
        pack(dest, extra).success();
        let m = manifest(&ws.path(dest));
        let paths: Vec<&str> = m.models().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["models/smol.gguf"], "{dest}");
    }
    pack("bad", &["--split-models-over", "0"]).code(2).stderr(
        predicate::str::contains("--split-models-over").and(predicate::str::contains("help:")),
    );
    assert!(!ws.path("bad").join("manifest.toml").exists());

    // Over the threshold: the metadata alone in shard 1, every tensor in shard 2 (no
    // file limit on this medium), as an independent reader sees them.
    pack("stick", &["--split-models-over", "256K"]).success();
    let stick = ws.path("stick");
    let sh = shards(&manifest(&stick));
    assert_eq!(
        sh,
        [
            ("models/smol-00001-of-00002.gguf".to_owned(), 1, 2),
            ("models/smol-00002-of-00002.gguf".to_owned(), 2, 2)
        ]
    );
    let files: Vec<PathBuf> = sh.iter().map(|s| stick.join(&s.0)).collect();
    assert_eq!(python_split_keys(&files), ["0 2 8 0 True", "1 2 8 8 False"]);
    assert!(fs::metadata(&files[0]).unwrap().len() < 4096);
    verify_list_install(&ws);

    // Two updates that edit the chat template only. create-update-pack splits the new
    // release as its --since release was split (no flag needed): the tensor shard is
    // `unchanged`, and the packs are a few KiB.
    for (i, (since, v)) in [("1.0", "1.1"), ("1.1", "1.2")].into_iter().enumerate() {
        let out = format!("u{v}.ogpack");
        let template = format!("{{{{ messages }}}} edit {i}");
        template_update(&ws, since, v, &template, &out, &[])
            .1
            .success();
        let size = fs::metadata(ws.path(&out)).unwrap().len();
        assert!(size < 64 * 1024, "a template edit cost {size} bytes");
        ws.offgrid(&["apply-update", &out, "--home", "home", "--keep", "3"])
            .success();
    }
    ws.offgrid(&["status", "--home", "home", "--verify"])
        .success()
        .stdout(predicate::str::contains("1.2"));

    // Three kept releases: one inode for the tensor shard, three metadata shards; each
    // release past the first costs at most its own files other than the tensor shard
    // (manifest, metadata shard, scripts), never the tensors again.
    let home = ws.path("home");
    let dirs: Vec<PathBuf> = fs::read_dir(home.join("versions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(dirs.len(), 3, "{dirs:?}");
    let inode = |d: &Path, k: u32| {
        fs::metadata(d.join(format!("models/smol-0000{k}-of-00002.gguf")))
            .unwrap()
            .ino()
    };
    let tensors: std::collections::BTreeSet<u64> = dirs.iter().map(|d| inode(d, 2)).collect();
    let metas: std::collections::BTreeSet<u64> = dirs.iter().map(|d| inode(d, 1)).collect();
    assert_eq!((tensors.len(), metas.len()), (1, 3));
    let one = disk_usage(&[home.join("current/")]);
    let used = disk_usage(&[home.join("versions"), home.join("objects")]);
    let tensor_shard = fs::metadata(home.join("current/models/smol-00002-of-00002.gguf"))
        .unwrap()
        .len();
    assert!(tensor_shard > 512 * 1024);
    assert!(
        used <= one + 2 * (one - tensor_shard),
        "3 releases use {used} bytes, one {one} of which the tensor shard is {tensor_shard}"
    );
}

#[test]
fn an_already_split_model_is_one_model_by_its_first_shard_or_its_folder() {
    let ws = Ws::new();
    model(&ws, "in/smol.gguf", 6, 32, "t");
    // Split it once (as gguf-split would), then pack the shards without a limit.
    ws.offgrid(&[
        "pack-usb",
        "first",
        "--release",
        "1.0",
        "--model",
        "in/smol.gguf",
        "--sign-with",
        "hq.key",
        "--no-host-binary",
        "--max-file-size",
        "80K",
    ])
    .success();
    let n = shards(&manifest(&ws.path("first"))).len();
    assert!(n >= 3, "{n}");
    let first = format!("first/models/smol-00001-of-{n:05}.gguf");
    ws.offgrid(&[
        "pack-usb",
        "a",
        "--release",
        "1.1",
        "--model",
        &first,
        "--sign-with",
        "hq.key",
        "--no-host-binary",
    ])
    .success();
    let ma = manifest(&ws.path("a"));
    assert_eq!(shards(&ma).len(), n);
    assert_eq!(ma.default_model.as_deref(), Some("smol"));
    // A folder of shards, under another name.
    ws.offgrid(&[
        "pack-usb",
        "b",
        "--release",
        "1.2",
        "--model",
        "tiny=first/models",
        "--sign-with",
        "hq.key",
        "--no-host-binary",
    ])
    .success();
    let mb = manifest(&ws.path("b"));
    assert!(mb
        .models()
        .all(|f| f.model.as_ref().unwrap().name == "tiny"));
    assert_eq!(mb.models().count(), n);
    // Shard 2 is not a model's start; a missing shard is named.
    ws.offgrid(&[
        "pack-usb",
        "c",
        "--release",
        "1.3",
        "--model",
        &format!("first/models/smol-00002-of-{n:05}.gguf"),
        "--sign-with",
        "hq.key",
        "--no-host-binary",
    ])
    .code(2)
    .stderr(predicate::str::contains("not the first"));
    fs::remove_file(ws.path(&format!("first/models/smol-00003-of-{n:05}.gguf"))).unwrap();
    ws.offgrid(&[
        "pack-usb",
        "d",
        "--release",
        "1.3",
        "--model",
        &first,
        "--sign-with",
        "hq.key",
        "--no-host-binary",
    ])
    .code(2)
    .stderr(predicate::str::contains(format!(
        "smol-00003-of-{n:05}.gguf"
    )));
    assert!(!ws.path("c").exists() && !ws.path("d").exists());
}

#[test]
fn what_cannot_fit_is_refused_before_the_first_byte() {
    let ws = Ws::new();
    model(&ws, "in/smol.gguf", 4, 16, "t");
    let tool: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
    ws.file("in/tool", &tool);
    // A file that is not a model is not split: refused, naming it, its size and the limit.
    ws.offgrid(&[
        "pack-usb",
        "stick",
        "--release",
        "1.0",
        "--model",
        "in/smol.gguf",
        "--binary",
        "linux-aarch64=in/tool",
        "--sign-with",
        "hq.key",
        "--no-host-binary",
        "--max-file-size",
        "100K",
    ])
    .code(2)
    .stderr(
        predicate::str::contains("in/tool")
            .and(predicate::str::contains("307200 bytes"))
            .and(predicate::str::contains(
                "102400-byte file limit of --max-file-size",
            )),
    );
    assert!(!ws.path("stick").exists());
    // A tensor larger than the limit cannot be split.
    model(&ws, "in/big.gguf", 1, 200, "t");
    ws.offgrid(&[
        "pack-usb",
        "stick",
        "--release",
        "1.0",
        "--model",
        "in/big.gguf",
        "--sign-with",
        "hq.key",
        "--no-host-binary",
        "--max-file-size",
        "100K",
    ])
    .code(2)
    .stderr(predicate::str::contains("tensor 'blk.0.w' alone is"));
    assert!(!ws.path("stick").exists());
    // Bad sizes are usage errors.
    ws.offgrid(&[
        "pack-usb",
        "stick",
        "--release",
        "1.0",
        "--model",
        "in/smol.gguf",
        "--sign-with",
        "hq.key",
        "--max-file-size",
        "4X",
    ])
    .code(2)
    .stderr(predicate::str::contains(
        "--max-file-size '4X' is not a size",
    ));
    // A dry run prints the plan, splits included, and writes nothing.
    ws.offgrid(&[
        "pack-usb",
        "stick",
        "--release",
        "1.0",
        "--model",
        "in/smol.gguf",
        "--sign-with",
        "hq.key",
        "--no-host-binary",
        "--max-file-size",
        "40K",
        "--dry-run",
    ])
    .success()
    .stdout(
        predicate::str::contains("nothing written")
            .and(predicate::str::contains("(shard 1 of"))
            .and(predicate::str::contains("space:")),
    );
    assert!(!ws.path("stick").exists());
}

/// Runs a command that must succeed.
pub(crate) fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

/// A FUSE or kernel mount, unmounted (and its loop device freed) on drop.
pub(crate) struct Mounted {
    at: PathBuf,
    fuse: bool,
    loopdev: Option<String>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = if self.fuse {
            Command::new("fusermount").arg("-u").arg(&self.at).status()
        } else {
            Command::new("umount").arg(&self.at).status()
        };
        if let Some(l) = &self.loopdev {
            let _ = Command::new("losetup").args(["-d", l]).status();
        }
    }
}

/// A FAT32 image of `mib` MiB mounted at `at`: by the kernel when it can, else `fusefat`.
pub(crate) fn fat32(img: &Path, at: &Path, mib: u64) -> Mounted {
    sh(Command::new("truncate").arg(format!("-s{mib}M")).arg(img));
    sh(Command::new("mkfs.vfat")
        .args(["-F", "32"])
        .arg(img)
        .stdout(Stdio::null()));
    fs::create_dir_all(at).unwrap();
    let kernel = Command::new("mount")
        .args(["-o", "loop"])
        .arg(img)
        .arg(at)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if kernel {
        return Mounted {
            at: at.into(),
            fuse: false,
            loopdev: None,
        };
    }
    sh(Command::new("fusefat")
        .args(["-o", "rw+"])
        .arg(img)
        .arg(at)
        .stdout(Stdio::null()));
    Mounted {
        at: at.into(),
        fuse: true,
        loopdev: None,
    }
}

/// An exFAT image mounted at `at`: by the kernel when it can, else `exfat-fuse` on a loop
/// device (as root it wants a block device).
pub(crate) fn exfat(img: &Path, at: &Path, mib: u64) -> Mounted {
    sh(Command::new("truncate").arg(format!("-s{mib}M")).arg(img));
    sh(Command::new("mkfs.exfat").arg(img).stdout(Stdio::null()));
    fs::create_dir_all(at).unwrap();
    let kernel = Command::new("mount")
        .args(["-t", "exfat", "-o", "loop"])
        .arg(img)
        .arg(at)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if kernel {
        return Mounted {
            at: at.into(),
            fuse: false,
            loopdev: None,
        };
    }
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(img)
        .output()
        .unwrap();
    assert!(out.status.success(), "losetup: {out:?}");
    let dev = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let m = Mounted {
        at: at.into(),
        fuse: true,
        loopdev: Some(dev.clone()),
    };
    sh(Command::new("mount.exfat-fuse")
        .arg(&dev)
        .arg(at)
        .stdout(Stdio::null())
        .stderr(Stdio::null()));
    m
}

#[test]
fn fat32_is_detected_its_limit_refuses_before_writing_and_a_split_pack_verifies() {
    let ws = Ws::new();
    let at = ws.path("fat");
    let _m = fat32(&ws.path("fat.img"), &at, 64);
    // A 4.5 GiB input (sparse) cannot be a FAT file: refused before anything is written.
    let big = ws.path("in/big.bin");
    fs::create_dir_all(big.parent().unwrap()).unwrap();
    fs::File::create(&big).unwrap().set_len(9 << 29).unwrap();
    model(&ws, "in/smol.gguf", 6, 32, "t");
    let before = snapshot(&at);
    ws.offgrid(&[
        "pack-usb",
        "fat/stick",
        "--release",
        "1.0",
        "--model",
        "in/smol.gguf",
        "--binary",
        "linux-aarch64=in/big.bin",
        "--sign-with",
        "hq.key",
        "--no-host-binary",
    ])
    .code(2)
    .stderr(
        predicate::str::contains("in/big.bin")
            .and(predicate::str::contains("4831838208 bytes"))
            .and(predicate::str::contains(
                "4294967295-byte file limit of FAT",
            )),
    );
    assert_eq!(snapshot(&at), before, "the refused pack wrote to the stick");
    // The dry run names the medium; a split pack onto FAT verifies.
    ws.offgrid(&[
        "pack-usb",
        "fat/stick",
        "--release",
        "1.0",
        "--model",
        "in/smol.gguf",
        "--sign-with",
        "hq.key",
        "--no-host-binary",
        "--dry-run",
    ])
    .success()
    .stdout(predicate::str::contains(
        "medium:    FAT, files up to 4.0 GiB",
    ));
    ws.offgrid(&[
        "pack-usb",
        "fat/stick",
        "--release",
        "1.0",
        "--model",
        "in/smol.gguf",
        "--sign-with",
        "hq.key",
        "--no-host-binary",
        "--max-file-size",
        "80K",
    ])
    .success()
    .stdout(predicate::str::contains(
        "medium:    FAT, files up to 80.0 KiB (--max-file-size)",
    ));
    assert!(shards(&manifest(&ws.path("fat/stick"))).len() >= 3);
    ws.offgrid(&["verify", "fat/stick", "--pubkey", "hq.pub"])
        .success();
}

#[test]
fn exfat_is_detected_and_has_no_file_limit() {
    let ws = Ws::new();
    let at = ws.path("ex");
    let _m = exfat(&ws.path("ex.img"), &at, 64);
    model(&ws, "in/smol.gguf", 6, 32, "t");
    ws.offgrid(&[
        "pack-usb",
        "ex/stick",
        "--release",
        "1.0",
        "--model",
        "in/smol.gguf",
        "--sign-with",
        "hq.key",
        "--no-host-binary",
    ])
    .success()
    .stdout(predicate::str::contains(
        "medium:    exFAT, no file size limit",
    ));
    let m = manifest(&ws.path("ex/stick"));
    assert_eq!(m.models().count(), 1);
    assert!(m
        .models()
        .all(|f| f.model.as_ref().unwrap().shards.is_none()));
    ws.offgrid(&["verify", "ex/stick", "--pubkey", "hq.pub"])
        .success();
}

/// A tmpfs of `kib` KiB at `at`, unmounted on drop.
fn tmpfs(at: &Path, kib: u64) -> Mounted {
    fs::create_dir_all(at).unwrap();
    sh(Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
        .arg(at));
    Mounted {
        at: at.into(),
        fuse: false,
        loopdev: None,
    }
}

#[test]
fn no_space_is_refused_before_writing_with_both_numbers() {
    let ws = Ws::new();
    model(&ws, "in/smol.gguf", 8, 128, "t"); // 1 MiB
    ws.offgrid(&[
        "pack-usb",
        "stick",
        "--release",
        "1.0",
        "--model",
        "in/smol.gguf",
        "--sign-with",
        "hq.key",
        "--no-host-binary",
    ])
    .success();
    let small = ws.path("small");
    let _m = tmpfs(&small, 512);
    // pack-usb onto a medium too small.
    ws.offgrid(&[
        "pack-usb",
        "small/stick",
        "--release",
        "1.0",
        "--model",
        "in/smol.gguf",
        "--sign-with",
        "hq.key",
        "--no-host-binary",
    ])
    .code(2)
    .stderr(predicate::str::contains("bytes free, but the tree needs"));
    // install: the plan says it does not fit; the install refuses; nothing is written.
    ws.offgrid(&[
        "install",
        "--from",
        "stick",
        "--home",
        "small/home",
        "--pubkey",
        "hq.pub",
        "--dry-run",
    ])
    .code(2)
    .stdout(predicate::str::contains("nothing written"))
    .stderr(predicate::str::contains(
        "bytes free, but the release needs",
    ));
    assert!(!small.join("home").exists(), "a dry run created the home");
    ws.offgrid(&[
        "install",
        "--from",
        "stick",
        "--home",
        "small/home",
        "--pubkey",
        "hq.pub",
    ])
    .code(2)
    .stderr(
        predicate::str::contains("bytes free, but the release needs")
            .and(predicate::str::contains("help: free space")),
    );
    let left: Vec<_> = walk(&small);
    assert!(
        left.iter()
            .all(|p| !p.is_file() || p.ends_with(".lock") || p.to_string_lossy().contains("lock")),
        "install wrote before refusing: {left:?}"
    );
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(rd) = fs::read_dir(root) {
        for e in rd.flatten() {
            let p = e.path();
            v.push(p.clone());
            if p.is_dir() {
                v.extend(walk(&p));
            }
        }
    }
    v
}

/// The real test model split into at least 3 shards loads through `offgrid run` from a
/// stick (llama.cpp is given shard 1 and opens the rest); a damaged shard 2 is refused
/// before anything is loaded.
#[cfg(feature = "llama")]
#[test]
fn the_real_model_split_runs_and_a_damaged_shard_is_refused_before_loading() {
    let ws = Ws::new();
    let real = util::real_model();
    ws.offgrid(&[
        "pack-usb",
        "stick",
        "--release",
        "1.0",
        "--model",
        &format!("smol={}", real.display()),
        "--sign-with",
        "hq.key",
        "--no-host-binary",
        "--max-file-size",
        "40M",
    ])
    .success();
    let stick = ws.path("stick");
    let sh = shards(&manifest(&stick));
    assert!(sh.len() >= 3, "{sh:?}");
    let files: Vec<PathBuf> = sh.iter().map(|s| stick.join(&s.0)).collect();
    let lines = python_split_keys(&files);
    let n = sh.len();
    assert!(lines[0].starts_with(&format!("0 {n} ")), "{lines:?}");
    let run = |extra: &[&str]| {
        let mut c = assert_cmd::Command::cargo_bin("offgrid").unwrap();
        c.current_dir(ws.dir.path())
            .env("OFFGRID_HOME", ws.path("home"))
            .env("OFFGRID_CACHE_DIR", ws.path("cache"))
            .env_remove("OFFGRID_PORTABLE")
            .env_remove("OFFGRID_MODELS_DIR")
            .args(["run", "smol", "--stick", "stick", "--pubkey", "hq.pub"])
            .args(["--prompt", "What is the capital of France?", "--temp", "0"])
            .args(["--max-tokens", "24"])
            .args(extra)
            .timeout(std::time::Duration::from_secs(300));
        c.assert()
    };
    run(&[]).success().stdout(predicate::str::contains("Paris"));
    let s2 = &files[1];
    let mut b = fs::read(s2).unwrap();
    let at = b.len() / 2;
    b[at] ^= 0x55;
    fs::write(s2, b).unwrap();
    run(&[]).code(1).stderr(
        predicate::str::contains(format!("smol-00002-of-{n:05}.gguf"))
            .and(predicate::str::contains(
                "does not match the signed manifest",
            ))
            .and(predicate::str::contains("llama_model_load").not()),
    );
}

#[test]
fn the_split_example_manifest_parses_and_is_canonical() {
    let text = include_str!("../formats/manifest.split.example.toml");
    let m = Manifest::parse(text.as_bytes()).unwrap();
    let bare: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        m.to_toml(),
        bare.trim_start(),
        "the example is not in canonical form"
    );
    assert_eq!(m.logical_models().count(), 1);
    let first = m.logical_models().next().unwrap();
    assert_eq!(m.shards_of(first).len(), 3);
    // A manifest lacking a shard is refused.
    let mut broken = m.clone();
    broken.files.retain(|f| !f.path.contains("-00002-of-"));
    assert!(Manifest::parse(broken.to_toml().as_bytes()).is_err());
}

/// A model split into shards across volumes: the shards are written at HQ (the scratch
/// folder) and hashed before the manifest is signed, each volume holds its shards, and
/// the HQ history records every shard although no input file holds it.
#[test]
fn a_model_split_over_volumes_is_recorded_at_hq_from_its_shards() {
    let ws = Ws::new();
    model(&ws, "in/smol.gguf", 6, 100, "{{ messages }}");
    ws.offgrid(&[
        "pack-usb",
        "v1",
        "v2",
        "v3",
        "--release",
        "1.0",
        "--model",
        "in/smol.gguf",
        "--sign-with",
        "hq.key",
        "--no-host-binary",
        "--volume-size",
        "300K",
    ])
    .success()
    .stdout(predicate::str::contains("as 3 volume(s)"));
    let m = manifest(&ws.path("v1"));
    assert_eq!(m.volumes, Some(3));
    assert!(shards(&m).len() >= 3, "{:?}", shards(&m));
    let hq = ws.path("hq-history");
    for f in &m.files {
        let obj = offgrid::update::history::object_path(&hq, &f.sha256);
        assert_eq!(sha(&fs::read(&obj).unwrap()), f.sha256, "{}", f.path);
    }
    for v in ["v1", "v2", "v3"] {
        ws.offgrid(&["verify", v, "--pubkey", "hq.pub"]).success();
    }
    for v in ["v3", "v1"] {
        ws.offgrid(&[
            "install", "--from", v, "--home", "home", "--pubkey", "hq.pub",
        ])
        .code(1);
    }
    ws.offgrid(&[
        "install", "--from", "v2", "--home", "home", "--pubkey", "hq.pub",
    ])
    .success();
}
