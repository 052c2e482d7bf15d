//! What a PKCS12 file is encrypted with, read without the password, so that a
//! scheme certpin cannot decrypt is named precisely, and so that schemes the
//! JVM refuses are found before an app restarts with them.

use cms::{content_info::ContentInfo, encrypted_data::EncryptedData};
use der::{Decode, Encode, asn1::OctetString, oid::ObjectIdentifier};
use pkcs12::{
    AuthenticatedSafe, Pfx,
    pbe_params::{EncryptedPrivateKeyInfo, Pbes2Params, Pbkdf2Params, Pkcs12PbeParams},
    safe_bag::SafeContents,
};

use super::reason::{Problem, Reason};

const DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ENCRYPTED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.6");
const SHROUDED_KEY_BAG: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.2");
const PBES2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.13");
const PBKDF2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.12");

/// One encryption algorithm found in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    /// PKCS#5 v2 (PBES2 with PBKDF2): what OpenSSL 3 and Java 17 write.
    Pbes2 {
        prf: String,
        cipher: String,
        iterations: u32,
    },
    /// PKCS#12 v1 password-based encryption with SHA-1 (RC2, RC4, 3DES).
    Pkcs12Pbe { name: String, iterations: i32 },
    /// Anything else, named by OID.
    Other { name: String },
}

impl Encryption {
    pub fn describe(&self) -> String {
        match self {
            Encryption::Pbes2 {
                prf,
                cipher,
                iterations,
            } => format!("PBES2 (PBKDF2-{prf}, {cipher}, {iterations} iterations)"),
            Encryption::Pkcs12Pbe { name, iterations } => {
                format!("{name} ({iterations} iterations)")
            }
            Encryption::Other { name } => name.clone(),
        }
    }

    /// Whether certpin's decoder (pbe.rs) decrypts it.
    fn decryptable(&self) -> bool {
        match self {
            Encryption::Pbes2 { prf, cipher, .. } => {
                !prf.starts_with("unknown")
                    && matches!(
                        cipher.as_str(),
                        "AES-128-CBC" | "AES-192-CBC" | "AES-256-CBC" | "DES-EDE3-CBC"
                    )
            }
            Encryption::Pkcs12Pbe { name, .. } => {
                name == "pbeWithSHAAnd3-KeyTripleDES-CBC" || name == "pbeWithSHAAnd40BitRC2-CBC"
            }
            Encryption::Other { .. } => false,
        }
    }

    /// Why the JVM's PKCS12 KeyStore refuses it, if it does. Established by
    /// loading fixtures with java.security.KeyStore (tests/jvm.rs).
    fn jvm_refusal(&self) -> Option<String> {
        match self {
            Encryption::Pbes2 { cipher, .. }
                if cipher != "AES-128-CBC" && cipher != "AES-256-CBC" =>
            {
                Some(format!(
                    "PBES2 with {cipher}: the JVM's PKCS12 KeyStore accepts only AES-128-CBC and AES-256-CBC in PBES2 \
                     (\"expecting the object identifier for AES cipher\")"
                ))
            }
            _ => None,
        }
    }

    /// The refusal of a scheme certpin does not decrypt.
    pub(crate) fn refusal(&self) -> Problem {
        Problem::new(
            Reason::UnsupportedEncryption,
            format!(
                "the file is encrypted with {}, which certpin cannot decrypt; re-export it with AES-256 \
                 (OpenSSL 3: `openssl pkcs12 -export ...` with default settings) or with 3DES \
                 (`-certpbe PBE-SHA1-3DES -keypbe PBE-SHA1-3DES`)",
                self.describe()
            ),
        )
    }

    pub fn is_modern(&self) -> bool {
        matches!(self, Encryption::Pbes2 { .. })
    }
}

/// Scheme names in the vocabulary of `openssl pkcs12 -info`.
fn pbe_name(oid: ObjectIdentifier) -> Option<&'static str> {
    Some(match oid.to_string().as_str() {
        "1.2.840.113549.1.12.1.1" => "pbeWithSHAAnd128BitRC4",
        "1.2.840.113549.1.12.1.2" => "pbeWithSHAAnd40BitRC4",
        "1.2.840.113549.1.12.1.3" => "pbeWithSHAAnd3-KeyTripleDES-CBC",
        "1.2.840.113549.1.12.1.4" => "pbeWithSHAAnd2-KeyTripleDES-CBC",
        "1.2.840.113549.1.12.1.5" => "pbeWithSHAAnd128BitRC2-CBC",
        "1.2.840.113549.1.12.1.6" => "pbeWithSHAAnd40BitRC2-CBC",
        "1.2.840.113549.1.5.3" => "pbeWithMD5AndDES-CBC",
        "1.2.840.113549.1.5.6" => "pbeWithMD5AndRC2-CBC",
        "1.2.840.113549.1.5.10" => "pbeWithSHA1AndDES-CBC",
        "1.2.840.113549.1.5.11" => "pbeWithSHA1AndRC2-CBC",
        _ => return None,
    })
}

