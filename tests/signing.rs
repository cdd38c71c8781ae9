//! Library-level tests of keys, manifest signatures and trust policies, on real files,
//! with interop against the stock `minisign` tool in both directions: offgrid signatures
//! verify with `minisign -V`, and keys and signatures made by `minisign` work in offgrid.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use offgrid::keys::{self, KeyError, PublicKey, SecretKey};
use offgrid::manifest::Manifest;
use offgrid::sign::{self, SignError};
use offgrid::trust::{SignatureStatus, TrustError, TrustPolicy};
use sha2::{Digest, Sha256};

/// A valid manifest text for `release`, and its parsed form.
fn manifest(release: &str) -> (Vec<u8>, Manifest) {
    let body = b"hello from HQ\n";
    let sha = hex::encode(Sha256::digest(body));
    let text = format!(
        r#"format = "offgrid-bundle/1"
bundle_id = "org.example.clinic"
release = "{release}"
created = "2026-11-21T12:00:00Z"
platforms = ["linux-x86_64"]

[[files]]
path = "docs/README.txt"
size = {}
sha256 = "{sha}"
kind = "doc"
chunk_size = 4194304
chunks = ["{sha}"]
"#,
        body.len()
    );
    let m = Manifest::parse(text.as_bytes()).expect("test manifest parses");
    (text.into_bytes(), m)
}

fn no_password() -> impl FnMut() -> Result<String, String> {
    || panic!("the password must not be asked for an unencrypted key")
}

/// An unencrypted offgrid key pair in `dir` named `name`.
fn offgrid_pair(dir: &Path, name: &str) -> (SecretKey, PublicKey, PathBuf) {
    let sk_path = dir.join(format!("{name}.key"));
    let pk_path = dir.join(format!("{name}.pub"));
    let pk = keys::generate(&sk_path, &pk_path, None, false).unwrap();
    let sk = SecretKey::load(&sk_path, &mut no_password()).unwrap();
    assert_eq!(sk.public, pk);
    assert_eq!(PublicKey::load(&pk_path).unwrap(), pk);
    (sk, pk, pk_path)
}

fn minisign(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new("minisign")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the stock minisign tool is installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn sign_then_check_round_trips_with_the_documented_comment() {
    let d = tempfile::tempdir().unwrap();
    let (sk, pk, _) = offgrid_pair(d.path(), "hq");
    let (bytes, m) = manifest("1.4.0");
    let sig = sign::sign_manifest(&sk, &m, &bytes).unwrap();
    let sha = hex::encode(Sha256::digest(&bytes));
    let lines: Vec<&str> = sig.lines().collect();
    assert_eq!(lines.len(), 4, "{sig}");
    assert_eq!(
        lines[2],
        format!("trusted comment: offgrid bundle=org.example.clinic release=1.4.0 manifest_sha256={sha}")
    );
    assert_eq!(&ct_decode(lines[1])[..2], b"ED", "a prehashed signature");
    assert_eq!(sign::signature_key_id(&sig).unwrap(), pk.key_id());
    sign::check(&pk, &sig, &m, &bytes).unwrap();
}

#[test]
fn stock_minisign_verifies_an_offgrid_signature() {
    let d = tempfile::tempdir().unwrap();
    let (sk, pk, pk_path) = offgrid_pair(d.path(), "hq");
    let (bytes, m) = manifest("2.0");
    let mpath = d.path().join("manifest.toml");
    std::fs::write(&mpath, &bytes).unwrap();
    let sig_path = d.path().join(format!("{}.minisig", pk.key_id()));
    std::fs::write(&sig_path, sign::sign_manifest(&sk, &m, &bytes).unwrap()).unwrap();
    // -H: require a prehashed signature
    let out = minisign(
        &[
            "-V",
            "-H",
            "-m",
            s(&mpath),
            "-x",
            s(&sig_path),
            "-p",
            s(&pk_path),
        ],
        "",
    );
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(
            "Trusted comment: offgrid bundle=org.example.clinic release=2.0 manifest_sha256="
        ),
        "{text}"
    );
    // and it fails once the manifest changes
    let mut bad = bytes.clone();
    bad[10] ^= 1;
    std::fs::write(&mpath, &bad).unwrap();
    let out = minisign(
        &["-V", "-m", s(&mpath), "-x", s(&sig_path), "-p", s(&pk_path)],
        "",
    );
    assert!(!out.status.success());
}

