//! `offgrid run` end to end with the real test model (SmolLM2-135M-Instruct Q4_1, fetched
//! by `cargo xtask fixtures --model`; these tests fail, never skip, without it): greedy
//! answers, determinism, streaming, the interactive prompt, Ctrl-C, refusal when the model
//! does not fit, choice of quantization, name resolution, verification against a stick's
//! manifest and its cache, and the errors a user can meet.

#![cfg(feature = "llama")]

use crate::util;

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use predicates::prelude::*;

const QUESTION: &str = "What is the capital of France?";

fn offgrid(tmp: &Path) -> Command {
    let mut c = Command::cargo_bin("offgrid").unwrap();
    c.env("OFFGRID_HOME", tmp.join("home"))
        .env("OFFGRID_CACHE_DIR", tmp.join("cache"))
        .env("OFFGRID_HQ", tmp.join("hq"))
        .env_remove("OFFGRID_PORTABLE")
        .env_remove("OFFGRID_MODELS_DIR")
        .env_remove("OFFGRID_ASSUME_RAM_MIB")
        .timeout(Duration::from_secs(300));
    c
}

fn stdout_of(c: &mut Command) -> String {
    let out = c.assert().success().get_output().stdout.clone();
    String::from_utf8(out).unwrap()
}

#[test]
fn greedy_answer_names_paris_and_is_deterministic() {
    let model = util::real_model();
    let tmp = tempfile::tempdir().unwrap();
    let ask = || {
        stdout_of(offgrid(tmp.path()).arg("run").arg(&model).args([
            "--prompt",
            QUESTION,
            "--temp",
            "0",
            "--max-tokens",
            "48",
        ]))
    };
    let a = ask();
    assert!(a.contains("Paris"), "answer without 'Paris': {a:?}");
    assert_eq!(a, ask(), "greedy decoding gave two different answers");
}

#[test]
fn seeded_sampling_repeats_and_seeds_differ() {
    let model = util::real_model();
    let tmp = tempfile::tempdir().unwrap();
    let ask = |seed: &str| {
        stdout_of(offgrid(tmp.path()).arg("run").arg(&model).args([
            "--prompt",
            "Write one sentence about the sea.",
            "--temp",
            "1.2",
            "--seed",
            seed,
            "--max-tokens",
            "40",
        ]))
    };
    let a = ask("7");
    assert_eq!(a, ask("7"));
    let others: Vec<String> = ["8", "9", "10"].iter().map(|s| ask(s)).collect();
    assert!(
        others.iter().any(|o| *o != a),
        "four seeds gave the same answer: {a:?}"
    );
}

#[test]
fn max_tokens_and_stats() {
    let model = util::real_model();
    let tmp = tempfile::tempdir().unwrap();
    offgrid(tmp.path())
        .arg("run")
        .arg(&model)
        .args([
            "--prompt",
            QUESTION,
            "--temp",
            "0",
            "--max-tokens",
            "3",
            "--stats",
            "--threads",
            "1",
        ])
        .assert()
        .success()
        .stderr(predicate::str::contains("generation 3 tokens"))
        .stderr(predicate::str::contains("tokens/s"))
        .stderr(predicate::str::contains("1 threads"));
}

#[test]
fn llama_cpp_logs_only_with_verbose() {
    let model = util::real_model();
    let tmp = tempfile::tempdir().unwrap();
    offgrid(tmp.path())
        .arg("run")
        .arg(&model)
        .args(["--prompt", "Hi", "--temp", "0", "--max-tokens", "2"])
        .assert()
        .success()
        .stderr(predicate::str::contains("llama_model_loader").not())
        .stderr(predicate::str::contains("load_tensors").not());
    offgrid(tmp.path())
        .arg("run")
        .arg(&model)
        .args([
            "--prompt",
            "Hi",
            "--temp",
            "0",
            "--max-tokens",
            "2",
            "--verbose",
        ])
        .assert()
        .success()
        .stderr(predicate::str::contains("llama_model_loader"));
}

#[test]
fn interactive_chat_reads_stdin_and_keeps_the_conversation() {
    let model = util::real_model();
    let tmp = tempfile::tempdir().unwrap();
    let done = offgrid(tmp.path())
        .arg("run")
        .arg(&model)
        .args(["--temp", "0", "--max-tokens", "48"])
        .write_stdin(format!("{QUESTION}\n/reset\n{QUESTION}\n"))
        .assert()
        .success()
        .stderr(predicate::str::contains("conversation forgotten"));
    let out = String::from_utf8_lossy(&done.get_output().stdout).into_owned();
    // Two answers, each ended by a newline, and after /reset the same question gets the
    // same greedy answer: stdout is one answer twice, byte for byte.
    let (first, second) = out.as_bytes().split_at(out.len() / 2);
    assert!(first == second, "the answer after /reset differs: {out:?}");
    let first = String::from_utf8_lossy(first);
    assert!(first.ends_with('\n') && first.contains("Paris"), "{out:?}");
}

