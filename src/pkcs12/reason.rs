//! Why a certificate was refused: one machine-readable code per cause, and a
//! message that tells the user what to do. Messages never contain passwords
//! or key material.

use std::fmt;

/// A machine-readable reason code, as it appears in status conditions,
/// Events, metrics labels and the CLI's JSON output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    WrongPassword,
    Corrupt,
    NotPkcs12,
    Base64Text,
    TooLarge,
    NoPrivateKey,
    MultiplePrivateKeys,
    NoCertificate,
    KeyMismatch,
    UnsupportedKey,
    Expired,
    NotYetValid,
    UnsupportedEncryption,
    JvmIncompatible,
    InvalidPem,
    CommaInPassword,
    CommaInPath,
    EmptyPassword,
    InvalidPin,
    DuplicatePin,
    /// Two certificates name one path with different passwords (the CLI's
    /// runtime paths; the operator's file names are unique).
    DuplicatePath,
    /// The file asks for more key derivation than certpin spends on one file.
    TooCostly,
}

impl Reason {
    pub const ALL: [Reason; 22] = [
        Reason::WrongPassword,
        Reason::Corrupt,
        Reason::NotPkcs12,
        Reason::Base64Text,
        Reason::TooLarge,
        Reason::NoPrivateKey,
        Reason::MultiplePrivateKeys,
        Reason::NoCertificate,
        Reason::KeyMismatch,
        Reason::UnsupportedKey,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::UnsupportedEncryption,
        Reason::JvmIncompatible,
        Reason::InvalidPem,
        Reason::CommaInPassword,
        Reason::CommaInPath,
        Reason::EmptyPassword,
        Reason::InvalidPin,
        Reason::DuplicatePin,
        Reason::DuplicatePath,
        Reason::TooCostly,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Reason::WrongPassword => "wrong-password",
            Reason::Corrupt => "corrupt",
            Reason::NotPkcs12 => "not-pkcs12",
            Reason::Base64Text => "base64-text",
            Reason::TooLarge => "too-large",
            Reason::NoPrivateKey => "no-private-key",
            Reason::MultiplePrivateKeys => "multiple-private-keys",
            Reason::NoCertificate => "no-certificate",
            Reason::KeyMismatch => "key-mismatch",
            Reason::UnsupportedKey => "unsupported-key",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not-yet-valid",
            Reason::UnsupportedEncryption => "unsupported-encryption",
            Reason::JvmIncompatible => "jvm-incompatible",
            Reason::InvalidPem => "invalid-pem",
            Reason::CommaInPassword => "comma-in-password",
            Reason::CommaInPath => "comma-in-path",
            Reason::EmptyPassword => "empty-password",
            Reason::InvalidPin => "invalid-pin",
            Reason::DuplicatePin => "duplicate-pin",
            Reason::DuplicatePath => "duplicate-path",
            Reason::TooCostly => "too-costly",
        }
    }

    /// The CamelCase form Kubernetes uses for condition and Event reasons.
    pub fn camel(self) -> String {
        self.code()
            .split('-')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect()
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A refusal: the reason code and a message the user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Problem {
    pub reason: Reason,
    pub message: String,
}

impl Problem {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Problem {
            reason,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_kebab_case_and_camel_case_round_trips() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert!(seen.insert(r.code()), "duplicate code {r}");
            assert!(
                r.code()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            );
            assert_eq!(
                serde_json::to_value(r).unwrap(),
                serde_json::Value::String(r.code().into())
            );
            assert!(r.camel().chars().all(|c| c.is_ascii_alphanumeric()));
        }
        assert_eq!(Reason::WrongPassword.camel(), "WrongPassword");
        assert_eq!(Reason::JvmIncompatible.camel(), "JvmIncompatible");
    }
}

/// Why a valid certificate still deserves attention. The code leads the
/// text on status rows (`expiring-soon: ...`), so readers can match it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WarningKind {
    ExpiringSoon,
    /// The file was re-encoded because the JVM would refuse it as it is.
    ReEncodedForJvm,
    Ed25519Key,
    /// The password ended with a newline, which was ignored.
    PasswordNewline,
}

impl WarningKind {
    pub fn code(self) -> &'static str {
        match self {
            WarningKind::ExpiringSoon => "expiring-soon",
            WarningKind::ReEncodedForJvm => "re-encoded-for-jvm",
            WarningKind::Ed25519Key => "ed25519-key",
            WarningKind::PasswordNewline => "password-newline",
        }
    }

    /// The kind a code names.
    pub fn from_code(code: &str) -> Option<WarningKind> {
        [
            WarningKind::ExpiringSoon,
            WarningKind::ReEncodedForJvm,
            WarningKind::Ed25519Key,
            WarningKind::PasswordNewline,
        ]
        .into_iter()
        .find(|k| k.code() == code)
    }

    /// Whether a warning as written on a status row is of this kind.
    pub fn is_in(self, text: &str) -> bool {
        text.strip_prefix(self.code())
            .is_some_and(|rest| rest.starts_with(':'))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub kind: WarningKind,
    pub message: String,
}

impl Warning {
    pub fn new(kind: WarningKind, message: impl Into<String>) -> Self {
        Warning {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)
    }
}