fn prf_name(oid: ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.2.840.113549.2.7" => "HMAC-SHA1".into(),
        "1.2.840.113549.2.8" => "HMAC-SHA224".into(),
        "1.2.840.113549.2.9" => "HMAC-SHA256".into(),
        "1.2.840.113549.2.10" => "HMAC-SHA384".into(),
        "1.2.840.113549.2.11" => "HMAC-SHA512".into(),
        other => format!("unknown PRF {other}"),
    }
}

fn cipher_name(oid: ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "2.16.840.1.101.3.4.1.2" => "AES-128-CBC".into(),
        "2.16.840.1.101.3.4.1.22" => "AES-192-CBC".into(),
        "2.16.840.1.101.3.4.1.42" => "AES-256-CBC".into(),
        "1.2.840.113549.3.7" => "DES-EDE3-CBC".into(),
        "1.3.14.3.2.7" => "DES-CBC".into(),
        "1.2.840.113549.3.2" => "RC2-CBC".into(),
        "1.2.392.200011.61.1.1.1.2" => "CAMELLIA-128-CBC".into(),
        "1.2.392.200011.61.1.1.1.4" => "CAMELLIA-256-CBC".into(),
        other => format!("cipher {other}"),
    }
}

fn mac_name(oid: ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.3.14.3.2.26" => "SHA-1".into(),
        "2.16.840.1.101.3.4.2.4" => "SHA-224".into(),
        "2.16.840.1.101.3.4.2.1" => "SHA-256".into(),
        "2.16.840.1.101.3.4.2.2" => "SHA-384".into(),
        "2.16.840.1.101.3.4.2.3" => "SHA-512".into(),
        other => format!("digest {other}"),
    }
}

pub(crate) fn classify(alg: &spki08::AlgorithmIdentifierOwned) -> Encryption {
    if alg.oid == PBES2 {
        let parsed = alg
            .parameters
            .as_ref()
            .and_then(|p| p.to_der().ok())
            .and_then(|der| Pbes2Params::from_der(&der).ok());
        let Some(params) = parsed else {
            return Encryption::Other {
                name: "PBES2 with unreadable parameters".into(),
            };
        };
        if params.kdf.oid != PBKDF2 {
            return Encryption::Other {
                name: format!(
                    "PBES2 with key derivation {} (only PBKDF2 is supported)",
                    kdf_name(params.kdf.oid)
                ),
            };
        }
        let kdf = params
            .kdf
            .parameters
            .as_ref()
            .and_then(|p| p.to_der().ok())
            .and_then(|der| Pbkdf2Params::from_der(&der).ok());
        let Some(kdf) = kdf else {
            return Encryption::Other {
                name: "PBES2 with unreadable PBKDF2 parameters".into(),
            };
        };
        return Encryption::Pbes2 {
            prf: prf_name(kdf.prf.oid),
            cipher: cipher_name(params.encryption.oid),
            iterations: kdf.iteration_count,
        };
    }
    if let Some(name) = pbe_name(alg.oid) {
        let iterations = alg
            .parameters
            .as_ref()
            .and_then(|p| p.to_der().ok())
            .and_then(|der| Pkcs12PbeParams::from_der(&der).ok())
            .map(|p| p.iterations)
            .unwrap_or(0);
        return Encryption::Pkcs12Pbe {
            name: name.into(),
            iterations,
        };
    }
    Encryption::Other {
        name: format!("encryption algorithm {}", alg.oid),
    }
}

fn kdf_name(oid: ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.3.6.1.4.1.11591.4.11" => "scrypt".into(),
        other => other.to_string(),
    }
}

/// The encryption and integrity protection of a PKCS12 file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scheme {
    /// How the private keys are encrypted (shrouded key bags).
    pub keys: Vec<Encryption>,
    /// How the certificate safe is encrypted, if it is.
    pub certificates: Vec<Encryption>,
    /// MAC digest and iterations, if the file has a MAC.
    pub mac: Option<(String, i32)>,
}

impl Scheme {
    fn all(&self) -> impl Iterator<Item = &Encryption> {
        self.keys.iter().chain(self.certificates.iter())
    }

