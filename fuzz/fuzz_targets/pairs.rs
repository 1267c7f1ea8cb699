//! Fuzz the pairs file parser (`checkpoints/pairs.toml`, `feedlens report --pairs`): arbitrary
//! text must parse into checked pairs or an error, never panic.
#![no_main]

use feedlens::report::Pairs;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(p) = Pairs::parse(text, Path::new("fuzz/pairs.toml")) {
            // What a parsed file promises: at least one pair, unique names.
            assert!(!p.pairs.is_empty());
            for (i, a) in p.pairs.iter().enumerate() {
                assert!(p.pairs[i + 1..].iter().all(|b| b.name != a.name));
            }
        }
    }
});
