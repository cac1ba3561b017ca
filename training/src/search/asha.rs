//! Asynchronous successive halving (Li et al. 2020, "A system for massively parallel
//! hyperparameter tuning") as the local search's stopping rule; Ray Tune's ASHA
//! scheduler plays the same part in `search/ray_search.py`.

use serde::{Deserialize, Serialize};

use super::ledger::{TrialRecord, TrialStatus};

/// Asynchronous successive halving (ASHA) as a stopping rule: at each rung (epochs
/// `grace·eta^k` below the trial length) a trial continues only if its validation
/// accuracy is at least the `1 − 1/eta` quantile of what earlier trials reached at
/// that rung. The first trial at a rung always continues.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Asha {
    /// The reduction factor: about one trial in `eta` continues past each rung.
    pub eta: u32,
    /// The epochs at which trials are compared, ascending.
    pub rungs: Vec<u32>,
}

impl Asha {
    /// The rule for trials of `epochs` epochs: rungs at `grace_epochs · eta^k` below
    /// `epochs` (a grace of 0 counts as 1, an `eta` below 2 as 2).
    pub fn new(grace_epochs: u32, eta: u32, epochs: u32) -> Self {
        let mut rungs = Vec::new();
        let mut r = grace_epochs.max(1);
        while r < epochs {
            rungs.push(r);
            r = r.saturating_mul(eta.max(2));
        }
        Asha {
            eta: eta.max(2),
            rungs,
        }
    }

    /// Accuracy a trial needs at a rung, given what earlier trials reached there.
    pub fn cutoff(&self, peers: &[f64]) -> Option<f64> {
        (!peers.is_empty()).then(|| quantile(peers, 1.0 - 1.0 / self.eta as f64))
    }

    /// Validation accuracies that finished trials reached at `rung` (failed ones excluded).
    pub fn peers_at(rung: u32, records: &[TrialRecord]) -> Vec<f64> {
        records
            .iter()
            .filter(|r| r.status != TrialStatus::Failed)
            .filter_map(|r| r.val_acc.get(rung as usize - 1).copied())
            .collect()
    }
}

/// Linear-interpolation quantile (numpy's default), `q` in [0, 1].
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

impl Asha {
    /// Why a trial with `history` stops at one of the rungs it has reached, given the
    /// records of earlier trials; `None` while it may go on. Checking every reached rung
    /// again gives a resumed trial the decisions it got before the interruption.
    pub fn stop_reason(&self, val_acc: &[Option<f64>], earlier: &[TrialRecord]) -> Option<String> {
        for &rung in self.rungs.iter().filter(|&&r| r as usize <= val_acc.len()) {
            let acc = val_acc[rung as usize - 1].unwrap_or(f64::NAN);
            let peers = Self::peers_at(rung, earlier);
            if let Some(cut) = self.cutoff(&peers) {
                if acc < cut {
                    return Some(format!(
                        "successive halving at epoch {rung}: val acc {acc:.2} % < cutoff {cut:.2} % (top 1/{} of {} earlier trials)",
                        self.eta,
                        peers.len()
                    ));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::test_support::record;

    #[test]
    fn asha_rungs_and_cutoff() {
        assert_eq!(Asha::new(1, 3, 30).rungs, vec![1, 3, 9, 27]);
        assert_eq!(Asha::new(1, 3, 2).rungs, vec![1]);
        assert!(Asha::new(1, 3, 1).rungs.is_empty());
        let a = Asha::new(1, 3, 30);
        assert_eq!(a.cutoff(&[]), None);
        assert_eq!(a.cutoff(&[40.0]), Some(40.0));
        // numpy.percentile([10, 20, 30, 40], 66.67) = 30.0
        let c = a.cutoff(&[40.0, 10.0, 30.0, 20.0]).unwrap();
        assert!((c - 30.0).abs() < 1e-9, "{c}");
        assert!((quantile(&[1.0, 2.0], 0.5) - 1.5).abs() < 1e-12);
    }

    #[test]
    fn peers_skip_failed_and_short_trials() {
        let rs = vec![
            record(0, TrialStatus::Completed, &[10.0, 20.0, 30.0]),
            record(1, TrialStatus::Stopped, &[5.0]),
            record(2, TrialStatus::Failed, &[50.0, 60.0]),
        ];
        assert_eq!(Asha::peers_at(1, &rs), vec![10.0, 5.0]);
        assert_eq!(Asha::peers_at(2, &rs), vec![20.0]);
    }

    #[test]
    fn stop_reason_checks_every_reached_rung() {
        let a = Asha::new(1, 3, 9);
        assert_eq!(a.rungs, vec![1, 3]);
        let earlier = vec![
            record(0, TrialStatus::Completed, &[50.0, 60.0, 70.0]),
            record(1, TrialStatus::Completed, &[40.0, 50.0, 60.0]),
        ];
        // Cutoffs: 46.67 at epoch 1, 66.67 at epoch 3.
        assert_eq!(a.stop_reason(&[], &earlier), None);
        assert_eq!(a.stop_reason(&[Some(48.0)], &earlier), None);
        let r = a.stop_reason(&[Some(48.0), Some(50.0), Some(55.0)], &earlier);
        assert!(r.unwrap().contains("at epoch 3"));
        let r = a.stop_reason(&[Some(45.0), Some(90.0), Some(90.0)], &earlier);
        assert!(r.unwrap().contains("at epoch 1: val acc 45.00 %"));
        // The first trial at a rung always continues.
        assert_eq!(a.stop_reason(&[Some(1.0)], &[]), None);
    }
}
