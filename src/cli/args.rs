//! Argument groups several commands share, declared once and `#[command(flatten)]`ed into
//! each command's arguments: the site home (`--home`), JSON output (`--json`) and the
//! inputs of a new release (`--recipe`, `--model`, `--binary`, `--add`, `--release`,
//! `--changelog`, `--default-model`, `--no-host-binary`) that `pack-usb` and
//! `create-update-pack` take. The trust flags are in `trust_args.rs`.
//!
//! Known gap: `models` and `serve` keep their own `--home` (it reads OFFGRID_HOME through
//! clap there, and serve's is a home to serve, not the one to change).

use std::path::{Path, PathBuf};

/// `--home DIR`: the site home a command works on.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct HomeArg {
    /// Site home [env: OFFGRID_HOME] [default: ~/.offgrid]
    #[arg(long = "home", value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

impl HomeArg {
    /// The folder given, if any (the library resolves the default).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
}

/// `--bundle ID`: the one bundle of a home holding several (SPEC.md §7.5) a command works
/// on; without it, every bundle.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BundleArg {
    /// Only this bundle of a home holding several [default: every bundle]
    #[arg(long = "bundle", value_name = "ID")]
    pub id: Option<String>,
}

impl BundleArg {
    /// The homes of the site home `home` this command works on: the bundle given, else
    /// every bundle the home holds (the root's first).
    pub fn homes(
        &self,
        home: &offgrid::update::Home,
    ) -> anyhow::Result<Vec<offgrid::update::Home>> {
        Ok(home.select(self.id.as_deref())?)
    }

    /// The one home a command that changes one bundle works on: the bundle given, or the
    /// only one; several without `--bundle` is a usage error (exit 2) naming them.
    pub fn one(
        &self,
        home: &offgrid::update::Home,
        command: &str,
    ) -> anyhow::Result<offgrid::update::Home> {
        let mut homes = self.homes(home)?;
        if homes.len() > 1 {
            let held = home.held();
            return Err(offgrid::update::UpdateError::usage_help(
                format!(
                    "the site home '{}' holds {} bundles ({}); say which one {command} works on",
                    home.base.display(),
                    held.len(),
                    held.join(", ")
                ),
                format!(
                    "offgrid {command} --bundle {}",
                    held.first().map(String::as_str).unwrap_or("ID")
                ),
            )
            .into());
        }
        Ok(homes.remove(0))
    }
}

/// `--json`: print JSON Lines records (SPEC.md §9) instead of text.
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct JsonArg {
    /// Print the result as JSON Lines
    #[arg(long)]
    pub json: bool,
}

/// The inputs of a new release, as a recipe and/or flags (SPEC.md §6).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ReleaseArgs {
    /// The new release's recipe (SPEC.md §6, formats/offgrid.toml); flags override its
    /// single values and add to its lists
    #[arg(long, value_name = "FILE")]
    pub recipe: Option<PathBuf>,
    /// A GGUF model, FILE or NAME=FILE; NAME defaults to the file name without extension
    /// (repeatable)
    #[arg(long = "model", value_name = "[NAME=]FILE")]
    pub models: Vec<String>,
    /// The offgrid executable for one platform, e.g. linux-aarch64=dist/offgrid
    /// (repeatable); the running offgrid is added for this computer's platform unless
    /// --no-host-binary
    #[arg(long = "binary", value_name = "PLATFORM=FILE")]
    pub binaries: Vec<String>,
    /// Any file or folder carried at DEST in the tree (repeatable), with options
    /// kind=program|library|data|document|model (default data), platform=OS-CPU (programs
    /// and libraries), mode=OCTAL (a file; default: the source's), command=NAME (a program
    /// put on the site's PATH); a folder keeps its structure, empty folders and modes
    #[arg(long = "add", value_name = "DEST=SRC[,OPT=VALUE...]")]
    pub adds: Vec<String>,
    /// Release version, e.g. 1.4.0
    #[arg(long, value_name = "VERSION")]
    pub release: Option<String>,
    /// A changelog to carry as CHANGELOG.txt (shown at apply-update)
    #[arg(long, value_name = "FILE")]
    pub changelog: Option<PathBuf>,
    /// The model `run.sh` starts with no argument [default: the first model]
    #[arg(long, value_name = "NAME")]
    pub default_model: Option<String>,
    /// Do not add the running offgrid for this computer's platform
    #[arg(long)]
    pub no_host_binary: bool,
    /// Write a GGUF model of at least SIZE in llama.cpp's split layout with its
    /// metadata alone in shard 1, so a metadata edit (a chat template) leaves the tensor
    /// shards unchanged and a site's store keeps them once; 'never' keeps each model
    /// that fits the medium one file [default: 256M]
    #[arg(long, value_name = "SIZE|never")]
    pub split_models_over: Option<String>,
}

impl ReleaseArgs {
    /// The clap ids of these flags, for a command whose other flags conflict with them.
    pub const IDS: [&'static str; 9] = [
        "recipe",
        "models",
        "binaries",
        "adds",
        "release",
        "changelog",
        "default_model",
        "no_host_binary",
        "split_models_over",
    ];

    /// The library's view of these flags, with the command's own `--bundle-id` and
    /// `--sign-with`.
    pub fn flags(&self, bundle_id: Option<String>, signers: Vec<PathBuf>) -> offgrid::usb::Flags {
        offgrid::usb::Flags {
            recipe: self.recipe.clone(),
            models: self.models.clone(),
            binaries: self.binaries.clone(),
            adds: self.adds.clone(),
            release: self.release.clone(),
            bundle_id,
            changelog: self.changelog.clone(),
            default_model: self.default_model.clone(),
            signers,
            no_host_binary: self.no_host_binary,
            catalog_objects: Default::default(),
            split_models_over: self.split_models_over.clone(),
        }
    }
}