#[test]
fn refuses_a_model_that_does_not_fit() {
    let model = util::real_model();
    let tmp = tempfile::tempdir().unwrap();
    offgrid(tmp.path())
        .arg("run")
        .arg(&model)
        .args(["--prompt", QUESTION])
        .env("OFFGRID_ASSUME_RAM_MIB", "100")
        .assert()
        .code(1)
        .stdout("")
        .stderr(predicate::str::contains("does not fit this machine"))
        .stderr(predicate::str::contains("only 100.0 MiB"))
        .stderr(predicate::str::contains("KV cache"))
        .stderr(predicate::str::contains("help: "));
    // A smaller context fits where the default one does not.
    let tight = offgrid(tmp.path())
        .args(["models", "--json", "--ctx", "256", "--models-dir"])
        .arg(model.parent().unwrap())
        .output()
        .unwrap();
    assert!(tight.status.success());
}

#[test]
fn picks_the_best_quantization_that_fits() {
    let model = util::real_model();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("models");
    util::place(&model, &dir, "smollm2.Q4_1.gguf");
    // A "Q8_0" of 400 MiB: the real header, its file type patched, the rest sparse.
    let info = offgrid::gguf::read_info(&model).unwrap();
    let mut head = fs::read(&model).unwrap();
    head.truncate(info.data_offset as usize);
    let q8 = dir.join("smollm2.Q8_0.gguf");
    patch_file_type(&mut head, 7);
    fs::write(&q8, &head).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&q8)
        .unwrap()
        .set_len(400 << 20)
        .unwrap();
    // Enough for Q4_1 at ctx 512, not for the 400 MiB Q8_0.
    let out = offgrid(tmp.path())
        .args(["run", "SmolLM2", "--models-dir"])
        .arg(&dir)
        .args([
            "--prompt",
            QUESTION,
            "--temp",
            "0",
            "--max-tokens",
            "32",
            "--ctx",
            "512",
        ])
        .env("OFFGRID_ASSUME_RAM_MIB", "300")
        .assert()
        .success()
        .stderr(predicate::str::contains("Q8_0 needs"))
        .stderr(predicate::str::contains("model smollm2 Q4_1"))
        .get_output()
        .stdout
        .clone();
    assert!(String::from_utf8_lossy(&out).contains("Paris"));
    // Asking for the quantization that does not fit is refused, naming it.
    offgrid(tmp.path())
        .args(["run", "smollm2:q8_0", "--models-dir"])
        .arg(&dir)
        .args(["--prompt", QUESTION])
        .env("OFFGRID_ASSUME_RAM_MIB", "300")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("(Q8_0) does not fit"));
    offgrid(tmp.path())
        .args(["run", "smollm2:Q2_K", "--models-dir"])
        .arg(&dir)
        .args(["--prompt", QUESTION])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("has no quantization 'Q2_K'"))
        .stderr(predicate::str::contains("Q8_0, Q4_1").or(predicate::str::contains("Q4_1, Q8_0")));
}

/// Sets `general.file_type` in a GGUF header held in memory.
fn patch_file_type(head: &mut [u8], ft: u32) {
    let key = b"general.file_type";
    let at = head
        .windows(key.len())
        .position(|w| w == key)
        .expect("general.file_type in the header");
    // key bytes, then the u32 value type (4), then the value.
    let v = at + key.len() + 4;
    head[v..v + 4].copy_from_slice(&ft.to_le_bytes());
}

