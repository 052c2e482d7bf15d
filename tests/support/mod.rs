//! Shared test support. `jvm` runs the app runtime's JVM; `kube` connects to
//! the local control plane (scripts/testbed); `operator` runs certpin. The
//! proxy between certpin and the API server is in `certpin-testkit`.
#![allow(dead_code)]

pub mod jvm;
pub mod kube;
pub mod operator;
pub mod realnode;
