//! The pack reader against hostile bytes: a real signed pack, then hundreds of copies
//! with one byte flipped, a run of bytes overwritten, or the file cut short, each read
//! by `update::verify_pack` (the same streaming reader apply uses). It must never panic
//! or allocate without bound, and whatever it accepts must be the original content
//! (a flipped byte in tar padding or an unused header field changes nothing signed).

use crate::util;

use std::fs;

use offgrid::keys::PublicKey;
use offgrid::trust::TrustPolicy;
use offgrid::update::verify_pack;
use util::*;

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[test]
fn mutated_and_truncated_packs_are_refused_or_unchanged() {
    let w = world(96 * 1024);
    make_pack(&w, "u.ogpack", &[]);
    let policy = TrustPolicy::from_keys(vec![PublicKey::load(&w.pubkey).unwrap()]).unwrap();
    let good = fs::read(w.p("u.ogpack")).unwrap();
    let base = verify_pack(&w.p("u.ogpack"), &policy, &offgrid::no_progress).unwrap();
    let same = |r: &offgrid::update::verify_pack::PackReport| {
        r.to == base.to
            && r.payloads.len() == base.payloads.len()
            && r.payloads
                .iter()
                .zip(&base.payloads)
                .all(|(a, b)| a.entry == b.entry && a.size == b.size)
    };
    let p = w.p("m.ogpack");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let (mut refused, mut accepted) = (0, 0);
    for i in 0..400 {
        let mut b = good.clone();
        match i % 4 {
            // Flip one byte anywhere.
            0 | 1 => {
                let at = (xorshift(&mut seed) % b.len() as u64) as usize;
                b[at] ^= 1 << (xorshift(&mut seed) % 8);
            }
            // Overwrite 16 bytes with noise (header fields, sizes, names).
            2 => {
                let at = (xorshift(&mut seed) % (b.len() as u64 - 16)) as usize;
                for x in &mut b[at..at + 16] {
                    *x = xorshift(&mut seed) as u8;
                }
            }
            // Cut the file short.
            _ => {
                let at = (xorshift(&mut seed) % b.len() as u64) as usize;
                b.truncate(at);
            }
        }
        fs::write(&p, &b).unwrap();
        match verify_pack(&p, &policy, &offgrid::no_progress) {
            Ok(r) => {
                assert!(same(&r), "case {i}: accepted a pack with other content");
                accepted += 1;
            }
            Err(_) => refused += 1,
        }
    }
    eprintln!("{refused} refused, {accepted} accepted unchanged");
    // Most mutations hit signed or hashed bytes.
    assert!(
        refused > 300,
        "only {refused} of 400 refused ({accepted} accepted)"
    );
}
