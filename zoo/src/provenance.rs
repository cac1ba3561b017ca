//! Where and when a published model was made, for its manifest's training record:
//! `train-zoo` and `tpsnet-quantize` both stamp their files with these.

use std::path::PathBuf;
use std::sync::OnceLock;

static SOURCE_TREE: OnceLock<PathBuf> = OnceLock::new();

/// Names the source tree whose commit [`source_commit`] reports. A library cannot know
/// where its checkout is, so the binaries that write manifests call this once at
/// start-up with the folder they were built from (`env!("CARGO_MANIFEST_DIR")`); the
/// first call wins.
pub fn set_source_tree(dir: impl Into<PathBuf>) {
    let _ = SOURCE_TREE.set(dir.into());
}

/// `git rev-parse HEAD` of the source tree named by [`set_source_tree`], with `-dirty`
/// when it has changes; without one, or outside a git checkout, the `TPSNET_COMMIT` the
/// crate was built with, else `unknown`.
pub fn source_commit() -> String {
    let from_git = SOURCE_TREE.get().and_then(|dir| {
        let run = |args: &[&str]| {
            std::process::Command::new("git")
                .args(args)
                .current_dir(dir)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        let head = run(&["rev-parse", "HEAD"])?;
        let dirty =
            run(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        Some(if dirty { format!("{head}-dirty") } else { head })
    });
    from_git
        .or_else(|| option_env!("TPSNET_COMMIT").map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string())
}

/// Current UTC time as RFC 3339 (seconds).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// Seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (proleptic Gregorian), H. Hinnant's algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
