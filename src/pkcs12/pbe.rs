//! Password-based decryption and the PKCS#12 MAC, for exactly the schemes
//! certpin reads: PBES2 (PBKDF2 with HMAC-SHA-1/-2; AES-CBC or
//! DES-EDE3-CBC), pbeWithSHAAnd3-KeyTripleDES-CBC and
//! pbeWithSHAAnd40BitRC2-CBC. Every key derivation goes through the
//! [`Budget`]; anything else does not parse into a [`Pbe`] and so never
//! runs.

use cbc::cipher::{BlockCipherDecrypt, BlockModeDecrypt, KeyInit, KeyIvInit, block_padding::Pkcs7};
use der::{Decode, Encode, asn1::OctetString, oid::ObjectIdentifier};
use hmac::Mac as _;
use pkcs12::pbe_params::{Pbes2Params, Pbkdf2Params, Pkcs12PbeParams};
use spki08::AlgorithmIdentifierOwned;
use zeroize::Zeroizing;

use super::budget::{Budget, Hash, Purpose, with_hash};
use super::reason::{Problem, Reason};

const PBES2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.13");
const PBKDF2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.12");
const PBE_SHA1_3DES: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.1.3");
const PBE_SHA1_RC2_40: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.1.6");

/// Why a decryption gave nothing usable.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A verdict that does not depend on the password.
    Refused(Problem),
    /// Bad padding or unreadable plaintext: a wrong password when the file
    /// has no MAC to say so first, damage when it has.
    Undecryptable,
}

impl From<Problem> for Failure {
    fn from(p: Problem) -> Self {
        Failure::Refused(p)
    }
}

/// The password in both encodings the schemes use.
pub(crate) struct Password {
    utf8: Zeroizing<Vec<u8>>,
    /// BMPString with its terminating NUL, for the PKCS#12 KDF; `None` when
    /// the password has characters outside the BMP.
    bmp: Option<Zeroizing<Vec<u8>>>,
}

impl Password {
    pub(crate) fn new(password: &str) -> Self {
        let bmp = der::asn1::BmpString::from_utf8(password).ok().map(|b| {
            let mut v = Zeroizing::new(b.into_bytes().to_vec());
            v.extend([0, 0]);
            v
        });
        Password {
            utf8: Zeroizing::new(password.as_bytes().to_vec()),
            bmp,
        }
    }

