//! API keys: generation, the key file, scopes, and verification of a presented key.
//!
//! A key is `ghk_` and 43 base64url characters: 256 random bits. The server stores only its
//! SHA-256 digest (`"sha256:<64 hex>"`), so a leaked key file lets nobody call the API. A slow
//! password hash (Argon2, bcrypt) exists to make guessing *low-entropy human passwords* from a
//! stolen digest expensive; a 256-bit random key cannot be guessed at any hash speed (2^255
//! tries on average), so a fast hash loses nothing and keeps verification at about a
//! microsecond per request instead of tens of milliseconds of CPU.
//!
//! The key file is JSON:
//!
//! ```json
//! {"keys": [
//!   {"name": "billing", "hash": "sha256:…", "scopes": ["publish", "query"]},
//!   {"name": "ops", "hash": "sha256:…", "scopes": ["admin"], "rate": 50, "burst": 100}
//! ]}
//! ```
//!
//! `gatehouse api-key create --name NAME --scopes publish,query` prints a new key once and the
//! entry to add. The file is re-read on SIGHUP ([`KeyStore::reload`]); a broken file is refused
//! and the previous keys stay in force.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Rate;
use crate::ratelimit::RateLimiter;

/// Every key starts with this, so that secret scanners and people recognise one.
pub const KEY_PREFIX: &str = "ghk_";
/// Prefix of a stored digest; names the algorithm so it can change later.
pub const HASH_PREFIX: &str = "sha256:";
/// Largest key file read: far above 10,000 entries, far below anything that hurts.
pub const MAX_KEY_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Most keys in one file.
pub const MAX_KEYS: usize = 10_000;
/// Longest key name (names appear in logs and metrics).
pub const MAX_NAME_BYTES: usize = 64;
/// Longest presented key looked at; anything longer is not a key and is not hashed.
const MAX_PRESENTED_BYTES: usize = 256;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Sends, closes and deadlines: what a backend pushing to users needs.
    Publish,
    /// Presence, lookups, lists, counts and session reads: read-only.
    Query,
    /// Bindings, groups and session writes, and everything `publish` and `query` allow.
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 3] = [Scope::Publish, Scope::Query, Scope::Admin];

    /// The name used in the key file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Publish => "publish",
            Scope::Query => "query",
            Scope::Admin => "admin",
        }
    }

    /// Parses a scope name.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == name)
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Publish => 1,
            Scope::Query => 2,
            Scope::Admin => 4,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes; `admin` implies the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// Builds a set.
    pub fn of(scopes: &[Scope]) -> Scopes {
        Scopes(scopes.iter().fold(0, |bits, s| bits | s.bit()))
    }

    /// Whether an operation needing `scope` is allowed.
    pub fn allows(self, scope: Scope) -> bool {
        self.0 & (scope.bit() | Scope::Admin.bit()) != 0
    }

    /// Parses a comma-separated list (`publish,query`).
    pub fn parse_list(list: &str) -> Result<Scopes, KeyFileError> {
        let names: Vec<String> = list
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        parse_scopes(&names).map_err(KeyFileError::into_usage)
    }

    /// The scope names, for the key file.
    pub fn names(self) -> Vec<&'static str> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.0 & s.bit() != 0)
            .map(Scope::as_str)
            .collect()
    }
}

/// Why a key file (or a key entry) is refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("reading the API key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The reason.
        source: std::io::Error,
    },
    /// The file is not the expected JSON.
    #[error("the API key file is not valid: {0}")]
    Json(#[from] serde_json::Error),
    /// An entry or the file breaks a rule.
    #[error("the API key file is not valid: {0}")]
    Invalid(String),
    /// A name or scope list given to [`generate`] or [`Scopes::parse_list`] breaks a rule.
    #[error("{0}")]
    Usage(String),
}

impl KeyFileError {
    fn into_usage(self) -> KeyFileError {
        match self {
            KeyFileError::Invalid(message) => KeyFileError::Usage(message),
            other => other,
        }
    }
}

/// One key entry as stored in the file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Who holds the key (logs, metrics, idempotency scope): 1-64 of `A-Z a-z 0-9 _ . -`.
    pub name: String,
    /// `sha256:` and the key's digest in lowercase hex.
    pub hash: String,
    /// `publish`, `query`, `admin`.
    pub scopes: Vec<String>,
    /// Operations per second for this key (default: the server's `--key-rate`; 0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u32>,
    /// Burst for this key (default: the server's `--key-burst`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    keys: Vec<KeyEntry>,
}

