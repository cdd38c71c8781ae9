//! Releases spread over several volumes and data files stored in parts (SPEC.md §16.6,
//! §16.7), through the real binary: `pack-usb --volume-size` onto three folders, each
//! volume verified on its own, `install --from` the volumes out of order, an install
//! killed mid-volume and resumed, a volume of another release refused, the missing
//! volumes named, too few destinations refused before a byte is written, and a large
//! data file cut into parts on one stick and reassembled byte for byte; a volume (and a
//! tree holding parts) cloned as stored, each copy read back as that volume, a copy
//! changed behind the writer's back named, and the clones installed; on a terminal, one
//! folder for every volume with the medium swapped when asked (a medium not swapped
//! refused), and a set given up after volume 1 leaving it valid.

use crate::support;

use std::fs;
use std::path::Path;
use std::process::Command;

use assert_cmd::prelude::*;
use offgrid::manifest::Manifest;
use predicates::prelude::*;
use support::Ws;

use crate::util::{assert_read_back_names, flip_byte, signed_tree, spawn_stopped, Terminal};

/// Pseudo-random bytes (a data file parts must keep byte for byte).
fn noise(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A workspace with a small model and a 700 KB data file.
fn world() -> Ws {
    let ws = Ws::new();
    ws.model("in/smol.gguf", 40, 1);
    ws.file("in/big.bin", &noise(700_000, 7));
    ws
}

/// `pack-usb --volume-size 300K` of release `rel` into `dests`.
fn pack(ws: &Ws, rel: &str, dests: &[&str]) -> assert_cmd::assert::Assert {
    ws.pack_volumes(rel, dests)
}

fn manifest(root: &Path) -> Manifest {
    Manifest::parse(&fs::read(root.join("manifest.toml")).unwrap()).unwrap()
}

/// The data file installed in the home is the input, byte for byte.
fn assert_big_installed(ws: &Ws) {
    assert_eq!(
        fs::read(ws.path("home/current/data/big.bin")).unwrap(),
        fs::read(ws.path("in/big.bin")).unwrap()
    );
}

fn install(ws: &Ws, vol: &str) -> assert_cmd::assert::Assert {
    ws.offgrid(&[
        "install", "--from", vol, "--home", "home", "--pubkey", "hq.pub",
    ])
}

/// Every byte of a volume, and no more than 300 KiB of them.
fn volume_bytes(root: &Path) -> u64 {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn three_volumes_verify_alone_and_install_in_any_order() {
    let ws = world();
    pack(&ws, "1.0", &["v1", "v2", "v3"]).success().stdout(
        predicate::str::contains("as 3 volume(s)")
            .and(predicate::str::contains("data/big.bin in 3 parts")),
    );
    let m = manifest(&ws.path("v1"));
    assert_eq!(m.volumes, Some(3));
    assert_eq!(m.format, "offgrid-bundle/3");
    for v in ["v1", "v2", "v3"] {
        // The same signed manifest on every volume, each within its size.
        assert_eq!(manifest(&ws.path(v)), m);
        assert!(volume_bytes(&ws.path(v)) <= 300 << 10, "{v} is too large");
    }
    let big = m.file("data/big.bin").unwrap();
    assert_eq!(big.parts.len(), 3);
    assert_eq!(big.size, 700_000);
    // Each volume verifies on its own, says which it is and what the others hold.
    for (k, v) in ["v1", "v2", "v3"].iter().enumerate() {
        let others: Vec<String> = (1..=3)
            .filter(|j| *j != k + 1)
            .map(|j| format!("on volume {j}:"))
            .collect();
        ws.offgrid(&["verify", v, "--pubkey", "hq.pub"])
            .success()
            .stdout(
                predicate::str::contains(format!("verified volume {} of 3 of release 1.0", k + 1))
                    .and(predicate::str::contains(others[0].as_str()))
                    .and(predicate::str::contains(others[1].as_str())),
            );
    }
    ws.offgrid(&["verify", "v2", "--pubkey", "hq.pub", "--json"])
        .success()
        .stdout(
            predicate::str::contains(r#""type":"volume""#)
                .and(predicate::str::contains(r#""volumes":3"#)),
        );
    // A damaged part fails its volume's check, naming it.
    let part = ws.path("v3").join(&big.parts[2].path);
    let good = fs::read(&part).unwrap();
    let mut bad = good.clone();
    bad[10] ^= 1;
    fs::write(&part, &bad).unwrap();
    ws.offgrid(&["verify", "v3", "--pubkey", "hq.pub"])
        .code(1)
        .stderr(predicate::str::contains("data/big.bin.part003-of-003"));
    // install refuses the damaged volume and keeps nothing of it.
    install(&ws, "v3")
        .code(1)
        .stderr(predicate::str::contains("differ from the signed manifest"));
    fs::write(&part, &good).unwrap();
    // Out of order: 3, then 1 (missing 2 named), then 2 installs.
    install(&ws, "v3")
        .code(1)
        .stdout(predicate::str::contains("still missing: volume(s) 1, 2"))
        .stderr(predicate::str::contains("help:").and(predicate::str::contains("volume(s) 1, 2")));
    ws.offgrid(&["install", "--from", "v1", "--home", "home"])
        .code(1)
        .stderr(predicate::str::contains("still missing: volume(s) 2"));
    assert!(
        !ws.path("home/current").exists(),
        "switched before every volume"
    );
    install(&ws, "v2")
        .success()
        .stdout(predicate::str::contains("installed release 1.0"));
    assert_eq!(
        fs::read(ws.path("home/current/data/big.bin")).unwrap(),
        fs::read(ws.path("in/big.bin")).unwrap()
    );
    assert!(!ws.path("home/incoming").exists());
    ws.offgrid(&["verify", "home/current", "--home", "home"])
        .success();
    ws.offgrid(&["status", "--home", "home", "--verify"])
        .success();
}

#[test]
fn an_interrupted_install_resumes_and_never_rereads_a_verified_volume() {
    let ws = world();
    pack(&ws, "1.0", &["v1", "v2", "v3"]).success();
    install(&ws, "v2").code(1);
    // Killed mid-volume: after the first piece of volume 1.
    let out = Command::cargo_bin("offgrid")
        .unwrap()
        .current_dir(ws.path(""))
        .env("OFFGRID_FAULT_AT", "volume-piece-written")
        .args([
            "install", "--from", "v1", "--home", "home", "--pubkey", "hq.pub",
        ])
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
    // Volume 2 was verified: it is not read again (its damage now goes unseen).
    let m = manifest(&ws.path("v2"));
    let p2 = ws
        .path("v2")
        .join(&m.file("data/big.bin").unwrap().parts[1].path);
    fs::write(&p2, b"gone").unwrap();
    install(&ws, "v2")
        .code(1)
        .stderr(predicate::str::contains("was not read again"))
        .stdout(predicate::str::contains("still missing: volume(s) 1, 3"));
    // Volume 1 is redone, volume 3 completes the set.
    install(&ws, "v1")
        .code(1)
        .stdout(predicate::str::contains("still missing: volume(s) 3"));
    install(&ws, "v3").success();
    assert_big_installed(&ws);
}

#[test]
fn a_volume_of_another_release_is_refused_naming_both() {
    let ws = world();
    pack(&ws, "1.0", &["a1", "a2", "a3"]).success();
    pack(&ws, "2.0", &["b1", "b2", "b3"]).success();
    install(&ws, "a1").code(1);
    install(&ws, "b2").code(1).stderr(
        predicate::str::contains("holds release 2.0")
            .and(predicate::str::contains("is staging release 1.0"))
            .and(predicate::str::contains("help:")),
    );
    // What was staged is kept.
    install(&ws, "a2")
        .code(1)
        .stdout(predicate::str::contains("staged volume(s) 1, 2 of 3"));
}

#[test]
fn too_few_destinations_without_a_terminal_write_nothing() {
    let ws = world();
    fs::create_dir_all(ws.path("d1")).unwrap();
    fs::create_dir_all(ws.path("d2")).unwrap();
    pack(&ws, "1.0", &["d1", "d2"]).code(2).stderr(
        predicate::str::contains("needs 3 volumes")
            .and(predicate::str::contains("2 destination(s)"))
            .and(predicate::str::contains("help:")),
    );
    assert_eq!(fs::read_dir(ws.path("d1")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(ws.path("d2")).unwrap().count(), 0);
    // The dry run shows the volumes and says how many destinations are needed.
    pack(&ws, "1.0", &["d1", "--dry-run"]).success().stdout(
        predicate::str::contains("as 3 volume(s)").and(predicate::str::contains(
            "needs:     3 destinations, 1 given",
        )),
    );
    assert_eq!(fs::read_dir(ws.path("d1")).unwrap().count(), 0);
    // Several destinations without --volume-size is a usage error.
    ws.offgrid(&[
        "pack-usb",
        "d1",
        "d2",
        "--release",
        "1.0",
        "--model",
        "in/smol.gguf",
        "--sign-with",
        "hq.key",
    ])
    .code(2)
    .stderr(predicate::str::contains("--volume-size"));
    // A preset that does not exist is a usage error naming the presets.
    ws.offgrid(&[
        "pack-usb",
        "d1",
        "--release",
        "1.0",
        "--model",
        "in/smol.gguf",
        "--sign-with",
        "hq.key",
        "--volume-size",
        "floppy",
    ])
    .code(2)
    .stderr(predicate::str::contains("dvd-dl"));
}

#[test]
fn a_large_data_file_is_stored_in_parts_and_reassembled() {
    let ws = world();
    ws.pack_big("1.0", &["stick"], &["--max-file-size", "256K"])
        .success()
        .stdout(predicate::str::contains("data/big.bin in 3 parts"));
    let m = manifest(&ws.path("stick"));
    assert_eq!(m.volumes, None);
    let big = m.file("data/big.bin").unwrap();
    assert!(!ws.path("stick/data/big.bin").exists());
    for p in &big.parts {
        let len = fs::metadata(ws.path("stick").join(&p.path)).unwrap().len();
        assert!(len <= 256 << 10, "{} is {len} bytes", p.path);
    }
    ws.offgrid(&["verify", "stick", "--pubkey", "hq.pub"])
        .success()
        .stdout(predicate::str::contains("verified release 1.0"));
    // Cloned as stored: the parts and the marker, read back as parts.
    ws.offgrid(&["clone", "stick", "copy", "--pubkey", "hq.pub"])
        .success()
        .stdout(predicate::str::contains("ok      'copy'"));
    assert_eq!(
        signed_tree(&ws.path("stick")),
        signed_tree(&ws.path("copy"))
    );
    install(&ws, "copy").success();
    assert_big_installed(&ws);
    ws.offgrid(&["verify", "home/current", "--home", "home"])
        .success();
}

#[test]
fn the_volume_examples_parse_and_agree() {
    let text = include_str!("../formats/manifest.volumes.example.toml");
    let m = Manifest::parse(text.as_bytes()).unwrap();
    assert_eq!(m.to_toml(), text, "the example is not in canonical form");
    assert_eq!(m.volumes, Some(3));
    let marker: offgrid::volume::Marker =
        toml::from_str(include_str!("../formats/volume.example.toml")).unwrap();
    marker
        .check(Path::new("v2"), &m, &support::sha256_hex(text.as_bytes()))
        .unwrap();
    assert_eq!(
        m.stored_view(Some(2))
            .files
            .iter()
            .map(|f| f.path.as_str())
            .collect::<Vec<_>>(),
        ["data/atlas.bin.part002-of-003"]
    );
}

/// The `data` keys of every record of type `ty` in JSON Lines `out`.
fn record_keys(out: &[u8], ty: &str) -> Vec<Vec<String>> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == ty)
        .map(|v| {
            let mut k: Vec<String> = v["data"].as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        })
        .collect()
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn json_records_carry_the_fields_spec_9_2_lists() {
    let ws = world();
    pack(&ws, "1.0", &["v1", "v2", "v3"]).success();
    let plan = pack(&ws, "1.0", &["v1", "--dry-run", "--json"]).success();
    assert_eq!(
        record_keys(&plan.get_output().stdout, "volume-plan"),
        [sorted(&[
            "schema",
            "release",
            "bundle_id",
            "file_system",
            "max_file_size",
            "volumes",
            "bytes"
        ])]
    );
    let packed = pack(&ws, "1.0", &["w1", "w2", "w3", "--json"]).success();
    assert_eq!(
        record_keys(&packed.get_output().stdout, "packed-volumes"),
        [sorted(&[
            "schema",
            "bundle_id",
            "release",
            "files",
            "bytes",
            "volumes",
            "volume_size",
            "parts",
            "file_system",
            "max_file_size",
            "key_ids",
            "history",
        ])]
    );
    let v = ws
        .offgrid(&["verify", "v2", "--pubkey", "hq.pub", "--json"])
        .success();
    assert_eq!(
        record_keys(&v.get_output().stdout, "volume"),
        [sorted(&["schema", "volume", "volumes", "elsewhere"])]
    );
    let staged = ws
        .offgrid(&[
            "install", "--from", "v2", "--home", "home", "--pubkey", "hq.pub", "--json",
        ])
        .code(1);
    assert_eq!(
        record_keys(&staged.get_output().stdout, "volume-staged"),
        [sorted(&[
            "schema",
            "home",
            "bundle_id",
            "release",
            "volume",
            "volumes",
            "already",
            "staged",
            "missing",
            "files",
            "bytes",
        ])]
    );
}

#[test]
fn a_volume_clones_as_stored_and_a_copy_changed_on_its_medium_is_named() {
    let ws = world();
    pack(&ws, "1.0", &["v1", "v2", "v3"]).success();
    let m = manifest(&ws.path("v2"));
    let part = m
        .pieces(Some(2))
        .into_iter()
        .find(|p| p.path.contains(".part"))
        .expect("volume 2 holds a part")
        .path;
    // Stopped after both copies are switched, before the read-back.
    let mut c = Command::cargo_bin("offgrid").unwrap();
    c.current_dir(ws.path(""))
        .env("NO_COLOR", "1")
        .args(["clone", "v2", "c1", "c2", "--pubkey", "hq.pub"]);
    let child = spawn_stopped(c, "clone-written");
    // Each copy is volume 2 as stored: its pieces and its marker, byte for byte.
    for c in ["c1", "c2"] {
        assert_eq!(signed_tree(&ws.path("v2")), signed_tree(&ws.path(c)), "{c}");
    }
    assert!(ws.path("c1/volume.toml").is_file());
    flip_byte(&ws.path("c2").join(&part), 100);
    assert_read_back_names(child, "c1", "c2", &part);
    ws.offgrid(&["verify", "c1", "--pubkey", "hq.pub"])
        .success()
        .stdout(predicate::str::contains(
            "verified volume 2 of 3 of release 1.0",
        ));
    ws.offgrid(&["verify", "c2", "--pubkey", "hq.pub"])
        .code(1)
        .stderr(predicate::str::contains(part.as_str()));
    // The good clone stands in for volume 2.
    install(&ws, "v1").code(1);
    install(&ws, "c1")
        .code(1)
        .stdout(predicate::str::contains("still missing: volume(s) 3"));
    install(&ws, "v3").success();
    assert_big_installed(&ws);
}

/// `pack-usb --volume-size 300K m` on a terminal: one folder, the medium of the next
/// volume asked for once the previous one is written.
fn pack_on_one_drive(ws: &Ws) -> Terminal {
    Terminal::start(
        &ws.path(""),
        "pack-usb m --release 1.0 --model in/smol.gguf --add data/big.bin=in/big.bin \
         --sign-with hq.key --no-host-binary --volume-size 300K",
        &[("OFFGRID_HQ", &ws.path("hq-history"))],
    )
}

/// The operator ejects the medium in `m` (its volume goes to `to`) and inserts an empty one.
fn swap_medium(ws: &Ws, to: &str) {
    fs::rename(ws.path("m"), ws.path(to)).unwrap();
    fs::create_dir(ws.path("m")).unwrap();
}

#[test]
fn one_drive_writes_each_volume_then_asks_for_the_next_medium() {
    let ws = world();
    let mut t = pack_on_one_drive(&ws);
    t.wait_for("volume 2 of 3", 1);
    // Volume 1 is complete before volume 2 is asked for.
    assert!(ws.path("m/volume.toml").exists(), "{}", t.seen);
    // Not swapped: the folder still holds volume 1; refused, naming it, and asked again.
    t.type_line("m");
    t.wait_for("volume 2 of 3", 2);
    assert!(
        t.seen.contains("'m' still holds volume 1 of this release"),
        "{}",
        t.seen
    );
    swap_medium(&ws, "c1");
    t.type_line("m");
    t.wait_for("volume 3 of 3", 1);
    swap_medium(&ws, "c2");
    t.type_line("m");
    let (code, seen) = t.finish();
    assert_eq!(code, Some(0), "{seen}");
    assert!(seen.contains("as 3 volume(s)"), "{seen}");
    fs::rename(ws.path("m"), ws.path("c3")).unwrap();
    let m = manifest(&ws.path("c1"));
    for (k, v) in ["c1", "c2", "c3"].iter().enumerate() {
        assert_eq!(manifest(&ws.path(v)), m);
        ws.offgrid(&["verify", v, "--pubkey", "hq.pub"])
            .success()
            .stdout(predicate::str::contains(format!(
                "verified volume {} of 3 of release 1.0",
                k + 1
            )));
    }
    // The release is recorded at HQ from the inputs (the media are gone), scratch removed.
    let hq = ws.path("hq-history");
    assert!(fs::read_dir(&hq).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(".packing-")));
    for f in &m.files {
        assert!(
            offgrid::update::history::object_path(&hq, &f.sha256).exists(),
            "{} not recorded",
            f.path
        );
    }
    install(&ws, "c3").code(1);
    install(&ws, "c1").code(1);
    install(&ws, "c2").success();
    assert_big_installed(&ws);
}

#[test]
fn a_set_given_up_after_volume_one_leaves_it_valid_and_install_names_the_rest() {
    let ws = world();
    let mut t = pack_on_one_drive(&ws);
    t.wait_for("volume 2 of 3", 1);
    t.type_line("");
    let (code, seen) = t.finish();
    assert_eq!(code, Some(2), "{seen}");
    assert!(
        seen.contains("volume(s) 1..1 of 3 were written, volume 2 was not")
            && seen.contains("pack the release again onto 3 media"),
        "{seen}"
    );
    ws.offgrid(&["verify", "m", "--pubkey", "hq.pub"])
        .success()
        .stdout(predicate::str::contains(
            "verified volume 1 of 3 of release 1.0",
        ));
    install(&ws, "m")
        .code(1)
        .stderr(predicate::str::contains("still missing: volume(s) 2, 3"));
    // Nothing recorded at HQ for a set never finished.
    assert!(!ws.path("hq-history/releases").exists());
}

#[test]
fn a_volume_becomes_a_torrent_of_what_it_stores_as_mktorrent_makes_it() {
    let ws = world();
    pack(&ws, "1.0", &["v1", "v2", "v3"]).success();
    let m = manifest(&ws.path("v2"));
    let name = format!("{}-{}-vol2-of-3", m.bundle_id, m.release);
    let a = ws
        .offgrid(&["torrent", "v2", "-o", "v2.torrent", "--piece-size", "32K"])
        .success();
    let out = String::from_utf8(a.get_output().stdout.clone()).unwrap();
    let ours = out
        .lines()
        .find_map(|l| l.strip_prefix("info-hash: "))
        .expect("info-hash printed")
        .to_owned();
    // The volume's folder holds exactly its head, its marker and its pieces, so the stock
    // tool over the folder gives the same info-hash.
    let mk = std::process::Command::new("mktorrent")
        .args(["-l", "15", "-n", &name, "-a", "http://127.0.0.1:1/a", "-o"])
        .arg(ws.path("mk.torrent"))
        .arg(ws.path("v2"))
        .output()
        .expect("mktorrent installed");
    assert!(mk.status.success(), "{mk:?}");
    let script = "import libtorrent as lt,sys; t=lt.torrent_info(sys.argv[1]); print(str(t.info_hashes().v1)); print(t.name()); print(','.join(sorted(t.files().file_path(i).split('/',1)[1] for i in range(t.num_files()))))";
    let lt = |p: &str| {
        let o = std::process::Command::new("/usr/bin/python3")
            .args(["-c", script])
            .arg(ws.path(p))
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    let theirs = lt("mk.torrent");
    let mine = lt("v2.torrent");
    assert_eq!(theirs.lines().next(), Some(ours.as_str()), "{theirs}");
    assert_eq!(mine, theirs);
    let files = mine.lines().nth(2).unwrap();
    assert!(files.contains("volume.toml"), "{files}");
    assert!(files.contains(".part"), "{files}");
    assert!(
        !files.contains("data/big.bin,"),
        "whole files not on the volume: {files}"
    );
}
