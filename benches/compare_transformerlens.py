#!/usr/bin/env python3
"""Time TransformerLens's get_act_patch_resid_pre against `feedlens patch` on the same checkpoint
directory, same prompts, same thread count; print both times, the ratio, and check agreement.

TransformerLens is timed on the sweep alone (model already loaded, torch.no_grad, tqdm off);
feedlens is timed as a whole process (start-up, checkpoint load, sanity forward and JSON write
included). Each side runs --repeats times and the best time counts.

Needs: pip install torch transformers "transformer-lens==3.9.0" (3.9.0 is the last release with
HookedTransformer), and a release build of feedlens (cargo build --release).

    python benches/compare_transformerlens.py --models toy,gpt2-small --threads 2
    python benches/compare_transformerlens.py --ckpt checkpoints/base --len 11

Random models are generated into --workdir (not committed): toy = 4 layers x 64 wide (the zoo's
shape), d128 = 4 layers x 128, gpt2-small = 12 layers x 768, vocab 50257; pythia-160m = GPT-NeoX
12 layers x 768, 12 heads, partial rotary 0.25, parallel residual, untied, vocab 50304;
smollm-135m = Llama 30 layers x 576, 9 heads with 3 key/value heads, SwiGLU 1536, tied, vocab
49152. The TransformerLens models of the other families are built as
tests/fixtures/families/make.py builds them (its tl_config / build_tl).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

SHAPES = {
    # name: (n_layer, n_embd, n_head, vocab_size, n_positions)
    "toy": (4, 64, 4, 32, 32),
    "d128": (4, 128, 4, 32, 32),
    "gpt2-small": (12, 768, 12, 50257, 1024),
    "pythia-160m": (12, 768, 12, 50304, 2048),
    "smollm-135m": (30, 576, 9, 49152, 2048),
}
# The family of each shape (default gpt2).
KIND = {"pythia-160m": "neox", "smollm-135m": "llama"}


def family_tools():
    """tl_config / build_tl of the fixture script (one way to build TransformerLens models)."""
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location(
        "make_families", os.path.join(here, "..", "tests", "fixtures", "families", "make.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def set_threads(n):
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"):
        os.environ[k] = str(n)
    os.environ["TQDM_DISABLE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"


def make_model(name, root):
    """A random HF GPT-2 directory of the named shape (seeded), written once."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    path = os.path.join(root, name)
    if os.path.exists(os.path.join(path, "model.safetensors")):
        return path
    n_layer, n_embd, n_head, vocab, n_pos = SHAPES[name]
    torch.manual_seed(0)
    kind = KIND.get(name, "gpt2")
    if kind == "neox":
        from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

        cfg = GPTNeoXConfig(num_hidden_layers=n_layer, hidden_size=n_embd,
                            num_attention_heads=n_head, intermediate_size=4 * n_embd,
                            vocab_size=vocab, max_position_embeddings=n_pos, rotary_pct=0.25,
                            rotary_emb_base=10000, use_parallel_residual=True, hidden_act="gelu",
                            tie_word_embeddings=False)
        GPTNeoXForCausalLM(cfg).eval().save_pretrained(path)
        return path
    if kind == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(num_hidden_layers=n_layer, hidden_size=n_embd, num_attention_heads=n_head,
                          num_key_value_heads=3, intermediate_size=1536, vocab_size=vocab,
                          max_position_embeddings=n_pos, rope_theta=10000.0, rms_norm_eps=1e-5,
                          tie_word_embeddings=True)
        LlamaForCausalLM(cfg).eval().save_pretrained(path)
        return path
    cfg = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=vocab,
                     n_positions=n_pos, activation_function="gelu_new",
                     bos_token_id=min(50256, vocab - 1), eos_token_id=min(50256, vocab - 1))
    GPT2LMHeadModel(cfg).eval().save_pretrained(path)
    return path


