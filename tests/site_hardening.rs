//! Site-side hardening (issue 8), as named vectors on the real binary: each case states
//! its input, the exit code and the message expected.
//!
//! - rollback onto a damaged release is refused (exit 1), naming the file, and nothing
//!   is switched — also through the verification cache and through a hard link;
//! - temporaries a SIGKILL leaves during an atomic write are cleared by the next command;
//! - `status` while another command holds the home's lock says busy and who (not
//!   "nothing is installed");
//! - two `pack-usb` into one folder: the second is refused at once, naming the first; a
//!   killed holder does not wedge the folder;
//! - `install --from` / `verify` / `apply-update` of a missing path, a file, a folder
//!   or a FIFO agree: exit 2, the path named, a `help:` line, no hang.

use crate::util;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use predicates::prelude::*;
use util::*;

/// Every command here gets a deadline: a FIFO or a lock must never hang a test.
const DEADLINE: Duration = Duration::from_secs(60);

/// A world whose commands use a private verification cache.
fn cmd(w: &World) -> assert_cmd::Command {
    let mut c = w.cmd();
    c.env("OFFGRID_CACHE_DIR", w.p("cache"))
        .env("NO_COLOR", "1")
        .timeout(DEADLINE);
    c
}

fn std_cmd(w: &World) -> Command {
    let mut c = w.std_cmd();
    c.env("OFFGRID_CACHE_DIR", w.p("cache"))
        .env("NO_COLOR", "1");
    c
}

fn state(home: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(home.join("state.json")).unwrap()).unwrap()
}

/// The folder of the previous version, from state.json.
fn previous_dir(home: &Path) -> PathBuf {
    let s = state(home);
    home.join("versions")
        .join(s["previous"]["dir"].as_str().expect("a previous version"))
}

/// Installs 1.0.0, then applies the 1.0.0 -> 1.1.0 pack: current 1.1.0, previous 1.0.0.
fn installed_and_updated(w: &World) {
    make_pack(w, "u.ogpack", &[]);
    cmd(w)
        .args(["install", "--from", "v1", "--pubkey"])
        .arg(&w.pubkey)
        .assert()
        .success();
    cmd(w).args(["apply-update", "u.ogpack"]).assert().success();
}

fn rollback_json(w: &World, extra: &[&str]) -> serde_json::Value {
    let out = cmd(w)
        .args(["rollback", "--json"])
        .args(extra)
        .assert()
        .success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("\"rolled-back\""))
        .unwrap();
    serde_json::from_str::<serde_json::Value>(line).unwrap()["data"].clone()
}

