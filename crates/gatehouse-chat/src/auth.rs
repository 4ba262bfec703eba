//! Who a connection is: a signed token (a JWT whose `sub` is the uid), or, only in insecure dev
//! mode on both the gateway and the worker, a bare `?uid=`.
//!
//! Tokens are HS256 (a shared secret of at least 32 bytes) or, verified with a public key,
//! RS256 or ES256 (`--jwt-public-key`, PEM). `exp` is required and `nbf` is honoured, both with
//! [`LEEWAY_SECS`] of clock skew; `iss` and `aud` are checked when configured. A connection
//! signed in with a token is closed by its gateway when the token expires, unless it refreshes
//! it in time (see the service).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gatehouse_sdk::{Handshake, Reject};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Longest uid, in characters.
pub const MAX_UID_CHARS: usize = 64;
/// Shortest HS256 secret, in bytes: the hash's output size, so the secret is not the weak link.
pub const MIN_SECRET_BYTES: usize = 32;
/// Longest token accepted, in bytes (a handshake's query or header, or a `refresh` frame).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 5;

/// The claims `gatehouse token` writes.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The uid.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issue time, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Issuer, when the workers check one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience, when the workers check one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// What a verified token says.
#[derive(Debug, Deserialize)]
struct Verified {
    sub: String,
    exp: u64,
}

/// A signed-in identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The uid.
    pub uid: String,
    /// When the token expires; `None` for a bare dev uid.
    pub expires_at: Option<SystemTime>,
}

/// Why a token key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The HS256 secret is shorter than [`MIN_SECRET_BYTES`].
    #[error("the jwt secret must be at least {MIN_SECRET_BYTES} bytes")]
    WeakSecret,
    /// The public key is neither an RSA nor an EC (P-256/P-384) public key in PEM.
    #[error("the jwt public key is not an RSA or EC public key in PEM: {0}")]
    BadPublicKey(String),
}

/// The key tokens are verified with.
#[derive(Debug, Clone)]
pub enum TokenKey {
    /// HS256 with a shared secret.
    Secret(String),
    /// RS256/RS384/RS512 or ES256/ES384 with a public key in PEM (SPKI or PKCS#1 for RSA).
    PublicPem(Vec<u8>),
}

/// Checks tokens: signature, expiry, not-before, issuer and audience.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for `key`, checking `iss` and `aud` against `issuer` and `audience` when
    /// given (the claim is then required).
    pub fn new(key: &TokenKey, issuer: Option<&str>, audience: Option<&str>) -> Result<Verifier, KeyError> {
        let (key, algorithms) = match key {
            TokenKey::Secret(secret) => {
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(KeyError::WeakSecret);
                }
                (DecodingKey::from_secret(secret.as_bytes()), vec![Algorithm::HS256])
            }
            TokenKey::PublicPem(pem) => match DecodingKey::from_ec_pem(pem) {
                Ok(key) => (key, vec![Algorithm::ES256, Algorithm::ES384]),
                Err(ec_error) => match DecodingKey::from_rsa_pem(pem) {
                    Ok(key) => (key, vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512]),
                    Err(rsa_error) => {
                        return Err(KeyError::BadPublicKey(format!(
                            "as EC: {ec_error}; as RSA: {rsa_error}"
                        )));
                    }
                },
            },
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(Verifier { key, validation })
    }

    /// Verifies `token` and returns who it names and when it expires, or a 401 with the reason.
    pub fn verify(&self, token: &str) -> Result<Identity, Reject> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Reject::new(401, "invalid token: too long"));
        }
        let data = jsonwebtoken::decode::<Verified>(token, &self.key, &self.validation).map_err(|error| {
            Reject::new(
                401,
                match error.kind() {
                    ErrorKind::ExpiredSignature => "token expired".to_owned(),
                    ErrorKind::ImmatureSignature => "token not yet valid (nbf)".to_owned(),
                    ErrorKind::InvalidIssuer => "invalid token: wrong issuer".to_owned(),
                    ErrorKind::InvalidAudience => "invalid token: wrong audience".to_owned(),
                    _ => format!("invalid token: {error}"),
                },
            )
        })?;
        if !valid_uid(&data.claims.sub) {
            return Err(Reject::new(400, "the token's sub is not a usable uid"));
        }
        Ok(Identity {
            uid: data.claims.sub,
            expires_at: Some(UNIX_EPOCH + Duration::from_secs(data.claims.exp)),
        })
    }
}

/// What `gatehouse token` signs with.
#[derive(Debug, Clone)]
pub enum SigningKey {
    /// HS256 with a shared secret.
    Secret(String),
    /// RS256 (an RSA private key) or ES256 (a P-256 private key), PKCS#8 or PKCS#1/SEC1 PEM.
    PrivatePem(Vec<u8>),
}

