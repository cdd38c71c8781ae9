//! Platform tags (`linux-x86_64`, `macos-aarch64`, `windows-x86_64`, …) and the host's.
//!
//! A tag is `OS-CPU` with OS one of `linux`, `macos`, `windows`, `freebsd` and CPU one of
//! `x86_64`, `aarch64`, `armv7`, `riscv64`. The launcher scripts map `uname -s`/`uname -m`
//! (or `%PROCESSOR_ARCHITECTURE%`) onto the same tags; SPEC.md lists the mapping.

use std::fmt;
use std::str::FromStr;

/// Operating systems a bundle can carry binaries for.
pub const OSES: &[&str] = &["linux", "macos", "windows", "freebsd"];
/// CPU architectures a bundle can carry binaries for.
pub const ARCHES: &[&str] = &["x86_64", "aarch64", "armv7", "riscv64"];

/// A validated platform tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub arch: String,
}

/// Why a platform tag was refused.
#[derive(Debug, thiserror::Error)]
#[error("unknown platform '{0}'")]
pub struct PlatformError(pub String);

impl crate::diagnostic::Diagnostic for PlatformError {
    fn help(&self) -> Option<String> {
        Some("use OS-CPU with OS one of linux, macos, windows, freebsd and CPU one of x86_64, aarch64, armv7, riscv64 (for example linux-x86_64)".into())
    }
}

impl Platform {
    /// The platform this binary was built for.
    pub fn host() -> Platform {
        let os = std::env::consts::OS;
        let arch = match std::env::consts::ARCH {
            "arm" => "armv7",
            other => other,
        };
        Platform {
            os: os.to_owned(),
            arch: arch.to_owned(),
        }
    }

    /// The executable's file name on this platform (`offgrid` or `offgrid.exe`).
    pub fn exe_name(&self) -> &'static str {
        if self.os == "windows" {
            "offgrid.exe"
        } else {
            "offgrid"
        }
    }
}

impl FromStr for Platform {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (os, arch) = s
            .split_once('-')
            .ok_or_else(|| PlatformError(s.to_owned()))?;
        if OSES.contains(&os) && ARCHES.contains(&arch) {
            Ok(Platform {
                os: os.to_owned(),
                arch: arch.to_owned(),
            })
        } else {
            Err(PlatformError(s.to_owned()))
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.os, self.arch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let p: Platform = "linux-aarch64".parse().unwrap();
        assert_eq!(p.to_string(), "linux-aarch64");
        assert!("linux-amd64".parse::<Platform>().is_err());
        assert!("plan9-x86_64".parse::<Platform>().is_err());
        assert!(Platform::host().to_string().parse::<Platform>().is_ok());
    }
}
