//! Text ↔ token ids through a checkpoint's `tokenizer.json` (HF `tokenizers` format).
//! Must not know the toy world.

use crate::{Error, Result};
use std::path::Path;
use tokenizers::models::ModelWrapper;
use tokenizers::{
    NormalizedString, Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
    Tokenizer,
};

/// A loaded tokenizer.
pub struct Tokens {
    tk: Tokenizer,
}

impl Tokens {
    /// Parse `tokenizer.json` bytes; `path` is named in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let invalid = |e: String| Error::file(path, format!("invalid tokenizer: {e}"));
        // The JSON's syntax first: `tokenizers` (0.22, kept for 0.23) panics (rather than erring) on a syntax
        // error inside some sections (a `decoder` cut short).
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
            .map_err(|e| invalid(e.to_string()))?;
        let tk = std::panic::catch_unwind(|| Tokenizer::from_bytes(bytes))
            .map_err(|_| invalid("the tokenizers library could not parse it".into()))?
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Tokens { tk })
    }

    /// The pieces the tokenizer's own normalizer and pre-tokenizer make of `text` (what its
    /// model then looks up).
    fn pieces(&self, text: &str, what: &str) -> Result<Vec<String>> {
        let err = |e: tokenizers::Error| Error::input(format!("{what}: cannot tokenize: {e}"));
        let mut n = NormalizedString::from(text);
        if let Some(norm) = self.tk.get_normalizer() {
            norm.normalize(&mut n).map_err(err)?;
        }
        let mut p = PreTokenizedString::from(n);
        if let Some(pre) = self.tk.get_pre_tokenizer() {
            pre.pre_tokenize(&mut p).map_err(err)?;
        }
        Ok(p.get_splits(OffsetReferential::Original, OffsetType::Char)
            .into_iter()
            .map(|(s, _, _)| s.to_string())
            .collect())
    }

    /// Encode `text` (no special tokens added). For word-level vocabularies (the toy world)
    /// every piece the tokenizer's normalizer and pre-tokenizer make of it must be a known
    /// token (not silently its unknown token); `what` names the argument.
    pub fn encode(&self, text: &str, what: &str) -> Result<Vec<u32>> {
        if let ModelWrapper::WordLevel(_) = self.tk.get_model() {
            let vocab = self.tk.get_vocab(true);
            let pieces = self.pieces(text, what)?;
            if let Some(bad) = pieces.iter().find(|w| !vocab.contains_key(w.as_str())) {
                let mut known: Vec<(&String, &u32)> = vocab.iter().collect();
                known.sort_by_key(|(_, &i)| i);
                let known: Vec<&str> = known.iter().map(|(w, _)| w.as_str()).collect();
                return Err(Error::input(format!(
                    "{what}: unknown token '{bad}' (known: {})",
                    known.join(" ")
                )));
            }
        }
        let enc = self
            .tk
            .encode(text, false)
            .map_err(|e| Error::input(format!("{what}: cannot tokenize: {e}")))?;
        if enc.get_ids().is_empty() {
            return Err(Error::input(format!("{what}: no tokens")));
        }
        Ok(enc.get_ids().to_vec())
    }

    /// The token string of `id`, or the id in brackets when the vocabulary lacks it.
    pub fn label(&self, id: u32) -> String {
        self.tk.id_to_token(id).unwrap_or_else(|| format!("[{id}]"))
    }

    /// The id of a token string.
    pub fn id(&self, token: &str) -> Option<u32> {
        self.tk.token_to_id(token)
    }

    /// One more than the largest id the tokenizer can produce (added tokens included): the
    /// rows an embedding needs for every encoding to fit.
    pub fn id_bound(&self) -> usize {
        self.tk
            .get_vocab(true)
            .values()
            .map(|&i| i as usize + 1)
            .max()
            .unwrap_or(0)
    }

    /// Decode ids to text (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tk
            .decode(ids, false)
            .map_err(|e| Error::input(format!("cannot decode: {e}")))
    }
}

/// Parse a comma-separated id list (`1,2,3`); `what` names the argument in errors.
pub fn parse_ids(s: &str, what: &str) -> Result<Vec<u32>> {
    let ids: std::result::Result<Vec<u32>, _> = s
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| {
            x.parse::<u32>()
                .map_err(|_| Error::input(format!("{what}: '{x}' is not a token id")))
        })
        .collect();
    let ids = ids?;
    if ids.is_empty() {
        return Err(Error::input(format!("{what}: no token ids")));
    }
    Ok(ids)
}
