//! The configuration file model: what operators write, deserialised as-is.
//!
//! Nothing here is used on the request path. `crate::snapshot` compiles this
//! model into the runtime snapshot after `super::validate` has checked it.
//! Every struct denies unknown fields so that a typo is an error, not a
//! silently ignored setting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::security::{
    ApiKeys, AuthPolicy, ClientAddress, Cors, IdentityHeaders, IdentityProvider, IpRules, Providers,
};
use super::units::{ByteSize, DurationStr};
use crate::ratelimit::{ConcurrencyLimit, RateLimitPolicy, RateLimitSettings};

/// The whole configuration file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Process-wide defaults for limits, timeouts and shutdown.
    #[serde(default)]
    pub server: ServerSettings,
    /// The admin API listener. Absent means no admin API.
    #[serde(default)]
    pub admin: Option<Admin>,
    /// Named listeners, one per client profile (backend for frontend).
    #[schemars(with = "Vec<Frontend>")]
    pub frontends: Vec<Spanned<Frontend>>,
    /// Rate-limit stores: Redis for cluster-wide limits, bounds of the local store.
    #[serde(default)]
    pub rate_limit: RateLimitSettings,
    /// JWT issuers the gateway trusts, by name.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, IdentityProvider>")]
    pub identity_providers: Providers,
    /// Upstream pools, by name.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Service>")]
    pub services: BTreeMap<String, Spanned<Service>>,
}

/// Process-wide settings. Frontends and routes may override the limits.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Default request limits for every frontend.
    pub limits: Limits,
    /// How long SIGTERM waits for in-flight requests before exiting.
    pub shutdown_grace: DurationStr,
    /// Re-read the config file when it changes on disk.
    pub watch_config: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            shutdown_grace: DurationStr::from_secs(30),
            watch_config: true,
        }
    }
}

/// Request limits. Every field is optional so a frontend or route can
/// override just one of them; unset fields inherit from the enclosing level.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request head (request line and headers). Default 64KiB.
    pub max_header_bytes: Option<ByteSize>,
    /// Largest request body; larger bodies get 413. Default 10MiB.
    pub max_body_bytes: Option<ByteSize>,
    /// Time allowed for the upstream to answer with headers; then 504. Default 30s.
    pub request_timeout: Option<DurationStr>,
}

/// The admin API.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Address of the admin listener, e.g. `127.0.0.1:9901`.
    #[schemars(with = "String")]
    pub listen: Spanned<Address>,
}

/// A socket address written as `host:port` (IPv6 as `[::1]:8080`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address(pub SocketAddr);

/// A named listener with its own routes and defaults: one backend for frontend.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Frontend {
    /// Unique name, used in logs and metrics.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// Listening address, e.g. `0.0.0.0:8080`.
    #[schemars(with = "String")]
    pub listen: Spanned<Address>,
    /// Terminate TLS on this listener.
    #[serde(default)]
    pub tls: Option<Tls>,
    /// Limits for this frontend; unset fields inherit `server.limits`.
    #[serde(default)]
    pub limits: Limits,
    /// Header rules applied to every route of this frontend (before the route's own).
    #[serde(default)]
    pub headers: HeaderRules,
    /// Client address allow/deny rules for every route (checked before the route's).
    #[serde(default)]
    pub ip_rules: IpRules,
    /// Where the client address comes from behind trusted proxies.
    #[serde(default)]
    pub client_address: ClientAddress,
    /// Default authentication and authorization for the routes.
    #[serde(default)]
    pub auth: AuthPolicy,
    /// Names of the trusted identity headers, and optional signing.
    #[serde(default)]
    pub identity_headers: IdentityHeaders,
    /// API keys accepted on this frontend.
    #[serde(default)]
    pub api_keys: Option<ApiKeys>,
    /// CORS; preflights are answered here, never forwarded.
    #[serde(default)]
    pub cors: Option<Cors>,
    /// Rate limits for every request to this frontend.
    #[serde(default)]
    pub rate_limits: Vec<RateLimitPolicy>,
    /// Routes, matched by specificity (see docs/routing.md), not by order.
    #[serde(default)]
    #[schemars(with = "Vec<Route>")]
    pub routes: Vec<Spanned<Route>>,
}

/// TLS termination settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Certificates; the client's SNI picks one, the first is the default.
    pub certificates: Vec<Certificate>,
}

/// One certificate chain and its private key, from PEM files.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// PEM file holding the certificate chain, leaf first.
    #[schemars(with = "String")]
    pub cert: Spanned<PathBuf>,
    /// PEM file holding the private key (PKCS#8, PKCS#1 or SEC1).
    #[schemars(with = "String")]
    pub key: Spanned<PathBuf>,
    /// SNI names this certificate answers for (exact or `*.example.com`).
    /// A client whose SNI matches no certificate gets the first one.
    #[serde(default)]
    pub server_names: Vec<String>,
}

