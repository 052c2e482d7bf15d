//! Re-encoding: a fresh PKCS12 in a profile the app runtime's JVM loads, with
//! a generated ASCII password. Only this file reaches the pod; the user's
//! password never does.

use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey,
    PrivateKeyChain,
};
use rand::Rng as _;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::decode::Decoded;

/// The PKCS12 profile certpin writes.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
pub enum Profile {
    /// PBES2 with AES-256-CBC and PBKDF2-HMAC-SHA256, HMAC-SHA256 MAC (Java 11.0.12+, 17, 21).
    #[default]
    Modern,
    /// PKCS12 PBE with SHA-1 and 3DES, HMAC-SHA1 MAC, for Java 8 runtimes.
    Legacy,
}

/// Iterations for the generated files. The password is 32 random
/// alphanumerics (~190 bits), so key stretching adds nothing to it; the
/// count only has to be one every reader accepts. 1000 is the floor of
/// NIST SP 800-132 that FIPS-mode JVM providers enforce (BC-FIPS rejects
/// fewer); every other reader takes any count. It was 10,000 (what the JVM
/// writes), then 2048 (OpenSSL 3's default): each step cut a new set's
/// re-encoding CPU for no security lost.
const ITERATIONS: u32 = 1000;

/// A re-encoded file and the password that opens it.
pub struct Encoded {
    pub pkcs12: Vec<u8>,
    pub password: Zeroizing<String>,
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoded")
            .field("len", &self.pkcs12.len())
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("writing the PKCS12 file failed: {0}")]
pub struct EncodeError(String);

pub fn generate_password() -> Zeroizing<String> {
    Zeroizing::new(
        rand::rng()
            .sample_iter(&Alphanumeric)
            .take(32)
            .map(char::from)
            .collect(),
    )
}

/// Writes `decoded` as a new PKCS12 under `alias` with a generated password.
pub fn encode(decoded: &Decoded, alias: &str, profile: Profile) -> Result<Encoded, EncodeError> {
    encode_with(decoded, alias, profile, generate_password())
}

/// Writes `decoded` as a new PKCS12 under `alias`, opened by `password`.
pub fn encode_with(
    decoded: &Decoded,
    alias: &str,
    profile: Profile,
    password: Zeroizing<String>,
) -> Result<Encoded, EncodeError> {
    let err = |e: p12_keystore::error::Error| EncodeError(e.to_string());
    let key = PrivateKey::from_der(&decoded.key_pkcs8).map_err(err)?;
    let certs = decoded
        .chain
        .iter()
        .map(|der| Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    let local_key_id = Sha256::digest(&decoded.chain[0])[..20].to_vec();
    let mut store = KeyStore::new();
    store.add_entry(
        alias,
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(local_key_id, key, certs)),
    );
    let writer = store
        .writer(&password)
        .encryption_iterations(ITERATIONS)
        .mac_iterations(ITERATIONS);
    let writer = match profile {
        Profile::Modern => writer
            .encryption_algorithm(EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
            .mac_algorithm(MacAlgorithm::HmacSha256),
        Profile::Legacy => writer
            .encryption_algorithm(EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
            .mac_algorithm(MacAlgorithm::HmacSha1),
    };
    let pkcs12 = writer.write().map_err(err)?;
    Ok(Encoded { pkcs12, password })
}
