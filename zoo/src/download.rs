//! Downloads and extracts the official CIFAR-10 binary archive into a cache folder.
//!
//! The result appears atomically: the archive is streamed to `<cache>/.partial-<pid>-<n>`
//! while its md5 is computed, extracted into `<cache>/.extract-<pid>-<n>/`, every
//! extracted file is checked, and only then is the folder renamed to
//! `<cache>/cifar-10-batches-bin`. On any failure the temporary files are removed, so a
//! dataset folder in the cache is always a complete, verified one.
//!
//! ```no_run
//! use tpsnet_zoo::download::{download_cifar10, DownloadOptions};
//! let dir = download_cifar10(&DownloadOptions::default())?;
//! let test = tpsnet_zoo::cifar::load(&dir, tpsnet_zoo::cifar::Split::Test)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use md5::{Digest as _, Md5};

use crate::cifar::{self, CifarError, DIR_NAME, ExpectedFile};

/// Where the official binary archive is published.
pub const CIFAR10_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// md5 of the official archive.
pub const CIFAR10_ARCHIVE_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
pub use crate::cache::{ENV_CACHE, default_cache_dir};

/// What to download, how to check it and where to put it.
#[derive(Clone, Debug)]
pub struct DownloadOptions {
    /// Address of the `.tar.gz` archive (http or https).
    pub url: String,
    /// Expected lowercase hex md5 of the archive.
    pub md5: String,
    /// Folder that receives `cifar-10-batches-bin/`; created if missing.
    pub cache_dir: PathBuf,
    /// Show a progress bar on stderr (only when stderr is a terminal).
    pub progress: bool,
    /// Files that must be in the extracted folder, with their md5s; also what decides
    /// whether an existing folder is intact. Defaults to [`cifar::official_files`].
    pub expected_files: Vec<ExpectedFile>,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        Self {
            url: CIFAR10_URL.to_string(),
            md5: CIFAR10_ARCHIVE_MD5.to_string(),
            cache_dir: default_cache_dir(),
            progress: true,
            expected_files: cifar::official_files(),
        }
    }
}

/// The way around any download problem.
const MANUAL: &str = "or download cifar-10-binary.tar.gz by hand, extract it and set \
     CIFAR10_DIR to its cifar-10-batches-bin folder";

/// Everything that can go wrong downloading CIFAR-10. No variant leaves files behind.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The cache folder (or a file in it) could not be created, written or renamed.
    #[error(
        "cannot write {}: {source}; make sure the folder is writable and has about 400 MB \
         free, or set TPSNET_CACHE to another folder",
        path.display()
    )]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The connection failed or broke off.
    #[error(
        "download of {url} failed: {source}; check the network (and HTTPS_PROXY if you \
         need one), {MANUAL}"
    )]
    Http {
        /// The URL downloaded.
        url: String,
        /// The HTTP client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The server answered with a non-success status.
    #[error("download of {url} failed with HTTP status {status}; check the URL, {MANUAL}")]
    Status {
        /// The URL requested.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// The body ended before the announced Content-Length.
    #[error(
        "download of {url} was cut off after {received} of {expected} bytes; run the download \
         again, {MANUAL}"
    )]
    Truncated {
        /// The URL downloaded.
        url: String,
        /// Bytes received.
        received: u64,
        /// Bytes announced (Content-Length).
        expected: u64,
    },
    /// The archive's md5 differs from the expected one.
    #[error(
        "archive downloaded from {url} has md5 {actual}, expected {expected}: it is corrupted \
         or not the CIFAR-10 binary release; run the download again or check the URL"
    )]
    Md5Mismatch {
        /// The URL downloaded.
        url: String,
        /// The archive's md5 (hex).
        actual: String,
        /// The official md5 (hex).
        expected: String,
    },
    /// The archive is not a readable tar.gz.
    #[error(
        "archive downloaded from {url} could not be extracted ({}); run the download \
         again, {MANUAL}",
        printable(&source.to_string())
    )]
    BadArchive {
        /// The URL downloaded.
        url: String,
        /// The extractor's error.
        #[source]
        source: io::Error,
    },
    /// The archive lacks a required file.
    #[error(
        "archive downloaded from {url} lacks {name}: it is not the CIFAR-10 binary release; \
         check the URL"
    )]
    MissingFile {
        /// The URL downloaded.
        url: String,
        /// The file missing from the archive.
        name: String,
    },
    /// An extracted file failed its size or md5 check.
    #[error(
        "file {name} in the archive downloaded from {url} is bad ({}); run the download \
         again or check the URL",
        describe(source)
    )]
    BadFile {
        /// The URL downloaded.
        url: String,
        /// The file's name in the archive.
        name: String,
        /// What the check found.
        #[source]
        source: CifarError,
    },
}

