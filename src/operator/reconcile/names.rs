//! Names, labels and annotations certpin uses.

use sha2::{Digest, Sha256};

use crate::resource::ClientCertificateSet;

pub const LABEL_SET: &str = "certpin.dev/set";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// On the rendered Secret: hash of the inputs it was encoded from.
pub const ANN_INPUT_HASH: &str = "certpin.dev/input-hash";
/// On the rendered Secret: when its content was rendered.
pub const ANN_RENDERED_AT: &str = "certpin.dev/rendered-at";
/// On the pod template: hash of the rendered content the pods run with.
pub const ANN_CONFIG_HASH: &str = "certpin.dev/config-hash";
/// On the workload: the name of the set that wires it (for people).
pub const ANN_SET: &str = "certpin.dev/set";
/// On the workload: the uid of the set that wires it (the claim itself),
/// also while a StopStart is under way; a label, so deletion finds every
/// workload a set touched.
pub const LABEL_SET_UID: &str = "certpin.dev/set-uid";
/// On the Deployment during a StopStart: the replica count to restore.
pub const ANN_STOP_START: &str = "certpin.dev/stop-start";
pub const VOLUME: &str = "certpin-client-certificates";
pub const FINALIZER: &str = "certpin.dev/unwire";

pub const KEY_CERTIFICATES: &str = "ClientCertificates";
pub const KEY_PASSWORDS: &str = "ClientCertificatePasswords";
pub const KEY_USAGES: &str = "ClientCertificateUsages";

/// The environment variables certpin sets: the runtime settings it owns.
pub const SETTING_ENV: [&str; 3] = [
    "MXRUNTIME_ClientCertificates",
    "MXRUNTIME_ClientCertificatePasswords",
    "MXRUNTIME_ClientCertificateUsages",
];

pub fn set_name(set: &ClientCertificateSet) -> &str {
    set.metadata.name.as_deref().unwrap_or_default()
}

/// The rendered ConfigMap and Secret: `<set>-certpin`, shortened with a
/// hash when the set's name is near the 253-character limit.
pub fn rendered(set: &ClientCertificateSet) -> String {
    let name = set_name(set);
    let full = format!("{name}-certpin");
    if full.len() <= 253 {
        return full;
    }
    let digest = hex::encode(&Sha256::digest(name.as_bytes())[..6]);
    format!("{}-{digest}-certpin", &name[..253 - 21])
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

pub fn file_name(cert: &str) -> String {
    format!("{cert}.pfx")
}

pub fn file_path(set: &ClientCertificateSet, cert: &str) -> String {
    format!(
        "{}/{}",
        set.spec.mount_path.trim_end_matches('/'),
        file_name(cert)
    )
}
