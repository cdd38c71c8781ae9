//! Trust policy: which public keys are trusted and how many of them must have signed
//! (m-of-n threshold), and the evaluation of a manifest's signatures against it.
//! A key found on the stick itself is never trusted: keys come from `--pubkey`, a
//! `--trust` file, or the keys pinned at install.
//!
//! A trust file is TOML (`formats/trust.example.toml`, SPEC.md §4): `threshold = N` and
//! one `[[keys]]` table per key with `pubkey = "RW…"` or `file = "…"` (relative to the
//! trust file) and an optional `name`. Unknown fields, a zero threshold, a threshold
//! above the number of keys and duplicate keys are refused.
//!
//! Known gap: every signature whose key is trusted is checked, each hashing the manifest
//! once more; a stick with thousands of copies of one trusted key's signature costs that
//! many hashes of the manifest.

use std::collections::BTreeSet;
use std::path::Path;

use crate::keys::{KeyError, PublicKey};
use crate::manifest::Manifest;
use crate::sign::{self, SignError};

/// Trusted keys and the number of distinct valid signatures required.
#[derive(Clone, Debug)]
pub struct TrustPolicy {
    pub keys: Vec<PublicKey>,
    pub threshold: usize,
}

/// What happened to one signature file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum SignatureStatus {
    Valid,
    UnknownKey,
    Invalid { reason: String },
}

/// One signature file and its fate.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SignatureReport {
    pub file: String,
    pub key_id: Option<String>,
    #[serde(flatten)]
    pub status: SignatureStatus,
}

/// Why trust could not be established.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("no trusted key given")]
    NoKeys,
    #[error("cannot read trust policy '{path}': {reason}")]
    Policy {
        path: String,
        reason: String,
        help: Option<&'static str>,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("signature threshold not met: {valid} valid signature(s) by trusted keys, {threshold} required")]
    ThresholdNotMet {
        valid: usize,
        threshold: usize,
        reports: Vec<SignatureReport>,
    },
}

impl TrustError {
    /// True for a clean "no" (exit 1) rather than an error.
    pub fn is_refusal(&self) -> bool {
        matches!(self, TrustError::ThresholdNotMet { .. })
    }

    /// The fix (the `help:` line). A threshold not met has none here: the tree or pack
    /// whose signatures were counted says where to get a good copy
    /// ([`untrusted_help`]).
    pub fn help(&self) -> Option<String> {
        match self {
            TrustError::NoKeys => Some(
                "pass --pubkey HQ.pub or --trust FILE; a key on the stick itself proves nothing"
                    .into(),
            ),
            TrustError::Policy { help, .. } => help.map(str::to_owned),
            TrustError::Key(e) => crate::diagnostic::Diagnostic::help(e),
            _ => None,
        }
    }
}

/// Trust files larger than this are refused.
const MAX_TRUST_FILE: u64 = 1024 * 1024;

/// The on-disk form of a trust file.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFile {
    threshold: i64,
    #[serde(default)]
    keys: Vec<KeyEntry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: Option<String>,
    pubkey: Option<String>,
    file: Option<String>,
}

impl TrustPolicy {
    /// Every key given is trusted; one signature suffices.
    ///
    /// The same key given twice counts once; two different keys with the same key id
    /// are refused (signatures name their key only by id).
    pub fn from_keys(keys: Vec<PublicKey>) -> Result<TrustPolicy, TrustError> {
        if keys.is_empty() {
            return Err(TrustError::NoKeys);
        }
        let mut out: Vec<PublicKey> = Vec::new();
        for k in keys {
            match out.iter().find(|o| o.keynum == k.keynum) {
                Some(o) if o.key == k.key => {}
                Some(_) => {
                    return Err(TrustError::Policy {
                        path: "(keys given on the command line)".into(),
                        reason: format!("two different keys have the same key id {}", k.key_id()),
                        help: Some("regenerate one of them with 'offgrid keygen'"),
                    })
                }
                None => out.push(k),
            }
        }
        Ok(TrustPolicy {
            keys: out,
            threshold: 1,
        })
    }

    /// Loads a trust file (see `formats/trust.example.toml`).
    pub fn load(path: &Path) -> Result<TrustPolicy, TrustError> {
        let shown = path.display().to_string();
        let err = |reason: String| TrustError::Policy {
            path: shown.clone(),
            reason,
            help: None,
        };
        let bytes = match crate::hash::read_regular_bounded(path, MAX_TRUST_FILE, true) {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => {
                return Err(TrustError::Policy {
                    path: shown.clone(),
                    reason: format!("it is larger than {MAX_TRUST_FILE} bytes"),
                    help: Some("a trust file lists a few keys; is this the right file?"),
                })
            }
            Err(e) => return Err(err(e.to_string())),
        };
        let text = String::from_utf8(bytes).map_err(|_| err("it is not UTF-8 text".into()))?;
        Self::from_text(&text, &crate::fsutil::parent_dir(path), &shown)
    }

