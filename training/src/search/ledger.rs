//! The trial ledger, `<search-dir>/ledger.jsonl`: one JSON line per finished trial,
//! appended with a single write and an fsync, shared by the local search and the Ray
//! driver (`search/ray_search.py` writes the same lines). A torn last line from a crash
//! is dropped.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SearchError;
use super::space::TrialPlan;
use crate::export::utc_now;
use crate::metrics::EpochMetrics;

/// How a trial ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialStatus {
    /// Trained all its epochs.
    Completed,
    /// Stopped early by successive halving.
    Stopped,
    /// Training failed (e.g. diverged); not retried on resume.
    Failed,
}

impl TrialStatus {
    /// The status as the ledger and the trial protocol spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            TrialStatus::Completed => "completed",
            TrialStatus::Stopped => "stopped",
            TrialStatus::Failed => "failed",
        }
    }
}

/// One line of `ledger.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// The trial as sampled (its fields are flattened into the line).
    #[serde(flatten)]
    pub plan: TrialPlan,
    /// How the trial ended.
    pub status: TrialStatus,
    /// Epochs trained.
    pub epochs_done: u32,
    /// Validation top-1 (%) after each epoch.
    pub val_acc: Vec<f64>,
    /// Validation loss after each epoch.
    pub val_loss: Vec<f64>,
    /// Validation top-1 after the last epoch trained: the trial's score.
    pub final_val_acc: Option<f64>,
    /// Seconds spent in training steps (evaluation excluded), summed over epochs.
    pub train_time_s: f64,
    /// Wall-clock seconds of the trial, data loading and evaluation included.
    pub wall_time_s: f64,
    /// Why the trial stopped early or failed.
    #[serde(default)]
    pub note: Option<String>,
    /// `local` (this process) or `ray` (search/ray_search.py).
    pub runner: String,
    /// When the trial was recorded (UTC, RFC 3339).
    pub finished_at: String,
}

impl TrialRecord {
    /// The record of a trial that ran in this process (`runner: local`).
    pub fn from_history(
        plan: &TrialPlan,
        history: &[EpochMetrics],
        status: TrialStatus,
        wall_time_s: f64,
        note: Option<String>,
    ) -> Self {
        let val_acc: Vec<f64> = history.iter().filter_map(|m| m.val_acc).collect();
        TrialRecord {
            plan: plan.clone(),
            status,
            epochs_done: history.len() as u32,
            final_val_acc: val_acc.last().copied(),
            val_loss: history.iter().filter_map(|m| m.val_loss).collect(),
            val_acc,
            train_time_s: history.iter().map(|m| m.train_time_s).sum(),
            wall_time_s,
            note,
            runner: "local".into(),
            finished_at: utc_now(),
        }
    }
}

/// Something [`Ledger::open`] fixed or skipped, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerRepair {
    /// A last line without its newline (a write torn by a crash) was cut off.
    TornLine {
        /// Bytes removed.
        bytes: usize,
    },
    /// A trial recorded twice; the first record is kept.
    Duplicate {
        /// The trial's id.
        trial_id: String,
    },
}

impl std::fmt::Display for LedgerRepair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedgerRepair::TornLine { bytes } => write!(
                f,
                "dropping a torn last line ({bytes} bytes) left by an interrupted write"
            ),
            LedgerRepair::Duplicate { trial_id } => write!(
                f,
                "trial {trial_id} is recorded twice; keeping the first record"
            ),
        }
    }
}

/// The trial ledger: `<search-dir>/ledger.jsonl`.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    /// Finished trials in file order (first record of an id wins).
    pub records: Vec<TrialRecord>,
    /// What opening the ledger repaired or skipped.
    pub repairs: Vec<LedgerRepair>,
}

impl Ledger {
    /// Reads the ledger (an absent file is an empty ledger). A last line without its
    /// newline is a write torn by a crash: it is dropped and cut from the file so the
    /// next append starts on a clean line. Any other unreadable line is an error.
    pub fn open(path: &Path) -> Result<Self, SearchError> {
        let read_err = |source| SearchError::Read {
            path: path.to_path_buf(),
            source,
        };
        let write_err = |source| SearchError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut bytes = Vec::new();
        match std::fs::File::open(path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes).map_err(read_err)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(read_err(e)),
        }
        let mut repairs = Vec::new();
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if complete < bytes.len() {
            repairs.push(LedgerRepair::TornLine {
                bytes: bytes.len() - complete,
            });
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(write_err)?;
            f.set_len(complete as u64)
                .and_then(|_| f.sync_all())
                .map_err(write_err)?;
        }
        let mut records = Vec::new();
        let mut seen = HashSet::new();
        for (i, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let r: TrialRecord =
                serde_json::from_slice(line).map_err(|source| SearchError::LedgerLine {
                    path: path.to_path_buf(),
                    line: i + 1,
                    source,
                })?;
            if seen.insert(r.plan.trial_id.clone()) {
                records.push(r);
            } else {
                repairs.push(LedgerRepair::Duplicate {
                    trial_id: r.plan.trial_id,
                });
            }
        }
        Ok(Ledger {
            path: path.to_path_buf(),
            records,
            repairs,
        })
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether trial `id` has a record.
    pub fn is_finished(&self, id: &str) -> bool {
        self.records.iter().any(|r| r.plan.trial_id == id)
    }

    /// Appends one record as a single write, then fsyncs.
    pub fn append(&mut self, record: TrialRecord) -> Result<(), SearchError> {
        let mut line = serde_json::to_vec(&record).expect("records serialise");
        line.push(b'\n');
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(&line).and_then(|_| f.sync_all()))
            .map_err(|source| SearchError::Write {
                path: self.path.clone(),
                source,
            })?;
        self.records.push(record);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::LEDGER_FILE;
    use crate::search::test_support::record;

    #[test]
    fn ledger_appends_and_repairs_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LEDGER_FILE);
        let mut l = Ledger::open(&path).unwrap();
        assert!(l.records.is_empty());
        l.append(record(0, TrialStatus::Completed, &[1.0, 2.0, 3.0]))
            .unwrap();
        l.append(record(1, TrialStatus::Stopped, &[0.5])).unwrap();
        let good = std::fs::read(&path).unwrap();
        // A crash in the middle of the third write.
        let torn = serde_json::to_string(&record(2, TrialStatus::Completed, &[1.0])).unwrap();
        let mut bytes = good.clone();
        bytes.extend_from_slice(&torn.as_bytes()[..torn.len() / 2]);
        std::fs::write(&path, &bytes).unwrap();
        let mut l = Ledger::open(&path).unwrap();
        assert_eq!(
            l.repairs,
            [LedgerRepair::TornLine {
                bytes: torn.len() / 2
            }]
        );
        assert_eq!(l.records.len(), 2);
        assert!(l.is_finished("t0001") && !l.is_finished("t0002"));
        assert_eq!(std::fs::read(&path).unwrap(), good, "torn line not cut");
        l.append(record(2, TrialStatus::Completed, &[1.0])).unwrap();
        let l = Ledger::open(&path).unwrap();
        assert_eq!(l.records.len(), 3);
        assert_eq!(l.records[2], record(2, TrialStatus::Completed, &[1.0]));
    }

    #[test]
    fn a_corrupt_complete_line_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LEDGER_FILE);
        std::fs::write(&path, "{\"not\": \"a record\"}\n").unwrap();
        let e = Ledger::open(&path).err().unwrap().to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}
