//! Faults for the command-line tools' tests: a full disk (a file size limit), a folder
//! the tool may not write, and `kill -9` at chosen moments; and the checks that a models
//! folder is whole afterwards.
//!
//! A full disk is simulated with `RLIMIT_FSIZE` and `SIGXFSZ` ignored: a write past the
//! limit then fails with `EFBIG` ("File too large"), the way a full disk fails it with
//! `ENOSPC`, and the tool has to handle the error. (With `SIGXFSZ` at its default the
//! kernel would kill the tool instead, which the `kill -9` tests already cover.)
//!
//! A read-only folder is `chmod 0555`. Root ignores that (`CAP_DAC_OVERRIDE`), and tests
//! often run as root in containers, so as root the tool is started through util-linux's
//! `setpriv` with `CAP_DAC_OVERRIDE` and `CAP_FOWNER` dropped from its bounding set.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use tpsnet_zoo::Manifest;

/// A command for `exe` that cannot write into folders without write permission, even
/// when the test runs as root (see the module docs).
pub fn command_honouring_permissions(exe: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--bounding-set=-dac_override,-dac_read_search,-fowner",
            "--",
        ])
        .arg(exe);
        c
    } else {
        Command::new(exe)
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Makes `dir` read-only (`0555`), or writable again.
pub fn set_read_only(dir: &Path, read_only: bool) {
    use std::os::unix::fs::PermissionsExt;
    let mode = if read_only { 0o555 } else { 0o755 };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", dir.display()));
}

/// Limits every file `cmd`'s process writes to `bytes` (a full disk; see the module docs).
#[allow(unsafe_code)] // The only unsafe code of the tests: two libc calls in a child.
pub fn limit_file_size(cmd: &mut Command, bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: runs in the forked child before exec; setrlimit and signal are
    // async-signal-safe, and the closure touches no memory but its copied `limit`.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::signal(libc::SIGXFSZ, libc::SIG_IGN) == libc::SIG_ERR {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs `cmd` and kills it with `SIGKILL` `after` its start, unless it ended sooner.
/// Returns whether it was killed.
pub fn kill_after(cmd: &mut Command, after: Duration) -> bool {
    let mut child = spawn_quiet(cmd);
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if start.elapsed() >= after {
            return kill(&mut child);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs `cmd` and kills it with `SIGKILL` as soon as a file whose name contains `.tmp-`
/// (an atomic write under way) shows up in `dir`, or it ended first. Returns whether it
/// was killed, and so whether it was caught in the middle of a write.
pub fn kill_while_writing(cmd: &mut Command, dir: &Path, within: Duration) -> bool {
    let mut child = spawn_quiet(cmd);
    let start = Instant::now();
    while start.elapsed() < within {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if !temp_files(dir).is_empty() {
            return kill(&mut child);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    kill(&mut child)
}

fn spawn_quiet(cmd: &mut Command) -> Child {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

fn kill(child: &mut Child) -> bool {
    // Kill reports an error only when the child is already gone.
    let killed = child.kill().is_ok();
    let status = child.wait().unwrap();
    killed && status.code().is_none()
}

/// Seeded moments spread over `(0, span)`: `n` kill times, reproducible per `seed`.
pub fn moments(seed: u64, n: usize, span: Duration) -> Vec<Duration> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let unit = (state >> 11) as f64 / (1u64 << 53) as f64;
            span.mul_f64(0.05 + 0.95 * unit)
        })
        .collect()
}

/// Files in `dir` (not recursive) whose names hold `.tmp-`: atomic writes that a killed
/// process left behind.
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains(".tmp-"))
        .collect()
}

/// What a models folder holds, checked: every manifest loads and its model file exists
/// with the manifest's size and sha256.
#[derive(Debug, Default)]
pub struct FolderState {
    /// `(manifest file, model sha256)` of every manifest, sorted.
    pub models: Vec<(String, String)>,
    /// Files left by interrupted atomic writes (hidden, `.NAME.tmp-PID`).
    pub temp_files: Vec<PathBuf>,
    /// ONNX files no manifest lists (a publication killed between its two renames).
    pub unlisted_models: Vec<PathBuf>,
}

/// Checks `dir` (see [`FolderState`]); panics, naming the file, on a manifest that does
/// not load or one whose model is missing, partial or different, and on a visible file
/// that is neither a manifest, a model, nor a curve or metrics file.
pub fn check_models_folder(dir: &Path) -> FolderState {
    let mut state = FolderState::default();
    let mut listed = Vec::new();
    let mut onnx = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.contains(".tmp-") {
            assert!(name.starts_with('.'), "{name}: a visible temporary file");
            state.temp_files.push(path);
        } else if name.ends_with(".json") {
            let m = Manifest::load(&path).unwrap_or_else(|e| {
                panic!("{}: a manifest that does not load: {e}", path.display())
            });
            let model = m.model_path(&path);
            let bytes = std::fs::read(&model).unwrap_or_else(|e| {
                panic!(
                    "{} lists {}, which cannot be read: {e}",
                    path.display(),
                    model.display()
                )
            });
            assert_eq!(
                tpsnet_zoo::hashing::sha256_hex(&bytes),
                m.sha256,
                "{}: a partial or different file",
                model.display()
            );
            listed.push(model);
            state.models.push((name, m.sha256));
        } else if name.ends_with(".onnx") {
            onnx.push(path);
        } else {
            let known = [".png", ".csv", ".jsonl"];
            assert!(
                known.iter().any(|ext| name.ends_with(ext)),
                "{name}: an unexpected file in the models folder"
            );
        }
    }
    state.unlisted_models = onnx.into_iter().filter(|p| !listed.contains(p)).collect();
    state.models.sort();
    state
}

/// Asserts that a finished command was refused cleanly: exit code `code`, and each of
/// `needles` (the cause, the file it names) in its stderr.
pub fn assert_refused(output: &Output, code: i32, needles: &[&str]) {
    let (got, err) = refusal(output);
    let describe = || crate::output::describe(output);
    assert_eq!(got, Some(code), "{}", describe());
    for needle in needles {
        assert!(
            err.contains(needle),
            "stderr lacks {needle:?}: {}",
            describe()
        );
    }
}

/// A finished command's exit code and stderr, for asserting a clean refusal.
pub fn refusal(output: &Output) -> (Option<i32>, String) {
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
