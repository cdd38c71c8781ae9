//! Receipts (SPEC.md §17.2): a small TOML file a site writes onto a stick or folder,
//! signed by its site key, saying what it runs and what happened to it. One file per
//! site, `DIR/receipts/SITEID.toml` with `SITEID.toml.minisig` and the site's public key
//! `SITEID.pub` beside it, so stock `minisign -Vm SITEID.toml -p SITEID.pub` checks it.
//!
//! The signature's trusted comment binds the site id, bundle, release, sequence number
//! and the receipt's sha256: `offgrid-receipt site=ID bundle=B release=V sequence=N
//! receipt_sha256=HEX`. The sequence number grows with every receipt a home writes, so
//! HQ keeps the newest and an older receipt carried back later cannot replace it.
//!
//! Known gap: the receipt and its signature are two files renamed one after the other;
//! a reader between the two renames (or after a power cut there) sees a receipt whose
//! signature does not match, which HQ refuses (the site's next receipt fixes it).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::keys::PublicKey;
use crate::site::{io_err, Failure, SiteError};
use crate::update::home::{Event, Recovery};
use crate::update::Home;

/// `format` of a receipt.
pub const FORMAT: &str = "offgrid-receipt/1";
/// The folder receipts go into, under the stick's root.
pub const RECEIPTS_DIR: &str = "receipts";
/// The first word of a receipt's trusted comment.
pub const COMMENT_TAG: &str = "offgrid-receipt";
/// Largest receipt read.
pub const MAX_RECEIPT: u64 = 1 << 20;

/// The result of a full verification of the current release (`receipt --verify`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub time: String,
    pub release: String,
    pub files: usize,
    /// One line per damaged or missing file (empty: every file matched).
    pub damaged: Vec<String>,
}

/// A receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub format: String,
    pub site_id: String,
    /// The site's public key line (`RW…`).
    pub site_key: String,
    pub sequence: u64,
    /// The site's own clock when it wrote this (not trusted).
    pub written: String,
    /// The newest signed time the home accepted (§17.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_signed: Option<String>,
    /// The version of the signed trust root the home is at (SPEC.md §19); absent at
    /// the implicit root 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_root: Option<u64>,
    pub offgrid_version: String,
    pub platform: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
    pub bundle_id: String,
    pub release: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// Files of the current release missing or of the wrong size (quick check).
    #[serde(default)]
    pub problems: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    #[serde(default)]
    pub history: Vec<Event>,
    #[serde(default)]
    pub recoveries: Vec<Recovery>,
    #[serde(default)]
    pub failures: Vec<Failure>,
}

impl Receipt {
    /// Parses receipt bytes (already bounded and signature-checked).
    pub fn parse(bytes: &[u8]) -> Result<Receipt, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_owned())?;
        let r: Receipt =
            toml::from_str(text).map_err(|e| crate::excerpt::message(e.to_string().trim_end()))?;
        if r.format != FORMAT {
            return Err(format!(
                "format is '{}', expected '{FORMAT}'",
                crate::excerpt::excerpt(&r.format)
            ));
        }
        Ok(r)
    }

    /// The canonical TOML text (what is signed).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Damaged or missing files, from the quick check and the full verification.
    pub fn damage(&self) -> Vec<String> {
        let mut d = self.problems.clone();
        if let Some(v) = &self.verification {
            for x in &v.damaged {
                if !d.contains(x) {
                    d.push(x.clone());
                }
            }
        }
        d
    }
}

/// The trusted comment of a receipt whose bytes hash to `sha`.
pub fn comment(r: &Receipt, sha: &str) -> String {
    format!(
        "{COMMENT_TAG} site={} bundle={} release={} sequence={} receipt_sha256={sha}",
        r.site_id, r.bundle_id, r.release, r.sequence
    )
}

/// What `receipt` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    /// The receipt file.
    pub path: String,
    pub site_id: String,
    pub sequence: u64,
    pub release: String,
    pub damage: usize,
    /// The JSON schema of this record (SPEC.md §9).
    pub schema: u32,
}

/// The receipt file of `site_id` in `dir`'s receipts folder: `(toml, minisig, pub)`.
pub fn files_in(receipts: &Path, site_id: &str) -> (PathBuf, PathBuf, PathBuf) {
    (
        receipts.join(format!("{site_id}.toml")),
        receipts.join(format!("{site_id}.toml.minisig")),
        receipts.join(format!("{site_id}.pub")),
    )
}