/// One route: what it matches and where it sends the request.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Name used in logs and metrics; defaults to `<frontend>#<index>`.
    #[serde(default)]
    pub name: Option<String>,
    /// What requests this route takes.
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    /// The service (upstream pool) that handles matching requests.
    #[schemars(with = "String")]
    pub service: Spanned<String>,
    /// Path rewrite before forwarding.
    #[serde(default)]
    pub rewrite: Option<Rewrite>,
    /// Keep the client's Host header instead of the target's authority.
    #[serde(default)]
    pub preserve_host: bool,
    /// Limits for this route; unset fields inherit the frontend's.
    #[serde(default)]
    pub limits: Limits,
    /// Header rules applied after the frontend's.
    #[serde(default)]
    pub headers: HeaderRules,
    /// Client address rules, checked after the frontend's.
    #[serde(default)]
    pub ip_rules: IpRules,
    /// Overrides of the frontend's auth policy.
    #[serde(default)]
    pub auth: AuthPolicy,
    /// Rate limits for this route, checked after the frontend's.
    #[serde(default)]
    pub rate_limits: Vec<RateLimitPolicy>,
}

/// Request matching conditions; all given conditions must hold.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Hosts, exact (`api.example.com`) or wildcard (`*.example.com`). Empty matches any host.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub hosts: Vec<Spanned<String>>,
    /// Methods; empty matches any method.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub methods: Vec<Spanned<String>>,
    /// Exact path (`/health`) or template with `{param}` segments and a final `{*rest}`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub path: Option<Spanned<String>>,
    /// Path prefix, matched on segment boundaries: `/api` matches `/api` and `/api/x`, not `/apix`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub path_prefix: Option<Spanned<String>>,
    /// Request headers that must be present with exactly this value (`"*"`: present with any value).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// Path rewrite: either strip a prefix, or build the path from a template
/// using the parameters captured by the route's `path`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// Remove this prefix from the path (`/api/products` → `/products`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub strip_prefix: Option<Spanned<String>>,
    /// Replace the path, e.g. `/v1/items/{id}` or `/files/{rest}`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub path: Option<Spanned<String>>,
}

/// Add, set and remove headers on the request and the response.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderRules {
    /// Rules for the request sent upstream.
    #[serde(default)]
    pub request: HeaderOps,
    /// Rules for the response sent to the client.
    #[serde(default)]
    pub response: HeaderOps,
}

/// Header operations, applied in the order remove, set, add.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    /// Append a value, keeping existing ones.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Replace any existing values.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Remove every value of these headers.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// An upstream pool.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Targets as `host:port`, or with a weight.
    pub targets: Vec<Target>,
    /// How to speak to the targets.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// How a target is picked for each request.
    #[serde(default)]
    pub load_balancing: LoadBalancing,
    /// Timeouts towards the targets.
    #[serde(default)]
    pub timeouts: UpstreamTimeouts,
    /// Idle keep-alive connections kept per target.
    #[serde(default = "default_max_idle")]
    pub max_idle_per_target: usize,
    /// PEM bundle of CA certificates for `https`/`h2` targets; default the public web roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Rate limits for every request to this service, whichever route it came by
    /// (use `key: service` for one budget shared by all clients).
    #[serde(default)]
    pub rate_limits: Vec<RateLimitPolicy>,
    /// Shed load beyond this many requests in flight with 503.
    #[serde(default)]
    pub concurrency: Option<ConcurrencyLimit>,
}

fn default_max_idle() -> usize {
    256
}

/// One upstream target.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Target {
    /// `host:port`, weight 1.
    Plain(String),
    /// A target with an explicit weight.
    Weighted {
        /// `host:port`.
        address: String,
        /// Relative share of requests (round robin and consistent hash).
        weight: u32,
    },
}

/// Upstream wire protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 in clear text with keep-alive pooling.
    #[default]
    Http1,
    /// HTTP/2 in clear text (prior knowledge).
    H2c,
    /// HTTPS, HTTP/2 or HTTP/1.1 chosen by ALPN.
    Https,
}

/// Load-balancing algorithm.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    /// Each target in turn, by weight.
    #[default]
    RoundRobin,
    /// The target with the fewest requests in flight.
    LeastRequest,
    /// Rendezvous hashing of a key, so a key keeps its target while the pool is stable.
    ConsistentHash(HashKey),
}

/// What the consistent hash is computed over.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HashKey {
    /// A request header (falls back to the client IP when absent).
    Header(String),
    /// The client IP address.
    ClientIp,
}

/// Timeouts towards one service.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTimeouts {
    /// TCP (and TLS) connect. Default 5s; on expiry 502.
    pub connect: DurationStr,
    /// Until the response headers arrive; overrides the route/frontend request timeout.
    pub request: Option<DurationStr>,
    /// How long an idle pooled connection is kept. Default 90s.
    pub idle: DurationStr,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        Self {
            connect: DurationStr::from_secs(5),
            request: None,
            idle: DurationStr::from_secs(90),
        }
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse::<SocketAddr>().map(Address).map_err(|_| {
            serde::de::Error::custom(format!(
                "`{text}` is not a socket address: expected ip:port, e.g. 0.0.0.0:8080 or [::1]:8080"
            ))
        })
    }
}
