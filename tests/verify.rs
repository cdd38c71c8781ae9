//! `offgrid verify` end to end: real trees, real manifests, signatures made by the stock
//! `minisign` tool (interop), the real binary; one case per user-visible outcome.

use crate::util::{self, noise as data, Out};

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command as Std;

use assert_cmd::Command;
use ct_codecs::Decoder;
use offgrid::hash;
use offgrid::manifest::{FileEntry, FileKind, Manifest, ModelInfo, DEFAULT_CHUNK_SIZE, FORMAT};
use serde_json::Value;

/// A minisign key pair made by the stock tool.
struct Key {
    public: PathBuf,
    secret: PathBuf,
    id: String,
}

fn keygen(dir: &Path, name: &str) -> Key {
    let public = dir.join(format!("{name}.pub"));
    let secret = dir.join(format!("{name}.key"));
    let out = Std::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(&public)
        .arg("-s")
        .arg(&secret)
        .output()
        .expect("minisign is installed");
    assert!(out.status.success(), "{out:?}");
    // The key id: bytes 2..10 of the key line, little-endian (minisign's own comment
    // line drops leading zeros, so it is not used).
    let text = fs::read_to_string(&public).unwrap();
    let line = text.lines().nth(1).unwrap();
    let raw = ct_codecs::Base64::decode_to_vec(line, None).unwrap();
    let id = format!(
        "{:016X}",
        u64::from_le_bytes(raw[2..10].try_into().unwrap())
    );
    Key { public, secret, id }
}

/// The key line (`RW…`) of a public key file.
fn key_line(k: &Key) -> String {
    fs::read_to_string(&k.public)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_owned()
}

struct Tree {
    _dir: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    manifest: Manifest,
}

const MODEL: &str = "models/tiny.gguf";
/// 9 MiB + 5 bytes: chunks 0 and 1 full (4 MiB), chunk 2 short.
const MODEL_SIZE: usize = (9 << 20) + 5;

/// A tree with a model, a binary and a README, manifest written, not yet signed.
fn tree() -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_path_buf();
    let root = base.join("usb");
    let files: Vec<(&str, Vec<u8>)> = vec![
        (MODEL, data(MODEL_SIZE, 7)),
        ("bin/linux-x86_64/offgrid", data(70_000, 8)),
        ("README.txt", b"Plug in, run ./run.sh\n".to_vec()),
    ];
    let mut entries = Vec::new();
    for (path, bytes) in files {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, &bytes).unwrap();
        let d = hash::hash_file(&p, DEFAULT_CHUNK_SIZE, &offgrid::no_progress).unwrap();
        let (kind, platform, model, mode) = match path {
            MODEL => (
                FileKind::Model,
                None,
                Some(ModelInfo {
                    format: None,
                    name: "tiny".into(),
                    ..Default::default()
                }),
                None,
            ),
            p if p.starts_with("bin/") => (
                FileKind::Binary,
                Some("linux-x86_64".into()),
                None,
                Some(0o755),
            ),
            _ => (FileKind::Doc, None, None, None),
        };
        entries.push(FileEntry {
            path: path.into(),
            size: d.size,
            sha256: d.sha256,
            kind,
            platform,
            mode,
            chunk_size: d.chunk_size,
            chunks: d.chunks,
            volume: None,
            parts: Vec::new(),
            model,
        });
    }
    let manifest = Manifest {
        dirs: Vec::new(),
        commands: Vec::new(),
        format: FORMAT.into(),
        bundle_id: "org.example.clinic".into(),
        release: "1.2.0".parse().unwrap(),
        created: "2026-11-21T12:00:00Z".into(),
        platforms: vec!["linux-x86_64".into()],
        default_model: Some("tiny".into()),
        expires: None,
        volumes: None,
        files: entries,
    };
    fs::write(root.join("manifest.toml"), manifest.to_toml()).unwrap();
    fs::create_dir_all(root.join("signatures")).unwrap();
    Tree {
        _dir: dir,
        base,
        root,
        manifest,
    }
}

impl Tree {
    fn key(&self, name: &str) -> Key {
        keygen(&self.base, name)
    }

    /// Signs the manifest on disk with the stock minisign, trusted comment as offgrid
    /// writes it (SPEC.md §4).
    fn sign(&self, k: &Key) {
        let bytes = fs::read(self.root.join("manifest.toml")).unwrap();
        let sha = hash::hash_bytes(&bytes, DEFAULT_CHUNK_SIZE).sha256;
        self.sign_with_comment(
            k,
            &format!(
                "offgrid bundle={} release={} manifest_sha256={sha}",
                self.manifest.bundle_id,
                self.manifest.release.as_str()
            ),
        );
    }

