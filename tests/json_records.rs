//! Every `--json` record the CLI prints, parsed against the fields SPEC.md §9.2 documents:
//! one site world (a signed 1.0.0 and 1.1.0 tree, an HQ key) drives each command in turn,
//! as a user would, and every line must be `{"type", "data"}` JSON whose `data` carries
//! `schema` and exactly the documented fields (those marked "only when" may be absent).
//! The table is read from SPEC.md at run time, so the documentation is what is tested.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::util::{world, World, V1_TO_V2};

/// `(command label, record type)` -> (required fields, fields present only sometimes).
type Table = BTreeMap<(String, String), (BTreeSet<String>, BTreeSet<String>)>;

/// Reads the record table between the `json-records` markers of SPEC.md §9.2. A row is
/// `| command | type… | fields |`; each name is in backticks, a trailing `?` marks "only
/// when", text in parentheses is commentary, and fields `as \`CMD\`'s \`TYPE\`` (then
/// `plus` more) copy another row's.
fn documented() -> Table {
    let spec = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("SPEC.md")).unwrap();
    let start = spec
        .find("<!-- json-records begin -->")
        .expect("SPEC.md has the json-records table");
    let end = spec
        .find("<!-- json-records end -->")
        .expect("SPEC.md closes the json-records table");
    let ticks = |s: &str| -> Vec<String> {
        let mut depth = 0usize;
        let plain: String = s
            .chars()
            .filter(|c| {
                match c {
                    '(' => depth += 1,
                    ')' => depth = depth.saturating_sub(1),
                    _ => return depth == 0,
                }
                false
            })
            .collect();
        plain
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    };
    let mut t = Table::new();
    let mut refs = Vec::new();
    for row in spec[start..end].lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert!(cells.len() >= 5, "SPEC.md §9.2 row {row:?}");
        let cmd = ticks(cells[1]).concat();
        let mut names = ticks(cells[3]);
        let copy = cells[3].starts_with("as ");
        let from = copy.then(|| (names[0].replace("'s", ""), names[1].clone()));
        if copy {
            names.drain(..2);
        }
        let (mut req, mut opt) = (BTreeSet::new(), BTreeSet::new());
        for f in names {
            match f.strip_suffix('?') {
                Some(o) => opt.insert(o.to_owned()),
                None => req.insert(f),
            };
        }
        for ty in ticks(cells[2]) {
            let key = (cmd.clone(), ty);
            if let Some(from) = &from {
                refs.push((key.clone(), from.clone()));
            }
            let dup = t.insert(key.clone(), (req.clone(), opt.clone()));
            assert!(dup.is_none(), "SPEC.md §9.2 lists {key:?} twice");
        }
    }
    for (key, from) in refs {
        let (req, opt) = t
            .get(&from)
            .unwrap_or_else(|| panic!("SPEC.md §9.2: {key:?} refers to {from:?}, not in the table"))
            .clone();
        let row = t.get_mut(&key).unwrap();
        row.0.extend(req);
        row.1.extend(opt);
    }
    t
}

/// One command's output: the label it is documented under, its exit code and its records.
struct Run {
    label: String,
    code: i32,
    stderr: String,
    records: Vec<Value>,
    bad_lines: Vec<String>,
}

fn run(w: &World, label: &str, args: &[&str]) -> Run {
    let out = w.cmd().args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut records = Vec::new();
    let mut bad_lines = Vec::new();
    for line in text.lines() {
        match serde_json::from_str::<Value>(line) {
            Ok(v) => records.push(v),
            Err(e) => bad_lines.push(format!("{line:?}: {e}")),
        }
    }
    Run {
        label: label.to_owned(),
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        records,
        bad_lines,
    }
}

/// An exit code [`check`] accepts whatever it is.
const ANY: i32 = i32::MIN;

