//! Finding and repairing damage in a site home (issue 10, the site side), on the real
//! binary as an operator drives it:
//!
//! - the story: 4 bytes of the installed model flipped through `current`; the
//!   model is shared by hard link with the kept release, so both are damaged; `status`
//!   says it only checked sizes, `status --verify` names the file in both releases
//!   (exit 1); `repair --from` the stick puts it back in both without changing which
//!   release is current; `install --from` the same stick repairs instead of refusing;
//! - repair from an update pack, from a folder of sticks, and what cannot be found (exit 1);
//! - a SIGKILL at every write step of repair leaves the old or the repaired home;
//! - rollback that means one thing, `rollback --to`, and the kept releases in `status`.

use crate::util;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use offgrid::manifest::FileKind;
use predicates::prelude::*;
use util::*;

/// Every command here gets a deadline.
const DEADLINE: Duration = Duration::from_secs(120);

/// The model both releases carry unchanged (so apply-update hard-links it).
const MODEL: &str = "models/tiny.gguf";

fn cmd(w: &World) -> assert_cmd::Command {
    let mut c = w.cmd();
    c.env("NO_COLOR", "1").timeout(DEADLINE);
    c
}

fn state(home: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(home.join("state.json")).unwrap()).unwrap()
}

/// The folder of a kept version, from state.json (`current` or `previous`).
fn version_dir(home: &Path, which: &str) -> PathBuf {
    let s = state(home);
    home.join("versions")
        .join(s[which]["dir"].as_str().expect("a kept version"))
}

/// Releases 1.0.0, 1.1.0 and 1.2.0 of a small bundle (trees `s1`, `s2`, `s3`): the model
/// and `data/same.txt` never change, the README and the changelog do, 1.2.0 adds a file.
fn site(model_size: usize) -> World {
    let dir = tempdir(true);
    let (key, pubkey) = keypair(dir.path(), "hq");
    let model = noise(model_size, 3);
    let mk = |name: &str, v: &str, created: &str, extra: bool| {
        let mut files = vec![
            f(MODEL, model.clone(), FileKind::Model),
            f(
                "README.txt",
                format!("clinic bundle {v}\n").into_bytes(),
                FileKind::Doc,
            ),
            f(
                "CHANGELOG.txt",
                format!("{v}: a release\n").into_bytes(),
                FileKind::Changelog,
            ),
            f(
                "data/same.txt",
                b"this file never changes\n".repeat(50),
                FileKind::Data,
            ),
        ];
        if extra {
            files.push(f(
                "data/new.txt",
                b"new in 1.2.0\n".to_vec(),
                FileKind::Data,
            ));
        }
        make_tree(&dir.path().join(name), v, created, &files, &[&key])
    };
    let v1 = mk("s1", "1.0.0", "2026-11-01T10:00:00Z", false);
    let v2 = mk("s2", "1.1.0", "2026-11-15T10:00:00Z", false);
    mk("s3", "1.2.0", "2026-11-20T10:00:00Z", true);
    World {
        dir,
        key,
        pubkey,
        v1,
        v2,
    }
}

/// Writes the pack `out` taking `since` to the tree `tree` (recording `record` first).
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

/// Installs 1.0.0 from its stick, then applies the 1.0.0 -> 1.1.0 pack: current 1.1.0,
/// 1.0.0 kept, the model shared by hard link.
fn installed_and_updated(w: &World) {
    pack(w, "s1", "s2", "1.0.0", "u.ogpack");
    cmd(w)
        .args(["install", "--from", "s1", "--pubkey"])
        .arg(&w.pubkey)
        .assert()
        .success();
    cmd(w).args(["apply-update", "u.ogpack"]).assert().success();
}

/// Bytes of the files under `dir` (a release folder) that no other release links: their
/// only other link, if any, is the home's store object (what gc frees with it).
fn bytes_linked_only_here(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let objects = dir.parent().unwrap().parent().unwrap().join("objects");
    let in_store: std::collections::BTreeSet<u64> = walkdir::WalkDir::new(objects)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().ino())
        .collect();
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap())
        .filter(|m| m.nlink() == 1 + u64::from(in_store.contains(&m.ino())))
        .map(|m| m.len())
        .sum()
}

