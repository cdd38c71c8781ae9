//! Entry points on the PATH (SPEC.md §18.5): after `install` (and `apply-update`), a small
//! shell script per command in the user's bin folder — `offgrid` itself and every command
//! the release declares for this platform — that runs the program through the home's
//! `current` link, so it always starts the current release and survives apply-update and
//! rollback without being rewritten.
//!
//! A shim is recognised by its marker line and only a shim is ever replaced: a file of the
//! same name that offgrid did not write is left alone and reported. Where the shims went
//! is kept in `HOME/commands.json`, so apply-update refreshes the same folder. On Windows
//! a shim is a batch file `NAME.cmd` that finds the current release through
//! `HOME\current.txt`. Known gaps: the `.cmd` shims are checked by their text only (no
//! Windows machine runs the tests); a command a later release drops keeps its shim, which
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
/// was chosen (`--home` or `$OFFGRID_HOME`) or on Windows, else `~/.local/bin`.
pub fn bin_dir(home: &Home, flag: Option<&Path>, home_chosen: bool) -> PathBuf {
    if let Some(f) = flag {
        return f.to_path_buf();
    }
    if let Some(e) = std::env::var_os(BIN_DIR_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(e);
    }
    if home_chosen || std::env::var_os(crate::update::home::ENV).is_some_and(|v| !v.is_empty()) {
        return home.base.join("bin");
    }
    if cfg!(windows) {
        // No per-user bin folder is on a Windows PATH by default.
        return home.base.join("bin");
    }
    crate::update::history::home_dir().join(".local/bin")
}

/// The shims an earlier install of `home`'s bundle recorded, if any.
fn recorded(home: &Home) -> Option<ShimReport> {
    let bytes = fs::read(home.root.join(RECORD)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The bin folder recorded by an earlier install, if any.
pub fn recorded_dir(home: &Home) -> Option<PathBuf> {
    recorded(home).map(|r| PathBuf::from(r.dir))
}

/// Why command `name` of `home`'s bundle gets no shim when the home root holds several
/// bundles (SPEC.md §18.5): `offgrid` stays the first bundle's, and a name another
/// bundle's shim already provides is not taken over.
fn taken(home: &Home, name: &str) -> Option<String> {
    if home.is_sub() && name == "offgrid" {
        return Some(format!(
            "the 'offgrid' command stays the one of the first bundle in '{}'",
            home.base.display()
        ));
    }
    home.members()
        .iter()
        .filter(|m| m.root != home.root)
        .find(|m| recorded(m).is_some_and(|r| r.commands.iter().any(|c| c == name)))
        .map(|m| {
            let id = m.read_state().ok().flatten().map(|s| s.bundle_id);
            format!(
                "bundle '{}' of this home provides it already; left alone",
                id.unwrap_or_default()
            )
        })
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// How a shim is written: a POSIX `sh` script, or a Windows batch file `NAME.cmd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Sh,
    Cmd,
}

impl Style {
    /// The style for a host platform tag (`windows-…` gets `.cmd` files).
    pub fn for_host(host: &str) -> Style {
        if host.starts_with("windows-") {
            Style::Cmd
        } else {
            Style::Sh
        }
    }

    /// The shim's file name for command `name`.
    pub fn file_name(self, name: &str) -> String {
        match self {
            Style::Sh => name.to_owned(),
            Style::Cmd => format!("{name}.cmd"),
        }
    }

    /// The text of the shim `name` running `rel` (a bundle path) of the current release
    /// of the home at `home_root`.
    pub fn text(self, home_root: &Path, name: &str, rel: &str, offgrid: bool) -> String {
        match self {
            Style::Sh => shim_text(home_root, name, rel, offgrid),
            Style::Cmd => cmd_text(home_root, name, rel, offgrid),
        }
    }
}

/// The marker of a `.cmd` shim (line 2).
pub const MARKER_CMD: &str = "rem offgrid shim:";

/// A Windows batch shim. Windows has no `current` link (creating symlinks needs a
/// privilege), so the shim reads the current version's folder name from
/// `HOME\current.txt`, which the home rewrites at every switch. `%` is doubled (batch
/// expands it even inside quotes); Windows paths hold no `"`.
fn cmd_text(home_root: &Path, name: &str, rel: &str, offgrid: bool) -> String {
    let home = home_root.display().to_string().replace('%', "%%");
    let rel = rel.replace('/', "\\").replace('%', "%%");
    let cur = crate::update::home::CURRENT_TXT;
    let env = if offgrid {
        format!("if not defined OFFGRID_HOME set \"OFFGRID_HOME={home}\"\r\n")
    } else {
        String::new()
    };
    format!(
        "@echo off\r\n{MARKER_CMD} runs '{name}' of the current release in '{home}'; written by offgrid install, do not edit\r\nsetlocal\r\n{env}set \"CUR=\"\r\nif exist \"{home}\\{cur}\" set /p CUR=<\"{home}\\{cur}\"\r\nif not defined CUR goto missing\r\nif not exist \"{home}\\versions\\%CUR%\\{rel}\" goto missing\r\n\"{home}\\versions\\%CUR%\\{rel}\" %*\r\nexit /b %ERRORLEVEL%\r\n:missing\r\necho offgrid: '{name}' is not in the current release of '{home}' 1>&2\r\nexit /b 9009\r\n"
    )
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
    let style = Style::for_host(host);
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
        if let Some(why) = taken(home, &name) {
            report.skipped.push((name, why));
            continue;
        }
        let p = dir.join(style.file_name(&name));
        match fs::read(&p) {
            Ok(old)
                if !String::from_utf8_lossy(&old).contains(match style {
                    Style::Sh => MARKER,
                    Style::Cmd => MARKER_CMD,
                }) =>
            {
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
        let text = style.text(&root, &name, &rel, is_offgrid);
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

    #[test]
    fn windows_gets_cmd_shims_through_current_txt() {
        assert_eq!(Style::for_host("windows-x86_64"), Style::Cmd);
        assert_eq!(Style::for_host("linux-aarch64"), Style::Sh);
        assert_eq!(Style::Cmd.file_name("tool"), "tool.cmd");
        let t = Style::Cmd.text(
            Path::new(r"C:\Users\a%b\.offgrid"),
            "offgrid",
            "bin/windows-x86_64/offgrid.exe",
            true,
        );
        let lines: Vec<&str> = t.split("\r\n").collect();
        assert_eq!(lines[0], "@echo off");
        assert!(lines[1].starts_with(MARKER_CMD));
        assert!(t.contains(r#"set /p CUR=<"C:\Users\a%%b\.offgrid\current.txt""#));
        assert!(t.contains(
            r#""C:\Users\a%%b\.offgrid\versions\%CUR%\bin\windows-x86_64\offgrid.exe" %*"#
        ));
        assert!(
            t.contains(r#"if not defined OFFGRID_HOME set "OFFGRID_HOME=C:\Users\a%%b\.offgrid""#)
        );
        assert!(t.contains("exit /b 9009"));
        assert!(!t.replace("\r\n", "").contains('\n'), "CRLF line ends only");
    }
}
