//! Crafted PKCS12 files that ask for key derivation where the structure
//! does not show it (the red team's findings on main 4f4cbe1, and their
//! class), written as raw DER so that anything can be built: scrypt and
//! 1,000,000-iteration PBKDF2 in secret bags, in shrouded keys inside
//! encrypted safes, many bags, nested SafeContents. The outer layers are
//! encrypted for real (PBES2, PBKDF2-SHA256, AES-256-CBC) with
//! [`PASSWORD`], so a decoder that reads them reaches the inner layers.

#![allow(dead_code)]

use cbc::cipher::{BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
use der::{Encode, oid::ObjectIdentifier};

pub const PASSWORD: &str = "changeit";

const PBES2: &str = "1.2.840.113549.1.5.13";
const PBKDF2: &str = "1.2.840.113549.1.5.12";
const SCRYPT: &str = "1.3.6.1.4.1.11591.4.11";
const HMAC_SHA256: &str = "1.2.840.113549.2.9";
const HMAC_SHA3_256: &str = "2.16.840.1.101.3.4.2.14";
const AES256_CBC: &str = "2.16.840.1.101.3.4.1.42";
const DATA: &str = "1.2.840.113549.1.7.1";
const ENCRYPTED_DATA: &str = "1.2.840.113549.1.7.6";
const KEY_BAG: &str = "1.2.840.113549.1.12.10.1.1";
const SHROUDED_KEY_BAG: &str = "1.2.840.113549.1.12.10.1.2";
const CERT_BAG: &str = "1.2.840.113549.1.12.10.1.3";
const SECRET_BAG: &str = "1.2.840.113549.1.12.10.1.5";
const SAFE_CONTENTS_BAG: &str = "1.2.840.113549.1.12.10.1.6";
const X509: &str = "1.2.840.113549.1.9.22.1";

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend(content);
    out
}

fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

fn oid(s: &str) -> Vec<u8> {
    ObjectIdentifier::new_unwrap(s).to_der().unwrap()
}

fn int(i: u64) -> Vec<u8> {
    i.to_der().unwrap()
}

fn octets(b: &[u8]) -> Vec<u8> {
    tlv(0x04, b)
}

/// `[0] EXPLICIT`.
fn ctx0(inner: &[u8]) -> Vec<u8> {
    tlv(0xa0, inner)
}

fn alg(id: &str, params: Vec<u8>) -> Vec<u8> {
    seq(&[oid(id), params])
}

/// How a part is encrypted.
#[derive(Clone, Copy, Debug)]
pub enum Scheme {
    /// PBES2, PBKDF2 with HMAC-SHA256, AES-256-CBC: what OpenSSL 3 writes.
    Pbkdf2(u32),
    /// PBES2 with scrypt (N = 2^log_n, r = 8, p = 1).
    Scrypt { log_n: u32 },
    /// PBES2, PBKDF2 with HMAC-SHA3-256 (a PRF certpin does not run).
    Pbkdf2Sha3(u32),
}

const SALT: [u8; 16] = [7; 16];
const IV: [u8; 16] = [9; 16];

impl Scheme {
    fn algorithm(self) -> Vec<u8> {
        let aes = alg(AES256_CBC, octets(&IV));
        let kdf = match self {
            Scheme::Pbkdf2(n) => alg(
                PBKDF2,
                seq(&[octets(&SALT), int(n.into()), alg(HMAC_SHA256, vec![5, 0])]),
            ),
            Scheme::Pbkdf2Sha3(n) => alg(
                PBKDF2,
                seq(&[octets(&SALT), int(n.into()), alg(HMAC_SHA3_256, vec![5, 0])]),
            ),
            Scheme::Scrypt { log_n } => alg(
                SCRYPT,
                seq(&[octets(&SALT), int(1 << log_n), int(8), int(1)]),
            ),
        };
        alg(PBES2, seq(&[kdf, aes]))
    }

    /// Encrypts for real where the scheme is PBKDF2-SHA256 at a count a
    /// decoder may run (so it reaches what is inside); otherwise filler a
    /// decoder must refuse before it derives anything (one that did not
    /// would spend the derivation, then fail on the filler).
    fn encrypt(self, plain: &[u8]) -> Vec<u8> {
        match self {
            Scheme::Pbkdf2(n) if n <= 2048 => {
                let mut key = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<sha2_011::Sha256>(PASSWORD.as_bytes(), &SALT, n, &mut key);
                cbc::Encryptor::<aes::Aes256>::new_from_slices(&key, &IV)
                    .unwrap()
                    .encrypt_padded_vec::<Pkcs7>(plain)
            }
            _ => vec![0x5a; plain.len().div_ceil(16) * 16 + 16],
        }
    }
}

fn bag(id: &str, value: Vec<u8>) -> Vec<u8> {
    seq(&[oid(id), ctx0(&value)])
}

fn epki(scheme: Scheme, plain: &[u8]) -> Vec<u8> {
    seq(&[scheme.algorithm(), octets(&scheme.encrypt(plain))])
}

/// A shrouded key bag holding `key` (PKCS#8 DER).
pub fn shrouded(scheme: Scheme, key: &[u8]) -> Vec<u8> {
    bag(SHROUDED_KEY_BAG, epki(scheme, key))
}

