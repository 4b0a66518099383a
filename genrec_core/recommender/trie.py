"""A tensorised prefix trie of the valid item IDs, for constrained decoding (SPEC section 4).

Beam search must only ever produce IDs that name an item, so every decoding step restricts each
beam to the children of its trie node. The trie is stored as flat tensors so that a step is a few
gathers on the model's device, for a whole batch of beams at once, with memory linear in the
number of nodes (a dense [nodes, vocab] mask would take ~1 GB for a million items):

- nodes are numbered level by level, in lexicographic order of their prefixes: the root is 0,
  then the distinct 1-token prefixes, then the distinct 2-token prefixes, ... then the leaves
  (the full L-token IDs). Hence the children of any node form one contiguous run of node ids
  (a CSR layout): ``child_start[n] .. child_start[n] + child_count[n] - 1``, sorted by token;
- ``node_token[n]`` is the last token of node n's prefix (the edge label from its parent);
- ``edge_keys[n - 1] = parent[n] * vocab_size + node_token[n]`` is sorted ascending, so
  ``next_node(node, token)`` is one ``torch.searchsorted``;
- ``leaf_item[n - first_leaf]`` is the item index (row of ``item_tokens``) of leaf n.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ItemTrie:
    """The prefix trie of ``item_tokens`` [N, L] (distinct rows); build with ``ItemTrie.build``."""

    vocab_size: int
    id_length: int
    num_items: int
    level_start: torch.Tensor  # [L + 2]: nodes of depth d are level_start[d] .. level_start[d + 1] - 1
    node_token: torch.Tensor  # [num_nodes] last token of each node's prefix (-1 for the root)
    child_start: torch.Tensor  # [num_nodes] first child's node id (num_nodes for leaves)
    child_count: torch.Tensor  # [num_nodes] number of children (0 for leaves)
    edge_keys: torch.Tensor  # [num_nodes - 1] parent * vocab_size + token of nodes 1.., ascending
    leaf_item: torch.Tensor  # [N] item index of leaf first_leaf + i
    max_children: tuple[int, ...]  # [L] widest branching at each depth 0 .. L - 1 (the step's width)

    @classmethod
    def build(cls, item_tokens: torch.Tensor, vocab_size: int) -> ItemTrie:
        """Trie of the rows of ``item_tokens`` (token ids in [0, vocab_size)); duplicate IDs are an error."""
        tokens = torch.as_tensor(item_tokens, dtype=torch.long).cpu()
        if tokens.dim() != 2 or tokens.shape[0] == 0 or tokens.shape[1] == 0:
            raise ValueError(f"item_tokens must be a non-empty [N, L] tensor, got shape {tuple(tokens.shape)}")
        if int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size:
            raise ValueError(f"item tokens must lie in [0, {vocab_size}), got [{int(tokens.min())}, {int(tokens.max())}]")
        n, length = tokens.shape
        # Lexicographic order of the IDs: a stable sort by each column, last column first.
        order = torch.arange(n)
        for level in reversed(range(length)):
            order = order[torch.sort(tokens[order, level], stable=True).indices]
        sorted_tokens = tokens[order]

        # new_prefix[i, d]: row i starts a new distinct prefix of length d + 1 (it differs from row i-1 in its first d+1 tokens).
        differs = torch.ones(n, length, dtype=torch.bool)
        if n > 1:
            differs[1:] = sorted_tokens[1:] != sorted_tokens[:-1]
        new_prefix = torch.cumsum(differs.long(), dim=1) > 0
        if n > 1 and not bool(new_prefix[1:, -1].all()):
            dup = int(torch.nonzero(~new_prefix[1:, -1])[0, 0]) + 1
            raise ValueError(f"duplicate item ID {sorted_tokens[dup].tolist()} (items {int(order[dup - 1])} and {int(order[dup])})")

        counts = new_prefix.sum(dim=0)  # distinct prefixes per length 1..L
        level_sizes = torch.cat([torch.ones(1, dtype=torch.long), counts])
        level_start = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(level_sizes, 0)])
        num_nodes = int(level_start[-1])

        node_token = torch.full((num_nodes,), -1, dtype=torch.long)
        parent = torch.zeros(num_nodes, dtype=torch.long)
        row_node = torch.zeros(n, dtype=torch.long)  # each sorted row's node at the previous depth (root first)
        for d in range(length):
            # Node id of each row's prefix of length d + 1: running count of new prefixes, offset by the level's start.
            node_of_row = level_start[d + 1] + torch.cumsum(new_prefix[:, d].long(), 0) - 1
            first = new_prefix[:, d]
            node_token[node_of_row[first]] = sorted_tokens[first, d]
            parent[node_of_row[first]] = row_node[first]
            row_node = node_of_row
        leaf_item = order  # leaves are in sorted-row order, one per row

        child_count = torch.bincount(parent[1:], minlength=num_nodes)
        # Children of a node are contiguous (ordered by parent, then token); the first child follows the previous nodes' children.
        child_start = 1 + torch.cumsum(child_count, 0) - child_count
        child_start[child_count == 0] = num_nodes
        edge_keys = parent[1:] * vocab_size + node_token[1:]
        assert bool((edge_keys[1:] > edge_keys[:-1]).all()), "trie edges not sorted"
        max_children = tuple(int(child_count[level_start[d] : level_start[d + 1]].max()) for d in range(length))
        return cls(vocab_size, length, n, level_start, node_token, child_start, child_count, edge_keys, leaf_item, max_children)

    @property
    def num_nodes(self) -> int:
        return int(self.node_token.shape[0])

    @property
    def first_leaf(self) -> int:
        return int(self.level_start[self.id_length])

    @property
    def device(self) -> torch.device:
        return self.node_token.device

    def to(self, device: torch.device | str) -> ItemTrie:
        """A copy whose tensors live on ``device`` (decoding gathers from them every step)."""
        move = {k: getattr(self, k).to(device) for k in ("level_start", "node_token", "child_start", "child_count", "edge_keys", "leaf_item")}
        return ItemTrie(self.vocab_size, self.id_length, self.num_items, max_children=self.max_children, **move)

    def next_node(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Child of each node along each token (same shapes), or -1 where that edge does not exist."""
        nodes = torch.as_tensor(nodes, dtype=torch.long, device=self.device)
        tokens = torch.as_tensor(tokens, dtype=torch.long, device=self.device)
        ok = (nodes >= 0) & (tokens >= 0) & (tokens < self.vocab_size)
        keys = torch.where(ok, nodes * self.vocab_size + tokens, torch.full_like(nodes, -1))
        pos = torch.searchsorted(self.edge_keys, keys).clamp(max=self.edge_keys.numel() - 1)
        found = ok & (self.edge_keys[pos] == keys)
        return torch.where(found, pos + 1, torch.full_like(pos, -1))

    def walk(self, prefixes: torch.Tensor) -> torch.Tensor:
        """Node of each prefix [M, T] (T <= L), or -1 where the prefix is not a prefix of any ID."""
        prefixes = torch.as_tensor(prefixes, dtype=torch.long, device=self.device)
        nodes = torch.zeros(prefixes.shape[0], dtype=torch.long, device=self.device)
        for t in range(prefixes.shape[1]):
            nodes = self.next_node(nodes, prefixes[:, t])
        return nodes

    def lookup(self, item_tokens: torch.Tensor) -> torch.Tensor:
        """Item index of each full ID [M, L], or -1 where it is not a valid ID."""
        item_tokens = torch.as_tensor(item_tokens, dtype=torch.long, device=self.device)
        if item_tokens.shape[-1] != self.id_length:
            raise ValueError(f"IDs have {item_tokens.shape[-1]} tokens, the trie {self.id_length}")
        nodes = self.walk(item_tokens)
        leaf = nodes >= self.first_leaf
        return torch.where(leaf, self.leaf_item[(nodes - self.first_leaf).clamp(min=0)], torch.full_like(nodes, -1))

    def leaf_to_item(self, nodes: torch.Tensor) -> torch.Tensor:
        """Item index of leaf nodes, -1 for anything else (e.g. the -1 of a dead beam)."""
        leaf = nodes >= self.first_leaf
        return torch.where(leaf, self.leaf_item[(nodes - self.first_leaf).clamp(min=0)], torch.full_like(nodes, -1))

    def children(self, nodes: torch.Tensor, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded children of each node: (child node ids [..., width], valid [..., width]).

        ``width`` defaults to the widest node anywhere; beam search passes the step's
        ``max_children[depth]``. Invalid slots (and every slot of a node < 0) hold child id 0.
        """
        nodes = torch.as_tensor(nodes, dtype=torch.long, device=self.device)
        width = max(self.max_children) if width is None else width
        safe = nodes.clamp(min=0)
        slots = torch.arange(width, device=self.device)
        valid = (slots < self.child_count[safe].unsqueeze(-1)) & (nodes >= 0).unsqueeze(-1)
        ids = torch.where(valid, self.child_start[safe].unsqueeze(-1) + slots, torch.zeros_like(slots))
        return ids, valid

    def allowed_tokens(self, node: int) -> list[int]:
        """The next tokens allowed after one node (for HF ``prefix_allowed_tokens_fn``)."""
        start, count = int(self.child_start[node]), int(self.child_count[node])
        return self.node_token[start : start + count].tolist() if count else []

    def allowed_mask(self, nodes: torch.Tensor) -> torch.Tensor:
        """Dense [..., vocab_size] boolean mask of the next tokens allowed after each node."""
        ids, valid = self.children(nodes)
        # Invalid slots write into a spare last column, dropped after, so no write races a real one.
        mask = torch.zeros(*ids.shape[:-1], self.vocab_size + 1, dtype=torch.bool, device=self.device)
        tokens = torch.where(valid, self.node_token[ids], torch.full_like(ids, self.vocab_size))
        return mask.scatter_(-1, tokens, True)[..., : self.vocab_size]
