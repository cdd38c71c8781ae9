//! minisign-format key pairs: generation (password-protected by default), loading of
//! secret and public keys (including stock `minisign -G -W` unencrypted keys, which carry
//! a zero checksum the `minisign` crate rejects), key ids and spoken fingerprints.
//!
//! Files are byte-for-byte the stock minisign formats (SPEC.md §4): a public key file is
//! `untrusted comment: …` then the base64 of `"Ed" ‖ keynum(8) ‖ ed25519 public key(32)`;
//! a secret key file is a comment line then the base64 of the 158-byte secret key box
//! (`"Ed"`, KDF `"Sc"` or none, checksum `"B2"`, scrypt salt and limits, then
//! `keynum ‖ ed25519 secret(64) ‖ blake2b-256 checksum`, the last three XORed with the
//! scrypt stream when encrypted). Encrypted keys use the stock tool's scrypt limits
//! (opslimit 2^25, memlimit 1 GiB), so a password costs about 1 GiB of RAM and a second
//! or two to derive, on both sides.
//!
//! Known gaps: the two files of a key pair are renamed into place one after the other,
//! so a power cut between the two renames can leave the secret key without its public
//! key (it can be recovered from the secret key, which holds the public half); with
//! `--force` it can leave a new secret key beside the old public key. The key number of
//! an unencrypted key with a zero checksum (`minisign -W`) is not covered by any check.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use ct_codecs::{Base64, Decoder, Encoder};
use sha2::{Digest, Sha256};

/// Why a key could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key '{path}': {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("'{path}' is not a minisign {what} key: {reason}")]
    Format {
        path: String,
        what: &'static str,
        reason: String,
        help: &'static str,
    },
    #[error("wrong password for secret key '{path}'")]
    WrongPassword { path: String },
    #[error("cannot get the password for '{path}': {reason}")]
    Password { path: String, reason: String },
    #[error("cannot write '{path}': {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("'{path}' already exists")]
    Exists { path: String },
    #[error("the password is empty")]
    EmptyPassword,
    #[error("key generation failed: {0}")]
    Generate(String),
}

/// A public key a signature can be checked with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    /// The 8-byte key number, as minisign stores it (little-endian in the files).
    pub keynum: [u8; 8],
    /// The ed25519 public key.
    pub key: [u8; 32],
}

/// A usable (decrypted) secret key.
pub struct SecretKey {
    pub(crate) inner: minisign::SecretKey,
    pub public: PublicKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.public.key_id())
    }
}

/// The signature algorithm tag of keys and legacy signatures.
const SIG_ALG: [u8; 2] = *b"Ed";
/// The key-derivation tag of an encrypted secret key (scrypt).
const KDF_SCRYPT: [u8; 2] = *b"Sc";
/// The key-derivation tag of an unencrypted secret key.
const KDF_NONE: [u8; 2] = [0, 0];
/// The checksum tag (blake2b-256).
const CHK_B2: [u8; 2] = *b"B2";
/// Decoded size of a public key line.
const PK_BYTES: usize = 2 + 8 + 32;
/// Decoded size of a secret key line.
const SK_BYTES: usize = 2 + 2 + 2 + 32 + 8 + 8 + 8 + 64 + 32;
/// Offset of `keynum ‖ sk ‖ chk` (the encrypted part) in the secret key bytes.
const SK_SECRET_AT: usize = 2 + 2 + 2 + 32 + 8 + 8;
/// Offset of the checksum in the secret key bytes.
const SK_CHK_AT: usize = SK_BYTES - 32;
/// The stock minisign tool's scrypt limits (libsodium's "sensitive" limits).
const OPSLIMIT: u64 = 33_554_432;
const MEMLIMIT: u64 = 1_073_741_824;
/// Key files larger than this are not key files.
const MAX_KEY_FILE: u64 = 64 * 1024;
/// minisign refuses longer passwords.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Crockford's base32 alphabet (no I, L, O, U).
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

const PUB_HELP: &str =
    "give the '.pub' file made by 'offgrid keygen' or 'minisign -G' (two lines: comment, RW… key)";
