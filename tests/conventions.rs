//! The conventions operators expect, end to end with the real binary: shell completions
//! (`bash -n` parses them), one manual page naming every command and flag (groff renders
//! it without warnings), `install.sh` installing both, `inspect` of a real stick and pack
//! with and without signatures (text and `--json`), `verify PACK --home` with the keys
//! pinned at install (accepting and refusing), the chat-template and debug-info warnings
//! of `pack-usb`, the key-decryption progress line, the context `models` will use, and
//! (run by `cargo xtask ci` with `OFFGRID_DIST_BINARY`) the size of the binary the demo
//! puts on a stick.

use crate::util;

use std::path::{Path, PathBuf};
use std::process::Command;

use offgrid::gguf::{write_synthetic, MetaValue};
use predicates::prelude::*;
use serde_json::Value;
use util::Ws;

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";

/// A small GGUF with a context length of 8192 and `template` (if any) at `rel`.
fn model_with_template(ws: &Ws, rel: &str, template: Option<&str>) -> PathBuf {
    let p = ws.path(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let mut meta = vec![
        ("general.architecture", MetaValue::Str("llama".into())),
        ("general.file_type", MetaValue::U32(3)),
        ("llama.context_length", MetaValue::U32(8192)),
    ];
    if let Some(t) = template {
        meta.push(("tokenizer.chat_template", MetaValue::Str(t.into())));
    }
    let data = vec![7u8; 4096];
    let mut buf = Vec::new();
    write_synthetic(&mut buf, &meta, &[("w", vec![1024], &data)]).unwrap();
    std::fs::write(&p, buf).unwrap();
    p
}

fn stdout(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).into_owned()
}

fn stderr(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

fn records(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn of_type<'a>(recs: &'a [Value], ty: &str) -> Vec<&'a Value> {
    recs.iter()
        .filter(|r| r["type"] == ty)
        .map(|r| &r["data"])
        .collect()
}

/// Packs release `release` with a ChatML model into `dest`, signed by `hq`, without the
/// (large, debug) test binary.
fn pack(ws: &Ws, dest: &str, release: &str, seed: u8) {
    let m = format!("in/{release}/clinic.gguf");
    model_with_template(ws, &m, Some(&format!("{CHATML}{{# {seed} #}}")));
    ws.offgrid(&[
        "pack-usb",
        dest,
        "--release",
        release,
        "--bundle-id",
        "org.example.clinic",
        "--model",
        &m,
        "--sign-with",
        "hq.key",
        "--no-host-binary",
    ])
    .success();
}

/// The subcommands `offgrid --help` lists (without `help`).
fn subcommands(ws: &Ws) -> Vec<String> {
    let help = stdout(&ws.offgrid(&["--help"]).success());
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // A description wrapped onto the next line is indented further: not a command.
        .filter(|l| !l[2..].starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

/// The long flags `offgrid SUB --help` lists.
fn long_flags(ws: &Ws, sub: &str) -> Vec<String> {
    let help = stdout(&ws.offgrid(&[sub, "--help"]).success());
    let mut flags: Vec<String> = help
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == '=')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_owned()
        })
        .collect();
    flags.sort();
    flags.dedup();
    flags
}

#[test]
fn completions_parse_and_name_every_command() {
    let ws = Ws::new();
    let subs = subcommands(&ws);
    for c in ["inspect", "completions", "manpage", "pack-usb", "verify"] {
        assert!(subs.iter().any(|s| s == c), "{c} missing from {subs:?}");
    }
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let out = stdout(&ws.offgrid(&["completions", shell]).success());
        for s in &subs {
            assert!(out.contains(s.as_str()), "{shell} completions lack '{s}'");
        }
        // fish writes `-l sign-with`, the others `--sign-with`.
        assert!(out.contains("sign-with"), "{shell}: flags are completed");
    }
    let bash = ws.file(
        "offgrid.bash",
        stdout(&ws.offgrid(&["completions", "bash"])).as_bytes(),
    );
    let st = Command::new("bash").arg("-n").arg(&bash).output().unwrap();
    assert!(st.status.success(), "bash -n: {st:?}");
    // Sourcing it registers the completion function.
    let st = Command::new("bash")
        .arg("-c")
        .arg(format!(". '{}' && complete -p offgrid", bash.display()))
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    ws.offgrid(&["completions", "tcsh"])
        .code(2)
        .stderr(predicate::str::contains("possible values"));
}