#[test]
fn stock_unencrypted_keys_load_and_sign() {
    let d = tempfile::tempdir().unwrap();
    let (skp, pkp) = (d.path().join("w.key"), d.path().join("w.pub"));
    let out = minisign(&["-G", "-W", "-s", s(&skp), "-p", s(&pkp)], "");
    assert!(out.status.success(), "{out:?}");
    // what the stock tool writes: no KDF and an all-zero checksum
    let line = std::fs::read_to_string(&skp).unwrap();
    let raw = ct_decode(line.lines().nth(1).unwrap());
    assert_eq!(&raw[2..4], &[0, 0]);
    assert!(raw[126..].iter().all(|&b| b == 0));

    let sk = SecretKey::load(&skp, &mut no_password()).unwrap();
    let pk = PublicKey::load(&pkp).unwrap();
    assert_eq!(sk.public, pk);
    // minisign prints the key id with `%PRIX64`: no leading zeros (one key in 16 has one),
    // while offgrid always writes 16 digits (SPEC §4): compare them as numbers.
    let head = std::fs::read_to_string(&pkp).unwrap();
    let printed = head
        .lines()
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_default();
    assert_eq!(
        u64::from_str_radix(printed, 16).ok(),
        u64::from_str_radix(&pk.key_id(), 16).ok(),
        "key id as minisign prints it: {head}"
    );
    assert_eq!(pk.key_id().len(), 16);

    let (bytes, m) = manifest("1.0");
    let sig = sign::sign_manifest(&sk, &m, &bytes).unwrap();
    sign::check(&pk, &sig, &m, &bytes).unwrap();
    let mpath = d.path().join("manifest.toml");
    let sig_path = d.path().join("sig.minisig");
    std::fs::write(&mpath, &bytes).unwrap();
    std::fs::write(&sig_path, &sig).unwrap();
    let out = minisign(
        &["-V", "-m", s(&mpath), "-x", s(&sig_path), "-p", s(&pkp)],
        "",
    );
    assert!(out.status.success(), "{out:?}");
}

fn ct_decode(line: &str) -> Vec<u8> {
    use ct_codecs::{Base64, Decoder};
    Base64::decode_to_vec(line.trim(), None).unwrap()
}

fn ct_encode(b: &[u8]) -> String {
    use ct_codecs::{Base64, Encoder};
    Base64::encode_to_string(b).unwrap()
}

#[test]
fn damaged_secret_keys_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let (skp, pkp) = (d.path().join("w.key"), d.path().join("w.pub"));
    assert!(minisign(&["-G", "-W", "-s", s(&skp), "-p", s(&pkp)], "")
        .status
        .success());
    let text = std::fs::read_to_string(&skp).unwrap();
    let raw = ct_decode(text.lines().nth(1).unwrap());
    let write = |name: &str, raw: &[u8]| {
        let p = d.path().join(name);
        std::fs::write(&p, format!("untrusted comment: x\n{}\n", ct_encode(raw))).unwrap();
        p
    };
    // zero checksum, but one bit of the ed25519 public half flipped
    let mut bad = raw.clone();
    bad[100] ^= 1;
    let p = write("pubhalf.key", &bad);
    let e = SecretKey::load(&p, &mut no_password()).unwrap_err();
    assert!(matches!(e, KeyError::Format { .. }), "{e}");
    assert!(e.to_string().contains("pubhalf.key"), "{e}");
    assert!(e.to_string().contains("does not match its seed"), "{e}");
    // one bit of the seed flipped
    let mut bad = raw.clone();
    bad[70] ^= 0x80;
    let e = SecretKey::load(&write("seed.key", &bad), &mut no_password()).unwrap_err();
    assert!(matches!(e, KeyError::Format { .. }), "{e}");
    // a checksum that is neither zero nor correct
    let mut bad = raw.clone();
    bad[150] = 7;
    let e = SecretKey::load(&write("chk.key", &bad), &mut no_password()).unwrap_err();
    assert!(e.to_string().contains("checksum"), "{e}");
    // garbage, a public key, a missing file
    let g = d.path().join("garbage.key");
    std::fs::write(&g, "hello\nworld\n").unwrap();
    let e = SecretKey::load(&g, &mut no_password()).unwrap_err();
    assert!(
        matches!(&e, KeyError::Format { path, .. } if path.ends_with("garbage.key")),
        "{e}"
    );
    let e = SecretKey::load(&pkp, &mut no_password()).unwrap_err();
    assert!(
        e.to_string().contains("public key, not a secret key"),
        "{e}"
    );
    let e = SecretKey::load(&d.path().join("nope.key"), &mut no_password()).unwrap_err();
    assert!(
        matches!(&e, KeyError::Read { path, .. } if path.ends_with("nope.key")),
        "{e}"
    );
    // a secret key given as the public key
    let e = PublicKey::load(&skp).unwrap_err();
    assert!(
        matches!(&e, KeyError::Format { path, .. } if path.ends_with("w.key")),
        "{e}"
    );
    let bin = d.path().join("bin.pub");
    std::fs::write(&bin, [0xff, 0xfe, 0x00]).unwrap();
    assert!(matches!(
        PublicKey::load(&bin).unwrap_err(),
        KeyError::Format { .. }
    ));
}

