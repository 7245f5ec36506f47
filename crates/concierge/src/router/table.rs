//! The route table of one frontend: every route, sorted once by specificity
//! so that lookup is a scan that stops at the first full match.
//!
//! Precedence (documented for operators in docs/routing.md):
//! 1. host: exact names, then wildcards (longest suffix first), then any host;
//! 2. path: exact, then templates and prefixes by the length of their literal
//!    text before the first parameter (longest first; on a tie a template beats
//!    a template with `{*rest}`, which beats a prefix), then no path condition;
//! 3. routes with more header conditions first;
//! 4. routes with a method list before routes for any method;
//! 5. the order in the file.

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::host::HostPattern;
use super::pattern::{Params, PathPattern};

/// A header condition: present with exactly this value, or present at all.
#[derive(Debug, Clone)]
pub struct HeaderCondition {
    pub name: HeaderName,
    pub value: Option<HeaderValue>,
}

/// Everything a route matches on.
#[derive(Debug, Clone)]
pub struct RouteConditions {
    pub hosts: Vec<HostPattern>,
    pub methods: Vec<Method>,
    pub path: PathPattern,
    pub headers: Vec<HeaderCondition>,
}

struct Entry<T> {
    conditions: RouteConditions,
    value: T,
}

/// The outcome of a lookup.
pub enum Lookup<'t, T> {
    Found {
        value: &'t T,
        params: Params<'t>,
    },
    /// A route matched host and path but not the method.
    MethodNotAllowed {
        allow: Vec<Method>,
    },
    NotFound,
}

pub struct RouteTable<T> {
    entries: Vec<Entry<T>>,
}

type SortKey = (
    (u8, std::cmp::Reverse<usize>),
    (u8, std::cmp::Reverse<usize>, u8),
    std::cmp::Reverse<usize>,
    bool,
    usize,
);

fn sort_key(conditions: &RouteConditions, index: usize) -> SortKey {
    let host = conditions
        .hosts
        .iter()
        .map(HostPattern::rank)
        .min()
        .unwrap_or((2, std::cmp::Reverse(0)));
    (
        host,
        conditions.path.rank(),
        std::cmp::Reverse(conditions.headers.len()),
        conditions.methods.is_empty(),
        index,
    )
}

impl<T> RouteTable<T> {
    /// Builds a table from routes in file order.
    pub fn new(routes: Vec<(RouteConditions, T)>) -> Self {
        let mut keyed: Vec<(SortKey, Entry<T>)> = routes
            .into_iter()
            .enumerate()
            .map(|(index, (conditions, value))| {
                (sort_key(&conditions, index), Entry { conditions, value })
            })
            .collect();
        keyed.sort_by_key(|(key, _)| *key);
        Self {
            entries: keyed.into_iter().map(|(_, e)| e).collect(),
        }
    }

    /// Finds the most specific route for a request. `host` is lower-case
    /// without port; `path` is normalised.
    pub fn lookup<'t>(
        &'t self,
        host: Option<&str>,
        method: &Method,
        path: &'t str,
        headers: &HeaderMap,
    ) -> Lookup<'t, T> {
        let mut allow: Vec<Method> = Vec::new();
        for entry in &self.entries {
            let c = &entry.conditions;
            let host_ok =
                c.hosts.is_empty() || host.is_some_and(|h| c.hosts.iter().any(|p| p.matches(h)));
            if !host_ok || !headers_match(&c.headers, headers) {
                continue;
            }
            let Some(params) = c.path.matches(path) else {
                continue;
            };
            if c.methods.is_empty() || c.methods.contains(method) {
                return Lookup::Found {
                    value: &entry.value,
                    params,
                };
            }
            for m in &c.methods {
                if !allow.contains(m) {
                    allow.push(m.clone());
                }
            }
        }
        if allow.is_empty() {
            Lookup::NotFound
        } else {
            Lookup::MethodNotAllowed { allow }
        }
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|e| &e.value)
    }
}

