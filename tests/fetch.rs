//! `offgrid fetch` and `check-updates` against real HTTP servers on loopback: nginx
//! (Debian's nginx-light, started here with a generated config) laid out as a mirror and
//! as the Hugging Face resolve/API endpoints, and a fault-injecting server of our own
//! (a std::net thread) that drops connections, stalls, ignores Range, answers 404/500,
//! serves wrong bytes or changes the file mid-download. Every case ends in a verified
//! object or an error naming the URL, with nothing unverified in the store.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::{noise, output as run, sha, Out};
use assert_cmd::cargo::CommandCargoExt;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx serving `root` on an ephemeral loopback port (xtask's starter); killed on drop.
struct Nginx {
    _nginx: crate::nginx::Nginx,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(root: &Path, extra: &str) -> Nginx {
        Nginx::start_listen(root, extra, "")
    }

    /// `listen` takes `opts` after the address (" ssl" for HTTPS).
    fn start_listen(root: &Path, extra: &str, opts: &str) -> Nginx {
        assert!(
            Path::new(crate::nginx::PROGRAM).exists(),
            "nginx-light is needed (.ci/install-deps)"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let listen = format!("127.0.0.1:{port}{opts}");
        let cfg = crate::nginx::Config {
            listen: &listen,
            bytes_log: None,
            server: extra,
        };
        let mut nginx =
            crate::nginx::Nginx::spawn(Command::new(crate::nginx::PROGRAM), dir.path(), root, &cfg)
                .unwrap();
        nginx.wait_loopback(port).unwrap();
        Nginx {
            _nginx: nginx,
            port,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    None,
    /// Close every GET after this many body bytes.
    DropAfter(usize),
    /// The first GET sends 64 KiB and then nothing for 3 s.
    StallOnce,
    /// Answer 200 with the whole file to every Range request.
    IgnoreRange,
    /// Answer every request with this status.
    Status(u16),
    /// Pace each connection to about 4 MiB/s.
    Slow,
}

struct Shared {
    content: Mutex<(Vec<u8>, String)>,
    fault: Mutex<Fault>,
    served: AtomicU64,
    stalled: AtomicBool,
    /// After this many bytes served, the content changes (new bytes, new ETag).
    change_after: Mutex<Option<(u64, Vec<u8>)>>,
    stop: AtomicBool,
}

/// The fault-injecting server: one thread per connection, `Connection: close`.
struct FaultServer {
    port: u16,
    shared: Arc<Shared>,
}

impl FaultServer {
    fn start(content: Vec<u8>, fault: Fault) -> FaultServer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            content: Mutex::new((content, "\"v1\"".into())),
            fault: Mutex::new(fault),
            served: AtomicU64::new(0),
            stalled: AtomicBool::new(false),
            change_after: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(c) = c else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = serve(c, &s);
                });
            }
        });
        FaultServer { port, shared }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/files/model.gguf", self.port)
    }

    fn served(&self) -> u64 {
        self.shared.served.load(Ordering::SeqCst)
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(c: TcpStream, s: &Shared) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut r = BufReader::new(c.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let method = line.split(' ').next().unwrap_or("").to_owned();
    let (mut range, mut if_range) = (None, None);
    for _ in 0..100 {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or(("", ""));
        match k.to_ascii_lowercase().as_str() {
            "range" => range = Some(v.trim().to_owned()),
            "if-range" => if_range = Some(v.trim().to_owned()),
            _ => {}
        }
    }
    let mut w = c;
    let fault = *s.fault.lock().unwrap();
    if let Fault::Status(code) = fault {
        write!(
            w,
            "HTTP/1.1 {code} Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return Ok(());
    }
    let (content, etag) = s.content.lock().unwrap().clone();
    let total = content.len();
    let mut status = "200 OK";
    let (mut a, mut b) = (0, total.saturating_sub(1));
    let mut extra = String::new();
    if let (Some(rg), true) = (&range, method == "GET" && fault != Fault::IgnoreRange) {
        let fresh = if_range.as_ref().is_none_or(|v| *v == etag);
        if let (Some(spec), true) = (rg.strip_prefix("bytes="), fresh) {
            let (x, y) = spec.split_once('-').unwrap();
            a = x.parse().unwrap();
            b = if y.is_empty() {
                total - 1
            } else {
                y.parse::<usize>().unwrap().min(total - 1)
            };
            status = "206 Partial Content";
            extra = format!("Content-Range: bytes {a}-{b}/{total}\r\n");
        }
    }
    let len = if total == 0 { 0 } else { b + 1 - a };
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Length: {len}\r\nETag: {etag}\r\nAccept-Ranges: bytes\r\n{extra}Connection: close\r\n\r\n"
    )?;
    if method != "GET" {
        return Ok(());
    }
    let body = &content[a..a + len];
    let mut sent = 0;
    for chunk in body.chunks(16 << 10) {
        if let Fault::DropAfter(n) = fault {
            if sent >= n {
                return Ok(());
            }
        }
        if fault == Fault::StallOnce
            && sent >= (64 << 10)
            && !s.stalled.swap(true, Ordering::SeqCst)
        {
            std::thread::sleep(Duration::from_secs(3));
            return Ok(());
        }
        if fault == Fault::Slow {
            std::thread::sleep(Duration::from_millis(4));
        }
        w.write_all(chunk)?;
        sent += chunk.len();
        let served = s.served.fetch_add(chunk.len() as u64, Ordering::SeqCst) + chunk.len() as u64;
        let mut ch = s.change_after.lock().unwrap();
        if ch.as_ref().is_some_and(|(at, _)| served >= *at) {
            let (_, new) = ch.take().unwrap();
            *s.content.lock().unwrap() = (new, "\"v2\"".into());
            return Ok(()); // and this connection breaks
        }
    }
    Ok(())
}

fn offgrid(hq: &Path) -> Command {
    let mut c = Command::cargo_bin("offgrid").unwrap();
    c.env("OFFGRID_HQ", hq)
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .env_remove("ALL_PROXY")
        .env_remove("https_proxy")
        .env_remove("http_proxy")
        .env_remove("all_proxy")
        .env_remove("HF_TOKEN")
        .env("NO_COLOR", "1");
    c
}

/// Every file in the store, as (sha256 name, actual sha256 of the bytes).
fn store(hq: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(hq.join("objects"))
        .into_iter()
        .flatten()
    {
        if e.file_type().is_file() {
            let b = std::fs::read(e.path()).unwrap();
            out.push((e.file_name().to_string_lossy().into_owned(), sha(&b)));
        }
    }
    out
}

/// Asserts the store holds exactly `want` (by sha256), every object verified.
fn assert_store(hq: &Path, want: &[&str]) {
    let s = store(hq);
    for (name, actual) in &s {
        assert_eq!(
            name, actual,
            "an object in the store does not match its name"
        );
    }
    let mut names: Vec<&str> = s.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    let mut want = want.to_vec();
    want.sort();
    assert_eq!(names, want);
}

/// Asserts every object in the store matches its name and `want` are among them (a
/// recorded release adds its other files).
fn assert_store_has(hq: &Path, want: &[&str]) {
    let s = store(hq);
    for (name, actual) in &s {
        assert_eq!(
            name, actual,
            "an object in the store does not match its name"
        );
    }
    for w in want {
        assert!(s.iter().any(|(n, _)| n == w), "{w} is not in the store");
    }
}

fn catalog(entries: &[(&str, &str, &[u8], Vec<String>)]) -> String {
    let mut s = String::from(
        "format = \"offgrid-catalog/1\"\ncatalog_id = \"org.example.models\"\nversion = \"1.0\"\n",
    );
    for (name, version, bytes, mirrors) in entries {
        let m: Vec<String> = mirrors.iter().map(|u| format!("\"{u}\"")).collect();
        s.push_str(&format!(
            "\n[[entries]]\nname = \"{name}\"\nversion = \"{version}\"\nkind = \"model\"\nformat = \"gguf\"\nsize = {}\nsha256 = \"{}\"\nlicense = \"MIT\"\nmirrors = [{}]\n",
            bytes.len(),
            sha(bytes),
            m.join(", ")
        ));
    }
    s
}

#[test]
fn signed_catalog_from_nginx_with_mirror_fallback() {
    let t = tempfile::tempdir().unwrap();
    let hq = t.path().join("hq");
    let www = t.path().join("www");
    std::fs::create_dir_all(www.join("models")).unwrap();
    let model = noise(3 << 20, 1);
    std::fs::write(www.join("models/tiny.gguf"), &model).unwrap();
    let nginx = Nginx::start(&www, "");
    let dead = FaultServer::start(Vec::new(), Fault::Status(404));
    let cat = catalog(&[(
        "tiny",
        "1.0.0",
        &model,
        vec![dead.url(), nginx.url("models/tiny.gguf")],
    )]);
    std::fs::write(www.join("catalog.toml"), &cat).unwrap();
    // Sign it with the stock tool and an offgrid key.
    let (key, publ) = keygen(t.path(), "hq");
    let comment = format!(
        "offgrid bundle=org.example.models release=1.0 manifest_sha256={}",
        sha(cat.as_bytes())
    );
    minisign(&key, &www.join("catalog.toml"), &comment);

    // A tampered catalog (served beside a valid signature for other bytes) is refused.
    std::fs::write(www.join("bad.toml"), cat.replace("MIT", "GPL")).unwrap();
    std::fs::copy(
        www.join("catalog.toml.minisig"),
        www.join("bad.toml.minisig"),
    )
    .unwrap();
    let o = fetch_catalog(&hq, "tiny", nginx.url("bad.toml"), Some(&publ));
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("not signed by a trusted key"),
        "{}",
        o.stderr
    );
    assert_store(&hq, &[]);

    // The signed catalog by URL: the first mirror 404s, the second serves.
    let o = fetch_catalog(&hq, "tiny@1.0.0", nginx.url("catalog.toml"), Some(&publ));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.contains(&dead.url()) && o.stderr.contains("404"),
        "{}",
        o.stderr
    );
    assert!(o.stdout.contains(&sha(&model)), "{}", o.stdout);
    assert_store(&hq, &[&sha(&model)]);
    let rec =
        std::fs::read_to_string(hq.join("fetched").join(format!("{}.json", sha(&model)))).unwrap();
    assert!(
        rec.contains("\"trusted_on_first_use\": false") && rec.contains("tiny"),
        "{rec}"
    );
    assert!(!hq
        .join("partial")
        .join(format!("{}.part", sha(&model)))
        .exists());

    // Again: already stored, nothing downloaded; an unknown name lists the entries.
    let o = fetch_catalog(&hq, "tiny", www.join("catalog.toml"), None);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("already in the store"), "{}", o.stdout);
    let o = fetch_catalog(&hq, "huge", www.join("catalog.toml"), None);
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("no entry 'huge'")
            && o.stderr.contains("help: the catalog lists: tiny@1.0.0"),
        "{}",
        o.stderr
    );
}

