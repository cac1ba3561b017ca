//! Peak resident memory of the programs under test: of a finished child (its
//! `ru_maxrss`, from `wait4`) and of a running one (`VmHWM` in `/proc/PID/status`).
//! Tests assert a ceiling with these, so that a limit that stops being enforced (an
//! allocation before the check) fails a test rather than a machine.

use std::io::Read;
use std::process::{Command, ExitStatus, Output, Stdio};

/// Runs `cmd` to its end and returns its output and its peak resident set in bytes.
#[allow(unsafe_code)] // wait4 has no safe wrapper in std; see the SAFETY note.
#[allow(clippy::zombie_processes)] // The child is reaped by wait4, which std cannot see.
pub fn run_with_peak_rss(cmd: &mut Command) -> (Output, u64) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of that plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unwaited child; both pointers are to live locals. The
    // `Child` is not waited on afterwards (dropping it does not wait).
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4: {}", std::io::Error::last_os_error());
    let output = Output {
        status: <ExitStatus as std::os::unix::process::ExitStatusExt>::from_raw(status),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    // Linux reports ru_maxrss in KiB.
    (output, usage.ru_maxrss as u64 * 1024)
}

/// The peak resident set of the running process `pid` so far, in bytes (Linux).
pub fn peak_rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

/// Mebibytes, for messages.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
