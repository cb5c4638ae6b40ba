//! Tensor ops. Each file holds one family: its CPU path and its backward.

pub mod binary;
pub mod cast;
pub mod compare;
pub mod concat;
pub mod creation;
pub mod dropout;
pub mod index;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod reduce;
pub mod softmax;
pub mod split;
pub mod unary;
pub mod view;
