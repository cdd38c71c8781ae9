//! Sites report back (SPEC.md §17): site keys made at install, signed receipts written
//! onto a stick and checked with stock minisign, HQ importing them and showing the
//! fleet, one pack built for the whole fleet, and expiry judged against the newest
//! signed time a site has seen, never its clock.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use offgrid::manifest::FileKind;
use serde_json::Value;

use crate::util::{self as u, f, make_tree, world, World};

/// `offgrid ARGS` in `w` with `home` as the site home.
fn at(w: &World, home: &Path) -> assert_cmd::Command {
    let mut c = w.cmd();
    c.env("OFFGRID_HOME", home);
    c
}

/// The JSON Lines records of `out` with type `ty`.
fn records(out: &[u8], ty: &str) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == ty)
        .map(|v| v["data"].clone())
        .collect()
}

fn install(w: &World, home: &Path, tree: &str, extra: &[&str]) -> assert_cmd::assert::Assert {
    at(w, home)
        .args(["install", "--from", tree, "--pubkey"])
        .arg(&w.pubkey)
        .args(extra)
        .assert()
}

/// `offgrid receipt --to stick` for the site at `home`, which must succeed.
fn receipt_to_stick(w: &World, home: &Path) {
    at(w, home)
        .args(["receipt", "--to", "stick"])
        .assert()
        .success();
}

