//! The launcher scripts of a packed tree, run for real with `sh`: a fake `uname` on PATH
//! plays each host, and the packed "binaries" are shell scripts that print their platform,
//! their arguments and OFFGRID_PORTABLE, so each test sees which one run.sh picked and
//! what it passed.

use crate::util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use util::Ws;

const PLATFORMS: &[&str] = &["linux-x86_64", "linux-aarch64", "macos-aarch64"];

/// Packs a stick whose binaries are fake: each prints `platform=P`, `self=$0`, one
/// `arg=A` line per argument and `portable=$OFFGRID_PORTABLE`.
fn fake_stick(ws: &Ws) -> PathBuf {
    let mut args: Vec<String> = vec![
        "pack-usb".into(),
        "stick".into(),
        "--release".into(),
        "1.0".into(),
        "--no-host-binary".into(),
        "--sign-with".into(),
        "hq.key".into(),
    ];
    for p in PLATFORMS {
        let script = format!(
            "#!/bin/sh\necho \"platform={p}\"\necho \"self=$0\"\nfor a in \"$@\"; do echo \"arg=$a\"; done\necho \"portable=$OFFGRID_PORTABLE\"\nexit 7\n"
        );
        ws.file(&format!("fake/{p}"), script.as_bytes());
        args.push("--binary".into());
        args.push(format!("{p}=fake/{p}"));
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    ws.offgrid(&a).success();
    ws.path("stick")
}

/// A folder holding a fake `uname` that answers `-s` and `-m` as told.
fn fake_uname(ws: &Ws, s: &str, m: &str) -> PathBuf {
    let dir = ws.path(&format!("uname-{s}-{m}"));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("uname");
    std::fs::write(
        &p,
        format!("#!/bin/sh\ncase \"$1\" in -s) echo {s} ;; -m) echo {m} ;; *) echo {s} ;; esac\n"),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

fn run_script(ws: &Ws, script: &Path, uname: &Path, args: &[&str]) -> Output {
    let path = format!(
        "{}:{}",
        uname.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("sh")
        .arg(script)
        .args(args)
        .current_dir(ws.dir.path())
        .env("PATH", path)
        .env_remove("OFFGRID_PORTABLE")
        // install.sh writes completions and a man page under HOME: keep them in the test.
        .env("HOME", ws.dir.path())
        .env_remove("XDG_DATA_HOME")
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap()
}

fn lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn run_sh_picks_the_binary_for_the_host() {
    let ws = Ws::new();
    let stick = fake_stick(&ws);
    let root = std::fs::canonicalize(&stick).unwrap();
    for (s, m, want) in [
        ("Linux", "x86_64", "linux-x86_64"),
        ("Linux", "amd64", "linux-x86_64"),
        ("Linux", "aarch64", "linux-aarch64"),
        ("Linux", "arm64", "linux-aarch64"),
        ("Darwin", "arm64", "macos-aarch64"),
    ] {
        let u = fake_uname(&ws, s, m);
        let o = run_script(
            &ws,
            &stick.join("run.sh"),
            &u,
            &["verify", ".", "--pubkey", "my key.pub"],
        );
        assert_eq!(
            o.status.code(),
            Some(7),
            "{s} {m}: the binary's exit code is passed on: {o:?}"
        );
        let l = lines(&o);
        assert_eq!(l[0], format!("platform={want}"), "{s} {m}: {l:?}");
        assert_eq!(
            l[1],
            format!("self={}/bin/{want}/offgrid", root.display()),
            "ran in place: {l:?}"
        );
        assert_eq!(
            &l[2..6],
            ["arg=verify", "arg=.", "arg=--pubkey", "arg=my key.pub"],
            "{l:?}"
        );
        assert_eq!(l[6], format!("portable={}", root.display()), "{l:?}");
    }
}

#[test]
fn run_sh_with_no_arguments_runs_the_default_command() {
    let ws = Ws::new();
    let stick = fake_stick(&ws);
    let u = fake_uname(&ws, "Linux", "x86_64");
    let o = run_script(&ws, &stick.join("run.sh"), &u, &[]);
    let l = lines(&o);
    assert_eq!(l[0], "platform=linux-x86_64");
    assert_eq!(l[2], "arg=run", "{l:?}");
    assert!(l[3].starts_with("portable="), "exactly one argument: {l:?}");
}

#[test]
fn run_sh_names_the_platforms_it_has_when_the_host_is_missing() {
    let ws = Ws::new();
    let stick = fake_stick(&ws);
    for (s, m, plat) in [
        ("FreeBSD", "amd64", "freebsd-x86_64"),
        ("Linux", "armv7l", "linux-armv7"),
        ("Darwin", "x86_64", "macos-x86_64"),
    ] {
        let u = fake_uname(&ws, s, m);
        let o = run_script(&ws, &stick.join("run.sh"), &u, &["run"]);
        assert_eq!(o.status.code(), Some(2), "{o:?}");
        assert!(o.stdout.is_empty());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("no offgrid for this computer ({plat}")),
            "{err}"
        );
        assert!(
            err.contains("platforms on this stick: linux-aarch64 linux-x86_64 macos-aarch64"),
            "{err}"
        );
    }
}

#[test]
fn run_sh_runs_a_copy_when_the_binary_is_not_executable() {
    let ws = Ws::new();
    let stick = fake_stick(&ws);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let bin = stick.join("bin/linux-aarch64/offgrid");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let tmp = ws.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let u = fake_uname(&ws, "Linux", "aarch64");
    let path = format!(
        "{}:{}",
        u.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = Command::new("sh")
        .arg(stick.join("run.sh"))
        .args(["models", "--json"])
        .env("PATH", path)
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(7), "{o:?}");
    let l = lines(&o);
    assert_eq!(l[0], "platform=linux-aarch64");
    let tmp_real = std::fs::canonicalize(&tmp).unwrap();
    assert!(
        l[1].starts_with(&format!("self={}/offgrid.", tmp.display()))
            || l[1].starts_with(&format!("self={}/offgrid.", tmp_real.display())),
        "ran a private copy: {l:?}"
    );
    assert_eq!(&l[2..4], ["arg=models", "arg=--json"]);
    let root = std::fs::canonicalize(&stick).unwrap();
    assert_eq!(
        l[4],
        format!("portable={}", root.display()),
        "portable is the stick, not the copy"
    );
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "the copy is removed afterwards"
    );
}

#[test]
fn install_sh_runs_install_from_the_stick() {
    let ws = Ws::new();
    let stick = fake_stick(&ws);
    let root = std::fs::canonicalize(&stick).unwrap();
    let u = fake_uname(&ws, "Darwin", "arm64");
    let o = run_script(&ws, &stick.join("install.sh"), &u, &["--pubkey", "hq.pub"]);
    let l = lines(&o);
    assert_eq!(l[0], "platform=macos-aarch64");
    let want = [
        "arg=install".to_owned(),
        "arg=--from".to_owned(),
        format!("arg={}", root.display()),
        "arg=--pubkey".to_owned(),
        "arg=hq.pub".to_owned(),
    ];
    assert_eq!(&l[2..7], want, "{l:?}");
    assert_eq!(
        l[7], "portable=",
        "install does not run in portable mode: {l:?}"
    );
}

#[test]
fn bat_files_are_crlf_and_name_the_platforms() {
    let ws = Ws::new();
    let stick = fake_stick(&ws);
    let install = std::fs::read_to_string(stick.join("install.bat")).unwrap();
    assert!(
        install.contains("\"%BIN%\" install --from \"%HERE%\" %*\r\n"),
        "{install}"
    );
    assert!(!install.contains("OFFGRID_PORTABLE"));
    assert!(install.contains("platforms on this stick: linux-aarch64 linux-x86_64 macos-aarch64"));
    let bat = std::fs::read_to_string(stick.join("run.bat")).unwrap();
    let segs: Vec<&str> = bat.split('\n').collect();
    assert!(
        segs.len() > 10 && segs.last() == Some(&""),
        "ends with a line end"
    );
    let n = segs.len() - 1;
    assert!(
        segs[..n].iter().all(|l| l.ends_with('\r')),
        "every line ends in CRLF"
    );
    assert!(bat.contains("platforms on this stick: linux-aarch64 linux-x86_64 macos-aarch64"));
    assert!(bat.contains("OFFGRID_PORTABLE=%HERE%"));
    assert!(bat.contains("\"%BIN%\" run"));
    assert!(!bat.contains("{{"));
}
