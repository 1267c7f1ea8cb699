//! Within-checkpoint patching sentences over seeds: the clean–corrupt gap, where the residual
//! stream carries it (claims that hold at every layer their interval clears), and the top head,
//! MLP and necessary component with the number of seeds in which each is the top one. Must not
//! run a sweep: it reads the stored ones and their intervals.

use super::Ctx;
use crate::analysis::patching::{Cell, Sweep, SweepCi};
use crate::analysis::site::Site;
use crate::lab::world::Contrast;
use crate::report::data::{CheckpointData, Fact, PatchData, PatchSweeps, Summary};
use crate::stats::Est;

/// Each run's share interval of `site` at (layer, position, head) of sweep `pick(pd)`; None for
/// a run whose shares are withheld.
fn shares(
    pds: &[&PatchSweeps],
    pick: fn(&PatchSweeps) -> &(Sweep, Option<SweepCi>),
    site: Site,
    (l, p, h): (usize, usize, usize),
) -> Vec<Option<Est>> {
    pds.iter()
        .map(|pd| {
            let (sw, ci) = pick(pd);
            ci.as_ref()?.share_at(sw, site, l, p, h)
        })
        .collect()
}

/// The across-runs fact of per-run estimates, when every run has one.
fn all_runs(v: &[Option<Est>]) -> Option<Fact> {
    let e: Option<Vec<Est>> = v.iter().copied().collect();
    e.filter(|e| !e.is_empty()).map(|e| Fact::of_runs(&e))
}

/// The cell that is the top one in most runs (ties: the earliest run's), and in how many.
fn mode_cell(cells: &[Option<Cell>]) -> Option<((usize, usize, usize), usize)> {
    let key = |c: &Cell| (c.layer, c.position, c.head);
    cells
        .iter()
        .flatten()
        .map(|c| {
            let k = key(c);
            (k, cells.iter().flatten().filter(|d| key(d) == k).count())
        })
        .fold(
            None,
            |best: Option<((usize, usize, usize), usize)>, x| match best {
                Some(b) if b.1 >= x.1 => Some(b),
                _ => Some(x),
            },
        )
}

/// Sentences for both checkpoints of the pair over contrast `c`.
pub(super) fn patching(sm: &mut Summary, ctx: &Ctx, c: Contrast, notes: &mut Vec<String>) {
    for (who, cks) in [("a", &ctx.cas), ("b", &ctx.cbs)] {
        let pds: Vec<&PatchData> = cks.iter().filter_map(|ck| ck.patching.get(&c)).collect();
        if pds.len() == cks.len() && !pds.is_empty() {
            one(sm, ctx, who, cks, &pds, notes);
        }
    }
}

