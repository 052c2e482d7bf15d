//! The `ClientCertificateSet` custom resource (certpin.dev/v1alpha1).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::pkcs12::Profile;

/// The client certificates of one app in one environment, the services
/// each is pinned to, and the CA certificates it trusts. certpin validates
/// them, renders the app runtime's ClientCertificates,
/// ClientCertificatePasswords, ClientCertificateUsages and CACertificates
/// settings into a ConfigMap and a Secret, wires them into the app's
/// Deployment or StatefulSet, and restarts the app so that they take effect.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "certpin.dev",
    version = "v1alpha1",
    kind = "ClientCertificateSet",
    namespaced,
    status = "ClientCertificateSetStatus",
    shortname = "ccs",
    doc = "A ClientCertificateSet gives one app (a Deployment or a StatefulSet) its client certificates for outgoing TLS connections (PKCS12 files or kubernetes.io/tls Secrets, each pinned to the services it is presented to) and the CA certificates it trusts. certpin validates them, renders the Mendix runtime settings ClientCertificates, ClientCertificatePasswords, ClientCertificateUsages and CACertificates into a ConfigMap and a Secret named <set>-certpin, wires them into the workload and restarts it as spec.restart says. Invalid input changes nothing that runs; status says why.",
    shortname = "certset",
    category = "certpin",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Certificates","type":"integer","jsonPath":".status.certificateCount"}"#,
    printcolumn = r#"{"name":"Earliest Expiry","type":"string","jsonPath":".status.earliestExpiry"}"#,
    printcolumn = r#"{"name":"Deployment","type":"string","jsonPath":".spec.app.deployment","priority":1}"#,
    printcolumn = r#"{"name":"StatefulSet","type":"string","jsonPath":".spec.app.statefulSet","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("!has(self.certificates) || self.certificates.all(c, self.certificates.exists_one(d, d.name == c.name))").message("certificate names must be unique"))]
#[x_kube(validation = Rule::new("!has(self.caCertificates) || self.caCertificates.all(c, self.caCertificates.exists_one(d, d.name == c.name))").message("caCertificates names must be unique"))]
#[x_kube(validation = Rule::new("(has(self.certificates) && size(self.certificates) > 0) || (has(self.caCertificates) && size(self.caCertificates) > 0)").message("give at least one certificate or CA certificate"))]
// The usages setting reaches the app as one environment variable, which the
// kernel limits to 128 KiB: bound what the pins can render to (each entry is
// the pin and the file's path, quoted), with room to spare; the operator
// checks the rendered size itself too.
#[x_kube(validation = Rule::new(USAGES_BOUND).message("the pins and noCertificateFor entries are too long in total: the ClientCertificateUsages setting would exceed the 128 KiB an environment variable may hold"))]
#[serde(rename_all = "camelCase")]
pub struct ClientCertificateSetSpec {
    /// The app whose outgoing connections use these certificates.
    pub app: AppRef,
    /// The client certificates. Each becomes a file `<name>-<hash>.pfx` in the app's pods
    /// (named after its content, so a rotation never changes a file a running pod uses).
    /// May be empty when the set holds only CA certificates.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub certificates: Vec<CertificateSpec>,
    /// CA certificates the app trusts for its outgoing TLS connections (the
    /// runtime's CACertificates setting), e.g. a partner's private CA: PEM
    /// bundles (any number of certificates, text between them) or one DER
    /// certificate. Each certificate becomes a file of its own
    /// (`ca-<fingerprint>.crt`); one that several entries hold is rendered once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub ca_certificates: Vec<CaCertificateSpec>,
    /// Endpoints (Module.WebService or host name) that must get no client
    /// certificate, even if the server asks for one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 253)))]
    pub no_certificate_for: Vec<String>,
    /// How the app is restarted when its certificates change: Rolling (the
    /// Deployment's rolling update), StopStart (scale to zero, then back), or
    /// Manual (certpin only reports that a restart is due).
    #[serde(default)]
    pub restart: RestartStrategy,
    /// The PKCS12 profile of the files handed to the app: Modern (AES-256,
    /// for Java 11.0.12+) or Legacy (3DES and SHA-1, for Java 8).
    #[serde(default)]
    pub profile: Profile,
    /// Where the files are mounted in the app's containers.
    #[serde(default = "default_mount_path")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.startsWith('/') && !self.contains(',')").message("mountPath must be an absolute path without commas"))]
    #[x_kube(validation = Rule::new("!self.contains('//') && !self.contains('/./') && !self.endsWith('/.') && !self.contains('/../') && !self.endsWith('/..')").message("mountPath must be a normalized path: no '//', '/./' or '/..'"))]
    pub mount_path: String,
    /// Warn (status and Event) when a certificate expires within this many days.
    #[serde(default = "default_warning_days")]
    #[schemars(range(min = 0, max = 3650))]
    pub expiry_warning_days: i32,
}

