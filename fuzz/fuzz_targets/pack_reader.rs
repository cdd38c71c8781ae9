//! Fuzz target: the update-pack reader (tar framing, pack manifest, signatures, payload
//! bounds) must refuse hostile bytes with an error, never a panic or an unbounded
//! allocation. The input is written to a file and read as a pack against a fixed key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use offgrid::keys::PublicKey;
use offgrid::trust::TrustPolicy;

const KEY: &str = "RWQIKy1m2hNcsh4cMiY8DeP6jJKPRSHpD2tLbE3G0xyEnHxnh0Sj4bbL";

fuzz_target!(|data: &[u8]| {
    let Ok(pk) = PublicKey::from_base64(KEY) else { return };
    let Ok(policy) = TrustPolicy::from_keys(vec![pk]) else { return };
    let dir = std::env::temp_dir().join(format!("offgrid-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("input.ogpack");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let _ = offgrid::update::reader::read_pack(
        &path,
        &policy,
        &offgrid::no_progress,
        &mut |_| Ok(()),
        &mut |_, r| {
            let mut sink = std::io::sink();
            std::io::copy(r, &mut sink)
                .map(|_| ())
                .map_err(|e| offgrid::update::UpdateError::Refused(e.to_string()))
        },
    );
});
