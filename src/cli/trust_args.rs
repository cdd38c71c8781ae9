//! The one set of trust flags (`--pubkey`, `--trust`, `--home`) that commands checking a
//! tree against trusted keys flatten into their arguments (`verify`, `clone`), and the
//! trust policy they make.

use std::path::{Path, PathBuf};

use offgrid::keys::PublicKey;
use offgrid::trust::{TrustError, TrustPolicy};

/// Which keys to trust.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TrustArgs {
    /// A trusted minisign public key (HQ's .pub file); repeat to trust several, any one
    /// valid signature then suffices
    #[arg(long = "pubkey", value_name = "FILE", conflicts_with_all = ["trust", "home"])]
    pub pubkeys: Vec<PathBuf>,
    /// A trust policy file naming the trusted keys and how many must have signed
    #[arg(long, value_name = "FILE", conflicts_with = "home")]
    pub trust: Option<PathBuf>,
    /// Trust the keys (and threshold) pinned in this site home by `offgrid install`, as
    /// apply-update and run do
    #[arg(long, value_name = "DIR")]
    pub home: Option<PathBuf>,
}

impl TrustArgs {
    /// The policy these flags name; none at all is [`TrustError::NoKeys`] (exit 2).
    pub fn policy(&self) -> anyhow::Result<TrustPolicy> {
        if let Some(h) = &self.home {
            // A home without usable pinned keys is the operator's wrong path (exit 2), not
            // a refusal of the tree or pack: keep the message, drop the error's type.
            let home = offgrid::update::Home::resolve(Some(h));
            return home
                .state()
                .and_then(|state| home.policy(&state))
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot use the keys pinned in '{}': {}",
                        h.display(),
                        offgrid::diagnostic::with_help(&e)
                    )
                });
        }
        if let Some(t) = &self.trust {
            return Ok(TrustPolicy::load(t)?);
        }
        if self.pubkeys.is_empty() {
            return Err(TrustError::NoKeys.into());
        }
        let keys = self
            .pubkeys
            .iter()
            .map(|p| PublicKey::load(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustPolicy::from_keys(keys)?)
    }

    /// The policy after following the chain of trust roots that `path` carries (at a
    /// pack's head, in a `roots/` folder on the stick or beside the pack), applied in
    /// memory from these keys — the home's root, or the given keys as root 0 — as install
    /// and apply-update would (SPEC.md §19.3); with the versions followed. Nothing is
    /// recorded.
    pub fn policy_following(&self, path: &Path) -> anyhow::Result<(TrustPolicy, Vec<u64>)> {
        use offgrid::trustroot::{self, Source, TrustState};
        let policy = self.policy()?;
        let start = match &self.home {
            Some(h) => {
                let home = offgrid::update::Home::resolve(Some(h));
                let state = home.state()?;
                TrustState::of_home(&home, &state)?
            }
            None => TrustState::implicit(policy),
        };
        let mut sources = Vec::new();
        if path.is_file() {
            if let Some(src) = offgrid::update::reader::read_roots(path)? {
                sources.push(src);
            }
            if let Some(d) = trustroot::find_dir(&offgrid::fsutil::parent_dir(path)) {
                sources.push(Source::Dir(d));
            }
        } else if let Some(d) = trustroot::find_dir(path) {
            sources.push(Source::Dir(d));
        }
        super::trust::dry_policy(start, &sources)
    }
}
