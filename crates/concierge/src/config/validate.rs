//! Checks that need the whole file: references between sections, duplicates
//! and values whose syntax serde cannot see. Every problem is collected; the
//! caller reports them all at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use serde_saphyr::{Location, Spanned};

use super::error::ConfigError;
use super::model::{Config, HashKey, HeaderRules, LoadBalancing, Route, Target};
use crate::router::host::HostPattern;
use crate::router::pattern::PathPattern;
use crate::router::rewrite::PathRewrite;

struct Collector<'a> {
    file: &'a Path,
    errors: Vec<ConfigError>,
}

impl Collector<'_> {
    fn push(&mut self, location: &Location, message: impl Into<String>) {
        self.errors
            .push(ConfigError::at(self.file, location, message));
    }
}

pub fn validate(file: &Path, config: &Config) -> Vec<ConfigError> {
    let mut c = Collector {
        file,
        errors: Vec::new(),
    };
    let mut addresses: HashMap<SocketAddr, String> = HashMap::new();
    if let Some(admin) = &config.admin {
        addresses.insert(admin.listen.value.0, "the admin API".into());
    }
    let mut names: HashMap<&str, ()> = HashMap::new();
    if config.frontends.is_empty() {
        c.push(&Location::UNKNOWN, "at least one frontend is required");
    }
    for frontend in &config.frontends {
        let f = &frontend.value;
        if f.name.value.is_empty() {
            c.push(&f.name.referenced, "a frontend name cannot be empty");
        }
        if names.insert(&f.name.value, ()).is_some() {
            c.push(
                &f.name.referenced,
                format!("duplicate frontend name `{}`", f.name.value),
            );
        }
        let addr = f.listen.value.0;
        if let Some(owner) = addresses.get(&addr) {
            c.push(
                &f.listen.referenced,
                format!("duplicate listener: {addr} is already used by {owner}"),
            );
        } else {
            addresses.insert(addr, format!("frontend `{}`", f.name.value));
        }
        if let Some(tls) = &f.tls {
            if tls.certificates.is_empty() {
                c.push(&frontend.referenced, "tls needs at least one certificate");
            }
            for cert in &tls.certificates {
                for name in &cert.server_names {
                    if let Err(e) = HostPattern::parse(name) {
                        c.push(&cert.cert.referenced, format!("server_names: {e}"));
                    }
                }
            }
        }
        check_header_rules(&mut c, &frontend.referenced, &f.headers);
        for route in &f.routes {
            check_route(&mut c, config, &route.referenced, &route.value);
        }
    }
    for (name, service) in &config.services {
        let here = service.referenced;
        let service = &service.value;
        if service.targets.is_empty() {
            c.push(&here, format!("service `{name}` has no targets"));
        }
        for target in &service.targets {
            let (address, weight) = match target {
                Target::Plain(a) => (a, 1),
                Target::Weighted { address, weight } => (address, *weight),
            };
            if let Err(e) = crate::upstream::target::parse_authority(address) {
                c.push(&here, format!("service `{name}`: {e}"));
            }
            if weight == 0 {
                c.push(
                    &here,
                    format!("service `{name}`: target {address} has weight 0"),
                );
            }
        }
        if let LoadBalancing::ConsistentHash(HashKey::Header(h)) = &service.load_balancing {
            if http::HeaderName::try_from(h.as_str()).is_err() {
                c.push(
                    &here,
                    format!("service `{name}`: `{h}` is not a header name"),
                );
            }
        }
    }
    c.errors
}

fn check_route(c: &mut Collector<'_>, config: &Config, at: &Location, route: &Route) {
    let service = &route.service;
    if !config.services.contains_key(&service.value) {
        let known: Vec<&str> = config.services.keys().map(String::as_str).collect();
        c.push(
            &service.referenced,
            format!(
                "route names service `{}`, which does not exist (services: {})",
                service.value,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        );
    }
    let m = &route.matcher;
    let path = match (&m.path, &m.path_prefix) {
        (Some(_), Some(p)) => {
            c.push(
                &p.referenced,
                "give either `path` or `path_prefix`, not both",
            );
            None
        }
        (Some(p), None) => parse_spanned(c, p, PathPattern::parse_path),
        (None, Some(p)) => parse_spanned(c, p, PathPattern::parse_prefix),
        (None, None) => Some(PathPattern::Any),
    };
    for host in &m.hosts {
        parse_spanned(c, host, HostPattern::parse);
    }
    for method in &m.methods {
        if http::Method::from_bytes(method.value.as_bytes()).is_err()
            || method.value.chars().any(|ch| ch.is_ascii_lowercase())
        {
            c.push(
                &method.referenced,
                format!(
                    "`{}` is not an HTTP method (use upper case, e.g. GET)",
                    method.value
                ),
            );
        }
    }
    for (name, value) in &m.headers {
        if http::HeaderName::try_from(name.as_str()).is_err()
            || http::HeaderValue::try_from(value.as_str()).is_err()
        {
            c.push(
                at,
                format!("match.headers: `{name}: {value}` is not a valid header"),
            );
        }
    }
    if let Some(rewrite) = &route.rewrite {
        match (&rewrite.strip_prefix, &rewrite.path) {
            (Some(_), Some(p)) => c.push(
                &p.referenced,
                "give either `strip_prefix` or `path`, not both",
            ),
            (None, None) => c.push(at, "rewrite needs `strip_prefix` or `path`"),
            (Some(p), None) => {
                parse_spanned(c, p, PathRewrite::strip_prefix);
            }
            (None, Some(p)) => {
                if let Some(path) = &path {
                    let names = path.param_names();
                    parse_spanned(c, p, |t| PathRewrite::template(t, &names));
                }
            }
        }
    }
    check_header_rules(c, at, &route.headers);
}

fn check_header_rules(c: &mut Collector<'_>, at: &Location, rules: &HeaderRules) {
    for ops in [&rules.request, &rules.response] {
        for (name, value) in ops.add.iter().chain(&ops.set) {
            if http::HeaderName::try_from(name.as_str()).is_err()
                || http::HeaderValue::try_from(value.as_str()).is_err()
            {
                c.push(
                    at,
                    format!("headers: `{name}: {value}` is not a valid header"),
                );
            }
        }
        for name in &ops.remove {
            if http::HeaderName::try_from(name.as_str()).is_err() {
                c.push(at, format!("headers.remove: `{name}` is not a header name"));
            }
        }
    }
}

fn parse_spanned<T>(
    c: &mut Collector<'_>,
    value: &Spanned<String>,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Option<T> {
    match parse(&value.value) {
        Ok(t) => Some(t),
        Err(e) => {
            c.push(&value.referenced, e);
            None
        }
    }
}
