//! Parts shared by certpin's tests and its benchmark.

pub mod proxy;