/// The CEL bound on the rendered usages, in bytes.
const USAGES_BOUND: &str = "self.certificates.map(c, has(c.pinTo) ? c.pinTo.map(p, size(bytes(p)) + size(bytes(self.mountPath)) + 96).sum() : 0).sum() + (has(self.noCertificateFor) ? self.noCertificateFor.map(n, size(bytes(n)) + 8).sum() : 0) <= 120000";

fn default_mount_path() -> String {
    "/etc/certpin/client-certificates".into()
}

fn default_warning_days() -> i32 {
    30
}

/// The app's workload: a Deployment or a StatefulSet.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.deployment) != has(self.statefulSet)").message("give exactly one of deployment or statefulSet"))]
#[serde(rename_all = "camelCase")]
pub struct AppRef {
    /// Name of the Deployment, in the set's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub deployment: Option<String>,
    /// Name of the StatefulSet, in the set's namespace (Mendix's Kubernetes
    /// how-to runs apps as StatefulSets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub stateful_set: Option<String>,
    /// Wire the workload even though another controller owns it (a controller
    /// owner reference). Set this only when that owner leaves the pod
    /// template alone; an owner that restores its template (the Mendix
    /// Operator does) would undo certpin's wiring on every sync.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub owner_leaves_pod_template: bool,
    /// The containers that get the settings and the files; default: every container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(
            length(min = 1, max = 63),
            regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
        )
    )]
    pub containers: Vec<String>,
}

/// The kinds of workload certpin wires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 2] = [WorkloadKind::Deployment, WorkloadKind::StatefulSet];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
        }
    }

    /// The name kubectl takes (`kubectl rollout restart statefulset/x`).
    pub fn kubectl_name(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployment",
            WorkloadKind::StatefulSet => "statefulset",
        }
    }

    pub fn parse(kind: &str) -> Option<WorkloadKind> {
        WorkloadKind::ALL.into_iter().find(|k| k.as_str() == kind)
    }
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AppRef {
    /// The workload this names (the schema admits exactly one; an object
    /// that predates the schema rule is read as its Deployment).
    pub fn target(&self) -> (WorkloadKind, &str) {
        match (&self.deployment, &self.stateful_set) {
            (Some(d), _) => (WorkloadKind::Deployment, d),
            (None, Some(s)) => (WorkloadKind::StatefulSet, s),
            (None, None) => (WorkloadKind::Deployment, ""),
        }
    }

    pub fn targets(&self, kind: WorkloadKind, name: &str) -> bool {
        self.target() == (kind, name)
    }
}

/// One client certificate: a PKCS12 file and its password from Secrets, or
/// a `kubernetes.io/tls` Secret (as cert-manager issues), and its pins.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.pkcs12) != has(self.tls)").message("give exactly one of pkcs12 or tls"))]
#[x_kube(validation = Rule::new("!has(self.pkcs12) || has(self.password)").message("a pkcs12 certificate needs a password"))]
#[serde(rename_all = "camelCase")]
pub struct CertificateSpec {
    /// Name of the certificate: the file in the pod is `<name>-<hash>.pfx`.
    /// A DNS label: lower-case letters, digits and '-'.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The PKCS12 (.pfx/.p12) file: a key of a Secret in the set's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs12: Option<SecretKeyRef>,
    /// The password of the PKCS12 file: a key of a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretKeyRef>,
    /// A `kubernetes.io/tls` Secret (tls.crt, tls.key); certpin encodes it to PKCS12.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSecretRef>,
    /// Endpoints this certificate is presented to: `Module.WebService` for a
    /// web service, a bare host name (`api.example.com`) for REST, or a custom
    /// identifier. Without pins the runtime offers it to any server that asks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        inner(length(min = 1, max = 253), regex(pattern = r"^[^\s/:]+$"))
    )]
    pub pin_to: Vec<String>,
}

