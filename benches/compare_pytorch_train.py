#!/usr/bin/env python3
"""Time pretraining steps in PyTorch and in feedlens side by side, in one run, on the same thread
count: the zoo's pretraining shape (GPT-2, 4 layers x 64, 4 heads, vocab 32, context 32), batch
64 sequences of 18 tokens (the toy world's episode length), next-token cross-entropy, AdamW
(lr 2e-3, betas 0.9/0.999, eps 1e-8, weight decay 0), global gradient-norm clip 1.0, linear
warm-up then cosine decay to a tenth. Prints both per-step times and the ratio.

PyTorch side: transformers' GPT2LMHeadModel (dropout 0, gelu_new, tied head), random token
batches drawn up front (the data do not change the arithmetic), timed from the first step to
the last inside the process after one untimed warm-up step; feedlens side: the whole
`feedlens train pretrain --steps N` process (start-up, the toy world's sampling of its batches,
the checkpoint write included), so its per-step time is an upper bound. Each side runs
--repeats times and the best counts.

Needs: pip install torch transformers; a release build of feedlens (cargo build --release).

    python benches/compare_pytorch_train.py --steps 400 --threads 2
"""
import argparse
import os
import subprocess
import tempfile
import time

BATCH, SEQ, VOCAB, CTX = 64, 18, 32, 32


def set_threads(n):
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"):
        os.environ[k] = str(n)


def lr_at(step, steps, lr, warmup, lr_min=0.1):
    import math

    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (lr_min + (1 - lr_min) * 0.5 * (1 + math.cos(math.pi * t)))


def run_torch(steps, threads, seed=0):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=4, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=CTX,
                     activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, bos_token_id=1, eos_token_id=2)
    model = GPT2LMHeadModel(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.0)
    data = torch.randint(0, VOCAB, (steps + 1, BATCH, SEQ))

    def step(i):
        for g in opt.param_groups:
            g["lr"] = lr_at(i, steps, 2e-3, 200)
        x = data[i]
        logits = model(x).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    step(steps)  # warm-up, not timed
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    return (time.perf_counter() - t0) / steps


def run_feedlens(exe, steps, workdir):
    out = os.path.join(workdir, "pretrain")
    cmd = [exe, "train", "pretrain", "--steps", str(steps), "--out", out, "--force"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - t0) / steps


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--feedlens", default="target/release/feedlens")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "feedlens-vs-torch"))
    args = ap.parse_args()
    set_threads(args.threads)
    os.makedirs(args.workdir, exist_ok=True)
    import torch

    t_torch = min(run_torch(args.steps, args.threads) for _ in range(args.repeats))
    t_fl = min(run_feedlens(args.feedlens, args.steps, args.workdir) for _ in range(args.repeats))
    print(f"threads {args.threads}, {args.steps} steps of batch {BATCH} x {SEQ} tokens, "
          f"torch {torch.__version__}")
    print(f"PyTorch {1000 * t_torch:.1f} ms/step (steps only) | feedlens {1000 * t_fl:.1f} ms/step "
          f"(whole process) | PyTorch time / feedlens time {t_torch / t_fl:.2f}")


if __name__ == "__main__":
    main()
