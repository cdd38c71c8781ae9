//! The launcher scripts and the operator's README of a USB tree, rendered from the files
//! in `templates/` (embedded at build time) by plain `{{name}}` substitution.
//!
//! A placeholder the caller gives no value for is an error, never left in the output;
//! values are inserted verbatim (they come from validated inputs: FAT-safe names,
//! platform tags, versions, key ids). `run.bat` is written with CRLF line ends.
//! Known gap: the `.bat` launchers are checked by tests for content only (no Windows here).

use super::PackError;

/// `run.sh`: picks the binary for the host and runs it in portable mode.
pub const RUN_SH: &str = include_str!("../../templates/run.sh");
/// `run.bat`: the same for Windows.
pub const RUN_BAT: &str = include_str!("../../templates/run.bat");
/// `install.sh`: runs the stick's binary `install --from STICK`.
pub const INSTALL_SH: &str = include_str!("../../templates/install.sh");
/// `install.bat`: the same for Windows.
pub const INSTALL_BAT: &str = include_str!("../../templates/install.bat");
/// `README.txt`: for the field operator.
pub const README_TXT: &str = include_str!("../../templates/README.txt");
/// Shell fragment shared by `run.sh` and `install.sh` (`{{select_platform}}`).
pub const SELECT_PLATFORM_SH: &str = include_str!("../../templates/select-platform.sh");

/// Every template with its name, for tests.
pub const ALL: &[(&str, &str)] = &[
    ("run.sh", RUN_SH),
    ("run.bat", RUN_BAT),
    ("install.sh", INSTALL_SH),
    ("install.bat", INSTALL_BAT),
    ("README.txt", README_TXT),
    ("select-platform.sh", SELECT_PLATFORM_SH),
];

/// The placeholder names a template uses, in order of appearance (with repeats).
pub fn placeholders(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        match after.find("}}") {
            Some(j) => {
                out.push(&after[..j]);
                rest = &after[j + 2..];
            }
            None => break,
        }
    }
    out
}

/// Replaces every `{{name}}` in `template` with its value from `vars`; a name without a
/// value is an error naming the template and the placeholder.
pub fn render(name: &str, template: &str, vars: &[(&str, &str)]) -> Result<String, PackError> {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else {
            return Err(PackError::Template {
                template: name.to_owned(),
                name: after.chars().take(20).collect(),
            });
        };
        let key = &after[..j];
        let value = vars
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .ok_or_else(|| PackError::Template {
                template: name.to_owned(),
                name: key.to_owned(),
            })?;
        out.push_str(value);
        rest = &after[j + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Converts LF line ends to CRLF (for `.bat` files).
pub fn to_crlf(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\n', "\r\n")
}

/// What the scripts and README say about a release.
#[derive(Debug, Clone)]
pub struct ScriptVars {
    pub bundle_id: String,
    pub release: String,
    pub created: String,
    /// Space-separated platform tags.
    pub platforms: String,
    pub default_model: String,
    /// One line per model: `  NAME  SIZE  ARCH QUANT  models/NAME.gguf`.
    pub models: String,
    pub total_size: String,
    /// Comma-separated key ids.
    pub key_ids: String,
    /// One `minisign -V …` line per signature.
    pub minisign_commands: String,
    /// Empty, or a line describing the changelog file.
    pub changelog_line: String,
}

impl ScriptVars {
    fn pairs(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("bundle_id", &self.bundle_id),
            ("release", &self.release),
            ("created", &self.created),
            ("platforms", &self.platforms),
            ("default_model", &self.default_model),
            ("models", &self.models),
            ("total_size", &self.total_size),
            ("key_ids", &self.key_ids),
            ("minisign_commands", &self.minisign_commands),
            ("changelog_line", &self.changelog_line),
        ]
    }

    fn render_sh(&self, name: &str, template: &str) -> Result<String, PackError> {
        let select = render("select-platform.sh", SELECT_PLATFORM_SH, &self.pairs())?;
        let mut vars = self.pairs();
        vars.push(("select_platform", select.trim_end()));
        render(name, template, &vars)
    }

    /// The text of `run.sh`.
    pub fn run_sh(&self) -> Result<String, PackError> {
        self.render_sh("run.sh", RUN_SH)
    }

    /// The text of `install.sh`.
    pub fn install_sh(&self) -> Result<String, PackError> {
        self.render_sh("install.sh", INSTALL_SH)
    }

    /// The text of `run.bat` (CRLF).
    pub fn run_bat(&self) -> Result<String, PackError> {
        Ok(to_crlf(&render("run.bat", RUN_BAT, &self.pairs())?))
    }

    /// The text of `install.bat` (CRLF).
    pub fn install_bat(&self) -> Result<String, PackError> {
        Ok(to_crlf(&render("install.bat", INSTALL_BAT, &self.pairs())?))
    }

    /// The text of `README.txt`.
    pub fn readme(&self) -> Result<String, PackError> {
        render("README.txt", README_TXT, &self.pairs())
    }
}

pub use crate::units::human_size;

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> ScriptVars {
        ScriptVars {
            bundle_id: "org.example".into(),
            release: "1.2".into(),
            created: "2026-11-21T12:00:00Z".into(),
            platforms: "linux-x86_64 windows-x86_64".into(),
            default_model: "tiny".into(),
            models: "  tiny".into(),
            total_size: "1 KiB".into(),
            key_ids: "ABCD".into(),
            minisign_commands: "  minisign -V".into(),
            changelog_line: String::new(),
        }
    }

    #[test]
    fn every_template_renders_with_no_placeholder_left() {
        let v = vars();
        for text in [
            v.run_sh().unwrap(),
            v.install_sh().unwrap(),
            v.run_bat().unwrap(),
            v.install_bat().unwrap(),
            v.readme().unwrap(),
        ] {
            assert!(placeholders(&text).is_empty(), "left over in:\n{text}");
            assert!(text.contains("1.2"));
        }
        assert!(v.run_bat().unwrap().contains("\r\n"));
        assert!(!v.run_sh().unwrap().contains('\r'));
    }

    #[test]
    fn templates_use_only_known_placeholders() {
        let known: Vec<&str> = vars().pairs().iter().map(|(k, _)| *k).collect();
        for (name, t) in ALL {
            for p in placeholders(t) {
                assert!(
                    known.contains(&p) || p == "select_platform",
                    "{name} uses unknown placeholder {{{{{p}}}}}"
                );
            }
        }
    }

    #[test]
    fn unknown_placeholder_is_refused() {
        let e = render("t", "a {{nope}} b", &[("x", "y")]).unwrap_err();
        assert!(e.to_string().contains("{{nope}}"), "{e}");
        assert_eq!(render("t", "a{{x}}b{{x}}", &[("x", "-")]).unwrap(), "a-b-");
        assert!(render("t", "a {{x", &[("x", "y")]).is_err());
    }
}
