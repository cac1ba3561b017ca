//! Random architecture search under a parameter budget (work in progress).

use clap::Args;

/// Arguments of `train-zoo search`.
#[derive(Args, Debug)]
pub struct SearchArgs {}

/// Arguments of `train-zoo trial`.
#[derive(Args, Debug)]
pub struct TrialArgs {}

/// Runs `train-zoo search`.
pub fn run_search(_args: SearchArgs) -> anyhow::Result<()> {
    anyhow::bail!("search is not implemented yet")
}

/// Runs `train-zoo trial`.
pub fn run_trial(_args: TrialArgs) -> anyhow::Result<()> {
    anyhow::bail!("trial is not implemented yet")
}
