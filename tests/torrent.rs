//! `offgrid serve` and `offgrid torrent` against real clients on loopback: a stick packed
//! by `pack-usb`, its torrent seeded by aria2c and downloaded by libtorrent (python3
//! bindings) with a direct peer address, then verified and installed; `offgrid serve` as
//! the only (BEP 19 web) seed of an aria2c download; the same info-hash from mktorrent
//! and (attributes aside) from libtorrent's `create_torrent`; and the HTTP endpoints
//! (Range, 416, HEAD, ETag, path escape, by sha256, rate cap, SIGTERM) over plain
//! TcpStreams. No DHT, LSD, PEX or UPnP; every process is killed on drop and every wait
//! has a timeout.

use crate::util;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use predicates::prelude::*;
use util::{http, sha, Ws};

/// Debian's python3, which has the libtorrent bindings (a pyenv python may not).
const PY: &str = "/usr/bin/python3";
const NAME: &str = "org.example.clinic-1.0";

/// A child process killed and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Waits for exit up to `t`; None on timeout.
    fn wait_timeout(&mut self, t: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + t;
        while Instant::now() < end {
            if let Some(s) = self.0.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A stick of release 1.0 with two models and a changelog, packed by `pack-usb`.
fn packed_stick() -> Ws {
    let ws = Ws::new();
    ws.model("in/triage.gguf", 700, 1);
    ws.model("in/small.gguf", 90, 2);
    ws.file("in/CHANGES.md", b"1.0: first release\n");
    ws.offgrid(&[
        "pack-usb",
        "stick",
        "--release",
        "1.0",
        "--bundle-id",
        "org.example.clinic",
        "--model",
        "in/triage.gguf",
        "--model",
        "in/small.gguf",
        "--changelog",
        "in/CHANGES.md",
        "--sign-with",
        "hq.key",
        // The running (debug) offgrid would add 100 MB to every stick.
        "--no-host-binary",
    ])
    .success();
    ws
}

/// `offgrid serve ARGS --listen 127.0.0.1:0`, its address read from its first line.
fn serve(ws: &Ws, args: &[&str]) -> (Proc, String, mpsc::Receiver<String>) {
    let mut c = Command::cargo_bin("offgrid").unwrap();
    c.current_dir(ws.dir.path())
        .env("NO_COLOR", "1")
        .arg("serve")
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let p = Proc(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut first = String::new();
        let _ = BufReader::new(stdout).read_line(&mut first);
        let _ = tx.send(first);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("serve printed its address");
    let addr = line
        .trim()
        .strip_prefix("serving on http://")
        .and_then(|s| s.strip_suffix('/'))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let (etx, erx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = etx.send(l);
        }
    });
    (p, addr, erx)
}

/// The v1 info-hash of a .torrent as libtorrent reads it.
fn lt_info_hash(torrent: &Path) -> String {
    let out = Command::new(PY)
        .args([
            "-c",
            "import libtorrent as lt,sys; print(str(lt.torrent_info(sys.argv[1]).info_hashes().v1))",
        ])
        .arg(torrent)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// `offgrid torrent ARGS`, returning the info-hash it printed.
fn make_torrent(ws: &Ws, args: &[&str]) -> String {
    let a = ws.offgrid(&[&["torrent"], args].concat()).success();
    let out = String::from_utf8(a.get_output().stdout.clone()).unwrap();
    out.lines()
        .find_map(|l| l.strip_prefix("info-hash: "))
        .expect("info-hash printed")
        .to_owned()
}

const NO_DISCOVERY: &[&str] = &[
    "--no-conf",
    "--enable-dht=false",
    "--enable-dht6=false",
    "--bt-enable-lpd=false",
    "--enable-peer-exchange=false",
    "--disable-ipv6",
    "--summary-interval=0",
    "--console-log-level=warn",
    "--bt-stop-timeout=0",
];

#[test]
fn aria2c_seeds_libtorrent_downloads_and_the_result_verifies_and_installs() {
    let ws = packed_stick();
    let ih = make_torrent(
        &ws,
        &[
            "stick",
            "-o",
            "rel.torrent",
            "--piece-size",
            "32K",
            "--pubkey",
            "hq.pub",
        ],
    );
    assert_eq!(ih, lt_info_hash(&ws.path("rel.torrent")));
    // The seeder's folder holds the tree under the torrent's name.
    std::fs::create_dir(ws.path("seed")).unwrap();
    std::os::unix::fs::symlink(ws.path("stick"), ws.path("seed").join(NAME)).unwrap();
    let port = free_port();
    let mut seeder = Proc(
        Command::new("aria2c")
            .args(NO_DISCOVERY)
            .arg(format!("--dir={}", ws.path("seed").display()))
            .args(["--check-integrity=true", "--seed-ratio=0.0"])
            .arg(format!("--listen-port={port}"))
            .arg(ws.path("rel.torrent"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("aria2c installed"),
    );
    std::fs::create_dir(ws.path("dl")).unwrap();
    let script = r#"
import libtorrent as lt, sys, time
tor, save, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = lt.session({'listen_interfaces': '127.0.0.1:0', 'enable_dht': False, 'enable_lsd': False,
                'enable_upnp': False, 'enable_natpmp': False,
                'enable_outgoing_utp': False, 'enable_incoming_utp': False})
h = s.add_torrent({'ti': lt.torrent_info(tor), 'save_path': save})
end = time.time() + 60
last = 0
while time.time() < end:
    st = h.status()
    if st.is_seeding:
        print('complete'); sys.exit(0)
    if time.time() - last > 1:
        h.connect_peer(('127.0.0.1', port)); last = time.time()
    time.sleep(0.1)
print('timed out at', h.status().progress); sys.exit(1)
"#;
    let mut leecher = Proc(
        Command::new(PY)
            .args(["-c", script])
            .arg(ws.path("rel.torrent"))
            .arg(ws.path("dl"))
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let st = leecher
        .wait_timeout(Duration::from_secs(90))
        .expect("libtorrent finished in time");
    let mut out = String::new();
    leecher
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(st.success(), "libtorrent: {out}");
    assert!(
        seeder.0.try_wait().unwrap().is_none(),
        "the seeder kept running"
    );
    drop(seeder);
    let got = ws.path("dl").join(NAME);
    ws.offgrid(&["verify", got.to_str().unwrap(), "--pubkey", "hq.pub"])
        .success()
        .stdout(predicate::str::contains(
            "verified release 1.0 of org.example.clinic",
        ));
    ws.offgrid(&[
        "install",
        "--from",
        got.to_str().unwrap(),
        "--pubkey",
        "hq.pub",
        "--home",
        "home",
    ])
    .success();
}

#[test]
fn offgrid_serve_alone_web_seeds_an_aria2c_download() {
    let ws = packed_stick();
    let (_srv, addr, _log) = serve(&ws, &["--stick", "stick"]);
    let seed = format!("http://{addr}/tree/");
    make_torrent(
        &ws,
        &[
            "stick",
            "-o",
            "ws.torrent",
            "--web-seed",
            &seed,
            "--piece-size",
            "64K",
        ],
    );
    let mut dl = Proc(
        Command::new("aria2c")
            .args(NO_DISCOVERY)
            .arg(format!("--dir={}", ws.path("dl").display()))
            .args(["--seed-time=0", "--max-tries=3", "--retry-wait=1"])
            .arg(format!("--listen-port={}", free_port()))
            .arg(ws.path("ws.torrent"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let st = dl
        .wait_timeout(Duration::from_secs(60))
        .expect("aria2c finished in time");
    let mut out = String::new();
    dl.0.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(st.success(), "aria2c: {out}");
    let got = ws.path("dl").join(NAME);
    ws.offgrid(&["verify", got.to_str().unwrap(), "--pubkey", "hq.pub"])
        .success();
    // The pack-usb run recorded release 1.0; the torrent was listed beside it.
    let rec = std::fs::read_to_string(
        ws.path("hq-history/releases/org.example.clinic/1.0/torrents.toml"),
    )
    .unwrap();
    assert!(rec.contains("kind = \"tree\""), "{rec}");
    assert!(rec.contains(&format!("name = \"{NAME}\"")), "{rec}");
}

#[test]
fn stock_tools_give_the_same_info_hash() {
    let ws = packed_stick();
    let ours = make_torrent(&ws, &["stick", "-o", "ours.torrent", "--piece-size", "32K"]);
    // mktorrent: same files, same order (paths sorted as bytes), same piece size.
    let out = Command::new("mktorrent")
        .args([
            "-l",
            "15",
            "-n",
            NAME,
            "-a",
            "http://127.0.0.1:1/announce",
            "-o",
        ])
        .arg(ws.path("mk.torrent"))
        .arg(ws.path("stick"))
        .output()
        .expect("mktorrent installed");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(ours, lt_info_hash(&ws.path("mk.torrent")));
    // libtorrent's create_torrent (v1 only): `add_files` lists files in directory order
    // and adds `attr: "x"` to executable ones (run.sh, install.sh), so its info-hash
    // differs; the same files added in byte order without attributes give ours.
    std::fs::create_dir(ws.path("lt")).unwrap();
    let copy = ws.path("lt").join(NAME);
    let st = Command::new("cp")
        .arg("-a")
        .arg(ws.path("stick"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    let script = r#"
import libtorrent as lt, sys, hashlib, os
root, parent = sys.argv[1], sys.argv[2]
name = os.path.basename(root)
paths = []
for d, _, names in os.walk(root):
    for f in names:
        paths.append(os.path.relpath(os.path.join(d, f), root))
paths.sort(key=lambda p: p.encode())
fs = lt.file_storage()
for p in paths:
    fs.add_file(name + '/' + p, os.path.getsize(os.path.join(root, p)))
t = lt.create_torrent(fs, 32768, lt.create_torrent.v1_only)
lt.set_piece_hashes(t, parent)
print(hashlib.sha1(lt.bencode(t.generate()[b'info'])).hexdigest())
fs2 = lt.file_storage()
lt.add_files(fs2, root)
t2 = lt.create_torrent(fs2, 32768, lt.create_torrent.v1_only)
lt.set_piece_hashes(t2, parent)
info = t2.generate()[b'info']
print(','.join(sorted(b'/'.join(f[b'path']).decode() for f in info[b'files'] if b'attr' in f)))
"#;
    let out = Command::new(PY)
        .args(["-c", script])
        .arg(&copy)
        .arg(ws.path("lt"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], ours, "libtorrent, sorted, no attr: {text}");
    assert_eq!(lines.get(1).copied(), Some("install.sh,run.sh"), "{text}");
}

#[test]
fn serve_answers_ranges_heads_etags_and_refuses_escapes() {
    let ws = packed_stick();
    // A file the manifest names, replaced by a link leaving the tree.
    ws.file("outside.txt", b"secret\n");
    let cl = ws.path("stick/CHANGELOG.txt");
    std::fs::remove_file(&cl).unwrap();
    std::os::unix::fs::symlink(ws.path("outside.txt"), &cl).unwrap();
    // A file the manifest does not name.
    ws.file("stick/notes.txt", b"mine\n");
    std::fs::create_dir(ws.path("packs")).unwrap();
    ws.file("packs/update.ogpack", &vec![7u8; 5000]);
    let (mut srv, addr, log) = serve(&ws, &["--stick", "stick", "--packs", "packs", "-v"]);
    let model = std::fs::read(ws.path("stick/models/triage.gguf")).unwrap();
    let len = model.len();
    let base = format!("/tree/{NAME}");

    let r = http(&addr, "GET", "/", &[]);
    assert_eq!(r.status, 200);
    let idx: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(idx["format"], "offgrid-serve/1");
    assert_eq!(idx["trees"][0]["name"], NAME);
    assert_eq!(idx["packs"][0]["size"], 5000);

    let r = http(&addr, "GET", &format!("{base}/models/triage.gguf"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, model);
    let etag = r.header("ETag").unwrap().to_owned();
    assert_eq!(r.header("Accept-Ranges"), Some("bytes"));

    let r = http(
        &addr,
        "GET",
        &format!("{base}/models/triage.gguf"),
        &[("Range", "bytes=100-199")],
    );
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes 100-199/{len}").as_str())
    );
    assert_eq!(r.body, &model[100..200]);
    let r = http(
        &addr,
        "GET",
        &format!("{base}/models/triage.gguf"),
        &[("Range", "bytes=-10")],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &model[len - 10..]);
    let r = http(
        &addr,
        "GET",
        &format!("{base}/models/triage.gguf"),
        &[("Range", &format!("bytes={len}-"))],
    );
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes */{len}").as_str())
    );
    // If-Range with another validator: the whole file.
    let r = http(
        &addr,
        "GET",
        &format!("{base}/models/triage.gguf"),
        &[("Range", "bytes=0-0"), ("If-Range", "\"other\"")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), len);
    let r = http(
        &addr,
        "GET",
        &format!("{base}/models/triage.gguf"),
        &[("If-None-Match", &etag)],
    );
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = http(&addr, "HEAD", &format!("{base}/models/triage.gguf"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Length"), Some(len.to_string().as_str()));
    assert!(r.body.is_empty());

    // By sha256: a model and the manifest itself.
    let r = http(&addr, "GET", &format!("/sha256/{}", sha(&model)), &[]);
    assert_eq!((r.status, r.body == model), (200, true));
    let mbytes = std::fs::read(ws.path("stick/manifest.toml")).unwrap();
    let r = http(&addr, "GET", &format!("/sha256/{}", sha(&mbytes)), &[]);
    assert_eq!((r.status, r.body == mbytes), (200, true));
    assert_eq!(
        http(&addr, "GET", &format!("/sha256/{}", "0".repeat(64)), &[]).status,
        404
    );
    let r = http(
        &addr,
        "GET",
        "/pack/update.ogpack",
        &[("Range", "bytes=4990-")],
    );
    assert_eq!((r.status, r.body.len()), (206, 10));

    // Refused: escapes, links out, unlisted files, writes.
    assert_eq!(
        http(&addr, "GET", &format!("{base}/../../outside.txt"), &[]).status,
        400
    );
    assert_eq!(
        http(&addr, "GET", &format!("{base}/%2e%2e/outside.txt"), &[]).status,
        400
    );
    let r = http(&addr, "GET", &format!("{base}/CHANGELOG.txt"), &[]);
    assert_eq!(r.status, 403);
    assert!(!String::from_utf8_lossy(&r.body).contains("secret"));
    assert_eq!(
        http(&addr, "GET", &format!("{base}/notes.txt"), &[]).status,
        404
    );
    assert_eq!(
        http(&addr, "GET", "/tree/other-1.0/manifest.toml", &[]).status,
        404
    );
    let r = http(
        &addr,
        "PUT",
        &format!("{base}/manifest.toml"),
        &[("Content-Length", "0")],
    );
    assert_eq!(r.status, 405);
    assert_eq!(
        std::fs::read(ws.path("stick/manifest.toml")).unwrap(),
        mbytes
    );

    // -v logged the requests; SIGTERM stops it cleanly.
    let first = log.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(first.contains("\"GET /\" 200"), "{first}");
    unsafe { libc::kill(srv.0.id() as i32, libc::SIGTERM) };
    let st = srv
        .wait_timeout(Duration::from_secs(10))
        .expect("serve stopped on SIGTERM");
    assert!(st.success(), "{st:?}");
}

#[test]
fn serve_caps_the_rate() {
    let ws = packed_stick();
    let (_srv, addr, _log) = serve(&ws, &["--stick", "stick", "--limit-rate", "200K"]);
    let t = Instant::now();
    let r = http(
        &addr,
        "GET",
        &format!("/tree/{NAME}/models/triage.gguf"),
        &[],
    );
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(r.status, 200);
    // About 700 KiB at 200 KiB/s: 3.5 s (the limiter banks at most 0.1 s).
    assert!(secs > 2.5 && secs < 20.0, "took {secs} s");
}

#[test]
fn torrent_refuses_bad_input() {
    let ws = packed_stick();
    ws.offgrid(&["torrent", "in", "-o", "t.torrent"])
        .code(2)
        .stderr(predicate::str::contains("no manifest.toml"));
    ws.offgrid(&["torrent", "stick", "-o", "t.torrent", "--piece-size", "48K"])
        .code(2)
        .stderr(predicate::str::contains("power of two"));
    // A tampered tree with keys: exit 1, nothing written.
    std::fs::write(ws.path("stick/CHANGELOG.txt"), b"changed!\n").unwrap();
    ws.offgrid(&["torrent", "stick", "-o", "t.torrent", "--pubkey", "hq.pub"])
        .code(1);
    assert!(!ws.path("t.torrent").exists());
    // Without keys it warns that nothing was verified, but a size mismatch is refused.
    std::fs::write(ws.path("stick/CHANGELOG.txt"), b"longer than before!!\n").unwrap();
    ws.offgrid(&["torrent", "stick", "-o", "t.torrent"])
        .code(1)
        .stderr(predicate::str::contains("does not match the manifest"))
        .stderr(predicate::str::contains("was not verified"));
    // An existing output is not replaced without --force.
    ws.file("p.ogpack", b"pack bytes");
    ws.file("exists.torrent", b"x");
    ws.offgrid(&["torrent", "p.ogpack", "-o", "exists.torrent"])
        .code(2)
        .stderr(predicate::str::contains("--force"));
    ws.offgrid(&[
        "torrent",
        "p.ogpack",
        "-o",
        "exists.torrent",
        "--force",
        "--web-seed",
        "http://h/pack/",
    ])
    .success()
    .stdout(predicate::str::contains("magnet:?xt=urn:btih:"))
    .stdout(predicate::str::contains(
        "&dn=p.ogpack&ws=http%3A%2F%2Fh%2Fpack%2F",
    ));
}
