//! The catalog: a TOML list of what HQ may fetch (`formats/catalog.example.toml`,
//! SPEC.md §14.1) — each entry a name, a version, kind, format, size, sha256, licence and
//! its mirror URLs in preference order. A catalog is read from a path or an `http(s)`
//! URL; it may be signed (`CATALOG.minisig` beside it), checked with the same keys and
//! rules as a manifest (`TrustPolicy::check_bytes`, then `Pending::bind`), the trusted comment naming the
//! catalog id and version in place of the bundle id and release.
//!
//! With keys, the signature is checked over the exact bytes before the text is parsed
//! (trust before work); the trusted comment is then bound to the parsed id and version.
//! Without keys the catalog is parsed as read, and the CLI warns.

use std::path::Path;

use crate::manifest::Manifest;
use crate::trust::TrustPolicy;
use crate::version::Version;

use super::{excerpt, is_sha256, FetchError};

/// The `format` of a catalog.
pub const FORMAT: &str = "offgrid-catalog/1";
/// Catalogs larger than this are refused before parsing.
pub const MAX_CATALOG_BYTES: u64 = 4 << 20;

/// A parsed, validated catalog.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub format: String,
    /// Names the catalog in signatures (the bundle-id grammar).
    pub catalog_id: String,
    /// The catalog's own version (a release version; signatures bind it).
    pub version: Version,
    #[serde(default)]
    pub entries: Vec<Entry>,
}

/// One fetchable file.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub name: String,
    pub version: Version,
    /// `model`, `binary`, `doc` or `other`.
    pub kind: String,
    /// The file format, e.g. `gguf`.
    #[serde(default)]
    pub format: Option<String>,
    pub size: u64,
    pub sha256: String,
    #[serde(default)]
    pub license: Option<String>,
    /// `http(s)://` URLs or `hf://` names, most preferred first.
    pub mirrors: Vec<String>,
}

/// Where a catalog came from and whether its signatures were checked.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub catalog: Catalog,
    pub source: String,
    pub signed: bool,
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// Reads the catalog at `source` (a path or URL) and, when `policy` is given, checks
/// `SOURCE.minisig` against it (missing or untrusted: refused).
///
/// Trust before work: with a policy, the signature is read and its cryptography checked
/// over the exact bytes ([`TrustPolicy::check_bytes`]) before the catalog is parsed, so
/// an unsigned or foreign catalog costs one bounded read and one hash, never a parse.
/// Then the parse, then the trusted comment is bound to the parsed `catalog_id` and
/// `version` ([`crate::trust::Pending::bind`]). Without a policy the catalog is parsed
/// as read (the caller warns that it was not signature-checked).
pub fn load(
    agent: &ureq::Agent,
    source: &str,
    policy: Option<&TrustPolicy>,
) -> Result<Loaded, FetchError> {
    let err = |reason: String| FetchError::Catalog {
        source_name: source.to_owned(),
        reason,
    };
    let bytes = read(agent, source, MAX_CATALOG_BYTES).map_err(&err)?;
    let Some(policy) = policy else {
        let catalog = parse(&bytes).map_err(&err)?;
        return Ok(Loaded {
            catalog,
            source: source.to_owned(),
            signed: false,
        });
    };
    let sig_source = format!("{source}.minisig");
    let untrusted = |reason: String| FetchError::CatalogUntrusted {
        source_name: source.to_owned(),
        reason,
    };
    let sig = read(agent, &sig_source, crate::sign::MAX_SIGNATURE_BYTES as u64)
        .map_err(|r| untrusted(format!("no signature '{sig_source}': {r}")))?;
    let sig = String::from_utf8(sig).map_err(|_| untrusted("the signature is not text".into()))?;
    let name = sig_source
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("catalog.minisig")
        .to_owned();
    let pending = policy
        .check_bytes(&bytes, &[(name, sig)])
        .map_err(|e| untrusted(trust_reason(&e)))?;
    let catalog = parse(&bytes).map_err(&err)?;
    let sha = crate::sign::sha256_hex(&bytes);
    pending
        .bind(|comment| check_comment(comment, &catalog, &sha))
        .map_err(|e| untrusted(trust_reason(&e)))?;
    Ok(Loaded {
        catalog,
        source: source.to_owned(),
        signed: true,
    })
}

/// The trusted comment of a catalog signature: that of a manifest (SPEC.md §4.2) with
/// the catalog id as `bundle`, its version as `release` and the catalog's sha256.
fn check_comment(comment: &str, catalog: &Catalog, sha: &str) -> Result<(), String> {
    let stub = Manifest {
        dirs: Vec::new(),
        commands: Vec::new(),
        format: crate::manifest::FORMAT.into(),
        bundle_id: catalog.catalog_id.clone(),
        release: catalog.version.clone(),
        created: String::new(),
        platforms: Vec::new(),
        default_model: None,
        expires: None,
        files: Vec::new(),
        volumes: None,
    };
    crate::sign::check_manifest_comment(comment, &stub, sha)
        .map_err(|r| r.replace("the manifest is", "the catalog is"))
}