#[test]
fn hugging_face_layout_on_nginx() {
    let t = tempfile::tempdir().unwrap();
    let hq = t.path().join("hq");
    let www = t.path().join("www");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let model = noise(2 << 20, 2);
    let readme = b"# tiny model\n".to_vec();
    let git_blob = "a".repeat(40);
    for rev in ["main", commit] {
        let d = www.join("org/tiny-GGUF/resolve").join(rev);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("tiny.gguf"), &model).unwrap();
        std::fs::write(d.join("README.md"), &readme).unwrap();
    }
    let api = www.join("api/models/org/tiny-GGUF/revision");
    std::fs::create_dir_all(&api).unwrap();
    std::fs::write(
        api.join("main"),
        format!(
            "{{\"sha\":\"{commit}\",\"siblings\":[{{\"rfilename\":\"README.md\",\"size\":13}},{{\"rfilename\":\"tiny.gguf\",\"size\":{},\"lfs\":{{\"sha256\":\"{}\",\"size\":{}}}}}]}}",
            model.len(),
            sha(&model),
            model.len()
        ),
    )
    .unwrap();
    let extra = format!(
        "  location /org/tiny-GGUF/resolve/main/ {{ add_header X-Repo-Commit {commit}; add_header X-Linked-Etag '\"{}\"'; add_header X-Linked-Size {}; }}\n\
         location = /org/tiny-GGUF/resolve/main/README.md {{ etag off; add_header X-Repo-Commit {commit}; add_header ETag '\"{git_blob}\"'; }}\n",
        sha(&model),
        model.len()
    );
    let nginx = Nginx::start(&www, &extra);
    let endpoint = format!("http://127.0.0.1:{}", nginx.port);

    let o = run({
        let mut c = offgrid(&hq);
        c.env("HF_ENDPOINT", &endpoint)
            .args(["fetch", "hf://org/tiny-GGUF/tiny.gguf", "--json"]);
        c
    });
    assert_eq!(o.code, 0, "{}", o.stderr);
    let last = o.stdout.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["type"], "fetched");
    assert_eq!(v["data"]["sha256"], sha(&model));
    assert!(
        v["data"]["url"].as_str().unwrap().contains(commit),
        "{last}"
    );
    assert_store(&hq, &[&sha(&model)]);
    let rec =
        std::fs::read_to_string(hq.join("fetched").join(format!("{}.json", sha(&model)))).unwrap();
    assert!(rec.contains(commit), "{rec}");

    // A 40-hex git etag is not a sha256: no hash is known, so it needs the explicit flag.
    let o = run({
        let mut c = offgrid(&hq);
        c.env("HF_ENDPOINT", &endpoint)
            .args(["fetch", "hf://org/tiny-GGUF/README.md"]);
        c
    });
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("no sha256 is known") && o.stderr.contains("--trust-on-first-use"),
        "{}",
        o.stderr
    );
    assert_store(&hq, &[&sha(&model)]);
    let o = run({
        let mut c = offgrid(&hq);
        c.env("HF_ENDPOINT", &endpoint).args([
            "fetch",
            "hf://org/tiny-GGUF/README.md",
            "--trust-on-first-use",
        ]);
        c
    });
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("trusted on first use"), "{}", o.stdout);
    assert_store(&hq, &[&sha(&model), &sha(&readme)]);
    assert!(!store(&hq).iter().any(|(n, _)| n.starts_with(&git_blob)));

    // A wrong revision is a clear error naming the URL.
    let o = run({
        let mut c = offgrid(&hq);
        c.env("HF_ENDPOINT", &endpoint)
            .args(["fetch", "hf://org/tiny-GGUF/tiny.gguf@v9"]);
        c
    });
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("resolve/v9/tiny.gguf") && o.stderr.contains("404"),
        "{}",
        o.stderr
    );
}

