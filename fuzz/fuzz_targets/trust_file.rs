//! Fuzz target: the trust-file parser must never panic, never accept a policy whose
//! threshold cannot be met, and keep every message it quotes short.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use offgrid::trust::TrustPolicy;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `file = …` entries resolve under a folder that does not exist: never a real file.
    match TrustPolicy::from_text(text, Path::new("/nonexistent-offgrid-fuzz"), "trust.toml") {
        Ok(p) => assert!(p.threshold >= 1 && p.threshold <= p.keys.len()),
        Err(e) => assert!(e.to_string().len() < 8 * 1024, "message too long"),
    }
});
