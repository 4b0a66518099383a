"""The item trie must accept exactly the table's IDs and prefixes, and nothing else."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from genrec_core.recommender.trie import ItemTrie
from genrec_core.recommender.vocab import SemanticIdVocab


def _random_table(seed: int, level_sizes: tuple[int, ...], n: int) -> tuple[SemanticIdVocab, torch.Tensor]:
    """``n`` distinct random IDs as token ids (level offsets applied), in random order."""
    vocab = SemanticIdVocab(level_sizes)
    rng = np.random.default_rng(seed)
    codes = set()
    while len(codes) < n:
        codes.add(tuple(int(rng.integers(0, s)) for s in level_sizes))
    codes_arr = np.array(sorted(codes))[rng.permutation(n)]
    return vocab, torch.as_tensor(vocab.codes_to_tokens(codes_arr))


def _check_against_python(trie: ItemTrie, items: torch.Tensor, vocab_size: int) -> None:
    """Every prefix (and full ID) over the whole token space: accepted iff the table has it."""
    table = {tuple(row): i for i, row in enumerate(items.tolist())}
    length = items.shape[1]
    for depth in range(1, length + 1):
        prefixes = {key[:depth] for key in table}
        space = torch.tensor(list(itertools.product(range(vocab_size), repeat=depth)))
        nodes = trie.walk(space)
        expected = torch.tensor([tuple(p) in prefixes for p in space.tolist()])
        assert torch.equal(nodes >= 0, expected), f"depth {depth}"
        # Nodes of the right depth, one per distinct prefix.
        found = nodes[expected]
        assert bool(((found >= trie.level_start[depth]) & (found < trie.level_start[depth + 1])).all())
        assert found.unique().numel() == len(prefixes)
        # Allowed next tokens of each prefix node.
        if depth < length:
            mask = trie.allowed_mask(found)
            for prefix, row in zip(space[expected].tolist(), mask):
                allowed = {key[depth] for key in table if key[:depth] == tuple(prefix)}
                assert set(torch.nonzero(row).flatten().tolist()) == allowed
                assert trie.allowed_tokens(int(trie.walk(torch.tensor([prefix]))[0])) == sorted(allowed)
    full = torch.tensor(list(itertools.product(range(vocab_size), repeat=length)))
    looked = trie.lookup(full)
    expected_items = torch.tensor([table.get(tuple(row), -1) for row in full.tolist()])
    assert torch.equal(looked, expected_items)


@pytest.mark.parametrize("seed", range(4))
def test_exhaustive_small_tables(seed):
    vocab_size, length = 6, 3
    rng = np.random.default_rng(seed)
    space = list(itertools.product(range(vocab_size), repeat=length))
    n = int(rng.integers(1, 60))
    items = torch.tensor([space[i] for i in rng.choice(len(space), size=n, replace=False)])
    trie = ItemTrie.build(items, vocab_size)
    _check_against_python(trie, items, vocab_size)
    assert trie.num_items == n


def test_exhaustive_root_allowed_tokens_and_first_token_only():
    items = torch.tensor([[2, 3, 4], [2, 3, 5], [4, 2, 2], [2, 5, 4]])
    trie = ItemTrie.build(items, 6)
    assert trie.allowed_tokens(0) == [2, 4]
    assert trie.max_children == (2, 2, 2)
    _check_against_python(trie, items, 6)


def test_random_ids_with_real_offsets():
    vocab, items = _random_table(7, (32, 16, 8, 4), 3000)
    trie = ItemTrie.build(items, vocab.size)
    assert torch.equal(trie.lookup(items), torch.arange(3000))
    rng = np.random.default_rng(1)
    queries = torch.as_tensor(rng.integers(0, vocab.size, size=(20000, 4)))
    # Near misses: valid IDs with one token replaced by another code of the same level (sometimes still valid).
    mutated = items[rng.integers(0, 3000, 10000)].clone()
    level = rng.integers(0, 4, 10000)
    offsets, sizes = vocab.level_offsets, np.array(vocab.level_sizes)
    mutated[np.arange(10000), level] = torch.as_tensor(offsets[level] + rng.integers(0, sizes[level]))
    queries = torch.cat([queries, mutated, items])
    table = {tuple(row): i for i, row in enumerate(items.tolist())}
    expected = torch.tensor([table.get(tuple(row), -1) for row in queries.tolist()])
    assert (expected >= 0).sum() > 1000 and (expected < 0).sum() > 1000  # both kinds tested
    assert torch.equal(trie.lookup(queries), expected)


def test_csr_layout_is_consistent():
    vocab, items = _random_table(3, (8, 8, 8), 300)
    trie = ItemTrie.build(items, vocab.size)
    internal = torch.arange(trie.first_leaf)
    children, valid = trie.children(internal)
    for node, row, ok in zip(internal.tolist(), children, valid):
        kids = row[ok]
        assert kids.numel() == int(trie.child_count[node]) > 0
        assert torch.equal(kids, torch.arange(int(trie.child_start[node]), int(trie.child_start[node]) + kids.numel()))
        tokens = trie.node_token[kids]
        assert bool((tokens[1:] > tokens[:-1]).all())
        assert torch.equal(trie.next_node(torch.full_like(tokens, node), tokens), kids)
    assert bool((trie.child_count[trie.first_leaf :] == 0).all())
    assert sorted(trie.leaf_item.tolist()) == list(range(300))
    for depth in range(3):
        level = slice(int(trie.level_start[depth]), int(trie.level_start[depth + 1]))
        assert trie.max_children[depth] == int(trie.child_count[level].max())
    leaves = torch.arange(trie.first_leaf, trie.num_nodes)
    assert sorted(trie.leaf_to_item(leaves).tolist()) == list(range(300))
    assert trie.leaf_to_item(torch.tensor([-1, 0, trie.first_leaf - 1])).tolist() == [-1, -1, -1]


def test_next_node_rejects_out_of_range_inputs():
    trie = ItemTrie.build(torch.tensor([[2, 3], [3, 2]]), 4)
    nodes = torch.tensor([0, 0, 0, -1, 1, 99, 0])
    tokens = torch.tensor([2, -1, 4, 2, 3, 2, 1000])
    out = trie.next_node(nodes, tokens)
    assert out[0] >= 0 and out[4] >= 0
    assert out[[1, 2, 3, 5, 6]].tolist() == [-1] * 5
    assert trie.lookup(torch.tensor([[2, 3], [3, 2], [2, 2], [3, 3], [0, 0]])).tolist() == [0, 1, -1, -1, -1]


def test_single_item_and_length_one():
    trie = ItemTrie.build(torch.tensor([[5]]), 8)
    assert trie.lookup(torch.arange(8)[:, None]).tolist() == [-1] * 5 + [0, -1, -1]
    trie = ItemTrie.build(torch.tensor([[4, 3, 2]]), 8)
    _check_against_python(trie, torch.tensor([[4, 3, 2]]), 8)


def test_invalid_tables_are_refused():
    with pytest.raises(ValueError, match="duplicate"):
        ItemTrie.build(torch.tensor([[2, 3, 4], [2, 3, 5], [2, 3, 4]]), 8)
    with pytest.raises(ValueError, match="lie in"):
        ItemTrie.build(torch.tensor([[2, 3, 8]]), 8)
    with pytest.raises(ValueError, match="non-empty"):
        ItemTrie.build(torch.zeros(0, 3, dtype=torch.long), 8)
    trie = ItemTrie.build(torch.tensor([[2, 3, 4]]), 8)
    with pytest.raises(ValueError, match="tokens"):
        trie.lookup(torch.tensor([[2, 3]]))


def test_to_device_copy_keeps_answers():
    vocab, items = _random_table(0, (4, 4, 4), 40)
    trie = ItemTrie.build(items, vocab.size).to("cpu")
    assert torch.equal(trie.lookup(items), torch.arange(40))
