"""The Behavior Sequence Transformer (Chen et al., 2019).

The candidate movie joins the user's history as the last token of one sequence;
self-attention runs over that sequence, *per example*: every attention tensor here is
(B, H, L, ...) with the batch as its own axis, and padded history positions are masked
out of the keys. (The reference notebook ran ``nn.MultiheadAttention`` with
``batch_first=False`` on (B, L, D) tensors, so its attention mixed the users of a
batch; tests/models/test_bst.py proves ours does not.)

Token embedding = movie id + genres (a learned embedding of the multi-hot set) + release
year bucket + the paper's position feature (log-bucketed time gap between the
recommendation time and the watch) + the user's rating of that watch.

Two ways to read the output (``ModelConfig.output``):
- ``target``: the transformer output at the candidate's position. History tokens never
  see the candidate (with one block this changes nothing, since their outputs are not
  read), so the history keys and values are computed once per user and only the
  candidate's row of attention, the feed-forward and the MLP run per candidate. That is
  what makes full-catalogue scoring cheap; ``score_plain`` is the literal computation
  and a test checks both agree.
- ``concat``: the paper's reading: all L+1 outputs concatenated. Every candidate costs a
  full pass over the sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bstrec.config import ModelConfig
from bstrec.data.batches import GAP_BUCKETS, Batch
from bstrec.models.base import ScoringModel
from bstrec.models.cooccurrence import CooccurrenceScorer
from bstrec.models.factors import RatingFactors
from bstrec.models.sasrec import SASRec, softmax_candidates

# above this many shared candidates the wide feature scatters each user's history rows
# once instead of looking up (B, n, C) pairs
WIDE_LOOKUP_MAX = 1024
YEAR_BUCKETS = 24  # 0 unknown, 1 = before 1920, then 5-year buckets up to 2030+


def year_bucket(year: torch.Tensor) -> torch.Tensor:
    b = torch.clamp((year - 1920) // 5 + 2, 1, YEAR_BUCKETS - 1)
    return torch.where(year > 0, b, 0)


@dataclass
class CatalogFeatures:
    """What the model needs to know about the catalogue and the users (saved with it)."""

    n_items: int
    n_users: int
    item_genres: torch.Tensor  # (n_items, G) float multi-hot
    item_year: torch.Tensor  # (n_items,) int
    user_vocab_sizes: list[int]  # per user feature, including the 0 = unknown code


@dataclass
class UserSide:
    """The candidate-independent part of scoring a batch, computed once per batch."""

    layers: list  # per block: history states entering it, their keys and values
    mask: torch.Tensor  # (B, L) real history positions
    states: torch.Tensor | None  # (B, L, D) the SASRec tower's states, if any
    # (wide, dot) of every movie, (B, n_items) each or None, once ``retrieval_scores``
    # has computed them: ranking the retrieved candidates then reads them, not again
    catalogue: tuple | None = None

    def row(self, i: int) -> UserSide:
        """Row i alone (views), as if its batch had held that row only."""
        one = slice(i, i + 1)
        return UserSide(
            [tuple(x[one] for x in layer) for layer in self.layers],
            self.mask[one],
            None if self.states is None else self.states[one],
            None if self.catalogue is None else tuple(_rows(x, one) for x in self.catalogue),
        )


def _rows(x: torch.Tensor | None, rows: slice) -> torch.Tensor | None:
    return None if x is None else x[rows]


def _columns(x: torch.Tensor | None, candidates: torch.Tensor) -> torch.Tensor | None:
    """Columns of item tokens ``candidates`` (C,) or (B, C) from (B, n_items) ``x``."""
    if x is None:
        return None
    idx = candidates - 1
    return x[:, idx] if idx.dim() == 1 else x.gather(1, idx)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    allow: torch.Tensor,
    self_k: torch.Tensor | None = None,
    self_v: torch.Tensor | None = None,
):
    """Scaled dot-product attention, the one implementation every path uses.

    q (..., H, Q, dh), already divided by sqrt(dh); k, v (..., H, K, dh); ``allow``
    broadcasts to (..., H, Q, K), True = may attend. ``self_k``/``self_v`` (..., H, Q,
    dh): one more key and value per query, its own (a candidate attending to itself
    beside the history), joined to the softmax without concatenating it to k and v, so
    the cached path never copies its largest tensor. Returns the output (..., H, Q, dh),
    the weights over k (..., H, Q, K), and per query the log-sum-exp of its logits over
    k alone (-inf where it may attend to none of them).
    """
    s = (q @ k.transpose(-1, -2)).masked_fill(~allow, float("-inf"))  # (..., H, Q, K)
    m = s.amax(-1, keepdim=True)  # (..., H, Q, 1)
    s_self = None
    if self_k is not None:
        s_self = (q * self_k).sum(-1, keepdim=True)  # (..., H, Q, 1)
        m = torch.maximum(m, s_self)
    e = (s - m).exp()
    sum_k = e.sum(-1, keepdim=True)
    z = sum_k if s_self is None else sum_k + (s_self - m).exp()
    out = e @ v
    if s_self is not None:
        out = out + (s_self - m).exp() * self_v
    lse = (m + sum_k.clamp_min(1e-30).log()).squeeze(-1)
    return out / z, e / z, torch.where(sum_k.squeeze(-1) > 0, lse, float("-inf"))


@dataclass
class CatalogCache:
    """The candidate side of every movie, for inference (``BST.freeze_catalog``): its
    token and first-block query (already scaled), key and value. Only valid for the
    weights it was computed from: training or loading weights drops it."""

    tokens: torch.Tensor  # (C, D)
    q: torch.Tensor  # (1, H, C, dh)
    k: torch.Tensor
    v: torch.Tensor
    # q, k and v again, movie-major (C, 3, H, dh), made on the first ``take`` of
    # per-user candidates: their rows are then contiguous blocks to copy, not strided
    # slices of every head
    by_movie: torch.Tensor | None = None

    def part(self, start: int, end: int) -> CatalogCache:
        """Movies start..end-1 (a chunk of score_all)."""
        return CatalogCache(
            self.tokens[start:end],
            self.q[:, :, start:end],
            self.k[:, :, start:end],
            self.v[:, :, start:end],
        )

    def take(self, candidates: torch.Tensor) -> CatalogCache:
        """The rows of item tokens ``candidates``: (C,) shared, or (B, C) per user (the
        retrieved candidates of a retrieve-then-rank pass); q, k, v then (B, H, C, dh)."""
        idx = candidates - 1
        if candidates.dim() == 1:
            return CatalogCache(
                self.tokens[idx], self.q[:, :, idx], self.k[:, :, idx], self.v[:, :, idx]
            )
        b, c = idx.shape
        flat = idx.reshape(-1)
        # whole rows along the first dimension: several times faster than indexing
        # every head's (B, C) entries
        if self.by_movie is None:  # two threads may both make it: the same tensor
            qkv = torch.stack([self.q[0], self.k[0], self.v[0]])  # (3, H, C, dh)
            self.by_movie = qkv.permute(2, 0, 1, 3).contiguous()
        rows = self.by_movie.index_select(0, flat)  # (B * C, 3, H, dh)
        q, k, v = (
            rows[:, i].view(b, c, *rows.shape[2:]).transpose(1, 2).contiguous() for i in range(3)
        )  # (B, H, C, dh) each
        return CatalogCache(self.tokens.index_select(0, flat).view(b, c, -1), q, k, v)


class Block(nn.Module):
    """Post-LN transformer block as in the paper: LN(S + MH(S)), LN(S' + FFN(S'))."""

    def __init__(self, dim: int, heads: int, ffn_mult: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"model.dim {dim} must be divisible by model.heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_mult * dim), nn.LeakyReLU(), nn.Linear(ffn_mult * dim, dim)
        )
        self.ln2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        # (..., T, D) -> (..., H, T, dh)
        *lead, t, d = x.shape
        return x.view(*lead, t, self.heads, d // self.heads).transpose(-3, -2)

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        # (..., H, T, dh) -> (..., T, D)
        *lead, h, t, dh = x.shape
        return x.transpose(-3, -2).reshape(*lead, t, h * dh)

    def finish(self, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        x = self.ln1(x + self.drop(self.proj(attn_out)))
        return self.ln2(x + self.drop(self.ffn(x)))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Plain self-attention over each example's sequence.

        x (B, T, D); key_mask (B, T) or (B, T, T) True = may attend. Returns the new
        states (B, T, D) and the attention weights (B, H, T, T).
        """
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = self.split(q), self.split(k), self.split(v)  # (B, H, T, dh)
        mask = key_mask[:, None, None, :] if key_mask.dim() == 2 else key_mask[:, None]
        out, att, _ = attend(q / math.sqrt(q.shape[-1]), k, v, mask)  # (B, H, T, dh)
        return self.finish(x, self.merge(out)), att


