//! Inference runtime (work in progress).
