//! CA bundles (pure): the certificates an app trusts for its outgoing
//! connections, as trust-manager, cert-manager (`ca.crt`) or a partner
//! hand them over: PEM with any number of certificates and any text
//! between them, or a single DER certificate.
//!
//! The Mendix runtime reads its `CACertificates` setting as a list of
//! files holding one certificate each, so each certificate is rendered to
//! a file of its own, named after its fingerprint (the same certificate in
//! two bundles is one file). A private key anywhere in a bundle refuses the
//! bundle: a trust bundle that carries a key has leaked it, and certpin
//! would otherwise mount it into every pod. Errors name the block, never
//! its content.

use chrono::{DateTime, Utc};
use x509_parser::prelude::*;

/// A bundle larger than this is refused before it is parsed (a Secret or
/// ConfigMap holds at most 1 MiB anyway).
pub const MAX_BUNDLE_BYTES: usize = 1024 * 1024;
/// At most this many blocks per bundle (public root bundles hold ~150).
pub const MAX_BLOCKS: usize = 1000;

/// One CA certificate of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaCertificate {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// RFC 4514.
    pub subject: String,
    /// SHA-256 of the DER, colon-separated upper-case hex (as the client
    /// certificates' rows show it).
    pub sha256_fingerprint: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

impl CaCertificate {
    /// The file the certificate is rendered to: named after its content, so
    /// a file a running pod reads never changes.
    pub fn file_name(&self) -> String {
        let hex: String = self
            .sha256_fingerprint
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(16)
            .collect();
        format!("ca-{}.crt", hex.to_ascii_lowercase())
    }

    /// The certificate alone, PEM.
    pub fn pem(&self) -> String {
        ::pem::encode(&::pem::Pem::new("CERTIFICATE", self.der.clone()))
    }

    /// What is wrong with it at `now` but does not refuse it, as
    /// `kind: detail`. Expired and not-yet-valid CAs are warnings, not
    /// refusals: public bundles routinely carry expired roots, and a
    /// refusal would hold back every other change of the set.
    pub fn warnings(&self, now: DateTime<Utc>) -> Vec<String> {
        if now > self.not_after {
            vec![format!(
                "expired: the CA certificate ({}) expired on {}; servers whose chain ends at it are refused",
                self.subject,
                self.not_after.to_rfc3339()
            )]
        } else if now < self.not_before {
            vec![format!(
                "not-yet-valid: the CA certificate ({}) is valid only from {}",
                self.subject,
                self.not_before.to_rfc3339()
            )]
        } else {
            Vec::new()
        }
    }
}

/// Why a bundle cannot be used. Never carries the bundle's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaError {
    #[error(
        "block {block} of the bundle is a private key ({kind}); a CA bundle must hold certificates only: \
         remove the key, and treat it as exposed"
    )]
    PrivateKey { block: usize, kind: String },
    #[error("block {block} of the bundle is a {label:?} block, not a certificate")]
    NotACertificate { block: usize, label: String },
    #[error("block {block} of the bundle is not a valid X.509 certificate ({detail})")]
    Corrupt { block: usize, detail: String },
    #[error("the bundle is neither PEM nor a DER certificate")]
    Unreadable,
    #[error("the bundle holds no certificate")]
    Empty,
    #[error("the bundle is too large ({0} bytes or blocks; at most 1 MiB and {MAX_BLOCKS} blocks)")]
    TooLarge(usize),
}

impl CaError {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            CaError::PrivateKey { .. } => "PrivateKeyInBundle",
            CaError::NotACertificate { .. } | CaError::Unreadable => "NotACertificate",
            CaError::Corrupt { .. } => "CorruptCertificate",
            CaError::Empty => "EmptyBundle",
            CaError::TooLarge(_) => "BundleTooLarge",
        }
    }
}

const BEGIN: &str = "-----BEGIN ";

