//! The pack manifest's trusted comment: what a pack signature binds. A pack signature is
//! a standard minisign signature (prehashed ed25519, `minisign -Vm offgrid-pack.toml`
//! checks it) made by [`crate::sign::sign_bytes`] and checked by the one evaluator,
//! [`crate::trust::TrustPolicy::check_bytes`] over the exact bytes, then [`crate::trust::Pending::bind`]
//! with [`check_comment`] once the pack manifest is parsed. The trusted comment
//! `offgrid-pack bundle=ID from=V1,V2 to=V pack_sha256=HEX` names what the pack does, so
//! a signature cannot be moved to another pack.
//!
//! Known gap: the trusted comment is compared as a whole; a mismatch is reported with
//! both comments, not field by field.

use crate::excerpt::excerpt;
use crate::hash::sha256_hex;
use crate::keys::SecretKey;
use crate::update::pack::PackManifest;

/// The trusted comment a pack signature carries.
pub fn trusted_comment(pm: &PackManifest, bytes: &[u8]) -> String {
    comment_for(pm, &sha256_hex(bytes))
}

fn comment_for(pm: &PackManifest, sha: &str) -> String {
    let from: Vec<String> = pm.from.iter().map(|f| f.release.to_string()).collect();
    format!(
        "offgrid-pack bundle={} from={} to={} pack_sha256={sha}",
        pm.bundle_id,
        from.join(","),
        pm.to,
    )
}

/// Signs the pack manifest bytes; returns the `.minisig` text.
pub fn sign(sk: &SecretKey, pm: &PackManifest, bytes: &[u8]) -> Result<String, String> {
    let tc = trusted_comment(pm, bytes);
    let uc = format!(
        "offgrid update pack signature from key {}",
        sk.public.key_id()
    );
    crate::sign::sign_bytes(sk, bytes, &tc, &uc).map_err(|e| e.to_string())
}

/// Checks a pack signature's trusted comment against the parsed pack manifest whose
/// bytes hash to `sha`.
pub fn check_comment(comment: &str, pm: &PackManifest, sha: &str) -> Result<(), String> {
    let want = comment_for(pm, sha);
    if comment == want {
        Ok(())
    } else {
        Err(format!(
            "it reads '{}', the pack needs '{}'",
            excerpt(comment),
            excerpt(&want)
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::keys::PublicKey;
    use crate::trust::{TrustError, TrustPolicy};

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
            parts: None,
            from: vec![crate::update::pack::From {
                release: "1".parse().unwrap(),
                manifest_sha256: h,
                removed: vec![],
                copy: vec![],
            }],
            payloads: vec![],
        }
    }

    fn evaluate(
        pol: &TrustPolicy,
        pm: &PackManifest,
        bytes: &[u8],
        sigs: &[(String, String)],
    ) -> Result<Vec<crate::trust::SignatureReport>, crate::trust::TrustError> {
        let sha = sha256_hex(bytes);
        pol.check_bytes(bytes, sigs)?
            .bind(|c| check_comment(c, pm, &sha))
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
        assert!(check_comment("x", &pm, &sha256_hex(&bytes)).is_err());
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
