//! Test identity providers: key generation (aws-lc-rs), JWT signing
//! (jsonwebtoken), a JWKS / OIDC discovery server whose key set can be
//! swapped, counted and broken at runtime, and the assertions every auth test
//! makes about gateway challenges.
//!
//! Declared from the auth test files with
//! `#[path = "support/tokens.rs"] mod tokens;` next to `mod support;`.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair,
};
use hyper::body::Incoming;
use hyper::{Request, Response};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::support::upstream::{Upstream, full};

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64(data: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Unpadded base64url, as JWS uses.
pub fn b64url(data: &[u8]) -> String {
    base64(data, URL_SAFE, false)
}

/// Padded standard base64, as PEM uses.
pub fn b64(data: &[u8]) -> String {
    base64(data, STANDARD, true)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `data` as 64 hex digits (the API-key digest format).
pub fn sha256_hex(data: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref())
}

/// Reads one DER element: (tag, contents, rest).
fn der_element(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = input[0];
    let first = input[1];
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let count = usize::from(first & 0x7f);
        let len = input[2..2 + count]
            .iter()
            .fold(0usize, |acc, b| acc << 8 | usize::from(*b));
        (len, 2 + count)
    };
    (tag, &input[header..header + len], &input[header + len..])
}

/// The RFC 8017 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo`: what
/// jsonwebtoken's `from_rsa_der` wants.
fn pkcs8_to_pkcs1(pkcs8: &[u8]) -> Vec<u8> {
    let (tag, info, _) = der_element(pkcs8);
    assert_eq!(tag, 0x30, "PrivateKeyInfo is a SEQUENCE");
    let (tag, _version, rest) = der_element(info);
    assert_eq!(tag, 0x02, "version INTEGER");
    let (tag, _algorithm, rest) = der_element(rest);
    assert_eq!(tag, 0x30, "AlgorithmIdentifier SEQUENCE");
    let (tag, private_key, _) = der_element(rest);
    assert_eq!(tag, 0x04, "privateKey OCTET STRING");
    private_key.to_vec()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Rsa,
    Ec,
    Ed,
    Hmac,
}

/// A private signing key with the algorithm and `kid` its tokens carry.
#[derive(Clone)]
pub struct SigningKey {
    pub alg: Algorithm,
    pub kid: Option<String>,
    kind: Kind,
    /// What jsonwebtoken's `EncodingKey::from_*_der` (or `from_secret`) takes.
    private: Vec<u8>,
    /// X.509 SubjectPublicKeyInfo DER (empty for HMAC).
    pub public_spki: Vec<u8>,
    /// The raw public key bytes (RFC 8017 `RSAPublicKey` for RSA).
    pub public_raw: Vec<u8>,
}

impl SigningKey {
    /// A fresh RSA-2048 key for `alg` (RS* or PS*).
    pub fn rsa(alg: Algorithm, kid: &str) -> Self {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .expect("RSA key generation");
        let pkcs8: Pkcs8V1Der = pair.as_der().expect("PKCS#8");
        let spki: PublicKeyX509Der = pair.public_key().as_der().expect("SPKI");
        Self {
            alg,
            kid: Some(kid.to_string()),
            kind: Kind::Rsa,
            private: pkcs8_to_pkcs1(pkcs8.as_ref()),
            public_spki: spki.as_ref().to_vec(),
            public_raw: pair.public_key().as_ref().to_vec(),
        }
    }