/// A verified caller: the key's name, scopes and rate limiter.
#[derive(Debug)]
pub struct ApiKey {
    /// The entry's name.
    pub name: Arc<str>,
    /// What it may do.
    pub scopes: Scopes,
    /// Its token bucket, shared by every request made with the key.
    pub limiter: Arc<RateLimiter>,
    digest: [u8; 32],
    rate: Rate,
}

/// A freshly generated key: the secret (shown once) and the entry for the key file.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The secret the caller presents as `Authorization: Bearer <secret>`.
    pub secret: String,
    /// What to add to the key file.
    pub entry: KeyEntry,
}

/// Generates a key with 256 random bits from the operating system's generator.
pub fn generate(name: &str, scopes: Scopes) -> Result<NewKey, KeyFileError> {
    check_name(name).map_err(KeyFileError::into_usage)?;
    if scopes == Scopes::default() {
        return Err(KeyFileError::Usage("a key needs at least one scope".into()));
    }
    let bytes: [u8; 32] = rand::random();
    let secret = format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let entry = KeyEntry {
        name: name.to_owned(),
        hash: hash_key(&secret),
        scopes: scopes.names().into_iter().map(str::to_owned).collect(),
        rate: None,
        burst: None,
    };
    Ok(NewKey { secret, entry })
}

/// The stored form of a key: `sha256:<hex>`.
pub fn hash_key(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut text = String::with_capacity(HASH_PREFIX.len() + 64);
    text.push_str(HASH_PREFIX);
    for byte in digest {
        text.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        text.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    text
}

fn parse_digest(hash: &str) -> Option<[u8; 32]> {
    let hex = hash.strip_prefix(HASH_PREFIX)?.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut digest = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        digest[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(digest)
}

fn check_name(name: &str) -> Result<(), KeyFileError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(KeyFileError::Invalid(format!(
            "key name {:?} must be 1-{MAX_NAME_BYTES} characters of A-Z a-z 0-9 _ . -",
            name.chars().take(80).collect::<String>()
        )))
    }
}

fn parse_scopes(names: &[String]) -> Result<Scopes, KeyFileError> {
    let mut scopes = Vec::new();
    for name in names {
        let scope = Scope::parse(name).ok_or_else(|| {
            KeyFileError::Invalid(format!(
                "unknown scope {:?} (publish, query, admin)",
                name.chars().take(80).collect::<String>()
            ))
        })?;
        scopes.push(scope);
    }
    if scopes.is_empty() {
        return Err(KeyFileError::Invalid("a key needs at least one scope".into()));
    }
    Ok(Scopes::of(&scopes))
}

/// The keys in force: looked up by the digest of the presented key.
#[derive(Debug, Default)]
pub struct KeySet {
    by_digest: HashMap<[u8; 32], Arc<ApiKey>>,
}

