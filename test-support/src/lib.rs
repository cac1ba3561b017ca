//! What the workspace's tests and benchmarks share, in one dev-only crate (never a
//! dependency of a published crate): tiny random-weight models published with manifests
//! ([`fixtures`]), the real CIFAR-10 folder ([`data`]), a blocking HTTP/1.1 client for
//! talking to a server over real TCP ([`http`]), small helpers for command output
//! ([`output`]), and the manifests the zoo ships ([`shipped`]).

pub mod data;
pub mod fixtures;
pub mod http;
pub mod output;
pub mod shipped;
