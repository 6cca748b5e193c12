//! Where export files go: a directory drop (atomic write, `MANIFEST.sha256`) or an HTTP POST.
//!
//! The HTTP sink POSTs each file as its body (`Content-Type` of the format) to the target URL
//! with `X-Drehkreuz-File`, `X-Drehkreuz-Invoice`, `X-Drehkreuz-Format`, `X-Drehkreuz-SHA256`
//! and `Idempotency-Key: <target>:<format>:<file>` (the same on every retry and re-delivery,
//! so the receiver can drop repeats), and one `Authorization` header: `Bearer <token>` when a
//! token is configured, else `Basic` from credentials in the URL (the URL itself is requested
//! without them; configuring both is refused by `config check`). Error and log lines name the
//! URL redacted ([`crate::config::SecretUrl`]), never its password. 2xx is
//! success; 408, 429 and 5xx and connection errors are retried with jittered exponential
//! backoff (`backon`, honouring `Retry-After`), then handed back to the bus as transient; any
//! other 4xx is permanent (dead letter with the status and body).

use super::ExportFile;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::Duration;

/// A delivery failure.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("transient: {0}")]
    Transient(String),
    #[error("permanent: {0}")]
    Permanent(String),
}

/// The one credential an HTTP sink sends.
#[derive(Clone)]
pub enum Auth {
    None,
    Bearer(SecretString),
    Basic(String, Option<SecretString>),
}

/// A configured destination.
#[derive(Clone)]
pub enum Delivery {
    Dir(PathBuf),
    Http {
        /// The configured URL (prints redacted).
        url: crate::config::SecretUrl,
        /// The URL requested: without userinfo.
        endpoint: String,
        auth: Auth,
        client: reqwest::Client,
        attempts: usize,
    },
}

impl Delivery {
    /// The destination of an `[[export]]` target.
    pub fn of(target: &crate::config::ExportTarget) -> Self {
        match (&target.url, &target.dir) {
            (Some(url), _) => {
                let (endpoint, userinfo) = url.split_credentials();
                let auth = match (&target.token, userinfo) {
                    (Some(t), _) => Auth::Bearer(t.clone()),
                    (None, Some((user, pass))) => Auth::Basic(user, pass.map(SecretString::from)),
                    (None, None) => Auth::None,
                };
                Delivery::Http {
                    url: url.clone(),
                    endpoint,
                    auth,
                    client: reqwest::Client::builder()
                        .timeout(Duration::from_secs(60))
                        .build()
                        .unwrap_or_default(),
                    attempts: 4,
                }
            }
            (None, Some(dir)) => Delivery::Dir(dir.clone()),
            (None, None) => Delivery::Dir(PathBuf::from(".")),
        }
    }

    /// Delivers the files of one invoice and format; returns where they went.
    pub async fn deliver(
        &self,
        target: &str,
        format: &str,
        invoice: &str,
        files: &[ExportFile],
    ) -> Result<Vec<String>, DeliveryError> {
        match self {
            Delivery::Dir(dir) => {
                let dir = dir.clone();
                let files = files.to_vec();
                let written = tokio::task::spawn_blocking(move || super::write_files(&dir, &files))
                    .await
                    .map_err(|e| DeliveryError::Transient(e.to_string()))?
                    .map_err(|e| DeliveryError::Transient(format!("writing export files: {e}")))?;
                Ok(written
                    .into_iter()
                    .filter(|p| !p.ends_with("MANIFEST.sha256"))
                    .map(|p| p.display().to_string())
                    .collect())
            }
            Delivery::Http {
                url,
                endpoint,
                auth,
                client,
                attempts,
            } => {
                let mut out = Vec::new();
                for f in files {
                    post(
                        client,
                        (endpoint, url),
                        auth,
                        *attempts,
                        target,
                        format,
                        invoice,
                        f,
                    )
                    .await?;
                    out.push(format!("{url} ({})", f.name));
                }
                Ok(out)
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn post(
    client: &reqwest::Client,
    (endpoint, url): (&str, &crate::config::SecretUrl),
    auth: &Auth,
    attempts: usize,
    target: &str,
    format: &str,
    invoice: &str,
    f: &ExportFile,
) -> Result<(), DeliveryError> {
    use backon::BackoffBuilder;
    let mut delays = backon::ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_max_times(attempts.saturating_sub(1))
        .build();
    let sha = hex::encode(Sha256::digest(&f.bytes));
    loop {
        let mut req = client
            .post(endpoint)
            .header("Content-Type", f.content_type)
            .header("X-Drehkreuz-File", &f.name)
            .header("X-Drehkreuz-Invoice", invoice)
            .header("X-Drehkreuz-Format", format)
            .header("X-Drehkreuz-SHA256", &sha)
            .header("Idempotency-Key", format!("{target}:{format}:{}", f.name))
            .body(f.bytes.clone());
        req = match auth {
            Auth::None => req,
            Auth::Bearer(t) => req.bearer_auth(t.expose_secret()),
            Auth::Basic(user, pass) => {
                req.basic_auth(user, pass.as_ref().map(|p| p.expose_secret().to_string()))
            }
        };
        let (err, retry_after) = match req.send().await {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                let body: String = resp
                    .text()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect();
                if !(status == 408 || status == 429 || status >= 500) {
                    return Err(DeliveryError::Permanent(format!(
                        "{url} answered {status} for {}: {body}",
                        f.name
                    )));
                }
                (format!("{url} answered {status}: {body}"), retry_after)
            }
            // reqwest's message would repeat the URL; ours is the redacted one.
            Err(e) => (format!("{url}: {}", e.without_url()), None),
        };
        match delays.next() {
            Some(d) => {
                tokio::time::sleep(retry_after.unwrap_or(d).min(Duration::from_secs(30))).await
            }
            None => return Err(DeliveryError::Transient(err)),
        }
    }
}
