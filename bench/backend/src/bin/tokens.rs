//! Signing keys and tokens for the authenticated Concierge benchmark routes.
//!
//! Generates a fresh RSA-2048 key and a fresh EC P-256 key, and writes to
//! `--out-dir`:
//!
//! - `jwks.json`: the two public keys as a JWKS (kids `bench-rs` and
//!   `bench-es`), for the gateway's `identity_providers.*.keys.file`;
//! - `rs256.jwt` and `es256.jwt`: one token signed with each key, valid for a
//!   day, with `iss` `https://bench.concierge`, `aud` `bench`, `sub`
//!   `bench-user`, `role` `customer` and `scope` `bench:read`.
//!
//! The private keys live only in memory: every run mints a new key pair, so
//! tokens from an earlier run stop verifying once the JWKS is rewritten.
//! Before writing, each token is verified against its published JWK.
#![forbid(unsafe_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use clap::Parser;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

const ISSUER: &str = "https://bench.concierge";
const AUDIENCE: &str = "bench";
const SUBJECT: &str = "bench-user";
const ROLE: &str = "customer";
const SCOPE: &str = "bench:read";
const RS_KID: &str = "bench-rs";
const ES_KID: &str = "bench-es";

/// Writes a JWKS and RS256/ES256 bearer tokens for the Concierge benchmarks.
#[derive(Debug, Parser)]
#[command(name = "concierge-bench-tokens", version, about)]
struct Args {
    /// Directory to write jwks.json, rs256.jwt and es256.jwt to (created if missing).
    #[arg(long, default_value = "bench/out/auth")]
    out_dir: PathBuf,

    /// Token lifetime in seconds.
    #[arg(long, default_value_t = 86_400)]
    valid_for: u64,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let args = Args::parse();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = serde_json::json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": SUBJECT,
        "role": ROLE,
        "scope": SCOPE,
        "iat": now,
        "exp": now + args.valid_for,
    });

    let rsa = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|e| format!("RSA keygen: {e}"))?;
    let rsa_pkcs8 = rsa.as_der().map_err(|e| format!("RSA export: {e}"))?;
    // jsonwebtoken wants an RSA private key as PKCS#1 (RFC 8017) DER, while
    // aws-lc-rs exports PKCS#8, which wraps exactly that structure.
    let rs_key = EncodingKey::from_rsa_der(pkcs1_from_pkcs8(rsa_pkcs8.as_ref())?);

    let ec_pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|e| format!("EC keygen: {e}"))?;
    let es_key = EncodingKey::from_ec_der(ec_pkcs8.as_ref());

    let rs_jwk = public_jwk(&rs_key, Algorithm::RS256, RS_KID)?;
    let es_jwk = public_jwk(&es_key, Algorithm::ES256, ES_KID)?;
    let rs_token = sign(&claims, &rs_key, Algorithm::RS256, RS_KID, &rs_jwk)?;
    let es_token = sign(&claims, &es_key, Algorithm::ES256, ES_KID, &es_jwk)?;

    let jwks = JwkSet {
        keys: vec![rs_jwk, es_jwk],
    };
    fs::create_dir_all(&args.out_dir)?;
    write(
        &args.out_dir.join("jwks.json"),
        &serde_json::to_string_pretty(&jwks)?,
    )?;
    write(&args.out_dir.join("rs256.jwt"), &rs_token)?;
    write(&args.out_dir.join("es256.jwt"), &es_token)?;
    eprintln!(
        "concierge-bench-tokens: wrote jwks.json, rs256.jwt, es256.jwt to {} (valid {}s)",
        args.out_dir.display(),
        args.valid_for
    );
    Ok(())
}

/// The public half of `key` as a signing JWK named `kid`.
fn public_jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Result<Jwk> {
    let mut jwk = Jwk::from_encoding_key(key, alg)?;
    jwk.common.key_id = Some(kid.to_owned());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok(jwk)
}

/// Signs `claims` and checks the token against `jwk` the way a verifier would.
fn sign(
    claims: &serde_json::Value,
    key: &EncodingKey,
    alg: Algorithm,
    kid: &str,
    jwk: &Jwk,
) -> Result<String> {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    let token = jsonwebtoken::encode(&header, claims, key)?;

    let mut validation = Validation::new(alg);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    jsonwebtoken::decode::<serde_json::Value>(&token, &DecodingKey::from_jwk(jwk)?, &validation)
        .map_err(|e| format!("{alg:?} token does not verify against its JWK: {e}"))?;
    Ok(token)
}

fn write(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, format!("{contents}\n"))
        .map_err(|e| format!("writing {}: {e}", path.display()).into())
}

/// The `privateKey` OCTET STRING of a PKCS#8 `PrivateKeyInfo`
/// (`SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING privateKey, ... }`),
/// which for RSA is the PKCS#1 `RSAPrivateKey` DER.
fn pkcs1_from_pkcs8(der: &[u8]) -> Result<&[u8]> {
    let (info, _) = der_element(der, 0x30)?;
    let (_version, rest) = der_element(info, 0x02)?;
    let (_algorithm, rest) = der_element(rest, 0x30)?;
    let (private_key, _) = der_element(rest, 0x04)?;
    Ok(private_key)
}

/// Splits one DER element with tag `tag` off `input`: (contents, rest).
fn der_element(input: &[u8], tag: u8) -> Result<(&[u8], &[u8])> {
    let bad = || format!("malformed PKCS#8 DER (expected tag {tag:#04x})");
    match input {
        [t, first, rest @ ..] if *t == tag => {
            let (len, rest) = if *first < 0x80 {
                (usize::from(*first), rest)
            } else {
                let n = usize::from(first & 0x7f);
                if n == 0 || n > 4 || rest.len() < n {
                    return Err(bad().into());
                }
                let len = rest[..n]
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
                (len, &rest[n..])
            };
            if rest.len() < len {
                return Err(bad().into());
            }
            Ok(rest.split_at(len))
        }
        _ => Err(bad().into()),
    }
}
