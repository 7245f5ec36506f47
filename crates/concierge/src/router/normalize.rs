//! Path normalisation, done once before routing so that every encoding of a
//! path reaches the same route and the upstream sees exactly what was matched.
//!
//! The steps follow RFC 3986: percent-encoded unreserved characters are
//! decoded (section 6.2.2.2), remaining escapes are upper-cased, dot segments
//! are removed (5.2.4) and runs of slashes are merged. Encoded slashes (`%2F`)
//! stay encoded, so `..%2F` is never a dot segment.

use std::borrow::Cow;

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request path must start with `/`")]
    NotAbsolute,
    #[error("the request path has a malformed percent-escape")]
    BadEscape,
}

/// Returns the normalised form of `path` (the path only, no query).
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

/// The common case: nothing to decode, no dot segments, no doubled slashes.
fn is_normal(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.contains(&b'%') || path.contains("//") {
        return false;
    }
    !path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            // Safe to slice char-wise: '%' is ASCII, so `i` is on a boundary.
            let next = path[i..].find('%').map_or(bytes.len(), |n| i + n);
            out.push_str(&path[i..next]);
            i = next;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).copied().and_then(hex_value),
            bytes.get(i + 2).copied().and_then(hex_value),
        ) else {
            return Err(PathError::BadEscape);
        };
        let value = hi << 4 | lo;
        if is_unreserved(value) {
            out.push(value as char);
        } else {
            out.push('%');
            out.push(char::from(bytes[i + 1]).to_ascii_uppercase());
            out.push(char::from(bytes[i + 2]).to_ascii_uppercase());
        }
        i += 3;
    }
    Ok(out)
}

/// Removes `.` and `..` segments and empty segments between slashes. A path
/// can never climb above the root: extra `..` segments are dropped.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let trailing_slash = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str) -> String {
        normalize_path(path).unwrap().into_owned()
    }

    #[test]
    fn leaves_clean_paths_borrowed() {
        assert!(matches!(
            normalize_path("/products/1"),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn removes_dot_segments_and_duplicate_slashes() {
        assert_eq!(norm("/public/../admin"), "/admin");
        assert_eq!(norm("/a/./b//c/"), "/a/b/c/");
        assert_eq!(norm("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(norm("/a/b/.."), "/a/");
        assert_eq!(norm("//"), "/");
    }

    #[test]
    fn decodes_only_unreserved_escapes() {
        assert_eq!(norm("/public/%2e%2e/admin"), "/admin");
        assert_eq!(norm("/public/%2E%2E/admin"), "/admin");
        assert_eq!(norm("/%7Euser/%41"), "/~user/A");
        assert_eq!(norm("/a%2fb"), "/a%2Fb");
        assert_eq!(norm("/public/..%2fadmin"), "/public/..%2Fadmin");
        assert_eq!(norm("/x%20y"), "/x%20y");
    }

    #[test]
    fn rejects_malformed_input() {
        assert_eq!(normalize_path("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize_path("/a%2"), Err(PathError::BadEscape));
        assert_eq!(normalize_path("relative"), Err(PathError::NotAbsolute));
    }
}