/// A secret bag as Java writes one: an encrypted PKCS#8 in an OCTET STRING.
pub fn secret(scheme: Scheme) -> Vec<u8> {
    let value = seq(&[
        oid(SHROUDED_KEY_BAG),
        ctx0(&octets(&epki(scheme, &[1; 32]))),
    ]);
    bag(SECRET_BAG, value)
}

pub fn cert(der: &[u8]) -> Vec<u8> {
    bag(CERT_BAG, seq(&[oid(X509), ctx0(&octets(der))]))
}

pub fn plain_key(pkcs8: &[u8]) -> Vec<u8> {
    bag(KEY_BAG, pkcs8.to_vec())
}

pub fn nested(bags: &[Vec<u8>]) -> Vec<u8> {
    bag(SAFE_CONTENTS_BAG, seq(bags))
}

/// A safe as the authenticated safe holds it: plain or encrypted.
pub fn plain_safe(bags: &[Vec<u8>]) -> Vec<u8> {
    seq(&[oid(DATA), ctx0(&octets(&seq(bags)))])
}

pub fn encrypted_safe(scheme: Scheme, bags: &[Vec<u8>]) -> Vec<u8> {
    let ct = scheme.encrypt(&seq(bags));
    let info = seq(&[oid(DATA), scheme.algorithm(), tlv(0x80, &ct)]);
    seq(&[oid(ENCRYPTED_DATA), ctx0(&seq(&[int(0), info]))])
}

/// The PFX, without a MAC (a wrong password then shows as undecryptable
/// content, which is all these files need).
pub fn pfx(safes: &[Vec<u8>]) -> Vec<u8> {
    seq(&[int(3), seq(&[oid(DATA), ctx0(&octets(&seq(safes)))])])
}

/// The PFX with a MacData asking for `iterations` (SHA-256; its digest is
/// zeros, so it never verifies: for files that must be refused before).
pub fn pfx_with_mac(safes: &[Vec<u8>], iterations: u32) -> Vec<u8> {
    let digest = seq(&[alg("2.16.840.1.101.3.4.2.1", vec![5, 0]), octets(&[0; 32])]);
    let mac = seq(&[digest, octets(&[1; 8]), int(iterations.into())]);
    seq(&[int(3), seq(&[oid(DATA), ctx0(&octets(&seq(safes)))]), mac])
}

fn pem_der(path: &str) -> Vec<Vec<u8>> {
    let file = format!("{}/tests/fixtures/pem/{path}", env!("CARGO_MANIFEST_DIR"));
    pem::parse_many(std::fs::read(file).unwrap())
        .unwrap()
        .into_iter()
        .map(|p| p.contents().to_vec())
        .collect()
}

/// A real RSA key (PKCS#8 DER) and its chain, end-entity first.
pub fn identity() -> (Vec<u8>, Vec<Vec<u8>>) {
    (pem_der("rsa-pkcs8.key").remove(0), pem_der("rsa-tls.crt"))
}

/// Every hostile file by name (built once).
pub fn all() -> &'static [(&'static str, Vec<u8>)] {
    static FILES: std::sync::OnceLock<Vec<(&'static str, Vec<u8>)>> = std::sync::OnceLock::new();
    FILES.get_or_init(build)
}

fn build() -> Vec<(&'static str, Vec<u8>)> {
    let (key, chain) = identity();
    let certs: Vec<Vec<u8>> = chain.iter().map(|c| cert(c)).collect();
    let key_safe = || plain_safe(&[shrouded(Scheme::Pbkdf2(2048), &key)]);
    let scrypt = Scheme::Scrypt { log_n: 20 };
    vec![
        ("scrypt-secret-bag", pfx(&[plain_safe(&[secret(scrypt)])])),
        (
            "scrypt-key-in-encrypted-safe",
            pfx(&[encrypted_safe(
                Scheme::Pbkdf2(2048),
                &[shrouded(scrypt, &key)],
            )]),
        ),
        ("pbkdf2-million-secret-bags", {
            let mut bags = vec![secret(Scheme::Pbkdf2(1_000_000)); 16];
            bags.extend(certs.iter().cloned());
            pfx(&[key_safe(), plain_safe(&bags)])
        }),
        ("pbkdf2-million-keys-in-encrypted-safe", {
            let bags = vec![shrouded(Scheme::Pbkdf2(1_000_000), &key); 3];
            pfx(&[encrypted_safe(Scheme::Pbkdf2(2048), &bags)])
        }),
        ("many-keys-in-encrypted-safe", {
            let bags = vec![shrouded(Scheme::Pbkdf2(10_000), &[1; 16]); 400];
            pfx(&[encrypted_safe(Scheme::Pbkdf2(1), &bags)])
        }),
        ("nested-safe-contents", {
            let mut bags = certs.clone();
            bags.push(nested(&[shrouded(scrypt, &key)]));
            pfx(&[key_safe(), plain_safe(&bags)])
        }),
        (
            "unknown-prf-in-encrypted-safe",
            pfx(&[encrypted_safe(
                Scheme::Pbkdf2(2048),
                &[shrouded(Scheme::Pbkdf2Sha3(2048), &key)],
            )]),
        ),
    ]
}