    /// Signs the manifest bytes with `comment` as the trusted comment.
    fn sign_with_comment(&self, k: &Key, comment: &str) {
        let out = Std::new("minisign")
            .arg("-S")
            .arg("-s")
            .arg(&k.secret)
            .arg("-m")
            .arg(self.root.join("manifest.toml"))
            .arg("-x")
            .arg(self.root.join(format!("signatures/{}.minisig", k.id)))
            .args(["-t", comment])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    /// A tree signed by one fresh key; returns that key.
    fn signed() -> (Tree, Key) {
        let t = tree();
        let k = t.key("hq");
        t.sign(&k);
        (t, k)
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p)
    }

    fn verify(&self, k: &Key) -> Command {
        let mut c = Command::cargo_bin("offgrid").unwrap();
        c.arg("verify")
            .arg(&self.root)
            .arg("--pubkey")
            .arg(&k.public);
        c
    }
}

/// `c` run to its end (assert_cmd's `Command`).
fn run(mut c: Command) -> Out {
    c.output().unwrap().into()
}

fn records(stdout: &str) -> Vec<(String, Value)> {
    stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            (v["type"].as_str().unwrap().to_owned(), v["data"].clone())
        })
        .collect()
}

fn of_type<'a>(r: &'a [(String, Value)], ty: &str) -> Vec<&'a Value> {
    r.iter().filter(|(t, _)| t == ty).map(|(_, v)| v).collect()
}

fn summary(r: &[(String, Value)]) -> Value {
    let s = of_type(r, "summary");
    assert_eq!(s.len(), 1, "{r:?}");
    // Last of verify's own records; a failure adds the `error` record after it (§9.3).
    let own: Vec<_> = r.iter().filter(|(t, _)| t != "error").collect();
    assert_eq!(own.last().unwrap().0, "summary", "summary comes last");
    let failed = s[0]["verified"] == false;
    assert_eq!(
        r.last().unwrap().0 == "error",
        failed,
        "an error record ends a failed verify: {r:?}"
    );
    s[0].clone()
}

#[test]
fn good_tree_verifies() {
    let (t, k) = Tree::signed();
    let o = run(t.verify(&k));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.starts_with(&format!(
            "verified release 1.2.0 of org.example.clinic: 3 files, 9.1 MiB, signed by {} (fingerprint ",
            k.id
        )),
        "{}",
        o.stdout
    );
    assert!(!o.stderr.contains("warning"), "{}", o.stderr);
}

#[test]
fn good_tree_verifies_json() {
    let (t, k) = Tree::signed();
    let mut c = t.verify(&k);
    c.arg("--json");
    let o = run(c);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let r = records(&o.stdout);
    let sigs = of_type(&r, "signature");
    assert_eq!(sigs.len(), 1);
    assert_eq!(sigs[0]["status"], "valid");
    assert_eq!(sigs[0]["key_id"], k.id.as_str());
    assert_eq!(sigs[0]["file"], format!("signatures/{}.minisig", k.id));
    let files = of_type(&r, "file");
    assert_eq!(files.len(), 3);
    assert!(files.iter().all(|f| f["status"] == "ok"), "{files:?}");
    assert_eq!(files[0]["path"], MODEL);
    assert_eq!(files[0]["size"], MODEL_SIZE as u64);
    let s = summary(&r);
    assert_eq!(s["schema"], 1);
    assert_eq!(s["verified"], true);
    assert_eq!(s["bundle_id"], "org.example.clinic");
    assert_eq!(s["release"], "1.2.0");
    assert_eq!(s["files"], 3);
    assert_eq!(s["failed"], 0);
    assert_eq!(s["signers"][0]["key_id"], k.id.as_str());
    assert!(s["error"].is_null());
}

