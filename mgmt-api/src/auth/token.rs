//! JWT issue and verification.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Issuer of the tokens this node signs.
pub const ISSUER: &str = "keel";

/// The claims of a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: user name or credential id.
    pub sub: String,
    /// Issuer.
    #[serde(default)]
    pub iss: String,
    /// Issued at, seconds since the epoch.
    #[serde(default)]
    pub iat: u64,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Role claims (`system:cluster-admin`, `<project>:admin`, `<project>:viewer`).
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Signs `claims` with the node's HS256 secret.
pub fn sign(secret: &[u8], claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
}

/// Verifies an HS256 token signed by this node.
pub fn verify_local(secret: &[u8], token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
    let mut v = Validation::new(Algorithm::HS256);
    v.set_issuer(&[ISSUER]);
    v.leeway = 5;
    jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret), &v).map(|d| d.claims)
}

/// Verifies a token signed by a registered service key.
pub fn verify_foreign(
    key: &DecodingKey,
    algorithm: Algorithm,
    token: &str,
) -> Result<Claims, jsonwebtoken::errors::Error> {
    let mut v = Validation::new(algorithm);
    v.leeway = 5;
    jsonwebtoken::decode::<Claims>(token, key, &v).map(|d| d.claims)
}