fn fetch_url(hq: &Path, url: &str, sha256: &str, extra: &[&str]) -> Out {
    let mut c = offgrid(hq);
    c.args([
        "fetch",
        url,
        "--sha256",
        sha256,
        "--stall-timeout",
        "1",
        "--retries",
        "3",
    ])
    .args(extra);
    run(c)
}

#[test]
fn faults_end_in_a_verified_object() {
    let model = noise(2 << 20, 3);
    for fault in [
        Fault::DropAfter(300 << 10),
        Fault::StallOnce,
        Fault::IgnoreRange,
    ] {
        let t = tempfile::tempdir().unwrap();
        let hq = t.path().join("hq");
        let s = FaultServer::start(model.clone(), fault);
        let o = fetch_url(&hq, &s.url(), &sha(&model), &[]);
        assert_eq!(o.code, 0, "{fault:?}: {}", o.stderr);
        assert_store(&hq, &[&sha(&model)]);
        match fault {
            Fault::StallOnce => assert!(o.stderr.contains("stalled"), "{}", o.stderr),
            Fault::IgnoreRange => assert!(o.stderr.contains("ignores Range"), "{}", o.stderr),
            _ => assert!(o.stderr.contains("retry"), "{}", o.stderr),
        }
    }
}

#[test]
fn errors_name_the_url_and_store_nothing() {
    let model = noise(1 << 20, 4);
    let t = tempfile::tempdir().unwrap();
    let hq = t.path().join("hq");
    for (fault, code, words) in [
        (Fault::Status(404), 2, "HTTP 404"),
        (Fault::Status(500), 2, "HTTP 500"),
    ] {
        let s = FaultServer::start(model.clone(), fault);
        let o = fetch_url(&hq, &s.url(), &sha(&model), &[]);
        assert_eq!(o.code, code, "{}", o.stderr);
        assert!(
            o.stderr.contains(&s.url()) && o.stderr.contains(words),
            "{}",
            o.stderr
        );
    }
    // Wrong bytes: refused (exit 1), the server named.
    let s = FaultServer::start(noise(1 << 20, 41), Fault::None);
    let o = fetch_url(&hq, &s.url(), &sha(&model), &[]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains(&s.url()) && o.stderr.contains("does not match its sha256"),
        "{}",
        o.stderr
    );
    // The file changes on the server mid-download (new ETag): never spliced.
    let s = FaultServer::start(model.clone(), Fault::Slow);
    *s.shared.change_after.lock().unwrap() = Some((300 << 10, noise(1 << 20, 6)));
    let o = fetch_url(&hq, &s.url(), &sha(&model), &[]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("changed on the server"), "{}", o.stderr);
    assert!(o.stderr.contains(&s.url()), "{}", o.stderr);
    // A URL without a hash needs the explicit flag.
    let o = run({
        let mut c = offgrid(&hq);
        c.args(["fetch", &s.url()]);
        c
    });
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("help: pass --sha256 HEX, or --trust-on-first-use"),
        "{}",
        o.stderr
    );
    assert_store(&hq, &[]);
}

