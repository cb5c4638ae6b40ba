//! The layers, one family per file.

pub mod attention;
pub mod basic;
pub mod block;
pub mod glimpse;
pub mod hard_pooling;
pub mod linear;
pub mod mlp;
pub mod patches;
pub mod pooling;
pub mod positions;
pub mod stem;
