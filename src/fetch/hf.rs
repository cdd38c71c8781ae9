//! Resolving `hf://OWNER/REPO/FILE[@REVISION]` through the Hugging Face Hub (or the
//! mirror `HF_ENDPOINT` names) to a commit, the file's size and its LFS sha256, and a
//! download URL pinned to that commit (so a branch that moves mid-download cannot mix
//! two versions).
//!
//! First a `HEAD` of `/OWNER/REPO/resolve/REVISION/FILE` without following redirects:
//! `X-Repo-Commit` gives the commit, `X-Linked-Etag` (else `ETag`) the LFS sha256 and
//! `X-Linked-Size` (else `Content-Length`) the size. A 40-hex etag is a git blob id, not
//! a sha256, and is never taken as one. When the headers lack the commit or a sha256,
//! the API (`/api/models/OWNER/REPO/revision/REVISION?blobs=true`) is asked: its `sha`
//! and the file's `lfs.sha256`. `HF_TOKEN` is sent as `Authorization: Bearer` to the
//! endpoint's host only (never to the CDN a download is redirected to).
//! Known gap: datasets and spaces (`/datasets/…`) are not resolved.

use super::{excerpt, is_sha256, FetchError};

/// The Hub, when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// A parsed `hf://` name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HfName {
    /// `OWNER/REPO`.
    pub repo: String,
    /// The file's path in the repository.
    pub file: String,
    /// Branch, tag or commit; `main` when not given.
    pub revision: String,
}

/// What a name resolved to.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The 40-hex commit.
    pub commit: String,
    /// The LFS sha256, when the file is in LFS.
    pub sha256: Option<String>,
    pub size: Option<u64>,
    /// The download URL, pinned to `commit`.
    pub url: String,
}

/// Parses `hf://OWNER/REPO/FILE[@REVISION]`.
pub fn parse(s: &str) -> Result<HfName, FetchError> {
    let bad = |why: &str| FetchError::BadName {
        name: excerpt(s),
        why: why.to_owned(),
    };
    let rest = s
        .strip_prefix("hf://")
        .ok_or_else(|| bad("it does not start with hf://"))?;
    let (path, revision) = match rest.rsplit_once('@') {
        Some((p, r)) if !r.is_empty() => (p, r),
        Some(_) => return Err(bad("the revision after '@' is empty")),
        None => (rest, "main"),
    };
    let mut it = path.splitn(3, '/');
    let owner = it.next().unwrap_or_default();
    let repo = it.next().unwrap_or_default();
    let file = it.next().unwrap_or_default();
    let word = |w: &str| {
        !w.is_empty()
            && w != "."
            && w != ".."
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    if !word(owner) || !word(repo) {
        return Err(bad("OWNER and REPO are letters, digits, '.', '_', '-'"));
    }
    if file.is_empty()
        || file
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(bad(
            "the FILE path is empty or has an empty, '.' or '..' part",
        ));
    }
    if revision.chars().any(|c| c.is_control() || c == ' ') || revision.contains("..") {
        return Err(bad("the revision has spaces, control characters or '..'"));
    }
    Ok(HfName {
        repo: format!("{owner}/{repo}"),
        file: file.to_owned(),
        revision: revision.to_owned(),
    })
}

/// Percent-encodes everything but unreserved characters (and `/` when `keep_slash`).
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn resolve_url(endpoint: &str, name: &HfName, revision: &str) -> String {
    format!(
        "{}/{}/resolve/{}/{}",
        endpoint.trim_end_matches('/'),
        name.repo,
        encode(revision, false),
        encode(&name.file, true)
    )
}

/// An etag as a sha256, if it is one (quotes and `W/` stripped, lowercased).
fn etag_sha256(etag: &str) -> Option<String> {
    let t = etag
        .trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_ascii_lowercase();
    is_sha256(&t).then_some(t)
}

fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Resolves `name` at `endpoint` (see the module doc).
pub fn resolve(
    agent: &ureq::Agent,
    name: &HfName,
    endpoint: &str,
    token: Option<&str>,
) -> Result<Resolved, FetchError> {
    let shown = format!("hf://{}/{}@{}", name.repo, name.file, name.revision);
    let url = resolve_url(endpoint, name, &name.revision);
    let err = |url: &str, reason: String| FetchError::Resolve {
        name: shown.clone(),
        url: url.to_owned(),
        reason,
    };
    let mut req = agent.head(&url).config().max_redirects(0).build();
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let resp = req.call().map_err(|e| err(&url, e.to_string()))?;
    let status = resp.status().as_u16();
    match status {
        200..=299 | 301 | 302 | 303 | 307 | 308 => {}
        401 | 403 => {
            return Err(err(
                &url,
                format!("HTTP {status}: the repository is gated or private (set HF_TOKEN)"),
            ))
        }
        404 => {
            return Err(err(
                &url,
                "HTTP 404: no such repository, file or revision".into(),
            ))
        }
        _ => return Err(err(&url, format!("HTTP {status}"))),
    }
    let h = |n: &str| super::client::header(&resp, n);
    let mut commit = h("x-repo-commit")
        .filter(|c| is_commit(c))
        .map(|c| c.to_ascii_lowercase());
    let mut sha256 = h("x-linked-etag")
        .or_else(|| h("etag"))
        .and_then(|e| etag_sha256(&e));
    let mut size = h("x-linked-size")
        .or_else(|| {
            if status == 200 {
                h("content-length")
            } else {
                None
            }
        })
        .and_then(|s| s.parse::<u64>().ok());
    if commit.is_none() || sha256.is_none() {
        let api = format!(
            "{}/api/models/{}/revision/{}?blobs=true",
            endpoint.trim_end_matches('/'),
            name.repo,
            encode(&name.revision, false)
        );
        if let Some(info) = api_info(agent, &api, token, &name.file).map_err(|r| err(&api, r))? {
            commit = commit.or(info.0);
            sha256 = sha256.or(info.1);
            size = size.or(info.2);
        }
    }
    let commit = commit.ok_or_else(|| {
        err(
            &url,
            "the server named no commit (no X-Repo-Commit header, no API answer)".into(),
        )
    })?;
    Ok(Resolved {
        url: resolve_url(endpoint, name, &commit),
        commit,
        sha256,
        size,
    })
}

type ApiInfo = (Option<String>, Option<String>, Option<u64>);

/// Asks the API for the commit and the file's LFS sha256 and size. `Ok(None)`: the
/// endpoint has no API (404).
fn api_info(
    agent: &ureq::Agent,
    api: &str,
    token: Option<&str>,
    file: &str,
) -> Result<Option<ApiInfo>, String> {
    let mut req = agent.get(api);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let resp = req.call().map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    if status == 404 {
        return Ok(None);
    }
    if status != 200 {
        return Err(format!("HTTP {status}"));
    }
    let text = resp
        .into_body()
        .with_config()
        .limit(8 << 20)
        .read_to_string()
        .map_err(|e| format!("reading the answer: {e}"))?;
    // Typed, so whatever else the answer holds is skipped without being kept: a hostile
    // mirror's 8 MiB of `[0,0,…]` costs no memory beyond its text (a sibling costs
    // about 90 bytes: 8 MiB of the smallest ones, 45 MB).
    #[derive(serde::Deserialize)]
    struct Info {
        sha: Option<String>,
        #[serde(default)]
        siblings: Vec<Sibling>,
    }
    #[derive(serde::Deserialize)]
    struct Sibling {
        rfilename: String,
        size: Option<u64>,
        lfs: Option<Lfs>,
    }
    #[derive(serde::Deserialize)]
    struct Lfs {
        sha256: Option<String>,
        size: Option<u64>,
    }
    let v: Info = serde_json::from_str(&text)
        .map_err(|e| format!("the answer is not a model-info answer: {e}"))?;
    let commit = v
        .sha
        .filter(|c| is_commit(c))
        .map(|c| c.to_ascii_lowercase());
    let Some(sib) = v.siblings.into_iter().find(|s| s.rfilename == file) else {
        return Err(format!("the revision has no file '{}'", excerpt(file)));
    };
    let sha = sib
        .lfs
        .as_ref()
        .and_then(|l| l.sha256.as_deref())
        .and_then(etag_sha256);
    let size = sib.lfs.as_ref().and_then(|l| l.size).or(sib.size);
    Ok(Some((commit, sha, size)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        let n = parse("hf://HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smol.Q8_0.gguf").unwrap();
        assert_eq!(n.repo, "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF");
        assert_eq!(n.file, "smol.Q8_0.gguf");
        assert_eq!(n.revision, "main");
        let n = parse("hf://a/b/dir/f.gguf@v1.0").unwrap();
        assert_eq!(
            (n.file.as_str(), n.revision.as_str()),
            ("dir/f.gguf", "v1.0")
        );
        assert!(parse("hf://a/b").is_err());
        assert!(parse("hf://a/../f").is_err());
        assert!(parse("hf://a/b/../f").is_err());
        assert!(parse("https://a/b/c").is_err());
    }

    #[test]
    fn git_etags_are_not_sha256() {
        assert_eq!(etag_sha256(&format!("\"{}\"", "a".repeat(40))), None);
        assert_eq!(
            etag_sha256(&format!("W/\"{}\"", "A".repeat(64))),
            Some("a".repeat(64))
        );
        assert_eq!(
            resolve_url(
                "http://h/",
                &parse("hf://o/r/a b@refs/pr/1").unwrap(),
                "refs/pr/1"
            ),
            "http://h/o/r/resolve/refs%2Fpr%2F1/a%20b"
        );
    }
}
