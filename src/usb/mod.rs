//! The USB tree: layout, release inputs (recipe or flags), and `pack-usb`.
//!
//! STUB: to be written (owner: pack helper).
