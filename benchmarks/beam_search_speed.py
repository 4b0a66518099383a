"""Users/s of our trie-constrained beam search vs HF ``generate()`` with ``prefix_allowed_tokens_fn``.

An ml-100k-like setting: 1,349 items with random distinct L-token IDs (``--codebook-size`` codes per
level, 256 by default, plus an 8-way collision level when L = 4: ``ids.collision: dedup_level``;
L = 3 is ``reassign_last``, which keeps IDs L long), 20-item histories, the SPEC's 4+4-layer
d_model-128 T5 (random weights: speed does not depend on training), batches of 256 users. Both
searches get the same model, inputs and trie (generate's allowed-token lookups are precomputed into
a dict, its best case) and both include the encoder. It also reports how often the two agree on the
ranked items of the first users (ties aside they should agree exactly: both are the same beam search).

``--models tiger decoder_only`` adds the decoder-only model (``recommender.model: decoder_only``:
the prefix runs once, then one token per beam and step from its key/value cache); generate() is
compared for the T5 only, and only without ``level_softmax`` (generate() does not restrict each
step's softmax to its level). ``--params params.yaml`` builds both from the project's recommender
section (the defaults a run trains: 2+2 layers, level softmax) instead of the SPEC's T5.

    python benchmarks/beam_search_speed.py                      # CPU, and CUDA when present
    python benchmarks/beam_search_speed.py --beams 20 50 --id-length 3 4 --encoder-input tokens items
    # Beauty-sized: 12,101 items, 3 levels of 128 codes (+ the collision level), the project's models
    python benchmarks/beam_search_speed.py --items 12101 --codebook-size 128 --id-length 3 4 --beams 20 \
        --models decoder_only tiger --encoder-input items tokens --params params.yaml --no-generate
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import subprocess
import time

import numpy as np
import torch

from genrec_core.config import RecommenderParams, load_params
from genrec_core.recommender.beam_search import constrained_beam_search
from genrec_core.recommender.model import build_generative_model
from genrec_core.recommender.model_spec import MODEL_ALIASES, canonical_model_name, model_names
from genrec_core.recommender.trie import ItemTrie
from genrec_core.recommender.vocab import EOS, SemanticIdVocab


def make_setting(
    id_length: int,
    encoder_input: str,
    n_items: int,
    n_users: int,
    history: int,
    seed: int,
    codebook: int = 256,
    model_kind: str = "t5",
    base: RecommenderParams | None = None,
):
    rng = np.random.default_rng(seed)
    level_sizes = (codebook, codebook, codebook, 8)[:id_length] if id_length <= 4 else (codebook,) * id_length
    vocab = SemanticIdVocab(level_sizes)
    codes: set[tuple[int, ...]] = set()
    while len(codes) < n_items:
        codes.add(tuple(int(rng.integers(0, s)) for s in level_sizes))
    items = torch.as_tensor(vocab.codes_to_tokens(np.array(sorted(codes))))
    torch.manual_seed(seed)
    # item_embedding off: random IDs without an item table (one lookup per history item when on)
    params = dataclasses.replace(
        base or RecommenderParams(), model=model_kind, encoder_input=encoder_input, pack_examples=0, user_tokens=0, item_embedding=False
    )
    if params.dropout == "auto":  # ranking only: dropout is off in eval mode anyway
        params = dataclasses.replace(params, dropout=0.0)
    model = build_generative_model(params, vocab).eval()
    hist = items[torch.as_tensor(rng.integers(0, n_items, size=(n_users, history)))]  # [U, H, L]
    if encoder_input == "tokens":
        input_ids = torch.cat([hist.flatten(1), torch.full((n_users, 1), EOS)], dim=1)
    else:
        eos = torch.zeros(n_users, 1, id_length, dtype=torch.long)
        eos[:, 0, 0] = EOS
        input_ids = torch.cat([hist, eos], dim=1)
    mask = torch.ones(input_ids.shape[:2], dtype=torch.long)
    return vocab, items, model, input_ids, mask


def allowed_tokens_fn(items: torch.Tensor):
    """HF ``prefix_allowed_tokens_fn`` from a dict of every prefix of every ID (start token dropped)."""
    table: dict[tuple[int, ...], set[int]] = {}
    for row in items.tolist():
        for d in range(len(row)):
            table.setdefault(tuple(row[:d]), set()).add(row[d])
    allowed = {k: sorted(v) for k, v in table.items()}
    eos_only = [EOS]

    def fn(batch_id: int, sent: torch.Tensor) -> list[int]:
        return allowed.get(tuple(sent[1:].tolist()), eos_only)

    return fn


def hf_generate(model, input_ids, mask, trie: ItemTrie, fn, beam: int):
    """HF beam search (scores summed: length_penalty 0), mapped back to item indices [B, beam]."""
    with torch.inference_mode():
        out = model.t5.generate(
            inputs_embeds=model.input_embeddings(input_ids),
            attention_mask=mask,
            num_beams=beam,
            num_return_sequences=beam,
            max_new_tokens=trie.id_length,
            prefix_allowed_tokens_fn=fn,
            do_sample=False,
            length_penalty=0.0,
            output_scores=True,
            return_dict_in_generate=True,
            use_cache=True,
        )
    b = input_ids.shape[0]
    items = trie.lookup(out.sequences[:, 1 : 1 + trie.id_length].to(trie.device)).view(b, beam)
    return items, out.sequences_scores.view(b, beam).float()


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--beams", type=int, nargs="+", default=[20, 50])
    ap.add_argument("--id-length", type=int, nargs="+", default=[3, 4])
    ap.add_argument("--encoder-input", nargs="+", default=["tokens"], choices=["tokens", "items"])
    ap.add_argument("--items", type=int, default=1349)
    ap.add_argument("--codebook-size", type=int, default=256, help="codes per level (L = 4: the 4th, collision level, has 8)")
    ap.add_argument("--models", nargs="+", default=["t5"], choices=[*model_names("generative"), *MODEL_ALIASES])
    ap.add_argument(
        "--params", default=None, help="build the models from this params.yaml's recommender section (default: the SPEC's T5, the dataclass defaults)"
    )
    ap.add_argument("--no-generate", action="store_true", help="skip HF generate() (it is compared for the T5 only)")
    ap.add_argument("--users", type=int, default=256, help="one batch of this many users")
    ap.add_argument("--history", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--check-users", type=int, default=16, help="users whose rankings are compared")
    ap.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when present")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])

    base = load_params(args.params).recommender if args.params else None
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; {args.items} items, {args.codebook_size} codes per level, {args.users} "
        f"users/batch, {args.history}-item histories; "
        f"models: {'the recommender section of ' + args.params if args.params else 'the SPEC T5 (dataclass defaults)'}; uptime: {load}"
    )
    header = (
        f"{'device':6} {'model':12} {'input':6} {'L':>2} {'beam':>4} | {'ours users/s':>12} {'generate users/s':>16} {'speed-up':>8} | "
        f"{'same top-1':>10} {'same top-K':>10} {'max |d score|':>13}"
    )
    print(header)
    print("-" * len(header))
    for device in devices:
        for model_kind in args.models:
            for encoder_input in args.encoder_input:
                for id_length in args.id_length:
                    vocab, items, model, input_ids, mask = make_setting(
                        id_length, encoder_input, args.items, args.users, args.history, 0, args.codebook_size, model_kind, base
                    )
                    model.to(device)
                    input_ids, mask = input_ids.to(device), mask.to(device)
                    trie = ItemTrie.build(items, vocab.size).to(device)
                    # generate() knows nothing of level_softmax (step l's softmax over level l's codes): compared without it only
                    compare = canonical_model_name(model_kind) == "t5" and not args.no_generate and not (base is not None and base.level_softmax)
                    fn = allowed_tokens_fn(items) if compare else None
                    for beam in args.beams:
                        ours = lambda: constrained_beam_search(model, input_ids, mask, trie, beam)  # noqa: E731, B023 -- timed in this pass
                        t_ours = timed(ours, args.repeats)
                        if not compare:
                            print(
                                f"{device:6} {model_kind:12} {encoder_input:6} {id_length:>2} {beam:>4} | {args.users / t_ours:>12.0f} {'-':>16} "
                                f"{'-':>8} | {'-':>10} {'-':>10} {'-':>13}",
                                flush=True,
                            )
                            continue
                        theirs = lambda: hf_generate(model, input_ids, mask, trie, fn, beam)  # noqa: E731, B023 -- timed in this pass
                        t_hf = timed(theirs, args.repeats)
                        n = args.check_users
                        res = constrained_beam_search(model, input_ids[:n], mask[:n], trie, beam)
                        hf_items, hf_scores = hf_generate(model, input_ids[:n], mask[:n], trie, fn, beam)
                        same_top1 = (res.items[:, 0] == hf_items[:, 0]).float().mean().item()
                        same_topk = (res.items == hf_items).all(dim=1).float().mean().item()
                        diff = (res.scores - hf_scores).abs().max().item()
                        print(
                            f"{device:6} {model_kind:12} {encoder_input:6} {id_length:>2} {beam:>4} | {args.users / t_ours:>12.0f} {args.users / t_hf:>16.0f} "
                            f"{t_hf / t_ours:>7.1f}x | {same_top1:>10.0%} {same_topk:>10.0%} {diff:>13.2e}",
                            flush=True,
                        )


if __name__ == "__main__":
    main()