fn headers_match(conditions: &[HeaderCondition], headers: &HeaderMap) -> bool {
    conditions.iter().all(|c| match &c.value {
        None => headers.contains_key(&c.name),
        Some(v) => headers.get_all(&c.name).iter().any(|got| got == v),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(hosts: &[&str], methods: &[&str], path: PathPattern) -> RouteConditions {
        RouteConditions {
            hosts: hosts
                .iter()
                .map(|h| HostPattern::parse(h).unwrap())
                .collect(),
            methods: methods.iter().map(|m| m.parse().unwrap()).collect(),
            path,
            headers: Vec::new(),
        }
    }

    fn find(
        table: &RouteTable<&'static str>,
        host: Option<&str>,
        method: &str,
        path: &str,
    ) -> String {
        match table.lookup(host, &method.parse().unwrap(), path, &HeaderMap::new()) {
            Lookup::Found { value, .. } => value.to_string(),
            Lookup::MethodNotAllowed { allow } => format!("405 {allow:?}"),
            Lookup::NotFound => "404".into(),
        }
    }

    #[test]
    fn most_specific_route_wins_regardless_of_file_order() {
        let table = RouteTable::new(vec![
            (
                cond(&[], &[], PathPattern::parse_prefix("/").unwrap()),
                "root",
            ),
            (
                cond(&[], &[], PathPattern::parse_prefix("/products").unwrap()),
                "prefix",
            ),
            (
                cond(
                    &[],
                    &["GET"],
                    PathPattern::parse_path("/products/{id}").unwrap(),
                ),
                "template",
            ),
            (
                cond(
                    &[],
                    &[],
                    PathPattern::parse_path("/products/featured").unwrap(),
                ),
                "exact",
            ),
            (
                cond(
                    &["*.zimmart.co.zw"],
                    &[],
                    PathPattern::parse_prefix("/").unwrap(),
                ),
                "wild",
            ),
            (
                cond(
                    &["admin.zimmart.co.zw"],
                    &[],
                    PathPattern::parse_prefix("/").unwrap(),
                ),
                "host",
            ),
        ]);
        assert_eq!(find(&table, None, "GET", "/products/featured"), "exact");
        assert_eq!(find(&table, None, "GET", "/products/7"), "template");
        assert_eq!(find(&table, None, "POST", "/products/7"), "prefix");
        assert_eq!(find(&table, None, "GET", "/products"), "prefix");
        assert_eq!(find(&table, None, "GET", "/other"), "root");
        assert_eq!(
            find(&table, Some("shop.zimmart.co.zw"), "GET", "/products/7"),
            "wild"
        );
        assert_eq!(
            find(&table, Some("admin.zimmart.co.zw"), "GET", "/x"),
            "host"
        );
    }

    #[test]
    fn wrong_method_is_405_with_allow_list() {
        let table = RouteTable::new(vec![
            (
                cond(&[], &["GET"], PathPattern::parse_path("/p/{id}").unwrap()),
                "get",
            ),
            (
                cond(
                    &[],
                    &["DELETE"],
                    PathPattern::parse_path("/p/{id}").unwrap(),
                ),
                "delete",
            ),
        ]);
        assert_eq!(find(&table, None, "DELETE", "/p/1"), "delete");
        assert_eq!(find(&table, None, "PUT", "/p/1"), "405 [GET, DELETE]");
        assert_eq!(find(&table, None, "GET", "/q"), "404");
    }

    #[test]
    fn header_conditions_take_precedence() {
        let mut canary = cond(&[], &[], PathPattern::parse_prefix("/").unwrap());
        canary.headers.push(HeaderCondition {
            name: HeaderName::from_static("x-canary"),
            value: Some(HeaderValue::from_static("1")),
        });
        let table = RouteTable::new(vec![
            (
                cond(&[], &[], PathPattern::parse_prefix("/").unwrap()),
                "stable",
            ),
            (canary, "canary"),
        ]);
        let mut headers = HeaderMap::new();
        headers.insert("x-canary", HeaderValue::from_static("1"));
        let hit = table.lookup(None, &Method::GET, "/", &headers);
        assert!(matches!(
            hit,
            Lookup::Found {
                value: &"canary",
                ..
            }
        ));
        assert_eq!(find(&table, None, "GET", "/"), "stable");
    }
}
