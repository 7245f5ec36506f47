//! The security sections of the configuration file: identity providers,
//! authentication and authorization policies, identity headers, API keys,
//! CORS and IP rules.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::units::{ByteSize, DurationStr};

/// A JWT issuer the gateway trusts. A token's `iss` picks its provider.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityProvider {
    /// Exact `iss` value of this provider's tokens.
    pub issuer: String,
    /// Accepted audiences; a token's `aud` must contain one of them.
    pub audiences: Vec<String>,
    /// Where the signing keys come from.
    pub keys: KeySource,
    /// Accepted algorithms (RS256/384/512, PS256/384/512, ES256/384, EdDSA, HS256/384/512).
    pub algorithms: Vec<String>,
    /// Allowed clock skew for `exp`, `nbf` and `iat`. Default 30s.
    #[serde(default = "default_leeway")]
    pub leeway: DurationStr,
    /// Require `exp`. Default true.
    #[serde(default = "yes")]
    pub require_exp: bool,
    /// Largest accepted token. Default 8KiB.
    #[serde(default = "default_max_token")]
    pub max_token_bytes: ByteSize,
    /// Claim holding the roles, as a dotted path (`realm_access.roles`). Default `role`.
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// How often the key set is refreshed. Default 5m.
    #[serde(default = "default_refresh")]
    pub refresh_interval: DurationStr,
    /// Minimum time between refetches caused by unknown key ids. Default 5s.
    #[serde(default = "default_refetch")]
    pub min_refetch_interval: DurationStr,
    /// How long the last good key set is used while the provider is unreachable. Default 1h.
    #[serde(default = "default_staleness")]
    pub max_staleness: DurationStr,
    /// PEM CA bundle for fetching keys over https; default the public web roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// Where a provider's keys come from. Exactly one.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeySource {
    /// A JWKS document URL.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// OpenID Connect discovery: read `jwks_uri` from `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery: bool,
    /// A discovery document URL, when it is not under the issuer.
    #[serde(default)]
    pub discovery_url: Option<String>,
    /// A local JWKS (JSON) or PEM public key file.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// The shared secret for HS256/384/512 (use `${ENV_VAR}`).
    #[serde(default)]
    pub hs_secret: Option<String>,
}

/// Authentication and authorization for a frontend (the default) or a route.
/// Route fields override the frontend's; unset fields inherit.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthPolicy {
    /// Which credential a request must carry.
    #[serde(default)]
    pub require: Option<Credential>,
    /// Identity providers accepted here; default every configured provider.
    #[serde(default)]
    pub providers: Option<Vec<String>>,
    /// Scopes the token must carry (from `scope` or `scp`).
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Roles the token must carry (from the provider's `role_claim`).
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    /// `any` (default): one listed scope and one listed role suffice; `all`: every one is needed.
    #[serde(default, rename = "match")]
    pub match_mode: Option<MatchMode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Credential {
    /// Nothing required; a valid token still yields identity headers, an invalid one counts as absent.
    None,
    /// A valid bearer JWT.
    Jwt,
    /// A valid API key.
    ApiKey,
    /// Either a valid JWT or a valid API key.
    JwtOrApiKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MatchMode {
    Any,
    All,
}

/// The trusted headers the gateway sets from a verified identity. Client
/// copies of every one of them are always removed.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityHeaders {
    /// Set from `sub`.
    pub user_id: String,
    /// Set from the role claim (several roles joined by `,`).
    pub role: String,
    /// Set from the scopes (space-separated).
    pub scopes: String,
    /// Set from the API key's consumer.
    pub consumer: String,
    /// Forward the `Authorization` header upstream. Default false.
    pub keep_authorization: bool,
    /// Sign the identity headers so services can check they came through the gateway.
    pub signature: Option<IdentitySignature>,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        Self {
            user_id: "x-user-id".into(),
            role: "x-role".into(),
            scopes: "x-scopes".into(),
            consumer: "x-consumer-id".into(),
            keep_authorization: false,
            signature: None,
        }
    }
}

/// An HMAC-SHA256 over the identity headers and a timestamp.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentitySignature {
    /// The shared secret (use `${ENV_VAR}`).
    pub hmac_secret: String,
    /// Header carrying `t=<unix seconds>,v1=<hex hmac>`. Default `x-identity-signature`.
    #[serde(default = "default_signature_header")]
    pub header: String,
}

/// API keys for third-party clients.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeys {
    /// Header carrying the key. Default `x-api-key`.
    #[serde(default = "default_api_key_header")]
    pub header: String,
    /// Query parameter carrying the key, when a header is impractical.
    #[serde(default)]
    pub query: Option<String>,
    /// Keys as SHA-256 hex digests (`concierge hash-key KEY` prints one).
    #[serde(default)]
    pub keys: Vec<ApiKey>,
    /// A file of `consumer sha256-hex` lines (`#` comments); re-read on reload.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub file: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// The consumer name, forwarded as the consumer header.
    pub consumer: String,
    /// SHA-256 of the key, 64 hex digits.
    #[schemars(with = "String")]
    pub sha256: Spanned<String>,
}

/// Cross-origin resource sharing.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// Exact origins (`https://shop.zimmart.co.zw`), `https://*.zimmart.co.zw` patterns, or `*`.
    pub allow_origins: Vec<String>,
    /// Default GET, HEAD, POST.
    #[serde(default = "default_cors_methods")]
    pub allow_methods: Vec<String>,
    /// Request headers allowed; default those of the CORS safelist plus authorization and content-type.
    #[serde(default = "default_cors_headers")]
    pub allow_headers: Vec<String>,
    /// Response headers the browser may read.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Allow cookies and authorization. Cannot be combined with `*` origins.
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long the browser may cache a preflight. Default 10m.
    #[serde(default = "default_cors_max_age")]
    pub max_age: DurationStr,
}

/// Client address rules, checked before anything else.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpRules {
    /// If set, only these CIDRs are let in.
    #[serde(default)]
    pub allow: Vec<String>,
    /// These CIDRs are refused (checked after `allow`).
    #[serde(default)]
    pub deny: Vec<String>,
}

/// How the client address is found when the gateway sits behind proxies.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientAddress {
    /// Proxies (CIDRs) whose `X-Forwarded-For` is believed. The client is the
    /// right-most address in `X-Forwarded-For` that is not a trusted proxy.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

fn yes() -> bool {
    true
}
fn default_leeway() -> DurationStr {
    DurationStr::from_secs(30)
}
fn default_max_token() -> ByteSize {
    ByteSize(8 * 1024)
}
fn default_role_claim() -> String {
    "role".into()
}
fn default_refresh() -> DurationStr {
    DurationStr::from_secs(300)
}
fn default_refetch() -> DurationStr {
    DurationStr::from_secs(5)
}
fn default_staleness() -> DurationStr {
    DurationStr::from_secs(3600)
}
fn default_signature_header() -> String {
    "x-identity-signature".into()
}
fn default_api_key_header() -> String {
    "x-api-key".into()
}
fn default_cors_methods() -> Vec<String> {
    ["GET", "HEAD", "POST"].map(String::from).to_vec()
}
fn default_cors_headers() -> Vec<String> {
    [
        "authorization",
        "content-type",
        "accept",
        "accept-language",
        "content-language",
        "x-request-id",
    ]
    .map(String::from)
    .to_vec()
}
fn default_cors_max_age() -> DurationStr {
    DurationStr::from_secs(600)
}

/// Keeps the map type in one place for the model.
pub type Providers = BTreeMap<String, Spanned<IdentityProvider>>;
