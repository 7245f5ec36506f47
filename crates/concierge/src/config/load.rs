//! Reading a configuration file: environment substitution, YAML parsing,
//! then validation. The result is a checked model or every error found.

use std::path::Path;

use serde_saphyr::Location;

use super::error::{ConfigError, ConfigErrors};
use super::model::Config;
use super::validate::validate;

/// Reads, substitutes, parses and validates a configuration file.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    load_str(path, &read_file(path)?)
}

/// Parses and validates configuration text; `path` names it in errors.
pub fn load_str(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    load_text(path, text, |name| std::env::var(name).ok())
}

pub fn read_file(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read the file: {e}"),
        }])
    })
}

/// Like [`load_str`], with `lookup` resolving `${VAR}` references.
pub fn load_text(
    path: &Path,
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let text = substitute_env(path, text, lookup)?;
    let config: Config = serde_saphyr::from_str(&text).map_err(|e| {
        let location = e.location().unwrap_or(Location::UNKNOWN);
        ConfigErrors(vec![ConfigError::at(path, &location, clean_message(&e))])
    })?;
    let errors = validate(path, &config);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// serde-saphyr appends its own position and a source snippet to messages;
/// we print the position ourselves, so keep only the first line of the text.
fn clean_message(error: &serde_saphyr::Error) -> String {
    // The snippet form titles the message `line L column C: ...`, which the
    // suffix stripping below cannot see; the plain form ends `at line L, column C`.
    let full = error.without_snippet().to_string();
    let first = full.lines().next().unwrap_or_default().trim();
    let first = first
        .strip_prefix("error: ")
        .unwrap_or(first)
        .trim_end_matches(|c: char| c == ':' || c.is_whitespace());
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}

/// Replaces `${NAME}` and `${NAME:-default}` with environment values.
/// Substitution is textual and never spans lines, so line numbers in later
/// errors still point at the operator's file. `$${` escapes a literal `${`.
pub fn substitute_env(
    path: &Path,
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, ConfigErrors> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (line_index, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        let mut column = 1;
        while let Some(start) = rest.find("${") {
            if rest[..start].ends_with('$') {
                out.push_str(&rest[..start - 1]);
                out.push_str("${");
                column += start + 2;
                rest = &rest[start + 2..];
                continue;
            }
            out.push_str(&rest[..start]);
            let at = column + start;
            let Some(len) = rest[start + 2..].find('}') else {
                errors.push(error_at(path, line_index, at, "unterminated `${`"));
                out.push_str(&rest[start..]);
                rest = "";
                break;
            };
            let inner = &rest[start + 2..start + 2 + len];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            let valid_name =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            match (valid_name, lookup(name), default) {
                (false, _, _) => errors.push(error_at(
                    path,
                    line_index,
                    at,
                    format!("`${{{inner}}}` is not a valid variable reference"),
                )),
                (true, Some(value), _) if value.contains('\n') => errors.push(error_at(
                    path,
                    line_index,
                    at,
                    format!("environment variable {name} contains a newline"),
                )),
                (true, Some(value), _) => out.push_str(&value),
                (true, None, Some(default)) => out.push_str(default),
                (true, None, None) => errors.push(error_at(
                    path,
                    line_index,
                    at,
                    format!("environment variable {name} is not set (use ${{{name}:-default}} for a default)"),
                )),
            }
            column = at + len + 3;
            rest = &rest[start + 3 + len..];
        }
        out.push_str(rest);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn error_at(
    path: &Path,
    line_index: usize,
    column: usize,
    message: impl Into<String>,
) -> ConfigError {
    ConfigError {
        file: path.to_path_buf(),
        line: line_index as u64 + 1,
        column: column as u64,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "SECRET").then(|| "s3cr3t".to_string())
    }

    #[test]
    fn substitutes_values_and_defaults() {
        let out = substitute_env(
            Path::new("c.yaml"),
            "a: ${SECRET}\nb: ${MISSING:-x}\nc: $${LIT}\n",
            env,
        )
        .unwrap();
        assert_eq!(out, "a: s3cr3t\nb: x\nc: ${LIT}\n");
    }

    #[test]
    fn missing_variable_is_reported_with_its_position() {
        let err = substitute_env(Path::new("c.yaml"), "a: 1\nkey: ${NOPE}\n", env).unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!((err.0[0].line, err.0[0].column), (2, 6));
        assert!(err.0[0].message.contains("NOPE"));
    }
}
