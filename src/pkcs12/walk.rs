//! certpin's own walk through a PKCS12 file, layer by layer: every layer is
//! read and costed before any of its key derivations runs, and every
//! derivation is charged to the [`Budget`] before it runs.
//!
//! - The outer layer: the MAC, each encrypted safe, each shrouded key in an
//!   unencrypted safe. Admitted as a whole, then the MAC is verified.
//! - An encrypted safe's contents, once decrypted: its shrouded keys are
//!   admitted as a whole before any of them is decrypted.
//! - Secret bags are never decrypted (certpin has no use for them), but a
//!   scheme certpin does not run is refused there as anywhere else.
//! - Nested SafeContents bags are refused: no writer certpin knows makes
//!   them, and they would make the depth the file's choice.
//! - CRL bags and unknown bag types are skipped, as p12-keystore did.

use cms::{content_info::ContentInfo, encrypted_data::EncryptedData};
use der::{
    Decode, Encode,
    asn1::{ContextSpecific, OctetString},
    oid::ObjectIdentifier,
};
use pkcs12::{
    AuthenticatedSafe, CertBag, Pfx,
    pbe_params::EncryptedPrivateKeyInfo,
    safe_bag::{SafeBag, SafeContents},
};
use zeroize::Zeroizing;

use super::budget::Budget;
use super::pbe::{Failure, Password, Pbe, mac_digest, verify_mac};
use super::reason::{Problem, Reason};
use super::scheme::{Scheme, classify};

const DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ENCRYPTED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.6");
const KEY_BAG: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.1");
const SHROUDED_KEY_BAG: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.2");
const CERT_BAG: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.3");
const SECRET_BAG: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.5");
const SAFE_CONTENTS_BAG: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.6");
const X509_CERTIFICATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.22.1");

/// The keys (PKCS#8 DER) and certificates (DER) a file holds, in order.
#[derive(Default)]
pub(crate) struct Contents {
    pub keys: Vec<Zeroizing<Vec<u8>>>,
    pub certs: Vec<Vec<u8>>,
}

enum Bag {
    Key(Zeroizing<Vec<u8>>),
    Shrouded(Pbe, Vec<u8>),
    Cert(Vec<u8>),
}

enum Safe {
    Plain(Vec<Bag>),
    Encrypted(Pbe, Vec<u8>),
}

fn corrupt(what: &str) -> Problem {
    Problem::new(
        Reason::Corrupt,
        format!("the file's content cannot be read ({what}); it may be damaged: export it again"),
    )
}

/// Where a bag list came from: damage in decrypted content may be a wrong
/// password (the decryption produced garbage), in plain content it is not.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Plain,
    Decrypted,
}

impl Origin {
    fn malformed(self, what: &str) -> Failure {
        match self {
            Origin::Plain => Failure::Refused(corrupt(what)),
            Origin::Decrypted => Failure::Undecryptable,
        }
    }
}

/// Decodes the keys and certificates of `data`, charging `budget`; adds the
/// schemes of inner layers to `scheme` as they become visible.
pub(crate) fn walk(
    data: &[u8],
    password: &str,
    scheme: &mut Scheme,
    budget: &mut Budget,
) -> Result<Contents, Problem> {
    let pfx = Pfx::from_der(data).map_err(|e| corrupt(&e.to_string()))?;
    let has_mac = pfx.mac_data.is_some();
    let settle = |f: Failure| match f {
        Failure::Refused(p) => p,
        Failure::Undecryptable if has_mac => corrupt("decrypted content is not valid"),
        Failure::Undecryptable => wrong_password(),
    };
    let safes = read_safes(&pfx, scheme).map_err(settle)?;
    let mut parts: Vec<u64> = pfx
        .mac_data
        .iter()
        .map(|m| u64::try_from(m.iterations).unwrap_or(1))
        .collect();
    parts.extend(safes.iter().flat_map(safe_costs));
    budget.admit(&parts, || scheme.describe())?;
    let password = Password::new(password);
    check_mac(&pfx, &password, budget)?;
    let mut out = Contents::default();
    for safe in safes {
        let bags = match safe {
            Safe::Plain(bags) => bags,
            Safe::Encrypted(pbe, ciphertext) => {
                open_safe(&pbe, &ciphertext, &password, scheme, budget).map_err(settle)?
            }
        };
        for bag in bags {
            open_bag(bag, &password, budget, &mut out).map_err(settle)?;
        }
    }
    Ok(out)
}

