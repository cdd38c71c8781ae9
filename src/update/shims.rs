//! Entry points on the PATH (SPEC.md §18.5): after `install` (and `apply-update`), a small
//! shell script per command in the user's bin folder — `offgrid` itself and every command
//! the release declares for this platform — that runs the program through the home's
//! `current` link, so it always starts the current release and survives apply-update and
//! rollback without being rewritten.
//!
//! A shim is recognised by its marker line and only a shim is ever replaced: a file of the
//! same name that offgrid did not write is left alone and reported. Where the shims went
//! is kept in `HOME/commands.json`, so apply-update refreshes the same folder. Known gaps:
//! Windows gets no `.cmd` shims yet; a command a later release drops keeps its shim, which
//! then says the command is not in the current release.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::manifest::Manifest;
use crate::update::home::Home;

/// The line that marks a file as an offgrid shim (line 2 of every shim).
pub const MARKER: &str = "# offgrid shim:";
/// The environment variable naming the bin folder.
pub const BIN_DIR_ENV: &str = "OFFGRID_BIN_DIR";
/// Where the home records its bin folder and commands.
pub const RECORD: &str = "commands.json";

/// What writing the shims did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShimReport {
    /// The bin folder.
    pub dir: String,
    /// Commands whose shim is in place.
    pub commands: Vec<String>,
    /// `(command, why)` for shims not written.
    #[serde(default)]
    pub skipped: Vec<(String, String)>,
    /// Whether `dir` is on the `PATH` of this process.
    pub on_path: bool,
}

/// The bin folder: `flag`, else `$OFFGRID_BIN_DIR`, else the home's `bin/` when the home
/// was chosen (`--home` or `$OFFGRID_HOME`), else `~/.local/bin`.
pub fn bin_dir(home: &Home, flag: Option<&Path>, home_chosen: bool) -> PathBuf {
    if let Some(f) = flag {
        return f.to_path_buf();
    }
    if let Some(e) = std::env::var_os(BIN_DIR_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(e);
    }
    if home_chosen || std::env::var_os(crate::update::home::ENV).is_some_and(|v| !v.is_empty()) {
        return home.root.join("bin");
    }
    crate::update::history::home_dir().join(".local/bin")
}

/// The bin folder recorded by an earlier install, if any.
pub fn recorded_dir(home: &Home) -> Option<PathBuf> {
    let bytes = fs::read(home.root.join(RECORD)).ok()?;
    let r: ShimReport = serde_json::from_slice(&bytes).ok()?;
    Some(PathBuf::from(r.dir))
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The text of the shim `name` running `rel` (a bundle path) of the current release.
fn shim_text(home_root: &Path, name: &str, rel: &str, offgrid: bool) -> String {
    let target = home_root.join("current").join(rel);
    let t = sh_quote(&target.display().to_string());
    let env = if offgrid {
        format!(
            "OFFGRID_HOME=\"${{OFFGRID_HOME:-{}}}\"\nexport OFFGRID_HOME\n",
            home_root
                .display()
                .to_string()
                .replace(['"', '$', '`', '\\'], "_")
        )
    } else {
        String::new()
    };
    format!(
        "#!/bin/sh\n{MARKER} runs '{name}' of the current release in {home}; written by offgrid install, do not edit\n{env}if [ ! -x {t} ]; then\n  echo \"offgrid: '{name}' is not in the current release of {home}\" >&2\n  exit 127\nfi\nexec {t} \"$@\"\n",
        home = sh_quote(&home_root.display().to_string()),
    )
}

/// True when `dir` is one of the folders of `$PATH`.
pub fn on_path(dir: &Path) -> bool {
    let want = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| fs::canonicalize(&d).unwrap_or(d) == want)
    })
}

/// Writes (or refreshes) the shims of `m` for `host` into `dir` and records them in the
/// home. The home's root is made absolute so the shims work from any folder.
pub fn write(home: &Home, dir: &Path, m: &Manifest, host: &str) -> std::io::Result<ShimReport> {
    let root = std::path::absolute(&home.root)?;
    let dir = std::path::absolute(dir)?;
    let mut report = ShimReport {
        dir: dir.display().to_string(),
        on_path: false,
        ..ShimReport::default()
    };
    if !cfg!(unix) {
        report
            .skipped
            .push(("*".into(), "shims are written on Unix only".into()));
        return Ok(report);
    }
    let mut wanted: Vec<(String, String, bool)> = Vec::new();
    let exe = host
        .parse::<crate::platform::Platform>()
        .map(|p| format!("bin/{host}/{}", p.exe_name()))
        .unwrap_or_default();
    if m.file(&exe).is_some() {
        wanted.push(("offgrid".into(), exe, true));
    } else {
        report.skipped.push((
            "offgrid".into(),
            format!("the release has no offgrid for {host}"),
        ));
    }
    for name in m.command_names_on(host) {
        if let Some(f) = m.command_on(&name, host) {
            wanted.push((name, f.path.clone(), false));
        }
    }
    fs::create_dir_all(&dir)?;
    for (name, rel, is_offgrid) in wanted {
        let p = dir.join(&name);
        match fs::read(&p) {
            Ok(old) if !String::from_utf8_lossy(&old).contains(MARKER) => {
                report.skipped.push((
                    name,
                    format!(
                        "'{}' exists and is not an offgrid shim; left alone",
                        p.display()
                    ),
                ));
                continue;
            }
            _ => {}
        }
        let text = shim_text(&root, &name, &rel, is_offgrid);
        crate::fsutil::atomic_write(&p, text.as_bytes())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755))?;
        }
        report.commands.push(name);
    }
    report.on_path = on_path(&dir);
    crate::fsutil::atomic_write(
        &home.root.join(RECORD),
        serde_json::to_string(&report)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_paths_for_sh() {
        assert_eq!(sh_quote("/a b/it's"), r"'/a b/it'\''s'");
        let t = shim_text(Path::new("/h"), "tool", "apps/x/tool", false);
        assert!(t.contains(MARKER));
        assert!(t.contains("exec '/h/current/apps/x/tool' \"$@\""));
    }
}
