//! Fault injection for the crash tests (tests/crash.rs): with the
//! environment variable `CERTPIN_CRASH_AFTER=<step>`, the process aborts right
//! after that pipeline step, as a SIGKILL at that point would. Never set in a
//! deployment; read from the process environment only.

pub fn after(step: &str) {
    if std::env::var("CERTPIN_CRASH_AFTER").is_ok_and(|s| s == step) {
        eprintln!("certpin: CERTPIN_CRASH_AFTER={step}: aborting");
        std::process::abort();
    }
}
