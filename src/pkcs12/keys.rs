//! Private keys: which algorithm, the public key they belong to (to find the
//! certificate that matches), and conversion of PEM keys to PKCS#8.

use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use p256::elliptic_curve;
use p256::pkcs8::EncodePrivateKey as _;
use pkcs8_stable::PrivateKeyInfo;
use pkcs8_stable::der::{Decode as _, Encode as _, asn1::ObjectIdentifier};
use x509_parser::prelude::*;
use zeroize::Zeroizing;

use super::reason::{Problem, Reason};

const RSA: &str = "1.2.840.113549.1.1.1";
const EC: &str = "1.2.840.10045.2.1";
const ED25519: &str = "1.3.101.112";
const P256: &str = "1.2.840.10045.3.1.7";
const P384: &str = "1.3.132.0.34";

/// The kinds of key certpin handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

/// The public half of a private key, in a form comparable with a certificate.
#[derive(PartialEq, Eq)]
pub enum PublicKey {
    /// RSA modulus, big-endian without leading zeros.
    Rsa(Vec<u8>),
    P256(p256::PublicKey),
    P384(p384::PublicKey),
    Ed25519([u8; 32]),
}

fn unsupported_key(what: impl std::fmt::Display) -> Problem {
    Problem::new(
        Reason::UnsupportedKey,
        format!("the private key is {what}; supported are RSA, EC P-256, EC P-384 and Ed25519"),
    )
}

fn damaged_key(err: impl std::fmt::Display) -> Problem {
    Problem::new(
        Reason::Corrupt,
        format!("the private key inside the file cannot be read ({err})"),
    )
}

fn strip_zeros(b: &[u8]) -> Vec<u8> {
    let first = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    b[first..].to_vec()
}

/// Derives the public key of a PKCS#8 private key.
pub fn public_key_of(pkcs8: &[u8]) -> Result<(KeyKind, PublicKey), Problem> {
    let info = PrivateKeyInfo::from_der(pkcs8).map_err(damaged_key)?;
    let alg = info.algorithm.oid.to_string();
    match alg.as_str() {
        RSA => {
            let rsa = pkcs1::RsaPrivateKey::from_der(info.private_key).map_err(damaged_key)?;
            Ok((
                KeyKind::Rsa,
                PublicKey::Rsa(strip_zeros(rsa.modulus.as_bytes())),
            ))
        }
        EC => {
            let curve = info
                .algorithm
                .parameters_oid()
                .map(|o| o.to_string())
                .unwrap_or_default();
            match curve.as_str() {
                P256 => Ok((KeyKind::EcP256, PublicKey::P256(ec_public_key(pkcs8)?))),
                P384 => Ok((KeyKind::EcP384, PublicKey::P384(ec_public_key(pkcs8)?))),
                other => Err(unsupported_key(format_args!("an EC key on curve {other}"))),
            }
        }
        ED25519 => {
            let sk = ed25519_dalek::SigningKey::from_pkcs8_der(pkcs8).map_err(damaged_key)?;
            Ok((
                KeyKind::Ed25519,
                PublicKey::Ed25519(sk.verifying_key().to_bytes()),
            ))
        }
        other => Err(unsupported_key(key_alg_name(other))),
    }
}

/// The public key of an EC private key, derived from its private scalar
/// (never the file's own claim of its public point).
fn ec_public_key<C>(pkcs8: &[u8]) -> Result<elliptic_curve::PublicKey<C>, Problem>
where
    C: elliptic_curve::CurveArithmetic + elliptic_curve::pkcs8::AssociatedOid,
    elliptic_curve::FieldBytesSize<C>: elliptic_curve::sec1::ModulusSize,
    elliptic_curve::AffinePoint<C>:
        elliptic_curve::sec1::FromEncodedPoint<C> + elliptic_curve::sec1::ToEncodedPoint<C>,
{
    Ok(elliptic_curve::SecretKey::<C>::from_pkcs8_der(pkcs8)
        .map_err(damaged_key)?
        .public_key())
}

fn key_alg_name(oid: &str) -> String {
    match oid {
        "1.2.840.113549.1.1.10" => "RSA-PSS".into(),
        "1.2.840.10040.4.1" => "DSA".into(),
        "1.3.101.113" => "Ed448".into(),
        other => format!("of algorithm {other}"),
    }
}

/// The public key in a certificate, when it is of a kind certpin handles.
pub fn public_key_of_certificate(cert: &X509Certificate<'_>) -> Option<PublicKey> {
    let spki = cert.public_key();
    let bits = spki.subject_public_key.data.as_ref();
    match spki.algorithm.algorithm.to_id_string().as_str() {
        RSA => match spki.parsed().ok()? {
            x509_parser::public_key::PublicKey::RSA(rsa) => {
                Some(PublicKey::Rsa(strip_zeros(rsa.modulus)))
            }
            _ => None,
        },
        EC => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                P256 => p256::PublicKey::from_sec1_bytes(bits)
                    .ok()
                    .map(PublicKey::P256),
                P384 => p384::PublicKey::from_sec1_bytes(bits)
                    .ok()
                    .map(PublicKey::P384),
                _ => None,
            }
        }
        ED25519 => bits.try_into().ok().map(PublicKey::Ed25519),
        _ => None,
    }
}

