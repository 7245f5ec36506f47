//! Path patterns: exact paths, segment-boundary prefixes and templates with
//! `{param}` segments and a final `{*rest}`.

/// One captured template parameter: its name and its value as found in the
/// (normalised, still percent-encoded) request path.
pub type Params<'p> = Vec<(&'p str, &'p str)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Param(String),
    Rest(String),
}

/// What a route's path condition is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    Any,
    Exact(String),
    Prefix(String),
    Template(Vec<Segment>),
}

impl PathPattern {
    /// Parses a `path:` value: exact unless it contains `{`.
    pub fn parse_path(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!("path `{text}` must start with `/`"));
        }
        if !text.contains('{') {
            return Ok(Self::Exact(text.to_string()));
        }
        let mut segments = Vec::new();
        let parts: Vec<&str> = text[1..].split('/').collect();
        for (index, part) in parts.iter().enumerate() {
            let last = index + 1 == parts.len();
            if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let (name, rest) = match inner.strip_prefix('*') {
                    Some(name) => (name, true),
                    None => (inner, false),
                };
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!(
                        "`{{{inner}}}` in `{text}` is not a valid parameter name"
                    ));
                }
                if segments
                    .iter()
                    .any(|s| matches!(s, Segment::Param(n) | Segment::Rest(n) if n == name))
                {
                    return Err(format!("parameter `{name}` appears twice in `{text}`"));
                }
                if rest && !last {
                    return Err(format!(
                        "`{{*{name}}}` must be the last segment of `{text}`"
                    ));
                }
                segments.push(if rest {
                    Segment::Rest(name.into())
                } else {
                    Segment::Param(name.into())
                });
            } else if part.contains('{') || part.contains('}') {
                return Err(format!(
                    "segment `{part}` of `{text}` mixes text and a parameter; a parameter must be a whole segment"
                ));
            } else {
                segments.push(Segment::Literal((*part).to_string()));
            }
        }
        Ok(Self::Template(segments))
    }

    /// Parses a `path_prefix:` value.
    pub fn parse_prefix(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!("path prefix `{text}` must start with `/`"));
        }
        if text.contains('{') {
            return Err(format!(
                "path prefix `{text}` cannot hold parameters; use `path` with `{{*rest}}`"
            ));
        }
        Ok(Self::Prefix(text.to_string()))
    }

    /// Names of the parameters a template captures.
    pub fn param_names(&self) -> Vec<&str> {
        match self {
            Self::Template(segments) => segments
                .iter()
                .filter_map(|s| match s {
                    Segment::Param(n) | Segment::Rest(n) => Some(n.as_str()),
                    Segment::Literal(_) => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Specificity, smaller sorts first. See `docs/routing.md`.
    pub(crate) fn rank(&self) -> (u8, std::cmp::Reverse<usize>, u8) {
        use std::cmp::Reverse;
        match self {
            Self::Exact(_) => (0, Reverse(0), 0),
            Self::Template(segments) => {
                let mut literal = 1;
                for segment in segments {
                    match segment {
                        Segment::Literal(l) => literal += l.len() + 1,
                        _ => break,
                    }
                }
                let has_rest = segments.iter().any(|s| matches!(s, Segment::Rest(_)));
                (1, Reverse(literal), u8::from(has_rest))
            }
            Self::Prefix(prefix) => (1, Reverse(prefix.len()), 2),
            Self::Any => (2, Reverse(0), 0),
        }
    }

    /// Matches a normalised path, returning captured parameters.
    pub fn matches<'p>(&'p self, path: &'p str) -> Option<Params<'p>> {
        match self {
            Self::Any => Some(Vec::new()),
            Self::Exact(exact) => (exact == path).then(Vec::new),
            Self::Prefix(prefix) => prefix_matches(prefix, path).then(Vec::new),
            Self::Template(segments) => match_template(segments, path),
        }
    }
}

/// `/api` matches `/api`, `/api/` and `/api/x`, never `/apix`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

fn match_template<'p>(segments: &'p [Segment], path: &'p str) -> Option<Params<'p>> {
    let mut params = Vec::new();
    let mut rest = &path[1..];
    for (index, segment) in segments.iter().enumerate() {
        if let Segment::Rest(name) = segment {
            params.push((name.as_str(), rest));
            return Some(params);
        }
        let (part, remainder) = match rest.find('/') {
            Some(slash) => (&rest[..slash], Some(&rest[slash + 1..])),
            None => (rest, None),
        };
        match segment {
            Segment::Literal(literal) if literal == part => {}
            Segment::Param(name) if !part.is_empty() => params.push((name.as_str(), part)),
            _ => return None,
        }
        let is_last = index + 1 == segments.len();
        match (remainder, is_last) {
            (None, true) => return Some(params),
            (None, false) => {
                // A following `{*rest}` may match nothing: `/files` for `/files/{*p}` is no match,
                // but `/files/` is (rest empty).
                return None;
            }
            (Some(r), false) => rest = r,
            (Some(_), true) => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_capture_segments_and_rest() {
        let p = PathPattern::parse_path("/products/{id}").unwrap();
        assert_eq!(p.matches("/products/42"), Some(vec![("id", "42")]));
        assert_eq!(p.matches("/products/42/x"), None);
        assert_eq!(p.matches("/products/"), None);
        assert_eq!(p.matches("/products"), None);

        let p = PathPattern::parse_path("/files/{*path}").unwrap();
        assert_eq!(p.matches("/files/a/b.txt"), Some(vec![("path", "a/b.txt")]));
        assert_eq!(p.matches("/files/"), Some(vec![("path", "")]));
        assert_eq!(p.matches("/files"), None);
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let p = PathPattern::parse_prefix("/api").unwrap();
        assert!(p.matches("/api").is_some());
        assert!(p.matches("/api/x").is_some());
        assert!(p.matches("/apix").is_none());
        assert!(
            PathPattern::parse_prefix("/")
                .unwrap()
                .matches("/anything")
                .is_some()
        );
    }

    #[test]
    fn bad_templates_are_rejected() {
        assert!(PathPattern::parse_path("/a/{*r}/b").is_err());
        assert!(PathPattern::parse_path("/a/x{id}").is_err());
        assert!(PathPattern::parse_path("/a/{id}/{id}").is_err());
        assert!(PathPattern::parse_path("a").is_err());
    }

    #[test]
    fn more_literal_text_ranks_first() {
        let exact = PathPattern::parse_path("/products/featured").unwrap();
        let template = PathPattern::parse_path("/products/{id}").unwrap();
        let prefix = PathPattern::parse_prefix("/products").unwrap();
        let root = PathPattern::parse_prefix("/").unwrap();
        assert!(exact.rank() < template.rank());
        assert!(template.rank() < prefix.rank());
        assert!(prefix.rank() < root.rank());
    }
}
