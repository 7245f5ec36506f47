//! Concierge: an API gateway. Configuration is compiled into an immutable
//! snapshot that requests walk without locks; reloads swap it atomically.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod body;
pub mod config;
pub mod demo;
pub mod error;
pub mod gateway;
pub mod headers;
pub mod proxy;
pub mod ratelimit;
pub mod router;
pub mod run;
pub mod server;
pub mod snapshot;
pub mod upstream;
pub mod watch;