/// Every problem of `r` against the table and the exit code it should have. A command
/// that fails ends with exactly one `error` record (SPEC.md §9.3) carrying its exit code
/// and the text of its stderr; one that succeeds prints none.
fn check(t: &Table, r: &Run, want_code: i32, seen: &mut BTreeSet<(String, String)>) -> Vec<String> {
    let mut p = Vec::new();
    let who = &r.label;
    if want_code != ANY && r.code != want_code {
        p.push(format!(
            "{who}: exit {} (want {want_code}): {}",
            r.code, r.stderr
        ));
    }
    if r.records.is_empty() {
        p.push(format!("{who}: no JSON records on stdout"));
    }
    let errors: Vec<&Value> = r.records.iter().filter(|x| x["type"] == "error").collect();
    if r.code == 0 && !errors.is_empty() {
        p.push(format!("{who}: exit 0 but an error record: {errors:?}"));
    }
    if r.code != 0 {
        let last = r.records.last().unwrap_or(&Value::Null);
        if errors.len() != 1 || last["type"] != "error" {
            p.push(format!(
                "{who}: exit {} must end with one error record; records: {:?}",
                r.code, r.records
            ));
        } else {
            p.extend(check_error(who, r, &last["data"]));
        }
    }
    for l in &r.bad_lines {
        p.push(format!("{who}: not JSON: {l}"));
    }
    for rec in &r.records {
        let keys: BTreeSet<String> = rec
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        if keys != BTreeSet::from(["data".to_owned(), "type".to_owned()]) {
            p.push(format!("{who}: not a {{type, data}} record: {rec}"));
            continue;
        }
        let ty = rec["type"].as_str().unwrap_or_default().to_owned();
        let Some(data) = rec["data"].as_object() else {
            p.push(format!("{who}: data is not an object: {rec}"));
            continue;
        };
        if !data.get("schema").is_some_and(Value::is_u64) {
            p.push(format!("{who} {ty}: no integer schema: {rec}"));
        }
        let have: BTreeSet<String> = data.keys().cloned().collect();
        let key = (who.clone(), ty.clone());
        seen.insert(key.clone());
        // A `*` row is a record every command may print.
        let any = ("*".to_owned(), ty.clone());
        if !t.contains_key(&key) && t.contains_key(&any) {
            seen.insert(any.clone());
        }
        let Some((req, opt)) = t.get(&key).or_else(|| t.get(&any)) else {
            p.push(format!(
                "{who} {ty}: not in SPEC.md §9.2; fields: {}",
                fields(&have)
            ));
            continue;
        };
        let missing: Vec<_> = req.difference(&have).collect();
        let extra: Vec<_> = have
            .iter()
            .filter(|k| !req.contains(*k) && !opt.contains(*k))
            .collect();
        if !missing.is_empty() || !extra.is_empty() {
            p.push(format!(
                "{who} {ty}: missing {missing:?}, undocumented {extra:?}; fields: {}",
                fields(&have)
            ));
        }
    }
    p
}

/// The `error` record of a failed run says what its stderr says: the exit code, the
/// command, the `error:` line, each `caused by:` and each `help:` line.
fn check_error(who: &str, r: &Run, e: &Value) -> Vec<String> {
    let mut p = Vec::new();
    if e["exit_code"] != r.code {
        p.push(format!(
            "{who}: error record exit_code {} (exit {})",
            e["exit_code"], r.code
        ));
    }
    if !e["command"].as_str().is_some_and(|c| c.starts_with(who)) {
        p.push(format!("{who}: error record command {}", e["command"]));
    }
    let message = e["message"].as_str().unwrap_or_default();
    if message.is_empty() || !r.stderr.contains(&format!("error: {message}")) {
        p.push(format!(
            "{who}: error message {message:?} is not the stderr's: {}",
            r.stderr
        ));
    }
    let texts = |field: &str| -> Vec<String> {
        e[field]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x.as_str().unwrap_or("?").to_owned())
                    .collect()
            })
            .unwrap_or_else(|| vec![format!("{field} is not an array")])
    };
    for c in texts("causes") {
        if !r.stderr.contains(&format!("caused by: {c}")) {
            p.push(format!("{who}: cause {c:?} not on stderr: {}", r.stderr));
        }
    }
    let help = texts("help");
    for h in &help {
        // clap's usage errors: the tips are on stderr, the pointer to --help is the record's.
        if !r.stderr.contains(&format!("help: {h}"))
            && !r.stderr.contains(&format!("tip: {h}"))
            && !h.starts_with("see 'offgrid ")
        {
            p.push(format!("{who}: help {h:?} not on stderr: {}", r.stderr));
        }
    }
    if r.stderr.lines().any(|l| l.starts_with("help: ")) && help.is_empty() {
        p.push(format!(
            "{who}: stderr has help lines, the record none: {}",
            r.stderr
        ));
    }
    p
}

