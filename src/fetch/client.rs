//! The HTTP client every fetch uses: ureq 3 over rustls (no OpenSSL), blocking, with
//! proxies from the environment (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`),
//! an optional extra CA file for an internal mirror, and a per-read timeout that turns
//! a stalled connection into an error instead of a hang.
//!
//! Roots: Mozilla's web roots (`webpki-root-certs`, compiled in; the system store is not
//! read), plus the certificates of `--ca-file` when given: an internal mirror and the
//! public web are trusted in the same run.
//!
//! HTTP statuses are not errors here: callers check `206`, `200`, redirects themselves.

use std::path::Path;
use std::time::Duration;

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::Agent;

use super::FetchError;

/// The `User-Agent` offgrid sends.
pub const USER_AGENT: &str = concat!("offgrid/", env!("CARGO_PKG_VERSION"));

/// Builds the agent: `stall` is the longest wait for any one read or write.
pub fn agent(ca_file: Option<&Path>, stall: Duration) -> Result<Agent, FetchError> {
    let mut tls = TlsConfig::builder();
    if let Some(p) = ca_file {
        let mut roots: Vec<Certificate<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()))
            .collect();
        roots.extend(load_ca(p)?);
        tls = tls.root_certs(RootCerts::new_with_certs(&roots));
    }
    let config = Agent::config_builder()
        .http_status_as_error(false)
        .user_agent(USER_AGENT)
        .proxy(ureq::Proxy::try_from_env())
        .tls_config(tls.build())
        .timeout_connect(Some(stall))
        .timeout_per_read(Some(stall))
        .timeout_per_write(Some(stall))
        .max_redirects(10)
        .max_idle_connections_per_host(32)
        // One receive call takes up to a connection's chunk (ureq's default is 128 KiB):
        // eight times fewer system calls on a fast link.
        .input_buffer_size(1 << 20)
        .build();
    Ok(config.into())
}

/// The certificates of a PEM file (at most 4 MiB, a regular file, at least one).
fn load_ca(path: &Path) -> Result<Vec<Certificate<'static>>, FetchError> {
    let bad =
        |reason: String| FetchError::Usage(format!("--ca-file '{}': {reason}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() || meta.len() > 4 << 20 {
        return Err(bad("not a PEM file of at most 4 MiB".into()));
    }
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut certs: Vec<Certificate<'static>> = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let Ok(PemItem::Certificate(c)) = item {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        return Err(bad("it holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// A header's value as text (first occurrence), if present and printable.
pub fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_owned())
}

/// Adds `Authorization: Bearer HF_TOKEN` when `url` is on the Hugging Face endpoint
/// (never to other hosts; redirects do not carry it).
pub fn authed<B>(
    rb: ureq::RequestBuilder<B>,
    url: &str,
    opts: &super::Options,
) -> ureq::RequestBuilder<B> {
    match &opts.hf_token {
        Some(t) if url.starts_with(&format!("{}/", opts.hf_endpoint.trim_end_matches('/'))) => {
            rb.header("Authorization", format!("Bearer {t}"))
        }
        _ => rb,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_adds_to_the_web_roots() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        // Any DER in a CERTIFICATE block is taken as given (rustls parses it later).
        std::fs::write(
            &pem,
            "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let a = agent(Some(&pem), Duration::from_secs(5)).unwrap();
        let RootCerts::Specific(certs) = a.config().tls_config().root_certs() else {
            panic!("expected specific roots");
        };
        let web = webpki_root_certs::TLS_SERVER_ROOT_CERTS.len();
        assert!(web > 50);
        assert_eq!(certs.len(), web + 1);
        let plain = agent(None, Duration::from_secs(5)).unwrap();
        assert!(matches!(
            plain.config().tls_config().root_certs(),
            RootCerts::WebPki
        ));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        assert!(agent(Some(&empty), Duration::from_secs(5))
            .unwrap_err()
            .to_string()
            .contains("no PEM certificate"));
    }
}