const SEC_HELP: &str =
    "give the secret '.key' file made by 'offgrid keygen' or 'minisign -G' (keep it off the stick)";
const DAMAGED_HELP: &str = "the key file is damaged; restore it from your backup";

fn show(path: &Path) -> String {
    path.display().to_string()
}

impl PublicKey {
    /// The key id as minisign prints it: 16 uppercase hex digits.
    ///
    /// minisign stores the key number little-endian and prints it as a 64-bit number, so
    /// the id is the hex of the 8 key-number bytes in reverse order.
    pub fn key_id(&self) -> String {
        key_id_of(&self.keynum)
    }

    /// A short, human-readable fingerprint to read aloud and compare.
    ///
    /// SHA-256 of the 42 decoded bytes of the `RW…` key line (`"Ed" ‖ keynum ‖ key`), its
    /// first 100 bits in Crockford base32 (20 characters, most significant bit first),
    /// in four dash-separated groups of five: `7KQ2M-…`.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.to_bytes());
        let mut out = String::with_capacity(23);
        for i in 0..20 {
            // 5-bit group i covers bits [5i, 5i+5) of the digest, big-endian.
            let bit = i * 5;
            let byte = bit / 8;
            let word = (u16::from(digest[byte]) << 8) | u16::from(digest[byte + 1]);
            let v = (word >> (11 - (bit % 8))) & 0x1f;
            if i > 0 && i % 5 == 0 {
                out.push('-');
            }
            out.push(CROCKFORD[v as usize] as char);
        }
        out
    }

    /// The 42 bytes the `RW…` line encodes.
    fn to_bytes(&self) -> [u8; PK_BYTES] {
        let mut b = [0u8; PK_BYTES];
        b[..2].copy_from_slice(&SIG_ALG);
        b[2..10].copy_from_slice(&self.keynum);
        b[10..].copy_from_slice(&self.key);
        b
    }

    /// The base64 key line (`RW…`) of a minisign public key file.
    pub fn to_base64(&self) -> String {
        Base64::encode_to_string(self.to_bytes()).unwrap_or_default()
    }

    /// The text of a minisign public key file.
    pub fn to_file_text(&self) -> String {
        format!(
            "untrusted comment: minisign public key {}\n{}\n",
            self.key_id(),
            self.to_base64()
        )
    }

    /// Parses a `RW…` base64 key line.
    pub fn from_base64(s: &str) -> Result<PublicKey, KeyError> {
        parse_pk_line(s).map_err(|reason| KeyError::Format {
            path: "(key line)".into(),
            what: "public",
            reason,
            help: "a public key line is 56 base64 characters starting with 'RW'",
        })
    }

    /// Loads a minisign public key file.
    ///
    /// The file holds an optional `untrusted comment:` line and the key line; blank
    /// lines and CR line ends are tolerated.
    pub fn load(path: &Path) -> Result<PublicKey, KeyError> {
        let text = read_key_file(path, "public", PUB_HELP)?;
        let fmt = |reason: String| KeyError::Format {
            path: show(path),
            what: "public",
            reason,
            help: PUB_HELP,
        };
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let mut line = lines
            .next()
            .ok_or_else(|| fmt("the file is empty".into()))?;
        if line.starts_with("untrusted comment:") {
            line = lines
                .next()
                .ok_or_else(|| fmt("the key line after the comment is missing".into()))?;
        }
        if line.starts_with("trusted comment:") {
            return Err(fmt("it is a signature, not a key".into()));
        }
        parse_pk_line(line).map_err(fmt)
    }

    /// The `minisign` crate's form of this key.
    pub(crate) fn to_minisign(&self) -> Result<minisign::PublicKey, String> {
        minisign::PublicKey::from_bytes(&self.to_bytes()).map_err(|e| e.to_string())
    }
}

/// The minisign key id of a key number.
pub(crate) fn key_id_of(keynum: &[u8; 8]) -> String {
    format!("{:016X}", u64::from_le_bytes(*keynum))
}

