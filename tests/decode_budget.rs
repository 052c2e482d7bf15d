//! The decode budget (issue 39 item 1): key derivation is bounded whatever
//! the structure. Each crafted file (tests/hostile) gets its exact Reason,
//! the refusal comes before the costly derivation runs (counted through the
//! Budget, not timed), and no decode holds more than MAX_DECODE_HEAP bytes
//! (measured with a counting allocator).

mod hostile;

use certpin::pkcs12::{
    self, Budget, Cancel, MAX_DECODE_HEAP, MAX_WORK, PeakMeter, Problem, Reason,
};
use hostile::{PASSWORD, Scheme};

#[global_allocator]
static METER: PeakMeter = PeakMeter;

/// Decodes with a fresh budget: the verdict, the budget, the peak heap.
fn decode(file: &[u8]) -> (Result<pkcs12::Decoded, Problem>, Budget, usize) {
    let mut budget = Budget::new();
    let (result, peak) =
        PeakMeter::measure(|| pkcs12::decode_pkcs12_with(file, PASSWORD, &mut budget));
    (result, budget, peak)
}

fn hostile(name: &str) -> Vec<u8> {
    hostile::all()
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| f.clone())
        .unwrap()
}

fn refused(name: &str) -> (Problem, Budget) {
    let (result, budget, peak) = decode(&hostile(name));
    assert!(peak <= MAX_DECODE_HEAP, "{name}: peak heap {peak}");
    (result.expect_err(name), budget)
}

#[test]
fn scrypt_in_a_secret_bag_is_refused_before_any_derivation() {
    let (p, budget) = refused("scrypt-secret-bag");
    assert_eq!(p.reason, Reason::UnsupportedEncryption, "{p}");
    assert!(p.message.contains("scrypt"), "{p}");
    assert_eq!(budget.derivations(), 0);
}

#[test]
fn scrypt_in_a_key_inside_an_encrypted_safe_is_refused_once_that_safe_opens() {
    let (p, budget) = refused("scrypt-key-in-encrypted-safe");
    assert_eq!(p.reason, Reason::UnsupportedEncryption, "{p}");
    assert!(p.message.contains("scrypt"), "{p}");
    // Only the outer safe's own derivation ran.
    assert_eq!((budget.derivations(), budget.spent()), (1, 2048));
}

#[test]
fn secret_bags_are_never_decrypted_whatever_they_ask_for() {
    // 16 secret bags at 1,000,000 iterations beside a real key and chain.
    let (result, budget, peak) = decode(&hostile("pbkdf2-million-secret-bags"));
    let d = result.unwrap();
    assert_eq!(d.facts.chain_length, 3);
    assert_eq!((budget.derivations(), budget.spent()), (1, 2048));
    assert!(peak <= MAX_DECODE_HEAP, "peak heap {peak}");
}

#[test]
fn keys_hidden_in_an_encrypted_safe_are_costed_before_any_is_decrypted() {
    let (p, budget) = refused("pbkdf2-million-keys-in-encrypted-safe");
    assert_eq!(p.reason, Reason::TooCostly, "{p}");
    assert!(p.message.contains("3002048"), "{p}");
    assert_eq!((budget.derivations(), budget.spent()), (1, 2048));

    let (p, budget) = refused("many-keys-in-encrypted-safe");
    assert_eq!(p.reason, Reason::TooCostly, "{p}");
    assert_eq!((budget.derivations(), budget.spent()), (1, 1));
}

#[test]
fn nested_safe_contents_are_refused_before_any_derivation() {
    let (p, budget) = refused("nested-safe-contents");
    assert_eq!(p.reason, Reason::UnsupportedEncryption, "{p}");
    assert!(p.message.contains("nests SafeContents"), "{p}");
    assert_eq!(budget.derivations(), 0);
}

#[test]
fn a_kdf_prf_certpin_does_not_run_is_refused_at_any_depth() {
    let (p, budget) = refused("unknown-prf-in-encrypted-safe");
    assert_eq!(p.reason, Reason::UnsupportedEncryption, "{p}");
    assert_eq!(budget.derivations(), 1);
}

#[test]
fn the_mac_counts_with_the_visible_parts() {
    // Two keys at 1,000,000 and a certificate safe at 1 fit (2,000,001);
    // a MAC at 1,000,000 more does not, and nothing runs.
    let (key, chain) = hostile::identity();
    let million = Scheme::Pbkdf2(1_000_000);
    let safes = [
        hostile::plain_safe(&[
            hostile::shrouded(million, &key),
            hostile::shrouded(million, &key),
        ]),
        hostile::encrypted_safe(Scheme::Pbkdf2(1), &[hostile::cert(&chain[0])]),
    ];
    let mut budget = Budget::new();
    let file = hostile::pfx_with_mac(&safes, 1_000_000);
    let err = pkcs12::decode_pkcs12_with(&file, PASSWORD, &mut budget).unwrap_err();
    assert_eq!(err.reason, Reason::TooCostly, "{err}");
    assert!(err.message.contains("3000001"), "{err}");
    assert_eq!(budget.derivations(), 0);
}

#[test]
fn a_cancelled_decode_runs_no_further_derivation() {
    let cancel = Cancel::default();
    cancel.cancel();
    let mut budget = Budget::new().with_cancel(cancel);
    let file = fixture("openssl-rsa-modern.p12");
    let err = pkcs12::decode_pkcs12_with(&file, "changeit", &mut budget).unwrap_err();
    assert_eq!(err.reason, Reason::TooCostly);
    assert_eq!(budget.derivations(), 0);
}

