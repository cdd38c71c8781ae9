//! `cargo xtask bench fetch [--size-mib N]`: `offgrid fetch` of N MiB (default 1024) from
//! nginx on loopback against `curl -o` of the same URL, in one run (throughput ratio,
//! goal ≥ 0.9 of curl's); then a fetch SIGKILLed at 50% and resumed: bytes nginx sent
//! for the resume against the bytes still missing at the kill (goal ≤ 1.05).
//!
//! nginx (Debian's nginx-light, `/usr/sbin/nginx`) runs with a generated config in a temp
//! dir and logs `$body_bytes_sent` of every request, which is how bytes moved are counted.
//! offgrid verifies the sha256 as it downloads; curl does not, so the first ratio
//! includes offgrid's hashing, and a second compares with `curl -o f && openssl sha256 f`
//! (OpenSSL's SHA-256 is the fastest stock one: SHA-NI where the CPU has it).
//! The run also measures the SHA-256 floor: one SHA-256 stream of N MiB on one core
//! (`openssl speed`, and the `sha2` crate offgrid uses, in memory). No client that checks
//! a whole-file SHA-256 can finish before that, so `curl -o`'s time over the floor is the
//! highest ratio any verifying client can reach on this machine; the bench prints it
//! beside the goal, and offgrid's time over the floor (also over the floor measured while
//! the other core copies memory, as the receive path does during a fetch).
//! offgrid also makes the object durable (fsync) before it reports success, while
//! `curl -o`'s file only reaches the page cache (and is deleted before the kernel writes
//! it out); a third line times `curl -o f && sync f`, the same download made durable, to
//! show how much of the gap is the disk. Page cache is warm for all (the file was just
//! written). The throughput is measured twice in the same run: into the temp folder (a
//! disk) and into tmpfs (`/dev/shm`), where no program waits for a disk: that is what
//! each program itself costs, and what decides the ratio on any link slower than the
//! disk (every real one).

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::Opts;
use crate::nginx::{self, Nginx};
use crate::util;

/// Rounds of the compared pair (curl -o and offgrid, alternating; best of each): the
/// loopback times vary by a third between runs on a shared 2-core machine.
const ROUNDS: usize = 5;

/// Rounds of the informative lines (curl + openssl sha256, curl + sync).
const SIDE_ROUNDS: usize = 2;

/// Best times, each tool in turn.
struct Times {
    curl: Duration,
    /// `curl -o f && openssl sha256 f`.
    curl_sha: Duration,
    curl_sync: Duration,
    ours: Duration,
}

/// Alternates curl and offgrid (its HQ store in `dir`), writing into `dir`, best of
/// [`ROUNDS`]; then curl + openssl sha256 and curl + sync, best of [`SIDE_ROUNDS`].
fn throughput(offgrid: &Path, url: &str, sha: &str, dir: &Path) -> Result<Times> {
    let out = dir.join("curl.out");
    let mut t = Times {
        curl: Duration::MAX,
        curl_sha: Duration::MAX,
        curl_sync: Duration::MAX,
        ours: Duration::MAX,
    };
    let curl = || util::run(Command::new("curl").args(["-s", "-o"]).arg(&out).arg(url));
    for i in 0..ROUNDS {
        let _ = fs::remove_file(&out);
        let start = Instant::now();
        curl()?;
        t.curl = t.curl.min(start.elapsed());
        let _ = fs::remove_file(&out);
        let hq = dir.join(format!("hq{i}"));
        let start = Instant::now();
        util::run(
            Command::new(offgrid)
                .args(["fetch", url, "--sha256", sha, "--history"])
                .arg(&hq),
        )?;
        t.ours = t.ours.min(start.elapsed());
        let _ = fs::remove_dir_all(&hq);
    }
    for _ in 0..SIDE_ROUNDS {
        let _ = fs::remove_file(&out);
        let start = Instant::now();
        curl()?;
        util::run(
            Command::new("openssl")
                .args(["sha256"])
                .arg(&out)
                .stdout(Stdio::null()),
        )?;
        t.curl_sha = t.curl_sha.min(start.elapsed());
        let _ = fs::remove_file(&out);
        let start = Instant::now();
        curl()?;
        util::run(Command::new("sync").arg(&out))?;
        t.curl_sync = t.curl_sync.min(start.elapsed());
        let _ = fs::remove_file(&out);
    }
    Ok(t)
}