/// Signs a token for `uid` valid for `ttl` (for `gatehouse token` and tests).
pub fn sign(
    key: &SigningKey,
    uid: &str,
    ttl: Duration,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = Claims {
        sub: uid.to_owned(),
        iat: Some(now),
        exp: now + ttl.as_secs(),
        iss: issuer.map(str::to_owned),
        aud: audience.map(str::to_owned),
    };
    let (header, key) = match key {
        SigningKey::Secret(secret) => (
            Header::new(Algorithm::HS256),
            EncodingKey::from_secret(secret.as_bytes()),
        ),
        SigningKey::PrivatePem(pem) => match EncodingKey::from_ec_pem(pem) {
            Ok(key) => (Header::new(Algorithm::ES256), key),
            Err(_) => (Header::new(Algorithm::RS256), EncodingKey::from_rsa_pem(pem)?),
        },
    };
    jsonwebtoken::encode(&header, &claims, &key)
}

/// Checks that a uid is 1–64 characters of letters, digits and `_ . @ -`.
pub fn valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.chars().count() <= MAX_UID_CHARS
        && uid
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '@' | '-'))
}

/// Decides who the handshake is, or why it is refused (401/400 with a reason).
///
/// A token needs a `verifier`. A bare `?uid=` needs consent on both sides that it exposes:
/// `dev_mode` (this worker runs with `--insecure-dev-auth`, which a worker with a token key
/// refuses to) and the gateway's `insecure_dev`.
pub fn identify(handshake: &Handshake, verifier: Option<&Verifier>, dev_mode: bool) -> Result<Identity, Reject> {
    let bearer = handshake
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::to_owned);
    if let Some(token) = handshake.query_param("token").or(bearer) {
        let Some(verifier) = verifier else {
            return Err(Reject::new(
                401,
                "tokens are not accepted: the server has no jwt key configured",
            ));
        };
        return verifier.verify(&token);
    }
    if let Some(uid) = handshake.query_param("uid") {
        // A worker with a token key is never in dev mode (the configuration refuses the pair);
        // the check here keeps that true whatever a caller passes.
        if !dev_mode || verifier.is_some() {
            return Err(Reject::new(
                401,
                "bare uids are refused: this chat worker is not in insecure dev mode",
            ));
        }
        if !handshake.insecure_dev {
            return Err(Reject::new(
                401,
                "bare uids are refused: this gateway is not in insecure dev mode",
            ));
        }
        if !valid_uid(&uid) {
            return Err(Reject::new(400, "a uid is 1-64 letters, digits or _ . @ -"));
        }
        return Ok(Identity { uid, expires_at: None });
    }
    Err(Reject::new(401, "missing token (?token= or Authorization: Bearer)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(query: &str, insecure_dev: bool) -> Handshake {
        Handshake {
            path: "/ws".into(),
            query: query.into(),
            headers: Vec::new(),
            remote_addr: None,
            insecure_dev,
        }
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const RS256_PRIVATE: &str = include_str!("../tests/keys/rs256-private.pem");
    const RS256_PUBLIC: &str = include_str!("../tests/keys/rs256-public.pem");
    const ES256_PRIVATE: &str = include_str!("../tests/keys/es256-private.pem");
    const ES256_PUBLIC: &str = include_str!("../tests/keys/es256-public.pem");

    fn secret() -> SigningKey {
        SigningKey::Secret(SECRET.into())
    }

    fn verifier() -> Verifier {
        Verifier::new(&TokenKey::Secret(SECRET.into()), None, None).unwrap()
    }

    fn token_with(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    fn uid(result: Result<Identity, Reject>) -> Result<String, Reject> {
        result.map(|identity| identity.uid)
    }

    #[test]
    fn a_signed_token_names_the_uid_and_its_expiry() {
        let token = sign(&secret(), "alice", Duration::from_secs(60), None, None).unwrap();
        let identity = identify(&handshake(&format!("token={token}"), false), Some(&verifier()), false).unwrap();
        assert_eq!(identity.uid, "alice");
        let expires = identity
            .expires_at
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!((now() + 59..=now() + 60).contains(&expires));
        let mut bearer = handshake("", false);
        bearer
            .headers
            .push(("authorization".into(), format!("Bearer {token}").into_bytes().into()));
        assert_eq!(uid(identify(&bearer, Some(&verifier()), false)), Ok("alice".into()));
    }

    #[test]
    fn bad_expired_premature_and_missing_tokens_are_refused_with_a_reason() {
        let other = sign(
            &SigningKey::Secret("another-secret-of-32-bytes-or-more".into()),
            "alice",
            Duration::from_secs(60),
            None,
            None,
        )
        .unwrap();
        let refusal = identify(&handshake(&format!("token={other}"), false), Some(&verifier()), false).unwrap_err();
        assert_eq!(refusal.status, 401);
        assert!(refusal.reason.starts_with("invalid token"), "{}", refusal.reason);
        let expired = token_with(serde_json::json!({"sub": "alice", "exp": 2}));
        assert_eq!(verifier().verify(&expired).unwrap_err().reason, "token expired");
        let later = token_with(serde_json::json!({"sub": "alice", "exp": now() + 600, "nbf": now() + 300}));
        assert_eq!(
            verifier().verify(&later).unwrap_err().reason,
            "token not yet valid (nbf)"
        );
        let no_exp = token_with(serde_json::json!({"sub": "alice"}));
        assert_eq!(verifier().verify(&no_exp).unwrap_err().status, 401);
        assert_eq!(
            identify(&handshake("", false), Some(&verifier()), false)
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(verifier().verify("garbage").unwrap_err().status, 401);
        assert_eq!(
            verifier().verify(&"x".repeat(MAX_TOKEN_BYTES + 1)).unwrap_err().status,
            401
        );
        let bad_sub = token_with(serde_json::json!({"sub": "a b", "exp": now() + 60}));
        assert_eq!(verifier().verify(&bad_sub).unwrap_err().status, 400);
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let strict = Verifier::new(
            &TokenKey::Secret(SECRET.into()),
            Some("https://id.example"),
            Some("chat"),
        )
        .unwrap();
        let good = sign(
            &secret(),
            "alice",
            Duration::from_secs(60),
            Some("https://id.example"),
            Some("chat"),
        )
        .unwrap();
        assert_eq!(uid(strict.verify(&good)), Ok("alice".into()));
        let wrong_issuer = sign(&secret(), "alice", Duration::from_secs(60), Some("evil"), Some("chat")).unwrap();
        assert_eq!(
            strict.verify(&wrong_issuer).unwrap_err().reason,
            "invalid token: wrong issuer"
        );
        let wrong_audience = sign(
            &secret(),
            "alice",
            Duration::from_secs(60),
            Some("https://id.example"),
            Some("billing"),
        )
        .unwrap();
        assert_eq!(
            strict.verify(&wrong_audience).unwrap_err().reason,
            "invalid token: wrong audience"
        );
        let neither = sign(&secret(), "alice", Duration::from_secs(60), None, None).unwrap();
        assert_eq!(
            strict.verify(&neither).unwrap_err().status,
            401,
            "the claims are required"
        );
        assert_eq!(
            uid(verifier().verify(&good)),
            Ok("alice".into()),
            "unchecked when not configured"
        );
    }

    #[test]
    fn rs256_and_es256_tokens_verify_with_their_public_keys_only() {
        for (private, public) in [(RS256_PRIVATE, RS256_PUBLIC), (ES256_PRIVATE, ES256_PUBLIC)] {
            let verifier = Verifier::new(&TokenKey::PublicPem(public.as_bytes().to_vec()), None, None).unwrap();
            let token = sign(
                &SigningKey::PrivatePem(private.as_bytes().to_vec()),
                "bob",
                Duration::from_secs(60),
                None,
                None,
            )
            .unwrap();
            assert_eq!(uid(verifier.verify(&token)), Ok("bob".into()));
            let hs = sign(&secret(), "bob", Duration::from_secs(60), None, None).unwrap();
            assert_eq!(verifier.verify(&hs).unwrap_err().status, 401, "no algorithm confusion");
        }
        let rs = sign(
            &SigningKey::PrivatePem(RS256_PRIVATE.as_bytes().to_vec()),
            "bob",
            Duration::from_secs(60),
            None,
            None,
        )
        .unwrap();
        let es = Verifier::new(&TokenKey::PublicPem(ES256_PUBLIC.as_bytes().to_vec()), None, None).unwrap();
        assert_eq!(es.verify(&rs).unwrap_err().status, 401);
        assert!(matches!(
            Verifier::new(&TokenKey::PublicPem(b"not a key".to_vec()), None, None),
            Err(KeyError::BadPublicKey(_))
        ));
    }

    #[test]
    fn secrets_shorter_than_32_bytes_are_refused() {
        assert!(matches!(
            Verifier::new(&TokenKey::Secret("0123456789abcdef".into()), None, None),
            Err(KeyError::WeakSecret)
        ));
    }

    #[test]
    fn bare_uids_need_dev_mode_on_the_gateway_and_on_the_worker() {
        assert_eq!(uid(identify(&handshake("uid=bob", true), None, true)), Ok("bob".into()));
        assert_eq!(
            identify(&handshake("uid=bob", true), None, true).unwrap().expires_at,
            None
        );
        let gateway_only = identify(&handshake("uid=bob", true), None, false).unwrap_err();
        assert_eq!(gateway_only.status, 401);
        assert!(gateway_only.reason.contains("worker"), "{}", gateway_only.reason);
        let worker_only = identify(&handshake("uid=bob", false), None, true).unwrap_err();
        assert!(worker_only.reason.contains("gateway"), "{}", worker_only.reason);
        assert_eq!(
            identify(&handshake("uid=a%20b", true), None, true).unwrap_err().status,
            400
        );
        assert_eq!(
            identify(&handshake("uid=bob", true), Some(&verifier()), true)
                .unwrap_err()
                .status,
            401,
            "never with a token key"
        );
    }
}
