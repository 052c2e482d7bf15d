//! What one decode may cost, stated so that tests and the fuzzer can check
//! it: at most `MAX_WORK` units of key derivation (budget.rs) and at most
//! [`MAX_DECODE_HEAP`] bytes of heap at its peak, whatever the input.
//!
//! [`PeakMeter`] is a counting allocator a test or fuzz binary installs
//! (`#[global_allocator]`) to measure a decode's peak heap on its thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use super::budget::Budget;
use super::decode::decode_pkcs12_with;

/// The most heap one decode holds at once: an input of `MAX_INPUT` is
/// parsed into owned DER a few times over (the safes, their bags, the
/// decrypted copies), the KDFs run in constant memory, and scrypt never
/// runs. A sixteenth of the chart's 128 MiB limit; measured peaks are far
/// below (docs/security.md).
pub const MAX_DECODE_HEAP: usize = 8 * 1024 * 1024;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

/// The system allocator, counting this thread's live and peak bytes.
pub struct PeakMeter;

fn count(grow: usize, shrink: usize) {
    // try_with: the thread-locals may be gone while a thread exits.
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add(grow).saturating_sub(shrink);
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to `System` unchanged; the counting
// touches only const-initialised thread-locals (no allocation).
unsafe impl GlobalAlloc for PeakMeter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 0);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 0);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(0, layout.size());
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size, layout.size());
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

impl PeakMeter {
    /// Runs `f` and returns its result with the most heap it held at once
    /// on this thread, above what was live before. Zero unless the binary
    /// installed `PeakMeter` as its global allocator.
    pub fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
        let base = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(base));
        let r = f();
        let peak = PEAK.with(Cell::get);
        (r, peak.saturating_sub(base))
    }

    /// Whether this binary counts allocations through `PeakMeter`.
    pub fn installed() -> bool {
        let (_, peak) = PeakMeter::measure(|| std::hint::black_box(vec![0u8; 4096]));
        peak >= 4096
    }
}

/// The fuzz property (fuzz/fuzz_targets/pkcs12_budget.rs): whatever the
/// input, a decode within `cap` spends at most `cap` units of key
/// derivation and at most [`MAX_DECODE_HEAP`] bytes. First byte: password
/// length; then the password; the rest is the file. Panics when it fails.
pub fn check_decode_bounds(input: &[u8], cap: u64) {
    assert!(
        PeakMeter::installed(),
        "install PeakMeter as the global allocator"
    );
    let Some((&n, rest)) = input.split_first() else {
        return;
    };
    let n = usize::from(n).min(rest.len());
    let password = String::from_utf8_lossy(&rest[..n]);
    let data = &rest[n..];
    let mut budget = Budget::capped(cap);
    let (_, peak) = PeakMeter::measure(|| decode_pkcs12_with(data, &password, &mut budget));
    assert!(
        budget.spent() <= cap,
        "spent {} units, cap {cap}",
        budget.spent()
    );
    assert!(
        peak <= MAX_DECODE_HEAP,
        "peak heap {peak} bytes, bound {MAX_DECODE_HEAP}"
    );
}
