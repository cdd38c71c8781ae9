//! End-to-end tests of the update path through the real binary: HQ history →
//! create-update-pack → (GNU tar, zstd CLI, minisign interop) → verify → install →
//! apply-update → status → rollback, and one case per refusal (exit 1, clear message,
//! nothing changed).

use crate::util;

use std::fs;
use std::io::Read;
use std::process::Command;

use predicates::prelude::*;
use util::*;

const MIB: usize = 1 << 20;

fn install(w: &World) {
    w.cmd()
        .args(["install", "--from", "v1", "--pubkey"])
        .arg(&w.pubkey)
        .assert()
        .success()
        .stdout(predicate::str::contains("installed release 1.0.0"));
}

/// A snapshot of every file (path, sha256) under the home, to prove "nothing changed".
fn snapshot(home: &std::path::Path) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for e in walkdir::WalkDir::new(home).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(home).unwrap().display().to_string();
        // The lock, and the site's failure log (SPEC.md §17.1): a refusal is recorded
        // there for the next receipt; the release state is what must not change.
        if rel == ".lock" || rel == "site/failures.json" {
            continue;
        }
        if e.file_type().is_file() {
            v.push((rel, sha(&fs::read(e.path()).unwrap())));
        } else if e.file_type().is_symlink() {
            v.push((rel, fs::read_link(e.path()).unwrap().display().to_string()));
        }
    }
    v
}

/// Tar entries of a pack, in order: (name, bytes).
fn tar_entries(p: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(fs::File::open(p).unwrap());
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mut b = Vec::new();
            e.read_to_end(&mut b).unwrap();
            (name, b)
        })
        .collect()
}

/// Writes a tar of `entries` (regular files) with GNU headers.
fn write_tar(p: &std::path::Path, entries: &[(String, Vec<u8>)]) {
    let mut b = tar::Builder::new(fs::File::create(p).unwrap());
    for (n, d) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(d.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, n, &d[..]).unwrap();
    }
    b.finish().unwrap();
}

