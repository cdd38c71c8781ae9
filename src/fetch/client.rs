//! The HTTP client every fetch uses: ureq 3 over rustls (no OpenSSL), blocking, with
//! proxies from the environment (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`),
//! an optional extra CA file for an internal mirror, and a per-read timeout that turns
//! a stalled connection into an error instead of a hang.
//!
//! HTTP statuses are not errors here: callers check `206`, `200`, redirects themselves.
//! Known gap: `--ca-file` replaces the built-in web roots (webpki) rather than adding to
//! them, so one run trusts either the public web or the internal CA.

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
        tls = tls.root_certs(load_ca(p)?);
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
        .build();
    Ok(config.into())
}

fn load_ca(path: &Path) -> Result<RootCerts, FetchError> {
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
    Ok(RootCerts::new_with_certs(&certs))
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
