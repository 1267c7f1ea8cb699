//! The self-contained latents page (`feedlens latents`): one card per latent with its
//! top-activating contexts (the token highlighted, shaded by activation), its activation
//! histogram as inline bars, and the tokens it promotes. Markup only; the data is
//! `analysis::dictionary::cards`.

use crate::analysis::dictionary::cards::LatentsView;
use crate::view::html::escape;
use std::fmt::Write;

const STYLE: &str = "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
h1{border-bottom:2px solid #444}.card{border:1px solid #bbb;margin:1em 0;padding:0.5em 1em}\
.ctx{font-family:monospace;margin:2px 0;white-space:nowrap}.ctx span{padding:1px 3px;margin-right:1px}\
.ctx .peak{outline:2px solid #c00}.hist{display:flex;align-items:flex-end;height:40px;gap:1px}\
.hist div{background:#47a;width:10px}.meta{color:#555;font-size:0.9em}table{border-collapse:collapse}\
td,th{border:1px solid #ccc;padding:2px 6px;font-size:0.9em}";

/// The page as HTML. Every piece of text is escaped here.
pub fn page(v: &LatentsView) -> String {
    let mut h = String::new();
    let title = format!("Latents of {} at {}", v.models.join(" × "), v.hook);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>{t}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{t}</h1>\n",
        t = escape(&title)
    );
    let _ = writeln!(
        h,
        "<p>{} latents, read on {} tokens of toy-world corpus episodes. Contexts are shaded by the latent's activation (darker is stronger); the outlined token is the episode's peak.</p>",
        v.d_sae, v.tokens
    );
    if let Some((per, f)) = &v.counts {
        let list: Vec<String> = per
            .iter()
            .map(|(c, k)| format!("{k} {}", c.name()))
            .collect();
        let _ = writeln!(
            h,
            "<p>Active latents by relative decoder norm (A-only ≤ 0.1, shared 0.4–0.6, B-only ≥ 0.9): {}; Latent Scaling flags {f} of the one-model latents as present in the other model too.</p>",
            escape(&list.join(", "))
        );
    }
    for c in &v.cards {
        let _ = write!(h, "<div class=\"card\" id=\"latent-{}\">\n<h2>Latent {}</h2>\n<p class=\"meta\">fires on {:.2} % of tokens, max {:.3}", c.latent, c.latent, 100.0 * c.frequency, c.max);
        if let (Some(cl), Some(r)) = (c.class, c.relative_norm) {
            let _ = write!(h, "; {} (relative decoder norm {r:.3})", escape(cl.name()));
        }
        if let Some(nu) = c.nu_error {
            let _ = write!(h, "; ν<sup>ε</sup> {nu:.3}");
        }
        if let Some(nu) = c.nu_recon {
            let _ = write!(h, ", ν<sup>r</sup> {nu:.3}");
        }
        if c.artefact {
            h.push_str(" — Latent Scaling: the other model carries it too");
        }
        h.push_str("</p>\n<div class=\"hist\" title=\"activation histogram over (0, max]\">");
        let top = c.histogram.iter().copied().max().unwrap_or(0).max(1);
        for &k in &c.histogram {
            let _ = write!(
                h,
                "<div style=\"height:{}%\" title=\"{k}\"></div>",
                (100 * k).div_ceil(top)
            );
        }
        h.push_str("</div>\n");
        for ctx in &c.top {
            h.push_str("<div class=\"ctx\">");
            for (i, (t, &a)) in ctx.tokens.iter().zip(&ctx.acts).enumerate() {
                let alpha = if c.max > 0.0 {
                    (a / c.max).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let peak = if i == ctx.at { " class=\"peak\"" } else { "" };
                let _ = write!(
                    h,
                    "<span{peak} style=\"background:rgba(220,80,40,{alpha:.2})\" title=\"{a:.3}\">{}</span>",
                    escape(t)
                );
            }
            h.push_str("</div>\n");
        }
        h.push_str(
            "<table><tr><th>model</th><th>promoted tokens (logit per unit activation)</th></tr>\n",
        );
        for (m, toks) in c.promoted.iter().enumerate() {
            let list: Vec<String> = toks
                .iter()
                .map(|(t, v)| format!("{} {v:+.2}", escape(t)))
                .collect();
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td></tr>",
                escape(v.models.get(m).map_or("", |s| s.as_str())),
                list.join(", ")
            );
        }
        h.push_str("</table>\n</div>\n");
    }
    h.push_str("</body>\n</html>\n");
    h
}