fn fields(have: &BTreeSet<String>) -> String {
    have.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The HQ side and the site side of one world, each command once with `--json` (and the
/// refusals that must still end with their summary record), against SPEC.md §9.2.
#[test]
fn every_json_record_carries_schema_and_the_documented_fields() {
    let t = documented();
    let w = world(64 << 10);
    let hq_pub = w.pubkey.to_str().unwrap().to_owned();
    let hq_key = w.key.to_str().unwrap().to_owned();
    fs::create_dir_all(w.p("stick")).unwrap();
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    let mut step = |label: &str, args: &[&str], code: i32| {
        let r = run(&w, label, args);
        problems.extend(check(&t, &r, code, &mut seen));
    };

    // HQ.
    step(
        "keygen",
        &[
            "keygen",
            "--unencrypted",
            "--secret",
            "k2.key",
            "--public",
            "k2.pub",
            "--json",
        ],
        0,
    );
    step(
        "verify",
        &["verify", "v1", "--pubkey", &hq_pub, "--json"],
        0,
    );
    // A refusal (a key that did not sign) ends with the same summary record.
    step(
        "verify",
        &["verify", "v1", "--pubkey", "k2.pub", "--json"],
        1,
    );
    step("inspect", &["inspect", "v1", "--json"], 0);
    let pack: Vec<&str> = ["create-update-pack"]
        .into_iter()
        .chain(V1_TO_V2)
        .chain(["--output", "up.ogpack", "--sign-with", &hq_key, "--json"])
        .collect();
    step("create-update-pack", &pack, 0);
    step("inspect", &["inspect", "up.ogpack", "--json"], 0);
    // The same pack in parts (SPEC.md §7.18): `pack_parts`, and a part's `part`.
    let cut: Vec<&str> = ["create-update-pack"]
        .into_iter()
        .chain(V1_TO_V2)
        .chain(["--output", "cut.ogpack", "--sign-with", &hq_key])
        .chain(["--volume-size", "12K", "--json"])
        .collect();
    step("create-update-pack", &cut, 0);
    let mut parts: Vec<String> = fs::read_dir(w.p(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("cut.ogpack.part"))
        .collect();
    parts.sort();
    assert!(parts.len() >= 2, "cut into {parts:?}: {problems:?}");
    step("inspect", &["inspect", &parts[1], "--json"], 0);
    step(
        "verify",
        &["verify", &parts[1], "--pubkey", &hq_pub, "--json"],
        0,
    );
    // A catalog naming a recorded file, with a newer version of it.
    let same =
        w.v1.files
            .iter()
            .find(|f| f.path == "data/same.txt")
            .unwrap();
    let entry = |version: &str, sha: &str| {
        format!(
            "[[entries]]\nname = \"same\"\nversion = \"{version}\"\nkind = \"model\"\n\
             format = \"gguf\"\nsize = {}\nsha256 = \"{sha}\"\n\
             mirrors = [\"https://models.example.org/same.gguf\"]\n\n",
            same.size
        )
    };
    fs::write(
        w.p("catalog.toml"),
        format!(
            "format = \"offgrid-catalog/1\"\ncatalog_id = \"org.example.models\"\n\
             version = \"1\"\n\n{}{}",
            entry("1.0.0", &same.sha256),
            entry("2.0.0", &"0".repeat(64))
        ),
    )
    .unwrap();
    step(
        "check-updates",
        &["check-updates", "--catalog", "catalog.toml", "--json"],
        0,
    );
    step(
        "clone",
        &[
            "clone",
            "v1",
            "c1",
            "--pubkey",
            &hq_pub,
            "--dry-run",
            "--json",
        ],
        0,
    );
    step(
        "clone",
        &["clone", "v1", "c1", "--pubkey", &hq_pub, "--json"],
        0,
    );
    // A file the manifest does not name: an `extra` record, whatever the exit code.
    fs::write(w.p("c1/notes.txt"), b"not in the manifest\n").unwrap();
    step(
        "verify",
        &["verify", "c1", "--pubkey", &hq_pub, "--json"],
        ANY,
    );
    step(
        "verify",
        &["verify", "up.ogpack", "--pubkey", &hq_pub, "--json"],
        0,
    );

    // Site.
    step(
        "install",
        &[
            "install",
            "--from",
            "v1",
            "--pubkey",
            &hq_pub,
            "--dry-run",
            "--json",
        ],
        0,
    );
    step(
        "install",
        &[
            "install",
            "--from",
            "v1",
            "--pubkey",
            &hq_pub,
            "--bin-dir",
            "bin",
            "--no-receipt",
            "--json",
        ],
        0,
    );
    step(
        "apply-update",
        &["apply-update", "up.ogpack", "--dry-run", "--json"],
        0,
    );
    let mut dry: Vec<&str> = vec!["apply-update", "--dry-run", "--json"];
    dry.extend(parts.iter().map(String::as_str));
    step("apply-update", &dry, 0);
    step(
        "apply-update",
        &["apply-update", "up.ogpack", "--no-receipt", "--json"],
        0,
    );
    // Applied already: the pack's base is no longer the installed release (a refusal).
    step(
        "apply-update",
        &["apply-update", "up.ogpack", "--no-receipt", "--json"],
        1,
    );
    step("status", &["status", "--json"], 0);
    step("status", &["status", "--verify", "--json"], 0);
    step("repair", &["repair", "--from", "v2", "--json"], 0);
    step("models", &["models", "--json"], 0);
    step("site-key", &["site-key", "--json"], 0);
    step("receipt", &["receipt", "--to", "stick", "--json"], 0);
    step("receipts", &["receipts", "import", "stick", "--json"], 0);
    step("fleet", &["fleet", "--json"], 0);
    step("rollback", &["rollback", "--json"], 0);
    step("gc", &["gc", "--keep", "1", "--json"], 0);

    // Failures end with the `error` record (SPEC.md §9.3).
    // A tampered stick: a refusal after verify's own records.
    copy_tree(&w.p("v1"), &w.p("tampered"));
    let model = w.v1.files.iter().find(|f| f.size > 0).unwrap();
    let victim = w.p(&format!("tampered/{}", model.path));
    let mut bytes = fs::read(&victim).unwrap();
    bytes[0] ^= 0xff;
    fs::write(&victim, bytes).unwrap();
    step(
        "verify",
        &["verify", "tampered", "--pubkey", &hq_pub, "--json"],
        1,
    );
    // A path that does not exist: an input error before any work.
    step(
        "install",
        &[
            "install", "--from", "missing", "--pubkey", &hq_pub, "--json",
        ],
        2,
    );
    // A value clap accepts and the command refuses.
    step("gc", &["gc", "--keep", "0", "--json"], 2);
    // Values clap refuses: a usage error, still with the record.
    step("gc", &["gc", "--keep", "many", "--json"], 2);
    step(
        "receipts",
        &["receipts", "import", "stick", "--bogus", "--json"],
        2,
    );

    let unseen: Vec<_> = [
        "keygen key",
        "verify signature",
        "verify file",
        "verify summary",
        "inspect summary",
        "create-update-pack update-pack",
        "install plan",
        "install installed",
        "apply-update plan",
        "apply-update applied",
        "status status",
        "status verified",
        "repair repaired",
        "rollback rolled-back",
        "gc gc",
        "models machine",
        "models model",
        "check-updates entry",
        "check-updates summary",
        "site-key site-key",
        "receipt receipt",
        "receipts summary",
        "fleet summary",
        "inspect change",
        "clone plan",
        "clone dest",
        "clone summary",
        "verify extra",
        "verify pack-verified",
        "* error",
    ]
    .iter()
    .filter(|k| {
        let (c, ty) = k.split_once(' ').unwrap();
        !seen.contains(&(c.to_owned(), ty.to_owned()))
    })
    .collect();
    if !unseen.is_empty() {
        problems.push(format!("never printed: {unseen:?}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            fs::copy(e.path(), dest).unwrap();
        }
    }
}
