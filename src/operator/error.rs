//! Errors that stop a reconcile (the API server failed us). Invalid user
//! input is not an error here: it is a status, see `reconcile::validate`.

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
    #[error("kubeconfig: {0}")]
    Config(String),
    #[error("leader election: {0}")]
    Lease(String),
    #[error("starting the async runtime: {0}")]
    Runtime(String),
}

impl From<kube_lease_manager::LeaseManagerError> for Error {
    fn from(e: kube_lease_manager::LeaseManagerError) -> Self {
        Error::Lease(e.to_string())
    }
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
            Error::Config(_) => "config",
            Error::Lease(_) => "lease",
            Error::Runtime(_) => "runtime",
        }
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
        let e = Error::Config(String::from("kubeconfig missing"));
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
