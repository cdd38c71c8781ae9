//! `offgrid clone` and `pack-usb --read-back` (SPEC.md §16.5), through the real binary:
//! one stick cloned to a plain folder, a FAT32 image and an exFAT image at once, each
//! read back and verified; a copy changed behind the writer's back (the clone stopped
//! after writing, a byte flipped, then continued) caught by the read-back; a damaged
//! source refused with nothing switched; refusals before the first byte; a dry run that
//! writes nothing. Mounting needs root; CI runs as root, so these fail rather than skip.

use crate::media::{exfat, fat32};
use crate::util::{flip_byte, resume, signed_tree, snapshot, spawn_stopped, Out, Ws};

use std::fs;
use std::process::Command;

use assert_cmd::prelude::*;
use predicates::prelude::*;

/// A workspace with a packed stick (`stick/`, release 1.0) of a ~600 KiB model.
fn stick() -> Ws {
    let ws = Ws::new();
    ws.model("in/smol.gguf", 600, 7);
    ws.file("in/notes.txt", b"changes\n");
    ws.offgrid(&[
        "pack-usb",
        "stick",
        "--bundle-id",
        "org.example.clinic",
        "--release",
        "1.0",
        "--model",
        "in/smol.gguf",
        "--changelog",
        "in/notes.txt",
        "--sign-with",
        "hq.key",
        "--no-host-binary",
    ])
    .success();
    ws
}