/// Vector: previous release's model has one changed byte (size unchanged).
/// Expect: exit 1, "rollback refused", the file named, help pointing at a reinstall;
/// state.json unchanged and 1.1.0 still installed byte for byte.
#[test]
fn rollback_onto_a_changed_model_byte_is_refused() {
    let w = world(2 << 20);
    installed_and_updated(&w);
    let home = w.home();
    let before = fs::read(home.join("state.json")).unwrap();
    flip_byte(&previous_dir(&home).join("models/tiny.gguf"), 1_000_001);
    cmd(&w)
        .args(["rollback"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("rollback refused: release 1.0.0")
                .and(predicate::str::contains("'models/tiny.gguf' bytes"))
                .and(predicate::str::contains(
                    "help: release 1.1.0 stays in use; to get release 1.0.0 back, repair it from a verified stick or update pack holding it: offgrid repair --from USBROOT",
                )),
        );
    assert_eq!(fs::read(home.join("state.json")).unwrap(), before);
    assert_installed(&home, &w.v2);
}

/// Vector: a clean round trip fills the verification cache; then the previous model is
/// changed. Expect: the cached check is not trusted for the changed file (exit 1).
#[test]
fn the_verification_cache_never_vouches_for_a_changed_file() {
    let w = world(2 << 20);
    installed_and_updated(&w);
    let home = w.home();
    // 1.1.0 -> 1.0.0 -> (--to) 1.1.0 -> 1.0.0: the third rollback finds the 1.0.0 model
    // cached.
    let first = rollback_json(&w, &[]);
    assert_eq!(first["to"], "1.0.0");
    assert_eq!(first["cached"], 0, "{first}");
    assert_eq!(rollback_json(&w, &["--to", "1.1.0"])["to"], "1.1.0");
    let third = rollback_json(&w, &[]);
    assert_eq!(third["to"], "1.0.0");
    assert!(third["cached"].as_u64().unwrap() >= 1, "{third}");
    assert_eq!(rollback_json(&w, &["--to", "1.1.0"])["to"], "1.1.0");
    assert_installed(&home, &w.v2);
    // Same size, same mtime set back: the ctime still changes, so the entry is stale.
    let model = previous_dir(&home).join("models/tiny.gguf");
    let mtime = fs::metadata(&model).unwrap().modified().unwrap();
    flip_byte(&model, 7);
    fs::File::options()
        .write(true)
        .open(&model)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    cmd(&w).args(["rollback"]).assert().code(1).stderr(
        predicate::str::contains("'models/tiny.gguf' bytes 0..").and(predicate::str::contains(
            "do not match the signed chunk hashes",
        )),
    );
    assert_eq!(state(&home)["current"]["release"], "1.1.0");
}

/// Vector: an unchanged file kept by both versions (hard-linked by apply) is truncated
/// through the current version's path; a removed file and a changed manifest.
/// Expect: each refuses the rollback naming what the previous version's own folder
/// shows (exit 1), and nothing is switched.
#[test]
fn rollback_checks_the_target_versions_own_files() {
    let w = world(1 << 20);
    installed_and_updated(&w);
    let home = w.home();
    let prev = previous_dir(&home);
    let cur = current_dir(&home);
    let same = "data/same.txt";
    {
        use std::os::unix::fs::MetadataExt;
        let (a, b) = (
            fs::metadata(prev.join(same)).unwrap(),
            fs::metadata(cur.join(same)).unwrap(),
        );
        assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()), "apply hard-links");
    }
    fs::OpenOptions::new()
        .write(true)
        .open(cur.join(same))
        .unwrap()
        .set_len(10)
        .unwrap();
    cmd(&w)
        .args(["rollback"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "'data/same.txt' is 10 bytes, the signed manifest says 2400",
        ));
    fs::remove_file(prev.join("data/old.txt")).unwrap();
    cmd(&w).args(["rollback"]).assert().code(1).stderr(
        predicate::str::contains("2 file(s) do not match")
            .and(predicate::str::contains("'data/old.txt' is missing")),
    );
    let mp = prev.join("manifest.toml");
    let text = fs::read_to_string(&mp)
        .unwrap()
        .replace("2026-11-01T10:00:00Z", "2026-11-01T10:00:01Z");
    fs::write(&mp, text).unwrap();
    cmd(&w)
        .args(["rollback"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "'manifest.toml' or its signatures:",
        ));
    assert_eq!(state(&home)["current"]["release"], "1.1.0");
    assert_eq!(
        fs::read_link(home.join("current")).unwrap(),
        Path::new("versions").join(state(&home)["current"]["dir"].as_str().unwrap())
    );
}

fn leftovers(home: &Path) -> Vec<String> {
    fs::read_dir(home)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".offgrid-tmp-") || n.starts_with(".current-"))
        .collect()
}

fn killed(out: &std::process::Output) -> bool {
    out.status.signal() == Some(9)
}