#[test]
fn one_manual_page_covers_every_command_and_flag() {
    let ws = Ws::new();
    let roff = stdout(&ws.offgrid(&["manpage"]).success());
    assert!(
        roff.starts_with(".ie") || roff.contains(".TH offgrid 1"),
        "{}",
        &roff[..200]
    );
    for sub in subcommands(&ws) {
        let head = format!(".SH \"OFFGRID {}\"", sub.to_ascii_uppercase());
        assert!(roff.contains(&head), "no section {head}");
        let section = roff.split(&head).nth(1).unwrap();
        let section = section.split("\n.SH ").next().unwrap();
        for flag in long_flags(&ws, &sub) {
            // roff escapes '-' as '\-'.
            let escaped = flag.replace('-', "\\-");
            assert!(
                section.contains(&escaped) || section.contains(&flag),
                "{sub}: {flag} not in its section"
            );
        }
    }
    // groff renders it without a warning.
    let page = ws.file("offgrid.1", roff.as_bytes());
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(&page)
        .output()
        .expect("groff is installed (.ci/install-deps)");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "groff warnings");
}

#[test]
fn install_sh_installs_completions_and_the_manual_page() {
    let ws = Ws::new();
    model_with_template(&ws, "in/clinic.gguf", Some(CHATML));
    // The stick carries the test binary for this computer (as a real stick would).
    ws.offgrid(&[
        "pack-usb",
        "stick",
        "--release",
        "1.0.0",
        "--model",
        "in/clinic.gguf",
        "--sign-with",
        "hq.key",
    ])
    .success();
    let home = ws.path("userhome");
    let out = Command::new("sh")
        .arg(ws.path("stick/install.sh"))
        .args(["--pubkey", "hq.pub", "--home"])
        .arg(ws.path("site"))
        .current_dir(ws.dir.path())
        .env("HOME", &home)
        .env_remove("XDG_DATA_HOME")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("OFFGRID_NO_SHELL_FILES")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let bash = home.join(".local/share/bash-completion/completions/offgrid");
    let man = home.join(".local/share/man/man1/offgrid.1");
    assert!(Command::new("bash")
        .arg("-n")
        .arg(&bash)
        .status()
        .unwrap()
        .success());
    let page = std::fs::read_to_string(&man).unwrap();
    assert!(page.contains(".SH \"OFFGRID INSPECT\""));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("installed {}", man.display())),
        "{err}"
    );
    assert!(!home.join(".local/share/man/man1/offgrid.1.tmp").exists());

    // Opting out writes nothing.
    let home2 = ws.path("userhome2");
    let out = Command::new("sh")
        .arg(ws.path("stick/install.sh"))
        .args(["--pubkey", "hq.pub", "--home"])
        .arg(ws.path("site2"))
        .current_dir(ws.dir.path())
        .env("HOME", &home2)
        .env("OFFGRID_NO_SHELL_FILES", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!home2.join(".local").exists());
}