/// Removes the file `p` of a release and the store object it links.
fn remove_with_its_object(home: &Path, p: &Path) {
    use std::os::unix::fs::MetadataExt;
    let ino = fs::metadata(p).unwrap().ino();
    for e in walkdir::WalkDir::new(home.join("objects")) {
        let e = e.unwrap();
        if e.file_type().is_file() && e.metadata().unwrap().ino() == ino {
            fs::remove_file(e.path()).unwrap();
        }
    }
    fs::remove_file(p).unwrap();
}

/// Flips 4 bytes in place at `at` (same size: a size check alone passes).
fn flip4(p: &Path, at: u64) {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(p)
        .unwrap();
    let mut b = [0u8; 4];
    f.seek(SeekFrom::Start(at)).unwrap();
    std::io::Read::read_exact(&mut f, &mut b).unwrap();
    for x in &mut b {
        *x ^= 0xa5;
    }
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&b).unwrap();
    f.sync_all().unwrap();
}

#[cfg(unix)]
fn inode(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(p).unwrap().ino()
}

/// Every file of the manifest of `m` has its signed bytes in `dir`.
fn assert_intact(dir: &Path, m: &offgrid::manifest::Manifest) {
    for f in &m.files {
        let b = fs::read(dir.join(&f.path)).unwrap_or_else(|e| panic!("{}: {e}", f.path));
        assert_eq!(sha(&b), f.sha256, "{} in {}", f.path, dir.display());
    }
}