fn one(
    sm: &mut Summary,
    ctx: &Ctx,
    who: &str,
    cks: &[&CheckpointData],
    all: &[&PatchData],
    notes: &mut Vec<String>,
) {
    let s = ctx.s;
    let name = &cks[0].name;
    for (ck, pd) in cks.iter().zip(all) {
        let Some(sw) = &pd.sweeps else { continue };
        for (dir, ok) in [
            ("denoising", sw.denoise_sanity.ok),
            ("noising", sw.noise_sanity.ok),
        ] {
            if !ok {
                notes.push(format!(
                    "{}: the {dir} sanity check failed (patching the final residual at position {} did not reproduce the source run).",
                    ck.dir, pd.pos
                ));
            }
        }
    }
    let k = format!("patching.{who}");
    let pd0 = all[0];
    let clean: Vec<Est> = all.iter().map(|p| p.clean).collect();
    let corrupt: Vec<Est> = all.iter().map(|p| p.corrupt).collect();
    let gaps: Vec<Est> = all.iter().map(|p| p.gap).collect();
    let clean_t = sm.runs(&format!("{k}.clean_metric"), &clean, 2);
    let corrupt_t = sm.runs(&format!("{k}.corrupt_metric"), &corrupt, 2);
    let gap_t = sm.runs(&format!("{k}.gap"), &gaps, 2);
    let fp = pd0.contrast.position();
    let slot = pd0.tokens.get(fp).cloned().unwrap_or_default();
    let pos = pd0.pos;
    let pairs = sm.idx("settings.n_patch", pd0.n_pairs);
    let mut line = format!(
        "Patching in {name} ({slot} contrast, {pairs} prompt pairs per run): the metric is {clean_t} on clean and {corrupt_t} on corrupted prompts, a gap of {gap_t}"
    );
    let pds: Vec<&PatchSweeps> = all.iter().filter_map(|p| p.sweeps.as_ref()).collect();
    if pds.is_empty() {
        let m = sm.num("settings.min_gap", s.min_gap, 1);
        line += &format!(
            ": in every run its interval reaches 0 or it is below {m} logits, too small to localise."
        );
        sm.say(line);
        return;
    }
    if pds.len() < all.len() {
        line += &format!(
            " (too small to localise in {} of {} runs; what follows is over the other {})",
            sm.idx(&format!("{k}.skipped_runs"), all.len() - pds.len()),
            sm.idx("runs", all.len()),
            pds.len()
        );
    }
    let pd0 = pds[0];
    let pds = &pds[..];
    let n_layer = pd0.denoise.0.grid(Site::ResidPre).map_or(0, |g| g.shape[0]);
    let thr = s.carries;
    let half = format!("{} %", sm.num("settings.carries_percent", 100.0 * thr, 0));
    fn den(p: &PatchSweeps) -> &(Sweep, Option<SweepCi>) {
        &p.denoise
    }
    fn noi(p: &PatchSweeps) -> &(Sweep, Option<SweepCi>) {
        &p.noise
    }
    let resid = |l: usize, p: usize| all_runs(&shares(pds, den, Site::ResidPre, (l, p, 0)));
    let clears = |l: usize, p: usize| resid(l, p).is_some_and(|f| f.clears(thr));
    // Up to which layer the slot carries the gap (at that layer and every earlier one), and
    // from which layer the metric position does (at that layer and every later one).
    let last_slot = (0..n_layer).take_while(|&l| clears(l, fp)).last();
    let first_pos = (0..n_layer).rev().take_while(|&l| clears(l, pos)).last();
    line += ". Denoising the residual stream";
    match last_slot {
        Some(l) => {
            let share = resid(l, fp).map_or("undefined".into(), |f| {
                let scaled = Fact {
                    value: 100.0 * f.value,
                    lo: 100.0 * f.lo,
                    hi: 100.0 * f.hi,
                    ..f
                };
                sm.fact(&format!("{k}.slot_last_share_percent"), scaled, 0)
            });
            let (p, l) = (
                sm.idx(&format!("{k}.slot_position"), fp),
                sm.idx(&format!("{k}.slot_last_layer"), l),
            );
            line += &format!(
                " at the slot (position {p}) restores at least {half} of it, by its interval, at every layer up to {l} ({share} % at layer {l})"
            );
        }
        None => line += &format!(" at the slot does not restore {half} at layer 0 by its interval"),
    }
    match first_pos {
        Some(l) => {
            let share = resid(l, pos).map_or("undefined".into(), |f| {
                let scaled = Fact {
                    value: 100.0 * f.value,
                    lo: 100.0 * f.lo,
                    hi: 100.0 * f.hi,
                    ..f
                };
                sm.fact(&format!("{k}.pos_first_share_percent"), scaled, 0)
            });
            let (p, l) = (
                sm.idx(&format!("{k}.pos"), pos),
                sm.idx(&format!("{k}.pos_first_layer"), l),
            );
            line += &format!(
                ", and at the metric position {p} from layer {l} on ({share} % at layer {l})."
            );
        }
        None => {
            line += &format!(
                ", and at the metric position {} the last layer does not restore {half} by its interval.",
                sm.idx(&format!("{k}.pos"), pos)
            )
        }
    }
    sm.say(line);
    let n = pds.len();
    let mut parts = Vec::new();
    let top = |sm: &mut Summary,
               key: &str,
               pick: fn(&PatchSweeps) -> &(Sweep, Option<SweepCi>),
               sites: &[Site]|
     -> Option<Top> {
        // Per run, the best cell over `sites`.
        let best: Vec<Option<(Site, Cell)>> = pds
            .iter()
            .map(|p| {
                sites
                    .iter()
                    .filter_map(|&c| pick(p).0.best_cell(c, s.min_gap).map(|x| (c, x)))
                    .max_by(|x, y| x.1.share.total_cmp(&y.1.share))
            })
            .collect();
        // The most frequent (site, cell).
        let keyed: Vec<Option<Cell>> = best.iter().map(|b| b.map(|(_, c)| c)).collect();
        let (cell, count) = mode_cell(&keyed)?;
        let site = best
            .iter()
            .flatten()
            .find(|(_, c)| (c.layer, c.position, c.head) == cell)?
            .0;
        let sh = all_runs(&shares(pds, pick, site, cell)).map_or("undefined".into(), |f| {
            let scaled = Fact {
                value: 100.0 * f.value,
                lo: 100.0 * f.lo,
                hi: 100.0 * f.hi,
                ..f
            };
            format!("{} %", sm.fact(&format!("{key}.share_percent"), scaled, 0))
        });
        let seeds = format!(
            "{} of {}",
            sm.idx(&format!("{key}.top_in_runs"), count),
            sm.idx("runs", n)
        );
        Some(Top {
            site,
            cell,
            share: sh,
            seeds,
        })
    };
    if let Some(Top {
        cell: (l, p, h),
        share: sh,
        seeds,
        ..
    }) = top(sm, &format!("{k}.head"), den, &[Site::HeadOut])
    {
        parts.push(format!(
            "the head that restores most is layer {}, head {} at position {} (the top head in {seeds} runs; share {sh})",
            sm.idx(&format!("{k}.head.layer"), l),
            sm.idx(&format!("{k}.head.head"), h),
            sm.idx(&format!("{k}.head.position"), p),
        ));
    }
    if let Some(Top {
        cell: (l, p, _),
        share: sh,
        seeds,
        ..
    }) = top(sm, &format!("{k}.mlp"), den, &[Site::MlpOut])
    {
        parts.push(format!(
            "the MLP that restores most is layer {} at position {} (top in {seeds} runs; share {sh})",
            sm.idx(&format!("{k}.mlp.layer"), l),
            sm.idx(&format!("{k}.mlp.position"), p),
        ));
    }
    if let Some(Top {
        site,
        cell: (l, p, _),
        share: sh,
        seeds,
    }) = top(
        sm,
        &format!("{k}.necessary"),
        noi,
        &[Site::AttnOut, Site::MlpOut],
    ) {
        parts.push(format!(
            "noising {site} of layer {} at position {} removes the most of any attention or MLP output (top in {seeds} runs; share removed {sh})",
            sm.idx(&format!("{k}.necessary.layer"), l),
            sm.idx(&format!("{k}.necessary.position"), p),
        ));
    }
    if !parts.is_empty() {
        sm.say(format!("In {name}, {}.", parts.join("; ")));
    }
}

/// The most frequent top cell of a localisation over runs: its site, (layer, position, head),
/// the share it restores (as shown) and "k of n" runs it tops.
struct Top {
    site: Site,
    cell: (usize, usize, usize),
    share: String,
    seeds: String,
}
