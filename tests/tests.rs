//! The one integration-test crate (ripgrep's layout): every `tests/*.rs` file is a module
//! of this crate, so the suite links once instead of once per file. Helpers live in
//! `common/` (the real test model, stick-like trees), `support/pack.rs` (workspaces,
//! stock-minisign keys, the binary) and `update_util/` (signed trees made without
//! pack-usb, homes and histories). `repo_rules` checks that every file here is listed.

mod common;
#[path = "support/pack.rs"]
mod support;
#[path = "../xtask/src/fixtures/synthetic.rs"]
mod synthetic;
mod update_util;

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