#[test]
fn wrong_mirror_is_named_and_the_next_one_serves() {
    let t = tempfile::tempdir().unwrap();
    let hq = t.path().join("hq");
    let model = noise(1 << 20, 7);
    let bad = FaultServer::start(noise(1 << 20, 8), Fault::None);
    let good = FaultServer::start(model.clone(), Fault::None);
    let cat = t.path().join("catalog.toml");
    std::fs::write(
        &cat,
        catalog(&[("m", "2", &model, vec![bad.url(), good.url()])]),
    )
    .unwrap();
    let o = run({
        let mut c = offgrid(&hq);
        c.args(["fetch", "m", "--json", "--catalog"]).arg(&cat);
        c
    });
    assert_eq!(o.code, 0, "{}", o.stderr);
    let badline = o
        .stdout
        .lines()
        .find(|l| l.contains("\"bad-bytes\""))
        .unwrap_or_else(|| panic!("{}", o.stdout));
    assert!(badline.contains(&bad.url()), "{badline}");
    assert!(
        o.stdout.lines().last().unwrap().contains(&bad.url()),
        "{}",
        o.stdout
    );
    assert_store(&hq, &[&sha(&model)]);
}

#[test]
fn sigkill_then_resume_moves_at_most_one_part_again() {
    // Killed early, in the middle and late: each resume moves at most one part again.
    for (i, kill_at) in [(1u64 << 20) - 4096, 3 << 20, (6 << 20) + 12345]
        .into_iter()
        .enumerate()
    {
        let t = tempfile::tempdir().unwrap();
        let hq = t.path().join("hq");
        let model = noise(8 << 20, 9 + 2 * i as u64);
        let s = FaultServer::start(model.clone(), Fault::Slow);
        let mut child = {
            let mut c = offgrid(&hq);
            c.args([
                "fetch",
                &s.url(),
                "--sha256",
                &sha(&model),
                "--connections",
                "4",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
            c.spawn().unwrap()
        };
        let t0 = Instant::now();
        while s.served() < kill_at {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the download did not start"
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "fetch ended before the kill"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let before = s.served();
        assert_store(&hq, &[]);
        let o = run({
            let mut c = offgrid(&hq);
            c.args(["fetch", &s.url(), "--sha256", &sha(&model), "--json"]);
            c
        });
        assert_eq!(o.code, 0, "kill at {kill_at}: {}", o.stderr);
        assert_store(&hq, &[&sha(&model)]);
        let total = s.served();
        // 8 MiB over 4 connections: parts of 2 MiB.
        let part = 2 << 20;
        assert!(
            total <= model.len() as u64 + part,
            "kill at {kill_at}: served {total} bytes in all ({before} before the kill) for a {} byte file",
            model.len()
        );
        let src = o.stdout.lines().find(|l| l.contains("\"source\"")).unwrap();
        let v: serde_json::Value = serde_json::from_str(src).unwrap();
        assert!(v["data"]["resumed_bytes"].as_u64().unwrap() > 0, "{src}");
    }
}

#[test]
fn limit_rate_and_trust_on_first_use() {
    let t = tempfile::tempdir().unwrap();
    let hq = t.path().join("hq");
    let model = noise(1 << 20, 10);
    let s = FaultServer::start(model.clone(), Fault::None);
    let t0 = Instant::now();
    let o = run({
        let mut c = offgrid(&hq);
        c.args([
            "fetch",
            &s.url(),
            "--trust-on-first-use",
            "--limit-rate",
            "512K",
        ]);
        c
    });
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    assert!(o.stdout.contains("trusted on first use"), "{}", o.stdout);
    let rec =
        std::fs::read_to_string(hq.join("fetched").join(format!("{}.json", sha(&model)))).unwrap();
    assert!(rec.contains("\"trusted_on_first_use\": true"), "{rec}");
    assert_store(&hq, &[&sha(&model)]);
}

/// An unencrypted offgrid key pair `NAME.key` / `NAME.pub` in `dir`.
fn keygen(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let publ = dir.join(format!("{name}.pub"));
    let o = run({
        let mut c = offgrid(&dir.join("hq-keygen"));
        c.args(["keygen", "--unencrypted", "--secret"])
            .arg(&key)
            .arg("--public")
            .arg(&publ);
        c
    });
    assert_eq!(o.code, 0, "{}", o.stderr);
    (key, publ)
}

/// Signs `file` with stock minisign (`FILE.minisig`), the trusted comment as given.
fn minisign(key: &Path, file: &Path, comment: &str) {
    let st = Command::new("minisign")
        .args(["-S", "-s"])
        .arg(key)
        .arg("-m")
        .arg(file)
        .args(["-t", comment])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
}

/// `offgrid fetch NAME --catalog CAT [--pubkey PUB]` into `hq`.
fn fetch_catalog(hq: &Path, name: &str, cat: impl AsRef<OsStr>, publ: Option<&Path>) -> Out {
    let mut c = offgrid(hq);
    c.args(["fetch", name, "--catalog"]).arg(cat);
    if let Some(p) = publ {
        c.arg("--pubkey").arg(p);
    }
    run(c)
}

/// `offgrid fetch tiny --catalog CAT --pubkey PUB` (the catalog's only entry is never
/// reachable: every case here must be refused before any download).
fn fetch_signed(hq: &Path, cat: &Path, publ: &Path) -> Out {
    fetch_catalog(hq, "tiny", cat, Some(publ))
}

#[test]
fn catalog_signature_is_checked_before_the_catalog_is_parsed() {
    let t = tempfile::tempdir().unwrap();
    let hq = t.path().join("hq");
    let (key, publ) = keygen(t.path(), "hq");
    let (other_key, _) = keygen(t.path(), "other");
    let model = noise(1 << 10, 12);
    let text = catalog(&[("tiny", "1.0.0", &model, vec!["http://127.0.0.1:9/x".into()])]);
    let comment = |id: &str, bytes: &[u8]| {
        format!(
            "offgrid bundle={id} release=1.0 manifest_sha256={}",
            sha(bytes)
        )
    };

    // A huge catalog that is not even TOML, unsigned, with a key given: refused as
    // unsigned (exit 1), not as malformed — it was never parsed.
    let huge = t.path().join("huge.toml");
    let junk: Vec<u8> = b"[[[[entries = \"\n"
        .iter()
        .copied()
        .cycle()
        .take((4 << 20) - 1)
        .collect();
    std::fs::write(&huge, &junk).unwrap();
    let t0 = Instant::now();
    let o = fetch_signed(&hq, &huge, &publ);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("not signed by a trusted key") && o.stderr.contains("no signature"),
        "{}",
        o.stderr
    );
    assert!(
        !o.stderr.contains("TOML") && !o.stderr.contains("expected"),
        "{}",
        o.stderr
    );
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    // The same junk signed by a key nobody trusts: refused by key id, still unparsed.
    minisign(&other_key, &huge, &comment("org.example.models", &junk));
    let o = fetch_signed(&hq, &huge, &publ);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("a key you did not trust"), "{}", o.stderr);
    // Larger than the bound: refused on its size.
    let over = t.path().join("over.toml");
    std::fs::write(&over, vec![b'#'; (4 << 20) + 1]).unwrap();
    let o = fetch_signed(&hq, &over, &publ);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("larger than"), "{}", o.stderr);

    // A well-formed catalog signed by an untrusted key.
    let cat = t.path().join("catalog.toml");
    std::fs::write(&cat, &text).unwrap();
    minisign(
        &other_key,
        &cat,
        &comment("org.example.models", text.as_bytes()),
    );
    let o = fetch_signed(&hq, &cat, &publ);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("a key you did not trust"), "{}", o.stderr);

    // Signed by the trusted key, but the trusted comment names another catalog id.
    minisign(&key, &cat, &comment("org.example.other", text.as_bytes()));
    let o = fetch_signed(&hq, &cat, &publ);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("signed for bundle 'org.example.other'")
            && o.stderr.contains("org.example.models"),
        "{}",
        o.stderr
    );
    // ... or another version.
    minisign(
        &key,
        &cat,
        &comment("org.example.models", text.as_bytes()).replace("release=1.0", "release=0.9"),
    );
    let o = fetch_signed(&hq, &cat, &publ);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("signed for release 0.9"), "{}", o.stderr);

    // A trusted, well-bound signature over a malformed catalog: malformed (exit 2).
    let bad = t.path().join("bad.toml");
    let bad_text = text.replace("kind = \"model\"", "kind = \"weird\"");
    std::fs::write(&bad, &bad_text).unwrap();
    minisign(
        &key,
        &bad,
        &comment("org.example.models", bad_text.as_bytes()),
    );
    let o = fetch_signed(&hq, &bad, &publ);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("kind 'weird'"), "{}", o.stderr);
    assert_store(&hq, &[]);
}

