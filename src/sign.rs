//! Signing a manifest and checking one signature over it: standard minisign signatures
//! (prehashed ed25519), whose trusted comment names the bundle id, release and manifest
//! sha256 so a signature cannot be moved to another manifest or replayed.
//!
//! The signed bytes are the manifest file exactly as on disk. A `.minisig` file is the
//! stock format, so `minisign -V -m manifest.toml -x signatures/KEYID.minisig -p hq.pub`
//! checks it, and a signature made by the stock tool with the right `-t` trusted comment
//! passes [`check`]. Legacy (non-prehashed, `Ed`) signatures are refused: offgrid never
//! makes them and minisign has not made them by default since 0.8.
//!
//! Known gap: the prehash is recomputed for each signature checked (the `minisign` crate
//! keeps it private); a manifest is at most 64 MiB and signatures are few.

use std::io::Cursor;

use ct_codecs::{Base64, Decoder};
use sha2::{Digest, Sha256};

use crate::keys::{key_id_of, PublicKey, SecretKey};
use crate::manifest::Manifest;

/// Why a signature does not hold.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("signature is not in minisign format: {0}")]
    Format(String),
    #[error("signature by key {key_id} does not match the manifest bytes")]
    BadSignature { key_id: String },
    #[error(
        "trusted comment of the signature by key {key_id} does not match the manifest: {reason}"
    )]
    TrustedComment { key_id: String, reason: String },
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("signature was made by key {key_id}, not by key {expected}")]
    WrongKey { key_id: String, expected: String },
}

/// The first word of every offgrid trusted comment.
pub const COMMENT_TAG: &str = "offgrid";
/// Signature files larger than this are not signature files.
pub const MAX_SIGNATURE_BYTES: usize = crate::signed::MAX_SIGNATURE_BYTES as usize;

/// The lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The trusted comment `pack-usb` signs: `offgrid bundle=ID release=V manifest_sha256=HEX`.
pub fn trusted_comment(manifest: &Manifest, manifest_bytes: &[u8]) -> String {
    comment_for(manifest, &sha256_hex(manifest_bytes))
}

fn comment_for(manifest: &Manifest, sha: &str) -> String {
    format!(
        "{COMMENT_TAG} bundle={} release={} manifest_sha256={sha}",
        manifest.bundle_id,
        manifest.release.as_str()
    )
}

/// Signs `manifest_bytes` (which must be `manifest`'s text); returns the `.minisig` text.
///
/// The signature is checked with the key's public half before it is returned.
pub fn sign_manifest(
    sk: &SecretKey,
    manifest: &Manifest,
    manifest_bytes: &[u8],
) -> Result<String, SignError> {
    let comment = trusted_comment(manifest, manifest_bytes);
    let untrusted = format!("signature from offgrid secret key {}", sk.public.key_id());
    sign_bytes(sk, manifest_bytes, &comment, &untrusted)
}

/// Signs any document's exact bytes with the given trusted and untrusted comments;
/// returns the `.minisig` text. Every signed document (tree manifest, pack manifest)
/// goes through here.
pub fn sign_bytes(
    sk: &SecretKey,
    bytes: &[u8],
    trusted: &str,
    untrusted: &str,
) -> Result<String, SignError> {
    let pk = sk.public.to_minisign().map_err(SignError::Sign)?;
    let sig = minisign::sign(
        Some(&pk),
        &sk.inner,
        Cursor::new(bytes),
        Some(trusted),
        Some(untrusted),
    )
    .map_err(|e| SignError::Sign(e.to_string()))?;
    Ok(sig.into_string())
}

/// A `.minisig` text taken apart.
struct Parsed {
    sig_box: minisign::SignatureBox,
    keynum: [u8; 8],
    /// `signature ‖ trusted comment`, what the global signature covers.
    sig_and_comment: Vec<u8>,
    global_sig: [u8; 64],
    comment: String,
}