#[test]
fn one_flipped_bit_names_file_and_byte_range() {
    let (t, k) = Tree::signed();
    let p = t.path(MODEL);
    let mut bytes = fs::read(&p).unwrap();
    bytes[5 << 20] ^= 0x10;
    fs::write(&p, &bytes).unwrap();
    let expected = &t.manifest.files[0].chunks[1];
    let found = hash::hash_bytes(&bytes[4 << 20..8 << 20], DEFAULT_CHUNK_SIZE).sha256;
    let o = run(t.verify(&k));
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!(
            "'models/tiny.gguf': bytes 4194304..8388608 differ from the signed manifest (chunk 1: expected sha256 {}…, found {}…)",
            &expected[..16],
            &found[..16]
        )),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("1 of 3 files do not match"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("help: "), "{}", o.stderr);
    assert!(!o.stdout.contains("verified release"), "{}", o.stdout);

    let mut c = t.verify(&k);
    c.arg("--json");
    let o = run(c);
    assert_eq!(o.code, 1);
    let r = records(&o.stdout);
    let files = of_type(&r, "file");
    assert_eq!(files[0]["status"], "damaged");
    assert_eq!(files[0]["ranges"], serde_json::json!([[4194304, 8388608]]));
    assert_eq!(files[0]["chunks"][0]["index"], 1);
    assert_eq!(files[0]["chunks"][0]["expected"], expected.as_str());
    assert_eq!(files[0]["chunks"][0]["found"], found.as_str());
    assert_eq!(files[1]["status"], "ok");
    let s = summary(&r);
    assert_eq!(s["verified"], false);
    assert_eq!(s["failed"], 1);
}

#[test]
fn damaged_ranges_are_merged_when_adjacent() {
    let (t, k) = Tree::signed();
    let p = t.path(MODEL);
    let mut bytes = fs::read(&p).unwrap();
    bytes[1] ^= 1;
    bytes[MODEL_SIZE - 1] ^= 1;
    fs::write(&p, &bytes).unwrap();
    let o = run(t.verify(&k));
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!(
            "'models/tiny.gguf': bytes 0..4194304, 8388608..{MODEL_SIZE} differ"
        )),
        "{}",
        o.stderr
    );
    // Chunk 1 too: the three ranges touch and become one.
    bytes[(4 << 20) + 1] ^= 1;
    fs::write(&p, &bytes).unwrap();
    let o = run(t.verify(&k));
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr
            .contains(&format!("'models/tiny.gguf': bytes 0..{MODEL_SIZE} differ")),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("chunk 2: expected sha256"),
        "{}",
        o.stderr
    );
}

#[test]
fn truncated_file_fails_with_sizes() {
    let (t, k) = Tree::signed();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(t.path(MODEL))
        .unwrap();
    f.set_len(1 << 20).unwrap();
    let o = run(t.verify(&k));
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!(
            "'models/tiny.gguf': size is 1048576 bytes, the signed manifest says {MODEL_SIZE} (truncated?)"
        )),
        "{}",
        o.stderr
    );
    let mut c = t.verify(&k);
    c.arg("--json");
    let r = records(&run(c).stdout);
    let files = of_type(&r, "file");
    assert_eq!(files[0]["status"], "size-mismatch");
    assert_eq!(files[0]["expected"], MODEL_SIZE as u64);
    assert_eq!(files[0]["found"], 1048576);
}

#[test]
fn missing_file_fails() {
    let (t, k) = Tree::signed();
    fs::remove_file(t.path("README.txt")).unwrap();
    let o = run(t.verify(&k));
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("'README.txt': missing"), "{}", o.stderr);
    // A whole missing folder too.
    fs::remove_dir_all(t.path("bin")).unwrap();
    let o = run(t.verify(&k));
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("'bin/linux-x86_64/offgrid': missing"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("2 of 3 files"), "{}", o.stderr);
}

