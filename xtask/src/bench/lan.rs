//! `cargo xtask bench lan [--size-mib N]`: a site pulling an N MiB release (default 1024)
//! from a peer over a real network link — three network namespaces (two serving hosts
//! and the site) joined by veth pairs to a bridge — against the standard way over the
//! same link, in one run, and the speed-up of two serving peers over one. Needs root
//! (`ip netns`).
//!
//! Compared: `offgrid install --from http://PEER:8470` (index, signed head, every chunk
//! fetched and verified as it arrives, then the usual verified install) against `curl`
//! fetching every file of the same tree from nginx on the same host, followed by
//! `offgrid install --from` the downloaded folder (same install work on both sides, so
//! the ratio compares the transfer and its verification). Goal: offgrid's throughput
//! ≥ 0.9 of curl's (time ratio ≤ 1.11). Then both serving hosts capped at the same rate
//! (`serve --limit-rate`), one peer against two (`sync --peer A --peer B`): the speed-up.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::Opts;
use crate::nginx::{self, Nginx};
use crate::util;

/// The namespaces and bridge of the bench, deleted on drop.
struct Lan {
    names: Vec<String>,
}

impl Drop for Lan {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn ip(args: &[&str]) -> Result<()> {
    util::run(Command::new("ip").args(args)).with_context(|| {
        format!(
            "ip {} (bench lan needs root for network namespaces)",
            args.join(" ")
        )
    })
}

/// Hosts `ogb-h0..h{n-1}` at 10.214.0.(i+1), all on one bridge.
fn lan(n: usize) -> Result<Lan> {
    let br = "ogb-br".to_owned();
    let _ = Command::new("ip").args(["netns", "del", &br]).status();
    ip(&["netns", "add", &br])?;
    let mut l = Lan {
        names: vec![br.clone()],
    };
    ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", &br, "link", "set", "br0", "up"])?;
    for i in 0..n {
        let h = format!("ogb-h{i}");
        let _ = Command::new("ip").args(["netns", "del", &h]).status();
        ip(&["netns", "add", &h])?;
        l.names.push(h.clone());
        let port = format!("v{i}");
        ip(&[
            "-n", &h, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", &br,
        ])?;
        ip(&["-n", &br, "link", "set", &port, "master", "br0", "up"])?;
        ip(&[
            "-n",
            &h,
            "addr",
            "add",
            &format!("10.214.0.{}/24", i + 1),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &h, "link", "set", "eth0", "up"])?;
        ip(&["-n", &h, "link", "set", "lo", "up"])?;
    }
    Ok(l)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn in_ns(ns: &str, prog: &Path) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(prog);
    c
}

fn serve(bin: &Path, ns: &str, stick: &Path, addr: &str, rate: Option<&str>) -> Result<Killed> {
    let mut c = in_ns(ns, bin);
    c.arg("serve")
        .arg("--stick")
        .arg(stick)
        .args(["--listen", addr, "--no-announce"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(r) = rate {
        c.args(["--limit-rate", r]);
    }
    let k = Killed(c.spawn()?);
    wait_port(ns, addr)?;
    Ok(k)
}

fn wait_port(ns: &str, addr: &str) -> Result<()> {
    let t = Instant::now();
    loop {
        let ok = Command::new("ip")
            .args(["netns", "exec", ns, "curl", "-s", "-o", "/dev/null"])
            .arg(format!("http://{addr}/"))
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(10) {
            bail!("nothing answers on {addr} in {ns}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn nginx(ns: &str, dir: &Path, root: &Path, addr: &str) -> Result<Nginx> {
    let cfg = nginx::Config {
        listen: addr,
        ..Default::default()
    };
    let n = Nginx::spawn(in_ns(ns, Path::new(nginx::PROGRAM)), dir, root, &cfg)?;
    // Inside the namespace: give it the time to bind rather than connecting from outside.
    std::thread::sleep(Duration::from_millis(300));
    Ok(n)
}

/// Runs `cmd`, returning its wall time; fails when it fails.
fn timed(cmd: &mut Command) -> Result<Duration> {
    let t = Instant::now();
    util::run(cmd)?;
    Ok(t.elapsed())
}

pub fn bench(opts: &Opts) -> Result<()> {
    let bin = util::build_offgrid(false)?;
    let work = util::root().join("target/bench-lan");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let model = work.join("model.gguf");
    util::write_model_like(&model, opts.size_mib << 20, 0x1a4)?;
    util::minisign_keypair(&work)?;
    let stick = work.join("stick");
    util::run(
        Command::new(&bin)
            .arg("pack-usb")
            .arg(&stick)
            .args(["--release", "1.0", "--no-host-binary", "--model"])
            .arg(&model)
            .arg("--sign-with")
            .arg(work.join("hq.key")),
    )?;
    fs::remove_file(&model)?;
    // Release 0.9, small: what the sites of the two-peer part have before they sync.
    let small_model = work.join("small.gguf");
    util::write_model_like(&small_model, 1 << 20, 0x9)?;
    let small = work.join("stick-0.9");
    util::run(
        Command::new(&bin)
            .arg("pack-usb")
            .arg(&small)
            .args(["--release", "0.9", "--no-host-binary", "--model"])
            .arg(&small_model)
            .arg("--sign-with")
            .arg(work.join("hq.key")),
    )?;
    let files: Vec<String> = walk(&stick)?;
    let net = lan(3)?;
    let (a, b, site) = ("ogb-h0", "ogb-h1", "ogb-h2");
    let pub_key = work.join("hq.pub");
    println!(
        "bench lan: a {} MiB release over veth + bridge between network namespaces, {} cores",
        opts.size_mib,
        util::cores()
    );

    // 1. One peer, no cap: offgrid against curl from nginx, both followed by the install.
    let ours = {
        let _s = serve(&bin, a, &stick, "10.214.0.1:8470", None)?;
        let home = work.join("home-ours");
        timed(
            in_ns(site, &bin)
                .args(["install", "--from", "http://10.214.0.1:8470", "--pubkey"])
                .arg(&pub_key)
                .arg("--home")
                .arg(&home)
                .stdout(Stdio::null()),
        )?
    };
    let theirs = {
        let _n = nginx(a, &work.join("nginx"), &stick, "10.214.0.1:8080")?;
        let got = work.join("curl-tree");
        let home = work.join("home-curl");
        let t = Instant::now();
        for f in &files {
            let out = got.join(f);
            fs::create_dir_all(out.parent().context("a file has a folder")?)?;
            util::run(
                Command::new("ip")
                    .args(["netns", "exec", site, "curl", "-sf", "-o"])
                    .arg(&out)
                    .arg(format!("http://10.214.0.1:8080/{f}")),
            )?;
        }
        let download = t.elapsed();
        util::run(
            Command::new(&bin)
                .args(["install", "--from"])
                .arg(&got)
                .arg("--pubkey")
                .arg(&pub_key)
                .arg("--home")
                .arg(&home)
                .stdout(Stdio::null()),
        )?;
        println!(
            "  curl alone moved the tree in {:.3} s ({:.0} MiB/s)",
            download.as_secs_f64(),
            opts.size_mib as f64 / download.as_secs_f64()
        );
        t.elapsed()
    };
    util::report(
        "  install --from a peer vs curl from nginx + install",
        ours,
        "curl+install",
        theirs,
        "<= 1.11 (throughput >= 0.9 of curl)",
    );

    // 2. Both peers capped at the same rate: one against two.
    let cap = "100M";
    let one = {
        let _s = serve(&bin, a, &stick, "10.214.0.1:8470", Some(cap))?;
        sync_time(
            &bin,
            site,
            &work,
            "home-one",
            &pub_key,
            &small,
            &["10.214.0.1:8470"],
        )?
    };
    let two = {
        let _s = serve(&bin, a, &stick, "10.214.0.1:8470", Some(cap))?;
        let _t = serve(&bin, b, &stick, "10.214.0.2:8470", Some(cap))?;
        sync_time(
            &bin,
            site,
            &work,
            "home-two",
            &pub_key,
            &small,
            &["10.214.0.1:8470", "10.214.0.2:8470"],
        )?
    };
    println!(
        "  two peers capped at {cap}/s each vs one: {:.3} s vs {:.3} s, speed-up {:.2}x",
        two.as_secs_f64(),
        one.as_secs_f64(),
        one.as_secs_f64() / two.as_secs_f64().max(1e-9)
    );
    drop(net);
    let _ = fs::remove_dir_all(&work);
    Ok(())
}

/// A fresh home at release 0.9 (installed from the small local stick, not timed), then
/// the timed `offgrid sync --peer …` that pulls the big 1.0 from every peer given.
fn sync_time(
    bin: &Path,
    site: &str,
    work: &Path,
    home: &str,
    pub_key: &Path,
    small: &Path,
    peers: &[&str],
) -> Result<Duration> {
    let home = work.join(home);
    util::run(
        in_ns(site, bin)
            .args(["install", "--from"])
            .arg(small)
            .arg("--pubkey")
            .arg(pub_key)
            .arg("--home")
            .arg(&home)
            .stdout(Stdio::null()),
    )?;
    let mut c = in_ns(site, bin);
    c.args(["sync", "--home"]).arg(&home).stdout(Stdio::null());
    for p in peers {
        c.args(["--peer", p]);
    }
    timed(&mut c)
}

/// Every file of a tree, relative, `/`-separated.
fn walk(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root)?.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    Ok(out)
}
