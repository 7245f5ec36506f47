//! Edge security: JWT verification against identity providers' keys, API
//! keys, authorization rules, trusted identity headers, CORS and IP rules.

pub mod apikey;
pub mod cors;
mod fetch;
pub mod identity;
pub mod identity_headers;
pub mod ip;
pub mod jwt;
pub mod keys;
pub mod memo;
pub mod policy;
