//! Crash safety, proven on the real binary: `OFFGRID_FAULT_AT=STEP` makes offgrid
//! SIGKILL itself at each named step of install, apply-update and rollback in turn; the
//! next command (`offgrid status`) recovers, and the install must then be exactly the
//! old version or exactly the new one, byte for byte, with a binary that runs. Also: a
//! disk filling up part way (a size-limited tmpfs), two applies at once (the lock),
//! rollback after an update, and apply after a recovery.

use crate::util;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use predicates::prelude::*;
use util::*;

/// The steps an apply passes, in order; the switch happens between `renamed` and
/// `flipped`.
const STEPS: &[(&str, bool)] = &[
    ("journal-written", false),
    ("payload-written", false),
    ("staged", false),
    ("renamed", false),
    ("flipped", true),
    ("linked", true),
    ("cleaned", true),
];

fn install_into(w: &World, home: &Path) {
    w.cmd()
        .env("OFFGRID_HOME", home)
        .args(["install", "--from", "v1", "--pubkey"])
        .arg(&w.pubkey)
        .assert()
        .success();
}

fn killed(out: &std::process::Output) -> bool {
    out.status.signal() == Some(9)
}

/// Nothing but the kept versions is left: no journal, no staging folder.
fn assert_tidy(home: &Path) {
    assert!(!home.join("journal.json").exists(), "journal left behind");
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(home.join("state.json")).unwrap()).unwrap();
    let mut keep = vec![state["current"]["dir"].as_str().unwrap().to_owned()];
    if let Some(p) = state["previous"]["dir"].as_str() {
        keep.push(p.to_owned());
    }
    for e in fs::read_dir(home.join("versions")).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(keep.contains(&n), "leftover folder versions/{n}");
    }
}