fn site_id(w: &World, home: &Path) -> String {
    let out = at(w, home).args(["site-key", "--json"]).assert().success();
    records(&out.get_output().stdout, "site-key")[0]["site_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A third and fourth release of the world's bundle: the README and changelog change,
/// the model gains a tail, the rest is as in 1.1.0.
fn later_release(w: &World, dir: &str, version: &str, created: &str) {
    let v2 = w.p("v2");
    let read = |rel: &str| fs::read(v2.join(rel)).unwrap();
    let bin: &'static str = Box::leak(format!("bin/{}/offgrid", u::host()).into_boxed_str());
    let mut model = read("models/tiny.gguf");
    model.extend_from_slice(&u::noise(2048, version.len() as u64 + 7));
    make_tree(
        &w.p(dir),
        version,
        created,
        &[
            f("models/tiny.gguf", model, FileKind::Model),
            f(
                "README.txt",
                format!("offgrid clinic bundle {version}\n").into_bytes(),
                FileKind::Doc,
            ),
            f(
                "CHANGELOG.txt",
                format!("{version}: more\n").into_bytes(),
                FileKind::Changelog,
            ),
            f("data/same.txt", read("data/same.txt"), FileKind::Data),
            f("data/new.txt", read("data/new.txt"), FileKind::Data),
            f(bin, read(bin), FileKind::Binary),
        ],
        &[&w.key],
    );
}

#[test]
fn install_makes_a_site_key_that_status_and_site_key_show() {
    let w = world(64 << 10);
    let home = w.home();
    install(&w, &home, "v1", &["--no-receipt"]).success();
    let key = home.join("site/site.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "site.key mode {mode:o}");
    }
    // site-key prints a stock minisign public key file; its key id is the site id.
    let out = at(&w, &home).arg("site-key").assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    fs::write(w.p("site.pub"), &text).unwrap();
    let id = u::key_id(&w.p("site.pub"));
    assert_eq!(site_id(&w, &home), id);
    assert_eq!(
        fs::read_to_string(home.join("site/site.pub")).unwrap(),
        text
    );
    let out = at(&w, &home).arg("status").assert().success();
    let s = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(
        s.contains(&format!("site:      {id} (key fingerprint ")),
        "{s}"
    );
    // The newest signed time seen is 1.0.0's created.
    assert!(
        s.contains("newest signed time seen 2026-11-01T10:00:00Z"),
        "{s}"
    );
    // A later install keeps the key.
    install(&w, &home, "v2", &["--no-receipt"]).success();
    assert_eq!(site_id(&w, &home), id);
    // A home with nothing installed has no site key to print.
    at(&w, &w.p("empty"))
        .arg("site-key")
        .assert()
        .code(2)
        .stderr(predicates::str::contains("has no site key yet"));
}

#[test]
fn a_receipt_is_signed_by_the_site_key_and_stock_minisign_checks_it() {
    let w = world(64 << 10);
    let home = w.home();
    install(&w, &home, "v1", &["--no-receipt"]).success();
    let id = site_id(&w, &home);
    fs::create_dir(w.p("stick")).unwrap();
    at(&w, &home)
        .args(["receipt", "--to", "stick"])
        .assert()
        .success()
        .stdout(predicates::str::contains(format!(
            "wrote receipt 1 of site {id} (release 1.0.0, 0 damaged file(s))"
        )));
    let dir = w.p("stick/receipts");
    let toml_path = dir.join(format!("{id}.toml"));
    let out = Command::new("minisign")
        .args(["-V", "-m"])
        .arg(&toml_path)
        .arg("-p")
        .arg(dir.join(format!("{id}.pub")))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!(
            "offgrid-receipt site={id} bundle={} release=1.0.0 sequence=1 receipt_sha256={}",
            u::BUNDLE,
            u::sha(&fs::read(&toml_path).unwrap())
        )),
        "{said}"
    );
    let r: toml::Value = toml::from_str(&fs::read_to_string(&toml_path).unwrap()).unwrap();
    assert_eq!(r["format"].as_str(), Some("offgrid-receipt/1"));
    assert_eq!(r["release"].as_str(), Some("1.0.0"));
    assert_eq!(r["platform"].as_str(), Some(u::host().as_str()));
    assert_eq!(r["history"][0]["event"].as_str(), Some("install"));
    assert!(r["free_bytes"].as_integer().unwrap() > 0);
    // The next receipt has the next sequence number and replaces this site's file.
    receipt_to_stick(&w, &home);
    let r: toml::Value = toml::from_str(&fs::read_to_string(&toml_path).unwrap()).unwrap();
    assert_eq!(r["sequence"].as_integer(), Some(2));
    // A file at this site's name signed by another key is never replaced.
    let other = w.p("other");
    install(&w, &other, "v1", &["--no-receipt"]).success();
    let oid = site_id(&w, &other);
    fs::create_dir(w.p("stick2")).unwrap();
    at(&w, &other)
        .args(["receipt", "--to", "stick2"])
        .assert()
        .success();
    fs::create_dir(w.p("stick2/receipts/x")).unwrap();
    let stray = w.p(&format!("stick2/receipts/{id}.toml.minisig"));
    fs::copy(w.p(&format!("stick2/receipts/{oid}.toml.minisig")), &stray).unwrap();
    let before = fs::read(&stray).unwrap();
    at(&w, &home)
        .args(["receipt", "--to", "stick2"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains(format!(
            "is not this site's receipt (it is signed by key {oid})"
        )));
    assert_eq!(fs::read(&stray).unwrap(), before);
    // --to a file is a usage error.
    at(&w, &home)
        .args(["receipt", "--to", "v1/manifest.toml"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "is not a folder to write receipts into",
        ));
}

#[test]
fn install_and_apply_write_a_receipt_beside_their_source_unless_told_not_to() {
    let w = world(64 << 10);
    let home = w.home();
    install(&w, &home, "v1", &[])
        .success()
        .stderr(predicates::str::contains("receipt 1 of site"));
    let id = site_id(&w, &home);
    assert!(w.p(&format!("v1/receipts/{id}.toml")).is_file());
    // verify still passes on the stick: receipts/ is not part of the release.
    w.cmd()
        .args(["verify", "v1", "--pubkey"])
        .arg(&w.pubkey)
        .assert()
        .success();
    u::make_pack(&w, "up.ogpack", &[]);
    at(&w, &home)
        .args(["apply-update", "up.ogpack", "--no-receipt"])
        .assert()
        .success();
    assert!(!w.p("receipts").exists());
    // A refused apply is remembered as a failure and reported in the next receipt.
    at(&w, &home)
        .args(["apply-update", "up.ogpack"])
        .assert()
        .code(1);
    at(&w, &home)
        .args(["receipt", "--to", "."])
        .assert()
        .success();
    let r: toml::Value =
        toml::from_str(&fs::read_to_string(w.p(&format!("receipts/{id}.toml"))).unwrap()).unwrap();
    let failures = r["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{r}");
    assert_eq!(failures[0]["op"].as_str(), Some("apply-update"));
    assert!(failures[0]["reason"]
        .as_str()
        .unwrap()
        .contains("not newer than the installed release 1.1.0"));
    assert_eq!(r["previous"].as_str(), Some("1.0.0"));
}

#[test]
fn hq_imports_receipts_trusts_first_use_or_enrolled_keys_and_keeps_the_newest() {
    let w = world(64 << 10);
    let home = w.home();
    install(&w, &home, "v1", &["--no-receipt"]).success();
    let id = site_id(&w, &home);
    fs::create_dir(w.p("stick")).unwrap();
    receipt_to_stick(&w, &home);
    let rdir = w.p("stick/receipts");
    // --enrolled-only refuses an unknown site.
    w.cmd()
        .args(["receipts", "import", "stick", "--enrolled-only"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains(format!(
            "is from site {id}, which is not enrolled"
        )));
    // Enrol the key the site prints, then import.
    let out = at(&w, &home).arg("site-key").assert().success();
    fs::write(w.p("site.pub"), &out.get_output().stdout).unwrap();
    w.cmd()
        .args(["receipts", "enrol", "site.pub"])
        .assert()
        .success()
        .stdout(predicates::str::contains(format!("enrolled site {id}")));
    let out = w
        .cmd()
        .args(["receipts", "import", "stick", "--enrolled-only", "--json"])
        .assert()
        .success();
    let imp = records(&out.get_output().stdout, "imported");
    assert_eq!(imp.len(), 1);
    assert_eq!(imp[0]["outcome"], "new");
    assert_eq!(imp[0]["trust"], "enrolled");
    // Again: unchanged. Then an older receipt carried back later does not win.
    let old = fs::read(rdir.join(format!("{id}.toml"))).unwrap();
    let old_sig = fs::read(rdir.join(format!("{id}.toml.minisig"))).unwrap();
    receipt_to_stick(&w, &home);
    let out = w
        .cmd()
        .args(["receipts", "import", "stick/receipts", "--json"])
        .assert()
        .success();
    assert_eq!(
        records(&out.get_output().stdout, "imported")[0]["outcome"],
        "updated"
    );
    fs::write(rdir.join(format!("{id}.toml")), &old).unwrap();
    fs::write(rdir.join(format!("{id}.toml.minisig")), &old_sig).unwrap();
    let out = w
        .cmd()
        .args(["receipts", "import", "stick", "--json"])
        .assert()
        .success();
    assert_eq!(
        records(&out.get_output().stdout, "imported")[0]["outcome"],
        "older"
    );
    let out = w.cmd().args(["fleet", "--json"]).assert().success();
    let sites = records(&out.get_output().stdout, "site");
    assert_eq!(sites[0]["sequence"], 2);
    // A tampered receipt is refused (exit 1) and changes nothing at HQ.
    let mut bad = old.clone();
    let n = bad.len();
    bad[n - 3] ^= 1;
    fs::write(rdir.join(format!("{id}.toml")), &bad).unwrap();
    w.cmd()
        .args(["receipts", "import", "stick"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("is refused"));
    // A new site is trusted on first use, and says so.
    let other = w.p("other");
    install(&w, &other, "v1", &["--no-receipt"]).success();
    let oid = site_id(&w, &other);
    fs::create_dir(w.p("stick3")).unwrap();
    at(&w, &other)
        .args(["receipt", "--to", "stick3"])
        .assert()
        .success();
    w.cmd()
        .args(["receipts", "import", "stick3"])
        .assert()
        .success()
        .stdout(predicates::str::contains(format!(
            "{oid}  new        release 1.0.0 (receipt 1)  key trusted on first use"
        )));
    let out = w.cmd().args(["fleet"]).assert().success();
    let table = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(table.contains(&format!("{id}  enrolled ")), "{table}");
    assert!(table.contains(&format!("{oid}  first-use")), "{table}");
}

/// Five homes at three releases report onto one stick; HQ imports them, sees one
/// damaged site and one failure, and one pack built --for-fleet takes all five to the
/// new release.
#[test]
fn a_fleet_of_five_reports_and_one_pack_takes_it_to_the_new_release() {
    let w = world(256 << 10);
    later_release(&w, "v3", "1.2.0", "2026-11-20T10:00:00Z");
    later_release(&w, "v4", "1.3.0", "2026-11-25T10:00:00Z");
    let plan = [
        ("a", "v1"),
        ("b", "v1"),
        ("c", "v2"),
        ("d", "v2"),
        ("e", "v3"),
    ];
    let homes: Vec<PathBuf> = plan
        .iter()
        .map(|(h, _)| w.p(&format!("sites/{h}")))
        .collect();
    for ((_, tree), home) in plan.iter().zip(&homes) {
        install(&w, home, tree, &["--no-receipt"]).success();
    }
    // Site c tries an old stick (refused, remembered); site e has a damaged file.
    install(&w, &homes[2], "v1", &["--no-receipt"]).code(1);
    let damaged = u::current_dir(&homes[4]).join("data/same.txt");
    let good = fs::read(&damaged).unwrap();
    let mut bad = good.clone();
    bad[10] ^= 0xff;
    fs::write(&damaged, &bad).unwrap();
    fs::create_dir(w.p("stick")).unwrap();
    for home in &homes {
        at(&w, home)
            .args(["receipt", "--to", "stick", "--verify"])
            .assert()
            .success();
    }
    assert_eq!(fs::read_dir(w.p("stick/receipts")).unwrap().count(), 15);
    let out = w
        .cmd()
        .args(["receipts", "import", "stick", "--json"])
        .assert()
        .success();
    assert_eq!(records(&out.get_output().stdout, "imported").len(), 5);
    let out = w.cmd().args(["fleet", "--json"]).assert().success();
    let sites = records(&out.get_output().stdout, "site");
    assert_eq!(sites.len(), 5);
    let by_id = |home: &Path| {
        let id = site_id(&w, home);
        sites
            .iter()
            .find(|s| s["site_id"] == id.as_str())
            .unwrap()
            .clone()
    };
    for ((_, tree), home) in plan.iter().zip(&homes) {
        let want = match *tree {
            "v1" => "1.0.0",
            "v2" => "1.1.0",
            _ => "1.2.0",
        };
        assert_eq!(by_id(home)["release"], want);
    }
    assert_eq!(by_id(&homes[2])["failures"], 1);
    assert_eq!(by_id(&homes[0])["failures"], 0);
    let dmg = by_id(&homes[4])["damage"].as_array().unwrap().clone();
    assert_eq!(dmg.len(), 1, "{dmg:?}");
    assert!(dmg[0].as_str().unwrap().contains("data/same.txt"));
    assert_eq!(by_id(&homes[0])["damage"].as_array().unwrap().len(), 0);
    let out = w.cmd().arg("fleet").assert().success();
    let table = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(table.contains("1 file(s): 'data/same.txt'"), "{table}");
    assert!(table.contains("5 site(s)"), "{table}");

    // One pack for the fleet: it serves exactly the three releases the sites run.
    let out = w
        .cmd()
        .args([
            "create-update-pack",
            "--record",
            "v1",
            "--record",
            "v2",
            "--record",
            "v3",
            "--tree",
            "v4",
            "--for-fleet",
            "-o",
            "fleet.ogpack",
            "--json",
            "--sign-with",
        ])
        .arg(&w.key)
        .assert()
        .success();
    let r = &records(&out.get_output().stdout, "update-pack")[0];
    assert_eq!(r["from"], serde_json::json!(["1.0.0", "1.1.0", "1.2.0"]));
    // The damaged site is repaired first (its damage would refuse the pack's base).
    fs::write(&damaged, &good).unwrap();
    for home in &homes {
        at(&w, home)
            .args(["apply-update", "fleet.ogpack", "--no-receipt"])
            .assert()
            .success();
        u::assert_installed(
            home,
            &offgrid::manifest::Manifest::parse(&fs::read(w.p("v4/manifest.toml")).unwrap())
                .unwrap(),
        );
        receipt_to_stick(&w, home);
    }
    w.cmd()
        .args(["receipts", "import", "stick"])
        .assert()
        .success();
    let out = w.cmd().args(["fleet", "--json"]).assert().success();
    let sites = records(&out.get_output().stdout, "site");
    assert!(sites.iter().all(|s| s["release"] == "1.3.0"), "{sites:?}");
    assert!(sites
        .iter()
        .all(|s| s["damage"].as_array().unwrap().is_empty()));
    // Now nobody needs a pack.
    w.cmd()
        .args([
            "create-update-pack",
            "--to",
            "1.3.0",
            "--for-fleet",
            "-o",
            "none.ogpack",
            "--sign-with",
        ])
        .arg(&w.key)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("no site of 'org.example.clinic'"));
}

/// Expiry is judged against the newest signed time the site has seen, never its clock.
#[test]
fn an_expired_release_is_refused_only_by_a_site_that_has_seen_newer() {
    let w = world(64 << 10);
    // 1.0.5 was signed on 11-05 and expires on 11-10 (today's wall clock is later still).
    let v1 = w.p("v1");
    let read = |rel: &str| fs::read(v1.join(rel)).unwrap();
    let bin: &'static str = Box::leak(format!("bin/{}/offgrid", u::host()).into_boxed_str());
    let dir = w.p("v105");
    fs::create_dir_all(dir.join("signatures")).unwrap();
    let files = [
        f(
            "models/tiny.gguf",
            read("models/tiny.gguf"),
            FileKind::Model,
        ),
        f("README.txt", b"1.0.5\n".to_vec(), FileKind::Doc),
        f(bin, read(bin), FileKind::Binary),
    ];
    let mut m = make_tree(&dir, "1.0.5", "2026-11-05T10:00:00Z", &files, &[&w.key]);
    m.expires = Some("2026-11-10T00:00:00Z".into());
    let text = m.to_toml();
    assert!(
        text.contains("expires = \"2026-11-10T00:00:00Z\""),
        "{text}"
    );
    fs::write(dir.join("manifest.toml"), &text).unwrap();
    fs::remove_dir_all(dir.join("signatures")).unwrap();
    fs::create_dir(dir.join("signatures")).unwrap();
    u::sign_file(
        &dir.join("manifest.toml"),
        &w.key,
        &format!(
            "offgrid bundle={} release=1.0.5 manifest_sha256={}",
            u::BUNDLE,
            u::sha(text.as_bytes())
        ),
        &dir.join("signatures"),
    );
    // A fresh site has seen nothing newer: it installs, although its clock is past
    // the expiry.
    let fresh = w.p("fresh");
    install(&w, &fresh, "v105", &["--no-receipt"]).success();
    // A site that has seen 1.1.0 (signed 11-15) and rolled back to 1.0.0 refuses it.
    let home = w.home();
    install(&w, &home, "v1", &["--no-receipt"]).success();
    install(&w, &home, "v2", &["--no-receipt"]).success();
    at(&w, &home).arg("rollback").assert().success();
    let out = at(&w, &home).args(["status", "--json"]).assert().success();
    let st = &records(&out.get_output().stdout, "status")[0];
    assert_eq!(st["release"], "1.0.0");
    assert_eq!(st["site"]["newest_signed"], "2026-11-15T10:00:00Z");
    at(&w, &home)
        .args(["install", "--from", "v105", "--no-receipt"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "release 1.0.5 expired at 2026-11-10T00:00:00Z, and this site has seen a release signed at 2026-11-15T10:00:00Z",
        ));
    let out = at(&w, &home).args(["status", "--json"]).assert().success();
    assert_eq!(
        records(&out.get_output().stdout, "status")[0]["release"],
        "1.0.0"
    );
    // An `expires` that is not after `created` is refused by the manifest parser.
    m.expires = Some("2026-11-01T00:00:00Z".into());
    assert!(offgrid::manifest::Manifest::parse(m.to_toml().as_bytes()).is_err());
}

/// The example in formats/ is a real receipt: stock minisign checks it with the
/// example site key, and offgrid reads it.
#[test]
fn the_receipt_example_verifies_with_stock_minisign() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("formats");
    let out = Command::new("minisign")
        .args(["-V", "-m"])
        .arg(dir.join("receipt.example.toml"))
        .arg("-x")
        .arg(dir.join("receipt.example.toml.minisig"))
        .arg("-p")
        .arg(dir.join("receipt.example.pub"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = fs::read(dir.join("receipt.example.toml")).unwrap();
    let r = offgrid::site::receipt::Receipt::parse(&text).unwrap();
    assert_eq!(r.to_toml().as_bytes(), text.as_slice());
}

/// HQ sets `expires` with pack-usb; a time that is not after `created` is refused.
#[test]
fn pack_usb_expires_sets_the_signed_manifest_field() {
    let ws = crate::util::Ws::new();
    ws.model("in/tiny.gguf", 64, 1);
    let args = |expires: &'static str| {
        vec![
            "pack-usb",
            "stick",
            "--release",
            "1.0",
            "--bundle-id",
            "org.example.clinic",
            "--model",
            "in/tiny.gguf",
            "--sign-with",
            "hq.key",
            "--expires",
            expires,
        ]
    };
    ws.offgrid(&args("2001-01-01"))
        .code(2)
        .stderr(predicates::str::contains(
            "--expires '2001-01-01' is not after the release's creation time",
        ));
    ws.offgrid(&args("soon"))
        .code(2)
        .stderr(predicates::str::contains("--expires 'soon' is not a time"));
    assert!(!ws.path("stick/manifest.toml").exists());
    ws.offgrid(&args("2099-06-30")).success();
    let text = fs::read_to_string(ws.path("stick/manifest.toml")).unwrap();
    assert!(
        text.contains("expires = \"2099-06-30T23:59:59Z\""),
        "{text}"
    );
    ws.offgrid(&["verify", "stick", "--pubkey", "hq.pub"])
        .success();
}
