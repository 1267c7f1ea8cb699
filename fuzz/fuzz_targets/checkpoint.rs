//! Fuzz the checkpoint loader: arbitrary bytes become config.json, model.safetensors and
//! tokenizer.json; loading must return Ok or an error, never panic.
#![no_main]

use feedlens::io::checkpoint::{from_files, safetensors_bytes, Files};
use feedlens::{Config, Gpt2};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;

/// A valid config for a tiny model, so the fuzzer reaches the tensor checks often.
const CONFIG: &[u8] = br#"{"n_layer":1,"n_embd":4,"n_head":2,"n_positions":4,"vocab_size":5}"#;

/// Valid weights for CONFIG, so tokenizer bytes get parsed too.
fn weights() -> &'static [u8] {
    static W: OnceLock<Vec<u8>> = OnceLock::new();
    W.get_or_init(|| {
        let cfg: Config = serde_json::from_slice(CONFIG).expect("config");
        safetensors_bytes(&Gpt2::init(cfg, 0).expect("init")).expect("bytes")
    })
}

fuzz_target!(|data: &[u8]| {
    // First byte picks the layout: which part the remaining bytes feed.
    let Some((&sel, rest)) = data.split_first() else { return };
    let (config, weights, tokenizer) = match sel % 4 {
        0 => (CONFIG.to_vec(), rest.to_vec(), None),
        1 => (rest.to_vec(), Vec::new(), None),
        2 => {
            let cut = rest.len() / 2;
            (rest[..cut].to_vec(), rest[cut..].to_vec(), None)
        }
        _ => (CONFIG.to_vec(), weights().to_vec(), Some(rest.to_vec())),
    };
    let files = Files { config, weights, tokenizer, manifest: None };
    let _ = from_files(Path::new("fuzz"), files);
});