impl KeySet {
    /// Parses and checks a key file's text. `default_rate` applies to entries without their
    /// own; `previous` donates the token buckets of unchanged keys so that a reload does not
    /// refill them.
    pub fn parse(text: &str, default_rate: Rate, previous: Option<&KeySet>) -> Result<KeySet, KeyFileError> {
        let file: KeyFile = serde_json::from_str(text)?;
        if file.keys.len() > MAX_KEYS {
            return Err(KeyFileError::Invalid(format!("more than {MAX_KEYS} keys")));
        }
        let mut names = HashSet::new();
        let mut by_digest = HashMap::with_capacity(file.keys.len());
        for entry in file.keys {
            check_name(&entry.name)?;
            if !names.insert(entry.name.clone()) {
                return Err(KeyFileError::Invalid(format!(
                    "key name {:?} appears twice",
                    entry.name
                )));
            }
            let digest = parse_digest(&entry.hash).ok_or_else(|| {
                KeyFileError::Invalid(format!(
                    "key {:?}: hash must be \"sha256:\" and 64 lowercase hex digits",
                    entry.name
                ))
            })?;
            let scopes = parse_scopes(&entry.scopes).map_err(|e| match e {
                KeyFileError::Invalid(m) => KeyFileError::Invalid(format!("key {:?}: {m}", entry.name)),
                other => other,
            })?;
            let rate = Rate {
                per_second: entry.rate.unwrap_or(default_rate.per_second),
                burst: entry.burst.unwrap_or(default_rate.burst),
            };
            if rate.per_second > 0 && rate.burst == 0 {
                return Err(KeyFileError::Invalid(format!(
                    "key {:?}: burst must be at least 1",
                    entry.name
                )));
            }
            let limiter = previous
                .and_then(|p| p.by_digest.get(&digest))
                .filter(|old| old.rate == rate)
                .map(|old| old.limiter.clone())
                .unwrap_or_else(|| Arc::new(RateLimiter::new(rate)));
            let key = ApiKey {
                name: entry.name.into(),
                scopes,
                limiter,
                digest,
                rate,
            };
            if by_digest.insert(digest, Arc::new(key)).is_some() {
                return Err(KeyFileError::Invalid("two entries have the same hash".into()));
            }
        }
        Ok(KeySet { by_digest })
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether there is no key (every request is then refused).
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// Finds the key whose digest matches the presented secret.
    ///
    /// Timing: the look-up works on the SHA-256 digest of what the caller sent, never on the
    /// stored secret (there is none), and the match is confirmed with a constant-time
    /// comparison. How long a look-up takes can at most reveal something about digests, and a
    /// digest does not lead back to a 256-bit key.
    pub fn verify(&self, presented: &str) -> Option<Arc<ApiKey>> {
        if presented.is_empty() || presented.len() > MAX_PRESENTED_BYTES {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let key = self.by_digest.get(&digest)?;
        bool::from(key.digest.ct_eq(&digest)).then(|| key.clone())
    }
}

/// The key set in force, swapped whole on reload: a request reads it without a lock.
pub struct KeyStore {
    path: PathBuf,
    default_rate: Rate,
    current: ArcSwap<KeySet>,
}

impl KeyStore {
    /// Reads the key file; refuses to start without a valid one.
    pub fn load(path: &Path, default_rate: Rate) -> Result<KeyStore, KeyFileError> {
        let set = read(path, default_rate, None)?;
        Ok(KeyStore {
            path: path.to_owned(),
            default_rate,
            current: ArcSwap::from_pointee(set),
        })
    }

    /// Re-reads the key file; on error the keys in force stay. Returns the number of keys.
    pub fn reload(&self) -> Result<usize, KeyFileError> {
        let set = read(&self.path, self.default_rate, Some(&self.current.load()))?;
        let count = set.len();
        self.current.store(Arc::new(set));
        Ok(count)
    }

    /// Number of keys in force.
    pub fn len(&self) -> usize {
        self.current.load().len()
    }

    /// Whether no key is in force.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// See [`KeySet::verify`].
    pub fn verify(&self, presented: &str) -> Option<Arc<ApiKey>> {
        self.current.load().verify(presented)
    }
}

fn read(path: &Path, default_rate: Rate, previous: Option<&KeySet>) -> Result<KeySet, KeyFileError> {
    use std::io::Read as _;
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_KEY_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(KeyFileError::Invalid(format!(
            "the file is larger than {MAX_KEY_FILE_BYTES} bytes"
        )));
    }
    KeySet::parse(&text, default_rate, previous)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        per_second: 10,
        burst: 10,
    };

    fn file(entries: &[KeyEntry]) -> String {
        serde_json::json!({ "keys": entries }).to_string()
    }

