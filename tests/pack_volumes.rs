//! Update packs in parts (`create-update-pack --volume-size`, SPEC.md §7.18), through the
//! real binary: release 1.0 packed and installed, release 1.1 with a changed large data
//! file and a chat-template edit cut into at least three parts; each part is a tar GNU
//! `tar` lists and verifies on its own; `apply-update` takes the parts out of order and
//! reads them in place; a missing part is named, a part of another pack refused naming
//! both, a flipped byte in part 2 refused naming part 2 with the home unchanged; a pack
//! that fits stays one ordinary file.

use crate::util::{self, Ws};

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use offgrid::manifest::Manifest;
use offgrid::update::pack::PackManifest;
use predicates::prelude::*;

/// Release 1.0 packed onto `stick` (recorded in the history) and installed in `home`;
/// the inputs of 1.1 (a new data file of 600 KB of noise, the template edited) in `new/`.
fn world() -> Ws {
    let ws = Ws::new();
    ws.model_with_template("old/smol.gguf", 64, 1, Some("{{ role }}: {{ content }}"));
    ws.file("old/big.bin", &util::noise(600_000, 1));
    let chatml = "<|im_start|>{{ role }}\n{{ content }}<|im_end|>";
    ws.model_with_template("new/smol.gguf", 64, 1, Some(chatml));
    ws.file("new/big.bin", &util::noise(600_000, 2));
    ws.offgrid(&[
        "pack-usb",
        "stick",
        "--bundle-id",
        "org.example.clinic",
        "--release",
        "1.0",
        "--model",
        "old/smol.gguf",
        "--add",
        "data/big.bin=old/big.bin",
        "--sign-with",
        "hq.key",
        "--no-host-binary",
    ])
    .success();
    ws.offgrid(&[
        "install", "--from", "stick", "--home", "home", "--pubkey", "hq.pub",
    ])
    .success();
    ws
}

/// `create-update-pack` 1.0 -> 1.1 from the `new/` inputs into `out`, extra args added.
fn pack(ws: &Ws, out: &str, extra: &[&str]) -> assert_cmd::assert::Assert {
    let mut args = vec![
        "create-update-pack",
        "--since",
        "1.0",
        "--bundle-id",
        "org.example.clinic",
        "--release",
        "1.1",
        "--model",
        "new/smol.gguf",
        "--add",
        "data/big.bin=new/big.bin",
        "--sign-with",
        "hq.key",
        "--no-host-binary",
        "--force",
        "-o",
        out,
    ];
    args.extend_from_slice(extra);
    ws.offgrid(&args)
}

/// The parts written for `out`, in part order.
fn parts_of(ws: &Ws, out: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(ws.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{out}.part"))
        })
        .collect();
    v.sort();
    v
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// The signed pack manifest a part (or a pack) carries, read with GNU tar.
fn pack_manifest(p: &Path) -> PackManifest {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(p)
        .arg("offgrid-pack.toml")
        .output()
        .unwrap();
    assert!(out.status.success(), "tar -xOf {}", p.display());
    PackManifest::parse(&out.stdout).unwrap()
}

fn current_manifest(ws: &Ws) -> Manifest {
    let dir = ws.path("home/current");
    Manifest::parse(&fs::read(dir.join("manifest.toml")).unwrap()).unwrap()
}

