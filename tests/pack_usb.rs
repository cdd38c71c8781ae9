//! `offgrid pack-usb` end to end: the tree it writes (checked file by file, with the
//! stock minisign tool and with the README's `awk | sha256sum -c` line), recipes and
//! flags, every refused input with its exit code and message, and that a failed or
//! refused pack leaves the previous tree exactly as it was.

use crate::util;

use std::process::Command;

use offgrid::manifest::{FileKind, Manifest};
use predicates::prelude::*;
use util::{sha, snapshot, Ws};

fn manifest(ws: &Ws, dest: &str) -> Manifest {
    let bytes = std::fs::read(ws.path(dest).join("manifest.toml")).unwrap();
    Manifest::parse(&bytes).unwrap()
}

/// A first pack of release 1.0 with one model into `stick`.
fn pack_v1(ws: &Ws) {
    ws.model("in/tiny.gguf", 64, 1);
    ws.offgrid(&[
        "pack-usb",
        "stick",
        "--release",
        "1.0",
        "--bundle-id",
        "org.example.clinic",
        "--model",
        "in/tiny.gguf",
        "--sign-with",
        "hq.key",
    ])
    .success();
}

#[test]
fn packs_a_signed_tree_that_stock_tools_verify() {
    let ws = Ws::new();
    ws.keypair("second");
    let tiny = ws.model("in/tiny.gguf", 5 * 1024 + 3, 1); // more than one 4 MiB chunk
    let big = ws.model("in/other/q.v2.gguf", 100, 2);
    let arm = ws.file("dist/arm/offgrid", b"#!/bin/sh\necho arm\n");
    ws.file("CHANGES.md", b"# 1.2.0\nfirst\n");
    let out = ws
        .offgrid(&[
            "pack-usb",
            "stick",
            "--release",
            "1.2.0",
            "--bundle-id",
            "org.example.clinic",
            "--model",
            "in/tiny.gguf",
            "--model",
            "triage=in/other/q.v2.gguf",
            "--binary",
            "linux-aarch64=dist/arm/offgrid",
            "--changelog",
            "CHANGES.md",
            "--default-model",
            "triage",
            "--sign-with",
            "hq.key",
            "--sign-with",
            "second.key",
        ])
        .success();
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        stdout.contains("packed release 1.2.0 of org.example.clinic"),
        "{stdout}"
    );
    assert!(stdout.contains(&ws.key_id("hq")), "{stdout}");
    assert!(stdout.contains(&ws.key_id("second")), "{stdout}");

    let root = ws.path("stick");
    let m = manifest(&ws, "stick");
    assert_eq!(m.bundle_id, "org.example.clinic");
    assert_eq!(m.release.as_str(), "1.2.0");
    assert_eq!(m.default_model.as_deref(), Some("triage"));
    let host = offgrid::platform::Platform::host().to_string();
    assert!(m.platforms.contains(&"linux-aarch64".to_owned()));
    assert!(m.platforms.contains(&host));

    // Every file on the stick is in the manifest with its true hash, and vice versa.
    let files = snapshot(&root);
    let listed: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    for (path, bytes) in &files {
        if path == "manifest.toml" || path.starts_with("signatures/") {
            continue;
        }
        let e = m.file(path).unwrap_or_else(|| panic!("{path} not listed"));
        assert_eq!(e.size, bytes.len() as u64, "{path}");
        assert_eq!(e.sha256, sha(bytes), "{path}");
        assert_eq!(
            e.chunks.len() as u64,
            e.size.div_ceil(e.chunk_size),
            "{path}"
        );
        let first = &bytes[..bytes.len().min(e.chunk_size as usize)];
        if !bytes.is_empty() {
            assert_eq!(e.chunks[0], sha(first), "{path}");
        }
    }
    assert_eq!(files.len(), listed.len() + 3, "{listed:?}"); // + manifest + 2 signatures
    for p in [
        "models/tiny.gguf",
        "models/triage.gguf",
        "bin/linux-aarch64/offgrid",
        "run.sh",
        "run.bat",
        "install.sh",
        "install.bat",
        "README.txt",
        "CHANGELOG.txt",
    ] {
        assert!(listed.contains(&p), "{p} missing from {listed:?}");
    }
    assert!(listed.contains(&format!("bin/{host}/offgrid").as_str()));
    // Plain copies: models byte-identical, binaries too (the host one is this offgrid).
    assert_eq!(
        std::fs::read(root.join("models/tiny.gguf")).unwrap(),
        std::fs::read(&tiny).unwrap()
    );
    assert_eq!(
        std::fs::read(root.join("models/triage.gguf")).unwrap(),
        std::fs::read(&big).unwrap()
    );
    assert_eq!(
        std::fs::read(root.join("bin/linux-aarch64/offgrid")).unwrap(),
        std::fs::read(&arm).unwrap()
    );
    let exe = assert_cmd::cargo::cargo_bin("offgrid");
    assert_eq!(
        std::fs::read(root.join(format!("bin/{host}/offgrid"))).unwrap(),
        std::fs::read(exe).unwrap()
    );
    // Kinds, platforms, modes, model metadata.
    let t = m.file("models/triage.gguf").unwrap();
    assert_eq!(t.kind, FileKind::Model);
    let info = t.model.as_ref().unwrap();
    assert_eq!(info.name, "triage");
    assert_eq!(info.architecture.as_deref(), Some("llama"));
    assert_eq!(info.quantization.as_deref(), Some("Q4_1"));
    assert_eq!(info.context_length, Some(4096));
    assert_eq!(info.parameters, Some(100 * 1024 / 4));
    let b = m.file("bin/linux-aarch64/offgrid").unwrap();
    assert_eq!(
        (b.kind, b.platform.as_deref(), b.mode),
        (FileKind::Binary, Some("linux-aarch64"), Some(0o755))
    );
    assert_eq!(m.file("run.sh").unwrap().mode, Some(0o755));
    assert_eq!(m.file("CHANGELOG.txt").unwrap().kind, FileKind::Changelog);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }
    // No staging left, manifest text is canonical.
    assert!(!root.join(".offgrid-staging").exists());
    let text = std::fs::read_to_string(root.join("manifest.toml")).unwrap();
    assert_eq!(text, m.to_toml());

    // The stock minisign tool accepts each signature over the manifest, and its trusted
    // comment names the bundle and release.
    for key in ["hq", "second"] {
        let id = ws.key_id(key);
        let out = Command::new("minisign")
            .current_dir(&root)
            .args(["-V", "-m", "manifest.toml", "-x"])
            .arg(format!("signatures/{id}.minisig"))
            .arg("-p")
            .arg(ws.path(&format!("{key}.pub")))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(
            s.contains("org.example.clinic") && s.contains("1.2.0"),
            "{s}"
        );
    }
    // The README's stock-tool check of every file works as written.
    let readme = std::fs::read_to_string(root.join("README.txt")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.contains("sha256sum -c"))
        .unwrap()
        .trim()
        .to_owned();
    let out = Command::new("sh")
        .current_dir(&root)
        .args(["-c", &line])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let ok = String::from_utf8_lossy(&out.stdout);
    assert_eq!(ok.matches(": OK").count(), m.files.len(), "{ok}");
    // ... and says what is on the stick.
    for want in [
        "1.2.0",
        "org.example.clinic",
        "triage",
        "tiny",
        "linux-aarch64",
        &ws.key_id("hq"),
        "Q4_1",
    ] {
        assert!(readme.contains(want), "README lacks {want}:\n{readme}");
    }
    // The README's minisign lines work as written (run beside a copy of hq.pub).
    std::fs::copy(ws.path("hq.pub"), root.join("hq.pub")).unwrap();
    let lines: Vec<&str> = readme
        .lines()
        .filter(|l| l.trim_start().starts_with("minisign -V"))
        .collect();
    assert_eq!(lines.len(), 2, "one line per signer");
    let hq_line = lines.iter().find(|l| l.contains(&ws.key_id("hq"))).unwrap();
    let out = Command::new("sh")
        .current_dir(&root)
        .args(["-c", hq_line.trim()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{hq_line}: {out:?}");
    std::fs::remove_file(root.join("hq.pub")).unwrap();
    // offgrid's own verify accepts the tree with either key.
    ws.offgrid(&["verify", "stick", "--pubkey", "second.pub"])
        .success()
        .stdout(predicate::str::contains("verified release 1.2.0"));
    // A byte flipped in a model is caught by that same line, and by verify (exit 1).
    let mut bytes = std::fs::read(root.join("models/tiny.gguf")).unwrap();
    let n = bytes.len() - 10;
    bytes[n] ^= 1;
    std::fs::write(root.join("models/tiny.gguf"), bytes).unwrap();
    let out = Command::new("sh")
        .current_dir(&root)
        .args(["-c", &line])
        .output()
        .unwrap();
    assert!(!out.status.success());
    ws.offgrid(&["verify", "stick", "--pubkey", "hq.pub"])
        .code(1)
        .stderr(predicate::str::contains("'models/tiny.gguf': bytes"));
}

#[test]
fn packs_from_a_recipe_with_paths_relative_to_it() {
    let ws = Ws::new();
    ws.model("rel/models/triage.gguf", 16, 3);
    ws.model("rel/models/second.gguf", 16, 4);
    ws.file("rel/dist/mac", b"mac binary");
    ws.file("rel/CHANGELOG.md", b"changes");
    std::fs::rename(ws.path("hq.key"), ws.path("rel/hq.key")).unwrap();
    ws.file(
        "rel/offgrid.toml",
        br#"
bundle_id = "org.example.ship"
release = "2026.11.2"
default_model = "second"
changelog = "CHANGELOG.md"
signers = ["hq.key"]
host_binary = false

[[models]]
name = "triage"
file = "models/triage.gguf"

[[models]]
file = "models/second.gguf"

[binaries]
macos-aarch64 = "dist/mac"
"#,
    );
    ws.offgrid(&["pack-usb", "out", "--recipe", "rel/offgrid.toml"])
        .success();
    let m = manifest(&ws, "out");
    assert_eq!(m.bundle_id, "org.example.ship");
    assert_eq!(m.release.as_str(), "2026.11.2");
    assert_eq!(m.default_model.as_deref(), Some("second"));
    assert_eq!(m.platforms, vec!["macos-aarch64".to_owned()]);
    assert!(m.file("models/triage.gguf").is_some());
    assert!(m.file("models/second.gguf").is_some());
    assert!(m.file("CHANGELOG.txt").is_some());
    assert!(ws
        .path("out/signatures")
        .join(format!("{}.minisig", ws.key_id("hq")))
        .is_file());

    // Flags override the recipe's release and add a model.
    ws.model("extra.gguf", 8, 5);
    ws.offgrid(&[
        "pack-usb",
        "out2",
        "--recipe",
        "rel/offgrid.toml",
        "--release",
        "2026.11.3",
        "--model",
        "extra.gguf",
    ])
    .success();
    let m = manifest(&ws, "out2");
    assert_eq!(m.release.as_str(), "2026.11.3");
    assert_eq!(m.models().count(), 3);
}

#[test]
fn the_example_recipe_in_formats_packs_as_documented() {
    // Copy formats/offgrid.toml beside every file it names, then pack with it alone.
    let ws = Ws::new();
    let text = include_str!("../formats/offgrid.toml");
    ws.file("rel/offgrid.toml", text.as_bytes());
    ws.model("rel/models/triage-3b-q4_k_m.gguf", 16, 1);
    ws.model("rel/models/translate-1b-q8_0.gguf", 16, 2);
    for p in ["linux-x86_64", "linux-aarch64", "macos-aarch64"] {
        ws.file(&format!("rel/dist/{p}/offgrid"), p.as_bytes());
    }
    ws.file("rel/dist/windows-x86_64/offgrid.exe", b"MZ");
    ws.file("rel/CHANGELOG.md", b"# 1.4.0");
    // Its [[files]] (SPEC.md §18.1): two platforms' programs and a folder of documents.
    for p in ["linux-x86_64", "linux-aarch64"] {
        ws.file(&format!("rel/dist/{p}/triage-cli"), b"#!/bin/sh\n");
    }
    ws.file("rel/docs/protocols.txt", b"protocols");
    std::fs::create_dir_all(ws.path("rel/keys")).unwrap();
    std::fs::rename(ws.path("hq.key"), ws.path("rel/keys/hq.key")).unwrap();
    ws.offgrid(&["pack-usb", "stick", "--recipe", "rel/offgrid.toml"])
        .success();
    let m = manifest(&ws, "stick");
    assert_eq!(m.bundle_id, "org.example.clinic");
    assert_eq!(m.release.as_str(), "1.4.0");
    assert_eq!(m.default_model.as_deref(), Some("triage"));
    assert_eq!(
        m.platforms,
        [
            "linux-aarch64",
            "linux-x86_64",
            "macos-aarch64",
            "windows-x86_64"
        ],
        "host_binary = false adds nothing"
    );
    let names: Vec<&str> = m
        .models()
        .map(|f| f.model.as_ref().unwrap().name.as_str())
        .collect();
    assert_eq!(names, ["translate-1b-q8_0", "triage"]);
    assert!(m.file("bin/windows-x86_64/offgrid.exe").is_some());
    assert!(m.file("CHANGELOG.txt").is_some());
    ws.offgrid(&["verify", "stick", "--pubkey", "hq.pub"])
        .success();
}

#[test]
fn the_example_manifest_parses() {
    let text = include_str!("../formats/manifest.example.toml");
    let m = Manifest::parse(text.as_bytes()).unwrap();
    // Less its comment lines, the example is exactly what pack-usb writes.
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
    assert!(m.models().count() >= 1);
}

/// Runs a pack expected to fail with exit code 2 and a message containing `want`.
fn refused(ws: &Ws, args: &[&str], want: &str) {
    let out = ws.offgrid(args).code(2);
    let err = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(err.contains(want), "stderr lacks {want:?}:\n{err}");
    assert!(err.starts_with("error: "), "{err}");
}

#[test]
fn refuses_bad_inputs_before_writing_anything() {
    let ws = Ws::new();
    ws.model("in/tiny.gguf", 8, 1);
    ws.model("other/tiny.gguf", 8, 2);
    ws.model("in/aux.gguf", 8, 3);
    ws.model("in/what?.gguf", 8, 4);
    ws.model("in/Tiny2.gguf", 8, 5);
    ws.model("in/tiny2.gguf", 8, 6);
    ws.file("in/notgguf.gguf", b"this is not a model at all");
    let k = ["--sign-with", "hq.key"];
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["pack-usb", "stick", "--release", "1.0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |extra: &[&str], want: &str| {
        let v = base(extra);
        let args: Vec<&str> = v.iter().map(String::as_str).collect();
        refused(&ws, &args, want);
        assert!(
            !ws.path("stick").exists(),
            "{extra:?} wrote the destination"
        );
    };
    run(
        &["--model", "in/missing.gguf", k[0], k[1]],
        "model 'missing': 'in/missing.gguf' does not exist",
    );
    run(
        &[
            "--model",
            "in/tiny.gguf",
            "--model",
            "other/tiny.gguf",
            k[0],
            k[1],
        ],
        "two models are named 'tiny'",
    );
    run(
        &[
            "--model",
            "in/Tiny2.gguf",
            "--model",
            "in/tiny2.gguf",
            k[0],
            k[1],
        ],
        "two models are named 'tiny2'",
    );
    run(
        &["--model", "in/aux.gguf", k[0], k[1]],
        "reserved device name 'aux'",
    );
    run(
        &["--model", "in/what?.gguf", k[0], k[1]],
        "'?', which FAT32/exFAT/NTFS cannot hold",
    );
    run(
        &["--model", "in/notgguf.gguf", k[0], k[1]],
        "'in/notgguf.gguf' is not a GGUF model",
    );
    run(
        &["--binary", "linux-amd64=in/tiny.gguf", k[0], k[1]],
        "unknown platform 'linux-amd64'",
    );
    run(
        &["--binary", "linux-x86_64", k[0], k[1]],
        "'linux-x86_64' is malformed",
    );
    run(
        &["--binary", "windows-x86_64=in/nope.exe", k[0], k[1]],
        "binary for windows-x86_64: 'in/nope.exe' does not exist",
    );
    run(
        &[
            "--model",
            "in/tiny.gguf",
            "--default-model",
            "big",
            k[0],
            k[1],
        ],
        "default model 'big' is not one of the models packed (tiny)",
    );
    run(&["--model", "in/tiny.gguf"], "no signing key given");
    run(
        &["--model", "in/tiny.gguf", "--sign-with", "nokey.key"],
        "secret key: 'nokey.key' does not exist",
    );
    run(
        &["--changelog", "in", k[0], k[1]],
        "changelog: 'in' is not a regular file",
    );
    run(
        &["--bundle-id", "bad id!", k[0], k[1]],
        "bundle id 'bad id!' is malformed",
    );
    run(
        &["--recipe", "none.toml", k[0], k[1]],
        "recipe: 'none.toml' does not exist",
    );
    let out = ws
        .offgrid(&[
            "pack-usb",
            "stick",
            "--release",
            "1.0.x",
            "--sign-with",
            "hq.key",
        ])
        .code(2);
    assert!(String::from_utf8_lossy(&out.get_output().stderr)
        .contains("invalid release version '1.0.x'"));
    refused(
        &ws,
        &["pack-usb", "stick", "--sign-with", "hq.key"],
        "no release version given",
    );
    ws.file("bad.toml", b"release = \"1\"\nmodel = \"x\"\n");
    refused(
        &ws,
        &[
            "pack-usb",
            "stick",
            "--recipe",
            "bad.toml",
            "--sign-with",
            "hq.key",
        ],
        "cannot read recipe 'bad.toml'",
    );
    // The same key twice.
    refused(
        &ws,
        &[
            "pack-usb",
            "stick",
            "--release",
            "1",
            "--sign-with",
            "hq.key",
            "--sign-with",
            "./hq.key",
        ],
        "are the same key",
    );
    // DEST is a file.
    ws.file("afile", b"x");
    refused(
        &ws,
        &[
            "pack-usb",
            "afile",
            "--release",
            "1",
            "--sign-with",
            "hq.key",
        ],
        "destination 'afile' is a file",
    );
    assert!(!ws.path("stick").exists());
}

#[test]
fn refuses_another_release_unless_forced_and_replaces_the_same_one() {
    let ws = Ws::new();
    pack_v1(&ws);
    let before = snapshot(&ws.path("stick"));
    // Another release: refused, tree untouched.
    refused(
        &ws,
        &["pack-usb", "stick", "--release", "1.1", "--bundle-id", "org.example.clinic", "--model", "in/tiny.gguf", "--sign-with", "hq.key"],
        "already holds release 1.0 of 'org.example.clinic' (this pack is 1.1 of 'org.example.clinic')",
    );
    assert_eq!(snapshot(&ws.path("stick")), before);
    // Another bundle: refused too.
    refused(
        &ws,
        &[
            "pack-usb",
            "stick",
            "--release",
            "1.0",
            "--model",
            "in/tiny.gguf",
            "--sign-with",
            "hq.key",
        ],
        "--force",
    );
    assert_eq!(snapshot(&ws.path("stick")), before);
    // The same release: re-packed (here with a second model), no --force needed.
    ws.model("in/second.gguf", 8, 9);
    let out = ws
        .offgrid(&[
            "pack-usb",
            "stick",
            "--release",
            "1.0",
            "--bundle-id",
            "org.example.clinic",
            "--model",
            "in/tiny.gguf",
            "--model",
            "in/second.gguf",
            "--sign-with",
            "hq.key",
        ])
        .success();
    assert!(String::from_utf8_lossy(&out.get_output().stdout).contains("replaced: release 1.0"));
    assert_eq!(manifest(&ws, "stick").models().count(), 2);
    // --force replaces another release; files of the old tree it lacks are removed.
    ws.offgrid(&[
        "pack-usb",
        "stick",
        "--release",
        "2.0",
        "--bundle-id",
        "org.example.clinic",
        "--model",
        "in/tiny.gguf",
        "--sign-with",
        "hq.key",
        "--force",
    ])
    .success();
    let m = manifest(&ws, "stick");
    assert_eq!(m.release.as_str(), "2.0");
    assert!(!ws.path("stick/models/second.gguf").exists());
    assert_eq!(snapshot(&ws.path("stick")).len(), m.files.len() + 2);
}

#[test]
fn refuses_an_input_inside_the_destination() {
    let ws = Ws::new();
    pack_v1(&ws);
    refused(
        &ws,
        &[
            "pack-usb",
            "stick",
            "--release",
            "1.0",
            "--bundle-id",
            "org.example.clinic",
            "--model",
            "stick/models/tiny.gguf",
            "--sign-with",
            "hq.key",
        ],
        "is inside the destination 'stick'",
    );
    assert!(ws.path("stick/manifest.toml").is_file());
}

#[test]
fn refuses_files_in_the_way_of_a_tree_without_manifest() {
    let ws = Ws::new();
    ws.model("in/tiny.gguf", 8, 1);
    ws.file("stick/README.txt", b"my own notes");
    ws.file("stick/keep.txt", b"unrelated");
    let args = [
        "pack-usb",
        "stick",
        "--release",
        "1",
        "--model",
        "in/tiny.gguf",
        "--sign-with",
        "hq.key",
    ];
    refused(
        &ws,
        &args,
        "has no manifest.toml but already holds 'README.txt'",
    );
    assert_eq!(
        std::fs::read(ws.path("stick/README.txt")).unwrap(),
        b"my own notes"
    );
    let mut forced = args.to_vec();
    forced.push("--force");
    ws.offgrid(&forced).success();
    assert_ne!(
        std::fs::read(ws.path("stick/README.txt")).unwrap(),
        b"my own notes"
    );
    assert_eq!(
        std::fs::read(ws.path("stick/keep.txt")).unwrap(),
        b"unrelated"
    );
    // A folder where a file of the tree goes is refused even with --force.
    std::fs::remove_file(ws.path("stick/manifest.toml")).unwrap();
    std::fs::remove_file(ws.path("stick/run.bat")).unwrap();
    ws.file("stick/run.bat/x", b"x");
    refused(&ws, &forced, "already holds 'run.bat'");
    std::fs::remove_dir_all(ws.path("stick/run.bat")).unwrap();
    // A file where a folder of the tree goes, too.
    std::fs::remove_dir_all(ws.path("stick/models")).unwrap();
    ws.file("stick/models", b"not a folder");
    refused(&ws, &forced, "already holds 'models'");
    std::fs::remove_file(ws.path("stick/models")).unwrap();
    std::fs::remove_dir_all(ws.path("stick/signatures")).unwrap();
    ws.file("stick/signatures", b"not a folder");
    refused(&ws, &forced, "already holds 'signatures'");
}

#[test]
fn a_failed_pack_leaves_the_previous_tree_intact() {
    let ws = Ws::new();
    pack_v1(&ws);
    let before = snapshot(&ws.path("stick"));
    // Refused up front: a missing second model.
    refused(
        &ws,
        &[
            "pack-usb",
            "stick",
            "--release",
            "1.0",
            "--bundle-id",
            "org.example.clinic",
            "--model",
            "in/tiny.gguf",
            "--model",
            "in/gone.gguf",
            "--sign-with",
            "hq.key",
        ],
        "'in/gone.gguf' does not exist",
    );
    assert_eq!(snapshot(&ws.path("stick")), before);
    // Failing in the middle of staging: a binary whose bytes cannot be read
    // (/proc/self/mem is a regular file that fails with EIO at offset 0).
    #[cfg(target_os = "linux")]
    {
        let out = ws
            .offgrid(&[
                "pack-usb",
                "stick",
                "--release",
                "1.0",
                "--bundle-id",
                "org.example.clinic",
                "--model",
                "in/tiny.gguf",
                "--binary",
                "linux-riscv64=/proc/self/mem",
                "--sign-with",
                "hq.key",
            ])
            .code(2);
        let err = String::from_utf8_lossy(&out.get_output().stderr);
        assert!(err.contains("/proc/self/mem"), "{err}");
        assert_eq!(snapshot(&ws.path("stick")), before);
        assert!(!ws.path("stick/.offgrid-staging").exists());
    }
}

#[test]
fn json_output_is_one_record() {
    let ws = Ws::new();
    ws.model("in/tiny.gguf", 8, 1);
    let out = ws
        .offgrid(&[
            "pack-usb",
            "stick",
            "--release",
            "3",
            "--model",
            "in/tiny.gguf",
            "--sign-with",
            "hq.key",
            "--json",
        ])
        .success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["type"], "packed");
    assert_eq!(v["data"]["release"], "3");
    assert_eq!(
        v["data"]["bundle_id"],
        offgrid::usb::inputs::DEFAULT_BUNDLE_ID
    );
    assert_eq!(v["data"]["default_model"], "tiny");
    assert_eq!(v["data"]["key_ids"][0], ws.key_id("hq"));
}