#[test]
fn whole_journey_with_zstd_payloads_and_interop() {
    // On disk, not in RAM: the real fsync path.
    let w = world_in(3 * MIB, false);
    make_pack(&w, "u.ogpack", &["--no-delta"]);
    let pack = w.p("u.ogpack");

    // GNU tar lists it; the signed manifest and its signatures come first.
    let out = Command::new("tar").arg("-tvf").arg(&pack).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let listing = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(names[0], "offgrid-pack.toml");
    assert!(names[1].starts_with("signatures/") && names[1].ends_with(".minisig"));
    assert_eq!(names[2], "manifest.toml");
    assert!(names[3].starts_with("release-signatures/"));
    assert!(
        names[4..]
            .iter()
            .all(|n| n.starts_with("payloads/") && n.ends_with(".zst")),
        "{names:?}"
    );

    // The stock zstd CLI decodes a payload to the file it names; stock minisign checks
    // the pack signature.
    let x = w.p("x");
    fs::create_dir(&x).unwrap();
    assert!(Command::new("tar")
        .arg("-xf")
        .arg(&pack)
        .arg("-C")
        .arg(&x)
        .status()
        .unwrap()
        .success());
    let pm: toml::Value =
        toml::from_str(&fs::read_to_string(x.join("offgrid-pack.toml")).unwrap()).unwrap();
    let p0 = &pm["payloads"].as_array().unwrap()[0];
    let out = Command::new("zstd")
        .args(["-d", "-c"])
        .arg(x.join(p0["entry"].as_str().unwrap()))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(sha(&out.stdout), p0["target_sha256"].as_str().unwrap());
    let sig = fs::read_dir(x.join("signatures"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let out = Command::new("minisign")
        .args(["-V", "-p"])
        .arg(&w.pubkey)
        .arg("-m")
        .arg(x.join("offgrid-pack.toml"))
        .arg("-x")
        .arg(&sig)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("offgrid-pack bundle=org.example.clinic from=1.0.0 to=1.1.0 pack_sha256="));

    // The history recorded both releases.
    assert!(w
        .p("hq/releases/org.example.clinic/1.0.0/manifest.toml")
        .is_file());
    assert!(w
        .p("hq/releases/org.example.clinic/1.1.0/manifest.toml")
        .is_file());

    // offgrid verify checks the pack in one pass.
    w.cmd()
        .args(["verify", "u.ogpack", "--pubkey", "hq.pub"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("verified update pack")
                .and(predicate::str::contains("1.0.0 -> 1.1.0")),
        );
    let (_, other) = keypair(w.dir.path(), "other");
    w.cmd()
        .args(["verify", "u.ogpack", "--pubkey"])
        .arg(&other)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("threshold not met"));

    install(&w);
    assert_installed(&w.home(), &w.v1);
    w.cmd()
        .args(["apply-update", "u.ogpack"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("from release 1.0.0 to 1.1.0")
                .and(predicate::str::contains("model tuned")),
        );
    assert_installed(&w.home(), &w.v2);
    w.cmd().args(["status"]).assert().success().stdout(
        predicate::str::contains("release:   1.1.0")
            .and(predicate::str::contains("previous:  1.0.0"))
            .and(predicate::str::contains("recoveries: none")),
    );
    let out = w.cmd().args(["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["type"], "status");
    assert_eq!(v["data"]["release"], "1.1.0");
    assert_eq!(v["data"]["history"].as_array().unwrap().len(), 2);

    w.cmd()
        .args(["rollback"])
        .assert()
        .success()
        .stdout(predicate::str::contains("from release 1.1.0 to 1.0.0"));
    assert_installed(&w.home(), &w.v1);
    // Rolling back again does not go forward: nothing before 1.0.0 is kept. The newer
    // release stays kept and `--to` returns to it (SPEC.md §7.16).
    w.cmd().args(["rollback"]).assert().code(1).stderr(
        predicate::str::contains("no previous release")
            .and(predicate::str::contains("also kept: 1.1.0")),
    );
    assert_installed(&w.home(), &w.v1);
    w.cmd()
        .args(["rollback", "--to", "1.1.0"])
        .assert()
        .success();
    assert_installed(&w.home(), &w.v2);
}

#[test]
fn since_a_date_picks_the_newest_release_made_by_then() {
    let w = world(64 * 1024);
    pack_cmd(
        &w,
        &w.key,
        "d.ogpack",
        &[
            "--record",
            "v1",
            "--tree",
            "v2",
            "--since",
            "2026-11-10",
            "--no-delta",
        ],
    )
    .assert()
    .success()
    .stdout(predicate::str::contains("1.0.0 -> 1.1.0"));
    // A date after the new release itself still names the newest release older than it.
    pack_cmd(
        &w,
        &w.key,
        "late.ogpack",
        &["--to", "1.1.0", "--since", "2027-01-01", "--no-delta"],
    )
    .assert()
    .success()
    .stdout(predicate::str::contains("1.0.0 -> 1.1.0"));
    pack_cmd(
        &w,
        &w.key,
        "e.ogpack",
        &["--to", "1.1.0", "--since", "2026-10-01"],
    )
    .assert()
    .code(2)
    .stderr(
        predicate::str::contains(
            "no release of 'org.example.clinic' was created at or before 2026-10-01",
        )
        .and(predicate::str::contains("1.0.0 (2026-11-01T10:00:00Z)")),
    );
    // Never overwrite an output by surprise.
    pack_cmd(
        &w,
        &w.key,
        "d.ogpack",
        &["--to", "1.1.0", "--since", "1.0.0"],
    )
    .assert()
    .code(2)
    .stderr(predicate::str::contains("already exists"));
}

#[test]
fn refuses_downgrade_replay_and_wrong_base() {
    let w = world(64 * 1024);
    make_pack(&w, "u.ogpack", &["--no-delta"]);
    install(&w);
    w.cmd()
        .args(["apply-update", "u.ogpack"])
        .assert()
        .success();
    let before = snapshot(&w.home());
    // Replaying the same pack: 1.1.0 is not newer than 1.1.0.
    w.cmd()
        .args(["apply-update", "u.ogpack"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "not newer than the installed release 1.1.0",
        ));
    assert_eq!(snapshot(&w.home()), before);

    // A 1.1.0 -> 1.2.0 pack on a 1.0.0 site names both.
    let v3 = make_tree(
        &w.p("v3"),
        "1.2.0",
        "2026-11-20T10:00:00Z",
        &[f(
            "README.txt",
            b"1.2.0\n".to_vec(),
            offgrid::manifest::FileKind::Doc,
        )],
        &[&w.key],
    );
    let _ = v3;
    pack_cmd(
        &w,
        &w.key,
        "v3.ogpack",
        &["--tree", "v3", "--since", "1.1.0"],
    )
    .assert()
    .success();
    w.cmd().args(["rollback"]).assert().success();
    let before = snapshot(&w.home());
    w.cmd()
        .args(["apply-update", "v3.ogpack"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "updates from release(s) 1.1.0 but this site runs release 1.0.0",
        ));
    assert_eq!(snapshot(&w.home()), before);
}

#[test]
fn refuses_a_damaged_base_file() {
    let w = world(256 * 1024);
    make_pack(&w, "u.ogpack", &["--no-delta"]);
    install(&w);
    // data/same.txt is copied from the installed release: damage it.
    let p = current_dir(&w.home()).join("data/same.txt");
    fs::write(&p, b"tampered").unwrap();
    let before = snapshot(&w.home());
    w.cmd()
        .args(["apply-update", "u.ogpack"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "installed file 'data/same.txt' does not match",
        ));
    assert_eq!(snapshot(&w.home()), before);
}

#[test]
fn refuses_wrong_key_and_unmet_threshold() {
    let w = world(64 * 1024);
    make_pack(&w, "u.ogpack", &["--no-delta"]);
    let (_, other) = keypair(w.dir.path(), "other");
    // Install pins the HQ key; a stick signed by another key is refused.
    w.cmd()
        .args(["install", "--from", "v1", "--pubkey"])
        .arg(&other)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("threshold not met"));
    assert!(!w.home().join("state.json").exists());
    install(&w);
    // A pack signed by another key is refused by the pinned policy.
    let (okey, _) = (w.p("other.key"), ());
    pack_cmd(&w, &okey, "o.ogpack", &V1_TO_V2)
        .env("OFFGRID_HQ", w.p("hq2"))
        .arg("--no-delta")
        .assert()
        .success();
    let before = snapshot(&w.home());
    w.cmd()
        .args(["apply-update", "o.ogpack"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("threshold not met"));
    assert_eq!(snapshot(&w.home()), before);
    // Passing other keys at a later install is refused: keys are pinned.
    w.cmd()
        .args(["install", "--from", "v2", "--pubkey"])
        .arg(&other)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("do not match the keys pinned"));

    // A 2-of-2 trust policy at install: one signature is not enough.
    let w2 = world(64 * 1024);
    let (_, p2) = keypair(w2.dir.path(), "second");
    let l1 = fs::read_to_string(&w2.pubkey)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    let l2 = fs::read_to_string(&p2)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    fs::write(
        w2.p("trust.toml"),
        format!("threshold = 2\n[[keys]]\npubkey = \"{l1}\"\n[[keys]]\npubkey = \"{l2}\"\n"),
    )
    .unwrap();
    w2.cmd()
        .args(["install", "--from", "v1", "--trust", "trust.toml"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "1 valid signature(s) by trusted keys, 2 required",
        ));
}

#[test]
fn refuses_payloads_from_another_pack_and_damage() {
    let w = world(128 * 1024);
    make_pack(&w, "a.ogpack", &["--no-delta"]);
    // A second pack of the same releases, different payload bytes (another level).
    pack_cmd(
        &w,
        &w.key,
        "b.ogpack",
        &[
            "--to",
            "1.1.0",
            "--since",
            "1.0.0",
            "--no-delta",
            "--level",
            "1",
        ],
    )
    .assert()
    .success();
    install(&w);
    let a = tar_entries(&w.p("a.ogpack"));
    let b = tar_entries(&w.p("b.ogpack"));
    let before = snapshot(&w.home());

    // Head of pack a, payloads of pack b.
    let mut mixed: Vec<_> = a
        .iter()
        .filter(|(n, _)| !n.starts_with("payloads/"))
        .cloned()
        .collect();
    mixed.extend(
        b.iter()
            .filter(|(n, _)| n.starts_with("payloads/"))
            .cloned(),
    );
    write_tar(&w.p("mixed.ogpack"), &mixed);
    for cmd in [
        &["apply-update", "mixed.ogpack"][..],
        &["verify", "mixed.ogpack", "--pubkey", "hq.pub"][..],
    ] {
        w.cmd()
            .args(cmd)
            .assert()
            .code(1)
            .stderr(predicate::str::contains(
                "does not match the signed pack manifest",
            ));
    }
    assert_eq!(snapshot(&w.home()), before);

    // Truncated pack.
    let full = fs::read(w.p("a.ogpack")).unwrap();
    fs::write(w.p("trunc.ogpack"), &full[..full.len() * 2 / 3]).unwrap();
    w.cmd()
        .args(["apply-update", "trunc.ogpack"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("truncated"));
    assert_eq!(snapshot(&w.home()), before);

    // One flipped byte in a payload.
    let mut dmg = a.clone();
    let last = dmg.len() - 1;
    dmg[last].1[10] ^= 1;
    write_tar(&w.p("dmg.ogpack"), &dmg);
    w.cmd()
        .args(["apply-update", "dmg.ogpack"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("sha256"));
    assert_eq!(snapshot(&w.home()), before);

    // Not a pack at all.
    fs::write(w.p("junk.ogpack"), b"hello").unwrap();
    w.cmd()
        .args(["apply-update", "junk.ogpack"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is not an offgrid update pack"));
    assert_eq!(snapshot(&w.home()), before);
}

/// Re-signs a pack whose manifest was edited, as HQ's key would (stock minisign), so the
/// test reaches the checks behind the signature.
fn resign(w: &World, entries: &mut [(String, Vec<u8>)], edit: impl Fn(&mut toml::Table)) {
    let mut t: toml::Table = toml::from_str(std::str::from_utf8(&entries[0].1).unwrap()).unwrap();
    edit(&mut t);
    let text = toml::to_string(&t).unwrap();
    let pm_path = w.p("pm.toml");
    fs::write(&pm_path, &text).unwrap();
    let from: Vec<String> = t["from"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["release"].as_str().unwrap().to_owned())
        .collect();
    let comment = format!(
        "offgrid-pack bundle={} from={} to={} pack_sha256={}",
        t["bundle_id"].as_str().unwrap(),
        from.join(","),
        t["to"].as_str().unwrap(),
        sha(text.as_bytes())
    );
    let sd = w.p("resigned");
    fs::create_dir_all(&sd).unwrap();
    let sig = sign_file(&pm_path, &w.key, &comment, &sd);
    entries[0].1 = text.into_bytes();
    entries[1].1 = fs::read(sig).unwrap();
}

#[test]
fn refuses_a_payload_beyond_its_declared_size() {
    let w = world(128 * 1024);
    make_pack(&w, "a.ogpack", &["--no-delta"]);
    install(&w);
    let before = snapshot(&w.home());
    let mut e = tar_entries(&w.p("a.ogpack"));
    // Declare the model 1000 bytes shorter than its zstd frame decodes to, in the signed
    // manifest and in the embedded bundle manifest (so only the size bound can catch it).
    let mtext = String::from_utf8(e[2].1.clone()).unwrap();
    let mut m = offgrid::manifest::Manifest::parse(mtext.as_bytes()).unwrap();
    let mf = m
        .files
        .iter_mut()
        .find(|f| f.path == "models/tiny.gguf")
        .unwrap();
    let real = mf.size;
    mf.size -= 1000;
    mf.chunks = vec![
        mf.chunks[0].clone();
        offgrid::manifest::FileEntry::chunk_count(mf.size, mf.chunk_size) as usize
    ];
    let new_m = m.to_toml();
    e[2].1 = new_m.clone().into_bytes();
    let msha = sha(new_m.as_bytes());
    let mlen = new_m.len() as i64;
    resign(&w, &mut e, |t| {
        t.insert("manifest_sha256".into(), msha.clone().into());
        t.insert("manifest_size".into(), mlen.into());
        for p in t["payloads"].as_array_mut().unwrap() {
            if p["target"].as_str() == Some("models/tiny.gguf") {
                p.as_table_mut()
                    .unwrap()
                    .insert("target_size".into(), ((real - 1000) as i64).into());
            }
        }
    });
    // The release signature no longer matches the edited manifest: re-sign it too.
    let comment = format!("offgrid bundle={BUNDLE} release=1.1.0 manifest_sha256={msha}");
    let mp = w.p("m.toml");
    fs::write(&mp, &new_m).unwrap();
    let sd = w.p("resigned-m");
    fs::create_dir_all(&sd).unwrap();
    let rs = sign_file(&mp, &w.key, &comment, &sd);
    e[3].1 = fs::read(rs).unwrap();
    write_tar(&w.p("big.ogpack"), &e);
    w.cmd()
        .args(["apply-update", "big.ogpack"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "would decompress beyond its declared size",
        ));
    assert_eq!(snapshot(&w.home()), before);
}

#[test]
fn refuses_hostile_tar_entries() {
    let w = world(64 * 1024);
    make_pack(&w, "a.ogpack", &["--no-delta"]);
    install(&w);
    let before = snapshot(&w.home());
    let good = tar_entries(&w.p("a.ogpack"));
    let n = good.len();
    // Replace the last payload entry with hostile variants, keeping everything before.
    type AddEntry = Box<dyn Fn(&mut tar::Builder<fs::File>)>;
    let cases: Vec<(&str, AddEntry, &str)> = vec![
        (
            "abs",
            Box::new(|b| raw_entry(b, "/etc/passwd", tar::EntryType::Regular, b"x")),
            "absolute path",
        ),
        (
            "dotdot",
            Box::new(|b| raw_entry(b, "payloads/../../x", tar::EntryType::Regular, b"x")),
            "contains '..'",
        ),
        (
            "link",
            Box::new(|b| raw_entry(b, "payloads/link", tar::EntryType::Symlink, b"")),
            "is a link",
        ),
        (
            "dev",
            Box::new(|b| raw_entry(b, "payloads/dev", tar::EntryType::Char, b"")),
            "is a device file",
        ),
        (
            "dup",
            Box::new(|b| raw_entry(b, "manifest.toml", tar::EntryType::Regular, b"x")),
            "appears twice",
        ),
    ];
    for (name, add, msg) in cases {
        let p = w.p(&format!("{name}.ogpack"));
        let mut b = tar::Builder::new(fs::File::create(&p).unwrap());
        for (en, d) in &good[..n - 1] {
            raw_entry(&mut b, en, tar::EntryType::Regular, d);
        }
        add(&mut b);
        b.finish().unwrap();
        drop(b);
        w.cmd()
            .args(["apply-update"])
            .arg(&p)
            .assert()
            .code(1)
            .stderr(predicate::str::contains(msg));
        assert_eq!(snapshot(&w.home()), before, "{name}");
    }
    // A hostile first entry is refused before anything else.
    let p = w.p("first.ogpack");
    let mut b = tar::Builder::new(fs::File::create(&p).unwrap());
    raw_entry(
        &mut b,
        "../offgrid-pack.toml",
        tar::EntryType::Regular,
        b"x",
    );
    b.finish().unwrap();
    drop(b);
    w.cmd()
        .args(["apply-update", "first.ogpack"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("contains '..'"));
}

/// Appends an entry with a raw name (bypassing tar-rs's own path checks).
fn raw_entry(b: &mut tar::Builder<fs::File>, name: &str, t: tar::EntryType, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    {
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
    }
    h.set_entry_type(t);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    if t == tar::EntryType::Symlink {
        h.set_link_name("/etc/passwd").unwrap();
    }
    h.set_cksum();
    b.append(&h, data).unwrap();
}

#[test]
fn nothing_installed_and_no_previous() {
    let w = world(64 * 1024);
    make_pack(&w, "u.ogpack", &["--no-delta"]);
    w.cmd()
        .args(["apply-update", "u.ogpack"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("nothing is installed"));
    w.cmd()
        .args(["status"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("nothing is installed"));
    install(&w);
    w.cmd()
        .args(["rollback"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no previous release"));
    // Installing the same release again checks the installed files and repairs them
    // instead of refusing (SPEC.md §7.15); nothing is damaged here.
    w.cmd()
        .args(["install", "--from", "v1"])
        .assert()
        .success()
        .stdout(predicate::str::contains("nothing to repair"));
    // Installing the newer stick over it works with the pinned keys, and keeps 1.0.0.
    w.cmd().args(["install", "--from", "v2"]).assert().success();
    assert_installed(&w.home(), &w.v2);
    w.cmd().args(["rollback"]).assert().success();
    assert_installed(&w.home(), &w.v1);
}

#[test]
fn deltas_make_the_pack_small_and_apply_exactly() {
    let w = world(4 * MIB);
    make_pack(&w, "whole.ogpack", &["--no-delta"]);
    w.cmd()
        .args([
            "create-update-pack",
            "--to",
            "1.1.0",
            "--since",
            "1.0.0",
            "-o",
            "delta.ogpack",
            "--sign-with",
        ])
        .arg(&w.key)
        .assert()
        .success()
        .stdout(
            predicate::str::contains("delta      models/tiny.gguf from 1.0.0")
                .and(predicate::str::contains(
                    "unchanged  data/same.txt from 1.0.0",
                ))
                .and(predicate::str::contains(
                    "removed    data/old.txt (since 1.0.0)",
                )),
        );
    let whole = fs::metadata(w.p("whole.ogpack")).unwrap().len();
    let delta = fs::metadata(w.p("delta.ogpack")).unwrap().len();
    assert!(
        delta * 4 < whole,
        "delta pack {delta} bytes vs whole {whole}"
    );
    assert_carries_a_delta(&w.p("delta.ogpack"));
    install(&w);
    w.cmd()
        .args(["apply-update", "delta.ogpack", "--json"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("\"type\":\"applied\"")
                .and(predicate::str::contains("\"from_deltas\":")),
        );
    assert_installed(&w.home(), &w.v2);
    assert!(!current_dir(&w.home()).join("data/old.txt").exists());
}

/// `--max-memory` bounds the delta encoder: a budget under its minimum is a usage error
/// that writes nothing; a small one still makes deltas that apply exactly.
#[test]
fn max_memory_bounds_the_delta_encoder() {
    let w = world(4 * MIB);
    // Records both releases in the history.
    make_pack(&w, "whole.ogpack", &["--no-delta"]);
    let pack = |out: &str, mem: &str| {
        let mut c = w.cmd();
        c.args([
            "create-update-pack",
            "--to",
            "1.1.0",
            "--since",
            "1.0.0",
            "--max-memory",
            mem,
            "-o",
            out,
            "--sign-with",
        ])
        .arg(&w.key);
        c
    };
    pack("small.ogpack", "100M").assert().code(2).stderr(
        predicate::str::contains("--max-memory '100M'").and(predicate::str::contains("576M")),
    );
    assert!(!w.p("small.ogpack").exists());
    pack("small.ogpack", "600M").assert().success();
    assert_carries_a_delta(&w.p("small.ogpack"));
    install(&w);
    w.cmd()
        .args(["apply-update", "small.ogpack"])
        .assert()
        .success();
    assert_installed(&w.home(), &w.v2);
}

#[test]
fn one_pack_serves_several_base_releases() {
    let w = world(512 * 1024);
    make_pack(&w, "u.ogpack", &[]);
    // Release 1.2.0: the 1.1.0 model again, one more file.
    let mut files = Vec::new();
    for e in &w.v2.files {
        let b = fs::read(w.p("v2").join(&e.path)).unwrap();
        let path: &'static str = Box::leak(e.path.clone().into_boxed_str());
        files.push(f(path, b, e.kind));
    }
    files.push(f(
        "data/extra.txt",
        b"1.2.0 extra\n".to_vec(),
        offgrid::manifest::FileKind::Data,
    ));
    let v3 = make_tree(
        &w.p("v3"),
        "1.2.0",
        "2026-11-20T10:00:00Z",
        &files,
        &[&w.key],
    );
    pack_cmd(
        &w,
        &w.key,
        "multi.ogpack",
        &["--tree", "v3", "--since", "1.0.0", "--since", "1.1.0"],
    )
    .assert()
    .success()
    .stdout(predicate::str::contains("1.0.0, 1.1.0 -> 1.2.0"));
    // A 1.0.0 site and a 1.1.0 site both reach exactly 1.2.0 with the same pack.
    install(&w);
    let h2 = w.p("home2");
    w.cmd()
        .env("OFFGRID_HOME", &h2)
        .args(["install", "--from", "v2", "--pubkey"])
        .arg(&w.pubkey)
        .assert()
        .success();
    w.cmd()
        .args(["apply-update", "multi.ogpack"])
        .assert()
        .success();
    w.cmd()
        .env("OFFGRID_HOME", &h2)
        .args(["apply-update", "multi.ogpack"])
        .assert()
        .success();
    assert_installed(&w.home(), &v3);
    assert_installed(&h2, &v3);
}

#[test]
fn status_reports_a_damaged_install() {
    let w = world(64 * 1024);
    install(&w);
    let p = current_dir(&w.home()).join("README.txt");
    fs::write(&p, b"x").unwrap();
    w.cmd().args(["status"]).assert().success().stdout(
        predicate::str::contains("1 problem(s)")
            .and(predicate::str::contains("'README.txt' is 1 bytes")),
    );
    fs::remove_file(&p).unwrap();
    let out = w.cmd().args(["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["data"]["problems"][0], "'README.txt' is missing");
}

/// Asserts that the pack at `path` has a `.delta` entry.
fn assert_carries_a_delta(path: &std::path::Path) {
    let names: Vec<String> = tar_entries(path).into_iter().map(|e| e.0).collect();
    assert!(names.iter().any(|n| n.ends_with(".delta")), "{names:?}");
}
