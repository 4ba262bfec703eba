//! Who a connection is: a signed token (HS256 JWT whose `sub` is the uid), or — only when the
//! gateway runs in insecure dev mode — a bare `?uid=`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gatehouse_sdk::{Handshake, Reject};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Longest uid, in characters.
pub const MAX_UID_CHARS: usize = 64;

/// The claims gatehouse reads and writes.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The uid.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issue time, seconds since the Unix epoch.
    pub iat: u64,
}

/// Signs tokens (for `gatehouse token`).
pub fn sign(secret: &str, uid: &str, ttl: Duration) -> Result<String, jsonwebtoken::errors::Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = Claims {
        sub: uid.to_owned(),
        iat: now,
        exp: now + ttl.as_secs(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
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
pub fn identify(handshake: &Handshake, jwt_secret: Option<&str>) -> Result<String, Reject> {
    let bearer = handshake
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::to_owned);
    if let Some(token) = handshake.query_param("token").or(bearer) {
        let Some(secret) = jwt_secret else {
            return Err(Reject::new(
                401,
                "tokens are not accepted: the server has no jwt secret configured",
            ));
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(&token, &DecodingKey::from_secret(secret.as_bytes()), &validation)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => Reject::new(401, "token expired"),
                _ => Reject::new(401, format!("invalid token: {error}")),
            })?;
        let uid = data.claims.sub;
        if !valid_uid(&uid) {
            return Err(Reject::new(400, "the token's sub is not a usable uid"));
        }
        return Ok(uid);
    }
    if let Some(uid) = handshake.query_param("uid") {
        if !handshake.insecure_dev {
            return Err(Reject::new(
                401,
                "bare uids are refused: this gateway is not in insecure dev mode",
            ));
        }
        if !valid_uid(&uid) {
            return Err(Reject::new(400, "a uid is 1-64 letters, digits or _ . @ -"));
        }
        return Ok(uid);
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

    const SECRET: &str = "0123456789abcdef0123";

    #[test]
    fn a_signed_token_names_the_uid() {
        let token = sign(SECRET, "alice", Duration::from_secs(60)).unwrap();
        assert_eq!(
            identify(&handshake(&format!("token={token}"), false), Some(SECRET)),
            Ok("alice".into())
        );
        let mut bearer = handshake("", false);
        bearer
            .headers
            .push(("authorization".into(), format!("Bearer {token}").into_bytes().into()));
        assert_eq!(identify(&bearer, Some(SECRET)), Ok("alice".into()));
    }

    #[test]
    fn bad_expired_and_missing_tokens_are_refused_with_a_reason() {
        let other = sign("another-secret-of-16+", "alice", Duration::from_secs(60)).unwrap();
        let refusal = identify(&handshake(&format!("token={other}"), false), Some(SECRET)).unwrap_err();
        assert_eq!(refusal.status, 401);
        assert!(refusal.reason.starts_with("invalid token"), "{}", refusal.reason);
        let claims = Claims {
            sub: "alice".into(),
            iat: 1,
            exp: 2,
        };
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            identify(&handshake(&format!("token={expired}"), false), Some(SECRET))
                .unwrap_err()
                .reason,
            "token expired"
        );
        assert_eq!(identify(&handshake("", false), Some(SECRET)).unwrap_err().status, 401);
        assert_eq!(
            identify(&handshake("token=garbage", false), Some(SECRET))
                .unwrap_err()
                .status,
            401
        );
    }

    #[test]
    fn bare_uids_work_only_in_insecure_dev_mode() {
        assert_eq!(identify(&handshake("uid=bob", true), None), Ok("bob".into()));
        assert_eq!(identify(&handshake("uid=bob", false), None).unwrap_err().status, 401);
        assert_eq!(identify(&handshake("uid=a%20b", true), None).unwrap_err().status, 400);
    }
}