fn parse_pk_line(s: &str) -> Result<PublicKey, String> {
    let s = s.trim();
    if s.len() != 56 {
        return Err(format!(
            "the key line has {} characters, a minisign public key has 56",
            s.len()
        ));
    }
    let b = Base64::decode_to_vec(s, None).map_err(|_| "the key line is not base64".to_owned())?;
    if b.len() != PK_BYTES {
        return Err(format!(
            "the key decodes to {} bytes, not {PK_BYTES}",
            b.len()
        ));
    }
    if b[..2] != SIG_ALG {
        return Err("the key is not an Ed25519 minisign key (it must start with 'RW')".into());
    }
    let mut keynum = [0u8; 8];
    keynum.copy_from_slice(&b[2..10]);
    let mut key = [0u8; 32];
    key.copy_from_slice(&b[10..]);
    Ok(PublicKey { keynum, key })
}

/// Reads a key file as text, bounded, with errors naming the file.
fn read_key_file(path: &Path, what: &'static str, help: &'static str) -> Result<String, KeyError> {
    let read_err = |source| KeyError::Read {
        path: show(path),
        source,
    };
    let f = crate::hash::open_regular(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    f.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(KeyError::Format {
            path: show(path),
            what,
            reason: format!("it is larger than {MAX_KEY_FILE} bytes"),
            help,
        });
    }
    String::from_utf8(bytes).map_err(|_| KeyError::Format {
        path: show(path),
        what,
        reason: "it is not text".into(),
        help,
    })
}

impl SecretKey {
    /// Loads a minisign secret key file. `password` is called only if the key is
    /// encrypted.
    ///
    /// Accepts keys from `offgrid keygen` and from the stock `minisign -G` (encrypted) and
    /// `minisign -G -W` (unencrypted, zero checksum). Damage is detected: the checksum
    /// must be correct (or, for an unencrypted key, all zero) and the public half of the
    /// ed25519 secret key must be the one its seed derives.
    pub fn load(
        path: &Path,
        password: &mut dyn FnMut() -> Result<String, String>,
    ) -> Result<SecretKey, KeyError> {
        let text = read_key_file(path, "secret", SEC_HELP)?;
        let fmt = |reason: String, help: &'static str| KeyError::Format {
            path: show(path),
            what: "secret",
            reason,
            help,
        };
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let mut line = lines
            .next()
            .ok_or_else(|| fmt("the file is empty".into(), SEC_HELP))?;
        if line.starts_with("untrusted comment:") {
            line = lines
                .next()
                .ok_or_else(|| fmt("the key line after the comment is missing".into(), SEC_HELP))?;
        }
        let bytes = Base64::decode_to_vec(line, None)
            .map_err(|_| fmt("the key line is not base64".into(), SEC_HELP))?;
        if bytes.len() != SK_BYTES {
            let reason = if bytes.len() == PK_BYTES {
                "it is a public key, not a secret key".to_owned()
            } else {
                format!(
                    "the key decodes to {} bytes, a minisign secret key has {SK_BYTES}",
                    bytes.len()
                )
            };
            return Err(fmt(reason, SEC_HELP));
        }
        if bytes[0..2] != SIG_ALG {
            return Err(fmt(
                "the key is not an Ed25519 minisign key".into(),
                SEC_HELP,
            ));
        }
        if bytes[4..6] != CHK_B2 {
            return Err(fmt(
                "unknown checksum algorithm (expected blake2b 'B2')".into(),
                SEC_HELP,
            ));
        }
        let boxed =
            || -> minisign::SecretKeyBox { format!("untrusted comment: offgrid\n{line}\n").into() };
        let inner = match [bytes[2], bytes[3]] {
            KDF_NONE => match minisign::SecretKey::from_unencrypted_box(boxed()) {
                Ok(sk) => sk,
                // `minisign -G -W` writes an all-zero checksum: accept that, and only that.
                Err(_) if bytes[SK_CHK_AT..].iter().all(|&b| b == 0) => {
                    minisign::SecretKey::from_bytes(&bytes)
                        .map_err(|e| fmt(e.to_string(), SEC_HELP))?
                }
                Err(_) => {
                    return Err(fmt(
                        "its checksum does not match its contents".into(),
                        DAMAGED_HELP,
                    ))
                }
            },
            KDF_SCRYPT => {
                let ops = u64::from_le_bytes(le8(&bytes[38..46]));
                let mem = u64::from_le_bytes(le8(&bytes[46..54]));
                if mem > MEMLIMIT || ops > 4 * OPSLIMIT {
                    return Err(fmt(
                        format!("its scrypt limits (opslimit {ops}, memlimit {mem}) are higher than minisign's"),
                        DAMAGED_HELP,
                    ));
                }
                let pw = password().map_err(|reason| KeyError::Password {
                    path: show(path),
                    reason,
                })?;
                match minisign::SecretKey::from_box(boxed(), Some(pw)) {
                    Ok(sk) => sk,
                    Err(e) if matches!(e.kind(), minisign::ErrorKind::Verify) => {
                        return Err(KeyError::WrongPassword { path: show(path) })
                    }
                    Err(e) => return Err(fmt(e.to_string(), SEC_HELP)),
                }
            }
            _ => {
                return Err(fmt(
                    "unknown key encryption (expected scrypt 'Sc' or none)".into(),
                    SEC_HELP,
                ))
            }
        };
        let plain = inner.to_bytes();
        let public = public_half(&plain).ok_or_else(|| {
            fmt(
                "the public half of the secret key does not match its seed".into(),
                DAMAGED_HELP,
            )
        })?;
        Ok(SecretKey { inner, public })
    }
}