#[test]
fn extra_files_are_reported_but_do_not_fail() {
    let (t, k) = Tree::signed();
    fs::write(t.path("notes.txt"), b"hello").unwrap();
    fs::create_dir_all(t.path("photos/2026")).unwrap();
    fs::write(t.path("photos/2026/a.jpg"), b"x").unwrap();
    fs::write(t.path("models/other.gguf"), b"x").unwrap();
    // OS junk is not reported.
    fs::write(t.path(".DS_Store"), b"x").unwrap();
    fs::write(t.path("models/._tiny.gguf"), b"x").unwrap();
    fs::create_dir_all(t.path("System Volume Information")).unwrap();
    fs::write(t.path("System Volume Information/IndexerVolumeGuid"), b"x").unwrap();
    let o = run(t.verify(&k));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.starts_with("verified release 1.2.0"),
        "{}",
        o.stdout
    );
    for p in ["'notes.txt'", "'photos' (directory)", "'models/other.gguf'"] {
        assert!(
            o.stderr
                .contains(&format!("warning: {p} is not in the signed manifest")),
            "{p}: {}",
            o.stderr
        );
    }
    assert!(!o.stderr.contains("a.jpg"), "{}", o.stderr);
    assert!(!o.stderr.contains("DS_Store"), "{}", o.stderr);
    assert!(!o.stderr.contains("System Volume"), "{}", o.stderr);
    assert!(!o.stderr.contains("._tiny"), "{}", o.stderr);

    let mut c = t.verify(&k);
    c.arg("--json");
    let o = run(c);
    assert_eq!(o.code, 0);
    let r = records(&o.stdout);
    let extras: Vec<&str> = of_type(&r, "extra")
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(extras, ["models/other.gguf", "notes.txt", "photos"]);
    assert_eq!(summary(&r)["extras"], 3);
    assert_eq!(summary(&r)["verified"], true);
    // --no-extras does not look.
    let mut c = t.verify(&k);
    c.arg("--no-extras");
    let o = run(c);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!o.stderr.contains("warning"), "{}", o.stderr);
}

#[test]
fn edited_manifest_fails_before_any_file_is_hashed() {
    let (t, k) = Tree::signed();
    let mp = t.path("manifest.toml");
    let text = fs::read_to_string(&mp).unwrap();
    // One byte: a different release, still a valid manifest.
    let edited = text.replacen("release = \"1.2.0\"", "release = \"1.2.1\"", 1);
    assert_ne!(text, edited);
    fs::write(&mp, edited).unwrap();
    // Damage a file too: the report must not get that far.
    fs::remove_file(t.path("README.txt")).unwrap();
    let o = run(t.verify(&k));
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("do not hold; no file was checked"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains(&k.id), "{}", o.stderr);
    assert!(!o.stderr.contains("README"), "{}", o.stderr);
    let mut c = t.verify(&k);
    c.arg("--json");
    let o = run(c);
    assert_eq!(o.code, 1);
    let r = records(&o.stdout);
    assert!(of_type(&r, "file").is_empty(), "{r:?}");
    let sigs = of_type(&r, "signature");
    assert_eq!(sigs.len(), 1);
    assert_eq!(sigs[0]["status"], "invalid");
    assert_eq!(summary(&r)["verified"], false);
}

#[test]
fn signature_naming_another_release_fails() {
    // A valid signature over these very bytes, by the trusted key, whose trusted comment
    // names another release: what a replayed or mislabelled signature looks like.
    let t = tree();
    let k = t.key("hq");
    let bytes = fs::read(t.path("manifest.toml")).unwrap();
    let sha = hash::hash_bytes(&bytes, DEFAULT_CHUNK_SIZE).sha256;
    t.sign_with_comment(
        &k,
        &format!("offgrid bundle=org.example.clinic release=1.1.0 manifest_sha256={sha}"),
    );
    let o = run(t.verify(&k));
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("no file was checked"), "{}", o.stderr);
    assert!(
        o.stderr.contains("invalid: trusted comment"),
        "{}",
        o.stderr
    );
    // The stock tool accepts the signature itself: only offgrid's binding refuses it.
    let ok = Std::new("minisign")
        .arg("-V")
        .arg("-p")
        .arg(&k.public)
        .arg("-m")
        .arg(t.path("manifest.toml"))
        .arg("-x")
        .arg(t.path(&format!("signatures/{}.minisig", k.id)))
        .output()
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");
}

#[test]
fn truncated_manifest_fails() {
    let (t, k) = Tree::signed();
    let mp = t.path("manifest.toml");
    let bytes = fs::read(&mp).unwrap();
    fs::write(&mp, &bytes[..bytes.len() / 2]).unwrap();
    let o = run(t.verify(&k));
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("manifest.toml"), "{}", o.stderr);
    // Cut at a line end, so that it may still parse: the signature then fails.
    let cut = bytes.len()
        - 1
        - bytes[..bytes.len() - 1]
            .iter()
            .rev()
            .position(|&b| b == b'\n')
            .unwrap();
    fs::write(&mp, &bytes[..cut + 1]).unwrap();
    let o = run(t.verify(&k));
    assert_eq!(o.code, 1, "{}", o.stderr);
}

#[test]
fn signature_by_an_unknown_key_fails() {
    let (t, _hq) = Tree::signed();
    let other = t.key("other");
    let o = run(t.verify(&other));
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("no file was checked"), "{}", o.stderr);
    assert!(
        o.stderr
            .contains("0 valid signature(s) by trusted keys, 1 required"),
        "{}",
        o.stderr
    );
}