/// The labels of the PEM blocks, in order, read from the text alone: a key
/// is found even in a block too broken to decode. A label is what RFC 7468
/// allows (upper-case letters, digits, spaces), cut at anything else, so
/// that a malformed BEGIN line never carries what follows it into a
/// message.
fn labels(text: &str) -> Vec<String> {
    text.match_indices(BEGIN)
        .map(|(i, _)| {
            text[i + BEGIN.len()..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == ' ')
                .take(40)
                .collect::<String>()
                .trim()
                .to_string()
        })
        .collect()
}

/// The certificates of a bundle, in order, each once (by fingerprint).
pub fn parse_bundle(data: &[u8]) -> Result<Vec<CaCertificate>, CaError> {
    parse(data, true)
}

/// The base64 text of a bundle (the Mendix buildpack's
/// CERTIFICATE_AUTHORITIES takes PEM or its base64), decoded.
fn base64_text(data: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let compact: Vec<u8> = data
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .ok()
}

fn parse(data: &[u8], base64_allowed: bool) -> Result<Vec<CaCertificate>, CaError> {
    if data.len() > MAX_BUNDLE_BYTES {
        return Err(CaError::TooLarge(data.len()));
    }
    if data.iter().all(u8::is_ascii_whitespace) {
        return Err(CaError::Empty);
    }
    let text = String::from_utf8_lossy(data);
    let found = labels(&text);
    let certificates = if found.is_empty() {
        match der_certificate(data) {
            Err(CaError::Unreadable) if base64_allowed => match base64_text(data) {
                Some(decoded) => return parse(&decoded, false),
                None => return Err(CaError::Unreadable),
            },
            other => vec![other?],
        }
    } else {
        if found.len() > MAX_BLOCKS {
            return Err(CaError::TooLarge(found.len()));
        }
        if let Some((i, label)) = found
            .iter()
            .enumerate()
            .find(|(_, l)| l.contains("PRIVATE KEY"))
        {
            return Err(CaError::PrivateKey {
                block: i + 1,
                kind: label.clone(),
            });
        }
        pem_certificates(&text, &found)?
    };
    let mut out: Vec<CaCertificate> = Vec::with_capacity(certificates.len());
    for c in certificates {
        if !out
            .iter()
            .any(|o| o.sha256_fingerprint == c.sha256_fingerprint)
        {
            out.push(c);
        }
    }
    if out.is_empty() {
        return Err(CaError::Empty);
    }
    Ok(out)
}

fn pem_certificates(text: &str, found: &[String]) -> Result<Vec<CaCertificate>, CaError> {
    // The PEM parser's errors quote the input (a mismatched END line, a
    // header): only a fixed text is reported.
    let blocks = ::pem::parse_many(text.as_bytes()).map_err(|_| CaError::Corrupt {
        block: 0,
        detail: "not valid PEM (a block's BEGIN and END lines, or its base64, are damaged)".into(),
    })?;
    if blocks.len() != found.len() {
        // A BEGIN line without its END: the block is cut off.
        return Err(CaError::Corrupt {
            block: blocks.len() + 1,
            detail: "a PEM block without its END line".into(),
        });
    }
    blocks
        .iter()
        .enumerate()
        .map(|(i, b)| match b.tag() {
            // OpenSSL's "trusted certificate" is a certificate followed by
            // trust settings; the certificate alone is what the runtime reads.
            "CERTIFICATE" | "TRUSTED CERTIFICATE" | "X509 CERTIFICATE" => {
                certificate(b.contents(), i + 1, b.tag() != "CERTIFICATE")
            }
            _ => Err(CaError::NotACertificate {
                block: i + 1,
                label: found[i].clone(),
            }),
        })
        .collect()
}

fn der_certificate(data: &[u8]) -> Result<CaCertificate, CaError> {
    if let Some(kind) = der_private_key(data) {
        return Err(CaError::PrivateKey {
            block: 1,
            kind: kind.into(),
        });
    }
    match X509Certificate::from_der(data) {
        Ok(_) => certificate(data, 1, false),
        Err(_) => Err(CaError::Unreadable),
    }
}

