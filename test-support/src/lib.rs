//! What the workspace's tests and benchmarks share, in one dev-only crate (never a
//! dependency of a published crate): tiny random-weight models published with manifests
//! ([`fixtures`]), the real CIFAR-10 folder ([`data`]), a blocking HTTP/1.1 client for
//! talking to a server over real TCP ([`http`]), small helpers for command output
//! ([`output`]), the manifests the zoo ships ([`shipped`]), and faults (a full disk, a
//! read-only folder, `kill -9`) with the checks that a models folder survived them
//! ([`faults`]), and the peak memory of a child process ([`rss`]).

pub mod data;
pub mod faults;
pub mod fixtures;
pub mod http;
pub mod output;
pub mod rss;
pub mod shipped;