#[test]
fn no_key_is_a_usage_error() {
    let (t, _k) = Tree::signed();
    let o = run({
        let mut c = Command::cargo_bin("offgrid").unwrap();
        c.arg("verify").arg(&t.root);
        c
    });
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("error: no trusted key given"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("help: pass --pubkey"), "{}", o.stderr);
    assert!(o.stdout.is_empty());
}

#[test]
fn pubkey_and_trust_are_exclusive() {
    let (t, k) = Tree::signed();
    let mut c = t.verify(&k);
    c.arg("--trust").arg(t.base.join("trust.toml"));
    let o = run(c);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("cannot be used with"), "{}", o.stderr);
}

fn trust_file(t: &Tree, threshold: usize, keys: &[&Key]) -> PathBuf {
    let mut s = format!("threshold = {threshold}\n");
    for k in keys {
        s.push_str(&format!("\n[[keys]]\npubkey = \"{}\"\n", key_line(k)));
    }
    let p = t.base.join("trust.toml");
    fs::write(&p, s).unwrap();
    p
}

#[test]
fn two_of_three_threshold() {
    let t = tree();
    let (a, b, c) = (t.key("a"), t.key("b"), t.key("c"));
    let policy = trust_file(&t, 2, &[&a, &b, &c]);
    let verify = || {
        let mut cmd = Command::cargo_bin("offgrid").unwrap();
        cmd.arg("verify").arg(&t.root).arg("--trust").arg(&policy);
        run(cmd)
    };
    t.sign(&a);
    let o = verify();
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("1 valid signature(s) by trusted keys, 2 required"),
        "{}",
        o.stderr
    );
    t.sign(&c);
    let o = verify();
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains(&a.id) && o.stdout.contains(&c.id),
        "{}",
        o.stdout
    );
    // A further signature by an untrusted key does not count, and is said so.
    let d = t.key("d");
    t.sign(&d);
    let o = verify();
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!(
            "warning: signature 'signatures/{}.minisig' (key {}) is by a key you did not trust",
            d.id, d.id
        )),
        "{}",
        o.stderr
    );
    fs::remove_file(t.path(&format!("signatures/{}.minisig", d.id))).unwrap();
    // A signature copied under a second name still counts once.
    fs::copy(
        t.path(&format!("signatures/{}.minisig", a.id)),
        t.path("signatures/copy.minisig"),
    )
    .unwrap();
    fs::remove_file(t.path(&format!("signatures/{}.minisig", c.id))).unwrap();
    let o = verify();
    assert_eq!(o.code, 1, "{}", o.stderr);
}

#[cfg(unix)]
#[test]
fn symlink_in_place_of_a_file_fails() {
    let (t, k) = Tree::signed();
    let readme = t.path("README.txt");
    let real = t.base.join("README.txt");
    fs::rename(&readme, &real).unwrap();
    std::os::unix::fs::symlink(&real, &readme).unwrap();
    let o = run(t.verify(&k));
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("'README.txt': expected a regular file, found a symlink"),
        "{}",
        o.stderr
    );
    let mut c = t.verify(&k);
    c.arg("--json");
    let r = records(&run(c).stdout);
    let f = of_type(&r, "file")
        .into_iter()
        .find(|f| f["path"] == "README.txt")
        .unwrap();
    assert_eq!(f["status"], "not-a-file");
    assert_eq!(f["expected"], "file");
    assert_eq!(f["found"], "symlink");
    // A linked folder on the way is refused too, even though the bytes behind it match.
    let bin = t.path("bin");
    let real = t.base.join("bin");
    fs::rename(&bin, &real).unwrap();
    std::os::unix::fs::symlink(&real, &bin).unwrap();
    let o = run(t.verify(&k));
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains(
            "'bin/linux-x86_64/offgrid': expected a regular file, found a symlinked folder 'bin'"
        ),
        "{}",
        o.stderr
    );
}

#[test]
fn folder_in_place_of_a_file_fails() {
    let (t, k) = Tree::signed();
    fs::remove_file(t.path("README.txt")).unwrap();
    fs::create_dir_all(t.path("README.txt/inner")).unwrap();
    let o = run(t.verify(&k));
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("'README.txt': expected a regular file, found a directory"),
        "{}",
        o.stderr
    );
    assert!(!o.stderr.contains("inner"), "{}", o.stderr);
}

