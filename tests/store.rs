//! The site home's content-addressed store (issue 10 item 4, SPEC.md §7.5, §7.17), on the
//! real binary:
//!
//! - equal bytes are stored once: across kept releases and across paths of one release
//!   (one inode, linked from every release folder and from `objects/AA/SHA256.MODE`);
//! - gc (and apply-update's own cleanup) removes exactly the objects no kept release
//!   needs and reports the bytes freed exactly;
//! - repair of a damaged object shared by every release fixes every release and the
//!   store at once;
//! - the committed layout-1 home (`tests/fixtures/home-v1.tar`, written by the code
//!   before the store) is migrated by each command that opens a home;
//! - SIGKILL during the migration and during gc leaves the old or the new state.

use crate::update_util;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use offgrid::manifest::FileKind;
use update_util::*;

const DEADLINE: Duration = Duration::from_secs(120);
const MODEL: &str = "models/tiny.gguf";

/// `offgrid` in the world, shims into its `bin/` (also used by `tests/bundles.rs`).
pub(crate) fn cmd(w: &World) -> assert_cmd::Command {
    let mut c = w.cmd();
    c.env("NO_COLOR", "1")
        .env("OFFGRID_BIN_DIR", w.p("bin"))
        .timeout(DEADLINE);
    c
}

fn state(home: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(home.join("state.json")).unwrap()).unwrap()
}

fn kept_dirs(home: &Path) -> Vec<PathBuf> {
    let s = state(home);
    let mut v = vec![s["current"]["dir"].as_str().unwrap().to_owned()];
    if let Some(p) = s["previous"]["dir"].as_str() {
        v.push(p.to_owned());
    }
    for k in s["also_kept"].as_array().into_iter().flatten() {
        v.push(k["dir"].as_str().unwrap().to_owned());
    }
    v.into_iter()
        .map(|d| home.join("versions").join(d))
        .collect()
}

/// Every object of the store: path -> (inode, links, size).
pub(crate) fn objects(home: &Path) -> BTreeMap<PathBuf, (u64, u64, u64)> {
    walkdir::WalkDir::new(home.join("objects"))
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let m = e.metadata().unwrap();
            (e.path().to_path_buf(), (m.ino(), m.nlink(), m.len()))
        })
        .collect()
}

/// Bytes of the files of the home's releases and store, each inode once (like `du`).
fn usage(home: &Path) -> u64 {
    let mut seen = BTreeSet::new();
    let mut n = 0;
    for r in [home.join("versions"), home.join("objects")] {
        for e in walkdir::WalkDir::new(r).into_iter().map(|e| e.unwrap()) {
            if e.file_type().is_file() {
                let m = e.metadata().unwrap();
                if seen.insert(m.ino()) {
                    n += m.len();
                }
            }
        }
    }
    n
}

pub(crate) fn ino(p: &Path) -> u64 {
    fs::metadata(p).unwrap().ino()
}

/// The store object of the file `p` of a release (same inode), if any.
fn object_of(home: &Path, p: &Path) -> Option<PathBuf> {
    let i = ino(p);
    objects(home)
        .into_iter()
        .find(|(_, (oi, _, _))| *oi == i)
        .map(|(p, _)| p)
}

/// Every file of `m` has its signed bytes in `dir`, and is a link of its store object.
fn assert_stored(home: &Path, dir: &Path, m: &offgrid::manifest::Manifest) {
    for f in &m.files {
        let p = dir.join(&f.path);
        let b = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(sha(&b), f.sha256, "{}", p.display());
        let obj = object_of(home, &p).unwrap_or_else(|| panic!("{} is not in the store", f.path));
        let name = obj.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(&f.sha256), "{name} for {}", f.path);
        assert_eq!(
            obj.parent().unwrap().file_name().unwrap().to_string_lossy(),
            f.sha256[..2]
        );
    }
}

