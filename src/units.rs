//! Byte sizes and rates as people write them, and back: the one parser of sizes
//! (`--max-file-size`, `--piece-size`, SPEC.md §16), the one parser of rates
//! (`serve --limit-rate`, `fetch --limit-rate`) and the one byte-size formatter.
//!
//! Known gap: a size accepts `KB`/`MB`/… as decimal units (disks are sold that way),
//! while a rate reads every multiple as binary (`500KB/s` is 500 KiB/s, as curl and
//! aria2 read it).

/// Parses a size: bytes (`123`), or a number (decimals allowed) with a unit. `K`, `M`,
/// `G`, `T` and `KiB` … `TiB` are binary (×1024); `KB`, `MB`, `GB`, `TB` are decimal.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err("it does not start with a number".into());
    }
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => return Err(format!("unknown unit '{other}'")),
    };
    let value = if let Some((whole, frac)) = num.split_once('.') {
        if frac.contains('.') || (whole.is_empty() && frac.is_empty()) {
            return Err("it is not a number".into());
        }
        let w: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| "it is not a number".to_owned())?
        };
        let digits = frac.len().min(9) as u32;
        let f: u64 = if digits == 0 {
            0
        } else {
            frac[..digits as usize]
                .parse()
                .map_err(|_| "it is not a number".to_owned())?
        };
        let scale = 10u64.pow(digits);
        w.checked_mul(mult)
            .and_then(|a| {
                (f as u128 * mult as u128 / scale as u128)
                    .try_into()
                    .ok()
                    .and_then(|b: u64| a.checked_add(b))
            })
            .ok_or_else(|| "it is too large".to_owned())?
    } else {
        num.parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(mult))
            .ok_or_else(|| "it is too large".to_owned())?
    };
    if value == 0 {
        return Err("it must be more than 0".into());
    }
    Ok(value)
}

/// The media `--volume-size` names (SPEC.md §16.6), in bytes: each a little under what
/// the disc holds, so a volume written to its size fits the disc.
pub const VOLUME_PRESETS: &[(&str, u64)] = &[
    ("cd", 700_000_000),
    ("dvd", 4_700_000_000),
    ("dvd-dl", 8_500_000_000),
    ("bd25", 25_000_000_000),
    ("bd50", 50_000_000_000),
];

/// Parses a volume size: a preset of [`VOLUME_PRESETS`] (any case), else a size as
/// [`parse_size`] reads it.
pub fn parse_volume_size(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    match VOLUME_PRESETS.iter().find(|(n, _)| *n == t) {
        Some((_, v)) => Ok(*v),
        None => parse_size(text),
    }
}

/// Parses a rate in bytes per second: a size as [`parse_size`] reads it, with an
/// optional `/s` and every multiple binary (`500K`, `500KiB/s`, `500KB/s`, `2m`, `1G`,
/// `1000`); zero is refused.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let mut t = &t[..lower.strip_suffix("/s").map_or(t.len(), str::len)];
    // A rate's `KB` is binary: drop the byte unit and the binary marker, keep the multiple.
    if t.len() > 1
        && t.ends_with(['b', 'B'])
        && !t[..t.len() - 1].ends_with(|c: char| c.is_ascii_digit())
    {
        t = &t[..t.len() - 1];
        t = t.strip_suffix(['i', 'I']).unwrap_or(t);
    }
    parse_size(t).map_err(|reason| format!("'{text}' is not a rate like 500K, 2M or 1G: {reason}"))
}

/// Bytes in a human unit (`1.5 GiB`), for the README and summaries.
pub fn human_size(bytes: u64) -> String {
    const UNITS: &[&str] = &["bytes", "KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_sizes() {
        assert_eq!(parse_volume_size("dvd"), Ok(4_700_000_000));
        assert_eq!(parse_volume_size("BD25"), Ok(25_000_000_000));
        assert_eq!(parse_volume_size("300K"), Ok(300 << 10));
        assert!(parse_volume_size("floppy").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("4K"), Ok(4 << 10));
        assert_eq!(parse_size("256k"), Ok(256 << 10));
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size("4GB"), Ok(4_000_000_000));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size(" 100 B "), Ok(100));
        for bad in ["", "0", "0K", "K", "x", "4X", "1.2.3", ".", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("123").unwrap(), 123);
        assert_eq!(parse_size("100K").unwrap(), 100 << 10);
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_size("4gib").unwrap(), 4 << 30);
        assert_eq!(parse_size("4.7GB").unwrap(), 4_700_000_000);
        assert_eq!(parse_size("1.5M").unwrap(), 3 << 19);
        assert_eq!(parse_size("25 GB").unwrap(), 25_000_000_000);
        for bad in ["", "G", "4X", "1.2.3", "0", "-1", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("10M"), Ok(10 << 20));
        assert_eq!(parse_rate("500k"), Ok(500 << 10));
        assert_eq!(parse_rate("500K"), Ok(500 << 10));
        assert_eq!(parse_rate("500KB/s"), Ok(500 << 10));
        assert_eq!(parse_rate("500KiB/s"), Ok(500 << 10));
        assert_eq!(parse_rate("2m"), Ok(2 << 20));
        assert_eq!(parse_rate("1G"), Ok(1 << 30));
        assert_eq!(parse_rate("123"), Ok(123));
        assert_eq!(parse_rate("1000"), Ok(1000));
        assert_eq!(parse_rate("100B/s"), Ok(100));
        for bad in ["0", "x", "M", "fast", "", "0K/s"] {
            assert!(parse_rate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_size(5), "5 bytes");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
    }
}