#[test]
fn one_stick_to_a_folder_a_fat32_and_an_exfat_stick_each_read_back() {
    let ws = stick();
    let fat = fat32(&ws.path("fat.img"), &ws.path("fat"), 64);
    let ex = exfat(&ws.path("ex.img"), &ws.path("ex"), 64);
    let out = ws
        .offgrid(&[
            "clone", "stick", "copy1", "fat", "ex", "--pubkey", "hq.pub", "--json",
        ])
        .success()
        .get_output()
        .stdout
        .clone();
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let dests: Vec<&serde_json::Value> = lines.iter().filter(|l| l["type"] == "dest").collect();
    assert_eq!(dests.len(), 3, "{lines:?}");
    for d in &dests {
        assert_eq!(d["data"]["status"], "ok", "{d}");
    }
    let summary = &lines.last().unwrap()["data"];
    assert_eq!(lines.last().unwrap()["type"], "summary");
    assert_eq!(summary["schema"], 1);
    assert_eq!(summary["ok"], 3);
    assert_eq!(summary["release"], "1.0");
    assert_eq!(summary["bad"].as_array().unwrap().len(), 0);

    let want = signed_tree(&ws.path("stick"));
    for d in ["copy1", "fat", "ex"] {
        assert_eq!(
            signed_tree(&ws.path(d)),
            want,
            "{d} is byte-identical to the source"
        );
        assert!(!ws.path(d).join(".offgrid-staging").exists());
        assert!(!ws.path(d).join(".offgrid-lock").exists());
        ws.offgrid(&["verify", d, "--pubkey", "hq.pub"]).success();
    }
    // Stock minisign agrees on a copy on FAT32.
    let sig = fs::read_dir(ws.path("fat/signatures"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let st = Command::new("minisign")
        .args(["-V", "-p"])
        .arg(ws.path("hq.pub"))
        .arg("-m")
        .arg(ws.path("fat/manifest.toml"))
        .arg("-x")
        .arg(&sig)
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    drop((fat, ex));
}

#[test]
fn a_copy_changed_behind_the_writers_back_is_caught_by_the_read_back() {
    let ws = stick();
    let mut c = Command::cargo_bin("offgrid").unwrap();
    c.current_dir(ws.dir.path())
        .env("NO_COLOR", "1")
        .args(["clone", "stick", "a", "b", "--pubkey", "hq.pub"]);
    let child = spawn_stopped(c, "clone-written");
    // Both copies are switched and complete; now b's model changes on the medium.
    let model = ws.path("b/models/smol.gguf");
    assert!(model.exists());
    flip_byte(&model, 300 * 1024);
    let Out { stderr, .. } =
        crate::util::assert_read_back_names(child, "a", "b", "models/smol.gguf");
    assert!(
        stderr.contains("1 of 2 destinations are bad: 'b'"),
        "{stderr}"
    );
}

#[test]
fn a_damaged_source_is_refused_and_no_destination_is_switched() {
    let ws = stick();
    // `old` holds release 1.0 already (a good copy); `new` does not exist yet.
    ws.offgrid(&["clone", "stick", "old", "--pubkey", "hq.pub"])
        .success();
    let before = snapshot(&ws.path("old"));
    flip_byte(&ws.path("stick/models/smol.gguf"), 5000);
    ws.offgrid(&["clone", "stick", "old", "new", "--pubkey", "hq.pub"])
        .code(1)
        .stderr(
            predicate::str::contains("models/smol.gguf")
                .and(predicate::str::contains("differs from its signed manifest"))
                .and(predicate::str::contains("nothing was switched")),
        );
    assert_eq!(snapshot(&ws.path("old")), before, "old copy untouched");
    assert!(
        !ws.path("new").exists(),
        "a folder made for the clone is removed"
    );
}

#[test]
fn refusals_come_before_the_first_byte_and_a_dry_run_writes_nothing() {
    let ws = stick();
    ws.keypair("other");
    // no key: usage (2); a key that did not sign: refused (1)
    ws.offgrid(&["clone", "stick", "d"])
        .code(2)
        .stderr(predicate::str::contains("--pubkey"));
    ws.offgrid(&["clone", "stick", "d", "--pubkey", "other.pub"])
        .code(1);
    // inside the source, twice, too large for the medium: 2, nothing written
    ws.offgrid(&["clone", "stick", "stick/sub", "--pubkey", "hq.pub"])
        .code(2)
        .stderr(predicate::str::contains("overlaps the source"));
    ws.offgrid(&["clone", "stick", "d", "./d", "--pubkey", "hq.pub"])
        .code(2)
        .stderr(predicate::str::contains("given twice"));
    ws.offgrid(&[
        "clone",
        "stick",
        "d",
        "--pubkey",
        "hq.pub",
        "--max-file-size",
        "100K",
    ])
    .code(2)
    .stderr(
        predicate::str::contains("models/smol.gguf")
            .and(predicate::str::contains("--max-file-size")),
    );
    assert!(!ws.path("d").exists());
    assert!(!ws.path("stick/sub").exists());
    // another release at a destination: refused without --force
    let other = Ws::new();
    fs::copy(other.path("hq.key"), ws.path("hq2.key")).unwrap();
    ws.model("in/b.gguf", 20, 3);
    ws.offgrid(&[
        "pack-usb",
        "busy",
        "--bundle-id",
        "org.example.other",
        "--release",
        "3.0",
        "--model",
        "in/b.gguf",
        "--sign-with",
        "hq2.key",
        "--no-host-binary",
    ])
    .success();
    let before = snapshot(&ws.path("busy"));
    ws.offgrid(&["clone", "stick", "d", "busy", "--pubkey", "hq.pub"])
        .code(2)
        .stderr(predicate::str::contains("org.example.other"));
    assert_eq!(snapshot(&ws.path("busy")), before);
    assert!(
        !ws.path("d").exists(),
        "no destination is written when one is refused"
    );
    // the dry run prints the plan and writes nothing
    ws.offgrid(&[
        "clone",
        "stick",
        "d",
        "busy",
        "--force",
        "--pubkey",
        "hq.pub",
        "--dry-run",
    ])
    .success()
    .stdout(
        predicate::str::contains("nothing written")
            .and(predicate::str::contains("'d'"))
            .and(predicate::str::contains(
                "replaces release 3.0 of org.example.other",
            )),
    );
    assert!(!ws.path("d").exists());
    assert_eq!(snapshot(&ws.path("busy")), before);
    // and with --force it replaces the other release
    ws.offgrid(&["clone", "stick", "busy", "--force", "--pubkey", "hq.pub"])
        .success()
        .stdout(predicate::str::contains("replaced org.example.other 3.0"));
    assert_eq!(
        signed_tree(&ws.path("busy")),
        signed_tree(&ws.path("stick"))
    );
}

#[test]
fn pack_usb_read_back_passes_and_catches_a_staged_file_changed_before_the_switch() {
    let ws = stick();
    let args = |release: &'static str| {
        [
            "pack-usb",
            "s2",
            "--release",
            release,
            "--model",
            "in/smol.gguf",
            "--sign-with",
            "hq.key",
            "--no-host-binary",
            "--read-back",
            "--force",
        ]
    };
    ws.offgrid(&args("1.0"))
        .success()
        .stderr(predicate::str::contains(
            "read back 's2' from the medium: every file matches",
        ));
    // Stopped with everything staged (hashed from what was read), a staged byte changes:
    // the switch goes ahead, the read-back refuses.
    let mut c = Command::cargo_bin("offgrid").unwrap();
    c.current_dir(ws.dir.path())
        .env("NO_COLOR", "1")
        .env("OFFGRID_HQ", ws.path("hq-history"))
        .args(args("1.1"));
    let child = spawn_stopped(c, "pack-staged");
    flip_byte(&ws.path("s2/.offgrid-staging/models/smol.gguf"), 1234);
    let Out { code, stderr, .. } = resume(child);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("do not hand it out"), "{stderr}");
    assert!(stderr.contains("models/smol.gguf"), "{stderr}");
}