/// Releases 1.0.0, 1.1.0 (README changed), 1.2.0 (model changed too): each carries the
/// same bytes twice (`data/a.txt`, `data/copy.txt`).
fn site() -> (World, [offgrid::manifest::Manifest; 3]) {
    let dir = tempdir(true);
    let (key, pubkey) = keypair(dir.path(), "hq");
    let m1 = noise(300_000, 7);
    let m3 = noise(310_000, 8);
    let mk = |name: &str, v: &str, created: &str, model: &Vec<u8>| {
        let files = vec![
            f(MODEL, model.clone(), FileKind::Model),
            f(
                "README.txt",
                format!("clinic bundle {v}\n").into_bytes(),
                FileKind::Doc,
            ),
            f(
                "data/a.txt",
                b"twice in every release\n".repeat(40),
                FileKind::Data,
            ),
            f(
                "data/copy.txt",
                b"twice in every release\n".repeat(40),
                FileKind::Data,
            ),
        ];
        make_tree(&dir.path().join(name), v, created, &files, &[&key])
    };
    let v1 = mk("s1", "1.0.0", "2026-11-01T10:00:00Z", &m1);
    let v2 = mk("s2", "1.1.0", "2026-11-15T10:00:00Z", &m1);
    let v3 = mk("s3", "1.2.0", "2026-11-20T10:00:00Z", &m3);
    let w = World {
        dir,
        key,
        pubkey,
        v1: v1.clone(),
        v2: v2.clone(),
    };
    (w, [v1, v2, v3])
}

fn pack(w: &World, record: &str, tree: &str, since: &str, out: &str) {
    cmd(w)
        .args([
            "create-update-pack",
            "--record",
            record,
            "--tree",
            tree,
            "--since",
            since,
            "--output",
            out,
            "--sign-with",
        ])
        .arg(&w.key)
        .assert()
        .success();
}

/// 1.0.0 installed, then 1.1.0 and 1.2.0 applied with `--keep 3`: three kept releases.
fn three_kept(w: &World) {
    pack(w, "s1", "s2", "1.0.0", "u2.ogpack");
    pack(w, "s2", "s3", "1.1.0", "u3.ogpack");
    cmd(w)
        .args(["install", "--from", "s1", "--pubkey"])
        .arg(&w.pubkey)
        .assert()
        .success();
    for p in ["u2.ogpack", "u3.ogpack"] {
        cmd(w)
            .args(["apply-update", p, "--keep", "3"])
            .assert()
            .success();
    }
}

#[test]
fn equal_bytes_are_stored_once() {
    let (w, [v1, v2, v3]) = site();
    three_kept(&w);
    let home = w.home();
    assert_eq!(state(&home)["layout"], 2);
    let dirs = kept_dirs(&home);
    assert_eq!(dirs.len(), 3);
    for (d, m) in dirs.iter().zip([&v3, &v2, &v1]) {
        assert_stored(&home, d, m);
    }
    // Across releases: the unchanged model of 1.0.0 and 1.1.0 is one inode (and object).
    let (cur, prev, old) = (&dirs[0], &dirs[1], &dirs[2]);
    assert_eq!(ino(&prev.join(MODEL)), ino(&old.join(MODEL)));
    assert_ne!(ino(&cur.join(MODEL)), ino(&prev.join(MODEL)));
    // Within and across releases: the two equal data files of three releases, one inode.
    let i = ino(&cur.join("data/a.txt"));
    for d in &dirs {
        assert_eq!(ino(&d.join("data/a.txt")), i);
        assert_eq!(ino(&d.join("data/copy.txt")), i);
    }
    let obj = object_of(&home, &cur.join("data/a.txt")).unwrap();
    assert_eq!(
        fs::metadata(&obj).unwrap().nlink(),
        7,
        "6 release paths + the store"
    );
    // The store: 2 models + 3 READMEs + 1 data object, and every object is linked.
    let objs = objects(&home);
    assert_eq!(objs.len(), 6, "{objs:?}");
    assert!(objs.values().all(|(_, links, _)| *links >= 2), "{objs:?}");
    // Disk used: each distinct content once (manifests and signatures besides).
    let contents: u64 = objs.values().map(|(_, _, n)| n).sum();
    let meta: u64 = dirs
        .iter()
        .flat_map(|d| walkdir::WalkDir::new(d).into_iter().map(|e| e.unwrap()))
        .filter(|e| e.file_type().is_file() && e.metadata().unwrap().nlink() == 1)
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert_eq!(usage(&home), contents + meta);
}