def load_tl(path, kind="gpt2"):
    if kind != "gpt2":
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(path).eval()
        tl, _ = family_tools().build_tl(kind, hf, [])
        return tl, hf.config.vocab_size
    import torch
    from transformers import GPT2LMHeadModel
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights

    hf = GPT2LMHeadModel.from_pretrained(path).eval()
    hc = hf.config
    cfg = HookedTransformerConfig(
        n_layers=hc.n_layer, d_model=hc.n_embd, n_heads=hc.n_head, d_head=hc.n_embd // hc.n_head,
        d_mlp=hc.n_inner or 4 * hc.n_embd, n_ctx=hc.n_positions, d_vocab=hc.vocab_size,
        act_fn=hc.activation_function, eps=hc.layer_norm_epsilon, normalization_type="LN",
        positional_embedding_type="standard", original_architecture="GPT2LMHeadModel",
        tokenizer_name=None, default_prepend_bos=False, init_weights=False, device="cpu",
        dtype=torch.float32)
    tl = HookedTransformer(cfg)
    tl.load_and_process_state_dict(convert_gpt2_weights(hf, cfg), fold_ln=False,
                                   center_writing_weights=False, center_unembed=False,
                                   fold_value_biases=False)
    return tl.eval(), hc.vocab_size


def prompts(vocab, length, seed):
    """A clean prompt of random ids and a corrupt one differing at position length // 4."""
    import random

    rng = random.Random(seed)
    clean = [rng.randrange(vocab) for _ in range(length)]
    corrupt = list(clean)
    p = length // 4
    corrupt[p] = (clean[p] + 1 + rng.randrange(vocab - 1)) % vocab
    return clean, corrupt


def run_tl(tl, clean, corrupt, tok_a, tok_b, repeats):
    import torch
    from transformer_lens import patching

    clean_t = torch.tensor([clean])
    corrupt_t = torch.tensor([corrupt])

    def metric(logits):
        return logits[0, -1, tok_a] - logits[0, -1, tok_b]

    best, out = float("inf"), None
    with torch.no_grad():
        _, cache = tl.run_with_cache(clean_t)
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = patching.get_act_patch_resid_pre(tl, corrupt_t, cache, metric)
            best = min(best, time.perf_counter() - t0)
    return best, out.numpy()


def run_feedlens(exe, path, clean, corrupt, tok_a, tok_b, repeats, workdir):
    out = os.path.join(workdir, "feedlens-patch.json")
    cmd = [exe, "patch", path, "--clean-ids", ",".join(map(str, clean)),
           "--corrupt-ids", ",".join(map(str, corrupt)), "--metric", f"logit-diff:{tok_a},{tok_b}",
           "--hooks", "resid_pre", "--json", out, "--force"]
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t0)
    with open(out) as f:
        res = json.load(f)
    return best, res["results"]["resid_pre"]["raw"], res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="toy,gpt2-small", help="comma-separated: " + ",".join(SHAPES))
    ap.add_argument("--ckpt", action="append", default=[], help="an existing checkpoint directory (repeatable)")
    ap.add_argument("--len", type=int, default=32, help="prompt length in tokens")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tl-repeats", type=int, default=None, help="default: --repeats (1 for the ~100 M-parameter shapes)")
    ap.add_argument("--feedlens", default="target/release/feedlens")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "feedlens-vs-tl"))
    args = ap.parse_args()
    set_threads(args.threads)
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    os.makedirs(args.workdir, exist_ok=True)
    targets = [(os.path.basename(os.path.normpath(c)), c) for c in args.ckpt]
    targets += [(m, make_model(m, args.workdir)) for m in args.models.split(",") if m]
    ok = True
    print(f"threads {args.threads}, prompt length {args.len}, torch {torch.__version__}")
    for name, path in targets:
        tl, vocab = load_tl(path, KIND.get(name, "gpt2"))
        clean, corrupt = prompts(vocab, args.len, seed=1)
        tok_a, tok_b = 1 % vocab, 2 % vocab
        big = name in ("gpt2-small", "pythia-160m", "smollm-135m")
        tl_rep = args.tl_repeats or (1 if big else args.repeats)
        t_tl, ref = run_tl(tl, clean, corrupt, tok_a, tok_b, tl_rep)
        del tl
        t_fl, got, _ = run_feedlens(args.feedlens, path, clean, corrupt, tok_a, tok_b,
                                    args.repeats, args.workdir)
        got = np.array(got, dtype=np.float32)
        diff = float(np.abs(got - ref).max())
        scale = float(np.abs(ref).max()) or 1.0
        agree = diff <= 1e-4 * max(1.0, scale)
        ok &= agree
        print(f"{name:<12} TransformerLens sweep {t_tl:8.3f} s | feedlens whole process {t_fl:7.3f} s"
              f" | ratio {t_tl / t_fl:6.1f}x | max |diff| {diff:.2e} ({'agree' if agree else 'DISAGREE'})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
