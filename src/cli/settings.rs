//! `certpin settings`: the three runtime settings for running locally
//! (Studio Pro's Custom tab), from certificate files on a developer's machine.

use std::path::{Path, PathBuf};

use clap::{ArgMatches, Args};
use serde::{Deserialize, Serialize};

use super::validate::{Report, report};
use super::{Output, UsageError, read_password};
use crate::pkcs12::{self, Policy};
use crate::settings::{CertificateFile, RuntimeSettings, render};

#[derive(Args, Debug, Default)]
pub struct SettingsArgs {
    /// A certificate file; the options after it, up to the next --cert, belong to it.
    #[arg(long, value_name = "FILE")]
    pub cert: Vec<PathBuf>,
    /// The password of the preceding --cert, from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub password_env: Vec<String>,
    /// The password of the preceding --cert, from this file (one trailing newline is ignored).
    #[arg(long, value_name = "FILE")]
    pub password_file: Vec<PathBuf>,
    /// An endpoint the preceding --cert is presented to: Module.WebService or a host name.
    #[arg(long, value_name = "ENDPOINT")]
    pub pin: Vec<String>,
    /// The path the app will read the preceding --cert from, if not FILE itself
    /// (e.g. D:\App\Mx1.pfx on the machine that runs the app).
    #[arg(long, value_name = "PATH")]
    pub runtime_path: Vec<String>,
    /// An endpoint that must get no client certificate, even if the server asks.
    #[arg(long, value_name = "ENDPOINT")]
    pub no_certificate_for: Vec<String>,
    /// A CA bundle the app trusts (CACertificates); repeat for more.
    #[arg(long = "ca", value_name = "FILE")]
    pub ca: Vec<PathBuf>,
    /// Where to write the certificates of a --ca bundle that holds more than one (or is
    /// DER): the runtime reads one PEM certificate per file.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: Option<PathBuf>,
    /// Read the certificates from a YAML file instead (see README: "Running locally").
    #[arg(long, value_name = "FILE", conflicts_with_all = ["cert", "ca"])]
    pub file: Option<PathBuf>,
    /// Warn when a certificate expires within this many days.
    #[arg(long, default_value_t = pkcs12::DEFAULT_EXPIRY_WARNING_DAYS, value_name = "DAYS")]
    pub warn_days: i64,
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Output,
    /// Filled from the parsed command line: for each option above, the index
    /// of the --cert it follows.
    #[arg(skip)]
    pub groups: Groups,
}

#[derive(Debug, Default, Clone)]
pub struct Groups {
    pub password_env: Vec<usize>,
    pub password_file: Vec<usize>,
    pub pin: Vec<usize>,
    pub runtime_path: Vec<usize>,
}

impl Groups {
    /// Assigns every grouped option to the --cert before it.
    pub fn from_matches(m: &ArgMatches) -> Result<Groups, UsageError> {
        let certs: Vec<usize> = m
            .indices_of("cert")
            .map(|i| i.collect())
            .unwrap_or_default();
        let owner = |id: &str| -> Result<Vec<usize>, UsageError> {
            m.indices_of(id)
                .map(|i| i.collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .map(|at| {
                    certs.iter().rposition(|c| *c < at).ok_or_else(|| {
                        UsageError(format!(
                            "--{} must follow the --cert it belongs to",
                            id.replace('_', "-")
                        ))
                    })
                })
                .collect()
        };
        Ok(Groups {
            password_env: owner("password_env")?,
            password_file: owner("password_file")?,
            pin: owner("pin")?,
            runtime_path: owner("runtime_path")?,
        })
    }
}

/// The `--file` format.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LocalFile {
    #[serde(default)]
    certificates: Vec<LocalCertificate>,
    #[serde(default)]
    no_certificate_for: Vec<String>,
    /// CA bundles, as --ca.
    #[serde(default)]
    ca_certificates: Vec<PathBuf>,
    /// As --ca-dir.
    #[serde(default)]
    ca_directory: Option<PathBuf>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LocalCertificate {
    file: PathBuf,
    #[serde(default)]
    runtime_path: Option<String>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    password_file: Option<PathBuf>,
    #[serde(default)]
    pin_to: Vec<String>,
}

struct Input {
    file: PathBuf,
    runtime_path: String,
    password: String,
    pins: Vec<String>,
}

/// The certificates, the noCertificateFor list, the CA bundles and --ca-dir.
type Inputs = (Vec<Input>, Vec<String>, Vec<PathBuf>, Option<PathBuf>);

fn inputs(args: &SettingsArgs) -> Result<Inputs, UsageError> {
    if let Some(path) = &args.file {
        return from_file(path);
    }
    if args.cert.is_empty() && args.ca.is_empty() {
        return Err(UsageError(
            "give at least one --cert FILE or --ca FILE, or --file".into(),
        ));
    }
    let out = (args.cert.iter().enumerate())
        .map(|(i, file)| from_flags(args, i, file))
        .collect::<Result<_, _>>()?;
    Ok((
        out,
        args.no_certificate_for.clone(),
        args.ca.clone(),
        args.ca_dir.clone(),
    ))
}

/// `--file`: paths in it are relative to the file's directory.
fn from_file(path: &Path) -> Result<Inputs, UsageError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))?;
    let local: LocalFile =
        yaml_serde::from_str(&text).map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
    let base = path.parent().map(PathBuf::from).unwrap_or_default();
    let relative = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
    let mut out = Vec::new();
    for c in local.certificates {
        let file = relative(c.file);
        let password_file = c.password_file.map(relative);
        out.push(Input {
            runtime_path: c.runtime_path.unwrap_or_else(|| file.display().to_string()),
            password: read_password(password_file.as_ref(), c.password_env.as_deref())?,
            file,
            pins: c.pin_to,
        });
    }
    let cas = local.ca_certificates.into_iter().map(relative).collect();
    let ca_dir = local.ca_directory.map(relative);
    Ok((out, local.no_certificate_for, cas, ca_dir))
}