/// Makes sure `<cache_dir>/cifar-10-batches-bin` holds the expected files and returns
/// that path. Does nothing (no request) when the folder is already there and intact; a
/// folder that fails the check is replaced by a fresh download.
pub fn download_cifar10(opts: &DownloadOptions) -> Result<PathBuf, DownloadError> {
    let cache = &opts.cache_dir;
    let target = cache.join(DIR_NAME);
    if target.is_dir() && cifar::verify_files(&target, &opts.expected_files).is_ok() {
        return Ok(target);
    }
    fs::create_dir_all(cache).map_err(|e| io_err(cache, e))?;

    // pid plus a counter, so concurrent downloads from other processes or threads never
    // share a temporary path.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tag = format!(
        "{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let partial = cache.join(format!(".partial-{tag}"));
    let extract_dir = cache.join(format!(".extract-{tag}"));
    let stale = cache.join(format!(".stale-{tag}"));
    let _cleanup = Cleanup(vec![partial.clone(), extract_dir.clone(), stale.clone()]);

    fetch(opts, &partial)?;
    fs::create_dir(&extract_dir).map_err(|e| io_err(&extract_dir, e))?;
    extract(&opts.url, &partial, &extract_dir)?;
    // The archive is no longer needed; free its space before the rename.
    let _ = fs::remove_file(&partial);

    let extracted = extract_dir.join(DIR_NAME);
    if !extracted.is_dir() {
        return Err(DownloadError::MissingFile {
            url: opts.url.clone(),
            name: format!("{DIR_NAME}/"),
        });
    }
    for expected in &opts.expected_files {
        if !extracted.join(&expected.name).is_file() {
            return Err(DownloadError::MissingFile {
                url: opts.url.clone(),
                name: format!("{DIR_NAME}/{}", expected.name),
            });
        }
        cifar::verify_file(&extracted, expected).map_err(|source| DownloadError::BadFile {
            url: opts.url.clone(),
            name: expected.name.clone(),
            source,
        })?;
    }
    install(&extracted, &target, &stale, &opts.expected_files)?;
    Ok(target)
}

/// Streams the body to `partial`, hashing as it goes; checks length and md5.
fn fetch(opts: &DownloadOptions, partial: &Path) -> Result<(), DownloadError> {
    let url = &opts.url;
    let http = |source: Box<dyn std::error::Error + Send + Sync>| DownloadError::Http {
        url: url.clone(),
        source,
    };
    let response = agent_for(url).get(url).call().map_err(|e| http(e.into()))?;
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(DownloadError::Status {
            url: url.clone(),
            status,
        });
    }
    let expected_len = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let truncated = |received| DownloadError::Truncated {
        url: url.clone(),
        received,
        expected: expected_len.unwrap_or(0),
    };

    let bar = progress_bar(opts.progress, expected_len);
    let mut body = response.into_body().into_reader();
    let file = File::create(partial).map_err(|e| io_err(partial, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut received = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A server that closes early makes the reader fail with UnexpectedEof;
            // report it as the truncation it is.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && expected_len.is_some() => {
                return Err(truncated(received));
            }
            Err(e) => return Err(http(e.into())),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| io_err(partial, e))?;
        received += n as u64;
        bar.set_position(received);
    }
    out.into_inner()
        .map_err(|e| io_err(partial, e.into_error()))?
        .sync_all()
        .map_err(|e| io_err(partial, e))?;
    bar.finish_and_clear();

    if expected_len.is_some_and(|n| n != received) {
        return Err(truncated(received));
    }
    let actual = hex::encode(hasher.finalize());
    if !actual.eq_ignore_ascii_case(opts.md5.trim()) {
        return Err(DownloadError::Md5Mismatch {
            url: url.clone(),
            actual,
            expected: opts.md5.trim().to_ascii_lowercase(),
        });
    }
    Ok(())
}

fn agent_for(url: &str) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        // No overall limit (the archive is 170 MB on links of any speed), but a stalled
        // connection must fail rather than hang forever.
        .timeout_per_read(Some(Duration::from_secs(60)));
    // A loopback mirror never goes through a proxy, whatever the environment says.
    if is_loopback(url) {
        config = config.proxy(None);
    }
    ureq::Agent::new_with_config(config.build())
}

