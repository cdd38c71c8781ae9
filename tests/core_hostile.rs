//! Named hostile vectors for the core readers (issue 8), each carrying its expected
//! outcome in its name and assertions: untrusted bytes cost nothing before a signature
//! holds (peak RSS measured with `/usr/bin/time`), no message floods stderr, and no path
//! that is not a regular file makes a command hang (every child is killed after a
//! timeout, and the test then fails).

use crate::util;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use util::*;

/// Peak RSS an untrusted input may cost before its signature holds.
const MAX_RSS_KIB: u64 = 64 * 1024;
/// Most stderr an untrusted input may cause.
const MAX_STDERR: usize = 64 * 1024;
/// Longest any of these commands may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `cmd` to completion within [`TIMEOUT`], killing it (and failing) otherwise.
fn run_bounded(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {TIMEOUT:?} (it hangs)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `offgrid ARGS` under `/usr/bin/time`: the output and the peak RSS in KiB.
fn offgrid_measured(dir: &Path, home: &Path, args: &[&std::ffi::OsStr]) -> (Output, u64) {
    let rss_file = dir.join(".rss");
    let mut c = Command::new("/usr/bin/time");
    c.arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .arg(offgrid_bin())
        .args(args)
        .current_dir(dir)
        .env("OFFGRID_HOME", home)
        .env("OFFGRID_HQ", dir.join("hq"))
        .env_remove("OFFGRID_FAULT_AT");
    let out = run_bounded(c);
    let rss: u64 = fs::read_to_string(&rss_file)
        .expect("/usr/bin/time wrote its report")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .next_back()
        .expect("a peak RSS figure");
    (out, rss)
}

fn offgrid(dir: &Path, args: &[&std::ffi::OsStr]) -> Output {
    let mut c = Command::new(offgrid_bin());
    c.args(args)
        .current_dir(dir)
        .env("OFFGRID_HOME", dir.join("home"))
        .env("OFFGRID_HQ", dir.join("hq"))
        .env_remove("OFFGRID_FAULT_AT");
    run_bounded(c)
}

macro_rules! args {
    ($($a:expr),* $(,)?) => { &[$(std::ffi::OsStr::new($a)),*] };
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A TOML array `x=[0,0,…]` of about `bytes` bytes on one line: what made the TOML
/// parser allocate about 90 bytes per input byte.
fn toml_bomb(bytes: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(bytes + 8);
    v.extend_from_slice(b"x=[");
    while v.len() < bytes {
        v.extend_from_slice(b"0,");
    }
    v.extend_from_slice(b"0]\n");
    v
}

/// A stick whose manifest is `manifest`, signed by the trusted key over other bytes (so
/// a signature by a trusted key is there but cannot hold).
fn hostile_stick(dir: &Path, key: &Path, manifest: &[u8]) -> PathBuf {
    let root = dir.join("stick");
    fs::create_dir_all(root.join("signatures")).unwrap();
    let other = dir.join("other.toml");
    fs::write(&other, b"format = \"offgrid-bundle/1\"\n").unwrap();
    sign_file(&other, key, "offgrid x", &root.join("signatures"));
    fs::write(root.join("manifest.toml"), manifest).unwrap();
    root
}

#[test]
fn unsigned_24mib_toml_array_stick_is_refused_before_parsing_within_64mib() {
    let d = tempdir(false);
    let (key, pubkey) = keypair(d.path(), "hq");
    let stick = hostile_stick(d.path(), &key, &toml_bomb(24 << 20));
    let (out, rss) = offgrid_measured(
        d.path(),
        &d.path().join("home"),
        args!["verify", stick.as_os_str(), "--pubkey", pubkey.as_os_str()],
    );
    let err = stderr(&out);
    eprintln!(
        "verify of a 24 MiB TOML bomb: peak RSS {rss} KiB, stderr {} bytes",
        out.stderr.len()
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("do not hold"), "{err}");
    assert!(err.contains("does not match the manifest bytes"), "{err}");
    assert!(rss <= MAX_RSS_KIB, "peak RSS {rss} KiB");
    assert!(out.stderr.len() <= MAX_STDERR, "{} bytes", out.stderr.len());
}

/// `inspect` parses an unsigned manifest on purpose (it verifies nothing); each hostile
/// shape is refused before the parser runs, or parsed within the budget.
#[test]
fn inspect_of_unsigned_toml_bombs_stays_within_64mib() {
    let d = tempdir(false);
    let stick = d.path().join("stick");
    fs::create_dir_all(&stick).unwrap();
    let deep = format!("x={}{}\n", "[".repeat(5000), "]".repeat(5000));
    let dotted = "a.b.c.d.e.f.g=1\n".repeat(400_000);
    let mut long_string = b"format=\"".to_vec();
    long_string.extend(std::iter::repeat_n(b'a', (8 << 20) - 100));
    long_string.extend(b"\"\n");
    let vectors: [(&str, Vec<u8>, &str); 6] = [
        (
            "24 MiB array",
            toml_bomb(24 << 20),
            "read without a signature",
        ),
        (
            "199,000 values, parsed",
            toml_bomb(398_000),
            "format: is missing",
        ),
        (
            "7.9 MiB array",
            toml_bomb((8 << 20) - 1000),
            "more than 200000 values",
        ),
        ("deep nesting", deep.into_bytes(), "deeper than 32"),
        (
            "dotted keys",
            dotted.into_bytes(),
            "more than 200000 values",
        ),
        ("one 8 MiB string", long_string, "format"),
    ];
    for (name, bytes, expect) in vectors {
        fs::write(stick.join("manifest.toml"), &bytes).unwrap();
        let (out, rss) = offgrid_measured(
            d.path(),
            &d.path().join("home"),
            args!["inspect", stick.as_os_str()],
        );
        let err = stderr(&out);
        eprintln!(
            "inspect of {name}: peak RSS {rss} KiB, stderr {} bytes",
            out.stderr.len()
        );
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains("manifest.toml"), "{name}: {err}");
        assert!(err.contains(expect), "{name}: {err}");
        assert!(rss <= MAX_RSS_KIB, "{name}: peak RSS {rss} KiB");
        assert!(
            out.stderr.len() <= MAX_STDERR,
            "{name}: {} bytes",
            out.stderr.len()
        );
    }
}

/// A receipt from a site met for the first time is signed by a key nobody vouched for:
/// its parse is bounded like any unsigned document's.
#[test]
fn first_use_receipt_that_is_a_toml_bomb_is_refused_within_64mib() {
    let d = tempdir(false);
    let (key, pubkey) = keypair(d.path(), "site");
    let id = key_id(&pubkey);
    let dir = d.path().join("stick").join("receipts");
    fs::create_dir_all(&dir).unwrap();
    let receipt = dir.join(format!("{id}.toml"));
    fs::write(&receipt, toml_bomb((1 << 20) - 100)).unwrap();
    let sig = sign_file(&receipt, &key, "offgrid receipt", &dir);
    fs::rename(sig, dir.join(format!("{id}.toml.minisig"))).unwrap();
    fs::copy(&pubkey, dir.join(format!("{id}.pub"))).unwrap();
    let hq = d.path().join("hq");
    let (out, rss) = offgrid_measured(
        d.path(),
        &d.path().join("home"),
        args![
            "receipts",
            "import",
            dir.as_os_str(),
            "--history",
            hq.as_os_str()
        ],
    );
    let err = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    eprintln!("receipts import of a 1 MiB TOML bomb: peak RSS {rss} KiB");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{id}.toml")), "{err}");
    assert!(err.contains("more than 200000 values"), "{err}");
    assert!(rss <= MAX_RSS_KIB, "peak RSS {rss} KiB");
    assert!(out.stderr.len() <= MAX_STDERR, "{} bytes", out.stderr.len());
}

#[test]
fn one_line_60mib_manifest_is_refused_with_a_short_message() {
    let d = tempdir(false);
    let (key, pubkey) = keypair(d.path(), "hq");
    let mut line = b"format = \"".to_vec();
    line.resize(60 << 20, b'a');
    let stick = hostile_stick(d.path(), &key, &line);
    let out = offgrid(
        d.path(),
        args!["verify", stick.as_os_str(), "--pubkey", pubkey.as_os_str()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(out.stderr.len() <= MAX_STDERR, "{} bytes", out.stderr.len());
}

#[test]
fn one_line_trust_file_error_is_cut_to_a_short_message() {
    let d = tempdir(false);
    let trust = d.path().join("trust.toml");
    let mut t = b"threshold = 1\nx = \"".to_vec();
    t.resize(900 << 10, b'a');
    t.extend_from_slice(b"\x1b[2J");
    fs::write(&trust, t).unwrap();
    fs::create_dir(d.path().join("stick")).unwrap();
    let out = offgrid(d.path(), args!["verify", "stick", "--trust", "trust.toml"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("trust.toml"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "control characters reach the terminal"
    );
    assert!(out.stderr.len() <= 4096, "{} bytes", out.stderr.len());
}

/// A world with 1.0.0 installed and a pack whose pack manifest is a 24 MiB TOML array,
/// signed by the trusted key over other bytes.
#[test]
fn unsigned_24mib_pack_manifest_is_refused_by_apply_update_within_64mib() {
    let w = world(4096);
    w.cmd()
        .args(["install", "--from", "v1", "--pubkey"])
        .arg(&w.pubkey)
        .assert()
        .success();
    let stage = w.p("stage");
    fs::create_dir_all(stage.join("signatures")).unwrap();
    fs::write(stage.join("offgrid-pack.toml"), toml_bomb(24 << 20)).unwrap();
    let other = w.p("other.toml");
    fs::write(&other, b"x = 1\n").unwrap();
    sign_file(&other, &w.key, "offgrid-pack x", &stage.join("signatures"));
    let sig = fs::read_dir(stage.join("signatures"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let pack = w.p("bomb.ogpack");
    let mut tar = Command::new("tar");
    tar.arg("-cf")
        .arg(&pack)
        .arg("-C")
        .arg(&stage)
        .arg("offgrid-pack.toml")
        .arg(Path::new("signatures").join(sig));
    assert!(run_bounded(tar).status.success());
    let (out, rss) = offgrid_measured(
        w.dir.path(),
        &w.home(),
        args!["apply-update", pack.as_os_str()],
    );
    let err = stderr(&out);
    eprintln!(
        "apply-update of a 24 MiB TOML bomb pack: peak RSS {rss} KiB, stderr {} bytes",
        out.stderr.len()
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("do not hold"), "{err}");
    assert!(
        err.contains(".minisig' (key "),
        "names the signature file: {err}"
    );
    assert!(err.contains("help:"), "{err}");
    assert!(rss <= MAX_RSS_KIB, "peak RSS {rss} KiB");
    assert!(out.stderr.len() <= MAX_STDERR, "{} bytes", out.stderr.len());
}

#[test]
fn pack_refusal_lists_every_signature_with_file_key_and_help() {
    let w = world(4096);
    make_pack(&w, "u.ogpack", &[]);
    let (_, other_pub) = keypair(w.dir.path(), "other");
    let out = w
        .cmd()
        .args(["verify", "u.ogpack", "--pubkey"])
        .arg(&other_pub)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let id = key_id(&w.pubkey);
    assert!(
        err.contains(&format!("(key {id}): made by a key you did not trust")),
        "{err}"
    );
    assert!(err.contains(&format!("{id}.minisig")), "{err}");
    assert!(err.contains("threshold not met"), "{err}");
    assert!(err.contains("help: check that --pubkey"), "{err}");
}

fn mkfifo(p: &Path) {
    let out = Command::new("mkfifo").arg(p).output().expect("mkfifo");
    assert!(out.status.success(), "{out:?}");
}

/// Asserts a command refused a FIFO: exit 2, path named, quickly.
fn assert_fifo_refused(out: &Output, fifo: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(fifo), "the path is named: {err}");
    assert!(
        err.contains("not a regular file") || err.contains("FIFO"),
        "{err}"
    );
}

#[test]
fn fifo_as_pubkey_is_refused_without_hanging() {
    let d = tempdir(false);
    mkfifo(&d.path().join("hq.pub"));
    fs::create_dir(d.path().join("stick")).unwrap();
    let out = offgrid(d.path(), args!["verify", "stick", "--pubkey", "hq.pub"]);
    assert_fifo_refused(&out, "hq.pub");
}

#[test]
fn fifo_as_trust_file_is_refused_without_hanging() {
    let d = tempdir(false);
    mkfifo(&d.path().join("trust.toml"));
    fs::create_dir(d.path().join("stick")).unwrap();
    let out = offgrid(d.path(), args!["verify", "stick", "--trust", "trust.toml"]);
    assert_fifo_refused(&out, "trust.toml");
}

#[test]
fn fifo_as_key_listed_in_trust_file_is_refused_without_hanging() {
    let d = tempdir(false);
    mkfifo(&d.path().join("k.pub"));
    fs::write(
        d.path().join("trust.toml"),
        "threshold = 1\n[[keys]]\nfile = \"k.pub\"\n",
    )
    .unwrap();
    fs::create_dir(d.path().join("stick")).unwrap();
    let out = offgrid(d.path(), args!["verify", "stick", "--trust", "trust.toml"]);
    assert_fifo_refused(&out, "k.pub");
}

#[test]
fn fifo_as_recipe_is_refused_without_hanging() {
    let d = tempdir(false);
    mkfifo(&d.path().join("recipe.toml"));
    let out = offgrid(
        d.path(),
        args!["pack-usb", "out", "--recipe", "recipe.toml"],
    );
    assert_fifo_refused(&out, "recipe.toml");
}

#[test]
fn fifo_as_update_pack_is_refused_without_hanging() {
    let w = world(4096);
    w.cmd()
        .args(["install", "--from", "v1", "--pubkey"])
        .arg(&w.pubkey)
        .assert()
        .success();
    mkfifo(&w.p("u.ogpack"));
    let mut c = w.std_cmd();
    c.args(["apply-update", "u.ogpack"]);
    let out = run_bounded(c);
    assert_fifo_refused(&out, "u.ogpack");
}

#[test]
fn fifo_as_manifest_on_a_stick_is_refused_without_hanging() {
    let d = tempdir(false);
    let (_, pubkey) = keypair(d.path(), "hq");
    fs::create_dir_all(d.path().join("stick/signatures")).unwrap();
    mkfifo(&d.path().join("stick/manifest.toml"));
    let out = offgrid(
        d.path(),
        args!["verify", "stick", "--pubkey", pubkey.as_os_str()],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("manifest.toml' is not a regular file"),
        "{err}"
    );
}

#[test]
fn fifo_as_model_to_run_is_refused_without_hanging() {
    let d = tempdir(false);
    let fifo = d.path().join("model.gguf");
    mkfifo(&fifo);
    let (tx, rx) = std::sync::mpsc::channel();
    let f = fifo.clone();
    std::thread::spawn(move || {
        let r = offgrid::models::ModelFile::from_path(&f, offgrid::models::Origin::Path)
            .map(|_| ())
            .map_err(|e| e.to_string());
        let _ = tx.send(r);
    });
    let r = rx
        .recv_timeout(TIMEOUT)
        .expect("reading a FIFO model hangs");
    let e = r.expect_err("a FIFO is not a model");
    assert!(e.contains("model.gguf"), "{e}");
    assert!(e.contains("not a regular file"), "{e}");
}
