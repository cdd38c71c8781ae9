//! Several bundles in one site home (issue 10, SPEC.md §7.5): a stick of a second bundle
//! goes to `HOME/bundles/ID/`, sharing the root's store, lock and bin folder. The user
//! journey on the real binary, with two bundles signed by different keys that carry one
//! identical file: one inode in the store, both verify, status lists both, update packs
//! route by bundle, gc keeps every object any bundle's kept release names (and frees
//! exactly the first bundle's old objects), rollback needs `--bundle`, one repair from
//! the second bundle's stick heals the shared object for both, and a pack of a bundle
//! the home does not hold is refused with the home unchanged.

use crate::update_util;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::store::{cmd, ino, objects};
use offgrid::manifest::{FileKind, Manifest};
use update_util::*;

const B: &str = "org.example.school";
const SHARED: &str = "data/same.txt";
const LESSONS: &str = "school/lessons.txt";

/// The store object of manifest entry `path` of `m`.
fn object(home: &Path, m: &Manifest, path: &str) -> PathBuf {
    let f = m.file(path).unwrap();
    let name = format!("{}.{:o}", f.sha256, f.mode.unwrap_or(0o644));
    home.join("objects").join(&f.sha256[..2]).join(name)
}

/// `(inode, size)` of every regular file under `dir`.
fn inodes(dir: &Path) -> BTreeMap<u64, u64> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let m = e.metadata().unwrap();
            (m.ino(), m.len())
        })
        .collect()
}

/// The folder a home's `state.json` names for `key` (`current`, `previous`).
fn version_dir(home: &Path, key: &str) -> PathBuf {
    let s: serde_json::Value =
        serde_json::from_slice(&fs::read(home.join("state.json")).unwrap()).unwrap();
    home.join("versions").join(
        s[key]["dir"]
            .as_str()
            .unwrap_or_else(|| panic!("{key}: {s}")),
    )
}

/// The `data` of every JSON Lines record of type `ty`.
fn records(stdout: &[u8], ty: &str) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == ty)
        .map(|v| v["data"].clone())
        .collect()
}

/// Every state.json and object of the home (path and bytes), for "nothing changed".
fn snapshot_home(home: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = walkdir::WalkDir::new(home)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .filter(|e| e.file_name() != ".lock")
        .map(|e| (e.path().to_path_buf(), fs::read(e.path()).unwrap()))
        .collect();
    v.sort();
    v
}

