"""Input prompts: prompt tuning (Lester et al.) and P-tuning v1 (Liu et al.), l trainable vectors inserted into
the embedded input sequence.

A forward pre-hook on the task model turns ``input_ids`` into ``inputs_embeds`` with the prompt inserted and
extends ``attention_mask`` / ``token_type_ids`` to match; the model's own code runs unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from peftbench.space.spec import PromptSpec


class LSTMPromptEncoder(nn.Module):
    """P-tuning v1: prompt vectors = MLP(BiLSTM(E)), E an (l × d) embedding; discarded after training."""

    def __init__(self, length: int, d_model: int, hidden: int, device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        hidden = hidden or d_model
        self.embedding = nn.Parameter(torch.empty(length, d_model, **kw))
        nn.init.normal_(self.embedding, std=0.02)
        self.lstm = nn.LSTM(d_model, hidden // 2, num_layers=2, bidirectional=True, batch_first=True, **kw)
        self.mlp = nn.Sequential(nn.Linear(2 * (hidden // 2), hidden, **kw), nn.ReLU(), nn.Linear(hidden, d_model, **kw))

    def forward(self) -> torch.Tensor:
        return self.mlp(self.lstm(self.embedding.unsqueeze(0))[0]).squeeze(0)


class PromptInserter(nn.Module):
    """Holds the prompt (free vectors, or an LSTM encoder) and inserts it into every forward's input."""

    def __init__(self, spec: PromptSpec, embeddings: nn.Embedding, first_token_is_cls: bool,
                 separator_id: int | None, init_ids: torch.Tensor | None, right_align: bool = False) -> None:
        super().__init__()
        self.length = spec.length
        self.right_align = right_align  # padding first, content last (models that pool the last position)
        self.position = spec.position
        self.offset = 1 if first_token_is_cls else 0
        self.separator_id = separator_id
        self.word_embeddings = [embeddings]  # the model's (frozen) table, not registered a second time
        self.calls = 0
        weight = embeddings.weight
        d = weight.shape[1]
        if spec.kind == "lstm":
            self.encoder = LSTMPromptEncoder(spec.length, d, spec.encoder_hidden, weight.device, weight.dtype)
            self.prompt = None
        else:
            self.encoder = None
            self.prompt = nn.Parameter(torch.empty(spec.length, d, device=weight.device, dtype=weight.dtype))
            with torch.no_grad():
                if init_ids is not None:
                    self.prompt.copy_(weight[init_ids])
                else:
                    nn.init.uniform_(self.prompt, -0.5, 0.5)

    def vectors(self) -> torch.Tensor:
        return self.prompt if self.encoder is None else self.encoder()

    @torch.no_grad()
    def export(self) -> None:
        """Keep only the prompt vectors the encoder produces (P-tuning v1 after training)."""
        if self.encoder is not None:
            self.prompt = nn.Parameter(self.encoder().detach().clone())
            self.encoder = None

    def paper_numel(self) -> int:
        """l·d: the prompt vectors (for P-tuning v1, what the encoder produces)."""
        return self.length * self.word_embeddings[0].weight.shape[1]

    def stored_numel(self) -> int:
        return self.paper_numel()

    def insert_positions(self, input_ids: torch.Tensor) -> torch.Tensor | int:
        """Where the prompt goes: a constant at ``start``; after each row's first separator for ``infix``."""
        if self.position == "start":
            return self.offset
        is_sep = input_ids == self.separator_id
        if not bool(is_sep.any(dim=1).all()):
            raise ValueError(f"prompt position infix: a row has no separator token (id {self.separator_id})")
        return is_sep.int().argmax(dim=1) + 1

    def _insert(self, seq: torch.Tensor, prompt: torch.Tensor, where: torch.Tensor | int) -> torch.Tensor:
        """seq (b, n, ...) with prompt (b, l, ...) inserted before index ``where`` of each row."""
        if isinstance(where, int):
            return torch.cat([seq[:, :where], prompt, seq[:, where:]], dim=1)
        b, n, length = seq.shape[0], seq.shape[1], prompt.shape[1]
        j = torch.arange(n + length, device=seq.device).unsqueeze(0)
        p = where.unsqueeze(1)
        index = torch.where(j < p, j, torch.where(j < p + length, n + j - p, j - length))
        joined = torch.cat([seq, prompt], dim=1)
        index = index.view(b, n + length, *([1] * (seq.dim() - 2))).expand(b, n + length, *seq.shape[2:])
        return joined.gather(1, index)

    def hook(self, _module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Forward pre-hook: input_ids → inputs_embeds with the prompt inserted; masks extended to match."""
        self.calls += 1
        if args:
            if len(args) > 1:
                raise TypeError("with a prompt method, pass model inputs as keyword arguments")
            kwargs["input_ids"] = args[0]
        input_ids = kwargs.pop("input_ids", None)
        if input_ids is None:
            raise ValueError("prompt methods need input_ids (inputs_embeds given directly cannot locate the prompt)")
        b = input_ids.shape[0]
        where = self.insert_positions(input_ids)
        embeds = self.word_embeddings[0](input_ids)
        kwargs["inputs_embeds"] = self._insert(embeds, self.vectors().unsqueeze(0).expand(b, -1, -1), where)
        for name in ("attention_mask", "token_type_ids", "score_mask"):  # score_mask: the verbalizer's position
            value = kwargs.get(name)
            if value is not None:
                fill = torch.ones if name == "attention_mask" else torch.zeros
                kwargs[name] = self._insert(value, fill(b, self.length, dtype=value.dtype, device=value.device), where)
        mask = kwargs.get("attention_mask")
        if self.right_align and mask is not None:
            # a stable sort of the mask puts padding first and keeps the content's order
            order = torch.sort(mask, dim=1, stable=True).indices
            for name in ("inputs_embeds", "attention_mask", "token_type_ids", "score_mask"):
                value = kwargs.get(name)
                if value is not None:
                    index = order.view(*order.shape, *([1] * (value.dim() - 2))).expand_as(value)
                    kwargs[name] = value.gather(1, index)
        if kwargs.get("position_ids") is not None:
            kwargs["position_ids"] = None  # the model numbers the longer sequence itself
        return (), kwargs
