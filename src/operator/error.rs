//! Errors that stop a reconcile (the API server failed us). Invalid user
//! input is not an error here: it is a status, see `reconcile::validate`.

/// Why a step of a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Encode(#[from] crate::pkcs12::EncodeError),
    #[error("the resource has no {0}")]
    MissingField(&'static str),
    /// Validation passed but the settings did not render: a bug.
    #[error("rendering the settings: {0}")]
    Render(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    /// A low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Encode(_) => "encode",
            Error::MissingField(_) => "missing-field",
            Error::Render(_) => "render",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

/// The steps of a pass, as a failed pass names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Finalize,
    Observe,
    Decide,
    Act,
    Publish,
    Cleanup,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Finalize => "adding the finalizer",
            Step::Observe => "reading the inputs",
            Step::Decide => "deciding",
            Step::Act => "writing",
            Step::Publish => "publishing the status",
            Step::Cleanup => "unwiring the deleted set",
        })
    }
}

/// A failed pass: the step, the set (`namespace/name`) and why.
#[derive(Debug, thiserror::Error)]
#[error("{step} for {set}: {source}")]
pub struct PassError {
    pub step: Step,
    pub set: String,
    #[source]
    pub source: Error,
}

/// Why certpin could not start, or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Config(String),
    #[error("leader election: {0}")]
    Lease(String),
    #[error("starting the async runtime: {0}")]
    Runtime(String),
}

impl From<kube_lease_manager::LeaseManagerError> for StartError {
    fn from(e: kube_lease_manager::LeaseManagerError) -> Self {
        StartError::Lease(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error with its causes, `outer: cause: root`: kube's "client error
/// (Connect)" alone does not say whether a connect was refused, timed out
/// or failed its TLS handshake.
pub fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        // thiserror's `transparent` and kube's wrappers repeat their cause.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_joined_without_repeating_a_transparent_wrapper() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
        let e = StartError::Config(String::from("kubeconfig missing"));
        assert_eq!(with_causes(&e), "kubeconfig: kubeconfig missing");
        #[derive(Debug, thiserror::Error)]
        #[error("client error (Connect)")]
        struct Outer(#[source] std::io::Error);
        assert_eq!(
            with_causes(&Outer(io)),
            "client error (Connect): connect timed out"
        );
    }
}