#[test]
fn two_bundles_share_one_home_and_its_store() {
    let w = world(200_000);
    let home = w.home();
    let (bkey, bpub) = keypair(w.dir.path(), "school");
    let exe = fs::read(w.p("v1").join(format!("bin/{}/offgrid", host()))).unwrap();
    let bin_path: &'static str = Box::leak(format!("bin/{}/offgrid", host()).into_boxed_str());
    let b1 = make_tree_of(
        B,
        &w.p("b1"),
        "3.0.0",
        "2026-11-05T10:00:00Z",
        &[
            // The very bytes bundle A carries (same path and mode: one object).
            f(
                SHARED,
                b"this file never changes\n".repeat(100),
                FileKind::Data,
            ),
            f(LESSONS, noise(30_000, 21), FileKind::Doc),
            f("models/lessons.gguf", noise(20_000, 22), FileKind::Model),
            f(bin_path, exe, FileKind::Binary),
        ],
        &[&bkey],
    );
    let a = w.v1.bundle_id.clone();

    // Install A, then B into the same home: B needs its own keys the first time.
    cmd(&w)
        .args(["install", "--from", "v1", "--pubkey"])
        .arg(&w.pubkey)
        .assert()
        .success();
    let out = cmd(&w).args(["install", "--from", "b1"]).output().unwrap();
    assert!(!out.status.success(), "{out:?}");
    let sub = home.join("bundles").join(B);
    assert!(!sub.join("state.json").exists());
    let out = cmd(&w)
        .args(["install", "--from", "b1", "--pubkey"])
        .arg(&bpub)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("command 'offgrid' not put on the PATH: the 'offgrid' command stays the one of the first bundle"),
        "{err}"
    );
    // The offgrid shim still runs the first bundle's offgrid.
    let shim = fs::read_to_string(w.p("bin/offgrid")).unwrap();
    assert!(
        shim.contains(&format!("{}/current/", home.display())),
        "{shim}"
    );
    assert!(!shim.contains("bundles"), "{shim}");
    let s: serde_json::Value =
        serde_json::from_slice(&fs::read(sub.join("state.json")).unwrap()).unwrap();
    assert_eq!(s["bundle_id"], B);
    assert!(!sub.join("objects").exists(), "one store, the root's");

    // The shared file is one inode: A's release, B's release and the store object.
    let obj = object(&home, &b1, SHARED);
    let a_cur = home.join("current");
    let b_cur = sub.join("current");
    assert_eq!(ino(&a_cur.join(SHARED)), ino(&obj));
    assert_eq!(ino(&b_cur.join(SHARED)), ino(&obj));
    assert_eq!(fs::metadata(&obj).unwrap().nlink(), 3);
    // ... and so is the offgrid executable both carry.
    let exe_obj = object(&home, &b1, bin_path);
    assert_eq!(ino(&a_cur.join(bin_path)), ino(&b_cur.join(bin_path)));
    assert_eq!(ino(&exe_obj), ino(&b_cur.join(bin_path)));

    // Status lists both bundles, root first; --verify covers both.
    let out = cmd(&w).args(["status", "--json"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let st = records(&out.stdout, "status");
    let ids: Vec<_> = st.iter().map(|r| r["bundle_id"].clone()).collect();
    assert_eq!(ids, [a.as_str(), B]);
    assert_eq!(st[1]["release"], "3.0.0");
    let out = cmd(&w)
        .args(["status", "--verify", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(records(&out.stdout, "verified").len(), 2);
    let out = cmd(&w).args(["status", "--bundle", B]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("bundle:    {B}")), "{text}");
    assert!(!text.contains(&format!("bundle:    {a}")), "{text}");

    // `models` lists the models of every bundle's current release.
    let out = cmd(&w).args(["models", "--json"]).output().unwrap();
    let models: Vec<String> = records(&out.stdout, "model")
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        models
            .iter()
            .any(|p| p.ends_with("models/tiny.gguf") && !p.contains("bundles")),
        "{models:?}"
    );
    assert!(
        models
            .iter()
            .any(|p| p.ends_with("models/lessons.gguf") && p.contains(&format!("bundles/{B}/"))),
        "{models:?}"
    );

    // An update pack of A goes to the root; B is untouched.
    make_pack(&w, "u2.ogpack", &[]);
    let b_state = fs::read(sub.join("state.json")).unwrap();
    cmd(&w)
        .args(["apply-update", "u2.ogpack"])
        .assert()
        .success();
    assert_eq!(fs::read(sub.join("state.json")).unwrap(), b_state);
    assert_installed(&home, &w.v2);

    // A pack of a bundle the home does not hold: refused, naming what it holds.
    // Signed by B's key, so the home may read the bundle id it states (an id is never
    // parsed before a held bundle's keys verify it; a pack no held key signed is
    // refused as untrusted, below).
    let ckey = &bkey;
    for (d, v, t) in [
        ("c1", "1.0.0", "2026-11-01T10:00:00Z"),
        ("c2", "1.1.0", "2026-11-02T10:00:00Z"),
    ] {
        make_tree_of(
            "org.example.other",
            &w.p(d),
            v,
            t,
            &[f("x.txt", format!("{v}\n").into_bytes(), FileKind::Data)],
            &[ckey],
        );
    }
    // The same release pair packed and applied, signed by `key`.
    let pack_and_apply = |key: &Path, name: &str| {
        pack_cmd(
            &w,
            key,
            name,
            &["--record", "c1", "--tree", "c2", "--since", "1.0.0"],
        )
        .env("OFFGRID_HQ", w.p(&format!("hq-{name}")))
        .assert()
        .success();
        cmd(&w).args(["apply-update", name]).output().unwrap()
    };
    let before = snapshot_home(&home);
    let out = pack_and_apply(ckey, "c.ogpack");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "holds no bundle 'org.example.other' (it holds {a}, {B})"
        )),
        "{err}"
    );
    assert_eq!(snapshot_home(&home), before, "the home is unchanged");
    let (xkey, _) = keypair(w.dir.path(), "stranger");
    let out = pack_and_apply(&xkey, "x.ogpack");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("made by a key you did not trust"), "{err}");
    let after = snapshot_home(&home);
    let changed: Vec<_> = after
        .iter()
        .filter(|f| !before.contains(f))
        .map(|f| f.0.clone())
        .collect();
    // Only the root's failure record (§17: refusals are reported back) changed.
    assert_eq!(after.len(), before.len(), "{changed:?}");
    assert_eq!(changed, vec![home.join("site").join("failures.json")]);

    // Rollback: which bundle must be said.
    let out = cmd(&w).arg("rollback").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&a) && err.contains(B), "{err}");
    cmd(&w)
        .args(["rollback", "--bundle", &a])
        .assert()
        .success();
    assert_installed(&home, &w.v1);
    cmd(&w)
        .args(["rollback", "--bundle", &a, "--to", "1.1.0"])
        .assert()
        .success();
    assert_installed(&home, &w.v2);

    // B's lessons file deleted from its release: only B's manifest names its object now
    // (nothing else links it), and a sweep for any bundle must keep it.
    let lessons_obj = object(&home, &b1, LESSONS);
    fs::remove_file(b_cur.join(LESSONS)).unwrap();
    assert_eq!(fs::metadata(&lessons_obj).unwrap().nlink(), 1);

    // gc --keep 1 over every bundle: A's 1.0.0 goes; the bytes freed are exactly its
    // files no other kept release (of A or B) links.
    let a_old = version_dir(&home, "previous");
    let a_new = version_dir(&home, "current");
    let mut kept: BTreeSet<u64> = inodes(&a_new).into_keys().collect();
    kept.extend(inodes(&sub.join("versions")).into_keys());
    let expected: u64 = inodes(&a_old)
        .into_iter()
        .filter(|(i, _)| !kept.contains(i))
        .map(|(_, n)| n)
        .sum();
    assert!(expected > 200_000, "the 1.0.0 model at least: {expected}");
    let objects_before = objects(&home);
    let out = cmd(&w)
        .args(["gc", "--keep", "1", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let gc = records(&out.stdout, "gc");
    assert_eq!(gc.len(), 2, "one record per bundle");
    assert_eq!(gc[0]["bundle_id"], a.as_str());
    assert_eq!(gc[0]["removed"][0], "1.0.0");
    assert_eq!(gc[0]["freed_bytes"], expected);
    assert_eq!(gc[1]["bundle_id"], B);
    assert_eq!(gc[1]["freed_bytes"], 0);
    assert!(!a_old.exists());
    assert!(lessons_obj.exists(), "B's kept release names it");
    for fe in &b1.files {
        assert!(object(&home, &b1, &fe.path).exists(), "{}", fe.path);
    }
    // The objects gone are exactly those only A's 1.0.0 linked.
    let gone: Vec<_> = objects_before
        .iter()
        .filter(|(p, _)| !p.exists())
        .map(|(_, (i, _, _))| *i)
        .collect();
    assert!(!gone.is_empty());
    assert!(gone.iter().all(|i| !kept.contains(i)));

    // Damage the shared object: both bundles' releases are damaged; one repair from B's
    // stick heals both (and puts B's deleted file back from the store).
    flip_byte(&obj, 10);
    let out = cmd(&w).args(["status", "--verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = cmd(&w)
        .args(["repair", "--from", "b1", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(records(&out.stdout, "repaired").len(), 2);
    let want = &b1.file(SHARED).unwrap().sha256;
    assert_eq!(&sha(&fs::read(&obj).unwrap()), want);
    assert_eq!(ino(&a_cur.join(SHARED)), ino(&obj), "still one inode");
    assert_eq!(ino(&b_cur.join(SHARED)), ino(&obj), "still one inode");
    assert!(b_cur.join(LESSONS).is_file());
    cmd(&w).args(["status", "--verify"]).assert().success();
    assert_installed(&home, &w.v2);
}
