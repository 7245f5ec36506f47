//! Upstream pools: targets, load balancing and the pooled client.

pub mod balance;
pub mod client;
pub mod pool;
pub mod target;

pub use pool::{InFlight, Pool};