    /// `modern` when everything is PBES2, `legacy` when nothing is.
    pub fn profile(&self) -> &'static str {
        let mut all = self.all().peekable();
        if all.peek().is_none() {
            return "unencrypted";
        }
        let modern: Vec<bool> = self.all().map(Encryption::is_modern).collect();
        if modern.iter().all(|m| *m) {
            "modern"
        } else if modern.iter().all(|m| !*m) {
            "legacy"
        } else {
            "mixed"
        }
    }

    /// One line, e.g. "keys: PBES2 (...); certificates: ...; MAC: SHA-256 (2048 iterations)".
    pub fn describe(&self) -> String {
        let list = |v: &[Encryption]| {
            let mut names: Vec<String> = v.iter().map(Encryption::describe).collect();
            names.dedup();
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        };
        let mac = match &self.mac {
            Some((d, i)) => format!("HMAC-{d} ({i} iterations)"),
            None => "none".into(),
        };
        format!(
            "keys: {}; certificates: {}; MAC: {}",
            list(&self.keys),
            list(&self.certificates),
            mac
        )
    }

    /// Key-derivation iterations a decode of the file runs, as far as its
    /// unencrypted structure shows: every encrypted bag and safe, and the
    /// MAC. (Bags inside an encrypted safe show only once it is decrypted;
    /// the decode's budget admits them then, before deriving any.)
    pub fn work(&self) -> u64 {
        let bags: u64 = self
            .all()
            .map(|e| match e {
                Encryption::Pbes2 { iterations, .. } => u64::from(*iterations),
                Encryption::Pkcs12Pbe { iterations, .. } => u64::try_from(*iterations).unwrap_or(0),
                Encryption::Other { .. } => 0,
            })
            .sum();
        let mac = self
            .mac
            .as_ref()
            .map_or(0, |(_, i)| u64::try_from(*i).unwrap_or(0));
        bags + mac
    }

    /// The first scheme certpin cannot decrypt, as a refusal.
    pub fn unsupported(&self) -> Option<Problem> {
        self.all()
            .find(|e| !e.decryptable())
            .map(Encryption::refusal)
    }

    /// Causes for which the JVM's KeyStore would refuse the file as it is.
    pub fn jvm_refusals(&self) -> Vec<String> {
        let mut out: Vec<String> = self.all().filter_map(Encryption::jvm_refusal).collect();
        out.dedup();
        out
    }
}

/// Reads the outer structure of a PKCS12 file. Fails only if it is not DER
/// PKCS12 at all; the caller has already sniffed for text.
pub fn inspect(data: &[u8]) -> Result<Scheme, Problem> {
    let corrupt = |what: &str| {
        Problem::new(
            Reason::Corrupt,
            format!(
                "the file is not a readable PKCS12 structure ({what}); it may be truncated or damaged: export it again"
            ),
        )
    };
    let pfx = Pfx::from_der(data).map_err(|e| corrupt(&e.to_string()))?;
    let mut scheme = Scheme {
        mac: pfx
            .mac_data
            .as_ref()
            .map(|m| (mac_name(m.mac.algorithm.oid), m.iterations)),
        ..Scheme::default()
    };
    if pfx.auth_safe.content_type != DATA {
        return Err(Problem::new(
            Reason::UnsupportedEncryption,
            "the file uses public-key (certificate-based) integrity protection; only password-protected PKCS12 \
             files are supported",
        ));
    }
    let content = pfx
        .auth_safe
        .content
        .to_der()
        .ok()
        .and_then(|d| OctetString::from_der(&d).ok())
        .ok_or_else(|| corrupt("authenticated safe is not an OCTET STRING"))?;
    let safes = AuthenticatedSafe::from_der(content.as_bytes())
        .map_err(|e| corrupt(&format!("authenticated safe: {e}")))?;
    for safe in safes {
        inspect_safe(&safe, &mut scheme).map_err(|e| corrupt(&e))?;
    }
    Ok(scheme)
}

fn inspect_safe(safe: &ContentInfo, scheme: &mut Scheme) -> Result<(), String> {
    let der = safe.content.to_der().map_err(|e| e.to_string())?;
    if safe.content_type == ENCRYPTED_DATA {
        let enc = EncryptedData::from_der(&der).map_err(|e| format!("encrypted data: {e}"))?;
        scheme
            .certificates
            .push(classify(&enc.enc_content_info.content_enc_alg));
    } else if safe.content_type == DATA {
        let octets = OctetString::from_der(&der).map_err(|e| format!("data: {e}"))?;
        let bags =
            SafeContents::from_der(octets.as_bytes()).map_err(|e| format!("safe contents: {e}"))?;
        for bag in bags {
            if bag.bag_id == SHROUDED_KEY_BAG {
                // The bag value is [0] EXPLICIT EncryptedPrivateKeyInfo.
                let info =
                    der::asn1::ContextSpecific::<EncryptedPrivateKeyInfo>::from_der(&bag.bag_value)
                        .map_err(|e| format!("shrouded key bag: {e}"))?;
                scheme.keys.push(classify(&info.value.encryption_algorithm));
            }
        }
    } else {
        scheme.certificates.push(Encryption::Other {
            name: format!("content type {}", safe.content_type),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_work_is_every_visible_key_derivation_summed() {
        let pbes2 = |iterations| Encryption::Pbes2 {
            prf: "HMAC-SHA256".into(),
            cipher: "AES-256-CBC".into(),
            iterations,
        };
        let scheme = Scheme {
            // Hundreds of bags: the crafted case.
            keys: vec![pbes2(1_000_000); 300],
            certificates: vec![Encryption::Pkcs12Pbe {
                name: "pbeWithSHAAnd3-KeyTripleDES-CBC".into(),
                iterations: 2048,
            }],
            mac: Some(("SHA-256".into(), 2048)),
        };
        assert_eq!(scheme.work(), 300_000_000 + 2048 + 2048);
        assert!(scheme.work() > crate::pkcs12::MAX_WORK);
        // What OpenSSL 3 writes by default.
        let openssl = Scheme {
            keys: vec![pbes2(2048)],
            certificates: vec![pbes2(2048)],
            mac: Some(("SHA-256".into(), 2048)),
        };
        assert_eq!(openssl.work(), 3 * 2048);
    }
}
