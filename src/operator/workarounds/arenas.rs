//! glibc gives each thread that allocates concurrently its own malloc arena
//! (up to eight per core) and rarely hands their free pages back. certpin's
//! memory comes in bursts (a watch's initial list, a burst of reconciles), so
//! every arena keeps a burst's worth: at 1000 sets that was 8–12 MiB of the
//! resident size. One arena is plenty for an operator that mostly waits on
//! the network; small allocations still take glibc's per-thread cache
//! without a lock.

/// Limits glibc to one malloc arena, unless `MALLOC_ARENA_MAX` says
/// otherwise. Call before the runtime starts its threads.
pub fn limit() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a tuning parameter of the allocator; it is
        // called before any other thread exists.
        let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
        if ok != 1 {
            tracing::debug!("mallopt(M_ARENA_MAX) was refused; keeping glibc's default");
        }
    }
}
