//! Analyses of checkpoints: activation patching, linear probes, the logit lens and the weight
//! diff. Each returns plain data (serialisable results); none draws, prints or writes files
//! other than through `io`, and none imports `view` or `report`.
//! Must not import `view` or `report`.

pub mod causal;
pub mod dictionary;
pub mod diff;
pub mod difflens;
pub mod lens;
pub mod patching;
pub mod probes;
pub mod similarity;
pub mod site;
