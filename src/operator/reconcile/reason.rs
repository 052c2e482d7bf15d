//! Every reason a set's conditions, Events and metrics name, with what it
//! means for GitOps tools (kstatus) and for an alert: one type, used by
//! every step, so that no behaviour hangs on the spelling of a string.

use std::time::Duration;

use crate::ca::CaError;
use crate::pkcs12;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A certificate (or the pins of one) is refused.
    Certificate(pkcs12::Reason),
    // Inputs.
    SecretNotFound,
    ConfigMapNotFound,
    KeyNotFound,
    InvalidSpec,
    InvalidName,
    InvalidPassword,
    // CA bundles.
    PrivateKeyInBundle,
    NotACertificate,
    CorruptCertificate,
    EmptyBundle,
    BundleTooLarge,
    TooManyCACertificates,
    // The target workload.
    DeploymentNotFound,
    StatefulSetNotFound,
    OwnedByController,
    StopStartDeletesVolumes,
    InvalidInput,
    Conflict,
    ContainerNotFound,
    MountPathInUse,
    VolumeNameInUse,
    SettingSetByApp,
    RenderedNameInUse,
    RenderedTooLarge,
    // The API server refused a write.
    Forbidden,
    WriteInvalid,
    RequestTooLarge,
    WriteConflict,
    WriteRefused,
    // Work under way, or the user's turn.
    RolloutInProgress,
    RolloutStuck,
    StopStartInProgress,
    RestartDue,
    // All is well.
    Valid,
    Applied,
    ValidWithWarnings,
    UpToDate,
    // Events only.
    Restarted,
    ClientCertificatesApplied,
    CACertificateWarning,
    BuildpackCertificateSetting,
    ExpiringSoon,
    UnwireFailed,
}

/// What a reason that keeps a set from Ready asks of whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Nothing keeps the set from Ready.
    Fine,
    /// Work under way, or waiting for something that may appear:
    /// kstatus's Reconciling.
    Progressing,
    /// Needs someone to change something: kstatus's Stalled, and a
    /// failure in the metrics.
    Stalled,
    /// Waits for the user's own step (a Manual restart): neither.
    User,
}

impl Reason {
    /// The CamelCase name conditions, Events and metrics carry.
    pub fn name(self) -> String {
        match self {
            Reason::Certificate(r) => r.camel(),
            Reason::RequestTooLarge => "TooLarge".into(),
            other => format!("{other:?}"),
        }
    }

    pub fn kind(self) -> Kind {
        use Reason::*;
        match self {
            Valid
            | Applied
            | ValidWithWarnings
            | UpToDate
            | Restarted
            | ClientCertificatesApplied => Kind::Fine,
            SecretNotFound | ConfigMapNotFound | KeyNotFound | DeploymentNotFound
            | StatefulSetNotFound | WriteConflict | RolloutInProgress | StopStartInProgress => {
                Kind::Progressing
            }
            RestartDue => Kind::User,
            _ => Kind::Stalled,
        }
    }

    /// Whether an Event with this reason is a Warning: anything but good
    /// news and the steps of normal work.
    pub fn warns(self) -> bool {
        self.kind() != Kind::Fine
            && !matches!(
                self,
                Reason::RolloutInProgress | Reason::StopStartInProgress
            )
    }

    /// Whether a set not Ready for this reason counts as a failure in the
    /// metrics: something needs attention. Waiting for a rollout, a
    /// StopStart or the user's restart does not.
    pub fn is_failure(self) -> bool {
        self.kind() == Kind::Stalled
    }

    /// When to try a refused target again by itself: a workload may
    /// appear, a conflicting write is read again at once, and a refused
    /// write is retried now and then (an admission policy or RBAC can
    /// change without any event certpin watches). Input only the user can
    /// fix waits for their edit.
    pub fn retry_after(self) -> Option<Duration> {
        use Reason::*;
        match self {
            WriteConflict => Some(Duration::from_secs(1)),
            DeploymentNotFound | StatefulSetNotFound | RenderedNameInUse => {
                Some(Duration::from_secs(30))
            }
            Forbidden | WriteInvalid | RequestTooLarge | WriteRefused => {
                Some(Duration::from_secs(60))
            }
            _ => None,
        }
    }
}

impl From<&CaError> for Reason {
    fn from(e: &CaError) -> Reason {
        match e {
            CaError::PrivateKey { .. } => Reason::PrivateKeyInBundle,
            CaError::NotACertificate { .. } | CaError::Unreadable => Reason::NotACertificate,
            CaError::Corrupt { .. } => Reason::CorruptCertificate,
            CaError::Empty => Reason::EmptyBundle,
            CaError::TooLarge(_) => Reason::BundleTooLarge,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_camel_case_the_status_has_always_carried() {
        assert_eq!(
            Reason::Certificate(pkcs12::Reason::WrongPassword).name(),
            "WrongPassword"
        );
        assert_eq!(Reason::RequestTooLarge.name(), "TooLarge");
        assert_eq!(
            Reason::TooManyCACertificates.name(),
            "TooManyCACertificates"
        );
        assert_eq!(Reason::from(&CaError::Empty).name(), "EmptyBundle");
    }

    #[test]
    fn waiting_is_not_a_failure_and_refused_input_is() {
        for waiting in [
            Reason::RestartDue,
            Reason::RolloutInProgress,
            Reason::StopStartInProgress,
            Reason::SecretNotFound,
        ] {
            assert!(!waiting.is_failure(), "{waiting}");
        }
        for failure in [
            Reason::Certificate(pkcs12::Reason::Expired),
            Reason::Conflict,
            Reason::RolloutStuck,
            Reason::Forbidden,
            Reason::InvalidPassword,
        ] {
            assert!(failure.is_failure(), "{failure}");
        }
    }
}