#[test]
fn help_mentions_every_flag() {
    let ws = Ws::new();
    ws.offgrid(&["pack-usb", "--help"]).success().stdout(
        predicate::str::contains("--recipe")
            .and(predicate::str::contains("--model"))
            .and(predicate::str::contains("--binary"))
            .and(predicate::str::contains("--sign-with"))
            .and(predicate::str::contains("--force")),
    );
}

#[test]
fn checks_every_signer_password_before_copying() {
    let ws = Ws::new();
    ws.model("in/tiny.gguf", 8, 1);
    ws.offgrid_pw(
        Some("correct horse"),
        &["keygen", "--secret", "enc.key", "--public", "enc.pub"],
    )
    .success();
    let args = [
        "pack-usb",
        "stick",
        "--release",
        "1",
        "--model",
        "in/tiny.gguf",
        "--sign-with",
        "hq.key",
        "--sign-with",
        "enc.key",
    ];
    // Wrong password: refused before anything is written, naming the key.
    let out = ws.offgrid_pw(Some("wrong"), &args).code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr);
    assert!(
        err.contains("wrong password for secret key 'enc.key'"),
        "{err}"
    );
    assert!(!ws.path("stick").exists());
    // No password and no terminal to ask on.
    let out = ws.offgrid_pw(None, &args).code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr);
    assert!(
        err.contains("enc.key") && err.contains("OFFGRID_PASSWORD"),
        "{err}"
    );
    assert!(!ws.path("stick").exists());
    // The right one: two signatures, each verifying on its own.
    ws.offgrid_pw(Some("correct horse"), &args).success();
    for key in ["hq.pub", "enc.pub"] {
        ws.offgrid(&["verify", "stick", "--pubkey", key]).success();
    }
    assert_eq!(
        std::fs::read_dir(ws.path("stick/signatures"))
            .unwrap()
            .count(),
        2
    );
}
