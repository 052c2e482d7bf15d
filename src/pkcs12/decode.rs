//! Decoding a PKCS12 file (or a PEM pair) into one private key and its
//! certificate chain, with a specific reason for every way that can fail.

use base64::Engine as _;
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;
use zeroize::Zeroizing;

use super::budget::Budget;
use super::facts::Facts;
use super::keys::{self, KeyKind};
use super::reason::{Problem, Reason};
use super::scheme::{self, Scheme};
use super::walk;

/// Larger inputs are refused before any parsing: a PKCS12 with a key and a
/// chain is a few KiB; anything near the 1 MiB Secret limit is a mistake.
pub const MAX_INPUT: usize = 256 * 1024;

/// A successfully decoded certificate: the private key, the chain from the
/// end-entity certificate upwards, and the facts about them. Holds key
/// material: never log it (its Debug output is redacted).
#[derive(Clone)]
pub struct Decoded {
    pub(crate) key_pkcs8: Zeroizing<Vec<u8>>,
    /// DER certificates, end-entity first, then its issuers in order, then
    /// any unrelated extra certificates.
    pub(crate) chain: Vec<Vec<u8>>,
    pub key_kind: KeyKind,
    pub facts: Facts,
    /// Why the JVM would refuse the input file as it is (the operator
    /// re-encodes, so these do not stop it; the CLI reports them).
    pub jvm_refusals: Vec<String>,
}

impl std::fmt::Debug for Decoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoded")
            .field("key", &"<redacted>")
            .field("chain_len", &self.chain.len())
            .field("facts", &self.facts)
            .finish()
    }
}

/// A stable cache key over everything a decode depends on: content and
/// password. Decoding is dominated by key derivation (up to `MAX_WORK`
/// iterations), so callers cache `Decoded` values by this key.
pub fn content_key(data: &[u8], password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"certpin-pkcs12-v1\0");
    h.update((data.len() as u64).to_be_bytes());
    h.update(data);
    h.update(password.as_bytes());
    h.finalize().into()
}

/// The cache key of a PEM certificate and key, over their raw bytes.
pub fn pem_content_key(crt: &[u8], key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"certpin-pem-v1\0");
    h.update((crt.len() as u64).to_be_bytes());
    h.update(crt);
    h.update(key);
    h.finalize().into()
}

fn looks_like_text(data: &[u8]) -> bool {
    let sample = &data[..data.len().min(512)];
    !sample.is_empty()
        && sample
            .iter()
            .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
}

/// Recognises the usual mistakes before trying to parse DER.
fn sniff(data: &[u8]) -> Result<(), Problem> {
    if data.is_empty() {
        return Err(Problem::new(Reason::Corrupt, "the file is empty"));
    }
    if data.len() > MAX_INPUT {
        return Err(Problem::new(
            Reason::TooLarge,
            format!(
                "the file is {} bytes; a PKCS12 client certificate is a few KiB, certpin accepts at most {} bytes",
                data.len(),
                MAX_INPUT
            ),
        ));
    }
    if data[0] == 0x30 {
        return Ok(());
    }
    if !looks_like_text(data) {
        return Ok(()); // binary: let the DER parser name the damage
    }
    let text = String::from_utf8_lossy(data);
    let trimmed = text.trim_start();
    if trimmed.starts_with("-----BEGIN") {
        let what = trimmed
            .lines()
            .next()
            .unwrap_or_default()
            .trim_matches('-')
            .trim_start_matches("BEGIN ")
            .to_string();
        return Err(Problem::new(
            Reason::NotPkcs12,
            format!(
                "the file is PEM text ({what}), not PKCS12; put a PEM certificate and key in a kubernetes.io/tls \
                 Secret, or convert them with `openssl pkcs12 -export -in cert.pem -inkey key.pem -out cert.p12`"
            ),
        ));
    }
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(compact.as_bytes()));
    if let Ok(bytes) = decoded
        && bytes.first() == Some(&0x30)
    {
        return Err(Problem::new(
            Reason::Base64Text,
            "the file is base64 text of a binary file, not the PKCS12 itself (a common mistake when filling a \
             Secret: `data` values are base64-decoded once by Kubernetes, so the file was encoded twice); create \
             the Secret with `kubectl create secret generic NAME --from-file=certificate.pfx=FILE`, or decode it \
             first with `base64 -d`",
        ));
    }
    Err(Problem::new(
        Reason::NotPkcs12,
        "the file is text, not a binary PKCS12 (.pfx/.p12) file",
    ))
}

/// Decodes a PKCS12 file with its password, within `MAX_WORK`.
pub fn decode_pkcs12(data: &[u8], password: &str) -> Result<Decoded, Problem> {
    decode_pkcs12_with(data, password, &mut Budget::new())
}