fn le8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    a
}

/// The public key of decrypted secret key bytes, if the ed25519 public half stored in the
/// secret key is the one its seed derives.
fn public_half(plain: &[u8]) -> Option<PublicKey> {
    if plain.len() != SK_BYTES {
        return None;
    }
    let keynum = le8(&plain[SK_SECRET_AT..]);
    let sk = &plain[SK_SECRET_AT + 8..SK_CHK_AT];
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&sk[..32]);
    let derived = ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes();
    if derived[..] != sk[32..] {
        return None;
    }
    Some(PublicKey {
        keynum,
        key: derived,
    })
}

/// scrypt parameters `(log2 N, r, p)` for minisign's (libsodium's) opslimit and memlimit.
fn scrypt_params(opslimit: u64, memlimit: u64) -> (u8, u32, u32) {
    let opslimit = opslimit.max(32_768);
    let r: u32 = 8;
    let mut n_log2 = 1u8;
    if opslimit < memlimit / 32 {
        let maxn = opslimit / (u64::from(r) * 4);
        while n_log2 < 63 && (1u64 << n_log2) <= maxn / 2 {
            n_log2 += 1;
        }
        (n_log2, r, 1)
    } else {
        let maxn = memlimit / (u64::from(r) * 128);
        while n_log2 < 63 && (1u64 << n_log2) <= maxn / 2 {
            n_log2 += 1;
        }
        let maxrp = ((opslimit / 4) / (1u64 << n_log2)).min(0x3fff_ffff) as u32;
        (n_log2, r, (maxrp / r).max(1))
    }
}

/// The text of a secret key file for a freshly generated key, encrypted with `password`
/// when given.
fn secret_file_text(sk: &minisign::SecretKey, password: Option<&str>) -> Result<String, KeyError> {
    let mut bytes = sk.to_bytes();
    if bytes.len() != SK_BYTES {
        return Err(KeyError::Generate("unexpected secret key size".into()));
    }
    if let Some(pw) = password {
        let mut salt = [0u8; 32];
        getrandom::getrandom(&mut salt).map_err(|e| KeyError::Generate(e.to_string()))?;
        bytes[2..4].copy_from_slice(&KDF_SCRYPT);
        bytes[6..38].copy_from_slice(&salt);
        bytes[38..46].copy_from_slice(&OPSLIMIT.to_le_bytes());
        bytes[46..54].copy_from_slice(&MEMLIMIT.to_le_bytes());
        let (log_n, r, p) = scrypt_params(OPSLIMIT, MEMLIMIT);
        let params = scrypt::Params::new(log_n, r, p, 32)
            .map_err(|e| KeyError::Generate(format!("scrypt parameters: {e}")))?;
        let mut stream = vec![0u8; SK_BYTES - SK_SECRET_AT];
        scrypt::scrypt(pw.as_bytes(), &salt, &params, &mut stream)
            .map_err(|e| KeyError::Generate(format!("scrypt: {e}")))?;
        for (b, s) in bytes[SK_SECRET_AT..].iter_mut().zip(&stream) {
            *b ^= s;
        }
    }
    let line = Base64::encode_to_string(&bytes).map_err(|e| KeyError::Generate(e.to_string()))?;
    let comment = if password.is_some() {
        "minisign encrypted secret key"
    } else {
        "minisign unencrypted secret key"
    };
    Ok(format!("untrusted comment: {comment}\n{line}\n"))
}