#[test]
fn missing_manifest_is_not_a_complete_tree() {
    let (t, k) = Tree::signed();
    fs::remove_file(t.path("manifest.toml")).unwrap();
    let o = run(t.verify(&k));
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!(
            "error: not a complete offgrid tree: '{}' is missing",
            t.path("manifest.toml").display()
        )),
        "{}",
        o.stderr
    );
    let mut c = t.verify(&k);
    c.arg("--json");
    let o = run(c);
    assert_eq!(o.code, 1);
    let s = summary(&records(&o.stdout));
    assert_eq!(s["verified"], false);
    assert!(s["error"]
        .as_str()
        .unwrap()
        .contains("not a complete offgrid tree"));
}

#[test]
fn unsigned_tree_fails() {
    let (t, k) = Tree::signed();
    fs::remove_file(t.path(&format!("signatures/{}.minisig", k.id))).unwrap();
    let o = run(t.verify(&k));
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("holds no .minisig signature"),
        "{}",
        o.stderr
    );
}

#[test]
fn a_file_or_nothing_is_a_usage_error() {
    let (t, k) = Tree::signed();
    let mut c = Command::cargo_bin("offgrid").unwrap();
    c.arg("verify")
        .arg(t.path("README.txt"))
        .arg("--pubkey")
        .arg(&k.public);
    let o = run(c);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("is not an offgrid update pack"),
        "{}",
        o.stderr
    );
    let mut c = Command::cargo_bin("offgrid").unwrap();
    c.arg("verify")
        .arg(t.base.join("nowhere"))
        .arg("--pubkey")
        .arg(&k.public);
    let o = run(c);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("does not exist"), "{}", o.stderr);
}

#[test]
fn unreadable_public_key_is_a_usage_error() {
    let (t, _k) = Tree::signed();
    let mut c = Command::cargo_bin("offgrid").unwrap();
    c.arg("verify")
        .arg(&t.root)
        .arg("--pubkey")
        .arg(t.base.join("nope.pub"));
    let o = run(c);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("nope.pub"), "{}", o.stderr);
}

/// What pack-usb writes verifies, and a flipped bit in it does not (pack and verify agree
/// on the manifest, the chunking and the signatures).
#[test]
fn a_tree_written_by_pack_usb_verifies() {
    let ws = util::Ws::new();
    ws.model("in/tiny.gguf", 4 * 1024 + 100, 3);
    ws.file("CHANGES.md", b"# 2.0\n");
    ws.offgrid(&[
        "pack-usb",
        "stick",
        "--release",
        "2.0",
        "--bundle-id",
        "org.example.ship",
        "--model",
        "in/tiny.gguf",
        "--changelog",
        "CHANGES.md",
        "--sign-with",
        "hq.key",
    ])
    .success();
    let verify = || {
        let mut c = Command::cargo_bin("offgrid").unwrap();
        c.current_dir(ws.dir.path())
            .args(["verify", "stick", "--pubkey", "hq.pub", "--json"]);
        run(c)
    };
    let o = verify();
    assert_eq!(o.code, 0, "{}", o.stderr);
    let r = records(&o.stdout);
    let s = summary(&r);
    assert_eq!(s["verified"], true);
    assert_eq!(s["release"], "2.0");
    assert_eq!(s["bundle_id"], "org.example.ship");
    assert!(
        of_type(&r, "extra").is_empty(),
        "pack-usb writes no extras: {r:?}"
    );
    let m = Manifest::parse(&fs::read(ws.path("stick/manifest.toml")).unwrap()).unwrap();
    let model = m.models().next().unwrap().path.clone();
    assert_eq!(of_type(&r, "file").len(), m.files.len());
    let p = ws.path("stick").join(&model);
    let mut bytes = fs::read(&p).unwrap();
    let at = bytes.len() - 1;
    bytes[at] ^= 0x01;
    fs::write(&p, &bytes).unwrap();
    let o = verify();
    assert_eq!(o.code, 1, "{}", o.stderr);
    let r = records(&o.stdout);
    let bad: Vec<&Value> = of_type(&r, "file")
        .into_iter()
        .filter(|f| f["status"] != "ok")
        .collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0]["path"], model.as_str());
    assert_eq!(
        bad[0]["ranges"],
        serde_json::json!([[4 << 20, bytes.len()]])
    );
}
