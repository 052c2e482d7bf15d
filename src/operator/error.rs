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
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("kubeconfig: {0}")]
    Config(String),
    #[error("leader election: {0}")]
    Lease(String),
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
            Error::Finalizer(_) => "finalizer",
            Error::Config(_) => "config",
            Error::Lease(_) => "lease",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
