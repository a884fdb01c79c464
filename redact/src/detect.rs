//! The shipped detectors: what personal data and secrets look like in text, each a pattern for
//! the linear-time `regex` engine and, where a pattern alone would mask look-alikes, a check of
//! the match (Luhn for card numbers, ISO 7064 mod 97 for IBANs, octet ranges for IPv4, the
//! standard library's parser for IPv6).
//!
//! A pattern with a capture group named `v` replaces only that group (the value after
//! `password=`), so the surrounding text stays readable.

use crate::Action;

/// A check of a match the pattern alone cannot make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// Every match counts.
    None,
    /// Card numbers: 13–19 digits passing the Luhn checksum.
    Luhn,
    /// IBANs: 15–34 characters whose ISO 7064 mod-97 remainder is 1.
    Iban,
    /// US social security numbers: area not 000, 666 or 9xx; group not 00; serial not 0000.
    Ssn,
    /// Phone numbers: 8 to 15 digits (E.164 allows at most 15).
    Phone,
    /// IPv4 addresses: four octets of at most 255.
    Ipv4,
    /// IPv6 addresses, as the standard library parses them.
    Ipv6,
}

/// A shipped detector.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Builtin {
    /// Its name in the rules file and in metrics.
    pub(crate) name: &'static str,
    /// The label a mask writes (`[EMAIL]`).
    pub(crate) label: &'static str,
    /// The pattern.
    pub(crate) pattern: &'static str,
    /// The check of each match.
    pub(crate) check: Check,
    /// On unless the rules file turns it off.
    pub(crate) enabled: bool,
    /// What it does unless the rules file says otherwise.
    pub(crate) action: Action,
}

const fn d(
    name: &'static str,
    label: &'static str,
    pattern: &'static str,
    check: Check,
    enabled: bool,
) -> Builtin {
    Builtin {
        name,
        label,
        pattern,
        check,
        enabled,
        action: Action::Mask,
    }
}

/// Every shipped detector, in the order overlapping matches are preferred (secrets first: a
/// password that happens to contain an email address is masked as a password).
pub(crate) const BUILTINS: &[Builtin] = &[
    d(
        "private_key",
        "PRIVATE_KEY",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[A-Za-z0-9+/=\s]*(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----)?",
        Check::None,
        true,
    ),
    d(
        "jwt",
        "JWT",
        r"(?-u:\b)eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}",
        Check::None,
        true,
    ),
    d(
        "custos_token",
        "CUSTOS_TOKEN",
        r"(?-u:\b)cst_[A-Za-z0-9_-]{43}",
        Check::None,
        true,
    ),
    d(
        "openai_key",
        "API_KEY",
        r"(?-u:\b)sk-(?:ant-|proj-|svcacct-)?[A-Za-z0-9_-]{20,}",
        Check::None,
        true,
    ),
    d(
        "aws_access_key",
        "AWS_ACCESS_KEY",
        r"(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}(?-u:\b)",
        Check::None,
        true,
    ),
    d(
        "aws_secret_key",
        "AWS_SECRET_KEY",
        r#"(?i:aws_secret_access_key|aws_secret_key|secret_access_key|aws_secret)["']?\s*[:=]\s*["']?(?P<v>[A-Za-z0-9/+=]{40})"#,
        Check::None,
        true,
    ),
    d(
        "github_token",
        "GITHUB_TOKEN",
        r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
        Check::None,
        true,
    ),
    d(
        "slack_token",
        "SLACK_TOKEN",
        r"(?-u:\b)xox[abposr]-[A-Za-z0-9-]{10,}",
        Check::None,
        true,
    ),
    d(
        "bearer",
        "BEARER_TOKEN",
        r"(?i:bearer|authorization:\s*basic)\s+(?P<v>[A-Za-z0-9._~+/-]{16,}=*)",
        Check::None,
        true,
    ),
    d(
        "password",
        "PASSWORD",
        r#"(?i:password|passwd|pwd|passphrase|client_secret|api_key|apikey|access_token|auth_token)["']?\s*[:=]\s*(?P<v>"[^"\s]+"|'[^'\s]+'|[^\s"'&;,]+)"#,
        Check::None,
        true,
    ),
    d(
        "email",
        "EMAIL",
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
        Check::None,
        true,
    ),
    d(
        "iban",
        "IBAN",
        r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}(?-u:\b)",
        Check::Iban,
        true,
    ),
    d(
        "card",
        "CARD",
        r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,18}(?-u:\b)",
        Check::Luhn,
        true,
    ),
    d(
        "us_ssn",
        "SSN",
        r"(?-u:\b)[0-9]{3}-[0-9]{2}-[0-9]{4}(?-u:\b)",
        Check::Ssn,
        true,
    ),
    d(
        "phone",
        "PHONE",
        // International (+), North American (555-123-4567, (555) 123-4567) and trunk-prefixed
        // local numbers (030 1234567); digits alone, dates and amounts are not phones.
        r"\+[0-9]{1,3}(?:[ .-]?(?:\([0-9]{1,4}\)|[0-9]{1,5})){1,6}|(?:\([0-9]{3}\)|(?-u:\b)[0-9]{3})[ .-]?[0-9]{3}[ .-][0-9]{4}(?-u:\b)|(?-u:\b)0[0-9]{2,4}[ /-][0-9]{4,8}(?-u:\b)",
        Check::Phone,
        true,
    ),
    d(
        "ipv4",
        "IP",
        r"(?-u:\b)[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?-u:\b)",
        Check::Ipv4,
        false,
    ),
    d(
        "ipv6",
        "IP",
        r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}",
        Check::Ipv6,
        false,
    ),
];

