//! The naming rule shared by scenarios, VMs and boards: 1 to 32 characters from `[a-z0-9_-]`.

use crate::error::ErrorKind;

/// Longest allowed name, in characters.
pub const MAX_NAME_LEN: usize = 32;

/// Checks `name` against the naming rule.
pub fn check_name(name: &str) -> Result<(), ErrorKind> {
    let invalid = |reason: String| ErrorKind::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty".to_owned()));
    }
    let len = name.chars().count();
    if len > MAX_NAME_LEN {
        return Err(invalid(format!("it is {len} characters long")));
    }
    if let Some(bad) = name
        .chars()
        .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'))
    {
        return Err(invalid(format!("character {bad:?} is not allowed")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_rule() {
        assert!(check_name("vm0").is_ok());
        assert!(check_name("test-guest_2").is_ok());
        assert!(check_name(&"a".repeat(32)).is_ok());
    }

    #[test]
    fn rejects_empty_long_and_bad_chars() {
        for bad in ["", "VM0", "a b", "a.b", "é", &"a".repeat(33)] {
            assert!(
                matches!(check_name(bad), Err(ErrorKind::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }
}