/// Vectors: SIGKILL with `journal.json`'s temporary written (apply-update), then with
/// `state.json`'s (rollback); plus a stale `.current-PID` link and files that are not
/// offgrid's. Expect: the next `status` exits 0, the release is unchanged, offgrid's
/// temporaries are gone and nothing else was touched.
#[test]
fn killed_atomic_write_leftovers_are_cleared_by_the_next_command() {
    let w = world(1 << 20);
    make_pack(&w, "u.ogpack", &[]);
    let home = w.home();
    cmd(&w)
        .args(["install", "--from", "v1", "--pubkey"])
        .arg(&w.pubkey)
        .assert()
        .success();
    let out = std_cmd(&w)
        .env("OFFGRID_FAULT_AT", "tmp-journal.json")
        .args(["apply-update", "u.ogpack"])
        .output()
        .unwrap();
    assert!(killed(&out), "{out:?}");
    assert_eq!(leftovers(&home).len(), 1, "{:?}", leftovers(&home));
    // Someone else's files in the home stay, even when their names look close.
    fs::write(home.join("notes.txt"), b"mine").unwrap();
    fs::write(home.join(".offgrid-tmpnot-ours"), b"mine").unwrap();
    fs::create_dir(home.join(".offgrid-tmp-a-folder")).unwrap();
    std::os::unix::fs::symlink("versions", home.join(".current-4242")).unwrap();
    cmd(&w)
        .args(["status"])
        .assert()
        .success()
        .stdout(predicate::str::contains("release:   1.0.0"));
    assert!(
        leftovers(&home) == [".offgrid-tmp-a-folder"],
        "{:?}",
        leftovers(&home)
    );
    assert!(home.join("notes.txt").exists() && home.join(".offgrid-tmpnot-ours").exists());
    assert_installed(&home, &w.v1);

    cmd(&w)
        .args(["apply-update", "u.ogpack"])
        .assert()
        .success();
    let out = std_cmd(&w)
        .env("OFFGRID_FAULT_AT", "tmp-state.json")
        .args(["rollback"])
        .output()
        .unwrap();
    assert!(killed(&out), "{out:?}");
    assert_eq!(leftovers(&home).len(), 2, "{:?}", leftovers(&home));
    cmd(&w)
        .args(["status"])
        .assert()
        .success()
        .stdout(predicate::str::contains("release:   1.1.0"));
    assert!(
        leftovers(&home) == [".offgrid-tmp-a-folder"],
        "{:?}",
        leftovers(&home)
    );
    assert_installed(&home, &w.v2);
}

/// Kills the child when dropped (a failing assertion must not leave it sleeping).
struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The lock file names its holder.
fn holder_recorded(lock: &Path, command: &str) -> bool {
    fs::read_to_string(lock).is_ok_and(|t| t.contains(&format!("\"command\":\"{command}\"")))
}

/// Vector: `status` while a first `install` is paused with the lock held (nothing
/// installed yet). Expect: exit 1, "is busy: 'offgrid install' (pid N", not "nothing is
/// installed". Then `status` while an `apply-update` holds it: exit 0, the installed
/// release, and "busy:" naming 'offgrid apply-update' and its pid.
#[test]
fn status_while_busy_names_the_holder() {
    let w = world(1 << 20);
    make_pack(&w, "u.ogpack", &[]);
    let home = w.home();
    let first = Running(
        std_cmd(&w)
            .env("OFFGRID_FAULT_AT", "journal-written:pause")
            .args(["install", "--from", "v1", "--pubkey"])
            .arg(&w.pubkey)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the install's journal", || {
        home.join("journal.json").exists()
    });
    assert!(holder_recorded(&home.join(".lock"), "install"));
    let pid = first.0.id();
    cmd(&w).args(["status"]).assert().code(1).stderr(
        predicate::str::contains(format!(
            "site home '{}' is busy: 'offgrid install' (pid {pid}, since",
            home.display()
        ))
        .and(predicate::str::contains("nothing is installed yet"))
        .and(predicate::str::contains("help: wait for it to finish"))
        .and(predicate::str::contains("nothing is installed in").not()),
    );
    drop(first);
    // The killed install is recovered (undone) by the next command.
    cmd(&w)
        .args(["status"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("nothing is installed in"));

    cmd(&w)
        .args(["install", "--from", "v1", "--pubkey"])
        .arg(&w.pubkey)
        .assert()
        .success();
    let apply = Running(
        std_cmd(&w)
            .env("OFFGRID_FAULT_AT", "staged:pause")
            .args(["apply-update", "u.ogpack"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the apply's journal", || home.join("journal.json").exists());
    let pid = apply.0.id();
    cmd(&w).args(["status"]).assert().success().stdout(
        predicate::str::contains("release:   1.0.0").and(predicate::str::contains(format!(
            "busy:      'offgrid apply-update' (pid {pid}, since"
        ))),
    );
    let out = cmd(&w).args(["status", "--json"]).assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(v["data"]["busy"], true);
    assert_eq!(v["data"]["busy_by"]["command"], "apply-update");
    assert_eq!(v["data"]["busy_by"]["pid"], pid);
    cmd(&w)
        .args(["rollback"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "another offgrid operation holds the lock on '{}': 'offgrid apply-update' (pid {pid}",
            home.display()
        )));
}

/// `offgrid pack-usb ARGS` in the workspace, as a child process.
fn pack_child(ws: &util::Ws, dest: &str, fault: Option<&str>) -> Command {
    let mut c = Command::new(offgrid_bin());
    c.current_dir(ws.dir.path())
        .env_remove("OFFGRID_PASSWORD")
        .env_remove("OFFGRID_FAULT_AT")
        .env("OFFGRID_HQ", ws.dir.path().join("hq-history"))
        .env("NO_COLOR", "1")
        .args([
            "pack-usb",
            dest,
            "--release",
            "1.0",
            "--bundle-id",
            "org.example.clinic",
            "--model",
            "in/tiny.gguf",
            "--sign-with",
            "hq.key",
        ]);
    if let Some(f) = fault {
        c.env("OFFGRID_FAULT_AT", f);
    }
    c
}

/// Vector: a second `pack-usb` into the folder a first one is writing (paused with
/// everything staged). Expect: exit 1 at once, "is being written by 'offgrid pack-usb'
/// (pid N", the first's staging untouched. The first is then killed: its lock dies with
/// it, and a new pack-usb into the same folder succeeds, leaves no lock file, verifies.
#[test]
fn two_pack_usb_into_one_folder_the_second_is_refused() {
    let ws = util::Ws::new();
    ws.model("in/tiny.gguf", 256, 1);
    let dest = ws.path("stick");
    let mut first = Running(
        pack_child(&ws, "stick", Some("pack-staged:pause"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let lock = dest.join(".offgrid-lock");
    wait_for("the first pack to stage", || {
        assert!(
            first.0.try_wait().unwrap().is_none(),
            "the first pack exited"
        );
        dest.join(".offgrid-staging").is_dir() && holder_recorded(&lock, "pack-usb")
    });
    let pid = first.0.id();
    let t = Instant::now();
    let out = pack_child(&ws, "stick", None).output().unwrap();
    assert!(t.elapsed() < Duration::from_secs(30), "not refused at once");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "destination '{}' is being written by 'offgrid pack-usb' (pid {pid}",
            Path::new("stick").display()
        )) && err.contains("help: wait for it to finish"),
        "{err}"
    );
    assert!(
        dest.join(".offgrid-staging").is_dir(),
        "the first's staging was touched"
    );
    drop(first);
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
        "--force",
    ])
    .success();
    assert!(!lock.exists(), "lock file left in the finished tree");
    assert!(!dest.join(".offgrid-staging").exists());
    ws.offgrid(&["verify", "stick", "--pubkey", "hq.pub"])
        .success();
}