/// One line saying why the signature did not hold, each signature with its key id.
fn trust_reason(e: &crate::trust::TrustError) -> String {
    use crate::trust::{SignatureStatus, TrustError};
    let TrustError::ThresholdNotMet { reports, .. } = e else {
        return e.to_string();
    };
    let each: Vec<String> = reports
        .iter()
        .map(|r| {
            let key = r.key_id.as_deref().unwrap_or("?");
            let what = match &r.status {
                SignatureStatus::Valid => "valid".to_owned(),
                SignatureStatus::UnknownKey => "made by a key you did not trust".to_owned(),
                SignatureStatus::Invalid { reason } => {
                    format!("invalid: {}", reason.replace("the manifest", "the catalog"))
                }
            };
            format!("'{}' (key {key}): {what}", r.file)
        })
        .collect();
    format!("{e}; {}", each.join("; "))
}

/// Reads at most `max` bytes from a path (a regular file) or URL.
fn read(agent: &ureq::Agent, source: &str, max: u64) -> Result<Vec<u8>, String> {
    if is_url(source) {
        let resp = agent.get(source).call().map_err(|e| format!("{e}"))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(format!("HTTP {status} from '{source}'"));
        }
        return resp
            .into_body()
            .with_config()
            .limit(max)
            .read_to_vec()
            .map_err(|e| format!("reading '{source}': {e}"));
    }
    let p = Path::new(source);
    let meta = std::fs::metadata(p).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > max {
        return Err(format!("larger than {max} bytes"));
    }
    std::fs::read(p).map_err(|e| e.to_string())
}

fn good_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Parses and validates catalog bytes.
pub fn parse(bytes: &[u8]) -> Result<Catalog, String> {
    if bytes.len() as u64 > MAX_CATALOG_BYTES {
        return Err(format!("larger than {MAX_CATALOG_BYTES} bytes"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
    let c: Catalog = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
    if c.format != FORMAT {
        return Err(format!(
            "format is '{}', expected '{FORMAT}'",
            excerpt(&c.format)
        ));
    }
    crate::manifest::check_bundle_id(&c.catalog_id).map_err(|e| format!("catalog_id: {e}"))?;
    let mut seen = std::collections::BTreeSet::new();
    for (i, e) in c.entries.iter().enumerate() {
        let at = format!("entry {} ('{}')", i + 1, excerpt(&e.name));
        if !good_name(&e.name) {
            return Err(format!(
                "{at}: a name is 1-128 letters, digits, '.', '_', '-'"
            ));
        }
        if !matches!(e.kind.as_str(), "model" | "binary" | "doc" | "other") {
            return Err(format!(
                "{at}: kind '{}' is not model, binary, doc or other",
                excerpt(&e.kind)
            ));
        }
        if !is_sha256(&e.sha256) {
            return Err(format!("{at}: sha256 is not 64 lowercase hex digits"));
        }
        if e.mirrors.is_empty() {
            return Err(format!("{at}: no mirrors"));
        }
        for m in &e.mirrors {
            if !is_url(m) && !m.starts_with("hf://") {
                return Err(format!(
                    "{at}: mirror '{}' is not an http(s):// URL or an hf:// name",
                    excerpt(m)
                ));
            }
        }
        if !seen.insert((e.name.clone(), e.version.as_str().to_owned())) {
            return Err(format!("{at}: {}@{} is listed twice", e.name, e.version));
        }
    }
    Ok(c)
}

impl Catalog {
    /// The entry `NAME@VERSION`, or the newest version of `NAME`.
    pub fn find(&self, wanted: &str) -> Option<&Entry> {
        let (name, version) = match wanted.split_once('@') {
            Some((n, v)) => (n, Some(v.parse::<Version>().ok()?)),
            None => (wanted, None),
        };
        self.entries
            .iter()
            .filter(|e| e.name == name && version.as_ref().is_none_or(|v| *v == e.version))
            .max_by(|a, b| a.version.cmp(&b.version))
    }

    /// `name@version` of every entry, for messages.
    pub fn names(&self) -> String {
        let v: Vec<String> = self
            .entries
            .iter()
            .take(20)
            .map(|e| format!("{}@{}", e.name, e.version))
            .collect();
        v.join(", ")
    }

    /// The newest entry named `name`.
    pub fn newest(&self, name: &str) -> Option<&Entry> {
        self.find(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses_and_finds() {
        let c = parse(include_bytes!("../../formats/catalog.example.toml")).unwrap();
        assert!(c.find("smollm2-135m-instruct").is_some());
        assert!(c.find("smollm2-135m-instruct@1.0.0").is_some());
        assert!(c.find("smollm2-135m-instruct@9.9").is_none());
        assert!(c.find("nope").is_none());
    }

    #[test]
    fn bad_catalogs_are_refused() {
        let base = "format = \"offgrid-catalog/1\"\ncatalog_id = \"x\"\nversion = \"1\"\n";
        let e = |s: &str| parse(format!("{base}{s}").as_bytes()).unwrap_err();
        let entry = "[[entries]]\nname = \"a\"\nversion = \"1\"\nkind = \"model\"\nsize = 1\n";
        assert!(e(&format!(
            "{entry}sha256 = \"x\"\nmirrors = [\"http://a\"]\n"
        ))
        .contains("sha256"));
        let sha = "0".repeat(64);
        assert!(e(&format!(
            "{entry}sha256 = \"{sha}\"\nmirrors = [\"ftp://a\"]\n"
        ))
        .contains("mirror"));
        assert!(e(&format!("{entry}sha256 = \"{sha}\"\nmirrors = []\n")).contains("no mirrors"));
        assert!(e("surprise = 1\n").contains("surprise"));
    }
}