/// A human name and size for a certificate's key, e.g. ("RSA", 2048).
pub fn describe_certificate_key(cert: &X509Certificate<'_>) -> (String, u32) {
    let spki = cert.public_key();
    match spki.algorithm.algorithm.to_id_string().as_str() {
        RSA => {
            let bits = match spki.parsed() {
                Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => rsa.key_size() as u32,
                _ => 0,
            };
            ("RSA".into(), bits)
        }
        EC => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                P256 => ("EC P-256".into(), 256),
                P384 => ("EC P-384".into(), 384),
                "1.3.132.0.35" => ("EC P-521".into(), 521),
                other => (format!("EC {other}"), 0),
            }
        }
        ED25519 => ("Ed25519".into(), 256),
        other => (key_alg_name(other), 0),
    }
}

/// Converts a PEM private key as found in a `kubernetes.io/tls` Secret
/// (PKCS#8, PKCS#1 `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY`, as cert-manager
/// writes them) to unencrypted PKCS#8 DER.
pub fn pem_key_to_pkcs8(block: &::pem::Pem) -> Result<Zeroizing<Vec<u8>>, Problem> {
    let bad = |e: &dyn std::fmt::Display| {
        Problem::new(
            Reason::InvalidPem,
            format!("the {} block in tls.key cannot be read ({e})", block.tag()),
        )
    };
    match block.tag() {
        "PRIVATE KEY" => Ok(Zeroizing::new(block.contents().to_vec())),
        "RSA PRIVATE KEY" => {
            // Validate, then wrap in a PKCS#8 PrivateKeyInfo with rsaEncryption.
            pkcs1::RsaPrivateKey::from_der(block.contents()).map_err(|e| bad(&e))?;
            let info = PrivateKeyInfo {
                algorithm: pkcs8_stable::AlgorithmIdentifierRef {
                    oid: ObjectIdentifier::new_unwrap(RSA),
                    parameters: Some(pkcs8_stable::der::asn1::AnyRef::NULL),
                },
                private_key: block.contents(),
                public_key: None,
            };
            Ok(Zeroizing::new(info.to_der().map_err(|e| bad(&e))?))
        }
        "EC PRIVATE KEY" => {
            let ec = sec1::EcPrivateKey::from_der(block.contents()).map_err(|e| bad(&e))?;
            let curve = ec
                .parameters
                .and_then(|p| p.named_curve())
                .map(|o| o.to_string())
                .unwrap_or_default();
            let der = match curve.as_str() {
                P256 => p256::SecretKey::from_sec1_der(block.contents())
                    .map_err(|e| bad(&e))?
                    .to_pkcs8_der()
                    .map_err(|e| bad(&e))?,
                P384 => p384::SecretKey::from_sec1_der(block.contents())
                    .map_err(|e| bad(&e))?
                    .to_pkcs8_der()
                    .map_err(|e| bad(&e))?,
                "" => return Err(bad(&"the key does not name its curve")),
                other => return Err(unsupported_key(format_args!("an EC key on curve {other}"))),
            };
            Ok(Zeroizing::new(der.as_bytes().to_vec()))
        }
        "ENCRYPTED PRIVATE KEY" => Err(Problem::new(
            Reason::InvalidPem,
            "tls.key is an encrypted PKCS#8 key; a kubernetes.io/tls Secret must hold an unencrypted key",
        )),
        other => Err(Problem::new(
            Reason::InvalidPem,
            format!("tls.key holds a `{other}` block, not a private key"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;

    /// A P-256 key as PKCS#8 whose ECPrivateKey carries `point` (or none).
    fn p256_pkcs8(scalar: &[u8; 32], point: Option<&[u8]>) -> Vec<u8> {
        let ec = sec1::EcPrivateKey {
            private_key: scalar,
            parameters: Some(sec1::EcParameters::NamedCurve(
                ObjectIdentifier::new_unwrap(P256),
            )),
            public_key: point,
        };
        let ec_der = ec.to_der().expect("encodes");
        let oid = ObjectIdentifier::new_unwrap(P256);
        let info = PrivateKeyInfo {
            algorithm: pkcs8_stable::AlgorithmIdentifierRef {
                oid: ObjectIdentifier::new_unwrap(EC),
                parameters: Some((&oid).into()),
            },
            private_key: &ec_der,
            public_key: None,
        };
        info.to_der().expect("encodes")
    }

    fn point_of(scalar: &[u8; 32]) -> Vec<u8> {
        p256::SecretKey::from_slice(scalar)
            .expect("a valid scalar")
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }

    #[test]
    fn an_ec_key_with_its_point_gets_the_point_derived_from_its_scalar() {
        let scalar = [7u8; 32];
        let truth = point_of(&scalar);
        let (kind, public) = public_key_of(&p256_pkcs8(&scalar, Some(&truth))).expect("reads");
        assert_eq!(kind, KeyKind::EcP256);
        assert!(
            public == PublicKey::P256(p256::PublicKey::from_sec1_bytes(&truth).expect("point"))
        );
    }

    #[test]
    fn an_ec_key_without_its_point_is_derived_all_the_same() {
        let scalar = [9u8; 32];
        let truth = point_of(&scalar);
        let (_, public) = public_key_of(&p256_pkcs8(&scalar, None)).expect("reads");
        assert!(
            public == PublicKey::P256(p256::PublicKey::from_sec1_bytes(&truth).expect("point"))
        );
    }

    #[test]
    fn an_ec_key_that_claims_another_point_is_refused_as_damaged() {
        // The embedded point contradicts the scalar: neither passes as the
        // other key's match; the file is damaged.
        let (scalar, other) = ([11u8; 32], [12u8; 32]);
        let err = match public_key_of(&p256_pkcs8(&scalar, Some(&point_of(&other)))) {
            Ok(_) => panic!("a self-contradicting key was read"),
            Err(e) => e,
        };
        assert_eq!(err.reason, Reason::Corrupt);
    }
}