#[test]
fn inspect_a_stick_signed_and_unsigned() {
    let ws = Ws::new();
    pack(&ws, "stick", "1.0.0", 1);
    let id = ws.key_id("hq");

    let a = ws.offgrid(&["inspect", "stick"]).success();
    let text = stdout(&a);
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("NOTHING IS VERIFIED"), "{text}");
    assert!(
        text.contains("release 1.0.0 of org.example.clinic"),
        "{text}"
    );
    assert!(
        text.contains(&format!("signed by:  {id} (claimed)")),
        "{text}"
    );
    assert!(text.contains("models/clinic.gguf"), "{text}");
    assert!(
        text.contains("chat template: chatml (\"{% for message"),
        "{text}"
    );

    let recs = records(&stdout(
        &ws.offgrid(&["inspect", "stick", "--json"]).success(),
    ));
    let last = recs.last().unwrap();
    assert_eq!(last["type"], "summary");
    let s = &last["data"];
    assert_eq!(s["schema"], 1);
    assert_eq!(s["verified"], false);
    assert!(s["notice"]
        .as_str()
        .unwrap()
        .starts_with("NOTHING IS VERIFIED"));
    assert_eq!(s["kind"], "tree");
    assert_eq!(s["bundle_id"], "org.example.clinic");
    assert_eq!(s["release"], "1.0.0");
    assert_eq!(s["key_ids"], serde_json::json!([id]));
    assert_eq!(s["manifest_sha256"].as_str().unwrap().len(), 64);
    let files = of_type(&recs, "file");
    assert_eq!(s["files"], files.len());
    let model = files
        .iter()
        .find(|f| f["path"] == "models/clinic.gguf")
        .unwrap();
    assert_eq!(model["kind"], "model");
    assert_eq!(model["chat_template"]["family"], "chatml");
    assert_eq!(model["model"]["context_length"], 8192);
    let sigs = of_type(&recs, "signature");
    assert_eq!(sigs.len(), 1);
    assert_eq!(sigs[0]["key_id"], id.as_str());
    assert_eq!(sigs[0]["verified"], false);
    assert_eq!(sigs[0]["set"], "release");

    // Without signatures (and with a damaged model): still read, still not verified.
    std::fs::remove_dir_all(ws.path("stick/signatures")).unwrap();
    std::fs::write(ws.path("stick/models/clinic.gguf"), b"not gguf").unwrap();
    let text = stdout(&ws.offgrid(&["inspect", "stick"]).success());
    assert!(text.starts_with("NOTHING IS VERIFIED"));
    assert!(text.contains("signed by:  none (unsigned)"), "{text}");
    assert!(text.contains("chat template: unreadable"), "{text}");
    let recs = records(&stdout(
        &ws.offgrid(&["inspect", "stick", "--json"]).success(),
    ));
    assert_eq!(
        recs.last().unwrap()["data"]["key_ids"],
        serde_json::json!([])
    );
    assert!(of_type(&recs, "signature").is_empty());

    // Not a tree or a pack: exit 2 naming the path and the fix.
    std::fs::create_dir_all(ws.path("empty")).unwrap();
    ws.offgrid(&["inspect", "empty"])
        .code(2)
        .stderr(predicate::str::contains("'empty' is neither"))
        .stderr(predicate::str::contains("help:"));
    ws.file("notes.txt", b"hello");
    ws.offgrid(&["inspect", "notes.txt"])
        .code(2)
        .stderr(predicate::str::contains(
            "neither an offgrid USB tree nor an update pack",
        ));
    ws.offgrid(&["inspect", "missing"]).code(2);
}

/// Releases 1.0.0 (stick) and 1.1.0 (pack `update.ogpack`, from 1.0.0), signed by hq.
fn pack_and_update(ws: &Ws) {
    pack(ws, "stick", "1.0.0", 1);
    model_with_template(
        ws,
        "in/1.1.0/clinic.gguf",
        Some(&format!("{CHATML}{{# 2 #}}")),
    );
    ws.offgrid(&[
        "create-update-pack",
        "--since",
        "1.0.0",
        "--output",
        "update.ogpack",
        "--bundle-id",
        "org.example.clinic",
        "--release",
        "1.1.0",
        "--model",
        "in/1.1.0/clinic.gguf",
        "--sign-with",
        "hq.key",
        "--no-host-binary",
    ])
    .success();
}

/// A copy of the pack at `src` without any signature entries.
fn strip_signatures(src: &Path, dst: &Path) {
    let mut ar = tar::Archive::new(std::fs::File::open(src).unwrap());
    let mut b = tar::Builder::new(std::fs::File::create(dst).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        if name.contains("signatures/") {
            continue;
        }
        let mut h = e.header().clone();
        b.append_data(&mut h, &name, &mut e).unwrap();
    }
    b.finish().unwrap();
}