#[test]
fn gc_frees_exactly_the_objects_no_kept_release_needs() {
    let (w, [v1, v2, v3]) = site();
    three_kept(&w);
    let home = w.home();
    // A stray object nothing links or names (e.g. left by a crash before a switch).
    let stray = home
        .join("objects/ab")
        .join(format!("{}.644", "ab".repeat(32)));
    fs::create_dir_all(stray.parent().unwrap()).unwrap();
    fs::write(&stray, b"nobody links me").unwrap();
    let before = usage(&home);
    let old_model = object_of(&home, &kept_dirs(&home)[2].join(MODEL)).unwrap();
    let out = cmd(&w)
        .args(["gc", "--keep", "2", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["data"]["removed"][0], "1.0.0", "{v}");
    let after = usage(&home);
    assert_eq!(v["data"]["freed_bytes"], before - after, "{v}");
    // 1.0.0's README and manifest went, and the stray object; the model stays (1.1.0).
    assert!(!stray.exists());
    assert!(old_model.exists(), "1.1.0 still links the 1.0.0 model");
    let dirs = kept_dirs(&home);
    assert_stored(&home, &dirs[0], &v3);
    assert_stored(&home, &dirs[1], &v2);
    // keep 1: the old model's object has no link left and goes, exactly its bytes and
    // 1.1.0's own README, manifest and signature.
    let before = usage(&home);
    let out = cmd(&w)
        .args(["gc", "--keep", "1", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["data"]["freed_bytes"], before - usage(&home), "{v}");
    assert!(v["data"]["freed_bytes"].as_u64().unwrap() > 300_000, "{v}");
    assert!(!old_model.exists());
    assert!(objects(&home).values().all(|(_, l, _)| *l >= 2));
    assert_stored(&home, &kept_dirs(&home)[0], &v3);
    let _ = v1;
}

#[test]
fn apply_update_keeps_two_and_sweeps_the_rest() {
    let (w, [_, v2, v3]) = site();
    pack(&w, "s1", "s2", "1.0.0", "u2.ogpack");
    pack(&w, "s2", "s3", "1.1.0", "u3.ogpack");
    cmd(&w)
        .args(["install", "--from", "s1", "--pubkey"])
        .arg(&w.pubkey)
        .assert()
        .success();
    cmd(&w)
        .args(["apply-update", "u2.ogpack"])
        .assert()
        .success();
    let home = w.home();
    let readme1 = object_of(&home, &kept_dirs(&home)[1].join("README.txt")).unwrap();
    cmd(&w)
        .args(["apply-update", "u3.ogpack"])
        .assert()
        .success();
    // Default --keep 2: 1.0.0 is gone, and with it its README object.
    assert_eq!(kept_dirs(&home).len(), 2);
    assert!(!readme1.exists());
    assert!(objects(&home).values().all(|(_, l, _)| *l >= 2));
    assert_stored(&home, &kept_dirs(&home)[0], &v3);
    assert_stored(&home, &kept_dirs(&home)[1], &v2);
}

#[test]
fn repair_of_a_shared_object_fixes_every_release() {
    let (w, [v1, v2, _]) = site();
    pack(&w, "s1", "s2", "1.0.0", "u2.ogpack");
    cmd(&w)
        .args(["install", "--from", "s1", "--pubkey"])
        .arg(&w.pubkey)
        .assert()
        .success();
    cmd(&w)
        .args(["apply-update", "u2.ogpack"])
        .assert()
        .success();
    let home = w.home();
    let obj = object_of(&home, &home.join("current").join(MODEL)).unwrap();
    // Damage the store object itself: every release linking it is damaged.
    let mut b = fs::read(&obj).unwrap();
    b[1000] ^= 0xff;
    fs::write(&obj, &b).unwrap();
    let out = cmd(&w).args(["status", "--verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    cmd(&w).args(["repair", "--from", "s1"]).assert().success();
    let dirs = kept_dirs(&home);
    assert_stored(&home, &dirs[0], &v2);
    assert_stored(&home, &dirs[1], &v1);
    // One repaired inode for both releases and the store object.
    let i = ino(&dirs[0].join(MODEL));
    assert_eq!(ino(&dirs[1].join(MODEL)), i);
    assert_eq!(ino(&obj), i);
    assert_eq!(
        sha(&fs::read(&obj).unwrap()),
        v1.file(MODEL).unwrap().sha256
    );
    cmd(&w).args(["status", "--verify"]).assert().success();
    // A release file deleted (and nothing else holding it) comes back from the store.
    fs::remove_file(dirs[0].join("README.txt")).unwrap();
    cmd(&w).args(["repair", "--from", "s1"]).assert().success();
    assert_stored(&home, &dirs[0], &v2);
}

/// The committed layout-1 home, unpacked into a fresh temp dir.
fn old_home() -> tempfile::TempDir {
    let d = tempdir(true);
    let st = std::process::Command::new("tar")
        .arg("-xf")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/home-v1.tar"))
        .arg("-C")
        .arg(d.path())
        .status()
        .unwrap();
    assert!(st.success());
    d
}

fn og(d: &Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("offgrid").unwrap();
    c.current_dir(d)
        .env("OFFGRID_HOME", d.join("home"))
        .env("OFFGRID_HQ", d.join("hq"))
        .env("OFFGRID_BIN_DIR", d.join("bin"))
        .env("OFFGRID_CACHE_DIR", d.join("cache"))
        .env("HOME", d)
        .env("NO_COLOR", "1")
        .env_remove("OFFGRID_FAULT_AT")
        .timeout(DEADLINE);
    c
}

/// The fixture's home after migration: layout 2, its history, keys and site key kept,
/// every kept release's files linked from the store.
fn assert_migrated(d: &Path, before: &serde_json::Value) {
    let home = d.join("home");
    let s = state(&home);
    assert_eq!(s["layout"], 2, "{s}");
    assert_eq!(s["trust"], before["trust"]);
    assert_eq!(s["bundle_id"], before["bundle_id"]);
    let events: Vec<&str> = s["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(&events[..2], ["install", "apply"], "{s}");
    assert!(home.join("site/site.key").is_file());
    for d in kept_dirs(&home) {
        let m = offgrid::manifest::Manifest::parse(&fs::read(d.join("manifest.toml")).unwrap())
            .unwrap();
        assert_stored(&home, &d, &m);
    }
    assert!(objects(&home).values().all(|(_, l, _)| *l >= 2));
}

#[test]
fn every_command_migrates_the_old_home() {
    let cases: &[&[&str]] = &[
        &["status"],
        &["status", "--verify"],
        &["install", "--from", "stick-1.3.0"],
        &["apply-update", "u-1.2.0.ogpack"],
        &["rollback"],
        &["gc"],
        &["repair", "--from", "stick-1.0.0"],
    ];
    for args in cases {
        let d = old_home();
        let before = state(&d.path().join("home"));
        assert!(before.get("layout").is_none(), "the fixture is layout 1");
        let out = og(d.path()).args(*args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert_migrated(d.path(), &before);
        // The layout is not migrated twice, and the home keeps working.
        og(d.path()).args(["status", "--verify"]).assert().success();
        let rel = state(&d.path().join("home"))["current"]["release"].clone();
        let want = match args[0] {
            "install" => "1.3.0",
            "apply-update" => "1.2.0",
            "rollback" => "1.0.0",
            _ => "1.1.0",
        };
        assert_eq!(rel, want, "{args:?}");
    }
}

/// Everything a kept release holds is intact (exit 0 of `status --verify`).
fn assert_verifies(d: &Path) {
    let out = og(d).args(["status", "--verify"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn killed_during_migration_leaves_the_old_or_the_new_layout() {
    for step in ["migrate-interned", "tmp-state.json", "migrate-flipped"] {
        let d = old_home();
        let before = state(&d.path().join("home"));
        let out = og(d.path())
            .env("OFFGRID_FAULT_AT", step)
            .args(["status"])
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(9), "{step}: {out:?}");
        // Old or new, never torn: state.json parses and says 1 or 2.
        let s = state(&d.path().join("home"));
        let layout = s.get("layout").and_then(|l| l.as_u64()).unwrap_or(1);
        let want = if step == "migrate-flipped" { 2 } else { 1 };
        assert_eq!(layout, want, "{step}");
        // The next command finishes the migration, and every release is intact.
        assert_verifies(d.path());
        assert_migrated(d.path(), &before);
    }
}

#[test]
fn killed_during_gc_leaves_the_old_or_the_new_state() {
    for step in ["gc-flipped", "gc-swept"] {
        let (w, [_, _, v3]) = site();
        three_kept(&w);
        let home = w.home();
        let out = w
            .std_cmd()
            .env("OFFGRID_FAULT_AT", step)
            .args(["gc", "--keep", "1"])
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(9), "{step}: {out:?}");
        // The decision is made (only 1.2.0 kept), and it is intact.
        assert_eq!(kept_dirs(&home).len(), 1, "{step}");
        cmd(&w).args(["status", "--verify"]).assert().success();
        assert_stored(&home, &kept_dirs(&home)[0], &v3);
        // The next command finished the cleanup: nothing unlinked is left.
        assert_eq!(fs::read_dir(home.join("versions")).unwrap().count(), 1);
        assert!(objects(&home).values().all(|(_, l, _)| *l >= 2), "{step}");
        assert_eq!(objects(&home).len(), 3, "{step}: model, README, data");
    }
}

#[test]
fn a_damaged_manifest_of_a_kept_release_is_put_back_from_a_stick() {
    let (w, [v1, v2, _]) = site();
    pack(&w, "s1", "s2", "1.0.0", "u2.ogpack");
    cmd(&w)
        .args(["install", "--from", "s1", "--pubkey"])
        .arg(&w.pubkey)
        .assert()
        .success();
    cmd(&w)
        .args(["apply-update", "u2.ogpack"])
        .assert()
        .success();
    let home = w.home();
    let prev = kept_dirs(&home)[1].clone();
    let mp = prev.join("manifest.toml");
    let mut b = fs::read(&mp).unwrap();
    b[40] ^= 0x20;
    fs::write(&mp, &b).unwrap();
    fs::remove_file(prev.join("README.txt")).unwrap();
    let out = cmd(&w).args(["status", "--verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // A stick of another release does not hold it: exit 1, named.
    let out = cmd(&w).args(["repair", "--from", "s2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("have a manifest that does not verify"));
    // The 1.0.0 stick does: the head first, then the file it names.
    cmd(&w)
        .args(["repair", "--from", "s1"])
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "repaired the signed manifest of 1.0.0 from tree",
        ));
    assert_eq!(
        fs::read(&mp).unwrap(),
        fs::read(w.p("s1/manifest.toml")).unwrap()
    );
    assert_stored(&home, &kept_dirs(&home)[0], &v2);
    for f in &v1.files {
        let b = fs::read(prev.join(&f.path)).unwrap();
        assert_eq!(sha(&b), f.sha256, "{}", f.path);
    }
    cmd(&w).args(["status", "--verify"]).assert().success();
}
