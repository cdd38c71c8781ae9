//! Finding peers on the LAN with mDNS / DNS-SD (RFC 6762/6763): `offgrid serve` announces
//! `_offgrid._tcp.local.` with a TXT record naming what it serves, and `offgrid peers` and
//! `offgrid sync` (without `--peer`) browse for it for a bounded time. The responder is
//! the pure-Rust `mdns-sd` crate (its own thread, no system daemon). SPEC.md §12.5 is
//! normative. A peer found this way is only an address: what it serves is trusted only
//! after its signatures check (§12.4).
//!
//! Known gaps: IPv4 addresses only; where multicast is blocked, peers are named with
//! `--peer HOST:PORT`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};

/// The DNS-SD service type offgrid peers announce.
pub const SERVICE_TYPE: &str = "_offgrid._tcp.local.";
/// Longest TXT `trees` value announced (one DNS-SD string holds 255 bytes with its key).
pub const MAX_TREES_TXT: usize = 240;

/// Why announcing or browsing failed.
#[derive(Debug, thiserror::Error)]
#[error("mDNS: {0}")]
pub struct DiscoverError(String);

impl crate::diagnostic::Diagnostic for DiscoverError {
    fn help(&self) -> Option<String> {
        Some("where multicast is blocked, name peers with --peer HOST:PORT (and serve with --no-announce)".into())
    }
}

/// One tree a peer announces: `BUNDLE RELEASE`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Announced {
    pub bundle_id: String,
    pub release: String,
}

/// A peer found on the network.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Peer {
    /// Its id (the instance name).
    pub id: String,
    /// `http://ADDR:PORT`, one per IPv4 address it announced, sorted.
    pub urls: Vec<String>,
    /// What it says it serves (unverified).
    pub trees: Vec<Announced>,
}

/// The TXT `trees` value: `BUNDLE@RELEASE` joined by `,`, cut to [`MAX_TREES_TXT`] bytes
/// at a whole entry.
pub fn trees_txt(trees: &[Announced]) -> String {
    let mut s = String::new();
    for t in trees {
        let item = format!("{}@{}", t.bundle_id, t.release);
        if s.len() + item.len() + 1 > MAX_TREES_TXT {
            break;
        }
        if !s.is_empty() {
            s.push(',');
        }
        s.push_str(&item);
    }
    s
}

/// Parses a TXT `trees` value (items that are not `BUNDLE@RELEASE` are skipped).
pub fn parse_trees_txt(s: &str) -> Vec<Announced> {
    s.split(',')
        .filter_map(|item| {
            let (b, r) = item.rsplit_once('@')?;
            (!b.is_empty() && !r.is_empty()).then(|| Announced {
                bundle_id: b.to_owned(),
                release: r.to_owned(),
            })
        })
        .collect()
}

/// An announcement in force; withdrawn when dropped.
pub struct Announcer {
    daemon: ServiceDaemon,
    fullname: String,
}

impl Drop for Announcer {
    fn drop(&mut self) {
        if let Ok(rx) = self.daemon.unregister(&self.fullname) {
            let _ = rx.recv_timeout(Duration::from_secs(1));
        }
        let _ = self.daemon.shutdown();
    }
}

/// Announces a server listening on `ip:port` (an unspecified `ip` announces every address
/// of this host) as instance `id`.
pub fn announce(
    id: &str,
    ip: IpAddr,
    port: u16,
    trees: &[Announced],
) -> Result<Announcer, DiscoverError> {
    let err = |e: mdns_sd::Error| DiscoverError(e.to_string());
    let daemon = ServiceDaemon::new().map_err(err)?;
    let props = [
        ("id", id.to_owned()),
        ("trees", trees_txt(trees)),
        ("v", "1".to_owned()),
    ];
    let host = format!("{id}.local.");
    let info = if ip.is_unspecified() {
        ServiceInfo::new(SERVICE_TYPE, id, &host, "", port, &props[..])
            .map(ServiceInfo::enable_addr_auto)
    } else {
        ServiceInfo::new(SERVICE_TYPE, id, &host, ip, port, &props[..])
    }
    .map_err(err)?;
    let fullname = info.get_fullname().to_owned();
    daemon.register(info).map_err(err)?;
    Ok(Announcer { daemon, fullname })
}

/// Browses for `timeout` and returns the peers that answered, sorted by id.
pub fn browse(timeout: Duration) -> Result<Vec<Peer>, DiscoverError> {
    let err = |e: mdns_sd::Error| DiscoverError(e.to_string());
    let daemon = ServiceDaemon::new().map_err(err)?;
    let rx = daemon.browse(SERVICE_TYPE).map_err(err)?;
    let deadline = Instant::now() + timeout;
    let mut peers: Vec<Peer> = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(event) = rx.recv_timeout(left) else {
            break;
        };
        if let ServiceEvent::ServiceResolved(s) = event {
            let id = s
                .get_property_val_str("id")
                .map(str::to_owned)
                .unwrap_or_else(|| {
                    s.fullname
                        .trim_end_matches(SERVICE_TYPE)
                        .trim_end_matches('.')
                        .to_owned()
                });
            let mut addrs: Vec<Ipv4Addr> = s.get_addresses_v4().into_iter().collect();
            addrs.sort();
            let urls: Vec<String> = addrs
                .iter()
                .map(|a| format!("http://{a}:{}", s.port))
                .collect();
            let trees = s
                .get_property_val_str("trees")
                .map(parse_trees_txt)
                .unwrap_or_default();
            if urls.is_empty() {
                continue;
            }
            match peers.iter_mut().find(|p| p.id == id) {
                Some(p) => {
                    for u in urls {
                        if !p.urls.contains(&u) {
                            p.urls.push(u);
                        }
                    }
                    p.urls.sort();
                }
                None => peers.push(Peer { id, urls, trees }),
            }
        }
    }
    let _ = daemon.stop_browse(SERVICE_TYPE);
    let _ = daemon.shutdown();
    peers.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(peers)
}

/// A fresh peer id: `offgrid-` and 8 hex digits.
pub fn new_peer_id() -> String {
    let mut b = [0u8; 4];
    let _ = getrandom::getrandom(&mut b);
    format!("offgrid-{}", hex::encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_round_trip_and_are_cut_at_a_whole_entry() {
        let t = vec![
            Announced {
                bundle_id: "org.example.clinic".into(),
                release: "2.0".into(),
            },
            Announced {
                bundle_id: "org.x".into(),
                release: "1.0.1".into(),
            },
        ];
        assert_eq!(trees_txt(&t), "org.example.clinic@2.0,org.x@1.0.1");
        assert_eq!(parse_trees_txt(&trees_txt(&t)), t);
        let many: Vec<Announced> = (0..100)
            .map(|i| Announced {
                bundle_id: format!("org.example.b{i}"),
                release: "1.0".into(),
            })
            .collect();
        let s = trees_txt(&many);
        assert!(s.len() <= MAX_TREES_TXT);
        assert_eq!(parse_trees_txt(&s).len(), s.split(',').count());
    }
}
