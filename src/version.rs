//! Release versions and their total order.
//!
//! A release version is one or more dot-separated decimal numbers (`1`, `2.4`,
//! `2026.11.3`), compared numerically component by component, missing components
//! counting as zero (`1.2` == `1.2.0`). This order is what refuses downgrades and
//! replays. Pre-release suffixes are deliberately not supported: a field site must never
//! have to guess whether `1.0-rc2` is newer than `1.0`.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A parsed release version.
#[derive(Debug, Clone, Eq)]
pub struct Version {
    text: String,
    parts: Vec<u64>,
}

/// Why a version string was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid release version '{text}': {reason}")]
pub struct VersionError {
    pub text: String,
    pub reason: &'static str,
}

impl crate::diagnostic::Diagnostic for VersionError {
    fn help(&self) -> Option<String> {
        Some("use dot-separated numbers such as '1.4.0' or '2026.11.2'".into())
    }
}

impl Version {
    /// The components, most significant first.
    pub fn parts(&self) -> &[u64] {
        &self.parts
    }

    /// The version exactly as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| VersionError {
            text: s.to_owned(),
            reason,
        };
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if s.len() > 64 {
            return Err(err("it is longer than 64 characters"));
        }
        let mut parts = Vec::new();
        for p in s.split('.') {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err("each part must be a decimal number"));
            }
            if p.len() > 1 && p.starts_with('0') {
                return Err(err("parts must not have leading zeros"));
            }
            parts.push(p.parse().map_err(|_| err("a part is too large"))?);
        }
        Ok(Version {
            text: s.to_owned(),
            parts,
        })
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.parts.len().max(other.parts.len());
        for i in 0..n {
            let a = self.parts.get(i).copied().unwrap_or(0);
            let b = other.parts.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => continue,
                o => return o,
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn orders_numerically() {
        assert!(v("1.10") > v("1.9"));
        assert!(v("2026.11.2") > v("2026.11"));
        assert_eq!(v("1.2"), v("1.2.0"));
        assert!(v("0.9.9") < v("1"));
    }

    #[test]
    fn refuses_garbage() {
        for bad in ["", "1..2", "v1", "1.0-rc1", "01.2", "1.x", " 1"] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?} accepted");
        }
    }
}
