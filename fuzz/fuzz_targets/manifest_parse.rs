//! Fuzz target: the manifest parser must never panic, and whatever it accepts must
//! round-trip through its canonical form unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use offgrid::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data) {
        let text = m.to_toml();
        let again = Manifest::parse(text.as_bytes()).expect("canonical form must parse");
        assert_eq!(m, again);
    }
});
