//! The policy chain between routing and forwarding: authentication (bearer
//! JWT, API key) and authorization. IP rules and CORS run in `super`, before
//! routing, because they must answer before any other work.

use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::auth::identity::Identity;
use crate::auth::jwt::{TokenError, Verifier};
use crate::auth::memo::TokenMemo;
use crate::config::security::Credential;
use crate::error::GatewayError;
use crate::snapshot::{FrontendRt, RouteRt};

/// The token of an `Authorization: Bearer` header, as bytes: the verifier
/// checks its encoding only when it has not seen the token before.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, token) = (&value[..space], &value[space + 1..]);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| token.trim_ascii())
}

fn unauthorized(
    scheme: &'static str,
    invalid_token: bool,
    detail: impl Into<String>,
) -> GatewayError {
    GatewayError::Unauthorized {
        scheme,
        invalid_token,
        detail: detail.into(),
    }
}

/// Resolves and checks the caller's identity for `route`. `None` means an
/// anonymous request on a route that allows it.
pub async fn authenticate(
    verifier: &Verifier,
    frontend: &FrontendRt,
    route: &RouteRt,
    headers: &HeaderMap,
    query: Option<&str>,
    memo: &TokenMemo,
) -> Result<Option<Identity>, GatewayError> {
    let policy = &route.auth;
    // A route with scope or role rules needs a verified token even when its
    // `require` is weaker, so an unavailable key set is a 503 there too.
    let wants_jwt = matches!(policy.require, Credential::Jwt | Credential::JwtOrApiKey)
        || policy.needs_authorization();
    let wants_key = matches!(policy.require, Credential::ApiKey | Credential::JwtOrApiKey);

    let mut token_error = None;
    let mut identity: Option<Identity> = None;
    if let Some(token) = bearer(headers).filter(|_| !verifier.is_empty()) {
        match verifier
            .verify(token, policy.providers.as_deref(), Some(memo))
            .await
        {
            Ok(verified) => identity = Some((*verified).clone()),
            Err(TokenError::Unavailable(provider)) if wants_jwt => {
                return Err(GatewayError::Unavailable(format!(
                    "the identity provider `{provider}` is unavailable; try again shortly"
                )));
            }
            // On routes that do not require a token, a bad one just means anonymous.
            Err(error) => token_error = Some(error),
        }
    }

    let mut key_error = None;
    if let Some(store) = &frontend.api_keys {
        if let Some(key) = store.extract(headers, query) {
            match store.consumer(&key) {
                Some(consumer) => {
                    identity.get_or_insert_with(Identity::default).consumer =
                        Some(consumer.clone());
                }
                None => key_error = Some("the API key is unknown or revoked"),
            }
        } else if wants_key {
            key_error = Some("an API key is required");
        }
    }

    let has_token = identity.as_ref().is_some_and(Identity::has_token);
    let has_key = identity.as_ref().is_some_and(|i| i.consumer.is_some());
    let satisfied = match policy.require {
        Credential::None => true,
        Credential::Jwt => has_token,
        Credential::ApiKey => has_key,
        Credential::JwtOrApiKey => has_token || has_key,
    };
    if !satisfied {
        return Err(match (token_error, key_error) {
            (Some(error), _) => unauthorized("Bearer", true, error.to_string()),
            (None, Some(detail)) if wants_key => unauthorized("ApiKey", false, detail),
            _ => unauthorized("Bearer", false, "a bearer token is required"),
        });
    }
    if policy.needs_authorization() {
        let Some(identity) = identity.as_ref().filter(|i| i.has_token()) else {
            return Err(match token_error {
                Some(error) => unauthorized("Bearer", true, error.to_string()),
                None => unauthorized("Bearer", false, "a bearer token is required"),
            });
        };
        if !policy.authorizes(identity) {
            return Err(GatewayError::InsufficientScope(
                "the token lacks a scope or role this route requires".into(),
            ));
        }
    }
    Ok(identity)
}
