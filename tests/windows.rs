//! certpin.exe as a Studio Pro user on Windows runs it, under Wine: the
//! certificates on a D: drive, Windows path semantics, and the settings
//! exactly as Mendix's own example shows them.
//!
//! scripts/windows-cli cross-builds the exe; scripts/test runs it first and
//! passes its directory in CERTPIN_WINDOWS_CLI. Without that variable this
//! test runs the script itself (cached: instant once built);
//! CERTPIN_WINDOWS_CLI=0 leaves the test out and says so.

use std::path::PathBuf;
use std::process::{Command, Stdio};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The example in the product brief (Mendix's "Use a Client Certificate",
/// Running Locally), byte for byte: backslashes doubled, as the brief says
/// ClientCertificateUsages needs them.
const BRIEF_USAGES: &str = r#"{ "Module.WebService1": "D:\\App\\Mx1.pfx", "www.server-to-contact.com": "D:\\App\\Mx2.pfx" }"#;
/// The brief's second example: a web service that gets no certificate.
const BRIEF_USAGES_NONE: &str =
    r#"{ "Module.WebService1": "D:\\App\\Mx1.pfx", "Module.WebService2": "" }"#;

/// A Wine prefix of its own (never the user's ~/.wine) whose D: drive holds
/// the brief's D:\App with two fixtures as Mx1.pfx and Mx2.pfx.
struct Wine {
    exe: PathBuf,
    prefix: tempfile::TempDir,
    drive_d: tempfile::TempDir,
}

impl Wine {
    fn start() -> Option<Wine> {
        let dir = match std::env::var("CERTPIN_WINDOWS_CLI").as_deref() {
            Ok("0") => {
                eprintln!(
                    "NOT RUN: CERTPIN_WINDOWS_CLI=0 (certpin.exe under Wine; scripts/test builds it with scripts/windows-cli)"
                );
                return None;
            }
            Ok(dir) => PathBuf::from(dir),
            Err(_) => {
                let out = Command::new(format!("{ROOT}/scripts/windows-cli"))
                    .stderr(Stdio::inherit())
                    .output()
                    .unwrap();
                assert!(out.status.success(), "scripts/windows-cli failed");
                PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
            }
        };
        let exe = dir.join("certpin.exe");
        assert!(exe.is_file(), "{} is missing", exe.display());

        let drive_d = tempfile::tempdir().unwrap();
        let app = drive_d.path().join("App");
        std::fs::create_dir(&app).unwrap();
        let fx = |name: &str| format!("{ROOT}/tests/fixtures/pkcs12/{name}");
        std::fs::copy(fx("openssl-rsa-modern.p12"), app.join("Mx1.pfx")).unwrap();
        std::fs::copy(fx("openssl-ec256-legacy.p12"), app.join("Mx2.pfx")).unwrap();
        // As Notepad saves it: the CRLF must not become part of the password.
        std::fs::write(app.join("Mx2.pw"), "changeit\r\n").unwrap();
        // Relative to the file's own folder, so the exe must join D:\App and
        // Mx1.pfx the Windows way.
        std::fs::write(
            app.join("settings.yaml"),
            "certificates:\n  - file: Mx1.pfx\n    passwordEnv: MX1\n    pinTo: [Module.WebService1]\nnoCertificateFor: [Module.WebService2]\n",
        )
        .unwrap();

        let wine = Wine {
            exe,
            prefix: tempfile::tempdir().unwrap(),
            drive_d,
        };
        // A wineserver that stays up, started with no pipes of ours: one
        // that each run starts inherits the run's stderr and holds it open
        // for its three seconds of lingering, and output() waits for that.
        assert!(
            wine.wineserver("-p"),
            "no wineserver (tried {WINESERVERS:?}); scripts/windows-cli installs Wine"
        );
        // The first run creates the prefix (about 10 s, 700 MB: Wine 8
        // copies its DLLs in); it also proves the exe loads at all.
        let (code, out, err) = wine.certpin(&["--version"], &[]);
        assert!(
            code == 0 && out.starts_with("certpin "),
            "certpin.exe did not start under Wine (exit {code}; 53 is c0000135, a DLL not found, \
             such as bcryptprimitives.dll: tests/windows/bcryptprimitives.c; WINEDEBUG=err+all \
             names it):\n{out}{err}"
        );
        let dosdevices = wine.prefix.path().join("dosdevices");
        assert!(dosdevices.is_dir(), "Wine made no {}", dosdevices.display());
        std::os::unix::fs::symlink(wine.drive_d.path(), dosdevices.join("d:")).unwrap();
        Some(wine)
    }

    /// Runs certpin.exe; its output goes to files, not pipes: services
    /// Wine starts with a new prefix (winedevice.exe) inherit the run's
    /// stdio and outlive it, so reading pipes to their end would hang.
    fn certpin(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        let out = tempfile::NamedTempFile::new().unwrap();
        let err = tempfile::NamedTempFile::new().unwrap();
        let status = Command::new("wine")
            .arg(&self.exe)
            .args(args)
            .env("WINEPREFIX", self.prefix.path())
            .env("WINEDEBUG", "-all")
            // No prompts to install Wine Mono or Gecko: certpin needs neither.
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.reopen().unwrap())
            .stderr(err.reopen().unwrap())
            .status()
            .expect("running wine");
        let read = |f: &tempfile::NamedTempFile| {
            String::from_utf8_lossy(&std::fs::read(f.path()).unwrap()).into_owned()
        };
        (status.code().unwrap_or(-1), read(&out), read(&err))
    }
}

