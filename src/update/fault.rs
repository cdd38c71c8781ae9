//! Fault injection for crash tests: when the environment variable `OFFGRID_FAULT_AT`
//! names a step of install/apply/rollback, the process kills itself with SIGKILL at that
//! step, exactly as a power cut or `kill -9` would stop it (no destructors, no flush);
//! `STEP:pause` makes it sleep there instead (to test the lock), `STEP:stop` stops it
//! with SIGSTOP until a SIGCONT (a test then changes the world, e.g. fills the disk). Besides [`STEPS`]:
//! `tmp-NAME` (an atomic write of file NAME, e.g. `tmp-state.json`, with its temporary
//! file written and not yet renamed), `pack-staged` (pack-usb, everything staged,
//! the destination's lock held) and `volume-piece-written` (`install --from VOLUME`,
//! after each piece of the volume is staged).
//!
//! This is a documented test hook (SPEC.md §7.8), compiled in always so the crash tests
//! drive the shipped binary. It costs one environment lookup per step. Known gap: on
//! non-Unix systems the process aborts instead.

/// The environment variable naming the step to die at.
pub const ENV: &str = "OFFGRID_FAULT_AT";

/// Every step name [`point`] is called with, in the order an apply passes them.
pub const STEPS: &[&str] = &[
    "journal-written",
    "payload-written",
    "staged",
    "renamed",
    "flipped",
    "linked",
    "cleaned",
];

/// Dies here when `OFFGRID_FAULT_AT` equals `step`; sleeps here (holding whatever the
/// process holds, e.g. the lock) for up to an hour when it equals `step:pause`, so a test
/// can act while an operation is in flight.
pub fn point(step: &str) {
    let Some(v) = std::env::var_os(ENV) else {
        return;
    };
    if v.to_str().and_then(|v| v.strip_suffix(":pause")) == Some(step) {
        std::thread::sleep(std::time::Duration::from_secs(3600));
        return;
    }
    if v.to_str().and_then(|v| v.strip_suffix(":stop")) == Some(step) {
        #[cfg(unix)]
        // SAFETY: raise() only sends a signal to this process.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
        return;
    }
    if v == step {
        #[cfg(unix)]
        // SAFETY: raise() only sends a signal to this process.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
        std::process::abort();
    }
}
