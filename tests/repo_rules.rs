//! Repository rules checked as ordinary tests: every Rust source file opens with a `//!`
//! doc saying what it is for; every template placeholder is one the renderer knows is
//! checked by the pack tests; `.ci/run` runs exactly the README's test command; the
//! library never prints or exits, and its messages carry no `help:` line.

use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let mut files = Vec::new();
    for d in ["src", "tests", "xtask/src", "fuzz/fuzz_targets"] {
        rust_files(&root().join(d), &mut files);
    }
    assert!(files.len() > 10, "found only {} files", files.len());
    let missing: Vec<_> = files
        .iter()
        .filter(|p| {
            let text = fs::read_to_string(p).unwrap_or_default();
            !text.trim_start().starts_with("//!")
        })
        .map(|p| p.strip_prefix(root()).unwrap_or(p).display().to_string())
        .collect();
    assert!(missing.is_empty(), "files without a `//!` doc: {missing:?}");
}

#[test]
fn ci_runs_the_readme_test_command() {
    let readme = fs::read_to_string(root().join("README.md")).expect("README.md");
    let ci = fs::read_to_string(root().join(".ci/run")).expect(".ci/run");
    let test_cmd = "cargo xtask ci";
    let head: String = readme.lines().take(30).collect::<Vec<_>>().join("\n");
    assert!(
        head.contains(test_cmd),
        "README does not open with `{test_cmd}`"
    );
    assert!(
        ci.lines().any(|l| l.trim() == test_cmd),
        ".ci/run does not run `{test_cmd}`"
    );
    let deps = fs::read_to_string(root().join(".ci/install-deps")).expect(".ci/install-deps");
    assert!(ci.contains(".ci/install-deps --force") && deps.contains("apt-get update"));
}

#[test]
fn every_test_file_is_a_module_of_the_one_test_crate() {
    let crate_root = fs::read_to_string(root().join("tests/tests.rs")).expect("tests/tests.rs");
    let mut missing = Vec::new();
    for e in fs::read_dir(root().join("tests"))
        .expect("tests/")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(module) = name.strip_suffix(".rs") else {
            continue;
        };
        if module != "tests" && !crate_root.contains(&format!("mod {module};")) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "test files not declared in tests/tests.rs (they would never run): {missing:?}"
    );
}

/// The library never prints and never exits (STYLE.md): only `src/main.rs` and
/// `src/cli/` talk to the terminal and choose the exit code.
#[test]
fn library_outside_the_cli_never_prints_or_exits() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let cli = root().join("src/cli");
    let forbidden = [
        "println!",
        "eprintln!",
        "print!",
        "eprint!",
        "dbg!",
        "process::exit",
    ];
    let mut found = Vec::new();
    for p in files
        .iter()
        .filter(|p| !p.starts_with(&cli) && !p.ends_with("src/main.rs"))
    {
        let text = fs::read_to_string(p).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for f in forbidden {
                // `print!` also matches inside `eprint!`/`println!`; any of them is a hit.
                if code.contains(f) {
                    found.push(format!("{}:{}: {}", p.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the library prints or exits (move it to src/cli/):\n{}",
        found.join("\n")
    );
}

/// Library errors know their help (STYLE.md "Errors know their help"): a fix goes in the
/// error type's `Diagnostic::help`, never into a message string the CLI would have to
/// split apart again. Fails on any string literal outside `src/cli/` and `src/main.rs`
/// holding `help:` (a literal `"help: …"` or an embedded `\nhelp`). Only
/// `diagnostic::with_help`, the one renderer of a diagnostic quoted as text inside
/// another report, and test modules are exempt.
#[test]
fn library_messages_carry_no_help_line() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let cli = root().join("src/cli");
    let mut found = Vec::new();
    for p in files
        .iter()
        .filter(|p| !p.starts_with(&cli) && !p.ends_with("src/main.rs"))
    {
        let text = fs::read_to_string(p).unwrap_or_default();
        // Unit tests (the tail `#[cfg(test)] mod tests`) may quote messages.
        let code = text
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or_default();
        for (i, line) in code.lines().enumerate() {
            if p.ends_with("src/diagnostic.rs") && line.contains("format!(\"{e}\\nhelp: {h}\")") {
                continue;
            }
            let line = line.split(" // ").next().unwrap_or_default();
            if line.trim_start().starts_with("//") {
                continue;
            }
            // The inside of each string literal on the line (escaped quotes kept inside).
            let mut in_str = false;
            let mut escaped = false;
            let mut lit = String::new();
            for c in line.chars() {
                if in_str {
                    if escaped {
                        escaped = false;
                        lit.push(c);
                    } else if c == '\\' {
                        escaped = true;
                        lit.push(c);
                    } else if c == '"' {
                        in_str = false;
                        if lit.starts_with("help:") || lit.contains("\\nhelp") {
                            found.push(format!("{}:{}: {}", p.display(), i + 1, line.trim()));
                        }
                        lit.clear();
                    } else {
                        lit.push(c);
                    }
                } else if c == '"' {
                    in_str = true;
                }
            }
            if in_str && (lit.starts_with("help:") || lit.contains("\\nhelp")) {
                found.push(format!("{}:{}: {}", p.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "library messages carry a help line (give the error type a Diagnostic::help):\n{}",
        found.join("\n")
    );
}