/// A CA bundle: a key of a Secret or of a ConfigMap (trust-manager writes
/// bundles to ConfigMaps; cert-manager's `ca.crt` is in the issued Secret).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.secret) != has(self.configMap)").message("give exactly one of secret or configMap"))]
#[serde(rename_all = "camelCase")]
pub struct CaCertificateSpec {
    /// Name of the entry, for status and messages. A DNS label.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The bundle: a key of a Secret in the set's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretKeyRef>,
    /// The bundle: a key of a ConfigMap in the set's namespace (data or binaryData).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapKeyRef>,
}

/// A key of a ConfigMap in the set's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// A ConfigMap name (a DNS subdomain).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// A key of the ConfigMap's data or binaryData.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// A key of a Secret in the set's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// A Secret name (a DNS subdomain).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: String,
    /// A key of the Secret's data.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// A `kubernetes.io/tls` Secret in the set's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSecretRef {
    /// A Secret name (a DNS subdomain).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RestartStrategy {
    /// Change the pod template; the Deployment's rolling update replaces the pods.
    #[default]
    Rolling,
    /// Scale to zero, wait until no pod is left, apply, scale back to the recorded replica count.
    StopStart,
    /// Apply the settings, but leave restarting to the user; status says a restart is due.
    Manual,
}

/// What certpin observed and applied.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientCertificateSetStatus {
    /// The generation these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready (the app runs with these certificates), CertificatesValid,
    /// Applied, RestartDue, and kstatus's Reconciling and Stalled (present
    /// only while True).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// One row per certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateStatus>,
    /// One row per CA certificate (an entry that cannot be used: one row
    /// with the reason).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_certificates: Vec<CaCertificateStatus>,
    /// How many certificates the spec lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_count: Option<i32>,
    /// The earliest notAfter among the certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earliest_expiry: Option<Time>,
    /// Hash of the rendered content now applied (also on the pod template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_hash: Option<String>,
    /// When certpin last restarted the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restart: Option<Time>,
    /// The workloads that carry certpin's changes for this set (its wiring,
    /// or a StopStart under way), as certpin last wrote them. The next pass
    /// undoes what is no longer wanted, and deletion undoes all of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<WorkloadRecord>,
    /// What is wrong with the app's workload but does not stop certpin,
    /// each `kind: detail` (e.g. `buildpack-setting: ...` for an app that
    /// still sets CLIENT_CERTIFICATES or CERTIFICATE_AUTHORITIES).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The reconcile request (annotation `certpin.dev/reconcile-requested-at`,
    /// or Flux's `reconcile.fluxcd.io/requestedAt`) that the latest pass
    /// handled: a pass that read, validated and reported the set again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

/// One workload certpin changed for a set, and how.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRecord {
    /// The workload's kind, e.g. `Deployment`.
    pub kind: String,
    /// Its name, in the set's namespace.
    pub name: String,
    /// Its uid: a workload deleted and created again under the same name is another object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The containers that got the settings and the mount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<String>,
    /// Where the files are mounted in those containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
    /// The rendered ConfigMap and Secret the wiring points at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendered: Option<String>,
}

/// Facts about one CA certificate.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaCertificateStatus {
    /// The entry's name in spec.caCertificates.
    pub name: String,
    /// Path of the file in the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The certificate's subject (RFC 4514).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// SHA-256 of the certificate (DER), in hexadecimal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256_fingerprint: Option<String>,
    /// Start of the certificate's validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Time>,
    /// End of the certificate's validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
    /// `Valid`, or the reason code why the entry cannot be used.
    pub state: String,
    /// Why not, in words (never the content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What is wrong but not fatal, each `kind: detail` (e.g. `expired: ...`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Facts about one certificate (no secret).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// The certificate's name in the spec.
    pub name: String,
    /// Path of the file in the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The leaf certificate's subject (RFC 4514).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The leaf certificate's issuer (RFC 4514).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The leaf certificate's serial number, in hexadecimal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// SHA-256 of the leaf certificate (DER), in hexadecimal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256_fingerprint: Option<String>,
    /// The private key's algorithm and size, e.g. `RSA 2048` or `EC P-256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_algorithm: Option<String>,
    /// Start of the leaf certificate's validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Time>,
    /// End of the leaf certificate's validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
    /// Certificates in the file: the leaf and its intermediates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_length: Option<i32>,
    /// Encryption of the input: modern, legacy, mixed or pem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_encryption: Option<String>,
    /// `Valid`, or the reason code why not.
    pub state: String,
    /// Why the certificate is not valid, in words (never its content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What is wrong but not fatal, each `kind: detail` (e.g. `expiring-soon: ...`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}
