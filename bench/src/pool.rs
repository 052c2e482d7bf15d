//! Distinct PKCS12 files for the sets, written by OpenSSL 3 with its default
//! (modern) settings, as users' files are. Each set gets its own content, so
//! the decode cache cannot share work between sets. Cached across runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use tokio::sync::Semaphore;

pub const PASSWORD: &str = "changeit";

pub struct Pool {
    dir: PathBuf,
}

impl Pool {
    pub fn file(&self, i: usize) -> Result<Vec<u8>> {
        let p = self.dir.join(format!("{i}.p12"));
        std::fs::read(&p).with_context(|| format!("reading {}", p.display()))
    }
}

/// Makes sure `count` files exist under `cache/pool`.
pub async fn ensure(cache: &Path, count: usize) -> Result<Pool> {
    let dir = cache.join("pool");
    std::fs::create_dir_all(&dir)?;
    let missing: Vec<usize> = (0..count)
        .filter(|i| !dir.join(format!("{i}.p12")).exists())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "bench: generating {} PKCS12 files with openssl (cached in {})",
            missing.len(),
            dir.display()
        );
    }
    let sem = Arc::new(Semaphore::new(4));
    let mut tasks = Vec::new();
    for i in missing {
        let permit = sem.clone().acquire_owned().await?;
        let dir = dir.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            generate(&dir, i).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(Pool { dir })
}

async fn generate(dir: &Path, i: usize) -> Result<()> {
    let tmp = dir.join(format!("{i}.tmp"));
    std::fs::create_dir_all(&tmp)?;
    let script = format!(
        "set -e; openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
         -keyout k.pem -out c.pem -subj /CN=bench-client-{i}/O=certpin-bench -days 3650 2>/dev/null; \
         openssl pkcs12 -export -inkey k.pem -in c.pem -name client -passout pass:{PASSWORD} -out out.p12"
    );
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(&tmp)
        .status()
        .await?;
    if !status.success() {
        bail!("openssl failed for pool file {i}");
    }
    std::fs::rename(tmp.join("out.p12"), dir.join(format!("{i}.p12")))?;
    std::fs::remove_dir_all(&tmp)?;
    Ok(())
}
