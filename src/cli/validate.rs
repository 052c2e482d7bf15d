//! `certpin validate`: the verdict on one file, with its facts.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use super::{Output, PasswordSource, UsageError, read_password};
use crate::pkcs12::{self, Facts, Policy};

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// The PKCS12 (.pfx/.p12) file, or a PEM certificate chain when --key is given.
    pub file: PathBuf,
    #[command(flatten)]
    pub password: PasswordSource,
    /// A PEM private key: validate FILE and this key as a kubernetes.io/tls pair.
    #[arg(long, value_name = "KEY.pem", conflicts_with = "ca")]
    pub key: Option<PathBuf>,
    /// Validate FILE as a CA bundle (PEM certificates, text between them allowed, or one DER
    /// certificate), as spec.caCertificates takes it.
    #[arg(long)]
    pub ca: bool,
    /// Warn when the certificate expires within this many days.
    #[arg(long, default_value_t = pkcs12::DEFAULT_EXPIRY_WARNING_DAYS, value_name = "DAYS")]
    pub warn_days: i64,
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Output,
}

/// The JSON document `--output json` prints.
#[derive(Serialize, Debug)]
pub struct Report {
    pub file: String,
    pub valid: bool,
    pub reason: Option<&'static str>,
    pub message: String,
    pub warnings: Vec<String>,
    pub certificate: Option<Facts>,
}

pub fn report(
    file: &str,
    data: &[u8],
    key_pem: Option<&[u8]>,
    password: &str,
    policy: &Policy,
) -> Report {
    let decoded = match key_pem {
        Some(key) => pkcs12::decode_pem(data, key),
        None => pkcs12::decode_pkcs12(data, password),
    };
    let facts = decoded.as_ref().ok().map(|d| d.facts.clone());
    match decoded.and_then(|d| pkcs12::judge(&d, policy)) {
        Ok(warnings) => Report {
            file: file.into(),
            valid: true,
            reason: None,
            message: "valid: the app runtime can load this certificate".into(),
            warnings: warnings.iter().map(ToString::to_string).collect(),
            certificate: facts,
        },
        Err(problem) => Report {
            file: file.into(),
            valid: false,
            reason: Some(problem.reason.code()),
            message: problem.message,
            warnings: Vec::new(),
            certificate: facts,
        },
    }
}

pub fn print_facts(f: &Facts) {
    println!("  subject:      {}", f.subject);
    println!("  issuer:       {}", f.issuer);
    println!("  serial:       {}", f.serial);
    println!("  sha256:       {}", f.sha256_fingerprint);
    println!("  key:          {} ({} bits)", f.key_algorithm, f.key_size);
    println!("  not before:   {}", f.not_before.to_rfc3339());
    println!("  not after:    {}", f.not_after.to_rfc3339());
    println!("  chain length: {}", f.chain_length);
    println!("  encryption:   {} ({})", f.encryption, f.encryption_detail);
}

pub fn run(args: &ValidateArgs) -> Result<i32, UsageError> {
    let data = std::fs::read(&args.file)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", args.file.display())))?;
    if args.ca {
        let (r, _) = super::trust::report(&args.file.display().to_string(), &data);
        match args.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default()),
            Output::Text => super::trust::print_report(&r),
        }
        return Ok(if r.valid { 0 } else { 1 });
    }
    let key = match &args.key {
        Some(k) => Some(
            std::fs::read(k)
                .map_err(|e| UsageError(format!("cannot read {}: {e}", k.display())))?,
        ),
        None => None,
    };
    let password = read_password(
        args.password.password_file.as_ref(),
        args.password.password_env.as_deref(),
    )?;
    let policy = Policy {
        warn_within: chrono::Duration::days(args.warn_days),
        ..Policy::at(chrono::Utc::now())
    };
    let r = report(
        &args.file.display().to_string(),
        &data,
        key.as_deref(),
        &password,
        &policy,
    );
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default()),
        Output::Text => {
            match r.reason {
                None => println!("{}: {}", r.file, r.message),
                Some(code) => println!("{}: invalid ({code}): {}", r.file, r.message),
            }
            if let Some(f) = &r.certificate {
                print_facts(f);
            }
            for w in &r.warnings {
                println!("  warning:      {w}");
            }
        }
    }
    Ok(if r.valid { 0 } else { 1 })
}
