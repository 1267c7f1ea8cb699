//! Linear probes over a model's layers: labelled activation sets from the toy world, probing
//! them layer by layer, probe specs (`probes/*.toml`) run into stored results and checked for
//! drift, the causal check of a probe direction, and fitting one probe on activations a user
//! brings. The maths is `math` (pure); activations come from `Model::forward`.
//! Must not import `view` or `report`.

pub mod causal;
pub mod check;
pub mod fit;
pub mod labels;
pub mod layers;
pub mod math;
pub mod sets;
pub mod spec;

pub use causal::{causal_check, CausalResult};
pub use check::{check_dir, check_spec, compare, compare_weights, specs_in, CheckOutcome};
pub use fit::{fit_file, fit_split, parse_rows, read_xy, FitReport};
pub use labels::{sample_prompts, Label};
pub use layers::{Folded, LayerResult};
pub use sets::ActivationSet;
pub use spec::{
    result_paths, run_files, run_spec, write_run, CheckpointResult, ProbeMethod, Spec, SpecResult,
    SpecRun, TransferResult,
};
