//! Validation of the names users pass to the cluster API (uids and group names), shared by the
//! SDK (to fail early with a typed error) and the gateway (to never trust a peer).

/// Longest uid or group name, in bytes. Keys travel in every routing delta and snapshot.
pub const MAX_KEY_BYTES: usize = 256;

/// Why a uid or group name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Empty names are reserved for "none".
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// Longer than [`MAX_KEY_BYTES`].
    #[error("{0} is longer than {MAX_KEY_BYTES} bytes")]
    TooLong(&'static str),
    /// Control characters would corrupt logs and text protocols.
    #[error("{0} contains a control character")]
    Control(&'static str),
}

/// Checks a uid or group name; `what` names it in the error ("uid", "group").
pub fn check_key(what: &'static str, key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty(what));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KeyError::TooLong(what));
    }
    if key.chars().any(char::is_control) {
        return Err(KeyError::Control(what));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(check_key("uid", "alice").is_ok());
        assert_eq!(check_key("uid", ""), Err(KeyError::Empty("uid")));
        assert_eq!(check_key("group", &"x".repeat(257)), Err(KeyError::TooLong("group")));
        assert_eq!(check_key("uid", "a\nb"), Err(KeyError::Control("uid")));
    }
}
