//! Fault injection for the crash tests (tests/crash.rs): built only with the
//! cargo feature `crash-points` (the test suite enables it), and then with
//! the environment variable `CERTPIN_CRASH_AFTER=<step>` the process aborts
//! right after that pipeline step, as a SIGKILL at that point would. A
//! release build has no crash points at all.

#[cfg(feature = "crash-points")]
pub fn after(step: &str) {
    if std::env::var("CERTPIN_CRASH_AFTER").is_ok_and(|s| s == step) {
        eprintln!("certpin: CERTPIN_CRASH_AFTER={step}: aborting");
        std::process::abort();
    }
}

#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn after(_step: &str) {}