fn parse(sig_text: &str) -> Result<Parsed, SignError> {
    let fmt = |s: &str| SignError::Format(s.to_owned());
    if sig_text.len() > MAX_SIGNATURE_BYTES {
        return Err(SignError::Format(format!(
            "it is larger than {MAX_SIGNATURE_BYTES} bytes"
        )));
    }
    let mut lines = sig_text.lines();
    let mut next = |what: &str| {
        lines
            .next()
            .map(|l| l.trim_end_matches('\r'))
            .ok_or_else(|| SignError::Format(format!("the {what} line is missing")))
    };
    let untrusted = next("untrusted comment")?;
    let sig_line = next("signature")?;
    let comment_line = next("trusted comment")?;
    let global_line = next("global signature")?;
    if !untrusted.starts_with("untrusted comment: ") {
        return Err(fmt("the first line must start with 'untrusted comment: '"));
    }
    let comment = comment_line
        .strip_prefix("trusted comment: ")
        .ok_or_else(|| fmt("the third line must start with 'trusted comment: '"))?
        .trim()
        .to_owned();
    let sig = Base64::decode_to_vec(sig_line.trim(), None)
        .map_err(|_| fmt("the signature line is not base64"))?;
    if sig.len() != 74 {
        return Err(fmt("the signature line does not decode to 74 bytes"));
    }
    match &sig[..2] {
        b"ED" => {}
        b"Ed" => {
            return Err(fmt(
                "it is a legacy (non-prehashed) minisign signature; offgrid accepts only prehashed signatures (minisign 0.8 and later make them by default)",
            ))
        }
        _ => return Err(fmt("unknown signature algorithm")),
    }
    let global = Base64::decode_to_vec(global_line.trim(), None)
        .map_err(|_| fmt("the global signature line is not base64"))?;
    let global_sig: [u8; 64] = global
        .as_slice()
        .try_into()
        .map_err(|_| fmt("the global signature does not decode to 64 bytes"))?;
    let sig_box = minisign::SignatureBox::from_string(sig_text)
        .map_err(|e| SignError::Format(e.to_string()))?;
    let mut keynum = [0u8; 8];
    keynum.copy_from_slice(&sig[2..10]);
    let mut sig_and_comment = sig[10..].to_vec();
    sig_and_comment.extend_from_slice(comment.as_bytes());
    Ok(Parsed {
        sig_box,
        keynum,
        sig_and_comment,
        global_sig,
        comment,
    })
}

/// The key id (16 uppercase hex) a `.minisig` text says it was made with.
pub fn signature_key_id(sig_text: &str) -> Result<String, SignError> {
    Ok(key_id_of(&parse(sig_text)?.keynum))
}

/// Checks one `.minisig` text against `manifest_bytes` with `pk`, including the trusted
/// comment's bundle id, release and manifest hash.
///
/// Order: parse; key id equals `pk`'s; the global signature over signature ‖ trusted
/// comment; the prehashed signature over the manifest bytes; the trusted comment's
/// grammar and fields against the manifest.
pub fn check(
    pk: &PublicKey,
    sig_text: &str,
    manifest: &Manifest,
    manifest_bytes: &[u8],
) -> Result<(), SignError> {
    check_with_hash(
        pk,
        sig_text,
        manifest,
        manifest_bytes,
        &sha256_hex(manifest_bytes),
    )
}

/// [`check`] with the manifest's SHA-256 already computed.
pub(crate) fn check_with_hash(
    pk: &PublicKey,
    sig_text: &str,
    manifest: &Manifest,
    manifest_bytes: &[u8],
    manifest_sha256: &str,
) -> Result<(), SignError> {
    let comment = check_bytes(pk, sig_text, manifest_bytes)?;
    check_manifest_comment(&comment, manifest, manifest_sha256).map_err(|reason| {
        SignError::TrustedComment {
            key_id: pk.key_id(),
            reason,
        }
    })
}

/// Checks the cryptography of one `.minisig` text over a document's exact bytes, before
/// anything is parsed: the text's shape, its key id equal to `pk`'s, the global
/// signature over signature ‖ trusted comment, and the prehashed signature over the
/// bytes. Returns the trusted comment, which the caller checks against the parsed
/// document.
pub fn check_bytes(pk: &PublicKey, sig_text: &str, bytes: &[u8]) -> Result<String, SignError> {
    let p = parse(sig_text)?;
    let key_id = key_id_of(&p.keynum);
    if p.keynum != pk.keynum {
        return Err(SignError::WrongKey {
            key_id,
            expected: pk.key_id(),
        });
    }
    // The global signature first, so an altered comment is named as such.
    let vk =
        ed25519_dalek::VerifyingKey::from_bytes(&pk.key).map_err(|_| SignError::BadSignature {
            key_id: key_id.clone(),
        })?;
    let global = ed25519_dalek::Signature::from_bytes(&p.global_sig);
    if vk.verify_strict(&p.sig_and_comment, &global).is_err() {
        return Err(SignError::TrustedComment {
            key_id,
            reason: "the trusted comment was altered (its signature does not verify)".into(),
        });
    }
    let mpk = pk.to_minisign().map_err(SignError::Format)?;
    minisign::verify(&mpk, &p.sig_box, Cursor::new(bytes), true, false, false)
        .map_err(|_| SignError::BadSignature { key_id })?;
    Ok(p.comment)
}