#[test]
fn inspect_a_pack_signed_and_unsigned() {
    let ws = Ws::new();
    pack_and_update(&ws);
    let id = ws.key_id("hq");

    let text = stdout(&ws.offgrid(&["inspect", "update.ogpack"]).success());
    assert!(text.starts_with("NOTHING IS VERIFIED"), "{text}");
    assert!(text.contains("org.example.clinic 1.0.0 -> 1.1.0"), "{text}");
    assert!(
        text.contains(&format!("pack signed by:    {id} (claimed)")),
        "{text}"
    );
    assert!(text.contains("from 1.0.0:"), "{text}");
    assert!(text.contains("models/clinic.gguf"), "{text}");

    let recs = records(&stdout(
        &ws.offgrid(&["inspect", "update.ogpack", "--json"])
            .success(),
    ));
    let s = &recs.last().unwrap()["data"];
    assert_eq!(s["schema"], 1);
    assert_eq!(s["verified"], false);
    assert_eq!(s["kind"], "pack");
    assert_eq!(s["release"], "1.1.0");
    assert_eq!(s["from"], serde_json::json!(["1.0.0"]));
    assert_eq!(s["key_ids"], serde_json::json!([id]));
    assert_eq!(s["release_key_ids"], serde_json::json!([id]));
    assert_eq!(
        s["size"],
        std::fs::metadata(ws.path("update.ogpack")).unwrap().len()
    );
    let changes = of_type(&recs, "change");
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["from"], "1.0.0");
    let payloads = of_type(&recs, "payload");
    let m = payloads
        .iter()
        .find(|p| p["target"] == "models/clinic.gguf")
        .expect("the changed model has a payload");
    assert!(m["encoding"] == "delta" || m["encoding"] == "zstd", "{m}");
    assert_eq!(
        changes[0]["deltas"].as_u64().unwrap() + changes[0]["whole"].as_u64().unwrap(),
        payloads.len() as u64
    );
    let sigs = of_type(&recs, "signature");
    assert_eq!(sigs.len(), 2, "{sigs:?}");
    assert!(sigs.iter().any(|s| s["set"] == "pack"));

    // Every record type, tree and pack, has exactly the fields of the worked example
    // SPEC.md §15.2 points to.
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("formats/inspect.example.jsonl"),
    )
    .unwrap();
    let keys = |r: &Value| {
        let mut k: Vec<String> = r["data"].as_object().unwrap().keys().cloned().collect();
        k.sort();
        (r["type"].as_str().unwrap().to_owned(), k)
    };
    let documented: Vec<_> = records(&example).iter().map(keys).collect();
    let tree = records(&stdout(
        &ws.offgrid(&["inspect", "stick", "--json"]).success(),
    ));
    for r in tree.iter().chain(recs.iter()) {
        assert!(
            documented.contains(&keys(r)),
            "record {r} does not have the documented fields"
        );
    }

    strip_signatures(&ws.path("update.ogpack"), &ws.path("unsigned.ogpack"));
    let text = stdout(&ws.offgrid(&["inspect", "unsigned.ogpack"]).success());
    assert!(text.starts_with("NOTHING IS VERIFIED"));
    assert!(
        text.contains("pack signed by:    none (unsigned)"),
        "{text}"
    );
    let recs = records(&stdout(
        &ws.offgrid(&["inspect", "unsigned.ogpack", "--json"])
            .success(),
    ));
    assert_eq!(
        recs.last().unwrap()["data"]["key_ids"],
        serde_json::json!([])
    );
    // verify refuses what inspect merely shows.
    ws.offgrid(&["verify", "unsigned.ogpack", "--pubkey", "hq.pub"])
        .code(1);
}