fn start_nginx(dir: &Path, root: &Path, log: &Path) -> Result<(Nginx, u16)> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let listen = format!("127.0.0.1:{port}");
    let cfg = nginx::Config {
        listen: &listen,
        bytes_log: Some(log),
        ..Default::default()
    };
    let mut n = Nginx::spawn(Command::new(nginx::PROGRAM), dir, root, &cfg)?;
    n.wait_loopback(port)?;
    Ok((n, port))
}

/// The SHA-256 floor, in seconds for `size` bytes hashed from memory on one core.
struct Floor {
    /// `openssl speed sha256` (the stock tool).
    openssl: f64,
    /// The `sha2` crate offgrid uses, best of 3.
    sha2: f64,
    /// The same while another thread copies memory, as a download's receive path must on
    /// the other core (socket to buffer to page cache); on a VM whose two vCPUs share a
    /// physical core this is the floor a fetch actually meets.
    sha2_beside_copy: f64,
}

fn sha256_floor(size: u64) -> Result<Floor> {
    use sha2::{Digest, Sha256};
    use std::sync::atomic::{AtomicBool, Ordering};
    let out = Command::new("openssl")
        .args(["speed", "-bytes", "1048576", "-seconds", "2", "sha256"])
        .stderr(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // The last line: `sha256   1114636.29k` (thousands of bytes per second).
    let kbps: f64 = text
        .lines()
        .filter(|l| l.starts_with("sha256"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|v| v.trim_end_matches('k').parse().ok())
        .next_back()
        .ok_or_else(|| anyhow::anyhow!("could not read `openssl speed sha256`: {text}"))?;
    let block = vec![0x5au8; 64 << 20];
    let hash_all = || {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let start = Instant::now();
            let mut h = Sha256::new();
            let mut left = size;
            while left > 0 {
                let n = left.min(block.len() as u64) as usize;
                h.update(&block[..n]);
                left -= n as u64;
            }
            std::hint::black_box(h.finalize());
            best = best.min(start.elapsed().as_secs_f64());
        }
        best
    };
    let sha2 = hash_all();
    let stop = AtomicBool::new(false);
    let sha2_beside_copy = std::thread::scope(|s| {
        s.spawn(|| {
            let src = vec![1u8; 1 << 20];
            let mut dst = vec![0u8; 1 << 20];
            while !stop.load(Ordering::Relaxed) {
                dst.copy_from_slice(std::hint::black_box(&src));
                std::hint::black_box(&mut dst);
            }
        });
        let t = hash_all();
        stop.store(true, Ordering::Relaxed);
        t
    });
    Ok(Floor {
        openssl: size as f64 / (kbps * 1000.0),
        sha2,
        sha2_beside_copy,
    })
}

/// Sum of `$body_bytes_sent` in the access log.
fn logged_bytes(log: &Path) -> u64 {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .sum()
}

/// Bytes the partial state claims (sum of `done`), 0 when unreadable.
fn state_done(hq: &Path, sha: &str) -> u64 {
    let p = hq.join("partial").join(format!("{sha}.state"));
    fs::read(p)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v["done"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_u64()).sum())
        })
        .unwrap_or(0)
}

