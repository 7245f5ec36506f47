//! Compiling a validated configuration into the immutable runtime snapshot
//! that requests walk. A snapshot is built off the hot path and published
//! atomically; requests hold the `Arc` they started with until they finish.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use serde_saphyr::Location;

use crate::auth::apikey::ApiKeyStore;
use crate::auth::cors::CorsPolicy;
use crate::auth::identity_headers::IdentityHeadersRt;
use crate::auth::ip::{IpFilter, parse_net};
use crate::auth::jwt::{Provider, Verifier};
use crate::auth::policy::AuthRt;
use crate::config::model::{Config, Limits, Route};
use crate::config::security::Credential;
use crate::config::{ConfigError, ConfigErrors};
use crate::headers::HeaderOpsRt;
use crate::ratelimit::{ConcurrencyLimiter, Limiter, RateLimitPolicy, Scope, Stores};
use crate::router::host::HostPattern;
use crate::router::pattern::PathPattern;
use crate::router::rewrite::PathRewrite;
use crate::router::table::{HeaderCondition, RouteConditions, RouteTable};
use crate::server::tls;
use crate::upstream::Pool;

pub const DEFAULT_MAX_HEADER_BYTES: u64 = 64 * 1024;
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Limits with every level's overrides applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectiveLimits {
    pub max_header_bytes: u64,
    pub max_body_bytes: u64,
    pub request_timeout: Duration,
}