#[test]
fn stock_encrypted_keys_load_with_the_password_and_refuse_a_wrong_one() {
    let d = tempfile::tempdir().unwrap();
    let (skp, pkp) = (d.path().join("e.key"), d.path().join("e.pub"));
    // the stock tool reads the password (twice) from stdin when it is not a terminal
    let out = minisign(
        &["-G", "-s", s(&skp), "-p", s(&pkp)],
        "radio-check\nradio-check\n",
    );
    assert!(out.status.success(), "{out:?}");
    let mut asked = 0;
    let e = SecretKey::load(&skp, &mut || {
        asked += 1;
        Ok("wrong".to_owned())
    })
    .unwrap_err();
    assert!(
        matches!(&e, KeyError::WrongPassword { path } if path.ends_with("e.key")),
        "{e}"
    );
    assert_eq!(asked, 1);
    let e = SecretKey::load(&skp, &mut || Err("no terminal".to_owned())).unwrap_err();
    assert!(matches!(e, KeyError::Password { .. }), "{e}");
    let sk = SecretKey::load(&skp, &mut || Ok("radio-check".to_owned())).unwrap();
    let pk = PublicKey::load(&pkp).unwrap();
    assert_eq!(sk.public, pk);
    let (bytes, m) = manifest("3.1.4");
    let sig = sign::sign_manifest(&sk, &m, &bytes).unwrap();
    sign::check(&pk, &sig, &m, &bytes).unwrap();
}

#[test]
fn a_stock_signature_with_the_offgrid_comment_passes_and_others_fail() {
    let d = tempfile::tempdir().unwrap();
    let (skp, pkp) = (d.path().join("w.key"), d.path().join("w.pub"));
    assert!(minisign(&["-G", "-W", "-s", s(&skp), "-p", s(&pkp)], "")
        .status
        .success());
    let pk = PublicKey::load(&pkp).unwrap();
    let (bytes, m) = manifest("1.4.0");
    let mpath = d.path().join("manifest.toml");
    std::fs::write(&mpath, &bytes).unwrap();
    let stock_sign = |comment: &str, extra: &[&str]| -> String {
        let sig_path = d.path().join("m.minisig");
        let mut args = vec![
            "-S",
            "-W",
            "-s",
            s(&skp),
            "-m",
            s(&mpath),
            "-x",
            s(&sig_path),
            "-t",
            comment,
        ];
        args.extend_from_slice(extra);
        let out = minisign(&args, "");
        assert!(out.status.success(), "{out:?}");
        std::fs::read_to_string(&sig_path).unwrap()
    };
    let good = sign::trusted_comment(&m, &bytes);
    sign::check(&pk, &stock_sign(&good, &[]), &m, &bytes).unwrap();

    // the same bytes, but a comment naming another release: a replay attempt
    let other = good.replace("release=1.4.0", "release=1.5.0");
    let e = sign::check(&pk, &stock_sign(&other, &[]), &m, &bytes).unwrap_err();
    assert!(
        matches!(&e, SignError::TrustedComment { reason, .. } if reason.contains("release 1.5.0")),
        "{e}"
    );
    let other = good.replace("org.example.clinic", "org.example.ship");
    let e = sign::check(&pk, &stock_sign(&other, &[]), &m, &bytes).unwrap_err();
    assert!(e.to_string().contains("bundle 'org.example.ship'"), "{e}");
    let other = format!("{}0000", &good[..good.len() - 4]);
    let e = sign::check(&pk, &stock_sign(&other, &[]), &m, &bytes).unwrap_err();
    assert!(e.to_string().contains("manifest sha256"), "{e}");
    // minisign's default comment, and extra words
    let e = sign::check(&pk, &stock_sign("timestamp:1700000000", &[]), &m, &bytes).unwrap_err();
    assert!(matches!(e, SignError::TrustedComment { .. }), "{e}");
    let e = sign::check(
        &pk,
        &stock_sign(&format!("{good} extra=1"), &[]),
        &m,
        &bytes,
    )
    .unwrap_err();
    assert!(matches!(e, SignError::TrustedComment { .. }), "{e}");
    // a legacy (non-prehashed) signature is refused even with the right comment
    let e = sign::check(&pk, &stock_sign(&good, &["-l"]), &m, &bytes).unwrap_err();
    assert!(
        matches!(&e, SignError::Format(r) if r.contains("legacy")),
        "{e}"
    );
}

