//! Command-line pieces shared by `tpsnet-infer` and `verify`.

use crate::session::{Device, SessionOptions};

/// Where and how inference runs; flattened into both commands.
#[derive(clap::Args, Debug, Clone)]
pub struct ExecutionArgs {
    /// Images per inference call (and per decoding batch in tpsnet-infer).
    #[arg(short, long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,

    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: Device,

    /// If CUDA cannot start, run on the CPU instead of failing (announced on stderr).
    #[arg(long)]
    pub allow_cpu_fallback: bool,

    /// ONNX Runtime intra-op threads (0: one per physical core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

impl ExecutionArgs {
    /// Session options for a command-line run (one session).
    pub fn session_options(&self) -> SessionOptions {
        SessionOptions {
            device: self.device,
            threads: self.threads,
            sessions: 1,
            allow_cpu_fallback: self.allow_cpu_fallback,
            batch_size: self.batch_size as usize,
        }
    }
}