    #[test]
    fn a_generated_key_is_256_random_bits_and_verifies_against_its_entry_only() {
        let a = generate("billing", Scopes::of(&[Scope::Publish, Scope::Query])).unwrap();
        let b = generate("ops", Scopes::of(&[Scope::Admin])).unwrap();
        assert!(a.secret.starts_with(KEY_PREFIX));
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&a.secret[KEY_PREFIX.len()..])
            .unwrap();
        assert_eq!(raw.len(), 32);
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.entry.scopes, ["publish", "query"]);
        assert!(!a.entry.hash.contains(&a.secret[KEY_PREFIX.len()..]));

        let set = KeySet::parse(&file(&[a.entry.clone(), b.entry.clone()]), RATE, None).unwrap();
        assert_eq!(&*set.verify(&a.secret).unwrap().name, "billing");
        assert_eq!(&*set.verify(&b.secret).unwrap().name, "ops");
        assert!(set.verify("ghk_not-a-key").is_none());
        assert!(set.verify("").is_none());
        assert!(set.verify(&"x".repeat(10_000)).is_none());
        // A digest presented as the key does not verify: only the secret does.
        assert!(set.verify(&a.entry.hash).is_none());
    }

    #[test]
    fn the_stored_hash_is_sha256_in_lowercase_hex() {
        // SHA-256("abc"), FIPS 180-2 test vector.
        assert_eq!(
            hash_key("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(parse_digest(&hash_key("abc")).unwrap()[0], 0xba);
        assert!(parse_digest("sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD").is_none());
        assert!(parse_digest("md5:00").is_none());
    }

    #[test]
    fn admin_implies_every_scope_and_the_others_only_themselves() {
        let admin = Scopes::of(&[Scope::Admin]);
        let publish = Scopes::of(&[Scope::Publish]);
        let both = Scopes::parse_list("publish, query").unwrap();
        for scope in Scope::ALL {
            assert!(admin.allows(scope));
        }
        assert!(publish.allows(Scope::Publish));
        assert!(!publish.allows(Scope::Query));
        assert!(!publish.allows(Scope::Admin));
        assert!(both.allows(Scope::Query) && both.allows(Scope::Publish) && !both.allows(Scope::Admin));
        assert!(Scopes::parse_list("publish,root").is_err());
        assert!(Scopes::parse_list("").is_err());
    }

    #[test]
    fn invalid_key_files_are_refused_with_the_reason() {
        let good = generate("a", Scopes::of(&[Scope::Query])).unwrap().entry;
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "not valid"),
            (r#"{"keys": [], "extra": 1}"#.into(), "unknown field"),
            (file(&[good.clone(), good.clone()]), "appears twice"),
            (
                file(&[
                    KeyEntry {
                        name: "b".into(),
                        ..good.clone()
                    },
                    good.clone(),
                ]),
                "same hash",
            ),
            (
                file(&[KeyEntry {
                    name: "bad name".into(),
                    ..good.clone()
                }]),
                "must be 1-64",
            ),
            (
                file(&[KeyEntry {
                    hash: "sha256:abc".into(),
                    ..good.clone()
                }]),
                "64 lowercase hex",
            ),
            (
                file(&[KeyEntry {
                    scopes: vec!["root".into()],
                    ..good.clone()
                }]),
                "unknown scope",
            ),
            (
                file(&[KeyEntry {
                    scopes: vec![],
                    ..good.clone()
                }]),
                "at least one scope",
            ),
            (
                file(&[KeyEntry {
                    rate: Some(5),
                    burst: Some(0),
                    ..good.clone()
                }]),
                "burst",
            ),
        ];
        for (text, reason) in cases {
            let error = KeySet::parse(&text, RATE, None).unwrap_err().to_string();
            assert!(error.contains(reason), "{text}: {error}");
        }
    }

    #[test]
    fn a_reload_keeps_the_buckets_of_unchanged_keys_and_drops_removed_keys() {
        let dir = std::env::temp_dir().join(format!("gatehouse-keys-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.json");
        let a = generate("a", Scopes::of(&[Scope::Query])).unwrap();
        let b = generate("b", Scopes::of(&[Scope::Query])).unwrap();
        std::fs::write(&path, file(std::slice::from_ref(&a.entry))).unwrap();
        let store = KeyStore::load(&path, RATE).unwrap();
        let before = store.verify(&a.secret).unwrap();
        assert!(store.verify(&b.secret).is_none());

        std::fs::write(&path, file(std::slice::from_ref(&b.entry))).unwrap();
        assert_eq!(store.reload().unwrap(), 1);
        assert!(store.verify(&a.secret).is_none());
        assert!(store.verify(&b.secret).is_some());

        std::fs::write(&path, file(&[a.entry.clone(), b.entry.clone()])).unwrap();
        store.reload().unwrap();
        let again = store.verify(&a.secret).unwrap();
        assert!(
            !Arc::ptr_eq(&before.limiter, &again.limiter),
            "a removed key starts afresh"
        );
        std::fs::write(&path, file(&[a.entry.clone(), b.entry.clone()])).unwrap();
        store.reload().unwrap();
        assert!(Arc::ptr_eq(&again.limiter, &store.verify(&a.secret).unwrap().limiter));

        std::fs::write(&path, "{broken").unwrap();
        assert!(store.reload().is_err());
        assert!(
            store.verify(&a.secret).is_some(),
            "a broken file keeps the keys in force"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