/// The detector called `name`.
pub(crate) fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// The names of every shipped detector, for error messages.
pub(crate) fn names() -> String {
    BUILTINS
        .iter()
        .map(|b| format!("`{}`", b.name))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Check {
    /// Whether `m`, a match of the pattern, is what the detector looks for.
    pub(crate) fn accepts(self, m: &str) -> bool {
        match self {
            Check::None => true,
            Check::Luhn => luhn(m),
            Check::Iban => iban(m),
            Check::Ssn => ssn(m),
            Check::Phone => {
                let n = m.bytes().filter(u8::is_ascii_digit).count();
                // Dates (2026-12-01) and times have fewer digits; a phone number has 8 to 15.
                (8..=15).contains(&n) && !looks_like_date(m)
            }
            Check::Ipv4 => m.split('.').all(|o| o.parse::<u8>().is_ok()),
            Check::Ipv6 => m.matches(':').count() >= 2 && m.parse::<std::net::Ipv6Addr>().is_ok(),
        }
    }
}

/// `2026-12-01 10:15` and `2026-12-01T10:15`: a date and a time, not a phone number.
fn looks_like_date(m: &str) -> bool {
    let b = m.as_bytes();
    b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
}

/// The Luhn checksum over the digits of `m` (separators ignored), for 13 to 19 digits.
pub(crate) fn luhn(m: &str) -> bool {
    let digits: Vec<u32> = m.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// ISO 13616: country, check digits and BBAN (spaces ignored), 15–34 characters, mod 97 = 1.
pub(crate) fn iban(m: &str) -> bool {
    let s: Vec<u8> = m.bytes().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&s.len()) {
        return false;
    }
    let mut rem: u32 = 0;
    for &b in s[4..].iter().chain(&s[..4]) {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// `AAA-GG-SSSS` with the ranges the SSA never issues excluded.
fn ssn(m: &str) -> bool {
    let parts: Vec<&str> = m.split('-').collect();
    let [area, group, serial] = parts.as_slice() else {
        return false;
    };
    *area != "000"
        && *area != "666"
        && !area.starts_with('9')
        && *group != "00"
        && *serial != "0000"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finds(name: &str, text: &str) -> Vec<String> {
        let b = builtin(name).unwrap();
        let re = regex::Regex::new(b.pattern).unwrap();
        re.captures_iter(text)
            .filter_map(|c| {
                let m = c.name("v").or_else(|| c.get(0))?;
                let whole = c.get(0)?.as_str();
                b.check.accepts(whole).then(|| m.as_str().to_string())
            })
            .collect()
    }

    #[test]
    fn every_pattern_compiles_and_names_are_unique() {
        let mut names = std::collections::HashSet::new();
        for b in BUILTINS {
            regex::Regex::new(b.pattern).unwrap();
            assert!(names.insert(b.name), "{}", b.name);
        }
    }

    #[test]
    fn cards_pass_luhn_and_order_numbers_do_not() {
        assert_eq!(
            finds("card", "card 4111 1111 1111 1111 ok"),
            ["4111 1111 1111 1111"]
        );
        assert_eq!(
            finds("card", "pan=5500-0000-0000-0004"),
            ["5500-0000-0000-0004"]
        );
        assert!(
            finds("card", "order 4111111111111112").is_empty(),
            "fails Luhn"
        );
        assert!(finds("card", "id 123456789012").is_empty(), "too short");
    }

    #[test]
    fn ibans_pass_mod_97() {
        assert_eq!(
            finds("iban", "pay DE89370400440532013000 now"),
            ["DE89370400440532013000"]
        );
        assert_eq!(
            finds("iban", "GB82 WEST 1234 5698 7654 32"),
            ["GB82 WEST 1234 5698 7654 32"]
        );
        assert!(
            finds("iban", "DE89370400440532013001").is_empty(),
            "bad checksum"
        );
        assert!(finds("iban", "SKU AB12CDEFGHIJKLMNOP").is_empty());
    }

    #[test]
    fn phones_need_enough_digits_and_dates_are_not_phones() {
        assert_eq!(finds("phone", "call +49 30 1234567"), ["+49 30 1234567"]);
        assert_eq!(finds("phone", "tel (555) 123-4567"), ["(555) 123-4567"]);
        assert_eq!(finds("phone", "+14155550123"), ["+14155550123"]);
        assert!(finds("phone", "at 2026-12-01 10:15").is_empty());
        assert!(finds("phone", "version 1.2.3").is_empty());
        assert!(finds("phone", "took 12 34 ms").is_empty());
        assert_eq!(finds("phone", "Tel. 030 1234567"), ["030 1234567"]);
        assert_eq!(finds("phone", "555.123.4567"), ["555.123.4567"]);
        assert!(finds("phone", "EUR 1 234 567.89 and 12345678901").is_empty());
    }

    #[test]
    fn ssns_skip_ranges_never_issued() {
        assert_eq!(finds("us_ssn", "ssn 123-45-6789"), ["123-45-6789"]);
        assert!(finds("us_ssn", "000-12-3456 666-12-3456 912-12-3456").is_empty());
    }

    #[test]
    fn secrets_are_found_and_only_their_value_is_replaced() {
        assert_eq!(
            finds("password", "user=ana password=hunter2!x&next=1"),
            ["hunter2!x"]
        );
        assert_eq!(
            finds("password", r#"{"api_key": "abc123"}"#),
            [r#""abc123""#]
        );
        assert!(finds("password", "max_tokens=5 passwords are hard").is_empty());
        assert_eq!(
            finds("bearer", "Authorization: Bearer abcdefghijklmnop1234"),
            ["abcdefghijklmnop1234"]
        );
        assert!(finds("bearer", "bearer bonds").is_empty());
        assert_eq!(
            finds(
                "aws_secret_key",
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
            ),
            ["wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"]
        );
        assert_eq!(
            finds("aws_access_key", "key AKIAIOSFODNN7EXAMPLE."),
            ["AKIAIOSFODNN7EXAMPLE"]
        );
        assert_eq!(
            finds("openai_key", "sk-proj-abcdefghijklmnopqrstuv"),
            ["sk-proj-abcdefghijklmnopqrstuv"]
        );
        assert!(finds("openai_key", "task-abcdefghijklmnopqrstuvwx").is_empty());
        assert_eq!(
            finds("github_token", &format!("ghp_{}", "a".repeat(36))).len(),
            1
        );
        assert_eq!(finds("slack_token", "xoxb-1234567890-abcdef").len(), 1);
        let jwt =
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(finds("jwt", jwt), [jwt]);
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END RSA PRIVATE KEY-----";
        assert_eq!(finds("private_key", &format!("key: {pem} end")), [pem]);
    }

    #[test]
    fn emails_and_addresses() {
        assert_eq!(
            finds("email", "from ana.lopez+x@example.co.uk,"),
            ["ana.lopez+x@example.co.uk"]
        );
        assert!(finds("email", "not an @ address").is_empty());
        assert_eq!(finds("ipv4", "peer 192.168.1.20:443"), ["192.168.1.20"]);
        assert!(finds("ipv4", "version 1.2.3.400").is_empty());
        assert_eq!(
            finds("ipv6", "peer 2001:db8::8a2e:370:7334 ok"),
            ["2001:db8::8a2e:370:7334"]
        );
        assert!(finds("ipv6", "at 10:15:30").is_empty());
    }
}
