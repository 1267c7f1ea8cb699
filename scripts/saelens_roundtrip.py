"""SAELens round trip of a feedlens SAE (issue 15): load the folder with sae_lens, encode the
activations feedlens exported, and compare latents and reconstruction with feedlens's own.

Needs `pip install sae-lens safetensors torch` (not run in CI). Usage, from the repository root:

    cargo run --release -- sae train checkpoints/seed-0/rlhf --out /tmp/sae-rlhf
    cargo run --release -- latents /tmp/sae-rlhf --episodes 500 --export
    python3 scripts/saelens_roundtrip.py /tmp/sae-rlhf

Exit status 0 when SAELens's latents match feedlens's to 1e-4 (absolute, f32).
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from sae_lens import SAE


def main(folder: str) -> int:
    d = Path(folder)
    sae = SAE.load_from_disk(str(d), device="cpu")
    exp = load_file(str(d / "latents" / "latent_acts.safetensors"))
    x, ours = exp["x"], exp["acts"]
    with torch.no_grad():
        theirs = sae.encode(x)
        recon = sae.decode(theirs)
    diff = (theirs - ours).abs().max().item()
    active = (ours > 0).float().sum(-1).mean().item()
    ev = 1 - ((recon - x) ** 2).sum().item() / ((x - x.mean(0)) ** 2).sum().item()
    print(f"max |latents diff| {diff:.3g}; L0 {active:.2f}; explained variance {ev:.4f}")
    return 0 if diff <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
