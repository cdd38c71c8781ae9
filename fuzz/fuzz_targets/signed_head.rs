//! Fuzz target: the one signed-head reader (`offgrid::signed::trust_raw`) over arbitrary
//! manifest bytes and signature texts must never panic; whatever it trusts must carry a
//! valid signature by the trusted key whose trusted comment names the parsed manifest.
//! Half the inputs are signed with the trusted key (comment taken from the input), so
//! the parse and the comment binding are reached too.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use offgrid::keys::SecretKey;
use offgrid::signed::{trust_raw, RawHead};
use offgrid::trust::{SignatureStatus, TrustPolicy};

fn key() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("offgrid-fuzz-key-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let (s, p) = (dir.join("k.key"), dir.join("k.pub"));
        offgrid::keys::generate(&s, &p, None, true).expect("key generation");
        SecretKey::load(&s, &mut || Err("unencrypted".into())).expect("key loads")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // Input: mode, then the manifest bytes, then after the first 0xFF byte the comment or
    // the signature text.
    let (manifest, tail) = match rest.iter().position(|&b| b == 0xFF) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let tail = String::from_utf8_lossy(tail).into_owned();
    let k = key();
    let sig = if mode & 1 == 1 {
        let comment = if mode & 2 == 2 {
            match offgrid::manifest::Manifest::parse(manifest) {
                Ok(m) => offgrid::sign::trusted_comment(&m, manifest),
                Err(_) => tail.clone(),
            }
        } else {
            tail.clone()
        };
        match offgrid::sign::sign_bytes(k, manifest, &comment.replace('\n', " "), "fuzz") {
            Ok(s) => s,
            Err(_) => return,
        }
    } else {
        tail
    };
    let policy = TrustPolicy::from_keys(vec![k.public.clone()]).expect("one key");
    let raw = RawHead {
        manifest_path: PathBuf::from("manifest.toml"),
        bytes: manifest.to_vec(),
        sigs: vec![("K.minisig".into(), sig)],
    };
    if let Ok(signed) = trust_raw(raw, &policy) {
        assert_eq!(signed.bytes, manifest);
        assert!(signed
            .signatures
            .iter()
            .any(|r| r.status == SignatureStatus::Valid));
    }
});