impl Drop for Wine {
    fn drop(&mut self) {
        self.wineserver("-k");
    }
}

/// Debian's wineserver is not on PATH.
const WINESERVERS: [&str; 2] = ["wineserver", "/usr/lib/wine/wineserver"];

impl Wine {
    /// Runs this prefix's wineserver with `arg`; false if there is none.
    fn wineserver(&self, arg: &str) -> bool {
        WINESERVERS.iter().any(|server| {
            Command::new(server)
                .arg(arg)
                .env("WINEPREFIX", self.prefix.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    }
}

#[test]
fn windows_cli_under_wine() {
    let Some(wine) = Wine::start() else { return };
    let pw = [("MX1", "changeit")];

    // The brief's first example, typed as a Windows user would: the runtime
    // paths are the files themselves.
    let (code, out, err) = wine.certpin(
        &[
            "settings",
            "--cert",
            r"D:\App\Mx1.pfx",
            "--password-env",
            "MX1",
            "--pin",
            "Module.WebService1",
            "--cert",
            r"D:\App\Mx2.pfx",
            "--password-file",
            r"D:\App\Mx2.pw",
            "--pin",
            "www.server-to-contact.com",
        ],
        &pw,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        format!(
            "ClientCertificates = D:\\App\\Mx1.pfx,D:\\App\\Mx2.pfx\n\
             ClientCertificatePasswords = changeit,changeit\n\
             ClientCertificateUsages = {BRIEF_USAGES}\n"
        )
    );

    // The brief's second example, from a settings file beside the
    // certificates, as JSON.
    let (code, out, err) = wine.certpin(
        &["settings", "--file", r"D:\App\settings.yaml", "-o", "json"],
        &pw,
    );
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ClientCertificates"], r"D:\App\Mx1.pfx", "{out}");
    assert_eq!(v["ClientCertificateUsages"], BRIEF_USAGES_NONE, "{out}");

    let (code, out, err) = wine.certpin(
        &["validate", r"D:\App\Mx1.pfx", "--password-env", "MX1"],
        &pw,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with(r"D:\App\Mx1.pfx: valid:") && out.contains("RSA (2048 bits)"),
        "{out}"
    );
    let (code, out, err) = wine.certpin(
        &[
            "validate",
            r"D:\App\Mx2.pfx",
            "--password-file",
            r"D:\App\Mx2.pw",
        ],
        &[],
    );
    assert_eq!(code, 0, "the CRLF of a Windows password file: {out}{err}");

    let (code, out, err) = wine.certpin(
        &[
            "validate",
            r"D:\App\Mx1.pfx",
            "--password-env",
            "MX1",
            "-o",
            "json",
        ],
        &[("MX1", "wrong-horse")],
    );
    assert_eq!(code, 1, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["file"], r"D:\App\Mx1.pfx");
    assert_eq!(v["valid"], false);
    assert_eq!(v["reason"], "wrong-password", "{out}");
    assert!(!out.contains("wrong-horse") && !err.contains("wrong-horse"));
}