#[test]
fn parts_verify_alone_and_apply_in_any_order_from_where_they_are() {
    let ws = world();
    pack(&ws, "up.ogpack", &["--volume-size", "200K"])
        .success()
        .stdout(predicate::str::contains("parts of at most 200.0 KiB"));
    let parts = parts_of(&ws, "up.ogpack");
    let n = parts.len();
    assert!(n >= 3, "{n} parts");
    assert!(
        !ws.path("up.ogpack").exists(),
        "no whole pack beside the parts"
    );
    let pm = pack_manifest(&parts[0]);
    assert_eq!(pm.format, "offgrid-pack/2");
    assert_eq!(pm.parts, Some(n as u32));
    // The big file's payload is cut across parts, each piece with its own digest.
    let big = pm
        .payloads
        .iter()
        .find(|p| p.target == "data/big.bin")
        .unwrap();
    assert!(big.pieces.len() >= 3, "{:?}", big.pieces);
    for (k, p) in parts.iter().enumerate() {
        assert_eq!(
            name(p),
            format!("up.ogpack.part{:03}-of-{n:03}", k + 1),
            "part names"
        );
        assert!(
            fs::metadata(p).unwrap().len() <= 200 << 10,
            "{} too large",
            name(p)
        );
        // Every part is a plain tar that GNU tar lists, carrying the whole head.
        let out = Command::new("tar").arg("-tf").arg(p).output().unwrap();
        assert!(out.status.success(), "tar -tf {}", name(p));
        let list = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = list.lines().collect();
        assert_eq!(lines[0], "offgrid-pack.toml", "{list}");
        assert!(
            lines.contains(&"manifest.toml") && lines.contains(&"part.toml"),
            "{list}"
        );
        assert_eq!(
            pack_manifest(p),
            pm,
            "the same signed manifest in every part"
        );
        // Each part verifies alone, names itself and what the others hold.
        ws.offgrid(&["verify", p.to_str().unwrap(), "--pubkey", "hq.pub"])
            .success()
            .stdout(
                predicate::str::contains(format!("verified part {} of {n} of update pack", k + 1))
                    .and(predicate::str::contains(format!(
                        "on part {}:",
                        if k == 0 { 2 } else { 1 }
                    ))),
            );
        ws.offgrid(&["inspect", p.to_str().unwrap()])
            .success()
            .stdout(predicate::str::contains(format!(
                "part {} of {n} of this pack",
                k + 1
            )));
    }
    ws.offgrid(&[
        "verify",
        parts[1].to_str().unwrap(),
        "--pubkey",
        "hq.pub",
        "--json",
    ])
    .success()
    .stdout(
        predicate::str::contains(r#""type":"pack-verified""#)
            .and(predicate::str::contains(r#""part":2"#)),
    );

    // The dry run checks every part's head and prints the plan.
    let mut args: Vec<String> = vec!["apply-update".into(), "--home".into(), "home".into()];
    args.extend(parts.iter().rev().map(|p| p.display().to_string()));
    let mut dry = args.clone();
    dry.push("--dry-run".into());
    let dry: Vec<&str> = dry.iter().map(String::as_str).collect();
    ws.offgrid(&dry)
        .success()
        .stdout(predicate::str::contains(format!("all {n} given")));
    assert_eq!(current_manifest(&ws).release.to_string(), "1.0");

    // Out of order (last first), read in place.
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ws.offgrid(&args)
        .success()
        .stdout(predicate::str::contains("from release 1.0 to 1.1"));
    let recorded =
        fs::read(ws.path("hq-history/releases/org.example.clinic/1.1/manifest.toml")).unwrap();
    let m = current_manifest(&ws);
    assert_eq!(m, Manifest::parse(&recorded).unwrap());
    for f in &m.files {
        let b = fs::read(ws.path("home/current").join(&f.path)).unwrap();
        assert_eq!(util::sha(&b), f.sha256, "{}", f.path);
    }
    assert_eq!(
        fs::read(ws.path("home/current/data/big.bin")).unwrap(),
        util::noise(600_000, 2)
    );
    ws.offgrid(&["verify", "home/current", "--pubkey", "hq.pub"])
        .success();
}

#[test]
fn missing_foreign_and_damaged_parts_are_refused_before_the_home_changes() {
    let ws = world();
    pack(&ws, "up.ogpack", &["--volume-size", "200K"]).success();
    let parts = parts_of(&ws, "up.ogpack");
    let n = parts.len();
    assert!(n >= 3, "{n} parts");
    let before = util::snapshot(&ws.path("home/versions"));
    let apply = |given: &[&Path]| {
        let mut args: Vec<String> = vec!["apply-update".into(), "--home".into(), "home".into()];
        args.extend(given.iter().map(|p| p.display().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ws.offgrid(&args)
    };

    // A missing part is named, nothing written.
    let without_2: Vec<&Path> = parts
        .iter()
        .enumerate()
        .filter(|(k, _)| *k != 1)
        .map(|(_, p)| p.as_path())
        .collect();
    apply(&without_2).code(1).stderr(
        predicate::str::contains(format!("is in {n} parts"))
            .and(predicate::str::contains("missing: part(s) 2\n"))
            .and(predicate::str::contains("help: give every part")),
    );
    apply(&[parts[0].as_path()])
        .code(1)
        .stderr(predicate::str::contains("given: part(s) 1;"));
    assert_eq!(util::snapshot(&ws.path("home/versions")), before);

    // A part of another pack (same releases, with a changelog: a pack made in the same
    // second with the same content would be the same pack, byte for byte) is refused
    // naming both.
    std::fs::write(ws.path("other-notes.txt"), "signed again\n").unwrap();
    pack(
        &ws,
        "other.ogpack",
        &["--volume-size", "200K", "--changelog", "other-notes.txt"],
    )
    .success();
    let other = parts_of(&ws, "other.ogpack");
    let mut mixed: Vec<&Path> = parts.iter().map(PathBuf::as_path).collect();
    mixed[1] = other[1].as_path();
    apply(&mixed).code(1).stderr(
        predicate::str::contains(name(&other[1]))
            .and(predicate::str::contains(name(&parts[0])))
            .and(predicate::str::contains("give the parts of one pack only")),
    );
    assert_eq!(util::snapshot(&ws.path("home/versions")), before);

    // A whole pack given among parts is a usage error.
    pack(&ws, "whole.ogpack", &[]).success();
    apply(&[parts[0].as_path(), ws.path("whole.ogpack").as_path()])
        .code(2)
        .stderr(predicate::str::contains(
            "is a whole update pack, not a part of one",
        ));
    assert_eq!(util::snapshot(&ws.path("home/versions")), before);

    // A part given twice is a usage error.
    let twice: Vec<&Path> = vec![parts[0].as_path(), parts[0].as_path()];
    apply(&twice)
        .code(2)
        .stderr(predicate::str::contains("part 1 is given twice"));

    // A flipped byte in part 2's payload bytes: refused naming part 2, home unchanged.
    let good = fs::read(&parts[1]).unwrap();
    let mut bad = good.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x40;
    fs::write(&parts[1], &bad).unwrap();
    let all: Vec<&Path> = parts.iter().map(PathBuf::as_path).collect();
    apply(&all).code(1).stderr(
        predicate::str::contains(format!("part 2 of {n} '{}", parts[1].display()))
            .and(predicate::str::contains("is damaged"))
            .and(predicate::str::contains("help: copy part 2 again from HQ")),
    );
    assert_eq!(util::snapshot(&ws.path("home/versions")), before);
    assert_eq!(current_manifest(&ws).release.to_string(), "1.0");
    ws.offgrid(&["verify", parts[1].to_str().unwrap(), "--pubkey", "hq.pub"])
        .code(1)
        .stderr(predicate::str::contains("part 2 of"));
    // The other parts still verify alone.
    ws.offgrid(&["verify", parts[2].to_str().unwrap(), "--pubkey", "hq.pub"])
        .success();
    fs::write(&parts[1], &good).unwrap();
    apply(&all).success();
}

#[test]
fn a_pack_that_fits_stays_one_ordinary_file() {
    let ws = world();
    pack(&ws, "up.ogpack", &["--volume-size", "dvd"]).success();
    assert!(parts_of(&ws, "up.ogpack").is_empty());
    let pm = pack_manifest(&ws.path("up.ogpack"));
    assert_eq!(pm.format, "offgrid-pack/1");
    assert_eq!(pm.parts, None);
    assert!(pm.payloads.iter().all(|p| p.pieces.is_empty()));
    let text = Command::new("tar")
        .args(["-xOf", "up.ogpack", "offgrid-pack.toml"])
        .current_dir(ws.dir.path())
        .output()
        .unwrap()
        .stdout;
    let text = String::from_utf8(text).unwrap();
    assert!(
        !text.contains("parts") && !text.contains("pieces"),
        "{text}"
    );
    let out = Command::new("tar")
        .args(["-tf", "up.ogpack"])
        .current_dir(ws.dir.path())
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("part.toml"));
    // Too small for even the head: a usage error, nothing written.
    pack(&ws, "tiny.ogpack", &["--volume-size", "4K"])
        .code(2)
        .stderr(predicate::str::contains("--volume-size 4096 is too small"));
    assert!(parts_of(&ws, "tiny.ogpack").is_empty());
    assert!(!ws.path("tiny.ogpack").exists());
    ws.offgrid(&["apply-update", "--home", "home", "up.ogpack"])
        .success();
}

#[test]
fn the_parts_examples_parse_and_agree() {
    let text = include_str!("../formats/pack.parts.example.toml");
    let pm = PackManifest::parse(text.as_bytes()).unwrap();
    assert_eq!(pm.to_toml(), text, "the example is not in canonical form");
    assert_eq!((pm.format.as_str(), pm.parts), ("offgrid-pack/2", Some(4)));
    let marker = offgrid::update::parts::PartMarker::parse(
        include_str!("../formats/part.example.toml").as_bytes(),
    )
    .unwrap();
    marker.check(&pm, &util::sha(text.as_bytes())).unwrap();
    assert_eq!(marker.part, 2);
    let holds = offgrid::update::parts::holds(&pm);
    assert_eq!(holds[&2], ["data/big.bin (piece 2 of 4)"]);
    // A marker naming another pack, or a part beyond N, is refused.
    assert!(marker.check(&pm, &"0".repeat(64)).is_err());
    let mut far = marker.clone();
    far.part = 5;
    assert!(far.check(&pm, &util::sha(text.as_bytes())).is_err());
}
