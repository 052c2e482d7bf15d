//! The `certpin` command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub mod settings;
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
    /// Validate a PKCS12 file (or a PEM certificate with --key) as the app runtime would load it.
    Validate(validate::ValidateArgs),
    /// Print ClientCertificates, ClientCertificatePasswords and ClientCertificateUsages for Studio Pro's
    /// Custom tab, after validating every file.
    ///
    /// Group each certificate's options after its --cert:
    ///   certpin settings --cert a.pfx --password-env A_PW --pin Module.WebService1 \
    ///                    --cert b.pfx --password-file b.pw --pin www.server-to-contact.com \
    ///                    --no-certificate-for Module.WebService2
    /// or describe them in a file (--file settings.yaml).
    #[command(verbatim_doc_comment)]
    Settings(settings::SettingsArgs),
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
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("certpin: {e}");
            2
        }
    }
}
