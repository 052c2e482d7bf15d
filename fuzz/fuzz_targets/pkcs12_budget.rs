//! The decode budget's property: whatever the input, a decode spends at
//! most its cap in key derivation and at most MAX_DECODE_HEAP bytes of heap
//! (certpin::pkcs12::check_decode_bounds, measured by PeakMeter). The cap is
//! well below MAX_WORK so that each run is quick; the budget's rules are
//! the same at any cap. Input: password length, password, file.
#![no_main]

use certpin::pkcs12::{PeakMeter, check_decode_bounds};

#[global_allocator]
static METER: PeakMeter = PeakMeter;

/// Also tests/decode_budget.rs's FUZZ_CAP.
const CAP: u64 = 100_000;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check_decode_bounds(data, CAP));
