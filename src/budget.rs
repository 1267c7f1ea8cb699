//! Memory budgets: estimate from a command's arguments and the model's config how much memory
//! it will hold, and refuse — before any work is allocated — when that exceeds what the machine
//! has. Pure arithmetic plus one read of `/proc/meminfo`; knows no command or file format.

use crate::model::Config;
use crate::{Error, Result};

/// Bytes of one f32.
const F32: u64 = 4;

/// The memory a command may use: `FEEDLENS_MEMORY` (bytes, or with a K/M/G/T suffix) if set,
/// else the machine's available memory (`MemAvailable` in `/proc/meminfo`), else 16 GiB.
pub fn limit() -> u64 {
    if let Some(v) = std::env::var("FEEDLENS_MEMORY")
        .ok()
        .and_then(|s| parse_size(&s))
    {
        return v;
    }
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| proc_kb(&s, "MemAvailable"))
        .map_or(16 << 30, |kb| kb.saturating_mul(1024))
}

/// The value of `key` in a `/proc` status text (`MemAvailable:   123 kB`), in kB.
pub fn proc_kb(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
}

/// `"512M"`, `"24G"`, `"1000"` → bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().last()? {
        (i, 'K' | 'k') => (&s[..i], 1u64 << 10),
        (i, 'M' | 'm') => (&s[..i], 1 << 20),
        (i, 'G' | 'g') => (&s[..i], 1 << 30),
        (i, 'T' | 't') => (&s[..i], 1 << 40),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mul)
}

/// A size for people: "1.5 GiB".
pub fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// Refuse `what` (the arguments, as the user wrote them) when its estimate `need` exceeds
/// [`limit`]; the error gives both figures.
pub fn check(what: &str, need: u64) -> Result<()> {
    let have = limit();
    if need > have {
        return Err(Error::input(format!(
            "{what}: needs about {} of memory, more than the {} available (set FEEDLENS_MEMORY to change the limit)",
            human(need),
            human(have)
        )));
    }
    Ok(())
}

/// Saturating product of counts and sizes.
fn prod(xs: &[u64]) -> u64 {
    xs.iter().fold(1u64, |a, &x| a.saturating_mul(x))
}

/// Activations of one forward of `rows` sequences of `t` tokens through `cfg`, all hooks
/// live: per layer and position the residual, attention and MLP widths, plus the attention
/// pattern.
pub fn forward(cfg: &Config, rows: u64, t: u64) -> u64 {
    let (l, d, h) = (cfg.n_layer as u64, cfg.n_embd as u64, cfg.n_head as u64);
    let per_pos = (16 * d).saturating_add(2 * h * t);
    prod(&[rows, l.max(1), t, per_pos, F32]).saturating_add(prod(&[
        rows,
        t,
        cfg.vocab_size as u64,
        F32,
    ]))
}

/// Parameters with their gradients and AdamW's two moments.
pub fn training_state(cfg: &Config) -> u64 {
    let (l, d) = (cfg.n_layer as u64, cfg.n_embd as u64);
    let params = prod(&[12, l, d, d])
        .saturating_add(prod(&[cfg.vocab_size as u64 + cfg.n_positions as u64, d]));
    prod(&[params, 4, F32])
}

/// One training step of `rows` sequences of `t` tokens: the state, and the forward kept for
/// backward (about three times the forward's activations).
pub fn train_step(cfg: &Config, rows: u64, t: u64) -> u64 {
    training_state(cfg).saturating_add(forward(cfg, rows, t).saturating_mul(3))
}

/// A patching sweep over `pairs` prompt pairs of `t` tokens: both sides' caches and, per pair,
/// a value per layer × position × site (heads included).
pub fn patching(cfg: &Config, pairs: u64, t: u64) -> u64 {
    let (l, h) = (cfg.n_layer as u64, cfg.n_head as u64);
    let results = prod(&[pairs, l.max(1), t, h + 4, 8]);
    forward(cfg, pairs, t)
        .saturating_mul(2)
        .saturating_add(results)
}

/// Probe activation sets: `n` rows of every layer's residual for `checkpoints` checkpoints.
pub fn activations(cfg: &Config, n: u64, checkpoints: u64) -> u64 {
    prod(&[
        n,
        cfg.n_layer as u64 + 1,
        cfg.n_embd as u64,
        F32,
        checkpoints,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("2g"), Some(2 << 30));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("99999999999T"), None, "overflow is not a size");
        assert_eq!(human(1536 << 20), "1.5 GiB");
        assert_eq!(human(12), "12 B");
    }

    #[test]
    fn estimates_grow_with_their_arguments_and_saturate() {
        let cfg = Config::new(4, 64, 4, 32, 32);
        assert!(patching(&cfg, 2, 12) > patching(&cfg, 1, 12));
        assert!(train_step(&cfg, 64, 18) > training_state(&cfg));
        let huge = Config::new(100_000, 1_000_000, 4, 32, 32);
        assert!(training_state(&huge) > 1 << 50);
        assert_eq!(activations(&cfg, u64::MAX, 2), u64::MAX);
    }
}
