//! The one account every key derivation of a decode is charged to.
//!
//! Key derivation is the only costly step of a decode, and a file chooses
//! how much of it to ask for (iteration counts, number of encrypted parts,
//! parts hidden inside encrypted parts). So the KDFs are reachable only
//! through [`Budget`]: each derivation is charged *before* it runs, and
//! refused past a per-part ceiling, past the total [`MAX_WORK`], past a
//! caller's lower cap, or once the caller has cancelled the decode. The
//! walker (walk.rs) also asks [`Budget::admit`] for a whole layer at once,
//! so a layer that cannot fit is refused before any of it runs.
//!
//! Only PBKDF2 (HMAC-SHA-1/-2) and the PKCS#12 KDF (RFC 7292 appendix B)
//! exist here; both run in constant memory. Anything else (scrypt, say) has
//! no way to run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use zeroize::Zeroizing;

use super::reason::{Problem, Reason};

/// The most key-derivation iterations one file may ask for, summed over
/// its MAC and every encrypted part at every depth. Real files ask for a
/// few thousand (OpenSSL 3: 3 × 2048; keytool: 3 × 10,000) and careful ones
/// 3 × 600,000 (OWASP's count for PBKDF2-SHA256); a key, a certificate safe
/// and a MAC each at the largest count accepted for one part still fit,
/// about a second of CPU in a release build.
pub const MAX_WORK: u64 = 3_000_000;

/// The most iterations one part (the MAC, a safe, a key) may ask for: what
/// p12-keystore accepted, so files it read still load.
pub const MAX_PART_ITERATIONS: u64 = 1_000_000;

/// Salt and password bytes hashed once per derivation for free; beyond
/// this each 64 bytes (one hash block) is charged as an iteration, so that
/// a crafted salt or a huge password cannot make cheap parts costly.
const FREE_INPUT: usize = 1024;

/// Set by whoever waits for a decode (at its deadline); the decode stops
/// before its next derivation. Cloning shares the flag.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The hash functions the KDFs and MACs may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
    Sha512_224,
    Sha512_256,
}

/// Calls `$f::<D>($args)` with the digest type of a [`Hash`].
macro_rules! with_hash {
    ($hash:expr, $f:ident ( $($arg:expr),* )) => {
        match $hash {
            Hash::Sha1 => $f::<sha1::Sha1>($($arg),*),
            Hash::Sha224 => $f::<sha2_011::Sha224>($($arg),*),
            Hash::Sha256 => $f::<sha2_011::Sha256>($($arg),*),
            Hash::Sha384 => $f::<sha2_011::Sha384>($($arg),*),
            Hash::Sha512 => $f::<sha2_011::Sha512>($($arg),*),
            Hash::Sha512_224 => $f::<sha2_011::Sha512_224>($($arg),*),
            Hash::Sha512_256 => $f::<sha2_011::Sha512_256>($($arg),*),
        }
    };
}
pub(crate) use with_hash;

/// What a PKCS#12 KDF derivation is for (RFC 7292 B.3's ID byte).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose {
    Key,
    Iv,
    Mac,
}

/// The key-derivation account of one decode.
#[derive(Debug)]
pub struct Budget {
    cap: u64,
    spent: u64,
    derivations: u32,
    cancel: Cancel,
    over_cap: bool,
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new()
    }
}

impl Budget {
    /// Up to [`MAX_WORK`].
    pub fn new() -> Self {
        Budget::capped(MAX_WORK)
    }

    /// Up to `cap` (at most [`MAX_WORK`]). A file that needs more than the
    /// cap but fits [`MAX_WORK`] is stopped without a verdict on it:
    /// [`Budget::over_cap`] tells the caller to try again with more.
    pub fn capped(cap: u64) -> Self {
        Budget {
            cap: cap.min(MAX_WORK),
            spent: 0,
            derivations: 0,
            cancel: Cancel::default(),
            over_cap: false,
        }
    }

    /// Stops before the next derivation once `cancel` is set.
    pub fn with_cancel(mut self, cancel: Cancel) -> Self {
        self.cancel = cancel;
        self
    }

    /// Work charged so far (iterations, plus long inputs).
    pub fn spent(&self) -> u64 {
        self.spent
    }

    /// Derivations run so far.
    pub fn derivations(&self) -> u32 {
        self.derivations
    }

    /// Whether the caller has cancelled the decode.
    pub fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Whether the decode stopped at the cap without a verdict.
    pub fn over_cap(&self) -> bool {
        self.over_cap
    }