/// Whether DER bytes are a private key, and which kind.
fn der_private_key(data: &[u8]) -> Option<&'static str> {
    use pkcs8_stable::der::Decode;
    if pkcs8_stable::PrivateKeyInfo::from_der(data).is_ok() {
        return Some("PKCS#8 private key, DER");
    }
    if pkcs1::RsaPrivateKey::from_der(data).is_ok() {
        return Some("PKCS#1 RSA private key, DER");
    }
    if sec1::EcPrivateKey::from_der(data).is_ok() {
        return Some("SEC1 EC private key, DER");
    }
    None
}

fn ts(t: ASN1Time) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or_default()
}

/// One certificate; with `prefix`, trailing bytes after it are allowed.
fn certificate(der: &[u8], block: usize, prefix: bool) -> Result<CaCertificate, CaError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| CaError::Corrupt {
        block,
        detail: e.to_string(),
    })?;
    if !prefix && !rest.is_empty() {
        return Err(CaError::Corrupt {
            block,
            detail: format!("{} bytes after the certificate", rest.len()),
        });
    }
    let der = &der[..der.len() - rest.len()];
    Ok(CaCertificate {
        der: der.to_vec(),
        subject: cert.subject().to_string(),
        sha256_fingerprint: crate::pkcs12::fingerprint(der),
        not_before: ts(cert.validity().not_before),
        not_after: ts(cert.validity().not_after),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/ca/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Every fixture gives the outcome the manifest (written by the
    /// generator, from openssl's own counts) says.
    #[test]
    fn every_fixture_parses_as_its_manifest_says() {
        let manifest = String::from_utf8(fixture("manifest.tsv")).expect("text");
        let mut seen = 0;
        for line in manifest.lines().skip(1) {
            let f: Vec<&str> = line.split('\t').collect();
            let (file, expect, distinct) = (f[0], f[1], f[3]);
            let got = parse_bundle(&fixture(file));
            match expect {
                e if e.starts_with("ok") => {
                    let certs = got.unwrap_or_else(|e| panic!("{file}: {e}"));
                    assert_eq!(certs.len().to_string(), distinct, "{file}");
                }
                reason => {
                    let e = got.expect_err(file);
                    assert_eq!(e.reason(), reason, "{file}: {e}");
                }
            }
            seen += 1;
        }
        assert!(seen >= 12, "only {seen} fixtures");
    }

    #[test]
    fn a_bundle_with_text_and_a_duplicate_gives_each_certificate_once_in_order() {
        let certs = parse_bundle(&fixture("partner-bundle.pem")).expect("a bundle");
        let root = parse_bundle(&fixture("partner-root.crt")).expect("the root");
        let der = parse_bundle(&fixture("partner-root.der")).expect("the root, DER");
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0], root[0]);
        assert_eq!(der, root);
        assert!(
            certs[0].subject.contains("partner root CA"),
            "{}",
            certs[0].subject
        );
        assert!(
            certs[1].subject.contains("intermediate"),
            "{}",
            certs[1].subject
        );
        assert_ne!(certs[0].file_name(), certs[1].file_name());
        // The rendered file is the certificate alone and reads back as it.
        let again = parse_bundle(certs[1].pem().as_bytes()).expect("its own PEM");
        assert_eq!(again, vec![certs[1].clone()]);
    }

    #[test]
    fn a_key_is_named_by_its_block_and_never_echoed() {
        for file in ["bundle-with-key.pem", "bundle-with-rsa-key.pem", "key.der"] {
            let data = fixture(file);
            let e = parse_bundle(&data).expect_err(file);
            assert_eq!(e.reason(), "PrivateKeyInBundle", "{file}");
            let text = e.to_string();
            // No line of the key's base64 (nor any 16 bytes of it) in the message.
            let body = String::from_utf8_lossy(&data);
            for line in body
                .lines()
                .filter(|l| l.len() >= 16 && !l.starts_with("-----"))
            {
                let start: String = line.chars().take(16).collect();
                assert!(!text.contains(&start), "{file}: {text}");
            }
        }
        let e = parse_bundle(&fixture("bundle-with-key.pem")).expect_err("a key");
        assert!(matches!(e, CaError::PrivateKey { block: 2, .. }), "{e:?}");
    }

    #[test]
    fn a_malformed_begin_line_or_end_line_never_carries_the_key_into_the_message() {
        let root = String::from_utf8(fixture("partner-root.crt")).expect("text");
        let key_body = "MHcCAQEEIGxDSECRETSECRETSECRETSECRETSECRETAoGCCqGSM49";
        let inputs = [
            // No closing dashes on the BEGIN line.
            format!("-----BEGIN EC PRIVATE KEY\n{key_body}\n-----END EC PRIVATE KEY-----\n{root}"),
            // A nameless BEGIN and a mismatched END around the key.
            format!("-----BEGIN \n{key_body}\n-----END PRIVATE KEY-----\n{root}"),
            format!(
                "{root}-----BEGIN CERTIFICATE-----\n{key_body}\n-----END RSA PRIVATE KEY-----\n"
            ),
        ];
        for input in inputs {
            let e = parse_bundle(input.as_bytes()).expect_err("refused");
            let text = format!("{e} {e:?}");
            assert!(!text.contains("SECRET"), "{text}");
        }
    }

    #[test]
    fn expired_and_not_yet_valid_cas_are_warnings() {
        let now = Utc::now();
        let expired = parse_bundle(&fixture("expired-ca.crt")).expect("parses");
        assert!(expired[0].warnings(now)[0].starts_with("expired:"));
        let later = parse_bundle(&fixture("not-yet-valid-ca.crt")).expect("parses");
        assert!(later[0].warnings(now)[0].starts_with("not-yet-valid:"));
        let root = parse_bundle(&fixture("partner-root.crt")).expect("parses");
        assert!(root[0].warnings(now).is_empty());
    }

    #[test]
    fn the_base64_text_of_a_bundle_reads_as_the_bundle() {
        use base64::Engine as _;
        let pem = fixture("partner-bundle.pem");
        let text = base64::engine::general_purpose::STANDARD.encode(&pem);
        assert_eq!(parse_bundle(text.as_bytes()), parse_bundle(&pem));
        let der = base64::engine::general_purpose::STANDARD.encode(fixture("partner-root.der"));
        assert_eq!(parse_bundle(der.as_bytes()).map(|c| c.len()), Ok(1));
        // Base64 of base64 is not unwrapped twice.
        let twice = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
        assert_eq!(
            parse_bundle(twice.as_bytes()).expect_err("twice").reason(),
            "NotACertificate"
        );
    }

    #[test]
    fn garbage_truncation_and_other_blocks_are_refused() {
        assert_eq!(
            parse_bundle(b" \n").expect_err("blank").reason(),
            "EmptyBundle"
        );
        assert_eq!(
            parse_bundle(b"").expect_err("empty").reason(),
            "EmptyBundle"
        );
        let cut = String::from_utf8(fixture("partner-root.crt")).expect("text");
        let cut = &cut[..cut.len() / 2];
        assert_eq!(
            parse_bundle(cut.as_bytes()).expect_err("cut").reason(),
            "CorruptCertificate"
        );
        let crl = "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n";
        assert_eq!(
            parse_bundle(crl.as_bytes()).expect_err("a CRL"),
            CaError::NotACertificate {
                block: 1,
                label: "X509 CRL".into()
            }
        );
        let big = vec![b'a'; MAX_BUNDLE_BYTES + 1];
        assert_eq!(
            parse_bundle(&big).expect_err("big").reason(),
            "BundleTooLarge"
        );
    }
}
