//! Fuzz target: applying a hostile delta to a fixed old file must end in an error or in
//! output no larger than declared — never a panic, an unbounded allocation or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let old: Vec<u8> = (0..65_536u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mut old = std::io::Cursor::new(old);
    let mut delta = data;
    let mut out = Vec::new();
    let declared = 1 << 20;
    if offgrid::update::delta::apply(&mut old, &mut delta, &mut out, declared).is_ok() {
        assert!(out.len() as u64 <= declared);
    }
});
