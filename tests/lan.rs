//! Pulling releases from peers (`install --from http://…`, `offgrid sync`; SPEC.md
//! §12.4) through the real binary and real `offgrid serve` peers: on loopback (install,
//! sync reusing the bytes the site has, up to date, a peer with an untrusted release, a
//! pull killed with SIGKILL and resumed, trust roots handed on by a peer, a release in
//! volumes served from its volume sticks, a pull naming the volume no peer has), and
//! across real separate network stacks —
//! four hosts as network namespaces joined by veth pairs to a bridge — where one serving
//! host is killed mid-transfer and a lying peer serves damaged bytes, and the site still
//! finishes, verified, from the honest one. Namespaces need root; CI runs as root, so
//! these fail rather than skip when `ip netns` does not work.

use crate::util::Ws;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use predicates::prelude::*;

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("offgrid")
}

/// A stick of release `release` of `org.example.clinic` at `ws/NAME` with a model of
/// `kib` KiB (seed `seed`) and a changelog saying `notes`.
fn stick(ws: &Ws, name: &str, release: &str, kib: usize, seed: u8, key: &str) {
    stick_with(ws, name, release, kib, seed, key, &[]);
}

/// [`stick`] with more pack-usb flags.
fn stick_with(ws: &Ws, name: &str, release: &str, kib: usize, seed: u8, key: &str, extra: &[&str]) {
    let model = format!("in/{name}.gguf");
    ws.model(&model, kib, seed);
    let notes = ws.file(
        &format!("in/{name}.txt"),
        format!("release {release}\n").as_bytes(),
    );
    let model_arg = format!("smol={model}");
    let mut args = vec![
        "pack-usb",
        name,
        "--bundle-id",
        "org.example.clinic",
        "--release",
        release,
        "--model",
        &model_arg,
        "--changelog",
        notes.to_str().unwrap(),
        "--sign-with",
        key,
        "--no-host-binary",
    ];
    args.extend_from_slice(extra);
    ws.offgrid(&args).success();
}

