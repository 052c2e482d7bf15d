//! The `certpin` command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub mod cluster;
pub mod reconcile;
pub mod settings;
pub mod status;
pub mod trust;
pub mod validate;

#[derive(Parser, Debug)]
#[command(
    name = "certpin",
    version,
    about = "Client certificates, pinned per service, for your apps' outgoing connections"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate a PKCS12 file (or a PEM certificate with --key, or a CA bundle with --ca) as the
    /// app runtime would load it.
    Validate(validate::ValidateArgs),
    /// Print ClientCertificates, ClientCertificatePasswords, ClientCertificateUsages and
    /// CACertificates for Studio Pro's Custom tab, after validating every file.
    ///
    /// Group each certificate's options after its --cert:
    ///   certpin settings --cert a.pfx --password-env A_PW --pin Module.WebService1 \
    ///                    --cert b.pfx --password-file b.pw --pin www.server-to-contact.com \
    ///                    --no-certificate-for Module.WebService2 \
    ///                    --ca partner-ca.pem --ca-dir ./ca
    /// or describe them in a file (--file settings.yaml).
    #[command(verbatim_doc_comment)]
    Settings(settings::SettingsArgs),
    /// Print the ClientCertificateSet CustomResourceDefinition as YAML.
    Crd,
    /// Run the operator (kubeconfig from KUBECONFIG or ~/.kube/config, or in-cluster).
    Run(crate::operator::RunArgs),
    /// Print the ClientCertificateSets of a namespace (-A: of all) as certpin last reported
    /// them: Ready, reason, earliest expiry, workload, last restart.
    Status(status::StatusArgs),
    /// Ask certpin to read, validate and report a set again now, and wait until a pass has
    /// (exit 1 if none did within --timeout).
    Reconcile(reconcile::ReconcileArgs),
    /// Print a shell completion script: `source <(certpin completions bash)`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// The name kubectl runs a plugin by: `ln -s $(which certpin) kubectl-certpin`
/// on the PATH makes `kubectl certpin ...` this binary.
pub const PLUGIN_NAME: &str = "kubectl-certpin";

/// The command line, named as it was invoked: as a kubectl plugin, its
/// help and errors say `kubectl certpin`; it parses the same either way.
pub fn command(argv0: Option<&std::ffi::OsStr>) -> clap::Command {
    use clap::CommandFactory as _;
    let cmd = Cli::command();
    if invoked_as_plugin(argv0) {
        cmd.bin_name("kubectl certpin")
    } else {
        cmd
    }
}

fn invoked_as_plugin(argv0: Option<&std::ffi::OsStr>) -> bool {
    argv0
        .and_then(|a| std::path::Path::new(a).file_stem())
        .is_some_and(|stem| stem == PLUGIN_NAME)
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Output {
    #[default]
    Text,
    Json,
}

/// Where a password comes from. Never from the command line itself, where it
/// would show in the process list and shell history.
#[derive(Args, Debug, Clone, Default)]
pub struct PasswordSource {
    /// Read the password from this file (one trailing newline is ignored).
    #[arg(long, value_name = "FILE", conflicts_with = "password_env")]
    pub password_file: Option<PathBuf>,
    /// Read the password from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
}

/// A usage error: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn read_password(file: Option<&PathBuf>, env: Option<&str>) -> Result<String, UsageError> {
    if let Some(path) = file {
        let raw = std::fs::read(path).map_err(|e| {
            UsageError(format!("cannot read password file {}: {e}", path.display()))
        })?;
        let mut s = String::from_utf8(raw)
            .map_err(|_| UsageError(format!("password file {} is not UTF-8", path.display())))?;
        if s.ends_with('\n') {
            s.pop();
            if s.ends_with('\r') {
                s.pop();
            }
        }
        return Ok(s);
    }
    if let Some(var) = env {
        return std::env::var(var)
            .map_err(|_| UsageError(format!("environment variable {var} is not set")));
    }
    Ok(String::new())
}

/// Runs a CLI command; returns the process exit code.
pub fn run(command: Command) -> i32 {
    let result = match command {
        Command::Validate(args) => validate::run(&args),
        Command::Settings(args) => settings::run(args),
        Command::Crd => {
            print!("{}", crd_yaml());
            Ok(0)
        }
        // The operator's own errors are logged where they happen; a stop
        // for any of them is exit code 1, a clean shutdown 0.
        Command::Run(args) => return i32::from(crate::operator::run(args).is_err()),
        Command::Status(args) => return status::run(&args),
        Command::Reconcile(args) => return reconcile::run(&args),
        Command::Completions { shell } => {
            let argv0 = std::env::args_os().next();
            completions(shell, argv0.as_deref(), &mut std::io::stdout());
            Ok(0)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("certpin: {e}");
            2
        }
    }
}

/// The completion script for `shell`, for the name the binary was run by
/// (`certpin`, or `kubectl-certpin` when run as the plugin).
fn completions(
    shell: clap_complete::Shell,
    argv0: Option<&std::ffi::OsStr>,
    out: &mut dyn std::io::Write,
) {
    let name = if invoked_as_plugin(argv0) {
        PLUGIN_NAME
    } else {
        "certpin"
    };
    clap_complete::generate(shell, &mut command(None), name, out);
}

/// The CRD as YAML, exactly as checked in under crds/.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt as _;
    let mut crd = crate::resource::ClientCertificateSet::crd();
    // A set certpin has not yet seen reads back with status.observedGeneration
    // 0 (the API server applies schema defaults when it reads an object), so
    // kstatus (Flux) and Argo CD see it as in progress rather than current
    // before the first pass: the status subresource cannot be set on create.
    for v in &mut crd.spec.versions {
        let status = v
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("status"));
        if let Some(status) = status {
            status.default = Some(
                k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSON(
                    serde_json::json!({"observedGeneration": 0}),
                ),
            );
        }
    }
    let yaml = yaml_serde::to_string(&crd).unwrap_or_default();
    format!("# Generated by `certpin crd`; do not edit.\n---\n{yaml}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap_complete::Shell;

    #[test]
    fn as_kubectl_certpin_it_parses_the_same_and_names_itself_so() {
        let plugin = Some(std::ffi::OsStr::new("/home/me/.local/bin/kubectl-certpin"));
        assert!(invoked_as_plugin(plugin));
        assert!(!invoked_as_plugin(Some(std::ffi::OsStr::new("certpin"))));
        let args = ["kubectl-certpin", "status", "-A"];
        let matches = command(plugin).try_get_matches_from(args).expect("parses");
        assert_eq!(matches.subcommand_name(), Some("status"));
        let err = command(plugin)
            .try_get_matches_from(["kubectl-certpin", "status", "--bogus"])
            .expect_err("a usage error");
        assert!(
            err.to_string().contains("Usage: kubectl certpin status"),
            "{err}"
        );
    }

    #[test]
    fn each_shell_gets_a_script_with_the_cluster_commands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish, Shell::PowerShell] {
            let mut out = Vec::new();
            completions(shell, None, &mut out);
            let script = String::from_utf8_lossy(&out);
            for word in ["status", "reconcile", "all-namespaces", "timeout"] {
                assert!(script.contains(word), "{shell}: no {word}");
            }
        }
        let mut out = Vec::new();
        completions(
            Shell::Bash,
            Some(std::ffi::OsStr::new("kubectl-certpin")),
            &mut out,
        );
        assert!(String::from_utf8_lossy(&out).contains("kubectl-certpin"));
    }
}
