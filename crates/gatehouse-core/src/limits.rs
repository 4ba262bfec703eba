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

/// Longest close reason: a Close frame's payload is at most 125 bytes, two of them the code.
pub const MAX_CLOSE_REASON_BYTES: usize = 123;

/// Why a close code or reason an application asked for is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseError {
    /// Codes 1002, 1003, 1007, 1009 and 1010 describe protocol failures the gateway itself
    /// detects, 1004-1006 and 1015 must never be sent, and 1016-2999 and 5000+ are not for
    /// applications.
    #[error("close code {0} is not one an application may send (1000, 1001, 1008, 1011-1013, 3000-4999)")]
    Code(u32),
    /// Longer than [`MAX_CLOSE_REASON_BYTES`].
    #[error("a close reason is at most {MAX_CLOSE_REASON_BYTES} bytes")]
    Reason,
}

/// Checks a close code (0 meaning 1000) and reason an application asks a gateway to send;
/// returns the code to send.
pub fn check_close(code: u32, reason: &str) -> Result<u16, CloseError> {
    let code = match code {
        0 => 1000,
        1000 | 1001 | 1008 | 1011..=1013 | 3000..=4999 => code as u16,
        other => return Err(CloseError::Code(other)),
    };
    if reason.len() > MAX_CLOSE_REASON_BYTES {
        return Err(CloseError::Reason);
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applications_may_close_with_policy_and_private_codes_only() {
        assert_eq!(check_close(0, ""), Ok(1000));
        for code in [1000, 1001, 1008, 1011, 1012, 1013, 3000, 4001, 4999] {
            assert_eq!(check_close(code, "r"), Ok(code as u16), "{code}");
        }
        for code in [
            1002, 1003, 1004, 1005, 1006, 1007, 1009, 1010, 1015, 2000, 2999, 5000, 70000,
        ] {
            assert_eq!(check_close(code, ""), Err(CloseError::Code(code)), "{code}");
        }
        assert_eq!(check_close(1000, &"x".repeat(124)), Err(CloseError::Reason));
        assert!(check_close(1000, &"x".repeat(123)).is_ok());
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key("uid", "alice").is_ok());
        assert_eq!(check_key("uid", ""), Err(KeyError::Empty("uid")));
        assert_eq!(check_key("group", &"x".repeat(257)), Err(KeyError::TooLong("group")));
        assert_eq!(check_key("uid", "a\nb"), Err(KeyError::Control("uid")));
    }
}
