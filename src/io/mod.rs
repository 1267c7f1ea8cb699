//! Files: HF checkpoint directories and the feedlens manifest, tokenizers, tensor JSON, and the
//! one atomic writer. Uses the model (to build and serialise it); must not know the toy world,
//! any analysis, or how results are shown.

pub mod checkpoint;
pub mod fsio;
pub mod json;
pub mod tokens;
pub mod wire;