#[test]
fn unknown_names_and_bad_files_are_errors() {
    let model = util::real_model();
    let tmp = tempfile::tempdir().unwrap();
    offgrid(tmp.path())
        .args(["run", "no-such-model", "--models-dir"])
        .arg(model.parent().unwrap())
        .args(["--prompt", "hi"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("model 'no-such-model' not found"))
        .stderr(predicate::str::contains("SmolLM2-135M-Instruct"));
    offgrid(tmp.path())
        .args(["run", "--prompt", "hi"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no model named"));
    let fixture = util::fixtures().join("tiny-chat.Q4_1.gguf");
    offgrid(tmp.path())
        .arg("run")
        .arg(&fixture)
        .args(["--prompt", "hi"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("llama.cpp cannot load"));
    let junk = tmp.path().join("junk.gguf");
    fs::write(&junk, b"not a model at all").unwrap();
    offgrid(tmp.path())
        .arg("run")
        .arg(&junk)
        .args(["--prompt", "hi"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is not a GGUF model"));
    offgrid(tmp.path())
        .arg("run")
        .arg(tmp.path().join("missing.gguf"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("missing.gguf"));
    offgrid(tmp.path())
        .arg("run")
        .arg(&model)
        .args(["--prompt", "hi", "--temp=-1"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is not a temperature"));
}

fn stick_with_real_model(tmp: &Path) -> std::path::PathBuf {
    let stick = tmp.join("stick");
    // A copy, not a link: some tests damage it.
    let dst = stick.join("models/smollm2.gguf");
    fs::create_dir_all(dst.parent().unwrap()).unwrap();
    fs::copy(util::real_model(), &dst).unwrap();
    util::write_tree(
        &stick,
        &[("models/smollm2.gguf", "smollm2-135m-instruct")],
        Some("smollm2-135m-instruct"),
    );
    stick
}

#[test]
fn stick_model_is_verified_once_then_remembered() {
    let tmp = tempfile::tempdir().unwrap();
    let stick = stick_with_real_model(tmp.path());
    let run = |extra: &[&str]| {
        let mut c = offgrid(tmp.path());
        c.args(["run", "--stick"])
            .arg(&stick)
            .args([
                "--prompt",
                QUESTION,
                "--temp",
                "0",
                "--max-tokens",
                "32",
                "--verbose",
            ])
            .args(extra);
        c.assert()
    };
    // No trusted key: integrity only, said so.
    let first = run(&[]).success();
    let err = String::from_utf8_lossy(&first.get_output().stderr).into_owned();
    assert!(err.contains("no trusted key"), "{err}");
    assert!(!err.contains("verified before"), "{err}");
    assert!(String::from_utf8_lossy(&first.get_output().stdout).contains("Paris"));
    let cache = tmp.path().join("cache/verified-models.json");
    assert!(cache.is_file(), "no verification cache written");
    run(&[])
        .success()
        .stderr(predicate::str::contains("verified before"));
    // Damage one byte of the weights: the cache no longer applies and the run is refused.
    let model = stick.join("models/smollm2.gguf");
    let mut bytes = fs::read(&model).unwrap();
    let at = bytes.len() - 1000;
    bytes[at] ^= 0x55;
    std::thread::sleep(Duration::from_millis(20));
    fs::write(&model, &bytes).unwrap();
    run(&[])
        .code(1)
        .stdout("")
        .stderr(predicate::str::contains(
            "does not match the signed manifest",
        ))
        .stderr(predicate::str::contains("--no-verify"));
    // --no-verify runs it anyway, with a warning.
    run(&["--no-verify"])
        .success()
        .stderr(predicate::str::contains("warning: --no-verify"));
}

#[test]
fn stick_binary_finds_its_stick_by_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let stick = stick_with_real_model(tmp.path());
    let plat = offgrid::platform::Platform::host().to_string();
    let exe = stick.join(format!("bin/{plat}/offgrid"));
    fs::create_dir_all(exe.parent().unwrap()).unwrap();
    fs::copy(assert_cmd::cargo::cargo_bin("offgrid"), &exe).unwrap();
    let out = std::process::Command::new(&exe)
        .args([
            "run",
            "--prompt",
            QUESTION,
            "--temp",
            "0",
            "--max-tokens",
            "32",
        ])
        .env("OFFGRID_HOME", tmp.path().join("home"))
        .env("OFFGRID_CACHE_DIR", tmp.path().join("cache"))
        .env_remove("OFFGRID_PORTABLE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Paris"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("from stick"));
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_the_answer_then_exits() {
    let model = util::real_model();
    let tmp = tempfile::tempdir().unwrap();
    let bin = assert_cmd::cargo::cargo_bin("offgrid");
    // One shot: the first Ctrl-C ends the answer early; exit 130.
    let mut child = std::process::Command::new(&bin)
        .arg("run")
        .arg(&model)
        .args([
            "--prompt",
            "Count from 1 to 1000, one number per line.",
            "--temp",
            "0",
            "--ctx",
            "4096",
        ])
        .env("OFFGRID_HOME", tmp.path().join("home"))
        .env("OFFGRID_CACHE_DIR", tmp.path().join("cache"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 8];
    stdout.read_exact(&mut first).unwrap();
    let sent = Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(sent.elapsed() < Duration::from_secs(10));
    assert_eq!(status.code(), Some(130));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("(stopped)"), "{err}");

    // Interactive: the first Ctrl-C stops the answer and the prompt stays; a second exits.
    let mut child = std::process::Command::new(&bin)
        .arg("run")
        .arg(&model)
        .args(["--temp", "0"])
        .env("OFFGRID_HOME", tmp.path().join("home"))
        .env("OFFGRID_CACHE_DIR", tmp.path().join("cache"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "Count from 1 to 1000, one number per line.").unwrap();
    let mut stdout = child.stdout.take().unwrap();
    stdout.read_exact(&mut first).unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited on the first Ctrl-C"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    drop(stdin);
}

/// A stick written by `offgrid pack-usb` with the real model, signed by a fresh key.
fn packed_stick(tmp: &Path) -> std::path::PathBuf {
    offgrid(tmp)
        .current_dir(tmp)
        .args([
            "keygen",
            "--unencrypted",
            "--secret",
            "hq.key",
            "--public",
            "hq.pub",
        ])
        .assert()
        .success();
    offgrid(tmp)
        .current_dir(tmp)
        .args([
            "keygen",
            "--unencrypted",
            "--secret",
            "other.key",
            "--public",
            "other.pub",
        ])
        .assert()
        .success();
    let mut model_arg = std::ffi::OsString::from("smollm2-135m-instruct=");
    model_arg.push(util::real_model());
    offgrid(tmp)
        .current_dir(tmp)
        .args([
            "pack-usb",
            "stick",
            "--release",
            "1.0",
            "--bundle-id",
            "org.example.clinic",
            "--model",
        ])
        .arg(model_arg)
        .args(["--sign-with", "hq.key"])
        .assert()
        .success();
    tmp.join("stick")
}

#[test]
fn end_to_end_pack_verify_and_run_from_the_stick() {
    let tmp = tempfile::tempdir().unwrap();
    let stick = packed_stick(tmp.path());
    offgrid(tmp.path())
        .current_dir(tmp.path())
        .args(["verify", "stick", "--pubkey", "hq.pub"])
        .assert()
        .success();
    let run_sh = |args: &[&str]| {
        let mut c = Command::new("sh");
        c.arg(stick.join("run.sh"))
            .args(args)
            .current_dir(tmp.path())
            .env("OFFGRID_HOME", tmp.path().join("home"))
            .env("OFFGRID_CACHE_DIR", tmp.path().join("cache"))
            .env_remove("OFFGRID_ASSUME_RAM_MIB")
            .timeout(Duration::from_secs(300));
        c
    };
    // Signed by a trusted key: verified, the answer is right.
    let out = run_sh(&[
        "run",
        "--prompt",
        QUESTION,
        "--temp",
        "0",
        "--max-tokens",
        "48",
        "--pubkey",
        "hq.pub",
    ])
    .assert()
    .success()
    .stderr(predicate::str::contains("no trusted key").not())
    .stderr(predicate::str::contains("model smollm2-135m-instruct Q4_1"))
    .stderr(predicate::str::contains("from stick"))
    .get_output()
    .stdout
    .clone();
    assert!(String::from_utf8_lossy(&out).contains("Paris"));
    // Not signed by the key given: refused before loading.
    run_sh(&["run", "--prompt", QUESTION, "--pubkey", "other.pub"])
        .assert()
        .code(1)
        .stdout("")
        .stderr(predicate::str::contains("threshold not met"));
    // `run.sh` alone chats with the default model on stdin (sampling at the default
    // temperature, so only "an answer" is asserted).
    let out = run_sh(&[])
        .write_stdin(format!("{QUESTION}\n"))
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(String::from_utf8_lossy(&out).trim().len() > 2);
    // `run.sh models` lists the stick's model.
    run_sh(&["models"])
        .assert()
        .success()
        .stdout(predicate::str::contains("smollm2-135m-instruct *"));
}

#[test]
fn installed_home_model_runs_with_the_pinned_keys() {
    let tmp = tempfile::tempdir().unwrap();
    packed_stick(tmp.path());
    offgrid(tmp.path())
        .current_dir(tmp.path())
        .args(["install", "--from", "stick", "--pubkey", "hq.pub"])
        .assert()
        .success();
    // Not portable: the model comes from the home and its signature is checked against
    // the keys pinned at install (no --pubkey, and no "no trusted key" warning).
    let out = offgrid(tmp.path())
        .args([
            "run",
            "smollm2-135m-instruct",
            "--prompt",
            QUESTION,
            "--temp",
            "0",
            "--max-tokens",
            "32",
        ])
        .assert()
        .success()
        .stderr(predicate::str::contains("from home"))
        .stderr(predicate::str::contains("no trusted key").not())
        .get_output()
        .stdout
        .clone();
    assert!(String::from_utf8_lossy(&out).contains("Paris"));
    // A model file of the home that was changed is refused.
    let models = offgrid(tmp.path())
        .args(["models", "--json"])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&models.stdout)
        .lines()
        .find(|l| l.contains("\"model\""))
        .unwrap()
        .to_owned();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["data"]["origin"], "home");
    let path = std::path::PathBuf::from(v["data"]["path"].as_str().unwrap());
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    offgrid(tmp.path())
        .args(["run", "--prompt", QUESTION])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "does not match the signed manifest",
        ));
}