/// Verifies the current release fully (every chunk) against the pinned policy; each
/// damaged file as one line.
fn full_check(home: &Home, progress: crate::Progress) -> Result<Verification, SiteError> {
    let s = home.state()?;
    let policy = home.policy(&s)?;
    let dir = home.version_dir(&s.current.dir);
    let opts = crate::verify::VerifyOptions { skip_extras: true };
    let (files, damaged) = match crate::verify::verify_tree(&dir, &policy, &opts, progress) {
        Ok(r) => (r.files.len(), Vec::new()),
        Err(crate::verify::VerifyError::Failed { report }) => (
            report.files.len(),
            report.failures().map(|f| f.problem()).collect(),
        ),
        Err(e) => (
            0,
            vec![format!(
                "the release's manifest or signatures: {}",
                e.to_string().lines().next().unwrap_or_default()
            )],
        ),
    };
    Ok(Verification {
        time: crate::manifest::now_rfc3339(),
        release: s.current.release.to_string(),
        files,
        damaged,
    })
}

/// `HOME/site/last-verify.json`: the result of the last full verification of the
/// current release (`status --verify`, `receipt --verify`), which receipts carry.
pub fn last_verification_path(home: &Home) -> PathBuf {
    home.root
        .join(crate::site::SITE_DIR)
        .join("last-verify.json")
}

/// Records the current release's part of a `status --verify` check (atomic replace).
pub fn record_check(
    home: &Home,
    check: &crate::update::damage::HomeCheck,
) -> Result<(), SiteError> {
    let Some(v) = check.versions.iter().find(|v| v.current) else {
        return Ok(());
    };
    let mut damaged: Vec<String> = v
        .damaged
        .iter()
        .map(|d| format!("'{}': {}", d.path, d.detail))
        .collect();
    if let Some(p) = &v.manifest_problem {
        damaged.insert(0, format!("the release's manifest or signatures: {p}"));
    }
    record_verification(
        home,
        &Verification {
            time: crate::manifest::now_rfc3339(),
            release: v.release.clone(),
            files: v.files,
            damaged,
        },
    )
}

/// Writes `v` as the home's last full verification.
pub fn record_verification(home: &Home, v: &Verification) -> Result<(), SiteError> {
    let p = last_verification_path(home);
    let dir = crate::fsutil::parent_dir(&p);
    std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    let mut text = serde_json::to_string_pretty(v).unwrap_or_default();
    text.push('\n');
    crate::fsutil::atomic_write(&p, text.as_bytes()).map_err(io_err("write", &p))
}

/// The home's last full verification, when one was recorded for `release` (an older
/// release's result says nothing about the current one).
pub fn last_verification(home: &Home, release: &str) -> Option<Verification> {
    match crate::hash::read_regular_bounded(&last_verification_path(home), 1 << 20, false) {
        Ok(Ok(b)) => serde_json::from_slice::<Verification>(&b)
            .ok()
            .filter(|v| v.release == release),
        _ => None,
    }
}

/// Writes this site's receipt into `to/receipts/` (see the module doc). `verify` runs a
/// full verification of the current release first and records its result.
pub fn write(
    home: &Home,
    to: &Path,
    verify: bool,
    progress: crate::Progress,
) -> Result<Written, SiteError> {
    let target = |reason: String| SiteError::BadTarget {
        path: to.display().to_string(),
        reason,
    };
    match std::fs::metadata(to) {
        Ok(m) if m.is_dir() => {}
        Ok(m) => return Err(target(format!("it is {}", crate::fsutil::kind_name(&m)))),
        Err(e) => return Err(target(e.to_string())),
    }
    // Status recovers, then checks the current files' presence and sizes.
    let st = crate::update::status::status(home)?;
    let verification = if verify {
        let v = full_check(home, progress)?;
        record_verification(home, &v)?;
        Some(v)
    } else {
        last_verification(home, &st.release)
    };
    let lock = home.lock(false, "receipt")?;
    let mut s = home.state()?;
    let pk = crate::site::ensure_key(home)?;
    let sk = crate::site::secret_key(home)?;
    s.site.receipts += 1;
    let site_id = crate::site::site_id(&pk);
    let r = Receipt {
        format: FORMAT.into(),
        site_id: site_id.clone(),
        site_key: pk.to_base64(),
        sequence: s.site.receipts,
        written: crate::manifest::now_rfc3339(),
        newest_signed: s.site.newest_signed.clone(),
        trust_root: s.site.root.as_ref().map(|r| r.version),
        offgrid_version: env!("CARGO_PKG_VERSION").into(),
        platform: crate::platform::Platform::host().to_string(),
        free_bytes: crate::media::free_bytes(&home.root),
        bundle_id: s.bundle_id.clone(),
        release: s.current.release.to_string(),
        previous: s.previous.as_ref().map(|p| p.release.to_string()),
        problems: st.problems,
        verification,
        history: s.history.clone(),
        recoveries: s.recoveries.clone(),
        failures: crate::site::failures(home),
    };
    // The counter first: a number is never used twice, even if the write below fails.
    home.write_state(&s)?;
    drop(lock);
    let text = r.to_toml();
    let sha = crate::sign::sha256_hex(text.as_bytes());
    let untrusted = format!("offgrid receipt of site {site_id}");
    let sig = crate::sign::sign_bytes(&sk, text.as_bytes(), &comment(&r, &sha), &untrusted)
        .map_err(|e| SiteError::Receipt {
            path: to.display().to_string(),
            reason: e.to_string(),
            help: "the site key is damaged; make a new home",
        })?;
    let dir = to.join(RECEIPTS_DIR);
    std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    let (toml_path, sig_path, pub_path) = files_in(&dir, &site_id);
    refuse_foreign(&sig_path, &pk)?;
    crate::fsutil::atomic_write(&pub_path, pk.to_file_text().as_bytes())
        .map_err(io_err("write", &pub_path))?;
    crate::fsutil::atomic_write(&toml_path, text.as_bytes())
        .map_err(io_err("write", &toml_path))?;
    crate::fsutil::atomic_write(&sig_path, sig.as_bytes()).map_err(io_err("write", &sig_path))?;
    Ok(Written {
        path: toml_path.display().to_string(),
        site_id,
        sequence: r.sequence,
        release: r.release.clone(),
        damage: r.damage().len(),
        schema: 1,
    })
}

