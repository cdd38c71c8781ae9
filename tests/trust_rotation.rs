//! Trust roots (SPEC.md §19): the vector set, in the manner of TUF's conformance tests.
//! Each case drives the real binary: HQ makes roots with `trust init` / `trust rotate`
//! (stock `minisign -G -W` keys, no password), a site installs and applies the chain
//! from a stick or a folder, and the expected outcome (exit code and message) is
//! asserted. Vectors: rotation then a release signed only by the new key; the old
//! threshold missing; the new keys' threshold missing; a site 40 rotations behind;
//! rollback to an old root; a revoked key; signatures swapped between roots; the
//! expiry policy `warn`; a chain inside and beside an update pack, and followed in
//! memory by `verify` and the dry runs.

use std::fs;
use std::path::{Path, PathBuf};

use offgrid::manifest::FileKind;
use serde_json::Value;

use crate::util::{self as u, f, keypair, make_tree};

/// A temp dir with helpers: keys by name, trees, the binary with a private home.
struct T {
    dir: tempfile::TempDir,
}

impl T {
    fn new() -> T {
        T {
            dir: u::tempdir(true),
        }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    /// `(secret, public)` of key `name`, made once.
    fn key(&self, name: &str) -> (PathBuf, PathBuf) {
        let s = self.p(&format!("{name}.key"));
        if s.exists() {
            return (s, self.p(&format!("{name}.pub")));
        }
        keypair(self.dir.path(), name)
    }
    fn id(&self, name: &str) -> String {
        u::key_id(&self.key(name).1)
    }
    fn cmd(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::cargo_bin("offgrid").unwrap();
        c.current_dir(self.dir.path())
            .env("OFFGRID_HOME", self.p("home"))
            .env("OFFGRID_HQ", self.p("hq"))
            .env("OFFGRID_BIN_DIR", self.p("bin"))
            .env_remove("OFFGRID_FAULT_AT")
            .env_remove("OFFGRID_PASSWORD");
        c
    }
    /// A small release tree `dir` signed by the keys named.
    fn tree(&self, dir: &str, version: &str, created: &str, signers: &[&str]) {
        let keys: Vec<PathBuf> = signers.iter().map(|n| self.key(n).0).collect();
        let refs: Vec<&Path> = keys.iter().map(|k| k.as_path()).collect();
        make_tree(
            &self.p(dir),
            version,
            created,
            &[f(
                "README.txt",
                format!("release {version}\n").into_bytes(),
                FileKind::Doc,
            )],
            &refs,
        );
    }
    /// `trust init` at `hq-trust` with the keys named, signed by all of them.
    fn init(&self, keys: &[&str], extra: &[&str]) {
        let mut c = self.cmd();
        c.args(["trust", "init", "--out", "hq-trust"]);
        for k in keys {
            c.arg("--key").arg(self.key(k).1);
            c.arg("--sign").arg(self.key(k).0);
        }
        c.args(extra).assert().success();
    }
    /// `trust rotate` adding `add`, removing `remove`, signed by `old` and `new`.
    fn rotate(&self, add: &[&str], remove: &[&str], old: &[&str], new: &[&str]) {
        self.rotate_cmd(add, remove, old, new).assert().success();
    }
    fn rotate_cmd(
        &self,
        add: &[&str],
        remove: &[&str],
        old: &[&str],
        new: &[&str],
    ) -> assert_cmd::Command {
        let mut c = self.cmd();
        c.args(["trust", "rotate", "--root", "hq-trust"]);
        for k in add {
            c.arg("--add-key").arg(self.key(k).1);
        }
        for k in remove {
            c.arg("--remove-key").arg(self.key(k).1);
        }
        for k in old {
            c.arg("--sign-old").arg(self.key(k).0);
        }
        for k in new {
            c.arg("--sign-new").arg(self.key(k).0);
        }
        c
    }
    /// Copies HQ's roots (versions `upto` and below) into `dest/roots`.
    fn carry(&self, dest: &str, upto: u64) {
        let to = self.p(dest).join("roots");
        fs::create_dir_all(&to).unwrap();
        for e in fs::read_dir(self.p("hq-trust/roots")).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let v: u64 = name.split('.').next().unwrap().parse().unwrap();
            if v <= upto {
                fs::copy(e.path(), to.join(&name)).unwrap();
            }
        }
    }
    fn install(&self, tree: &str, pubkey: Option<&str>) -> assert_cmd::assert::Assert {
        let mut c = self.cmd();
        c.args(["install", "--no-receipt", "--from", tree]);
        if let Some(k) = pubkey {
            c.arg("--pubkey").arg(self.key(k).1);
        }
        c.assert()
    }
    fn update(&self, from: &str) -> assert_cmd::assert::Assert {
        self.cmd()
            .args(["trust", "update", "--from", from])
            .assert()
    }
    /// The home's trust: `trust show --json`.
    fn show(&self) -> Value {
        let out = self
            .cmd()
            .args(["trust", "show", "--json"])
            .assert()
            .success();
        let line = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
        serde_json::from_str::<Value>(line.lines().next().unwrap()).unwrap()["data"].clone()
    }
    fn key_ids(v: &Value) -> Vec<String> {
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["key_id"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn stderr(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

/// Vector 1: root 1 {A}, root 2 {B} signed by A and B; a release signed only by B is
/// refused without the chain and installs from a stick that carries it, both on an
/// installed site and on a first install pinning only A.
#[test]
fn rotation_lets_a_release_signed_by_the_new_key_install() {
    let t = T::new();
    t.init(&["a"], &[]);
    t.rotate(&["b"], &["a"], &["a"], &["b"]);
    let text = fs::read_to_string(t.p("hq-trust/roots/2.root.toml")).unwrap();
    assert!(text.contains("version = 2"), "{text}");
    assert!(
        text.contains(&t.id("b")) && !text.contains(&t.id("a")),
        "{text}"
    );
    // Stock minisign checks a root signature.
    let out = std::process::Command::new("minisign")
        .arg("-Vm")
        .arg(t.p("hq-trust/roots/2.root.toml"))
        .arg("-x")
        .arg(t.p(&format!("hq-trust/roots/2.{}.minisig", t.id("a"))))
        .arg("-p")
        .arg(t.key("a").1)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    t.tree("v1", "1.0.0", "2026-11-01T10:00:00Z", &["a"]);
    t.tree("v2", "1.1.0", "2026-11-15T10:00:00Z", &["b"]);
    t.install("v1", Some("a")).success();
    assert_eq!(t.show()["version"], 0);
    // Without the chain, B is a stranger.
    let a = t.install("v2", None).code(1);
    assert!(
        stderr(&a).contains("made by a key you did not trust"),
        "{}",
        stderr(&a)
    );
    // With it on the stick, the roots are applied first, then B's signature counts.
    t.carry("v2", 2);
    let a = t.install("v2", None).success();
    assert!(
        stderr(&a).contains("trust: applied 2 root(s)"),
        "{}",
        stderr(&a)
    );
    let s = t.show();
    assert_eq!(s["version"], 2);
    assert_eq!(T::key_ids(&s), [t.id("b")]);
    assert!(t.p("home/roots/2.root.toml").is_file());
    // Receipts tell HQ which root the site is at.
    fs::create_dir_all(t.p("stick")).unwrap();
    t.cmd()
        .args(["receipt", "--to", "stick"])
        .assert()
        .success();
    let name = fs::read_dir(t.p("stick/receipts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".toml"))
        .unwrap();
    let text = fs::read_to_string(t.p("stick/receipts").join(name)).unwrap();
    assert!(text.contains("trust_root = 2"), "{text}");
    // A first install that pins only A catches up from the same stick.
    let a = t
        .cmd()
        .env("OFFGRID_HOME", t.p("home2"))
        .args(["install", "--no-receipt", "--from", "v2", "--pubkey"])
        .arg(t.key("a").1)
        .assert()
        .success();
    assert!(stderr(&a).contains("root version 2"), "{}", stderr(&a));
    let out = t
        .cmd()
        .env("OFFGRID_HOME", t.p("home2"))
        .args(["trust", "show"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(text.starts_with("root version 2 "), "{text}");
    // A site given B directly starts the chain at root 2, the first root B signs.
    t.cmd()
        .env("OFFGRID_HOME", t.p("home3"))
        .args(["install", "--no-receipt", "--from", "v2", "--pubkey"])
        .arg(t.key("b").1)
        .assert()
        .success();
    let out = t
        .cmd()
        .env("OFFGRID_HOME", t.p("home3"))
        .args(["trust", "show"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(text.starts_with("root version 2 "), "{text}");
}

/// Vector 2: root 2 lacking the old root's threshold (A's signature gone) is refused;
/// `rotate` itself refuses to write it.
#[test]
fn a_root_without_the_old_threshold_is_refused() {
    let t = T::new();
    t.init(&["a"], &[]);
    let a = t.rotate_cmd(&["b"], &["a"], &[], &["b"]).assert().code(1);
    assert!(
        stderr(&a).contains("sites would refuse this root")
            && stderr(&a).contains("not signed by the threshold of root 1"),
        "{}",
        stderr(&a)
    );
    assert!(!t.p("hq-trust/roots/2.root.toml").exists());
    t.rotate(&["b"], &["a"], &["a"], &["b"]);
    fs::remove_file(t.p(&format!("hq-trust/roots/2.{}.minisig", t.id("a")))).unwrap();
    t.tree("v1", "1.0.0", "2026-11-01T10:00:00Z", &["a"]);
    t.install("v1", Some("a")).success();
    t.carry("v1", 1);
    t.update("v1").success();
    assert_eq!(t.show()["version"], 1);
    let a = t.update("hq-trust").code(1);
    assert!(
        stderr(&a).contains("2.root.toml' is refused: it is not signed by the threshold of root 1 (0 valid signature(s), 1 required)"),
        "{}",
        stderr(&a)
    );
    assert_eq!(t.show()["version"], 1);
}

/// Vector 3: root 2 not signed by its own new key is refused.
#[test]
fn a_root_without_its_own_threshold_is_refused() {
    let t = T::new();
    t.init(&["a"], &[]);
    let a = t.rotate_cmd(&["b"], &["a"], &["a"], &[]).assert().code(1);
    assert!(
        stderr(&a).contains("not signed by the threshold of its own keys"),
        "{}",
        stderr(&a)
    );
    t.rotate(&["b"], &["a"], &["a"], &["b"]);
    fs::remove_file(t.p(&format!("hq-trust/roots/2.{}.minisig", t.id("b")))).unwrap();
    t.tree("v1", "1.0.0", "2026-11-01T10:00:00Z", &["a"]);
    t.install("v1", Some("a")).success();
    let a = t.update("hq-trust").code(1);
    assert!(
        stderr(&a).contains(
            "it is not signed by the threshold of its own keys (0 valid signature(s), 1 required)"
        ),
        "{}",
        stderr(&a)
    );
    // The whole chain is refused: the site did not even take root 1.
    assert_eq!(t.show()["version"], 0);
}

/// Vector 4: a site at root 1 catches up 40 rotations (one new key each) from one
/// stick and installs a release signed only by the newest key.
#[test]
fn a_site_forty_rotations_behind_catches_up_from_one_stick() {
    let t = T::new();
    t.init(&["k0"], &[]);
    for i in 1..=40 {
        let (new, old) = (format!("k{i}"), format!("k{}", i - 1));
        t.rotate(&[&new], &[&old], &[&old], &[&new]);
    }
    t.tree("v1", "1.0.0", "2026-11-01T10:00:00Z", &["k0"]);
    t.install("v1", Some("k0")).success();
    t.carry("v1", 1);
    t.update("v1").success();
    assert_eq!(t.show()["version"], 1);
    t.tree("v2", "1.1.0", "2026-11-15T10:00:00Z", &["k40"]);
    t.carry("v2", 41);
    t.install("v2", None).success();
    let s = t.show();
    assert_eq!(s["version"], 41);
    assert_eq!(T::key_ids(&s), [t.id("k40")]);
    // A gap in the chain is refused, naming the missing version.
    let t2 = T::new();
    fs::create_dir_all(t2.p("gap/roots")).unwrap();
    for e in fs::read_dir(t.p("hq-trust/roots")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("20.") {
            fs::copy(e.path(), t2.p("gap/roots").join(&name)).unwrap();
        }
    }
    fs::copy(t.key("k0").1, t2.p("k0.pub")).unwrap();
    fs::copy(t.key("k0").0, t2.p("k0.key")).unwrap();
    t2.tree("v1", "1.0.0", "2026-11-01T10:00:00Z", &["k0"]);
    t2.install("v1", Some("k0")).success();
    let a = t2.update("gap").code(1);
    assert!(
        stderr(&a).contains("skips root version 20"),
        "{}",
        stderr(&a)
    );
    assert_eq!(t2.show()["version"], 0);
}

/// Vector 5: a site at root 3 offered roots 1 and 2 only refuses (rollback); an
/// install from an old stick leaves the site's root alone.
#[test]
fn rollback_to_an_old_root_is_refused() {
    let t = T::new();
    t.init(&["a"], &[]);
    t.rotate(&["b"], &["a"], &["a"], &["b"]);
    t.rotate(&["c"], &["b"], &["b"], &["c"]);
    t.tree("v1", "1.0.0", "2026-11-01T10:00:00Z", &["a"]);
    t.install("v1", Some("a")).success();
    t.update("hq-trust").success();
    assert_eq!(t.show()["version"], 3);
    t.carry("old", 2);
    let a = t.update("old").code(1);
    assert!(
        stderr(&a).contains("holds roots up to version 2, but this site is at root version 3"),
        "{}",
        stderr(&a)
    );
    assert_eq!(T::key_ids(&t.show()), [t.id("c")]);
    // The same roots again: nothing to do, exit 0.
    t.update("hq-trust").success();
    // A release signed by A (root 1's key) is refused now, even with root 1 beside it.
    t.tree("v2", "1.1.0", "2026-11-15T10:00:00Z", &["a"]);
    t.carry("v2", 1);
    t.install("v2", None).code(1);
    assert_eq!(t.show()["version"], 3);
}

/// Vector 6: root 2 revokes A (root 1: A and B, threshold 1); a release signed only by
/// A is refused after the rotation, and HQ cannot bring A back.
#[test]
fn a_revoked_key_no_longer_counts() {
    let t = T::new();
    t.init(&["a", "b"], &[]);
    t.tree("v1", "1.0.0", "2026-11-01T10:00:00Z", &["a"]);
    t.tree("v2", "1.1.0", "2026-11-15T10:00:00Z", &["a"]);
    t.install("v1", Some("a")).success();
    t.update("hq-trust").success();
    assert_eq!(t.show()["version"], 1);
    t.cmd()
        .args(["trust", "rotate", "--root", "hq-trust", "--revoke-key"])
        .arg(t.key("a").1)
        .arg("--sign-old")
        .arg(t.key("b").0)
        .arg("--sign-new")
        .arg(t.key("b").0)
        .assert()
        .success();
    let text = fs::read_to_string(t.p("hq-trust/roots/2.root.toml")).unwrap();
    assert!(
        text.contains(&format!("revoked = [\"{}\"]", t.id("a"))),
        "{text}"
    );
    t.carry("v2", 2);
    let a = t.install("v2", None).code(1);
    assert!(
        stderr(&a).contains("made by a key you did not trust"),
        "{}",
        stderr(&a)
    );
    let s = t.show();
    assert_eq!(s["version"], 2);
    assert_eq!(s["revoked"][0], t.id("a"));
    // HQ cannot bring A back.
    let a = t
        .rotate_cmd(&["a"], &[], &["b"], &["a", "b"])
        .assert()
        .code(2);
    assert!(stderr(&a).contains("is revoked"), "{}", stderr(&a));
}

/// Vector 7: signature files swapped between roots (mix and match) are refused: root
/// 3's signatures replaced by root 2's under root 3's names.
#[test]
fn signatures_swapped_between_roots_are_refused() {
    let t = T::new();
    t.init(&["a"], &[]);
    t.rotate(&["b"], &["a"], &["a"], &["b"]);
    t.rotate(&["c"], &[], &["b"], &["b", "c"]);
    let r = t.p("hq-trust/roots");
    let b = t.id("b");
    fs::copy(
        r.join(format!("2.{b}.minisig")),
        r.join(format!("3.{b}.minisig")),
    )
    .unwrap();
    t.tree("v1", "1.0.0", "2026-11-01T10:00:00Z", &["a"]);
    t.install("v1", Some("a")).success();
    let a = t.update("hq-trust").code(1);
    assert!(
        stderr(&a).contains("3.root.toml' is refused: it is not signed by the threshold of root 2"),
        "{}",
        stderr(&a)
    );
    // Root 2's bytes under root 3's name, with root 2's signatures renamed: the trusted
    // comments name version 2, the file is named 3.
    fs::copy(r.join("2.root.toml"), r.join("3.root.toml")).unwrap();
    for k in [&t.id("b"), &t.id("c")] {
        let _ = fs::remove_file(r.join(format!("3.{k}.minisig")));
    }
    fs::copy(
        r.join(format!("2.{b}.minisig")),
        r.join(format!("3.{b}.minisig")),
    )
    .unwrap();
    let a = t.update("hq-trust").code(1);
    assert!(
        stderr(&a).contains("named for version 3 but holds version 2"),
        "{}",
        stderr(&a)
    );
    assert_eq!(t.show()["version"], 0);
}

/// Expiry policy from the signed root: `warn` installs an expired release with a
/// warning; the default refuses it.
#[test]
fn the_roots_expiry_policy_warn_installs_an_expired_release() {
    let t = T::new();
    t.init(&["a"], &["--expiry-policy", "warn"]);
    t.tree("v1", "1.0.0", "2026-11-15T10:00:00Z", &["a"]);
    // 1.1.0 was signed on 11-01 and expired on 11-10; the site has seen 11-15.
    t.tree("v2", "1.1.0", "2026-11-01T10:00:00Z", &["a"]);
    let dir = t.p("v2");
    let mut m =
        offgrid::manifest::Manifest::parse(&fs::read(dir.join("manifest.toml")).unwrap()).unwrap();
    m.expires = Some("2026-11-10T00:00:00Z".into());
    let text = m.to_toml();
    fs::write(dir.join("manifest.toml"), &text).unwrap();
    fs::remove_dir_all(dir.join("signatures")).unwrap();
    fs::create_dir(dir.join("signatures")).unwrap();
    u::sign_file(
        &dir.join("manifest.toml"),
        &t.key("a").0,
        &format!(
            "offgrid bundle={} release=1.1.0 manifest_sha256={}",
            u::BUNDLE,
            u::sha(text.as_bytes())
        ),
        &dir.join("signatures"),
    );
    // Default (no root): refused.
    t.install("v1", Some("a")).success();
    let a = t.install("v2", None).code(1);
    assert!(stderr(&a).contains("release 1.1.0 expired at 2026-11-10T00:00:00Z"));
    // Root 1 says warn: installed, with the warning.
    t.update("hq-trust").success();
    assert_eq!(t.show()["expiry_policy"], "warn");
    let a = t.install("v2", None).success();
    assert!(
        stderr(&a).contains("expired at 2026-11-10T00:00:00Z")
            && stderr(&a).contains("expiry policy is 'warn'"),
        "{}",
        stderr(&a)
    );
}

/// HQ's chain (root 1 {hq}, root 2 adding `b`) and an installed site pinning `hq` only;
/// `out/` ready for packs.
fn rotated_world() -> (u::World, (PathBuf, PathBuf)) {
    let w = u::world(32 << 10);
    let b = keypair(w.dir.path(), "b");
    let t = |args: &[&str]| {
        let mut c = w.cmd();
        c.args(args);
        c
    };
    t(&["trust", "init", "--out", "hq-trust", "--key"])
        .arg(&w.pubkey)
        .arg("--sign")
        .arg(&w.key)
        .assert()
        .success();
    t(&["trust", "rotate", "--root", "hq-trust", "--add-key"])
        .arg(&b.1)
        .arg("--sign-old")
        .arg(&w.key)
        .arg("--sign-new")
        .arg(&b.0)
        .assert()
        .success();
    w.cmd()
        .args(["install", "--no-receipt", "--from", "v1", "--pubkey"])
        .arg(&w.pubkey)
        .assert()
        .success();
    fs::create_dir_all(w.p("out")).unwrap();
    (w, b)
}

/// The home's root version, from `trust show --json`.
fn root_version(w: &u::World) -> u64 {
    let out = w.cmd().args(["trust", "show", "--json"]).assert().success();
    let line = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    serde_json::from_str::<Value>(line.lines().next().unwrap()).unwrap()["data"]["version"]
        .as_u64()
        .unwrap()
}

/// The chain travels inside an update pack (`create-update-pack --roots`, SPEC.md §7.2
/// entry 0): GNU tar lists the roots first; `inspect` names them; `verify PACK --home`
/// and `apply-update --dry-run` follow them in memory and record nothing; `apply-update`
/// applies root 2 and then the pack signed only by the key root 2 adds.
#[test]
fn an_update_pack_carries_the_chain_at_its_head() {
    let (w, b) = rotated_world();
    u::make_pack_by(&w, &b.0, "out/u.ogpack", &["--roots", "hq-trust"]);
    assert!(!w.p("out/roots").exists(), "nothing beside the pack");
    let listing = std::process::Command::new("tar")
        .arg("-tf")
        .arg(w.p("out/u.ogpack"))
        .output()
        .unwrap();
    assert!(listing.status.success());
    let names: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let first_other = names.iter().position(|n| !n.starts_with("roots/")).unwrap();
    assert_eq!(names[first_other], "offgrid-pack.toml", "{names:?}");
    assert!(
        names[..first_other].contains(&"roots/2.root.toml".to_owned())
            && names[..first_other].contains(&"roots/1.root.toml".to_owned()),
        "{names:?}"
    );
    let out = w
        .cmd()
        .args(["inspect", "--json", "out/u.ogpack"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    let summary = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["type"] == "summary")
        .unwrap();
    assert!(
        summary["data"]["roots"]
            .as_array()
            .unwrap()
            .contains(&Value::from("2.root.toml")),
        "{summary}"
    );
    // The pack is signed by b only: hq's key, given or pinned, verifies it by following
    // the chain it carries.
    let a = w
        .cmd()
        .args(["verify", "out/u.ogpack", "--pubkey"])
        .arg(&w.pubkey)
        .assert()
        .success();
    assert!(
        stderr(&a).contains("following root(s) 1, 2"),
        "{}",
        stderr(&a)
    );
    let a = w
        .cmd()
        .args(["verify", "out/u.ogpack", "--home"])
        .arg(w.home())
        .assert()
        .success();
    assert!(
        stderr(&a).contains("following root(s) 1, 2"),
        "{}",
        stderr(&a)
    );
    let a = w
        .cmd()
        .args(["apply-update", "--dry-run", "out/u.ogpack"])
        .assert()
        .success();
    let out = String::from_utf8_lossy(&a.get_output().stdout).into_owned();
    assert!(out.contains("would apply root(s) 1, 2 first"), "{out}");
    assert_eq!(root_version(&w), 0, "a dry run records nothing");
    let a = w
        .cmd()
        .args(["apply-update", "--no-receipt", "out/u.ogpack"])
        .assert()
        .success();
    assert!(
        stderr(&a).contains("now at root version 2"),
        "{}",
        stderr(&a)
    );
    assert_eq!(root_version(&w), 2);
}

/// A pack made without `--roots`, with HQ's chain copied into `roots/` beside it (packs
/// made before roots travelled inside), applies the same way; a pack whose leading
/// `roots/` entry is not a root file is refused as damaged before any root is applied.
#[test]
fn apply_update_applies_the_roots_beside_the_pack_and_refuses_a_damaged_chain() {
    let (w, b) = rotated_world();
    u::make_pack_by(&w, &b.0, "out/plain.ogpack", &[]);
    // A damaged chain: an entry `roots/notes.txt` ahead of a good pack (GNU tar -A).
    fs::create_dir_all(w.p("bad/roots")).unwrap();
    fs::write(w.p("bad/roots/notes.txt"), "not a root\n").unwrap();
    let st = std::process::Command::new("tar")
        .current_dir(w.p("bad"))
        .args([
            "--format=gnu",
            "-cf",
            "../out/bad.ogpack",
            "roots/notes.txt",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let st = std::process::Command::new("tar")
        .current_dir(w.p("out"))
        .args(["-Af", "bad.ogpack", "plain.ogpack"])
        .status()
        .unwrap();
    assert!(st.success());
    let a = w
        .cmd()
        .args(["apply-update", "--no-receipt", "out/bad.ogpack"])
        .assert()
        .code(1);
    assert!(
        stderr(&a).contains("'roots/notes.txt' is not a trust root file"),
        "{}",
        stderr(&a)
    );
    assert_eq!(root_version(&w), 0);
    // Without roots the b-signed pack is refused; with the chain beside it, it applies.
    w.cmd()
        .args(["apply-update", "--no-receipt", "out/plain.ogpack"])
        .assert()
        .code(1);
    let to = w.p("out/roots");
    fs::create_dir_all(&to).unwrap();
    for e in fs::read_dir(w.p("hq-trust/roots")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    let a = w
        .cmd()
        .args(["apply-update", "--no-receipt", "out/plain.ogpack"])
        .assert()
        .success();
    assert!(
        stderr(&a).contains("now at root version 2"),
        "{}",
        stderr(&a)
    );
}

/// `status --verify` records its result in the home; a receipt written afterwards
/// (without --verify) carries that last full verification with the damaged paths.
#[test]
fn a_receipt_carries_the_last_status_verify() {
    let w = u::world(32 << 10);
    w.cmd()
        .args(["install", "--no-receipt", "--from", "v1", "--pubkey"])
        .arg(&w.pubkey)
        .assert()
        .success();
    let readme = u::current_dir(&w.home()).join("README.txt");
    let mut bytes = fs::read(&readme).unwrap();
    bytes[0] ^= 1;
    fs::write(&readme, bytes).unwrap();
    w.cmd().args(["status", "--verify"]).assert().code(1);
    let rec = w.home().join("site/last-verify.json");
    let v: Value = serde_json::from_slice(&fs::read(&rec).unwrap()).unwrap();
    assert_eq!(v["release"], "1.0.0");
    fs::create_dir_all(w.p("stick")).unwrap();
    w.cmd()
        .args(["receipt", "--to", "stick"])
        .assert()
        .success();
    let dir = w.p("stick/receipts");
    let name = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".toml"))
        .unwrap();
    let text = fs::read_to_string(dir.join(name)).unwrap();
    let r: toml::Value = toml::from_str(&text).unwrap();
    let ver = &r["verification"];
    assert_eq!(ver["time"].as_str(), v["time"].as_str(), "{text}");
    let damaged = ver["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{text}");
    assert!(
        damaged[0].as_str().unwrap().starts_with("'README.txt': "),
        "{text}"
    );
}

/// The worked example of SPEC.md §19 (`formats/roots.example/`) is a real chain: stock
/// minisign checks its signatures, and a site pinning `old.pub` reaches root 2.
#[test]
fn the_roots_example_is_a_valid_chain() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("formats/roots.example");
    let old = offgrid::keys::PublicKey::load(&dir.join("old.pub")).unwrap();
    let new = offgrid::keys::PublicKey::load(&dir.join("new.pub")).unwrap();
    for (file, key) in [
        (format!("1.{}.minisig", old.key_id()), "old.pub"),
        (format!("2.{}.minisig", old.key_id()), "old.pub"),
        (format!("2.{}.minisig", new.key_id()), "new.pub"),
    ] {
        let v = if file.starts_with('1') { "1" } else { "2" };
        let out = std::process::Command::new("minisign")
            .arg("-Vm")
            .arg(dir.join(format!("{v}.root.toml")))
            .arg("-x")
            .arg(dir.join(&file))
            .arg("-p")
            .arg(dir.join(key))
            .output()
            .unwrap();
        assert!(out.status.success(), "{file}: {out:?}");
    }
    let start = offgrid::trustroot::TrustState::implicit(
        offgrid::trust::TrustPolicy::from_keys(vec![old.clone()]).unwrap(),
    );
    let chain = offgrid::trustroot::advance(&start, &dir).unwrap();
    assert_eq!(chain.state.version, 2);
    assert_eq!(chain.state.policy.keys, vec![new]);
    assert!(chain.state.revoked.contains(&old.key_id()));
}

/// `pack-usb --roots` carries the chain on the stick; a site pinning the old key
/// installs a stick signed only by the key root 2 adds. A `--roots` without roots is
/// refused before anything is written.
#[test]
fn pack_usb_carries_the_chain_on_the_stick() {
    let ws = crate::util::Ws::new();
    ws.keypair("b");
    ws.model("in/tiny.gguf", 16, 3);
    ws.offgrid(&[
        "trust", "init", "--out", "trust", "--key", "hq.pub", "--sign", "hq.key",
    ])
    .success();
    ws.offgrid(&[
        "trust",
        "rotate",
        "--root",
        "trust",
        "--add-key",
        "b.pub",
        "--sign-old",
        "hq.key",
        "--sign-new",
        "b.key",
    ])
    .success();
    let pack = |roots: &str| {
        ws.offgrid(&[
            "pack-usb",
            "stick",
            "--release",
            "1.0.0",
            "--bundle-id",
            "org.example.clinic",
            "--model",
            "in/tiny.gguf",
            "--no-host-binary",
            "--sign-with",
            "b.key",
            "--roots",
            roots,
        ])
    };
    let a = pack("in").code(2);
    assert!(
        stderr(&a).contains("--roots 'in' holds no trust roots"),
        "{}",
        stderr(&a)
    );
    assert!(!ws.path("stick/manifest.toml").exists());
    pack("trust").success();
    assert!(ws.path("stick/roots/2.root.toml").is_file());
    // A dry run follows the chain in memory and writes nothing.
    ws.offgrid(&[
        "install",
        "--dry-run",
        "--from",
        "stick",
        "--home",
        "home",
        "--pubkey",
        "hq.pub",
    ])
    .success()
    .stdout(predicates::str::contains("would apply root(s) 1, 2 first"));
    assert!(!ws.path("home/state.json").exists());
    let a = ws
        .offgrid(&[
            "install",
            "--no-receipt",
            "--from",
            "stick",
            "--home",
            "home",
            "--bin-dir",
            "bin",
            "--pubkey",
            "hq.pub",
        ])
        .success();
    assert!(
        stderr(&a).contains("now at root version 2"),
        "{}",
        stderr(&a)
    );
}