fn wrong_password() -> Problem {
    Problem::new(
        Reason::WrongPassword,
        "the password does not open the file (integrity check failed); check the password key of the \
         Secret, including trailing newlines",
    )
}

fn safe_costs(safe: &Safe) -> Vec<u64> {
    match safe {
        Safe::Encrypted(pbe, _) => vec![pbe.iterations()],
        Safe::Plain(bags) => bag_costs(bags),
    }
}

fn bag_costs(bags: &[Bag]) -> Vec<u64> {
    bags.iter()
        .filter_map(|b| match b {
            Bag::Shrouded(pbe, _) => Some(pbe.iterations()),
            _ => None,
        })
        .collect()
}

fn check_mac(pfx: &Pfx, password: &Password, budget: &mut Budget) -> Result<(), Problem> {
    let Some(mac) = &pfx.mac_data else {
        return Ok(());
    };
    let Some(digest) = mac_digest(mac.mac.algorithm.oid) else {
        return Err(Problem::new(
            Reason::UnsupportedEncryption,
            format!(
                "the file's integrity check uses {}, which certpin cannot verify",
                mac.mac.algorithm.oid
            ),
        ));
    };
    let ok = verify_mac(
        digest,
        password,
        mac.mac_salt.as_bytes(),
        mac.iterations,
        pfx.auth_safe.content.value(),
        mac.mac.digest.as_bytes(),
        budget,
    )?;
    if ok { Ok(()) } else { Err(wrong_password()) }
}

