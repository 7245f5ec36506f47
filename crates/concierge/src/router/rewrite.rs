//! Path rewrites applied before a request is forwarded.

use super::pattern::{Params, prefix_matches};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    Param(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRewrite {
    /// Remove a leading prefix; what is left always starts with `/`.
    StripPrefix(String),
    /// Build the path from text and captured parameters.
    Template(Vec<Part>),
}

impl PathRewrite {
    pub fn strip_prefix(prefix: &str) -> Result<Self, String> {
        if !prefix.starts_with('/') {
            return Err(format!("strip_prefix `{prefix}` must start with `/`"));
        }
        Ok(Self::StripPrefix(prefix.trim_end_matches('/').to_string()))
    }

    /// Parses `/v1/items/{id}`; every parameter must be one the route captures.
    pub fn template(text: &str, captured: &[&str]) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!("rewrite path `{text}` must start with `/`"));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("unclosed `{{` in rewrite path `{text}`"));
            };
            let name = rest[open + 1..open + close].trim_start_matches('*');
            if !captured.contains(&name) {
                return Err(format!(
                    "rewrite path uses `{{{name}}}`, which the route's path does not capture"
                ));
            }
            parts.push(Part::Param(name.to_string()));
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Self::Template(parts))
    }

    /// The new path (without query) for a normalised request path.
    pub fn apply(&self, path: &str, params: &Params<'_>) -> String {
        match self {
            Self::StripPrefix(prefix) => {
                if prefix.is_empty() || !prefix_matches(prefix, path) {
                    return path.to_string();
                }
                let rest = &path[prefix.len()..];
                if rest.starts_with('/') {
                    rest.to_string()
                } else {
                    format!("/{rest}")
                }
            }
            Self::Template(parts) => {
                let mut out = String::with_capacity(path.len() + 16);
                for part in parts {
                    match part {
                        Part::Text(text) => out.push_str(text),
                        Part::Param(name) => {
                            if let Some((_, value)) = params.iter().find(|(n, _)| n == name) {
                                out.push_str(value);
                            }
                        }
                    }
                }
                // An empty `{*rest}` can leave `//`; never forward a path that
                // would not survive our own normalisation.
                while let Some(i) = out.find("//") {
                    out.remove(i);
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_prefixes_on_segment_boundaries() {
        let r = PathRewrite::strip_prefix("/api/").unwrap();
        assert_eq!(r.apply("/api/products/1", &vec![]), "/products/1");
        assert_eq!(r.apply("/api", &vec![]), "/");
        assert_eq!(r.apply("/apix", &vec![]), "/apix");
    }

    #[test]
    fn templates_use_captured_params() {
        let r = PathRewrite::template("/v1/items/{id}/files/{rest}", &["id", "rest"]).unwrap();
        assert_eq!(
            r.apply("/x", &vec![("id", "42"), ("rest", "a/b")]),
            "/v1/items/42/files/a/b"
        );
        assert!(PathRewrite::template("/v1/{nope}", &["id"]).is_err());
    }
}
