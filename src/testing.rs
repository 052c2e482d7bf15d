//! The one surface the integration tests (`tests/`) and the benchmark
//! (`bench/`) reach into certpin's operator through. Not a stable API:
//! everything else under `operator` is private to the crate.

/// The pure rendering (the bench floor writes what certpin writes).
pub mod build {
    pub use crate::operator::reconcile::build::{
        Rendered, config_hash, config_map_object, secret_object, workload_fragment,
    };
}
/// Adding and removing the finalizer (tests/operator.rs).
pub mod finalizer {
    pub use crate::operator::reconcile::finalizer::{ensure, remove};
}
/// Names, labels and annotations certpin writes.
pub use crate::names;