    /// Parses trust-file text (what [`TrustPolicy::load`] read from `shown`); `file = …`
    /// entries are relative to `base`. For the fuzz target and tests.
    pub fn from_text(text: &str, base: &Path, shown: &str) -> Result<TrustPolicy, TrustError> {
        Self::parse(text, base).map_err(|reason| TrustError::Policy {
            path: shown.to_owned(),
            reason,
            help: Some("see formats/trust.example.toml"),
        })
    }

    /// Parses trust-file text; `file = …` entries are relative to `base`.
    fn parse(text: &str, base: &Path) -> Result<TrustPolicy, String> {
        let tf: TrustFile =
            toml::from_str(text).map_err(|e| crate::excerpt::message(e.to_string().trim_end()))?;
        if tf.keys.is_empty() {
            return Err("it lists no keys (add [[keys]] tables)".into());
        }
        let mut keys: Vec<PublicKey> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for (i, entry) in tf.keys.iter().enumerate() {
            let label = match &entry.name {
                Some(n) => format!("key {} ('{}')", i + 1, crate::excerpt::excerpt(n)),
                None => format!("key {}", i + 1),
            };
            let pk = match (&entry.pubkey, &entry.file) {
                (Some(line), None) => PublicKey::from_base64(line).map_err(|e| {
                    format!("{label}: {}", crate::excerpt::message(&first_line(&e)))
                })?,
                (None, Some(file)) => {
                    let p = base.join(file);
                    PublicKey::load(&p).map_err(|e| {
                        format!("{label}: {}", crate::excerpt::message(&first_line(&e)))
                    })?
                }
                (Some(_), Some(_)) => {
                    return Err(format!("{label} has both 'pubkey' and 'file'; give one"))
                }
                (None, None) => return Err(format!("{label} has neither 'pubkey' nor 'file'")),
            };
            if let Some(j) = keys.iter().position(|k| k.keynum == pk.keynum) {
                return Err(format!(
                    "{label} (key id {}) is listed twice (also as {}): each key counts once toward the threshold",
                    pk.key_id(),
                    names[j]
                ));
            }
            keys.push(pk);
            names.push(label);
        }
        if tf.threshold < 1 {
            return Err(format!(
                "threshold is {}; it must be at least 1",
                tf.threshold
            ));
        }
        if tf.threshold as u64 > keys.len() as u64 {
            return Err(format!(
                "threshold is {} but only {} key(s) are listed, so it can never be met",
                tf.threshold,
                keys.len()
            ));
        }
        Ok(TrustPolicy {
            keys,
            threshold: tf.threshold as usize,
        })
    }

    /// Checks `sigs` (file name, `.minisig` text) over a tree manifest. Ok with the
    /// reports when the threshold is met; `ThresholdNotMet` with them otherwise.
    ///
    /// [`TrustPolicy::check_bytes`] then [`Pending::bind`] with the manifest's trusted
    /// comment; readers of untrusted bytes call those two themselves, parsing in between.
    pub fn evaluate(
        &self,
        manifest: &Manifest,
        manifest_bytes: &[u8],
        sigs: &[(String, String)],
    ) -> Result<Vec<SignatureReport>, TrustError> {
        let sha = sign::sha256_hex(manifest_bytes);
        self.check_bytes(manifest_bytes, sigs)?
            .bind(|comment| sign::check_manifest_comment(comment, manifest, &sha))
    }

