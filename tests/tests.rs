//! The one integration-test crate (ripgrep's layout): every `tests/*.rs` file is a module
//! of this crate, so the suite links once instead of once per file. The helpers are one
//! module, `util/` (see its doc). `repo_rules` checks that every file here is listed.

#[path = "../xtask/src/nginx.rs"]
mod nginx;
#[path = "../xtask/src/fixtures/synthetic.rs"]
mod synthetic;
mod util;

/// The helper modules' names before they became `util` (`common`, `support`,
/// `update_util`), kept so tests written against them still build.
#[allow(unused_imports)]
mod common {
    pub use crate::util::*;
}
#[allow(unused_imports)]
mod support {
    pub use crate::util::sha as sha256_hex;
    pub use crate::util::*;
}
#[allow(unused_imports)]
mod update_util {
    pub use crate::util::*;
}

mod bundles;
mod clone;
mod conventions;
mod core_hostile;
mod crash;
mod delta;
mod fetch;
mod json_records;
mod keys;
mod lan;
mod launcher;
mod media;
mod models;
mod pack_usb;
mod pack_volumes;
mod payload;
mod receipts;
mod repair;
mod repo_rules;
mod scripts;
mod signing;
mod site_hardening;
mod store;
mod torrent;
mod trust_rotation;
mod update;
mod update_hostile;
mod update_hq;
mod verify;
mod volumes;
