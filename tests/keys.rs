//! `offgrid keygen` through the real binary: unencrypted and password-protected key
//! pairs, refusal to overwrite, `--force`, the no-terminal error, JSON output, and the
//! keys it makes working with the stock `minisign` tool and with the library.

use std::io::Write;
use std::path::Path;
use std::process::{Command as StdCommand, Stdio};

use assert_cmd::Command;
use offgrid::keys::{KeyError, PublicKey, SecretKey};
use predicates::prelude::*;

fn offgrid() -> Command {
    let mut c = Command::cargo_bin("offgrid").unwrap();
    c.env_remove("OFFGRID_PASSWORD");
    c
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs the stock minisign with `stdin`; true when it succeeded.
fn minisign(args: &[&str], stdin: &str) -> bool {
    let mut child = StdCommand::new("minisign")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the stock minisign tool is installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait().unwrap().success()
}

fn field(stdout: &str, name: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no '{name}' in {stdout}"))
        .trim()
        .to_owned()
}

#[test]
fn unencrypted_round_trip_and_stock_minisign_signs_with_it() {
    let d = tempfile::tempdir().unwrap();
    let (sk, pk) = (d.path().join("hq.key"), d.path().join("hq.pub"));
    let out = offgrid()
        .args([
            "keygen",
            "--secret",
            s(&sk),
            "--public",
            s(&pk),
            "--unencrypted",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    let id = field(&out, "key id:");
    let fp = field(&out, "fingerprint:");
    assert!(out.contains("NOT encrypted"), "{out}");
    assert_eq!(id.len(), 16);
    assert!(id
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
    // the key id is the one minisign prints in the public key file
    let pub_text = std::fs::read_to_string(&pk).unwrap();
    assert_eq!(
        pub_text.lines().next().unwrap(),
        format!("untrusted comment: minisign public key {id}")
    );
    let key = PublicKey::load(&pk).unwrap();
    assert_eq!(key.key_id(), id);
    assert_eq!(key.fingerprint(), fp);
    let secret = SecretKey::load(&sk, &mut || panic!("not encrypted")).unwrap();
    assert_eq!(secret.public, key);

    // the stock tool signs with our secret key and verifies with our public key
    let f = d.path().join("file.txt");
    std::fs::write(&f, "payload\n").unwrap();
    assert!(minisign(&["-S", "-W", "-s", s(&sk), "-m", s(&f)], ""));
    assert!(minisign(&["-V", "-p", s(&pk), "-m", s(&f)], ""));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&sk).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the secret key is private to its owner");
    }
}

#[test]
fn password_from_the_environment() {
    let d = tempfile::tempdir().unwrap();
    let (sk, pk) = (d.path().join("hq.key"), d.path().join("hq.pub"));
    offgrid()
        .env("OFFGRID_PASSWORD", "over and out")
        .args(["keygen", "-s", s(&sk), "-p", s(&pk), "--json"])
        .assert()
        .success()
        .stdout(predicate::str::contains(r#""type":"key""#))
        .stdout(predicate::str::contains(r#""encrypted":true"#));
    let text = std::fs::read_to_string(&sk).unwrap();
    assert!(text.starts_with("untrusted comment: minisign encrypted secret key\n"));
    let e = SecretKey::load(&sk, &mut || Ok("over and in".into())).unwrap_err();
    assert!(matches!(e, KeyError::WrongPassword { .. }), "{e}");
    // the stock tool decrypts it with the right password (read from stdin); the library's
    // load with the right password is covered by the terminal test (each costs 1 GiB)
    let f = d.path().join("file.txt");
    std::fs::write(&f, "payload\n").unwrap();
    assert!(minisign(
        &["-S", "-s", s(&sk), "-m", s(&f)],
        "over and out\n"
    ));
    assert!(minisign(&["-V", "-p", s(&pk), "-m", s(&f)], ""));
}

#[test]
fn refuses_to_overwrite_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let (sk, pk) = (d.path().join("hq.key"), d.path().join("hq.pub"));
    // an existing secret key: refused, the public key is not written either
    std::fs::write(&sk, "precious").unwrap();
    offgrid()
        .args(["keygen", "-s", s(&sk), "-p", s(&pk), "--unencrypted"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("hq.key' already exists"))
        .stderr(predicate::str::contains(
            "help: choose another name, or pass --force",
        ));
    assert_eq!(std::fs::read_to_string(&sk).unwrap(), "precious");
    assert!(!pk.exists());
    // an existing public key only: the secret key is not written
    std::fs::remove_file(&sk).unwrap();
    std::fs::write(&pk, "old").unwrap();
    offgrid()
        .args(["keygen", "-s", s(&sk), "-p", s(&pk), "--unencrypted"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("hq.pub' already exists"));
    assert!(!sk.exists());
    assert_eq!(std::fs::read_to_string(&pk).unwrap(), "old");
    // no temporary files left behind
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
}

#[test]
fn force_replaces_both_files() {
    let d = tempfile::tempdir().unwrap();
    let (sk, pk) = (d.path().join("hq.key"), d.path().join("hq.pub"));
    offgrid()
        .args(["keygen", "-s", s(&sk), "-p", s(&pk), "--unencrypted"])
        .assert()
        .success();
    let first = PublicKey::load(&pk).unwrap();
    offgrid()
        .args(["keygen", "-s", s(&sk), "-p", s(&pk), "--unencrypted"])
        .assert()
        .code(2);
    offgrid()
        .args([
            "keygen",
            "-s",
            s(&sk),
            "-p",
            s(&pk),
            "--unencrypted",
            "--force",
        ])
        .assert()
        .success();
    let second = PublicKey::load(&pk).unwrap();
    assert_ne!(first, second);
    let secret = SecretKey::load(&sk, &mut || panic!("not encrypted")).unwrap();
    assert_eq!(secret.public, second, "the two files belong together");
}

#[test]
fn no_terminal_and_no_password_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let (sk, pk) = (d.path().join("hq.key"), d.path().join("hq.pub"));
    offgrid()
        .args(["keygen", "-s", s(&sk), "-p", s(&pk)])
        .write_stdin("typed into a pipe\n")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "no password for the new secret key",
        ))
        .stderr(predicate::str::contains("OFFGRID_PASSWORD"))
        .stderr(predicate::str::contains("--unencrypted"));
    assert!(!sk.exists() && !pk.exists());
}

#[test]
fn empty_password_and_same_paths_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let (sk, pk) = (d.path().join("hq.key"), d.path().join("hq.pub"));
    offgrid()
        .env("OFFGRID_PASSWORD", "")
        .args(["keygen", "-s", s(&sk), "-p", s(&pk)])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("password is empty"));
    assert!(!sk.exists() && !pk.exists());
    offgrid()
        .args(["keygen", "-s", s(&sk), "-p", s(&sk), "--unencrypted"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("are the same"));
    assert!(!sk.exists());
    // the same file spelled two ways, even with --force
    std::fs::create_dir(d.path().join("sub")).unwrap();
    let dotted = d.path().join("sub/../hq.key");
    offgrid()
        .args([
            "keygen",
            "-s",
            s(&sk),
            "-p",
            s(&dotted),
            "--unencrypted",
            "--force",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("are the same"));
    assert!(!sk.exists());
}

#[test]
fn missing_directory_names_the_file() {
    let d = tempfile::tempdir().unwrap();
    let sk = d.path().join("no/such/dir/hq.key");
    let pk = d.path().join("hq.pub");
    offgrid()
        .args(["keygen", "-s", s(&sk), "-p", s(&pk), "--unencrypted"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot write"))
        .stderr(predicate::str::contains("hq.key"));
    assert!(!pk.exists());
}

/// Runs `offgrid ARGS` on a pseudo-terminal (util-linux `script`), typing `typed`.
fn on_a_terminal(args: &str, typed: &str) -> (bool, String) {
    let mut t = crate::util::Terminal::start(Path::new("."), args, &[]);
    t.type_text(typed);
    let (code, seen) = t.finish();
    (code == Some(0), seen)
}

#[test]
fn password_typed_twice_on_the_terminal() {
    let d = tempfile::tempdir().unwrap();
    let (sk, pk) = (d.path().join("hq.key"), d.path().join("hq.pub"));
    let args = format!("keygen -s '{}' -p '{}'", s(&sk), s(&pk));
    let (ok, out) = on_a_terminal(&args, "alpha\nbravo\n");
    assert!(!ok, "{out}");
    assert!(out.contains("Password for the new secret key"), "{out}");
    assert!(out.contains("the two passwords differ"), "{out}");
    assert!(!sk.exists() && !pk.exists());

    let (ok, out) = on_a_terminal(&args, "alpha\nalpha\n");
    assert!(ok, "{out}");
    assert!(out.contains("(encrypted)"), "{out}");
    let key = SecretKey::load(&sk, &mut || Ok("alpha".into())).unwrap();
    assert_eq!(key.public, PublicKey::load(&pk).unwrap());
}