/// Generates a key pair and writes both files (refusing to overwrite unless `force`).
/// `password: None` writes an unencrypted secret key.
///
/// Both files are written to temporary files beside their targets and fsynced first;
/// then the secret key is renamed into place, then the public key. Without `force` an
/// existing file at either path is refused before anything is written, and if the
/// public key cannot be placed the secret key just placed is removed again.
pub fn generate(
    secret_path: &Path,
    public_path: &Path,
    password: Option<String>,
    force: bool,
) -> Result<PublicKey, KeyError> {
    if same_target(secret_path, public_path) {
        return Err(KeyError::Generate(format!(
            "the secret and public key paths are the same ('{}')",
            show(secret_path)
        )));
    }
    if let Some(pw) = &password {
        if pw.is_empty() {
            return Err(KeyError::EmptyPassword);
        }
        if pw.len() > MAX_PASSWORD_BYTES {
            return Err(KeyError::Generate(format!(
                "the password is longer than {MAX_PASSWORD_BYTES} bytes"
            )));
        }
    }
    if !force {
        for p in [secret_path, public_path] {
            if fs::symlink_metadata(p).is_ok() {
                return Err(KeyError::Exists { path: show(p) });
            }
        }
    }
    let kp = minisign::KeyPair::generate_unencrypted_keypair()
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    let plain = kp.sk.to_bytes();
    let public = public_half(&plain)
        .ok_or_else(|| KeyError::Generate("generated key is inconsistent".into()))?;
    let sk_text = secret_file_text(&kp.sk, password.as_deref())?;
    let pk_text = public.to_file_text();

    let sk_tmp = stage(secret_path, sk_text.as_bytes())?;
    let pk_tmp = stage(public_path, pk_text.as_bytes())?;
    #[cfg(unix)]
    {
        // the secret key stays 0600 (tempfile's mode); the public key is for everyone
        use std::os::unix::fs::PermissionsExt;
        let _ = pk_tmp
            .as_file()
            .set_permissions(fs::Permissions::from_mode(0o644));
    }
    place(sk_tmp, secret_path, force)?;
    if let Err(e) = place(pk_tmp, public_path, force) {
        if !force {
            let _ = crate::fsutil::remove_if_exists(secret_path);
        }
        return Err(e);
    }
    Ok(public)
}