    /// The first half of the one signature evaluator: checks the cryptography of every
    /// signature over a document's exact bytes, before the document is parsed.
    ///
    /// Each signature is looked up by the key id it carries: an id not among the trusted
    /// keys is `UnknownKey` (its cryptography is not checked); otherwise the signature is
    /// checked over the bytes ([`sign::check_bytes`]). When fewer distinct trusted keys
    /// than the threshold hold, this refuses (`ThresholdNotMet`) and the document is
    /// never parsed. Otherwise [`Pending::bind`] checks each trusted comment against the
    /// parsed document and counts again.
    pub fn check_bytes(
        &self,
        bytes: &[u8],
        sigs: &[(String, String)],
    ) -> Result<Pending, TrustError> {
        if self.keys.is_empty() {
            return Err(TrustError::NoKeys);
        }
        if self.threshold == 0 || self.threshold > self.keys.len() {
            return Err(TrustError::Policy {
                path: "(trust policy)".into(),
                reason: format!(
                    "threshold {} is not between 1 and the number of keys ({})",
                    self.threshold,
                    self.keys.len()
                ),
                help: None,
            });
        }
        let mut reports = Vec::with_capacity(sigs.len());
        let mut comments = Vec::with_capacity(sigs.len());
        for (file, text) in sigs {
            let key_id = match sign::signature_key_id(text) {
                Ok(id) => id,
                Err(e) => {
                    reports.push(SignatureReport {
                        file: file.clone(),
                        key_id: None,
                        status: SignatureStatus::Invalid {
                            reason: e.to_string(),
                        },
                    });
                    comments.push(None);
                    continue;
                }
            };
            let (status, comment) = match self.keys.iter().find(|k| k.key_id() == key_id) {
                None => (SignatureStatus::UnknownKey, None),
                Some(pk) => match sign::check_bytes(pk, text, bytes) {
                    Ok(c) => (SignatureStatus::Valid, Some((pk.keynum, c))),
                    Err(e) => (
                        SignatureStatus::Invalid {
                            reason: reason_of(&e),
                        },
                        None,
                    ),
                },
            };
            reports.push(SignatureReport {
                file: file.clone(),
                key_id: Some(key_id),
                status,
            });
            comments.push(comment);
        }
        let pending = Pending {
            reports,
            comments,
            threshold: self.threshold,
        };
        pending.count()?;
        Ok(pending)
    }
}

/// Signatures whose cryptography was checked over a document's bytes, waiting for the
/// parsed document to check their trusted comments against ([`TrustPolicy::check_bytes`]).
#[derive(Debug)]
pub struct Pending {
    reports: Vec<SignatureReport>,
    /// For each report: the signer and the trusted comment, when the bytes held.
    comments: Vec<Option<([u8; 8], String)>>,
    threshold: usize,
}

impl Pending {
    /// Distinct trusted keys whose signatures hold so far; `ThresholdNotMet` with every
    /// report when too few.
    fn count(&self) -> Result<usize, TrustError> {
        let signers: BTreeSet<[u8; 8]> = self.comments.iter().flatten().map(|(k, _)| *k).collect();
        if signers.len() >= self.threshold {
            Ok(signers.len())
        } else {
            Err(TrustError::ThresholdNotMet {
                valid: signers.len(),
                threshold: self.threshold,
                reports: self.reports.clone(),
            })
        }
    }

    /// The second half: checks each held signature's trusted comment with `check` (which
    /// compares it with the parsed document and says why not), marks a mismatch invalid,
    /// and counts again. Ok with one report per signature when the threshold is met.
    pub fn bind(
        mut self,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> Result<Vec<SignatureReport>, TrustError> {
        for (report, slot) in self.reports.iter_mut().zip(self.comments.iter_mut()) {
            let Some((_, comment)) = slot else { continue };
            if let Err(reason) = check(comment.as_str()) {
                report.status = SignatureStatus::Invalid {
                    reason: format!(
                        "trusted comment of the signature by key {} does not match the manifest: {reason}",
                        report.key_id.as_deref().unwrap_or("?")
                    ),
                };
                *slot = None;
            }
        }
        self.count()?;
        Ok(self.reports)
    }
}

/// The message a refusal over signatures prints: one line per signature file with its
/// key id and status (SPEC.md §4.4); [`untrusted_help`] is its `help:` line. `subject`
/// names what was signed (`'ROOT/manifest.toml'`, `pack 'P'`).
pub fn untrusted_message(subject: &str, reports: &[SignatureReport]) -> String {
    let mut s = format!("the signatures over {subject} do not hold; no file was checked");
    for r in reports {
        let key = r.key_id.as_deref().unwrap_or("?");
        let what = match &r.status {
            SignatureStatus::Valid => "valid".to_owned(),
            SignatureStatus::UnknownKey => "made by a key you did not trust".to_owned(),
            SignatureStatus::Invalid { reason } => format!("invalid: {reason}"),
        };
        s.push_str(&format!("\n  '{}' (key {key}): {what}", r.file));
    }
    if reports.is_empty() {
        s.push_str("\n  (no signature file)");
    }
    s
}

/// The fix for a refusal [`untrusted_message`] describes; `again` says where to get a good
/// copy.
pub fn untrusted_help(reports: &[SignatureReport], again: &str) -> String {
    if !reports.is_empty()
        && reports
            .iter()
            .all(|r| r.status == SignatureStatus::UnknownKey)
    {
        format!("check that --pubkey or --trust names HQ's key (compare its fingerprint with HQ), or {again}")
    } else {
        format!("the signed bytes or their signatures changed after signing; {again}")
    }
}

fn reason_of(e: &SignError) -> String {
    e.to_string()
}

fn first_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../formats/trust.example.toml");