    /// A fresh P-256 (ES256) or P-384 (ES384) key.
    pub fn ec(alg: Algorithm, kid: &str) -> Self {
        let signing = match alg {
            Algorithm::ES256 => &ECDSA_P256_SHA256_FIXED_SIGNING,
            Algorithm::ES384 => &ECDSA_P384_SHA384_FIXED_SIGNING,
            other => panic!("{other:?} is not an EC algorithm"),
        };
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(signing, &SystemRandom::new()).expect("EC key");
        let pair = EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref()).expect("EC key parses");
        let spki: PublicKeyX509Der = pair.public_key().as_der().expect("SPKI");
        Self {
            alg,
            kid: Some(kid.to_string()),
            kind: Kind::Ec,
            private: pkcs8.as_ref().to_vec(),
            public_spki: spki.as_ref().to_vec(),
            public_raw: pair.public_key().as_ref().to_vec(),
        }
    }

    /// A fresh Ed25519 (EdDSA) key. PKCS#8 v1: the form jsonwebtoken's JWK
    /// export recognises.
    pub fn ed25519(kid: &str) -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new()).expect("Ed25519 key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("Ed25519 key parses");
        let spki: PublicKeyX509Der = pair.public_key().as_der().expect("SPKI");
        Self {
            alg: Algorithm::EdDSA,
            kid: Some(kid.to_string()),
            kind: Kind::Ed,
            private: pkcs8.as_ref().to_vec(),
            public_spki: spki.as_ref().to_vec(),
            public_raw: pair.public_key().as_ref().to_vec(),
        }
    }

    /// A shared HMAC secret for HS256/384/512.
    pub fn hmac(alg: Algorithm, secret: &[u8]) -> Self {
        Self {
            alg,
            kid: None,
            kind: Kind::Hmac,
            private: secret.to_vec(),
            public_spki: Vec::new(),
            public_raw: Vec::new(),
        }
    }

    /// The same key material used with another algorithm and `kid` (one RSA
    /// key serves RS256..PS512; each gets its own JWK).
    pub fn with_alg(&self, alg: Algorithm, kid: &str) -> Self {
        Self {
            alg,
            kid: Some(kid.to_string()),
            ..self.clone()
        }
    }

    fn encoding_key(&self) -> EncodingKey {
        match self.kind {
            Kind::Rsa => EncodingKey::from_rsa_der(&self.private),
            Kind::Ec => EncodingKey::from_ec_der(&self.private),
            Kind::Ed => EncodingKey::from_ed_der(&self.private),
            Kind::Hmac => EncodingKey::from_secret(&self.private).expect("HMAC key"),
        }
    }

    /// The public JWK (with `kid`), as an identity provider publishes it.
    pub fn jwk(&self) -> Value {
        assert_ne!(self.kind, Kind::Hmac, "HMAC secrets are never published");
        let mut jwk = Jwk::from_encoding_key(&self.encoding_key(), self.alg).expect("JWK");
        jwk.common.key_id = self.kid.clone();
        serde_json::to_value(&jwk).expect("JWK JSON")
    }

    /// The public key as a PEM `PUBLIC KEY` block.
    pub fn public_pem(&self) -> String {
        let body = b64(&self.public_spki);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }

    /// Signs `claims` with this key's algorithm and `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_kid(claims, self.kid.as_deref())
    }

    /// Signs `claims` under `header` as it is (its `alg` should be this
    /// key's): for headers carrying `jku`, `x5u`, `jwk` and the like.
    pub fn sign_with_header(&self, header: &Header, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &self.encoding_key()).expect("sign")
    }

    /// Signs `claims`, naming `kid` in the header whatever this key's own is.
    pub fn sign_with_kid(&self, claims: &Value, kid: Option<&str>) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, &self.encoding_key()).expect("sign")
    }
}

/// Signs `claims` as HS256 with an arbitrary secret (for algorithm-confusion
/// attacks, where the "secret" is a public key's bytes).
pub fn sign_hs256_with(secret: &[u8], claims: &Value, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret).expect("HMAC key"),
    )
    .expect("sign")
}

/// An unsigned `alg: none` token, built by hand (jsonwebtoken refuses to).
pub fn unsigned_token(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(claims.to_string().as_bytes())
    )
}

/// Replaces a token's payload with `claims`, keeping header and signature.
pub fn with_payload(token: &str, claims: &Value) -> String {
    let mut parts = token.split('.');
    let header = parts.next().expect("header");
    let _payload = parts.next().expect("payload");
    let signature = parts.next().expect("signature");
    format!(
        "{header}.{}.{signature}",
        b64url(claims.to_string().as_bytes())
    )
}

/// Valid claims for `iss`/`aud`: issued now, expiring in ten minutes.
pub fn claims(issuer: &str, audience: &str, subject: &str) -> Value {
    let now = now();
    json!({
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    })
}

/// `claims` with `extra` merged over them.
pub fn claims_with(issuer: &str, audience: &str, subject: &str, extra: Value) -> Value {
    let mut claims = claims(issuer, audience, subject);
    let map = claims.as_object_mut().expect("object");
    for (k, v) in extra.as_object().expect("extra claims are an object") {
        map.insert(k.clone(), v.clone());
    }
    claims
}

/// A JWKS document for `keys`.
pub fn jwks(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() })
}

