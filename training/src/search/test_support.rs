//! Fixtures shared by the search modules' unit tests.

use super::ledger::{TrialRecord, TrialStatus};
use super::space::{FloatRange, IntRange, SearchSpace, sample_trial};

pub(crate) fn single_point_space(blocks: usize, c1: usize, budget: u64) -> SearchSpace {
    SearchSpace {
        budget_params: budget,
        min_params: 0,
        num_layers: vec![3],
        blocks: IntRange {
            min: blocks,
            max: blocks,
        },
        same_blocks_in_every_layer: true,
        stem_channels: IntRange { min: c1, max: c1 },
        width_factor: vec![2],
        conv_kernels: vec![3],
        skip_kernels: vec![1],
        same_kernels_in_every_layer: true,
        pool: vec![8],
        dropout: FloatRange {
            min: 0.0,
            max: 0.0,
            log: false,
        },
        lr: FloatRange {
            min: 0.01,
            max: 0.01,
            log: false,
        },
        batch_size: vec![128],
    }
}

pub(crate) fn record(id: u64, status: TrialStatus, accs: &[f64]) -> TrialRecord {
    let space = single_point_space(1, 4, 5_000_000);
    let plan = sample_trial(&space, 0, id, 3, 10).unwrap();
    TrialRecord {
        plan,
        status,
        epochs_done: accs.len() as u32,
        val_acc: accs.to_vec(),
        val_loss: accs.iter().map(|_| 1.0).collect(),
        final_val_acc: accs.last().copied(),
        train_time_s: 1.0,
        wall_time_s: 2.0,
        note: None,
        runner: "local".into(),
        finished_at: "2024-01-01T00:00:00Z".into(),
    }
}