    fn bmp(&self) -> Result<&[u8], Problem> {
        self.bmp.as_deref().map(Vec::as_slice).ok_or_else(|| {
            Problem::new(
                Reason::WrongPassword,
                "the password does not open the file: it has characters outside the Basic Multilingual \
                 Plane, which a PKCS12 password cannot hold",
            )
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Cipher {
    Aes128,
    Aes192,
    Aes256,
    DesEde3,
    Rc2_40,
}

impl Cipher {
    fn key_len(self) -> usize {
        match self {
            Cipher::Aes128 => 16,
            Cipher::Aes192 | Cipher::DesEde3 => 24,
            Cipher::Aes256 => 32,
            Cipher::Rc2_40 => 5,
        }
    }

    fn from_pbes2(oid: ObjectIdentifier) -> Option<Cipher> {
        Some(match oid.to_string().as_str() {
            "2.16.840.1.101.3.4.1.2" => Cipher::Aes128,
            "2.16.840.1.101.3.4.1.22" => Cipher::Aes192,
            "2.16.840.1.101.3.4.1.42" => Cipher::Aes256,
            "1.2.840.113549.3.7" => Cipher::DesEde3,
            _ => return None,
        })
    }
}

fn prf(oid: ObjectIdentifier) -> Option<Hash> {
    Some(match oid.to_string().as_str() {
        "1.2.840.113549.2.7" => Hash::Sha1,
        "1.2.840.113549.2.8" => Hash::Sha224,
        "1.2.840.113549.2.9" => Hash::Sha256,
        "1.2.840.113549.2.10" => Hash::Sha384,
        "1.2.840.113549.2.11" => Hash::Sha512,
        _ => return None,
    })
}

/// The MAC digests of RFC 7292 (and its SHA-2 successors).
pub(crate) fn mac_digest(oid: ObjectIdentifier) -> Option<Hash> {
    Some(match oid.to_string().as_str() {
        "1.3.14.3.2.26" => Hash::Sha1,
        "2.16.840.1.101.3.4.2.4" => Hash::Sha224,
        "2.16.840.1.101.3.4.2.1" => Hash::Sha256,
        "2.16.840.1.101.3.4.2.2" => Hash::Sha384,
        "2.16.840.1.101.3.4.2.3" => Hash::Sha512,
        "2.16.840.1.101.3.4.2.5" => Hash::Sha512_224,
        "2.16.840.1.101.3.4.2.6" => Hash::Sha512_256,
        _ => return None,
    })
}

#[derive(Debug, Clone)]
enum Kdf {
    Pbkdf2 {
        prf: Hash,
        salt: Vec<u8>,
        iterations: u32,
    },
    /// RFC 7292 appendix B with SHA-1, deriving the IV too.
    Pkcs12 { salt: Vec<u8>, iterations: i32 },
}

/// One password-based encryption certpin can run, with its parameters.
#[derive(Debug, Clone)]
pub(crate) struct Pbe {
    kdf: Kdf,
    cipher: Cipher,
    /// PBES2 carries its IV; the PKCS#12 schemes derive it.
    iv: Vec<u8>,
}

fn params<T: for<'a> Decode<'a>>(alg: &AlgorithmIdentifierOwned) -> Option<T> {
    let der = alg.parameters.as_ref()?.to_der().ok()?;
    T::from_der(&der).ok()
}

impl Pbe {
    /// `None` for any scheme, KDF, PRF or cipher certpin does not run
    /// (scrypt among them), or unreadable parameters.
    pub(crate) fn parse(alg: &AlgorithmIdentifierOwned) -> Option<Pbe> {
        if alg.oid == PBES2 {
            return Pbe::parse_pbes2(&params::<Pbes2Params>(alg)?);
        }
        let cipher = match alg.oid {
            PBE_SHA1_3DES => Cipher::DesEde3,
            PBE_SHA1_RC2_40 => Cipher::Rc2_40,
            _ => return None,
        };
        let p = params::<Pkcs12PbeParams>(alg)?;
        Some(Pbe {
            kdf: Kdf::Pkcs12 {
                salt: p.salt.as_bytes().to_vec(),
                iterations: p.iterations,
            },
            cipher,
            iv: Vec::new(),
        })
    }

    fn parse_pbes2(p: &Pbes2Params) -> Option<Pbe> {
        if p.kdf.oid != PBKDF2 {
            return None;
        }
        let kdf = params::<Pbkdf2Params>(&p.kdf)?;
        let cipher = Cipher::from_pbes2(p.encryption.oid)?;
        if kdf
            .key_length
            .is_some_and(|l| usize::from(l) != cipher.key_len())
        {
            return None;
        }
        let iv = params::<OctetString>(&p.encryption)?;
        Some(Pbe {
            kdf: Kdf::Pbkdf2 {
                prf: prf(kdf.prf.oid)?,
                salt: kdf.salt.as_bytes().to_vec(),
                iterations: kdf.iteration_count,
            },
            cipher,
            iv: iv.as_bytes().to_vec(),
        })
    }

    /// The iterations the budget is charged for this part.
    pub(crate) fn iterations(&self) -> u64 {
        match &self.kdf {
            Kdf::Pbkdf2 { iterations, .. } => u64::from(*iterations),
            Kdf::Pkcs12 { iterations, .. } => u64::try_from(*iterations).unwrap_or(1),
        }
    }

    /// Derives the key (and IV) through the budget, then decrypts.
    pub(crate) fn decrypt(
        &self,
        password: &Password,
        data: &[u8],
        budget: &mut Budget,
    ) -> Result<Zeroizing<Vec<u8>>, Failure> {
        let len = self.cipher.key_len();
        let (key, iv) = match &self.kdf {
            Kdf::Pbkdf2 {
                prf,
                salt,
                iterations,
            } => {
                let mut key = Zeroizing::new(vec![0u8; len]);
                budget.pbkdf2(*prf, &password.utf8, salt, *iterations, &mut key)?;
                (key, Zeroizing::new(self.iv.clone()))
            }
            Kdf::Pkcs12 { salt, iterations } => {
                let bmp = password.bmp()?;
                let outputs = [(Purpose::Key, len), (Purpose::Iv, 8)];
                let mut out = budget.pkcs12_kdf(Hash::Sha1, bmp, salt, *iterations, &outputs)?;
                let iv = out.pop().unwrap_or_default();
                let key = out.pop().unwrap_or_default();
                (key, iv)
            }
        };
        match self.cipher {
            Cipher::Aes128 => cbc_decrypt::<aes::Aes128>(&key, &iv, data),
            Cipher::Aes192 => cbc_decrypt::<aes::Aes192>(&key, &iv, data),
            Cipher::Aes256 => cbc_decrypt::<aes::Aes256>(&key, &iv, data),
            Cipher::DesEde3 => cbc_decrypt::<des::TdesEde3>(&key, &iv, data),
            Cipher::Rc2_40 => cbc_decrypt::<rc2::Rc2>(&key, &iv, data),
        }
    }
}

fn cbc_decrypt<C: BlockCipherDecrypt + KeyInit>(
    key: &[u8],
    iv: &[u8],
    data: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let cipher = cbc::Decryptor::<C>::new_from_slices(key, iv).map_err(|_| {
        Problem::new(
            Reason::Corrupt,
            "the file's encryption parameters are malformed (IV length); it may be damaged: export it again",
        )
    })?;
    cipher
        .decrypt_padded_vec::<Pkcs7>(data)
        .map(Zeroizing::new)
        .map_err(|_| Failure::Undecryptable)
}

/// Verifies the PKCS#12 MAC (HMAC keyed by the PKCS#12 KDF) over `data`.
/// `Ok(false)`: the password does not open the file.
pub(crate) fn verify_mac(
    digest: Hash,
    password: &Password,
    salt: &[u8],
    iterations: i32,
    data: &[u8],
    expected: &[u8],
    budget: &mut Budget,
) -> Result<bool, Problem> {
    let bmp = password.bmp()?;
    let len = with_hash!(digest, output_len());
    let key = budget.pkcs12_kdf(digest, bmp, salt, iterations, &[(Purpose::Mac, len)])?;
    let key = key.first().map_or(&[][..], |k| k.as_slice());
    Ok(with_hash!(digest, hmac_matches(key, data, expected)))
}

fn output_len<D: hmac::digest::OutputSizeUser>() -> usize {
    D::output_size()
}

fn hmac_matches<D: hmac::EagerHash>(key: &[u8], data: &[u8], expected: &[u8]) -> bool {
    let Ok(mut mac) = hmac::Hmac::<D>::new_from_slice(key) else {
        return false;
    };
    mac.update(data);
    mac.verify_slice(expected).is_ok()
}