/// True when two paths name the same directory entry (`a.key` and `./a.key`).
fn same_target(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    let resolve = |p: &Path| {
        let dir = fs::canonicalize(crate::fsutil::parent_dir(p)).ok()?;
        Some(dir.join(p.file_name()?))
    };
    match (resolve(a), resolve(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Writes `bytes` to a fsynced temporary file beside `path` (mode 0600 on Unix).
fn stage(path: &Path, bytes: &[u8]) -> Result<tempfile::NamedTempFile, KeyError> {
    let werr = |source| KeyError::Write {
        path: show(path),
        source,
    };
    let dir = crate::fsutil::parent_dir(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".offgrid-tmp-")
        .tempfile_in(&dir)
        .map_err(werr)?;
    tmp.write_all(bytes).map_err(werr)?;
    tmp.as_file().sync_all().map_err(werr)?;
    Ok(tmp)
}

/// Renames a staged file into place (refusing an existing target unless `force`) and
/// fsyncs the directory.
fn place(tmp: tempfile::NamedTempFile, path: &Path, force: bool) -> Result<(), KeyError> {
    let res = if force {
        tmp.persist(path).map(|_| ())
    } else {
        tmp.persist_noclobber(path).map(|_| ())
    };
    match res {
        Ok(()) => {}
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(KeyError::Exists { path: show(path) })
        }
        Err(e) => {
            return Err(KeyError::Write {
                path: show(path),
                source: e.error,
            })
        }
    }
    crate::fsutil::fsync_dir(&crate::fsutil::parent_dir(path)).map_err(|source| KeyError::Write {
        path: show(path),
        source,
    })
}

impl crate::diagnostic::Diagnostic for KeyError {
    fn help(&self) -> Option<String> {
        match self {
            KeyError::Format { help, .. } => Some(help.to_string()),
            KeyError::WrongPassword { .. } => {
                Some("check the password (OFFGRID_PASSWORD for scripts)".into())
            }
            KeyError::Exists { .. } => {
                Some("choose another name, or pass --force to replace it".into())
            }
            KeyError::EmptyPassword => {
                Some("give a password, or pass --unencrypted for a key without one".into())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_scrypt_limits_map_to_n_2_20() {
        assert_eq!(scrypt_params(OPSLIMIT, MEMLIMIT), (20, 8, 1));
        // the minisign crate's own defaults
        assert_eq!(scrypt_params(1_048_576, 33_554_432), (15, 8, 1));
    }

    #[test]
    fn key_id_is_keynum_little_endian_in_hex() {
        let pk = PublicKey {
            keynum: [0x2f, 0xf6, 0x2e, 0x50, 0x4f, 0xd3, 0x7c, 0xcd],
            key: [0; 32],
        };
        assert_eq!(pk.key_id(), "CD7CD34F502EF62F");
    }

    #[test]
    fn public_key_line_round_trips_and_matches_stock_file() {
        // written by `minisign -G -W` (minisign 0.11)
        let line = "RWQv9i5QT9N8zXAd5NuINWj3zcHdyLUFHw5x+HH0yaaBuQzZBhY1y5HL";
        let pk = PublicKey::from_base64(line).unwrap();
        assert_eq!(pk.key_id(), "CD7CD34F502EF62F");
        assert_eq!(pk.to_base64(), line);
        assert_eq!(
            pk.to_file_text(),
            format!("untrusted comment: minisign public key CD7CD34F502EF62F\n{line}\n")
        );
        let fp = pk.fingerprint();
        assert_eq!(fp.len(), 23);
        assert_eq!(fp.matches('-').count(), 3);
        assert!(fp
            .chars()
            .all(|c| c == '-' || CROCKFORD.contains(&(c as u8))));
    }

    #[test]
    fn fingerprint_is_crockford_of_sha256_prefix() {
        let pk = PublicKey {
            keynum: [1; 8],
            key: [2; 32],
        };
        let d = Sha256::digest(pk.to_bytes());
        // independent computation: the first 100 bits as a big integer
        let mut acc: u128 = 0;
        for b in &d[..13] {
            acc = (acc << 8) | u128::from(*b);
        }
        acc >>= 4; // 104 bits -> 100 bits
        let mut s = String::new();
        for i in (0..20).rev() {
            s.push(CROCKFORD[((acc >> (5 * i)) & 31) as usize] as char);
        }
        let want = format!("{}-{}-{}-{}", &s[..5], &s[5..10], &s[10..15], &s[15..]);
        assert_eq!(pk.fingerprint(), want);
    }

    #[test]
    fn bad_public_key_lines_are_refused() {
        assert!(PublicKey::from_base64("RWQ").is_err());
        assert!(PublicKey::from_base64(&"!".repeat(56)).is_err());
        // right length, wrong algorithm
        let other = Base64::encode_to_string([b'X'; 42]).unwrap();
        assert!(PublicKey::from_base64(&other).is_err());
    }
}
