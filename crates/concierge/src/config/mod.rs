//! Configuration: the file model, loading with environment substitution,
//! validation with precise positions, and the JSON Schema export.

pub mod error;
pub mod load;
pub mod model;
pub mod security;
pub mod units;
pub mod validate;

pub use error::{ConfigError, ConfigErrors};
pub use load::{load_file, load_str};
pub use model::Config;

/// The JSON Schema of the configuration file, for editors.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Config)).unwrap_or_default()
}