/// Checks a trusted comment against the manifest: exactly
/// `offgrid bundle=ID release=V manifest_sha256=HEX`, each field equal.
pub(crate) fn check_manifest_comment(
    comment: &str,
    manifest: &Manifest,
    sha: &str,
) -> Result<(), String> {
    let want = comment_for(manifest, sha);
    if comment == want {
        return Ok(());
    }
    let words: Vec<&str> = comment.split(' ').collect();
    let grammar = || {
        format!(
            "it reads '{}', expected the form '{COMMENT_TAG} bundle=ID release=V manifest_sha256=HEX'",
            crate::excerpt::excerpt(comment)
        )
    };
    if words.len() != 4 || words[0] != COMMENT_TAG {
        return Err(grammar());
    }
    let field = |i: usize, key: &str| -> Result<&str, String> {
        words[i]
            .strip_prefix(key)
            .and_then(|v| v.strip_prefix('='))
            .ok_or_else(grammar)
    };
    let bundle = field(1, "bundle")?;
    let release = field(2, "release")?;
    let hash = field(3, "manifest_sha256")?;
    if bundle != manifest.bundle_id {
        return Err(format!(
            "it was signed for bundle '{}', the manifest is bundle '{}'",
            crate::excerpt::excerpt(bundle),
            manifest.bundle_id
        ));
    }
    if release != manifest.release.as_str() {
        return Err(format!(
            "it was signed for release {}, the manifest is release {}",
            crate::excerpt::excerpt(release),
            manifest.release.as_str()
        ));
    }
    if hash != sha {
        return Err(format!(
            "it was signed for manifest sha256 {}, this manifest's is {sha}",
            crate::excerpt::excerpt(hash)
        ));
    }
    Err(grammar())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn manifest() -> Manifest {
        Manifest::parse(
            b"format = \"offgrid-bundle/1\"\nbundle_id = \"org.example.clinic\"\nrelease = \"1.4.0\"\ncreated = \"2026-11-21T12:00:00Z\"\nplatforms = []\n",
        )
        .unwrap()
    }

    const SHA: &str = "3643aa611e15d8e5371536829e2b0415fc39181c932ceefd0813c962b24000e6";

    #[test]
    fn comment_grammar_is_exact() {
        let m = manifest();
        let good = format!("offgrid bundle=org.example.clinic release=1.4.0 manifest_sha256={SHA}");
        assert_eq!(comment_for(&m, SHA), good);
        assert!(check_manifest_comment(&good, &m, SHA).is_ok());
        for bad in [
            good.replace(' ', "  "),
            good.replace("offgrid ", "OFFGRID "),
            good.replace("release=1.4.0 ", ""),
            good.replace(
                "bundle=org.example.clinic release=1.4.0",
                "release=1.4.0 bundle=org.example.clinic",
            ),
            good.replace("release=1.4.0", "release=1.4"),
            good.replace("release=", "release:"),
            format!("{good} "),
            format!(" {good}"),
            good.to_uppercase(),
            String::new(),
        ] {
            assert!(
                check_manifest_comment(&bad, &m, SHA).is_err(),
                "accepted '{bad}'"
            );
        }
    }

    #[test]
    fn untrusted_text_in_messages_is_cut_and_cleaned() {
        let m = manifest();
        let evil = format!(
            "offgrid bundle=\u{1b}[2J{} release=1.4.0 manifest_sha256={SHA}",
            "x".repeat(500)
        );
        let e = check_manifest_comment(&evil, &m, SHA).unwrap_err();
        assert!(!e.contains('\u{1b}'));
        assert!(e.len() < 400, "{e}");
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(text in "\\PC{0,400}") {
            let _ = signature_key_id(&text);
            let _ = check_manifest_comment(&text, &manifest(), SHA);
        }

        #[test]
        fn parsing_signature_shaped_text_never_panics(
            sig in "[A-Za-z0-9+/=]{0,120}",
            comment in "\\PC{0,120}",
            global in "[A-Za-z0-9+/=]{0,120}",
        ) {
            let text = format!("untrusted comment: x\n{sig}\ntrusted comment: {comment}\n{global}\n");
            let _ = signature_key_id(&text);
            let pk = PublicKey { keynum: [0; 8], key: [0; 32] };
            let _ = check(&pk, &text, &manifest(), b"");
        }
    }
}