    #[test]
    fn example_trust_file_parses_as_two_of_three() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("trust.toml");
        std::fs::write(&p, EXAMPLE).unwrap();
        let pol = TrustPolicy::load(&p).unwrap();
        assert_eq!(pol.threshold, 2);
        let ids: Vec<String> = pol.keys.iter().map(|k| k.key_id()).collect();
        assert_eq!(
            ids,
            ["667F751A8CEC6A74", "CD2A7825DC4F82CD", "43BF27DC15CCAA97"]
        );
        // the commented-out `file =` form works too, relative to the trust file
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        std::fs::write(
            dir.path().join("keys/regional-office.pub"),
            pol.keys[2].to_file_text(),
        )
        .unwrap();
        let text = EXAMPLE
            .replace(
                "pubkey = \"RWSXqswV3Ce/QwmzGeT3lHnZjgLWnol+GcJk/dKPXU89rFBWeN8Q/Re7\"",
                "",
            )
            .replace("# file = ", "file = ");
        std::fs::write(&p, text).unwrap();
        let pol2 = TrustPolicy::load(&p).unwrap();
        assert_eq!(pol2.keys, pol.keys);
    }

    fn parse(text: &str) -> Result<TrustPolicy, String> {
        TrustPolicy::parse(text, Path::new("."))
    }

    const K1: &str = "RWQv9i5QT9N8zXAd5NuINWj3zcHdyLUFHw5x+HH0yaaBuQzZBhY1y5HL";
    const K2: &str = "RWQ6OuhP+CKsZTYVfHyxfsByDF9orgQ0TV9pQkKuvZpv9x7YOYePK44S";

    #[test]
    fn bad_trust_files_are_refused_with_a_reason() {
        let two = format!("[[keys]]\npubkey = \"{K1}\"\n[[keys]]\npubkey = \"{K2}\"\n");
        assert!(parse(&format!("threshold = 2\n{two}")).is_ok());
        let e = parse(&format!("threshold = 0\n{two}")).unwrap_err();
        assert!(e.contains("at least 1"), "{e}");
        let e = parse(&format!("threshold = 3\n{two}")).unwrap_err();
        assert!(e.contains("never be met"), "{e}");
        let e = parse(&format!(
            "threshold = 1\n{two}[[keys]]\npubkey = \"{K1}\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("listed twice"), "{e}");
        let e = parse(&format!("threshold = 1\nthreshhold = 2\n{two}")).unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
        let e = parse(&format!(
            "threshold = 1\n[[keys]]\npubkey = \"{K1}\"\nfingerprint = \"x\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
        let e = parse("threshold = 1\n[[keys]]\nname = \"a\"\n").unwrap_err();
        assert!(e.contains("neither"), "{e}");
        let e = parse(&format!(
            "threshold = 1\n[[keys]]\npubkey = \"{K1}\"\nfile = \"a.pub\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("both"), "{e}");
        let e = parse("threshold = 1\n").unwrap_err();
        assert!(e.contains("no keys"), "{e}");
        let e = parse("threshold = 1\n[[keys]]\npubkey = \"RWQ\"\n").unwrap_err();
        assert!(e.contains("key 1"), "{e}");
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.toml");
        std::fs::write(&p, "threshold = 0\n").unwrap();
        let e = TrustPolicy::load(&p).unwrap_err().to_string();
        assert!(e.contains("t.toml"), "{e}");
        let e = TrustPolicy::load(&dir.path().join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.toml"), "{e}");
    }

    #[test]
    fn from_keys_dedupes_and_needs_one() {
        assert!(matches!(
            TrustPolicy::from_keys(vec![]),
            Err(TrustError::NoKeys)
        ));
        let k = PublicKey::from_base64(K1).unwrap();
        let p = TrustPolicy::from_keys(vec![k.clone(), k.clone()]).unwrap();
        assert_eq!(p.keys.len(), 1);
        assert_eq!(p.threshold, 1);
        let mut clash = k.clone();
        clash.key[0] ^= 1;
        assert!(TrustPolicy::from_keys(vec![k, clash]).is_err());
    }
}