/// Refuses to replace a receipt signature made by another key.
fn refuse_foreign(sig_path: &Path, pk: &PublicKey) -> Result<(), SiteError> {
    let bytes = match crate::hash::read_regular_bounded(
        sig_path,
        crate::sign::MAX_SIGNATURE_BYTES as u64,
        false,
    ) {
        Ok(Ok(b)) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        _ => {
            return Err(SiteError::NotOurs {
                path: sig_path.display().to_string(),
                other: "an unreadable signature".into(),
            })
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    match crate::sign::signature_key_id(&text) {
        Ok(id) if id == pk.key_id() => Ok(()),
        Ok(id) => Err(SiteError::NotOurs {
            path: sig_path.display().to_string(),
            other: id,
        }),
        Err(_) => Err(SiteError::NotOurs {
            path: sig_path.display().to_string(),
            other: "no key (it is not a minisign signature)".into(),
        }),
    }
}

/// Reads and checks one receipt file against `pk`: signature over the exact bytes
/// first, then the parse, then every trusted-comment field and the site id and key.
pub fn check_file(toml_path: &Path, pk: &PublicKey) -> Result<(Receipt, Vec<u8>), SiteError> {
    let bad = |reason: String| SiteError::Receipt {
        path: toml_path.display().to_string(),
        reason,
        help: "have the site write a fresh receipt (offgrid receipt --to STICK)",
    };
    let sig_path = PathBuf::from(format!("{}.minisig", toml_path.display()));
    let sig = match crate::hash::read_regular_bounded(
        &sig_path,
        crate::sign::MAX_SIGNATURE_BYTES as u64,
        false,
    ) {
        Ok(Ok(b)) => String::from_utf8_lossy(&b).into_owned(),
        Ok(Err(_)) => return Err(bad("its signature file is too large".into())),
        Err(e) => return Err(bad(format!("its signature '{}': {e}", sig_path.display()))),
    };
    let bytes = match crate::hash::read_regular_bounded(toml_path, MAX_RECEIPT, false) {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return Err(bad(format!("it is larger than {MAX_RECEIPT} bytes"))),
        Err(e) => return Err(bad(e.to_string())),
    };
    let comment_text =
        crate::sign::check_bytes(pk, &sig, &bytes).map_err(|e| bad(e.to_string()))?;
    // A site met for the first time signs with a key nobody vouched for yet: the
    // signature binds the bytes to the key, not to trust, so the parse is bounded too.
    crate::toml_guard::check(&bytes).map_err(|e| bad(e.to_string()))?;
    let r = Receipt::parse(&bytes).map_err(bad)?;
    let id = crate::site::site_id(pk);
    if r.site_id != id || r.site_key != pk.to_base64() {
        return Err(bad(format!(
            "it names site {} but is signed by site {id}",
            crate::excerpt::excerpt(&r.site_id)
        )));
    }
    let want = comment(&r, &crate::sign::sha256_hex(&bytes));
    if comment_text != want {
        return Err(bad(format!(
            "its trusted comment reads '{}', expected '{want}'",
            crate::excerpt::excerpt(&comment_text)
        )));
    }
    Ok((r, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_receipt_parses_and_round_trips() {
        let text = include_str!("../../formats/receipt.example.toml");
        let r = Receipt::parse(text.as_bytes()).unwrap();
        assert_eq!(r.format, FORMAT);
        assert_eq!(Receipt::parse(r.to_toml().as_bytes()).unwrap(), r);
    }

    #[test]
    fn arbitrary_text_is_refused_without_panic() {
        for t in ["", "format = 1", "format = \"offgrid-receipt/2\"", "\u{0}"] {
            assert!(Receipt::parse(t.as_bytes()).is_err());
        }
    }
}
