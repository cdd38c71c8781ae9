//! Signatures over a pack manifest: standard minisign signatures (prehashed ed25519,
//! `minisign -Vm offgrid-pack.toml` checks them), whose trusted comment
//! `offgrid-pack bundle=ID from=V1,V2 to=V pack_sha256=HEX` names what the pack does, so a
//! signature cannot be moved to another pack. Evaluated against the same
//! [`TrustPolicy`] (keys and m-of-n threshold) as bundle manifests.
//!
//! Known gap: the trusted comment is checked field by field; extra fields are refused.

use std::io::Cursor;

use crate::keys::{PublicKey, SecretKey};
use crate::trust::{SignatureReport, SignatureStatus, TrustError, TrustPolicy};
use crate::update::io::sha256_hex;
use crate::update::pack::PackManifest;

/// The trusted comment a pack signature carries.
pub fn trusted_comment(pm: &PackManifest, bytes: &[u8]) -> String {
    let from: Vec<String> = pm.from.iter().map(|f| f.release.to_string()).collect();
    format!(
        "offgrid-pack bundle={} from={} to={} pack_sha256={}",
        pm.bundle_id,
        from.join(","),
        pm.to,
        sha256_hex(bytes)
    )
}

/// The key id as minisign prints it (16 uppercase hex digits of the little-endian keynum).
pub fn key_id(keynum: &[u8; 8]) -> String {
    format!("{:016X}", u64::from_le_bytes(*keynum))
}

/// Signs the pack manifest bytes; returns the `.minisig` text.
pub fn sign(sk: &SecretKey, pm: &PackManifest, bytes: &[u8]) -> Result<String, String> {
    let tc = trusted_comment(pm, bytes);
    let uc = format!(
        "offgrid update pack signature from key {}",
        key_id(&sk.public.keynum)
    );
    let sb = minisign::sign(None, &sk.inner, Cursor::new(bytes), Some(&tc), Some(&uc))
        .map_err(|e| e.to_string())?;
    Ok(sb.into_string())
}

fn mpk(pk: &PublicKey) -> Result<minisign::PublicKey, String> {
    let mut raw = Vec::with_capacity(42);
    raw.extend_from_slice(b"Ed");
    raw.extend_from_slice(&pk.keynum);
    raw.extend_from_slice(&pk.key);
    minisign::PublicKey::from_bytes(&raw).map_err(|e| e.to_string())
}

/// Checks one signature text with one key; `Ok(())` or the reason it fails.
pub fn check(pk: &PublicKey, sig: &str, pm: &PackManifest, bytes: &[u8]) -> Result<(), String> {
    let sb = minisign::SignatureBox::from_string(sig).map_err(|e| e.to_string())?;
    let key = mpk(pk)?;
    minisign::verify(&key, &sb, Cursor::new(bytes), true, false, false)
        .map_err(|_| "signature does not match the pack manifest bytes".to_owned())?;
    let tc = sb.trusted_comment().map_err(|e| e.to_string())?;
    let want = trusted_comment(pm, bytes);
    if tc != want {
        return Err(format!(
            "trusted comment '{tc}' does not match the pack ('{want}')"
        ));
    }
    Ok(())
}

/// The key id a `.minisig` text names.
pub fn sig_key_id(sig: &str) -> Option<String> {
    let sb = minisign::SignatureBox::from_string(sig).ok()?;
    let kn: [u8; 8] = sb.keynum().try_into().ok()?;
    Some(key_id(&kn))
}

/// Evaluates the pack signatures `(file name, text)` against `policy`: Ok with one
/// report per signature when at least `threshold` distinct trusted keys signed.
pub fn evaluate(
    policy: &TrustPolicy,
    pm: &PackManifest,
    bytes: &[u8],
    sigs: &[(String, String)],
) -> Result<Vec<SignatureReport>, TrustError> {
    if policy.keys.is_empty() {
        return Err(TrustError::NoKeys);
    }
    let mut reports = Vec::new();
    let mut good: Vec<[u8; 8]> = Vec::new();
    for (file, text) in sigs {
        let kid = sig_key_id(text);
        let status = match &kid {
            None => SignatureStatus::Invalid {
                reason: "not a minisign signature".into(),
            },
            Some(id) => match policy.keys.iter().find(|k| &key_id(&k.keynum) == id) {
                None => SignatureStatus::UnknownKey,
                Some(k) => match check(k, text, pm, bytes) {
                    Ok(()) => {
                        if !good.contains(&k.keynum) {
                            good.push(k.keynum);
                        }
                        SignatureStatus::Valid
                    }
                    Err(reason) => SignatureStatus::Invalid { reason },
                },
            },
        };
        reports.push(SignatureReport {
            file: file.clone(),
            key_id: kid,
            status,
        });
    }
    let threshold = policy.threshold.max(1);
    if good.len() >= threshold {
        Ok(reports)
    } else {
        Err(TrustError::ThresholdNotMet {
            valid: good.len(),
            threshold,
            reports,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh unencrypted key pair, made with the minisign crate directly.
    pub(crate) fn keypair() -> SecretKey {
        let kp = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        let raw = kp.pk.to_bytes();
        let mut keynum = [0u8; 8];
        keynum.copy_from_slice(&raw[2..10]);
        let mut key = [0u8; 32];
        key.copy_from_slice(&raw[10..42]);
        SecretKey {
            inner: kp.sk,
            public: PublicKey { keynum, key },
        }
    }

    fn sample() -> PackManifest {
        let h = "ab".repeat(32);
        PackManifest {
            format: crate::update::pack::FORMAT.into(),
            bundle_id: "org.example".into(),
            to: "2".parse().unwrap(),
            created: "2026-11-21T12:00:00Z".into(),
            manifest_sha256: h.clone(),
            manifest_size: 10,
            changelog: None,
            from: vec![crate::update::pack::From {
                release: "1".parse().unwrap(),
                manifest_sha256: h,
                removed: vec![],
                copy: vec![],
            }],
            payloads: vec![],
        }
    }

    #[test]
    fn signs_and_checks_with_threshold() {
        let a = keypair();
        let b = keypair();
        let pm = sample();
        let bytes = pm.to_toml().into_bytes();
        let sa = sign(&a, &pm, &bytes).unwrap();
        let sb = sign(&b, &pm, &bytes).unwrap();
        let pol = TrustPolicy {
            keys: vec![a.public.clone(), b.public.clone()],
            threshold: 2,
        };
        let sigs = vec![
            ("a.minisig".to_string(), sa.clone()),
            ("b.minisig".into(), sb),
        ];
        evaluate(&pol, &pm, &bytes, &sigs).unwrap();
        // One signature does not meet 2-of-2; a signature counted twice neither.
        let twice = vec![("a".to_string(), sa.clone()), ("a2".into(), sa.clone())];
        assert!(matches!(
            evaluate(&pol, &pm, &bytes, &twice),
            Err(TrustError::ThresholdNotMet { valid: 1, .. })
        ));
        // A signature over other bytes fails.
        let mut other = pm.clone();
        other.to = "3".parse().unwrap();
        let ob = other.to_toml().into_bytes();
        let pol1 = TrustPolicy {
            keys: vec![a.public.clone()],
            threshold: 1,
        };
        assert!(evaluate(&pol1, &other, &ob, &[("a".into(), sa)]).is_err());
    }
}