#[test]
fn check_updates_lists_newer_catalog_entries() {
    let ws = crate::util::Ws::new();
    let hq = ws.path("hq-history");
    let model = ws.model("tiny.gguf", 64, 3);
    let old = std::fs::read(&model).unwrap();
    ws.offgrid(&[
        "pack-usb",
        "stick",
        "--bundle-id",
        "org.example.x",
        "--release",
        "1.0.0",
        "--model",
        "tiny.gguf",
        "--sign-with",
        "hq.key",
    ])
    .success();
    let newer = noise(2048, 13);
    let unrelated = noise(1024, 14);
    let m = vec!["http://127.0.0.1:9/x".to_owned()];
    let cat = ws.file(
        "catalog.toml",
        catalog(&[
            ("tiny", "1.0.0", &old, m.clone()),
            ("tiny", "1.1.0", &newer, m.clone()),
            ("other", "3.0", &unrelated, m),
        ])
        .as_bytes(),
    );
    let check = |extra: &[&str]| {
        run({
            let mut c = offgrid(&hq);
            c.args(["check-updates", "--catalog"]).arg(&cat).args(extra);
            c
        })
    };
    let o = check(&[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains(
            "org.example.x 1.0.0: models/tiny.gguf uses tiny@1.0.0; the catalog has 1.1.0"
        ),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("1 newer catalog entry found"),
        "{}",
        o.stdout
    );
    assert!(!o.stdout.contains("other"), "{}", o.stdout);
    assert!(o.stderr.contains("not signature-checked"), "{}", o.stderr);

    let o = check(&["--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let lines: Vec<serde_json::Value> = o
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{}", o.stdout);
    assert_eq!(lines[0]["type"], "entry");
    let e = &lines[0]["data"];
    assert_eq!(e["bundle_id"], "org.example.x");
    assert_eq!(e["release"], "1.0.0");
    assert_eq!(e["path"], "models/tiny.gguf");
    assert_eq!(e["name"], "tiny");
    assert_eq!(e["uses"], "1.0.0");
    assert_eq!(e["newest"], "1.1.0");
    assert_eq!(e["newer"], true);
    assert_eq!(lines[1]["type"], "summary");
    assert_eq!(lines[1]["data"]["newer"], 1);
    assert_eq!(lines[1]["data"]["schema"], 1);

    // The newest is in use: nothing newer.
    let cat2 = ws.file(
        "catalog2.toml",
        catalog(&[("tiny", "1.0.0", &old, vec!["http://127.0.0.1:9/x".into()])]).as_bytes(),
    );
    let o = run({
        let mut c = offgrid(&hq);
        c.args(["check-updates", "--catalog"]).arg(&cat2);
        c
    });
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains("uses tiny@1.0.0 (newest)"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("0 newer catalog entries found"),
        "{}",
        o.stdout
    );

    // A bundle with no recorded release: exit 2, naming the history.
    let o = check(&["--bundle-id", "org.example.none"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("no release of 'org.example.none'") && o.stderr.contains("help:"),
        "{}",
        o.stderr
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the openssl command is needed (.ci/install-deps)");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn ca_file_trusts_an_internal_https_mirror() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let hq = d.join("hq");
    // A private CA and a server certificate for 127.0.0.1 signed by it.
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=offgrid test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    openssl(d, &a);
    let mut a = vec!["req"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(d, &a);
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    let www = d.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let model = noise(1 << 20, 15);
    std::fs::write(www.join("m.gguf"), &model).unwrap();
    let extra = format!(
        "  ssl_certificate {};\n  ssl_certificate_key {};\n",
        d.join("srv.pem").display(),
        d.join("srv.key").display()
    );
    let nginx = Nginx::start_listen(&www, &extra, " ssl");
    let url = format!("https://127.0.0.1:{}/m.gguf", nginx.port);

    // The built-in web roots do not know the private CA: refused, naming the URL.
    let o = fetch_url(&hq, &url, &sha(&model), &[]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains(&url) && o.stderr.to_lowercase().contains("certificate"),
        "{}",
        o.stderr
    );
    assert_store(&hq, &[]);
    // With --ca-file the private CA is trusted (beside the web roots).
    let ca = d.join("ca.pem");
    let o = fetch_url(
        &hq,
        &url,
        &sha(&model),
        &["--ca-file", ca.to_str().unwrap()],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_store(&hq, &[&sha(&model)]);
    // A --ca-file without a certificate is a usage error naming the file.
    let o = fetch_url(
        &d.join("hq2"),
        &url,
        &sha(&model),
        &["--ca-file", d.join("ext.cnf").to_str().unwrap()],
    );
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("ext.cnf") && o.stderr.contains("no PEM certificate"),
        "{}",
        o.stderr
    );
}

#[test]
fn recipe_names_catalog_entries_fetched_into_the_store_once() {
    use std::os::unix::fs::MetadataExt;
    let ws = crate::util::Ws::new();
    let hq = ws.path("hq-history");
    let model_path = ws.model("www/models/tiny.gguf", 64, 7);
    let model = std::fs::read(&model_path).unwrap();
    let guide = b"how to use the tiny model\n".to_vec();
    ws.file("www/docs/guide.txt", &guide);
    let nginx = Nginx::start(&ws.path("www"), "");
    let text = catalog(&[
        ("tiny", "1.0.0", &model, vec![nginx.url("models/tiny.gguf")]),
        ("guide", "1", &guide, vec![nginx.url("docs/guide.txt")]),
    ])
    .replace(
        "kind = \"model\"\nformat = \"gguf\"\nsize = 26",
        "kind = \"doc\"\nformat = \"txt\"\nsize = 26",
    );
    ws.file("www/catalog.toml", text.as_bytes());
    ws.file(
        "offgrid.toml",
        b"bundle_id = \"org.example.cat\"\nrelease = \"1.0.0\"\nsigners = [\"hq.key\"]\nhost_binary = false\n\
          [[models]]\ncatalog = \"tiny@1.0.0\"\n\
          [[files]]\ndest = \"docs/guide.txt\"\ncatalog = \"guide@1\"\n",
    );

    // Without a catalog: a clear usage error naming the entries.
    let o = ws
        .offgrid(&["pack-usb", "stick1", "--recipe", "offgrid.toml"])
        .failure()
        .code(2);
    let err = String::from_utf8_lossy(&o.get_output().stderr).into_owned();
    assert!(
        err.contains("tiny@1.0.0, guide@1") && err.contains("help: pass --catalog"),
        "{err}"
    );
    assert!(!ws.path("stick1").exists());

    // With the catalog by URL: both entries are fetched (verified) into the store, and
    // the stick carries them.
    let cat_url = nginx.url("catalog.toml");
    ws.offgrid(&[
        "pack-usb",
        "stick1",
        "--recipe",
        "offgrid.toml",
        "--catalog",
        &cat_url,
    ])
    .success();
    assert_eq!(
        std::fs::read(ws.path("stick1/models/tiny.gguf")).unwrap(),
        model
    );
    assert_eq!(
        std::fs::read(ws.path("stick1/docs/guide.txt")).unwrap(),
        guide
    );
    assert_store_has(&hq, &[&sha(&model), &sha(&guide)]);
    for s in [sha(&model), sha(&guide)] {
        assert!(hq.join("fetched").join(format!("{s}.json")).exists());
    }
    let obj = hq.join("objects").join(&sha(&model)[..2]).join(sha(&model));
    let ino = std::fs::metadata(&obj).unwrap().ino();
    let manifest = std::fs::read_to_string(ws.path("stick1/manifest.toml")).unwrap();
    assert!(manifest.contains("models/tiny.gguf"), "{manifest}");

    // The mirrors gone, the same recipe packs again from the store: nothing is
    // downloaded, the object is the same file (never copied twice into the store).
    drop(nginx);
    let local = ws.file("catalog.toml", text.as_bytes());
    ws.offgrid(&[
        "pack-usb",
        "stick2",
        "--recipe",
        "offgrid.toml",
        "--release",
        "1.0.1",
        "--catalog",
        local.to_str().unwrap(),
    ])
    .success();
    assert_eq!(
        std::fs::read(ws.path("stick2/models/tiny.gguf")).unwrap(),
        model
    );
    assert_eq!(std::fs::metadata(&obj).unwrap().ino(), ino);
    assert_store_has(&hq, &[&sha(&model), &sha(&guide)]);

    // An entry the catalog does not have: exit 2, listing what it has.
    ws.file(
        "bad.toml",
        b"release = \"2\"\nsigners = [\"hq.key\"]\nhost_binary = false\n[[models]]\ncatalog = \"tiny@9.0\"\n",
    );
    let o = ws
        .offgrid(&[
            "pack-usb",
            "stick3",
            "--recipe",
            "bad.toml",
            "--catalog",
            local.to_str().unwrap(),
        ])
        .failure()
        .code(2);
    let err = String::from_utf8_lossy(&o.get_output().stderr).into_owned();
    assert!(
        err.contains("no entry 'tiny@9.0'") && err.contains("tiny@1.0.0"),
        "{err}"
    );
}
