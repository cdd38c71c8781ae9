//! The HQ side as a user drives it: `pack-usb` records each release in the history,
//! `create-update-pack` takes the new release from the same flags as pack-usb, and the
//! field installs the stick and applies the pack: the site ends up with exactly the
//! manifest the history recorded for the new release.

use crate::util;

use std::fs;

use predicates::prelude::*;
use util::*;

fn model(path: &std::path::Path, seed: u8, tweak: bool) {
    let n = 256 * 1024;
    let mut data: Vec<u8> = (0..n * 4)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    if tweak {
        for i in (0..data.len()).step_by(50_000) {
            data[i] ^= 0xff;
        }
    }
    let mut buf = Vec::new();
    offgrid::gguf::write_synthetic(
        &mut buf,
        &[
            (
                "general.architecture",
                offgrid::gguf::MetaValue::Str("llama".into()),
            ),
            ("general.file_type", offgrid::gguf::MetaValue::U32(3)),
        ],
        &[("w", vec![n as u64], &data)],
    )
    .unwrap();
    fs::write(path, buf).unwrap();
}

#[test]
fn pack_usb_records_and_create_update_pack_takes_pack_usb_flags() {
    let d = tempdir(true);
    let run = || {
        let mut c = assert_cmd::Command::cargo_bin("offgrid").unwrap();
        c.current_dir(d.path())
            .env("OFFGRID_HQ", d.path().join("hq"))
            .env("OFFGRID_HOME", d.path().join("site"))
            .env_remove("OFFGRID_PASSWORD")
            .env_remove("OFFGRID_FAULT_AT");
        c
    };
    keypair(d.path(), "hq");
    model(&d.path().join("tiny.gguf"), 1, false);
    fs::create_dir(d.path().join("new")).unwrap();
    model(&d.path().join("new/tiny.gguf"), 1, true);
    fs::write(d.path().join("c1.md"), "1.0.0: first\n").unwrap();
    fs::write(d.path().join("c2.md"), "1.1.0: tuned model\n").unwrap();

    run()
        .args([
            "pack-usb",
            "stick",
            "--bundle-id",
            "org.example.x",
            "--release",
            "1.0.0",
            "--model",
            "tiny.gguf",
            "--changelog",
            "c1.md",
            "--sign-with",
            "hq.key",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("recorded:"));
    assert!(d
        .path()
        .join("hq/releases/org.example.x/1.0.0/manifest.toml")
        .is_file());
    run()
        .args(["install", "--from", "stick", "--pubkey", "hq.pub"])
        .assert()
        .success();

    // A base the history does not have is refused before anything is recorded.
    run()
        .args([
            "create-update-pack",
            "--since",
            "0.9",
            "--output",
            "x.ogpack",
            "--bundle-id",
            "org.example.x",
            "--release",
            "1.1.0",
            "--model",
            "new/tiny.gguf",
            "--sign-with",
            "hq.key",
        ])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("release 0.9 of 'org.example.x' is not recorded")
                .and(predicate::str::contains("recorded releases: 1.0.0")),
        );
    assert!(!d.path().join("hq/releases/org.example.x/1.1.0").exists());
    assert!(!d.path().join("x.ogpack").exists());
    run()
        .args([
            "create-update-pack",
            "--since",
            "1.0.0",
            "--output",
            "u.ogpack",
            "--bundle-id",
            "org.example.x",
            "--release",
            "1.1.0",
            "--model",
            "new/tiny.gguf",
            "--changelog",
            "c2.md",
            "--sign-with",
            "hq.key",
        ])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("models/tiny.gguf")
                .and(predicate::str::contains("recorded release 1.1.0")),
        );
    run()
        .args(["verify", "u.ogpack", "--pubkey", "hq.pub"])
        .assert()
        .success();
    run()
        .args(["apply-update", "u.ogpack"])
        .assert()
        .success()
        .stdout(predicate::str::contains("1.1.0: tuned model"));
    let recorded = fs::read(
        d.path()
            .join("hq/releases/org.example.x/1.1.0/manifest.toml"),
    )
    .unwrap();
    let site = fs::read(d.path().join("site/current/manifest.toml")).unwrap();
    assert_eq!(recorded, site);
    let m = offgrid::manifest::Manifest::parse(&site).unwrap();
    for f in &m.files {
        let b = fs::read(d.path().join("site/current").join(&f.path)).unwrap();
        assert_eq!(sha(&b), f.sha256, "{}", f.path);
    }
    // The installed version verifies as a tree with the stock verifier too.
    run()
        .args(["verify", "site/current", "--pubkey", "hq.pub"])
        .assert()
        .success();
    run().args(["rollback"]).assert().success();
    run()
        .args(["status"])
        .assert()
        .success()
        .stdout(predicate::str::contains("release:   1.0.0"));
}