impl EffectiveLimits {
    fn defaults() -> Self {
        Self {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    fn overridden_by(self, limits: &Limits) -> Self {
        Self {
            max_header_bytes: limits
                .max_header_bytes
                .map_or(self.max_header_bytes, |b| b.0),
            max_body_bytes: limits.max_body_bytes.map_or(self.max_body_bytes, |b| b.0),
            request_timeout: limits.request_timeout.map_or(self.request_timeout, |d| d.0),
        }
    }
}

/// A compiled route.
pub struct RouteRt {
    pub name: String,
    /// Client address rules of the route (the frontend's run first).
    pub ip: IpFilter,
    pub auth: AuthRt,
    /// Rate limits in order: the frontend's, the route's, the service's.
    pub limiters: Vec<Arc<Limiter>>,
    /// The service's in-flight limit.
    pub concurrency: Option<Arc<ConcurrencyLimiter>>,
    pub pool: Arc<Pool>,
    pub rewrite: Option<PathRewrite>,
    pub preserve_host: bool,
    pub limits: EffectiveLimits,
    /// Frontend rules first, then the route's own.
    pub request_headers: Vec<HeaderOpsRt>,
    pub response_headers: Vec<HeaderOpsRt>,
}

/// A compiled frontend.
pub struct FrontendRt {
    pub name: Arc<str>,
    pub listen: SocketAddr,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub limits: EffectiveLimits,
    pub routes: RouteTable<Arc<RouteRt>>,
    pub ip: IpFilter,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub cors: Option<CorsPolicy>,
    pub api_keys: Option<ApiKeyStore>,
    pub identity: IdentityHeadersRt,
}

/// Everything a request needs, immutable once published.
pub struct Snapshot {
    pub generation: u64,
    /// A handful at most: a scan over short names beats hashing them.
    pub frontends: Vec<Arc<FrontendRt>>,
    /// Which frontend each listening address serves.
    pub by_listen: HashMap<SocketAddr, Arc<str>>,
    pub pools: HashMap<String, Arc<Pool>>,
    pub verifier: Arc<Verifier>,
    /// Rate-limit state; outlives snapshots.
    pub stores: Stores,
    /// In-flight limits by service name.
    pub concurrency: HashMap<String, Arc<ConcurrencyLimiter>>,
    pub admin: Option<SocketAddr>,
    pub shutdown_grace: Duration,
    pub watch_config: bool,
}

impl Snapshot {
    pub fn frontend(&self, name: &str) -> Option<&Arc<FrontendRt>> {
        self.frontends.iter().find(|f| &*f.name == name)
    }

    pub fn frontend_at(&self, listen: SocketAddr) -> Option<&Arc<FrontendRt>> {
        self.frontend(self.by_listen.get(&listen)?)
    }
}

/// Compiles a validated config. Pools whose configuration is unchanged are
/// taken from `previous`, keeping their connections and counters.
pub fn compile(
    file: &Path,
    config: &Config,
    previous: Option<&Snapshot>,
) -> Result<Snapshot, ConfigErrors> {
    let mut errors = Vec::new();
    let mut pools = HashMap::new();
    for (name, service) in &config.services {
        let reused = previous
            .and_then(|p| p.pools.get(name))
            .filter(|p| p.config == service.value)
            .cloned();
        let pool = match reused {
            Some(pool) => pool,
            None => match Pool::build(name, &service.value) {
                Ok(pool) => Arc::new(pool),
                Err(e) => {
                    errors.push(ConfigError::at(file, &service.referenced, e.to_string()));
                    continue;
                }
            },
        };
        pools.insert(name.clone(), pool);
    }

    let verifier = compile_providers(file, config, previous, &mut errors);
    let stores = match build_stores(config, previous) {
        Ok(stores) => stores,
        Err(message) => {
            errors.push(ConfigError::at(file, &Location::UNKNOWN, message));
            return Err(ConfigErrors(errors));
        }
    };
    let mut limiter_errors = Vec::new();
    let mut limiters = |policies: &[RateLimitPolicy], at: &Location| -> Vec<Arc<Limiter>> {
        policies
            .iter()
            .filter_map(|p| match Limiter::build(p, &stores) {
                Ok(l) => Some(Arc::new(l)),
                Err(e) => {
                    limiter_errors.push(ConfigError::at(file, at, e.to_string()));
                    None
                }
            })
            .collect()
    };
    let mut service_limiters: HashMap<&str, Vec<Arc<Limiter>>> = HashMap::new();
    let mut concurrency = HashMap::new();
    for (name, service) in &config.services {
        service_limiters.insert(
            name,
            limiters(&service.value.rate_limits, &service.referenced),
        );
        if let Some(limit) = &service.value.concurrency {
            let previous_limiter = previous.and_then(|p| p.concurrency.get(name)).map(|c| &**c);
            match ConcurrencyLimiter::build(limit, previous_limiter) {
                Ok(c) => {
                    concurrency.insert(name.clone(), Arc::new(c));
                }
                Err(e) => errors.push(ConfigError::at(
                    file,
                    &service.referenced,
                    format!("service `{name}` concurrency: {e}"),
                )),
            }
        }
    }

    let server_limits = EffectiveLimits::defaults().overridden_by(&config.server.limits);
    let mut frontends = Vec::new();
    for spanned in &config.frontends {
        let f = &spanned.value;
        let limits = server_limits.overridden_by(&f.limits);
        let tls = match &f.tls {
            Some(t) => match tls::server_config(t) {
                Ok(c) => Some(Arc::new(c)),
                Err(e) => {
                    errors.push(ConfigError::at(file, &e.location, e.message));
                    None
                }
            },
            None => None,
        };
        let mut fail =
            |message: String| errors.push(ConfigError::at(file, &spanned.referenced, message));
        let ip = IpFilter::new(&f.ip_rules.allow, &f.ip_rules.deny).unwrap_or_else(|e| {
            fail(format!("frontend `{}` ip_rules: {e}", f.name.value));
            IpFilter::default()
        });
        let trusted_proxies = f
            .client_address
            .trusted_proxies
            .iter()
            .filter_map(|t| {
                parse_net(t)
                    .map_err(|e| fail(format!("trusted_proxies: {e}")))
                    .ok()
            })
            .collect();
        let cors = f.cors.as_ref().and_then(|c| {
            CorsPolicy::build(c)
                .map_err(|e| fail(format!("frontend `{}` cors: {e}", f.name.value)))
                .ok()
        });
        let api_keys = f.api_keys.as_ref().and_then(|k| {
            ApiKeyStore::build(k)
                .map_err(|e| fail(format!("frontend `{}` api_keys: {e}", f.name.value)))
                .ok()
        });
        let identity = IdentityHeadersRt::build(&f.identity_headers).unwrap_or_else(|e| {
            fail(e);
            IdentityHeadersRt::build(&Default::default())
                .expect("the default identity headers are valid")
        });
        let frontend_limiters = limiters(&f.rate_limits, &spanned.referenced);
        let frontend_request = HeaderOpsRt::compile(&f.headers.request);
        let frontend_response = HeaderOpsRt::compile(&f.headers.response);
        let mut routes = Vec::new();
        for (index, route) in f.routes.iter().enumerate() {
            let Some(pool) = pools.get(&route.value.service.value) else {
                continue;
            };
            let r = &route.value;
            let auth = AuthRt::merge(&f.auth, &r.auth);
            if let Some(problem) = auth_problem(&auth, &verifier, api_keys.is_some()) {
                errors.push(ConfigError::at(file, &route.referenced, problem));
            }
            let ip = IpFilter::new(&r.ip_rules.allow, &r.ip_rules.deny).unwrap_or_else(|e| {
                errors.push(ConfigError::at(
                    file,
                    &route.referenced,
                    format!("ip_rules: {e}"),
                ));
                IpFilter::default()
            });
            let service_name = &route.value.service.value;
            let route_limiters: Vec<Arc<Limiter>> = frontend_limiters
                .iter()
                .cloned()
                .chain(limiters(&r.rate_limits, &route.referenced))
                .chain(
                    service_limiters
                        .get(service_name.as_str())
                        .into_iter()
                        .flatten()
                        .cloned(),
                )
                .collect();
            // The same policy attached twice (say on a frontend and on a
            // service) shares one bucket, so it must charge a request once.
            let mut seen = std::collections::HashSet::new();
            let mut route_limiters = route_limiters;
            route_limiters.retain(|limiter| seen.insert(limiter.id()));
            let compiled = RouteRt {
                ip,
                auth,
                limiters: route_limiters,
                concurrency: concurrency.get(service_name).cloned(),
                name: r
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("{}#{index}", f.name.value)),
                pool: pool.clone(),
                rewrite: None,
                preserve_host: r.preserve_host,
                limits: limits.overridden_by(&r.limits),
                request_headers: non_empty(vec![
                    frontend_request.clone(),
                    HeaderOpsRt::compile(&r.headers.request),
                ]),
                response_headers: non_empty(vec![
                    frontend_response.clone(),
                    HeaderOpsRt::compile(&r.headers.response),
                ]),
            };
            match conditions(r, compiled) {
                Ok((conditions, compiled)) => routes.push((conditions, Arc::new(compiled))),
                Err((location, message)) => errors.push(ConfigError::at(file, &location, message)),
            }
        }
        let name: Arc<str> = Arc::from(f.name.value.as_str());
        frontends.push(Arc::new(FrontendRt {
            name,
            listen: f.listen.value.0,
            tls,
            limits,
            routes: RouteTable::new(routes),
            ip,
            trusted_proxies,
            cors,
            api_keys,
            identity,
        }));
    }
    errors.extend(limiter_errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let by_listen = frontends
        .iter()
        .map(|f| (f.listen, f.name.clone()))
        .collect();
    Ok(Snapshot {
        generation: previous.map_or(1, |p| p.generation + 1),
        frontends,
        by_listen,
        pools,
        verifier,
        stores,
        concurrency,
        admin: config.admin.as_ref().map(|a| a.listen.value.0),
        shutdown_grace: config.server.shutdown_grace.0,
        watch_config: config.server.watch_config,
    })
}

/// Providers are carried over when unchanged (keeping their fetched keys),
/// and so is the verified-token cache when no provider changed at all.
fn compile_providers(
    file: &Path,
    config: &Config,
    previous: Option<&Snapshot>,
    errors: &mut Vec<ConfigError>,
) -> Arc<Verifier> {
    let mut providers = HashMap::new();
    let mut all_reused = true;
    for (name, spanned) in &config.identity_providers {
        // A provider with a key file is built afresh, so a reload re-reads
        // the file even when the config did not change; the running
        // snapshot keeps its own keys until the new one is published.
        let reused = previous
            .and_then(|p| p.verifier.providers.get(name))
            .filter(|p| p.config == spanned.value && spanned.value.keys.file.is_none())
            .cloned();
        all_reused &= reused.is_some();
        let provider = match reused {
            Some(p) => p,
            None => match Provider::build(name, &spanned.value) {
                Ok(p) => Arc::new(p),
                Err(e) => {
                    errors.push(ConfigError::at(
                        file,
                        &spanned.referenced,
                        format!("identity provider `{name}`: {e}"),
                    ));
                    continue;
                }
            },
        };
        providers.insert(name.clone(), provider);
    }
    // The token's `iss` picks the provider, so two providers with one issuer
    // would make the choice arbitrary.
    let mut issuers: HashMap<&str, &str> = HashMap::new();
    for (name, spanned) in &config.identity_providers {
        if let Some(first) = issuers.insert(&spanned.value.issuer, name) {
            errors.push(ConfigError::at(
                file,
                &spanned.referenced,
                format!(
                    "identity provider `{name}` has the same issuer as `{first}`: `{}`",
                    spanned.value.issuer
                ),
            ));
        }
    }
    match previous {
        Some(p) if all_reused && p.verifier.providers.len() == providers.len() => {
            p.verifier.clone()
        }
        _ => Arc::new(Verifier::new(providers)),
    }
}

/// The rate-limit stores, carried over from the previous snapshot.
fn build_stores(config: &Config, previous: Option<&Snapshot>) -> Result<Stores, String> {
    let policies = config
        .frontends
        .iter()
        .flat_map(|f| {
            f.value
                .rate_limits
                .iter()
                .chain(f.value.routes.iter().flat_map(|r| &r.value.rate_limits))
        })
        .chain(config.services.values().flat_map(|s| &s.value.rate_limits));
    let cluster = policies.into_iter().any(|p| p.scope == Scope::Cluster);
    Stores::build(&config.rate_limit, cluster, previous.map(|p| &p.stores))
        .map_err(|e| format!("rate_limit: {e}"))
}

/// A route policy that cannot work with what is configured.
fn auth_problem(auth: &AuthRt, verifier: &Verifier, has_api_keys: bool) -> Option<String> {
    if let Some(names) = &auth.providers {
        if let Some(missing) = names.iter().find(|n| !verifier.providers.contains_key(*n)) {
            return Some(format!(
                "auth names identity provider `{missing}`, which does not exist"
            ));
        }
    }
    let needs_jwt = matches!(auth.require, Credential::Jwt) || auth.needs_authorization();
    if needs_jwt && verifier.is_empty() {
        return Some("this route requires a token but no identity_providers are configured".into());
    }
    if matches!(auth.require, Credential::ApiKey) && !has_api_keys {
        return Some("this route requires an API key but its frontend has no api_keys".into());
    }
    None
}

fn non_empty(ops: Vec<HeaderOpsRt>) -> Vec<HeaderOpsRt> {
    ops.into_iter().filter(|o| !o.is_empty()).collect()
}

/// Builds the match conditions and the rewrite of a validated route.
fn conditions(
    route: &Route,
    mut compiled: RouteRt,
) -> Result<(RouteConditions, RouteRt), (Location, String)> {
    let m = &route.matcher;
    let spanned_err = |s: &serde_saphyr::Spanned<String>, e: String| (s.referenced, e);
    let path = match (&m.path, &m.path_prefix) {
        (Some(p), _) => PathPattern::parse_path(&p.value).map_err(|e| spanned_err(p, e))?,
        (None, Some(p)) => PathPattern::parse_prefix(&p.value).map_err(|e| spanned_err(p, e))?,
        (None, None) => PathPattern::Any,
    };
    let mut hosts = Vec::new();
    for h in &m.hosts {
        hosts.push(HostPattern::parse(&h.value).map_err(|e| spanned_err(h, e))?);
    }
    let mut methods = Vec::new();
    for method in &m.methods {
        methods.push(
            Method::from_bytes(method.value.as_bytes())
                .map_err(|e| (method.referenced, e.to_string()))?,
        );
    }
    let headers = m
        .headers
        .iter()
        .filter_map(|(name, value)| {
            Some(HeaderCondition {
                name: HeaderName::try_from(name.as_str()).ok()?,
                value: if value == "*" {
                    None
                } else {
                    Some(HeaderValue::try_from(value.as_str()).ok()?)
                },
            })
        })
        .collect();
    if let Some(rewrite) = &route.rewrite {
        compiled.rewrite = Some(match (&rewrite.strip_prefix, &rewrite.path) {
            (Some(p), _) => PathRewrite::strip_prefix(&p.value).map_err(|e| spanned_err(p, e))?,
            (None, Some(p)) => PathRewrite::template(&p.value, &path.param_names())
                .map_err(|e| spanned_err(p, e))?,
            (None, None) => return Err((route.service.referenced, "empty rewrite".into())),
        });
    }
    Ok((
        RouteConditions {
            hosts,
            methods,
            path,
            headers,
        },
        compiled,
    ))
}