/// The `i`th `--cert` and the options that follow it.
fn from_flags(args: &SettingsArgs, i: usize, file: &Path) -> Result<Input, UsageError> {
    let g = &args.groups;
    let pick = |owners: &[usize]| -> Vec<usize> {
        (0..owners.len()).filter(|k| owners[*k] == i).collect()
    };
    let env: Vec<&String> = (pick(&g.password_env).into_iter())
        .map(|k| &args.password_env[k])
        .collect();
    let pwf: Vec<&PathBuf> = (pick(&g.password_file).into_iter())
        .map(|k| &args.password_file[k])
        .collect();
    let rp: Vec<&String> = (pick(&g.runtime_path).into_iter())
        .map(|k| &args.runtime_path[k])
        .collect();
    if env.len() + pwf.len() > 1 || rp.len() > 1 {
        return Err(UsageError(format!(
            "{}: give at most one password option and one --runtime-path",
            file.display()
        )));
    }
    Ok(Input {
        runtime_path: rp
            .first()
            .map(|s| s.to_string())
            .unwrap_or_else(|| file.display().to_string()),
        password: read_password(pwf.first().copied(), env.first().map(|s| s.as_str()))?,
        file: file.to_path_buf(),
        pins: pick(&g.pin)
            .into_iter()
            .map(|k| args.pin[k].clone())
            .collect(),
    })
}

#[derive(Serialize)]
struct JsonOut<'a> {
    valid: bool,
    #[serde(rename = "ClientCertificates", skip_serializing_if = "Option::is_none")]
    certificates: Option<&'a str>,
    #[serde(
        rename = "ClientCertificatePasswords",
        skip_serializing_if = "Option::is_none"
    )]
    passwords: Option<&'a str>,
    #[serde(
        rename = "ClientCertificateUsages",
        skip_serializing_if = "Option::is_none"
    )]
    usages: Option<&'a str>,
    #[serde(rename = "CACertificates", skip_serializing_if = "Option::is_none")]
    ca_certificates: Option<&'a str>,
    problems: Vec<ProblemOut>,
    files: Vec<Report>,
    #[serde(rename = "caFiles", skip_serializing_if = "Vec::is_empty")]
    ca_files: Vec<super::trust::CaReport>,
}

#[derive(Serialize)]
struct ProblemOut {
    reason: &'static str,
    message: String,
}