#[test]
fn tampering_is_detected() {
    let d = tempfile::tempdir().unwrap();
    let (sk, pk, _) = offgrid_pair(d.path(), "hq");
    let (_, other_pk, _) = offgrid_pair(d.path(), "other");
    let (bytes, m) = manifest("1.4.0");
    let sig = sign::sign_manifest(&sk, &m, &bytes).unwrap();

    // every single-bit change of the manifest bytes in a few places
    for at in [0, bytes.len() / 2, bytes.len() - 2] {
        let mut bad = bytes.clone();
        bad[at] ^= 1;
        let e = sign::check(&pk, &sig, &m, &bad).unwrap_err();
        assert!(matches!(e, SignError::BadSignature { .. }), "{e}");
    }
    // a signature moved onto another (validly formed) manifest
    let (bytes2, m2) = manifest("1.4.1");
    let e = sign::check(&pk, &sig, &m2, &bytes2).unwrap_err();
    assert!(matches!(e, SignError::BadSignature { .. }), "{e}");
    // the trusted comment edited in the file
    let edited = sig.replace("release=1.4.0", "release=1.4.1");
    let e = sign::check(&pk, &edited, &m2, &bytes2).unwrap_err();
    assert!(
        matches!(&e, SignError::TrustedComment { reason, .. } if reason.contains("altered")),
        "{e}"
    );
    // checked with another key
    let e = sign::check(&other_pk, &sig, &m, &bytes).unwrap_err();
    assert!(matches!(e, SignError::WrongKey { .. }), "{e}");
    // a signature line with a flipped bit in the ed25519 signature
    let mut lines: Vec<String> = sig.lines().map(str::to_owned).collect();
    let mut raw = ct_decode(&lines[1]);
    raw[20] ^= 1;
    lines[1] = ct_encode(&raw);
    let e = sign::check(&pk, &(lines.join("\n") + "\n"), &m, &bytes).unwrap_err();
    assert!(
        matches!(
            e,
            SignError::TrustedComment { .. } | SignError::BadSignature { .. }
        ),
        "{e}"
    );
    // not a signature at all
    assert!(matches!(
        sign::check(&pk, "hello", &m, &bytes).unwrap_err(),
        SignError::Format(_)
    ));
    assert!(sign::signature_key_id("untrusted comment: x\nnot base64\n").is_err());
}