fn mkfifo(p: &Path) {
    let st = Command::new("mkfifo").arg(p).status().unwrap();
    assert!(st.success());
}

/// Vectors: `install --from` X where X is missing, a regular file, a FIFO; `verify` of
/// the same X; `apply-update` of a missing pack, a folder and a FIFO.
/// Expect: exit 2 each, the path named, a help line, nothing created, no hang.
#[test]
fn install_verify_and_apply_agree_on_paths_that_are_not_trees_or_packs() {
    let w = world(1 << 20);
    let home = w.home();
    fs::write(w.p("a-file"), b"not a tree").unwrap();
    mkfifo(&w.p("a-fifo"));
    for (x, what) in [
        ("missing", "it does not exist"),
        ("a-file", "it is a regular file"),
        ("a-fifo", "it is a FIFO (named pipe)"),
    ] {
        cmd(&w)
            .args(["install", "--from", x, "--pubkey"])
            .arg(&w.pubkey)
            .assert()
            .code(2)
            .stderr(
                predicate::str::contains(format!("'{x}' is not a USB tree folder: {what}")).and(
                    predicate::str::contains("help: pass the folder of the USB tree"),
                ),
            );
        assert!(!home.exists(), "{x}: install created the home");
        cmd(&w)
            .args(["verify", x, "--pubkey"])
            .arg(&w.pubkey)
            .assert()
            .code(2)
            .stderr(
                predicate::str::contains(format!("'{x}'")).and(predicate::str::contains("help:")),
            );
    }
    cmd(&w)
        .args(["install", "--from", "v1", "--pubkey"])
        .arg(&w.pubkey)
        .assert()
        .success();
    for (x, what) in [
        ("missing.ogpack", "it does not exist"),
        ("v2", "it is a folder"),
        ("a-fifo", "it is a FIFO (named pipe)"),
    ] {
        cmd(&w).args(["apply-update", x]).assert().code(2).stderr(
            predicate::str::contains(format!("'{x}' is not an offgrid update pack ({what})"))
                .and(predicate::str::contains("help:")),
        );
    }
    assert_installed(&home, &w.v1);
}