pub fn run(args: SettingsArgs) -> Result<i32, UsageError> {
    let (inputs, no_cert, ca_files, ca_dir) = inputs(&args)?;
    let policy = Policy {
        warn_within: chrono::Duration::days(args.warn_days),
        ..Policy::at(chrono::Utc::now())
    };
    let (reports, files) = check_certificates(&inputs, &policy)?;
    let rendered = render(&files, &no_cert);
    let mut problems: Vec<ProblemOut> = reports
        .iter()
        .filter(|r| !r.valid)
        .map(|r| ProblemOut {
            reason: r.reason.unwrap_or("invalid"),
            message: format!("{}: {}", r.file, r.message),
        })
        .collect();
    if let Err(ps) = &rendered {
        problems.extend(ps.iter().map(|p| ProblemOut {
            reason: p.reason.code(),
            message: p.message.clone(),
        }));
    }
    let (ca_reports, bundles) = check_cas(&ca_files, &mut problems)?;
    let ca_paths = if problems.is_empty() {
        super::trust::paths(&bundles, ca_dir.as_deref())?
    } else {
        Vec::new()
    };
    let ca_setting = (!ca_paths.is_empty()).then(|| ca_paths.join(","));
    let settings = rendered.ok().filter(|_| problems.is_empty());
    let valid = settings.is_some();
    match args.output {
        Output::Json => {
            let with_certificates = settings.as_ref().filter(|_| !reports.is_empty());
            let out = JsonOut {
                valid,
                certificates: with_certificates.map(|s| s.certificates.as_str()),
                passwords: with_certificates.map(|s| s.passwords.as_str()),
                usages: settings.as_ref().and_then(|s| s.usages.as_deref()),
                ca_certificates: ca_setting.as_deref().filter(|_| valid),
                problems,
                files: reports,
                ca_files: ca_reports,
            };
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
        Output::Text => {
            ca_reports.iter().for_each(print_ca);
            print_text(
                &reports,
                &problems,
                settings.as_ref(),
                ca_setting.as_deref(),
            );
        }
    }
    Ok(if valid { 0 } else { 1 })
}

/// Each certificate's report, and the file it becomes in the settings.
fn check_certificates(
    inputs: &[Input],
    policy: &Policy,
) -> Result<(Vec<Report>, Vec<CertificateFile>), UsageError> {
    let (mut reports, mut files) = (Vec::new(), Vec::new());
    for input in inputs {
        let name = input.file.display().to_string();
        let data = std::fs::read(&input.file)
            .map_err(|e| UsageError(format!("cannot read {name}: {e}")))?;
        reports.push(report(&name, &data, None, &input.password, policy));
        files.push(CertificateFile {
            name,
            path: input.runtime_path.clone(),
            password: input.password.clone(),
            pins: input.pins.clone(),
        });
    }
    Ok((reports, files))
}

type Bundle = (PathBuf, Vec<u8>, Vec<crate::ca::CaCertificate>);

/// Each CA bundle's report (its problem added to `problems`) and content.
fn check_cas(
    paths: &[PathBuf],
    problems: &mut Vec<ProblemOut>,
) -> Result<(Vec<super::trust::CaReport>, Vec<Bundle>), UsageError> {
    let (mut reports, mut bundles) = (Vec::new(), Vec::new());
    for path in paths {
        let data = std::fs::read(path)
            .map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))?;
        let (r, certs) = super::trust::report(&path.display().to_string(), &data);
        if let Some(reason) = r.reason {
            problems.push(ProblemOut {
                reason,
                message: format!("{}: {}", r.file, r.message),
            });
        }
        reports.push(r);
        bundles.push((path.clone(), data, certs));
    }
    Ok((reports, bundles))
}

/// The text output: reports and problems on stderr, the settings to paste
/// on stdout.
fn print_ca(r: &super::trust::CaReport) {
    match r.reason {
        None => eprintln!("{}: valid CA bundle", r.file),
        Some(code) => eprintln!("{}: invalid ({code}): {}", r.file, r.message),
    }
    for c in &r.certificates {
        eprintln!("  CA {} (expires {})", c.subject, c.not_after);
        for w in &c.warnings {
            eprintln!("  warning: {w}");
        }
    }
}

fn print_text(
    reports: &[Report],
    problems: &[ProblemOut],
    settings: Option<&RuntimeSettings>,
    ca: Option<&str>,
) {
    for r in reports {
        match r.reason {
            None => eprintln!("{}: valid", r.file),
            Some(code) => eprintln!("{}: invalid ({code})", r.file),
        }
        if let Some(f) = &r.certificate {
            eprintln!("  {} (expires {})", f.subject, f.not_after.to_rfc3339());
        }
        for w in &r.warnings {
            eprintln!("  warning: {w}");
        }
    }
    for p in problems {
        eprintln!("error ({}): {}", p.reason, p.message);
    }
    if let Some(s) = settings {
        eprintln!("\nAdd these custom settings (App > Settings > Configuration > Custom):\n");
        if !reports.is_empty() {
            println!("ClientCertificates = {}", s.certificates);
            println!("ClientCertificatePasswords = {}", s.passwords);
        }
        if let Some(u) = &s.usages {
            println!("ClientCertificateUsages = {u}");
        }
        if let Some(ca) = ca {
            println!("CACertificates = {ca}");
        }
    }
}