/// An `offgrid serve` process (optionally inside a network namespace), killed on drop.
struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Server {
    fn start(
        ws: &Ws,
        netns: Option<&str>,
        stick: &str,
        listen: &str,
        rate: Option<&str>,
    ) -> Server {
        Server::start_sticks(ws, netns, &[stick], listen, rate)
    }

    /// [`Server::start`] serving several sticks (`--stick` each).
    fn start_sticks(
        ws: &Ws,
        netns: Option<&str>,
        sticks: &[&str],
        listen: &str,
        rate: Option<&str>,
    ) -> Server {
        let log = ws.path(&format!(
            "serve-{}-{}.log",
            sticks.join("+"),
            listen.replace([':', '.'], "_")
        ));
        let mut c = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        c.current_dir(ws.dir.path())
            .arg("serve")
            .args(sticks.iter().flat_map(|s| ["--stick", s]))
            .args(["--listen", listen, "-v"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).unwrap());
        if let Some(r) = rate {
            c.args(["--limit-rate", r]);
        }
        let mut child = c.spawn().unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let url = first
            .trim()
            .strip_prefix("serving on ")
            .unwrap_or_else(|| panic!("serve printed {first:?}"))
            .trim_end_matches('/')
            .to_owned();
        Server { child, url, log }
    }

    /// Payload bytes this server sent for `path` (from its `-v` request log).
    fn bytes_sent(&self, path: &str) -> u64 {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(path))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn og(ws: &Ws, args: &[&str]) -> assert_cmd::assert::Assert {
    ws.offgrid(args)
}

fn json_lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn install_from_a_peer_then_sync_to_the_next_release_reusing_what_the_site_has() {
    let ws = Ws::new();
    stick(&ws, "s1", "1.0", 5000, 1, "hq.key");
    let a = Server::start(&ws, None, "s1", "127.0.0.1:0", None);
    og(
        &ws,
        &[
            "install", "--from", &a.url, "--pubkey", "hq.pub", "--home", "h",
        ],
    )
    .success()
    .stdout(
        predicate::str::contains("installed release 1.0 of org.example.clinic")
            .and(predicate::str::contains(format!("pulled from: {}", a.url))),
    );
    assert!(
        !ws.path("h/pull").read_dir().unwrap().any(|_| true),
        "pull folder removed"
    );
    drop(a);
    // 2.0 carries the same model (same bytes) and a new changelog: only the changelog and
    // the head travel; the model is copied from the site's own release.
    stick_same_model(&ws);
    let b = Server::start(&ws, None, "s2", "127.0.0.1:0", None);
    let out = og(&ws, &["sync", "--home", "h", "--peer", &b.url, "--json"])
        .success()
        .get_output()
        .stdout
        .clone();
    let lines = json_lines(&out);
    let inst = lines.iter().find(|l| l["type"] == "installed").unwrap();
    assert_eq!(inst["data"]["release"], "2.0", "{inst}");
    let pulled = &inst["data"]["pulled"];
    assert!(
        pulled["reused"].as_u64().unwrap() >= 5000 * 1024,
        "{pulled}"
    );
    assert!(pulled["fetched"].as_u64().unwrap() < 64 * 1024, "{pulled}");
    assert_eq!(
        b.bytes_sent("/models/smol.gguf"),
        0,
        "the model was not fetched"
    );
    og(&ws, &["status", "--home", "h"])
        .success()
        .stdout(predicate::str::contains("2.0"));
    // nothing newer: up to date, exit 0
    og(&ws, &["sync", "--home", "h", "--peer", &b.url])
        .success()
        .stdout(predicate::str::contains("up to date: release 2.0"));
    // install --from the same peer: nothing newer is a refusal
    og(&ws, &["install", "--from", &b.url, "--home", "h"]).code(1);
}

/// Packs `s2` (release 2.0) with the same model bytes as `s1`.
fn stick_same_model(ws: &Ws) {
    let notes = ws.file("in/notes2.txt", b"release 2.0: new notes\n");
    ws.offgrid(&[
        "pack-usb",
        "s2",
        "--bundle-id",
        "org.example.clinic",
        "--release",
        "2.0",
        "--model",
        "smol=in/s1.gguf",
        "--changelog",
        notes.to_str().unwrap(),
        "--sign-with",
        "hq.key",
        "--no-host-binary",
    ])
    .success();
}

#[test]
fn a_peer_with_an_untrusted_release_is_ignored_and_a_bad_peer_address_is_a_usage_error() {
    let ws = Ws::new();
    ws.keypair("mallory");
    stick(&ws, "s1", "1.0", 100, 1, "hq.key");
    stick(&ws, "evil", "9.0", 100, 2, "mallory.key");
    let a = Server::start(&ws, None, "s1", "127.0.0.1:0", None);
    og(
        &ws,
        &[
            "install", "--from", &a.url, "--pubkey", "hq.pub", "--home", "h",
        ],
    )
    .success();
    let m = Server::start(&ws, None, "evil", "127.0.0.1:0", None);
    og(&ws, &["sync", "--home", "h", "--peer", &m.url])
        .code(1)
        .stderr(predicate::str::contains(
            "not signed by the keys this site trusts",
        ));
    assert_eq!(
        m.bytes_sent("/models/"),
        0,
        "no payload asked of an untrusted release"
    );
    og(&ws, &["sync", "--home", "h", "--peer", "no-port"])
        .code(2)
        .stderr(predicate::str::contains("HOST:PORT"));
    og(&ws, &["status", "--home", "h"])
        .success()
        .stdout(predicate::str::contains("1.0"));
}

/// Trust roots over the LAN (SPEC.md §12.4, §19.3): a peer serving a stick made with
/// `pack-usb --roots` hands the site the chain (`/roots/`), so a release signed only by
/// the key root 2 adds installs by `sync`; a peer serving a chain the site's keys did not
/// sign is named in a warning, the site keeps its root, and that peer's release (signed
/// by a key the site does not know) is refused.
#[test]
fn sync_applies_the_trust_roots_a_peer_serves_and_ignores_a_chain_it_cannot_check() {
    let ws = Ws::new();
    ws.keypair("b");
    ws.keypair("mallory");
    stick(&ws, "s1", "1.0", 100, 1, "hq.key");
    og(
        &ws,
        &[
            "trust", "init", "--out", "trust", "--key", "hq.pub", "--sign", "hq.key",
        ],
    )
    .success();
    og(
        &ws,
        &[
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
        ],
    )
    .success();
    og(
        &ws,
        &[
            "trust",
            "init",
            "--out",
            "evil",
            "--key",
            "mallory.pub",
            "--sign",
            "mallory.key",
        ],
    )
    .success();
    stick_with(&ws, "s2", "2.0", 100, 2, "b.key", &["--roots", "trust"]);
    stick_with(
        &ws,
        "s3",
        "3.0",
        100,
        3,
        "mallory.key",
        &["--roots", "evil"],
    );
    og(
        &ws,
        &[
            "install", "--from", "s1", "--pubkey", "hq.pub", "--home", "h",
        ],
    )
    .success();
    let m = Server::start(&ws, None, "s3", "127.0.0.1:0", None);
    og(&ws, &["sync", "--home", "h", "--peer", &m.url])
        .code(1)
        .stderr(
            predicate::str::contains(format!(
                "the trust roots of peer {} were not applied",
                m.url
            ))
            .and(predicate::str::contains(
                "not signed by the keys this site trusts",
            )),
        );
    assert_eq!(m.bytes_sent("/models/"), 0);
    og(&ws, &["trust", "show", "--home", "h", "--json"])
        .success()
        .stdout(predicate::str::contains("\"version\":0"));
    drop(m);
    let p = Server::start(&ws, None, "s2", "127.0.0.1:0", None);
    og(&ws, &["sync", "--home", "h", "--peer", &p.url])
        .success()
        .stderr(predicate::str::contains("now at root version 2"));
    assert!(p.bytes_sent("/roots/2.root.toml") > 0);
    og(&ws, &["status", "--home", "h"])
        .success()
        .stdout(predicate::str::contains("2.0"));
    og(&ws, &["trust", "show", "--home", "h", "--json"])
        .success()
        .stdout(predicate::str::contains("\"version\":2"));
}

#[test]
fn a_pull_killed_with_sigkill_resumes_without_fetching_verified_chunks_again() {
    let ws = Ws::new();
    stick(&ws, "s1", "1.0", 100, 1, "hq.key");
    // 2.0: a 40 MiB model (10 chunks of 4 MiB) served at 4 MiB/s, 4 chunks at a time.
    stick(&ws, "s2", "2.0", 40 * 1024, 9, "hq.key");
    let a = Server::start(&ws, None, "s1", "127.0.0.1:0", None);
    og(
        &ws,
        &[
            "install", "--from", &a.url, "--pubkey", "hq.pub", "--home", "h",
        ],
    )
    .success();
    let b = Server::start(&ws, None, "s2", "127.0.0.1:0", Some("4M"));
    let mut child = Command::new(bin())
        .current_dir(ws.dir.path())
        .args(["sync", "--home", "h", "--peer", &b.url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once at least one chunk is in: the server has logged a whole 4 MiB answer
    // (it logs a request when it is done).
    let deadline = Instant::now() + Duration::from_secs(60);
    while b.bytes_sent("/models/smol.gguf") < (4 << 20) {
        assert!(Instant::now() < deadline, "the pull never got going");
        assert!(child.try_wait().unwrap().is_none(), "the pull ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();
    // The answers cut by the kill are logged when the server notices.
    std::thread::sleep(Duration::from_millis(1500));
    let sent_before = b.bytes_sent("/models/smol.gguf");
    let out = og(&ws, &["sync", "--home", "h", "--peer", &b.url, "--json"])
        .success()
        .get_output()
        .stdout
        .clone();
    let lines = json_lines(&out);
    let pulled = &lines.iter().find(|l| l["type"] == "installed").unwrap()["data"]["pulled"];
    let resumed = pulled["resumed"].as_u64().unwrap();
    assert!(
        resumed >= 4 << 20,
        "at least one verified chunk kept: {pulled}"
    );
    let sent_after = b.bytes_sent("/models/smol.gguf") - sent_before;
    let model = fs::metadata(ws.path("s2/models/smol.gguf")).unwrap().len();
    assert!(
        sent_after + resumed <= model + (4 << 20) && sent_after <= model - (4 << 20),
        "the resumed pull fetched {sent_after} bytes of a {model}-byte model"
    );
    og(&ws, &["status", "--home", "h"])
        .success()
        .stdout(predicate::str::contains("2.0"));
}

/// Network namespaces `NAME-{host}` joined by veth pairs to a bridge in `NAME-br`,
/// host `i` at 10.213.N.(i+1)/24; all deleted on drop.
struct Lan {
    hosts: Vec<String>,
    bridge: String,
    net: usize,
}

static LANS: AtomicUsize = AtomicUsize::new(0);

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2 is installed");
    assert!(
        out.status.success(),
        "ip {args:?}: {} (network namespaces need root; CI runs as root)",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lan {
    fn new(n: usize) -> Lan {
        let net = LANS.fetch_add(1, Ordering::SeqCst) + (std::process::id() as usize % 200);
        let name = format!("og{}n{net}", std::process::id());
        let bridge = format!("{name}-br");
        ip(&["netns", "add", &bridge]);
        let mut lan = Lan {
            hosts: Vec::new(),
            bridge: bridge.clone(),
            net: net % 250,
        };
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &bridge, "link", "set", "br0", "up"]);
        for i in 0..n {
            let h = format!("{name}-h{i}");
            ip(&["netns", "add", &h]);
            lan.hosts.push(h.clone());
            let port = format!("v{i}");
            ip(&[
                "-n", &h, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns",
                &bridge,
            ]);
            ip(&["-n", &bridge, "link", "set", &port, "master", "br0", "up"]);
            ip(&[
                "-n",
                &h,
                "addr",
                "add",
                &format!("{}/24", lan.addr(i)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &h, "link", "set", "eth0", "up"]);
            ip(&["-n", &h, "link", "set", "lo", "up"]);
        }
        lan
    }

    fn addr(&self, i: usize) -> String {
        format!("10.213.{}.{}", self.net, i + 1)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", h]).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.bridge])
            .status();
    }
}

#[test]
fn across_separate_hosts_a_killed_peer_and_a_lying_peer_do_not_stop_the_site() {
    let ws = Ws::new();
    stick(&ws, "s1", "1.0", 100, 1, "hq.key");
    // 12 chunks of 4 MiB: more than the honest peers' 8 workers hold at once, so the liar
    // is always asked for some (with 3 chunks, under load, it was sometimes never asked).
    stick(&ws, "s2", "2.0", 48 * 1024, 5, "hq.key");
    // The liar serves a copy of 2.0 whose model has a flipped byte in every chunk.
    let liar = ws.path("liar");
    fs::create_dir_all(&liar).unwrap();
    Command::new("cp")
        .args(["-a"])
        .arg(ws.path("s2/."))
        .arg(&liar)
        .status()
        .unwrap();
    let model = liar.join("models/smol.gguf");
    let mut bytes = fs::read(&model).unwrap();
    for at in (1000..bytes.len()).step_by(4 << 20) {
        bytes[at] ^= 0xff;
    }
    fs::write(&model, bytes).unwrap();

    let lan = Lan::new(4);
    let site = &lan.hosts[3];
    let _seed = Server::start(
        &ws,
        Some(&lan.hosts[0]),
        "s1",
        &format!("{}:8470", lan.addr(0)),
        None,
    );
    let peer = |i: usize| format!("{}:8470", lan.addr(i));
    let st = Command::new("ip")
        .args(["netns", "exec", site])
        .arg(bin())
        .current_dir(ws.dir.path())
        .args([
            "install",
            "--from",
            &format!("http://{}", peer(0)),
            "--pubkey",
            "hq.pub",
            "--home",
            "h",
        ])
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    drop(_seed);
    // Host 0: the honest 2.0 at 2 MiB/s (killed mid-transfer); host 1: the liar; host 2:
    // the honest 2.0 at 8 MiB/s, which still has work when host 0 dies.
    let mut a = Server::start(&ws, Some(&lan.hosts[0]), "s2", &peer(0), Some("2M"));
    let _l = Server::start(&ws, Some(&lan.hosts[1]), "liar", &peer(1), None);
    let b = Server::start(&ws, Some(&lan.hosts[2]), "s2", &peer(2), Some("8M"));
    let child = Command::new("ip")
        .args(["netns", "exec", site])
        .arg(bin())
        .current_dir(ws.dir.path())
        .env("NO_COLOR", "1")
        .args([
            "sync",
            "--home",
            "h",
            "--peer",
            &peer(0),
            "--peer",
            &peer(1),
            "--peer",
            &peer(2),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Mid-transfer: 48 MiB at 10 MiB/s together takes at least 4.8 s.
    let mut child = child;
    std::thread::sleep(Duration::from_secs(2));
    if child.try_wait().unwrap().is_some() {
        let out = child.wait_with_output().unwrap();
        panic!("the sync ended before host 0 was killed: {out:?}");
    }
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{stderr}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains(&format!("peer http://{} sent bytes", peer(1)))
            && stderr.contains("do not match the signed manifest"),
        "the liar is named: {stderr}"
    );
    assert!(
        b.bytes_sent("/models/smol.gguf") > 0,
        "host 2 served chunks"
    );
    // The site runs 2.0 and its bytes are HQ's, not the liar's.
    let st = Command::new("ip")
        .args(["netns", "exec", site])
        .arg(bin())
        .current_dir(ws.dir.path())
        .args(["verify", "h/current", "--home", "h"])
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    assert_eq!(
        fs::read(ws.path("h/current/models/smol.gguf")).unwrap(),
        fs::read(ws.path("s2/models/smol.gguf")).unwrap()
    );
}

#[test]
fn peers_are_found_by_mdns_across_hosts_and_sync_without_peer_uses_them() {
    let ws = Ws::new();
    stick(&ws, "s1", "1.0", 100, 1, "hq.key");
    stick(&ws, "s2", "2.0", 3000, 4, "hq.key");
    let lan = Lan::new(3);
    let site = &lan.hosts[2];
    let in_site = |args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", site])
            .arg(bin())
            .current_dir(ws.dir.path())
            .env("NO_COLOR", "1")
            .args(args)
            .output()
            .unwrap()
    };
    let st = in_site(&[
        "install", "--from", "s1", "--pubkey", "hq.pub", "--home", "h",
    ]);
    assert!(st.status.success(), "{st:?}");
    // Nobody serves yet: peers finds none (exit 1), sync says how to name one.
    let st = in_site(&["peers", "--timeout", "1"]);
    assert_eq!(st.status.code(), Some(1), "{st:?}");
    let st = in_site(&["sync", "--home", "h", "--discover-timeout", "1"]);
    assert_eq!(st.status.code(), Some(2), "{st:?}");
    assert!(String::from_utf8_lossy(&st.stderr).contains("--peer HOST:PORT"));
    let _a = Server::start(
        &ws,
        Some(&lan.hosts[0]),
        "s2",
        &format!("{}:8470", lan.addr(0)),
        None,
    );
    let _b = Server::start(
        &ws,
        Some(&lan.hosts[1]),
        "s2",
        &format!("{}:8471", lan.addr(1)),
        None,
    );
    let st = in_site(&["peers", "--json", "--timeout", "3"]);
    assert!(st.status.success(), "{st:?}");
    let peers = json_lines(&st.stdout);
    let urls: Vec<String> = peers
        .iter()
        .flat_map(|p| p["data"]["urls"].as_array().unwrap().clone())
        .map(|u| u.as_str().unwrap().to_owned())
        .collect();
    assert!(
        urls.contains(&format!("http://{}:8470", lan.addr(0))),
        "{peers:?}"
    );
    assert!(
        urls.contains(&format!("http://{}:8471", lan.addr(1))),
        "{peers:?}"
    );
    for p in &peers {
        assert_eq!(
            p["data"]["trees"][0]["bundle_id"], "org.example.clinic",
            "{p}"
        );
        assert_eq!(p["data"]["trees"][0]["release"], "2.0", "{p}");
    }
    let st = in_site(&["sync", "--home", "h"]);
    assert!(st.status.success(), "{st:?}");
    let out = String::from_utf8_lossy(&st.stdout);
    assert!(out.contains("installed release 2.0"), "{out}");
}

#[test]
fn a_large_changed_file_travels_by_its_changed_chunks_only() {
    let ws = Ws::new();
    ws.model("in/m.gguf", 64, 3);
    // 12 MiB of data (three 4 MiB chunks); release 2.0 changes bytes in the last chunk.
    let mut data: Vec<u8> = (0..12u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    ws.file("in1/big.bin", &data);
    let n = data.len();
    data[n - 100] ^= 0xff;
    ws.file("in2/big.bin", &data);
    for (stick, release, src) in [("s1", "1.0", "in1/big.bin"), ("s2", "2.0", "in2/big.bin")] {
        ws.offgrid(&[
            "pack-usb",
            stick,
            "--bundle-id",
            "org.example.clinic",
            "--release",
            release,
            "--model",
            "in/m.gguf",
            "--add",
            &format!("data/big.bin={src}"),
            "--sign-with",
            "hq.key",
            "--no-host-binary",
        ])
        .success();
    }
    og(
        &ws,
        &[
            "install", "--from", "s1", "--pubkey", "hq.pub", "--home", "h",
        ],
    )
    .success();
    let b = Server::start(&ws, None, "s2", "127.0.0.1:0", None);
    let out = og(&ws, &["sync", "--home", "h", "--peer", &b.url, "--json"])
        .success()
        .get_output()
        .stdout
        .clone();
    let lines = json_lines(&out);
    let pulled = &lines.iter().find(|l| l["type"] == "installed").unwrap()["data"]["pulled"];
    assert!(pulled["reused"].as_u64().unwrap() >= 8 << 20, "{pulled}");
    let sent = b.bytes_sent("/data/big.bin");
    assert_eq!(sent, 4 << 20, "only the changed chunk of big.bin travels");
    assert_eq!(fs::read(ws.path("h/current/data/big.bin")).unwrap(), data);
}

#[test]
fn a_release_in_volumes_installs_from_a_peer_serving_its_volume_sticks() {
    let ws = Ws::new();
    ws.model("in/smol.gguf", 40, 1);
    let big = crate::util::noise(700_000, 7);
    ws.file("in/big.bin", &big);
    ws.pack_volumes("1.0", &["v1", "v2", "v3"]).success();
    let m = offgrid::manifest::Manifest::parse(&fs::read(ws.path("v1/manifest.toml")).unwrap())
        .unwrap();
    let parts = &m.file("data/big.bin").unwrap().parts;
    assert_eq!(parts.len(), 3);
    let name = format!("{}-1.0", m.bundle_id);
    {
        // Volumes 1 and 2 only: the index lists what cannot be served whole, and the
        // pull names it and the volume that holds it before fetching a byte.
        let s = Server::start_sticks(&ws, None, &["v1", "v2"], "127.0.0.1:0", None);
        let addr = s.url.trim_start_matches("http://");
        let idx: serde_json::Value =
            serde_json::from_slice(&crate::util::http(addr, "GET", "/index.json", &[]).body)
                .unwrap();
        let t = &idx["trees"][0];
        assert_eq!(
            t["volumes"],
            serde_json::json!({"count": 3, "served": [1, 2]})
        );
        assert!(t["missing"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("data/big.bin")));
        let r = crate::util::http(addr, "GET", &format!("/tree/{name}/data/big.bin"), &[]);
        assert_eq!(r.status, 404);
        og(
            &ws,
            &[
                "install", "--from", &s.url, "--home", "home", "--pubkey", "hq.pub",
            ],
        )
        .code(1)
        .stderr(
            predicate::str::contains("'data/big.bin'")
                .and(predicate::str::contains("volume(s) 3"))
                .and(predicate::str::contains("help:")),
        );
        assert!(!ws.path("home/current").exists());
        assert_eq!(s.bytes_sent("/data/"), 0);
    }
    // All three volumes: each file is served whole at its path, a range across two
    // parts is read from both, and the site installs byte for byte.
    let s = Server::start_sticks(&ws, None, &["v3", "v1", "v2"], "127.0.0.1:0", None);
    let addr = s.url.trim_start_matches("http://");
    let idx: serde_json::Value =
        serde_json::from_slice(&crate::util::http(addr, "GET", "/index.json", &[]).body).unwrap();
    assert_eq!(idx["trees"].as_array().unwrap().len(), 1);
    assert_eq!(idx["trees"][0]["missing"], serde_json::json!([]));
    let cut = parts[1].offset;
    let r = crate::util::http(
        addr,
        "GET",
        &format!("/tree/{name}/data/big.bin"),
        &[("Range", &format!("bytes={}-{}", cut - 10, cut + 9))],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &big[cut as usize - 10..cut as usize + 10]);
    let r = crate::util::http(addr, "GET", &format!("/tree/{name}/data/big.bin"), &[]);
    assert_eq!((r.status, r.body == big), (200, true));
    // The parts themselves are not paths of the tree.
    let r = crate::util::http(addr, "GET", &format!("/tree/{name}/{}", parts[2].path), &[]);
    assert_eq!(r.status, 404);
    og(
        &ws,
        &[
            "install", "--from", &s.url, "--home", "home", "--pubkey", "hq.pub",
        ],
    )
    .success()
    .stdout(predicate::str::contains("pulled from"));
    assert_eq!(fs::read(ws.path("home/current/data/big.bin")).unwrap(), big);
    og(&ws, &["verify", "home/current", "--home", "home"]).success();
    drop(s);
    // Release 2.0 with a changed data file: one peer serves all its volumes, another
    // only volume 1. The second is never asked for the file it lacks, and sync ends.
    let mut big2 = big.clone();
    big2[cut as usize + 5] ^= 0xff;
    ws.file("in/big.bin", &big2);
    ws.pack_volumes("2.0", &["w1", "w2", "w3"]).success();
    let all = Server::start_sticks(&ws, None, &["w1", "w2", "w3"], "127.0.0.1:0", None);
    let one = Server::start_sticks(&ws, None, &["w1"], "127.0.0.1:0", None);
    og(
        &ws,
        &[
            "sync", "--home", "home", "--peer", &one.url, "--peer", &all.url,
        ],
    )
    .success();
    assert_eq!(
        fs::read(ws.path("home/current/data/big.bin")).unwrap(),
        big2
    );
    assert!(all.bytes_sent("/data/big.bin") > 0);
    assert_eq!(one.bytes_sent("/data/big.bin"), 0);
}
