//! Paths inside a bundle: relative, normalised, never escaping the tree, and holdable
//! by FAT32, exFAT and NTFS (the file systems USB sticks come formatted with).
//!
//! A bundle path is a `/`-separated list of non-empty components. It is refused when it is
//! absolute, has `.`/`..`/empty components, a backslash, a character Windows file
//! systems cannot store (`< > : " | ? *`, control characters), a trailing dot or space,
//! a reserved DOS device name (`CON`, `NUL`, `COM1`, … with any extension), a component
//! over 255 bytes, or a total length over 1024 bytes. Two paths that differ only in
//! letter case collide on those file systems; [`check_no_case_collisions`] finds them.
//! Known gap: case folding is ASCII-only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Why a bundle path was refused.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("path '{path}' {reason}")]
    Illegal {
        path: String,
        reason: String,
        help: &'static str,
    },
    #[error(
        "paths '{a}' and '{b}' differ only in letter case, which FAT32/exFAT/NTFS cannot hold"
    )]
    CaseCollision { a: String, b: String },
}

const RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

fn illegal(path: &str, reason: impl Into<String>, help: &'static str) -> PathError {
    PathError::Illegal {
        path: path.to_owned(),
        reason: reason.into(),
        help,
    }
}

/// Checks that one file or folder *name* (a single component) can be stored on
/// FAT32/exFAT/NTFS. `full` is the whole path, for the message.
pub fn check_component(full: &str, name: &str) -> Result<(), PathError> {
    const HELP: &str = "rename the input so that FAT32/exFAT/NTFS can hold it";
    if name.is_empty() {
        return Err(illegal(
            full,
            "has an empty component",
            "remove the doubled '/'",
        ));
    }
    if name == "." || name == ".." {
        return Err(illegal(
            full,
            "has a '.' or '..' component",
            "bundle paths are relative and never leave the tree",
        ));
    }
    if name.len() > 255 {
        return Err(illegal(full, "has a component longer than 255 bytes", HELP));
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*' | '\\') || (*c as u32) < 32)
    {
        return Err(illegal(
            full,
            format!("contains {c:?}, which FAT32/exFAT/NTFS cannot hold"),
            HELP,
        ));
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return Err(illegal(
            full,
            "has a name ending in a dot or space, which Windows file systems drop",
            HELP,
        ));
    }
    let stem = name.split('.').next().unwrap_or(name).trim_end();
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(stem)) {
        return Err(illegal(
            full,
            format!("uses the reserved device name '{stem}'"),
            HELP,
        ));
    }
    Ok(())
}

/// Checks a `/`-separated bundle path (see the module doc for the rules).
pub fn check_bundle_path(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(illegal(path, "is empty", "name a file inside the tree"));
    }
    if path.len() > 1024 {
        return Err(illegal(
            path,
            "is longer than 1024 bytes",
            "use a shorter name",
        ));
    }
    if path.starts_with('/') || path.contains('\\') || path.as_bytes().get(1) == Some(&b':') {
        return Err(illegal(
            path,
            "is absolute or uses '\\'",
            "bundle paths are relative and use '/'",
        ));
    }
    for c in path.split('/') {
        check_component(path, c)?;
    }
    Ok(())
}

/// Joins a checked bundle path onto `root`.
pub fn join(root: &Path, bundle_path: &str) -> PathBuf {
    let mut p = root.to_path_buf();
    for c in bundle_path.split('/') {
        p.push(c);
    }
    p
}

/// Finds two paths that differ only in ASCII letter case.
pub fn check_no_case_collisions<'a>(
    paths: impl IntoIterator<Item = &'a str>,
) -> Result<(), PathError> {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for p in paths {
        if let Some(prev) = seen.insert(p.to_ascii_lowercase(), p) {
            return Err(PathError::CaseCollision {
                a: prev.to_owned(),
                b: p.to_owned(),
            });
        }
    }
    Ok(())
}

impl crate::diagnostic::Diagnostic for PathError {
    fn help(&self) -> Option<String> {
        match self {
            PathError::Illegal { help, .. } => Some(help.to_string()),
            PathError::CaseCollision { .. } => Some("rename one of them".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_normal_paths() {
        for ok in [
            "models/a.gguf",
            "bin/linux-x86_64/offgrid",
            "README.txt",
            "a b/c-d_e.f",
        ] {
            check_bundle_path(ok).unwrap();
        }
    }

    #[test]
    fn refuses_escapes_and_fat_illegal_names() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "./a",
            "a\\b",
            "C:x",
            "a:b",
            "what?",
            "con",
            "models/NUL.gguf",
            "lpt1.txt",
            "trailing.",
            "space ",
            "tab\t",
            "a*b",
        ] {
            assert!(check_bundle_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn finds_case_collisions() {
        assert!(check_no_case_collisions(["a/B.gguf", "a/b.gguf"]).is_err());
        check_no_case_collisions(["a/b.gguf", "a/c.gguf"]).unwrap();
    }
}
