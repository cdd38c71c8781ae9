//! minisign-format key pairs: generation (password-protected by default), loading of
//! secret and public keys (including stock `minisign -G -W` unencrypted keys, which carry
//! a zero checksum the `minisign` crate rejects), key ids and spoken fingerprints.
//!
//! STUB: API fixed, body to be written (owner: keys/sign/trust helper).

use std::path::Path;

/// Why a key could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key '{path}': {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("'{path}' is not a minisign {what} key: {reason}\nhelp: {help}")]
    Format {
        path: String,
        what: &'static str,
        reason: String,
        help: &'static str,
    },
    #[error("wrong password for secret key '{path}'\nhelp: check the password (OFFGRID_PASSWORD for scripts)")]
    WrongPassword { path: String },
    #[error("cannot get the password for '{path}': {reason}")]
    Password { path: String, reason: String },
    #[error("cannot write '{path}': {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("'{path}' already exists\nhelp: choose another name, or pass --force to replace it")]
    Exists { path: String },
    #[error("key generation failed: {0}")]
    Generate(String),
}

/// A public key a signature can be checked with.
#[derive(Clone, Debug)]
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

impl PublicKey {
    /// The key id as minisign prints it: 16 uppercase hex digits.
    pub fn key_id(&self) -> String {
        todo!()
    }
    /// A short, human-readable fingerprint to read aloud and compare.
    pub fn fingerprint(&self) -> String {
        todo!()
    }
    /// The base64 key line (`RW…`) of a minisign public key file.
    pub fn to_base64(&self) -> String {
        todo!()
    }
    /// The text of a minisign public key file.
    pub fn to_file_text(&self) -> String {
        todo!()
    }
    /// Parses a `RW…` base64 key line.
    pub fn from_base64(s: &str) -> Result<PublicKey, KeyError> {
        let _ = s;
        todo!()
    }
    /// Loads a minisign public key file.
    pub fn load(path: &Path) -> Result<PublicKey, KeyError> {
        let _ = path;
        todo!()
    }
}

impl SecretKey {
    /// Loads a minisign secret key file. `password` is called only if the key is
    /// encrypted.
    pub fn load(
        path: &Path,
        password: &mut dyn FnMut() -> Result<String, String>,
    ) -> Result<SecretKey, KeyError> {
        let _ = (path, password);
        todo!()
    }
}

/// Generates a key pair and writes both files (refusing to overwrite unless `force`).
/// `password: None` writes an unencrypted secret key.
pub fn generate(
    secret_path: &Path,
    public_path: &Path,
    password: Option<String>,
    force: bool,
) -> Result<PublicKey, KeyError> {
    let _ = (secret_path, public_path, password, force);
    todo!()
}
