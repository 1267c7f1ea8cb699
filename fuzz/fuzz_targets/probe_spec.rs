//! Fuzz the probe spec parser (`probes/*.toml`): arbitrary text must parse into a validated
//! spec or an error, never panic.
#![no_main]

use feedlens::analysis::probes::Spec;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Spec::parse(text, Path::new("fuzz.toml"));
    }
});
