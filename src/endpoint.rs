//! Pins: the endpoints a certificate is presented to. The app runtime matches
//! a web service by `Module.WebService`, a REST call by the bare host name,
//! or a custom identifier; anything with a scheme, a path, a port or
//! whitespace never matches, so it is refused with the corrected form.

use crate::pkcs12::{Problem, Reason};

/// Checks one pin; on refusal, the message shows the corrected form where
/// there is one.
pub fn check_pin(pin: &str) -> Result<(), Problem> {
    let Some((why, fix)) = defect(pin) else {
        return Ok(());
    };
    // Suggest a fix only when it is itself a valid endpoint (checked without
    // recursing: a fix may be as broken as the pin).
    let fix = fix
        .filter(|f| !f.is_empty() && f != pin && defect(f).is_none())
        .map(|f| format!("; use \"{f}\""))
        .unwrap_or_default();
    Err(Problem::new(
        Reason::InvalidPin,
        format!(
            "pin {pin:?} is not an endpoint: {why}{fix} (an endpoint is Module.WebService, a bare host name such \
             as api.example.com, or a custom identifier)"
        ),
    ))
}

/// What is wrong with a pin, and the corrected form where there is one.
fn defect(pin: &str) -> Option<(&'static str, Option<String>)> {
    if pin.trim().is_empty() {
        return Some(("it is empty", None));
    }
    if let Some(idx) = pin.find("://") {
        let rest = &pin[idx + 3..];
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = authority.rsplit('@').next().unwrap_or_default();
        return Some((
            "it is a URL, the runtime matches the host name only",
            Some(strip_port(host).to_string()),
        ));
    }
    if pin.chars().any(|c| c.is_whitespace()) {
        return Some((
            "it contains whitespace",
            Some(pin.split_whitespace().collect::<String>()),
        ));
    }
    if pin.chars().any(|c| c.is_control()) {
        return Some(("it contains control characters", None));
    }
    if pin.contains('/') {
        return Some((
            "it contains a path, the runtime matches the host name only",
            pin.split('/').next().map(str::to_string),
        ));
    }
    if pin.contains(':') {
        return Some((
            "it contains ':' (a port?), the runtime matches the host name only",
            Some(strip_port(pin).to_string()),
        ));
    }
    None
}

fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_of_every_kind_are_accepted() {
        for pin in [
            "Module.WebService1",
            "www.server-to-contact.com",
            "api.partner-b.example",
            "custom-id",
            "Zoë.Dienst",
        ] {
            check_pin(pin).unwrap();
        }
    }

    #[test]
    fn non_endpoints_are_refused_with_the_corrected_form() {
        for (pin, fix) in [
            ("https://api.example.com/v1/orders", Some("api.example.com")),
            ("https://user@api.example.com:8443", Some("api.example.com")),
            ("api.example.com/v1", Some("api.example.com")),
            ("api.example.com:443", Some("api.example.com")),
            (" api.example.com", Some("api.example.com")),
            ("Module. WebService", Some("Module.WebService")),
            ("", None),
            ("   ", None),
            ("a\u{7}b", None),
            // Found by the fuzzer: the "fix" was the pin itself (infinite recursion).
            ("Module.WebService0m\\:.cD", None),
        ] {
            let err = check_pin(pin).unwrap_err();
            assert_eq!(err.reason, Reason::InvalidPin, "{pin:?}");
            match fix {
                Some(f) => assert!(
                    err.message.contains(&format!("use \"{f}\"")),
                    "{pin:?}: {}",
                    err.message
                ),
                None => assert!(!err.message.contains("; use"), "{pin:?}: {}", err.message),
            }
        }
    }
}