/// True for `http(s)://localhost…`, `127.x.x.x` and `[::1]` URLs.
fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = if host_port.starts_with('[') {
        host_port.split(']').next().map_or("", |h| &h[1..])
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost") || host == "::1" || host.starts_with("127.")
}

fn progress_bar(show: bool, len: Option<u64>) -> ProgressBar {
    if !show || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match len {
        Some(n) => (
            ProgressBar::new(n),
            "{msg} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{spinner} {msg} {bytes} {bytes_per_sec}",
        ),
    };
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("downloading CIFAR-10");
    bar
}

/// Unpacks regular files and folders of the tar.gz at `archive` into `into`.
fn extract(url: &str, archive: &Path, into: &Path) -> Result<(), DownloadError> {
    let bad = |source| DownloadError::BadArchive {
        url: url.to_string(),
        source,
    };
    let file = File::open(archive).map_err(|e| io_err(archive, e))?;
    let mut gz = flate2::read::GzDecoder::new(BufReader::with_capacity(1 << 20, file));
    let unpacked = unpack(&mut gz, into);
    // tar stops at its end-of-archive marker (or at the first garbled header); reading
    // the rest makes the gzip decoder check its CRC and length trailer. A gzip error is
    // the root cause of any tar error, so it is the one reported.
    let drained = io::copy(&mut gz, &mut io::sink());
    match (unpacked, drained) {
        (_, Err(gzip)) => Err(bad(gzip)),
        (Err(tar), Ok(_)) => Err(bad(tar)),
        (Ok(()), Ok(_)) => Ok(()),
    }
}

fn unpack(gz: &mut impl Read, into: &Path) -> io::Result<()> {
    let mut tar = tar::Archive::new(gz);
    tar.set_preserve_permissions(false);
    for entry in tar.entries()? {
        let mut entry = entry?;
        // Links and devices have no place in this dataset; skipping them keeps a hostile
        // archive from pointing outside the extraction folder.
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            continue;
        }
        // `unpack_in` refuses paths that would escape `into` (returns false).
        entry.unpack_in(into)?;
    }
    Ok(())
}

/// Renames `src` to `target`, replacing a broken `target` (moved to `stale` first).
fn install(
    src: &Path,
    target: &Path,
    stale: &Path,
    expected: &[ExpectedFile],
) -> Result<(), DownloadError> {
    if target.exists() {
        fs::rename(target, stale).map_err(|e| io_err(target, e))?;
    }
    match fs::rename(src, target) {
        Ok(()) => Ok(()),
        // Another process may have finished the same download in the meantime.
        Err(_) if target.is_dir() && cifar::verify_files(target, expected).is_ok() => Ok(()),
        Err(e) => Err(io_err(target, e)),
    }
}

/// The part of a file check's message that still means something once the temporary
/// extraction folder it names is gone.
fn describe(err: &CifarError) -> String {
    match err {
        CifarError::WrongSize {
            actual, expected, ..
        } => format!("{actual} bytes, expected {expected}"),
        CifarError::Md5Mismatch {
            actual, expected, ..
        } => format!("md5 {actual}, expected {expected}"),
        other => other.to_string(),
    }
}

/// A decoder's message can quote bytes of a garbled header; keep the text readable.
fn printable(msg: &str) -> String {
    const MAX_CHARS: usize = 160;
    let mut out: String = msg
        .chars()
        .map(|c| {
            if c.is_control() || c == char::REPLACEMENT_CHARACTER {
                '?'
            } else {
                c
            }
        })
        .take(MAX_CHARS)
        .collect();
    if msg.chars().count() > MAX_CHARS {
        out.push('…');
    }
    out
}

fn io_err(path: &Path, source: io::Error) -> DownloadError {
    DownloadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Removes the listed files or folders when dropped, whatever happened.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for path in &self.0 {
            // Best effort: most of these paths never existed or were already consumed.
            if path.is_dir() {
                let _ = fs::remove_dir_all(path);
            } else {
                let _ = fs::remove_file(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for url in [
            "http://127.0.0.1:8080/a.tar.gz",
            "http://localhost/a",
            "https://user@LOCALHOST:1/a",
            "http://[::1]:9/a",
            "127.0.0.2",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            CIFAR10_URL,
            "http://10.0.0.1/a",
            "http://localhost.example.com/",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
    }

    #[test]
    fn printable_strips_garbage() {
        assert_eq!(printable("bad \u{1}\u{fffd}x"), "bad ??x");
        assert_eq!(printable(&"a".repeat(500)).chars().count(), 161);
    }
}