#[test]
fn verify_a_pack_with_the_keys_pinned_in_a_home() {
    let ws = Ws::new();
    pack_and_update(&ws);
    ws.offgrid(&[
        "install", "--from", "stick", "--pubkey", "hq.pub", "--home", "site",
    ])
    .success();

    let a = ws
        .offgrid(&["verify", "update.ogpack", "--home", "site"])
        .success();
    assert!(
        stdout(&a).starts_with("verified update pack 'update.ogpack'"),
        "{}",
        stdout(&a)
    );
    let recs = records(&stdout(
        &ws.offgrid(&["verify", "update.ogpack", "--home", "site", "--json"])
            .success(),
    ));
    let sigs = of_type(&recs, "signature");
    assert_eq!(sigs.len(), 1);
    assert_eq!(sigs[0]["status"], "valid");
    assert_eq!(sigs[0]["key_id"], ws.key_id("hq").as_str());
    assert!(sigs[0]["fingerprint"].is_string());
    assert_eq!(recs.last().unwrap()["type"], "pack-verified");

    // A pack signed by another key: refused (exit 1) with the per-signature report.
    ws.keypair("other");
    let other = ws.path("other");
    std::fs::create_dir_all(&other).unwrap();
    let run_other = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_offgrid"));
        c.current_dir(ws.dir.path())
            .env("OFFGRID_HQ", &other)
            .env("NO_COLOR", "1")
            .env_remove("OFFGRID_PASSWORD")
            .args(args)
            .output()
            .unwrap()
    };
    let o = run_other(&[
        "create-update-pack",
        "--record",
        "stick",
        "--since",
        "1.0.0",
        "--output",
        "other.ogpack",
        "--bundle-id",
        "org.example.clinic",
        "--release",
        "1.1.0",
        "--model",
        "in/1.1.0/clinic.gguf",
        "--sign-with",
        "other.key",
        "--no-host-binary",
    ]);
    assert!(o.status.success(), "{o:?}");
    let a = ws
        .offgrid(&["verify", "other.ogpack", "--home", "site"])
        .code(1);
    let err = stderr(&a);
    assert!(err.contains("by a key you did not trust"), "{err}");
    assert!(err.contains("signature threshold not met"), "{err}");
    let recs = records(&stdout(
        &ws.offgrid(&["verify", "other.ogpack", "--home", "site", "--json"])
            .code(1),
    ));
    let sigs = of_type(&recs, "signature");
    assert_eq!(sigs.len(), 1);
    assert_eq!(sigs[0]["status"], "unknown-key");
    assert_eq!(sigs[0]["key_id"], ws.key_id("other").as_str());

    // A home with nothing installed: exit 2, naming the home.
    ws.offgrid(&["verify", "update.ogpack", "--home", "nowhere"])
        .code(2)
        .stderr(predicate::str::contains("nowhere"));
    // --home and --pubkey are one choice.
    ws.offgrid(&[
        "verify",
        "update.ogpack",
        "--home",
        "site",
        "--pubkey",
        "hq.pub",
    ])
    .code(2);
}

#[test]
fn pack_usb_warns_about_debug_info_and_unknown_chat_templates() {
    let ws = Ws::new();
    model_with_template(&ws, "in/good.gguf", Some(CHATML));
    model_with_template(&ws, "in/odd.gguf", Some("{{ messages | tojson }}"));
    model_with_template(&ws, "in/bare.gguf", None);
    // The test binary is a debug build: it carries debug info.
    let a = ws
        .offgrid(&[
            "pack-usb",
            "stick",
            "--release",
            "1.0.0",
            "--model",
            "in/good.gguf",
            "--model",
            "in/odd.gguf",
            "--model",
            "in/bare.gguf",
            "--sign-with",
            "hq.key",
        ])
        .success();
    let err = stderr(&a);
    assert!(
        err.contains("of debug info, which goes onto every stick"),
        "{err}"
    );
    assert!(err.contains("cargo xtask dist"), "{err}");
    assert!(
        err.contains("model 'odd' ('in/odd.gguf') has a chat template llama.cpp does not recognise (\"{{ messages | tojson }}\")"),
        "{err}"
    );
    assert!(
        err.contains("model 'bare' ('in/bare.gguf') carries no chat template"),
        "{err}"
    );
    assert!(!err.contains("model 'good'"), "{err}");

    // models shows the template and the context it will use.
    let out = stdout(&ws.offgrid(&["models", "--stick", "stick"]).success());
    assert!(out.contains("CTX/MAX"), "{out}");
    assert!(out.contains("4096/8192"), "{out}");
    assert!(out.contains("chat template: chatml"), "{out}");
    assert!(
        out.contains("chat template: none: run uses ChatML"),
        "{out}"
    );
    let recs = records(&stdout(
        &ws.offgrid(&["models", "--stick", "stick", "--json", "--ctx", "1024"])
            .success(),
    ));
    let models = of_type(&recs, "model");
    let good = models.iter().find(|m| m["name"] == "good").unwrap();
    assert_eq!(good["ctx"], 1024);
    assert_eq!(good["context_length"], 8192);
    assert_eq!(good["chat_template"]["family"], "chatml");
    let odd = models.iter().find(|m| m["name"] == "odd").unwrap();
    assert_eq!(odd["chat_template"]["family"], Value::Null);
    assert_eq!(
        odd["chat_template"]["first_line"],
        "{{ messages | tojson }}"
    );
    let bare = models.iter().find(|m| m["name"] == "bare").unwrap();
    assert_eq!(bare["chat_template"], Value::Null);
    assert_eq!(bare["ctx"], 1024);
}

