//! The laboratory: the toy "assist" world, decoding, the training recipes, the paired zoo and
//! the behaviour table. Uses the model and io; must not import analyses, figures or the report.

pub mod eval;
pub mod sample;
pub mod train;
pub mod world;
pub mod zoo;