/// An identity provider's key endpoints: `GET /jwks` serves the current key
/// set; `GET /.well-known/openid-configuration` points at it. The set can be
/// swapped, fetches are counted, and the server can be made to answer 500.
pub struct JwksServer {
    pub upstream: Upstream,
    document: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
    discovery_hits: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

impl JwksServer {
    pub async fn start(keys: &[&SigningKey]) -> Self {
        let document = Arc::new(Mutex::new(jwks(keys)));
        let hits = Arc::new(AtomicUsize::new(0));
        let discovery_hits = Arc::new(AtomicUsize::new(0));
        let failing = Arc::new(AtomicBool::new(false));
        let state = (
            document.clone(),
            hits.clone(),
            discovery_hits.clone(),
            failing.clone(),
        );
        let upstream = Upstream::start(move |req: Request<Incoming>| {
            let (document, hits, discovery_hits, failing) = state.clone();
            async move {
                let path = req.uri().path().to_string();
                let host = req
                    .headers()
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let body = match path.as_str() {
                    "/jwks" => {
                        hits.fetch_add(1, Ordering::SeqCst);
                        document.lock().expect("jwks lock").clone()
                    }
                    "/.well-known/openid-configuration" => {
                        discovery_hits.fetch_add(1, Ordering::SeqCst);
                        json!({
                            "issuer": format!("http://{host}"),
                            "jwks_uri": format!("http://{host}/jwks"),
                        })
                    }
                    _ => {
                        return Response::builder()
                            .status(404)
                            .body(full("not found"))
                            .expect("response");
                    }
                };
                if failing.load(Ordering::SeqCst) {
                    return Response::builder()
                        .status(500)
                        .body(full("identity provider is down"))
                        .expect("response");
                }
                Response::builder()
                    .header("content-type", "application/json")
                    .body(full(body.to_string()))
                    .expect("response")
            }
        })
        .await;
        Self {
            upstream,
            document,
            hits,
            discovery_hits,
            failing,
        }
    }

    /// `http://127.0.0.1:port`: the issuer when discovery is used.
    pub fn base(&self) -> String {
        format!("http://{}", self.upstream.addr)
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.base())
    }

    /// Publishes `keys` instead of the current set.
    pub fn set_keys(&self, keys: &[&SigningKey]) {
        *self.document.lock().expect("jwks lock") = jwks(keys);
    }

    /// Publishes `document` as it is (e.g. keys without `kid`).
    pub fn set_document(&self, document: Value) {
        *self.document.lock().expect("jwks lock") = document;
    }

    /// The current JWKS document.
    pub fn document(&self) -> Value {
        self.document.lock().expect("jwks lock").clone()
    }

    /// How many times `/jwks` was requested (failed answers included).
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn discovery_hits(&self) -> usize {
        self.discovery_hits.load(Ordering::SeqCst)
    }

    /// Makes every answer a 500 (`true`) or the real document again.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

/// The `WWW-Authenticate` value of a response, if any.
pub fn challenge(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ASCII challenge").to_string())
}

/// Asserts an RFC 6750 `invalid_token` refusal: 401, the Bearer challenge
/// with `error="invalid_token"`, a problem+json body that mentions none of
/// `secrets`. Returns the body.
pub async fn assert_invalid_token(
    response: reqwest::Response,
    case: &str,
    secrets: &[&str],
) -> Value {
    assert_eq!(response.status(), 401, "{case}");
    let challenge = challenge(&response).unwrap_or_else(|| panic!("{case}: no challenge"));
    assert!(
        challenge
            .starts_with(r#"Bearer realm="concierge", error="invalid_token", error_description=""#),
        "{case}: {challenge}"
    );
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{case}"
    );
    let text = response.text().await.expect("body");
    for secret in secrets {
        assert!(!secret.is_empty());
        assert!(
            !text.contains(secret) && !challenge.contains(secret),
            "{case}: the answer leaks key material: {text}"
        );
    }
    let body: Value = serde_json::from_str(&text).expect("problem JSON");
    assert_eq!(body["status"], 401, "{case}");
    body
}

/// An upstream answering like `Upstream::echo` (JSON with the request's
/// headers, repeated ones joined by `, `) that also counts its requests.
pub async fn counting_echo() -> (Upstream, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let upstream = Upstream::start(move |req: Request<Incoming>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut headers = serde_json::Map::new();
            for (k, v) in req.headers() {
                let v = v.to_str().unwrap_or("<binary>").to_string();
                match headers.get_mut(k.as_str()) {
                    Some(Value::String(prev)) => {
                        prev.push_str(", ");
                        prev.push_str(&v);
                    }
                    _ => {
                        headers.insert(k.as_str().to_string(), Value::String(v));
                    }
                }
            }
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let body = json!({"name": "api", "method": req.method().as_str(), "path": path, "headers": headers});
            Response::builder()
                .header("content-type", "application/json")
                .header("x-upstream", "api")
                .body(full(body.to_string()))
                .expect("response")
        }
    })
    .await;
    (upstream, hits)
}
