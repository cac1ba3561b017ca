//! Shared code of the embedding examples (work in progress).