#[test]
fn two_of_three_threshold() {
    let d = tempfile::tempdir().unwrap();
    let (a, apk, _) = offgrid_pair(d.path(), "a");
    let (b, bpk, bpath) = offgrid_pair(d.path(), "b");
    let (c, _cpk, _) = offgrid_pair(d.path(), "c");
    let (stranger, spk, _) = offgrid_pair(d.path(), "stranger");
    let trust = d.path().join("trust.toml");
    std::fs::write(
        &trust,
        format!(
            "threshold = 2\n[[keys]]\nname = \"a\"\npubkey = \"{}\"\n[[keys]]\nfile = \"{}\"\n[[keys]]\nname = \"c\"\nfile = \"c.pub\"\n",
            apk.to_base64(),
            bpath.file_name().unwrap().to_str().unwrap()
        ),
    )
    .unwrap();
    let policy = TrustPolicy::load(&trust).unwrap();
    assert_eq!((policy.keys.len(), policy.threshold), (3, 2));

    let (bytes, m) = manifest("7.0");
    let signed = |k: &SecretKey| {
        (
            format!("signatures/{}.minisig", k.public.key_id()),
            sign::sign_manifest(k, &m, &bytes).unwrap(),
        )
    };
    // two trusted signers (and a stranger): met
    let sigs = vec![signed(&a), signed(&stranger), signed(&c)];
    let reports = policy.evaluate(&m, &bytes, &sigs).unwrap();
    let statuses: Vec<_> = reports.iter().map(|r| r.status.clone()).collect();
    assert_eq!(
        statuses,
        [
            SignatureStatus::Valid,
            SignatureStatus::UnknownKey,
            SignatureStatus::Valid
        ]
    );
    assert_eq!(reports[1].key_id.as_deref(), Some(spk.key_id().as_str()));

    // one signer, even twice under two names: not met
    let mut again = signed(&b);
    again.0 = "signatures/copy.minisig".into();
    let sigs = vec![signed(&b), again, signed(&stranger)];
    match policy.evaluate(&m, &bytes, &sigs).unwrap_err() {
        TrustError::ThresholdNotMet {
            valid,
            threshold,
            reports,
        } => {
            assert_eq!((valid, threshold), (1, 2));
            assert_eq!(reports.len(), 3);
            assert_eq!(reports[1].status, SignatureStatus::Valid);
            assert_eq!(reports[1].key_id.as_deref(), Some(bpk.key_id().as_str()));
        }
        e => panic!("unexpected {e}"),
    }
    // a tampered signature by a trusted key counts for nothing and says why
    let (bytes2, m2) = manifest("7.1");
    let moved = (signed(&a).0, signed(&a).1);
    let sigs = vec![
        moved,
        ("signatures/junk.minisig".to_owned(), "junk".to_owned()),
    ];
    let e = policy.evaluate(&m2, &bytes2, &sigs).unwrap_err();
    assert!(e.is_refusal());
    let TrustError::ThresholdNotMet { valid, reports, .. } = e else {
        panic!()
    };
    assert_eq!(valid, 0);
    assert!(
        matches!(&reports[0].status, SignatureStatus::Invalid { reason } if reason.contains("does not match")),
        "{:?}",
        reports[0]
    );
    assert_eq!(reports[1].key_id, None);
    assert!(matches!(reports[1].status, SignatureStatus::Invalid { .. }));
    // the JSON form other tools read
    let j = serde_json::to_value(&reports[0]).unwrap();
    assert_eq!(j["status"], "invalid");
    assert!(j["reason"].is_string() && j["key_id"].is_string() && j["file"].is_string());

    // --pubkey style: any one trusted key is enough
    let one = TrustPolicy::from_keys(vec![bpk.clone()]).unwrap();
    assert!(one.evaluate(&m, &bytes, &[signed(&b)]).is_ok());
    assert!(one.evaluate(&m, &bytes, &[signed(&a)]).is_err());
    assert!(one.evaluate(&m, &bytes, &[]).is_err());
}

/// The fenced code blocks of SPEC.md §4, in order.
fn spec_section_4_blocks() -> Vec<String> {
    let spec =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("SPEC.md")).unwrap();
    let start = spec.find("<!-- section 4 owner").unwrap();
    let end = spec.find("<!-- end section 4 -->").unwrap();
    let mut blocks = Vec::new();
    let mut cur: Option<String> = None;
    for line in spec[start..end].lines() {
        if line.starts_with("```") {
            match cur.take() {
                Some(b) => blocks.push(b),
                None => cur = Some(String::new()),
            }
        } else if let Some(b) = cur.as_mut() {
            b.push_str(line);
            b.push('\n');
        }
    }
    blocks
}

#[test]
fn the_spec_worked_example_is_true() {
    let blocks = spec_section_4_blocks();
    let find = |prefix: &str| {
        blocks
            .iter()
            .find(|b| b.starts_with(prefix))
            .unwrap_or_else(|| panic!("no block starting '{prefix}' in SPEC §4"))
            .clone()
    };
    let keygen = find("$ offgrid keygen");
    let pub_line = keygen
        .lines()
        .skip_while(|l| !l.starts_with("$ cat hq.pub"))
        .nth(2)
        .unwrap();
    let pk = PublicKey::from_base64(pub_line).unwrap();
    assert!(keygen.contains(&format!("key id:      {}", pk.key_id())));
    assert!(keygen.contains(&format!("fingerprint: {}", pk.fingerprint())));
    let manifest_text = find("format = ");
    let sig = find("untrusted comment: signature");
    let m = Manifest::parse(manifest_text.as_bytes()).unwrap();
    sign::check(&pk, &sig, &m, manifest_text.as_bytes()).unwrap();
    assert_eq!(sign::signature_key_id(&sig).unwrap(), pk.key_id());

    // and the stock tool agrees
    let d = tempfile::tempdir().unwrap();
    let (mp, sp) = (d.path().join("manifest.toml"), d.path().join("s.minisig"));
    std::fs::write(&mp, &manifest_text).unwrap();
    std::fs::write(&sp, &sig).unwrap();
    let out = minisign(&["-V", "-m", s(&mp), "-x", s(&sp), "-P", pub_line], "");
    assert!(out.status.success(), "{out:?}");
}