#[test]
fn decrypting_a_key_says_so() {
    let ws = Ws::new();
    let a = ws
        .offgrid_pw(
            Some("a test password"),
            &["keygen", "--secret", "enc.key", "--public", "enc.pub"],
        )
        .success();
    assert!(
        stderr(&a).contains("encrypting the new secret key 'enc.key'"),
        "{}",
        stderr(&a)
    );
    model_with_template(&ws, "in/m.gguf", Some(CHATML));
    let a = ws
        .offgrid_pw(
            Some("a test password"),
            &[
                "pack-usb",
                "stick",
                "--release",
                "1.0.0",
                "--model",
                "in/m.gguf",
                "--sign-with",
                "enc.key",
                "--no-host-binary",
            ],
        )
        .success();
    assert!(
        stderr(&a).contains("decrypting key 'enc.key' (scrypt"),
        "{}",
        stderr(&a)
    );
    // An unencrypted key needs no password and says nothing.
    let a = ws
        .offgrid(&[
            "pack-usb",
            "stick2",
            "--release",
            "1.0.0",
            "--model",
            "in/m.gguf",
            "--sign-with",
            "hq.key",
            "--no-host-binary",
        ])
        .success();
    assert!(!stderr(&a).contains("decrypting"), "{}", stderr(&a));
}

/// The binary the demo puts on a stick: the dist build, run as the demo runs it (its own
/// executable becomes the stick's binary for this computer).
#[test]
#[ignore = "needs the dist build: run by cargo xtask ci (OFFGRID_DIST_BINARY)"]
fn the_stick_binary_of_the_dist_build_is_small() {
    const LIMIT: u64 = 16 << 20;
    let dist = std::env::var_os("OFFGRID_DIST_BINARY")
        .map(PathBuf::from)
        .expect("OFFGRID_DIST_BINARY names the `cargo xtask dist` binary");
    assert!(dist.is_file(), "'{}' is missing", dist.display());
    let ws = Ws::new();
    model_with_template(&ws, "in/m.gguf", Some(CHATML));
    let out = Command::new(&dist)
        .current_dir(ws.dir.path())
        .env("OFFGRID_HQ", ws.path("hq-history"))
        .env_remove("OFFGRID_PASSWORD")
        .args([
            "pack-usb",
            "stick",
            "--release",
            "1.0.0",
            "--model",
            "in/m.gguf",
            "--sign-with",
            "hq.key",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("debug info"), "{err}");
    let platform = offgrid::platform::Platform::host().to_string();
    let on_stick = ws.path(&format!("stick/bin/{platform}/offgrid"));
    let size = std::fs::metadata(&on_stick).unwrap().len();
    eprintln!(
        "stick binary: {} bytes ({:.1} MiB)",
        size,
        size as f64 / (1u64 << 20) as f64
    );
    assert!(
        size <= LIMIT,
        "the stick binary is {size} bytes, more than {LIMIT}"
    );
    assert_eq!(
        offgrid::usb::binary::debug_info_bytes(&on_stick).unwrap(),
        Some(0)
    );
    let v = Command::new(&on_stick).arg("--version").output().unwrap();
    assert!(v.status.success(), "{v:?}");
}
