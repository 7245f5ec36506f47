//! Listeners: accepting connections, TLS, serving HTTP/1.1 and HTTP/2 on one
//! port, and graceful drain.

pub mod listener;
pub mod tls;
