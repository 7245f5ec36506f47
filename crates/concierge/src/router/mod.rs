//! Request routing: path normalisation, host and path patterns, and the
//! per-frontend route table.

pub mod host;
pub mod normalize;
pub mod pattern;
pub mod rewrite;
pub mod table;
