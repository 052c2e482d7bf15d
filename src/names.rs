//! Names, labels and annotations certpin puts on objects: shared by the
//! operator and the CLI, which reads them back.

use sha2::{Digest, Sha256};

use crate::resource::ClientCertificateSet;

pub const LABEL_SET: &str = "certpin.dev/set";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// On the Secret: the file keys of the current rendering, in
/// certificate order, and those kept from the previous one.
pub const ANN_FILES: &str = "certpin.dev/files";
pub const ANN_PREVIOUS_FILES: &str = "certpin.dev/previous-files";
/// On the Secret: hash of the inputs they were encoded from.
pub const ANN_INPUT_HASH: &str = "certpin.dev/input-hash";
/// On the Secret: when its content was rendered.
pub const ANN_RENDERED_AT: &str = "certpin.dev/rendered-at";
/// On the pod template: hash of the rendered content the pods run with.
pub const ANN_CONFIG_HASH: &str = "certpin.dev/config-hash";
/// On the workload: when certpin last rolled its pods (written with the
/// template change, so a restart is on record even if the pass ends
/// before its status).
pub const ANN_RESTARTED_AT: &str = "certpin.dev/restarted-at";
/// On the workload: the name of the set that wires it (for people).
pub const ANN_SET: &str = "certpin.dev/set";
/// On the workload: the uid of the set that wires it (the claim itself),
/// also while a StopStart is under way; a label, so deletion finds every
/// workload a set touched.
pub const LABEL_SET_UID: &str = "certpin.dev/set-uid";
/// On the Deployment during a StopStart: the replica count to restore.
pub const ANN_STOP_START: &str = "certpin.dev/stop-start";
/// On the set: a request for a pass now (Flux's `requestedAt` convention:
/// any new value; the pass echoes it to status.lastHandledReconcileAt).
pub const ANN_RECONCILE_REQUESTED: &str = "certpin.dev/reconcile-requested-at";
/// Flux's own name for the same request, so that tooling made for Flux's
/// objects works on sets too.
pub const ANN_FLUX_REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";
pub const VOLUME: &str = "certpin-client-certificates";
pub const FINALIZER: &str = "certpin.dev/unwire";

pub const KEY_CERTIFICATES: &str = "ClientCertificates";
pub const KEY_PASSWORDS: &str = "ClientCertificatePasswords";
pub const KEY_USAGES: &str = "ClientCertificateUsages";
pub const KEY_CA_CERTIFICATES: &str = "CACertificates";
/// The Secret annotation listing the rendering's CA files.
pub const ANN_CA_FILES: &str = "certpin.dev/ca-files";

/// The environment variables certpin sets: the runtime settings it owns.
pub const SETTING_ENV: [&str; 4] = [
    "MXRUNTIME_ClientCertificates",
    "MXRUNTIME_ClientCertificatePasswords",
    "MXRUNTIME_ClientCertificateUsages",
    "MXRUNTIME_CACertificates",
];

/// The environment variables through which the Mendix buildpack takes
/// certificates the old way; its `MXRUNTIME_*` settings (certpin's) win
/// over them, silently.
pub const BUILDPACK_ENV: [&str; 2] = ["CLIENT_CERTIFICATES", "CERTIFICATE_AUTHORITIES"];

pub fn set_name(set: &ClientCertificateSet) -> &str {
    set.metadata.name.as_deref().unwrap_or_default()
}

/// The rendered ConfigMap and Secret: `<set>-certpin`.
pub fn rendered(set: &ClientCertificateSet) -> String {
    with_suffix(set_name(set), "-certpin")
}

/// `<name><suffix>`, shortened with a hash when over the 253-character limit.
fn with_suffix(name: &str, suffix: &str) -> String {
    let full = format!("{name}{suffix}");
    if full.len() <= 253 {
        return full;
    }
    let digest = hex::encode(&Sha256::digest(name.as_bytes())[..6]);
    let keep = 253 - suffix.len() - digest.len() - 1;
    format!("{}-{digest}{suffix}", &name[..keep])
}

/// A label value for the set's name: label values are limited to 63
/// characters, names to 253, so long names are shortened with a hash.
pub fn label_value(name: &str) -> String {
    if name.len() <= 63 {
        return name.to_string();
    }
    let digest = hex::encode(&Sha256::digest(name.as_bytes())[..5]);
    format!("{}-{digest}", name[..52].trim_end_matches(['-', '.']))
}

/// A file's key (and name in the pod): the certificate's name and a hash
/// of the file, so that new content never replaces old content under the
/// same name while pods that opened the old one still run.
pub fn file_name(cert: &str, content: &[u8]) -> String {
    let digest = hex::encode(&Sha256::digest(content)[..5]);
    format!("{cert}-{digest}.pfx")
}

/// The path in the pod of a file key.
pub fn file_path(set: &ClientCertificateSet, key: &str) -> String {
    format!("{}/{key}", mount_path(set).trim_end_matches('/'))
}

/// The set's mountPath, normalized.
pub fn mount_path(set: &ClientCertificateSet) -> String {
    normal_path(&set.spec.mount_path)
}

/// A path as the kernel resolves it, lexically: repeated slashes are one,
/// `.` is nothing, `..` goes up (never above the root), no trailing slash.
/// Paths are compared only in this form: `/a//b`, `/a/./b` and `/a/b/` are
/// one place.
pub fn normal_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    if path.starts_with('/') || joined.is_empty() {
        format!("/{joined}")
    } else {
        joined
    }
}

/// A DNS subdomain (RFC 1123), as Kubernetes requires of Secret and
/// Deployment names. Names reach API URLs: anything else (`a?b`, `a/b`) is
/// refused before it is read, whatever the CRD let through in older versions.
pub fn is_dns_subdomain(name: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label)
}

#[cfg(test)]
mod name_tests {
    use super::{is_dns_subdomain, normal_path};

    #[test]
    fn paths_are_normalized_as_the_kernel_resolves_them() {
        for (spelled, normal) in [
            (
                "/etc/certpin/client-certificates",
                "/etc/certpin/client-certificates",
            ),
            (
                "/etc/certpin/./client-certificates",
                "/etc/certpin/client-certificates",
            ),
            (
                "//etc//certpin/client-certificates/",
                "/etc/certpin/client-certificates",
            ),
            (
                "/etc/x/../certpin/client-certificates/.",
                "/etc/certpin/client-certificates",
            ),
            ("/../..", "/"),
            ("/", "/"),
            ("data/./x", "data/x"),
        ] {
            assert_eq!(normal_path(spelled), normal, "{spelled}");
        }
    }

    #[test]
    fn only_dns_subdomains_are_names() {
        for ok in ["a", "cert", "my-cert.v2", "0a"] {
            assert!(is_dns_subdomain(ok), "{ok}");
        }
        for bad in [
            "",
            "secret?x=1",
            "a/b",
            "A",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a b",
            "é",
        ] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
        assert!(!is_dns_subdomain(&"a".repeat(254)));
    }
}