    /// Refuses, before any of it runs, a layer whose parts (iteration
    /// counts) cannot all fit. `describe` names the layer's schemes.
    pub(crate) fn admit(
        &mut self,
        parts: &[u64],
        describe: impl FnOnce() -> String,
    ) -> Result<(), Problem> {
        let layer = parts.iter().fold(0u64, |a, p| a.saturating_add(*p));
        self.fits(layer, parts.iter().copied().max().unwrap_or(0), describe)
    }

    fn fits(
        &mut self,
        cost: u64,
        largest_part: u64,
        describe: impl FnOnce() -> String,
    ) -> Result<(), Problem> {
        let total = self.spent.saturating_add(cost);
        if total > MAX_WORK {
            return Err(Problem::new(
                Reason::TooCostly,
                format!(
                    "the file asks for {total} key-derivation iterations in all (its encrypted parts and MAC: {}); \
                     certpin spends at most {MAX_WORK} on one file: export it again with the tool's default \
                     settings",
                    describe()
                ),
            ));
        }
        if largest_part > MAX_PART_ITERATIONS {
            return Err(Problem::new(
                Reason::UnsupportedEncryption,
                format!(
                    "the file's encryption parameters are out of range ({largest_part} iterations for one part, \
                     certpin runs at most {MAX_PART_ITERATIONS}): {}",
                    describe()
                ),
            ));
        }
        if total > self.cap {
            self.over_cap = true;
            return Err(Problem::new(
                Reason::TooCostly,
                format!(
                    "the file asks for more than {} key-derivation iterations",
                    self.cap
                ),
            ));
        }
        Ok(())
    }

    /// Charges one derivation before it runs.
    fn charge(&mut self, iterations: u64, input_len: usize) -> Result<(), Problem> {
        if self.cancel.is_cancelled() {
            return Err(Problem::new(
                Reason::TooCostly,
                "decoding the file was stopped: it took longer than certpin spends on one file",
            ));
        }
        let extra = input_len.saturating_sub(FREE_INPUT) / 64;
        let cost = iterations
            .max(1)
            .saturating_add(u64::try_from(extra).unwrap_or(u64::MAX));
        self.fits(cost, iterations, || {
            "counting one unit per 64 bytes of salt and password past the first KiB".into()
        })?;
        self.spent += cost;
        self.derivations += 1;
        Ok(())
    }

    /// PBKDF2 with HMAC-`prf` (RFC 8018), filling `out`.
    pub(crate) fn pbkdf2(
        &mut self,
        prf: Hash,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
        out: &mut [u8],
    ) -> Result<(), Problem> {
        self.charge(u64::from(iterations), password.len() + salt.len())?;
        with_hash!(prf, run_pbkdf2(password, salt, iterations, out));
        Ok(())
    }

    /// The PKCS#12 KDF (RFC 7292 appendix B) over a BMPString password
    /// (UTF-16BE with its two NUL bytes): one output per `(purpose, len)`.
    /// One part (a safe's key and IV, or a MAC key) is one charge, as the
    /// file states one iteration count for it.
    pub(crate) fn pkcs12_kdf(
        &mut self,
        hash: Hash,
        password_bmp: &[u8],
        salt: &[u8],
        iterations: i32,
        outputs: &[(Purpose, usize)],
    ) -> Result<Vec<Zeroizing<Vec<u8>>>, Problem> {
        let counted = u64::try_from(iterations).unwrap_or(1);
        self.charge(counted, password_bmp.len() + salt.len())?;
        let derive = |(purpose, len): &(Purpose, usize)| {
            let id = match purpose {
                Purpose::Key => pkcs12::kdf::Pkcs12KeyType::EncryptionKey,
                Purpose::Iv => pkcs12::kdf::Pkcs12KeyType::Iv,
                Purpose::Mac => pkcs12::kdf::Pkcs12KeyType::Mac,
            };
            Zeroizing::new(with_hash!(
                hash,
                run_pkcs12_kdf(password_bmp, salt, id, iterations, *len)
            ))
        };
        Ok(outputs.iter().map(derive).collect())
    }
}

fn run_pbkdf2<D: hmac::EagerHash>(password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
    pbkdf2::pbkdf2_hmac::<D>(password, salt, iterations, out);
}

fn run_pkcs12_kdf<D>(
    password_bmp: &[u8],
    salt: &[u8],
    id: pkcs12::kdf::Pkcs12KeyType,
    iterations: i32,
    len: usize,
) -> Vec<u8>
where
    D: hmac::digest::Digest
        + hmac::digest::FixedOutputReset
        + hmac::digest::block_api::BlockSizeUser,
{
    pkcs12::kdf::derive_key::<D>(password_bmp, salt, id, iterations, len)
}
