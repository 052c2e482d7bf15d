//! Shared test support. `jvm` runs the app runtime's JVM; `kube` connects to
//! the local control plane (scripts/testbed); `operator` runs certpin;
//! `proxy` stands between certpin and the API server.
#![allow(dead_code)]

pub mod jvm;
pub mod kube;
pub mod operator;
/// The benchmark's counting proxy, which also injects 409 Conflicts.
#[path = "../../bench/src/proxy.rs"]
pub mod proxy;