#[test]
fn a_cap_below_max_work_stops_without_a_verdict() {
    // Visible: 3 × 600,000 is over a 100,000 cap, refused before running.
    let mut budget = Budget::capped(100_000);
    let file = fixture("openssl-rsa-600k.p12");
    pkcs12::decode_pkcs12_with(&file, "changeit", &mut budget).unwrap_err();
    assert!(budget.over_cap());
    assert_eq!(budget.derivations(), 0);
    // Hidden: the outer safe opens within the cap, its keys do not fit.
    let mut budget = Budget::capped(100_000);
    let file = hostile("pbkdf2-million-keys-in-encrypted-safe");
    pkcs12::decode_pkcs12_with(&file, PASSWORD, &mut budget).unwrap_err();
    assert!(!budget.over_cap(), "over MAX_WORK is a verdict, not a cap");
    let (key, _) = hostile::identity();
    let file = hostile::pfx(&[hostile::encrypted_safe(
        Scheme::Pbkdf2(2048),
        &[hostile::shrouded(Scheme::Pbkdf2(200_000), &key)],
    )]);
    let mut budget = Budget::capped(100_000);
    pkcs12::decode_pkcs12_with(&file, PASSWORD, &mut budget).unwrap_err();
    assert!(budget.over_cap());
    assert_eq!((budget.derivations(), budget.spent()), (1, 2048));
}

#[test]
fn a_huge_password_is_charged_and_bounded_in_memory() {
    // 1 MiB (a Secret's limit): hashed once per derivation, charged per
    // 64 bytes past the first KiB; the PKCS#12 KDF holds it twice (BMP).
    let password = "p".repeat(1 << 20);
    for name in ["openssl-rsa-legacy.p12", "openssl-rsa-modern.p12"] {
        let mut budget = Budget::new();
        let (result, peak) = PeakMeter::measure(|| {
            pkcs12::decode_pkcs12_with(&fixture(name), &password, &mut budget)
        });
        assert_eq!(result.unwrap_err().reason, Reason::WrongPassword, "{name}");
        // The MAC's derivation alone: 2048 iterations and ~2 MiB of BMP.
        assert_eq!(budget.derivations(), 1, "{name}");
        assert!(budget.spent() > 2048 + 32_000, "{name}: {}", budget.spent());
        assert!(peak <= MAX_DECODE_HEAP, "{name}: peak heap {peak}");
    }
}

fn fixture(name: &str) -> Vec<u8> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pkcs12");
    std::fs::read(format!("{dir}/{name}")).unwrap()
}

#[test]
fn every_fixture_and_hostile_file_decodes_within_the_heap_bound() {
    assert!(PeakMeter::installed());
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pkcs12");
    let mut worst = (0, String::new());
    let fixtures = std::fs::read_dir(dir).unwrap().flatten().map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        (name, std::fs::read(e.path()).unwrap())
    });
    let crafted = hostile::all()
        .iter()
        .map(|(n, f)| (n.to_string(), f.clone()));
    for (name, file) in fixtures
        .filter(|(n, _)| n != "openssl-rsa-600k.p12")
        .chain(crafted)
    {
        let (_, budget, peak) = decode(&file);
        assert!(peak <= MAX_DECODE_HEAP, "{name}: peak heap {peak}");
        assert!(budget.spent() <= MAX_WORK, "{name}");
        eprintln!(
            "{name}: peak heap {peak} bytes, {} units in {} derivations",
            budget.spent(),
            budget.derivations()
        );
        worst = worst.max((peak, name));
    }
    eprintln!("largest peak: {} bytes ({})", worst.0, worst.1);
}

/// The fuzz target's property, over the inputs it has found
/// (fuzz/regressions/pkcs12_budget) and the hostile files.
#[test]
fn the_fuzz_property_holds_for_its_regressions_and_the_hostile_files() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/regressions/pkcs12_budget"
    );
    let mut n = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        pkcs12::check_decode_bounds(&std::fs::read(entry.path()).unwrap(), FUZZ_CAP);
        n += 1;
    }
    assert!(
        n >= hostile::all().len(),
        "the regression inputs are missing"
    );
    for (_, file) in hostile::all() {
        pkcs12::check_decode_bounds(&fuzz_input(file), FUZZ_CAP);
    }
}

/// fuzz/fuzz_targets/pkcs12_budget.rs's cap.
const FUZZ_CAP: u64 = 100_000;

fn fuzz_input(file: &[u8]) -> Vec<u8> {
    [&[PASSWORD.len() as u8][..], PASSWORD.as_bytes(), file].concat()
}

/// Writes the hostile files as fuzz inputs (seeds and regressions):
/// `cargo test --test decode_budget -- --ignored write_hostile_inputs`.
#[test]
#[ignore]
fn write_hostile_inputs() {
    for target in ["pkcs12_decode", "pkcs12_budget"] {
        let dir = format!("{}/fuzz/regressions/{target}", env!("CARGO_MANIFEST_DIR"));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, file) in hostile::all() {
            std::fs::write(format!("{dir}/hostile-{name}"), fuzz_input(file)).unwrap();
        }
    }
}