/// Decodes a PKCS12 file with its password, charging every key derivation
/// to `budget` before it runs (see budget.rs): the file's structure is
/// read and refused first if it cannot fit, then each layer as it opens.
pub fn decode_pkcs12_with(
    data: &[u8],
    password: &str,
    budget: &mut Budget,
) -> Result<Decoded, Problem> {
    sniff(data)?;
    let mut scheme = scheme::inspect(data)?;
    if let Some(problem) = scheme.unsupported() {
        return Err(problem);
    }
    let contents = walk::walk(data, password, &mut scheme, budget)?;
    let mut jvm_refusals = scheme.jvm_refusals();
    if !password.is_ascii() {
        jvm_refusals.push(
            "the password contains non-ASCII characters: Java 17's PKCS12 KeyStore refuses them (\"Password is \
             not ASCII\") and Java 21+ derives a different key for legacy files"
                .into(),
        );
    }
    let walk::Contents { mut keys, certs } = contents;
    if keys.len() > 1 {
        return Err(Problem::new(
            Reason::MultiplePrivateKeys,
            format!(
                "the file holds {} private keys; the app presents one client certificate per file, so export \
                 each key with its certificate into its own file",
                keys.len()
            ),
        ));
    }
    let Some(key) = keys.pop() else {
        return Err(Problem::new(
            Reason::NoPrivateKey,
            format!(
                "the file holds {} certificate(s) but no private key; export it again including the key \
                 (e.g. `openssl pkcs12 -export -inkey key.pem ...`)",
                certs.len()
            ),
        ));
    };
    let mut decoded = assemble(key, certs, Some(&scheme))?;
    decoded.jvm_refusals = jvm_refusals;
    Ok(decoded)
}

/// Decodes a PEM certificate chain and key, as found in a `kubernetes.io/tls`
/// Secret (`tls.crt`, `tls.key`).
pub fn decode_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Decoded, Problem> {
    let blocks = ::pem::parse_many(cert_pem).map_err(|e| {
        Problem::new(
            Reason::InvalidPem,
            format!("tls.crt is not valid PEM ({e})"),
        )
    })?;
    let certs: Vec<Vec<u8>> = blocks
        .iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.contents().to_vec())
        .collect();
    let key_blocks = ::pem::parse_many(key_pem).map_err(|e| {
        Problem::new(
            Reason::InvalidPem,
            format!("tls.key is not valid PEM ({e})"),
        )
    })?;
    let key_block = match key_blocks.as_slice() {
        [] => {
            return Err(Problem::new(
                Reason::NoPrivateKey,
                "tls.key holds no PEM block; it must hold the private key",
            ));
        }
        [one] => one,
        many => {
            return Err(Problem::new(
                Reason::MultiplePrivateKeys,
                format!(
                    "tls.key holds {} PEM blocks; it must hold exactly one private key",
                    many.len()
                ),
            ));
        }
    };
    let key = keys::pem_key_to_pkcs8(key_block)?;
    assemble(key, certs, None)
}

/// Finds the certificate that matches the key, orders its chain, and
/// extracts the facts.
fn assemble(
    key: Zeroizing<Vec<u8>>,
    certs: Vec<Vec<u8>>,
    scheme: Option<&Scheme>,
) -> Result<Decoded, Problem> {
    let (kind, public) = keys::public_key_of(&key)?;
    if certs.is_empty() {
        return Err(Problem::new(
            Reason::NoCertificate,
            "the file holds a private key but no certificate; export it again including the certificate",
        ));
    }
    let parsed = parse_all(&certs)?;
    let matching: Vec<usize> = (0..parsed.len())
        .filter(|i| keys::public_key_of_certificate(&parsed[*i]).as_ref() == Some(&public))
        .collect();
    let leaf = leaf_of(&parsed, &matching)?;
    let (order, chain_len) = chain_order(&parsed, leaf, &matching);
    let facts = Facts::extract(&parsed[leaf], &certs[leaf], chain_len, scheme);
    let chain = order.into_iter().map(|i| certs[i].clone()).collect();
    Ok(Decoded {
        key_pkcs8: key,
        chain,
        key_kind: kind,
        facts,
        jvm_refusals: Vec::new(),
    })
}

fn parse_all(certs: &[Vec<u8>]) -> Result<Vec<X509Certificate<'_>>, Problem> {
    certs
        .iter()
        .map(|der| {
            parse_x509_certificate(der).map(|(_, c)| c).map_err(|e| {
                Problem::new(
                    Reason::Corrupt,
                    format!("a certificate in the file cannot be parsed ({e})"),
                )
            })
        })
        .collect()
}

/// Of the certificates for the key (`matching`), the one to present:
/// with a renewal kept beside the old one, the one valid longest.
fn leaf_of(parsed: &[X509Certificate<'_>], matching: &[usize]) -> Result<usize, Problem> {
    let leaf = matching
        .iter()
        .max_by_key(|i| parsed[**i].validity().not_after.timestamp());
    leaf.copied().ok_or_else(|| {
        let subjects: Vec<String> = parsed.iter().map(|c| c.subject().to_string()).collect();
        Problem::new(
            Reason::KeyMismatch,
            format!(
                "no certificate in the file belongs to its private key (certificates: {}); export the key together \
                 with its own certificate",
                subjects.join("; ")
            ),
        )
    })
}

/// The leaf, then its issuers by subject, then the unrelated ones (other
/// certificates for the key are dropped); and how long the chain is.
fn chain_order(
    parsed: &[X509Certificate<'_>],
    leaf: usize,
    matching: &[usize],
) -> (Vec<usize>, usize) {
    let mut order = vec![leaf];
    loop {
        let current = &parsed[*order.last().unwrap_or(&leaf)];
        if current.subject() == current.issuer() {
            break;
        }
        let next = (0..parsed.len())
            .find(|i| !order.contains(i) && parsed[*i].subject() == current.issuer());
        match next {
            Some(i) => order.push(i),
            None => break,
        }
    }
    let chain_len = order.len();
    for i in 0..parsed.len() {
        if !order.contains(&i) && !matching.contains(&i) {
            order.push(i);
        }
    }
    (order, chain_len)
}
