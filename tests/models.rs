//! `offgrid models` and model discovery, driven through the real binary: listing a models
//! folder and a stick tree (text and JSON), the fit column under an assumed RAM size, the
//! committed synthetic fixtures being up to date, and `run` without llama.cpp.

use crate::util;

use std::fs;

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

use crate::synthetic;

fn offgrid(tmp: &std::path::Path) -> Command {
    let mut c = Command::cargo_bin("offgrid").unwrap();
    // Keep the user's home, cache and any stick out of the test.
    c.env("OFFGRID_HOME", tmp.join("home"))
        .env("OFFGRID_CACHE_DIR", tmp.join("cache"))
        .env_remove("OFFGRID_PORTABLE")
        .env_remove("OFFGRID_MODELS_DIR")
        .env_remove("OFFGRID_ASSUME_RAM_MIB");
    c
}

fn json_lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn committed_fixtures_are_up_to_date() {
    for (name, bytes) in synthetic::all() {
        let p = util::fixtures().join(name);
        let on_disk = fs::read(&p).unwrap_or_default();
        assert!(
            on_disk == bytes,
            "'{}' is stale or missing: run cargo xtask fixtures",
            p.display()
        );
    }
}

#[test]
fn lists_a_models_folder_as_json() {
    let tmp = tempfile::tempdir().unwrap();
    let out = offgrid(tmp.path())
        .args(["models", "--json", "--models-dir"])
        .arg(util::fixtures())
        .env("OFFGRID_ASSUME_RAM_MIB", "100000")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let lines = json_lines(&out);
    assert_eq!(lines[0]["type"], "machine");
    assert_eq!(lines[0]["data"]["available_ram"], 100000u64 << 20);
    assert_eq!(lines[0]["data"]["assumed"], true);
    let models: Vec<&Value> = lines[1..].iter().map(|l| &l["data"]).collect();
    assert_eq!(models.len(), 3);
    let q4 = models
        .iter()
        .find(|m| m["quantization"] == "Q4_1")
        .expect("the Q4_1 fixture");
    assert_eq!(q4["name"], "tiny-chat");
    assert_eq!(q4["origin"], "models-dir");
    assert_eq!(q4["architecture"], "llama");
    assert_eq!(q4["context_length"], 2048);
    assert_eq!(
        q4["parameters"],
        64 * 256 + 2 * (64 * 64 + 2 * 64 * 16) + 64
    );
    assert_eq!(q4["signed"], false);
    assert_eq!(q4["fits"], true);
    // KV cache: 2048 tokens x 2 layers x (16 + 16) wide x 2 bytes.
    assert_eq!(q4["memory"]["ctx"], 2048);
    assert_eq!(q4["memory"]["kv_cache"], 2048 * 2 * 32 * 2);
    let total = q4["memory"]["total"].as_u64().unwrap();
    assert_eq!(
        total,
        q4["size"].as_u64().unwrap()
            + q4["memory"]["kv_cache"].as_u64().unwrap()
            + q4["memory"]["overhead"].as_u64().unwrap()
    );
    let f16 = models.iter().find(|m| m["quantization"] == "F16").unwrap();
    assert_eq!(f16["name"], "no-template");
    assert_eq!(f16["context_length"], Value::Null);
    assert_eq!(f16["memory"]["ctx"], 4096);
}

#[test]
fn fit_follows_the_available_memory_and_ctx() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |ram: &str, ctx: Option<&str>| {
        let mut c = offgrid(tmp.path());
        c.args(["models", "--json", "--models-dir"])
            .arg(util::fixtures())
            .env("OFFGRID_ASSUME_RAM_MIB", ram);
        if let Some(x) = ctx {
            c.args(["--ctx", x]);
        }
        let out = c.assert().success().get_output().stdout.clone();
        json_lines(&out)
            .into_iter()
            .skip(1)
            .find(|l| l["data"]["quantization"] == "Q4_1")
            .unwrap()["data"]
            .clone()
    };
    assert_eq!(run("1", None)["fits"], false);
    let need = run("100000", None)["memory"]["total"].as_u64().unwrap();
    let need_mib = need.div_ceil(1 << 20);
    assert_eq!(run(&need_mib.to_string(), None)["fits"], true);
    assert_eq!(run(&(need_mib - 1).to_string(), None)["fits"], false);
    // A bigger context needs more memory.
    let big = run("100000", Some("100000"))["memory"]["total"]
        .as_u64()
        .unwrap();
    assert!(big > need + (90_000 * 2 * 32 * 2));
}

#[test]
fn lists_a_stick_with_its_default_model() {
    let tmp = tempfile::tempdir().unwrap();
    let stick = tmp.path().join("stick");
    for q in ["Q4_1", "Q8_0"] {
        util::place(
            &util::fixtures().join(format!("tiny-chat.{q}.gguf")),
            &stick,
            &format!("models/tiny-chat.{q}.gguf"),
        );
    }
    util::write_tree(
        &stick,
        &[
            ("models/tiny-chat.Q4_1.gguf", "tiny"),
            ("models/tiny-chat.Q8_0.gguf", "tiny"),
        ],
        Some("tiny"),
    );
    let out = offgrid(tmp.path())
        .args(["models", "--json", "--stick"])
        .arg(&stick)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3);
    for l in &lines[1..] {
        assert_eq!(l["data"]["name"], "tiny");
        assert_eq!(l["data"]["origin"], "stick");
        assert_eq!(l["data"]["signed"], true);
        assert_eq!(l["data"]["default"], true);
    }
    // The table names the default with a star and says where each model is.
    offgrid(tmp.path())
        .env("OFFGRID_PORTABLE", &stick)
        .arg("models")
        .assert()
        .success()
        .stdout(predicate::str::contains("tiny *").and(predicate::str::contains("stick")))
        .stdout(predicate::str::contains("Q8_0"));
}

#[test]
fn a_missing_model_file_is_listed_as_a_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let stick = tmp.path().join("stick");
    util::place(
        &util::fixtures().join("tiny-chat.Q4_1.gguf"),
        &stick,
        "models/tiny.gguf",
    );
    util::write_tree(&stick, &[("models/tiny.gguf", "tiny")], None);
    fs::remove_file(stick.join("models/tiny.gguf")).unwrap();
    let out = offgrid(tmp.path())
        .args(["models", "--json", "--stick"])
        .arg(&stick)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let lines = json_lines(&out);
    assert_eq!(lines[1]["data"]["fits"], false);
    assert!(lines[1]["data"]["problem"]
        .as_str()
        .unwrap()
        .contains("missing"));
}

#[test]
fn portable_root_without_manifest_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    offgrid(tmp.path())
        .args(["models", "--stick"])
        .arg(tmp.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("has no manifest.toml"))
        .stderr(predicate::str::contains("help:"));
    // `--portable` without a root, from a binary that is not on a stick.
    offgrid(tmp.path())
        .args(["models", "--portable"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("does not run from a stick"));
}

#[test]
fn nothing_found_is_not_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    offgrid(tmp.path())
        .arg("models")
        .assert()
        .success()
        .stdout("")
        .stderr(predicate::str::contains("no models found"));
}

#[cfg(not(feature = "llama"))]
#[test]
fn run_without_llama_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    offgrid(tmp.path())
        .args(["run", "--prompt", "hi"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("built without llama.cpp"));
}