pub fn bench(opts: &Opts) -> Result<()> {
    let size = opts.size_mib << 20;
    let offgrid = util::build_offgrid(false)?;
    let tmp = std::env::temp_dir().join(format!("offgrid-bench-fetch-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let www = tmp.join("www");
    fs::create_dir_all(&www)?;
    let file = www.join("big.bin");
    util::write_incompressible(&file, size, 11)?;
    let sha = util::sha256_file(&file)?;
    let log = tmp.join("access.log");
    let (_nginx, port) = start_nginx(&tmp, &www, &log)?;
    let url = format!("http://127.0.0.1:{port}/big.bin");

    // Throughput, twice: into the temp folder (a disk: offgrid's fsync waits for it,
    // curl's page-cache file never does), and into tmpfs (no disk: what each program
    // itself costs, the case of any link slower than this machine's disk).
    let mib = size as f64 / (1 << 20) as f64;
    let shm = Path::new("/dev/shm").join(format!("offgrid-bench-fetch-{}", std::process::id()));
    let mut places = vec![("disk", tmp.clone())];
    if Path::new("/dev/shm").is_dir() {
        fs::create_dir_all(&shm)?;
        places.push(("tmpfs", shm.clone()));
    }
    let f = sha256_floor(size)?;
    let floor = f.openssl.min(f.sha2);
    println!(
        "sha256 floor: one core hashes {mib:.0} MiB from memory in {:.3} s (openssl speed), {:.3} s (sha2, as offgrid); {:.3} s while the other core copies memory",
        f.openssl, f.sha2, f.sha2_beside_copy
    );
    for (label, dir) in &places {
        let t = throughput(&offgrid, &url, &sha, dir)?;
        println!(
            "fetch {mib:.0} MiB from nginx on loopback into {label} ({}), best of {ROUNDS}: offgrid {:.3} s ({:.0} MiB/s, sha256 verified, fsynced), curl -o {:.3} s ({:.0} MiB/s)",
            dir.display(),
            t.ours.as_secs_f64(),
            mib / t.ours.as_secs_f64(),
            t.curl.as_secs_f64(),
            mib / t.curl.as_secs_f64()
        );
        println!(
            "  best of {SIDE_ROUNDS}: curl -o && openssl sha256 {:.3} s ({:.0} MiB/s); curl -o && sync (durable) {:.3} s ({:.0} MiB/s)",
            t.curl_sha.as_secs_f64(),
            mib / t.curl_sha.as_secs_f64(),
            t.curl_sync.as_secs_f64(),
            mib / t.curl_sync.as_secs_f64()
        );
        println!(
            "  {label}: fetch throughput ratio offgrid/curl: {:.3} (goal >= 0.9; the most a client verifying sha256 can reach here: curl/floor = {:.3}); offgrid/(curl + openssl sha256): {:.3}; offgrid/(curl + sync): {:.3}",
            t.curl.as_secs_f64() / t.ours.as_secs_f64().max(1e-9),
            (t.curl.as_secs_f64() / floor).min(1.0),
            t.curl_sha.as_secs_f64() / t.ours.as_secs_f64().max(1e-9),
            t.curl_sync.as_secs_f64() / t.ours.as_secs_f64().max(1e-9)
        );
        println!(
            "  {label}: offgrid's time over the sha256 floor: {:.3} (1.0 = hashing is all it costs), over the floor beside a copy: {:.3}",
            t.ours.as_secs_f64() / floor,
            t.ours.as_secs_f64() / f.sha2_beside_copy
        );
    }
    let _ = fs::remove_dir_all(&shm);

    // Kill at 50%, then resume.
    let hq = tmp.join("hq-kill");
    let _ = fs::write(&log, b"");
    let mut child = Command::new(&offgrid)
        .args(["fetch", &url, "--sha256", &sha, "--history"])
        .arg(&hq)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let t = Instant::now();
    while state_done(&hq, &sha) < size / 2 {
        if child.try_wait()?.is_some() {
            bail!("the fetch finished before it could be killed at 50%; use a larger --size-mib");
        }
        if t.elapsed() > Duration::from_secs(600) {
            bail!("the fetch did not reach 50% in 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill()?; // SIGKILL
    child.wait()?;
    std::thread::sleep(Duration::from_millis(300)); // let nginx log the aborted requests
    let before = logged_bytes(&log);
    let remaining = size.saturating_sub(before);
    util::run(
        Command::new(&offgrid)
            .args(["fetch", &url, "--sha256", &sha, "--history"])
            .arg(&hq),
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let resumed = logged_bytes(&log) - before;
    println!(
        "kill at {:.1}% then resume: nginx sent {before} bytes before the kill, {resumed} for the resume; {remaining} were missing; ratio {:.3} (goal <= 1.05)",
        before as f64 * 100.0 / size as f64,
        resumed as f64 / remaining.max(1) as f64
    );
    let _ = fs::remove_dir_all(&tmp);
    Ok(())
}