#[test]
fn apply_killed_at_every_step_recovers_to_old_or_new() {
    let w = world(2 << 20);
    make_pack(&w, "u.ogpack", &[]);
    for (step, switched) in STEPS {
        let home = w.p(&format!("home-{step}"));
        install_into(&w, &home);
        let out = w
            .std_cmd()
            .env("OFFGRID_HOME", &home)
            .env("OFFGRID_FAULT_AT", step)
            .args(["apply-update", "u.ogpack"])
            .output()
            .unwrap();
        assert!(killed(&out), "{step}: not killed: {out:?}");
        // The next command recovers.
        w.cmd()
            .env("OFFGRID_HOME", &home)
            .args(["status"])
            .assert()
            .success()
            .stderr(predicate::str::contains(
                "recovered from an interrupted apply",
            ))
            .stdout(predicate::str::contains(if *switched {
                "completed"
            } else {
                "rolled-back"
            }));
        let (now, old) = if *switched {
            (&w.v2, "1.0.0")
        } else {
            (&w.v1, "none")
        };
        assert_installed(&home, now);
        assert_tidy(&home);
        let st: serde_json::Value = serde_json::from_slice(
            &w.cmd()
                .env("OFFGRID_HOME", &home)
                .args(["status", "--json"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        assert_eq!(st["data"]["release"], now.release.to_string(), "{step}");
        assert_eq!(
            st["data"]["previous"].as_str().unwrap_or("none"),
            old,
            "{step}"
        );
        assert_eq!(
            st["data"]["recoveries"].as_array().unwrap().len(),
            1,
            "{step}"
        );
        // A second status has nothing to recover.
        w.cmd()
            .env("OFFGRID_HOME", &home)
            .args(["status"])
            .assert()
            .success()
            .stderr(predicate::str::contains("recovered").not());
        if *switched {
            // Complete: the pack is now a replay.
            w.cmd()
                .env("OFFGRID_HOME", &home)
                .args(["apply-update", "u.ogpack"])
                .assert()
                .code(1);
            w.cmd()
                .env("OFFGRID_HOME", &home)
                .args(["rollback"])
                .assert()
                .success();
            assert_installed(&home, &w.v1);
        } else {
            // Undone: applying after the recovery works.
            w.cmd()
                .env("OFFGRID_HOME", &home)
                .args(["apply-update", "u.ogpack"])
                .assert()
                .success();
            assert_installed(&home, &w.v2);
            assert_tidy(&home);
        }
        fs::remove_dir_all(&home).unwrap();
    }
}

#[test]
fn any_command_recovers_not_only_status() {
    let w = world(1 << 20);
    make_pack(&w, "u.ogpack", &[]);
    // Killed after staging: the next apply-update recovers first, then applies.
    let home = w.home();
    install_into(&w, &home);
    let out = w
        .std_cmd()
        .env("OFFGRID_FAULT_AT", "staged")
        .args(["apply-update", "u.ogpack"])
        .output()
        .unwrap();
    assert!(killed(&out));
    w.cmd()
        .args(["apply-update", "u.ogpack"])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "recovered from an interrupted apply",
        ));
    assert_installed(&home, &w.v2);
    assert_tidy(&home);
    // Killed after the switch: rollback recovers (completes), then rolls back.
    let out = w
        .std_cmd()
        .env("OFFGRID_FAULT_AT", "flipped")
        .args(["rollback"])
        .output()
        .unwrap();
    assert!(killed(&out));
    // The rollback's switch happened; only the link was stale. status repairs it.
    w.cmd()
        .args(["status"])
        .assert()
        .success()
        .stdout(predicate::str::contains("release:   1.0.0"));
    assert_installed(&home, &w.v1);
}

#[test]
fn first_install_killed_at_every_step() {
    let w = world(1 << 20);
    for (step, switched) in STEPS {
        let home = w.p(&format!("home-{step}"));
        let out = w
            .std_cmd()
            .env("OFFGRID_HOME", &home)
            .env("OFFGRID_FAULT_AT", step)
            .args(["install", "--from", "v1", "--pubkey"])
            .arg(&w.pubkey)
            .output()
            .unwrap();
        assert!(killed(&out), "{step}: {out:?}");
        if *switched {
            w.cmd()
                .env("OFFGRID_HOME", &home)
                .args(["status"])
                .assert()
                .success();
            assert_installed(&home, &w.v1);
            assert_tidy(&home);
        } else {
            w.cmd()
                .env("OFFGRID_HOME", &home)
                .args(["status"])
                .assert()
                .code(1)
                .stderr(predicate::str::contains("nothing is installed"));
            let left: Vec<_> = fs::read_dir(home.join("versions"))
                .map(|rd| rd.map(|e| e.unwrap().file_name()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "{step}: {left:?}");
            assert!(!home.join("journal.json").exists());
            // And installing again works.
            install_into(&w, &home);
            assert_installed(&home, &w.v1);
        }
    }
}

/// Unmounts on drop.
struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Mounts a size-limited file system at `at`: tmpfs, else a loop-mounted ext4 image.
fn small_fs(at: &Path, mib: u64) -> Option<Mount> {
    fs::create_dir_all(at).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
        .arg(at)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(Mount(at.to_path_buf()));
    }
    let img = at.with_extension("img");
    let made = Command::new("truncate")
        .args(["-s", &format!("{mib}M")])
        .arg(&img)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("mkfs.ext4")
            .arg("-q")
            .arg(&img)
            .status()
            .is_ok_and(|s| s.success())
        && Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
    made.then(|| Mount(at.to_path_buf()))
}

/// A disk that fills up part way through an apply: the apply fails with the file
/// system's own "No space left on device" (exit 2) after it has started writing the
/// new version, and afterwards nothing visible changed (still exactly 1.0.0) and
/// nothing is left behind. Needs to mount a small file system (root, as in CI); where
/// that is impossible the test fails saying so rather than passing untested.
#[test]
fn disk_full_part_way_changes_nothing() {
    let w = world(3 << 20);
    make_pack(&w, "u.ogpack", &["--no-delta"]);
    let v1_bytes: u64 = w.v1.total_size();
    let v2_new: u64 =
        w.v2.files
            .iter()
            .filter(|f| !w.v1.files.iter().any(|o| o.sha256 == f.sha256))
            .map(|f| f.size)
            .sum();
    // Room for both releases, so the apply's up-front space check passes; the disk is
    // filled behind its back once that check is done (below).
    let mib = (v1_bytes + v2_new) / (1 << 20) + 8;
    assert!(v2_new > 1 << 20, "the new release writes more than 1 MiB");
    let at = w.p("small");
    let _m = small_fs(&at, mib).unwrap_or_else(|| {
        panic!("cannot mount a {mib} MiB file system at '{}': this test needs root (mount -t tmpfs); CI runs as root", at.display())
    });
    let home = at.join("home");
    install_into(&w, &home);
    // The apply checks free space before it writes (and would refuse up front), so the
    // disk fills *after* that check: the apply stops itself once its journal is written
    // (`journal-written:stop`), another writer takes all but 64 KiB, and it goes on.
    let child = w
        .std_cmd()
        .env("OFFGRID_HOME", &home)
        .env("OFFGRID_FAULT_AT", "journal-written:stop")
        .args(["apply-update", "u.ogpack"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let child = crate::util::wait_stopped(child, "journal-written");
    fill_all_but(&at.join("filler"), 64 << 10);
    let free_before = free_bytes(&at);
    let cont = Command::new("kill")
        .args(["-CONT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(cont.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    // Part way: the disk filled while a file the new version adds or changes was being
    // written (the error names it; a file 1.0.0 already holds is linked, never written),
    // not at a check before any write; and the apply cleaned up after itself (the next
    // command has nothing to recover).
    let written: Vec<&str> =
        w.v2.files
            .iter()
            .filter(|f| !w.v1.files.iter().any(|o| o.sha256 == f.sha256))
            .map(|f| f.path.as_str())
            .collect();
    let named: Vec<&&str> = written
        .iter()
        .filter(|p| err.contains(&format!("cannot write '{p}': No space left on device")))
        .collect();
    assert_eq!(
        named.len(),
        1,
        "one new file of 1.1.0 {written:?} named: {err}"
    );
    // Every byte the apply wrote after the disk filled was given back: what it had
    // filled (all but 64 KiB) is free again, give or take a few pages of state.json.
    assert!(
        free_bytes(&at) + (16 << 10) >= free_before,
        "the failed apply left bytes behind: {} free before it went on, {} after",
        free_before,
        free_bytes(&at)
    );
    // Nothing visible changed, and nothing is left behind.
    w.cmd()
        .env("OFFGRID_HOME", &home)
        .args(["status"])
        .assert()
        .success()
        .stdout(predicate::str::contains("release:   1.0.0"))
        .stderr(predicate::str::contains("recovered").not());
    assert_installed(&home, &w.v1);
    assert_tidy(&home);
    let tmp: Vec<_> = fs::read_dir(&home)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".offgrid-tmp-") || n.starts_with(".staging"))
        .collect();
    assert!(tmp.is_empty(), "{tmp:?}");
}

#[test]
fn two_applies_at_once_the_second_is_refused() {
    let w = world(1 << 20);
    make_pack(&w, "u.ogpack", &[]);
    install_into(&w, &w.home());
    let mut first = w
        .std_cmd()
        .env("OFFGRID_FAULT_AT", "staged:pause")
        .args(["apply-update", "u.ogpack"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first apply is mid-flight (its journal is written).
    let t = Instant::now();
    while !w.home().join("journal.json").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "first apply never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    w.cmd()
        .args(["apply-update", "u.ogpack"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "another offgrid operation holds the lock",
        ));
    w.cmd()
        .args(["rollback"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("holds the lock"));
    // status does not "recover" an operation that is still running.
    w.cmd().args(["status"]).assert().success().stdout(
        predicate::str::contains("busy:").and(predicate::str::contains("release:   1.0.0")),
    );
    assert!(w.home().join("journal.json").exists());
    // Power cut for the first one: the lock dies with it and recovery undoes it.
    first.kill().unwrap();
    first.wait().unwrap();
    w.cmd()
        .args(["status"])
        .assert()
        .success()
        .stdout(predicate::str::contains("rolled-back"));
    assert_installed(&w.home(), &w.v1);
    w.cmd()
        .args(["apply-update", "u.ogpack"])
        .assert()
        .success();
    assert_installed(&w.home(), &w.v2);
}

/// Writes `path` until the file system holding it has about `leave` bytes free.
/// Bytes available on the file system holding `dir` (`df`).
fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse::<u64>().ok())
        .unwrap()
}

fn fill_all_but(path: &Path, leave: u64) {
    use std::io::Write;
    let mut f = fs::File::create(path).unwrap();
    let block = vec![0x5au8; 64 << 10];
    let mut left = free_bytes(path.parent().unwrap()).saturating_sub(leave);
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        if f.write_all(&block[..n]).is_err() {
            break;
        }
        left -= n as u64;
    }
    let _ = f.sync_all();
}