class BST(ScoringModel):
    def __init__(self, cfg: ModelConfig, cat: CatalogFeatures, max_len: int):
        super().__init__()
        self.cfg = cfg
        self.task = cfg.task
        self.n_items = cat.n_items
        self.max_len = max_len
        d = cfg.dim
        self.item_emb = nn.Embedding(cat.n_items + 1, d, padding_idx=0)
        self.gap_emb = nn.Embedding(GAP_BUCKETS, d)
        self.rating_emb = nn.Embedding(11, d) if cfg.use_ratings else None
        n_genres = cat.item_genres.shape[1]
        self.genre_proj = (
            nn.Linear(n_genres, d, bias=False) if cfg.use_genres and n_genres else None
        )
        self.year_emb = nn.Embedding(YEAR_BUCKETS, d) if cfg.use_year else None
        # Catalogue features live in buffers so a checkpoint scores without the data set.
        genres = torch.cat([torch.zeros(1, n_genres), cat.item_genres.float()])
        genres = genres / genres.sum(-1, keepdim=True).clamp(min=1)  # mean of genre vectors
        self.register_buffer("item_genres", genres)
        self.register_buffer(
            "item_year", torch.cat([torch.zeros(1, dtype=torch.long), cat.item_year.long()])
        )
        self.emb_norm = nn.LayerNorm(d)
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            Block(d, cfg.heads, cfg.ffn_mult, cfg.block_dropout) for _ in range(cfg.blocks)
        )
        # "Other features": user profile embeddings, concatenated before the MLP.
        du = 16
        self.user_feat_emb = nn.ModuleList(
            nn.Embedding(n, du) for n in (cat.user_vocab_sizes if cfg.use_user_features else [])
        )
        self.user_id_emb = nn.Embedding(cat.n_users + 1, du) if cfg.use_user_id else None
        n_user = du * (len(self.user_feat_emb) + (1 if cfg.use_user_id else 0))
        seq_out = d * (max_len + 1) if cfg.output == "concat" else d
        widths = [*cfg.mlp]
        # The first MLP layer is split by input so the per-user part is computed once.
        self.mlp_pair = nn.Linear(seq_out, widths[0])
        if cfg.interaction_features:
            self.mlp_prod = nn.Linear(d, widths[0], bias=False)
            self.mlp_aff = nn.Linear(cfg.heads, widths[0], bias=False)
        self.mlp_user = nn.Linear(n_user, widths[0], bias=False) if n_user else None
        layers: list[nn.Module] = [nn.LeakyReLU(), nn.Dropout(cfg.block_dropout)]
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(a, b), nn.LeakyReLU(), nn.Dropout(cfg.block_dropout)]
        layers.append(nn.Linear(widths[-1], 1))
        self.mlp_rest = nn.Sequential(*layers)
        # Wide & Deep: the co-occurrence baseline's score (fitted on the training part by
        # the trainer, saved with the weights) enters the head twice: as an MLP input and
        # through a learned weight straight to the output. The MLP's last layer starts at
        # zero, so an untrained BST ranks exactly as the baseline and training adds to it.
        self.wide = None
        if cfg.wide == "cooccurrence" and cfg.task == "ranking":
            self.wide = CooccurrenceScorer(cat.n_items)
            self.mlp_wide = nn.Linear(1, widths[0], bias=False)
            self.wide_weight = nn.Parameter(torch.ones(()))
            nn.init.zeros_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)
        self.rating_wide = None
        if cfg.task == "rating":
            # Wide & Deep for stars: the prediction is the factors peer (mean + movie
            # bias + the history's bias and fold-in vector, fitted on the training part
            # by the trainer; bstrec.models.factors) plus the MLP, which starts at zero.
            self.rating_wide = RatingFactors(cat.n_items, cfg.rating_factors)
            self.rating_wide.mean.fill_(3.5)  # the prior of an unfitted part (wide: none)
            if cfg.wide != "none":
                nn.init.zeros_(layers[-1].weight)
                nn.init.zeros_(layers[-1].bias)
        # The dot-product term: a SASRec tower (causal self-attention over the history,
        # read at the newest watch) times the candidate's embedding, added to the score
        # through a gate that starts at zero. Cheap for every movie at once, so the tower
        # trains with a full-catalogue softmax at every position of the history window
        # (loss): each step teaches every item embedding from B * L targets, where the
        # candidate-in-sequence head learns from B targets and a few sampled negatives.
        self.tower = None
        self.rows_stride = 1  # every training row is a target
        if cfg.dot and cfg.task == "ranking":
            # one window of L rows per step row: the tower learns from all L positions,
            # the head from the newest (docs/experiments.md, runs M-O)
            self.rows_stride = max_len
            self.tower = SASRec(cfg, cat.n_items, max_len)
            self.dot_gate = nn.Parameter(torch.zeros(()))

    # ------------------------------------------------------------------ embeddings
    def item_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Candidate-independent part of an item's token: id + genres + year. (..., D)"""
        x = self.item_emb(tokens)
        if self.genre_proj is not None:
            x = x + self.genre_proj(self.item_genres[tokens])
        if self.year_emb is not None:
            x = x + self.year_emb(year_bucket(self.item_year[tokens]))
        return x

    def history_tokens(self, batch: Batch) -> torch.Tensor:
        x = self.item_tokens(batch.hist_item) + self.gap_emb(batch.hist_gap)  # (B, L, D)
        if self.rating_emb is not None:
            x = x + self.rating_emb(batch.hist_rating)
        return self.emb_drop(self.emb_norm(x))

    def target_tokens(self, candidates: torch.Tensor) -> torch.Tensor:
        # The candidate is watched "now": gap bucket 1 (0 seconds), no rating.
        gap = self.gap_emb.weight[1]
        return self.emb_drop(self.emb_norm(self.item_tokens(candidates) + gap))

    def user_vector(self, batch: Batch) -> torch.Tensor | None:
        feats, user = batch.user_feats, batch.user
        p = self.cfg.user_feature_dropout
        if self.training and p > 0 and len(user):
            # an anonymous request (a typed history) carries code 0, "unknown", for every
            # user feature: train that row too, on a share of the examples, or it would
            # be an untrained random vector at serving time
            drop = torch.rand(len(user), device=user.device) < p  # (B,)
            feats = feats.masked_fill(drop[:, None], 0)
            user = user.masked_fill(drop, 0)
        parts = [emb(feats[:, i]) for i, emb in enumerate(self.user_feat_emb)]
        if self.user_id_emb is not None:
            parts.append(self.user_id_emb(user))
        return torch.cat(parts, -1) if parts else None  # (B, U)

    def wide_feature(
        self, batch: Batch, candidates: torch.Tensor | None, own: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """log(1 + co-occurrence score) of each candidate: (B, C), or (B, n_items) for
        ``candidates=None``. ``own`` (B, C) is subtracted from the raw counts first: a
        training target's own pairs (see ``CooccurrenceScorer.self_count``)."""
        if self.wide is None:
            return None
        if candidates is None:
            raw = self.wide.raw_all(batch.hist_item)[:, 1:]
            cands = torch.arange(1, self.n_items + 1, device=raw.device)
        elif candidates.dim() == 1 and len(candidates) > WIDE_LOOKUP_MAX:
            # many shared candidates (a sampled softmax, a catalogue chunk): one row
            # scatter per user beats (B, n, C) pair lookups
            cands = candidates
            raw = self.wide.raw_all(batch.hist_item)[:, cands]
        else:
            cands = candidates
            if cands.dim() == 1:
                cands = cands[None].expand(batch.hist_item.shape[0], -1)
            raw = self.wide.raw(batch.hist_item, cands)
        if own is not None:
            raw = raw - own
        return torch.log1p(self.wide.normalise(raw.clamp(min=0.0), cands))

    def head(self, seq_out, prod, aff, user_part, wide=None) -> torch.Tensor:
        """MLP over [sequence output, interaction features, user features, wide score].

        The first layer is one linear map per input group, summed: the same function
        as a linear map of their concatenation, without copying the (B, C, .) inputs.
        """
        h = self.mlp_pair(seq_out)  # (B, C, H1)
        if self.cfg.interaction_features:
            h = h + self.mlp_prod(prod) + self.mlp_aff(aff)
        if user_part is not None:
            h = h + user_part[:, None, :]
        if wide is not None:
            h = h + self.mlp_wide(wide[..., None])
        out = self.mlp_rest(h).squeeze(-1)  # (B, C)
        if wide is not None:
            out = out + self.wide_weight * wide
        return out

    # ------------------------------------------------------------------ inference cache
    catalog_cache: CatalogCache | None = None  # set by freeze_catalog, dropped by train()
    score_chunk: int = 8192  # catalogue chunk of score_all (see there)
    # Per-user products (B rows) one row at a time, so that a row's bits do not depend
    # on how many rows its batch has: BLAS runs a matrix-vector kernel for one row and
    # others for several, which differ in the last bits. Serving sets it (it stacks
    # requests: recommend.Recommender.rank); training and evaluation keep the batched
    # products, which are faster.
    exact_rows: bool = False

    def freeze_catalog(self) -> None:
        """Precompute the candidate side of the whole catalogue for inference.

        A candidate's token and its first-block query, key and value do not depend on
        the user, so a serving process computes them once instead of per request. The
        cache is dropped when the model goes back to training or loads new weights.
        """
        self.eval()
        with torch.no_grad():
            tokens = torch.arange(1, self.n_items + 1, device=self.item_emb.weight.device)
            t0 = self.target_tokens(tokens)  # (C, D)
            blk = self.blocks[0]
            q, k, v = (blk.split(z) for z in blk.qkv(t0[None]).chunk(3, -1))  # (1, H, C, dh)
            self.catalog_cache = CatalogCache(t0, q / math.sqrt(q.shape[-1]), k, v)

    def score_all(self, batch: Batch) -> torch.Tensor:
        """(B, n_items), a chunk of the catalogue at a time: the head's activations are
        (B, C, width) per chunk, so memory stays bounded on catalogues of 87K movies."""
        cache = self.catalog_cache
        if cache is None or self.training or self.cfg.output != "target":
            return super().score_all(batch)
        tokens = torch.arange(1, self.n_items + 1, device=batch.user.device)
        if self.n_items <= self.score_chunk:
            return self.score_cached(batch, tokens, frozen=cache)[0]
        side = self.user_side(batch)
        # the cheap terms for every movie at once (one scatter, one matmul), then sliced
        wide = self.wide_feature(batch, None)
        dot = self.dot_term(side, None) if self.tower is not None else None
        out = []
        for s in range(0, self.n_items, self.score_chunk):
            e = min(s + self.score_chunk, self.n_items)
            part = cache.part(s, e)
            cheap = (None if wide is None else wide[:, s:e], None if dot is None else dot[:, s:e])
            out.append(
                self.score_cached(batch, tokens[s:e], frozen=part, side=side, cheap=cheap)[0]
            )
        return torch.cat(out, 1)

    @property
    def retrieves(self) -> bool:
        return self.task == "ranking" and (self.tower is not None or self.wide is not None)

    def retrieval_scores(self, batch: Batch, side: UserSide | None = None) -> torch.Tensor | None:
        """The cheap parts of the score for every movie: the SASRec tower's dot product
        (an embedding nearest-neighbour search) plus the weighted co-occurrence with the
        recent history (item-to-item neighbours). The head then ranks the top few."""
        if not self.retrieves:
            return None
        side = side or self.user_side(batch)
        dot = self.dot_term(side, None) if self.tower is not None else None
        wide = self.wide_feature(batch, None) if self.wide is not None else None
        side.catalogue = (wide, dot)
        scores = torch.zeros(batch.hist_item.shape[0], self.n_items, device=batch.hist_item.device)
        if dot is not None:
            scores = scores + dot
        if wide is not None:
            scores = scores + self.wide_weight * wide
        return scores

    def train(self, mode: bool = True):
        if mode:
            self.catalog_cache = None
        return super().train(mode)

    def load_state_dict(self, *args, **kwargs):
        self.catalog_cache = None
        return super().load_state_dict(*args, **kwargs)

    def score(
        self,
        batch: Batch,
        candidates: torch.Tensor,
        own: torch.Tensor | None = None,
        side: UserSide | None = None,
    ) -> torch.Tensor:
        scores, _ = self._score(batch, candidates, want_attention=False, own=own, side=side)
        return scores

    ATTENTION_WEIGHTS = "the movie's attention over the history (first block, mean over heads)"

    @property
    def explanation(self) -> str:
        if self.wide is None:
            return self.ATTENTION_WEIGHTS
        return (
            "each watch's share of the pairs it formed with the movie in the training "
            f"data (co-occurrence); where there are none, {self.ATTENTION_WEIGHTS}"
        )

    def explain(
        self,
        batch: Batch,
        candidates: torch.Tensor,
        side: UserSide | None = None,
        attention: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, C, L) per candidate, how much each watch drove it: its share of the
        candidate's co-occurrence count (the pairs the watch formed with that very movie
        in the training data) where the candidate has any, else the candidate's own
        attention row. Attention alone hardly depends on the candidate: one user's ten
        picks all cited the same three films (issue 9).

        ``attention``: the candidates' attention rows (B, C, L), if the caller has them
        from scoring (``score_and_attention``); then no step depends on the values,
        which a traced pass needs (traced_pass.py)."""
        b = batch.hist_item.shape[0]
        cands = candidates if candidates.dim() == 2 else candidates[None].expand(b, -1)
        if self.wide is None:
            if attention is not None:
                return attention
            shares = total = None
            need = [True] * b
        else:
            pairs = self.wide.contributions(batch.hist_item, cands)  # (B, C, L)
            total = pairs.sum(-1, keepdim=True)
            shares = pairs / total.clamp_min(1e-12)
            if attention is not None:
                return torch.where(total > 0, shares, attention)
            if bool((total > 0).all()):
                return shares  # the usual case in serving: the attention pass is not needed
            need = (total <= 0).flatten(1).any(1).tolist()
        # the attention pass row by row: a row's reasons must not depend on the rows
        # stacked with it (a stacked pass may run other kernels: Recommender.rank)
        side = side or self.user_side(batch)
        rows = []
        for i in range(b):
            if not need[i]:
                rows.append(shares[i])
                continue
            att = self.attention(batch.index(slice(i, i + 1)), cands[i : i + 1], side.row(i))[0]
            rows.append(att if total is None else torch.where(total[i] > 0, shares[i], att))
        return torch.stack(rows)

    def attention(
        self, batch: Batch, candidates: torch.Tensor, side: UserSide | None = None
    ) -> torch.Tensor:
        """(B, C, L) each candidate's attention over the history in the first block,
        averaged over heads (the explanation of rounds before issue 9)."""
        return self._score(batch, candidates, want_attention=True, side=side)[1]

    def score_and_attention(
        self, batch: Batch, candidates: torch.Tensor, side: UserSide | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``score`` and ``attention`` from one pass: (B, C) and (B, C, L)."""
        return self._score(batch, candidates, want_attention=True, side=side)

    def _score(
        self,
        batch: Batch,
        candidates: torch.Tensor,
        want_attention: bool,
        own=None,
        side: UserSide | None = None,
    ):
        if self.cfg.output == "concat":
            return self.score_plain(batch, candidates, want_attention, own=own)
        # inference with a frozen catalogue: the candidates' side is looked up, not redone
        cache = self.catalog_cache  # None while training: train() drops it
        frozen = cache.take(candidates) if cache is not None else None
        return self.score_cached(
            batch, candidates, want_attention, frozen=frozen, own=own, side=side
        )

    def user_side(self, batch: Batch) -> UserSide:
        """Everything of a batch that does not depend on the candidates."""
        layers, mask = self.encode_history(batch)
        states = self.tower.states(batch.hist_item) if self.tower is not None else None
        return UserSide(layers, mask, states)

    def _user_part(self, batch: Batch):
        u = self.user_vector(batch)
        if self.mlp_user is None:
            return None
        return self._per_row(self.mlp_user, u)  # (B, H1)

    def _per_row(self, fn, x: torch.Tensor) -> torch.Tensor:
        """fn(x) for a (B, ...) x, row by row when ``exact_rows``."""
        if not self.exact_rows or len(x) == 1:
            return fn(x)
        return torch.cat([fn(x[i : i + 1]) for i in range(len(x))])

    def score_cached(
        self,
        batch: Batch,
        candidates: torch.Tensor,
        want_attention=False,
        frozen: CatalogCache | None = None,
        own: torch.Tensor | None = None,
        side: UserSide | None = None,
        cheap: tuple | None = None,
    ):
        """Target-position output with history keys/values computed once per user.

        candidates: (C,) shared by all users, or (B, C) per user. ``frozen``: the
        catalogue's precomputed candidate side (see ``freeze_catalog``). ``cheap``: the
        candidates' wide feature and tower term, already computed (chunked score_all).
        """
        b = batch.hist_item.shape[0]
        side = side or self.user_side(batch)
        layers, mask = side.layers, side.mask
        t0 = frozen.tokens if frozen else self.target_tokens(candidates)  # (C|B,C, D)
        t = t0[None] if candidates.dim() == 1 else t0  # (1|B, C, D)
        att_first = None
        has_hist = mask.any(1)[:, None, None]  # (B, 1, 1)
        for i, (blk, (_h, k_h, v_h)) in enumerate(zip(self.blocks, layers, strict=True)):
            if i == 0 and frozen:
                q_t, k_t, v_t = frozen.q, frozen.k, frozen.v
            else:
                q_t, k_t, v_t = (blk.split(z) for z in blk.qkv(t).chunk(3, -1))  # (1|B, H, C, dh)
                q_t = q_t / math.sqrt(q_t.shape[-1])
            out, weights, lse = attend(q_t, k_h, v_h, mask[:, None, None, :], k_t, v_t)
            if i == 0 and want_attention:
                att_first = weights.mean(1)  # (B, C, L)
            attn_out = blk.merge(out)  # (B, C, D)
            t = blk.finish(t.expand(b, -1, -1), attn_out)
        aff = None
        if self.cfg.interaction_features:
            # per head, the log-sum-exp of the candidate's logits over the history: how
            # strongly it matches some watch, before the softmax normalises that away
            aff = torch.where(has_hist, lse, 0.0).permute(0, 2, 1)  # (B, C, H)
            attn_out = attn_out * t0
        # score_all: one scatter per row instead of a lookup per candidate
        whole = candidates.dim() == 1 and len(candidates) == self.n_items and own is None
        if cheap is None and side.catalogue is not None and own is None:
            cheap = tuple(_columns(x, candidates) for x in side.catalogue)
        if cheap is not None:
            wide, dot = cheap
        else:
            wide = self.wide_feature(batch, None if whole else candidates, own)
            dot = (
                self.dot_term(side, None if whole else candidates)
                if self.tower is not None
                else None
            )
        scores = self.head(t, attn_out, aff, self._user_part(batch), wide)
        if dot is not None:
            scores = scores + dot
        if self.task == "rating":
            scores = scores + self.rating_wide.stars(batch, None if whole else candidates)
        return scores, att_first

    def encode_history(self, batch: Batch):
        """Per block, the history states entering it and their keys and values.

        History tokens attend only to history, so every block's history states are
        candidate-independent: computed once per user, whatever the candidates. Rows of
        all-padding histories would softmax to NaN: a padded query attends to itself
        (its output is never read). Returns [(h (B, L, D), k (B, H, L, dh), v)], mask.
        """
        h = self.history_tokens(batch)  # (B, L, D)
        mask = batch.hist_mask  # (B, L)
        eye = torch.eye(h.shape[1], dtype=torch.bool, device=h.device)
        hist_mask = mask[:, None, :] | (~mask[:, :, None] & eye)  # (B, L, L)
        layers = []
        for i, blk in enumerate(self.blocks):
            d = h.shape[-1]  # history queries are never read: project keys and values only
            kv = F.linear(h, blk.qkv.weight[d:], blk.qkv.bias[d:])
            k_h, v_h = (blk.split(z) for z in kv.chunk(2, -1))  # (B, H, L, dh)
            layers.append((h, k_h, v_h))
            if i + 1 < len(self.blocks):
                h, _ = blk(h, hist_mask)
        return layers, mask

    def dot_term(self, side: UserSide, candidates: torch.Tensor | None) -> torch.Tensor:
        """The gated tower score of candidates (C,) or (B, C), or of every movie (None)."""
        # The tower learns from its own loss only: the gate and the rest of the score
        # must not pull its states towards "what co-occurrence misses" (that cut its
        # validation NDCG@10 from 0.150 to 0.060 at 250 steps, docs/experiments.md).
        u = side.states[:, -1].detach()  # (B, D) the tower read at the newest watch
        emb = self.tower.item_emb.weight.detach()
        if candidates is None:
            dot = self._per_row(lambda r: r @ emb[1:].T, u)
        elif candidates.dim() == 1:
            dot = self._per_row(lambda r: r @ emb[candidates].T, u)
        else:
            dot = (u[:, None, :] * emb[candidates]).sum(-1)
        return self.dot_gate * dot

    def score_plain(
        self,
        batch: Batch,
        candidates: torch.Tensor,
        want_attention=False,
        own: torch.Tensor | None = None,
    ):
        """The literal computation: one (L + 1)-token sequence per (user, candidate)."""
        b, seq_len = batch.hist_item.shape
        if candidates.dim() == 1:
            candidates = candidates[None].expand(b, -1)
        c = candidates.shape[1]
        h = self.history_tokens(batch)  # (B, L, D)
        t0 = self.target_tokens(candidates)  # (B, C, D)
        x = torch.cat([h[:, None].expand(-1, c, -1, -1), t0[:, :, None]], 2)  # (B, C, L+1, D)
        x = x.reshape(b * c, seq_len + 1, -1)  # one sequence per (user, candidate)
        ones = torch.ones(b, 1, dtype=torch.bool, device=batch.hist_mask.device)
        real = torch.cat([batch.hist_mask, ones], 1)  # (B, L+1)
        real = real.repeat_interleave(c, 0)  # (B*C, L+1)
        n = seq_len + 1
        if self.cfg.output == "target":
            # history rows may not see the candidate (see score_cached); the target sees all
            allow = real[:, None, :].expand(-1, n, -1).clone()  # (B*C, L+1, L+1)
            allow[:, :-1, -1] = False
        else:
            allow = real[:, None, :].expand(-1, n, -1).clone()
        eye = torch.eye(n, dtype=torch.bool, device=real.device)
        allow = allow | (~real[:, :, None] & eye)  # padded queries attend to themselves
        att_first = None
        attn_in = x
        for i, blk in enumerate(self.blocks):
            attn_in = x
            x, att = blk(x, allow)
            if i == 0 and want_attention:
                att_first = att[:, :, -1, :-1].mean(1).view(b, c, seq_len)
        concat = self.cfg.output == "concat"
        # (B, C, (L+1) D) for concat, (B, C, D) for the target position
        # padded positions attend only to themselves: their outputs carry whatever the
        # padding held, so the concatenation reads zeros there instead
        seq_out = (x * real[:, :, None]).reshape(b, c, -1) if concat else x[:, -1].view(b, c, -1)
        prod = aff = None
        if self.cfg.interaction_features:
            # the attention output at the target position, before residual and norms
            # the last block's attention row of the candidate, as the cached path reads it
            blk = self.blocks[-1]
            q, k, v = (blk.split(z) for z in blk.qkv(attn_in).chunk(3, -1))  # (N, H, T, dh)
            q = q[:, :, -1:] / math.sqrt(q.shape[-1])
            out, _, lse = attend(
                q, k[:, :, :-1], v[:, :, :-1], allow[:, None, -1:, :-1], k[:, :, -1:], v[:, :, -1:]
            )  # (N, H, 1, dh), (N, H, 1)
            has = allow[:, -1, :-1].any(-1).view(b, c, 1)
            aff = torch.where(has, lse.view(b, c, -1), 0.0)  # (B, C, H)
            prod = blk.merge(out).view(b, c, -1) * t0
        wide = self.wide_feature(batch, candidates, own)
        scores = self.head(seq_out, prod, aff, self._user_part(batch), wide)
        if self.tower is not None:
            scores = scores + self.dot_term(self.user_side(batch), candidates)
        if self.task == "rating":
            scores = scores + self.rating_wide.stars(batch, candidates)
        return scores, att_first

    # ------------------------------------------------------------------ training
    def full_softmax_loss(
        self, batch: Batch, side: UserSide, own: torch.Tensor | None
    ) -> torch.Tensor | float:
        """Full-catalogue cross-entropy of the tower (0 without one); ``own`` (B,): the
        targets' own co-occurrence pairs (``own_pairs``)."""
        if self.tower is None:
            return 0.0
        # the tower learns on its own, at every position (SASRec's loss) ...
        loss = self.tower.loss_from_states(side.states, batch)
        # ... and at the newest position, where serving reads it, the gate and the wide
        # weight learn how much of each to take, against the whole catalogue
        cands, target = softmax_candidates(self.n_items, batch.target)
        logits = self.dot_term(side, cands)  # (B, n_items or C)
        if self.wide is not None:
            # the counts' own dtype: under autocast the logits may be bf16
            own_all = own.new_zeros(logits.shape).scatter_(1, target[:, None], own[:, None])
            logits = logits + self.wide_weight * self.wide_feature(batch, cands, own_all)
        return loss + F.cross_entropy(logits, target)

    def own_pairs(self, batch: Batch) -> torch.Tensor | None:
        """(B,) what a training target's own pairs add to its co-occurrence count."""
        return None if self.wide is None else self.wide.self_count(batch.hist_item, batch.target)

    def loss(
        self,
        batch: Batch,
        negatives: torch.Tensor | None = None,
        loss: str = "sampled-softmax",
        neg_logq: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.task == "rating":
            pred = self.score(batch, batch.target[:, None]).squeeze(1)  # (B,)
            return F.mse_loss(pred, batch.label)
        if negatives is None:
            raise ValueError("ranking loss needs negatives")
        if loss == "sampled-softmax":
            # candidates: each row's positive, then negatives shared by the batch
            own = self.own_pairs(batch)
            side = self.user_side(batch)  # once for the positives and the negatives
            pos = self.score(
                batch, batch.target[:, None], own=None if own is None else own[:, None], side=side
            )  # (B, 1)
            neg = self.score(batch, negatives, side=side)  # (B, N)
            if neg_logq is not None:  # popularity sampler: logQ correction
                neg = neg - neg_logq[None, :]
            neg = neg.masked_fill(negatives[None, :] == batch.target[:, None], float("-inf"))
            logits = torch.cat([pos, neg], 1)
            target = torch.zeros(len(batch), dtype=torch.long, device=logits.device)
            return F.cross_entropy(logits, target) + self.full_softmax_loss(batch, side, own)
        if loss == "bce":
            # negatives (B, N) per positive, the paper's click-through loss
            cand = torch.cat([batch.target[:, None], negatives], 1)  # (B, 1 + N)
            own = self.own_pairs(batch)
            own_cand = None
            if own is not None:
                own_cand = torch.cat([own[:, None], own.new_zeros(negatives.shape)], 1)
            side = self.user_side(batch)
            logits = self.score(batch, cand, own=own_cand, side=side)
            labels = torch.zeros_like(logits)
            labels[:, 0] = 1
            return F.binary_cross_entropy_with_logits(logits, labels) + self.full_softmax_loss(
                batch, side, own
            )
        raise ValueError(f"unknown ranking loss {loss!r} (sampled-softmax | bce)")