/// `status --verify --json`: the exit code and the `verified` record's data.
fn verify_json(w: &World) -> (i32, serde_json::Value) {
    let out = cmd(w)
        .args(["status", "--verify", "--json"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("\"type\":\"verified\""))
        .unwrap_or_else(|| panic!("no verified record in {text}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    (out.status.code().unwrap(), v["data"].clone())
}

/// The story, part 1: the damage is found, in both releases sharing the model.
#[test]
fn status_verify_names_damage_a_size_check_misses() {
    let w = site(3 << 20);
    installed_and_updated(&w);
    let home = w.home();
    let cur = home.join("current").join(MODEL);
    #[cfg(unix)]
    assert_eq!(
        inode(&cur),
        inode(&version_dir(&home, "previous").join(MODEL)),
        "the model is not shared by hard link"
    );
    // Clean: plain status says it did not hash; --verify hashes and says all is intact.
    cmd(&w).args(["status"]).assert().success().stdout(
        predicate::str::contains("all present (sizes checked, not hashed")
            .and(predicate::str::contains("status --verify")),
    );
    cmd(&w)
        .args(["status", "--verify"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("hashed against its signed manifest")
                .and(predicate::str::contains(
                    "1.1.0 (current): 4 file(s) intact",
                ))
                .and(predicate::str::contains("1.0.0 (kept): 4 file(s) intact")),
        );
    let (code, v) = verify_json(&w);
    assert_eq!(code, 0, "{v}");
    // The shared model and data/same.txt are hashed once.
    assert_eq!(v["hashed_files"], 6, "{v}");

    flip4(&cur, 1_000_000);
    // A size check cannot see it.
    cmd(&w)
        .args(["status"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "all present (sizes checked, not hashed",
        ));
    cmd(&w)
        .args(["status", "--verify"])
        .assert()
        .code(1)
        .stdout(
            predicate::str::contains("1.1.0 (current): 1 of 4 file(s) damaged or missing")
                .and(predicate::str::contains(
                    "1.0.0 (kept): 1 of 4 file(s) damaged or missing",
                ))
                .and(predicate::str::contains(
                    "'models/tiny.gguf' bytes 0..3145728 do not match the signed chunk hashes",
                )),
        )
        .stderr(
            predicate::str::contains("2 file(s) and 0 manifest(s)")
                .and(predicate::str::contains("help: put them back")),
        );
    let (code, v) = verify_json(&w);
    assert_eq!(code, 1);
    assert_eq!(v["damaged"], 2, "{v}");
    for ver in v["versions"].as_array().unwrap() {
        assert_eq!(ver["damaged"][0]["path"], MODEL, "{v}");
        assert_eq!(ver["damaged"][0]["problem"], "damaged", "{v}");
    }
    // A missing file and a manifest that no longer verifies are named too.
    fs::remove_file(version_dir(&home, "previous").join("README.txt")).unwrap();
    let mp = version_dir(&home, "previous").join("manifest.toml");
    let mut text = fs::read_to_string(&mp).unwrap();
    text.push('\n');
    cmd(&w)
        .args(["status", "--verify"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("'README.txt' is missing"));
    fs::write(&mp, text).unwrap();
    cmd(&w)
        .args(["status", "--verify"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "1.0.0 (kept): 'manifest.toml' or its signatures do not verify",
        ));
}

/// `repair --json`: the exit code and the `repaired` record's data.
fn repair_json(w: &World, from: &[&str]) -> (i32, serde_json::Value) {
    let mut c = cmd(w);
    c.args(["repair", "--json"]);
    for f in from {
        c.args(["--from", f]);
    }
    let out = c.output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("\"type\":\"repaired\""))
        .unwrap_or_else(|| {
            panic!(
                "no repaired record in {text}; stderr {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    (out.status.code().unwrap(), v["data"].clone())
}

/// The story, end to end: the shared model damaged through `current` is put
/// back in both releases from the stick; the current release does not change; `install
/// --from` the same stick repairs instead of refusing.
#[test]
fn repair_from_the_stick_fixes_current_and_kept_releases() {
    let w = site(3 << 20);
    installed_and_updated(&w);
    let home = w.home();
    let cur_dir = version_dir(&home, "current");
    let prev_dir = version_dir(&home, "previous");
    flip4(&home.join("current").join(MODEL), 2_000_000);
    let before = state(&home);
    cmd(&w)
        .args(["repair", "--from", "s2"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("repaired 2 of 2 damaged or missing file(s)")
                .and(predicate::str::contains("release 1.1.0 is still current"))
                .and(predicate::str::contains(
                    "repaired  1.1.0 'models/tiny.gguf' from tree 's2'",
                ))
                .and(predicate::str::contains(
                    "repaired  1.0.0 'models/tiny.gguf' from tree 's2'",
                )),
        );
    let after = state(&home);
    assert_eq!(after["current"], before["current"]);
    assert_eq!(after["previous"], before["previous"]);
    assert_eq!(version_dir(&home, "current"), cur_dir);
    assert_intact(&cur_dir, &w.v2);
    assert_intact(&prev_dir, &w.v1);
    // Still one file shared by both releases (a new inode, linked into both).
    #[cfg(unix)]
    assert_eq!(inode(&cur_dir.join(MODEL)), inode(&prev_dir.join(MODEL)));
    let (code, v) = verify_json(&w);
    assert_eq!(code, 0, "{v}");
    // No staging, no journal, no temporaries left; the repair is in the history.
    assert!(!home.join("journal.json").exists());
    let names: Vec<String> = fs::read_dir(home.join("versions"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(walkdir::WalkDir::new(&home).into_iter().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(".offgrid-tmp")));
    assert_eq!(
        after["history"].as_array().unwrap().last().unwrap()["event"],
        "repair"
    );
    // Nothing damaged: repair says so, exit 0, and changes nothing.
    cmd(&w)
        .args(["repair", "--from", "s2"])
        .assert()
        .success()
        .stdout(predicate::str::contains("nothing to repair"));

    // install --from the stick of the installed release repairs instead of refusing;
    // a missing file of the kept release is put back too (from the same bytes).
    fs::remove_file(prev_dir.join("data/same.txt")).unwrap();
    flip4(&cur_dir.join("README.txt"), 3);
    cmd(&w)
        .args(["install", "--from", "s2"])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "holds the release already installed",
        ))
        .stdout(predicate::str::contains("repaired 2 of 2"));
    assert_intact(&cur_dir, &w.v2);
    assert_intact(&prev_dir, &w.v1);
    assert_eq!(state(&home)["current"], before["current"]);
}

/// Sources: an update pack (its payload for the file), a folder holding sticks, several --from; what no source holds is named, exit 1; an
/// untrusted stick is not used; a path that is not a source is a usage error (exit 2).
#[test]
fn repair_from_packs_folders_and_what_cannot_be_found() {
    let w = site(1 << 20);
    installed_and_updated(&w);
    let home = w.home();
    let cur_dir = version_dir(&home, "current");
    let prev_dir = version_dir(&home, "previous");
    // The 1.0.0 README is in no source but the s1 stick; the pack u.ogpack (1.0.0 ->
    // 1.1.0) carries 1.1.0's README as a payload.
    flip4(&cur_dir.join("README.txt"), 0);
    flip4(&prev_dir.join("README.txt"), 0);
    let (code, v) = repair_json(&w, &["u.ogpack"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["repaired"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["repaired"][0]["release"], "1.1.0", "{v}");
    assert_eq!(v["not_found"][0]["release"], "1.0.0", "{v}");
    assert_eq!(v["not_found"][0]["path"], "README.txt", "{v}");
    assert_intact(&cur_dir, &w.v2);
    cmd(&w)
        .args(["repair", "--from", "u.ogpack"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("not found 1.0.0 'README.txt'"))
        .stderr(predicate::str::contains("1 damaged or missing file(s) of"));
    // A folder holding the sticks finds it.
    fs::create_dir(w.p("media")).unwrap();
    fs::rename(w.p("s1"), w.p("media/s1")).unwrap();
    let (code, v) = repair_json(&w, &["u.ogpack", "media"]);
    assert_eq!(code, 0, "{v}");
    assert_intact(&prev_dir, &w.v1);
    fs::rename(w.p("media/s1"), w.p("s1")).unwrap();

    // An untrusted stick (another key) is not used, and says why.
    let (k2, _) = keypair(w.dir.path(), "other");
    let m = fs::read(w.p("s2").join("manifest.toml")).unwrap();
    fs::create_dir_all(w.p("evil")).unwrap();
    fs::write(w.p("evil/manifest.toml"), &m).unwrap();
    fs::create_dir_all(w.p("evil/signatures")).unwrap();
    sign_file(
        &w.p("evil/manifest.toml"),
        &k2,
        &format!(
            "offgrid bundle={BUNDLE} release=1.1.0 manifest_sha256={}",
            sha(&m)
        ),
        &w.p("evil/signatures"),
    );
    for f in &w.v2.files {
        let p = w.p("evil").join(&f.path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::copy(w.p("s2").join(&f.path), p).unwrap();
    }
    // Gone from the release and from the home's store (else repair takes it from there).
    remove_with_its_object(&w.home(), &cur_dir.join("CHANGELOG.txt"));
    let (code, v) = repair_json(&w, &["evil"]);
    assert_eq!(code, 1, "{v}");
    assert!(
        v["sources"][0]["problem"]
            .as_str()
            .unwrap()
            .contains("do not hold"),
        "{v}"
    );
    assert!(!cur_dir.join("CHANGELOG.txt").exists());
    // Not a source at all: exit 2, named, with help.
    fs::create_dir(w.p("empty")).unwrap();
    cmd(&w)
        .args(["repair", "--from", "empty"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("'empty' is not a USB tree, an update pack")
                .and(predicate::str::contains("help:")),
        );
    cmd(&w)
        .args(["repair", "--from", "nope"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("it does not exist"));
    // The stick of the release puts the changelog back.
    cmd(&w).args(["repair", "--from", "s2"]).assert().success();
    assert_intact(&cur_dir, &w.v2);
}

/// The keys of a JSON object, recursively for the first element of arrays.
fn shape(v: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(o) = v.as_object() {
        for (k, x) in o {
            out.push(k.clone());
            let inner = if let Some(a) = x.as_array() {
                a.first().cloned().unwrap_or_default()
            } else {
                x.clone()
            };
            for s in shape(&inner) {
                out.push(format!("{k}.{s}"));
            }
        }
    }
    out.sort();
    out
}

/// The worked examples in formats/ have the shape of the real records and files.
#[test]
fn formats_examples_match_what_offgrid_writes() {
    let plan: offgrid::update::repair::Plan =
        serde_json::from_str(include_str!("../formats/repair-plan.example.json")).unwrap();
    assert_eq!(plan.format, offgrid::update::repair::PLAN_FORMAT);
    assert!(plan
        .objects
        .iter()
        .all(|o| o.object.starts_with(&o.sha256) && !o.targets.is_empty()));
    // state.json after 1.0.0 -> 1.1.0 -> 1.2.0, a rollback and a repair.
    let st: offgrid::update::home::State =
        serde_json::from_str(include_str!("../formats/state.example.json")).unwrap();
    let kept: Vec<String> = st.kept().iter().map(|k| k.release.to_string()).collect();
    assert_eq!(kept, ["1.1.0", "1.2.0"]);
    assert!(st.predecessor(&"1.1.0".parse().unwrap()).is_none());
    assert_eq!(
        st.predecessor(&"1.2.0".parse().unwrap()).unwrap().release,
        "1.1.0".parse().unwrap()
    );
    let w = site(1 << 20);
    installed_and_updated(&w);
    flip4(&w.home().join("current").join(MODEL), 10);
    let (code, real) = verify_json(&w);
    assert_eq!(code, 1);
    let ex = include_str!("../formats/status-verify.example.jsonl");
    let line = ex.lines().find(|l| l.contains("\"verified\"")).unwrap();
    let ex: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(
        shape(&ex["data"]),
        shape(&real),
        "formats/status-verify.example.jsonl"
    );
}

/// Repair killed (SIGKILL) at each of its write steps: the next command recovers to the
/// damaged (old) home when the journal was not yet written, else to the repaired home;
/// never a torn file, never a leftover.
#[test]
fn repair_killed_at_every_step_leaves_the_old_or_the_repaired_home() {
    use std::os::unix::process::ExitStatusExt;
    let w = site(2 << 20);
    installed_and_updated(&w);
    flip4(&w.home().join("current").join(MODEL), 5);
    fs::remove_file(version_dir(&w.home(), "previous").join("README.txt")).unwrap();
    let steps = [
        ("repair-staged", false),
        ("tmp-journal.json", false),
        ("repair-journaled", true),
        ("repair-replaced", true),
        ("repair-synced", true),
        ("repair-recorded", true),
    ];
    for (step, repaired) in steps {
        let home = w.p(&format!("home-{step}"));
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(w.home())
            .arg(&home)
            .status()
            .unwrap();
        assert!(st.success());
        let out = w
            .std_cmd()
            .env("OFFGRID_HOME", &home)
            .env("OFFGRID_FAULT_AT", step)
            .args(["repair", "--from", "s1", "--from", "s2"])
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(9), "{step}: not killed: {out:?}");
        let status = cmd(&w)
            .env("OFFGRID_HOME", &home)
            .args(["status"])
            .assert()
            .success();
        let err = String::from_utf8_lossy(&status.get_output().stderr).into_owned();
        assert_eq!(
            err.contains("recovered from an interrupted repair"),
            repaired,
            "{step}: {err}"
        );
        let cur = version_dir(&home, "current");
        let prev = version_dir(&home, "previous");
        let v = cmd(&w)
            .env("OFFGRID_HOME", &home)
            .args(["status", "--verify", "--json"])
            .output()
            .unwrap();
        if repaired {
            assert!(v.status.success(), "{step}: {v:?}");
            assert_intact(&cur, &w.v2);
            assert_intact(&prev, &w.v1);
            #[cfg(unix)]
            assert_eq!(inode(&cur.join(MODEL)), inode(&prev.join(MODEL)), "{step}");
        } else {
            // Exactly the old damage: the model in both, the README of 1.0.0.
            assert_eq!(v.status.code(), Some(1), "{step}");
            let text = String::from_utf8(v.stdout).unwrap();
            assert!(text.contains("\"damaged\":3"), "{step}: {text}");
            assert!(!prev.join("README.txt").exists(), "{step}");
        }
        assert_eq!(state(&home)["current"]["release"], "1.1.0", "{step}");
        assert!(!home.join("journal.json").exists(), "{step}: journal left");
        let names: Vec<String> = fs::read_dir(home.join("versions"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{step}: {names:?}");
        let tmp: Vec<_> = walkdir::WalkDir::new(&home)
            .into_iter()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".offgrid-tmp") || n.starts_with(".current-"))
            .collect();
        assert!(tmp.is_empty(), "{step}: {tmp:?}");
        // And a repair after the recovery finishes the job either way.
        cmd(&w)
            .env("OFFGRID_HOME", &home)
            .args(["repair", "--from", "s1", "--from", "s2"])
            .assert()
            .success();
        assert_intact(&cur, &w.v2);
        assert_intact(&prev, &w.v1);
    }
}

/// Rollback means one thing: the release before the current one in the history. A
/// second rollback does not go forward; `--to` reaches any kept release; `status` lists
/// what is kept.
#[test]
fn rollback_goes_back_in_history_and_to_picks_a_kept_release() {
    let w = site(64 << 10);
    installed_and_updated(&w);
    pack(&w, "s2", "s3", "1.1.0", "u2.ogpack");
    cmd(&w)
        .args(["apply-update", "u2.ogpack"])
        .assert()
        .success();
    // Install and apply keep two: 1.2.0 and 1.1.0; 1.0.0 is gone.
    cmd(&w)
        .args(["status"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "kept:      1.2.0 (current), 1.1.0 ('offgrid rollback' returns to it)\n",
        ));
    cmd(&w).args(["rollback"]).assert().success().stdout(
        predicate::str::contains("from release 1.2.0 to 1.1.0").and(predicate::str::contains(
            "'offgrid rollback --to 1.2.0' returns to it",
        )),
    );
    cmd(&w).args(["status"]).assert().success().stdout(
        predicate::str::contains(
            "kept:      1.1.0 (current), 1.2.0 ('offgrid rollback --to 1.2.0')\n",
        )
        .and(predicate::str::contains("previous:  none")),
    );
    let st = cmd(&w).args(["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["data"]["kept"][1]["release"], "1.2.0", "{v}");
    assert_eq!(v["data"]["kept"][1]["role"], "kept", "{v}");
    // What was current before 1.1.0 (1.0.0) is not kept: refused, never forward.
    let before = fs::read(w.home().join("state.json")).unwrap();
    cmd(&w).args(["rollback"]).assert().code(1).stderr(
        predicate::str::contains("no previous release to return to")
            .and(predicate::str::contains("before release 1.1.0 is kept"))
            .and(predicate::str::contains(
                "help: also kept: 1.2.0; 'offgrid rollback --to VERSION'",
            )),
    );
    cmd(&w)
        .args(["rollback", "--to", "1.0.0"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("release 1.0.0 is not kept"));
    cmd(&w)
        .args(["rollback", "--to", "1.1.0"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("already the current release"));
    cmd(&w).args(["rollback", "--to", "x.y"]).assert().code(2);
    assert_eq!(fs::read(w.home().join("state.json")).unwrap(), before);
    // --to the newer kept release; then rollback goes back to 1.1.0 again.
    cmd(&w)
        .args(["rollback", "--to", "1.2.0"])
        .assert()
        .success()
        .stdout(predicate::str::contains("from release 1.1.0 to 1.2.0"));
    assert_intact(
        &version_dir(&w.home(), "current"),
        &offgrid::manifest::Manifest::parse(&fs::read(w.p("s3/manifest.toml")).unwrap()).unwrap(),
    );
    assert_eq!(state(&w.home())["previous"]["release"], "1.1.0");
    cmd(&w).args(["rollback"]).assert().success();
    assert_eq!(state(&w.home())["current"]["release"], "1.1.0");
    // An update from the rolled-back release keeps it as previous and drops the rest.
    cmd(&w)
        .args(["rollback", "--to", "1.2.0"])
        .assert()
        .success();
    cmd(&w)
        .args(["status"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "kept:      1.2.0 (current), 1.1.0 ('offgrid rollback' returns to it)\n",
        ));
}

/// `gc --keep N` removes the kept releases beyond N and frees exactly the bytes no kept
/// release links; killed after its switch, the next command finishes the removal.
#[test]
fn gc_frees_exactly_the_unreferenced_bytes() {
    use std::os::unix::process::ExitStatusExt;
    let w = site(1 << 20);
    installed_and_updated(&w);
    pack(&w, "s2", "s3", "1.1.0", "u2.ogpack");
    cmd(&w)
        .args(["apply-update", "u2.ogpack"])
        .assert()
        .success();
    cmd(&w).args(["rollback"]).assert().success();
    // Kept: 1.1.0 (current) and 1.2.0 (after the rollback). Nothing beyond 2.
    cmd(&w).args(["gc"]).assert().success().stdout(
        predicate::str::contains("nothing to remove").and(predicate::str::contains("1.1.0, 1.2.0")),
    );
    let gone = w
        .home()
        .join("versions")
        .join(state(&w.home())["also_kept"][0]["dir"].as_str().unwrap());
    // Bytes only 1.2.0 links (the model and data/same.txt are shared with 1.1.0).
    let want = bytes_linked_only_here(&gone);
    assert!(want > 0 && want < 100_000, "{want}");
    let out = w
        .std_cmd()
        .env("OFFGRID_FAULT_AT", "gc-flipped")
        .args(["gc", "--keep", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
    // The switch happened: 1.2.0 is no longer kept; the next command removes its folder.
    cmd(&w)
        .args(["status"])
        .assert()
        .success()
        .stdout(predicate::str::contains("kept:      1.1.0 (current)\n"));
    assert!(!gone.exists());
    // Again on a fresh home, all the way, with the freed bytes counted.
    let w = site(1 << 20);
    installed_and_updated(&w);
    pack(&w, "s2", "s3", "1.1.0", "u2.ogpack");
    cmd(&w)
        .args(["apply-update", "u2.ogpack"])
        .assert()
        .success();
    cmd(&w).args(["rollback"]).assert().success();
    let gone = w
        .home()
        .join("versions")
        .join(state(&w.home())["also_kept"][0]["dir"].as_str().unwrap());
    let want = bytes_linked_only_here(&gone);
    let out = cmd(&w)
        .args(["gc", "--keep", "1", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["data"]["removed"][0], "1.2.0", "{v}");
    assert_eq!(v["data"]["freed_bytes"], want, "{v}");
    assert!(!gone.exists());
    assert_intact(&version_dir(&w.home(), "current"), &w.v2);
    cmd(&w)
        .args(["gc", "--keep", "0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--keep must be at least 1"));
}

/// `apply-update --keep 3` keeps three releases; each rollback goes one step further
/// back in the history; `gc --keep 1` then leaves only the current one.
#[test]
fn apply_keep_three_and_rollback_walks_back_the_history() {
    let w = site(64 << 10);
    installed_and_updated(&w);
    pack(&w, "s2", "s3", "1.1.0", "u2.ogpack");
    cmd(&w)
        .args(["apply-update", "u2.ogpack", "--keep", "3"])
        .assert()
        .success();
    cmd(&w).args(["status"]).assert().success().stdout(predicate::str::contains(
        "kept:      1.2.0 (current), 1.1.0 ('offgrid rollback' returns to it), 1.0.0 ('offgrid rollback --to 1.0.0')\n",
    ));
    cmd(&w)
        .args(["rollback"])
        .assert()
        .success()
        .stdout(predicate::str::contains("from release 1.2.0 to 1.1.0"));
    cmd(&w)
        .args(["rollback"])
        .assert()
        .success()
        .stdout(predicate::str::contains("from release 1.1.0 to 1.0.0"));
    assert_intact(&version_dir(&w.home(), "current"), &w.v1);
    cmd(&w).args(["rollback"]).assert().code(1).stderr(
        predicate::str::contains("no previous release")
            .and(predicate::str::contains("also kept: 1.2.0, 1.1.0")),
    );
    let out = cmd(&w)
        .args(["gc", "--keep", "1", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["data"]["removed"],
        serde_json::json!(["1.2.0", "1.1.0"]),
        "{v}"
    );
    assert_eq!(fs::read_dir(w.home().join("versions")).unwrap().count(), 1);
    assert_intact(&version_dir(&w.home(), "current"), &w.v1);
}
