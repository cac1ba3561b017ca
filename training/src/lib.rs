//! Trainer (work in progress).