fn read_safes(pfx: &Pfx, scheme: &mut Scheme) -> Result<Vec<Safe>, Failure> {
    if pfx.auth_safe.content_type != DATA {
        return Err(Failure::Refused(Problem::new(
            Reason::UnsupportedEncryption,
            "the file uses public-key (certificate-based) integrity protection; only password-protected \
             PKCS12 files are supported",
        )));
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
    safes.iter().map(|s| read_safe(s, scheme)).collect()
}

fn read_safe(safe: &ContentInfo, scheme: &mut Scheme) -> Result<Safe, Failure> {
    let der = safe.content.to_der().map_err(|e| corrupt(&e.to_string()))?;
    if safe.content_type == DATA {
        let octets = OctetString::from_der(&der).map_err(|e| corrupt(&format!("data: {e}")))?;
        return read_bags(octets.as_bytes(), Origin::Plain, scheme).map(Safe::Plain);
    }
    if safe.content_type != ENCRYPTED_DATA {
        return Err(Failure::Refused(Problem::new(
            Reason::UnsupportedEncryption,
            format!(
                "the file holds a safe of content type {}, which certpin cannot read",
                safe.content_type
            ),
        )));
    }
    let enc =
        EncryptedData::from_der(&der).map_err(|e| corrupt(&format!("encrypted data: {e}")))?;
    if enc.version != cms::content_info::CmsVersion::V0 {
        return Err(Failure::Refused(corrupt("encrypted data version")));
    }
    let alg = &enc.enc_content_info.content_enc_alg;
    let pbe = Pbe::parse(alg).ok_or_else(|| classify(alg).refusal())?;
    let ciphertext = enc
        .enc_content_info
        .encrypted_content
        .map(|c| c.as_bytes().to_vec())
        .unwrap_or_default();
    Ok(Safe::Encrypted(pbe, ciphertext))
}

/// Decrypts a safe and reads its bags; admits their derivations as a whole
/// before any of them runs.
fn open_safe(
    pbe: &Pbe,
    ciphertext: &[u8],
    password: &Password,
    scheme: &mut Scheme,
    budget: &mut Budget,
) -> Result<Vec<Bag>, Failure> {
    let plain = pbe.decrypt(password, ciphertext, budget)?;
    let bags = read_bags(&plain, Origin::Decrypted, scheme)?;
    budget.admit(&bag_costs(&bags), || {
        format!("{} (inside an encrypted safe)", scheme.describe())
    })?;
    Ok(bags)
}

fn read_bags(der: &[u8], origin: Origin, scheme: &mut Scheme) -> Result<Vec<Bag>, Failure> {
    let bags = SafeContents::from_der(der)
        .map_err(|e| origin.malformed(&format!("safe contents: {e}")))?;
    let mut out = Vec::new();
    for bag in &bags {
        if let Some(b) = read_bag(bag, origin, scheme)? {
            out.push(b);
        }
    }
    Ok(out)
}

fn read_bag(bag: &SafeBag, origin: Origin, scheme: &mut Scheme) -> Result<Option<Bag>, Failure> {
    let malformed = |what: &str, e: der::Error| origin.malformed(&format!("{what}: {e}"));
    match bag.bag_id {
        SHROUDED_KEY_BAG => {
            let info = ContextSpecific::<EncryptedPrivateKeyInfo>::from_der(&bag.bag_value)
                .map_err(|e| malformed("shrouded key bag", e))?
                .value;
            let alg = &info.encryption_algorithm;
            if origin == Origin::Decrypted {
                // Not visible to scheme::inspect: named here for the facts.
                scheme.keys.push(classify(alg));
            }
            let pbe = Pbe::parse(alg).ok_or_else(|| classify(alg).refusal())?;
            Ok(Some(Bag::Shrouded(
                pbe,
                info.encrypted_data.as_bytes().to_vec(),
            )))
        }
        KEY_BAG => {
            let any = ContextSpecific::<der::Any>::from_der(&bag.bag_value)
                .map_err(|e| malformed("key bag", e))?;
            let der = any.value.to_der().map_err(|e| malformed("key bag", e))?;
            let der = Zeroizing::new(der);
            check_pkcs8(&der).map_err(|_| origin.malformed("key bag: not a PKCS#8 key"))?;
            Ok(Some(Bag::Key(der)))
        }
        CERT_BAG => {
            let cert = ContextSpecific::<CertBag>::from_der(&bag.bag_value)
                .map_err(|e| malformed("certificate bag", e))?
                .value;
            if cert.cert_id != X509_CERTIFICATE {
                return Err(Failure::Refused(corrupt(&format!(
                    "certificate bag of type {}, not X.509",
                    cert.cert_id
                ))));
            }
            Ok(Some(Bag::Cert(cert.cert_value.as_bytes().to_vec())))
        }
        SECRET_BAG => {
            refuse_secret_scheme(&bag.bag_value)?;
            Ok(None)
        }
        SAFE_CONTENTS_BAG => Err(Failure::Refused(Problem::new(
            Reason::UnsupportedEncryption,
            "the file nests SafeContents bags, which no PKCS12 writer certpin knows makes; export it again \
             with OpenSSL or keytool",
        ))),
        _ => Ok(None),
    }
}

/// Secret bags are never decrypted; one encrypted (as Java writes them:
/// secretValue is an OCTET STRING holding an EncryptedPrivateKeyInfo) with
/// a scheme certpin does not run is refused, as it would be anywhere else.
fn refuse_secret_scheme(bag_value: &[u8]) -> Result<(), Failure> {
    #[derive(der::Sequence)]
    struct SecretBag {
        secret_type_id: ObjectIdentifier,
        #[asn1(context_specific = "0")]
        secret_value: der::Any,
    }
    let Ok(secret) = ContextSpecific::<SecretBag>::from_der(bag_value) else {
        return Ok(());
    };
    let inner = secret.value.secret_value;
    let epki = inner
        .decode_as::<OctetString>()
        .ok()
        .and_then(|o| EncryptedPrivateKeyInfo::from_der(o.as_bytes()).ok())
        .or_else(|| inner.decode_as::<EncryptedPrivateKeyInfo>().ok());
    match epki {
        Some(info) if Pbe::parse(&info.encryption_algorithm).is_none() => Err(Failure::Refused(
            classify(&info.encryption_algorithm).refusal(),
        )),
        _ => Ok(()),
    }
}

fn check_pkcs8(der: &[u8]) -> Result<(), ()> {
    pkcs8_stable::PrivateKeyInfo::try_from(der)
        .map(|_| ())
        .map_err(|_| ())
}

fn open_bag(
    bag: Bag,
    password: &Password,
    budget: &mut Budget,
    out: &mut Contents,
) -> Result<(), Failure> {
    match bag {
        Bag::Key(der) => out.keys.push(der),
        Bag::Cert(der) => out.certs.push(der),
        Bag::Shrouded(pbe, ciphertext) => {
            let key = pbe.decrypt(password, &ciphertext, budget)?;
            check_pkcs8(&key).map_err(|_| Failure::Undecryptable)?;
            out.keys.push(key);
        }
    }
    Ok(())
}
