//! The auth service's signing key and the access tokens it issues.
//!
//! The key is ES256 (P-256) and made fresh at every start: nothing is ever
//! written to disk, and a restart invalidates every token, which is what a
//! demo wants. The gateway learns the public half from the JWKS, so it
//! needs no configuration beyond the JWKS URL.

use std::io;

use aws_lc_rs::digest::{self, SHA256};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::data::User;
use crate::{AUDIENCE, ISSUER};

/// How long an access token lives, in seconds (`exp - iat`).
pub const TOKEN_TTL_SECS: u64 = 3600;

const CUSTOMER_SCOPE: &str =
    "products:read orders:read orders:write payments:read notifications:read profile:read";
/// Everything a customer may do, plus managing the catalogue.
const ADMIN_SCOPE: &str = "products:read orders:read orders:write payments:read \
                           notifications:read profile:read products:write";

/// The claims of every access token the auth service issues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user id, e.g. `u-1001`.
    pub sub: String,
    /// `customer` or `admin`.
    pub role: String,
    /// Space-separated, as in OAuth 2.0 (RFC 6749 §3.3).
    pub scope: String,
    pub name: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

impl Claims {
    /// The claims for `user`, issued at `now` (seconds since the epoch).
    pub fn for_user(user: &User, now: u64) -> Self {
        Claims {
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub: user.id.to_owned(),
            role: user.role.to_owned(),
            scope: scope_for(user.role).to_owned(),
            name: user.name.to_owned(),
            iat: now,
            nbf: now,
            exp: now + TOKEN_TTL_SECS,
        }
    }
}

/// An unknown role gets the customer's scopes: least privilege by default.
fn scope_for(role: &str) -> &'static str {
    match role {
        "admin" => ADMIN_SCOPE,
        _ => CUSTOMER_SCOPE,
    }
}

/// The private key, and the public JWK the gateway verifies against.
pub(crate) struct Signer {
    key: EncodingKey,
    kid: String,
    jwk: Jwk,
}

impl Signer {
    /// A new random key. Errors are `io::Error` so `crate::start` keeps its
    /// signature; they only happen if the system RNG is broken.
    pub(crate) fn generate() -> io::Result<Self> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| io::Error::other("generating the ES256 signing key failed"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(|_| io::Error::other("reading back the ES256 signing key failed"))?;
        // Derived from the public key so the kid changes exactly when the key does.
        let kid = hex_prefix(digest::digest(&SHA256, pair.public_key().as_ref()).as_ref());

        let key = EncodingKey::from_ec_der(pkcs8.as_ref());
        // from_encoding_key fills kty, crv, x, y and alg; kid and use are ours.
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).map_err(io::Error::other)?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Ok(Signer { key, kid, jwk })
    }

    /// The JWKS document: this key only, since keys are never rotated in place.
    pub(crate) fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.jwk.clone()],
        }
    }

    /// A signed access token for `user`, issued at `now`.
    pub(crate) fn issue(&self, user: &User, now: u64) -> jsonwebtoken::errors::Result<String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &Claims::for_user(user, now), &self.key)
    }
}

/// The first 8 bytes as 16 lowercase hex characters.
fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{DecodingKey, Validation};

    use super::*;
    use crate::data;

    fn kid(signer: &Signer) -> &str {
        &signer.kid
    }

    fn validation() -> Validation {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[AUDIENCE]);
        v
    }

    #[test]
    fn tokens_verify_against_the_published_jwk() {
        let signer = Signer::generate().unwrap();
        let user = data::user_by_username("tendai").unwrap();
        let now = jsonwebtoken::get_current_timestamp();
        let token = signer.issue(user, now).unwrap();

        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some(kid(&signer)));
        assert_eq!(header.typ.as_deref(), Some("JWT"));

        let key = DecodingKey::from_jwk(&signer.jwks().keys[0]).unwrap();
        let claims = jsonwebtoken::decode::<Claims>(&token, &key, &validation())
            .unwrap()
            .claims;
        assert_eq!(claims, Claims::for_user(user, now));
        assert_eq!(claims.sub, "u-1001");
        assert_eq!(claims.role, "customer");
        assert_eq!(claims.exp - claims.iat, TOKEN_TTL_SECS);
    }

    #[test]
    fn another_key_does_not_verify() {
        let token = Signer::generate()
            .unwrap()
            .issue(&data::USERS[0], jsonwebtoken::get_current_timestamp())
            .unwrap();
        let other = Signer::generate().unwrap();
        let key = DecodingKey::from_jwk(&other.jwks().keys[0]).unwrap();
        assert!(jsonwebtoken::decode::<Claims>(&token, &key, &validation()).is_err());
    }

    #[test]
    fn jwk_is_a_public_p256_signing_key() {
        let signer = Signer::generate().unwrap();
        let jwk = serde_json::to_value(signer.jwks()).unwrap();
        let jwk = &jwk["keys"][0];
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["alg"], "ES256");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kid"], kid(&signer));
        assert!(jwk.get("d").is_none(), "private key leaked: {jwk}");
        assert_eq!(kid(&signer).len(), 16);
        assert!(kid(&signer).bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn admins_get_products_write_on_top_of_customer_scopes() {
        assert_eq!(ADMIN_SCOPE, format!("{CUSTOMER_SCOPE} products:write"));
        assert!(!CUSTOMER_SCOPE.contains("products:write"));
        assert_eq!(scope_for("admin"), ADMIN_SCOPE);
        assert_eq!(scope_for("customer"), CUSTOMER_SCOPE);
        assert_eq!(scope_for("someone"), CUSTOMER_SCOPE);
    }
}
