//! What an error tells the user beyond its message: the exit code it means (SPEC.md §8)
//! and the `help:` line with the fix. Each library error type implements [`Diagnostic`]
//! beside its definition; the CLI walks an error chain and asks each link through [`of`],
//! so no help text is glued into a message and parsed back out.
//!
//! A wrapper whose variant is `#[error(transparent)]` hides the wrapped error from the
//! chain, so its `help` and `exit_code` delegate to the wrapped one.
//!
//! Known gaps: Rust cannot ask an arbitrary `dyn Error` for a trait it may implement,
//! so [`of`] tries the library's error types one by one from the list below (a unit test
//! fails when a type implements [`Diagnostic`] and is missing from it). No library
//! message carries its `help:` line (`tests/repo_rules.rs` checks), except where an
//! error is quoted as text inside another report ([`with_help`]: a clone destination's
//! error, a pack manifest's reason); the CLI splits those lines out of the text.

use std::error::Error;

use crate::exit;

/// The exit code and the help line of an error.
pub trait Diagnostic: Error {
    /// The exit code this error means on its own: [`exit::REFUSED`] for a clean "no",
    /// [`exit::ERROR`] for everything else.
    fn exit_code(&self) -> u8 {
        exit::ERROR
    }

    /// The fix, printed on its own `help:` line, when there is one.
    fn help(&self) -> Option<String> {
        None
    }
}

/// [`exit::REFUSED`] when `refusal`, else [`exit::ERROR`].
pub fn refusal_code(refusal: bool) -> u8 {
    if refusal {
        exit::REFUSED
    } else {
        exit::ERROR
    }
}

/// The message with its `help:` line, for an error quoted as text inside another one
/// (a reason string, a per-destination report): the CLI splits the line out again.
pub fn with_help(e: &dyn Diagnostic) -> String {
    match e.help() {
        Some(h) => format!("{e}\nhelp: {h}"),
        None => e.to_string(),
    }
}

macro_rules! registry {
    ($($(#[$m:meta])* $t:ty),* $(,)?) => {
        /// The diagnostic of one error of a chain, when it is one of the library's types.
        pub fn of<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a dyn Diagnostic> {
            $(
                $(#[$m])*
                if let Some(d) = e.downcast_ref::<$t>() {
                    return Some(d);
                }
            )*
            None
        }
    };
}

registry!(
    crate::clone::CloneError,
    crate::discover::DiscoverError,
    crate::fetch::FetchError,
    crate::gguf::GgufError,
    crate::gguf::split::SplitError,
    crate::inspect::InspectError,
    crate::keys::KeyError,
    crate::manifest::ManifestError,
    crate::media::MediaError,
    crate::models::ModelError,
    crate::paths::PathError,
    crate::platform::PlatformError,
    crate::pull::PullError,
    crate::serve::ServeError,
    crate::signed::HeadError,
    crate::site::SiteError,
    crate::torrent::TorrentError,
    crate::trust::TrustError,
    crate::trustroot::RootError,
    crate::update::UpdateError,
    crate::volume::VolumeError,
    crate::update::delta::DeltaError,
    crate::usb::PackError,
    crate::verify::VerifyError,
    crate::version::VersionError,
    #[cfg(feature = "llama")]
    crate::launcher::LauncherError,
);

// trust.rs and fetch/ are other areas' files: their exit codes are stated here.
impl Diagnostic for crate::trust::TrustError {
    fn exit_code(&self) -> u8 {
        refusal_code(self.is_refusal())
    }

    fn help(&self) -> Option<String> {
        self.help()
    }
}

impl Diagnostic for crate::fetch::FetchError {
    fn exit_code(&self) -> u8 {
        refusal_code(self.is_refusal())
    }

    fn help(&self) -> Option<String> {
        Some(crate::fetch::FetchError::help(self))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every type with `impl … Diagnostic for T` in src/ is in the registry of [`super::of`].
    #[test]
    fn every_diagnostic_type_is_registered() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let me = std::fs::read_to_string(root.join("diagnostic.rs")).unwrap();
        let registry = &me[me.find("registry!(\n").unwrap()..];
        let registry = &registry[..registry.find(");").unwrap()];
        let mut missing = Vec::new();
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                if p.extension().is_none_or(|x| x != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&p).unwrap();
                for line in text.lines() {
                    let Some(rest) = line
                        .strip_prefix("impl crate::diagnostic::Diagnostic for ")
                        .or_else(|| line.strip_prefix("impl Diagnostic for "))
                    else {
                        continue;
                    };
                    let name = rest.trim_end_matches(" {").rsplit("::").next().unwrap();
                    if !registry.contains(&format!("::{name},")) {
                        missing.push(format!("{} ({name})", p.display()));
                    }
                }
            }
        }
        assert!(missing.is_empty(), "not in the registry: {missing:?}");
    }
}
